//! Files larger than one [`PART`] are encrypted part by part, each part under its own key, so
//! that they are read and hashed once, in bounded memory, yet still encrypt deterministically.
//!
//! A file's key must come from its content (identical files then encrypt identically, so a
//! resumed or repeated put stores nothing twice, and two different files never share a key);
//! but a file's BLAKE3 is known only after its last byte, and a large file cannot be held in
//! memory until then. BLAKE3 is a tree, though: a 16 MiB part that starts at a multiple of
//! 16 MiB is a whole subtree, and its *chaining value* (the subtree's interior hash) depends on
//! the part's bytes and position alone. Each part's key derives from its chaining value; the
//! manifest keeps the chaining values (32 bytes per 16 MiB), and the file's BLAKE3 — the same
//! value `b3sum` prints — is their merge ([`root_of_parts`]), so nothing is hashed twice.
//!
//! This module computes chaining values and merges them with `blake3::hazmat`; its tests hold
//! the result equal to `blake3::hash` of the whole input for any length and part size.

use blake3::hazmat::{HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};

use crate::ids::ContentHash;

/// Bytes per part of a large file (a power of two, a multiple of the cipher's chunk).
pub const PART: u64 = 16 << 20;

/// The number of parts of a file of `size` bytes, if it is split (more than one part).
pub fn count(size: u64) -> Option<u64> {
    (size > PART).then(|| size.div_ceil(PART))
}

/// The chaining value of part `index` of a file split into parts of [`PART`] bytes: `data` is
/// that part (every part but the last is whole).
pub fn part_cv(index: u64, data: &[u8]) -> ContentHash {
    cv_at(index * PART, data)
}

/// The BLAKE3 of a file from the chaining values of its parts (two or more, each a whole
/// subtree: all of one power-of-two size of at least 1 KiB, but the last, which may be shorter).
pub fn root_of_parts(cvs: &[ContentHash]) -> blake3::Hash {
    assert!(cvs.len() >= 2, "a split file has at least two parts");
    // BLAKE3's tree is left-full: the left subtree of any node holds the largest power of two
    // number of chunks (here: of parts) strictly less than the node's. Parts are whole
    // subtrees, so only the number of parts matters, not the last part's length.
    let left = left_parts(cvs.len());
    let (l, r) = (merge(&cvs[..left]), merge(&cvs[left..]));
    merge_subtrees_root(&l.0, &r.0, Mode::Hash)
}

fn cv_at(offset: u64, data: &[u8]) -> ContentHash {
    ContentHash(
        blake3::Hasher::new()
            .set_input_offset(offset)
            .update(data)
            .finalize_non_root(),
    )
}

/// The chaining value of the subtree over `cvs` (one or more parts).
fn merge(cvs: &[ContentHash]) -> ContentHash {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let left = left_parts(cvs.len());
    let (l, r) = (merge(&cvs[..left]), merge(&cvs[left..]));
    ContentHash(merge_subtrees_non_root(&l.0, &r.0, Mode::Hash))
}

/// Parts in the left subtree of a node over `n` (≥ 2) parts.
fn left_parts(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn root_split(data: &[u8], part: usize) -> blake3::Hash {
        let cvs: Vec<ContentHash> = data
            .chunks(part)
            .enumerate()
            .map(|(i, p)| cv_at((i * part) as u64, p))
            .collect();
        root_of_parts(&cvs)
    }

    proptest! {
        #[test]
        fn merged_parts_equal_blake3_of_the_whole(log in 10u32..14, parts in 2usize..40, tail in 1usize..8192) {
            let part = 1usize << log;
            let tail = tail.min(part);
            let len = (parts - 1) * part + tail;
            let data: Vec<u8> = (0..len).map(|i| (i * 31 + i / 1000) as u8).collect();
            prop_assert_eq!(root_split(&data, part), blake3::hash(&data));
        }
    }

    #[test]
    fn left_subtree_sizes() {
        let got: Vec<usize> = (2..=9).map(left_parts).collect();
        assert_eq!(got, [1, 2, 2, 4, 4, 4, 4, 8]);
        assert_eq!(count(PART), None);
        assert_eq!(count(PART + 1), Some(2));
        assert_eq!(count(3 * PART), Some(3));
    }

    #[test]
    fn a_changed_part_changes_its_value_and_the_root() {
        let part = 1 << 12;
        let mut data = vec![5u8; 3 * part + 10];
        let before = cv_at(part as u64, &data[part..2 * part]);
        let root = root_split(&data, part);
        data[part + 7] ^= 1;
        assert_ne!(cv_at(part as u64, &data[part..2 * part]), before);
        assert_ne!(root_split(&data, part), root);
        // The same bytes at another position are another subtree.
        assert_ne!(
            cv_at(0, &data[part..2 * part]),
            cv_at(part as u64, &data[part..2 * part])
        );
    }
}
