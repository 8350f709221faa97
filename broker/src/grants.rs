//! The grant registry: live grants with everything needed to list, re-check and revoke
//! them, per-uid usage for quotas, and tombstones of ended grants so that a `Wait` that
//! arrives late still learns how the grant ended.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::time::SystemTime;

use memgate_policy::{Access, Usage};
use memgate_proto::{GrantId, GrantState, GrantSummary, WaitState};

/// How a grant ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndCause {
    /// The lease ran out.
    Expired,
    /// `Revoke` by its creator or root.
    Explicit,
    /// The target process exited (its pidfd became readable).
    TargetExit,
    /// A reloaded policy no longer allows it.
    PolicyReload,
    /// The requester's connection closed and the export asked for that.
    Disconnect,
    /// The broker is shutting down.
    Shutdown,
}

impl EndCause {
    /// Stable snake_case name (audit, `Wait` replies).
    pub fn as_str(self) -> &'static str {
        match self {
            EndCause::Expired => "expired",
            EndCause::Explicit => "explicit",
            EndCause::TargetExit => "target_exit",
            EndCause::PolicyReload => "policy_reload",
            EndCause::Disconnect => "disconnect",
            EndCause::Shutdown => "shutdown",
        }
    }

    /// The `Wait` outcome this cause maps to.
    pub fn wait_state(self) -> WaitState {
        match self {
            EndCause::Expired => WaitState::Expired,
            _ => WaitState::Revoked,
        }
    }
}

/// One exported region of a live grant.
#[derive(Debug, Clone)]
pub struct LiveRegion {
    /// Region as admitted (address, length, mapping kind).
    pub region: memgate_policy::Region,
    /// Its restricted key.
    pub rkey: u32,
    /// The fabric registration.
    pub fabric: memgate_fabric::Region,
}

/// A live grant.
#[derive(Debug)]
pub struct GrantRecord {
    /// Wire document sent to the requester.
    pub grant: memgate_proto::Grant,
    /// Small number naming the grant in the event loop (epoll data of its pidfd).
    pub slot: u64,
    /// Requester uid / gid / pid.
    pub uid: u32,
    /// Requester gid.
    pub gid: u32,
    /// Requester pid at request time.
    pub requester_pid: i32,
    /// Target pid and pidfd (polled for exit).
    pub target_pid: i32,
    /// The requester's pidfd of the target.
    pub pidfd: OwnedFd,
    /// Target cgroup when admitted.
    pub cgroup: String,
    /// Regions with keys.
    pub regions: Vec<LiveRegion>,
    /// Access the keys allow.
    pub access: Access,
    /// Bytes covered.
    pub bytes: u64,
    /// Lease seconds granted.
    pub lease_secs: u64,
    /// Lease end.
    pub expires: SystemTime,
    /// Fault-server peer public key.
    pub peer: [u8; 32],
    /// Issuer name and its key's fingerprint (policy re-check on reload).
    pub issuer: String,
    /// Fingerprint of the issuer key.
    pub issuer_fingerprint: String,
    /// Committed by the peer.
    pub state: GrantState,
    /// API connection to watch when the export asked for revoke-on-disconnect.
    pub owner_conn: Option<u64>,
}

impl GrantRecord {
    /// The `List` entry.
    pub fn summary(&self) -> GrantSummary {
        GrantSummary {
            grant: self.grant.clone(),
            state: self.state,
            target_pid: self.target_pid,
            uid: self.uid,
        }
    }
}

/// Outcome remembered for an ended grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tombstone {
    /// Creator uid (only it and root may ask).
    pub uid: u32,
    /// How it ended.
    pub cause: EndCause,
    /// Whether it had been committed before it ended.
    pub committed: bool,
}

/// Live grants plus tombstones, with indexes so that the per-request work (usage of a uid,
/// the next lease end, expired grants) does not scan every grant.
#[derive(Debug)]
pub struct Registry {
    live: HashMap<GrantId, GrantRecord>,
    by_slot: HashMap<u64, GrantId>,
    by_expiry: BTreeSet<(SystemTime, u64)>,
    usage: HashMap<u32, Usage>,
    next_slot: u64,
    tombstones: HashMap<GrantId, Tombstone>,
    tomb_order: VecDeque<GrantId>,
    tomb_capacity: usize,
    total_bytes: u64,
}

