//! Sealed replicas: background sealing of stored shards into units, reads that unseal, and the
//! provers behind `SealProof` and `Challenge`.
//!
//! ```text
//! <dir>/units/<comm_r hex>.replica   the sealed unit (written to tmp/, fsynced, renamed)
//! <dir>/units/<comm_r hex>.tree      its BLAKE3 tree above 16 KiB groups (postcard)
//! ```
//!
//! A stored shard is served from its plain file at once. The sealer thread (nice 10, so uploads
//! and reads keep priority) collects waiting shards into a unit of `sealing.unit_bytes` (or a
//! smaller one after `sealing.idle_secs` without arrivals), seals it, writes the unit files, and
//! only then records the unit and the members' placements in one RocksDB batch. Unless
//! `sealing.keep_plain`, the members' plain files are removed after that commit and reads unseal
//! the range they need. A crash before the commit leaves files the start-up check removes; the
//! shards stay plain and are sealed again.

use std::{
    fs::{self, File},
    io::{self, Read, Write},
    path::{Path, PathBuf},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use granary_proofs::{
    DataId, MerkleTree, ReplicaId, SealParams,
    challenge::{PostProof, PostProver, ReplicaIdx, ReplicaReader, SealedReplica},
    merkle::{CHUNK_LEN, ChunkIdx, ChunkOpening},
    seal::{self, BLOCK_LEN},
    seal_proof::{self, SealProof, SealStatement},
    unit::{self, Member, UnitLayout},
};
use granary_protocol::{
    ErrorCode, ShardId,
    auth::now_ms,
    sealing::{SignedUnit, proof_node_id},
};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::{
    state::{Reject, State},
    store::{Store, UnitKey},
};

/// A unit as recorded in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitRecord {
    /// The signed statement and layout.
    pub unit: SignedUnit,
    /// When sealing finished, ms since the Unix epoch.
    pub sealed_at_ms: u64,
    /// Seconds the sealing took.
    pub seal_secs: f64,
}

impl UnitRecord {
    /// Decodes a store record.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Reject> {
        postcard::from_bytes(bytes).map_err(|e| Reject::internal("corrupt unit record", e))
    }

    /// The unit key (`comm_r`).
    pub fn key(&self) -> UnitKey {
        self.unit.statement.comm_r
    }

    /// The shard ids of the unit's members, in unit order.
    pub fn member_ids(&self) -> Vec<ShardId> {
        self.unit
            .layout
            .members()
            .iter()
            .map(|m| ShardId(m.id.0))
            .collect()
    }
}

/// The unit files.
#[derive(Debug)]
pub struct Units {
    dir: PathBuf,
    tmp: PathBuf,
}

