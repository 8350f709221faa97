//! The RDMA abstraction both the broker and the fault server use.
//!
//! The broker is the *responder*: it registers a target process's memory
//! ([`Responder::register`]), creates restricted keys bound to one grant and one
//! authenticated peer key ([`Responder::create_key`]) and serves RDMA READs.
//! The fault server is the *initiator*: it opens a [`Connection`] proving possession
//! of the peer key, posts READs and polls their completions, and finally reports
//! [`Connection::commit`].
//!
//! Providers: `soft` (verbs semantics over TCP or Unix sockets, always built; wire
//! format in `docs/fabric-soft.md`) and `verbs` (cargo feature, real RDMA devices).
//! [`conformance`] is one test suite written against the abstraction.

mod auth;
mod buf;
pub mod conformance;
mod connection;
mod endpoint;
mod error;
mod fdwait;
mod responder;
pub mod soft;
mod source;
mod types;
#[cfg(feature = "verbs")]
pub mod verbs;

pub use connection::{Buf, Completion, Connection};
pub use endpoint::Endpoint;
pub use error::{FabricError, SourceError};
pub use responder::{Responder, Target};
pub use soft::{public_key_from_seed, SoftConnection, SoftLimits, SoftResponder};
pub use source::{MemorySource, ProcMemSource, VecSource};
pub use types::{event_channel, Access, EventSink, FabricEvent, KeySpec, Region, WcStatus};

/// Largest single READ (or the sum of a scatter-gather READ's segments), in bytes.
pub const MAX_READ_LEN: u32 = 4 << 20;
/// Most segments one scatter-gather READ may carry.
pub const MAX_SGE: usize = 16;
/// Default bound on outstanding READs per initiator connection.
pub const DEFAULT_MAX_OUTSTANDING: usize = 64;
