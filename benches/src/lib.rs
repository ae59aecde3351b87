//! Shared helpers for Granary's benchmarks: ratios against a limit measured in the same run.
#![deny(missing_docs)]

use std::time::{Duration, Instant};

/// Best (lowest) time of `rounds` runs of `f`, each run repeated until it takes ≥ `min_run`.
pub fn best_time(rounds: usize, min_run: Duration, mut f: impl FnMut()) -> Duration {
    best_time_after(rounds, min_run, || {}, &mut f)
}

/// As [`best_time`], but `setup` runs before every call of `f`, outside the timed part (for
/// work that is not the subject's, such as deleting the previous run's output).
pub fn best_time_after(
    rounds: usize,
    min_run: Duration,
    mut setup: impl FnMut(),
    mut f: impl FnMut(),
) -> Duration {
    let mut timed = |reps: u32| {
        let mut total = Duration::ZERO;
        for _ in 0..reps {
            setup();
            let t = Instant::now();
            f();
            total += t.elapsed();
        }
        total
    };
    let mut reps = 1u32;
    while timed(reps) < min_run && reps < 1 << 20 {
        reps *= 2;
    }
    (0..rounds)
        .map(|_| timed(reps) / reps)
        .min()
        .unwrap_or_default()
}

/// Measures `subject` and `limit` interleaved (so machine noise hits both alike) over `bytes`
/// bytes each, prints their throughputs and `subject / limit`, and returns the ratio.
pub fn ratio(
    name: &str,
    bytes: u64,
    subject: impl FnMut(),
    limit_name: &str,
    limit: impl FnMut(),
) -> f64 {
    ratio_after(name, bytes, || {}, subject, limit_name, limit)
}

/// As [`ratio`], but `setup` runs untimed before every call of `subject`.
pub fn ratio_after(
    name: &str,
    bytes: u64,
    mut setup: impl FnMut(),
    mut subject: impl FnMut(),
    limit_name: &str,
    mut limit: impl FnMut(),
) -> f64 {
    let mut s_best = Duration::MAX;
    let mut l_best = Duration::MAX;
    for _ in 0..3 {
        let min_run = Duration::from_millis(100);
        s_best = s_best.min(best_time_after(3, min_run, &mut setup, &mut subject));
        l_best = l_best.min(best_time(3, min_run, &mut limit));
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
