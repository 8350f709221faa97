//! Adversarial tests of the admission pipeline, run against real processes: a target
//! running as another uid, requesters (separate processes, started with setuid/setgid)
//! that open their own pidfd and `/proc/<pid>/mem` fds — so the kernel's ptrace check
//! applies to them — and send them over a real `SOCK_SEQPACKET` connection, whose
//! `SO_PEERCRED` the pipeline reads. Each case asserts the specific denial code and that
//! nothing was admitted (no `Admitted` value, the token id not consumed).

mod common;

use std::os::fd::AsFd;

use common::*;
use memgate_policy::{MappingKind, Policy, Usage};
use memgate_proto::{Access, RegionSelection, Request, Response};
use memgated::admission::{admit, AdmissionConfig, AdmissionState, Admitted, Denial, Input};
use time::{Duration, OffsetDateTime};

/// One test world: keys, a policy, a listener, a target, the pipeline state.
struct World {
    keys: Keys,
    policy: Policy,
    listener: Listener,
    target: Target,
    state: AdmissionState,
    usage: Usage,
}

impl World {
    fn new() -> World {
        Self::with(PolicySpec::default())
    }

    fn with(spec: PolicySpec) -> World {
        let keys = Keys::new();
        let policy = policy(&keys, &spec);
        World {
            keys,
            policy,
            listener: Listener::new(),
            target: Target::spawn(TARGET_UID),
            state: AdmissionState::new(AdmissionConfig::default()),
            usage: Usage::default(),
        }
    }

    /// Default claims for `uid` on the target.
    fn claims(&self, uid: u32) -> memgate_policy::Claims {
        claims(&self.keys, uid, &self.target.cgroup())
    }

    fn token(&self, uid: u32) -> String {
        mint(&self.keys, &self.claims(uid))
    }

    /// The lowest page of the target's stack.
    fn stack_page(&self) -> RegionSelection {
        let (s, _) = self.target.mapping("[stack]");
        list(&[(s, 4096)])
    }

    /// Runs one request from a requester with `uid` sending `fds` about `pid`.
    fn run_raw(&mut self, uid: u32, pid: i32, fds: &str, frame: &[u8]) -> Result<Admitted, Denial> {
        let mut r = Requester::start(uid, &self.listener.path, pid, fds, frame, false);
        self.serve(&mut r)
    }

    fn serve(&mut self, r: &mut Requester) -> Result<Admitted, Denial> {
        let got = match self.listener.receive(r) {
            Ok(g) => g,
            Err(report) => panic!("requester did not send: {report:?}"),
        };
        let outcome = match Request::decode(&got.frame) {
            Err(e) => Err(Denial::new(e.code(), e.to_string())),
            Ok(Request::Export(req)) => admit(
                Input {
                    socket: got.conn.as_fd(),
                    request: &req,
                    fds: got.fds,
                    usage: self.usage,
                },
                &self.policy,
                &mut self.state,
                OffsetDateTime::now_utc(),
            ),
            Ok(other) => panic!("not an export: {other:?}"),
        };
        let reply = match &outcome {
            Ok(_) => Response::error("test", "admitted"),
            Err(d) => Response::Denied(d.to_proto()),
        };
        let _ = memgate_proto::transport::send_frame(
            got.conn.as_fd(),
            &reply.encode().expect("encode"),
            &[],
        );
        outcome
    }

    fn run(&mut self, uid: u32, fds: &str, req: &Request) -> Result<Admitted, Denial> {
        let pid = self.target.pid;
        self.run_raw(uid, pid, fds, &req.encode().expect("encode"))
    }

    /// Expects a denial with `code`, and that nothing was admitted or consumed.
    #[track_caller]
    fn denied(&mut self, uid: u32, fds: &str, req: &Request, code: &str) -> Denial {
        let before = self.state.replay.len();
        let d = match self.run(uid, fds, req) {
            Ok(a) => panic!("admitted, expected {code}: {a:?}"),
            Err(d) => d,
        };
        assert_eq!(d.code, code, "{d}");
        assert_eq!(
            self.state.replay.len(),
            before,
            "a denied request consumed a token id"
        );
        d
    }
}

