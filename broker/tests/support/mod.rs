//! Shared harness for memgated's integration tests (lifecycle and adversarial): real keys,
//! a real signed policy, the real `memgated` binary started as a child with a temporary
//! configuration, and real target processes running as other uids.
//!
//! Use it from a test file with `mod support;` and:
//!
//! ```text
//! let pki = Pki::generate();
//! let broker = Broker::start(&pki, &PolicySpec::new().toml(&pki))?;   // waits for READY=1
//! let target = Target::spawn(61_000 + n, 4)?;       // 4 pages filled with a known pattern
//! let token = pki.token(&TokenSpec::for_target(&target));   // sub = our uid (root)
//! let (resp, _) = export(&broker, &target, &token, Some(vec![(target.addr, target.len)]), 30);
//! broker.audit() / broker.wait_audit("revoke", 5s) / broker.sighup() / broker.terminate()
//! ```
//!
//! Every test binary that includes this module gets an ignored `support::target_entry`
//! test: [`Target::spawn`] re-executes the test binary with `--exact
//! support::target_entry --ignored` and `MEMGATE_TEST_TARGET` set, and that run is the
//! target process.

#![allow(dead_code)]

pub mod daemon;
pub mod pki;

pub use pki::Pki;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use memgate_policy::token::{self, Claims, Target as TokenTarget};
use memgate_policy::Access;
use memgate_proto::{
    BrokerClient, ExportRequest, Grant, GrantId, GrantSummary, RegionSelection, RegionSpec,
    Request, Response, WaitRequest, WaitResult,
};
use serde_json::Value;
use time::OffsetDateTime;

/// Page size of the test machine.
pub const PAGE: u64 = 4096;

impl Pki {
    /// Mints a token.
    pub fn token(&self, spec: &TokenSpec) -> String {
        let now = OffsetDateTime::now_utc();
        let claims = Claims {
            iss: spec.issuer.clone(),
            sub: spec.uid.to_string(),
            aud: spec.audience.clone(),
            exp: now + spec.valid_for,
            nbf: now - time::Duration::seconds(1),
            iat: now - time::Duration::seconds(1),
            jti: token::new_jti(),
            target: TokenTarget {
                cgroup: spec.cgroup.clone(),
                pid: spec.pid,
            },
            access: spec.access,
            max_bytes: spec.max_bytes,
            lease: spec.lease,
            peer: self.peer.public(),
        };
        token::mint(&self.issuer, &claims, None).expect("mint")
    }
}

/// The policy a test broker runs.
#[derive(Debug, Clone)]
pub struct PolicySpec {
    /// Broker id (token audience).
    pub broker: String,
    /// Serial.
    pub serial: u64,
    /// Issuer name.
    pub issuer: String,
    /// Requester uids the issuer may authorise.
    pub uids: Vec<u32>,
    /// cgroup patterns.
    pub cgroups: Vec<String>,
    /// `read` or `read-write`.
    pub access: &'static str,
    /// Bytes per export.
    pub max_bytes: u64,
    /// Longest lease.
    pub max_lease: u64,
    /// Extra TOML appended at the top level (e.g. `mappings = [...]`).
    pub extra: String,
    /// `[limits]` body.
    pub limits: String,
}

impl PolicySpec {
    /// Allows uid 0 (the test process) to export from any cgroup, read-only.
    pub fn new() -> PolicySpec {
        PolicySpec {
            broker: "memgated-test".into(),
            serial: 1,
            issuer: "test-issuer".into(),
            uids: vec![0],
            cgroups: vec!["/**".into()],
            access: "read",
            max_bytes: 1 << 30,
            max_lease: 3600,
            extra: String::new(),
            limits: "grants_per_uid = 64\nrequests_per_second_per_uid = 100000\n".into(),
        }
    }

    /// The policy document for `pki`'s issuer.
    pub fn toml(&self, pki: &Pki) -> String {
        let list = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let uids = self
            .uids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "version = 1\nbroker = {:?}\nserial = {}\n{}\n[limits]\n{}\n\n[[issuer]]\nname = {:?}\nkey = {:?}\n\
             cgroups = [{}]\nuids = [{uids}]\naccess = {:?}\nmax_bytes = {}\nmax_lease = {}\n",
            self.broker,
            self.serial,
            self.extra,
            self.limits,
            self.issuer,
            pki.issuer.public().to_paserk(),
            list(&self.cgroups),
            self.access,
            self.max_bytes,
            self.max_lease,
        )
    }
}

