//! Helpers the conformance cases share: a fresh responder with its event channel, keys
//! and grants, patterned memory of this process exported through `/proc/self/mem`, and
//! blocking READ helpers with deadlines.

use super::Provider;
use crate::{
    event_channel, public_key_from_seed, Access, Completion, Connection, Endpoint, FabricEvent,
    KeySpec, MemorySource, ProcMemSource, Region, Responder, WcStatus,
};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Result type of a case.
pub(super) type R<T = ()> = Result<T, String>;

/// How long any single wait in a case may take.
pub(super) const WAIT: Duration = Duration::from_secs(10);

/// The budget of a whole stream of READs: [`WAIT`] scaled by the provider's
/// [`Provider::time_scale`].
pub(super) fn budget(p: &dyn Provider) -> Duration {
    WAIT.saturating_mul(p.time_scale().max(1))
}

/// Turn any displayable error into a case failure with context.
pub(super) fn ctx<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> R<T> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Fail with `msg` unless `cond`.
pub(super) fn ensure(cond: bool, msg: impl FnOnce() -> String) -> R {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

/// A responder of the provider under test, its endpoint and its events.
pub(super) struct Env {
    pub(super) resp: Box<dyn Responder>,
    pub(super) ep: Endpoint,
    pub(super) events: Mutex<Receiver<FabricEvent>>,
}

impl Env {
    pub(super) fn new(p: &dyn Provider) -> R<Env> {
        let (sink, events) = event_channel();
        let resp = ctx(p.responder(sink), "start responder")?;
        let ep = ctx(Endpoint::parse(&resp.endpoint()), "responder endpoint")?;
        Ok(Env {
            resp,
            ep,
            events: Mutex::new(events),
        })
    }

    /// Register `mem` (wrapped by the provider) and create one key over `addr..addr+len`.
    pub(super) fn key(&self, region: &Region, k: KeyArgs) -> R<u32> {
        ctx(self.resp.create_key(region, k.spec()), "create_key")
    }

    /// Register all of `mem`.
    pub(super) fn register(&self, p: &dyn Provider, mem: &Mem) -> R<Region> {
        ctx(
            self.resp
                .register(p.source(mem.source.clone()), mem.addr(), mem.len() as u64),
            "register",
        )
    }

    /// Connect as `seed` for `grant`.
    pub(super) fn connect(&self, grant: [u8; 16], seed: [u8; 32]) -> R<Connection> {
        ctx(Connection::connect(&self.ep, grant, seed), "connect")
    }

    /// Fail unless exactly `want` is reported within [`WAIT`].
    pub(super) fn expect(&self, want: FabricEvent) -> R {
        let what = format!("{want:?}");
        ensure(self.event(|e| *e == want).is_some(), || {
            format!("no {what} event")
        })
    }

    /// The first event matching `pred` within [`WAIT`].
    pub(super) fn event(&self, pred: impl Fn(&FabricEvent) -> bool) -> Option<FabricEvent> {
        let rx = self.events.lock().unwrap_or_else(|e| e.into_inner());
        super::expect_event(&rx, WAIT, pred)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.resp.shutdown();
    }
}

/// Arguments of a key, with sensible defaults.
#[derive(Clone, Copy)]
pub(super) struct KeyArgs {
    pub(super) addr: u64,
    pub(super) len: u64,
    pub(super) access: Access,
    pub(super) peer: [u8; 32],
    pub(super) grant: [u8; 16],
    pub(super) ttl: Duration,
}

impl KeyArgs {
    /// Read-only key over `addr..addr+len` for `peer` in `grant`, valid 60 s.
    pub(super) fn read(addr: u64, len: u64, peer: [u8; 32], grant: [u8; 16]) -> KeyArgs {
        KeyArgs {
            addr,
            len,
            access: Access::REMOTE_READ,
            peer,
            grant,
            ttl: Duration::from_secs(60),
        }
    }

    pub(super) fn spec(self) -> KeySpec {
        KeySpec {
            addr: self.addr,
            len: self.len,
            access: self.access,
            peer: self.peer,
            grant: self.grant,
            expires: SystemTime::now() + self.ttl,
        }
    }
}

/// A peer identity: seed and public key.
#[derive(Clone, Copy)]
pub(super) struct Peer {
    pub(super) seed: [u8; 32],
    pub(super) public: [u8; 32],
}

/// Deterministic distinct peers and grants per case (`n` picks one).
pub(super) fn peer(n: u8) -> Peer {
    let mut seed = [0x5a; 32];
    seed[0] = n;
    seed[31] = n.wrapping_mul(7);
    let public = public_key_from_seed(&seed).unwrap_or([0; 32]);
    Peer { seed, public }
}

/// A grant id unique to this process and `n`.
pub(super) fn grant(n: u8) -> [u8; 16] {
    static CTR: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let c = CTR.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut g = [0u8; 16];
    g[0] = n;
    g[4..8].copy_from_slice(&std::process::id().to_le_bytes());
    g[8..12].copy_from_slice(&c.to_le_bytes());
    g
}

/// Patterned memory of this process, exported through a real `/proc/self/mem` fd.
pub(super) struct Mem {
    data: Box<[u8]>,
    pub(super) source: Arc<dyn MemorySource>,
}

impl Mem {
    /// `len` bytes of a pattern that differs at every offset and between `salt`s.
    pub(super) fn new(len: usize, salt: u64) -> R<Mem> {
        let mut x = salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let data: Box<[u8]> = (0..len)
            .map(|_| {
                // xorshift64*: cheap, deterministic, no zero runs.
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect();
        let f = ctx(std::fs::File::open("/proc/self/mem"), "open /proc/self/mem")?;
        Ok(Mem {
            data,
            source: Arc::new(ProcMemSource::new(f)),
        })
    }
    pub(super) fn addr(&self) -> u64 {
        self.data.as_ptr() as u64
    }
    pub(super) fn len(&self) -> usize {
        self.data.len()
    }
    /// The bytes at offset `off`.
    pub(super) fn at(&self, off: usize, len: usize) -> &[u8] {
        &self.data[off..off + len]
    }
}

/// Wait until `n` completions have arrived (or [`WAIT`] passed).
pub(super) fn wait_n(c: &mut Connection, n: usize) -> R<Vec<Completion>> {
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "only {} of {n} completions within {WAIT:?}",
                out.len()
            ));
        }
        ctx(c.wait_completions(&mut out, Some(left)), "wait_completions")?;
    }
    Ok(out)
}

