//! Raw userfaultfd: the syscall, the handful of ioctls the fault server needs and the event
//! message, written out by hand (x86-64 / aarch64 `_IOC` encoding) so that no C header or
//! bindgen is needed. Numbers follow `include/uapi/linux/userfaultfd.h`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// API version handed to `UFFDIO_API`.
pub const UFFD_API: u64 = 0xAA;
/// `userfaultfd(2)` flag: only faults raised from user mode are delivered; a kernel-mode
/// access (e.g. `read(2)` into a missing page) fails with `EFAULT` instead.
pub const UFFD_USER_MODE_ONLY: libc::c_int = 1;

/// Feature bits (`UFFD_FEATURE_*`).
pub mod feature {
    /// Deliver `UFFD_EVENT_FORK` (needs CAP_SYS_PTRACE).
    pub const EVENT_FORK: u64 = 1 << 1;
    /// Deliver `UFFD_EVENT_REMAP` (mremap of a registered range).
    pub const EVENT_REMAP: u64 = 1 << 2;
    /// Deliver `UFFD_EVENT_REMOVE` (madvise DONTNEED/REMOVE).
    pub const EVENT_REMOVE: u64 = 1 << 3;
    /// Deliver `UFFD_EVENT_UNMAP` (munmap of a registered range).
    pub const EVENT_UNMAP: u64 = 1 << 6;
    /// Raise SIGBUS instead of delivering faults.
    pub const SIGBUS: u64 = 1 << 7;
    /// Report the faulting thread id.
    pub const THREAD_ID: u64 = 1 << 8;
    /// `UFFDIO_POISON` is available.
    pub const POISON: u64 = 1 << 14;
}

/// `UFFDIO_REGISTER_MODE_MISSING`.
pub const REGISTER_MODE_MISSING: u64 = 1;
/// `UFFDIO_COPY_MODE_DONTWAKE`.
pub const COPY_MODE_DONTWAKE: u64 = 1;

/// Event codes in [`Msg::event`].
pub mod event {
    /// A thread faulted on a missing page.
    pub const PAGEFAULT: u8 = 0x12;
    /// The process forked; `arg` carries the child's new uffd.
    pub const FORK: u8 = 0x13;
    /// A registered range moved (mremap).
    pub const REMAP: u8 = 0x14;
    /// Pages were discarded (madvise).
    pub const REMOVE: u8 = 0x15;
    /// A registered range was unmapped.
    pub const UNMAP: u8 = 0x16;
}

const fn iowr(nr: u64, size: u64) -> u64 {
    (3 << 30) | (size << 16) | (0xAA << 8) | nr
}
const fn ior(nr: u64, size: u64) -> u64 {
    (2 << 30) | (size << 16) | (0xAA << 8) | nr
}

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}
#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}
#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}
#[repr(C)]
#[derive(Default)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}
#[repr(C)]
#[derive(Default)]
struct UffdioPoison {
    range: UffdioRange,
    mode: u64,
    updated: i64,
}

const UFFDIO_API: u64 = iowr(0x3F, std::mem::size_of::<UffdioApi>() as u64);
const UFFDIO_REGISTER: u64 = iowr(0x00, std::mem::size_of::<UffdioRegister>() as u64);
const UFFDIO_UNREGISTER: u64 = ior(0x01, std::mem::size_of::<UffdioRange>() as u64);
const UFFDIO_WAKE: u64 = ior(0x02, std::mem::size_of::<UffdioRange>() as u64);
const UFFDIO_COPY: u64 = iowr(0x03, std::mem::size_of::<UffdioCopy>() as u64);
const UFFDIO_ZEROPAGE: u64 = iowr(0x04, std::mem::size_of::<UffdioZeropage>() as u64);
const UFFDIO_POISON: u64 = iowr(0x08, std::mem::size_of::<UffdioPoison>() as u64);

/// One `struct uffd_msg` (32 bytes), decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    /// A missing-page fault at `addr` (not page aligned) by thread `tid` (0 if unknown).
    PageFault {
        /// Faulting address.
        addr: u64,
        /// Fault flags (`UFFD_PAGEFAULT_FLAG_*`).
        flags: u64,
        /// Faulting thread id, if THREAD_ID was negotiated.
        tid: u32,
    },
    /// The process forked; the child's uffd (already installed in our fd table).
    Fork {
        /// The new uffd number in this process.
        ufd: RawFd,
    },
    /// `[from, from+len)` moved to `to`.
    Remap {
        /// Old start.
        from: u64,
        /// New start.
        to: u64,
        /// Length.
        len: u64,
    },
    /// Pages in `[start, end)` were discarded.
    Remove {
        /// Start.
        start: u64,
        /// End (exclusive).
        end: u64,
    },
    /// `[start, end)` was unmapped.
    Unmap {
        /// Start.
        start: u64,
        /// End (exclusive).
        end: u64,
    },
    /// An event this code does not know.
    Unknown(u8),
}

