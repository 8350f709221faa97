//! `memgate policy`: sign a policy document with an admin key, verify a signed policy the
//! way the broker does, and show a policy. Signatures are minisign-compatible detached
//! `POLICY.minisig` files, so stock `minisign -V` checks ours and ours checks `minisign -S`.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::Subcommand;
use memgate_policy::document::MAX_POLICY_BYTES;
use memgate_policy::minisign::Algorithm;
use memgate_policy::{signed, size, Policy};
use time::OffsetDateTime;

use super::key::{
    load_admin_public, load_admin_secret, one_line, print_json, read_small, write_file,
};

/// `memgate policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Sign POLICY with an admin secret key, writing POLICY.minisig. The document is
    /// checked first: an invalid policy is never signed.
    Sign {
        /// Admin secret key (unencrypted minisign secret key file).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the signature (default: POLICY.minisig).
        #[arg(long)]
        sig: Option<PathBuf>,
        /// Trusted comment (default: timestamp, file name, serial and broker id).
        #[arg(long)]
        trusted_comment: Option<String>,
        /// Use minisign's legacy `Ed` algorithm instead of the prehashed default `ED`.
        #[arg(long)]
        legacy: bool,
        /// Replace an existing signature file.
        #[arg(long)]
        force: bool,
        /// The policy file.
        policy: PathBuf,
    },
    /// Verify POLICY's signature against admin public keys and check the document.
    /// Exits 0 only if both hold.
    Verify {
        /// Admin public key: a minisign public key file or its base64 line (repeatable).
        #[arg(long, required = true)]
        key: Vec<String>,
        /// Signature file (default: POLICY.minisig).
        #[arg(long)]
        sig: Option<PathBuf>,
        /// Also refuse a policy whose serial is not greater than this (rollback check).
        #[arg(long)]
        newer_than: Option<u64>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// The policy file.
        policy: PathBuf,
    },
    /// Parse and show POLICY (its signature is not checked).
    Show {
        /// Print the policy as JSON.
        #[arg(long)]
        json: bool,
        /// The policy file.
        policy: PathBuf,
    },
}

/// Runs a `memgate policy` subcommand.
pub fn run(cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Sign {
            key,
            sig,
            trusted_comment,
            legacy,
            force,
            policy,
        } => sign(&key, sig, trusted_comment, legacy, force, &policy),
        PolicyCommand::Verify {
            key,
            sig,
            newer_than,
            json,
            policy,
        } => verify(&key, sig, newer_than, json, &policy),
        PolicyCommand::Show { json, policy } => show(json, &policy),
    }
    .map_err(one_line)
}

fn read_policy(path: &Path) -> anyhow::Result<Vec<u8>> {
    let limit = (MAX_POLICY_BYTES as u64).min(super::input::MAX_DOCUMENT);
    Ok(super::input::read_bounded(path, limit, "policy")?.into_bytes())
}

fn default_sig(policy: &Path) -> PathBuf {
    let mut s = policy.as_os_str().to_owned();
    s.push(".minisig");
    PathBuf::from(s)
}

fn sign(
    key: &Path,
    sig: Option<PathBuf>,
    trusted_comment: Option<String>,
    legacy: bool,
    force: bool,
    policy_path: &Path,
) -> anyhow::Result<()> {
    let bytes = read_policy(policy_path)?;
    let policy = Policy::parse_bytes(&bytes).map_err(|e| {
        anyhow!(
            "{}: {e} (refusing to sign an invalid policy)",
            policy_path.display()
        )
    })?;
    let sk = load_admin_secret(key)?;
    let file_name = policy_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let comment = trusted_comment.unwrap_or_else(|| {
        format!(
            "timestamp:{}\tfile:{file_name}\tserial:{}\tbroker:{}",
            OffsetDateTime::now_utc().unix_timestamp(),
            policy.serial,
            policy.broker
        )
    });
    let alg = if legacy {
        Algorithm::Legacy
    } else {
        Algorithm::Prehashed
    };
    let signature = sk
        .sign_with(&bytes, &comment, alg)
        .map_err(|e| anyhow!("signing: {e}"))?;
    let sig_path = sig.unwrap_or_else(|| default_sig(policy_path));
    let replace = force || resigning(&sig_path, &sk)?;
    write_file(&sig_path, &signature.to_file_text(), 0o644, replace)?;
    println!(
        "signed {} (serial {}, broker {:?}) with admin key {}: {}",
        policy_path.display(),
        policy.serial,
        policy.broker,
        sk.public().fingerprint(),
        sig_path.display()
    );
    Ok(())
}

