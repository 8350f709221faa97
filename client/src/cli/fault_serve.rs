//! `memgate fault-serve`: pull a grant's pages into a destination through userfaultfd.
//! The destination is either a uffd handed over by a restorer on a Unix socket
//! (`--uffd-socket`) or a mirror mapping owned by this process (`--mirror`).

use crate::faultserve::{
    dest, Closed, Config, Engine, EngineError, Layout, OnFailure, Region, Report,
};
use crate::grant::{read_grant, read_peer_seed};
use crate::handover;
use crate::mem::Mapping;
use crate::transport::fabric::FabricConnector;
use crate::transport::rawtcp::RawConnector;
use crate::transport::Connector;
use crate::uffd::Uffd;
use anyhow::{bail, Context};
use clap::Args;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

/// `memgate fault-serve` options.
#[derive(Debug, Args)]
pub struct FaultServeArgs {
    /// Grant JSON as `memgate export` prints it (`-` for stdin).
    #[arg(long)]
    pub grant: Option<String>,
    /// Peer secret key file (PASERK k4.secret, from `memgate key gen --kind peer`).
    #[arg(long)]
    pub peer_key: Option<PathBuf>,
    /// Receive the destination's userfaultfd on this Unix socket (pid + fd via SCM_RIGHTS).
    #[arg(long, conflicts_with = "mirror")]
    pub uffd_socket: Option<PathBuf>,
    /// Pull into a mapping owned by this process (verification, benchmarks).
    #[arg(long)]
    pub mirror: bool,
    /// Source → destination address mapping, `SRC:DST:LEN` in hex (identity by default).
    #[arg(long = "map", value_name = "SRC:DST:LEN")]
    pub map: Vec<String>,
    /// With --mirror: afterwards compare the mirror byte for byte with /proc/PID/mem.
    #[arg(long, requires = "mirror")]
    pub verify_pid: Option<i32>,
    /// Prefetch READ size in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub chunk: usize,
    /// Prefetch READs in flight.
    #[arg(long, default_value_t = 4)]
    pub depth: usize,
    /// Serve demand faults only (not with --mirror, where nothing faults).
    #[arg(long)]
    pub no_prefetch: bool,
    /// What a failed migration does to the destination: `poison` its missing pages (any
    /// touch raises SIGBUS; Linux 6.6+, else it falls back to kill) or `kill` it at once.
    #[arg(long, value_enum, default_value = "poison")]
    pub on_failure: OnFailure,
    /// Print the final report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Baseline only: pull from a plain-TCP page server instead of the fabric.
    #[arg(long, hide = true)]
    pub raw: Option<SocketAddr>,
    /// Baseline only: regions `ADDR:LEN` (hex) served by --raw.
    #[arg(long, hide = true)]
    pub raw_region: Vec<String>,
}

fn hex(s: &str) -> anyhow::Result<u64> {
    let t = s.trim().trim_start_matches("0x");
    u64::from_str_radix(t, 16).with_context(|| format!("{s:?} is not a hex number"))
}

/// Parses `SRC:DST:LEN` entries.
pub fn parse_map(v: &[String]) -> anyhow::Result<Vec<(u64, u64, u64)>> {
    v.iter()
        .map(|m| {
            let p: Vec<&str> = m.split(':').collect();
            if p.len() != 3 {
                bail!("--map {m:?}: expected SRC:DST:LEN");
            }
            Ok((hex(p[0])?, hex(p[1])?, hex(p[2])?))
        })
        .collect()
}

/// Where pages come from.
pub struct Source {
    /// Source regions `(addr, len, rkey)`.
    pub regions: Vec<(u64, u64, u32)>,
    /// Connection factory.
    pub connector: Box<dyn Connector>,
    /// Lease end, if any.
    pub expires: Option<std::time::SystemTime>,
}

