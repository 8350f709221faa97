//! The verbs responder: a protection domain on the device that owns the listen address,
//! regions (a registered copy in memory the broker owns, or target memory registered by
//! pidfd), one exact-range memory region plus one type-2 memory window per restricted
//! key, and the connections whose queue pairs the windows are bound on.

use super::cm::{self, last, Channel};
use super::keys::{bind_key, destroy_key, make_key};
use super::mem::OwnedMemory;
use super::qp::Qp;
use super::{pidfd, serve};
use crate::{
    Access, Endpoint, EventSink, FabricError, FabricEvent, KeySpec, MemorySource, Region,
    Responder, Target,
};
use rdma_sys::*;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Chunk size when copying a target range into broker-owned memory.
const COPY_CHUNK: usize = 1 << 20;
/// The page size (the kernel's rule: a region's address and IOVA share their page offset).
fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

pub(crate) enum Backing {
    /// A copy of the target range in memory the broker owns (ordinary ibv_reg_mr). The
    /// copy starts `.1` bytes into the mapping, the target address's offset in its page:
    /// the kernel requires a region's address and IOVA to share their page offset.
    Copy(OwnedMemory, usize),
    /// The target itself, registered through its pidfd (patched kernel + libibverbs).
    Pidfd(OwnedFd),
}

pub(crate) struct RegionEntry {
    pub(crate) addr: u64,
    pub(crate) len: u64,
    pub(crate) access: Access,
    pub(crate) backing: Backing,
    /// The source a copy was taken from: probed so that the target's exit revokes the
    /// region's keys (a copy must not outlive the process it mirrors).
    pub(crate) watch: Option<Arc<dyn MemorySource>>,
}

/// One restricted key: its exact-range MR and type-2 window.
pub(crate) struct KeyEntry {
    pub(crate) region: u64,
    pub(crate) spec: KeySpec,
    pub(crate) mr: *mut ibv_mr,
    pub(crate) mw: *mut ibv_mw,
    /// Connection whose QP the window is bound on.
    pub(crate) bound: Option<u64>,
    /// Bound on a QP that is gone: invalidate before binding again.
    pub(crate) stale: bool,
    /// The connection (live or zombie) whose QP the window currently holds: rxe cannot
    /// destroy a QP while a window is bound on it, so that QP is kept until the window is
    /// invalidated or freed.
    pub(crate) pinned_qp: Option<u64>,
    /// Expired: window invalidated, kept only so `revoke` still finds it.
    pub(crate) expired: bool,
}

/// Connection state on the responder side.
pub(crate) struct Conn {
    pub(crate) qp: Qp,
    pub(crate) cnonce: [u8; 32],
    pub(crate) snonce: [u8; 32],
    pub(crate) auth: Option<([u8; 16], [u8; 32])>,
    pub(crate) closing: bool,
    pub(crate) deadline: std::time::Instant,
}

/// Most `AuthFailed` events reported per second (as the soft provider's default).
const AUTH_FAILURES_PER_SEC: u32 = 10;

pub(crate) struct State {
    pub(crate) regions: HashMap<u64, RegionEntry>,
    pub(crate) keys: HashMap<u32, KeyEntry>,
    pub(crate) conns: HashMap<u64, Conn>,
    /// Closed connections whose QP still holds a bound window.
    pub(crate) zombies: HashMap<u64, Conn>,
    pub(crate) next_region: u64,
    pub(crate) next_conn: u64,
    pub(crate) last_watch: std::time::Instant,
    /// Rate limit of `AuthFailed` reports.
    pub(crate) auth_failures: crate::soft::authlog::AuthFailLimiter,
}

impl Default for State {
    fn default() -> State {
        State {
            regions: HashMap::new(),
            keys: HashMap::new(),
            conns: HashMap::new(),
            zombies: HashMap::new(),
            next_region: 0,
            next_conn: 0,
            last_watch: std::time::Instant::now(),
            auth_failures: crate::soft::authlog::AuthFailLimiter::new(AUTH_FAILURES_PER_SEC),
        }
    }
}

// SAFETY: the raw verbs handles in State are only used under the State mutex.
unsafe impl Send for State {}

