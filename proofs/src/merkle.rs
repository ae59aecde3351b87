//! BLAKE3-native Merkle commitments over replicas.
//!
//! The commitment to a byte string is **its plain BLAKE3 hash**: BLAKE3 is itself a Merkle tree
//! whose leaves are 1 KiB chunks, left-balanced, and [`blake3::hazmat`] exposes its chaining
//! values. So `comm_r = blake3::hash(replica)` and, for a single-shard sealing unit,
//! `comm_d = blake3::hash(shard) = shard_id`: the plaintext opening in a seal proof goes to the shard
//! id itself. Building the commitment runs at BLAKE3's own SIMD + multi-thread speed.
//!
//! A [`MerkleTree`] keeps the chaining values of 16 KiB *groups* and everything above them
//! (64 bytes per 16 KiB, 0.4 % of the data). Opening a 1 KiB chunk reads its group back (the
//! caller does the IO), recomputes the 16 chunk chaining values and takes the rest of the path from
//! the stored levels. A left-balanced tree is a tree of levels where an odd last node is promoted
//! unchanged; that view gives every sibling's position from `(chunk index, total chunks)`.

use std::ops::Range;

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// BLAKE3 chunk length: the leaf size.
pub const CHUNK_LEN: usize = blake3::CHUNK_LEN;
/// Chunks per stored group (the lowest stored level).
pub const GROUP_CHUNKS: usize = 16;
/// Bytes per stored group.
pub const GROUP_LEN: usize = CHUNK_LEN * GROUP_CHUNKS;
const GROUP_LOG: u32 = GROUP_CHUNKS.trailing_zeros();

/// Index of a 1 KiB chunk (Merkle leaf).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ChunkIdx(pub u64);

/// Errors from [`MerkleTree::build`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// The empty string has no chunks to open.
    #[error("cannot commit to empty data")]
    Empty,
}

/// Errors from [`MerkleTree::open`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError {
    /// The chunk is past the end of the committed data.
    #[error("chunk {chunk:?} out of range ({chunks} chunks)")]
    OutOfRange {
        /// Requested chunk.
        chunk: ChunkIdx,
        /// Chunks in the tree.
        chunks: u64,
    },
    /// The group bytes passed in are not the group's length.
    #[error("group bytes for chunk {chunk:?}: got {got}, want {want}")]
    GroupLength {
        /// Requested chunk.
        chunk: ChunkIdx,
        /// Bytes given.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// The group bytes do not hash to the stored group chaining value (data changed on disk).
    #[error("group containing chunk {chunk:?} does not match the tree")]
    GroupMismatch {
        /// Requested chunk.
        chunk: ChunkIdx,
    },
}

/// Why a chunk opening failed to verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The chunk index is past the end of the committed data.
    #[error("chunk {chunk:?} out of range ({chunks} chunks)")]
    OutOfRange {
        /// Opened chunk.
        chunk: ChunkIdx,
        /// Chunks in the committed data.
        chunks: u64,
    },
    /// The chunk has the wrong length for its position.
    #[error("chunk {chunk:?} has {got} bytes, expected {want}")]
    ChunkLength {
        /// Opened chunk.
        chunk: ChunkIdx,
        /// Bytes given.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// The path has the wrong number of siblings.
    #[error("path for chunk {chunk:?} has {got} siblings, expected {want}")]
    PathLength {
        /// Opened chunk.
        chunk: ChunkIdx,
        /// Siblings given.
        got: usize,
        /// Siblings expected.
        want: usize,
    },
    /// The recomputed root differs from the commitment.
    #[error("chunk {chunk:?} does not hash to the root")]
    RootMismatch {
        /// Opened chunk.
        chunk: ChunkIdx,
    },
}

/// A 1 KiB chunk with its sibling chaining values, bottom-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkOpening {
    /// Which chunk.
    pub chunk: ChunkIdx,
    /// The chunk's bytes (1024, or fewer for the last chunk).
    pub data: Vec<u8>,
    /// Sibling chaining values from the leaf level upwards.
    pub path: Vec<[u8; 32]>,
}

/// Number of chunks in `len` bytes (at least 1).
pub fn chunk_count(len: u64) -> u64 {
    len.div_ceil(CHUNK_LEN as u64).max(1)
}

fn chunk_cv(index: u64, bytes: &[u8]) -> ChainingValue {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(index * CHUNK_LEN as u64);
    h.update(bytes);
    h.finalize_non_root()
}

/// Folds `nodes` one level up in place (pairs merged, an odd last node promoted). `is_root`
/// marks the final merge of two nodes into the root.
fn fold_level(nodes: &[ChainingValue], is_root: bool) -> Vec<ChainingValue> {
    nodes
        .chunks(2)
        .map(|pair| match pair {
            [l, r] if is_root => *merge_subtrees_root(l, r, Mode::Hash).as_bytes(),
            [l, r] => merge_subtrees_non_root(l, r, Mode::Hash),
            [one] => *one,
            _ => [0; 32], // unreachable: chunks(2) yields 1 or 2 items
        })
        .collect()
}