/// One READ, waited for.
pub(super) fn read1(c: &mut Connection, addr: u64, len: u32, rkey: u32) -> R<Completion> {
    ctx(c.post_read(1, addr, len, rkey), "post_read")?;
    let mut v = wait_n(c, 1)?;
    v.pop().ok_or_else(|| "no completion".to_string())
}

/// One READ that must succeed with exactly `want`.
pub(super) fn read_ok(c: &mut Connection, addr: u64, want: &[u8], rkey: u32) -> R {
    let len = u32::try_from(want.len()).map_err(|e| e.to_string())?;
    let comp = read1(c, addr, len, rkey)?;
    ensure(comp.status == WcStatus::Success, || {
        format!("READ {addr:#x}+{len}: {:?}, expected Success", comp.status)
    })?;
    ensure(&comp.data[..] == want, || {
        format!("READ {addr:#x}+{len}: data differs from target memory")
    })
}

/// Control, then attack: the first page of `mem` is served through `good`, then a READ of
/// it through `bad` is refused with `RemoteAccessError` and no data.
pub(super) fn served_then_refused(c: &mut Connection, mem: &Mem, good: u32, bad: u32) -> R {
    read_ok(c, mem.addr(), mem.at(0, 4096), good)?;
    read_status(c, mem.addr(), 4096, bad, WcStatus::RemoteAccessError)
}

/// One READ that must complete with `want` and no data.
pub(super) fn read_status(c: &mut Connection, addr: u64, len: u32, rkey: u32, want: WcStatus) -> R {
    let comp = read1(c, addr, len, rkey)?;
    ensure(comp.status == want, || {
        format!(
            "READ {addr:#x}+{len} rkey {rkey:#x}: {:?}, expected {want:?}",
            comp.status
        )
    })?;
    ensure(comp.data.is_empty(), || {
        "an error completion carried data".into()
    })
}
