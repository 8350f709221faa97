//! Adversarial tests against the real `memgated` binary: a target process running as
//! another uid, requesters that are separate processes running as other uids (with and
//! without ptrace rights over the target) opening their own fds, and a real signed policy.
//! Each case asserts the specific denial (or error) code and that nothing was registered
//! (`Status`: no grant, no bytes, no fabric key).

mod common;

use std::time::Duration;

use common::broker::Broker;
use common::*;
use memgate_proto::{Access, GrantId, RegionSelection, Request, Response};
use time::OffsetDateTime;

struct World {
    keys: Keys,
    broker: Broker,
    target: Target,
}

impl World {
    fn new() -> World {
        Self::with(PolicySpec::default())
    }

    fn with(spec: PolicySpec) -> World {
        let keys = Keys::generate();
        let broker = Broker::start(&keys, &spec);
        World {
            keys,
            broker,
            target: Target::spawn(TARGET_UID),
        }
    }

    fn claims(&self, uid: u32) -> memgate_policy::Claims {
        claims(&self.keys, uid, &self.target.cgroup())
    }

    fn token(&self, uid: u32) -> String {
        mint(&self.keys, &self.claims(uid))
    }

    fn stack_page(&self) -> RegionSelection {
        self.target.stack_page()
    }

    fn send_raw(&self, uid: u32, pid: i32, fds: &str, frame: &[u8]) -> Response {
        let r = Requester::start(uid, &self.broker.socket, pid, fds, frame, false);
        match r.report() {
            Report::Reply(bytes) => Response::decode(&bytes).expect("reply decodes"),
            other => panic!("requester: {other:?}"),
        }
    }

    fn send(&self, uid: u32, fds: &str, req: &Request) -> Response {
        self.send_raw(uid, self.target.pid, fds, &req.encode().unwrap())
    }

    /// Expects a `Denied` with `code` and no grant registered.
    #[track_caller]
    fn denied(&self, uid: u32, fds: &str, req: &Request, code: &str) {
        let before = self.broker.status().active_grants;
        match self.send(uid, fds, req) {
            Response::Denied(d) => assert_eq!(d.code, code, "{d:?}"),
            other => panic!("expected denial {code}, got {other:?}"),
        }
        assert_eq!(
            self.broker.status().active_grants,
            before,
            "a denied request left a grant"
        );
        if before == 0 {
            self.broker.assert_nothing_registered();
        }
    }

    /// Expects an `Error` reply with `code` and nothing registered.
    #[track_caller]
    fn error(&self, uid: u32, fds: &str, frame: &[u8], code: &str) {
        match self.send_raw(uid, self.target.pid, fds, frame) {
            Response::Error(e) => assert_eq!(e.code, code, "{e:?}"),
            other => panic!("expected error {code}, got {other:?}"),
        }
        self.broker.assert_nothing_registered();
    }

    fn granted(&self, uid: u32, req: &Request) -> memgate_proto::Grant {
        match self.send(uid, FDS, req) {
            Response::Grant(g) => g,
            other => panic!("expected a grant: {other:?} {}", self.broker.stderr()),
        }
    }
}

#[test]
fn control_a_valid_export_is_granted_and_counted() {
    let w = World::new();
    let g = w.granted(TARGET_UID, &read_req(w.token(TARGET_UID), w.stack_page()));
    assert_eq!(g.regions.len(), 1);
    let s = w.broker.status();
    assert_eq!((s.active_grants, s.active_bytes), (1, 4096), "{s:?}");
}

#[test]
fn forged_and_untrusted_tokens() {
    let w = World::new();
    let rogue = memgate_policy::keys::SecretKey::generate().unwrap();
    let forged = memgate_policy::token::mint(&rogue, &w.claims(TARGET_UID), None).unwrap();
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(forged, w.stack_page()),
        "token_signature_invalid",
    );
    let mut c = w.claims(TARGET_UID);
    c.iss = "rogue".into();
    let untrusted = memgate_policy::token::mint(&rogue, &c, None).unwrap();
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(untrusted, w.stack_page()),
        "issuer_unknown",
    );
}

