//! The admission pipeline: every check an `Export` request passes before any memory is
//! registered, one module and one error type per step, each denial with a stable code.
//!
//! Order (see `docs/admission.md`): peer credentials ([`peer`]), request rate
//! ([`quota`]), ptrace proof ([`ptrace`]), target cgroup ([`cgroup`]), token
//! ([`token`]), regions ([`regions`], from [`maps`]), a probe read through the mem fd,
//! then the policy decision and quotas ([`decide`]). The server calls [`admit`] once per
//! `Export`; registration (step 7) is the server's.

pub mod cgroup;
pub mod decide;
pub mod maps;
pub mod peer;
pub mod pidfd;
pub mod procmap;
pub mod ptrace;
pub mod quota;
pub mod regions;
pub mod token;

use std::fs::File;
use std::os::fd::{BorrowedFd, OwnedFd};

use memgate_policy::replay::ReplayCache;
use memgate_policy::{Access, Effective, Policy, Usage};
use memgate_proto::ExportRequest;
use time::{Duration, OffsetDateTime};

pub use peer::PeerCred;

/// Everything the server hands the pipeline for one `Export` request.
#[derive(Debug)]
pub struct Input<'a> {
    /// The connected client socket (for `SO_PEERCRED` / `SO_PEERPIDFD`).
    pub socket: BorrowedFd<'a>,
    /// The decoded request body.
    pub request: &'a ExportRequest,
    /// Every fd received with the request, in order (expected: pidfd, mem fd, maps fd;
    /// see [`ptrace`]). Owned:
    /// moved into [`Admitted`] on success, closed on denial.
    pub fds: Vec<OwnedFd>,
    /// The requester uid's current usage, from the server's grant table.
    pub usage: Usage,
}

/// Pipeline settings that are not policy.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionConfig {
    /// Clock-skew allowance for token times.
    pub skew: Duration,
    /// Most unexpired `jti`s remembered (the cache refuses new tokens when full).
    pub replay_capacity: usize,
    /// Most regions one request may list.
    pub max_regions: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            skew: memgate_policy::token::DEFAULT_SKEW,
            replay_capacity: 100_000,
            max_regions: regions::MAX_REGIONS,
        }
    }
}

/// State the pipeline keeps between requests: the replay cache and the rate limiter.
#[derive(Debug)]
pub struct AdmissionState {
    /// Settings.
    pub config: AdmissionConfig,
    /// Used token ids.
    pub replay: ReplayCache,
    /// Per-uid request rate.
    pub rate: quota::RateLimiter,
    /// Read buffer for the target's maps, kept between requests.
    pub maps_buf: Vec<u8>,
    /// The system page size.
    pub page: u64,
}

impl AdmissionState {
    /// Fresh state.
    pub fn new(config: AdmissionConfig) -> Self {
        Self {
            config,
            replay: ReplayCache::new(config.replay_capacity),
            rate: quota::RateLimiter::new(),
            maps_buf: Vec::new(),
            page: regions::page_size(),
        }
    }
}

impl Default for AdmissionState {
    fn default() -> Self {
        Self::new(AdmissionConfig::default())
    }
}

/// The verified target of an admitted export.
#[derive(Debug)]
pub struct AdmittedTarget {
    /// Pid in the broker's pid namespace.
    pub pid: i32,
    /// The requester's pidfd of the target (poll it for exit).
    pub pidfd: OwnedFd,
    /// The requester's `/proc/<pid>/mem` (read, or read-write for `read-write` grants).
    pub mem: File,
    /// cgroup v2 path.
    pub cgroup: String,
}

/// An export that passed every check: what the server registers.
#[derive(Debug)]
pub struct Admitted {
    /// Requester uid (`SO_PEERCRED`).
    pub uid: u32,
    /// Requester gid.
    pub gid: u32,
    /// Requester pid at connect time.
    pub requester_pid: i32,
    /// The target.
    pub target: AdmittedTarget,
    /// The validated regions with their mapping kinds, in request order (for `all`: in
    /// address order).
    pub regions: Vec<memgate_policy::Region>,
    /// Granted access.
    pub access: Access,
    /// Granted lease, seconds.
    pub lease_secs: u64,
    /// When the lease ends.
    pub expires: OffsetDateTime,
    /// Total bytes.
    pub bytes: u64,
    /// The fault server's Ed25519 public key (keys are bound to it).
    pub peer: [u8; 32],
    /// Token `jti` (audit).
    pub jti: String,
    /// Policy issuer that authorised it (audit).
    pub issuer: String,
    /// Fingerprint of that issuer's key (audit).
    pub issuer_fingerprint: String,
    /// Revoke when the requester's connection closes.
    pub revoke_on_disconnect: bool,
    /// The full decision (limits the policy and token allowed).
    pub effective: Effective,
}

