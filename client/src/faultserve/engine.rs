//! The fault-server loop: one thread polls the uffd and every connection with poll(2), so a
//! fault is read, requested, received and copied without a cross-thread hand-off. Demand
//! faults go on their own connection as single-page READs and so never queue behind a
//! prefetch chunk; prefetch keeps several large READs in flight over several connections
//! (each received on a thread of its own, so receiving one chunk overlaps copying the
//! previous one), starting near the most recent fault, and copies each chunk in slices,
//! serving faults between slices. Every failure, the first connection's included, ends with
//! the destination unable to read a zero page: pages not yet present are poisoned (any
//! access raises SIGBUS), or where that is impossible the destination is killed, or the
//! caller is told ([`Closed`]) that the restorer must stop it.

use super::layout::Layout;
use super::stats::{Counters, Report};
use crate::transport::{Completion, Connector, ReadFailure, TransportError};
use crate::uffd::{CopyOutcome, Msg, Uffd};
use crate::PAGE;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime};

const PRESENT: u8 = 1;
const DISCARDED: u8 = 2;
const DEMAND: u8 = 4;
const PREFETCH: u8 = 8;
/// A work-request id is `prefetch << PREFETCH_SHIFT | link << LINK_SHIFT | first page`;
/// link 0 is the demand link. The prefetch bit keeps a prefetch READ and a demand READ of
/// the same page apart when both travel on one link.
const LINK_SHIFT: u32 = 48;
const PREFETCH_SHIFT: u32 = 62;
const DEMAND_LINK: usize = 0;
/// The liveness probe's work-request id: on the demand link, beyond every real page.
const PROBE_WR: u64 = (1 << LINK_SHIFT) - 1;
/// How long the demand link may sit idle before a one-page probe READ checks that the
/// grant still works (a revoked or expired grant is otherwise noticed only at the next fault).
const PROBE_IDLE: Duration = Duration::from_secs(1);
/// Demand READs kept in flight at most (below the fabric's per-connection bound). A fault
/// beyond it waits in [`Engine::deferred`]: a fault already satisfied by a prefetch copy
/// can leave its demand READ outstanding, and a source answering the demand connection
/// slowly must not make the fault server overrun the connection's bound.
const DEMAND_MAX_INFLIGHT: usize = 32;

mod links;
mod sched;

use links::{connect_prefetch, Link};

/// Tuning knobs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bytes per prefetch READ.
    pub chunk: usize,
    /// Prefetch READs kept in flight (over all prefetch connections).
    pub depth: usize,
    /// Prefetch connections, each received on a thread of its own (the source serves each
    /// connection on its own thread too).
    pub prefetch_conns: usize,
    /// Largest UFFDIO_COPY issued at once for prefetched data (faults are served between).
    pub copy_slice: usize,
    /// Reconnect attempts after a connection breaks (with doubling backoff from 20 ms).
    pub reconnect_attempts: u32,
    /// The grant's expiry: no reconnects after it.
    pub expires: Option<SystemTime>,
    /// Disable prefetch (demand faults only).
    pub no_prefetch: bool,
    /// What a failed migration does to the destination's missing pages.
    pub on_failure: OnFailure,
}

/// How a failed [`Engine::run`] left the destination.
#[derive(Debug)]
pub enum Closed {
    /// This many missing pages were poisoned: any access raises SIGBUS.
    Poisoned(usize),
    /// The destination exited while its pages were being poisoned (typically killed by
    /// SIGBUS on a page poisoned a moment before).
    DestinationExited,
    /// The destination was killed (SIGKILL). `poison` is why poisoning failed, or `None`
    /// when it was not tried ([`OnFailure::Kill`]).
    Killed {
        /// Why the pages were not poisoned.
        poison: Option<io::Error>,
    },
    /// Neither worked: the destination still runs, and once its userfaultfd is closed a
    /// missing page would read as zeros. Whoever holds the uffd must stop it now.
    Unsafe {
        /// Why the pages were not poisoned (`None`: not tried).
        poison: Option<io::Error>,
        /// Why it was not killed (`None`: no pidfd to kill it by).
        kill: Option<io::Error>,
    },
}

impl Closed {
    /// Whether the destination can no longer read a zero page.
    pub fn is_safe(&self) -> bool {
        !matches!(self, Closed::Unsafe { .. })
    }
}

