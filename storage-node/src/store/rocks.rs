//! [`Store`] on RocksDB.
//!
//! Column families (keys are raw bytes; every value starts with a record version byte, so a
//! later layout can be migrated on read — see `decode_*`):
//!
//! | cf       | key                        | value (v1)                              |
//! |----------|----------------------------|-----------------------------------------|
//! | `shards` | shard id (32)              | `01` size u64 LE, refs u32 LE           |
//! | `refs`   | shard id (32) + owner (32) | `01` added-at ms u64 LE                 |
//! | `tags`   | shard (32) + owner (32) + tag (32) | `01`                            |
//! | `owners` | owner (32)                 | `01` bytes u64 LE, shards u64 LE        |
//! | `meta`   | `b"usage"`                 | `01` used u64 LE, shards u64 LE         |
//! | `nonces` | owner (32) + nonce (16)    | `01` timestamp ms u64 LE                |
//! | `units`  | comm_r (32)                | `01` unit record (see `sealing`)        |
//! | `placed` | shard id (32)              | `01` comm_r (32)                        |
//!
//! Writers hold one mutex and commit a `WriteBatch` with `sync = true`, so each operation is
//! atomic and durable when it returns.

use std::{path::Path, sync::Mutex};

use granary_protocol::{NodeId, ShardId, auth::now_ms, message::RefTag};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions,
};

use super::{
    AddOutcome, OwnerUsage, Quota, RemoveOutcome, ShardRecord, Store, StoreError, UnitKey, Usage,
};

const CF_SHARDS: &str = "shards";
const CF_REFS: &str = "refs";
const CF_OWNERS: &str = "owners";
const CF_META: &str = "meta";
const CF_NONCES: &str = "nonces";
const CF_UNITS: &str = "units";
const CF_PLACED: &str = "placed";
const CF_TAGS: &str = "tags";
const CF_OUTBOARDS: &str = "outboards";
const CFS: [&str; 9] = [
    CF_SHARDS,
    CF_REFS,
    CF_OWNERS,
    CF_META,
    CF_NONCES,
    CF_UNITS,
    CF_PLACED,
    CF_TAGS,
    CF_OUTBOARDS,
];
const USAGE_KEY: &[u8] = b"usage";
const V1: u8 = 1;

/// The RocksDB-backed store.
#[derive(Debug)]
pub struct RocksStore {
    db: DB,
    write: Mutex<()>,
    read_only: bool,
}

fn backend(e: rocksdb::Error) -> StoreError {
    StoreError::Backend(e.into_string())
}

fn corrupt(table: &'static str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table,
        reason: reason.into(),
    }
}

