//! Anonymous private mappings owned by this process (destination mirrors, workloads).

use std::io;

/// An anonymous private read-write mapping, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    addr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; `Mapping` only hands out its address and length,
// and all accesses through them are the caller's responsibility.
unsafe impl Send for Mapping {}
// SAFETY: as above; no interior state is mutated through `&Mapping`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes (rounded up to a page), without reserving swap and, to keep 4 KiB
    /// pages, with transparent huge pages disabled.
    pub fn anon(len: usize) -> io::Result<Mapping> {
        let len = len.div_ceil(crate::PAGE) * crate::PAGE;
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses; no existing
        // memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `p..p+len` is the mapping just created. A failure only means THP stays on.
        unsafe { libc::madvise(p, len, libc::MADV_NOHUGEPAGE) };
        Ok(Mapping {
            addr: p.cast(),
            len,
        })
    }

    /// Start address.
    pub fn addr(&self) -> u64 {
        self.addr as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if empty (never, for a successful map).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Raw pointer to the start.
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the range this value mapped; nothing else refers to it
        // once the owner drops it.
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}
