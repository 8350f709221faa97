//! The baseline transport: plain TCP request/reply, no authentication, no keys. A request is
//! 24 bytes `{wr_id u64, addr u64, len u32, rkey u32}` (little endian); a reply is
//! `{wr_id u64, status u32, len u32}` followed by `len` bytes, sent in one write. Used by
//! `memgate bench` as the "what does a bare uffd + TCP page server cost" reference, and by
//! tests that exercise the fault server without a broker. Never for real migrations.

use super::{Completion, Connector, ReadFailure, Transport, TransportError};
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

const REQ: usize = 24;
const HDR: usize = 16;
const MAX_LEN: u32 = 8 << 20;

/// A connected baseline client.
#[derive(Debug)]
pub struct RawTcp {
    sock: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl RawTcp {
    /// Connects to a [`serve`] endpoint.
    pub fn connect(addr: SocketAddr) -> Result<RawTcp, TransportError> {
        let err = |e: io::Error| TransportError::Connect {
            endpoint: addr.to_string(),
            reason: e.to_string(),
        };
        let sock = TcpStream::connect(addr).map_err(err)?;
        sock.set_nodelay(true).map_err(err)?;
        sock.set_nonblocking(true).map_err(err)?;
        Ok(RawTcp {
            sock,
            buf: vec![0; MAX_LEN as usize + HDR + (1 << 20)],
            start: 0,
            end: 0,
        })
    }

    /// Blocking single request/reply (the baseline fault path): returns the data.
    pub fn read_blocking(
        &mut self,
        addr: u64,
        len: u32,
        out: &mut [u8],
    ) -> Result<(), TransportError> {
        self.sock
            .set_nonblocking(false)
            .map_err(|e| TransportError::Lost(e.to_string()))?;
        let mut req = [0u8; REQ];
        req[8..16].copy_from_slice(&addr.to_le_bytes());
        req[16..20].copy_from_slice(&len.to_le_bytes());
        let lost = |e: io::Error| TransportError::Lost(e.to_string());
        self.sock.write_all(&req).map_err(lost)?;
        let mut hdr = [0u8; HDR];
        self.sock.read_exact(&mut hdr).map_err(lost)?;
        let status = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
        if status != 0 {
            return Err(TransportError::Protocol(format!(
                "read failed, status {status}"
            )));
        }
        self.sock
            .read_exact(&mut out[..len as usize])
            .map_err(lost)?;
        Ok(())
    }
}

impl Transport for RawTcp {
    fn post_read(
        &mut self,
        wr_id: u64,
        remote_addr: u64,
        len: u32,
        rkey: u32,
    ) -> Result<(), TransportError> {
        let mut req = [0u8; REQ];
        req[0..8].copy_from_slice(&wr_id.to_le_bytes());
        req[8..16].copy_from_slice(&remote_addr.to_le_bytes());
        req[16..20].copy_from_slice(&len.to_le_bytes());
        req[20..24].copy_from_slice(&rkey.to_le_bytes());
        let mut off = 0;
        while off < REQ {
            match self.sock.write(&req[off..]) {
                Ok(0) => return Err(TransportError::Lost("peer closed".into())),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut pfd = libc::pollfd {
                        fd: self.sock.as_raw_fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd, count 1.
                    unsafe { libc::poll(&mut pfd, 1, 100) };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TransportError::Lost(e.to_string())),
            }
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> Result<(), TransportError> {
        loop {
            // Parse what is buffered.
            loop {
                let avail = &self.buf[self.start..self.end];
                if avail.len() < HDR {
                    break;
                }
                let wr_id = u64::from_le_bytes(avail[0..8].try_into().unwrap_or([0; 8]));
                let status = u32::from_le_bytes(avail[8..12].try_into().unwrap_or([0; 4]));
                let len = u32::from_le_bytes(avail[12..16].try_into().unwrap_or([0; 4]));
                if len > MAX_LEN {
                    return Err(TransportError::Protocol(format!("reply of {len} bytes")));
                }
                if avail.len() < HDR + len as usize {
                    break;
                }
                let result = match status {
                    0 => Ok(Box::new(avail[HDR..HDR + len as usize].to_vec()) as super::Payload),
                    1 => Err(ReadFailure::RemoteAccess),
                    _ => Err(ReadFailure::RemoteOperation),
                };
                out.push(Completion { wr_id, result });
                self.start += HDR + len as usize;
            }
            // Compact, then read into the fixed buffer (allocated once: no per-call zeroing).
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.buf.len() - self.end < (1 << 20) {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            match self.sock.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(TransportError::Lost("peer closed the connection".into())),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TransportError::Lost(e.to_string())),
            }
        }
    }

    fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn commit(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
}

/// Connects [`RawTcp`] clients to one address.
#[derive(Debug, Clone)]
pub struct RawConnector(pub SocketAddr);

impl Connector for RawConnector {
    fn connect(&self) -> Result<Box<dyn Transport>, TransportError> {
        Ok(Box::new(RawTcp::connect(self.0)?))
    }
    fn endpoint(&self) -> String {
        self.0.to_string()
    }
}

/// Serves READs from `mem` (typically `/proc/PID/mem`) on `listener`, one thread per
/// connection, until the listener fails. `[lo, hi)` bounds what may be read.
pub fn serve(listener: TcpListener, mem: Arc<std::fs::File>, lo: u64, hi: u64) {
    for conn in listener.incoming() {
        let Ok(mut sock) = conn else { return };
        let mem = mem.clone();
        std::thread::spawn(move || {
            let _ = sock.set_nodelay(true);
            let mut req = [0u8; REQ];
            let mut data = Vec::new();
            while sock.read_exact(&mut req).is_ok() {
                let wr_id = &req[0..8];
                let addr = u64::from_le_bytes(req[8..16].try_into().unwrap_or([0; 8]));
                let len = u32::from_le_bytes(req[16..20].try_into().unwrap_or([0; 4]));
                let mut hdr = [0u8; HDR];
                hdr[0..8].copy_from_slice(wr_id);
                let in_range =
                    len <= MAX_LEN && addr >= lo && addr.saturating_add(len as u64) <= hi;
                data.resize(len as usize, 0);
                let status: u32 = if !in_range {
                    1
                } else if mem.read_exact_at(&mut data, addr).is_ok() {
                    0
                } else {
                    2
                };
                let body: &[u8] = if status == 0 { &data } else { &[] };
                hdr[8..12].copy_from_slice(&status.to_le_bytes());
                hdr[12..16].copy_from_slice(&(body.len() as u32).to_le_bytes());
                if write_all_vectored(&mut sock, &hdr, body).is_err() {
                    return;
                }
            }
        });
    }
}

fn write_all_vectored(sock: &mut TcpStream, hdr: &[u8], body: &[u8]) -> io::Result<()> {
    let total = hdr.len() + body.len();
    let mut done = 0;
    while done < total {
        let n = if done < hdr.len() {
            sock.write_vectored(&[IoSlice::new(&hdr[done..]), IoSlice::new(body)])?
        } else {
            sock.write(&body[done - hdr.len()..])?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    Ok(())
}
