//! Error types: what went wrong reading target memory, and in the fabric itself.

use std::io;

/// A failed read of target memory. Never replaced by zeros.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The read returned end of file: the target exited or execed (its mm is gone).
    #[error("target memory at {addr:#x}+{len} is gone (read returned end of file: the process exited or execed)")]
    Gone { addr: u64, len: usize },
    /// Fewer bytes than asked arrived.
    #[error("short read of target memory at {addr:#x}: {got} of {len} bytes")]
    Short { addr: u64, got: usize, len: usize },
    /// The read failed (EIO: unmapped, EFAULT, ...).
    #[error("reading target memory at {addr:#x}+{len}: {source}")]
    Io {
        addr: u64,
        len: usize,
        #[source]
        source: io::Error,
    },
    /// The range does not lie inside the source.
    #[error("range {addr:#x}+{len} lies outside the memory source")]
    OutOfRange { addr: u64, len: usize },
    /// The source does not allow writes.
    #[error("this memory source is read-only")]
    ReadOnly,
}

/// Errors of the fabric API (both providers).
#[derive(Debug, thiserror::Error)]
pub enum FabricError {
    #[error("bad endpoint {0:?}: expected tcp:IP:PORT, unix:PATH or rdma:IP:PORT")]
    BadEndpoint(String),
    #[error("{op} {endpoint}: {source}")]
    Io {
        op: &'static str,
        endpoint: String,
        #[source]
        source: io::Error,
    },
    #[error("empty or overflowing range {addr:#x}+{len}")]
    BadRange { addr: u64, len: u64 },
    #[error("unknown region (deregistered or never registered)")]
    UnknownRegion,
    #[error("key range {addr:#x}+{len} is not inside its region {region_addr:#x}+{region_len}")]
    KeyOutsideRegion {
        addr: u64,
        len: u64,
        region_addr: u64,
        region_len: u64,
    },
    #[error("key access {requested} exceeds what the region allows ({allowed})")]
    AccessNotAllowed {
        requested: crate::Access,
        allowed: crate::Access,
    },
    #[error("key expiry lies in the past")]
    AlreadyExpired,
    #[error("unknown rkey {0:#010x}")]
    UnknownKey(u32),
    #[error("the responder rejected authentication: {0}")]
    AuthRejected(String),
    #[error("fabric protocol violation: {0}")]
    Protocol(String),
    #[error("too many outstanding requests (bound {0}); poll completions first")]
    QueueFull(usize),
    #[error("read length {len} is zero or above the maximum {max}")]
    BadLength { len: u64, max: u32 },
    #[error("scatter-gather list has {0} segments (1..={max})", max = crate::MAX_SGE)]
    BadSgList(usize),
    #[error("the responder refused the commit: {0}")]
    CommitRejected(String),
    #[error("the connection is in the error state; reconnect")]
    ErrorState,
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("the responder is shut down")]
    Shutdown,
    #[error("invalid Ed25519 seed")]
    BadSeed,
    #[error("no RDMA device: {0}")]
    NoDevice(String),
    #[error("the {0} provider is not built in (enable the cargo feature)")]
    ProviderUnavailable(&'static str),
    #[error("{0}")]
    Verbs(String),
}

impl FabricError {
    pub(crate) fn io(op: &'static str, endpoint: impl ToString, source: io::Error) -> Self {
        FabricError::Io {
            op,
            endpoint: endpoint.to_string(),
            source,
        }
    }
}
