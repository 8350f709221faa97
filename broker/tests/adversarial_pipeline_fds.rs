//! Adversarial tests of the admission pipeline: the fds (ptrace proof), messages and fd counts. Run against real
//! processes: a target running as another uid, requesters (separate processes, setuid)
//! that open their own pidfd and `/proc/<pid>/mem` and `/proc/<pid>/maps` fds — so the
//! kernel's ptrace check applies to them — and send them over a real `SOCK_SEQPACKET`
//! connection, whose `SO_PEERCRED` the pipeline reads. Each case asserts the specific
//! denial code and that nothing was admitted (no `Admitted` value, the token id not
//! consumed).

mod common;

use common::pipeline::*;
use common::*;
use memgate_proto::{Access, RegionSelection};

/// A requester as `uid` tries to open its fds about `pid` and send a stack-page request;
/// the kernel must refuse the open with EACCES, so nothing reaches the listener.
#[track_caller]
fn open_refused(w: &World, uid: u32, pid: i32, what: &str) {
    let req = w.stack_req(uid);
    let mut r = Requester::start(
        uid,
        &w.listener.path,
        pid,
        FDS,
        &req.encode().unwrap(),
        false,
    );
    match w.listener.receive(&mut r) {
        Err(Report::OpenError(errno, _)) => assert_eq!(errno, libc::EACCES),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("{what}"),
    }
}

#[test]
fn requester_without_ptrace_rights_cannot_open_mem() {
    let w = World::new();
    open_refused(
        &w,
        OTHER_UID,
        w.target.pid,
        "a uid without ptrace rights opened the target's mem",
    );
}

#[test]
fn non_dumpable_target_refuses_even_its_own_uid() {
    let w = World::new();
    let locked = Target::spawn_with(TARGET_UID, &["--undumpable"]);
    open_refused(
        &w,
        TARGET_UID,
        locked.pid,
        "the mem of a non-dumpable process was opened by its uid",
    );
}

#[test]
fn requester_without_ptrace_rights_sending_another_processes_mem() {
    let mut w = World::new();
    // A process the requester may ptrace (its own uid), whose mem it sends instead.
    let own = Target::spawn(OTHER_UID);
    let req = w.stack_req(OTHER_UID);
    let d = w.denied(
        OTHER_UID,
        &format!("pidfd,mem:{0},maps:{0}", own.pid),
        &req,
        "mem_fd_mismatch",
    );
    assert!(d.message.contains(&own.pid.to_string()), "{d}");
}

#[test]
fn mem_fd_of_a_different_process_than_the_pidfd() {
    let mut w = World::new();
    let second = Target::spawn(TARGET_UID);
    w.denied_fds(&format!("pidfd,mem:{},maps", second.pid), "mem_fd_mismatch");
}

#[test]
fn proc_self_mem_of_the_requester() {
    let mut w = World::new();
    w.denied_fds("pidfd,selfmem,maps", "mem_fd_is_requester");
}

#[test]
fn requester_naming_itself_as_target() {
    let mut w = World::new();
    w.denied_fds("selfpidfd,selfmem,maps", "target_is_requester");
}

#[test]
fn stale_pidfd_after_target_exit() {
    let mut w = World::new();
    let req = w.stack_req(TARGET_UID);
    let mut r = w.waiting(TARGET_UID, w.target.pid, &req);
    w.target.kill();
    r.go();
    w.serve_denied(&mut r, "target_exited");
}

#[test]
fn mem_fd_from_before_an_exec_is_refused() {
    // The target execs after the requester opened its mem: the fd still names the old
    // address space, which reads as end-of-file. Same pid, same pidfd, other memory.
    let mut w = World::new();
    let mut target = Target::spawn_with(TARGET_UID, &["--exec-on-line"]);
    let pid = target.pid;
    let mut c = w.claims(TARGET_UID);
    c.target.pid = None;
    let req = read_req(mint(&w.keys, &c), RegionSelection::All);
    let mut r = w.waiting(TARGET_UID, pid, &req);
    target.poke();
    // Wait for the exec to happen.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| !p.to_string_lossy().contains("sleep"))
        .unwrap_or(true)
    {
        assert!(std::time::Instant::now() < deadline, "target never exec'd");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    r.go();
    w.serve_denied(&mut r, "mem_unreadable");
}

#[test]
fn read_write_with_a_read_only_mem_fd() {
    let mut w = World::with(PolicySpec {
        access: "read-write",
        ..PolicySpec::default()
    });
    let mut c = w.claims(TARGET_UID);
    c.access = memgate_policy::Access::ReadWrite;
    let req = export(mint(&w.keys, &c), w.stack_page(), Access::ReadWrite);
    w.denied(TARGET_UID, FDS, &req, "mem_fd_not_writable");
}

#[test]
fn mem_fd_opened_write_only() {
    let mut w = World::new();
    w.denied_fds("pidfd,memwo,maps", "mem_fd_not_readable");
}

#[test]
fn wrong_fd_count() {
    let mut w = World::new();
    let req = w.stack_req(TARGET_UID);
    w.denied(TARGET_UID, "pidfd", &req, "fd_count");
    w.denied(TARGET_UID, "pidfd,mem", &req, "fd_count");
    w.denied(TARGET_UID, "none", &req, "fd_count");
    w.denied(TARGET_UID, "pidfd,mem,maps,devnull", &req, "fd_count");
}

#[test]
fn wrong_fd_kind() {
    let mut w = World::new();
    let req = w.stack_req(TARGET_UID);
    w.denied(TARGET_UID, "devnull,mem,maps", &req, "pidfd_invalid");
    w.denied(TARGET_UID, "pidfd,devnull,maps", &req, "mem_fd_invalid");
    w.denied(TARGET_UID, "mem,pidfd,maps", &req, "pidfd_invalid");
}

#[test]
fn malformed_and_oversized_messages() {
    let mut w = World::new();
    let pid = w.target.pid;
    let d = w
        .run_raw(TARGET_UID, pid, FDS, b"not a memgate frame at all")
        .unwrap_err();
    assert_eq!(d.code, "bad_magic");
    let mut frame = w.stack_req(TARGET_UID).encode().unwrap();
    frame.truncate(frame.len() - 3);
    let d = w.run_raw(TARGET_UID, pid, FDS, &frame).unwrap_err();
    assert_eq!(d.code, "length_mismatch");
    let mut big = memgate_proto::MAGIC.to_vec();
    big.resize(memgate_proto::MAX_MESSAGE + 4096, b' ');
    let d = w.run_raw(TARGET_UID, pid, FDS, &big).unwrap_err();
    assert_eq!(d.code, "frame_too_large");
    assert!(w.state.replay.is_empty());
}

#[test]
fn maps_fd_is_checked_like_the_mem_fd() {
    let mut w = World::new();
    let second = Target::spawn(TARGET_UID);
    let ok = w.stack_req(TARGET_UID);
    w.run(TARGET_UID, "pidfd,mem,maps", &ok)
        .expect("maps fd accepted");
    let req = w.stack_req(TARGET_UID);
    let other = format!("pidfd,mem,maps:{}", second.pid);
    w.denied(TARGET_UID, &other, &req, "maps_fd_mismatch");
    w.denied(TARGET_UID, "pidfd,mem,mem", &req, "maps_fd_invalid");
    w.denied(TARGET_UID, "pidfd,mem,devnull", &req, "maps_fd_invalid");
    w.denied(TARGET_UID, "pidfd,mem,maps,devnull", &req, "fd_count");
}
