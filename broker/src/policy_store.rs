//! The policy in force: loaded at start (refusing to start without a valid one) and on
//! SIGHUP, only when its minisign signature verifies against an admin key and its serial
//! is not a rollback. A rejected reload keeps the last good policy.
//!
//! Rollback protection outlives the process: the highest serial accepted (and the SHA-256
//! of that document) is kept in `<state_dir>/policy.state`, written atomically (temporary
//! file, fsync, rename, fsync of the directory) before a policy is put in force. At start a
//! policy with a lower serial, or the same serial with other content, is refused. An
//! operator who really means to go back deletes that file (see docs/broker-api.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use memgate_policy::minisign::PublicKey as AdminKey;
use memgate_policy::signed::{self, LoadError};
use memgate_policy::Policy;

use crate::config::PolicyConfig;

/// Largest signature file read.
const MAX_SIG_BYTES: u64 = 64 * 1024;

/// Why a policy (or an admin key) was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// A file is larger than allowed.
    #[error("{path} is larger than {limit} bytes")]
    TooLarge {
        /// File.
        path: PathBuf,
        /// Limit.
        limit: u64,
    },
    /// An admin key file is not a minisign public key.
    #[error("admin key {path}: {message}")]
    AdminKey {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// No admin key is configured.
    #[error("no admin keys configured")]
    NoAdminKeys,
    /// Signature, document or serial refused.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The policy is older than the newest one this broker ever accepted (state file).
    #[error(
        "policy serial {new} is older than serial {stored} accepted before (recorded in {}): \
         refusing rollback; to roll back on purpose, delete that file and start again",
        path.display()
    )]
    StoredRollback {
        /// Serial of the policy offered.
        new: u64,
        /// Highest serial accepted before.
        stored: u64,
        /// The state file.
        path: PathBuf,
    },
    /// The same serial as recorded in the state file, with other content.
    #[error(
        "policy serial {serial} was accepted before with different content (recorded in {}): \
         refusing; to accept it on purpose, delete that file and start again",
        path.display()
    )]
    StoredDifferent {
        /// Serial.
        serial: u64,
        /// The state file.
        path: PathBuf,
    },
    /// The rollback-protection state could not be read or written.
    #[error("policy state {}: {source}", path.display())]
    State {
        /// File or directory.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The state file exists but is not what this broker writes.
    #[error("policy state {} is damaged ({message}); delete it to start over", path.display())]
    StateDamaged {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The same serial with different content (only an identical reload is a no-op).
    #[error("policy serial {serial} is already in force with different content: refusing")]
    SameSerialDifferent {
        /// Serial.
        serial: u64,
    },
}

impl PolicyLoadError {
    /// Stable code for audit records.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyLoadError::Read { .. } => "policy_unreadable",
            PolicyLoadError::TooLarge { .. } => "policy_too_large",
            PolicyLoadError::AdminKey { .. } | PolicyLoadError::NoAdminKeys => "admin_key_invalid",
            PolicyLoadError::Load(LoadError::SignatureFormat(_)) => "policy_signature_malformed",
            PolicyLoadError::Load(LoadError::Signature(_)) => "policy_signature_invalid",
            PolicyLoadError::Load(LoadError::Policy(_)) => "policy_invalid",
            PolicyLoadError::Load(LoadError::Rollback { .. })
            | PolicyLoadError::SameSerialDifferent { .. }
            | PolicyLoadError::StoredRollback { .. }
            | PolicyLoadError::StoredDifferent { .. } => "policy_rollback",
            PolicyLoadError::State { .. } | PolicyLoadError::StateDamaged { .. } => {
                "policy_state_unusable"
            }
        }
    }
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, PolicyLoadError> {
    use std::io::Read;
    let read_err = |source| PolicyLoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(read_err)?;
    let mut buf = Vec::new();
    f.take(limit + 1).read_to_end(&mut buf).map_err(read_err)?;
    if buf.len() as u64 > limit {
        return Err(PolicyLoadError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(buf)
}

/// Reads the admin public key files.
pub fn load_admin_keys(paths: &[PathBuf]) -> Result<Vec<AdminKey>, PolicyLoadError> {
    if paths.is_empty() {
        return Err(PolicyLoadError::NoAdminKeys);
    }
    paths
        .iter()
        .map(|p| {
            let bytes = read_limited(p, MAX_SIG_BYTES)?;
            let text = String::from_utf8_lossy(&bytes);
            AdminKey::from_file_text(&text).map_err(|e| PolicyLoadError::AdminKey {
                path: p.clone(),
                message: e.to_string(),
            })
        })
        .collect()
}

/// A policy that verified, with what verified it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The document.
    pub policy: Arc<Policy>,
    /// Fingerprint (key id) of the admin key that signed it.
    pub signer: String,
    /// SHA-256 of the document bytes, hex (audit).
    pub digest: String,
}

/// What a reload did.
#[derive(Debug, Clone)]
pub enum Reloaded {
    /// A newer policy is in force.
    Replaced {
        /// Serial before.
        old_serial: u64,
    },
    /// The file is the one already in force.
    Unchanged,
}

/// The policy in force and how to reload it.
#[derive(Debug)]
pub struct PolicyStore {
    cfg: PolicyConfig,
    admins: Vec<AdminKey>,
    current: Loaded,
    state: StateFile,
}

/// Name of the rollback-protection file inside the state directory.
pub const STATE_FILE: &str = "policy.state";

/// What the state file records: the newest policy ever put in force.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    /// Its serial.
    pub serial: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

/// The rollback-protection file.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
}

