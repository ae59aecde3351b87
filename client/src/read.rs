//! Reading a dataset back: the root record, the manifest, then whole datasets, single files or
//! byte ranges, every byte verified.
//!
//! A healthy read touches only the data shards that cover the bytes asked for, and only those
//! byte ranges (the code is systematic). When a shard is missing or fails verification it is
//! treated as lost: the same byte range is read from other shards of the segment until k are
//! in hand, and Reed–Solomon rebuilds it. Whole files are also checked against the BLAKE3 of
//! their plaintext kept in the manifest.

use std::{
    collections::HashSet,
    fs,
    io::Write,
    ops::Range,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
};

use crate::{
    capability::Capability,
    crypto::{self, CryptoError, FileCipher, Opener},
    erasure::{Coder, ErasureError},
    ids::{ContentHash, DatasetKey},
    manifest::{
        Entry, EntryKind, FormatError, IndexedManifest, Manifest, NO_HINT, RootRecord, SegmentDesc,
    },
    store::{FetchError, ShardLoc, ShardStore},
};

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The root record could not be fetched.
    #[error("cannot fetch the dataset's root record: {0}")]
    Root(FetchError),
    /// The root record or manifest is malformed or from a newer version.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The capability's key is not this dataset's key.
    #[error("the key in this capability does not open this dataset (wrong or mistyped key)")]
    WrongKey,
    /// The dataset is private and the capability has no key.
    #[error("this dataset is encrypted: the capability needs its key (granary:<id>#<key>)")]
    KeyRequired,
    /// Too many shards of a segment are lost.
    #[error("segment {segment}: {source}")]
    Segment {
        /// Segment index (manifest segments are counted separately, in `what`).
        segment: usize,
        /// Why.
        source: SegmentError,
    },
    /// The manifest blob did not match the hash in the root record.
    #[error("the manifest does not match its hash in the root record")]
    ManifestMismatch,
    /// No such path in the dataset.
    #[error("no path {0:?} in this dataset")]
    NoSuchPath(String),
    /// The path is not a regular file.
    #[error("{0:?} is not a regular file")]
    NotAFile(String),
    /// The byte range is outside the file.
    #[error("range {start}..{end} is outside {path:?} ({size} bytes)")]
    RangeOutOfBounds {
        /// The file.
        path: String,
        /// Start asked for.
        start: u64,
        /// End asked for.
        end: u64,
        /// File size.
        size: u64,
    },
    /// An encrypted chunk failed authentication.
    #[error("decryption failed: {0}")]
    Decrypt(#[from] CryptoError),
    /// A whole file's plaintext did not hash to the manifest's value.
    #[error("{0:?}: content does not match its hash in the manifest")]
    ContentMismatch(String),
    /// The destination already has something at a path.
    #[error("{0} already exists; extract into a new or empty directory")]
    DestinationExists(PathBuf),
    /// Writing the output failed (a full disk shows up as "No space left on device").
    #[error("writing {path}: {source}")]
    Io {
        /// What was being written.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Why a segment could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// Fewer than k shards could be read and verified.
    #[error("only {available} of {needed} shards needed could be read; lost: {lost}")]
    TooManyLost {
        /// Verified shards on hand.
        available: usize,
        /// k.
        needed: usize,
        /// Why each lost shard failed.
        lost: String,
    },
    /// The codec failed.
    #[error(transparent)]
    Erasure(#[from] ErasureError),
}

/// Counters of what reads had to do.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    /// Shard reads that returned verified bytes.
    pub shard_reads: u64,
    /// Shard reads that failed (missing, corrupt, unreachable).
    pub shard_failures: u64,
    /// Byte ranges rebuilt with Reed–Solomon.
    pub rebuilds: u64,
}

/// One byte range of every shard of a segment (`None`: not read or lost).
type Column = Vec<Option<Vec<u8>>>;

/// Reads segments of one segment table through a store, rebuilding lost shards.
struct SegmentReader<'a> {
    coder: &'a Coder,
    store: &'a dyn ShardStore,
    segments: &'a [SegmentDesc],
    nodes: &'a [[u8; 32]],
}

