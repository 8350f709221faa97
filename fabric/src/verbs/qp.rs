//! One RC queue pair with its completion queues and a small registered buffer for control
//! messages: creation on an rdma_cm id, RECV slots, synchronous posting of control work
//! (SEND, BIND_MW, LOCAL_INV) and teardown. Used by both the responder and the initiator.

use super::cm::{self, check, last, zero_send_wr, zero_wc};
use super::mem::OwnedMemory;
use super::msg::{Msg, MSG_MAX};
use crate::FabricError;
use rdma_sys::*;
use std::time::{Duration, Instant};

/// RECV buffers kept posted.
pub(crate) const RECV_SLOTS: usize = 8;
/// wr_id tag of RECVs (low bits: the slot).
pub(crate) const TAG_RECV: u64 = 1 << 63;
/// wr_id tag of synchronous control work.
pub(crate) const TAG_CTRL: u64 = 1 << 62;
/// How long a synchronous control request may take.
const CTRL_TIMEOUT: Duration = Duration::from_secs(5);

/// Queue pair resources. Not thread-safe by itself: the owner serialises use.
pub(crate) struct Qp {
    pub(crate) id: *mut rdma_cm_id,
    pub(crate) send_cq: *mut ibv_cq,
    pub(crate) recv_cq: *mut ibv_cq,
    ctrl: OwnedMemory,
    ctrl_mr: *mut ibv_mr,
    next_ctrl: u64,
    /// Completions of the send queue seen while waiting for a control request (the
    /// initiator shares its send queue with READs).
    pub(crate) stray: Vec<ibv_wc>,
}

// SAFETY: raw verbs objects are thread-safe in libibverbs; the owner serialises access to
// this value (it is behind a Mutex or owned by one thread).
unsafe impl Send for Qp {}

/// Sizes of a new queue pair.
pub(crate) struct QpSize {
    pub(crate) send_wr: u32,
    pub(crate) send_sge: u32,
}

impl Qp {
    /// Create CQs and an RC QP on `id` in `pd`. The receive CQ reports to `channel` (if
    /// any) with `cq_context`; the send CQ shares it when `shared_cq` is set.
    pub(crate) fn create(
        id: *mut rdma_cm_id,
        pd: *mut ibv_pd,
        channel: *mut ibv_comp_channel,
        cq_context: usize,
        size: QpSize,
        shared_cq: bool,
    ) -> Result<Qp, FabricError> {
        // SAFETY: id is a live cm id whose device context is set (route resolved or
        // connect request).
        let ctx = unsafe { (*id).verbs };
        let ncqe = (size.send_wr + RECV_SLOTS as u32 + 16) as i32;
        // SAFETY: ctx is live; channel is null or a live channel of the same context.
        let recv_cq = unsafe { ibv_create_cq(ctx, ncqe, cq_context as *mut _, channel, 0) };
        if recv_cq.is_null() {
            return Err(last("ibv_create_cq"));
        }
        let send_cq = if shared_cq {
            recv_cq
        } else {
            // SAFETY: as above, without a channel (polled synchronously).
            let c =
                unsafe { ibv_create_cq(ctx, ncqe, std::ptr::null_mut(), std::ptr::null_mut(), 0) };
            if c.is_null() {
                let e = last("ibv_create_cq");
                // SAFETY: recv_cq was created above and has no QP yet.
                unsafe { ibv_destroy_cq(recv_cq) };
                return Err(e);
            }
            c
        };
        let mut q = Qp {
            id,
            send_cq,
            recv_cq,
            ctrl: OwnedMemory::new((RECV_SLOTS + 1) * MSG_MAX)?,
            ctrl_mr: std::ptr::null_mut(),
            next_ctrl: 0,
            stray: Vec::new(),
        };
        // SAFETY: zeroed init attr is valid; fields set below.
        let mut attr: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        attr.send_cq = send_cq;
        attr.recv_cq = recv_cq;
        attr.qp_type = ibv_qp_type::IBV_QPT_RC;
        attr.cap.max_send_wr = size.send_wr;
        attr.cap.max_recv_wr = RECV_SLOTS as u32;
        attr.cap.max_send_sge = size.send_sge;
        attr.cap.max_recv_sge = 1;
        // SAFETY: id, pd and attr are valid; on failure nothing is attached to id.
        let rc = unsafe { rdma_create_qp(id, pd, &mut attr) };
        if rc != 0 {
            let e = last("rdma_create_qp");
            q.destroy_cqs();
            return Err(e);
        }
        // SAFETY: the ctrl buffer lives as long as q; the MR is deregistered in drop.
        q.ctrl_mr = unsafe {
            ibv_reg_mr(
                pd,
                q.ctrl.as_ptr().cast(),
                (RECV_SLOTS + 1) * MSG_MAX,
                ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0 as i32,
            )
        };
        if q.ctrl_mr.is_null() {
            return Err(last("ibv_reg_mr (control buffer)"));
        }
        for slot in 0..RECV_SLOTS {
            q.post_recv(slot)?;
        }
        Ok(q)
    }

