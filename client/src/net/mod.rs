//! Talking to storage nodes over QUIC: [`NodeClient`].
//!
//! One QUIC connection per node, mutually authenticated with ed25519 certificates; the dialer
//! pins the node id it expects ([`NodeClient::connect`]). Each call opens one bidirectional
//! stream, sends one request frame (plus the shard bytes for a store), reads one response, and
//! is bounded by a timeout ([`NodeClient::with_timeout`]). Ranges are verified against the shard
//! id before they are returned. [`NodePool`] keeps one connection per node for callers that
//! talk to many. The wire format is `docs/protocol.md`.
//!
//! ```no_run
//! # async fn demo(addr: std::net::SocketAddr, node: granary_protocol::NodeId) -> anyhow::Result<()> {
//! use granary_protocol::SecretKey;
//! let me = SecretKey::generate();
//! let endpoint = granary_client::net::client_endpoint(&me)?;
//! let client = granary_client::net::NodeClient::connect(&endpoint, addr, node).await?;
//! let bytes = bytes::Bytes::from_static(b"hello shard");
//! let id = blake3::hash(&bytes);
//! client.store_shard(&me, id, bytes).await?;
//! assert_eq!(client.fetch_range(id, 0..5).await?, b"hello");
//! # Ok(()) }
//! ```

mod client;
mod endpoint;
mod error;
mod pool;
mod wire;

pub use client::NodeClient;
pub use endpoint::{client_endpoint, client_endpoint_on};
pub use error::{ConnectError, EndpointError, RemoteError, RequestError};
pub use granary_protocol::message::{DeleteOutcome, NodeInfo, StoreOutcome};
pub use pool::NodePool;
