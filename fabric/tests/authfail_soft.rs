//! Failed authentications on the soft responder are reported as `AuthFailed` events with
//! the reason the responder knows, and a flood of them is rate-limited with the count of
//! the unreported ones carried on the next event. The attacker speaks the documented
//! set-up (docs/fabric-soft.md) on a raw socket.

mod common;
use common::read_frame;
use common::OneKey;
use memgate_fabric::soft::wire::{self, Frame};
use memgate_fabric::{
    event_channel, public_key_from_seed, Endpoint, FabricEvent, SoftLimits, SoftResponder,
    VecSource,
};
use ring::signature::Ed25519KeyPair;
use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

const BASE: u64 = 0x7000_0000;
const GRANT: [u8; 16] = [0x17; 16];
const SEED: [u8; 32] = [0x42; 32];

fn setup(limits: SoftLimits) -> (OneKey, Receiver<FabricEvent>) {
    let (sink, rx) = event_channel();
    let listen = Endpoint::parse("tcp:127.0.0.1:0").unwrap();
    let resp = SoftResponder::bind_with(&listen, sink, limits).unwrap();
    let src = Arc::new(VecSource::new(BASE, vec![7u8; 4096]));
    (OneKey::serve(resp, src, (BASE, 4096), SEED, GRANT), rx)
}

/// How the attacker signs the transcript.
enum Sig {
    /// Correctly, with the secret of `seed`.
    With([u8; 32]),
    /// A valid signature of the transcript with one bit flipped.
    Flipped([u8; 32]),
}

/// Run the set-up claiming `grant` and the public key of `claimed_seed`; returns the
/// local address used and the responder's answer opcode.
fn attempt(ep: &Endpoint, grant: [u8; 16], claimed_seed: [u8; 32], sig: Sig) -> (String, u8) {
    let Endpoint::Tcp(a) = ep else { unreachable!() };
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let local = s.local_addr().unwrap().to_string();
    let peer = public_key_from_seed(&claimed_seed).unwrap();
    let cn = [0x33u8; 32];
    let mut b = Vec::new();
    wire::put_hello(&mut b, &grant, &peer, &cn);
    s.write_all(&b).unwrap();
    let f = read_frame(&mut s);
    let Some((Frame::Challenge { nonce: sn, version }, _)) = wire::decode(&f, 4096).unwrap() else {
        panic!("no CHALLENGE")
    };
    let mut t = Vec::new();
    t.extend_from_slice(b"memgate-fabric-soft auth v1\0");
    t.extend_from_slice(&version.to_le_bytes());
    t.extend_from_slice(&grant);
    t.extend_from_slice(&peer);
    t.extend_from_slice(&cn);
    t.extend_from_slice(&sn);
    let (seed, flip) = match sig {
        Sig::With(s) => (s, false),
        Sig::Flipped(s) => (s, true),
    };
    let kp = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    let mut signature = kp.sign(&t).as_ref().to_vec();
    if flip {
        signature[5] ^= 0x01;
    }
    b.clear();
    wire::put_auth(&mut b, &signature);
    s.write_all(&b).unwrap();
    let f = read_frame(&mut s);
    (local, f[0])
}

fn next_auth_failure(rx: &Receiver<FabricEvent>) -> FabricEvent {
    loop {
        let ev = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("no AuthFailed event within 10 s");
        if matches!(ev, FabricEvent::AuthFailed { .. }) {
            return ev;
        }
    }
}

#[test]
fn forged_signature_is_reported_as_bad_signature() {
    let (key, rx) = setup(SoftLimits::default());
    let (local, op) = attempt(&key.ep, GRANT, SEED, Sig::Flipped(SEED));
    assert_eq!(op, wire::OP_ERROR);
    assert_eq!(
        next_auth_failure(&rx),
        FabricEvent::AuthFailed {
            peer_addr: local,
            grant: Some(GRANT),
            peer: Some(public_key_from_seed(&SEED).unwrap()),
            reason: FabricEvent::AUTH_BAD_SIGNATURE,
            suppressed: 0,
        }
    );
    // The real peer still gets in, and its success is no failure.
    let mut c = key.connect();
    c.post_read(1, BASE, 4096, key.rkey).unwrap();
    let mut out = Vec::new();
    while out.is_empty() {
        c.wait_completions(&mut out, Some(Duration::from_secs(10)))
            .unwrap();
    }
    assert_eq!(&out[0].data[..], &[7u8; 4096][..]);
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(10)),
        Ok(FabricEvent::Connected { .. })
    ));
}

