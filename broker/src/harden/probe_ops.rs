//! The system calls behind each forbidden-operation probe of [`super::probe`]: each
//! tries one thing and returns how the kernel answered, undoing any effect if the call
//! unexpectedly succeeded.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::probe::Outcome;

pub(super) fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub(super) fn cpath(p: &Path) -> CString {
    // Paths given on a command line cannot contain NUL; fall back to an impossible path.
    CString::new(p.as_os_str().as_bytes()).unwrap_or_else(|_| c"/\u{1}".to_owned())
}

/// Closes `rc` when it is an fd that a probe unexpectedly obtained.
pub(super) fn close_if_fd(rc: libc::c_long) -> Outcome {
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
pub(super) fn exec_in_child(use_execveat: bool) -> Outcome {
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

pub(super) fn ptrace_seize(pid: libc::pid_t) -> Outcome {
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

pub(super) fn process_vm_readv(pid: libc::pid_t) -> Outcome {
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

pub(super) fn pidfd_getfd(pid: libc::pid_t) -> Outcome {
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

pub(super) fn mount_tmpfs(at: &Path) -> Outcome {
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

pub(super) fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> Outcome {
    // SAFETY: integer arguments only.
    close_if_fd(unsafe { libc::socket(domain, ty, proto) }.into())
}

pub(super) fn bpf_map_create() -> Outcome {
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

pub(super) fn open_path(p: &Path, flags: libc::c_int) -> Outcome {
    let c = cpath(p);
    // SAFETY: valid NUL-terminated path; the mode argument is used only with O_CREAT.
    close_if_fd(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600) }.into())
}

pub(super) fn capset_raise() -> Outcome {
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
pub(super) struct libc_cap_header {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct libc_cap_data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

pub(super) fn prctl(op: libc::c_int, a: libc::c_ulong, b: libc::c_ulong) -> Outcome {
    // SAFETY: prctl with integer arguments only.
    Outcome::of(unsafe { libc::prctl(op, a, b, 0 as libc::c_ulong, 0 as libc::c_ulong) }.into())
}

pub(super) fn raw(nr: libc::c_long, args: [libc::c_long; 4]) -> Outcome {
    // SAFETY: only called with syscalls whose arguments are integers or null pointers.
    close_if_fd(unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3]) })
}

pub(super) fn kexec_file_load() -> Outcome {
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

pub(super) fn init_module() -> Outcome {
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

pub(super) fn delete_module() -> Outcome {
    // SAFETY: valid NUL-terminated module name; O_NONBLOCK never waits.
    Outcome::of(unsafe {
        libc::syscall(
            libc::SYS_delete_module,
            c"memgate_no_such_module".as_ptr(),
            libc::O_NONBLOCK,
        )
    })
}

pub(super) fn io_uring_setup() -> Outcome {
    let mut params = [0u8; 120]; // struct io_uring_params, zeroed
                                 // SAFETY: a zeroed params struct of the kernel's size; on success the fd is closed.
    close_if_fd(unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) })
}

pub(super) fn perf_event_open() -> Outcome {
    // struct perf_event_attr: type PERF_TYPE_SOFTWARE, size, config SW_CPU_CLOCK.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes());
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    // SAFETY: a zero-filled attr of the stated size; on success the fd is closed.
    close_if_fd(unsafe {
        libc::syscall(libc::SYS_perf_event_open, attr.as_mut_ptr(), 0, -1, -1, 0)
    })
}

/// The outcome of a fork-like raw syscall that returned `rc`: in the child (0) exit at once;
/// in the parent reap the child and report success; otherwise report the errno.
fn fork_outcome(rc: libc::c_long) -> Outcome {
    if rc == 0 {
        // SAFETY: terminating the child immediately; it touches nothing of the parent's.
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

pub(super) fn clone_newns() -> Outcome {
    // A raw clone with a namespace flag and SIGCHLD; the child (if any) exits at once.
    let flags = (libc::CLONE_NEWNS | libc::SIGCHLD) as libc::c_long;
    // SAFETY: clone without CLONE_VM and a null stack behaves like fork: the child gets a
    // copy of our address space and only calls _exit.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
    fork_outcome(rc)
}

pub(super) fn clone3() -> Outcome {
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
    fork_outcome(rc)
}