fn u64_at(v: &[u8], at: usize) -> Option<u64> {
    v.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

fn versioned<'a>(table: &'static str, v: &'a [u8], len: usize) -> Result<&'a [u8], StoreError> {
    match v.split_first() {
        Some((&V1, rest)) if rest.len() == len => Ok(rest),
        Some((&V1, rest)) => Err(corrupt(table, format!("v1 record of {} bytes", rest.len()))),
        Some((ver, _)) => Err(corrupt(table, format!("unknown record version {ver}"))),
        None => Err(corrupt(table, "empty record")),
    }
}

/// Shard records: v1 is `size u64, refs u32`; v2 adds a flags byte (bit 0: the outboard is in
/// the `outboards` family, written in the same batch). v1 records are read as having no flags.
const SHARD_V2: u8 = 2;
const FLAG_OUTBOARD_INDEXED: u8 = 1;

fn decode_shard(v: &[u8]) -> Result<ShardRecord, StoreError> {
    let (r, flags) = match v.split_first() {
        Some((&SHARD_V2, rest)) if rest.len() == 13 => (&rest[..12], rest[12]),
        Some((&SHARD_V2, rest)) => {
            return Err(corrupt(
                CF_SHARDS,
                format!("v2 record of {} bytes", rest.len()),
            ));
        }
        _ => (versioned(CF_SHARDS, v, 12)?, 0),
    };
    if flags & !FLAG_OUTBOARD_INDEXED != 0 {
        return Err(corrupt(CF_SHARDS, format!("unknown flags {flags:#04x}")));
    }
    let size = u64_at(r, 0).ok_or_else(|| corrupt(CF_SHARDS, "size"))?;
    let refs = u32::from_le_bytes([r[8], r[9], r[10], r[11]]);
    Ok(ShardRecord {
        size,
        refs,
        outboard_indexed: flags & FLAG_OUTBOARD_INDEXED != 0,
    })
}

fn encode_shard(r: &ShardRecord) -> Vec<u8> {
    let mut v = vec![SHARD_V2];
    v.extend_from_slice(&r.size.to_le_bytes());
    v.extend_from_slice(&r.refs.to_le_bytes());
    v.push(if r.outboard_indexed {
        FLAG_OUTBOARD_INDEXED
    } else {
        0
    });
    v
}

fn decode_pair(table: &'static str, v: &[u8]) -> Result<(u64, u64), StoreError> {
    let r = versioned(table, v, 16)?;
    Ok((u64_at(r, 0).unwrap_or(0), u64_at(r, 8).unwrap_or(0)))
}

fn encode_pair(a: u64, b: u64) -> Vec<u8> {
    let mut v = vec![V1];
    v.extend_from_slice(&a.to_le_bytes());
    v.extend_from_slice(&b.to_le_bytes());
    v
}

fn ref_key(id: &ShardId, owner: &NodeId) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&id.0);
    k[32..].copy_from_slice(owner.as_bytes());
    k
}

fn tag_key(id: &ShardId, owner: &NodeId, tag: &RefTag) -> [u8; 96] {
    let mut k = [0u8; 96];
    k[..64].copy_from_slice(&ref_key(id, owner));
    k[64..].copy_from_slice(tag);
    k
}

fn node_id(table: &'static str, b: &[u8]) -> Result<NodeId, StoreError> {
    let arr: [u8; 32] = b.try_into().map_err(|_| corrupt(table, "key length"))?;
    NodeId::from_bytes(&arr).map_err(|_| corrupt(table, "owner key"))
}

impl RocksStore {
    /// Opens (creating if needed) the database at `path` for reading and writing.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        let cfs = CFS
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(*n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(backend)?;
        Ok(Self {
            db,
            write: Mutex::new(()),
            read_only: false,
        })
    }

    /// Opens the database as a RocksDB *secondary* instance (read-only, works while the node
    /// runs). `scratch` is a private directory for the secondary's own files.
    pub fn open_secondary(path: &Path, scratch: &Path) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.set_max_open_files(-1);
        let db = DB::open_cf_as_secondary(&opts, path, scratch, CFS).map_err(backend)?;
        db.try_catch_up_with_primary().map_err(backend)?;
        Ok(Self {
            db,
            write: Mutex::new(()),
            read_only: true,
        })
    }

    fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| corrupt(name, "missing column family"))
    }

    fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(cf)?, key).map_err(backend)
    }

    fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(backend)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, ()>, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        self.write
            .lock()
            .map_err(|_| StoreError::Backend("poisoned lock".into()))
    }

    fn prefix_keys(&self, cf: &'static str, prefix: &[u8]) -> Result<Vec<Box<[u8]>>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(cf)?, IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, _) = item.map_err(backend)?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push(k);
        }
        Ok(out)
    }

    /// Removes one reference inside an open batch; returns the shard's updated record.
    fn unref(
        &self,
        batch: &mut WriteBatch,
        id: &ShardId,
        owner: &NodeId,
        rec: &mut ShardRecord,
        usage: &mut Usage,
    ) -> Result<(), StoreError> {
        batch.delete_cf(self.cf(CF_REFS)?, ref_key(id, owner));
        for k in self.prefix_keys(CF_TAGS, &ref_key(id, owner))? {
            batch.delete_cf(self.cf(CF_TAGS)?, k);
        }
        let mut ou = self.owner_usage(owner)?;
        ou.bytes = ou.bytes.saturating_sub(rec.size);
        ou.shards = ou.shards.saturating_sub(1);
        if ou.shards == 0 {
            batch.delete_cf(self.cf(CF_OWNERS)?, owner.as_bytes());
        } else {
            batch.put_cf(
                self.cf(CF_OWNERS)?,
                owner.as_bytes(),
                encode_pair(ou.bytes, ou.shards),
            );
        }
        rec.refs = rec.refs.saturating_sub(1);
        if rec.refs == 0 {
            batch.delete_cf(self.cf(CF_SHARDS)?, id.0);
            batch.delete_cf(self.cf(CF_OUTBOARDS)?, id.0);
            usage.used = usage.used.saturating_sub(rec.size);
            usage.shards = usage.shards.saturating_sub(1);
        } else {
            batch.put_cf(self.cf(CF_SHARDS)?, id.0, encode_shard(rec));
        }
        Ok(())
    }
}

