//! The decision function: given a checked policy, a verified token and the facts the
//! broker established about a request, allow (with the effective limits) or deny (with
//! every reason that applies). Deny by default: an allow needs every check to pass.
//! `evaluate` re-checks every claim against the facts, so the broker only calls it
//! (plus the replay cache and its rate limiter, which hold state).

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::cgroup;
use crate::document::{Access, Policy};
use crate::token::{TokenError, VerifiedToken, DEFAULT_SKEW};

/// Kinds of mapping in the target's address space, as the broker classifies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MappingKind {
    /// Private anonymous memory.
    PrivateAnon,
    /// `[heap]`.
    Heap,
    /// `[stack]` (and thread stacks the broker recognises).
    Stack,
    /// Private file-backed mapping.
    PrivateFile,
    /// Shared mapping (file or anonymous).
    Shared,
}

impl MappingKind {
    /// Exportable when a policy does not list `mappings`.
    pub const DEFAULT_EXPORTABLE: [MappingKind; 3] = [
        MappingKind::PrivateAnon,
        MappingKind::Heap,
        MappingKind::Stack,
    ];

    /// The policy spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MappingKind::PrivateAnon => "private-anon",
            MappingKind::Heap => "heap",
            MappingKind::Stack => "stack",
            MappingKind::PrivateFile => "private-file",
            MappingKind::Shared => "shared",
        }
    }
}

/// One requested region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    /// Start address in the target.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// What kind of mapping it lies in.
    pub kind: MappingKind,
}

/// The requester's current usage, from the broker's grant table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Live grants held by this uid.
    pub grants: u32,
    /// Bytes covered by those grants.
    pub bytes: u64,
}

/// What the broker established about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Requester uid (SO_PEERCRED).
    pub uid: u32,
    /// Requester gid.
    pub gid: u32,
    /// Target's cgroup v2 path.
    pub cgroup: String,
    /// Target pid.
    pub pid: u32,
    /// Requested regions, classified.
    pub regions: Vec<Region>,
    /// Requested access.
    pub access: Access,
    /// Requested lease, seconds.
    pub lease: u64,
    /// Current time.
    pub now: OffsetDateTime,
    /// Clock-skew allowance for token times.
    pub skew: Duration,
    /// The requester's current usage.
    pub usage: Usage,
}

impl Facts {
    /// Facts with the default skew and no prior usage.
    pub fn new(uid: u32, gid: u32, cgroup: &str, pid: u32, now: OffsetDateTime) -> Self {
        Self {
            uid,
            gid,
            cgroup: cgroup.to_string(),
            pid,
            regions: Vec::new(),
            access: Access::Read,
            lease: 60,
            now,
            skew: DEFAULT_SKEW,
            usage: Usage::default(),
        }
    }
}

/// Stable machine-readable reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Every check passed.
    Allowed,
    /// The token is not a well-formed v4.public token.
    TokenMalformed,
    /// Another PASETO version or purpose (e.g. v4.local).
    TokenUnsupported,
    /// No trusted issuer key verifies the token.
    TokenSignatureInvalid,
    /// Claims missing or malformed.
    TokenClaimsInvalid,
    /// The token has expired.
    TokenExpired,
    /// The token is not valid yet (nbf or iat in the future).
    TokenNotYetValid,
    /// The token's `jti` was already used.
    TokenReplayed,
    /// The replay cache is full of unexpired tokens.
    ReplayCacheFull,
    /// `iss` does not name the issuer whose key signed the token.
    IssuerMismatch,
    /// The token's issuer is not (or no longer, with that key) in the policy.
    IssuerUnknown,
    /// `aud` is not this broker.
    AudienceMismatch,
    /// `sub` is not the requester's uid.
    SubjectMismatch,
    /// The issuer may not authorise this requester uid/gid.
    RequesterNotAllowed,
    /// The target cgroup is not one the issuer may name.
    CgroupNotAllowed,
    /// The target's cgroup is not the token's target cgroup.
    TargetMismatch,
    /// The target pid is not the token's pid.
    PidMismatch,
    /// The requested access exceeds what policy and token allow.
    AccessNotAllowed,
    /// The requested bytes exceed what policy and token allow.
    BytesExceedLimit,
    /// The requested lease exceeds what policy and token allow.
    LeaseExceedsLimit,
    /// A zero lease.
    LeaseInvalid,
    /// A region lies in a mapping kind the policy does not export.
    MappingNotAllowed,
    /// No regions requested.
    NoRegions,
    /// A region is empty, wraps around, or overlaps another.
    RegionInvalid,
    /// The uid already holds the most grants allowed.
    GrantsPerUidExceeded,
    /// The uid's exported bytes would exceed the limit.
    BytesPerUidExceeded,
    /// The uid sends requests faster than allowed.
    RateLimited,
}

