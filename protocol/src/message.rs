//! Message bodies and the [`Message`] enum that ties each to its [`MsgType`].
//!
//! Bodies are postcard-encoded (varint integers, length-prefixed sequences, fixed-size arrays
//! inline). Exchanges, one per bidirectional QUIC stream:
//!
//! | request        | raw body after frame | success response | raw body after frame |
//! |----------------|----------------------|------------------|----------------------|
//! | `NodeInfo`     | –                    | `NodeInfoOk`     | –                    |
//! | `StoreShard`   | `size` shard bytes   | `StoreShardOk`   | –                    |
//! | `FetchRange`   | –                    | `FetchRangeOk`   | `encoded_len` bytes  |
//! | `HasShards`    | –                    | `HasShardsOk`    | –                    |
//! | `DeleteShards` | –                    | `DeleteShardsOk` | –                    |
//! | `TagShards`    | –                    | `TagShardsOk`    | –                    |
//! | `SealInfo`     | –                    | `SealInfoOk`     | `body_len` bytes     |
//! | `SealProof`    | –                    | `SealProofOk`    | `proof_len` bytes    |
//! | `Challenge`    | –                    | `ChallengeOk`    | `proof_len` bytes    |
//!
//! Any request may instead be answered with `Error`.

use serde::{Deserialize, Serialize};

use crate::{
    error_code::ErrorCode,
    frame::{FrameError, FrameHeader, HEADER_LEN, MAX_FRAME, MsgType},
    identity::{NodeId, Signature},
};

/// Largest shard a node may accept (nodes may configure less).
pub const MAX_SHARD_SIZE: u64 = 64 << 20;
/// Most shard ids in one `HasShards` or `DeleteShards` request.
pub const MAX_IDS_PER_REQUEST: usize = 8192;
/// Longest `ErrorMsg.detail` and `NodeInfo` string, in bytes.
pub const MAX_TEXT_LEN: usize = 512;
/// Length of a request nonce.
pub const NONCE_LEN: usize = 16;

/// Largest raw body after `SealInfoOk`, `SealProofOk` or `ChallengeOk`.
pub const MAX_PROOF_BODY: u64 = 32 << 20;
/// Most units one `Challenge` may name.
pub const MAX_CHALLENGE_UNITS: usize = 16_384;
/// Most chunks one `Challenge` may ask for.
pub const MAX_CHALLENGE_CHUNKS: u32 = 4_096;
/// Most openings one `SealProof` may ask for.
pub const MAX_SEAL_OPENINGS: u32 = 1_024;

/// A shard id: the BLAKE3 hash of the shard's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardId(pub [u8; 32]);

impl ShardId {
    /// The id as a BLAKE3 hash.
    pub fn hash(&self) -> blake3::Hash {
        blake3::Hash::from_bytes(self.0)
    }
}

impl From<blake3::Hash> for ShardId {
    fn from(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShardId({})", hex::encode(&self.0[..6]))
    }
}

/// A signed request's freshness fields, shared by all owner-signed requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freshness {
    /// Milliseconds since the Unix epoch when the request was signed.
    pub timestamp_ms: u64,
    /// Random; a node refuses a nonce it has seen from the same owner within the window.
    pub nonce: [u8; NONCE_LEN],
}

/// `Error` (type 1): the request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// An [`ErrorCode`] number.
    pub code: u16,
    /// Human-readable detail (at most [`MAX_TEXT_LEN`] bytes).
    pub detail: String,
}

impl ErrorMsg {
    /// Builds an error message, truncating long details.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if detail.len() > MAX_TEXT_LEN {
            let mut cut = MAX_TEXT_LEN;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
        }
        Self {
            code: code as u16,
            detail,
        }
    }
}

/// `NodeInfo` (type 2): ask for the node's description. Empty body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeInfoRequest;

