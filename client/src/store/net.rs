//! A shard store over storage nodes on QUIC: placement by rendezvous hashing, verified reads,
//! dead nodes skipped.
//!
//! Placement is a pure function of the shard id and the known nodes: each node's score for a
//! shard is `BLAKE3(shard id ‖ node id)`, and a segment's k + m shards go to the best-scoring
//! nodes, one shard per node while there are enough nodes. The manifest records where each
//! shard went as a hint; a reader asks the hinted node first, then the next candidates in
//! score order. A node that fails to connect is skipped for [`DEAD_FOR`] so that a dead node
//! costs one timeout, not one per shard; the reassembly code then rebuilds around it.
//!
//! References: a node keeps a shard while some owner holds it, and an owner holds it once per
//! *tag*. New shards are stored under an upload tag (stable for one owner and source, so a
//! resumed put finds its earlier references); [`NetStore::commit`] then adds a reference under the
//! dataset's id to every shard the dataset names (reused ones of an earlier version too) and
//! releases the upload tag. `rm` releases the dataset's tag only.

use std::{
    collections::HashMap,
    ops::Range,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use granary_protocol::{
    NodeAddr, NodeId, SecretKey,
    message::{DeleteOutcome, NodeInfo, RefTag, StoreOutcome, TagOutcome},
};

use super::{Answers, FetchError, PutShard, ShardLoc, ShardStore, StoreError};
use crate::{
    ids::{DatasetId, ShardId},
    net::{NodeClient, NodePool, RequestError, client_endpoint},
    read::Dataset,
};

/// How long a node that failed is skipped.
pub const DEAD_FOR: Duration = Duration::from_secs(30);
/// Bound on connecting to a node (until [`ConnectClock`] knows better).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Never give up on a connect sooner than this.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// Connects that must succeed before [`ConnectClock`] shortens the bound.
const CONNECT_WARMUP: u32 = 2;
/// Bound on one shard request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one shard read before the node is treated as down and the read routed around it
/// (until enough reads were timed to know what is slow, see [`ReadClock`]).
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// A read this many times slower than the typical read of its size class is a stalled node.
const SLOW_FACTOR: f64 = 10.0;
/// Never give up on a read sooner than this.
const MIN_READ_TIMEOUT: Duration = Duration::from_millis(500);
/// A node whose hedged reads were abandoned (outrun by parity) this many times in a row is
/// skipped for [`DEAD_FOR`], so a frozen node stops costing even the hedge delay.
const STRIKES_TO_SKIP: u32 = 3;
/// Reads timed before the typical time is trusted.
const WARMUP_READS: u32 = 8;

/// Typical read times (exponentially weighted), for small and for large (≥ 1 MiB) reads: a
/// stalled node is given up on after [`SLOW_FACTOR`] times the typical time of its read (at least
/// [`MIN_READ_TIMEOUT`], at most [`READ_TIMEOUT`]), then skipped for [`DEAD_FOR`] while the
/// reader rebuilds from parity. So a node that freezes costs one short wait, not a stalled job.
#[derive(Debug, Default, Clone, Copy)]
struct ReadClock {
    typical: [f64; 2],
    samples: [u32; 2],
}

impl ReadClock {
    fn class(len: u64) -> usize {
        usize::from(len >= 1 << 20)
    }

    fn timeout(&self, len: u64) -> Duration {
        let c = Self::class(len);
        if self.samples[c] < WARMUP_READS {
            return READ_TIMEOUT;
        }
        Duration::from_secs_f64(self.typical[c] * SLOW_FACTOR).clamp(MIN_READ_TIMEOUT, READ_TIMEOUT)
    }

    /// How long to wait for a read before racing it with a spare: 3x the typical time of its
    /// size class (0.1-1 s; 0.5 s until warmed up).
    fn hedge_after(&self, len: u64) -> Duration {
        let c = Self::class(len);
        if self.samples[c] < WARMUP_READS {
            return READ_TIMEOUT / 4;
        }
        Duration::from_secs_f64(self.typical[c] * 3.0).clamp(MIN_HEDGE, READ_TIMEOUT / 2)
    }

    fn record(&mut self, len: u64, took: Duration) {
        let c = Self::class(len);
        let t = took.as_secs_f64();
        self.typical[c] = if self.samples[c] == 0 {
            t
        } else {
            0.9 * self.typical[c] + 0.1 * t
        };
        self.samples[c] = self.samples[c].saturating_add(1);
    }
}

/// Never hedge a read sooner than this.
const MIN_HEDGE: Duration = Duration::from_millis(100);
/// The hedge delay of a read: what the read clock learnt, bounded by 3x the time its first
/// answer took (at least [`MIN_HEDGE`]) once it has one.
fn hedge_bound(learnt: Duration, first_answer: Option<Duration>) -> Duration {
    first_answer.map_or(learnt, |t| learnt.min((t * 3).max(MIN_HEDGE)))
}

/// How often a wait bounded by a learning clock looks at the bound again.
const RECHECK: Duration = Duration::from_millis(50);

/// Awaits `fut` until `bound()` has passed since `started`, or `None` if it did first. The bound
/// is looked at again every [`RECHECK`], so a clock that learns meanwhile (other nodes
/// answering) shortens a wait already running.
async fn within<F: Future>(
    started: Instant,
    bound: impl Fn() -> Duration,
    fut: F,
) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        let left = bound().saturating_sub(started.elapsed());
        if left.is_zero() {
            return None;
        }
        if let Ok(r) = tokio::time::timeout(left.min(RECHECK), &mut fut).await {
            return Some(r);
        }
    }
}

/// How long connecting to a node may take: [`CONNECT_TIMEOUT`] until [`CONNECT_WARMUP`]
/// connects have succeeded, then [`SLOW_FACTOR`] times the slowest of them (at least
/// [`MIN_CONNECT_TIMEOUT`], at most [`CONNECT_TIMEOUT`]). A node that is gone (its UDP port
/// silent) then costs a quarter of a second, not two, at the start of a read; taking the slowest
/// success, not the typical one, keeps a far but live node from being taken for dead.
#[derive(Debug, Default, Clone, Copy)]
struct ConnectClock {
    successes: u32,
    slowest: Duration,
}

