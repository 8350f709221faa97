//! `memgate demo` as a fresh user meets it: impossible sizes and missing pids are refused
//! with one line before anything starts, and killing the demo mid-run (SIGTERM, SIGINT or
//! SIGKILL) leaves no child process and (for the catchable signals) no temporary directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MEMGATE: &str = env!("CARGO_BIN_EXE_memgate");

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("memgate-dl-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn one_line_error(args: &[&str], needle: &str) {
    let t = Instant::now();
    let o = Command::new("timeout")
        .args(["-s", "KILL", "30", MEMGATE])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(t.elapsed() < Duration::from_secs(10), "{args:?} was slow");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
    assert!(err.contains(needle), "{args:?}: {err}");
}

#[test]
fn impossible_sizes_and_missing_pids_are_one_line_errors() {
    one_line_error(&["demo", "--size", "100T"], "needs about");
    one_line_error(&["demo", "--size", "0"], "--size must be at least 4K");
    one_line_error(
        &["demo", "--target-pid", "999999999"],
        "process 999999999: no such process",
    );
}

/// Every child of `pid` (all its threads' children).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; only count processes that are not zombies.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn demo_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Starts the demo, waits until the broker and the frozen source workload both run, sends
/// `sig`, and checks what is left.
fn kill_mid_run(sig: i32, tag: &str) {
    let tmp = tmpdir(tag);
    let mut demo = Command::new(MEMGATE)
        .args(["demo", "--size", "64M", "--pattern", "seq"])
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = demo.id();
    let mut err = BufReader::new(demo.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut kids = Vec::new();
    let mut line = String::new();
    // "starting memgated" comes after the source workload started; the broker follows.
    while Instant::now() < deadline {
        line.clear();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if line.contains("grant") || line.contains("migrating") {
            kids = children(pid);
            break;
        }
    }
    assert!(
        kids.len() >= 2,
        "expected the source workload and memgated as children, got {kids:?} ({line})"
    );
    assert!(!demo_dirs(&tmp).is_empty(), "the demo made no temp dir");
    // SAFETY: signalling our own child, which has not been reaped yet.
    unsafe { libc::kill(pid as i32, sig) };
    let st = demo.wait().unwrap();
    assert!(!st.success(), "{st:?}");
    let gone = Instant::now() + Duration::from_secs(10);
    while kids.iter().any(|&k| alive(k)) && Instant::now() < gone {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<u32> = kids.iter().copied().filter(|&k| alive(k)).collect();
    for &k in &left {
        // SAFETY: clean up after a failed assertion; the pid was our grandchild.
        unsafe { libc::kill(k as i32, libc::SIGKILL) };
    }
    assert!(left.is_empty(), "children survived {sig}: {left:?}");
    if sig != libc::SIGKILL {
        assert!(demo_dirs(&tmp).is_empty(), "{:?}", demo_dirs(&tmp));
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn sigterm_mid_run_leaves_nothing() {
    kill_mid_run(libc::SIGTERM, "term");
}

#[test]
fn sigint_mid_run_leaves_nothing() {
    kill_mid_run(libc::SIGINT, "int");
}

#[test]
fn sigkill_mid_run_leaves_no_children() {
    kill_mid_run(libc::SIGKILL, "kill");
}

/// The demo's words match what it does: the touch order is spelled as on the command line,
/// an idle run shows no fault latency rather than zeros, and a `--target-pid` run does not
/// claim to start a workload or use a pattern.
#[test]
fn demo_output_names_what_it_did() {
    let tmp = tmpdir("words");
    let o = Command::new("timeout")
        .args(["-s", "KILL", "50", MEMGATE])
        .args(["demo", "--size", "8M", "--pattern", "idle"])
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.contains("in idle order"), "{err}");
    assert!(!err.contains("Idle"), "{err}");
    let latency = out
        .lines()
        .find(|l| l.contains("fault latency"))
        .unwrap_or_default();
    assert!(latency.contains("n/a"), "{out}");

    // A real (stopped) program migrated with --target-pid.
    let mut t = Command::new(MEMGATE)
        .args(["__demo-target", "--size", "1048576", "--seed", "9"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(t.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let o = Command::new("timeout")
        .args(["-s", "KILL", "50", MEMGATE])
        .args(["demo", "--json", "--target-pid", &t.id().to_string()])
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("starting the source workload"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v.get("pattern").is_none(), "{v}");
    let o = Command::new("timeout")
        .args(["-s", "KILL", "50", MEMGATE])
        .args(["demo", "--target-pid", &t.id().to_string()])
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = t.kill();
    let _ = t.wait();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(err.contains("migrating into a mirror"), "{err}");
    assert!(!err.contains("starting the source workload"), "{err}");
    assert!(!out.contains("pattern"), "{out}");
    let _ = std::fs::remove_dir_all(&tmp);
}