    pub(crate) fn qp(&self) -> *mut ibv_qp {
        // SAFETY: id is live while self is.
        unsafe { (*self.id).qp }
    }

    /// Post (again) the RECV of `slot`.
    pub(crate) fn post_recv(&mut self, slot: usize) -> Result<(), FabricError> {
        // SAFETY: ctrl_mr is registered and live while self is.
        let lkey = unsafe { (*self.ctrl_mr).lkey };
        let mut sge = ibv_sge {
            addr: self.ctrl.as_ptr() as u64 + (slot * MSG_MAX) as u64,
            length: MSG_MAX as u32,
            lkey,
        };
        let mut wr = ibv_recv_wr {
            wr_id: TAG_RECV | slot as u64,
            next: std::ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
        };
        let mut bad = std::ptr::null_mut();
        // SAFETY: wr and sge are valid for the call; the buffer outlives the QP.
        check("ibv_post_recv", unsafe {
            ibv_post_recv(self.qp(), &mut wr, &mut bad)
        })
    }

    /// The message received in `slot` (`len` bytes), if well formed.
    pub(crate) fn received(&mut self, slot: usize, len: u32) -> Option<Msg> {
        let len = (len as usize).min(MSG_MAX);
        let at = slot.checked_mul(MSG_MAX)?;
        let b = self.ctrl.as_mut_slice().get(at..at + len)?;
        Msg::decode(b)
    }

