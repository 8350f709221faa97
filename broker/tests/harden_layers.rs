//! Each hardening layer on its own, in a really hardened child process: capabilities alone,
//! the seccomp filter alone (even for a process holding every capability), Landlock alone;
//! the kill action; the dedicated user; the capabilities each fabric keeps; and what
//! `--check-hardening` reports, including on a kernel without Landlock.

mod harden_util;

use harden_util::*;

const EPERM: i32 = libc::EPERM;
const EACCES: i32 = libc::EACCES;
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_PTRACE: u32 = 19;

fn expect_all(text: &str, names: &[&str], errno: i32) {
    let p = probes(text);
    for n in names {
        let got = p.get(*n).map(|(_, o)| *o);
        assert_eq!(
            got,
            Some(Some(errno)),
            "{n} must be refused with {errno}:\n{text}"
        );
    }
}

/// Privileged calls that dropping capabilities alone refuses (no filter, no Landlock).
/// Namespace creation is not among them: an unprivileged user namespace hands back a full
/// capability set inside it, which is why the seccomp filter refuses unshare and clone's
/// namespace flags.
#[test]
fn capabilities_alone_refuse_privileged_calls() {
    let s = Scratch::new("caps");
    let cfg = s.config("", "enabled = false\n[seccomp]\nenabled = false");
    let mut names = vec![
        "mount",
        "raw_socket",
        "packet_socket",
        "capset_raise",
        "ambient_raise",
    ];
    // Unprivileged BPF is a sysctl: only when it is off do capabilities alone refuse it.
    let bpf_sysctl =
        std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled").unwrap_or_default();
    if bpf_sysctl.trim() != "0" {
        names.push("bpf_map_create");
    }
    // A kernel built without kexec or module support answers ENOSYS whatever the caller
    // holds; either way the call is refused.
    let optional = [
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
    ];
    let all = [&names[..], &optional[..]].concat().join(",");
    let out = s.run_probe(&cfg, None, &["--only", &all]);
    assert!(out.ok, "{}", out.text);
    assert!(out.text.contains("caps bounding:    none"), "{}", out.text);
    expect_all(&out.text, &names, EPERM);
    let p = probes(&out.text);
    for n in optional {
        let got = p[n].1;
        assert!(
            got == Some(EPERM) || got == Some(libc::ENOSYS),
            "{n}: {got:?}\n{}",
            out.text
        );
    }
}

/// The filter refuses forbidden calls even in a root process that kept every capability.
#[test]
fn seccomp_alone_refuses_even_a_fully_privileged_process() {
    let s = Scratch::new("seccomp");
    let t = Target::spawn();
    // Every capability this test process holds (a container may withhold some).
    let all: Vec<String> = caps::read(None, caps::CapSet::Permitted)
        .expect("read permitted")
        .iter()
        .map(|c| format!("{c:?}"))
        .collect();
    let top = format!("extra_caps = {all:?}");
    let cfg = s.config(&top, "enabled = false");
    let out = s.run_probe(&cfg, Some(t.pid()), &[]);
    assert!(out.ok, "{}", out.text);
    assert!(
        out.text.contains(&format!("({} capabilities)", all.len())),
        "every capability must still be held:\n{}",
        out.text
    );
    expect_all(
        &out.text,
        &[
            "execve",
            "execveat",
            "ptrace_seize",
            "process_vm_readv",
            "pidfd_getfd",
            "kill_other",
            "mount",
            "umount",
            "unshare_userns",
            "clone_newns",
            "chroot",
            "raw_socket",
            "packet_socket",
            "netlink_socket",
            "bpf_map_create",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "capset_raise",
            "ambient_raise",
            "setuid_root",
            "keep_caps",
            "userfaultfd",
            "io_uring",
            "perf_event_open",
            "keyctl",
        ],
        EPERM,
    );
}

/// Landlock alone (no filter) refuses running programs, files outside the rules, and
/// ptrace-style access to other processes' maps and memory.
#[test]
fn landlock_alone_refuses_exec_outside_files_and_other_processes() {
    let s = Scratch::new("ll-only");
    let t = Target::spawn();
    let cfg = s.config("", "[seccomp]\nenabled = false");
    let names = [
        "execve",
        "open_outside",
        "create_outside",
        "write_read_only",
        "proc_maps_direct",
        "proc_mem_direct",
    ];
    let out = s.run_probe(&cfg, Some(t.pid()), &["--only", &names.join(",")]);
    assert!(out.ok, "{}", out.text);
    expect_all(&out.text, &names, EACCES);
}

