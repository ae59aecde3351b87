//! Framing: every message on a stream is one length-prefixed frame.
//!
//! ```text
//! offset  size  field
//! 0       4     len      u32 big-endian: bytes that follow (2 + body), 2 ..= MAX_FRAME
//! 4       1     version  PROTOCOL_VERSION (1)
//! 5       1     type     MsgType
//! 6       len-2 body     postcard-encoded message body
//! ```
//!
//! Decoders check `len` against [`MAX_FRAME`] *before* allocating, then the version, then the
//! type. Shard bytes never travel in frames: a `StoreShard` request and a `FetchRangeOk` response
//! are followed on the same stream by a raw body whose length the frame declares.

use crate::error_code::ErrorCode;

/// Wire protocol version carried in every frame.
pub const PROTOCOL_VERSION: u8 = 2;
/// Bytes before the body: length (4), version (1), type (1).
pub const HEADER_LEN: usize = 6;
/// Largest accepted value of the length field (version + type + body): 1 MiB.
pub const MAX_FRAME: u32 = 1 << 20;

/// The registry of message types. Numbers are never reused; reserved slots are listed.
#[repr(u8)]
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsgType {
    /// Response: the request failed (`ErrorMsg`).
    Error = 1,
    /// Request: node information.
    NodeInfo = 2,
    /// Response to `NodeInfo`.
    NodeInfoOk = 3,
    /// Request: store a shard; a raw body of `size` bytes follows.
    StoreShard = 4,
    /// Response to `StoreShard`.
    StoreShardOk = 5,
    /// Request: a verified byte range of a shard.
    FetchRange = 6,
    /// Response to `FetchRange`; a raw body of `encoded_len` bytes follows.
    FetchRangeOk = 7,
    /// Request: which of these shards are held.
    HasShards = 8,
    /// Response to `HasShards`.
    HasShardsOk = 9,
    /// Request: release the owner's references to shards.
    DeleteShards = 10,
    /// Response to `DeleteShards`.
    DeleteShardsOk = 11,
    /// Request: a storage challenge (PoSt) over named sealed units.
    Challenge = 12,
    /// Response to `Challenge`; a raw body of `proof_len` bytes (a postcard `PostProof`) follows.
    ChallengeOk = 13,
    /// Request: a seal proof for one sealed unit.
    SealProof = 14,
    /// Response to `SealProof`; a raw body of `proof_len` bytes (a postcard `SealProof`) follows.
    SealProofOk = 15,
    // 16..=23 reserved: gossip / membership.
    // 24..=31 reserved: auditor and repair.
    /// Request: the sealing state of shards and the signed statements of their units.
    SealInfo = 32,
    /// Response to `SealInfo`; a raw body of `body_len` bytes (a postcard `SealInfoBody`) follows.
    SealInfoOk = 33,
    /// Request: add the owner's reference tag to held shards.
    TagShards = 34,
    /// Response to `TagShards`.
    TagShardsOk = 35,
    // 0 and 36..=255 unassigned; 0 is never used.
}

impl MsgType {
    /// Parses a type byte; `None` for reserved or unknown values.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Error,
            2 => Self::NodeInfo,
            3 => Self::NodeInfoOk,
            4 => Self::StoreShard,
            5 => Self::StoreShardOk,
            6 => Self::FetchRange,
            7 => Self::FetchRangeOk,
            8 => Self::HasShards,
            9 => Self::HasShardsOk,
            10 => Self::DeleteShards,
            11 => Self::DeleteShardsOk,
            12 => Self::Challenge,
            13 => Self::ChallengeOk,
            14 => Self::SealProof,
            15 => Self::SealProofOk,
            32 => Self::SealInfo,
            33 => Self::SealInfoOk,
            34 => Self::TagShards,
            35 => Self::TagShardsOk,
            _ => return None,
        })
    }

    /// Whether this type is sent by a dialer to start an exchange.
    pub fn is_request(self) -> bool {
        matches!(
            self,
            Self::NodeInfo
                | Self::StoreShard
                | Self::FetchRange
                | Self::HasShards
                | Self::DeleteShards
                | Self::Challenge
                | Self::SealProof
                | Self::SealInfo
                | Self::TagShards
        )
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length field exceeds the cap (checked before any allocation).
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Declared length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The length field is too small to hold version and type.
    #[error("frame length {len} is below the minimum of 2")]
    TooShort {
        /// Declared length.
        len: u32,
    },
    /// The version byte is not [`PROTOCOL_VERSION`].
    #[error("unsupported protocol version {version}")]
    UnsupportedVersion {
        /// Received version.
        version: u8,
    },
    /// The type byte is not in the registry.
    #[error("unknown message type {msg_type}")]
    UnknownType {
        /// Received type byte.
        msg_type: u8,
    },
    /// The body did not decode as the declared type.
    #[error("malformed {msg_type:?} body: {reason}")]
    Malformed {
        /// Declared type.
        msg_type: MsgType,
        /// What went wrong.
        reason: String,
    },
    /// A well-formed message broke a protocol limit (e.g. too many ids).
    #[error("{msg_type:?} violates a limit: {reason}")]
    Limit {
        /// Declared type.
        msg_type: MsgType,
        /// Which limit.
        reason: &'static str,
    },
}

