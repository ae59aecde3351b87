#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod adversary;
pub mod challenge;
pub mod drg;
pub mod field;
pub mod keyhash;
pub mod merkle;
pub mod params;
pub mod platform;
pub mod reference;
pub mod seal;
pub mod seal_proof;
pub mod unit;

pub use drg::{BlockIdx, Graph};
pub use merkle::{ChunkIdx, ChunkOpening, MerkleTree};
pub use platform::Platform;
pub use seal::{DataId, NodeId, ReplicaId, SealParams};
