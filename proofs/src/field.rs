//! Arithmetic in the prime field of `p = 2^256 − 189` and the Sloth permutation.
//!
//! `p` is the largest prime below `2^256` and `p ≡ 3 (mod 4)`, so a square root is a single
//! exponentiation `x^((p+1)/4)`. Because `2^256 ≡ 189 (mod p)`, a 512-bit product reduces with two
//! multiply-by-189 folds (pseudo-Mersenne reduction) instead of Montgomery form: hand-rolled
//! 4 × 64-bit limbs, no dependency.
//!
//! **Encoding.** A field element is 32 bytes, little-endian. Only values `< p` are canonical; the
//! `189` values in `[p, 2^256)` are rejected by [`Fe::from_bytes`] (see `docs/proofs.md`,
//! "Field encoding").
//!
//! **Sloth** ([`sloth_forward`]) is the slow direction (a square root, ~255 sequential
//! squarings); [`sloth_inverse`] is one squaring per round.

use crate::platform::Platform;

/// `2^256 − p`.
const C: u64 = 189;

/// The modulus `p = 2^256 − 189` as little-endian limbs.
pub const MODULUS: [u64; 4] = [0u64.wrapping_sub(C), u64::MAX, u64::MAX, u64::MAX];

/// A canonical field element (`< p`), four little-endian 64-bit limbs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fe(pub(crate) [u64; 4]);

impl Fe {
    /// Zero.
    pub const ZERO: Self = Self([0; 4]);

    /// Decodes 32 little-endian bytes; `None` if the value is `≥ p`.
    #[inline(always)]
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<Self> {
        let mut l = [0u64; 4];
        for (i, limb) in l.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[8 * i..8 * i + 8]);
            *limb = u64::from_le_bytes(w);
        }
        is_canonical(&l).then_some(Self(l))
    }

    /// Encodes as 32 little-endian bytes.
    #[inline(always)]
    pub fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, limb) in self.0.iter().enumerate() {
            out[8 * i..8 * i + 8].copy_from_slice(&limb.to_le_bytes());
        }
        out
    }

    /// A small constant.
    pub const fn from_u64(v: u64) -> Self {
        Self([v, 0, 0, 0])
    }

    /// Whether the canonical value is even.
    #[inline(always)]
    pub fn is_even(self) -> bool {
        self.0[0] & 1 == 0
    }

    /// `self² mod p`.
    #[inline(always)]
    pub fn square(self) -> Self {
        Self(canonicalize(sqr_loose(&self.0)))
    }

    /// `self^((p+1)/4)`: a square root of `self` if it is a quadratic residue, otherwise a square
    /// root of `−self`.
    #[inline]
    pub fn pow_sqrt_exponent(self) -> Self {
        Self(canonicalize(pow_sqrt_loose(&self.0)))
    }
}

impl std::ops::Add for Fe {
    type Output = Self;
    /// `self + other mod p`.
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        let (s, carry) = add4(&self.0, &other.0);
        // A carry means the sum is s + 2^256 ≡ s + 189.
        let s = if carry { add_small(&s, C).0 } else { s };
        Self(canonicalize(s))
    }
}

impl std::ops::Neg for Fe {
    type Output = Self;
    /// `−self mod p`.
    #[inline(always)]
    fn neg(self) -> Self {
        if self == Self::ZERO {
            return self;
        }
        Self(sub4(&MODULUS, &self.0).0)
    }
}

impl std::ops::Sub for Fe {
    type Output = Self;
    /// `self − other mod p`.
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        self + (-other)
    }
}

impl std::ops::Mul for Fe {
    type Output = Self;
    /// `self · other mod p`.
    #[inline(always)]
    fn mul(self, other: Self) -> Self {
        Self(canonicalize(mul_loose(&self.0, &other.0)))
    }
}

/// One Sloth round forward (slow): the square root of `x` or of `−x`, with the root's parity
/// recording which (even root: `x` was a square; odd root: `−x` was).
#[inline]
pub fn sloth_round_forward(x: Fe) -> Fe {
    let r = x.pow_sqrt_exponent();
    let is_square = r.square() == x;
    let r_even = if r.is_even() { r } else { -r };
    if is_square { r_even } else { -r_even }
}

/// One Sloth round backward (fast): `y²` if `y` is even, else `−y²`.
#[inline(always)]
pub fn sloth_round_inverse(y: Fe) -> Fe {
    cond_neg(y.square(), !y.is_even())
}

/// `−x` if `flag`, else `x`, without a data-dependent branch (the parity is a coin flip, so a
/// branch mispredicts half the time).
#[inline(always)]
fn cond_neg(x: Fe, flag: bool) -> Fe {
    // p − x is p (not canonical) for x = 0; canonicalize maps it back to 0.
    let n = canonicalize(sub4(&MODULUS, &x.0).0);
    let mask = 0u64.wrapping_sub(u64::from(flag));
    Fe(std::array::from_fn(|i| (n[i] & mask) | (x.0[i] & !mask)))
}

/// Sloth with `rounds` rounds: `x ← sqrt±(x) + i` between rounds (the round constant breaks the
/// algebraic shortcut of composing square roots into one exponentiation).
#[inline]
pub fn sloth_forward(mut x: Fe, rounds: u32) -> Fe {
    for i in 0..rounds {
        if i > 0 {
            x = x + Fe::from_u64(u64::from(i));
        }
        x = sloth_round_forward(x);
    }
    x
}

