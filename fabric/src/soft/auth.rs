//! The soft provider's set-up proof: the shared transcript ([`crate::auth`]) under the
//! soft context string and wire version.

use crate::auth::Domain;
pub(crate) use crate::auth::{keypair, nonce, public, random_u32};

/// The soft provider's signing domain.
pub(crate) const PROOF: Domain =
    Domain::new(b"memgate-fabric-soft auth v1\0", super::wire::VERSION);
