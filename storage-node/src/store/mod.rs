//! The node's metadata store: shard index, per-owner references and usage, nonce cache.
//!
//! This module holds the [`Store`] trait and its types only; it must not depend on RocksDB.
//! [`rocks`] implements it on RocksDB, [`mem`] in memory (tests). `conformance` (tests) is the suite
//! every implementation must pass.
//!
//! Sealing state lives here too: sealed units (records opaque to the store, see
//! `crate::sealing`) and the placement of each sealed shard in its unit.
//!
//! Shard bytes are not here: they live in files managed by [`crate::blobs`]. The index says
//! which shards the node serves; a shard is served only once it is indexed, and indexed only
//! after its file was written, fsynced and renamed into place. Each shard's verified-streaming
//! outboard (1/256 of its size) is stored with its index entry, in the same write.

#[cfg(test)]
mod conformance;
pub mod mem;
pub mod rocks;

use granary_protocol::{NodeId, ShardId, message::RefTag};

/// An indexed shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRecord {
    /// Size in bytes.
    pub size: u64,
    /// Number of owners referencing it.
    pub refs: u32,
    /// Its outboard was stored in the index in the same write as this record, so it is there
    /// without being read (the start-up check relies on this). `false` for shards stored before
    /// outboards moved into the index (theirs is a file) and for references without one.
    pub outboard_indexed: bool,
}

/// Node-wide totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes of shard data indexed (each shard counted once).
    pub used: u64,
    /// Number of shards indexed.
    pub shards: u64,
}

/// Limits checked atomically when a reference is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Node capacity in bytes.
    pub capacity: u64,
    /// Most bytes one owner may reference.
    pub per_owner: u64,
}

/// Result of [`Store::add_reference`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddOutcome {
    /// The shard was not indexed; it now is, with this owner's reference.
    NewShard,
    /// The shard was indexed; this owner's reference was added.
    NewReference,
    /// This owner already referenced the shard; nothing changed.
    AlreadyReferenced,
}

/// Result of [`Store::remove_reference`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoveOutcome {
    /// That was the last reference; the shard is no longer indexed (delete its files).
    LastReference,
    /// The owner's hold was removed; other owners remain.
    Released,
    /// The tag was removed; the owner still holds the shard under other tags.
    StillTagged,
    /// The owner held no reference.
    NotOwner,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Adding the shard would exceed the node's capacity.
    #[error("node capacity exceeded: {used} used + {size} > {capacity}")]
    NodeQuota {
        /// Bytes in use.
        used: u64,
        /// Bytes requested.
        size: u64,
        /// Capacity.
        capacity: u64,
    },
    /// Adding the reference would exceed the owner's quota.
    #[error("owner {owner} quota exceeded: {used} used + {size} > {quota}")]
    OwnerQuota {
        /// The owner.
        owner: NodeId,
        /// Bytes the owner references.
        used: u64,
        /// Bytes requested.
        size: u64,
        /// The quota.
        quota: u64,
    },
    /// A shard is indexed with another size than the request declares.
    #[error("shard {id} is indexed with size {indexed}, not {requested}")]
    SizeConflict {
        /// The shard.
        id: ShardId,
        /// Size in the index.
        indexed: u64,
        /// Size requested.
        requested: u64,
    },
    /// A record on disk could not be decoded.
    #[error("corrupt {table} record: {reason}")]
    Corrupt {
        /// Table (column family).
        table: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The database failed.
    #[error("database: {0}")]
    Backend(String),
    /// The store was opened read-only.
    #[error("store is read-only")]
    ReadOnly,
}

/// Per-owner totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OwnerUsage {
    /// Bytes referenced.
    pub bytes: u64,
    /// Shards referenced.
    pub shards: u64,
}