fn source(a: &FaultServeArgs) -> anyhow::Result<Source> {
    if let Some(raw) = a.raw {
        let regions = a
            .raw_region
            .iter()
            .map(|r| {
                let (x, y) = r.split_once(':').context("--raw-region ADDR:LEN")?;
                Ok((hex(x)?, hex(y)?, 0))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        return Ok(Source {
            regions,
            connector: Box::new(RawConnector(raw)),
            expires: None,
        });
    }
    let g = a.grant.as_deref().context("--grant is required")?;
    let grant = read_grant(g)?;
    let kp = a.peer_key.as_ref().context("--peer-key is required")?;
    let seed = read_peer_seed(kp)?;
    source_for_grant(&grant, seed)
}

/// The fabric source of a grant, authenticated with the peer key `seed`.
pub fn source_for_grant(grant: &memgate_proto::Grant, seed: [u8; 32]) -> anyhow::Result<Source> {
    let expires = std::time::UNIX_EPOCH + std::time::Duration::from_secs(grant.expires_unix);
    if std::time::SystemTime::now() >= expires {
        bail!("grant {} expired already", grant.id);
    }
    let connector = FabricConnector::new(&grant.endpoint, grant.id.0, seed)?;
    Ok(Source {
        regions: grant
            .regions
            .iter()
            .map(|r| (r.addr, r.len, r.rkey))
            .collect(),
        connector: Box::new(connector),
        expires: Some(expires),
    })
}

/// Translates source regions through a mapping (identity where none applies).
pub fn layout_for(src: &[(u64, u64, u32)], map: &[(u64, u64, u64)]) -> anyhow::Result<Layout> {
    let mut regions = Vec::new();
    for &(addr, len, rkey) in src {
        let dst = match map
            .iter()
            .find(|(s, _, l)| addr >= *s && addr + len <= s + l)
        {
            Some((s, d, _)) => d + (addr - s),
            None if map.is_empty() => addr,
            None => bail!("source region {addr:#x}+{len:#x} is not covered by the mapping"),
        };
        regions.push(Region {
            src: addr,
            dst,
            len,
            rkey,
        });
    }
    Ok(Layout::new(&regions)?)
}

fn config(a: &FaultServeArgs, expires: Option<std::time::SystemTime>) -> Config {
    Config {
        chunk: a.chunk.clamp(crate::PAGE, 4 << 20),
        depth: a.depth.max(1),
        no_prefetch: a.no_prefetch,
        on_failure: a.on_failure,
        expires,
        ..Config::default()
    }
}

/// What the responder says when no live key of the grant belongs to our peer key. It
/// cannot tell a revoked or expired grant (its keys are gone) from a wrong peer key, so the
/// explanation names both.
const NO_LIVE_KEY: &str = "no live key of this grant is bound to this peer key";

/// Rewords a connection refusal so that it covers every reason the responder may have had.
fn explain_refusal(e: &dyn std::fmt::Display) -> anyhow::Error {
    let text = e.to_string();
    anyhow::anyhow!(text.replace(
        NO_LIVE_KEY,
        "the grant's keys are revoked or expired, or this peer key is not the grant's"
    ))
}

/// Runs the engine with a progress bar (when stderr is a terminal). Returns the report, or
/// an error that says what the destination will see, and the status byte for the restorer.
pub fn drive(
    uffd: &Uffd,
    layout: Layout,
    connector: &dyn Connector,
    cfg: Config,
    watch: Option<OwnedFd>,
    progress: bool,
) -> (anyhow::Result<Report>, u8) {
    let total = layout.total() as u64;
    let mut engine = Engine::new(uffd, layout, connector, cfg, watch);
    if progress && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total * crate::PAGE as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} {bar:30} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        engine.set_progress(Box::new(move |done, _| {
            bar.set_position(done * crate::PAGE as u64);
            if done == total {
                bar.finish_and_clear();
            }
        }));
    }
    match engine.run() {
        Ok(o) => (Ok(o.report), handover::STATUS_COMPLETE),
        Err(e @ EngineError::DestinationGone(_)) => (Err(e.into()), handover::STATUS_FAILED),
        Err(e) => {
            let (how, status) = match &engine.closed {
                Some(c) => (closed_text(c), status_of(c)),
                None => (String::new(), handover::STATUS_UNSAFE),
            };
            // The engine's error already names the endpoint; say it once.
            let e = explain_refusal(&e);
            (
                Err(anyhow::anyhow!(
                    "migration failed: {e}; {how}; grant not committed"
                )),
                status,
            )
        }
    }
}

