//! Owner-signed requests: building, signing and checking them (sans-IO; the caller supplies the
//! clock and remembers nonces).
//!
//! A node accepts a signed request only if (in this order, all cheap):
//! 1. it is addressed to this node ([`AuthError::WrongNode`]),
//! 2. its timestamp is within [`MAX_CLOCK_SKEW_MS`] of the node's clock ([`AuthError::Stale`]),
//! 3. the owner's ed25519 signature verifies ([`AuthError::BadSignature`]),
//! 4. the (owner, nonce) pair was not seen within the window (checked by the node's nonce
//!    cache, which keeps pairs for `2 × MAX_CLOCK_SKEW_MS`).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::{
    error_code::ErrorCode,
    identity::{NodeId, SecretKey, Signature},
    message::{DeleteShards, Freshness, NONCE_LEN, RefTag, ShardId, StoreShard, TagShards},
};

/// Largest accepted difference between a request's timestamp and the node's clock: 2 minutes.
pub const MAX_CLOCK_SKEW_MS: u64 = 120_000;

/// Why a signed request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The request names another node.
    #[error("request is addressed to node {addressed}")]
    WrongNode {
        /// The node named in the request.
        addressed: NodeId,
    },
    /// The timestamp is too far from the node's clock.
    #[error("request timestamp {timestamp_ms} is more than {MAX_CLOCK_SKEW_MS} ms from {now_ms}")]
    Stale {
        /// The request's timestamp.
        timestamp_ms: u64,
        /// The node's clock.
        now_ms: u64,
    },
    /// The signature does not verify.
    #[error("signature by owner {owner} does not verify")]
    BadSignature {
        /// The claimed owner.
        owner: NodeId,
    },
    /// The nonce was already used.
    #[error("nonce already used by owner {owner}")]
    Replay {
        /// The owner.
        owner: NodeId,
    },
}

impl AuthError {
    /// The wire error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::WrongNode { .. } => ErrorCode::WrongNode,
            Self::Stale { .. } => ErrorCode::StaleTimestamp,
            Self::BadSignature { .. } => ErrorCode::BadSignature,
            Self::Replay { .. } => ErrorCode::Replay,
        }
    }
}

/// Milliseconds since the Unix epoch by the system clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Freshness {
    /// A timestamp and a random nonce.
    pub fn new(timestamp_ms: u64) -> Self {
        let mut nonce = [0u8; NONCE_LEN];
        // Without OS randomness nonces would repeat; no sensible fallback exists.
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut nonce).expect("OS random source unavailable");
        Self {
            timestamp_ms,
            nonce,
        }
    }

    /// Checks the timestamp against `now_ms`.
    pub fn check(&self, now_ms: u64) -> Result<(), AuthError> {
        if self.timestamp_ms.abs_diff(now_ms) > MAX_CLOCK_SKEW_MS {
            return Err(AuthError::Stale {
                timestamp_ms: self.timestamp_ms,
                now_ms,
            });
        }
        Ok(())
    }
}

fn check_common(
    local: NodeId,
    node: NodeId,
    freshness: &Freshness,
    now_ms: u64,
    owner: NodeId,
    msg: &[u8],
    sig: &Signature,
) -> Result<(), AuthError> {
    if node != local {
        return Err(AuthError::WrongNode { addressed: node });
    }
    freshness.check(now_ms)?;
    owner
        .verify(msg, sig)
        .map_err(|_| AuthError::BadSignature { owner })
}

impl StoreShard {
    /// Builds and signs a store request for `node`.
    pub fn signed(
        owner: &SecretKey,
        node: NodeId,
        shard_id: ShardId,
        size: u64,
        tag: RefTag,
        now_ms: u64,
    ) -> Self {
        let mut req = Self {
            shard_id,
            size,
            owner: owner.public(),
            tag,
            node,
            freshness: Freshness::new(now_ms),
            signature: Signature([0; 64]),
        };
        req.signature = owner.sign(&req.signing_bytes());
        req
    }

