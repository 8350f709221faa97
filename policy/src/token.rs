//! memgate export tokens: PASETO v4.public whose message is a JSON claims object.
//!
//! Claims: the registered `iss`, `sub` (requester uid as a decimal string), `aud` (broker
//! id), `exp`, `nbf`, `iat` (RFC 3339), `jti`; and memgate's `target`
//! (`{"cgroup": "/path", "pid": 123}`, pid optional), `access`, `max_bytes`, `lease`
//! (seconds) and `peer` (the fault server's `k4.public.` key). Extra claims are ignored.
//! The footer, when present, is `{"kid": "<k4.pid of the issuer key>"}`.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::cgroup::{self, CgroupError};
use crate::document::{Access, Policy};
use crate::keys::{PublicKey, SecretKey};
use crate::paseto::{self, PasetoError};

/// Default clock-skew allowance.
pub const DEFAULT_SKEW: Duration = Duration::seconds(30);

/// The target a token authorises exports from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// cgroup v2 path of the target process.
    pub cgroup: String,
    /// Optional exact pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// Token claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer name (must match the policy issuer whose key verified the token).
    pub iss: String,
    /// Requester uid, decimal.
    pub sub: String,
    /// Broker id.
    pub aud: String,
    /// Expiry.
    #[serde(with = "rfc3339")]
    pub exp: OffsetDateTime,
    /// Not before.
    #[serde(with = "rfc3339")]
    pub nbf: OffsetDateTime,
    /// Issued at.
    #[serde(with = "rfc3339")]
    pub iat: OffsetDateTime,
    /// Unique token id (for the replay cache).
    pub jti: String,
    /// What may be exported.
    pub target: Target,
    /// Access requested for the grant.
    pub access: Access,
    /// Most bytes the grant may cover.
    pub max_bytes: u64,
    /// Longest lease, seconds.
    pub lease: u64,
    /// The fault server's public key (PASERK).
    #[serde(with = "paserk_public")]
    pub peer: PublicKey,
}

mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = t.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = String::deserialize(d)?;
        OffsetDateTime::parse(&s, &Rfc3339)
            .map_err(|e| serde::de::Error::custom(format!("time {s:?} is not RFC 3339: {e}")))
    }
}

mod paserk_public {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::keys::PublicKey;

    pub fn serialize<S: Serializer>(k: &PublicKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&k.to_paserk())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
        let s = String::deserialize(d)?;
        PublicKey::from_paserk(&s).map_err(serde::de::Error::custom)
    }
}

/// Why a token was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// PASETO-level problem (format, version, purpose, encoding).
    #[error("{0}")]
    Paseto(#[from] PasetoError),
    /// No trusted issuer's key verifies the signature.
    #[error("token is not signed by any issuer this policy trusts")]
    UntrustedIssuer,
    /// The claims are not a valid memgate claims object.
    #[error("token claims: {0}")]
    Claims(String),
    /// `iss` differs from the name of the issuer whose key signed it.
    #[error("token iss {iss:?} does not match the signing issuer {issuer:?}")]
    IssuerMismatch {
        /// The claim.
        iss: String,
        /// The policy issuer.
        issuer: String,
    },
    /// `aud` is not this broker.
    #[error("token audience {aud:?} is not this broker ({expected:?})")]
    AudienceMismatch {
        /// The claim.
        aud: String,
        /// This broker's id.
        expected: String,
    },
    /// The token has expired.
    #[error("token expired at {0}")]
    Expired(String),
    /// The token is not valid yet.
    #[error("token not valid before {0}")]
    NotYetValid(String),
    /// `iat` is in the future.
    #[error("token issued in the future ({0})")]
    IssuedInFuture(String),
    /// `sub` is not a decimal uid.
    #[error("token sub {0:?} is not a decimal uid")]
    BadSubject(String),
    /// The target cgroup is invalid.
    #[error("token target: {0}")]
    BadTarget(#[from] CgroupError),
    /// `jti` is empty or too long.
    #[error("token jti must be 1-128 printable characters")]
    BadJti,
}

impl TokenError {
    /// Stable snake_case code, matching [`crate::ReasonCode`] where one exists.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Paseto(PasetoError::UnsupportedPurpose(_))
            | TokenError::Paseto(PasetoError::UnsupportedVersion(_)) => "token_unsupported",
            TokenError::Paseto(PasetoError::BadSignature) | TokenError::UntrustedIssuer => {
                "token_signature_invalid"
            }
            TokenError::Paseto(_) => "token_malformed",
            TokenError::Claims(_)
            | TokenError::BadSubject(_)
            | TokenError::BadTarget(_)
            | TokenError::BadJti => "token_claims_invalid",
            TokenError::IssuerMismatch { .. } => "issuer_mismatch",
            TokenError::AudienceMismatch { .. } => "audience_mismatch",
            TokenError::Expired(_) => "token_expired",
            TokenError::NotYetValid(_) | TokenError::IssuedInFuture(_) => "token_not_yet_valid",
        }
    }
}

/// A token whose signature, audience, times and claim shapes were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The claims.
    pub claims: Claims,
    /// `sub` as a uid.
    pub uid: u32,
    /// Name of the policy issuer whose key verified it.
    pub issuer: String,
    /// That issuer's key.
    pub issuer_key: PublicKey,
    /// Footer `kid`, if any.
    pub kid: Option<String>,
}

#[derive(Deserialize)]
struct Footer {
    kid: Option<String>,
}

