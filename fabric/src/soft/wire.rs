//! Frame codec of the soft wire protocol, version 1 (`docs/fabric-soft.md`).
//!
//! Every frame is an 8-byte little-endian header — opcode `u8`, flags `u8` (0),
//! reserved `u16` (0), body length `u32` — followed by the body. [`decode`] never
//! panics on any input and refuses bodies above the caller's bound before buffering them.

use crate::{WcStatus, MAX_READ_LEN, MAX_SGE};

/// Protocol version carried in HELLO/CHALLENGE and bound into the auth transcript.
pub const VERSION: u16 = 1;
/// HELLO magic.
pub const MAGIC: [u8; 4] = *b"MGFS";
/// Header length.
pub const HDR: usize = 8;
/// Largest body a responder accepts from an initiator.
pub const MAX_REQUEST_BODY: usize = 16 + 16 * MAX_SGE;
/// Fixed part of a READ_RESP body (before the data).
pub const READ_RESP_FIXED: usize = 16;
/// Largest body an initiator accepts from a responder.
pub const MAX_REPLY_BODY: usize = READ_RESP_FIXED + MAX_READ_LEN as usize;
/// Longest ERROR message.
pub const MAX_ERROR_MSG: usize = 256;

pub const OP_HELLO: u8 = 0x01;
pub const OP_CHALLENGE: u8 = 0x02;
pub const OP_AUTH: u8 = 0x03;
pub const OP_WELCOME: u8 = 0x04;
pub const OP_READ: u8 = 0x10;
pub const OP_READ_SG: u8 = 0x11;
pub const OP_COMMIT: u8 = 0x20;
pub const OP_ERROR: u8 = 0x7f;
pub const OP_READ_RESP: u8 = 0x90;
pub const OP_COMMIT_ACK: u8 = 0xa0;

pub const HELLO_LEN: usize = 4 + 2 + 2 + 16 + 32 + 32;
pub const CHALLENGE_LEN: usize = 2 + 2 + 32;
pub const AUTH_LEN: usize = 64;
pub const WELCOME_LEN: usize = 16;
pub const READ_LEN: usize = 24;
pub const COMMIT_LEN: usize = 16;
pub const COMMIT_ACK_LEN: usize = 24;

/// ERROR codes.
pub mod code {
    /// Malformed frame (bad opcode, length, reserved bits, magic).
    pub const MALFORMED: u32 = 1;
    /// Version not supported.
    pub const VERSION: u32 = 2;
    /// Authentication failed (bad signature, no key of this grant for this peer).
    pub const AUTH: u32 = 3;
    /// A request before authentication completed.
    pub const UNAUTHENTICATED: u32 = 4;
    /// Responder shutting down or overloaded.
    pub const UNAVAILABLE: u32 = 5;
    /// Timed out (slow handshake or slow reader).
    pub const TIMEOUT: u32 = 6;
}

/// Why a byte sequence is not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unknown opcode {0:#04x}")]
    BadOpcode(u8),
    #[error("nonzero flags or reserved field in frame {0:#04x}")]
    Reserved(u8),
    #[error("frame {op:#04x} has body length {len}, which is not allowed")]
    BadLength { op: u8, len: u32 },
    #[error("body length {len} exceeds the bound {max}")]
    TooLarge { len: u32, max: usize },
    #[error("bad HELLO magic")]
    BadMagic,
    #[error("protocol version {0} not supported (this side speaks {VERSION})")]
    BadVersion(u16),
    #[error("scatter-gather READ with {0} segments")]
    BadSegments(u32),
    #[error("unknown completion status {0}")]
    BadStatus(u8),
    #[error("READ_RESP data length does not match its status")]
    BadDataLength,
}

/// A decoded frame, borrowing from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    Hello {
        version: u16,
        grant: [u8; 16],
        peer: [u8; 32],
        nonce: [u8; 32],
    },
    Challenge {
        version: u16,
        nonce: [u8; 32],
    },
    Auth {
        signature: [u8; 64],
    },
    Welcome {
        max_outstanding: u32,
        max_read: u32,
        max_sge: u32,
    },
    Read(ReadReq),
    ReadSg {
        wr_id: u64,
        /// Raw segments, 16 bytes each; iterate with [`segments`].
        segs: &'a [u8],
    },
    Commit {
        grant: [u8; 16],
    },
    Error {
        code: u32,
        message: &'a [u8],
    },
    ReadResp {
        head: ReadRespHead,
        data: &'a [u8],
    },
    CommitAck {
        grant: [u8; 16],
        status: u32,
    },
}

