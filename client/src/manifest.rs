//! The manifest (what files a dataset has and where their bytes are) and the root record
//! (where the manifest is). Both are versioned binary records: a magic, a version, then postcard.
//!
//! ```text
//! root record  = "GRNR" ‖ version:u8 ‖ postcard(RootRecord)        dataset id = BLAKE3(root record)
//! manifest blob = XChaCha20( "GRNM" ‖ version:u8 ‖ postcard(Manifest) )   (plain for public data)
//! ```
//! The manifest blob is erasure-coded into shards like file data; the root record, small, is
//! stored whole on several nodes. See docs/data-format.md.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::{
    erasure::ErasureParams,
    ids::{ContentHash, ShardId},
};

/// Magic bytes of a root record.
pub const ROOT_MAGIC: &[u8; 4] = b"GRNR";
/// Magic bytes of a (decrypted) manifest.
pub const MANIFEST_MAGIC: &[u8; 4] = b"GRNM";
/// The root-record version this client writes and the newest it reads.
pub const ROOT_VERSION: u8 = 1;
/// The manifest version this client writes and the newest it reads (it reads version 1 too:
/// version 2 added [`EntryKind::File::parts`]).
pub const MANIFEST_VERSION: u8 = 2;
/// Placement hint meaning "not recorded".
pub const NO_HINT: u16 = u16::MAX;

/// One segment: a run of the dataset stream, erasure-coded into k + m shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentDesc {
    /// Bytes of the dataset stream in this segment.
    pub len: u32,
    /// Length of each of its shards.
    pub shard_len: u32,
    /// Ids of its k data shards, then its m parity shards.
    pub shards: Vec<ShardId>,
    /// For each shard, an index into [`Manifest::nodes`] where it was first put, or [`NO_HINT`].
    pub placement: Vec<u16>,
}

impl SegmentDesc {
    /// The node shard `i` was first put on, looked up in `nodes` (the node table of the
    /// manifest or root record holding this segment); `None` if not recorded or out of range.
    pub fn hint(&self, i: usize, nodes: &[[u8; 32]]) -> Option<[u8; 32]> {
        let p = *self.placement.get(i)?;
        (p != NO_HINT)
            .then(|| nodes.get(p as usize).copied())
            .flatten()
    }
}

/// What a path in the dataset is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file whose (encrypted) bytes are `offset..offset + size` of the dataset stream.
    File {
        /// Plaintext length.
        size: u64,
        /// BLAKE3 of the plaintext.
        hash: ContentHash,
        /// Where its bytes start in the dataset stream.
        offset: u64,
        /// Random key seed for data that could not be hashed before it was sent (stdin);
        /// `None`: the key derives from `hash`, or from `parts`.
        key_seed: Option<ContentHash>,
        /// For a file larger than one [`crate::parts::PART`]: the BLAKE3 chaining value of each
        /// part, from which that part's key derives (see [`crate::parts`]). Empty otherwise.
        parts: Vec<ContentHash>,
    },
    /// A directory (kept so that empty ones survive).
    Dir,
    /// A symbolic link, stored as a link and never followed.
    Symlink {
        /// The link's target, as raw bytes.
        target: Vec<u8>,
    },
}

/// One path of the dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path relative to the dataset root, `/`-separated raw bytes (need not be UTF-8).
    pub path: Vec<u8>,
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// What it is.
    pub kind: EntryKind,
}

impl Entry {
    /// The path for display (lossy for non-UTF-8 names).
    pub fn display_path(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }

    /// Size in bytes for files, 0 otherwise.
    pub fn size(&self) -> u64 {
        match self.kind {
            EntryKind::File { size, .. } => size,
            _ => 0,
        }
    }
}

/// The full description of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Seconds since the Unix epoch when it was made.
    pub created_unix: u64,
    /// k + m of every segment.
    pub erasure: ErasureParams,
    /// Maximum bytes of stream per segment.
    pub segment_size: u32,
    /// Node ids referred to by placement hints.
    pub nodes: Vec<[u8; 32]>,
    /// The dataset stream, cut into segments, in order.
    pub segments: Vec<SegmentDesc>,
    /// Every path, sorted by path bytes.
    pub entries: Vec<Entry>,
}

/// Where the manifest of a dataset is; its hash is the dataset id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootRecord {
    /// k + m of the manifest's segments.
    pub erasure: ErasureParams,
    /// `Some(tag)` for encrypted datasets: tells a wrong key from a right one.
    pub key_check: Option<[u8; 16]>,
    /// Nonce of the manifest's XChaCha20 encryption.
    pub manifest_nonce: [u8; 24],
    /// Length of the manifest blob.
    pub manifest_len: u64,
    /// BLAKE3 of the manifest blob as stored (encrypted).
    pub manifest_hash: ContentHash,
    /// The manifest blob's segments.
    pub manifest_segments: Vec<SegmentDesc>,
    /// Node ids referred to by the manifest segments' placement hints.
    pub nodes: Vec<[u8; 32]>,
}

