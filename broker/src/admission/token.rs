//! Step 4, the token: a PASETO v4.public token verified by `memgate_policy::token::verify`
//! (an issuer the policy trusts, `aud` = this broker, `nbf`/`exp`/`iat` with skew), its
//! `jti` not used before, `sub` = the requester's uid, and its target = the target found
//! in steps 2 and 3 (cgroup, and pid when the token names one).

use memgate_policy::replay::ReplayCache;
use memgate_policy::token::{self, TokenError};
use memgate_policy::{Policy, VerifiedToken};
use time::{Duration, OffsetDateTime};

use super::peer::PeerCred;

/// Why the token does not authorise this request.
#[derive(Debug, thiserror::Error)]
pub enum TokenCheckError {
    /// Verification failed.
    #[error("{0}")]
    Invalid(TokenError),
    /// The token names an issuer the policy trusts, but that issuer's key does not verify
    /// it: forged or tampered.
    #[error("token claims issuer {0:?} but its signature does not verify with that issuer's key")]
    Forged(String),
    /// The token's issuer is not in the policy.
    #[error("token issuer {0:?} is not trusted by this policy")]
    UnknownIssuer(String),
    /// The `jti` was already used for a grant.
    #[error("token id {0:?} was already used")]
    Replayed(String),
    /// `sub` is another uid.
    #[error("token is for uid {token}, the requester is uid {requester}")]
    Subject {
        /// Token uid.
        token: u32,
        /// Requester uid.
        requester: u32,
    },
    /// The target is in another cgroup than the token names.
    #[error("target is in cgroup {actual:?}, the token names {token:?}")]
    Target {
        /// Token cgroup.
        token: String,
        /// Target cgroup.
        actual: String,
    },
    /// The token names another pid.
    #[error("target pid {actual} is not the token's pid {token}")]
    Pid {
        /// Token pid.
        token: u32,
        /// Target pid.
        actual: i32,
    },
}

impl TokenCheckError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            TokenCheckError::Invalid(e) => e.code(),
            TokenCheckError::Forged(_) => "token_signature_invalid",
            TokenCheckError::UnknownIssuer(_) => "issuer_unknown",
            TokenCheckError::Replayed(_) => "token_replayed",
            TokenCheckError::Subject { .. } => "subject_mismatch",
            TokenCheckError::Target { .. } => "target_mismatch",
            TokenCheckError::Pid { .. } => "pid_mismatch",
        }
    }
}

/// Verifies the token and matches it against the requester and the target.
#[allow(clippy::too_many_arguments)]
pub fn check(
    text: &str,
    policy: &Policy,
    peer: &PeerCred,
    cgroup: &str,
    pid: i32,
    now: OffsetDateTime,
    skew: Duration,
    replay: &ReplayCache,
) -> Result<VerifiedToken, TokenCheckError> {
    let verified = token::verify(text, policy, now, skew).map_err(|e| match e {
        TokenError::UntrustedIssuer => untrusted(text, policy),
        other => TokenCheckError::Invalid(other),
    })?;
    let c = &verified.claims;
    if replay.contains(&c.jti) {
        return Err(TokenCheckError::Replayed(c.jti.clone()));
    }
    if verified.uid != peer.uid {
        return Err(TokenCheckError::Subject {
            token: verified.uid,
            requester: peer.uid,
        });
    }
    if c.target.cgroup != cgroup {
        return Err(TokenCheckError::Target {
            token: c.target.cgroup.clone(),
            actual: cgroup.to_string(),
        });
    }
    if let Some(p) = c.target.pid {
        if i32::try_from(p).ok() != Some(pid) {
            return Err(TokenCheckError::Pid {
                token: p,
                actual: pid,
            });
        }
    }
    Ok(verified)
}

/// No trusted key verifies the token: tell a forgery of a trusted issuer apart from a
/// token of an issuer the policy does not know (by the unverified `iss` claim, only to
/// pick the code; nothing else of the unverified claims is used).
fn untrusted(text: &str, policy: &Policy) -> TokenCheckError {
    let iss = token::inspect(text)
        .ok()
        .and_then(|(claims, _)| {
            claims
                .get("iss")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
        .unwrap_or_default();
    if iss.is_empty() || policy.issuer(&iss).is_some() {
        // Unreadable claims, or a trusted issuer's name: a forgery or corruption.
        TokenCheckError::Forged(iss)
    } else {
        TokenCheckError::UnknownIssuer(iss.escape_debug().to_string())
    }
}
