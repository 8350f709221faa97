//! `memgate export`, `revoke`, `grants`, `wait`: requests to memgated over its socket.
//! `export` opens the target's pidfd, `/proc/PID/mem` and `/proc/PID/maps` itself (the
//! kernel's ptrace check happens on those opens, as this user) and hands all three to the
//! broker with the token.

use anyhow::{bail, Context};
use clap::Args;
use memgate_proto::{
    Access, BrokerClient, ExportRequest, Grant, GrantId, RegionSelection, RegionSpec, Request,
    Response, WaitRequest, WaitResult, WaitState,
};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The broker socket used when `--socket` is not given (override with `MEMGATE_SOCKET`).
pub const DEFAULT_SOCKET: &str = "/run/memgate/broker.sock";

fn default_socket() -> PathBuf {
    std::env::var_os("MEMGATE_SOCKET").map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// `memgate export` options.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Target process.
    #[arg(long)]
    pub pid: i32,
    /// Export token (PASETO v4.public), or `@FILE` to read it from a file.
    #[arg(long)]
    pub token: String,
    /// Broker socket [default: $MEMGATE_SOCKET or /run/memgate/broker.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// `all` (every mapping kind the policy allows) or `ADDR:LEN,...` in hex.
    #[arg(long, default_value = "all")]
    pub regions: String,
    /// Lease in seconds [default: the token's `lease` claim]. A lease longer than the
    /// token or the policy allows is denied, not shortened.
    #[arg(long)]
    pub lease: Option<u64>,
    /// Ask for read-write keys (only where policy and token allow it).
    #[arg(long)]
    pub read_write: bool,
    /// Write the grant JSON here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// After printing the grant, keep the connection open (the grant is revoked if this
    /// process dies) and wait up to SECS for the fault server's COMMIT.
    #[arg(long, value_name = "SECS")]
    pub wait_commit: Option<u64>,
}

/// `memgate revoke` options.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Grant id (32 hex characters).
    pub id: String,
    /// Broker socket.
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

