//! Decision engine: allow with the minimum of policy and token limits; every deny reason
//! that applies is reported with its code and a sentence.

use super::*;
use crate::keys::SecretKey;
use crate::token::{Claims, Target};
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-06-01 12:00:00 UTC);

fn policy(issuer: &SecretKey, extra: &str, top: &str) -> Policy {
    Policy::parse(&format!(
        "version = 1\nbroker = \"b1\"\nserial = 7\n{top}\n\
         [[issuer]]\nname = \"orch\"\nkey = \"{}\"\ncgroups = [\"/vms/*\", \"/batch/**/job\"]\n\
         uids = [1000]\ngids = [50]\nmax_bytes = \"1G\"\nmax_lease = 300\n{extra}\n",
        issuer.public().to_paserk()
    ))
    .unwrap()
}

fn token(issuer: &SecretKey) -> VerifiedToken {
    let peer = SecretKey::from_seed([7; 32]).unwrap();
    VerifiedToken {
        claims: Claims {
            iss: "orch".into(),
            sub: "1000".into(),
            aud: "b1".into(),
            exp: NOW + Duration::seconds(60),
            nbf: NOW,
            iat: NOW,
            jti: "j1".into(),
            target: Target {
                cgroup: "/vms/web".into(),
                pid: None,
            },
            access: Access::Read,
            max_bytes: 64 << 20,
            lease: 120,
            peer: peer.public(),
        },
        uid: 1000,
        issuer: "orch".into(),
        issuer_key: issuer.public(),
        kid: None,
    }
}

fn facts() -> Facts {
    let mut f = Facts::new(1000, 1000, "/vms/web", 4242, NOW);
    f.regions = vec![
        Region {
            addr: 0x1000,
            len: 0x4000,
            kind: MappingKind::PrivateAnon,
        },
        Region {
            addr: 0x10000,
            len: 0x1000,
            kind: MappingKind::Heap,
        },
    ];
    f
}

fn codes(d: &Decision) -> Vec<ReasonCode> {
    let mut c = d.codes();
    c.sort_by_key(|c| c.as_str());
    c
}

#[test]
fn allow_carries_minimum_of_policy_and_token() {
    let k = SecretKey::generate().unwrap();
    let p = policy(&k, "", "");
    let d = evaluate(&p, &token(&k), &facts());
    let Decision::Allow(e) = &d else {
        panic!("{d:?}")
    };
    assert_eq!(e.bytes, 0x5000);
    assert_eq!(e.max_bytes, 64 << 20, "token is tighter than policy");
    assert_eq!(e.max_lease, 120, "token is tighter than policy");
    assert_eq!(e.lease, 60);
    assert_eq!(e.expires, NOW + Duration::seconds(60));
    assert_eq!(e.access, Access::Read);
    assert_eq!(e.max_access, Access::Read);
    assert_eq!(
        e.peer,
        *SecretKey::from_seed([7; 32]).unwrap().public().as_bytes()
    );
    assert_eq!(e.jti, "j1");
    assert_eq!(d.codes(), vec![ReasonCode::Allowed]);
    assert!(d.sentence().starts_with("allowed"), "{}", d.sentence());

    // Policy tighter than the token.
    let mut t = token(&k);
    t.claims.max_bytes = 1 << 40;
    t.claims.lease = 10_000;
    let Decision::Allow(e) = evaluate(&p, &t, &facts()) else {
        panic!()
    };
    assert_eq!(e.max_bytes, 1 << 30);
    assert_eq!(e.max_lease, 300);
}

#[test]
fn requester_may_match_by_gid() {
    let k = SecretKey::generate().unwrap();
    let p = policy(&k, "", "");
    let mut t = token(&k);
    t.claims.sub = "2000".into();
    t.uid = 2000;
    let mut f = facts();
    f.uid = 2000;
    f.gid = 50;
    assert!(evaluate(&p, &t, &f).is_allow());
    f.gid = 51;
    assert_eq!(
        codes(&evaluate(&p, &t, &f)),
        vec![ReasonCode::RequesterNotAllowed]
    );
}

#[test]
fn read_write_needs_policy_and_token() {
    let k = SecretKey::generate().unwrap();
    let mut f = facts();
    f.access = Access::ReadWrite;
    let mut t = token(&k);
    t.claims.access = Access::ReadWrite;
    // The policy leaves access at its default (read): denied even though the token says rw.
    let d = evaluate(&policy(&k, "", ""), &t, &f);
    assert_eq!(codes(&d), vec![ReasonCode::AccessNotAllowed]);
    // Policy says rw, token says read: denied.
    let prw = policy(&k, "access = \"read-write\"", "");
    assert_eq!(
        codes(&evaluate(&prw, &token(&k), &f)),
        vec![ReasonCode::AccessNotAllowed]
    );
    // Both: allowed.
    let Decision::Allow(e) = evaluate(&prw, &t, &f) else {
        panic!()
    };
    assert_eq!(e.access, Access::ReadWrite);
}