/// The stored upper part of a replica's BLAKE3 tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleTree {
    len: u64,
    /// `levels[0]` = group chaining values; each next level folds the previous; stops at 2 nodes.
    levels: Vec<Vec<ChainingValue>>,
    root: [u8; 32],
}

impl MerkleTree {
    /// Builds the tree of `data` using all rayon threads; `root()` equals `blake3::hash(data)`.
    pub fn build(data: &[u8]) -> Result<Self, BuildError> {
        Self::build_with(data, true)
    }

    /// Builds the tree on the calling thread only (BLAKE3 SIMD, no rayon).
    pub fn build_single_thread(data: &[u8]) -> Result<Self, BuildError> {
        Self::build_with(data, false)
    }

    fn build_with(data: &[u8], parallel: bool) -> Result<Self, BuildError> {
        if data.is_empty() {
            return Err(BuildError::Empty);
        }
        let len = data.len() as u64;
        if data.len() <= GROUP_LEN {
            return Ok(Self {
                len,
                levels: Vec::new(),
                root: *blake3::hash(data).as_bytes(),
            });
        }
        let group_cv = |(g, bytes): (usize, &[u8])| {
            let mut h = blake3::Hasher::new();
            h.set_input_offset((g * GROUP_LEN) as u64);
            h.update(bytes);
            h.finalize_non_root()
        };
        let groups: Vec<ChainingValue> = if parallel {
            data.par_chunks(GROUP_LEN)
                .enumerate()
                .map(group_cv)
                .collect()
        } else {
            data.chunks(GROUP_LEN).enumerate().map(group_cv).collect()
        };
        let mut levels = vec![groups];
        let mut root = [0u8; 32];
        while let Some(top) = levels.last() {
            if top.len() == 2 {
                root = fold_level(top, true)[0];
                break;
            }
            let next = fold_level(top, false);
            levels.push(next);
        }
        Ok(Self { len, levels, root })
    }

    /// The commitment: `blake3::hash` of the data.
    pub fn root(&self) -> [u8; 32] {
        self.root
    }

    /// Length of the committed data in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: empty data cannot be committed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of chunks (leaves).
    pub fn chunks(&self) -> u64 {
        chunk_count(self.len)
    }

    /// Byte range of the group that [`Self::open`] needs for `chunk`.
    pub fn group_range(&self, chunk: ChunkIdx) -> Range<u64> {
        let start = (chunk.0 >> GROUP_LOG) * GROUP_LEN as u64;
        start.min(self.len)..(start + GROUP_LEN as u64).min(self.len)
    }

    /// Opens `chunk`, given the bytes of its group (`self.group_range(chunk)`).
    pub fn open(&self, chunk: ChunkIdx, group: &[u8]) -> Result<ChunkOpening, OpenError> {
        let chunks = self.chunks();
        if chunk.0 >= chunks {
            return Err(OpenError::OutOfRange { chunk, chunks });
        }
        let range = self.group_range(chunk);
        let want = (range.end - range.start) as usize;
        if group.len() != want {
            return Err(OpenError::GroupLength {
                chunk,
                got: group.len(),
                want,
            });
        }
        let first = chunk.0 >> GROUP_LOG << GROUP_LOG;
        let mut level: Vec<ChainingValue> = group
            .chunks(CHUNK_LEN)
            .enumerate()
            .map(|(i, c)| chunk_cv(first + i as u64, c))
            .collect();
        let local = (chunk.0 - first) as usize;
        let data = group[local * CHUNK_LEN..((local + 1) * CHUNK_LEN).min(group.len())].to_vec();
        let mut path = Vec::new();
        let mut idx = local;
        // Inside the group: levels 0..GROUP_LOG.
        for _ in 0..GROUP_LOG {
            if level.len() == 1 {
                break;
            }
            if let Some(s) = level.get(idx ^ 1) {
                path.push(*s);
            }
            let is_root = self.levels.is_empty() && level.len() == 2;
            level = fold_level(&level, is_root);
            idx >>= 1;
        }
        if self.levels.is_empty() {
            return Ok(ChunkOpening { chunk, data, path });
        }
        let g = (chunk.0 >> GROUP_LOG) as usize;
        if level.first() != self.levels[0].get(g) {
            return Err(OpenError::GroupMismatch { chunk });
        }
        let mut idx = g;
        for lvl in &self.levels {
            if let Some(s) = lvl.get(idx ^ 1) {
                path.push(*s);
            }
            idx >>= 1;
        }
        Ok(ChunkOpening { chunk, data, path })
    }
}