/// Inverse of [`sloth_forward`]: `rounds` squarings.
#[inline]
pub fn sloth_inverse(mut y: Fe, rounds: u32) -> Fe {
    for i in (0..rounds).rev() {
        y = sloth_round_inverse(y);
        if i > 0 {
            y = y - Fe::from_u64(u64::from(i));
        }
    }
    y
}

/// [`sloth_inverse`] over 8 independent elements at once: the rounds run outer and the lanes
/// inner, so the 8 squarings of a round are independent and overlap in the pipeline (a scalar
/// multi-lane kernel: 64-bit multiplies have no wide SIMD equivalent before AVX-512 IFMA).
#[inline(always)]
pub fn sloth_inverse_x8(ys: &mut [Fe; 8], rounds: u32) {
    for i in (0..rounds).rev() {
        for y in ys.iter_mut() {
            *y = sloth_round_inverse(*y);
        }
        if i > 0 {
            let c = Fe::from_u64(u64::from(i));
            for y in ys.iter_mut() {
                *y = *y - c;
            }
        }
    }
}

/// [`sloth_inverse`] over 16 independent elements (two interleaved groups of 8 per round).
#[inline(always)]
pub fn sloth_inverse_x16(ys: &mut [Fe; 16], rounds: u32) {
    for i in (0..rounds).rev() {
        for y in ys.iter_mut() {
            *y = sloth_round_inverse(*y);
        }
        if i > 0 {
            let c = Fe::from_u64(u64::from(i));
            for y in ys.iter_mut() {
                *y = *y - c;
            }
        }
    }
}

/// [`sloth_inverse`] over 16 independent elements on `platform`: the AVX-512 IFMA kernel when
/// `platform` is [`Platform::Avx512`] and the CPU has IFMA (52-bit multiply-add, 8 lanes per
/// vector), else [`sloth_inverse_x16`].
#[inline]
pub fn sloth_inverse_x16_on(platform: Platform, ys: &mut [Fe; 16], rounds: u32) {
    if !try_ifma_x16(platform, ys, rounds) {
        sloth_inverse_x16(ys, rounds);
    }
}

/// Unseals 16 consecutive blocks given their keys: `out[l] = Sloth^−rounds(ys[l]) ⊕ keys[l]`.
/// Returns `false` (and leaves `out` unspecified) if some `ys[l]` is not a field element. On
/// [`Platform::Avx512`] CPUs with IFMA the blocks never leave vector registers (load, canonical
/// check, limbs, rounds, XOR, store); elsewhere it is [`sloth_inverse_x16`] plus byte handling.
#[inline]
pub fn unseal_x16_on(
    platform: Platform,
    ys: &[[u8; 32]; 16],
    keys: &[[u8; 32]; 16],
    rounds: u32,
    out: &mut [[u8; 32]; 16],
) -> bool {
    if let Some(ok) = try_ifma_unseal_x16(platform, ys, keys, rounds, out) {
        return ok;
    }
    let mut fe = [Fe::ZERO; 16];
    for (f, y) in fe.iter_mut().zip(ys) {
        match Fe::from_bytes(y) {
            Some(v) => *f = v,
            None => return false,
        }
    }
    sloth_inverse_x16(&mut fe, rounds);
    for ((o, f), k) in out.iter_mut().zip(&fe).zip(keys) {
        let b = f.to_bytes();
        *o = std::array::from_fn(|i| b[i] ^ k[i]);
    }
    true
}

#[rustversion::since(1.89)]
#[inline]
fn try_ifma_unseal_x16(
    platform: Platform,
    ys: &[[u8; 32]; 16],
    keys: &[[u8; 32]; 16],
    rounds: u32,
    out: &mut [[u8; 32]; 16],
) -> Option<bool> {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if platform == Platform::Avx512 && ifma::supported() {
        // SAFETY: `ifma::supported()` checked at run time that the CPU has AVX-512F and IFMA.
        return Some(unsafe { ifma::unseal_x16(ys, keys, rounds, out) });
    }
    let _ = (platform, ys, keys, rounds, out);
    None
}

#[rustversion::before(1.89)]
#[inline]
fn try_ifma_unseal_x16(
    _platform: Platform,
    _ys: &[[u8; 32]; 16],
    _keys: &[[u8; 32]; 16],
    _rounds: u32,
    _out: &mut [[u8; 32]; 16],
) -> Option<bool> {
    None
}

/// Whether this build contains the AVX-512 IFMA Sloth kernel (x86-64, Rust ≥ 1.89).
pub fn ifma_kernel_compiled() -> bool {
    ifma_compiled()
}

/// Whether [`sloth_inverse_x16_on`] runs the IFMA kernel for `platform` on this CPU.
pub fn ifma_kernel_runs(platform: Platform) -> bool {
    ifma_runs(platform)
}

#[rustversion::since(1.89)]
const fn ifma_compiled() -> bool {
    cfg!(all(target_arch = "x86_64", not(miri)))
}

#[rustversion::before(1.89)]
const fn ifma_compiled() -> bool {
    false
}

