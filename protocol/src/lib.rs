//! Granary's wire protocol: messages, framing, identities and verified ranges (sans-IO).
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod verified;
