//! `memgate demo`: the whole flow on one machine with embedded defaults. It creates
//! temporary keys (admin, issuer, peer), writes and signs a policy, starts `memgated` (found
//! next to this binary) as a child on a temporary socket and a loopback fabric port, starts
//! a source workload that fills heap, an anonymous mapping and its stack with a verifiable
//! pattern and freezes, mints a token, asks for the export, and migrates the memory post-copy
//! into a destination workload that touches every page in the chosen order and checks every
//! byte. With `--target-pid` it migrates a real program's exportable memory into a mirror
//! and compares it with the source read independently.

use super::export::{request_export, wait_for};
use super::fault_serve::{mirror, print_report, source_for_grant};
use super::runner::{run_dest, spawn_target, DestRun, Reaped, TempDir};
use crate::faultserve::Config;
use crate::workload::Pattern;
use anyhow::{bail, Context};
use clap::Args;
use memgate_policy::{keys::SecretKey, minisign, token};
use memgate_proto::{Access, BrokerClient, RegionSelection, RegionSpec, Request, WaitState};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `memgate demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Memory to migrate (K, M, G suffixes).
    #[arg(long, default_value = "256M")]
    pub size: String,
    /// How the destination touches its pages.
    #[arg(long, value_enum, default_value = "random")]
    pub pattern: Pattern,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Migrate this running (ideally stopped) program's exportable memory instead of the
    /// built-in workload.
    #[arg(long)]
    pub target_pid: Option<i32>,
    /// Fabric endpoint memgated listens on: `tcp:IP:PORT`, or `rdma:IP:PORT` (the IP of an
    /// RDMA device) to serve through the verbs provider, registering the source by pidfd
    /// (memgate and memgated built with the `verbs` feature, patched kernel and rdma-core).
    #[arg(long, default_value = "tcp:127.0.0.1:0")]
    pub listen: String,
    /// The memgated binary [default: next to this binary].
    #[arg(long)]
    pub memgated: Option<PathBuf>,
    /// Failure drill: revoke the grant this many milliseconds into the migration (from a
    /// second broker connection, as an operator would) and watch memgate fail closed: the
    /// destination's missing pages are poisoned, or on kernels without UFFDIO_POISON
    /// (before 6.6) the destination is killed; it never runs on a zero page. The demo then
    /// exits non-zero with what happened. Built-in workload only.
    #[arg(long, value_name = "MS")]
    pub revoke_after_ms: Option<u64>,
    /// Extra argument for memgated (repeatable; e.g. `--memgated-arg=--no-harden`).
    #[arg(long, hide = true, allow_hyphen_values = true)]
    pub memgated_arg: Vec<String>,
}

const BROKER_ID: &str = "memgate-demo";

fn cgroup_of(pid: i32) -> anyhow::Result<String> {
    let path = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!("process {pid}: no such process ({path} does not exist)")
        } else {
            anyhow::anyhow!("process {pid}: reading {path}: {e}")
        }
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_string())
        .with_context(|| format!("process {pid} has no cgroup v2 path"))
}

/// The pattern as the command line spells it (`random`, `seq`, `idle`).
fn pattern_name(p: Pattern) -> String {
    clap::ValueEnum::to_possible_value(&p)
        .map(|v| v.get_name().to_string())
        .unwrap_or_else(|| format!("{p:?}").to_lowercase())
}

/// Memory the built-in demo needs for `size` bytes: the source and the destination each
/// hold a copy, plus a margin for the broker, the fault server and page tables.
fn needed_for(size: u64) -> u64 {
    size.saturating_mul(2).saturating_add(128 << 20)
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// Refuses a `--size` of zero, or one this host cannot hold twice (source + destination).
fn check_size(spec: &str, size: u64) -> anyhow::Result<()> {
    let format_bytes = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
    if size < crate::PAGE as u64 {
        bail!("--size must be at least 4K (one page); got {size} bytes");
    }
    if let Some(avail) = mem_available() {
        if needed_for(size) > avail {
            bail!(
                "--size {spec} needs about {} free (source and destination each hold a copy), \
                 but only {} is available; pick a smaller --size",
                format_bytes(needed_for(size)),
                format_bytes(avail)
            );
        }
    }
    Ok(())
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

struct Setup {
    issuer: SecretKey,
    peer: SecretKey,
    socket: PathBuf,
}

/// Keys, signed policy and broker configuration in `dir`.
fn write_setup(
    dir: &Path,
    cgroup: &str,
    max_bytes: u64,
    listen: &str,
) -> anyhow::Result<(Setup, PathBuf)> {
    let admin = minisign::SecretKey::generate().context("admin key")?;
    let issuer = SecretKey::generate().context("issuer key")?;
    let peer = SecretKey::generate().context("peer key")?;
    let uid = rustix::process::getuid().as_raw();
    let policy = format!(
        "version = 1\nbroker = \"{BROKER_ID}\"\nserial = 1\n\n[[issuer]]\nname = \"demo\"\n\
         key = \"{}\"\ncgroups = [{}]\nuids = [{uid}]\nmax_bytes = \"{max_bytes}\"\n\
         max_lease = 600\n",
        issuer.public().to_paserk(),
        toml_str(cgroup)
    );
    let ppath = dir.join("policy.toml");
    std::fs::write(&ppath, &policy)?;
    let sig = admin
        .sign(policy.as_bytes(), "memgate demo policy")
        .context("signing")?;
    std::fs::write(dir.join("policy.toml.minisig"), sig.to_file_text())?;
    std::fs::write(dir.join("admin.pub"), admin.public().to_file_text())?;
    let socket = dir.join("broker.sock");
    let mut config = format!(
        "socket = {}\nlog_level = \"warn\"\nlog_target = \"stderr\"\nstate_dir = \"state\"\n\n[policy]\npath = {}\n\
         signature = {}\nadmin_keys = [{}]\n\n[fabric]\nlisten = {}\n\n\
         [audit]\npath = {}\njournal = false\n",
        toml_str(&socket.to_string_lossy()),
        toml_str(&ppath.to_string_lossy()),
        toml_str(&dir.join("policy.toml.minisig").to_string_lossy()),
        toml_str(&dir.join("admin.pub").to_string_lossy()),
        toml_str(listen),
        toml_str(&dir.join("audit.jsonl").to_string_lossy()),
    );
    if listen.starts_with("rdma:") {
        // pidfd registration needs the kernel's ptrace check on memgated to pass, which
        // Landlock refuses (memgated says so at start otherwise).
        config.push_str("\n[hardening.landlock]\nenabled = false\n");
    }
    let cpath = dir.join("memgated.toml");
    std::fs::write(&cpath, config)?;
    Ok((
        Setup {
            issuer,
            peer,
            socket,
        },
        cpath,
    ))
}

fn memgated_path(a: &DemoArgs) -> anyhow::Result<PathBuf> {
    if let Some(p) = &a.memgated {
        return Ok(p.clone());
    }
    let exe = super::runner::self_exe()?;
    let p = exe.with_file_name("memgated");
    if !p.exists() {
        bail!(
            "memgated not found next to {} (build it, or pass --memgated)",
            exe.display()
        );
    }
    Ok(p)
}

fn start_broker(
    bin: &Path,
    config: &Path,
    socket: &Path,
    extra: &[String],
) -> anyhow::Result<(Reaped, BrokerClient)> {
    let child = Reaped::spawn(
        Command::new(bin)
            .arg("--config")
            .arg(config)
            .args(extra)
            .stdin(Stdio::null()),
    )
    .with_context(|| format!("starting {}", bin.display()))?;
    let mut child = Reaped(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(mut c) = BrokerClient::connect(socket) {
            if matches!(
                c.call(&Request::Status, &[]),
                Ok(memgate_proto::Response::Status(_))
            ) {
                return Ok((child, c));
            }
        }
        if let Some(st) = child.0.try_wait()? {
            bail!("memgated exited during start-up ({st})");
        }
        if Instant::now() > deadline {
            bail!(
                "memgated did not answer on {} within 15 s",
                socket.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mint(s: &Setup, cgroup: &str, pid: i32, max_bytes: u64) -> anyhow::Result<String> {
    let now = time::OffsetDateTime::now_utc();
    let claims = token::Claims {
        iss: "demo".into(),
        sub: rustix::process::getuid().as_raw().to_string(),
        aud: BROKER_ID.into(),
        exp: now + time::Duration::minutes(5),
        nbf: now - time::Duration::seconds(5),
        iat: now,
        jti: token::new_jti(),
        target: token::Target {
            cgroup: cgroup.to_string(),
            pid: Some(pid as u32),
        },
        access: memgate_policy::document::Access::Read,
        max_bytes,
        lease: 600,
        peer: s.peer.public(),
    };
    Ok(token::mint(&s.issuer, &claims, None)?)
}

/// Runs `memgate demo`.
pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    let size = memgate_policy::size::parse_bytes(&a.size).context("--size")?;
    super::reaper::install()?;
    let dir = TempDir::new("memgate-demo")?;
    super::reaper::set_temp_dir(Some(dir.path().to_path_buf()));
    let broker_bin = memgated_path(&a)?;
    let say = |m: &str| {
        if !a.json {
            eprintln!("memgate demo: {m}");
        }
    };

    if a.revoke_after_ms.is_some() && a.target_pid.is_some() {
        bail!("--revoke-after-ms drills the built-in workload; drop --target-pid");
    }
    let (target, info, pid) = match a.target_pid {
        Some(pid) => (None, None, pid),
        None => {
            check_size(&a.size, size)?;
            say(&format!(
                "starting the source workload ({})",
                memgate_policy::size::format_bytes(size)
            ));
            let (t, info) = spawn_target(size, rand_seed())?;
            let pid = info.pid;
            (Some(t), Some(info), pid)
        }
    };
    let cgroup = cgroup_of(pid)?;
    let max_bytes = size.max(1 << 30) * 4;
    memgate_fabric::Endpoint::parse(&a.listen).context("--listen")?;
    let (setup, config) = write_setup(dir.path(), &cgroup, max_bytes, &a.listen)?;
    say("starting memgated with a freshly signed policy");
    let (_broker, mut client) = start_broker(&broker_bin, &config, &setup.socket, &a.memgated_arg)?;
    let tok = mint(&setup, &cgroup, pid, max_bytes)?;
    let regions = match &info {
        Some(i) => RegionSelection::List(
            i.regions
                .iter()
                .map(|r| RegionSpec {
                    addr: r.addr,
                    len: r.len,
                })
                .collect(),
        ),
        None => RegionSelection::All,
    };
    let (grant, admission) =
        request_export(&mut client, pid, &tok, regions, 600, Access::Read, true)?;
    say(&format!(
        "grant {} admitted in {:.1} ms: {} regions, {}",
        grant.id,
        admission.as_secs_f64() * 1e3,
        grant.regions.len(),
        memgate_policy::size::format_bytes(grant.total_bytes())
    ));
    let src = source_for_grant(&grant, *setup.peer.seed())?;
    let mut cfg = Config {
        expires: src.expires,
        ..Config::default()
    };
    let mut touch_delay_us = 0;
    let mut started = None;
    if let Some(ms) = a.revoke_after_ms {
        // Demand faults only, and a slow toucher, so that pages are still missing when the
        // revocation lands.
        cfg.no_prefetch = true;
        touch_delay_us = DRILL_TOUCH_DELAY_US;
        say(&format!(
            "failure drill: revoking grant {} {ms} ms into the migration",
            grant.id
        ));
        let (tx, rx) = std::sync::mpsc::channel();
        started = Some(tx);
        revoke_later(
            rx,
            setup.socket.clone(),
            grant.id,
            Duration::from_millis(ms),
        );
    }
    let (report, verified, mismatches, extra) = match &info {
        Some(info) => {
            say(&format!(
                "migrating post-copy; the destination touches pages in {} order",
                pattern_name(a.pattern)
            ));
            let (r, d) = run_dest(
                info,
                DestRun {
                    connector: src.connector.as_ref(),
                    regions: &src.regions,
                    cfg,
                    pattern: a.pattern,
                    dir: dir.path(),
                    progress: !a.json,
                    verify_after: false,
                    touch_delay_us,
                    started,
                },
            )?;
            let extra = serde_json::json!({
                "zero_pages": d.zero_pages,
                "touch_p50_us": d.touch_p50_us,
                "touch_p99_us": d.touch_p99_us,
            });
            (r, d.pages_verified, d.mismatches, extra)
        }
        None => {
            say("migrating into a mirror, then comparing it with the source byte for byte");
            let (r, check) = mirror(&src, cfg, Some(pid), !a.json)?;
            let (v, b) = check.unwrap_or((0, 0));
            (r, v, b, serde_json::json!({}))
        }
    };
    if let Some(ms) = a.revoke_after_ms {
        bail!(
            "failure drill: the migration finished (and was committed) before the revocation \
             {ms} ms in; pick a smaller --revoke-after-ms"
        );
    }
    let w = wait_for(&mut client, grant.id, Duration::from_secs(10))?;
    drop(target);
    let mut extra = extra;
    if let Some(o) = extra.as_object_mut() {
        o.insert("endpoint".into(), grant.endpoint.clone().into());
        o.insert("pages_verified".into(), verified.into());
        o.insert("mismatches".into(), mismatches.into());
        o.insert(
            "admission_ms".into(),
            (admission.as_secs_f64() * 1e3).into(),
        );
        o.insert(
            "broker_state".into(),
            format!("{:?}", w.state).to_lowercase().into(),
        );
        if info.is_some() {
            o.insert("pattern".into(), pattern_name(a.pattern).into());
        }
    }
    print_report(&report, a.json, extra);
    if mismatches > 0 || verified != report.pages_total {
        bail!(
            "{mismatches} pages differ; {verified} of {} verified",
            report.pages_total
        );
    }
    if w.state != WaitState::Committed {
        bail!("the broker did not see the grant committed ({:?})", w.state);
    }
    Ok(())
}

/// How long the drill's destination sleeps after each page (4096 pages: about 8 s).
const DRILL_TOUCH_DELAY_US: u64 = 2000;

/// Revokes `grant` from a new broker connection `delay` after the destination handed over
/// its userfaultfd (`started`). A failed revocation is reported; the migration then
/// completes, and the demo ends as a drill that did not happen.
fn revoke_later(
    started: std::sync::mpsc::Receiver<()>,
    socket: PathBuf,
    grant: memgate_proto::GrantId,
    delay: Duration,
) {
    std::thread::spawn(move || {
        if started.recv().is_err() {
            return; // the destination never started
        }
        std::thread::sleep(delay);
        let res = BrokerClient::connect(&socket)
            .map_err(anyhow::Error::from)
            .and_then(|mut c| Ok(c.call(&Request::Revoke { grant }, &[])?));
        match res {
            Ok(r @ (memgate_proto::Response::Denied(_) | memgate_proto::Response::Error(_))) => {
                eprintln!("memgate demo: the drill's revocation was refused: {r:?}")
            }
            Ok(_) => {}
            Err(e) => eprintln!("memgate demo: the drill's revocation failed: {e:#}"),
        }
    });
}

fn rand_seed() -> u64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u64::from_ne_bytes(b) | 1
}