impl ReasonCode {
    /// Every code, for docs and tests.
    pub const ALL: [ReasonCode; 27] = [
        ReasonCode::Allowed,
        ReasonCode::TokenMalformed,
        ReasonCode::TokenUnsupported,
        ReasonCode::TokenSignatureInvalid,
        ReasonCode::TokenClaimsInvalid,
        ReasonCode::TokenExpired,
        ReasonCode::TokenNotYetValid,
        ReasonCode::TokenReplayed,
        ReasonCode::ReplayCacheFull,
        ReasonCode::IssuerMismatch,
        ReasonCode::IssuerUnknown,
        ReasonCode::AudienceMismatch,
        ReasonCode::SubjectMismatch,
        ReasonCode::RequesterNotAllowed,
        ReasonCode::CgroupNotAllowed,
        ReasonCode::TargetMismatch,
        ReasonCode::PidMismatch,
        ReasonCode::AccessNotAllowed,
        ReasonCode::BytesExceedLimit,
        ReasonCode::LeaseExceedsLimit,
        ReasonCode::LeaseInvalid,
        ReasonCode::MappingNotAllowed,
        ReasonCode::NoRegions,
        ReasonCode::RegionInvalid,
        ReasonCode::GrantsPerUidExceeded,
        ReasonCode::BytesPerUidExceeded,
        ReasonCode::RateLimited,
    ];

    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Allowed => "allowed",
            ReasonCode::TokenMalformed => "token_malformed",
            ReasonCode::TokenUnsupported => "token_unsupported",
            ReasonCode::TokenSignatureInvalid => "token_signature_invalid",
            ReasonCode::TokenClaimsInvalid => "token_claims_invalid",
            ReasonCode::TokenExpired => "token_expired",
            ReasonCode::TokenNotYetValid => "token_not_yet_valid",
            ReasonCode::TokenReplayed => "token_replayed",
            ReasonCode::ReplayCacheFull => "replay_cache_full",
            ReasonCode::IssuerMismatch => "issuer_mismatch",
            ReasonCode::IssuerUnknown => "issuer_unknown",
            ReasonCode::AudienceMismatch => "audience_mismatch",
            ReasonCode::SubjectMismatch => "subject_mismatch",
            ReasonCode::RequesterNotAllowed => "requester_not_allowed",
            ReasonCode::CgroupNotAllowed => "cgroup_not_allowed",
            ReasonCode::TargetMismatch => "target_mismatch",
            ReasonCode::PidMismatch => "pid_mismatch",
            ReasonCode::AccessNotAllowed => "access_not_allowed",
            ReasonCode::BytesExceedLimit => "bytes_exceed_limit",
            ReasonCode::LeaseExceedsLimit => "lease_exceeds_limit",
            ReasonCode::LeaseInvalid => "lease_invalid",
            ReasonCode::MappingNotAllowed => "mapping_not_allowed",
            ReasonCode::NoRegions => "no_regions",
            ReasonCode::RegionInvalid => "region_invalid",
            ReasonCode::GrantsPerUidExceeded => "grants_per_uid_exceeded",
            ReasonCode::BytesPerUidExceeded => "bytes_per_uid_exceeded",
            ReasonCode::RateLimited => "rate_limited",
        }
    }

    /// Parses a code written by [`ReasonCode::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason code with a human sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// Machine-readable code.
    pub code: ReasonCode,
    /// Human sentence.
    pub message: String,
}

