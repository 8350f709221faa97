//! Forbidden-operation probes: each one tries something a hardened memgated must never be
//! able to do (run a program, trace or read another process, mount, open raw or packet
//! sockets, load BPF, kexec, load modules, escape Landlock, regain a capability) and
//! records how the kernel answered.
//!
//! The probes are meant to run inside a process that has already called
//! [`super::apply`]; `memgated-harden-probe` does exactly that, and the hardening tests
//! run it in a child process because hardening cannot be undone. Every probe that could
//! change the system if it succeeded undoes its effect (closes the socket, detaches).

use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How the kernel answered one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The operation succeeded.
    Ok,
    /// The operation failed with this errno.
    Refused(i32),
}

impl Outcome {
    fn of(rc: libc::c_long) -> Outcome {
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

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn cpath(p: &Path) -> CString {
    // Paths given on a command line cannot contain NUL; fall back to an impossible path.
    CString::new(p.as_os_str().as_bytes()).unwrap_or_else(|_| c"/\u{1}".to_owned())
}

/// Closes `rc` when it is an fd that a probe unexpectedly obtained.
fn close_if_fd(rc: libc::c_long) -> Outcome {
    let out = Outcome::of(rc);
    if let Ok(fd) = libc::c_int::try_from(rc) {
        if fd >= 0 {
            // SAFETY: `fd` was just returned to us by the kernel and is owned by nobody else.
            unsafe { libc::close(fd) };
        }
    }
    out
}

/// Runs `/bin/true` in a forked child; the child's exit status says whether execve worked
/// (0) or which errno it failed with. The fork is made by the probe process, which is
/// single-threaded, so the child may call execve and _exit safely.
fn exec_in_child(use_execveat: bool) -> Outcome {
    let prog = c"/bin/true";
    let argv = [prog.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    // SAFETY: fork in a single-threaded process; the child only calls async-signal-safe
    // functions (execve/syscall, _exit) on data prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Outcome::Refused(last_errno());
    }
    if pid == 0 {
        // SAFETY: argv/envp are NUL-terminated arrays of valid C strings that live until
        // execve returns (it only returns on failure).
        unsafe {
            if use_execveat {
                libc::syscall(
                    libc::SYS_execveat,
                    libc::AT_FDCWD,
                    prog.as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                    0,
                );
            } else {
                libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
            }
            let e = *libc::__errno_location();
            libc::_exit(if e == 0 { 255 } else { e & 0xff });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    if rc < 0 {
        return Outcome::Refused(last_errno());
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Outcome::Ok
    } else if libc::WIFEXITED(status) {
        Outcome::Refused(libc::WEXITSTATUS(status))
    } else {
        // Killed (seccomp kill action): the exec certainly did not run.
        Outcome::Refused(libc::EPERM)
    }
}

fn ptrace_seize(pid: libc::pid_t) -> Outcome {
    // SAFETY: PTRACE_SEIZE with integer arguments; it does not stop the tracee.
    let rc = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) };
    let out = Outcome::of(rc);
    if out == Outcome::Ok {
        // SAFETY: integer arguments; a seized, running tracee is detached by interrupting
        // it first. Failure only leaves it traced until we exit, which detaches it.
        unsafe {
            libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0, 0);
            let mut st = 0;
            libc::waitpid(pid, &mut st, libc::__WALL);
            libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
        }
    }
    out
}

fn process_vm_readv(pid: libc::pid_t) -> Outcome {
    let mut buf = [0u8; 8];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Address 0x1000 of the target: refused before any address is looked at.
    let remote = libc::iovec {
        iov_base: 0x1000 as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: both iovecs describe valid memory of the stated length (the remote one is
    // only interpreted in the other process).
    Outcome::of(unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) } as libc::c_long)
}

fn pidfd_getfd(pid: libc::pid_t) -> Outcome {
    // SAFETY: integer arguments only.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Outcome::Refused(last_errno());
    }
    // SAFETY: integer arguments only; fd 0 of the target is asked for.
    let out = close_if_fd(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, 0, 0) });
    close_if_fd(pidfd);
    out
}

