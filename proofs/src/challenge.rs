//! Storage challenges (PoSt): each epoch a challenger sends a fresh seed; the node answers with `C`
//! challenged 1 KiB replica chunks, their paths to each replica's `comm_r`, and one merkle-cbt
//! multiproof tying the challenged replicas' `(comm_r, len)` leaves to the node's aggregated
//! commitment, before the deadline.
//!
//! Sans-IO: the prover reads through [`ReplicaReader`], which the node backs with files.
//!
//! ```text
//! leaf_i     = BLAKE3-keyed(LEAF_KEY, comm_r_i ‖ len_i)           (one per sealed unit)
//! node root  = CBMT(leaf_0 … leaf_{n−1}), merge = BLAKE3-keyed(NODE_KEY, left ‖ right)
//! challenge t: h = BLAKE3(tag ‖ seed ‖ t); unit = ⌊h[0..8]·n / 2^64⌋; chunk = ⌊h[8..16]·chunks / 2^64⌋
//! ```

use merkle_cbt::{CBMT, MerkleProof, MerkleTree as CbtTree, merkle_tree::Merge};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::merkle::{self, ChunkIdx, ChunkOpening, MerkleTree, chunk_count};

const LEAF_KEY: [u8; 32] = *b"granary.post.leaf.v1............";
const NODE_KEY: [u8; 32] = *b"granary.post.node.v1............";

/// Most units one node commitment can hold (merkle-cbt indexes its `2n − 1` nodes with `u32`).
pub const MAX_UNITS: u32 = 1 << 31;

/// Position of a sealed unit in a node's committed list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaIdx(pub u32);

/// The public description of one sealed unit, as committed in the node's aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SealedReplica {
    /// `BLAKE3(replica)`.
    pub comm_r: [u8; 32],
    /// Length in bytes.
    pub len: u64,
}

impl SealedReplica {
    /// The aggregate's leaf for this unit.
    pub fn leaf(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&LEAF_KEY);
        h.update(&self.comm_r);
        h.update(&self.len.to_le_bytes());
        *h.finalize().as_bytes()
    }
}

/// BLAKE3 merge for merkle-cbt, domain-separated from leaves.
#[derive(Debug)]
pub enum Blake3Merge {}

impl Merge for Blake3Merge {
    type Item = [u8; 32];
    fn merge(left: &Self::Item, right: &Self::Item) -> Self::Item {
        let mut h = blake3::Hasher::new_keyed(&NODE_KEY);
        h.update(left);
        h.update(right);
        *h.finalize().as_bytes()
    }
}

/// A node's aggregated commitment over its sealed units (what the auditor registers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCommitment {
    /// merkle-cbt root over the units' leaves.
    pub root: [u8; 32],
    /// Number of units.
    pub count: u32,
}

/// One challenged chunk position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Which unit.
    pub replica: ReplicaIdx,
    /// Uniform draw mapped to a chunk once the unit's length is known.
    pub draw: u64,
}

impl Challenge {
    /// The chunk this challenge lands on in a unit of `len` bytes.
    pub fn chunk(&self, len: u64) -> ChunkIdx {
        ChunkIdx(((u128::from(self.draw) * u128::from(chunk_count(len))) >> 64) as u64)
    }
}

/// The `c` challenges of `seed` over `count` units.
pub fn challenges(seed: &[u8; 32], count: u32, c: usize) -> Vec<Challenge> {
    (0..c as u64)
        .map(|t| {
            let mut h = blake3::Hasher::new();
            h.update(b"granary.post.challenge.v1");
            h.update(seed);
            h.update(&t.to_le_bytes());
            let b = *h.finalize().as_bytes();
            let (mut a, mut d) = ([0u8; 8], [0u8; 8]);
            a.copy_from_slice(&b[..8]);
            d.copy_from_slice(&b[8..16]);
            let r = (u128::from(u64::from_le_bytes(a)) * u128::from(count)) >> 64;
            Challenge {
                replica: ReplicaIdx(r as u32),
                draw: u64::from_le_bytes(d),
            }
        })
        .collect()
}

/// Read access to a node's sealed units (files, in the node).
pub trait ReplicaReader: Sync {
    /// IO error type.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The unit's stored tree.
    fn tree(&self, replica: ReplicaIdx) -> Result<&MerkleTree, Self::Error>;
    /// Fills `buf` with the unit's bytes at `offset`.
    fn read(&self, replica: ReplicaIdx, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error>;
}

/// A PoSt answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostProof {
    /// Descriptors of the distinct challenged units, ascending by index.
    pub replicas: Vec<SealedReplica>,
    /// merkle-cbt multiproof lemmas for those leaves.
    pub lemmas: Vec<[u8; 32]>,
    /// One chunk opening per challenge, in challenge order.
    pub openings: Vec<ChunkOpening>,
}

