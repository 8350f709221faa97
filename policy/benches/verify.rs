//! How long the broker spends on the policy engine per request and per policy load:
//! verifying an export token (PASETO decode, Ed25519, claims JSON and checks), deciding,
//! and verifying + parsing a signed policy. Each is printed with its ratio to one raw
//! Ed25519 verification (ring) measured in the same run, the unavoidable floor.
//!
//! Run: `cargo bench -p memgate-policy --bench verify` (plain harness, prints a table).

use std::hint::black_box;
use std::time::{Duration as StdDuration, Instant};

use memgate_policy::keys::SecretKey;
use memgate_policy::minisign::{self, Signature};
use memgate_policy::token::{self, Claims, Target};
use memgate_policy::{evaluate, paseto, signed, Access, Facts, MappingKind, Policy, Region};
use time::{Duration, OffsetDateTime};

const EXAMPLE: &str = include_str!("../../dist/policy.example.toml");

/// Runs `f` repeatedly for about `budget` and returns the mean time per call (best of 5
/// rounds, to keep noise from other processes out).
fn measure(budget: StdDuration, mut f: impl FnMut()) -> StdDuration {
    // Calibrate: how many calls fit in ~1/5 of the budget.
    let start = Instant::now();
    let mut n: u32 = 0;
    while start.elapsed() < budget / 20 {
        f();
        n += 1;
    }
    let per_round = (n * 4).max(1);
    let mut best = StdDuration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..per_round {
            f();
        }
        best = best.min(t.elapsed() / per_round);
    }
    best
}

fn main() {
    let budget = StdDuration::from_millis(
        std::env::var("BENCH_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000),
    );
    let issuer = SecretKey::from_seed([1; 32]).expect("fixed seed");
    let peer = SecretKey::from_seed([2; 32]).expect("fixed seed");
    let policy_text = EXAMPLE.replace(
        "k4.public.Hrnbu7wEfAP9cGBOAHHwmH4Wsot1ciXBHwBBXQ4gsaI",
        &issuer.public().to_paserk(),
    );
    let policy = Policy::parse(&policy_text).expect("example policy parses");
    let now = OffsetDateTime::now_utc();
    let claims = Claims {
        iss: "orchestrator".into(),
        sub: "1000".into(),
        aud: policy.broker.clone(),
        exp: now + Duration::seconds(300),
        nbf: now,
        iat: now,
        jti: token::new_jti(),
        target: Target {
            cgroup: "/machine.slice/vm1.scope".into(),
            pid: Some(4242),
        },
        access: Access::Read,
        max_bytes: 1 << 30,
        lease: 60,
        peer: peer.public(),
    };
    let tok = token::mint(&issuer, &claims, Some(&issuer.public().pid())).expect("mint");
    let admin = minisign::SecretKey::generate().expect("admin key");
    let admins = [admin.public()];
    let sig_text = admin
        .sign(policy_text.as_bytes(), "timestamp:0\tfile:policy.toml")
        .expect("sign")
        .to_file_text();
    let sig = Signature::parse(&sig_text).expect("sig parses");

    // Baseline: one Ed25519 verification of a message the size of the token's PAE.
    let parts = paseto::decode(&tok).expect("decode");
    let pae = paseto::pae(&[
        paseto::HEADER.as_bytes(),
        &parts.message,
        &parts.footer,
        b"",
    ]);
    let raw_sig = issuer.sign(&pae);
    let pk = issuer.public();
    assert!(pk.verify(&pae, &raw_sig));
    let base = measure(budget, || {
        black_box(pk.verify(black_box(&pae), black_box(&raw_sig)));
    });

    let verified = token::verify(&tok, &policy, now, token::DEFAULT_SKEW).expect("verifies");
    let mut facts = Facts::new(1000, 1000, "/machine.slice/vm1.scope", 4242, now);
    facts.regions = vec![
        Region {
            addr: 0x7f00_0000_0000,
            len: 256 << 20,
            kind: MappingKind::PrivateAnon,
        },
        Region {
            addr: 0x5600_0000_0000,
            len: 8 << 20,
            kind: MappingKind::Heap,
        },
    ];
    assert!(evaluate(&policy, &verified, &facts).is_allow());

    let rows: Vec<(&str, StdDuration)> = vec![
        ("ed25519 verify (ring, baseline)", base),
        (
            "token: PASETO signature only",
            measure(budget, || {
                black_box(paseto::verify(black_box(&tok), &pk, None, b"").is_ok());
            }),
        ),
        (
            "token: full verify against policy",
            measure(budget, || {
                black_box(
                    token::verify(black_box(&tok), &policy, now, token::DEFAULT_SKEW).is_ok(),
                );
            }),
        ),
        (
            "decision: evaluate (2 regions)",
            measure(budget, || {
                black_box(evaluate(&policy, black_box(&verified), &facts).is_allow());
            }),
        ),
        (
            "policy: minisign verify (ED)",
            measure(budget, || {
                black_box(
                    minisign::verify(black_box(policy_text.as_bytes()), &sig, &admins).is_ok(),
                );
            }),
        ),
        (
            "policy: parse only",
            measure(budget, || {
                black_box(Policy::parse(black_box(&policy_text)).is_ok());
            }),
        ),
        (
            "policy: signed load (verify + parse)",
            measure(budget, || {
                black_box(
                    signed::load(black_box(policy_text.as_bytes()), &sig_text, &admins).is_ok(),
                );
            }),
        ),
    ];
    println!(
        "policy engine benchmark (token {} bytes, policy {} bytes, best of 5 rounds)",
        tok.len(),
        policy_text.len()
    );
    println!(
        "{:<40} {:>12} {:>12} {:>10}",
        "operation", "time/op", "ops/s", "x ed25519"
    );
    for (name, t) in rows {
        let ns = t.as_nanos().max(1);
        println!(
            "{name:<40} {:>9.1} us {:>12.0} {:>9.2}x",
            ns as f64 / 1000.0,
            1e9 / ns as f64,
            ns as f64 / base.as_nanos().max(1) as f64
        );
    }
}
