//! memgate client library: broker requests, tokens, policy signing and the fault server.
//!
//! The binary `memgate` is a thin shell over [`cli`]; every subcommand lives in its own
//! module there so that each can be read (and tested) on its own.

pub mod cli;
pub mod faultserve;
pub mod grant;
pub mod handover;
pub mod localsrc;
pub mod mem;
pub mod transport;
pub mod uffd;
pub mod workload;

/// The page size this code assumes (x86-64 / aarch64 4 KiB base pages).
pub const PAGE: usize = 4096;
