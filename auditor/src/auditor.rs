//! The auditor's work: taking in registrations and running epochs.
//!
//! An epoch challenges every node that holds shards of a registered dataset, over the union of
//! those shards, with fresh randomness per node (`granary_client::audit`): signed unit statements,
//! a seal proof for each unit not proven before, and one timed storage challenge. Each node's
//! result and the reward the rules give for it are appended to the ledger, together with what the
//! auditor learnt (shards the node acknowledged, units proven), in one atomic write.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use granary_client::{
    audit::{AuditMemory, AuditOptions, NodeAudit},
    ids::ShardId,
    register::{AuditRegistration, SignedRegistration},
    store::net::NetStore,
};
use granary_protocol::{NodeId, SecretKey};

use crate::{
    config::{self, AuditorConfig},
    ledger::{self, AuditRecord, Record, Verdict},
    state::{AuditorDb, Changes, DbError},
};

/// An auditor failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditorError {
    /// The configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The identity key.
    #[error("identity: {0}")]
    Identity(String),
    /// The database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A registration was refused.
    #[error("registration refused: {0}")]
    Registration(String),
    /// Another process (the running auditor) holds the database.
    #[error("{0}: the auditor is running (its database is locked); it audits every {1} s")]
    Running(PathBuf, u64),
    /// File or network trouble.
    #[error("{0}")]
    Io(String),
}

/// What one epoch did.
#[derive(Debug, Clone)]
pub struct EpochReport {
    /// Its number.
    pub epoch: u64,
    /// Per node: its audit record and reward.
    pub nodes: Vec<(AuditRecord, u64)>,
}

/// A registration file from the inbox and what became of it.
pub type InboxResult = (PathBuf, Result<Intake, AuditorError>);

/// What taking in a registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intake {
    /// The dataset is audited from the next epoch.
    Registered {
        /// Shards registered.
        shards: u64,
    },
    /// The dataset is no longer audited.
    Withdrawn,
    /// An older or identical registration than the one held: ignored.
    Stale,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// A running auditor: its key, configuration, database and connections.
#[derive(Debug)]
pub struct Auditor {
    dir: PathBuf,
    key: SecretKey,
    config: AuditorConfig,
    db: AuditorDb,
    net: NetStore,
    /// The reward rules fixed in the ledger's genesis entry (what verifiers recompute with,
    /// whatever auditor.toml says now).
    rules: ledger::Rules,
}

impl Auditor {
    /// Opens the auditor in `dir` (for writing: one process at a time).
    pub fn open(dir: &Path) -> Result<Self, AuditorError> {
        let config = AuditorConfig::load(dir)?;
        let key = SecretKey::load(&config::identity_path(dir))
            .map_err(|e| AuditorError::Identity(e.to_string()))?;
        let db = AuditorDb::open(&config::db_path(dir), &key.public()).map_err(|e| {
            // RocksDB reports its lock file as an I/O error naming it.
            if e.to_string().contains("LOCK") {
                AuditorError::Running(dir.to_path_buf(), config.epoch_secs)
            } else {
                e.into()
            }
        })?;
        let net = NetStore::new(config.node_addrs()?, key.clone())
            .map_err(|e| AuditorError::Io(e.to_string()))?;
        let mut db = db;
        if db.is_empty() {
            let mut c = Changes::default();
            c.record(Record::Genesis {
                auditor: key.public(),
                rules: config.rules(),
            });
            db.commit(&key, now_ms(), c)?;
        }
        let rules = match db.entries().next().transpose()?.map(|e| e.entry()) {
            Some(Ok(ledger::Entry {
                record: Record::Genesis { rules, .. },
                ..
            })) => rules,
            _ => return Err(DbError::Corrupt("genesis entry").into()),
        };
        if rules.reward_per_gib_epoch != config.reward_per_gib_epoch {
            tracing::warn!(
                ledger = rules.reward_per_gib_epoch,
                config = config.reward_per_gib_epoch,
                "auditor.toml's reward rate differs from the ledger's; the ledger's applies"
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            key,
            config,
            db,
            net,
            rules,
        })
    }

    /// This auditor's id (nodes list it in `auditors`; ledgers are verified against it).
    pub fn id(&self) -> NodeId {
        self.key.public()
    }

    /// Its configuration.
    pub fn config(&self) -> &AuditorConfig {
        &self.config
    }

    /// The reward rules of its ledger (fixed at creation).
    pub fn rules(&self) -> &ledger::Rules {
        &self.rules
    }

    /// Its database.
    pub fn db(&self) -> &AuditorDb {
        &self.db
    }

    /// Takes in a registration file's bytes: checks the owner's signature, that a dataset
    /// already registered keeps its owner, and that it is newer than the one held.
    pub fn register(&mut self, bytes: &[u8]) -> Result<Intake, AuditorError> {
        let (_, reg) = SignedRegistration::open(bytes)
            .map_err(|e| AuditorError::Registration(e.to_string()))?;
        let id = reg.dataset.0;
        if let Some(old) = self.db.registration(&id)? {
            if old.owner != reg.owner {
                return Err(AuditorError::Registration(format!(
                    "dataset {} is registered by another owner",
                    reg.dataset
                )));
            }
            if reg.created_ms <= old.created_ms {
                return Ok(Intake::Stale);
            }
        } else if !reg.active {
            return Ok(Intake::Stale);
        }
        let mut c = Changes::default();
        let intake = if reg.active {
            let shards = reg.placed.values().map(|v| v.len() as u64).sum();
            c.dataset(id, Some(bytes.to_vec()));
            c.record(Record::Registered {
                dataset: id,
                owner: reg.owner,
                nodes: reg.placed.len() as u32,
                shards,
            });
            Intake::Registered { shards }
        } else {
            c.dataset(id, None);
            c.record(Record::Withdrawn {
                dataset: id,
                owner: reg.owner,
            });
            Intake::Withdrawn
        };
        self.db.commit(&self.key, now_ms(), c)?;
        Ok(intake)
    }