/// `NodeInfoOk` (type 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id.
    pub id: NodeId,
    /// Software version.
    pub version: String,
    /// Configured capacity in bytes.
    pub capacity: u64,
    /// Bytes still available (capacity minus used, bounded by free disk).
    pub free: u64,
    /// Bytes of shard data stored.
    pub used: u64,
    /// Failure-domain label (operator/zone).
    pub label: String,
    /// Number of shards stored.
    pub shard_count: u64,
}

/// `StoreShard` (type 4): store `size` bytes that follow the frame; signed by `owner`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreShard {
    /// BLAKE3 of the body.
    pub shard_id: ShardId,
    /// Body length in bytes.
    pub size: u64,
    /// The owner whose quota is charged and who may later delete.
    pub owner: NodeId,
    /// The owner's reference tag (which dataset, or which upload, holds the reference).
    pub tag: RefTag,
    /// The node this request is meant for (prevents replay to another node).
    pub node: NodeId,
    /// Timestamp and nonce.
    pub freshness: Freshness,
    /// Owner's signature over [`StoreShard::signing_bytes`].
    pub signature: Signature,
}

/// Outcome of a successful store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StoreOutcome {
    /// The bytes were written (wire value 0).
    Stored,
    /// The node already held the shard; the owner's reference was recorded (wire value 1).
    AlreadyHeld,
}

/// `StoreShardOk` (type 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreShardOk {
    /// What happened.
    pub outcome: StoreOutcome,
}

/// `FetchRange` (type 6): bytes `start..end` of a shard; `end` is clamped to the shard size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRange {
    /// The shard.
    pub shard_id: ShardId,
    /// First byte.
    pub start: u64,
    /// One past the last byte (clamped to the size; `u64::MAX` means "to the end").
    pub end: u64,
}

/// `FetchRangeOk` (type 7): followed by `encoded_len` bytes of bao-encoded range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRangeOk {
    /// Shard size.
    pub size: u64,
    /// Effective end of the range (request's end clamped to `size`).
    pub end: u64,
    /// Length of the raw encoded body that follows.
    pub encoded_len: u64,
}

/// `HasShards` (type 8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HasShards {
    /// Up to [`MAX_IDS_PER_REQUEST`] ids.
    pub ids: Vec<ShardId>,
}

/// `HasShardsOk` (type 9): bit `i` (LSB-first within each byte) is set if `ids[i]` is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HasShardsOk {
    /// `ceil(n / 8)` bytes.
    pub bitmap: Vec<u8>,
}

/// `DeleteShards` (type 10): release `owner`'s `tag` references; signed by `owner`. The owner's
/// hold on a shard ends with its last tag; the bytes go with the last owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteShards {
    /// Up to [`MAX_IDS_PER_REQUEST`] ids.
    pub ids: Vec<ShardId>,
    /// The owner releasing its references.
    pub owner: NodeId,
    /// Which of the owner's references to release.
    pub tag: RefTag,
    /// The node this request is meant for.
    pub node: NodeId,
    /// Timestamp and nonce.
    pub freshness: Freshness,
    /// Owner's signature over [`DeleteShards::signing_bytes`].
    pub signature: Signature,
}

/// `TagShards` (type 34): add `owner`'s `tag` reference to shards the node already holds (a new
/// dataset version naming shards stored earlier); signed by `owner`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagShards {
    /// Up to [`MAX_IDS_PER_REQUEST`] ids.
    pub ids: Vec<ShardId>,
    /// The owner taking the references (charged for shards it did not reference yet).
    pub owner: NodeId,
    /// The reference tag to add.
    pub tag: RefTag,
    /// The node this request is meant for.
    pub node: NodeId,
    /// Timestamp and nonce.
    pub freshness: Freshness,
    /// Owner's signature over [`TagShards::signing_bytes`].
    pub signature: Signature,
}

/// Per-id result of a tag request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TagOutcome {
    /// The reference is recorded (wire value 0).
    Tagged,
    /// The node does not hold the shard; nothing changed (wire value 1).
    NotHeld,
}

/// `TagShardsOk` (type 35): one outcome per requested id, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagShardsOk {
    /// Outcomes.
    pub outcomes: Vec<TagOutcome>,
}

