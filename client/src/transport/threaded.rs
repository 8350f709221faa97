//! A [`Transport`] whose socket work runs on a thread of its own. The fault server's loop
//! posts READs and collects completions through channels and polls one eventfd; the worker
//! thread writes the requests and reads the (large) replies off the socket. Used for the
//! prefetch connections: receiving a 1 MiB reply is a copy out of the socket that would
//! otherwise sit on the same thread as `UFFDIO_COPY`, so with the two split the receive of
//! one chunk overlaps the copy of the previous one. Demand READs never go through here (a
//! thread hand-off costs tens of microseconds on this kind of machine).

use super::{Completion, Transport, TransportError};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

/// How long the worker sleeps in poll(2) at most (it also wakes on every new request).
const WORKER_POLL_MS: i32 = 100;

struct Req {
    wr_id: u64,
    addr: u64,
    len: u32,
    rkey: u32,
}

enum Up {
    Done(Completion),
    Failed(TransportError),
}

/// An eventfd used as a level-triggered "something is queued" flag.
struct Event(OwnedFd);

impl Event {
    fn new() -> io::Result<Event> {
        // SAFETY: plain syscall; on success the fd is new and owned by nobody else.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned only here.
        Ok(Event(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd; a full counter (EAGAIN)
        // still leaves it readable, which is all that matters.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our non-blocking eventfd.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// The fault-server side of a connection served by a worker thread.
pub struct Threaded {
    to_worker: Option<Sender<Req>>,
    wake_worker: Arc<Event>,
    from_worker: Receiver<Up>,
    ready: Arc<Event>,
    worker: Option<JoinHandle<Box<dyn Transport>>>,
    failed: bool,
}

/// Moves `conn` onto a new worker thread.
pub fn spawn(conn: Box<dyn Transport>) -> Result<Threaded, TransportError> {
    let ev = |e: io::Error| TransportError::Lost(format!("eventfd: {e}"));
    let wake_worker = Arc::new(Event::new().map_err(ev)?);
    let ready = Arc::new(Event::new().map_err(ev)?);
    let (to_worker, reqs) = channel();
    let (up, from_worker) = channel();
    let (w, r) = (wake_worker.clone(), ready.clone());
    let worker = std::thread::Builder::new()
        .name("memgate-prefetch-rx".into())
        .spawn(move || work(conn, reqs, &w, up, &r))
        .map_err(|e| TransportError::Lost(format!("spawning the receive thread: {e}")))?;
    Ok(Threaded {
        to_worker: Some(to_worker),
        wake_worker,
        from_worker,
        ready,
        worker: Some(worker),
        failed: false,
    })
}

fn work(
    mut conn: Box<dyn Transport>,
    reqs: Receiver<Req>,
    wake: &Event,
    up: Sender<Up>,
    ready: &Event,
) -> Box<dyn Transport> {
    let mut comps = Vec::new();
    loop {
        wake.clear();
        loop {
            match reqs.try_recv() {
                Ok(r) => {
                    if let Err(e) = conn.post_read(r.wr_id, r.addr, r.len, r.rkey) {
                        let _ = up.send(Up::Failed(e));
                        ready.signal();
                        return conn;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return conn,
            }
        }
        let res = conn.poll(&mut comps);
        let any = !comps.is_empty();
        for c in comps.drain(..) {
            if up.send(Up::Done(c)).is_err() {
                return conn;
            }
        }
        if let Err(e) = res {
            let _ = up.send(Up::Failed(e));
            ready.signal();
            return conn;
        }
        if any {
            ready.signal();
            // More may already be in the socket: poll again before sleeping.
            continue;
        }
        let mut fds = [
            libc::pollfd {
                fd: conn.raw_fd(),
                events: libc::POLLIN | if conn.wants_write() { libc::POLLOUT } else { 0 },
                revents: 0,
            },
            libc::pollfd {
                fd: wake.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of 2 pollfds for the duration of the call.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, WORKER_POLL_MS) };
    }
}

impl Threaded {
    fn stop(&mut self) {
        self.to_worker = None;
        self.wake_worker.signal();
        if let Some(w) = self.worker.take() {
            // The worker returns the connection; dropping it here closes the socket.
            let _ = w.join();
        }
    }
}

impl Drop for Threaded {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Transport for Threaded {
    fn post_read(
        &mut self,
        wr_id: u64,
        remote_addr: u64,
        len: u32,
        rkey: u32,
    ) -> Result<(), TransportError> {
        let sent = self.to_worker.as_ref().is_some_and(|t| {
            t.send(Req {
                wr_id,
                addr: remote_addr,
                len,
                rkey,
            })
            .is_ok()
        });
        if !sent || self.failed {
            return Err(TransportError::Lost("receive thread stopped".into()));
        }
        self.wake_worker.signal();
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> Result<(), TransportError> {
        self.ready.clear();
        loop {
            match self.from_worker.try_recv() {
                Ok(Up::Done(c)) => out.push(c),
                Ok(Up::Failed(e)) => {
                    self.failed = true;
                    return Err(e);
                }
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => {
                    self.failed = true;
                    return Err(TransportError::Lost("receive thread ended".into()));
                }
            }
        }
    }

    fn raw_fd(&self) -> RawFd {
        self.ready.0.as_raw_fd()
    }

    fn commit(&mut self) -> Result<(), TransportError> {
        // COMMIT is sent on the demand connection, never through a worker.
        Err(TransportError::Commit(
            "COMMIT is not sent on a prefetch connection".into(),
        ))
    }
}
