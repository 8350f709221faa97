//! Step 2, the ptrace proof. The requester sends a pidfd of the target and an fd of
//! `/proc/<pid>/mem` it opened itself: the kernel ran its ptrace access check
//! (`PTRACE_MODE_ATTACH_FSCREDS`) at that `open`, so holding the fd proves the requester
//! may read the target's memory. This module makes sure the fd really is that file of
//! that process: the procfs superblock (`fstatfs`) of the broker's own `/proc` instance,
//! the path (`/proc/self/fd` readlink), the pidfd's pid (fdinfo `Pid:`), the open mode,
//! and the pidfd's liveness after every `/proc` read, so a recycled pid cannot redirect
//! the export to another process.
//!
//! The third fd is the target's `/proc/<pid>/maps`, opened by the requester too (a
//! ptrace-read check at open): the hardened broker (no `CAP_SYS_PTRACE`, Landlock) cannot
//! open another user's maps itself. It gets the same checks (procfs, path, pid).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::OnceLock;

use memgate_policy::Access;

use super::peer::PeerCred;
use super::pidfd;

/// `PROC_SUPER_MAGIC` from `linux/magic.h`.
pub const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// Why the fds do not prove access to the target.
#[derive(Debug, thiserror::Error)]
pub enum PtraceError {
    /// Not exactly three fds.
    #[error("an export carries exactly 3 fds (pidfd, /proc/<pid>/mem, /proc/<pid>/maps), got {0}")]
    FdCount(usize),
    /// The first fd is not a pidfd.
    #[error("the first fd is not a pidfd ({0})")]
    NotPidfd(String),
    /// The target has exited (or is outside the broker's pid namespace).
    #[error("the target process has exited")]
    TargetExited,
    /// The second fd is not a `/proc/<pid>/mem` file of the broker's procfs.
    #[error("the second fd is not /proc/<pid>/mem ({0})")]
    NotMem(String),
    /// The mem fd belongs to another process than the pidfd.
    #[error("the mem fd is /proc/{mem}/mem but the pidfd names pid {target}")]
    Mismatch {
        /// Pid of the mem file.
        mem: i32,
        /// Pid of the pidfd.
        target: i32,
    },
    /// The mem fd is the requester's own memory.
    #[error("the mem fd is the requester's own memory (pid {0})")]
    RequesterMem(i32),
    /// The target is the requester itself.
    #[error("the target is the requester itself (pid {0})")]
    TargetIsRequester(i32),
    /// The third fd is not a `/proc/<pid>/maps` file of the broker's procfs.
    #[error("the third fd is not /proc/<pid>/maps ({0})")]
    NotMaps(String),
    /// The maps fd belongs to another process than the pidfd.
    #[error("the maps fd is /proc/{maps}/maps but the pidfd names pid {target}")]
    MapsMismatch {
        /// Pid of the maps file.
        maps: i32,
        /// Pid of the pidfd.
        target: i32,
    },
    /// Opened write-only.
    #[error("the mem fd is not open for reading")]
    NotReadable,
    /// `read-write` asked for with a read-only mem fd.
    #[error("read-write access needs a mem fd opened read-write")]
    NotWritable,
    /// Reading through the mem fd failed or hit end-of-file (the address space it was
    /// opened on is gone: exit or exec).
    #[error("cannot read the target through the mem fd at {addr:#x}: {detail}")]
    Unreadable {
        /// Address probed.
        addr: u64,
        /// What happened.
        detail: String,
    },
    /// A /proc or fd query failed.
    #[error("cannot inspect the fds: {0}")]
    Io(io::Error),
}

impl PtraceError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            PtraceError::FdCount(_) => "fd_count",
            PtraceError::NotPidfd(_) => "pidfd_invalid",
            PtraceError::TargetExited => "target_exited",
            PtraceError::NotMem(_) => "mem_fd_invalid",
            PtraceError::Mismatch { .. } => "mem_fd_mismatch",
            PtraceError::RequesterMem(_) => "mem_fd_is_requester",
            PtraceError::TargetIsRequester(_) => "target_is_requester",
            PtraceError::NotMaps(_) => "maps_fd_invalid",
            PtraceError::MapsMismatch { .. } => "maps_fd_mismatch",
            PtraceError::NotReadable => "mem_fd_not_readable",
            PtraceError::NotWritable => "mem_fd_not_writable",
            PtraceError::Unreadable { .. } => "mem_unreadable",
            PtraceError::Io(_) => "fd_inspect_failed",
        }
    }
}

/// A target proven readable by the requester.
#[derive(Debug)]
pub struct Proven {
    /// Target pid (broker's namespace).
    pub pid: i32,
    /// The target's pidfd.
    pub pidfd: OwnedFd,
    /// The target's mem file, opened by the requester.
    pub mem: File,
    /// The target's maps file, opened by the requester (the hardened broker cannot open
    /// another user's `/proc/<pid>/maps` itself).
    pub maps: File,
}

