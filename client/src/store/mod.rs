//! Where shards go: the [`ShardStore`] trait, with a directory-backed implementation
//! ([`dir::DirStore`]) for local packing and tests, and a network one over QUIC nodes.
//!
//! Every read returns bytes already verified against the shard id; a store never hands the
//! reassembly code bytes it has not checked — except through [`ShardStore::read_unverified`],
//! which the reassembly code uses only for bytes it then authenticates itself.

use std::ops::Range;

use granary_protocol::verified::{Outboard, VerifyError};

use crate::ids::{DatasetId, ShardId};

pub mod dir;
pub mod net;

/// Where a shard is, as far as the manifest knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardLoc {
    /// Its id (BLAKE3 of its bytes).
    pub id: ShardId,
    /// Its length.
    pub len: u64,
    /// The node it was first put on, if recorded.
    pub hint: Option<[u8; 32]>,
    /// Its position in the segment: 0..k data, k..k+m parity (placement uses it).
    pub index: u8,
}

/// One shard handed to [`ShardStore::put_segment`].
#[derive(Debug)]
pub struct PutShard<'a> {
    /// Its id.
    pub id: ShardId,
    /// Its bytes: a slice of the segment buffer, shared (not copied) with the transport.
    pub bytes: bytes::Bytes,
    /// Its verified-streaming outboard (root = id).
    pub outboard: &'a Outboard,
}

/// A write that did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Local I/O failed (a full disk shows up here as "No space left on device").
    #[error("writing {path}: {source}")]
    Io {
        /// File being written.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not enough nodes took the shards.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A node refused (quota, disk full, authentication).
    #[error("refused by {node}: {reason}")]
    Rejected {
        /// Which node.
        node: String,
        /// Its reason.
        reason: String,
    },
}

/// The answers to a batch of shard reads, by request (`None`: not asked, or abandoned).
pub type Answers = Vec<Option<Result<Vec<u8>, FetchError>>>;

/// A read that did not return verified bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No holder has the shard.
    #[error("shard {0} not found")]
    NotFound(ShardId),
    /// Bytes came back but did not match the shard id.
    #[error("shard {id} failed verification: {source}")]
    Corrupt {
        /// Which shard.
        id: ShardId,
        /// What did not match.
        source: VerifyError,
    },
    /// Holders are unreachable or too slow.
    #[error("shard {id} unavailable: {reason}")]
    Unavailable {
        /// Which shard.
        id: ShardId,
        /// Why.
        reason: String,
    },
}

/// Copies kept of a dataset's root record: one more than the parity count m, so that losing any
/// m nodes (which the data survives) cannot lose the root record, and never fewer than 3.
pub fn root_copies(params: crate::erasure::ErasureParams) -> usize {
    (usize::from(params.parity) + 1).max(3)
}

/// A place to put and get shards.
pub trait ShardStore: Send + Sync {
    /// Stores the k + m shards of one segment, spread over distinct nodes where the store spans
    /// nodes. Returns, for each shard, the node it went to (a placement hint).
    fn put_segment(&self, shards: &[PutShard<'_>]) -> Result<Vec<Option<[u8; 32]>>, StoreError>;

    /// Stores a small record (a root record) whole, on `copies` nodes where the store spans
    /// nodes (see [`root_copies`]), named by its hash.
    fn put_root(&self, id: &DatasetId, bytes: &[u8], copies: usize) -> Result<(), StoreError>;

    /// Fetches a root record, verified against its hash.
    fn get_root(&self, id: &DatasetId) -> Result<Vec<u8>, FetchError>;

    /// Reads `range` of a shard, verified against its id.
    fn read_range(&self, shard: &ShardLoc, range: Range<u64>) -> Result<Vec<u8>, FetchError>;

    /// Reads several ranges; stores that can run them concurrently override this.
    fn read_ranges(&self, reqs: &[(ShardLoc, Range<u64>)]) -> Vec<Result<Vec<u8>, FetchError>> {
        reqs.iter()
            .map(|(l, r)| self.read_range(l, r.clone()))
            .collect()
    }

    /// Reads until `need` of `reqs` succeeded, for a caller that can use any `need` of them
    /// (a whole segment from any k of its k + m shards; the wanted ones first). Stores with slow
    /// or unreliable members *hedge*: they start the first `need`, start the next one whenever
    /// one fails, and also when `need` answers have not arrived in a while. `None`: not asked or
    /// abandoned. The default reads in order, one at a time.
    fn read_any(&self, reqs: &[(ShardLoc, Range<u64>)], need: usize) -> Answers {
        let mut out: Answers = (0..reqs.len()).map(|_| None).collect();
        let mut ok = 0;
        for (slot, (l, r)) in out.iter_mut().zip(reqs) {
            if ok >= need {
                break;
            }
            let res = self.read_range(l, r.clone());
            ok += usize::from(res.is_ok());
            *slot = Some(res);
        }
        out
    }

    /// For each group of requests: reads `group[0]` (a byte range of one shard), or else the same
    /// range of any `k` of the shards in `group[1..]`, the column it can be rebuilt from. Stores
    /// whose members can be slow hedge, all groups at once: each starts `group[0]` alone and,
    /// when it fails or takes long, `k` of the others as well, and is done when either side is
    /// complete. `None`: not asked or abandoned. The default reads each group in turn: `group[0]`,
    /// then (if it failed) the others in order until `k` succeed.
    fn read_first_or_any(&self, groups: &[Vec<(ShardLoc, Range<u64>)>], k: usize) -> Vec<Answers> {
        groups
            .iter()
            .map(|reqs| {
                let Some((first, rest)) = reqs.split_first() else {
                    return Vec::new();
                };
                let got = self.read_range(&first.0, first.1.clone());
                let failed = got.is_err();
                let mut out = vec![Some(got)];
                if failed {
                    out.extend(self.read_any(rest, k));
                } else {
                    out.resize_with(reqs.len(), || None);
                }
                out
            })
            .collect()
    }

    /// Reads bytes `offset..offset + out.len()` of a shard into `out` **without** verifying them
    /// against the shard id, for a caller that checks every one of those bytes itself (an
    /// authenticated cipher over them, or known zero padding) and falls back to the verified
    /// [`ShardStore::read_range`] when its check fails. Returns `Ok(false)` when the store has no
    /// cheaper way than a verified read (the default, and right for remote stores): the caller
    /// then reads verified.
    fn read_unverified(
        &self,
        _shard: &ShardLoc,
        _offset: u64,
        _out: &mut [u8],
    ) -> Result<bool, FetchError> {
        Ok(false)
    }

    /// Threads that should read whole segments ahead during extraction: several for stores
    /// bound by local CPU (verification hashing), fewer for stores whose reads of one segment
    /// already run concurrently.
    fn read_ahead_threads(&self) -> usize {
        4
    }

    /// Which of `ids` the store already holds (uploads skip those).
    fn has_shards(&self, ids: &[ShardId]) -> Result<Vec<bool>, StoreError>;
}
