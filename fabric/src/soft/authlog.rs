//! Reporting failed authentications without letting a flood of bad handshakes flood the
//! broker's audit log: at most a fixed number of [`FabricEvent::AuthFailed`] per second
//! per responder; the rest are counted and the count rides on the next reported one.

use crate::FabricEvent;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The per-responder limiter.
pub(crate) struct AuthFailLimiter {
    per_sec: u32,
    state: Mutex<Window>,
}

struct Window {
    start: Instant,
    reported: u32,
    suppressed: u64,
}

impl AuthFailLimiter {
    pub(crate) fn new(per_sec: u32) -> AuthFailLimiter {
        AuthFailLimiter {
            per_sec,
            state: Mutex::new(Window {
                start: Instant::now(),
                reported: 0,
                suppressed: 0,
            }),
        }
    }

    /// Count one failure at `now`. `Some(n)`: report it, with `n` earlier failures that
    /// were not reported; `None`: suppressed (counted for the next report).
    pub(crate) fn admit(&self, now: Instant) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(w.start) >= Duration::from_secs(1) {
            w.start = now;
            w.reported = 0;
        }
        if w.reported >= self.per_sec {
            w.suppressed = w.suppressed.saturating_add(1);
            return None;
        }
        w.reported += 1;
        Some(std::mem::take(&mut w.suppressed))
    }

    /// The event for one failure, or `None` when it is suppressed.
    pub(crate) fn event(
        &self,
        peer_addr: String,
        grant: Option<[u8; 16]>,
        peer: Option<[u8; 32]>,
        reason: &'static str,
    ) -> Option<FabricEvent> {
        let suppressed = self.admit(Instant::now())?;
        Some(FabricEvent::AuthFailed {
            peer_addr,
            grant,
            peer,
            reason,
            suppressed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_per_second_and_suppressed_count_carried() {
        let l = AuthFailLimiter::new(3);
        let t0 = Instant::now();
        assert_eq!(l.admit(t0), Some(0));
        assert_eq!(l.admit(t0), Some(0));
        assert_eq!(l.admit(t0), Some(0));
        for _ in 0..100 {
            assert_eq!(l.admit(t0 + Duration::from_millis(500)), None);
        }
        assert_eq!(l.admit(t0 + Duration::from_millis(1000)), Some(100));
        assert_eq!(l.admit(t0 + Duration::from_millis(1001)), Some(0));
    }

    #[test]
    fn zero_rate_reports_nothing() {
        let l = AuthFailLimiter::new(0);
        assert_eq!(l.admit(Instant::now()), None);
    }
}
