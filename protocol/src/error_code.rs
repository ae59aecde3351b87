//! The one table of error codes that cross the wire (in `ErrorMsg.code`, a `u16`).
//!
//! Codes are stable: never renumber or reuse one. Unknown codes received from a newer peer are
//! kept as raw numbers by receivers ([`ErrorCode::from_u16`] returns `None`).

/// A stable, numeric error code.
#[repr(u16)]
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A frame or body did not decode.
    Malformed = 1,
    /// The frame's version byte is not supported.
    UnsupportedVersion = 2,
    /// The frame's type byte is not in the registry.
    UnknownMessage = 3,
    /// The frame's length field exceeds the limit.
    FrameTooLarge = 4,
    /// A known message arrived where a request was expected.
    UnexpectedMessage = 5,
    /// The peer was too slow: a read did not complete in time.
    Timeout = 6,
    /// The owner signature does not verify.
    BadSignature = 7,
    /// The request timestamp is outside the accepted clock-skew window.
    StaleTimestamp = 8,
    /// The request's nonce was already used within the window (replay).
    Replay = 9,
    /// The request was signed for another node.
    WrongNode = 10,
    /// The shard body does not hash to the shard id; nothing was stored.
    HashMismatch = 11,
    /// The declared shard size exceeds the node's limit.
    ShardTooLarge = 12,
    /// The raw body was shorter or longer than declared.
    LengthMismatch = 13,
    /// The node's capacity would be exceeded.
    NodeQuotaExceeded = 14,
    /// The owner's quota on this node would be exceeded.
    OwnerQuotaExceeded = 15,
    /// The node's disk is full (ENOSPC).
    DiskFull = 16,
    /// The shard is not held.
    NotFound = 17,
    /// The requested range starts past the end of the shard.
    RangeOutOfBounds = 18,
    /// Too many shard ids in one request.
    TooManyIds = 19,
    /// The node is overloaded; retry later.
    Busy = 20,
    /// The node is shutting down.
    ShuttingDown = 21,
    /// An internal error on the node (I/O, database); details are logged there.
    Internal = 22,
    /// The peer may not make this request (e.g. a proof request from a peer with no data here).
    Forbidden = 23,
}

impl ErrorCode {
    /// All codes, in numeric order.
    pub const ALL: [Self; 23] = [
        Self::Malformed,
        Self::UnsupportedVersion,
        Self::UnknownMessage,
        Self::FrameTooLarge,
        Self::UnexpectedMessage,
        Self::Timeout,
        Self::BadSignature,
        Self::StaleTimestamp,
        Self::Replay,
        Self::WrongNode,
        Self::HashMismatch,
        Self::ShardTooLarge,
        Self::LengthMismatch,
        Self::NodeQuotaExceeded,
        Self::OwnerQuotaExceeded,
        Self::DiskFull,
        Self::NotFound,
        Self::RangeOutOfBounds,
        Self::TooManyIds,
        Self::Busy,
        Self::ShuttingDown,
        Self::Internal,
        Self::Forbidden,
    ];

    /// Parses a wire code; `None` for codes this version does not know.
    pub fn from_u16(code: u16) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| *c as u16 == code)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?} ({})", *self as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_dense_and_stable() {
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(*c as u16, i as u16 + 1);
            assert_eq!(ErrorCode::from_u16(*c as u16), Some(*c));
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(999), None);
        // Spot-check that numbers never move.
        assert_eq!(ErrorCode::HashMismatch as u16, 11);
        assert_eq!(ErrorCode::OwnerQuotaExceeded as u16, 15);
    }
}
