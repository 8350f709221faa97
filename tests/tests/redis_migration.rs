//! A real third-party program: redis-server filled with ~200 MB (`DEBUG POPULATE`), frozen
//! with SIGSTOP, every exportable mapping exported through memgated and pulled into a
//! destination mirror by the fault server, then compared byte for byte with the source read
//! independently through /proc/PID/mem (`memgate demo --target-pid`).

use memgate_tests::{bin, eventually, Proc, Tmp, SIGSTOP};
use std::process::{Command, Stdio};

#[test]
fn redis_memory_is_migrated_byte_for_byte() {
    let dir = Tmp::new("redis");
    let sock = dir.path().join("redis.sock");
    let redis = Proc::new(
        Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "yes", "--daemonize", "no"])
            .arg("--unixsocket")
            .arg(&sock)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/deps.sh installs it)"),
    );
    assert!(eventually(20, || sock.exists()), "redis did not start");
    let cli = |args: &[&str]| {
        Command::new("redis-cli")
            .arg("-s")
            .arg(&sock)
            .args(args)
            .output()
            .expect("redis-cli")
    };
    assert!(eventually(10, || cli(&["PING"])
        .stdout
        .starts_with(b"PONG")));
    let pop = cli(&["DEBUG", "POPULATE", "200000", "key", "1000"]);
    assert!(
        String::from_utf8_lossy(&pop.stdout).contains("OK"),
        "{pop:?}"
    );
    let info = String::from_utf8_lossy(&cli(&["INFO", "memory"]).stdout).to_string();
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(used > 200_000_000, "redis holds only {used} bytes");
    redis.signal(SIGSTOP);
    let out = Command::new(bin("memgate"))
        .args(["demo", "--json", "--target-pid", &redis.pid().to_string()])
        .output()
        .expect("memgate demo");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let total = v["pages_total"].as_u64().unwrap_or(0);
    assert!(
        total * 4096 >= used,
        "exported {total} pages for {used} bytes: {v}"
    );
    assert_eq!(v["pages_verified"], total, "{v}");
    assert_eq!(v["mismatches"], 0, "{v}");
    assert_eq!(v["broker_state"], "committed", "{v}");
}
