//! A small blocking client for the broker socket.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::net::{
    connect, socket_with, AddressFamily, RecvFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use thiserror::Error;

use crate::frame::{DecodeError, EncodeError, MAX_MESSAGE};
use crate::message::{Request, Response};
use crate::transport::{recv_frame, send_frame};

/// What went wrong talking to the broker.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Creating or connecting the socket failed.
    #[error("connecting to broker socket {path}: {source}")]
    Connect {
        /// Socket path.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// Sending or receiving failed.
    #[error("broker socket I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The broker closed the connection without answering.
    #[error("broker closed the connection")]
    Closed,
    /// The request could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The reply could not be decoded.
    #[error("bad reply from broker: {0}")]
    Decode(#[from] DecodeError),
}

/// A connection to `memgated`.
#[derive(Debug)]
pub struct BrokerClient {
    sock: OwnedFd,
    buf: Vec<u8>,
}

impl BrokerClient {
    /// Connects to the broker's socket at `path`.
    pub fn connect(path: impl AsRef<Path>) -> Result<BrokerClient, ClientError> {
        let path = path.as_ref();
        let err = |e: rustix::io::Errno| ClientError::Connect {
            path: path.display().to_string(),
            source: e.into(),
        };
        let sock = socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(err)?;
        let addr = SocketAddrUnix::new(path).map_err(err)?;
        connect(&sock, &addr).map_err(err)?;
        Ok(BrokerClient::from_fd(sock))
    }

    /// Wraps an already connected `SOCK_SEQPACKET` socket.
    pub fn from_fd(sock: OwnedFd) -> BrokerClient {
        BrokerClient {
            sock,
            buf: vec![0u8; MAX_MESSAGE],
        }
    }

    /// Sets a receive timeout (None = block forever).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        rustix::net::sockopt::set_socket_timeout(
            &self.sock,
            rustix::net::sockopt::Timeout::Recv,
            timeout,
        )
        .map_err(std::io::Error::from)?;
        Ok(())
    }

    /// The underlying socket.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Sends `req` with `fds` and waits for the reply.
    pub fn call(&mut self, req: &Request, fds: &[BorrowedFd<'_>]) -> Result<Response, ClientError> {
        let frame = req.encode()?;
        self.call_raw(&frame, fds)
    }

    /// Sends arbitrary bytes as one packet and decodes the reply (for tests and tools).
    pub fn call_raw(
        &mut self,
        frame: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<Response, ClientError> {
        send_frame(self.sock.as_fd(), frame, fds).map_err(std::io::Error::from)?;
        self.recv()
    }

    /// Receives and decodes one reply.
    pub fn recv(&mut self) -> Result<Response, ClientError> {
        let got = recv_frame(self.sock.as_fd(), &mut self.buf, RecvFlags::empty())
            .map_err(std::io::Error::from)?;
        if got.len == 0 {
            return Err(ClientError::Closed);
        }
        if got.truncated {
            return Err(DecodeError::TooLarge { len: got.len }.into());
        }
        let bytes = self.buf.get(..got.len).unwrap_or_default();
        Ok(Response::decode(bytes)?)
    }
}
