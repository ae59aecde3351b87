//! Default parameters and the formulas that size them (derivations in `docs/proofs.md`).

use crate::seal::SealParams;

/// Default sealing unit: 128 MiB (thirty-two 4 MiB shards sealed as one replica). The lazy rebuild
/// time of a unit is proportional to its size; see `docs/proofs.md`, "Sizing".
pub const DEFAULT_UNIT_BYTES: u64 = 128 << 20;

/// Default Sloth rounds per 32-byte block.
pub const DEFAULT_ROUNDS: u32 = 3;

/// Default PoSt answer deadline, milliseconds (from challenge sent to answer received).
pub const DEFAULT_DEADLINE_MS: u64 = 1_000;

/// Measured cost of one Sloth round (a 256-bit modular square root) on the reference machine
/// (AMD EPYC, 2 cores shared), nanoseconds, from `cargo run -p granary-proofs --example measure
/// --profile dev`. Used by the work-counting attack tests, never by a timer.
pub const MEASURED_SLOTH_ROUND_NS: u64 = 2_850;

/// Default challenged chunks per PoSt round.
pub const DEFAULT_POST_CHALLENGES: usize = 1_000;

/// Fraction of mis-encoded blocks a seal proof must catch (`δ`).
pub const SEAL_PROOF_DELTA: f64 = 0.05;
/// Soundness bits of the seal proof against a `δ`-fraction of mis-encoded blocks (`λ`).
pub const SEAL_PROOF_BITS: f64 = 20.0;

/// Seal-proof openings `K = ⌈λ / −log₂(1 − δ)⌉`: a replica with at least a `δ` fraction of wrongly
/// encoded blocks passes all `K` independent uniform openings with probability `(1 − δ)^K ≤ 2^−λ`.
pub fn seal_proof_openings(delta: f64, bits: f64) -> usize {
    (bits / -(1.0 - delta).log2()).ceil() as usize
}

/// `K` at the defaults (271).
pub fn default_seal_proof_openings() -> usize {
    seal_proof_openings(SEAL_PROOF_DELTA, SEAL_PROOF_BITS)
}

/// PoSt detection probability `1 − (1 − ε)^C` when a fraction `ε` of the challengeable chunks is
/// lost or wrong and `C` chunks are challenged uniformly.
pub fn post_detection_probability(lost_fraction: f64, challenges: usize) -> f64 {
    1.0 - (1.0 - lost_fraction).powf(challenges as f64)
}

/// The default [`SealParams`].
pub const DEFAULT_SEAL_PARAMS: SealParams = SealParams {
    rounds: DEFAULT_ROUNDS,
    nonce: 0,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas() {
        assert_eq!(default_seal_proof_openings(), 271);
        assert!((1.0 - SEAL_PROOF_DELTA).powf(271.0) <= 2f64.powf(-SEAL_PROOF_BITS));
        assert!((1.0 - SEAL_PROOF_DELTA).powf(270.0) > 2f64.powf(-SEAL_PROOF_BITS));
        let p = post_detection_probability(0.01, 1000);
        assert!(p > 0.9999 && p < 1.0);
        assert!(post_detection_probability(0.0, 1000) == 0.0);
    }
}
