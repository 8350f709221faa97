//! `memgate key`: generate admin, issuer and peer keys, plus the small file and output
//! helpers the `key`, `policy` and `token` commands share (reading key files, writing a
//! secret file with mode 0600, flattening errors to one line, printing JSON).
//!
//! Formats: an admin key is a minisign key pair (the `.key` file is an *unencrypted*
//! minisign secret key, which stock `minisign -S -s NAME.key` uses without a password
//! prompt; the `.pub` file is a minisign public key file). Issuer and peer keys are
//! PASERK strings: `k4.secret.` in `NAME.key`, `k4.public.` in `NAME.pub`.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use clap::{Subcommand, ValueEnum};
use memgate_policy::keys::{self, PublicKey, SecretKey};
use memgate_policy::minisign;

/// `memgate key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a key pair: DIR/NAME.key (secret, mode 0600) and DIR/NAME.pub.
    Gen {
        /// Directory to write the two files into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Base name of the two files.
        #[arg(long)]
        name: String,
        /// What the key is for: `admin` signs policies (minisign format); `issuer` mints
        /// export tokens and `peer` authenticates a fault server (PASERK format).
        #[arg(long, value_enum, default_value_t = KeyKind::Issuer)]
        kind: KeyKind,
        /// Replace existing files instead of refusing.
        #[arg(long)]
        force: bool,
        /// Print what was written as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The kinds of key `memgate key gen` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyKind {
    /// Policy-signing key (minisign key files).
    Admin,
    /// Token-issuing key (PASERK k4.secret / k4.public).
    Issuer,
    /// Fault-server peer key (PASERK k4.secret / k4.public).
    Peer,
}

impl KeyKind {
    fn as_str(self) -> &'static str {
        match self {
            KeyKind::Admin => "admin",
            KeyKind::Issuer => "issuer",
            KeyKind::Peer => "peer",
        }
    }
}

/// Runs a `memgate key` subcommand.
pub fn run(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::Gen {
            out,
            name,
            kind,
            force,
            json,
        } => gen(&out, &name, kind, force, json),
    }
    .map_err(one_line)
}

fn gen(out: &Path, name: &str, kind: KeyKind, force: bool, json: bool) -> anyhow::Result<()> {
    if name.is_empty()
        || name.starts_with('.')
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        bail!("key name {name:?} must be a plain file name (no '/', not starting with '.')");
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let secret_path = out.join(format!("{name}.key"));
    let public_path = out.join(format!("{name}.pub"));
    let (secret_text, public_text, id) = match kind {
        KeyKind::Admin => {
            let sk = minisign::SecretKey::generate().map_err(|e| anyhow!("generating key: {e}"))?;
            let pk = sk.public();
            (sk.to_file_text(), pk.to_file_text(), pk.fingerprint())
        }
        KeyKind::Issuer | KeyKind::Peer => {
            let sk = SecretKey::generate().map_err(|e| anyhow!("generating key: {e}"))?;
            let pk = sk.public();
            (
                format!("{}\n", sk.to_paserk()),
                format!("{}\n", pk.to_paserk()),
                pk.pid(),
            )
        }
    };
    write_file(&secret_path, &secret_text, 0o600, force)?;
    write_file(&public_path, &public_text, 0o644, force)?;
    if json {
        print_json(&serde_json::json!({
            "kind": kind.as_str(),
            "secret": secret_path,
            "public": public_path,
            "id": id,
            "public_key": public_text.lines().last().unwrap_or_default(),
        }));
    } else {
        println!("{} key written:", kind.as_str());
        println!(
            "  secret  {} (mode 0600, keep it private)",
            secret_path.display()
        );
        println!("  public  {}", public_path.display());
        match kind {
            KeyKind::Admin => println!("  key id  {id}"),
            _ => println!("  kid     {id}"),
        }
    }
    Ok(())
}

/// Writes `text` to `path` with `mode`, refusing to replace a file unless `force`.
/// A secret file is created with its final mode, never widened afterwards.
pub(crate) fn write_file(path: &Path, text: &str, mode: u32, force: bool) -> anyhow::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).mode(mode);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow!(
                "{} already exists (use --force to replace it)",
                path.display()
            )
        } else {
            anyhow!("writing {}: {e}", path.display())
        }
    })?;
    // An existing file keeps its old mode when truncated: set it explicitly.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads a small text file (key, signature, token) with a clear error; bounded.
pub(crate) fn read_small(path: &Path) -> anyhow::Result<String> {
    super::input::read_bounded(path, super::input::MAX_SMALL, "key")
}

/// Loads an issuer or peer secret key (`k4.secret.` PASERK) from a file.
pub(crate) fn load_paserk_secret(path: &Path) -> anyhow::Result<SecretKey> {
    let text = read_small(path)?;
    SecretKey::from_paserk(text.trim()).map_err(|e| {
        if text.starts_with("untrusted comment:") {
            anyhow!(
                "{}: this is a minisign (admin) key; an issuer or peer key (k4.secret.) is needed",
                path.display()
            )
        } else {
            anyhow!("{}: {e}", path.display())
        }
    })
}

/// Loads a `k4.public.` key given either literally or as a file holding it.
pub(crate) fn load_paserk_public(arg: &str) -> anyhow::Result<PublicKey> {
    if arg.trim().starts_with(keys::PUBLIC_PREFIX) {
        return PublicKey::from_paserk(arg).map_err(|e| anyhow!("public key {arg:?}: {e}"));
    }
    let path = Path::new(arg);
    let text = read_small(path)?;
    PublicKey::from_paserk(text.trim()).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Loads an admin public key: a minisign public key file, or the bare base64 line.
pub(crate) fn load_admin_public(arg: &str) -> anyhow::Result<minisign::PublicKey> {
    let path = Path::new(arg);
    if !path.exists() {
        if let Ok(k) = minisign::PublicKey::from_base64(arg) {
            return Ok(k);
        }
    }
    let text = read_small(path)?;
    minisign::PublicKey::from_file_text(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Loads an admin secret key (unencrypted minisign secret key file).
pub(crate) fn load_admin_secret(path: &Path) -> anyhow::Result<minisign::SecretKey> {
    let text = read_small(path)?;
    minisign::SecretKey::from_file_text(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Prints a JSON value, pretty, on stdout.
pub(crate) fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// Turns an error chain into one line (`a: b: c`), whatever newlines its parts carry, so
/// the binary prints exactly one line on stderr.
pub(crate) fn one_line(e: anyhow::Error) -> anyhow::Error {
    let mut text = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        // Transparent wrappers repeat their source's text: say it once.
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    anyhow!(flat)
}
