//! The hardening, proven in really hardened processes: each test runs
//! `memgated-harden-probe`, which applies memgated's hardening (capabilities,
//! no_new_privs, Landlock, seccomp) to itself exactly as the broker does and then tries
//! forbidden operations (each must be refused) and the operations the broker needs (each
//! must still work). Hardening is irreversible, hence one child process per test.

mod harden_util;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use harden_util::*;
use memgated::harden::needed;

const EPERM: i32 = libc::EPERM;
const EACCES: i32 = libc::EACCES;

/// Runs the probe with the strict soft configuration against a live target.
fn strict() -> BTreeMap<String, (String, Option<i32>)> {
    let s = Scratch::new("strict");
    let t = Target::spawn();
    let cfg = s.config("", "");
    let out = s.run_probe(&cfg, Some(t.pid()), &[]);
    assert!(out.ok, "probe failed: {}", out.text);
    assert!(out.text.contains("\ndone"), "{}", out.text);
    assert!(
        !out.text.contains("shortfall:"),
        "strict config must be fully in force on this kernel:\n{}",
        out.text
    );
    probes(&out.text)
}

fn assert_refused(p: &BTreeMap<String, (String, Option<i32>)>, group: &str, errno: i32) {
    let in_group: Vec<_> = p.iter().filter(|(_, (g, _))| g == group).collect();
    assert!(!in_group.is_empty(), "no probes in group {group}");
    for (name, (_, outcome)) in in_group {
        assert_eq!(
            *outcome,
            Some(errno),
            "{group}/{name} must be refused with {errno}"
        );
    }
}

#[test]
fn hardened_broker_cannot_exec() {
    assert_refused(&strict(), "exec", EPERM);
}

#[test]
fn hardened_broker_cannot_ptrace_or_open_other_processes() {
    let p = strict();
    for name in [
        "ptrace_seize",
        "process_vm_readv",
        "pidfd_getfd",
        "kill_other",
    ] {
        assert_eq!(p[name].1, Some(EPERM), "{name}");
    }
    // Opening another process's maps or mem is a ptrace access: Landlock refuses it for
    // processes outside the broker's domain, so the broker sees memory only through fds
    // that a requester opened (and the kernel checked) itself.
    for name in ["proc_maps_direct", "proc_mem_direct"] {
        assert_eq!(p[name].1, Some(EACCES), "{name}");
    }
}

#[test]
fn hardened_broker_cannot_mount_or_enter_namespaces() {
    assert_refused(&strict(), "mount", EPERM);
}

#[test]
fn hardened_broker_cannot_open_raw_packet_or_netlink_sockets() {
    assert_refused(&strict(), "socket", EPERM);
}

#[test]
fn hardened_broker_cannot_load_bpf() {
    assert_refused(&strict(), "bpf", EPERM);
}

#[test]
fn hardened_broker_cannot_kexec() {
    assert_refused(&strict(), "kexec", EPERM);
}

#[test]
fn hardened_broker_cannot_load_or_remove_modules() {
    assert_refused(&strict(), "module", EPERM);
}

#[test]
fn landlock_refuses_files_outside_the_rules() {
    let s = Scratch::new("landlock");
    let cfg = s.config("", "");
    let out = s.run_probe(&cfg, None, &[]);
    assert!(out.ok, "{}", out.text);
    let p = probes(&out.text);
    assert_refused(&p, "landlock", EACCES);
    assert!(
        std::fs::read_dir(s.outside()).expect("outside dir").count() == 1,
        "nothing may have been created outside the rules"
    );
    let needed = needed_lines(&out.text);
    assert!(needed["read_config"].starts_with("ok"), "{needed:?}");
    assert!(needed["audit_append"].starts_with("ok"), "{needed:?}");
    let audit = std::fs::read_to_string(s.run().join("audit.log")).expect("audit log");
    assert_eq!(audit, "probe audit record\n");
}

#[test]
fn hardened_broker_cannot_regain_capabilities() {
    assert_refused(&strict(), "regain", EPERM);
}

