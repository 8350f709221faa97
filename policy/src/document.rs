//! The policy document: a versioned TOML file saying which token issuers the broker
//! trusts and what each may authorise, which mapping kinds may be exported, and per-uid
//! limits. Unknown keys are errors that name the key; values are checked when parsed
//! (cgroup patterns, PASERK keys, sizes), so a `Policy` value is always well formed.

use serde::Deserialize;

use crate::cgroup::{self, Pattern};
use crate::decision::MappingKind;
use crate::keys::{self, PublicKey};
use crate::size;

/// The only policy format version this code reads.
pub const VERSION: u32 = 1;

/// Largest policy file accepted (bytes).
pub const MAX_POLICY_BYTES: usize = 1 << 20;

/// Why a policy document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// TOML syntax error, unknown key, wrong type or missing key (the message names it).
    #[error("policy: {0}")]
    Toml(String),
    /// The file is not UTF-8.
    #[error("policy is not valid UTF-8")]
    Utf8,
    /// The file is too large.
    #[error("policy is larger than {MAX_POLICY_BYTES} bytes")]
    TooLarge,
    /// Unsupported `version`.
    #[error("policy version {0} is not supported (expected {VERSION})")]
    Version(u32),
    /// A value is invalid; `key` names where.
    #[error("policy: {key}: {detail}")]
    Invalid {
        /// Dotted key path, e.g. `issuer[0].cgroups[1]`.
        key: String,
        /// What is wrong.
        detail: String,
    },
}

/// Access a grant gives the remote side.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Remote reads only (the default).
    #[default]
    Read,
    /// Remote reads and writes.
    ReadWrite,
}

impl Access {
    /// `read` or `read-write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::ReadWrite => "read-write",
        }
    }

    /// Parses `read` or `read-write`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Access::Read),
            "read-write" => Some(Access::ReadWrite),
            _ => None,
        }
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A trusted token issuer and what it may authorise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    /// Issuer name (the token's `iss`).
    pub name: String,
    /// Its Ed25519 public key.
    pub key: PublicKey,
    /// Target cgroups its tokens may name.
    pub cgroups: Vec<Pattern>,
    /// Requester uids it may authorise.
    pub uids: Vec<u32>,
    /// Requester gids it may authorise (a requester matches by uid or by gid).
    pub gids: Vec<u32>,
    /// Most access it may grant.
    pub access: Access,
    /// Most bytes per export.
    pub max_bytes: u64,
    /// Longest lease, seconds.
    pub max_lease: u64,
}

impl Issuer {
    /// Whether the requester `uid`/`gid` is one this issuer may authorise.
    pub fn allows_requester(&self, uid: u32, gid: u32) -> bool {
        self.uids.contains(&uid) || self.gids.contains(&gid)
    }

    /// Whether this issuer may name `cgroup` as a target.
    pub fn allows_cgroup(&self, cgroup: &str) -> bool {
        self.cgroups.iter().any(|p| p.matches(cgroup))
    }
}

/// Per-uid limits the broker enforces across grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Live grants per requester uid.
    pub grants_per_uid: u32,
    /// Exported bytes (over live grants) per requester uid.
    pub bytes_per_uid: u64,
    /// Export requests per second per requester uid.
    pub requests_per_second_per_uid: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            grants_per_uid: 16,
            bytes_per_uid: 64 << 30,
            requests_per_second_per_uid: 10,
        }
    }
}

/// A parsed, checked policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Format version (always [`VERSION`]).
    pub version: u32,
    /// This broker's id: the audience tokens must name.
    pub broker: String,
    /// Monotonic serial; the broker refuses a policy older than the one it runs.
    pub serial: u64,
    /// Trusted issuers.
    pub issuers: Vec<Issuer>,
    /// Exportable mapping kinds.
    pub mappings: Vec<MappingKind>,
    /// Per-uid limits.
    pub limits: Limits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: u32,
    broker: String,
    serial: u64,
    #[serde(default)]
    mappings: Option<Vec<MappingKind>>,
    #[serde(default)]
    limits: Option<RawLimits>,
    #[serde(default)]
    issuer: Vec<RawIssuer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    grants_per_uid: Option<u32>,
    #[serde(default, deserialize_with = "opt_size")]
    bytes_per_uid: Option<u64>,
    requests_per_second_per_uid: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    name: String,
    key: String,
    cgroups: Vec<String>,
    #[serde(default)]
    uids: Vec<u32>,
    #[serde(default)]
    gids: Vec<u32>,
    #[serde(default)]
    access: Access,
    #[serde(deserialize_with = "size::deserialize")]
    max_bytes: u64,
    max_lease: u64,
}

