//! Registered regions and restricted keys of a soft responder, and the per-request
//! key check (rkey, grant, peer, access, range, expiry).

use crate::{Access, FabricError, KeySpec, MemorySource, Region};
use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

/// One live key.
pub(crate) struct KeyEntry {
    pub(crate) addr: u64,
    pub(crate) len: u64,
    pub(crate) access: Access,
    pub(crate) peer: [u8; 32],
    pub(crate) grant: [u8; 16],
    pub(crate) expires: SystemTime,
    pub(crate) region: u64,
    pub(crate) source: Arc<dyn MemorySource>,
}

struct RegionEntry {
    addr: u64,
    len: u64,
    access: Access,
    source: Arc<dyn MemorySource>,
}

#[derive(Default)]
struct Inner {
    regions: HashMap<u64, RegionEntry>,
    keys: HashMap<u32, Arc<KeyEntry>>,
    next_region: u64,
}

/// Regions and keys, shared by the responder and its connection threads.
#[derive(Default)]
pub(crate) struct Table {
    inner: RwLock<Inner>,
}

/// Why a request was refused (reported to the broker as `AccessError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    UnknownKey,
    WrongGrant,
    WrongPeer,
    Access,
    Range,
    Expired,
}

impl Refusal {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::UnknownKey => "unknown or revoked rkey",
            Refusal::WrongGrant => "rkey belongs to another grant",
            Refusal::WrongPeer => "rkey is bound to another peer key",
            Refusal::Access => "rkey does not allow this access",
            Refusal::Range => "range outside the rkey's range",
            Refusal::Expired => "rkey expired",
        }
    }
}

impl Table {
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn register(
        &self,
        source: Arc<dyn MemorySource>,
        addr: u64,
        len: u64,
    ) -> Result<Region, FabricError> {
        if len == 0 || addr.checked_add(len).is_none() {
            return Err(FabricError::BadRange { addr, len });
        }
        let access = Access::of_source(&*source);
        let mut g = self.write();
        g.next_region += 1;
        let id = g.next_region;
        g.regions.insert(
            id,
            RegionEntry {
                addr,
                len,
                access,
                source,
            },
        );
        Ok(Region {
            id,
            addr,
            len,
            access,
        })
    }

    pub(crate) fn create_key(
        &self,
        region: &Region,
        spec: KeySpec,
        mut fresh_rkey: impl FnMut() -> Result<u32, FabricError>,
    ) -> Result<u32, FabricError> {
        let mut g = self.write();
        let r = g
            .regions
            .get(&region.id)
            .ok_or(FabricError::UnknownRegion)?;
        spec.admissible(r.addr, r.len, r.access)?;
        let source = r.source.clone();
        let rkey = loop {
            let k = fresh_rkey()?;
            if k != 0 && !g.keys.contains_key(&k) {
                break k;
            }
        };
        g.keys.insert(
            rkey,
            Arc::new(KeyEntry {
                addr: spec.addr,
                len: spec.len,
                access: spec.access,
                peer: spec.peer,
                grant: spec.grant,
                expires: spec.expires,
                region: region.id,
                source,
            }),
        );
        Ok(rkey)
    }

    pub(crate) fn revoke(&self, rkey: u32) -> Result<(), FabricError> {
        self.write()
            .keys
            .remove(&rkey)
            .map(drop)
            .ok_or(FabricError::UnknownKey(rkey))
    }

    pub(crate) fn revoke_grant(&self, grant: [u8; 16]) -> usize {
        let mut g = self.write();
        let before = g.keys.len();
        g.keys.retain(|_, k| k.grant != grant);
        before - g.keys.len()
    }

    pub(crate) fn deregister(&self, region: &Region) -> Result<(), FabricError> {
        let mut g = self.write();
        g.regions
            .remove(&region.id)
            .ok_or(FabricError::UnknownRegion)?;
        g.keys.retain(|_, k| k.region != region.id);
        Ok(())
    }

    /// Whether some live, unexpired key of `grant` is bound to `peer` (checked before a
    /// connection is admitted).
    pub(crate) fn grant_has_peer(&self, grant: &[u8; 16], peer: &[u8; 32]) -> bool {
        let now = SystemTime::now();
        self.read()
            .keys
            .values()
            .any(|k| &k.grant == grant && &k.peer == peer && k.expires > now)
    }

    /// Whether any live key belongs to `grant` (for telling an unknown grant from a
    /// wrong peer key in the audit; the peer is told the same either way).
    pub(crate) fn grant_is_live(&self, grant: &[u8; 16]) -> bool {
        let now = SystemTime::now();
        self.read()
            .keys
            .values()
            .any(|k| &k.grant == grant && k.expires > now)
    }

    /// Check one request; on success the key (holding its memory source).
    pub(crate) fn check(
        &self,
        rkey: u32,
        addr: u64,
        len: u32,
        need: Access,
        grant: &[u8; 16],
        peer: &[u8; 32],
    ) -> Result<Arc<KeyEntry>, Refusal> {
        let k = self
            .read()
            .keys
            .get(&rkey)
            .cloned()
            .ok_or(Refusal::UnknownKey)?;
        if &k.grant != grant {
            return Err(Refusal::WrongGrant);
        }
        if &k.peer != peer {
            return Err(Refusal::WrongPeer);
        }
        if !k.access.contains(need) {
            return Err(Refusal::Access);
        }
        let end = addr.checked_add(len as u64).ok_or(Refusal::Range)?;
        if addr < k.addr || end > k.addr + k.len {
            return Err(Refusal::Range);
        }
        if SystemTime::now() >= k.expires {
            return Err(Refusal::Expired);
        }
        Ok(k)
    }
}
