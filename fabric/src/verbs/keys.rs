//! One restricted key on the device: its exact-range memory region and type-2 window,
//! binding the window on a connection's queue pair and invalidating it again.

use super::cm::last;
use super::pidfd;
use super::responder::{Backing, KeyEntry, RegionEntry, State};
use super::status::{mr_access, mw_access};
use crate::{FabricError, KeySpec};
use rdma_sys::*;
use std::os::fd::AsRawFd;

/// Register the MR and allocate the window of one key.
pub(crate) fn make_key(
    pd: *mut ibv_pd,
    r: &RegionEntry,
    spec: &KeySpec,
) -> Result<(*mut ibv_mr, *mut ibv_mw), FabricError> {
    let len = spec.len as usize;
    let mr = match &r.backing {
        Backing::Copy(mem, skew) => {
            let off = skew + (spec.addr - r.addr) as usize;
            // SAFETY: off+len lies inside the owned mapping (checked by the caller against
            // the region); the MR is deregistered before the mapping is dropped.
            unsafe {
                ibv_reg_mr_iova(
                    pd,
                    mem.as_ptr().add(off).cast(),
                    len,
                    spec.addr,
                    mr_access(spec.access) as i32,
                )
            }
        }
        Backing::Pidfd(fd) => {
            let f = pidfd::reg_mr_pidfd()?;
            // SAFETY: f has the documented signature; the kernel validates the range
            // against the target's mm.
            unsafe {
                f(
                    pd,
                    fd.as_raw_fd(),
                    spec.addr,
                    len,
                    spec.addr,
                    mr_access(spec.access),
                )
            }
        }
    };
    if mr.is_null() {
        return Err(last("registering the key's memory region"));
    }
    // SAFETY: pd live.
    let mw =
        unsafe { ibv_alloc_mw(pd, ibv_mw_type::IBV_MW_TYPE_2) }.unwrap_or(std::ptr::null_mut());
    if mw.is_null() {
        let e = last("ibv_alloc_mw(type 2)");
        // SAFETY: mr registered above, nothing bound to it.
        unsafe { ibv_dereg_mr(mr) };
        return Err(e);
    }
    Ok((mr, mw))
}

/// Bind `rkey`'s window on connection `conn`. A type-2 window must be free to bind, so an
/// existing binding (on another connection, or on a queue pair that is gone) is
/// invalidated first — exactly once: rxe 6.1 dereferences a NULL queue pair when asked to
/// invalidate a window that is already free.
pub(crate) fn bind_key(st: &mut State, rkey: u32, conn: u64) -> Result<(), FabricError> {
    let Some(k) = st.keys.get(&rkey) else {
        return Err(FabricError::UnknownKey(rkey));
    };
    let (mw, mr, addr, len, access, old, stale) = (
        k.mw,
        k.mr,
        k.spec.addr,
        k.spec.len,
        mw_access(k.spec.access),
        k.bound,
        k.stale,
    );
    if old == Some(conn) {
        return Ok(());
    }
    let mut needs_inv = stale || old.is_some();
    if let Some(c) = old.and_then(|o| st.conns.get_mut(&o)) {
        if matches!(c.qp.local_inv(rkey), Ok(ibv_wc_status::IBV_WC_SUCCESS)) {
            needs_inv = false;
        }
    }
    if !needs_inv {
        if let Some(k) = st.keys.get_mut(&rkey) {
            k.pinned_qp = None;
        }
    }
    if let Some(k) = st.keys.get_mut(&rkey) {
        k.bound = None;
        k.stale = needs_inv;
    }
    let c = st.conns.get_mut(&conn).ok_or(FabricError::Shutdown)?;
    if needs_inv {
        let st_code = c.qp.local_inv(rkey)?;
        if st_code != ibv_wc_status::IBV_WC_SUCCESS {
            return Err(FabricError::Verbs(format!(
                "invalidating the old binding of rkey {rkey:#010x}: {}",
                super::status::wc_status_name(st_code)
            )));
        }
        if let Some(k) = st.keys.get_mut(&rkey) {
            k.stale = false;
            k.pinned_qp = None;
        }
    }
    let c = st.conns.get_mut(&conn).ok_or(FabricError::Shutdown)?;
    let st_code = c.qp.bind_mw(mw, mr, addr, len, access, rkey)?;
    if st_code != ibv_wc_status::IBV_WC_SUCCESS {
        return Err(FabricError::Verbs(format!(
            "binding the memory window of rkey {rkey:#010x}: {}",
            super::status::wc_status_name(st_code)
        )));
    }
    // SAFETY: mw is live; user space tracks the window's current rkey for the next bind.
    unsafe { (*mw).rkey = rkey };
    if let Some(k) = st.keys.get_mut(&rkey) {
        k.bound = Some(conn);
        k.stale = false;
        k.pinned_qp = Some(conn);
    }
    Ok(())
}

/// Invalidate a key's window (LOCAL_INV on its QP when that QP is alive) and free its
/// window and region.
pub(crate) fn destroy_key(st: &mut State, rkey: u32, k: &mut KeyEntry) {
    if let Some(c) = k.bound.and_then(|b| st.conns.get_mut(&b)) {
        let _ = c.qp.local_inv(rkey);
    }
    k.bound = None;
    if !k.mw.is_null() {
        // SAFETY: the window is ours; deallocating also invalidates it.
        unsafe { ibv_dealloc_mw(k.mw) };
        k.mw = std::ptr::null_mut();
    }
    k.pinned_qp = None;
    if !k.mr.is_null() {
        // SAFETY: no window refers to the MR any more.
        unsafe { ibv_dereg_mr(k.mr) };
        k.mr = std::ptr::null_mut();
    }
}
