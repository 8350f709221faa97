//! Sending and receiving one frame with its file descriptors on a `SOCK_SEQPACKET` socket.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

/// Most fds a receiver accepts in one packet; more are reported as truncated and closed.
pub const MAX_RECV_FDS: usize = 8;

/// One received packet.
#[derive(Debug)]
pub struct Received {
    /// Bytes of the packet actually delivered (0 with no fds: orderly shutdown).
    pub len: usize,
    /// The packet was longer than the buffer (the rest is discarded by the kernel).
    pub truncated: bool,
    /// More fds were sent than fit (the excess were closed by the kernel).
    pub fds_truncated: bool,
    /// Received fds, close-on-exec, in the order sent.
    pub fds: Vec<OwnedFd>,
}

/// Sends `frame` as one packet with `fds` in `SCM_RIGHTS`.
pub fn send_frame(
    sock: BorrowedFd<'_>,
    frame: &[u8],
    fds: &[BorrowedFd<'_>],
) -> rustix::io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_RECV_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(rustix::io::Errno::TOOMANYREFS);
    }
    let iov = [IoSlice::new(frame)];
    let sent = sendmsg(sock, &iov, &mut control, SendFlags::NOSIGNAL)?;
    if sent != frame.len() {
        return Err(rustix::io::Errno::MSGSIZE);
    }
    Ok(())
}

/// Receives one packet into `buf`. The packet's true length is reported even if it
/// did not fit (then `truncated` is set and `len` is the full length).
pub fn recv_frame(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: RecvFlags,
) -> rustix::io::Result<Received> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_RECV_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg(
        sock.as_fd(),
        &mut iov,
        &mut control,
        flags | RecvFlags::CMSG_CLOEXEC | RecvFlags::TRUNC,
    )?;
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    Ok(Received {
        len: msg.bytes,
        truncated: msg.flags.contains(ReturnFlags::TRUNC),
        fds_truncated: msg.flags.contains(ReturnFlags::CTRUNC),
        fds,
    })
}
