//! Reading a dataset back: the root record, the manifest, then whole datasets, single files or
//! byte ranges, every byte verified.
//!
//! A healthy read touches only the data shards that cover the bytes asked for, and only those
//! byte ranges (the code is systematic). When a shard is missing or fails verification it is
//! treated as lost: the same byte range is read from other shards of the segment until k are
//! in hand, and Reed–Solomon rebuilds it. Whole files are also checked against the BLAKE3 of
//! their plaintext kept in the manifest.

use std::{
    fs,
    io::{self, Write},
    ops::Range,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
};

use crate::{
    capability::Capability,
    crypto::{self, CHUNK, CryptoError, FileCipher, Opener, STORED_CHUNK, TAG_LEN},
    erasure::{Coder, ErasureError},
    ids::{ContentHash, DatasetKey},
    manifest::{Entry, EntryKind, FormatError, IndexedManifest, Manifest, RootRecord, SegmentDesc},
    store::{Answers, FetchError, ShardLoc, ShardStore},
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
        source: io::Error,
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
    /// Data-shard reads abandoned because parity answered first (hedged reads).
    pub raced: u64,
}

impl std::ops::AddAssign for ReadStats {
    fn add_assign(&mut self, o: Self) {
        self.shard_reads += o.shard_reads;
        self.shard_failures += o.shard_failures;
        self.rebuilds += o.rebuilds;
        self.raced += o.raced;
    }
}

/// Reads segments of one segment table through a store, rebuilding lost shards.
struct SegmentReader<'a> {
    coder: &'a Coder,
    store: &'a dyn ShardStore,
    segments: &'a [SegmentDesc],
    nodes: &'a [[u8; 32]],
}

