//! The verbs initiator connection (set-up is in `setup.rs`): posts RDMA READs (one work
//! request per segment, landing in a pooled buffer registered for the READ), maps their
//! completions, in order, to fabric completions, and sends COMMIT.

use super::cm::{self, Channel};
use super::msg::Msg;
use super::qp::{Qp, TAG_CTRL, TAG_RECV};
use super::status::wc_status;
use crate::buf::{Buf, Pool};
use crate::connection::Ledger;
use crate::{Completion, FabricError, WcStatus};
use rdma_sys::*;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest sleep between direct polls of the completion queue while waiting.
const RECHECK: Duration = Duration::from_millis(50);

/// One posted READ (possibly several work requests, one per segment).
pub(super) struct Pending {
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
    pub(super) qp: Option<Qp>,
    pub(super) comp: *mut ibv_comp_channel,
    pub(super) pd: *mut ibv_pd,
    pub(super) id: *mut rdma_cm_id,
    pub(super) _channel: Channel,
    pub(super) pending: VecDeque<Pending>,
    pub(super) ledger: Ledger,
    pub(super) pool: Arc<Pool>,
    pub(super) commit_ack: Option<u32>,
    /// The grant of the COMMIT awaiting its acknowledgement.
    pub(super) committing: Option<[u8; 16]>,
    pub(super) armed: bool,
}

// SAFETY: the verbs handles are owned by this value and used from one thread at a time
// (&mut self).
unsafe impl Send for VerbsConnection {}

impl VerbsConnection {
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
        let total = crate::connection::sg_total(segs)?;
        if !self.ledger.admit(self.pending.len(), wr_id, total)? {
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
            self.ledger.error = true;
        }
        Ok(())
    }

    fn dispatch(&mut self, wc: &ibv_wc) {
        if wc.wr_id & TAG_RECV != 0 {
            let Some(q) = self.qp.as_mut() else { return };
            if wc.status != ibv_wc_status::IBV_WC_SUCCESS {
                self.ledger.error = true;
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
            self.ledger.error = true;
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
        let status = if self.ledger.error && p.status == WcStatus::Success {
            WcStatus::Flushed
        } else {
            p.status
        };
        let data = if status == WcStatus::Success {
            p.buf
        } else {
            Buf::empty()
        };
        self.ledger.ready.push_back(Completion {
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
        Ok(self.ledger.drain_into(out))
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
            // Wake at least every RECHECK to poll the CQ directly: a completion whose
            // notification was lost must not stall the caller until its deadline.
            let slice = Instant::now() + RECHECK;
            let until = deadline.map_or(slice, |d| d.min(slice));
            if !cm::poll_in(fd, Some(until))? {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return self.poll_completions(out);
                }
                self.armed = false;
                continue;
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
        if self.ledger.error {
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
                None if self.ledger.error => return Err(FabricError::ErrorState),
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