/// What a requester sends with an export: pidfd, mem and maps of the target.
const FDS: &str = "pidfd,mem,maps";

fn read_req(token: String, regions: RegionSelection) -> Request {
    export(token, regions, Access::Read)
}

#[test]
fn control_allowed_request_is_admitted() {
    let mut w = World::new();
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    let a = w.run(TARGET_UID, FDS, &req).expect("admitted");
    assert_eq!(a.uid, TARGET_UID);
    assert_eq!(a.target.pid, w.target.pid);
    assert_eq!(a.regions.len(), 1);
    assert_eq!(a.regions[0].kind, MappingKind::Stack);
    assert_eq!(a.bytes, 4096);
    assert_eq!(a.peer, *w.keys.peer.public().as_bytes());
    assert_eq!(w.state.replay.len(), 1);
}

#[test]
fn all_expands_to_exactly_the_exportable_mappings() {
    let mut w = World::new();
    let req = read_req(w.token(TARGET_UID), RegionSelection::All);
    let a = w.run(TARGET_UID, FDS, &req).expect("admitted");
    let want: Vec<(u64, u64)> = w
        .target
        .maps()
        .into_iter()
        .filter(|(_, _, perms, path)| {
            perms.starts_with('r')
                && perms.ends_with('p')
                && (path.is_empty() || path == "[heap]" || path == "[stack]")
        })
        .map(|(s, e, _, _)| (s, e - s))
        .collect();
    let got: Vec<(u64, u64)> = a.regions.iter().map(|r| (r.addr, r.len)).collect();
    assert_eq!(got, want);
    assert!(a.regions.iter().any(|r| r.kind == MappingKind::Stack));
}

#[test]
fn forged_token_signature() {
    let mut w = World::new();
    let mut t = w.token(TARGET_UID);
    // Flip one character in the middle of the signed payload.
    let i = t.len() / 2;
    let c = if t.as_bytes()[i] == b'A' { "B" } else { "A" };
    t.replace_range(i..=i, c);
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(t, w.stack_page()),
        "token_signature_invalid",
    );
}

#[test]
fn tampered_token_claims() {
    // A valid token for uid OTHER, its `sub` rewritten to the requester's uid with the
    // signature kept.
    let mut w = World::new();
    let t = w.token(OTHER_UID);
    let body = t.strip_prefix("v4.public.").unwrap();
    let mut raw = memgate_policy::b64::decode_url(body).unwrap();
    let from = format!("\"sub\":\"{OTHER_UID}\"");
    let to = format!("\"sub\":\"{TARGET_UID}\"");
    let at = raw
        .windows(from.len())
        .position(|x| x == from.as_bytes())
        .unwrap();
    raw[at..at + to.len()].copy_from_slice(to.as_bytes());
    let forged = format!("v4.public.{}", memgate_policy::b64::encode_url(&raw));
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(forged, w.stack_page()),
        "token_signature_invalid",
    );
}

#[test]
fn token_signed_by_another_key_in_a_trusted_issuers_name() {
    let mut w = World::new();
    let rogue = memgate_policy::keys::SecretKey::generate().unwrap();
    let t = memgate_policy::token::mint(&rogue, &w.claims(TARGET_UID), None).unwrap();
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(t, w.stack_page()),
        "token_signature_invalid",
    );
}

#[test]
fn untrusted_issuer() {
    let mut w = World::new();
    let rogue = memgate_policy::keys::SecretKey::generate().unwrap();
    let mut c = w.claims(TARGET_UID);
    c.iss = "rogue".into();
    let t = memgate_policy::token::mint(&rogue, &c, None).unwrap();
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(t, w.stack_page()),
        "issuer_unknown",
    );
}