/// Errors from [`PostProver::new`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PostSetupError {
    /// No units, or more than [`MAX_UNITS`].
    #[error("{count} sealed units: need 1..=2^31")]
    Count {
        /// Units given.
        count: usize,
    },
    /// Two units have the same descriptor (one copy counted twice).
    #[error("units {first:?} and {second:?} are the same replica")]
    Duplicate {
        /// First position.
        first: ReplicaIdx,
        /// Second position.
        second: ReplicaIdx,
    },
}

/// Errors from [`PostProver::prove`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostProveError {
    /// The reader failed for a unit (e.g. a unit the node never had).
    #[error("reading unit {replica:?}: {source}")]
    Read {
        /// Unit.
        replica: ReplicaIdx,
        /// Reader error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The stored tree does not match the bytes read or the committed unit.
    #[error("unit {replica:?}: {source}")]
    Open {
        /// Unit.
        replica: ReplicaIdx,
        /// Tree error.
        source: merkle::OpenError,
    },
    /// The stored tree's root or length is not the committed one.
    #[error("unit {replica:?}: stored tree does not match the committed comm_r")]
    TreeMismatch {
        /// Unit.
        replica: ReplicaIdx,
    },
}

/// Why a PoSt answer failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PostVerifyError {
    /// Wrong number of unit descriptors or openings.
    #[error("{what}: got {got}, expected {want}")]
    Count {
        /// Which list.
        what: &'static str,
        /// Given.
        got: usize,
        /// Expected.
        want: usize,
    },
    /// Two challenged units share a descriptor.
    #[error("unit {replica:?} duplicates another challenged unit")]
    Duplicate {
        /// Unit.
        replica: ReplicaIdx,
    },
    /// The multiproof does not reach the node's commitment.
    #[error("unit descriptors do not match the node commitment")]
    Aggregate,
    /// Opening `index` is not the challenged chunk.
    #[error("challenge {index}: opened chunk {got:?}, challenged {want:?}")]
    WrongChunk {
        /// Challenge number.
        index: usize,
        /// Opened.
        got: ChunkIdx,
        /// Challenged.
        want: ChunkIdx,
    },
    /// Opening `index` does not verify against its unit's `comm_r`.
    #[error("challenge {index} (unit {replica:?}): {source}")]
    Chunk {
        /// Challenge number.
        index: usize,
        /// Unit.
        replica: ReplicaIdx,
        /// Merkle failure.
        source: merkle::VerifyError,
    },
}

/// The prover side: a node's committed unit list and its aggregate tree (build once per change).
pub struct PostProver {
    replicas: Vec<SealedReplica>,
    leaves: Vec<[u8; 32]>,
    tree: CbtTree<[u8; 32], Blake3Merge>,
}

impl std::fmt::Debug for PostProver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostProver")
            .field("units", &self.replicas.len())
            .field("root", &self.tree.root())
            .finish()
    }
}

