//! Proof-of-storage checks of a dataset's nodes (`granary verify CAP`).
//!
//! For each node the manifest says holds shards of the dataset, with fresh randomness per node:
//! 1. `SealInfo` for those shards: each is missing, waiting to be sealed, or sealed in a unit
//!    whose statement the node signed; each statement is checked (signature under the node id we
//!    dialled, layout hash, replica id derived from that node id: no Sybil copies).
//! 2. One seal proof per unit (`K` openings from a fresh seed): the replica really is this node's
//!    sealing of those shards, plaintext openings checked against our own shard ids.
//! 3. One storage challenge (`C` chunks from a fresh seed) over those units, timed from request
//!    to complete answer against the deadline; the answer is verified against the aggregate
//!    commitment we compute ourselves from the checked statements.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use granary_proofs::{
    challenge::{self, PostProver, SealedReplica},
    params, unit,
};
use granary_protocol::{NodeAddr, sealing::ShardSealState};
use serde::Serialize;

use crate::{ids::ShardId, read::Dataset, store::net::NetStore};

/// How hard to check.
#[derive(Debug, Clone, Copy)]
pub struct AuditOptions {
    /// Challenged chunks per node.
    pub chunks: u32,
    /// Seal-proof openings per unit (`K`); 0 skips seal proofs.
    pub openings: u32,
    /// Answer deadline for the challenge.
    pub deadline: Duration,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            chunks: params::DEFAULT_POST_CHALLENGES as u32,
            openings: params::default_seal_proof_openings() as u32,
            deadline: Duration::from_millis(params::DEFAULT_DEADLINE_MS),
        }
    }
}

/// The outcome for one node (also what an auditor's ledger records, by variant index: keep the
/// order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every held shard is sealed, proven and answered in time.
    Pass,
    /// Proofs verified but some shards are still waiting to be sealed (not provable yet).
    Pending,
    /// The challenge answer verified but arrived after the deadline.
    Late,
    /// A shard is missing or a proof, statement or signature is wrong.
    Fail,
    /// The node could not be reached.
    Offline,
}

impl Verdict {
    /// Lower-case name (as in JSON output).
    pub fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Pending => "pending",
            Self::Late => "late",
            Self::Fail => "fail",
            Self::Offline => "offline",
        }
    }
}

