//! memgated's configuration file (TOML) and its defaults.
//!
//! The file is strict: unknown keys are refused with their name. Relative paths are taken
//! relative to the directory of the configuration file, so a test or demo can write a
//! self-contained configuration into a temporary directory. Command-line flags override
//! the file (see [`crate::cli`]). `dist/memgated.toml` is a commented example.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::harden::HardenConfig;

/// Default path of the configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/memgate/memgated.toml";
/// Default path of the API socket.
pub const DEFAULT_SOCKET: &str = "/run/memgate/broker.sock";
/// Default policy document.
pub const DEFAULT_POLICY: &str = "/etc/memgate/policy.toml";
/// Default state directory (systemd's `StateDirectory=memgate`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/memgate";
/// Default fabric listen endpoint.
pub const DEFAULT_FABRIC_LISTEN: &str = "tcp:0.0.0.0:7471";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading configuration {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown keys are named).
    #[error("configuration {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("configuration: {0}")]
    Invalid(String),
}

/// `[policy]`: the signed policy and the keys allowed to sign it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Policy document (TOML).
    pub path: PathBuf,
    /// Detached minisign signature; default: `path` + `.minisig`.
    pub signature: Option<PathBuf>,
    /// minisign public key files of the administrators allowed to sign policies.
    pub admin_keys: Vec<PathBuf>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            path: PathBuf::from(DEFAULT_POLICY),
            signature: None,
            admin_keys: Vec::new(),
        }
    }
}

impl PolicyConfig {
    /// The signature file actually used.
    pub fn signature_path(&self) -> PathBuf {
        self.signature.clone().unwrap_or_else(|| {
            let mut s = self.path.clone().into_os_string();
            s.push(".minisig");
            PathBuf::from(s)
        })
    }
}

/// `[fabric]`: where the responder listens and what grants advertise.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FabricConfig {
    /// Listen endpoint: `tcp:IP:PORT` (port 0 picks one) or `unix:PATH`.
    pub listen: String,
    /// Endpoint written into grants when it differs from the listen address (e.g. the
    /// host's routable address when listening on 0.0.0.0). Default: the bound address.
    pub advertise: Option<String>,
}

impl Default for FabricConfig {
    fn default() -> Self {
        FabricConfig {
            listen: DEFAULT_FABRIC_LISTEN.to_string(),
            advertise: None,
        }
    }
}

/// `[audit]`: where audit records go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// JSON-lines audit file (appended to; created mode 0640). None: journal only.
    pub path: Option<PathBuf>,
    /// Also send every record to the journal (when journald is running).
    pub journal: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: Some(PathBuf::from("/var/log/memgate/audit.jsonl")),
            journal: true,
        }
    }
}

/// `[limits]`: bounds that are the broker's, not the policy's (per-uid quotas are in the
/// policy).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most simultaneous API connections; more are accepted and closed at once.
    pub max_connections: usize,
    /// Most live grants, all uids together.
    pub max_grants: usize,
    /// Most bytes under live grants, all uids together.
    pub max_total_bytes: u64,
    /// Most regions one `Export` may list.
    pub max_regions: usize,
    /// Largest API message accepted, bytes (at most the protocol's 65536).
    pub max_message: usize,
    /// Clock-skew allowance for token times, seconds.
    pub token_skew_secs: u64,
    /// Most unexpired token ids remembered by the replay cache.
    pub replay_capacity: usize,
    /// Longest `Wait` a client may ask for, milliseconds (longer ones are capped).
    pub max_wait_ms: u64,
    /// How many ended grants are remembered so a late `Wait` still learns the outcome.
    pub tombstones: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 1024,
            max_grants: 4096,
            max_total_bytes: 1 << 40,
            max_regions: 4096,
            max_message: memgate_proto::MAX_MESSAGE,
            token_skew_secs: 30,
            replay_capacity: 100_000,
            max_wait_ms: 24 * 3600 * 1000,
            tombstones: 4096,
        }
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogTarget {
    /// The journal when `JOURNAL_STREAM` says stderr is the journal or the journal socket
    /// exists, else stderr.
    #[default]
    Auto,
    /// The journal (native protocol).
    Journald,
    /// Standard error.
    Stderr,
}

