//! Step 5 on a synthetic maps file (every edge) and on a real child's maps.

use super::*;
use memgate_policy::MappingKind::*;

const MAPS: &str = "\
555555554000-555555556000 r--p 00000000 fe:01 1234 /usr/bin/x
555555556000-555555558000 rw-p 00000000 fe:01 1234 /usr/bin/x
555555600000-555555700000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000001000 ---p 00000000 00:00 0
7f0000001000-7f0000011000 rw-p 00000000 00:00 0
7f0000011000-7f0000021000 rw-p 00000000 00:00 0
7f0000021000-7f0000022000 rw-s 00000000 00:01 9 /dev/zero (deleted)
7ffff7fc0000-7ffff7fc4000 r--p 00000000 00:00 0 [vvar]
7ffff7fc4000-7ffff7fc6000 r-xp 00000000 00:00 0 [vdso]
7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0 [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
";

fn rules(access: Access, allowed: &[MappingKind]) -> Rules<'_> {
    Rules {
        access,
        allowed,
        max_regions: 8,
        page: 4096,
    }
}

fn run(
    regions: &[(u64, u64)],
    access: Access,
    allowed: &[MappingKind],
) -> Result<Vec<Region>, RegionError> {
    let m = maps::parse(MAPS).unwrap();
    let sel = RegionSelection::List(
        regions
            .iter()
            .map(|&(addr, len)| RegionSpec { addr, len })
            .collect(),
    );
    check(&m, &sel, &rules(access, allowed))
}

fn code(regions: &[(u64, u64)]) -> &'static str {
    run(regions, Access::Read, &MappingKind::DEFAULT_EXPORTABLE)
        .unwrap_err()
        .code()
}

#[test]
fn accepts_ranges_inside_allowed_mappings() {
    let r = run(
        &[(0x5555_5560_0000, 0x1000), (0x7f00_0000_1000, 0x20000)],
        Access::Read,
        &MappingKind::DEFAULT_EXPORTABLE,
    )
    .unwrap();
    assert_eq!(r[0].kind, Heap);
    // Two adjacent anonymous mappings form one region of one kind.
    assert_eq!((r[1].len, r[1].kind), (0x20000, PrivateAnon));
}

#[test]
fn refuses_each_malformed_range() {
    assert_eq!(code(&[(0x5555_5560_0000, 0)]), "region_empty");
    assert_eq!(code(&[(0xffff_ffff_ffff_f000, 0x2000)]), "region_overflow");
    assert_eq!(code(&[(0x5555_5560_0008, 0x1000)]), "region_unaligned");
    assert_eq!(code(&[(0x5555_5560_0000, 0x1001)]), "region_unaligned");
    assert_eq!(
        code(&[(0x5555_5560_0000, 0x2000), (0x5555_5560_1000, 0x1000)]),
        "region_overlap"
    );
    assert_eq!(code(&[]), "no_regions");
    assert_eq!(code(&[(0x1000, 0x1000); 9]), "too_many_regions");
}

#[test]
fn refuses_holes_specials_guards_and_other_kinds() {
    // The heap ends at ...700000; the next mapping starts far above.
    assert_eq!(code(&[(0x5555_5560_0000, 0x101000)]), "region_unmapped");
    assert_eq!(code(&[(0x1000, 0x1000)]), "region_unmapped");
    assert_eq!(code(&[(0x7fff_f7fc_0000, 0x1000)]), "mapping_forbidden");
    assert_eq!(code(&[(0x7fff_f7fc_4000, 0x1000)]), "mapping_forbidden");
    assert_eq!(
        code(&[(0xffff_ffff_ff60_0000, 0x1000)]),
        "mapping_forbidden"
    );
    // The guard page before the anonymous mapping.
    assert_eq!(code(&[(0x7f00_0000_0000, 0x2000)]), "mapping_forbidden");
    assert_eq!(code(&[(0x5555_5555_4000, 0x1000)]), "mapping_not_allowed");
    assert_eq!(code(&[(0x7f00_0002_1000, 0x1000)]), "mapping_not_allowed");
    // Spanning anonymous memory into a shared mapping.
    let all = [PrivateAnon, Shared];
    let e = run(&[(0x7f00_0002_0000, 0x2000)], Access::Read, &all).unwrap_err();
    assert_eq!(e.code(), "region_mixed_kinds");
    // Listed kinds become exportable.
    let r = run(&[(0x7f00_0002_1000, 0x1000)], Access::Read, &all).unwrap();
    assert_eq!(r[0].kind, Shared);
}

#[test]
fn read_write_needs_writable_mappings() {
    let kinds = [PrivateFile, Heap];
    let e = run(&[(0x5555_5555_4000, 0x1000)], Access::ReadWrite, &kinds).unwrap_err();
    assert_eq!(e.code(), "region_not_writable");
    run(&[(0x5555_5555_6000, 0x1000)], Access::ReadWrite, &kinds).unwrap();
}

#[test]
fn all_is_exactly_the_exportable_mappings() {
    let m = maps::parse(MAPS).unwrap();
    let r = check(
        &m,
        &RegionSelection::All,
        &rules(Access::Read, &MappingKind::DEFAULT_EXPORTABLE),
    )
    .unwrap();
    let got: Vec<(u64, MappingKind)> = r.iter().map(|r| (r.addr, r.kind)).collect();
    assert_eq!(
        got,
        vec![
            (0x5555_5560_0000, Heap),
            (0x7f00_0000_1000, PrivateAnon),
            (0x7f00_0001_1000, PrivateAnon),
            (0x7fff_fffd_e000, Stack),
        ]
    );
    let with_files = [PrivateFile, Heap];
    let r = check(
        &m,
        &RegionSelection::All,
        &rules(Access::ReadWrite, &with_files),
    )
    .unwrap();
    let got: Vec<u64> = r.iter().map(|r| r.addr).collect();
    assert_eq!(got, vec![0x5555_5555_6000, 0x5555_5560_0000]);
    let none = check(&m, &RegionSelection::All, &rules(Access::Read, &[])).unwrap_err();
    assert_eq!(none.code(), "no_regions");
}