/// One node's audit.
#[derive(Debug, Clone, Serialize)]
pub struct NodeAudit {
    /// The node (`<id>@<addr>`).
    pub node: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Shards of the dataset the manifest places on this node.
    pub shards: usize,
    /// Of those, sealed and in a checked unit.
    pub sealed: usize,
    /// Of those, held but not sealed yet.
    pub pending: usize,
    /// Of those, not held.
    pub missing: usize,
    /// Units challenged.
    pub units: usize,
    /// Bytes in those units.
    pub unit_bytes: u64,
    /// Slowest seal proof, ms (request to verified).
    pub seal_proof_ms: Option<f64>,
    /// Challenge round trip, ms (request sent to whole answer received).
    pub challenge_ms: Option<f64>,
    /// Verifying the challenge answer, ms.
    pub verify_ms: Option<f64>,
    /// What went wrong, if anything.
    pub detail: Option<String>,
    /// Bytes of the asked shards that are sealed in the challenged units (what was proven).
    pub sealed_bytes: u64,
    /// Shards not held that the node never acknowledged holding ([`AuditMemory`]); not counted
    /// as missing.
    #[serde(skip_serializing_if = "is_zero")]
    pub unacknowledged: usize,
    /// Shards the node reported holding (waiting or sealed).
    #[serde(skip)]
    pub held: Vec<ShardId>,
    /// Units whose seal proof verified (now or, per [`AuditMemory`], before).
    #[serde(skip)]
    pub proven_units: Vec<[u8; 32]>,
    /// The node refused to prove anything to us (`Forbidden`): we own no data there and are
    /// not one of its auditors.
    #[serde(skip)]
    pub refused: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What an auditor that checks the same nodes every epoch remembers between audits.
#[derive(Debug, Default, Clone)]
pub struct AuditMemory {
    /// Units (by `comm_r`) whose seal proof already verified: not asked again.
    pub proven_units: HashSet<[u8; 32]>,
    /// Per node, the shards it once reported holding. When set, a shard the node does not hold
    /// counts as missing only if the node acknowledged it before; one it never acknowledged may
    /// never have been sent to it (the placement list comes from the data's owner), so it is
    /// reported as `unacknowledged` instead of failing the node.
    pub acknowledged: Option<HashMap<[u8; 32], HashSet<ShardId>>>,
}

/// Node id → shards of a dataset placed on it.
pub type Placement = BTreeMap<[u8; 32], Vec<ShardId>>;

/// Shard ids of the dataset (data and manifest segments), grouped by the node the manifest's
/// placement hints name. Shards without a hint are left out.
pub fn placed_shards(ds: &Dataset) -> Placement {
    group_by_node(
        ds.shard_hints()
            .into_iter()
            .filter_map(|(id, hint)| Some((hint?, id))),
    )
}

/// `(node, shard)` pairs as a [`Placement`], each node's shards sorted and deduplicated.
pub(crate) fn group_by_node(pairs: impl IntoIterator<Item = ([u8; 32], ShardId)>) -> Placement {
    let mut out = Placement::new();
    for (node, id) in pairs {
        out.entry(node).or_default().push(id);
    }
    for v in out.values_mut() {
        v.sort();
        v.dedup();
    }
    out
}

fn fresh_seed() -> Result<[u8; 32], String> {
    let mut s = [0u8; 32];
    getrandom::fill(&mut s).map_err(|e| format!("OS randomness: {e}"))?;
    Ok(s)
}

impl NetStore {
    /// Audits every node in `placed` (node id → its shards of the dataset), concurrently.
    pub fn audit(
        &self,
        placed: &BTreeMap<[u8; 32], Vec<ShardId>>,
        opts: AuditOptions,
    ) -> Vec<NodeAudit> {
        self.audit_with(placed, opts, &AuditMemory::default())
    }

    /// [`Self::audit`] for an auditor that remembers earlier audits (`memory`).
    pub fn audit_with(
        &self,
        placed: &BTreeMap<[u8; 32], Vec<ShardId>>,
        opts: AuditOptions,
        memory: &AuditMemory,
    ) -> Vec<NodeAudit> {
        self.for_each_placed(placed, |id, node, shards| async move {
            match node {
                Some(n) => self.audit_node(n, shards, opts, memory).await,
                None => NodeAudit {
                    node: hex::encode(id),
                    verdict: Verdict::Offline,
                    shards: shards.len(),
                    detail: Some("node not in the client configuration".into()),
                    ..empty()
                },
            }
        })
    }

    /// Runs `job` concurrently for every node in `placed`, with its address (`None`: not in
    /// the client configuration) and its shards; results in `placed` order.
    fn for_each_placed<'a, T, Fut: Future<Output = T>>(
        &'a self,
        placed: &'a BTreeMap<[u8; 32], Vec<ShardId>>,
        job: impl Fn(&'a [u8; 32], Option<NodeAddr>, &'a [ShardId]) -> Fut,
    ) -> Vec<T> {
        let known: HashMap<[u8; 32], NodeAddr> = self
            .nodes()
            .iter()
            .map(|n| (*n.id.as_bytes(), *n))
            .collect();
        self.block_on(crate::store::net::futures_join_all(
            placed
                .iter()
                .map(|(id, shards)| job(id, known.get(id).copied(), shards)),
        ))
    }

