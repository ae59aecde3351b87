//! The node's `config.toml` and its data directory.
//!
//! ```text
//! <dir>/config.toml     this configuration
//! <dir>/identity.key    ed25519 seed, hex, mode 0600
//! <dir>/db/             RocksDB: shard index, references, quotas, nonces
//! <dir>/shards/ tmp/ quarantine/   shard files (see crate::blobs)
//! <dir>/node.addr       written on start: the bound socket address (useful with port 0)
//! ```

use std::{
    fs, io,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Default listening address (UDP).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7400";

/// Node configuration (`config.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// UDP address to listen on for QUIC.
    pub listen: SocketAddr,
    /// Bytes of shard data this node may hold.
    pub capacity: u64,
    /// Bytes any one owner may reference on this node.
    pub owner_quota: u64,
    /// Failure-domain label (operator/zone), advertised in `NodeInfo`.
    pub label: String,
    /// Largest shard accepted, in bytes (at most the protocol's 64 MiB).
    pub max_shard_size: u64,
    /// Background scrub speed in bytes per second (0 turns it off).
    #[serde(default = "default_scrub_rate")]
    pub scrub_rate: u64,
    /// Pause between background scrub passes, in seconds.
    #[serde(default = "default_scrub_pause")]
    pub scrub_pause_secs: u64,
    /// Connection and timing limits.
    #[serde(default)]
    pub limits: Limits,
    /// Background sealing (proof of replication).
    #[serde(default)]
    pub sealing: Sealing,
    /// Auditors (node ids, hex) allowed to request seal proofs and storage challenges besides
    /// the owners of data here: the auditors whose ledgers pay this node's rewards.
    #[serde(default)]
    pub auditors: Vec<String>,
}

/// `[sealing]`: how stored shards are sealed into replica units in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sealing {
    /// Seal at all (a node that does not seal cannot answer storage challenges).
    pub enabled: bool,
    /// Target unit size: shards are sealed together once this many bytes wait.
    pub unit_bytes: u64,
    /// Seal a smaller unit once shards have waited this long with no new arrivals.
    pub idle_secs: u64,
    /// Keep the plain shard files after sealing (reads then skip unsealing; uses twice the disk).
    pub keep_plain: bool,
    /// Sloth rounds per block (the proof parameters; keep the default outside tests).
    pub rounds: u32,
    /// Sealer threads (cores): each seals its own unit; a unit's sealing is sequential.
    pub threads: u32,
}

impl Default for Sealing {
    fn default() -> Self {
        Self {
            enabled: true,
            unit_bytes: granary_proofs::params::DEFAULT_UNIT_BYTES,
            idle_secs: 5,
            keep_plain: false,
            rounds: granary_proofs::params::DEFAULT_ROUNDS,
            threads: 1,
        }
    }
}

/// Limits that protect the node from slow or abusive peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Concurrent connections; more are refused.
    pub max_connections: u32,
    /// Concurrent bidirectional streams (requests) per connection.
    pub max_streams_per_connection: u32,
    /// Concurrent shard uploads node-wide (bounds disk writers and open temporary files).
    pub max_concurrent_stores: u32,
    /// Bytes of encoded ranges held in memory node-wide while being sent (bounds memory used
    /// by concurrent `FetchRange` responses).
    pub max_fetch_memory: u64,
    /// Free disk space (bytes) the node always leaves; uploads that would eat into it get
    /// `DiskFull`.
    pub reserve_free_bytes: u64,
    /// Time allowed to receive a request frame, and for each read of a body.
    pub read_timeout_ms: u64,
    /// Slowest accepted upload rate; a body must arrive within
    /// `read_timeout_ms + size / min_upload_rate` seconds.
    pub min_upload_rate: u64,
    /// Connection idle timeout.
    pub idle_timeout_ms: u64,
    /// On shutdown, how long in-flight requests may take to finish.
    pub shutdown_grace_ms: u64,
}

fn default_scrub_rate() -> u64 {
    8 << 20
}

