//! systemd integration without libsystemd: `sd_notify` messages (`READY=1`,
//! `RELOADING=1`, `STOPPING=1`, `STATUS=`) on the `$NOTIFY_SOCKET` datagram socket
//! (a path, or an abstract name written with a leading `@`), and socket activation
//! (`$LISTEN_PID` / `$LISTEN_FDS`, first fd 3).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// First fd passed by socket activation.
pub const LISTEN_FDS_START: RawFd = 3;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    sock: OwnedFd,
    addr: libc::sockaddr_un,
    addr_len: libc::socklen_t,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` (then removes it from the environment so children do not
    /// talk to systemd in our name). None when not running under a notify-type service.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        std::env::remove_var("NOTIFY_SOCKET");
        Notifier::new(path.as_bytes()).map(Some)
    }

    /// A notifier for the socket named `name` (`/path` or `@abstract`).
    pub fn new(name: &[u8]) -> io::Result<Notifier> {
        // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let invalid = || io::Error::new(io::ErrorKind::InvalidInput, "bad NOTIFY_SOCKET");
        if name.is_empty() || name.len() >= addr.sun_path.len() {
            return Err(invalid());
        }
        let (bytes, abstract_) = match name.split_first() {
            Some((b'@', rest)) => (rest, true),
            Some((b'/', _)) if !name.contains(&0) => (name, false),
            _ => return Err(invalid()),
        };
        let offset = usize::from(abstract_);
        for (i, b) in bytes.iter().enumerate() {
            addr.sun_path[i + offset] = *b as libc::c_char;
        }
        let base = std::mem::size_of::<libc::sa_family_t>();
        // Abstract names have no terminating NUL; their length counts the leading NUL.
        let addr_len = (base + offset + bytes.len() + usize::from(!abstract_)) as libc::socklen_t;
        // SAFETY: plain socket(2) call; the result is checked before being owned.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a freshly created socket that nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Notifier {
            sock,
            addr,
            addr_len,
        })
    }

    /// Sends one notification (newline-separated `KEY=VALUE` assignments).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        // SAFETY: the buffer and address are valid for the lengths passed; the socket is
        // owned by self.
        let n = unsafe {
            libc::sendto(
                self.sock.as_raw_fd(),
                state.as_ptr().cast(),
                state.len(),
                libc::MSG_NOSIGNAL,
                std::ptr::addr_of!(self.addr).cast(),
                self.addr_len,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// Sends `state` when a notifier exists; failures are logged, never fatal.
pub fn notify(n: Option<&Notifier>, state: &str) {
    if let Some(n) = n {
        if let Err(e) = n.notify(state) {
            tracing::warn!("sd_notify {state:?}: {e}");
        }
    }
}

/// `RELOADING=1` with the monotonic timestamp systemd ≥ 253 expects.
pub fn reloading_message() -> String {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = (now.tv_sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add(now.tv_nsec as u64 / 1000);
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

/// Takes the socket passed by socket activation, if the environment says there is one for
/// this process. Exactly one fd is expected; it must be a listening `SOCK_SEQPACKET` Unix
/// socket. The variables are removed from the environment.
pub fn take_listen_fd() -> io::Result<Option<OwnedFd>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let n: i32 = fds
        .trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "LISTEN_FDS is not a number"))?;
    if n != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket activation passed {n} fds; memgated takes exactly one"),
        ));
    }
    // SAFETY: systemd passed fd 3 to this process (LISTEN_PID matches); nothing else in
    // the process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) };
    use rustix::net::sockopt;
    let ty = sockopt::socket_type(&fd)?;
    let listening = sockopt::socket_acceptconn(&fd)?;
    if ty != rustix::net::SocketType::SEQPACKET || !listening {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the activated socket is not a listening SOCK_SEQPACKET socket",
        ));
    }
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
    Ok(Some(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn notifies_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::new(path.as_os_str().as_bytes()).expect("notifier");
        n.notify("READY=1").expect("send");
        let mut buf = [0u8; 64];
        let got = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..got], b"READY=1");

        let name = format!("memgated-test-{}", std::process::id());
        let rx = {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .expect("abstract address");
            UnixDatagram::bind_addr(&addr).expect("bind abstract")
        };
        let n = Notifier::new(format!("@{name}").as_bytes()).expect("notifier");
        n.notify(&reloading_message()).expect("send");
        let got = rx.recv(&mut buf).expect("recv");
        assert!(buf[..got].starts_with(b"RELOADING=1\nMONOTONIC_USEC="));
    }

    #[test]
    fn refuses_bad_names() {
        assert!(Notifier::new(b"").is_err());
        assert!(Notifier::new(b"relative").is_err());
        assert!(Notifier::new(&[b'/'; 200]).is_err());
    }
}
