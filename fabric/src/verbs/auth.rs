//! Connection set-up proof for the verbs provider: the same Ed25519 challenge-response as
//! the soft provider (the peer signs a transcript of the protocol version, the grant id,
//! its public key and both sides' nonces), under its own context string so a signature
//! made for one provider can never be replayed on the other.

use crate::FabricError;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use super::msg::VERSION;

const CONTEXT: &[u8] = b"memgate-fabric-verbs auth v1\0";
const LEN: usize = 29 + 2 + 16 + 32 + 32 + 32;

/// The bytes the peer signs.
pub(crate) fn transcript(
    grant: &[u8; 16],
    peer: &[u8; 32],
    client_nonce: &[u8; 32],
    server_nonce: &[u8; 32],
) -> [u8; LEN] {
    let mut t = [0u8; LEN];
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

/// Sign the transcript with the peer key whose seed is `seed`; returns (public key, signature).
pub(crate) fn sign(
    seed: &[u8; 32],
    grant: &[u8; 16],
    client_nonce: &[u8; 32],
    server_nonce: &[u8; 32],
) -> Result<([u8; 32], [u8; 64]), FabricError> {
    let kp = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| FabricError::BadSeed)?;
    let mut peer = [0u8; 32];
    peer.copy_from_slice(kp.public_key().as_ref());
    let mut sig = [0u8; 64];
    sig.copy_from_slice(
        kp.sign(&transcript(grant, &peer, client_nonce, server_nonce))
            .as_ref(),
    );
    Ok((peer, sig))
}

/// Whether `sig` is `peer`'s signature over the transcript of this set-up.
pub(crate) fn verify(
    peer: &[u8; 32],
    grant: &[u8; 16],
    client_nonce: &[u8; 32],
    server_nonce: &[u8; 32],
    sig: &[u8; 64],
) -> bool {
    let t = transcript(grant, peer, client_nonce, server_nonce);
    UnparsedPublicKey::new(&ED25519, peer)
        .verify(&t, sig)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_binds_every_field() {
        let (pk, sig) = sign(&[7; 32], &[1; 16], &[2; 32], &[3; 32]).unwrap();
        assert_eq!(pk, crate::public_key_from_seed(&[7; 32]).unwrap());
        assert!(verify(&pk, &[1; 16], &[2; 32], &[3; 32], &sig));
        assert!(
            !verify(&pk, &[9; 16], &[2; 32], &[3; 32], &sig),
            "other grant"
        );
        assert!(
            !verify(&pk, &[1; 16], &[4; 32], &[3; 32], &sig),
            "other client nonce"
        );
        assert!(
            !verify(&pk, &[1; 16], &[2; 32], &[4; 32], &sig),
            "other server nonce"
        );
        let (other, _) = sign(&[8; 32], &[1; 16], &[2; 32], &[3; 32]).unwrap();
        assert!(
            !verify(&other, &[1; 16], &[2; 32], &[3; 32], &sig),
            "other key"
        );
        let mut bad = sig;
        bad[0] ^= 1;
        assert!(
            !verify(&pk, &[1; 16], &[2; 32], &[3; 32], &bad),
            "tampered signature"
        );
    }

    #[test]
    fn transcript_is_domain_separated_from_soft() {
        let t = transcript(&[1; 16], &[2; 32], &[3; 32], &[4; 32]);
        assert!(t.starts_with(b"memgate-fabric-verbs auth v1\0"));
        assert_eq!(t.len(), LEN);
        // The nonces sit at the end, in order: client then server.
        assert_eq!(&t[LEN - 64..LEN - 32], &[3; 32]);
        assert_eq!(&t[LEN - 32..], &[4; 32]);
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce().unwrap(), nonce().unwrap());
    }
}
