//! Prefetch scheduling and failing closed for [`Engine`]: which range to READ next (right
//! after the latest fault, else the next missing run) and, on failure, which pages to
//! poison, or whether the destination must be killed instead.

use super::{
    Closed, Engine, EngineError, OnFailure, DEMAND_LINK, DISCARDED, PREFETCH, PREFETCH_SHIFT,
    PRESENT,
};
use crate::uffd::Msg;
use crate::PAGE;
use std::io;

impl Engine<'_> {
    pub(super) fn fill_prefetch(&mut self) -> Result<(), EngineError> {
        if self.cfg.no_prefetch {
            return Ok(());
        }
        let chunk_pages = (self.cfg.chunk / PAGE).max(1);
        while self.prefetch_inflight() < self.cfg.depth {
            let start = match self
                .hint
                .take()
                .and_then(|h| self.first_free_near(h, chunk_pages))
            {
                Some(s) => s,
                None => {
                    while self.cursor < self.state.len() && self.state[self.cursor] != 0 {
                        self.cursor += 1;
                    }
                    if self.cursor >= self.state.len() {
                        // A page can become wanted again behind the cursor (a copy that
                        // was interrupted): rescan once nothing is in flight.
                        if self.remaining > 0 && self.prefetch_inflight() == 0 {
                            self.cursor = 0;
                            if self.state.iter().all(|&s| s != 0) {
                                self.cursor = self.state.len();
                                return Ok(());
                            }
                            continue;
                        }
                        return Ok(());
                    }
                    self.cursor
                }
            };
            let Some((_, _, run_left)) = self.layout.src_of(start) else {
                return Ok(());
            };
            let limit = chunk_pages.min(run_left);
            let mut n = 0;
            while n < limit && start + n < self.state.len() && self.state[start + n] == 0 {
                self.state[start + n] |= PREFETCH;
                n += 1;
            }
            if n == 0 {
                return Ok(());
            }
            self.post(self.least_busy_prefetch_link(), start, n, true)?;
            // Keep reading ahead from where this chunk ends.
            if start != self.cursor {
                self.hint = Some(start + n);
            }
        }
        Ok(())
    }

    fn prefetch_inflight(&self) -> usize {
        self.links
            .iter()
            .flat_map(|l| l.inflight.keys())
            .filter(|w| *w & (1 << PREFETCH_SHIFT) != 0)
            .count()
    }

    /// The prefetch link (index 1 and up) with the fewest READs in flight, or the demand
    /// link when prefetch shares it.
    fn least_busy_prefetch_link(&self) -> usize {
        (1..self.links.len())
            .min_by_key(|&i| self.links[i].inflight.len())
            .unwrap_or(DEMAND_LINK)
    }

    fn first_free_near(&self, h: usize, window: usize) -> Option<usize> {
        (h..(h + window).min(self.state.len())).find(|&p| self.state[p] == 0)
    }

    /// Destination runs (address, pages) of every page neither present nor discarded.
    pub(super) fn missing_runs(&self) -> Vec<(u64, usize)> {
        let mut out = Vec::new();
        for d in self.layout.dst_runs() {
            let mut i = 0;
            while i < d.pages {
                if self.state[d.first + i] & (PRESENT | DISCARDED) != 0 {
                    i += 1;
                    continue;
                }
                let s = i;
                while i < d.pages && self.state[d.first + i] & (PRESENT | DISCARDED) == 0 {
                    i += 1;
                }
                out.push((d.dst + (s * PAGE) as u64, i - s));
            }
        }
        out
    }

    /// SIGKILL to the destination through its pidfd. `Ok(true)`: killed now; `Ok(false)`:
    /// it had already exited; `Err`: why it could not be killed (`None`: no pidfd).
    fn kill_destination(&self) -> Result<bool, Option<io::Error>> {
        let pidfd = self.watch.as_ref().ok_or(None)?;
        match rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::SRCH) => Ok(false),
            Err(e) => Err(Some(e.into())),
        }
    }

    /// After a failure: poison the missing pages and, where that fails, kill the
    /// destination (with [`OnFailure::Kill`]: kill first, poison if that fails), because
    /// closing the userfaultfd with pages still missing would let its next touch map a
    /// zero page.
    pub(super) fn close_failed(&mut self) -> Closed {
        let kill_first = self.cfg.on_failure == OnFailure::Kill;
        let mut kill_err = None;
        if kill_first {
            match self.kill_destination() {
                Ok(true) => return Closed::Killed { poison: None },
                Ok(false) => return Closed::DestinationExited,
                Err(e) => kill_err = e,
            }
        }
        let poison = match self.poison_outcome() {
            Ok(c) => return c,
            Err(e) => e,
        };
        if !kill_first {
            match self.kill_destination() {
                Ok(true) => {
                    return Closed::Killed {
                        poison: Some(poison),
                    }
                }
                Ok(false) => return Closed::DestinationExited,
                Err(e) => kill_err = e,
            }
        }
        Closed::Unsafe {
            poison: Some(poison),
            kill: kill_err,
        }
    }

    /// Poisons, and says what that means: pages poisoned, or the destination found gone
    /// (ESRCH: usually SIGBUS on a page poisoned a moment before), or why it failed.
    fn poison_outcome(&mut self) -> Result<Closed, io::Error> {
        match self.fail_closed() {
            Ok(n) => Ok(Closed::Poisoned(n)),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(Closed::DestinationExited),
            Err(e) => Err(e),
        }
    }

    /// After the watched pid exited: if the uffd's address space is in fact still there
    /// (6.6+ can tell: poisoning answers ESRCH for a gone mm), poison what is missing.
    pub(super) fn close_after_exit(&mut self) -> Option<Closed> {
        match self.fail_closed() {
            Ok(0) => None,
            Ok(n) => {
                tracing::error!(
                    "the watched process exited but the userfaultfd's address space lives: \
                     {n} missing pages poisoned"
                );
                Some(Closed::Poisoned(n))
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Some(Closed::DestinationExited),
            Err(_) => None,
        }
    }

    /// Poisons every page not yet present: a thread blocked on one is woken and gets
    /// SIGBUS, and so does any later access, even after this uffd is closed. Pending
    /// non-cooperative events are read in between (the kernel refuses to poison until they
    /// are), so pages the process discarded are left alone. Returns the number of pages
    /// poisoned, or the error if poisoning itself failed (EINVAL: a kernel before 6.6;
    /// ESRCH: the destination has exited).
    pub fn fail_closed(&mut self) -> Result<usize, io::Error> {
        let mut n = 0;
        let mut retries = 0;
        'again: loop {
            for (a, pages) in self.missing_runs() {
                match self.uffd.poison(a, (pages * PAGE) as u64) {
                    Ok(k) => n += k as usize,
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && retries < 10_000 => {
                        retries += 1;
                        self.read_events()?;
                        continue 'again;
                    }
                    Err(e) => return Err(e),
                }
            }
            return Ok(n);
        }
    }

    /// Reads pending uffd messages and applies the non-cooperative events; faults are
    /// dropped (the thread stays blocked until its page is poisoned, which wakes it).
    fn read_events(&mut self) -> io::Result<()> {
        while let Some(msg) = self.uffd.read_msg()? {
            if !matches!(msg, Msg::PageFault { .. }) {
                if let Err(e) = self.on_msg(msg) {
                    tracing::warn!("while failing closed: {e}");
                }
            }
        }
        Ok(())
    }
}
