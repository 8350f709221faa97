//! Properties of the policy engine:
//! - tightening any policy limit never turns a deny into an allow;
//! - a token's claims only narrow what its issuer's policy entry allows;
//! - random bytes never panic any parser (policy, minisign files, PASERK, tokens, sizes,
//!   cgroup patterns).

use memgate_policy::cgroup::Pattern;
use memgate_policy::keys::{PublicKey, SecretKey};
use memgate_policy::token::{Claims, Target};
use memgate_policy::{
    evaluate, minisign, paseto, size, token, Access, Decision, Facts, Issuer, Limits, MappingKind,
    Policy, Region, Usage, VerifiedToken,
};
use proptest::prelude::*;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const NOW: OffsetDateTime = datetime!(2026-06-01 12:00:00 UTC);
const PAGE: u64 = 4096;
const PATHS: [&str; 5] = ["/a", "/a/b", "/a/b/c", "/c/d", "/"];
const PATTERNS: [&str; 6] = ["/a", "/a/*", "/a/**", "/c/*", "/**", "/a/**/c"];
const KINDS: [MappingKind; 5] = [
    MappingKind::PrivateAnon,
    MappingKind::Heap,
    MappingKind::Stack,
    MappingKind::PrivateFile,
    MappingKind::Shared,
];

fn issuer_key() -> SecretKey {
    SecretKey::from_seed([1; 32]).unwrap()
}

fn access(rw: bool) -> Access {
    if rw {
        Access::ReadWrite
    } else {
        Access::Read
    }
}

#[derive(Debug, Clone)]
struct Case {
    policy: Policy,
    token: VerifiedToken,
    facts: Facts,
}

prop_compose! {
    fn arb_policy()(
        patterns in proptest::sample::subsequence(PATTERNS.to_vec(), 1..=4),
        uids in proptest::collection::vec(0u32..3, 1..4),
        gids in proptest::collection::vec(0u32..3, 0..2),
        rw in any::<bool>(),
        max_pages in 0u64..24,
        max_lease in 1u64..10,
        kinds in proptest::sample::subsequence(KINDS.to_vec(), 2..=5),
        grants in 1u32..8,
        bytes_pages in 0u64..48,
    ) -> Policy {
        Policy {
            version: 1,
            broker: "b".into(),
            serial: 1,
            issuers: vec![Issuer {
                name: "orch".into(),
                key: issuer_key().public(),
                cgroups: patterns.iter().map(|p| Pattern::parse(p).unwrap()).collect(),
                uids,
                gids,
                access: access(rw),
                max_bytes: max_pages * PAGE,
                max_lease,
            }],
            mappings: kinds,
            limits: Limits {
                grants_per_uid: grants,
                bytes_per_uid: bytes_pages * PAGE,
                requests_per_second_per_uid: 10,
            },
        }
    }
}

prop_compose! {
    fn arb_token()(
        sub in 0u32..3,
        cg in 0usize..PATHS.len(),
        pid in proptest::option::of(1u32..3),
        rw in any::<bool>(),
        max_pages in 0u64..24,
        lease in 1u64..10,
        good_aud in proptest::bool::weighted(0.9),
        exp_off in -5i64..60,
    ) -> VerifiedToken {
        VerifiedToken {
            claims: Claims {
                iss: "orch".into(),
                sub: sub.to_string(),
                aud: if good_aud { "b".into() } else { "x".into() },
                exp: NOW + Duration::seconds(exp_off),
                nbf: NOW,
                iat: NOW,
                jti: "j".into(),
                target: Target { cgroup: PATHS[cg].into(), pid },
                access: access(rw),
                max_bytes: max_pages * PAGE,
                lease,
                peer: PublicKey::from_bytes([9; 32]),
            },
            uid: sub,
            issuer: "orch".into(),
            issuer_key: issuer_key().public(),
            kid: None,
        }
    }
}

