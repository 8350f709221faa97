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

/// Why a grant document's regions cannot be served.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GrantCheckError {
    /// The grant lists no region.
    #[error("the grant has no regions")]
    NoRegions,
    /// More regions than any broker hands out.
    #[error("the grant has {0} regions (at most {MAX_GRANT_REGIONS})")]
    TooManyRegions(usize),
    /// A region's start is not page-aligned.
    #[error("region {index} starts at {addr:#x}, which is not page-aligned")]
    UnalignedAddr {
        /// Region index.
        index: usize,
        /// Its start.
        addr: u64,
    },
    /// A region's length is zero or not a multiple of the page size.
    #[error(
        "region {index} has length {len:#x}, which is not a non-zero multiple of the page size"
    )]
    BadLength {
        /// Region index.
        index: usize,
        /// Its length.
        len: u64,
    },
    /// A region ends past the user address space (or its end overflows).
    #[error("region {index} ({addr:#x}+{len:#x}) ends beyond the user address space")]
    BeyondUserSpace {
        /// Region index.
        index: usize,
        /// Its start.
        addr: u64,
        /// Its length.
        len: u64,
    },
    /// Two regions overlap.
    #[error("regions {first} and {second} overlap")]
    Overlap {
        /// One region index.
        first: usize,
        /// The other.
        second: usize,
    },
}

/// Page size grant regions are aligned to.
pub const GRANT_PAGE: u64 = 4096;
/// End of the largest user address space Linux offers (5-level paging, 2^57 bytes).
pub const USER_SPACE_END: u64 = 1 << 57;
/// Most regions a grant document may list.
pub const MAX_GRANT_REGIONS: usize = 1 << 16;

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

    /// Checks the regions a fault server would register: at least one, page-aligned,
    /// non-empty, inside the user address space, not overlapping. Says which region is
    /// wrong and how.
    pub fn validate(&self) -> Result<(), GrantCheckError> {
        if self.regions.is_empty() {
            return Err(GrantCheckError::NoRegions);
        }
        if self.regions.len() > MAX_GRANT_REGIONS {
            return Err(GrantCheckError::TooManyRegions(self.regions.len()));
        }
        for (index, r) in self.regions.iter().enumerate() {
            if r.addr & (GRANT_PAGE - 1) != 0 {
                return Err(GrantCheckError::UnalignedAddr {
                    index,
                    addr: r.addr,
                });
            }
            if r.len == 0 || r.len & (GRANT_PAGE - 1) != 0 {
                return Err(GrantCheckError::BadLength { index, len: r.len });
            }
            // An overflowing end saturates, which is past the user address space too.
            if r.addr.saturating_add(r.len) > USER_SPACE_END {
                return Err(GrantCheckError::BeyondUserSpace {
                    index,
                    addr: r.addr,
                    len: r.len,
                });
            }
        }
        let mut order: Vec<usize> = (0..self.regions.len()).collect();
        order.sort_by_key(|&i| self.regions[i].addr);
        for w in order.windows(2) {
            let (a, b) = (&self.regions[w[0]], &self.regions[w[1]]);
            // Ends cannot overflow: checked above.
            if a.addr + a.len > b.addr {
                return Err(GrantCheckError::Overlap {
                    first: w[0].min(w[1]),
                    second: w[0].max(w[1]),
                });
            }
        }
        Ok(())
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

    fn with(regions: &[(u64, u64)]) -> Grant {
        Grant {
            id: GrantId([0; 16]),
            endpoint: "tcp:127.0.0.1:1".into(),
            peer: "k4.public.AAAA".into(),
            access: Access::Read,
            expires_unix: 1,
            regions: regions
                .iter()
                .map(|&(addr, len)| GrantRegion { addr, len, rkey: 1 })
                .collect(),
        }
    }

    #[test]
    fn validate_refuses_unservable_regions() {
        assert!(with(&[(0x1000, 0x2000), (0x3000, 0x1000)])
            .validate()
            .is_ok());
        assert_eq!(with(&[]).validate(), Err(GrantCheckError::NoRegions));
        assert!(matches!(
            with(&[(0x1000, 1)]).validate(),
            Err(GrantCheckError::BadLength { index: 0, len: 1 })
        ));
        assert!(matches!(
            with(&[(0x1000, 0)]).validate(),
            Err(GrantCheckError::BadLength { .. })
        ));
        assert!(matches!(
            with(&[(0x1001, 0x1000)]).validate(),
            Err(GrantCheckError::UnalignedAddr { .. })
        ));
        assert!(matches!(
            with(&[(0x1000, u64::MAX - 0xfff)]).validate(),
            Err(GrantCheckError::BeyondUserSpace { .. })
        ));
        assert!(matches!(
            with(&[(0x1000, 1 << 60)]).validate(),
            Err(GrantCheckError::BeyondUserSpace { .. })
        ));
        assert_eq!(
            with(&[(0x5000, 0x1000), (0x1000, 0x5000)]).validate(),
            Err(GrantCheckError::Overlap {
                first: 0,
                second: 1
            })
        );
    }

    #[test]
    fn unknown_fields_rejected() {
        let s = r#"{"id":"00000000000000000000000000000000","endpoint":"e","peer":"p","access":"read","expires_unix":1,"regions":[],"extra":1}"#;
        assert!(Grant::from_json(s).is_err());
    }
}
