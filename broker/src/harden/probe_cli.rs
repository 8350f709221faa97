//! `memgated-harden-probe`: applies memgated's hardening to itself exactly as the broker
//! does, then tries every forbidden operation and every operation the broker needs, and
//! prints one line per attempt. Operators run it to see what a host's kernel enforces; the
//! hardening tests run it as a child process (hardening cannot be undone in-process).
//!
//! ```text
//! memgated-harden-probe [--config FILE] [--target PID] [--dir DIR] [--serve]
//!     [--outside-file F] [--outside-dir D] [--read-only-file F] [--mount-point D]
//!     [--only NAME,...] [--check] [--emulate-no-landlock] [--deny-syscalls NAME,...]
//! ```
//! Output: `report: ...` (what is in force), `shortfall: ...`, `probe GROUP NAME ok|refused
//! ERRNO`, `needed NAME ok DETAIL|failed ERROR`, with `--serve` a `ready seqpacket=PATH
//! tcp=PORT` line after which one seqpacket request (`"ADDR LEN"` + `[pidfd, mem fd, maps
//! fd]`, see [`needed::serve_mem_request`]) and one TCP echo are served, and finally `done`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::needed;
use super::probe::{self, Targets};
use super::HardenConfig;

#[derive(Debug, Default)]
struct Args {
    config: Option<PathBuf>,
    dir: Option<PathBuf>,
    serve: bool,
    only: Option<Vec<String>>,
    check: bool,
    emulate_no_landlock: bool,
    deny_syscalls: Vec<String>,
    targets: Targets,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args::default();
    while let Some(arg) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--config" => a.config = Some(val()?.into()),
            "--dir" => a.dir = Some(val()?.into()),
            "--target" => {
                let v = val()?;
                a.targets.pid = Some(v.parse().map_err(|_| format!("bad pid {v:?}"))?);
            }
            "--outside-file" => a.targets.outside_file = Some(val()?.into()),
            "--outside-dir" => a.targets.outside_dir = Some(val()?.into()),
            "--read-only-file" => a.targets.read_only_file = Some(val()?.into()),
            "--mount-point" => a.targets.mount_point = Some(val()?.into()),
            "--only" => a.only = Some(val()?.split(',').map(str::to_string).collect()),
            "--serve" => a.serve = true,
            "--check" => a.check = true,
            "--emulate-no-landlock" => a.emulate_no_landlock = true,
            "--deny-syscalls" => a.deny_syscalls = val()?.split(',').map(str::to_string).collect(),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

/// Loads a hardening configuration: either a whole memgated configuration with a
/// `[hardening]` (or `[harden]`) table, or the table's contents alone.
pub fn load_config(text: &str) -> Result<HardenConfig, String> {
    let value: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let section = value
        .get("hardening")
        .or_else(|| value.get("harden"))
        .cloned()
        .unwrap_or(toml::Value::Table(value));
    section
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string())
}

