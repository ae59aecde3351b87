//! Multi-lane parent-key hashing.
//!
//! The key of replica block `j` is the BLAKE3 chunk chaining value, keyed by `replica_id`, of
//! chunk number `j` whose content is the 256 bytes of the block's 8 parents (exactly 4 full
//! compression blocks, no padding): see [`crate::reference::parent_key`] for the definition through
//! BLAKE3's public `hazmat` API. Sealing computes one key at a time (the chain is sequential);
//! unsealing and proof verification compute many independent keys, which this module does 8 at a
//! time with AVX2 (one 32-bit lane per input), dispatched on [`Platform`].

use crate::platform::Platform;

/// Bytes hashed per key: 8 parents × 32 bytes.
pub const KEY_INPUT_LEN: usize = 256;
/// Inputs per multi-lane call.
pub const LANES: usize = 8;

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

/// One parent key, portable scalar code.
pub fn parent_key_scalar(replica_id: &[u8; 32], j: u64, input: &[u8; KEY_INPUT_LEN]) -> [u8; 32] {
    let mut cv = key_words(replica_id);
    for (b, block) in input.chunks_exact(64).enumerate() {
        let mut m = [0u32; 16];
        for (i, word) in m.iter_mut().enumerate() {
            *word = u32::from_le_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ]);
        }
        cv = compress(&cv, &m, j, block_flags(b));
    }
    let mut out = [0u8; 32];
    for (i, w) in cv.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// Eight parent keys at once on `platform` (AVX2 when available, else scalar).
pub fn parent_keys_x8(
    platform: Platform,
    replica_id: &[u8; 32],
    counters: &[u64; LANES],
    inputs: &[[u8; KEY_INPUT_LEN]; LANES],
) -> [[u8; 32]; LANES] {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if platform.has_avx2() {
        // SAFETY: `Platform::detect` (the only constructor of the AVX2/AVX-512 variants outside
        // tests, which construct them only after checking the CPU) verified AVX2 support.
        return unsafe { avx2::parent_keys_x8(replica_id, counters, inputs) };
    }
    let _ = platform;
    let mut out = [[0u8; 32]; LANES];
    for l in 0..LANES {
        out[l] = parent_key_scalar(replica_id, counters[l], &inputs[l]);
    }
    out
}

/// Parent keys for any number of inputs: full groups of 8 go through [`parent_keys_x8`], the
/// remainder through the scalar path.
pub fn parent_keys(
    platform: Platform,
    replica_id: &[u8; 32],
    counters: &[u64],
    inputs: &[[u8; KEY_INPUT_LEN]],
    out: &mut [[u8; 32]],
) {
    debug_assert_eq!(counters.len(), inputs.len());
    debug_assert_eq!(out.len(), inputs.len());
    let full = inputs.len() / LANES * LANES;
    for ((c, i), o) in counters[..full]
        .chunks_exact(LANES)
        .zip(inputs[..full].chunks_exact(LANES))
        .zip(out[..full].chunks_exact_mut(LANES))
    {
        let (Ok(c), Ok(i)) = (<&[u64; LANES]>::try_from(c), <&[_; LANES]>::try_from(i)) else {
            continue; // unreachable: chunks_exact yields LANES items
        };
        o.copy_from_slice(&parent_keys_x8(platform, replica_id, c, i));
    }
    for k in full..inputs.len() {
        out[k] = parent_key_scalar(replica_id, counters[k], &inputs[k]);
    }
}

#[cfg(all(target_arch = "x86_64", not(miri)))]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{IV, KEY_INPUT_LEN, LANES, SCHEDULE, block_flags, key_words};

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
        {
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
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn parent_keys_x8(
        replica_id: &[u8; 32],
        counters: &[u64; LANES],
        inputs: &[[u8; KEY_INPUT_LEN]; LANES],
    ) -> [[u8; 32]; LANES] {
        let key = key_words(replica_id);
        let mut lo = [0i32; LANES];
        let mut hi = [0i32; LANES];
        for l in 0..LANES {
            lo[l] = counters[l] as u32 as i32;
            hi[l] = (counters[l] >> 32) as u32 as i32;
        }
        // SAFETY: AVX2 is enabled on this function; every unaligned load/store below reads or
        // writes exactly 32 bytes inside a `[u8; 256]`/`[i32; 8]`/`[u8; 32]` it indexes in bounds.
        unsafe {
            let ctr_lo = _mm256_loadu_si256(lo.as_ptr().cast());
            let ctr_hi = _mm256_loadu_si256(hi.as_ptr().cast());
            let mut h = [_mm256_setzero_si256(); 8];
            for (i, hv) in h.iter_mut().enumerate() {
                *hv = _mm256_set1_epi32(key[i] as i32);
            }
            for b in 0..KEY_INPUT_LEN / 64 {
                let mut m = [_mm256_setzero_si256(); 16];
                for half in 0..2 {
                    let mut t = [_mm256_setzero_si256(); 8];
                    for (l, tv) in t.iter_mut().enumerate() {
                        *tv = _mm256_loadu_si256(
                            inputs[l][b * 64 + half * 32..b * 64 + half * 32 + 32]
                                .as_ptr()
                                .cast(),
                        );
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
                for s in &SCHEDULE {
                    g(&mut v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
                    g(&mut v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
                    g(&mut v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
                    g(&mut v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
                    g(&mut v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
                    g(&mut v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
                    g(&mut v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
                    g(&mut v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
                }
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
                "lane {l}"
            );
        }
    }

    fn inputs_from(seed: u8) -> [[u8; 256]; LANES] {
        std::array::from_fn(|l| {
            std::array::from_fn(|i| (i as u8).wrapping_mul(31) ^ seed ^ (l as u8 * 7))
        })
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
    fn detected_platform_matches_reference() {
        check_kernel(Platform::detect(), &[7; 32], 0, &inputs_from(3));
        check_kernel(
            Platform::detect(),
            &[1; 32],
            u64::from(u32::MAX) - 3,
            &inputs_from(4),
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn fast_path_equals_reference(id in any::<[u8; 32]>(), base in any::<u64>(), seed in any::<u8>(), n in 0usize..20) {
            check_kernel(Platform::detect(), &id, base, &inputs_from(seed));
            let inputs: Vec<[u8; 256]> = (0..n).map(|k| inputs_from(seed ^ k as u8)[k % LANES]).collect();
            let counters: Vec<u64> = (0..n as u64).map(|k| base % (1 << 40) + k).collect();
            let mut out = vec![[0u8; 32]; n];
            parent_keys(Platform::detect(), &id, &counters, &inputs, &mut out);
            for k in 0..n {
                prop_assert_eq!(out[k], reference::parent_key(&id, counters[k], &inputs[k]));
            }
        }
    }
}
