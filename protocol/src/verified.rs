//! Verified byte ranges of a shard: BLAKE3 verified streaming via `bao-tree`.
//!
//! A shard id is the plain BLAKE3 hash of the shard's bytes. BLAKE3 is itself a Merkle tree over
//! 1 KiB chunks, so a holder that keeps a small *outboard* (the interior hashes of that tree,
//! grouped in [`BLOCK_SIZE`] chunk groups) can prove any byte range against the shard id alone:
//! the reader checks the range without seeing the rest of the shard.
//!
//! Outboard size: 64 bytes per 16 KiB block, about 0.4% of the shard.

use std::{io, ops::Range};

use bao_tree::{
    BaoTree, BlockSize, ByteRanges,
    io::{
        DecodeError, EncodeError as BaoEncodeError,
        outboard::PreOrderOutboard,
        round_up_to_chunks,
        sync::{DecodeResponseIter, OutboardMut, encode_ranges_validated},
    },
    iter::{BaoChunk, PostOrderChunkIter},
};
pub use positioned_io::ReadAt;

/// Chunk-group size of every outboard in Granary: 2^4 BLAKE3 chunks = 16 KiB.
pub const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(4);

/// The interior hashes of a shard's BLAKE3 tree, in pre-order, without a size prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outboard {
    /// BLAKE3 hash of the data: the shard id.
    pub root: blake3::Hash,
    /// Length of the data in bytes.
    pub size: u64,
    /// Hash pairs in pre-order (64 bytes per interior node).
    pub data: Vec<u8>,
}

impl Outboard {
    fn as_bao(&self) -> PreOrderOutboard<&[u8]> {
        PreOrderOutboard {
            root: self.root,
            tree: BaoTree::new(self.size, BLOCK_SIZE),
            data: &self.data,
        }
    }
}

/// Computes the outboard of the first `size` bytes read from `data` (an error if it has
/// fewer); its root equals `blake3::hash` of those bytes.
pub fn outboard(mut data: impl io::Read, size: u64) -> io::Result<Outboard> {
    let mut builder = OutboardBuilder::new(size);
    let mut buf = vec![0u8; (256 << 10).min(size as usize).max(1)];
    while builder.received() < size {
        let want = (size - builder.received()).min(buf.len() as u64) as usize;
        let n = match data.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        builder.push(&buf[..n])?;
    }
    builder.finish()
}

/// The outboard of bytes already in memory, hashed in place (no copy).
pub fn outboard_of(data: &[u8]) -> Outboard {
    let mut builder = OutboardBuilder::new(data.len() as u64);
    builder
        .push(data)
        .and_then(|()| builder.finish())
        .expect("exactly `size` bytes were pushed")
}

/// Builds the outboard of a `size`-byte shard from its bytes as they arrive, in pieces of any
/// length. Whole blocks are hashed straight from the caller's slices; only a block split
/// between two pieces is copied. Same tree and layout as `bao-tree`'s own outboards (the tests
/// hold the two equal).
pub struct OutboardBuilder {
    outboard: PreOrderOutboard<Vec<u8>>,
    chunks: PostOrderChunkIter,
    /// Hashes of finished subtrees waiting for their parent.
    stack: Vec<blake3::Hash>,
    /// The next block to hash, once its bytes are here.
    next: Option<Leaf>,
    /// The first bytes of `next` when they arrived split over pieces.
    partial: Vec<u8>,
    received: u64,
}

impl std::fmt::Debug for OutboardBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboardBuilder")
            .field("size", &self.outboard.tree.size())
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
struct Leaf {
    start_chunk: u64,
    size: usize,
    is_root: bool,
}

impl OutboardBuilder {
    /// A builder for a shard of `size` bytes.
    pub fn new(size: u64) -> Self {
        let tree = BaoTree::new(size, BLOCK_SIZE);
        let mut b = Self {
            outboard: PreOrderOutboard {
                root: blake3::Hash::from_bytes([0; 32]),
                tree,
                data: vec![0; tree.outboard_size() as usize],
            },
            chunks: tree.post_order_chunks_iter(),
            stack: Vec::new(),
            next: None,
            partial: Vec::new(),
            received: 0,
        };
        b.advance();
        b
    }

