//! Plain data shared by every provider: access flags, completion status, key specs,
//! regions and the events the responder reports to the broker.

use std::fmt;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::SystemTime;

use crate::FabricError;

/// Remote access rights of a region or key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Access(u8);

impl Access {
    /// No access.
    pub const NONE: Access = Access(0);
    /// The peer may READ.
    pub const REMOTE_READ: Access = Access(1);
    /// The peer may WRITE.
    pub const REMOTE_WRITE: Access = Access(2);
    /// Read and write.
    pub const READ_WRITE: Access = Access(3);

    /// Raw bits (1 = read, 2 = write).
    pub fn bits(self) -> u8 {
        self.0
    }
    /// From raw bits; unknown bits are refused.
    pub fn from_bits(bits: u8) -> Option<Access> {
        (bits & !3 == 0).then_some(Access(bits))
    }
    /// Every flag of `other` is in `self`.
    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }
    /// The access a registration of `source` carries: read-write when the source can be
    /// written, read-only otherwise.
    pub(crate) fn of_source(source: &dyn crate::MemorySource) -> Access {
        if source.writable() {
            Access::READ_WRITE
        } else {
            Access::REMOTE_READ
        }
    }
}

impl std::ops::BitOr for Access {
    type Output = Access;
    fn bitor(self, rhs: Access) -> Access {
        Access(self.0 | rhs.0)
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            0 => "none",
            1 => "read",
            2 => "write",
            _ => "read-write",
        })
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Status of a work completion, as an RC queue pair reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WcStatus {
    /// The data arrived, byte-exact.
    Success,
    /// Wrong rkey, range, access, peer, grant, expired or revoked key
    /// (IBV_WC_REM_ACCESS_ERR). The connection then enters the error state.
    RemoteAccessError,
    /// The key was valid but the responder could not read the memory: the target exited
    /// or the range is no longer mapped (IBV_WC_REM_OP_ERR). Error state follows.
    RemoteOperationError,
    /// Not executed: the connection was already in the error state or was lost
    /// (IBV_WC_WR_FLUSH_ERR).
    Flushed,
}

impl WcStatus {
    /// Wire code (soft provider).
    pub(crate) fn code(self) -> u8 {
        match self {
            WcStatus::Success => 0,
            WcStatus::RemoteAccessError => 1,
            WcStatus::RemoteOperationError => 2,
            WcStatus::Flushed => 3,
        }
    }
    pub(crate) fn from_code(c: u8) -> Option<WcStatus> {
        Some(match c {
            0 => WcStatus::Success,
            1 => WcStatus::RemoteAccessError,
            2 => WcStatus::RemoteOperationError,
            3 => WcStatus::Flushed,
            _ => return None,
        })
    }
}

/// What a restricted key allows: an exact range, access rights, one peer, one grant,
/// until a deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// First byte (target address).
    pub addr: u64,
    /// Length in bytes; `addr..addr+len` must lie inside the region.
    pub len: u64,
    /// Must be a subset of the region's access.
    pub access: Access,
    /// Ed25519 public key of the only peer allowed to use this key.
    pub peer: [u8; 32],
    /// Grant id the key belongs to; the peer's connection must name the same grant.
    pub grant: [u8; 16],
    /// The key stops working at this instant.
    pub expires: SystemTime,
}

impl KeySpec {
    /// Whether a key with this spec may be created, now, on a region covering
    /// `region_addr..region_addr+region_len` with `region_access`: a non-empty range
    /// inside the region, some access and no more than the region's, not yet expired.
    pub(crate) fn admissible(
        &self,
        region_addr: u64,
        region_len: u64,
        region_access: Access,
    ) -> Result<(), FabricError> {
        let end = self.addr.checked_add(self.len);
        if self.len == 0 || end.is_none() {
            return Err(FabricError::BadRange {
                addr: self.addr,
                len: self.len,
            });
        }
        if self.addr < region_addr || end > region_addr.checked_add(region_len) {
            return Err(FabricError::KeyOutsideRegion {
                addr: self.addr,
                len: self.len,
                region_addr,
                region_len,
            });
        }
        if self.access == Access::NONE || !region_access.contains(self.access) {
            return Err(FabricError::AccessNotAllowed {
                requested: self.access,
                allowed: region_access,
            });
        }
        if self.expires <= SystemTime::now() {
            return Err(FabricError::AlreadyExpired);
        }
        Ok(())
    }
}