#[rustversion::since(1.89)]
fn ifma_runs(platform: Platform) -> bool {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        platform == Platform::Avx512 && ifma::supported()
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    {
        let _ = platform;
        false
    }
}

#[rustversion::before(1.89)]
fn ifma_runs(_platform: Platform) -> bool {
    false
}

#[rustversion::since(1.89)]
#[inline]
fn try_ifma_x16(platform: Platform, ys: &mut [Fe; 16], rounds: u32) -> bool {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if platform == Platform::Avx512 && ifma::supported() {
        // SAFETY: `ifma::supported()` checked at run time that the CPU has AVX-512F and IFMA.
        unsafe { ifma::sloth_inverse_x16(ys, rounds) };
        return true;
    }
    let _ = (platform, ys, rounds);
    false
}

#[rustversion::before(1.89)]
#[inline]
fn try_ifma_x16(_platform: Platform, _ys: &mut [Fe; 16], _rounds: u32) -> bool {
    false
}

/// Sloth inverse in radix 2^52 with AVX-512 IFMA, 8 elements per vector, two vectors.
///
/// An element is 5 limbs `l_0..l_4` (`Σ l_k·2^(52k)`, `l_k < 2^52`). One round, for canonical
/// input `y` (so its parity is its low bit):
/// 1. the 10 columns of `y²` (cross products once, doubled, plus the squares), each `< 2^57`;
/// 2. columns 5..9 folded down with `2^260 ≡ 3024` (before any carry), one carry pass, then the
///    bits from 2^256 up folded with `2^256 ≡ 189`, giving `v ≡ y²` with `v < 2^256 + 2^31 < 2p`;
/// 3. `t = 2p − i − v` if `y` is odd, else `t = v + p − i` (`i` the round constant, 0 in the last
///    round): both are `≡ ±y² − i` and lie in `[0, 2^257 + 2^32)`, computed limb-wise with a
///    signed carry chain;
/// 4. `t` folded at 2^256 once (then `t < 2^256 + 378`), and `t − p = (t + 189) mod 2^256` taken
///    when `t + 189 ≥ 2^256`: canonical again, ready for the next round's parity.
///
/// The serial carry steps per round are 5 + 4 + 4 (the two vectors of a batch overlap them).
///
/// Its intrinsics are stable from Rust 1.89, above the workspace MSRV (1.88): compiled only by
/// newer compilers (`rustversion`), hence the `clippy::incompatible_msrv` allowance.
#[rustversion::since(1.89)]
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[allow(clippy::incompatible_msrv)]
mod ifma {
    use std::arch::x86_64::*;

    use super::Fe;

    const M52: u64 = (1 << 52) - 1;
    const M48: u64 = (1 << 48) - 1;

