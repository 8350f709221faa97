//! The broker across restarts and failed starts: rollback protection survives a restart
//! (the state file), a failed start leaves no socket file behind, SIGTERM with nothing to
//! revoke exits promptly, and log output to a pipe carries no terminal colour codes.

mod support;

use std::time::{Duration, Instant};

use support::*;

fn policy(pki: &Pki, serial: u64, max_lease: u64) -> String {
    let mut spec = PolicySpec::new();
    spec.serial = serial;
    spec.max_lease = max_lease;
    spec.toml(pki)
}

/// Starts `policy` on the files of `b` and expects a refusal with `code` in the audit log.
fn expect_refused(b: Broker, pki: &Pki, policy: &str, code: &str, words: &str) -> Broker {
    let mut b = b.respawn(pki, policy, &[]).expect("respawn");
    let st = b
        .wait_exit(Duration::from_secs(20))
        .expect("refused start exits");
    assert_eq!(st.code(), Some(1), "{}", b.stderr());
    let err = b.stderr();
    assert!(err.contains(words), "{err}");
    assert!(!err.contains("serving"), "{err}");
    let rec = b
        .audit()
        .into_iter()
        .rev()
        .find(|v| v["event"] == "policy_reject")
        .expect("a policy_reject record");
    assert_eq!(rec["code"], code, "{rec}");
    assert_eq!(rec["at"], "start");
    assert!(!b.socket.exists(), "nothing was served");
    b
}

#[test]
fn an_older_policy_is_refused_after_a_restart_until_the_state_file_is_deleted() {
    let pki = Pki::generate();
    let three = policy(&pki, 3, 3600);
    let b = Broker::start(&pki, &three).expect("broker with serial 3");
    let state = b.dir.path().join("state/policy.state");
    assert!(state.exists(), "the accepted serial is recorded");

    // A validly signed older policy: refused at start, with an audit record.
    let b = expect_refused(
        b,
        &pki,
        &policy(&pki, 1, 3600),
        "policy_rollback",
        "rollback",
    );
    // The same serial with other content: refused too.
    let b = expect_refused(
        b,
        &pki,
        &policy(&pki, 3, 60),
        "policy_rollback",
        "different content",
    );
    // The same document again starts.
    let b = b.respawn(&pki, &three, &[]).expect("respawn");
    b.wait_notify("READY=1", Duration::from_secs(20))
        .expect("the same policy starts again");

    // Recovery as documented: delete the state file, then the older policy is accepted.
    let mut b = b;
    assert!(b.terminate(Duration::from_secs(10)).is_some());
    std::fs::remove_file(&state).expect("delete state");
    let b = b
        .respawn(&pki, &policy(&pki, 1, 3600), &[])
        .expect("respawn");
    b.wait_notify("READY=1", Duration::from_secs(20))
        .expect("an operator may roll back on purpose");
}

#[test]
fn a_serial_accepted_by_reload_is_remembered_across_a_restart() {
    let pki = Pki::generate();
    let b = Broker::start(&pki, &policy(&pki, 1, 3600)).expect("broker");
    b.install_policy(&pki, &policy(&pki, 2, 3600));
    assert!(b.reload(), "reload to serial 2");
    eprintln!("{:?}\n{}", b.audit(), b.stderr());
    let text = std::fs::read_to_string(b.dir.path().join("state/policy.state")).expect("state");
    assert!(text.contains("serial = 2"), "{text}");
    expect_refused(
        b,
        &pki,
        &policy(&pki, 1, 3600),
        "policy_rollback",
        "rollback",
    );
}

#[test]
fn a_damaged_state_file_stops_the_start_and_names_the_file() {
    let pki = Pki::generate();
    let mut b = Broker::start(&pki, &policy(&pki, 1, 3600)).expect("broker");
    assert!(b.terminate(Duration::from_secs(10)).is_some());
    std::fs::write(b.dir.path().join("state/policy.state"), "serial = \"x\"\n").expect("w");
    expect_refused(
        b,
        &pki,
        &policy(&pki, 1, 3600),
        "policy_state_unusable",
        "policy.state",
    );
}

#[test]
fn a_failed_start_leaves_no_socket_file() {
    let pki = Pki::generate();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let listen = format!("tcp:127.0.0.1:{port}");
    let mut b = Broker::spawn(
        &pki,
        &policy(&pki, 1, 3600),
        "",
        &["--fabric-listen", &listen],
    )
    .expect("spawn");
    let st = b.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(st.code(), Some(1), "{}", b.stderr());
    assert!(b.stderr().contains("fabric"), "{}", b.stderr());
    assert!(
        !b.socket.exists(),
        "the API socket file bound before the failure is removed"
    );
}

#[test]
fn sigterm_without_grants_exits_promptly_with_its_audit_records() {
    let pki = Pki::generate();
    let mut b = Broker::start(&pki, &policy(&pki, 1, 3600)).expect("broker");
    let t0 = Instant::now();
    let st = b.terminate(Duration::from_secs(10)).expect("exits");
    let took = t0.elapsed();
    assert_eq!(st.code(), Some(0));
    // The target is < 100 ms; the bound leaves room for a loaded 2-core CI machine while
    // still failing on a poll timeout of a second.
    assert!(took < Duration::from_millis(500), "shutdown took {took:?}");
    let audit = b.audit();
    assert_eq!(audit.last().expect("records")["event"], "shutdown");
}

#[test]
fn log_lines_to_a_pipe_carry_no_colour_codes() {
    let pki = Pki::generate();
    let mut b = Broker::start(&pki, &policy(&pki, 1, 3600)).expect("broker");
    assert!(b.terminate(Duration::from_secs(10)).is_some());
    let err = b.stderr();
    assert!(err.contains("serving"), "{err}");
    assert!(!err.contains('\u{1b}'), "escape codes in {err:?}");
}
