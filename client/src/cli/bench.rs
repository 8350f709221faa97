//! `memgate bench`: the fault server against a raw baseline, in one run on loopback. The
//! baseline is the same userfaultfd loop over plain TCP request/reply (no authentication,
//! no keys, see `transport::rawtcp`); memgate is the fabric soft provider with restricted
//! keys, served from the source's `/proc/PID/mem` exactly as memgated serves it. Measured:
//! demand-fault latency for random 4 KiB touches (prefetch off, so every touch is a fault),
//! and the time until every page is present for random, sequential and idle touchers.

use super::runner::{run_dest, spawn_target, DestRun, TempDir};
use crate::faultserve::Config;
use crate::localsrc;
use crate::transport::fabric::FabricConnector;
use crate::transport::rawtcp::{self, RawConnector};
use crate::transport::Connector;
use crate::workload::{Pattern, TargetInfo};
use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// `memgate bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Memory for the all-present runs.
    #[arg(long, default_value = "1G")]
    pub size: String,
    /// Memory for the demand-latency runs (every page is one fault).
    #[arg(long, default_value = "64M")]
    pub demand_size: String,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Prefetch READ size in bytes (both sides).
    #[arg(long, default_value_t = Config::default().chunk)]
    pub chunk: usize,
    /// Prefetch READs in flight (both sides).
    #[arg(long, default_value_t = Config::default().depth)]
    pub depth: usize,
    /// Prefetch connections (both sides).
    #[arg(long, default_value_t = Config::default().prefetch_conns)]
    pub conns: usize,
}

struct Both {
    _raw_thread: std::thread::JoinHandle<()>,
    raw: RawConnector,
    fabric: FabricConnector,
    _local: localsrc::LocalSource,
    regions_fabric: Vec<(u64, u64, u32)>,
    regions_raw: Vec<(u64, u64, u32)>,
}

fn serve_both(info: &TargetInfo) -> anyhow::Result<Both> {
    let mem = Arc::new(std::fs::File::open(format!("/proc/{}/mem", info.pid))?);
    let lo = info.regions.iter().map(|r| r.addr).min().unwrap_or(0);
    let hi = info
        .regions
        .iter()
        .map(|r| r.addr + r.len)
        .max()
        .unwrap_or(0);
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let t = std::thread::spawn(move || rawtcp::serve(l, mem, lo, hi));
    let spans: Vec<(u64, u64)> = info.regions.iter().map(|r| (r.addr, r.len)).collect();
    let local = localsrc::serve(info.pid, &spans, Duration::from_secs(3600))?;
    let fabric = FabricConnector::new(&local.grant.endpoint, local.grant.id.0, local.seed)?;
    Ok(Both {
        _raw_thread: t,
        raw: RawConnector(addr),
        fabric,
        regions_fabric: local
            .grant
            .regions
            .iter()
            .map(|r| (r.addr, r.len, r.rkey))
            .collect(),
        regions_raw: spans.iter().map(|&(a, l)| (a, l, 0)).collect(),
        _local: local,
    })
}

fn one(
    a: &BenchArgs,
    info: &TargetInfo,
    c: &dyn Connector,
    regions: &[(u64, u64, u32)],
    pattern: Pattern,
    no_prefetch: bool,
    dir: &TempDir,
) -> anyhow::Result<Value> {
    let cfg = Config {
        no_prefetch,
        chunk: a.chunk.clamp(crate::PAGE, 4 << 20),
        depth: a.depth.max(1),
        prefetch_conns: a.conns.clamp(1, 8),
        ..Config::default()
    };
    let (self0, thread0) = (cpu_s(libc::RUSAGE_SELF), cpu_s(libc::RUSAGE_THREAD));
    let (r, d) = run_dest(
        info,
        DestRun {
            connector: c,
            regions,
            cfg,
            pattern,
            dir: dir.path(),
            progress: false,
            verify_after: true,
            touch_delay_us: 0,
            started: None,
        },
    )?;
    let (self1, thread1) = (cpu_s(libc::RUSAGE_SELF), cpu_s(libc::RUSAGE_THREAD));
    if d.mismatches > 0 || d.pages_verified != r.pages_total {
        anyhow::bail!(
            "benchmark run verified {} pages, {} wrong",
            d.pages_verified,
            d.mismatches
        );
    }
    Ok(json!({
        "all_present_s": r.all_present_s,
        "fault_p50_us": r.fault_p50_us,
        "fault_p99_us": r.fault_p99_us,
        "touch_p50_us": d.touch_p50_us,
        "touch_p99_us": d.touch_p99_us,
        "pages_on_demand": r.pages_on_demand,
        "server_cpu_s": thread1 - thread0,
        "source_cpu_s": (self1 - self0) - (thread1 - thread0),
    }))
}

