//! Command-line flags of `memgated`: which configuration file to read and the values that
//! override it, plus the one-shot modes (`--check-config`, `--check-hardening`).

use std::path::{Path, PathBuf};

use clap::Parser;

use crate::config::{Config, ConfigError, LogTarget, DEFAULT_CONFIG};

/// memgated: the memgate broker. Runs in the foreground; `dist/memgated.service` runs it
/// under systemd.
#[derive(Debug, Clone, Parser, Default)]
#[command(name = "memgated", version, about)]
pub struct Args {
    /// Configuration file (TOML). Default: /etc/memgate/memgated.toml when it exists.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// API socket path (overrides `socket`).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Policy document (overrides `policy.path`).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Policy signature (overrides `policy.signature`).
    #[arg(long, value_name = "FILE")]
    pub policy_signature: Option<PathBuf>,
    /// Admin minisign public key file; repeat for several (replaces `policy.admin_keys`).
    #[arg(long = "admin-key", value_name = "FILE")]
    pub admin_keys: Vec<PathBuf>,
    /// Fabric listen endpoint, `tcp:IP:PORT` or `unix:PATH` (overrides `fabric.listen`).
    #[arg(long, value_name = "ENDPOINT")]
    pub fabric_listen: Option<String>,
    /// Endpoint written into grants (overrides `fabric.advertise`).
    #[arg(long, value_name = "ENDPOINT")]
    pub fabric_advertise: Option<String>,
    /// Audit log file (overrides `audit.path`).
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Log filter (overrides `log_level`).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log destination: auto, journald or stderr (overrides `log_target`).
    #[arg(long, value_name = "TARGET")]
    pub log_target: Option<LogTarget>,
    /// Do not apply process hardening (development only; logged and audited).
    #[arg(long)]
    pub no_harden: bool,
    /// Load the configuration, the admin keys and the policy, report, and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Report the hardening in force in this process against the configuration, and exit.
    #[arg(long)]
    pub check_hardening: bool,
}

impl Args {
    /// Reads the configuration file (if any) and applies the flags on top.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut cfg = match &self.config {
            Some(path) => Config::load(path)?,
            None if Path::new(DEFAULT_CONFIG).exists() => Config::load(Path::new(DEFAULT_CONFIG))?,
            None => Config::default(),
        };
        self.apply(&mut cfg);
        Ok(cfg)
    }

    /// Applies the override flags to `cfg`.
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(s) = &self.socket {
            cfg.socket = s.clone();
        }
        if let Some(p) = &self.policy {
            cfg.policy.path = p.clone();
        }
        if let Some(s) = &self.policy_signature {
            cfg.policy.signature = Some(s.clone());
        }
        if !self.admin_keys.is_empty() {
            cfg.policy.admin_keys = self.admin_keys.clone();
        }
        if let Some(l) = &self.fabric_listen {
            cfg.fabric.listen = l.clone();
        }
        if let Some(a) = &self.fabric_advertise {
            cfg.fabric.advertise = Some(a.clone());
        }
        if let Some(a) = &self.audit_log {
            cfg.audit.path = Some(a.clone());
        }
        if let Some(l) = &self.log_level {
            cfg.log_level = l.clone();
        }
        if let Some(t) = self.log_target {
            cfg.log_target = t;
        }
        // Flags are relative to the working directory, as usual on a command line.
        if let Ok(cwd) = std::env::current_dir() {
            cfg.rebase(&cwd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("m.toml");
        std::fs::write(
            &file,
            "socket = \"a.sock\"\nlog_level = \"debug\"\n[policy]\nadmin_keys = [\"k.pub\"]\n",
        )
        .expect("write");
        let args = Args::try_parse_from([
            "memgated",
            "--config",
            file.to_str().expect("utf-8 path"),
            "--socket",
            "/run/x.sock",
            "--admin-key",
            "/a.pub",
            "--admin-key",
            "/b.pub",
            "--fabric-listen",
            "tcp:127.0.0.1:0",
            "--log-target",
            "stderr",
        ])
        .expect("flags parse");
        let cfg = args.resolve().expect("resolves");
        assert_eq!(cfg.socket, PathBuf::from("/run/x.sock"));
        assert_eq!(cfg.log_level, "debug");
        assert_eq!(cfg.log_target, LogTarget::Stderr);
        assert_eq!(
            cfg.policy.admin_keys,
            vec![PathBuf::from("/a.pub"), "/b.pub".into()]
        );
        assert_eq!(cfg.fabric.listen, "tcp:127.0.0.1:0");
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let args = Args::try_parse_from(["memgated", "--config", "/nonexistent/memgated.toml"])
            .expect("flags parse");
        assert!(matches!(args.resolve(), Err(ConfigError::Read { .. })));
    }
}