#[test]
fn expired_token() {
    let mut w = World::new();
    let mut c = w.claims(TARGET_UID);
    let now = OffsetDateTime::now_utc();
    c.iat = now - Duration::hours(2);
    c.nbf = c.iat;
    c.exp = now - Duration::minutes(5);
    let t = mint(&w.keys, &c);
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(t, w.stack_page()),
        "token_expired",
    );
}

#[test]
fn not_yet_valid_token() {
    let mut w = World::new();
    let mut c = w.claims(TARGET_UID);
    c.nbf = OffsetDateTime::now_utc() + Duration::minutes(5);
    c.exp = c.nbf + Duration::minutes(5);
    let t = mint(&w.keys, &c);
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(t, w.stack_page()),
        "token_not_yet_valid",
    );
}

#[test]
fn replayed_token() {
    let mut w = World::new();
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    w.run(TARGET_UID, FDS, &req).expect("first use admitted");
    w.denied(TARGET_UID, FDS, &req, "token_replayed");
}

#[test]
fn wrong_audience() {
    let mut w = World::new();
    let mut c = w.claims(TARGET_UID);
    c.aud = "some-other-broker".into();
    let t = mint(&w.keys, &c);
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(t, w.stack_page()),
        "audience_mismatch",
    );
}

#[test]
fn token_for_another_uid() {
    let mut w = World::new();
    let t = w.token(THIRD_UID);
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(t, w.stack_page()),
        "subject_mismatch",
    );
}

#[test]
fn token_for_another_cgroup() {
    let mut w = World::new();
    let mut c = w.claims(TARGET_UID);
    c.target.cgroup = "/memgate-test/elsewhere".into();
    let t = mint(&w.keys, &c);
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(t, w.stack_page()),
        "target_mismatch",
    );
}

#[test]
fn token_for_another_pid() {
    let mut w = World::new();
    let mut c = w.claims(TARGET_UID);
    c.target.pid = Some(u32::try_from(w.target.pid).unwrap() + 1);
    let t = mint(&w.keys, &c);
    w.denied(
        TARGET_UID,
        FDS,
        &read_req(t, w.stack_page()),
        "pid_mismatch",
    );
}

#[test]
fn requester_without_ptrace_rights_cannot_open_mem() {
    let w = World::new();
    let req = read_req(w.token(OTHER_UID), w.stack_page());
    let mut r = Requester::start(
        OTHER_UID,
        &w.listener.path,
        w.target.pid,
        FDS,
        &req.encode().unwrap(),
        false,
    );
    match w.listener.receive(&mut r) {
        Err(Report::OpenError(errno, _)) => assert_eq!(errno, libc::EACCES),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a uid without ptrace rights opened the target's mem"),
    }
}

#[test]
fn non_dumpable_target_refuses_even_its_own_uid() {
    let w = World::new();
    let locked = Target::spawn_with(TARGET_UID, &["--undumpable"]);
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    let mut r = Requester::start(
        TARGET_UID,
        &w.listener.path,
        locked.pid,
        FDS,
        &req.encode().unwrap(),
        false,
    );
    match w.listener.receive(&mut r) {
        Err(Report::OpenError(errno, _)) => assert_eq!(errno, libc::EACCES),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("the mem of a non-dumpable process was opened by its uid"),
    }
}

#[test]
fn requester_without_ptrace_rights_sending_another_processes_mem() {
    let mut w = World::new();
    // A process the requester may ptrace (its own uid), whose mem it sends instead.
    let own = Target::spawn(OTHER_UID);
    let req = read_req(w.token(OTHER_UID), w.stack_page());
    let d = w.denied(
        OTHER_UID,
        &format!("pidfd,mem:{0},maps:{0}", own.pid),
        &req,
        "mem_fd_mismatch",
    );
    assert!(d.message.contains(&own.pid.to_string()), "{d}");
}

#[test]
fn mem_fd_of_a_different_process_than_the_pidfd() {
    let mut w = World::new();
    let second = Target::spawn(TARGET_UID);
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    w.denied(
        TARGET_UID,
        &format!("pidfd,mem:{},maps", second.pid),
        &req,
        "mem_fd_mismatch",
    );
}