#[test]
fn kill_action_kills_the_process_on_a_refused_call() {
    let s = Scratch::new("kill");
    let cfg = s.config("", "[seccomp]\naction = \"kill\"");
    let out = s.run_probe(&cfg, None, &["--only", "mount"]);
    assert_eq!(out.signal, Some(libc::SIGSYS), "{}", out.text);
    assert!(!out.text.contains("probe mount mount"), "{}", out.text);
}

/// A system user created for the test and deleted afterwards, even on failure.
struct TempUser(String);

impl TempUser {
    fn create() -> TempUser {
        let name = format!("memgate-t-{}", std::process::id());
        let st = std::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                &name,
            ])
            .status()
            .expect("useradd");
        assert!(st.success(), "useradd {name}");
        TempUser(name)
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel").arg(&self.0).status();
    }
}

fn user_ids(name: &str) -> u32 {
    let out = std::process::Command::new("id")
        .args(["-u", name])
        .output()
        .expect("id -u");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("uid")
}

#[test]
fn dedicated_user_keeps_only_the_fabric_capabilities() {
    let user = TempUser::create();
    let uid = user_ids(&user.0);
    let s = Scratch::new("user");
    let verbs = cap_bit(CAP_IPC_LOCK) | cap_bit(CAP_SYS_PTRACE);
    for (fabric, keep, landlock) in [("soft", 0u64, ""), ("verbs", verbs, "enabled = false")] {
        let top = format!("run_as = {:?}\nfabric = {fabric:?}", user.0);
        let cfg = s.config(&top, landlock);
        let mut child = s.spawn_probe(&cfg, None, &["--serve"]);
        // Wait for the ready line, then read the state of the running process.
        let stdout = child.0.stdout.take().expect("stdout");
        let mut text = String::new();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        for line in lines.by_ref() {
            let line = line.expect("read");
            text.push_str(&line);
            text.push('\n');
            if line.starts_with("ready ") {
                break;
            }
        }
        assert!(
            text.contains("ready "),
            "{fabric}: probe ended early:\n{text}"
        );
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id()))
            .unwrap_or_else(|e| panic!("status: {e}\n{text}"));
        let uids: Vec<u32> = status_field(&status, "Uid")
            .split_whitespace()
            .filter_map(|u| u.parse().ok())
            .collect();
        assert_eq!(uids[..3], [uid; 3], "{fabric}: {status}\n{text}");
        for key in ["CapEff", "CapPrm", "CapBnd"] {
            let mask = u64::from_str_radix(status_field(&status, key), 16).expect("mask");
            assert_eq!(mask, keep, "{fabric}: {key}");
        }
        for key in ["CapInh", "CapAmb"] {
            assert_eq!(
                status_field(&status, key),
                "0000000000000000",
                "{fabric}: {key}"
            );
        }
        expect_all(&text, &["setuid_root", "capset_raise", "keep_caps"], EPERM);
        drop(child);
    }
}

#[test]
fn stock_kernel_path_keeps_exactly_ipc_lock_and_sys_ptrace() {
    let s = Scratch::new("stock");
    let t = Target::spawn();
    // Landlock would refuse the kernel's ptrace check on targets (injection here, pidfd
    // registration for "verbs"); the configuration must say so.
    for fabric in ["verbs-stock-kernel", "verbs"] {
        let refused = s.run_probe(&s.config(&format!("fabric = {fabric:?}"), ""), None, &[]);
        assert_eq!(refused.code, Some(2), "{fabric}: {}", refused.text);
        assert!(
            refused.text.contains(&format!(
                "the {fabric} fabric needs the kernel's ptrace check"
            )),
            "{}",
            refused.text
        );
    }

    let cfg = s.config("fabric = \"verbs-stock-kernel\"", "enabled = false");
    let out = s.run_probe(
        &cfg,
        Some(t.pid()),
        &["--only", "ptrace_seize,mount,execve,raw_socket"],
    );
    assert!(out.ok, "{}", out.text);
    for set in ["effective", "permitted", "bounding"] {
        let line = format!("caps {set}:");
        let l = out
            .text
            .lines()
            .find(|l| l.contains(&line))
            .expect("caps line");
        assert!(l.ends_with("CAP_IPC_LOCK,CAP_SYS_PTRACE"), "{l}");
    }
    let p = probes(&out.text);
    assert_eq!(
        p["ptrace_seize"].1, None,
        "the filter lets this fabric trace"
    );
    expect_all(&out.text, &["mount", "execve", "raw_socket"], EPERM);
}

