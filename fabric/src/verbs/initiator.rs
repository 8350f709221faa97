//! The verbs initiator: resolves the responder through rdma_cm, connects with a HELLO
//! nonce, proves the peer key with an AUTH SEND, then posts RDMA READs (one work request
//! per segment, landing in a pooled buffer registered for the READ) and maps their
//! completions, in order, to fabric completions.

use super::auth;
use super::cm::{self, Channel};
use super::msg::{self, Msg};
use super::qp::{self, ack, Qp, QpSize, TAG_CTRL, TAG_RECV};
use super::status::{wc_status, wc_status_name};
use crate::buf::{Buf, Pool};
use crate::conformance::ProbeTarget;
use crate::{
    Completion, Endpoint, FabricError, WcStatus, DEFAULT_MAX_OUTSTANDING, MAX_READ_LEN, MAX_SGE,
};
use rdma_sys::*;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RESOLVE_MS: i32 = 5000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// One posted READ (possibly several work requests, one per segment).
struct Pending {
    wr_id: u64,
    buf: Buf,
    mr: *mut ibv_mr,
    /// Work requests still to complete.
    left: usize,
    status: WcStatus,
}

/// Verbs-provider initiator connection. See [`crate::Connection`].
pub struct VerbsConnection {
    // Field order is drop order: QP before PD before id before channel.
    qp: Option<Qp>,
    comp: *mut ibv_comp_channel,
    pd: *mut ibv_pd,
    id: *mut rdma_cm_id,
    _channel: Channel,
    pending: VecDeque<Pending>,
    ready: VecDeque<Completion>,
    pool: Arc<Pool>,
    max_outstanding: usize,
    error: bool,
    commit_ack: Option<u32>,
    /// The grant of the COMMIT awaiting its acknowledgement.
    committing: Option<[u8; 16]>,
    armed: bool,
}

// SAFETY: the verbs handles are owned by this value and used from one thread at a time
// (&mut self).
unsafe impl Send for VerbsConnection {}

fn expect(
    ev: *mut rdma_cm_event,
    want: rdma_cm_event_type::Type,
    what: &str,
) -> Result<(), FabricError> {
    // SAFETY: ev is live until acked.
    let (got, status) = unsafe { ((*ev).event, (*ev).status) };
    if got == want {
        return Ok(());
    }
    let reject = if got == rdma_cm_event_type::RDMA_CM_EVENT_REJECTED {
        // SAFETY: live connection event.
        msg::parse_reject(unsafe { qp::private_data(ev) })
    } else {
        None
    };
    ack(ev);
    Err(match reject {
        Some(c) => {
            FabricError::AuthRejected(format!("the responder rejected the connection (code {c})"))
        }
        None => FabricError::Verbs(format!("{what}: rdma_cm event {got} (status {status})")),
    })
}

impl VerbsConnection {
    /// Connect to a verbs responder at `endpoint` (`rdma:IP:PORT`) and authenticate for
    /// `grant` with the peer key whose Ed25519 seed is `peer_seed`.
    pub fn connect(
        endpoint: &Endpoint,
        grant: [u8; 16],
        peer_seed: [u8; 32],
    ) -> Result<VerbsConnection, FabricError> {
        auth::sign(&peer_seed, &grant, &[0; 32], &[0; 32])?;
        let cnonce = auth::nonce()?;
        let hello = msg::put_nonce(msg::VERSION, &cnonce);
        let (mut c, snonce) = VerbsConnection::establish(endpoint, &hello)?;
        trace!("initiator: established with {endpoint}");
        let (peer, sig) = auth::sign(&peer_seed, &grant, &cnonce, &snonce)?;
        c.authenticate(grant, peer, sig)?;
        Ok(c)
    }

