//! Unit tests of the hardening entry points that are safe inside the (multi-threaded) test
//! harness; everything that really hardens a process runs in a child, see
//! `broker/tests/harden_*.rs`.

use super::*;

#[test]
fn apply_refuses_a_multi_threaded_process_and_changes_nothing() {
    // Make sure a second thread exists while apply() runs.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let helper = std::thread::spawn(move || {
        let _ = rx.recv();
    });
    let before = inspect();
    match apply(&HardenConfig::default()) {
        Err(HardenError::MultiThreaded(n)) => assert!(n >= 2, "{n}"),
        other => panic!("expected MultiThreaded, got {other:?}"),
    }
    let after = inspect();
    assert_eq!(before.caps, after.caps, "capabilities must be untouched");
    assert_eq!(before.seccomp_mode, after.seccomp_mode);
    assert!(after.applied.is_none());
    let _ = tx.send(());
    let _ = helper.join();
}

#[test]
fn unapplied_process_is_reported_as_not_applied() {
    let r = inspect();
    assert!(r.applied.is_none());
    assert_eq!(
        compare(&HardenConfig::default(), &r),
        vec![Shortfall::NotApplied]
    );
    assert!(r.to_string().contains("not applied in this process"));
}
