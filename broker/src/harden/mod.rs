//! Process hardening of memgated: capabilities, no_new_privs, seccomp and Landlock.
//!
//! The broker calls [`apply`] once, from the main thread, after set-up (sockets bound,
//! audit log open, policy loaded, fabric listening) and before it starts serving or spawns
//! worker threads. [`inspect`] reads back what is in force (for `--check-hardening`),
//! [`compare`] lists where that falls short of the configuration, [`check_main`] prints
//! both for `memgated --check-hardening`, and [`probe`] tries each forbidden operation and
//! reports how the kernel answered (run by `memgated-harden-probe`, see [`probe_cli`]).

mod config;
mod landlock;
pub mod needed;
mod privs;
pub mod probe;
pub mod probe_cli;
mod probe_ops;
mod report;
mod seccomp;
mod syscalls;

pub use config::{FabricNeeds, HardenConfig, LandlockConfig, SeccompConfig, SeccompViolation};
pub use landlock::{LandlockOutcome, LandlockState};

pub use report::{compare, inspect, Applied, CapSets, HardenReport, Shortfall};
pub use seccomp::ALLOWLIST_TOML;

/// What went wrong while hardening. Any error means the broker must not serve.
#[derive(Debug, thiserror::Error)]
pub enum HardenError {
    /// apply() ran while other threads exist: capability sets and (before Landlock ABI 8)
    /// Landlock domains are per thread, so those threads would keep their privileges.
    #[error("hardening must be applied while the process has one thread; it has {0}")]
    MultiThreaded(usize),
    /// apply() was called a second time.
    #[error("hardening was already applied")]
    AlreadyApplied,
    /// The `run_as` user does not exist.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// A capability name in `extra_caps` is not known.
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    /// Capabilities to keep are not in the permitted set.
    #[error("capabilities to keep are not permitted: {0:?}")]
    MissingCapabilities(Vec<String>),
    /// A capability operation failed.
    #[error("capabilities: {0}: {1}")]
    Capabilities(&'static str, String),
    /// A system call failed.
    #[error("{0}: {1}")]
    Syscall(&'static str, #[source] std::io::Error),
    /// The seccomp allow-list is malformed.
    #[error("seccomp allow-list: {0}")]
    AllowList(String),
    /// seccomp TSYNC could not synchronise a thread.
    #[error("seccomp TSYNC failed for thread {0}")]
    SeccompTsync(i32),
    /// Building or enforcing the Landlock ruleset failed.
    #[error("landlock: {0}")]
    Landlock(String),
    /// The verbs fabrics need the kernel's ptrace check on the broker to pass for targets
    /// (pidfd registration runs mm_access; the stock-kernel path ptrace-injects), and
    /// Landlock refuses it for every process outside the broker's domain.
    #[error("the {0} fabric needs the kernel's ptrace check on targets, which Landlock refuses; set [hardening.landlock] enabled = false for it")]
    LandlockBlocksPtrace(&'static str),
    /// Landlock is required but the kernel enforces nothing.
    #[error("landlock required but not enforced (kernel ABI {0})")]
    LandlockUnavailable(i32),
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(usize::MAX)
}

/// Applies the configured hardening to the whole process, in this order: resolve the user
/// and compile the seccomp filter (while everything is still reachable); drop capabilities
/// (switching user if configured); set no_new_privs; enforce Landlock; install seccomp on
/// every thread. Returns what is then in force.
pub fn apply(cfg: &HardenConfig) -> Result<HardenReport, HardenError> {
    if report::APPLIED.get().is_some() {
        return Err(HardenError::AlreadyApplied);
    }
    let threads = thread_count();
    if threads != 1 {
        return Err(HardenError::MultiThreaded(threads));
    }
    if cfg.fabric.uses_devices() && cfg.landlock.enabled {
        return Err(HardenError::LandlockBlocksPtrace(cfg.fabric.as_str()));
    }
    let ids = cfg.run_as.as_deref().map(privs::resolve_user).transpose()?;
    let keep = privs::kept_caps(cfg)?;
    let compiled = if cfg.seccomp.enabled {
        Some(seccomp::compile(cfg.fabric, cfg.seccomp.action)?)
    } else {
        None
    };

    let bounding = privs::drop_privileges(&keep, ids)?;
    if cfg.no_new_privs || cfg.seccomp.enabled || cfg.landlock.enabled {
        privs::set_no_new_privs()?;
    }
    let landlock = landlock::restrict(&cfg.landlock, cfg.fabric)?;
    if let Some(c) = &compiled {
        seccomp::install(c)?;
    }
    let applied = Applied {
        seccomp_action: compiled.as_ref().map(|_| cfg.seccomp.action),
        seccomp_allowed_syscalls: compiled.as_ref().map_or(0, |c| c.allowed_syscalls),
        seccomp_argument_rules: compiled.as_ref().map_or(0, |c| c.argument_rules),
        landlock,
        run_as_uid: ids.map(|i| i.uid),
        bounding,
    };
    // A concurrent second apply() is impossible: the thread check above failed otherwise.
    let _ = report::APPLIED.set(applied);
    Ok(inspect())
}

/// `memgated --check-hardening`: applies `cfg` to this process, prints what is then in
/// force (user, capability sets, no_new_privs, seccomp mode and allow-list size, Landlock
/// ABI and state) and every way it falls short of `cfg`. Exit status: 0 when everything
/// asked for is in force, 1 when the kernel gave less than asked, 2 when hardening failed.
/// Call it from the main thread before any other thread exists, then exit.
pub fn check_main(cfg: &HardenConfig) -> std::process::ExitCode {
    match apply(cfg) {
        Err(e) => {
            eprintln!("memgated: hardening failed: {e}");
            std::process::ExitCode::from(2)
        }
        Ok(report) => {
            print!("{report}");
            let short = compare(cfg, &report);
            for s in &short {
                println!("shortfall: {s}");
            }
            if short.is_empty() {
                println!("hardening: everything the configuration asks for is in force");
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            }
        }
    }
}

#[cfg(test)]
mod tests;