    /// Resolve, create the queue pair and connect with `hello` as private data; returns
    /// the connection (not yet authenticated) and the server nonce.
    fn establish(
        endpoint: &Endpoint,
        hello: &[u8],
    ) -> Result<(VerbsConnection, [u8; 32]), FabricError> {
        let Endpoint::Rdma(addr) = endpoint else {
            return Err(FabricError::BadEndpoint(endpoint.to_string()));
        };
        cm::require_device()?;
        let channel = Channel::new()?;
        let mut id = std::ptr::null_mut();
        // SAFETY: channel live; id valid out-pointer.
        cm::check("rdma_create_id", unsafe {
            rdma_create_id(
                channel.0,
                &mut id,
                std::ptr::null_mut(),
                rdma_port_space::RDMA_PS_TCP,
            )
        })?;
        let mut c = VerbsConnection {
            qp: None,
            comp: std::ptr::null_mut(),
            pd: std::ptr::null_mut(),
            id,
            _channel: channel,
            pending: VecDeque::new(),
            ready: VecDeque::new(),
            pool: Pool::new(),
            max_outstanding: DEFAULT_MAX_OUTSTANDING,
            error: false,
            commit_ack: None,
            committing: None,
            armed: false,
        };
        let snonce = c.setup(addr, endpoint, hello)?;
        Ok((c, snonce))
    }

    fn setup(
        &mut self,
        addr: &std::net::SocketAddr,
        endpoint: &Endpoint,
        hello: &[u8],
    ) -> Result<[u8; 32], FabricError> {
        let mut sa = cm::sockaddr(addr);
        // SAFETY: id live; sa valid for the call.
        if unsafe {
            rdma_resolve_addr(
                self.id,
                std::ptr::null_mut(),
                (&mut sa as *mut libc::sockaddr_storage).cast(),
                RESOLVE_MS,
            )
        } != 0
        {
            return Err(cm::last("rdma_resolve_addr"));
        }
        let ev = self._channel.wait(CONNECT_TIMEOUT, "address resolution")?;
        expect(
            ev,
            rdma_cm_event_type::RDMA_CM_EVENT_ADDR_RESOLVED,
            "resolving the address",
        )?;
        ack(ev);
        // SAFETY: id live with a resolved address.
        cm::check("rdma_resolve_route", unsafe {
            rdma_resolve_route(self.id, RESOLVE_MS)
        })?;
        let ev = self._channel.wait(CONNECT_TIMEOUT, "route resolution")?;
        expect(
            ev,
            rdma_cm_event_type::RDMA_CM_EVENT_ROUTE_RESOLVED,
            "resolving the route",
        )?;
        ack(ev);
        // SAFETY: id live; verbs set once the route is resolved.
        let ctx = unsafe { (*self.id).verbs };
        if ctx.is_null() {
            return Err(cm::no_device(format!(
                "no RDMA device routes to {endpoint}"
            )));
        }
        // SAFETY: ctx live.
        self.pd = unsafe { ibv_alloc_pd(ctx) };
        if self.pd.is_null() {
            return Err(cm::last("ibv_alloc_pd"));
        }
        // SAFETY: ctx live.
        self.comp = unsafe { ibv_create_comp_channel(ctx) };
        if self.comp.is_null() {
            return Err(cm::last("ibv_create_comp_channel"));
        }
        // SAFETY: comp live.
        cm::set_nonblocking(unsafe { (*self.comp).fd })?;
        let size = QpSize {
            send_wr: (DEFAULT_MAX_OUTSTANDING * MAX_SGE + 8) as u32,
            send_sge: 1,
        };
        self.qp = Some(Qp::create(self.id, self.pd, self.comp, 0, size, true)?);
        let (mut initiator_depth, _) = qp::rd_atom(ctx);
        if qp::is_rxe(ctx) {
            // rxe (6.1) loses the NAK of a refused READ that has other READs in flight
            // behind it: the requester retries instead of completing REM_ACCESS_ERR, so a
            // revocation would surface only as a retry time-out. One READ on the wire at
            // a time keeps the refusal exact; more stay queued in the send queue.
            initiator_depth = 1;
        }
        // SAFETY: zeroed conn param is valid; fields set below.
        let mut p: rdma_conn_param = unsafe { std::mem::zeroed() };
        p.private_data = hello.as_ptr().cast();
        p.private_data_len = hello.len().min(56) as u8;
        p.initiator_depth = initiator_depth;
        p.responder_resources = 1;
        p.retry_count = 7;
        p.rnr_retry_count = 7;
        // SAFETY: id has its QP; p valid for the call.
        cm::check("rdma_connect", unsafe { rdma_connect(self.id, &mut p) })?;
        let ev = self
            ._channel
            .wait(CONNECT_TIMEOUT, "the connection to be established")?;
        expect(
            ev,
            rdma_cm_event_type::RDMA_CM_EVENT_ESTABLISHED,
            "connecting",
        )?;
        // SAFETY: live connection event.
        let challenge = msg::parse_nonce(unsafe { qp::private_data(ev) });
        ack(ev);
        match challenge {
            Some((v, n)) if v == msg::VERSION => Ok(n),
            _ => Err(FabricError::Protocol(
                "the responder's CHALLENGE is malformed".into(),
            )),
        }
    }