/// One READ request (also one segment of a scatter-gather READ, with `wr_id` shared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadReq {
    pub wr_id: u64,
    pub addr: u64,
    pub len: u32,
    pub rkey: u32,
}

/// The fixed part of a READ_RESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRespHead {
    pub wr_id: u64,
    pub status: WcStatus,
    /// Data bytes following (0 unless `status` is `Success`).
    pub len: u32,
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub op: u8,
    pub len: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

/// Parse and validate a header: known opcode, zero flags/reserved, a body length the
/// opcode allows and at most `max_body`.
pub fn parse_header(h: &[u8; HDR], max_body: usize) -> Result<Header, WireError> {
    let op = h[0];
    if h[1] != 0 || h[2] != 0 || h[3] != 0 {
        return Err(WireError::Reserved(op));
    }
    let len = u32_at(h, 4);
    let fixed = match op {
        OP_HELLO => Some(HELLO_LEN),
        OP_CHALLENGE => Some(CHALLENGE_LEN),
        OP_AUTH => Some(AUTH_LEN),
        OP_WELCOME => Some(WELCOME_LEN),
        OP_READ => Some(READ_LEN),
        OP_COMMIT => Some(COMMIT_LEN),
        OP_COMMIT_ACK => Some(COMMIT_ACK_LEN),
        OP_READ_SG | OP_ERROR | OP_READ_RESP => None,
        _ => return Err(WireError::BadOpcode(op)),
    };
    if len as usize > max_body {
        return Err(WireError::TooLarge { len, max: max_body });
    }
    let ok = match (op, fixed) {
        (_, Some(f)) => len as usize == f,
        (OP_READ_SG, _) => {
            len >= 32 && (len - 16).is_multiple_of(16) && (len - 16) / 16 <= MAX_SGE as u32
        }
        (OP_ERROR, _) => len >= 4 && len as usize <= 4 + MAX_ERROR_MSG,
        _ => len as usize >= READ_RESP_FIXED,
    };
    if !ok {
        return Err(WireError::BadLength { op, len });
    }
    Ok(Header { op, len })
}

/// Parse the fixed part of a READ_RESP body (`b.len() >= READ_RESP_FIXED`) and check it
/// against the body length from the header.
pub fn parse_read_resp_head(b: &[u8], body_len: u32) -> Result<ReadRespHead, WireError> {
    let wr_id = u64_at(b, 0);
    let st = b[8];
    let status = WcStatus::from_code(st).ok_or(WireError::BadStatus(st))?;
    if b[9..12] != [0, 0, 0] {
        return Err(WireError::Reserved(OP_READ_RESP));
    }
    let len = u32_at(b, 12);
    if body_len as usize != READ_RESP_FIXED + len as usize
        || (status != WcStatus::Success && len != 0)
    {
        return Err(WireError::BadDataLength);
    }
    Ok(ReadRespHead { wr_id, status, len })
}

