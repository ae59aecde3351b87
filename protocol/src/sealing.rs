//! Bodies of the proof exchanges that travel as raw postcard bodies after their frame
//! (`SealInfoOk`), and the signed unit statement a node publishes after sealing.
//!
//! A node signs [`SealStatement::to_bytes`] with its identity key. A verifier accepts a
//! [`SignedUnit`] only if the signature verifies under the node id it dialled, the statement
//! names the layout it carries, and the replica id is the one derived from that node id: so a
//! node cannot present another node's replica (Sybil) or a statement it did not sign.

use granary_proofs::{
    ReplicaId, seal::NodeId as ProofNodeId, seal_proof::SealStatement, unit::UnitLayout,
};
use serde::{Deserialize, Serialize};

use crate::identity::{NodeId, SecretKey, Signature};

/// Sealing state of one requested shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardSealState {
    /// The node does not hold the shard.
    NotHeld,
    /// Held, waiting to be sealed.
    Pending,
    /// Sealed in `units[unit]` of the [`SealInfoBody`].
    Sealed {
        /// Index into [`SealInfoBody::units`].
        unit: u32,
    },
}

/// The body after `SealInfoOk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealInfoBody {
    /// One state per requested shard, in request order.
    pub shards: Vec<ShardSealState>,
    /// The distinct units the sealed shards live in.
    pub units: Vec<SignedUnit>,
}

/// A sealed unit as the node committed to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedUnit {
    /// `(data id, replica id, comm_r, length, params)`.
    pub statement: SealStatement,
    /// The member shards, whose hash is the statement's data id.
    pub layout: UnitLayout,
    /// The node's signature over [`SealStatement::to_bytes`].
    pub signature: Signature,
}

/// Why a [`SignedUnit`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// The signature does not verify under the node's key.
    #[error("the unit statement is not signed by node {0}")]
    Signature(String),
    /// The statement names another layout (data id or length).
    #[error("the unit statement does not match its member list")]
    Layout,
    /// The replica id is not derived from this node's id.
    #[error("the replica id is not this node's (another node's replica?)")]
    ReplicaId,
}

/// The proof engine's view of a node id.
pub fn proof_node_id(id: &NodeId) -> ProofNodeId {
    ProofNodeId(*id.as_bytes())
}

impl SignedUnit {
    /// Signs `statement` (for `layout`) with the node's `key`.
    pub fn sign(key: &SecretKey, statement: SealStatement, layout: UnitLayout) -> Self {
        let signature = key.sign(&statement.to_bytes());
        Self {
            statement,
            layout,
            signature,
        }
    }

    /// Checks the signature, the layout and the replica id against the node `node`.
    pub fn verify(&self, node: &NodeId) -> Result<(), UnitError> {
        node.verify(&self.statement.to_bytes(), &self.signature)
            .map_err(|_| UnitError::Signature(node.fmt_short()))?;
        let s = &self.statement;
        if s.data_id != self.layout.data_id() || s.len != self.layout.len() {
            return Err(UnitError::Layout);
        }
        if s.replica_id != ReplicaId::derive(&proof_node_id(node), &s.data_id, &s.params) {
            return Err(UnitError::ReplicaId);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use granary_proofs::{
        DataId, SealParams,
        unit::{Member, UnitLayout},
    };

    use super::*;

    fn unit(key: &SecretKey, for_node: &NodeId) -> SignedUnit {
        let layout = UnitLayout::new(vec![Member {
            id: DataId([7; 32]),
            len: 4096,
        }])
        .unwrap();
        let params = SealParams::default();
        let statement = SealStatement {
            data_id: layout.data_id(),
            replica_id: ReplicaId::derive(&proof_node_id(for_node), &layout.data_id(), &params),
            comm_r: [9; 32],
            len: layout.len(),
            params,
        };
        SignedUnit::sign(key, statement, layout)
    }

    #[test]
    fn signed_unit_checks_signer_layout_and_replica_id() {
        let (a, b) = (SecretKey::generate(), SecretKey::generate());
        let good = unit(&a, &a.public());
        assert_eq!(good.verify(&a.public()), Ok(()));
        // Presented by another node: signature fails.
        assert!(matches!(
            good.verify(&b.public()),
            Err(UnitError::Signature(_))
        ));
        // b signs a statement whose replica id is a's: refused as another node's replica.
        assert_eq!(
            unit(&b, &a.public()).verify(&b.public()),
            Err(UnitError::ReplicaId)
        );
        // A forged signature.
        let mut forged = good.clone();
        forged.statement.comm_r = [8; 32];
        assert!(matches!(
            forged.verify(&a.public()),
            Err(UnitError::Signature(_))
        ));
        // Layout swapped after signing.
        let mut swapped = good.clone();
        swapped.layout = UnitLayout::new(vec![Member {
            id: DataId([6; 32]),
            len: 4096,
        }])
        .unwrap();
        assert_eq!(swapped.verify(&a.public()), Err(UnitError::Layout));
        // Round trip through postcard re-validates the layout.
        let bytes = postcard::to_stdvec(&good).unwrap();
        assert_eq!(postcard::from_bytes::<SignedUnit>(&bytes).unwrap(), good);
    }
}
