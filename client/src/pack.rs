//! The pack pipeline: dataset → manifest → encrypted, erasure-coded shards in a [`ShardStore`].
//!
//! ```text
//!  reader ──files──► producer ──segments──► encoder workers (N) ──shard ids──► collector
//!  walk order,       dedup, encrypt          RS-encode in place,   (caller's thread) orders
//!  read and hash     straight into the       outboards,            segments, builds the
//!  each file (or     segment buffer, cut     store.put_segment     manifest and root record
//!  16 MiB part) once
//! ```
//! The channels are bounded, so memory stays at a few segments per worker whatever the
//! dataset's size. Files are concatenated into one *dataset stream* cut into fixed-size
//! segments (small files packed, big files split). Identical files are stored once. With a
//! base manifest (an earlier version of the dataset, same key), files whose path, size and mtime
//! are unchanged keep their old bytes: only new and changed files are read, encrypted and
//! encoded, and nothing already stored shifts.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    io::{Read, Seek},
    os::unix::fs::MetadataExt,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use crossbeam_channel::{Receiver, Sender, bounded};
use granary_protocol::verified;

use crate::{
    capability::Capability,
    crypto::{self, FileCipher, Sealer},
    erasure::{Coder, ErasureError, ErasureParams},
    ids::{ContentHash, DatasetId, DatasetKey, ShardId},
    manifest::{Entry, EntryKind, IndexedManifest, Manifest, NO_HINT, RootRecord, SegmentDesc},
    parts,
    store::{PutShard, ShardStore, StoreError},
    walk::{self, WalkEntry, WalkKind},
};

/// Default segment size for small k: segments hold at least this many stream bytes (see
/// [`default_shard_size`]).
pub const DEFAULT_SEGMENT_SIZE: u32 = 8 << 20;
/// Smallest default shard.
pub const MIN_DEFAULT_SHARD_SIZE: u32 = 1 << 20;

/// The default maximum shard length for `params`: [`DEFAULT_SEGMENT_SIZE`] / k rounded up to
/// 64 KiB, and at least [`MIN_DEFAULT_SHARD_SIZE`] (2 MiB for 4+2, 1 MiB for 10+4). A node's
/// per-shard costs (fsyncs, index writes, signed requests) are then spread over megabytes: on a
/// 6-node devnet, 2 MiB shards took the nodes' CPU for a 1 GB put from 4.0 to 3.4 core-s against
/// 1 MiB ones. Larger shards save a little more but multiply the client's segment and
/// Reed–Solomon buffers (docs/performance.md).
pub fn default_shard_size(params: ErasureParams) -> u32 {
    let k = u32::from(params.data.max(1));
    DEFAULT_SEGMENT_SIZE
        .div_ceil(k)
        .next_multiple_of(64 << 10)
        .max(MIN_DEFAULT_SHARD_SIZE)
}

/// Files up to this size (one [`parts::PART`]) are read once, whole, into memory by the reader
/// thread, and encrypted under a key derived from their content hash. Larger ones are read a
/// part at a time, each part keyed by its own BLAKE3 chaining value (see [`crate::parts`]), so
/// memory stays bounded and each byte is read and hashed once. Only a large file whose size
/// matches an earlier one (so that it may be a duplicate) is read twice: hashed first, to look
/// it up, then stored.
pub const READ_ONCE_MAX: u64 = parts::PART;
/// The reader hands small files over in batches of about this many bytes.
const BATCH_BYTES: usize = 4 << 20;
/// Read block for streams (stdin).
const READ_BLOCK: usize = 1 << 20;
/// Read block for large files read twice: one part.
const PART_BLOCK: usize = parts::PART as usize;

/// Asks the kernel to back `buf`'s allocation with transparent huge pages where it can: a
/// pipeline buffer of several MiB is then faulted in a few 2 MiB steps instead of thousands of
/// 4 KiB ones (on the 2-core test VM a fresh 4 KiB page costs ~1.7 µs). Purely advisory.
pub(crate) fn advise_huge(buf: &mut Vec<u8>) {
    const HUGE: usize = 2 << 20;
    let start = buf.as_mut_ptr() as usize;
    let end = start + buf.capacity();
    let a = start.next_multiple_of(HUGE);
    let b = end / HUGE * HUGE;
    if b > a {
        // SAFETY: the range lies inside `buf`'s own allocation; MADV_HUGEPAGE only changes how
        // the kernel backs it, never its contents.
        unsafe {
            libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE);
        }
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(f: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Called with the number of plaintext bytes read so far.
pub type ProgressFn = Arc<dyn Fn(u64) + Send + Sync>;

/// How to pack.
#[derive(Clone)]
pub struct PackOptions {
    /// k + m.
    pub erasure: ErasureParams,
    /// Maximum shard length; a segment holds up to `k × shard_size` bytes. `None`:
    /// [`default_shard_size`] for `erasure`.
    pub shard_size: Option<u32>,
    /// Encrypt (private dataset) or not (public).
    pub encrypt: bool,
    /// Key to use when encrypting; a fresh one is generated if `None` (a base's key is reused).
    pub key: Option<DatasetKey>,
    /// Skip unreadable paths with a warning instead of failing.
    pub skip_unreadable: bool,
    /// Encoder threads; 0 means one per core.
    pub workers: usize,
    /// An earlier version of this dataset: unchanged files keep their stored bytes.
    pub base: Option<Arc<IndexedManifest>>,
    /// Progress reports.
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for PackOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackOptions")
            .field("erasure", &self.erasure)
            .field("shard_size", &self.shard_size)
            .field("encrypt", &self.encrypt)
            .field("workers", &self.workers)
            .field("base", &self.base.is_some())
            .finish()
    }
}

impl Default for PackOptions {
    fn default() -> Self {
        Self {
            erasure: ErasureParams::DEVNET,
            shard_size: None,
            encrypt: true,
            key: None,
            skip_unreadable: false,
            workers: 0,
            base: None,
            progress: None,
        }
    }
}

/// What to pack.
pub enum Source {
    /// A directory tree or a single file.
    Path(PathBuf),
    /// A stream (stdin): stored as one file named `name`.
    Reader {
        /// Name of the single file in the dataset.
        name: Vec<u8>,
        /// The bytes.
        reader: Box<dyn Read + Send>,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(p) => write!(f, "Source::Path({})", p.display()),
            Self::Reader { name, .. } => {
                write!(f, "Source::Reader({})", String::from_utf8_lossy(name))
            }
        }
    }
}