/// Whether `sig_path` is an existing signature by this same admin key (the normal
/// edit, bump serial, re-sign workflow), which may be replaced without `--force`. A
/// signature by another key, or a file that is no signature, still needs `--force`.
fn resigning(sig_path: &Path, sk: &memgate_policy::minisign::SecretKey) -> anyhow::Result<bool> {
    if !sig_path.exists() {
        return Ok(false);
    }
    let Ok(text) = read_small(sig_path) else {
        return Ok(false);
    };
    match memgate_policy::minisign::Signature::parse(&text) {
        Ok(old) if old.key_id == sk.key_id => Ok(true),
        Ok(_) => Err(anyhow!(
            "{} holds a signature by another admin key (use --force to replace it)",
            sig_path.display()
        )),
        Err(_) => Ok(false),
    }
}

fn verify(
    keys: &[String],
    sig: Option<PathBuf>,
    newer_than: Option<u64>,
    json: bool,
    policy_path: &Path,
) -> anyhow::Result<()> {
    let admins = keys
        .iter()
        .map(|k| load_admin_public(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bytes = read_policy(policy_path)?;
    let sig_path = sig.unwrap_or_else(|| default_sig(policy_path));
    let sig_text = read_small(&sig_path)?;
    let loaded = signed::load_signed(&bytes, &sig_text, &admins)
        .map_err(|e| anyhow!("{}: {e}", policy_path.display()))?;
    if let Some(current) = newer_than {
        signed::check_serial(&loaded.policy, current, false)
            .map_err(|e| anyhow!("{}: {e}", policy_path.display()))?;
    }
    let p = &loaded.policy;
    if json {
        print_json(&serde_json::json!({
            "valid": true,
            "signer": loaded.signer.fingerprint(),
            "trusted_comment": loaded.trusted_comment,
            "serial": p.serial,
            "broker": p.broker,
            "policy": p.to_json(),
        }));
    } else {
        println!(
            "policy OK: {} serial {} for broker {:?}, signed by admin key {}",
            policy_path.display(),
            p.serial,
            p.broker,
            loaded.signer.fingerprint()
        );
        println!("trusted comment: {}", loaded.trusted_comment);
    }
    Ok(())
}

fn show(json: bool, policy_path: &Path) -> anyhow::Result<()> {
    let bytes = read_policy(policy_path)?;
    let p = Policy::parse_bytes(&bytes).map_err(|e| anyhow!("{}: {e}", policy_path.display()))?;
    if json {
        let mut v = p.to_json();
        v["signature_checked"] = serde_json::json!(false);
        print_json(&v);
        return Ok(());
    }
    println!(
        "policy {} (signature NOT checked; use `memgate policy verify`)",
        policy_path.display()
    );
    println!("  version  {}", p.version);
    println!("  broker   {}", p.broker);
    println!("  serial   {}", p.serial);
    let kinds: Vec<_> = p.mappings.iter().map(|m| m.as_str()).collect();
    println!("  mappings {}", kinds.join(", "));
    println!(
        "  limits   {} grants/uid, {} bytes/uid, {} requests/s/uid",
        p.limits.grants_per_uid,
        size::format_bytes(p.limits.bytes_per_uid),
        p.limits.requests_per_second_per_uid
    );
    for i in &p.issuers {
        println!("  issuer {:?}", i.name);
        println!("    key       {}", i.key.to_paserk());
        println!("    kid       {}", i.key.pid());
        let cg: Vec<_> = i.cgroups.iter().map(|c| c.as_str()).collect();
        println!("    cgroups   {}", cg.join(", "));
        println!("    uids      {:?}  gids {:?}", i.uids, i.gids);
        println!("    access    {}", i.access);
        println!("    max bytes {}", size::format_bytes(i.max_bytes));
        println!("    max lease {}s", i.max_lease);
    }
    if p.issuers.is_empty() {
        println!("  (no issuers: every export is denied)");
    }
    Ok(())
}
