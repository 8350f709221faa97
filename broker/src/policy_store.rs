//! The policy in force: loaded at start (refusing to start without a valid one) and on
//! SIGHUP, only when its minisign signature verifies against an admin key and its serial
//! is not a rollback. A rejected reload keeps the last good policy.

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
            | PolicyLoadError::SameSerialDifferent { .. } => "policy_rollback",
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
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

impl PolicyStore {
    /// Loads the admin keys and the initial policy; any failure means the broker must not
    /// start.
    pub fn open(cfg: &PolicyConfig) -> Result<PolicyStore, PolicyLoadError> {
        let admins = load_admin_keys(&cfg.admin_keys)?;
        let current = Self::read(cfg, &admins)?;
        Ok(PolicyStore {
            cfg: cfg.clone(),
            admins,
            current,
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
        self.current = new;
        Ok(Reloaded::Replaced { old_serial })
    }
}
