//! Operations memgated needs after hardening, run by `memgated-harden-probe` to show the
//! restrictions leave them working: reading a target's `/proc/PID/maps`, accepting a
//! request on a `SOCK_SEQPACKET` socket with fds in `SCM_RIGHTS`, `pread` through a
//! received `/proc/PID/mem` fd, TCP listen/accept, appending to the audit log, reading the
//! configuration, starting a thread.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Most fds accepted with one message.
const MAX_FDS: usize = 4;

/// A listening `SOCK_SEQPACKET` Unix socket, bound before hardening as the broker does.
#[derive(Debug)]
pub struct SeqpacketListener {
    fd: OwnedFd,
}

fn sockaddr_un(path: &Path) -> std::io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

fn seqpacket_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: integer arguments only.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: `fd` is a fresh socket owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl SeqpacketListener {
    /// Binds and listens at `path`.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        let fd = seqpacket_socket()?;
        let (addr, len) = sockaddr_un(path)?;
        // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
        if unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        } < 0
        {
            return Err(errno());
        }
        // SAFETY: integer arguments only.
        if unsafe { libc::listen(fd.as_raw_fd(), 8) } < 0 {
            return Err(errno());
        }
        Ok(SeqpacketListener { fd })
    }

    /// Accepts one connection, waiting at most `timeout_ms`.
    pub fn accept(&self, timeout_ms: i32) -> std::io::Result<OwnedFd> {
        wait_readable(self.fd.as_raw_fd(), timeout_ms)?;
        // SAFETY: null address pointers are allowed; integer flags.
        let fd = unsafe {
            libc::accept4(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(errno());
        }
        // SAFETY: `fd` was just returned by accept4 and is ours.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Connects to a `SOCK_SEQPACKET` socket (the requester side).
pub fn seqpacket_connect(path: &Path) -> std::io::Result<OwnedFd> {
    let fd = seqpacket_socket()?;
    let (addr, len) = sockaddr_un(path)?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    if unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    } < 0
    {
        return Err(errno());
    }
    Ok(fd)
}

fn wait_readable(fd: RawFd, timeout_ms: i32) -> std::io::Result<()> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    match rc {
        0 => Err(std::io::Error::from_raw_os_error(libc::ETIMEDOUT)),
        rc if rc < 0 => Err(errno()),
        _ => Ok(()),
    }
}

const fn cmsg_space(fds: usize) -> usize {
    // CMSG_SPACE for `fds` ints on Linux: aligned header plus aligned payload.
    let align = std::mem::size_of::<usize>();
    let hdr = (std::mem::size_of::<libc::cmsghdr>() + align - 1) & !(align - 1);
    let data = (fds * std::mem::size_of::<libc::c_int>() + align - 1) & !(align - 1);
    hdr + data
}

/// Sends one message with `fds` attached in `SCM_RIGHTS`.
pub fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut cbuf = [0u64; cmsg_space(MAX_FDS) / 8 + 1];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is valid before it is filled in.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE((fds.len() * 4) as u32) } as usize;
        // SAFETY: msg_control points to a buffer of at least msg_controllen bytes, so the
        // first header and its data (fds.len() ints) are inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN((fds.len() * 4) as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast(), fds.len());
        }
    }
    // SAFETY: `msg` describes live buffers (iov over `data`, control over `cbuf`).
    if unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) } < 0 {
        return Err(errno());
    }
    Ok(())
}

/// Receives one message and the fds that came with it.
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut cbuf = [0u64; cmsg_space(MAX_FDS) / 8 + 1];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is valid before it is filled in.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: `msg` describes live buffers of the stated sizes.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(errno());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control; CMSG_FIRSTHDR/NXTHDR stay inside it, and each
    // SCM_RIGHTS payload holds (cmsg_len - CMSG_LEN(0)) / 4 fds that are now ours.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / 4;
                let p = libc::CMSG_DATA(c).cast::<libc::c_int>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(p.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, fds))
}

