//! The fixed frame header and the message kind numbers.
//!
//! Layout (little-endian): `magic: [u8; 4] = "MGAT"`, `version: u16`, `kind: u16`,
//! `body_len: u32`, then exactly `body_len` bytes of JSON.

use thiserror::Error;

/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"MGAT";
/// Protocol version spoken by this crate.
pub const VERSION: u16 = 1;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 12;
/// Largest frame (header plus body) either side accepts.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Message kinds. Requests are below `0x100`, responses at or above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Kind {
    /// Request: export regions of a target process.
    Export = 1,
    /// Request: revoke a grant.
    Revoke = 2,
    /// Request: list the caller's grants.
    List = 3,
    /// Request: broker status.
    Status = 4,
    /// Request: wait until a grant is committed, revoked or expired.
    Wait = 5,
    /// Response: a grant document.
    GrantReply = 0x101,
    /// Response: the request was denied.
    DeniedReply = 0x102,
    /// Response: the caller's grants.
    GrantsReply = 0x103,
    /// Response: broker status.
    StatusReply = 0x104,
    /// Response: outcome of a `Wait`.
    WaitReply = 0x105,
    /// Response: the request could not be processed.
    ErrorReply = 0x106,
}

impl Kind {
    /// Maps a wire number to a kind.
    pub fn from_u16(v: u16) -> Option<Kind> {
        Some(match v {
            1 => Kind::Export,
            2 => Kind::Revoke,
            3 => Kind::List,
            4 => Kind::Status,
            5 => Kind::Wait,
            0x101 => Kind::GrantReply,
            0x102 => Kind::DeniedReply,
            0x103 => Kind::GrantsReply,
            0x104 => Kind::StatusReply,
            0x105 => Kind::WaitReply,
            0x106 => Kind::ErrorReply,
            _ => return None,
        })
    }

    /// True for request kinds (client to broker).
    pub fn is_request(self) -> bool {
        (self as u16) < 0x100
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version.
    pub version: u16,
    /// Raw kind number.
    pub kind: u16,
    /// Declared body length.
    pub body_len: u32,
}

impl Header {
    /// Serialises the header.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.version.to_le_bytes());
        out[6..8].copy_from_slice(&self.kind.to_le_bytes());
        out[8..12].copy_from_slice(&self.body_len.to_le_bytes());
        out
    }

    /// Parses and checks the header of `frame`, which must be the whole packet.
    pub fn parse(frame: &[u8]) -> Result<Header, DecodeError> {
        if frame.len() > MAX_MESSAGE {
            return Err(DecodeError::TooLarge { len: frame.len() });
        }
        let head: &[u8; HEADER_LEN] = frame
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(DecodeError::TooShort { len: frame.len() })?;
        if head[..4] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = u16::from_le_bytes([head[4], head[5]]);
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let kind = u16::from_le_bytes([head[6], head[7]]);
        let body_len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        let actual = frame.len() - HEADER_LEN;
        if body_len as usize != actual {
            return Err(DecodeError::LengthMismatch {
                declared: body_len,
                actual,
            });
        }
        Ok(Header {
            version,
            kind,
            body_len,
        })
    }
}

/// Builds a frame from a kind and a JSON body.
pub(crate) fn build(kind: Kind, body: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let total = HEADER_LEN + body.len();
    if total > MAX_MESSAGE {
        return Err(EncodeError::TooLarge { len: total });
    }
    let header = Header {
        version: VERSION,
        kind: kind as u16,
        body_len: body.len() as u32,
    };
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// Why a frame could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than a header.
    #[error("frame too short: {len} bytes, header needs {HEADER_LEN}")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// More bytes than [`MAX_MESSAGE`].
    #[error("frame too large: {len} bytes, limit {MAX_MESSAGE}")]
    TooLarge {
        /// Bytes received (at least).
        len: usize,
    },
    /// The first four bytes are not `MGAT`.
    #[error("bad magic: not a memgate broker frame")]
    BadMagic,
    /// A version this crate does not speak.
    #[error("unsupported protocol version {version}, this side speaks {VERSION}")]
    UnsupportedVersion {
        /// Version in the header.
        version: u16,
    },
    /// A kind number that is not defined.
    #[error("unknown message kind {kind:#x}")]
    UnknownKind {
        /// Kind in the header.
        kind: u16,
    },
    /// A response kind where a request was expected, or the reverse.
    #[error("message kind {kind:#x} is not valid in this direction")]
    WrongDirection {
        /// Kind in the header.
        kind: u16,
    },
    /// The header's body length disagrees with the packet.
    #[error("body length {declared} declared, {actual} received")]
    LengthMismatch {
        /// Declared length.
        declared: u32,
        /// Actual body length.
        actual: usize,
    },
    /// The JSON body does not match the kind's schema.
    #[error("malformed body: {0}")]
    Body(String),
}

impl DecodeError {
    /// Stable snake_case code for this error (used in `Error` replies and audit).
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::TooShort { .. } => "frame_too_short",
            DecodeError::TooLarge { .. } => "frame_too_large",
            DecodeError::BadMagic => "bad_magic",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
            DecodeError::UnknownKind { .. } => "unknown_kind",
            DecodeError::WrongDirection { .. } => "wrong_direction",
            DecodeError::LengthMismatch { .. } => "length_mismatch",
            DecodeError::Body(_) => "malformed_body",
        }
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Error)]
pub enum EncodeError {
    /// The encoded frame would exceed [`MAX_MESSAGE`].
    #[error("message too large: {len} bytes, limit {MAX_MESSAGE}")]
    TooLarge {
        /// Encoded length.
        len: usize,
    },
    /// JSON serialisation failed.
    #[error("serialising body: {0}")]
    Json(#[from] serde_json::Error),
}
