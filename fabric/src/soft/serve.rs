//! One responder connection: the authentication handshake, then the request loop that
//! checks each READ against the key table, preads target memory straight into the
//! outgoing batch and writes each batch with one write.

use super::auth;
use super::responder::{PendingGuard, Shared};
use super::stream::Stream;
use super::wire::{self, code, Frame, ReadReq, WireError};
use crate::{Access, FabricEvent, WcStatus, MAX_READ_LEN, MAX_SGE};
use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Replies are flushed once a batch reaches this size.
const TX_BATCH: usize = 256 << 10;
/// Receive buffer size.
const RX_BUF: usize = 64 << 10;
/// Bytes read and discarded after an error while waiting for the peer to close.
const DRAIN_LIMIT: usize = 1 << 20;

/// Send an ERROR and close (used before any thread is spawned, e.g. too many connections).
pub(crate) fn refuse(mut s: Stream, why: &str) {
    let mut b = Vec::new();
    wire::put_error(&mut b, code::UNAVAILABLE, why);
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = s.write_all(&b);
    s.shutdown();
}

#[derive(Debug)]
enum HandshakeError {
    /// The connection broke (or the peer closed it): nothing to answer or report.
    Io,
    /// Answer with an ERROR frame of this code and message; the reason, when the failure
    /// is the peer's, is reported as [`FabricEvent::AuthFailed`].
    Refused(u32, Option<&'static str>, String),
}

impl From<io::Error> for HandshakeError {
    fn from(_: io::Error) -> Self {
        HandshakeError::Io
    }
}

impl From<WireError> for HandshakeError {
    fn from(e: WireError) -> Self {
        let c = match e {
            WireError::BadVersion(_) => code::VERSION,
            _ => code::MALFORMED,
        };
        HandshakeError::Refused(c, Some(FabricEvent::AUTH_PROTOCOL), e.to_string())
    }
}

/// Fill `buf` before `deadline` (a peer dripping bytes cannot stretch the handshake).
fn read_by(s: &mut Stream, buf: &mut [u8], deadline: Instant) -> Result<(), HandshakeError> {
    let mut at = 0;
    while at < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HandshakeError::Refused(
                code::TIMEOUT,
                Some(FabricEvent::AUTH_HANDSHAKE_TIMEOUT),
                "handshake timed out".into(),
            ));
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf[at..]) {
            Ok(0) => return Err(HandshakeError::Io),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Read exactly one frame (blocking, until `deadline`) into `buf`.
fn read_frame<'a>(
    s: &mut Stream,
    buf: &'a mut [u8; 8 + wire::MAX_REQUEST_BODY],
    deadline: Instant,
) -> Result<Frame<'a>, HandshakeError> {
    read_by(s, &mut buf[..wire::HDR], deadline)?;
    let mut h = [0u8; wire::HDR];
    h.copy_from_slice(&buf[..wire::HDR]);
    let hd = wire::parse_header(&h, wire::MAX_REQUEST_BODY)?;
    let total = wire::HDR + hd.len as usize;
    read_by(s, &mut buf[wire::HDR..total], deadline)?;
    match wire::decode(&buf[..total], wire::MAX_REQUEST_BODY)? {
        Some((f, _)) => Ok(f),
        None => Err(HandshakeError::Refused(
            code::MALFORMED,
            Some(FabricEvent::AUTH_PROTOCOL),
            "truncated frame".into(),
        )),
    }
}

/// What a peer claimed during set-up, for the audit of a failure.
#[derive(Default)]
struct Claim {
    grant: Option<[u8; 16]>,
    peer: Option<[u8; 32]>,
}