/// Serves one export-like request on an accepted seqpacket connection: the message is
/// `"ADDR LEN"` (hex address, decimal length) with `[pidfd, mem fd, maps fd]` attached; the
/// replies are the `LEN` bytes read through the mem fd, then `"maps N"` with the number of
/// mappings read through the maps fd. Returns the number of bytes read.
///
/// Both files were opened by the requester, so the kernel's ptrace check ran against the
/// requester; the hardened broker could open neither itself (Landlock refuses ptrace access
/// to processes outside its domain, and without CAP_SYS_PTRACE it cannot read other users'
/// processes).
pub fn serve_mem_request(conn: &OwnedFd) -> std::io::Result<usize> {
    let mut buf = [0u8; 128];
    let (n, fds) = recv_with_fds(conn.as_raw_fd(), &mut buf)?;
    let bad = || std::io::Error::from_raw_os_error(libc::EINVAL);
    let text = std::str::from_utf8(&buf[..n]).map_err(|_| bad())?;
    let mut it = text.split_whitespace();
    let addr = u64::from_str_radix(it.next().ok_or_else(bad)?, 16).map_err(|_| bad())?;
    let len: usize = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    if fds.len() != 3 || len > 1 << 20 {
        return Err(bad());
    }
    let mut fds = fds.into_iter();
    let _pidfd = fds.next().ok_or_else(bad)?;
    let mem = File::from(fds.next().ok_or_else(bad)?);
    let mut maps = File::from(fds.next().ok_or_else(bad)?);
    let mut data = vec![0u8; len];
    mem.read_exact_at(&mut data, addr)?;
    send_with_fds(conn.as_raw_fd(), &data, &[])?;
    let mut text = String::new();
    maps.read_to_string(&mut text)?;
    let reply = format!("maps {}", text.lines().count());
    send_with_fds(conn.as_raw_fd(), reply.as_bytes(), &[])?;
    Ok(len)
}

/// Binds a new TCP listener on loopback (after hardening, as a fabric endpoint would be).
pub fn tcp_listen() -> std::io::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", 0))
}

/// Accepts one TCP connection and echoes one read back.
pub fn tcp_echo_once(l: &TcpListener, timeout_ms: i32) -> std::io::Result<usize> {
    wait_readable(l.as_raw_fd(), timeout_ms)?;
    let (mut s, _) = l.accept()?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf)?;
    s.write_all(&buf[..n])?;
    Ok(n)
}

/// Appends one record to the audit log and syncs it.
pub fn audit_append(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(f, "{line}")?;
    f.sync_data()
}

/// Reads a configuration file; returns its length.
pub fn read_config(path: &Path) -> std::io::Result<usize> {
    Ok(std::fs::read(path)?.len())
}

/// Starts a thread (glibc must fall back from clone3 to clone) that tries a forbidden
/// probe; returns that probe's result, showing the new thread is restricted too.
pub fn thread_runs_restricted(
    probe: &str,
    t: &super::probe::Targets,
) -> std::io::Result<Option<super::probe::ProbeResult>> {
    let name = probe.to_string();
    let targets = t.clone();
    std::thread::Builder::new()
        .name("probe-thread".into())
        .spawn(move || super::probe::run_one(&name, &targets))?
        .join()
        .map_err(|_| std::io::Error::other("probe thread panicked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fds_and_bytes_cross_a_seqpacket_socket() {
        let dir = std::env::temp_dir().join(format!("memgate-needed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let l = SeqpacketListener::bind(&path).expect("bind");
        let c = seqpacket_connect(&path).expect("connect");
        let s = l.accept(1000).expect("accept");
        // Our own mem fd stands in for the requester's.
        let mem = File::open("/proc/self/mem").expect("mem");
        let pidfd = File::open("/proc/self/status").expect("stand-in fd");
        let maps = File::open("/proc/self/maps").expect("maps");
        let secret = *b"memgate-probe-bytes";
        let addr = secret.as_ptr() as u64;
        let msg = format!("{addr:x} {}", secret.len());
        send_with_fds(
            c.as_raw_fd(),
            msg.as_bytes(),
            &[pidfd.as_raw_fd(), mem.as_raw_fd(), maps.as_raw_fd()],
        )
        .expect("send");
        assert_eq!(serve_mem_request(&s).expect("serve"), secret.len());
        let mut back = [0u8; 64];
        let (n, fds) = recv_with_fds(c.as_raw_fd(), &mut back).expect("reply");
        assert!(fds.is_empty());
        assert_eq!(&back[..n], &secret);
        let (n, _) = recv_with_fds(c.as_raw_fd(), &mut back).expect("maps reply");
        let reply = std::str::from_utf8(&back[..n]).expect("utf-8");
        let count: usize = reply
            .strip_prefix("maps ")
            .expect("maps N")
            .parse()
            .expect("N");
        assert!(count > 5, "{reply}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
