//! Grant lifecycle against the real broker binary: export, list, status, revoke (owner
//! and non-owner), lease expiry, target exit, and Wait/commit through a real fabric
//! connection that reads the target's memory.

mod support;

use std::time::Duration;

use memgate_fabric::{Connection, Endpoint, WcStatus};
use memgate_proto::{Grant, GrantState, Request, Response, WaitRequest, WaitState};
use support::*;

/// A fault server's authenticated fabric connection for grant `g`.
fn connect(pki: &Pki, g: &Grant) -> Connection {
    let ep = Endpoint::parse(&g.endpoint).expect("endpoint");
    Connection::connect(&ep, g.id.0, *pki.peer.seed()).expect("fabric connect")
}

/// Reads `len` bytes at `addr` through the grant's first key on `c`.
fn read_on(c: &mut Connection, g: &Grant, addr: u64, len: u32) -> (WcStatus, Vec<u8>) {
    c.post_read(1, addr, len, g.regions[0].rkey).expect("post");
    let mut out = Vec::new();
    while out.is_empty() {
        c.wait_completions(&mut out, Some(Duration::from_secs(10)))
            .expect("completion");
    }
    let comp = out.remove(0);
    (comp.status, comp.data.to_vec())
}

/// Reads on a new connection; returns the connection too.
fn read(pki: &Pki, g: &Grant, addr: u64, len: u32) -> (WcStatus, Vec<u8>, Connection) {
    let mut c = connect(pki, g);
    let (s, d) = read_on(&mut c, g, addr, len);
    (s, d, c)
}

#[test]
fn export_read_commit_wait_and_target_exit() {
    let (pki, broker, target, token, mut client) = scene(1, 4);
    let g = export_filled(&mut client, &target, &token, 60);
    assert_eq!(g.regions.len(), 1);
    assert_eq!(
        (g.regions[0].addr, g.regions[0].len),
        (target.addr, target.len)
    );
    assert_eq!(g.peer, pki.peer.public().to_paserk());

    // The fault server's view: the bytes are the target's.
    let (status, data, mut conn) = read(&pki, &g, target.addr + 4096, 8192);
    assert_eq!(status, WcStatus::Success);
    for (i, b) in data.iter().enumerate() {
        assert_eq!(*b, pattern(target.seed, 4096 + i as u64), "byte {i}");
    }

    // Wait parks until the peer commits over its authenticated connection.
    let mut waiter = broker.client();
    let socket = waiter.socket().try_clone_to_owned().expect("dup");
    let frame = Request::Wait(WaitRequest {
        grant: g.id,
        timeout_ms: 10_000,
    })
    .encode()
    .expect("encode");
    memgate_proto::transport::send_frame(std::os::fd::AsFd::as_fd(&socket), &frame, &[])
        .expect("send wait");
    std::thread::sleep(Duration::from_millis(100));
    conn.commit(g.id.0).expect("commit");
    match waiter.recv().expect("wait reply") {
        Response::WaitResult(w) => assert_eq!(w.state, WaitState::Committed),
        other => panic!("{other:?}"),
    }
    assert!(audit_of(&broker, "commit", g.id, Duration::from_secs(5)).is_some());
    let l = list_grants(&mut client);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].state, GrantState::Committed);
    assert_eq!(l[0].target_pid, target.pid);

    // The requester releases the source: the target exits, the broker revokes.
    let pid = target.pid;
    target.exit();
    let rec =
        audit_of(&broker, "revoke", g.id, Duration::from_secs(5)).expect("revoked on target exit");
    assert_eq!(rec["cause"], "target_exit");
    assert_eq!(rec["target_pid"], pid);
    // A late Wait still learns the grant was committed.
    let w = wait_result(&mut client, g.id, 100);
    assert_eq!(w.state, WaitState::Committed);
    assert!(list_grants(&mut client).is_empty());
}

