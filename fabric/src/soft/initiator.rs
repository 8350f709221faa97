//! The soft initiator.
use crate::{Completion, Endpoint, FabricError};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// Soft-provider initiator connection.
pub struct SoftConnection { fd: RawFd }

impl SoftConnection {
    /// Connect and authenticate.
    pub fn connect(endpoint: &Endpoint, grant: [u8; 16], peer_seed: [u8; 32]) -> Result<SoftConnection, FabricError> { let _ = (endpoint, grant, peer_seed); Err(FabricError::Shutdown) }
    /// See [`crate::Connection::post_read`].
    pub fn post_read(&mut self, wr_id: u64, remote_addr: u64, len: u32, rkey: u32) -> Result<(), FabricError> { let _ = (wr_id, remote_addr, len, rkey); Ok(()) }
    /// See [`crate::Connection::post_read_sg`].
    pub fn post_read_sg(&mut self, wr_id: u64, segs: &[(u64, u32, u32)]) -> Result<(), FabricError> { let _ = (wr_id, segs); Ok(()) }
    /// See [`crate::Connection::poll_completions`].
    pub fn poll_completions(&mut self, out: &mut Vec<Completion>) -> Result<usize, FabricError> { let _ = out; Ok(0) }
    /// See [`crate::Connection::wait_completions`].
    pub fn wait_completions(&mut self, out: &mut Vec<Completion>, timeout: Option<Duration>) -> Result<usize, FabricError> { let _ = (out, timeout); Ok(0) }
    /// See [`crate::Connection::commit`].
    pub fn commit(&mut self, grant: [u8; 16]) -> Result<(), FabricError> { let _ = grant; Ok(()) }
    /// See [`crate::Connection::outstanding`].
    pub fn outstanding(&self) -> usize { 0 }
    /// See [`crate::Connection::max_outstanding`].
    pub fn max_outstanding(&self) -> usize { 0 }
    /// See [`crate::Connection::is_error`].
    pub fn is_error(&self) -> bool { false }
    /// See [`crate::Connection::wants_write`].
    pub fn wants_write(&self) -> bool { false }
}

impl AsRawFd for SoftConnection { fn as_raw_fd(&self) -> RawFd { self.fd } }
