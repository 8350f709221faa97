//! A fabric responder in this process, serving a target's memory through its
//! `/proc/PID/mem` the same way memgated's soft provider does, without admission. Used by
//! `memgate bench` (to measure the fault server against the raw baseline on equal terms)
//! and by tests that exercise the fault server against the fabric directly.

use anyhow::Context;
use memgate_fabric::{
    event_channel, Access, Endpoint, FabricEvent, KeySpec, ProcMemSource, Responder, SoftResponder,
};
use memgate_proto::{Grant, GrantId, GrantRegion};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A responder with one grant over some of a target's memory.
pub struct LocalSource {
    /// The responder (drop or `shutdown` to stop serving).
    pub responder: SoftResponder,
    /// Fabric events (connections, COMMIT, access errors).
    pub events: Receiver<FabricEvent>,
    /// The grant document for the fault server.
    pub grant: Grant,
    /// The peer key's seed the grant's keys are bound to.
    pub seed: [u8; 32],
}

/// Registers `regions` (`(addr, len)`) of process `pid` on a new loopback soft responder
/// and creates read-only keys bound to a fresh peer key, valid for `lease`.
pub fn serve(pid: i32, regions: &[(u64, u64)], lease: Duration) -> anyhow::Result<LocalSource> {
    let file = std::fs::File::open(format!("/proc/{pid}/mem"))
        .with_context(|| format!("opening /proc/{pid}/mem"))?;
    let source: Arc<dyn memgate_fabric::MemorySource> = Arc::new(ProcMemSource::new(file));
    let (sink, events) = event_channel();
    let ep = Endpoint::parse("tcp:127.0.0.1:0")?;
    let responder = SoftResponder::bind(&ep, sink)?;
    let key = memgate_policy::keys::SecretKey::generate().context("generating a peer key")?;
    let peer = *key.public().as_bytes();
    let mut id = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
        .map_err(|_| anyhow::anyhow!("no randomness for a grant id"))?;
    let expires = SystemTime::now() + lease;
    let mut out = Vec::new();
    for &(addr, len) in regions {
        let region = responder.register(source.clone(), addr, len)?;
        let spec = KeySpec {
            addr,
            len,
            access: Access::REMOTE_READ,
            peer,
            grant: id,
            expires,
        };
        let rkey = responder.create_key(&region, spec)?;
        out.push(GrantRegion { addr, len, rkey });
    }
    let grant = Grant {
        id: GrantId(id),
        endpoint: responder.endpoint(),
        peer: key.public().to_paserk(),
        access: memgate_proto::Access::Read,
        expires_unix: expires
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        regions: out,
    };
    Ok(LocalSource {
        responder,
        events,
        grant,
        seed: *key.seed(),
    })
}