/// What a pack did.
#[derive(Debug, Clone)]
pub struct PackReport {
    /// The capability to read the dataset back.
    pub capability: Capability,
    /// Regular files in the dataset.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Plaintext bytes of all files.
    pub bytes: u64,
    /// Bytes of new stream (encrypted and erasure-coded in this run).
    pub new_bytes: u64,
    /// Files whose bytes were kept from the base version without reading them.
    pub reused_files: u64,
    /// Files stored once because an identical one was already in the dataset.
    pub dedup_files: u64,
    /// Segments encoded in this run (data, not manifest).
    pub new_segments: u64,
    /// Shard bytes (data + parity) produced in this run.
    pub shard_bytes: u64,
    /// Length of the manifest blob.
    pub manifest_len: u64,
    /// Paths skipped, with why.
    pub warnings: Vec<String>,
}

/// Why a pack failed. Nothing is half-published: the capability exists only on success.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    /// The dataset could not be walked.
    #[error(transparent)]
    Walk(#[from] walk::WalkError),
    /// Some paths could not be read (and `skip_unreadable` was off).
    #[error("{} path(s) could not be read (use --skip-unreadable to pack the rest):\n{}", .0.len(), .0.join("\n"))]
    Unreadable(Vec<String>),
    /// Reading a file failed part-way.
    #[error("reading {path}: {source}")]
    Read {
        /// Which file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file changed while it was being packed.
    #[error("{path} changed while it was being packed ({what}); pack it again once it is stable")]
    FileChanged {
        /// Which file.
        path: String,
        /// What differed.
        what: &'static str,
    },
    /// Bad k/m.
    #[error(transparent)]
    Erasure(#[from] ErasureError),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A base manifest was given for an encrypted pack without its key, or vice versa.
    #[error("{0}")]
    Options(String),
}

struct SegmentJob {
    seq: u64,
    bytes: Vec<u8>,
}

struct SegmentDone {
    seq: u64,
    len: u32,
    shard_len: u32,
    shards: Vec<ShardId>,
    hints: Vec<Option<[u8; 32]>>,
    shard_bytes: u64,
}

/// Erasure-codes and stores one segment (already encrypted) in place: parity is appended to the
/// segment's own buffer, which is handed back for reuse.
fn encode_segment(
    coder: &Coder,
    store: &dyn ShardStore,
    job: SegmentJob,
) -> (Result<SegmentDone, PackError>, Vec<u8>) {
    let len = job.bytes.len() as u32;
    let set = match coder.encode_vec(job.bytes) {
        Ok(set) => set,
        Err(e) => return (Err(e.into()), Vec::new()),
    };
    // The parity-extended segment buffer becomes shared bytes that the shards slice without
    // copying; it goes back to the pool once the store has let go of every slice (a network
    // store's transport may briefly keep unacknowledged data: then a new buffer is made).
    let shard_len = set.shard_len;
    let shared = bytes::Bytes::from(set.buf);
    let result = (|| {
        let outboards: Vec<verified::Outboard> = shared
            .chunks(shard_len)
            .map(verified::outboard_of)
            .collect();
        let puts: Vec<PutShard<'_>> = outboards
            .iter()
            .enumerate()
            .map(|(i, ob)| PutShard {
                id: ob.root.into(),
                bytes: shared.slice(i * shard_len..(i + 1) * shard_len),
                outboard: ob,
            })
            .collect();
        let hints = store.put_segment(&puts)?;
        Ok(SegmentDone {
            seq: job.seq,
            len,
            shard_len: shard_len as u32,
            shards: puts.iter().map(|p| p.id).collect(),
            hints,
            shard_bytes: shared.len() as u64,
        })
    })();
    let buf = shared.try_into_mut().map(Vec::from).unwrap_or_default();
    (result, buf)
}

/// Cuts the dataset stream into segments and sends them to the encoders.
struct Producer<'a> {
    segment_size: usize,
    /// Capacity of a segment buffer: room for the parity the encoder appends in place.
    capacity: usize,
    bytes: Vec<u8>,
    seq: u64,
    stream_pos: u64,
    tx: Sender<SegmentJob>,
    /// Segment buffers coming back from the encoders, for reuse.
    recycled: Receiver<Vec<u8>>,
    abort: &'a AtomicBool,
    read_bytes: &'a AtomicU64,
    progress: Option<ProgressFn>,
}

impl Producer<'_> {
    /// Appends stored (already encrypted) bytes to the stream.
    fn append(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let room = self.segment_size - self.bytes.len();
            let take = room.min(data.len());
            self.bytes.extend_from_slice(&data[..take]);
            data = &data[take..];
            self.stream_pos += take as u64;
            if self.bytes.len() == self.segment_size && !self.flush() {
                return false;
            }
        }
        true
    }

    /// Appends the stored form of plaintext whose chunks are a file's chunks `first..`, sealing
    /// each chunk in place in the segment buffer (no copy beyond the one into the segment).
    fn append_sealed(&mut self, cipher: &FileCipher, first: u64, data: &[u8]) -> bool {
        if !cipher.is_encrypting() {
            return self.append(data);
        }
        for (i, chunk) in data.chunks(crypto::CHUNK).enumerate() {
            let before = self.bytes.len();
            cipher.seal_chunk_into(first + i as u64, chunk, &mut self.bytes);
            self.stream_pos += (self.bytes.len() - before) as u64;
            if self.bytes.len() >= self.segment_size && !self.cut() {
                return false;
            }
        }
        true
    }

    /// Sends the first `segment_size` bytes as a segment and carries the rest over.
    fn cut(&mut self) -> bool {
        let mut next = self.fresh();
        next.extend_from_slice(&self.bytes[self.segment_size..]);
        self.bytes.truncate(self.segment_size);
        self.send(next)
    }

    /// An empty segment buffer from the pool (waiting for an encoder to hand one back).
    fn fresh(&mut self) -> Vec<u8> {
        match self.recycled.recv() {
            Ok(mut b) => {
                b.clear();
                if b.capacity() < self.capacity {
                    b.reserve(self.capacity);
                    advise_huge(&mut b);
                }
                b
            }
            // The encoders are gone: the pipeline is shutting down.
            Err(_) => Vec::new(),
        }
    }

    /// Sends the current segment; false if the pipeline is shutting down.
    fn flush(&mut self) -> bool {
        if self.bytes.is_empty() {
            return true;
        }
        let next = self.fresh();
        self.send(next)
    }

    fn send(&mut self, next: Vec<u8>) -> bool {
        let job = SegmentJob {
            seq: self.seq,
            bytes: std::mem::replace(&mut self.bytes, next),
        };
        self.seq += 1;
        !self.abort.load(Ordering::Relaxed) && self.tx.send(job).is_ok()
    }

    fn note_read(&self, n: usize) {
        note_read(self.read_bytes, &self.progress, n);
    }
}

