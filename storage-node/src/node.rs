//! Creating a node directory, checking it on start, and running the node.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use granary_protocol::{NodeId, SecretKey, identity::IdentityError, tls};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

use crate::{
    blobs::Blobs,
    config::{Config, ConfigError},
    handler, sealing, server,
    state::State,
    store::{Store, StoreError, rocks::RocksStore},
};

/// Why `init` or `start` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Configuration problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Identity key problem.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Metadata store problem.
    #[error("metadata store: {0}")]
    Store(#[from] StoreError),
    /// TLS setup problem.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// QUIC setup problem.
    #[error("QUIC: {0}")]
    Quic(String),
    /// File system problem.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |source| StartError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Path of the identity key in a node directory.
pub fn identity_path(dir: &Path) -> PathBuf {
    dir.join("identity.key")
}

/// Path of the marker a node writes when it has shut down cleanly (every request finished).
/// The next start takes it away before serving and, finding it, skips comparing every shard
/// file with the index: only a crash can leave them out of step. Remove it to force the full
/// check.
pub fn clean_shutdown_path(dir: &Path) -> PathBuf {
    dir.join("clean-shutdown")
}

/// Takes away the clean-shutdown marker, durably, and says whether it was there.
fn take_clean_shutdown(dir: &Path) -> Result<bool, StartError> {
    let path = clean_shutdown_path(dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            // A crash from here on must find no marker at the next start.
            crate::blobs::sync_dir(dir).map_err(io_at(dir))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_at(&path)(e)),
    }
}

/// Writes the clean-shutdown marker, durably.
fn mark_clean_shutdown(dir: &Path) -> std::io::Result<()> {
    crate::blobs::write_durably(
        &clean_shutdown_path(dir),
        b"shut down cleanly; the next start skips the shard check\n",
    )
}

/// Path of the file recording the bound address of a running node.
pub fn addr_path(dir: &Path) -> PathBuf {
    dir.join("node.addr")
}

/// Creates a node directory: `config.toml` and a new `identity.key`. Returns the node id.
pub fn init(dir: &Path, config: &Config) -> Result<NodeId, StartError> {
    std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    config.validate()?;
    let key = SecretKey::generate();
    key.save(&identity_path(dir))?;
    config.save_new(dir)?;
    Ok(key.public())
}

/// What the start-up consistency check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Indexed shards whose files were checked.
    pub shards_checked: usize,
    /// Leftover files of interrupted writes removed from `tmp/`.
    pub tmp_removed: usize,
    /// What was quarantined and why.
    pub quarantined: Vec<String>,
    /// The node had shut down cleanly, so shard files were not compared with the index (only
    /// `tmp/` was cleared and sealed units checked).
    pub after_clean_shutdown: bool,
}

/// Compares the index with the files: indexed shards with missing or wrong-sized files are
/// un-indexed and their files quarantined; files nobody indexed are quarantined.
pub fn check(store: &dyn Store, blobs: &Blobs) -> Result<CheckReport, StartError> {
    let mut report = CheckReport {
        tmp_removed: blobs.clear_tmp().map_err(io_at(blobs.tmp_dir()))?,
        ..Default::default()
    };
    let indexed = store.shards()?;
    for (id, rec) in &indexed {
        report.shards_checked += 1;
        let len = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).ok();
        let data = len(blobs.data_path(id));
        let want_ob = granary_protocol::verified::outboard_len(rec.size);
        // An outboard written with the record (same atomic batch, computed by this node from
        // the bytes it verified) is there: not read, so a start costs no pass over the
        // outboards. Older shards keep theirs in a file, checked by its length.
        let ob = if rec.outboard_indexed {
            Some(want_ob)
        } else {
            match store.outboard(id)? {
                Some(ob) => Some(ob.len() as u64),
                None => len(blobs.outboard_path(id)),
            }
        };
        // A sealed shard may have no plain file: reads unseal it from its unit.
        let sealed_only = data.is_none() && store.placement(id)?.is_some();
        if (data != Some(rec.size) && !sealed_only) || ob != Some(want_ob) {
            store.drop_shard(id)?;
            blobs.quarantine(id).map_err(io_at(blobs.tmp_dir()))?;
            report.quarantined.push(format!(
                "{id}: indexed {} bytes, data file {data:?}, outboard {ob:?} (want {want_ob})",
                rec.size
            ));
        }
    }
    let index: std::collections::HashSet<_> = indexed.iter().map(|(id, _)| *id).collect();
    for path in blobs.list_files().map_err(io_at(blobs.tmp_dir()))? {
        let known = Blobs::parse_name(&path).is_some_and(|(id, _)| {
            index.contains(&id) && store.shard(&id).ok().flatten().is_some()
        });
        if !known {
            let dest = blobs.quarantine_file(&path).map_err(io_at(&path))?;
            report.quarantined.push(format!(
                "{}: not in the index, moved to {}",
                path.display(),
                dest.display()
            ));
        }
    }
    Ok(report)
}

