//! Work counting for storage-saving adversaries (sans-IO: counts steps, never measures time).
//!
//! A node that kept only some replica blocks must recompute a challenged block from the kept ones.
//! Recomputing block `j` needs all its parents first, so the **sequential** work is the longest
//! path of not-kept blocks ending at `j` in the DRG: `depth(j) = 0` if kept, else
//! `1 + max(depth(parents(j)))`. Each step is `rounds` Sloth square roots, none of which can be
//! parallelised, so the answer takes at least `depth · rounds · t_sqrt` whatever the hardware
//! parallelism. [`RebuildCost::total_steps`] counts all blocks to recompute (parallelisable work).

use crate::drg::{BlockIdx, Graph};

/// What an adversary keeps of a replica (besides the plaintext).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// Nothing: seals on demand from the plaintext.
    PlainOnly,
    /// Every `n`-th replica block (checkpoints).
    EveryNth(u64),
    /// A pseudo-random fraction of the blocks (parts per million), seeded.
    RandomFraction {
        /// Kept fraction × 10⁶.
        ppm: u32,
        /// Selection seed.
        seed: u64,
    },
    /// The last `ppm`/10⁶ of the blocks (the suffix).
    Suffix {
        /// Kept fraction × 10⁶.
        ppm: u32,
    },
}

impl Strategy {
    /// Whether block `j` of `blocks` is kept.
    pub fn keeps(&self, j: u64, blocks: u64) -> bool {
        match *self {
            Self::PlainOnly => false,
            Self::EveryNth(n) => n > 0 && j.is_multiple_of(n),
            Self::RandomFraction { ppm, seed } => {
                let mut z = j.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
                z = (z ^ (z >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z ^= z >> 29;
                z % 1_000_000 < u64::from(ppm)
            }
            Self::Suffix { ppm } => {
                u128::from(j) * 1_000_000
                    >= u128::from(blocks) * u128::from(1_000_000 - ppm.min(1_000_000))
            }
        }
    }

    /// Fraction of blocks kept, measured over `blocks`.
    pub fn kept_fraction(&self, blocks: u64) -> f64 {
        (0..blocks).filter(|&j| self.keeps(j, blocks)).count() as f64 / blocks as f64
    }
}

/// Sequential depth of every block under `strategy`: the Sloth steps (× rounds) needed to
/// recompute it from what is kept.
pub fn depths(graph: &Graph, strategy: &Strategy) -> Vec<u32> {
    let n = graph.blocks();
    let mut d = vec![0u32; n as usize];
    for j in 0..n {
        if strategy.keeps(j, n) {
            continue;
        }
        let m = graph
            .parents(BlockIdx(j))
            .map_or(0, |ps| ps.iter().map(|&p| d[p as usize]).max().unwrap_or(0));
        d[j as usize] = m + 1;
    }
    d
}

/// Work to answer a set of challenged blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebuildCost {
    /// Longest sequential chain of block recomputations (the wall-clock floor, in blocks).
    pub max_depth: u64,
    /// All blocks that must be recomputed (parallelisable work).
    pub total_steps: u64,
}

/// The cost of answering `challenged` under `strategy`.
pub fn rebuild_cost(
    graph: &Graph,
    strategy: &Strategy,
    depth: &[u32],
    challenged: &[BlockIdx],
) -> RebuildCost {
    let n = graph.blocks();
    let max_depth = challenged
        .iter()
        .map(|j| u64::from(depth[j.0 as usize]))
        .max()
        .unwrap_or(0);
    // Ancestors not kept, by a backwards sweep from the highest challenged block.
    let mut need = vec![false; n as usize];
    for j in challenged {
        need[j.0 as usize] = true;
    }
    let mut total = 0;
    for j in (0..n).rev() {
        if !need[j as usize] || strategy.keeps(j, n) {
            continue;
        }
        total += 1;
        if let Some(ps) = graph.parents(BlockIdx(j)) {
            for p in ps {
                need[p as usize] = true;
            }
        }
    }
    RebuildCost {
        max_depth,
        total_steps: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_only_depth_is_the_index() {
        let g = Graph::new(&[1; 32], 5000);
        let d = depths(&g, &Strategy::PlainOnly);
        for j in [0usize, 1, 10, 4999] {
            assert_eq!(d[j] as usize, j + 1);
        }
        let c = rebuild_cost(&g, &Strategy::PlainOnly, &d, &[BlockIdx(4999)]);
        assert_eq!(
            c,
            RebuildCost {
                max_depth: 5000,
                total_steps: 5000
            }
        );
    }

    #[test]
    fn a_chain_would_fall_to_checkpoints_but_the_drg_does_not() {
        let n = 1 << 16;
        let g = Graph::new(&[2; 32], n);
        let d = depths(&g, &Strategy::EveryNth(8));
        let max = *d.iter().max().unwrap_or(&0);
        // On a pure chain the depth would be ≤ 7; the long edges make it a large fraction of n.
        assert!(u64::from(max) > n / 4, "max depth {max}");
        assert!((Strategy::EveryNth(8).kept_fraction(n) - 0.125).abs() < 1e-3);
    }
}
