//! The soft responder: a listening socket, an accept thread and one thread per
//! connection (each reads requests, preads target memory and writes replies itself —
//! no cross-thread hand-off on the READ path).

use super::authlog::AuthFailLimiter;
use super::serve;
use super::stream::{PeerTag, Stream};
use super::table::Table;
use crate::{Endpoint, EventSink, FabricError, KeySpec, MemorySource, Region, Responder};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Most simultaneous connections by default; more are refused with an ERROR frame.
pub const MAX_CONNECTIONS: usize = 256;

/// Per-responder bounds on what one peer may make it do. The defaults suit the broker;
/// tests shorten the timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftLimits {
    /// Most READs a peer may have outstanding (announced in WELCOME); a peer that sends
    /// more before it could have seen the replies is cut off.
    pub max_outstanding: u32,
    /// The whole handshake (HELLO to AUTH) must arrive within this.
    pub handshake_timeout: Duration,
    /// A batch of replies must be taken by the peer within this (slow-reader bound).
    pub write_timeout: Duration,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// Most connections still in set-up from one peer (TCP: one IP address; Unix: one
    /// uid), so one host cannot hold every slot with connections that never authenticate.
    pub max_handshakes_per_peer: usize,
    /// Most [`FabricEvent::AuthFailed`](crate::FabricEvent::AuthFailed) reported per
    /// second; further failures are counted into the next report's `suppressed`.
    pub auth_failures_per_sec: u32,
}

impl Default for SoftLimits {
    fn default() -> Self {
        SoftLimits {
            max_outstanding: 256,
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_connections: MAX_CONNECTIONS,
            max_handshakes_per_peer: 16,
            auth_failures_per_sec: 10,
        }
    }
}

/// State shared by the responder handle, its accept thread and connection threads.
pub(crate) struct Shared {
    pub(crate) table: Table,
    pub(crate) events: EventSink,
    pub(crate) stop: AtomicBool,
    pub(crate) limits: SoftLimits,
    pub(crate) auth_failures: AuthFailLimiter,
    conns: Mutex<HashMap<u64, Stream>>,
    /// Connections in set-up per peer.
    pending: Mutex<HashMap<PeerTag, usize>>,
    next_conn: AtomicU64,
}

/// Counts one connection in set-up against its peer until dropped.
pub(crate) struct PendingGuard {
    shared: Arc<Shared>,
    tag: PeerTag,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut p = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = p.get_mut(&self.tag) {
            *n -= 1;
            if *n == 0 {
                p.remove(&self.tag);
            }
        }
    }
}

impl Shared {
    /// Admit one more connection in set-up from `tag`, within the per-peer bound.
    fn begin_handshake(self: &Arc<Self>, tag: PeerTag) -> Option<PendingGuard> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let n = p.entry(tag).or_insert(0);
        if *n >= self.limits.max_handshakes_per_peer {
            return None;
        }
        *n += 1;
        Some(PendingGuard {
            shared: self.clone(),
            tag,
        })
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// Soft-provider responder (see the module docs of [`crate::soft`]).
pub struct SoftResponder {
    shared: Arc<Shared>,
    endpoint: Endpoint,
    accept: Mutex<Option<JoinHandle<()>>>,
}

fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            // A socket left by a crashed responder: nobody answers on it, so replace it.
            let is_sock = std::fs::symlink_metadata(path)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false);
            if is_sock && UnixStream::connect(path).is_err() {
                std::fs::remove_file(path)?;
                UnixListener::bind(path)
            } else {
                Err(e)
            }
        }
        r => r,
    }
}

impl SoftResponder {
    /// Listen on `listen` (`tcp:IP:PORT`, port 0 picks one, or `unix:PATH`); events go to
    /// `events`. Default [`SoftLimits`].
    pub fn bind(listen: &Endpoint, events: EventSink) -> Result<SoftResponder, FabricError> {
        SoftResponder::bind_with(listen, events, SoftLimits::default())
    }