impl Reason {
    /// Builds a reason.
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The reason for a token that failed [`crate::token::verify`].
    pub fn from_token_error(e: &TokenError) -> Self {
        let code = ReasonCode::parse(e.code()).unwrap_or(ReasonCode::TokenMalformed);
        Self::new(code, e.to_string())
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The limits of an allowed grant: the minimum of what the policy and the token permit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// Policy issuer that authorised it.
    pub issuer: String,
    /// Requester uid.
    pub uid: u32,
    /// Granted access (the requested one, within both limits).
    pub access: Access,
    /// Most access policy and token would allow.
    pub max_access: Access,
    /// Bytes requested (sum of regions).
    pub bytes: u64,
    /// Most bytes policy and token would allow.
    pub max_bytes: u64,
    /// Granted lease, seconds (the requested one).
    pub lease: u64,
    /// Longest lease policy and token would allow, seconds.
    pub max_lease: u64,
    /// When the lease ends.
    pub expires: OffsetDateTime,
    /// The fault server's Ed25519 public key: the only peer the grant's keys serve.
    pub peer: [u8; 32],
    /// The token's `jti` (for the replay cache and audit).
    pub jti: String,
    /// Token expiry (how long the `jti` must be remembered).
    pub token_exp: OffsetDateTime,
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed within these limits.
    Allow(Effective),
    /// Denied, with every reason found (never empty).
    Deny(Vec<Reason>),
}

impl Decision {
    /// Whether this is an allow.
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// The reasons: `[allowed]` for an allow.
    pub fn reasons(&self) -> Vec<Reason> {
        match self {
            Decision::Allow(e) => vec![Reason::new(
                ReasonCode::Allowed,
                format!(
                    "allowed by issuer {:?}: {} bytes, {}, lease {}s",
                    e.issuer, e.bytes, e.access, e.lease
                ),
            )],
            Decision::Deny(r) => r.clone(),
        }
    }