impl Units {
    /// Opens (creating) `<dir>/units`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let u = Self {
            dir: dir.join("units"),
            tmp: dir.join("tmp"),
        };
        fs::create_dir_all(&u.dir)?;
        fs::create_dir_all(&u.tmp)?;
        Ok(u)
    }

    /// Path of a unit's replica.
    pub fn replica_path(&self, key: &UnitKey) -> PathBuf {
        self.dir.join(format!("{}.replica", hex::encode(key)))
    }

    /// Path of a unit's tree.
    pub fn tree_path(&self, key: &UnitKey) -> PathBuf {
        self.dir.join(format!("{}.tree", hex::encode(key)))
    }

    /// Maps a unit's replica read-only.
    pub fn map(&self, key: &UnitKey) -> io::Result<Mmap> {
        let f = File::open(self.replica_path(key))?;
        // SAFETY: unit files are written once to tmp/, renamed into place and never modified or
        // truncated afterwards (only unlinked, which keeps the mapping valid).
        unsafe { Mmap::map(&f) }
    }

    /// Loads a unit's tree.
    pub fn tree(&self, key: &UnitKey) -> io::Result<MerkleTree> {
        let bytes = fs::read(self.tree_path(key))?;
        postcard::from_bytes(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Writes a unit's files durably (tmp, fsync, rename, fsync dir).
    pub fn write(&self, key: &UnitKey, replica: &[u8], tree: &MerkleTree) -> io::Result<()> {
        let tree_bytes =
            postcard::to_stdvec(tree).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let name = hex::encode(key);
        let tmp_r = self
            .tmp
            .join(format!("{name}.replica.{}", std::process::id()));
        let tmp_t = self.tmp.join(format!("{name}.tree.{}", std::process::id()));
        let res = (|| {
            for (p, b) in [(&tmp_r, replica), (&tmp_t, &tree_bytes[..])] {
                let mut f = File::create(p)?;
                f.write_all(b)?;
                f.sync_all()?;
            }
            fs::rename(&tmp_t, self.tree_path(key))?;
            fs::rename(&tmp_r, self.replica_path(key))?;
            crate::blobs::sync_dir(&self.dir)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp_r);
            let _ = fs::remove_file(&tmp_t);
        }
        res
    }

    /// Removes a unit's files (missing files are fine).
    pub fn remove(&self, key: &UnitKey) -> io::Result<()> {
        for p in [self.replica_path(key), self.tree_path(key)] {
            match fs::remove_file(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Keys of every unit file pair present on disk.
    pub fn list(&self) -> io::Result<Vec<(PathBuf, Option<UnitKey>)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let p = e?.path();
            let key = p
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| hex::decode(s).ok())
                .and_then(|v| <[u8; 32]>::try_from(v).ok());
            out.push((p, key));
        }
        Ok(out)
    }
}

fn params_of(st: &State) -> SealParams {
    SealParams {
        rounds: st.config.sealing.rounds,
        ..SealParams::default()
    }
}

/// Longest a stored shard waits for quiet before it is sealed anyway.
const MAX_SEAL_WAIT: Duration = Duration::from_secs(600);

/// Lowers the calling thread's priority (Linux: per-thread nice).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread, no pointers.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// Shards a sealer thread has taken for the unit it is sealing (so that several threads never
/// seal the same shard).
pub(crate) type Claims = Arc<std::sync::Mutex<std::collections::HashSet<ShardId>>>;

/// Releases a thread's claims when its unit is done (or failed).
struct ClaimGuard<'a> {
    claims: &'a Claims,
    ids: Vec<ShardId>,
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        let mut c = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        for id in &self.ids {
            c.remove(id);
        }
    }
}

/// Runs one sealer thread until `stop` is set (`[sealing] threads` of them share `claims`).
/// Blocking: run it on its own thread.
pub(crate) fn run(st: Arc<State>, stop: Arc<AtomicBool>, claims: Claims, thread: usize) {
    if !st.config.sealing.enabled {
        return;
    }
    lower_priority();
    let mut last_pending = (0usize, 0u64);
    let mut since = Instant::now();
    let mut waiting_since: Option<Instant> = None;
    let mut last_gc = Instant::now();
    let mut cached: Option<(crate::store::Usage, Vec<(ShardId, u64)>)> = None;
    let mut last_scan: Option<Instant> = None;
    let mut rescan = false;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(500));
        if thread == 0 && last_gc.elapsed() > Duration::from_secs(10) {
            if let Err(e) = collect_garbage(&st) {
                tracing::warn!(detail = %e.detail, "sealer: unit clean-up failed");
            }
            last_gc = Instant::now();
        }
        // Listing waiting shards scans the index: do it when the index changed (at most every
        // 2 s while uploads stream in), after a unit, and once a minute — not every tick.
        let usage = match st.store.usage() {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(%e, "sealer: reading usage failed");
                continue;
            }
        };
        let changed = cached.as_ref().is_none_or(|(u, _)| *u != usage);
        let due = last_scan.is_none_or(|t: Instant| {
            (changed || rescan) && t.elapsed() >= Duration::from_secs(2)
                || t.elapsed() >= Duration::from_secs(60)
        });
        if due || cached.is_none() {
            match pending_shards(st.store.as_ref()) {
                Ok(p) => cached = Some((usage, p)),
                Err(e) => {
                    tracing::warn!(detail = %e.detail, "sealer: listing shards failed");
                    continue;
                }
            }
            last_scan = Some(Instant::now());
            rescan = false;
        }
        let pending: Vec<(ShardId, u64)> = {
            let c = claims.lock().unwrap_or_else(|e| e.into_inner());
            cached
                .as_ref()
                .map(|(_, p)| {
                    p.iter()
                        .filter(|(id, _)| !c.contains(id))
                        .copied()
                        .collect()
                })
                .unwrap_or_default()
        };
        let bytes: u64 = pending.iter().map(|(_, n)| n.next_multiple_of(1024)).sum();
        if (pending.len(), bytes) != last_pending {
            last_pending = (pending.len(), bytes);
            since = Instant::now();
        }
        let cfg = st.config.sealing;
        // Sealing takes the cores: start a unit once uploads and reads have been quiet for
        // `idle_secs`, or when the backlog reaches 4 units, or when shards waited 10 minutes.
        let quiet_for = Duration::from_millis(
            now_ms().saturating_sub(st.last_transfer_ms.load(Ordering::Relaxed)),
        );
        let idle_limit = Duration::from_secs(cfg.idle_secs);
        let idle = since.elapsed() >= idle_limit && quiet_for >= idle_limit;
        if pending.is_empty() {
            waiting_since = None;
            continue;
        }
        let waited = waiting_since.get_or_insert_with(Instant::now).elapsed();
        let backlog = bytes >= cfg.unit_bytes.saturating_mul(4);
        if !(idle || backlog || waited >= MAX_SEAL_WAIT) {
            continue;
        }
        let mut members = Vec::new();
        let mut total = 0;
        for (id, size) in pending {
            let padded = size.next_multiple_of(1024);
            if !members.is_empty() && total + padded > cfg.unit_bytes {
                break;
            }
            total += padded;
            members.push((id, size));
        }
        // The list may be a little old: drop shards another thread sealed meanwhile.
        members.retain(|(id, _)| matches!(st.store.placement(id), Ok(None)));
        if members.is_empty() {
            rescan = true;
            continue;
        }
        let _claimed = {
            let mut c = claims.lock().unwrap_or_else(|e| e.into_inner());
            if members.iter().any(|(id, _)| c.contains(id)) {
                continue; // another thread took some meanwhile: look again
            }
            c.extend(members.iter().map(|(id, _)| *id));
            ClaimGuard {
                claims: &claims,
                ids: members.iter().map(|(id, _)| *id).collect(),
            }
        };
        tracing::info!(
            shards = members.len(),
            bytes = total,
            thread,
            "sealing unit"
        );
        rescan = true;
        match seal_unit(&st, &members) {
            Ok(key) => {
                tracing::info!(unit = %hex::encode(&key[..6]), shards = members.len(), bytes = total, "sealed unit")
            }
            Err(e) => {
                tracing::warn!(detail = %e.detail, "sealing failed");
                std::thread::sleep(Duration::from_secs(5));
            }
        }
    }
}

