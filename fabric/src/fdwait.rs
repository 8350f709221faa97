//! Waiting for one file descriptor with an optional deadline (`poll(2)`), as both
//! providers' initiators do while READs are outstanding.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

/// Wait until `fd` shows one of `events` (`POLLIN`, `POLLOUT`) or `deadline` passes
/// (never with `None`). `Ok(false)`: the deadline passed. An interrupted wait counts as
/// ready, so the caller re-checks its state.
pub(crate) fn wait(
    fd: RawFd,
    events: libc::c_short,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    let timeout_ms = match deadline {
        None => -1,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            left.as_millis().clamp(1, i32::MAX as u128) as i32
        }
    };
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: pfd is a valid pollfd array of length 1 for the duration of the call.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(true);
        }
        return Err(e);
    }
    Ok(r > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    #[test]
    fn times_out_then_sees_data() {
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::os::fd::AsRawFd;
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(!wait(a.as_raw_fd(), libc::POLLIN, Some(soon)).unwrap());
        b.write_all(b"x").unwrap();
        assert!(wait(a.as_raw_fd(), libc::POLLIN, None).unwrap());
    }
}