fn note_read(read_bytes: &AtomicU64, progress: &Option<ProgressFn>, n: usize) {
    let total = read_bytes.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
    if let Some(p) = progress {
        p(total);
    }
}

/// Signature of a file's state, to notice changes while it is read.
#[derive(PartialEq, Eq, Clone, Copy)]
struct FileStamp {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
}

impl FileStamp {
    fn of(md: &fs::Metadata) -> Self {
        Self {
            len: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
        }
    }
}

/// What the reader thread made of one file, in walk order.
enum Got {
    /// Read once, unchanged during the read: the file's bytes are `buf[range]` of its batch,
    /// with their BLAKE3 (hashed here, so that the producer only encrypts).
    Bytes(std::ops::Range<usize>, ContentHash),
    /// Larger than [`READ_ONCE_MAX`], of a size already seen: opened, to be hashed first and
    /// then streamed by the producer (it may duplicate an earlier file).
    Large(fs::File, FileStamp),
    /// Larger than [`READ_ONCE_MAX`], of a size not seen before (so no duplicate of an earlier
    /// file): its parts follow as [`Got::Part`]s, then [`Got::End`] (or [`Got::Failed`]).
    Streamed,
    /// The next part of a streamed file: `buf[range]` of its batch, and its chaining value.
    Part(std::ops::Range<usize>, ContentHash),
    /// A streamed file was read whole and did not change: its BLAKE3.
    End(ContentHash),
    /// Could not be opened and `skip_unreadable` is on: the warning.
    Skipped(String),
    /// Failed; the reader stops here.
    Failed(PackError),
}

/// Files read by the reader thread, in walk order, with their bytes in one buffer.
struct Batch {
    buf: Vec<u8>,
    items: std::collections::VecDeque<Got>,
}

/// The reader thread: reads `files` in order (each at most [`READ_ONCE_MAX`] bytes once, into
/// batches of about [`BATCH_BYTES`]) so that the producer can hash and encrypt meanwhile.
/// Batch buffers come from `pool` (two of them: one filled here while the producer works on
/// the other), so memory is bounded and reused.
fn read_files(
    files: &[&WalkEntry],
    skip_unreadable: bool,
    mut seen_sizes: std::collections::HashSet<u64>,
    tx: &Sender<Batch>,
    pool: &Receiver<Vec<u8>>,
    abort: &AtomicBool,
    note: &dyn Fn(usize),
) {
    let fresh = || {
        pool.recv().ok().map(|mut buf| {
            buf.clear();
            Batch {
                buf,
                items: Default::default(),
            }
        })
    };
    let Some(mut batch) = fresh() else { return };
    // Hands the batch over and starts a new one; false if the pipeline is shutting down.
    let hand_over = |batch: &mut Batch| {
        let Some(next) = fresh() else { return false };
        tx.send(std::mem::replace(batch, next)).is_ok()
    };
    for we in files {
        if abort.load(Ordering::Relaxed) {
            return;
        }
        let got = match open_one(we, skip_unreadable) {
            Err(got) => got,
            // A large file of a size not seen before cannot duplicate an earlier file.
            Ok((f, before)) if before.len > READ_ONCE_MAX => {
                if seen_sizes.insert(before.len) {
                    batch.items.push_back(Got::Streamed);
                    match stream_into(we, f, before, &mut batch, &hand_over, abort, note) {
                        Some(got) => got,
                        None => return,
                    }
                } else {
                    Got::Large(f, before)
                }
            }
            Ok((f, before)) => {
                if !batch.items.is_empty()
                    && batch.buf.len() as u64 + before.len > BATCH_BYTES as u64
                    && !hand_over(&mut batch)
                {
                    // Hand over what is read so far rather than growing the buffer.
                    return;
                }
                read_into(we, f, before, &mut batch.buf, note)
            }
        };
        let stop = matches!(got, Got::Failed(_));
        let send = stop || matches!(got, Got::Large(..)) || batch.buf.len() >= BATCH_BYTES;
        batch.items.push_back(got);
        if stop {
            let _ = tx.send(batch);
            return;
        }
        if send && !hand_over(&mut batch) {
            return;
        }
    }
    if !batch.items.is_empty() {
        let _ = tx.send(batch);
    }
}