/// A reference tag: an owner holds a shard once per tag (a dataset id, or an upload's tag until
/// the dataset is committed), so removing one dataset never drops another's shards.
pub type RefTag = [u8; 32];

/// Per-id result of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DeleteOutcome {
    /// The owner's reference was the last one; the bytes were removed (wire value 0).
    Deleted,
    /// The reference was removed; other owners (or this owner's other tags) still hold the
    /// shard (wire value 1).
    Released,
    /// This owner holds no reference to the shard (or it is not stored); nothing changed
    /// (wire value 2).
    NotOwner,
}

/// `DeleteShardsOk` (type 11): one outcome per requested id, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteShardsOk {
    /// Outcomes.
    pub outcomes: Vec<DeleteOutcome>,
}

const STORE_DOMAIN: &[u8] = b"granary/store-shard/v2\0";
const DELETE_DOMAIN: &[u8] = b"granary/delete-shards/v2\0";
const TAG_DOMAIN: &[u8] = b"granary/tag-shards/v1\0";

impl StoreShard {
    /// The bytes the owner signs: domain, node, shard id, size, tag, timestamp, nonce.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(STORE_DOMAIN.len() + 32 + 32 + 8 + 32 + 8 + NONCE_LEN);
        b.extend_from_slice(STORE_DOMAIN);
        b.extend_from_slice(self.node.as_bytes());
        b.extend_from_slice(&self.shard_id.0);
        b.extend_from_slice(&self.size.to_le_bytes());
        b.extend_from_slice(&self.tag);
        b.extend_from_slice(&self.freshness.timestamp_ms.to_le_bytes());
        b.extend_from_slice(&self.freshness.nonce);
        b
    }
}

impl DeleteShards {
    /// The bytes the owner signs: domain, node, tag, timestamp, nonce, count, ids.
    pub fn signing_bytes(&self) -> Vec<u8> {
        ids_signing_bytes(
            DELETE_DOMAIN,
            &self.node,
            &self.tag,
            &self.freshness,
            &self.ids,
        )
    }
}

impl TagShards {
    /// The bytes the owner signs: domain, node, tag, timestamp, nonce, count, ids.
    pub fn signing_bytes(&self) -> Vec<u8> {
        ids_signing_bytes(
            TAG_DOMAIN,
            &self.node,
            &self.tag,
            &self.freshness,
            &self.ids,
        )
    }
}

fn ids_signing_bytes(
    domain: &[u8],
    node: &NodeId,
    tag: &RefTag,
    freshness: &Freshness,
    ids: &[ShardId],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(domain.len() + 32 + 32 + 8 + NONCE_LEN + 8 + 32 * ids.len());
    b.extend_from_slice(domain);
    b.extend_from_slice(node.as_bytes());
    b.extend_from_slice(tag);
    b.extend_from_slice(&freshness.timestamp_ms.to_le_bytes());
    b.extend_from_slice(&freshness.nonce);
    b.extend_from_slice(&(ids.len() as u64).to_le_bytes());
    for id in ids {
        b.extend_from_slice(&id.0);
    }
    b
}

/// Packs booleans LSB-first into bytes.
pub fn pack_bits(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, _) in bits.iter().enumerate().filter(|(_, b)| **b) {
        out[i / 8] |= 1 << (i % 8);
    }
    out
}

/// Unpacks `n` booleans; `None` if the bitmap has the wrong length.
pub fn unpack_bits(bitmap: &[u8], n: usize) -> Option<Vec<bool>> {
    (bitmap.len() == n.div_ceil(8)).then(|| {
        (0..n)
            .map(|i| bitmap[i / 8] & (1 << (i % 8)) != 0)
            .collect()
    })
}

/// Upper bound on the encoded size of a `len`-byte range (data plus proof hashes), used by
/// readers to cap allocation before reading a `FetchRangeOk` body.
pub fn encoded_range_bound(len: u64) -> u64 {
    const BLOCK: u64 = 16 * 1024;
    let blocks = len / BLOCK + 2;
    len.saturating_add(2 * BLOCK)
        .saturating_add(64 * (blocks + 64))
}

