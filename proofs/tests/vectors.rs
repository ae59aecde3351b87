//! Committed test vectors (`proofs/test_vectors.json`) and the reference-vs-fast sealing check.
//!
//! Regenerate after an intentional format change with
//! `GRANARY_REGEN_VECTORS=1 cargo test -p granary-proofs --test vectors` and review the diff.

use granary_proofs::seal::{self, DataId, NodeId, ReplicaId, SealParams};
use granary_proofs::{MerkleTree, reference};
use proptest::prelude::*;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn plain(len: usize, seed: u8) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"granary test vector")
        .update(&[seed])
        .finalize_xof()
        .fill(&mut v);
    v
}

fn vectors() -> serde_json::Value {
    let mut cases = Vec::new();
    for (len, rounds, node) in [
        (32usize, 1u32, 1u8),
        (1024, 1, 2),
        (4096, 2, 3),
        (40_000, 3, 4),
    ] {
        let p = plain(len, node);
        let params = SealParams { rounds, nonce: 0 };
        let data_id = DataId(*blake3::hash(&p).as_bytes());
        let id = ReplicaId::derive(&NodeId([node; 32]), &data_id, &params);
        let replica = seal::seal(&params, &id, &p).expect("seal");
        let comm_r = MerkleTree::build(&replica).expect("tree").root();
        cases.push(serde_json::json!({
            "len": len, "rounds": rounds, "node_id": hex(&[node; 32]),
            "plain": "BLAKE3-XOF(\"granary test vector\" ‖ node byte)",
            "data_id": hex(&data_id.0), "replica_id": hex(&id.0),
            "replica_first_block": hex(&replica[..32]), "comm_r": hex(&comm_r),
        }));
    }
    serde_json::json!({ "field_modulus": "2^256 - 189", "seal": cases })
}

#[test]
fn committed_vectors_match() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/test_vectors.json");
    let now = serde_json::to_string_pretty(&vectors()).expect("json");
    if std::env::var_os("GRANARY_REGEN_VECTORS").is_some() {
        std::fs::write(path, format!("{now}\n")).expect("write vectors");
    }
    let committed = std::fs::read_to_string(path).expect("test_vectors.json is committed");
    assert_eq!(committed.trim_end(), now);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]
    #[test]
    fn fast_seal_equals_reference(blocks in 1usize..12, rounds in 1u32..3, seed in any::<u8>()) {
        let p = plain(32 * blocks, seed);
        let id = ReplicaId::derive(&NodeId([seed; 32]), &DataId([0; 32]), &SealParams { rounds, nonce: 0 });
        let fast = seal::seal(&SealParams { rounds, nonce: 0 }, &id, &p).ok();
        prop_assert_eq!(fast, reference::seal(rounds, &id.0, &p));
    }
}