/// Why a root record or manifest could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The bytes do not start with the expected magic.
    #[error("not a granary {what} (bad magic bytes)")]
    Magic {
        /// "root record" or "manifest".
        what: &'static str,
    },
    /// Written by a newer granary.
    #[error(
        "this {what} has format version {found}, newer than this client understands ({supported}); upgrade granary"
    )]
    FutureVersion {
        /// "root record" or "manifest".
        what: &'static str,
        /// Version in the data.
        found: u8,
        /// Newest this build reads.
        supported: u8,
    },
    /// The body does not decode.
    #[error("the {what} is corrupt: {detail}")]
    Corrupt {
        /// "root record" or "manifest".
        what: &'static str,
        /// Decoder message.
        detail: String,
    },
    /// Decoded, but inconsistent.
    #[error("the {what} is inconsistent: {detail}")]
    Invalid {
        /// "root record" or "manifest".
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
}

fn encode_versioned<T: Serialize>(magic: &[u8; 4], version: u8, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(magic);
    out.push(version);
    // Serialising plain data into a Vec cannot fail.
    #[allow(clippy::expect_used)]
    let body = postcard::to_allocvec(value).expect("postcard serialisation into a Vec");
    out.extend_from_slice(&body);
    out
}

fn decode_versioned<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    magic: &[u8; 4],
    supported: u8,
    bytes: &[u8],
) -> Result<T, FormatError> {
    // Every version up to `supported` of such a record has the same body layout.
    let (_, body) = split_versioned(what, magic, supported, bytes)?;
    decode_body(what, body)
}

/// Checks magic and version; returns the version and the body.
fn split_versioned<'a>(
    what: &'static str,
    magic: &[u8; 4],
    supported: u8,
    bytes: &'a [u8],
) -> Result<(u8, &'a [u8]), FormatError> {
    if bytes.len() < 5 || &bytes[..4] != magic {
        return Err(FormatError::Magic { what });
    }
    let version = bytes[4];
    if version > supported {
        return Err(FormatError::FutureVersion {
            what,
            found: version,
            supported,
        });
    }
    if version == 0 {
        return Err(FormatError::Corrupt {
            what,
            detail: "version 0".into(),
        });
    }
    Ok((version, &bytes[5..]))
}