impl ConnectClock {
    fn timeout(&self) -> Duration {
        if self.successes < CONNECT_WARMUP {
            return CONNECT_TIMEOUT;
        }
        self.slowest
            .mul_f64(SLOW_FACTOR)
            .clamp(MIN_CONNECT_TIMEOUT, CONNECT_TIMEOUT)
    }

    fn record(&mut self, took: Duration) {
        self.successes = self.successes.saturating_add(1);
        self.slowest = self.slowest.max(took);
    }
}

/// What a hedged read must gather.
#[derive(Debug, Clone, Copy)]
enum Goal {
    /// Any `n` of the requests (a whole segment: any k of its k + m shards, data first).
    Any(usize),
    /// The first request, or else any `k` of the others (a byte range of one shard, or the same
    /// column of k other shards to rebuild it from).
    FirstOrAny(usize),
}

/// The state of a hedged read: which requests it wants started, and when it is done.
#[derive(Debug)]
struct Plan {
    goal: Goal,
    /// Spares started by hedge timeouts (beyond what the goal needs).
    spares: usize,
    /// [`Goal::FirstOrAny`]: the first request failed or was slow, so the column is read too.
    column: bool,
}

/// Indices of the requests still running.
fn running_set<T>(running: &[(usize, T)]) -> Vec<usize> {
    running.iter().map(|(i, _)| *i).collect()
}

impl Plan {
    fn new(goal: Goal) -> Self {
        Self {
            goal,
            spares: 0,
            column: false,
        }
    }

    fn ok(out: &[Option<Result<Vec<u8>, FetchError>>], from: usize) -> usize {
        out.iter()
            .skip(from)
            .filter(|r| matches!(r, Some(Ok(_))))
            .count()
    }

    /// Whether request `next` should start now, given the running ones and the answers so far.
    fn wants_more(
        &mut self,
        next: usize,
        running: &[usize],
        out: &[Option<Result<Vec<u8>, FetchError>>],
    ) -> bool {
        match self.goal {
            Goal::Any(n) => running.len() + Self::ok(out, 0) < n + self.spares,
            Goal::FirstOrAny(k) => {
                if next == 0 {
                    return true;
                }
                self.column |= matches!(out[0], Some(Err(_)));
                let others = running.iter().filter(|&&i| i > 0).count();
                self.column && others + Self::ok(out, 1) < k + self.spares
            }
        }
    }

    /// How many requests start before any hedge: the ones the read is meant to be served by.
    fn first_wave(&self) -> usize {
        match self.goal {
            Goal::Any(n) => n,
            Goal::FirstOrAny(_) => 1,
        }
    }

    /// A hedge timeout passed without the goal met.
    fn hedge(&mut self) {
        match self.goal {
            Goal::FirstOrAny(_) if !self.column => self.column = true,
            _ => self.spares += 1,
        }
    }

    fn met(&self, out: &[Option<Result<Vec<u8>, FetchError>>]) -> bool {
        match self.goal {
            Goal::Any(n) => Self::ok(out, 0) >= n,
            Goal::FirstOrAny(k) => {
                matches!(out.first(), Some(Some(Ok(_)))) || Self::ok(out, 1) >= k
            }
        }
    }
}

/// Where a shard of a segment should go, best first: the nodes in `ranked` (rendezvous order)
/// that hold no shard of the segment yet and are in a failure domain it does not use yet; then
/// unused nodes in a used domain; then nodes already holding one of its shards (only when there
/// are too few nodes); nodes known to be down come last. The first is the target, the rest
/// fallbacks if it fails.
fn placement_order(
    ranked: &[NodeAddr],
    used_nodes: &[NodeId],
    used_domains: &[String],
    domain: impl Fn(&NodeId) -> String,
    dead: &HashMap<NodeId, Instant>,
) -> Vec<NodeAddr> {
    let tier = |n: &NodeAddr| {
        if dead.contains_key(&n.id) {
            3
        } else if used_nodes.contains(&n.id) {
            2
        } else if used_domains.contains(&domain(&n.id)) {
            1
        } else {
            0
        }
    };
    let mut out = ranked.to_vec();
    // Stable: rendezvous order within a tier.
    out.sort_by_key(tier);
    out
}

/// Root-record holders a read asks at once (the best-ranked first: they are where
/// `put_root` stores the copies).
const ROOT_FETCH_WIDTH: usize = 3;
/// Nodes a read asks for a shard, in rendezvous order, once its hinted node failed (where a
/// repair may have put it), and candidates a repair stores it on.
const FALLBACK_CANDIDATES: usize = 6;

mod repair;
pub use repair::RepairReport;

/// A [`ShardStore`] spread over storage nodes.
#[derive(Debug)]
pub struct NetStore {
    rt: tokio::runtime::Runtime,
    pool: NodePool,
    nodes: Vec<NodeAddr>,
    owner: SecretKey,
    /// The reference tag new shards are stored under until the dataset is committed.
    upload_tag: RefTag,
    read_clock: Mutex<ReadClock>,
    connect_clock: Mutex<ConnectClock>,
    /// Each node's failure-domain label, asked once (on the first put) for placement.
    labels: std::sync::OnceLock<HashMap<NodeId, String>>,
    /// Hedged reads abandoned in a row per node; at [`STRIKES_TO_SKIP`] the node is skipped.
    strikes: Mutex<HashMap<NodeId, u32>>,
    dead: Mutex<HashMap<NodeId, Instant>>,
    /// Whether puts ask a node if it holds a shard before sending it (see [`Probe`]).
    probe: Probe,
    upload: UploadCounters,
}

/// Whether to ask a node if it already holds a shard before sending the shard's bytes.
///
/// Sending a shard to a node that holds it wastes its bytes: the node says so only once the
/// request arrives, and by then the body is on its way. Asking first (`TagShards`, which also
/// records the owner's reference when the node holds it) costs a round trip per shard instead.
/// A put starts out asking, because it may be resuming an interrupted one; after
/// [`PROBE_OFF_AFTER`] new shards in a row it stops (fresh data: no round trips wasted), and a
/// node answering `AlreadyHeld` to a body turns asking back on.
#[derive(Debug)]
struct Probe {
    on: AtomicBool,
    new_in_a_row: AtomicU32,
}

