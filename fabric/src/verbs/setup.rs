//! Connection set-up of the verbs initiator: resolve the responder through rdma_cm, create
//! the queue pair, connect with the HELLO nonce as private data, then prove the peer key
//! with an AUTH SEND and wait for WELCOME.

use super::auth;
use super::cm;
use super::initiator::VerbsConnection;
use super::msg::{self, Msg};
use super::qp::{self, ack, Qp, QpSize, TAG_RECV};
use super::status::wc_status_name;
use crate::buf::Pool;
use crate::connection::Ledger;
use crate::{Endpoint, FabricError, DEFAULT_MAX_OUTSTANDING, MAX_SGE};
use rdma_sys::*;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const RESOLVE_MS: i32 = 5000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

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
        let kp = auth::keypair(&peer_seed)?;
        let cnonce = auth::nonce()?;
        let hello = msg::put_nonce(msg::VERSION, &cnonce);
        let (mut c, snonce) = VerbsConnection::establish(endpoint, &hello)?;
        trace!("initiator: established with {endpoint}");
        let sig = auth::PROOF.sign(&kp, &grant, &cnonce, &snonce);
        c.authenticate(grant, auth::public(&kp), sig)?;
        Ok(c)
    }

    /// Resolve, create the queue pair and connect with `hello` as private data; returns
    /// the connection (not yet authenticated) and the server nonce.
    pub(super) fn establish(
        endpoint: &Endpoint,
        hello: &[u8],
    ) -> Result<(VerbsConnection, [u8; 32]), FabricError> {
        let (addr, channel, id) = cm::open_id(endpoint)?;
        let mut c = VerbsConnection {
            qp: None,
            comp: std::ptr::null_mut(),
            pd: std::ptr::null_mut(),
            id,
            _channel: channel,
            pending: VecDeque::new(),
            ledger: Ledger::new(DEFAULT_MAX_OUTSTANDING),
            pool: Pool::new(),
            commit_ack: None,
            committing: None,
            armed: false,
        };
        let snonce = c.setup(&addr, endpoint, hello)?;
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
            // Observed on rxe (6.1): a READ refused while other READs were in flight on
            // the wire was not reported (the requester kept waiting instead of completing
            // REM_ACCESS_ERR). One READ on the wire at a time keeps refusals visible; more
            // stay queued in the send queue.
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
    pub(super) fn authenticate(
        &mut self,
        grant: [u8; 16],
        peer: [u8; 32],
        sig: [u8; 64],
    ) -> Result<(), FabricError> {
        let q = self.qp.as_mut().ok_or(FabricError::Shutdown)?;
        q.send(&Msg::Auth { grant, peer, sig })?;
        match self.wait_msg(Instant::now() + CONNECT_TIMEOUT)? {
            Msg::Welcome { max_outstanding } => {
                self.ledger.max_outstanding =
                    (max_outstanding as usize).clamp(1, DEFAULT_MAX_OUTSTANDING);
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
}
