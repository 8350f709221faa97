//! Memory that vanishes under a live key (the range is unmapped in the target) fails the
//! READ with a remote operation error — never zeros — while the rest of the region is
//! still served on a new connection. Soft-specific: an RDMA MR keeps its pages pinned, so
//! the verbs provider would keep serving the old pages instead.

mod common;
use common::OneKey;
use memgate_fabric::{event_channel, Connection, Endpoint, ProcMemSource, SoftResponder, WcStatus};
use std::sync::Arc;
use std::time::Duration;

fn read(c: &mut Connection, addr: u64, len: u32, rkey: u32) -> memgate_fabric::Completion {
    c.post_read(1, addr, len, rkey).unwrap();
    let mut out = Vec::new();
    while out.is_empty() {
        c.wait_completions(&mut out, Some(Duration::from_secs(10)))
            .unwrap();
    }
    out.pop().unwrap()
}

#[test]
fn unmapped_range_is_an_error_not_zeros() {
    const PAGE: usize = 4096;
    // SAFETY: a fresh private anonymous mapping of 3 pages; no Rust object aliases it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            3 * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let base = p as u64;
    // SAFETY: the mapping is 3 pages long, readable and writable, and ours alone.
    unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0xA5, 3 * PAGE) };

    let (sink, _rx) = event_channel();
    let resp = SoftResponder::bind(&Endpoint::parse("tcp:127.0.0.1:0").unwrap(), sink).unwrap();
    let src = Arc::new(ProcMemSource::new(
        std::fs::File::open("/proc/self/mem").unwrap(),
    ));
    let served = OneKey::serve(resp, src, (base, 3 * PAGE as u64), [5; 32], [6; 16]);
    let rkey = served.rkey;
    let mut c = served.connect();
    let ok = read(&mut c, base, 3 * PAGE as u32, rkey);
    assert_eq!(ok.status, WcStatus::Success);
    assert!(ok.data.iter().all(|&b| b == 0xA5));

    // SAFETY: unmaps the middle page of our own mapping; nothing references it.
    let r = unsafe { libc::munmap(p.cast::<u8>().add(PAGE).cast(), PAGE) };
    assert_eq!(r, 0);
    let gone = read(&mut c, base + PAGE as u64, PAGE as u32, rkey);
    assert_eq!(gone.status, WcStatus::RemoteOperationError);
    assert!(gone.data.is_empty());
    // A READ spanning the hole fails as a whole, too.
    let mut c = served.connect();
    let span = read(&mut c, base, 3 * PAGE as u32, rkey);
    assert_eq!(span.status, WcStatus::RemoteOperationError);
    // The pages still mapped are still served.
    let mut c = served.connect();
    let last = read(&mut c, base + 2 * PAGE as u64, PAGE as u32, rkey);
    assert_eq!(last.status, WcStatus::Success);
    assert!(last.data.iter().all(|&b| b == 0xA5));
    // SAFETY: unmaps the two remaining pages of our mapping.
    unsafe {
        libc::munmap(p, PAGE);
        libc::munmap(p.cast::<u8>().add(2 * PAGE).cast(), PAGE);
    }
}