    /// Like [`bind`](Self::bind) with explicit limits.
    pub fn bind_with(
        listen: &Endpoint,
        events: EventSink,
        limits: SoftLimits,
    ) -> Result<SoftResponder, FabricError> {
        let (listener, endpoint) = match listen {
            Endpoint::Tcp(a) => {
                let l = TcpListener::bind(a).map_err(|e| FabricError::io("bind", listen, e))?;
                let actual = l
                    .local_addr()
                    .map_err(|e| FabricError::io("bind", listen, e))?;
                (Listener::Tcp(l), Endpoint::Tcp(actual))
            }
            Endpoint::Unix(p) => {
                let l = bind_unix(p).map_err(|e| FabricError::io("bind", listen, e))?;
                (Listener::Unix(l, p.clone()), listen.clone())
            }
            Endpoint::Rdma(_) => return Err(FabricError::BadEndpoint(listen.to_string())),
        };
        let shared = Arc::new(Shared {
            table: Table::default(),
            events,
            stop: AtomicBool::new(false),
            limits,
            auth_failures: AuthFailLimiter::new(limits.auth_failures_per_sec),
            conns: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
        });
        let sh = shared.clone();
        let accept = std::thread::Builder::new()
            .name("fabric-accept".into())
            .spawn(move || accept_loop(listener, sh))
            .map_err(|e| FabricError::io("spawn accept thread for", listen, e))?;
        Ok(SoftResponder {
            shared,
            endpoint,
            accept: Mutex::new(Some(accept)),
        })
    }

    /// Number of open connections (authenticated or still in set-up).
    pub fn connection_count(&self) -> usize {
        self.shared.conns.lock().map(|c| c.len()).unwrap_or(0)
    }
}

fn accept_loop(listener: Listener, shared: Arc<Shared>) {
    loop {
        let s = match &listener {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
        };
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let Ok(s) = s else {
            // EMFILE and friends: back off instead of spinning.
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        };
        let Some(guard) = shared.begin_handshake(s.peer_tag()) else {
            serve::refuse(s, "too many unauthenticated connections from this peer");
            continue;
        };
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        {
            let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
            if conns.len() >= shared.limits.max_connections {
                drop(conns);
                serve::refuse(s, "too many connections");
                continue;
            }
            match s.try_clone() {
                Ok(c) => conns.insert(id, c),
                Err(_) => continue,
            };
        }
        let sh = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("fabric-conn".into())
            .spawn(move || {
                serve::serve(s, &sh, guard);
                sh.conns
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            });
        if spawned.is_err() {
            shared
                .conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        }
    }
    if let Listener::Unix(_, p) = &listener {
        let _ = std::fs::remove_file(p);
    }
}

impl Responder for SoftResponder {
    fn endpoint(&self) -> String {
        self.endpoint.to_string()
    }

    fn register(
        &self,
        source: Arc<dyn MemorySource>,
        addr: u64,
        len: u64,
    ) -> Result<Region, FabricError> {
        self.shared.table.register(source, addr, len)
    }

    fn create_key(&self, region: &Region, spec: KeySpec) -> Result<u32, FabricError> {
        self.shared
            .table
            .create_key(region, spec, super::auth::random_u32)
    }

    fn revoke(&self, rkey: u32) -> Result<(), FabricError> {
        self.shared.table.revoke(rkey)
    }

    fn revoke_grant(&self, grant: [u8; 16]) -> usize {
        self.shared.table.revoke_grant(grant)
    }

    fn deregister(&self, region: Region) -> Result<(), FabricError> {
        self.shared.table.deregister(&region)
    }

    fn shutdown(&self) {
        if self.shared.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        // Wake the accept thread with a connection of our own.
        match &self.endpoint {
            Endpoint::Tcp(a) => {
                let mut to = *a;
                if to.ip().is_unspecified() {
                    to = match to {
                        SocketAddr::V4(_) => SocketAddr::from(([127, 0, 0, 1], a.port())),
                        SocketAddr::V6(_) => {
                            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
                        }
                    };
                }
                let _ = TcpStream::connect(to);
            }
            Endpoint::Unix(p) => {
                let _ = UnixStream::connect(p);
            }
            Endpoint::Rdma(_) => {}
        }
        if let Some(h) = self.accept.lock().ok().and_then(|mut a| a.take()) {
            let _ = h.join();
        }
        for s in self
            .shared
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            s.shutdown();
        }
    }
}

impl Drop for SoftResponder {
    fn drop(&mut self) {
        self.shutdown();
    }
}
