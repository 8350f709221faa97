//! [`Transport`] over the memgate fabric initiator: connections authenticate with the
//! grant's peer key and every READ goes through the grant's restricted keys.

use super::{Completion, Connector, Payload, ReadFailure, Transport, TransportError};
use memgate_fabric::{Connection, Endpoint, WcStatus};
use std::os::fd::{AsRawFd, RawFd};

/// One fabric connection bound to a grant.
pub struct FabricTransport {
    conn: Connection,
    grant: [u8; 16],
    buf: Vec<memgate_fabric::Completion>,
}

impl Transport for FabricTransport {
    fn post_read(
        &mut self,
        wr_id: u64,
        remote_addr: u64,
        len: u32,
        rkey: u32,
    ) -> Result<(), TransportError> {
        self.conn
            .post_read(wr_id, remote_addr, len, rkey)
            .map_err(|e| TransportError::Lost(e.to_string()))
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> Result<(), TransportError> {
        self.buf.clear();
        let res = self.conn.poll_completions(&mut self.buf);
        for c in self.buf.drain(..) {
            let result = match c.status {
                WcStatus::Success => Ok(Box::new(c.data) as Payload),
                WcStatus::RemoteAccessError => Err(ReadFailure::RemoteAccess),
                WcStatus::RemoteOperationError => Err(ReadFailure::RemoteOperation),
                WcStatus::Flushed => Err(ReadFailure::Flushed),
            };
            out.push(Completion {
                wr_id: c.wr_id,
                result,
            });
        }
        res.map(|_| ())
            .map_err(|e| TransportError::Lost(e.to_string()))
    }

    fn raw_fd(&self) -> RawFd {
        self.conn.as_raw_fd()
    }

    fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    fn commit(&mut self) -> Result<(), TransportError> {
        self.conn
            .commit(self.grant)
            .map_err(|e| TransportError::Commit(e.to_string()))
    }
}

/// Opens fabric connections for one grant with one peer key.
pub struct FabricConnector {
    endpoint: Endpoint,
    text: String,
    grant: [u8; 16],
    seed: [u8; 32],
}

impl FabricConnector {
    /// `endpoint` as the grant names it; `seed` is the peer key's 32-byte Ed25519 seed.
    pub fn new(endpoint: &str, grant: [u8; 16], seed: [u8; 32]) -> Result<Self, TransportError> {
        let ep = Endpoint::parse(endpoint).map_err(|e| TransportError::Connect {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
        Ok(FabricConnector {
            endpoint: ep,
            text: endpoint.to_string(),
            grant,
            seed,
        })
    }
}

impl Connector for FabricConnector {
    fn connect(&self) -> Result<Box<dyn Transport>, TransportError> {
        let conn = Connection::connect(&self.endpoint, self.grant, self.seed).map_err(|e| {
            TransportError::Connect {
                endpoint: self.text.clone(),
                reason: e.to_string(),
            }
        })?;
        Ok(Box::new(FabricTransport {
            conn,
            grant: self.grant,
            buf: Vec::new(),
        }))
    }

    fn endpoint(&self) -> String {
        self.text.clone()
    }

    fn max_connections(&self) -> Option<usize> {
        matches!(self.endpoint, Endpoint::Rdma(_)).then_some(1)
    }
}
