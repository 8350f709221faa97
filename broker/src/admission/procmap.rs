//! The target's mappings one at a time with the `PROCMAP_QUERY` ioctl (Linux 6.11+) on the
//! requester's `/proc/<pid>/maps` fd, instead of generating and parsing the whole maps
//! text (which the kernel builds line by line, a path lookup per file mapping).
//!
//! The ioctl works on the `mm` the fd was opened on, with the ptrace-read check that open
//! made, exactly like reading the text through the fd; after the target exits or execs it
//! fails with `ESRCH` as the text read returns nothing. It answers only for mappings in
//! the address space's tree, so an address it does not find (including the `[vsyscall]`
//! gate page, which the text lists but the tree lacks), any error, or a request touching
//! many mappings makes the caller fall back to the full text: the decision is the same
//! either way, only cheaper when the query suffices.

use std::os::fd::{AsRawFd, BorrowedFd};

use memgate_proto::{RegionSelection, RegionSpec};

use super::maps::{classify, Mapping};

/// `struct procmap_query` of `<linux/fs.h>`.
#[repr(C)]
#[derive(Debug, Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

/// `_IOWR('f', 17, struct procmap_query)`.
const PROCMAP_QUERY: u64 =
    (3 << 30) | ((std::mem::size_of::<ProcmapQuery>() as u64) << 16) | (0x66 << 8) | 17;
const VMA_READABLE: u64 = 0x01;
const VMA_WRITABLE: u64 = 0x02;
const VMA_SHARED: u64 = 0x08;

/// Most mappings looked up one by one before the full text is cheaper.
pub const MAX_QUERIES: usize = 32;

/// The mapping that contains `addr`, or `None` when the kernel has none there or cannot
/// answer (old kernel, name too long, address space gone).
fn query(fd: BorrowedFd<'_>, addr: u64, name: &mut [u8; 4096]) -> Option<Mapping> {
    let mut q = ProcmapQuery {
        size: std::mem::size_of::<ProcmapQuery>() as u64,
        query_addr: addr,
        vma_name_size: name.len() as u32,
        vma_name_addr: name.as_mut_ptr() as u64,
        ..ProcmapQuery::default()
    };
    // SAFETY: `q` is a valid procmap_query whose `size` is its own size; the kernel writes
    // only into `q` and at most `vma_name_size` bytes into `name`, which is that long and
    // lives across the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), PROCMAP_QUERY as _, &mut q) };
    if rc != 0 || q.vma_end <= q.vma_start || q.vma_start > addr || addr >= q.vma_end {
        return None;
    }
    // The returned size counts the terminating NUL (0: the mapping has no name).
    let len = usize::try_from(q.vma_name_size).ok()?.saturating_sub(1);
    let path = std::str::from_utf8(name.get(..len)?).ok()?.to_string();
    let (read, write, shared) = (
        q.vma_flags & VMA_READABLE != 0,
        q.vma_flags & VMA_WRITABLE != 0,
        q.vma_flags & VMA_SHARED != 0,
    );
    Some(Mapping {
        start: q.vma_start,
        end: q.vma_end,
        read,
        write,
        shared,
        inode: q.inode,
        class: classify(read, shared, q.inode, &path),
        path,
    })
}

/// The mappings a region list touches, in address order, or `None` when the full text
/// must be read instead (`all`, an address without a mapping, an error, too many).
/// Regions the checks refuse before looking at mappings (empty, wrapping) are skipped;
/// the walk over one region stops where the text walk would.
pub fn covering(fd: BorrowedFd<'_>, selection: &RegionSelection) -> Option<Vec<Mapping>> {
    let RegionSelection::List(list) = selection else {
        return None;
    };
    let mut name = [0u8; 4096];
    let mut out: Vec<Mapping> = Vec::new();
    let mut queries = 0usize;
    for &RegionSpec { addr, len } in list {
        let Some(end) = addr.checked_add(len).filter(|_| len > 0) else {
            continue;
        };
        let mut cur = addr;
        while cur < end {
            if let Some(m) = out.iter().find(|m| m.start <= cur && cur < m.end) {
                cur = m.end;
                continue;
            }
            queries += 1;
            if queries > MAX_QUERIES {
                return None;
            }
            let m = query(fd, cur, &mut name)?;
            cur = m.end;
            out.push(m);
        }
    }
    out.sort_by_key(|m| m.start);
    // Mappings that changed between two queries could overlap: let the text decide.
    if out.windows(2).any(|w| w[1].start < w[0].end) {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::fd::AsFd;

    use super::*;
    use crate::admission::maps;

    fn one(addr: u64) -> RegionSelection {
        RegionSelection::List(vec![RegionSpec { addr, len: 4096 }])
    }

    #[test]
    fn the_query_agrees_with_the_maps_text() {
        let fd = File::open("/proc/self/maps").unwrap();
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        let all = maps::parse(&text).unwrap();
        let file = all.iter().find(|m| m.path.starts_with('/')).unwrap();
        let vdso = all.iter().find(|m| m.path == "[vdso]").unwrap();
        for m in [file, vdso] {
            let got = covering(fd.as_fd(), &one(m.start)).unwrap();
            assert_eq!(got, vec![m.clone()]);
        }
        // The gate page is listed in the text but not found by the query: fall back.
        if let Some(v) = all.iter().find(|m| m.path == "[vsyscall]") {
            assert!(covering(fd.as_fd(), &one(v.start)).is_none());
        }
        // Unmapped address (page 0) and `all`: fall back too.
        assert!(covering(fd.as_fd(), &one(0)).is_none());
        assert!(covering(fd.as_fd(), &RegionSelection::All).is_none());
    }

    #[test]
    fn a_file_that_is_not_maps_gets_no_answer() {
        let f = File::open("/proc/self/status").unwrap();
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        let first = maps::parse(&text).unwrap()[0].start;
        assert!(covering(f.as_fd(), &one(first)).is_none());
    }
}
