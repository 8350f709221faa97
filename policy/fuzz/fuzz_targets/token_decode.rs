//! Fuzzes the token decoder: PASETO splitting and base64url, the claims JSON, and full
//! verification against a fixed policy (signatures fail, so claims parsing is reached
//! through `inspect`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use memgate_policy::keys::SecretKey;
use memgate_policy::{paseto, token, Policy};
use time::{Duration, OffsetDateTime};

fn policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| {
        let key = SecretKey::from_seed([5; 32]).expect("fixed seed is a valid key");
        Policy::parse(&format!(
            "version = 1\nbroker = \"b\"\nserial = 1\n[[issuer]]\nname = \"orch\"\n\
             key = \"{}\"\ncgroups = [\"/**\"]\nuids = [0]\nmax_bytes = 4096\nmax_lease = 5\n",
            key.public().to_paserk()
        ))
        .expect("fixed policy parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = paseto::decode(&text);
    let _ = token::inspect(&text);
    let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
    let _ = token::verify(&text, policy(), now, token::DEFAULT_SKEW);
    // Inputs that look like a claims object are also signed by the trusted issuer, so
    // claim parsing and checking are reached (signing every input would halve the rate).
    if data.first() != Some(&b'{') {
        return;
    }
    if let Ok(key) = SecretKey::from_seed([5; 32]) {
        let t = paseto::sign(&key, data, b"", b"");
        let _ = token::verify(&t, policy(), now, token::DEFAULT_SKEW);
    }
});
