//! Seeded concurrent stores and deletes of overlapping shards by several owners. Invariant:
//! afterwards (and after a restart) the index, the files and the accounting agree — the
//! start-up check finds nothing to quarantine, every held shard reads back verified, and `used`
//! is the sum of the held shards' sizes.
#![allow(clippy::unwrap_used)]

mod common;

use common::TAG;

use bytes::Bytes;
use common::{client, random_bytes, started};
use granary_protocol::SecretKey;

/// Tiny deterministic generator (xorshift), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_stores_and_deletes_keep_index_files_and_accounting_consistent() {
    let seed = std::env::var("GRANARY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    let mut node = started(&[], "");
    let owners: Vec<SecretKey> = (0..3).map(|_| SecretKey::generate()).collect();
    let shards: Vec<Bytes> = (0..8)
        .map(|i| Bytes::from(random_bytes(20_000 + i * 7_919, i as u64)))
        .collect();
    let c = client(&node, &owners[0]).await;

    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (c, owners, shards) = (c.clone(), owners.clone(), shards.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(seed ^ (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            for _ in 0..40 {
                let o = &owners[(rng.next() % 3) as usize];
                let s = &shards[(rng.next() % 8) as usize];
                if rng.next().is_multiple_of(3) {
                    c.delete_shards(o, TAG, &[blake3::hash(s)]).await.unwrap();
                } else {
                    c.store_shard(o, TAG, blake3::hash(s), s.clone())
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let check = |c: common::net::NodeClient, shards: Vec<Bytes>| async move {
        let ids: Vec<_> = shards.iter().map(|s| blake3::hash(s)).collect();
        let held = c.has_shards(&ids).await.unwrap();
        let mut expect_used = 0u64;
        for (s, h) in shards.iter().zip(&held) {
            if *h {
                expect_used += s.len() as u64;
                assert_eq!(c.fetch_shard(blake3::hash(s)).await.unwrap(), s.as_ref());
            }
        }
        let info = c.info().await.unwrap();
        assert_eq!(info.used, expect_used, "seed {seed:#x}");
        assert_eq!(info.shard_count, held.iter().filter(|h| **h).count() as u64);
        held
    };
    let before = check(c.clone(), shards.clone()).await;

    assert!(node.stop());
    node.start();
    let log = node.log();
    assert!(
        !log.contains("WARN"),
        "start-up check found inconsistencies (seed {seed:#x}): {log}"
    );
    let c = client(&node, &owners[0]).await;
    assert_eq!(check(c.clone(), shards.clone()).await, before);

    // Releasing every owner's references empties the node completely.
    let ids: Vec<_> = shards.iter().map(|s| blake3::hash(s)).collect();
    for o in &owners {
        c.delete_shards(o, TAG, &ids).await.unwrap();
    }
    assert_eq!(c.info().await.unwrap().used, 0);
    let status = node.status();
    assert!(status.contains("owners      0"), "{status}");
}