impl SegmentReader<'_> {
    fn loc(&self, seg: &SegmentDesc, i: usize) -> ShardLoc {
        ShardLoc {
            id: seg.shards[i],
            len: seg.shard_len as u64,
            hint: seg.hint(i, self.nodes),
            index: i as u8,
        }
    }

    /// The requests for bytes `r` of data shard `i` of `seg`: that range of shard `i` first, then
    /// the same 64-byte-aligned column of every other shard (data first) to rebuild it from.
    fn piece_reqs(
        &self,
        seg: &SegmentDesc,
        i: usize,
        r: &Range<u64>,
    ) -> Vec<(ShardLoc, Range<u64>)> {
        let total = self.coder.params().total();
        let sl = seg.shard_len as u64;
        // The codec works on 64-byte blocks; shard lengths are multiples of 64.
        let col = r.start / 64 * 64..(r.end.div_ceil(64) * 64).min(sl);
        std::iter::once((self.loc(seg, i), r.clone()))
            .chain(
                (0..total)
                    .filter(|&j| j != i)
                    .map(|j| (self.loc(seg, j), col.clone())),
            )
            .collect()
    }

    /// Bytes `r` of data shard `i` from the answers to [`Self::piece_reqs`]: the shard's own
    /// answer, or the range rebuilt from the column of k others.
    fn piece_from(
        &self,
        i: usize,
        r: &Range<u64>,
        answers: Answers,
        stats: &mut ReadStats,
    ) -> Result<Vec<u8>, SegmentError> {
        let k = self.coder.params().data as usize;
        let total = self.coder.params().total();
        // Position n of the answers is shard `order(n)`: i, then the others in order.
        let order = |n: usize| match n {
            0 => i,
            n if n <= i => n - 1,
            n => n,
        };
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; total];
        let mut lost = Vec::new();
        for (n, got) in answers.into_iter().enumerate() {
            match got {
                Some(Ok(b)) if n == 0 => {
                    stats.shard_reads += 1;
                    return Ok(b);
                }
                Some(Ok(b)) => {
                    stats.shard_reads += 1;
                    shards[order(n)] = Some(b);
                }
                Some(Err(e)) => {
                    stats.shard_failures += 1;
                    lost.push(format!("shard {}: {e}", order(n)));
                }
                None if n == 0 => stats.raced += 1,
                None => {}
            }
        }
        let have = shards.iter().filter(|s| s.is_some()).count();
        if have < k {
            return Err(SegmentError::TooManyLost {
                available: have,
                needed: k,
                lost: lost.join("; "),
            });
        }
        self.coder.reconstruct_data(&mut shards)?;
        stats.rebuilds += 1;
        let full = shards[i]
            .as_ref()
            .ok_or_else(|| SegmentError::TooManyLost {
                available: have,
                needed: k,
                lost: format!("shard {i} could not be rebuilt"),
            })?;
        let from = (r.start - r.start / 64 * 64) as usize;
        Ok(full[from..from + (r.end - r.start) as usize].to_vec())
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
        let total = self.coder.params().total();
        if range.start == 0 && range.end == seg.len as u64 && last == k - 1 && total > k {
            // A whole segment needs every data shard: ask for any k of the k + m, data first,
            // so that a slow or failing node is raced by a parity read (hedged), not waited for.
            let reqs: Vec<(ShardLoc, Range<u64>)> =
                (0..total).map(|i| (self.loc(seg, i), 0..sl)).collect();
            let mut shards: Vec<Option<Vec<u8>>> = vec![None; total];
            let mut lost = Vec::new();
            for (i, r) in self.store.read_any(&reqs, k).into_iter().enumerate() {
                match r {
                    Some(Ok(b)) => {
                        stats.shard_reads += 1;
                        shards[i] = Some(b);
                    }
                    Some(Err(e)) => {
                        stats.shard_failures += 1;
                        lost.push(format!("shard {i}: {e}"));
                    }
                    // The first k requests (the data shards) always start: `None` means outrun.
                    None if i < k => stats.raced += 1,
                    None => {}
                }
            }
            let have = shards.iter().filter(|s| s.is_some()).count();
            if have < k {
                return Err(wrap(SegmentError::TooManyLost {
                    available: have,
                    needed: k,
                    lost: lost.join("; "),
                }));
            }
            if shards[..k].iter().any(Option::is_none) {
                self.coder
                    .reconstruct_data(&mut shards)
                    .map_err(|e| wrap(e.into()))?;
                stats.rebuilds += 1;
            }
            for s in shards.iter().take(k).flatten() {
                out.extend_from_slice(s);
            }
            out.truncate(seg.len as usize);
            return Ok(out);
        }
        // Each data shard's piece of the range is raced (hedged) against the same column of k
        // other shards, all pieces at once: a slow or lost node costs one hedge delay.
        let wanted: Vec<(usize, Range<u64>)> = (first..=last)
            .map(|i| {
                let s = i as u64 * sl;
                (i, range.start.max(s) - s..range.end.min(s + sl) - s)
            })
            .collect();
        let groups: Vec<Vec<(ShardLoc, Range<u64>)>> = wanted
            .iter()
            .map(|(i, r)| self.piece_reqs(seg, *i, r))
            .collect();
        for ((i, r), answers) in wanted.iter().zip(self.store.read_first_or_any(&groups, k)) {
            out.extend_from_slice(&self.piece_from(*i, r, answers, stats).map_err(wrap)?);
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

    /// Every segment: the data segments, then the manifest's own, each with the node table its
    /// placement hints index.
    pub fn segment_tables(&self) -> impl Iterator<Item = (&SegmentDesc, &[[u8; 32]])> {
        let m = self.manifest();
        m.segments.iter().map(|s| (s, &m.nodes[..])).chain(
            self.root
                .manifest_segments
                .iter()
                .map(|s| (s, &self.root.nodes[..])),
        )
    }

    /// Every shard of every segment with the node its manifest says it was first put on.
    pub fn shard_hints(&self) -> Vec<(crate::ids::ShardId, Option<[u8; 32]>)> {
        self.segment_tables()
            .flat_map(|(seg, nodes)| {
                seg.shards
                    .iter()
                    .enumerate()
                    .map(move |(i, id)| (*id, seg.hint(i, nodes)))
            })
            .collect()
    }

    fn segments<'a>(&'a self, store: &'a dyn ShardStore) -> SegmentReader<'a> {
        SegmentReader {
            coder: &self.coder,
            store,
            segments: &self.index.manifest.segments,
            nodes: &self.index.manifest.nodes,
        }
    }

    /// The cipher of a whole file.
    fn cipher(&self, entry: &Entry) -> FileCipher {
        self.cipher_for(entry, 0..u64::MAX)
    }

    /// The cipher of a file for reading plaintext `range` (of a file split into parts, only the
    /// parts that hold it are keyed).
    fn cipher_for(&self, entry: &Entry, range: Range<u64>) -> FileCipher {
        let key = self
            .capability
            .key
            .as_ref()
            .filter(|_| self.root.key_check.is_some());
        match &entry.kind {
            EntryKind::File { parts, .. } if !parts.is_empty() => {
                let first = range.start / crate::parts::PART;
                let end = range.end.saturating_sub(1) / crate::parts::PART + 1;
                let to_usize = |p: u64| usize::try_from(p).unwrap_or(usize::MAX);
                FileCipher::of_parts(key, parts, to_usize(first)..to_usize(end))
            }
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
    /// segment, reading only the byte ranges needed.
    fn stream_file(
        &self,
        store: &dyn ShardStore,
        entry: &Entry,
        range: Range<u64>,
        stats: &mut ReadStats,
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
        let cipher = self.cipher_for(entry, range.clone());
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
            let bytes = reader.read(seg, r, stats)?;
            opener.push(&bytes, &mut emit)?;
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
        self.stream_file(store, entry, range, stats, &mut |p| {
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
        self.stream_file(store, entry, 0..size, stats, &mut |p| {
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
        match self.plan(&files) {
            Some(plan) => {
                self.extract_planned(store, &plan, &target, progress, stats, &mut report)?
            }
            // Files whose stored bytes overlap without being identical (no packer writes such a
            // manifest): extract them one by one, reading only what each needs.
            None => {
                let mut written = 0u64;
                for e in files {
                    let g = Group::of(self, e);
                    let mut outs = Vec::new();
                    let result = (|| {
                        create_outs(&g, &target, &mut outs)?;
                        let mut hasher = blake3::Hasher::new();
                        let o = &mut outs[0];
                        self.stream_file(store, e, 0..g.size, stats, &mut |p| {
                            hasher.update(p);
                            o.file.write_all(p).map_err(io_err(&o.path))
                        })?;
                        finish_outs(&g, &outs, hasher.finalize())
                    })();
                    if result.is_err() {
                        remove_tmps(&outs);
                    }
                    result?;
                    written += g.size;
                    report.files += 1;
                    report.bytes += g.size;
                    if let Some(p) = progress {
                        p(written);
                    }
                }
            }
        }
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

/// Files extracted together: entries with the same stored bytes (identical content, stored
/// once).
struct Group<'a> {
    entries: Vec<&'a Entry>,
    offset: u64,
    size: u64,
    stored: u64,
    hash: ContentHash,
    seed: ContentHash,
    /// Made once: a file split into many parts has a key per part.
    cipher: FileCipher,
}

impl<'a> Group<'a> {
    fn of(ds: &Dataset, e: &'a Entry) -> Self {
        let (size, hash, offset, seed) = match &e.kind {
            EntryKind::File {
                size,
                hash,
                offset,
                key_seed,
                ..
            } => (*size, *hash, *offset, key_seed.unwrap_or(*hash)),
            _ => (0, ContentHash([0; 32]), 0, ContentHash([0; 32])),
        };
        let cipher = ds.cipher(e);
        Self {
            entries: vec![e],
            offset,
            size,
            stored: cipher.stored_len(size),
            hash,
            seed,
            cipher,
        }
    }

    /// The chunks of this group lying wholly inside the stream range `seg_start..seg_end`:
    /// `(chunk index, stored range relative to seg_start)`. Without encryption the whole
    /// overlap is one "chunk" (index 0, file offset = its start).
    fn chunks_inside(
        &self,
        encrypted: bool,
        seg_start: u64,
        seg_end: u64,
    ) -> impl Iterator<Item = (u64, Range<usize>)> + '_ {
        let end = self.offset + self.stored;
        let plain = (!encrypted).then(|| {
            let a = self.offset.max(seg_start);
            let b = end.min(seg_end);
            (0u64, (a - seg_start) as usize..(b - seg_start) as usize)
        });
        let sc = STORED_CHUNK as u64;
        let mut j = seg_start.saturating_sub(self.offset).div_ceil(sc);
        let chunks = std::iter::from_fn(move || {
            if !encrypted {
                return None;
            }
            let a = self.offset + j * sc;
            let b = (a + sc).min(end);
            if a >= end || b > seg_end {
                return None;
            }
            j += 1;
            Some((j - 1, (a - seg_start) as usize..(b - seg_start) as usize))
        });
        plain
            .filter(|(_, r)| !r.is_empty())
            .into_iter()
            .chain(chunks)
    }
}

/// What an extraction reads: the groups in stream order and the segments they need.
struct Plan<'a> {
    groups: Vec<Group<'a>>,
    /// Per group: its stored bytes lie within one segment (a reader thread writes it whole).
    inside: Vec<bool>,
    /// Segments in the order the groups need them (increasing).
    order: Vec<usize>,
    /// For each position in `order`: the groups with stored bytes in that segment.
    seg_groups: Vec<Vec<usize>>,
    /// For each position in `order`: whether the groups' stored bytes cover the whole segment.
    covered: Vec<bool>,
    encrypted: bool,
}

/// Writes `pieces` one after another at `offset` (at the file's position if `None`) in as few
/// system calls as the kernel allows (`pwritev`/`writev`, up to 1,024 pieces each): a
/// segment's 64 KiB chunks take one call instead of one each, and two threads writing pieces of
/// the same file take its lock once per run rather than once per chunk.
fn write_pieces(file: &fs::File, pieces: &[&[u8]], mut offset: Option<u64>) -> io::Result<()> {
    use std::{io::IoSlice, os::fd::AsRawFd};
    let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = rest.len().min(1024);
        let written = match offset {
            // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix; the n slices borrow
            // live buffers, and the fd belongs to `file`.
            Some(at) => unsafe {
                libc::pwritev(
                    file.as_raw_fd(),
                    rest.as_ptr().cast(),
                    n as libc::c_int,
                    at as libc::off_t,
                )
            },
            None => match (&*file).write_vectored(&rest[..n]) {
                Ok(w) => w as isize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            },
        };
        if written < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if let Some(at) = offset.as_mut() {
            *at += written as u64;
        }
        IoSlice::advance_slices(&mut rest, written as usize);
    }
    Ok(())
}

/// A file being written: final path, temporary path, the open file.
struct OutFile {
    path: PathBuf,
    tmp: PathBuf,
    file: fs::File,
}

/// The temporary files of the groups that span segments, created by whichever thread needs
/// them first; pieces are written at their offsets by several threads.
type Outs = Vec<std::sync::Mutex<Option<std::sync::Arc<Vec<OutFile>>>>>;

/// A segment handed from a reader thread to the writer: its bytes, with every encrypted chunk
/// that lies wholly inside it already authenticated and decrypted in place (and written out).
type Fetched = (usize, Result<(Vec<u8>, ReadStats), ReadError>);

/// The writer's end of the reader threads: segments in `order`, one at a time.
struct SegmentFeed {
    rx: crossbeam_channel::Receiver<Fetched>,
    pool: crossbeam_channel::Sender<Vec<u8>>,
    pending: std::collections::BTreeMap<usize, Result<(Vec<u8>, ReadStats), ReadError>>,
    current: Option<(usize, Vec<u8>)>,
}

impl SegmentFeed {
    /// The bytes at position `pos` of the order (positions are asked for in increasing order).
    fn get(&mut self, pos: usize, stats: &mut ReadStats) -> Result<&[u8], ReadError> {
        if self.current.as_ref().is_none_or(|(p, _)| *p != pos) {
            if let Some((_, buf)) = self.current.take() {
                let _ = self.pool.try_send(buf);
            }
            let r = loop {
                if let Some(r) = self.pending.remove(&pos) {
                    break r;
                }
                match self.rx.recv() {
                    Ok((p, r)) => {
                        self.pending.insert(p, r);
                    }
                    Err(_) => {
                        // The readers stopped early because one of them failed: report that.
                        let failed = self
                            .pending
                            .keys()
                            .copied()
                            .find(|p| matches!(self.pending.get(p), Some(Err(_))));
                        if let Some(Err(e)) = failed.and_then(|p| self.pending.remove(&p)) {
                            return Err(e);
                        }
                        return Err(ReadError::Io {
                            path: "<segment readers>".into(),
                            source: io::Error::other("the segment reader threads stopped"),
                        });
                    }
                }
            };
            let (buf, st) = r?;
            *stats += st;
            self.current = Some((pos, buf));
        }
        Ok(self.current.as_ref().map_or(&[][..], |(_, b)| b.as_slice()))
    }
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> ReadError + use<> {
    let path = path.display().to_string();
    move |source| ReadError::Io {
        path: path.clone(),
        source,
    }
}

/// Creates the temporary files of `g`'s entries (pushing each into `out` as soon as it exists,
/// so a failure leaves nothing uncleaned).
fn create_outs(
    g: &Group<'_>,
    target: &(dyn Fn(&Entry) -> PathBuf + Sync),
    out: &mut Vec<OutFile>,
) -> Result<(), ReadError> {
    for e in &g.entries {
        let path = target(e);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let tmp = partial_name(&path);
        let file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        out.push(OutFile { path, tmp, file });
    }
    Ok(())
}

/// Checks a group's plaintext hash, then sets modes and times and renames its files into place.
fn finish_outs(g: &Group<'_>, outs: &[OutFile], hash: blake3::Hash) -> Result<(), ReadError> {
    if hash != g.hash.as_hash() {
        return Err(ReadError::ContentMismatch(g.entries[0].display_path()));
    }
    for (o, e) in outs.iter().zip(&g.entries) {
        o.file
            .set_permissions(fs::Permissions::from_mode(e.mode & 0o7777))
            .map_err(io_err(&o.path))?;
        let _ = o.file.set_modified(mtime(e.mtime_ns));
        fs::rename(&o.tmp, &o.path).map_err(io_err(&o.path))?;
    }
    Ok(())
}

fn remove_tmps(outs: &[OutFile]) {
    for o in outs {
        let _ = fs::remove_file(&o.tmp);
    }
}

impl Dataset {
    /// Groups `files` (sorted by offset) and lists the segments they need; `None` if stored
    /// ranges overlap without being identical.
    fn plan<'a>(&self, files: &[&'a Entry]) -> Option<Plan<'a>> {
        let mut groups: Vec<Group<'a>> = Vec::new();
        let mut end = 0u64;
        for e in files {
            let g = Group::of(self, e);
            if let Some(last) = groups.last_mut()
                && (last.offset, last.size, last.hash, last.seed)
                    == (g.offset, g.size, g.hash, g.seed)
            {
                last.entries.push(e);
                continue;
            }
            if g.stored > 0 {
                if g.offset < end {
                    return None;
                }
                end = g.offset + g.stored;
            }
            groups.push(g);
        }
        let encrypted = groups.first().is_some_and(|g| g.cipher.is_encrypting());
        let mut order: Vec<usize> = Vec::new();
        let mut seg_groups: Vec<Vec<usize>> = Vec::new();
        let mut covered: Vec<bool> = Vec::new();
        let mut upto: Vec<u64> = Vec::new();
        let mut inside = Vec::with_capacity(groups.len());
        for (gi, g) in groups.iter().enumerate() {
            let pieces = self.index.segment_pieces(g.offset..g.offset + g.stored);
            inside.push(pieces.len() == 1);
            for (seg, r) in pieces {
                if order.last() != Some(&seg) {
                    if order.last().is_some_and(|&l| seg < l) {
                        return None;
                    }
                    order.push(seg);
                    seg_groups.push(Vec::new());
                    covered.push(true);
                    upto.push(0);
                }
                let p = order.len() - 1;
                seg_groups[p].push(gi);
                if r.start != upto[p] {
                    covered[p] = false;
                }
                upto[p] = r.end;
            }
        }
        for (p, &seg) in order.iter().enumerate() {
            if upto[p] != self.index.manifest.segments[seg].len as u64 {
                covered[p] = false;
            }
        }
        Some(Plan {
            groups,
            inside,
            order,
            seg_groups,
            covered,
            encrypted,
        })
    }

    /// Authenticates and decrypts, in place, every encrypted chunk lying wholly inside the
    /// segment at position `pos` (`buf` holds its bytes).
    fn open_inside(&self, plan: &Plan<'_>, pos: usize, buf: &mut [u8]) -> Result<(), CryptoError> {
        if !plan.encrypted {
            return Ok(());
        }
        let seg_start = self.index.segment_starts[plan.order[pos]];
        let seg_end = seg_start + buf.len() as u64;
        for &gi in &plan.seg_groups[pos] {
            let g = &plan.groups[gi];
            for (j, r) in g.chunks_inside(true, seg_start, seg_end) {
                g.cipher.open_chunk_in_place(j, &mut buf[r])?;
            }
        }
        Ok(())
    }

    /// Reads the segment at position `pos` into `buf` and decrypts the chunks wholly inside it.
    ///
    /// Encrypted segments whose every byte belongs to some file's chunks are read without
    /// hashing them against the shard ids: AES-GCM authenticates each chunk (a chunk crossing
    /// into the next segment is authenticated by the writer), and the zero padding of the last
    /// data shard is checked to be zero. Any failure — a missing or short shard, a bad tag,
    /// non-zero padding — falls back to the verified read, which finds the bad shard, counts it
    /// and rebuilds around it. Public segments, and segments with bytes no file covers, are
    /// always read verified.
    fn fetch_segment(
        &self,
        reader: &SegmentReader<'_>,
        plan: &Plan<'_>,
        pos: usize,
        buf: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
    ) -> Result<ReadStats, ReadError> {
        let seg = plan.order[pos];
        let len = reader.segments[seg].len as u64;
        let mut stats = ReadStats::default();
        if plan.encrypted
            && plan.covered[pos]
            && self.read_unverified(reader, seg, buf, scratch, &mut stats)
            && self.open_inside(plan, pos, buf).is_ok()
        {
            return Ok(stats);
        }
        *buf = reader.read(seg, 0..len, &mut stats)?;
        self.open_inside(plan, pos, buf)?;
        Ok(stats)
    }

    /// Reads segment `seg`'s data shards straight into `buf` without hashing them; false if
    /// the store cannot, a read fails, or the padding is not zero.
    fn read_unverified(
        &self,
        reader: &SegmentReader<'_>,
        seg: usize,
        buf: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
        stats: &mut ReadStats,
    ) -> bool {
        let desc = &reader.segments[seg];
        let len = desc.len as usize;
        let sl = desc.shard_len as usize;
        if len == 0 || sl == 0 {
            return false;
        }
        buf.resize(len, 0);
        buf.truncate(len);
        let last = (len - 1) / sl;
        for i in 0..=last {
            let range = i * sl..((i + 1) * sl).min(len);
            match reader
                .store
                .read_unverified(&reader.loc(desc, i), 0, &mut buf[range])
            {
                Ok(true) => stats.shard_reads += 1,
                _ => return false,
            }
        }
        // The rest of the last data shard is zero padding: read and check it too.
        let pad = (last + 1) * sl - len;
        if pad > 0 {
            scratch.resize(pad, 0);
            scratch.truncate(pad);
            let at = (len - last * sl) as u64;
            match reader
                .store
                .read_unverified(&reader.loc(desc, last), at, scratch)
            {
                Ok(true) if scratch.iter().all(|&b| b == 0) => {}
                _ => return false,
            }
        }
        true
    }

    /// Writes out what a reader thread can of the (decrypted) segment at position `pos`: every
    /// group lying wholly inside it is hashed, checked and put in place; the in-segment chunks
    /// of groups spanning segments are written at their offsets (the writer hashes those).
    fn write_segment(
        &self,
        plan: &Plan<'_>,
        pos: usize,
        buf: &[u8],
        target: &(dyn Fn(&Entry) -> PathBuf + Sync),
        outs: &Outs,
    ) -> Result<(), ReadError> {
        let seg_start = self.index.segment_starts[plan.order[pos]];
        let seg_end = seg_start + buf.len() as u64;
        let chunk = if plan.encrypted { CHUNK as u64 } else { 0 };
        let tag = if plan.encrypted { TAG_LEN } else { 0 };
        for &gi in &plan.seg_groups[pos] {
            let g = &plan.groups[gi];
            let pieces = g.chunks_inside(plan.encrypted, seg_start, seg_end);
            if plan.inside[gi] {
                let mut files = Vec::with_capacity(g.entries.len());
                let result = (|| {
                    create_outs(g, target, &mut files)?;
                    let mut hasher = blake3::Hasher::new();
                    let mut n = 0u64;
                    let plain: Vec<&[u8]> =
                        pieces.map(|(_, r)| &buf[r.start..r.end - tag]).collect();
                    for p in &plain {
                        hasher.update(p);
                        n += p.len() as u64;
                    }
                    for o in &files {
                        write_pieces(&o.file, &plain, None).map_err(io_err(&o.path))?;
                    }
                    if n != g.size {
                        return Err(ReadError::ContentMismatch(g.entries[0].display_path()));
                    }
                    finish_outs(g, &files, hasher.finalize())
                })();
                if result.is_err() {
                    remove_tmps(&files);
                }
                result?;
            } else {
                let files = self.outs_of(gi, g, target, outs)?;
                // Runs of pieces that are contiguous in the file, each written in one call.
                let mut runs: Vec<(u64, Vec<&[u8]>)> = Vec::new();
                for (j, r) in pieces {
                    let at = if plan.encrypted {
                        j * chunk
                    } else {
                        seg_start + r.start as u64 - g.offset
                    };
                    let p = &buf[r.start..r.end - tag];
                    match runs.last_mut() {
                        Some((start, run))
                            if *start + run.iter().map(|x| x.len() as u64).sum::<u64>() == at =>
                        {
                            run.push(p)
                        }
                        _ => runs.push((at, vec![p])),
                    }
                }
                for (at, run) in &runs {
                    for o in files.iter() {
                        write_pieces(&o.file, run, Some(*at)).map_err(io_err(&o.path))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The temporary files of spanning group `gi`, created on first use.
    fn outs_of(
        &self,
        gi: usize,
        g: &Group<'_>,
        target: &(dyn Fn(&Entry) -> PathBuf + Sync),
        outs: &Outs,
    ) -> Result<std::sync::Arc<Vec<OutFile>>, ReadError> {
        let mut slot = outs[gi].lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = slot.as_ref() {
            return Ok(f.clone());
        }
        let mut files = Vec::new();
        let r = create_outs(g, target, &mut files);
        let files = std::sync::Arc::new(files);
        *slot = Some(files.clone());
        r.map(|()| files)
    }

    /// Extracts every group of `plan`. Reader threads (one per core for a local store) fetch
    /// segments, decrypt them, write the files lying wholly inside a segment and the
    /// in-segment pieces of the others; this thread hashes the files that span segments,
    /// decrypts the chunks crossing segment boundaries, and puts those files in place.
    fn extract_planned(
        &self,
        store: &dyn ShardStore,
        plan: &Plan<'_>,
        target: &(dyn Fn(&Entry) -> PathBuf + Sync),
        progress: Option<&dyn Fn(u64)>,
        stats: &mut ReadStats,
        report: &mut ExtractReport,
    ) -> Result<(), ReadError> {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let reader = self.segments(store);
        let threads = store
            .read_ahead_threads()
            .clamp(1, 16)
            .min(plan.order.len().max(1));
        // Segment buffers in flight: each reader's, one queued per reader, the writer's.
        let buffers = 2 * threads + 1;
        let (pool_tx, pool_rx) = crossbeam_channel::bounded::<Vec<u8>>(buffers);
        let largest = plan
            .order
            .iter()
            .map(|&seg| reader.segments[seg].len as usize)
            .max()
            .unwrap_or(0);
        for _ in 0..buffers {
            // Sized once for the largest segment, so each is faulted in once.
            let mut buf = Vec::with_capacity(largest);
            crate::pack::advise_huge(&mut buf);
            let _ = pool_tx.try_send(buf);
        }
        let (tx, rx) = crossbeam_channel::unbounded::<Fetched>();
        let taken = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let outs: Outs = (0..plan.groups.len()).map(|_| Default::default()).collect();
        let result = std::thread::scope(|scope| {
            for _ in 0..threads {
                let (tx, pool_rx, reader, taken, stop, outs) =
                    (tx.clone(), pool_rx.clone(), &reader, &taken, &stop, &outs);
                crate::pack::spawn_named(scope, "get-segments", move || {
                    let mut scratch = Vec::new();
                    while let Ok(mut buf) = pool_rx.recv() {
                        let pos = taken.fetch_add(1, Ordering::Relaxed);
                        if pos >= plan.order.len() || stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let r = self
                            .fetch_segment(reader, plan, pos, &mut buf, &mut scratch)
                            .and_then(|st| {
                                self.write_segment(plan, pos, &buf, target, outs)?;
                                Ok((buf, st))
                            });
                        if r.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        if tx.send((pos, r)).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(tx);
            let mut feed = SegmentFeed {
                rx,
                pool: pool_tx,
                pending: Default::default(),
                current: None,
            };
            let result = (|| {
                let mut written = 0u64;
                let mut pos = 0usize;
                let mut pending_chunk: Vec<u8> = Vec::with_capacity(STORED_CHUNK);
                for (gi, g) in plan.groups.iter().enumerate() {
                    if plan.inside[gi] {
                        // Written by a reader thread; wait for its segment to be done.
                        let seg = self.index.segment_pieces(g.offset..g.offset + 1)[0].0;
                        while plan.order[pos] != seg {
                            pos += 1;
                        }
                        feed.get(pos, stats)?;
                    } else {
                        let files = self.outs_of(gi, g, target, &outs)?;
                        let hash = self.hash_spanning(
                            g,
                            plan,
                            &reader,
                            &mut feed,
                            &mut pos,
                            &mut pending_chunk,
                            &files,
                            stats,
                        )?;
                        finish_outs(g, &files, hash)?;
                        // Close its files now (every segment holding it is done).
                        drop(files);
                        *outs[gi].lock().unwrap_or_else(|p| p.into_inner()) = None;
                    }
                    written += g.size * g.entries.len() as u64;
                    report.files += g.entries.len() as u64;
                    report.bytes += g.size * g.entries.len() as u64;
                    if let Some(p) = progress {
                        p(written);
                    }
                }
                Ok(())
            })();
            stop.store(true, Ordering::Relaxed);
            // Unblock readers waiting for a buffer.
            drop(feed);
            result
        });
        if result.is_err() {
            // Files not yet in place leave no temporary behind (a renamed file is not removed).
            for slot in &outs {
                if let Some(files) = slot.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    remove_tmps(files);
                }
            }
        }
        result
    }

    /// Hashes the plaintext of spanning group `g` from the segment feed, decrypting (and
    /// writing) the chunks that cross segment boundaries. Returns the hash.
    #[allow(clippy::too_many_arguments)]
    fn hash_spanning(
        &self,
        g: &Group<'_>,
        plan: &Plan<'_>,
        reader: &SegmentReader<'_>,
        feed: &mut SegmentFeed,
        pos: &mut usize,
        pending: &mut Vec<u8>,
        files: &[OutFile],
        stats: &mut ReadStats,
    ) -> Result<blake3::Hash, ReadError> {
        let cipher = g.cipher.clone();
        let sc = STORED_CHUNK as u64;
        let mut hasher = blake3::Hasher::new();
        let mut n = 0u64;
        pending.clear();
        for (seg, r) in self.index.segment_pieces(g.offset..g.offset + g.stored) {
            while plan.order[*pos] != seg {
                *pos += 1;
            }
            let bytes = feed.get(*pos, stats)?;
            let piece = &bytes[r.start as usize..r.end as usize];
            if !plan.encrypted {
                hasher.update(piece);
                n += piece.len() as u64;
                continue;
            }
            // Stored offsets within the file covered by this piece.
            let fa = self.index.segment_starts[seg] + r.start - g.offset;
            let fb = fa + (r.end - r.start);
            let mut x = fa;
            while x < fb {
                let j = x / sc;
                let (ca, cb) = (j * sc, ((j + 1) * sc).min(g.stored));
                if ca >= fa && cb <= fb {
                    // Wholly inside the segment: decrypted and written by a reader thread.
                    let at = (ca - fa) as usize;
                    let p = &piece[at..at + (cb - ca) as usize - TAG_LEN];
                    hasher.update(p);
                    n += p.len() as u64;
                    x = cb;
                    continue;
                }
                let until = cb.min(fb);
                pending.extend_from_slice(&piece[(x - fa) as usize..(until - fa) as usize]);
                x = until;
                if until < cb {
                    continue;
                }
                let len = match cipher.open_chunk_in_place(j, pending) {
                    Ok(len) => len,
                    Err(_) => {
                        // Re-read this chunk verified: a bad shard is found and rebuilt around.
                        pending.clear();
                        for (s, rr) in self.index.segment_pieces(g.offset + ca..g.offset + cb) {
                            pending.extend(reader.read(s, rr, stats)?);
                        }
                        cipher.open_chunk_in_place(j, pending)?
                    }
                };
                let p = &pending[..len];
                hasher.update(p);
                n += p.len() as u64;
                for o in files {
                    std::os::unix::fs::FileExt::write_all_at(&o.file, p, j * CHUNK as u64)
                        .map_err(io_err(&o.path))?;
                }
                pending.clear();
            }
        }
        if n != g.size {
            return Err(ReadError::ContentMismatch(g.entries[0].display_path()));
        }
        Ok(hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces of all sizes, more than one system call's worth (1,024), land where they belong,
    /// positioned or at the file's position.
    #[test]
    fn write_pieces_writes_every_piece_in_order() {
        let data: Vec<u8> = (0..3_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let pieces: Vec<&[u8]> = data.chunks(5).collect(); // 2,400 pieces
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = fs::File::create(&path).unwrap();
        write_pieces(&file, &pieces[..1000], None).unwrap();
        write_pieces(&file, &pieces[1000..], Some(5_000)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), data);
        write_pieces(&file, &[], Some(0)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), data);
    }
}
