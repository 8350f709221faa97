//! PASETO v4.public on ring: Ed25519 over the pre-authentication encoding (PAE) of
//! header, message, footer and implicit assertion. Only `v4.public` is accepted;
//! `v4.local` is refused as an unsupported purpose and never decrypted.

use crate::b64;
use crate::keys::{PublicKey, SecretKey};

/// Header of a v4.public token.
pub const HEADER: &str = "v4.public.";
/// Largest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// Why a token was rejected at the PASETO layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasetoError {
    /// Another PASETO version.
    #[error("unsupported PASETO version {0:?} (only v4 is accepted)")]
    UnsupportedVersion(String),
    /// v4 but not `public`.
    #[error("unsupported purpose {0:?}: only v4.public tokens are accepted")]
    UnsupportedPurpose(String),
    /// Not shaped like a PASETO token.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The token is too long.
    #[error("token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    /// base64url decoding failed.
    #[error("token encoding: {0}")]
    Base64(#[from] b64::Base64Error),
    /// The footer is not what the caller required.
    #[error("token footer does not match")]
    FooterMismatch,
    /// The signature does not verify under the given key.
    #[error("token signature does not verify")]
    BadSignature,
}

/// Pre-authentication encoding: LE64(count) ‖ for each piece LE64(len) ‖ piece.
pub fn pae(pieces: &[&[u8]]) -> Vec<u8> {
    let total: usize = pieces.iter().map(|p| p.len() + 8).sum::<usize>() + 8;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&le64(pieces.len() as u64));
    for p in pieces {
        out.extend_from_slice(&le64(p.len() as u64));
        out.extend_from_slice(p);
    }
    out
}

fn le64(n: u64) -> [u8; 8] {
    (n & (u64::MAX >> 1)).to_le_bytes()
}

/// Signs `message` into a v4.public token.
pub fn sign(key: &SecretKey, message: &[u8], footer: &[u8], implicit: &[u8]) -> String {
    let m2 = pae(&[HEADER.as_bytes(), message, footer, implicit]);
    let sig = key.sign(&m2);
    let mut body = Vec::with_capacity(message.len() + 64);
    body.extend_from_slice(message);
    body.extend_from_slice(&sig);
    let mut token = format!("{HEADER}{}", b64::encode_url(&body));
    if !footer.is_empty() {
        token.push('.');
        token.push_str(&b64::encode_url(footer));
    }
    token
}

/// A token split into its parts, signature not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    /// The message (claims JSON for memgate).
    pub message: Vec<u8>,
    /// The Ed25519 signature.
    pub signature: [u8; 64],
    /// The footer (empty if none).
    pub footer: Vec<u8>,
}

/// Splits and decodes a token without verifying it.
pub fn decode(token: &str) -> Result<Parts, PasetoError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(PasetoError::TooLong);
    }
    let mut it = token.split('.');
    let version = it.next().unwrap_or_default();
    let purpose = it.next().ok_or(PasetoError::Malformed("missing purpose"))?;
    if version != "v4" {
        return Err(PasetoError::UnsupportedVersion(
            version.chars().take(16).collect(),
        ));
    }
    if purpose != "public" {
        return Err(PasetoError::UnsupportedPurpose(
            purpose.chars().take(16).collect(),
        ));
    }
    let payload = it.next().ok_or(PasetoError::Malformed("missing payload"))?;
    let footer = match it.next() {
        // An empty footer is written by leaving the part out; a trailing '.' would give
        // one token two encodings.
        Some("") => return Err(PasetoError::Malformed("empty footer part")),
        Some(f) => b64::decode_url(f)?,
        None => Vec::new(),
    };
    if it.next().is_some() {
        return Err(PasetoError::Malformed("too many parts"));
    }
    let raw = b64::decode_url(payload)?;
    if raw.len() < 64 {
        return Err(PasetoError::Malformed("payload shorter than a signature"));
    }
    let (message, sig) = raw.split_at(raw.len() - 64);
    let mut signature = [0u8; 64];
    signature.copy_from_slice(sig);
    Ok(Parts {
        message: message.to_vec(),
        signature,
        footer,
    })
}

/// Checks the signature of decoded parts under `key`.
pub fn verify_parts(parts: &Parts, key: &PublicKey, implicit: &[u8]) -> Result<(), PasetoError> {
    let m2 = pae(&[HEADER.as_bytes(), &parts.message, &parts.footer, implicit]);
    if key.verify(&m2, &parts.signature) {
        Ok(())
    } else {
        Err(PasetoError::BadSignature)
    }
}

/// Decodes and verifies a token; returns (message, footer).
pub fn verify(
    token: &str,
    key: &PublicKey,
    expected_footer: Option<&[u8]>,
    implicit: &[u8],
) -> Result<Parts, PasetoError> {
    let parts = decode(token)?;
    if let Some(f) = expected_footer {
        if parts.footer != f {
            return Err(PasetoError::FooterMismatch);
        }
    }
    verify_parts(&parts, key, implicit)?;
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_spec_examples() {
        assert_eq!(pae(&[]), b"\x00\x00\x00\x00\x00\x00\x00\x00");
        assert_eq!(
            pae(&[b""]),
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
        );
        assert_eq!(
            pae(&[b"test"]),
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00test"
        );
    }

    #[test]
    fn local_is_refused_as_unsupported_purpose() {
        assert!(matches!(
            decode("v4.local.AAAA"),
            Err(PasetoError::UnsupportedPurpose(p)) if p == "local"
        ));
        assert!(matches!(
            decode("v3.public.AAAA"),
            Err(PasetoError::UnsupportedVersion(_))
        ));
        assert!(decode("").is_err());
        assert!(decode("v4.public.").is_err());
    }
}