    /// Bytes pushed so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Adds the next `data` bytes of the shard. More bytes than the size given to
    /// [`OutboardBuilder::new`] is an error.
    pub fn push(&mut self, mut data: &[u8]) -> io::Result<()> {
        let size = self.outboard.tree.size();
        if self.received + data.len() as u64 > size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than the {size} bytes announced"),
            ));
        }
        self.received += data.len() as u64;
        while let (false, Some(leaf)) = (data.is_empty(), self.next) {
            if self.partial.is_empty() && data.len() >= leaf.size {
                let (block, rest) = data.split_at(leaf.size);
                self.hash_leaf(leaf, block);
                data = rest;
            } else {
                let take = (leaf.size - self.partial.len()).min(data.len());
                self.partial.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.partial.len() == leaf.size {
                    let block = std::mem::take(&mut self.partial);
                    self.hash_leaf(leaf, &block);
                    self.partial = block;
                    self.partial.clear();
                }
            }
        }
        Ok(())
    }

    /// The finished outboard; an error unless exactly `size` bytes were pushed.
    pub fn finish(mut self) -> io::Result<Outboard> {
        let size = self.outboard.tree.size();
        if self.received != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} of {size} bytes", self.received),
            ));
        }
        if let Some(leaf) = self.next {
            // Only the single empty block of an empty shard is still open here.
            debug_assert_eq!(leaf.size, 0);
            self.hash_leaf(leaf, &[]);
        }
        let root = self.stack.pop().expect("the tree has a root");
        Ok(Outboard {
            root,
            size,
            data: self.outboard.data,
        })
    }

    fn hash_leaf(&mut self, leaf: Leaf, block: &[u8]) {
        use blake3::hazmat::HasherExt;
        let hash = if leaf.is_root {
            blake3::hash(block)
        } else {
            let mut h = blake3::Hasher::new();
            h.set_input_offset(leaf.start_chunk * 1024);
            h.update(block);
            blake3::Hash::from(h.finalize_non_root())
        };
        self.stack.push(hash);
        self.advance();
    }

    /// Combines finished subtrees up to the next block (or to the root).
    fn advance(&mut self) {
        use blake3::hazmat::{Mode, merge_subtrees_non_root, merge_subtrees_root};
        self.next = None;
        for item in self.chunks.by_ref() {
            match item {
                BaoChunk::Parent { node, is_root, .. } => {
                    let right = self.stack.pop().expect("post order: right child first");
                    let left = self.stack.pop().expect("post order: left child first");
                    // Writing into a Vec of the outboard's size cannot fail.
                    let _ = self.outboard.save(node, &(left, right));
                    let (l, r) = (left.as_bytes(), right.as_bytes());
                    self.stack.push(if is_root {
                        merge_subtrees_root(l, r, Mode::Hash)
                    } else {
                        blake3::Hash::from(merge_subtrees_non_root(l, r, Mode::Hash))
                    });
                }
                BaoChunk::Leaf {
                    start_chunk,
                    size,
                    is_root,
                    ..
                } => {
                    self.next = Some(Leaf {
                        start_chunk: start_chunk.0,
                        size,
                        is_root,
                    });
                    return;
                }
            }
        }
    }
}

/// Length in bytes of the outboard of a `size`-byte shard.
pub fn outboard_len(size: u64) -> u64 {
    BaoTree::new(size, BLOCK_SIZE).outboard_size()
}

/// Why a range could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The requested range does not lie within the shard.
    #[error("range {start}..{end} is outside a shard of {size} bytes")]
    OutOfBounds {
        /// Start of the requested range.
        start: u64,
        /// End of the requested range.
        end: u64,
        /// Size of the shard.
        size: u64,
    },
    /// The stored data or outboard does not match the shard id (local corruption).
    #[error("stored shard data does not match its hash: {0}")]
    Corrupt(String),
    /// Reading the data failed.
    #[error("reading shard data: {0}")]
    Io(#[from] io::Error),
}

/// Why a received range was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The requested range does not lie within the shard.
    #[error("range {start}..{end} is outside a shard of {size} bytes")]
    OutOfBounds {
        /// Start of the requested range.
        start: u64,
        /// End of the requested range.
        end: u64,
        /// Size of the shard.
        size: u64,
    },
    /// A data block did not hash to what the tree says.
    #[error("data block at chunk {chunk} does not match the shard id")]
    LeafMismatch {
        /// Index of the 1 KiB BLAKE3 chunk where the block starts.
        chunk: u64,
    },
    /// An interior hash pair did not hash to its parent.
    #[error("tree node {node} does not match the shard id")]
    ParentMismatch {
        /// bao-tree node, as displayed by bao-tree.
        node: String,
    },
    /// The encoded response ended early.
    #[error("encoded range is truncated")]
    Truncated,
    /// The encoded response carries bytes past what the range needs.
    #[error("encoded range has {extra} trailing bytes")]
    TrailingBytes {
        /// Number of unexpected bytes.
        extra: usize,
    },
}