/// `memgate grants` options.
#[derive(Debug, Args)]
pub struct GrantsArgs {
    /// Broker socket.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `memgate wait` options.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Grant id.
    pub id: String,
    /// Give up after SECS.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Broker socket.
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

fn hex(s: &str) -> anyhow::Result<u64> {
    let t = s.trim().trim_start_matches("0x");
    u64::from_str_radix(t, 16).with_context(|| format!("{s:?} is not a hex number"))
}

/// Parses `all` or `ADDR:LEN,...` (hex).
pub fn parse_regions(s: &str) -> anyhow::Result<RegionSelection> {
    if s.trim() == "all" {
        return Ok(RegionSelection::All);
    }
    let list = s
        .split(',')
        .map(|r| {
            let (a, l) = r
                .split_once(':')
                .with_context(|| format!("{r:?}: expected ADDR:LEN"))?;
            Ok(RegionSpec {
                addr: hex(a)?,
                len: hex(l)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if list.is_empty() {
        bail!("--regions: no region given");
    }
    Ok(RegionSelection::List(list))
}

fn connect(socket: &Option<PathBuf>) -> anyhow::Result<BrokerClient> {
    let path = socket.clone().unwrap_or_else(default_socket);
    connect_path(&path)
}

/// Connects to memgated at `path`; on failure says whether it is running, once.
pub fn connect_path(path: &Path) -> anyhow::Result<BrokerClient> {
    BrokerClient::connect(path).map_err(|e| match e {
        memgate_proto::ClientError::Connect { source, .. } => anyhow::anyhow!(
            "cannot connect to memgated: {source}; is memgated running? (socket {})",
            path.display()
        ),
        other => other.into(),
    })
}

/// Turns a non-grant reply into an error that names the broker's reasons.
pub fn refusal(r: Response) -> anyhow::Error {
    match r {
        Response::Denied(d) => {
            let why: Vec<String> = d
                .reasons
                .iter()
                .map(|r| {
                    if r.code == d.code {
                        r.message.clone()
                    } else {
                        format!("{}: {}", r.code, r.message)
                    }
                })
                .collect();
            anyhow::anyhow!("denied by memgated ({}): {}", d.code, why.join("; "))
        }
        Response::Error(e) => anyhow::anyhow!("memgated error ({}): {}", e.code, e.message),
        other => anyhow::anyhow!("unexpected reply from memgated: {:?}", other.kind()),
    }
}

/// Opens the target's pidfd, `/proc/PID/mem` and `/proc/PID/maps` and asks the broker for a grant on
/// `client`'s connection. Returns the grant and how long admission took.
pub fn request_export(
    client: &mut BrokerClient,
    pid: i32,
    token: &str,
    regions: RegionSelection,
    lease_secs: u64,
    access: Access,
    revoke_on_disconnect: bool,
) -> anyhow::Result<(Grant, Duration)> {
    let p = rustix::process::Pid::from_raw(pid).context("--pid must be positive")?;
    let pidfd = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
        .with_context(|| format!("pidfd_open({pid})"))?;
    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(access == Access::ReadWrite)
        .open(format!("/proc/{pid}/mem"))
        .with_context(|| format!("opening /proc/{pid}/mem (may this user ptrace {pid}?)"))?;
    let maps = std::fs::File::open(format!("/proc/{pid}/maps"))
        .with_context(|| format!("opening /proc/{pid}/maps"))?;
    let req = Request::Export(ExportRequest {
        token: token.trim().to_string(),
        regions,
        access,
        lease_secs,
        revoke_on_disconnect,
    });
    let t = std::time::Instant::now();
    let r = client.call(&req, &[pidfd.as_fd(), mem.as_fd(), maps.as_fd()])?;
    let took = t.elapsed();
    match r {
        Response::Grant(g) => Ok((g, took)),
        other => Err(refusal(other)),
    }
}

/// Asks the broker to wait for a grant's COMMIT (or revocation/expiry).
pub fn wait_for(
    client: &mut BrokerClient,
    id: GrantId,
    timeout: Duration,
) -> anyhow::Result<WaitResult> {
    client.set_timeout(Some(timeout + Duration::from_secs(5)))?;
    let r = client.call(
        &Request::Wait(WaitRequest {
            grant: id,
            timeout_ms: timeout.as_millis() as u64,
        }),
        &[],
    )?;
    client.set_timeout(None)?;
    match r {
        Response::WaitResult(w) => Ok(w),
        other => Err(refusal(other)),
    }
}

fn read_token(t: &str) -> anyhow::Result<String> {
    super::input::token_arg(t)
}

/// The token's `lease` claim, read WITHOUT verifying the token (memgated verifies it);
/// used as the default `--lease`.
fn token_lease(token: &str) -> anyhow::Result<u64> {
    let (claims, _) =
        memgate_policy::token::inspect(token).map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    claims
        .get("lease")
        .and_then(serde_json::Value::as_u64)
        .context("the token has no numeric `lease` claim; pass --lease")
}

/// Runs `memgate export`.
pub fn run_export(a: ExportArgs) -> anyhow::Result<()> {
    let token = read_token(&a.token)?;
    let lease = match a.lease {
        Some(l) => l,
        None => token_lease(&token)?,
    };
    let mut client = connect(&a.socket)?;
    let access = if a.read_write {
        Access::ReadWrite
    } else {
        Access::Read
    };
    let (grant, _) = request_export(
        &mut client,
        a.pid,
        &token,
        parse_regions(&a.regions)?,
        lease,
        access,
        a.wait_commit.is_some(),
    )?;
    let json = grant.to_json_pretty();
    match &a.out {
        Some(p) => std::fs::write(p, format!("{json}\n"))
            .with_context(|| format!("writing {}", p.display()))?,
        None => println!("{json}"),
    }
    if let Some(secs) = a.wait_commit {
        let w = wait_for(&mut client, grant.id, Duration::from_secs(secs))?;
        report_wait(&grant.id, &w)?;
    }
    Ok(())
}

fn report_wait(id: &GrantId, w: &WaitResult) -> anyhow::Result<()> {
    let cause = w
        .cause
        .as_deref()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    match w.state {
        WaitState::Committed => {
            eprintln!("grant {id}: committed by the fault server; the source may be released");
            Ok(())
        }
        WaitState::Revoked => bail!("grant {id}: revoked{cause} before it was committed"),
        WaitState::Expired => bail!("grant {id}: the lease expired before it was committed"),
        WaitState::Timeout => bail!("grant {id}: not committed within the timeout"),
    }
}

/// Runs `memgate revoke`.
pub fn run_revoke(a: RevokeArgs) -> anyhow::Result<()> {
    let id: GrantId = a.id.parse()?;
    let mut client = connect(&a.socket)?;
    match client.call(&Request::Revoke { grant: id }, &[])? {
        r @ (Response::Denied(_) | Response::Error(_)) => Err(refusal(r)),
        _ => {
            eprintln!("grant {id} revoked");
            Ok(())
        }
    }
}

/// Runs `memgate grants`.
pub fn run_grants(a: GrantsArgs) -> anyhow::Result<()> {
    let mut client = connect(&a.socket)?;
    let list = match client.call(&Request::List, &[])? {
        Response::Grants(g) => g,
        other => return Err(refusal(other)),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<32}  {:<9}  {:>7}  {:>12}  {:>7}  endpoint",
        "id", "state", "pid", "bytes", "expires"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for s in list {
        println!(
            "{:<32}  {:<9}  {:>7}  {:>12}  {:>6}s  {}",
            s.grant.id,
            format!("{:?}", s.state).to_lowercase(),
            s.target_pid,
            s.grant.total_bytes(),
            s.grant.expires_unix.saturating_sub(now),
            s.grant.endpoint
        );
    }
    Ok(())
}

/// Runs `memgate wait`.
pub fn run_wait(a: WaitArgs) -> anyhow::Result<()> {
    let id: GrantId = a.id.parse()?;
    let mut client = connect(&a.socket)?;
    let w = wait_for(&mut client, id, Duration::from_secs(a.timeout))?;
    report_wait(&id, &w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_region_lists() {
        assert_eq!(parse_regions("all").unwrap(), RegionSelection::All);
        assert_eq!(
            parse_regions("7f0000001000:2000,0x1000:1000").unwrap(),
            RegionSelection::List(vec![
                RegionSpec {
                    addr: 0x7f00_0000_1000,
                    len: 0x2000
                },
                RegionSpec {
                    addr: 0x1000,
                    len: 0x1000
                }
            ])
        );
        assert!(parse_regions("12").is_err());
        assert!(parse_regions("zz:1").is_err());
    }
}
