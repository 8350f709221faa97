//! Token minting and verification: claim checks, clock skew, issuer lookup, tampering.

use super::*;
use crate::document::Policy;
use crate::keys::SecretKey;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-06-01 12:00:00 UTC);

struct Fixture {
    issuer: SecretKey,
    peer: SecretKey,
    policy: Policy,
}

fn fixture() -> Fixture {
    let issuer = SecretKey::generate().unwrap();
    let peer = SecretKey::generate().unwrap();
    let text = format!(
        "version = 1\nbroker = \"broker-a\"\nserial = 1\n\
         [[issuer]]\nname = \"orch\"\nkey = \"{}\"\ncgroups = [\"/vms/**\"]\nuids = [1000]\n\
         max_bytes = \"1G\"\nmax_lease = 300\n",
        issuer.public().to_paserk()
    );
    let policy = Policy::parse(&text).unwrap();
    Fixture {
        issuer,
        peer,
        policy,
    }
}

fn claims(f: &Fixture) -> Claims {
    Claims {
        iss: "orch".into(),
        sub: "1000".into(),
        aud: "broker-a".into(),
        exp: NOW + Duration::seconds(120),
        nbf: NOW - Duration::seconds(1),
        iat: NOW - Duration::seconds(1),
        jti: "0123456789abcdef".into(),
        target: Target {
            cgroup: "/vms/web".into(),
            pid: Some(4242),
        },
        access: Access::Read,
        max_bytes: 1 << 20,
        lease: 60,
        peer: f.peer.public(),
    }
}

fn mint_verify(f: &Fixture, c: &Claims) -> Result<VerifiedToken, TokenError> {
    let t = mint(&f.issuer, c, Some(&f.issuer.public().pid())).unwrap();
    verify(&t, &f.policy, NOW, DEFAULT_SKEW)
}

#[test]
fn round_trip_with_kid_footer() {
    let f = fixture();
    let c = claims(&f);
    let t = mint(&f.issuer, &c, Some(&f.issuer.public().pid())).unwrap();
    assert!(t.starts_with("v4.public."));
    assert_eq!(t.split('.').count(), 4, "footer present");
    let v = verify(&t, &f.policy, NOW, DEFAULT_SKEW).unwrap();
    assert_eq!(v.claims, c);
    assert_eq!(v.uid, 1000);
    assert_eq!(v.issuer, "orch");
    assert_eq!(v.issuer_key, f.issuer.public());
    assert_eq!(v.kid.as_deref(), Some(f.issuer.public().pid().as_str()));
    // Without a footer every trusted issuer is tried.
    let t = mint(&f.issuer, &c, None).unwrap();
    assert_eq!(t.split('.').count(), 3);
    assert_eq!(verify(&t, &f.policy, NOW, DEFAULT_SKEW).unwrap().kid, None);
}

#[test]
fn times_are_rfc3339_in_the_message() {
    let f = fixture();
    let t = mint(&f.issuer, &claims(&f), None).unwrap();
    let (json, footer) = inspect(&t).unwrap();
    assert_eq!(json["exp"], "2026-06-01T12:02:00Z");
    assert_eq!(json["sub"], "1000");
    assert_eq!(json["target"]["cgroup"], "/vms/web");
    assert_eq!(json["peer"], f.peer.public().to_paserk());
    assert_eq!(footer, "");
}

#[test]
fn expiry_and_not_before_with_skew() {
    let f = fixture();
    let mut c = claims(&f);
    c.exp = NOW - Duration::seconds(10);
    // Expired 10 s ago: inside a 30 s skew it still verifies, with a 5 s skew it does not.
    assert!(mint_verify(&f, &c).is_ok());
    let t = mint(&f.issuer, &c, None).unwrap();
    let e = verify(&t, &f.policy, NOW, Duration::seconds(5)).unwrap_err();
    assert!(matches!(e, TokenError::Expired(_)), "{e}");
    assert_eq!(e.code(), "token_expired");

    let mut c = claims(&f);
    c.nbf = NOW + Duration::seconds(60);
    let e = mint_verify(&f, &c).unwrap_err();
    assert!(matches!(e, TokenError::NotYetValid(_)), "{e}");
    assert_eq!(e.code(), "token_not_yet_valid");

    let mut c = claims(&f);
    c.iat = NOW + Duration::seconds(60);
    assert!(matches!(
        mint_verify(&f, &c),
        Err(TokenError::IssuedInFuture(_))
    ));

    // Exactly at exp (no skew): expired.
    let c = claims(&f);
    let t = mint(&f.issuer, &c, None).unwrap();
    assert!(matches!(
        verify(&t, &f.policy, c.exp, Duration::ZERO),
        Err(TokenError::Expired(_))
    ));
    assert!(verify(&t, &f.policy, c.exp - Duration::seconds(1), Duration::ZERO).is_ok());
}

