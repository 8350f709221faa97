//! Step 6, the policy decision: hands what steps 1-5 established to
//! `memgate_policy::decision::evaluate`, which re-checks every claim against those facts
//! and applies the issuer limits (access, bytes, lease) and the per-uid quotas (grants
//! and bytes held, from the server's grant table).

use memgate_policy::{
    evaluate, Access, Decision, Effective, Facts, Policy, Reason, Region, Usage, VerifiedToken,
};
use time::{Duration, OffsetDateTime};

use super::peer::PeerCred;
use super::{Denial, DenialReason};

/// The policy said no, with every reason.
#[derive(Debug, thiserror::Error)]
#[error("denied by policy: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct DecisionError(pub Vec<Reason>);

impl DecisionError {
    /// Stable code: the first reason's.
    pub fn code(&self) -> &'static str {
        self.0.first().map_or("policy_denied", |r| r.code.as_str())
    }
}

impl From<DecisionError> for Denial {
    fn from(e: DecisionError) -> Self {
        let reasons: Vec<DenialReason> =
            e.0.iter()
                .map(|r| DenialReason {
                    code: r.code.as_str(),
                    message: r.message.clone(),
                })
                .collect();
        let (code, message) = reasons
            .first()
            .map_or(("policy_denied", "denied by policy".to_string()), |r| {
                (r.code, r.message.clone())
            });
        Denial {
            code,
            message,
            reasons,
        }
    }
}

/// Evaluates the request.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    policy: &Policy,
    token: &VerifiedToken,
    peer: &PeerCred,
    cgroup: &str,
    pid: i32,
    regions: &[Region],
    access: Access,
    lease: u64,
    usage: Usage,
    now: OffsetDateTime,
    skew: Duration,
) -> Result<Effective, DecisionError> {
    let facts = Facts {
        uid: peer.uid,
        gid: peer.gid,
        cgroup: cgroup.to_string(),
        pid: u32::try_from(pid).unwrap_or(0),
        regions: regions.to_vec(),
        access,
        lease,
        now,
        skew,
        usage,
    };
    match evaluate(policy, token, &facts) {
        Decision::Allow(e) => Ok(e),
        Decision::Deny(r) => Err(DecisionError(r)),
    }
}
