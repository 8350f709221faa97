//! Attempts to use a key without completing the soft provider's authentication, spoken
//! directly on the wire: a READ before HELLO, a READ instead of AUTH, a forged
//! signature, and a replayed signature from another connection's challenge.

use super::util::{ctx, ensure, R};
use crate::soft::wire::{self, Frame};
use crate::Endpoint;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// What an unauthenticated attempt should look like from the key's point of view.
pub struct ProbeTarget<'a> {
    /// The responder's endpoint string.
    pub endpoint: &'a str,
    /// A grant with a live key bound to `seed`'s public key.
    pub grant: [u8; 16],
    /// The legitimate peer's seed (used only to produce a genuine signature to replay).
    pub seed: [u8; 32],
    /// A valid key of that grant, and a range it covers.
    pub rkey: u32,
    pub addr: u64,
    pub len: u32,
}

trait Rw: Read + Write {}
impl<T: Read + Write> Rw for T {}

fn open(ep: &Endpoint) -> R<Box<dyn Rw>> {
    let t = Some(Duration::from_secs(10));
    Ok(match ep {
        Endpoint::Tcp(a) => {
            let s = ctx(TcpStream::connect(a), "connect")?;
            ctx(s.set_read_timeout(t), "timeout")?;
            Box::new(s)
        }
        Endpoint::Unix(p) => {
            let s = ctx(UnixStream::connect(p), "connect")?;
            ctx(s.set_read_timeout(t), "timeout")?;
            Box::new(s)
        }
        Endpoint::Rdma(_) => return Err("not a soft endpoint".into()),
    })
}

/// Read frames until the peer closes; return their opcodes (and any ERROR code).
fn until_closed(s: &mut dyn Rw) -> R<Vec<(u8, u32)>> {
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let mut at = 0;
    let mut ops = Vec::new();
    while let Ok(Some((f, n))) = wire::decode(&all[at..], wire::MAX_REPLY_BODY) {
        let code = match f {
            Frame::Error { code, .. } => code,
            _ => 0,
        };
        ops.push((all[at], code));
        at += n;
    }
    ensure(at == all.len(), || {
        "trailing garbage from the responder".into()
    })?;
    Ok(ops)
}

fn read_one(s: &mut dyn Rw) -> R<Vec<u8>> {
    let mut h = [0u8; wire::HDR];
    ctx(s.read_exact(&mut h), "read frame header")?;
    let hd = ctx(wire::parse_header(&h, wire::MAX_REPLY_BODY), "frame header")?;
    let mut f = vec![0u8; wire::HDR + hd.len as usize];
    f[..wire::HDR].copy_from_slice(&h);
    ctx(s.read_exact(&mut f[wire::HDR..]), "read frame body")?;
    Ok(f)
}

fn challenge(s: &mut dyn Rw, grant: &[u8; 16], peer: &[u8; 32], cn: &[u8; 32]) -> R<[u8; 32]> {
    let mut b = Vec::new();
    wire::put_hello(&mut b, grant, peer, cn);
    ctx(s.write_all(&b), "send HELLO")?;
    let f = read_one(s)?;
    match ctx(wire::decode(&f, wire::MAX_REPLY_BODY), "decode")? {
        Some((Frame::Challenge { nonce, .. }, _)) => Ok(nonce),
        other => Err(format!("expected CHALLENGE, got {other:?}")),
    }
}

/// No READ_RESP may appear, and the responder must say why before closing.
fn refused(ops: &[(u8, u32)], want_code: u32, what: &str) -> R {
    ensure(
        !ops.iter()
            .any(|&(op, _)| op == wire::OP_READ_RESP || op == wire::OP_WELCOME),
        || format!("{what}: the responder served it ({ops:?})"),
    )?;
    ensure(
        ops.iter()
            .any(|&(op, c)| op == wire::OP_ERROR && c == want_code),
        || format!("{what}: expected ERROR code {want_code}, got {ops:?}"),
    )
}

/// Run every probe against a soft endpoint. `Ok` when every attempt was refused.
pub fn soft_unauthenticated(t: &ProbeTarget<'_>) -> R {
    let ep = ctx(Endpoint::parse(t.endpoint), "endpoint")?;
    let kp = ctx(crate::soft::auth_keypair(&t.seed), "seed")?;
    let peer = ctx(crate::public_key_from_seed(&t.seed), "seed")?;
    let mut read = Vec::new();
    wire::put_read(
        &mut read,
        &wire::ReadReq {
            wr_id: 1,
            addr: t.addr,
            len: t.len,
            rkey: t.rkey,
        },
    );

    // 1. READ as the first frame.
    let mut s = open(&ep)?;
    ctx(s.write_all(&read), "send READ")?;
    refused(
        &until_closed(&mut *s)?,
        wire::code::UNAUTHENTICATED,
        "READ before HELLO",
    )?;

    // 2. HELLO, then a READ instead of AUTH.
    let mut s = open(&ep)?;
    challenge(&mut *s, &t.grant, &peer, &[1; 32])?;
    ctx(s.write_all(&read), "send READ")?;
    refused(
        &until_closed(&mut *s)?,
        wire::code::UNAUTHENTICATED,
        "READ instead of AUTH",
    )?;

    // 3. A forged signature.
    let mut s = open(&ep)?;
    challenge(&mut *s, &t.grant, &peer, &[2; 32])?;
    let mut b = Vec::new();
    wire::put_auth(&mut b, &[0x11; 64]);
    b.extend_from_slice(&read);
    ctx(s.write_all(&b), "send AUTH")?;
    refused(
        &until_closed(&mut *s)?,
        wire::code::AUTH,
        "forged signature",
    )?;

    // 4. A genuine signature from connection A replayed on connection B (same client
    //    nonce, different server nonce) is refused; on A it is accepted.
    let cn = [3u8; 32];
    let mut sa = open(&ep)?;
    let na = challenge(&mut *sa, &t.grant, &peer, &cn)?;
    let sig = crate::soft::AUTH_PROOF.sign(&kp, &t.grant, &cn, &na);
    let mut sb = open(&ep)?;
    challenge(&mut *sb, &t.grant, &peer, &cn)?;
    let mut b = Vec::new();
    wire::put_auth(&mut b, sig.as_ref());
    ctx(sb.write_all(&b), "send replayed AUTH")?;
    ctx(sb.write_all(&read), "send READ")?;
    refused(
        &until_closed(&mut *sb)?,
        wire::code::AUTH,
        "replayed signature",
    )?;
    // Control: the same signature on its own connection works, so the refusal above was
    // the nonce binding and not a broken probe.
    ctx(sa.write_all(&b), "send AUTH")?;
    let f = read_one(&mut *sa)?;
    ensure(f[0] == wire::OP_WELCOME, || {
        format!("genuine AUTH answered with {:#04x}", f[0])
    })?;
    ctx(sa.write_all(&read), "send READ")?;
    let f = read_one(&mut *sa)?;
    match ctx(wire::decode(&f, wire::MAX_REPLY_BODY), "decode")? {
        Some((Frame::ReadResp { head, .. }, _)) if head.status == crate::WcStatus::Success => {
            Ok(())
        }
        other => Err(format!("authenticated READ answered {other:?}")),
    }
}
