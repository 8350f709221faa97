//! Small pidfd and `/proc/self/fd` functions shared by the pipeline steps: which pid a
//! pidfd names (fdinfo `Pid:`), whether that process is still running (poll), what path
//! an fd refers to (readlink), and opening a pidfd for a pid (tests and the server).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The pid a pidfd refers to, read from `/proc/self/fdinfo/<fd>` (`Pid:` line), in the
/// broker's pid namespace. `Ok(None)`: the fdinfo has no `Pid:` line (not a pidfd).
/// `Ok(Some(p))` with `p <= 0`: the process is gone (or outside our pid namespace).
pub fn pid_of(fd: BorrowedFd<'_>) -> io::Result<Option<i32>> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    Ok(parse_fdinfo_pid(&info))
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
    let p = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    Ok(p.to_string_lossy().into_owned())
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
        child.kill().unwrap();
        child.wait().unwrap();
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
