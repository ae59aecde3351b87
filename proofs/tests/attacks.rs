//! Attack tests: each adversary from ARCHITECTURE.md §4, sans-IO. Timing claims are made by
//! counting sequential Sloth steps against the steps that fit in the deadline at the measured
//! per-step cost (`params::MEASURED_SLOTH_ROUND_NS`), never by a clock.

use granary_proofs::adversary::{Strategy, depths, rebuild_cost};
use granary_proofs::challenge::{self, PostProver, ReplicaIdx, ReplicaReader, SealedReplica};
use granary_proofs::params::{
    DEFAULT_DEADLINE_MS, DEFAULT_POST_CHALLENGES, DEFAULT_ROUNDS, DEFAULT_UNIT_BYTES,
    MEASURED_SLOTH_ROUND_NS,
};
use granary_proofs::seal::{self, DataId, NodeId, ReplicaId, SealParams};
use granary_proofs::seal_proof::{self, SealStatement};
use granary_proofs::{BlockIdx, Graph, MerkleTree};

const PARAMS: SealParams = SealParams {
    rounds: 1,
    nonce: 0,
};

struct Unit {
    statement: SealStatement,
    plain: Vec<u8>,
    replica: Vec<u8>,
    tree: MerkleTree,
}

fn unit(node: u8, data_seed: u8, len: usize) -> Unit {
    let mut plain = vec![0u8; len];
    blake3::Hasher::new()
        .update(&[data_seed])
        .finalize_xof()
        .fill(&mut plain);
    let data_id = DataId(*blake3::hash(&plain).as_bytes());
    let replica_id = ReplicaId::derive(&NodeId([node; 32]), &data_id, &PARAMS);
    let replica = seal::seal(&PARAMS, &replica_id, &plain).expect("seal");
    let tree = MerkleTree::build(&replica).expect("tree");
    let statement = SealStatement {
        data_id,
        replica_id,
        comm_r: tree.root(),
        len: len as u64,
        params: PARAMS,
    };
    Unit {
        statement,
        plain,
        replica,
        tree,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unit {0} not stored")]
struct Missing(u32);

struct Disk {
    units: Vec<Option<(Vec<u8>, MerkleTree)>>,
}

impl ReplicaReader for Disk {
    type Error = Missing;
    fn tree(&self, r: ReplicaIdx) -> Result<&MerkleTree, Missing> {
        self.units
            .get(r.0 as usize)
            .and_then(Option::as_ref)
            .map(|u| &u.1)
            .ok_or(Missing(r.0))
    }
    fn read(&self, r: ReplicaIdx, off: u64, buf: &mut [u8]) -> Result<(), Missing> {
        let u = self
            .units
            .get(r.0 as usize)
            .and_then(Option::as_ref)
            .ok_or(Missing(r.0))?;
        buf.copy_from_slice(
            u.0.get(off as usize..off as usize + buf.len())
                .ok_or(Missing(r.0))?,
        );
        Ok(())
    }
}

fn node(n: usize, len: usize) -> (Disk, PostProver) {
    let units: Vec<Unit> = (0..n).map(|i| unit(1, i as u8, len)).collect();
    let descs = units
        .iter()
        .map(|u| SealedReplica {
            comm_r: u.statement.comm_r,
            len: u.statement.len,
        })
        .collect();
    let disk = Disk {
        units: units
            .into_iter()
            .map(|u| Some((u.replica, u.tree)))
            .collect(),
    };
    (disk, PostProver::new(descs).expect("prover"))
}

#[test]
fn deleted_unit_cannot_answer() {
    let (mut disk, prover) = node(16, 32 * 1024);
    let seed = [1; 32];
    let chals = challenge::challenges(&seed, 16, 64);
    disk.units[chals[0].replica.0 as usize] = None;
    assert!(matches!(
        prover.prove(&seed, 64, &disk),
        Err(challenge::PostProveError::Read { .. })
    ));
}

#[test]
fn flipped_byte_is_detected() {
    let (mut disk, prover) = node(4, 64 * 1024);
    let seed = [2; 32];
    let honest = prover.prove(&seed, 64, &disk).expect("prove");
    assert_eq!(
        challenge::verify(&prover.commitment(), &seed, 64, &honest),
        Ok(())
    );
    // Flip a byte in a challenged chunk; a cheating prover that skips its own tree check (here:
    // forged by editing the honest answer) is rejected by the verifier.
    let mut forged = honest.clone();
    forged.openings[10].data[100] ^= 4;
    assert!(matches!(
        challenge::verify(&prover.commitment(), &seed, 64, &forged),
        Err(challenge::PostVerifyError::Chunk { index: 10, .. })
    ));
    // On disk: the honest prover notices before answering.
    let ch = challenge::challenges(&seed, 4, 64)[10];
    let off = ch.chunk(64 * 1024).0 as usize * 1024 + 100;
    if let Some(u) = disk.units[ch.replica.0 as usize].as_mut() {
        u.0[off] ^= 4;
    }
    assert!(prover.prove(&seed, 64, &disk).is_err());
}

#[test]
fn sybil_node_cannot_reuse_another_nodes_replica() {
    let a = unit(1, 9, 64 * 1024);
    let b = unit(2, 9, 64 * 1024); // same shard, other node
    assert_eq!(a.statement.data_id, b.statement.data_id);
    assert_ne!(
        a.statement.comm_r, b.statement.comm_r,
        "replicas of one shard differ per node"
    );
    // Node 2 claims node 1's replica (comm_r) as its own: the seal proof fails.
    let claim = SealStatement {
        comm_r: a.statement.comm_r,
        ..b.statement
    };
    let td = MerkleTree::build(&a.plain).expect("tree");
    let k = 16;
    let proof = seal_proof::prove(
        &a.statement.replica_id,
        &a.plain,
        &td,
        &a.replica,
        &a.tree,
        &[3; 32],
        k,
    )
    .expect("prove");
    assert_eq!(
        seal_proof::verify(&a.statement, &[3; 32], k, &proof),
        Ok(())
    );
    assert!(seal_proof::verify(&claim, &[3; 32], k, &proof).is_err());
    // Proving under its own replica id with node 1's bytes is not possible either.
    let forged = seal_proof::prove(
        &b.statement.replica_id,
        &a.plain,
        &td,
        &a.replica,
        &a.tree,
        &[3; 32],
        k,
    )
    .expect("prove");
    assert!(seal_proof::verify(&claim, &[3; 32], k, &forged).is_err());
}

#[test]
fn replayed_answers_fail_under_a_fresh_seed() {
    let (disk, prover) = node(8, 32 * 1024);
    let old = prover.prove(&[4; 32], 32, &disk).expect("prove");
    assert_eq!(
        challenge::verify(&prover.commitment(), &[4; 32], 32, &old),
        Ok(())
    );
    assert!(challenge::verify(&prover.commitment(), &[5; 32], 32, &old).is_err());
}

#[test]
fn shard_never_had_cannot_be_proven() {
    // The node lists a unit it never sealed (random comm_r): it has no tree or bytes for it.
    let (mut disk, _) = node(3, 32 * 1024);
    let mut descs: Vec<SealedReplica> = disk
        .units
        .iter()
        .flatten()
        .map(|u| SealedReplica {
            comm_r: u.1.root(),
            len: u.1.len(),
        })
        .collect();
    descs.push(SealedReplica {
        comm_r: [0xAB; 32],
        len: 32 * 1024,
    });
    disk.units.push(None);
    let prover = PostProver::new(descs).expect("prover");
    let seed = (0u8..=255)
        .map(|b| [b; 32])
        .find(|s| {
            challenge::challenges(s, 4, 8)
                .iter()
                .any(|c| c.replica.0 == 3)
        })
        .expect("some seed challenges unit 3");
    assert!(prover.prove(&seed, 8, &disk).is_err());
    // Presenting another unit's bytes in its place fails too (root mismatch on the tree check).
    disk.units[3] = disk.units[0].clone();
    assert!(matches!(
        prover.prove(&seed, 8, &disk),
        Err(challenge::PostProveError::TreeMismatch { .. })
    ));
}

/// Steps of `rounds` Sloth square roots that fit in the deadline at the measured cost.
fn steps_in_deadline() -> u64 {
    DEFAULT_DEADLINE_MS * 1_000_000 / (u64::from(DEFAULT_ROUNDS) * MEASURED_SLOTH_ROUND_NS)
}

fn post_blocks(seed: &[u8; 32], blocks: u64) -> Vec<BlockIdx> {
    // The PoSt challenges that land on one unit, mapped to blocks (32 per chunk).
    challenge::challenges(seed, 1, DEFAULT_POST_CHALLENGES)
        .iter()
        .map(|c| BlockIdx(c.chunk(blocks * 32).0 * 32 + 31))
        .collect()
}

#[test]
fn lazy_node_keeping_plain_data_misses_the_deadline() {
    let blocks = DEFAULT_UNIT_BYTES / 32;
    let g = Graph::new(&[11; 32], blocks);
    let d = depths(&g, &Strategy::PlainOnly);
    let cost = rebuild_cost(&g, &Strategy::PlainOnly, &d, &post_blocks(&[6; 32], blocks));
    let fit = steps_in_deadline();
    // Sequential steps to answer vs steps that fit: at least 10× at the default parameters.
    assert!(
        cost.max_depth >= 10 * fit,
        "needs {} steps, {} fit",
        cost.max_depth,
        fit
    );
    // Rebuilding the whole unit takes ≥ 10 deadlines; a single uniformly challenged block can be
    // answered in time with probability (steps that fit)/blocks ≤ 0.1.
    assert!(blocks >= 10 * fit);
    let escape = d.iter().filter(|&&x| u64::from(x) <= fit).count() as f64 / blocks as f64;
    assert!(escape <= 0.1, "escape probability {escape}");
}

#[test]
fn checkpointing_every_8th_block_misses_the_deadline() {
    let blocks = DEFAULT_UNIT_BYTES / 32;
    let g = Graph::new(&[12; 32], blocks);
    let s = Strategy::EveryNth(8);
    let d = depths(&g, &s);
    let cost = rebuild_cost(&g, &s, &d, &post_blocks(&[7; 32], blocks));
    let fit = steps_in_deadline();
    // With a chain this node would need ≤ 7 steps; the DRG forces a long sequential path.
    assert!(
        cost.max_depth >= 10 * fit,
        "needs {} steps, {} fit",
        cost.max_depth,
        fit
    );
    assert!(cost.total_steps > blocks / 2);
    let escape = d.iter().filter(|&&x| u64::from(x) <= fit).count() as f64 / blocks as f64;
    assert!(escape < 0.25, "escape probability {escape}");
}
