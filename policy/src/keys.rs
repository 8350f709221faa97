//! Ed25519 keys in PASERK form (`k4.public.` / `k4.secret.`), used for token issuers and
//! fault-server peers, plus short fingerprints for audit logs.
//!
//! A secret key is 64 bytes, seed ‖ public key, as PASERK specifies. Parsing checks that
//! the public half really belongs to the seed. Secrets never appear in `Debug` output.

use blake2::digest::{Update, VariableOutput};
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};

use crate::b64;

/// PASERK prefix of a v4 public key.
pub const PUBLIC_PREFIX: &str = "k4.public.";
/// PASERK prefix of a v4 secret key.
pub const SECRET_PREFIX: &str = "k4.secret.";
/// PASERK prefix of a v4 public-key id.
pub const PID_PREFIX: &str = "k4.pid.";

/// What was wrong with a key string or key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The string does not start with the expected PASERK header.
    #[error("expected a PASERK key starting with {expected:?}")]
    WrongPrefix {
        /// The header that was expected.
        expected: &'static str,
    },
    /// The base64url body did not decode.
    #[error("key body: {0}")]
    Base64(#[from] b64::Base64Error),
    /// The decoded key has the wrong length.
    #[error("key is {got} bytes, expected {expected}")]
    Length {
        /// Bytes found.
        got: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// The public half of a secret key does not match its seed.
    #[error("secret key's public half does not match its seed")]
    Mismatch,
    /// ring refused the key material.
    #[error("invalid Ed25519 key material")]
    Invalid,
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses a `k4.public.` PASERK string (surrounding whitespace ignored).
    pub fn from_paserk(s: &str) -> Result<Self, KeyError> {
        let body = s
            .trim()
            .strip_prefix(PUBLIC_PREFIX)
            .ok_or(KeyError::WrongPrefix {
                expected: PUBLIC_PREFIX,
            })?;
        let raw = b64::decode_url(body)?;
        let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| KeyError::Length {
            got: raw.len(),
            expected: 32,
        })?;
        Ok(Self(bytes))
    }

    /// Formats as a `k4.public.` PASERK string.
    pub fn to_paserk(&self) -> String {
        format!("{PUBLIC_PREFIX}{}", b64::encode_url(&self.0))
    }

    /// The PASERK `k4.pid.` identifier of this key (used as the token footer `kid`).
    pub fn pid(&self) -> String {
        let mut h = blake2::Blake2bVar::new(33).expect("33 is a valid BLAKE2b output length");
        h.update(PID_PREFIX.as_bytes());
        h.update(self.to_paserk().as_bytes());
        let mut out = [0u8; 33];
        h.finalize_variable(&mut out)
            .expect("buffer length equals the requested output length");
        format!("{PID_PREFIX}{}", b64::encode_url(&out))
    }

    /// A short fingerprint for logs: 16 hex digits of BLAKE2b over the key.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.0)
    }

    /// Verifies an Ed25519 signature over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(msg, sig)
            .is_ok()
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_paserk())
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_paserk())
    }
}

/// A short fingerprint of arbitrary public key bytes: 16 hex digits of BLAKE2b-64.
pub fn fingerprint(public: &[u8]) -> String {
    let mut h = blake2::Blake2bVar::new(8).expect("8 is a valid BLAKE2b output length");
    h.update(b"memgate key fingerprint\0");
    h.update(public);
    let mut out = [0u8; 8];
    h.finalize_variable(&mut out)
        .expect("buffer length equals the requested output length");
    hex::encode(out)
}

/// An Ed25519 secret key (seed and the matching public key).
pub struct SecretKey {
    seed: [u8; 32],
    public: PublicKey,
    pair: Ed25519KeyPair,
}

/// An issuer's token-signing key.
pub type IssuerSecret = SecretKey;
/// A fault server's peer key.
pub type PeerSecret = SecretKey;

impl SecretKey {
    /// Builds a key from a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| KeyError::Invalid)?;
        let public: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| KeyError::Invalid)?;
        Ok(Self {
            seed,
            public: PublicKey(public),
            pair,
        })
    }

    /// Builds a key from 64 bytes seed ‖ public, checking that they match.
    pub fn from_keypair_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != 64 {
            return Err(KeyError::Length {
                got: bytes.len(),
                expected: 64,
            });
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes[..32]);
        let key = Self::from_seed(seed)?;
        if key.public.0[..] != bytes[32..] {
            return Err(KeyError::Mismatch);
        }
        Ok(key)
    }

    /// Generates a fresh random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .map_err(|_| KeyError::Invalid)?;
        Self::from_seed(seed)
    }

    /// Parses a `k4.secret.` PASERK string (surrounding whitespace ignored).
    pub fn from_paserk(s: &str) -> Result<Self, KeyError> {
        let body = s
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(KeyError::WrongPrefix {
                expected: SECRET_PREFIX,
            })?;
        let raw = b64::decode_url(body)?;
        Self::from_keypair_bytes(&raw)
    }

    /// Formats as a `k4.secret.` PASERK string. This is secret material.
    pub fn to_paserk(&self) -> String {
        format!("{SECRET_PREFIX}{}", b64::encode_url(&self.keypair_bytes()))
    }

    /// seed ‖ public (64 bytes). This is secret material.
    pub fn keypair_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.seed);
        out[32..].copy_from_slice(&self.public.0);
        out
    }

    /// The 32-byte seed. This is secret material.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// Signs `msg` with Ed25519.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let sig = self.pair.sign(msg);
        let mut out = [0u8; 64];
        out.copy_from_slice(sig.as_ref());
        out
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(public {})", self.public.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paserk_round_trip_and_pid_vector() {
        // PASERK k4.public test vector: all-zero-ish key from the spec's examples is not
        // shipped, so check the round trip and the id shape with the PASETO vector key.
        let pk = hex::decode("1eb9dbbbbc047c03fd70604e0071f0987e16b28b757225c11f00415d0e20b1a2")
            .unwrap();
        let pk = PublicKey::from_bytes(pk.try_into().unwrap());
        let s = pk.to_paserk();
        assert_eq!(PublicKey::from_paserk(&s).unwrap(), pk);
        assert!(pk.pid().starts_with("k4.pid."));
        assert_eq!(pk.pid().len(), "k4.pid.".len() + 44);
        assert_eq!(pk.fingerprint().len(), 16);
    }

    #[test]
    fn secret_round_trip_and_mismatch() {
        let sk = SecretKey::generate().unwrap();
        let s = sk.to_paserk();
        let back = SecretKey::from_paserk(&s).unwrap();
        assert_eq!(back.public(), sk.public());
        let mut bytes = sk.keypair_bytes();
        bytes[40] ^= 1;
        assert_eq!(
            SecretKey::from_keypair_bytes(&bytes).unwrap_err(),
            KeyError::Mismatch
        );
        assert!(!format!("{sk:?}").contains(&s));
    }

    #[test]
    fn wrong_prefix_and_length() {
        assert!(matches!(
            PublicKey::from_paserk("k4.secret.AAAA"),
            Err(KeyError::WrongPrefix { .. })
        ));
        assert!(matches!(
            PublicKey::from_paserk("k4.public.AAAA"),
            Err(KeyError::Length { got: 3, .. })
        ));
    }

    #[test]
    fn sign_verify() {
        let sk = SecretKey::generate().unwrap();
        let sig = sk.sign(b"hello");
        assert!(sk.public().verify(b"hello", &sig));
        assert!(!sk.public().verify(b"hellp", &sig));
    }
}
