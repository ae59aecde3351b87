//! Shared helpers for Granary's benchmarks: ratios against a limit measured in the same run.
#![deny(missing_docs)]

use std::time::{Duration, Instant};

/// Best (lowest) time of `rounds` runs of `f`, each run repeated until it takes ≥ `min_run`.
pub fn best_time(rounds: usize, min_run: Duration, mut f: impl FnMut()) -> Duration {
    let mut reps = 1u32;
    loop {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        if t.elapsed() >= min_run || reps >= 1 << 20 {
            break;
        }
        reps *= 2;
    }
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed() / reps
        })
        .min()
        .unwrap_or_default()
}

/// Measures `subject` and `limit` interleaved (so machine noise hits both alike) over `bytes`
/// bytes each, prints their throughputs and `subject / limit`, and returns the ratio.
pub fn ratio(
    name: &str,
    bytes: u64,
    mut subject: impl FnMut(),
    limit_name: &str,
    mut limit: impl FnMut(),
) -> f64 {
    let mut s_best = Duration::MAX;
    let mut l_best = Duration::MAX;
    for _ in 0..3 {
        s_best = s_best.min(best_time(3, Duration::from_millis(100), &mut subject));
        l_best = l_best.min(best_time(3, Duration::from_millis(100), &mut limit));
    }
    let mbps = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    let r = l_best.as_secs_f64() / s_best.as_secs_f64();
    println!(
        "RATIO {name}: {:.0} MB/s vs {limit_name} {:.0} MB/s = {r:.3}",
        mbps(s_best),
        mbps(l_best)
    );
    r
}
