//! memgated library: admission, grants, revocation, audit, hardening.

pub mod admission;
pub mod cli;
pub mod config;
pub mod harden;
pub mod policy_store;