fn mount_tmpfs(at: &Path) -> Outcome {
    let target = cpath(at);
    // SAFETY: valid NUL-terminated strings and a null data pointer.
    let rc = unsafe {
        libc::mount(
            c"memgate-probe".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    let out = Outcome::of(rc.into());
    if out == Outcome::Ok {
        // SAFETY: valid path; undoes the mount we just made.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
    out
}

fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> Outcome {
    // SAFETY: integer arguments only.
    close_if_fd(unsafe { libc::socket(domain, ty, proto) }.into())
}

fn bpf_map_create() -> Outcome {
    // struct bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries, then
    // zeros. An array map of one 4-byte entry is the smallest valid request.
    let mut attr = [0u32; 32];
    attr[0] = 2; // BPF_MAP_TYPE_ARRAY
    attr[1] = 4;
    attr[2] = 4;
    attr[3] = 1;
    // SAFETY: `attr` is a zeroed buffer larger than the fields the kernel reads for
    // BPF_MAP_CREATE, and its size is passed.
    close_if_fd(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0, // BPF_MAP_CREATE
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    })
}

fn open_path(p: &Path, flags: libc::c_int) -> Outcome {
    let c = cpath(p);
    // SAFETY: valid NUL-terminated path; the mode argument is used only with O_CREAT.
    close_if_fd(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600) }.into())
}

fn capset_raise() -> Outcome {
    let mut hdr = libc_cap_header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    // Ask for every capability in every set.
    let data = [libc_cap_data {
        effective: u32::MAX,
        permitted: u32::MAX,
        inheritable: u32::MAX,
    }; 2];
    // SAFETY: header and two data structs of the kernel's v3 layout.
    Outcome::of(unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut _, data.as_ptr()) })
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct libc_cap_header {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy)]
struct libc_cap_data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn prctl(op: libc::c_int, a: libc::c_ulong, b: libc::c_ulong) -> Outcome {
    // SAFETY: prctl with integer arguments only.
    Outcome::of(unsafe { libc::prctl(op, a, b, 0 as libc::c_ulong, 0 as libc::c_ulong) }.into())
}

fn raw(nr: libc::c_long, args: [libc::c_long; 4]) -> Outcome {
    // SAFETY: only called with syscalls whose arguments are integers or null pointers.
    close_if_fd(unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3]) })
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

fn kexec_file_load() -> Outcome {
    // Invalid fds and no command line: EBADF after the privilege check.
    // SAFETY: integer arguments and a null command line of length 0.
    Outcome::of(unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            -1,
            -1,
            0usize,
            std::ptr::null::<u8>(),
            0u64,
        )
    })
}

fn init_module() -> Outcome {
    // An empty "module": refused for want of privilege before it is parsed.
    // SAFETY: a null image of length 0 and a valid empty parameter string.
    Outcome::of(unsafe {
        libc::syscall(
            libc::SYS_init_module,
            std::ptr::null::<u8>(),
            0usize,
            c"".as_ptr(),
        )
    })
}

fn delete_module() -> Outcome {
    // SAFETY: valid NUL-terminated module name; O_NONBLOCK never waits.
    Outcome::of(unsafe {
        libc::syscall(
            libc::SYS_delete_module,
            c"memgate_no_such_module".as_ptr(),
            libc::O_NONBLOCK,
        )
    })
}

fn io_uring_setup() -> Outcome {
    let mut params = [0u8; 120]; // struct io_uring_params, zeroed
                                 // SAFETY: a zeroed params struct of the kernel's size; on success the fd is closed.
    close_if_fd(unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) })
}

fn perf_event_open() -> Outcome {
    // struct perf_event_attr: type PERF_TYPE_SOFTWARE, size, config SW_CPU_CLOCK.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes());
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    // SAFETY: a zero-filled attr of the stated size; on success the fd is closed.
    close_if_fd(unsafe {
        libc::syscall(libc::SYS_perf_event_open, attr.as_mut_ptr(), 0, -1, -1, 0)
    })
}

fn clone_newns() -> Outcome {
    // A raw clone with a namespace flag and SIGCHLD; the child (if any) exits at once.
    let flags = (libc::CLONE_NEWNS | libc::SIGCHLD) as libc::c_long;
    // SAFETY: clone without CLONE_VM and a null stack behaves like fork: the child gets a
    // copy of our address space and only calls _exit.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
    if rc == 0 {
        // SAFETY: terminating the child immediately.
        unsafe { libc::_exit(0) };
    }
    if rc > 0 {
        let mut st = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(rc as libc::pid_t, &mut st, 0) };
        return Outcome::Ok;
    }
    Outcome::Refused(last_errno())
}

fn clone3() -> Outcome {
    // struct clone_args with only exit_signal = SIGCHLD (a plain fork).
    let mut args = [0u64; 11];
    args[4] = libc::SIGCHLD as u64;
    // SAFETY: clone3 like fork (no CLONE_VM): the child only calls _exit.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args.as_mut_ptr(),
            std::mem::size_of_val(&args),
        )
    };
    if rc == 0 {
        // SAFETY: terminating the child immediately.
        unsafe { libc::_exit(0) };
    }
    if rc > 0 {
        let mut st = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(rc as libc::pid_t, &mut st, 0) };
        return Outcome::Ok;
    }
    Outcome::Refused(last_errno())
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