impl Store for RocksStore {
    fn shard(&self, id: &ShardId) -> Result<Option<ShardRecord>, StoreError> {
        self.get(CF_SHARDS, &id.0)?
            .map(|v| decode_shard(&v))
            .transpose()
    }

    fn has(&self, ids: &[ShardId]) -> Result<Vec<bool>, StoreError> {
        let cf = self.cf(CF_SHARDS)?;
        let res = self
            .db
            .batched_multi_get_cf(cf, ids.iter().map(|i| &i.0[..]), false);
        res.into_iter()
            .map(|r| r.map(|v| v.is_some()).map_err(backend))
            .collect()
    }

    fn is_referenced_by(&self, id: &ShardId, owner: &NodeId) -> Result<bool, StoreError> {
        Ok(self.get(CF_REFS, &ref_key(id, owner))?.is_some())
    }

    fn add_shard(
        &self,
        id: &ShardId,
        size: u64,
        owner: &NodeId,
        tag: &RefTag,
        quota: &Quota,
        outboard: Option<&[u8]>,
    ) -> Result<AddOutcome, StoreError> {
        let _g = self.lock()?;
        let existing = self.shard(id)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_TAGS)?, tag_key(id, owner, tag), [V1]);
        if let Some(r) = existing {
            if r.size != size {
                return Err(StoreError::SizeConflict {
                    id: *id,
                    indexed: r.size,
                    requested: size,
                });
            }
            if self.is_referenced_by(id, owner)? {
                self.commit(batch)?;
                return Ok(AddOutcome::AlreadyReferenced);
            }
        }
        let ou = self.owner_usage(owner)?;
        if ou.bytes.saturating_add(size) > quota.per_owner {
            return Err(StoreError::OwnerQuota {
                owner: *owner,
                used: ou.bytes,
                size,
                quota: quota.per_owner,
            });
        }
        let mut usage = self.usage()?;
        if existing.is_none() && usage.used.saturating_add(size) > quota.capacity {
            return Err(StoreError::NodeQuota {
                used: usage.used,
                size,
                capacity: quota.capacity,
            });
        }
        batch.put_cf(self.cf(CF_REFS)?, ref_key(id, owner), {
            let mut v = vec![V1];
            v.extend_from_slice(&now_ms().to_le_bytes());
            v
        });
        batch.put_cf(
            self.cf(CF_OWNERS)?,
            owner.as_bytes(),
            encode_pair(ou.bytes + size, ou.shards + 1),
        );
        let rec = match existing {
            Some(r) => ShardRecord {
                refs: r.refs + 1,
                ..r
            },
            None => {
                usage.used += size;
                usage.shards += 1;
                batch.put_cf(
                    self.cf(CF_META)?,
                    USAGE_KEY,
                    encode_pair(usage.used, usage.shards),
                );
                if let Some(ob) = outboard {
                    let mut v = Vec::with_capacity(1 + ob.len());
                    v.push(V1);
                    v.extend_from_slice(ob);
                    batch.put_cf(self.cf(CF_OUTBOARDS)?, id.0, v);
                }
                ShardRecord {
                    size,
                    refs: 1,
                    outboard_indexed: outboard.is_some(),
                }
            }
        };
        batch.put_cf(self.cf(CF_SHARDS)?, id.0, encode_shard(&rec));
        self.commit(batch)?;
        Ok(if existing.is_some() {
            AddOutcome::NewReference
        } else {
            AddOutcome::NewShard
        })
    }

    fn outboard(&self, id: &ShardId) -> Result<Option<Vec<u8>>, StoreError> {
        let v = self
            .db
            .get_pinned_cf(self.cf(CF_OUTBOARDS)?, id.0)
            .map_err(backend)?;
        let Some(v) = v else {
            return Ok(None);
        };
        match v.first() {
            Some(&V1) => Ok(Some(v[1..].to_vec())),
            Some(other) => Err(corrupt(CF_OUTBOARDS, format!("unknown version {other}"))),
            None => Err(corrupt(CF_OUTBOARDS, "empty record")),
        }
    }

    fn remove_reference(
        &self,
        id: &ShardId,
        owner: &NodeId,
        tag: &RefTag,
    ) -> Result<RemoveOutcome, StoreError> {
        let _g = self.lock()?;
        if !self.is_referenced_by(id, owner)? {
            return Ok(RemoveOutcome::NotOwner);
        }
        let this = tag_key(id, owner, tag);
        let others = self
            .prefix_keys(CF_TAGS, &ref_key(id, owner))?
            .into_iter()
            .any(|k| k[..] != this[..]);
        if others {
            let mut batch = WriteBatch::default();
            batch.delete_cf(self.cf(CF_TAGS)?, this);
            self.commit(batch)?;
            return Ok(RemoveOutcome::StillTagged);
        }
        let mut rec = self
            .shard(id)?
            .ok_or_else(|| corrupt(CF_REFS, format!("reference to unindexed {id}")))?;
        let mut usage = self.usage()?;
        let mut batch = WriteBatch::default();
        self.unref(&mut batch, id, owner, &mut rec, &mut usage)?;
        batch.put_cf(
            self.cf(CF_META)?,
            USAGE_KEY,
            encode_pair(usage.used, usage.shards),
        );
        self.commit(batch)?;
        Ok(if rec.refs == 0 {
            RemoveOutcome::LastReference
        } else {
            RemoveOutcome::Released
        })
    }

    fn drop_shard(&self, id: &ShardId) -> Result<Option<ShardRecord>, StoreError> {
        let _g = self.lock()?;
        let Some(orig) = self.shard(id)? else {
            return Ok(None);
        };
        let mut rec = orig;
        let mut usage = self.usage()?;
        let mut batch = WriteBatch::default();
        for k in self.prefix_keys(CF_REFS, &id.0)? {
            let owner = node_id(CF_REFS, &k[32..])?;
            // Each owner is a distinct key, so per-owner reads inside one batch do not collide.
            self.unref(&mut batch, id, &owner, &mut rec, &mut usage)?;
        }
        if rec.refs != 0 {
            // Record said more references than exist: remove the shard anyway.
            batch.delete_cf(self.cf(CF_SHARDS)?, id.0);
            batch.delete_cf(self.cf(CF_OUTBOARDS)?, id.0);
            usage.used = usage.used.saturating_sub(rec.size);
            usage.shards = usage.shards.saturating_sub(1);
        }
        batch.put_cf(
            self.cf(CF_META)?,
            USAGE_KEY,
            encode_pair(usage.used, usage.shards),
        );
        self.commit(batch)?;
        Ok(Some(orig))
    }

    fn remember_nonce(
        &self,
        owner: &NodeId,
        nonce: &[u8; 16],
        timestamp_ms: u64,
    ) -> Result<bool, StoreError> {
        let _g = self.lock()?;
        let mut key = [0u8; 48];
        key[..32].copy_from_slice(owner.as_bytes());
        key[32..].copy_from_slice(nonce);
        if self.get(CF_NONCES, &key)?.is_some() {
            return Ok(false);
        }
        let mut v = vec![V1];
        v.extend_from_slice(&timestamp_ms.to_le_bytes());
        // Not fsynced: the WAL survives a process crash; after a power loss a replay would need
        // the signed request, which only ever travelled inside TLS to this node.
        self.db
            .put_cf(self.cf(CF_NONCES)?, key, v)
            .map_err(backend)?;
        Ok(true)
    }

    fn expire_nonces(&self, before_ms: u64) -> Result<usize, StoreError> {
        let _g = self.lock()?;
        let cf = self.cf(CF_NONCES)?;
        let mut batch = WriteBatch::default();
        let mut n = 0;
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item.map_err(backend)?;
            let ts = versioned(CF_NONCES, &v, 8)
                .ok()
                .and_then(|r| u64_at(r, 0))
                .unwrap_or(0);
            if ts < before_ms {
                batch.delete_cf(cf, k);
                n += 1;
            }
        }
        if n > 0 {
            self.commit(batch)?;
        }
        Ok(n)
    }

    fn usage(&self) -> Result<Usage, StoreError> {
        match self.get(CF_META, USAGE_KEY)? {
            Some(v) => decode_pair(CF_META, &v).map(|(used, shards)| Usage { used, shards }),
            None => Ok(Usage::default()),
        }
    }

    fn owner_usage(&self, owner: &NodeId) -> Result<OwnerUsage, StoreError> {
        match self.get(CF_OWNERS, owner.as_bytes())? {
            Some(v) => {
                decode_pair(CF_OWNERS, &v).map(|(bytes, shards)| OwnerUsage { bytes, shards })
            }
            None => Ok(OwnerUsage::default()),
        }
    }

    fn shards(&self) -> Result<Vec<(ShardId, ShardRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_SHARDS)?, IteratorMode::Start)
        {
            let (k, v) = item.map_err(backend)?;
            let id: [u8; 32] = k[..]
                .try_into()
                .map_err(|_| corrupt(CF_SHARDS, "key length"))?;
            out.push((ShardId(id), decode_shard(&v)?));
        }
        Ok(out)
    }

    fn owners(&self) -> Result<Vec<(NodeId, OwnerUsage)>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_OWNERS)?, IteratorMode::Start)
        {
            let (k, v) = item.map_err(backend)?;
            let (bytes, shards) = decode_pair(CF_OWNERS, &v)?;
            out.push((node_id(CF_OWNERS, &k)?, OwnerUsage { bytes, shards }));
        }
        Ok(out)
    }

    fn put_unit(
        &self,
        comm_r: &UnitKey,
        record: &[u8],
        members: &[ShardId],
    ) -> Result<(), StoreError> {
        let _g = self.lock()?;
        let mut batch = WriteBatch::default();
        let mut v = vec![V1];
        v.extend_from_slice(record);
        batch.put_cf(self.cf(CF_UNITS)?, comm_r, v);
        let mut p = vec![V1];
        p.extend_from_slice(comm_r);
        for id in members {
            batch.put_cf(self.cf(CF_PLACED)?, id.0, &p);
        }
        self.commit(batch)
    }

    fn unit(&self, comm_r: &UnitKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(CF_UNITS, comm_r)?
            .map(|v| unit_record(&v))
            .transpose()
    }

    fn units(&self) -> Result<Vec<(UnitKey, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_UNITS)?, IteratorMode::Start) {
            let (k, v) = item.map_err(backend)?;
            let key: UnitKey = k[..]
                .try_into()
                .map_err(|_| corrupt(CF_UNITS, "key length"))?;
            out.push((key, unit_record(&v)?));
        }
        Ok(out)
    }

    fn placement(&self, id: &ShardId) -> Result<Option<UnitKey>, StoreError> {
        self.get(CF_PLACED, &id.0)?
            .map(|v| decode_placement(&v))
            .transpose()
    }

    fn placements(&self) -> Result<Vec<(ShardId, UnitKey)>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_PLACED)?, IteratorMode::Start)
        {
            let (k, v) = item.map_err(backend)?;
            let id: [u8; 32] = k[..]
                .try_into()
                .map_err(|_| corrupt(CF_PLACED, "key length"))?;
            out.push((ShardId(id), decode_placement(&v)?));
        }
        Ok(out)
    }

    fn remove_unit(&self, comm_r: &UnitKey, members: &[ShardId]) -> Result<(), StoreError> {
        let _g = self.lock()?;
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_UNITS)?, comm_r);
        for id in members {
            if self.placement(id)?.as_ref() == Some(comm_r) {
                batch.delete_cf(self.cf(CF_PLACED)?, id.0);
            }
        }
        self.commit(batch)
    }
}

