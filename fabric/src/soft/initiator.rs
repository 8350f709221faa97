//! The soft initiator: authenticates, then queues requests and parses replies in the
//! caller's thread on a non-blocking socket. Reply data is read from the socket straight
//! into pooled completion buffers.

use super::auth;
use super::stream::Stream;
use super::wire::{self, Frame, ReadReq, ReadRespHead};
use crate::buf::{Buf, Pool};
use crate::connection::Ledger;
use crate::{Completion, Endpoint, FabricError, WcStatus, DEFAULT_MAX_OUTSTANDING, MAX_SGE};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RX_BUF: usize = 64 << 10;
/// Payload reads at least this large bypass the receive buffer.
const DIRECT_MIN: usize = 16 << 10;
/// How long `commit` waits for the acknowledgement.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

struct Pending {
    wr_id: u64,
    len: u32,
}

/// A reply whose data is still arriving.
struct Incoming {
    head: ReadRespHead,
    buf: Buf,
    filled: usize,
}

/// Soft-provider initiator connection. See [`crate::Connection`].
pub struct SoftConnection {
    s: Stream,
    grant: [u8; 16],
    tx: Vec<u8>,
    tx_off: usize,
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    pending: VecDeque<Pending>,
    incoming: Option<Incoming>,
    /// Completions produced but not yet handed out (flushes, or arrivals during commit).
    ledger: Ledger,
    pool: Arc<Pool>,
    /// The grant of the COMMIT awaiting its acknowledgement.
    commit_pending: Option<[u8; 16]>,
    commit_ack: Option<u32>,
}

fn protocol(e: impl ToString) -> FabricError {
    FabricError::Protocol(e.to_string())
}

fn read_frame_blocking(s: &mut Stream, ep: &Endpoint) -> Result<Vec<u8>, FabricError> {
    let mut h = [0u8; wire::HDR];
    s.read_exact(&mut h)
        .map_err(|e| FabricError::io("authenticate with", ep, e))?;
    let hd = wire::parse_header(&h, 4 + wire::MAX_ERROR_MSG).map_err(protocol)?;
    let mut f = vec![0u8; wire::HDR + hd.len as usize];
    f[..wire::HDR].copy_from_slice(&h);
    s.read_exact(&mut f[wire::HDR..])
        .map_err(|e| FabricError::io("authenticate with", ep, e))?;
    Ok(f)
}

fn refused(code: u32, message: &[u8]) -> FabricError {
    FabricError::AuthRejected(format!(
        "{} (code {code})",
        String::from_utf8_lossy(message)
    ))
}

