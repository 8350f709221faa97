//! minisign-compatible keys and detached signatures.
//!
//! Formats (all binary blobs are standard base64 on the second line of a two-line file,
//! under an `untrusted comment:` line):
//! - public key: `"Ed"` ‖ key id (8) ‖ Ed25519 public key (32);
//! - secret key (unencrypted, like `minisign -G -W`): `"Ed"` ‖ kdf alg `00 00` ‖ `"B2"` ‖
//!   salt (32) ‖ opslimit (8) ‖ memlimit (8) ‖ key id (8) ‖ seed ‖ public (64) ‖
//!   checksum (32) = BLAKE2b-256(`"Ed"` ‖ key id ‖ seed ‖ public). The stock tool writes
//!   an all-zero checksum for unencrypted keys; both that and the correct one are accepted.
//! - signature: `"Ed"` (legacy, signs the data) or `"ED"` (signs BLAKE2b-512 of the data)
//!   ‖ key id ‖ signature (64), then `trusted comment: ...` and base64 of the global
//!   signature, which signs signature ‖ trusted comment.

use blake2::{Blake2b512, Digest as _};
use ring::signature::{UnparsedPublicKey, ED25519};

use crate::b64;
use crate::keys::{self, KeyError};

const UNTRUSTED: &str = "untrusted comment: ";
const TRUSTED: &str = "trusted comment: ";
/// Largest comment line accepted, like the stock tool's limit.
const MAX_COMMENT: usize = 1024;

/// What was wrong with a minisign key or signature, or why verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MinisignError {
    /// The file does not have the expected lines.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which kind of file.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A base64 line did not decode.
    #[error("{what}: {source}")]
    Base64 {
        /// Which kind of file.
        what: &'static str,
        /// The decoding error.
        source: b64::Base64Error,
    },
    /// The algorithm bytes are not supported.
    #[error("unsupported {what} algorithm {alg:?}")]
    Algorithm {
        /// Which field.
        what: &'static str,
        /// The bytes found, escaped.
        alg: String,
    },
    /// The secret key is encrypted; memgate only reads unencrypted keys.
    #[error("secret key is encrypted with a password; memgate needs an unencrypted key (minisign -G -W)")]
    Encrypted,
    /// The secret key checksum does not match.
    #[error("secret key checksum mismatch (corrupted key file)")]
    Checksum,
    /// Key material is invalid.
    #[error("key: {0}")]
    Key(#[from] KeyError),
    /// The signature was made by a key that is not among those given.
    #[error("signature key id {0} does not match any trusted admin key")]
    UnknownKeyId(String),
    /// The signature over the data does not verify.
    #[error("signature does not verify: the signed data or the signature was altered")]
    BadSignature,
    /// The global signature over the trusted comment does not verify.
    #[error(
        "trusted comment signature does not verify: the trusted comment or signature was altered"
    )]
    BadGlobalSignature,
}

/// Signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Legacy `Ed`: Ed25519 over the data itself.
    Legacy,
    /// Default `ED`: Ed25519 over BLAKE2b-512 of the data.
    Prehashed,
}

impl Algorithm {
    fn bytes(self) -> [u8; 2] {
        match self {
            Algorithm::Legacy => *b"Ed",
            Algorithm::Prehashed => *b"ED",
        }
    }
}

/// A key id: 8 bytes, displayed like the stock tool (hex of the little-endian number).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({self})")
    }
}

fn split_two_lines<'a>(
    text: &'a str,
    what: &'static str,
) -> Result<(&'a str, &'a str, std::str::Lines<'a>), MinisignError> {
    let mut lines = text.lines();
    let malformed = |detail: &str| MinisignError::Malformed {
        what,
        detail: detail.to_string(),
    };
    let first = lines.next().ok_or_else(|| malformed("empty"))?;
    let comment = first
        .strip_prefix(UNTRUSTED)
        .ok_or_else(|| malformed("first line must start with \"untrusted comment: \""))?;
    if comment.len() > MAX_COMMENT {
        return Err(malformed("untrusted comment too long"));
    }
    let data = lines
        .next()
        .ok_or_else(|| malformed("missing base64 line"))?;
    Ok((comment, data.trim_end(), lines))
}

