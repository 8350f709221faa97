//! READ latency and throughput of the soft provider over loopback TCP, against raw TCP
//! request/reply baselines measured in the same run.
//!
//! `cargo bench -p memgate-fabric --bench soft_read` (run it under `nice`). Prints:
//! 4 KiB READ latency p50/p99 at one outstanding; throughput for 64 KiB and 2 MiB READs
//! with 1, 2, 4 and 8 outstanding; the same for the raw baseline; and the ratios.
//!
//! The soft responder reads target memory the way the broker does, with `pread` on a
//! `/proc/PID/mem` fd (here this process's own). The raw baseline is the least a
//! request/reply protocol over the same socket can cost: a 32-byte request, a 24-byte
//! header plus the data copied from a buffer, served inline by the thread that read the
//! request. Two more baselines measure the other threading models: one hands each request
//! to a worker thread (an event loop feeding a pool: a cross-thread wake-up per request),
//! one serves every connection from a single epoll loop.

use memgate_fabric::{
    event_channel, public_key_from_seed, Access, Connection, Endpoint, KeySpec, MemorySource,
    ProcMemSource, Responder, SoftResponder, VecSource,
};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

const MEM: usize = 64 << 20;
const LAT_ITERS: usize = 20_000;
const TPUT_TIME: Duration = Duration::from_millis(400);

/// One request/reply client under test.
trait Client {
    /// Post a READ of `len` bytes at offset `off`.
    fn post(&mut self, off: u64, len: u32);
    /// Wait for the oldest outstanding reply.
    fn wait_one(&mut self);
}

struct Soft {
    c: Connection,
    base: u64,
    rkey: u32,
    out: Vec<memgate_fabric::Completion>,
    done: usize,
}

impl Client for Soft {
    fn post(&mut self, off: u64, len: u32) {
        self.c
            .post_read(0, self.base + off, len, self.rkey)
            .expect("post_read");
    }
    fn wait_one(&mut self) {
        while self.done == 0 {
            self.out.clear();
            let n = self.c.wait_completions(&mut self.out, None).expect("wait");
            for comp in &self.out {
                assert_eq!(comp.status, memgate_fabric::WcStatus::Success);
            }
            self.done += n;
        }
        self.done -= 1;
    }
}

struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    lens: std::collections::VecDeque<usize>,
}

impl Client for Raw {
    fn post(&mut self, off: u64, len: u32) {
        let mut req = [0u8; 32];
        req[..8].copy_from_slice(&off.to_le_bytes());
        req[8..12].copy_from_slice(&len.to_le_bytes());
        self.s.write_all(&req).expect("raw write");
        self.lens.push_back(len as usize);
    }
    fn wait_one(&mut self) {
        let len = self.lens.pop_front().expect("outstanding");
        let mut h = [0u8; 24];
        self.s.read_exact(&mut h).expect("raw read");
        self.s.read_exact(&mut self.buf[..len]).expect("raw read");
    }
}

/// Raw server: per connection, read 32-byte requests, answer 24 bytes + data.
fn raw_server(handoff: bool) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    let mem: Arc<Vec<u8>> = Arc::new((0..MEM).map(|i| i as u8).collect());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            s.set_nodelay(true).expect("nodelay");
            let mem = mem.clone();
            std::thread::spawn(move || {
                let serve = move |w: &mut TcpStream, req: [u8; 32], out: &mut Vec<u8>| {
                    let off = u64::from_le_bytes(req[..8].try_into().unwrap_or_default()) as usize;
                    let len =
                        u32::from_le_bytes(req[8..12].try_into().unwrap_or_default()) as usize;
                    out.clear();
                    out.extend_from_slice(&[0u8; 24]);
                    out.extend_from_slice(&mem[off..off + len]);
                    w.write_all(out).is_ok()
                };
                if handoff {
                    let (tx, rx) = mpsc::channel::<[u8; 32]>();
                    let mut w = s.try_clone().expect("clone");
                    std::thread::spawn(move || {
                        let mut out = Vec::new();
                        while let Ok(req) = rx.recv() {
                            if !serve(&mut w, req, &mut out) {
                                break;
                            }
                        }
                    });
                    let mut req = [0u8; 32];
                    while s.read_exact(&mut req).is_ok() {
                        if tx.send(req).is_err() {
                            break;
                        }
                    }
                } else {
                    let (mut req, mut out) = ([0u8; 32], Vec::new());
                    let mut w = s.try_clone().expect("clone");
                    while s.read_exact(&mut req).is_ok() {
                        if !serve(&mut w, req, &mut out) {
                            break;
                        }
                    }
                }
            });
        }
    });
    a
}

