//! Step 2 against real child processes and real fds.

use super::*;
use std::process::{Child, Command, Stdio};

fn me() -> PeerCred {
    PeerCred {
        pid: i32::try_from(std::process::id()).unwrap(),
        // SAFETY: getuid/getgid cannot fail.
        uid: unsafe { libc::getuid() },
        // SAFETY: as above.
        gid: unsafe { libc::getgid() },
        pidfd: None,
    }
}

struct Kid(Child);

impl Kid {
    fn sleep() -> Kid {
        Kid(Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap())
    }
    fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).unwrap()
    }
    fn fds(&self) -> Vec<OwnedFd> {
        vec![
            pidfd::open(self.pid()).unwrap(),
            mem(self.pid(), false),
            maps(self.pid()),
        ]
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mem(pid: i32, rw: bool) -> OwnedFd {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(rw)
        .open(format!("/proc/{pid}/mem"))
        .unwrap();
    OwnedFd::from(f)
}

fn maps(pid: i32) -> OwnedFd {
    OwnedFd::from(std::fs::File::open(format!("/proc/{pid}/maps")).unwrap())
}

fn code(r: Result<Proven, PtraceError>) -> &'static str {
    r.map(|_| ()).unwrap_err().code()
}

#[test]
fn accepts_the_pidfd_and_mem_of_one_live_process() {
    let k = Kid::sleep();
    let p = prove(k.fds(), &me(), Access::Read).unwrap();
    assert_eq!(p.pid, k.pid());
    p.check_alive().unwrap();
    let rw = vec![
        pidfd::open(k.pid()).unwrap(),
        mem(k.pid(), true),
        maps(k.pid()),
    ];
    prove(rw, &me(), Access::ReadWrite).unwrap();
}

#[test]
fn refuses_wrong_count_and_kind() {
    let k = Kid::sleep();
    let mut fds = k.fds();
    fds.pop();
    assert_eq!(code(prove(fds, &me(), Access::Read)), "fd_count");
    let mut fds = k.fds();
    fds.push(maps(k.pid()));
    assert_eq!(code(prove(fds, &me(), Access::Read)), "fd_count");
    assert_eq!(code(prove(Vec::new(), &me(), Access::Read)), "fd_count");
    let null = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
    assert_eq!(
        code(prove(
            vec![null, mem(k.pid(), false), maps(k.pid())],
            &me(),
            Access::Read
        )),
        "pidfd_invalid"
    );
    let status = OwnedFd::from(std::fs::File::open(format!("/proc/{}/status", k.pid())).unwrap());
    let fds = vec![pidfd::open(k.pid()).unwrap(), status, maps(k.pid())];
    assert_eq!(code(prove(fds, &me(), Access::Read)), "mem_fd_invalid");
    let null = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
    let fds = vec![pidfd::open(k.pid()).unwrap(), null, maps(k.pid())];
    assert_eq!(code(prove(fds, &me(), Access::Read)), "mem_fd_invalid");
}

#[test]
fn refuses_mem_of_another_process_or_of_the_requester() {
    let a = Kid::sleep();
    let b = Kid::sleep();
    let fds = vec![
        pidfd::open(a.pid()).unwrap(),
        mem(b.pid(), false),
        maps(a.pid()),
    ];
    assert_eq!(code(prove(fds, &me(), Access::Read)), "mem_fd_mismatch");
    let own = OwnedFd::from(std::fs::File::open("/proc/self/mem").unwrap());
    let fds = vec![pidfd::open(a.pid()).unwrap(), own, maps(a.pid())];
    assert_eq!(code(prove(fds, &me(), Access::Read)), "mem_fd_is_requester");
    let own = OwnedFd::from(std::fs::File::open("/proc/self/mem").unwrap());
    let fds = vec![pidfd::open(me().pid).unwrap(), own, maps(me().pid)];
    assert_eq!(code(prove(fds, &me(), Access::Read)), "target_is_requester");
}

#[test]
fn checks_the_maps_fd_like_the_mem_fd() {
    let a = Kid::sleep();
    let b = Kid::sleep();
    let fds = vec![
        pidfd::open(a.pid()).unwrap(),
        mem(a.pid(), false),
        maps(b.pid()),
    ];
    assert_eq!(code(prove(fds, &me(), Access::Read)), "maps_fd_mismatch");
    let fds = vec![
        pidfd::open(a.pid()).unwrap(),
        mem(a.pid(), false),
        mem(a.pid(), false),
    ];
    assert_eq!(code(prove(fds, &me(), Access::Read)), "maps_fd_invalid");
    let null = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
    let fds = vec![pidfd::open(a.pid()).unwrap(), mem(a.pid(), false), null];
    assert_eq!(code(prove(fds, &me(), Access::Read)), "maps_fd_invalid");
}

#[test]
fn refuses_a_stale_pidfd() {
    let mut k = Kid::sleep();
    let fds = k.fds();
    k.0.kill().unwrap();
    k.0.wait().unwrap();
    assert_eq!(code(prove(fds, &me(), Access::Read)), "target_exited");
}

#[test]
fn refuses_modes_that_do_not_fit_the_access() {
    let k = Kid::sleep();
    assert_eq!(
        code(prove(k.fds(), &me(), Access::ReadWrite)),
        "mem_fd_not_writable"
    );
    let wo = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{}/mem", k.pid()))
        .unwrap();
    let fds = vec![
        pidfd::open(k.pid()).unwrap(),
        OwnedFd::from(wo),
        maps(k.pid()),
    ];
    assert_eq!(code(prove(fds, &me(), Access::Read)), "mem_fd_not_readable");
}

#[test]
fn probe_read_sees_exec_and_exit() {
    // sh waits for a line, then execs sleep: the old mem fd then reads end-of-file.
    let mut child = Command::new("sh")
        .args(["-c", "read x; exec sleep 30"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let fds = vec![pidfd::open(pid).unwrap(), mem(pid, false), maps(pid)];
    let p = prove(fds, &me(), Access::Read).unwrap();
    let stack = |pid: i32| {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        let line = maps
            .lines()
            .find(|l| l.ends_with("[stack]"))
            .unwrap()
            .to_string();
        u64::from_str_radix(line.split('-').next().unwrap(), 16).unwrap()
    };
    p.probe_read(stack(pid)).unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|e| e.to_string_lossy().contains("sleep"))
        .unwrap_or(false)
    {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let e = p.probe_read(stack(pid)).unwrap_err();
    assert_eq!(e.code(), "mem_unreadable", "{e}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(p.probe_read(0x1000).unwrap_err().code(), "target_exited");
}

#[test]
fn mem_paths() {
    assert_eq!(parse_mem_path("/proc/123/mem"), Some(123));
    for bad in [
        "/proc/self/mem",
        "/proc/0123/mem",
        "/proc/0/mem",
        "/proc/123/mem (deleted)",
        "/proc/123/task/123/mem",
        "/proc//mem",
        "/tmp/proc/123/mem",
        "/proc/99999999999/mem",
    ] {
        assert_eq!(parse_mem_path(bad), None, "{bad}");
    }
}
