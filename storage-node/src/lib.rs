//! Granary storage node: stores shards, serves verified ranges over QUIC.
//!
//! Layers, outermost first:
//! - [`node`] — directory set-up (`init`), start-up consistency check, [`node::start`] /
//!   [`node::RunningNode::shutdown`].
//! - `server` — the QUIC accept loop; one task per connection, one per request stream.
//! - `handler` — request handlers (auth, quotas, verification, commit); `upload` streams a
//!   shard body to disk and hashes it as it arrives.
//! - [`store`] — the metadata [`store::Store`] trait and its RocksDB implementation.
//! - [`blobs`] — shard files on disk.
//! - [`config`] — `config.toml`.
//! - [`sealing`] — background sealing into replica units, unsealing reads, seal proofs and
//!   storage challenges.
//! - [`scrub`] — re-hashing shards (offline, and rate-limited in the running node), quarantining rot.
//! - [`status`] — a read-only report of a node directory, usable while the node runs.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod blobs;
pub mod config;
mod handler;
pub mod node;
pub mod prove;
pub mod scrub;
pub mod sealing;
mod server;
mod state;
pub mod status;
pub mod store;
mod upload;
mod wire;

pub use config::Config;
pub use node::{RunningNode, StartError, init, start};