fn decode(what: &'static str, s: &str) -> Result<Vec<u8>, MinisignError> {
    b64::decode_std(s).map_err(|source| MinisignError::Base64 { what, source })
}

fn escape(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// An admin public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    /// The key id.
    pub key_id: KeyId,
    /// The Ed25519 public key.
    pub key: keys::PublicKey,
}

impl PublicKey {
    /// Parses the base64 line alone (what `minisign -P` takes).
    pub fn from_base64(s: &str) -> Result<Self, MinisignError> {
        let raw = decode("public key", s.trim())?;
        if raw.len() != 42 {
            return Err(MinisignError::Malformed {
                what: "public key",
                detail: format!("{} bytes, expected 42", raw.len()),
            });
        }
        if &raw[..2] != b"Ed" {
            return Err(MinisignError::Algorithm {
                what: "public key",
                alg: escape(&raw[..2]),
            });
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&raw[2..10]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw[10..42]);
        Ok(Self {
            key_id: KeyId(id),
            key: keys::PublicKey::from_bytes(key),
        })
    }

    /// Parses a public key file (untrusted comment line, base64 line).
    pub fn from_file_text(text: &str) -> Result<Self, MinisignError> {
        let (_, data, _) = split_two_lines(text, "public key")?;
        Self::from_base64(data)
    }

    /// The base64 line.
    pub fn to_base64(&self) -> String {
        let mut raw = Vec::with_capacity(42);
        raw.extend_from_slice(b"Ed");
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(self.key.as_bytes());
        b64::encode_std(&raw)
    }

    /// The whole public key file, as the stock tool writes it.
    pub fn to_file_text(&self) -> String {
        format!(
            "{UNTRUSTED}minisign public key {}\n{}\n",
            self.key_id,
            self.to_base64()
        )
    }

    /// Short fingerprint for logs: the key id as the stock tool shows it.
    pub fn fingerprint(&self) -> String {
        self.key_id.to_string()
    }
}

/// An admin secret key (unencrypted).
pub struct SecretKey {
    /// The key id.
    pub key_id: KeyId,
    key: keys::SecretKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "minisign::SecretKey({})", self.key_id)
    }
}

fn checksum(key_id: &[u8; 8], keypair: &[u8; 64]) -> [u8; 32] {
    let mut h = blake2::Blake2b::<blake2::digest::consts::U32>::new();
    h.update(b"Ed");
    h.update(key_id);
    h.update(keypair);
    h.finalize().into()
}

