//! Multi-lane parent-key hashing.
//!
//! The key of replica block `j` is the BLAKE3 chunk chaining value, keyed by `replica_id`, of
//! chunk number `j` whose content is the 256 bytes of the block's 8 parents (exactly 4 full
//! compression blocks, no padding): see [`crate::reference::parent_key`] for the definition through
//! BLAKE3's public `hazmat` API. Sealing computes one key at a time (the chain is sequential);
//! unsealing and proof verification compute many independent keys, which this module does many at
//! a time (one 32-bit SIMD lane per input), dispatched on [`Platform`]:
//!
//! | platform | kernel | keys per call |
//! |---|---|---|
//! | [`Platform::Avx512`] | AVX-512F, `vprord` rotations (compiled with Rust ≥ 1.89) | 16 |
//! | [`Platform::Avx2`] | AVX2 | 8 |
//! | [`Platform::Neon`] | NEON (aarch64 only) | 4 |
//! | [`Platform::Scalar`] | portable | 1 |
//!
//! The kernels read the parents' blocks where they lie ([`parent_keys_refs`] takes one reference
//! per parent block), so unsealing never copies the 256-byte inputs. Every kernel is checked for
//! sameness against [`crate::reference::parent_key`] in this module's tests.

use crate::drg::PARENTS;
use crate::platform::Platform;

/// Bytes hashed per key: 8 parents × 32 bytes.
pub const KEY_INPUT_LEN: usize = 256;
/// Inputs per call of [`parent_keys_x8`].
pub const LANES: usize = 8;
/// Inputs per call of [`parent_keys_refs_x16`], the widest kernel.
pub const MAX_LANES: usize = 16;

/// The parent blocks of one key, in parent order (`PARENTS × 32 = KEY_INPUT_LEN` bytes).
pub type ParentRefs<'a> = [&'a [u8; 32]; PARENTS];

/// 256 zero bytes: the key input of block 0, which has no parents.
pub static ZERO_BLOCK: [u8; 32] = [0; 32];

const IV: [u32; 8] = [
    0x6A09_E667,
    0xBB67_AE85,
    0x3C6E_F372,
    0xA54F_F53A,
    0x510E_527F,
    0x9B05_688C,
    0x1F83_D9AB,
    0x5BE0_CD19,
];
const CHUNK_START: u32 = 1;
const CHUNK_END: u32 = 2;
const KEYED_HASH: u32 = 16;
const PERMUTATION: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];

const fn schedule() -> [[usize; 16]; 7] {
    let mut s = [[0usize; 16]; 7];
    let mut i = 0;
    while i < 16 {
        s[0][i] = i;
        i += 1;
    }
    let mut r = 1;
    while r < 7 {
        let mut i = 0;
        while i < 16 {
            s[r][i] = s[r - 1][PERMUTATION[i]];
            i += 1;
        }
        r += 1;
    }
    s
}
const SCHEDULE: [[usize; 16]; 7] = schedule();

/// The 7 rounds of a BLAKE3 compression, unrolled, with the message schedule resolved at compile
/// time (so the message vectors stay in registers instead of being indexed through memory).
macro_rules! seven_rounds {
    ($g:ident, $v:ident, $m:ident) => {
        seven_rounds!(@round $g, $v, $m, 0);
        seven_rounds!(@round $g, $v, $m, 1);
        seven_rounds!(@round $g, $v, $m, 2);
        seven_rounds!(@round $g, $v, $m, 3);
        seven_rounds!(@round $g, $v, $m, 4);
        seven_rounds!(@round $g, $v, $m, 5);
        seven_rounds!(@round $g, $v, $m, 6);
    };
    (@round $g:ident, $v:ident, $m:ident, $r:literal) => {{
        const S: [usize; 16] = SCHEDULE[$r];
        $g(&mut $v, 0, 4, 8, 12, $m[S[0]], $m[S[1]]);
        $g(&mut $v, 1, 5, 9, 13, $m[S[2]], $m[S[3]]);
        $g(&mut $v, 2, 6, 10, 14, $m[S[4]], $m[S[5]]);
        $g(&mut $v, 3, 7, 11, 15, $m[S[6]], $m[S[7]]);
        $g(&mut $v, 0, 5, 10, 15, $m[S[8]], $m[S[9]]);
        $g(&mut $v, 1, 6, 11, 12, $m[S[10]], $m[S[11]]);
        $g(&mut $v, 2, 7, 8, 13, $m[S[12]], $m[S[13]]);
        $g(&mut $v, 3, 4, 9, 14, $m[S[14]], $m[S[15]]);
    }};
}

fn key_words(key: &[u8; 32]) -> [u32; 8] {
    let mut w = [0u32; 8];
    for (i, word) in w.iter_mut().enumerate() {
        *word = u32::from_le_bytes([key[4 * i], key[4 * i + 1], key[4 * i + 2], key[4 * i + 3]]);
    }
    w
}

fn block_flags(block: usize) -> u32 {
    let mut f = KEYED_HASH;
    if block == 0 {
        f |= CHUNK_START;
    }
    if block == KEY_INPUT_LEN / 64 - 1 {
        f |= CHUNK_END;
    }
    f
}