#[test]
fn signature_by_the_wrong_key_claiming_the_right_one_is_bad_signature() {
    let (key, rx) = setup(SoftLimits::default());
    let (_, op) = attempt(&key.ep, GRANT, SEED, Sig::With([0x99; 32]));
    assert_eq!(op, wire::OP_ERROR);
    let FabricEvent::AuthFailed { reason, .. } = next_auth_failure(&rx) else {
        unreachable!()
    };
    assert_eq!(reason, FabricEvent::AUTH_BAD_SIGNATURE);
}

#[test]
fn wrong_peer_key_and_unknown_grant_are_told_apart() {
    let (key, rx) = setup(SoftLimits::default());
    let other = [0x99; 32];
    let (_, op) = attempt(&key.ep, GRANT, other, Sig::With(other));
    assert_eq!(op, wire::OP_ERROR);
    let ev = next_auth_failure(&rx);
    let FabricEvent::AuthFailed {
        reason,
        grant,
        peer,
        ..
    } = ev
    else {
        unreachable!()
    };
    assert_eq!(reason, FabricEvent::AUTH_PEER_KEY_MISMATCH);
    assert_eq!(grant, Some(GRANT));
    assert_eq!(peer, Some(public_key_from_seed(&other).unwrap()));

    let (_, op) = attempt(&key.ep, [0x55; 16], SEED, Sig::With(SEED));
    assert_eq!(op, wire::OP_ERROR);
    let FabricEvent::AuthFailed { reason, .. } = next_auth_failure(&rx) else {
        unreachable!()
    };
    assert_eq!(reason, FabricEvent::AUTH_UNKNOWN_GRANT);
}

#[test]
fn stalled_handshake_is_reported_as_timeout_without_claims() {
    let limits = SoftLimits {
        handshake_timeout: Duration::from_millis(300),
        ..SoftLimits::default()
    };
    let (key, rx) = setup(limits);
    let Endpoint::Tcp(a) = key.ep else {
        unreachable!()
    };
    let s = TcpStream::connect(a).unwrap();
    let FabricEvent::AuthFailed {
        reason,
        grant,
        peer,
        peer_addr,
        ..
    } = next_auth_failure(&rx)
    else {
        unreachable!()
    };
    assert_eq!(reason, FabricEvent::AUTH_HANDSHAKE_TIMEOUT);
    assert_eq!((grant, peer), (None, None));
    assert_eq!(peer_addr, s.local_addr().unwrap().to_string());
}

#[test]
fn a_flood_of_failures_is_rate_limited_and_the_rest_counted() {
    let limits = SoftLimits {
        auth_failures_per_sec: 3,
        ..SoftLimits::default()
    };
    let (key, rx) = setup(limits);
    let start = std::time::Instant::now();
    let n = 40;
    for _ in 0..n {
        let (_, op) = attempt(&key.ep, GRANT, SEED, Sig::Flipped(SEED));
        assert_eq!(op, wire::OP_ERROR);
    }
    let flood_took = start.elapsed();
    // Each refused connection's event is emitted before its ERROR is written, so every
    // event of the flood is already in the channel.
    let reported: Vec<FabricEvent> = rx.try_iter().collect();
    // One-second windows the flood may touch (it need not start at a window's start).
    let windows = flood_took.as_secs() + 2;
    assert!(
        (reported.len() as u64) <= 3 * windows,
        "{} events in {flood_took:?}",
        reported.len()
    );
    assert!(reported.len() < n, "nothing was suppressed");
    let shown_suppressed: u64 = reported
        .iter()
        .map(|e| match e {
            FabricEvent::AuthFailed { suppressed, .. } => *suppressed,
            _ => 0,
        })
        .sum();
    // After the window, the next failure is reported with the count of the rest.
    std::thread::sleep(Duration::from_millis(1100));
    attempt(&key.ep, GRANT, SEED, Sig::Flipped(SEED));
    let FabricEvent::AuthFailed { suppressed, .. } = next_auth_failure(&rx) else {
        unreachable!()
    };
    assert_eq!(
        reported.len() as u64 + shown_suppressed + suppressed,
        n as u64,
        "every failure of the flood is either reported or counted"
    );
}
