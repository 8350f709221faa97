//! Reading what the fault server is given: the grant document (`memgate_proto::Grant`, as
//! `memgate export` prints it) from a file or stdin, and the peer secret key (PASERK
//! `k4.secret.`, as `memgate key gen --kind peer` writes it).

use crate::cli::input::{read_bounded, MAX_DOCUMENT, MAX_SMALL};
use anyhow::Context;
use memgate_proto::Grant;
use std::path::Path;

/// Reads a grant from `path` (`-` = stdin), at most 1 MiB, and checks its regions
/// ([`Grant::validate`]) so that a bad document is refused before anything connects.
pub fn read_grant(path: &str) -> anyhow::Result<Grant> {
    let text = read_bounded(Path::new(path), MAX_DOCUMENT, "grant")?;
    let name = if path == "-" {
        "the grant on stdin"
    } else {
        path
    };
    let grant = Grant::from_json(text.trim())
        .with_context(|| format!("{name} is not a memgate grant document"))?;
    grant
        .validate()
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    Ok(grant)
}

/// Reads a PASERK `k4.secret.` peer key file and returns the Ed25519 seed.
pub fn read_peer_seed(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text = read_bounded(path, MAX_SMALL, "key")?;
    let key = memgate_policy::keys::SecretKey::from_paserk(text.trim())
        .with_context(|| format!("{} is not a PASERK k4.secret key", path.display()))?;
    Ok(*key.seed())
}

/// Writes a fresh peer key pair into `dir` as `NAME.key` (0600) / `NAME.pub`; returns the
/// PASERK public key string.
pub fn write_peer_key(dir: &Path, name: &str) -> anyhow::Result<(String, [u8; 32])> {
    use std::os::unix::fs::OpenOptionsExt;
    let k = memgate_policy::keys::SecretKey::generate().context("generating a peer key")?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(format!("{name}.key")))?;
    std::io::Write::write_all(&mut f, format!("{}\n", k.to_paserk()).as_bytes())?;
    let public = k.public().to_paserk();
    std::fs::write(dir.join(format!("{name}.pub")), format!("{public}\n"))?;
    Ok((public, *k.seed()))
}
