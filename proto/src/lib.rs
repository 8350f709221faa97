//! The broker API: wire messages between `memgate` clients and `memgated`.
//!
//! Every message is one `SOCK_SEQPACKET` packet: a fixed 12-byte little-endian
//! [`frame::Header`] (magic, version, kind, body length) followed by a JSON body whose
//! schema depends on the kind. Unknown fields are rejected. A packet is at most
//! [`MAX_MESSAGE`] bytes. An `Export` request carries exactly three file descriptors in
//! `SCM_RIGHTS`: the target's pidfd, then `/proc/<pid>/mem` and `/proc/<pid>/maps`, both
//! opened by the requester (the opens are where the kernel checks ptrace access; a
//! hardened broker cannot open another process's `/proc` files itself).
//!
//! The [`grant::Grant`] document is also what `memgate export` prints and
//! `memgate fault-serve` reads. [`client::BrokerClient`] is a small blocking client.

pub mod client;
pub mod frame;
pub mod grant;
pub mod message;
pub mod transport;

pub use client::{BrokerClient, ClientError};
pub use frame::{DecodeError, EncodeError, Header, Kind, HEADER_LEN, MAGIC, MAX_MESSAGE, VERSION};
pub use grant::{Access, Grant, GrantId, GrantIdError, GrantRegion};
pub use message::{
    Denied, ErrorReply, ExportRequest, GrantState, GrantSummary, Reason, RegionSelection,
    RegionSpec, Request, Response, StatusInfo, WaitRequest, WaitResult, WaitState,
};

/// Number of file descriptors an `Export` request carries: pidfd, mem fd, maps fd.
pub const EXPORT_FDS: usize = 3;
/// Position of the target's pidfd among an `Export`'s fds.
pub const FD_PIDFD: usize = 0;
/// Position of the requester-opened `/proc/<pid>/mem`.
pub const FD_MEM: usize = 1;
/// Position of the requester-opened `/proc/<pid>/maps`.
pub const FD_MAPS: usize = 2;
