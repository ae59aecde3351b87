//! An in-memory [`Store`], for tests and as a reference for the semantics.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Mutex, MutexGuard},
};

use granary_protocol::{NodeId, ShardId, message::RefTag};

use super::{
    AddOutcome, OwnerUsage, Quota, RemoveOutcome, ShardRecord, Store, StoreError, UnitKey, Usage,
};

#[derive(Debug, Default)]
struct Inner {
    shards: BTreeMap<ShardId, ShardRecord>,
    refs: BTreeSet<(ShardId, NodeId)>,
    tags: BTreeSet<(ShardId, NodeId, RefTag)>,
    owners: BTreeMap<NodeId, OwnerUsage>,
    nonces: HashMap<(NodeId, [u8; 16]), u64>,
    usage: Usage,
    units: BTreeMap<UnitKey, Vec<u8>>,
    placed: BTreeMap<ShardId, UnitKey>,
    outboards: HashMap<ShardId, Vec<u8>>,
    outboard_reads: u64,
}

/// A [`Store`] kept in memory.
#[derive(Debug, Default)]
pub struct MemStore(Mutex<Inner>);

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times [`Store::outboard`] was called: tests check who reads outboards.
    pub fn outboard_reads(&self) -> u64 {
        self.lock().map_or(0, |g| g.outboard_reads)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        self.0
            .lock()
            .map_err(|_| StoreError::Backend("poisoned lock".into()))
    }
}

impl MemStore {
    fn add_locked(
        g: &mut Inner,
        id: &ShardId,
        size: u64,
        owner: &NodeId,
        quota: &Quota,
    ) -> Result<AddOutcome, StoreError> {
        let existing = g.shards.get(id).copied();
        if let Some(r) = existing {
            if r.size != size {
                return Err(StoreError::SizeConflict {
                    id: *id,
                    indexed: r.size,
                    requested: size,
                });
            }
            if g.refs.contains(&(*id, *owner)) {
                return Ok(AddOutcome::AlreadyReferenced);
            }
        }
        let ou = g.owners.get(owner).copied().unwrap_or_default();
        if ou.bytes.saturating_add(size) > quota.per_owner {
            return Err(StoreError::OwnerQuota {
                owner: *owner,
                used: ou.bytes,
                size,
                quota: quota.per_owner,
            });
        }
        if existing.is_none() && g.usage.used.saturating_add(size) > quota.capacity {
            return Err(StoreError::NodeQuota {
                used: g.usage.used,
                size,
                capacity: quota.capacity,
            });
        }
        g.refs.insert((*id, *owner));
        let o = g.owners.entry(*owner).or_default();
        o.bytes += size;
        o.shards += 1;
        Ok(match existing {
            Some(mut r) => {
                r.refs += 1;
                g.shards.insert(*id, r);
                AddOutcome::NewReference
            }
            None => {
                g.shards.insert(
                    *id,
                    ShardRecord {
                        size,
                        refs: 1,
                        outboard_indexed: false,
                    },
                );
                g.usage.used += size;
                g.usage.shards += 1;
                AddOutcome::NewShard
            }
        })
    }

    fn unref_locked(
        g: &mut Inner,
        id: &ShardId,
        owner: &NodeId,
    ) -> Result<RemoveOutcome, StoreError> {
        if !g.refs.remove(&(*id, *owner)) {
            return Ok(RemoveOutcome::NotOwner);
        }
        let Some(mut r) = g.shards.get(id).copied() else {
            return Err(StoreError::Corrupt {
                table: "refs",
                reason: format!("reference to unindexed {id}"),
            });
        };
        if let Some(o) = g.owners.get_mut(owner) {
            o.bytes = o.bytes.saturating_sub(r.size);
            o.shards = o.shards.saturating_sub(1);
            if o.shards == 0 {
                g.owners.remove(owner);
            }
        }
        r.refs = r.refs.saturating_sub(1);
        if r.refs == 0 {
            g.shards.remove(id);
            g.outboards.remove(id);
            g.usage.used -= r.size;
            g.usage.shards -= 1;
            Ok(RemoveOutcome::LastReference)
        } else {
            g.shards.insert(*id, r);
            Ok(RemoveOutcome::Released)
        }
    }
}

impl Store for MemStore {
    fn shard(&self, id: &ShardId) -> Result<Option<ShardRecord>, StoreError> {
        Ok(self.lock()?.shards.get(id).copied())
    }

