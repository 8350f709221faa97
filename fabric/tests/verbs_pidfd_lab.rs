//! The verbs provider registering another process's memory in place (tier-3 kernel lab:
//! the mlx5-patch/ kernel and the libverbs-patch/ rdma-core, soft-RoCE in a QEMU guest).
//!
//! The ignored test runs in the guest as `verbs_pidfd_lab --ignored --exact lab_pidfd
//! --nocapture` with `MEMGATE_LAB_LISTEN=rdma:IP:0`, printing one `@@CHK name PASS|FAIL`
//! line per check: a real child process's executable text, registered through its pidfd
//! by [`VerbsResponder::bind_pidfd`], read back over RDMA byte for byte; and the kernel's
//! refusals surfacing as clear errors (no ptrace right, no CAP_IPC_LOCK, target gone).
//! On a host without the patched libibverbs only the "lacks pidfd registration" path runs.
#![cfg(feature = "verbs")]

use memgate_fabric::conformance::TargetProcess;
use memgate_fabric::verbs::{pidfd_registration_available, VerbsResponder};
use memgate_fabric::{
    event_channel, public_key_from_seed, Access, Completion, Connection, Endpoint, FabricError,
    KeySpec, ProcMemSource, Region, Responder, Target, WcStatus,
};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const SEED: [u8; 32] = [7; 32];
const GRANT: [u8; 16] = [3; 16];
/// READ size: one 4 KiB page per request, as the fault server asks.
const CHUNK: u64 = 4096;

#[test]
fn bind_pidfd_without_the_patched_library_says_what_is_missing() {
    if pidfd_registration_available() {
        eprintln!("this libibverbs has ibv_reg_mr_pidfd: the refusal cannot be shown here");
        return;
    }
    let (sink, _rx) = event_channel();
    let ep = Endpoint::parse("rdma:127.0.0.1:0").expect("endpoint");
    match VerbsResponder::bind_pidfd(&ep, sink) {
        Err(FabricError::Verbs(m)) => assert!(m.contains("ibv_reg_mr_pidfd"), "{m}"),
        Err(e) => panic!("expected the missing-symbol error, got {e}"),
        Ok(_) => panic!("a pidfd responder without ibv_reg_mr_pidfd"),
    }
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn spec(addr: u64, len: u64, access: Access) -> Result<KeySpec, String> {
    Ok(KeySpec {
        addr,
        len,
        access,
        peer: public_key_from_seed(&SEED).map_err(|e| e.to_string())?,
        grant: GRANT,
        expires: SystemTime::now() + Duration::from_secs(300),
    })
}

/// Capability numbers (linux/capability.h).
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_PTRACE: u32 = 19;

/// Runs `f` on a new thread whose effective set lacks `cap` (capabilities are per thread:
/// the rest of the process keeps it).
fn without_cap<T: Send>(cap: u32, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            #[repr(C)]
            struct Header {
                version: u32,
                pid: i32,
            }
            #[repr(C)]
            #[derive(Clone, Copy, Default)]
            struct Data {
                effective: u32,
                permitted: u32,
                inheritable: u32,
            }
            let mut h = Header {
                version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                pid: 0,
            };
            let mut d = [Data::default(); 2];
            // SAFETY: capget fills two Data words for version 3 from the calling thread.
            if unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) } != 0 {
                return Err(format!("capget: {}", std::io::Error::last_os_error()));
            }
            d[(cap / 32) as usize].effective &= !(1 << (cap % 32));
            // SAFETY: as above; capset changes only the calling thread's credentials.
            if unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) } != 0 {
                return Err(format!("capset: {}", std::io::Error::last_os_error()));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| "the capability-less thread panicked".to_string())?
    })
}

/// Reads `want.len()` bytes at `addr` in 4 KiB READs and compares them.
fn read_all(c: &mut Connection, addr: u64, want: &[u8], rkey: u32) -> Result<(), String> {
    let mut out: Vec<Completion> = Vec::new();
    let mut off = 0u64;
    while off < want.len() as u64 {
        let n = CHUNK.min(want.len() as u64 - off);
        c.post_read(off, addr + off, n as u32, rkey)
            .map_err(|e| format!("post_read at {off:#x}: {e}"))?;
        out.clear();
        while out.is_empty() {
            c.wait_completions(&mut out, Some(Duration::from_secs(20)))
                .map_err(|e| format!("completion at {off:#x}: {e}"))?;
        }
        let done = &out[0];
        if done.status != WcStatus::Success {
            return Err(format!("READ at {:#x}: {:?}", addr + off, done.status));
        }
        let range = off as usize..(off + n) as usize;
        if done.data.as_ref() != &want[range] {
            return Err(format!("bytes at {:#x} differ from the file", addr + off));
        }
        off += n;
    }
    Ok(())
}

