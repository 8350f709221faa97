//! Forbidden-operation probes: each one tries something a hardened memgated must never be
//! able to do (run a program, trace or read another process, mount, open raw or packet
//! sockets, load BPF, kexec, load modules, escape Landlock, regain a capability) and
//! records how the kernel answered.
//!
//! The probes are meant to run inside a process that has already called
//! [`super::apply`]; `memgated-harden-probe` does exactly that, and the hardening tests
//! run it in a child process because hardening cannot be undone. Every probe that could
//! change the system if it succeeded undoes its effect (closes the socket, detaches).

use std::fmt;
use std::path::{Path, PathBuf};

use super::probe_ops::*;

/// How the kernel answered one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The operation succeeded.
    Ok,
    /// The operation failed with this errno.
    Refused(i32),
}

impl Outcome {
    pub(super) fn of(rc: libc::c_long) -> Outcome {
        if rc < 0 {
            Outcome::Refused(last_errno())
        } else {
            Outcome::Ok
        }
    }
}

/// Probe groups, as in the hardening requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Running another program.
    Exec,
    /// Tracing or reading another process outside the mem-fd path.
    Ptrace,
    /// Mounts and namespaces.
    Mount,
    /// Raw, packet and netlink sockets.
    Socket,
    /// BPF programs and maps.
    Bpf,
    /// Loading a new kernel.
    Kexec,
    /// Kernel modules.
    Module,
    /// Files outside the Landlock rules.
    Landlock,
    /// Getting a dropped privilege back.
    Regain,
    /// Other kernel interfaces memgated does not use.
    Misc,
}

impl Group {
    /// Lower-case name used in probe output.
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Exec => "exec",
            Group::Ptrace => "ptrace",
            Group::Mount => "mount",
            Group::Socket => "socket",
            Group::Bpf => "bpf",
            Group::Kexec => "kexec",
            Group::Module => "module",
            Group::Landlock => "landlock",
            Group::Regain => "regain",
            Group::Misc => "misc",
        }
    }
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// Group.
    pub group: Group,
    /// Probe name (unique).
    pub name: &'static str,
    /// What happened.
    pub outcome: Outcome,
}

impl fmt::Display for ProbeResult {
    /// `probe GROUP NAME ok` or `probe GROUP NAME refused ERRNO`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.outcome {
            Outcome::Ok => write!(f, "probe {} {} ok", self.group.as_str(), self.name),
            Outcome::Refused(e) => {
                write!(f, "probe {} {} refused {e}", self.group.as_str(), self.name)
            }
        }
    }
}

/// What the probes aim at.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Another process (ptrace, process_vm_readv, pidfd_getfd, kill).
    pub pid: Option<libc::pid_t>,
    /// A file outside every Landlock rule, to open for reading.
    pub outside_file: Option<PathBuf>,
    /// A directory outside every Landlock rule, to create a file in.
    pub outside_dir: Option<PathBuf>,
    /// A file inside a read-only rule, to open for writing.
    pub read_only_file: Option<PathBuf>,
    /// A directory to try mounting on (default: the outside directory, else /mnt).
    pub mount_point: Option<PathBuf>,
}

/// Every probe name, in the order [`run`] tries them.
pub const NAMES: &[&str] = &[
    "execve",
    "execveat",
    "ptrace_seize",
    "process_vm_readv",
    "pidfd_getfd",
    "kill_other",
    "proc_maps_direct",
    "proc_mem_direct",
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
    "open_outside",
    "create_outside",
    "write_read_only",
    "capset_raise",
    "ambient_raise",
    "setuid_root",
    "keep_caps",
    "userfaultfd",
    "io_uring",
    "perf_event_open",
    "keyctl",
    "clone3",
];

