//! Memory the broker owns: page-aligned anonymous mappings that back copy-registered
//! regions (registered with ordinary `ibv_reg_mr`).

use crate::FabricError;
use std::ptr::NonNull;

/// An anonymous private mapping, unmapped on drop.
pub(crate) struct OwnedMemory {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; access goes through &/&mut.
unsafe impl Send for OwnedMemory {}
// SAFETY: shared access only reads the pointer value; the bytes are written by the device
// or through &mut self.
unsafe impl Sync for OwnedMemory {}

impl OwnedMemory {
    /// Map `len` (> 0) bytes, rounded up to whole pages, zero-filled.
    pub(crate) fn new(len: usize) -> Result<OwnedMemory, FabricError> {
        if len == 0 {
            return Err(FabricError::BadRange { addr: 0, len: 0 });
        }
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(FabricError::Verbs(format!(
                "mapping {len} bytes for a registered copy: {}",
                std::io::Error::last_os_error()
            )));
        }
        let ptr = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| FabricError::Verbs("mmap returned NULL".into()))?;
        Ok(OwnedMemory { ptr, len })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr..ptr+len is our mapping, readable and writable, and &mut self
        // guarantees no other reference from Rust.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for OwnedMemory {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in new(); nothing refers to it
        // after drop (registrations are removed before their backing is dropped).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_memory_is_page_aligned_and_writable() {
        let mut m = OwnedMemory::new(10_000).unwrap();
        assert_eq!(m.as_ptr() as usize % 4096, 0);
        m.as_mut_slice().fill(0x5A);
        assert!(m.as_mut_slice().iter().all(|&b| b == 0x5A));
        assert!(OwnedMemory::new(0).is_err());
    }
}