/// The status byte a failed run reports to the restorer.
fn status_of(c: &Closed) -> u8 {
    if c.is_safe() {
        handover::STATUS_FAILED
    } else {
        handover::STATUS_UNSAFE
    }
}

/// What a failed run did to keep the destination off zero pages, in operator terms.
fn closed_text(c: &Closed) -> String {
    let not_poisoned = |p: &Option<std::io::Error>| match p {
        Some(e) => format!("pages not poisoned ({})", poison_failure(e)),
        None => "pages not poisoned (--on-failure kill)".to_string(),
    };
    match c {
        Closed::Poisoned(n) => {
            format!("{n} missing pages poisoned: any access raises SIGBUS, never a zero page")
        }
        Closed::DestinationExited => "the destination exited while its missing pages were \
            being poisoned (an access to a poisoned page raises SIGBUS)"
            .to_string(),
        Closed::Killed { poison } => format!(
            "{}; the destination was killed (SIGKILL) so that it never runs on a zero page",
            not_poisoned(poison)
        ),
        Closed::Unsafe { poison, kill } => format!(
            "{} and the destination was not killed ({}): the restorer was told (status {}); \
             stop the destination now, its missing pages would read as zeros",
            not_poisoned(poison),
            match kill {
                Some(e) => e.to_string(),
                None => "no verified destination process to signal".to_string(),
            },
            handover::STATUS_UNSAFE
        ),
    }
}

/// A pidfd of the hand-over's destination process, if its address space shows it is the
/// one (every handed-over range registered with a userfaultfd). Otherwise the fault server
/// neither watches nor signals it, and says so.
pub fn destination_pidfd(pid: i32, layout: &Layout) -> Option<OwnedFd> {
    let ranges: Vec<(u64, u64)> = layout
        .dst_runs()
        .iter()
        .map(|r| (r.dst, (r.pages * crate::PAGE) as u64))
        .collect();
    match dest::verify(pid, &ranges) {
        Ok(fd) => Some(fd),
        Err(e) => {
            eprintln!(
                "memgate: not watching or signalling the hand-over's pid: {e}; if the \
                 migration fails on a kernel without UFFDIO_POISON, the restorer must stop \
                 the destination (status {})",
                handover::STATUS_UNSAFE
            );
            None
        }
    }
}

/// Why poisoning did not happen, in operator terms (EINVAL: a kernel before 6.6).
fn poison_failure(e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(libc::EINVAL) {
        format!("{e}: this kernel has no UFFDIO_POISON, which came with Linux 6.6")
    } else {
        e.to_string()
    }
}

/// Prints a report (table or JSON), with extra JSON fields.
pub fn print_report(r: &Report, json: bool, extra: serde_json::Value) {
    if json {
        let mut v = serde_json::to_value(r).unwrap_or_default();
        if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        println!("{v}");
    } else {
        print!("{}", r.table());
        if let serde_json::Value::Object(e) = extra {
            for (k, v) in e {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) if n.is_f64() => {
                        format!("{:.1}", n.as_f64().unwrap_or(0.0))
                    }
                    other => other.to_string(),
                };
                println!("  {:<29} {v}", k.replace('_', " "));
            }
        }
    }
}

