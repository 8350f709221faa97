//! Children of `memgate demo` (and `bench`) die with it. Each child asks the kernel for
//! SIGKILL when its parent goes away (`PR_SET_PDEATHSIG`, set between fork and exec), which
//! also covers a frozen (SIGSTOPped) source workload. On SIGTERM, SIGINT or SIGHUP a
//! dedicated thread kills and reaps every registered child, removes the registered
//! temporary directory and exits with 128 + the signal number, as a shell would report.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// Live children (pids) and the temporary directory to remove on a fatal signal.
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());
static TEMP_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

const SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the set we own; a zeroed sigset_t is a valid
    // starting value that sigemptyset then initialises.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Makes the child `cmd` will start die when this process dies, with the fatal signals
/// this process blocks unblocked again.
pub fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    let set = signal_set();
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (prctl, pthread_sigmask, getppid, _exit) on values copied in beforehand.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
}

/// Records a child to kill on a fatal signal.
pub fn register(pid: u32) {
    if let Ok(mut c) = CHILDREN.lock() {
        c.push(pid as i32);
    }
}

/// Forgets a child (it was reaped normally).
pub fn unregister(pid: u32) {
    if let Ok(mut c) = CHILDREN.lock() {
        c.retain(|&p| p != pid as i32);
    }
}

/// Records the temporary directory to remove on a fatal signal.
pub fn set_temp_dir(path: Option<PathBuf>) {
    if let Ok(mut t) = TEMP_DIR.lock() {
        *t = path;
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (call it before starting other
/// threads, which inherit the mask) and starts the thread that cleans up when one arrives.
pub fn install() -> anyhow::Result<()> {
    let set = signal_set();
    // SAFETY: changes this thread's signal mask with a valid, initialised set.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        anyhow::bail!(
            "blocking termination signals: {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }
    std::thread::Builder::new()
        .name("memgate-reaper".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: sigwait reads the initialised set and writes one c_int we own.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc != 0 {
                return;
            }
            cleanup();
            std::process::exit(128 + sig);
        })?;
    Ok(())
}

/// Kills (SIGKILL works on a stopped process too) and reaps every registered child, then
/// removes the temporary directory.
fn cleanup() {
    let pids = CHILDREN.lock().map(|c| c.clone()).unwrap_or_default();
    for pid in pids {
        // SAFETY: plain syscalls on pids this process started and has not reaped yet
        // (unregister runs only after a child was waited for).
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    if let Some(dir) = TEMP_DIR.lock().ok().and_then(|t| t.clone()) {
        let _ = std::fs::remove_dir_all(dir);
    }
}
