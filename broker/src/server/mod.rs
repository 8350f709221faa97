//! The API server: one event loop (epoll) on the main thread serves every API connection,
//! the signalfd, the target pidfds of live grants, lease deadlines and `Wait` timeouts.
//! The fabric responder runs its own threads (accept + one per peer connection, so READs
//! never wait for the loop) and hands its events (commit, connect, access error) to the
//! loop through a queue and an eventfd.
//!
//! Why one loop: admission is a few system calls plus one Ed25519 verification (tens of
//! microseconds); handing a request to another thread costs a cross-CPU wake-up of the
//! same order on a 2-core host, and the grant table then needs no locks. The benchmark
//! (`benches/admission.rs`) measures the result.

mod conn;
mod export;
mod handlers;
mod lifecycle;

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use memgate_fabric::{EventSink, FabricEvent, Responder};
use memgate_proto::GrantId;
use rustix::event::epoll;

use crate::admission::{AdmissionConfig, AdmissionState};
use crate::audit::Audit;
use crate::config::LimitsConfig;
use crate::grants::Registry;
use crate::policy_store::PolicyStore;
use crate::signals;
use crate::systemd::{self, Notifier};

/// Most fabric events queued before the loop drains them; beyond, events are dropped
/// (counted) — commits of authenticated peers cannot be lost this way in practice, since
/// each needs its own authenticated connection.
const MAX_QUEUED_EVENTS: usize = 65_536;

const TAG_SHIFT: u32 = 60;
const TAG_LISTENER: u64 = 1;
const TAG_SIGNAL: u64 = 2;
const TAG_WAKE: u64 = 3;
const TAG_CONN: u64 = 4;
const TAG_PIDFD: u64 = 5;
const ID_MASK: u64 = (1 << TAG_SHIFT) - 1;

fn data(tag: u64, id: u64) -> epoll::EventData {
    epoll::EventData::new_u64(tag << TAG_SHIFT | (id & ID_MASK))
}

/// Why the server could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// An event-loop system call failed.
    #[error("{0}: {1}")]
    Sys(&'static str, #[source] std::io::Error),
}

fn sys(what: &'static str) -> impl Fn(rustix::io::Errno) -> ServerError {
    move |e| ServerError::Sys(what, e.into())
}

/// Fabric events handed from responder threads to the loop.
#[derive(Clone)]
pub struct EventQueue {
    inner: Arc<Mutex<QueueInner>>,
    wake: Arc<OwnedFd>,
}

struct QueueInner {
    events: VecDeque<FabricEvent>,
    dropped: u64,
}

impl EventQueue {
    /// A queue whose pushes wake the loop through a new eventfd.
    pub fn new() -> std::io::Result<EventQueue> {
        let fd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        Ok(EventQueue {
            inner: Arc::new(Mutex::new(QueueInner {
                events: VecDeque::new(),
                dropped: 0,
            })),
            wake: Arc::new(fd),
        })
    }

    /// The sink to give the responder.
    pub fn sink(&self) -> EventSink {
        let q = self.clone();
        Arc::new(move |ev| q.push(ev))
    }

    fn push(&self, ev: FabricEvent) {
        {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if g.events.len() >= MAX_QUEUED_EVENTS {
                g.dropped += 1;
                return;
            }
            g.events.push_back(ev);
        }
        let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
    }

    fn drain(&self) -> (Vec<FabricEvent>, u64) {
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&*self.wake, &mut b);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let dropped = std::mem::take(&mut g.dropped);
        (g.events.drain(..).collect(), dropped)
    }
}

/// Everything the server is built from.
pub struct ServerParts {
    /// Listening API socket (bound or socket-activated).
    pub listener: OwnedFd,
    /// Path to unlink at shutdown (None under socket activation).
    pub socket_path: Option<std::path::PathBuf>,
    /// Signalfd from [`signals::block`].
    pub signals: OwnedFd,
    /// Fabric events.
    pub events: EventQueue,
    /// The fabric responder.
    pub responder: Box<dyn Responder>,
    /// Endpoint written into grants.
    pub endpoint: String,
    /// Policy in force.
    pub policy: PolicyStore,
    /// Audit sink.
    pub audit: Audit,
    /// Broker limits.
    pub limits: LimitsConfig,
    /// systemd notifications.
    pub notifier: Option<Notifier>,
}

/// An API connection.
struct Conn {
    fd: OwnedFd,
    uid: u32,
    gid: u32,
    pid: i32,
    /// A `Wait` in progress: no further request is read until it is answered.
    wait: Option<(GrantId, Instant)>,
}