pub(crate) struct Inner {
    pub(crate) channel: Channel,
    pub(crate) listen: *mut rdma_cm_id,
    pub(crate) pd: *mut ibv_pd,
    pub(crate) comp: *mut ibv_comp_channel,
    pub(crate) events: EventSink,
    pub(crate) state: Mutex<State>,
    pub(crate) stop: AtomicBool,
    pub(crate) responder_resources: u8,
}

// SAFETY: the verbs handles are thread-safe objects of libibverbs/librdmacm; mutable state
// is behind `state`.
unsafe impl Send for Inner {}
// SAFETY: see Send.
unsafe impl Sync for Inner {}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Verbs-provider responder (see the module docs of [`crate::verbs`]).
pub struct VerbsResponder {
    inner: Arc<Inner>,
    endpoint: Endpoint,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// [`Responder::register_target`] registers the target itself by pidfd.
    by_pidfd: bool,
}

impl VerbsResponder {
    /// Like [`VerbsResponder::bind`], but admitted targets ([`Responder::register_target`])
    /// are registered in place through their pidfd instead of as a copy. Fails at once
    /// when the loaded libibverbs lacks `ibv_reg_mr_pidfd`, before touching the device.
    pub fn bind_pidfd(listen: &Endpoint, events: EventSink) -> Result<VerbsResponder, FabricError> {
        pidfd::reg_mr_pidfd()?;
        let mut r = VerbsResponder::bind(listen, events)?;
        r.by_pidfd = true;
        Ok(r)
    }

    /// Whether targets are registered in place by pidfd ([`VerbsResponder::bind_pidfd`]).
    pub fn registers_by_pidfd(&self) -> bool {
        self.by_pidfd
    }

    /// Listen on `listen` (`rdma:IP:PORT`, the IP of an RDMA device; port 0 picks one).
    /// Targets are registered as copies in memory the broker owns.
    pub fn bind(listen: &Endpoint, events: EventSink) -> Result<VerbsResponder, FabricError> {
        let (addr, channel, id) = cm::open_id(listen)?;
        let fail = |id: *mut rdma_cm_id, e: FabricError| {
            // SAFETY: id was created above and has no QP.
            unsafe { rdma_destroy_id(id) };
            e
        };
        let mut sa = cm::sockaddr(&addr);
        // SAFETY: id live; sa is a valid sockaddr for the call.
        if unsafe { rdma_bind_addr(id, (&mut sa as *mut libc::sockaddr_storage).cast()) } != 0 {
            let e = std::io::Error::last_os_error();
            if cm::is_no_device_errno(e.raw_os_error().unwrap_or(0)) {
                return Err(fail(
                    id,
                    cm::no_device(format!("no RDMA device has the address {addr}: {e}")),
                ));
            }
            return Err(fail(id, cm::verbs_err("rdma_bind_addr", e)));
        }
        // SAFETY: id live.
        let ctx = unsafe { (*id).verbs };
        if ctx.is_null() {
            return Err(fail(
                id,
                FabricError::BadEndpoint(format!(
                    "{listen}: bind the verbs responder to the IP address of an RDMA device, not a wildcard"
                )),
            ));
        }
        // SAFETY: id live and bound.
        if unsafe { rdma_listen(id, 64) } != 0 {
            return Err(fail(id, last("rdma_listen")));
        }
        // SAFETY: id live and bound.
        let port = u16::from_be(unsafe { rdma_get_src_port(id) });
        // SAFETY: ctx is the device context of the bound id.
        let pd = unsafe { ibv_alloc_pd(ctx) };
        if pd.is_null() {
            return Err(fail(id, last("ibv_alloc_pd")));
        }
        // SAFETY: ctx live.
        let comp = unsafe { ibv_create_comp_channel(ctx) };
        if comp.is_null() {
            let e = last("ibv_create_comp_channel");
            // SAFETY: pd unused so far.
            unsafe { ibv_dealloc_pd(pd) };
            return Err(fail(id, e));
        }
        // SAFETY: comp is live.
        cm::set_nonblocking(unsafe { (*comp).fd })?;
        let (_, responder_resources) = super::qp::rd_atom(ctx);
        let inner = Arc::new(Inner {
            channel,
            listen: id,
            pd,
            comp,
            events,
            state: Mutex::new(State::default()),
            stop: AtomicBool::new(false),
            responder_resources,
        });
        let endpoint = Endpoint::Rdma(std::net::SocketAddr::new(addr.ip(), port));
        let i2 = inner.clone();
        let thread = std::thread::Builder::new()
            .name("fabric-verbs".into())
            .spawn(move || serve::run(&i2))
            .map_err(|e| FabricError::io("spawn the verbs service thread for", listen, e))?;
        Ok(VerbsResponder {
            inner,
            endpoint,
            thread: Mutex::new(Some(thread)),
            by_pidfd: false,
        })
    }

