//! The shipped example policy (dist/policy.example.toml) parses and means what its
//! comments say.

use memgate_policy::{Access, MappingKind, Policy};

const EXAMPLE: &str = include_str!("../../dist/policy.example.toml");

#[test]
fn example_policy_parses_and_says_what_it_teaches() {
    let p = Policy::parse(EXAMPLE).unwrap();
    assert_eq!(p.version, 1);
    assert_eq!(p.broker, "host-a.example");
    assert_eq!(p.serial, 1);
    assert_eq!(p.mappings, MappingKind::DEFAULT_EXPORTABLE.to_vec());
    assert_eq!(p.limits, memgate_policy::Limits::default());
    assert_eq!(p.issuers.len(), 2);
    let orch = p.issuer("orchestrator").unwrap();
    assert_eq!(orch.access, Access::Read);
    assert_eq!(orch.max_bytes, 8 << 30);
    assert_eq!(orch.max_lease, 600);
    assert!(orch.allows_cgroup("/machine.slice/vm1.scope"));
    assert!(!orch.allows_cgroup("/machine.slice/vm1.scope/sub"));
    assert!(orch.allows_cgroup("/migrate.slice"));
    assert!(orch.allows_cgroup("/migrate.slice/a/b"));
    assert!(orch.allows_requester(1000, 1000));
    assert!(!orch.allows_requester(1001, 1001));
    let batch = p.issuer("batch-scheduler").unwrap();
    assert!(batch.allows_cgroup("/batch.slice/job"));
    assert!(batch.allows_cgroup("/batch.slice/q/7/job"));
    assert!(!batch.allows_cgroup("/batch.slice/q/7"));
    assert!(batch.allows_requester(4242, 990));
    assert_eq!(batch.max_bytes, 512 << 20);
}

#[test]
fn a_misspelt_key_in_the_example_is_named() {
    let bad = EXAMPLE.replace("max_lease = 600", "max_leese = 600");
    let e = Policy::parse(&bad).unwrap_err().to_string();
    assert!(e.contains("max_leese"), "{e}");
}
