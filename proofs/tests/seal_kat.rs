//! Known-answer pins of the sealed format with the default parameters, taken before the unseal
//! and sealing kernels were optimised: any change to a kernel that alters a single replica byte
//! fails here (the committed `test_vectors.json` covers small sizes and other round counts).

use granary_proofs::Platform;
use granary_proofs::seal::{self, DataId, NodeId, ReplicaId, SealParams};

fn plain(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"granary seal known answer")
        .finalize_xof()
        .fill(&mut v);
    v
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// 128 KiB (4,096 blocks) sealed with `SealParams::DEFAULT`.
const LEN: usize = 128 << 10;
const REPLICA_BLAKE3: &str = "b69e3e5c60ebbc96cabbffaf7d84fb92c2c6e182507e8c469b85fe249e6fd40a";

#[test]
fn default_params_replica_hash_is_pinned() {
    assert_eq!(SealParams::DEFAULT.rounds, 3);
    let p = plain(LEN);
    let data_id = DataId(*blake3::hash(&p).as_bytes());
    let id = ReplicaId::derive(&NodeId([0x5a; 32]), &data_id, &SealParams::DEFAULT);
    let mut replica = p.clone();
    seal::seal_in_place(&SealParams::DEFAULT, &id, &mut replica).expect("seal");
    assert_eq!(hex(blake3::hash(&replica).as_bytes()), REPLICA_BLAKE3);
    assert_eq!(
        seal::seal(&SealParams::DEFAULT, &id, &p).expect("seal"),
        replica
    );
    // Every unseal path gives the plaintext back, whole and in odd sub-ranges.
    let blocks = (LEN / 32) as u64;
    let mut out = vec![0u8; LEN];
    seal::unseal_range(&SealParams::DEFAULT, &id, &replica, 0..blocks, &mut out).expect("unseal");
    assert_eq!(out, p);
    out.fill(0);
    seal::unseal_range_par(&SealParams::DEFAULT, &id, &replica, 0..blocks, &mut out)
        .expect("unseal");
    assert_eq!(out, p);
    for (s, e) in [
        (0u64, 1u64),
        (1, 18),
        (7, 40),
        (1000, 1037),
        (blocks - 21, blocks),
    ] {
        let mut o = vec![0u8; 32 * (e - s) as usize];
        for platform in [Platform::Scalar, Platform::detect()] {
            o.fill(0);
            seal::unseal_range_on(platform, &SealParams::DEFAULT, &id, &replica, s..e, &mut o)
                .expect("unseal");
            assert_eq!(
                o,
                p[32 * s as usize..32 * e as usize],
                "{platform:?} {s}..{e}"
            );
        }
    }
}
