//! Systematic Reed–Solomon over GF(2^8): a segment becomes k data shards (its own bytes, cut in
//! k equal pieces) plus m parity shards; any k of the k + m rebuild it.
//!
//! The codec is `reed-solomon-erasure` in pure Rust, built without its `simd-accel` feature,
//! which compiles C with a fixed `-march=haswell` and would crash on CPUs without AVX2.
//! `benches/benches/data_path.rs` measures it against `reed-solomon-simd` in the same run; see
//! docs/performance.md for the figures behind the choice.

use reed_solomon_erasure::galois_8::ReedSolomon;
use serde::{Deserialize, Serialize};

/// Shard lengths are multiples of this many bytes (SIMD-friendly, and cheap).
pub const SHARD_ALIGN: usize = 64;

/// How many data (k) and parity (m) shards each segment has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ErasureParams {
    /// k: data shards per segment.
    pub data: u8,
    /// m: parity shards per segment; up to m shards of a segment may be lost.
    pub parity: u8,
}

impl ErasureParams {
    /// 4 data + 2 parity: for a 6-node devnet; 1.5× expansion, survives any 2 lost shards.
    pub const DEVNET: Self = Self { data: 4, parity: 2 };
    /// 10 data + 4 parity: for a public network; 1.4× expansion, survives any 4 lost shards.
    pub const PUBLIC: Self = Self {
        data: 10,
        parity: 4,
    };

    /// k + m.
    pub fn total(&self) -> usize {
        self.data as usize + self.parity as usize
    }

    /// Checks the parameters are usable.
    pub fn validate(&self) -> Result<(), ErasureError> {
        if self.data == 0 || self.parity == 0 || self.total() > 255 {
            return Err(ErasureError::Params {
                data: self.data,
                parity: self.parity,
            });
        }
        Ok(())
    }

    /// Length of each shard of a segment of `segment_len` bytes.
    pub fn shard_len(&self, segment_len: usize) -> usize {
        let per = segment_len.div_ceil(self.data as usize).max(1);
        per.div_ceil(SHARD_ALIGN) * SHARD_ALIGN
    }
}

impl std::fmt::Display for ErasureParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{}", self.data, self.parity)
    }
}

/// Erasure-coding failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErasureError {
    /// k or m out of range.
    #[error("erasure parameters {data}+{parity} are invalid: need k >= 1, m >= 1, k + m <= 255")]
    Params {
        /// k.
        data: u8,
        /// m.
        parity: u8,
    },
    /// Fewer than k shards survive.
    #[error("only {available} of the {needed} shards needed to rebuild are available")]
    TooFewShards {
        /// Shards on hand.
        available: usize,
        /// k.
        needed: usize,
    },
    /// The codec refused (shards of unequal length, a bug).
    #[error("reed-solomon: {0:?}")]
    Codec(reed_solomon_erasure::Error),
}

/// An encoder/decoder for one [`ErasureParams`].
#[derive(Debug)]
pub struct Coder {
    params: ErasureParams,
    rs: ReedSolomon,
}

impl Coder {
    /// Builds the coding matrices once.
    pub fn new(params: ErasureParams) -> Result<Self, ErasureError> {
        params.validate()?;
        let rs = ReedSolomon::new(params.data as usize, params.parity as usize)
            .map_err(ErasureError::Codec)?;
        Ok(Self { params, rs })
    }

    /// The parameters.
    pub fn params(&self) -> ErasureParams {
        self.params
    }

    /// Encodes a segment into one buffer of k + m shards of `shard_len` bytes each, shard i at
    /// `i * shard_len`. Data shards hold the segment's bytes, the last one zero-padded.
    pub fn encode(&self, segment: &[u8]) -> Result<ShardSet, ErasureError> {
        let shard_len = self.params.shard_len(segment.len());
        let mut buf = vec![0u8; shard_len * self.params.total()];
        buf[..segment.len()].copy_from_slice(segment);
        let (data, parity) = buf.split_at_mut(shard_len * self.params.data as usize);
        let data: Vec<&[u8]> = data.chunks(shard_len).collect();
        let mut parity: Vec<&mut [u8]> = parity.chunks_mut(shard_len).collect();
        self.rs
            .encode_sep(&data, &mut parity)
            .map_err(ErasureError::Codec)?;
        Ok(ShardSet { shard_len, buf })
    }

    /// Rebuilds the missing data shards in place from any k present ones (all the same length).
    pub fn reconstruct_data(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), ErasureError> {
        let available = shards.iter().filter(|s| s.is_some()).count();
        if available < self.params.data as usize {
            return Err(ErasureError::TooFewShards {
                available,
                needed: self.params.data as usize,
            });
        }
        self.rs
            .reconstruct_data(shards)
            .map_err(ErasureError::Codec)
    }
}

/// The k + m shards of one segment in one allocation.
#[derive(Debug)]
pub struct ShardSet {
    /// Length of every shard.
    pub shard_len: usize,
    /// Shard i is `buf[i * shard_len..(i + 1) * shard_len]`.
    pub buf: Vec<u8>,
}

impl ShardSet {
    /// Shard `i`.
    pub fn shard(&self, i: usize) -> &[u8] {
        &self.buf[i * self.shard_len..(i + 1) * self.shard_len]
    }

    /// All shards in order.
    pub fn shards(&self) -> impl Iterator<Item = &[u8]> {
        self.buf.chunks(self.shard_len)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_m_losses_recover(k in 1u8..12, m in 1u8..6, len in 0usize..5000, seed in any::<u64>(), lose in proptest::collection::vec(any::<prop::sample::Index>(), 0..6)) {
            let params = ErasureParams { data: k, parity: m };
            let coder = Coder::new(params).unwrap();
            let seg: Vec<u8> = (0..len).map(|i| (seed.wrapping_mul(i as u64 + 1) >> 7) as u8).collect();
            let set = coder.encode(&seg).unwrap();
            let mut shards: Vec<Option<Vec<u8>>> = set.shards().map(|s| Some(s.to_vec())).collect();
            for idx in lose.iter().take(m as usize) {
                let i = idx.index(params.total());
                shards[i] = None;
            }
            coder.reconstruct_data(&mut shards).unwrap();
            let mut joined = Vec::new();
            for s in shards.iter().take(k as usize) { joined.extend_from_slice(s.as_ref().unwrap()); }
            prop_assert_eq!(&joined[..len], &seg[..]);
        }
    }

    #[test]
    fn more_than_m_lost_is_an_error() {
        let coder = Coder::new(ErasureParams::DEVNET).unwrap();
        let set = coder.encode(&[1u8; 1000]).unwrap();
        let mut shards: Vec<Option<Vec<u8>>> = set.shards().map(|s| Some(s.to_vec())).collect();
        shards[0] = None;
        shards[1] = None;
        shards[5] = None;
        assert!(matches!(
            coder.reconstruct_data(&mut shards),
            Err(ErasureError::TooFewShards {
                available: 3,
                needed: 4
            })
        ));
        assert!(Coder::new(ErasureParams { data: 0, parity: 2 }).is_err());
        assert!(
            Coder::new(ErasureParams {
                data: 200,
                parity: 100
            })
            .is_err()
        );
    }
}
