//! Cases about the data path: byte-exact data, large and many concurrent READs, a target
//! that exits mid-stream, and COMMIT reaching the broker.

use super::util::*;
use super::{Provider, TargetProcess};
use crate::{Connection, FabricError, FabricEvent, ProcMemSource, WcStatus, MAX_READ_LEN, MAX_SGE};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Odd offsets and lengths, page crossings, single bytes, the whole key, and a
/// scatter-gather READ across two keys all return exactly the target's bytes.
pub(super) fn byte_exact_data(p: &dyn Provider) -> R {
    let env = Env::new(p)?;
    let len = (1 << 20) + 123;
    let mem = Mem::new(len, 10)?;
    let (a, g) = (peer(10), grant(10));
    let region = env.register(p, &mem)?;
    let k = env.key(&region, KeyArgs::read(mem.addr(), len as u64, a.public, g))?;
    let k2 = env.key(&region, KeyArgs::read(mem.addr() + 4096, 8192, a.public, g))?;
    let mut c = env.connect(g, a.seed)?;
    let cases: [(usize, usize); 8] = [
        (0, 1),
        (len - 1, 1),
        (4095, 2),
        (1, 4096),
        (12345, 65537),
        (0, len),
        (len - 300_000, 300_000),
        (777, 3 * 4096 + 5),
    ];
    for (off, n) in cases {
        read_ok(&mut c, mem.addr() + off as u64, mem.at(off, n), k)?;
    }
    let segs = [
        (mem.addr() + 100, 50u32, k),
        (mem.addr() + 4096 + 10, 8000, k2),
        (mem.addr() + len as u64 - 7, 7, k),
    ];
    ctx(c.post_read_sg(42, &segs), "post_read_sg")?;
    let got = wait_n(&mut c, 1)?;
    let mut want = Vec::new();
    want.extend_from_slice(mem.at(100, 50));
    want.extend_from_slice(mem.at(4096 + 10, 8000));
    want.extend_from_slice(mem.at(len - 7, 7));
    ensure(
        got[0].wr_id == 42 && got[0].status == WcStatus::Success,
        || format!("scatter-gather READ: {:?}", got[0].status),
    )?;
    ensure(got[0].data[..] == want[..], || {
        "scatter-gather data differs".into()
    })?;
    // One bad segment fails the whole request, with no data.
    let bad = [(mem.addr(), 10u32, k2), (mem.addr() + 4096, 10, k2)];
    ctx(c.post_read_sg(43, &bad), "post_read_sg")?;
    let got = wait_n(&mut c, 1)?;
    ensure(
        got[0].status == WcStatus::RemoteAccessError && got[0].data.is_empty(),
        || {
            format!(
                "scatter-gather READ with a bad segment: {:?}",
                got[0].status
            )
        },
    )
}

/// The largest READ (and scatter-gather total), and several 2 MiB READs in flight.
/// Requests above the maximum are refused locally without harming the connection.
pub(super) fn large_reads(p: &dyn Provider) -> R {
    let env = Env::new(p)?;
    let len = 3 * MAX_READ_LEN as usize;
    let mem = Mem::new(len, 11)?;
    let (a, g) = (peer(11), grant(11));
    let region = env.register(p, &mem)?;
    let k = env.key(&region, KeyArgs::read(mem.addr(), len as u64, a.public, g))?;
    let mut c = env.connect(g, a.seed)?;
    let max = MAX_READ_LEN as usize;
    read_ok(&mut c, mem.addr() + 1, mem.at(1, max), k)?;
    ensure(
        matches!(
            c.post_read(1, mem.addr(), MAX_READ_LEN + 1, k),
            Err(FabricError::BadLength { .. })
        ),
        || "a READ above the maximum was accepted".into(),
    )?;
    let too_many: Vec<(u64, u32, u32)> = (0..=MAX_SGE as u64)
        .map(|i| (mem.addr() + i, 1, k))
        .collect();
    ensure(c.post_read_sg(1, &too_many).is_err(), || {
        "too many segments accepted".into()
    })?;
    let seg = MAX_READ_LEN / MAX_SGE as u32;
    let segs: Vec<(u64, u32, u32)> = (0..MAX_SGE as u64)
        .map(|i| (mem.addr() + i * 2 * seg as u64, seg, k))
        .collect();
    ctx(c.post_read_sg(7, &segs), "post_read_sg")?;
    let got = wait_n(&mut c, 1)?;
    ensure(got[0].status == WcStatus::Success, || {
        format!("big scatter-gather: {:?}", got[0].status)
    })?;
    for (i, chunk) in got[0].data.chunks(seg as usize).enumerate() {
        ensure(chunk == mem.at(i * 2 * seg as usize, seg as usize), || {
            format!("segment {i} differs")
        })?;
    }
    let two = 2usize << 20;
    let depth = 8.min(c.max_outstanding());
    for i in 0..depth as u64 {
        let off = (i as usize * 1_234_567) % (len - two);
        ctx(
            c.post_read(i, mem.addr() + off as u64, two as u32, k),
            "post_read",
        )?;
    }
    for comp in wait_n(&mut c, depth)? {
        let off = (comp.wr_id as usize * 1_234_567) % (len - two);
        ensure(
            comp.status == WcStatus::Success && comp.data[..] == *mem.at(off, two),
            || {
                format!(
                    "2 MiB READ {}: {:?} or data differs",
                    comp.wr_id, comp.status
                )
            },
        )?;
    }
    Ok(())
}