impl Registry {
    /// An empty registry remembering up to `tombstones` ended grants.
    pub fn new(tombstones: usize) -> Registry {
        Registry {
            live: HashMap::new(),
            by_slot: HashMap::new(),
            by_expiry: BTreeSet::new(),
            usage: HashMap::new(),
            next_slot: 0,
            tombstones: HashMap::new(),
            tomb_order: VecDeque::new(),
            tomb_capacity: tombstones,
            total_bytes: 0,
        }
    }

    /// A fresh slot number for a grant about to be inserted.
    pub fn allocate_slot(&mut self) -> u64 {
        self.next_slot += 1;
        self.next_slot
    }

    /// Adds a live grant.
    pub fn insert(&mut self, rec: GrantRecord) {
        self.total_bytes = self.total_bytes.saturating_add(rec.bytes);
        self.by_slot.insert(rec.slot, rec.grant.id);
        self.by_expiry.insert((rec.expires, rec.slot));
        let u = self.usage.entry(rec.uid).or_default();
        u.grants = u.grants.saturating_add(1);
        u.bytes = u.bytes.saturating_add(rec.bytes);
        self.live.insert(rec.grant.id, rec);
    }

    /// A live grant.
    pub fn get(&self, id: &GrantId) -> Option<&GrantRecord> {
        self.live.get(id)
    }

    /// A live grant, mutable.
    pub fn get_mut(&mut self, id: &GrantId) -> Option<&mut GrantRecord> {
        self.live.get_mut(id)
    }

    /// The grant in `slot`.
    pub fn by_slot(&self, slot: u64) -> Option<GrantId> {
        self.by_slot.get(&slot).copied()
    }

    /// Removes a live grant, leaving a tombstone with `cause`.
    pub fn remove(&mut self, id: &GrantId, cause: EndCause) -> Option<GrantRecord> {
        let rec = self.live.remove(id)?;
        self.by_slot.remove(&rec.slot);
        self.by_expiry.remove(&(rec.expires, rec.slot));
        if let Some(u) = self.usage.get_mut(&rec.uid) {
            u.grants = u.grants.saturating_sub(1);
            u.bytes = u.bytes.saturating_sub(rec.bytes);
            if u.grants == 0 {
                self.usage.remove(&rec.uid);
            }
        }
        self.total_bytes = self.total_bytes.saturating_sub(rec.bytes);
        if self.tomb_capacity > 0 {
            while self.tomb_order.len() >= self.tomb_capacity {
                if let Some(old) = self.tomb_order.pop_front() {
                    self.tombstones.remove(&old);
                }
            }
            self.tomb_order.push_back(*id);
            self.tombstones.insert(
                *id,
                Tombstone {
                    uid: rec.uid,
                    cause,
                    committed: rec.state == GrantState::Committed,
                },
            );
        }
        Some(rec)
    }

    /// How an ended grant ended.
    pub fn tombstone(&self, id: &GrantId) -> Option<Tombstone> {
        self.tombstones.get(id).copied()
    }

    /// Live grants and bytes of `uid`.
    pub fn usage(&self, uid: u32) -> Usage {
        self.usage.get(&uid).copied().unwrap_or_default()
    }

    /// Number of live grants.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// No live grants.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Bytes under all live grants.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Restricted keys of all live grants.
    pub fn key_count(&self) -> u64 {
        self.live.values().map(|g| g.regions.len() as u64).sum()
    }

    /// `uid`'s grants (every grant for root), oldest slot first.
    pub fn list(&self, uid: u32) -> Vec<GrantSummary> {
        let mut v: Vec<&GrantRecord> = self
            .live
            .values()
            .filter(|g| uid == 0 || g.uid == uid)
            .collect();
        v.sort_by_key(|g| g.slot);
        v.into_iter().map(GrantRecord::summary).collect()
    }