    pub(super) fn supported() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512ifma")
    }

    /// 4 × 64-bit limbs to 5 × 52-bit limbs.
    #[inline(always)]
    fn to52(l: &[u64; 4]) -> [u64; 5] {
        [
            l[0] & M52,
            ((l[0] >> 52) | (l[1] << 12)) & M52,
            ((l[1] >> 40) | (l[2] << 24)) & M52,
            ((l[2] >> 28) | (l[3] << 36)) & M52,
            l[3] >> 16,
        ]
    }

    /// 5 × 52-bit limbs (value `< 2^256`) to 4 × 64-bit limbs.
    #[inline(always)]
    fn to64(l: &[u64; 5]) -> [u64; 4] {
        [
            l[0] | (l[1] << 52),
            (l[1] >> 12) | (l[2] << 40),
            (l[2] >> 24) | (l[3] << 28),
            (l[3] >> 36) | (l[4] << 16),
        ]
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn lo(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        _mm512_madd52lo_epu64(acc, a, b)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn hi(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        _mm512_madd52hi_epu64(acc, a, b)
    }

    /// Unsigned carry from limb `k` into limb `k + 1`, for `k` in `range`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn carry(l: &mut [__m512i], range: std::ops::Range<usize>) {
        let m52 = _mm512_set1_epi64(M52 as i64);
        for k in range {
            l[k + 1] = _mm512_add_epi64(l[k + 1], _mm512_srli_epi64::<52>(l[k]));
            l[k] = _mm512_and_si512(l[k], m52);
        }
    }

    /// One Sloth inverse round (see the module comment) on 8 canonical elements.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn round(y: [__m512i; 5], constant: u64) -> [__m512i; 5] {
        let z = _mm512_setzero_si512();
        let odd = _mm512_test_epi64_mask(y[0], _mm512_set1_epi64(1));
        // 1. Columns of y².
        let mut x = [z; 10];
        for i in 0..5 {
            for j in i + 1..5 {
                x[i + j] = lo(x[i + j], y[i], y[j]);
                x[i + j + 1] = hi(x[i + j + 1], y[i], y[j]);
            }
        }
        let mut c = [z; 10];
        for k in 0..10 {
            c[k] = _mm512_add_epi64(x[k], x[k]);
        }
        for i in 0..5 {
            c[2 * i] = lo(c[2 * i], y[i], y[i]);
            c[2 * i + 1] = hi(c[2 * i + 1], y[i], y[i]);
        }
        // 2. Fold columns 5..9 down with 2^260 ≡ 3024 without carrying them first: the low 52
        //    bits go through IFMA, the few bits above (c < 2^57) through a 32-bit multiply into
        //    the next limb. Then one carry pass, and the bits ≥ 2^256 fold with 2^256 ≡ 189.
        let k3024 = _mm512_set1_epi64(3024);
        let m52 = _mm512_set1_epi64(M52 as i64);
        let mut r = [c[0], c[1], c[2], c[3], c[4], z];
        for k in 0..5 {
            let low = _mm512_and_si512(c[k + 5], m52);
            let top = _mm512_mul_epu32(_mm512_srli_epi64::<52>(c[k + 5]), k3024);
            r[k] = lo(r[k], low, k3024);
            r[k + 1] = _mm512_add_epi64(hi(r[k + 1], low, k3024), top);
        }
        carry(&mut r, 0..5);
        let h = _mm512_add_epi64(_mm512_srli_epi64::<48>(r[4]), _mm512_slli_epi64::<4>(r[5]));
        r[4] = _mm512_and_si512(r[4], _mm512_set1_epi64(M48 as i64));
        let k189 = _mm512_set1_epi64(189);
        r[0] = _mm512_add_epi64(r[0], _mm512_mul_epu32(h, k189));
        // 3. t = 2p − i − v (odd y) or v + p − i (even y), limb-wise, then a signed carry.
        let full = M52 as i64;
        let two_p = [
            _mm512_set1_epi64(full - 377 - constant as i64),
            _mm512_set1_epi64(full),
            _mm512_set1_epi64(full),
            _mm512_set1_epi64(full),
            _mm512_set1_epi64((1 << 49) - 1),
        ];
        let one_p = [
            _mm512_set1_epi64(full - 188 - constant as i64),
            _mm512_set1_epi64(full),
            _mm512_set1_epi64(full),
            _mm512_set1_epi64(full),
            _mm512_set1_epi64(M48 as i64),
        ];
        let mut t = [z; 5];
        for k in 0..5 {
            let even = _mm512_add_epi64(one_p[k], r[k]);
            t[k] = _mm512_mask_sub_epi64(even, odd, two_p[k], r[k]);
        }
        for k in 0..4 {
            t[k + 1] = _mm512_add_epi64(t[k + 1], _mm512_srai_epi64::<52>(t[k]));
            t[k] = _mm512_and_si512(t[k], m52);
        }
        // 4. Canonical: fold the bits ≥ 2^256 once (t < 2^256 + 378 after it), then t − p if
        //    t + 189 ≥ 2^256. t and u = t + 189 carry side by side (independent chains).
        let m48 = _mm512_set1_epi64(M48 as i64);
        let q = _mm512_srli_epi64::<48>(t[4]);
        t[4] = _mm512_and_si512(t[4], m48);
        t[0] = _mm512_add_epi64(t[0], _mm512_mul_epu32(q, k189));
        let mut u = t;
        u[0] = _mm512_add_epi64(u[0], k189);
        for k in 0..4 {
            t[k + 1] = _mm512_add_epi64(t[k + 1], _mm512_srli_epi64::<52>(t[k]));
            t[k] = _mm512_and_si512(t[k], m52);
            u[k + 1] = _mm512_add_epi64(u[k + 1], _mm512_srli_epi64::<52>(u[k]));
            u[k] = _mm512_and_si512(u[k], m52);
        }
        let ge = _mm512_test_epi64_mask(u[4], _mm512_set1_epi64(1 << 48));
        u[4] = _mm512_and_si512(u[4], m48);
        let mut out = [z; 5];
        for k in 0..5 {
            out[k] = _mm512_mask_blend_epi64(ge, t[k], u[k]);
        }
        out
    }

    /// # Safety
    /// The CPU must support AVX-512F and AVX-512 IFMA.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn sloth_inverse_x16(ys: &mut [Fe; 16], rounds: u32) {
        // Lane `l` of vector `h` is element `8h + l`; limb arrays are filled element by element.
        let mut limbs = [[[0u64; 8]; 5]; 2];
        for (h, half) in limbs.iter_mut().enumerate() {
            for l in 0..8 {
                let e = to52(&ys[8 * h + l].0);
                for k in 0..5 {
                    half[k][l] = e[k];
                }
            }
        }
        let z = _mm512_setzero_si512();
        let mut v = [[z; 5]; 2];
        // SAFETY: AVX-512F is enabled on this function; each load/store reads or writes the 64
        // bytes of one `[u64; 8]` it borrows.
        unsafe {
            for (vh, lh) in v.iter_mut().zip(&limbs) {
                for (vk, lk) in vh.iter_mut().zip(lh) {
                    *vk = _mm512_loadu_si512(lk.as_ptr().cast());
                }
            }
        }
        // The two vectors' rounds are independent: interleaved, their carry chains overlap.
        for i in (0..rounds).rev() {
            v = [round(v[0], u64::from(i)), round(v[1], u64::from(i))];
        }
        // SAFETY: as above.
        unsafe {
            for (vh, lh) in v.iter().zip(limbs.iter_mut()) {
                for (vk, lk) in vh.iter().zip(lh.iter_mut()) {
                    _mm512_storeu_si512(lk.as_mut_ptr().cast(), *vk);
                }
            }
        }
        for (h, half) in limbs.iter().enumerate() {
            for l in 0..8 {
                let e = [half[0][l], half[1][l], half[2][l], half[3][l], half[4][l]];
                ys[8 * h + l] = Fe(to64(&e));
            }
        }
    }

    /// `_mm512_permutex2var_epi64` index vector from its 8 entries in lane order.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn idx(a: [i64; 8]) -> __m512i {
        _mm512_set_epi64(a[7], a[6], a[5], a[4], a[3], a[2], a[1], a[0])
    }

    /// # Safety
    /// The CPU must support AVX-512F and AVX-512 IFMA.
    ///
    /// [`super::unseal_x16_on`] for 16 consecutive blocks: returns `false`, writing nothing, if a
    /// block is not canonical. Each half of 8 blocks is four 64-byte loads (2 blocks each),
    /// transposed to the words `W_0..W_3` of the 8 blocks by two rounds of two-source
    /// permutes, split into 52-bit limbs, run through the rounds, joined, permuted back, XORed
    /// with the keys and stored.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn unseal_x16(
        ys: &[[u8; 32]; 16],
        keys: &[[u8; 32]; 16],
        rounds: u32,
        out: &mut [[u8; 32]; 16],
    ) -> bool {
        let z = _mm512_setzero_si512();
        let m52 = _mm512_set1_epi64(M52 as i64);
        let all = _mm512_set1_epi64(-1);
        let p0 = _mm512_set1_epi64(super::MODULUS[0] as i64);
        // Words of 8 blocks from their 4 pairs, and back (`b` = block, `q` = 64-bit word).
        let gather_lo = idx([0, 4, 8, 12, 1, 5, 9, 13]); // b0..3.q0, b0..3.q1
        let gather_hi = idx([2, 6, 10, 14, 3, 7, 11, 15]); // b0..3.q2, b0..3.q3
        let low4 = idx([0, 1, 2, 3, 8, 9, 10, 11]);
        let high4 = idx([4, 5, 6, 7, 12, 13, 14, 15]);
        let pair_lo = idx([0, 8, 1, 9, 2, 10, 3, 11]);
        let pair_hi = idx([4, 12, 5, 13, 6, 14, 7, 15]);
        let join_lo = idx([0, 1, 8, 9, 2, 3, 10, 11]);
        let join_hi = idx([4, 5, 12, 13, 6, 7, 14, 15]);
        let mut v = [[z; 5]; 2];
        for (h, vh) in v.iter_mut().enumerate() {
            // SAFETY: AVX-512F is enabled; each load reads the 64 bytes of two consecutive
            // blocks 8h + 2i and 8h + 2i + 1 (< 16) of `ys`, through a pointer derived from the
            // whole array.
            let zs: [__m512i; 4] = unsafe {
                let base = ys.as_ptr().add(8 * h);
                [
                    _mm512_loadu_si512(base.cast()),
                    _mm512_loadu_si512(base.add(2).cast()),
                    _mm512_loadu_si512(base.add(4).cast()),
                    _mm512_loadu_si512(base.add(6).cast()),
                ]
            };
            let a_lo = _mm512_permutex2var_epi64(zs[0], gather_lo, zs[1]);
            let a_hi = _mm512_permutex2var_epi64(zs[0], gather_hi, zs[1]);
            let b_lo = _mm512_permutex2var_epi64(zs[2], gather_lo, zs[3]);
            let b_hi = _mm512_permutex2var_epi64(zs[2], gather_hi, zs[3]);
            let w = [
                _mm512_permutex2var_epi64(a_lo, low4, b_lo),
                _mm512_permutex2var_epi64(a_lo, high4, b_lo),
                _mm512_permutex2var_epi64(a_hi, low4, b_hi),
                _mm512_permutex2var_epi64(a_hi, high4, b_hi),
            ];
            // Not canonical: w3 = w2 = w1 = 2^64 − 1 and w0 ≥ p's low word.
            let bad = _mm512_cmpeq_epu64_mask(w[3], all)
                & _mm512_cmpeq_epu64_mask(w[2], all)
                & _mm512_cmpeq_epu64_mask(w[1], all)
                & _mm512_cmpge_epu64_mask(w[0], p0);
            if bad != 0 {
                return false;
            }
            *vh = [
                _mm512_and_si512(w[0], m52),
                _mm512_and_si512(
                    _mm512_or_si512(_mm512_srli_epi64::<52>(w[0]), _mm512_slli_epi64::<12>(w[1])),
                    m52,
                ),
                _mm512_and_si512(
                    _mm512_or_si512(_mm512_srli_epi64::<40>(w[1]), _mm512_slli_epi64::<24>(w[2])),
                    m52,
                ),
                _mm512_and_si512(
                    _mm512_or_si512(_mm512_srli_epi64::<28>(w[2]), _mm512_slli_epi64::<36>(w[3])),
                    m52,
                ),
                _mm512_srli_epi64::<16>(w[3]),
            ];
        }
        for i in (0..rounds).rev() {
            v = [round(v[0], u64::from(i)), round(v[1], u64::from(i))];
        }
        for (h, l) in v.iter().enumerate() {
            let w = [
                _mm512_or_si512(l[0], _mm512_slli_epi64::<52>(l[1])),
                _mm512_or_si512(_mm512_srli_epi64::<12>(l[1]), _mm512_slli_epi64::<40>(l[2])),
                _mm512_or_si512(_mm512_srli_epi64::<24>(l[2]), _mm512_slli_epi64::<28>(l[3])),
                _mm512_or_si512(_mm512_srli_epi64::<36>(l[3]), _mm512_slli_epi64::<16>(l[4])),
            ];
            let p01 = _mm512_permutex2var_epi64(w[0], pair_lo, w[1]); // b0..3: q0, q1
            let p23 = _mm512_permutex2var_epi64(w[2], pair_lo, w[3]); // b0..3: q2, q3
            let p45 = _mm512_permutex2var_epi64(w[0], pair_hi, w[1]); // b4..7: q0, q1
            let p67 = _mm512_permutex2var_epi64(w[2], pair_hi, w[3]); // b4..7: q2, q3
            let zs = [
                _mm512_permutex2var_epi64(p01, join_lo, p23),
                _mm512_permutex2var_epi64(p01, join_hi, p23),
                _mm512_permutex2var_epi64(p45, join_lo, p67),
                _mm512_permutex2var_epi64(p45, join_hi, p67),
            ];
            for (i, zi) in zs.into_iter().enumerate() {
                let b = 8 * h + 2 * i;
                // SAFETY: AVX-512F is enabled; the load reads and the store writes the 64 bytes
                // of blocks b and b + 1 (< 16) of `keys` / `out`, through pointers derived from
                // the whole arrays.
                unsafe {
                    let k = _mm512_loadu_si512(keys.as_ptr().add(b).cast());
                    let o = out.as_mut_ptr().add(b);
                    _mm512_storeu_si512(o.cast(), _mm512_xor_si512(zi, k));
                }
            }
        }
        true
    }
}