/// Decode one frame from the front of `buf`. `Ok(None)`: more bytes needed.
/// On success returns the frame and the bytes it used.
pub fn decode(buf: &[u8], max_body: usize) -> Result<Option<(Frame<'_>, usize)>, WireError> {
    let Some(h) = buf.first_chunk::<HDR>() else {
        return Ok(None);
    };
    let h = parse_header(h, max_body)?;
    let total = HDR + h.len as usize;
    let Some(b) = buf.get(HDR..total) else {
        return Ok(None);
    };
    let f = match h.op {
        OP_HELLO => {
            if b[0..4] != MAGIC {
                return Err(WireError::BadMagic);
            }
            if u16_at(b, 6) != 0 {
                return Err(WireError::Reserved(h.op));
            }
            Frame::Hello {
                version: u16_at(b, 4),
                grant: arr(b, 8),
                peer: arr(b, 24),
                nonce: arr(b, 56),
            }
        }
        OP_CHALLENGE => {
            if u16_at(b, 2) != 0 {
                return Err(WireError::Reserved(h.op));
            }
            Frame::Challenge {
                version: u16_at(b, 0),
                nonce: arr(b, 4),
            }
        }
        OP_AUTH => Frame::Auth {
            signature: arr(b, 0),
        },
        OP_WELCOME => Frame::Welcome {
            max_outstanding: u32_at(b, 0),
            max_read: u32_at(b, 4),
            max_sge: u32_at(b, 8),
        },
        OP_READ => Frame::Read(ReadReq {
            wr_id: u64_at(b, 0),
            addr: u64_at(b, 8),
            len: u32_at(b, 16),
            rkey: u32_at(b, 20),
        }),
        OP_READ_SG => {
            let n = u32_at(b, 8);
            if n as usize != (b.len() - 16) / 16 {
                return Err(WireError::BadSegments(n));
            }
            if u32_at(b, 12) != 0 {
                return Err(WireError::Reserved(h.op));
            }
            Frame::ReadSg {
                wr_id: u64_at(b, 0),
                segs: &b[16..],
            }
        }
        OP_COMMIT => Frame::Commit { grant: arr(b, 0) },
        OP_ERROR => Frame::Error {
            code: u32_at(b, 0),
            message: &b[4..],
        },
        OP_READ_RESP => {
            let head = parse_read_resp_head(b, h.len)?;
            Frame::ReadResp {
                head,
                data: &b[READ_RESP_FIXED..],
            }
        }
        OP_COMMIT_ACK => Frame::CommitAck {
            grant: arr(b, 0),
            status: u32_at(b, 16),
        },
        op => return Err(WireError::BadOpcode(op)),
    };
    Ok(Some((f, total)))
}

/// Iterate the segments of a READ_SG body.
pub fn segments(wr_id: u64, segs: &[u8]) -> impl Iterator<Item = ReadReq> + '_ {
    segs.chunks_exact(16).map(move |s| ReadReq {
        wr_id,
        addr: u64_at(s, 0),
        len: u32_at(s, 8),
        rkey: u32_at(s, 12),
    })
}

fn header(out: &mut Vec<u8>, op: u8, len: usize) {
    out.push(op);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(len as u32).to_le_bytes());
}

