//! Registering a dataset with an auditor (`granary register CAP --out FILE`).
//!
//! An auditor challenges a dataset's nodes every epoch and pays them for what they prove, but it
//! must not be able to read the data: it never gets the capability's key. The owner gives it an
//! [`AuditRegistration`] instead: the dataset id and, per node, the ids of the shards placed
//! there, signed by the owner's key. Anyone can check the signature; only the owner can make
//! one, so nobody else can register (or withdraw) a dataset in the owner's name.

use std::collections::BTreeMap;

use granary_protocol::{NodeId, SecretKey, Signature};
use serde::{Deserialize, Serialize};

use crate::ids::{DatasetId, ShardId};

/// Domain separation for registration signatures.
const DOMAIN: &[u8] = b"granary/audit-registration/v1\0";
/// Format version of [`AuditRegistration`].
pub const REGISTRATION_VERSION: u8 = 1;
/// Largest registration file accepted (about 1.9 M shard ids).
pub const MAX_REGISTRATION_BYTES: usize = 64 << 20;

/// What the owner asks an auditor to check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRegistration {
    /// [`REGISTRATION_VERSION`].
    pub version: u8,
    /// The dataset.
    pub dataset: DatasetId,
    /// The owner (the key that signs).
    pub owner: NodeId,
    /// When it was made (ms since the Unix epoch); a newer registration of the same dataset
    /// replaces an older one.
    pub created_ms: u64,
    /// `false`: stop auditing this dataset (the owner is about to delete it).
    pub active: bool,
    /// Node id → the shards of the dataset placed on it.
    pub placed: BTreeMap<[u8; 32], Vec<ShardId>>,
}

/// An [`AuditRegistration`] with the owner's signature over its encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRegistration {
    /// postcard encoding of the [`AuditRegistration`].
    pub body: Vec<u8>,
    /// The owner's signature over `DOMAIN ‖ body`.
    pub signature: Signature,
}

/// Why a registration file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// Too large, truncated or not a registration.
    #[error("not a registration file: {0}")]
    Malformed(String),
    /// From a newer Granary.
    #[error(
        "registration format {0} is newer than this auditor understands ({REGISTRATION_VERSION})"
    )]
    Version(u8),
    /// The signature is not the named owner's.
    #[error("the owner's signature does not verify")]
    BadSignature,
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    [DOMAIN, body].concat()
}

impl AuditRegistration {
    /// Signs with the owner's key (which must be `self.owner`'s).
    pub fn sign(&self, owner: &SecretKey) -> SignedRegistration {
        let body = postcard::to_stdvec(self).expect("serialising to memory cannot fail");
        SignedRegistration {
            signature: owner.sign(&signed_bytes(&body)),
            body,
        }
    }
}

impl SignedRegistration {
    /// The file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("serialising to memory cannot fail")
    }

    /// Parses file bytes and checks version and signature.
    pub fn open(bytes: &[u8]) -> Result<(Self, AuditRegistration), RegistrationError> {
        if bytes.len() > MAX_REGISTRATION_BYTES {
            return Err(RegistrationError::Malformed(format!(
                "{} bytes, more than {MAX_REGISTRATION_BYTES}",
                bytes.len()
            )));
        }
        let signed: Self =
            postcard::from_bytes(bytes).map_err(|e| RegistrationError::Malformed(e.to_string()))?;
        let version = *signed
            .body
            .first()
            .ok_or_else(|| RegistrationError::Malformed("empty body".into()))?;
        if version > REGISTRATION_VERSION {
            return Err(RegistrationError::Version(version));
        }
        let reg: AuditRegistration = postcard::from_bytes(&signed.body)
            .map_err(|e| RegistrationError::Malformed(e.to_string()))?;
        reg.owner
            .verify(&signed_bytes(&signed.body), &signed.signature)
            .map_err(|_| RegistrationError::BadSignature)?;
        Ok((signed, reg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(owner: &SecretKey) -> AuditRegistration {
        AuditRegistration {
            version: REGISTRATION_VERSION,
            dataset: DatasetId([1; 32]),
            owner: owner.public(),
            created_ms: 5,
            active: true,
            placed: [([2; 32], vec![ShardId([3; 32]), ShardId([4; 32])])].into(),
        }
    }

    #[test]
    fn signed_registration_round_trips_and_tampering_is_refused() {
        let owner = SecretKey::from_bytes(&[9; 32]);
        let r = reg(&owner);
        let bytes = r.sign(&owner).to_bytes();
        let (_, back) = SignedRegistration::open(&bytes).unwrap();
        assert_eq!(back, r);
        // Every single-bit flip is refused (malformed, wrong version, or bad signature).
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(
                SignedRegistration::open(&b).is_err(),
                "flip at {i} accepted"
            );
        }
        // Signed by someone else than the named owner.
        let forged = r.sign(&SecretKey::from_bytes(&[8; 32])).to_bytes();
        assert!(matches!(
            SignedRegistration::open(&forged),
            Err(RegistrationError::BadSignature)
        ));
        // Truncated.
        assert!(SignedRegistration::open(&bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn newer_format_is_a_clear_error() {
        let owner = SecretKey::from_bytes(&[9; 32]);
        let mut r = reg(&owner);
        r.version = REGISTRATION_VERSION + 1;
        let bytes = r.sign(&owner).to_bytes();
        assert!(matches!(
            SignedRegistration::open(&bytes),
            Err(RegistrationError::Version(v)) if v == REGISTRATION_VERSION + 1
        ));
    }
}