impl PostProver {
    /// Commits to `replicas` (order is the index order challenges use).
    pub fn new(replicas: Vec<SealedReplica>) -> Result<Self, PostSetupError> {
        if replicas.is_empty() || replicas.len() > MAX_UNITS as usize {
            return Err(PostSetupError::Count {
                count: replicas.len(),
            });
        }
        let leaves: Vec<[u8; 32]> = replicas.par_iter().map(SealedReplica::leaf).collect();
        let mut sorted: Vec<(&[u8; 32], u32)> = leaves.iter().zip(0u32..).collect();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(PostSetupError::Duplicate {
                first: ReplicaIdx(w[0].1),
                second: ReplicaIdx(w[1].1),
            });
        }
        let tree = CBMT::<[u8; 32], Blake3Merge>::build_merkle_tree(&leaves);
        Ok(Self {
            replicas,
            leaves,
            tree,
        })
    }

    /// The aggregated commitment to register with auditors.
    pub fn commitment(&self) -> NodeCommitment {
        NodeCommitment {
            root: self.tree.root(),
            count: self.leaves.len() as u32,
        }
    }

    /// Answers the `c` challenges of `seed`, reading through `reader` (parallel over challenges).
    pub fn prove<R: ReplicaReader>(
        &self,
        seed: &[u8; 32],
        c: usize,
        reader: &R,
    ) -> Result<PostProof, PostProveError> {
        let chals = challenges(seed, self.leaves.len() as u32, c);
        let openings = chals
            .par_iter()
            .map(|ch| self.open(ch, reader))
            .collect::<Result<Vec<_>, _>>()?;
        let mut idx: Vec<u32> = chals.iter().map(|ch| ch.replica.0).collect();
        idx.sort_unstable();
        idx.dedup();
        let lemmas = self
            .tree
            .build_proof(&idx)
            .map(|p| p.lemmas().to_vec())
            .unwrap_or_default();
        let replicas = idx.iter().map(|&i| self.replicas[i as usize]).collect();
        Ok(PostProof {
            replicas,
            lemmas,
            openings,
        })
    }

    fn open<R: ReplicaReader>(
        &self,
        ch: &Challenge,
        reader: &R,
    ) -> Result<ChunkOpening, PostProveError> {
        let replica = ch.replica;
        let read_err = |e: R::Error| PostProveError::Read {
            replica,
            source: Box::new(e),
        };
        let desc = self.replicas[replica.0 as usize];
        let tree = reader.tree(replica).map_err(read_err)?;
        if tree.root() != desc.comm_r || tree.len() != desc.len {
            return Err(PostProveError::TreeMismatch { replica });
        }
        let chunk = ch.chunk(desc.len);
        let range = tree.group_range(chunk);
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        reader
            .read(replica, range.start, &mut buf)
            .map_err(read_err)?;
        tree.open(chunk, &buf)
            .map_err(|source| PostProveError::Open { replica, source })
    }
}