#[test]
fn audience_issuer_and_claim_shapes() {
    let f = fixture();
    let mut c = claims(&f);
    c.aud = "broker-b".into();
    assert!(matches!(
        mint_verify(&f, &c),
        Err(TokenError::AudienceMismatch { .. })
    ));

    let mut c = claims(&f);
    c.iss = "someone-else".into();
    let e = mint_verify(&f, &c).unwrap_err();
    assert!(matches!(e, TokenError::IssuerMismatch { .. }), "{e}");

    for sub in ["", "01000", "-1", "1e3", "4294967296", "root"] {
        let mut c = claims(&f);
        c.sub = sub.into();
        assert!(
            matches!(mint_verify(&f, &c), Err(TokenError::BadSubject(_))),
            "{sub:?}"
        );
    }
    for cg in ["vms/web", "/vms/../etc", "/vms//x", "/vms/*", "/vms/\u{7}"] {
        let mut c = claims(&f);
        c.target.cgroup = cg.into();
        assert!(
            matches!(mint_verify(&f, &c), Err(TokenError::BadTarget(_))),
            "{cg:?}"
        );
    }
    for jti in [String::new(), "x".repeat(129), "a\nb".into()] {
        let mut c = claims(&f);
        c.jti = jti;
        assert_eq!(mint_verify(&f, &c), Err(TokenError::BadJti));
    }
}

#[test]
fn missing_or_malformed_claims_are_named() {
    let f = fixture();
    let mut v = serde_json::to_value(claims(&f)).unwrap();
    v.as_object_mut().unwrap().remove("peer");
    let t = paseto::sign(&f.issuer, v.to_string().as_bytes(), b"", b"");
    let e = verify(&t, &f.policy, NOW, DEFAULT_SKEW).unwrap_err();
    assert!(e.to_string().contains("peer"), "{e}");
    assert_eq!(e.code(), "token_claims_invalid");

    let mut v = serde_json::to_value(claims(&f)).unwrap();
    v["exp"] = serde_json::json!(1_780_000_000);
    let t = paseto::sign(&f.issuer, v.to_string().as_bytes(), b"", b"");
    assert!(matches!(
        verify(&t, &f.policy, NOW, DEFAULT_SKEW),
        Err(TokenError::Claims(_))
    ));

    let mut v = serde_json::to_value(claims(&f)).unwrap();
    v["exp"] = serde_json::json!("2026-06-01 12:02:00");
    let t = paseto::sign(&f.issuer, v.to_string().as_bytes(), b"", b"");
    let e = verify(&t, &f.policy, NOW, DEFAULT_SKEW).unwrap_err();
    assert!(e.to_string().contains("RFC 3339"), "{e}");

    let mut v = serde_json::to_value(claims(&f)).unwrap();
    v["access"] = serde_json::json!("write");
    let t = paseto::sign(&f.issuer, v.to_string().as_bytes(), b"", b"");
    assert!(matches!(
        verify(&t, &f.policy, NOW, DEFAULT_SKEW),
        Err(TokenError::Claims(_))
    ));

    // A non-UTC offset is valid RFC 3339 and means the same instant.
    let mut v = serde_json::to_value(claims(&f)).unwrap();
    v["exp"] = serde_json::json!("2026-06-01T14:02:00+02:00");
    v["extra"] = serde_json::json!({"ignored": true});
    let t = paseto::sign(&f.issuer, v.to_string().as_bytes(), b"", b"");
    let ok = verify(&t, &f.policy, NOW, DEFAULT_SKEW).unwrap();
    assert_eq!(ok.claims.exp, NOW + Duration::seconds(120));
}

