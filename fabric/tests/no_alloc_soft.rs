//! The READ hot path does not allocate per request once warm: a counting global allocator watches
//! this whole process (initiator and responder threads) through a run of pipelined READs.

mod common;
use common::OneKey;
use memgate_fabric::{event_channel, Connection, Endpoint, SoftResponder, VecSource, WcStatus};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn run(
    c: &mut Connection,
    out: &mut Vec<memgate_fabric::Completion>,
    base: u64,
    rkey: u32,
    n: u64,
) {
    let sizes = [4096, 64 << 10, 100, 32 << 10];
    let (mut next, mut done) = (0u64, 0u64);
    while done < n {
        while next < n && c.outstanding() < 8 {
            let len = sizes[next as usize % sizes.len()];
            c.post_read(next, base + (next % 64) * 4096, len, rkey)
                .unwrap();
            next += 1;
        }
        out.clear();
        c.wait_completions(out, Some(Duration::from_secs(10)))
            .unwrap();
        for comp in out.iter() {
            assert_eq!(comp.status, WcStatus::Success);
        }
        done += out.len() as u64;
    }
}

#[test]
fn pipelined_reads_allocate_nothing_once_warm() {
    const BASE: u64 = 0x4000_0000;
    let (sink, _rx) = event_channel();
    let resp = SoftResponder::bind(&Endpoint::parse("tcp:127.0.0.1:0").unwrap(), sink).unwrap();
    let src = Arc::new(VecSource::new(BASE, vec![7u8; 1 << 20]));
    let served = OneKey::serve(resp, src, (BASE, 1 << 20), [3; 32], [4; 16]);
    let rkey = served.rkey;
    let mut c = served.connect();
    let mut out = Vec::with_capacity(64);
    run(&mut c, &mut out, BASE, rkey, 5000);
    let before = ALLOCS.load(Ordering::Relaxed);
    run(&mut c, &mut out, BASE, rkey, 20000);
    let during = ALLOCS.load(Ordering::Relaxed) - before;
    // Buffers may still reach a new high-water mark now and then (how many replies are
    // in flight at once depends on timing), but nothing is allocated per READ.
    assert!(during <= 10, "{during} allocations during 20000 warm READs");
}