impl StateFile {
    /// The state file in `dir`.
    pub fn new(dir: &Path) -> StateFile {
        StateFile {
            dir: dir.to_path_buf(),
        }
    }

    /// Path of the file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// What was accepted before; None when nothing was (no file).
    pub fn load(&self) -> Result<Option<Accepted>, PolicyLoadError> {
        let path = self.path();
        let bytes = match read_limited(&path, 4096) {
            Ok(b) => b,
            Err(PolicyLoadError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let damaged = |message: String| PolicyLoadError::StateDamaged {
            path: path.clone(),
            message,
        };
        let text = std::str::from_utf8(&bytes).map_err(|e| damaged(e.to_string()))?;
        let acc: Accepted = toml::from_str(text).map_err(|e| damaged(e.message().to_string()))?;
        if acc.sha256.len() != 64 || !acc.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(damaged("sha256 is not 64 hex digits".into()));
        }
        Ok(Some(acc))
    }

    /// Refuses `new` if it is older than what was accepted before, or the same serial with
    /// other content.
    pub fn check(&self, new: &Loaded) -> Result<Option<Accepted>, PolicyLoadError> {
        let prev = self.load()?;
        if let Some(p) = &prev {
            if new.policy.serial < p.serial {
                return Err(PolicyLoadError::StoredRollback {
                    new: new.policy.serial,
                    stored: p.serial,
                    path: self.path(),
                });
            }
            if new.policy.serial == p.serial && !new.digest.eq_ignore_ascii_case(&p.sha256) {
                return Err(PolicyLoadError::StoredDifferent {
                    serial: p.serial,
                    path: self.path(),
                });
            }
        }
        Ok(prev)
    }

    /// Records `acc` atomically: a temporary file in the same directory, fsync, rename over
    /// the old file, fsync of the directory. Creates the directory (0700) when missing.
    pub fn store(&self, acc: &Accepted) -> Result<(), PolicyLoadError> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PolicyLoadError::State { path, source }
        };
        // The *at calls: the seccomp allow-list has renameat/mkdirat, not rename/mkdir.
        if !self.dir.is_dir() {
            if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(err(parent))?;
            }
            match rustix::fs::mkdirat(
                rustix::fs::CWD,
                &self.dir,
                rustix::fs::Mode::from_raw_mode(0o700),
            ) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(err(&self.dir)(e.into())),
            }
        }
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let _ = rustix::fs::unlinkat(rustix::fs::CWD, &tmp, rustix::fs::AtFlags::empty());
        let text = format!(
            "# memgated rollback protection: the newest policy ever put in force.\n\
             # A policy with a lower serial is refused. Delete this file to allow a rollback.\n\
             serial = {}\nsha256 = \"{}\"\n",
            acc.serial, acc.sha256
        );
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err(&tmp))?;
        f.write_all(text.as_bytes()).map_err(err(&tmp))?;
        f.sync_all().map_err(err(&tmp))?;
        drop(f);
        let path = self.path();
        rustix::fs::renameat(rustix::fs::CWD, &tmp, rustix::fs::CWD, &path)
            .map_err(|e| err(&path)(e.into()))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(err(&self.dir))?;
        Ok(())
    }

    /// Checks `new` and, when it is newer than the record (or there is none), records it.
    fn accept(&self, new: &Loaded) -> Result<(), PolicyLoadError> {
        let prev = self.check(new)?;
        if !matches!(&prev, Some(p) if p.serial >= new.policy.serial) {
            self.store(&Accepted {
                serial: new.policy.serial,
                sha256: new.digest.clone(),
            })?;
        }
        Ok(())
    }
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

