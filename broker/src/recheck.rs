//! Re-checking a live grant against a newly loaded policy: the grant survives a reload
//! only if the new policy would still allow what it holds — the same broker id, its
//! issuer still trusted with the same key, the requester and target cgroup still within
//! that issuer's reach, and its access, bytes, lease and mapping kinds within the new
//! limits. Anything else revokes it (cause `policy_reload`).

use std::time::SystemTime;

use memgate_policy::Policy;

use crate::grants::GrantRecord;

/// Why a grant no longer fits the policy (audit `reason`).
pub fn violation(
    policy: &Policy,
    broker_id: &str,
    g: &GrantRecord,
    now: SystemTime,
) -> Option<String> {
    if policy.broker != broker_id {
        return Some(format!(
            "the broker id changed from {broker_id:?} to {:?}",
            policy.broker
        ));
    }
    let Some(issuer) = policy.issuer(&g.issuer) else {
        return Some(format!("issuer {:?} is no longer trusted", g.issuer));
    };
    if issuer.key.fingerprint() != g.issuer_fingerprint {
        return Some(format!("issuer {:?} has a different key now", g.issuer));
    }
    if !issuer.allows_requester(g.uid, g.gid) {
        return Some(format!(
            "issuer {:?} may no longer authorise uid {} / gid {}",
            g.issuer, g.uid, g.gid
        ));
    }
    if !issuer.allows_cgroup(&g.cgroup) {
        return Some(format!(
            "issuer {:?} may no longer authorise cgroup {:?}",
            g.issuer, g.cgroup
        ));
    }
    if g.access > issuer.access {
        return Some(format!(
            "access {} exceeds the issuer's {}",
            g.access.as_str(),
            issuer.access.as_str()
        ));
    }
    if g.bytes > issuer.max_bytes {
        return Some(format!(
            "{} bytes exceed the issuer's limit of {}",
            g.bytes, issuer.max_bytes
        ));
    }
    let remaining = g
        .expires
        .duration_since(now)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if remaining > issuer.max_lease {
        return Some(format!(
            "{remaining} s of lease left exceed the issuer's limit of {} s",
            issuer.max_lease
        ));
    }
    if let Some(r) = g
        .regions
        .iter()
        .find(|r| !policy.allows_mapping(r.region.kind))
    {
        return Some(format!(
            "region {:#x}+{:#x} is a {} mapping, no longer exportable",
            r.region.addr,
            r.region.len,
            r.region.kind.as_str()
        ));
    }
    None
}
