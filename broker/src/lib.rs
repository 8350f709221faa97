//! memgated library: admission, grants, revocation, audit, hardening.

pub mod admission;
pub mod harden;
