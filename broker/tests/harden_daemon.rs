//! The real `memgated`, hardened as in production (no `--no-harden`): its running process
//! shows every restriction in force, and an export followed by fabric READs from a
//! fault server's authenticated connection still works under the filter.

mod support;

use std::time::Duration;

use memgate_fabric::{Connection, Endpoint, WcStatus};
use memgate_proto::Response;
use support::*;

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn hardened_memgated_is_restricted_and_still_exports() {
    let pki = Pki::generate();
    let broker = Broker::start(&pki, &PolicySpec::new().toml(&pki)).expect("broker");

    // What the kernel says about the serving broker.
    let status = std::fs::read_to_string(format!("/proc/{}/status", broker.child.id()))
        .expect("broker status");
    for key in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&status, key), "0000000000000000", "{key}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(status_field(&status, "Seccomp"), "2");
    // Fabric threads were started after hardening and inherited it (checked per thread).
    let tasks = std::fs::read_dir(format!("/proc/{}/task", broker.child.id())).expect("tasks");
    let mut threads = 0;
    for t in tasks {
        let t = t.expect("task");
        let st = std::fs::read_to_string(t.path().join("status")).expect("task status");
        assert_eq!(
            status_field(&st, "Seccomp"),
            "2",
            "thread {:?}",
            t.file_name()
        );
        assert_eq!(status_field(&st, "CapEff"), "0000000000000000");
        threads += 1;
    }
    assert!(threads >= 2, "the fabric runs its own threads");
    let harden = broker
        .wait_audit("harden", Duration::from_secs(5), |v| v["applied"] == true)
        .expect("a harden audit record with applied = true");
    assert_eq!(
        harden["report"]["applied"]["landlock"]["state"], "fully-enforced",
        "{harden}"
    );

    // An export and READs through the fabric, all under the filter.
    let target = Target::spawn(test_uid(70), 4).expect("target");
    let token = pki.token(&TokenSpec::for_target(&target));
    let mut client = broker.client();
    let g = match export(
        &mut client,
        &target,
        &token,
        Some(vec![(target.addr, target.len)]),
        60,
    ) {
        Response::Grant(g) => g,
        other => panic!("expected a grant from the hardened broker, got {other:?}"),
    };
    let ep = Endpoint::parse(&g.endpoint).expect("endpoint");
    let mut conn = Connection::connect(&ep, g.id.0, *pki.peer.seed()).expect("fabric connect");
    conn.post_read(1, target.addr, 4096, g.regions[0].rkey)
        .expect("post");
    let mut done = Vec::new();
    while done.is_empty() {
        conn.wait_completions(&mut done, Some(Duration::from_secs(10)))
            .expect("completion");
    }
    assert_eq!(done[0].status, WcStatus::Success);
    for (i, b) in done[0].data.iter().enumerate() {
        assert_eq!(*b, pattern(target.seed, i as u64), "byte {i}");
    }
    assert!(
        !support::child_exited(&broker.child),
        "the broker must still be running: {}",
        broker.stderr()
    );
}