impl SecretKey {
    /// Generates a fresh key with a random key id.
    pub fn generate() -> Result<Self, MinisignError> {
        let key = keys::SecretKey::generate()?;
        let mut id = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| KeyError::Invalid)?;
        Ok(Self {
            key_id: KeyId(id),
            key,
        })
    }

    /// Builds a key from its parts.
    pub fn from_parts(key_id: KeyId, key: keys::SecretKey) -> Self {
        Self { key_id, key }
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key_id: self.key_id,
            key: self.key.public(),
        }
    }

    /// Parses an unencrypted secret key file.
    pub fn from_file_text(text: &str) -> Result<Self, MinisignError> {
        let (_, data, _) = split_two_lines(text, "secret key")?;
        let raw = decode("secret key", data)?;
        if raw.len() != 158 {
            return Err(MinisignError::Malformed {
                what: "secret key",
                detail: format!("{} bytes, expected 158", raw.len()),
            });
        }
        if &raw[..2] != b"Ed" {
            return Err(MinisignError::Algorithm {
                what: "secret key signature",
                alg: escape(&raw[..2]),
            });
        }
        match &raw[2..4] {
            [0, 0] => {}
            b"Sc" => return Err(MinisignError::Encrypted),
            other => {
                return Err(MinisignError::Algorithm {
                    what: "secret key kdf",
                    alg: escape(other),
                })
            }
        }
        if &raw[4..6] != b"B2" {
            return Err(MinisignError::Algorithm {
                what: "secret key checksum",
                alg: escape(&raw[4..6]),
            });
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&raw[54..62]);
        let mut pair = [0u8; 64];
        pair.copy_from_slice(&raw[62..126]);
        let chk = &raw[126..158];
        if chk.iter().any(|&b| b != 0) && chk != checksum(&id, &pair) {
            return Err(MinisignError::Checksum);
        }
        let key = keys::SecretKey::from_keypair_bytes(&pair)?;
        Ok(Self {
            key_id: KeyId(id),
            key,
        })
    }

    /// The whole secret key file, unencrypted, with a correct checksum. Secret material.
    pub fn to_file_text(&self) -> String {
        let pair = self.key.keypair_bytes();
        let mut raw = Vec::with_capacity(158);
        raw.extend_from_slice(b"Ed");
        raw.extend_from_slice(&[0, 0]);
        raw.extend_from_slice(b"B2");
        raw.extend_from_slice(&[0u8; 48]);
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(&pair);
        raw.extend_from_slice(&checksum(&self.key_id.0, &pair));
        format!(
            "{UNTRUSTED}minisign secret key (unencrypted) {}\n{}\n",
            self.key_id,
            b64::encode_std(&raw)
        )
    }

    /// Signs `data` with the default prehashed algorithm and the given trusted comment.
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> Result<Signature, MinisignError> {
        self.sign_with(data, trusted_comment, Algorithm::Prehashed)
    }

    /// Signs `data` with the chosen algorithm.
    pub fn sign_with(
        &self,
        data: &[u8],
        trusted_comment: &str,
        alg: Algorithm,
    ) -> Result<Signature, MinisignError> {
        if trusted_comment.contains(['\n', '\r']) || trusted_comment.len() > MAX_COMMENT {
            return Err(MinisignError::Malformed {
                what: "trusted comment",
                detail: "must be one line of at most 1024 bytes".into(),
            });
        }
        let signature = match alg {
            Algorithm::Legacy => self.key.sign(data),
            Algorithm::Prehashed => self.key.sign(&Blake2b512::digest(data)),
        };
        let mut global = Vec::with_capacity(64 + trusted_comment.len());
        global.extend_from_slice(&signature);
        global.extend_from_slice(trusted_comment.as_bytes());
        Ok(Signature {
            algorithm: alg,
            key_id: self.key_id,
            signature,
            untrusted_comment: "signature from memgate admin key".into(),
            trusted_comment: trusted_comment.to_string(),
            global_signature: self.key.sign(&global),
        })
    }
}

/// A detached signature (`.minisig` file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Which algorithm signed the data.
    pub algorithm: Algorithm,
    /// The signing key's id.
    pub key_id: KeyId,
    /// Signature over the data (or its hash).
    pub signature: [u8; 64],
    /// The first line's comment (not signed).
    pub untrusted_comment: String,
    /// The signed comment.
    pub trusted_comment: String,
    /// Signature over `signature ‖ trusted_comment`.
    pub global_signature: [u8; 64],
}

impl Signature {
    /// Parses a `.minisig` file.
    pub fn parse(text: &str) -> Result<Self, MinisignError> {
        const WHAT: &str = "signature";
        let malformed = |detail: &str| MinisignError::Malformed {
            what: WHAT,
            detail: detail.to_string(),
        };
        let (untrusted, data, mut rest) = split_two_lines(text, WHAT)?;
        let raw = decode(WHAT, data)?;
        if raw.len() != 74 {
            return Err(malformed(&format!("{} bytes, expected 74", raw.len())));
        }
        let algorithm = match &raw[..2] {
            b"Ed" => Algorithm::Legacy,
            b"ED" => Algorithm::Prehashed,
            other => {
                return Err(MinisignError::Algorithm {
                    what: WHAT,
                    alg: escape(other),
                })
            }
        };
        let mut id = [0u8; 8];
        id.copy_from_slice(&raw[2..10]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&raw[10..74]);
        let tc_line = rest
            .next()
            .ok_or_else(|| malformed("missing trusted comment"))?;
        let trusted = tc_line
            .strip_prefix(TRUSTED)
            .ok_or_else(|| malformed("third line must start with \"trusted comment: \""))?;
        if trusted.len() > MAX_COMMENT {
            return Err(malformed("trusted comment too long"));
        }
        let gline = rest
            .next()
            .ok_or_else(|| malformed("missing global signature"))?;
        let graw = decode(WHAT, gline.trim_end())?;
        let global_signature: [u8; 64] = graw
            .as_slice()
            .try_into()
            .map_err(|_| malformed("global signature is not 64 bytes"))?;
        if rest.any(|l| !l.trim().is_empty()) {
            return Err(malformed("trailing data after the global signature"));
        }
        Ok(Self {
            algorithm,
            key_id: KeyId(id),
            signature,
            untrusted_comment: untrusted.to_string(),
            trusted_comment: trusted.to_string(),
            global_signature,
        })
    }

