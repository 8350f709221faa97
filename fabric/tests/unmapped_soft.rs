//! Memory that vanishes under a live key (the range is unmapped in the target) fails the
//! READ with a remote operation error — never zeros — while the rest of the region is
//! still served on a new connection. Soft-specific: an RDMA MR keeps its pages pinned, so
//! the verbs provider would keep serving the old pages instead.

use memgate_fabric::{
    event_channel, public_key_from_seed, Access, Connection, Endpoint, KeySpec, ProcMemSource,
    Responder, SoftResponder, WcStatus,
};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    let region = resp.register(src, base, 3 * PAGE as u64).unwrap();
    let seed = [5u8; 32];
    let grant = [6u8; 16];
    let spec = KeySpec {
        addr: base,
        len: 3 * PAGE as u64,
        access: Access::REMOTE_READ,
        peer: public_key_from_seed(&seed).unwrap(),
        grant,
        expires: SystemTime::now() + Duration::from_secs(60),
    };
    let rkey = resp.create_key(&region, spec).unwrap();
    let ep = Endpoint::parse(&resp.endpoint()).unwrap();
    let mut c = Connection::connect(&ep, grant, seed).unwrap();
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
    let mut c = Connection::connect(&ep, grant, seed).unwrap();
    let span = read(&mut c, base, 3 * PAGE as u32, rkey);
    assert_eq!(span.status, WcStatus::RemoteOperationError);
    // The pages still mapped are still served.
    let mut c = Connection::connect(&ep, grant, seed).unwrap();
    let last = read(&mut c, base + 2 * PAGE as u64, PAGE as u32, rkey);
    assert_eq!(last.status, WcStatus::Success);
    assert!(last.data.iter().all(|&b| b == 0xA5));
    // SAFETY: unmaps the two remaining pages of our mapping.
    unsafe {
        libc::munmap(p, PAGE);
        libc::munmap(p.cast::<u8>().add(2 * PAGE).cast(), PAGE);
    }
}
