//! Slow, obviously-correct reference implementations that the fast kernels are tested against
//! (the role of BLAKE3's `reference_impl/`).
//!
//! Nothing here is on a hot path: field multiplication is double-and-add, exponentiation is
//! bit-by-bit square-and-multiply, and the parent-key hash goes through BLAKE3's public
//! `hazmat` API one input at a time.

use blake3::hazmat::HasherExt;

use crate::field::MODULUS;

fn geq(a: &[u64; 4], b: &[u64; 4]) -> bool {
    for i in (0..4).rev() {
        if a[i] != b[i] {
            return a[i] > b[i];
        }
    }
    true
}

fn sub(a: &[u64; 4], b: &[u64; 4]) -> [u64; 4] {
    let mut out = [0u64; 4];
    let mut borrow = 0u64;
    for i in 0..4 {
        let (v1, b1) = a[i].overflowing_sub(b[i]);
        let (v2, b2) = v1.overflowing_sub(borrow);
        out[i] = v2;
        borrow = u64::from(b1 | b2);
    }
    out
}

/// `(a + b) mod p` for canonical inputs.
pub fn add_mod_p(a: &[u64; 4], b: &[u64; 4]) -> [u64; 4] {
    let mut out = [0u64; 4];
    let mut carry = 0u64;
    for i in 0..4 {
        let (v1, c1) = a[i].overflowing_add(b[i]);
        let (v2, c2) = v1.overflowing_add(carry);
        out[i] = v2;
        carry = u64::from(c1 | c2);
    }
    // If the true sum overflowed 2^256 it is ≥ p; subtracting p in wrapping arithmetic is right.
    if carry == 1 || geq(&out, &MODULUS) {
        sub(&out, &MODULUS)
    } else {
        out
    }
}

/// `(a · b) mod p` by double-and-add over the bits of `b`.
pub fn mul_mod_p(a: &[u64; 4], b: &[u64; 4]) -> [u64; 4] {
    let mut acc = [0u64; 4];
    for i in (0..256).rev() {
        acc = add_mod_p(&acc, &acc);
        if (b[i / 64] >> (i % 64)) & 1 == 1 {
            acc = add_mod_p(&acc, a);
        }
    }
    acc
}

/// `x^((p+1)/4) mod p` by square-and-multiply over the bits of `(p+1)/4`.
pub fn pow_sqrt_exponent(x: &[u64; 4]) -> [u64; 4] {
    // (p + 1) / 4 = (2^256 − 188) / 4 = 2^254 − 47.
    let mut e = sub(&[0, 0, 0, 1 << 62], &[47, 0, 0, 0]);
    e[3] &= u64::MAX >> 2;
    let mut acc = [1u64, 0, 0, 0];
    for i in (0..256).rev() {
        acc = mul_mod_p(&acc, &acc);
        if (e[i / 64] >> (i % 64)) & 1 == 1 {
            acc = mul_mod_p(&acc, x);
        }
    }
    acc
}

/// The parent key of block `j`: the BLAKE3 chunk chaining value of chunk number `j`, keyed by
/// `replica_id`, over the 256 bytes of the parents' replica blocks.
pub fn parent_key(replica_id: &[u8; 32], j: u64, parents: &[u8; 256]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(replica_id);
    h.set_input_offset(j * blake3::CHUNK_LEN as u64);
    h.update(parents);
    h.finalize_non_root()
}
