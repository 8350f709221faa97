//! Where each page of a grant lives: on the source (address + key, fixed for the grant's
//! life) and on the destination (address, which moves when the process mremaps it).
//! Pages are numbered 0..total across all regions in grant order.

use crate::PAGE;

/// One exported source region and the destination address it is mirrored at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Source (target process) address, page aligned.
    pub src: u64,
    /// Destination address, page aligned.
    pub dst: u64,
    /// Length in bytes, page multiple.
    pub len: u64,
    /// Remote key for READs of this region.
    pub rkey: u32,
}

#[derive(Debug, Clone, Copy)]
struct SrcRun {
    first: usize,
    pages: usize,
    src: u64,
    rkey: u32,
}

/// A contiguous destination run: pages `first..first+pages` at `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DstRun {
    /// Destination start.
    pub dst: u64,
    /// First page index.
    pub first: usize,
    /// Page count.
    pub pages: usize,
}

/// Errors in a region list.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Not page aligned or empty.
    #[error("region {src:#x}+{len:#x} → {dst:#x} is empty or not page aligned")]
    Unaligned {
        /// Source.
        src: u64,
        /// Destination.
        dst: u64,
        /// Length.
        len: u64,
    },
    /// Two destination ranges overlap.
    #[error("destination ranges overlap at {0:#x}")]
    Overlap(u64),
}

/// The page table of one migration.
#[derive(Debug, Clone)]
pub struct Layout {
    src: Vec<SrcRun>,
    dst: Vec<DstRun>,
    total: usize,
}

impl Layout {
    /// Builds a layout; regions must be page aligned with disjoint destinations.
    pub fn new(regions: &[Region]) -> Result<Layout, LayoutError> {
        let mut src = Vec::new();
        let mut dst = Vec::new();
        let mut first = 0;
        let p = PAGE as u64;
        for r in regions {
            if r.len == 0 || r.src % p != 0 || r.dst % p != 0 || r.len % p != 0 {
                return Err(LayoutError::Unaligned {
                    src: r.src,
                    dst: r.dst,
                    len: r.len,
                });
            }
            let pages = (r.len / p) as usize;
            src.push(SrcRun {
                first,
                pages,
                src: r.src,
                rkey: r.rkey,
            });
            dst.push(DstRun {
                dst: r.dst,
                first,
                pages,
            });
            first += pages;
        }
        dst.sort_by_key(|d| d.dst);
        for w in dst.windows(2) {
            if w[0].dst + (w[0].pages * PAGE) as u64 > w[1].dst {
                return Err(LayoutError::Overlap(w[1].dst));
            }
        }
        Ok(Layout {
            src,
            dst,
            total: first,
        })
    }

    /// Number of pages.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Source address, key and the number of pages left in the same source run.
    pub fn src_of(&self, page: usize) -> Option<(u64, u32, usize)> {
        let i = self.src.partition_point(|r| r.first + r.pages <= page);
        let r = self.src.get(i)?;
        (page >= r.first).then(|| {
            let off = page - r.first;
            (r.src + (off * PAGE) as u64, r.rkey, r.pages - off)
        })
    }

    /// Page index of a destination address.
    pub fn page_at(&self, addr: u64) -> Option<usize> {
        let i = self
            .dst
            .partition_point(|d| d.dst + (d.pages * PAGE) as u64 <= addr);
        let d = self.dst.get(i)?;
        (addr >= d.dst).then(|| d.first + ((addr - d.dst) as usize / PAGE))
    }

    /// Destination address of a page and the number of pages contiguous with it (in both
    /// page index and destination address).
    pub fn dst_of(&self, page: usize) -> Option<(u64, usize)> {
        self.dst
            .iter()
            .find(|d| page >= d.first && page < d.first + d.pages)
            .map(|d| {
                let off = page - d.first;
                (d.dst + (off * PAGE) as u64, d.pages - off)
            })
    }

