//! Connection set-up proof: the initiator signs, with the peer key named in the grant, a
//! transcript binding the protocol version, the grant id, its public key and both sides'
//! fresh nonces.

use crate::FabricError;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use super::wire::VERSION;

const CONTEXT: &[u8] = b"memgate-fabric-soft auth v1\0";

/// The bytes the peer signs.
pub(crate) fn transcript(
    grant: &[u8; 16],
    peer: &[u8; 32],
    client_nonce: &[u8; 32],
    server_nonce: &[u8; 32],
) -> [u8; 28 + 2 + 16 + 32 + 32 + 32] {
    let mut t = [0u8; 28 + 2 + 16 + 32 + 32 + 32];
    let mut at = 0;
    for part in [
        CONTEXT,
        &VERSION.to_le_bytes(),
        grant,
        peer,
        client_nonce,
        server_nonce,
    ] {
        t[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    t
}

/// 32 fresh random bytes.
pub(crate) fn nonce() -> Result<[u8; 32], FabricError> {
    let mut n = [0u8; 32];
    SystemRandom::new()
        .fill(&mut n)
        .map_err(|_| FabricError::Verbs("system random generator failed".into()))?;
    Ok(n)
}

/// A random nonzero rkey.
pub(crate) fn random_u32() -> Result<u32, FabricError> {
    let mut n = [0u8; 4];
    SystemRandom::new()
        .fill(&mut n)
        .map_err(|_| FabricError::Verbs("system random generator failed".into()))?;
    Ok(u32::from_le_bytes(n))
}

/// The peer's key pair from its 32-byte seed.
pub(crate) fn keypair(seed: &[u8; 32]) -> Result<Ed25519KeyPair, FabricError> {
    Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| FabricError::BadSeed)
}

/// The public key of a key pair.
pub(crate) fn public(kp: &Ed25519KeyPair) -> [u8; 32] {
    let mut p = [0u8; 32];
    p.copy_from_slice(kp.public_key().as_ref());
    p
}

/// Public key for a seed (what the broker puts in `KeySpec::peer`).
pub fn public_key_from_seed(seed: &[u8; 32]) -> Result<[u8; 32], FabricError> {
    Ok(public(&keypair(seed)?))
}

/// Whether `sig` is `peer`'s signature over `msg`.
pub(crate) fn verify(peer: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
    UnparsedPublicKey::new(&ED25519, peer)
        .verify(msg, sig)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_binds_every_field() {
        let kp = keypair(&[7; 32]).unwrap();
        let pk = public(&kp);
        let t = transcript(&[1; 16], &pk, &[2; 32], &[3; 32]);
        let mut sig = [0u8; 64];
        sig.copy_from_slice(kp.sign(&t).as_ref());
        assert!(verify(&pk, &t, &sig));
        assert!(!verify(
            &pk,
            &transcript(&[9; 16], &pk, &[2; 32], &[3; 32]),
            &sig
        ));
        assert!(!verify(
            &pk,
            &transcript(&[1; 16], &pk, &[2; 32], &[4; 32]),
            &sig
        ));
        let other = public(&keypair(&[8; 32]).unwrap());
        assert!(!verify(&other, &t, &sig));
    }
}