fn unit_record(v: &[u8]) -> Result<Vec<u8>, StoreError> {
    match v.split_first() {
        Some((&V1, rest)) => Ok(rest.to_vec()),
        Some((ver, _)) => Err(corrupt(CF_UNITS, format!("unknown record version {ver}"))),
        None => Err(corrupt(CF_UNITS, "empty record")),
    }
}

fn decode_placement(v: &[u8]) -> Result<UnitKey, StoreError> {
    let r = versioned(CF_PLACED, v, 32)?;
    r.try_into().map_err(|_| corrupt(CF_PLACED, "length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RocksStore::open(dir.path()).unwrap();
            super::super::conformance::run(&s);
            let q = Quota {
                capacity: 10_000,
                per_owner: 10_000,
            };
            let o = granary_protocol::SecretKey::from_bytes(&[4; 32]).public();
            s.add_shard(&ShardId([9; 32]), 77, &o, &[0; 32], &q, Some(b"ob"))
                .unwrap();
        }
        let s = RocksStore::open(dir.path()).unwrap();
        assert_eq!(
            s.shard(&ShardId([9; 32])).unwrap(),
            Some(ShardRecord {
                size: 77,
                refs: 1,
                outboard_indexed: true
            })
        );
        assert_eq!(
            s.usage().unwrap(),
            Usage {
                used: 77,
                shards: 1
            }
        );
        assert_eq!(s.outboard(&ShardId([9; 32])).unwrap(), Some(b"ob".to_vec()));
        let scratch = tempfile::tempdir().unwrap();
        let sec = RocksStore::open_secondary(dir.path(), scratch.path()).unwrap();
        assert_eq!(sec.shards().unwrap().len(), 1);
        assert!(matches!(sec.expire_nonces(0), Err(StoreError::ReadOnly)));
    }

    #[test]
    fn shard_records_of_both_versions_decode_and_bad_ones_are_corrupt() {
        // v1, written by nodes before the flags byte: no outboard in the index.
        let mut v1 = vec![V1];
        v1.extend_from_slice(&5u64.to_le_bytes());
        v1.extend_from_slice(&2u32.to_le_bytes());
        let r = decode_shard(&v1).unwrap();
        assert_eq!((r.size, r.refs, r.outboard_indexed), (5, 2, false));
        for flag in [false, true] {
            let r = ShardRecord {
                size: 1 << 40,
                refs: 3,
                outboard_indexed: flag,
            };
            assert_eq!(decode_shard(&encode_shard(&r)).unwrap(), r);
        }
        let mut unknown_flag = encode_shard(&ShardRecord {
            size: 1,
            refs: 1,
            outboard_indexed: true,
        });
        *unknown_flag.last_mut().unwrap() |= 0x80;
        let short = &unknown_flag[..12];
        for bad in [&unknown_flag[..], short, &[9u8, 0, 0][..], &[][..]] {
            assert!(
                matches!(decode_shard(bad), Err(StoreError::Corrupt { .. })),
                "{bad:?}"
            );
        }
    }
}
