//! A malicious or broken peer against the soft responder: each attack gets an error and a
//! closed connection, and a well-behaved connection of the same responder keeps working
//! throughout. The attacker speaks the wire protocol directly, with its own
//! implementation of the documented set-up (docs/fabric-soft.md).

mod common;
use common::read_frame;
use common::OneKey;
use memgate_fabric::soft::wire::{self, Frame};
use memgate_fabric::{
    event_channel, public_key_from_seed, Connection, Endpoint, Responder, SoftLimits,
    SoftResponder, VecSource, WcStatus,
};
use ring::signature::Ed25519KeyPair;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BASE: u64 = 0x7000_0000;
const LEN: usize = 8 << 20;

struct Setup {
    key: OneKey,
    data: Vec<u8>,
}

fn setup(limits: SoftLimits) -> Setup {
    let (sink, _rx) = event_channel();
    let listen = Endpoint::parse("tcp:127.0.0.1:0").unwrap();
    let resp = SoftResponder::bind_with(&listen, sink, limits).unwrap();
    let data: Vec<u8> = (0..LEN).map(|i| (i * 31 + i / 4096) as u8).collect();
    let src = Arc::new(VecSource::new(BASE, data.clone()));
    let key = OneKey::serve(resp, src, (BASE, LEN as u64), [0x42; 32], [0x17; 16]);
    Setup { key, data }
}

impl Setup {
    fn good(&self) -> Connection {
        self.key.connect()
    }

    /// A well-behaved connection still gets byte-exact data.
    fn check_good(&self, c: &mut Connection) {
        c.post_read(9, BASE + 4096, 4096, self.key.rkey).unwrap();
        let mut out = Vec::new();
        while out.is_empty() {
            c.wait_completions(&mut out, Some(Duration::from_secs(10)))
                .unwrap();
        }
        assert_eq!(out[0].status, WcStatus::Success);
        assert_eq!(&out[0].data[..], &self.data[4096..8192]);
    }