/// How a failed migration keeps the destination from ever running on a zero page
/// (`memgate fault-serve --on-failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OnFailure {
    /// Poison the missing pages (UFFDIO_POISON, Linux 6.6+): touching one raises SIGBUS.
    /// Where the kernel cannot, kill the destination instead.
    #[default]
    Poison,
    /// Kill the destination at once (SIGKILL through its pidfd); where it cannot, poison.
    Kill,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            chunk: 1 << 20,
            depth: 4,
            prefetch_conns: 2,
            copy_slice: 256 << 10,
            reconnect_attempts: 6,
            expires: None,
            no_prefetch: false,
            on_failure: OnFailure::Poison,
        }
    }
}

/// Why a migration failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A userfaultfd operation failed.
    #[error("userfaultfd {op}: {err}")]
    Uffd {
        /// Which operation.
        op: &'static str,
        /// The OS error.
        err: io::Error,
    },
    /// The connection could not be kept or re-established.
    #[error("connection to the source failed: {0}")]
    Transport(#[from] TransportError),
    /// A READ failed on the remote side (revoked key, source gone).
    #[error("READ of source {addr:#x}+{len} failed: {failure}")]
    Read {
        /// Source address.
        addr: u64,
        /// Length.
        len: u32,
        /// Why.
        failure: ReadFailure,
    },
    /// A completion arrived for nothing we posted, or with the wrong length.
    #[error("bad completion: {0}")]
    BadCompletion(String),
    /// The destination process went away before every page was present.
    #[error("destination process exited with {0} pages still missing")]
    DestinationGone(usize),
}

/// What a finished run looked like.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The report.
    pub report: Report,
}

/// Progress callback: (pages present or discarded, pages total).
pub type Progress<'a> = Box<dyn FnMut(u64, u64) + 'a>;

/// One migration's fault server.
pub struct Engine<'a> {
    uffd: &'a Uffd,
    layout: Layout,
    state: Vec<u8>,
    remaining: usize,
    connector: &'a dyn Connector,
    /// `links[0]` carries demand READs, the others prefetch.
    links: Vec<Link>,
    pollfds: Vec<libc::pollfd>,
    /// Faulted pages (DEMAND set) waiting for room on the demand link.
    deferred: std::collections::VecDeque<usize>,
    fault_start: HashMap<usize, Instant>,
    cursor: usize,
    hint: Option<usize>,
    cfg: Config,
    c: Counters,
    started: Instant,
    watch: Option<OwnedFd>,
    progress: Option<Progress<'a>>,
    completions: Vec<Completion>,
    last_probe: Instant,
    /// After a failed [`Engine::run`] (unless the destination was already gone): what
    /// keeps the destination from reading a zero page.
    pub closed: Option<Closed>,
    /// Userfaultfds of forked children whose missing pages could not be poisoned, kept
    /// open so that those pages block instead of reading as zeros while the engine lives.
    unpoisoned_children: Vec<Uffd>,
    /// Faults outside the grant whose poisoning must wait for a pending event.
    poison_later: Vec<u64>,
}

fn uerr(op: &'static str) -> impl FnOnce(io::Error) -> EngineError {
    move |err| EngineError::Uffd { op, err }
}

