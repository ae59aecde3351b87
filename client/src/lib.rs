//! Granary client: turns a dataset into encrypted, erasure-coded, content-addressed shards and
//! reads it back — whole, by file, or by byte range — verifying every byte.
//!
//! Modules, in data-path order: [`walk`] → [`pack`] (with [`crypto`], [`erasure`]) →
//! [`store`] → [`read`]; [`manifest`] and [`capability`] are the formats a user keeps;
//! [`audit`] challenges the nodes holding a dataset to prove they store it; [`register`] hands
//! a dataset's placement (never its key) to an auditor that does so every epoch.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod audit;
pub mod capability;
pub mod config;
pub mod crypto;
pub mod devnet;
pub mod erasure;
pub mod ids;
pub mod manifest;
pub mod net;
pub mod pack;
pub mod parts;
pub mod read;
pub mod register;
pub mod sample;
pub mod store;
pub mod walk;

pub use capability::Capability;
pub use erasure::ErasureParams;
pub use pack::{PackOptions, PackReport, Source, pack};
pub use read::{Dataset, ReadError, ReadStats};
