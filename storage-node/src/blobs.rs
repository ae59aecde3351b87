//! Shard bytes on disk.
//!
//! ```text
//! <dir>/shards/ab/<64-hex id>           shard bytes (256 directories, made when the tree is)
//! <dir>/shards/ab/<64-hex id>.obao      outboard of a shard stored by an older node (newer
//!                                       ones keep it in the index)
//! <dir>/shards.layout                   "2": the 256 directories above exist
//! <dir>/tmp/                            writes in progress (emptied on start)
//! <dir>/quarantine/                     files found inconsistent with the index
//! ```
//!
//! A write streams into `tmp/` while it is received, is verified and fsynced, renamed into
//! place and the directory fsynced; only then is the shard indexed, with its outboard, in one
//! RocksDB write (see [`crate::store`]). A crash at any point leaves either a file in `tmp/` or
//! an unindexed file, which the start-up check removes or quarantines: nothing half-written is
//! ever served.

use std::{
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use granary_protocol::{ShardId, verified::Outboard};

use crate::store::Store;

/// File beside `shards/` that says its 256 directories exist (see `Blobs::prepare_fanout`).
pub const LAYOUT_MARKER: &str = "shards.layout";
/// What [`LAYOUT_MARKER`] holds once the one-level tree is in place.
const LAYOUT_V2: &[u8] = b"2\n";

/// Suffix of the outboard files of shards stored before outboards moved into the index.
pub const OUTBOARD_EXT: &str = "obao";

/// The shard file tree.
#[derive(Debug)]
pub struct Blobs {
    root: PathBuf,
    tmp: PathBuf,
    quarantine: PathBuf,
    counter: AtomicU64,
}

/// A shard written to `tmp/` but not yet in place; removed on drop unless committed.
#[derive(Debug)]
pub struct Staged {
    id: ShardId,
    data: PathBuf,
    committed: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.data);
        }
    }
}

/// Fsyncs a directory, so entries made or removed in it survive a crash.
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Writes a small file whole and fsyncs it and the directory holding it.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

