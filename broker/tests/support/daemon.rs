//! The process plumbing both broker harnesses share (the lifecycle `support` module and
//! the adversarial `common` module): collecting a child's stderr on a thread, and waiting
//! for a systemd-style notification on the private `NOTIFY_SOCKET` datagram socket, and
//! waiting for the broker to exit.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Takes `child`'s piped stderr and appends everything it writes to the returned buffer
/// from a background thread (the pipe never fills and blocks the broker).
pub fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let stderr = Arc::new(Mutex::new(String::new()));
    if let Some(mut err) = child.stderr.take() {
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
    }
    stderr
}

/// What the collector has gathered so far.
pub fn collected(stderr: &Mutex<String>) -> String {
    stderr.lock().map(|s| s.clone()).unwrap_or_default()
}

/// Waits (at most `timeout`) for a notification on `notify` starting with `prefix`;
/// returns the message. `notify` must have a read timeout set.
pub fn wait_notify(notify: &UnixDatagram, prefix: &str, timeout: Duration) -> Option<String> {
    let end = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        if let Ok(n) = notify.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).to_string();
            if m.starts_with(prefix) {
                return Some(m);
            }
        }
    }
    None
}

/// Waits (at most `timeout`) for `child` to exit; its status, or `None` if it still runs.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Waits (at most `timeout`) until the collector thread of `stderr` has seen end-of-file,
/// so that what an exited broker wrote last is in the buffer. The thread holds the only
/// other reference to the buffer and drops it when it ends.
pub fn settle(stderr: &Arc<Mutex<String>>, timeout: Duration) {
    let end = Instant::now() + timeout;
    while Arc::strong_count(stderr) > 1 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
}
