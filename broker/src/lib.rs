//! memgated library: admission, grants, revocation, audit, hardening.

pub mod admission;
pub mod audit;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod grants;
pub mod harden;
pub mod logging;
pub mod policy_store;
pub mod recheck;
pub mod server;
pub mod signals;
pub mod systemd;
