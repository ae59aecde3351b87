//! The client configuration: the user's key and the storage nodes to start from.
//!
//! Found from `--config FILE`, else `$GRANARY_CONFIG`, else `<platform config dir>/granary/
//! client.toml`. Example:
//!
//! ```toml
//! key_file = "client.key"          # relative to this file; created on first use
//! nodes = ["<64 hex id>@127.0.0.1:7401", "..."]
//! ```

use std::path::{Path, PathBuf};

use granary_protocol::{NodeAddr, SecretKey};
use serde::{Deserialize, Serialize};

/// What `client.toml` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientConfig {
    /// The user's ed25519 key (owner of what they store), relative to the config file.
    pub key_file: PathBuf,
    /// Bootstrap storage nodes, `<id>@<ip:port>`.
    #[serde(default)]
    pub nodes: Vec<String>,
}

/// A loaded configuration.
#[derive(Debug)]
pub struct Loaded {
    /// Where it came from.
    pub path: PathBuf,
    /// The user's key.
    pub key: SecretKey,
    /// The nodes.
    pub nodes: Vec<NodeAddr>,
}

/// Configuration problems, each naming the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No config was given and none exists in the default place.
    #[error("no client config: pass --config FILE, set GRANARY_CONFIG, or create {0}")]
    Missing(String),
    /// Reading or parsing failed (a file named by `--config` or `$GRANARY_CONFIG` that does not
    /// exist is this too: it never falls back to the next place).
    #[error("client config {path}: {detail}")]
    Bad {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
}

/// The config file to use: `flag`, else `$GRANARY_CONFIG` (if not empty), else the platform
/// default, `dirs::config_dir()/granary/client.toml` (on Linux `$XDG_CONFIG_HOME` if absolute,
/// else `$HOME/.config`). Only the default is checked for existence here.
pub fn locate(flag: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("GRANARY_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let default = dirs::config_dir()
        .map(|d| d.join("granary").join("client.toml"))
        .unwrap_or_else(|| PathBuf::from("client.toml"));
    if default.exists() {
        Ok(default)
    } else {
        Err(ConfigError::Missing(default.display().to_string()))
    }
}

/// Loads a config; a missing key file is created with a fresh key.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let bad = |detail: String| ConfigError::Bad {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let cfg: ClientConfig = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let key_path = path.parent().unwrap_or(Path::new(".")).join(&cfg.key_file);
    if !key_path.exists() {
        create_key(&key_path)
            .map_err(|e| bad(format!("creating key {}: {e}", key_path.display())))?;
    }
    let key =
        SecretKey::load(&key_path).map_err(|e| bad(format!("key {}: {e}", key_path.display())))?;
    let nodes = crate::store::net::parse_nodes(&cfg.nodes).map_err(bad)?;
    Ok(Loaded {
        path: path.to_path_buf(),
        key,
        nodes,
    })
}

/// Creates a key file atomically: written under a temporary name, then hard-linked into place,
/// so concurrent first uses never see a half-written key; the loser of a race keeps the
/// winner's key.
fn create_key(path: &Path) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    SecretKey::generate()
        .save(&tmp)
        .map_err(|e| e.to_string())?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// The dataset key for a private `put` of `source` by the holder of `owner`: derived, so an
/// interrupted upload run again produces the same shards and resumes (nodes skip what they
/// hold), and re-putting a path deduplicates against what is stored. Different owners or paths
/// get unrelated keys.
pub fn derived_dataset_key(owner: &SecretKey, source: &Path) -> crate::ids::DatasetKey {
    let abs = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    let mut h =
        blake3::Hasher::new_derive_key("granary 2026-11 dataset key from owner and path v1");
    h.update(&owner.to_bytes());
    h.update(std::os::unix::ffi::OsStrExt::as_bytes(abs.as_os_str()));
    crate::ids::DatasetKey::from_bytes(*h.finalize().as_bytes())
}

/// The reference tag an upload of `source` by `owner` stores new shards under until the dataset
/// is committed (stable, so a resumed put finds its earlier references).
pub fn upload_tag(owner: &SecretKey, source: &Path) -> [u8; 32] {
    let abs = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    let mut h = blake3::Hasher::new_derive_key("granary 2026-11 upload tag from owner and path v1");
    h.update(&owner.to_bytes());
    h.update(std::os::unix::ffi::OsStrExt::as_bytes(abs.as_os_str()));
    *h.finalize().as_bytes()
}

/// Writes a config file.
pub fn save(path: &Path, cfg: &ClientConfig) -> std::io::Result<()> {
    let text = toml::to_string_pretty(cfg).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}
