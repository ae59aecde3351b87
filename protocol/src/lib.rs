//! Granary's wire protocol: messages, framing, identities and verified ranges (sans-IO).
//!
//! Goals: one small, documented, versioned protocol shared by nodes and clients, with every
//! limit enforced by the decoder and every error carrying a stable numeric code. Non-goals: any
//! I/O — the node and client wrap these types around QUIC streams (quinn) themselves.
//!
//! - [`identity`] — ed25519 keys and node ids, key files.
//! - [`tls`] — self-signed certificates from those keys; rustls configs with pinned peers.
//! - [`frame`] — the frame header and the message-type registry.
//! - [`message`] — message bodies; [`message::Message`] encodes and decodes whole frames.
//! - [`error_code`] — the table of wire error codes.
//! - [`auth`] — signing and checking owner requests.
//! - [`verified`] — BLAKE3 verified streaming of byte ranges.
//!
//! The byte-level specification is `docs/protocol.md`.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod auth;
pub mod error_code;
pub mod frame;
pub mod identity;
pub mod message;
pub mod sealing;
pub mod size;
pub mod tls;
pub mod udp;
pub mod verified;
#[cfg(test)]
mod wire_tests;

pub use error_code::ErrorCode;
pub use frame::{MAX_FRAME, MsgType, PROTOCOL_VERSION};
pub use identity::{NodeAddr, NodeId, SecretKey, Signature};
pub use message::{Message, ShardId};
pub use tls::ALPN;
