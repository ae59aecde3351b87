//! Seal proofs: evidence, checked once by the client or an auditor, that a replica is the correct
//! sealing of the plaintext for this node.
//!
//! For `K` block indices drawn from `BLAKE3(tag ‖ comm_r ‖ seed ‖ i)`, the prover opens the
//! replica chunks holding block `j` and its 8 parents (paths to `comm_r`) and the plaintext chunk
//! holding block `j` (path to `comm_d` = `BLAKE3(plaintext)`, the shard id for a one-shard unit).
//! The verifier recomputes `key_j` from the opened parents, unseals block `j` (one squaring per
//! round) and compares it with the plaintext block. Soundness: `(1 − δ)^K`, see
//! [`crate::params::seal_proof_openings`].
//!
//! The node signs [`SealStatement::to_bytes`]; signing is the node's job.

use serde::{Deserialize, Serialize};

use crate::drg::{BlockIdx, Graph, PARENTS};
use crate::keyhash::{self, KEY_INPUT_LEN};
use crate::merkle::{self, CHUNK_LEN, ChunkIdx, ChunkOpening, MerkleTree};
use crate::seal::{BLOCK_LEN, DataId, ReplicaId, SealParams, unseal_block};

/// What a node signs after sealing: `(data id, replica id, comm_r, length, params)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealStatement {
    /// Plaintext commitment (shard id for a one-shard unit).
    pub data_id: DataId,
    /// The replica id the unit was sealed under.
    pub replica_id: ReplicaId,
    /// `BLAKE3(replica)`.
    pub comm_r: [u8; 32],
    /// Unit length in bytes.
    pub len: u64,
    /// Sealing parameters.
    pub params: SealParams,
}

impl SealStatement {
    /// Domain-separated bytes to sign (fixed layout, 136 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(136);
        b.extend_from_slice(b"granary.seal.v1\0");
        b.extend_from_slice(&self.data_id.0);
        b.extend_from_slice(&self.replica_id.0);
        b.extend_from_slice(&self.comm_r);
        b.extend_from_slice(&self.len.to_le_bytes());
        b.extend_from_slice(&self.params.to_bytes());
        b
    }
}

/// One opened block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealOpening {
    /// Replica chunks holding block `j` and its parents (distinct, ascending).
    pub replica_chunks: Vec<ChunkOpening>,
    /// Plaintext chunk holding block `j`, with its path to the plaintext's id. `None` only where
    /// block `j` lies in zero padding (between members of a multi-shard unit).
    pub plain_chunk: Option<ChunkOpening>,
}

/// A seal proof: one [`SealOpening`] per challenged block, in challenge order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealProof {
    /// The openings.
    pub openings: Vec<SealOpening>,
}

/// Errors from [`prove`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealProveError {
    /// Plaintext, replica and trees disagree on length.
    #[error("plaintext ({plain}) and replica ({replica}) lengths differ from the trees")]
    Length {
        /// Plaintext bytes.
        plain: u64,
        /// Replica bytes.
        replica: u64,
    },
    /// A chunk could not be opened.
    #[error("opening chunk: {0}")]
    Open(#[from] merkle::OpenError),
}

/// Why a seal proof failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealVerifyError {
    /// Wrong number of openings.
    #[error("{got} openings, expected {want}")]
    Count {
        /// Given.
        got: usize,
        /// Expected.
        want: usize,
    },
    /// Length is zero or not a multiple of 32.
    #[error("unit length {len} invalid")]
    Length {
        /// The claimed length.
        len: u64,
    },
    /// A needed replica chunk is missing from opening `index`.
    #[error("opening {index}: replica chunk {chunk:?} missing")]
    MissingChunk {
        /// Opening number.
        index: usize,
        /// Missing chunk.
        chunk: ChunkIdx,
    },
    /// A replica chunk does not verify against `comm_r`.
    #[error("opening {index}: replica chunk: {source}")]
    Replica {
        /// Opening number.
        index: usize,
        /// Merkle failure.
        source: merkle::VerifyError,
    },
    /// The plaintext chunk does not verify against `comm_d`, or is the wrong chunk.
    #[error("opening {index}: plaintext chunk: {source}")]
    Plain {
        /// Opening number.
        index: usize,
        /// Merkle failure.
        source: merkle::VerifyError,
    },
    /// The statement does not name the given unit layout (data id or length differ).
    #[error("statement does not match the unit layout")]
    Layout,
    /// The replica block does not decode to the plaintext block: wrong encoding.
    #[error("opening {index}: block {block:?} is not the sealing of the plaintext")]
    Encoding {
        /// Opening number.
        index: usize,
        /// Challenged block.
        block: BlockIdx,
    },
}

