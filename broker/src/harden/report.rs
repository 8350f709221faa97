//! What is in force now: read back from the kernel (`/proc/self/status`) plus what
//! [`super::apply`] recorded, printable (Display) and serialisable (JSON for tooling).

use std::fmt;
use std::sync::OnceLock;

use caps::Capability;
use serde::Serialize;

use super::config::{HardenConfig, SeccompViolation};
use super::landlock::{kernel_abi, LandlockOutcome, LandlockState};
use super::privs::{kept_caps, resolve_user, Bounding};

/// What [`super::apply`] did, recorded once for later inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// Seccomp action on violation, when a filter was installed.
    pub seccomp_action: Option<SeccompViolation>,
    /// Syscalls the allow-list permits.
    pub seccomp_allowed_syscalls: usize,
    /// Argument rules in the allow-list.
    pub seccomp_argument_rules: usize,
    /// Landlock outcome.
    pub landlock: LandlockOutcome,
    /// The uid switched to for `run_as` (resolved before hardening: afterwards the user
    /// database is outside the Landlock rules).
    pub run_as_uid: Option<u32>,
    /// What happened to the bounding set.
    pub bounding: Bounding,
}

pub(super) static APPLIED: OnceLock<Applied> = OnceLock::new();

/// Capability sets as the kernel reports them (bit masks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CapSets {
    /// CapEff.
    pub effective: u64,
    /// CapPrm.
    pub permitted: u64,
    /// CapInh.
    pub inheritable: u64,
    /// CapAmb.
    pub ambient: u64,
    /// CapBnd.
    pub bounding: u64,
}

/// The hardening state of the current process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HardenReport {
    /// Real, effective, saved user ids.
    pub uids: [u32; 3],
    /// Real, effective, saved group ids.
    pub gids: [u32; 3],
    /// Capability sets (bit masks, bit N = capability number N).
    pub caps: CapSets,
    /// no_new_privs.
    pub no_new_privs: bool,
    /// Seccomp mode: 0 off, 1 strict, 2 filter.
    pub seccomp_mode: u8,
    /// Number of seccomp filters attached.
    pub seccomp_filters: u32,
    /// Number of threads.
    pub threads: usize,
    /// Landlock ABI the kernel offers.
    pub landlock_kernel_abi: i32,
    /// What apply() recorded (None when apply() did not run in this process).
    pub applied: Option<Applied>,
}

fn parse_mask(v: &str) -> u64 {
    u64::from_str_radix(v.trim(), 16).unwrap_or(u64::MAX)
}

fn parse_ids(v: &str) -> [u32; 3] {
    let mut it = v
        .split_whitespace()
        .map(|x| x.parse::<u32>().unwrap_or(u32::MAX));
    [
        it.next().unwrap_or(u32::MAX),
        it.next().unwrap_or(u32::MAX),
        it.next().unwrap_or(u32::MAX),
    ]
}

