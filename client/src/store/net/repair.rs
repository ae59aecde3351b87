//! `granary repair CAP`: finds the shards of a dataset that no reachable node holds any more and
//! rebuilds them from any k of their segment onto live nodes.
//!
//! Where a shard is: the node the manifest hints, else one of the shard's next rendezvous
//! candidates (where an earlier repair put it; readers look there too). A segment with some
//! shards gone but at least k left is read (k shards, each verified against its id), decoded,
//! re-encoded, and each lost shard is checked against its id and stored on the best-ranked live
//! node that holds no other shard of the segment, under the owner's reference for the dataset.
//! Repair needs no key: Reed–Solomon works on the stored (encrypted) bytes.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use granary_protocol::NodeAddr;
use serde::Serialize;

use super::{FALLBACK_CANDIDATES, NetStore};
use crate::{
    erasure::Coder,
    ids::ShardId,
    manifest::SegmentDesc,
    read::Dataset,
    store::{ShardLoc, StoreError},
};

/// What a repair found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    /// Segments checked (data and manifest segments).
    pub segments: u64,
    /// Shards checked.
    pub shards: u64,
    /// Shards no reachable node holds.
    pub missing: u64,
    /// Of those, rebuilt and stored on a live node.
    pub rebuilt: u64,
    /// Segments with fewer than k shards left: their lost shards cannot be rebuilt.
    pub unrecoverable_segments: u64,
    /// Copies of the root record found (the repair stores more up to 3).
    pub root_copies: u64,
    /// What went wrong, per segment or shard.
    pub problems: Vec<String>,
}

/// One segment and the node table its placement indexes.
struct Seg<'a> {
    desc: &'a SegmentDesc,
    nodes: &'a [[u8; 32]],
}

impl Seg<'_> {
    /// The node the manifest says shard `i` was put on.
    fn hint(&self, i: usize) -> Option<[u8; 32]> {
        self.desc.hint(i, self.nodes)
    }
}

/// The dataset's segments with their node tables.
fn segments(ds: &Dataset) -> Vec<Seg<'_>> {
    ds.segment_tables()
        .map(|(desc, nodes)| Seg { desc, nodes })
        .collect()
}

impl NetStore {
    /// Checks every shard of `ds` and, unless `dry_run`, rebuilds the lost ones. The store's
    /// upload tag should be the dataset's id (`with_upload_tag(cap.id.0)`), so rebuilt shards are
    /// held under the dataset's own reference, as a committed put leaves them.
    pub fn repair(&self, ds: &Dataset, dry_run: bool) -> Result<RepairReport, StoreError> {
        let coder = Coder::new(ds.manifest().erasure)
            .map_err(|e| StoreError::Unavailable(format!("erasure parameters: {e}")))?;
        let segs = segments(ds);
        let mut report = RepairReport {
            segments: segs.len() as u64,
            ..RepairReport::default()
        };
        let hinted = ds.shard_hints();
        report.shards = hinted.len() as u64;
        let holder = self.block_on(self.locate(&hinted));
        let root_id = ShardId(ds.capability.id.0);
        let copies = crate::store::root_copies(ds.manifest().erasure);
        let root_holders = self.block_on(self.locate_all(root_id, copies + 2));
        report.root_copies = root_holders.len() as u64;

        for (n, s) in segs.iter().enumerate() {
            let d = s.desc;
            let missing: Vec<usize> = (0..d.shards.len())
                .filter(|&i| !holder.contains_key(&d.shards[i]))
                .collect();
            if missing.is_empty() {
                continue;
            }
            report.missing += missing.len() as u64;
            let k = coder.params().data as usize;
            if d.shards.len() - missing.len() < k {
                report.unrecoverable_segments += 1;
                report.problems.push(format!(
                    "segment {n}: only {} of {} shards left, {k} needed",
                    d.shards.len() - missing.len(),
                    d.shards.len()
                ));
                continue;
            }
            if dry_run {
                continue;
            }
            match self.rebuild_segment(&coder, s, &missing, &holder) {
                Ok(done) => report.rebuilt += done,
                Err(e) => report.problems.push(format!("segment {n}: {e}")),
            }
        }
        if !dry_run && (report.root_copies as usize) < copies && report.root_copies > 0 {
            use crate::store::ShardStore;
            match self.get_root(&ds.capability.id) {
                Ok(bytes) => {
                    if let Err(e) = self.put_root(&ds.capability.id, &bytes, copies) {
                        report.problems.push(format!("root record: {e}"));
                    }
                }
                Err(e) => report.problems.push(format!("root record: {e}")),
            }
        }
        Ok(report)
    }