    /// Post one control work request (signaled) and wait for its completion; returns
    /// the completion status. Other send-queue completions seen meanwhile go to `stray`.
    pub(crate) fn post_wait(&mut self, wr: &mut ibv_send_wr) -> Result<u32, FabricError> {
        self.next_ctrl += 1;
        let wr_id = TAG_CTRL | self.next_ctrl;
        wr.wr_id = wr_id;
        wr.send_flags |= ibv_send_flags::IBV_SEND_SIGNALED.0;
        wr.next = std::ptr::null_mut();
        let mut bad = std::ptr::null_mut();
        // SAFETY: wr is fully initialised and every pointer in it is live for the call.
        check("ibv_post_send", unsafe {
            ibv_post_send(self.qp(), wr, &mut bad)
        })?;
        let deadline = Instant::now() + CTRL_TIMEOUT;
        loop {
            let mut wc = zero_wc();
            // SAFETY: send_cq is live; wc is a valid array of one.
            let n = unsafe { ibv_poll_cq(self.send_cq, 1, &mut wc) };
            if n < 0 {
                return Err(FabricError::Verbs("ibv_poll_cq failed".into()));
            }
            if n == 1 {
                if wc.wr_id == wr_id {
                    return Ok(wc.status);
                }
                self.stray.push(wc);
                continue;
            }
            if Instant::now() >= deadline {
                return Err(FabricError::Timeout("a control work request's completion"));
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// SEND one control message and wait until it left.
    pub(crate) fn send(&mut self, m: &Msg) -> Result<(), FabricError> {
        let at = RECV_SLOTS * MSG_MAX;
        let mut buf = [0u8; MSG_MAX];
        let n = m.encode(&mut buf);
        self.ctrl.as_mut_slice()[at..at + n].copy_from_slice(&buf[..n]);
        // SAFETY: ctrl_mr is registered and live while self is.
        let lkey = unsafe { (*self.ctrl_mr).lkey };
        let mut sge = ibv_sge {
            addr: self.ctrl.as_ptr() as u64 + at as u64,
            length: n as u32,
            lkey,
        };
        let mut wr = zero_send_wr();
        wr.opcode = ibv_wr_opcode::IBV_WR_SEND;
        wr.sg_list = &mut sge;
        wr.num_sge = 1;
        match self.post_wait(&mut wr)? {
            ibv_wc_status::IBV_WC_SUCCESS => Ok(()),
            st => Err(FabricError::Verbs(format!(
                "sending a control message: {}",
                super::status::wc_status_name(st)
            ))),
        }
    }

    /// Bind the type-2 window `mw` over `mr`'s `addr..addr+len` with rkey `rkey` on this QP.
    pub(crate) fn bind_mw(
        &mut self,
        mw: *mut ibv_mw,
        mr: *mut ibv_mr,
        addr: u64,
        len: u64,
        access: u32,
        rkey: u32,
    ) -> Result<u32, FabricError> {
        let mut wr = zero_send_wr();
        wr.opcode = ibv_wr_opcode::IBV_WR_BIND_MW;
        wr.bind_mw_tso_union.bind_mw = bind_mw_t {
            mw,
            rkey,
            bind_info: ibv_mw_bind_info {
                mr,
                addr,
                length: len,
                mw_access_flags: access,
            },
        };
        let r = self.post_wait(&mut wr);
        trace!("bind_mw rkey {rkey:#x} addr {addr:#x}+{len} -> {r:?}");
        r
    }

    /// LOCAL_INV of `rkey` posted on this QP.
    pub(crate) fn local_inv(&mut self, rkey: u32) -> Result<u32, FabricError> {
        let mut wr = zero_send_wr();
        wr.opcode = ibv_wr_opcode::IBV_WR_LOCAL_INV;
        wr.imm_data_invalidated_rkey_union.invalidated_rkey = rkey;
        let r = self.post_wait(&mut wr);
        trace!("local_inv rkey {rkey:#x} -> {r:?}");
        r
    }

    fn destroy_cqs(&mut self) {
        if self.send_cq != self.recv_cq && !self.send_cq.is_null() {
            // SAFETY: the QP using it is gone; events on it are acked by the owner.
            unsafe { ibv_destroy_cq(self.send_cq) };
        }
        if !self.recv_cq.is_null() {
            // SAFETY: as above.
            unsafe { ibv_destroy_cq(self.recv_cq) };
        }
        self.send_cq = std::ptr::null_mut();
        self.recv_cq = std::ptr::null_mut();
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        // SAFETY: teardown in dependency order: QP, then its CQs, then the buffer's MR.
        // The cm id itself belongs to the owner.
        unsafe {
            if !(*self.id).qp.is_null() {
                rdma_destroy_qp(self.id);
            }
        }
        trace!("qp: destroyed the QP");
        self.destroy_cqs();
        trace!("qp: destroyed the CQs");
        if !self.ctrl_mr.is_null() {
            // SAFETY: registered in create(), no work request refers to it any more.
            unsafe { ibv_dereg_mr(self.ctrl_mr) };
        }
    }
}

/// Maximum RDMA READs the device lets one QP have in flight (as initiator, responder).
pub(crate) fn rd_atom(ctx: *mut ibv_context) -> (u8, u8) {
    // SAFETY: zeroed device attr is valid as an out-parameter.
    let mut a: ibv_device_attr = unsafe { std::mem::zeroed() };
    // SAFETY: ctx is a live device context.
    if unsafe { ibv_query_device(ctx, &mut a) } != 0 {
        return (1, 1);
    }
    let c = |v: i32| v.clamp(1, 16) as u8;
    (c(a.max_qp_init_rd_atom), c(a.max_qp_rd_atom))
}

/// Whether the device is soft-RoCE (rxe).
pub(crate) fn is_rxe(ctx: *mut ibv_context) -> bool {
    // SAFETY: ctx is a live device context; the name is a static NUL-terminated string of
    // the device, or NULL.
    let name = unsafe { ibv_get_device_name((*ctx).device) };
    if name.is_null() {
        return false;
    }
    // SAFETY: non-null, NUL-terminated, lives as long as the device list entry.
    unsafe { std::ffi::CStr::from_ptr(name) }
        .to_bytes()
        .starts_with(b"rxe")
}

/// Acknowledge and forget an event.
pub(crate) fn ack(ev: *mut rdma_cm_event) {
    // SAFETY: ev came from rdma_get_cm_event and is acked exactly once.
    unsafe { rdma_ack_cm_event(ev) };
}

pub(crate) use cm::private_data;
