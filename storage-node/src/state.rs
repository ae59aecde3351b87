//! State shared by every connection of a running node.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use granary_protocol::{ErrorCode, NodeId, SecretKey};
use tokio::sync::Semaphore;

use crate::{
    blobs::Blobs,
    config::Config,
    sealing::Units,
    store::{Quota, Store, StoreError},
};

/// A refused request: the code and detail sent back in an `Error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reject {
    pub(crate) code: ErrorCode,
    pub(crate) detail: String,
}

impl Reject {
    pub(crate) fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    pub(crate) fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(%e, "{what}");
        Self::new(ErrorCode::Internal, what)
    }
}

impl From<StoreError> for Reject {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NodeQuota { .. } => Self::new(ErrorCode::NodeQuotaExceeded, e.to_string()),
            StoreError::OwnerQuota { .. } => {
                Self::new(ErrorCode::OwnerQuotaExceeded, e.to_string())
            }
            StoreError::SizeConflict { .. } => Self::new(ErrorCode::HashMismatch, e.to_string()),
            other => Self::internal("metadata store failure", other),
        }
    }
}

impl From<std::io::Error> for Reject {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(libc::ENOSPC) {
            tracing::warn!("disk full");
            return Self::new(ErrorCode::DiskFull, "disk full");
        }
        Self::internal("disk I/O failure", e)
    }
}

/// Granularity of the fetch memory budget.
pub(crate) const FETCH_UNIT: u64 = 64 * 1024;

#[derive(Debug, Default)]
struct Reservations {
    bytes: u64,
    per_owner: HashMap<NodeId, u64>,
}

/// Everything a request handler needs.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) id: NodeId,
    pub(crate) config: Config,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) blobs: Arc<Blobs>,
    /// Sealed unit files.
    pub(crate) units: Units,
    /// The node's identity key (signs unit statements).
    pub(crate) key: SecretKey,
    /// Proof requests (seal proofs, challenges) running at once.
    pub(crate) proof_permits: Arc<Semaphore>,
    /// When the last store or fetch arrived (ms since the Unix epoch): sealing waits for quiet.
    pub(crate) last_transfer_ms: std::sync::atomic::AtomicU64,
    /// Serialises "rename into place + index" against "un-index + unlink".
    pub(crate) commit_lock: Arc<Mutex<()>>,
    pub(crate) store_permits: Arc<Semaphore>,
    /// Fetch memory budget, in units of [`FETCH_UNIT`] bytes.
    pub(crate) fetch_permits: Arc<Semaphore>,
    /// Buffers that received upload bytes are gathered in (see [`crate::upload`]).
    pub(crate) upload_runs: Arc<crate::upload::RunPool>,
    reservations: Mutex<Reservations>,
}

/// Bytes reserved for an upload in flight; released on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    state: Arc<State>,
    owner: NodeId,
    size: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Ok(mut r) = self.state.reservations.lock() {
            r.bytes = r.bytes.saturating_sub(self.size);
            if let Some(o) = r.per_owner.get_mut(&self.owner) {
                *o = o.saturating_sub(self.size);
                if *o == 0 {
                    r.per_owner.remove(&self.owner);
                }
            }
        }
    }
}

impl State {
    pub(crate) fn new(
        key: SecretKey,
        config: Config,
        store: Arc<dyn Store>,
        blobs: Arc<Blobs>,
        units: Units,
    ) -> Self {
        let permits = config.limits.max_concurrent_stores as usize;
        let fetch_units = (config.limits.max_fetch_memory / FETCH_UNIT)
            .min(Semaphore::MAX_PERMITS as u64) as usize;
        Self {
            id: key.public(),
            key,
            config,
            store,
            blobs,
            units,
            proof_permits: Arc::new(Semaphore::new(2)),
            last_transfer_ms: std::sync::atomic::AtomicU64::new(0),
            commit_lock: Arc::new(Mutex::new(())),
            store_permits: Arc::new(Semaphore::new(permits)),
            fetch_permits: Arc::new(Semaphore::new(fetch_units)),
            // Enough idle buffers for a few uploads' worth of runs in flight (16 MiB).
            upload_runs: Arc::new(crate::upload::RunPool::new(64)),
            reservations: Mutex::default(),
        }
    }

    pub(crate) fn quota(&self) -> Quota {
        Quota {
            capacity: self.config.capacity,
            per_owner: self.config.owner_quota,
        }
    }

    pub(crate) fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.config.limits.read_timeout_ms)
    }

    /// Reserves `size` bytes for `owner`'s upload, counting committed and in-flight bytes
    /// against the node capacity and the owner quota.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        owner: NodeId,
        size: u64,
    ) -> Result<Reservation, Reject> {
        let used = self.store.usage()?.used;
        let owner_used = self.store.owner_usage(&owner)?.bytes;
        let mut r = self
            .reservations
            .lock()
            .map_err(|_| Reject::internal("lock", "poisoned"))?;
        let pending_owner = r.per_owner.get(&owner).copied().unwrap_or(0);
        if used + r.bytes + size > self.config.capacity {
            return Err(Reject::new(
                ErrorCode::NodeQuotaExceeded,
                format!(
                    "node capacity {} exceeded ({} used, {} in flight, {size} requested)",
                    self.config.capacity, used, r.bytes
                ),
            ));
        }
        if owner_used + pending_owner + size > self.config.owner_quota {
            return Err(Reject::new(
                ErrorCode::OwnerQuotaExceeded,
                format!(
                    "owner quota {} exceeded ({owner_used} used, {size} requested)",
                    self.config.owner_quota
                ),
            ));
        }
        r.bytes += size;
        *r.per_owner.entry(owner).or_default() += size;
        Ok(Reservation {
            state: Arc::clone(self),
            owner,
            size,
        })
    }
}

/// Free bytes on the file system holding `path` (for the calling user), if known.
pub(crate) fn disk_free(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of the
    // right type; statvfs only writes into it.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}