prop_compose! {
    fn arb_facts()(
        uid in 0u32..3,
        gid in 0u32..3,
        cg in 0usize..PATHS.len(),
        pid in 1u32..3,
        regions in proptest::collection::vec((0u64..8, prop_oneof![4 => 0usize..3, 1 => 0usize..KINDS.len()]), 1..3),
        rw in proptest::bool::weighted(0.25),
        lease in prop_oneof![1 => Just(0u64), 9 => 1u64..5],
        grants in 0u32..3,
        used_pages in 0u64..6,
    ) -> Facts {
        let mut f = Facts::new(uid, gid, PATHS[cg], pid, NOW);
        f.regions = regions
            .iter()
            .enumerate()
            .map(|(i, &(pages, k))| Region {
                addr: 0x10_0000 * (i as u64 + 1),
                len: pages * PAGE,
                kind: KINDS[k],
            })
            .collect();
        f.access = access(rw);
        f.lease = lease;
        f.usage = Usage { grants, bytes: used_pages * PAGE };
        f
    }
}

prop_compose! {
    fn arb_case()(
        policy in arb_policy(),
        token in arb_token(),
        mut facts in arb_facts(),
        consistent in proptest::bool::weighted(0.8),
    ) -> Case {
        // Mostly describe the request the token was minted for, so allows are common
        // enough for the properties to bite.
        if consistent {
            facts.uid = token.uid;
            facts.cgroup = token.claims.target.cgroup.clone();
            facts.pid = token.claims.target.pid.unwrap_or(facts.pid);
        }
        Case { policy, token, facts }
    }
}

/// One way of making the policy stricter.
#[derive(Debug, Clone)]
enum Tighten {
    MaxBytes(u64),
    MaxLease(u64),
    ReadOnly,
    DropPattern(usize),
    DropUid(usize),
    DropGid(usize),
    DropMapping(usize),
    Grants(u32),
    BytesPerUid(u64),
    DropIssuer,
}

fn arb_tighten() -> impl Strategy<Value = Tighten> {
    prop_oneof![
        (0u64..=PAGE * 24).prop_map(Tighten::MaxBytes),
        (0u64..10).prop_map(Tighten::MaxLease),
        Just(Tighten::ReadOnly),
        (0usize..4).prop_map(Tighten::DropPattern),
        (0usize..3).prop_map(Tighten::DropUid),
        (0usize..2).prop_map(Tighten::DropGid),
        (0usize..5).prop_map(Tighten::DropMapping),
        (0u32..8).prop_map(Tighten::Grants),
        (0u64..PAGE * 48).prop_map(Tighten::BytesPerUid),
        Just(Tighten::DropIssuer),
    ]
}

