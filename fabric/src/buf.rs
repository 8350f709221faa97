//! Completion data buffers, recycled through a per-connection pool so the hot path does
//! not allocate: a [`Buf`] goes back to its pool when dropped.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

/// Bytes the pool may keep cached, per connection.
const POOL_BYTES: usize = 32 << 20;

#[derive(Debug, Default)]
pub(crate) struct Pool {
    free: Mutex<(Vec<Vec<u8>>, usize)>,
}

impl Pool {
    pub(crate) fn new() -> Arc<Pool> {
        Arc::new(Pool::default())
    }

    /// A buffer of exactly `len` readable bytes (contents unspecified until filled).
    /// Buffers are sized in powers of two (at least 4 KiB) and the smallest cached one
    /// that fits is reused, so a warm connection stops allocating.
    pub(crate) fn take(self: &Arc<Pool>, len: usize) -> Buf {
        let mut v = {
            let mut g = self.free.lock().unwrap_or_else(|e| e.into_inner());
            let best =
                g.0.iter()
                    .enumerate()
                    .filter(|(_, b)| b.len() >= len)
                    .min_by_key(|(_, b)| b.len())
                    .map(|(i, _)| i);
            match best.or(g.0.len().checked_sub(1)) {
                Some(i) => {
                    let b = g.0.swap_remove(i);
                    g.1 -= b.len();
                    b
                }
                None => Vec::new(),
            }
        };
        if v.len() < len {
            // Grow once to the size class; the zero-fill is paid only then.
            v.resize(len.max(4096).next_power_of_two(), 0);
        }
        Buf {
            data: v,
            len,
            pool: Some(self.clone()),
        }
    }

    fn give(&self, v: Vec<u8>) {
        if v.is_empty() {
            return;
        }
        let mut g = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if g.1 + v.len() <= POOL_BYTES {
            g.1 += v.len();
            g.0.push(v);
        }
    }
}

/// The bytes of one completion. Derefs to `[u8]`; returned to its connection's pool on
/// drop. Empty for anything but a successful READ.
#[derive(Debug)]
pub struct Buf {
    data: Vec<u8>,
    len: usize,
    pool: Option<Arc<Pool>>,
}

impl Buf {
    /// An empty buffer (no allocation).
    pub(crate) fn empty() -> Buf {
        Buf {
            data: Vec::new(),
            len: 0,
            pool: None,
        }
    }

    /// Writable view of all `len` bytes, for the provider to fill.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data[..self.len]
    }
}

impl Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl AsRef<[u8]> for Buf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(p) = self.pool.take() {
            p.give(std::mem::take(&mut self.data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_recycled() {
        let pool = Pool::new();
        let b = pool.take(4096);
        let ptr = b.as_ptr();
        assert_eq!(b.len(), 4096);
        drop(b);
        let b2 = pool.take(100);
        assert_eq!(b2.as_ptr(), ptr, "the cached buffer is reused");
        assert_eq!(b2.len(), 100);
    }
}