impl Msg {
    fn decode(b: &[u8; 32]) -> Msg {
        let u = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        let u32at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]));
        match b[0] {
            event::PAGEFAULT => Msg::PageFault {
                flags: u(8),
                addr: u(16),
                tid: u32at(24),
            },
            event::FORK => Msg::Fork {
                ufd: u32at(8) as RawFd,
            },
            event::REMAP => Msg::Remap {
                from: u(8),
                to: u(16),
                len: u(24),
            },
            event::REMOVE => Msg::Remove {
                start: u(8),
                end: u(16),
            },
            event::UNMAP => Msg::Unmap {
                start: u(8),
                end: u(16),
            },
            other => Msg::Unknown(other),
        }
    }
}

/// Outcome of a [`Uffd::copy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyOutcome {
    /// Every byte was copied.
    Done,
    /// The page at `dst + copied` already exists; bytes before it were copied.
    Exists {
        /// Bytes copied before the existing page.
        copied: u64,
    },
    /// The mm is changing (a non-cooperative event is pending): read events, then retry
    /// from `dst + copied`.
    Again {
        /// Bytes copied before the interruption.
        copied: u64,
    },
    /// The target's address space is gone: the process exited (ESRCH).
    Gone,
    /// The range is not inside one registered mapping (ENOENT): it crosses a mapping
    /// boundary (the process split a mapping, e.g. with madvise or mprotect), or the page is
    /// no longer registered. Bytes before `dst + copied` were copied.
    NoMapping {
        /// Bytes copied before the boundary.
        copied: u64,
    },
}

/// An owned userfaultfd.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
    features: u64,
}