    /// Register `addr..addr+len` of the process behind `pidfd` directly (no copy), through
    /// the patched libibverbs' `ibv_reg_mr_pidfd`. Keys of such a region are read-only.
    pub fn register_pidfd(
        &self,
        pidfd: OwnedFd,
        addr: u64,
        len: u64,
    ) -> Result<Region, FabricError> {
        pidfd::reg_mr_pidfd()?;
        check_range(addr, len)?;
        Ok(self.add_region(addr, len, Access::REMOTE_READ, Backing::Pidfd(pidfd), None))
    }

    fn add_region(
        &self,
        addr: u64,
        len: u64,
        access: Access,
        backing: Backing,
        watch: Option<Arc<dyn MemorySource>>,
    ) -> Region {
        let mut st = self.inner.lock();
        st.next_region += 1;
        let id = st.next_region;
        st.regions.insert(
            id,
            RegionEntry {
                addr,
                len,
                access,
                backing,
                watch,
            },
        );
        Region {
            id,
            addr,
            len,
            access,
        }
    }
}

fn check_range(addr: u64, len: u64) -> Result<(), FabricError> {
    if len == 0 || addr.checked_add(len).is_none() || usize::try_from(len).is_err() {
        return Err(FabricError::BadRange { addr, len });
    }
    Ok(())
}

impl Responder for VerbsResponder {
    fn endpoint(&self) -> String {
        self.endpoint.to_string()
    }

    /// Copies the range into memory the broker owns and registers that copy with an
    /// ordinary `ibv_reg_mr` at the target's addresses (IOVA = target address). Use
    /// [`VerbsResponder::register_pidfd`] to register the target itself.
    fn register(
        &self,
        source: Arc<dyn MemorySource>,
        addr: u64,
        len: u64,
    ) -> Result<Region, FabricError> {
        check_range(addr, len)?;
        let skew = (addr % page_size()) as usize;
        let mut mem = OwnedMemory::new(len as usize + skew)?;
        let buf = &mut mem.as_mut_slice()[skew..];
        let mut off = 0usize;
        while off < len as usize {
            let n = COPY_CHUNK.min(len as usize - off);
            source
                .read_exact_at(addr + off as u64, &mut buf[off..off + n])
                .map_err(|e| {
                    FabricError::Verbs(format!("copying the target range for registration: {e}"))
                })?;
            off += n;
        }
        // Writes to a copy would never reach the target, but the fabric has no WRITE
        // operation; the region mirrors the source's access so key checks match soft.
        let access = Access::of_source(&*source);
        Ok(self.add_region(addr, len, access, Backing::Copy(mem, skew), Some(source)))
    }

    /// With [`VerbsResponder::bind_pidfd`], the target's own pages, registered by the
    /// kernel only if this process may ptrace it (read-only keys); otherwise a copy.
    fn register_target(
        &self,
        target: &Target<'_>,
        addr: u64,
        len: u64,
    ) -> Result<Region, FabricError> {
        if !self.by_pidfd {
            return self.register(target.source.clone(), addr, len);
        }
        check_range(addr, len)?;
        let fd = target
            .pidfd
            .try_clone_to_owned()
            .map_err(|e| FabricError::Verbs(format!("duplicating the target's pidfd: {e}")))?;
        Ok(self.add_region(
            addr,
            len,
            Access::REMOTE_READ,
            Backing::Pidfd(fd),
            Some(target.source.clone()),
        ))
    }