/// Metadata storage. Implementations serialise writers internally; every method is atomic.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The record of one shard.
    fn shard(&self, id: &ShardId) -> Result<Option<ShardRecord>, StoreError>;

    /// Whether each shard is indexed.
    fn has(&self, ids: &[ShardId]) -> Result<Vec<bool>, StoreError> {
        ids.iter()
            .map(|id| self.shard(id).map(|r| r.is_some()))
            .collect()
    }

    /// Whether `owner` references `id`.
    fn is_referenced_by(&self, id: &ShardId, owner: &NodeId) -> Result<bool, StoreError>;

    /// Adds `owner`'s `tag` reference to shard `id` of `size` bytes, indexing the shard if
    /// needed. Checks `quota` (node capacity for a new shard, owner quota for an owner's first
    /// reference; further tags of the same owner cost nothing).
    fn add_reference(
        &self,
        id: &ShardId,
        size: u64,
        owner: &NodeId,
        tag: &RefTag,
        quota: &Quota,
    ) -> Result<AddOutcome, StoreError> {
        self.add_shard(id, size, owner, tag, quota, None)
    }
    /// [`Store::add_reference`]; when this indexes the shard, its verified-streaming
    /// `outboard` is stored with it in the same atomic write (an already indexed shard keeps
    /// the outboard it has).
    fn add_shard(
        &self,
        id: &ShardId,
        size: u64,
        owner: &NodeId,
        tag: &RefTag,
        quota: &Quota,
        outboard: Option<&[u8]>,
    ) -> Result<AddOutcome, StoreError>;
    /// The outboard stored with an indexed shard; `None` if it has none here (shards stored
    /// before outboards moved into the index keep theirs in a file, see [`crate::blobs`]). It
    /// is forgotten with the shard's last reference.
    fn outboard(&self, id: &ShardId) -> Result<Option<Vec<u8>>, StoreError>;

    /// Removes `owner`'s `tag` reference. The owner's hold on the shard ends with its last tag
    /// (or at once for a hold recorded before tags existed); the shard is un-indexed when no
    /// owner remains.
    fn remove_reference(
        &self,
        id: &ShardId,
        owner: &NodeId,
        tag: &RefTag,
    ) -> Result<RemoveOutcome, StoreError>;

    /// Un-indexes a shard and all references to it (quarantine after corruption).
    fn drop_shard(&self, id: &ShardId) -> Result<Option<ShardRecord>, StoreError>;

    /// Records `(owner, nonce)` seen at `timestamp_ms`; `false` if it was already recorded.
    fn remember_nonce(
        &self,
        owner: &NodeId,
        nonce: &[u8; 16],
        timestamp_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Forgets nonces recorded with a timestamp before `before_ms`; returns how many.
    fn expire_nonces(&self, before_ms: u64) -> Result<usize, StoreError>;

    /// Node-wide totals.
    fn usage(&self) -> Result<Usage, StoreError>;

    /// One owner's totals.
    fn owner_usage(&self, owner: &NodeId) -> Result<OwnerUsage, StoreError>;

    /// Every indexed shard, in id order.
    fn shards(&self) -> Result<Vec<(ShardId, ShardRecord)>, StoreError>;

    /// Every owner with references, in id order.
    fn owners(&self) -> Result<Vec<(NodeId, OwnerUsage)>, StoreError>;

    /// Records a sealed unit (`record` is opaque here) and places `members` in it, atomically.
    fn put_unit(
        &self,
        comm_r: &UnitKey,
        record: &[u8],
        members: &[ShardId],
    ) -> Result<(), StoreError>;

    /// A sealed unit's record.
    fn unit(&self, comm_r: &UnitKey) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every sealed unit, in key order.
    fn units(&self) -> Result<Vec<(UnitKey, Vec<u8>)>, StoreError>;

    /// The unit a shard is sealed in.
    fn placement(&self, id: &ShardId) -> Result<Option<UnitKey>, StoreError>;

    /// Every placement, in shard order (may include shards no longer indexed).
    fn placements(&self) -> Result<Vec<(ShardId, UnitKey)>, StoreError>;

    /// Forgets a unit and those of `members` still placed in it, atomically.
    fn remove_unit(&self, comm_r: &UnitKey, members: &[ShardId]) -> Result<(), StoreError>;
}

/// A sealed unit's key: its replica commitment `comm_r`.
pub type UnitKey = [u8; 32];