fn handshake(
    s: &mut Stream,
    shared: &Shared,
    pending: PendingGuard,
    claim: &mut Claim,
) -> Result<([u8; 16], [u8; 32]), HandshakeError> {
    let deadline = Instant::now() + shared.limits.handshake_timeout;
    let mut buf = [0u8; 8 + wire::MAX_REQUEST_BODY];
    let (grant, peer, cnonce) = match read_frame(s, &mut buf, deadline)? {
        Frame::Hello {
            version,
            grant,
            peer,
            nonce,
        } => {
            claim.grant = Some(grant);
            claim.peer = Some(peer);
            if version != wire::VERSION {
                return Err(WireError::BadVersion(version).into());
            }
            (grant, peer, nonce)
        }
        _ => {
            return Err(HandshakeError::Refused(
                code::UNAUTHENTICATED,
                Some(FabricEvent::AUTH_PROTOCOL),
                "expected HELLO: nothing is served before authentication".into(),
            ))
        }
    };
    let snonce = auth::nonce()
        .map_err(|e| HandshakeError::Refused(code::UNAVAILABLE, None, e.to_string()))?;
    let mut out = Vec::with_capacity(64);
    wire::put_challenge(&mut out, &snonce);
    s.write_all(&out)?;
    let sig = match read_frame(s, &mut buf, deadline)? {
        Frame::Auth { signature } => signature,
        _ => {
            return Err(HandshakeError::Refused(
                code::UNAUTHENTICATED,
                Some(FabricEvent::AUTH_PROTOCOL),
                "expected AUTH".into(),
            ))
        }
    };
    if !auth::PROOF.verify(&peer, &grant, &cnonce, &snonce, &sig) {
        return Err(HandshakeError::Refused(
            code::AUTH,
            Some(FabricEvent::AUTH_BAD_SIGNATURE),
            "bad signature".into(),
        ));
    }
    if !shared.table.grant_has_peer(&grant, &peer) {
        // The peer is told the same either way; the audit says which.
        let why = if shared.table.grant_is_live(&grant) {
            FabricEvent::AUTH_PEER_KEY_MISMATCH
        } else {
            FabricEvent::AUTH_UNKNOWN_GRANT
        };
        return Err(HandshakeError::Refused(
            code::AUTH,
            Some(why),
            "no live key of this grant is bound to this peer key".into(),
        ));
    }
    // Authenticated: no longer counts against the peer's set-up bound (released before
    // WELCOME so the peer can never observe itself still counted).
    drop(pending);
    out.clear();
    wire::put_welcome(&mut out, shared.limits.max_outstanding);
    s.write_all(&out)?;
    Ok((grant, peer))
}

/// Serve one accepted connection until it closes.
pub(crate) fn serve(mut s: Stream, shared: &Shared, pending: PendingGuard) {
    let _ = s.tune();
    let _ = s.set_write_timeout(Some(shared.limits.write_timeout));
    let mut claim = Claim::default();
    let (grant, peer) = match handshake(&mut s, shared, pending, &mut claim) {
        Ok(gp) => gp,
        Err(HandshakeError::Refused(c, why, msg)) => {
            if let Some(why) = why.filter(|_| !shared.stop.load(Ordering::Acquire)) {
                let ev = shared
                    .auth_failures
                    .event(s.peer_label(), claim.grant, claim.peer, why);
                if let Some(ev) = ev {
                    (shared.events)(ev);
                }
            }
            let mut b = Vec::new();
            wire::put_error(&mut b, c, &msg);
            let _ = s.write_all(&b);
            close_gracefully(&mut s);
            return;
        }
        Err(HandshakeError::Io) => return,
    };
    if s.set_read_timeout(None).is_err() || shared.stop.load(Ordering::Acquire) {
        return;
    }
    (shared.events)(FabricEvent::Connected { grant, peer });
    let mut sess = Session {
        shared,
        grant,
        peer,
        // A full batch plus one 64 KiB READ fits without growing.
        tx: vec![0; TX_BATCH + (64 << 10) + wire::READ_RESP_HEAD],
        used: 0,
        since_read: 0,
    };
    sess.run(&mut s);
    (shared.events)(FabricEvent::Disconnected { grant, peer });
}

