//! `granary-node status`: what a node directory holds, read through a RocksDB secondary
//! instance so it works while the node is running.

use std::{fmt, path::Path};

use granary_protocol::{NodeId, SecretKey, ShardId};
use serde::Serialize;

use crate::{
    blobs::Blobs,
    config::Config,
    node::{StartError, addr_path, identity_path},
    store::{Store, rocks::RocksStore},
};

/// A snapshot of a node directory.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Node id.
    pub id: String,
    /// Configured listen address.
    pub listen: String,
    /// Address recorded by the last start (the node may have stopped since).
    pub last_bound: Option<String>,
    /// Failure-domain label.
    pub label: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Bytes stored.
    pub used: u64,
    /// Shards stored.
    pub shard_count: u64,
    /// Owners with references: (id, bytes, shards).
    pub owners: Vec<(String, u64, u64)>,
    /// Shards: (id, size, references); at most `limit` entries.
    pub shards: Vec<(String, u64, u32)>,
    /// Files in quarantine.
    pub quarantined: usize,
    /// Sealed units.
    pub sealed_units: usize,
    /// Bytes in sealed units (padding included).
    pub sealed_bytes: u64,
    /// Shards placed in a sealed unit.
    pub sealed_shards: usize,
    /// Shards waiting to be sealed.
    pub pending_shards: usize,
}

/// Reads the status of the node in `dir`, listing at most `limit` shards.
pub fn read(dir: &Path, limit: usize) -> Result<Status, StartError> {
    let config = Config::load(dir)?;
    let id: NodeId = SecretKey::load(&identity_path(dir))?.public();
    let scratch = tempfile_dir(dir)?;
    let store = RocksStore::open_secondary(&dir.join("db"), &scratch)?;
    let usage = store.usage()?;
    let owners = store
        .owners()?
        .into_iter()
        .map(|(o, u)| (o.to_string(), u.bytes, u.shards))
        .collect();
    let shards = store
        .shards()?
        .into_iter()
        .take(limit)
        .map(|(s, r): (ShardId, _)| (s.to_string(), r.size, r.refs))
        .collect();
    let units = crate::sealing::unit_records(&store).map_err(|e| StartError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::other(e.detail),
    })?;
    let pending_shards = crate::sealing::pending_shards(&store)
        .map(|p| p.len())
        .unwrap_or_default();
    let sealed_shards = (usage.shards as usize).saturating_sub(pending_shards);
    drop(store);
    let _ = std::fs::remove_dir_all(&scratch);
    let quarantined = Blobs::open(dir)
        .and_then(|b| b.quarantined())
        .map_or(0, |q| q.len());
    Ok(Status {
        id: id.to_string(),
        listen: config.listen.to_string(),
        last_bound: std::fs::read_to_string(addr_path(dir))
            .ok()
            .map(|s| s.trim().to_string()),
        label: config.label,
        capacity: config.capacity,
        used: usage.used,
        shard_count: usage.shards,
        owners,
        shards,
        quarantined,
        sealed_units: units.len(),
        sealed_bytes: units.iter().map(|u| u.unit.statement.len).sum(),
        sealed_shards,
        pending_shards,
    })
}

fn tempfile_dir(dir: &Path) -> Result<std::path::PathBuf, StartError> {
    let p = dir.join(format!(".status-{}", std::process::id()));
    std::fs::create_dir_all(&p).map_err(|source| StartError::Io {
        path: p.clone(),
        source,
    })?;
    Ok(p)
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "node        {}", self.id)?;
        writeln!(
            f,
            "listen      {} (last bound: {})",
            self.listen,
            self.last_bound.as_deref().unwrap_or("-")
        )?;
        writeln!(f, "label       {}", self.label)?;
        writeln!(f, "used        {} of {} bytes", self.used, self.capacity)?;
        writeln!(f, "shards      {}", self.shard_count)?;
        writeln!(
            f,
            "sealed      {} shards in {} units ({} bytes); {} shards waiting",
            self.sealed_shards, self.sealed_units, self.sealed_bytes, self.pending_shards
        )?;
        writeln!(f, "quarantined {} files", self.quarantined)?;
        writeln!(f, "owners      {}", self.owners.len())?;
        for (o, b, n) in &self.owners {
            writeln!(f, "  {o} {b} bytes in {n} shards")?;
        }
        for (s, size, refs) in &self.shards {
            writeln!(f, "  shard {s} {size} bytes, {refs} refs")?;
        }
        Ok(())
    }
}