fn ioctl<T>(fd: RawFd, req: u64, arg: &mut T) -> io::Result<()> {
    // SAFETY: `req` is one of the UFFDIO_* numbers above, whose encoded size equals
    // `size_of::<T>()` for the `#[repr(C)]` struct passed; the kernel reads and writes only
    // that many bytes through the pointer, which is valid and exclusively borrowed.
    let r = unsafe { libc::ioctl(fd, req as _, arg as *mut T) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Uffd {
    /// Creates a new userfaultfd (non-blocking, close-on-exec) and negotiates `features`.
    /// `user_mode_only` adds `UFFD_USER_MODE_ONLY` (works without privilege when
    /// `vm.unprivileged_userfaultfd=0`, but kernel-mode accesses to missing pages fail with
    /// EFAULT).
    pub fn create(user_mode_only: bool, features: u64) -> io::Result<Uffd> {
        let mut flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        if user_mode_only {
            flags |= UFFD_USER_MODE_ONLY;
        }
        // SAFETY: userfaultfd takes one int flag argument and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let mut api = UffdioApi {
            api: UFFD_API,
            features,
            ioctls: 0,
        };
        ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api)?;
        Ok(Uffd {
            fd,
            features: api.features,
        })
    }

    /// Wraps a uffd received from elsewhere (API already negotiated by its creator).
    /// `features` is what the creator negotiated, if known (0 otherwise).
    pub fn from_fd(fd: OwnedFd, features: u64) -> Uffd {
        Uffd { fd, features }
    }

    /// Features negotiated (as far as known).
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Registers `[start, start+len)` in MISSING mode; returns the ioctls the range supports.
    pub fn register_missing(&self, start: u64, len: u64) -> io::Result<u64> {
        let mut r = UffdioRegister {
            range: UffdioRange { start, len },
            mode: REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        ioctl(self.fd.as_raw_fd(), UFFDIO_REGISTER, &mut r)?;
        Ok(r.ioctls)
    }

    /// Unregisters a range.
    pub fn unregister(&self, start: u64, len: u64) -> io::Result<()> {
        let mut r = UffdioRange { start, len };
        ioctl(self.fd.as_raw_fd(), UFFDIO_UNREGISTER, &mut r)
    }

    /// Wakes threads waiting on faults in the range.
    pub fn wake(&self, start: u64, len: u64) -> io::Result<()> {
        let mut r = UffdioRange { start, len };
        ioctl(self.fd.as_raw_fd(), UFFDIO_WAKE, &mut r)
    }

    /// Atomically fills `[dst, dst+src.len())` (page aligned) from `src` and wakes waiters.
    pub fn copy(&self, dst: u64, src: &[u8], wake: bool) -> io::Result<CopyOutcome> {
        let mut c = UffdioCopy {
            dst,
            src: src.as_ptr() as u64,
            len: src.len() as u64,
            mode: if wake { 0 } else { COPY_MODE_DONTWAKE },
            copy: 0,
        };
        match ioctl(self.fd.as_raw_fd(), UFFDIO_COPY, &mut c) {
            Ok(()) => Ok(CopyOutcome::Done),
            Err(e) => {
                let copied = c.copy.max(0) as u64;
                match e.raw_os_error() {
                    Some(libc::EEXIST) => Ok(CopyOutcome::Exists { copied }),
                    Some(libc::EAGAIN) => Ok(CopyOutcome::Again { copied }),
                    Some(libc::ESRCH) => Ok(CopyOutcome::Gone),
                    Some(libc::ENOENT) => Ok(CopyOutcome::NoMapping { copied }),
                    _ => Err(e),
                }
            }
        }
    }

    /// Maps the zero page over `[start, start+len)` (for ranges the process discarded itself).
    pub fn zeropage(&self, start: u64, len: u64) -> io::Result<()> {
        let mut z = UffdioZeropage {
            range: UffdioRange { start, len },
            mode: 0,
            zeropage: 0,
        };
        ioctl(self.fd.as_raw_fd(), UFFDIO_ZEROPAGE, &mut z)
    }

    /// Marks `[start, start+len)` poisoned: any later access raises SIGBUS, even after this
    /// uffd is closed. Used to fail closed. Pages already present are left alone (EEXIST is
    /// skipped page by page), and so are pages in no registered mapping (ENOENT, found page
    /// by page: such a page is no longer this uffd's to serve or poison). Returns the pages
    /// poisoned. EAGAIN (a non-cooperative event is pending) is returned to the caller, who
    /// must read the events and call again: the kernel refuses until they are read.
    pub fn poison(&self, start: u64, len: u64) -> io::Result<u64> {
        const PAGE: u64 = crate::PAGE as u64;
        let mut at = start;
        let end = start + len;
        let mut poisoned = 0;
        // After an ENOENT, one page at a time until the end of the range.
        let mut single = false;
        while at < end {
            let n = if single { PAGE } else { end - at };
            let mut p = UffdioPoison {
                range: UffdioRange { start: at, len: n },
                mode: 0,
                updated: 0,
            };
            let res = ioctl(self.fd.as_raw_fd(), UFFDIO_POISON, &mut p);
            let done = p.updated.max(0) as u64;
            poisoned += done / PAGE;
            match res {
                Ok(()) => at += n,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => at += done + PAGE,
                // Partial progress is reported as EAGAIN with `updated` > 0: go on from there.
                // With nothing done, EAGAIN means an event is pending: the caller's turn.
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && done > 0 => at += done,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    if single {
                        at += PAGE;
                    } else {
                        single = true;
                        at += done;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(poisoned)
    }

    /// Reads one pending message, or `None` when none is queued (non-blocking fd) or the
    /// other side is gone (EOF).
    pub fn read_msg(&self) -> io::Result<Option<Msg>> {
        let mut b = [0u8; 32];
        // SAFETY: reading at most 32 bytes into a 32-byte stack buffer.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(e);
        }
        if n as usize != b.len() {
            return Ok(None);
        }
        Ok(Some(Msg::decode(&b)))
    }
}

impl AsFd for Uffd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_header() {
        assert_eq!(UFFDIO_API, 0xC018_AA3F);
        assert_eq!(UFFDIO_REGISTER, 0xC020_AA00);
        assert_eq!(UFFDIO_UNREGISTER, 0x8010_AA01);
        assert_eq!(UFFDIO_WAKE, 0x8010_AA02);
        assert_eq!(UFFDIO_COPY, 0xC028_AA03);
        assert_eq!(UFFDIO_ZEROPAGE, 0xC020_AA04);
        assert_eq!(UFFDIO_POISON, 0xC020_AA08);
    }

    #[test]
    fn decodes_a_pagefault_message() {
        let mut b = [0u8; 32];
        b[0] = event::PAGEFAULT;
        b[16..24].copy_from_slice(&0x7f00_1234u64.to_ne_bytes());
        b[24..28].copy_from_slice(&42u32.to_ne_bytes());
        assert_eq!(
            Msg::decode(&b),
            Msg::PageFault {
                addr: 0x7f00_1234,
                flags: 0,
                tid: 42
            }
        );
    }
}
