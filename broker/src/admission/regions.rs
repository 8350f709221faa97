//! Step 5, regions: checks the requested ranges against the target's current
//! `/proc/<pid>/maps` (page-aligned, non-empty, no overflow, no overlap, fully inside
//! mappings of one allowed kind, writable for `read-write`), or expands `all` to exactly
//! the exportable mappings. The pidfd is re-checked after the read.

use std::os::fd::AsFd;

use memgate_policy::{Access, MappingKind, Region};
use memgate_proto::{RegionSelection, RegionSpec};

use super::maps::{self, Class, Mapping, MapsError};
use super::ptrace::{Proven, PtraceError};

/// Default most regions in one request.
pub const MAX_REGIONS: usize = 1024;

/// Why the regions are refused.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// The maps file could not be read.
    #[error("cannot read /proc/{pid}/maps: {err}")]
    Read {
        /// Target pid.
        pid: i32,
        /// The error.
        err: std::io::Error,
    },
    /// The maps file did not parse.
    #[error(transparent)]
    Maps(#[from] MapsError),
    /// Nothing to export.
    #[error("no regions requested (or none exportable)")]
    None,
    /// Too many regions.
    #[error("{0} regions requested, at most {1} allowed")]
    TooMany(usize, usize),
    /// Zero length.
    #[error("region {addr:#x}+0 is empty")]
    Empty {
        /// Start.
        addr: u64,
    },
    /// `addr + len` overflows.
    #[error("region {addr:#x}+{len:#x} wraps around the address space")]
    Overflow {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// Not page-aligned.
    #[error("region {addr:#x}+{len:#x} is not aligned to the {page}-byte page size")]
    Unaligned {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
        /// Page size.
        page: u64,
    },
    /// Two requested regions overlap.
    #[error("regions at {0:#x} and {1:#x} overlap")]
    Overlap(u64, u64),
    /// Part of the range is not mapped.
    #[error("region {addr:#x}+{len:#x}: {at:#x} is not mapped")]
    Unmapped {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
        /// First unmapped address.
        at: u64,
    },
    /// The range touches a mapping that is never exported.
    #[error("region {addr:#x}+{len:#x} touches {path:?}: {why}")]
    Forbidden {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
        /// The mapping's name.
        path: String,
        /// Why.
        why: &'static str,
    },
    /// The range touches a kind the policy does not export.
    #[error("region {addr:#x}+{len:#x} is {} memory, which the policy does not export", kind.as_str())]
    KindNotAllowed {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
        /// The kind.
        kind: MappingKind,
    },
    /// The range spans mappings of different kinds.
    #[error("region {addr:#x}+{len:#x} spans {} and {} memory; request them separately", a.as_str(), b.as_str())]
    MixedKinds {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
        /// One kind.
        a: MappingKind,
        /// The other.
        b: MappingKind,
    },
    /// `read-write` over a mapping the target itself cannot write.
    #[error("region {addr:#x}+{len:#x} is not writable in the target; read-write refused")]
    NotWritable {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// The target exited.
    #[error(transparent)]
    Target(#[from] PtraceError),
}

impl RegionError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            RegionError::Read { .. } | RegionError::Maps(_) => "maps_unreadable",
            RegionError::None => "no_regions",
            RegionError::TooMany(..) => "too_many_regions",
            RegionError::Empty { .. } => "region_empty",
            RegionError::Overflow { .. } => "region_overflow",
            RegionError::Unaligned { .. } => "region_unaligned",
            RegionError::Overlap(..) => "region_overlap",
            RegionError::Unmapped { .. } => "region_unmapped",
            RegionError::Forbidden { .. } => "mapping_forbidden",
            RegionError::KindNotAllowed { .. } => "mapping_not_allowed",
            RegionError::MixedKinds { .. } => "region_mixed_kinds",
            RegionError::NotWritable { .. } => "region_not_writable",
            RegionError::Target(e) => e.code(),
        }
    }
}

/// The system page size.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p)
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
}

/// What step 5 needs to know besides the maps.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// Access requested.
    pub access: Access,
    /// Kinds the policy exports.
    pub allowed: &'a [MappingKind],
    /// Most regions.
    pub max_regions: usize,
    /// Page size.
    pub page: u64,
}

/// Reads the target's maps and checks (or expands) the selection.
pub fn resolve(
    target: &Proven,
    selection: &RegionSelection,
    access: Access,
    allowed: &[MappingKind],
    max_regions: usize,
) -> Result<Vec<Region>, RegionError> {
    let rules = Rules {
        access,
        allowed,
        max_regions,
        page: page_size(),
    };
    resolve_with(target, selection, &rules, &mut Vec::new())
}