impl SegmentReader<'_> {
    fn loc(&self, seg: &SegmentDesc, i: usize) -> ShardLoc {
        let hint = seg.placement[i];
        ShardLoc {
            id: seg.shards[i],
            len: seg.shard_len as u64,
            hint: (hint != NO_HINT).then(|| self.nodes[hint as usize]),
            index: i as u8,
        }
    }

    /// Reads column `col` of k healthy shards of `seg` and rebuilds its data shards.
    #[allow(clippy::too_many_arguments)]
    fn gather_column(
        &self,
        seg: &SegmentDesc,
        col: &Range<u64>,
        wanted: &[(usize, Range<u64>)],
        pieces: &mut [Option<Vec<u8>>],
        bad: &mut HashSet<usize>,
        failed: &mut Vec<(usize, String)>,
        stats: &mut ReadStats,
    ) -> Result<Vec<Option<Vec<u8>>>, SegmentError> {
        let total = self.coder.params().total();
        let k = self.coder.params().data as usize;
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; total];
        let mut have = 0;
        // Pieces already read for exactly this column are reused.
        for j in 0..total {
            if !bad.contains(&j)
                && wanted.iter().any(|(w, r)| *w == j && r == col)
                && let Some(p) = &pieces[j]
            {
                shards[j] = Some(p.clone());
                have += 1;
            }
        }
        // The rest is read in concurrent batches of just as many shards as are still needed.
        let mut next = 0;
        while have < k {
            let batch: Vec<usize> = (next..total)
                .filter(|j| !bad.contains(j) && shards[*j].is_none())
                .take(k - have)
                .collect();
            let Some(&last) = batch.last() else { break };
            next = last + 1;
            let reqs: Vec<(ShardLoc, Range<u64>)> = batch
                .iter()
                .map(|&j| (self.loc(seg, j), col.clone()))
                .collect();
            for (&j, result) in batch.iter().zip(self.store.read_ranges(&reqs)) {
                match result {
                    Ok(b) => {
                        stats.shard_reads += 1;
                        shards[j] = Some(b);
                        have += 1;
                    }
                    Err(e) => {
                        stats.shard_failures += 1;
                        bad.insert(j);
                        failed.push((j, e.to_string()));
                    }
                }
            }
        }
        if have < k {
            let lost = failed
                .iter()
                .map(|(i, e)| format!("shard {i}: {e}"))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(SegmentError::TooManyLost {
                available: have,
                needed: k,
                lost,
            });
        }
        self.coder.reconstruct_data(&mut shards)?;
        stats.rebuilds += 1;
        Ok(shards)
    }

    /// Reads `range` (within the segment's length) of segment `idx`.
    fn read(
        &self,
        idx: usize,
        range: Range<u64>,
        stats: &mut ReadStats,
    ) -> Result<Vec<u8>, ReadError> {
        let seg = &self.segments[idx];
        let wrap = |source| ReadError::Segment {
            segment: idx,
            source,
        };
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        if range.is_empty() {
            return Ok(out);
        }
        let sl = seg.shard_len as u64;
        let k = self.coder.params().data as usize;
        let first = (range.start / sl) as usize;
        let last = ((range.end - 1) / sl) as usize;
        let mut failed: Vec<(usize, String)> = Vec::new();
        let wanted: Vec<(usize, Range<u64>)> = (first..=last)
            .map(|i| {
                let s = i as u64 * sl;
                (i, range.start.max(s) - s..range.end.min(s + sl) - s)
            })
            .collect();
        let mut pieces: Vec<Option<Vec<u8>>> = vec![None; self.coder.params().total()];
        let reqs: Vec<(ShardLoc, Range<u64>)> = wanted
            .iter()
            .map(|(i, r)| (self.loc(seg, *i), r.clone()))
            .collect();
        for ((i, _), result) in wanted.iter().zip(self.store.read_ranges(&reqs)) {
            match result {
                Ok(b) => {
                    stats.shard_reads += 1;
                    pieces[*i] = Some(b);
                }
                Err(e) => {
                    stats.shard_failures += 1;
                    failed.push((*i, e.to_string()));
                }
            }
        }
        if !failed.is_empty() {
            // Rebuild each lost range from the same columns of k other shards. The codec works
            // on 64-byte blocks (16-bit symbols split across each block), so columns are widened
            // to 64-byte boundaries; shard lengths are multiples of 64, so they stay in bounds.
            let mut bad: HashSet<usize> = failed.iter().map(|(i, _)| *i).collect();
            let lost_wanted: Vec<(usize, Range<u64>)> = wanted
                .iter()
                .filter(|(i, _)| pieces[*i].is_none())
                .cloned()
                .collect();
            let mut rebuilt: Vec<(Range<u64>, Column)> = Vec::new();
            for (i, r) in lost_wanted {
                let col = r.start / 64 * 64..(r.end.div_ceil(64) * 64).min(sl);
                if !rebuilt.iter().any(|(c, _)| *c == col) {
                    let shards = self
                        .gather_column(
                            seg,
                            &col,
                            &wanted,
                            &mut pieces,
                            &mut bad,
                            &mut failed,
                            stats,
                        )
                        .map_err(wrap)?;
                    rebuilt.push((col.clone(), shards));
                }
                if let Some((_, shards)) = rebuilt.iter().find(|(c, _)| *c == col)
                    && let Some(full) = &shards[i]
                {
                    let from = (r.start - col.start) as usize;
                    pieces[i] = Some(full[from..from + (r.end - r.start) as usize].to_vec());
                }
            }
        }
        for (i, _) in &wanted {
            match pieces[*i].take() {
                Some(p) => out.extend_from_slice(&p),
                None => {
                    return Err(wrap(SegmentError::TooManyLost {
                        available: 0,
                        needed: k,
                        lost: format!("shard {i} could not be rebuilt"),
                    }));
                }
            }
        }
        Ok(out)
    }
}