fn is_canonical(l: &[u64; 4]) -> bool {
    !(l[3] == u64::MAX && l[2] == u64::MAX && l[1] == u64::MAX && l[0] >= MODULUS[0])
}

/// Maps any value `< 2^256` to `[0, p)`.
#[inline(always)]
fn canonicalize(l: [u64; 4]) -> [u64; 4] {
    // l ≥ p ⟺ l + 189 ≥ 2^256; in that case l − p = (l + 189) mod 2^256.
    let (s, carry) = add_small(&l, C);
    if carry { s } else { l }
}

#[inline(always)]
fn add_small(a: &[u64; 4], b: u64) -> ([u64; 4], bool) {
    let mut out = *a;
    let (v, mut c) = out[0].overflowing_add(b);
    out[0] = v;
    for limb in out.iter_mut().skip(1) {
        let (v, c2) = limb.overflowing_add(u64::from(c));
        *limb = v;
        c = c2;
    }
    (out, c)
}

#[inline(always)]
fn add4(a: &[u64; 4], b: &[u64; 4]) -> ([u64; 4], bool) {
    let mut out = [0u64; 4];
    let mut c = false;
    for i in 0..4 {
        let (v1, c1) = a[i].overflowing_add(b[i]);
        let (v2, c2) = v1.overflowing_add(u64::from(c));
        out[i] = v2;
        c = c1 | c2;
    }
    (out, c)
}

