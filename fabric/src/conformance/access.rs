//! Cases about the key checks every READ goes through: rkey, range, access, expiry,
//! revocation and peer/grant binding, and the error state that follows a refusal.

use super::util::*;
use super::Provider;
use crate::{Access, FabricError, FabricEvent, WcStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// A READ with an rkey the responder never issued fails with a remote access error, is
/// reported to the broker for the connection's grant, and the connection enters the error
/// state. The report names the refused rkey when the provider can attribute it
/// ([`Provider::attributes_access_errors`]); otherwise it carries rkey 0, never a key
/// that was not used.
pub(super) fn wrong_rkey(p: &dyn Provider) -> R {
    let env = Env::new(p)?;
    let mem = Mem::new(64 << 10, 1)?;
    let (a, g) = (peer(1), grant(1));
    let region = env.register(p, &mem)?;
    let k = env.key(
        &region,
        KeyArgs::read(mem.addr(), mem.len() as u64, a.public, g),
    )?;
    let mut c = env.connect(g, a.seed)?;
    read_ok(&mut c, mem.addr(), mem.at(0, 4096), k)?;
    let bogus = k.wrapping_add(1).max(1);
    read_status(&mut c, mem.addr(), 4096, bogus, WcStatus::RemoteAccessError)?;
    ensure(c.is_error(), || {
        "no error state after a remote access error".into()
    })?;
    let want = if p.attributes_access_errors() {
        bogus
    } else {
        0
    };
    match env.event(|e| matches!(e, FabricEvent::AccessError { .. })) {
        Some(FabricEvent::AccessError { grant, rkey, .. }) if grant == g && rkey == want => Ok(()),
        Some(ev) => Err(format!(
            "the refused READ was reported as {ev:?}, expected grant {g:02x?} and rkey {want:#x}"
        )),
        None => Err("the broker was not told about the refused READ".into()),
    }
}

/// Exact-range keys: one byte before, one byte past, a range straddling the end and an
/// address that wraps around are all refused; the exact edges are served.
pub(super) fn out_of_range(p: &dyn Provider) -> R {
    let env = Env::new(p)?;
    let mem = Mem::new(64 << 10, 2)?;
    let (a, g) = (peer(2), grant(2));
    let region = env.register(p, &mem)?;
    let (koff, klen) = (8192usize, 16384usize);
    let base = mem.addr() + koff as u64;
    let k = env.key(&region, KeyArgs::read(base, klen as u64, a.public, g))?;
    // A key outside its region is refused at creation.
    let outside = KeyArgs::read(mem.addr() + mem.len() as u64 - 10, 20, a.public, g);
    ensure(
        matches!(
            env.resp.create_key(&region, outside.spec()),
            Err(FabricError::KeyOutsideRegion { .. })
        ),
        || "a key reaching past its region was created".into(),
    )?;
    let mut c = env.connect(g, a.seed)?;
    read_ok(&mut c, base, mem.at(koff, 1), k)?;
    read_ok(
        &mut c,
        base + klen as u64 - 1,
        mem.at(koff + klen - 1, 1),
        k,
    )?;
    read_ok(&mut c, base, mem.at(koff, klen), k)?;
    let bad: [(u64, u32); 5] = [
        (base - 1, 1),
        (base + klen as u64, 1),
        (base + klen as u64 - 100, 200),
        (base - 4096, 8192),
        (u64::MAX - 10, 4096),
    ];
    for (addr, len) in bad {
        let mut c = env.connect(g, a.seed)?;
        read_status(&mut c, addr, len, k, WcStatus::RemoteAccessError)?;
    }
    Ok(())
}

/// A READ through a key without REMOTE_READ is refused, and a key cannot be given more
/// access than its region.
pub(super) fn wrong_access(p: &dyn Provider) -> R {
    let env = Env::new(p)?;
    let mem = Mem::new(16 << 10, 3)?;
    let (a, g) = (peer(3), grant(3));
    let ro = env.register(p, &mem)?;
    ensure(ro.access() == Access::REMOTE_READ, || {
        format!("a read-only source registered with access {}", ro.access())
    })?;
    let mut rw = KeyArgs::read(mem.addr(), 4096, a.public, g);
    rw.access = Access::READ_WRITE;
    ensure(
        matches!(
            env.resp.create_key(&ro, rw.spec()),
            Err(FabricError::AccessNotAllowed { .. })
        ),
        || "a read-write key was created on a read-only region".into(),
    )?;
    let mut none = rw;
    none.access = Access::NONE;
    ensure(env.resp.create_key(&ro, none.spec()).is_err(), || {
        "a key without access was created".into()
    })?;
    // A write-only key on a writable registration of the same memory.
    let f = ctx(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/proc/self/mem"),
        "open /proc/self/mem read-write",
    )?;
    let src = p.source(std::sync::Arc::new(crate::ProcMemSource::new_writable(f)));
    let wr = ctx(
        env.resp.register(src, mem.addr(), mem.len() as u64),
        "register writable",
    )?;
    let mut wo = KeyArgs::read(mem.addr(), 4096, a.public, g);
    wo.access = Access::REMOTE_WRITE;
    let kw = env.key(&wr, wo)?;
    let kr = env.key(&ro, KeyArgs::read(mem.addr(), 4096, a.public, g))?;
    let mut c = env.connect(g, a.seed)?;
    served_then_refused(&mut c, &mem, kr, kw)
}

/// A key stops working at its expiry, mid-connection; expired keys cannot be created and
/// do not admit a connection.
pub(super) fn expired(p: &dyn Provider) -> R {
    let env = Env::new(p)?;
    let mem = Mem::new(16 << 10, 4)?;
    let (a, g) = (peer(4), grant(4));
    let region = env.register(p, &mem)?;
    let mut past = KeyArgs::read(mem.addr(), 4096, a.public, g).spec();
    past.expires = SystemTime::now() - Duration::from_secs(1);
    ensure(
        matches!(
            env.resp.create_key(&region, past),
            Err(FabricError::AlreadyExpired)
        ),
        || "a key that had already expired was created".into(),
    )?;
    let ttl = Duration::from_millis(1500);
    let mut ka = KeyArgs::read(mem.addr(), 4096, a.public, g);
    ka.ttl = ttl;
    let created = Instant::now();
    let k = env.key(&region, ka)?;
    let mut c = env.connect(g, a.seed)?;
    read_ok(&mut c, mem.addr(), mem.at(0, 4096), k)?;
    std::thread::sleep(
        (created + ttl + Duration::from_millis(50)).saturating_duration_since(Instant::now()),
    );
    read_status(&mut c, mem.addr(), 4096, k, WcStatus::RemoteAccessError)?;
    ensure(env.connect(g, a.seed).is_err(), || {
        "a connection was admitted for a grant whose only key expired".into()
    })
}

/// Revocation takes effect on the very next READ while a stream of READs is in flight:
/// the completions are Success…, one RemoteAccessError, then only Flushed. Deregistering
/// the region and revoking the whole grant have the same effect.
pub(super) fn revoked_mid_stream(p: &dyn Provider) -> R {
    let env = Env::new(p)?;
    let mem = Mem::new(256 << 10, 5)?;
    let (a, g) = (peer(5), grant(5));
    let region = env.register(p, &mem)?;
    let k = env.key(
        &region,
        KeyArgs::read(mem.addr(), mem.len() as u64, a.public, g),
    )?;
    let k2 = env.key(
        &region,
        KeyArgs::read(mem.addr(), mem.len() as u64, a.public, g),
    )?;
    let mut c = env.connect(g, a.seed)?;
    read_ok(&mut c, mem.addr(), mem.at(0, 4096), k)?;
    let served = AtomicUsize::new(0);
    let outcome = std::thread::scope(|s| {
        // Revoke once the stream is well under way (whatever the machine's speed).
        let revoker = s.spawn(|| {
            let deadline = Instant::now() + budget(p);
            while served.load(Ordering::Relaxed) < 32 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            env.resp.revoke(k)
        });
        let r = stream_until_error(&mut c, &mem, k, &served, budget(p));
        let rv = revoker.join().map_err(|_| "revoker panicked".to_string())?;
        ctx(rv, "revoke")?;
        r
    })?;
    ensure(outcome.0 >= 32, || {
        format!("only {} READs succeeded before the revocation", outcome.0)
    })?;
    ensure(
        matches!(env.resp.revoke(k), Err(FabricError::UnknownKey(_))),
        || "revoking a revoked key succeeded".into(),
    )?;
    // The other key of the grant still works on a new connection; then revoke the grant.
    let mut c = env.connect(g, a.seed)?;
    read_ok(&mut c, mem.addr() + 4096, mem.at(4096, 4096), k2)?;
    ensure(env.resp.revoke_grant(g) == 1, || {
        "revoke_grant did not count one key".into()
    })?;
    read_status(&mut c, mem.addr(), 4096, k2, WcStatus::RemoteAccessError)?;
    // Deregistration revokes every key on the region.
    let g2 = grant(5);
    let k3 = env.key(&region, KeyArgs::read(mem.addr(), 4096, a.public, g2))?;
    let mut c = env.connect(g2, a.seed)?;
    read_ok(&mut c, mem.addr(), mem.at(0, 4096), k3)?;
    ctx(env.resp.deregister(region), "deregister")?;
    read_status(&mut c, mem.addr(), 4096, k3, WcStatus::RemoteAccessError)
}

/// Keep up to 8 READs of 4 KiB in flight until one fails; check the completion order.
/// Returns (successes, flushed).
fn stream_until_error(
    c: &mut crate::Connection,
    mem: &Mem,
    rkey: u32,
    served: &AtomicUsize,
    budget: Duration,
) -> R<(usize, usize)> {
    let deadline = Instant::now() + budget;
    let pages = mem.len() / 4096;
    let (mut next, mut ok, mut flushed, mut failed) = (0u64, 0usize, 0usize, false);
    let mut out = Vec::new();
    while Instant::now() < deadline {
        while !failed && c.outstanding() < 8 {
            let off = (next as usize % pages) * 4096;
            ctx(
                c.post_read(next, mem.addr() + off as u64, 4096, rkey),
                "post_read",
            )?;
            next += 1;
        }
        out.clear();
        ctx(c.wait_completions(&mut out, Some(WAIT)), "wait_completions")?;
        for comp in &out {
            match comp.status {
                WcStatus::Success if !failed => {
                    let off = (comp.wr_id as usize % pages) * 4096;
                    ensure(&comp.data[..] == mem.at(off, 4096), || {
                        "data differs".into()
                    })?;
                    ok += 1;
                    served.store(ok, Ordering::Relaxed);
                }
                WcStatus::RemoteAccessError if !failed => failed = true,
                WcStatus::Flushed if failed => flushed += 1,
                st => return Err(format!("{st:?} out of order (failed={failed})")),
            }
        }
        if failed && c.outstanding() == 0 {
            return Ok((ok, flushed));
        }
    }
    Err("the revocation never took effect".into())
}

/// A key is bound to one peer and one grant: another peer key cannot connect for the
/// grant, and an authenticated peer cannot use a key of another peer or another grant.
pub(super) fn wrong_peer_key(p: &dyn Provider) -> R {
    let env = Env::new(p)?;
    let mem = Mem::new(16 << 10, 6)?;
    let (a, b, g, h) = (peer(6), peer(7), grant(6), grant(7));
    let region = env.register(p, &mem)?;
    let ka = env.key(&region, KeyArgs::read(mem.addr(), 4096, a.public, g))?;
    match env.connect(g, b.seed) {
        Err(_) => {}
        Ok(_) => return Err("a peer with no key in the grant was admitted".into()),
    }
    let kb = env.key(&region, KeyArgs::read(mem.addr(), 4096, b.public, g))?;
    let kh = env.key(&region, KeyArgs::read(mem.addr(), 4096, a.public, h))?;
    let mut c = env.connect(g, a.seed)?;
    served_then_refused(&mut c, &mem, ka, kb)?;
    let mut c = env.connect(g, a.seed)?;
    read_status(&mut c, mem.addr(), 4096, kh, WcStatus::RemoteAccessError)?;
    // And b, now holding a key of the grant, is served through its own key only.
    let mut c = env.connect(g, b.seed)?;
    served_then_refused(&mut c, &mem, kb, ka)
}

/// After a remote error every outstanding and later READ completes Flushed, in order;
/// commit is refused; a new connection works.
pub(super) fn error_state_then_flushed(p: &dyn Provider) -> R {
    let env = Env::new(p)?;
    let mem = Mem::new(64 << 10, 8)?;
    let (a, g) = (peer(8), grant(8));
    let region = env.register(p, &mem)?;
    let k = env.key(
        &region,
        KeyArgs::read(mem.addr(), mem.len() as u64, a.public, g),
    )?;
    let mut c = env.connect(g, a.seed)?;
    let plan: [(u64, u32); 5] = [(1, k), (2, k ^ 0x8000_0000), (3, k), (4, k), (5, k)];
    for (wr, key) in plan {
        ctx(
            c.post_read(wr, mem.addr() + wr * 4096, 4096, key),
            "post_read",
        )?;
    }
    let got = wait_n(&mut c, plan.len())?;
    let statuses: Vec<(u64, WcStatus)> = got.iter().map(|x| (x.wr_id, x.status)).collect();
    let want = vec![
        (1, WcStatus::Success),
        (2, WcStatus::RemoteAccessError),
        (3, WcStatus::Flushed),
        (4, WcStatus::Flushed),
        (5, WcStatus::Flushed),
    ];
    ensure(statuses == want, || {
        format!("completions {statuses:?}, expected {want:?}")
    })?;
    ensure(&got[0].data[..] == mem.at(4096, 4096), || {
        "first READ's data differs".into()
    })?;
    ensure(c.is_error(), || "not in the error state".into())?;
    read_status(&mut c, mem.addr(), 4096, k, WcStatus::Flushed)?;
    ensure(matches!(c.commit(g), Err(FabricError::ErrorState)), || {
        "commit succeeded in the error state".into()
    })?;
    let mut c = env.connect(g, a.seed)?;
    read_ok(&mut c, mem.addr(), mem.at(0, 4096), k)
}