fn decode_body<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    body: &[u8],
) -> Result<T, FormatError> {
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| FormatError::Corrupt {
        what,
        detail: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(FormatError::Corrupt {
            what,
            detail: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(value)
}

fn check_segments(
    what: &'static str,
    erasure: ErasureParams,
    nodes: usize,
    segments: &[SegmentDesc],
) -> Result<(), FormatError> {
    erasure.validate().map_err(|e| FormatError::Invalid {
        what,
        detail: e.to_string(),
    })?;
    for (i, s) in segments.iter().enumerate() {
        let bad = |detail: String| FormatError::Invalid {
            what,
            detail: format!("segment {i}: {detail}"),
        };
        if s.shards.len() != erasure.total() || s.placement.len() != erasure.total() {
            return Err(bad(format!(
                "has {} shards, expected {}",
                s.shards.len(),
                erasure.total()
            )));
        }
        if s.shard_len as usize != erasure.shard_len(s.len as usize) {
            return Err(bad(format!(
                "shard length {} does not fit length {}",
                s.shard_len, s.len
            )));
        }
        if s.placement
            .iter()
            .any(|&p| p != NO_HINT && p as usize >= nodes)
        {
            return Err(bad("placement hint out of range".into()));
        }
    }
    Ok(())
}

impl RootRecord {
    /// Serialises with magic and version.
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(ROOT_MAGIC, ROOT_VERSION, self)
    }

    /// Parses and checks a root record.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let root: Self = decode_versioned("root record", ROOT_MAGIC, ROOT_VERSION, bytes)?;
        check_segments(
            "root record",
            root.erasure,
            root.nodes.len(),
            &root.manifest_segments,
        )?;
        let total: u64 = root.manifest_segments.iter().map(|s| s.len as u64).sum();
        if total != root.manifest_len {
            return Err(FormatError::Invalid {
                what: "root record",
                detail: "manifest segments do not add up to its length".into(),
            });
        }
        Ok(root)
    }
}

/// A manifest with the index that reads need.
#[derive(Debug, Clone)]
pub struct IndexedManifest {
    /// The manifest.
    pub manifest: Manifest,
    /// Stream offset where each segment starts; one extra element: the stream's length.
    pub segment_starts: Vec<u64>,
}

impl Manifest {
    /// Serialises with magic and version (before encryption).
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(MANIFEST_MAGIC, MANIFEST_VERSION, self)
    }

    /// Parses a decrypted manifest and checks that every reference in it is in range.
    pub fn decode(bytes: &[u8]) -> Result<IndexedManifest, FormatError> {
        const W: &str = "manifest";
        let m: Self = match split_versioned(W, MANIFEST_MAGIC, MANIFEST_VERSION, bytes)? {
            (1, body) => decode_body::<v1::Manifest>(W, body)?.into(),
            (_, body) => decode_body(W, body)?,
        };
        m.index()
    }

    /// Checks the manifest and computes segment offsets.
    pub fn index(self) -> Result<IndexedManifest, FormatError> {
        const W: &str = "manifest";
        check_segments(W, self.erasure, self.nodes.len(), &self.segments)?;
        let mut segment_starts = Vec::with_capacity(self.segments.len() + 1);
        let mut pos = 0u64;
        for s in &self.segments {
            segment_starts.push(pos);
            pos += s.len as u64;
        }
        segment_starts.push(pos);
        for e in &self.entries {
            crate::walk::check_relative_path(&e.path).map_err(|detail| FormatError::Invalid {
                what: W,
                detail: format!("path {:?}: {detail}", e.display_path()),
            })?;
            if let EntryKind::File {
                size,
                offset,
                key_seed,
                ref parts,
                ..
            } = e.kind
            {
                let bad = |detail: &str| FormatError::Invalid {
                    what: W,
                    detail: format!("file {:?} {detail}", e.display_path()),
                };
                if offset.checked_add(size).is_none_or(|end| end > pos) {
                    return Err(bad("lies outside the data stream"));
                }
                if !parts.is_empty()
                    && (key_seed.is_some() || crate::parts::count(size) != Some(parts.len() as u64))
                {
                    return Err(bad("has parts that do not match its size"));
                }
            }
        }
        Ok(IndexedManifest {
            manifest: self,
            segment_starts,
        })
    }
}

impl IndexedManifest {
    /// Total length of the dataset stream.
    pub fn stream_len(&self) -> u64 {
        *self.segment_starts.last().unwrap_or(&0)
    }

    /// The entry at `path`, if any.
    pub fn find(&self, path: &[u8]) -> Option<&Entry> {
        self.manifest
            .entries
            .binary_search_by(|e| e.path.as_slice().cmp(path))
            .ok()
            .map(|i| &self.manifest.entries[i])
    }

    /// Splits a stream range into (segment index, range within that segment) pieces.
    pub fn segment_pieces(&self, range: Range<u64>) -> Vec<(usize, Range<u64>)> {
        let mut out = Vec::new();
        if range.is_empty() {
            return out;
        }
        let first = match self.segment_starts.binary_search(&range.start) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let mut seg = first;
        while seg < self.manifest.segments.len() {
            let s = self.segment_starts[seg];
            let e = self.segment_starts[seg + 1];
            if s >= range.end {
                break;
            }
            let a = range.start.max(s);
            let b = range.end.min(e);
            if a < b {
                out.push((seg, a - s..b - s));
            }
            seg += 1;
        }
        out
    }
}

/// Manifest version 1: files had no `parts` (a large file was read twice, to key it by its
/// whole content hash).
mod v1 {
    use serde::Deserialize;