#[inline(always)]
fn g(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize, mx: u32, my: u32) {
    s[a] = s[a].wrapping_add(s[b]).wrapping_add(mx);
    s[d] = (s[d] ^ s[a]).rotate_right(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_right(12);
    s[a] = s[a].wrapping_add(s[b]).wrapping_add(my);
    s[d] = (s[d] ^ s[a]).rotate_right(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_right(7);
}

fn compress(cv: &[u32; 8], m: &[u32; 16], counter: u64, flags: u32) -> [u32; 8] {
    let mut s = [
        cv[0],
        cv[1],
        cv[2],
        cv[3],
        cv[4],
        cv[5],
        cv[6],
        cv[7],
        IV[0],
        IV[1],
        IV[2],
        IV[3],
        counter as u32,
        (counter >> 32) as u32,
        64,
        flags,
    ];
    for sched in &SCHEDULE {
        let w = |i: usize| m[sched[i]];
        g(&mut s, 0, 4, 8, 12, w(0), w(1));
        g(&mut s, 1, 5, 9, 13, w(2), w(3));
        g(&mut s, 2, 6, 10, 14, w(4), w(5));
        g(&mut s, 3, 7, 11, 15, w(6), w(7));
        g(&mut s, 0, 5, 10, 15, w(8), w(9));
        g(&mut s, 1, 6, 11, 12, w(10), w(11));
        g(&mut s, 2, 7, 8, 13, w(12), w(13));
        g(&mut s, 3, 4, 9, 14, w(14), w(15));
    }
    let mut out = [0u32; 8];
    for i in 0..8 {
        out[i] = s[i] ^ s[i + 8];
    }
    out
}

fn cv_bytes(cv: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, w) in cv.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// The 8 parent blocks of a contiguous 256-byte key input.
pub fn split_input(input: &[u8; KEY_INPUT_LEN]) -> ParentRefs<'_> {
    let (blocks, _) = input.as_chunks::<32>();
    std::array::from_fn(|k| &blocks[k])
}

/// One parent key from its parent blocks, portable scalar code.
pub fn parent_key_scalar_refs(replica_id: &[u8; 32], j: u64, parents: &ParentRefs<'_>) -> [u8; 32] {
    let mut cv = key_words(replica_id);
    for b in 0..KEY_INPUT_LEN / 64 {
        let mut m = [0u32; 16];
        for (i, word) in m.iter_mut().enumerate() {
            let blk = parents[2 * b + i / 8];
            let o = 4 * (i % 8);
            *word = u32::from_le_bytes([blk[o], blk[o + 1], blk[o + 2], blk[o + 3]]);
        }
        cv = compress(&cv, &m, j, block_flags(b));
    }
    cv_bytes(&cv)
}

/// One parent key, portable scalar code.
pub fn parent_key_scalar(replica_id: &[u8; 32], j: u64, input: &[u8; KEY_INPUT_LEN]) -> [u8; 32] {
    parent_key_scalar_refs(replica_id, j, &split_input(input))
}

/// Whether this build contains the 16-lane AVX-512 kernel (x86-64, compiled by Rust ≥ 1.89,
/// whose standard library has the AVX-512 intrinsics; older compilers run AVX2 on AVX-512 CPUs).
pub fn avx512_kernel_compiled() -> bool {
    avx512_compiled()
}

#[rustversion::since(1.89)]
const fn avx512_compiled() -> bool {
    cfg!(all(target_arch = "x86_64", not(miri)))
}

#[rustversion::before(1.89)]
const fn avx512_compiled() -> bool {
    false
}

/// The AVX-512 kernel when `platform` is [`Platform::Avx512`], this build has it and the CPU
/// supports it; otherwise `None`.
#[rustversion::since(1.89)]
#[inline]
fn try_avx512_x16(
    platform: Platform,
    replica_id: &[u8; 32],
    counters: &[u64; MAX_LANES],
    parents: &[ParentRefs<'_>; MAX_LANES],
) -> Option<[[u8; 32]; MAX_LANES]> {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if platform == Platform::Avx512 && avx512::supported() {
        // SAFETY: `avx512::supported()` checked at run time that the CPU has AVX-512F.
        return Some(unsafe { avx512::parent_keys_x16(replica_id, counters, parents) });
    }
    let _ = (platform, replica_id, counters, parents);
    None
}

#[rustversion::before(1.89)]
#[inline]
fn try_avx512_x16(
    _platform: Platform,
    _replica_id: &[u8; 32],
    _counters: &[u64; MAX_LANES],
    _parents: &[ParentRefs<'_>; MAX_LANES],
) -> Option<[[u8; 32]; MAX_LANES]> {
    None
}

/// Sixteen parent keys at once from their parent blocks: one AVX-512 call on
/// [`Platform::Avx512`], else two calls of [`parent_keys_refs_x8`].
pub fn parent_keys_refs_x16(
    platform: Platform,
    replica_id: &[u8; 32],
    counters: &[u64; MAX_LANES],
    parents: &[ParentRefs<'_>; MAX_LANES],
) -> [[u8; 32]; MAX_LANES] {
    if let Some(keys) = try_avx512_x16(platform, replica_id, counters, parents) {
        return keys;
    }
    let mut out = [[0u8; 32]; MAX_LANES];
    let (cs, _) = counters.as_chunks::<LANES>();
    let (ps, _) = parents.as_chunks::<LANES>();
    for (h, (c, p)) in cs.iter().zip(ps).enumerate() {
        out[h * LANES..(h + 1) * LANES]
            .copy_from_slice(&parent_keys_refs_x8(platform, replica_id, c, p));
    }
    out
}

/// Eight parent keys at once from their parent blocks on `platform` (AVX2 on AVX2 and AVX-512
/// CPUs, two 4-lane NEON calls on aarch64, else scalar).
pub fn parent_keys_refs_x8(
    platform: Platform,
    replica_id: &[u8; 32],
    counters: &[u64; LANES],
    parents: &[ParentRefs<'_>; LANES],
) -> [[u8; 32]; LANES] {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if platform.has_avx2() && avx2::supported() {
        // SAFETY: `avx2::supported()` checked at run time that the CPU has AVX2.
        return unsafe { avx2::parent_keys_x8(replica_id, counters, parents) };
    }
    #[cfg(all(target_arch = "aarch64", target_endian = "little", not(miri)))]
    if platform == Platform::Neon && neon::supported() {
        let mut out = [[0u8; 32]; LANES];
        let (cs, _) = counters.as_chunks::<4>();
        let (ps, _) = parents.as_chunks::<4>();
        for (h, (c, p)) in cs.iter().zip(ps).enumerate() {
            // SAFETY: `neon::supported()` checked at run time that the CPU has NEON.
            let keys = unsafe { neon::parent_keys_x4(replica_id, c, p) };
            out[h * 4..h * 4 + 4].copy_from_slice(&keys);
        }
        return out;
    }
    let _ = platform;
    std::array::from_fn(|l| parent_key_scalar_refs(replica_id, counters[l], &parents[l]))
}

/// Eight parent keys at once on `platform` (see [`parent_keys_refs_x8`]).
pub fn parent_keys_x8(
    platform: Platform,
    replica_id: &[u8; 32],
    counters: &[u64; LANES],
    inputs: &[[u8; KEY_INPUT_LEN]; LANES],
) -> [[u8; 32]; LANES] {
    let parents: [ParentRefs<'_>; LANES] = std::array::from_fn(|l| split_input(&inputs[l]));
    parent_keys_refs_x8(platform, replica_id, counters, &parents)
}

/// Parent keys for any number of inputs given as parent blocks: groups of 16 through
/// [`parent_keys_refs_x16`], then a group of 8, then the scalar path.
pub fn parent_keys_refs(
    platform: Platform,
    replica_id: &[u8; 32],
    counters: &[u64],
    parents: &[ParentRefs<'_>],
    out: &mut [[u8; 32]],
) {
    debug_assert_eq!(counters.len(), parents.len());
    debug_assert_eq!(out.len(), parents.len());
    let (c16, c_rest) = counters.as_chunks::<MAX_LANES>();
    let (p16, p_rest) = parents.as_chunks::<MAX_LANES>();
    let (o16, o_rest) = out.as_chunks_mut::<MAX_LANES>();
    for ((c, p), o) in c16.iter().zip(p16).zip(o16) {
        *o = parent_keys_refs_x16(platform, replica_id, c, p);
    }
    let (c8, c_rest) = c_rest.as_chunks::<LANES>();
    let (p8, p_rest) = p_rest.as_chunks::<LANES>();
    let (o8, o_rest) = o_rest.as_chunks_mut::<LANES>();
    for ((c, p), o) in c8.iter().zip(p8).zip(o8) {
        *o = parent_keys_refs_x8(platform, replica_id, c, p);
    }
    for ((&c, p), o) in c_rest.iter().zip(p_rest).zip(o_rest) {
        *o = parent_key_scalar_refs(replica_id, c, p);
    }
}

/// Parent keys for any number of contiguous 256-byte inputs (see [`parent_keys_refs`]).
pub fn parent_keys(
    platform: Platform,
    replica_id: &[u8; 32],
    counters: &[u64],
    inputs: &[[u8; KEY_INPUT_LEN]],
    out: &mut [[u8; 32]],
) {
    let parents: Vec<ParentRefs<'_>> = inputs.iter().map(split_input).collect();
    parent_keys_refs(platform, replica_id, counters, &parents, out);
}

#[cfg(all(target_arch = "x86_64", not(miri)))]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{IV, KEY_INPUT_LEN, LANES, ParentRefs, SCHEDULE, block_flags, key_words};

    pub(super) fn supported() -> bool {
        is_x86_feature_detected!("avx2")
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn add(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn xor(a: __m256i, b: __m256i) -> __m256i {
        _mm256_xor_si256(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn rot16(x: __m256i) -> __m256i {
        let m = _mm256_set_epi8(
            13, 12, 15, 14, 9, 8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2, 13, 12, 15, 14, 9, 8, 11, 10, 5,
            4, 7, 6, 1, 0, 3, 2,
        );
        _mm256_shuffle_epi8(x, m)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn rot8(x: __m256i) -> __m256i {
        let m = _mm256_set_epi8(
            12, 15, 14, 13, 8, 11, 10, 9, 4, 7, 6, 5, 0, 3, 2, 1, 12, 15, 14, 13, 8, 11, 10, 9, 4,
            7, 6, 5, 0, 3, 2, 1,
        );
        _mm256_shuffle_epi8(x, m)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn rot12(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_srli_epi32::<12>(x), _mm256_slli_epi32::<20>(x))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn rot7(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_srli_epi32::<7>(x), _mm256_slli_epi32::<25>(x))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn g(v: &mut [__m256i; 16], a: usize, b: usize, c: usize, d: usize, x: __m256i, y: __m256i) {
        v[a] = add(add(v[a], v[b]), x);
        v[d] = rot16(xor(v[d], v[a]));
        v[c] = add(v[c], v[d]);
        v[b] = rot12(xor(v[b], v[c]));
        v[a] = add(add(v[a], v[b]), y);
        v[d] = rot8(xor(v[d], v[a]));
        v[c] = add(v[c], v[d]);
        v[b] = rot7(xor(v[b], v[c]));
    }

    /// 8×8 transpose of 32-bit words: `v[l]` holds lane `l`'s words 0..8 on input, `v[w]` holds
    /// word `w` of every lane on output.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn transpose(v: &mut [__m256i; 8]) {
        let t0 = _mm256_unpacklo_epi32(v[0], v[1]);
        let t1 = _mm256_unpackhi_epi32(v[0], v[1]);
        let t2 = _mm256_unpacklo_epi32(v[2], v[3]);
        let t3 = _mm256_unpackhi_epi32(v[2], v[3]);
        let t4 = _mm256_unpacklo_epi32(v[4], v[5]);
        let t5 = _mm256_unpackhi_epi32(v[4], v[5]);
        let t6 = _mm256_unpacklo_epi32(v[6], v[7]);
        let t7 = _mm256_unpackhi_epi32(v[6], v[7]);
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        v[0] = _mm256_permute2x128_si256::<0x20>(u0, u4);
        v[4] = _mm256_permute2x128_si256::<0x31>(u0, u4);
        v[1] = _mm256_permute2x128_si256::<0x20>(u1, u5);
        v[5] = _mm256_permute2x128_si256::<0x31>(u1, u5);
        v[2] = _mm256_permute2x128_si256::<0x20>(u2, u6);
        v[6] = _mm256_permute2x128_si256::<0x31>(u2, u6);
        v[3] = _mm256_permute2x128_si256::<0x20>(u3, u7);
        v[7] = _mm256_permute2x128_si256::<0x31>(u3, u7);
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn parent_keys_x8(
        replica_id: &[u8; 32],
        counters: &[u64; LANES],
        parents: &[ParentRefs<'_>; LANES],
    ) -> [[u8; 32]; LANES] {
        let key = key_words(replica_id);
        let lo: [i32; LANES] = std::array::from_fn(|l| counters[l] as u32 as i32);
        let hi: [i32; LANES] = std::array::from_fn(|l| (counters[l] >> 32) as u32 as i32);
        // SAFETY: AVX2 is enabled on this function; every unaligned load/store below reads or
        // writes exactly 32 bytes of a `[u8; 32]` or `[i32; 8]` it borrows.
        unsafe {
            let ctr_lo = _mm256_loadu_si256(lo.as_ptr().cast());
            let ctr_hi = _mm256_loadu_si256(hi.as_ptr().cast());
            let mut h = [_mm256_setzero_si256(); 8];
            for (hv, &k) in h.iter_mut().zip(&key) {
                *hv = _mm256_set1_epi32(k as i32);
            }
            for b in 0..KEY_INPUT_LEN / 64 {
                let mut m = [_mm256_setzero_si256(); 16];
                for half in 0..2 {
                    let mut t = [_mm256_setzero_si256(); 8];
                    for (tv, ps) in t.iter_mut().zip(parents) {
                        *tv = _mm256_lddqu_si256(ps[2 * b + half].as_ptr().cast());
                    }
                    transpose(&mut t);
                    m[half * 8..half * 8 + 8].copy_from_slice(&t);
                }
                let mut v = [
                    h[0],
                    h[1],
                    h[2],
                    h[3],
                    h[4],
                    h[5],
                    h[6],
                    h[7],
                    _mm256_set1_epi32(IV[0] as i32),
                    _mm256_set1_epi32(IV[1] as i32),
                    _mm256_set1_epi32(IV[2] as i32),
                    _mm256_set1_epi32(IV[3] as i32),
                    ctr_lo,
                    ctr_hi,
                    _mm256_set1_epi32(64),
                    _mm256_set1_epi32(block_flags(b) as i32),
                ];
                seven_rounds!(g, v, m);
                for i in 0..8 {
                    h[i] = xor(v[i], v[i + 8]);
                }
            }
            transpose(&mut h);
            let mut out = [[0u8; 32]; LANES];
            for l in 0..LANES {
                _mm256_storeu_si256(out[l].as_mut_ptr().cast(), h[l]);
            }
            out
        }
    }
}

/// The 16-lane AVX-512F kernel. Its intrinsics are stable from Rust 1.89; the workspace MSRV is
/// 1.88, so the module is compiled only by newer compilers (`rustversion`), and
/// `clippy::incompatible_msrv` is allowed here for that reason.
#[rustversion::since(1.89)]
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[allow(clippy::incompatible_msrv)]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{IV, KEY_INPUT_LEN, MAX_LANES, ParentRefs, SCHEDULE, block_flags, key_words};

    pub(super) fn supported() -> bool {
        is_x86_feature_detected!("avx512f")
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn g(v: &mut [__m512i; 16], a: usize, b: usize, c: usize, d: usize, x: __m512i, y: __m512i) {
        v[a] = _mm512_add_epi32(_mm512_add_epi32(v[a], v[b]), x);
        v[d] = _mm512_ror_epi32::<16>(_mm512_xor_si512(v[d], v[a]));
        v[c] = _mm512_add_epi32(v[c], v[d]);
        v[b] = _mm512_ror_epi32::<12>(_mm512_xor_si512(v[b], v[c]));
        v[a] = _mm512_add_epi32(_mm512_add_epi32(v[a], v[b]), y);
        v[d] = _mm512_ror_epi32::<8>(_mm512_xor_si512(v[d], v[a]));
        v[c] = _mm512_add_epi32(v[c], v[d]);
        v[b] = _mm512_ror_epi32::<7>(_mm512_xor_si512(v[b], v[c]));
    }

    /// 16×16 transpose of 32-bit words: `v[l]` holds lane `l`'s words 0..16 on input, `v[w]`
    /// holds word `w` of every lane on output.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn transpose(v: &mut [__m512i; 16]) {
        // Pairs of rows interleaved by 32-bit word, then by 64-bit word: `u[4g + c]` holds, in
        // 128-bit lane `k`, word `4k + c` of rows `4g..4g + 4`.
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_si512(); 16];
        for g in 0..4 {
            u[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
            u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
            u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
            u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
        }
        // Then gather 128-bit lane `k` of `u[c], u[4 + c], u[8 + c], u[12 + c]` into word `4k + c`.
        for c in 0..4 {
            let ab_lo = _mm512_shuffle_i32x4::<0x88>(u[c], u[4 + c]);
            let ab_hi = _mm512_shuffle_i32x4::<0xdd>(u[c], u[4 + c]);
            let cd_lo = _mm512_shuffle_i32x4::<0x88>(u[8 + c], u[12 + c]);
            let cd_hi = _mm512_shuffle_i32x4::<0xdd>(u[8 + c], u[12 + c]);
            v[c] = _mm512_shuffle_i32x4::<0x88>(ab_lo, cd_lo);
            v[4 + c] = _mm512_shuffle_i32x4::<0x88>(ab_hi, cd_hi);
            v[8 + c] = _mm512_shuffle_i32x4::<0xdd>(ab_lo, cd_lo);
            v[12 + c] = _mm512_shuffle_i32x4::<0xdd>(ab_hi, cd_hi);
        }
    }

    /// Parents `k` and `k + 1` of one lane: a 64-byte message block. `lddqu` is an unaligned
    /// load like `loadu`, without the debug-build pointer checks that keep `loadu` from inlining.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn row(ps: &ParentRefs<'_>, k: usize) -> __m512i {
        // SAFETY: AVX-512F (which implies AVX) is enabled; each load reads exactly the 32 bytes
        // of a borrowed `[u8; 32]`.
        unsafe {
            let first = _mm256_lddqu_si256(ps[k].as_ptr().cast());
            let second = _mm256_lddqu_si256(ps[k + 1].as_ptr().cast());
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(first), second)
        }
    }

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn parent_keys_x16(
        replica_id: &[u8; 32],
        counters: &[u64; MAX_LANES],
        parents: &[ParentRefs<'_>; MAX_LANES],
    ) -> [[u8; 32]; MAX_LANES] {
        let key = key_words(replica_id);
        let lo: [i32; MAX_LANES] = std::array::from_fn(|l| counters[l] as u32 as i32);
        let hi: [i32; MAX_LANES] = std::array::from_fn(|l| (counters[l] >> 32) as u32 as i32);
        // SAFETY: AVX-512F (which implies AVX2) is enabled on this function; every unaligned
        // load/store below reads or writes exactly the 32 or 64 bytes of a `[u8; 32]` or
        // `[i32; 16]` it borrows.
        unsafe {
            let ctr_lo = _mm512_loadu_si512(lo.as_ptr().cast());
            let ctr_hi = _mm512_loadu_si512(hi.as_ptr().cast());
            let mut h = [_mm512_setzero_si512(); 8];
            for (hv, &k) in h.iter_mut().zip(&key) {
                *hv = _mm512_set1_epi32(k as i32);
            }
            for b in 0..KEY_INPUT_LEN / 64 {
                // Row `l`: the 64-byte message block of lane `l` (parents 2b and 2b + 1).
                let k = 2 * b;
                let mut m = [
                    row(&parents[0], k),
                    row(&parents[1], k),
                    row(&parents[2], k),
                    row(&parents[3], k),
                    row(&parents[4], k),
                    row(&parents[5], k),
                    row(&parents[6], k),
                    row(&parents[7], k),
                    row(&parents[8], k),
                    row(&parents[9], k),
                    row(&parents[10], k),
                    row(&parents[11], k),
                    row(&parents[12], k),
                    row(&parents[13], k),
                    row(&parents[14], k),
                    row(&parents[15], k),
                ];
                transpose(&mut m);
                let mut v = [
                    h[0],
                    h[1],
                    h[2],
                    h[3],
                    h[4],
                    h[5],
                    h[6],
                    h[7],
                    _mm512_set1_epi32(IV[0] as i32),
                    _mm512_set1_epi32(IV[1] as i32),
                    _mm512_set1_epi32(IV[2] as i32),
                    _mm512_set1_epi32(IV[3] as i32),
                    ctr_lo,
                    ctr_hi,
                    _mm512_set1_epi32(64),
                    _mm512_set1_epi32(block_flags(b) as i32),
                ];
                seven_rounds!(g, v, m);
                for i in 0..8 {
                    h[i] = _mm512_xor_si512(v[i], v[i + 8]);
                }
            }
            // Words × lanes back to lanes × words (the upper 8 rows are padding).
            let mut t = [_mm512_setzero_si512(); 16];
            t[..8].copy_from_slice(&h);
            transpose(&mut t);
            let mut out = [[0u8; 32]; MAX_LANES];
            for (o, row) in out.iter_mut().zip(&t) {
                _mm256_storeu_si256(o.as_mut_ptr().cast(), _mm512_castsi512_si256(*row));
            }
            out
        }
    }
}

/// The 4-lane NEON kernel's items, expanded twice: in `neon` with the real `std::arch::aarch64`
/// intrinsics under `#[target_feature(enable = "neon")]`, and (tests only, on every architecture)
/// in `neon_emulated` over a portable model of the same intrinsics, so the kernel's logic
/// (transposes, rotations, message schedule) is tested even where no ARM CPU is available.
#[cfg(any(
    test,
    all(target_arch = "aarch64", target_endian = "little", not(miri))
))]
macro_rules! neon_kernel {
    ($(#[$attr:meta])*) => {
        #[inline]
        $(#[$attr])*
        fn rot16(x: uint32x4_t) -> uint32x4_t {
            vreinterpretq_u32_u16(vrev32q_u16(vreinterpretq_u16_u32(x)))
        }
        #[inline]
        $(#[$attr])*
        fn rot12(x: uint32x4_t) -> uint32x4_t {
            vsriq_n_u32::<12>(vshlq_n_u32::<20>(x), x)
        }
        #[inline]
        $(#[$attr])*
        fn rot8(x: uint32x4_t) -> uint32x4_t {
            vsriq_n_u32::<8>(vshlq_n_u32::<24>(x), x)
        }
        #[inline]
        $(#[$attr])*
        fn rot7(x: uint32x4_t) -> uint32x4_t {
            vsriq_n_u32::<7>(vshlq_n_u32::<25>(x), x)
        }

        #[inline]
        $(#[$attr])*
        fn g(
            v: &mut [uint32x4_t; 16],
            a: usize,
            b: usize,
            c: usize,
            d: usize,
            x: uint32x4_t,
            y: uint32x4_t,
        ) {
            v[a] = vaddq_u32(vaddq_u32(v[a], v[b]), x);
            v[d] = rot16(veorq_u32(v[d], v[a]));
            v[c] = vaddq_u32(v[c], v[d]);
            v[b] = rot12(veorq_u32(v[b], v[c]));
            v[a] = vaddq_u32(vaddq_u32(v[a], v[b]), y);
            v[d] = rot8(veorq_u32(v[d], v[a]));
            v[c] = vaddq_u32(v[c], v[d]);
            v[b] = rot7(veorq_u32(v[b], v[c]));
        }

        /// 4×4 transpose of 32-bit words.
        #[inline]
        $(#[$attr])*
        fn transpose(r: [uint32x4_t; 4]) -> [uint32x4_t; 4] {
            let t0 = vreinterpretq_u64_u32(vtrn1q_u32(r[0], r[1]));
            let t1 = vreinterpretq_u64_u32(vtrn2q_u32(r[0], r[1]));
            let t2 = vreinterpretq_u64_u32(vtrn1q_u32(r[2], r[3]));
            let t3 = vreinterpretq_u64_u32(vtrn2q_u32(r[2], r[3]));
            [
                vreinterpretq_u32_u64(vtrn1q_u64(t0, t2)),
                vreinterpretq_u32_u64(vtrn1q_u64(t1, t3)),
                vreinterpretq_u32_u64(vtrn2q_u64(t0, t2)),
                vreinterpretq_u32_u64(vtrn2q_u64(t1, t3)),
            ]
        }

        /// # Safety
        /// The CPU must support NEON.
        $(#[$attr])*
        pub(super) unsafe fn parent_keys_x4(
            replica_id: &[u8; 32],
            counters: &[u64; 4],
            parents: &[ParentRefs<'_>; 4],
        ) -> [[u8; 32]; 4] {
            let key = key_words(replica_id);
            let lo: [u32; 4] = std::array::from_fn(|l| counters[l] as u32);
            let hi: [u32; 4] = std::array::from_fn(|l| (counters[l] >> 32) as u32);
            // SAFETY: NEON is enabled on this function; every load/store below reads or writes
            // exactly 16 bytes inside a `[u8; 32]` or `[u32; 4]` it borrows (NEON byte loads have no
            // alignment requirement).
            unsafe {
                let ctr_lo = vld1q_u32(lo.as_ptr());
                let ctr_hi = vld1q_u32(hi.as_ptr());
                let mut h: [uint32x4_t; 8] = std::array::from_fn(|i| vdupq_n_u32(key[i]));
                for b in 0..KEY_INPUT_LEN / 64 {
                    let mut m = [vdupq_n_u32(0); 16];
                    for q in 0..4 {
                        // Words 4q..4q + 4 of the message: 16 bytes of parent 2b + q/2.
                        let rows: [uint32x4_t; 4] = std::array::from_fn(|l| {
                            let blk = parents[l][2 * b + q / 2];
                            vreinterpretq_u32_u8(vld1q_u8(blk[16 * (q % 2)..].as_ptr()))
                        });
                        m[4 * q..4 * q + 4].copy_from_slice(&transpose(rows));
                    }
                    let mut v = [
                        h[0],
                        h[1],
                        h[2],
                        h[3],
                        h[4],
                        h[5],
                        h[6],
                        h[7],
                        vdupq_n_u32(IV[0]),
                        vdupq_n_u32(IV[1]),
                        vdupq_n_u32(IV[2]),
                        vdupq_n_u32(IV[3]),
                        ctr_lo,
                        ctr_hi,
                        vdupq_n_u32(64),
                        vdupq_n_u32(block_flags(b)),
                    ];
                    seven_rounds!(g, v, m);
                    for i in 0..8 {
                        h[i] = veorq_u32(v[i], v[i + 8]);
                    }
                }
                let first = transpose([h[0], h[1], h[2], h[3]]);
                let second = transpose([h[4], h[5], h[6], h[7]]);
                let mut out = [[0u8; 32]; 4];
                for (l, o) in out.iter_mut().enumerate() {
                    vst1q_u8(o.as_mut_ptr(), vreinterpretq_u8_u32(first[l]));
                    vst1q_u8(o[16..].as_mut_ptr(), vreinterpretq_u8_u32(second[l]));
                }
                out
            }
        }
    };
}

/// The 4-lane NEON kernel (aarch64, little-endian only: the loads read words in memory order).
#[cfg(all(target_arch = "aarch64", target_endian = "little", not(miri)))]
mod neon {
    use std::arch::aarch64::*;

    use super::{IV, KEY_INPUT_LEN, ParentRefs, SCHEDULE, block_flags, key_words};

    pub(super) fn supported() -> bool {
        std::arch::is_aarch64_feature_detected!("neon")
    }

    neon_kernel!(#[target_feature(enable = "neon")]);
}

/// A portable model of the NEON intrinsics the kernel uses (little-endian lane order, semantics
/// from the Arm intrinsics reference), for `neon_emulated`.
#[cfg(test)]
#[allow(non_camel_case_types, clippy::missing_safety_doc, unreachable_pub)]
mod neon_model {
    #[derive(Clone, Copy, Debug)]
    pub struct uint32x4_t(pub [u32; 4]);
    #[derive(Clone, Copy, Debug)]
    pub struct uint16x8_t(pub [u16; 8]);
    #[derive(Clone, Copy, Debug)]
    pub struct uint64x2_t(pub [u64; 2]);
    #[derive(Clone, Copy, Debug)]
    pub struct uint8x16_t(pub [u8; 16]);

    fn bytes32(x: uint32x4_t) -> [u8; 16] {
        let mut b = [0u8; 16];
        for (i, w) in x.0.iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        b
    }
    fn from_bytes32(b: [u8; 16]) -> uint32x4_t {
        uint32x4_t(std::array::from_fn(|i| {
            u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
        }))
    }

    pub fn vreinterpretq_u16_u32(x: uint32x4_t) -> uint16x8_t {
        let b = bytes32(x);
        uint16x8_t(std::array::from_fn(|i| {
            u16::from_le_bytes([b[2 * i], b[2 * i + 1]])
        }))
    }
    pub fn vreinterpretq_u32_u16(x: uint16x8_t) -> uint32x4_t {
        let mut b = [0u8; 16];
        for (i, h) in x.0.iter().enumerate() {
            b[2 * i..2 * i + 2].copy_from_slice(&h.to_le_bytes());
        }
        from_bytes32(b)
    }
    pub fn vreinterpretq_u64_u32(x: uint32x4_t) -> uint64x2_t {
        uint64x2_t([
            u64::from(x.0[0]) | u64::from(x.0[1]) << 32,
            u64::from(x.0[2]) | u64::from(x.0[3]) << 32,
        ])
    }
    pub fn vreinterpretq_u32_u64(x: uint64x2_t) -> uint32x4_t {
        uint32x4_t([
            x.0[0] as u32,
            (x.0[0] >> 32) as u32,
            x.0[1] as u32,
            (x.0[1] >> 32) as u32,
        ])
    }
    pub fn vreinterpretq_u32_u8(x: uint8x16_t) -> uint32x4_t {
        from_bytes32(x.0)
    }
    pub fn vreinterpretq_u8_u32(x: uint32x4_t) -> uint8x16_t {
        uint8x16_t(bytes32(x))
    }
    /// Reverses the 16-bit elements within each 32-bit word.
    pub fn vrev32q_u16(x: uint16x8_t) -> uint16x8_t {
        uint16x8_t(std::array::from_fn(|i| x.0[i ^ 1]))
    }
    /// Shift right and insert: `(b >> N)` with the top `N` bits kept from `a`.
    pub fn vsriq_n_u32<const N: i32>(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
        let keep = !(u32::MAX >> N);
        uint32x4_t(std::array::from_fn(|i| (a.0[i] & keep) | (b.0[i] >> N)))
    }
    pub fn vshlq_n_u32<const N: i32>(x: uint32x4_t) -> uint32x4_t {
        uint32x4_t(x.0.map(|w| w << N))
    }
    pub fn vaddq_u32(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
        uint32x4_t(std::array::from_fn(|i| a.0[i].wrapping_add(b.0[i])))
    }
    pub fn veorq_u32(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
        uint32x4_t(std::array::from_fn(|i| a.0[i] ^ b.0[i]))
    }
    /// `[a0, b0, a2, b2]`.
    pub fn vtrn1q_u32(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
        uint32x4_t([a.0[0], b.0[0], a.0[2], b.0[2]])
    }
    /// `[a1, b1, a3, b3]`.
    pub fn vtrn2q_u32(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
        uint32x4_t([a.0[1], b.0[1], a.0[3], b.0[3]])
    }
    pub fn vtrn1q_u64(a: uint64x2_t, b: uint64x2_t) -> uint64x2_t {
        uint64x2_t([a.0[0], b.0[0]])
    }
    pub fn vtrn2q_u64(a: uint64x2_t, b: uint64x2_t) -> uint64x2_t {
        uint64x2_t([a.0[1], b.0[1]])
    }
    pub fn vdupq_n_u32(v: u32) -> uint32x4_t {
        uint32x4_t([v; 4])
    }
    pub unsafe fn vld1q_u32(p: *const u32) -> uint32x4_t {
        // SAFETY: the caller passes a pointer to 4 readable `u32`s.
        uint32x4_t(unsafe { std::ptr::read_unaligned(p.cast::<[u32; 4]>()) })
    }
    pub unsafe fn vld1q_u8(p: *const u8) -> uint8x16_t {
        // SAFETY: the caller passes a pointer to 16 readable bytes.
        uint8x16_t(unsafe { std::ptr::read_unaligned(p.cast::<[u8; 16]>()) })
    }
    pub unsafe fn vst1q_u8(p: *mut u8, v: uint8x16_t) {
        // SAFETY: the caller passes a pointer to 16 writable bytes.
        unsafe { std::ptr::write_unaligned(p.cast::<[u8; 16]>(), v.0) }
    }
}

/// The NEON kernel's code over [`neon_model`] (tests only).
#[cfg(test)]
mod neon_emulated {
    use super::neon_model::*;
    use super::{IV, KEY_INPUT_LEN, ParentRefs, SCHEDULE, block_flags, key_words};

    neon_kernel!();
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::reference;

    /// Shared helper: every key kernel must equal the hazmat reference (BLAKE3 `test.rs` style).
    fn check_kernel(platform: Platform, id: &[u8; 32], base: u64, inputs: &[[u8; 256]; LANES]) {
        let counters: [u64; LANES] =
            std::array::from_fn(|l| base.wrapping_add(l as u64 * 977) % (1 << 40));
        let got = parent_keys_x8(platform, id, &counters, inputs);
        for l in 0..LANES {
            assert_eq!(
                got[l],
                reference::parent_key(id, counters[l], &inputs[l]),
                "{platform:?} lane {l}"
            );
        }
    }

    /// The 16-lane entry point on `platform`, with parents scattered over a replica-like buffer
    /// (some shared, some the zero block), against the reference over the gathered bytes.
    fn check_x16(platform: Platform, id: &[u8; 32], counters: &[u64; MAX_LANES], data: &[u8]) {
        let (blocks, _) = data.as_chunks::<32>();
        let parents: [ParentRefs<'_>; MAX_LANES] = std::array::from_fn(|l| {
            std::array::from_fn(|k| {
                let i = (l * 131 + k * 17 + (counters[l] as usize)) % (blocks.len() + 1);
                blocks.get(i).unwrap_or(&ZERO_BLOCK)
            })
        });
        let got = parent_keys_refs_x16(platform, id, counters, &parents);
        for l in 0..MAX_LANES {
            let mut input = [0u8; KEY_INPUT_LEN];
            for k in 0..PARENTS {
                input[32 * k..32 * k + 32].copy_from_slice(parents[l][k]);
            }
            assert_eq!(
                got[l],
                reference::parent_key(id, counters[l], &input),
                "{platform:?} lane {l}"
            );
        }
    }

    fn inputs_from(seed: u8) -> [[u8; 256]; LANES] {
        std::array::from_fn(|l| {
            std::array::from_fn(|i| (i as u8).wrapping_mul(31) ^ seed ^ (l as u8 * 7))
        })
    }

    /// The NEON kernel's code, run over the portable intrinsics model, equals the reference (the
    /// real kernel runs the same code on aarch64, where `every_path_equals_reference` covers it).
    #[test]
    fn neon_kernel_code_matches_reference_on_the_model() {
        let data: Vec<u8> = (0..32 * 64).map(|i| (i * 13 + i / 97) as u8).collect();
        let (blocks, _) = data.as_chunks::<32>();
        for base in [0u64, 5, u64::from(u32::MAX) - 2, 1 << 40] {
            let counters: [u64; 4] = std::array::from_fn(|l| base + 3 * l as u64);
            let parents: [ParentRefs<'_>; 4] = std::array::from_fn(|l| {
                std::array::from_fn(|k| &blocks[(l * 29 + k * 7 + base as usize) % blocks.len()])
            });
            // SAFETY: the model's intrinsics are portable Rust; no CPU feature is needed.
            let got = unsafe { neon_emulated::parent_keys_x4(&[3; 32], &counters, &parents) };
            for l in 0..4 {
                let mut input = [0u8; KEY_INPUT_LEN];
                for k in 0..PARENTS {
                    input[32 * k..32 * k + 32].copy_from_slice(parents[l][k]);
                }
                assert_eq!(
                    got[l],
                    reference::parent_key(&[3; 32], counters[l], &input),
                    "lane {l}"
                );
            }
        }
    }

    #[test]
    fn scalar_matches_reference() {
        check_kernel(Platform::Scalar, &[7; 32], 0, &inputs_from(1));
        check_kernel(
            Platform::Scalar,
            &[9; 32],
            u64::from(u32::MAX) - 3,
            &inputs_from(2),
        );
    }

    #[test]
    fn every_available_platform_matches_reference() {
        let data: Vec<u8> = (0..32 * 50).map(|i| (i * 7 + i / 251) as u8).collect();
        for p in Platform::available() {
            check_kernel(p, &[7; 32], 0, &inputs_from(3));
            check_kernel(p, &[1; 32], u64::from(u32::MAX) - 3, &inputs_from(4));
            let counters: [u64; MAX_LANES] =
                std::array::from_fn(|l| u64::from(u32::MAX) - 7 + l as u64);
            check_x16(p, &[5; 32], &counters, &data);
        }
    }

    #[test]
    fn avx512_is_available_when_the_cpu_and_compiler_have_it() {
        #[cfg(all(
            target_arch = "x86_64",
            not(any(miri, feature = "pure", feature = "no_avx2"))
        ))]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            assert_eq!(Platform::detect(), Platform::Avx512);
            assert!(Platform::available().contains(&Platform::Avx512));
            assert_eq!(
                Platform::Avx512.hash_lanes(),
                if avx512_kernel_compiled() { 16 } else { 8 }
            );
        }
        assert!(Platform::available().contains(&Platform::Scalar));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Every SIMD path this CPU can run (AVX-512, AVX2, NEON) equals the scalar reference,
        /// through every entry point and for every batch length.
        #[test]
        fn every_path_equals_reference(
            id in any::<[u8; 32]>(),
            base in any::<u64>(),
            seed in any::<u8>(),
            n in 0usize..40,
            data in proptest::collection::vec(any::<u8>(), 32..32 * 40),
        ) {
            let data = &data[..data.len() / 32 * 32];
            let counters16: [u64; MAX_LANES] = std::array::from_fn(|l| base.wrapping_add(l as u64 * 0x1_0000_0001) % (1 << 50));
            for p in Platform::available() {
                check_kernel(p, &id, base, &inputs_from(seed));
                check_x16(p, &id, &counters16, data);
                let inputs: Vec<[u8; 256]> = (0..n).map(|k| inputs_from(seed ^ k as u8)[k % LANES]).collect();
                let counters: Vec<u64> = (0..n as u64).map(|k| base % (1 << 40) + k).collect();
                let mut out = vec![[0u8; 32]; n];
                parent_keys(p, &id, &counters, &inputs, &mut out);
                for k in 0..n {
                    prop_assert_eq!(out[k], reference::parent_key(&id, counters[k], &inputs[k]), "{:?} {}", p, k);
                }
            }
        }
    }
}