impl std::str::FromStr for LogTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(LogTarget::Auto),
            "journald" => Ok(LogTarget::Journald),
            "stderr" => Ok(LogTarget::Stderr),
            _ => Err(format!(
                "log target must be auto, journald or stderr, not {s:?}"
            )),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// API socket path (ignored under socket activation).
    pub socket: PathBuf,
    /// Permission bits of the API socket (anyone may ask; admission decides).
    pub socket_mode: u32,
    /// Log filter (`tracing` env-filter syntax, e.g. `info` or `memgated=debug`).
    pub log_level: String,
    /// Log destination.
    pub log_target: LogTarget,
    /// Where memgated keeps state across restarts (the highest policy serial accepted,
    /// for rollback protection). Default: `$STATE_DIRECTORY` when systemd sets it, else
    /// `/var/lib/memgate`.
    pub state_dir: Option<PathBuf>,
    /// The signed policy.
    pub policy: PolicyConfig,
    /// The fabric responder.
    pub fabric: FabricConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// Broker-wide limits.
    pub limits: LimitsConfig,
    /// Process hardening (see `docs/hardening.md`).
    #[serde(alias = "hardening")]
    pub harden: HardenConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: PathBuf::from(DEFAULT_SOCKET),
            socket_mode: 0o666,
            log_level: "info".to_string(),
            log_target: LogTarget::Auto,
            state_dir: None,
            policy: PolicyConfig::default(),
            fabric: FabricConfig::default(),
            audit: AuditConfig::default(),
            limits: LimitsConfig::default(),
            harden: HardenConfig::default(),
        }
    }
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn rebase(base: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}