/// New shards in a row after which a put stops asking before sending.
const PROBE_OFF_AFTER: u32 = 16;

impl Probe {
    fn new() -> Self {
        Self {
            on: AtomicBool::new(true),
            new_in_a_row: AtomicU32::new(0),
        }
    }

    fn asking(&self) -> bool {
        self.on.load(Relaxed)
    }

    /// A node already held a shard: keep (or start) asking.
    fn held(&self) {
        self.new_in_a_row.store(0, Relaxed);
        self.on.store(true, Relaxed);
    }

    /// A node did not hold a shard.
    fn new_shard(&self) {
        if self.new_in_a_row.fetch_add(1, Relaxed) + 1 >= PROBE_OFF_AFTER {
            self.on.store(false, Relaxed);
        }
    }
}

#[derive(Debug, Default)]
struct UploadCounters {
    sent_shards: AtomicU64,
    sent_bytes: AtomicU64,
    held_shards: AtomicU64,
}

/// What a [`NetStore`]'s puts have sent so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadStats {
    /// Shards whose bytes were sent to a node.
    pub sent_shards: u64,
    /// Bytes of those shards (whether or not the node then kept them).
    pub sent_bytes: u64,
    /// Shards a node already held: it recorded the owner's reference and kept its copy (found
    /// by asking first, no bytes sent, or by the node's answer to bytes sent anyway).
    pub held_shards: u64,
}

/// Rendezvous score of `node` for `key`.
fn score(key: &[u8; 32], node: &NodeId) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(key);
    h.update(node.as_bytes());
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

/// A node's state as seen by [`NetStore::status`].
#[derive(Debug)]
pub struct NodeStatus {
    /// The node.
    pub node: NodeAddr,
    /// Its self-description, or why it could not be reached.
    pub info: Result<NodeInfo, String>,
}

