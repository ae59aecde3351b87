//! Runtime CPU detection for the multi-lane kernels.
//!
//! The CPU is detected once into a [`Platform`] value and kernels dispatch with `match`
//! (the pattern of BLAKE3's `src/platform.rs`). Miri and non-x86/ARM targets always get the
//! portable path.

use std::sync::OnceLock;

/// The SIMD capability the proof engine's kernels dispatch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Platform {
    /// Portable scalar code; always available.
    Scalar,
    /// x86-64 with AVX2 (8 × 32-bit lanes).
    Avx2,
    /// x86-64 with AVX-512F/VL. The hash kernel runs its AVX2 (8-lane) code here: the 16-lane
    /// AVX-512 intrinsics need Rust 1.89 and the workspace MSRV is 1.88.
    Avx512,
    /// AArch64 with NEON. No NEON kernel is written yet; dispatches to the scalar path.
    Neon,
}

impl Platform {
    /// Detects the best platform of this CPU (cached after the first call).
    pub fn detect() -> Self {
        static DETECTED: OnceLock<Platform> = OnceLock::new();
        *DETECTED.get_or_init(Self::detect_uncached)
    }

    #[allow(unreachable_code)]
    fn detect_uncached() -> Self {
        #[cfg(any(miri, feature = "pure"))]
        {
            return Self::Scalar;
        }
        #[cfg(all(target_arch = "x86_64", not(feature = "no_avx2")))]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx2")
            {
                return Self::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Self::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                return Self::Neon;
            }
        }
        Self::Scalar
    }

    /// Number of independent inputs the hash kernel processes per call on this platform.
    pub fn hash_lanes(self) -> usize {
        match self {
            Self::Avx2 | Self::Avx512 => 8,
            Self::Scalar | Self::Neon => 1,
        }
    }

    /// Whether the AVX2 kernels may run on this platform.
    pub(crate) fn has_avx2(self) -> bool {
        matches!(self, Self::Avx2 | Self::Avx512)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_is_stable_and_consistent() {
        let p = Platform::detect();
        assert_eq!(p, Platform::detect());
        #[cfg(all(
            target_arch = "x86_64",
            not(any(feature = "pure", feature = "no_avx2"))
        ))]
        if std::arch::is_x86_feature_detected!("avx2") {
            assert!(p.has_avx2());
        }
        #[cfg(any(feature = "pure", feature = "no_avx2"))]
        assert!(!p.has_avx2());
        assert!(p.hash_lanes() >= 1);
    }
}