impl Proven {
    /// Fails with `target_exited` unless the target still runs.
    pub fn check_alive(&self) -> Result<(), PtraceError> {
        check_alive(self.pidfd.as_fd())
    }

    /// Reads one byte at `addr` through the mem fd, then re-checks liveness. End-of-file
    /// means the address space the fd was opened on is gone.
    pub fn probe_read(&self, addr: u64) -> Result<(), PtraceError> {
        let mut b = [0u8; 1];
        let r = self.mem.read_at(&mut b, addr);
        self.check_alive()?;
        match r {
            Ok(1) => Ok(()),
            Ok(_) => Err(PtraceError::Unreadable {
                addr,
                detail: "end of file: the address space is gone (exit or exec)".into(),
            }),
            Err(e) => Err(PtraceError::Unreadable {
                addr,
                detail: e.to_string(),
            }),
        }
    }
}

fn check_alive(fd: BorrowedFd<'_>) -> Result<(), PtraceError> {
    match pidfd::is_alive(fd) {
        Ok(true) => Ok(()),
        Ok(false) => Err(PtraceError::TargetExited),
        Err(e) => Err(PtraceError::Io(e)),
    }
}

/// Parses `/proc/<n>/mem` exactly (no `self`, no task paths, no ` (deleted)`).
pub fn parse_mem_path(path: &str) -> Option<i32> {
    parse_proc_path(path, "/mem")
}

/// Parses `/proc/<n>/maps` exactly.
pub fn parse_maps_path(path: &str) -> Option<i32> {
    parse_proc_path(path, "/maps")
}

fn parse_proc_path(path: &str, file: &str) -> Option<i32> {
    let n = path.strip_prefix("/proc/")?.strip_suffix(file)?;
    let canonical = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0');
    if canonical {
        n.parse().ok().filter(|p: &i32| *p > 0)
    } else {
        None
    }
}

/// The device of the broker's own procfs (`/proc/self`), read once: the broker's mount of
/// `/proc` does not change while it runs.
fn proc_dev() -> Result<u64, PtraceError> {
    static DEV: OnceLock<u64> = OnceLock::new();
    if let Some(d) = DEV.get() {
        return Ok(*d);
    }
    let d = std::fs::metadata("/proc/self")
        .map_err(PtraceError::Io)?
        .dev();
    Ok(*DEV.get_or_init(|| d))
}

/// `st_dev` of an open fd (one `fstat`).
fn fd_dev(fd: BorrowedFd<'_>) -> Result<u64, PtraceError> {
    let st = rustix::fs::fstat(fd).map_err(|e| PtraceError::Io(e.into()))?;
    Ok(st.st_dev)
}

fn fs_magic(fd: BorrowedFd<'_>) -> io::Result<i64> {
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `s` is a writable statfs for the duration of the call.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // f_type is i64 on 64-bit targets, narrower elsewhere.
    #[allow(clippy::useless_conversion)]
    Ok(i64::from(s.f_type))
}

