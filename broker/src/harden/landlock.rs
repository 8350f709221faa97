//! Landlock: memgated may read its configuration, policy and keys, write its audit log and
//! runtime directory, read /proc, and use /dev/infiniband when a verbs fabric is configured.
//! Everything else on the filesystem is refused (EACCES), including executing any file.
//!
//! Landlock restricts the calling thread and the threads it creates later; on kernels with
//! ABI 8 or newer the ruleset is also applied to threads that already exist.

use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, RestrictSelfAttr, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, ABI,
};
use serde::Serialize;

use super::config::{FabricNeeds, LandlockConfig};
use super::HardenError;

/// The filesystem rights this module handles (every right up to ABI 5, which adds device
/// ioctls; later ABIs add no filesystem rights memgated needs to grant).
const HANDLED_ABI: ABI = ABI::V5;

/// Landlock ABI version the running kernel offers (0 when unsupported or disabled).
pub fn kernel_abi() -> i32 {
    // SAFETY: with a null attribute, size 0 and LANDLOCK_CREATE_RULESET_VERSION the call
    // only returns the ABI version; no memory is read or written.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    if rc < 0 {
        0
    } else {
        i32::try_from(rc).unwrap_or(i32::MAX)
    }
}

/// How Landlock was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LandlockState {
    /// Not requested in the configuration.
    Disabled,
    /// Requested, but the kernel enforces nothing.
    NotEnforced,
    /// Some of the handled rights are enforced (older kernel).
    PartiallyEnforced,
    /// Every handled right is enforced.
    FullyEnforced,
}

/// Result of [`restrict`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LandlockOutcome {
    /// Enforcement state.
    pub state: LandlockState,
    /// Kernel ABI version.
    pub kernel_abi: i32,
    /// Whether threads that existed before were restricted too (ABI 8+).
    pub all_threads: bool,
    /// Number of path rules added.
    pub rules: usize,
    /// Configured paths that did not exist and so were not added.
    pub missing_paths: Vec<PathBuf>,
}

/// The rule set for a configuration: (path, read-write?).
pub fn rule_paths(cfg: &LandlockConfig, fabric: FabricNeeds) -> Vec<(PathBuf, bool)> {
    let mut out: Vec<(PathBuf, bool)> = Vec::new();
    out.extend(cfg.read_only.iter().map(|p| (p.clone(), false)));
    out.extend(cfg.read_write.iter().map(|p| (p.clone(), true)));
    if cfg.proc {
        out.push((PathBuf::from("/proc"), false));
    }
    if fabric.uses_devices() {
        out.push((PathBuf::from("/dev/infiniband"), true));
        out.push((PathBuf::from("/sys/class/infiniband"), false));
        out.push((PathBuf::from("/sys/class/infiniband_verbs"), false));
        out.push((PathBuf::from("/sys/devices"), false));
    }
    out
}

fn ll_err(e: impl std::fmt::Display) -> HardenError {
    HardenError::Landlock(e.to_string())
}

fn rights_for(path: &Path, write: bool) -> landlock::BitFlags<AccessFs> {
    let mut rights = AccessFs::ReadFile | AccessFs::ReadDir;
    if write {
        rights |= AccessFs::from_write(HANDLED_ABI);
    }
    if !path.is_dir() {
        rights &= AccessFs::from_file(HANDLED_ABI);
    }
    rights
}

/// Builds and enforces the ruleset on the calling thread (and, with ABI 8+, all threads).
pub fn restrict(cfg: &LandlockConfig, fabric: FabricNeeds) -> Result<LandlockOutcome, HardenError> {
    let kernel_abi = kernel_abi();
    if !cfg.enabled {
        return Ok(LandlockOutcome {
            state: LandlockState::Disabled,
            kernel_abi,
            all_threads: false,
            rules: 0,
            missing_paths: Vec::new(),
        });
    }
    let mut created = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(HANDLED_ABI))
        .map_err(ll_err)?
        .create()
        .map_err(ll_err)?;
    let mut rules = 0;
    let mut missing_paths = Vec::new();
    for (path, write) in rule_paths(cfg, fabric) {
        let fd = match PathFd::new(&path) {
            Ok(fd) => fd,
            Err(_) if !path.exists() => {
                missing_paths.push(path);
                continue;
            }
            Err(e) => return Err(ll_err(format!("{}: {e}", path.display()))),
        };
        let rights = rights_for(&path, write);
        created = created
            .add_rule(PathBeneath::new(fd, rights))
            .map_err(|e| ll_err(format!("{}: {e}", path.display())))?;
        rules += 1;
    }
    // apply() runs single-threaded, so restricting this thread covers the process. Asking
    // for all threads on a kernel that cannot (ABI < 8) would only mark the result partial.
    let status = if kernel_abi >= 8 {
        created.all_threads(true).map_err(ll_err)?.restrict_self()
    } else {
        created.restrict_self()
    }
    .map_err(ll_err)?;
    let state = match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockState::FullyEnforced,
        RulesetStatus::PartiallyEnforced => LandlockState::PartiallyEnforced,
        RulesetStatus::NotEnforced => LandlockState::NotEnforced,
    };
    if cfg.required && state == LandlockState::NotEnforced {
        return Err(HardenError::LandlockUnavailable(kernel_abi));
    }
    Ok(LandlockOutcome {
        state,
        kernel_abi,
        all_threads: status.all_threads,
        rules,
        missing_paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_adds_devices_and_soft_does_not() {
        let cfg = LandlockConfig {
            read_only: vec!["/etc/memgate".into()],
            read_write: vec!["/run/memgate".into()],
            ..LandlockConfig::default()
        };
        let soft = rule_paths(&cfg, FabricNeeds::Soft);
        assert_eq!(soft.len(), 3);
        assert!(soft.contains(&(PathBuf::from("/proc"), false)));
        assert!(!soft.iter().any(|(p, _)| p.starts_with("/dev")));
        let verbs = rule_paths(&cfg, FabricNeeds::Verbs);
        assert!(verbs.contains(&(PathBuf::from("/dev/infiniband"), true)));
    }

    #[test]
    fn file_rules_carry_only_file_rights() {
        let r = rights_for(Path::new("/proc/self/status"), true);
        assert!(!r.contains(AccessFs::MakeReg));
        assert!(r.contains(AccessFs::WriteFile));
        assert!(!r.contains(AccessFs::Execute));
        let d = rights_for(Path::new("/proc"), false);
        assert!(d.contains(AccessFs::ReadDir) && !d.contains(AccessFs::WriteFile));
    }
}
