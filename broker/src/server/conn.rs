//! API connections: accepting (with the peer's credentials taken once, from the kernel),
//! receiving one packet with its fds, checking size and fd count, decoding, dispatching
//! and replying. Sockets are non-blocking: a client that does not read its replies is
//! disconnected instead of stalling the loop.

use std::os::fd::{AsFd, OwnedFd};

use memgate_proto::transport::{recv_frame, send_frame};
use memgate_proto::{DecodeError, Request, Response};
use rustix::event::epoll;
use rustix::net::{RecvFlags, SocketFlags};
use serde_json::json;

use super::{data, Conn, Server, TAG_CONN};

/// Most packets handled from one connection per readiness event.
const PACKETS_PER_WAKEUP: usize = 8;
use crate::grants::EndCause;

impl Server {
    pub(super) fn accept(&mut self) {
        loop {
            let fd = match rustix::net::accept_with(
                &self.listener,
                SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            ) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::AGAIN) => return,
                Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => continue,
                Err(e) => {
                    // EMFILE/ENFILE: leave the connection queued; the loop comes back.
                    tracing::warn!("accept on the API socket: {e}");
                    return;
                }
            };
            if self.conns.len() >= self.limits.max_connections {
                tracing::warn!("connection refused: {} connections open", self.conns.len());
                drop(fd);
                continue;
            }
            let Ok(cred) = rustix::net::sockopt::socket_peercred(&fd) else {
                continue;
            };
            self.next_conn += 1;
            let id = self.next_conn;
            if epoll::add(&self.ep, &fd, data(TAG_CONN, id), conn_flags(true)).is_err() {
                continue;
            }
            self.conns.insert(
                id,
                Conn {
                    fd,
                    uid: cred.uid.as_raw(),
                    gid: cred.gid.as_raw(),
                    pid: cred.pid.as_raw_pid(),
                    wait: None,
                },
            );
        }
    }

    pub(super) fn conn_ready(&mut self, id: u64, flags: epoll::EventFlags) {
        // A few packets per wake-up (pipelining clients), then back to the loop so one
        // busy connection cannot starve the others.
        for _ in 0..PACKETS_PER_WAKEUP {
            let Some(conn) = self.conns.get(&id) else {
                return;
            };
            if conn.wait.is_some() {
                // Only hang-ups are watched while a Wait is pending.
                let hangup =
                    epoll::EventFlags::HUP | epoll::EventFlags::RDHUP | epoll::EventFlags::ERR;
                if flags.intersects(hangup) {
                    self.close_conn(id);
                }
                return;
            }
            let got = match recv_frame(conn.fd.as_fd(), &mut self.buf, RecvFlags::DONTWAIT) {
                Ok(g) => g,
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return,
                Err(_) => {
                    self.close_conn(id);
                    return;
                }
            };
            if got.len == 0 && got.fds.is_empty() {
                self.close_conn(id);
                return;
            }
            let reply = self.packet(id, got);
            if let Some(r) = reply {
                self.reply(id, &r);
            }
        }
    }

    /// Handles one received packet; None when the reply is deferred (`Wait`).
    fn packet(&mut self, id: u64, got: memgate_proto::transport::Received) -> Option<Response> {
        let (uid, pid) = self.conns.get(&id).map(|c| (c.uid, c.pid))?;
        let max = self.limits.max_message;
        let refuse = |s: &mut Server, code: &str, message: String| {
            s.audit.record(
                "request_error",
                json!({"uid": uid, "pid": pid, "code": code, "message": message}),
            );
            Some(Response::error(code, message))
        };
        if got.truncated || got.len > max {
            // Every fd received with it is closed when `got` drops.
            return refuse(
                self,
                DecodeError::TooLarge { len: got.len }.code(),
                format!("message of {} bytes exceeds the limit of {max}", got.len),
            );
        }
        if got.fds_truncated {
            return refuse(
                self,
                "too_many_fds",
                format!(
                    "more than {} fds sent; all were closed",
                    memgate_proto::transport::MAX_RECV_FDS
                ),
            );
        }
        let bytes = self.buf.get(..got.len).unwrap_or_default();
        let req = match Request::decode(bytes) {
            Ok(r) => r,
            Err(e) => return refuse(self, e.code(), e.to_string()),
        };
        if !matches!(req, Request::Export(_)) && !got.fds.is_empty() {
            return refuse(
                self,
                "unexpected_fds",
                format!(
                    "a {:?} request carries no fds; {} were closed",
                    req.kind(),
                    got.fds.len()
                ),
            );
        }
        match req {
            Request::Export(e) => Some(self.export(id, &e, got.fds)),
            Request::Revoke { grant } => Some(self.revoke(id, grant)),
            Request::List => Some(self.list(id)),
            Request::Status => Some(self.status(id)),
            Request::Wait(w) => self.wait(id, w),
        }
    }

    /// Sends `resp` to connection `id`; a connection that cannot take it is closed.
    pub(super) fn reply(&mut self, id: u64, resp: &Response) {
        let frame = match resp.encode() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("encoding a reply failed: {e}");
                match Response::error("internal", "reply could not be encoded").encode() {
                    Ok(f) => f,
                    Err(_) => return,
                }
            }
        };
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        if let Err(e) = send_frame(conn.fd.as_fd(), &frame, &[]) {
            tracing::debug!("reply to connection {id} failed ({e}); closing it");
            self.close_conn(id);
        }
    }

    /// Changes which events a connection is watched for.
    pub(super) fn watch_conn(&self, id: u64, fd: &OwnedFd, readable: bool) {
        let _ = epoll::modify(&self.ep, fd, data(TAG_CONN, id), conn_flags(readable));
    }

    /// Closes a connection: ends its revoke-on-disconnect grants, drops its waits.
    pub(super) fn close_conn(&mut self, id: u64) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        let _ = epoll::delete(&self.ep, &conn.fd);
        if let Some((grant, _)) = conn.wait {
            if let Some(w) = self.waiters.get_mut(&grant) {
                w.retain(|c| *c != id);
                if w.is_empty() {
                    self.waiters.remove(&grant);
                }
            }
        }
        for g in self.registry.bound_to_conn(id) {
            self.end_grant(&g, EndCause::Disconnect, None);
        }
    }
}

fn conn_flags(readable: bool) -> epoll::EventFlags {
    let base = epoll::EventFlags::RDHUP;
    if readable {
        base | epoll::EventFlags::IN
    } else {
        base
    }
}
