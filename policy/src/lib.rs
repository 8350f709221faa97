//! Pure policy engine for memgate: policy documents, minisign-compatible signatures,
//! PASERK keys, PASETO v4.public export tokens, the decision function and the `jti`
//! replay cache.
//!
//! Everything here takes bytes (and the current time) in and hands decisions out: no
//! sockets, no files, no `/proc`. The broker feeds it what it has read and checked; the
//! client uses it to make keys, sign policies and mint tokens.

pub mod b64;
pub mod cgroup;
pub mod decision;
pub mod document;
pub mod keys;
pub mod minisign;
pub mod paseto;
pub mod replay;
pub mod signed;
pub mod size;
pub mod token;

pub use decision::{
    evaluate, Decision, Effective, Facts, MappingKind, Reason, ReasonCode, Region, Usage,
};
pub use document::{Access, Issuer, Limits, Policy, PolicyError};
pub use token::{Claims, Target, TokenError, VerifiedToken};
