//! The depth-robust graph over replica blocks.
//!
//! Block `j ≥ 1` has [`PARENTS`] parents: `j − 1` (the predecessor) and [`RANDOM_PARENTS`] earlier
//! blocks drawn by bucket sampling (Alwen–Blocki–Pietrzak, "Depth-robust graphs and their
//! cumulative memory complexity", EUROCRYPT 2017, as instantiated in Filecoin's `BucketGraph`):
//! node `j` becomes meta-node `j·m` (`m` = random parents), a bucket `b ∈ [1, ⌈log₂(j·m)⌉]` is
//! drawn uniformly, then a distance uniformly in `[max(2, 2^b/2), min(j·m, 2^b)]`; the parent is
//! `(j·m − distance) / m`. Short edges and long edges are equally likely per bucket, which is what
//! makes the graph depth-robust. Block 0 has no parents.
//!
//! The randomness is a SplitMix64 stream seeded by the graph seed (the replica id) and `j`: the
//! graph is public, so it needs uniformity, not secrecy, and it must be cheap because unsealing
//! recomputes it for every block it decodes.

use serde::{Deserialize, Serialize};

/// Parents per block (predecessor included). The parent key hashes `PARENTS × 32 = 256` bytes:
/// exactly four BLAKE3 blocks.
pub const PARENTS: usize = 8;
/// Random (bucket-sampled) parents per block.
pub const RANDOM_PARENTS: usize = PARENTS - 1;

/// Index of a 32-byte block (field element) inside a replica.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct BlockIdx(pub u64);

/// The bucket-sampling graph of one replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Graph {
    seed: [u64; 2],
    blocks: u64,
}

#[inline(always)]
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Maps a uniform `r` to `[0, n)` by a multiply-high (Lemire): no division on the hot path.
#[inline(always)]
fn below(r: u64, n: u64) -> u64 {
    ((u128::from(r) * u128::from(n)) >> 64) as u64
}

impl Graph {
    /// The graph with `blocks` nodes seeded by `seed` (the replica id).
    pub fn new(seed: &[u8; 32], blocks: u64) -> Self {
        let h = blake3::keyed_hash(seed, b"granary.drg.bucket.v1");
        let b = h.as_bytes();
        let mut s0 = [0u8; 8];
        let mut s1 = [0u8; 8];
        s0.copy_from_slice(&b[..8]);
        s1.copy_from_slice(&b[8..16]);
        Self {
            seed: [u64::from_le_bytes(s0), u64::from_le_bytes(s1)],
            blocks,
        }
    }

    /// Number of nodes (blocks).
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Parents of block `j` (`None` for block 0). `parents[0] = j − 1`; all are `< j`.
    #[inline]
    pub fn parents(&self, j: BlockIdx) -> Option<[u64; PARENTS]> {
        let j = j.0;
        if j == 0 {
            return None;
        }
        let m = RANDOM_PARENTS as u64;
        let meta = j * m;
        // ⌈log₂(meta)⌉, at least 1.
        let buckets = u64::from(64 - (meta - 1).leading_zeros()).max(1);
        let mut state = self.seed[0] ^ j.wrapping_mul(self.seed[1] | 1);
        let mut out = [0u64; PARENTS];
        out[0] = j - 1;
        for p in out.iter_mut().skip(1) {
            // One 64-bit draw per parent: the bucket from its low 32 bits, the distance from the
            // multiply-high of all 64 (dominated by the high bits).
            let r = splitmix(&mut state);
            let bucket = (((r & 0xFFFF_FFFF) * buckets) >> 32) + 1;
            let largest = meta.min(1u64 << bucket);
            let smallest = (largest >> 1).max(2).min(largest);
            let span = largest - smallest + 1;
            let distance = smallest + below(r, span);
            *p = (meta - distance.min(meta)) / m;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn parents_are_earlier_and_deterministic(seed in any::<[u8; 32]>(), j in 1u64..(1 << 40)) {
            let g = Graph::new(&seed, 1 << 41);
            let p = g.parents(BlockIdx(j));
            prop_assert_eq!(p, g.parents(BlockIdx(j)));
            let Some(p) = p else { return Err(TestCaseError::fail("no parents")) };
            prop_assert_eq!(p[0], j - 1);
            for q in p {
                prop_assert!(q < j);
            }
        }
    }

    #[test]
    fn block_zero_has_no_parents_and_edges_are_long_and_short() {
        let g = Graph::new(&[3; 32], 1 << 20);
        assert_eq!(g.parents(BlockIdx(0)), None);
        let (mut short, mut long) = (0, 0);
        for j in (1 << 19)..(1 << 19) + 1000 {
            let Some(p) = g.parents(BlockIdx(j)) else {
                continue;
            };
            for &q in &p[1..] {
                if j - q < 64 {
                    short += 1;
                }
                if j - q > (1 << 16) {
                    long += 1;
                }
            }
        }
        // Bucket sampling: each of the ~22 buckets equally likely → both extremes common.
        assert!(short > 500, "short edges {short}");
        assert!(long > 500, "long edges {long}");
        assert!(
            Graph::new(&[4; 32], 1 << 20).parents(BlockIdx(12345)) != g.parents(BlockIdx(12345))
        );
    }
}
