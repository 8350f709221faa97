//! The responder's service thread: accepts rdma_cm connections (checking the client's
//! HELLO private data and answering with a server nonce), verifies the peer's AUTH proof,
//! binds the grant's windows on the peer's queue pair, answers COMMIT, invalidates expired
//! keys and tears connections down (reporting the error state when a peer's request was
//! refused).

use super::auth;
use super::cm;
use super::keys::{bind_key, destroy_key};
use super::msg::{self, code, Msg};
use super::qp::{self, ack, Qp, QpSize, TAG_RECV};
use super::responder::{emit, Conn, Inner, State};
use crate::FabricEvent;
use rdma_sys::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

/// Whole set-up (connect to AUTH) must finish within this.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// A closing connection whose DISCONNECTED never comes is torn down after this.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// READs the responder lets a peer have outstanding (announced in WELCOME).
pub(crate) const MAX_OUTSTANDING: u32 = 64;
/// Most connections (live, in set-up or closed but still holding a window) at once; more
/// are rejected.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// Service loop tick (expiry checks).
const TICK: Duration = Duration::from_millis(20);

pub(crate) fn run(inner: &Inner) {
    // SAFETY: comp is live for the responder's life.
    let comp_fd = unsafe { (*inner.comp).fd };
    while !inner.stop.load(Ordering::Acquire) {
        let mut fds = [
            libc::pollfd {
                fd: inner.channel.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: comp_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfds.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, TICK.as_millis() as i32) };
        let mut evs = Vec::new();
        while let Some(ev) = inner.channel.try_get() {
            cm_event(inner, ev, &mut evs);
        }
        cq_events(inner, &mut evs);
        housekeeping(inner, &mut evs);
        emit(inner, evs);
    }
}

fn cm_event(inner: &Inner, ev: *mut rdma_cm_event, evs: &mut Vec<FabricEvent>) {
    // SAFETY: ev is live until acked below.
    let (kind, id) = unsafe { ((*ev).event, (*ev).id) };
    match kind {
        rdma_cm_event_type::RDMA_CM_EVENT_CONNECT_REQUEST => {
            // SAFETY: ev is live and a connection event.
            let hello = msg::parse_nonce(unsafe { qp::private_data(ev) });
            let r = match hello {
                Some((v, cnonce)) if v == msg::VERSION => accept(inner, id, cnonce),
                Some(_) => Err(code::VERSION),
                None => Err(code::MALFORMED),
            };
            ack(ev);
            if let Err(c) = r {
                let rej = msg::put_reject(c);
                // SAFETY: id is the new connection's id; rejected and destroyed once.
                unsafe {
                    rdma_reject(id, rej.as_ptr().cast(), rej.len() as u8);
                    rdma_destroy_id(id);
                }
            }
        }
        rdma_cm_event_type::RDMA_CM_EVENT_DISCONNECTED
        | rdma_cm_event_type::RDMA_CM_EVENT_TIMEWAIT_EXIT
        | rdma_cm_event_type::RDMA_CM_EVENT_CONNECT_ERROR
        | rdma_cm_event_type::RDMA_CM_EVENT_UNREACHABLE
        | rdma_cm_event_type::RDMA_CM_EVENT_REJECTED => {
            // SAFETY: id is live; context holds the connection number set in accept().
            let conn = unsafe { (*id).context } as u64;
            ack(ev);
            let mut st = inner.lock();
            teardown(&mut st, conn, evs);
        }
        rdma_cm_event_type::RDMA_CM_EVENT_DEVICE_REMOVAL => {
            ack(ev);
            inner.stop.store(true, Ordering::Release);
        }
        _ => ack(ev),
    }
}

