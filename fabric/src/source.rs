//! Where the responder reads target memory from: the [`MemorySource`] trait, the
//! `/proc/PID/mem` implementation and an in-memory one.

use crate::SourceError;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::RwLock;

/// Target memory the responder serves. A short read, end of file (the target exited or
/// execed) or EIO (unmapped) is an error — never zeros.
pub trait MemorySource: Send + Sync {
    /// Fill `buf` exactly from target address `addr`.
    fn read_exact_at(&self, addr: u64, buf: &mut [u8]) -> Result<(), SourceError>;

    /// Write all of `buf` at target address `addr` (REMOTE_WRITE). Read-only by default.
    fn write_all_at(&self, addr: u64, buf: &[u8]) -> Result<(), SourceError> {
        let _ = (addr, buf);
        Err(SourceError::ReadOnly)
    }

    /// Whether [`write_all_at`](Self::write_all_at) is supported.
    fn writable(&self) -> bool {
        false
    }
}

/// Positional reads on a requester-supplied `/proc/PID/mem` file descriptor. The fd is
/// bound to the target's mm, so pid reuse cannot redirect it; once the target exits or
/// execs, reads return end of file, which becomes [`SourceError::Gone`].
#[derive(Debug)]
pub struct ProcMemSource {
    file: File,
    writable: bool,
}

impl ProcMemSource {
    /// Read-only source over an open `/proc/PID/mem`.
    pub fn new(file: File) -> ProcMemSource {
        ProcMemSource {
            file,
            writable: false,
        }
    }

    /// Source that also allows writes (the fd must have been opened read-write).
    pub fn new_writable(file: File) -> ProcMemSource {
        ProcMemSource {
            file,
            writable: true,
        }
    }
}

/// `pread64` with the full unsigned address: `/proc/PID/mem` accepts offsets at or above
/// 2^63 (the kernel marks it FMODE_UNSIGNED_OFFSET), so the bit pattern is passed through.
fn pread_at(file: &File, buf: &mut [u8], addr: u64) -> io::Result<usize> {
    // SAFETY: buf is a valid writable slice of buf.len() bytes for the whole call; the
    // fd is owned by `file` and open.
    let n = unsafe {
        libc::pread64(
            file.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            addr as i64,
        )
    };
    byte_count(n)
}

/// A `pread`/`pwrite` return value as a byte count or the error it signals.
fn byte_count(n: isize) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

fn pwrite_at(file: &File, buf: &[u8], addr: u64) -> io::Result<usize> {
    // SAFETY: buf is a valid readable slice of buf.len() bytes; the fd is owned and open.
    let n = unsafe {
        libc::pwrite64(
            file.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            addr as i64,
        )
    };
    byte_count(n)
}

/// Move all `len` bytes at `addr` by repeated positional transfers: `step(done, at)`
/// moves bytes `done..` at target address `at` and says how many. End of file before the
/// first byte is [`SourceError::Gone`], later a [`SourceError::Short`] transfer; EINTR is
/// retried.
fn all_of(
    addr: u64,
    len: usize,
    mut step: impl FnMut(usize, u64) -> io::Result<usize>,
) -> Result<(), SourceError> {
    let mut done = 0usize;
    while done < len {
        match step(done, addr.wrapping_add(done as u64)) {
            Ok(0) if done == 0 => return Err(SourceError::Gone { addr, len }),
            Ok(0) => {
                return Err(SourceError::Short {
                    addr,
                    got: done,
                    len,
                })
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(SourceError::Io { addr, len, source }),
        }
    }
    Ok(())
}

impl MemorySource for ProcMemSource {
    fn read_exact_at(&self, addr: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        all_of(addr, buf.len(), |done, at| {
            pread_at(&self.file, &mut buf[done..], at)
        })
    }

    fn write_all_at(&self, addr: u64, buf: &[u8]) -> Result<(), SourceError> {
        if !self.writable {
            return Err(SourceError::ReadOnly);
        }
        all_of(addr, buf.len(), |done, at| {
            pwrite_at(&self.file, &buf[done..], at)
        })
    }

    fn writable(&self) -> bool {
        self.writable
    }
}

/// Memory held by the responder itself, presented at a chosen base address. For tests,
/// benchmarks and the broker's own-memory conformance runs.
#[derive(Debug)]
pub struct VecSource {
    base: u64,
    data: RwLock<Vec<u8>>,
}

impl VecSource {
    /// `data` appears at addresses `base..base+data.len()`.
    pub fn new(base: u64, data: Vec<u8>) -> VecSource {
        VecSource {
            base,
            data: RwLock::new(data),
        }
    }

    fn span(
        &self,
        addr: u64,
        len: usize,
        have: usize,
    ) -> Result<std::ops::Range<usize>, SourceError> {
        let off = addr
            .checked_sub(self.base)
            .and_then(|o| usize::try_from(o).ok())
            .filter(|o| o.checked_add(len).is_some_and(|end| end <= have))
            .ok_or(SourceError::OutOfRange { addr, len })?;
        Ok(off..off + len)
    }
}

impl MemorySource for VecSource {
    fn read_exact_at(&self, addr: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let data = self.data.read().unwrap_or_else(|e| e.into_inner());
        let r = self.span(addr, buf.len(), data.len())?;
        buf.copy_from_slice(&data[r]);
        Ok(())
    }

    fn write_all_at(&self, addr: u64, buf: &[u8]) -> Result<(), SourceError> {
        let mut data = self.data.write().unwrap_or_else(|e| e.into_inner());
        let r = self.span(addr, buf.len(), data.len())?;
        data[r].copy_from_slice(buf);
        Ok(())
    }

    fn writable(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_self_mem_reads_own_bytes() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let src = ProcMemSource::new(File::open("/proc/self/mem").unwrap());
        let mut out = vec![0u8; data.len()];
        src.read_exact_at(data.as_ptr() as u64, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn proc_self_mem_unmapped_is_error_not_zeros() {
        let src = ProcMemSource::new(File::open("/proc/self/mem").unwrap());
        let mut out = vec![0xAAu8; 4096];
        // Address 4096 is never mapped (mmap_min_addr); an offset above 2^63 is not
        // a user address either.
        assert!(src.read_exact_at(4096, &mut out).is_err());
        assert!(src.read_exact_at(1 << 63, &mut out).is_err());
        assert!(out.iter().all(|&b| b == 0xAA));
    }

    #[test]
    fn vec_source_bounds() {
        let s = VecSource::new(0x1000, vec![1, 2, 3, 4]);
        let mut b = [0u8; 2];
        s.read_exact_at(0x1002, &mut b).unwrap();
        assert_eq!(b, [3, 4]);
        assert!(s.read_exact_at(0x1003, &mut b).is_err());
        assert!(s.read_exact_at(0xfff, &mut b).is_err());
        assert!(s.read_exact_at(u64::MAX, &mut b).is_err());
    }
}