/// The pidfd's pid, refusing non-pidfds and exited processes.
/// The link text of an fd (stack buffer; a text too long for it is read again, allocated,
/// only to name it in the error).
fn link_of<'b>(fd: BorrowedFd<'_>, buf: &'b mut [u8; 256]) -> Result<&'b str, String> {
    match pidfd::fd_link(fd, buf) {
        Ok(l) => std::str::from_utf8(l).map_err(|_| String::from_utf8_lossy(l).into_owned()),
        Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
            Err(pidfd::fd_path(fd).unwrap_or_else(|e| e.to_string()))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn target_pid(fd: BorrowedFd<'_>) -> Result<i32, PtraceError> {
    let mut buf = [0u8; 256];
    let link = match pidfd::fd_link(fd, &mut buf) {
        Ok(l) => std::str::from_utf8(l).unwrap_or(""),
        Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => "",
        Err(e) => return Err(PtraceError::Io(e)),
    };
    if !pidfd::looks_like_pidfd(link) {
        return Err(PtraceError::NotPidfd(
            pidfd::fd_path(fd).map_err(PtraceError::Io)?,
        ));
    }
    fdinfo_pid(fd)
}

/// The pid of an fd already known to be a pidfd (its fdinfo `Pid:`); gone → exited.
fn fdinfo_pid(fd: BorrowedFd<'_>) -> Result<i32, PtraceError> {
    match pidfd::pid_of_pidfd(fd).map_err(PtraceError::Io)? {
        None => Err(PtraceError::NotPidfd("no Pid: in fdinfo".into())),
        Some(p) if p <= 0 => Err(PtraceError::TargetExited),
        Some(p) => Ok(p),
    }
}

/// Checks that `fds` are `[pidfd, /proc/<pid>/mem, /proc/<pid>/maps]` of one live
/// process and usable for `access`.
/// Every fd is closed on error.
pub fn prove(fds: Vec<OwnedFd>, peer: &PeerCred, access: Access) -> Result<Proven, PtraceError> {
    let n = fds.len();
    let mut it = fds.into_iter();
    let (Some(pidfd_fd), Some(mem_fd), Some(maps_fd), None) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(PtraceError::FdCount(n));
    };
    let pid = target_pid(pidfd_fd.as_fd())?;
    check_alive(pidfd_fd.as_fd())?;
    if pid == peer.pid {
        return Err(PtraceError::TargetIsRequester(pid));
    }
    let magic = fs_magic(mem_fd.as_fd()).map_err(PtraceError::Io)?;
    if magic != PROC_SUPER_MAGIC {
        return Err(PtraceError::NotMem(format!(
            "filesystem magic {magic:#x}, not procfs"
        )));
    }
    let mem = File::from(mem_fd);
    // The broker's own procfs instance: a /proc mounted in another pid namespace would
    // number processes differently.
    let ours = proc_dev()?;
    let theirs = fd_dev(mem.as_fd())?;
    if ours != theirs {
        return Err(PtraceError::NotMem(
            "a procfs instance other than the broker's".into(),
        ));
    }
    let mut buf = [0u8; 256];
    let path = link_of(mem.as_fd(), &mut buf);
    check_alive(pidfd_fd.as_fd())?;
    let Some(mem_pid) = path.as_ref().ok().and_then(|p| parse_mem_path(p)) else {
        let shown = path.map_or_else(
            |e| e.escape_debug().to_string(),
            |p| p.escape_debug().to_string(),
        );
        return Err(PtraceError::NotMem(shown));
    };
    if mem_pid != pid {
        if mem_pid == peer.pid {
            return Err(PtraceError::RequesterMem(mem_pid));
        }
        return Err(PtraceError::Mismatch {
            mem: mem_pid,
            target: pid,
        });
    }
    // SAFETY: F_GETFL only reads the file status flags of a valid fd.
    let flags = unsafe { libc::fcntl(mem.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(PtraceError::Io(io::Error::last_os_error()));
    }
    let mode = flags & libc::O_ACCMODE;
    if mode == libc::O_WRONLY {
        return Err(PtraceError::NotReadable);
    }
    if access == Access::ReadWrite && mode != libc::O_RDWR {
        return Err(PtraceError::NotWritable);
    }
    let maps = check_maps(maps_fd, pid, ours)?;
    // The fdinfo pid must still be the same live process after all the reads above (the
    // fd itself was shown to be a pidfd at the start; what it refers to cannot change).
    if fdinfo_pid(pidfd_fd.as_fd())? != pid {
        return Err(PtraceError::TargetExited);
    }
    check_alive(pidfd_fd.as_fd())?;
    Ok(Proven {
        pid,
        pidfd: pidfd_fd,
        mem,
        maps,
    })
}

/// Checks that `fd` is `/proc/<pid>/maps` of the broker's procfs, open for reading.
fn check_maps(fd: OwnedFd, pid: i32, proc_dev: u64) -> Result<File, PtraceError> {
    let magic = fs_magic(fd.as_fd()).map_err(PtraceError::Io)?;
    if magic != PROC_SUPER_MAGIC {
        return Err(PtraceError::NotMaps(format!(
            "filesystem magic {magic:#x}, not procfs"
        )));
    }
    let maps = File::from(fd);
    if fd_dev(maps.as_fd())? != proc_dev {
        return Err(PtraceError::NotMaps(
            "a procfs instance other than the broker's".into(),
        ));
    }
    let mut buf = [0u8; 256];
    let path = link_of(maps.as_fd(), &mut buf);
    let Some(maps_pid) = path.as_ref().ok().and_then(|p| parse_maps_path(p)) else {
        let shown = path.map_or_else(
            |e| e.escape_debug().to_string(),
            |p| p.escape_debug().to_string(),
        );
        return Err(PtraceError::NotMaps(shown));
    };
    if maps_pid != pid {
        return Err(PtraceError::MapsMismatch {
            maps: maps_pid,
            target: pid,
        });
    }
    // SAFETY: F_GETFL only reads the file status flags of a valid fd.
    let flags = unsafe { libc::fcntl(maps.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 || flags & libc::O_ACCMODE == libc::O_WRONLY {
        return Err(PtraceError::NotMaps("not open for reading".into()));
    }
    Ok(maps)
}

#[cfg(test)]
mod tests;
