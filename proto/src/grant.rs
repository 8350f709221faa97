//! The `Grant` document: what the broker returns for an admitted export, what
//! `memgate export` prints and `memgate fault-serve` reads.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// A grant id: 16 random bytes, 32 lowercase hex characters in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantId(pub [u8; 16]);

/// Why a string is not a grant id.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("grant id must be 32 hex characters")]
pub struct GrantIdError;

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GrantId({self})")
    }
}

impl FromStr for GrantId {
    type Err = GrantIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 {
            return Err(GrantIdError);
        }
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).map_err(|_| GrantIdError)?;
        Ok(GrantId(out))
    }
}

impl Serialize for GrantId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for GrantId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Access a grant's keys allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Access {
    /// Remote READ only (the default).
    #[default]
    #[serde(rename = "read")]
    Read,
    /// Remote READ and WRITE; only where the policy and the token both allow it.
    #[serde(rename = "read-write")]
    ReadWrite,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::ReadWrite => "read-write",
        })
    }
}

/// One exported region and its restricted key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRegion {
    /// Start address in the target's address space (page-aligned).
    pub addr: u64,
    /// Length in bytes (a multiple of the page size).
    pub len: u64,
    /// Restricted key for this exact range.
    pub rkey: u32,
}

/// An admitted export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Grant id.
    pub id: GrantId,
    /// Fabric endpoint, e.g. `tcp:127.0.0.1:7471`.
    pub endpoint: String,
    /// PASERK public key of the only peer the keys work for.
    pub peer: String,
    /// Access the keys allow.
    pub access: Access,
    /// Lease end, seconds since the Unix epoch.
    pub expires_unix: u64,
    /// Regions with their keys.
    pub regions: Vec<GrantRegion>,
}

impl Grant {
    /// Total bytes the grant covers.
    pub fn total_bytes(&self) -> u64 {
        self.regions
            .iter()
            .fold(0u64, |acc, r| acc.saturating_add(r.len))
    }

    /// Parses a grant document (JSON).
    pub fn from_json(s: &str) -> Result<Grant, serde_json::Error> {
        serde_json::from_str(s)
    }

    /// Formats the grant document as pretty JSON.
    pub fn to_json_pretty(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_document_shape() {
        let g = Grant {
            id: GrantId([0xab; 16]),
            endpoint: "tcp:127.0.0.1:7471".into(),
            peer: "k4.public.AAAA".into(),
            access: Access::Read,
            expires_unix: 1_800_000_000,
            regions: vec![GrantRegion {
                addr: 0x7f00_0000_0000,
                len: 4096,
                rkey: 7,
            }],
        };
        let v: serde_json::Value = serde_json::to_value(&g).unwrap();
        assert_eq!(v["id"], "abababababababababababababababab");
        assert_eq!(v["access"], "read");
        assert_eq!(v["regions"][0]["rkey"], 7);
        let back = Grant::from_json(&g.to_json_pretty()).unwrap();
        assert_eq!(back, g);
    }

    #[test]
    fn grant_id_rejects_bad_hex() {
        assert!("zz".parse::<GrantId>().is_err());
        assert!("ab".repeat(15).parse::<GrantId>().is_err());
        assert!("xy".repeat(16).parse::<GrantId>().is_err());
        assert!("00".repeat(16).parse::<GrantId>().is_ok());
    }

    #[test]
    fn unknown_fields_rejected() {
        let s = r#"{"id":"00000000000000000000000000000000","endpoint":"e","peer":"p","access":"read","expires_unix":1,"regions":[],"extra":1}"#;
        assert!(Grant::from_json(s).is_err());
    }
}