fn footer_kid(footer: &[u8]) -> Option<String> {
    if footer.is_empty() {
        return None;
    }
    serde_json::from_slice::<Footer>(footer)
        .ok()
        .and_then(|f| f.kid)
}

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parses a uid written as a canonical decimal string.
pub fn parse_uid(s: &str) -> Option<u32> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical {
        s.parse().ok()
    } else {
        None
    }
}

/// A fresh random `jti` (32 hex digits).
pub fn new_jti() -> String {
    let mut b = [0u8; 16];
    // SystemRandom only fails if the OS RNG is unavailable; fall back to the clock so
    // minting still produces distinct ids (uniqueness, not secrecy, is what jti needs).
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos();
        b.copy_from_slice(&now.to_le_bytes());
    }
    hex::encode(b)
}

/// Mints a token. `kid` goes into the footer as `{"kid": ...}` when given
/// (conventionally `key.public().pid()`).
pub fn mint(key: &SecretKey, claims: &Claims, kid: Option<&str>) -> Result<String, TokenError> {
    let message = serde_json::to_vec(claims).map_err(|e| TokenError::Claims(e.to_string()))?;
    let footer = match kid {
        Some(k) => serde_json::to_vec(&serde_json::json!({ "kid": k }))
            .map_err(|e| TokenError::Claims(e.to_string()))?,
        None => Vec::new(),
    };
    Ok(paseto::sign(key, &message, &footer, b""))
}

/// Decodes a token without verifying anything: for `memgate token inspect`.
/// Returns the claims as JSON (whatever they are) and the footer text.
pub fn inspect(token: &str) -> Result<(serde_json::Value, String), TokenError> {
    let parts = paseto::decode(token)?;
    let claims = serde_json::from_slice(&parts.message)
        .map_err(|e| TokenError::Claims(format!("not JSON: {e}")))?;
    Ok((claims, String::from_utf8_lossy(&parts.footer).into_owned()))
}

/// Verifies `token` against the issuers `policy` trusts, at time `now` with clock-skew
/// allowance `skew`: signature (issuer found by footer `kid`, else every trusted issuer is
/// tried), `iss`, `aud` = the policy's broker id, `nbf`/`exp`/`iat`, claim shapes.
pub fn verify(
    token: &str,
    policy: &Policy,
    now: OffsetDateTime,
    skew: Duration,
) -> Result<VerifiedToken, TokenError> {
    let parts = paseto::decode(token)?;
    let kid = footer_kid(&parts.footer);
    let by_kid: Vec<_> = match &kid {
        Some(k) => policy
            .issuers
            .iter()
            .filter(|i| i.name == *k || i.key.pid() == *k)
            .collect(),
        None => Vec::new(),
    };
    let candidates = if by_kid.is_empty() {
        policy.issuers.iter().collect()
    } else {
        by_kid
    };
    let issuer = candidates
        .into_iter()
        .find(|i| paseto::verify_parts(&parts, &i.key, b"").is_ok())
        .ok_or(TokenError::UntrustedIssuer)?;
    let claims: Claims =
        serde_json::from_slice(&parts.message).map_err(|e| TokenError::Claims(e.to_string()))?;
    check_claims(&claims, &issuer.name, &policy.broker, now, skew)?;
    let uid = parse_uid(&claims.sub).ok_or_else(|| TokenError::BadSubject(claims.sub.clone()))?;
    Ok(VerifiedToken {
        claims,
        uid,
        issuer: issuer.name.clone(),
        issuer_key: issuer.key,
        kid,
    })
}

/// Verifies `token` with one issuer key (for `memgate token verify`), checking times and,
/// if `aud` is given, the audience. The `iss` claim is not compared with anything.
pub fn verify_with_key(
    token: &str,
    key: &PublicKey,
    aud: Option<&str>,
    now: OffsetDateTime,
    skew: Duration,
) -> Result<Claims, TokenError> {
    let parts = paseto::decode(token)?;
    paseto::verify_parts(&parts, key, b"")?;
    let claims: Claims =
        serde_json::from_slice(&parts.message).map_err(|e| TokenError::Claims(e.to_string()))?;
    let aud = aud.unwrap_or(&claims.aud).to_string();
    check_claims(&claims, &claims.iss, &aud, now, skew)?;
    Ok(claims)
}

fn check_claims(
    c: &Claims,
    issuer: &str,
    broker: &str,
    now: OffsetDateTime,
    skew: Duration,
) -> Result<(), TokenError> {
    if c.iss != issuer {
        return Err(TokenError::IssuerMismatch {
            iss: c.iss.clone(),
            issuer: issuer.to_string(),
        });
    }
    if c.aud != broker {
        return Err(TokenError::AudienceMismatch {
            aud: c.aud.clone(),
            expected: broker.to_string(),
        });
    }
    if now - skew >= c.exp {
        return Err(TokenError::Expired(fmt_time(c.exp)));
    }
    if now + skew < c.nbf {
        return Err(TokenError::NotYetValid(fmt_time(c.nbf)));
    }
    if now + skew < c.iat {
        return Err(TokenError::IssuedInFuture(fmt_time(c.iat)));
    }
    if parse_uid(&c.sub).is_none() {
        return Err(TokenError::BadSubject(c.sub.clone()));
    }
    cgroup::validate_path(&c.target.cgroup)?;
    if c.jti.is_empty() || c.jti.len() > 128 || c.jti.chars().any(char::is_control) {
        return Err(TokenError::BadJti);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
