//! DRG-PoRep sealing and unsealing.
//!
//! A replica is a sequence of 32-byte blocks (field elements of [`crate::field`]). For block `j`
//! with parents `P(j)` from the [`Graph`] seeded by the replica id:
//!
//! ```text
//! key_j      = BLAKE3-chunk-CV(key = replica_id, chunk counter = j, replica[P(j)] as 256 bytes)
//! replica[j] = Sloth^rounds(plain[j] ⊕ key_j)          (slow: ~255 squarings per round)
//! plain[j]   = Sloth^-rounds(replica[j]) ⊕ key_j        (fast: one squaring per round)
//! ```
//!
//! Sealing runs in order of `j` (each key needs earlier replica blocks); unsealing any range needs
//! only replica blocks, so it is parallel and proportional to the range.
//!
//! **Field encoding.** `plain[j] ⊕ key_j` is read as a little-endian integer and must be `< p`
//! (`p = 2^256 − 189`). For data independent of the key this fails with probability
//! `189 / 2^256`; data crafted against one replica id is rejected with
//! [`SealError::OutOfField`] and the node re-seals with another [`SealParams::nonce`].

use std::ops::Range;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::drg::{BlockIdx, Graph, PARENTS};
use crate::field::{Fe, sloth_forward, sloth_inverse, unseal_x16_on};
use crate::keyhash::{self, KEY_INPUT_LEN, MAX_LANES, ParentRefs, ZERO_BLOCK};
use crate::platform::Platform;

/// Bytes per block (one field element).
pub const BLOCK_LEN: usize = 32;

/// Sealing parameters; part of the replica id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SealParams {
    /// Sloth rounds per block (each ~255 sequential modular squarings).
    pub rounds: u32,
    /// Re-seal nonce: changes the replica id (used after [`SealError::OutOfField`]).
    pub nonce: u32,
}

impl SealParams {
    /// Parameter-format version, hashed into the replica id.
    pub const VERSION: u32 = 1;

    /// The defaults of `docs/proofs.md` ([`crate::params::DEFAULT_ROUNDS`] rounds per block).
    pub const DEFAULT: Self = Self {
        rounds: crate::params::DEFAULT_ROUNDS,
        nonce: 0,
    };

    /// Canonical encoding hashed into the replica id.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&Self::VERSION.to_le_bytes());
        b[4..8].copy_from_slice(&self.rounds.to_le_bytes());
        b[8..12].copy_from_slice(&self.nonce.to_le_bytes());
        b[12..16].copy_from_slice(&(PARENTS as u32).to_le_bytes());
        b
    }
}

impl Default for SealParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A node's identity (e.g. its ed25519 public key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

/// The plaintext identifier: the shard id `BLAKE3(shard)` (= `comm_d` of a one-shard unit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DataId(pub [u8; 32]);

/// `BLAKE3(tag ‖ node_id ‖ data_id ‖ params)`: makes each node's replica of a shard unique.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaId(pub [u8; 32]);

impl ReplicaId {
    /// Derives the replica id.
    pub fn derive(node: &NodeId, data: &DataId, params: &SealParams) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(b"granary.replica_id.v1");
        h.update(&node.0);
        h.update(&data.0);
        h.update(&params.to_bytes());
        Self(*h.finalize().as_bytes())
    }
}

/// Errors from [`seal`] / [`seal_in_place`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// Data length is zero or not a multiple of [`BLOCK_LEN`].
    #[error("data length {len} is not a positive multiple of 32 bytes")]
    Length {
        /// Bytes given.
        len: usize,
    },
    /// `plain[j] ⊕ key_j ≥ p`: reseal with another nonce.
    #[error("block {block:?}: plain ⊕ key is not a field element; reseal with another nonce")]
    OutOfField {
        /// Offending block.
        block: BlockIdx,
    },
}

/// Errors from [`unseal_range`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnsealError {
    /// Replica length is zero or not a multiple of [`BLOCK_LEN`].
    #[error("replica length {len} is not a positive multiple of 32 bytes")]
    Length {
        /// Bytes given.
        len: usize,
    },
    /// The block range is outside the replica or `out` has the wrong size.
    #[error("range {range:?} invalid for {blocks} blocks / output of {out} bytes")]
    Range {
        /// Requested range.
        range: Range<u64>,
        /// Blocks in the replica.
        blocks: u64,
        /// Output buffer length.
        out: usize,
    },
    /// A replica block is `≥ p`: the replica is corrupt.
    #[error("replica block {block:?} is not a field element")]
    NotCanonical {
        /// Offending block.
        block: BlockIdx,
    },
}