/// A registered range of target memory (a memory region).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Region {
    pub(crate) id: u64,
    pub(crate) addr: u64,
    pub(crate) len: u64,
    pub(crate) access: Access,
}

impl Region {
    /// First target address.
    pub fn addr(&self) -> u64 {
        self.addr
    }
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Never true: registration refuses empty ranges.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The most any key of this region may allow.
    pub fn access(&self) -> Access {
        self.access
    }
    /// Provider-internal identifier.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// What the responder reports to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FabricEvent {
    /// A peer authenticated for `grant`.
    Connected { grant: [u8; 16], peer: [u8; 32] },
    /// An authenticated connection of `grant` closed (either side, or error).
    Disconnected { grant: [u8; 16], peer: [u8; 32] },
    /// The authenticated peer of `grant` reported that every page has landed.
    /// The responder acknowledges it to the peer after the sink returns.
    Commit { grant: [u8; 16], peer: [u8; 32] },
    /// A READ was refused (or failed); the connection entered the error state.
    AccessError {
        grant: [u8; 16],
        rkey: u32,
        reason: String,
    },
    /// A peer failed to authenticate (a bad signature, a grant with no live key, a peer
    /// key no live key of the grant is bound to, a handshake that timed out or broke the
    /// protocol). Rate-limited per responder: `suppressed` counts the failures since the
    /// previous `AuthFailed` that were not reported on their own.
    AuthFailed {
        /// Who connected, as the transport names it: `IP:PORT` for TCP, `uid:N` for a
        /// Unix socket, `unknown` when the OS could not say.
        peer_addr: String,
        /// The grant the peer claimed, if it got as far as saying one.
        grant: Option<[u8; 16]>,
        /// The public key the peer claimed, if it got as far as saying one (a claim only:
        /// when the signature was bad nothing shows the peer holds its secret).
        peer: Option<[u8; 32]>,
        /// Why: one of the `FabricEvent::AUTH_*` strings.
        reason: &'static str,
        /// Failures not reported since the previous `AuthFailed` of this responder.
        suppressed: u64,
    },
}

/// Stable `reason` strings of [`FabricEvent::AuthFailed`].
impl FabricEvent {
    /// The signature over the set-up transcript did not verify under the claimed key.
    pub const AUTH_BAD_SIGNATURE: &'static str = "bad_signature";
    /// No live key (unexpired, unrevoked) belongs to the claimed grant.
    pub const AUTH_UNKNOWN_GRANT: &'static str = "unknown_grant";
    /// The grant has live keys, but none is bound to the claimed peer key.
    pub const AUTH_PEER_KEY_MISMATCH: &'static str = "peer_key_mismatch";
    /// The handshake did not complete within the responder's handshake timeout.
    pub const AUTH_HANDSHAKE_TIMEOUT: &'static str = "handshake_timeout";
    /// The peer sent frames out of order, malformed, or of another wire version.
    pub const AUTH_PROTOCOL: &'static str = "protocol";
}

/// Where the responder delivers [`FabricEvent`]s. Called on the connection's thread;
/// keep it short (hand the event to a channel).
pub type EventSink = Arc<dyn Fn(FabricEvent) + Send + Sync>;

/// An [`EventSink`] that feeds a channel, and the receiving end.
pub fn event_channel() -> (EventSink, mpsc::Receiver<FabricEvent>) {
    let (tx, rx) = mpsc::channel();
    let sink: EventSink = Arc::new(move |ev| {
        let _ = tx.send(ev);
    });
    (sink, rx)
}
