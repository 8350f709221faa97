//! Endpoint strings: `tcp:IP:PORT`, `unix:PATH` (soft provider) and `rdma:IP:PORT` (verbs).

use crate::FabricError;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a responder listens, as written in grants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Soft provider over TCP (`tcp:127.0.0.1:7000`, `tcp:[::1]:0`).
    Tcp(SocketAddr),
    /// Soft provider over a Unix stream socket (`unix:/run/memgate/fabric.sock`).
    Unix(PathBuf),
    /// Verbs provider through rdma_cm (`rdma:192.0.2.1:7471`).
    Rdma(SocketAddr),
}

impl Endpoint {
    /// Parse an endpoint string.
    pub fn parse(s: &str) -> Result<Endpoint, FabricError> {
        let bad = || FabricError::BadEndpoint(s.to_string());
        let (scheme, rest) = s.split_once(':').ok_or_else(bad)?;
        match scheme {
            "tcp" => rest.parse().map(Endpoint::Tcp).map_err(|_| bad()),
            "rdma" => rest.parse().map(Endpoint::Rdma).map_err(|_| bad()),
            "unix" if !rest.is_empty() && !rest.contains('\0') => {
                Ok(Endpoint::Unix(PathBuf::from(rest)))
            }
            _ => Err(bad()),
        }
    }
}

impl FromStr for Endpoint {
    type Err = FabricError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::parse(s)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Rdma(a) => write!(f, "rdma:{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in [
            "tcp:127.0.0.1:0",
            "tcp:[::1]:7000",
            "unix:/tmp/x.sock",
            "rdma:10.0.0.1:1",
        ] {
            assert_eq!(Endpoint::parse(s).unwrap().to_string(), s);
        }
        for s in [
            "",
            "tcp",
            "tcp:1.2.3.4",
            "udp:1.2.3.4:5",
            "unix:",
            "tcp:host:1",
        ] {
            assert!(Endpoint::parse(s).is_err(), "{s}");
        }
    }
}