impl Default for PolicySpec {
    fn default() -> Self {
        PolicySpec::new()
    }
}

/// What a test token claims.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// `iss`.
    pub issuer: String,
    /// `sub` (requester uid).
    pub uid: u32,
    /// `aud`.
    pub audience: String,
    /// Target cgroup.
    pub cgroup: String,
    /// Target pid.
    pub pid: Option<u32>,
    /// Access.
    pub access: Access,
    /// Bytes.
    pub max_bytes: u64,
    /// Lease.
    pub lease: u64,
    /// Lifetime.
    pub valid_for: time::Duration,
}

impl TokenSpec {
    /// A token for exporting from `target` by this (root) process, matching
    /// [`PolicySpec::new`].
    pub fn for_target(target: &Target) -> TokenSpec {
        TokenSpec {
            issuer: "test-issuer".into(),
            uid: rustix::process::getuid().as_raw(),
            audience: "memgated-test".into(),
            cgroup: target.cgroup(),
            pid: Some(target.pid as u32),
            access: Access::Read,
            max_bytes: 1 << 30,
            lease: 3600,
            valid_for: time::Duration::minutes(5),
        }
    }
}

/// A running memgated.
pub struct Broker {
    /// Temporary directory with config, keys, policy, sockets and audit log.
    pub dir: tempfile::TempDir,
    /// The broker process.
    pub child: Child,
    /// API socket.
    pub socket: PathBuf,
    /// Audit log.
    pub audit_path: PathBuf,
    /// Policy document path.
    pub policy_path: PathBuf,
    /// Configuration file.
    pub config_path: PathBuf,
    /// Where the broker's sd_notify messages arrive.
    pub notify: UnixDatagram,
    /// stderr of the broker, collected by a thread.
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

/// The memgated binary built for these tests.
pub fn memgated_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_memgated"))
}

impl Broker {
    /// Starts memgated with `policy` (signed with the admin key) and waits for READY=1.
    pub fn start(pki: &Pki, policy: &str) -> Result<Broker, String> {
        Broker::start_with(pki, policy, "")
    }

    /// Like [`Broker::start`], with extra configuration TOML appended (tables allowed).
    pub fn start_with(pki: &Pki, policy: &str, extra_config: &str) -> Result<Broker, String> {
        let b = Broker::spawn(pki, policy, extra_config, &[])?;
        b.wait_ready(Duration::from_secs(20))?;
        Ok(b)
    }

    /// Writes the files and spawns memgated with `args`, without waiting.
    pub fn spawn(
        pki: &Pki,
        policy: &str,
        extra_config: &str,
        args: &[&str],
    ) -> Result<Broker, String> {
        let dir = tempfile::Builder::new()
            .prefix("memgated-test-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let p = dir.path();
        // Other uids (targets, non-owner clients) must reach the socket.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        std::fs::write(p.join("admin.pub"), pki.admin.public().to_file_text())
            .map_err(|e| e.to_string())?;
        let policy_path = p.join("policy/policy.toml");
        std::fs::create_dir_all(p.join("policy")).map_err(|e| e.to_string())?;
        std::fs::write(&policy_path, policy).map_err(|e| e.to_string())?;
        std::fs::write(p.join("policy/policy.toml.minisig"), pki.sign(policy))
            .map_err(|e| e.to_string())?;
        let config = format!(
            "socket = \"run/broker.sock\"\nlog_level = \"info\"\nlog_target = \"stderr\"\n\
             state_dir = \"state\"\n\
             [policy]\npath = \"policy/policy.toml\"\nadmin_keys = [\"admin.pub\"]\n\
             [fabric]\nlisten = \"tcp:127.0.0.1:0\"\n[audit]\npath = \"log/audit.jsonl\"\njournal = false\n\
             {extra_config}\n"
        );
        let config_path = p.join("memgated.toml");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        Broker::spawn_in(dir, args)
    }

    /// Stops this broker if it still runs (SIGTERM, SIGKILL after 10 s), installs `policy` (signed with the
    /// admin key) and spawns memgated again on the same files and state directory, with
    /// `args`, without waiting for READY=1.
    pub fn respawn(mut self, pki: &Pki, policy: &str, args: &[&str]) -> Result<Broker, String> {
        let running = !matches!(self.child.try_wait(), Ok(Some(_)));
        if running && self.terminate(Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.install_policy(pki, policy);
        let spare = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = std::mem::replace(&mut self.dir, spare);
        drop(self);
        Broker::spawn_in(dir, args)
    }

    /// Spawns memgated on the files already written in `dir`.
    fn spawn_in(dir: tempfile::TempDir, args: &[&str]) -> Result<Broker, String> {
        let p = dir.path();
        let config_path = p.join("memgated.toml");
        let policy_path = p.join("policy/policy.toml");
        let notify_path = p.join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).map_err(|e| e.to_string())?;
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| e.to_string())?;
        let mut child = Command::new(memgated_bin())
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning memgated: {e}"))?;
        let stderr = daemon::collect_stderr(&mut child);
        Ok(Broker {
            socket: p.join("run/broker.sock"),
            audit_path: p.join("log/audit.jsonl"),
            policy_path,
            config_path,
            notify,
            stderr,
            child,
            dir,
        })
    }