impl SoftConnection {
    /// Connect to a soft responder and authenticate for `grant` with the peer key whose
    /// Ed25519 seed is `peer_seed`.
    pub fn connect(
        endpoint: &Endpoint,
        grant: [u8; 16],
        peer_seed: [u8; 32],
    ) -> Result<SoftConnection, FabricError> {
        let kp = auth::keypair(&peer_seed)?;
        let peer = auth::public(&kp);
        let mut s = match endpoint {
            Endpoint::Tcp(a) => TcpStream::connect_timeout(a, CONNECT_TIMEOUT).map(Stream::Tcp),
            Endpoint::Unix(p) => UnixStream::connect(p).map(Stream::Unix),
            Endpoint::Rdma(_) => return Err(FabricError::BadEndpoint(endpoint.to_string())),
        }
        .map_err(|e| FabricError::io("connect to", endpoint, e))?;
        s.tune()
            .and_then(|_| s.set_read_timeout(Some(CONNECT_TIMEOUT)))
            .and_then(|_| s.set_write_timeout(Some(CONNECT_TIMEOUT)))
            .map_err(|e| FabricError::io("configure", endpoint, e))?;
        let cnonce = auth::nonce()?;
        let mut out = Vec::with_capacity(256);
        wire::put_hello(&mut out, &grant, &peer, &cnonce);
        s.write_all(&out)
            .map_err(|e| FabricError::io("authenticate with", endpoint, e))?;
        let f = read_frame_blocking(&mut s, endpoint)?;
        let snonce = match wire::decode(&f, 4 + wire::MAX_ERROR_MSG).map_err(protocol)? {
            Some((Frame::Challenge { version, nonce }, _)) if version == wire::VERSION => nonce,
            Some((Frame::Error { code, message }, _)) => return Err(refused(code, message)),
            _ => return Err(protocol("expected CHALLENGE")),
        };
        let sig = auth::PROOF.sign(&kp, &grant, &cnonce, &snonce);
        out.clear();
        wire::put_auth(&mut out, sig.as_ref());
        s.write_all(&out)
            .map_err(|e| FabricError::io("authenticate with", endpoint, e))?;
        let f = read_frame_blocking(&mut s, endpoint)?;
        let allowed = match wire::decode(&f, 4 + wire::MAX_ERROR_MSG).map_err(protocol)? {
            Some((
                Frame::Welcome {
                    max_outstanding, ..
                },
                _,
            )) => max_outstanding as usize,
            Some((Frame::Error { code, message }, _)) => return Err(refused(code, message)),
            _ => return Err(protocol("expected WELCOME")),
        };
        s.set_read_timeout(None)
            .and_then(|_| s.set_write_timeout(None))
            .and_then(|_| s.set_nonblocking(true))
            .map_err(|e| FabricError::io("configure", endpoint, e))?;
        let max_outstanding = allowed.clamp(1, DEFAULT_MAX_OUTSTANDING);
        Ok(SoftConnection {
            s,
            grant,
            tx: Vec::with_capacity(max_outstanding * (wire::HDR + 16 + 16 * MAX_SGE)),
            tx_off: 0,
            rx: vec![0u8; RX_BUF],
            rx_start: 0,
            rx_end: 0,
            pending: VecDeque::with_capacity(max_outstanding),
            incoming: None,
            ledger: Ledger::new(max_outstanding),
            pool: Pool::new(),
            commit_pending: None,
            commit_ack: None,
        })
    }

    /// See [`crate::Connection::post_read`].
    pub fn post_read(
        &mut self,
        wr_id: u64,
        remote_addr: u64,
        len: u32,
        rkey: u32,
    ) -> Result<(), FabricError> {
        if self.ledger.admit(self.pending.len(), wr_id, len as u64)? {
            let r = ReadReq {
                wr_id,
                addr: remote_addr,
                len,
                rkey,
            };
            wire::put_read(&mut self.tx, &r);
            self.pending.push_back(Pending { wr_id, len });
            self.try_send();
        }
        Ok(())
    }

    /// See [`crate::Connection::post_read_sg`].
    pub fn post_read_sg(
        &mut self,
        wr_id: u64,
        segs: &[(u64, u32, u32)],
    ) -> Result<(), FabricError> {
        let total = crate::connection::sg_total(segs)?;
        if self.ledger.admit(self.pending.len(), wr_id, total)? {
            wire::put_read_sg(&mut self.tx, wr_id, segs);
            self.pending.push_back(Pending {
                wr_id,
                len: total as u32,
            });
            self.try_send();
        }
        Ok(())
    }

    /// Enter the error state: everything outstanding completes `Flushed`.
    fn fail(&mut self) {
        if !self.ledger.error {
            self.ledger.error = true;
            self.s.shutdown();
        }
        self.incoming = None;
        self.tx.clear();
        self.tx_off = 0;
        while let Some(p) = self.pending.pop_front() {
            self.ledger.flushed(p.wr_id);
        }
    }

    /// Write queued requests without blocking.
    fn try_send(&mut self) {
        while self.tx_off < self.tx.len() {
            match self.s.write(&self.tx[self.tx_off..]) {
                Ok(0) => return self.fail(),
                Ok(n) => self.tx_off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(),
            }
        }
        self.tx.clear();
        self.tx_off = 0;
    }

