//! Adversarial tests of the admission pipeline: regions and mapping kinds. Run against real
//! processes: a target running as another uid, requesters (separate processes, setuid)
//! that open their own pidfd and `/proc/<pid>/mem` and `/proc/<pid>/maps` fds — so the
//! kernel's ptrace check applies to them — and send them over a real `SOCK_SEQPACKET`
//! connection, whose `SO_PEERCRED` the pipeline reads. Each case asserts the specific
//! denial code and that nothing was admitted (no `Admitted` value, the token id not
//! consumed).

mod common;

use common::pipeline::*;
use common::*;
use memgate_policy::MappingKind;
use memgate_proto::{Access, RegionSelection};

#[test]
fn all_expands_to_exactly_the_exportable_mappings() {
    let mut w = World::new();
    let req = read_req(w.token(TARGET_UID), RegionSelection::All);
    let a = w.run(TARGET_UID, FDS, &req).expect("admitted");
    let want: Vec<(u64, u64)> = w
        .target
        .maps()
        .into_iter()
        .filter(|(_, _, perms, path)| {
            perms.starts_with('r')
                && perms.ends_with('p')
                && (path.is_empty() || path == "[heap]" || path == "[stack]")
        })
        .map(|(s, e, _, _)| (s, e - s))
        .collect();
    let got: Vec<(u64, u64)> = a.regions.iter().map(|r| (r.addr, r.len)).collect();
    assert_eq!(got, want);
    assert!(a.regions.iter().any(|r| r.kind == MappingKind::Stack));
}

#[test]
fn region_across_an_unmapped_hole() {
    let mut w = World::new();
    let maps = w.target.maps();
    // A mapping followed by a gap of at least one page.
    let (s, e) = maps
        .windows(2)
        .find(|p| {
            let exportable = p[0].3.is_empty() || p[0].3 == "[heap]" || p[0].3 == "[stack]";
            exportable && p[0].2 == "rw-p" && p[1].0 > p[0].1
        })
        .map(|p| (p[0].0, p[0].1))
        .unwrap();
    w.denied_regions(&[(s, e - s + 4096)], "region_unmapped");
}

#[test]
fn overflowing_region() {
    let mut w = World::new();
    w.denied_regions(&[(0xffff_ffff_ffff_f000, 0x2000)], "region_overflow");
}

#[test]
fn unaligned_region() {
    let mut w = World::new();
    let (s, _) = w.target.mapping("[stack]");
    w.denied_regions(&[(s + 8, 4096)], "region_unaligned");
    w.denied_regions(&[(s, 100)], "region_unaligned");
}

#[test]
fn zero_length_region() {
    let mut w = World::new();
    let (s, _) = w.target.mapping("[stack]");
    w.denied_regions(&[(s, 0)], "region_empty");
}

#[test]
fn no_regions() {
    let mut w = World::new();
    w.denied_regions(&[], "no_regions");
}

#[test]
fn overlapping_regions() {
    let mut w = World::new();
    let (s, _) = w.target.mapping("[stack]");
    w.denied_regions(&[(s, 8192), (s + 4096, 4096)], "region_overlap");
}

#[test]
fn regions_in_vvar_vdso_and_vsyscall() {
    let mut w = World::new();
    for name in ["[vvar]", "[vdso]", "[vsyscall]"] {
        let Some(m) = w.target.maps().into_iter().find(|m| m.3 == name) else {
            continue;
        };
        let req = read_req(w.token(TARGET_UID), list(&[(m.0, 4096)]));
        let d = w.denied(TARGET_UID, FDS, &req, "mapping_forbidden");
        assert!(d.message.contains(name), "{d}");
    }
}

#[test]
fn private_file_mapping_not_listed_by_policy() {
    let mut w = World::new();
    let m = w.target.readonly_file_mapping();
    w.denied_regions(&[(m.0, 4096)], "mapping_not_allowed");
}

#[test]
fn read_write_of_a_read_only_mapping() {
    let mut w = World::with(PolicySpec {
        access: "read-write",
        mappings: Some(vec!["private-anon", "heap", "stack", "private-file"]),
        ..PolicySpec::default()
    });
    let mut c = w.claims(TARGET_UID);
    c.access = memgate_policy::Access::ReadWrite;
    let m = w.target.readonly_file_mapping();
    let req = export(mint(&w.keys, &c), list(&[(m.0, 4096)]), Access::ReadWrite);
    w.denied(TARGET_UID, "pidfd,memrw,maps", &req, "region_not_writable");
}
