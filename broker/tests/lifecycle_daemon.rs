//! The broker as a daemon: policy reload (one that revokes a grant, and bad ones that keep
//! the last good policy), refusing to start without a valid policy, SIGTERM (revokes
//! everything, answers waiters, exits 0) and systemd socket activation.

mod support;

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use memgate_proto::{Request, Response, WaitRequest, WaitState};
use support::*;

fn serial(client: &mut memgate_proto::BrokerClient) -> u64 {
    match client.call(&Request::Status, &[]).expect("status") {
        Response::Status(s) => s.policy_serial,
        other => panic!("{other:?}"),
    }
}

fn live_grants(client: &mut memgate_proto::BrokerClient) -> usize {
    list_grants(client).len()
}

#[test]
fn reload_that_no_longer_allows_a_grant_revokes_it() {
    let (pki, broker, target, token, mut client) = scene(11, 1);
    let g = export_filled(&mut client, &target, &token, 600);

    // Serial 2 still allows it (larger limits): the grant survives.
    let mut spec = PolicySpec::new();
    spec.serial = 2;
    spec.max_bytes = 2 << 30;
    broker.install_policy(&pki, &spec.toml(&pki));
    assert!(
        broker.reload(),
        "reload acknowledged with RELOADING=1 then READY=1"
    );
    assert_eq!(serial(&mut client), 2);
    assert_eq!(live_grants(&mut client), 1);

    // Serial 3 no longer lets the issuer authorise uid 0: the grant is revoked.
    spec.serial = 3;
    spec.uids = vec![test_uid(99)];
    broker.install_policy(&pki, &spec.toml(&pki));
    assert!(broker.reload());
    assert_eq!(serial(&mut client), 3);
    let rec =
        audit_of(&broker, "revoke", g.id, Duration::from_secs(5)).expect("revoked by the reload");
    assert_eq!(rec["cause"], "policy_reload");
    assert!(audit_of(&broker, "policy_recheck", g.id, Duration::from_secs(1)).is_some());
    assert_eq!(live_grants(&mut client), 0);
    let w = wait_result(&mut client, g.id, 10);
    assert_eq!(w.state, WaitState::Revoked);
    assert_eq!(w.cause.as_deref(), Some("policy_reload"));
}

#[test]
fn bad_reloads_keep_the_last_good_policy() {
    let pki = Pki::generate();
    let mut spec = PolicySpec::new();
    spec.serial = 5;
    let broker = Broker::start(&pki, &spec.toml(&pki)).expect("broker");
    let target = Target::spawn(test_uid(12), 1).expect("target");
    let mut client = broker.client();
    let token = pki.token(&TokenSpec::for_target(&target));
    let g = export_filled(&mut client, &target, &token, 600);

    // Tampered: signed text differs from the file.
    spec.serial = 6;
    let good = spec.toml(&pki);
    broker.install_policy(&pki, &good);
    std::fs::write(
        &broker.policy_path,
        good.replace("uids = [0]", "uids = [0, 1]"),
    )
    .expect("tamper");
    assert!(broker.reload());
    let rec = broker
        .wait_audit("policy_reject", Duration::from_secs(5), |_| true)
        .expect("rejection audited");
    assert_eq!(rec["code"], "policy_signature_invalid");
    assert_eq!(rec["kept_serial"], 5);

    // Signed by a key that is not an admin key.
    let other = Pki::generate();
    broker.install_policy(&other, &good);
    assert!(broker.reload());
    assert!(broker
        .wait_audit("policy_reject", Duration::from_secs(5), |v| v["code"]
            == "policy_signature_invalid"
            && v["ts"] != rec["ts"])
        .is_some());

    // Validly signed but older: rollback refused.
    spec.serial = 4;
    broker.install_policy(&pki, &spec.toml(&pki));
    assert!(broker.reload());
    let rb = broker
        .wait_audit("policy_reject", Duration::from_secs(5), |v| {
            v["code"] == "policy_rollback"
        })
        .expect("rollback audited");
    assert_eq!(rb["kept_serial"], 5);

    // Signed, valid document with an unknown key: refused as invalid.
    spec.serial = 7;
    spec.extra = "colour = \"blue\"".into();
    broker.install_policy(&pki, &spec.toml(&pki));
    assert!(broker.reload());
    assert!(broker
        .wait_audit("policy_reject", Duration::from_secs(5), |v| v["code"]
            == "policy_invalid")
        .is_some());

    assert_eq!(
        serial(&mut client),
        5,
        "the last good policy stays in force"
    );
    assert_eq!(live_grants(&mut client), 1, "and so does the grant");
    assert!(broker.audit().iter().all(|v| v["event"] != "revoke"));
    let _ = g;
}

