//! Step 1, peer credentials: the requester's pid/uid/gid from `SO_PEERCRED` (taken by the
//! kernel at `connect`, so they cannot be forged by the client), plus a pidfd of the
//! requester from `SO_PEERPIDFD` when the kernel has it (Linux 6.5+), which pins the
//! requester's identity against pid reuse.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Why the requester could not be identified.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// `getsockopt(SO_PEERCRED)` failed (not a Unix socket, or closed).
    #[error("cannot read the peer credentials of the socket: {0}")]
    Credentials(io::Error),
    /// The kernel reported no peer process (pid 0).
    #[error("the socket has no peer process")]
    NoPeer,
}

impl PeerError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            PeerError::Credentials(_) | PeerError::NoPeer => "peer_unknown",
        }
    }
}

/// The requester as the kernel saw it at `connect`.
#[derive(Debug)]
pub struct PeerCred {
    /// Requester pid (broker's pid namespace).
    pub pid: i32,
    /// Requester uid.
    pub uid: u32,
    /// Requester gid.
    pub gid: u32,
    /// pidfd of the requester (`SO_PEERPIDFD`), when the kernel supports it.
    pub pidfd: Option<OwnedFd>,
}

impl PeerCred {
    /// Reads the credentials of the peer of a connected Unix socket.
    pub fn of(sock: BorrowedFd<'_>) -> Result<PeerCred, PeerError> {
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = socklen::<libc::ucred>();
        // SAFETY: `cred` is a writable ucred and `len` its size; the kernel writes at most
        // `len` bytes and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                std::ptr::addr_of_mut!(cred).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(PeerError::Credentials(io::Error::last_os_error()));
        }
        if cred.pid <= 0 {
            return Err(PeerError::NoPeer);
        }
        Ok(PeerCred {
            pid: cred.pid,
            uid: cred.uid,
            gid: cred.gid,
            pidfd: peer_pidfd(sock),
        })
    }
}

fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

/// `SO_PEERPIDFD`, or `None` when the kernel does not know the option.
fn peer_pidfd(sock: BorrowedFd<'_>) -> Option<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = socklen::<libc::c_int>();
    // SAFETY: `fd` is a writable int and `len` its size.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            std::ptr::addr_of_mut!(fd).cast(),
            &mut len,
        )
    };
    if rc != 0 || fd < 0 {
        return None;
    }
    // SAFETY: the kernel installed this new fd for us; we are its only owner.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn credentials_of_a_real_socketpair_are_ours() {
        let (a, _b) = UnixStream::pair().unwrap();
        let p = PeerCred::of(a.as_fd()).unwrap();
        assert_eq!(p.pid, i32::try_from(std::process::id()).unwrap());
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!((p.uid, p.gid), (uid, gid));
        // This kernel has SO_PEERPIDFD; it must name us.
        let pidfd = p.pidfd.expect("SO_PEERPIDFD");
        assert_eq!(
            super::super::pidfd::pid_of(pidfd.as_fd()).unwrap(),
            Some(p.pid)
        );
    }

    #[test]
    fn a_file_is_not_a_peer() {
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let e = PeerCred::of(f.as_fd()).unwrap_err();
        assert_eq!(e.code(), "peer_unknown");
    }
}