impl NetStore {
    /// A store over `nodes`, writing as `owner`.
    pub fn new(nodes: Vec<NodeAddr>, owner: SecretKey) -> Result<Self, StoreError> {
        if nodes.is_empty() {
            return Err(StoreError::Unavailable(
                "no storage nodes configured (add them to the client config or pass --node)".into(),
            ));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("starting the I/O runtime: {e}")))?;
        let endpoint = {
            let _guard = rt.enter();
            client_endpoint(&owner).map_err(|e| StoreError::Unavailable(e.to_string()))?
        };
        let pool = NodePool::new(endpoint).with_timeout(REQUEST_TIMEOUT);
        Ok(Self {
            rt,
            pool,
            nodes,
            owner,
            upload_tag: [0; 32],
            read_clock: Mutex::new(ReadClock::default()),
            connect_clock: Mutex::new(ConnectClock::default()),
            labels: std::sync::OnceLock::new(),
            strikes: Mutex::new(HashMap::new()),
            dead: Mutex::new(HashMap::new()),
            probe: Probe::new(),
            upload: UploadCounters::default(),
        })
    }

    /// Stores new shards under `tag` (see [`NetStore::commit`]); resuming an upload needs the
    /// same tag, so derive it from what identifies the upload (owner and source).
    pub fn with_upload_tag(mut self, tag: RefTag) -> Self {
        self.upload_tag = tag;
        self
    }

    /// A node already held a shard this put was storing: counted, and puts keep asking first.
    fn held_shard(&self) {
        self.probe.held();
        self.upload.held_shards.fetch_add(1, Relaxed);
    }

    /// What this store's puts have sent so far.
    pub fn upload_stats(&self) -> UploadStats {
        UploadStats {
            sent_shards: self.upload.sent_shards.load(Relaxed),
            sent_bytes: self.upload.sent_bytes.load(Relaxed),
            held_shards: self.upload.held_shards.load(Relaxed),
        }
    }

    /// The key this store writes as.
    pub fn owner(&self) -> &SecretKey {
        &self.owner
    }

    /// The nodes this store knows.
    pub fn nodes(&self) -> &[NodeAddr] {
        &self.nodes
    }

    /// Nodes ranked for `key`, best first, live ones before ones recently seen dead.
    fn ranked(&self, key: &[u8; 32], dead: &HashMap<NodeId, Instant>) -> Vec<NodeAddr> {
        let mut v = self.nodes.clone();
        v.sort_by_key(|n| std::cmp::Reverse(score(key, &n.id)));
        v.sort_by_key(|n| dead.contains_key(&n.id));
        v
    }

    fn dead_set(&self) -> HashMap<NodeId, Instant> {
        let mut d = self.dead.lock().unwrap_or_else(|e| e.into_inner());
        d.retain(|_, t| t.elapsed() < DEAD_FOR);
        d.clone()
    }

    fn mark_dead(&self, id: NodeId) {
        self.pool.evict(&id);
        self.dead
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Instant::now());
    }

    /// Runs `f` on this store's I/O runtime.
    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Each node's failure-domain label (from `NodeInfo`, asked of all nodes at once the first
    /// time). A node that does not answer is a domain of its own.
    async fn labels(&self) -> &HashMap<NodeId, String> {
        if let Some(l) = self.labels.get() {
            return l;
        }
        let infos = futures_join_all(self.nodes.iter().map(|node| async move {
            let client = self.client(node).await.ok()?;
            let info = tokio::time::timeout(READ_TIMEOUT, client.info())
                .await
                .ok()?
                .ok()?;
            Some((node.id, info.label))
        }))
        .await;
        let _ = self.labels.set(infos.into_iter().flatten().collect());
        self.labels.get().expect("set just above")
    }

    /// The failure domain of `id`, given `labels` (unknown nodes: their own).
    fn domain_of(labels: &HashMap<NodeId, String>, id: &NodeId) -> String {
        labels
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("node:{id}"))
    }

    /// Drops the pooled connection to `node` (the next use dials again).
    pub(crate) fn forget(&self, node: &NodeAddr) {
        self.pool.evict(&node.id);
    }

    /// A connection to `node` (pooled), or why not.
    pub(crate) async fn connect(&self, node: &NodeAddr) -> Result<NodeClient, String> {
        self.client(node).await
    }

    async fn client(&self, node: &NodeAddr) -> Result<NodeClient, String> {
        let bound = || {
            self.connect_clock
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .timeout()
        };
        let started = Instant::now();
        match within(started, bound, self.pool.get(node.addr, node.id)).await {
            Some(Ok(c)) => {
                self.connect_clock
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(started.elapsed());
                Ok(c)
            }
            Some(Err(e)) => {
                self.mark_dead(node.id);
                Err(format!("{}: {e}", node.id.fmt_short()))
            }
            None => {
                self.mark_dead(node.id);
                Err(format!("{}: connect timed out", node.id.fmt_short()))
            }
        }
    }

    /// Stores one shard on the first node of `candidates` that takes it (asking first whether
    /// it holds it while [`Probe`] says so).
    async fn put_one(
        &self,
        id: ShardId,
        bytes: Bytes,
        candidates: &[NodeAddr],
    ) -> Result<NodeId, StoreError> {
        let mut errors = Vec::new();
        for node in candidates {
            let client = match self.client(node).await {
                Ok(c) => c,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            // Either way the node records this owner's reference, so another owner's `rm`
            // cannot delete our data.
            if self.probe.asking() {
                match client
                    .tag_shards(&self.owner, self.upload_tag, &[id.as_hash()])
                    .await
                {
                    Ok(o) if o.first() == Some(&TagOutcome::Tagged) => {
                        self.held_shard();
                        return Ok(node.id);
                    }
                    Ok(_) => self.probe.new_shard(),
                    Err(e) if e.is_unreachable() => {
                        self.mark_dead(node.id);
                        errors.push(format!("{}: {e}", node.id.fmt_short()));
                        continue;
                    }
                    // Not fatal: storing says what is wrong, or works.
                    Err(_) => {}
                }
            }
            self.upload.sent_shards.fetch_add(1, Relaxed);
            self.upload
                .sent_bytes
                .fetch_add(bytes.len() as u64, Relaxed);
            match client
                .store_shard(&self.owner, self.upload_tag, id.as_hash(), bytes.clone())
                .await
            {
                Ok(outcome) => {
                    if outcome == StoreOutcome::AlreadyHeld {
                        self.held_shard();
                    }
                    return Ok(node.id);
                }
                Err(e) if e.is_unreachable() => {
                    self.mark_dead(node.id);
                    errors.push(format!("{}: {e}", node.id.fmt_short()));
                }
                Err(e) => errors.push(format!("{}: {e}", node.id.fmt_short())),
            }
        }
        Err(StoreError::Unavailable(format!(
            "no node took shard {id}: {}",
            errors.join("; ")
        )))
    }

    async fn read_one(&self, shard: &ShardLoc, range: Range<u64>) -> Result<Vec<u8>, FetchError> {
        // The manifest says where the shard was put: ask that node first. If it fails (or there
        // is no hint), ask the shard's next rendezvous candidates, where `granary repair` puts a
        // rebuilt shard, whether they hold it (all at once: one round trip), then fetch from
        // those that do. Nodes known to be down are skipped, so a dead holder costs no wait.
        let dead = self.dead_set();
        let hinted = shard
            .hint
            .and_then(|h| self.nodes.iter().find(|n| n.id.as_bytes() == &h).copied());
        let mut reasons = Vec::new();
        if let Some(node) = hinted {
            match self.fetch_from(&node, shard, range.clone(), &dead).await {
                Ok(b) => return Ok(b),
                Err(Ok(why)) => reasons.push(why),
                Err(Err(fatal)) => return Err(fatal),
            }
        }
        let others: Vec<NodeAddr> = self
            .ranked(&shard.id.0, &dead)
            .into_iter()
            .filter(|n| Some(n.id) != hinted.map(|h| h.id) && !dead.contains_key(&n.id))
            .take(FALLBACK_CANDIDATES)
            .collect();
        let held = futures_join_all(others.iter().map(|node| async move {
            let client = self.client(node).await.ok()?;
            let held = client.has_shards(&[shard.id.as_hash()]).await.ok()?;
            held.first().copied().filter(|h| *h)
        }))
        .await;
        for (node, h) in others.iter().zip(held) {
            if h.is_none() {
                continue;
            }
            match self.fetch_from(node, shard, range.clone(), &dead).await {
                Ok(b) => return Ok(b),
                Err(Ok(why)) => reasons.push(why),
                Err(Err(fatal)) => return Err(fatal),
            }
        }
        if reasons.is_empty() {
            reasons.push(format!(
                "not held by any of its {} next candidates",
                others.len()
            ));
        }
        Err(FetchError::Unavailable {
            id: shard.id,
            reason: reasons.join("; "),
        })
    }

    /// Fetches `range` of `shard` from `node`: the bytes, `Err(Ok(why))` to try elsewhere, or
    /// `Err(Err(_))` when the bytes came back wrong (the caller treats the shard as corrupt).
    async fn fetch_from(
        &self,
        node: &NodeAddr,
        shard: &ShardLoc,
        range: Range<u64>,
        dead: &HashMap<NodeId, Instant>,
    ) -> Result<Vec<u8>, Result<String, FetchError>> {
        // A node that failed recently is not waited for again: the reader rebuilds around it.
        if dead.contains_key(&node.id) {
            return Err(Ok(format!("{}: down", node.id.fmt_short())));
        }
        let client = self.client(node).await.map_err(Ok)?;
        // A node that does not answer in time is treated as down, so a killed or stalled node
        // costs one timeout, not a stalled read: the reader rebuilds from parity.
        let len = range.end.min(shard.len).saturating_sub(range.start);
        let clock = || self.read_clock.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        let fetched = within(
            started,
            || clock().timeout(len),
            client.fetch_range(shard.id.as_hash(), range.clone()),
        )
        .await
        .unwrap_or(Err(RequestError::Timeout));
        if fetched.is_ok() {
            clock().record(len, started.elapsed());
            self.strikes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&node.id);
        }
        match fetched {
            Ok(b) if b.len() as u64 == range.end - range.start => Ok(b),
            Ok(b) => Err(Ok(format!(
                "{}: short read ({} bytes)",
                node.id.fmt_short(),
                b.len()
            ))),
            Err(RequestError::Verify(v)) => {
                // QUIC authenticates every packet, so these bytes left the node wrong, and a
                // node re-verifies what it reads before serving it: it is lying or broken. Not
                // asked again for a while (the reader rebuilds from parity instead).
                self.mark_dead(node.id);
                Err(Err(FetchError::Corrupt {
                    id: shard.id,
                    source: v,
                }))
            }
            Err(e) if e.is_unreachable() => {
                self.mark_dead(node.id);
                Err(Ok(format!("{}: {e}", node.id.fmt_short())))
            }
            Err(e) => Err(Ok(format!("{}: {e}", node.id.fmt_short()))),
        }
    }

    /// Hedged reads ([`ShardStore::read_any`], [`ShardStore::read_first_or_any`]): requests
    /// start as `goal` needs them, a failure starts a replacement, and every
    /// [`ReadClock::hedge_after`] that passes without the goal met starts a spare, so a slow node
    /// is raced by parity instead of being waited for.
    async fn read_hedged(&self, reqs: &[(ShardLoc, Range<u64>)], goal: Goal) -> Answers {
        use std::{future::Future, pin::Pin, task::Poll};
        type Running<'a> = Vec<(
            usize,
            Pin<Box<dyn Future<Output = Result<Vec<u8>, FetchError>> + Send + 'a>>,
        )>;
        let mut out: Answers = (0..reqs.len()).map(|_| None).collect();
        let start = |i: usize| -> (usize, Pin<Box<dyn Future<Output = _> + Send + '_>>) {
            (i, Box::pin(self.read_one(&reqs[i].0, reqs[i].1.clone())))
        };
        let mut running: Running<'_> = Vec::new();
        let mut next = 0;
        let len = reqs
            .first()
            .map_or(0, |(l, r)| r.end.min(l.len) - r.start.min(l.len));
        // The hedge delay is looked at again every [`RECHECK`]: reads finishing meanwhile teach
        // the clock, and the first answer of this read bounds it at 3x its time (at least
        // [`MIN_HEDGE`]), so the first reads of a job do not wait out the warm-up delay for a
        // node that is gone while its siblings have long answered.
        let wave = Instant::now();
        let mut first_answer: Option<Duration> = None;
        let hedge_after = |first_answer: Option<Duration>| {
            let learnt = self
                .read_clock
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .hedge_after(len);
            hedge_bound(learnt, first_answer)
        };
        let mut since = wave;
        let mut hedge = Box::pin(tokio::time::sleep(hedge_after(None).min(RECHECK)));
        let mut plan = Plan::new(goal);
        loop {
            while next < reqs.len() && plan.wants_more(next, &running_set(&running), &out) {
                running.push(start(next));
                next += 1;
            }
            if plan.met(&out) || running.is_empty() {
                break;
            }
            let event = std::future::poll_fn(|cx| {
                for (k, (i, f)) in running.iter_mut().enumerate() {
                    if let Poll::Ready(r) = f.as_mut().poll(cx) {
                        return Poll::Ready(Some((k, *i, r)));
                    }
                }
                if hedge.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await;
            match event {
                Some((k, i, r)) => {
                    drop(running.swap_remove(k));
                    if r.is_ok() && first_answer.is_none() {
                        first_answer = Some(wave.elapsed());
                    }
                    out[i] = Some(r);
                }
                None => {
                    let bound = hedge_after(first_answer);
                    if since.elapsed() >= bound {
                        plan.hedge();
                        since = Instant::now();
                    }
                    let left = bound.saturating_sub(since.elapsed());
                    hedge = Box::pin(tokio::time::sleep(
                        left.clamp(Duration::from_millis(1), RECHECK),
                    ));
                }
            }
        }
        // First-wave requests still running were outrun by parity: a strike for their (hinted)
        // node. Spares still running only lost a race they were started to win.
        for (i, _) in running.iter().filter(|(i, _)| *i < plan.first_wave()) {
            let Some(hint) = reqs[*i].0.hint else {
                continue;
            };
            let Some(node) = self.nodes.iter().find(|n| n.id.as_bytes() == &hint) else {
                continue;
            };
            let mut strikes = self.strikes.lock().unwrap_or_else(|e| e.into_inner());
            let n = strikes.entry(node.id).or_default();
            *n += 1;
            if *n >= STRIKES_TO_SKIP {
                strikes.remove(&node.id);
                drop(strikes);
                tracing::debug!(node = %node.id.fmt_short(), "outrun by parity repeatedly; skipping it");
                self.mark_dead(node.id);
            }
        }
        out
    }

    /// Asks every node for its info.
    pub fn status(&self) -> Vec<NodeStatus> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            for node in &self.nodes {
                let info = match self.client(node).await {
                    Ok(c) => match tokio::time::timeout(READ_TIMEOUT, c.info()).await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => {
                            self.mark_dead(node.id);
                            Err("no answer (timed out)".into())
                        }
                    },
                    Err(e) => Err(e),
                };
                out.push(NodeStatus { node: *node, info });
            }
            out
        })
    }

    /// Runs `f` on every reachable node with the ids of `ids` it holds (asked in batches);
    /// returns the sum of what `f` returns and the nodes that could not be reached.
    async fn on_holders<F, Fut>(
        &self,
        ids: &[ShardId],
        f: F,
    ) -> Result<(u64, Vec<String>), StoreError>
    where
        F: Fn(NodeClient, Vec<blake3::Hash>) -> Fut,
        Fut: Future<Output = Result<u64, RequestError>>,
    {
        let hashes: Vec<blake3::Hash> = ids.iter().map(|i| i.as_hash()).collect();
        let mut total = 0;
        let mut unreachable = Vec::new();
        for node in &self.nodes {
            let client = match self.client(node).await {
                Ok(c) => c,
                Err(e) => {
                    unreachable.push(e);
                    continue;
                }
            };
            let rejected = |e: RequestError| StoreError::Rejected {
                node: node.id.to_string(),
                reason: e.to_string(),
            };
            let held = client.has_shards(&hashes).await.map_err(rejected)?;
            let mine: Vec<blake3::Hash> = hashes
                .iter()
                .zip(held)
                .filter(|(_, h)| *h)
                .map(|(id, _)| *id)
                .collect();
            if !mine.is_empty() {
                total += f(client, mine).await.map_err(rejected)?;
            }
        }
        Ok((total, unreachable))
    }

    /// Releases this owner's `tag` references to `ids` on every node that has them (the bytes
    /// go with a shard's last reference); returns how many references were released.
    pub fn delete(&self, tag: RefTag, ids: &[ShardId]) -> Result<u64, StoreError> {
        self.rt.block_on(async {
            let (removed, unreachable) = self
                .on_holders(ids, |client, mine| async move {
                    let outcomes = client.delete_shards(&self.owner, tag, &mine).await?;
                    Ok(outcomes
                        .iter()
                        .filter(|o| !matches!(o, DeleteOutcome::NotOwner))
                        .count() as u64)
                })
                .await?;
            if removed == 0 && !unreachable.is_empty() {
                return Err(StoreError::Unavailable(unreachable.join("; ")));
            }
            Ok(removed)
        })
    }

    /// Commits a stored dataset: every shard it names (data, manifest, root record) gets this
    /// owner's reference under the dataset's own id on every node holding it, and only then the
    /// upload's tag is released. So `rm` of one dataset (or version) releases exactly its own
    /// references and never drops shards another dataset of the same owner still names.
    pub fn commit(&self, ds: &Dataset) -> Result<CommitReport, StoreError> {
        let ids = dataset_shards(ds);
        let tag = ds.capability.id.0;
        let upload = self.upload_tag;
        self.rt.block_on(async {
            let (tagged, unreachable) = self
                .on_holders(&ids, |client, mine| async move {
                    let outcomes = client.tag_shards(&self.owner, tag, &mine).await?;
                    Ok(outcomes
                        .iter()
                        .filter(|o| matches!(o, TagOutcome::Tagged))
                        .count() as u64)
                })
                .await?;
            let mut report = CommitReport {
                shards: ids.len() as u64,
                tagged,
                unreachable,
            };
            if upload != tag && report.unreachable.is_empty() {
                // Every holder carries the dataset's tag now: the upload's may go.
                self.on_holders(&ids, |client, mine| async move {
                    client.delete_shards(&self.owner, upload, &mine).await?;
                    Ok(0)
                })
                .await?;
            } else if !report.unreachable.is_empty() {
                report.unreachable.push(
                    "upload references kept (nothing is lost; they are released by the next put of the same source)".into(),
                );
            }
            Ok(report)
        })
    }
}

