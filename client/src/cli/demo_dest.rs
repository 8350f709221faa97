//! `memgate __demo-dest` (hidden): the destination workload of `memgate demo` and
//! `memgate bench`. It plays the restorer: maps empty regions, creates and registers a
//! userfaultfd, hands it to the fault server with the source → destination mapping, keeps
//! its own copy of the uffd (so faults block rather than zero-fill if the fault server dies)
//! and watches the hand-over socket. Then it touches every page in the chosen order and
//! checks every byte against the pattern of the page's source address.

use crate::faultserve::stats::percentile;
use crate::handover;
use crate::mem::Mapping;
use crate::uffd::{feature, Uffd};
use crate::workload::{mismatches, order, Pattern, TargetInfo};
use anyhow::Context;
use clap::Args;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `memgate __demo-dest` options.
#[derive(Debug, Args)]
pub struct DemoDestArgs {
    /// The target's self-description (JSON, as `__demo-target` prints it).
    #[arg(long)]
    pub info: String,
    /// The fault server's hand-over socket.
    #[arg(long)]
    pub socket: PathBuf,
    /// Touch order.
    #[arg(long, value_enum, default_value = "seq")]
    pub pattern: Pattern,
    /// Create the uffd with UFFD_USER_MODE_ONLY (what an unprivileged restorer can do).
    #[arg(long)]
    pub user_mode_only: bool,
    /// Sleep this many microseconds after each page (tests: a slow toucher).
    #[arg(long, default_value_t = 0, hide = true)]
    pub touch_delay_us: u64,
    /// Touch pages (one read each) while migrating and verify every byte afterwards, so
    /// that verification does not compete with the fault server for CPU (benchmarks).
    #[arg(long, hide = true)]
    pub verify_after: bool,
    /// Tests: play a careless restorer that closes its copy of the uffd after the hand-over
    /// and ignores the status byte, so that only the fault server keeps it off zero pages.
    #[arg(long, hide = true)]
    pub careless: bool,
    /// Tests: name this pid in the hand-over instead of our own.
    #[arg(long, hide = true)]
    pub handover_pid: Option<i32>,
    /// Tests: after the hand-over, split every region's mapping in two (madvise on its
    /// second half), so that copies crossing the boundary are refused with ENOENT.
    #[arg(long, hide = true)]
    pub split_after_handover: bool,
    /// Tests: a thread discards a registered scratch mapping (outside the hand-over map)
    /// over and over, so that a REMOVE event is pending most of the time.
    #[arg(long, hide = true)]
    pub churn: bool,
}

/// Verifies one present page of mapping `m` against the pattern of its source address.
fn check_page(rep: &mut DestReport, m: &Mapping, off: usize, src: u64, seed: u64) {
    // SAFETY: `off` is a page offset inside mapping `m`, which the caller keeps alive; the
    // page has been touched, so it is present (reading it cannot block).
    let page = unsafe { std::slice::from_raw_parts(m.as_ptr().add(off), crate::PAGE) };
    rep.pages_verified += 1;
    if mismatches(page, src + off as u64, seed) > 0 {
        rep.mismatches += 1;
        if page.iter().all(|&b| b == 0) {
            rep.zero_pages += 1;
        }
        eprintln!(
            "memgate demo destination: MISMATCH at source {:#x}",
            src + off as u64
        );
    }
}

/// What the destination reports (one JSON line on stdout).
#[derive(Debug, serde::Serialize, serde::Deserialize, Default, Clone)]
pub struct DestReport {
    /// Pages mapped.
    pub pages_total: u64,
    /// Pages checked.
    pub pages_verified: u64,
    /// Pages with at least one wrong byte.
    pub mismatches: u64,
    /// Pages that read back as all zeros.
    pub zero_pages: u64,
    /// Touch latency p50 over all touches, µs.
    pub touch_p50_us: f64,
    /// Touch latency p99, µs.
    pub touch_p99_us: f64,
    /// Seconds from hand-over to the last page verified.
    pub touch_s: f64,
    /// Whether the fault server reported completion.
    pub complete: bool,
}