#[test]
fn check_hardening_exits_zero_when_everything_is_in_force() {
    let s = Scratch::new("check");
    let out = s.run_probe(&s.config("", ""), None, &["--check"]);
    assert_eq!(out.code, Some(0), "{}", out.text);
    for want in [
        "caps effective:   none",
        "caps bounding:    none",
        "no_new_privs:     true",
        "seccomp:          filter, 2 filter(s)",
        "FullyEnforced",
        "violation -> Errno",
        "everything the configuration asks for is in force",
    ] {
        assert!(out.text.contains(want), "missing {want:?}:\n{}", out.text);
    }
    let abi = out
        .text
        .lines()
        .find_map(|l| l.strip_prefix("landlock:         "))
        .and_then(|r| r.split("(kernel ABI ").nth(1))
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|n| n.parse::<i32>().ok())
        .expect("landlock ABI line");
    assert!(abi >= 1, "this kernel has Landlock");
    let rules = out
        .text
        .lines()
        .find_map(|l| l.strip_prefix("  allow-list:     "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok())
        .expect("rule count");
    assert!(rules > 50, "{rules}");
}

/// Best effort on a kernel without Landlock: hardening still goes on, the ABI obtained (0)
/// is reported, and --check-hardening exits 1; with `required = true` it refuses (exit 2).
#[test]
fn check_hardening_reports_a_kernel_without_landlock() {
    let s = Scratch::new("nolandlock");
    let out = s.run_probe(
        &s.config("", ""),
        None,
        &["--check", "--emulate-no-landlock"],
    );
    assert_eq!(out.code, Some(1), "{}", out.text);
    assert!(out.text.contains("(kernel ABI 0)"), "{}", out.text);
    assert!(
        out.text
            .contains("shortfall: Landlock NotEnforced (kernel ABI 0)"),
        "{}",
        out.text
    );
    assert!(out.text.contains("no_new_privs:     true"), "{}", out.text);

    let req = s.run_probe(
        &s.config("", "required = true"),
        None,
        &["--check", "--emulate-no-landlock"],
    );
    assert_eq!(req.code, Some(2), "{}", req.text);
    assert!(req.text.contains("landlock required"), "{}", req.text);
}

/// Under the systemd unit memgated starts with exactly the capabilities it keeps
/// (`CapabilityBoundingSet=`) and behind a `SystemCallFilter` that refuses, among others,
/// capset, setgroups and setresuid (`~@privileged`). Hardening must still succeed there.
#[test]
fn apply_succeeds_inside_the_units_sandbox() {
    let s = Scratch::new("unit");
    let t = Target::spawn();
    let denied = "capset,setgroups,setresuid,setresgid,mount,umount2,pivot_root,chroot,bpf,\
                  ptrace,process_vm_readv,kexec_load,init_module,finit_module,setrlimit,\
                  sched_setaffinity,perf_event_open";
    for (fabric, bounding, landlock) in [
        ("soft", "-all", ""),
        ("verbs", "-all,+ipc_lock,+sys_ptrace", "enabled = false"),
    ] {
        let wrapper = [
            "setpriv",
            "--bounding-set",
            bounding,
            "--inh-caps",
            "-all",
            "--ambient-caps",
            "-all",
            "--",
        ];
        let cfg = s.config(&format!("fabric = {fabric:?}"), landlock);
        let out = s.run_probe_wrapped(&wrapper, &cfg, Some(t.pid()), &["--deny-syscalls", denied]);
        assert!(out.ok, "{fabric}: {}", out.text);
        assert!(!out.text.contains("shortfall:"), "{fabric}: {}", out.text);
        let needed = needed_lines(&out.text);
        for name in ["read_config", "proc_cgroup", "audit_append", "thread_spawn"] {
            assert!(
                needed[name].starts_with("ok"),
                "{fabric} {name}: {}",
                out.text
            );
        }
        expect_all(&out.text, &["execve", "mount", "raw_socket"], EPERM);
    }
}
