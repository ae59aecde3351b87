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
    /// x86-64 with AVX-512F/VL: the 16-lane hash kernel (compiled by Rust ≥ 1.89, whose standard
    /// library has the AVX-512 intrinsics; a build by Rust 1.88, the MSRV, runs AVX2 here).
    Avx512,
    /// AArch64 with NEON: the 4-lane hash kernel (little-endian targets).
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
        #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
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
            Self::Avx512 if crate::keyhash::avx512_kernel_compiled() => 16,
            Self::Avx2 | Self::Avx512 => 8,
            Self::Neon => 4,
            Self::Scalar => 1,
        }
    }

    /// Whether this CPU (and build) can run the kernels of `self`. The test-only features `pure`
    /// and `no_avx2` remove the platforms they disable. Kernels also check the CPU themselves
    /// before running SIMD code, so passing an unsupported platform is never unsound: it falls
    /// back to a narrower kernel.
    #[allow(unreachable_code)]
    pub fn is_supported(self) -> bool {
        if self == Self::Scalar {
            return true;
        }
        #[cfg(any(miri, feature = "pure"))]
        {
            return false;
        }
        #[cfg(all(target_arch = "x86_64", not(feature = "no_avx2")))]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2");
            return match self {
                Self::Avx2 => avx2,
                Self::Avx512 => {
                    avx2 && std::arch::is_x86_feature_detected!("avx512f")
                        && std::arch::is_x86_feature_detected!("avx512vl")
                }
                _ => false,
            };
        }
        #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
        {
            return self == Self::Neon && std::arch::is_aarch64_feature_detected!("neon");
        }
        false
    }

    /// Every platform this CPU can run, narrowest first (always starts with [`Platform::Scalar`]);
    /// tests and benchmarks compare each against the scalar path.
    pub fn available() -> Vec<Self> {
        [Self::Scalar, Self::Neon, Self::Avx2, Self::Avx512]
            .into_iter()
            .filter(|p| p.is_supported())
            .collect()
    }

    /// Whether the AVX2 kernels may run on this platform.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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
        // NEON is part of every little-endian aarch64 CPU, so the NEON kernels must be the ones
        // chosen there (CI runs this crate's tests on aarch64 under qemu: scripts/test-aarch64.sh).
        #[cfg(all(
            target_arch = "aarch64",
            target_endian = "little",
            not(feature = "pure")
        ))]
        {
            assert_eq!(p, Platform::Neon);
            assert_eq!(Platform::available(), [Platform::Scalar, Platform::Neon]);
        }
        assert!(p.hash_lanes() >= 1);
        assert!(p.is_supported());
        assert_eq!(Platform::available().last(), Some(&p));
    }
}
