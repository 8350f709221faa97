//! Loading a signed policy: verify the detached minisign signature against the admin
//! keys first, then parse. Rollback protection is the caller's: compare
//! [`Policy::serial`] with the serial of the policy in force ([`check_serial`]).

use crate::document::{Policy, PolicyError};
use crate::minisign::{self, MinisignError, PublicKey, Signature};

/// Why a signed policy was not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The signature file could not be parsed.
    #[error("policy signature file: {0}")]
    SignatureFormat(MinisignError),
    /// The signature does not verify against any admin key.
    #[error("policy signature rejected: {0}")]
    Signature(MinisignError),
    /// The signature verifies but the document is invalid.
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// The document is older than (or the same serial as) the policy in force.
    #[error(
        "policy serial {new} is not newer than the serial in force ({current}): refusing rollback"
    )]
    Rollback {
        /// Serial of the offered policy.
        new: u64,
        /// Serial of the policy in force.
        current: u64,
    },
}

/// A policy with what verified it.
#[derive(Debug, Clone)]
pub struct SignedPolicy {
    /// The policy.
    pub policy: Policy,
    /// The admin key that signed it.
    pub signer: PublicKey,
    /// The signature's trusted comment.
    pub trusted_comment: String,
}

/// Verifies `sig` (a `.minisig` file) over `policy` and parses it.
pub fn load(policy: &[u8], sig: &str, admins: &[PublicKey]) -> Result<Policy, LoadError> {
    load_signed(policy, sig, admins).map(|s| s.policy)
}

/// Like [`load`], also returning the signer and the trusted comment.
pub fn load_signed(
    policy: &[u8],
    sig: &str,
    admins: &[PublicKey],
) -> Result<SignedPolicy, LoadError> {
    let sig = Signature::parse(sig).map_err(LoadError::SignatureFormat)?;
    let signer = *minisign::verify(policy, &sig, admins).map_err(LoadError::Signature)?;
    let policy = Policy::parse_bytes(policy)?;
    Ok(SignedPolicy {
        policy,
        signer,
        trusted_comment: sig.trusted_comment,
    })
}

/// Refuses a policy whose serial is not greater than `current` (a reload of the very same
/// document is allowed when `allow_same` is set).
pub fn check_serial(new: &Policy, current: u64, allow_same: bool) -> Result<(), LoadError> {
    if new.serial > current || (allow_same && new.serial == current) {
        Ok(())
    } else {
        Err(LoadError::Rollback {
            new: new.serial,
            current,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::minisign::SecretKey;

    const DOC: &str = "version = 1\nbroker = \"b\"\nserial = 5\n";

    #[test]
    fn sign_load_tamper_rollback() {
        let sk = SecretKey::generate().unwrap();
        let sig = sk
            .sign(DOC.as_bytes(), "memgate policy serial 5")
            .unwrap()
            .to_file_text();
        let p = load(DOC.as_bytes(), &sig, &[sk.public()]).unwrap();
        assert_eq!(p.serial, 5);
        let tampered = DOC.replace('5', "6");
        assert!(matches!(
            load(tampered.as_bytes(), &sig, &[sk.public()]),
            Err(LoadError::Signature(MinisignError::BadSignature))
        ));
        let other = SecretKey::generate().unwrap();
        assert!(matches!(
            load(DOC.as_bytes(), &sig, &[other.public()]),
            Err(LoadError::Signature(MinisignError::UnknownKeyId(_)))
        ));
        assert!(check_serial(&p, 4, false).is_ok());
        assert!(matches!(
            check_serial(&p, 5, false),
            Err(LoadError::Rollback { .. })
        ));
        assert!(check_serial(&p, 5, true).is_ok());
        assert!(matches!(
            check_serial(&p, 9, true),
            Err(LoadError::Rollback { new: 5, current: 9 })
        ));
    }

    #[test]
    fn signed_but_invalid_document() {
        let sk = SecretKey::generate().unwrap();
        let bad = "version = 1\nbroker = \"b\"\nserial = 1\nextra = 2\n";
        let sig = sk.sign(bad.as_bytes(), "x").unwrap().to_file_text();
        let e = load(bad.as_bytes(), &sig, &[sk.public()]).unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
    }
}
