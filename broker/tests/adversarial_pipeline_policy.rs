//! Adversarial tests of the admission pipeline: tokens, the policy decision and quotas. Run against real
//! processes: a target running as another uid, requesters (separate processes, setuid)
//! that open their own pidfd and `/proc/<pid>/mem` and `/proc/<pid>/maps` fds — so the
//! kernel's ptrace check applies to them — and send them over a real `SOCK_SEQPACKET`
//! connection, whose `SO_PEERCRED` the pipeline reads. Each case asserts the specific
//! denial code and that nothing was admitted (no `Admitted` value, the token id not
//! consumed).

mod common;

use common::pipeline::*;
use common::*;
use memgate_policy::{MappingKind, Usage};
use memgate_proto::Access;
use time::{Duration, OffsetDateTime};

#[test]
fn control_allowed_request_is_admitted() {
    let mut w = World::new();
    let req = w.stack_req(TARGET_UID);
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
fn forged_token_signature() {
    let mut w = World::new();
    let mut t = w.token(TARGET_UID);
    // Flip one character in the middle of the signed payload.
    let i = t.len() / 2;
    let c = if t.as_bytes()[i] == b'A' { "B" } else { "A" };
    t.replace_range(i..=i, c);
    w.denied_token(t, "token_signature_invalid");
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
    w.denied_token(forged, "token_signature_invalid");
}

#[test]
fn token_signed_by_another_key_in_a_trusted_issuers_name() {
    let mut w = World::new();
    let rogue = memgate_policy::keys::SecretKey::generate().unwrap();
    let t = memgate_policy::token::mint(&rogue, &w.claims(TARGET_UID), None).unwrap();
    w.denied_token(t, "token_signature_invalid");
}

#[test]
fn untrusted_issuer() {
    let mut w = World::new();
    let rogue = memgate_policy::keys::SecretKey::generate().unwrap();
    let mut c = w.claims(TARGET_UID);
    c.iss = "rogue".into();
    let t = memgate_policy::token::mint(&rogue, &c, None).unwrap();
    w.denied_token(t, "issuer_unknown");
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
    w.denied_token(t, "token_expired");
}

#[test]
fn not_yet_valid_token() {
    let mut w = World::new();
    let mut c = w.claims(TARGET_UID);
    c.nbf = OffsetDateTime::now_utc() + Duration::minutes(5);
    c.exp = c.nbf + Duration::minutes(5);
    let t = mint(&w.keys, &c);
    w.denied_token(t, "token_not_yet_valid");
}

#[test]
fn replayed_token() {
    let mut w = World::new();
    let req = w.stack_req(TARGET_UID);
    w.run(TARGET_UID, FDS, &req).expect("first use admitted");
    w.denied(TARGET_UID, FDS, &req, "token_replayed");
}

#[test]
fn wrong_audience() {
    let mut w = World::new();
    let mut c = w.claims(TARGET_UID);
    c.aud = "some-other-broker".into();
    let t = mint(&w.keys, &c);
    w.denied_token(t, "audience_mismatch");
}

#[test]
fn token_for_another_uid() {
    let mut w = World::new();
    let t = w.token(THIRD_UID);
    w.denied_token(t, "subject_mismatch");
}

#[test]
fn token_for_another_cgroup() {
    let mut w = World::new();
    let mut c = w.claims(TARGET_UID);
    c.target.cgroup = "/memgate-test/elsewhere".into();
    let t = mint(&w.keys, &c);
    w.denied_token(t, "target_mismatch");
}

#[test]
fn token_for_another_pid() {
    let mut w = World::new();
    let mut c = w.claims(TARGET_UID);
    c.target.pid = Some(u32::try_from(w.target.pid).unwrap() + 1);
    let t = mint(&w.keys, &c);
    w.denied_token(t, "pid_mismatch");
}

#[test]
fn cgroup_outside_the_policy() {
    let mut w = World::with(PolicySpec {
        cgroups: vec!["/memgate-test-only/**".into()],
        ..PolicySpec::default()
    });
    let req = w.stack_req(TARGET_UID);
    w.denied(TARGET_UID, FDS, &req, "cgroup_not_allowed");
}

#[test]
fn read_write_without_permission() {
    // The policy (and token) allow only read.
    let mut w = World::new();
    let req = export(w.token(TARGET_UID), w.stack_page(), Access::ReadWrite);
    w.denied(TARGET_UID, "pidfd,memrw,maps", &req, "access_not_allowed");
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
    let req = w.stack_req(TARGET_UID);
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
    let req = w.stack_req(TARGET_UID);
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
    let ok = w.stack_req(TARGET_UID);
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