/// Parses a `/proc/PID/status` text into a report (without the `applied` part).
pub fn from_status(status: &str) -> HardenReport {
    let mut r = HardenReport::default();
    for line in status.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k {
            "Uid" => r.uids = parse_ids(v),
            "Gid" => r.gids = parse_ids(v),
            "CapInh" => r.caps.inheritable = parse_mask(v),
            "CapPrm" => r.caps.permitted = parse_mask(v),
            "CapEff" => r.caps.effective = parse_mask(v),
            "CapBnd" => r.caps.bounding = parse_mask(v),
            "CapAmb" => r.caps.ambient = parse_mask(v),
            "NoNewPrivs" => r.no_new_privs = v.trim() == "1",
            "Seccomp" => r.seccomp_mode = v.trim().parse().unwrap_or(u8::MAX),
            "Seccomp_filters" => r.seccomp_filters = v.trim().parse().unwrap_or(0),
            "Threads" => r.threads = v.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    r
}

/// What is in force in this process now (for `memgated --check-hardening`).
pub fn inspect() -> HardenReport {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mut r = from_status(&status);
    r.applied = APPLIED.get().cloned();
    r.landlock_kernel_abi = match &r.applied {
        Some(a) => a.landlock.kernel_abi,
        // After seccomp is on, the landlock syscalls are refused; ask only before.
        None => kernel_abi(),
    };
    r
}

/// Capability names of a mask.
pub fn cap_names(mask: u64) -> Vec<String> {
    let mut all: Vec<Capability> = caps::all().into_iter().collect();
    all.sort_by_key(|c| c.index());
    all.into_iter()
        .filter(|c| mask & c.bitmask() != 0)
        .map(|c| c.to_string())
        .collect()
}

fn fmt_caps(mask: u64) -> String {
    if mask == 0 {
        "none".into()
    } else if mask.count_ones() > 8 {
        format!("{:#018x} ({} capabilities)", mask, mask.count_ones())
    } else {
        cap_names(mask).join(",")
    }
}

impl fmt::Display for HardenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "uid (r/e/s):      {:?}", self.uids)?;
        writeln!(f, "gid (r/e/s):      {:?}", self.gids)?;
        writeln!(f, "caps effective:   {}", fmt_caps(self.caps.effective))?;
        writeln!(f, "caps permitted:   {}", fmt_caps(self.caps.permitted))?;
        writeln!(f, "caps inheritable: {}", fmt_caps(self.caps.inheritable))?;
        writeln!(f, "caps ambient:     {}", fmt_caps(self.caps.ambient))?;
        write!(f, "caps bounding:    {}", fmt_caps(self.caps.bounding))?;
        match &self.applied {
            Some(a) if a.bounding != Bounding::Reduced => {
                writeln!(f, " ({})", a.bounding.describe())?
            }
            _ => writeln!(f)?,
        }
        writeln!(f, "no_new_privs:     {}", self.no_new_privs)?;
        let mode = match self.seccomp_mode {
            0 => "off",
            1 => "strict",
            2 => "filter",
            _ => "unknown",
        };
        writeln!(
            f,
            "seccomp:          {mode}, {} filter(s)",
            self.seccomp_filters
        )?;
        let Some(a) = &self.applied else {
            writeln!(
                f,
                "landlock:         kernel ABI {}",
                self.landlock_kernel_abi
            )?;
            writeln!(f, "threads:          {}", self.threads)?;
            return writeln!(f, "hardening:        not applied in this process");
        };
        match a.seccomp_action {
            Some(act) => writeln!(
                f,
                "  allow-list:     {} syscalls, {} argument rules, violation -> {:?}",
                a.seccomp_allowed_syscalls, a.seccomp_argument_rules, act
            )?,
            None => writeln!(f, "  allow-list:     disabled by configuration")?,
        }
        writeln!(
            f,
            "landlock:         {:?}, {} path rules (kernel ABI {})",
            a.landlock.state, a.landlock.rules, self.landlock_kernel_abi
        )?;
        let scope = if a.landlock.all_threads {
            "every thread of the process"
        } else {
            "the process's only thread at the time, and every thread started after it"
        };
        writeln!(f, "  restricts:      {scope}")?;
        for p in &a.landlock.missing_paths {
            writeln!(f, "  no rule for:    {} (missing)", p.display())?;
        }
        writeln!(f, "threads:          {}", self.threads)
    }
}

/// A way in which the process is less hardened than the configuration asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Shortfall {
    /// A capability set holds more than the kept capabilities.
    ExtraCapabilities {
        /// Which set.
        set: String,
        /// Capability names beyond what is kept.
        caps: Vec<String>,
    },
    /// The bounding set could not be reduced (no CAP_SETPCAP, nothing to keep).
    BoundingLeft {
        /// How many capabilities it still holds.
        count: u32,
    },
    /// no_new_privs is not set.
    NoNewPrivsOff,
    /// No seccomp filter is in force.
    SeccompOff,
    /// Landlock is not (fully) enforced.
    Landlock {
        /// What was obtained.
        state: String,
        /// Kernel ABI.
        kernel_abi: i32,
    },
    /// The process does not run as the configured user.
    WrongUser {
        /// Configured user.
        expected: String,
        /// Effective uid in force.
        euid: u32,
    },
    /// apply() has not run in this process.
    NotApplied,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shortfall::ExtraCapabilities { set, caps } => {
                write!(
                    f,
                    "{set} capabilities hold more than needed: {}",
                    caps.join(",")
                )
            }
            Shortfall::BoundingLeft { count } => write!(
                f,
                "bounding set left as is: no CAP_SETPCAP; nothing to keep \
                 ({count} capabilities remain in it)"
            ),
            Shortfall::NoNewPrivsOff => write!(f, "no_new_privs is not set"),
            Shortfall::SeccompOff => write!(f, "no seccomp filter is in force"),
            Shortfall::Landlock { state, kernel_abi } => {
                write!(f, "Landlock {state} (kernel ABI {kernel_abi})")
            }
            Shortfall::WrongUser { expected, euid } => {
                write!(f, "running as uid {euid}, configured user {expected}")
            }
            Shortfall::NotApplied => write!(f, "hardening was not applied in this process"),
        }
    }
}

