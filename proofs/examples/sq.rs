//! Micro-measurement of field squaring throughput (8 independent lanes) vs latency (one chain).
//!
//! `cargo run -p granary-proofs --example sq --profile dev`
use std::time::Instant;

use granary_proofs::field::{Fe, sloth_round_inverse};

fn main() {
    let mut lanes: [Fe; 8] = std::array::from_fn(|i| Fe::from_u64(i as u64 + 3));
    let n = 2_000_000u32;
    let t = Instant::now();
    for _ in 0..n {
        for x in lanes.iter_mut() {
            *x = x.square();
        }
    }
    let thr = t.elapsed().as_secs_f64() / f64::from(n) / 8.0;
    let t = Instant::now();
    for _ in 0..n {
        for x in lanes.iter_mut() {
            *x = sloth_round_inverse(*x);
        }
    }
    let inv = t.elapsed().as_secs_f64() / f64::from(n) / 8.0;
    let mut c = Fe::from_u64(7);
    let t = Instant::now();
    for _ in 0..n {
        c = c.square();
    }
    let lat = t.elapsed().as_secs_f64() / f64::from(n);
    println!(
        "square: {:.1} ns/lane (8 lanes), {:.1} ns latency; sloth inverse round {:.1} ns/lane {:?}",
        thr * 1e9,
        lat * 1e9,
        inv * 1e9,
        (lanes[0] == c)
    );
}