/// Reads a large file to its end a part at a time, each part pushed to the batch as a
/// [`Got::Part`] with its chaining value (full batches are handed over). Returns [`Got::End`]
/// with the file's BLAKE3, or [`Got::Failed`] if the read failed or the file changed; `None` if
/// the pipeline shut down.
fn stream_into(
    we: &WalkEntry,
    mut f: fs::File,
    before: FileStamp,
    batch: &mut Batch,
    hand_over: &dyn Fn(&mut Batch) -> bool,
    abort: &AtomicBool,
    note: &dyn Fn(usize),
) -> Option<Got> {
    let read_err = |source| {
        Some(Got::Failed(PackError::Read {
            path: we.abs.display().to_string(),
            source,
        }))
    };
    let changed = |what| {
        Some(Got::Failed(PackError::FileChanged {
            path: we.abs.display().to_string(),
            what,
        }))
    };
    let mut cvs = Vec::new();
    let mut total = 0u64;
    while total < before.len {
        if batch.buf.capacity() - batch.buf.len() < PART_BLOCK && !hand_over(batch) {
            return None;
        }
        if abort.load(Ordering::Relaxed) {
            return None;
        }
        let start = batch.buf.len();
        let want = parts::PART.min(before.len - total);
        if let Err(e) = (&mut f).take(want).read_to_end(&mut batch.buf) {
            return read_err(e);
        }
        let n = batch.buf.len() - start;
        if n as u64 != want {
            return changed("it shrank during the read");
        }
        let cv = parts::part_cv(cvs.len() as u64, &batch.buf[start..]);
        cvs.push(cv);
        total += n as u64;
        note(n);
        batch.items.push_back(Got::Part(start..start + n, cv));
        if batch.buf.len() >= BATCH_BYTES && !hand_over(batch) {
            return None;
        }
    }
    match f.read(&mut [0u8; 1]) {
        Ok(0) => {}
        Ok(_) => return changed("it grew during the read"),
        Err(e) => return read_err(e),
    }
    let after = match f.metadata() {
        Ok(md) => FileStamp::of(&md),
        Err(e) => return read_err(e),
    };
    if after != before {
        return changed("its size or modification time changed during the read");
    }
    Some(Got::End(ContentHash(
        *parts::root_of_parts(&cvs).as_bytes(),
    )))
}

/// Opens a file and takes its stamp.
fn open_one(we: &WalkEntry, skip_unreadable: bool) -> Result<(fs::File, FileStamp), Got> {
    let path = || we.abs.display().to_string();
    let f = match fs::File::open(&we.abs) {
        Ok(f) => f,
        Err(e) if skip_unreadable => return Err(Got::Skipped(format!("skipped {}: {e}", path()))),
        Err(e) => {
            return Err(Got::Failed(PackError::Unreadable(vec![format!(
                "{}: {e}",
                path()
            )])));
        }
    };
    match f.metadata() {
        Ok(md) => Ok((f, FileStamp::of(&md))),
        Err(source) => Err(Got::Failed(PackError::Read {
            path: path(),
            source,
        })),
    }
}

/// Reads a whole (small enough) file once, appending it to `buf`, and checks it did not change.
fn read_into(
    we: &WalkEntry,
    mut f: fs::File,
    before: FileStamp,
    buf: &mut Vec<u8>,
    note: &dyn Fn(usize),
) -> Got {
    let path = || we.abs.display().to_string();
    let read_err = |source| {
        Got::Failed(PackError::Read {
            path: path(),
            source,
        })
    };
    let size = before.len;
    // One read into memory; the producer hashes and encrypts these very bytes.
    let start = buf.len();
    if buf.capacity() - start < size as usize + 1 {
        buf.reserve(size as usize + 1);
        advise_huge(buf);
    }
    if let Err(e) = (&mut f).take(size + 1).read_to_end(buf) {
        return read_err(e);
    }
    let n = buf.len() - start;
    note(n);
    let after = match f.metadata() {
        Ok(md) => FileStamp::of(&md),
        Err(e) => return read_err(e),
    };
    if n as u64 != size || after != before {
        return Got::Failed(PackError::FileChanged {
            path: path(),
            what: "its size or modification time changed during the read",
        });
    }
    let hash = ContentHash(*blake3::hash(&buf[start..]).as_bytes());
    Got::Bytes(start..start + n, hash)
}

/// The producer's end of the reader thread's channel.
struct Incoming {
    rx: Receiver<Batch>,
    recycle: Sender<Vec<u8>>,
    batch: Option<Batch>,
}

impl Incoming {
    /// The next file's outcome and the buffer its bytes are in.
    fn next(&mut self) -> Option<(Got, &[u8])> {
        while self.batch.as_ref().is_none_or(|b| b.items.is_empty()) {
            if let Some(old) = self.batch.take() {
                let _ = self.recycle.try_send(old.buf);
            }
            self.batch = Some(self.rx.recv().ok()?);
        }
        let b = self.batch.as_mut()?;
        let got = b.items.pop_front()?;
        Some((got, &b.buf))
    }
}

/// Per-run state of the producer beyond segment cutting.
struct FilePacker<'a, 'p> {
    out: &'a mut Producer<'p>,
    key: Option<&'a DatasetKey>,
    /// Stored files by content: the entry kind that refers to their stored bytes.
    dedup: HashMap<ContentHash, EntryKind>,
    warnings: Vec<String>,
    dedup_files: u64,
    /// Read block for large files and streams, kept from one file to the next.
    block: Vec<u8>,
}

