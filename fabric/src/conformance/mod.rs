//! The conformance suite: one set of checks written against the provider-neutral API
//! ([`Responder`] + [`Connection`](crate::Connection)), run by `tests/conformance_soft.rs` for the soft
//! provider and runnable against any other provider through a [`Provider`] factory.
//!
//! Every case builds its own responder, so cases are independent. The memory served is
//! real: patterned buffers of the running process read through `/proc/self/mem`, and a
//! child process (`sleep`) read through its `/proc/PID/mem` and killed mid-stream.
//!
//! What a provider must supply beyond [`Provider::responder`]: [`Provider::source`] if it
//! registers memory by other means than a [`MemorySource`], and
//! [`Provider::unauthenticated_probe`] if its connection set-up is not the soft wire
//! protocol (the default speaks that protocol on `tcp:`/`unix:` endpoints and fails on
//! anything else). Where providers honestly differ, the provider says so and the case
//! asserts the invariant both keep: [`Provider::attributes_access_errors`],
//! [`Provider::target_exit_revokes_keys`] and [`Provider::time_scale`]. The defaults are
//! the strict expectations the soft provider is held to.

mod access;
mod cases;
mod data;
mod probe;
mod target;
mod util;

use crate::{EventSink, FabricError, FabricEvent, MemorySource, Responder};
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

pub use probe::{soft_unauthenticated, ProbeTarget};
pub use target::{Mapping, TargetProcess};

/// Builds responders of one provider.
pub trait Provider: Sync {
    /// A short name for reports.
    fn name(&self) -> String;
    /// A fresh responder delivering events to `events`.
    fn responder(&self, events: EventSink) -> Result<Box<dyn Responder>, FabricError>;
    /// Wrap target memory for registration. The default passes it through; a provider that
    /// registers memory by other means (pidfd) may refuse sources it cannot handle.
    fn source(&self, src: Arc<dyn MemorySource>) -> Arc<dyn MemorySource> {
        src
    }
    /// Try to use a key without proving possession of the peer key, in every way the
    /// provider's set-up allows; `Ok` when every attempt was refused and nothing was
    /// served. The default speaks the soft wire protocol (`tcp:` and `unix:` endpoints).
    fn unauthenticated_probe(&self, target: &ProbeTarget<'_>) -> Result<(), String> {
        soft_unauthenticated(target)
    }
    /// Whether the responder can name the rkey of a refused READ in its
    /// [`FabricEvent::AccessError`]. A provider whose device refuses READs by itself (verbs)
    /// learns only that its queue pair entered the error state and reports rkey 0; it must
    /// then never name any other key. Default: attributed (the soft provider checks every
    /// request itself).
    fn attributes_access_errors(&self) -> bool {
        true
    }
    /// Whether a target that exits takes its keys with it, so that READs after the exit
    /// fail `RemoteAccessError` (the key is gone) rather than `RemoteOperationError` (the
    /// key is live but its memory cannot be read). Either way no READ after the exit
    /// returns data. Default: keys outlive the target (soft reads `/proc/PID/mem` per
    /// request and sees it fail).
    fn target_exit_revokes_keys(&self) -> bool {
        false
    }
    /// Factor applied to the suite's whole-case time budgets (a stream of hundreds of
    /// READs), for providers that are slow where they run (an emulated device in an
    /// emulated machine). Per-completion waits are not scaled. Default 1.
    fn time_scale(&self) -> u32 {
        1
    }
}

/// Soft provider over TCP on 127.0.0.1, port chosen by the kernel.
pub struct SoftTcp;

impl Provider for SoftTcp {
    fn name(&self) -> String {
        "soft/tcp".into()
    }
    fn responder(&self, events: EventSink) -> Result<Box<dyn Responder>, FabricError> {
        let ep = crate::Endpoint::parse("tcp:127.0.0.1:0")?;
        Ok(Box::new(crate::SoftResponder::bind(&ep, events)?))
    }
}

/// Soft provider over Unix sockets created in `dir`.
pub struct SoftUnix {
    /// Directory for the socket files.
    pub dir: PathBuf,
}

impl Provider for SoftUnix {
    fn name(&self) -> String {
        "soft/unix".into()
    }
    fn responder(&self, events: EventSink) -> Result<Box<dyn Responder>, FabricError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = self
            .dir
            .join(format!("fabric-{}-{n}.sock", std::process::id()));
        let ep = crate::Endpoint::Unix(p);
        Ok(Box::new(crate::SoftResponder::bind(&ep, events)?))
    }
}

/// One named check.
pub struct Case {
    /// What it checks.
    pub name: &'static str,
    /// Runs it; `Err` explains the failure.
    pub run: fn(&dyn Provider) -> Result<(), String>,
}

/// Every case of the suite.
pub fn cases() -> &'static [Case] {
    cases::ALL
}

/// Run every case (or those whose name contains `filter`); returns each outcome.
pub fn run_all(p: &dyn Provider, filter: Option<&str>) -> Vec<(&'static str, Result<(), String>)> {
    cases()
        .iter()
        .filter(|c| filter.is_none_or(|f| c.name.contains(f)))
        .map(|c| (c.name, (c.run)(p)))
        .collect()
}

/// Wait for the first event matching `pred`, up to `timeout`.
pub(crate) fn expect_event(
    rx: &Receiver<FabricEvent>,
    timeout: Duration,
    pred: impl Fn(&FabricEvent) -> bool,
) -> Option<FabricEvent> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(ev) if pred(&ev) => return Some(ev),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}
