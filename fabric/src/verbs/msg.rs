//! The verbs provider's small control protocol: the rdma_cm private data carried by the
//! connect request (client nonce) and the accept (server nonce), and the messages sent
//! with SEND/RECV on the connection's queue pair (AUTH, WELCOME, COMMIT, COMMIT_ACK,
//! ERROR). Fixed little-endian layouts; every decoder takes untrusted bytes and refuses
//! anything malformed.

/// Protocol version carried in the private data.
pub(crate) const VERSION: u16 = 1;
/// First bytes of every private-data blob.
const MAGIC: [u8; 4] = *b"MGVB";
/// Bytes of HELLO / CHALLENGE private data (fits the 56 bytes a connect request carries).
pub(crate) const PRIV_LEN: usize = 40;
/// Largest control message; every RECV buffer has this size.
pub(crate) const MSG_MAX: usize = 256;
/// Longest error text carried by an ERROR message.
pub(crate) const MAX_ERROR_TEXT: usize = 200;

const OP_AUTH: u8 = 1;
const OP_WELCOME: u8 = 2;
const OP_COMMIT: u8 = 3;
const OP_COMMIT_ACK: u8 = 4;
const OP_ERROR: u8 = 5;

/// Error codes of ERROR messages and connect rejections.
pub(crate) mod code {
    /// Malformed set-up or message.
    pub const MALFORMED: u32 = 1;
    /// Version not spoken here.
    pub const VERSION: u32 = 2;
    /// Bad signature, or no live key of the grant is bound to this peer.
    pub const AUTH: u32 = 3;
    /// The responder cannot take the connection now.
    pub const UNAVAILABLE: u32 = 4;
}

/// Private data: the client's HELLO (connect) or the server's CHALLENGE (accept).
pub(crate) fn put_nonce(version: u16, nonce: &[u8; 32]) -> [u8; PRIV_LEN] {
    let mut b = [0u8; PRIV_LEN];
    b[..4].copy_from_slice(&MAGIC);
    b[4..6].copy_from_slice(&version.to_le_bytes());
    b[8..40].copy_from_slice(nonce);
    b
}

/// Parse HELLO / CHALLENGE private data: `(version, nonce)`. rdma_cm may pad private
/// data with zeros up to the transport's size, so trailing bytes are ignored.
pub(crate) fn parse_nonce(b: &[u8]) -> Option<(u16, [u8; 32])> {
    let b = b.get(..PRIV_LEN)?;
    if b[..4] != MAGIC || b[6..8] != [0, 0] {
        return None;
    }
    let version = u16::from_le_bytes([b[4], b[5]]);
    let mut n = [0u8; 32];
    n.copy_from_slice(&b[8..40]);
    Some((version, n))
}

/// Private data of a rejection: the error code.
pub(crate) fn put_reject(code: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&MAGIC);
    b[4..].copy_from_slice(&code.to_le_bytes());
    b
}

/// The code of a rejection's private data, if it is ours.
pub(crate) fn parse_reject(b: &[u8]) -> Option<u32> {
    let b = b.get(..8)?;
    (b[..4] == MAGIC).then(|| u32::from_le_bytes([b[4], b[5], b[6], b[7]]))
}

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Msg {
    /// Initiator → responder: the proof of the peer key.
    Auth {
        grant: [u8; 16],
        peer: [u8; 32],
        sig: [u8; 64],
    },
    /// Responder → initiator: authenticated; at most this many READs outstanding.
    Welcome { max_outstanding: u32 },
    /// Initiator → responder: every page of `grant` has landed.
    Commit { grant: [u8; 16] },
    /// Responder → initiator: commit seen (status 0) or refused.
    CommitAck { grant: [u8; 16], status: u32 },
    /// Responder → initiator: refusal, then disconnect.
    Error { code: u32, text: String },
}

impl Msg {
    /// Encode into `out` (at most [`MSG_MAX`] bytes); returns the length.
    pub(crate) fn encode(&self, out: &mut [u8; MSG_MAX]) -> usize {
        out.fill(0);
        match self {
            Msg::Auth { grant, peer, sig } => {
                out[0] = OP_AUTH;
                out[4..20].copy_from_slice(grant);
                out[20..52].copy_from_slice(peer);
                out[52..116].copy_from_slice(sig);
                116
            }
            Msg::Welcome { max_outstanding } => {
                out[0] = OP_WELCOME;
                out[4..8].copy_from_slice(&max_outstanding.to_le_bytes());
                8
            }
            Msg::Commit { grant } => {
                out[0] = OP_COMMIT;
                out[4..20].copy_from_slice(grant);
                20
            }
            Msg::CommitAck { grant, status } => {
                out[0] = OP_COMMIT_ACK;
                out[4..20].copy_from_slice(grant);
                out[20..24].copy_from_slice(&status.to_le_bytes());
                24
            }
            Msg::Error { code, text } => {
                out[0] = OP_ERROR;
                out[4..8].copy_from_slice(&code.to_le_bytes());
                // Cut at a character boundary so the text stays valid UTF-8.
                let mut n = text.len().min(MAX_ERROR_TEXT);
                while !text.is_char_boundary(n) {
                    n -= 1;
                }
                out[8..10].copy_from_slice(&(n as u16).to_le_bytes());
                out[10..10 + n].copy_from_slice(&text.as_bytes()[..n]);
                10 + n
            }
        }
    }