impl Config {
    /// Parses configuration text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path, origin: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.message().trim_end().to_string()
                + &e.span()
                    .map(|s| {
                        let (line, col) = line_col(text, s.start);
                        format!(" (line {line}, column {col})")
                    })
                    .unwrap_or_default(),
        })?;
        cfg.rebase(base);
        Ok(cfg)
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        // An absolute base keeps paths in logs and Landlock rules free of "./".
        let base = match parent {
            Some(p) => std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()),
            None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        };
        Config::parse(&text, &base, path)
    }

    /// Makes every relative path absolute against `base`.
    pub fn rebase(&mut self, base: &Path) {
        rebase(base, &mut self.socket);
        if let Some(s) = &mut self.state_dir {
            rebase(base, s);
        }
        rebase(base, &mut self.policy.path);
        if let Some(s) = &mut self.policy.signature {
            rebase(base, s);
        }
        for k in &mut self.policy.admin_keys {
            rebase(base, k);
        }
        if let Some(a) = &mut self.audit.path {
            rebase(base, a);
        }
        if let Some(rest) = self.fabric.listen.strip_prefix("unix:") {
            let mut p = PathBuf::from(rest);
            rebase(base, &mut p);
            self.fabric.listen = format!("unix:{}", p.display());
        }
        for p in &mut self.harden.landlock.read_only {
            rebase(base, p);
        }
        for p in &mut self.harden.landlock.read_write {
            rebase(base, p);
        }
    }

    /// The state directory in use: `state_dir`, else the first of systemd's
    /// `$STATE_DIRECTORY`, else [`DEFAULT_STATE_DIR`].
    pub fn state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        std::env::var_os("STATE_DIRECTORY")
            .and_then(|v| {
                v.to_str()
                    .and_then(|s| s.split(':').next())
                    .filter(|s| s.starts_with('/'))
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }

    /// Checks values that the schema cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.policy.admin_keys.is_empty() {
            return bad("policy.admin_keys is empty: no policy could ever verify".into());
        }
        if self.limits.max_message < memgate_proto::HEADER_LEN
            || self.limits.max_message > memgate_proto::MAX_MESSAGE
        {
            return bad(format!(
                "limits.max_message must be between {} and {}",
                memgate_proto::HEADER_LEN,
                memgate_proto::MAX_MESSAGE
            ));
        }
        if self.socket_mode > 0o777 {
            return bad(format!(
                "socket_mode {:#o} is not a permission mask",
                self.socket_mode
            ));
        }
        if self.limits.max_connections == 0 || self.limits.max_grants == 0 {
            return bad("limits.max_connections and limits.max_grants must be positive".into());
        }
        let listen = memgate_fabric::Endpoint::parse(&self.fabric.listen)
            .map_err(|e| ConfigError::Invalid(format!("fabric.listen: {e}")))?;
        if matches!(listen, memgate_fabric::Endpoint::Rdma(_)) {
            if !cfg!(feature = "verbs") {
                return bad(format!(
                    "fabric.listen {}: rdma: endpoints need memgated built with the verbs \
                     feature (cargo build --release --features verbs)",
                    self.fabric.listen
                ));
            }
            if self.harden.landlock.enabled {
                return bad(format!(
                    "fabric.listen {}: registering targets by pidfd needs the kernel's ptrace \
                     check on the broker to pass, which Landlock refuses; set \
                     [hardening.landlock] enabled = false (seccomp and the capability drop stay)",
                    self.fabric.listen
                ));
            }
        }
        if let Some(a) = &self.fabric.advertise {
            memgate_fabric::Endpoint::parse(a)
                .map_err(|e| ConfigError::Invalid(format!("fabric.advertise: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses() {
        let text = include_str!("../../dist/memgated.toml");
        let cfg = Config::parse(text, Path::new("/etc/memgate"), Path::new("memgated.toml"))
            .expect("dist/memgated.toml must parse");
        assert_eq!(cfg.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(cfg.socket_mode, 0o666);
        assert!(!cfg.policy.admin_keys.is_empty());
        cfg.validate().expect("example validates");
    }

    #[test]
    fn relative_paths_follow_the_file_and_unknown_keys_are_named() {
        let cfg = Config::parse(
            "socket = \"b.sock\"\n[policy]\npath = \"p.toml\"\nadmin_keys = [\"a.pub\"]\n\
             [fabric]\nlisten = \"unix:f.sock\"\n[audit]\npath = \"audit.jsonl\"\n",
            Path::new("/tmp/x"),
            Path::new("/tmp/x/c.toml"),
        )
        .expect("parses");
        assert_eq!(cfg.socket, PathBuf::from("/tmp/x/b.sock"));
        assert_eq!(
            cfg.policy.signature_path(),
            PathBuf::from("/tmp/x/p.toml.minisig")
        );
        assert_eq!(cfg.policy.admin_keys, vec![PathBuf::from("/tmp/x/a.pub")]);
        assert_eq!(cfg.fabric.listen, "unix:/tmp/x/f.sock");
        assert_eq!(cfg.audit.path, Some(PathBuf::from("/tmp/x/audit.jsonl")));

        let err = Config::parse("sokcet = 1\n", Path::new("/"), Path::new("c.toml"))
            .expect_err("typo refused");
        assert!(err.to_string().contains("sokcet"), "{err}");
        let err = Config::parse("[limits]\nmax_grant = 1\n", Path::new("/"), Path::new("c"))
            .expect_err("typo refused");
        assert!(err.to_string().contains("max_grant"), "{err}");
    }

    #[test]
    fn parse_errors_give_line_and_column() {
        let err = Config::parse(
            "socket = \"a\"\n[limits]\nmax_grants = \"many\"\n",
            Path::new("/"),
            Path::new("c.toml"),
        )
        .expect_err("a string for a number");
        let msg = err.to_string();
        assert!(msg.contains("(line 3, column 14)"), "{msg}");
        assert!(!msg.contains("byte"), "{msg}");
        assert_eq!(line_col("ab\ncé\nx", 6), (2, 3));
        assert_eq!(line_col("ab\ncé\nx", 7), (3, 1));
    }

    #[test]
    fn validation_refuses_unusable_values() {
        let mut cfg = Config::default();
        assert!(cfg.validate().is_err(), "no admin keys");
        cfg.policy.admin_keys.push("/k.pub".into());
        cfg.validate().expect("defaults plus a key are valid");
        cfg.limits.max_message = 1 << 20;
        assert!(cfg.validate().is_err());
        cfg.limits.max_message = 4096;
        cfg.fabric.listen = "udp:1.2.3.4:5".into();
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn rdma_listen_needs_the_verbs_build_and_no_landlock() {
        let mut cfg = Config::default();
        cfg.policy.admin_keys.push("/k.pub".into());
        cfg.fabric.listen = "rdma:192.0.2.1:0".into();
        let e = cfg.validate().expect_err("landlock on").to_string();
        if cfg!(feature = "verbs") {
            assert!(e.contains("[hardening.landlock] enabled = false"), "{e}");
            cfg.harden.landlock.enabled = false;
            cfg.validate().expect("verbs build, landlock off");
        } else {
            assert!(e.contains("--features verbs"), "{e}");
            cfg.harden.landlock.enabled = false;
            assert!(cfg.validate().is_err(), "still no verbs provider");
        }
        assert_eq!(
            crate::daemon::fabric_needs(&cfg.fabric.listen),
            crate::harden::FabricNeeds::Verbs
        );
        assert_eq!(
            crate::daemon::fabric_needs("tcp:127.0.0.1:0"),
            crate::harden::FabricNeeds::Soft
        );
    }

    #[test]
    fn harden_table_accepts_both_names() {
        for name in ["harden", "hardening"] {
            let cfg = Config::parse(
                &format!("[{name}]\nno_new_privs = false\n[{name}.seccomp]\nenabled = false\n"),
                Path::new("/"),
                Path::new("c"),
            )
            .expect("parses");
            assert!(!cfg.harden.no_new_privs && !cfg.harden.seccomp.enabled);
        }
    }
}