/// An opened dataset: its root record and verified, decrypted manifest.
#[derive(Debug)]
pub struct Dataset {
    /// The capability it was opened with.
    pub capability: Capability,
    /// Its root record.
    pub root: RootRecord,
    /// Its manifest, indexed.
    pub index: IndexedManifest,
    coder: Coder,
}

impl Dataset {
    /// Fetches and checks the root record and the manifest.
    pub fn open(cap: &Capability, store: &dyn ShardStore) -> Result<Self, ReadError> {
        let bytes = store.get_root(&cap.id).map_err(ReadError::Root)?;
        let root = RootRecord::decode(&bytes)?;
        let key: Option<&DatasetKey> = match (&root.key_check, &cap.key) {
            (Some(tag), Some(k)) => {
                if crypto::key_check(k) != *tag {
                    return Err(ReadError::WrongKey);
                }
                Some(k)
            }
            (Some(_), None) => return Err(ReadError::KeyRequired),
            (None, _) => None,
        };
        let coder = Coder::new(root.erasure).map_err(|e| FormatError::Invalid {
            what: "root record",
            detail: e.to_string(),
        })?;
        let reader = SegmentReader {
            coder: &coder,
            store,
            segments: &root.manifest_segments,
            nodes: &root.nodes,
        };
        let mut blob = Vec::with_capacity(root.manifest_len as usize);
        let mut stats = ReadStats::default();
        for (i, s) in root.manifest_segments.iter().enumerate() {
            blob.extend(reader.read(i, 0..s.len as u64, &mut stats)?);
        }
        if blake3::hash(&blob).as_bytes() != &root.manifest_hash.0 {
            return Err(ReadError::ManifestMismatch);
        }
        if let Some(k) = key {
            crypto::apply_manifest_cipher(k, &root.manifest_nonce, &mut blob);
        }
        let index = Manifest::decode(&blob)?;
        if index.manifest.erasure != root.erasure {
            return Err(FormatError::Invalid {
                what: "manifest",
                detail: "erasure parameters differ from the root record's".into(),
            }
            .into());
        }
        Ok(Self {
            capability: cap.clone(),
            root,
            coder: Coder::new(index.manifest.erasure).map_err(|e| FormatError::Invalid {
                what: "manifest",
                detail: e.to_string(),
            })?,
            index,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.index.manifest
    }

    fn segments<'a>(&'a self, store: &'a dyn ShardStore) -> SegmentReader<'a> {
        SegmentReader {
            coder: &self.coder,
            store,
            segments: &self.index.manifest.segments,
            nodes: &self.index.manifest.nodes,
        }
    }

    fn cipher(&self, entry: &Entry) -> FileCipher {
        let key = self
            .capability
            .key
            .as_ref()
            .filter(|_| self.root.key_check.is_some());
        match &entry.kind {
            EntryKind::File { hash, key_seed, .. } => {
                FileCipher::new(key, key_seed.as_ref().unwrap_or(hash))
            }
            _ => FileCipher::new(None, &ContentHash([0; 32])),
        }
    }

    /// The file entry at `path`.
    pub fn file(&self, path: &str) -> Result<&Entry, ReadError> {
        let p = path.trim_start_matches('/').as_bytes();
        let e = self
            .index
            .find(p)
            .ok_or_else(|| ReadError::NoSuchPath(path.to_string()))?;
        match e.kind {
            EntryKind::File { .. } => Ok(e),
            _ => Err(ReadError::NotAFile(path.to_string())),
        }
    }

    /// Streams the verified plaintext of bytes `range` of a file into `sink`, segment by
    /// segment. With `cache`, whole segments are read and kept for the next call (extraction
    /// of many small files); without, only the byte ranges needed are read.
    fn stream_file(
        &self,
        store: &dyn ShardStore,
        entry: &Entry,
        range: Range<u64>,
        stats: &mut ReadStats,
        mut prefetch: Option<&mut Prefetch>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        let EntryKind::File { size, offset, .. } = entry.kind else {
            return Err(ReadError::NotAFile(entry.display_path()));
        };
        if range.start > range.end || range.end > size {
            return Err(ReadError::RangeOutOfBounds {
                path: entry.display_path(),
                start: range.start,
                end: range.end,
                size,
            });
        }
        let cipher = self.cipher(entry);
        let span = cipher.stored_span(range.clone(), size);
        let mut opener = Opener::new(cipher, span.first_chunk);
        let mut skip = span.skip;
        let mut left = range.end - range.start;
        let mut emit = |p: &[u8]| -> Result<(), ReadError> {
            let s = (skip as usize).min(p.len());
            skip -= s as u64;
            let n = (left as usize).min(p.len() - s);
            left -= n as u64;
            if n > 0 {
                sink(&p[s..s + n])?;
            }
            Ok(())
        };
        let reader = self.segments(store);
        let stored = offset + span.stored.start..offset + span.stored.end;
        for (seg, r) in self.index.segment_pieces(stored) {
            match prefetch.as_deref_mut() {
                Some(pf) => {
                    let bytes = pf.segment(seg, &reader, stats)?;
                    opener.push(&bytes[r.start as usize..r.end as usize], &mut emit)?;
                }
                None => {
                    let bytes = reader.read(seg, r, stats)?;
                    opener.push(&bytes, &mut emit)?;
                }
            }
        }
        opener.finish(&mut emit)?;
        if left != 0 {
            return Err(ReadError::ContentMismatch(entry.display_path()));
        }
        Ok(())
    }

    /// Reads bytes `range` of a file, verified shard by shard and decrypted.
    pub fn read_range(
        &self,
        store: &dyn ShardStore,
        entry: &Entry,
        range: Range<u64>,
        stats: &mut ReadStats,
    ) -> Result<Vec<u8>, ReadError> {
        let mut out = Vec::with_capacity((range.end.saturating_sub(range.start)) as usize);
        self.stream_file(store, entry, range, stats, None, &mut |p| {
            out.extend_from_slice(p);
            Ok(())
        })?;
        Ok(out)
    }

    /// Streams a whole file to `out`, segment by segment, and checks its plaintext hash.
    pub fn write_file(
        &self,
        store: &dyn ShardStore,
        entry: &Entry,
        out: &mut dyn Write,
        stats: &mut ReadStats,
    ) -> Result<u64, ReadError> {
        let EntryKind::File { size, hash, .. } = entry.kind else {
            return Err(ReadError::NotAFile(entry.display_path()));
        };
        let mut hasher = blake3::Hasher::new();
        self.stream_file(store, entry, 0..size, stats, None, &mut |p| {
            hasher.update(p);
            out.write_all(p).map_err(|source| ReadError::Io {
                path: entry.display_path(),
                source,
            })
        })?;
        if hasher.finalize() != hash.as_hash() {
            return Err(ReadError::ContentMismatch(entry.display_path()));
        }
        Ok(size)
    }

    /// Writes the whole dataset under `dest` (which must not exist, or be empty).
    ///
    /// Each file is written to a temporary name and renamed only once its hash checks out;
    /// symlinks are created last, so no file is ever written through one.
    pub fn extract(
        &self,
        store: &dyn ShardStore,
        dest: &Path,
        progress: Option<&dyn Fn(u64)>,
        stats: &mut ReadStats,
    ) -> Result<ExtractReport, ReadError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| ReadError::Io {
                path: path.clone(),
                source,
            }
        };
        if dest.exists() {
            let mut rd = fs::read_dir(dest).map_err(io(dest))?;
            if rd.next().is_some() {
                return Err(ReadError::DestinationExists(dest.to_path_buf()));
            }
        }
        fs::create_dir_all(dest).map_err(io(dest))?;
        let target = |e: &Entry| dest.join(std::ffi::OsStr::from_bytes(&e.path));
        let entries = &self.index.manifest.entries;
        let mut report = ExtractReport::default();
        for e in entries {
            if let EntryKind::Dir = e.kind {
                fs::create_dir_all(target(e)).map_err(io(&target(e)))?;
                report.dirs += 1;
            }
        }
        // Files in stream order, so each segment is read once.
        let mut files: Vec<&Entry> = entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::File { .. }))
            .collect();
        files.sort_by_key(|e| match e.kind {
            EntryKind::File { offset, .. } => offset,
            _ => 0,
        });
        // Whole segments, in the order the files need them, read ahead by a few threads.
        let mut order: Vec<usize> = Vec::new();
        for e in &files {
            if let EntryKind::File { size, offset, .. } = e.kind {
                let stored = self.cipher(e).stored_len(size);
                for (seg, _) in self.index.segment_pieces(offset..offset + stored) {
                    if order.last().is_none_or(|&l| seg > l) {
                        order.push(seg);
                    }
                }
            }
        }
        let reader = self.segments(store);
        std::thread::scope(|scope| {
            let mut pf = Prefetch::start(scope, &reader, order, store.read_ahead_threads());
            let mut written = 0u64;
            for e in files {
                let EntryKind::File { size, hash, .. } = e.kind else {
                    continue;
                };
                let path = target(e);
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(io(parent))?;
                }
                let tmp = partial_name(&path);
                let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
                let mut hasher = blake3::Hasher::new();
                let result = (|| {
                    self.stream_file(store, e, 0..size, stats, Some(&mut pf), &mut |p| {
                        hasher.update(p);
                        f.write_all(p).map_err(io(&path))
                    })?;
                    if hasher.finalize() != hash.as_hash() {
                        return Err(ReadError::ContentMismatch(e.display_path()));
                    }
                    f.set_permissions(fs::Permissions::from_mode(e.mode & 0o7777))
                        .map_err(io(&path))?;
                    let _ = f.set_modified(mtime(e.mtime_ns));
                    fs::rename(&tmp, &path).map_err(io(&path))
                })();
                if let Err(err) = result {
                    let _ = fs::remove_file(&tmp);
                    return Err(err);
                }
                written += size;
                report.files += 1;
                report.bytes += size;
                if let Some(p) = progress {
                    p(written);
                }
            }
            Ok::<(), ReadError>(())
        })?;
        for e in entries {
            match &e.kind {
                EntryKind::Symlink { target: t } => {
                    let p = target(e);
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(t), &p)
                        .map_err(io(&p))?;
                    report.symlinks += 1;
                }
                EntryKind::Dir => {
                    let p = target(e);
                    let _ = fs::set_permissions(&p, fs::Permissions::from_mode(e.mode & 0o7777));
                }
                EntryKind::File { .. } => {}
            }
        }
        Ok(report)
    }
}

