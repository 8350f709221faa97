//! The broker API: wire messages between `memgate` clients and `memgated`.
//!
//! Every message is one `SOCK_SEQPACKET` packet: a fixed 12-byte little-endian
//! [`frame::Header`] (magic, version, kind, body length) followed by a JSON body whose
//! schema depends on the kind. Unknown fields are rejected. A packet is at most
//! [`MAX_MESSAGE`] bytes. An `Export` request carries exactly two file descriptors in
//! `SCM_RIGHTS`: the target's pidfd and the requester-opened `/proc/<pid>/mem`.
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

/// Number of file descriptors an `Export` request carries: pidfd, then the mem fd.
pub const EXPORT_FDS: usize = 2;