/// [`resolve`] with the caller's rules and a read buffer kept between requests (the
/// maps text is read into it with `pread`, so no allocation or seek per request).
pub fn resolve_with(
    target: &Proven,
    selection: &RegionSelection,
    rules: &Rules<'_>,
    buf: &mut Vec<u8>,
) -> Result<Vec<Region>, RegionError> {
    // A short list of regions: ask the kernel for just the mappings it touches.
    if let Some(mappings) = super::procmap::covering(target.maps.as_fd(), selection) {
        target.check_alive()?;
        return check(&mappings, selection, rules);
    }
    let text = read_maps(target, buf);
    target.check_alive()?;
    let text = text.map_err(|err| RegionError::Read {
        pid: target.pid,
        err,
    })?;
    if text.is_empty() {
        // Every live address space has mappings: the fds were opened on one that is gone.
        return Err(RegionError::Target(PtraceError::Unreadable {
            addr: 0,
            detail: "the maps fd reads nothing: the address space is gone (exit or exec)".into(),
        }));
    }
    let mappings = maps::parse(text)?;
    check(&mappings, selection, rules)
}

/// First read buffer size: the maps of most processes fit.
const MAPS_BUF: usize = 64 * 1024;

/// The whole maps text, through the requester's maps fd, from offset 0 (`pread`, so the
/// fd's own offset is neither used nor moved).
fn read_maps<'b>(target: &Proven, buf: &'b mut Vec<u8>) -> std::io::Result<&'b str> {
    if buf.len() < MAPS_BUF {
        buf.resize(MAPS_BUF, 0);
    }
    let mut len = 0usize;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        let off = u64::try_from(len).unwrap_or(u64::MAX);
        match rustix::io::pread(&target.maps, &mut buf[len..], off) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    std::str::from_utf8(&buf[..len])
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Checks (or expands) a selection against parsed mappings.
pub fn check(
    mappings: &[Mapping],
    selection: &RegionSelection,
    rules: &Rules<'_>,
) -> Result<Vec<Region>, RegionError> {
    let out = match selection {
        RegionSelection::All => expand_all(mappings, rules),
        RegionSelection::List(list) => {
            if list.len() > rules.max_regions {
                return Err(RegionError::TooMany(list.len(), rules.max_regions));
            }
            let out = list
                .iter()
                .map(|r| check_one(mappings, r, rules))
                .collect::<Result<Vec<_>, _>>()?;
            check_overlap(&out)?;
            out
        }
    };
    if out.is_empty() {
        return Err(RegionError::None);
    }
    if out.len() > rules.max_regions {
        return Err(RegionError::TooMany(out.len(), rules.max_regions));
    }
    Ok(out)
}

fn expand_all(mappings: &[Mapping], rules: &Rules<'_>) -> Vec<Region> {
    mappings
        .iter()
        .filter_map(|m| match m.class {
            Class::Kind(kind)
                if rules.allowed.contains(&kind) && (rules.access == Access::Read || m.write) =>
            {
                Some(Region {
                    addr: m.start,
                    len: m.end - m.start,
                    kind,
                })
            }
            _ => None,
        })
        .collect()
}

fn check_one(
    mappings: &[Mapping],
    r: &RegionSpec,
    rules: &Rules<'_>,
) -> Result<Region, RegionError> {
    let (addr, len) = (r.addr, r.len);
    if len == 0 {
        return Err(RegionError::Empty { addr });
    }
    let end = addr
        .checked_add(len)
        .ok_or(RegionError::Overflow { addr, len })?;
    if addr % rules.page != 0 || len % rules.page != 0 {
        return Err(RegionError::Unaligned {
            addr,
            len,
            page: rules.page,
        });
    }
    let mut kind: Option<MappingKind> = None;
    let mut cur = addr;
    // First mapping that ends after `cur`.
    let mut idx = mappings.partition_point(|m| m.end <= cur);
    while cur < end {
        let Some(m) = mappings.get(idx).filter(|m| m.start <= cur) else {
            return Err(RegionError::Unmapped { addr, len, at: cur });
        };
        let k = match m.class {
            Class::Forbidden(why) => {
                return Err(RegionError::Forbidden {
                    addr,
                    len,
                    path: m.path.clone(),
                    why,
                })
            }
            Class::Kind(k) => k,
        };
        if !rules.allowed.contains(&k) {
            return Err(RegionError::KindNotAllowed { addr, len, kind: k });
        }
        if rules.access == Access::ReadWrite && !m.write {
            return Err(RegionError::NotWritable { addr, len });
        }
        match kind {
            Some(prev) if prev != k => {
                return Err(RegionError::MixedKinds {
                    addr,
                    len,
                    a: prev,
                    b: k,
                })
            }
            _ => kind = Some(k),
        }
        cur = m.end;
        idx += 1;
    }
    let kind = kind.ok_or(RegionError::Unmapped {
        addr,
        len,
        at: addr,
    })?;
    Ok(Region { addr, len, kind })
}

fn check_overlap(regions: &[Region]) -> Result<(), RegionError> {
    let mut sorted: Vec<&Region> = regions.iter().collect();
    sorted.sort_by_key(|r| r.addr);
    for w in sorted.windows(2) {
        if let [a, b] = w {
            if b.addr < a.addr.saturating_add(a.len) {
                return Err(RegionError::Overlap(a.addr, b.addr));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
