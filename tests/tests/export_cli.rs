//! `memgate export` against a real memgated, as a fresh user runs it: the default lease is
//! the token's own `lease` claim (an explicit longer one is still denied), a token file is
//! accepted as the plain argument, and denials name their code once.

use memgate_tests::{bin, demo_target, Lab, Proc};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn target() -> Proc {
    demo_target(1048576, 3).0
}

fn export(lab: &Lab, pid: u32, token_arg: &str, extra: &[&str]) -> Output {
    let pid = pid.to_string();
    let mut args = vec!["export", "--pid", &pid, "--token", token_arg];
    args.extend_from_slice(extra);
    lab.memgate(&args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn plain(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn default_lease_is_the_tokens_and_a_longer_one_is_denied() {
    let lab = Lab::start("export-lease");
    let t = target();
    let pid = t.pid();
    // A 60 s token, no --lease, the token given as a plain file name.
    let tok = lab.token_file_with_lease(pid, 60);
    let o = export(&lab, pid, plain(&tok), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let grant: serde_json::Value = serde_json::from_slice(&o.stdout).expect("grant json");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let left = grant["expires_unix"].as_u64().expect("expires") as i64 - now as i64;
    assert!((50..=61).contains(&left), "lease left {left}");
    // Replaying the same token: the denial says token_replayed once, on one line.
    let o = export(&lab, pid, plain(&tok), &[]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("token_replayed").count(), 1, "{err}");
    // An explicit lease longer than the token's is denied, not shortened.
    let tok = lab.token_file_with_lease(pid, 60);
    let o = export(&lab, pid, &format!("@{}", plain(&tok)), &["--lease", "120"]);
    let err = stderr(&o);
    assert!(
        !o.status.success(),
        "a 120 s lease on a 60 s token was granted"
    );
    assert!(err.contains("lease_exceeds_limit"), "{err}");
    assert_eq!(err.matches("lease_exceeds_limit").count(), 1, "{err}");
    drop(t);
}

/// `fault-serve` with a peer key that is not the grant's, and with the right key after the
/// grant was revoked: one line, each cause said once, naming both possibilities.
#[test]
fn fault_serve_refusals_are_one_clear_line() {
    let lab = Lab::start("export-peer");
    let t = target();
    let pid = t.pid();
    let tok = lab.token_file(pid);
    let grant = lab.dir.path().join("grant.json");
    let o = export(&lab, pid, plain(&tok), &["--out", plain(&grant)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let other = lab.dir.path().join("other.key");
    let k = memgate_policy::keys::SecretKey::generate().expect("key");
    std::fs::write(&other, k.to_paserk()).expect("write key");
    let serve = |key: &Path| {
        Command::new("timeout")
            .args(["-s", "KILL", "30"])
            .arg(bin("memgate"))
            .args(["fault-serve", "--mirror", "--grant"])
            .arg(&grant)
            .arg("--peer-key")
            .arg(key)
            .stdin(Stdio::null())
            .output()
            .expect("fault-serve")
    };
    for (what, key) in [
        ("wrong key", other.clone()),
        ("revoked", lab.peer_file.clone()),
    ] {
        if what == "revoked" {
            let id: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&grant).expect("grant"))
                    .expect("json");
            let o = Command::new(bin("memgate"))
                .args(["revoke", id["id"].as_str().expect("id")])
                .arg("--socket")
                .arg(&lab.socket)
                .output()
                .expect("revoke");
            assert!(o.status.success(), "{}", stderr(&o));
        }
        let o = serve(&key);
        let err = stderr(&o);
        assert!(!o.status.success(), "{what}: served anyway");
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(
            err.contains("revoked or expired, or this peer key is not the grant's"),
            "{what}: {err}"
        );
        let parts: Vec<&str> = err.trim().split(": ").collect();
        for (i, p) in parts.iter().enumerate() {
            assert!(
                !parts[i + 1..].contains(p),
                "{what}: repeated {p:?} in {err}"
            );
        }
    }
    drop(t);
}