enum Packed {
    Kind(EntryKind),
    Skipped,
    Aborted,
}

impl FilePacker<'_, '_> {
    fn pack_file(&mut self, we: &WalkEntry, got: Got, buf: &[u8]) -> Result<Packed, PackError> {
        let path = we.abs.display().to_string();
        let read_err = |source| PackError::Read {
            path: path.clone(),
            source,
        };
        let changed = |what| PackError::FileChanged {
            path: path.clone(),
            what,
        };
        let (mut f, before) = match got {
            Got::Bytes(range, hash) => {
                // Read and hashed once by the reader thread: the bytes hashed are the bytes
                // stored.
                let data = &buf[range];
                let size = data.len() as u64;
                if let Some(kind) = self.duplicate(hash, size) {
                    return Ok(Packed::Kind(kind));
                }
                let offset = self.out.stream_pos;
                if !self
                    .out
                    .append_sealed(&FileCipher::new(self.key, &hash), 0, data)
                {
                    return Ok(Packed::Aborted);
                }
                return Ok(Packed::Kind(self.stored(
                    hash,
                    offset,
                    size,
                    None,
                    Vec::new(),
                )));
            }
            Got::Skipped(warning) => {
                self.warnings.push(warning);
                return Ok(Packed::Skipped);
            }
            Got::Failed(e) => return Err(e),
            Got::Large(f, before) => (f, before),
            Got::Streamed | Got::Part(..) | Got::End(_) => {
                return Err(PackError::Options(format!(
                    "internal error: {path} arrived out of order from the reader thread"
                )));
            }
        };
        let size = before.len;
        // Large, of a size seen before: hash first (it may be a duplicate), then, if it is
        // not, read it again part by part to store it, checking that the parts hash to the
        // same value (the bytes stored are the bytes hashed).
        // The encoders are idle while a large file is hashed: hash on every core, in big reads.
        let mut block = std::mem::take(&mut self.block);
        block.resize(PART_BLOCK, 0);
        let mut hasher = blake3::Hasher::new();
        let mut n_total = 0u64;
        loop {
            let n = read_full(&mut f, &mut block).map_err(read_err)?;
            if n == 0 {
                break;
            }
            hasher.update_rayon(&block[..n]);
            n_total += n as u64;
        }
        if n_total != size {
            return Err(changed("its size changed during the read"));
        }
        let hash = ContentHash(*hasher.finalize().as_bytes());
        if let Some(kind) = self.duplicate(hash, size) {
            self.block = block;
            return Ok(Packed::Kind(kind));
        }
        f.rewind().map_err(read_err)?;
        let offset = self.out.stream_pos;
        let mut cvs = Vec::new();
        let mut pos = 0u64;
        loop {
            let n = read_full(&mut f, &mut block).map_err(read_err)?;
            if n == 0 {
                break;
            }
            pos += n as u64;
            if pos > size {
                return Err(changed("it grew during the read"));
            }
            self.out.note_read(n);
            let cv = parts::part_cv(cvs.len() as u64, &block[..n]);
            if !self.append_part(&mut cvs, cv, &block[..n]) {
                return Ok(Packed::Aborted);
            }
        }
        self.block = block;
        let after = FileStamp::of(&f.metadata().map_err(read_err)?);
        if pos != size || after != before || parts::root_of_parts(&cvs) != hash.as_hash() {
            return Err(changed("its content differs between the two reads"));
        }
        Ok(Packed::Kind(self.stored(hash, offset, size, None, cvs)))
    }

    /// Stores a streamed file (see [`Got::Streamed`]) as its parts arrive, each under its own
    /// key: it cannot duplicate an earlier file (no earlier file has its size), so its hash is
    /// not needed first.
    fn pack_streamed(&mut self, incoming: &mut Incoming) -> Result<Packed, PackError> {
        let offset = self.out.stream_pos;
        let mut size = 0u64;
        let mut cvs = Vec::new();
        loop {
            let Some((got, buf)) = incoming.next() else {
                return Ok(Packed::Aborted);
            };
            match got {
                Got::Part(range, cv) => {
                    size += range.len() as u64;
                    if !self.append_part(&mut cvs, cv, &buf[range]) {
                        return Ok(Packed::Aborted);
                    }
                }
                Got::End(hash) => {
                    return Ok(Packed::Kind(self.stored(hash, offset, size, None, cvs)));
                }
                Got::Failed(e) => return Err(e),
                _ => {
                    return Err(PackError::Options(
                        "internal error: a large file's parts arrived out of order".into(),
                    ));
                }
            }
        }
    }

    /// Appends part `cvs.len()` of a large file (`data`, whose chaining value is `cv`) under
    /// its own key, and records `cv`; false if the pipeline shut down.
    fn append_part(&mut self, cvs: &mut Vec<ContentHash>, cv: ContentHash, data: &[u8]) -> bool {
        let index = cvs.len() as u64;
        cvs.push(cv);
        let cipher = FileCipher::part(self.key, index, &cv);
        self.out
            .append_sealed(&cipher, index * crypto::CHUNKS_PER_PART, data)
    }

    /// An earlier file with this content, if any: the entry kind that refers to its bytes.
    fn duplicate(&mut self, hash: ContentHash, size: u64) -> Option<EntryKind> {
        let kind = self
            .dedup
            .get(&hash)
            .filter(|k| matches!(k, EntryKind::File { size: s, .. } if *s == size))?;
        self.dedup_files += 1;
        Some(kind.clone())
    }