/// Verifies a PoSt answer against a node's commitment, the fresh `seed` and `c` challenges.
pub fn verify(
    commitment: &NodeCommitment,
    seed: &[u8; 32],
    c: usize,
    proof: &PostProof,
) -> Result<(), PostVerifyError> {
    if commitment.count == 0 || commitment.count > MAX_UNITS {
        let got = commitment.count as usize;
        return Err(PostVerifyError::Count {
            what: "units in the commitment",
            got,
            want: 1,
        });
    }
    let chals = challenges(seed, commitment.count, c);
    let mut idx: Vec<u32> = chals.iter().map(|ch| ch.replica.0).collect();
    idx.sort_unstable();
    idx.dedup();
    if proof.replicas.len() != idx.len() {
        return Err(PostVerifyError::Count {
            what: "units",
            got: proof.replicas.len(),
            want: idx.len(),
        });
    }
    if proof.openings.len() != c {
        return Err(PostVerifyError::Count {
            what: "openings",
            got: proof.openings.len(),
            want: c,
        });
    }
    // Bind positions: pair each leaf with the tree index the verifier expects, in the order
    // merkle-cbt pairs them (ascending leaf value).
    let leaves: Vec<[u8; 32]> = proof.replicas.iter().map(SealedReplica::leaf).collect();
    let mut pairs: Vec<([u8; 32], u32)> = leaves
        .iter()
        .copied()
        .zip(idx.iter().map(|&i| commitment.count - 1 + i))
        .collect();
    pairs.sort_unstable();
    if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
        let pos = idx[leaves.iter().position(|l| *l == w[0].0).unwrap_or(0)];
        return Err(PostVerifyError::Duplicate {
            replica: ReplicaIdx(pos),
        });
    }
    let mp = MerkleProof::<[u8; 32], Blake3Merge>::new(
        pairs.iter().map(|p| p.1).collect(),
        proof.lemmas.clone(),
    );
    if !mp.verify(&commitment.root, &leaves) {
        return Err(PostVerifyError::Aggregate);
    }
    proof
        .openings
        .par_iter()
        .zip(chals.par_iter())
        .enumerate()
        .try_for_each(|(index, (o, ch))| {
            let k = idx.binary_search(&ch.replica.0).unwrap_or(0);
            let desc = &proof.replicas[k];
            let want = ch.chunk(desc.len);
            if o.chunk != want {
                return Err(PostVerifyError::WrongChunk {
                    index,
                    got: o.chunk,
                    want,
                });
            }
            merkle::verify_chunk(&desc.comm_r, desc.len, o).map_err(|source| {
                PostVerifyError::Chunk {
                    index,
                    replica: ch.replica,
                    source,
                }
            })
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An in-memory node store; `drop` lists units whose bytes are gone.
    #[derive(Debug, Default)]
    pub(crate) struct MemStore {
        pub(crate) units: Vec<(Vec<u8>, MerkleTree)>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("unit {0} not stored")]
    pub(crate) struct Missing(pub(crate) u32);

    impl ReplicaReader for MemStore {
        type Error = Missing;
        fn tree(&self, r: ReplicaIdx) -> Result<&MerkleTree, Missing> {
            self.units
                .get(r.0 as usize)
                .map(|u| &u.1)
                .ok_or(Missing(r.0))
        }
        fn read(&self, r: ReplicaIdx, offset: u64, buf: &mut [u8]) -> Result<(), Missing> {
            let u = self.units.get(r.0 as usize).ok_or(Missing(r.0))?;
            let s = offset as usize;
            buf.copy_from_slice(u.0.get(s..s + buf.len()).ok_or(Missing(r.0))?);
            Ok(())
        }
    }

    pub(crate) fn store(n: usize, len: usize) -> (MemStore, PostProver) {
        let units: Vec<(Vec<u8>, MerkleTree)> = (0..n)
            .map(|i| {
                let mut d = vec![0u8; len];
                blake3::Hasher::new()
                    .update(&(i as u64).to_le_bytes())
                    .finalize_xof()
                    .fill(&mut d);
                let t = MerkleTree::build(&d).unwrap();
                (d, t)
            })
            .collect();
        let descs = units
            .iter()
            .map(|u| SealedReplica {
                comm_r: u.1.root(),
                len: u.0.len() as u64,
            })
            .collect();
        (MemStore { units }, PostProver::new(descs).unwrap())
    }

    #[test]
    fn honest_round_trip_and_replay() {
        let (s, p) = store(20, 50_000);
        let proof = p.prove(&[1; 32], 30, &s).unwrap();
        assert_eq!(verify(&p.commitment(), &[1; 32], 30, &proof), Ok(()));
        assert!(
            verify(&p.commitment(), &[2; 32], 30, &proof).is_err(),
            "replayed under a fresh seed"
        );
        let (s1, p1) = store(1, 3000);
        let proof = p1.prove(&[1; 32], 5, &s1).unwrap();
        assert_eq!(verify(&p1.commitment(), &[1; 32], 5, &proof), Ok(()));
    }

    #[test]
    fn flipped_byte_and_deleted_unit_are_caught() {
        let (mut s, p) = store(8, 40_000);
        let chals = challenges(&[3; 32], 8, 10);
        let ch = chals[4];
        let chunk = ch.chunk(40_000);
        s.units[ch.replica.0 as usize].0[chunk.0 as usize * 1024 + 5] ^= 0x10;
        // An honest-looking prover with a corrupted disk: its own tree check fails…
        assert!(matches!(
            p.prove(&[3; 32], 10, &s),
            Err(PostProveError::Open { .. })
        ));
        // …and a prover that opens the corrupted chunk anyway fails verification.
        let (good, _) = store(8, 40_000);
        let mut proof = p.prove(&[3; 32], 10, &good).unwrap();
        proof.openings[4].data[5] ^= 0x10;
        assert!(matches!(
            verify(&p.commitment(), &[3; 32], 10, &proof),
            Err(PostVerifyError::Chunk { index: 4, .. })
        ));
        // Deleted unit: nothing to read.
        let (mut s, p) = store(8, 40_000);
        s.units.truncate(ch.replica.0 as usize);
        assert!(matches!(
            p.prove(&[3; 32], 10, &s),
            Err(PostProveError::Read { .. })
        ));
    }

    #[test]
    fn unit_never_had_and_swapped_positions_fail() {
        // The node claims unit 3 but has another unit's bytes there: tree/root mismatch.
        let (mut s, p) = store(6, 20_000);
        let (other, _) = store(7, 20_000);
        s.units[3] = (other.units[6].0.clone(), other.units[6].1.clone());
        let chals = challenges(&[9; 32], 6, 12);
        if chals.iter().any(|c| c.replica.0 == 3) {
            assert!(matches!(
                p.prove(&[9; 32], 12, &s),
                Err(PostProveError::TreeMismatch { .. })
            ));
        }
        // Forged proof: swap the descriptors of two challenged units.
        let (s, p) = store(6, 20_000);
        let mut proof = p.prove(&[9; 32], 12, &s).unwrap();
        if proof.replicas.len() >= 2 {
            proof.replicas.swap(0, 1);
            assert!(verify(&p.commitment(), &[9; 32], 12, &proof).is_err());
        }
        assert!(matches!(
            PostProver::new(vec![
                SealedReplica {
                    comm_r: [1; 32],
                    len: 32
                };
                2
            ]),
            Err(PostSetupError::Duplicate { .. })
        ));
    }
}
