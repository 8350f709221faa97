//! The initiator side (fault server): a provider-neutral [`Connection`] and its
//! [`Completion`]s.

use crate::soft::SoftConnection;
use crate::{Endpoint, FabricError, WcStatus};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

pub use crate::buf::Buf;

/// One finished work request.
#[derive(Debug)]
pub struct Completion {
    /// The caller's id from `post_read`.
    pub wr_id: u64,
    /// Outcome.
    pub status: WcStatus,
    /// The bytes read (exactly the requested length) when `status` is `Success`,
    /// otherwise empty. Pooled: dropping it recycles the buffer.
    pub data: Buf,
}

/// An authenticated initiator connection to a responder. All I/O happens in the
/// caller's thread; poll [`as_raw_fd`](AsRawFd::as_raw_fd) for readability (and for
/// writability while [`wants_write`](Self::wants_write)) together with other fds.
pub enum Connection {
    /// Soft provider (TCP or Unix socket).
    Soft(SoftConnection),
    /// Verbs provider (rdma_cm + RC queue pair).
    #[cfg(feature = "verbs")]
    Verbs(crate::verbs::VerbsConnection),
}

macro_rules! each {
    ($self:expr, $c:ident => $e:expr) => {
        match $self {
            Connection::Soft($c) => $e,
            #[cfg(feature = "verbs")]
            Connection::Verbs($c) => $e,
        }
    };
}

impl Connection {
    /// Connect to `endpoint` and prove possession of the peer key (Ed25519 `peer_seed`)
    /// for `grant` before any key can be used.
    pub fn connect(
        endpoint: &Endpoint,
        grant: [u8; 16],
        peer_seed: [u8; 32],
    ) -> Result<Connection, FabricError> {
        match endpoint {
            Endpoint::Tcp(_) | Endpoint::Unix(_) => {
                SoftConnection::connect(endpoint, grant, peer_seed).map(Connection::Soft)
            }
            #[cfg(feature = "verbs")]
            Endpoint::Rdma(_) => crate::verbs::VerbsConnection::connect(endpoint, grant, peer_seed)
                .map(Connection::Verbs),
            #[cfg(not(feature = "verbs"))]
            Endpoint::Rdma(_) => Err(FabricError::ProviderUnavailable("verbs")),
        }
    }

    /// Enqueue a READ of `len` bytes at `remote_addr` with `rkey`. Non-blocking. In the
    /// error state the request completes `Flushed`.
    pub fn post_read(
        &mut self,
        wr_id: u64,
        remote_addr: u64,
        len: u32,
        rkey: u32,
    ) -> Result<(), FabricError> {
        each!(self, c => c.post_read(wr_id, remote_addr, len, rkey))
    }

    /// Enqueue a scatter-gather READ: segments `(remote_addr, len, rkey)` land back to
    /// back in one completion's data.
    pub fn post_read_sg(
        &mut self,
        wr_id: u64,
        segs: &[(u64, u32, u32)],
    ) -> Result<(), FabricError> {
        each!(self, c => c.post_read_sg(wr_id, segs))
    }

    /// Append every finished completion to `out` without blocking; returns how many.
    pub fn poll_completions(&mut self, out: &mut Vec<Completion>) -> Result<usize, FabricError> {
        each!(self, c => c.poll_completions(out))
    }

    /// Like `poll_completions`, but waits up to `timeout` (forever with `None`) for at
    /// least one completion when requests are outstanding.
    pub fn wait_completions(
        &mut self,
        out: &mut Vec<Completion>,
        timeout: Option<Duration>,
    ) -> Result<usize, FabricError> {
        each!(self, c => c.wait_completions(out, timeout))
    }

    /// Report that every page of `grant` has landed; returns once the responder acked.
    /// Completions that arrive meanwhile are kept for the next poll.
    pub fn commit(&mut self, grant: [u8; 16]) -> Result<(), FabricError> {
        each!(self, c => c.commit(grant))
    }

    /// READs posted and not yet returned by a poll.
    pub fn outstanding(&self) -> usize {
        each!(self, c => c.outstanding())
    }

    /// Most READs that may be outstanding at once.
    pub fn max_outstanding(&self) -> usize {
        each!(self, c => c.max_outstanding())
    }

    /// True once a remote error or a lost link put the connection in the error state.
    pub fn is_error(&self) -> bool {
        each!(self, c => c.is_error())
    }

    /// True while requests are queued locally waiting for socket space: poll for
    /// writability too, then call `poll_completions`.
    pub fn wants_write(&self) -> bool {
        each!(self, c => c.wants_write())
    }
}

/// The completion bookkeeping both providers' initiators keep: completions not yet
/// handed out, the bound on outstanding READs, and whether the connection is in the
/// error state.
pub(crate) struct Ledger {
    /// Finished, in order, not yet returned by a poll.
    pub(crate) ready: VecDeque<Completion>,
    /// Most READs outstanding at once (in flight plus `ready`).
    pub(crate) max_outstanding: usize,
    /// A remote error or a lost link: every later READ completes `Flushed`.
    pub(crate) error: bool,
}

impl Ledger {
    pub(crate) fn new(max_outstanding: usize) -> Ledger {
        Ledger {
            ready: VecDeque::with_capacity(max_outstanding),
            max_outstanding,
            error: false,
        }
    }

    /// The admission rule for a new READ of `total` bytes with `in_flight` READs sent
    /// and unanswered: a length in 1..=[`MAX_READ_LEN`](crate::MAX_READ_LEN), room under
    /// the bound, and in the error state an immediate `Flushed` completion instead of
    /// sending. `Ok(true)`: send it.
    pub(crate) fn admit(
        &mut self,
        in_flight: usize,
        wr_id: u64,
        total: u64,
    ) -> Result<bool, FabricError> {
        if total == 0 || total > crate::MAX_READ_LEN as u64 {
            return Err(FabricError::BadLength {
                len: total,
                max: crate::MAX_READ_LEN,
            });
        }
        if in_flight + self.ready.len() >= self.max_outstanding {
            return Err(FabricError::QueueFull(self.max_outstanding));
        }
        if self.error {
            self.flushed(wr_id);
            return Ok(false);
        }
        Ok(true)
    }

    /// Complete `wr_id` as `Flushed`.
    pub(crate) fn flushed(&mut self, wr_id: u64) {
        self.ready.push_back(Completion {
            wr_id,
            status: WcStatus::Flushed,
            data: Buf::empty(),
        });
    }

    /// Hand every ready completion to `out`; returns how many.
    pub(crate) fn drain_into(&mut self, out: &mut Vec<Completion>) -> usize {
        let n = self.ready.len();
        out.extend(self.ready.drain(..));
        n
    }
}

/// The total length of a scatter-gather READ, once its segment count is checked
/// (1..=[`MAX_SGE`](crate::MAX_SGE)).
pub(crate) fn sg_total(segs: &[(u64, u32, u32)]) -> Result<u64, FabricError> {
    if segs.is_empty() || segs.len() > crate::MAX_SGE {
        return Err(FabricError::BadSgList(segs.len()));
    }
    Ok(segs.iter().map(|s| s.1 as u64).sum())
}

impl AsRawFd for Connection {
    fn as_raw_fd(&self) -> RawFd {
        each!(self, c => c.as_raw_fd())
    }
}