#[test]
fn each_check_denies_with_its_code() {
    let k = SecretKey::generate().unwrap();
    let p = policy(
        &k,
        "",
        "[limits]\ngrants_per_uid = 2\nbytes_per_uid = \"1M\"",
    );
    type Case = (ReasonCode, fn(&mut VerifiedToken, &mut Facts));
    let cases: Vec<Case> = vec![
        (ReasonCode::IssuerMismatch, |t, _| t.claims.iss = "x".into()),
        (ReasonCode::AudienceMismatch, |t, _| {
            t.claims.aud = "b2".into()
        }),
        (ReasonCode::TokenExpired, |_, f| {
            f.now = NOW + Duration::hours(1)
        }),
        (ReasonCode::TokenNotYetValid, |_, f| {
            f.now = NOW - Duration::hours(1)
        }),
        (ReasonCode::SubjectMismatch, |t, _| {
            t.claims.sub = "1001".into();
            t.uid = 1001;
        }),
        (ReasonCode::TargetMismatch, |_, f| {
            f.cgroup = "/vms/db".into()
        }),
        (ReasonCode::PidMismatch, |t, _| {
            t.claims.target.pid = Some(1)
        }),
        (ReasonCode::BytesExceedLimit, |t, _| {
            t.claims.max_bytes = 0x4fff
        }),
        (ReasonCode::LeaseExceedsLimit, |_, f| f.lease = 121),
        (ReasonCode::LeaseInvalid, |_, f| f.lease = 0),
        (ReasonCode::MappingNotAllowed, |_, f| {
            f.regions[0].kind = MappingKind::Shared
        }),
        (ReasonCode::NoRegions, |_, f| f.regions.clear()),
        (ReasonCode::RegionInvalid, |_, f| f.regions[1].addr = 0x2000),
        (ReasonCode::RegionInvalid, |_, f| f.regions[1].len = 0),
        (ReasonCode::RegionInvalid, |_, f| {
            f.regions[1].addr = u64::MAX - 10;
            f.regions[1].len = 0x1000;
        }),
        (ReasonCode::GrantsPerUidExceeded, |_, f| f.usage.grants = 2),
        (ReasonCode::BytesPerUidExceeded, |_, f| {
            f.usage.bytes = (1 << 20) - 0x4fff
        }),
        (ReasonCode::BytesPerUidExceeded, |_, f| {
            f.usage.bytes = u64::MAX
        }),
    ];
    for (code, mutate) in cases {
        let mut t = token(&k);
        let mut f = facts();
        mutate(&mut t, &mut f);
        let d = evaluate(&p, &t, &f);
        assert!(!d.is_allow(), "{code}");
        assert!(d.codes().contains(&code), "{code}: {:?}", d.reasons());
        for r in d.reasons() {
            assert!(!r.message.is_empty());
        }
        assert!(d.sentence().starts_with("denied"), "{}", d.sentence());
    }
}

#[test]
fn cgroup_must_be_allowed_for_the_issuer() {
    let k = SecretKey::generate().unwrap();
    let p = policy(&k, "", "");
    for (cg, ok) in [
        ("/vms/web", true),
        ("/vms/web/child", false),
        ("/batch/job", true),
        ("/batch/a/b/job", true),
        ("/batch/a/b/job2", false),
        ("/other", false),
    ] {
        let mut t = token(&k);
        t.claims.target.cgroup = cg.into();
        let mut f = facts();
        f.cgroup = cg.into();
        let d = evaluate(&p, &t, &f);
        assert_eq!(d.is_allow(), ok, "{cg}: {:?}", d.reasons());
        if !ok {
            assert_eq!(d.codes(), vec![ReasonCode::CgroupNotAllowed]);
        }
    }
}

#[test]
fn several_reasons_are_all_reported() {
    let k = SecretKey::generate().unwrap();
    let p = policy(&k, "", "");
    let mut t = token(&k);
    t.claims.aud = "elsewhere".into();
    let mut f = facts();
    f.lease = 100_000;
    f.access = Access::ReadWrite;
    let d = evaluate(&p, &t, &f);
    assert_eq!(
        codes(&d),
        vec![
            ReasonCode::AccessNotAllowed,
            ReasonCode::AudienceMismatch,
            ReasonCode::LeaseExceedsLimit
        ]
    );
    let s = d.sentence();
    assert!(s.contains("audience") && s.contains("lease"), "{s}");
}

#[test]
fn unknown_issuer_or_rotated_key_is_denied() {
    let k = SecretKey::generate().unwrap();
    let p = policy(&k, "", "");
    let mut t = token(&k);
    t.issuer = "gone".into();
    assert_eq!(
        evaluate(&p, &t, &facts()).codes(),
        vec![ReasonCode::IssuerUnknown]
    );
    // Policy reloaded with a new key for the same issuer name: old tokens stop working.
    let rotated = policy(&SecretKey::generate().unwrap(), "", "");
    assert_eq!(
        evaluate(&rotated, &token(&k), &facts()).codes(),
        vec![ReasonCode::IssuerUnknown]
    );
}

#[test]
fn reason_codes_round_trip_and_token_errors_map() {
    for c in ReasonCode::ALL {
        assert_eq!(ReasonCode::parse(c.as_str()), Some(c));
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, format!("\"{}\"", c.as_str()));
    }
    let e = TokenError::Expired("x".into());
    assert_eq!(Reason::from_token_error(&e).code, ReasonCode::TokenExpired);
    let e = TokenError::Paseto(crate::paseto::PasetoError::UnsupportedPurpose(
        "local".into(),
    ));
    assert_eq!(
        Reason::from_token_error(&e).code,
        ReasonCode::TokenUnsupported
    );
    assert_eq!(
        Reason::from_token_error(&TokenError::UntrustedIssuer).code,
        ReasonCode::TokenSignatureInvalid
    );
}
