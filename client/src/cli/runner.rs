//! Pieces `memgate demo` and `memgate bench` share: start the frozen source workload, and
//! run one migration into a destination workload (a child that hands its userfaultfd over,
//! touches every page in a pattern and verifies every byte) with the fault server running
//! in this process.

use super::demo_dest::DestReport;
use super::fault_serve::{destination_pidfd, drive, layout_for};
use crate::faultserve::{Config, Report};
use crate::handover;
use crate::transport::Connector;
use crate::uffd::Uffd;
use crate::workload::{Pattern, TargetInfo};
use anyhow::{bail, Context};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (and reaped) on drop.
pub struct Reaped(pub Child);

impl Reaped {
    /// Starts `cmd` as a child that dies with this process (see [`super::reaper`]) and is
    /// killed by the demo's signal handler.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
        super::reaper::die_with_parent(cmd);
        let child = cmd.spawn()?;
        super::reaper::register(child.id());
        Ok(child)
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        super::reaper::unregister(self.0.id());
        let _ = self.0.wait();
    }
}

/// A private temporary directory (mode 0700), removed with its contents on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `$TMPDIR/PREFIX-PID-RANDOM`.
    pub fn new(prefix: &str) -> anyhow::Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt;
        let mut b = [0u8; 6];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
            .map_err(|_| anyhow::anyhow!("no randomness for a temporary directory name"))?;
        let p = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            hex::encode(b)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// This binary (the workloads are hidden subcommands of it).
pub fn self_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("locating the memgate binary")
}

/// Starts `memgate __demo-target`, waits for it to fill its memory and freeze, and returns
/// it with its self-description.
pub fn spawn_target(size: u64, seed: u64) -> anyhow::Result<(Reaped, TargetInfo)> {
    let mut child = Reaped::spawn(
        Command::new(self_exe()?)
            .args([
                "__demo-target",
                "--size",
                &size.to_string(),
                "--seed",
                &seed.to_string(),
            ])
            .stdout(Stdio::piped()),
    )
    .context("starting the source workload")?;
    let out = child.stdout.take().context("source workload stdout")?;
    let child = Reaped(child);
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .context("reading the source workload")?;
    let info: TargetInfo =
        serde_json::from_str(&line).context("the source workload did not describe itself")?;
    // Wait until it has stopped itself, so that its memory no longer changes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", info.pid))?;
        let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next());
        if state == Some(Some('T')) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the source workload did not freeze");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok((child, info))
}

/// Options for one destination run.
pub struct DestRun<'a> {
    /// Where the pages come from.
    pub connector: &'a dyn Connector,
    /// Source regions `(addr, len, rkey)` in grant order.
    pub regions: &'a [(u64, u64, u32)],
    /// Fault-server tuning.
    pub cfg: Config,
    /// Touch order.
    pub pattern: Pattern,
    /// Directory for the hand-over socket.
    pub dir: &'a Path,
    /// Show the progress bar.
    pub progress: bool,
    /// Verify after the migration instead of while touching (benchmarks).
    pub verify_after: bool,
    /// The destination sleeps this long after each page (failure drills).
    pub touch_delay_us: u64,
    /// Told once the destination has handed over its userfaultfd (failure drills).
    pub started: Option<std::sync::mpsc::Sender<()>>,
}

/// Runs the destination workload under this process's fault server; returns the fault
/// server's report and the destination's own.
pub fn run_dest(info: &TargetInfo, r: DestRun<'_>) -> anyhow::Result<(Report, DestReport)> {
    let sock_path = r.dir.join(format!("uffd-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock_path);
    let listener = UnixListener::bind(&sock_path).context("binding the hand-over socket")?;
    let mut dest = Reaped::spawn(
        Command::new(self_exe()?)
            .args(["__demo-dest", "--info", &serde_json::to_string(info)?])
            .arg("--socket")
            .arg(&sock_path)
            .args(["--pattern", &format!("{:?}", r.pattern).to_lowercase()])
            .args(["--touch-delay-us", &r.touch_delay_us.to_string()])
            .args(if r.verify_after {
                &["--verify-after"][..]
            } else {
                &[]
            })
            .stdout(Stdio::piped()),
    )
    .context("starting the destination workload")?;
    let mut out = dest.stdout.take().context("destination stdout")?;
    let dest = Reaped(dest);
    let (sock, _) = listener
        .accept()
        .context("waiting for the destination's userfaultfd")?;
    let _ = std::fs::remove_file(&sock_path);
    let h = handover::recv(&sock)?;
    let layout = layout_for(r.regions, &h.map)?;
    let watch = destination_pidfd(h.pid, &layout);
    let uffd = Uffd::from_fd(h.uffd, h.features);
    if let Some(tx) = r.started {
        let _ = tx.send(());
    }
    let (res, status) = drive(&uffd, layout, r.connector, r.cfg, watch, r.progress);
    let _ = handover::send_status(&sock, status);
    drop(uffd);
    let report = res?;
    let mut text = String::new();
    out.read_to_string(&mut text)
        .context("reading the destination's report")?;
    let mut dest = dest;
    let st = dest.0.wait()?;
    let dr: DestReport = serde_json::from_str(text.trim())
        .with_context(|| format!("the destination failed ({st}) without a report"))?;
    Ok((report, dr))
}