/// The running broker.
pub struct Server {
    ep: OwnedFd,
    listener: OwnedFd,
    socket_path: Option<std::path::PathBuf>,
    sigfd: OwnedFd,
    events: EventQueue,
    responder: Box<dyn Responder>,
    endpoint: String,
    store: PolicyStore,
    broker_id: String,
    admission: AdmissionState,
    registry: Registry,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    waiters: HashMap<GrantId, Vec<u64>>,
    audit: Audit,
    limits: LimitsConfig,
    notifier: Option<Notifier>,
    started: Instant,
    admitted: u64,
    denied: u64,
    buf: Vec<u8>,
    stop: bool,
}

impl Server {
    /// Builds the server and registers its fds with a new epoll instance.
    pub fn new(p: ServerParts) -> Result<Server, ServerError> {
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(sys("epoll_create"))?;
        rustix::fs::fcntl_setfl(&p.listener, rustix::fs::OFlags::NONBLOCK)
            .map_err(sys("set listener non-blocking"))?;
        epoll::add(
            &ep,
            &p.listener,
            data(TAG_LISTENER, 0),
            epoll::EventFlags::IN,
        )
        .map_err(sys("epoll add listener"))?;
        epoll::add(&ep, &p.signals, data(TAG_SIGNAL, 0), epoll::EventFlags::IN)
            .map_err(sys("epoll add signalfd"))?;
        epoll::add(
            &ep,
            &*p.events.wake,
            data(TAG_WAKE, 0),
            epoll::EventFlags::IN,
        )
        .map_err(sys("epoll add eventfd"))?;
        let admission = AdmissionState::new(AdmissionConfig {
            skew: time::Duration::seconds(p.limits.token_skew_secs.min(3600) as i64),
            replay_capacity: p.limits.replay_capacity,
            max_regions: p.limits.max_regions,
        });
        let broker_id = p.policy.policy().broker.clone();
        Ok(Server {
            ep,
            listener: p.listener,
            socket_path: p.socket_path,
            sigfd: p.signals,
            events: p.events,
            responder: p.responder,
            endpoint: p.endpoint,
            store: p.policy,
            broker_id,
            admission,
            registry: Registry::new(p.limits.tombstones),
            conns: HashMap::new(),
            next_conn: 0,
            waiters: HashMap::new(),
            audit: p.audit,
            buf: vec![0u8; memgate_proto::MAX_MESSAGE],
            limits: p.limits,
            notifier: p.notifier,
            started: Instant::now(),
            admitted: 0,
            denied: 0,
            stop: false,
        })
    }

    /// Serves until SIGTERM/SIGINT, then revokes every grant and closes every connection.
    pub fn run(mut self) -> Result<(), ServerError> {
        systemd::notify(
            self.notifier.as_ref(),
            &format!(
                "READY=1\nSTATUS=serving; policy serial {}",
                self.store.policy().serial
            ),
        );
        let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
        while !self.stop {
            let timeout = self.next_timeout().map(|d| rustix::time::Timespec {
                tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: i64::from(d.subsec_nanos()),
            });
            events.clear();
            match epoll::wait(
                &self.ep,
                rustix::buffer::spare_capacity(&mut events),
                timeout.as_ref(),
            ) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(ServerError::Sys("epoll_wait", e.into())),
            }
            for ev in &events {
                let d = ev.data.u64();
                self.dispatch(d >> TAG_SHIFT, d & ID_MASK, ev.flags);
            }
            self.expire_leases(SystemTime::now());
            self.expire_waits(Instant::now());
        }
        self.shutdown();
        Ok(())
    }

    fn dispatch(&mut self, tag: u64, id: u64, flags: epoll::EventFlags) {
        match tag {
            TAG_LISTENER => self.accept(),
            TAG_SIGNAL => {
                for s in signals::drain(&self.sigfd) {
                    match s {
                        signals::Signal::Hangup => self.reload(),
                        signals::Signal::Terminate => self.stop = true,
                    }
                }
            }
            TAG_WAKE => {
                let (evs, dropped) = self.events.drain();
                if dropped > 0 {
                    tracing::warn!("{dropped} fabric events dropped (queue full)");
                }
                for ev in evs {
                    self.fabric_event(ev);
                }
            }
            TAG_CONN => self.conn_ready(id, flags),
            TAG_PIDFD => {
                if let Some(gid) = self.registry.by_slot(id) {
                    self.end_grant(&gid, crate::grants::EndCause::TargetExit, None);
                }
            }
            _ => {}
        }
    }

    /// Time until the next lease end or `Wait` deadline.
    fn next_timeout(&self) -> Option<Duration> {
        let now_wall = SystemTime::now();
        let lease = self
            .registry
            .next_expiry()
            .map(|t| t.duration_since(now_wall).unwrap_or(Duration::ZERO));
        let now = Instant::now();
        let wait = self
            .conns
            .values()
            .filter_map(|c| c.wait.map(|(_, d)| d.saturating_duration_since(now)))
            .min();
        let next = match (lease, wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Round up to a millisecond so a deadline is never polled in a busy loop.
        next.map(|d| d.max(Duration::from_millis(1)))
    }
}