/// What [`NetStore::commit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitReport {
    /// Distinct shards the dataset names.
    pub shards: u64,
    /// References recorded under the dataset's id (one per holding node and shard).
    pub tagged: u64,
    /// Nodes that could not be reached (their copies keep only the upload's references).
    pub unreachable: Vec<String>,
}

/// Every distinct shard a dataset names: data and manifest segments and the root record.
pub fn dataset_shards(ds: &Dataset) -> Vec<ShardId> {
    let mut ids: Vec<ShardId> = ds
        .manifest()
        .segments
        .iter()
        .chain(&ds.root.manifest_segments)
        .flat_map(|s| s.shards.iter().copied())
        .collect();
    ids.push(ShardId(ds.capability.id.0));
    ids.sort();
    ids.dedup();
    ids
}

impl ShardStore for NetStore {
    fn put_segment(&self, shards: &[PutShard<'_>]) -> Result<Vec<Option<[u8; 32]>>, StoreError> {
        self.rt.block_on(async {
            // Distinct nodes, in distinct failure domains where there are enough, for the
            // shards of a segment.
            let labels = self.labels().await;
            let mut used: Vec<NodeId> = Vec::new();
            let mut domains: Vec<String> = Vec::new();
            let mut plans = Vec::new();
            let dead = self.dead_set();
            for s in shards {
                let ranked = self.ranked(&s.id.0, &dead);
                let cands = placement_order(
                    &ranked,
                    &used,
                    &domains,
                    |id| Self::domain_of(labels, id),
                    &dead,
                );
                if let Some(first) = cands.first() {
                    used.push(first.id);
                    domains.push(Self::domain_of(labels, &first.id));
                }
                plans.push((s.id, s.bytes.clone(), cands));
            }
            let futs = plans
                .iter()
                .map(|(id, bytes, cands)| self.put_one(*id, bytes.clone(), cands));
            let results = futures_join_all(futs).await;
            results
                .into_iter()
                .map(|r| r.map(|n| Some(*n.as_bytes())))
                .collect()
        })
    }

    fn put_root(&self, id: &DatasetId, bytes: &[u8], copies: usize) -> Result<(), StoreError> {
        self.rt.block_on(async {
            let ranked = self.ranked(&id.0, &self.dead_set());
            let bytes = Bytes::copy_from_slice(bytes);
            let mut ok = 0;
            let mut last_err = None;
            for node in &ranked {
                if ok == copies {
                    break;
                }
                match self
                    .put_one(ShardId(id.0), bytes.clone(), std::slice::from_ref(node))
                    .await
                {
                    Ok(_) => ok += 1,
                    Err(e) => last_err = Some(e),
                }
            }
            match (ok, last_err) {
                (0, Some(e)) => Err(e),
                (0, None) => Err(StoreError::Unavailable(
                    "no node for the root record".into(),
                )),
                _ => Ok(()),
            }
        })
    }

    fn get_root(&self, id: &DatasetId) -> Result<Vec<u8>, FetchError> {
        let sid = ShardId(id.0);
        let dead = self.dead_set();
        let candidates: Vec<NodeAddr> = self
            .ranked(&id.0, &dead)
            .into_iter()
            .filter(|n| !dead.contains_key(&n.id))
            .collect();
        let fetch = |node: NodeAddr| async move {
            let client = self.client(&node).await?;
            match tokio::time::timeout(READ_TIMEOUT, client.fetch_shard(id.as_hash())).await {
                Ok(Ok(b)) => Ok(b),
                Ok(Err(e)) => Err(format!("{}: {e}", node.id.fmt_short())),
                Err(_) => {
                    self.mark_dead(node.id);
                    Err(format!("{}: timed out", node.id.fmt_short()))
                }
            }
        };
        self.rt.block_on(async {
            // The root record is on the best-ranked nodes: ask them at once, take the first
            // answer, so one dead node does not delay opening a dataset.
            let mut reasons = Vec::new();
            for group in candidates.chunks(ROOT_FETCH_WIDTH) {
                match first_ok(group.iter().map(|n| fetch(*n))).await {
                    Ok(b) => return Ok(b),
                    Err(mut r) => reasons.append(&mut r),
                }
            }
            if !reasons.is_empty()
                && reasons
                    .iter()
                    .all(|r| r.contains("not found") || r.contains("NotFound"))
            {
                return Err(FetchError::NotFound(sid));
            }
            Err(FetchError::Unavailable {
                id: sid,
                reason: if reasons.is_empty() {
                    "every node is down".into()
                } else {
                    reasons.join("; ")
                },
            })
        })
    }

    fn read_range(&self, shard: &ShardLoc, range: Range<u64>) -> Result<Vec<u8>, FetchError> {
        self.rt.block_on(self.read_one(shard, range))
    }

    fn read_ranges(&self, reqs: &[(ShardLoc, Range<u64>)]) -> Vec<Result<Vec<u8>, FetchError>> {
        self.rt.block_on(futures_join_all(
            reqs.iter().map(|(l, r)| self.read_one(l, r.clone())),
        ))
    }

    fn read_any(&self, reqs: &[(ShardLoc, Range<u64>)], need: usize) -> Answers {
        self.rt.block_on(self.read_hedged(reqs, Goal::Any(need)))
    }

    fn read_first_or_any(&self, groups: &[Vec<(ShardLoc, Range<u64>)>], k: usize) -> Vec<Answers> {
        self.rt.block_on(futures_join_all(
            groups
                .iter()
                .map(|g| self.read_hedged(g, Goal::FirstOrAny(k))),
        ))
    }

    /// Three segments in flight. Measured on a 6-node loopback devnet, 1 GiB get: 1 thread
    /// 301–320 MB/s, 2: 340, 3: 374, 4: 379 (before the endpoints' UDP buffers were enlarged,
    /// datagram drops made more threads slower: 131 vs 75 MB/s).
    fn read_ahead_threads(&self) -> usize {
        3
    }

    fn has_shards(&self, ids: &[ShardId]) -> Result<Vec<bool>, StoreError> {
        let mut out = vec![false; ids.len()];
        self.rt.block_on(async {
            for node in &self.nodes {
                let Ok(client) = self.client(node).await else {
                    continue;
                };
                let hashes: Vec<blake3::Hash> = ids.iter().map(|i| i.as_hash()).collect();
                if let Ok(held) = client.has_shards(&hashes).await {
                    for (o, h) in out.iter_mut().zip(held) {
                        *o |= h;
                    }
                }
            }
        });
        Ok(out)
    }
}

/// Runs futures concurrently on the current task and collects their outputs in order.
pub(crate) async fn futures_join_all<F: Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = (0..futs.len()).map(|_| None).collect();
    let mut futs: Vec<Option<_>> = futs.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, slot) in futs.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        outs[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outs.into_iter().flatten().collect()
}

