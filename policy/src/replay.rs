//! The `jti` replay cache: remembers each accepted token id until the token expires.
//! Bounded: when full of unexpired entries it refuses new tokens (fail closed) instead of
//! forgetting one, which would reopen a replay window.

use std::collections::{BTreeSet, HashMap};

use time::OffsetDateTime;

/// Why a token id was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Already seen and not yet expired.
    #[error("token id already used")]
    Replayed,
    /// Capacity reached with only unexpired entries.
    #[error("replay cache full ({0} unexpired tokens); refusing new tokens")]
    Full(usize),
}

impl ReplayError {
    /// The decision reason code for this error.
    pub fn code(&self) -> crate::ReasonCode {
        match self {
            ReplayError::Replayed => crate::ReasonCode::TokenReplayed,
            ReplayError::Full(_) => crate::ReasonCode::ReplayCacheFull,
        }
    }
}

/// Bounded, expiry-aware set of used token ids.
#[derive(Debug, Clone)]
pub struct ReplayCache {
    capacity: usize,
    by_id: HashMap<String, i128>,
    by_expiry: BTreeSet<(i128, String)>,
}

impl ReplayCache {
    /// A cache holding at most `capacity` unexpired ids.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            by_id: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Forgets ids whose tokens expired at or before `now`.
    pub fn purge(&mut self, now: OffsetDateTime) {
        let now = now.unix_timestamp_nanos();
        while let Some((exp, _)) = self.by_expiry.first() {
            if *exp > now {
                break;
            }
            if let Some((_, id)) = self.by_expiry.pop_first() {
                self.by_id.remove(&id);
            }
        }
    }

    /// Records `jti` (valid until `exp`) if it is new. Expired entries are purged first.
    /// A token already expired at `now` is still recorded until `now` passes, which is
    /// harmless: verification rejects it anyway.
    pub fn check_and_insert(
        &mut self,
        jti: &str,
        exp: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), ReplayError> {
        self.purge(now);
        if self.by_id.contains_key(jti) {
            return Err(ReplayError::Replayed);
        }
        if self.by_id.len() >= self.capacity {
            return Err(ReplayError::Full(self.by_id.len()));
        }
        let exp = exp.unix_timestamp_nanos().max(now.unix_timestamp_nanos());
        self.by_id.insert(jti.to_string(), exp);
        self.by_expiry.insert((exp, jti.to_string()));
        Ok(())
    }

    /// Whether `jti` is remembered (as of the last purge).
    pub fn contains(&self, jti: &str) -> bool {
        self.by_id.contains_key(jti)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    #[test]
    fn replay_full_and_expiry() {
        let t0 = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let mut c = ReplayCache::new(2);
        c.check_and_insert("a", t0 + Duration::seconds(10), t0)
            .unwrap();
        assert_eq!(
            c.check_and_insert("a", t0 + Duration::seconds(10), t0),
            Err(ReplayError::Replayed)
        );
        c.check_and_insert("b", t0 + Duration::seconds(20), t0)
            .unwrap();
        assert_eq!(
            c.check_and_insert("c", t0 + Duration::seconds(20), t0),
            Err(ReplayError::Full(2))
        );
        // "a" is still remembered after the refusal: nothing was forgotten.
        assert!(c.contains("a"));
        // Once "a" expires, there is room again and "a" is forgotten.
        let t1 = t0 + Duration::seconds(10);
        c.check_and_insert("c", t1 + Duration::seconds(5), t1)
            .unwrap();
        assert!(!c.contains("a"));
        assert_eq!(c.len(), 2);
        assert_eq!(c.check_and_insert("b", t1, t1), Err(ReplayError::Replayed));
    }
}