    fn tcp(&self) -> TcpStream {
        let Endpoint::Tcp(a) = self.key.ep else {
            unreachable!()
        };
        let s = TcpStream::connect(a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Authenticate on a raw socket, following the documented transcript.
    fn raw(&self) -> TcpStream {
        let mut s = self.tcp();
        let kp = Ed25519KeyPair::from_seed_unchecked(&self.key.seed).unwrap();
        let peer = public_key_from_seed(&self.key.seed).unwrap();
        let cn = [0x33u8; 32];
        let mut b = Vec::new();
        wire::put_hello(&mut b, &self.key.grant, &peer, &cn);
        s.write_all(&b).unwrap();
        let f = read_frame(&mut s);
        let Some((Frame::Challenge { nonce: sn, version }, _)) = wire::decode(&f, 4096).unwrap()
        else {
            panic!("no CHALLENGE")
        };
        let mut t = Vec::new();
        t.extend_from_slice(b"memgate-fabric-soft auth v1\0");
        t.extend_from_slice(&version.to_le_bytes());
        t.extend_from_slice(&self.key.grant);
        t.extend_from_slice(&peer);
        t.extend_from_slice(&cn);
        t.extend_from_slice(&sn);
        b.clear();
        wire::put_auth(&mut b, kp.sign(&t).as_ref());
        s.write_all(&b).unwrap();
        let f = read_frame(&mut s);
        assert_eq!(f[0], wire::OP_WELCOME, "raw authentication failed");
        s
    }
}

/// Everything until the responder closes: (opcode, error code or completion status).
fn until_closed(s: &mut TcpStream) -> Vec<(u8, u32)> {
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let (mut at, mut v) = (0, Vec::new());
    while let Some((f, n)) = wire::decode(&all[at..], wire::MAX_REPLY_BODY).unwrap() {
        v.push(match f {
            Frame::Error { code, .. } => (wire::OP_ERROR, code),
            Frame::ReadResp { head, .. } => (wire::OP_READ_RESP, head.status as u32),
            _ => (all[at], 0),
        });
        at += n;
    }
    assert_eq!(at, all.len(), "the stream ended inside a frame");
    v
}

fn header(op: u8, len: u32) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[0] = op;
    h[4..].copy_from_slice(&len.to_le_bytes());
    h
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn huge_length_is_refused_from_the_header() {
    let st = setup(SoftLimits::default());
    let mut good = st.good();
    let mut s = st.raw();
    s.write_all(&header(wire::OP_READ_SG, 0xffff_fff0)).unwrap();
    let got = until_closed(&mut s);
    assert_eq!(got, vec![(wire::OP_ERROR, wire::code::MALFORMED)]);
    st.check_good(&mut good);
}

#[test]
fn bad_opcode_is_refused() {
    let st = setup(SoftLimits::default());
    let mut good = st.good();
    for op in [0x00, 0x55, wire::OP_READ_RESP, wire::OP_HELLO] {
        let mut s = st.raw();
        let mut f = header(op, 0).to_vec();
        if op == wire::OP_HELLO {
            // A well-formed HELLO after authentication is still out of place.
            f.clear();
            wire::put_hello(&mut f, &[0; 16], &[0; 32], &[0; 32]);
        }
        s.write_all(&f).unwrap();
        let got = until_closed(&mut s);
        assert_eq!(
            got,
            vec![(wire::OP_ERROR, wire::code::MALFORMED)],
            "opcode {op:#x}"
        );
    }
    st.check_good(&mut good);
}

#[test]
fn unknown_rkey_is_an_access_error_then_close() {
    let st = setup(SoftLimits::default());
    let mut good = st.good();
    let mut s = st.raw();
    let mut b = Vec::new();
    for (i, rkey) in [st.key.rkey, st.key.rkey ^ 1, st.key.rkey]
        .into_iter()
        .enumerate()
    {
        let r = wire::ReadReq {
            wr_id: i as u64,
            addr: BASE,
            len: 64,
            rkey,
        };
        wire::put_read(&mut b, &r);
    }
    s.write_all(&b).unwrap();
    let got = until_closed(&mut s);
    let status = |st: WcStatus| (wire::OP_READ_RESP, st as u32);
    assert_eq!(
        got,
        vec![
            status(WcStatus::Success),
            status(WcStatus::RemoteAccessError)
        ]
    );
    st.check_good(&mut good);
}

#[test]
fn flood_beyond_the_outstanding_bound_is_cut_off() {
    let limits = SoftLimits {
        max_outstanding: 32,
        ..SoftLimits::default()
    };
    let st = setup(limits);
    let mut good = st.good();
    let mut s = st.raw();
    let mut b = Vec::new();
    for i in 0..4000u64 {
        let r = wire::ReadReq {
            wr_id: i,
            addr: BASE + i,
            len: 16,
            rkey: st.key.rkey,
        };
        wire::put_read(&mut b, &r);
    }
    s.write_all(&b).unwrap();
    let got = until_closed(&mut s);
    let served = got.iter().filter(|f| f.0 == wire::OP_READ_RESP).count();
    assert!(served <= 32, "{served} READs served beyond the bound of 32");
    assert_eq!(got.last(), Some(&(wire::OP_ERROR, wire::code::MALFORMED)));
    st.check_good(&mut good);
    // A peer that respects the bound (the initiator clamps to it) is served.
    assert_eq!(good.max_outstanding(), 32);
}

#[test]
fn slow_reader_is_dropped_while_others_are_served() {
    let limits = SoftLimits {
        write_timeout: Duration::from_secs(2),
        ..SoftLimits::default()
    };
    let st = setup(limits);
    let mut good = st.good();
    let mut s = st.raw();
    let mut b = Vec::new();
    for i in 0..200u64 {
        let r = wire::ReadReq {
            wr_id: i,
            addr: BASE,
            len: 4 << 20,
            rkey: st.key.rkey,
        };
        wire::put_read(&mut b, &r);
    }
    s.write_all(&b).unwrap();
    // The attacker never reads; its replies fill the socket buffers and the responder's
    // write for it stalls. Another connection is served meanwhile.
    wait_for("the attacker's replies to stall", || {
        std::thread::sleep(Duration::from_millis(200));
        true
    });
    st.check_good(&mut good);
    assert_eq!(
        st.key.resp.connection_count(),
        2,
        "served only after the stalled peer was dropped"
    );
    wait_for("the slow reader's connection to close", || {
        st.key.resp.connection_count() == 1
    });
    st.check_good(&mut good);
    // What it finally reads ends early: far less than 800 MiB of replies.
    let mut n = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    while let Ok(k) = s.read(&mut buf) {
        if k == 0 {
            break;
        }
        n += k;
    }
    assert!(n < 100 << 20, "the slow reader got {n} bytes");
}

#[test]
fn stalled_or_dripping_handshake_times_out() {
    let limits = SoftLimits {
        handshake_timeout: Duration::from_millis(300),
        ..SoftLimits::default()
    };
    let st = setup(limits);
    let mut good = st.good();
    let mut hello = Vec::new();
    wire::put_hello(&mut hello, &st.key.grant, &[0; 32], &[0; 32]);
    let mut s = st.tcp();
    let t = Instant::now();
    for byte in hello.iter().take(40) {
        if s.write_all(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = until_closed(&mut s);
    assert_eq!(got, vec![(wire::OP_ERROR, wire::code::TIMEOUT)]);
    assert!(t.elapsed() < Duration::from_secs(3));
    st.check_good(&mut good);
}

#[test]
fn connections_beyond_the_limit_are_refused() {
    let limits = SoftLimits {
        max_connections: 2,
        ..SoftLimits::default()
    };
    let st = setup(limits);
    let mut good = st.good();
    let _idle = st.tcp();
    wait_for("two connections", || st.key.resp.connection_count() == 2);
    let mut third = st.tcp();
    assert_eq!(
        until_closed(&mut third),
        vec![(wire::OP_ERROR, wire::code::UNAVAILABLE)]
    );
    st.check_good(&mut good);
}

#[test]
fn shutdown_flushes_outstanding_reads() {
    let st = setup(SoftLimits::default());
    let mut good = st.good();
    st.check_good(&mut good);
    st.key.resp.shutdown();
    good.post_read(1, BASE, 16, st.key.rkey).unwrap();
    let mut out = Vec::new();
    while out.is_empty() {
        good.wait_completions(&mut out, Some(Duration::from_secs(10)))
            .unwrap();
    }
    assert_eq!(out[0].status, WcStatus::Flushed);
    assert!(Connection::connect(&st.key.ep, st.key.grant, st.key.seed).is_err());
}

#[test]
fn unauthenticated_connections_per_peer_are_bounded() {
    let limits = SoftLimits {
        max_handshakes_per_peer: 2,
        ..SoftLimits::default()
    };
    let st = setup(limits);
    // Authenticated connections do not count against the set-up bound.
    let mut good = st.good();
    let mut good2 = st.good();
    let idle = [st.tcp(), st.tcp()];
    wait_for("two idle connections", || {
        st.key.resp.connection_count() == 4
    });
    let mut third = st.tcp();
    assert_eq!(
        until_closed(&mut third),
        vec![(wire::OP_ERROR, wire::code::UNAVAILABLE)]
    );
    st.check_good(&mut good);
    st.check_good(&mut good2);
    // Once the idle ones give up, the peer may set up connections again.
    drop(idle);
    wait_for("the idle connections to go", || {
        st.key.resp.connection_count() == 2
    });
    let mut again = st.good();
    st.check_good(&mut again);
}