/// Verifies that `opening` is chunk `opening.chunk` of data of `len` bytes hashing to `root`.
pub fn verify_chunk(root: &[u8; 32], len: u64, opening: &ChunkOpening) -> Result<(), VerifyError> {
    let chunk = opening.chunk;
    let chunks = chunk_count(len);
    if chunk.0 >= chunks {
        return Err(VerifyError::OutOfRange { chunk, chunks });
    }
    let start = chunk.0 * CHUNK_LEN as u64;
    let want = (len - start).min(CHUNK_LEN as u64) as usize;
    if opening.data.len() != want {
        return Err(VerifyError::ChunkLength {
            chunk,
            got: opening.data.len(),
            want,
        });
    }
    if chunks == 1 {
        if !opening.path.is_empty() {
            return Err(VerifyError::PathLength {
                chunk,
                got: opening.path.len(),
                want: 0,
            });
        }
        return match blake3::hash(&opening.data).as_bytes() == root {
            true => Ok(()),
            false => Err(VerifyError::RootMismatch { chunk }),
        };
    }
    // Walk the levels bottom-up: at each level with more than one node, a sibling exists unless
    // this node is an odd last one (promoted).
    let mut want_path = 0;
    let (mut size, mut idx) = (chunks, chunk.0);
    while size > 1 {
        if idx ^ 1 < size {
            want_path += 1;
        }
        size = size.div_ceil(2);
        idx >>= 1;
    }
    if opening.path.len() != want_path {
        return Err(VerifyError::PathLength {
            chunk,
            got: opening.path.len(),
            want: want_path,
        });
    }
    let mut cv = chunk_cv(chunk.0, &opening.data);
    let mut siblings = opening.path.iter();
    let (mut size, mut idx) = (chunks, chunk.0);
    while size > 1 {
        if idx ^ 1 < size {
            let Some(s) = siblings.next() else {
                return Err(VerifyError::PathLength {
                    chunk,
                    got: opening.path.len(),
                    want: want_path,
                });
            };
            let (l, r) = if idx & 1 == 0 { (&cv, s) } else { (s, &cv) };
            if size == 2 {
                return match merge_subtrees_root(l, r, Mode::Hash).as_bytes() == root {
                    true => Ok(()),
                    false => Err(VerifyError::RootMismatch { chunk }),
                };
            }
            cv = merge_subtrees_non_root(l, r, Mode::Hash);
        }
        size = size.div_ceil(2);
        idx >>= 1;
    }
    Err(VerifyError::RootMismatch { chunk })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(167) ^ seed ^ (i >> 10) as u8)
            .collect()
    }

    fn open_and_verify(d: &[u8], chunk: u64) -> Result<(), VerifyError> {
        let t =
            MerkleTree::build(d).map_err(|_| VerifyError::RootMismatch { chunk: ChunkIdx(0) })?;
        let r = t.group_range(ChunkIdx(chunk));
        let o = t
            .open(ChunkIdx(chunk), &d[r.start as usize..r.end as usize])
            .map_err(|_| VerifyError::RootMismatch {
                chunk: ChunkIdx(chunk),
            })?;
        verify_chunk(&t.root(), d.len() as u64, &o)
    }

    #[test]
    fn root_is_blake3_hash() {
        for len in [1, 1024, 1025, 16 * 1024, 16 * 1024 + 1, 100_000, 1 << 20] {
            let d = data(len, 1);
            assert_eq!(
                MerkleTree::build(&d).map(|t| t.root()),
                Ok(*blake3::hash(&d).as_bytes()),
                "len {len}"
            );
            assert_eq!(
                MerkleTree::build_single_thread(&d).map(|t| t.root()),
                Ok(*blake3::hash(&d).as_bytes())
            );
        }
        assert_eq!(MerkleTree::build(&[]), Err(BuildError::Empty));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn every_opening_verifies_and_tampering_fails(len in 1usize..300_000, pick in any::<u64>(), flip in any::<usize>()) {
            let d = data(len, 9);
            let chunks = chunk_count(len as u64);
            let c = pick % chunks;
            prop_assert_eq!(open_and_verify(&d, c), Ok(()));
            let t = MerkleTree::build(&d).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let r = t.group_range(ChunkIdx(c));
            let mut o = t.open(ChunkIdx(c), &d[r.start as usize..r.end as usize]).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let i = flip % o.data.len();
            o.data[i] ^= 1;
            prop_assert_eq!(verify_chunk(&t.root(), len as u64, &o), Err(VerifyError::RootMismatch { chunk: ChunkIdx(c) }));
            o.data[i] ^= 1;
            if !o.path.is_empty() {
                let k = flip % o.path.len();
                o.path[k][0] ^= 1;
                prop_assert!(verify_chunk(&t.root(), len as u64, &o).is_err());
                o.path[k][0] ^= 1;
            }
            // A valid chunk presented at another index fails.
            if chunks > 1 {
                o.chunk = ChunkIdx((c + 1) % chunks);
                prop_assert!(verify_chunk(&t.root(), len as u64, &o).is_err());
            }
        }
    }

    #[test]
    fn open_rejects_changed_group() {
        let mut d = data(200_000, 3);
        let t = MerkleTree::build(&d).unwrap();
        d[20_000] ^= 1;
        let r = t.group_range(ChunkIdx(19));
        assert_eq!(
            t.open(ChunkIdx(19), &d[r.start as usize..r.end as usize]),
            Err(OpenError::GroupMismatch {
                chunk: ChunkIdx(19)
            })
        );
        assert!(matches!(
            t.open(ChunkIdx(1000), &[]),
            Err(OpenError::OutOfRange { .. })
        ));
    }
}
