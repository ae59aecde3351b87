//! Prints the storage/sequential-work trade-off at the default parameters (`docs/proofs.md`).
//!
//! `cargo run -p granary-proofs --example tradeoff --profile dev`
use granary_proofs::Graph;
use granary_proofs::adversary::{Strategy, depths};
use granary_proofs::params::{
    DEFAULT_DEADLINE_MS, DEFAULT_ROUNDS, DEFAULT_UNIT_BYTES, MEASURED_SLOTH_ROUND_NS,
};

fn main() {
    let blocks = DEFAULT_UNIT_BYTES / 32;
    let g = Graph::new(&[7; 32], blocks);
    let step_ns = u64::from(DEFAULT_ROUNDS) * MEASURED_SLOTH_ROUND_NS;
    let fit = DEFAULT_DEADLINE_MS * 1_000_000 / step_ns;
    println!(
        "unit {} blocks, {} ns per block step, {} steps fit in the {} ms deadline",
        blocks, step_ns, fit, DEFAULT_DEADLINE_MS
    );
    println!(
        "| strategy | kept | median depth | p90 depth | max depth | max depth / deadline | P(answer in deadline) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let strategies = [
        Strategy::PlainOnly,
        Strategy::EveryNth(64),
        Strategy::EveryNth(16),
        Strategy::EveryNth(8),
        Strategy::EveryNth(4),
        Strategy::EveryNth(2),
        Strategy::RandomFraction {
            ppm: 125_000,
            seed: 1,
        },
        Strategy::RandomFraction {
            ppm: 250_000,
            seed: 1,
        },
        Strategy::RandomFraction {
            ppm: 500_000,
            seed: 1,
        },
        Strategy::Suffix { ppm: 500_000 },
    ];
    for s in strategies {
        let d = depths(&g, &s);
        let mut sorted = d.clone();
        sorted.sort_unstable();
        let q = |f: f64| sorted[((sorted.len() - 1) as f64 * f) as usize];
        let max = *sorted.last().unwrap_or(&0);
        let escape = d.iter().filter(|&&x| u64::from(x) <= fit).count() as f64 / d.len() as f64;
        println!(
            "| {:?} | {:.3} | {} | {} | {} | {:.1}× | {:.3} |",
            s,
            s.kept_fraction(blocks),
            q(0.5),
            q(0.9),
            max,
            max as f64 * step_ns as f64 / (DEFAULT_DEADLINE_MS as f64 * 1e6),
            escape
        );
    }
}