/// User + system CPU seconds of this process (`RUSAGE_SELF`) or this thread
/// (`RUSAGE_THREAD`): on a loaded machine the CPU a run costs is steadier than its wall time.
fn cpu_s(who: libc::c_int) -> f64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes into it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable rusage for the duration of the call.
    if unsafe { libc::getrusage(who, &mut u) } != 0 {
        return f64::NAN;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// The 1-minute load average (the benchmark's figures depend on what else runs).
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

/// Runs `memgate bench`.
pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let size = memgate_policy::size::parse_bytes(&a.size).context("--size")?;
    let dsize = memgate_policy::size::parse_bytes(&a.demand_size).context("--demand-size")?;
    let dir = TempDir::new("memgate-bench")?;
    let say = |m: String| {
        if !a.json {
            eprintln!("memgate bench: {m}");
        }
    };
    // Demand latency: prefetch off, random touches, every page a fault.
    say(format!(
        "demand faults: {} random 4 KiB touches per side",
        dsize / 4096
    ));
    let (_t, info) = spawn_target(dsize, 11)?;
    let b = serve_both(&info)?;
    let raw_d = one(
        &a,
        &info,
        &b.raw,
        &b.regions_raw,
        Pattern::Random,
        true,
        &dir,
    )?;
    let mg_d = one(
        &a,
        &info,
        &b.fabric,
        &b.regions_fabric,
        Pattern::Random,
        true,
        &dir,
    )?;
    drop(b);
    drop(_t);
    // All present: prefetch on, three touchers, alternating sides.
    let (_t, info) = spawn_target(size, 12)?;
    let b = serve_both(&info)?;
    let mut raw_all = serde_json::Map::new();
    let mut mg_all = serde_json::Map::new();
    for p in [Pattern::Random, Pattern::Seq, Pattern::Idle] {
        let name = format!("{p:?}").to_lowercase();
        say(format!(
            "all-present, {name} toucher, {}",
            memgate_policy::size::format_bytes(size)
        ));
        raw_all.insert(
            name.clone(),
            one(&a, &info, &b.raw, &b.regions_raw, p, false, &dir)?,
        );
        mg_all.insert(
            name,
            one(&a, &info, &b.fabric, &b.regions_fabric, p, false, &dir)?,
        );
    }
    let ratio = |m: f64, r: f64| if r > 0.0 { m / r } else { f64::NAN };
    let present = |m: &serde_json::Map<String, Value>, p: &str| f(&m[p], "all_present_s");
    let per = |m: &serde_json::Map<String, Value>, k: &str| json!({ "random": f(&m["random"], k), "seq": f(&m["seq"], k), "idle": f(&m["idle"], k) });
    let out = json!({
        "loadavg_1m": loadavg(),
        "size_bytes": size,
        "demand_size_bytes": dsize,
        "baseline": {
            "demand_fault_p50_us": f(&raw_d, "touch_p50_us"),
            "demand_fault_p99_us": f(&raw_d, "touch_p99_us"),
            "server_fault_p50_us": f(&raw_d, "fault_p50_us"),
            "server_fault_p99_us": f(&raw_d, "fault_p99_us"),
            "all_present_s": { "random": present(&raw_all, "random"), "seq": present(&raw_all, "seq"), "idle": present(&raw_all, "idle") },
            "server_cpu_s": per(&raw_all, "server_cpu_s"),
            "source_cpu_s": per(&raw_all, "source_cpu_s"),
        },
        "memgate": {
            "demand_fault_p50_us": f(&mg_d, "touch_p50_us"),
            "demand_fault_p99_us": f(&mg_d, "touch_p99_us"),
            "server_fault_p50_us": f(&mg_d, "fault_p50_us"),
            "server_fault_p99_us": f(&mg_d, "fault_p99_us"),
            "all_present_s": { "random": present(&mg_all, "random"), "seq": present(&mg_all, "seq"), "idle": present(&mg_all, "idle") },
            "server_cpu_s": per(&mg_all, "server_cpu_s"),
            "source_cpu_s": per(&mg_all, "source_cpu_s"),
        },
        "ratio": {
            "demand_fault_p50": ratio(f(&mg_d, "touch_p50_us"), f(&raw_d, "touch_p50_us")),
            "demand_fault_p99": ratio(f(&mg_d, "touch_p99_us"), f(&raw_d, "touch_p99_us")),
            "all_present_random": ratio(present(&mg_all, "random"), present(&raw_all, "random")),
            "all_present_seq": ratio(present(&mg_all, "seq"), present(&raw_all, "seq")),
            "all_present_idle": ratio(present(&mg_all, "idle"), present(&raw_all, "idle")),
        },
    });
    if a.json {
        println!("{out}");
        return Ok(());
    }
    println!(
        "  {:<34} {:>12} {:>12} {:>7}",
        "", "baseline", "memgate", "ratio"
    );
    let row = |k: &str, r: f64, m: f64, unit: &str| {
        println!(
            "  {k:<34} {:>9.1} {unit:<2} {:>9.1} {unit:<2} {:>7.2}",
            r,
            m,
            ratio(m, r)
        );
    };
    let (rb, mb) = (&out["baseline"], &out["memgate"]);
    row(
        "demand fault p50 (toucher)",
        f(rb, "demand_fault_p50_us"),
        f(mb, "demand_fault_p50_us"),
        "µs",
    );
    row(
        "demand fault p99 (toucher)",
        f(rb, "demand_fault_p99_us"),
        f(mb, "demand_fault_p99_us"),
        "µs",
    );
    for p in ["random", "seq", "idle"] {
        row(
            &format!("all present, {p}"),
            present(&raw_all, p) * 1e3,
            present(&mg_all, p) * 1e3,
            "ms",
        );
    }
    for p in ["random", "seq", "idle"] {
        row(
            &format!("CPU, fault server + source, {p}"),
            (f(&raw_all[p], "server_cpu_s") + f(&raw_all[p], "source_cpu_s")) * 1e3,
            (f(&mg_all[p], "server_cpu_s") + f(&mg_all[p], "source_cpu_s")) * 1e3,
            "ms",
        );
    }
    println!("  (1-minute load average {:.2})", f(&out, "loadavg_1m"));
    Ok(())
}
