//! Fault injection mid-migration through the real broker: the requester (`memgate export
//! --wait-commit`), the fault server (`memgate fault-serve`) and a slow destination
//! workload run as separate processes; then the broker, the fault server or the source is
//! killed, or the grant revoked. Each time the destination stops with a clear error and
//! never reads a wrong or zero page, the grant is never committed, and nothing stays
//! registered in the broker.

use memgate_tests::{bin, demo_target, eventually, Lab, Proc, SIGBUS, SIGKILL};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

struct Run {
    lab: Lab,
    target: Proc,
    export: Proc,
    fault_server: Proc,
    dest: Proc,
    grant_id: String,
}

fn start(tag: &str) -> Run {
    start_with(tag, &["--pattern", "seq", "--touch-delay-us", "2000"])
}

/// Like [`start`], with the destination's touch options `dest_args`.
fn start_with(tag: &str, dest_args: &[&str]) -> Run {
    let lab = Lab::start(tag);
    let (target, line) = demo_target(6291456, 5);
    let info: serde_json::Value = serde_json::from_str(&line).expect("info json");
    let regions: Vec<String> = info["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .map(|r| {
            format!(
                "{:x}:{:x}",
                r["addr"].as_u64().unwrap_or(0),
                r["len"].as_u64().unwrap_or(0)
            )
        })
        .collect();
    let pid = target.pid();
    let grant = lab.dir.path().join("grant.json");
    let export = Proc::new(
        Command::new(bin("memgate"))
            .args([
                "export",
                "--pid",
                &pid.to_string(),
                "--regions",
                &regions.join(","),
            ])
            .arg("--token")
            .arg(format!("@{}", lab.token_file(pid).display()))
            .arg("--socket")
            .arg(&lab.socket)
            .arg("--out")
            .arg(&grant)
            .args(["--wait-commit", "30"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("export"),
    );
    let mut grant_id = String::new();
    assert!(
        eventually(20, || {
            let text = std::fs::read_to_string(&grant).unwrap_or_default();
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) => {
                    grant_id = v["id"].as_str().unwrap_or_default().to_string();
                    true
                }
                Err(_) => false,
            }
        }),
        "no grant"
    );
    let uffd_sock = lab.dir.path().join("uffd.sock");
    let fault_server = Proc::new(
        Command::new(bin("memgate"))
            .arg("fault-serve")
            .arg("--grant")
            .arg(&grant)
            .arg("--peer-key")
            .arg(&lab.peer_file)
            .arg("--uffd-socket")
            .arg(&uffd_sock)
            .args(["--no-prefetch", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("fault-serve"),
    );
    let dest = Proc::new(
        Command::new(bin("memgate"))
            .args(["__demo-dest", "--info", line.trim()])
            .args(dest_args)
            .arg("--socket")
            .arg(&uffd_sock)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dest"),
    );
    std::thread::sleep(Duration::from_millis(500));
    Run {
        lab,
        target,
        export,
        fault_server,
        dest,
        grant_id,
    }
}

fn assert_destination_failed_closed(dest: Output) {
    let e = String::from_utf8_lossy(&dest.stderr);
    assert!(!dest.status.success(), "destination finished: {e}");
    assert!(
        !e.contains("MISMATCH"),
        "destination read a wrong or zero page: {e}"
    );
    assert!(dest.stdout.is_empty(), "destination reported success");
    // Either the fault server poisoned the missing pages first (the toucher gets SIGBUS),
    // or the destination's watchdog saw the failure report or EOF and stopped it.
    let sigbus = std::os::unix::process::ExitStatusExt::signal(&dest.status) == Some(SIGBUS);
    assert!(
        sigbus || e.contains("memgate demo destination"),
        "no clear error: {e} {:?}",
        dest.status
    );
}

/// `memgate revoke` of the run's grant, which must succeed.
fn revoke(r: &Run) {
    let rv = r.lab.memgate(&["revoke", &r.grant_id]);
    assert!(
        rv.status.success(),
        "{}",
        String::from_utf8_lossy(&rv.stderr)
    );
}

fn assert_nothing_registered(lab: &Lab) {
    assert!(
        eventually(10, || lab
            .status()
            .is_some_and(|s| s.registered_keys == 0 && s.active_grants == 0)),
        "keys left registered: {:?}",
        lab.status()
    );
}

#[test]
fn revoking_mid_migration_fails_closed() {
    let r = start("revoke");
    revoke(&r);
    let fs = r.fault_server.output();
    let fe = String::from_utf8_lossy(&fs.stderr);
    assert!(
        !fs.status.success() && fe.contains("remote access error"),
        "{fe}"
    );
    assert!(fe.contains("grant not committed"), "{fe}");
    assert_destination_failed_closed(r.dest.output());
    let ex = r.export.output();
    assert!(!ex.status.success(), "requester saw a commit");
    assert!(String::from_utf8_lossy(&ex.stderr).contains("revoked"));
    assert_nothing_registered(&r.lab);
    drop(r.target);
}

#[test]
fn killing_the_source_mid_migration_fails_closed() {
    let r = start("source");
    r.target.signal(SIGKILL);
    let fs = r.fault_server.output();
    let fe = String::from_utf8_lossy(&fs.stderr);
    assert!(!fs.status.success(), "{fe}");
    assert!(
        fe.contains("remote") || fe.contains("connection"),
        "unclear error: {fe}"
    );
    assert_destination_failed_closed(r.dest.output());
    let ex = r.export.output();
    assert!(!ex.status.success(), "requester saw a commit");
    assert_nothing_registered(&r.lab);
}

#[test]
fn killing_the_fault_server_mid_migration_fails_closed() {
    let r = start("faultserver");
    r.fault_server.signal(SIGKILL);
    assert_destination_failed_closed(r.dest.output());
    // Not committed: the grant is still active, waiting for a COMMIT that never comes.
    let g = r.lab.memgate(&["grants", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&g.stdout).expect("grants json");
    assert_eq!(list[0]["state"], "active", "{list}");
    // The requester gives up (dies): its grant is revoked with its connection.
    r.export.signal(SIGKILL);
    drop(r.export);
    assert_nothing_registered(&r.lab);
    drop(r.fault_server);
}

#[test]
fn killing_the_broker_mid_migration_fails_closed() {
    let r = start("broker");
    r.lab.broker.signal(SIGKILL);
    let fs = r.fault_server.output();
    let fe = String::from_utf8_lossy(&fs.stderr);
    assert!(!fs.status.success(), "{fe}");
    assert!(fe.contains("connection"), "unclear error: {fe}");
    assert_destination_failed_closed(r.dest.output());
    let ex = r.export.output();
    assert!(!ex.status.success(), "requester saw a commit");
    // Nothing can stay registered: the only holder of registrations is gone.
    assert!(r.lab.status().is_none());
}

/// Exited (a zombie until reaped) or gone.
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// A demand-only fault server whose destination is idle sees no fault, yet notices a
/// revoked grant within seconds (its idle liveness probe READ fails) and fails closed,
/// instead of waiting forever.
#[test]
fn revoking_while_nothing_faults_is_noticed() {
    let r = start_with("idle-revoke", &["--pattern", "idle"]);
    revoke(&r);
    let pid = r.fault_server.pid();
    assert!(
        eventually(10, || exited(pid)),
        "the fault server did not notice the revocation"
    );
    let fs = r.fault_server.output();
    let fe = String::from_utf8_lossy(&fs.stderr);
    assert!(!fs.status.success(), "{fe}");
    assert!(fe.contains("grant not committed"), "{fe}");
    drop(r.dest);
    let ex = r.export.output();
    assert!(!ex.status.success(), "requester saw a commit");
    assert_nothing_registered(&r.lab);
    drop(r.target);
}