/// How far ahead of the writer the readers may run, in segments.
const PREFETCH_AHEAD: usize = 8;

type Fetched = (usize, Result<(Vec<u8>, ReadStats), ReadError>);

/// Whole segments read ahead by worker threads, handed out in `order`. Memory is bounded by
/// [`PREFETCH_AHEAD`] segments.
struct Prefetch {
    order: Vec<usize>,
    next: usize,
    current: Option<(usize, Vec<u8>)>,
    pending: std::collections::BTreeMap<usize, Result<(Vec<u8>, ReadStats), ReadError>>,
    rx: crossbeam_channel::Receiver<Fetched>,
    consumed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Prefetch {
    fn start<'scope, 'env: 'scope>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        reader: &'env SegmentReader<'env>,
        order: Vec<usize>,
        threads: usize,
    ) -> Self {
        use std::sync::{
            Arc,
            atomic::{AtomicBool, AtomicUsize, Ordering},
        };
        let (tx, rx) = crossbeam_channel::bounded::<Fetched>(PREFETCH_AHEAD);
        let taken = Arc::new(AtomicUsize::new(0));
        let consumed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(order.clone());
        for _ in 0..threads.min(order.len()) {
            let (tx, taken, consumed, stop, order) = (
                tx.clone(),
                taken.clone(),
                consumed.clone(),
                stop.clone(),
                shared.clone(),
            );
            scope.spawn(move || {
                loop {
                    let pos = taken.fetch_add(1, Ordering::Relaxed);
                    if pos >= order.len() {
                        return;
                    }
                    while pos >= consumed.load(Ordering::Relaxed) + PREFETCH_AHEAD {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let seg = order[pos];
                    let len = reader.segments[seg].len as u64;
                    let mut stats = ReadStats::default();
                    let r = reader.read(seg, 0..len, &mut stats).map(|b| (b, stats));
                    if tx.send((pos, r)).is_err() {
                        return;
                    }
                }
            });
        }
        Self {
            order,
            next: 0,
            current: None,
            pending: Default::default(),
            rx,
            consumed,
            stop,
        }
    }

    /// The bytes of segment `seg`: read ahead if it is next in order, else read now.
    fn segment(
        &mut self,
        seg: usize,
        reader: &SegmentReader<'_>,
        stats: &mut ReadStats,
    ) -> Result<&[u8], ReadError> {
        if self.current.as_ref().is_none_or(|(i, _)| *i != seg) {
            let ahead = self.order[self.next.min(self.order.len())..]
                .iter()
                .position(|&s| s == seg);
            match ahead {
                Some(skip) => {
                    for _ in 0..=skip {
                        let pos = self.next;
                        let r = loop {
                            if let Some(r) = self.pending.remove(&pos) {
                                break r;
                            }
                            match self.rx.recv() {
                                Ok((p, r)) => {
                                    self.pending.insert(p, r);
                                }
                                Err(_) => {
                                    let len = reader.segments[self.order[pos]].len as u64;
                                    let mut st = ReadStats::default();
                                    break reader
                                        .read(self.order[pos], 0..len, &mut st)
                                        .map(|b| (b, st));
                                }
                            }
                        };
                        self.next += 1;
                        self.consumed
                            .store(self.next, std::sync::atomic::Ordering::Relaxed);
                        let (bytes, st) = r?;
                        stats.shard_reads += st.shard_reads;
                        stats.shard_failures += st.shard_failures;
                        stats.rebuilds += st.rebuilds;
                        self.current = Some((self.order[pos], bytes));
                    }
                }
                None => {
                    // Out of order (a deduplicated file pointing back): read it directly.
                    let len = reader.segments[seg].len as u64;
                    self.current = Some((seg, reader.read(seg, 0..len, stats)?));
                }
            }
        }
        Ok(self
            .current
            .as_ref()
            .map(|(_, b)| b.as_slice())
            .unwrap_or(&[]))
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Drain so that blocked senders wake up and see the receiver gone.
        while self.rx.try_recv().is_ok() {}
    }
}

fn partial_name(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".granary-partial-{}", std::process::id()));
    path.with_file_name(name)
}

fn mtime(ns: i64) -> std::time::SystemTime {
    let base = std::time::UNIX_EPOCH;
    if ns >= 0 {
        base + std::time::Duration::from_nanos(ns as u64)
    } else {
        base - std::time::Duration::from_nanos(ns.unsigned_abs())
    }
}

/// What an extraction wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExtractReport {
    /// Files written and verified.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// File bytes written.
    pub bytes: u64,
}