    /// One human sentence for logs and error messages: `allowed by issuer ...` or
    /// `denied: <reason>; <reason>`.
    pub fn sentence(&self) -> String {
        match self {
            Decision::Allow(_) => self
                .reasons()
                .into_iter()
                .map(|r| r.message)
                .collect::<Vec<_>>()
                .join("; "),
            Decision::Deny(r) => format!(
                "denied: {}",
                r.iter()
                    .map(|r| r.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }

    /// The reason codes.
    pub fn codes(&self) -> Vec<ReasonCode> {
        self.reasons().into_iter().map(|r| r.code).collect()
    }
}

/// Decides a request. See the module docs; every applicable deny reason is reported.
pub fn evaluate(policy: &Policy, token: &VerifiedToken, facts: &Facts) -> Decision {
    let mut deny = Vec::new();
    let c = &token.claims;
    let Some(issuer) = policy
        .issuer(&token.issuer)
        .filter(|i| i.key == token.issuer_key)
    else {
        return Decision::Deny(vec![Reason::new(
            ReasonCode::IssuerUnknown,
            format!(
                "issuer {:?} with key {} is not trusted by policy serial {}",
                token.issuer,
                token.issuer_key.fingerprint(),
                policy.serial
            ),
        )]);
    };
    if c.iss != issuer.name {
        deny.push(Reason::new(
            ReasonCode::IssuerMismatch,
            format!("token iss {:?} is not issuer {:?}", c.iss, issuer.name),
        ));
    }
    if c.aud != policy.broker {
        deny.push(Reason::new(
            ReasonCode::AudienceMismatch,
            format!(
                "token audience {:?} is not this broker {:?}",
                c.aud, policy.broker
            ),
        ));
    }
    if facts.now - facts.skew >= c.exp {
        deny.push(Reason::new(
            ReasonCode::TokenExpired,
            "the token has expired",
        ));
    }
    if facts.now + facts.skew < c.nbf || facts.now + facts.skew < c.iat {
        deny.push(Reason::new(
            ReasonCode::TokenNotYetValid,
            "the token is not valid yet",
        ));
    }
    if crate::token::parse_uid(&c.sub) != Some(facts.uid) || token.uid != facts.uid {
        deny.push(Reason::new(
            ReasonCode::SubjectMismatch,
            format!(
                "token subject {:?} is not the requester uid {}",
                c.sub, facts.uid
            ),
        ));
    }
    if !issuer.allows_requester(facts.uid, facts.gid) {
        deny.push(Reason::new(
            ReasonCode::RequesterNotAllowed,
            format!(
                "issuer {:?} may not authorise uid {} / gid {}",
                issuer.name, facts.uid, facts.gid
            ),
        ));
    }
    if cgroup::validate_path(&facts.cgroup).is_err() || facts.cgroup != c.target.cgroup {
        deny.push(Reason::new(
            ReasonCode::TargetMismatch,
            format!(
                "target is in cgroup {:?}, the token names {:?}",
                facts.cgroup, c.target.cgroup
            ),
        ));
    }
    if !issuer.allows_cgroup(&c.target.cgroup) || !issuer.allows_cgroup(&facts.cgroup) {
        deny.push(Reason::new(
            ReasonCode::CgroupNotAllowed,
            format!(
                "issuer {:?} may not authorise exports from cgroup {:?}",
                issuer.name, facts.cgroup
            ),
        ));
    }
    if let Some(pid) = c.target.pid {
        if pid != facts.pid {
            deny.push(Reason::new(
                ReasonCode::PidMismatch,
                format!("target pid {} is not the token's pid {pid}", facts.pid),
            ));
        }
    }
    let max_access = issuer.access.min(c.access);
    if facts.access > max_access {
        deny.push(Reason::new(
            ReasonCode::AccessNotAllowed,
            format!("{} requested, at most {max_access} allowed", facts.access),
        ));
    }
    let bytes = check_regions(policy, &facts.regions, &mut deny);
    let max_bytes = issuer.max_bytes.min(c.max_bytes);
    match bytes {
        Some(b) if b > max_bytes => deny.push(Reason::new(
            ReasonCode::BytesExceedLimit,
            format!("{b} bytes requested, at most {max_bytes} allowed"),
        )),
        _ => {}
    }
    let max_lease = issuer.max_lease.min(c.lease);
    if facts.lease == 0 {
        deny.push(Reason::new(
            ReasonCode::LeaseInvalid,
            "a lease of 0 seconds",
        ));
    } else if facts.lease > max_lease {
        deny.push(Reason::new(
            ReasonCode::LeaseExceedsLimit,
            format!(
                "lease of {}s requested, at most {max_lease}s allowed",
                facts.lease
            ),
        ));
    }
    if facts.usage.grants >= policy.limits.grants_per_uid {
        deny.push(Reason::new(
            ReasonCode::GrantsPerUidExceeded,
            format!(
                "uid {} already holds {} grants (limit {})",
                facts.uid, facts.usage.grants, policy.limits.grants_per_uid
            ),
        ));
    }
    if let Some(b) = bytes {
        if facts
            .usage
            .bytes
            .checked_add(b)
            .is_none_or(|t| t > policy.limits.bytes_per_uid)
        {
            deny.push(Reason::new(
                ReasonCode::BytesPerUidExceeded,
                format!(
                    "uid {} would export {} + {b} bytes (limit {})",
                    facts.uid, facts.usage.bytes, policy.limits.bytes_per_uid
                ),
            ));
        }
    }
    let expires = facts.now.checked_add(Duration::seconds(
        i64::try_from(facts.lease).unwrap_or(i64::MAX),
    ));
    if expires.is_none() && deny.is_empty() {
        deny.push(Reason::new(
            ReasonCode::LeaseInvalid,
            "lease end is out of range",
        ));
    }
    match (bytes, expires) {
        (Some(bytes), Some(expires)) if deny.is_empty() => Decision::Allow(Effective {
            issuer: issuer.name.clone(),
            uid: facts.uid,
            access: facts.access,
            max_access,
            bytes,
            max_bytes,
            lease: facts.lease,
            max_lease,
            expires,
            peer: *c.peer.as_bytes(),
            jti: c.jti.clone(),
            token_exp: c.exp,
        }),
        _ => {
            if deny.is_empty() {
                deny.push(Reason::new(ReasonCode::RegionInvalid, "invalid regions"));
            }
            Decision::Deny(deny)
        }
    }
}

/// Checks regions; returns their total size if they are all well formed.
fn check_regions(policy: &Policy, regions: &[Region], deny: &mut Vec<Reason>) -> Option<u64> {
    if regions.is_empty() {
        deny.push(Reason::new(ReasonCode::NoRegions, "no regions requested"));
        return None;
    }
    let mut ok = true;
    for r in regions {
        if !policy.allows_mapping(r.kind) {
            deny.push(Reason::new(
                ReasonCode::MappingNotAllowed,
                format!(
                    "region {:#x}+{:#x} is {} memory, which the policy does not export",
                    r.addr,
                    r.len,
                    r.kind.as_str()
                ),
            ));
        }
    }
    let mut sorted: Vec<&Region> = regions.iter().collect();
    sorted.sort_by_key(|r| r.addr);
    let mut total: u64 = 0;
    let mut prev_end: Option<u64> = None;
    for r in sorted {
        let end = r.addr.checked_add(r.len);
        let bad = match end {
            None => Some("wraps around the address space"),
            Some(_) if r.len == 0 => Some("is empty"),
            Some(_) if prev_end.is_some_and(|p| r.addr < p) => Some("overlaps another region"),
            Some(_) => None,
        };
        if let Some(why) = bad {
            deny.push(Reason::new(
                ReasonCode::RegionInvalid,
                format!("region {:#x}+{:#x} {why}", r.addr, r.len),
            ));
            ok = false;
        }
        prev_end = end.or(prev_end);
        total = total.saturating_add(r.len);
    }
    ok.then_some(total)
}

#[cfg(test)]
mod tests;
