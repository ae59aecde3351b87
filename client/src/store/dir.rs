//! A shard store in a local directory: `shards/<2 hex>/<hex id>` plus `<hex id>.obao` outboards,
//! and `roots/<hex id>`. Files are written to a temporary name and renamed, so a crash never
//! leaves a half-written shard under its final name.

use std::{
    fs,
    io::{Read, Seek, SeekFrom, Write},
    ops::Range,
    path::{Path, PathBuf},
};

use granary_protocol::verified::{self, Outboard};

use super::{FetchError, PutShard, ShardLoc, ShardStore, StoreError};
use crate::ids::{DatasetId, ShardId};

/// A directory of shards.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
    fsync: bool,
    /// Which `shards/<2 hex>` directories are known to exist (saves a mkdir per file).
    made: std::sync::Arc<Vec<std::sync::atomic::AtomicBool>>,
}

impl DirStore {
    /// Opens (creating) a store at `root`. With `fsync`, every write is flushed to disk before
    /// it counts as stored.
    pub fn open(root: impl Into<PathBuf>, fsync: bool) -> std::io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("shards"))?;
        fs::create_dir_all(root.join("roots"))?;
        Ok(Self {
            root,
            fsync,
            made: std::sync::Arc::new((0..256).map(|_| Default::default()).collect()),
        })
    }

    /// Path of a shard's data file.
    pub fn shard_path(&self, id: &ShardId) -> PathBuf {
        let hex = hex::encode(id.0);
        self.root.join("shards").join(&hex[..2]).join(hex)
    }

    fn outboard_path(&self, id: &ShardId) -> PathBuf {
        self.shard_path(id).with_extension("obao")
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            if self.fsync {
                f.sync_all()?;
            }
            fs::rename(&tmp, path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(io(e));
        }
        Ok(())
    }

    /// Removes a shard (tests use this to simulate loss).
    pub fn remove_shard(&self, id: &ShardId) -> std::io::Result<()> {
        fs::remove_file(self.shard_path(id))?;
        let _ = fs::remove_file(self.outboard_path(id));
        Ok(())
    }
}

impl ShardStore for DirStore {
    fn put_segment(&self, shards: &[PutShard<'_>]) -> Result<Vec<Option<[u8; 32]>>, StoreError> {
        use std::sync::atomic::Ordering;
        for s in shards {
            let path = self.shard_path(&s.id);
            let made = &self.made[s.id.0[0] as usize];
            if !made.load(Ordering::Relaxed)
                && let Some(parent) = path.parent()
            {
                fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                    path: parent.to_path_buf(),
                    source,
                })?;
                made.store(true, Ordering::Relaxed);
            }
            if path.exists() {
                continue;
            }
            self.write_atomic(&self.outboard_path(&s.id), &s.outboard.data)?;
            self.write_atomic(&path, &s.bytes)?;
        }
        Ok(vec![None; shards.len()])
    }

    fn put_root(&self, id: &DatasetId, bytes: &[u8], _copies: usize) -> Result<(), StoreError> {
        let roots = self.root.join("roots");
        fs::create_dir_all(&roots).map_err(|source| StoreError::Io {
            path: roots.clone(),
            source,
        })?;
        self.write_atomic(&self.root.join("roots").join(hex::encode(id.0)), bytes)
    }

    fn get_root(&self, id: &DatasetId) -> Result<Vec<u8>, FetchError> {
        let sid = ShardId(id.0);
        let bytes = fs::read(self.root.join("roots").join(hex::encode(id.0)))
            .map_err(|_| FetchError::NotFound(sid))?;
        if blake3::hash(&bytes) != id.as_hash() {
            return Err(FetchError::Unavailable {
                id: sid,
                reason: "stored root record does not match the dataset id".into(),
            });
        }
        Ok(bytes)
    }

    fn read_range(&self, shard: &ShardLoc, range: Range<u64>) -> Result<Vec<u8>, FetchError> {
        let id = shard.id;
        let unavailable = |e: std::io::Error| FetchError::Unavailable {
            id,
            reason: e.to_string(),
        };
        let mut file = fs::File::open(self.shard_path(&id)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FetchError::NotFound(id),
            _ => unavailable(e),
        })?;
        if range.start == 0 && range.end == shard.len {
            // Whole shard: one hash over it is the cheapest full check.
            let mut bytes = Vec::with_capacity(shard.len as usize);
            file.read_to_end(&mut bytes).map_err(unavailable)?;
            if bytes.len() as u64 != shard.len || blake3::hash(&bytes) != id.as_hash() {
                return Err(FetchError::Corrupt {
                    id,
                    source: verified::VerifyError::LeafMismatch { chunk: 0 },
                });
            }
            return Ok(bytes);
        }
        // A range: encode it with its proof the way a node would, then verify it as a client.
        let ob_data = fs::read(self.outboard_path(&id)).map_err(unavailable)?;
        let size = file.seek(SeekFrom::End(0)).map_err(unavailable)?;
        if size != shard.len {
            return Err(FetchError::Corrupt {
                id,
                source: verified::VerifyError::Truncated,
            });
        }
        let ob = Outboard {
            root: id.as_hash(),
            size,
            data: ob_data,
        };
        let mut encoded = Vec::new();
        // Local rot shows up as an encode failure; treat it like bytes that failed to verify.
        if verified::encode_range(&file, &ob, range.clone(), &mut encoded).is_err() {
            return Err(FetchError::Corrupt {
                id,
                source: verified::VerifyError::Truncated,
            });
        }
        verified::decode_range(&id.as_hash(), shard.len, range, &encoded)
            .map_err(|source| FetchError::Corrupt { id, source })
    }

    fn read_unverified(
        &self,
        shard: &ShardLoc,
        offset: u64,
        out: &mut [u8],
    ) -> Result<bool, FetchError> {
        use std::os::unix::fs::FileExt;
        let id = shard.id;
        let file = fs::File::open(self.shard_path(&id)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FetchError::NotFound(id),
            _ => FetchError::Unavailable {
                id,
                reason: e.to_string(),
            },
        })?;
        file.read_exact_at(out, offset)
            .map_err(|e| FetchError::Unavailable {
                id,
                reason: e.to_string(),
            })?;
        Ok(true)
    }

    fn read_ahead_threads(&self) -> usize {
        // Reads are local and CPU-bound: one thread per core keeps them all busy.
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }

    fn has_shards(&self, ids: &[ShardId]) -> Result<Vec<bool>, StoreError> {
        Ok(ids.iter().map(|id| self.shard_path(id).exists()).collect())
    }
}
