//! The provider-neutral responder interface the broker drives.

use crate::{FabricError, KeySpec, MemorySource, Region};
use std::os::fd::BorrowedFd;
use std::sync::Arc;

/// The process behind an export, as the broker holds it after admission.
pub struct Target<'a> {
    /// The target's pidfd. A provider that keeps it duplicates it.
    pub pidfd: BorrowedFd<'a>,
    /// The target's memory, read through the requester's `/proc/PID/mem`.
    pub source: Arc<dyn MemorySource>,
}

/// The broker's side of the fabric: registers target memory, hands out restricted keys,
/// serves READs on them and reports [`FabricEvent`](crate::FabricEvent)s to the sink it
/// was created with.
pub trait Responder: Send + Sync {
    /// The address peers connect to, as written into grants (`tcp:IP:PORT`, ...).
    fn endpoint(&self) -> String;

    /// Register `addr..addr+len` of `source`. The region allows REMOTE_READ, plus
    /// REMOTE_WRITE when the source is writable.
    fn register(
        &self,
        source: Arc<dyn MemorySource>,
        addr: u64,
        len: u64,
    ) -> Result<Region, FabricError>;

    /// Register `addr..addr+len` of an admitted target. A provider that can register
    /// another process's memory directly (verbs with pidfd registration) uses the pidfd;
    /// the default reads through the target's source exactly like [`Responder::register`].
    fn register_target(
        &self,
        target: &Target<'_>,
        addr: u64,
        len: u64,
    ) -> Result<Region, FabricError> {
        self.register(target.source.clone(), addr, len)
    }

    /// Create a restricted key: exact range inside `region`, access a subset of the
    /// region's, usable only by `spec.peer` on a connection authenticated for
    /// `spec.grant`, until `spec.expires`. Returns the rkey.
    fn create_key(&self, region: &Region, spec: KeySpec) -> Result<u32, FabricError>;

    /// Revoke one key; later READs with it fail with a remote access error.
    fn revoke(&self, rkey: u32) -> Result<(), FabricError>;

    /// Revoke every key of a grant; returns how many were revoked.
    fn revoke_grant(&self, grant: [u8; 16]) -> usize;

    /// Deregister a region and revoke every key on it.
    fn deregister(&self, region: Region) -> Result<(), FabricError>;

    /// Stop accepting and close every connection.
    fn shutdown(&self);
}
