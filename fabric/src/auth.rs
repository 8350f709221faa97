//! Connection set-up proof shared by the providers: the initiator signs, with the peer key
//! named in the grant, a transcript binding a provider's context string and protocol
//! version, the grant id, its public key and both sides' fresh nonces. Each provider has
//! its own [`Domain`] (context string), so a signature made for one can never be replayed
//! on another. Also the randomness both providers draw (nonces, rkeys).

use crate::FabricError;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

/// Longest context string a [`Domain`] may carry.
const MAX_CONTEXT: usize = 32;
/// Transcript bytes after the context: version, grant, peer key, two nonces.
const FIELDS: usize = 2 + 16 + 32 + 32 + 32;

/// One provider's signing domain: its context string and protocol version.
pub(crate) struct Domain {
    context: &'static [u8],
    version: u16,
}

/// The bytes the peer signs (context-length dependent, so kept in a fixed buffer).
pub(crate) struct Transcript {
    buf: [u8; MAX_CONTEXT + FIELDS],
    len: usize,
}

impl Transcript {
    /// The transcript's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Domain {
    /// A domain; the context string must be at most 32 bytes (checked at compile time
    /// where the domain is a `const`).
    pub(crate) const fn new(context: &'static [u8], version: u16) -> Domain {
        assert!(context.len() <= MAX_CONTEXT, "auth context string too long");
        Domain { context, version }
    }

    /// The transcript of one set-up.
    pub(crate) fn transcript(
        &self,
        grant: &[u8; 16],
        peer: &[u8; 32],
        client_nonce: &[u8; 32],
        server_nonce: &[u8; 32],
    ) -> Transcript {
        let mut t = Transcript {
            buf: [0u8; MAX_CONTEXT + FIELDS],
            len: 0,
        };
        for part in [
            self.context,
            &self.version.to_le_bytes(),
            grant,
            peer,
            client_nonce,
            server_nonce,
        ] {
            t.buf[t.len..t.len + part.len()].copy_from_slice(part);
            t.len += part.len();
        }
        t
    }

    /// `kp`'s signature over the transcript of this set-up (the peer key is `kp`'s).
    pub(crate) fn sign(
        &self,
        kp: &Ed25519KeyPair,
        grant: &[u8; 16],
        client_nonce: &[u8; 32],
        server_nonce: &[u8; 32],
    ) -> [u8; 64] {
        let t = self.transcript(grant, &public(kp), client_nonce, server_nonce);
        let mut sig = [0u8; 64];
        sig.copy_from_slice(kp.sign(t.as_bytes()).as_ref());
        sig
    }

    /// Whether `sig` is `peer`'s signature over the transcript of this set-up.
    pub(crate) fn verify(
        &self,
        peer: &[u8; 32],
        grant: &[u8; 16],
        client_nonce: &[u8; 32],
        server_nonce: &[u8; 32],
        sig: &[u8; 64],
    ) -> bool {
        let t = self.transcript(grant, peer, client_nonce, server_nonce);
        UnparsedPublicKey::new(&ED25519, peer)
            .verify(t.as_bytes(), sig)
            .is_ok()
    }
}

/// Fill `out` from the system's random generator.
fn fill(out: &mut [u8]) -> Result<(), FabricError> {
    SystemRandom::new()
        .fill(out)
        .map_err(|_| FabricError::Verbs("system random generator failed".into()))
}

/// 32 fresh random bytes.
pub(crate) fn nonce() -> Result<[u8; 32], FabricError> {
    let mut n = [0u8; 32];
    fill(&mut n)?;
    Ok(n)
}

/// A random u32 (rkey candidates).
pub(crate) fn random_u32() -> Result<u32, FabricError> {
    let mut n = [0u8; 4];
    fill(&mut n)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const A: Domain = Domain::new(b"memgate-fabric-test-a v1\0", 1);
    const B: Domain = Domain::new(b"memgate-fabric-test-bb v1\0", 1);

    #[test]
    fn signature_binds_every_field() {
        let kp = keypair(&[7; 32]).unwrap();
        let pk = public(&kp);
        let sig = A.sign(&kp, &[1; 16], &[2; 32], &[3; 32]);
        assert!(A.verify(&pk, &[1; 16], &[2; 32], &[3; 32], &sig));
        assert!(!A.verify(&pk, &[9; 16], &[2; 32], &[3; 32], &sig), "grant");
        assert!(
            !A.verify(&pk, &[1; 16], &[4; 32], &[3; 32], &sig),
            "client nonce"
        );
        assert!(
            !A.verify(&pk, &[1; 16], &[2; 32], &[4; 32], &sig),
            "server nonce"
        );
        let other = public_key_from_seed(&[8; 32]).unwrap();
        assert!(!A.verify(&other, &[1; 16], &[2; 32], &[3; 32], &sig), "key");
        let mut bad = sig;
        bad[0] ^= 1;
        assert!(
            !A.verify(&pk, &[1; 16], &[2; 32], &[3; 32], &bad),
            "tampered"
        );
    }

    #[test]
    fn domains_and_versions_separate_signatures() {
        let kp = keypair(&[7; 32]).unwrap();
        let pk = public(&kp);
        let sig = A.sign(&kp, &[1; 16], &[2; 32], &[3; 32]);
        assert!(!B.verify(&pk, &[1; 16], &[2; 32], &[3; 32], &sig));
        let a2 = Domain::new(A.context, 2);
        assert!(!a2.verify(&pk, &[1; 16], &[2; 32], &[3; 32], &sig));
    }

    #[test]
    fn transcript_layout() {
        let t = B.transcript(&[1; 16], &[2; 32], &[3; 32], &[4; 32]);
        let t = t.as_bytes();
        assert!(t.starts_with(b"memgate-fabric-test-bb v1\0\x01\0"));
        assert_eq!(t.len(), B.context.len() + FIELDS);
        // The nonces sit at the end, in order: client then server.
        assert_eq!(&t[t.len() - 64..t.len() - 32], &[3; 32]);
        assert_eq!(&t[t.len() - 32..], &[4; 32]);
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce().unwrap(), nonce().unwrap());
    }
}