/// Raw server as one epoll loop serving every connection (level-triggered), the other
/// threading model the responder could have used.
fn raw_epoll_server() -> std::net::SocketAddr {
    use std::collections::HashMap;
    use std::os::fd::AsRawFd;
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    let mem: Vec<u8> = (0..MEM).map(|i| i as u8).collect();
    std::thread::spawn(move || {
        // SAFETY: plain syscall; the result is checked.
        let ep = unsafe { libc::epoll_create1(0) };
        assert!(ep >= 0, "epoll_create1");
        let add = |fd: i32, token: u64| {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: token,
            };
            // SAFETY: ep and fd are open; ev is a valid epoll_event for the call.
            let r = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
            assert_eq!(r, 0, "epoll_ctl");
        };
        add(l.as_raw_fd(), u64::MAX);
        let mut conns: HashMap<u64, (TcpStream, Vec<u8>)> = HashMap::new();
        let (mut next, mut rx, mut out) = (0u64, vec![0u8; 64 << 10], Vec::new());
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 16];
        loop {
            // SAFETY: evs is a valid array of 16 epoll_events for the kernel to fill.
            let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 16, -1) };
            for ev in evs.iter().take(n.max(0) as usize) {
                let token = ev.u64;
                if token == u64::MAX {
                    if let Ok((s, _)) = l.accept() {
                        s.set_nodelay(true).expect("nodelay");
                        add(s.as_raw_fd(), next);
                        conns.insert(next, (s, Vec::new()));
                        next += 1;
                    }
                    continue;
                }
                let Some((s, pending)) = conns.get_mut(&token) else {
                    continue;
                };
                let k = match s.read(&mut rx) {
                    Ok(0) | Err(_) => {
                        conns.remove(&token);
                        continue;
                    }
                    Ok(k) => k,
                };
                pending.extend_from_slice(&rx[..k]);
                let mut at = 0;
                while pending.len() - at >= 32 {
                    let req = &pending[at..at + 32];
                    let off = u64::from_le_bytes(req[..8].try_into().unwrap_or_default()) as usize;
                    let len =
                        u32::from_le_bytes(req[8..12].try_into().unwrap_or_default()) as usize;
                    out.clear();
                    out.extend_from_slice(&[0u8; 24]);
                    out.extend_from_slice(&mem[off..off + len]);
                    if s.write_all(&out).is_err() {
                        break;
                    }
                    at += 32;
                }
                pending.drain(..at);
            }
        }
    });
    a
}

fn raw_client(a: std::net::SocketAddr) -> Raw {
    let s = TcpStream::connect(a).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    Raw {
        s,
        buf: vec![0; 4 << 20],
        lens: Default::default(),
    }
}

/// p50 and p99 of one-outstanding READs of `len`, in microseconds, for every client.
/// The clients take turns in rounds so that background load hits them alike.
fn latency(clients: &mut [&mut dyn Client], len: u32) -> Vec<(f64, f64)> {
    let span = (MEM - len as usize) as u64;
    let rounds = 10;
    let mut samples = vec![Vec::with_capacity(LAT_ITERS); clients.len()];
    for round in 0..=rounds {
        for (c, t) in clients.iter_mut().zip(samples.iter_mut()) {
            for i in 0..(LAT_ITERS / rounds) as u64 {
                let s = Instant::now();
                c.post((i * 40_961) % span, len);
                c.wait_one();
                // Round 0 warms up.
                if round > 0 {
                    t.push(s.elapsed().as_nanos() as f64 / 1000.0);
                }
            }
        }
    }
    samples
        .into_iter()
        .map(|mut t| {
            t.sort_by(|a, b| a.total_cmp(b));
            (t[t.len() / 2], t[t.len() * 99 / 100])
        })
        .collect()
}

/// Best of three throughput runs (the machine is shared; the best run is the one least
/// disturbed), in GB/s.
fn best_throughput(c: &mut dyn Client, len: u32, depth: usize) -> f64 {
    (0..3)
        .map(|_| throughput(c, len, depth))
        .fold(0.0, f64::max)
}

/// GB/s with `depth` READs of `len` kept outstanding.
fn throughput(c: &mut dyn Client, len: u32, depth: usize) -> f64 {
    let span = (MEM - len as usize) as u64;
    let mut next = 0u64;
    let mut post = |c: &mut dyn Client| {
        c.post((next * 1_048_573) % span, len);
        next += 1;
    };
    for _ in 0..depth {
        post(c);
    }
    let (start, mut done) = (Instant::now(), 0u64);
    while start.elapsed() < TPUT_TIME {
        c.wait_one();
        done += 1;
        post(c);
    }
    let secs = start.elapsed().as_secs_f64();
    for _ in 0..depth {
        c.wait_one();
    }
    done as f64 * len as f64 / secs / 1e9
}