#[test]
fn target_exit_revokes_an_uncommitted_grant_and_reads_fail() {
    let (pki, broker, target, token, mut client) = scene(2, 2);
    let g = export_filled(&mut client, &target, &token, 60);
    let (status, _, mut conn) = read(&pki, &g, target.addr, 4096);
    assert_eq!(status, WcStatus::Success);
    target.exit();
    let rec = audit_of(&broker, "revoke", g.id, Duration::from_secs(5)).expect("revoked");
    assert_eq!(rec["cause"], "target_exit");
    assert_eq!(rec["committed"], false);
    let (status, data) = read_on(&mut conn, &g, g.regions[0].addr, 4096);
    assert_eq!(status, WcStatus::RemoteAccessError);
    assert!(data.is_empty());
    let w = wait_result(&mut client, g.id, 100);
    assert_eq!(w.state, WaitState::Revoked);
    assert_eq!(w.cause.as_deref(), Some("target_exit"));
}

#[test]
fn lease_expiry_revokes_and_wait_reports_it() {
    let (pki, broker, target, token, mut client) = scene(3, 1);
    let g = export_filled(&mut client, &target, &token, 1);
    let mut conn = connect(&pki, &g);
    let start = std::time::Instant::now();
    let w = wait_result(&mut client, g.id, 10_000);
    assert_eq!(w.state, WaitState::Expired);
    assert!(start.elapsed() < Duration::from_secs(5), "expired in time");
    let rec = audit_of(&broker, "expire", g.id, Duration::from_secs(2)).expect("expiry audited");
    assert_eq!(rec["cause"], "expired");
    let (status, _) = read_on(&mut conn, &g, g.regions[0].addr, 4096);
    assert_eq!(status, WcStatus::RemoteAccessError);
}

#[test]
fn revoke_by_owner_works_and_by_another_uid_is_refused() {
    let (pki, broker, target, token, mut client) = scene(4, 1);
    let g = export_filled(&mut client, &target, &token, 60);

    // Another uid (a child process running as uid 61005) asks to revoke it.
    let code = revoke_as(test_uid(5), &broker, g.id);
    assert_eq!(code, "not_owner");
    assert!(broker
        .wait_audit("revoke_deny", Duration::from_secs(2), |v| v["uid"]
            == test_uid(5))
        .is_some());
    // Still live and readable.
    let (status, _, mut conn) = read(&pki, &g, g.regions[0].addr, 4096);
    assert_eq!(status, WcStatus::Success);

    match client
        .call(&Request::Revoke { grant: g.id }, &[])
        .expect("revoke")
    {
        Response::WaitResult(w) => {
            assert_eq!(w.state, WaitState::Revoked);
            assert_eq!(w.cause.as_deref(), Some("explicit"));
        }
        other => panic!("{other:?}"),
    }
    let rec = audit_of(&broker, "revoke", g.id, Duration::from_secs(2)).expect("audited");
    assert_eq!(rec["cause"], "explicit");
    assert_eq!(rec["by_uid"], 0);
    let (status, _) = read_on(&mut conn, &g, g.regions[0].addr, 4096);
    assert_eq!(status, WcStatus::RemoteAccessError);
}

#[test]
fn requester_disconnect_revokes_only_grants_that_asked_for_it() {
    use memgate_proto::{ExportRequest, RegionSelection, RegionSpec};
    use std::os::fd::AsFd;
    let pki = Pki::generate();
    let broker = Broker::start(&pki, &PolicySpec::new().toml(&pki)).expect("broker");
    let target = Target::spawn(test_uid(6), 2).expect("target");
    let fds = target.fds();
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let request = |bound: bool| {
        Request::Export(ExportRequest {
            token: pki.token(&TokenSpec::for_target(&target)),
            regions: RegionSelection::List(vec![RegionSpec {
                addr: target.addr,
                len: PAGE,
            }]),
            access: memgate_proto::Access::Read,
            lease_secs: 600,
            revoke_on_disconnect: bound,
        })
    };
    let mut requester = broker.client();
    let bound = granted(requester.call(&request(true), &borrowed).expect("export"));
    let free = granted(requester.call(&request(false), &borrowed).expect("export"));
    // The requester vanishes (as if it crashed): its connection closes.
    drop(requester);
    let rec =
        audit_of(&broker, "revoke", bound.id, Duration::from_secs(5)).expect("bound grant revoked");
    assert_eq!(rec["cause"], "disconnect");
    let mut other = broker.client();
    let l = list_grants(&mut other);
    assert_eq!(l.len(), 1, "the other grant outlives the connection");
    assert_eq!(l[0].grant.id, free.id);
    // The broker still serves: the freed quota is usable again.
    let again = granted(other.call(&request(true), &borrowed).expect("export"));
    assert_ne!(again.id, bound.id);
}