/// Compares what the configuration asked for with what is in force; empty when all is as
/// asked. `memgated --check-hardening` exits non-zero when this is not empty.
pub fn compare(cfg: &HardenConfig, report: &HardenReport) -> Vec<Shortfall> {
    let mut out = Vec::new();
    let Some(applied) = &report.applied else {
        return vec![Shortfall::NotApplied];
    };
    let kept: u64 = kept_caps(cfg)
        .map(|s| s.iter().fold(0, |m, c| m | c.bitmask()))
        .unwrap_or(0);
    for (set, mask) in [
        ("effective", report.caps.effective),
        ("permitted", report.caps.permitted),
        ("inheritable", report.caps.inheritable),
        ("ambient", report.caps.ambient),
        ("bounding", report.caps.bounding),
    ] {
        let allowed = if matches!(set, "inheritable" | "ambient") {
            0
        } else {
            kept
        };
        let extra = mask & !allowed;
        if set == "bounding" && extra != 0 && applied.bounding == Bounding::LeftNoSetpcap {
            out.push(Shortfall::BoundingLeft {
                count: mask.count_ones(),
            });
        } else if extra != 0 {
            out.push(Shortfall::ExtraCapabilities {
                set: set.into(),
                caps: cap_names(extra),
            });
        }
    }
    if cfg.no_new_privs && !report.no_new_privs {
        out.push(Shortfall::NoNewPrivsOff);
    }
    if cfg.seccomp.enabled && (report.seccomp_mode != 2 || applied.seccomp_action.is_none()) {
        out.push(Shortfall::SeccompOff);
    }
    if cfg.landlock.enabled && applied.landlock.state != LandlockState::FullyEnforced {
        out.push(Shortfall::Landlock {
            state: format!("{:?}", applied.landlock.state),
            kernel_abi: applied.landlock.kernel_abi,
        });
    }
    if let Some(user) = &cfg.run_as {
        let expected = applied
            .run_as_uid
            .or_else(|| resolve_user(user).ok().map(|ids| ids.uid));
        if expected != Some(report.uids[1]) || report.uids.iter().any(|u| *u != report.uids[1]) {
            out.push(Shortfall::WrongUser {
                expected: user.clone(),
                euid: report.uids[1],
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harden::config::FabricNeeds;

    const STATUS: &str = "Name:\tmemgated\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n\
        Threads:\t3\nCapInh:\t0000000000000000\nCapPrm:\t0000000000004000\n\
        CapEff:\t0000000000004000\nCapBnd:\t0000000000004000\nCapAmb:\t0000000000000000\n\
        NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t2\n";

    fn applied(state: LandlockState) -> Applied {
        Applied {
            seccomp_action: Some(SeccompViolation::Errno),
            seccomp_allowed_syscalls: 100,
            seccomp_argument_rules: 10,
            landlock: LandlockOutcome {
                state,
                kernel_abi: 7,
                all_threads: false,
                rules: 3,
                missing_paths: Vec::new(),
            },
            run_as_uid: None,
            bounding: Bounding::Reduced,
        }
    }

    #[test]
    fn parses_status_and_names_caps() {
        let r = from_status(STATUS);
        assert_eq!(r.caps.effective, 1 << 14);
        assert_eq!(
            cap_names(r.caps.effective),
            vec!["CAP_IPC_LOCK".to_string()]
        );
        assert!(r.no_new_privs);
        assert_eq!((r.seccomp_mode, r.seccomp_filters, r.threads), (2, 2, 3));
        assert!(r.to_string().contains("CAP_IPC_LOCK"));
    }

    #[test]
    fn compare_flags_what_is_missing() {
        let mut r = from_status(STATUS);
        assert_eq!(
            compare(&HardenConfig::strict(FabricNeeds::Verbs), &r),
            vec![Shortfall::NotApplied]
        );
        r.applied = Some(applied(LandlockState::FullyEnforced));
        assert!(compare(&HardenConfig::strict(FabricNeeds::Verbs), &r).is_empty());
        // Soft keeps nothing, so CAP_IPC_LOCK is extra in three sets.
        let soft = compare(&HardenConfig::strict(FabricNeeds::Soft), &r);
        assert_eq!(soft.len(), 3, "{soft:?}");
        r.applied = Some(applied(LandlockState::PartiallyEnforced));
        r.no_new_privs = false;
        let short = compare(&HardenConfig::strict(FabricNeeds::Verbs), &r);
        assert!(short.contains(&Shortfall::NoNewPrivsOff));
        assert!(short
            .iter()
            .any(|s| matches!(s, Shortfall::Landlock { .. })));
    }
}
