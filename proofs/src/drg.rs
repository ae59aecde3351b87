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

use crate::platform::Platform;

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
        // meta = j·m; buckets = ⌈log₂(meta)⌉, at least 1.
        let (meta, buckets, mut state) = self.draw_inputs(j);
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

/// Blocks per call of [`Graph::parents_x16_on`].
pub const GRAPH_LANES: usize = 16;

impl Graph {
    /// Parents of blocks `start..start + 16`: entry `l` is [`Graph::parents`] of `start + l`, or
    /// `None` when that block is 0 or `≥ end`. On [`Platform::Avx512`] CPUs with AVX-512DQ (64-bit
    /// multiplies) the 16 SplitMix streams run in two 8-lane vectors, for graphs whose meta-nodes
    /// fit in 32 bits (`7·end < 2^32`, replicas below 18 GiB); otherwise one block at a time.
    #[inline]
    pub fn parents_x16_on(
        &self,
        platform: Platform,
        start: u64,
        end: u64,
    ) -> [Option<[u64; PARENTS]>; GRAPH_LANES] {
        let full = start >= 1
            && start
                .checked_add(GRAPH_LANES as u64)
                .is_some_and(|e| e <= end && e <= VECTOR_BLOCK_LIMIT);
        if full && let Some(out) = try_avx512_parents(self, platform, start) {
            return out;
        }
        std::array::from_fn(|l| {
            let b = start.saturating_add(l as u64);
            if b < end {
                self.parents(BlockIdx(b))
            } else {
                None
            }
        })
    }

    /// Per-block inputs of the draws: meta-node, bucket count, initial SplitMix state.
    #[inline(always)]
    fn draw_inputs(&self, j: u64) -> (u64, u64, u64) {
        let meta = j * RANDOM_PARENTS as u64;
        let buckets = u64::from(64 - (meta - 1).leading_zeros()).max(1);
        (
            meta,
            buckets,
            self.seed[0] ^ j.wrapping_mul(self.seed[1] | 1),
        )
    }
}

/// Blocks `j` with `7·j < 2^32 − 8`: meta-nodes, spans and the `(meta − distance)` quotients fit
/// the vector path's 32-bit multiplies.
const VECTOR_BLOCK_LIMIT: u64 = (u32::MAX as u64 - 8) / RANDOM_PARENTS as u64;

#[rustversion::since(1.89)]
#[inline]
fn try_avx512_parents(
    g: &Graph,
    platform: Platform,
    start: u64,
) -> Option<[Option<[u64; PARENTS]>; GRAPH_LANES]> {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if platform == Platform::Avx512 && avx512::supported() {
        // SAFETY: `avx512::supported()` checked at run time that the CPU has AVX-512F and DQ.
        return Some(unsafe { avx512::parents_x16(g, start) });
    }
    let _ = (g, platform, start);
    None
}

#[rustversion::before(1.89)]
#[inline]
fn try_avx512_parents(
    _g: &Graph,
    _platform: Platform,
    _start: u64,
) -> Option<[Option<[u64; PARENTS]>; GRAPH_LANES]> {
    None
}