impl Blobs {
    /// Opens (creating) the tree under `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let b = Self {
            root: dir.join("shards"),
            tmp: dir.join("tmp"),
            quarantine: dir.join("quarantine"),
            counter: AtomicU64::new(0),
        };
        for d in [&b.root, &b.tmp, &b.quarantine] {
            fs::create_dir_all(d)?;
        }
        b.prepare_fanout()?;
        Ok(b)
    }

    /// Makes the 256 shard directories once, durably (a shard renamed into a directory whose
    /// own entry was never fsynced could vanish with it in a crash), so committing a shard
    /// needs no `mkdir`. A tree from an older node (`shards/ab/cd/<id>`, directories made on
    /// demand) has its files moved up a level first. [`LAYOUT_MARKER`] records that this is done.
    fn prepare_fanout(&self) -> io::Result<()> {
        let marker = self.root.with_file_name(LAYOUT_MARKER);
        if fs::read(&marker).is_ok_and(|m| m == LAYOUT_V2) {
            return Ok(());
        }
        for byte in 0..=u8::MAX {
            let dir = self.root.join(hex::encode([byte]));
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    for sub in fs::read_dir(&dir)? {
                        let sub = sub?.path();
                        if !sub.is_dir() {
                            continue;
                        }
                        for f in fs::read_dir(&sub)? {
                            let f = f?.path();
                            if let Some(name) = f.file_name() {
                                fs::rename(&f, dir.join(name))?;
                            }
                        }
                        fs::remove_dir(&sub)?;
                    }
                }
                Err(e) => return Err(e),
            }
            sync_dir(&dir)?;
        }
        sync_dir(&self.root)?;
        write_durably(&marker, LAYOUT_V2)
    }

    fn dir_of(&self, id: &ShardId) -> PathBuf {
        self.root.join(hex::encode(&id.0[..1]))
    }

    /// Path of a shard's bytes.
    pub fn data_path(&self, id: &ShardId) -> PathBuf {
        self.dir_of(id).join(id.to_string())
    }

    /// Path of the outboard file of a shard stored before outboards moved into the index.
    pub fn outboard_path(&self, id: &ShardId) -> PathBuf {
        self.dir_of(id).join(format!("{id}.{OUTBOARD_EXT}"))
    }

    /// The directory used for writes in progress (for free-space checks).
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Creates the `tmp/` file a shard's bytes are streamed into; the returned [`Staged`]
    /// removes it on drop unless committed.
    pub fn begin(&self, id: &ShardId) -> io::Result<(Staged, File)> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let staged = Staged {
            id: *id,
            data: self
                .tmp
                .join(format!("{id}.{}.{n}.data", std::process::id())),
            committed: false,
        };
        let file = File::create(&staged.data)?;
        Ok((staged, file))
    }

    /// Renames a staged (fsynced) shard into place and fsyncs the directory.
    pub fn commit(&self, mut staged: Staged) -> io::Result<()> {
        let dir = self.dir_of(&staged.id);
        fs::rename(&staged.data, self.data_path(&staged.id))?;
        staged.committed = true;
        sync_dir(&dir)
    }

    /// A shard's outboard: the one stored with its index entry or, for a shard stored before
    /// outboards moved into the index, its `.obao` file.
    pub fn outboard(&self, store: &dyn Store, id: &ShardId, size: u64) -> io::Result<Outboard> {
        let data = match store.outboard(id).map_err(io::Error::other)? {
            Some(data) => data,
            None => fs::read(self.outboard_path(id))?,
        };
        Ok(Outboard {
            root: id.hash(),
            size,
            data,
        })
    }

    /// Opens a shard's bytes.
    pub fn open_data(&self, id: &ShardId) -> io::Result<File> {
        File::open(self.data_path(id))
    }

    /// Removes a shard's files (missing files are not an error).
    pub fn remove(&self, id: &ShardId) -> io::Result<()> {
        for p in [self.data_path(id), self.outboard_path(id)] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Moves a file into `quarantine/`, keeping its name.
    pub fn quarantine_file(&self, path: &Path) -> io::Result<PathBuf> {
        let name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut dest = self.quarantine.join(&name);
        if dest.exists() {
            dest = self
                .quarantine
                .join(format!("{}.{n}", name.to_string_lossy()));
        }
        fs::rename(path, &dest)?;
        Ok(dest)
    }

    /// Moves both files of a shard (where present) into `quarantine/`.
    pub fn quarantine(&self, id: &ShardId) -> io::Result<()> {
        for p in [self.data_path(id), self.outboard_path(id)] {
            if p.exists() {
                self.quarantine_file(&p)?;
            }
        }
        Ok(())
    }

    /// Empties `tmp/`; returns how many files were removed.
    pub fn clear_tmp(&self) -> io::Result<usize> {
        let mut n = 0;
        for e in fs::read_dir(&self.tmp)? {
            fs::remove_file(e?.path())?;
            n += 1;
        }
        Ok(n)
    }

    /// Every file in the shard tree (data and outboards).
    pub fn list_files(&self) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for a in fs::read_dir(&self.root)? {
            let a = a?.path();
            if !a.is_dir() {
                out.push(a);
                continue;
            }
            for b in fs::read_dir(&a)? {
                let b = b?.path();
                if !b.is_dir() {
                    out.push(b);
                    continue;
                }
                for f in fs::read_dir(&b)? {
                    out.push(f?.path());
                }
            }
        }
        Ok(out)
    }

    /// Files currently in `quarantine/`.
    pub fn quarantined(&self) -> io::Result<Vec<PathBuf>> {
        fs::read_dir(&self.quarantine)?
            .map(|e| e.map(|e| e.path()))
            .collect()
    }

    /// Parses a shard-tree file name into (id, is_outboard).
    pub fn parse_name(path: &Path) -> Option<(ShardId, bool)> {
        let name = path.file_name()?.to_str()?;
        let (hex_id, ob) = match name.strip_suffix(&format!(".{OUTBOARD_EXT}")) {
            Some(h) => (h, true),
            None => (name, false),
        };
        let mut id = [0u8; 32];
        hex::decode_to_slice(hex_id, &mut id).ok()?;
        Some((ShardId(id), ob))
    }
}