/// A soft responder serving `MEM` bytes from `src` (at `base`) and a connection to it.
fn soft(src: Arc<dyn MemorySource>, base: u64) -> (SoftResponder, Soft) {
    let (sink, _events) = event_channel();
    let resp =
        SoftResponder::bind(&Endpoint::parse("tcp:127.0.0.1:0").expect("ep"), sink).expect("bind");
    let region = resp.register(src, base, MEM as u64).expect("register");
    let seed = [9u8; 32];
    let grant = [1u8; 16];
    let rkey = resp
        .create_key(
            &region,
            KeySpec {
                addr: base,
                len: MEM as u64,
                access: Access::REMOTE_READ,
                peer: public_key_from_seed(&seed).expect("seed"),
                grant,
                expires: SystemTime::now() + Duration::from_secs(3600),
            },
        )
        .expect("key");
    let ep = Endpoint::parse(&resp.endpoint()).expect("ep");
    let c = Connection::connect(&ep, grant, seed).expect("connect");
    (
        resp,
        Soft {
            c,
            base,
            rkey,
            out: Vec::new(),
            done: 0,
        },
    )
}

/// GB/s of the memory source alone, reading 2 MiB at a time.
fn source_rate(src: &dyn MemorySource, base: u64) -> f64 {
    let mut b = vec![0u8; 2 << 20];
    let (start, mut n) = (Instant::now(), 0u64);
    while start.elapsed() < TPUT_TIME {
        let off = (n * (2 << 20)) % (MEM as u64 - (2 << 20));
        src.read_exact_at(base + off, &mut b).expect("source read");
        n += 1;
    }
    n as f64 * b.len() as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn main() {
    // The broker's way: pread on a /proc/PID/mem fd (this process's own).
    let mem: Vec<u8> = (0..MEM).map(|i| (i * 7) as u8).collect();
    let base = mem.as_ptr() as u64;
    let proc_src: Arc<dyn MemorySource> = Arc::new(ProcMemSource::new(
        std::fs::File::open("/proc/self/mem").expect("open /proc/self/mem"),
    ));
    // The protocol alone: memory held by the responder (a memcpy per READ).
    let vec_src: Arc<dyn MemorySource> = Arc::new(VecSource::new(0x1000_0000, mem.clone()));
    let (_r1, mut soft_proc) = soft(proc_src.clone(), base);
    let (_r2, mut soft_vec) = soft(vec_src.clone(), 0x1000_0000);
    let mut raw = raw_client(raw_server(false));
    let mut hand = raw_client(raw_server(true));
    let mut epoll = raw_client(raw_epoll_server());

    println!("soft provider READ vs raw TCP request/reply, loopback TCP, same run");
    let lat = latency(
        &mut [
            &mut soft_proc,
            &mut soft_vec,
            &mut raw,
            &mut hand,
            &mut epoll,
        ],
        4096,
    );
    let [(sp50, sp99), (vp50, vp99), (rp50, rp99), (hp50, hp99), (ep50, ep99)] = lat[..] else {
        unreachable!("five clients")
    };
    println!("4 KiB latency, 1 outstanding (µs):        p50      p99");
    println!("  soft READ, /proc/PID/mem source       {sp50:7.1}  {sp99:7.1}");
    println!("  soft READ, in-memory source           {vp50:7.1}  {vp99:7.1}");
    println!("  raw TCP (served inline)               {rp50:7.1}  {rp99:7.1}");
    println!("  raw TCP (hand-off to a worker thread) {hp50:7.1}  {hp99:7.1}");
    println!("  raw TCP (one epoll loop)              {ep50:7.1}  {ep99:7.1}");
    println!(
        "  ratio soft(/proc)/raw p50             {:7.2}  (goal <= 1.30)",
        sp50 / rp50
    );
    println!(
        "  ratio soft(in-memory)/raw p50         {:7.2}",
        vp50 / rp50
    );
    println!(
        "  ratio hand-off/inline p50             {:7.2}",
        hp50 / rp50
    );
    println!(
        "  ratio epoll loop/inline p50           {:7.2}",
        ep50 / rp50
    );
    println!("throughput, best of 3 (GB/s) depth  soft/proc  soft/mem    raw  proc/raw  mem/raw");
    let (mut best_proc, mut best_vec): (f64, f64) = (0.0, 0.0);
    for len in [64u32 << 10, 2 << 20] {
        for depth in [1usize, 2, 4, 8] {
            let p = best_throughput(&mut soft_proc, len, depth);
            let v = best_throughput(&mut soft_vec, len, depth);
            let r = best_throughput(&mut raw, len, depth);
            if len == 2 << 20 {
                best_proc = best_proc.max(p);
                best_vec = best_vec.max(v);
            }
            let name = if len == 2 << 20 { "2 MiB" } else { "64 KiB" };
            println!(
                "  {name:<18} {depth:5}  {p:9.2}  {v:8.2}  {r:5.2}  {:8.2}  {:7.2}",
                p / r,
                v / r
            );
        }
    }
    println!(
        "memory source alone, 2 MiB reads: /proc/PID/mem {:.2} GB/s, in-memory {:.2} GB/s",
        source_rate(&*proc_src, base),
        source_rate(&*vec_src, 0x1000_0000)
    );
    println!(
        "best 2 MiB soft throughput: /proc/PID/mem {best_proc:.2} GB/s, in-memory {best_vec:.2} GB/s (goal >= 1.5)"
    );
    drop(mem);
}