    fn is_referenced_by(&self, id: &ShardId, owner: &NodeId) -> Result<bool, StoreError> {
        Ok(self.lock()?.refs.contains(&(*id, *owner)))
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
        let mut g = self.lock()?;
        let out = Self::add_locked(&mut g, id, size, owner, quota)?;
        g.tags.insert((*id, *owner, *tag));
        if let (AddOutcome::NewShard, Some(ob)) = (out, outboard) {
            g.outboards.insert(*id, ob.to_vec());
            if let Some(r) = g.shards.get_mut(id) {
                r.outboard_indexed = true;
            }
        }
        Ok(out)
    }

    fn outboard(&self, id: &ShardId) -> Result<Option<Vec<u8>>, StoreError> {
        let mut g = self.lock()?;
        g.outboard_reads += 1;
        Ok(g.outboards.get(id).cloned())
    }

    fn remove_reference(
        &self,
        id: &ShardId,
        owner: &NodeId,
        tag: &RefTag,
    ) -> Result<RemoveOutcome, StoreError> {
        let mut g = self.lock()?;
        if !g.refs.contains(&(*id, *owner)) {
            return Ok(RemoveOutcome::NotOwner);
        }
        g.tags.remove(&(*id, *owner, *tag));
        if g.tags.iter().any(|(s, o, _)| s == id && o == owner) {
            return Ok(RemoveOutcome::StillTagged);
        }
        Self::unref_locked(&mut g, id, owner)
    }

    fn drop_shard(&self, id: &ShardId) -> Result<Option<ShardRecord>, StoreError> {
        let mut g = self.lock()?;
        let rec = g.shards.get(id).copied();
        let owners: Vec<NodeId> = g
            .refs
            .iter()
            .filter(|(s, _)| s == id)
            .map(|(_, o)| *o)
            .collect();
        g.tags.retain(|(s, _, _)| s != id);
        for o in owners {
            Self::unref_locked(&mut g, id, &o)?;
        }
        Ok(rec)
    }
    fn remember_nonce(
        &self,
        owner: &NodeId,
        nonce: &[u8; 16],
        timestamp_ms: u64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .lock()?
            .nonces
            .insert((*owner, *nonce), timestamp_ms)
            .is_none())
    }

    fn expire_nonces(&self, before_ms: u64) -> Result<usize, StoreError> {
        let mut g = self.lock()?;
        let n = g.nonces.len();
        g.nonces.retain(|_, ts| *ts >= before_ms);
        Ok(n - g.nonces.len())
    }

    fn usage(&self) -> Result<Usage, StoreError> {
        Ok(self.lock()?.usage)
    }

    fn owner_usage(&self, owner: &NodeId) -> Result<OwnerUsage, StoreError> {
        Ok(self.lock()?.owners.get(owner).copied().unwrap_or_default())
    }

    fn shards(&self) -> Result<Vec<(ShardId, ShardRecord)>, StoreError> {
        Ok(self.lock()?.shards.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn owners(&self) -> Result<Vec<(NodeId, OwnerUsage)>, StoreError> {
        Ok(self.lock()?.owners.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn put_unit(
        &self,
        comm_r: &UnitKey,
        record: &[u8],
        members: &[ShardId],
    ) -> Result<(), StoreError> {
        let mut g = self.lock()?;
        g.units.insert(*comm_r, record.to_vec());
        for id in members {
            g.placed.insert(*id, *comm_r);
        }
        Ok(())
    }

    fn unit(&self, comm_r: &UnitKey) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock()?.units.get(comm_r).cloned())
    }

    fn units(&self) -> Result<Vec<(UnitKey, Vec<u8>)>, StoreError> {
        Ok(self
            .lock()?
            .units
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect())
    }

    fn placement(&self, id: &ShardId) -> Result<Option<UnitKey>, StoreError> {
        Ok(self.lock()?.placed.get(id).copied())
    }

    fn placements(&self) -> Result<Vec<(ShardId, UnitKey)>, StoreError> {
        Ok(self.lock()?.placed.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn remove_unit(&self, comm_r: &UnitKey, members: &[ShardId]) -> Result<(), StoreError> {
        let mut g = self.lock()?;
        g.units.remove(comm_r);
        for id in members {
            if g.placed.get(id) == Some(comm_r) {
                g.placed.remove(id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conformance() {
        super::super::conformance::run(&super::MemStore::new());
    }
}