/// Runs the destination workload.
pub fn run(a: DemoDestArgs) -> anyhow::Result<()> {
    let info: TargetInfo = serde_json::from_str(&a.info).context("--info")?;
    let uffd = Uffd::create(
        a.user_mode_only,
        feature::EVENT_REMOVE | feature::EVENT_UNMAP | feature::EVENT_REMAP | feature::THREAD_ID,
    )
    .context("creating the userfaultfd")?;
    let mut maps = Vec::new();
    let mut map = Vec::new();
    for r in &info.regions {
        let m = Mapping::anon(r.len as usize)?;
        uffd.register_missing(m.addr(), r.len)
            .context("UFFDIO_REGISTER")?;
        map.push((r.addr, m.addr(), r.len));
        maps.push(m);
    }
    // Registered with the uffd but not handed over: only the churn thread touches it, by
    // discarding it.
    let scratch = if a.churn {
        let m = Mapping::anon(16 * crate::PAGE)?;
        uffd.register_missing(m.addr(), m.len() as u64)
            .context("UFFDIO_REGISTER scratch")?;
        Some(m)
    } else {
        None
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let sock = loop {
        match UnixStream::connect(&a.socket) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).context("connecting to the fault server"),
        }
    };
    handover::send(
        &sock,
        a.handover_pid.unwrap_or(std::process::id() as i32),
        &uffd,
        uffd.features(),
        &map,
    )?;
    let uffd = if a.careless {
        drop(uffd);
        None
    } else {
        Some(uffd)
    };
    if a.split_after_handover {
        for m in &maps {
            let half = (m.len() / 2) & !(crate::PAGE - 1);
            if half > 0 {
                // SAFETY: the range is inside mapping `m`, which lives until the end of
                // this function; MADV_NOHUGEPAGE changes only the mapping's flags.
                let rc = unsafe {
                    libc::madvise(
                        m.as_ptr().add(half).cast(),
                        m.len() - half,
                        libc::MADV_NOHUGEPAGE,
                    )
                };
                anyhow::ensure!(rc == 0, "madvise: {}", std::io::Error::last_os_error());
            }
        }
    }
    if let Some(m) = scratch {
        let (addr, len) = (m.addr() as usize, m.len());
        // Never unmapped, so the thread never discards an unrelated mapping at that address.
        std::mem::forget(m);
        std::thread::spawn(move || loop {
            // SAFETY: the scratch mapping is never unmapped (forgotten above); discarding
            // it is harmless, nothing reads it.
            unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        });
    }
    let started = Instant::now();
    // Watchdog: a status byte ends the wait; EOF or failure aborts the whole process at
    // once, while any thread blocked on a missing page stays blocked (we hold the uffd).
    let complete = Arc::new(AtomicBool::new(false));
    let done = complete.clone();
    let wsock = sock.try_clone()?;
    let careless = a.careless;
    let watchdog = std::thread::spawn(move || match handover::recv_status(&wsock) {
        Ok(Some(handover::STATUS_COMPLETE)) => done.store(true, Ordering::SeqCst),
        _ if careless => {}
        Ok(Some(_)) => {
            eprintln!("memgate demo destination: the fault server reported a failed migration; aborting before any missing page is read");
            std::process::exit(3)
        }
        _ => {
            eprintln!("memgate demo destination: the fault server vanished mid-migration; aborting (faulting threads stay blocked, no page was zero-filled)");
            std::process::exit(3)
        }
    });
    let mut watchdog = Some(watchdog);
    if a.pattern == Pattern::Idle {
        if let Some(w) = watchdog.take() {
            let _ = w.join();
        }
    }
    let mut rep = DestReport::default();
    let mut lat = Vec::new();
    for (m, r) in maps.iter().zip(&info.regions) {
        let pages = (r.len as usize) / crate::PAGE;
        rep.pages_total += pages as u64;
        for p in order(pages, a.pattern, info.seed ^ r.addr) {
            let off = p * crate::PAGE;
            let t = Instant::now();
            // SAFETY: `off` is inside mapping `m`, which lives until the end of this
            // function; a missing page is filled by the fault server before the read returns.
            let first = unsafe { std::ptr::read_volatile(m.as_ptr().add(off)) };
            lat.push(t.elapsed().as_nanos() as u64);
            std::hint::black_box(first);
            if a.touch_delay_us > 0 {
                std::thread::sleep(Duration::from_micros(a.touch_delay_us));
            }
            if !a.verify_after {
                check_page(&mut rep, m, off, r.addr, info.seed);
            }
        }
    }
    rep.touch_s = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    rep.touch_p50_us = percentile(&lat, 50.0) as f64 / 1000.0;
    rep.touch_p99_us = percentile(&lat, 99.0) as f64 / 1000.0;
    if let Some(w) = watchdog.take() {
        let _ = w.join();
    }
    rep.complete = complete.load(Ordering::SeqCst);
    if a.verify_after {
        for (m, r) in maps.iter().zip(&info.regions) {
            for off in (0..r.len as usize).step_by(crate::PAGE) {
                check_page(&mut rep, m, off, r.addr, info.seed);
            }
        }
    }
    println!("{}", serde_json::to_string(&rep)?);
    // Unregister before unmapping: an UNMAP event would wait for the fault server to read
    // it, and the fault server has finished.
    if let Some(uffd) = &uffd {
        for m in &maps {
            let _ = uffd.unregister(m.addr(), m.len() as u64);
        }
    }
    drop(uffd);
    drop(maps);
    if rep.mismatches > 0 {
        std::process::exit(1);
    }
    Ok(())
}
