//! `granary-node scrub`: re-hash every stored shard (node stopped) and quarantine any whose
//! bytes or outboard no longer match its id.
//!
//! Reads already re-verify the bytes they serve; a scrub finds rot in shards nobody reads, so
//! that repair can rebuild them before too many copies are lost.

use std::{fs::File, io::BufReader, path::Path};

use granary_protocol::verified;

use crate::{
    blobs::Blobs,
    node::{CheckReport, StartError, check},
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
    let mut report = ScrubReport {
        check: check(&store, &blobs)?,
        ..Default::default()
    };
    for (id, rec) in store.shards()? {
        let fresh = File::open(blobs.data_path(&id))
            .and_then(|f| verified::outboard(BufReader::with_capacity(1 << 20, f), rec.size));
        let stored = blobs.read_outboard(&id, rec.size);
        let why = match (fresh, stored) {
            (Ok(f), Ok(s)) if f.root == id.hash() && f.data == s.data => None,
            (Ok(f), Ok(_)) if f.root != id.hash() => {
                Some("bytes do not hash to the id".to_string())
            }
            (Ok(_), Ok(_)) => Some("outboard does not match the bytes".to_string()),
            (Err(e), _) | (_, Err(e)) => Some(format!("unreadable: {e}")),
        };
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