#[test]
fn refuses_to_start_without_a_valid_policy() {
    let pki = Pki::generate();
    let other = Pki::generate();
    let policy = PolicySpec::new().toml(&pki);
    // The policy is signed by a key that is not an admin key.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("admin.pub"),
        pki.admin.public().to_file_text(),
    )
    .expect("key");
    std::fs::write(dir.path().join("policy.toml"), &policy).expect("policy");
    std::fs::write(dir.path().join("policy.toml.minisig"), other.sign(&policy)).expect("sig");
    std::fs::write(
        dir.path().join("m.toml"),
        "socket = \"b.sock\"\nlog_target = \"stderr\"\nstate_dir = \"state\"\n[policy]\npath = \"policy.toml\"\n\
         admin_keys = [\"admin.pub\"]\n[fabric]\nlisten = \"tcp:127.0.0.1:0\"\n\
         [audit]\npath = \"audit.jsonl\"\njournal = false\n",
    )
    .expect("config");
    let out = Command::new(memgated_bin())
        .arg("--config")
        .arg(dir.path().join("m.toml"))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to start"));
    assert!(!dir.path().join("b.sock").exists(), "nothing was served");
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("audit");
    let v: serde_json::Value =
        serde_json::from_str(audit.lines().next().expect("a record")).expect("json");
    assert_eq!(v["event"], "policy_reject");
    assert_eq!(v["code"], "policy_signature_invalid");
}

#[test]
fn sigterm_revokes_every_grant_answers_waiters_and_exits_zero() {
    let pki = Pki::generate();
    let mut broker = Broker::start(&pki, &PolicySpec::new().toml(&pki)).expect("broker");
    let t1 = Target::spawn(test_uid(13), 1).expect("target");
    let t2 = Target::spawn(test_uid(14), 1).expect("target");
    let mut client = broker.client();
    let g1 = granted(export(
        &mut client,
        &t1,
        &pki.token(&TokenSpec::for_target(&t1)),
        Some(vec![(t1.addr, t1.len)]),
        600,
    ));
    let g2 = granted(export(
        &mut client,
        &t2,
        &pki.token(&TokenSpec::for_target(&t2)),
        Some(vec![(t2.addr, t2.len)]),
        600,
    ));

    // A parked Wait on g1.
    let mut waiter = broker.client();
    let frame = Request::Wait(WaitRequest {
        grant: g1.id,
        timeout_ms: 30_000,
    })
    .encode()
    .expect("encode");
    memgate_proto::transport::send_frame(waiter.socket(), &frame, &[]).expect("send");
    std::thread::sleep(Duration::from_millis(100));

    let socket = broker.socket.clone();
    let audit_path = broker.audit_path.clone();
    broker.signal(rustix::process::Signal::TERM);
    assert!(broker
        .wait_notify("STOPPING=1", Duration::from_secs(10))
        .is_some());
    match waiter.recv() {
        Ok(Response::WaitResult(w)) => {
            assert_eq!(w.state, WaitState::Revoked);
            assert_eq!(w.cause.as_deref(), Some("shutdown"));
        }
        other => panic!("waiter got {other:?}"),
    }
    let status = broker.terminate(Duration::from_secs(10)).expect("exited");
    assert_eq!(status.code(), Some(0));
    assert!(!socket.exists(), "the socket file is removed");
    let audit: Vec<serde_json::Value> = std::fs::read_to_string(&audit_path)
        .expect("audit")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    for g in [&g1, &g2] {
        let r = audit
            .iter()
            .find(|v| v["event"] == "revoke" && v["grant"] == g.id.to_string())
            .expect("revoke record");
        assert_eq!(r["cause"], "shutdown");
    }
    let last = audit.last().expect("records");
    assert_eq!(last["event"], "shutdown");
    assert_eq!(last["revoked"], 2);
}

#[test]
fn socket_activation_serves_the_passed_socket() {
    let pki = Pki::generate();
    let policy = PolicySpec::new().toml(&pki);
    // Files as the harness writes them, but the broker is started through a shell that
    // sets LISTEN_PID to its own pid and execs memgated with our socket as fd 3.
    let mut b = Broker::spawn(&pki, &policy, "", &["--check-config"]).expect("files");
    let _ = b.child.wait();
    let act = b.dir.path().join("activated.sock");
    let listener = rustix::net::socket(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        None,
    )
    .expect("socket");
    rustix::net::bind(
        &listener,
        &rustix::net::SocketAddrUnix::new(&act).expect("addr"),
    )
    .expect("bind");
    rustix::net::listen(&listener, 16).expect("listen");
    let raw = listener.as_fd().as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$0\" --config \"$1\"")
        .arg(memgated_bin())
        .arg(&b.config_path)
        .env("NOTIFY_SOCKET", b.dir.path().join("notify.sock"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only dup2 (async-signal-safe) runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn");
    let ready = b.wait_notify("READY=1", Duration::from_secs(20));
    let result = (|| {
        ready.ok_or("not ready")?;
        let mut c = memgate_proto::BrokerClient::connect(&act).map_err(|e| e.to_string())?;
        match c.call(&Request::Status, &[]).map_err(|e| e.to_string())? {
            Response::Status(s) if s.policy_serial == 1 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })();
    let own = b.socket.exists();
    let _ = child.kill();
    let _ = child.wait();
    result.expect("the activated socket serves");
    assert!(!own, "no socket of its own is bound under activation");
}