    /// Send the AUTH proof and wait for WELCOME.
    fn authenticate(
        &mut self,
        grant: [u8; 16],
        peer: [u8; 32],
        sig: [u8; 64],
    ) -> Result<(), FabricError> {
        let q = self.qp.as_mut().ok_or(FabricError::Shutdown)?;
        q.send(&Msg::Auth { grant, peer, sig })?;
        match self.wait_msg(Instant::now() + CONNECT_TIMEOUT)? {
            Msg::Welcome { max_outstanding } => {
                self.max_outstanding = (max_outstanding as usize).clamp(1, DEFAULT_MAX_OUTSTANDING);
                Ok(())
            }
            Msg::Error { code, text } => {
                Err(FabricError::AuthRejected(format!("{text} (code {code})")))
            }
            _ => Err(FabricError::Protocol("expected WELCOME".into())),
        }
    }

    /// Wait for the next control message (during set-up, nothing else is outstanding).
    fn wait_msg(&mut self, deadline: Instant) -> Result<Msg, FabricError> {
        let q = self.qp.as_mut().ok_or(FabricError::Shutdown)?;
        loop {
            let mut wcs = std::mem::take(&mut q.stray);
            let mut wc = cm::zero_wc();
            // SAFETY: cq live; wc a valid array of one.
            if unsafe { ibv_poll_cq(q.recv_cq, 1, &mut wc) } == 1 {
                wcs.push(wc);
            }
            for wc in wcs {
                if wc.wr_id & TAG_RECV == 0 {
                    continue;
                }
                if wc.status != ibv_wc_status::IBV_WC_SUCCESS {
                    return Err(FabricError::AuthRejected(format!(
                        "the responder closed the connection ({})",
                        wc_status_name(wc.status)
                    )));
                }
                let slot = (wc.wr_id & !TAG_RECV) as usize;
                let m = q.received(slot, wc.byte_len);
                q.post_recv(slot)?;
                return m.ok_or_else(|| FabricError::Protocol("malformed control message".into()));
            }
            if Instant::now() >= deadline {
                return Err(FabricError::Timeout("the responder's WELCOME"));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn admit(&mut self, wr_id: u64, total: u64) -> Result<bool, FabricError> {
        if total == 0 || total > MAX_READ_LEN as u64 {
            return Err(FabricError::BadLength {
                len: total,
                max: MAX_READ_LEN,
            });
        }
        if self.pending.len() + self.ready.len() >= self.max_outstanding {
            return Err(FabricError::QueueFull(self.max_outstanding));
        }
        if self.error {
            self.ready.push_back(Completion {
                wr_id,
                status: WcStatus::Flushed,
                data: Buf::empty(),
            });
            return Ok(false);
        }
        Ok(true)
    }

    /// See [`crate::Connection::post_read`].
    pub fn post_read(
        &mut self,
        wr_id: u64,
        remote_addr: u64,
        len: u32,
        rkey: u32,
    ) -> Result<(), FabricError> {
        self.post_read_sg(wr_id, &[(remote_addr, len, rkey)])
    }

    /// See [`crate::Connection::post_read_sg`].
    pub fn post_read_sg(
        &mut self,
        wr_id: u64,
        segs: &[(u64, u32, u32)],
    ) -> Result<(), FabricError> {
        if segs.is_empty() || segs.len() > MAX_SGE {
            return Err(FabricError::BadSgList(segs.len()));
        }
        let total: u64 = segs.iter().map(|s| s.1 as u64).sum();
        if !self.admit(wr_id, total)? {
            return Ok(());
        }
        let mut buf = self.pool.take(total as usize);
        let base = buf.as_mut_slice().as_mut_ptr();
        // SAFETY: the buffer stays alive (owned by the Pending entry) until the READ's
        // completions arrive; the MR is deregistered then.
        let mr = unsafe {
            ibv_reg_mr(
                self.pd,
                base.cast(),
                total as usize,
                ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0 as i32,
            )
        };
        if mr.is_null() {
            return Err(cm::last("ibv_reg_mr (READ buffer)"));
        }
        let q = self.qp.as_mut().ok_or(FabricError::Shutdown)?;
        let mut sges = Vec::with_capacity(segs.len());
        let mut off = 0u64;
        // SAFETY: mr was just registered and is live.
        let lkey = unsafe { (*mr).lkey };
        for s in segs {
            sges.push(ibv_sge {
                addr: base as u64 + off,
                length: s.1,
                lkey,
            });
            off += s.1 as u64;
        }
        let mut wrs: Vec<ibv_send_wr> = segs.iter().map(|_| cm::zero_send_wr()).collect();
        let n = wrs.len();
        for i in 0..n {
            let next = if i + 1 < n {
                &mut wrs[i + 1] as *mut ibv_send_wr
            } else {
                std::ptr::null_mut()
            };
            let w = &mut wrs[i];
            // READs carry no tag: they complete in order and match the pending queue.
            w.wr_id = 0;
            w.opcode = ibv_wr_opcode::IBV_WR_RDMA_READ;
            w.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
            w.sg_list = &mut sges[i];
            w.num_sge = 1;
            w.wr.rdma = rdma_t {
                remote_addr: segs[i].0,
                rkey: segs[i].2,
            };
            w.next = next;
        }
        let mut bad = std::ptr::null_mut();
        // SAFETY: the chain and its SGEs are valid for the call.
        let rc = unsafe { ibv_post_send(q.qp(), wrs.as_mut_ptr(), &mut bad) };
        if rc != 0 {
            // When the first request was refused nothing uses the MR; when part of the
            // chain went out, the QP is failing and those completions flush, so it stays.
            if bad == wrs.as_mut_ptr() {
                // SAFETY: no posted work request refers to mr.
                unsafe { ibv_dereg_mr(mr) };
                return Err(cm::check("ibv_post_send", rc)
                    .err()
                    .unwrap_or(FabricError::ErrorState));
            }
        }
        let posted = if rc != 0 {
            (bad as usize - wrs.as_ptr() as usize) / std::mem::size_of::<ibv_send_wr>()
        } else {
            n
        };
        self.pending.push_back(Pending {
            wr_id,
            buf,
            mr,
            left: posted,
            status: WcStatus::Success,
        });
        if posted < n {
            if let Some(p) = self.pending.back_mut() {
                p.status = WcStatus::Flushed;
            }
            self.error = true;
        }
        Ok(())
    }

    fn dispatch(&mut self, wc: &ibv_wc) {
        if wc.wr_id & TAG_RECV != 0 {
            let Some(q) = self.qp.as_mut() else { return };
            if wc.status != ibv_wc_status::IBV_WC_SUCCESS {
                self.error = true;
                return;
            }
            let slot = (wc.wr_id & !TAG_RECV) as usize;
            if let Some(Msg::CommitAck { grant, status }) = q.received(slot, wc.byte_len) {
                if Some(grant) == self.committing {
                    self.commit_ack = Some(status);
                }
            }
            let _ = q.post_recv(slot);
            return;
        }
        if wc.wr_id & TAG_CTRL != 0 {
            return;
        }
        trace!(
            "initiator: completion status {} opcode {}",
            wc.status,
            wc.opcode
        );
        let Some(p) = self.pending.front_mut() else {
            return;
        };
        let st = wc_status(wc.status);
        if p.status == WcStatus::Success && st != WcStatus::Success {
            p.status = st;
        }
        p.left = p.left.saturating_sub(1);
        if st != WcStatus::Success {
            self.error = true;
        }
        if p.left == 0 {
            if let Some(p) = self.pending.pop_front() {
                self.finish(p);
            }
        }
    }

    fn finish(&mut self, p: Pending) {
        // SAFETY: every work request using this MR has completed.
        unsafe { ibv_dereg_mr(p.mr) };
        // After the first error, an RC QP flushes everything behind it.
        let status = if self.error && p.status == WcStatus::Success {
            WcStatus::Flushed
        } else {
            p.status
        };
        let data = if status == WcStatus::Success {
            p.buf
        } else {
            Buf::empty()
        };
        self.ready.push_back(Completion {
            wr_id: p.wr_id,
            status,
            data,
        });
    }

    fn pump(&mut self) -> Result<(), FabricError> {
        loop {
            let Some(q) = self.qp.as_mut() else {
                return Ok(());
            };
            let mut batch = std::mem::take(&mut q.stray);
            let mut wcs: [ibv_wc; 16] = std::array::from_fn(|_| cm::zero_wc());
            // SAFETY: cq live; wcs a valid array of 16.
            let n = unsafe { ibv_poll_cq(q.recv_cq, 16, wcs.as_mut_ptr()) };
            if n > 0 {
                batch.extend(wcs.into_iter().take(n as usize));
            }
            if batch.is_empty() {
                return Ok(());
            }
            for wc in &batch {
                self.dispatch(wc);
            }
        }
    }

    /// See [`crate::Connection::poll_completions`].
    pub fn poll_completions(&mut self, out: &mut Vec<Completion>) -> Result<usize, FabricError> {
        self.pump()?;
        let n = self.ready.len();
        out.extend(self.ready.drain(..));
        Ok(n)
    }

    /// See [`crate::Connection::wait_completions`].
    pub fn wait_completions(
        &mut self,
        out: &mut Vec<Completion>,
        timeout: Option<Duration>,
    ) -> Result<usize, FabricError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let n = self.poll_completions(out)?;
            if n > 0 || self.pending.is_empty() {
                return Ok(n);
            }
            self.arm()?;
            let n = self.poll_completions(out)?;
            if n > 0 {
                return Ok(n);
            }
            // SAFETY: comp live.
            let fd = unsafe { (*self.comp).fd };
            if !cm::poll_in(fd, deadline)? {
                return Ok(0);
            }
            self.drain_channel();
        }
    }

    fn arm(&mut self) -> Result<(), FabricError> {
        if !self.armed {
            if let Some(q) = &self.qp {
                // SAFETY: cq live.
                cm::check("ibv_req_notify_cq", unsafe {
                    ibv_req_notify_cq(q.recv_cq, 0)
                })?;
                self.armed = true;
            }
        }
        Ok(())
    }

    fn drain_channel(&mut self) {
        loop {
            let mut cq = std::ptr::null_mut();
            let mut ctx = std::ptr::null_mut();
            // SAFETY: comp live and non-blocking.
            if unsafe { ibv_get_cq_event(self.comp, &mut cq, &mut ctx) } != 0 {
                return;
            }
            // SAFETY: cq from the event; acknowledged at once.
            unsafe { ibv_ack_cq_events(cq, 1) };
            self.armed = false;
        }
    }

    /// See [`crate::Connection::commit`].
    pub fn commit(&mut self, grant: [u8; 16]) -> Result<(), FabricError> {
        if self.error {
            return Err(FabricError::ErrorState);
        }
        self.commit_ack = None;
        self.committing = Some(grant);
        self.qp
            .as_mut()
            .ok_or(FabricError::Shutdown)?
            .send(&Msg::Commit { grant })?;
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        loop {
            self.pump()?;
            match self.commit_ack.take() {
                Some(0) => return Ok(()),
                Some(st) => return Err(FabricError::CommitRejected(format!("status {st}"))),
                None if self.error => return Err(FabricError::ErrorState),
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(FabricError::Timeout("the COMMIT acknowledgement"));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// See [`crate::Connection::outstanding`].
    pub fn outstanding(&self) -> usize {
        self.pending.len() + self.ready.len()
    }

    /// See [`crate::Connection::max_outstanding`].
    pub fn max_outstanding(&self) -> usize {
        self.max_outstanding
    }

    /// See [`crate::Connection::is_error`].
    pub fn is_error(&self) -> bool {
        self.error
    }

    /// Always false: work requests go to the device directly.
    pub fn wants_write(&self) -> bool {
        false
    }
}

impl AsRawFd for VerbsConnection {
    fn as_raw_fd(&self) -> RawFd {
        if self.comp.is_null() {
            return -1;
        }
        // SAFETY: comp live for self's life.
        unsafe { (*self.comp).fd }
    }
}

impl Drop for VerbsConnection {
    fn drop(&mut self) {
        if self.qp.is_some() {
            // SAFETY: id live and connected (or connecting).
            unsafe { rdma_disconnect(self.id) };
        }
        trace!("initiator: drop");
        // QP (and its CQs) first, then the READ buffers' MRs, PD, channel, id.
        self.qp = None;
        for p in self.pending.drain(..) {
            // SAFETY: the QP is gone, nothing uses the MR.
            unsafe { ibv_dereg_mr(p.mr) };
        }
        // SAFETY: each handle is destroyed once, after everything that depends on it.
        unsafe {
            if !self.comp.is_null() {
                ibv_destroy_comp_channel(self.comp);
            }
            if !self.pd.is_null() {
                ibv_dealloc_pd(self.pd);
            }
            rdma_destroy_id(self.id);
        }
        trace!("initiator: dropped");
    }
}

/// A READ with the target key on a connection that did not authenticate must not be
/// served.
fn read_refused(c: &mut VerbsConnection, t: &ProbeTarget<'_>, what: &str) -> Result<(), String> {
    c.post_read(1, t.addr, t.len, t.rkey)
        .map_err(|e| format!("{what}: post_read: {e}"))?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while out.is_empty() && Instant::now() < deadline {
        c.wait_completions(&mut out, Some(Duration::from_secs(1)))
            .map_err(|e| format!("{what}: {e}"))?;
    }
    match out.first() {
        Some(comp) if comp.status == WcStatus::Success => {
            Err(format!("{what}: the READ was served"))
        }
        Some(_) => Ok(()),
        // The responder dropped the connection (its QP is in the error state and answers
        // nothing): the READ is retried until the retry count runs out, never served.
        None if c.pending.front().is_some() => Ok(()),
        None => Err(format!("{what}: the READ vanished without a completion")),
    }
}

/// The verbs provider's unauthenticated probe (see
/// [`Provider::unauthenticated_probe`](crate::conformance::Provider::unauthenticated_probe)):
/// a malformed HELLO, a READ without AUTH, a forged signature and a genuine signature over
/// another challenge (replay) must each be refused, and no READ served.
pub(crate) fn unauthenticated_probe(t: &ProbeTarget<'_>) -> Result<(), String> {
    let ep = Endpoint::parse(t.endpoint).map_err(|e| e.to_string())?;
    match VerbsConnection::establish(&ep, &[0xAB; msg::PRIV_LEN]) {
        Err(FabricError::AuthRejected(_)) => {}
        Err(e) => return Err(format!("malformed HELLO: expected a rejection, got: {e}")),
        Ok(_) => return Err("a malformed HELLO was accepted".into()),
    }
    let fresh = || -> Result<(VerbsConnection, [u8; 32], [u8; 32]), String> {
        let cn = auth::nonce().map_err(|e| e.to_string())?;
        let (c, sn) = VerbsConnection::establish(&ep, &msg::put_nonce(msg::VERSION, &cn))
            .map_err(|e| format!("connect: {e}"))?;
        Ok((c, cn, sn))
    };
    let (mut c, _, _) = fresh()?;
    read_refused(&mut c, t, "READ before AUTH")?;
    drop(c);
    let peer = crate::public_key_from_seed(&t.seed).map_err(|e| e.to_string())?;
    let (mut c, _, _) = fresh()?;
    if c.authenticate(t.grant, peer, [0x11; 64]).is_ok() {
        return Err("a forged signature was accepted".into());
    }
    read_refused(&mut c, t, "READ after a forged AUTH")?;
    drop(c);
    let (mut c, cn, _) = fresh()?;
    // A genuine signature, but over another connection's challenge.
    let (_, sig) = auth::sign(&t.seed, &t.grant, &cn, &[0x22; 32]).map_err(|e| e.to_string())?;
    if c.authenticate(t.grant, peer, sig).is_ok() {
        return Err("a signature over another challenge was accepted".into());
    }
    read_refused(&mut c, t, "READ after a replayed AUTH")
}