/// Four connections, each keeping its queue full of READs of varied sizes at varied
/// offsets, every completion checked against the target's bytes and its wr_id.
pub(super) fn many_concurrent_reads(p: &dyn Provider) -> R {
    let env = Env::new(p)?;
    let len = 4 << 20;
    let mem = Mem::new(len, 12)?;
    let g = grant(12);
    let region = env.register(p, &mem)?;
    let peers: Vec<_> = (0..4).map(|i| peer(20 + i)).collect();
    let mut keys = Vec::new();
    for pr in &peers {
        keys.push(env.key(&region, KeyArgs::read(mem.addr(), len as u64, pr.public, g))?);
    }
    let budget = budget(p);
    let results: Vec<R<usize>> = std::thread::scope(|s| {
        let hs: Vec<_> = peers
            .iter()
            .zip(&keys)
            .enumerate()
            .map(|(t, (pr, &k))| {
                let (env, mem) = (&env, &mem);
                s.spawn(move || -> R<usize> {
                    let mut c = env.connect(g, pr.seed)?;
                    pump_random(&mut c, mem, k, t as u64 + 1, 600, budget)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("reader thread panicked".into()))
            })
            .collect()
    });
    for r in results {
        r?;
    }
    Ok(())
}

/// Issue `total` READs (sizes 1 B..64 KiB) keeping the queue full; verify each; all
/// within `budget`.
fn pump_random(
    c: &mut Connection,
    mem: &Mem,
    k: u32,
    salt: u64,
    total: u64,
    budget: Duration,
) -> R<usize> {
    let plan = |wr: u64| {
        let x = wr
            .wrapping_add(salt << 32)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let n = 1 + (x >> 48) as usize % (64 << 10);
        let off = (x as usize >> 3) % (mem.len() - n);
        (off, n)
    };
    let deadline = Instant::now() + budget;
    let (mut next, mut done) = (0u64, 0usize);
    let mut out = Vec::new();
    while (done as u64) < total {
        if Instant::now() > deadline {
            return Err(format!("only {done} of {total} READs within {budget:?}"));
        }
        while next < total && c.outstanding() < c.max_outstanding() {
            let (off, n) = plan(next);
            ctx(
                c.post_read(next, mem.addr() + off as u64, n as u32, k),
                "post_read",
            )?;
            next += 1;
        }
        out.clear();
        ctx(c.wait_completions(&mut out, Some(WAIT)), "wait_completions")?;
        for comp in &out {
            ensure(comp.wr_id == done as u64, || {
                format!("completion {} out of order", comp.wr_id)
            })?;
            let (off, n) = plan(comp.wr_id);
            ensure(
                comp.status == WcStatus::Success && comp.data[..] == *mem.at(off, n),
                || format!("READ {}: {:?} or data differs", comp.wr_id, comp.status),
            )?;
            done += 1;
        }
    }
    Ok(done)
}

/// A real target process read through its `/proc/PID/mem`; it is killed mid-stream.
/// Every successful READ is byte-exact and none succeeds once an error was seen; the
/// first error after the exit is the provider's "target gone" status, the rest are
/// flushed; a new connection never gets data either. The status is
/// `RemoteOperationError` (the key is live, its memory unreadable), or
/// `RemoteAccessError` for a provider whose keys die with the target
/// ([`Provider::target_exit_revokes_keys`]; a new connection may then be refused).
pub(super) fn target_exit_during_reads(p: &dyn Provider) -> R {
    let env = Env::new(p)?;
    let mut target = ctx(TargetProcess::spawn(), "spawn target")?;
    let map = ctx(target.text_mapping(), "find the target's text mapping")?;
    let want = ctx(map.file_bytes(), "read the target's binary")?;
    let src = p.source(Arc::new(ProcMemSource::new(ctx(
        target.mem(),
        "open /proc/PID/mem",
    )?)));
    let (a, g) = (peer(13), grant(13));
    let region = ctx(
        env.resp.register(src, map.addr, map.len),
        "register target memory",
    )?;
    let k = env.key(&region, KeyArgs::read(map.addr, map.len, a.public, g))?;
    let gone = if p.target_exit_revokes_keys() {
        WcStatus::RemoteAccessError
    } else {
        WcStatus::RemoteOperationError
    };
    let mut c = env.connect(g, a.seed)?;
    let chunk = 4096usize.min(want.len());
    let slots = want.len() / chunk;
    let deadline = Instant::now() + budget(p);
    let (mut next, mut ok, mut failed) = (0u64, 0usize, false);
    let mut out = Vec::new();
    while Instant::now() < deadline {
        while !failed && c.outstanding() < 4 {
            let off = (next as usize % slots) * chunk;
            ctx(
                c.post_read(next, map.addr + off as u64, chunk as u32, k),
                "post_read",
            )?;
            next += 1;
        }
        out.clear();
        ctx(c.wait_completions(&mut out, Some(WAIT)), "wait_completions")?;
        for comp in &out {
            match (failed, comp.status) {
                (false, WcStatus::Success) => {
                    let off = (comp.wr_id as usize % slots) * chunk;
                    ensure(comp.data[..] == want[off..off + chunk], || {
                        format!("READ {} differs from the target's memory", comp.wr_id)
                    })?;
                    ok += 1;
                    if ok == 20 {
                        target.kill();
                    }
                }
                (false, st) if st == gone && ok >= 20 => failed = true,
                (true, WcStatus::Flushed) => {}
                (f, st) => {
                    return Err(format!(
                        "{st:?} after {ok} successes (failed={f}); expected {gone:?} once the target exited"
                    ))
                }
            }
        }
        if failed && c.outstanding() == 0 {
            return match env.connect(g, a.seed) {
                Ok(mut c) => read_status(&mut c, map.addr, chunk as u32, k, gone),
                Err(_) if p.target_exit_revokes_keys() => Ok(()),
                Err(e) => Err(format!("no new connection after the target exited: {e}")),
            };
        }
    }
    Err(format!(
        "no error completion after the target exited ({ok} successes)"
    ))
}

/// COMMIT from the authenticated peer reaches the broker as an event carrying the grant
/// and the peer key, and is acknowledged; a COMMIT naming another grant is refused and
/// not reported. Connect and disconnect are reported too.
pub(super) fn commit_delivered_as_event(p: &dyn Provider) -> R {
    let env = Env::new(p)?;
    let mem = Mem::new(8192, 14)?;
    let (a, g, other) = (peer(14), grant(14), grant(15));
    let region = env.register(p, &mem)?;
    let k = env.key(&region, KeyArgs::read(mem.addr(), 8192, a.public, g))?;
    let mut c = env.connect(g, a.seed)?;
    env.expect(FabricEvent::Connected {
        grant: g,
        peer: a.public,
    })?;
    read_ok(&mut c, mem.addr(), mem.at(0, 8192), k)?;
    ensure(
        matches!(c.commit(other), Err(FabricError::CommitRejected(_))),
        || "a COMMIT for another grant was accepted".into(),
    )?;
    ctx(c.commit(g), "commit")?;
    let ev = env.event(|e| matches!(e, FabricEvent::Commit { .. }));
    ensure(
        ev == Some(FabricEvent::Commit {
            grant: g,
            peer: a.public,
        }),
        || format!("commit event {ev:?}"),
    )?;
    // The connection stays usable after a commit.
    read_ok(&mut c, mem.addr(), mem.at(0, 10), k)?;
    drop(c);
    env.expect(FabricEvent::Disconnected {
        grant: g,
        peer: a.public,
    })
}
