//! Store / fetch / has / delete against a real node process, plus restart and status.
#![allow(clippy::unwrap_used)]

mod common;

use common::TAG;

use bytes::Bytes;
use common::{client, net, random_bytes, started};
use granary_protocol::{ErrorCode, SecretKey};
use net::{DeleteOutcome, StoreOutcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_fetch_has_delete_round_trip() {
    let node = started(&[], "");
    let owner = SecretKey::generate();
    let c = client(&node, &owner).await;

    let data = random_bytes(1_000_003, 1);
    let id = blake3::hash(&data);
    let other = blake3::hash(b"not stored");
    assert_eq!(
        c.has_shards(&[id, other]).await.unwrap(),
        vec![false, false]
    );
    assert_eq!(
        c.store_shard(&owner, TAG, id, Bytes::from(data.clone()))
            .await
            .unwrap(),
        StoreOutcome::Stored
    );
    assert_eq!(
        c.store_shard(&owner, TAG, id, Bytes::from(data.clone()))
            .await
            .unwrap(),
        StoreOutcome::AlreadyHeld
    );
    assert_eq!(c.has_shards(&[id, other]).await.unwrap(), vec![true, false]);

    assert_eq!(c.fetch_shard(id).await.unwrap(), data);
    for r in [
        0..1,
        5..70_000,
        16_384..32_768,
        999_000..1_000_003,
        1_000_003..1_000_003,
        500_000..u64::MAX,
    ] {
        let end = r.end.min(data.len() as u64) as usize;
        assert_eq!(
            c.fetch_range(id, r.clone()).await.unwrap(),
            &data[r.start as usize..end],
            "range {r:?}"
        );
    }
    let err = c.fetch_range(id, 2_000_000..2_000_001).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RangeOutOfBounds));
    let err = c.fetch_shard(other).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));

    let info = c.info().await.unwrap();
    assert_eq!(
        (info.id, info.used, info.shard_count),
        (node.id, 1_000_003, 1)
    );
    assert_eq!(info.label, "test-zone");
    assert!(info.free <= info.capacity - info.used);

    let status = node.status();
    assert!(status.contains(&id.to_hex().to_string()), "{status}");
    let out = std::process::Command::new(common::BIN)
        .args(["id", "--addr", "--dir"])
        .arg(node.path())
        .output()
        .unwrap();
    let na: granary_protocol::NodeAddr = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!((na.id, na.addr), (node.id, node.addr));

    assert_eq!(
        c.delete_shards(&owner, TAG, &[id, other]).await.unwrap(),
        vec![DeleteOutcome::Deleted, DeleteOutcome::NotOwner]
    );
    assert_eq!(c.has_shards(&[id]).await.unwrap(), vec![false]);
    assert_eq!(
        c.fetch_shard(id).await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    assert_eq!(c.info().await.unwrap().used, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_owners_delete_and_bytes_go_with_the_last_owner() {
    let node = started(&[], "");
    let (alice, bob, mallory) = (
        SecretKey::generate(),
        SecretKey::generate(),
        SecretKey::generate(),
    );
    let c = client(&node, &mallory).await;
    let data = Bytes::from(random_bytes(50_000, 2));
    let id = blake3::hash(&data);
    assert_eq!(
        c.store_shard(&alice, TAG, id, data.clone()).await.unwrap(),
        StoreOutcome::Stored
    );
    assert_eq!(
        c.store_shard(&bob, TAG, id, data.clone()).await.unwrap(),
        StoreOutcome::AlreadyHeld
    );

    assert_eq!(
        c.delete_shards(&mallory, TAG, &[id]).await.unwrap(),
        vec![DeleteOutcome::NotOwner]
    );
    assert_eq!(c.has_shards(&[id]).await.unwrap(), vec![true]);
    assert_eq!(
        c.delete_shards(&alice, TAG, &[id]).await.unwrap(),
        vec![DeleteOutcome::Released]
    );
    assert_eq!(c.fetch_shard(id).await.unwrap(), data);
    assert_eq!(
        c.delete_shards(&alice, TAG, &[id]).await.unwrap(),
        vec![DeleteOutcome::NotOwner]
    );
    assert_eq!(
        c.delete_shards(&bob, TAG, &[id]).await.unwrap(),
        vec![DeleteOutcome::Deleted]
    );
    assert_eq!(c.has_shards(&[id]).await.unwrap(), vec![false]);
    // The bytes are gone from disk too.
    let files = walk(&node.path().join("shards"));
    assert!(files.is_empty(), "{files:?}");
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(p).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_data() {
    let mut node = started(&[], "");
    let owner = SecretKey::generate();
    let data = Bytes::from(random_bytes(300_000, 3));
    let id = blake3::hash(&data);
    {
        let c = client(&node, &owner).await;
        c.store_shard(&owner, TAG, id, data.clone()).await.unwrap();
    }
    assert!(
        node.stop(),
        "graceful shutdown exits 0; log: {}",
        node.log()
    );
    node.start();
    let c = client(&node, &owner).await;
    assert_eq!(c.fetch_shard(id).await.unwrap(), data);
    assert_eq!(c.info().await.unwrap().shard_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostor_node_is_refused_with_typed_error() {
    let node = started(&[], "");
    let ep = net::client_endpoint(&SecretKey::generate()).unwrap();
    let expected = SecretKey::generate().public();
    match net::NodeClient::connect(&ep, node.addr, expected).await {
        Err(net::ConnectError::UnexpectedPeer {
            expected: e,
            actual,
        }) => {
            assert_eq!((e, actual), (expected, node.id));
        }
        other => panic!("expected UnexpectedPeer, got {other:?}"),
    }
    // The real id still works on the same endpoint.
    net::NodeClient::connect(&ep, node.addr, node.id)
        .await
        .unwrap()
        .info()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_reuses_and_replaces_connections() {
    let mut node = started(&[], "");
    let key = SecretKey::generate();
    let pool = net::NodePool::new(net::client_endpoint(&key).unwrap());
    let a = pool.get(node.addr, node.id).await.unwrap();
    let b = pool.get(node.addr, node.id).await.unwrap();
    assert_eq!(a.remote_address(), b.remote_address());
    assert_eq!(pool.len(), 1);
    a.info().await.unwrap();
    // Restart the node: the cached connection dies; the pool dials anew.
    assert!(node.stop());
    node.start();
    let mut fresh = None;
    for _ in 0..100 {
        let c = pool.get(node.addr, node.id).await.unwrap();
        if c.info().await.is_ok() {
            fresh = Some(c);
            break;
        }
        pool.evict(&node.id);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(fresh.is_some(), "pool reconnects after the node restarts");
    pool.close_all();
    assert!(pool.is_empty());
}

/// A node that shut down cleanly skips comparing every shard file with the index at its next
/// start; after a crash (no marker) the next start compares them all again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_skips_the_shard_check_and_a_crash_does_not() {
    let mut node = started(&[], "");
    let owner = SecretKey::generate();
    let data = Bytes::from(random_bytes(100_000, 21));
    let id = blake3::hash(&data);
    client(&node, &owner)
        .await
        .store_shard(&owner, TAG, id, data.clone())
        .await
        .unwrap();
    let marker = node.path().join("clean-shutdown");
    assert!(!marker.exists());
    assert!(node.stop(), "graceful shutdown; log: {}", node.log());
    assert!(
        marker.exists(),
        "a clean stop records it; log: {}",
        node.log()
    );

    node.start();
    assert!(!marker.exists(), "taken away before serving");
    let log = node.log();
    assert!(
        log.contains("checked=0") && log.contains("after_clean_shutdown=true"),
        "{log}"
    );
    assert_eq!(
        client(&node, &owner).await.fetch_shard(id).await.unwrap(),
        data
    );

    node.kill9();
    assert!(!marker.exists(), "a crash leaves no marker");
    node.start();
    let log = node.log();
    assert!(
        log.contains("checked=1") && log.contains("after_clean_shutdown=false"),
        "{log}"
    );
    assert_eq!(
        client(&node, &owner).await.fetch_shard(id).await.unwrap(),
        data
    );
}
