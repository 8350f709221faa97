//! What the fault server needs from the network: a pipelined READ interface with a pollable
//! fd, modelled on the fabric initiator (post READ, poll completions, COMMIT). The fault
//! server core is written against [`Transport`] only, so it runs over the memgate fabric
//! ([`fabric`]) and over the plain TCP request/reply baseline ([`rawtcp`]) alike.

pub mod fabric;
pub mod rawtcp;
pub mod threaded;

use std::os::fd::RawFd;

/// Why one READ failed. None of these ever yields data: the fault server fails closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadFailure {
    /// The remote key was revoked, expired or does not cover the range.
    #[error("remote access error (key revoked, expired or out of range)")]
    RemoteAccess,
    /// The remote side could not read the source memory (source process gone?).
    #[error("remote operation error (source memory unreadable)")]
    RemoteOperation,
    /// The connection broke before the READ completed.
    #[error("flushed (connection broke)")]
    Flushed,
}

/// The bytes of a successful READ (a pooled fabric buffer or a plain vector).
pub type Payload = Box<dyn AsRef<[u8]> + Send>;

/// A finished READ.
pub struct Completion {
    /// The caller's work-request id.
    pub wr_id: u64,
    /// The bytes read (exactly the requested length) or why not.
    pub result: Result<Payload, ReadFailure>,
}

/// Transport-level failures (the connection as a whole).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Connecting or authenticating failed.
    #[error("connect to {endpoint}: {reason}")]
    Connect {
        /// Where.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The connection broke.
    #[error("connection lost: {0}")]
    Lost(String),
    /// The peer answered something that is not the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// COMMIT was refused or failed.
    #[error("commit failed: {0}")]
    Commit(String),
}

/// A connected initiator.
pub trait Transport: Send {
    /// Posts a READ of `len` bytes at `remote_addr` through `rkey`.
    fn post_read(
        &mut self,
        wr_id: u64,
        remote_addr: u64,
        len: u32,
        rkey: u32,
    ) -> Result<(), TransportError>;
    /// Appends every completion available now to `out` without blocking.
    fn poll(&mut self, out: &mut Vec<Completion>) -> Result<(), TransportError>;
    /// The fd that becomes readable when [`Transport::poll`] may have something.
    fn raw_fd(&self) -> RawFd;
    /// True while requests wait locally for socket space (poll for POLLOUT too).
    fn wants_write(&self) -> bool {
        false
    }
    /// Tells the source that every page of the grant has landed.
    fn commit(&mut self) -> Result<(), TransportError>;
}

/// Makes (and remakes, after a failure) connections.
pub trait Connector: Send + Sync {
    /// Opens one new connection.
    fn connect(&self) -> Result<Box<dyn Transport>, TransportError>;
    /// A human-readable endpoint for messages.
    fn endpoint(&self) -> String;
    /// How many connections may use a grant's keys at once; `None`: no limit. The verbs
    /// provider says 1 (each key's type-2 memory window is bound to one queue pair, so a
    /// second connection would take the keys away from the first).
    fn max_connections(&self) -> Option<usize> {
        None
    }
}
