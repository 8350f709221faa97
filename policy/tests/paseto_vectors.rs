//! The published PASETO v4 test vectors: every `v4.public` vector signs to the same token
//! and verifies (payload, footer and implicit assertion); every `v4.local` vector is refused
//! as an unsupported purpose without being decrypted; every failure vector fails.

use memgate_policy::keys::{PublicKey, SecretKey};
use memgate_policy::paseto::{self, PasetoError};
use serde_json::Value;

fn vectors() -> Vec<Value> {
    let all: Value = serde_json::from_str(include_str!("vectors/paseto-v4.json")).unwrap();
    all["tests"].as_array().unwrap().clone()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

fn public_key(v: &Value) -> PublicKey {
    let raw = hex::decode(s(v, "public-key")).unwrap();
    PublicKey::from_bytes(raw.try_into().unwrap())
}

#[test]
fn public_vectors_sign_and_verify() {
    let mut n = 0;
    for v in vectors()
        .iter()
        .filter(|v| s(v, "token").starts_with("v4.public."))
    {
        if v["expect-fail"].as_bool().unwrap() {
            continue;
        }
        let name = s(v, "name");
        let sk = SecretKey::from_keypair_bytes(&hex::decode(s(v, "secret-key")).unwrap()).unwrap();
        let seed = hex::decode(s(v, "secret-key-seed")).unwrap();
        assert_eq!(&sk.seed()[..], &seed[..], "{name}");
        let pk = public_key(v);
        assert_eq!(sk.public(), pk, "{name}");
        let (payload, footer, implicit) =
            (s(v, "payload"), s(v, "footer"), s(v, "implicit-assertion"));
        // Ed25519 is deterministic, so our signer must produce the published token.
        let ours = paseto::sign(
            &sk,
            payload.as_bytes(),
            footer.as_bytes(),
            implicit.as_bytes(),
        );
        assert_eq!(ours, s(v, "token"), "{name}");
        let parts = paseto::verify(
            s(v, "token"),
            &pk,
            Some(footer.as_bytes()),
            implicit.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(parts.message, payload.as_bytes(), "{name}");
        assert_eq!(parts.footer, footer.as_bytes(), "{name}");
        // The implicit assertion is bound: a different one fails.
        assert_eq!(
            paseto::verify(s(v, "token"), &pk, None, b"{\"test-vector\":\"other\"}"),
            Err(PasetoError::BadSignature),
            "{name}"
        );
        // So is the footer, when the caller pins it.
        assert_eq!(
            paseto::verify(s(v, "token"), &pk, Some(b"x"), implicit.as_bytes()),
            Err(PasetoError::FooterMismatch),
            "{name}"
        );
        n += 1;
    }
    assert_eq!(n, 3, "4-S-1..3");
}

#[test]
fn local_vectors_are_refused_as_unsupported_purpose() {
    let mut n = 0;
    for v in vectors()
        .iter()
        .filter(|v| s(v, "token").starts_with("v4.local."))
    {
        let e = paseto::decode(s(v, "token")).unwrap_err();
        assert_eq!(
            e,
            PasetoError::UnsupportedPurpose("local".into()),
            "{}",
            s(v, "name")
        );
        assert!(e.to_string().contains("unsupported purpose"));
        n += 1;
    }
    assert!(n >= 12, "4-E-1..9, 4-F-1, 4-F-4, 4-F-5: {n}");
}

#[test]
fn failure_vectors_fail() {
    let mut n = 0;
    for v in vectors()
        .iter()
        .filter(|v| v["expect-fail"].as_bool() == Some(true))
    {
        let name = s(v, "name");
        let token = s(v, "token");
        let implicit = s(v, "implicit-assertion").as_bytes();
        // Try every key the vector offers, as a public key where it has 32 bytes.
        let mut keys = Vec::new();
        for k in ["public-key", "key"] {
            if let Ok(raw) = hex::decode(s(v, k)) {
                if let Ok(b) = <[u8; 32]>::try_from(raw.as_slice()) {
                    keys.push(PublicKey::from_bytes(b));
                }
            }
        }
        assert!(!keys.is_empty(), "{name}");
        for k in &keys {
            let e = paseto::verify(token, k, None, implicit).expect_err(name);
            let expected = match name {
                "4-F-2" => matches!(e, PasetoError::BadSignature),
                "4-F-3" => matches!(e, PasetoError::UnsupportedVersion(ref x) if x == "v3"),
                _ => matches!(e, PasetoError::UnsupportedPurpose(ref p) if p == "local"),
            };
            assert!(expected, "{name}: {e:?}");
        }
        n += 1;
    }
    assert_eq!(n, 5, "4-F-1..5");
}
