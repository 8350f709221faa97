//! The verbs provider (cargo feature `verbs`): the fabric on a real RDMA device through
//! libibverbs and librdmacm (rdma-sys bindings).
//!
//! * Responder ([`VerbsResponder`]): one protection domain on the device that owns the
//!   listen address. A region is either a copy of the target range in memory the broker
//!   owns (ordinary `ibv_reg_mr` at IOVA = target address; [`Responder::register`]) or the
//!   target's own pages registered through its pidfd with the patched libibverbs'
//!   `ibv_reg_mr_pidfd`, looked up at run time ([`VerbsResponder::register_pidfd`]).
//!   Every restricted key is an exact-range memory region (no remote access of its own,
//!   only MW_BIND: rxe does not enforce a window's sub-range, so the region carries the
//!   range restriction) plus a type-2 memory window carrying the key's access, bound with
//!   `IBV_WR_BIND_MW` on the queue pair of the peer's authenticated connection only.
//!   Revocation and expiry post `IBV_WR_LOCAL_INV` on that queue pair, then free the
//!   window and region.
//! * Initiator ([`VerbsConnection`]): rdma_cm connection whose set-up carries the same
//!   peer proof as the soft provider (Ed25519 over both nonces and the grant id): the
//!   client nonce travels in the connect request's private data, the server nonce in the
//!   accept's, the signature in a first SEND; the responder binds the windows and answers
//!   WELCOME. RDMA READ completions map to [`WcStatus`](crate::WcStatus) (`Success`,
//!   `RemoteAccessError`, `RemoteOperationError`, `Flushed`); after an error the RC queue
//!   pair is in the error state and everything behind it is flushed.
//!
//! Without a device every entry point fails with [`FabricError::NoDevice`](crate::FabricError::NoDevice).

/// Trace a step to stderr when `MEMGATE_VERBS_TRACE` is set (kernel-lab diagnostics).
macro_rules! trace {
    ($($t:tt)*) => {
        if $crate::verbs::tracing() {
            eprintln!("verbs {:.3}: {}", $crate::verbs::trace_clock(), format_args!($($t)*));
        }
    };
}

/// Seconds since the first trace.
pub(crate) fn trace_clock() -> f64 {
    static T0: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    T0.get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
}

/// Whether `MEMGATE_VERBS_TRACE` is set.
pub(crate) fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("MEMGATE_VERBS_TRACE").is_some_and(|v| !v.is_empty()))
}

mod auth;
mod cm;
mod initiator;
mod keys;
mod mem;
mod msg;
mod pidfd;
mod probe;
mod qp;
mod responder;
mod serve;
mod setup;
mod status;

pub use initiator::VerbsConnection;
pub use pidfd::pidfd_registration_available;
pub use responder::VerbsResponder;

use crate::conformance::{ProbeTarget, Provider};
use crate::{Endpoint, EventSink, FabricError, Responder};

/// The conformance-suite provider for verbs: responders listen on `listen`
/// (`rdma:IP:0`, the address of an RDMA device) and register broker-owned copies.
pub struct VerbsProvider {
    /// Where responders listen.
    pub listen: Endpoint,
    /// [`Provider::time_scale`]: 1 on hardware; more where the device is emulated
    /// (soft-RoCE in an emulated guest moves a few MB/s).
    pub time_scale: u32,
}

impl Provider for VerbsProvider {
    fn name(&self) -> String {
        format!("verbs/{}", self.listen)
    }
    fn responder(&self, events: EventSink) -> Result<Box<dyn Responder>, FabricError> {
        Ok(Box::new(VerbsResponder::bind(&self.listen, events)?))
    }
    fn unauthenticated_probe(&self, target: &ProbeTarget<'_>) -> Result<(), String> {
        probe::unauthenticated_probe(target)
    }
    /// The device refuses a READ by itself; the responder only sees its queue pair enter
    /// the error state and cannot say which rkey was refused.
    fn attributes_access_errors(&self) -> bool {
        false
    }
    /// A region is a copy the broker owns; when the target exits its keys are revoked (the
    /// copy must not outlive the target), so later READs fail `RemoteAccessError`.
    fn target_exit_revokes_keys(&self) -> bool {
        true
    }
    fn time_scale(&self) -> u32 {
        self.time_scale
    }
}

/// Whether this host has at least one RDMA device (for tests that need none).
pub fn device_present() -> bool {
    cm::require_device().is_ok()
}