/// Checks that `range` is non-empty-or-empty but inside `0..size`.
fn check_bounds(range: &Range<u64>, size: u64) -> Result<(), (u64, u64, u64)> {
    if range.start > range.end || range.end > size {
        return Err((range.start, range.end, size));
    }
    Ok(())
}

fn chunk_ranges(range: &Range<u64>) -> bao_tree::ChunkRanges {
    round_up_to_chunks(&ByteRanges::from(range.start..range.end))
}

/// Appends to `out` the bytes of `range` plus the hashes that connect them to the shard id.
///
/// The data is checked against the outboard while it is encoded, so a node never serves bytes
/// that have rotted on its disk.
pub fn encode_range(
    data: impl ReadAt,
    outboard: &Outboard,
    range: Range<u64>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    check_bounds(&range, outboard.size).map_err(|(start, end, size)| EncodeError::OutOfBounds {
        start,
        end,
        size,
    })?;
    if range.is_empty() {
        return Ok(());
    }
    let ranges = chunk_ranges(&range);
    encode_ranges_validated(data, outboard.as_bao(), &ranges, out).map_err(|e| match e {
        BaoEncodeError::Io(e) => EncodeError::Io(e),
        other => EncodeError::Corrupt(other.to_string()),
    })
}

/// Verifies an encoded range against the shard id `root` and returns exactly the bytes of
/// `range`.
pub fn decode_range(
    root: &blake3::Hash,
    size: u64,
    range: Range<u64>,
    encoded: &[u8],
) -> Result<Vec<u8>, VerifyError> {
    check_bounds(&range, size).map_err(|(start, end, size)| VerifyError::OutOfBounds {
        start,
        end,
        size,
    })?;
    let mut result = Vec::with_capacity((range.end - range.start) as usize);
    if range.is_empty() {
        return Ok(result);
    }
    let ranges = chunk_ranges(&range);
    let tree = BaoTree::new(size, BLOCK_SIZE);
    let mut reader = io::Cursor::new(encoded);
    let iter = DecodeResponseIter::new(*root, tree, &mut reader, &ranges);
    for item in iter {
        match item.map_err(map_decode_error)? {
            bao_tree::io::BaoContentItem::Parent(_) => {}
            bao_tree::io::BaoContentItem::Leaf(leaf) => {
                let leaf_start = leaf.offset;
                let leaf_end = leaf_start + leaf.data.len() as u64;
                let start = range.start.max(leaf_start);
                let end = range.end.min(leaf_end);
                if start < end {
                    if start != range.start + result.len() as u64 {
                        return Err(VerifyError::Truncated);
                    }
                    result.extend_from_slice(
                        &leaf.data[(start - leaf_start) as usize..(end - leaf_start) as usize],
                    );
                }
            }
        }
    }
    let extra = encoded.len() - reader.position() as usize;
    if extra != 0 {
        return Err(VerifyError::TrailingBytes { extra });
    }
    if result.len() as u64 != range.end - range.start {
        return Err(VerifyError::Truncated);
    }
    Ok(result)
}

