//! `memgate token`: mint a PASETO v4.public export token with an issuer key, inspect one
//! without verifying it, and verify one against an issuer public key.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::Subcommand;
use memgate_policy::token::{self, Claims, Target, DEFAULT_SKEW};
use memgate_policy::{cgroup, size, Access};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::key::{load_paserk_public, load_paserk_secret, one_line, print_json};

/// `memgate token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint an export token; prints it on stdout.
    Mint {
        /// Issuer secret key file (k4.secret.).
        #[arg(long)]
        key: PathBuf,
        /// Issuer name, as the policy names it (`iss`).
        #[arg(long)]
        issuer: String,
        /// Broker id the token is for (`aud`).
        #[arg(long)]
        aud: String,
        /// Requester uid (`sub`).
        #[arg(long)]
        sub: u32,
        /// Target cgroup v2 path, e.g. /machine.slice/vm1.scope.
        #[arg(long)]
        target: String,
        /// Also pin the target to this pid.
        #[arg(long)]
        pid: Option<u32>,
        /// Fault server's public key: a k4.public. string or a file holding one.
        #[arg(long)]
        peer: String,
        /// Longest lease the grant may have, seconds.
        #[arg(long)]
        lease: u64,
        /// Most bytes the grant may cover (e.g. 4096, 512M, 1G).
        #[arg(long, value_parser = parse_size)]
        max_bytes: u64,
        /// `read` (default) or `read-write`.
        #[arg(long, default_value = "read", value_parser = parse_access)]
        access: Access,
        /// How long the token is valid, seconds.
        #[arg(long, default_value_t = 300)]
        ttl: u64,
        /// Token id (default: 128 random bits in hex).
        #[arg(long)]
        jti: Option<String>,
        /// Leave the footer out (by default it carries the issuer key id, `kid`).
        #[arg(long)]
        no_kid: bool,
    },
    /// Decode a token and show its claims WITHOUT verifying anything.
    Inspect {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// The token, a file holding it, or `-` for stdin.
        token: String,
    },
    /// Verify a token's signature with an issuer public key, and its times.
    Verify {
        /// Issuer public key: a k4.public. string or a file holding one.
        #[arg(long)]
        key: String,
        /// Also require this audience (broker id).
        #[arg(long)]
        aud: Option<String>,
        /// Clock-skew allowance, seconds.
        #[arg(long, default_value_t = DEFAULT_SKEW.whole_seconds().unsigned_abs())]
        skew: u64,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// The token, a file holding it, or `-` for stdin.
        token: String,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    size::parse_bytes(s).map_err(|e| e.to_string())
}

fn parse_access(s: &str) -> Result<Access, String> {
    Access::parse(s).ok_or_else(|| format!("access {s:?}: expected read or read-write"))
}

/// Runs a `memgate token` subcommand.
pub fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Mint {
            key,
            issuer,
            aud,
            sub,
            target,
            pid,
            peer,
            lease,
            max_bytes,
            access,
            ttl,
            jti,
            no_kid,
        } => {
            let args = MintArgs {
                issuer,
                aud,
                sub,
                target: Target {
                    cgroup: target,
                    pid,
                },
                peer,
                lease,
                max_bytes,
                access,
                ttl,
                jti,
                no_kid,
            };
            mint(&key, args)
        }
        TokenCommand::Inspect { json, token } => inspect(&token, json),
        TokenCommand::Verify {
            key,
            aud,
            skew,
            json,
            token,
        } => verify(&key, aud.as_deref(), skew, json, &token),
    }
    .map_err(one_line)
}

struct MintArgs {
    issuer: String,
    aud: String,
    sub: u32,
    target: Target,
    peer: String,
    lease: u64,
    max_bytes: u64,
    access: Access,
    ttl: u64,
    jti: Option<String>,
    no_kid: bool,
}

fn secs(n: u64, what: &str) -> anyhow::Result<Duration> {
    i64::try_from(n)
        .ok()
        .filter(|&n| n > 0 && n <= 366 * 24 * 3600)
        .map(Duration::seconds)
        .ok_or_else(|| anyhow!("{what} must be between 1 second and a year"))
}

fn mint(key: &Path, a: MintArgs) -> anyhow::Result<()> {
    let sk = load_paserk_secret(key)?;
    let peer = load_paserk_public(&a.peer)?;
    cgroup::validate_path(&a.target.cgroup).map_err(|e| anyhow!("--target: {e}"))?;
    secs(a.lease, "--lease")?;
    let ttl = secs(a.ttl, "--ttl")?;
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .map_err(|e| anyhow!("clock: {e}"))?;
    let claims = Claims {
        iss: a.issuer,
        sub: a.sub.to_string(),
        aud: a.aud,
        exp: now + ttl,
        nbf: now,
        iat: now,
        jti: a.jti.unwrap_or_else(token::new_jti),
        target: a.target,
        access: a.access,
        max_bytes: a.max_bytes,
        lease: a.lease,
        peer,
    };
    let kid = sk.public().pid();
    let kid = (!a.no_kid).then_some(kid.as_str());
    let t = token::mint(&sk, &claims, kid).map_err(|e| anyhow!("minting: {e}"))?;
    println!("{t}");
    Ok(())
}

/// Reads a token argument: literal, `-` for stdin, `@FILE` or a file holding it.
fn read_token(arg: &str) -> anyhow::Result<String> {
    super::input::token_arg(arg)
}

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

fn inspect(arg: &str, json: bool) -> anyhow::Result<()> {
    let t = read_token(arg)?;
    let (claims, footer) = token::inspect(&t)?;
    if json {
        print_json(&serde_json::json!({
            "verified": false,
            "claims": claims,
            "footer": footer,
        }));
        return Ok(());
    }
    println!("NOT VERIFIED: this shows what the token claims; `memgate token verify` checks it.");
    match claims.as_object() {
        Some(map) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::String(s) => println!("  {k:<9} {s}"),
                    other => println!("  {k:<9} {other}"),
                }
            }
        }
        None => println!("  claims    {claims}"),
    }
    if !footer.is_empty() {
        println!("  footer    {footer}");
    }
    Ok(())
}

fn verify(key: &str, aud: Option<&str>, skew: u64, json: bool, arg: &str) -> anyhow::Result<()> {
    let pk = load_paserk_public(key)?;
    let t = read_token(arg)?;
    let skew = i64::try_from(skew)
        .map(Duration::seconds)
        .map_err(|_| anyhow!("--skew is too large"))?;
    let now = OffsetDateTime::now_utc();
    let c = token::verify_with_key(&t, &pk, aud, now, skew)
        .map_err(|e| anyhow!("token rejected ({}): {e}", e.code()))?;
    if json {
        print_json(&serde_json::json!({
            "valid": true,
            "issuer_key": pk.to_paserk(),
            "claims": c,
        }));
        return Ok(());
    }
    println!(
        "token OK: issuer {:?} (key {}), subject uid {}, audience {:?}",
        c.iss,
        pk.fingerprint(),
        c.sub,
        c.aud
    );
    let pid = c
        .target
        .pid
        .map(|p| format!(" pid {p}"))
        .unwrap_or_default();
    println!("  target    {}{pid}", c.target.cgroup);
    println!(
        "  allows    {}, up to {} bytes, lease up to {}s",
        c.access,
        size::format_bytes(c.max_bytes),
        c.lease
    );
    println!("  peer      {}", c.peer.to_paserk());
    println!("  valid     {} .. {}", fmt_time(c.nbf), fmt_time(c.exp));
    println!("  jti       {}", c.jti);
    Ok(())
}