/// Create the QP for a connect request and accept it with a server nonce.
fn accept(inner: &Inner, id: *mut rdma_cm_id, cnonce: [u8; 32]) -> Result<(), u32> {
    let mut st = inner.lock();
    if st.conns.len() + st.zombies.len() >= MAX_CONNECTIONS {
        return Err(code::UNAVAILABLE);
    }
    st.next_conn += 1;
    let n = st.next_conn;
    // SAFETY: id is live; the pd belongs to the listen device (same context).
    if unsafe { (*(*id).verbs).device } != unsafe { (*(*inner.pd).context).device } {
        return Err(code::UNAVAILABLE);
    }
    let size = QpSize {
        send_wr: 32,
        send_sge: 1,
    };
    let q = Qp::create(id, inner.pd, inner.comp, n as usize, size, false)
        .map_err(|_| code::UNAVAILABLE)?;
    // SAFETY: recv_cq live; arming notifications for the comp channel.
    unsafe { ibv_req_notify_cq(q.recv_cq, 0) };
    let snonce = auth::nonce().map_err(|_| code::UNAVAILABLE)?;
    let pdata = msg::put_nonce(msg::VERSION, &snonce);
    // SAFETY: zeroed conn param is valid; fields set below.
    let mut p: rdma_conn_param = unsafe { std::mem::zeroed() };
    p.private_data = pdata.as_ptr().cast();
    p.private_data_len = pdata.len() as u8;
    p.responder_resources = inner.responder_resources;
    p.initiator_depth = 1;
    p.rnr_retry_count = 7;
    // SAFETY: id live; context stores the connection number (plain integer).
    unsafe { (*id).context = n as usize as *mut _ };
    // SAFETY: id has its QP; p points to valid data for the call.
    if unsafe { rdma_accept(id, &mut p) } != 0 {
        // Dropping q destroys the QP; the caller rejects and destroys the id.
        drop(q);
        return Err(code::UNAVAILABLE);
    }
    st.conns.insert(
        n,
        Conn {
            qp: q,
            cnonce,
            snonce,
            auth: None,
            closing: false,
            deadline: Instant::now() + AUTH_TIMEOUT,
        },
    );
    Ok(())
}

/// Drain the completion channel and handle RECVs of the connections it names.
fn cq_events(inner: &Inner, evs: &mut Vec<FabricEvent>) {
    loop {
        let mut cq = std::ptr::null_mut();
        let mut ctx = std::ptr::null_mut();
        // SAFETY: comp live and non-blocking; out-pointers valid.
        if unsafe { ibv_get_cq_event(inner.comp, &mut cq, &mut ctx) } != 0 {
            return;
        }
        // SAFETY: cq came from the event; acknowledged immediately (before any destroy).
        unsafe { ibv_ack_cq_events(cq, 1) };
        let conn = ctx as usize as u64;
        let mut st = inner.lock();
        if st.conns.get(&conn).is_none_or(|c| c.qp.recv_cq != cq) {
            continue;
        }
        // SAFETY: re-arm before polling so nothing is missed.
        unsafe { ibv_req_notify_cq(cq, 0) };
        loop {
            let mut wc = super::cm::zero_wc();
            // SAFETY: cq live (its connection is in the table, under the lock).
            if unsafe { ibv_poll_cq(cq, 1, &mut wc) } != 1 {
                break;
            }
            on_recv(&mut st, conn, &wc, evs);
            if !st.conns.contains_key(&conn) {
                break;
            }
        }
    }
}