/// One reason of a denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenialReason {
    /// Stable snake_case code.
    pub code: &'static str,
    /// Human sentence.
    pub message: String,
}

/// Why an export was refused. `code` is the decisive reason's; `reasons` lists every
/// reason found (the decisive one first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Denial {
    /// Stable snake_case code (documented in `docs/admission.md`).
    pub code: &'static str,
    /// Human sentence.
    pub message: String,
    /// All reasons, decisive first.
    pub reasons: Vec<DenialReason>,
}

impl Denial {
    /// A denial with one reason.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            code,
            reasons: vec![DenialReason {
                code,
                message: message.clone(),
            }],
            message,
        }
    }

    /// The wire form.
    pub fn to_proto(&self) -> memgate_proto::Denied {
        memgate_proto::Denied {
            code: self.code.to_string(),
            reasons: self
                .reasons
                .iter()
                .map(|r| memgate_proto::Reason {
                    code: r.code.to_string(),
                    message: r.message.clone(),
                })
                .collect(),
        }
    }
}

/// Every step error converts into a [`Denial`] through its `code()`.
macro_rules! denial_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Denial {
            fn from(e: $t) -> Self {
                Denial::new(e.code(), e.to_string())
            }
        }
    )*};
}
denial_from!(
    peer::PeerError,
    ptrace::PtraceError,
    cgroup::CgroupError,
    token::TokenCheckError,
    regions::RegionError,
    quota::QuotaError
);

/// Converts the wire access to the policy's.
pub fn access_of(a: memgate_proto::Access) -> Access {
    match a {
        memgate_proto::Access::Read => Access::Read,
        memgate_proto::Access::ReadWrite => Access::ReadWrite,
    }
}

/// Runs the whole pipeline for one `Export`. On success the fds move into the result; on
/// denial they are closed before this returns. Nothing is registered here.
pub fn admit(
    input: Input<'_>,
    policy: &Policy,
    state: &mut AdmissionState,
    now: OffsetDateTime,
) -> Result<Admitted, Denial> {
    let Input {
        socket,
        request,
        fds,
        usage,
    } = input;
    // Step 1: who is asking.
    let peer = peer::PeerCred::of(socket)?;
    // Rate limiting counts every request, admitted or not, before any expensive work.
    state
        .rate
        .check(peer.uid, policy.limits.requests_per_second_per_uid, now)?;
    let access = access_of(request.access);
    // Step 2: the fds prove the requester could ptrace (open mem of) the target.
    let proven = ptrace::prove(fds, &peer, access)?;
    // Step 3: where the target lives.
    let cgroup = cgroup::resolve(&proven)?;
    // Step 4: the token.
    let verified = token::check(
        &request.token,
        policy,
        &peer,
        &cgroup,
        proven.pid,
        now,
        state.config.skew,
        &state.replay,
    )?;
    // Step 5: the regions, against the target's current mappings.
    let rules = regions::Rules {
        access,
        allowed: &policy.mappings,
        max_regions: state.config.max_regions,
        page: state.page,
    };
    let regions = regions::resolve_with(&proven, &request.regions, &rules, &mut state.maps_buf)?;
    // The mem fd must really read the target's memory (EOF after exit or exec).
    if let Some(first) = regions.first() {
        proven.probe_read(first.addr)?;
    }
    // Step 6: the decision and per-uid quotas.
    let effective = decide::decide(
        policy,
        &verified,
        &peer,
        &cgroup,
        proven.pid,
        &regions,
        access,
        request.lease_secs,
        usage,
        now,
        state.config.skew,
    )?;
    // Only an admitted token is burned: a denied request can be retried with a fixed
    // request, a granted one never again.
    state
        .replay
        .check_and_insert(&effective.jti, effective.token_exp, now)
        .map_err(|e| Denial::new(e.code().as_str(), e.to_string()))?;
    proven.check_alive()?;
    let ptrace::Proven {
        pid, pidfd, mem, ..
    } = proven;
    Ok(Admitted {
        uid: peer.uid,
        gid: peer.gid,
        requester_pid: peer.pid,
        target: AdmittedTarget {
            pid,
            pidfd,
            mem,
            cgroup,
        },
        regions,
        access: effective.access,
        lease_secs: effective.lease,
        expires: effective.expires,
        bytes: effective.bytes,
        peer: effective.peer,
        jti: effective.jti.clone(),
        issuer: effective.issuer.clone(),
        issuer_fingerprint: verified.issuer_key.fingerprint(),
        revoke_on_disconnect: request.revoke_on_disconnect,
        effective,
    })
}
