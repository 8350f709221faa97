//! Per-uid request rate (a token bucket per uid, refilled at the policy's
//! `requests_per_second_per_uid`, burst of one second's worth). Grants and bytes per uid
//! are checked by the policy decision ([`super::decide`]) from the server's grant table.
//! The rate is checked right after the peer credentials, before any expensive step, and
//! counts every `Export` request, admitted or not.

use std::collections::HashMap;

use time::OffsetDateTime;

/// Most uids tracked; beyond that, full idle buckets are forgotten.
const MAX_TRACKED: usize = 4096;

/// Quota refusals.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// Too many requests.
    #[error("uid {uid} sends more than {rps} export requests per second")]
    RateLimited {
        /// Requester.
        uid: u32,
        /// Limit.
        rps: u32,
    },
}

impl QuotaError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            QuotaError::RateLimited { .. } => "rate_limited",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: OffsetDateTime,
}

/// Token buckets per uid.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<u32, Bucket>,
}

impl RateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one request from `uid`'s bucket (capacity and refill `rps` per second).
    pub fn check(&mut self, uid: u32, rps: u32, now: OffsetDateTime) -> Result<(), QuotaError> {
        let cap = f64::from(rps);
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(&uid) {
            self.buckets
                .retain(|_, b| b.tokens + (now - b.last).as_seconds_f64().max(0.0) * cap < cap);
        }
        let b = self.buckets.entry(uid).or_insert(Bucket {
            tokens: cap,
            last: now,
        });
        let elapsed = (now - b.last).as_seconds_f64().max(0.0);
        b.tokens = (b.tokens + elapsed * cap).min(cap);
        b.last = b.last.max(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(QuotaError::RateLimited { uid, rps })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    #[test]
    fn burst_then_refill() {
        let t0 = OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        let mut r = RateLimiter::new();
        for _ in 0..3 {
            r.check(7, 3, t0).unwrap();
        }
        assert_eq!(r.check(7, 3, t0).unwrap_err().code(), "rate_limited");
        // Another uid has its own bucket.
        r.check(8, 3, t0).unwrap();
        // A third of a second refills one request.
        r.check(7, 3, t0 + Duration::milliseconds(340)).unwrap();
        assert!(r.check(7, 3, t0 + Duration::milliseconds(340)).is_err());
        // Zero means no exports at all.
        assert!(r.check(9, 0, t0).is_err());
    }
}