impl FrameError {
    /// The wire error code reported to the peer for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::TooShort { .. } | Self::Malformed { .. } => ErrorCode::Malformed,
            Self::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            Self::UnknownType { .. } => ErrorCode::UnknownMessage,
            Self::Limit { .. } => ErrorCode::TooManyIds,
        }
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The message type.
    pub msg_type: MsgType,
    /// Body length in bytes (the length field minus 2).
    pub body_len: u32,
}

impl FrameHeader {
    /// Decodes and validates a header: length (against `max`, at most [`MAX_FRAME`]) first,
    /// then version, then type.
    pub fn decode(bytes: &[u8; HEADER_LEN], max: u32) -> Result<Self, FrameError> {
        let max = max.min(MAX_FRAME);
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if len > max {
            return Err(FrameError::TooLarge { len, max });
        }
        if len < 2 {
            return Err(FrameError::TooShort { len });
        }
        if bytes[4] != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion { version: bytes[4] });
        }
        let msg_type =
            MsgType::from_u8(bytes[5]).ok_or(FrameError::UnknownType { msg_type: bytes[5] })?;
        Ok(Self {
            msg_type,
            body_len: len - 2,
        })
    }

    /// Encodes a header for a body of `body_len` bytes.
    pub fn encode(msg_type: MsgType, body_len: u32) -> [u8; HEADER_LEN] {
        let l = (body_len + 2).to_be_bytes();
        [l[0], l[1], l[2], l[3], PROTOCOL_VERSION, msg_type as u8]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks_length_before_version_and_type() {
        let h = |b: [u8; 6]| FrameHeader::decode(&b, MAX_FRAME);
        assert_eq!(
            h([0xff, 0xff, 0xff, 0xff, 9, 200]),
            Err(FrameError::TooLarge {
                len: u32::MAX,
                max: MAX_FRAME
            })
        );
        assert_eq!(h([0, 0, 0, 1, 1, 2]), Err(FrameError::TooShort { len: 1 }));
        assert_eq!(
            h([0, 0, 0, 2, 1, 2]),
            Err(FrameError::UnsupportedVersion { version: 1 })
        );
        let v = PROTOCOL_VERSION;
        assert_eq!(
            h([0, 0, 0, 2, v, 16]),
            Err(FrameError::UnknownType { msg_type: 16 })
        );
        assert_eq!(
            h([0, 0, 0, 2, v, 2]),
            Ok(FrameHeader {
                msg_type: MsgType::NodeInfo,
                body_len: 0
            })
        );
        assert_eq!(
            FrameHeader::encode(MsgType::HasShards, 5),
            [0, 0, 0, 7, PROTOCOL_VERSION, 8]
        );
    }

    #[test]
    fn registry_round_trips() {
        for b in 0..=255u8 {
            if let Some(t) = MsgType::from_u8(b) {
                assert_eq!(t as u8, b);
            }
        }
        assert!(
            (16..=31).all(|b| MsgType::from_u8(b).is_none()),
            "reserved slots stay free"
        );
    }
}
