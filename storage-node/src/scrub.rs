//! Scrubbing: re-hash stored shards and quarantine any whose bytes or outboard no longer match
//! their id. Offline for every shard (`granary-node scrub`, node stopped), or online in the
//! running node at a bounded rate ([`run_online`], `scrub_rate` in the config).
//!
//! Reads already re-verify the bytes they serve; a scrub finds rot in shards nobody reads, so
//! that repair can rebuild them before too many copies are lost.

use std::{fs::File, io::BufReader, path::Path, sync::Arc, time::Duration};

use granary_protocol::{ShardId, verified};

use crate::{
    blobs::Blobs,
    node::{CheckReport, StartError, check},
    sealing::{Units, check_units},
    state::State,
    store::{Store, rocks::RocksStore},
};

/// What a scrub found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// The start-up consistency check run first.
    pub check: CheckReport,
    /// Shards re-hashed.
    pub verified: usize,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Shards quarantined because their bytes or outboard did not match their id.
    pub corrupt: Vec<String>,
}

/// Scrubs the node directory `dir`. Fails if the node is running (the database is locked).
pub fn scrub(dir: &Path) -> Result<ScrubReport, StartError> {
    let store = RocksStore::open(&dir.join("db"))?;
    let blobs = Blobs::open(dir).map_err(|source| StartError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let units = Units::open(dir).map_err(|source| StartError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let unit_report = check_units(&store, &units, &blobs).map_err(|source| StartError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut report = ScrubReport {
        check: check(&store, &blobs)?,
        ..Default::default()
    };
    report.check.quarantined.extend(unit_report);
    for (id, rec) in store.shards()? {
        let why = verify_shard(&store, &units, &blobs, &id, rec.size);
        report.verified += 1;
        report.bytes += rec.size;
        if let Some(why) = why {
            store.drop_shard(&id)?;
            blobs.quarantine(&id).map_err(|source| StartError::Io {
                path: blobs.data_path(&id),
                source,
            })?;
            report.corrupt.push(format!("{id}: {why}"));
        }
    }
    Ok(report)
}

/// Re-hashes one shard (unsealing it from its unit if it has no plain file); `Some(reason)` if
/// it no longer matches its id.
pub fn verify_shard(
    store: &dyn Store,
    units: &Units,
    blobs: &Blobs,
    id: &ShardId,
    size: u64,
) -> Option<String> {
    let fresh = match File::open(blobs.data_path(id)) {
        Ok(f) => verified::outboard(BufReader::with_capacity(1 << 20, f), size),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match crate::sealing::read_sealed(store, units, id, 0..size) {
                Ok(Some(bytes)) => verified::outboard(&bytes[..], size),
                Ok(None) => Err(e),
                Err(r) => Err(std::io::Error::other(r.detail)),
            }
        }
        Err(e) => Err(e),
    };
    let stored = blobs.outboard(store, id, size);
    match (fresh, stored) {
        (Ok(f), Ok(s)) if f.root == id.hash() && f.data == s.data => None,
        (Ok(f), Ok(_)) if f.root != id.hash() => Some("bytes do not hash to the id".to_string()),
        (Ok(_), Ok(_)) => Some("outboard does not match the bytes".to_string()),
        (Err(e), _) | (_, Err(e)) => Some(format!("unreadable: {e}")),
    }
}

/// The running node's background scrub: walks the index in id order, re-hashing at most
/// `scrub_rate` bytes per second, pausing `scrub_pause_secs` between passes. Runs until aborted.
pub(crate) async fn run_online(st: Arc<State>) {
    let rate = st.config.scrub_rate;
    if rate == 0 {
        return;
    }
    loop {
        let shards = match st.store.shards() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%e, "scrub: listing shards failed");
                Vec::new()
            }
        };
        let (mut checked, mut bad) = (0usize, 0usize);
        for (id, rec) in shards {
            let s = Arc::clone(&st);
            let res = tokio::task::spawn_blocking(move || {
                // Still indexed? (It may have been deleted since the listing.)
                if !matches!(s.store.shard(&id), Ok(Some(r)) if r.size == rec.size) {
                    return None;
                }
                let why = verify_shard(s.store.as_ref(), &s.units, &s.blobs, &id, rec.size)?;
                let _g = s.commit_lock.lock();
                // Re-check under the lock: a delete (and a fresh store) may have raced the hashing.
                if !matches!(s.store.shard(&id), Ok(Some(_))) {
                    return None;
                }
                let why = verify_shard(s.store.as_ref(), &s.units, &s.blobs, &id, rec.size)
                    .map(|_| why)?;
                let _ = s.store.drop_shard(&id);
                let _ = s.blobs.quarantine(&id);
                Some(why)
            })
            .await;
            checked += 1;
            if let Ok(Some(why)) = res {
                bad += 1;
                tracing::warn!(%id, %why, "scrub: quarantined corrupt shard");
            }
            tokio::time::sleep(Duration::from_secs_f64(rec.size as f64 / rate as f64)).await;
        }
        tracing::info!(checked, quarantined = bad, "scrub pass done");
        tokio::time::sleep(Duration::from_secs(st.config.scrub_pause_secs.max(1))).await;
    }
}
