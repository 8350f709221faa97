//! Admission benchmark: request → grant latency (p50/p99) and exports per second from one
//! client against the real `memgated` binary (hardened, audit log on), next to two
//! baselines measured in the same run on the same machine:
//!
//! - one Ed25519 signature verification (the token check's unavoidable cost), and
//! - one `SOCK_SEQPACKET` round trip carrying three fds to another thread that closes them
//!   and answers (the transport's unavoidable cost).
//!
//! Goals: p50 ≤ 0.3 ms and ≥ 5,000 exports/s. Run with
//! `cargo bench -p memgated --bench admission` (`MEMGATE_BENCH_N` sets the sample count).

#[path = "../tests/support/mod.rs"]
mod support;

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use memgate_proto::transport::{recv_frame, send_frame};
use memgate_proto::{ExportRequest, RegionSelection, RegionSpec, Request, Response};
use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType};
use support::*;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let total: Duration = v.iter().sum();
    Stats {
        p50: percentile(&v, 0.5),
        p99: percentile(&v, 0.99),
        mean: total / (v.len().max(1) as u32),
    }
}

fn bench_verify(n: usize) -> Stats {
    let key = memgate_policy::keys::SecretKey::generate().expect("key");
    let msg = vec![0x5au8; 400];
    let sig = key.sign(&msg);
    let public = key.public();
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let ok = public.verify(&msg, &sig);
        v.push(t.elapsed());
        assert!(ok);
    }
    stats(v)
}