#[test]
fn hardened_broker_cannot_use_unneeded_kernel_interfaces() {
    let p = strict();
    for name in ["userfaultfd", "io_uring", "perf_event_open", "keyctl"] {
        assert_eq!(p[name].1, Some(EPERM), "{name}");
    }
    // clone3 answers ENOSYS so that glibc falls back to clone, whose flags are checked.
    assert_eq!(p["clone3"].1, Some(libc::ENOSYS));
}

#[test]
fn threads_started_after_hardening_are_restricted_too() {
    let s = Scratch::new("thread");
    let out = s.run_probe(&s.config("", ""), None, &[]);
    assert!(out.ok, "{}", out.text);
    let needed = needed_lines(&out.text);
    assert_eq!(
        needed["thread_spawn"], "ok thread-probe-mount-mount-refused-1",
        "a new thread must start (clone fallback) and inherit the filter"
    );
}

/// The export-path operations work under the filter: seqpacket accept with SCM_RIGHTS,
/// pread through the passed mem fd, reading maps through a passed maps fd, TCP
/// listen/accept; and the running probe's status shows every set empty.
#[test]
fn needed_operations_work_under_the_filter() {
    let s = Scratch::new("needed");
    let t = Target::spawn();
    let cfg = s.config("", "");
    let mut child = s.spawn_probe(&cfg, Some(t.pid()), &["--serve"]);
    let stdout = child.0.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = String::new();
    let ready = loop {
        let line = lines
            .next()
            .expect("probe ended before ready")
            .expect("read");
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("ready ") {
            break line;
        }
    };
    let (seq_path, port) = parse_ready(&ready);

    // What is in force, read from outside.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id())).expect("status");
    for key in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&status, key), "0000000000000000", "{key}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(status_field(&status, "Seccomp"), "2");

    // The requester's side: open the target's files ourselves and pass them.
    let mem = std::fs::File::open(format!("/proc/{}/mem", t.pid())).expect("mem");
    let maps = std::fs::File::open(format!("/proc/{}/maps", t.pid())).expect("maps");
    let pidfd = t.pidfd();
    let maps_text = std::fs::read_to_string(format!("/proc/{}/maps", t.pid())).expect("maps");
    let first = maps_text.lines().next().expect("a mapping");
    let addr = u64::from_str_radix(first.split('-').next().expect("start"), 16).expect("hex");
    let mut expected = [0u8; 64];
    mem.read_exact_at(&mut expected, addr)
        .expect("our own read");

    let conn = needed::seqpacket_connect(&seq_path).expect("connect");
    needed::send_with_fds(
        conn.as_raw_fd(),
        format!("{addr:x} 64").as_bytes(),
        &[pidfd.as_raw_fd(), mem.as_raw_fd(), maps.as_raw_fd()],
    )
    .expect("send request with fds");
    let mut buf = [0u8; 256];
    let (n, _) = needed::recv_with_fds(conn.as_raw_fd(), &mut buf).expect("bytes");
    assert_eq!(&buf[..n], &expected, "bytes read by the hardened probe");
    let (n, _) = needed::recv_with_fds(conn.as_raw_fd(), &mut buf).expect("maps reply");
    assert_eq!(
        std::str::from_utf8(&buf[..n]).expect("utf-8"),
        format!("maps {}", maps_text.lines().count())
    );

    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("tcp connect");
    tcp.write_all(b"fabric-hello").expect("tcp write");
    let mut echo = [0u8; 12];
    tcp.read_exact(&mut echo).expect("tcp echo");
    assert_eq!(&echo, b"fabric-hello");

    for line in lines {
        let line = line.expect("read");
        seen.push_str(&line);
        seen.push('\n');
    }
    let st = child.0.wait().expect("wait");
    assert!(st.success(), "{st:?}\n{seen}");
    let needed = needed_lines(&seen);
    assert_eq!(needed["seqpacket_mem"], "ok 64", "{seen}");
    assert_eq!(needed["tcp_echo"], "ok 12", "{seen}");
    for name in [
        "proc_cgroup",
        "proc_status",
        "proc_self_status",
        "audit_append",
    ] {
        assert!(needed[name].starts_with("ok"), "{name}: {seen}");
    }
}
