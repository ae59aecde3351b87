//! Multi-shard sealing units.
//!
//! One shard is too small to seal on its own: its lazy rebuild would fit inside a deadline (see
//! `docs/proofs.md`, "Sizing"). A node therefore seals a *unit*: several shards laid end to end,
//! each starting on a 1 KiB chunk boundary, zero-padded in between.
//!
//! ```text
//! unit plaintext = shard_0 ‖ 0^pad_0 ‖ shard_1 ‖ 0^pad_1 ‖ …     (each pad to a 1 KiB multiple)
//! unit data id   = BLAKE3("granary.unit.v1" ‖ n ‖ (shard_id_i ‖ len_i)*)
//! ```
//!
//! The unit's data id names the layout (and feeds the replica id); a seal proof's plaintext opening
//! for block `j` is a chunk of the member shard holding `j`, with its path to that **shard id**,
//! so a verifier who knows its own shard ids needs nothing from the node but the proof.

use serde::{Deserialize, Serialize};

use crate::ReplicaId;
use crate::merkle::{self, CHUNK_LEN, ChunkIdx, MerkleTree};
use crate::seal::{BLOCK_LEN, DataId};
use crate::seal_proof::{self, SealProof, SealProveError, SealStatement, SealVerifyError};

/// Most members one unit may list (bounds a layout received from the network).
pub const MAX_MEMBERS: usize = 1 << 16;

/// One shard in a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// `BLAKE3(shard)`: the shard id.
    pub id: DataId,
    /// Shard length in bytes (at least 1).
    pub len: u64,
}

/// The ordered members of a unit and where each starts. Serialized as the member list only; a
/// decoded layout is re-validated (offsets are always recomputed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Member>", into = "Vec<Member>")]
pub struct UnitLayout {
    members: Vec<Member>,
    /// `offsets[i]` = start of member `i`; `offsets[n]` = unit length.
    offsets: Vec<u64>,
}

/// Why a layout is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// No members.
    #[error("a unit needs at least one member")]
    Empty,
    /// Too many members.
    #[error("{0} members exceed the limit of {MAX_MEMBERS}")]
    TooMany(usize),
    /// A member of length zero.
    #[error("member {0} is empty")]
    EmptyMember(usize),
    /// Lengths overflow.
    #[error("unit length overflows")]
    Overflow,
}

impl TryFrom<Vec<Member>> for UnitLayout {
    type Error = LayoutError;
    fn try_from(members: Vec<Member>) -> Result<Self, LayoutError> {
        Self::new(members)
    }
}

impl From<UnitLayout> for Vec<Member> {
    fn from(l: UnitLayout) -> Self {
        l.members
    }
}

fn padded(len: u64) -> Option<u64> {
    len.checked_next_multiple_of(CHUNK_LEN as u64)
}

impl UnitLayout {
    /// Lays `members` out in order.
    pub fn new(members: Vec<Member>) -> Result<Self, LayoutError> {
        if members.is_empty() {
            return Err(LayoutError::Empty);
        }
        if members.len() > MAX_MEMBERS {
            return Err(LayoutError::TooMany(members.len()));
        }
        let mut offsets = Vec::with_capacity(members.len() + 1);
        let mut at = 0u64;
        for (i, m) in members.iter().enumerate() {
            if m.len == 0 {
                return Err(LayoutError::EmptyMember(i));
            }
            offsets.push(at);
            at = padded(m.len)
                .and_then(|p| at.checked_add(p))
                .ok_or(LayoutError::Overflow)?;
        }
        offsets.push(at);
        Ok(Self { members, offsets })
    }

    /// The members, in unit order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Byte offset of member `i` in the unit.
    pub fn offset(&self, i: usize) -> u64 {
        self.offsets[i]
    }

    /// Unit length in bytes (a multiple of 1 KiB).
    pub fn len(&self) -> u64 {
        self.offsets[self.members.len()]
    }

    /// Always false: a layout has at least one member.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The unit's data id: a hash of the ordered `(shard id, length)` list.
    pub fn data_id(&self) -> DataId {
        let mut h = blake3::Hasher::new();
        h.update(b"granary.unit.v1\0");
        h.update(&(self.members.len() as u64).to_le_bytes());
        for m in &self.members {
            h.update(&m.id.0);
            h.update(&m.len.to_le_bytes());
        }
        DataId(*h.finalize().as_bytes())
    }