    /// Where `ds`'s shards are now: each at the node found holding it (its hinted node, else
    /// one of its next rendezvous candidates, where a repair puts it), else at its hinted node
    /// (which may be down). What `granary verify` challenges and `granary register` hands to an
    /// auditor, so that repaired shards are checked where they live.
    pub fn current_placement(&self, ds: &Dataset) -> crate::audit::Placement {
        let hinted = ds.shard_hints();
        let holder = self.block_on(self.locate(&hinted));
        crate::audit::group_by_node(hinted.into_iter().filter_map(|(id, hint)| {
            let node = holder.get(&id).map(|n| *n.id.as_bytes()).or(hint)?;
            Some((node, id))
        }))
    }

    /// Reads any k shards of `seg`, rebuilds all of them, and stores the `missing` ones; how
    /// many were stored.
    fn rebuild_segment(
        &self,
        coder: &Coder,
        seg: &Seg<'_>,
        missing: &[usize],
        holder: &HashMap<ShardId, NodeAddr>,
    ) -> Result<u64, String> {
        let d = seg.desc;
        let k = coder.params().data as usize;
        let reqs: Vec<(ShardLoc, std::ops::Range<u64>)> = (0..d.shards.len())
            .filter(|i| !missing.contains(i))
            .map(|i| {
                let loc = ShardLoc {
                    id: d.shards[i],
                    len: d.shard_len as u64,
                    hint: holder.get(&d.shards[i]).map(|n| *n.id.as_bytes()),
                    index: i as u8,
                };
                (loc, 0..d.shard_len as u64)
            })
            .collect();
        let answers = self.block_on(self.read_hedged(&reqs, super::Goal::Any(k)));
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; d.shards.len()];
        for ((loc, _), a) in reqs.iter().zip(answers) {
            if let Some(Ok(b)) = a {
                shards[loc.index as usize] = Some(b);
            }
        }
        coder
            .reconstruct_data(&mut shards)
            .map_err(|e| format!("decoding: {e}"))?;
        let data: Vec<u8> = shards[..k].iter().flatten().flatten().copied().collect();
        let set = coder.encode(&data).map_err(|e| format!("encoding: {e}"))?;
        if set.shard_len != d.shard_len as usize {
            return Err("re-encoding gave another shard length".into());
        }
        // Nodes already holding a shard of this segment do not get another one, and failure
        // domains it already uses come after the others.
        let labels = self.block_on(self.labels());
        let mut used: Vec<granary_protocol::NodeId> = holder
            .iter()
            .filter(|(id, _)| d.shards.contains(id))
            .map(|(_, n)| n.id)
            .collect();
        let mut domains: Vec<String> = used.iter().map(|id| Self::domain_of(labels, id)).collect();
        let mut stored = 0;
        for &i in missing {
            let bytes = set.shard(i);
            let id = d.shards[i];
            if blake3::hash(bytes) != id.as_hash() {
                return Err(format!("shard {i} rebuilt with the wrong bytes"));
            }
            let dead = self.dead_set();
            // Only where a reader looks when the hinted node fails: the shard's first
            // rendezvous candidates besides the hinted node.
            let hint = seg.hint(i);
            let window: Vec<NodeAddr> = self
                .ranked(&id.0, &HashMap::new())
                .into_iter()
                .filter(|n| Some(*n.id.as_bytes()) != hint)
                .take(FALLBACK_CANDIDATES)
                .collect();
            let cands: Vec<NodeAddr> = super::placement_order(
                &window,
                &used,
                &domains,
                |n| Self::domain_of(labels, n),
                &dead,
            )
            .into_iter()
            .filter(|n| !dead.contains_key(&n.id) && !used.contains(&n.id))
            .collect();
            match self.block_on(self.put_one(id, Bytes::copy_from_slice(bytes), &cands)) {
                Ok(node) => {
                    domains.push(Self::domain_of(labels, &node));
                    used.push(node);
                    stored += 1;
                }
                Err(e) => return Err(format!("storing shard {i}: {e}")),
            }
        }
        Ok(stored)
    }

    /// Where each shard is held: its hinted node if it has it, else the first of its next
    /// rendezvous candidates that does. Shards found nowhere are absent from the map.
    async fn locate(&self, shards: &[(ShardId, Option<[u8; 32]>)]) -> HashMap<ShardId, NodeAddr> {
        let mut found: HashMap<ShardId, NodeAddr> = HashMap::new();
        let by_id: HashMap<[u8; 32], NodeAddr> =
            self.nodes.iter().map(|n| (*n.id.as_bytes(), *n)).collect();
        // Round 1: the hinted nodes. Round 2..: the rendezvous candidates, best first.
        let mut asked: HashSet<(ShardId, [u8; 32])> = HashSet::new();
        for round in 0..=FALLBACK_CANDIDATES {
            // Nodes found down (in an earlier round, or recently) are not asked again: a dead
            // node costs one connect timeout, not one per round.
            let dead = self.dead_set();
            let mut per_node: HashMap<[u8; 32], Vec<ShardId>> = HashMap::new();
            for (id, hint) in shards {
                if found.contains_key(id) {
                    continue;
                }
                let node = if round == 0 {
                    hint.filter(|h| by_id.contains_key(h))
                } else {
                    self.ranked(&id.0, &HashMap::new())
                        .iter()
                        .map(|n| *n.id.as_bytes())
                        .filter(|n| Some(*n) != *hint)
                        .nth(round - 1)
                };
                if let Some(n) = node
                    && !dead.contains_key(&by_id[&n].id)
                    && asked.insert((*id, n))
                {
                    per_node.entry(n).or_default().push(*id);
                }
            }
            if per_node.is_empty() {
                break;
            }
            let answers = super::futures_join_all(per_node.iter().map(|(n, ids)| async {
                let node = by_id[n];
                let client = self.connect(&node).await.ok()?;
                let hashes: Vec<blake3::Hash> = ids.iter().map(|i| i.as_hash()).collect();
                let held = client.has_shards(&hashes).await.ok()?;
                Some((node, held))
            }))
            .await;
            for ((_, ids), a) in per_node.iter().zip(answers) {
                if let Some((node, held)) = a {
                    for (id, h) in ids.iter().zip(held) {
                        if h {
                            found.entry(*id).or_insert(node);
                        }
                    }
                }
            }
        }
        found
    }

    /// Every node among the first `among` rendezvous candidates of `id` that holds it.
    async fn locate_all(&self, id: ShardId, among: usize) -> Vec<NodeAddr> {
        let dead = self.dead_set();
        let cands: Vec<NodeAddr> = self
            .ranked(&id.0, &HashMap::new())
            .into_iter()
            .take(among)
            .filter(|n| !dead.contains_key(&n.id))
            .collect();
        let answers = super::futures_join_all(cands.iter().map(|node| async move {
            let client = self.connect(node).await.ok()?;
            let held = client.has_shards(&[id.as_hash()]).await.ok()?;
            held.first().copied().filter(|h| *h).map(|_| *node)
        }))
        .await;
        answers.into_iter().flatten().collect()
    }
}