type Checks = Vec<(&'static str, Result<String, String>)>;

fn expect_refused(
    what: &str,
    r: Result<u32, FabricError>,
    errno_text: &str,
) -> Result<String, String> {
    match r {
        Ok(k) => Err(format!("{what}: key {k:#x} created")),
        Err(e) if e.to_string().contains(errno_text) => Ok(e.to_string()),
        Err(e) => Err(format!("{what}: refused, but not with {errno_text}: {e}")),
    }
}

fn run_checks(listen: &Endpoint, checks: &mut Checks) -> Result<(), String> {
    let (sink, _events) = event_channel();
    let resp = VerbsResponder::bind_pidfd(listen, sink).map_err(|e| format!("bind_pidfd: {e}"))?;
    checks.push(("pidfd_responder", Ok(resp.endpoint())));
    let ep = Endpoint::parse(&resp.endpoint()).map_err(|e| e.to_string())?;

    // A real target: a child `sleep`, its executable text compared with the file.
    let target = TargetProcess::spawn().map_err(|e| format!("target: {e}"))?;
    let text = target.text_mapping().map_err(|e| format!("text: {e}"))?;
    let want = text.file_bytes().map_err(|e| format!("file: {e}"))?;
    let pidfd = pidfd_open(target.pid()).map_err(|e| format!("pidfd_open: {e}"))?;
    let source = Arc::new(ProcMemSource::new(target.mem().map_err(|e| e.to_string())?));
    let t = Target {
        pidfd: pidfd.as_fd(),
        source,
    };
    let region: Region = resp
        .register_target(&t, text.addr, text.len)
        .map_err(|e| format!("register_target: {e}"))?;
    checks.push((
        "pidfd_region_read_only",
        if region.access() == Access::REMOTE_READ {
            Ok(format!("{} bytes at {:#x}", text.len, text.addr))
        } else {
            Err(format!("region access {:?}", region.access()))
        },
    ));
    let rkey = resp
        .create_key(&region, spec(text.addr, text.len, Access::REMOTE_READ)?)
        .map_err(|e| format!("create_key through ibv_reg_mr_pidfd: {e}"))?;
    let mut conn = Connection::connect(&ep, GRANT, SEED).map_err(|e| format!("connect: {e}"))?;
    let t0 = std::time::Instant::now();
    checks.push((
        "pidfd_read_byte_exact",
        read_all(&mut conn, text.addr, &want, rkey).map(|()| {
            format!(
                "{} bytes of pid {}'s text in {:.2}s",
                want.len(),
                target.pid(),
                t0.elapsed().as_secs_f64()
            )
        }),
    ));
    checks.push((
        "pidfd_write_key_refused",
        match resp.create_key(&region, spec(text.addr, 4096, Access::REMOTE_WRITE)?) {
            Err(FabricError::AccessNotAllowed { .. }) => Ok("access not allowed".into()),
            Err(e) => Err(format!("refused for another reason: {e}")),
            Ok(k) => Err(format!("write key {k:#x} created")),
        },
    ));
    // The kernel's checks, surfacing through the provider as errors that name them.
    let s = spec(text.addr, 4096, Access::REMOTE_READ)?;
    checks.push((
        "pidfd_no_ipc_lock_refused",
        without_cap(CAP_IPC_LOCK, || resp.create_key(&region, s.clone()))
            .and_then(|r| expect_refused("without CAP_IPC_LOCK", r, "not permitted")),
    ));
    // A target of another user: without CAP_SYS_PTRACE the kernel's ptrace check fails.
    let other = std::process::Command::new("sleep")
        .arg("600")
        .uid(65534)
        .gid(65534)
        .spawn()
        .map_err(|e| format!("spawning a sleep as uid 65534: {e}"))?;
    let other = Reaped(other);
    std::thread::sleep(Duration::from_millis(300));
    let opid = pidfd_open(other.0.id()).map_err(|e| format!("pidfd_open: {e}"))?;
    let ot = Target {
        pidfd: opid.as_fd(),
        source: t.source.clone(),
    };
    let oregion = resp
        .register_target(&ot, text.addr, 4096)
        .map_err(|e| format!("register_target (other user): {e}"))?;
    checks.push((
        "pidfd_no_ptrace_right_refused",
        without_cap(CAP_SYS_PTRACE, || resp.create_key(&oregion, s.clone())).and_then(|r| {
            expect_refused(
                "uid 65534's process without CAP_SYS_PTRACE",
                r,
                "not permitted",
            )
        }),
    ));
    drop(other);
    // A target that has exited: its pidfd is stale.
    let tpid = target.pid();
    drop(target);
    checks.push((
        "pidfd_stale_target_refused",
        expect_refused(
            &format!("pid {tpid} after its exit"),
            resp.create_key(&region, s),
            "No such process",
        ),
    ));
    drop(conn);
    resp.shutdown();
    Ok(())
}

use std::os::unix::process::CommandExt;

/// Kills and reaps a child on drop.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every check against a real device with the patched stack. Prints `@@CHK` lines.
#[test]
#[ignore = "needs the tier-3 kernel lab: run by tests/lab/run.sh tier3 inside the guest"]
fn lab_pidfd() {
    let listen = std::env::var("MEMGATE_LAB_LISTEN").unwrap_or_else(|_| "rdma:192.0.2.1:0".into());
    let listen = Endpoint::parse(&listen).expect("MEMGATE_LAB_LISTEN");
    let mut checks: Checks = Vec::new();
    if let Err(e) = run_checks(&listen, &mut checks) {
        checks.push(("pidfd_setup", Err(e)));
    }
    let mut failed = 0;
    for (name, r) in &checks {
        match r {
            Ok(d) => println!("@@CHK {name} PASS {}", d.replace('\n', " ")),
            Err(e) => {
                failed += 1;
                println!("@@CHK {name} FAIL {}", e.replace('\n', " "));
            }
        }
    }
    assert_eq!(failed, 0, "{failed} pidfd checks failed");
}
