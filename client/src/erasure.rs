//! Systematic Reed–Solomon: a segment becomes k data shards (its own bytes, cut in k equal
//! pieces) plus m parity shards; any k of the k + m rebuild it.
//!
//! The codec is `reed-solomon-simd` (Leopard-RS, an FFT-based code over GF(2^16)), which picks
//! its SIMD kernels (AVX2, SSSE3, NEON, scalar) at run time, so one binary runs on any x86-64 and
//! on ARM. The product owner's first choice, `reed-solomon-erasure`, is portable only without its
//! `simd-accel` feature (that feature compiles C with a fixed `-march=haswell`), and then it
//! encodes 5–7× slower: `benches/benches/data_path.rs` measures both in one run; the figures are
//! in docs/performance.md.

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
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
        if self.data == 0
            || self.parity == 0
            || self.total() > 255
            || !ReedSolomonEncoder::supports(self.data as usize, self.parity as usize)
        {
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
    #[error("reed-solomon: {0}")]
    Codec(reed_solomon_simd::Error),
}

/// An encoder/decoder for one [`ErasureParams`].
#[derive(Debug, Clone)]
pub struct Coder {
    params: ErasureParams,
}

/// Encoders kept for reuse across segments, threads and packs: an encoder owns a work buffer
/// of several MiB, which would otherwise be allocated (and faulted in) again by every encoder
/// thread of every pack. At most one per thread that encodes at a time is ever created.
static ENCODERS: std::sync::Mutex<Vec<ReedSolomonEncoder>> = std::sync::Mutex::new(Vec::new());

impl Coder {
    /// A coder for `params`.
    pub fn new(params: ErasureParams) -> Result<Self, ErasureError> {
        params.validate()?;
        Ok(Self { params })
    }

    /// The parameters.
    pub fn params(&self) -> ErasureParams {
        self.params
    }

    /// Encodes a segment into a new [`ShardSet`].
    pub fn encode(&self, segment: &[u8]) -> Result<ShardSet, ErasureError> {
        let mut set = ShardSet::default();
        self.encode_into(segment, &mut set)?;
        Ok(set)
    }

    /// Encodes a segment into `set`, reusing its memory: k + m shards of `shard_len` bytes, shard
    /// i at `i * shard_len`. Data shards hold the segment's bytes, the last one zero-padded.
    pub fn encode_into(&self, segment: &[u8], set: &mut ShardSet) -> Result<(), ErasureError> {
        let (k, m) = (self.params.data as usize, self.params.parity as usize);
        let shard_len = self.params.shard_len(segment.len());
        set.shard_len = shard_len;
        set.buf.clear();
        set.buf.extend_from_slice(segment);
        set.buf.resize(shard_len * k, 0);
        self.append_parity(set, k, m)
    }

    /// Encodes a segment held in `segment` without copying it: the vector is zero-padded to k
    /// data shards and the m parity shards are appended (give it that much capacity to avoid a
    /// reallocation). Same layout as [`Coder::encode_into`].
    pub fn encode_vec(&self, mut segment: Vec<u8>) -> Result<ShardSet, ErasureError> {
        let (k, m) = (self.params.data as usize, self.params.parity as usize);
        let shard_len = self.params.shard_len(segment.len());
        segment.resize(shard_len * k, 0);
        let mut set = ShardSet {
            shard_len,
            buf: segment,
        };
        self.append_parity(&mut set, k, m)?;
        Ok(set)
    }

    /// Appends the m parity shards of the k data shards in `set.buf`.
    fn append_parity(&self, set: &mut ShardSet, k: usize, m: usize) -> Result<(), ErasureError> {
        let shard_len = set.shard_len;
        let pooled = ENCODERS.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut enc = match pooled {
            Some(mut e) => {
                e.reset(k, m, shard_len).map_err(ErasureError::Codec)?;
                e
            }
            None => ReedSolomonEncoder::new(k, m, shard_len).map_err(ErasureError::Codec)?,
        };
        let result = (|| {
            for shard in set.buf.chunks(shard_len) {
                enc.add_original_shard(shard).map_err(ErasureError::Codec)?;
            }
            let result = enc.encode().map_err(ErasureError::Codec)?;
            for parity in result.recovery_iter() {
                set.buf.extend_from_slice(parity);
            }
            Ok(())
        })();
        ENCODERS.lock().unwrap_or_else(|p| p.into_inner()).push(enc);
        result
    }

    /// Rebuilds the missing data shards in place from any k present ones, all the same length:
    /// whole shards, or the same run of whole 64-byte blocks of each.
    pub fn reconstruct_data(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), ErasureError> {
        let (k, m) = (self.params.data as usize, self.params.parity as usize);
        let available = shards.iter().filter(|s| s.is_some()).count();
        if available < k {
            return Err(ErasureError::TooFewShards {
                available,
                needed: k,
            });
        }
        if shards[..k].iter().all(Option::is_some) {
            return Ok(());
        }
        let len = shards.iter().flatten().map(Vec::len).next().unwrap_or(0);
        if len == 0 {
            for s in shards.iter_mut().take(k) {
                s.get_or_insert_with(Vec::new);
            }
            return Ok(());
        }
        // Column ranges handed in must be whole 64-byte blocks of the shards: the codec's
        // 16-bit symbols are split across each 64-byte block.
        let mut dec = ReedSolomonDecoder::new(k, m, len).map_err(ErasureError::Codec)?;
        for (i, s) in shards.iter().enumerate() {
            if let Some(s) = s {
                if i < k {
                    dec.add_original_shard(i, s).map_err(ErasureError::Codec)?;
                } else {
                    dec.add_recovery_shard(i - k, s)
                        .map_err(ErasureError::Codec)?;
                }
            }
        }
        let result = dec.decode().map_err(ErasureError::Codec)?;
        for (i, restored) in result.restored_original_iter() {
            shards[i] = Some(restored.to_vec());
        }
        Ok(())
    }
}

/// The k + m shards of one segment in one allocation.
#[derive(Debug, Default)]
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