#[inline(always)]
fn sub4(a: &[u64; 4], b: &[u64; 4]) -> ([u64; 4], bool) {
    let mut out = [0u64; 4];
    let mut borrow = false;
    for i in 0..4 {
        let (v1, b1) = a[i].overflowing_sub(b[i]);
        let (v2, b2) = v1.overflowing_sub(u64::from(borrow));
        out[i] = v2;
        borrow = b1 | b2;
    }
    (out, borrow)
}

/// `a · b + c + d` as (low, high) words; cannot overflow u128, written without checked ops
/// because the workspace's dev profile (used for benchmarks) keeps overflow checks on.
#[inline(always)]
fn mac(a: u64, b: u64, c: u64, d: u64) -> (u64, u64) {
    let t = (u128::from(a) * u128::from(b))
        .wrapping_add(u128::from(c))
        .wrapping_add(u128::from(d));
    (t as u64, (t >> 64) as u64)
}

/// Reduces a 512-bit value to `< 2^256` (not necessarily canonical) using `2^256 ≡ 189`.
#[inline(always)]
fn reduce_wide(w: &[u64; 8]) -> [u64; 4] {
    let mut r = [0u64; 4];
    let mut carry = 0u64;
    for i in 0..4 {
        let (lo, hi) = mac(w[i + 4], C, w[i], carry);
        r[i] = lo;
        carry = hi;
    }
    // carry < 190: fold once more.
    let (r, c) = add_small(&r, carry.wrapping_mul(C));
    if c {
        // Wrapped past 2^256: r is now tiny, adding 189 cannot overflow again.
        add_small(&r, C).0
    } else {
        r
    }
}

#[inline(always)]
fn mul_loose(a: &[u64; 4], b: &[u64; 4]) -> [u64; 4] {
    let mut w = [0u64; 8];
    for i in 0..4 {
        let mut carry = 0u64;
        for j in 0..4 {
            let (lo, hi) = mac(a[i], b[j], w[i + j], carry);
            w[i + j] = lo;
            carry = hi;
        }
        w[i + 4] = carry;
    }
    reduce_wide(&w)
}

