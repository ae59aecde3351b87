//! Times the node's start-up check on a store of many shards (sparse 2 MiB files, outboards in
//! RocksDB), and, for comparison, reading every outboard back as the check did before shard
//! records said where their outboard is.
//!
//! ```sh
//! cargo run --profile dev -p granary-node --example startup_check -- DIR 30000 make
//! sync; echo 3 > /proc/sys/vm/drop_caches
//! cargo run --profile dev -p granary-node --example startup_check -- DIR 0 check
//! cargo run --profile dev -p granary-node --example startup_check -- DIR 0 read-all
//! ```

use granary_node::{
    blobs::Blobs,
    store::{Quota, Store, rocks::RocksStore},
};
use granary_protocol::{SecretKey, ShardId};

fn main() {
    let usage = "usage: startup_check DIR SHARDS make|check|read-all";
    let arg = |i: usize| std::env::args().nth(i).expect(usage);
    let dir = std::path::PathBuf::from(arg(1));
    let n: usize = arg(2).parse().expect(usage);
    let mode = arg(3);
    let size = 2u64 << 20;
    let oblen = granary_protocol::verified::outboard_len(size) as usize;
    let q = Quota {
        capacity: u64::MAX / 4,
        per_owner: u64::MAX / 4,
    };
    if mode == "make" {
        let blobs = Blobs::open(&dir).unwrap();
        let store = RocksStore::open(&dir.join("db")).unwrap();
        let owner = SecretKey::generate().public();
        for i in 0..n {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let id = ShardId(*blake3::hash(&b).as_bytes());
            let (staged, file) = blobs.begin(&id).unwrap();
            file.set_len(size).unwrap();
            blobs.commit(staged).unwrap();
            let ob: Vec<u8> = (0..oblen).map(|j| (j * 31 + i) as u8).collect();
            store
                .add_shard(&id, size, &owner, &[0; 32], &q, Some(&ob))
                .unwrap();
        }
        return;
    }
    let blobs = Blobs::open(&dir).unwrap();
    let t = std::time::Instant::now();
    let store = RocksStore::open(&dir.join("db")).unwrap();
    let open = t.elapsed();
    let t = std::time::Instant::now();
    if mode == "read-all" {
        let mut total = 0usize;
        for (id, _) in store.shards().unwrap() {
            total += store.outboard(&id).unwrap().unwrap().len();
        }
        println!("read every outboard ({total} bytes): {:?}", t.elapsed());
    } else {
        let r = granary_node::node::check(&store, &blobs).unwrap();
        println!(
            "check of {} shards: {:?} (open {:?}), quarantined {}",
            r.shards_checked,
            t.elapsed(),
            open,
            r.quarantined.len()
        );
    }
}
