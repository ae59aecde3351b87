//! The auditor's RocksDB: the ledger and what it remembers between epochs.
//!
//! ```text
//! ledger    seq (u64 BE)            → signed entry
//! meta      "head"                  → next seq (u64 BE) ‖ hash of the last entry
//!           "epoch"                 → next epoch (u64 BE)
//! datasets  dataset id              → the owner's signed registration
//! acked     node id ‖ shard id      → ()   shards the node once reported holding
//! proven    comm_r                  → ()   units whose seal proof verified
//! ```
//!
//! One process writes (the `run` loop, or a one-off command while it is not running); readers
//! (`ledger`, `rewards`) open the database as a RocksDB *secondary*, which works beside a running
//! writer. Every change of an epoch (its entries, acknowledgements, proven units and the epoch
//! counter) is one synced write batch: a crash leaves either the whole epoch or none of it.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use granary_client::{ids::ShardId, register::SignedRegistration};
use granary_protocol::{NodeId, SecretKey};
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::ledger::{Chain, Record, SignedEntry};

const CF_LEDGER: &str = "ledger";
const CF_META: &str = "meta";
const CF_DATASETS: &str = "datasets";
const CF_ACKED: &str = "acked";
const CF_PROVEN: &str = "proven";
const CFS: [&str; 5] = [CF_LEDGER, CF_META, CF_DATASETS, CF_ACKED, CF_PROVEN];

/// A database failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// RocksDB refused.
    #[error("database: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A stored value is not what it should be.
    #[error("database: corrupt {0}")]
    Corrupt(&'static str),
    /// The ledger's head does not match its last entry.
    #[error("database: ledger head does not match its entries")]
    Head,
}

/// Changes written together, in one synced batch.
#[derive(Debug, Default)]
pub struct Changes {
    records: Vec<Record>,
    datasets: Vec<([u8; 32], Option<Vec<u8>>)>,
    acked: Vec<([u8; 32], ShardId)>,
    proven: Vec<[u8; 32]>,
    next_epoch: Option<u64>,
}

impl Changes {
    /// Appends `record` to the ledger.
    pub fn record(&mut self, record: Record) {
        self.records.push(record);
    }

    /// Stores (or with `None` removes) a dataset's registration.
    pub fn dataset(&mut self, id: [u8; 32], registration: Option<Vec<u8>>) {
        self.datasets.push((id, registration));
    }

    /// Remembers that `node` reported holding `shard`.
    pub fn acknowledge(&mut self, node: [u8; 32], shard: ShardId) {
        self.acked.push((node, shard));
    }

    /// Remembers that unit `comm_r`'s seal proof verified.
    pub fn proven(&mut self, comm_r: [u8; 32]) {
        self.proven.push(comm_r);
    }

    /// Sets the next epoch's number.
    pub fn next_epoch(&mut self, epoch: u64) {
        self.next_epoch = Some(epoch);
    }
}

/// The auditor's database.
#[derive(Debug)]
pub struct AuditorDb {
    db: DB,
    chain: Chain,
}

fn open_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.set_max_open_files(-1);
    o
}