#[test]
fn proc_self_mem_of_the_requester() {
    let mut w = World::new();
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    w.denied(
        TARGET_UID,
        "pidfd,selfmem,maps",
        &req,
        "mem_fd_is_requester",
    );
}

#[test]
fn requester_naming_itself_as_target() {
    let mut w = World::new();
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    w.denied(
        TARGET_UID,
        "selfpidfd,selfmem,maps",
        &req,
        "target_is_requester",
    );
}

#[test]
fn stale_pidfd_after_target_exit() {
    let mut w = World::new();
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    let mut r = Requester::start(
        TARGET_UID,
        &w.listener.path,
        w.target.pid,
        FDS,
        &req.encode().unwrap(),
        true,
    );
    w.target.kill();
    r.go();
    let before = w.state.replay.len();
    let d = w.serve(&mut r).expect_err("a dead target was admitted");
    assert_eq!(d.code, "target_exited", "{d}");
    assert_eq!(w.state.replay.len(), before);
}

#[test]
fn mem_fd_from_before_an_exec_is_refused() {
    // The target execs after the requester opened its mem: the fd still names the old
    // address space, which reads as end-of-file. Same pid, same pidfd, other memory.
    let mut w = World::new();
    let mut target = Target::spawn_with(TARGET_UID, &["--exec-on-line"]);
    let pid = target.pid;
    let mut c = w.claims(TARGET_UID);
    c.target.pid = None;
    let req = read_req(mint(&w.keys, &c), RegionSelection::All);
    let mut r = Requester::start(
        TARGET_UID,
        &w.listener.path,
        pid,
        FDS,
        &req.encode().unwrap(),
        true,
    );
    target.poke();
    // Wait for the exec to happen.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| !p.to_string_lossy().contains("sleep"))
        .unwrap_or(true)
    {
        assert!(std::time::Instant::now() < deadline, "target never exec'd");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    r.go();
    let before = w.state.replay.len();
    let d = w.serve(&mut r).expect_err("a pre-exec mem fd was admitted");
    assert_eq!(d.code, "mem_unreadable", "{d}");
    assert_eq!(w.state.replay.len(), before);
}

#[test]
fn cgroup_outside_the_policy() {
    let mut w = World::with(PolicySpec {
        cgroups: vec!["/memgate-test-only/**".into()],
        ..PolicySpec::default()
    });
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    w.denied(TARGET_UID, FDS, &req, "cgroup_not_allowed");
}

#[test]
fn region_across_an_unmapped_hole() {
    let mut w = World::new();
    let maps = w.target.maps();
    // A mapping followed by a gap of at least one page.
    let (s, e) = maps
        .windows(2)
        .find(|p| {
            let exportable = p[0].3.is_empty() || p[0].3 == "[heap]" || p[0].3 == "[stack]";
            exportable && p[0].2 == "rw-p" && p[1].0 > p[0].1
        })
        .map(|p| (p[0].0, p[0].1))
        .unwrap();
    let req = read_req(w.token(TARGET_UID), list(&[(s, e - s + 4096)]));
    w.denied(TARGET_UID, FDS, &req, "region_unmapped");
}

#[test]
fn overflowing_region() {
    let mut w = World::new();
    let req = read_req(
        w.token(TARGET_UID),
        list(&[(0xffff_ffff_ffff_f000, 0x2000)]),
    );
    w.denied(TARGET_UID, FDS, &req, "region_overflow");
}

#[test]
fn unaligned_region() {
    let mut w = World::new();
    let (s, _) = w.target.mapping("[stack]");
    let req = read_req(w.token(TARGET_UID), list(&[(s + 8, 4096)]));
    w.denied(TARGET_UID, FDS, &req, "region_unaligned");
    let req = read_req(w.token(TARGET_UID), list(&[(s, 100)]));
    w.denied(TARGET_UID, FDS, &req, "region_unaligned");
}

#[test]
fn zero_length_region() {
    let mut w = World::new();
    let (s, _) = w.target.mapping("[stack]");
    let req = read_req(w.token(TARGET_UID), list(&[(s, 0)]));
    w.denied(TARGET_UID, FDS, &req, "region_empty");
}

#[test]
fn no_regions() {
    let mut w = World::new();
    let req = read_req(w.token(TARGET_UID), list(&[]));
    w.denied(TARGET_UID, FDS, &req, "no_regions");
}

#[test]
fn overlapping_regions() {
    let mut w = World::new();
    let (s, _) = w.target.mapping("[stack]");
    let req = read_req(w.token(TARGET_UID), list(&[(s, 8192), (s + 4096, 4096)]));
    w.denied(TARGET_UID, FDS, &req, "region_overlap");
}

#[test]
fn regions_in_vvar_vdso_and_vsyscall() {
    let mut w = World::new();
    for name in ["[vvar]", "[vdso]", "[vsyscall]"] {
        let Some(m) = w.target.maps().into_iter().find(|m| m.3 == name) else {
            continue;
        };
        let req = read_req(w.token(TARGET_UID), list(&[(m.0, 4096)]));
        let d = w.denied(TARGET_UID, FDS, &req, "mapping_forbidden");
        assert!(d.message.contains(name), "{d}");
    }
}

#[test]
fn private_file_mapping_not_listed_by_policy() {
    let mut w = World::new();
    let m = w
        .target
        .maps()
        .into_iter()
        .find(|m| m.2 == "r--p" && m.3.starts_with('/'))
        .unwrap();
    let req = read_req(w.token(TARGET_UID), list(&[(m.0, 4096)]));
    w.denied(TARGET_UID, FDS, &req, "mapping_not_allowed");
}

#[test]
fn read_write_without_permission() {
    // The policy (and token) allow only read.
    let mut w = World::new();
    let req = export(w.token(TARGET_UID), w.stack_page(), Access::ReadWrite);
    w.denied(TARGET_UID, "pidfd,memrw,maps", &req, "access_not_allowed");
}

#[test]
fn read_write_with_a_read_only_mem_fd() {
    let mut w = World::with(PolicySpec {
        access: "read-write",
        ..PolicySpec::default()
    });
    let mut c = w.claims(TARGET_UID);
    c.access = memgate_policy::Access::ReadWrite;
    let req = export(mint(&w.keys, &c), w.stack_page(), Access::ReadWrite);
    w.denied(TARGET_UID, FDS, &req, "mem_fd_not_writable");
}

#[test]
fn read_write_of_a_read_only_mapping() {
    let mut w = World::with(PolicySpec {
        access: "read-write",
        mappings: Some(vec!["private-anon", "heap", "stack", "private-file"]),
        ..PolicySpec::default()
    });
    let mut c = w.claims(TARGET_UID);
    c.access = memgate_policy::Access::ReadWrite;
    let m = w
        .target
        .maps()
        .into_iter()
        .find(|m| m.2 == "r--p" && m.3.starts_with('/'))
        .unwrap();
    let req = export(mint(&w.keys, &c), list(&[(m.0, 4096)]), Access::ReadWrite);
    w.denied(TARGET_UID, "pidfd,memrw,maps", &req, "region_not_writable");
}

#[test]
fn mem_fd_opened_write_only() {
    let mut w = World::new();
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    w.denied(TARGET_UID, "pidfd,memwo,maps", &req, "mem_fd_not_readable");
}

#[test]
fn quota_grants_per_uid_exceeded() {
    let mut w = World::with(PolicySpec {
        grants_per_uid: 2,
        ..PolicySpec::default()
    });
    w.usage = Usage {
        grants: 2,
        bytes: 8192,
    };
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    w.denied(TARGET_UID, FDS, &req, "grants_per_uid_exceeded");
}

#[test]
fn quota_bytes_per_uid_exceeded() {
    let mut w = World::with(PolicySpec {
        bytes_per_uid: 1 << 20,
        ..PolicySpec::default()
    });
    w.usage = Usage {
        grants: 1,
        bytes: (1 << 20) - 4095,
    };
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    w.denied(TARGET_UID, FDS, &req, "bytes_per_uid_exceeded");
}

#[test]
fn quota_request_rate_exceeded() {
    let mut w = World::with(PolicySpec {
        rps: 2,
        ..PolicySpec::default()
    });
    // Two bad requests use up the second's budget; the third is refused before any work.
    let req = read_req(w.token(TARGET_UID), list(&[]));
    w.denied(TARGET_UID, FDS, &req, "no_regions");
    w.denied(TARGET_UID, FDS, &req, "no_regions");
    let ok = read_req(w.token(TARGET_UID), w.stack_page());
    w.denied(TARGET_UID, FDS, &ok, "rate_limited");
}

#[test]
fn bytes_and_lease_beyond_the_token() {
    let mut w = World::new();
    let mut c = w.claims(TARGET_UID);
    c.max_bytes = 4096;
    c.lease = 30;
    let (s, _) = w.target.mapping("[stack]");
    let req = read_req(mint(&w.keys, &c), list(&[(s, 8192)]));
    let d = w.denied(TARGET_UID, FDS, &req, "bytes_exceed_limit");
    // Every reason is reported, not only the first.
    assert!(
        d.reasons.iter().any(|r| r.code == "lease_exceeds_limit"),
        "{:?}",
        d.reasons
    );
}

#[test]
fn wrong_fd_count() {
    let mut w = World::new();
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    w.denied(TARGET_UID, "pidfd", &req, "fd_count");
    w.denied(TARGET_UID, "pidfd,mem", &req, "fd_count");
    w.denied(TARGET_UID, "none", &req, "fd_count");
    w.denied(TARGET_UID, "pidfd,mem,maps,devnull", &req, "fd_count");
}

#[test]
fn wrong_fd_kind() {
    let mut w = World::new();
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    w.denied(TARGET_UID, "devnull,mem,maps", &req, "pidfd_invalid");
    w.denied(TARGET_UID, "pidfd,devnull,maps", &req, "mem_fd_invalid");
    w.denied(TARGET_UID, "mem,pidfd,maps", &req, "pidfd_invalid");
}

#[test]
fn malformed_and_oversized_messages() {
    let mut w = World::new();
    let pid = w.target.pid;
    let d = w
        .run_raw(TARGET_UID, pid, FDS, b"not a memgate frame at all")
        .unwrap_err();
    assert_eq!(d.code, "bad_magic");
    let mut frame = read_req(w.token(TARGET_UID), w.stack_page())
        .encode()
        .unwrap();
    frame.truncate(frame.len() - 3);
    let d = w.run_raw(TARGET_UID, pid, FDS, &frame).unwrap_err();
    assert_eq!(d.code, "length_mismatch");
    let mut big = memgate_proto::MAGIC.to_vec();
    big.resize(memgate_proto::MAX_MESSAGE + 4096, b' ');
    let d = w.run_raw(TARGET_UID, pid, FDS, &big).unwrap_err();
    assert_eq!(d.code, "frame_too_large");
    assert!(w.state.replay.is_empty());
}

#[test]
fn maps_fd_is_checked_like_the_mem_fd() {
    let mut w = World::new();
    let second = Target::spawn(TARGET_UID);
    let ok = read_req(w.token(TARGET_UID), w.stack_page());
    w.run(TARGET_UID, "pidfd,mem,maps", &ok)
        .expect("maps fd accepted");
    let req = read_req(w.token(TARGET_UID), w.stack_page());
    let other = format!("pidfd,mem,maps:{}", second.pid);
    w.denied(TARGET_UID, &other, &req, "maps_fd_mismatch");
    w.denied(TARGET_UID, "pidfd,mem,mem", &req, "maps_fd_invalid");
    w.denied(TARGET_UID, "pidfd,mem,devnull", &req, "maps_fd_invalid");
    w.denied(TARGET_UID, "pidfd,mem,maps,devnull", &req, "fd_count");
}