/// Block indices challenged by `seed` for a unit of `blocks` blocks with root `comm_r`.
pub fn challenged_blocks(
    comm_r: &[u8; 32],
    seed: &[u8; 32],
    blocks: u64,
    k: usize,
) -> Vec<BlockIdx> {
    (0..k as u64)
        .map(|i| {
            let mut h = blake3::Hasher::new();
            h.update(b"granary.seal-proof.challenge.v1");
            h.update(comm_r);
            h.update(seed);
            h.update(&i.to_le_bytes());
            let mut w = [0u8; 8];
            w.copy_from_slice(&h.finalize().as_bytes()[..8]);
            BlockIdx(((u128::from(u64::from_le_bytes(w)) * u128::from(blocks)) >> 64) as u64)
        })
        .collect()
}

fn chunk_of(block: u64) -> ChunkIdx {
    ChunkIdx(block * BLOCK_LEN as u64 / CHUNK_LEN as u64)
}

fn needed_chunks(graph: &Graph, j: BlockIdx) -> Vec<ChunkIdx> {
    let mut v = vec![chunk_of(j.0)];
    if let Some(ps) = graph.parents(j) {
        v.extend(ps.iter().map(|&p| chunk_of(p)));
    }
    v.sort();
    v.dedup();
    v
}

fn open_in(
    tree: &MerkleTree,
    data: &[u8],
    chunk: ChunkIdx,
) -> Result<ChunkOpening, merkle::OpenError> {
    let r = tree.group_range(chunk);
    tree.open(chunk, &data[r.start as usize..r.end as usize])
}

/// Proves that `replica` (tree `tree_r`) seals `plain` (tree `tree_d`) under `replica_id`, with
/// `k` openings drawn from `seed` (fresh, from the verifier).
pub fn prove(
    replica_id: &ReplicaId,
    plain: &[u8],
    tree_d: &MerkleTree,
    replica: &[u8],
    tree_r: &MerkleTree,
    seed: &[u8; 32],
    k: usize,
) -> Result<SealProof, SealProveError> {
    let len = plain.len() as u64;
    if len != replica.len() as u64 || tree_d.len() != len || tree_r.len() != len {
        return Err(SealProveError::Length {
            plain: len,
            replica: replica.len() as u64,
        });
    }
    prove_with(replica_id, replica, tree_r, seed, k, |j| {
        open_in(tree_d, plain, chunk_of(j.0)).map(Some)
    })
}

/// The general prover: `plain_opening(j)` opens the plaintext chunk holding block `j` (or `None`
/// where the verifier knows the block is zero padding).
pub fn prove_with(
    replica_id: &ReplicaId,
    replica: &[u8],
    tree_r: &MerkleTree,
    seed: &[u8; 32],
    k: usize,
    plain_opening: impl Fn(BlockIdx) -> Result<Option<ChunkOpening>, merkle::OpenError>,
) -> Result<SealProof, SealProveError> {
    let len = replica.len() as u64;
    if tree_r.len() != len {
        return Err(SealProveError::Length {
            plain: tree_r.len(),
            replica: len,
        });
    }
    let blocks = len / BLOCK_LEN as u64;
    let graph = Graph::new(&replica_id.0, blocks);
    let openings = challenged_blocks(&tree_r.root(), seed, blocks, k)
        .into_iter()
        .map(|j| {
            let replica_chunks = needed_chunks(&graph, j)
                .into_iter()
                .map(|c| open_in(tree_r, replica, c))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(SealOpening {
                replica_chunks,
                plain_chunk: plain_opening(j)?,
            })
        })
        .collect::<Result<Vec<_>, SealProveError>>()?;
    Ok(SealProof { openings })
}