#[inline(always)]
fn adc(a: u64, b: u64, carry: u64) -> (u64, u64) {
    let t = u128::from(a)
        .wrapping_add(u128::from(b))
        .wrapping_add(u128::from(carry));
    (t as u64, (t >> 64) as u64)
}

/// Straight-line 4-limb squaring: 6 cross products doubled, 4 diagonal products, one reduction.
#[inline(always)]
fn sqr_loose(a: &[u64; 4]) -> [u64; 4] {
    let [a0, a1, a2, a3] = *a;
    let (w1, c) = mac(a0, a1, 0, 0);
    let (w2, c) = mac(a0, a2, 0, c);
    let (w3, w4) = mac(a0, a3, 0, c);
    let (w3, c) = mac(a1, a2, w3, 0);
    let (w4, w5) = mac(a1, a3, w4, c);
    let (w5, w6) = mac(a2, a3, w5, 0);
    let w7 = w6 >> 63;
    let w6 = (w6 << 1) | (w5 >> 63);
    let w5 = (w5 << 1) | (w4 >> 63);
    let w4 = (w4 << 1) | (w3 >> 63);
    let w3 = (w3 << 1) | (w2 >> 63);
    let w2 = (w2 << 1) | (w1 >> 63);
    let w1 = w1 << 1;
    let (d0, e0) = mac(a0, a0, 0, 0);
    let (d1, e1) = mac(a1, a1, 0, 0);
    let (d2, e2) = mac(a2, a2, 0, 0);
    let (d3, e3) = mac(a3, a3, 0, 0);
    let (w1, c) = adc(w1, e0, 0);
    let (w2, c) = adc(w2, d1, c);
    let (w3, c) = adc(w3, e1, c);
    let (w4, c) = adc(w4, d2, c);
    let (w5, c) = adc(w5, e2, c);
    let (w6, c) = adc(w6, d3, c);
    let w7 = w7.wrapping_add(e3).wrapping_add(c);
    reduce_wide(&[d0, w1, w2, w3, w4, w5, w6, w7])
}

#[inline(always)]
fn sqr_n(mut a: [u64; 4], n: u32) -> [u64; 4] {
    for _ in 0..n {
        a = sqr_loose(&a);
    }
    a
}