    /// Formats as a `.minisig` file.
    pub fn to_file_text(&self) -> String {
        let mut raw = Vec::with_capacity(74);
        raw.extend_from_slice(&self.algorithm.bytes());
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(&self.signature);
        format!(
            "{UNTRUSTED}{}\n{}\n{TRUSTED}{}\n{}\n",
            self.untrusted_comment,
            b64::encode_std(&raw),
            self.trusted_comment,
            b64::encode_std(&self.global_signature)
        )
    }
}

/// Verifies `sig` over `data` against the key among `trusted` whose id matches.
/// Returns that key. Both the data signature and the trusted-comment signature must hold.
pub fn verify<'k>(
    data: &[u8],
    sig: &Signature,
    trusted: &'k [PublicKey],
) -> Result<&'k PublicKey, MinisignError> {
    let pk = trusted
        .iter()
        .find(|k| k.key_id == sig.key_id)
        .ok_or_else(|| MinisignError::UnknownKeyId(sig.key_id.to_string()))?;
    let key = UnparsedPublicKey::new(&ED25519, pk.key.as_bytes());
    let ok = match sig.algorithm {
        Algorithm::Legacy => key.verify(data, &sig.signature),
        Algorithm::Prehashed => key.verify(&Blake2b512::digest(data), &sig.signature),
    };
    ok.map_err(|_| MinisignError::BadSignature)?;
    let mut global = Vec::with_capacity(64 + sig.trusted_comment.len());
    global.extend_from_slice(&sig.signature);
    global.extend_from_slice(sig.trusted_comment.as_bytes());
    key.verify(&global, &sig.global_signature)
        .map_err(|_| MinisignError::BadGlobalSignature)?;
    Ok(pk)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `minisign -G -W` and `minisign -S -t "tc here"` / `minisign -S -l`.
    const PUB: &str = "untrusted comment: minisign public key A6119AD7AAB1ADBF\nRWS/rbGq15oRpv4gCrycEdGPL1+3mI/iKNjAeUQesK7LEjuX6gafoZCg\n";
    const SEC: &str = "untrusted comment: minisign encrypted secret key\nRWQAAEIyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAv62xqteaEaaYt0L5MsaGl7Rf4ly8rnkgZuUsFOcWr55YZHopzHee/f4gCrycEdGPL1+3mI/iKNjAeUQesK7LEjuX6gafoZCgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
    const SIG_ED: &str = "untrusted comment: signature from minisign secret key\nRUS/rbGq15oRplSmRR42aMABx3QZJ+ZgeIfZahgeq05qTuCOMfMt9ZzI8O/gg1EodERZceWtKI/QGTxw7QioNeuIuxqvrgN8aQ4=\ntrusted comment: tc here\nhgVzBW4Yeu92tHsYX5LnFsgR9QbD3KtFTAeaxR1fo2UWUdZduw+yka/8xZTHObXitGeeRhyVbdSZCjBloUmiDw==\n";
    const SIG_LEGACY: &str = "untrusted comment: signature from minisign secret key\nRWS/rbGq15oRplgsKfzY3AADJrmrs07oA8A+ZFcE+L8ZBHcFpZwdQZclZHnwC44arRaFOqxX9HiOWxOlAKxsRyeI5vIbGmKzzAc=\ntrusted comment: timestamp:1796335651\tfile:m\n83ITMaIBTM0JOvIUk1LS8zEoVpeqOxLXOFREp4wGDAW8DjsEcDw6ER79cmsEvgPeMqv1UyXw0cyQ2iy1/h0fCQ==\n";
    const MSG: &[u8] = b"hello\n";

    #[test]
    fn stock_signatures_verify() {
        let pk = PublicKey::from_file_text(PUB).unwrap();
        assert_eq!(pk.key_id.to_string(), "A6119AD7AAB1ADBF");
        for s in [SIG_ED, SIG_LEGACY] {
            let sig = Signature::parse(s).unwrap();
            verify(MSG, &sig, &[pk]).unwrap();
            assert_eq!(
                verify(b"hello!\n", &sig, &[pk]),
                Err(MinisignError::BadSignature)
            );
        }
        assert_eq!(
            Signature::parse(SIG_ED).unwrap().algorithm,
            Algorithm::Prehashed
        );
        assert_eq!(
            Signature::parse(SIG_LEGACY).unwrap().algorithm,
            Algorithm::Legacy
        );
    }

    #[test]
    fn stock_secret_key_loads_and_signs() {
        let sk = SecretKey::from_file_text(SEC).unwrap();
        let pk = PublicKey::from_file_text(PUB).unwrap();
        assert_eq!(sk.public(), pk);
        let sig = sk.sign(MSG, "x").unwrap();
        // Ed25519 is deterministic: same key, same data, same signature as the stock tool.
        assert_eq!(sig.signature, Signature::parse(SIG_ED).unwrap().signature);
        let text = sig.to_file_text();
        verify(MSG, &Signature::parse(&text).unwrap(), &[pk]).unwrap();
        // Re-serialised secret key (with a real checksum) loads back.
        let again = SecretKey::from_file_text(&sk.to_file_text()).unwrap();
        assert_eq!(again.public(), pk);
    }

    #[test]
    fn tampering_is_rejected_with_reason() {
        let pk = PublicKey::from_file_text(PUB).unwrap();
        let good = Signature::parse(SIG_ED).unwrap();
        let mut s = good.clone();
        s.trusted_comment.push('!');
        assert_eq!(
            verify(MSG, &s, &[pk]),
            Err(MinisignError::BadGlobalSignature)
        );
        let mut s = good.clone();
        s.signature[3] ^= 1;
        assert_eq!(verify(MSG, &s, &[pk]), Err(MinisignError::BadSignature));
        let mut s = good.clone();
        s.global_signature[0] ^= 1;
        assert_eq!(
            verify(MSG, &s, &[pk]),
            Err(MinisignError::BadGlobalSignature)
        );
        let mut s = good.clone();
        s.key_id.0[0] ^= 1;
        assert!(matches!(
            verify(MSG, &s, &[pk]),
            Err(MinisignError::UnknownKeyId(_))
        ));
        // Switching the algorithm byte changes what was signed.
        let mut s = good;
        s.algorithm = Algorithm::Legacy;
        assert_eq!(verify(MSG, &s, &[pk]), Err(MinisignError::BadSignature));
    }

    #[test]
    fn secret_key_checksum_and_encryption_checked() {
        let sk = SecretKey::generate().unwrap();
        let text = sk.to_file_text();
        let line = text.lines().nth(1).unwrap();
        let mut raw = b64::decode_std(line).unwrap();
        raw[157] ^= 1;
        let bad = format!("untrusted comment: x\n{}\n", b64::encode_std(&raw));
        assert_eq!(
            SecretKey::from_file_text(&bad).unwrap_err(),
            MinisignError::Checksum
        );
        raw[157] ^= 1;
        raw[2..4].copy_from_slice(b"Sc");
        let enc = format!("untrusted comment: x\n{}\n", b64::encode_std(&raw));
        assert_eq!(
            SecretKey::from_file_text(&enc).unwrap_err(),
            MinisignError::Encrypted
        );
    }
}