    /// Decode one received message (exactly the bytes the RECV completion reported).
    pub(crate) fn decode(b: &[u8]) -> Option<Msg> {
        if b.len() > MSG_MAX || b.len() < 4 || b[1..4] != [0, 0, 0] {
            return None;
        }
        let arr = |r: std::ops::Range<usize>| b.get(r);
        let exact = |n: usize| (b.len() == n).then_some(());
        Some(match b[0] {
            OP_AUTH => {
                exact(116)?;
                Msg::Auth {
                    grant: arr(4..20)?.try_into().ok()?,
                    peer: arr(20..52)?.try_into().ok()?,
                    sig: arr(52..116)?.try_into().ok()?,
                }
            }
            OP_WELCOME => {
                exact(8)?;
                Msg::Welcome {
                    max_outstanding: u32::from_le_bytes(arr(4..8)?.try_into().ok()?),
                }
            }
            OP_COMMIT => {
                exact(20)?;
                Msg::Commit {
                    grant: arr(4..20)?.try_into().ok()?,
                }
            }
            OP_COMMIT_ACK => {
                exact(24)?;
                Msg::CommitAck {
                    grant: arr(4..20)?.try_into().ok()?,
                    status: u32::from_le_bytes(arr(20..24)?.try_into().ok()?),
                }
            }
            OP_ERROR => {
                let code = u32::from_le_bytes(arr(4..8)?.try_into().ok()?);
                let n = u16::from_le_bytes(arr(8..10)?.try_into().ok()?) as usize;
                if n > MAX_ERROR_TEXT {
                    return None;
                }
                exact(10 + n)?;
                let text = std::str::from_utf8(arr(10..10 + n)?).ok()?.to_string();
                Msg::Error { code, text }
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(m: Msg) {
        let mut b = [0u8; MSG_MAX];
        let n = m.encode(&mut b);
        assert_eq!(Msg::decode(&b[..n]), Some(m));
        // Any truncation or extension is refused.
        assert_eq!(Msg::decode(&b[..n - 1]), None);
        assert_eq!(Msg::decode(&b[..n + 1]), None);
    }

    #[test]
    fn messages_roundtrip_exactly() {
        roundtrip(Msg::Auth {
            grant: [1; 16],
            peer: [2; 32],
            sig: [3; 64],
        });
        roundtrip(Msg::Welcome {
            max_outstanding: 64,
        });
        roundtrip(Msg::Commit { grant: [9; 16] });
        roundtrip(Msg::CommitAck {
            grant: [9; 16],
            status: 1,
        });
        roundtrip(Msg::Error {
            code: code::AUTH,
            text: "bad signature".into(),
        });
    }

    #[test]
    fn error_text_is_cut_on_a_char_boundary() {
        let mut b = [0u8; MSG_MAX];
        let n = Msg::Error {
            code: 1,
            text: "é".repeat(150),
        }
        .encode(&mut b);
        match Msg::decode(&b[..n]) {
            Some(Msg::Error { text, .. }) => {
                assert!(text.len() <= MAX_ERROR_TEXT);
                assert!(text.chars().all(|c| c == 'é'));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn private_data_roundtrips_and_tolerates_padding() {
        let mut padded = put_nonce(VERSION, &[7; 32]).to_vec();
        padded.extend_from_slice(&[0; 16]);
        assert_eq!(parse_nonce(&padded), Some((VERSION, [7; 32])));
        assert_eq!(parse_nonce(&padded[..PRIV_LEN - 1]), None);
        let mut bad = padded.clone();
        bad[0] = b'X';
        assert_eq!(parse_nonce(&bad), None);
        assert_eq!(parse_reject(&put_reject(code::AUTH)), Some(code::AUTH));
        assert_eq!(parse_reject(&[0; 8]), None);
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Some(m) = Msg::decode(&b) {
                // Whatever decodes re-encodes to the same bytes.
                let mut out = [0u8; MSG_MAX];
                let n = m.encode(&mut out);
                prop_assert_eq!(&out[..n], &b[..]);
            }
            let _ = parse_nonce(&b);
            let _ = parse_reject(&b);
        }
    }
}
