//! Granary auditor: challenges the nodes of registered datasets every epoch and keeps a signed,
//! hash-chained ledger of the results and the rewards they earn.
//!
//! * [`ledger`]: the entry format, the reward rule and the verifier anyone can run (sans-IO).
//! * [`state`]: the RocksDB the ledger and the auditor's memory live in.
//! * [`auditor`]: taking in owners' registrations and running epochs over the real protocol.
//! * [`config`]: the auditor's directory and `auditor.toml`.
//!
//! Owners register a dataset with a file made by `granary register CAP --out FILE`: its
//! placement signed by the owner's key, never the data key. Nodes opt in to being audited by
//! listing the auditor's id in their `auditors` setting.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod auditor;
pub mod config;
pub mod ledger;
pub mod state;

pub use auditor::{Auditor, AuditorError, EpochReport, Intake};