/// Runs `memgate fault-serve`.
pub fn run(a: FaultServeArgs) -> anyhow::Result<()> {
    if a.mirror && a.no_prefetch {
        // Nothing touches the mirror, so no page would ever arrive: it would wait forever
        // (and never notice a revoked grant).
        bail!("--mirror needs prefetch: nothing faults on the mirror, so with --no-prefetch no page would ever be pulled");
    }
    let src = source(&a)?;
    let cfg = config(&a, src.expires);
    if a.mirror {
        return run_mirror(&a, &src, cfg);
    }
    let path = a
        .uffd_socket
        .as_ref()
        .context("give --uffd-socket PATH or --mirror")?;
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    let (sock, _) = listener.accept().context("accepting the restorer")?;
    let h = handover::recv(&sock)?;
    let map = if h.map.is_empty() {
        parse_map(&a.map)?
    } else {
        h.map.clone()
    };
    let layout = layout_for(&src.regions, &map)?;
    let watch = destination_pidfd(h.pid, &layout);
    let uffd = Uffd::from_fd(h.uffd, h.features);
    let (res, status) = drive(&uffd, layout, src.connector.as_ref(), cfg, watch, !a.json);
    let _ = handover::send_status(&sock, status);
    let r = res?;
    print_report(&r, a.json, serde_json::json!({}));
    Ok(())
}

fn run_mirror(a: &FaultServeArgs, src: &Source, cfg: Config) -> anyhow::Result<()> {
    let (r, check) = mirror(src, cfg, a.verify_pid, !a.json)?;
    let extra = match check {
        Some((verified, bad)) => {
            serde_json::json!({ "pages_verified": verified, "mismatches": bad })
        }
        None => serde_json::json!({}),
    };
    print_report(&r, a.json, extra);
    if let Some((_, bad)) = check {
        if bad > 0 {
            bail!("{bad} pages differ from the source");
        }
    }
    Ok(())
}

/// Pulls every page of `src` into mappings owned by this process; with `verify_pid`,
/// then compares them byte for byte with that process's memory read independently
/// through `/proc/PID/mem`. Returns the report and `(pages verified, pages differing)`.
pub fn mirror(
    src: &Source,
    cfg: Config,
    verify_pid: Option<i32>,
    progress: bool,
) -> anyhow::Result<(Report, Option<(u64, u64)>)> {
    // No non-cooperative events here: this process owns the mapping, and an UNMAP event
    // raised by our own munmap would wait for a reader that is that same thread.
    let uffd = Uffd::create(true, 0).context("userfaultfd(UFFD_USER_MODE_ONLY)")?;
    let mut maps = Vec::new();
    let mut map = Vec::new();
    for &(addr, len, _) in &src.regions {
        let m = Mapping::anon(len as usize)?;
        uffd.register_missing(m.addr(), len)
            .context("UFFDIO_REGISTER")?;
        map.push((addr, m.addr(), len));
        maps.push(m);
    }
    let layout = layout_for(&src.regions, &map)?;
    let r = drive(&uffd, layout, src.connector.as_ref(), cfg, None, progress).0?;
    let Some(pid) = verify_pid else {
        return Ok((r, None));
    };
    let mem = std::fs::File::open(format!("/proc/{pid}/mem"))
        .with_context(|| format!("opening /proc/{pid}/mem"))?;
    let (mut verified, mut bad) = (0u64, 0u64);
    let mut buf = vec![0u8; 1 << 20];
    for (m, &(addr, len, _)) in maps.iter().zip(&src.regions) {
        let mut off = 0u64;
        while off < len {
            let n = (len - off).min(buf.len() as u64) as usize;
            mem.read_exact_at(&mut buf[..n], addr + off)
                .with_context(|| format!("reading source {:#x}", addr + off))?;
            // SAFETY: `[m.addr()+off, +n)` lies inside mapping `m`, alive here, and every
            // page is present (the engine finished), so reading cannot fault.
            let mine = unsafe { std::slice::from_raw_parts(m.as_ptr().add(off as usize), n) };
            for (x, y) in mine.chunks(crate::PAGE).zip(buf[..n].chunks(crate::PAGE)) {
                verified += 1;
                if x != y {
                    bad += 1;
                }
            }
            off += n as u64;
        }
    }
    Ok((r, Some((verified, bad))))
}
