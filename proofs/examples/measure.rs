//! Measures the per-step costs that size the default parameters (see `docs/proofs.md`).
//!
//! `cargo run -p granary-proofs --example measure --profile dev`
use std::time::Instant;

use granary_proofs::field::{Fe, sloth_round_forward, sloth_round_inverse};
use granary_proofs::seal::{self, DataId, NodeId, ReplicaId, SealParams};

fn per_iter<F: FnMut()>(n: u32, mut f: F) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() / f64::from(n)
}

fn main() {
    let mut x = Fe::from_u64(123_456_789);
    let sqrt = per_iter(20_000, || x = sloth_round_forward(x));
    let sq = per_iter(1_000_000, || x = sloth_round_inverse(x));
    let sq_only = per_iter(1_000_000, || x = x.square());
    let mul_only = per_iter(1_000_000, || x = x * Fe::from_u64(3));
    println!(
        "Fe::square {:.1} ns, Fe::mul {:.1} ns",
        sq_only * 1e9,
        mul_only * 1e9
    );
    println!(
        "sloth sqrt round: {:.2} us; squaring round: {:.1} ns",
        sqrt * 1e6,
        sq * 1e9
    );

    let len = 4 << 20;
    let plain: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(151) ^ (i >> 13) as u8)
        .collect();
    let id = ReplicaId::derive(
        &NodeId([1; 32]),
        &DataId(*blake3::hash(&plain).as_bytes()),
        &SealParams::DEFAULT,
    );
    let t = Instant::now();
    let replica = seal::seal(&SealParams::DEFAULT, &id, &plain).expect("seal");
    let seal_s = t.elapsed().as_secs_f64();
    println!(
        "seal 4 MiB, default rounds, 1 core: {:.2} s = {:.2} MB/s, {:.2} us/block",
        seal_s,
        len as f64 / seal_s / 1e6,
        seal_s / (len / 32) as f64 * 1e6
    );
    let mut out = vec![0u8; len];
    let un = per_iter(5, || {
        seal::unseal_range(
            &SealParams::DEFAULT,
            &id,
            &replica,
            0..(len / 32) as u64,
            &mut out,
        )
        .expect("unseal")
    });
    let raw = per_iter(20, || {
        std::hint::black_box(blake3::hash(&replica));
    });
    println!(
        "unseal 1 core: {:.1} MB/s; raw BLAKE3 1 core: {:.1} MB/s; ratio {:.3}",
        len as f64 / un / 1e6,
        len as f64 / raw / 1e6,
        raw / un
    );
    assert_eq!(out, plain);
    println!("gather: {:.1} ns/block", gather_cost(&replica, &id.0) * 1e9);

    let g = granary_proofs::Graph::new(&id.0, (len / 32) as u64);
    let mut j = 1u64;
    let mut acc = 0u64;
    let gp = per_iter(1_000_000, || {
        j = j % 100_000 + 1;
        acc ^= g.parents(granary_proofs::BlockIdx(j)).map_or(0, |p| p[3]);
    });
    let platform = granary_proofs::Platform::detect();
    let inputs = [[7u8; 256]; 8];
    let ctr = [1, 2, 3, 4, 5, 6, 7, 8];
    let kh = per_iter(200_000, || {
        std::hint::black_box(granary_proofs::keyhash::parent_keys_x8(
            platform, &id.0, &ctr, &inputs,
        ));
    });
    let ks = per_iter(200_000, || {
        std::hint::black_box(granary_proofs::keyhash::parent_keys_x8(
            granary_proofs::Platform::Scalar,
            &id.0,
            &ctr,
            &inputs,
        ));
    });
    println!(
        "{platform:?} parents: {:.1} ns/block; keys x8: {:.1} ns/block ({:.1} scalar) {acc}",
        gp * 1e9,
        kh * 1e9 / 8.0,
        ks * 1e9 / 8.0
    );
    let mut ys = [Fe::from_u64(5); 8];
    let sq8 = per_iter(200_000, || {
        for y in ys.iter_mut() {
            *y = sloth_round_inverse(*y);
        }
    });
    println!("independent squarings: {:.1} ns each", sq8 * 1e9 / 8.0);
    let mut ys = [Fe::from_u64(5); 8];
    let x8 = per_iter(200_000, || {
        granary_proofs::field::sloth_inverse_x8(&mut ys, 1)
    });
    println!("sloth_inverse_x8: {:.1} ns per lane", x8 * 1e9 / 8.0);
}

#[allow(dead_code)]
fn components() {}

/// Gather-only cost: parents + 8 copies per block, over a replica.
#[allow(dead_code)]
pub fn gather_cost(replica: &[u8], id: &[u8; 32]) -> f64 {
    let blocks = (replica.len() / 32) as u64;
    let g = granary_proofs::Graph::new(id, blocks);
    let mut input = [0u8; 256];
    let mut acc = 0u8;
    per_iter(3, || {
        for j in 1..blocks {
            if let Some(ps) = g.parents(granary_proofs::BlockIdx(j)) {
                for (k, &p) in ps.iter().enumerate() {
                    let s = p as usize * 32;
                    input[k * 32..k * 32 + 32].copy_from_slice(&replica[s..s + 32]);
                }
            }
            acc ^= input[j as usize & 255];
        }
    }) / blocks as f64
        + f64::from(acc) * 0.0
}
