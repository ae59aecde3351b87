//! Sealing and proofs against real node processes: sealed state survives crashes (also one in
//! the middle of sealing), reads unseal byte-exact, and the attacks of issue 5 run over the real
//! protocol: a stranger, a unit the node never had, a replayed answer, a Sybil node presenting
//! another node's replica or statement, a forged signature.
#![allow(clippy::unwrap_used)]

mod common;

use common::TAG;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{NodeProc, client, net, random_bytes, started};
use granary_proofs::{
    DataId,
    challenge::{self, PostProver, SealedReplica},
    unit,
};
use granary_protocol::{
    ErrorCode, SecretKey,
    sealing::{SealInfoBody, ShardSealState, SignedUnit, UnitError},
};

/// Stores `shards` as `owner`; returns their ids.
async fn store_all(
    c: &net::NodeClient,
    owner: &SecretKey,
    shards: &[Vec<u8>],
) -> Vec<blake3::Hash> {
    let mut ids = Vec::new();
    for s in shards {
        let id = blake3::hash(s);
        c.store_shard(owner, TAG, id, Bytes::from(s.clone()))
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// Polls `SealInfo` until every id is sealed (bounded; sealing runs in the background).
async fn wait_sealed(c: &net::NodeClient, ids: &[blake3::Hash], node: &NodeProc) -> SealInfoBody {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let info = c.seal_info(ids).await.unwrap();
        if info
            .shards
            .iter()
            .all(|s| matches!(s, ShardSealState::Sealed { .. }))
        {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "not sealed in time; log: {}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn seed(b: u8) -> [u8; 32] {
    [b; 32]
}

/// Checks every unit's statement, a seal proof per unit and a challenge over all of them.
async fn prove_all(c: &net::NodeClient, node: &NodeProc, info: &SealInfoBody) {
    for u in &info.units {
        u.verify(&node.id).unwrap();
        let p = c.seal_proof(u.statement.comm_r, seed(7), 64).await.unwrap();
        unit::verify(&u.statement, &u.layout, &seed(7), 64, &p).unwrap();
    }
    let replicas: Vec<SealedReplica> = info
        .units
        .iter()
        .map(|u| SealedReplica {
            comm_r: u.statement.comm_r,
            len: u.statement.len,
        })
        .collect();
    let commitment = PostProver::new(replicas).unwrap().commitment();
    let keys = info.units.iter().map(|u| u.statement.comm_r).collect();
    let proof = c.challenge(seed(9), keys, 500).await.unwrap();
    challenge::verify(&commitment, &seed(9), 500, &proof).unwrap();
}

fn plain_files(node: &NodeProc) -> usize {
    common::walk_files(&node.dir.join("shards"))
        .into_iter()
        .filter(|p| p.extension().is_none())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_state_survives_kill9_and_reads_unseal() {
    let mut node = started(&["--seal-idle-secs", "0"], "");
    let owner = SecretKey::generate();
    let shards: Vec<Vec<u8>> = [100_000, 700_001, 64, 1_048_576, 33_000]
        .iter()
        .enumerate()
        .map(|(i, &n)| random_bytes(n, 40 + i as u64))
        .collect();
    let c = client(&node, &owner).await;
    let ids = store_all(&c, &owner, &shards).await;
    let info = wait_sealed(&c, &ids, &node).await;
    // The plain copies go right after the unit is committed (which SealInfo may see first).
    let deadline = Instant::now() + Duration::from_secs(30);
    while plain_files(&node) > 0 {
        assert!(
            Instant::now() < deadline,
            "plain copies dropped after sealing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    prove_all(&c, &node, &info).await;
    for (s, id) in shards.iter().zip(&ids) {
        assert_eq!(&c.fetch_shard(*id).await.unwrap(), s);
        let n = s.len() as u64;
        let r = n / 3..n / 3 + n.min(20_000) / 2;
        assert_eq!(
            c.fetch_range(*id, r.clone()).await.unwrap(),
            &s[r.start as usize..r.end as usize]
        );
    }
    drop(c);

    node.kill9();
    node.start();
    let c = client(&node, &owner).await;
    let again = c.seal_info(&ids).await.unwrap();
    assert_eq!(again, info, "sealing state survives a crash");
    prove_all(&c, &node, &again).await;
    for (s, id) in shards.iter().zip(&ids) {
        assert_eq!(&c.fetch_shard(*id).await.unwrap(), s);
    }
    let status = node.status();
    assert!(
        status.contains("sealed      5 shards in 1 units"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_in_the_middle_of_sealing_restarts_cleanly() {
    let mut node = started(&["--seal-idle-secs", "1"], "");
    let owner = SecretKey::generate();
    // ~6 MB: seconds of sequential sealing, so the kill lands inside it.
    let shards: Vec<Vec<u8>> = (0..3).map(|i| random_bytes(2_000_000, 60 + i)).collect();
    let ids = {
        let c = client(&node, &owner).await;
        store_all(&c, &owner, &shards).await
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !node.log().contains("sealing unit") {
        assert!(
            Instant::now() < deadline,
            "sealing did not start: {}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    node.kill9();
    let crashed_mid_seal = !node.log().contains("sealed unit");
    node.start();
    let c = client(&node, &owner).await;
    // Readable at once after the restart, sealed or not.
    for (s, id) in shards.iter().zip(&ids) {
        assert_eq!(&c.fetch_shard(*id).await.unwrap(), s);
    }
    let info = wait_sealed(&c, &ids, &node).await;
    prove_all(&c, &node, &info).await;
    for (s, id) in shards.iter().zip(&ids) {
        assert_eq!(&c.fetch_shard(*id).await.unwrap(), s);
    }
    assert!(
        std::fs::read_dir(node.dir.join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no leftovers in tmp/"
    );
    eprintln!("killed in the middle of sealing: {crashed_mid_seal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_attacks_over_the_protocol() {
    let a = started(&["--seal-idle-secs", "0"], "");
    let b = started(&["--seal-idle-secs", "0"], "");
    let owner = SecretKey::generate();
    let shards: Vec<Vec<u8>> = (0..3).map(|i| random_bytes(300_000, 80 + i)).collect();
    let (ca, cb) = (client(&a, &owner).await, client(&b, &owner).await);
    let ids = store_all(&ca, &owner, &shards).await;
    store_all(&cb, &owner, &shards).await;
    let ia = wait_sealed(&ca, &ids, &a).await;
    let ib = wait_sealed(&cb, &ids, &b).await;
    prove_all(&ca, &a, &ia).await;
    prove_all(&cb, &b, &ib).await;
    let (ua, ub) = (&ia.units[0], &ib.units[0]);

    // Same shards, two nodes: two different replicas (unique to the node id).
    assert_eq!(ua.layout, ub.layout);
    assert_ne!(ua.statement.replica_id, ub.statement.replica_id);
    assert_ne!(ua.statement.comm_r, ub.statement.comm_r);

    // A stranger (no data on the node) may not make it prove anything.
    let stranger = SecretKey::generate();
    let cs = client(&a, &stranger).await;
    let code = |e: net::RequestError| e.code();
    assert_eq!(
        code(cs.seal_info(&ids).await.unwrap_err()),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(
        code(
            cs.challenge(seed(1), vec![ua.statement.comm_r], 10)
                .await
                .unwrap_err()
        ),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(
        code(
            cs.seal_proof(ua.statement.comm_r, seed(1), 8)
                .await
                .unwrap_err()
        ),
        Some(ErrorCode::Forbidden)
    );

    // A unit (and shards) the node never had.
    assert_eq!(
        code(
            ca.challenge(seed(2), vec![[0xab; 32]], 10)
                .await
                .unwrap_err()
        ),
        Some(ErrorCode::NotFound)
    );
    let never = ca
        .seal_info(&[blake3::hash(b"never stored")])
        .await
        .unwrap();
    assert_eq!(never.shards, vec![ShardSealState::NotHeld]);

    // A replayed answer: valid for its own seed, useless for a fresh one.
    let commitment = |u: &SignedUnit| {
        PostProver::new(vec![SealedReplica {
            comm_r: u.statement.comm_r,
            len: u.statement.len,
        }])
        .unwrap()
        .commitment()
    };
    let old = ca
        .challenge(seed(3), vec![ua.statement.comm_r], 200)
        .await
        .unwrap();
    challenge::verify(&commitment(ua), &seed(3), 200, &old).unwrap();
    assert!(challenge::verify(&commitment(ua), &seed(4), 200, &old).is_err());
    let old_seal = ca
        .seal_proof(ua.statement.comm_r, seed(5), 32)
        .await
        .unwrap();
    assert!(unit::verify(&ua.statement, &ua.layout, &seed(6), 32, &old_seal).is_err());

    // Sybil, statement: b presents a's signed unit as its own.
    assert!(matches!(ua.verify(&b.id), Err(UnitError::Signature(_))));
    // Forged signature: a's statement with b's signature.
    let forged = SignedUnit {
        signature: ub.signature,
        ..ua.clone()
    };
    assert!(matches!(forged.verify(&a.id), Err(UnitError::Signature(_))));
    // b's proof for its own unit does not pass as a's, and a's proofs do not pass for b.
    let pb = cb
        .seal_proof(ub.statement.comm_r, seed(8), 32)
        .await
        .unwrap();
    assert!(unit::verify(&ua.statement, &ua.layout, &seed(8), 32, &pb).is_err());

    // Sybil, replica: b drops its replica and keeps a copy of a's under its own unit's name.
    let path = |n: &NodeProc, u: &SignedUnit, ext: &str| {
        n.dir
            .join("units")
            .join(format!("{}.{ext}", hex::encode(u.statement.comm_r)))
    };
    for ext in ["replica", "tree"] {
        std::fs::copy(path(&a, ua, ext), path(&b, ub, ext)).unwrap();
    }
    let seal = cb.seal_proof(ub.statement.comm_r, seed(10), 32).await;
    assert!(
        seal.map_or(true, |p| unit::verify(
            &ub.statement,
            &ub.layout,
            &seed(10),
            32,
            &p
        )
        .is_err()),
        "a copied replica must not prove b's unit"
    );
    let post = cb.challenge(seed(11), vec![ub.statement.comm_r], 200).await;
    assert!(
        post.map_or(true, |p| challenge::verify(
            &commitment(ub),
            &seed(11),
            200,
            &p
        )
        .is_err()),
        "a copied replica must not answer b's challenge"
    );
    // The member shard ids are the plaintext anchors: a layout naming other shards is refused.
    let mut members = ua.layout.members().to_vec();
    members[0].id = DataId([0; 32]);
    let other = unit::UnitLayout::new(members).unwrap();
    let p = ca
        .seal_proof(ua.statement.comm_r, seed(12), 32)
        .await
        .unwrap();
    assert!(unit::verify(&ua.statement, &other, &seed(12), 32, &p).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sealer_threads_split_work_into_disjoint_units() {
    let node = started(
        &[
            "--seal-idle-secs",
            "0",
            "--seal-unit",
            "1M",
            "--seal-threads",
            "2",
        ],
        "",
    );
    let owner = SecretKey::generate();
    let shards: Vec<Vec<u8>> = (0..8).map(|i| random_bytes(400_000, 120 + i)).collect();
    let c = client(&node, &owner).await;
    let ids = store_all(&c, &owner, &shards).await;
    let info = wait_sealed(&c, &ids, &node).await;
    // 8 × 400 KB in units of at most 1 MiB: at least 4 units, each shard in exactly one.
    assert!(info.units.len() >= 4, "{} units", info.units.len());
    let mut members: Vec<DataId> = info
        .units
        .iter()
        .flat_map(|u| u.layout.members().iter().map(|m| m.id))
        .collect();
    members.sort_by_key(|d| d.0);
    let before = members.len();
    members.dedup();
    assert_eq!(before, members.len(), "no shard sealed twice");
    assert_eq!(members.len(), ids.len());
    prove_all(&c, &node, &info).await;
    assert!(
        node.log().contains("thread=1"),
        "both threads sealed: {}",
        node.log()
    );
}