    /// Records a file just stored at `offset`, for later duplicates; returns its entry kind.
    fn stored(
        &mut self,
        hash: ContentHash,
        offset: u64,
        size: u64,
        key_seed: Option<ContentHash>,
        parts: Vec<ContentHash>,
    ) -> EntryKind {
        let kind = file_kind(size, hash, offset, key_seed, parts);
        self.dedup.insert(hash, kind.clone());
        kind
    }

    fn pack_reader(&mut self, reader: &mut dyn Read) -> Result<Packed, PackError> {
        let seed = crypto::random_seed();
        let offset = self.out.stream_pos;
        let (pos, hash) = match self.seal_stream(reader, FileCipher::new(self.key, &seed)) {
            Ok(Some(done)) => done,
            Ok(None) => return Ok(Packed::Aborted),
            Err(source) => {
                return Err(PackError::Read {
                    path: "<stdin>".into(),
                    source,
                });
            }
        };
        let hash = ContentHash(*hash.as_bytes());
        Ok(Packed::Kind(file_kind(
            pos,
            hash,
            offset,
            Some(seed),
            Vec::new(),
        )))
    }

    /// Reads a stream to its end in blocks, hashing the plaintext and appending its sealed form
    /// to the dataset stream. Returns the bytes read and their BLAKE3, or `None` if the
    /// pipeline shut down.
    fn seal_stream(
        &mut self,
        reader: &mut dyn Read,
        cipher: FileCipher,
    ) -> std::io::Result<Option<(u64, blake3::Hash)>> {
        let mut sealer = Sealer::new(cipher);
        let mut block = std::mem::take(&mut self.block);
        block.resize(READ_BLOCK.max(block.len()), 0);
        let mut hasher = blake3::Hasher::new();
        let mut pos = 0u64;
        loop {
            let n = match reader.read(&mut block) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&block[..n]);
            self.out.note_read(n);
            let out = &mut *self.out;
            if !sealer.push(&block[..n], &mut |b| out.append(b)) {
                return Ok(None);
            }
            pos += n as u64;
        }
        self.block = block;
        let out = &mut *self.out;
        if !sealer.finish(&mut |b| out.append(b)) {
            return Ok(None);
        }
        Ok(Some((pos, hasher.finalize())))
    }
}

fn file_kind(
    size: u64,
    hash: ContentHash,
    offset: u64,
    key_seed: Option<ContentHash>,
    parts: Vec<ContentHash>,
) -> EntryKind {
    EntryKind::File {
        size,
        hash,
        offset,
        key_seed,
        parts,
    }
}

/// What the producer thread hands back.
struct Produced {
    entries: Vec<Entry>,
    warnings: Vec<String>,
    reused_files: u64,
    dedup_files: u64,
    new_bytes: u64,
}

/// Walks and reads the source, feeding segments to `tx`.
fn produce(
    source: Source,
    opts: &PackOptions,
    key: Option<&DatasetKey>,
    mut out: Producer<'_>,
) -> Result<Option<Produced>, PackError> {
    let start_pos = out.stream_pos;
    let mut warnings = Vec::new();
    let mut entries = Vec::new();
    let mut reused_files = 0;
    let base_by_path: HashMap<&[u8], &Entry> = opts
        .base
        .as_ref()
        .map(|b| {
            b.manifest
                .entries
                .iter()
                .map(|e| (e.path.as_slice(), e))
                .collect()
        })
        .unwrap_or_default();
    // Files of the base version, by content (for duplicates) and the sizes of its large ones
    // (a large file of such a size is hashed before it is stored, to find it).
    let mut dedup = HashMap::new();
    let mut seen_sizes = std::collections::HashSet::new();
    if let Some(b) = &opts.base {
        for e in &b.manifest.entries {
            if let EntryKind::File { size, hash, .. } = e.kind {
                dedup.insert(hash, e.kind.clone());
                if size > READ_ONCE_MAX {
                    seen_sizes.insert(size);
                }
            }
        }
    }
    let mut fp = FilePacker {
        out: &mut out,
        key,
        dedup,
        warnings: Vec::new(),
        dedup_files: 0,
        block: Vec::new(),
    };
    match source {
        Source::Reader { name, mut reader } => match fp.pack_reader(&mut *reader)? {
            Packed::Kind(kind) => entries.push(Entry {
                path: name,
                mode: 0o644,
                mtime_ns: now_ns(),
                kind,
            }),
            Packed::Aborted => return Ok(None),
            Packed::Skipped => {}
        },
        Source::Path(root) => {
            let w = walk::walk(&root)?;
            for issue in &w.skipped {
                warnings.push(format!(
                    "skipped {}: {}",
                    issue.path.display(),
                    issue.reason
                ));
            }
            if !w.unreadable.is_empty() {
                let list: Vec<String> = w
                    .unreadable
                    .iter()
                    .map(|i| format!("{}: {}", i.path.display(), i.reason))
                    .collect();
                if !opts.skip_unreadable {
                    return Err(PackError::Unreadable(list));
                }
                warnings.extend(list.into_iter().map(|l| format!("skipped {l}")));
            }
            // Which files keep their stored bytes from the base version (not read at all).
            let reuse: Vec<Option<EntryKind>> = w
                .entries
                .iter()
                .map(|we| match &we.kind {
                    WalkKind::File { size } => base_by_path
                        .get(we.rel.as_slice())
                        .filter(|b| {
                            b.mtime_ns == we.mtime_ns
                                && matches!(b.kind, EntryKind::File { size: s, .. } if s == *size)
                        })
                        .map(|b| b.kind.clone()),
                    _ => None,
                })
                .collect();
            let to_read: Vec<&WalkEntry> = w
                .entries
                .iter()
                .zip(&reuse)
                .filter(|(we, r)| matches!(we.kind, WalkKind::File { .. }) && r.is_none())
                .map(|(we, _)| we)
                .collect();
            // A rendezvous channel and two batch buffers: the reader fills one while the
            // producer works on the other.
            let (batch_tx, batch_rx) = bounded::<Batch>(0);
            let (recycle_tx, recycle_rx) = bounded::<Vec<u8>>(2);
            for _ in 0..2 {
                // Sized once for the largest read: never reallocated, faulted in once.
                let mut buf = Vec::with_capacity(BATCH_BYTES.max(READ_ONCE_MAX as usize) + 1);
                advise_huge(&mut buf);
                let _ = recycle_tx.try_send(buf);
            }
            let (read_bytes, progress, abort) =
                (fp.out.read_bytes, fp.out.progress.clone(), fp.out.abort);
            let skip = opts.skip_unreadable;
            let done = std::thread::scope(|s| {
                spawn_named(s, "pack-read", move || {
                    read_files(
                        &to_read,
                        skip,
                        seen_sizes,
                        &batch_tx,
                        &recycle_rx,
                        abort,
                        &|n| note_read(read_bytes, &progress, n),
                    );
                });
                let mut incoming = Incoming {
                    rx: batch_rx,
                    recycle: recycle_tx,
                    batch: None,
                };
                for (we, reused) in w.entries.iter().zip(reuse) {
                    let kind = match &we.kind {
                        WalkKind::Dir => EntryKind::Dir,
                        WalkKind::Symlink { target } => EntryKind::Symlink {
                            target: target.clone(),
                        },
                        WalkKind::File { .. } => {
                            if let Some(k) = reused {
                                reused_files += 1;
                                k
                            } else {
                                // The reader stops early only when the pipeline is aborting.
                                let Some((got, buf)) = incoming.next() else {
                                    return Ok(false);
                                };
                                let packed = if matches!(got, Got::Streamed) {
                                    fp.pack_streamed(&mut incoming)?
                                } else {
                                    fp.pack_file(we, got, buf)?
                                };
                                match packed {
                                    Packed::Kind(k) => k,
                                    Packed::Skipped => continue,
                                    Packed::Aborted => return Ok(false),
                                }
                            }
                        }
                    };
                    entries.push(Entry {
                        path: we.rel.clone(),
                        mode: we.mode,
                        mtime_ns: we.mtime_ns,
                        kind,
                    });
                }
                Ok::<bool, PackError>(true)
            })?;
            if !done {
                return Ok(None);
            }
        }
    }
    warnings.append(&mut fp.warnings);
    let dedup_files = fp.dedup_files;
    if !out.flush() {
        return Ok(None);
    }
    Ok(Some(Produced {
        entries,
        warnings,
        reused_files,
        dedup_files,
        new_bytes: out.stream_pos - start_pos,
    }))
}