    /// Takes in every registration waiting in `inbox/` (each removed once handled; a refused
    /// one is renamed `*.refused` with the reason logged).
    pub fn take_inbox(&mut self) -> Result<Vec<InboxResult>, AuditorError> {
        let inbox = config::inbox_path(&self.dir);
        let mut files: Vec<PathBuf> = match fs::read_dir(&inbox) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "reg"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AuditorError::Io(format!("{}: {e}", inbox.display()))),
        };
        files.sort();
        let mut out = Vec::new();
        for f in files {
            let res = fs::read(&f)
                .map_err(|e| AuditorError::Io(format!("{}: {e}", f.display())))
                .and_then(|b| self.register(&b));
            match &res {
                Err(AuditorError::Db(_)) => return res.map(|_| Vec::new()),
                Err(_) => {
                    let _ = fs::rename(&f, f.with_extension("refused"));
                }
                Ok(_) => {
                    let _ = fs::remove_file(&f);
                }
            }
            out.push((f, res));
        }
        Ok(out)
    }

    /// Node id → the registered shards placed on it (over every registered dataset).
    pub fn placed(&self) -> Result<BTreeMap<[u8; 32], Vec<ShardId>>, AuditorError> {
        let mut placed: BTreeMap<[u8; 32], Vec<ShardId>> = BTreeMap::new();
        for AuditRegistration { placed: p, .. } in self.db.registrations()? {
            for (node, shards) in p {
                placed.entry(node).or_default().extend(shards);
            }
        }
        for v in placed.values_mut() {
            v.sort();
            v.dedup();
        }
        Ok(placed)
    }

    /// Runs one epoch now; `None` if no dataset is registered.
    pub fn run_epoch(&mut self) -> Result<Option<EpochReport>, AuditorError> {
        let placed = self.placed()?;
        if placed.is_empty() {
            return Ok(None);
        }
        let epoch = self.db.next_epoch()?;
        let memory = AuditMemory {
            proven_units: self.db.proven_units()?,
            acknowledged: Some(self.db.acknowledged()?),
        };
        let opts = AuditOptions {
            chunks: self.config.chunks,
            openings: self.config.openings,
            deadline: Duration::from_millis(self.config.deadline_ms),
        };
        let audits = self.net.audit_with(&placed, opts, &memory);
        let rules = self.rules;
        let mut c = Changes::default();
        let mut report = EpochReport {
            epoch,
            nodes: Vec::new(),
        };
        let mut paid = 0u64;
        let known = memory.acknowledged.unwrap_or_default();
        for (node, a) in placed.keys().zip(audits) {
            let old: HashSet<ShardId> = known.get(node).cloned().unwrap_or_default();
            for s in a.held.iter().filter(|s| !old.contains(s)) {
                c.acknowledge(*node, *s);
            }
            for u in a
                .proven_units
                .iter()
                .filter(|u| !memory.proven_units.contains(*u))
            {
                c.proven(*u);
            }
            let record = audit_record(epoch, *node, &a);
            let amount = ledger::reward(&rules, record.verdict, record.sealed_bytes);
            paid = paid.saturating_add(amount);
            c.record(Record::Audit(record.clone()));
            c.record(Record::Reward {
                epoch,
                node: *node,
                amount,
            });
            report.nodes.push((record, amount));
        }
        c.record(Record::EpochClosed {
            epoch,
            nodes: report.nodes.len() as u32,
            paid,
        });
        c.next_epoch(epoch + 1);
        self.db.commit(&self.key, now_ms(), c)?;
        Ok(Some(report))
    }
}

fn audit_record(epoch: u64, node: [u8; 32], a: &NodeAudit) -> AuditRecord {
    // A node that does not list this auditor has not opted in: nothing was proven, but it did
    // not fail anything either. It is recorded as not reachable for this auditor (and earns 0).
    if a.refused {
        return AuditRecord {
            epoch,
            node,
            verdict: Verdict::Offline,
            shards: a.shards as u64,
            sealed: 0,
            pending: 0,
            missing: 0,
            unacknowledged: 0,
            sealed_bytes: 0,
            challenge_ms: None,
            detail: Some("not enrolled: the node does not list this auditor".into()),
        };
    }
    AuditRecord {
        epoch,
        node,
        verdict: a.verdict,
        shards: a.shards as u64,
        sealed: a.sealed as u64,
        pending: a.pending as u64,
        missing: a.missing as u64,
        unacknowledged: a.unacknowledged as u64,
        sealed_bytes: match a.verdict {
            Verdict::Pass | Verdict::Pending | Verdict::Late => a.sealed_bytes,
            Verdict::Fail | Verdict::Offline => 0,
        },
        challenge_ms: a.challenge_ms.map(|m| m.round() as u32),
        detail: a.detail.clone(),
    }
}

/// Puts a registration file into `dir/inbox/` for the running auditor (write, fsync, rename).
pub fn queue_registration(dir: &Path, bytes: &[u8]) -> Result<PathBuf, AuditorError> {
    let inbox = config::inbox_path(dir);
    let io = |e: std::io::Error| AuditorError::Io(format!("{}: {e}", inbox.display()));
    fs::create_dir_all(&inbox).map_err(io)?;
    let name = hex::encode(&blake3::hash(bytes).as_bytes()[..16]);
    let tmp = inbox.join(format!("{name}.tmp"));
    let dest = inbox.join(format!("{name}.reg"));
    {
        use std::io::Write;
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    fs::rename(&tmp, &dest).map_err(io)?;
    Ok(dest)
}