    /// Shards of `placed` sealed so far and still waiting, over the reachable nodes; the
    /// number of nodes that could not be asked.
    pub fn sealing_progress(&self, placed: &BTreeMap<[u8; 32], Vec<ShardId>>) -> SealingProgress {
        let answers = self.for_each_placed(placed, |_, node, shards| async move {
            let node = node.ok_or(())?;
            let client = self.connect(&node).await.map_err(|_| ())?;
            let ids: Vec<blake3::Hash> = shards.iter().map(|s| s.as_hash()).collect();
            client.seal_info(&ids).await.map_err(|_| ())
        });
        let mut p = SealingProgress::default();
        for r in answers {
            match r {
                Ok(info) => {
                    for s in info.shards {
                        match s {
                            ShardSealState::Sealed { .. } => p.sealed += 1,
                            ShardSealState::Pending => p.pending += 1,
                            ShardSealState::NotHeld => p.missing += 1,
                        }
                    }
                }
                Err(()) => p.unreachable += 1,
            }
        }
        p
    }

    /// Polls [`Self::sealing_progress`] until nothing is pending or `timeout` passes, calling
    /// `progress` after each poll.
    pub fn wait_sealed(
        &self,
        placed: &BTreeMap<[u8; 32], Vec<ShardId>>,
        timeout: Duration,
        mut progress: impl FnMut(&SealingProgress),
    ) -> SealingProgress {
        let start = Instant::now();
        loop {
            let p = self.sealing_progress(placed);
            progress(&p);
            if p.pending == 0 || start.elapsed() >= timeout {
                return p;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    async fn audit_node(
        &self,
        node: NodeAddr,
        shards: &[ShardId],
        opts: AuditOptions,
        memory: &AuditMemory,
    ) -> NodeAudit {
        let mut a = NodeAudit {
            node: node.to_string(),
            verdict: Verdict::Fail,
            shards: shards.len(),
            ..empty()
        };
        let client = match self.connect(&node).await {
            Ok(c) => c,
            Err(e) => {
                a.verdict = Verdict::Offline;
                a.detail = Some(e);
                return a;
            }
        };
        let fail = |mut a: NodeAudit, why: String| {
            a.verdict = Verdict::Fail;
            a.detail = Some(why);
            a
        };
        let ids: Vec<blake3::Hash> = shards.iter().map(|s| s.as_hash()).collect();
        let info = match client.seal_info(&ids).await {
            Ok(i) => i,
            // A pooled connection to a node that went away fails here, not at connect.
            Err(e) if e.is_unreachable() => {
                self.forget(&node);
                a.verdict = Verdict::Offline;
                a.detail = Some(format!("{}: {e}", node.id.fmt_short()));
                return a;
            }
            Err(e) => {
                a.refused = e.code() == Some(granary_protocol::ErrorCode::Forbidden);
                return fail(a, format!("seal info: {e}"));
            }
        };
        if info.shards.len() != ids.len() {
            return fail(
                a,
                "seal info answered for the wrong number of shards".into(),
            );
        }
        let acked = memory
            .acknowledged
            .as_ref()
            .map(|m| m.get(node.id.as_bytes()));
        let mut used = vec![false; info.units.len()];
        for (id, s) in shards.iter().zip(&info.shards) {
            match s {
                ShardSealState::NotHeld => match acked {
                    Some(known) if !known.is_some_and(|k| k.contains(id)) => {
                        a.unacknowledged += 1;
                    }
                    _ => a.missing += 1,
                },
                ShardSealState::Pending => {
                    a.pending += 1;
                    a.held.push(*id);
                }
                ShardSealState::Sealed { unit } => {
                    let Some(u) = used.get_mut(*unit as usize) else {
                        return fail(
                            a,
                            format!("shard {id} names unit {unit}, which is not listed"),
                        );
                    };
                    *u = true;
                    a.sealed += 1;
                    a.held.push(*id);
                }
            }
        }
        let units: Vec<_> = info
            .units
            .iter()
            .zip(&used)
            .filter(|(_, u)| **u)
            .map(|(u, _)| u)
            .collect();
        for (id, s) in ids.iter().zip(&info.shards) {
            if let ShardSealState::Sealed { unit } = s {
                let layout = &info.units[*unit as usize].layout;
                let Some(pos) = layout.position(&granary_proofs::DataId(*id.as_bytes())) else {
                    return fail(
                        a,
                        format!("shard {id} reported sealed in a unit that does not list it"),
                    );
                };
                a.sealed_bytes += layout.members()[pos].len;
            }
        }
        for u in &units {
            if let Err(e) = u.verify(&node.id) {
                return fail(a, e.to_string());
            }
        }
        a.units = units.len();
        a.unit_bytes = units.iter().map(|u| u.statement.len).sum();
        if a.missing > 0 {
            let why = format!("{} of {} shards missing", a.missing, a.shards);
            return fail(a, why);
        }
        if opts.openings > 0 {
            for u in &units {
                if memory.proven_units.contains(&u.statement.comm_r) {
                    a.proven_units.push(u.statement.comm_r);
                    continue;
                }
                let seed = match fresh_seed() {
                    Ok(s) => s,
                    Err(e) => return fail(a, e),
                };
                let t = Instant::now();
                let res = client
                    .seal_proof(u.statement.comm_r, seed, opts.openings)
                    .await;
                let verified = res.map_err(|e| e.to_string()).and_then(|p| {
                    unit::verify(&u.statement, &u.layout, &seed, opts.openings as usize, &p)
                        .map_err(|e| format!("seal proof: {e}"))
                });
                let ms = t.elapsed().as_secs_f64() * 1e3;
                a.seal_proof_ms = Some(a.seal_proof_ms.map_or(ms, |m: f64| m.max(ms)));
                if let Err(e) = verified {
                    return fail(
                        a,
                        format!("unit {}: {e}", hex::encode(&u.statement.comm_r[..8])),
                    );
                }
                a.proven_units.push(u.statement.comm_r);
            }
        }
        if !units.is_empty() {
            let replicas: Vec<SealedReplica> = units
                .iter()
                .map(|u| SealedReplica {
                    comm_r: u.statement.comm_r,
                    len: u.statement.len,
                })
                .collect();
            let commitment = match PostProver::new(replicas) {
                Ok(p) => p.commitment(),
                Err(e) => return fail(a, format!("units: {e}")),
            };
            let seed = match fresh_seed() {
                Ok(s) => s,
                Err(e) => return fail(a, e),
            };
            let keys = units.iter().map(|u| u.statement.comm_r).collect();
            let t = Instant::now();
            let res = client.challenge(seed, keys, opts.chunks).await;
            let took = t.elapsed();
            a.challenge_ms = Some(took.as_secs_f64() * 1e3);
            let proof = match res {
                Ok(p) => p,
                Err(e) => return fail(a, format!("challenge: {e}")),
            };
            let t = Instant::now();
            let ok = challenge::verify(&commitment, &seed, opts.chunks as usize, &proof);
            a.verify_ms = Some(t.elapsed().as_secs_f64() * 1e3);
            if let Err(e) = ok {
                return fail(a, format!("challenge answer: {e}"));
            }
            if took > opts.deadline {
                a.verdict = Verdict::Late;
                a.detail = Some(format!(
                    "answered in {} ms, deadline {} ms",
                    took.as_millis(),
                    opts.deadline.as_millis()
                ));
                return a;
            }
        }
        a.verdict = if a.pending > 0 {
            a.detail = Some(format!("{} shards not sealed yet", a.pending));
            Verdict::Pending
        } else {
            Verdict::Pass
        };
        a
    }
}

/// Sealing state of a dataset's shards over its reachable nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SealingProgress {
    /// Shards sealed.
    pub sealed: usize,
    /// Shards waiting to be sealed.
    pub pending: usize,
    /// Shards the hinted node does not hold.
    pub missing: usize,
    /// Nodes that could not be asked.
    pub unreachable: usize,
}

fn empty() -> NodeAudit {
    NodeAudit {
        node: String::new(),
        verdict: Verdict::Fail,
        shards: 0,
        sealed: 0,
        pending: 0,
        missing: 0,
        units: 0,
        unit_bytes: 0,
        seal_proof_ms: None,
        challenge_ms: None,
        verify_ms: None,
        detail: None,
        sealed_bytes: 0,
        unacknowledged: 0,
        held: Vec::new(),
        proven_units: Vec::new(),
        refused: false,
    }
}