/// Spawns a scoped thread with a name (shown by `top -H`, `perf` and panics).
pub(crate) fn spawn_named<'scope, T: Send + 'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    name: &str,
    f: impl FnOnce() -> T + Send + 'scope,
) -> std::thread::ScopedJoinHandle<'scope, T> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn_scoped(s, f)
        .expect("spawning a thread")
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Maps node ids to the manifest's node table.
#[derive(Default)]
struct NodeTable {
    ids: Vec<[u8; 32]>,
    index: HashMap<[u8; 32], u16>,
}

impl NodeTable {
    fn from_ids(ids: &[[u8; 32]]) -> Self {
        let mut t = Self::default();
        for id in ids {
            t.hint(Some(*id));
        }
        t
    }

    fn hint(&mut self, node: Option<[u8; 32]>) -> u16 {
        let Some(node) = node else { return NO_HINT };
        if let Some(&i) = self.index.get(&node) {
            return i;
        }
        if self.ids.len() >= NO_HINT as usize {
            return NO_HINT;
        }
        let i = self.ids.len() as u16;
        self.ids.push(node);
        self.index.insert(node, i);
        i
    }
}

fn desc(done: SegmentDone, nodes: &mut NodeTable) -> SegmentDesc {
    SegmentDesc {
        len: done.len,
        shard_len: done.shard_len,
        shards: done.shards,
        placement: done.hints.into_iter().map(|h| nodes.hint(h)).collect(),
    }
}