impl<'a> Engine<'a> {
    /// Prepares the page table; the links connect when [`Engine::run`] starts, so that a
    /// refused first connection fails closed like any later failure. `watch` is a pidfd
    /// of the destination process (handed-over uffd, see [`super::dest::verify`]), polled
    /// to notice its exit and used to kill it when its pages cannot be poisoned.
    pub fn new(
        uffd: &'a Uffd,
        layout: Layout,
        connector: &'a dyn Connector,
        cfg: Config,
        watch: Option<OwnedFd>,
    ) -> Engine<'a> {
        let total = layout.total();
        Engine {
            uffd,
            layout,
            state: vec![0; total],
            remaining: total,
            connector,
            links: Vec::new(),
            pollfds: Vec::new(),
            deferred: std::collections::VecDeque::new(),
            fault_start: HashMap::new(),
            cursor: 0,
            hint: None,
            cfg,
            c: Counters::default(),
            started: Instant::now(),
            watch,
            progress: None,
            completions: Vec::new(),
            last_probe: Instant::now(),
            closed: None,
            unpoisoned_children: Vec::new(),
            poison_later: Vec::new(),
        }
    }

    /// Installs a progress callback (called at most every 100 ms).
    pub fn set_progress(&mut self, p: Progress<'a>) {
        self.progress = Some(p);
    }

    /// Counters so far.
    pub fn counters(&self) -> &Counters {
        &self.c
    }

    /// Runs until every page is present (then sends COMMIT) or until a failure, after which
    /// the destination is kept off zero pages (see [`Engine::closed`]) before the error is
    /// returned.
    pub fn run(&mut self) -> Result<Outcome, EngineError> {
        let res = self.serve().and_then(|all_present| {
            let committed = match self.links[DEMAND_LINK].conn.as_mut() {
                Some(c) => c.commit().map(|_| true)?,
                None => false,
            };
            Ok(Report::new(
                self.layout.total() as u64,
                &self.c,
                all_present,
                committed,
            ))
        });
        match res {
            Ok(report) => Ok(Outcome { report }),
            Err(e @ EngineError::DestinationGone(_)) => {
                self.closed = self.close_after_exit();
                Err(e)
            }
            Err(e) => {
                self.closed = Some(self.close_failed());
                Err(e)
            }
        }
    }

    /// Report of what happened so far (for failures).
    pub fn report_so_far(&self) -> Report {
        Report::new(
            self.layout.total() as u64,
            &self.c,
            self.started.elapsed(),
            false,
        )
    }

    /// Connects the demand link and, unless prefetch is off, the prefetch links.
    fn connect_links(&mut self) -> Result<(), EngineError> {
        self.links.push(Link {
            conn: Some(self.connector.connect()?),
            inflight: HashMap::new(),
        });
        // A transport whose keys serve one connection per grant (verbs: a type-2 memory
        // window is bound to one queue pair) prefetches on the demand link.
        if !self.cfg.no_prefetch && self.connector.max_connections() != Some(1) {
            for _ in 0..self.cfg.prefetch_conns.max(1) {
                self.links.push(Link {
                    conn: Some(connect_prefetch(self.connector)?),
                    inflight: HashMap::new(),
                });
            }
        }
        Ok(())
    }

    fn serve(&mut self) -> Result<Duration, EngineError> {
        self.started = Instant::now();
        self.connect_links()?;
        let mut last_progress = Instant::now();
        loop {
            self.drain_uffd()?;
            for l in 0..self.links.len() {
                self.pump(l)?;
            }
            self.post_deferred()?;
            if self.remaining == 0
                && self.links[DEMAND_LINK].inflight.is_empty()
                && self.deferred.is_empty()
            {
                let t = self.started.elapsed();
                if let Some(p) = self.progress.as_mut() {
                    p(self.layout.total() as u64, self.layout.total() as u64);
                }
                return Ok(t);
            }
            self.fill_prefetch()?;
            self.probe_if_idle()?;
            let mut fds = std::mem::take(&mut self.pollfds);
            fds.clear();
            fds.push(libc::pollfd {
                fd: self.watch.as_ref().map_or(-1, |w| w.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            });
            fds.push(libc::pollfd {
                fd: self.uffd.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            fds.extend(self.links.iter().map(Link::pollfd));
            // SAFETY: `fds` is a valid, initialised array of `fds.len()` pollfds; negative
            // fds are ignored.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, 100) };
            let gone = fds[0].revents != 0;
            self.pollfds = fds;
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(EngineError::Uffd { op: "poll", err: e });
                }
            }
            if gone {
                // The destination exited; pages it never touched no longer matter.
                self.drain_uffd()?;
                return Err(EngineError::DestinationGone(self.remaining));
            }
            if last_progress.elapsed() >= Duration::from_millis(100) {
                last_progress = Instant::now();
                let done = (self.layout.total() - self.remaining) as u64;
                let total = self.layout.total() as u64;
                if let Some(p) = self.progress.as_mut() {
                    p(done, total);
                }
            }
        }
    }

    fn drain_uffd(&mut self) -> Result<(), EngineError> {
        while let Some(msg) = self.uffd.read_msg().map_err(uerr("read"))? {
            self.on_msg(msg)?;
        }
        for a in std::mem::take(&mut self.poison_later) {
            self.poison_page(a)?;
        }
        Ok(())
    }

    /// Poisons the page at `a`, or, while an event is pending (EAGAIN), queues it for the
    /// end of the next [`Engine::drain_uffd`].
    fn poison_page(&mut self, a: u64) -> Result<(), EngineError> {
        match self.uffd.poison(a, PAGE as u64) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                self.poison_later.push(a);
                Ok(())
            }
            Err(err) => Err(EngineError::Uffd { op: "poison", err }),
        }
    }

    fn on_msg(&mut self, msg: Msg) -> Result<(), EngineError> {
        match msg {
            Msg::PageFault { addr, .. } => {
                self.c.faults += 1;
                let a = addr & !(PAGE as u64 - 1);
                let Some(p) = self.layout.page_at(a) else {
                    // Registered but not part of the grant: nothing can fill it; fail
                    // closed for that page only.
                    tracing::warn!("fault at {addr:#x} outside the grant; poisoning it");
                    return self.poison_page(a);
                };
                let s = self.state[p];
                if s & PRESENT != 0 {
                    self.uffd.wake(a, PAGE as u64).map_err(uerr("wake"))?;
                } else if s & DISCARDED != 0 {
                    match self.uffd.zeropage(a, PAGE as u64) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                            self.uffd.wake(a, PAGE as u64).map_err(uerr("wake"))?
                        }
                        Err(e) => {
                            return Err(EngineError::Uffd {
                                op: "zeropage",
                                err: e,
                            })
                        }
                    }
                } else if s & DEMAND == 0 {
                    self.state[p] |= DEMAND;
                    self.fault_start.insert(p, Instant::now());
                    self.hint = Some(p + 1);
                    if self.demand_inflight() < DEMAND_MAX_INFLIGHT {
                        self.post(DEMAND_LINK, p, 1, false)?;
                    } else {
                        self.deferred.push_back(p);
                    }
                }
            }
            Msg::Remove { start, end } | Msg::Unmap { start, end } => {
                for r in self.layout.pages_in(start, end) {
                    for p in r {
                        self.discard(p);
                    }
                }
            }
            Msg::Remap { from, to, len } => self.layout.remap(from, to, len),
            Msg::Fork { ufd } => {
                // The child's copy of the missing pages cannot be served by this grant's
                // single-process page table: fail closed for the child (its missing pages
                // raise SIGBUS) and keep serving the parent.
                tracing::warn!("destination forked; the child's missing pages are poisoned");
                // SAFETY: the kernel installed `ufd` in our fd table for us with the FORK
                // event; nothing else owns it.
                let child = Uffd::from_fd(unsafe { std::os::fd::FromRawFd::from_raw_fd(ufd) }, 0);
                let mut unsafe_pages = 0;
                for (a, n) in self.missing_runs() {
                    if child.poison(a, (n * PAGE) as u64).is_err() {
                        unsafe_pages += n;
                    }
                }
                if unsafe_pages > 0 {
                    // Kernels before 6.6: keep the child's uffd open, so that its faults
                    // block (rather than map zero pages) for as long as this server runs.
                    tracing::error!(
                        "destination forked and {unsafe_pages} of the child's missing pages \
                         could not be poisoned (no UFFDIO_POISON before Linux 6.6): they block \
                         while this fault server runs and would read as zeros after it exits"
                    );
                    self.unpoisoned_children.push(child);
                }
            }
            Msg::Unknown(e) => tracing::warn!("unknown userfaultfd event {e:#x}"),
        }
        Ok(())
    }

    fn on_completion(&mut self, comp: Completion) -> Result<(), EngineError> {
        let link_no = ((comp.wr_id & !(1 << PREFETCH_SHIFT)) >> LINK_SHIFT) as usize;
        let prefetch = comp.wr_id & (1 << PREFETCH_SHIFT) != 0;
        let Some(link) = self.links.get_mut(link_no) else {
            return Err(EngineError::BadCompletion(format!(
                "unknown wr_id {:#x}",
                comp.wr_id
            )));
        };
        let Some(p) = link.inflight.remove(&comp.wr_id) else {
            return Err(EngineError::BadCompletion(format!(
                "unknown wr_id {:#x}",
                comp.wr_id
            )));
        };
        let payload = match comp.result {
            Ok(d) => d,
            Err(ReadFailure::Flushed) => {
                // Re-post on a fresh connection.
                link.inflight.insert(comp.wr_id, p);
                link.conn = None;
                return self.reconnect(link_no, TransportError::Lost("READ flushed".into()));
            }
            Err(failure) => {
                return Err(EngineError::Read {
                    addr: p.src,
                    len: p.len,
                    failure,
                })
            }
        };
        if comp.wr_id == PROBE_WR {
            // The grant still works; the probe's bytes are not needed.
            return Ok(());
        }
        let data: &[u8] = (*payload).as_ref();
        if data.len() != p.len as usize {
            return Err(EngineError::BadCompletion(format!(
                "READ of {} bytes returned {}",
                p.len,
                data.len()
            )));
        }
        self.c.bytes_received += data.len() as u64;
        if prefetch {
            for s in &mut self.state[p.page..p.page + p.pages] {
                *s &= !PREFETCH;
            }
            self.fill(p.page, p.pages, data, true)
        } else {
            self.state[p.page] &= !DEMAND;
            self.fill(p.page, 1, data, false)
        }
    }

    /// Copies `data` (pages `page..page+pages`) into every page still missing, in slices,
    /// serving faults between slices when `prefetch`.
    fn fill(
        &mut self,
        page: usize,
        pages: usize,
        data: &[u8],
        prefetch: bool,
    ) -> Result<(), EngineError> {
        let mut max_slice = (self.cfg.copy_slice / PAGE).max(1);
        let mut i = 0;
        while i < pages {
            let p = page + i;
            if self.state[p] & (PRESENT | DISCARDED) != 0 {
                if !prefetch {
                    self.finish_fault(p, false);
                    if let Some((a, _)) = self.layout.dst_of(p) {
                        self.uffd.wake(a, PAGE as u64).map_err(uerr("wake"))?;
                    }
                }
                i += 1;
                continue;
            }
            let Some((dst, contiguous)) = self.layout.dst_of(p) else {
                i += 1;
                continue;
            };
            let mut n = 1;
            while n < max_slice
                && n < contiguous
                && i + n < pages
                && self.state[p + n] & (PRESENT | DISCARDED) == 0
            {
                n += 1;
            }
            let bytes = &data[i * PAGE..(i + n) * PAGE];
            // `skip`: the page after the copied part already exists (count it present,
            // move past it); on EAGAIN the same page is retried after reading events.
            let (done, skip) = match self.uffd.copy(dst, bytes, true).map_err(uerr("copy"))? {
                CopyOutcome::Done => (n, 0),
                CopyOutcome::Exists { copied } => {
                    let k = copied as usize / PAGE;
                    self.mark_present(p + k, prefetch, false);
                    (k, 1)
                }
                CopyOutcome::Again { copied } => {
                    self.drain_uffd()?;
                    (copied as usize / PAGE, 0)
                }
                CopyOutcome::Gone => return Err(EngineError::DestinationGone(self.remaining)),
                CopyOutcome::NoMapping { copied } if n > 1 => {
                    // The slice crosses a mapping boundary (the process split a mapping):
                    // go on one page at a time.
                    max_slice = 1;
                    (copied as usize / PAGE, 0)
                }
                CopyOutcome::NoMapping { .. } => {
                    // One page in no registered mapping. A pending UNMAP/REMAP event may
                    // explain it: read events and retry; otherwise the process unregistered
                    // it, and it is no longer this uffd's to fill.
                    self.drain_uffd()?;
                    if self.state[p] & DISCARDED == 0
                        && self.layout.dst_of(p).map(|d| d.0) == Some(dst)
                    {
                        tracing::warn!("page at {dst:#x} is no longer registered; skipping it");
                        self.discard(p);
                    }
                    (0, 0)
                }
            };
            for k in 0..done {
                self.mark_present(p + k, prefetch, true);
            }
            i += done + skip;
            if prefetch && i < pages {
                // Keep demand faults moving while a large chunk is copied.
                self.drain_uffd()?;
                self.pump(DEMAND_LINK)?;
            }
        }
        Ok(())
    }

    /// Page `p` is no longer wanted (the process discarded or unregistered it).
    fn discard(&mut self, p: usize) {
        if self.state[p] & (PRESENT | DISCARDED) == 0 {
            self.remaining -= 1;
            self.c.pages_discarded += 1;
        }
        self.state[p] = (self.state[p] & !PRESENT) | DISCARDED;
    }

    fn mark_present(&mut self, p: usize, prefetch: bool, counted: bool) {
        if self.state[p] & (PRESENT | DISCARDED) != 0 {
            return;
        }
        self.state[p] |= PRESENT;
        self.remaining -= 1;
        if counted {
            if prefetch {
                self.c.pages_prefetched += 1;
            } else {
                self.c.pages_on_demand += 1;
            }
        }
        self.finish_fault(p, false);
    }

    fn finish_fault(&mut self, p: usize, _wake: bool) {
        if let Some(t) = self.fault_start.remove(&p) {
            self.c.fault_ns.push(t.elapsed().as_nanos() as u64);
        }
    }
}