fn block_in(chunks: &[ChunkOpening], b: u64) -> Option<&[u8]> {
    let c = chunk_of(b);
    let o = chunks.binary_search_by_key(&c, |x| x.chunk).ok()?;
    let off = (b * BLOCK_LEN as u64 - c.0 * CHUNK_LEN as u64) as usize;
    chunks[o].data.get(off..off + BLOCK_LEN)
}

/// Verifies a seal proof for `statement` against a fresh `seed` and `k` openings; the plaintext
/// commitment is `statement.data_id = BLAKE3(plaintext)` (a one-shard unit).
pub fn verify(
    statement: &SealStatement,
    seed: &[u8; 32],
    k: usize,
    proof: &SealProof,
) -> Result<(), SealVerifyError> {
    let len = statement.len;
    verify_with(statement, seed, k, proof, |index, j, opening| {
        let plain_err = |source| SealVerifyError::Plain { index, source };
        let o = opening.ok_or(plain_err(merkle::VerifyError::RootMismatch {
            chunk: chunk_of(j.0),
        }))?;
        if o.chunk != chunk_of(j.0) {
            return Err(plain_err(merkle::VerifyError::RootMismatch {
                chunk: o.chunk,
            }));
        }
        merkle::verify_chunk(&statement.data_id.0, len, o).map_err(plain_err)?;
        let off = (j.0 * BLOCK_LEN as u64 - o.chunk.0 * CHUNK_LEN as u64) as usize;
        let mut b = [0u8; BLOCK_LEN];
        let got = o
            .data
            .get(off..off + BLOCK_LEN)
            .ok_or(SealVerifyError::Encoding { index, block: j })?;
        b.copy_from_slice(got);
        Ok(b)
    })
}

