//! Errors of the node client, one enum per operation kind.

use granary_protocol::{ErrorCode, NodeId, tls::PeerCertError, verified::VerifyError};

/// Why a client endpoint could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// TLS setup failed.
    #[error("TLS setup: {0}")]
    Tls(#[from] granary_protocol::tls::TlsError),
    /// QUIC setup failed.
    #[error("QUIC setup: {0}")]
    Quic(String),
    /// Binding the UDP socket failed.
    #[error("binding UDP socket: {0}")]
    Bind(std::io::Error),
}

/// Why connecting to a node failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The connection could not be started (e.g. the endpoint is closed).
    #[error("starting connection: {0}")]
    Setup(#[from] quinn::ConnectError),
    /// The peer proved another identity than the pinned one.
    #[error("node at the address is {actual}, expected {expected}")]
    UnexpectedPeer {
        /// Pinned node id.
        expected: NodeId,
        /// Id the peer proved.
        actual: NodeId,
    },
    /// The peer's certificate was unusable.
    #[error("peer certificate refused: {0}")]
    BadCertificate(PeerCertError),
    /// The handshake failed otherwise (unreachable, refused, ALPN mismatch, ...).
    #[error("handshake: {0}")]
    Handshake(quinn::ConnectionError),
    /// The handshake did not complete in time.
    #[error("connection timed out")]
    Timeout,
}

/// An `Error` response from the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node refused: {} ({raw}): {detail}", self.code().map_or("unknown code".to_string(), |c| format!("{c:?}")))]
pub struct RemoteError {
    /// The wire code.
    pub raw: u16,
    /// The node's explanation.
    pub detail: String,
}

impl RemoteError {
    /// The code, if this client knows it.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::from_u16(self.raw)
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The node answered with an error.
    #[error(transparent)]
    Rejected(#[from] RemoteError),
    /// The call did not complete within the client's timeout.
    #[error("request timed out")]
    Timeout,
    /// The connection is gone.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Sending failed.
    #[error("sending: {0}")]
    Write(#[from] quinn::WriteError),
    /// Receiving failed.
    #[error("receiving: {0}")]
    Read(#[from] quinn::ReadError),
    /// The node's response broke the protocol.
    #[error("invalid response: {0}")]
    Protocol(String),
    /// A returned range did not verify against the shard id.
    #[error("range failed verification: {0}")]
    Verify(#[from] VerifyError),
    /// The request itself is invalid (e.g. a shard above the protocol's size limit).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl RequestError {
    /// Whether the node could not be reached or did not answer (timeout, or the connection
    /// lost however the failure surfaced), rather than answering wrongly: the caller should
    /// treat the node as down and go elsewhere.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Timeout
                | Self::Connection(_)
                | Self::Write(quinn::WriteError::ConnectionLost(_))
                | Self::Read(quinn::ReadError::ConnectionLost(_))
        )
    }

    /// The node's error code, for [`RequestError::Rejected`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Rejected(r) => r.code(),
            _ => None,
        }
    }
}