/// Runs one probe by name; None for an unknown name.
pub fn run_one(name: &str, t: &Targets) -> Option<ProbeResult> {
    let pid = t.pid.unwrap_or(1);
    let outside_dir = t
        .outside_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let mount_point = t.mount_point.clone().unwrap_or_else(|| outside_dir.clone());
    let (group, outcome) = match name {
        "execve" => (Group::Exec, exec_in_child(false)),
        "execveat" => (Group::Exec, exec_in_child(true)),
        "ptrace_seize" => (Group::Ptrace, ptrace_seize(pid)),
        "process_vm_readv" => (Group::Ptrace, process_vm_readv(pid)),
        "pidfd_getfd" => (Group::Ptrace, pidfd_getfd(pid)),
        // Signal 0 only checks permission; nothing is delivered.
        "kill_other" => (Group::Ptrace, raw(libc::SYS_kill, [pid.into(), 0, 0, 0])),
        // The broker reads maps and memory only through fds the requester opened.
        "proc_maps_direct" => (
            Group::Ptrace,
            open_path(Path::new(&format!("/proc/{pid}/maps")), libc::O_RDONLY),
        ),
        "proc_mem_direct" => (
            Group::Ptrace,
            open_path(Path::new(&format!("/proc/{pid}/mem")), libc::O_RDONLY),
        ),
        "mount" => (Group::Mount, mount_tmpfs(&mount_point)),
        "umount" => {
            let c = cpath(&mount_point);
            // SAFETY: valid path; MNT_EXPIRE on a non-mount point changes nothing even
            // when permitted (EINVAL), and a refusal comes before that check.
            let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_EXPIRE) };
            (Group::Mount, Outcome::of(rc.into()))
        }
        "unshare_userns" => (
            Group::Mount,
            raw(
                libc::SYS_unshare,
                [(libc::CLONE_NEWUSER | libc::CLONE_NEWNS).into(), 0, 0, 0],
            ),
        ),
        "clone_newns" => (Group::Mount, clone_newns()),
        "chroot" => {
            let c = cpath(&outside_dir);
            // SAFETY: valid path.
            let rc = unsafe { libc::chroot(c.as_ptr()) };
            (Group::Mount, Outcome::of(rc.into()))
        }
        "raw_socket" => (
            Group::Socket,
            socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
        ),
        "packet_socket" => (
            Group::Socket,
            socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from(0x0003u16.to_be()),
            ),
        ),
        "netlink_socket" => (
            Group::Socket,
            socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
        ),
        "bpf_map_create" => (Group::Bpf, bpf_map_create()),
        // An unknown architecture in the flags: EINVAL right after the privilege check,
        // so even a broken hardening changes nothing.
        "kexec_load" => (
            Group::Kexec,
            raw(libc::SYS_kexec_load, [0, 0, 0, 0x7fff_0000]),
        ),
        "kexec_file_load" => (Group::Kexec, kexec_file_load()),
        "init_module" => (Group::Module, init_module()),
        "finit_module" => (Group::Module, raw(libc::SYS_finit_module, [-1, 0, 0, 0])),
        "delete_module" => (Group::Module, delete_module()),
        "open_outside" => (
            Group::Landlock,
            open_path(
                t.outside_file
                    .as_deref()
                    .unwrap_or_else(|| Path::new("/etc/passwd")),
                libc::O_RDONLY,
            ),
        ),
        "create_outside" => (
            Group::Landlock,
            open_path(
                &outside_dir.join(format!("memgate-probe-{}", std::process::id())),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            ),
        ),
        "write_read_only" => (
            Group::Landlock,
            match &t.read_only_file {
                Some(p) => open_path(p, libc::O_WRONLY | libc::O_APPEND),
                None => Outcome::Refused(libc::ENOENT),
            },
        ),
        "capset_raise" => (Group::Regain, capset_raise()),
        "ambient_raise" => (
            Group::Regain,
            prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                21, // CAP_SYS_ADMIN
            ),
        ),
        "setuid_root" => (Group::Regain, raw(libc::SYS_setresuid, [0, 0, 0, 0])),
        "keep_caps" => (Group::Regain, prctl(libc::PR_SET_KEEPCAPS, 1, 0)),
        "userfaultfd" => (Group::Misc, raw(libc::SYS_userfaultfd, [0, 0, 0, 0])),
        "io_uring" => (Group::Misc, io_uring_setup()),
        "perf_event_open" => (Group::Misc, perf_event_open()),
        // KEYCTL_JOIN_SESSION_KEYRING with a null name: a new anonymous keyring.
        "keyctl" => (Group::Misc, raw(libc::SYS_keyctl, [1, 0, 0, 0])),
        "clone3" => (Group::Misc, clone3()),
        _ => return None,
    };
    Some(ProbeResult {
        group,
        name: NAMES.iter().find(|n| **n == name).copied().unwrap_or("?"),
        outcome,
    })
}

/// Runs every probe.
pub fn run(t: &Targets) -> Vec<ProbeResult> {
    NAMES.iter().filter_map(|n| run_one(n, t)).collect()
}

/// Parses one line printed by [`ProbeResult`]'s Display: (group, name, None for ok or
/// Some(errno)).
pub fn parse_line(line: &str) -> Option<(String, String, Option<i32>)> {
    let mut it = line.split_whitespace();
    if it.next()? != "probe" {
        return None;
    }
    let group = it.next()?.to_string();
    let name = it.next()?.to_string();
    match it.next()? {
        "ok" => Some((group, name, None)),
        "refused" => Some((group, name, Some(it.next()?.parse().ok()?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_runs_and_prints_parseable_lines() {
        // Unhardened, as root or not: only check the plumbing on harmless probes.
        let t = Targets::default();
        for name in ["write_read_only", "open_outside"] {
            let r = run_one(name, &t).expect("known probe");
            let line = r.to_string();
            let (g, n, _) = parse_line(&line).expect("parses");
            assert_eq!((g.as_str(), n.as_str()), (r.group.as_str(), name));
        }
        assert!(run_one("no_such_probe", &t).is_none());
        assert_eq!(
            parse_line("probe exec execve refused 1"),
            Some(("exec".into(), "execve".into(), Some(1)))
        );
        assert_eq!(parse_line("ready x"), None);
    }
}
