//! Start-up in the order hardening needs: configuration, logging, signals blocked (before
//! any thread exists), systemd notifier, audit log, policy (refusing to start without a
//! valid one), the API socket (socket-activated or bound here), then hardening on the
//! still single-threaded process, then the fabric responder (which starts its threads),
//! then the event loop.

use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use memgate_fabric::{Endpoint, EventSink, Responder, SoftResponder};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use serde_json::json;

use crate::audit::Audit;
use crate::cli::Args;
use crate::config::Config;
use crate::harden::{FabricNeeds, HardenConfig};
use crate::policy_store::PolicyStore;
use crate::server::{EventQueue, Server, ServerParts};
use crate::{logging, signals, systemd};

/// Exit status when start-up fails (configuration, policy, sockets, hardening).
pub const EXIT_STARTUP: u8 = 1;
/// Exit status for a command-line or configuration-file error.
pub const EXIT_USAGE: u8 = 2;

/// Binds the API socket at `path` (SOCK_SEQPACKET), replacing a stale socket file nobody
/// listens on, with `mode` permissions.
pub fn bind_api_socket(path: &Path, mode: u32) -> std::io::Result<OwnedFd> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)?;
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        if memgate_proto::BrokerClient::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another broker is listening on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    rustix::net::listen(&fd, 128)?;
    Ok(fd)
}

