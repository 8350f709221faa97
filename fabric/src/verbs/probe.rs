//! The verbs provider's unauthenticated probe for the conformance suite: every way into a
//! key without completing the peer proof over rdma_cm must be refused, and no READ served.

use super::initiator::VerbsConnection;
use super::{auth, msg};
use crate::conformance::ProbeTarget;
use crate::{Endpoint, FabricError, WcStatus};
use std::time::{Duration, Instant};

/// A READ with the target key on a connection that did not authenticate must not be
/// served.
fn read_refused(c: &mut VerbsConnection, t: &ProbeTarget<'_>, what: &str) -> Result<(), String> {
    c.post_read(1, t.addr, t.len, t.rkey)
        .map_err(|e| format!("{what}: post_read: {e}"))?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while out.is_empty() && Instant::now() < deadline {
        c.wait_completions(&mut out, Some(Duration::from_secs(1)))
            .map_err(|e| format!("{what}: {e}"))?;
    }
    match out.first() {
        Some(comp) if comp.status == WcStatus::Success => {
            Err(format!("{what}: the READ was served"))
        }
        Some(_) => Ok(()),
        // The responder dropped the connection (its QP is in the error state and answers
        // nothing): the READ is retried until the retry count runs out, never served.
        None if c.pending.front().is_some() => Ok(()),
        None => Err(format!("{what}: the READ vanished without a completion")),
    }
}

/// The verbs provider's unauthenticated probe (see
/// [`Provider::unauthenticated_probe`](crate::conformance::Provider::unauthenticated_probe)):
/// a malformed HELLO, a READ without AUTH, a forged signature and a genuine signature over
/// another challenge (replay) must each be refused, and no READ served.
pub(crate) fn unauthenticated_probe(t: &ProbeTarget<'_>) -> Result<(), String> {
    let ep = Endpoint::parse(t.endpoint).map_err(|e| e.to_string())?;
    match VerbsConnection::establish(&ep, &[0xAB; msg::PRIV_LEN]) {
        Err(FabricError::AuthRejected(_)) => {}
        Err(e) => return Err(format!("malformed HELLO: expected a rejection, got: {e}")),
        Ok(_) => return Err("a malformed HELLO was accepted".into()),
    }
    let fresh = || -> Result<(VerbsConnection, [u8; 32], [u8; 32]), String> {
        let cn = auth::nonce().map_err(|e| e.to_string())?;
        let (c, sn) = VerbsConnection::establish(&ep, &msg::put_nonce(msg::VERSION, &cn))
            .map_err(|e| format!("connect: {e}"))?;
        Ok((c, cn, sn))
    };
    let (mut c, _, _) = fresh()?;
    read_refused(&mut c, t, "READ before AUTH")?;
    drop(c);
    let peer = crate::public_key_from_seed(&t.seed).map_err(|e| e.to_string())?;
    let (mut c, _, _) = fresh()?;
    if c.authenticate(t.grant, peer, [0x11; 64]).is_ok() {
        return Err("a forged signature was accepted".into());
    }
    read_refused(&mut c, t, "READ after a forged AUTH")?;
    drop(c);
    let (mut c, cn, _) = fresh()?;
    // A genuine signature, but over another connection's challenge.
    let kp = auth::keypair(&t.seed).map_err(|e| e.to_string())?;
    let sig = auth::PROOF.sign(&kp, &t.grant, &cn, &[0x22; 32]);
    if c.authenticate(t.grant, peer, sig).is_ok() {
        return Err("a signature over another challenge was accepted".into());
    }
    read_refused(&mut c, t, "READ after a replayed AUTH")
}