#[test]
fn expired_and_not_yet_valid_tokens() {
    let w = World::new();
    let now = OffsetDateTime::now_utc();
    let mut c = w.claims(TARGET_UID);
    c.iat = now - time::Duration::hours(2);
    c.nbf = c.iat;
    c.exp = now - time::Duration::minutes(5);
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(mint(&w.keys, &c), w.stack_page()),
        "token_expired",
    );
    let mut c = w.claims(TARGET_UID);
    c.nbf = now + time::Duration::minutes(5);
    c.exp = c.nbf + time::Duration::minutes(5);
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(mint(&w.keys, &c), w.stack_page()),
        "token_not_yet_valid",
    );
}

#[test]
fn replayed_token() {
    let w = World::new();
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    w.granted(TARGET_UID, &req);
    w.denied(TARGET_UID, FDS, &req, "token_replayed");
    assert_eq!(w.broker.status().active_grants, 1);
}

#[test]
fn wrong_audience_and_another_uids_token() {
    let w = World::new();
    let mut c = w.claims(TARGET_UID);
    c.aud = "another-broker".into();
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(mint(&w.keys, &c), w.stack_page()),
        "audience_mismatch",
    );
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(w.token(THIRD_UID), w.stack_page()),
        "subject_mismatch",
    );
}

#[test]
fn tampered_policy_refused_at_start() {
    let keys = Keys::generate();
    let good = policy_text(&keys, &PolicySpec::default());
    let sig = keys.sign(&good);
    let tampered = good.replace("max_lease = 600", "max_lease = 86400");
    assert_ne!(good, tampered);
    let mut b = Broker::spawn(&keys, &tampered, Some(&sig));
    let status = b
        .wait_exit(Duration::from_secs(20))
        .expect("memgated must refuse to start");
    assert!(!status.success());
    let audit = b.audit();
    assert!(
        audit
            .iter()
            .any(|r| r.to_string().contains("policy_signature_invalid")),
        "{audit:?} {}",
        b.stderr()
    );
    assert!(!b.socket.exists(), "no API socket without a valid policy");
}

#[test]
fn tampered_and_rolled_back_policies_refused_at_reload() {
    let keys = Keys::generate();
    let spec = PolicySpec {
        serial: 5,
        ..PolicySpec::default()
    };
    let b = Broker::start(&keys, &spec);
    assert_eq!(b.status().policy_serial, 5);
    // Tampered: serial 6 text with the signature of another document.
    let v6 = policy_text(
        &keys,
        &PolicySpec {
            serial: 6,
            ..spec.clone()
        },
    );
    let other = keys.sign(&policy_text(
        &keys,
        &PolicySpec {
            serial: 7,
            ..spec.clone()
        },
    ));
    b.reload(&v6, &other);
    assert_eq!(b.status().policy_serial, 5);
    // Rolled back: a validly signed older serial.
    let v4 = policy_text(
        &keys,
        &PolicySpec {
            serial: 4,
            ..spec.clone()
        },
    );
    b.reload(&v4, &keys.sign(&v4));
    assert_eq!(b.status().policy_serial, 5);
    let audit = b.audit();
    let rejects: Vec<String> = audit
        .iter()
        .filter(|r| r.to_string().contains("policy_reject"))
        .map(|r| r.to_string())
        .collect();
    assert!(
        rejects
            .iter()
            .any(|r| r.contains("policy_signature_invalid")),
        "{rejects:?}"
    );
    assert!(
        rejects.iter().any(|r| r.contains("policy_rollback")),
        "{rejects:?}"
    );
    // And a valid newer one is taken, so the refusals were about the documents.
    b.reload(&v6, &keys.sign(&v6));
    assert_eq!(b.status().policy_serial, 6);
    b.assert_nothing_registered();
}