/// Runs futures concurrently and returns the first `Ok`, or every error if none succeeds.
async fn first_ok<T, F: Future<Output = Result<T, String>>>(
    futs: impl IntoIterator<Item = F>,
) -> Result<T, Vec<String>> {
    let mut futs: Vec<Option<_>> = futs.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut errors = Vec::new();
    std::future::poll_fn(|cx| {
        for slot in futs.iter_mut() {
            if let Some(f) = slot
                && let std::task::Poll::Ready(r) = f.as_mut().poll(cx)
            {
                *slot = None;
                match r {
                    Ok(v) => return std::task::Poll::Ready(Ok(v)),
                    Err(e) => errors.push(e),
                }
            }
        }
        if futs.iter().all(Option::is_none) {
            std::task::Poll::Ready(Err(std::mem::take(&mut errors)))
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// Parses `<id>@<addr>` strings.
pub fn parse_nodes(list: &[String]) -> Result<Vec<NodeAddr>, String> {
    list.iter()
        .map(|s| {
            s.parse::<NodeAddr>()
                .map_err(|e| format!("node {s:?}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Out = Answers;

    /// Starts requests as `plan` wants them, with `running` and answers `out`; returns how many.
    fn top_up(plan: &mut Plan, next: &mut usize, running: &mut Vec<usize>, out: &Out) -> usize {
        let before = *next;
        while *next < out.len() && plan.wants_more(*next, running, out) {
            running.push(*next);
            *next += 1;
        }
        *next - before
    }

    fn answer(running: &mut Vec<usize>, out: &mut Out, i: usize, ok: bool) {
        running.retain(|&r| r != i);
        out[i] = Some(if ok {
            Ok(Vec::new())
        } else {
            Err(FetchError::NotFound(ShardId([0; 32])))
        });
    }

    #[test]
    fn placement_prefers_unused_nodes_in_unused_domains_in_rendezvous_order() {
        let node = |b: u8| NodeAddr {
            id: SecretKey::from_bytes(&[b; 32]).public(),
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        let ranked: Vec<NodeAddr> = (1..=6).map(node).collect();
        // Nodes 1-2 in zone a, 3-4 in b, 5-6 in c.
        let zone = |id: &NodeId| {
            let i = ranked.iter().position(|n| n.id == *id).unwrap();
            ["a", "b", "c"][i / 2].to_string()
        };
        let order = |used: &[NodeId], domains: &[&str]| -> Vec<usize> {
            let domains: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
            placement_order(&ranked, used, &domains, zone, &HashMap::new())
                .iter()
                .map(|n| ranked.iter().position(|r| r.id == n.id).unwrap() + 1)
                .collect()
        };
        assert_eq!(order(&[], &[]), [1, 2, 3, 4, 5, 6]);
        // Node 1 (zone a) holds a shard: zones b and c first, then node 2, node 1 last.
        assert_eq!(order(&[ranked[0].id], &["a"]), [3, 4, 5, 6, 2, 1]);
        // Every zone used: the unused nodes, then the used ones, each in rendezvous order.
        let used = [ranked[0].id, ranked[2].id, ranked[4].id];
        assert_eq!(order(&used, &["a", "b", "c"]), [2, 4, 6, 1, 3, 5]);
    }

    #[test]
    fn any_of_plan_starts_k_then_one_per_failure_or_hedge() {
        let (mut out, mut running, mut next): (Out, _, _) =
            ((0..6).map(|_| None).collect(), vec![], 0);
        let mut plan = Plan::new(Goal::Any(4));
        assert_eq!(
            top_up(&mut plan, &mut next, &mut running, &out),
            4,
            "the data shards"
        );
        answer(&mut running, &mut out, 0, true);
        answer(&mut running, &mut out, 1, false);
        assert_eq!(
            top_up(&mut plan, &mut next, &mut running, &out),
            1,
            "a failure is replaced"
        );
        plan.hedge();
        assert_eq!(
            top_up(&mut plan, &mut next, &mut running, &out),
            1,
            "a hedge adds a spare"
        );
        assert!(!plan.met(&out));
        for i in [2, 3, 4] {
            answer(&mut running, &mut out, i, true);
        }
        assert!(plan.met(&out), "any 4 answers");
    }

    #[test]
    fn first_or_column_plan_races_the_piece_with_k_others() {
        let fresh = || -> (Out, Vec<usize>, usize) { ((0..6).map(|_| None).collect(), vec![], 0) };
        // The piece answers: nothing else was ever asked.
        let (mut out, mut running, mut next) = fresh();
        let mut plan = Plan::new(Goal::FirstOrAny(4));
        assert_eq!(
            top_up(&mut plan, &mut next, &mut running, &out),
            1,
            "the piece alone"
        );
        answer(&mut running, &mut out, 0, true);
        assert!(plan.met(&out));
        // The piece is slow: a hedge starts the column from 4 others; they win.
        let (mut out, mut running, mut next) = fresh();
        let mut plan = Plan::new(Goal::FirstOrAny(4));
        top_up(&mut plan, &mut next, &mut running, &out);
        plan.hedge();
        assert_eq!(
            top_up(&mut plan, &mut next, &mut running, &out),
            4,
            "the column"
        );
        answer(&mut running, &mut out, 1, false);
        assert_eq!(
            top_up(&mut plan, &mut next, &mut running, &out),
            1,
            "a failure is replaced"
        );
        for i in [2, 3, 4] {
            answer(&mut running, &mut out, i, true);
        }
        assert!(
            !plan.met(&out),
            "3 of the column and a running piece are not enough"
        );
        answer(&mut running, &mut out, 5, true);
        assert!(plan.met(&out), "4 of the column");
        assert_eq!(running, vec![0], "the slow piece is left behind (outrun)");
        // The piece fails at once: the column starts without waiting for a hedge.
        let (mut out, mut running, mut next) = fresh();
        let mut plan = Plan::new(Goal::FirstOrAny(4));
        top_up(&mut plan, &mut next, &mut running, &out);
        answer(&mut running, &mut out, 0, false);
        assert_eq!(top_up(&mut plan, &mut next, &mut running, &out), 4);
    }

    #[test]
    fn a_first_answer_shortens_the_hedge_delay_never_below_the_floor() {
        let warmup = ReadClock::default().hedge_after(4 << 20);
        assert_eq!(hedge_bound(warmup, None), warmup, "nothing answered yet");
        assert_eq!(
            hedge_bound(warmup, Some(Duration::from_millis(60))),
            Duration::from_millis(180)
        );
        assert_eq!(
            hedge_bound(warmup, Some(Duration::from_millis(5))),
            MIN_HEDGE
        );
        // A slow first answer never lengthens what the clock learnt.
        assert_eq!(hedge_bound(warmup, Some(Duration::from_secs(1))), warmup);
    }

    #[test]
    fn connect_clock_bounds_by_the_slowest_success() {
        let mut c = ConnectClock::default();
        assert_eq!(c.timeout(), CONNECT_TIMEOUT, "no guess before warm-up");
        c.record(Duration::from_millis(3));
        assert_eq!(c.timeout(), CONNECT_TIMEOUT, "one success is not enough");
        c.record(Duration::from_millis(5));
        assert_eq!(c.timeout(), MIN_CONNECT_TIMEOUT, "10 x 5 ms, floored");
        // Pooled connections come back at once: they never shorten the bound.
        c.record(Duration::ZERO);
        c.record(Duration::from_millis(60));
        assert_eq!(c.timeout(), Duration::from_millis(600));
        // One far node (a 400 ms handshake) keeps the full bound for everyone.
        c.record(Duration::from_millis(400));
        assert_eq!(c.timeout(), CONNECT_TIMEOUT);
    }

    #[test]
    fn read_clock_learns_what_is_slow() {
        let mut c = ReadClock::default();
        assert_eq!(c.timeout(4 << 20), READ_TIMEOUT, "no guess before warm-up");
        for _ in 0..WARMUP_READS {
            c.record(4 << 20, Duration::from_millis(20));
            c.record(4096, Duration::from_millis(1));
        }
        assert_eq!(c.timeout(4 << 20), MIN_READ_TIMEOUT, "10 x 20 ms, floored");
        for _ in 0..50 {
            c.record(4 << 20, Duration::from_millis(120));
        }
        let t = c.timeout(4 << 20);
        assert!(
            t > Duration::from_millis(1000) && t <= READ_TIMEOUT,
            "{t:?}"
        );
        // Small reads keep their own clock.
        assert_eq!(c.timeout(4096), MIN_READ_TIMEOUT);
        // A load spike raises the bound up to the cap, never past it.
        for _ in 0..50 {
            c.record(4 << 20, Duration::from_secs(5));
        }
        assert_eq!(c.timeout(4 << 20), READ_TIMEOUT);
    }
}