/// Installs an outer filter answering `numbers` with `errno` and allowing the rest.
fn outer_filter(numbers: &[i64], errno: i32) -> Result<(), String> {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let rules = numbers.iter().map(|nr| (*nr, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    let prog = BpfProgram::try_from(filter).map_err(|e| e.to_string())?;
    seccompiler::apply_filter(&prog).map_err(|e| e.to_string())
}

/// Makes the Landlock system calls fail with ENOSYS, as on a kernel built without
/// Landlock, so that the best-effort path and its report can be exercised anywhere.
fn emulate_no_landlock() -> Result<(), String> {
    outer_filter(
        &[
            libc::SYS_landlock_create_ruleset,
            libc::SYS_landlock_add_rule,
            libc::SYS_landlock_restrict_self,
        ],
        libc::ENOSYS,
    )
}

/// Refuses the named system calls with EPERM before hardening, as a service manager's
/// `SystemCallFilter=` with `SystemCallErrorNumber=EPERM` does.
fn deny_syscalls(names: &[String]) -> Result<(), String> {
    let mut numbers = Vec::new();
    for n in names {
        match super::syscalls::lookup(n) {
            super::syscalls::Lookup::Number(nr) => numbers.push(nr),
            super::syscalls::Lookup::AbsentOnArch => {}
            super::syscalls::Lookup::Unknown => return Err(format!("unknown syscall {n:?}")),
        }
    }
    outer_filter(&numbers, libc::EPERM)
}

fn needed_line(name: &str, r: std::io::Result<String>) {
    match r {
        Ok(detail) => println!("needed {name} ok {detail}"),
        Err(e) => println!("needed {name} failed {e}"),
    }
}

fn run_needed(a: &Args, cfg: &HardenConfig) {
    if let Some(p) = &cfg.landlock.read_only.first() {
        let file = if p.is_dir() {
            a.targets.read_only_file.clone()
        } else {
            Some(p.to_path_buf())
        };
        if let Some(f) = file {
            needed_line(
                "read_config",
                needed::read_config(&f).map(|n| n.to_string()),
            );
        }
    }
    if let Some(pid) = a.targets.pid {
        // Admission reads the target's cgroup and status itself (no ptrace check).
        needed_line(
            "proc_cgroup",
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map(|s| s.len().to_string()),
        );
        needed_line(
            "proc_status",
            std::fs::read_to_string(format!("/proc/{pid}/status")).map(|s| s.len().to_string()),
        );
    }
    needed_line(
        "proc_self_status",
        std::fs::read_to_string("/proc/self/status").map(|s| s.len().to_string()),
    );
    if let Some(dir) = &a.dir {
        needed_line(
            "audit_append",
            needed::audit_append(&dir.join("audit.log"), "probe audit record").map(|()| "1".into()),
        );
    }
    let in_thread = needed::thread_runs_restricted("mount", &a.targets);
    needed_line(
        "thread_spawn",
        in_thread.map(|r| match r {
            Some(r) => format!("thread-{}", r.to_string().replace(' ', "-")),
            None => "no-result".into(),
        }),
    );
}

fn serve(dir: &Path, seq: &needed::SeqpacketListener) {
    let tcp = match needed::tcp_listen() {
        Ok(l) => l,
        Err(e) => {
            println!("needed tcp_listen failed {e}");
            return;
        }
    };
    let port = tcp.local_addr().map(|a| a.port()).unwrap_or(0);
    println!(
        "ready seqpacket={} tcp={port}",
        dir.join("probe.sock").display()
    );
    needed_line(
        "seqpacket_mem",
        seq.accept(20_000)
            .and_then(|c| needed::serve_mem_request(&c))
            .map(|n| n.to_string()),
    );
    needed_line(
        "tcp_echo",
        needed::tcp_echo_once(&tcp, 20_000).map(|n| n.to_string()),
    );
}

/// Entry point of `memgated-harden-probe`.
pub fn main() -> ExitCode {
    let a = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("memgated-harden-probe: {e}");
            return ExitCode::from(64);
        }
    };
    let cfg = match &a.config {
        None => HardenConfig::default(),
        Some(p) => match std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(|t| load_config(&t))
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("memgated-harden-probe: {}: {e}", p.display());
                return ExitCode::from(64);
            }
        },
    };
    if a.emulate_no_landlock {
        if let Err(e) = emulate_no_landlock() {
            eprintln!("memgated-harden-probe: emulating a kernel without Landlock: {e}");
            return ExitCode::from(70);
        }
    }
    if !a.deny_syscalls.is_empty() {
        if let Err(e) = deny_syscalls(&a.deny_syscalls) {
            eprintln!("memgated-harden-probe: --deny-syscalls: {e}");
            return ExitCode::from(64);
        }
    }
    if a.check {
        return super::check_main(&cfg);
    }
    // Set-up before hardening, as memgated binds its API socket before apply().
    let seq = match (&a.dir, a.serve) {
        (Some(dir), true) => match needed::SeqpacketListener::bind(&dir.join("probe.sock")) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("memgated-harden-probe: bind: {e}");
                return ExitCode::from(70);
            }
        },
        _ => None,
    };
    let report = match super::apply(&cfg) {
        Ok(r) => r,
        Err(e) => {
            println!("error apply {e}");
            return ExitCode::from(2);
        }
    };
    for line in report.to_string().lines() {
        println!("report: {line}");
    }
    for s in super::compare(&cfg, &report) {
        println!("shortfall: {s}");
    }
    let names: Vec<String> = match &a.only {
        Some(v) => v.clone(),
        None => probe::NAMES.iter().map(|s| s.to_string()).collect(),
    };
    for n in &names {
        match probe::run_one(n, &a.targets) {
            Some(r) => println!("{r}"),
            None => println!("unknown probe {n}"),
        }
    }
    if a.only.is_none() {
        run_needed(&a, &cfg);
    }
    if let (Some(dir), Some(seq)) = (&a.dir, &seq) {
        serve(dir, seq);
    }
    println!("done");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_loads_from_a_section_or_alone() {
        let alone =
            load_config("fabric = \"verbs\"\n[seccomp]\naction = \"kill\"\n").expect("alone");
        assert_eq!(alone.fabric, super::super::FabricNeeds::Verbs);
        let whole = load_config("[hardening]\nrun_as = \"memgate\"\n").expect("section");
        assert_eq!(whole.run_as.as_deref(), Some("memgate"));
        assert!(load_config("[hardening]\nbogus = 1\n").is_err());
        assert!(parse_args(["--target".to_string()].into_iter()).is_err());
        let a = parse_args(
            ["--only", "mount,bpf_map_create", "--serve"]
                .iter()
                .map(|s| s.to_string()),
        )
        .expect("args");
        assert!(a.serve && a.only.map(|v| v.len()) == Some(2));
    }
}