fn map_decode_error(e: DecodeError) -> VerifyError {
    match e {
        DecodeError::LeafHashMismatch(chunk) => VerifyError::LeafMismatch { chunk: chunk.0 },
        DecodeError::ParentHashMismatch(node) => VerifyError::ParentMismatch {
            node: node.to_string(),
        },
        DecodeError::LeafNotFound(_) | DecodeError::ParentNotFound(_) | DecodeError::Io(_) => {
            VerifyError::Truncated
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn root_is_plain_blake3() {
        for len in [0usize, 1, 1024, 1025, 16 * 1024, 100_000] {
            let d = data(len, 7);
            let ob = outboard(&d[..], len as u64).unwrap();
            assert_eq!(ob.root, blake3::hash(&d));
            assert_eq!(ob.data.len() as u64, outboard_len(len as u64));
        }
    }

    #[test]
    fn flipped_byte_in_range_is_rejected() {
        let d = data(200_000, 3);
        let ob = outboard(&d[..], d.len() as u64).unwrap();
        let mut enc = Vec::new();
        encode_range(&d[..], &ob, 50_000..60_000, &mut enc).unwrap();
        for pos in [0, enc.len() / 2, enc.len() - 1] {
            let mut bad = enc.clone();
            bad[pos] ^= 1;
            assert!(decode_range(&ob.root, d.len() as u64, 50_000..60_000, &bad).is_err());
        }
        assert!(
            decode_range(
                &ob.root,
                d.len() as u64,
                50_000..60_000,
                &enc[..enc.len() - 1]
            )
            .is_err()
        );
        let mut long = enc.clone();
        long.push(0);
        assert!(matches!(
            decode_range(&ob.root, d.len() as u64, 50_000..60_000, &long),
            Err(VerifyError::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn corrupt_local_data_is_not_served() {
        let mut d = data(100_000, 9);
        let ob = outboard(&d[..], d.len() as u64).unwrap();
        d[70_000] ^= 0x80;
        let mut enc = Vec::new();
        assert!(encode_range(&d[..], &ob, 65_000..75_000, &mut enc).is_err());
    }

    /// `bao-tree`'s own outboard of `d`: the reference the builder is held to.
    fn reference(d: &[u8]) -> Outboard {
        use bao_tree::io::sync::CreateOutboard;
        let ob = PreOrderOutboard::<Vec<u8>>::create_sized(d, d.len() as u64, BLOCK_SIZE).unwrap();
        Outboard {
            root: ob.root,
            size: d.len() as u64,
            data: ob.data,
        }
    }

    #[test]
    fn builder_matches_bao_tree_at_block_edges() {
        for len in [
            0usize,
            1,
            1023,
            1024,
            16 * 1024 - 1,
            16 * 1024,
            16 * 1024 + 1,
            48 * 1024 + 5,
        ] {
            let d = data(len, 1);
            assert_eq!(outboard_of(&d), reference(&d), "len {len}");
        }
    }

    #[test]
    fn builder_refuses_too_many_or_too_few_bytes() {
        let mut b = OutboardBuilder::new(10);
        b.push(&[0; 6]).unwrap();
        assert_eq!(
            b.push(&[0; 5]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(b.received(), 6);
        assert_eq!(b.finish().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let short: &[u8] = &[1, 2, 3];
        assert_eq!(
            outboard(short, 4).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        // Only the first `size` bytes of a longer reader count, as with bao-tree's own.
        let long = data(40_000, 5);
        assert_eq!(
            outboard(&long[..], 30_000).unwrap(),
            reference(&long[..30_000])
        );
    }

    proptest! {
        #[test]
        fn any_range_round_trips(len in 0usize..300_000, a in any::<u64>(), b in any::<u64>(), seed in any::<u8>()) {
            let d = data(len, seed);
            let ob = outboard(&d[..], len as u64).unwrap();
            let (mut s, mut e) = (a % (len as u64 + 1), b % (len as u64 + 1));
            if s > e { std::mem::swap(&mut s, &mut e); }
            let mut enc = Vec::new();
            encode_range(&d[..], &ob, s..e, &mut enc).unwrap();
            let got = decode_range(&ob.root, len as u64, s..e, &enc).unwrap();
            prop_assert_eq!(&got[..], &d[s as usize..e as usize]);
            // A different shard id never verifies a non-empty range.
            if s < e {
                let other = blake3::hash(b"other");
                prop_assert!(decode_range(&other, len as u64, s..e, &enc).is_err());
            }
        }

        #[test]
        fn builder_matches_bao_tree_however_split(len in 0usize..200_000, cuts in proptest::collection::vec(any::<u32>(), 0..8), seed in any::<u8>()) {
            let d = data(len, seed);
            let mut at: Vec<usize> = cuts.iter().map(|c| *c as usize % (len + 1)).collect();
            at.sort_unstable();
            let mut b = OutboardBuilder::new(len as u64);
            let mut prev = 0;
            for c in at.into_iter().chain([len]) {
                b.push(&d[prev..c]).unwrap();
                prev = c;
            }
            prop_assert_eq!(b.finish().unwrap(), reference(&d));
        }
    }
}