fn block(data: &[u8], j: u64) -> &[u8; BLOCK_LEN] {
    let s = j as usize * BLOCK_LEN;
    <&[u8; BLOCK_LEN]>::try_from(&data[s..s + BLOCK_LEN]).unwrap_or(&[0; BLOCK_LEN])
}

/// Fills `input` with the parents' replica blocks of `j` (zeros for block 0).
#[inline]
pub(crate) fn gather_parents(
    graph: &Graph,
    replica: &[u8],
    j: u64,
    input: &mut [u8; KEY_INPUT_LEN],
) {
    match graph.parents(BlockIdx(j)) {
        None => input.fill(0),
        Some(ps) => {
            for (k, &p) in ps.iter().enumerate() {
                input[k * BLOCK_LEN..(k + 1) * BLOCK_LEN].copy_from_slice(block(replica, p));
            }
        }
    }
}

#[inline(always)]
fn prefetch(replica: &[u8], b: u64) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let s = (b as usize * BLOCK_LEN).min(replica.len().saturating_sub(1));
        // SAFETY: `s` is in bounds of `replica`; a prefetch is a hint that never faults and the
        // pointer is not dereferenced. SSE is part of the x86-64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(replica.as_ptr().add(s).cast()) };
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = (replica, b);
}

fn xor32(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// Seals one block given its key (`Sloth^rounds(plain ⊕ key)`).
pub fn seal_block(
    plain: &[u8; 32],
    key: &[u8; 32],
    rounds: u32,
    j: BlockIdx,
) -> Result<[u8; 32], SealError> {
    let x = Fe::from_bytes(&xor32(plain, key)).ok_or(SealError::OutOfField { block: j })?;
    Ok(sloth_forward(x, rounds).to_bytes())
}

/// Unseals one block given its key; `None` if the replica block is not a field element.
pub fn unseal_block(replica: &[u8; 32], key: &[u8; 32], rounds: u32) -> Option<[u8; 32]> {
    let y = Fe::from_bytes(replica)?;
    Some(xor32(&sloth_inverse(y, rounds).to_bytes(), key))
}

/// Seals `data` in place, turning the plaintext into the replica. On error the buffer holds a
/// partial replica: reseal from the plaintext.
pub fn seal_in_place(
    params: &SealParams,
    replica_id: &ReplicaId,
    data: &mut [u8],
) -> Result<(), SealError> {
    if data.is_empty() || !data.len().is_multiple_of(BLOCK_LEN) {
        return Err(SealError::Length { len: data.len() });
    }
    let blocks = (data.len() / BLOCK_LEN) as u64;
    let graph = Graph::new(&replica_id.0, blocks);
    let mut input = [0u8; KEY_INPUT_LEN];
    for j in 0..blocks {
        gather_parents(&graph, data, j, &mut input);
        let key = keyhash::parent_key_scalar(&replica_id.0, j, &input);
        let out = seal_block(block(data, j), &key, params.rounds, BlockIdx(j))?;
        let s = j as usize * BLOCK_LEN;
        data[s..s + BLOCK_LEN].copy_from_slice(&out);
    }
    Ok(())
}

/// Seals a copy of `plain` and returns the replica.
pub fn seal(
    params: &SealParams,
    replica_id: &ReplicaId,
    plain: &[u8],
) -> Result<Vec<u8>, SealError> {
    let mut out = plain.to_vec();
    seal_in_place(params, replica_id, &mut out)?;
    Ok(out)
}

/// Unseals blocks `range` of `replica` into `out` (`32 × range.len()` bytes) on the calling
/// thread, [`MAX_LANES`] keys at a time on the detected [`Platform`].
pub fn unseal_range(
    params: &SealParams,
    replica_id: &ReplicaId,
    replica: &[u8],
    range: Range<u64>,
    out: &mut [u8],
) -> Result<(), UnsealError> {
    unseal_range_on(Platform::detect(), params, replica_id, replica, range, out)
}

/// [`unseal_range`] on an explicit platform (benchmarks and tests compare platforms).
///
/// Works in batches of [`MAX_LANES`] blocks: the parents of the next batch are computed (16 at a
/// time, [`Graph::parents_x16_on`]) and their cache lines prefetched while the current batch
/// hashes; the key kernel reads the parent blocks in place (no 256-byte copies); a full batch's
/// Sloth inverses, canonical checks and XOR with the keys are one call
/// ([`crate::field::unseal_x16_on`]).
pub fn unseal_range_on(
    platform: Platform,
    params: &SealParams,
    replica_id: &ReplicaId,
    replica: &[u8],
    range: Range<u64>,
    out: &mut [u8],
) -> Result<(), UnsealError> {
    let blocks = check_unseal(replica, &range, out)?;
    let graph = Graph::new(&replica_id.0, blocks);
    let (rblocks, _) = replica.as_chunks::<BLOCK_LEN>();
    let (oblocks, _) = out.as_chunks_mut::<BLOCK_LEN>();
    let parents_of = |start: u64| -> [Option<[u64; PARENTS]>; MAX_LANES] {
        graph.parents_x16_on(platform, start, range.end)
    };
    let mut j = range.start;
    // Two parent buffers: the current batch's and the next one's (computed and prefetched while
    // the current batch hashes), swapped by batch parity instead of copied.
    let mut parents = [parents_of(j), [None; MAX_LANES]];
    let mut refs: [ParentRefs<'_>; MAX_LANES] = [[&ZERO_BLOCK; PARENTS]; MAX_LANES];
    let mut keys = [[0u8; 32]; MAX_LANES];
    for (batch, outs) in oblocks.chunks_mut(MAX_LANES).enumerate() {
        let n = outs.len();
        let (cur, next) = (batch & 1, (batch + 1) & 1);
        let counters: [u64; MAX_LANES] = std::array::from_fn(|l| j + l as u64);
        for (r, ps) in refs.iter_mut().zip(&parents[cur]) {
            match ps {
                Some(ps) => {
                    for (rk, &p) in r.iter_mut().zip(ps) {
                        *rk = rblocks.get(p as usize).unwrap_or(&ZERO_BLOCK);
                    }
                }
                None => *r = [&ZERO_BLOCK; PARENTS],
            }
        }
        parents[next] = parents_of(j + MAX_LANES as u64);
        for ps in parents[next].iter().flatten() {
            for &p in ps {
                prefetch(replica, p);
            }
        }
        if n == MAX_LANES {
            keys = keyhash::parent_keys_refs_x16(platform, &replica_id.0, &counters, &refs);
        } else {
            keyhash::parent_keys_refs(
                platform,
                &replica_id.0,
                &counters[..n],
                &refs[..n],
                &mut keys[..n],
            );
        }
        let ys = &rblocks[(range.start as usize + batch * MAX_LANES)..][..n];
        // A full batch unseals in one call; a short one, the scalar platform, or a batch holding
        // a non-canonical block (so the error names the first one) goes block by block.
        let whole = match (
            <&[_; MAX_LANES]>::try_from(ys),
            <&mut [_; MAX_LANES]>::try_from(&mut *outs),
        ) {
            (Ok(y16), Ok(o16)) if platform != Platform::Scalar => {
                unseal_x16_on(platform, y16, &keys, params.rounds, o16)
            }
            _ => false,
        };
        if !whole {
            for (l, ((o, y), key)) in outs.iter_mut().zip(ys).zip(&keys).enumerate() {
                *o = unseal_block(y, key, params.rounds).ok_or(UnsealError::NotCanonical {
                    block: BlockIdx(j + l as u64),
                })?;
            }
        }
        j += n as u64;
    }
    Ok(())
}

/// [`unseal_range`] split across rayon threads (64 KiB of output per task).
pub fn unseal_range_par(
    params: &SealParams,
    replica_id: &ReplicaId,
    replica: &[u8],
    range: Range<u64>,
    out: &mut [u8],
) -> Result<(), UnsealError> {
    check_unseal(replica, &range, out)?;
    const TASK_BLOCKS: usize = 2048;
    out.par_chunks_mut(TASK_BLOCKS * BLOCK_LEN)
        .enumerate()
        .try_for_each(|(t, o)| {
            let start = range.start + (t * TASK_BLOCKS) as u64;
            let end = start + (o.len() / BLOCK_LEN) as u64;
            unseal_range(params, replica_id, replica, start..end, o)
        })
}

fn check_unseal(replica: &[u8], range: &Range<u64>, out: &[u8]) -> Result<u64, UnsealError> {
    if replica.is_empty() || !replica.len().is_multiple_of(BLOCK_LEN) {
        return Err(UnsealError::Length { len: replica.len() });
    }
    let blocks = (replica.len() / BLOCK_LEN) as u64;
    let ok = range.start <= range.end
        && range.end <= blocks
        && (range.end - range.start) as usize * BLOCK_LEN == out.len();
    if !ok {
        return Err(UnsealError::Range {
            range: range.clone(),
            blocks,
            out: out.len(),
        });
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    pub(crate) fn sample(len: usize, seed: u8) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut h = blake3::Hasher::new();
        h.update(&[seed]);
        let mut xof = h.finalize_xof();
        out.resize(len, 0);
        xof.fill(&mut out);
        out
    }

    fn rid(n: u8) -> ReplicaId {
        ReplicaId::derive(&NodeId([n; 32]), &DataId([1; 32]), &SealParams::DEFAULT)
    }

    #[test]
    fn seal_unseal_round_trip_all_ranges() {
        let plain = sample(32 * 300, 1);
        let p = SealParams {
            rounds: 2,
            nonce: 0,
        };
        let replica = seal(&p, &rid(1), &plain).unwrap();
        assert_ne!(replica, plain);
        let mut out = vec![0u8; plain.len()];
        unseal_range(&p, &rid(1), &replica, 0..300, &mut out).unwrap();
        assert_eq!(out, plain);
        let mut out = vec![0u8; 32 * 13];
        unseal_range_on(Platform::Scalar, &p, &rid(1), &replica, 100..113, &mut out).unwrap();
        assert_eq!(out, plain[3200..3200 + 32 * 13]);
        let mut out = vec![0u8; plain.len()];
        unseal_range_par(&p, &rid(1), &replica, 0..300, &mut out).unwrap();
        assert_eq!(out, plain);
    }

    #[test]
    fn replica_depends_on_node_and_errors_are_located() {
        let plain = sample(32 * 64, 2);
        let a = seal(&SealParams::DEFAULT, &rid(1), &plain).unwrap();
        let b = seal(&SealParams::DEFAULT, &rid(2), &plain).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            seal(&SealParams::DEFAULT, &rid(1), &plain[..33]),
            Err(SealError::Length { len: 33 })
        );
        let mut bad = a.clone();
        bad[32 * 5..32 * 6].fill(0xff);
        let mut out = vec![0u8; 32 * 64];
        assert_eq!(
            unseal_range(&SealParams::DEFAULT, &rid(1), &bad, 0..64, &mut out),
            Err(UnsealError::NotCanonical { block: BlockIdx(5) })
        );
    }

    #[test]
    fn crafted_block_is_rejected() {
        // Craft block 0 so that plain ⊕ key = 2^256 − 1 (key of block 0 has all-zero parents).
        let id = rid(1);
        let key = keyhash::parent_key_scalar(&id.0, 0, &[0; KEY_INPUT_LEN]);
        let mut plain = sample(32 * 4, 3);
        for i in 0..32 {
            plain[i] = key[i] ^ 0xff;
        }
        assert_eq!(
            seal(&SealParams::DEFAULT, &id, &plain),
            Err(SealError::OutOfField { block: BlockIdx(0) })
        );
        let other = ReplicaId::derive(
            &NodeId([1; 32]),
            &DataId([1; 32]),
            &SealParams {
                rounds: 1,
                nonce: 1,
            },
        );
        assert!(seal(&SealParams::DEFAULT, &other, &plain).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn fast_unseal_equals_scalar(blocks in 1u64..200, a in any::<u64>(), b in any::<u64>(), seed in any::<u8>()) {
            let plain = sample(32 * blocks as usize, seed);
            let replica = seal(&SealParams::DEFAULT, &rid(seed), &plain).unwrap();
            let (s, e) = { let (x, y) = (a % (blocks + 1), b % (blocks + 1)); (x.min(y), x.max(y)) };
            let mut fast = vec![0u8; 32 * (e - s) as usize];
            let mut slow = fast.clone();
            unseal_range_on(Platform::detect(), &SealParams::DEFAULT, &rid(seed), &replica, s..e, &mut fast).unwrap();
            unseal_range_on(Platform::Scalar, &SealParams::DEFAULT, &rid(seed), &replica, s..e, &mut slow).unwrap();
            prop_assert_eq!(&fast, &slow);
            prop_assert_eq!(&fast[..], &plain[32 * s as usize..32 * e as usize]);
        }
    }
}
