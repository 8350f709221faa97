//! The verbs provider's set-up proof: the same Ed25519 challenge-response as the soft
//! provider ([`crate::auth`]), under its own context string so a signature made for one
//! provider can never be replayed on the other.

use crate::auth::Domain;
pub(crate) use crate::auth::{keypair, nonce, public};

/// The verbs provider's signing domain.
pub(crate) const PROOF: Domain =
    Domain::new(b"memgate-fabric-verbs auth v1\0", super::msg::VERSION);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_soft_signature_is_refused_by_verbs() {
        let kp = keypair(&[7; 32]).unwrap();
        let pk = public(&kp);
        let (g, cn, sn) = ([1; 16], [2; 32], [3; 32]);
        let soft = crate::soft::AUTH_PROOF.sign(&kp, &g, &cn, &sn);
        assert!(crate::soft::AUTH_PROOF.verify(&pk, &g, &cn, &sn, &soft));
        assert!(!PROOF.verify(&pk, &g, &cn, &sn, &soft));
        let verbs = PROOF.sign(&kp, &g, &cn, &sn);
        assert!(PROOF.verify(&pk, &g, &cn, &sn, &verbs));
        assert!(!crate::soft::AUTH_PROOF.verify(&pk, &g, &cn, &sn, &verbs));
    }
}