fn opt_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    size::deserialize(d).map(Some)
}

/// One line: `line L, column C: what` (the TOML crate's own text spans several lines).
fn toml_error(text: &str, e: &toml::de::Error) -> PolicyError {
    let what = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match e.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
            PolicyError::Toml(format!("line {line}, column {column}: {what}"))
        }
        None => PolicyError::Toml(what),
    }
}

fn invalid(key: String, detail: impl std::fmt::Display) -> PolicyError {
    PolicyError::Invalid {
        key,
        detail: detail.to_string(),
    }
}

fn check_name(key: String, s: &str) -> Result<(), PolicyError> {
    if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
        return Err(invalid(
            key,
            "must be 1-256 characters without control characters",
        ));
    }
    Ok(())
}

impl Policy {
    /// Parses raw bytes (must be UTF-8).
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, PolicyError> {
        if bytes.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge);
        }
        Self::parse(std::str::from_utf8(bytes).map_err(|_| PolicyError::Utf8)?)
    }

    /// Parses and checks a policy document.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge);
        }
        let raw: RawPolicy = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        if raw.version != VERSION {
            return Err(PolicyError::Version(raw.version));
        }
        check_name("broker".into(), &raw.broker)?;
        let mut issuers = Vec::with_capacity(raw.issuer.len());
        for (i, ri) in raw.issuer.into_iter().enumerate() {
            let at = |k: &str| format!("issuer[{i}].{k}");
            check_name(at("name"), &ri.name)?;
            if issuers.iter().any(|x: &Issuer| x.name == ri.name) {
                return Err(invalid(
                    at("name"),
                    format!("duplicate issuer {:?}", ri.name),
                ));
            }
            let key = PublicKey::from_paserk(&ri.key).map_err(|e| invalid(at("key"), e))?;
            let cgroups = ri
                .cgroups
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    Pattern::parse(c).map_err(|e| invalid(format!("issuer[{i}].cgroups[{j}]"), e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if ri.max_lease == 0 {
                return Err(invalid(at("max_lease"), "must be at least 1 second"));
            }
            issuers.push(Issuer {
                name: ri.name,
                key,
                cgroups,
                uids: ri.uids,
                gids: ri.gids,
                access: ri.access,
                max_bytes: ri.max_bytes,
                max_lease: ri.max_lease,
            });
        }
        let defaults = Limits::default();
        let limits = match raw.limits {
            None => defaults,
            Some(l) => Limits {
                grants_per_uid: l.grants_per_uid.unwrap_or(defaults.grants_per_uid),
                bytes_per_uid: l.bytes_per_uid.unwrap_or(defaults.bytes_per_uid),
                requests_per_second_per_uid: l
                    .requests_per_second_per_uid
                    .unwrap_or(defaults.requests_per_second_per_uid),
            },
        };
        let mut mappings = raw
            .mappings
            .unwrap_or_else(|| MappingKind::DEFAULT_EXPORTABLE.to_vec());
        mappings.sort();
        mappings.dedup();
        Ok(Self {
            version: raw.version,
            broker: raw.broker,
            serial: raw.serial,
            issuers,
            mappings,
            limits,
        })
    }

    /// The issuer with this name.
    pub fn issuer(&self, name: &str) -> Option<&Issuer> {
        self.issuers.iter().find(|i| i.name == name)
    }

    /// Whether a mapping kind may be exported.
    pub fn allows_mapping(&self, kind: MappingKind) -> bool {
        self.mappings.contains(&kind)
    }

    /// A JSON summary (no secrets exist in a policy; keys are shown as PASERK).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "version": self.version,
            "broker": self.broker,
            "serial": self.serial,
            "mappings": self.mappings.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
            "limits": {
                "grants_per_uid": self.limits.grants_per_uid,
                "bytes_per_uid": self.limits.bytes_per_uid,
                "requests_per_second_per_uid": self.limits.requests_per_second_per_uid,
            },
            "issuers": self.issuers.iter().map(|i| serde_json::json!({
                "name": i.name,
                "key": i.key.to_paserk(),
                "kid": i.key.pid(),
                "fingerprint": i.key.fingerprint(),
                "cgroups": i.cgroups.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                "uids": i.uids,
                "gids": i.gids,
                "access": i.access.as_str(),
                "max_bytes": i.max_bytes,
                "max_lease": i.max_lease,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Checks a cgroup path as a policy or token would (re-exported for callers).
pub fn validate_cgroup(path: &str) -> Result<(), cgroup::CgroupError> {
    cgroup::validate_path(path)
}

/// Re-exported so callers can name key errors from policy parsing.
pub type KeyError = keys::KeyError;

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const KEY: &str = "k4.public.Hrnbu7wEfAP9cGBOAHHwmH4Wsot1ciXBHwBBXQ4gsaI";

    fn doc(extra_issuer: &str, extra_top: &str) -> String {
        format!(
            "version = 1\nbroker = \"b1\"\nserial = 3\n{extra_top}\n[[issuer]]\nname = \"orch\"\nkey = \"{KEY}\"\ncgroups = [\"/vms/*\"]\nuids = [1000]\nmax_bytes = \"1G\"\nmax_lease = 60\n{extra_issuer}\n"
        )
    }

    #[test]
    fn parses_with_defaults() {
        let p = Policy::parse(&doc("", "")).unwrap();
        assert_eq!(p.serial, 3);
        assert_eq!(p.issuers[0].access, Access::Read);
        assert_eq!(p.issuers[0].max_bytes, 1 << 30);
        assert_eq!(p.mappings, MappingKind::DEFAULT_EXPORTABLE.to_vec());
        assert!(p.issuers[0].allows_cgroup("/vms/a"));
        assert!(!p.issuers[0].allows_cgroup("/vms/a/b"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Policy::parse(&doc("colour = 1", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
        let e = Policy::parse(&doc("", "brokr = 1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("brokr"), "{e}");
        let e = Policy::parse(&doc("", "[limits]\nbytes_per_uidd = 3"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bytes_per_uidd"), "{e}");
        // One line, with the position.
        let e = Policy::parse("version = 1\nbroker = \"b\"\nserial = 1\nbrokr = 2\n")
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.starts_with("policy: line 4, column 1: unknown field `brokr`"),
            "{e}"
        );
    }

    #[test]
    fn invalid_values_are_named() {
        let e = Policy::parse(&doc("", "").replace("/vms/*", "/vms/../x")).unwrap_err();
        assert!(e.to_string().contains("issuer[0].cgroups[0]"), "{e}");
        let e = Policy::parse(&doc("", "").replace("version = 1", "version = 2")).unwrap_err();
        assert_eq!(e, PolicyError::Version(2));
        let e = Policy::parse(&doc("access = \"write\"", "")).unwrap_err();
        assert!(e.to_string().contains("write"), "{e}");
        let e = Policy::parse(&doc("", "mappings = [\"vdso\"]")).unwrap_err();
        assert!(e.to_string().contains("vdso"), "{e}");
        let e = Policy::parse(&doc("", "").replace(KEY, "k4.public.Hrnb")).unwrap_err();
        assert!(e.to_string().contains("issuer[0].key"), "{e}");
    }

    #[test]
    fn explicit_read_write_and_mappings() {
        let p = Policy::parse(&doc(
            "access = \"read-write\"",
            "mappings = [\"private-anon\", \"shared\"]\n[limits]\ngrants_per_uid = 2",
        ))
        .unwrap();
        assert_eq!(p.issuers[0].access, Access::ReadWrite);
        assert!(p.allows_mapping(MappingKind::Shared));
        assert!(!p.allows_mapping(MappingKind::Heap));
        assert_eq!(p.limits.grants_per_uid, 2);
        assert_eq!(p.limits.bytes_per_uid, Limits::default().bytes_per_uid);
    }
}