fn on_recv(st: &mut State, conn: u64, wc: &ibv_wc, evs: &mut Vec<FabricEvent>) {
    let Some(c) = st.conns.get_mut(&conn) else {
        return;
    };
    if wc.status != ibv_wc_status::IBV_WC_SUCCESS || wc.wr_id & TAG_RECV == 0 {
        // The QP is in the error state: a READ was refused (the device NAKed it) or the
        // link went down. Report it once and close.
        if !c.closing {
            c.closing = true;
            c.deadline = Instant::now() + CLOSE_TIMEOUT;
            if let Some((grant, _)) = c.auth {
                evs.push(FabricEvent::AccessError {
                    grant,
                    rkey: 0,
                    reason: format!(
                        "the connection entered the error state ({}): a request was refused or failed",
                        super::status::wc_status_name(wc.status)
                    ),
                });
            }
            // SAFETY: id live.
            unsafe { rdma_disconnect(c.qp.id) };
        }
        return;
    }
    let slot = (wc.wr_id & !TAG_RECV) as usize;
    let m = c.qp.received(slot, wc.byte_len);
    let _ = c.qp.post_recv(slot);
    match (m, c.auth) {
        (Some(Msg::Auth { grant, peer, sig }), None) => {
            authenticate(st, conn, grant, peer, sig, evs)
        }
        (Some(Msg::Commit { grant }), Some((g, peer))) => {
            let status = if grant == g {
                evs.push(FabricEvent::Commit { grant, peer });
                0
            } else {
                1
            };
            let _ = c.qp.send(&Msg::CommitAck { grant, status });
        }
        _ => refuse(
            c,
            code::MALFORMED,
            "unexpected or malformed control message",
        ),
    }
}

fn refuse(c: &mut Conn, code: u32, why: &str) {
    let _ = c.qp.send(&Msg::Error {
        code,
        text: why.into(),
    });
    c.closing = true;
    c.deadline = Instant::now() + CLOSE_TIMEOUT;
    // SAFETY: id live.
    unsafe { rdma_disconnect(c.qp.id) };
}

/// Queue an `AuthFailed` report unless the rate limit suppresses it.
fn auth_failed(
    st: &mut State,
    peer_addr: String,
    claim: Option<([u8; 16], [u8; 32])>,
    reason: &'static str,
    evs: &mut Vec<FabricEvent>,
) {
    let (grant, peer) = claim.map_or((None, None), |(g, p)| (Some(g), Some(p)));
    if let Some(ev) = st.auth_failures.event(peer_addr, grant, peer, reason) {
        evs.push(ev);
    }
}

fn authenticate(
    st: &mut State,
    conn: u64,
    grant: [u8; 16],
    peer: [u8; 32],
    sig: [u8; 64],
    evs: &mut Vec<FabricEvent>,
) {
    let Some(c) = st.conns.get_mut(&conn) else {
        return;
    };
    if !auth::PROOF.verify(&peer, &grant, &c.cnonce, &c.snonce, &sig) {
        let addr = cm::peer_label(c.qp.id);
        refuse(c, code::AUTH, "bad signature");
        return auth_failed(
            st,
            addr,
            Some((grant, peer)),
            FabricEvent::AUTH_BAD_SIGNATURE,
            evs,
        );
    }
    trace!("conn {conn}: signature verified");
    let now = SystemTime::now();
    let rkeys: Vec<u32> = st
        .keys
        .iter()
        .filter(|(_, k)| {
            k.spec.grant == grant && k.spec.peer == peer && !k.expired && k.spec.expires > now
        })
        .map(|(r, _)| *r)
        .collect();
    if rkeys.is_empty() {
        let Some(c) = st.conns.get_mut(&conn) else {
            return;
        };
        let addr = cm::peer_label(c.qp.id);
        refuse(
            c,
            code::AUTH,
            "no live key of this grant is bound to this peer key",
        );
        // The peer is told the same either way; the audit says which.
        let live = st
            .keys
            .values()
            .any(|k| k.spec.grant == grant && !k.expired && k.spec.expires > now);
        let why = if live {
            FabricEvent::AUTH_PEER_KEY_MISMATCH
        } else {
            FabricEvent::AUTH_UNKNOWN_GRANT
        };
        return auth_failed(st, addr, Some((grant, peer)), why, evs);
    }
    for r in rkeys {
        if let Err(e) = bind_key(st, r, conn) {
            if let Some(c) = st.conns.get_mut(&conn) {
                refuse(c, code::UNAVAILABLE, &e.to_string());
            }
            return;
        }
    }
    let Some(c) = st.conns.get_mut(&conn) else {
        return;
    };
    c.auth = Some((grant, peer));
    if c.qp
        .send(&Msg::Welcome {
            max_outstanding: MAX_OUTSTANDING,
        })
        .is_ok()
    {
        evs.push(FabricEvent::Connected { grant, peer });
    }
}