    /// Checks addressee, timestamp and signature (not the nonce; see module docs).
    pub fn verify(&self, local: NodeId, now_ms: u64) -> Result<(), AuthError> {
        let msg = self.signing_bytes();
        check_common(
            local,
            self.node,
            &self.freshness,
            now_ms,
            self.owner,
            &msg,
            &self.signature,
        )
    }
}

/// `signed` and `verify` of the two owner-signed requests over a list of ids with a tag, which
/// share their fields and differ only in their signing domain.
macro_rules! ids_request {
    ($t:ident, $what:literal) => {
        impl $t {
            #[doc = concat!("Builds and signs a request for `node` ", $what, " `ids`.")]
            pub fn signed(
                owner: &SecretKey,
                node: NodeId,
                tag: RefTag,
                ids: Vec<ShardId>,
                now_ms: u64,
            ) -> Self {
                let mut req = Self {
                    ids,
                    owner: owner.public(),
                    tag,
                    node,
                    freshness: Freshness::new(now_ms),
                    signature: Signature([0; 64]),
                };
                req.signature = owner.sign(&req.signing_bytes());
                req
            }

            /// Checks addressee, timestamp and signature (not the nonce; see module docs).
            pub fn verify(&self, local: NodeId, now_ms: u64) -> Result<(), AuthError> {
                let msg = self.signing_bytes();
                check_common(
                    local,
                    self.node,
                    &self.freshness,
                    now_ms,
                    self.owner,
                    &msg,
                    &self.signature,
                )
            }
        }
    };
}

ids_request!(DeleteShards, "releasing the owner's `tag` references to");
ids_request!(TagShards, "adding the owner's `tag` reference to");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_request_checks() {
        let owner = SecretKey::from_bytes(&[1; 32]);
        let node = SecretKey::from_bytes(&[2; 32]).public();
        let now = 1_700_000_000_000;
        let req = StoreShard::signed(&owner, node, ShardId([5; 32]), 10, [7; 32], now);
        req.verify(node, now + 1000).unwrap();
        assert_eq!(
            req.verify(owner.public(), now),
            Err(AuthError::WrongNode { addressed: node })
        );
        assert!(matches!(
            req.verify(node, now + MAX_CLOCK_SKEW_MS + 1),
            Err(AuthError::Stale { .. })
        ));
        let mut retagged = req.clone();
        retagged.tag = [8; 32];
        assert!(matches!(
            retagged.verify(node, now),
            Err(AuthError::BadSignature { .. })
        ));
        let mut forged = req.clone();
        forged.size = 11;
        assert_eq!(
            forged.verify(node, now),
            Err(AuthError::BadSignature {
                owner: owner.public()
            })
        );
        let mut other_owner = req;
        other_owner.owner = node;
        assert!(matches!(
            other_owner.verify(node, now),
            Err(AuthError::BadSignature { .. })
        ));
    }

    #[test]
    fn delete_request_covers_every_id() {
        let owner = SecretKey::from_bytes(&[1; 32]);
        let node = SecretKey::from_bytes(&[2; 32]).public();
        let req = DeleteShards::signed(
            &owner,
            node,
            [9; 32],
            vec![ShardId([1; 32]), ShardId([2; 32])],
            5,
        );
        req.verify(node, 5).unwrap();
        let mut retagged = req.clone();
        retagged.tag = [8; 32];
        assert!(retagged.verify(node, 5).is_err());
        let tag = TagShards::signed(&owner, node, [9; 32], req.ids.clone(), 5);
        tag.verify(node, 5).unwrap();
        // A delete signature is not a tag signature (domain separation).
        let mut swapped = tag.clone();
        swapped.signature = req.signature;
        assert!(swapped.verify(node, 5).is_err());
        let mut forged = req.clone();
        forged.ids.pop();
        assert!(forged.verify(node, 5).is_err());
        let mut forged = req;
        forged.ids[1] = ShardId([3; 32]);
        assert!(forged.verify(node, 5).is_err());
    }
}
