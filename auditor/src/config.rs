//! The auditor's directory and `auditor.toml`.
//!
//! ```text
//! <dir>/auditor.toml   this configuration
//! <dir>/identity.key   ed25519 seed, hex, mode 0600 (signs the ledger; nodes trust this id)
//! <dir>/db/            RocksDB (crate::state)
//! <dir>/inbox/         registrations handed in while the auditor runs, taken in within a second
//! ```

use std::{
    fs,
    path::{Path, PathBuf},
};

use granary_protocol::NodeAddr;
use serde::{Deserialize, Serialize};

use crate::ledger::Rules;

/// `auditor.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditorConfig {
    /// The nodes it may challenge, `<id>@<ip:port>`.
    pub nodes: Vec<String>,
    /// Seconds between epochs.
    pub epoch_secs: u64,
    /// Credits per GiB proven per epoch.
    pub reward_per_gib_epoch: u64,
    /// Challenged chunks per node per epoch.
    pub chunks: u32,
    /// Seal-proof openings for each unit the first time it is seen.
    pub openings: u32,
    /// Challenge answer deadline, ms.
    pub deadline_ms: u64,
}

impl Default for AuditorConfig {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            epoch_secs: 3600,
            reward_per_gib_epoch: 1000,
            chunks: granary_client::audit::AuditOptions::default().chunks,
            openings: granary_client::audit::AuditOptions::default().openings,
            deadline_ms: granary_client::audit::AuditOptions::default()
                .deadline
                .as_millis() as u64,
        }
    }
}

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML for this configuration.
    #[error("{path}: {why}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A value out of range.
    #[error("auditor.toml: {0}")]
    Invalid(String),
}

impl AuditorConfig {
    /// `dir/auditor.toml`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("auditor.toml")
    }

    /// Reads and checks `dir/auditor.toml`.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let path = Self::path(dir);
        let text = fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        let c: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path,
            why: e.to_string(),
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Writes `dir/auditor.toml` (via a temporary file).
    pub fn save(&self, dir: &Path) -> Result<(), ConfigError> {
        self.validate()?;
        let path = Self::path(dir);
        let tmp = path.with_extension("toml.tmp");
        let io = |source| ConfigError::Io {
            path: path.clone(),
            source,
        };
        let text = toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        fs::write(&tmp, text).map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)
    }

    /// Checks values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.epoch_secs == 0 || self.chunks == 0 || self.deadline_ms == 0 {
            return Err(ConfigError::Invalid(
                "epoch_secs, chunks and deadline_ms must be positive".into(),
            ));
        }
        self.node_addrs().map(|_| ())
    }

    /// The nodes, parsed.
    pub fn node_addrs(&self) -> Result<Vec<NodeAddr>, ConfigError> {
        self.nodes
            .iter()
            .map(|n| {
                n.parse::<NodeAddr>()
                    .map_err(|e| ConfigError::Invalid(format!("node {n:?}: {e}")))
            })
            .collect()
    }

    /// The reward rules these settings give (fixed in the ledger's genesis entry).
    pub fn rules(&self) -> Rules {
        Rules {
            epoch_secs: self.epoch_secs,
            reward_per_gib_epoch: self.reward_per_gib_epoch,
            chunks: self.chunks,
            openings: self.openings,
            deadline_ms: self.deadline_ms,
        }
    }
}

/// `dir/identity.key`.
pub fn identity_path(dir: &Path) -> PathBuf {
    dir.join("identity.key")
}

/// `dir/db`.
pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("db")
}

/// `dir/inbox`.
pub fn inbox_path(dir: &Path) -> PathBuf {
    dir.join("inbox")
}
