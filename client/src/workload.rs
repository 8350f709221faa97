//! Demo and benchmark workloads: a verifiable memory pattern, the source target (fills heap,
//! an anonymous mapping and stack, then freezes itself), and the touch orders the
//! destination uses (sequential, random, idle).

use serde::{Deserialize, Serialize};

/// The pattern word at source address `addr` (8-byte aligned) for `seed`: never depends on
/// where the destination maps the page, so every byte is checkable after migration.
pub fn word(addr: u64, seed: u64) -> u64 {
    let mut z = addr ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31) | 1
}

/// Fills `buf` as if it lived at source address `src`.
pub fn fill(buf: &mut [u8], src: u64, seed: u64) {
    for (i, c) in buf.chunks_exact_mut(8).enumerate() {
        c.copy_from_slice(&word(src + (i * 8) as u64, seed).to_ne_bytes());
    }
}

/// Number of 8-byte words in `buf` that differ from the pattern at source address `src`.
pub fn mismatches(buf: &[u8], src: u64, seed: u64) -> usize {
    buf.chunks_exact(8)
        .enumerate()
        .filter(|(i, c)| {
            let w = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            w != word(src + (*i * 8) as u64, seed)
        })
        .count()
}

/// Touch orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Every page in address order.
    Seq,
    /// Every page once, in random order.
    Random,
    /// No touches until everything was prefetched; then verify.
    Idle,
}

/// One source region of the demo target.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct TargetRegion {
    /// Start (page aligned).
    pub addr: u64,
    /// Length (page multiple).
    pub len: u64,
    /// `heap`, `anon` or `stack`.
    pub kind: &'static str,
}

/// What the demo target prints before freezing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetInfo {
    /// Its pid.
    pub pid: i32,
    /// The pattern seed.
    pub seed: u64,
    /// The filled regions.
    pub regions: Vec<OwnedRegion>,
}

/// A region with an owned kind string (for deserialising).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OwnedRegion {
    /// Start (page aligned).
    pub addr: u64,
    /// Length (page multiple).
    pub len: u64,
    /// `heap`, `anon` or `stack`.
    pub kind: String,
}

/// A small xorshift generator (deterministic touch orders; not for secrets).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator (0 is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Page visiting order for `n` pages.
pub fn order(n: usize, pattern: Pattern, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    if pattern == Pattern::Random {
        let mut r = Rng::new(seed);
        for i in (1..n).rev() {
            let j = (r.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
    v
}

fn page_interior(ptr: *const u8, len: usize) -> (u64, u64) {
    let p = crate::PAGE as u64;
    let start = (ptr as u64).div_ceil(p) * p;
    let end = (ptr as u64 + len as u64) / p * p;
    (start, end.saturating_sub(start))
}

/// The demo target: fills ~`size` bytes across the heap (brk), an anonymous mapping and the
/// main thread's stack with the pattern, prints [`TargetInfo`] as one JSON line on stdout,
/// stops itself (SIGSTOP) and never returns.
pub fn run_target(size: u64, seed: u64) -> ! {
    const STACK: usize = 1 << 20;
    let mut stack = [0u8; STACK];
    let heap_len = (size / 4) as usize;
    // SAFETY: mallopt only changes the allocator's threshold for using mmap; raising it
    // keeps the heap buffer on the brk heap (a `[heap]` mapping).
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30) };
    let mut heap = vec![0u8; heap_len + crate::PAGE * 2];
    let anon_len = (size as usize)
        .saturating_sub(heap_len + STACK)
        .max(crate::PAGE);
    let anon = match crate::mem::Mapping::anon(anon_len) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("memgate demo target: mmap: {e}");
            std::process::exit(2)
        }
    };
    let mut regions = Vec::new();
    for (ptr, len, kind) in [
        (heap.as_mut_ptr(), heap.len(), "heap"),
        (anon.as_ptr(), anon.len(), "anon"),
        (stack.as_mut_ptr(), STACK, "stack"),
    ] {
        let (addr, len) = page_interior(ptr, len);
        // SAFETY: `[addr, addr+len)` lies inside the buffer or mapping named by `ptr, len`,
        // which this function owns and keeps alive until the process ends.
        let buf = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len as usize) };
        fill(buf, addr, seed);
        regions.push(OwnedRegion {
            addr,
            len,
            kind: kind.to_string(),
        });
    }
    let info = TargetInfo {
        pid: std::process::id() as i32,
        seed,
        regions,
    };
    println!("{}", serde_json::to_string(&info).unwrap_or_default());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: raising SIGSTOP on ourselves; no memory is involved.
    unsafe { libc::raise(libc::SIGSTOP) };
    loop {
        std::hint::black_box(&stack);
        std::hint::black_box(&heap);
        std::hint::black_box(&anon);
        // SAFETY: pause only sleeps until a signal arrives.
        unsafe { libc::pause() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_detects_zero_and_moved_pages() {
        let mut b = vec![0u8; 4096];
        fill(&mut b, 0x7000_0000, 9);
        assert_eq!(mismatches(&b, 0x7000_0000, 9), 0);
        assert_eq!(mismatches(&b, 0x7000_1000, 9), 512);
        assert_eq!(mismatches(&[0u8; 4096], 0x7000_0000, 9), 512);
    }

    #[test]
    fn random_order_is_a_permutation() {
        let mut o = order(1000, Pattern::Random, 5);
        assert_ne!(o, (0..1000).collect::<Vec<_>>());
        o.sort_unstable();
        assert_eq!(o, (0..1000).collect::<Vec<_>>());
    }
}