    /// Parse what is in the receive buffer. Err: protocol violation.
    fn parse(&mut self) -> Result<(), String> {
        loop {
            if let Some(inc) = &mut self.incoming {
                let need = inc.head.len as usize - inc.filled;
                let n = need.min(self.rx_end - self.rx_start);
                inc.buf.as_mut_slice()[inc.filled..inc.filled + n]
                    .copy_from_slice(&self.rx[self.rx_start..self.rx_start + n]);
                inc.filled += n;
                self.rx_start += n;
                if inc.filled < inc.head.len as usize {
                    return Ok(());
                }
                if let Some(inc) = self.incoming.take() {
                    self.complete(inc.head, inc.buf);
                }
                continue;
            }
            let avail = &self.rx[self.rx_start..self.rx_end];
            let Some(h) = avail.first_chunk::<{ wire::HDR }>() else {
                return Ok(());
            };
            let hd = wire::parse_header(h, wire::MAX_REPLY_BODY).map_err(|e| e.to_string())?;
            if hd.op == wire::OP_READ_RESP {
                let Some(fixed) = avail.get(wire::HDR..wire::READ_RESP_HEAD) else {
                    return Ok(());
                };
                let head = wire::parse_read_resp_head(fixed, hd.len).map_err(|e| e.to_string())?;
                let Some(p) = self.pending.front() else {
                    return Err("READ_RESP without an outstanding READ".into());
                };
                if p.wr_id != head.wr_id
                    || (head.status == WcStatus::Success && p.len != head.len)
                    || head.status == WcStatus::Flushed
                {
                    return Err("READ_RESP does not match the oldest outstanding READ".into());
                }
                self.rx_start += wire::READ_RESP_HEAD;
                if head.len == 0 {
                    self.complete(head, Buf::empty());
                } else {
                    let buf = self.pool.take(head.len as usize);
                    self.incoming = Some(Incoming {
                        head,
                        buf,
                        filled: 0,
                    });
                }
                continue;
            }
            let Some((f, n)) =
                wire::decode(avail, wire::MAX_REPLY_BODY).map_err(|e| e.to_string())?
            else {
                return Ok(());
            };
            match f {
                Frame::CommitAck { grant, status } if Some(grant) == self.commit_pending => {
                    self.commit_pending = None;
                    self.commit_ack = Some(status);
                }
                Frame::Error { code, message } => {
                    return Err(format!(
                        "responder error {code}: {}",
                        String::from_utf8_lossy(message)
                    ))
                }
                _ => return Err("unexpected frame from the responder".into()),
            }
            self.rx_start += n;
        }
    }

    fn complete(&mut self, head: ReadRespHead, data: Buf) {
        self.pending.pop_front();
        self.ledger.ready.push_back(Completion {
            wr_id: head.wr_id,
            status: head.status,
            data,
        });
        if head.status != WcStatus::Success {
            // Error state, as an RC queue pair: the rest is flushed.
            self.fail();
        }
    }

