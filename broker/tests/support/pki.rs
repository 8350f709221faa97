//! The test key set both broker harnesses use: a minisign admin key that signs policies,
//! a PASETO token issuer and a fault-server peer key, all freshly generated per test.

use memgate_policy::keys::SecretKey;
use memgate_policy::minisign;

/// Test keys: the admin (policy signing), one issuer, one fault-server peer.
pub struct Pki {
    /// Admin minisign key.
    pub admin: minisign::SecretKey,
    /// Token issuer.
    pub issuer: SecretKey,
    /// Fault-server peer.
    pub peer: SecretKey,
}

impl Pki {
    /// Fresh keys.
    pub fn generate() -> Pki {
        Pki {
            admin: minisign::SecretKey::generate().expect("admin key"),
            issuer: SecretKey::generate().expect("issuer key"),
            peer: SecretKey::generate().expect("peer key"),
        }
    }

    /// Signs `policy` with the admin key (minisign signature file text).
    pub fn sign(&self, policy: &str) -> String {
        self.admin
            .sign(policy.as_bytes(), "memgate test policy")
            .expect("sign")
            .to_file_text()
    }
}
