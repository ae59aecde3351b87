//! `granary-auditor`: challenges registered datasets' nodes every epoch and keeps the rewards
//! ledger. See the crate docs and docs/auditing.md.

use std::{
    fs,
    io::{self, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use granary_auditor::{
    Auditor, EpochReport, Intake,
    auditor::queue_registration,
    config::{self, AuditorConfig},
    ledger::{self, Record, SignedEntry, Summary, Verifier},
    state::AuditorDb,
};
use granary_protocol::{NodeId, SecretKey};

#[derive(Parser, Debug)]
#[command(
    name = "granary-auditor",
    version,
    about = "Granary auditor: epochs of storage challenges and a signed rewards ledger"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create an auditor directory: identity key, auditor.toml, ledger. Prints the auditor id.
    Init {
        /// Auditor directory.
        #[arg(long, env = "GRANARY_AUDITOR_DIR")]
        dir: PathBuf,
        /// A node it may challenge, `<id>@<ip:port>`; repeat for several.
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// Seconds between epochs.
        #[arg(long, default_value_t = AuditorConfig::default().epoch_secs)]
        epoch_secs: u64,
        /// Credits per GiB proven per epoch.
        #[arg(long, default_value_t = AuditorConfig::default().reward_per_gib_epoch)]
        reward_per_gib: u64,
        /// Challenge answer deadline, ms.
        #[arg(long, default_value_t = AuditorConfig::default().deadline_ms)]
        deadline_ms: u64,
        /// Rewrite auditor.toml of an existing directory (the identity and ledger are kept).
        #[arg(long)]
        force: bool,
    },
    /// Print the auditor id.
    Id {
        /// Auditor directory.
        #[arg(long, env = "GRANARY_AUDITOR_DIR")]
        dir: PathBuf,
    },
    /// Take in a registration made by `granary register` (queued if the auditor is running).
    Register {
        /// Auditor directory.
        #[arg(long, env = "GRANARY_AUDITOR_DIR")]
        dir: PathBuf,
        /// The registration file.
        file: PathBuf,
    },
    /// Run epochs until SIGINT/SIGTERM.
    Run {
        /// Auditor directory.
        #[arg(long, env = "GRANARY_AUDITOR_DIR")]
        dir: PathBuf,
    },
    /// Run one epoch now (when the auditor is not running) and print it.
    Epoch {
        /// Auditor directory.
        #[arg(long, env = "GRANARY_AUDITOR_DIR")]
        dir: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Per-node totals from the verified ledger: verdicts, bytes proven, credits earned.
    Rewards {
        /// Auditor directory.
        #[arg(long, env = "GRANARY_AUDITOR_DIR")]
        dir: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show, verify or export the ledger.
    #[command(subcommand)]
    Ledger(LedgerCmd),
}

#[derive(Subcommand, Debug)]
enum LedgerCmd {
    /// Print the entries.
    Show {
        /// Auditor directory.
        #[arg(long, env = "GRANARY_AUDITOR_DIR")]
        dir: PathBuf,
        /// Only the last N entries.
        #[arg(long)]
        last: Option<usize>,
    },
    /// Check every signature, the hash chain, and every reward against the rules.
    Verify {
        /// Auditor directory (its own ledger).
        #[arg(long, env = "GRANARY_AUDITOR_DIR", conflicts_with = "file")]
        dir: Option<PathBuf>,
        /// An exported ledger (`ledger export`).
        #[arg(long, requires = "auditor")]
        file: Option<PathBuf>,
        /// The auditor id the export must be signed by.
        #[arg(long)]
        auditor: Option<NodeId>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write the ledger to a file anyone can verify with `ledger verify --file`.
    Export {
        /// Auditor directory.
        #[arg(long, env = "GRANARY_AUDITOR_DIR")]
        dir: PathBuf,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(false)
        .with_writer(io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A read-only view of the ledger, beside a running auditor.
fn reader(dir: &Path) -> Result<(NodeId, AuditorDb, tempfile::TempDir)> {
    let key = SecretKey::load(&config::identity_path(dir))
        .with_context(|| format!("{}: not an auditor directory", dir.display()))?;
    let scratch = tempfile::tempdir().context("scratch directory")?;
    let db = AuditorDb::open_reader(&config::db_path(dir), scratch.path(), &key.public())
        .with_context(|| format!("opening the ledger in {}", dir.display()))?;
    Ok((key.public(), db, scratch))
}

fn verify_db(dir: &Path) -> Result<(NodeId, Summary, Vec<SignedEntry>)> {
    let (id, db, _scratch) = reader(dir)?;
    let mut v = Verifier::new(id);
    let mut all = Vec::new();
    for e in db.entries() {
        let e = e?;
        v.push(&e).context("the ledger does not verify")?;
        all.push(e);
    }
    Ok((id, v.finish().context("the ledger does not verify")?, all))
}

fn print_epoch(r: &EpochReport) {
    let paid: u64 = r.nodes.iter().map(|(_, a)| a).sum();
    println!(
        "epoch {}: {} nodes, {paid} credits paid",
        r.epoch,
        r.nodes.len()
    );
    for (a, amount) in &r.nodes {
        println!(
            "  {:<8} {}  {:>4} shards sealed, {:>3} waiting, {:>3} missing  {:>9.1} MB proven  {:>6}  +{amount}{}",
            a.verdict.name(),
            &hex::encode(a.node)[..16],
            a.sealed,
            a.pending,
            a.missing,
            a.sealed_bytes as f64 / 1e6,
            a.challenge_ms.map_or("-".into(), |m| format!("{m} ms")),
            a.detail
                .as_ref()
                .map_or(String::new(), |d| format!("  ({d})")),
        );
    }
}

fn describe(r: &Record) -> String {
    match r {
        Record::Genesis { auditor, rules } => format!(
            "genesis: auditor {}, {} credits per GiB-epoch, epochs of {} s, {} chunks, {} ms deadline",
            auditor.fmt_short(),
            rules.reward_per_gib_epoch,
            rules.epoch_secs,
            rules.chunks,
            rules.deadline_ms
        ),
        Record::Registered {
            dataset,
            owner,
            nodes,
            shards,
        } => format!(
            "registered {} by {}: {shards} shards on {nodes} nodes",
            &hex::encode(dataset)[..16],
            owner.fmt_short()
        ),
        Record::Withdrawn { dataset, owner } => format!(
            "withdrawn {} by {}",
            &hex::encode(dataset)[..16],
            owner.fmt_short()
        ),
        Record::Audit(a) => format!(
            "epoch {} audit {}: {} ({} sealed, {} waiting, {} missing, {} B proven){}",
            a.epoch,
            &hex::encode(a.node)[..16],
            a.verdict.name(),
            a.sealed,
            a.pending,
            a.missing,
            a.sealed_bytes,
            a.detail
                .as_ref()
                .map_or(String::new(), |d| format!(": {d}"))
        ),
        Record::Reward {
            epoch,
            node,
            amount,
        } => format!(
            "epoch {epoch} reward {}: {amount}",
            &hex::encode(node)[..16]
        ),
        Record::EpochClosed { epoch, nodes, paid } => {
            format!("epoch {epoch} closed: {nodes} nodes, {paid} paid")
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Init {
            dir,
            nodes,
            epoch_secs,
            reward_per_gib,
            deadline_ms,
            force,
        } => {
            if AuditorConfig::path(&dir).exists() && !force {
                bail!(
                    "{} is already an auditor directory (use --force to rewrite its auditor.toml)",
                    dir.display()
                );
            }
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let key_path = config::identity_path(&dir);
            let key = if key_path.exists() {
                SecretKey::load(&key_path)?
            } else {
                let k = SecretKey::generate();
                k.save(&key_path)?;
                k
            };
            let cfg = AuditorConfig {
                nodes,
                epoch_secs,
                reward_per_gib_epoch: reward_per_gib,
                deadline_ms,
                ..AuditorConfig::default()
            };
            cfg.save(&dir)?;
            println!("{}", key.public());
            Ok(())
        }
        Cmd::Id { dir } => {
            let key = SecretKey::load(&config::identity_path(&dir))?;
            println!("{}", key.public());
            Ok(())
        }
        Cmd::Register { dir, file } => {
            let bytes = fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            // Check it before queueing, so a bad file is refused here, not later in the log.
            granary_client::register::SignedRegistration::open(&bytes)
                .map_err(|e| anyhow!("{}: {e}", file.display()))?;
            match Auditor::open(&dir) {
                Ok(mut a) => {
                    match a.register(&bytes)? {
                        Intake::Registered { shards } => {
                            println!("registered: {shards} shards, audited from the next epoch");
                        }
                        Intake::Withdrawn => println!("withdrawn: no longer audited"),
                        Intake::Stale => {
                            println!("ignored: an equal or newer registration is held")
                        }
                    }
                    Ok(())
                }
                Err(granary_auditor::AuditorError::Running(..)) => {
                    let queued = queue_registration(&dir, &bytes)?;
                    println!("queued for the running auditor: {}", queued.display());
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        Cmd::Run { dir } => {
            // SAFETY: installs a handler that only stores to an atomic.
            unsafe {
                libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
                libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
            }
            let mut a = Auditor::open(&dir)?;
            let every = Duration::from_secs(a.config().epoch_secs);
            tracing::info!(id = %a.id(), epoch_secs = every.as_secs(), "auditing");
            let mut next: Option<Instant> = None;
            while !STOP.load(Ordering::SeqCst) {
                for (f, r) in a.take_inbox()? {
                    match r {
                        Ok(i) => tracing::info!(file = %f.display(), ?i, "registration taken in"),
                        Err(e) => tracing::warn!(file = %f.display(), %e, "registration refused"),
                    }
                }
                if next.is_none_or(|t| Instant::now() >= t) {
                    match a.run_epoch()? {
                        Some(r) => {
                            let paid: u64 = r.nodes.iter().map(|(_, x)| x).sum();
                            tracing::info!(
                                epoch = r.epoch,
                                nodes = r.nodes.len(),
                                paid,
                                "epoch closed"
                            );
                            next = Some(Instant::now() + every);
                        }
                        // Nothing registered yet: the first epoch starts with the first dataset.
                        None => next = None,
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            tracing::info!("stopped");
            Ok(())
        }
        Cmd::Epoch { dir, json } => {
            let mut a = Auditor::open(&dir)?;
            a.take_inbox()?;
            let Some(r) = a.run_epoch()? else {
                bail!("no dataset is registered with this auditor");
            };
            if json {
                let nodes: Vec<_> = r
                    .nodes
                    .iter()
                    .map(|(a, amount)| {
                        serde_json::json!({
                            "node": hex::encode(a.node), "verdict": a.verdict.name(),
                            "shards": a.shards, "sealed": a.sealed, "pending": a.pending,
                            "missing": a.missing, "unacknowledged": a.unacknowledged,
                            "sealed_bytes": a.sealed_bytes, "challenge_ms": a.challenge_ms,
                            "detail": a.detail, "reward": amount,
                        })
                    })
                    .collect();
                println!("{}", serde_json::json!({"epoch": r.epoch, "nodes": nodes}));
            } else {
                print_epoch(&r);
            }
            Ok(())
        }
        Cmd::Rewards { dir, json } => {
            let (_, s, _) = verify_db(&dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
                return Ok(());
            }
            println!(
                "ledger verified: {} entries; epochs: {}, datasets: {}, credits paid: {}; head {}",
                s.entries,
                s.epochs,
                s.datasets,
                s.paid,
                &s.head[..16]
            );
            println!(
                "  {:<16}  {:>6} {:>5} {:>7} {:>4} {:>4} {:>7}  {:>12}  {:>9}",
                "node",
                "epochs",
                "pass",
                "pending",
                "late",
                "fail",
                "offline",
                "last proven",
                "earned"
            );
            for (node, t) in &s.nodes {
                println!(
                    "  {:<16}  {:>6} {:>5} {:>7} {:>4} {:>4} {:>7}  {:>9.1} MB  {:>9}",
                    &node[..16],
                    t.epochs,
                    t.pass,
                    t.pending,
                    t.late,
                    t.fail,
                    t.offline,
                    t.last_sealed_bytes as f64 / 1e6,
                    t.earned
                );
            }
            Ok(())
        }
        Cmd::Ledger(LedgerCmd::Show { dir, last }) => {
            let (_, db, _scratch) = reader(&dir)?;
            let entries: Vec<SignedEntry> = db.entries().collect::<Result<_, _>>()?;
            let skip = last.map_or(0, |n| entries.len().saturating_sub(n));
            let mut out = io::stdout().lock();
            for e in &entries[skip..] {
                let entry = e.entry()?;
                writeln!(out, "{:>6}  {}", entry.seq, describe(&entry.record))?;
            }
            Ok(())
        }
        Cmd::Ledger(LedgerCmd::Verify {
            dir,
            file,
            auditor,
            json,
        }) => {
            let s = match (dir, file) {
                (Some(dir), None) => {
                    let (id, s, _) = verify_db(&dir)?;
                    if auditor.is_some_and(|a| a != id) {
                        bail!("this ledger is kept by {id}, not the auditor named");
                    }
                    s
                }
                (None, Some(file)) => {
                    let id = auditor.ok_or_else(|| anyhow!("--file needs --auditor ID"))?;
                    let f = fs::File::open(&file)
                        .with_context(|| format!("opening {}", file.display()))?;
                    let mut r = BufReader::new(f);
                    let mut v = Verifier::new(id);
                    while let Some(e) = ledger::read_export_entry(&mut r)? {
                        v.push(&e).context("the ledger does not verify")?;
                    }
                    v.finish().context("the ledger does not verify")?
                }
                _ => bail!("give --dir or --file"),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!(
                    "ledger verified: {} entries; epochs: {}, credits paid: {}; head {}",
                    s.entries, s.epochs, s.paid, s.head
                );
            }
            Ok(())
        }
        Cmd::Ledger(LedgerCmd::Export { dir, out }) => {
            let (_, s, entries) = verify_db(&dir)?;
            let tmp = out.with_extension("tmp");
            let mut w = BufWriter::new(
                fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
            );
            ledger::write_export(&mut w, entries)?;
            w.into_inner()
                .map_err(|e| anyhow!("writing {}: {e}", tmp.display()))?
                .sync_all()?;
            fs::rename(&tmp, &out)?;
            println!("{} entries, head {}", s.entries, s.head);
            Ok(())
        }
    }
}