    /// What the broker wrote to stderr so far.
    pub fn stderr(&self) -> String {
        daemon::collected(&self.stderr)
    }

    /// Waits for a notification starting with `prefix`; returns the message.
    pub fn wait_notify(&self, prefix: &str, timeout: Duration) -> Option<String> {
        daemon::wait_notify(&self.notify, prefix, timeout)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let end = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = self.notify.recv(&mut buf) {
                if buf[..n].starts_with(b"READY=1") {
                    return Ok(());
                }
            }
            if child_exited(&self.child) {
                return Err(format!("memgated exited before READY: {}", self.stderr()));
            }
        }
        Err(format!("memgated not ready in time: {}", self.stderr()))
    }

    /// A new API connection.
    pub fn client(&self) -> BrokerClient {
        let c = BrokerClient::connect(&self.socket).expect("connect to broker");
        c.set_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        c
    }

    /// Replaces the policy (signed with `pki`'s admin key) without reloading.
    pub fn install_policy(&self, pki: &Pki, policy: &str) {
        std::fs::write(
            self.policy_path.with_extension("toml.minisig"),
            pki.sign(policy),
        )
        .expect("sig");
        std::fs::write(&self.policy_path, policy).expect("policy");
    }

    /// Sends a signal to the broker.
    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, sig).expect("kill");
    }

    /// SIGHUP, then waits for the READY=1 that ends the reload.
    pub fn reload(&self) -> bool {
        self.signal(rustix::process::Signal::HUP);
        self.wait_notify("RELOADING=1", Duration::from_secs(10))
            .is_some()
            && self
                .wait_notify("READY=1", Duration::from_secs(10))
                .is_some()
    }

    /// Every audit record so far.
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    /// Waits for an audit record with `event` matching `pred`.
    pub fn wait_audit(
        &self,
        event: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(v) = self
                .audit()
                .into_iter()
                .find(|v| v["event"] == event && pred(v))
            {
                return Some(v);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait for exit (at most `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(rustix::process::Signal::TERM);
        self.wait_exit(timeout)
    }

    /// Waits for the broker to exit (at most `timeout`), without signalling it.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let st = daemon::wait_exit(&mut self.child, timeout)?;
        daemon::settle(&self.stderr, Duration::from_secs(5));
        Some(st)
    }
}

/// Whether `child` has ended (a zombie or no /proc entry), without reaping it.
pub fn child_exited(child: &Child) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", child.id())) {
        Err(_) => true,
        Ok(s) => {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                == Some("Z")
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A target process (this test binary in target mode) running as another uid, holding
/// `pages` pages of anonymous memory filled with [`pattern`].
pub struct Target {
    /// The process.
    pub child: Child,
    /// Its pid.
    pub pid: i32,
    /// Start of the filled region.
    pub addr: u64,
    /// Its length.
    pub len: u64,
    /// Seed of the pattern.
    pub seed: u8,
    stdin: Option<ChildStdin>,
}

/// Byte `i` of a target's region with seed `seed`.
pub fn pattern(seed: u8, i: u64) -> u8 {
    (i.wrapping_mul(131) ^ (i >> 12)).wrapping_add(u64::from(seed)) as u8
}

impl Target {
    /// Spawns a target running as `uid` (and gid `uid`) with `pages` filled pages.
    pub fn spawn(uid: u32, pages: u64) -> std::io::Result<Target> {
        let seed = (uid % 251) as u8;
        let mut cmd = entry_command(std::env::current_exe()?);
        cmd.env("MEMGATE_TEST_TARGET", format!("{pages} {seed}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        drop_to(&mut cmd, uid);
        let mut child = cmd.spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut line = String::new();
        for l in BufReader::new(stdout).lines() {
            let l = l?;
            // libtest may print "test NAME ... " on the same line first.
            if let Some((_, rest)) = l.split_once("memgate-target-ready ") {
                line = rest.to_string();
                break;
            }
        }
        let mut it = line.split_whitespace();
        let addr = it.next().and_then(|a| u64::from_str_radix(a, 16).ok());
        let len = it.next().and_then(|a| a.parse().ok());
        let (Some(addr), Some(len)) = (addr, len) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other("target did not report its region"));
        };
        let pid = child.id() as i32;
        let stdin = child.stdin.take();
        Ok(Target {
            child,
            pid,
            addr,
            len,
            seed,
            stdin,
        })
    }

    /// The target's cgroup v2 path.
    pub fn cgroup(&self) -> String {
        let text = std::fs::read_to_string(format!("/proc/{}/cgroup", self.pid)).expect("cgroup");
        text.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("cgroup v2 line")
            .to_string()
    }

    /// The fds an `Export` carries, opened by this process: pidfd, `/proc/PID/mem`,
    /// `/proc/PID/maps`.
    pub fn fds(&self) -> Vec<OwnedFd> {
        let pid = rustix::process::Pid::from_raw(self.pid).expect("pid");
        let pidfd =
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).expect("pidfd");
        let mem = std::fs::File::open(format!("/proc/{}/mem", self.pid)).expect("mem");
        let maps = std::fs::File::open(format!("/proc/{}/maps", self.pid)).expect("maps");
        vec![pidfd, mem.into(), maps.into()]
    }

    /// Ends the target (closes its stdin; it exits) and reaps it.
    pub fn exit(mut self) {
        self.stdin.take();
        let _ = self.child.wait();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends an `Export` for `target` with `token`; regions None = all.
pub fn export(
    client: &mut BrokerClient,
    target: &Target,
    token: &str,
    regions: Option<Vec<(u64, u64)>>,
    lease_secs: u64,
) -> Response {
    let fds = target.fds();
    let req = Request::Export(ExportRequest {
        token: token.to_string(),
        regions: match regions {
            None => RegionSelection::All,
            Some(v) => RegionSelection::List(
                v.into_iter()
                    .map(|(addr, len)| RegionSpec { addr, len })
                    .collect(),
            ),
        },
        access: memgate_proto::Access::Read,
        lease_secs,
        revoke_on_disconnect: false,
    });
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    client.call(&req, &borrowed).expect("export call")
}

/// The grant in an `Export` reply; panics on anything else.
pub fn granted(r: Response) -> Grant {
    match r {
        Response::Grant(g) => g,
        other => panic!("expected a grant, got {other:?}"),
    }
}

/// The usual scene of a grant test: fresh keys, a broker running the default policy, a
/// target of `pages` pages as uid [`test_uid`]`(n)`, a token for it and a root client.
pub fn scene(n: u32, pages: u64) -> (Pki, Broker, Target, String, BrokerClient) {
    let pki = Pki::generate();
    let broker = Broker::start(&pki, &PolicySpec::new().toml(&pki)).expect("broker");
    let target = Target::spawn(test_uid(n), pages).expect("target");
    let token = pki.token(&TokenSpec::for_target(&target));
    let client = broker.client();
    (pki, broker, target, token, client)
}

/// Exports the whole filled region of `target` for `lease_secs`; the grant.
pub fn export_filled(
    client: &mut BrokerClient,
    target: &Target,
    token: &str,
    lease_secs: u64,
) -> Grant {
    granted(export(
        client,
        target,
        token,
        Some(vec![(target.addr, target.len)]),
        lease_secs,
    ))
}

/// A `Wait` call on `grant` with `timeout_ms`; the result.
pub fn wait_result(client: &mut BrokerClient, grant: GrantId, timeout_ms: u64) -> WaitResult {
    match client
        .call(&Request::Wait(WaitRequest { grant, timeout_ms }), &[])
        .expect("wait")
    {
        Response::WaitResult(w) => w,
        other => panic!("{other:?}"),
    }
}

/// The live grants, as `List` reports them.
pub fn list_grants(client: &mut BrokerClient) -> Vec<GrantSummary> {
    match client.call(&Request::List, &[]).expect("list") {
        Response::Grants(l) => l,
        other => panic!("{other:?}"),
    }
}

/// Waits for an audit record with `event` about `grant`.
pub fn audit_of(broker: &Broker, event: &str, grant: GrantId, timeout: Duration) -> Option<Value> {
    broker.wait_audit(event, timeout, |v| v["grant"] == grant.to_string())
}

/// The target role: allocate, fill, report, wait for stdin to close. Test binaries run it
/// from `support::target_entry`; other binaries that include this module (the benchmark)
/// call it when `MEMGATE_TEST_TARGET` is set.
pub fn target_main(spec: &str) -> ! {
    let mut it = spec.split_whitespace();
    let pages: u64 = it.next().and_then(|p| p.parse().ok()).unwrap_or(1);
    let seed: u8 = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let len = pages * PAGE;
    // SAFETY: anonymous private mapping of `len` bytes; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::process::exit(3);
    }
    // SAFETY: `p` points to `len` writable bytes just mapped.
    let mem = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len as usize) };
    for (i, b) in mem.iter_mut().enumerate() {
        *b = pattern(seed, i as u64);
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "\nmemgate-target-ready {:x} {len}", p as u64);
    let _ = out.flush();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    std::process::exit(0)
}

/// The client role: `revoke SOCKET GRANT` prints the reply's code (or `revoked`).
fn client_main(spec: &str) -> ! {
    let mut it = spec.split_whitespace();
    let (Some("revoke"), Some(sock), Some(grant)) = (it.next(), it.next(), it.next()) else {
        std::process::exit(4);
    };
    let Ok(grant) = grant.parse() else {
        std::process::exit(5);
    };
    let out = match BrokerClient::connect(sock)
        .and_then(|mut c| c.call(&Request::Revoke { grant }, &[]))
    {
        Ok(Response::Denied(d)) => d.code,
        Ok(Response::Error(e)) => e.code,
        Ok(Response::WaitResult(_)) => "revoked".to_string(),
        Ok(other) => format!("unexpected {other:?}"),
        Err(e) => format!("client error {e}"),
    };
    println!("memgate-client-result {out}");
    std::process::exit(0)
}

#[test]
#[ignore = "entry point of target and client processes, run by Target::spawn and run_as"]
fn target_entry() {
    if let Ok(spec) = std::env::var("MEMGATE_TEST_TARGET") {
        target_main(&spec);
    }
    if let Ok(spec) = std::env::var("MEMGATE_TEST_CLIENT") {
        client_main(&spec);
    }
}

fn drop_to(cmd: &mut Command, uid: u32) {
    // SAFETY: the closure only calls async-signal-safe set*id functions.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(uid, uid, uid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// This test binary (`exe`) set to run only the ignored `support::target_entry` test,
/// whose role (target or client) the caller picks with an environment variable.
fn entry_command(exe: PathBuf) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "support::target_entry",
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ]);
    cmd
}

/// Runs this test binary in client mode as `uid` and returns what it printed as the
/// result (`MEMGATE_TEST_CLIENT=spec`).
pub fn run_client_as(uid: u32, spec: &str) -> String {
    let mut cmd = entry_command(std::env::current_exe().expect("current exe"));
    cmd.env("MEMGATE_TEST_CLIENT", spec)
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    drop_to(&mut cmd, uid);
    let out = cmd.output().expect("client process");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.split_once("memgate-client-result ")
                .map(|(_, r)| r.to_string())
        })
        .unwrap_or_else(|| format!("no result (status {})", out.status))
}

/// Asks the broker, from a process running as `uid`, to revoke `grant`; returns the
/// reply's code (`revoked` on success). The socket's directory must be reachable by
/// `uid` (the harness makes it so).
pub fn revoke_as(uid: u32, broker: &Broker, grant: memgate_proto::GrantId) -> String {
    run_client_as(uid, &format!("revoke {} {grant}", broker.socket.display()))
}

/// A uid for test processes: 61000 + a per-test offset.
pub fn test_uid(offset: u32) -> u32 {
    61_000 + offset
}

/// Path helper: the directory of a broker's files.
pub fn path_in(b: &Broker, rel: &str) -> PathBuf {
    b.dir.path().join(rel)
}

/// Whether `p` exists.
pub fn exists(p: &Path) -> bool {
    p.exists()
}