/// Indexed shards not yet placed in a unit, in id order, with their sizes.
pub(crate) fn pending_shards(store: &dyn Store) -> Result<Vec<(ShardId, u64)>, Reject> {
    let placed: std::collections::HashSet<ShardId> =
        store.placements()?.into_iter().map(|(id, _)| id).collect();
    Ok(store
        .shards()?
        .into_iter()
        .filter(|(id, _)| !placed.contains(id))
        .map(|(id, r)| (id, r.size))
        .collect())
}

/// Seals `members` (id, size) into one unit and commits it; returns its key.
fn seal_unit(st: &Arc<State>, members: &[(ShardId, u64)]) -> Result<UnitKey, Reject> {
    let started = Instant::now();
    let layout = UnitLayout::new(
        members
            .iter()
            .map(|(id, len)| Member {
                id: DataId(id.0),
                len: *len,
            })
            .collect(),
    )
    .map_err(|e| Reject::internal("unit layout", e))?;
    let mut buf = vec![0u8; layout.len() as usize];
    for (i, (id, len)) in members.iter().enumerate() {
        let at = layout.offset(i) as usize;
        let dst = &mut buf[at..at + *len as usize];
        let ok = File::open(st.blobs.data_path(id)).and_then(|mut f| f.read_exact(dst));
        if ok.is_ok() && blake3::hash(dst).as_bytes() == &id.0 {
            continue;
        }
        // Rot (or a delete that raced the listing): quarantine under the lock if still indexed
        // and still bad, as the scrubber would; the next pass seals the rest.
        let _g = st
            .commit_lock
            .lock()
            .map_err(|_| Reject::internal("commit lock", "poisoned"))?;
        let still_bad = File::open(st.blobs.data_path(id))
            .and_then(|mut f| f.read_exact(dst))
            .map_or(true, |()| blake3::hash(dst).as_bytes() != &id.0);
        if still_bad && st.store.shard(id)?.is_some() {
            st.store.drop_shard(id)?;
            st.blobs.quarantine(id)?;
            tracing::warn!(%id, "sealer: shard unreadable or corrupt; quarantined");
        }
        return Err(Reject::new(
            ErrorCode::Internal,
            format!("shard {id} unreadable or corrupt; unit not sealed this pass"),
        ));
    }
    let params = params_of(st);
    let data_id = layout.data_id();
    let replica_id = ReplicaId::derive(&proof_node_id(&st.id), &data_id, &params);
    seal::seal_in_place(&params, &replica_id, &mut buf)
        .map_err(|e| Reject::internal("sealing", e))?;
    let tree = MerkleTree::build(&buf).map_err(|e| Reject::internal("unit tree", e))?;
    let statement = SealStatement {
        data_id,
        replica_id,
        comm_r: tree.root(),
        len: layout.len(),
        params,
    };
    let key = statement.comm_r;
    st.units.write(&key, &buf, &tree)?;
    drop(buf);
    let record = UnitRecord {
        unit: SignedUnit::sign(&st.key, statement, layout),
        sealed_at_ms: now_ms(),
        seal_secs: started.elapsed().as_secs_f64(),
    };
    let bytes = postcard::to_stdvec(&record).map_err(|e| Reject::internal("unit record", e))?;
    let _g = st
        .commit_lock
        .lock()
        .map_err(|_| Reject::internal("commit lock", "poisoned"))?;
    let mut placed = Vec::with_capacity(members.len());
    for (id, _) in members {
        // Still stored, and not sealed elsewhere meanwhile (never two placements per shard).
        if st.store.shard(id)?.is_some() && st.store.placement(id)?.is_none() {
            placed.push(*id);
        }
    }
    if placed.is_empty() {
        st.units.remove(&key)?;
        return Ok(key);
    }
    st.store.put_unit(&key, &bytes, &placed)?;
    if !st.config.sealing.keep_plain {
        for id in &placed {
            match fs::remove_file(st.blobs.data_path(id)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
    }
    Ok(key)
}

/// Removes units none of whose members is still indexed and placed there.
fn collect_garbage(st: &State) -> Result<(), Reject> {
    for (key, rec) in st.store.units()? {
        let rec = UnitRecord::decode(&rec)?;
        let ids = rec.member_ids();
        let live = |st: &State| -> Result<bool, Reject> {
            for id in &ids {
                if st.store.placement(id)? == Some(key) && st.store.shard(id)?.is_some() {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        if live(st)? {
            continue;
        }
        let _g = st
            .commit_lock
            .lock()
            .map_err(|_| Reject::internal("commit lock", "poisoned"))?;
        if !live(st)? {
            st.store.remove_unit(&key, &ids)?;
            st.units.remove(&key)?;
            tracing::info!(unit = %hex::encode(&key[..6]), "removed unit with no live shards");
        }
    }
    Ok(())
}

/// Where a sealed shard lives.
struct Located {
    record: UnitRecord,
    member: usize,
}

fn locate(store: &dyn Store, id: &ShardId) -> Result<Option<Located>, Reject> {
    let Some(key) = store.placement(id)? else {
        return Ok(None);
    };
    let Some(rec) = store.unit(&key)? else {
        return Ok(None);
    };
    let record = UnitRecord::decode(&rec)?;
    let Some(member) = record.unit.layout.position(&DataId(id.0)) else {
        return Ok(None);
    };
    Ok(Some(Located { record, member }))
}

/// Bytes `range` of a sealed shard, unsealed from its unit; `None` if the shard is not sealed.
pub(crate) fn read_sealed(
    store: &dyn Store,
    units: &Units,
    id: &ShardId,
    range: std::ops::Range<u64>,
) -> Result<Option<Vec<u8>>, Reject> {
    let Some(loc) = locate(store, id)? else {
        return Ok(None);
    };
    let s = &loc.record.unit.statement;
    let map = units.map(&s.comm_r)?;
    if map.len() as u64 != s.len {
        return Err(Reject::internal("unit file", "wrong length"));
    }
    let blocks = unit::member_blocks(&loc.record.unit.layout, loc.member, range.clone());
    let mut out = vec![0u8; ((blocks.end - blocks.start) as usize) * BLOCK_LEN];
    seal::unseal_range(&s.params, &s.replica_id, &map, blocks.clone(), &mut out)
        .map_err(|e| Reject::internal("unsealing", e))?;
    let skip = (loc.record.unit.layout.offset(loc.member) + range.start
        - blocks.start * BLOCK_LEN as u64) as usize;
    out.drain(..skip);
    out.truncate((range.end - range.start) as usize);
    Ok(Some(out))
}

/// The sealing state of `ids` for `SealInfo`.
pub(crate) fn seal_info(
    store: &dyn Store,
    ids: &[ShardId],
) -> Result<granary_protocol::sealing::SealInfoBody, Reject> {
    use granary_protocol::sealing::{SealInfoBody, ShardSealState};
    let mut units: Vec<SignedUnit> = Vec::new();
    let mut index: std::collections::HashMap<UnitKey, u32> = Default::default();
    let mut shards = Vec::with_capacity(ids.len());
    for id in ids {
        if store.shard(id)?.is_none() {
            shards.push(ShardSealState::NotHeld);
            continue;
        }
        let Some(key) = store.placement(id)? else {
            shards.push(ShardSealState::Pending);
            continue;
        };
        let unit = match index.get(&key) {
            Some(&u) => u,
            None => {
                let Some(rec) = store.unit(&key)? else {
                    shards.push(ShardSealState::Pending);
                    continue;
                };
                units.push(UnitRecord::decode(&rec)?.unit);
                let u = (units.len() - 1) as u32;
                index.insert(key, u);
                u
            }
        };
        shards.push(ShardSealState::Sealed { unit });
    }
    Ok(SealInfoBody { shards, units })
}

fn load_unit(store: &dyn Store, key: &UnitKey) -> Result<UnitRecord, Reject> {
    let rec = store.unit(key)?.ok_or_else(|| {
        Reject::new(
            ErrorCode::NotFound,
            format!("unit {} not held", hex::encode(&key[..8])),
        )
    })?;
    UnitRecord::decode(&rec)
}

/// A seal proof for unit `key` with `k` openings from `seed`.
pub(crate) fn prove_seal(
    store: &dyn Store,
    units: &Units,
    key: &UnitKey,
    seed: &[u8; 32],
    k: usize,
) -> Result<SealProof, Reject> {
    let rec = load_unit(store, key)?;
    let s = rec.unit.statement;
    let layout = &rec.unit.layout;
    let map = units.map(key)?;
    let tree_r = units.tree(key)?;
    if map.len() as u64 != s.len || tree_r.root() != s.comm_r {
        return Err(Reject::internal("unit files", "do not match the record"));
    }
    // One member at a time (memory: the largest member, not the unit): unseal it, build its
    // tree, open the plaintext chunks of the challenged blocks that fall in it.
    let blocks = s.len / BLOCK_LEN as u64;
    let challenged = seal_proof::challenged_blocks(&s.comm_r, seed, blocks, k);
    let mut openings: std::collections::HashMap<u64, ChunkOpening> = Default::default();
    let largest = layout.members().iter().map(|m| m.len).max().unwrap_or(0);
    let mut buf = vec![0u8; largest.next_multiple_of(BLOCK_LEN as u64) as usize];
    for (i, m) in layout.members().iter().enumerate() {
        let start = layout.offset(i);
        let mine: Vec<u64> = challenged
            .iter()
            .map(|j| j.0)
            .filter(|&j| {
                let at = j * BLOCK_LEN as u64;
                at >= start && at < start + m.len
            })
            .collect();
        if mine.is_empty() {
            continue;
        }
        let range = unit::member_blocks(layout, i, 0..m.len);
        let n = ((range.end - range.start) as usize) * BLOCK_LEN;
        seal::unseal_range(&s.params, &s.replica_id, &map, range, &mut buf[..n])
            .map_err(|e| Reject::internal("unsealing", e))?;
        let bytes = &buf[..m.len as usize];
        let tree = MerkleTree::build(bytes).map_err(|e| Reject::internal("member tree", e))?;
        for j in mine {
            let chunk = ChunkIdx((j * BLOCK_LEN as u64 - start) / CHUNK_LEN as u64);
            let g = tree.group_range(chunk);
            let o = tree
                .open(chunk, &bytes[g.start as usize..g.end as usize])
                .map_err(|e| Reject::internal("opening", e))?;
            openings.insert(j, o);
        }
    }
    seal_proof::prove_with(&s.replica_id, &map, &tree_r, seed, k, |j| {
        Ok(openings.get(&j.0).cloned())
    })
    .map_err(|e| Reject::internal("seal proof", e))
}

struct UnitReader<'a> {
    units: &'a Units,
    keys: Vec<UnitKey>,
    maps: Vec<OnceLock<Result<Mmap, String>>>,
    trees: Vec<OnceLock<Result<MerkleTree, String>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("unit {0}: {1}")]
struct UnitReadError(String, String);

impl UnitReader<'_> {
    fn err(&self, r: ReplicaIdx, e: &str) -> UnitReadError {
        UnitReadError(hex::encode(&self.keys[r.0 as usize][..8]), e.to_string())
    }
}

impl ReplicaReader for UnitReader<'_> {
    type Error = UnitReadError;

    fn tree(&self, r: ReplicaIdx) -> Result<&MerkleTree, UnitReadError> {
        let i = r.0 as usize;
        self.trees[i]
            .get_or_init(|| self.units.tree(&self.keys[i]).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| self.err(r, e))
    }

    fn read(&self, r: ReplicaIdx, offset: u64, buf: &mut [u8]) -> Result<(), UnitReadError> {
        let i = r.0 as usize;
        let map = self.maps[i]
            .get_or_init(|| self.units.map(&self.keys[i]).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| self.err(r, e))?;
        let src = map
            .get(offset as usize..offset as usize + buf.len())
            .ok_or_else(|| self.err(r, "short replica file"))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Answers `chunks` storage challenges from `seed` over the units `keys` (in that order).
pub(crate) fn prove_post(
    store: &dyn Store,
    units: &Units,
    keys: &[UnitKey],
    seed: &[u8; 32],
    chunks: usize,
) -> Result<PostProof, Reject> {
    let mut replicas = Vec::with_capacity(keys.len());
    for key in keys {
        let rec = load_unit(store, key)?;
        replicas.push(SealedReplica {
            comm_r: rec.unit.statement.comm_r,
            len: rec.unit.statement.len,
        });
    }
    let prover =
        PostProver::new(replicas).map_err(|e| Reject::new(ErrorCode::Malformed, e.to_string()))?;
    let reader = UnitReader {
        units,
        keys: keys.to_vec(),
        maps: keys.iter().map(|_| OnceLock::new()).collect(),
        trees: keys.iter().map(|_| OnceLock::new()).collect(),
    };
    prover
        .prove(seed, chunks, &reader)
        .map_err(|e| Reject::internal("proving", e))
}

/// Every unit record in the store.
pub(crate) fn unit_records(store: &dyn Store) -> Result<Vec<UnitRecord>, Reject> {
    store
        .units()?
        .into_iter()
        .map(|(_, r)| UnitRecord::decode(&r))
        .collect()
}

/// Checks unit files against the store at start-up: records whose files are missing or the
/// wrong size are dropped (their shards become pending again if their plain files exist, and
/// are reported lost otherwise); files no record names are removed. Returns what was done.
pub fn check_units(
    store: &dyn Store,
    units: &Units,
    blobs: &crate::blobs::Blobs,
) -> io::Result<Vec<String>> {
    let mut report = Vec::new();
    let records = unit_records(store).map_err(|e| io::Error::other(e.detail))?;
    let mut known = std::collections::HashSet::new();
    for rec in records {
        let key = rec.key();
        let len = fs::metadata(units.replica_path(&key)).map(|m| m.len()).ok();
        let tree_ok = units.tree(&key).is_ok_and(|t| t.root() == key);
        if len == Some(rec.unit.statement.len) && tree_ok {
            known.insert(key);
            continue;
        }
        let ids = rec.member_ids();
        let err = |e: crate::store::StoreError| io::Error::other(e.to_string());
        store.remove_unit(&key, &ids).map_err(err)?;
        units.remove(&key)?;
        for id in &ids {
            if store.shard(id).map_err(err)?.is_some() && !blobs.data_path(id).exists() {
                store.drop_shard(id).map_err(err)?;
                report.push(format!(
                    "{id}: sealed unit damaged and no plain copy; dropped"
                ));
            }
        }
        report.push(format!(
            "unit {}: replica {len:?} bytes (want {}), tree ok {tree_ok}; dropped",
            hex::encode(&key[..8]),
            rec.unit.statement.len
        ));
    }
    for (path, key) in units.list()? {
        if !key.is_some_and(|k| known.contains(&k)) {
            fs::remove_file(&path)?;
            report.push(format!("{}: no unit record; removed", path.display()));
        }
    }
    Ok(report)
}
