//! `memgate fault-serve` against the fabric directly (a soft responder in the test process
//! serving a real, frozen target through its /proc/PID/mem): byte-exact migration into a
//! mirror and into a handed-over destination, and fail-closed behaviour when the key is
//! revoked, the responder dies or the source process dies mid-migration.

use memgate::localsrc::{self, LocalSource};
use memgate::workload::TargetInfo;
use memgate_fabric::{FabricEvent, Responder};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_memgate");

struct Target {
    child: Child,
    info: TargetInfo,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn target(size: u64) -> Target {
    let mut child = Command::new(BIN)
        .args(["__demo-target", "--size", &size.to_string(), "--seed", "77"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn target");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let info: TargetInfo = serde_json::from_str(&line).expect("target info");
    Target { child, info }
}

fn source_of(t: &Target) -> LocalSource {
    let regions: Vec<(u64, u64)> = t.info.regions.iter().map(|r| (r.addr, r.len)).collect();
    localsrc::serve(t.info.pid, &regions, Duration::from_secs(120)).expect("local source")
}

fn files(dir: &Path, src: &LocalSource) -> (PathBuf, PathBuf) {
    let g = dir.join("grant.json");
    std::fs::write(&g, src.grant.to_json_pretty()).expect("grant");
    let k = dir.join("peer.key");
    let key = memgate_policy::keys::SecretKey::from_seed(src.seed).expect("key");
    std::fs::write(&k, key.to_paserk()).expect("key file");
    (g, k)
}

fn committed(src: &LocalSource) -> bool {
    src.events
        .try_iter()
        .any(|e| matches!(e, FabricEvent::Commit { .. }))
}

/// `memgate fault-serve --grant GRANT --peer-key KEY`, to be completed by the caller.
fn fault_serve(grant: &Path, key: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("fault-serve")
        .arg("--grant")
        .arg(grant)
        .arg("--peer-key")
        .arg(key);
    c
}

#[test]
fn mirror_is_byte_identical_to_the_source_and_commits() {
    let t = target(8 << 20);
    let src = source_of(&t);
    let dir = tempfile::tempdir().expect("tmp");
    let (g, k) = files(dir.path(), &src);
    let out = fault_serve(&g, &k)
        .args([
            "--mirror",
            "--json",
            "--verify-pid",
            &t.info.pid.to_string(),
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let total: u64 = t.info.regions.iter().map(|r| r.len / 4096).sum();
    assert_eq!(v["pages_total"], total);
    assert_eq!(v["pages_verified"], total);
    assert_eq!(v["mismatches"], 0);
    assert_eq!(v["committed"], true);
    assert!(committed(&src), "the responder saw no COMMIT");
}

/// Starts fault-serve on a hand-over socket and the destination workload against it.
fn run_pair(
    dir: &Path,
    src: &LocalSource,
    t: &Target,
    extra_fs: &[&str],
    dest: &[&str],
) -> (Child, Child) {
    let (g, k) = files(dir, src);
    let sock = dir.join("uffd.sock");
    let fs = fault_serve(&g, &k)
        .args(["--uffd-socket".as_ref(), sock.as_os_str()])
        .arg("--json")
        .args(extra_fs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fault-serve");
    let info = serde_json::to_string(&t.info).expect("info");
    let d = Command::new(BIN)
        .args(["__demo-dest", "--info", &info])
        .args(["--socket".as_ref(), sock.as_os_str()])
        .args(dest)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dest");
    (fs, d)
}

/// [`run_pair`] in a fresh directory, waited for: returns (fault server, destination).
fn run_pair_to_end(
    src: &LocalSource,
    t: &Target,
    extra_fs: &[&str],
    dest: &[&str],
) -> (std::process::Output, std::process::Output) {
    let dir = tempfile::tempdir().expect("tmp");
    let (fs, d) = run_pair(dir.path(), src, t, extra_fs, dest);
    let d = d.wait_with_output().expect("dest");
    let fs = fs.wait_with_output().expect("fs");
    (fs, d)
}

#[test]
fn handed_over_destination_sees_every_byte_under_random_touches() {
    let t = target(16 << 20);
    let src = source_of(&t);
    let (fs, d) = run_pair_to_end(&src, &t, &[], &["--pattern", "random"]);
    assert!(
        fs.status.success(),
        "{}",
        String::from_utf8_lossy(&fs.stderr)
    );
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    let rep: serde_json::Value = serde_json::from_slice(&d.stdout).expect("dest json");
    assert_eq!(rep["mismatches"], 0);
    assert_eq!(rep["pages_verified"], rep["pages_total"]);
    assert_eq!(rep["complete"], true);
    let fr: serde_json::Value = serde_json::from_slice(&fs.stdout).expect("fs json");
    assert!(fr["pages_on_demand"].as_u64().unwrap_or(0) > 0, "{fr}");
    assert!(committed(&src));
}

/// A slow destination with demand paging only, so that the failure lands mid-way.
fn failing_run(inject: impl FnOnce(&LocalSource, &mut Target)) -> (Output, Output, bool) {
    failing_run_with(&[], inject)
}

fn failing_run_with(
    extra_fs: &[&str],
    inject: impl FnOnce(&LocalSource, &mut Target),
) -> (Output, Output, bool) {
    failing_run_full(extra_fs, &[], inject)
}

fn failing_run_full(
    extra_fs: &[&str],
    extra_dest: &[&str],
    inject: impl FnOnce(&LocalSource, &mut Target),
) -> (Output, Output, bool) {
    let mut t = target(4 << 20);
    let src = source_of(&t);
    let dir = tempfile::tempdir().expect("tmp");
    let fs_args: Vec<&str> = ["--no-prefetch"].iter().chain(extra_fs).copied().collect();
    let dest_args: Vec<&str> = ["--pattern", "seq", "--touch-delay-us", "2000"]
        .iter()
        .chain(extra_dest)
        .copied()
        .collect();
    let (fs, d) = run_pair(dir.path(), &src, &t, &fs_args, &dest_args);
    std::thread::sleep(Duration::from_millis(400));
    inject(&src, &mut t);
    let d = d.wait_with_output().expect("dest");
    let fs = fs.wait_with_output().expect("fs");
    let c = committed(&src);
    (fs, d, c)
}

fn assert_failed_closed(fs: &Output, d: &Output, committed: bool, why: &str) {
    let fe = String::from_utf8_lossy(&fs.stderr);
    let de = String::from_utf8_lossy(&d.stderr);
    assert!(!fs.status.success(), "fault-serve should fail: {fe}");
    assert!(
        fe.contains(why),
        "fault-serve error should say {why:?}: {fe}"
    );
    assert!(
        fe.contains("poisoned") || fe.contains("grant not committed"),
        "{fe}"
    );
    assert!(!d.status.success(), "destination must not finish: {de}");
    assert!(
        !de.contains("MISMATCH"),
        "destination read a wrong or zero page: {de}"
    );
    assert!(d.stdout.is_empty(), "destination must not report success");
    assert!(!committed, "a failed migration must not be committed");
}

#[test]
fn revoked_key_fails_closed() {
    let (fs, d, c) = failing_run(|src, _| {
        assert!(src.responder.revoke_grant(src.grant.id.0) > 0);
    });
    assert_failed_closed(&fs, &d, c, "remote access error");
}

/// Where pages cannot be poisoned (kernels before 6.6) the fault server kills the
/// destination instead; `--on-failure kill` takes that path on any kernel.
#[test]
fn revoked_key_with_on_failure_kill_kills_the_destination() {
    use std::os::unix::process::ExitStatusExt;
    let (fs, d, c) = failing_run_with(&["--on-failure", "kill"], |src, _| {
        assert!(src.responder.revoke_grant(src.grant.id.0) > 0);
    });
    assert_failed_closed(&fs, &d, c, "remote access error");
    let fe = String::from_utf8_lossy(&fs.stderr);
    assert!(fe.contains("the destination was killed (SIGKILL)"), "{fe}");
    assert!(!fe.contains("poisoned:"), "{fe}");
    assert_eq!(d.status.signal(), Some(libc::SIGKILL), "{:?}", d.status);
}

#[test]
fn responder_death_fails_closed_after_reconnect_attempts() {
    let (fs, d, c) = failing_run(|src, _| src.responder.shutdown());
    assert_failed_closed(&fs, &d, c, "connection");
}

#[test]
fn source_death_fails_closed() {
    let (fs, d, c) = failing_run(|_, t| {
        let _ = t.child.kill();
        let _ = t.child.wait();
    });
    assert_failed_closed(&fs, &d, c, "remote operation error");
}

/// Opens fabric connections like the grant's connector, says (as the verbs provider does)
/// that a grant's keys serve one connection at a time, and counts the connections made.
struct OneConnection {
    inner: Box<dyn memgate::transport::Connector>,
    opened: std::sync::atomic::AtomicUsize,
}

impl memgate::transport::Connector for OneConnection {
    fn connect(
        &self,
    ) -> Result<Box<dyn memgate::transport::Transport>, memgate::transport::TransportError> {
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.connect()
    }
    fn endpoint(&self) -> String {
        self.inner.endpoint()
    }
    fn max_connections(&self) -> Option<usize> {
        Some(1)
    }
}

/// With one connection per grant, prefetch shares the demand link: the mirror still gets
/// every byte, over exactly one connection.
#[test]
fn one_connection_per_grant_prefetches_on_the_demand_link() {
    use memgate::cli::fault_serve::{mirror, source_for_grant};
    let t = target(8 << 20);
    let src = source_of(&t);
    let mut s = source_for_grant(&src.grant, src.seed).expect("source");
    let one = std::sync::Arc::new(OneConnection {
        inner: s.connector,
        opened: 0.into(),
    });
    struct Shared(std::sync::Arc<OneConnection>);
    impl memgate::transport::Connector for Shared {
        fn connect(
            &self,
        ) -> Result<Box<dyn memgate::transport::Transport>, memgate::transport::TransportError>
        {
            self.0.connect()
        }
        fn endpoint(&self) -> String {
            self.0.endpoint()
        }
        fn max_connections(&self) -> Option<usize> {
            self.0.max_connections()
        }
    }
    s.connector = Box::new(Shared(one.clone()));
    let (report, check) = mirror(
        &s,
        memgate::faultserve::Config::default(),
        Some(t.info.pid),
        false,
    )
    .expect("mirror");
    let total: u64 = t.info.regions.iter().map(|r| r.len / 4096).sum();
    assert_eq!(check, Some((total, 0)), "(verified, mismatches)");
    assert_eq!(report.pages_total, total);
    assert!(report.committed, "not committed");
    assert_eq!(
        one.opened.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "connections opened"
    );
    assert!(committed(&src), "the responder saw no COMMIT");
}

/// A grant revoked before the fault server's first connection: the refusal must fail
/// closed like any later failure. The destination is a careless restorer (it closes its own
/// copy of the uffd and ignores the status byte), so only the fault server's poisoning (or
/// kill) stands between it and zero pages: it must die of SIGBUS or SIGKILL, never read one.
#[test]
fn refused_first_connection_fails_closed_even_for_a_careless_restorer() {
    use std::os::unix::process::ExitStatusExt;
    let t = target(4 << 20);
    let src = source_of(&t);
    assert!(src.responder.revoke_grant(src.grant.id.0) > 0);
    let (fs, d) = run_pair_to_end(&src, &t, &[], &["--pattern", "seq", "--careless"]);
    assert_failed_closed(&fs, &d, committed(&src), "revoked or expired");
    let fe = String::from_utf8_lossy(&fs.stderr);
    assert!(
        fe.contains("missing pages poisoned")
            || fe.contains("exited while its missing pages were being poisoned")
            || fe.contains("was killed (SIGKILL)"),
        "{fe}"
    );
    assert!(
        matches!(d.status.signal(), Some(libc::SIGBUS) | Some(libc::SIGKILL)),
        "the careless destination must die at its first missing page: {:?} {}",
        d.status,
        String::from_utf8_lossy(&d.stderr)
    );
}

/// A hand-over that names some other process: the fault server must not watch it (its exit
/// would end the serving) nor kill it when the migration fails.
#[test]
fn a_handover_naming_another_process_is_never_signalled() {
    let mut victim = Command::new("sleep").arg("60").spawn().expect("sleep");
    let pid = victim.id().to_string();
    let (fs, d, c) = failing_run_full(
        &["--on-failure", "kill"],
        &["--handover-pid", &pid],
        |src, _| {
            assert!(src.responder.revoke_grant(src.grant.id.0) > 0);
        },
    );
    let alive = victim.try_wait().expect("try_wait").is_none();
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(alive, "the process named in the hand-over was killed");
    assert_failed_closed(&fs, &d, c, "remote access error");
    let fe = String::from_utf8_lossy(&fs.stderr);
    assert!(
        fe.contains("not watching or signalling the hand-over's pid"),
        "{fe}"
    );
    assert!(fe.contains("no userfaultfd-registered mapping"), "{fe}");
    // Unable to kill it, the fault server poisons instead (or, on a kernel without
    // UFFDIO_POISON, tells the restorer to stop the destination).
    assert!(
        fe.contains("missing pages poisoned") || fe.contains("stop the destination now"),
        "{fe}"
    );
    // Poisoned, it dies of SIGBUS at the page it waits on; told, it stops itself.
    use std::os::unix::process::ExitStatusExt;
    let de = String::from_utf8_lossy(&d.stderr);
    assert!(
        d.status.signal() == Some(libc::SIGBUS) || de.contains("reported a failed migration"),
        "{:?} {de}",
        d.status
    );
}

/// The destination splits each mapping after the hand-over (as mprotect, mlock or madvise
/// on part of a region would): copies that cross the boundary are refused with ENOENT, which
/// must not be taken for the destination's exit. Every page must still arrive.
#[test]
fn a_split_destination_mapping_is_served_in_full() {
    let t = target(8 << 20);
    let src = source_of(&t);
    let (fs, d) = run_pair_to_end(
        &src,
        &t,
        &[],
        &["--pattern", "random", "--split-after-handover"],
    );
    let fe = String::from_utf8_lossy(&fs.stderr);
    assert!(fs.status.success(), "{fe}");
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    let rep: serde_json::Value = serde_json::from_slice(&d.stdout).expect("dest json");
    assert_eq!(rep["mismatches"], 0, "{rep}");
    assert_eq!(rep["zero_pages"], 0, "{rep}");
    assert_eq!(rep["pages_verified"], rep["pages_total"], "{rep}");
    assert!(committed(&src));
}

/// A failure while the destination keeps a non-cooperative event pending most of the time
/// (a thread discarding a registered scratch mapping in a loop, as an allocator's free()
/// does): poisoning is refused with EAGAIN until the events are read, and the fault server
/// must read them and finish failing closed, not spin.
#[test]
fn failing_closed_reads_pending_events_instead_of_spinning() {
    let mut t = target(4 << 20);
    let src = source_of(&t);
    let dir = tempfile::tempdir().expect("tmp");
    let (mut fs, d) = run_pair(
        dir.path(),
        &src,
        &t,
        &["--no-prefetch"],
        &["--pattern", "seq", "--touch-delay-us", "2000", "--churn"],
    );
    std::thread::sleep(Duration::from_millis(400));
    assert!(src.responder.revoke_grant(src.grant.id.0) > 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fs.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = fs.kill();
            let _ = fs.wait();
            panic!("fault-serve did not finish failing closed within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let fs = fs.wait_with_output().expect("fs");
    let d = d.wait_with_output().expect("dest");
    let _ = &mut t;
    assert_failed_closed(&fs, &d, committed(&src), "remote access error");
}
