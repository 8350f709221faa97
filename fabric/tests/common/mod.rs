//! Set-up shared by the soft provider's integration tests: a responder serving one
//! read-only key over a whole source, for one peer and one grant.

use memgate_fabric::{
    public_key_from_seed, Access, Connection, Endpoint, KeySpec, MemorySource, Responder,
    SoftResponder,
};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A responder, where to reach it, and the one key it serves.
pub struct OneKey {
    /// Held so the responder lives as long as the key (not every test touches it).
    #[allow(dead_code)]
    pub resp: SoftResponder,
    pub ep: Endpoint,
    pub grant: [u8; 16],
    pub seed: [u8; 32],
    pub rkey: u32,
}

impl OneKey {
    /// Register `base..base+len` of `src` on `resp` and create a read-only key over all
    /// of it for the peer whose seed is `seed`, in `grant`, valid for two minutes.
    pub fn serve(
        resp: SoftResponder,
        src: Arc<dyn MemorySource>,
        (base, len): (u64, u64),
        seed: [u8; 32],
        grant: [u8; 16],
    ) -> OneKey {
        let region = resp.register(src, base, len).expect("register");
        let spec = KeySpec {
            addr: base,
            len,
            access: Access::REMOTE_READ,
            peer: public_key_from_seed(&seed).expect("seed"),
            grant,
            expires: SystemTime::now() + Duration::from_secs(120),
        };
        let rkey = resp.create_key(&region, spec).expect("create_key");
        let ep = Endpoint::parse(&resp.endpoint()).expect("endpoint");
        OneKey {
            resp,
            ep,
            grant,
            seed,
            rkey,
        }
    }

    /// A connection of the key's peer.
    pub fn connect(&self) -> Connection {
        Connection::connect(&self.ep, self.grant, self.seed).expect("connect")
    }
}

/// Reads one whole reply frame (header and body) from a raw soft-protocol stream.
#[allow(dead_code)] // not every test binary that includes this module speaks the raw wire
pub fn read_frame(s: &mut std::net::TcpStream) -> Vec<u8> {
    use memgate_fabric::soft::wire;
    use std::io::Read;
    let mut h = [0u8; wire::HDR];
    s.read_exact(&mut h).unwrap();
    let hd = wire::parse_header(&h, wire::MAX_REPLY_BODY).unwrap();
    let mut f = vec![0u8; wire::HDR + hd.len as usize];
    f[..wire::HDR].copy_from_slice(&h);
    s.read_exact(&mut f[wire::HDR..]).unwrap();
    f
}