#[test]
fn requester_without_ptrace_rights() {
    let w = World::new();
    let req = read_req(w.token(OTHER_UID), w.stack_page());
    // The kernel refuses it the target's mem.
    let r = Requester::start(
        OTHER_UID,
        &w.broker.socket,
        w.target.pid,
        FDS,
        &req.encode().unwrap(),
        false,
    );
    match r.report() {
        Report::OpenError(errno, _) => assert_eq!(errno, libc::EACCES),
        Report::Reply(_) => panic!("a uid without ptrace rights opened the target's mem"),
    }
    // Its own process's mem with the target's pidfd does not match.
    let own = Target::spawn(OTHER_UID);
    w.denied(
        OTHER_UID,
        &format!("pidfd,mem:{0},maps:{0}", own.pid),
        &req,
        "mem_fd_mismatch",
    );
    w.denied(
        OTHER_UID,
        "pidfd,selfmem,selfmaps",
        &req,
        "mem_fd_is_requester",
    );
}

#[test]
fn non_dumpable_target_refuses_even_its_own_uid() {
    let w = World::new();
    let locked = Target::spawn_with(TARGET_UID, &["--undumpable"]);
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    let r = Requester::start(
        TARGET_UID,
        &w.broker.socket,
        locked.pid,
        FDS,
        &req.encode().unwrap(),
        false,
    );
    match r.report() {
        Report::OpenError(errno, _) => assert_eq!(errno, libc::EACCES),
        Report::Reply(_) => panic!("the mem of a non-dumpable process was opened by its uid"),
    }
    // With the readable target's fds but the locked target's pidfd: no match.
    let fds = format!("pidfd:{},mem,maps", locked.pid);
    w.denied(TARGET_UID, &fds, &req, "mem_fd_mismatch");
}

#[test]
fn mem_fd_of_another_process_and_of_the_requester() {
    let w = World::new();
    let second = Target::spawn(TARGET_UID);
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    let fds = format!("pidfd,mem:{},maps", second.pid);
    w.denied(TARGET_UID, &fds, &req, "mem_fd_mismatch");
    let fds = format!("pidfd,mem,maps:{}", second.pid);
    w.denied(TARGET_UID, &fds, &req, "maps_fd_mismatch");
    w.denied(TARGET_UID, "pidfd,mem,mem", &req, "maps_fd_invalid");
    // Two fds are not enough.
    w.denied(TARGET_UID, "pidfd,mem", &req, "fd_count");
    w.denied(
        TARGET_UID,
        "pidfd,selfmem,maps",
        &req,
        "mem_fd_is_requester",
    );
}

#[test]
fn stale_pidfd_after_target_exit() {
    let mut w = World::new();
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    let mut r = Requester::start(
        TARGET_UID,
        &w.broker.socket,
        w.target.pid,
        FDS,
        &req.encode().unwrap(),
        true,
    );
    w.target.kill();
    r.go();
    match r.report() {
        Report::Reply(b) => match Response::decode(&b).unwrap() {
            Response::Denied(d) => assert_eq!(d.code, "target_exited", "{d:?}"),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    w.broker.assert_nothing_registered();
}

#[test]
fn cgroup_outside_the_policy() {
    let w = World::with(PolicySpec {
        cgroups: vec!["/memgate-test-only/**".into()],
        ..PolicySpec::default()
    });
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(w.token(TARGET_UID), w.stack_page()),
        "cgroup_not_allowed",
    );
}

#[test]
fn bad_regions() {
    let w = World::new();
    let (s, e) = w.target.mapping("[stack]");
    let t = || w.token(TARGET_UID);
    // The stack is followed by unmapped space on x86-64 (vvar sits elsewhere or after a gap).
    let next = w.target.maps().into_iter().find(|m| m.0 >= e).map(|m| m.0);
    if next.is_none_or(|n| n > e) {
        w.denied(
            TARGET_UID,
            FDS,
            &read_req(t(), list(&[(s, e - s + 4096)])),
            "region_unmapped",
        );
    }
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(t(), list(&[(0xffff_ffff_ffff_f000, 0x2000)])),
        "region_overflow",
    );
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(t(), list(&[(s + 16, 4096)])),
        "region_unaligned",
    );
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(t(), list(&[(s, 0)])),
        "region_empty",
    );
    let (v, _) = w.target.mapping("[vvar]");
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(t(), list(&[(v, 4096)])),
        "mapping_forbidden",
    );
}

