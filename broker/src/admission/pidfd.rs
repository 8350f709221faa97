//! Small pidfd and `/proc/self/fd` functions shared by the pipeline steps: which pid a
//! pidfd names (fdinfo `Pid:`), whether that process is still running (poll), what path
//! an fd refers to (readlink), and opening a pidfd for a pid (tests and the server).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::fs::{Mode, OFlags};

/// The pid a pidfd refers to, read from `/proc/self/fdinfo/<fd>` (`Pid:` line), in the
/// broker's pid namespace. `Ok(None)`: the fdinfo has no `Pid:` line (not a pidfd).
/// `Ok(Some(p))` with `p <= 0`: the process is gone (or outside our pid namespace).
///
/// One open and usually one read into a stack buffer: reading stops at the first complete
/// `Pid:` line (the value [`parse_fdinfo_pid`] would take from the whole text).
pub fn pid_of(fd: BorrowedFd<'_>) -> io::Result<Option<i32>> {
    let mut path = PathBuf::new();
    let path = path.proc_self("fdinfo", fd.as_raw_fd());
    let mut buf = [0u8; 2048];
    let text = read_small(path, &mut buf, |t| complete_line(t, b"Pid:").is_some())?;
    Ok(std::str::from_utf8(text).ok().and_then(parse_fdinfo_pid))
}

/// [`pid_of`] for an fd already known to be a pidfd: one `PIDFD_GET_INFO` ioctl (Linux
/// 6.13+) when it names a live process in our pid namespace, else (older kernel, exited
/// or invisible process) the fdinfo answer, so the result is the same either way.
pub fn pid_of_pidfd(fd: BorrowedFd<'_>) -> io::Result<Option<i32>> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_PID,
        ..PidfdInfo::default()
    };
    // SAFETY: `info` is a writable pidfd_info of the size the request number encodes; the
    // kernel writes at most that many bytes into it. The caller guarantees `fd` is a
    // pidfd, so the request cannot mean anything else to the fd's driver.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), PIDFD_GET_INFO as _, &mut info) };
    if rc == 0 && info.mask & PIDFD_INFO_PID != 0 {
        if let Ok(pid) = i32::try_from(info.pid) {
            if pid > 0 {
                return Ok(Some(pid));
            }
        }
    }
    pid_of(fd)
}

/// `struct pidfd_info` of `<linux/pidfd.h>`, first version (64 bytes).
#[repr(C)]
#[derive(Debug, Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ids: [u32; 8],
    spare: u32,
}

const PIDFD_INFO_PID: u64 = 1;
/// `_IOWR(0xFF, 11, struct pidfd_info)`.
const PIDFD_GET_INFO: u64 =
    (3 << 30) | ((std::mem::size_of::<PidfdInfo>() as u64) << 16) | (0xFF << 8) | 11;

/// Reads a small `/proc` file into `buf`: one `open`, then reads until end of file, until
/// `buf` is full, or until `done` says the text read so far already answers the caller.
pub fn read_small<'b>(
    path: &CStr,
    buf: &'b mut [u8],
    done: impl Fn(&[u8]) -> bool,
) -> io::Result<&'b [u8]> {
    let file = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut len = 0;
    while len < buf.len() {
        let n = match rustix::io::read(&file, &mut buf[len..]) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            break;
        }
        len += n;
        if done(&buf[..len]) {
            break;
        }
    }
    Ok(&buf[..len])
}

/// The first line of `text` that starts with `prefix` and ends with a newline, without
/// the prefix and the newline.
pub fn complete_line<'t>(text: &'t [u8], prefix: &[u8]) -> Option<&'t [u8]> {
    text.split_inclusive(|&b| b == b'\n')
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.strip_suffix(b"\n"))
        .map(|l| &l[prefix.len()..])
}

/// A `/proc/...` path built on the stack (no allocation per request).
#[derive(Debug)]
pub struct PathBuf {
    buf: [u8; 64],
}