#[test]
fn resolves_against_a_real_child() {
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let fds = vec![
        super::super::pidfd::open(pid).unwrap(),
        std::os::fd::OwnedFd::from(std::fs::File::open(format!("/proc/{pid}/mem")).unwrap()),
        std::os::fd::OwnedFd::from(std::fs::File::open(format!("/proc/{pid}/maps")).unwrap()),
    ];
    let me = super::super::peer::PeerCred {
        pid: i32::try_from(std::process::id()).unwrap(),
        uid: 0,
        gid: 0,
        pidfd: None,
    };
    let p = super::super::ptrace::prove(fds, &me, Access::Read).unwrap();
    let all = resolve(
        &p,
        &RegionSelection::All,
        Access::Read,
        &MappingKind::DEFAULT_EXPORTABLE,
        64,
    )
    .unwrap();
    assert!(all.iter().any(|r| r.kind == Stack));
    let stack = all.iter().find(|r| r.kind == Stack).unwrap();
    p.probe_read(stack.addr).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let e = resolve(
        &p,
        &RegionSelection::All,
        Access::Read,
        &MappingKind::DEFAULT_EXPORTABLE,
        64,
    )
    .unwrap_err();
    assert_eq!(e.code(), "target_exited");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// The synthetic maps plus a read-only anonymous mapping, so `read-write` has
    /// something to refuse.
    fn prop_maps() -> String {
        MAPS.replace(
            "7ffff7fc0000-",
            "7f0000030000-7f0000032000 r--p 00000000 00:00 0\n7ffff7fc0000-",
        )
    }

    fn near_mappings() -> impl Strategy<Value = u64> {
        // Addresses around the synthetic mappings' edges, plus anything at all.
        prop_oneof![
            8 => proptest::sample::select(vec![
                0x5555_5555_4000u64,
                0x5555_5555_8000,
                0x5555_5560_0000,
                0x5555_5570_0000,
                0x7f00_0000_0000,
                0x7f00_0002_1000,
                0x7f00_0003_0000,
                0x7fff_f7fc_0000,
                0x7fff_fffd_e000,
                0xffff_ffff_ff60_0000,
            ])
            .prop_flat_map(|b| (0u64..8).prop_map(move |k| b.wrapping_add(k * 0x1000))),
            1 => any::<u64>(),
        ]
    }

    fn length() -> impl Strategy<Value = u64> {
        prop_oneof![8 => (0u64..8).prop_map(|k| k * 0x1000), 1 => any::<u64>()]
    }

    /// An independent, page-by-page judgement of one region.
    fn oracle_one(
        m: &[maps::Mapping],
        addr: u64,
        len: u64,
        rw: bool,
        allowed: &[MappingKind],
    ) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        if len == 0 || !addr.is_multiple_of(4096) || !len.is_multiple_of(4096) || len > 512 * 4096 {
            return false;
        }
        let mut kind = None;
        let mut page = addr;
        while page < end {
            let Some(mm) = m.iter().find(|x| x.start <= page && page < x.end) else {
                return false;
            };
            let maps::Class::Kind(k) = mm.class else {
                return false;
            };
            if !allowed.contains(&k) || (rw && !mm.write) || kind.is_some_and(|p| p != k) {
                return false;
            }
            kind = Some(k);
            page += 4096;
        }
        true
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Whatever ranges a requester sends, the check never panics and agrees with an
        /// independent page-by-page judgement: accepted regions lie inside readable
        /// mappings of one allowed kind (writable for read-write), aligned and disjoint;
        /// valid requests are not refused.
        #[test]
        fn check_agrees_with_a_page_by_page_oracle(
            specs in proptest::collection::vec((near_mappings(), length()), 0..4),
            rw in any::<bool>(),
        ) {
            let m = maps::parse(&prop_maps()).unwrap();
            let allowed = [PrivateAnon, Heap, Stack, Shared];
            let access = if rw { Access::ReadWrite } else { Access::Read };
            let sel = RegionSelection::List(
                specs.iter().map(|&(addr, len)| RegionSpec { addr, len }).collect(),
            );
            let mut sorted = specs.clone();
            sorted.sort();
            let disjoint = sorted
                .windows(2)
                .all(|w| w[0].0.checked_add(w[0].1).is_some_and(|e| e <= w[1].0));
            let expect = !specs.is_empty()
                && disjoint
                && specs.iter().all(|&(a, l)| oracle_one(&m, a, l, rw, &allowed));
            let got = check(&m, &sel, &rules(access, &allowed));
            prop_assert_eq!(got.is_ok(), expect, "{:?} rw={} -> {:?}", specs, rw, got.as_ref().err().map(|e| e.code()));
            if let Ok(regions) = got {
                prop_assert_eq!(regions.len(), specs.len());
            }
        }

        /// The maps parser never panics on arbitrary text.
        #[test]
        fn maps_parser_never_panics(text in "\\PC{0,400}") {
            let _ = maps::parse(&text);
        }
    }
}