/// A running node.
#[derive(Debug)]
pub struct RunningNode {
    id: NodeId,
    addr: SocketAddr,
    dir: PathBuf,
    report: CheckReport,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<bool>,
    janitor: JoinHandle<()>,
    scrubber: JoinHandle<()>,
    sealer_stop: Arc<std::sync::atomic::AtomicBool>,
}

impl RunningNode {
    /// The node's id.
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the start-up check found.
    pub fn check_report(&self) -> &CheckReport {
        &self.report
    }

    /// Stops accepting, lets in-flight requests finish (within the grace period), and closes.
    /// If every request finished, writes the clean-shutdown marker (see
    /// [`clean_shutdown_path`]).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.sealer_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.janitor.abort();
        self.scrubber.abort();
        if let Ok(true) = self.task.await {
            match mark_clean_shutdown(&self.dir) {
                Ok(()) => info!("clean shutdown recorded"),
                Err(e) => {
                    warn!(%e, "could not record the clean shutdown; the next start checks every shard")
                }
            }
        }
    }

    /// Waits until the node stops (after [`RunningNode::shutdown`] from elsewhere, or a crash).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

/// Opens the node directory, runs the consistency check, binds and starts serving.
pub async fn start(dir: &Path) -> Result<RunningNode, StartError> {
    let config = Config::load(dir)?;
    let key = SecretKey::load(&identity_path(dir))?;
    let id = key.public();
    let db_path = dir.join("db");
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(&db_path)?);
    let blobs = Arc::new(Blobs::open(dir).map_err(io_at(dir))?);
    let units = sealing::Units::open(dir).map_err(io_at(dir))?;
    let unit_report = sealing::check_units(store.as_ref(), &units, &blobs).map_err(io_at(dir))?;
    let mut report = if take_clean_shutdown(dir)? {
        CheckReport {
            tmp_removed: blobs.clear_tmp().map_err(io_at(blobs.tmp_dir()))?,
            after_clean_shutdown: true,
            ..Default::default()
        }
    } else {
        check(store.as_ref(), &blobs)?
    };
    report.quarantined.extend(unit_report);
    for q in &report.quarantined {
        warn!(%q, "quarantined");
    }
    info!(
        checked = report.shards_checked,
        tmp_removed = report.tmp_removed,
        quarantined = report.quarantined.len(),
        after_clean_shutdown = report.after_clean_shutdown,
        "start-up check done{}",
        if report.after_clean_shutdown {
            " (clean shutdown before: shard files not compared with the index)"
        } else {
            ""
        }
    );

    let st = Arc::new(State::new(key.clone(), config, store, blobs, units));
    let identity = tls::TlsIdentity::new(&key)?;
    let server_cfg = server::server_config(&st, &identity)?;
    let socket = granary_protocol::udp::bind(st.config.listen).map_err(io_at(dir))?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_cfg),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(io_at(dir))?;
    let addr = endpoint.local_addr().map_err(io_at(dir))?;
    std::fs::write(addr_path(dir), format!("{addr}\n")).map_err(io_at(dir))?;
    info!(%id, %addr, label = %st.config.label, "listening");

    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(server::serve(endpoint, Arc::clone(&st), rx));
    let scrubber = tokio::spawn(crate::scrub::run_online(Arc::clone(&st)));
    let sealer_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let claims = sealing::Claims::default();
    for thread in 0..st.config.sealing.threads as usize {
        let (st, stop, claims) = (
            Arc::clone(&st),
            Arc::clone(&sealer_stop),
            Arc::clone(&claims),
        );
        std::thread::Builder::new()
            .name(format!("sealer-{thread}"))
            .spawn(move || sealing::run(st, stop, claims, thread))
            .map_err(io_at(dir))?;
    }
    let janitor_state = Arc::clone(&st);
    let janitor = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let s = Arc::clone(&janitor_state);
            let _ = tokio::task::spawn_blocking(move || handler::expire_nonces(&s)).await;
        }
    });
    Ok(RunningNode {
        id,
        addr,
        dir: dir.to_path_buf(),
        report,
        shutdown: tx,
        task,
        janitor,
        scrubber,
        sealer_stop,
    })
}