fn dir_of(p: &Path) -> PathBuf {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// What the fabric at `listen` needs: `rdma:` endpoints are served by the verbs provider
/// registering targets by pidfd, everything else by the soft provider.
pub fn fabric_needs(listen: &str) -> FabricNeeds {
    match Endpoint::parse(listen) {
        Ok(Endpoint::Rdma(_)) => FabricNeeds::Verbs,
        _ => FabricNeeds::Soft,
    }
}

/// The responder for `listen`: the soft provider, or the verbs provider registering
/// admitted targets in place through their pidfd (cargo feature `verbs`).
fn bind_responder(listen: &Endpoint, sink: EventSink) -> Result<Box<dyn Responder>, StartError> {
    match listen {
        #[cfg(feature = "verbs")]
        Endpoint::Rdma(_) => Ok(Box::new(memgate_fabric::verbs::VerbsResponder::bind_pidfd(
            listen, sink,
        )?)),
        #[cfg(not(feature = "verbs"))]
        Endpoint::Rdma(_) => {
            drop(sink);
            Err(StartError::Fabric(
                memgate_fabric::FabricError::ProviderUnavailable("verbs"),
            ))
        }
        _ => Ok(Box::new(SoftResponder::bind(listen, sink)?)),
    }
}

/// The hardening configuration with the paths this configuration needs added.
pub fn harden_config(cfg: &Config, config_file: Option<&Path>) -> HardenConfig {
    let mut h = cfg
        .harden
        .clone()
        .with_fabric(fabric_needs(&cfg.fabric.listen));
    if let Some(f) = config_file {
        h.allow_read(f);
    }
    h.allow_read(dir_of(&cfg.policy.path));
    h.allow_read(dir_of(&cfg.policy.signature_path()));
    for k in &cfg.policy.admin_keys {
        h.allow_read(k);
    }
    if let Some(a) = &cfg.audit.path {
        h.allow_write(dir_of(a));
    }
    h.allow_write(dir_of(&cfg.socket));
    h.allow_write(cfg.state_dir());
    if let Ok(Endpoint::Unix(p)) = Endpoint::parse(&cfg.fabric.listen) {
        h.allow_write(dir_of(&p));
    }
    h
}

/// Runs memgated with parsed arguments; returns the process exit status.
pub fn run(args: &Args) -> ExitCode {
    let cfg = match args.resolve().and_then(|c| c.validate().map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("memgated: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let hcfg = harden_config(&cfg, args.config.as_deref());
    if args.check_hardening {
        return crate::harden::check_main(&hcfg);
    }
    if args.check_config {
        return check_config(&cfg);
    }
    let log_dest = logging::init(&cfg.log_level, cfg.log_target);
    match serve(&cfg, &hcfg, args.no_harden) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            if log_dest != "stderr" {
                eprintln!("memgated: {e}");
            }
            ExitCode::from(EXIT_STARTUP)
        }
    }
}

fn check_config(cfg: &Config) -> ExitCode {
    match PolicyStore::check(&cfg.policy, &cfg.state_dir()) {
        Ok(store) => {
            let cur = store.current();
            println!(
                "configuration ok; policy serial {} for broker {:?}, signed by {}",
                cur.policy.serial, cur.policy.broker, cur.signer
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("memgated: policy: {e}");
            ExitCode::from(EXIT_STARTUP)
        }
    }
}

/// Everything that can stop start-up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Signals could not be blocked.
    #[error("setting up signal handling: {0}")]
    Signals(std::io::Error),
    /// `$NOTIFY_SOCKET` is unusable.
    #[error("systemd notification socket: {0}")]
    Notify(std::io::Error),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditOpenError),
    /// No valid policy: the broker refuses to start.
    #[error("no valid policy, refusing to start: {0}")]
    Policy(#[from] crate::policy_store::PolicyLoadError),
    /// The API socket.
    #[error("API socket {path}: {source}")]
    Socket {
        /// Path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// Socket activation passed something unusable.
    #[error("socket activation: {0}")]
    Activation(std::io::Error),
    /// Hardening failed: the broker does not serve unhardened.
    #[error("hardening failed: {0}")]
    Harden(#[from] crate::harden::HardenError),
    /// The fabric responder could not start.
    #[error("fabric: {0}")]
    Fabric(#[from] memgate_fabric::FabricError),
    /// The event loop.
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    /// The fabric event queue.
    #[error("event queue: {0}")]
    Queue(std::io::Error),
}

/// The API socket file bound at start-up; removed on drop unless handed over (`None`).
struct BoundSocket(Option<PathBuf>);

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = rustix::fs::unlinkat(rustix::fs::CWD, &p, rustix::fs::AtFlags::empty());
        }
    }
}

fn serve(cfg: &Config, hcfg: &HardenConfig, no_harden: bool) -> Result<(), StartError> {
    let sigfd = signals::block().map_err(StartError::Signals)?;
    let notifier = systemd::Notifier::from_env().map_err(StartError::Notify)?;
    let mut audit = Audit::open(cfg.audit.path.as_deref(), cfg.audit.journal)?;
    let store = match PolicyStore::open(&cfg.policy, &cfg.state_dir()) {
        Ok(s) => s,
        Err(e) => {
            audit.record(
                "policy_reject",
                json!({"code": e.code(), "message": e.to_string(), "at": "start"}),
            );
            return Err(e.into());
        }
    };
    let cur = store.current().clone();
    audit.record(
        "policy_load",
        json!({"serial": cur.policy.serial, "signer": cur.signer, "sha256": cur.digest,
               "broker": cur.policy.broker, "at": "start"}),
    );
    let (listener, socket_path) = match systemd::take_listen_fd().map_err(StartError::Activation)? {
        Some(fd) => (fd, None),
        None => {
            let fd = bind_api_socket(&cfg.socket, cfg.socket_mode).map_err(|source| {
                StartError::Socket {
                    path: cfg.socket.clone(),
                    source,
                }
            })?;
            (fd, Some(cfg.socket.clone()))
        }
    };
    // Until the server owns it, any failure below removes the socket file bound here.
    let mut bound = BoundSocket(socket_path.clone());
    let events = EventQueue::new().map_err(StartError::Queue)?;
    if no_harden {
        tracing::warn!("hardening disabled by --no-harden");
        audit.record("harden", json!({"applied": false, "reason": "--no-harden"}));
    } else {
        match crate::harden::apply(hcfg) {
            Ok(report) => {
                audit.record(
                    "harden",
                    json!({"applied": true, "report": serde_json::to_value(&report).unwrap_or_default()}),
                );
            }
            Err(e) => {
                audit.record("harden", json!({"applied": false, "error": e.to_string()}));
                return Err(e.into());
            }
        }
    }
    // Threads start here (fabric accept + connection threads), after hardening.
    let listen = Endpoint::parse(&cfg.fabric.listen)?;
    let responder = bind_responder(&listen, events.sink())?;
    let endpoint = cfg
        .fabric
        .advertise
        .clone()
        .unwrap_or_else(|| responder.endpoint());
    tracing::info!(
        "memgated {} serving; policy serial {} for broker {:?}; fabric {endpoint}",
        env!("CARGO_PKG_VERSION"),
        cur.policy.serial,
        cur.policy.broker
    );
    audit.record(
        "start",
        json!({"version": env!("CARGO_PKG_VERSION"), "pid": std::process::id(),
               "socket": socket_path.as_ref().map(|p| p.display().to_string()),
               "socket_activated": socket_path.is_none(), "endpoint": endpoint,
               "policy_serial": cur.policy.serial}),
    );
    let server = Server::new(ServerParts {
        listener,
        socket_path,
        signals: sigfd,
        events,
        responder,
        endpoint,
        policy: store,
        audit,
        limits: cfg.limits.clone(),
        notifier,
    })?;
    // From here the server removes the socket file when it stops.
    bound.0 = None;
    server.run()?;
    Ok(())
}
