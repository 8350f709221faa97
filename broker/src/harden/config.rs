//! The `[hardening]` section of memgated's configuration.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Which fabric provider the broker serves, i.e. which capabilities and devices it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FabricNeeds {
    /// Soft fabric: reads through requester-supplied fds, needs no capability.
    #[default]
    Soft,
    /// Verbs with the patched kernel (pidfd registration): CAP_IPC_LOCK to pin another
    /// process's pages, CAP_SYS_PTRACE because the kernel's ptrace check runs on the broker
    /// (targets of other users, Yama), /dev/infiniband; no Landlock (it refuses that check).
    Verbs,
    /// Verbs with the stock-kernel path (ptrace injection): CAP_IPC_LOCK, CAP_SYS_PTRACE.
    VerbsStockKernel,
}

impl FabricNeeds {
    /// Name used in the seccomp allow-list's `fabrics` field.
    pub fn as_str(self) -> &'static str {
        match self {
            FabricNeeds::Soft => "soft",
            FabricNeeds::Verbs => "verbs",
            FabricNeeds::VerbsStockKernel => "verbs-stock-kernel",
        }
    }

    /// Capabilities the fabric needs at run time.
    pub fn capabilities(self) -> &'static [caps::Capability] {
        match self {
            FabricNeeds::Soft => &[],
            FabricNeeds::Verbs | FabricNeeds::VerbsStockKernel => &[
                caps::Capability::CAP_IPC_LOCK,
                caps::Capability::CAP_SYS_PTRACE,
            ],
        }
    }

    /// Whether the fabric opens RDMA devices.
    pub fn uses_devices(self) -> bool {
        !matches!(self, FabricNeeds::Soft)
    }
}

/// What to do when a syscall outside the allow-list is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeccompViolation {
    /// Fail the call with EPERM; the kernel logs it (SECCOMP_FILTER_FLAG_LOG).
    #[default]
    Errno,
    /// Kill the whole process (SECCOMP_RET_KILL_PROCESS, always logged).
    Kill,
}

/// `[hardening.seccomp]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeccompConfig {
    /// Install the allow-list filter (default true).
    pub enabled: bool,
    /// Action on a refused syscall (default `errno`).
    pub action: SeccompViolation,
}

impl Default for SeccompConfig {
    fn default() -> Self {
        SeccompConfig {
            enabled: true,
            action: SeccompViolation::Errno,
        }
    }
}

/// `[hardening.landlock]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LandlockConfig {
    /// Restrict filesystem access with Landlock (default true).
    pub enabled: bool,
    /// Fail start-up when the kernel enforces no Landlock rule at all (default false:
    /// best effort, reported by --check-hardening).
    pub required: bool,
    /// Paths (files or directories) readable: configuration, policy and its signature,
    /// admin keys. Directories cover everything beneath them; give the policy's directory
    /// so that a policy replaced by rename is still readable on SIGHUP.
    pub read_only: Vec<PathBuf>,
    /// Paths readable and writable: the audit log (or its directory, for rotation) and the
    /// runtime directory (new sockets).
    pub read_write: Vec<PathBuf>,
    /// Allow reading /proc (target maps, cgroup, status, fdinfo). Default true.
    pub proc: bool,
}

impl Default for LandlockConfig {
    fn default() -> Self {
        LandlockConfig {
            enabled: true,
            required: false,
            read_only: Vec::new(),
            read_write: Vec::new(),
            proc: true,
        }
    }
}

/// memgated's `[hardening]` configuration section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HardenConfig {
    /// User to switch to (setgroups + setresgid + setresuid) before dropping capabilities.
    pub run_as: Option<String>,
    /// The fabric in use. The broker sets this from its fabric configuration
    /// ([`HardenConfig::with_fabric`]); it may also be written here.
    pub fabric: FabricNeeds,
    /// Capabilities kept in addition to the fabric's (names like "CAP_NET_BIND_SERVICE").
    pub extra_caps: Vec<String>,
    /// Set no_new_privs (default true; seccomp and Landlock set it anyway).
    pub no_new_privs: bool,
    /// seccomp allow-list settings.
    pub seccomp: SeccompConfig,
    /// Landlock settings.
    pub landlock: LandlockConfig,
}

impl Default for HardenConfig {
    fn default() -> Self {
        HardenConfig {
            run_as: None,
            fabric: FabricNeeds::Soft,
            extra_caps: Vec::new(),
            no_new_privs: true,
            seccomp: SeccompConfig::default(),
            landlock: LandlockConfig::default(),
        }
    }
}

impl HardenConfig {
    /// A config with every protection on, for the given fabric.
    pub fn strict(fabric: FabricNeeds) -> Self {
        HardenConfig {
            fabric,
            ..HardenConfig::default()
        }
    }

    /// Sets the fabric (the broker calls this from its own fabric configuration).
    pub fn with_fabric(mut self, fabric: FabricNeeds) -> Self {
        self.fabric = fabric;
        self
    }

    /// Adds a read-only Landlock path (config file, policy directory, admin keys).
    pub fn allow_read(&mut self, path: impl AsRef<Path>) -> &mut Self {
        self.landlock.read_only.push(path.as_ref().to_path_buf());
        self
    }

    /// Adds a read-write Landlock path (audit log, runtime directory).
    pub fn allow_write(&mut self, path: impl AsRef<Path>) -> &mut Self {
        self.landlock.read_write.push(path.as_ref().to_path_buf());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_section_and_rejects_unknown_keys() {
        let cfg: HardenConfig = toml::from_str(
            r#"
            run_as = "memgate"
            fabric = "verbs-stock-kernel"
            extra_caps = ["CAP_NET_BIND_SERVICE"]
            [seccomp]
            action = "kill"
            [landlock]
            required = true
            read_only = ["/etc/memgate"]
            read_write = ["/run/memgate", "/var/log/memgate"]
            "#,
        )
        .expect("valid section");
        assert_eq!(cfg.run_as.as_deref(), Some("memgate"));
        assert_eq!(cfg.fabric, FabricNeeds::VerbsStockKernel);
        assert_eq!(cfg.seccomp.action, SeccompViolation::Kill);
        assert!(cfg.seccomp.enabled && cfg.landlock.enabled && cfg.landlock.proc);
        assert!(cfg.no_new_privs);
        assert_eq!(cfg.landlock.read_write.len(), 2);

        let err = toml::from_str::<HardenConfig>("[landlock]\nrequird = true\n")
            .expect_err("typo must be refused");
        assert!(err.to_string().contains("requird"), "{err}");
    }

    #[test]
    fn empty_section_is_strict_soft() {
        let cfg: HardenConfig = toml::from_str("").expect("empty");
        assert_eq!(cfg, HardenConfig::strict(FabricNeeds::Soft));
        assert!(cfg.fabric.capabilities().is_empty());
    }
}