/// Half-close, then read and discard until the peer closes (bounded), so replies already
/// written are not destroyed by a reset.
fn close_gracefully(s: &mut Stream) {
    let _ = s.flush();
    let _ = match s {
        Stream::Tcp(t) => t.shutdown(std::net::Shutdown::Write),
        Stream::Unix(u) => u.shutdown(std::net::Shutdown::Write),
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut junk = [0u8; 4096];
    let mut n = 0;
    while n < DRAIN_LIMIT {
        match s.read(&mut junk) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
}

enum Next {
    Continue,
    /// Error state: flush what is queued, then close.
    Close,
}

struct Session<'a> {
    shared: &'a Shared,
    grant: [u8; 16],
    peer: [u8; 32],
    /// Outgoing batch; `tx.len()` is a high-water mark, `used` the bytes queued.
    tx: Vec<u8>,
    used: usize,
    /// Requests decoded since the last socket read. Every earlier request had its reply
    /// written before that read, and none of these had, so the peer sent all of them
    /// without seeing a reply: more than `max_outstanding` breaks the WELCOME bound.
    since_read: u32,
}

impl Session<'_> {
    fn run(&mut self, s: &mut Stream) {
        let mut rx = vec![0u8; RX_BUF];
        let (mut start, mut end) = (0usize, 0usize);
        loop {
            loop {
                match wire::decode(&rx[start..end], wire::MAX_REQUEST_BODY) {
                    Ok(Some((frame, n))) => {
                        start += n;
                        let next = match self.handle(frame, s) {
                            Ok(n) => n,
                            Err(_) => return,
                        };
                        if let Next::Close = next {
                            let _ = self.flush(s);
                            close_gracefully(s);
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.error(code::MALFORMED, &e.to_string());
                        let _ = self.flush(s);
                        close_gracefully(s);
                        return;
                    }
                }
            }
            if self.flush(s).is_err() {
                return;
            }
            self.since_read = 0;
            if start == end {
                (start, end) = (0, 0);
            } else if start > 0 {
                rx.copy_within(start..end, 0);
                (start, end) = (0, end - start);
            }
            match s.read(&mut rx[end..]) {
                Ok(0) => return,
                Ok(n) => end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Write the queued replies. The peer must take them within the write timeout as a
    /// whole (not per write call), so a reader that drips cannot hold the thread.
    fn flush(&mut self, s: &mut Stream) -> io::Result<()> {
        let deadline = Instant::now() + self.shared.limits.write_timeout;
        let mut off = 0;
        while off < self.used {
            match s.write(&self.tx[off..self.used]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if off < self.used && Instant::now() >= deadline {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
        self.used = 0;
        Ok(())
    }

    fn error(&mut self, c: u32, msg: &str) {
        let mut b = Vec::with_capacity(wire::HDR + 4 + msg.len());
        wire::put_error(&mut b, c, msg);
        self.append(&b);
    }

    fn append(&mut self, b: &[u8]) {
        let at = self.reserve(b.len());
        self.tx[at..at + b.len()].copy_from_slice(b);
    }

    /// Make room for `n` more bytes; returns where they go.
    fn reserve(&mut self, n: usize) -> usize {
        let at = self.used;
        if self.tx.len() < at + n {
            self.tx.resize(at + n, 0);
        }
        self.used += n;
        at
    }

    fn handle(&mut self, f: Frame<'_>, s: &mut Stream) -> io::Result<Next> {
        match f {
            Frame::Read(r) => self.read(
                s,
                r.wr_id,
                std::slice::from_ref(&r).iter().copied(),
                r.len as u64,
            ),
            Frame::ReadSg { wr_id, segs } => {
                let total: u64 = wire::segments(wr_id, segs).map(|r| r.len as u64).sum();
                debug_assert!(segs.len() / 16 <= MAX_SGE);
                self.read(s, wr_id, wire::segments(wr_id, segs), total)
            }
            Frame::Commit { grant } => {
                self.flush(s)?;
                if grant != self.grant {
                    let mut b = Vec::with_capacity(32);
                    wire::put_commit_ack(&mut b, &grant, 1);
                    self.append(&b);
                    return Ok(Next::Continue);
                }
                (self.shared.events)(FabricEvent::Commit {
                    grant,
                    peer: self.peer,
                });
                let mut b = Vec::with_capacity(32);
                wire::put_commit_ack(&mut b, &grant, 0);
                self.append(&b);
                Ok(Next::Continue)
            }
            _ => {
                self.error(code::MALFORMED, "unexpected frame after authentication");
                Ok(Next::Close)
            }
        }
    }

    /// Serve one (possibly scatter-gather) READ of `total` bytes.
    fn read(
        &mut self,
        s: &mut Stream,
        wr_id: u64,
        segs: impl Iterator<Item = ReadReq>,
        total: u64,
    ) -> io::Result<Next> {
        self.since_read += 1;
        if self.since_read > self.shared.limits.max_outstanding {
            self.error(
                code::MALFORMED,
                "more requests outstanding than WELCOME allowed",
            );
            return Ok(Next::Close);
        }
        if total == 0 || total > MAX_READ_LEN as u64 {
            self.error(code::MALFORMED, "READ length is zero or above the maximum");
            return Ok(Next::Close);
        }
        let total = total as usize;
        if self.used > 0 && self.used + wire::READ_RESP_HEAD + total > TX_BATCH {
            self.flush(s)?;
        }
        let head_at = self.reserve(wire::READ_RESP_HEAD + total);
        let mut at = head_at + wire::READ_RESP_HEAD;
        let mut failure = None;
        for r in segs {
            match self.shared.table.check(
                r.rkey,
                r.addr,
                r.len,
                Access::REMOTE_READ,
                &self.grant,
                &self.peer,
            ) {
                Err(refusal) => {
                    failure = Some((
                        WcStatus::RemoteAccessError,
                        r.rkey,
                        refusal.reason().to_string(),
                    ));
                    break;
                }
                Ok(key) => {
                    let dst = &mut self.tx[at..at + r.len as usize];
                    if let Err(e) = key.source.read_exact_at(r.addr, dst) {
                        failure = Some((WcStatus::RemoteOperationError, r.rkey, e.to_string()));
                        break;
                    }
                    at += r.len as usize;
                }
            }
        }
        match failure {
            None => {
                wire::write_read_resp_head(
                    &mut self.tx[head_at..],
                    wr_id,
                    WcStatus::Success,
                    total as u32,
                );
                Ok(Next::Continue)
            }
            Some((status, rkey, reason)) => {
                // Drop the partial data: an error completion carries none.
                self.used = head_at + wire::READ_RESP_HEAD;
                wire::write_read_resp_head(&mut self.tx[head_at..], wr_id, status, 0);
                (self.shared.events)(FabricEvent::AccessError {
                    grant: self.grant,
                    rkey,
                    reason,
                });
                Ok(Next::Close)
            }
        }
    }
}
