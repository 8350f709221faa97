//! The conformance suite against the soft provider, over TCP and over Unix sockets:
//! one test per case and transport, so a failure names its case.

use memgate_fabric::conformance::{cases, run_all, Provider, SoftTcp, SoftUnix};

fn run(p: &dyn Provider, name: &str) {
    let res = run_all(p, Some(name));
    let mine: Vec<_> = res.into_iter().filter(|(n, _)| *n == name).collect();
    assert_eq!(mine.len(), 1, "no conformance case named {name}");
    if let Err(e) = &mine[0].1 {
        panic!("{} / {name}: {e}", p.name());
    }
}

fn unix() -> (tempfile::TempDir, SoftUnix) {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = SoftUnix {
        dir: dir.path().to_path_buf(),
    };
    (dir, p)
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        const NAMES: &[&str] = &[$(stringify!($case)),*];
        mod tcp {
            $(#[test] fn $case() { super::run(&super::SoftTcp, stringify!($case)); })*
        }
        mod unix {
            $(#[test] fn $case() { let (_d, p) = super::unix(); super::run(&p, stringify!($case)); })*
        }
    };
}

suite!(
    wrong_rkey,
    out_of_range,
    wrong_access,
    expired,
    revoked_mid_stream,
    wrong_peer_key,
    unauthenticated_connection,
    error_state_then_flushed,
    target_exit_during_reads,
    large_reads,
    many_concurrent_reads,
    byte_exact_data,
    commit_delivered_as_event,
);

#[test]
fn every_case_has_a_test() {
    let all: Vec<&str> = cases().iter().map(|c| c.name).collect();
    assert_eq!(all, NAMES, "the case list and this file's tests differ");
}

#[test]
fn soft_is_held_to_the_strict_expectations() {
    // The soft provider checks every request itself: it names the refused rkey, reports a
    // vanished target as RemoteOperationError on a live key, and gets no extra time.
    let (_d, u) = unix();
    for p in [&SoftTcp as &dyn Provider, &u] {
        assert!(p.attributes_access_errors(), "{}", p.name());
        assert!(!p.target_exit_revokes_keys(), "{}", p.name());
        assert_eq!(p.time_scale(), 1, "{}", p.name());
    }
}

/// The soft provider claiming the verbs provider's differences: the cases must notice
/// that it does not behave that way, so each capability flag is checked, not skipped.
struct ClaimsVerbsLimits;

impl Provider for ClaimsVerbsLimits {
    fn name(&self) -> String {
        "soft/tcp claiming verbs limits".into()
    }
    fn responder(
        &self,
        events: memgate_fabric::EventSink,
    ) -> Result<Box<dyn memgate_fabric::Responder>, memgate_fabric::FabricError> {
        SoftTcp.responder(events)
    }
    fn attributes_access_errors(&self) -> bool {
        false
    }
    fn target_exit_revokes_keys(&self) -> bool {
        true
    }
}

#[test]
fn capability_flags_are_checked_not_skipped() {
    // Soft names the refused rkey where the claim says 0, and answers
    // RemoteOperationError where the claim says RemoteAccessError.
    for (name, why) in [
        ("wrong_rkey", "expected grant"),
        ("target_exit_during_reads", "RemoteOperationError"),
    ] {
        let res = run_all(&ClaimsVerbsLimits, Some(name));
        assert_eq!(res.len(), 1);
        match &res[0].1 {
            Ok(()) => panic!("{name} passed for a provider whose claim is false"),
            Err(e) => assert!(e.contains(why), "{name}: {e}"),
        }
    }
}
