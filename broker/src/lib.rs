//! memgated library: admission, grants, revocation, audit, hardening.

pub mod harden;