    /// Read whatever the socket has, without blocking. Stops after a short read: the
    /// socket was empty at that instant, and another read would only say so again.
    fn pump(&mut self) {
        self.try_send();
        while !self.ledger.error {
            // Large payloads go straight into their completion buffer.
            let direct = self.rx_start == self.rx_end
                && self
                    .incoming
                    .as_ref()
                    .is_some_and(|i| i.head.len as usize - i.filled >= DIRECT_MIN);
            let (r, asked) = if direct {
                let Some(inc) = self.incoming.as_mut() else {
                    break;
                };
                let dst = &mut inc.buf.as_mut_slice()[inc.filled..];
                let asked = dst.len();
                let r = self.s.read(dst);
                if let Ok(n) = r {
                    inc.filled += n;
                }
                (r, asked)
            } else {
                if self.rx_start == self.rx_end {
                    (self.rx_start, self.rx_end) = (0, 0);
                } else if self.rx_end == self.rx.len() {
                    self.rx.copy_within(self.rx_start..self.rx_end, 0);
                    (self.rx_start, self.rx_end) = (0, self.rx_end - self.rx_start);
                }
                let asked = self.rx.len() - self.rx_end;
                let r = self.s.read(&mut self.rx[self.rx_end..]);
                if let Ok(n) = r {
                    self.rx_end += n;
                }
                (r, asked)
            };
            match r {
                Ok(0) => {
                    // Peer closed: whatever it sent before is parsed, the rest flushed.
                    let _ = self.parse();
                    self.fail();
                }
                Ok(n) => {
                    if direct {
                        let done = self
                            .incoming
                            .as_ref()
                            .is_some_and(|i| i.filled == i.head.len as usize);
                        if done {
                            if let Some(inc) = self.incoming.take() {
                                self.complete(inc.head, inc.buf);
                            }
                        }
                    } else if self.parse().is_err() {
                        self.fail();
                    }
                    if n < asked {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.fail(),
            }
        }
    }

    fn drain(&mut self, out: &mut Vec<Completion>) -> usize {
        self.ledger.drain_into(out)
    }

    /// See [`crate::Connection::poll_completions`].
    pub fn poll_completions(&mut self, out: &mut Vec<Completion>) -> Result<usize, FabricError> {
        if self.ledger.ready.is_empty() {
            self.pump();
        }
        Ok(self.drain(out))
    }

    /// Block in poll(2) for readability (and writability while requests are queued).
    fn wait_fd(&self, deadline: Option<Instant>) -> Result<bool, FabricError> {
        let mut events = libc::POLLIN;
        if self.wants_write() {
            events |= libc::POLLOUT;
        }
        crate::fdwait::wait(self.s.as_raw_fd(), events, deadline)
            .map_err(|e| FabricError::io("poll", "connection", e))
    }

    /// See [`crate::Connection::wait_completions`].
    pub fn wait_completions(
        &mut self,
        out: &mut Vec<Completion>,
        timeout: Option<Duration>,
    ) -> Result<usize, FabricError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        // poll(2) first: it returns at once if the socket has data, and saves the read
        // that would otherwise find it empty right after a post.
        loop {
            if !self.ledger.ready.is_empty() || self.pending.is_empty() {
                return Ok(self.drain(out));
            }
            if !self.wait_fd(deadline)? {
                return Ok(0);
            }
            self.pump();
        }
    }

    /// See [`crate::Connection::commit`].
    pub fn commit(&mut self, grant: [u8; 16]) -> Result<(), FabricError> {
        if self.ledger.error {
            return Err(FabricError::ErrorState);
        }
        self.commit_ack = None;
        self.commit_pending = Some(grant);
        wire::put_commit(&mut self.tx, &grant);
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        loop {
            self.pump();
            match self.commit_ack.take() {
                Some(0) => return Ok(()),
                Some(st) => return Err(FabricError::CommitRejected(format!("status {st}"))),
                None if self.ledger.error => return Err(FabricError::ErrorState),
                None => {}
            }
            if !self.wait_fd(Some(deadline))? {
                return Err(FabricError::Timeout("the COMMIT acknowledgement"));
            }
        }
    }

    /// The grant this connection authenticated for.
    pub fn grant(&self) -> [u8; 16] {
        self.grant
    }

    /// See [`crate::Connection::outstanding`].
    pub fn outstanding(&self) -> usize {
        self.pending.len() + self.ledger.ready.len()
    }

    /// See [`crate::Connection::max_outstanding`].
    pub fn max_outstanding(&self) -> usize {
        self.ledger.max_outstanding
    }

    /// See [`crate::Connection::is_error`].
    pub fn is_error(&self) -> bool {
        self.ledger.error
    }

    /// See [`crate::Connection::wants_write`].
    pub fn wants_write(&self) -> bool {
        self.tx_off < self.tx.len()
    }
}

impl AsRawFd for SoftConnection {
    fn as_raw_fd(&self) -> RawFd {
        self.s.as_raw_fd()
    }
}