/// [`Graph::parents`] for 8 blocks per vector. Every step is the scalar one with 64-bit lanes:
/// SplitMix with `vpmullq`; the bucket with a 32×32 multiply; `⌊r·span / 2^64⌋` from two 32×32
/// products (exact because `span < 2^32`); `⌊x / 7⌋` for `x < 2^32` by the multiply-high
/// sequence compilers emit for 32-bit division by 7. Its intrinsics are stable from Rust 1.89
/// (above the MSRV, 1.88), hence the `rustversion` gate and the `clippy::incompatible_msrv`
/// allowance.
#[rustversion::since(1.89)]
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[allow(clippy::incompatible_msrv)]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{GRAPH_LANES, Graph, PARENTS, RANDOM_PARENTS};

    pub(super) fn supported() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq")
    }

    /// # Safety
    /// The CPU must support AVX-512F and AVX-512DQ; blocks `start..start + 16` must all be
    /// `≥ 1` and `< VECTOR_BLOCK_LIMIT`.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn parents_x16(
        g: &Graph,
        start: u64,
    ) -> [Option<[u64; PARENTS]>; GRAPH_LANES] {
        let mut meta = [[0u64; 8]; 2];
        let mut buckets = [[0u64; 8]; 2];
        let mut state = [[0u64; 8]; 2];
        for l in 0..GRAPH_LANES {
            let (m, b, s) = g.draw_inputs(start + l as u64);
            meta[l / 8][l % 8] = m;
            buckets[l / 8][l % 8] = b;
            state[l / 8][l % 8] = s;
        }
        let mut drawn = [[[0u64; 8]; RANDOM_PARENTS]; 2];
        let golden = _mm512_set1_epi64(0x9E37_79B9_7F4A_7C15_u64 as i64);
        let c1 = _mm512_set1_epi64(0xBF58_476D_1CE4_E5B9_u64 as i64);
        let c2 = _mm512_set1_epi64(0x94D0_49BB_1331_11EB_u64 as i64);
        let one = _mm512_set1_epi64(1);
        let two = _mm512_set1_epi64(2);
        let div7 = _mm512_set1_epi64(0x2492_4925);
        for h in 0..2 {
            // SAFETY: AVX-512F is enabled on this function; each load/store reads or writes the
            // 64 bytes of one `[u64; 8]` it borrows.
            unsafe {
                let meta_v = _mm512_loadu_si512(meta[h].as_ptr().cast());
                let buckets_v = _mm512_loadu_si512(buckets[h].as_ptr().cast());
                let mut s = _mm512_loadu_si512(state[h].as_ptr().cast());
                for out in drawn[h].iter_mut() {
                    s = _mm512_add_epi64(s, golden);
                    let mut z = s;
                    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64::<30>(z)), c1);
                    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64::<27>(z)), c2);
                    let r = _mm512_xor_si512(z, _mm512_srli_epi64::<31>(z));
                    let bucket = _mm512_add_epi64(
                        _mm512_srli_epi64::<32>(_mm512_mul_epu32(r, buckets_v)),
                        one,
                    );
                    let largest = _mm512_min_epu64(meta_v, _mm512_sllv_epi64(one, bucket));
                    let smallest = _mm512_min_epu64(
                        _mm512_max_epu64(_mm512_srli_epi64::<1>(largest), two),
                        largest,
                    );
                    let span = _mm512_add_epi64(_mm512_sub_epi64(largest, smallest), one);
                    let below = _mm512_srli_epi64::<32>(_mm512_add_epi64(
                        _mm512_mul_epu32(_mm512_srli_epi64::<32>(r), span),
                        _mm512_srli_epi64::<32>(_mm512_mul_epu32(r, span)),
                    ));
                    let distance = _mm512_min_epu64(_mm512_add_epi64(smallest, below), meta_v);
                    let x = _mm512_sub_epi64(meta_v, distance);
                    let q1 = _mm512_srli_epi64::<32>(_mm512_mul_epu32(x, div7));
                    let q = _mm512_srli_epi64::<2>(_mm512_add_epi64(
                        _mm512_srli_epi64::<1>(_mm512_sub_epi64(x, q1)),
                        q1,
                    ));
                    _mm512_storeu_si512(out.as_mut_ptr().cast(), q);
                }
            }
        }
        std::array::from_fn(|l| {
            let (h, i) = (l / 8, l % 8);
            let mut ps = [0u64; PARENTS];
            ps[0] = start + l as u64 - 1;
            for k in 0..RANDOM_PARENTS {
                ps[k + 1] = drawn[h][k][i];
            }
            Some(ps)
        })
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

    proptest! {
        /// The 16-block entry point equals 16 calls of `parents` on every platform (the AVX-512
        /// path on AVX-512DQ CPUs), at the start of a graph, at its end, around the 32-bit
        /// limit of the vector path and beyond it.
        #[test]
        fn sixteen_blocks_equal_one_at_a_time(
            seed in any::<[u8; 32]>(),
            start in prop_oneof![
                0u64..100,
                0u64..(1 << 22),
                (VECTOR_BLOCK_LIMIT - 40)..(VECTOR_BLOCK_LIMIT + 40),
                (1u64 << 33)..(1 << 40),
            ],
            extra in 0u64..40,
        ) {
            let end = start + extra;
            let g = Graph::new(&seed, end.max(1));
            for p in Platform::available() {
                let got = g.parents_x16_on(p, start, end);
                for (l, ps) in got.iter().enumerate() {
                    let b = start + l as u64;
                    let want = if b < end { g.parents(BlockIdx(b)) } else { None };
                    prop_assert_eq!(*ps, want, "{:?} block {}", p, b);
                }
                let got = g.parents_x16_on(p, start, u64::MAX);
                for (l, ps) in got.iter().enumerate() {
                    prop_assert_eq!(*ps, g.parents(BlockIdx(start + l as u64)), "{:?}", p);
                }
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
