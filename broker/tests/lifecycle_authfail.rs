//! A failed peer authentication on the broker's fabric endpoint leaves an audit record:
//! a peer holding a real grant's id but not the grant's peer key is refused, and the
//! audit log gets one `fabric_auth_failed` line naming the grant, the claimed key's
//! fingerprint, the peer's address and the reason — and no signature or key bytes.

mod support;

use std::time::Duration;

use memgate_fabric::{public_key_from_seed, Connection, Endpoint, WcStatus};
use memgate_policy::keys::fingerprint;
use support::*;

#[test]
fn wrong_peer_key_for_a_real_grant_is_audited() {
    let (pki, broker, target, token, mut client) = scene(21, 2);
    let g = export_filled(&mut client, &target, &token, 60);
    let ep = Endpoint::parse(&g.endpoint).expect("endpoint");

    let wrong_seed = [0x5au8; 32];
    let wrong_pub = public_key_from_seed(&wrong_seed).expect("seed");
    assert_ne!(fingerprint(&wrong_pub), pki.peer.public().fingerprint());
    let refused = Connection::connect(&ep, g.id.0, wrong_seed);
    assert!(refused.is_err(), "a wrong peer key was let in");

    let rec = audit_of(&broker, "fabric_auth_failed", g.id, Duration::from_secs(10))
        .expect("no fabric_auth_failed record for the grant");
    assert_eq!(rec["reason"], "peer_key_mismatch");
    assert_eq!(rec["peer"], fingerprint(&wrong_pub));
    assert_eq!(rec["suppressed"], 0);
    let addr = rec["peer_addr"].as_str().expect("peer_addr");
    assert!(
        addr.starts_with("127.0.0.1:") || addr.starts_with("uid:"),
        "peer_addr {addr}"
    );
    // Only the documented fields: nothing that could carry a signature or key bytes.
    let mut keys: Vec<&str> = rec
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "event",
            "grant",
            "peer",
            "peer_addr",
            "reason",
            "suppressed",
            "ts"
        ]
    );
    let line = serde_json::to_string(&rec).expect("json");
    assert!(!line.contains(&hex::encode(wrong_pub)));

    // The grant's real peer is unaffected and reads the target's bytes.
    let mut c = Connection::connect(&ep, g.id.0, *pki.peer.seed()).expect("real peer");
    c.post_read(1, target.addr, 4096, g.regions[0].rkey)
        .expect("post");
    let mut out = Vec::new();
    while out.is_empty() {
        c.wait_completions(&mut out, Some(Duration::from_secs(10)))
            .expect("completion");
    }
    assert_eq!(out[0].status, WcStatus::Success);
    assert_eq!(out[0].data[0], pattern(target.seed, 0));
}
