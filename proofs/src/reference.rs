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

fn neg_mod_p(x: &[u64; 4]) -> [u64; 4] {
    if *x == [0; 4] { *x } else { sub(&MODULUS, x) }
}

/// One Sloth round forward, from the reference arithmetic.
pub fn sloth_round_forward(x: &[u64; 4]) -> [u64; 4] {
    let r = pow_sqrt_exponent(x);
    let is_square = mul_mod_p(&r, &r) == *x;
    let r_even = if r[0] & 1 == 0 { r } else { neg_mod_p(&r) };
    if is_square {
        r_even
    } else {
        neg_mod_p(&r_even)
    }
}

/// Reference sealing: the definition of `docs/proofs.md` §1.3, one block at a time, with the
/// hazmat parent key and the bit-by-bit field arithmetic. `None` if a block is out of the field.
pub fn seal(rounds: u32, replica_id: &[u8; 32], plain: &[u8]) -> Option<Vec<u8>> {
    let blocks = (plain.len() / 32) as u64;
    let graph = crate::drg::Graph::new(replica_id, blocks);
    let mut out = plain.to_vec();
    for j in 0..blocks {
        let mut input = [0u8; 256];
        if let Some(ps) = graph.parents(crate::drg::BlockIdx(j)) {
            for (k, &p) in ps.iter().enumerate() {
                input[32 * k..32 * k + 32]
                    .copy_from_slice(&out[32 * p as usize..32 * p as usize + 32]);
            }
        }
        let key = parent_key(replica_id, j, &input);
        let s = 32 * j as usize;
        let mut x = [0u64; 4];
        for (i, limb) in x.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            for (b, wb) in w.iter_mut().enumerate() {
                *wb = out[s + 8 * i + b] ^ key[8 * i + b];
            }
            *limb = u64::from_le_bytes(w);
        }
        if geq(&x, &MODULUS) {
            return None;
        }
        for i in 0..rounds {
            if i > 0 {
                x = add_mod_p(&x, &[u64::from(i), 0, 0, 0]);
            }
            x = sloth_round_forward(&x);
        }
        for (i, limb) in x.iter().enumerate() {
            out[s + 8 * i..s + 8 * i + 8].copy_from_slice(&limb.to_le_bytes());
        }
    }
    Some(out)
}
