//! Granary benchmarks live in `benches/benches/`.