    /// The member holding unit byte `offset`, with the offset inside it (which may fall in the
    /// member's padding, at or past its length).
    pub fn locate(&self, offset: u64) -> Option<(usize, u64)> {
        if offset >= self.len() {
            return None;
        }
        let i = self.offsets.partition_point(|&o| o <= offset) - 1;
        Some((i, offset - self.offsets[i]))
    }

    /// Index of the member with shard id `id`.
    pub fn position(&self, id: &DataId) -> Option<usize> {
        self.members.iter().position(|m| m.id == *id)
    }
}

/// Proves that `replica` seals the unit whose plaintext is `plain` (laid out by `layout`, padding
/// included), with `k` openings from `seed`. `member_trees[i]` is the tree of member `i`'s bytes.
pub fn prove(
    replica_id: &ReplicaId,
    layout: &UnitLayout,
    plain: &[u8],
    member_trees: &[MerkleTree],
    replica: &[u8],
    tree_r: &MerkleTree,
    seed: &[u8; 32],
    k: usize,
) -> Result<SealProof, SealProveError> {
    if plain.len() as u64 != layout.len() || member_trees.len() != layout.members().len() {
        return Err(SealProveError::Length {
            plain: plain.len() as u64,
            replica: replica.len() as u64,
        });
    }
    seal_proof::prove_with(replica_id, replica, tree_r, seed, k, |j| {
        let Some((i, at)) = layout.locate(j.0 * BLOCK_LEN as u64) else {
            return Ok(None);
        };
        let m = layout.members()[i];
        if at >= m.len {
            return Ok(None);
        }
        let chunk = ChunkIdx(at / CHUNK_LEN as u64);
        let tree = &member_trees[i];
        let start = layout.offset(i);
        let r = tree.group_range(chunk);
        tree.open(
            chunk,
            &plain[(start + r.start) as usize..(start + r.end) as usize],
        )
        .map(Some)
    })
}

/// Verifies a unit seal proof: `statement` must name `layout` (data id and length), and every
/// opened plaintext chunk must verify against its member's shard id.
pub fn verify(
    statement: &SealStatement,
    layout: &UnitLayout,
    seed: &[u8; 32],
    k: usize,
    proof: &SealProof,
) -> Result<(), SealVerifyError> {
    if statement.data_id != layout.data_id() || statement.len != layout.len() {
        return Err(SealVerifyError::Layout);
    }
    seal_proof::verify_with(statement, seed, k, proof, |index, j, opening| {
        let plain_err = |source| SealVerifyError::Plain { index, source };
        let off = j.0 * BLOCK_LEN as u64;
        let (i, at) = layout.locate(off).ok_or(SealVerifyError::Layout)?;
        let m = layout.members()[i];
        let mut block = [0u8; BLOCK_LEN];
        if at >= m.len {
            // Padding: known zeros, nothing to open.
            return match opening {
                None => Ok(block),
                Some(o) => Err(plain_err(merkle::VerifyError::RootMismatch {
                    chunk: o.chunk,
                })),
            };
        }
        let want = ChunkIdx(at / CHUNK_LEN as u64);
        let o = opening.ok_or(plain_err(merkle::VerifyError::RootMismatch { chunk: want }))?;
        if o.chunk != want {
            return Err(plain_err(merkle::VerifyError::RootMismatch {
                chunk: o.chunk,
            }));
        }
        merkle::verify_chunk(&m.id.0, m.len, o).map_err(plain_err)?;
        let from = (at - want.0 * CHUNK_LEN as u64) as usize;
        let bytes = o.data.get(from..).unwrap_or_default();
        let n = bytes.len().min(BLOCK_LEN);
        block[..n].copy_from_slice(&bytes[..n]);
        Ok(block)
    })
}