    fn create_key(&self, region: &Region, spec: KeySpec) -> Result<u32, FabricError> {
        let mut st = self.inner.lock();
        let r = st
            .regions
            .get(&region.id)
            .ok_or(FabricError::UnknownRegion)?;
        spec.admissible(r.addr, r.len, r.access)?;
        let (mr, mw) = make_key(self.inner.pd, r, &spec)?;
        // SAFETY: mw live; the 8-bit key is advanced for the first bind, as the spec says.
        let rkey = unsafe { ibv_inc_rkey((*mw).rkey) };
        let live = st
            .conns
            .iter()
            .find(|(_, c)| !c.closing && c.auth == Some((spec.grant, spec.peer)))
            .map(|(id, _)| *id);
        st.keys.insert(
            rkey,
            KeyEntry {
                region: region.id,
                spec,
                mr,
                mw,
                bound: None,
                stale: false,
                pinned_qp: None,
                expired: false,
            },
        );
        if let Some(conn) = live {
            bind_key(&mut st, rkey, conn)?;
        }
        Ok(rkey)
    }

    fn revoke(&self, rkey: u32) -> Result<(), FabricError> {
        let mut st = self.inner.lock();
        let mut k = st.keys.remove(&rkey).ok_or(FabricError::UnknownKey(rkey))?;
        destroy_key(&mut st, rkey, &mut k);
        Ok(())
    }

    fn revoke_grant(&self, grant: [u8; 16]) -> usize {
        let mut st = self.inner.lock();
        let rkeys: Vec<u32> = st
            .keys
            .iter()
            .filter(|(_, k)| k.spec.grant == grant)
            .map(|(r, _)| *r)
            .collect();
        for r in &rkeys {
            if let Some(mut k) = st.keys.remove(r) {
                destroy_key(&mut st, *r, &mut k);
            }
        }
        rkeys.len()
    }

    fn deregister(&self, region: Region) -> Result<(), FabricError> {
        let mut st = self.inner.lock();
        if !st.regions.contains_key(&region.id) {
            return Err(FabricError::UnknownRegion);
        }
        let rkeys: Vec<u32> = st
            .keys
            .iter()
            .filter(|(_, k)| k.region == region.id)
            .map(|(r, _)| *r)
            .collect();
        for r in rkeys {
            if let Some(mut k) = st.keys.remove(&r) {
                destroy_key(&mut st, r, &mut k);
            }
        }
        st.regions.remove(&region.id);
        Ok(())
    }

    fn shutdown(&self) {
        if self.inner.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(h) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = h.join();
        }
        let mut st = self.inner.lock();
        let ids: Vec<u64> = st.conns.keys().copied().collect();
        let mut evs = Vec::new();
        for id in ids {
            serve::teardown(&mut st, id, &mut evs);
        }
        drop(st);
        for e in evs {
            (self.inner.events)(e);
        }
    }
}

impl Drop for VerbsResponder {
    fn drop(&mut self) {
        trace!("responder: drop");
        self.shutdown();
        trace!("responder: shut down");
        let mut st = self.inner.lock();
        let rkeys: Vec<u32> = st.keys.keys().copied().collect();
        for r in rkeys {
            if let Some(mut k) = st.keys.remove(&r) {
                destroy_key(&mut st, r, &mut k);
            }
        }
        st.regions.clear();
        serve::reap(&mut st);
        drop(st);
        trace!("responder: keys freed");
        // SAFETY: every QP, MR and window of this PD is gone; the comp channel has no CQs
        // left; the listen id has no QP. Destroyed in dependency order, exactly once.
        unsafe {
            ibv_destroy_comp_channel(self.inner.comp);
            ibv_dealloc_pd(self.inner.pd);
            rdma_destroy_id(self.inner.listen);
        }
    }
}

/// Emit events collected under the lock.
pub(crate) fn emit(inner: &Inner, evs: Vec<FabricEvent>) {
    for e in evs {
        (inner.events)(e);
    }
}