/// `x^((p+1)/4) = x^(2^254 − 47)`, where `2^254 − 47 = (2^248 − 1)·2^6 + 17`: an addition chain of
/// 255 squarings and 13 multiplications.
#[inline(always)]
fn pow_sqrt_loose(x: &[u64; 4]) -> [u64; 4] {
    let x1 = *x;
    let x2 = mul_loose(&sqr_loose(&x1), &x1); // 2^2 − 1
    let x3 = mul_loose(&sqr_loose(&x2), &x1); // 2^3 − 1
    let x6 = mul_loose(&sqr_n(x3, 3), &x3);
    let x8 = mul_loose(&sqr_n(x6, 2), &x2);
    let x12 = mul_loose(&sqr_n(x6, 6), &x6);
    let x24 = mul_loose(&sqr_n(x12, 12), &x12);
    let x48 = mul_loose(&sqr_n(x24, 24), &x24);
    let x96 = mul_loose(&sqr_n(x48, 48), &x48);
    let x192 = mul_loose(&sqr_n(x96, 96), &x96);
    let x240 = mul_loose(&sqr_n(x192, 48), &x48);
    let x248 = mul_loose(&sqr_n(x240, 8), &x8);
    let x17 = mul_loose(&sqr_n(x1, 4), &x1);
    mul_loose(&sqr_n(x248, 6), &x17)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::reference;

    fn fe_strategy() -> impl Strategy<Value = Fe> {
        prop_oneof![
            any::<[u8; 32]>().prop_filter_map("canonical", |b| Fe::from_bytes(&b)),
            (0u64..1000).prop_map(|v| Fe(sub4(&MODULUS, &[v + 1, 0, 0, 0]).0)),
            (0u64..1000).prop_map(Fe::from_u64),
        ]
    }

    #[test]
    fn sixteen_lane_inverse_edge_values() {
        let p_minus = |v: u64| Fe(sub4(&MODULUS, &[v, 0, 0, 0]).0);
        // Values next to p and 2^256, zero, one, the round constants, limb-boundary patterns.
        let edges: [Fe; 16] = [
            Fe::ZERO,
            Fe::from_u64(1),
            Fe::from_u64(2),
            Fe::from_u64(3),
            p_minus(1),
            p_minus(2),
            p_minus(3),
            p_minus(189),
            Fe([u64::MAX, u64::MAX, u64::MAX, 0]),
            Fe([0, 0, 0, 1 << 63]),
            Fe([0, 0, 1 << 63, 0]),
            Fe([u64::MAX, 0, 0, u64::MAX >> 1]),
            Fe([1 << 52, 1 << 40, 1 << 28, 1 << 16]),
            Fe([(1 << 52) - 1, 0, 0, 0]),
            p_minus(1u64 << 32),
            Fe([0x5555_5555_5555_5555; 4]),
        ];
        let near_p: Vec<Fe> = (1..200).map(p_minus).collect();
        for rounds in 0..4 {
            for chunk in std::iter::once(&edges[..]).chain(near_p.chunks_exact(16)) {
                let xs: [Fe; 16] = std::array::from_fn(|l| chunk[l]);
                for p in Platform::available() {
                    let mut lanes = xs;
                    sloth_inverse_x16_on(p, &mut lanes, rounds);
                    for l in 0..16 {
                        assert_eq!(
                            lanes[l],
                            sloth_inverse(xs[l], rounds),
                            "{p:?} {rounds} lane {l}"
                        );
                    }
                }
            }
        }
        #[cfg(all(
            target_arch = "x86_64",
            not(any(miri, feature = "pure", feature = "no_avx2"))
        ))]
        if ifma_kernel_compiled()
            && std::arch::is_x86_feature_detected!("avx512ifma")
            && Platform::detect() == Platform::Avx512
        {
            assert!(ifma_kernel_runs(Platform::Avx512));
        }
        assert!(!ifma_kernel_runs(Platform::Scalar));
    }

    #[test]
    fn modulus_edges() {
        let p_minus_1 = Fe(sub4(&MODULUS, &[1, 0, 0, 0]).0);
        assert_eq!(p_minus_1 + Fe::from_u64(1), Fe::ZERO);
        assert_eq!(Fe::from_bytes(&[0xff; 32]), None);
        let mut p_bytes = [0xff; 32];
        p_bytes[0] = MODULUS[0] as u8;
        assert_eq!(Fe::from_bytes(&p_bytes), None);
        p_bytes[0] -= 1;
        assert_eq!(Fe::from_bytes(&p_bytes), Some(p_minus_1));
        // (−1)² = 1 and −1 is a non-residue for p ≡ 3 mod 4.
        assert_eq!(p_minus_1.square(), Fe::from_u64(1));
        assert_ne!(p_minus_1.pow_sqrt_exponent().square(), p_minus_1);
    }

    proptest! {
        #[test]
        fn mul_and_square_match_reference(a in fe_strategy(), b in fe_strategy()) {
            prop_assert_eq!((a * b).0, reference::mul_mod_p(&a.0, &b.0));
            prop_assert_eq!(a.square().0, reference::mul_mod_p(&a.0, &a.0));
            prop_assert_eq!((a + b).0, reference::add_mod_p(&a.0, &b.0));
        }

        #[test]
        fn multi_lane_inverse_equals_scalar(xs in proptest::array::uniform8(fe_strategy()), rounds in 1u32..4) {
            let mut lanes = xs;
            sloth_inverse_x8(&mut lanes, rounds);
            for l in 0..8 {
                prop_assert_eq!(lanes[l], sloth_inverse(xs[l], rounds));
            }
        }

        /// Every platform's 16-lane inverse (the IFMA kernel on AVX-512 IFMA CPUs) equals the
        /// scalar inverse, including values next to `p`, 0 and the round constants.
        #[test]
        fn sixteen_lane_inverse_equals_scalar_on_every_platform(
            xs in proptest::array::uniform16(fe_strategy()),
            rounds in 0u32..5,
        ) {
            for p in Platform::available() {
                let mut lanes = xs;
                sloth_inverse_x16_on(p, &mut lanes, rounds);
                for l in 0..16 {
                    prop_assert_eq!(lanes[l], sloth_inverse(xs[l], rounds), "{:?} lane {}", p, l);
                }
            }
        }

        /// The 16-block byte-level unseal on every platform equals the scalar inverse XOR the
        /// key, and rejects a non-canonical block in any lane.
        #[test]
        fn sixteen_block_unseal_equals_scalar_on_every_platform(
            xs in proptest::array::uniform16(fe_strategy()),
            keys in proptest::array::uniform16(any::<[u8; 32]>()),
            rounds in 0u32..5,
            bad_lane in 0usize..16,
            bad_low in 0u8..189,
        ) {
            let ys: [[u8; 32]; 16] = std::array::from_fn(|l| xs[l].to_bytes());
            let want: [[u8; 32]; 16] = std::array::from_fn(|l| {
                let b = sloth_inverse(xs[l], rounds).to_bytes();
                std::array::from_fn(|i| b[i] ^ keys[l][i])
            });
            let mut bad = ys;
            bad[bad_lane] = [0xff; 32];
            bad[bad_lane][0] = 0x43u8.wrapping_add(bad_low);
            for p in Platform::available() {
                let mut out = [[0u8; 32]; 16];
                prop_assert!(unseal_x16_on(p, &ys, &keys, rounds, &mut out));
                prop_assert_eq!(out, want, "{:?}", p);
                prop_assert!(!unseal_x16_on(p, &bad, &keys, rounds, &mut out), "{:?}", p);
            }
        }

        #[test]
        fn sloth_round_trips(x in fe_strategy(), rounds in 1u32..4) {
            let y = sloth_forward(x, rounds);
            prop_assert_eq!(sloth_inverse(y, rounds), x);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn sqrt_exponent_matches_reference(x in fe_strategy()) {
            prop_assert_eq!(x.pow_sqrt_exponent().0, reference::pow_sqrt_exponent(&x.0));
        }
    }
}
