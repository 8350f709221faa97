//! Property tests of the soft wire codec: arbitrary bytes never panic the decoder and
//! never yield a frame reaching past the input; every encoded frame decodes back to what
//! was encoded; every strict prefix asks for more bytes; oversized bodies are refused
//! from the header alone.

use memgate_fabric::soft::wire::{self, Frame, ReadReq, WireError};
use memgate_fabric::{WcStatus, MAX_SGE};
use proptest::prelude::*;

fn read_req() -> impl Strategy<Value = ReadReq> {
    (any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>()).prop_map(|(wr_id, addr, len, rkey)| {
        ReadReq {
            wr_id,
            addr,
            len,
            rkey,
        }
    })
}

#[derive(Debug, Clone)]
enum Msg {
    Hello([u8; 16], [u8; 32], [u8; 32]),
    Read(ReadReq),
    ReadSg(u64, Vec<(u64, u32, u32)>),
    Commit([u8; 16]),
    CommitAck([u8; 16], u32),
    Error(u32, String),
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        (any::<[u8; 16]>(), any::<[u8; 32]>(), any::<[u8; 32]>())
            .prop_map(|(g, p, n)| Msg::Hello(g, p, n)),
        read_req().prop_map(Msg::Read),
        (
            any::<u64>(),
            prop::collection::vec(any::<(u64, u32, u32)>(), 1..=MAX_SGE)
        )
            .prop_map(|(w, s)| Msg::ReadSg(w, s)),
        any::<[u8; 16]>().prop_map(Msg::Commit),
        (any::<[u8; 16]>(), any::<u32>()).prop_map(|(g, s)| Msg::CommitAck(g, s)),
        (any::<u32>(), "[a-z ]{0,300}").prop_map(|(c, m)| Msg::Error(c, m)),
    ]
}

fn encode(m: &Msg, out: &mut Vec<u8>) {
    match m {
        Msg::Hello(g, p, n) => wire::put_hello(out, g, p, n),
        Msg::Read(r) => wire::put_read(out, r),
        Msg::ReadSg(w, s) => wire::put_read_sg(out, *w, s),
        Msg::Commit(g) => wire::put_commit(out, g),
        Msg::CommitAck(g, s) => wire::put_commit_ack(out, g, *s),
        Msg::Error(c, s) => wire::put_error(out, *c, s),
    }
}

fn matches(m: &Msg, f: &Frame<'_>) -> bool {
    match (m, f) {
        (
            Msg::Hello(g, p, n),
            Frame::Hello {
                version,
                grant,
                peer,
                nonce,
            },
        ) => *version == wire::VERSION && grant == g && peer == p && nonce == n,
        (Msg::Read(r), Frame::Read(d)) => r == d,
        (Msg::ReadSg(w, s), Frame::ReadSg { wr_id, segs }) => {
            let got: Vec<_> = wire::segments(*wr_id, segs)
                .map(|r| (r.addr, r.len, r.rkey))
                .collect();
            wr_id == w && got == *s
        }
        (Msg::Commit(g), Frame::Commit { grant }) => grant == g,
        (Msg::CommitAck(g, s), Frame::CommitAck { grant, status }) => grant == g && status == s,
        (Msg::Error(c, s), Frame::Error { code, message }) => {
            let want = &s.as_bytes()[..s.len().min(wire::MAX_ERROR_MSG)];
            code == c && *message == want
        }
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
        for max in [wire::MAX_REQUEST_BODY, wire::MAX_REPLY_BODY] {
            let mut at = 0;
            while let Ok(Some((_, n))) = wire::decode(&data[at..], max) {
                prop_assert!(n >= wire::HDR && at + n <= data.len());
                at += n;
            }
        }
    }

    #[test]
    fn mutated_frames_never_panic(m in msg(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut b = Vec::new();
        encode(&m, &mut b);
        for (i, x) in flips {
            let i = i % b.len();
            b[i] ^= x;
        }
        if let Ok(Some((_, n))) = wire::decode(&b, wire::MAX_REPLY_BODY) {
            prop_assert!(n <= b.len());
        }
    }

    #[test]
    fn encoded_frames_round_trip(ms in prop::collection::vec(msg(), 1..8)) {
        let mut b = Vec::new();
        for m in &ms {
            encode(m, &mut b);
        }
        let mut at = 0;
        for m in &ms {
            let (f, n) = wire::decode(&b[at..], wire::MAX_REPLY_BODY).unwrap().unwrap();
            prop_assert!(matches(m, &f), "{m:?} decoded as {f:?}");
            // Every strict prefix of the frame asks for more bytes.
            for cut in [0, 1, wire::HDR - 1, wire::HDR, n - 1] {
                prop_assert_eq!(wire::decode(&b[at..at + cut], wire::MAX_REPLY_BODY), Ok(None));
            }
            at += n;
        }
        prop_assert_eq!(at, b.len());
    }

    #[test]
    fn oversized_bodies_refused_from_the_header(op in any::<u8>(), len in (wire::MAX_REQUEST_BODY as u32 + 1)..) {
        let mut h = [0u8; wire::HDR];
        h[0] = op;
        h[4..].copy_from_slice(&len.to_le_bytes());
        prop_assert!(wire::decode(&h, wire::MAX_REQUEST_BODY).is_err());
    }

    #[test]
    fn read_resp_head_agrees_with_body(wr in any::<u64>(), code in 0u8..4, len in 0u32..100) {
        let status = [WcStatus::Success, WcStatus::RemoteAccessError,
                      WcStatus::RemoteOperationError, WcStatus::Flushed][code as usize];
        let mut b = vec![0u8; wire::READ_RESP_HEAD + len as usize];
        wire::write_read_resp_head(&mut b, wr, status, len);
        let r = wire::decode(&b, wire::MAX_REPLY_BODY);
        if status == WcStatus::Success || len == 0 {
            let (f, n) = r.unwrap().unwrap();
            prop_assert_eq!(n, b.len());
            let ok = matches!(f, Frame::ReadResp { head, data }
                if head.wr_id == wr && head.status == status && data.len() == len as usize);
            prop_assert!(ok);
        } else {
            prop_assert_eq!(r, Err(WireError::BadDataLength));
        }
    }
}
