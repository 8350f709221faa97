//! Syscall names to numbers for the running architecture.
//!
//! The seccomp allow-list names syscalls; this table turns a name into the number the
//! kernel sees. Names that exist only on some architectures (the legacy x86_64 calls such
//! as `open` or `poll`) are listed separately so that the same allow-list compiles
//! everywhere: on an architecture without them they are skipped, not an error.

/// Expands to a lookup function over `libc::SYS_*` constants.
macro_rules! syscall_table {
    ($fn_name:ident: $($name:ident),* $(,)?) => {
        fn $fn_name(name: &str) -> Option<i64> {
            match name {
                $(stringify!($name) => Some(i64::from(libc::$name)),)*
                _ => None,
            }
        }
    };
}

// Names with the `SYS_` prefix stripped at lookup time.
syscall_table!(common:
    SYS_read, SYS_write, SYS_readv, SYS_writev, SYS_pread64, SYS_pwrite64, SYS_preadv,
    SYS_pwritev, SYS_preadv2, SYS_pwritev2, SYS_close, SYS_close_range, SYS_openat,
    SYS_openat2, SYS_newfstatat, SYS_fstat, SYS_statx, SYS_fstatfs, SYS_statfs, SYS_lseek,
    SYS_readlinkat, SYS_getdents64, SYS_faccessat, SYS_faccessat2, SYS_fcntl, SYS_ioctl,
    SYS_dup, SYS_dup3, SYS_pipe2, SYS_fsync, SYS_fdatasync, SYS_ftruncate, SYS_renameat,
    SYS_renameat2, SYS_unlinkat, SYS_mkdirat, SYS_fchmod, SYS_fchmodat, SYS_fchown,
    SYS_fchownat, SYS_flock, SYS_mmap, SYS_munmap, SYS_mprotect, SYS_madvise, SYS_mremap,
    SYS_brk, SYS_mlock, SYS_munlock, SYS_mlockall, SYS_munlockall, SYS_membarrier,
    SYS_futex, SYS_futex_waitv, SYS_set_robust_list, SYS_get_robust_list, SYS_rseq,
    SYS_set_tid_address, SYS_sched_yield, SYS_sched_getaffinity, SYS_sched_setaffinity,
    SYS_clone, SYS_clone3, SYS_exit, SYS_exit_group, SYS_wait4, SYS_waitid, SYS_kill,
    SYS_tgkill, SYS_tkill, SYS_getpid, SYS_gettid, SYS_getppid, SYS_getuid, SYS_geteuid,
    SYS_getgid, SYS_getegid, SYS_getresuid, SYS_getresgid, SYS_getgroups, SYS_setresuid,
    SYS_setresgid, SYS_setgroups, SYS_capget, SYS_capset, SYS_prctl, SYS_prlimit64,
    SYS_getrlimit, SYS_setrlimit, SYS_getrusage, SYS_uname, SYS_sysinfo, SYS_getcwd,
    SYS_rt_sigaction, SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_rt_sigtimedwait,
    SYS_rt_sigqueueinfo, SYS_sigaltstack, SYS_signalfd4, SYS_timerfd_create,
    SYS_timerfd_settime, SYS_timerfd_gettime, SYS_eventfd2, SYS_epoll_create1,
    SYS_epoll_ctl, SYS_epoll_pwait, SYS_epoll_pwait2, SYS_ppoll, SYS_pselect6,
    SYS_clock_gettime, SYS_clock_getres, SYS_clock_nanosleep, SYS_nanosleep, SYS_gettimeofday,
    SYS_getrandom, SYS_socket, SYS_socketpair, SYS_bind, SYS_listen, SYS_accept4,
    SYS_connect, SYS_getsockname, SYS_getpeername, SYS_getsockopt, SYS_setsockopt,
    SYS_shutdown, SYS_sendto, SYS_recvfrom, SYS_sendmsg, SYS_recvmsg, SYS_sendmmsg,
    SYS_recvmmsg, SYS_pidfd_open, SYS_pidfd_send_signal, SYS_pidfd_getfd,
    SYS_process_vm_readv, SYS_process_vm_writev, SYS_execve, SYS_execveat, SYS_ptrace,
    SYS_mount, SYS_umount2, SYS_pivot_root, SYS_bpf, SYS_kexec_load, SYS_kexec_file_load,
    SYS_init_module, SYS_finit_module, SYS_delete_module, SYS_userfaultfd, SYS_keyctl,
    SYS_add_key, SYS_request_key, SYS_unshare, SYS_setns, SYS_chroot, SYS_reboot,
    SYS_swapon, SYS_swapoff, SYS_perf_event_open, SYS_memfd_create, SYS_name_to_handle_at,
    SYS_open_by_handle_at, SYS_landlock_create_ruleset, SYS_landlock_add_rule,
    SYS_landlock_restrict_self, SYS_seccomp, SYS_io_uring_setup, SYS_io_uring_enter,
    SYS_io_uring_register, SYS_fanotify_init, SYS_inotify_init1, SYS_inotify_add_watch,
    SYS_inotify_rm_watch, SYS_sync_file_range, SYS_fallocate, SYS_restart_syscall,
);

#[cfg(target_arch = "x86_64")]
syscall_table!(legacy:
    SYS_open, SYS_stat, SYS_lstat, SYS_poll, SYS_select, SYS_access, SYS_readlink,
    SYS_pipe, SYS_dup2, SYS_epoll_create, SYS_epoll_wait, SYS_arch_prctl, SYS_getdents,
    SYS_rename, SYS_unlink, SYS_mkdir, SYS_fork, SYS_vfork, SYS_time, SYS_accept,
    SYS_signalfd, SYS_eventfd, SYS_alarm, SYS_getpgrp, SYS_chmod, SYS_chown,
);

#[cfg(not(target_arch = "x86_64"))]
fn legacy(_name: &str) -> Option<i64> {
    None
}

/// Names that only some architectures have; skipped where absent.
const LEGACY_NAMES: &[&str] = &[
    "open",
    "stat",
    "lstat",
    "poll",
    "select",
    "access",
    "readlink",
    "pipe",
    "dup2",
    "epoll_create",
    "epoll_wait",
    "arch_prctl",
    "getdents",
    "rename",
    "unlink",
    "mkdir",
    "fork",
    "vfork",
    "time",
    "accept",
    "signalfd",
    "eventfd",
    "alarm",
    "getpgrp",
    "chmod",
    "chown",
];

/// How a name resolves on this architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The syscall number.
    Number(i64),
    /// A known syscall that this architecture does not have.
    AbsentOnArch,
    /// Not a syscall name this table knows.
    Unknown,
}

/// Resolves a syscall name (without `SYS_` prefix) on the running architecture.
pub fn lookup(name: &str) -> Lookup {
    let key = format!("SYS_{name}");
    if let Some(nr) = common(&key).or_else(|| legacy(&key)) {
        Lookup::Number(nr)
    } else if LEGACY_NAMES.contains(&name) {
        Lookup::AbsentOnArch
    } else {
        Lookup::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_common_and_rejects_unknown() {
        assert_eq!(lookup("read"), Lookup::Number(libc::SYS_read));
        assert_eq!(lookup("execve"), Lookup::Number(libc::SYS_execve));
        assert_eq!(lookup("no_such_call"), Lookup::Unknown);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn legacy_names_resolve_on_x86_64() {
        for name in LEGACY_NAMES {
            assert!(
                matches!(lookup(name), Lookup::Number(_)),
                "{name} should resolve on x86_64"
            );
        }
    }
}