/// `SealInfo` (type 32): the sealing state of these shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealInfo {
    /// At most [`MAX_IDS_PER_REQUEST`].
    pub ids: Vec<ShardId>,
}

/// `SealInfoOk` (type 33): a postcard [`SealInfoBody`](crate::sealing::SealInfoBody) of `body_len` bytes follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealInfoOk {
    /// Raw body length (at most [`MAX_PROOF_BODY`]).
    pub body_len: u64,
}

/// `SealProof` (type 14): prove that the unit with replica commitment `comm_r` is a correct
/// sealing, with `openings` openings drawn from the verifier's fresh `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealProofRequest {
    /// The unit.
    pub comm_r: [u8; 32],
    /// Fresh randomness from the verifier.
    pub seed: [u8; 32],
    /// Number of openings (at most [`MAX_SEAL_OPENINGS`]).
    pub openings: u32,
}

/// `SealProofOk` (type 15): a postcard `granary_proofs::seal_proof::SealProof` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealProofOk {
    /// Raw body length (at most [`MAX_PROOF_BODY`]).
    pub proof_len: u64,
}

/// `Challenge` (type 12): answer `chunks` storage challenges drawn from `seed` over `units` (in
/// this order: the challenge indexes units by position).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeRequest {
    /// Fresh randomness from the challenger.
    pub seed: [u8; 32],
    /// Replica commitments of the challenged units (at most [`MAX_CHALLENGE_UNITS`]).
    pub units: Vec<[u8; 32]>,
    /// Challenged chunks (at most [`MAX_CHALLENGE_CHUNKS`]).
    pub chunks: u32,
}

/// `ChallengeOk` (type 13): a postcard `granary_proofs::challenge::PostProof` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeOk {
    /// Raw body length (at most [`MAX_PROOF_BODY`]).
    pub proof_len: u64,
}

/// Every message, tagged by its [`MsgType`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum Message {
    Error(ErrorMsg),
    NodeInfo(NodeInfoRequest),
    NodeInfoOk(NodeInfo),
    StoreShard(StoreShard),
    StoreShardOk(StoreShardOk),
    FetchRange(FetchRange),
    FetchRangeOk(FetchRangeOk),
    HasShards(HasShards),
    HasShardsOk(HasShardsOk),
    DeleteShards(DeleteShards),
    DeleteShardsOk(DeleteShardsOk),
    Challenge(ChallengeRequest),
    ChallengeOk(ChallengeOk),
    SealProof(SealProofRequest),
    SealProofOk(SealProofOk),
    SealInfo(SealInfo),
    SealInfoOk(SealInfoOk),
    TagShards(TagShards),
    TagShardsOk(TagShardsOk),
}

/// A message could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded body exceeds [`MAX_FRAME`].
    #[error("encoded {msg_type:?} is {len} bytes, over the frame limit")]
    TooLarge {
        /// Message type.
        msg_type: MsgType,
        /// Encoded body length.
        len: usize,
    },
    /// Serialization failed.
    #[error("serializing {msg_type:?}: {source}")]
    Serialize {
        /// Message type.
        msg_type: MsgType,
        /// The postcard error.
        source: postcard::Error,
    },
}

macro_rules! dispatch {
    ($self:ident, $m:ident => $e:expr) => {
        match $self {
            Message::Error($m) => $e,
            Message::NodeInfo($m) => $e,
            Message::NodeInfoOk($m) => $e,
            Message::StoreShard($m) => $e,
            Message::StoreShardOk($m) => $e,
            Message::FetchRange($m) => $e,
            Message::FetchRangeOk($m) => $e,
            Message::HasShards($m) => $e,
            Message::HasShardsOk($m) => $e,
            Message::DeleteShards($m) => $e,
            Message::DeleteShardsOk($m) => $e,
            Message::Challenge($m) => $e,
            Message::ChallengeOk($m) => $e,
            Message::SealProof($m) => $e,
            Message::SealProofOk($m) => $e,
            Message::SealInfo($m) => $e,
            Message::SealInfoOk($m) => $e,
            Message::TagShards($m) => $e,
            Message::TagShardsOk($m) => $e,
        }
    };
}

