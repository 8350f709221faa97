//! The fault server's connections: the demand link (single-page READs, never queued behind
//! a chunk, bounded so a slow source cannot make it overrun the fabric's limit) and the
//! prefetch links (each received on its own thread), with posting, polling and reconnecting
//! (outstanding READs are re-posted on the new connection).

use super::{
    uerr, Engine, EngineError, DEMAND, DEMAND_LINK, DEMAND_MAX_INFLIGHT, DISCARDED, LINK_SHIFT,
    PREFETCH_SHIFT, PRESENT,
};
use crate::transport::{Connector, Transport, TransportError};
use crate::PAGE;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy)]
pub(super) struct Posted {
    pub(super) page: usize,
    pub(super) pages: usize,
    pub(super) src: u64,
    pub(super) len: u32,
    pub(super) rkey: u32,
}

pub(super) struct Link {
    pub(super) conn: Option<Box<dyn Transport>>,
    pub(super) inflight: HashMap<u64, Posted>,
}

impl Link {
    pub(super) fn pollfd(&self) -> libc::pollfd {
        let (fd, out) = self
            .conn
            .as_ref()
            .map_or((-1, false), |c| (c.raw_fd(), c.wants_write()));
        let events = libc::POLLIN | if out { libc::POLLOUT } else { 0 };
        libc::pollfd {
            fd,
            events,
            revents: 0,
        }
    }
}

/// A prefetch connection: its replies are received on a thread of its own.
pub(super) fn connect_prefetch(c: &dyn Connector) -> Result<Box<dyn Transport>, TransportError> {
    Ok(Box::new(crate::transport::threaded::spawn(c.connect()?)?))
}

impl Engine<'_> {
    /// READs on the demand link that serve faults (not prefetch sharing that link).
    pub(super) fn demand_inflight(&self) -> usize {
        self.links[DEMAND_LINK]
            .inflight
            .keys()
            .filter(|w| *w & (1 << PREFETCH_SHIFT) == 0)
            .count()
    }

    pub(super) fn post(
        &mut self,
        link: usize,
        page: usize,
        pages: usize,
        prefetch: bool,
    ) -> Result<(), EngineError> {
        let (src, rkey, _) = self
            .layout
            .src_of(page)
            .ok_or_else(|| EngineError::BadCompletion(format!("page {page} out of range")))?;
        let posted = Posted {
            page,
            pages,
            src,
            len: (pages * PAGE) as u32,
            rkey,
        };
        let wr_id =
            page as u64 | (link as u64) << LINK_SHIFT | u64::from(prefetch) << PREFETCH_SHIFT;
        let l = &mut self.links[link];
        l.inflight.insert(wr_id, posted);
        let res = match l.conn.as_mut() {
            Some(c) => c.post_read(wr_id, src, posted.len, rkey),
            None => Err(TransportError::Lost("not connected".into())),
        };
        if let Err(e) = res {
            self.reconnect(link, e)?;
        }
        Ok(())
    }

    /// Posts deferred faults while the demand link has room. A page that became present or
    /// was discarded in the meantime needs no READ: its thread is woken (and, if it was
    /// discarded, faults again and gets the zero page it asked for).
    pub(super) fn post_deferred(&mut self) -> Result<(), EngineError> {
        while self.demand_inflight() < DEMAND_MAX_INFLIGHT {
            let Some(p) = self.deferred.pop_front() else {
                break;
            };
            if self.state[p] & (PRESENT | DISCARDED) != 0 {
                self.state[p] &= !DEMAND;
                if let Some((a, _)) = self.layout.dst_of(p) {
                    self.uffd.wake(a, PAGE as u64).map_err(uerr("wake"))?;
                }
                continue;
            }
            self.post(DEMAND_LINK, p, 1, false)?;
        }
        Ok(())
    }

    pub(super) fn reconnect(
        &mut self,
        link: usize,
        why: TransportError,
    ) -> Result<(), EngineError> {
        let mut delay = Duration::from_millis(20);
        let mut last = why;
        for _ in 0..self.cfg.reconnect_attempts {
            if self.cfg.expires.is_some_and(|t| SystemTime::now() >= t) {
                break;
            }
            tracing::warn!(
                "connection to {} lost ({last}); reconnecting",
                self.connector.endpoint()
            );
            std::thread::sleep(delay);
            delay *= 2;
            let conn = if link == DEMAND_LINK {
                self.connector.connect()
            } else {
                connect_prefetch(self.connector)
            };
            match conn {
                Ok(mut conn) => {
                    let link = &mut self.links[link];
                    let mut ok = true;
                    for (wr_id, p) in &link.inflight {
                        if let Err(e) = conn.post_read(*wr_id, p.src, p.len, p.rkey) {
                            last = e;
                            ok = false;
                            break;
                        }
                    }
                    if ok {
                        link.conn = Some(conn);
                        self.c.reconnects += 1;
                        return Ok(());
                    }
                }
                Err(e) => last = e,
            }
        }
        Err(EngineError::Transport(last))
    }

    /// While the demand link is idle, posts a one-page READ every [`super::PROBE_IDLE`] so
    /// that a revoked or expired grant fails the run (closed) instead of going unnoticed
    /// until the next fault. Its completion is dropped; a failure is an ordinary READ error.
    pub(super) fn probe_if_idle(&mut self) -> Result<(), EngineError> {
        if self.remaining == 0
            || !self.links[DEMAND_LINK].inflight.is_empty()
            || !self.deferred.is_empty()
            || self.last_probe.elapsed() < super::PROBE_IDLE
        {
            return Ok(());
        }
        self.last_probe = std::time::Instant::now();
        let Some((src, rkey, _)) = self.layout.src_of(0) else {
            return Ok(());
        };
        let posted = Posted {
            page: usize::MAX,
            pages: 1,
            src,
            len: PAGE as u32,
            rkey,
        };
        let l = &mut self.links[DEMAND_LINK];
        l.inflight.insert(super::PROBE_WR, posted);
        let res = match l.conn.as_mut() {
            Some(c) => c.post_read(super::PROBE_WR, src, posted.len, rkey),
            None => Err(TransportError::Lost("not connected".into())),
        };
        if let Err(e) = res {
            self.reconnect(DEMAND_LINK, e)?;
        }
        Ok(())
    }

    pub(super) fn pump(&mut self, link: usize) -> Result<(), EngineError> {
        let mut comps = std::mem::take(&mut self.completions);
        comps.clear();
        let res = match self.links[link].conn.as_mut() {
            Some(c) => c.poll(&mut comps),
            None => Ok(()),
        };
        for comp in comps.drain(..) {
            self.on_completion(comp)?;
        }
        self.completions = comps;
        if let Err(e) = res {
            self.links[link].conn = None;
            self.reconnect(link, e)?;
        }
        Ok(())
    }
}