fn bench_rpc(n: usize, fds: &[OwnedFd]) -> Stats {
    let (a, b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .expect("socketpair");
    let server = std::thread::spawn(move || {
        let mut buf = vec![0u8; memgate_proto::MAX_MESSAGE];
        let reply = vec![0u8; 400];
        loop {
            match recv_frame(b.as_fd(), &mut buf, RecvFlags::empty()) {
                Ok(got) if got.len > 0 => {
                    drop(got.fds);
                    if send_frame(b.as_fd(), &reply, &[]).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    });
    let frame = vec![0u8; 600];
    let mut buf = vec![0u8; memgate_proto::MAX_MESSAGE];
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        send_frame(a.as_fd(), &frame, &borrowed).expect("send");
        recv_frame(a.as_fd(), &mut buf, RecvFlags::empty()).expect("recv");
        v.push(t.elapsed());
    }
    drop(a);
    let _ = server.join();
    stats(v)
}

/// CPU time the broker's threads have used so far (sum of `/proc/<pid>/task/*/schedstat`
/// run times): the broker's own cost per export, much less sensitive to other load on the
/// machine than wall-clock latency.
fn broker_cpu(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

fn export_req(token: String, target: &Target) -> Request {
    Request::Export(ExportRequest {
        token,
        regions: RegionSelection::List(vec![RegionSpec {
            addr: target.addr,
            len: PAGE,
        }]),
        access: memgate_proto::Access::Read,
        lease_secs: 600,
        revoke_on_disconnect: false,
    })
}

fn main() {
    if let Ok(spec) = std::env::var("MEMGATE_TEST_TARGET") {
        target_main(&spec);
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing special: run a
    // short smoke version then.
    let n: usize = std::env::var("MEMGATE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if std::env::args().any(|a| a == "--bench") {
            3000
        } else {
            50
        });

    let pki = Pki::generate();
    let mut spec = PolicySpec::new();
    spec.limits = "grants_per_uid = 1000000\nbytes_per_uid = 1099511627776\n\
                   requests_per_second_per_uid = 1000000\n"
        .into();
    let mut broker = Broker::start_with(
        &pki,
        &spec.toml(&pki),
        "[limits]\nmax_grants = 1000000\nreplay_capacity = 1000000\n",
    )
    .expect("broker");
    let target = Target::spawn(test_uid(900), 1).expect("target");
    let fds = target.fds();
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let mut tspec = TokenSpec::for_target(&target);
    tspec.valid_for = time::Duration::minutes(30);
    // Tokens are single use: mint them all before measuring.
    let tokens: Vec<String> = (0..3 * n).map(|_| pki.token(&tspec)).collect();
    let mut tokens = tokens.into_iter();
    let mut client = broker.client();

    // Warm-up (connections, caches, the broker's first allocations).
    for _ in 0..(n / 10).max(5) {
        let _ = bench_verify(1);
    }

    let verify = bench_verify(n);
    let rpc = bench_rpc(n, &fds);

    // Latency: export one page, then revoke it (not timed), so usage stays flat.
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let req = export_req(tokens.next().expect("token"), &target);
        let t = Instant::now();
        let r = client.call(&req, &borrowed).expect("export");
        lat.push(t.elapsed());
        let Response::Grant(g) = r else {
            panic!("export refused: {r:?}");
        };
        match client
            .call(&Request::Revoke { grant: g.id }, &[])
            .expect("revoke")
        {
            Response::WaitResult(_) => {}
            other => panic!("revoke failed: {other:?}"),
        }
    }
    let export = stats(lat);

    // Throughput: back-to-back exports from one client.
    let reqs: Vec<Request> = (0..n)
        .map(|_| export_req(tokens.next().expect("token"), &target))
        .collect();
    let broker_pid = broker.child.id();
    let cpu0 = broker_cpu(broker_pid);
    let t = Instant::now();
    for req in &reqs {
        match client.call(req, &borrowed).expect("export") {
            Response::Grant(_) => {}
            other => panic!("export refused: {other:?}"),
        }
    }
    let elapsed = t.elapsed();
    let per_sec = n as f64 / elapsed.as_secs_f64();
    let cpu_per_export = (broker_cpu(broker_pid).saturating_sub(cpu0)) / (n.max(1) as u32);

    // Pipelined: one client keeps WINDOW requests in flight on its connection (replies
    // come back in order), so the broker's capacity shows rather than two wake-ups per
    // request.
    const WINDOW: usize = 16;
    let frames: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            export_req(tokens.next().expect("token"), &target)
                .encode()
                .expect("encode")
        })
        .collect();
    let t = Instant::now();
    let (mut sent, mut got) = (0usize, 0usize);
    while got < n {
        while sent < n && sent - got < WINDOW {
            send_frame(client.socket(), &frames[sent], &borrowed).expect("send");
            sent += 1;
        }
        match client.recv().expect("reply") {
            Response::Grant(_) => got += 1,
            other => panic!("export refused: {other:?}"),
        }
    }
    let piped_per_sec = n as f64 / t.elapsed().as_secs_f64();

    let floor = verify.p50 + rpc.p50;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "memgated admission benchmark, {n} samples each; load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "baseline  ed25519 verify (400 B)           p50 {:7.1} us  p99 {:7.1} us",
        us(verify.p50),
        us(verify.p99)
    );
    println!(
        "baseline  seqpacket RPC with 3 fds         p50 {:7.1} us  p99 {:7.1} us",
        us(rpc.p50),
        us(rpc.p99)
    );
    println!(
        "memgated  export -> grant (1 page)         p50 {:7.1} us  p99 {:7.1} us  mean {:7.1} us   goal p50 <= 300 us: {}",
        us(export.p50),
        us(export.p99),
        us(export.mean),
        if export.p50 <= Duration::from_micros(300) { "met" } else { "MISSED" }
    );
    println!(
        "memgated  exports/s, one client, 1 in flight {per_sec:9.0}            goal >= 5000: {}",
        if per_sec >= 5000.0 { "met" } else { "MISSED" }
    );
    println!(
        "memgated  exports/s, one client, {WINDOW} in flight {piped_per_sec:9.0}            goal >= 5000: {}",
        if piped_per_sec >= 5000.0 { "met" } else { "MISSED" }
    );
    println!(
        "memgated  broker CPU per export (1 in flight) {:7.1} us   (capacity {:.0} exports/s per core)",
        us(cpu_per_export),
        1.0 / cpu_per_export.as_secs_f64().max(1e-9)
    );
    println!(
        "ratio     export p50 / (verify p50 + RPC p50) = {:.2}",
        export.p50.as_secs_f64() / floor.as_secs_f64().max(1e-9)
    );
    let _ = broker.terminate(Duration::from_secs(10));
    drop(target);
}