#[cfg(test)]
mod tests {
    use granary_protocol::{SecretKey, ShardId, verified};

    use super::*;
    use crate::store::{Quota, mem::MemStore};

    const Q: Quota = Quota {
        capacity: 1 << 30,
        per_owner: 1 << 30,
    };

    /// Writes `data` into place as a shard would be, returning its id.
    fn place(blobs: &Blobs, data: &[u8]) -> ShardId {
        let id = ShardId::from(blake3::hash(data));
        let (staged, mut file) = blobs.begin(&id).unwrap();
        std::io::Write::write_all(&mut file, data).unwrap();
        blobs.commit(staged).unwrap();
        id
    }

    #[test]
    fn outboards_come_from_the_index_or_from_a_file_written_by_an_older_node() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let store = MemStore::new();
        let owner = SecretKey::generate().public();
        let (new, old, lost) = (vec![1u8; 70_000], vec![2u8; 50_000], vec![3u8; 40_000]);

        let new_id = place(&blobs, &new);
        let ob = verified::outboard(&new[..], new.len() as u64).unwrap();
        store
            .add_shard(&new_id, 70_000, &owner, &[0; 32], &Q, Some(&ob.data))
            .unwrap();
        // An older node kept the outboard in a `.obao` file next to the shard.
        let old_id = place(&blobs, &old);
        let old_ob = verified::outboard(&old[..], old.len() as u64).unwrap();
        std::fs::write(blobs.outboard_path(&old_id), &old_ob.data).unwrap();
        store
            .add_reference(&old_id, 50_000, &owner, &[0; 32], &Q)
            .unwrap();
        // Indexed without an outboard anywhere: inconsistent, quarantined.
        let lost_id = place(&blobs, &lost);
        store
            .add_reference(&lost_id, 40_000, &owner, &[0; 32], &Q)
            .unwrap();

        let report = check(&store, &blobs).unwrap();
        assert_eq!(report.shards_checked, 3);
        assert_eq!(
            store.outboard_reads(),
            2,
            "the check looks up the two shards without an indexed outboard, not the new one"
        );
        assert_eq!(report.quarantined.len(), 1, "{:?}", report.quarantined);
        assert!(report.quarantined[0].starts_with(&lost_id.to_string()));
        assert_eq!(store.shard(&lost_id).unwrap(), None);
        assert_eq!(
            blobs.outboard(&store, &new_id, 70_000).unwrap().data,
            ob.data
        );
        assert_eq!(
            blobs.outboard(&store, &old_id, 50_000).unwrap().data,
            old_ob.data
        );
        assert!(blobs.outboard(&store, &lost_id, 40_000).is_err());
    }

    #[test]
    fn a_tree_from_an_older_node_is_moved_to_one_level_and_still_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemStore::new();
        let owner = SecretKey::generate().public();
        let data = vec![7u8; 60_000];
        let id = ShardId::from(blake3::hash(&data));
        let ob = verified::outboard(&data[..], data.len() as u64).unwrap();
        // The older layout: shards/ab/cd/<id> and its .obao file, made on demand.
        let hex = id.to_string();
        let old = dir.path().join("shards").join(&hex[..2]).join(&hex[2..4]);
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join(&hex), &data).unwrap();
        std::fs::write(old.join(format!("{hex}.obao")), &ob.data).unwrap();
        store
            .add_reference(&id, 60_000, &owner, &[0; 32], &Q)
            .unwrap();

        let blobs = Blobs::open(dir.path()).unwrap();
        assert!(!old.exists(), "the second level is gone");
        assert_eq!(std::fs::read(blobs.data_path(&id)).unwrap(), data);
        let report = check(&store, &blobs).unwrap();
        assert!(report.quarantined.is_empty(), "{:?}", report.quarantined);
        assert_eq!(blobs.outboard(&store, &id, 60_000).unwrap().data, ob.data);
        let dirs = std::fs::read_dir(dir.path().join("shards"))
            .unwrap()
            .count();
        assert_eq!(dirs, 256);
        // Opening again finds the marker and moves nothing.
        drop(blobs);
        let blobs = Blobs::open(dir.path()).unwrap();
        assert_eq!(std::fs::read(blobs.data_path(&id)).unwrap(), data);
    }
}