/// The unit blocks covering member `i`'s bytes `range` (for unsealing a byte range of one shard).
pub fn member_blocks(
    layout: &UnitLayout,
    i: usize,
    range: std::ops::Range<u64>,
) -> std::ops::Range<u64> {
    let start = layout.offset(i) + range.start;
    let end = layout.offset(i) + range.end;
    start / BLOCK_LEN as u64..end.div_ceil(BLOCK_LEN as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::{self, NodeId, SealParams};

    const PARAMS: SealParams = SealParams {
        rounds: 1,
        nonce: 0,
    };

    struct Fixture {
        layout: UnitLayout,
        shards: Vec<Vec<u8>>,
        plain: Vec<u8>,
        replica: Vec<u8>,
        statement: SealStatement,
    }

    fn fixture(lens: &[usize], node: u8) -> Fixture {
        let shards: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let mut v = vec![0u8; n];
                blake3::Hasher::new()
                    .update(&[i as u8, node])
                    .finalize_xof()
                    .fill(&mut v);
                v
            })
            .collect();
        let members = shards
            .iter()
            .map(|s| Member {
                id: DataId(*blake3::hash(s).as_bytes()),
                len: s.len() as u64,
            })
            .collect();
        let layout = UnitLayout::new(members).unwrap();
        let mut plain = vec![0u8; layout.len() as usize];
        for (i, s) in shards.iter().enumerate() {
            let o = layout.offset(i) as usize;
            plain[o..o + s.len()].copy_from_slice(s);
        }
        let data_id = layout.data_id();
        let replica_id = ReplicaId::derive(&NodeId([node; 32]), &data_id, &PARAMS);
        let replica = seal::seal(&PARAMS, &replica_id, &plain).unwrap();
        let statement = SealStatement {
            data_id,
            replica_id,
            comm_r: *blake3::hash(&replica).as_bytes(),
            len: layout.len(),
            params: PARAMS,
        };
        Fixture {
            layout,
            shards,
            plain,
            replica,
            statement,
        }
    }

    fn prove_f(f: &Fixture, seed: &[u8; 32], k: usize) -> SealProof {
        let trees: Vec<_> = f
            .shards
            .iter()
            .map(|s| MerkleTree::build(s).unwrap())
            .collect();
        let tr = MerkleTree::build(&f.replica).unwrap();
        prove(
            &f.statement.replica_id,
            &f.layout,
            &f.plain,
            &trees,
            &f.replica,
            &tr,
            seed,
            k,
        )
        .unwrap()
    }

    #[test]
    fn layout_pads_members_to_chunks() {
        let f = fixture(&[100, 2048, 64], 1);
        assert_eq!(f.layout.offset(1), 1024);
        assert_eq!(f.layout.offset(2), 3072);
        assert_eq!(f.layout.len(), 4096);
        assert_eq!(f.layout.locate(1023), Some((0, 1023)));
        assert_eq!(f.layout.locate(1024), Some((1, 0)));
        assert_eq!(f.layout.locate(4096), None);
        assert_eq!(UnitLayout::new(vec![]), Err(LayoutError::Empty));
    }

    #[test]
    fn honest_unit_proof_verifies_padding_included() {
        // Small members so many challenged blocks land in padding.
        let f = fixture(&[96, 5000, 64, 20_000, 640], 2);
        let proof = prove_f(&f, &[1; 32], 64);
        assert!(proof.openings.iter().any(|o| o.plain_chunk.is_none()));
        assert_eq!(
            verify(&f.statement, &f.layout, &[1; 32], 64, &proof),
            Ok(())
        );
        assert!(verify(&f.statement, &f.layout, &[2; 32], 64, &proof).is_err());
    }

    #[test]
    fn other_layout_or_swapped_member_is_refused() {
        let f = fixture(&[4096, 4096], 3);
        let proof = prove_f(&f, &[1; 32], 16);
        let mut members = f.layout.members().to_vec();
        members.swap(0, 1);
        let swapped = UnitLayout::new(members).unwrap();
        assert_eq!(
            verify(&f.statement, &swapped, &[1; 32], 16, &proof),
            Err(SealVerifyError::Layout)
        );
        // A statement rewritten to the swapped layout: plaintext openings fail against the ids.
        let lie = SealStatement {
            data_id: swapped.data_id(),
            ..f.statement
        };
        assert!(matches!(
            verify(&lie, &swapped, &[1; 32], 16, &proof),
            Err(SealVerifyError::Plain { .. })
        ));
    }

    #[test]
    fn wrong_plaintext_in_replica_is_caught() {
        // The node sealed other bytes than member 0 (e.g. kept garbage): the openings of member
        // 0's plaintext cannot match both its shard id and the replica.
        let mut f = fixture(&[8192, 8192], 4);
        f.plain[0..8192].fill(7);
        f.replica = seal::seal(&PARAMS, &f.statement.replica_id, &f.plain).unwrap();
        f.statement.comm_r = *blake3::hash(&f.replica).as_bytes();
        f.shards[0] = f.plain[0..8192].to_vec();
        let proof = prove_f(&f, &[9; 32], 32);
        assert!(matches!(
            verify(&f.statement, &f.layout, &[9; 32], 32, &proof),
            Err(SealVerifyError::Plain { .. })
        ));
    }
}