#[test]
fn read_write_without_permission() {
    let w = World::new();
    let req = export(w.token(TARGET_UID), w.stack_page(), Access::ReadWrite);
    w.denied(TARGET_UID, "pidfd,memrw,maps", &req, "access_not_allowed");
}

#[test]
fn quota_exceeded() {
    let w = World::with(PolicySpec {
        grants_per_uid: 1,
        ..PolicySpec::default()
    });
    w.granted(TARGET_UID, &read_req(w.token(TARGET_UID), w.stack_page()));
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(w.token(TARGET_UID), w.stack_page()),
        "grants_per_uid_exceeded",
    );
    assert_eq!(w.broker.status().active_grants, 1);
}

#[test]
fn request_rate_exceeded() {
    let w = World::with(PolicySpec {
        rps: 1,
        ..PolicySpec::default()
    });
    let bad = read_req(w.token(TARGET_UID), list(&[]));
    w.denied(TARGET_UID, FDS, &bad, "no_regions");
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(w.token(TARGET_UID), w.stack_page()),
        "rate_limited",
    );
}

#[test]
fn oversized_and_malformed_messages() {
    let w = World::new();
    let mut big = memgate_proto::MAGIC.to_vec();
    big.resize(memgate_proto::MAX_MESSAGE + 4096, b' ');
    w.error(TARGET_UID, FDS, &big, "frame_too_large");
    w.error(TARGET_UID, FDS, b"GET / HTTP/1.1\r\n\r\n", "bad_magic");
    let mut frame = read_req(w.token(TARGET_UID), w.stack_page())
        .encode()
        .unwrap();
    let body = String::from_utf8_lossy(&frame[memgate_proto::HEADER_LEN..])
        .replace("lease_secs", "lease_secz");
    frame.truncate(memgate_proto::HEADER_LEN);
    frame.extend_from_slice(body.as_bytes());
    w.error(TARGET_UID, FDS, &frame, "malformed_body");
}

#[test]
fn wrong_fd_count_and_kind() {
    let w = World::new();
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    w.denied(TARGET_UID, "pidfd", &req, "fd_count");
    w.denied(TARGET_UID, "pidfd,mem,maps,devnull", &req, "fd_count");
    w.denied(TARGET_UID, "devnull,mem,maps", &req, "pidfd_invalid");
    w.denied(TARGET_UID, "pidfd,devnull,maps", &req, "mem_fd_invalid");
    w.error(
        TARGET_UID,
        "pidfd",
        &Request::List.encode().unwrap(),
        "unexpected_fds",
    );
}

#[test]
fn revoke_of_someone_elses_grant() {
    let w = World::new();
    let g = w.granted(TARGET_UID, &read_req(w.token(TARGET_UID), w.stack_page()));
    let revoke = Request::Revoke { grant: g.id };
    match w.send(OTHER_UID, "none", &revoke) {
        Response::Denied(d) => assert_eq!(d.code, "not_owner", "{d:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.broker.status().active_grants, 1, "the grant must survive");
    let unknown = Request::Revoke {
        grant: GrantId([7; 16]),
    };
    match w.send(OTHER_UID, "none", &unknown) {
        Response::Error(e) => assert_eq!(e.code, "unknown_grant", "{e:?}"),
        other => panic!("{other:?}"),
    }
    // The owner may revoke it: the refusal above was about who asked.
    match w.send(TARGET_UID, "none", &revoke) {
        Response::WaitResult(r) => assert_eq!(r.state, memgate_proto::WaitState::Revoked),
        other => panic!("{other:?}"),
    }
    w.broker.assert_nothing_registered();
}