/// Applies `t` so the result is never looser than `p` (limits only go down).
fn tighten(p: &Policy, t: &Tighten) -> Policy {
    let mut q = p.clone();
    let Some(i) = q.issuers.first_mut() else {
        return q;
    };
    match *t {
        Tighten::MaxBytes(b) => i.max_bytes = i.max_bytes.min(b),
        Tighten::MaxLease(l) => i.max_lease = i.max_lease.min(l),
        Tighten::ReadOnly => i.access = Access::Read,
        Tighten::DropPattern(n) if n < i.cgroups.len() => {
            i.cgroups.remove(n);
        }
        Tighten::DropUid(n) if n < i.uids.len() => {
            i.uids.remove(n);
        }
        Tighten::DropGid(n) if n < i.gids.len() => {
            i.gids.remove(n);
        }
        Tighten::DropMapping(n) if n < q.mappings.len() => {
            q.mappings.remove(n);
        }
        Tighten::Grants(g) => q.limits.grants_per_uid = q.limits.grants_per_uid.min(g),
        Tighten::BytesPerUid(b) => q.limits.bytes_per_uid = q.limits.bytes_per_uid.min(b),
        Tighten::DropIssuer => q.issuers.clear(),
        _ => {}
    }
    q
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn tightening_never_turns_deny_into_allow(
        c in arb_case(),
        steps in proptest::collection::vec(arb_tighten(), 1..4),
    ) {
        let before = evaluate(&c.policy, &c.token, &c.facts);
        let mut strict = c.policy.clone();
        for s in &steps {
            strict = tighten(&strict, s);
        }
        let after = evaluate(&strict, &c.token, &c.facts);
        if !before.is_allow() {
            prop_assert!(!after.is_allow(), "deny became allow: {:?} -> {:?}", before.codes(), after);
        }
        // And an allow under the stricter policy never grants more than the looser one.
        if let (Decision::Allow(a), Decision::Allow(b)) = (&after, &before) {
            prop_assert!(a.max_bytes <= b.max_bytes);
            prop_assert!(a.max_lease <= b.max_lease);
            prop_assert!(a.max_access <= b.max_access);
        }
    }

    #[test]
    fn token_claims_only_narrow_the_issuer_entry(c in arb_case()) {
        let d = evaluate(&c.policy, &c.token, &c.facts);
        if let Decision::Allow(e) = d {
            let i = &c.policy.issuers[0];
            prop_assert!(e.max_bytes <= i.max_bytes && e.max_bytes <= c.token.claims.max_bytes);
            prop_assert!(e.max_lease <= i.max_lease && e.max_lease <= c.token.claims.lease);
            prop_assert!(e.max_access <= i.access && e.max_access <= c.token.claims.access);
            prop_assert!(e.bytes <= e.max_bytes);
            prop_assert!(e.lease <= e.max_lease && e.lease > 0);
            prop_assert!(e.access <= e.max_access);
            prop_assert!(i.allows_cgroup(&c.facts.cgroup));
            prop_assert!(i.allows_requester(c.facts.uid, c.facts.gid));
            prop_assert!(c.facts.regions.iter().all(|r| c.policy.allows_mapping(r.kind)));
            prop_assert!(c.facts.usage.grants < c.policy.limits.grants_per_uid);
            prop_assert!(c.facts.usage.bytes + e.bytes <= c.policy.limits.bytes_per_uid);
        }
        // Loosening the token beyond the policy never loosens the outcome past the policy.
        let mut wide = c.token.clone();
        wide.claims.max_bytes = u64::MAX;
        wide.claims.lease = u64::MAX;
        wide.claims.access = Access::ReadWrite;
        if let Decision::Allow(e) = evaluate(&c.policy, &wide, &c.facts) {
            let i = &c.policy.issuers[0];
            prop_assert_eq!(e.max_bytes, i.max_bytes);
            prop_assert_eq!(e.max_lease, i.max_lease);
            prop_assert_eq!(e.max_access, i.access);
        }
    }

    #[test]
    fn every_deny_has_reasons_with_sentences(c in arb_case()) {
        if let Decision::Deny(r) = evaluate(&c.policy, &c.token, &c.facts) {
            prop_assert!(!r.is_empty());
            prop_assert!(r.iter().all(|r| !r.message.is_empty()));
        }
    }
}

fn minimal_policy() -> Policy {
    Policy::parse(&format!(
        "version = 1\nbroker = \"b\"\nserial = 1\n[[issuer]]\nname = \"orch\"\nkey = \"{}\"\n\
         cgroups = [\"/**\"]\nuids = [0]\nmax_bytes = 4096\nmax_lease = 5\n",
        issuer_key().public().to_paserk()
    ))
    .unwrap()
}

