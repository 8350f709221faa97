//! Reading what the fault server is given: the grant document (`memgate_proto::Grant`, as
//! `memgate export` prints it) from a file or stdin, and the peer secret key (PASERK
//! `k4.secret.`, as `memgate key gen --kind peer` writes it).

use anyhow::Context;
use memgate_proto::Grant;
use std::io::Read;
use std::path::Path;

/// Reads a grant from `path` (`-` = stdin).
pub fn read_grant(path: &str) -> anyhow::Result<Grant> {
    let text = if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the grant from stdin")?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading grant {path}"))?
    };
    Grant::from_json(text.trim()).context("the grant is not a memgate grant document")
}

/// Reads a PASERK `k4.secret.` peer key file and returns the Ed25519 seed.
pub fn read_peer_seed(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let key = memgate_policy::keys::SecretKey::from_paserk(&text)
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
