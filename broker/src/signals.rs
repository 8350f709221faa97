//! Signals as file descriptor events: SIGHUP (reload), SIGTERM and SIGINT (shut down) are
//! blocked and read from a signalfd in the event loop, so no handler runs at an arbitrary
//! point. SIGPIPE is ignored (peers that vanish mid-reply are handled as errors).
//!
//! [`block`] must run before any thread exists, so every thread inherits the mask.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A signal the loop acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Reload the policy.
    Hangup,
    /// Shut down (SIGTERM or SIGINT).
    Terminate,
}

fn set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut s: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `s` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut s);
        libc::sigaddset(&mut s, libc::SIGHUP);
        libc::sigaddset(&mut s, libc::SIGTERM);
        libc::sigaddset(&mut s, libc::SIGINT);
    }
    s
}

/// Blocks the handled signals, ignores SIGPIPE and returns a non-blocking signalfd.
pub fn block() -> io::Result<OwnedFd> {
    let s = set();
    // SAFETY: `s` is initialised; the old mask is not wanted (null).
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &s, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: setting SIGPIPE's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // SAFETY: `s` is initialised; -1 asks for a new signalfd.
    let fd = unsafe { libc::signalfd(-1, &s, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new signalfd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads every pending signal from the signalfd.
pub fn drain(fd: &OwnedFd) -> Vec<Signal> {
    let mut out = Vec::new();
    loop {
        // SAFETY: signalfd_siginfo is plain data; all zeroes is valid.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: `info` is a writable buffer of `size` bytes; the fd is owned and open.
        let n = unsafe { libc::read(fd.as_raw_fd(), std::ptr::addr_of_mut!(info).cast(), size) };
        if n != size as isize {
            break;
        }
        match info.ssi_signo as i32 {
            libc::SIGHUP => out.push(Signal::Hangup),
            libc::SIGTERM | libc::SIGINT => out.push(Signal::Terminate),
            _ => {}
        }
    }
    out
}