fn all_parsers(bytes: &[u8]) {
    let _ = Policy::parse_bytes(bytes);
    let text = String::from_utf8_lossy(bytes);
    let _ = Policy::parse(&text);
    let _ = minisign::Signature::parse(&text);
    let _ = minisign::PublicKey::from_file_text(&text);
    let _ = minisign::PublicKey::from_base64(&text);
    let _ = minisign::SecretKey::from_file_text(&text);
    let _ = PublicKey::from_paserk(&text);
    let _ = SecretKey::from_paserk(&text);
    let _ = paseto::decode(&text);
    let _ = token::inspect(&text);
    let _ = token::verify(&text, &minimal_policy(), NOW, Duration::seconds(30));
    let _ = size::parse_bytes(&text);
    let _ = Pattern::parse(&text).map(|p| p.matches(&text));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        all_parsers(&bytes);
    }

    #[test]
    fn token_shaped_strings_never_panic(
        s in "v4\\.(public|local)\\.[A-Za-z0-9_-]{0,300}(\\.[A-Za-z0-9_=-]{0,60})?",
    ) {
        all_parsers(s.as_bytes());
    }

    #[test]
    fn signed_tokens_with_random_claims_never_panic(json in "\\{[ -~]{0,200}\\}") {
        let t = paseto::sign(&issuer_key(), json.as_bytes(), b"", b"");
        let _ = token::verify(&t, &minimal_policy(), NOW, Duration::seconds(30));
        let _ = token::inspect(&t);
    }

    #[test]
    fn minisign_shaped_files_never_panic(
        b1 in proptest::collection::vec(any::<u8>(), 0..160),
        tc in "[ -~\t]{0,80}",
        b2 in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let text = format!(
            "untrusted comment: x\n{}\ntrusted comment: {tc}\n{}\n",
            memgate_policy::b64::encode_std(&b1),
            memgate_policy::b64::encode_std(&b2),
        );
        all_parsers(text.as_bytes());
        if let Ok(sig) = minisign::Signature::parse(&text) {
            let pk = minisign::SecretKey::generate().unwrap().public();
            let _ = minisign::verify(b"data", &sig, &[pk]);
        }
    }

    #[test]
    fn toml_shaped_policies_never_panic(
        body in "(version = [0-9]\n|broker = \"[a-z]{0,4}\"\n|serial = [0-9]{1,3}\n|\\[\\[issuer\\]\\]\n|name = \"[a-z]\"\n|cgroups = \\[\"[/a-z*.]{0,8}\"\\]\n|max_bytes = \"[0-9]{0,3}[KMGTX]?\"\n|max_lease = [0-9]\n|mappings = \\[\"[a-z-]{0,12}\"\\]\n|\\[limits\\]\n){0,12}",
    ) {
        all_parsers(body.as_bytes());
    }
}

#[test]
fn the_case_generator_produces_both_outcomes() {
    // Guards the properties above against a generator that only ever denies.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut allows, mut denies) = (0, 0);
    let mut hist = std::collections::BTreeMap::new();
    for _ in 0..1000 {
        let c = arb_case().new_tree(&mut runner).unwrap().current();
        if evaluate(&c.policy, &c.token, &c.facts).is_allow() {
            allows += 1;
        } else {
            denies += 1;
            for code in evaluate(&c.policy, &c.token, &c.facts).codes() {
                *hist.entry(code.as_str()).or_insert(0) += 1;
            }
        }
    }
    assert!(
        allows > 20 && denies > 100,
        "allows {allows}, denies {denies} {hist:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// The replay cache never accepts an id twice while its token is unexpired, never
    /// holds more than its capacity, and never forgets an unexpired id to make room.
    #[test]
    fn replay_cache_is_bounded_and_never_readmits_a_live_token(
        ops in proptest::collection::vec((0u8..12, 0i64..40, 0i64..5), 1..200),
        capacity in 1usize..8,
    ) {
        use memgate_policy::replay::{ReplayCache, ReplayError};
        let mut cache = ReplayCache::new(capacity);
        let mut now = NOW;
        // Ids accepted so far, with their expiry.
        let mut accepted: std::collections::HashMap<String, OffsetDateTime> = Default::default();
        for (id, ttl, tick) in ops {
            now += Duration::seconds(tick);
            let jti = format!("j{id}");
            let exp = now + Duration::seconds(ttl);
            let live_before: Vec<String> = accepted
                .iter()
                .filter(|(_, &e)| e > now)
                .map(|(k, _)| k.clone())
                .collect();
            match cache.check_and_insert(&jti, exp, now) {
                Ok(()) => {
                    prop_assert!(
                        accepted.get(&jti).is_none_or(|&e| e <= now),
                        "{} readmitted while live", jti
                    );
                    accepted.insert(jti, exp);
                }
                Err(ReplayError::Replayed) => {
                    prop_assert!(accepted.get(&jti).is_some_and(|&e| e > now));
                }
                Err(ReplayError::Full(n)) => prop_assert_eq!(n, capacity),
            }
            prop_assert!(cache.len() <= capacity);
            for id in live_before {
                prop_assert!(cache.contains(&id), "{} forgotten while live", id);
            }
        }
    }
}