#[test]
fn untrusted_key_and_tampering_are_refused() {
    let f = fixture();
    let c = claims(&f);
    let stranger = SecretKey::generate().unwrap();
    // Even with a footer kid naming the trusted issuer, a stranger's signature fails.
    let t = mint(&stranger, &c, Some(&f.issuer.public().pid())).unwrap();
    assert_eq!(
        verify(&t, &f.policy, NOW, DEFAULT_SKEW),
        Err(TokenError::UntrustedIssuer)
    );

    let t = mint(&f.issuer, &c, Some(&f.issuer.public().pid())).unwrap();
    let (body, footer) = t["v4.public.".len()..].split_once('.').unwrap();
    let mut raw = crate::b64::decode_url(body).unwrap();
    // Flip one byte in the claims, one in the signature.
    for at in [5, raw.len() - 3] {
        raw[at] ^= 0x01;
        let forged = format!("v4.public.{}.{footer}", crate::b64::encode_url(&raw));
        assert_eq!(
            verify(&forged, &f.policy, NOW, DEFAULT_SKEW),
            Err(TokenError::UntrustedIssuer),
            "flip at {at}"
        );
        raw[at] ^= 0x01;
    }
    // The footer is signed too: swap it for another kid.
    let forged = format!(
        "v4.public.{body}.{}",
        crate::b64::encode_url(br#"{"kid":"orch"}"#)
    );
    assert_eq!(
        verify(&forged, &f.policy, NOW, DEFAULT_SKEW),
        Err(TokenError::UntrustedIssuer)
    );
    // Dropping the footer breaks the signature as well.
    let forged = format!("v4.public.{body}");
    assert_eq!(
        verify(&forged, &f.policy, NOW, DEFAULT_SKEW),
        Err(TokenError::UntrustedIssuer)
    );
}

#[test]
fn other_versions_and_local_purpose_are_unsupported() {
    let f = fixture();
    for t in [
        "v4.local.AAAA",
        "v3.public.AAAA",
        "v2.public.AAAA",
        "V4.public.AAAA",
    ] {
        let e = verify(t, &f.policy, NOW, DEFAULT_SKEW).unwrap_err();
        assert_eq!(e.code(), "token_unsupported", "{t}: {e}");
    }
    let e = verify("v4.local.AAAA", &f.policy, NOW, DEFAULT_SKEW).unwrap_err();
    assert!(e.to_string().contains("unsupported purpose"), "{e}");
    for t in [
        "",
        "v4",
        "v4.public",
        "v4.public.",
        "v4.public.AA.BB.CC",
        "v4.public.!!!",
    ] {
        let e = verify(t, &f.policy, NOW, DEFAULT_SKEW).unwrap_err();
        assert_eq!(e.code(), "token_malformed", "{t:?}: {e}");
    }
    let long = format!("v4.public.{}", "A".repeat(paseto::MAX_TOKEN_BYTES));
    assert_eq!(
        verify(&long, &f.policy, NOW, DEFAULT_SKEW),
        Err(TokenError::Paseto(PasetoError::TooLong))
    );
}

#[test]
fn verify_with_key_checks_times_and_optional_audience() {
    let f = fixture();
    let c = claims(&f);
    let t = mint(&f.issuer, &c, None).unwrap();
    let pk = f.issuer.public();
    assert_eq!(
        verify_with_key(&t, &pk, None, NOW, DEFAULT_SKEW).unwrap(),
        c
    );
    assert!(verify_with_key(&t, &pk, Some("broker-a"), NOW, DEFAULT_SKEW).is_ok());
    assert!(matches!(
        verify_with_key(&t, &pk, Some("broker-b"), NOW, DEFAULT_SKEW),
        Err(TokenError::AudienceMismatch { .. })
    ));
    assert!(matches!(
        verify_with_key(&t, &f.peer.public(), None, NOW, DEFAULT_SKEW),
        Err(TokenError::Paseto(PasetoError::BadSignature))
    ));
    assert!(matches!(
        verify_with_key(&t, &pk, None, NOW + Duration::hours(1), DEFAULT_SKEW),
        Err(TokenError::Expired(_))
    ));
}

#[test]
fn jti_is_fresh_hex() {
    let a = new_jti();
    let b = new_jti();
    assert_eq!(a.len(), 32);
    assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
}
