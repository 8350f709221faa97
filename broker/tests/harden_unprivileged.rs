//! memgated started by an ordinary user: `--check-hardening` completes instead of failing
//! on the bounding set (which needs CAP_SETPCAP to change), and its verdict says plainly
//! that the bounding set was left as is.

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use support::*;

#[test]
fn check_hardening_as_an_unprivileged_user_reports_the_bounding_set_honestly() {
    let pki = Pki::generate();
    let mut files =
        Broker::spawn(&pki, &PolicySpec::new().toml(&pki), "", &["--check-config"]).expect("files");
    let _ = files.child.wait();
    let uid = test_uid(41);
    let out = Command::new(memgated_bin())
        .arg("--config")
        .arg(&files.config_path)
        .arg("--check-hardening")
        .uid(uid)
        .gid(uid)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("Operation not permitted"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("bounding set left as is: no CAP_SETPCAP; nothing to keep"),
        "{stdout}"
    );
    // Honest verdict: the bounding set is not what the configuration asked for.
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(!stdout.contains("everything the configuration asks for is in force"));
    for line in stdout.lines().filter(|l| l.starts_with("shortfall:")) {
        assert!(line.contains("bounding set"), "unexpected {line}\n{stdout}");
    }
    assert!(
        stdout.contains(&format!("uid (r/e/s):      [{uid}, {uid}, {uid}]")),
        "{stdout}"
    );
}
