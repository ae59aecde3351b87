//! `granary-node prove --self-test`: a local round of proofs over everything the node has
//! sealed, run against the node directory (also while the node runs), with fresh randomness:
//! every unit's signed statement is checked, one seal proof per unit is made and verified, and
//! one storage challenge over all units is answered and verified against the deadline.

use std::{path::Path, time::Instant};

use granary_proofs::{
    challenge::{self, PostProver, SealedReplica},
    params, unit,
};
use granary_protocol::SecretKey;
use serde::Serialize;

use crate::{
    node::{StartError, identity_path},
    sealing::{self, Units},
    store::rocks::RocksStore,
};

/// One unit's seal-proof check.
#[derive(Debug, Clone, Serialize)]
pub struct UnitCheck {
    /// First 16 hex digits of `comm_r`.
    pub unit: String,
    /// Shards in the unit.
    pub shards: usize,
    /// Unit bytes.
    pub bytes: u64,
    /// Proving time, ms.
    pub prove_ms: f64,
    /// Verifying time, ms.
    pub verify_ms: f64,
    /// `None` if the proof verified, else why not.
    pub error: Option<String>,
}

/// The storage-challenge round.
#[derive(Debug, Clone, Serialize)]
pub struct PostCheck {
    /// Challenged chunks.
    pub chunks: usize,
    /// Proving time, ms.
    pub prove_ms: f64,
    /// Verifying time, ms.
    pub verify_ms: f64,
    /// Proof size, bytes.
    pub proof_bytes: usize,
    /// The default deadline, ms.
    pub deadline_ms: u64,
    /// `None` if the proof verified, else why not.
    pub error: Option<String>,
}

/// What the self-test found.
#[derive(Debug, Clone, Serialize)]
pub struct SelfTest {
    /// Shards waiting to be sealed (not provable yet).
    pub pending_shards: usize,
    /// Per-unit seal proofs.
    pub units: Vec<UnitCheck>,
    /// The challenge round (`None` with no sealed unit).
    pub post: Option<PostCheck>,
}

impl SelfTest {
    /// Whether every proof verified in time.
    pub fn passed(&self) -> bool {
        self.units.iter().all(|u| u.error.is_none())
            && self
                .post
                .as_ref()
                .is_none_or(|p| p.error.is_none() && p.prove_ms < p.deadline_ms as f64)
    }
}

fn fresh_seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    getrandom::fill(&mut s).expect("OS randomness");
    s
}

/// Runs the self-test on the node directory `dir`.
pub fn self_test(dir: &Path, chunks: usize, openings: usize) -> Result<SelfTest, StartError> {
    let id = SecretKey::load(&identity_path(dir))?.public();
    let scratch = dir.join(format!(".prove-{}", std::process::id()));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StartError::Io { path, source }
    };
    std::fs::create_dir_all(&scratch).map_err(io(&scratch))?;
    let store = RocksStore::open_secondary(&dir.join("db"), &scratch)?;
    let units = Units::open(dir).map_err(io(dir))?;
    let fail = |e: crate::state::Reject| StartError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::other(e.detail),
    };
    let records = sealing::unit_records(&store).map_err(fail)?;
    let pending_shards = sealing::pending_shards(&store).map_err(fail)?.len();
    let mut checks = Vec::new();
    for rec in &records {
        let key = rec.key();
        let seed = fresh_seed();
        let t = Instant::now();
        let proof = sealing::prove_seal(&store, &units, &key, &seed, openings);
        let prove_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let error = match (rec.unit.verify(&id), proof) {
            (Err(e), _) => Some(e.to_string()),
            (_, Err(e)) => Some(e.detail),
            (Ok(()), Ok(p)) => {
                unit::verify(&rec.unit.statement, &rec.unit.layout, &seed, openings, &p)
                    .err()
                    .map(|e| e.to_string())
            }
        };
        checks.push(UnitCheck {
            unit: hex::encode(&key[..8]),
            shards: rec.unit.layout.members().len(),
            bytes: rec.unit.statement.len,
            prove_ms,
            verify_ms: t.elapsed().as_secs_f64() * 1e3,
            error,
        });
    }
    let post = if records.is_empty() {
        None
    } else {
        let keys: Vec<_> = records.iter().map(|r| r.key()).collect();
        let replicas: Vec<SealedReplica> = records
            .iter()
            .map(|r| SealedReplica {
                comm_r: r.unit.statement.comm_r,
                len: r.unit.statement.len,
            })
            .collect();
        let seed = fresh_seed();
        let t = Instant::now();
        let proof = sealing::prove_post(&store, &units, &keys, &seed, chunks);
        let prove_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let (error, proof_bytes) = match proof {
            Err(e) => (Some(e.detail), 0),
            Ok(p) => {
                let commitment = PostProver::new(replicas)
                    .map_err(|e| fail(crate::state::Reject::internal("commitment", e)))?
                    .commitment();
                let size = postcard::to_stdvec(&p).map_or(0, |b| b.len());
                (
                    challenge::verify(&commitment, &seed, chunks, &p)
                        .err()
                        .map(|e| e.to_string()),
                    size,
                )
            }
        };
        Some(PostCheck {
            chunks,
            prove_ms,
            verify_ms: t.elapsed().as_secs_f64() * 1e3,
            proof_bytes,
            deadline_ms: params::DEFAULT_DEADLINE_MS,
            error,
        })
    };
    drop(store);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(SelfTest {
        pending_shards,
        units: checks,
        post,
    })
}