fn descriptors() -> Vec<ColumnFamilyDescriptor> {
    CFS.iter()
        .map(|n| ColumnFamilyDescriptor::new(*n, Options::default()))
        .collect()
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn read_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

impl AuditorDb {
    /// Opens (creating) the database at `path` for writing, for `auditor`'s ledger.
    pub fn open(path: &Path, auditor: &NodeId) -> Result<Self, DbError> {
        let db = DB::open_cf_descriptors(&open_options(), path, descriptors())?;
        let chain = Self::load_chain(&db, auditor)?;
        Ok(Self { db, chain })
    }

    /// Opens the database read-only beside a running writer (a RocksDB secondary whose own
    /// files go to `scratch`).
    pub fn open_reader(path: &Path, scratch: &Path, auditor: &NodeId) -> Result<Self, DbError> {
        let db =
            DB::open_cf_descriptors_as_secondary(&open_options(), path, scratch, descriptors())?;
        db.try_catch_up_with_primary()?;
        let chain = Self::load_chain(&db, auditor)?;
        Ok(Self { db, chain })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created on open")
    }

    fn load_chain(db: &DB, auditor: &NodeId) -> Result<Chain, DbError> {
        let meta = db.cf_handle(CF_META).expect("created on open");
        match db.get_cf(meta, b"head")? {
            None => Ok(Chain::new(auditor)),
            Some(v) if v.len() == 40 => Ok(Chain {
                next_seq: read_u64(&v).ok_or(DbError::Corrupt("head"))?,
                prev: v[8..].try_into().map_err(|_| DbError::Corrupt("head"))?,
            }),
            Some(_) => Err(DbError::Corrupt("head")),
        }
    }

    /// Entries so far.
    pub fn len(&self) -> u64 {
        self.chain.next_seq
    }

    /// Whether the ledger has no entry yet.
    pub fn is_empty(&self) -> bool {
        self.chain.next_seq == 0
    }

    /// The number of the next epoch.
    pub fn next_epoch(&self) -> Result<u64, DbError> {
        match self.db.get_cf(self.cf(CF_META), b"epoch")? {
            None => Ok(0),
            Some(v) => read_u64(&v).ok_or(DbError::Corrupt("epoch")),
        }
    }

    /// Writes `changes` in one synced batch, signing its records onto the ledger.
    pub fn commit(
        &mut self,
        key: &SecretKey,
        time_ms: u64,
        changes: Changes,
    ) -> Result<(), DbError> {
        let mut batch = WriteBatch::default();
        let mut chain = self.chain.clone();
        for r in changes.records {
            let seq = chain.next_seq;
            let e = chain.append(key, time_ms, r);
            batch.put_cf(self.cf(CF_LEDGER), be(seq), e.to_bytes());
        }
        let mut head = be(chain.next_seq).to_vec();
        head.extend_from_slice(&chain.prev);
        batch.put_cf(self.cf(CF_META), b"head", head);
        for (id, reg) in changes.datasets {
            match reg {
                Some(b) => batch.put_cf(self.cf(CF_DATASETS), id, b),
                None => batch.delete_cf(self.cf(CF_DATASETS), id),
            }
        }
        for (node, shard) in changes.acked {
            batch.put_cf(self.cf(CF_ACKED), [node, shard.0].concat(), []);
        }
        for u in changes.proven {
            batch.put_cf(self.cf(CF_PROVEN), u, []);
        }
        if let Some(e) = changes.next_epoch {
            batch.put_cf(self.cf(CF_META), b"epoch", be(e));
        }
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db.write_opt(batch, &w)?;
        self.chain = chain;
        Ok(())
    }

    /// Every ledger entry, in order.
    pub fn entries(&self) -> impl Iterator<Item = Result<SignedEntry, DbError>> + '_ {
        self.db
            .iterator_cf(self.cf(CF_LEDGER), IteratorMode::Start)
            .map(|kv| {
                let (_, v) = kv?;
                SignedEntry::from_bytes(&v).map_err(|_| DbError::Corrupt("ledger entry"))
            })
    }

    /// The registrations currently stored (each re-checked).
    pub fn registrations(
        &self,
    ) -> Result<Vec<granary_client::register::AuditRegistration>, DbError> {
        let mut out = Vec::new();
        for kv in self
            .db
            .iterator_cf(self.cf(CF_DATASETS), IteratorMode::Start)
        {
            let (_, v) = kv?;
            let (_, reg) =
                SignedRegistration::open(&v).map_err(|_| DbError::Corrupt("registration"))?;
            out.push(reg);
        }
        Ok(out)
    }

    /// The stored registration of `dataset`, if any.
    pub fn registration(
        &self,
        dataset: &[u8; 32],
    ) -> Result<Option<granary_client::register::AuditRegistration>, DbError> {
        self.db
            .get_cf(self.cf(CF_DATASETS), dataset)?
            .map(|v| {
                SignedRegistration::open(&v)
                    .map(|(_, r)| r)
                    .map_err(|_| DbError::Corrupt("registration"))
            })
            .transpose()
    }

    /// Per node, the shards it once reported holding.
    pub fn acknowledged(&self) -> Result<HashMap<[u8; 32], HashSet<ShardId>>, DbError> {
        let mut out: HashMap<[u8; 32], HashSet<ShardId>> = HashMap::new();
        for kv in self.db.iterator_cf(self.cf(CF_ACKED), IteratorMode::Start) {
            let (k, _) = kv?;
            let (node, shard) = k
                .split_at_checked(32)
                .ok_or(DbError::Corrupt("acked key"))?;
            let node: [u8; 32] = node.try_into().map_err(|_| DbError::Corrupt("acked key"))?;
            let shard: [u8; 32] = shard
                .try_into()
                .map_err(|_| DbError::Corrupt("acked key"))?;
            out.entry(node).or_default().insert(ShardId(shard));
        }
        Ok(out)
    }

    /// Units whose seal proof verified.
    pub fn proven_units(&self) -> Result<HashSet<[u8; 32]>, DbError> {
        let mut out = HashSet::new();
        for kv in self.db.iterator_cf(self.cf(CF_PROVEN), IteratorMode::Start) {
            let (k, _) = kv?;
            out.insert(
                k[..]
                    .try_into()
                    .map_err(|_| DbError::Corrupt("proven key"))?,
            );
        }
        Ok(out)
    }
}
