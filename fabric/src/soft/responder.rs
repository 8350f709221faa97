//! The soft responder.
use crate::{Endpoint, EventSink, FabricError, KeySpec, MemorySource, Region, Responder};
use std::sync::Arc;

/// Soft-provider responder.
pub struct SoftResponder {}

impl SoftResponder {
    /// Listen on `listen` (`tcp:IP:PORT`, port 0 allowed, or `unix:PATH`); events go to `events`.
    pub fn bind(listen: &Endpoint, events: EventSink) -> Result<SoftResponder, FabricError> {
        let _ = (listen, events);
        Err(FabricError::Shutdown)
    }
}

impl Responder for SoftResponder {
    fn endpoint(&self) -> String { String::new() }
    fn register(&self, source: Arc<dyn MemorySource>, addr: u64, len: u64) -> Result<Region, FabricError> { let _ = (source, addr, len); Err(FabricError::Shutdown) }
    fn create_key(&self, region: &Region, spec: KeySpec) -> Result<u32, FabricError> { let _ = (region, spec); Err(FabricError::Shutdown) }
    fn revoke(&self, rkey: u32) -> Result<(), FabricError> { Err(FabricError::UnknownKey(rkey)) }
    fn revoke_grant(&self, grant: [u8; 16]) -> usize { let _ = grant; 0 }
    fn deregister(&self, region: Region) -> Result<(), FabricError> { let _ = region; Ok(()) }
    fn shutdown(&self) {}
}