/// Runs the encoder workers over `jobs` and collects finished segments in order.
fn collect_segments(
    coder: &Coder,
    store: &dyn ShardStore,
    workers: usize,
    jobs: Receiver<SegmentJob>,
    recycle: Sender<Vec<u8>>,
    abort: &AtomicBool,
) -> Result<Vec<SegmentDone>, PackError> {
    std::thread::scope(|s| {
        let (done_tx, done_rx) = bounded::<Result<SegmentDone, PackError>>(workers * 2);
        for _ in 0..workers {
            let jobs = jobs.clone();
            let done_tx = done_tx.clone();
            let recycle = recycle.clone();
            spawn_named(s, "pack-encode", move || {
                for job in jobs {
                    if abort.load(Ordering::Relaxed) {
                        // Still hand the buffer back: the producer may be waiting for one.
                        let _ = recycle.try_send(job.bytes);
                        continue;
                    }
                    let (r, buf) = encode_segment(coder, store, job);
                    let _ = recycle.try_send(buf);
                    if r.is_err() {
                        abort.store(true, Ordering::Relaxed);
                    }
                    if done_tx.send(r).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let mut pending = BTreeMap::new();
        let mut ordered = Vec::new();
        let mut first_err = None;
        for r in done_rx {
            match r {
                Ok(d) => {
                    pending.insert(d.seq, d);
                    while let Some(d) = pending.remove(&(ordered.len() as u64)) {
                        ordered.push(d);
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(ordered),
        }
    })
}

/// Packs `source` into `store` and returns the capability and a report.
pub fn pack(
    source: Source,
    store: &dyn ShardStore,
    opts: &PackOptions,
) -> Result<PackReport, PackError> {
    let coder = Coder::new(opts.erasure)?;
    if let Some(b) = &opts.base
        && b.manifest.erasure != opts.erasure
    {
        return Err(PackError::Options(format!(
            "the base dataset uses {} erasure coding; an update must use the same",
            b.manifest.erasure
        )));
    }
    let key = opts
        .encrypt
        .then(|| opts.key.clone().unwrap_or_else(DatasetKey::generate));
    let shard_size = opts
        .shard_size
        .unwrap_or_else(|| default_shard_size(opts.erasure));
    let segment_size = opts.erasure.data as usize * shard_size.max(1024) as usize;
    let workers = if opts.workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        opts.workers
    };
    // A segment buffer also takes its zero padding and parity (encoded in place) and up to one
    // sealed chunk past the cut.
    let capacity = (opts.erasure.total() * opts.erasure.shard_len(segment_size))
        .max(segment_size + crypto::STORED_CHUNK);
    let base_len = opts.base.as_ref().map_or(0, |b| b.stream_len());
    let abort = AtomicBool::new(false);
    let read_bytes = AtomicU64::new(0);
    // Segment buffers: a fixed pool, one being filled by the producer, one queued, one per
    // encoder; reused for the whole run, so memory is bounded and touched once.
    let (job_tx, job_rx) = bounded::<SegmentJob>(1);
    let buffers = workers + 1;
    let (recycle_tx, recycle_rx) = bounded::<Vec<u8>>(buffers);
    for _ in 0..buffers {
        let _ = recycle_tx.try_send(Vec::new());
    }

    let (produced, done) = std::thread::scope(|s| {
        let producer = Producer {
            segment_size,
            capacity,
            bytes: {
                let mut b = Vec::with_capacity(capacity);
                advise_huge(&mut b);
                b
            },
            seq: 0,
            stream_pos: base_len,
            tx: job_tx,
            recycled: recycle_rx,
            abort: &abort,
            read_bytes: &read_bytes,
            progress: opts.progress.clone(),
        };
        let key_ref = key.as_ref();
        let abort_ref = &abort;
        let handle = spawn_named(s, "pack-seal", move || {
            let r = produce(source, opts, key_ref, producer);
            if r.is_err() {
                abort_ref.store(true, Ordering::Relaxed);
            }
            r
        });
        let done = collect_segments(&coder, store, workers, job_rx, recycle_tx, &abort);
        let produced = handle
            .join()
            .unwrap_or_else(|_| Err(PackError::Options("the reader thread panicked".into())));
        (produced, done)
    });
    // A producer error explains an encoder abort better than the other way round.
    let produced = produced?;
    let done = done?;
    let produced = produced.ok_or_else(|| PackError::Options("packing was aborted".into()))?;

    let mut nodes = NodeTable::from_ids(opts.base.as_ref().map_or(&[][..], |b| &b.manifest.nodes));
    let mut segments = opts
        .base
        .as_ref()
        .map(|b| b.manifest.segments.clone())
        .unwrap_or_default();
    let new_segments = done.len() as u64;
    let shard_bytes: u64 = done.iter().map(|d| d.shard_bytes).sum();
    segments.extend(done.into_iter().map(|d| desc(d, &mut nodes)));

    let mut entries = produced.entries;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let (mut files, mut dirs, mut symlinks, mut bytes) = (0, 0, 0, 0);
    for e in &entries {
        match &e.kind {
            EntryKind::File { size, .. } => {
                files += 1;
                bytes += size;
            }
            EntryKind::Dir => dirs += 1,
            EntryKind::Symlink { .. } => symlinks += 1,
        }
    }
    let manifest = Manifest {
        created_unix: (now_ns() / 1_000_000_000) as u64,
        erasure: opts.erasure,
        segment_size: segment_size as u32,
        nodes: nodes.ids,
        segments,
        entries,
    };
    let (id, manifest_len) = store_manifest(&coder, store, &manifest, key.as_ref(), segment_size)?;
    Ok(PackReport {
        capability: Capability { id, key },
        files,
        dirs,
        symlinks,
        bytes,
        new_bytes: produced.new_bytes,
        reused_files: produced.reused_files,
        dedup_files: produced.dedup_files,
        new_segments,
        shard_bytes,
        manifest_len,
        warnings: produced.warnings,
    })
}

/// Encrypts and stores the manifest, then the root record; returns the dataset id.
fn store_manifest(
    coder: &Coder,
    store: &dyn ShardStore,
    manifest: &Manifest,
    key: Option<&DatasetKey>,
    segment_size: usize,
) -> Result<(DatasetId, u64), PackError> {
    let mut blob = manifest.encode();
    let nonce = crypto::random_nonce();
    if let Some(k) = key {
        crypto::apply_manifest_cipher(k, &nonce, &mut blob);
    }
    let mut nodes = NodeTable::default();
    let mut manifest_segments = Vec::new();
    for (seq, chunk) in blob.chunks(segment_size).enumerate() {
        let job = SegmentJob {
            seq: seq as u64,
            bytes: chunk.to_vec(),
        };
        manifest_segments.push(desc(encode_segment(coder, store, job).0?, &mut nodes));
    }
    let root = RootRecord {
        erasure: coder.params(),
        key_check: key.map(crypto::key_check),
        manifest_nonce: nonce,
        manifest_len: blob.len() as u64,
        manifest_hash: ContentHash(*blake3::hash(&blob).as_bytes()),
        manifest_segments,
        nodes: nodes.ids,
    };
    let bytes = root.encode();
    let id = DatasetId(*blake3::hash(&bytes).as_bytes());
    store.put_root(&id, &bytes, crate::store::root_copies(coder.params()))?;
    Ok((id, blob.len() as u64))
}