    /// Destination runs, sorted by address.
    pub fn dst_runs(&self) -> &[DstRun] {
        &self.dst
    }

    /// Page indices whose destination lies in `[start, end)`, as index ranges.
    pub fn pages_in(&self, start: u64, end: u64) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        for d in &self.dst {
            let d_end = d.dst + (d.pages * PAGE) as u64;
            let lo = start.max(d.dst);
            let hi = end.min(d_end);
            if lo < hi {
                let a = d.first + ((lo - d.dst) as usize).div_ceil(PAGE);
                let b = d.first + ((hi - d.dst) as usize) / PAGE;
                if a < b {
                    out.push(a..b);
                }
            }
        }
        out
    }

    /// Applies an mremap of `[from, from+len)` to `to`: destination runs are split at the
    /// range's edges and the covered part moves.
    pub fn remap(&mut self, from: u64, to: u64, len: u64) {
        let end = from + len;
        let mut out = Vec::with_capacity(self.dst.len() + 2);
        for d in &self.dst {
            let d_end = d.dst + (d.pages * PAGE) as u64;
            let lo = from.max(d.dst);
            let hi = end.min(d_end);
            if lo >= hi {
                out.push(*d);
                continue;
            }
            let pg = |a: u64| d.first + ((a - d.dst) as usize) / PAGE;
            if d.dst < lo {
                out.push(DstRun {
                    dst: d.dst,
                    first: d.first,
                    pages: pg(lo) - d.first,
                });
            }
            out.push(DstRun {
                dst: lo - from + to,
                first: pg(lo),
                pages: pg(hi) - pg(lo),
            });
            if hi < d_end {
                out.push(DstRun {
                    dst: hi,
                    first: pg(hi),
                    pages: d.first + d.pages - pg(hi),
                });
            }
        }
        out.sort_by_key(|d| d.dst);
        self.dst = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const P: u64 = PAGE as u64;

    fn two() -> Layout {
        Layout::new(&[
            Region {
                src: 0x10000,
                dst: 0x90000,
                len: 4 * P,
                rkey: 1,
            },
            Region {
                src: 0x40000,
                dst: 0x50000,
                len: 2 * P,
                rkey: 2,
            },
        ])
        .unwrap()
    }

    #[test]
    fn maps_pages_both_ways() {
        let l = two();
        assert_eq!(l.total(), 6);
        assert_eq!(l.page_at(0x90000 + P + 7), Some(1));
        assert_eq!(l.page_at(0x50000 + P), Some(5));
        assert_eq!(l.page_at(0x50000 + 2 * P), None);
        assert_eq!(l.src_of(5), Some((0x40000 + P, 2, 1)));
        assert_eq!(l.dst_of(2), Some((0x90000 + 2 * P, 2)));
        assert_eq!(l.pages_in(0x90000 + P, 0x90000 + 3 * P), vec![1..3]);
    }

    #[test]
    fn remap_moves_the_middle_of_a_run() {
        let mut l = two();
        l.remap(0x90000 + P, 0x200000, 2 * P);
        assert_eq!(l.page_at(0x200000), Some(1));
        assert_eq!(l.page_at(0x200000 + P), Some(2));
        assert_eq!(l.page_at(0x90000 + P), None);
        assert_eq!(l.page_at(0x90000 + 3 * P), Some(3));
        assert_eq!(l.dst_of(1), Some((0x200000, 2)));
    }

    #[test]
    fn rejects_overlap_and_misalignment() {
        assert!(Layout::new(&[Region {
            src: 1,
            dst: 0,
            len: P,
            rkey: 0
        }])
        .is_err());
        assert!(Layout::new(&[
            Region {
                src: 0,
                dst: 0,
                len: 2 * P,
                rkey: 0
            },
            Region {
                src: 0,
                dst: P,
                len: P,
                rkey: 0
            }
        ])
        .is_err());
    }
}