impl PolicyStore {
    /// Loads the admin keys and the initial policy, refuses it when the state file in
    /// `state_dir` records a newer one, and records it; any failure means the broker must
    /// not start.
    pub fn open(cfg: &PolicyConfig, state_dir: &Path) -> Result<PolicyStore, PolicyLoadError> {
        let store = Self::open_unrecorded(cfg, state_dir)?;
        store.state.accept(&store.current)?;
        Ok(store)
    }

    /// Like [`PolicyStore::open`] (including the rollback check) but writes nothing: for
    /// `--check-config`.
    pub fn check(cfg: &PolicyConfig, state_dir: &Path) -> Result<PolicyStore, PolicyLoadError> {
        let store = Self::open_unrecorded(cfg, state_dir)?;
        store.state.check(&store.current)?;
        Ok(store)
    }

    fn open_unrecorded(
        cfg: &PolicyConfig,
        state_dir: &Path,
    ) -> Result<PolicyStore, PolicyLoadError> {
        let admins = load_admin_keys(&cfg.admin_keys)?;
        let current = Self::read(cfg, &admins)?;
        Ok(PolicyStore {
            cfg: cfg.clone(),
            admins,
            current,
            state: StateFile::new(state_dir),
        })
    }

    fn read(cfg: &PolicyConfig, admins: &[AdminKey]) -> Result<Loaded, PolicyLoadError> {
        let doc = read_limited(&cfg.path, memgate_policy::document::MAX_POLICY_BYTES as u64)?;
        let sig = read_limited(&cfg.signature_path(), MAX_SIG_BYTES)?;
        let sig = String::from_utf8_lossy(&sig);
        let signed = signed::load_signed(&doc, &sig, admins)?;
        Ok(Loaded {
            policy: Arc::new(signed.policy),
            signer: signed.signer.fingerprint(),
            digest: digest(&doc),
        })
    }

    /// The policy in force.
    pub fn current(&self) -> &Loaded {
        &self.current
    }

    /// The policy in force (shared handle).
    pub fn policy(&self) -> &Arc<Policy> {
        &self.current.policy
    }

    /// The admin keys.
    pub fn admin_keys(&self) -> &[AdminKey] {
        &self.admins
    }

    /// Re-reads the policy. On any error the policy in force stays.
    pub fn reload(&mut self) -> Result<Reloaded, PolicyLoadError> {
        let new = Self::read(&self.cfg, &self.admins)?;
        let old_serial = self.current.policy.serial;
        if new.digest == self.current.digest {
            return Ok(Reloaded::Unchanged);
        }
        if new.policy.serial == old_serial {
            return Err(PolicyLoadError::SameSerialDifferent { serial: old_serial });
        }
        signed::check_serial(&new.policy, old_serial, false)?;
        // Recorded before it is in force: a restart must never accept anything older.
        self.state.accept(&new)?;
        self.current = new;
        Ok(Reloaded::Replaced { old_serial })
    }
}