/// The general verifier: `plain_block(index, j, opening)` checks opening `index`'s plaintext
/// part against the plaintext commitment and returns plaintext block `j`.
pub fn verify_with(
    statement: &SealStatement,
    seed: &[u8; 32],
    k: usize,
    proof: &SealProof,
    plain_block: impl Fn(
        usize,
        BlockIdx,
        Option<&ChunkOpening>,
    ) -> Result<[u8; BLOCK_LEN], SealVerifyError>,
) -> Result<(), SealVerifyError> {
    let len = statement.len;
    if len == 0 || !len.is_multiple_of(BLOCK_LEN as u64) {
        return Err(SealVerifyError::Length { len });
    }
    if proof.openings.len() != k {
        return Err(SealVerifyError::Count {
            got: proof.openings.len(),
            want: k,
        });
    }
    let blocks = len / BLOCK_LEN as u64;
    let graph = Graph::new(&statement.replica_id.0, blocks);
    let challenged = challenged_blocks(&statement.comm_r, seed, blocks, k);
    for (index, (j, o)) in challenged.into_iter().zip(&proof.openings).enumerate() {
        let mut prev = None;
        for c in &o.replica_chunks {
            // Ascending and distinct, so lookups by binary search are unambiguous.
            if prev.is_some_and(|p| p >= c.chunk) {
                return Err(SealVerifyError::MissingChunk {
                    index,
                    chunk: c.chunk,
                });
            }
            prev = Some(c.chunk);
            merkle::verify_chunk(&statement.comm_r, len, c)
                .map_err(|source| SealVerifyError::Replica { index, source })?;
        }
        let plain = plain_block(index, j, o.plain_chunk.as_ref())?;
        let need = |b: u64| {
            block_in(&o.replica_chunks, b).ok_or(SealVerifyError::MissingChunk {
                index,
                chunk: chunk_of(b),
            })
        };
        let mut input = [0u8; KEY_INPUT_LEN];
        if let Some(ps) = graph.parents(j) {
            for (slot, &p) in ps.iter().enumerate().take(PARENTS) {
                input[slot * BLOCK_LEN..(slot + 1) * BLOCK_LEN].copy_from_slice(need(p)?);
            }
        }
        let key = keyhash::parent_key_scalar(&statement.replica_id.0, j.0, &input);
        let mut rb = [0u8; BLOCK_LEN];
        rb.copy_from_slice(need(j.0)?);
        match unseal_block(&rb, &key, statement.params.rounds) {
            Some(p) if p == plain => {}
            _ => return Err(SealVerifyError::Encoding { index, block: j }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::{self, NodeId};

    struct Fixture {
        statement: SealStatement,
        plain: Vec<u8>,
        replica: Vec<u8>,
    }

    fn fixture(len: usize, node: u8) -> Fixture {
        let mut plain = vec![0u8; len];
        blake3::Hasher::new()
            .update(&[node, 42])
            .finalize_xof()
            .fill(&mut plain);
        let data_id = DataId(*blake3::hash(&plain).as_bytes());
        let params = SealParams {
            rounds: 1,
            nonce: 0,
        };
        let replica_id = ReplicaId::derive(&NodeId([node; 32]), &data_id, &params);
        let replica = seal::seal(&params, &replica_id, &plain).unwrap();
        let comm_r = *blake3::hash(&replica).as_bytes();
        Fixture {
            statement: SealStatement {
                data_id,
                replica_id,
                comm_r,
                len: len as u64,
                params,
            },
            plain,
            replica,
        }
    }

    fn prove_f(f: &Fixture, seed: &[u8; 32], k: usize) -> SealProof {
        let td = MerkleTree::build(&f.plain).unwrap();
        let tr = MerkleTree::build(&f.replica).unwrap();
        prove(
            &f.statement.replica_id,
            &f.plain,
            &td,
            &f.replica,
            &tr,
            seed,
            k,
        )
        .unwrap()
    }

    #[test]
    fn honest_proof_verifies_and_replay_fails() {
        let f = fixture(200_000, 1);
        let proof = prove_f(&f, &[1; 32], 40);
        assert_eq!(verify(&f.statement, &[1; 32], 40, &proof), Ok(()));
        // Replayed under a fresh seed: the challenged blocks differ.
        assert!(verify(&f.statement, &[2; 32], 40, &proof).is_err());
        assert!(matches!(
            verify(&f.statement, &[1; 32], 41, &proof),
            Err(SealVerifyError::Count { .. })
        ));
    }

    #[test]
    fn wrong_encoding_is_caught() {
        // A replica sealed with other parameters (2 rounds) than the statement claims (1).
        let mut f = fixture(64 * 1024, 2);
        let lazy = seal::seal(
            &SealParams {
                rounds: 2,
                nonce: 0,
            },
            &f.statement.replica_id,
            &f.plain,
        )
        .unwrap();
        f.replica = lazy;
        f.statement.comm_r = *blake3::hash(&f.replica).as_bytes();
        let proof = prove_f(&f, &[3; 32], 8);
        assert!(matches!(
            verify(&f.statement, &[3; 32], 8, &proof),
            Err(SealVerifyError::Encoding { index: 0, .. })
        ));
    }

    #[test]
    fn sybil_replica_fails_for_other_node() {
        let a = fixture(64 * 1024, 3);
        let b = fixture(64 * 1024, 4);
        // Node b presents a's replica (same data would be needed; use a's plaintext) under b's id.
        let stolen = SealStatement {
            replica_id: b.statement.replica_id,
            ..a.statement
        };
        let proof = prove_f(&a, &[5; 32], 8);
        assert_eq!(verify(&a.statement, &[5; 32], 8, &proof), Ok(()));
        // Other graph (missing parent chunks) or other keys (encoding): rejected either way.
        assert!(matches!(
            verify(&stolen, &[5; 32], 8, &proof),
            Err(SealVerifyError::Encoding { .. } | SealVerifyError::MissingChunk { .. })
        ));
    }

    #[test]
    fn tampered_chunk_is_located() {
        let f = fixture(100_000, 5);
        let mut proof = prove_f(&f, &[6; 32], 4);
        proof.openings[2].replica_chunks[0].data[7] ^= 1;
        assert!(matches!(
            verify(&f.statement, &[6; 32], 4, &proof),
            Err(SealVerifyError::Replica { index: 2, .. })
        ));
        let mut proof = prove_f(&f, &[6; 32], 4);
        proof.openings[1].plain_chunk.as_mut().unwrap().data[0] ^= 1;
        assert!(matches!(
            verify(&f.statement, &[6; 32], 4, &proof),
            Err(SealVerifyError::Plain { index: 1, .. })
        ));
        let mut proof = prove_f(&f, &[6; 32], 4);
        proof.openings[3].replica_chunks.pop();
        assert!(verify(&f.statement, &[6; 32], 4, &proof).is_err());
        assert_eq!(f.statement.to_bytes().len(), 136);
    }
}
