//! Shared helpers of the hardening tests: a scratch directory laid out like memgated's
//! (config, runtime dir, something outside the rules), a target process, and running
//! `memgated-harden-probe` on a configuration.
#![allow(dead_code)] // each test file uses a different subset

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const PROBE: &str = env!("CARGO_BIN_EXE_memgated-harden-probe");

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique temporary directory, removed on drop:
/// `etc/memgated.toml` (read-only rule), `run/` (read-write rule), `outside/secret` and
/// `mnt/` (no rule).
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("memgate-harden-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["etc", "run", "outside", "mnt"] {
            std::fs::create_dir_all(dir.join(sub)).expect("scratch dir");
        }
        std::fs::write(dir.join("etc/memgated.toml"), "# memgated configuration\n")
            .expect("config file");
        std::fs::write(dir.join("outside/secret"), "not for the broker\n").expect("secret");
        Scratch { dir }
    }

    pub fn etc(&self) -> PathBuf {
        self.dir.join("etc")
    }

    pub fn run(&self) -> PathBuf {
        self.dir.join("run")
    }

    pub fn outside(&self) -> PathBuf {
        self.dir.join("outside")
    }

    /// Writes a hardening configuration: `top` holds top-level keys, `tables` extra tables;
    /// the Landlock table always names etc/ read-only and run/ read-write.
    pub fn config(&self, top: &str, landlock_extra: &str) -> PathBuf {
        let text = format!(
            "{top}\n[landlock]\nread_only = [{:?}]\nread_write = [{:?}]\n{landlock_extra}\n",
            self.etc(),
            self.run()
        );
        let path = self.dir.join("hardening.toml");
        std::fs::write(&path, text).expect("config");
        path
    }

    fn command(&self, cfg: &Path, target: Option<u32>, extra: &[&str]) -> Command {
        self.wrapped_command(&[], cfg, target, extra)
    }

    /// The probe command, started through `wrapper` (e.g. `setpriv ...`) when not empty.
    fn wrapped_command(
        &self,
        wrapper: &[&str],
        cfg: &Path,
        target: Option<u32>,
        extra: &[&str],
    ) -> Command {
        // A socket left by an earlier probe in this scratch dir would make bind fail.
        let _ = std::fs::remove_file(self.run().join("probe.sock"));
        let mut c = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(PROBE);
                c
            }
            None => Command::new(PROBE),
        };
        c.arg("--config")
            .arg(cfg)
            .arg("--dir")
            .arg(self.run())
            .arg("--outside-file")
            .arg(self.outside().join("secret"))
            .arg("--outside-dir")
            .arg(self.outside())
            .arg("--read-only-file")
            .arg(self.etc().join("memgated.toml"))
            .arg("--mount-point")
            .arg(self.dir.join("mnt"))
            .args(extra)
            .stdin(Stdio::null());
        if let Some(pid) = target {
            c.arg("--target").arg(pid.to_string());
        }
        c
    }

    /// Runs the probe to completion.
    pub fn run_probe(&self, cfg: &Path, target: Option<u32>, extra: &[&str]) -> ProbeOutput {
        self.run_probe_wrapped(&[], cfg, target, extra)
    }

    /// Runs the probe to completion, started through `wrapper`.
    pub fn run_probe_wrapped(
        &self,
        wrapper: &[&str],
        cfg: &Path,
        target: Option<u32>,
        extra: &[&str],
    ) -> ProbeOutput {
        let out = self
            .wrapped_command(wrapper, cfg, target, extra)
            .output()
            .expect("run memgated-harden-probe");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        ProbeOutput {
            ok: out.status.success(),
            code: out.status.code(),
            signal: std::os::unix::process::ExitStatusExt::signal(&out.status),
            text,
        }
    }

    /// Starts the probe with stdout piped (for `--serve`).
    pub fn spawn_probe(&self, cfg: &Path, target: Option<u32>, extra: &[&str]) -> Reaped {
        Reaped(
            self.command(cfg, target, extra)
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn memgated-harden-probe"),
        )
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a finished probe printed and how it ended.
pub struct ProbeOutput {
    pub ok: bool,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub text: String,
}

/// A child killed and reaped on drop, so a failing test leaves nothing behind.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A target process (an idle `sleep`), killed on drop.
pub struct Target(Reaped);

impl Target {
    pub fn spawn() -> Target {
        let child = Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        Target(Reaped(child))
    }

    pub fn pid(&self) -> u32 {
        self.0 .0.id()
    }

    pub fn pidfd(&self) -> OwnedFd {
        // SAFETY: integer arguments only.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid(), 0) };
        assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh fd owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    }
}

/// `probe GROUP NAME ...` lines by name: (group, None for ok or Some(errno)).
pub fn probes(text: &str) -> BTreeMap<String, (String, Option<i32>)> {
    text.lines()
        .filter_map(memgated::harden::probe::parse_line)
        .map(|(g, n, o)| (n, (g, o)))
        .collect()
}

/// `needed NAME REST` lines by name.
pub fn needed_lines(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("needed "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, rest)| (n.to_string(), rest.to_string()))
        .collect()
}

/// `ready seqpacket=PATH tcp=PORT`.
pub fn parse_ready(line: &str) -> (PathBuf, u16) {
    let mut path = None;
    let mut port = None;
    for w in line.split_whitespace() {
        if let Some(p) = w.strip_prefix("seqpacket=") {
            path = Some(PathBuf::from(p));
        } else if let Some(p) = w.strip_prefix("tcp=") {
            port = p.parse().ok();
        }
    }
    (
        path.expect("seqpacket path in ready line"),
        port.expect("tcp port in ready line"),
    )
}

/// A `/proc/PID/status` field.
pub fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or("")
}

/// The capability bit of a capability number.
pub fn cap_bit(n: u32) -> u64 {
    1u64 << n
}