    use super::{ContentHash, ErasureParams, SegmentDesc};

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct Manifest {
        pub(super) created_unix: u64,
        pub(super) erasure: ErasureParams,
        pub(super) segment_size: u32,
        pub(super) nodes: Vec<[u8; 32]>,
        pub(super) segments: Vec<SegmentDesc>,
        pub(super) entries: Vec<Entry>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct Entry {
        pub(super) path: Vec<u8>,
        pub(super) mode: u32,
        pub(super) mtime_ns: i64,
        pub(super) kind: EntryKind,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) enum EntryKind {
        File {
            size: u64,
            hash: ContentHash,
            offset: u64,
            key_seed: Option<ContentHash>,
        },
        Dir,
        Symlink {
            target: Vec<u8>,
        },
    }

    impl From<Manifest> for super::Manifest {
        fn from(m: Manifest) -> Self {
            let entries = m
                .entries
                .into_iter()
                .map(|e| super::Entry {
                    path: e.path,
                    mode: e.mode,
                    mtime_ns: e.mtime_ns,
                    kind: match e.kind {
                        EntryKind::File {
                            size,
                            hash,
                            offset,
                            key_seed,
                        } => super::EntryKind::File {
                            size,
                            hash,
                            offset,
                            key_seed,
                            parts: Vec::new(),
                        },
                        EntryKind::Dir => super::EntryKind::Dir,
                        EntryKind::Symlink { target } => super::EntryKind::Symlink { target },
                    },
                })
                .collect();
            Self {
                created_unix: m.created_unix,
                erasure: m.erasure,
                segment_size: m.segment_size,
                nodes: m.nodes,
                segments: m.segments,
                entries,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            created_unix: 1,
            erasure: ErasureParams::DEVNET,
            segment_size: 4096,
            nodes: vec![],
            segments: vec![SegmentDesc {
                len: 100,
                shard_len: 64,
                shards: vec![ShardId([1; 32]); 6],
                placement: vec![NO_HINT; 6],
            }],
            entries: vec![Entry {
                path: b"a/b".to_vec(),
                mode: 0o644,
                mtime_ns: 0,
                kind: EntryKind::File {
                    size: 100,
                    hash: ContentHash([2; 32]),
                    offset: 0,
                    key_seed: None,
                    parts: vec![],
                },
            }],
        }
    }

    #[test]
    fn round_trip_and_future_version() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap().manifest, m);
        let mut future = bytes.clone();
        future[4] = MANIFEST_VERSION + 1;
        assert!(matches!(
            Manifest::decode(&future),
            Err(FormatError::FutureVersion { found: 3, .. })
        ));
        assert!(matches!(
            Manifest::decode(&bytes[..bytes.len() - 3]),
            Err(FormatError::Corrupt { .. })
        ));
        assert!(matches!(
            Manifest::decode(b"nope!"),
            Err(FormatError::Magic { .. })
        ));
        let mut escaping = m.clone();
        escaping.entries[0].path = b"../etc/passwd".to_vec();
        assert!(matches!(
            Manifest::decode(&escaping.encode()),
            Err(FormatError::Invalid { .. })
        ));
        let mut outside = m;
        outside.entries[0].kind = EntryKind::File {
            size: 101,
            hash: ContentHash([2; 32]),
            offset: 0,
            key_seed: None,
            parts: vec![],
        };
        assert!(matches!(
            Manifest::decode(&outside.encode()),
            Err(FormatError::Invalid { .. })
        ));
    }

    #[test]
    fn parts_must_match_the_size() {
        let mut m = sample();
        let size = crate::parts::PART + 1;
        m.segments[0].len = size as u32;
        m.segments[0].shard_len = m.erasure.shard_len(size as usize) as u32;
        let file = |parts: usize, key_seed| EntryKind::File {
            size,
            hash: ContentHash([2; 32]),
            offset: 0,
            key_seed,
            parts: vec![ContentHash([3; 32]); parts],
        };
        let decode = |kind| {
            let mut m = m.clone();
            m.entries[0].kind = kind;
            Manifest::decode(&m.encode())
        };
        assert!(decode(file(2, None)).is_ok());
        assert!(
            decode(file(0, None)).is_ok(),
            "version 1 kept large files whole"
        );
        for bad in [
            file(1, None),
            file(3, None),
            file(2, Some(ContentHash([4; 32]))),
        ] {
            assert!(matches!(decode(bad), Err(FormatError::Invalid { .. })));
        }
    }

    #[test]
    fn version_1_manifests_still_read() {
        let m = sample();
        let old = v1::Manifest {
            created_unix: m.created_unix,
            erasure: m.erasure,
            segment_size: m.segment_size,
            nodes: m.nodes.clone(),
            segments: m.segments.clone(),
            entries: vec![v1::Entry {
                path: b"a/b".to_vec(),
                mode: 0o644,
                mtime_ns: 0,
                kind: v1::EntryKind::File {
                    size: 100,
                    hash: ContentHash([2; 32]),
                    offset: 0,
                    key_seed: None,
                },
            }],
        };
        let bytes = encode_versioned(MANIFEST_MAGIC, 1, &old);
        assert_eq!(Manifest::decode(&bytes).unwrap().manifest, m);
        // The same body under version 2 is not a valid version-2 manifest.
        let mut as_v2 = bytes;
        as_v2[4] = 2;
        assert!(Manifest::decode(&as_v2).is_err());
    }

    #[test]
    fn every_truncation_and_flip_is_an_error_not_a_panic() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..cut]).is_err());
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = Manifest::decode(&b);
        }
    }
}