impl PathBuf {
    /// An empty buffer.
    pub fn new() -> Self {
        Self { buf: [0; 64] }
    }

    /// `/proc/self/<dir>/<n>` (`dir`: `fd` or `fdinfo`).
    pub fn proc_self(&mut self, dir: &str, n: i32) -> &CStr {
        self.build(&["/proc/self/", dir, "/"], n, "")
    }

    /// `/proc/<pid>/<file>`.
    pub fn proc_pid(&mut self, pid: i32, file: &str) -> &CStr {
        self.build(&["/proc/"], pid, file)
    }

    fn build(&mut self, head: &[&str], n: i32, tail: &str) -> &CStr {
        use std::io::Write;
        let cap = self.buf.len() - 1;
        let mut w = &mut self.buf[..cap];
        // The parts are short constants and an i32: they always fit in 63 bytes.
        for h in head {
            let _ = w.write_all(h.as_bytes());
        }
        let _ = write!(w, "{n}{tail}");
        let used = cap - w.len();
        self.buf[used] = 0;
        CStr::from_bytes_until_nul(&self.buf[..=used]).unwrap_or(c"/proc/self/fd/-1")
    }
}

impl Default for PathBuf {
    fn default() -> Self {
        Self::new()
    }
}

/// Extracts the `Pid:` value of an fdinfo text.
pub fn parse_fdinfo_pid(info: &str) -> Option<i32> {
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether the process behind a pidfd is still running: a pidfd polls readable once the
/// process has exited (zombie or reaped).
pub fn is_alive(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd for the duration of the call; timeout 0 never blocks.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if p.revents & libc::POLLNVAL != 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    Ok(n == 0 || p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0)
}

/// The path `/proc/self/fd/<fd>` points to.
pub fn fd_path(fd: BorrowedFd<'_>) -> io::Result<String> {
    let mut buf = [0u8; 256];
    match fd_link(fd, &mut buf) {
        Ok(link) => Ok(String::from_utf8_lossy(link).into_owned()),
        Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
            let p = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
            Ok(p.to_string_lossy().into_owned())
        }
        Err(e) => Err(e),
    }
}

/// The link text of `/proc/self/fd/<fd>` into `buf` (one `readlink`, no allocation).
/// `ENAMETOOLONG` when the text does not fit (it may have been cut).
pub fn fd_link<'b>(fd: BorrowedFd<'_>, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
    let mut path = PathBuf::new();
    let path = path.proc_self("fd", fd.as_raw_fd());
    // SAFETY: `path` is NUL-terminated and `buf` is writable for `buf.len()` bytes.
    let n = unsafe { libc::readlink(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    if n >= buf.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    Ok(&buf[..n])
}

/// Whether the link text of an fd is that of a pidfd (anon inode before pidfs, `pidfd:`
/// inode with pidfs).
pub fn looks_like_pidfd(link: &str) -> bool {
    link == "anon_inode:[pidfd]" || link.starts_with("pidfd:")
}

/// `pidfd_open(pid, 0)`.
pub fn open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn pid_and_liveness_follow_a_real_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let fd = open(pid).unwrap();
        assert!(looks_like_pidfd(&fd_path(fd.as_fd()).unwrap()));
        assert_eq!(pid_of(fd.as_fd()).unwrap(), Some(pid));
        assert!(is_alive(fd.as_fd()).unwrap());
        assert_eq!(pid_of_pidfd(fd.as_fd()).unwrap(), Some(pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            pid_of_pidfd(fd.as_fd()).unwrap(),
            pid_of(fd.as_fd()).unwrap()
        );
        assert!(!is_alive(fd.as_fd()).unwrap());
        let after = pid_of(fd.as_fd()).unwrap();
        assert!(after.is_some_and(|p| p <= 0), "{after:?}");
    }

    #[test]
    fn a_plain_file_is_not_a_pidfd() {
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(pid_of(f.as_fd()).unwrap(), None);
        assert!(!looks_like_pidfd(&fd_path(f.as_fd()).unwrap()));
    }
}
