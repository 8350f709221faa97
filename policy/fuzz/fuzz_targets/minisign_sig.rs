//! Fuzzes the minisign file parsers (signature, public key, secret key) and signature
//! verification of whatever parses, against a fixed admin key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memgate_policy::keys;
use memgate_policy::minisign::{self, KeyId, PublicKey, SecretKey, Signature};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = PublicKey::from_file_text(&text);
    let _ = PublicKey::from_base64(&text);
    let _ = SecretKey::from_file_text(&text);
    if let Ok(sig) = Signature::parse(&text) {
        let _ = sig.to_file_text();
        let (Ok(k), Ok(k2)) = (
            keys::SecretKey::from_seed([3; 32]),
            keys::SecretKey::from_seed([4; 32]),
        ) else {
            return;
        };
        let admin = SecretKey::from_parts(sig.key_id, k).public();
        let other = SecretKey::from_parts(KeyId([0; 8]), k2).public();
        let _ = minisign::verify(b"policy bytes", &sig, &[other, admin]);
    }
});
