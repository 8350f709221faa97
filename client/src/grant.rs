//! The grant document as the fault server reads it (same JSON shape as the broker API's
//! `Grant`: `{ id, endpoint, peer, access, expires_unix, regions: [{ addr, len, rkey }] }`),
//! and the PASERK peer secret key file.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One region of a grant.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantRegion {
    /// Source start address.
    pub addr: u64,
    /// Length.
    pub len: u64,
    /// Restricted key.
    pub rkey: u32,
}

/// A grant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantDoc {
    /// 32 hex characters.
    pub id: String,
    /// Fabric endpoint.
    pub endpoint: String,
    /// PASERK public key of the peer.
    pub peer: String,
    /// `read` or `read-write`.
    pub access: String,
    /// Lease end (Unix seconds).
    pub expires_unix: u64,
    /// Regions.
    pub regions: Vec<GrantRegion>,
}

/// Grant / key file errors.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// JSON did not parse.
    #[error("grant is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Bad id.
    #[error("grant id must be 32 hex characters")]
    Id,
    /// Bad key file.
    #[error("peer key is not a PASERK k4.secret string")]
    Key,
}

impl GrantDoc {
    /// Parses grant JSON.
    pub fn parse(s: &str) -> Result<GrantDoc, GrantError> {
        Ok(serde_json::from_str(s)?)
    }
    /// The id bytes.
    pub fn id_bytes(&self) -> Result<[u8; 16], GrantError> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(self.id.trim(), &mut out).map_err(|_| GrantError::Id)?;
        Ok(out)
    }
    /// Lease end.
    pub fn expires(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.expires_unix)
    }
}

/// Parses a `k4.secret.` PASERK (64 bytes: seed ‖ public) and returns the 32-byte seed.
pub fn parse_peer_secret(s: &str) -> Result<[u8; 32], GrantError> {
    let b64 = s.trim().strip_prefix("k4.secret.").ok_or(GrantError::Key)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| GrantError::Key)?;
    if raw.len() != 64 {
        return Err(GrantError::Key);
    }
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&raw[..32]);
    Ok(seed)
}

/// Formats a seed as `k4.secret.` (seed ‖ public) and `k4.public.` strings.
pub fn format_peer_key(seed: &[u8; 32]) -> Result<(String, String, [u8; 32]), GrantError> {
    use ring::signature::KeyPair;
    let kp = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| GrantError::Key)?;
    let mut public = [0u8; 32];
    public.copy_from_slice(kp.public_key().as_ref());
    let mut both = seed.to_vec();
    both.extend_from_slice(&public);
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Ok((format!("k4.secret.{}", e.encode(both)), format!("k4.public.{}", e.encode(public)), public))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_key_round_trips() {
        let (sec, public, _) = format_peer_key(&[7u8; 32]).unwrap();
        assert!(public.starts_with("k4.public."));
        assert_eq!(parse_peer_secret(&sec).unwrap(), [7u8; 32]);
        assert!(parse_peer_secret("k4.public.AAAA").is_err());
    }

    #[test]
    fn parses_the_grant_shape() {
        let g = GrantDoc::parse(
            r#"{"id":"000102030405060708090a0b0c0d0e0f","endpoint":"tcp:127.0.0.1:1",
            "peer":"k4.public.x","access":"read","expires_unix":5,
            "regions":[{"addr":4096,"len":8192,"rkey":3}]}"#,
        )
        .unwrap();
        assert_eq!(g.id_bytes().unwrap()[15], 15);
        assert_eq!(g.regions[0].rkey, 3);
    }
}