    /// Ids of every live grant.
    pub fn ids(&self) -> Vec<GrantId> {
        self.live.keys().copied().collect()
    }

    /// Iterates over live grants.
    pub fn iter(&self) -> impl Iterator<Item = &GrantRecord> {
        self.live.values()
    }

    /// Grants whose lease ended at or before `now`.
    pub fn expired(&self, now: SystemTime) -> Vec<GrantId> {
        self.by_expiry
            .iter()
            .take_while(|(t, _)| *t <= now)
            .filter_map(|(_, slot)| self.by_slot(*slot))
            .collect()
    }

    /// The earliest lease end.
    pub fn next_expiry(&self) -> Option<SystemTime> {
        self.by_expiry.first().map(|(t, _)| *t)
    }

    /// Grants that must end when API connection `conn` closes.
    pub fn bound_to_conn(&self, conn: u64) -> Vec<GrantId> {
        self.live
            .values()
            .filter(|g| g.owner_conn == Some(conn))
            .map(|g| g.grant.id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record(reg: &mut Registry, n: u8, uid: u32, bytes: u64, expires: SystemTime) -> GrantId {
        let id = GrantId([n; 16]);
        let slot = reg.allocate_slot();
        let pidfd = std::fs::File::open("/dev/null").expect("open").into();
        reg.insert(GrantRecord {
            grant: memgate_proto::Grant {
                id,
                endpoint: "tcp:127.0.0.1:1".into(),
                peer: "k4.public.x".into(),
                access: memgate_proto::Access::Read,
                expires_unix: 0,
                regions: Vec::new(),
            },
            slot,
            uid,
            gid: uid,
            requester_pid: 1,
            target_pid: 2,
            pidfd,
            cgroup: "/".into(),
            regions: Vec::new(),
            access: Access::Read,
            bytes,
            lease_secs: 1,
            expires,
            peer: [0; 32],
            issuer: "i".into(),
            issuer_fingerprint: "f".into(),
            state: GrantState::Active,
            owner_conn: None,
        });
        id
    }

    #[test]
    fn usage_expiry_and_tombstones_follow_inserts_and_removals() {
        let now = SystemTime::now();
        let mut reg = Registry::new(2);
        let a = record(&mut reg, 1, 100, 4096, now + Duration::from_secs(30));
        let b = record(&mut reg, 2, 100, 8192, now + Duration::from_secs(10));
        let c = record(&mut reg, 3, 200, 4096, now - Duration::from_secs(1));
        assert_eq!(
            reg.usage(100),
            Usage {
                grants: 2,
                bytes: 12288
            }
        );
        assert_eq!(
            reg.usage(200),
            Usage {
                grants: 1,
                bytes: 4096
            }
        );
        assert_eq!(reg.next_expiry(), Some(now - Duration::from_secs(1)));
        assert_eq!(reg.expired(now), vec![c]);
        assert_eq!(reg.list(100).len(), 2);
        assert_eq!(reg.list(0).len(), 3, "root sees every grant");
        assert_eq!(reg.total_bytes(), 16384);

        reg.remove(&c, EndCause::Expired).expect("live");
        reg.remove(&b, EndCause::Explicit).expect("live");
        assert_eq!(reg.usage(200), Usage::default());
        assert_eq!(
            reg.usage(100),
            Usage {
                grants: 1,
                bytes: 4096
            }
        );
        assert_eq!(reg.next_expiry(), Some(now + Duration::from_secs(30)));
        assert!(reg.remove(&b, EndCause::Explicit).is_none(), "ended once");
        assert_eq!(reg.tombstone(&b).map(|t| t.cause), Some(EndCause::Explicit));

        reg.remove(&a, EndCause::TargetExit).expect("live");
        assert!(
            reg.tombstone(&c).is_none(),
            "oldest tombstone evicted at capacity 2"
        );
        assert_eq!(
            reg.tombstone(&a).map(|t| (t.uid, t.cause)),
            Some((100, EndCause::TargetExit))
        );
        assert!(reg.is_empty() && reg.total_bytes() == 0);
    }
}