fn default_scrub_pause() -> u64 {
    24 * 3600
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_streams_per_connection: 64,
            max_concurrent_stores: 32,
            max_fetch_memory: 1 << 30,
            reserve_free_bytes: 1 << 30,
            read_timeout_ms: 10_000,
            min_upload_rate: 256 * 1024,
            idle_timeout_ms: 30_000,
            shutdown_grace_ms: 10_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 7400)),
            capacity: 100 << 30,
            owner_quota: 100 << 30,
            label: "default".into(),
            max_shard_size: granary_protocol::message::MAX_SHARD_SIZE,
            scrub_rate: default_scrub_rate(),
            scrub_pause_secs: default_scrub_pause(),
            limits: Limits::default(),
            sealing: Sealing::default(),
            auditors: Vec::new(),
        }
    }
}

/// Why the configuration could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// File I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The TOML is invalid.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
    /// Serialising failed.
    #[error("serialising configuration: {0}")]
    Serialize(#[from] toml::ser::Error),
}

impl Config {
    /// Path of the config file in a node directory.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("config.toml")
    }

    /// Loads and validates `<dir>/config.toml`.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let path = Self::path(dir);
        let text = fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        let cfg: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path,
            source: Box::new(source),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_shard_size == 0
            || self.max_shard_size > granary_protocol::message::MAX_SHARD_SIZE
        {
            return Err(ConfigError::Invalid(
                "max_shard_size must be 1 ..= 67108864",
            ));
        }
        if self.limits.max_streams_per_connection == 0 || self.limits.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "connection and stream limits must be positive",
            ));
        }
        if self.limits.read_timeout_ms == 0
            || self.limits.min_upload_rate == 0
            || self.limits.max_concurrent_stores == 0
            || self.limits.max_fetch_memory
                < granary_protocol::message::encoded_range_bound(self.max_shard_size)
        {
            return Err(ConfigError::Invalid(
                "timeouts, rates and store concurrency must be positive",
            ));
        }
        if self.sealing.unit_bytes < 1024 || self.sealing.unit_bytes > 1 << 34 {
            return Err(ConfigError::Invalid(
                "sealing.unit_bytes must be 1 KiB ..= 16 GiB",
            ));
        }
        if self.sealing.threads == 0 || self.sealing.threads > 256 {
            return Err(ConfigError::Invalid("sealing.threads must be 1 ..= 256"));
        }
        if self.sealing.rounds == 0 || self.sealing.rounds > 64 {
            return Err(ConfigError::Invalid("sealing.rounds must be 1 ..= 64"));
        }
        if self.label.len() > granary_protocol::message::MAX_TEXT_LEN {
            return Err(ConfigError::Invalid("label too long"));
        }
        if self
            .auditors
            .iter()
            .any(|a| a.parse::<granary_protocol::NodeId>().is_err())
        {
            return Err(ConfigError::Invalid(
                "auditors must be node ids (64 hex digits)",
            ));
        }
        Ok(())
    }

    /// Whether `peer` is one of the configured auditors.
    pub fn is_auditor(&self, peer: &granary_protocol::NodeId) -> bool {
        self.auditors.iter().any(|a| {
            a.parse::<granary_protocol::NodeId>()
                .is_ok_and(|id| id == *peer)
        })
    }

    /// Writes `<dir>/config.toml` (refusing to overwrite).
    pub fn save_new(&self, dir: &Path) -> Result<(), ConfigError> {
        self.validate()?;
        let path = Self::path(dir);
        let text = format!(
            "# Granary storage node configuration; see docs/running-a-node.md\n{}",
            toml::to_string(self)?
        );
        let res = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| {
                use io::Write;
                f.write_all(text.as_bytes())
            });
        res.map_err(|source| ConfigError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            label: "zone-a".into(),
            ..Config::default()
        };
        cfg.save_new(dir.path()).unwrap();
        assert!(cfg.save_new(dir.path()).is_err());
        assert_eq!(Config::load(dir.path()).unwrap(), cfg);
    }
}