/// How often copied regions check that their target still exists.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Revoke every key of copied regions whose target is gone (exited or execed): the
/// copy must not keep serving a process that no longer exists.
fn watch_targets(st: &mut State) {
    let gone: Vec<u64> = st
        .regions
        .iter()
        .filter(|(_, r)| {
            r.watch
                .as_ref()
                .is_some_and(|w| w.read_exact_at(r.addr, &mut [0u8; 1]).is_err())
        })
        .map(|(id, _)| *id)
        .collect();
    for id in gone {
        if let Some(r) = st.regions.get_mut(&id) {
            r.watch = None;
        }
        let rkeys: Vec<u32> = st
            .keys
            .iter()
            .filter(|(_, k)| k.region == id)
            .map(|(r, _)| *r)
            .collect();
        for r in rkeys {
            if let Some(mut k) = st.keys.remove(&r) {
                destroy_key(st, r, &mut k);
            }
        }
    }
}

/// Expired keys lose their window; set-ups that take too long and closes that never
/// finish are cut.
fn housekeeping(inner: &Inner, evs: &mut Vec<FabricEvent>) {
    let mut st = inner.lock();
    if st.last_watch.elapsed() >= WATCH_EVERY {
        st.last_watch = Instant::now();
        watch_targets(&mut st);
        reap(&mut st);
    }
    let now = SystemTime::now();
    let expired: Vec<u32> = st
        .keys
        .iter()
        .filter(|(_, k)| !k.expired && k.spec.expires <= now)
        .map(|(r, _)| *r)
        .collect();
    for r in expired {
        if let Some(mut k) = st.keys.remove(&r) {
            destroy_key(&mut st, r, &mut k);
            k.expired = true;
            st.keys.insert(r, k);
        }
    }
    let t = Instant::now();
    let late: Vec<(u64, bool)> = st
        .conns
        .iter()
        .filter(|(_, c)| (c.auth.is_none() || c.closing) && c.deadline <= t)
        .map(|(id, c)| (*id, c.closing))
        .collect();
    for (id, closing) in late {
        if closing {
            teardown(&mut st, id, evs);
        } else if let Some(c) = st.conns.get_mut(&id) {
            let addr = cm::peer_label(c.qp.id);
            refuse(c, code::AUTH, "authentication timed out");
            auth_failed(
                &mut st,
                addr,
                None,
                FabricEvent::AUTH_HANDSHAKE_TIMEOUT,
                evs,
            );
        }
    }
}

/// Destroy a connection's QP and cm id; its windows become stale (bound on a dead QP).
pub(crate) fn teardown(st: &mut State, conn: u64, evs: &mut Vec<FabricEvent>) {
    let Some(c) = st.conns.remove(&conn) else {
        return;
    };
    trace!("teardown conn {conn}");
    for k in st.keys.values_mut() {
        if k.bound == Some(conn) {
            k.bound = None;
            k.stale = true;
        }
    }
    if let Some((grant, peer)) = c.auth {
        evs.push(FabricEvent::Disconnected { grant, peer });
    }
    // SAFETY: id live; disconnect is harmless when already disconnected.
    unsafe { rdma_disconnect(c.qp.id) };
    st.zombies.insert(conn, c);
    reap(st);
}

/// Destroy closed connections whose QP no window is bound on any more.
pub(crate) fn reap(st: &mut State) {
    let free: Vec<u64> = st
        .zombies
        .keys()
        .copied()
        .filter(|z| !st.keys.values().any(|k| k.pinned_qp == Some(*z)))
        .collect();
    for z in free {
        if let Some(c) = st.zombies.remove(&z) {
            let id = c.qp.id;
            drop(c);
            trace!("conn {z}: QP destroyed");
            // SAFETY: the QP is destroyed (Qp's drop) and every event of this id was acked.
            unsafe { rdma_destroy_id(id) };
            trace!("conn {z}: id destroyed");
        }
    }
}
