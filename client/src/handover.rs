//! Handing a userfaultfd from a restorer to the fault server over a Unix stream socket, the
//! way CRIU's restore hands each task's uffd to its lazy-pages daemon: the restorer (which
//! may be privileged, so that the uffd handles kernel-mode faults too) creates the uffd,
//! negotiates the API, registers the ranges and sends the fd with SCM_RIGHTS; the fault
//! server needs no privilege at all.
//!
//! Wire format (little endian), one message from the restorer:
//! `"MGUF" u32 | version u16 = 1 | 0 u16 | pid i32 | features u64 | n u32 | n × (src u64,
//! dst u64, len u64)`, with the uffd attached to the first byte. `n = 0` means "use the
//! mapping given to the fault server" (identity by default). When the fault server is done it
//! writes one status byte back: [`STATUS_COMPLETE`], [`STATUS_FAILED`] or [`STATUS_UNSAFE`].
//! A restorer that keeps its own copy of the uffd and sees EOF without a status knows the
//! fault server died; like [`STATUS_UNSAFE`], that means it must stop the destination
//! before it closes its copy.

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

const MAGIC: u32 = u32::from_le_bytes(*b"MGUF");
const HDR: usize = 24;
const MAX_ENTRIES: u32 = 1 << 16;

/// Every page was delivered and COMMIT acknowledged.
pub const STATUS_COMPLETE: u8 = 0;
/// The migration failed; the missing pages were poisoned (access raises SIGBUS) or the
/// destination was killed: it cannot read a zero page.
pub const STATUS_FAILED: u8 = 1;
/// The migration failed and the fault server could neither poison the missing pages (a
/// kernel before 6.6) nor kill the destination: the restorer must stop it now, since once
/// the last copy of the uffd is closed its missing pages read as zeros.
pub const STATUS_UNSAFE: u8 = 2;

/// What a restorer hands over.
#[derive(Debug)]
pub struct Handover {
    /// The process whose address space the uffd belongs to.
    pub pid: i32,
    /// The userfaultfd.
    pub uffd: OwnedFd,
    /// Features the restorer negotiated.
    pub features: u64,
    /// Source → destination mapping `(src, dst, len)`; empty = decided by the fault server.
    pub map: Vec<(u64, u64, u64)>,
}

/// Hand-over errors.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// Socket I/O failed.
    #[error("hand-over socket: {0}")]
    Io(#[from] io::Error),
    /// The message is not a hand-over message.
    #[error("bad hand-over message: {0}")]
    Bad(&'static str),
}

/// Sends a uffd and its mapping.
pub fn send(
    sock: &UnixStream,
    pid: i32,
    uffd: impl AsFd,
    features: u64,
    map: &[(u64, u64, u64)],
) -> Result<(), HandoverError> {
    let mut msg = Vec::with_capacity(HDR + map.len() * 24);
    msg.extend_from_slice(&MAGIC.to_le_bytes());
    msg.extend_from_slice(&1u16.to_le_bytes());
    msg.extend_from_slice(&0u16.to_le_bytes());
    msg.extend_from_slice(&pid.to_le_bytes());
    msg.extend_from_slice(&features.to_le_bytes());
    msg.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (s, d, l) in map {
        msg.extend_from_slice(&s.to_le_bytes());
        msg.extend_from_slice(&d.to_le_bytes());
        msg.extend_from_slice(&l.to_le_bytes());
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    let fds = [uffd.as_fd()];
    if !anc.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(HandoverError::Bad("control buffer too small"));
    }
    let n = sendmsg(sock, &[IoSlice::new(&msg)], &mut anc, SendFlags::NOSIGNAL)
        .map_err(io::Error::from)?;
    (&*sock).write_all(&msg[n..])?;
    Ok(())
}

/// Receives one hand-over message.
pub fn recv(sock: &UnixStream) -> Result<Handover, HandoverError> {
    let mut hdr = [0u8; HDR];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let r = recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut hdr)],
        &mut anc,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut uffd = None;
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for fd in fds {
                if uffd.is_none() {
                    uffd = Some(fd);
                }
            }
        }
    }
    if r.bytes == 0 {
        return Err(HandoverError::Bad("connection closed before the hand-over"));
    }
    (&*sock).read_exact(&mut hdr[r.bytes..])?;
    let u32at = |o: usize| u32::from_le_bytes([hdr[o], hdr[o + 1], hdr[o + 2], hdr[o + 3]]);
    if u32at(0) != MAGIC {
        return Err(HandoverError::Bad("wrong magic"));
    }
    if hdr[4] != 1 || hdr[5] != 0 {
        return Err(HandoverError::Bad("unsupported version"));
    }
    let pid = u32at(8) as i32;
    let features = u64::from_le_bytes(hdr[12..20].try_into().unwrap_or([0; 8]));
    let n = u32at(20);
    if n > MAX_ENTRIES {
        return Err(HandoverError::Bad("too many mapping entries"));
    }
    let mut body = vec![0u8; n as usize * 24];
    (&*sock).read_exact(&mut body)?;
    let map = body
        .chunks_exact(24)
        .map(|c| {
            let u = |o: usize| u64::from_le_bytes(c[o..o + 8].try_into().unwrap_or([0; 8]));
            (u(0), u(8), u(16))
        })
        .collect();
    let uffd = uffd.ok_or(HandoverError::Bad("no file descriptor attached"))?;
    Ok(Handover {
        pid,
        uffd,
        features,
        map,
    })
}

/// Writes the final status byte.
pub fn send_status(sock: &UnixStream, status: u8) -> io::Result<()> {
    (&*sock).write_all(&[status])
}

/// Waits for the final status byte; `None` when the fault server closed without one.
pub fn recv_status(sock: &UnixStream) -> io::Result<Option<u8>> {
    let mut b = [0u8; 1];
    match (&*sock).read(&mut b)? {
        0 => Ok(None),
        _ => Ok(Some(b[0])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_fd_and_mapping() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, _w) = rustix::pipe::pipe().unwrap();
        send(&a, 1234, &r, 0x48, &[(0x1000, 0x2000, 0x3000)]).unwrap();
        let h = recv(&b).unwrap();
        assert_eq!(h.pid, 1234);
        assert_eq!(h.features, 0x48);
        assert_eq!(h.map, vec![(0x1000, 0x2000, 0x3000)]);
        send_status(&b, STATUS_COMPLETE).unwrap();
        assert_eq!(recv_status(&a).unwrap(), Some(STATUS_COMPLETE));
        drop(b);
        assert_eq!(recv_status(&a).unwrap(), None);
    }

    #[test]
    fn rejects_garbage() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&[0u8; 24]).unwrap();
        assert!(matches!(recv(&b), Err(HandoverError::Bad(_))));
    }
}
