//! `memgate demo` end to end (hardened memgated as a child, real processes): a small run
//! must verify every page with zero mismatches and end with the grant committed.

use memgate_tests::bin;
use std::process::{Command, Output};

/// Runs `memgate demo` with `args`; returns its output and its stderr as text.
fn demo(args: &[&str]) -> (Output, String) {
    let out = Command::new(bin("memgate"))
        .arg("demo")
        .args(args)
        .output()
        .expect("run demo");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, err)
}

#[test]
fn demo_migrates_every_byte_and_commits() {
    for pattern in ["random", "seq"] {
        let (out, err) = demo(&["--size", "24M", "--pattern", pattern, "--json"]);
        assert!(out.status.success(), "demo failed: {err}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("demo --json");
        let total = v["pages_total"].as_u64().expect("pages_total");
        assert!(total >= (24 << 20) / 4096 - 512, "{v}");
        assert_eq!(v["pages_verified"], total, "{v}");
        assert_eq!(v["mismatches"], 0, "{v}");
        assert_eq!(v["zero_pages"], 0, "{v}");
        assert_eq!(v["committed"], true, "{v}");
        assert_eq!(v["broker_state"], "committed", "{v}");
        assert!(
            v["endpoint"]
                .as_str()
                .is_some_and(|e| e.starts_with("tcp:127.0.0.1:")),
            "{v}"
        );
        for k in [
            "pages_on_demand",
            "fault_p50_us",
            "fault_p99_us",
            "all_present_s",
            "admission_ms",
        ] {
            assert!(v[k].is_number(), "{k} missing: {v}");
        }
    }
}

/// `--listen rdma:` asks for the verbs provider. A default build of memgated has none and
/// must say how to get it, before serving anything; the demo must fail, not fall back.
#[test]
fn demo_over_rdma_without_the_verbs_build_says_how_to_get_it() {
    let (out, err) = demo(&["--size", "4M", "--listen", "rdma:127.0.0.1:0", "--json"]);
    assert!(!out.status.success(), "demo over rdma succeeded: {err}");
    assert!(out.stdout.is_empty(), "a report was printed");
    assert!(
        err.contains("rdma: endpoints need memgated built with the verbs feature"),
        "{err}"
    );
    assert!(err.contains("memgated exited during start-up"), "{err}");
}

/// The failure drill: the grant is revoked mid-migration from a second broker connection.
/// The demo must fail closed: the missing pages poisoned (or, on a kernel without
/// UFFDIO_POISON, the destination killed), the grant not committed, no report printed.
#[test]
fn demo_revoked_mid_migration_fails_closed() {
    let (out, err) = demo(&["--size", "16M", "--revoke-after-ms", "300", "--json"]);
    assert!(!out.status.success(), "the drill's demo succeeded: {err}");
    assert!(out.stdout.is_empty(), "a report was printed: {err}");
    assert!(err.contains("remote access error"), "{err}");
    assert!(
        err.contains("missing pages poisoned")
            || err.contains("exited while its missing pages were being poisoned")
            || err.contains("killed (SIGKILL)"),
        "the destination was neither poisoned nor killed: {err}"
    );
    assert!(err.contains("grant not committed"), "{err}");
    // A destination that died of SIGBUS while being poisoned is not a failure to poison.
    assert!(!err.contains("No such process"), "{err}");
    assert!(!err.contains("stop the destination now"), "{err}");
}

/// A drill whose revocation comes after the migration must not pass as a success.
#[test]
fn demo_drill_that_comes_too_late_says_so() {
    let (out, err) = demo(&["--size", "64K", "--revoke-after-ms", "60000", "--json"]);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("finished (and was committed) before the revocation"),
        "{err}"
    );
}