impl Message {
    /// This message's type tag.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Self::Error(_) => MsgType::Error,
            Self::NodeInfo(_) => MsgType::NodeInfo,
            Self::NodeInfoOk(_) => MsgType::NodeInfoOk,
            Self::StoreShard(_) => MsgType::StoreShard,
            Self::StoreShardOk(_) => MsgType::StoreShardOk,
            Self::FetchRange(_) => MsgType::FetchRange,
            Self::FetchRangeOk(_) => MsgType::FetchRangeOk,
            Self::HasShards(_) => MsgType::HasShards,
            Self::HasShardsOk(_) => MsgType::HasShardsOk,
            Self::DeleteShards(_) => MsgType::DeleteShards,
            Self::DeleteShardsOk(_) => MsgType::DeleteShardsOk,
            Self::Challenge(_) => MsgType::Challenge,
            Self::ChallengeOk(_) => MsgType::ChallengeOk,
            Self::SealProof(_) => MsgType::SealProof,
            Self::SealProofOk(_) => MsgType::SealProofOk,
            Self::SealInfo(_) => MsgType::SealInfo,
            Self::SealInfoOk(_) => MsgType::SealInfoOk,
            Self::TagShards(_) => MsgType::TagShards,
            Self::TagShardsOk(_) => MsgType::TagShardsOk,
        }
    }

    /// Appends the whole frame (header and body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let msg_type = self.msg_type();
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        let res = dispatch!(self, m => postcard::to_extend(m, std::mem::take(out)));
        *out = res.map_err(|source| EncodeError::Serialize { msg_type, source })?;
        let body_len = out.len() - start - HEADER_LEN;
        if body_len + 2 > MAX_FRAME as usize {
            out.truncate(start);
            return Err(EncodeError::TooLarge {
                msg_type,
                len: body_len,
            });
        }
        out[start..start + HEADER_LEN]
            .copy_from_slice(&FrameHeader::encode(msg_type, body_len as u32));
        Ok(())
    }

    /// The whole frame as a new vector.
    pub fn to_frame(&self) -> Result<Vec<u8>, EncodeError> {
        let mut v = Vec::new();
        self.encode(&mut v)?;
        Ok(v)
    }

    /// Length of the encoded frame, header included.
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        let msg_type = self.msg_type();
        let n = dispatch!(self, m => postcard::experimental::serialized_size(m))
            .map_err(|source| EncodeError::Serialize { msg_type, source })?;
        Ok(HEADER_LEN + n)
    }

    /// Decodes a body of the given type and checks its limits. Trailing bytes are refused.
    pub fn decode_body(msg_type: MsgType, body: &[u8]) -> Result<Self, FrameError> {
        fn de<'a, T: Deserialize<'a>>(t: MsgType, b: &'a [u8]) -> Result<T, FrameError> {
            let (v, rest) = postcard::take_from_bytes(b).map_err(|e| FrameError::Malformed {
                msg_type: t,
                reason: e.to_string(),
            })?;
            if !rest.is_empty() {
                return Err(FrameError::Malformed {
                    msg_type: t,
                    reason: format!("{} trailing bytes", rest.len()),
                });
            }
            Ok(v)
        }
        let t = msg_type;
        let msg = match msg_type {
            MsgType::Error => Self::Error(de(t, body)?),
            MsgType::NodeInfo => Self::NodeInfo(de(t, body)?),
            MsgType::NodeInfoOk => Self::NodeInfoOk(de(t, body)?),
            MsgType::StoreShard => Self::StoreShard(de(t, body)?),
            MsgType::StoreShardOk => Self::StoreShardOk(de(t, body)?),
            MsgType::FetchRange => Self::FetchRange(de(t, body)?),
            MsgType::FetchRangeOk => Self::FetchRangeOk(de(t, body)?),
            MsgType::HasShards => Self::HasShards(de(t, body)?),
            MsgType::HasShardsOk => Self::HasShardsOk(de(t, body)?),
            MsgType::DeleteShards => Self::DeleteShards(de(t, body)?),
            MsgType::DeleteShardsOk => Self::DeleteShardsOk(de(t, body)?),
            MsgType::Challenge => Self::Challenge(de(t, body)?),
            MsgType::ChallengeOk => Self::ChallengeOk(de(t, body)?),
            MsgType::SealProof => Self::SealProof(de(t, body)?),
            MsgType::SealProofOk => Self::SealProofOk(de(t, body)?),
            MsgType::SealInfo => Self::SealInfo(de(t, body)?),
            MsgType::SealInfoOk => Self::SealInfoOk(de(t, body)?),
            MsgType::TagShards => Self::TagShards(de(t, body)?),
            MsgType::TagShardsOk => Self::TagShardsOk(de(t, body)?),
        };
        msg.check_limits()?;
        Ok(msg)
    }

    fn check_limits(&self) -> Result<(), FrameError> {
        let t = self.msg_type();
        let limit = |reason| {
            Err(FrameError::Limit {
                msg_type: t,
                reason,
            })
        };
        match self {
            Self::HasShards(HasShards { ids })
            | Self::DeleteShards(DeleteShards { ids, .. })
            | Self::TagShards(TagShards { ids, .. })
                if ids.len() > MAX_IDS_PER_REQUEST =>
            {
                limit("too many shard ids")
            }
            Self::DeleteShardsOk(DeleteShardsOk { outcomes })
                if outcomes.len() > MAX_IDS_PER_REQUEST =>
            {
                limit("too many outcomes")
            }
            Self::TagShardsOk(TagShardsOk { outcomes }) if outcomes.len() > MAX_IDS_PER_REQUEST => {
                limit("too many outcomes")
            }
            Self::Error(e) if e.detail.len() > MAX_TEXT_LEN => limit("error detail too long"),
            Self::NodeInfoOk(i)
                if i.version.len() > MAX_TEXT_LEN || i.label.len() > MAX_TEXT_LEN =>
            {
                limit("node info string too long")
            }
            Self::StoreShard(s) if s.size > MAX_SHARD_SIZE => limit("shard too large"),
            Self::SealInfo(SealInfo { ids }) if ids.len() > MAX_IDS_PER_REQUEST => {
                limit("too many shard ids")
            }
            Self::Challenge(c) if c.units.len() > MAX_CHALLENGE_UNITS => limit("too many units"),
            Self::Challenge(c) if c.chunks == 0 || c.chunks > MAX_CHALLENGE_CHUNKS => {
                limit("challenged chunks out of range")
            }
            Self::SealProof(r) if r.openings == 0 || r.openings > MAX_SEAL_OPENINGS => {
                limit("seal-proof openings out of range")
            }
            Self::SealInfoOk(SealInfoOk { body_len: n })
            | Self::SealProofOk(SealProofOk { proof_len: n })
            | Self::ChallengeOk(ChallengeOk { proof_len: n })
                if *n > MAX_PROOF_BODY =>
            {
                limit("proof body too large")
            }
            _ => Ok(()),
        }
    }

    /// Decodes one whole frame from the front of `buf`.
    ///
    /// Returns `Ok(None)` if more bytes are needed, else the message and the bytes consumed. The
    /// length is validated from the first 6 bytes, before the body is looked at.
    pub fn decode_frame(buf: &[u8]) -> Result<Option<(Self, usize)>, FrameError> {
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let h = FrameHeader::decode(head, MAX_FRAME)?;
        let end = HEADER_LEN + h.body_len as usize;
        let Some(body) = buf.get(HEADER_LEN..end) else {
            return Ok(None);
        };
        Ok(Some((Self::decode_body(h.msg_type, body)?, end)))
    }
}