/// Append a HELLO.
pub fn put_hello(out: &mut Vec<u8>, grant: &[u8; 16], peer: &[u8; 32], nonce: &[u8; 32]) {
    header(out, OP_HELLO, HELLO_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(grant);
    out.extend_from_slice(peer);
    out.extend_from_slice(nonce);
}

/// Append a CHALLENGE.
pub fn put_challenge(out: &mut Vec<u8>, nonce: &[u8; 32]) {
    header(out, OP_CHALLENGE, CHALLENGE_LEN);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(nonce);
}

/// Append an AUTH.
pub fn put_auth(out: &mut Vec<u8>, sig: &[u8]) {
    header(out, OP_AUTH, AUTH_LEN);
    out.extend_from_slice(sig);
}

/// Append a WELCOME.
pub fn put_welcome(out: &mut Vec<u8>, max_outstanding: u32) {
    header(out, OP_WELCOME, WELCOME_LEN);
    out.extend_from_slice(&max_outstanding.to_le_bytes());
    out.extend_from_slice(&MAX_READ_LEN.to_le_bytes());
    out.extend_from_slice(&(MAX_SGE as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
}

/// Append a READ.
pub fn put_read(out: &mut Vec<u8>, r: &ReadReq) {
    header(out, OP_READ, READ_LEN);
    out.extend_from_slice(&r.wr_id.to_le_bytes());
    out.extend_from_slice(&r.addr.to_le_bytes());
    out.extend_from_slice(&r.len.to_le_bytes());
    out.extend_from_slice(&r.rkey.to_le_bytes());
}

/// Append a READ_SG with `segs` as `(addr, len, rkey)`.
pub fn put_read_sg(out: &mut Vec<u8>, wr_id: u64, segs: &[(u64, u32, u32)]) {
    header(out, OP_READ_SG, 16 + 16 * segs.len());
    out.extend_from_slice(&wr_id.to_le_bytes());
    out.extend_from_slice(&(segs.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    for &(a, l, k) in segs {
        out.extend_from_slice(&a.to_le_bytes());
        out.extend_from_slice(&l.to_le_bytes());
        out.extend_from_slice(&k.to_le_bytes());
    }
}

/// Append a COMMIT.
pub fn put_commit(out: &mut Vec<u8>, grant: &[u8; 16]) {
    header(out, OP_COMMIT, COMMIT_LEN);
    out.extend_from_slice(grant);
}

/// Append a COMMIT_ACK (`status` 0 = accepted).
pub fn put_commit_ack(out: &mut Vec<u8>, grant: &[u8; 16], status: u32) {
    header(out, OP_COMMIT_ACK, COMMIT_ACK_LEN);
    out.extend_from_slice(grant);
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
}

/// Append an ERROR (message truncated to [`MAX_ERROR_MSG`]).
pub fn put_error(out: &mut Vec<u8>, code: u32, msg: &str) {
    let m = &msg.as_bytes()[..msg.len().min(MAX_ERROR_MSG)];
    header(out, OP_ERROR, 4 + m.len());
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(m);
}

/// Write a READ_RESP header and fixed part (24 bytes) into `out[..24]`.
pub fn write_read_resp_head(out: &mut [u8], wr_id: u64, status: WcStatus, len: u32) {
    out[0] = OP_READ_RESP;
    out[1..4].fill(0);
    out[4..8].copy_from_slice(&(READ_RESP_FIXED as u32 + len).to_le_bytes());
    out[8..16].copy_from_slice(&wr_id.to_le_bytes());
    out[16] = status.code();
    out[17..20].fill(0);
    out[20..24].copy_from_slice(&len.to_le_bytes());
}

/// Length of a READ_RESP header plus fixed part.
pub const READ_RESP_HEAD: usize = HDR + READ_RESP_FIXED;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut b = Vec::new();
        put_hello(&mut b, &[1; 16], &[2; 32], &[3; 32]);
        put_read(
            &mut b,
            &ReadReq {
                wr_id: 9,
                addr: 1 << 63,
                len: 4096,
                rkey: 77,
            },
        );
        put_read_sg(&mut b, 5, &[(1, 2, 3), (4, 5, 6)]);
        put_commit(&mut b, &[4; 16]);
        put_error(&mut b, code::AUTH, "no");
        let mut at = 0;
        let mut frames = Vec::new();
        while let Some((f, n)) = decode(&b[at..], MAX_REQUEST_BODY).unwrap() {
            frames.push(f);
            at += n;
        }
        assert_eq!(at, b.len());
        assert_eq!(frames.len(), 5);
        assert_eq!(
            frames[1],
            Frame::Read(ReadReq {
                wr_id: 9,
                addr: 1 << 63,
                len: 4096,
                rkey: 77
            })
        );
        let Frame::ReadSg { wr_id, segs } = frames[2] else {
            panic!()
        };
        let s: Vec<_> = segments(wr_id, segs).collect();
        assert_eq!(
            s[1],
            ReadReq {
                wr_id: 5,
                addr: 4,
                len: 5,
                rkey: 6
            }
        );
    }

    #[test]
    fn refuses_oversized_before_buffering() {
        let mut h = [0u8; HDR];
        h[0] = OP_READ_RESP;
        h[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&h, MAX_REPLY_BODY),
            Err(WireError::TooLarge { .. })
        ));
        h[0] = 0x55;
        assert_eq!(decode(&h, MAX_REPLY_BODY), Err(WireError::BadOpcode(0x55)));
    }

    #[test]
    fn read_resp_status_and_length_must_agree() {
        let mut b = vec![0u8; READ_RESP_HEAD + 4];
        write_read_resp_head(&mut b, 1, WcStatus::RemoteAccessError, 4);
        assert_eq!(decode(&b, MAX_REPLY_BODY), Err(WireError::BadDataLength));
        write_read_resp_head(&mut b, 1, WcStatus::Success, 4);
        assert!(decode(&b, MAX_REPLY_BODY).unwrap().is_some());
        assert_eq!(decode(&b[..b.len() - 1], MAX_REPLY_BODY), Ok(None));
    }
}
