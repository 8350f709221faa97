//! `ibv_reg_mr_pidfd` (the patched libibverbs' registration of another process's memory,
//! see `libverbs-patch/`), looked up at run time so a stock libibverbs still loads and
//! the broker gets a clear error instead of a missing symbol at start.

use crate::FabricError;
use rdma_sys::{ibv_mr, ibv_pd};
use std::os::raw::{c_int, c_uint};

/// `struct ibv_mr *ibv_reg_mr_pidfd(struct ibv_pd *pd, int pidfd, uint64_t addr,
/// size_t length, uint64_t iova, unsigned int access)`.
pub(crate) type RegMrPidfd =
    unsafe extern "C" fn(*mut ibv_pd, c_int, u64, usize, u64, c_uint) -> *mut ibv_mr;

/// The symbol's name.
pub(crate) const SYMBOL: &str = "ibv_reg_mr_pidfd";

/// The error a stock libibverbs gives.
pub(crate) fn missing() -> FabricError {
    FabricError::Verbs(
        "this libibverbs lacks pidfd registration (ibv_reg_mr_pidfd); see libverbs-patch/".into(),
    )
}

/// Look a symbol up in the libraries already loaded into the process.
fn lookup(name: &str) -> Option<*mut std::ffi::c_void> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: RTLD_DEFAULT searches the global symbol scope; `c` is a valid C string for
    // the duration of the call.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
    (!p.is_null()).then_some(p)
}

/// The patched registration function, or the "lacks pidfd registration" error.
pub(crate) fn reg_mr_pidfd() -> Result<RegMrPidfd, FabricError> {
    resolve(SYMBOL)
}

fn resolve(name: &str) -> Result<RegMrPidfd, FabricError> {
    let p = lookup(name).ok_or_else(missing)?;
    // SAFETY: the symbol of that name in a libibverbs carrying libverbs-patch/ has exactly
    // the RegMrPidfd signature (see the man page in libverbs-patch/).
    Ok(unsafe { std::mem::transmute::<*mut std::ffi::c_void, RegMrPidfd>(p) })
}

/// Whether the loaded libibverbs has pidfd registration.
pub fn pidfd_registration_available() -> bool {
    lookup(SYMBOL).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_symbol_gives_the_patch_hint() {
        let e = resolve("ibv_reg_mr_pidfd_no_such_symbol")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "this libibverbs lacks pidfd registration (ibv_reg_mr_pidfd); see libverbs-patch/"
            )
        );
    }

    #[test]
    fn lookup_finds_symbols_of_the_linked_libibverbs() {
        // The provider links libibverbs, so its ordinary symbols resolve the same way.
        assert!(lookup("ibv_get_device_list").is_some());
        // Stock Debian rdma-core has no pidfd registration.
        if !pidfd_registration_available() {
            assert!(reg_mr_pidfd().is_err());
        }
    }
}
