//! Base64 helpers: strict URL-safe unpadded (PASETO, PASERK) and standard padded
//! (minisign files). Decoding rejects padding where none belongs and non-canonical
//! trailing bits, so one byte string has exactly one accepted encoding.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;

/// A base64 input that did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid base64: {0}")]
pub struct Base64Error(String);

/// Encodes `data` as base64url without padding.
pub fn encode_url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Decodes base64url without padding (strict).
pub fn decode_url(s: &str) -> Result<Vec<u8>, Base64Error> {
    URL_SAFE_NO_PAD
        .decode(s.as_bytes())
        .map_err(|e| Base64Error(e.to_string()))
}

/// Encodes `data` as standard padded base64.
pub fn encode_std(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decodes standard padded base64 (strict).
pub fn decode_std(s: &str) -> Result<Vec<u8>, Base64Error> {
    STANDARD
        .decode(s.as_bytes())
        .map_err(|e| Base64Error(e.to_string()))
}
