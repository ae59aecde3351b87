//! `granary`: put datasets into a Granary store and get them back, verified.

use std::{
    io::{self, Write},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use clap::{Args, Parser, Subcommand};
use granary_client::{
    Capability, Dataset, ErasureParams, PackOptions, ReadError, ReadStats, Source, audit, config,
    devnet,
    manifest::EntryKind,
    pack,
    pack::PackError,
    store::{
        ShardStore,
        dir::DirStore,
        net::{NetStore, parse_nodes},
    },
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

mod demo;

/// Encoder/upload threads when storing to nodes. Measured (1 GiB to a 6-node loopback devnet, 2
/// cores): 2 workers 128 MB/s, 3: 140, 4: 148-165, 6: 134-145, 10: 129 MB/s — beyond 4 the
/// workers, six nodes and QUIC's crypto only contend for the cores. Peak RSS 115 MiB at 4.
pub(crate) const NET_WORKERS: usize = 4;

/// Exit codes that scripts can rely on.
pub(crate) mod exit {
    /// Data could not be read back intact (too many shards lost, verification failed); for
    /// `verify`, a node did not pass; for `status`, a node is unreachable.
    pub(crate) const DATA: u8 = 3;
    /// The capability, key or path is wrong.
    pub(crate) const NOT_FOUND: u8 = 4;
    /// The input changed or could not be read while packing.
    pub(crate) const INPUT: u8 = 5;
}

#[derive(Parser, Debug)]
#[command(
    name = "granary",
    version,
    about = "Content-addressed, erasure-coded, encrypted dataset storage"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug, Clone)]
struct StoreArgs {
    /// Use a local shard store directory instead of storage nodes.
    #[arg(long, env = "GRANARY_STORE")]
    store: Option<PathBuf>,
    /// Client config (key and nodes); default $GRANARY_CONFIG, then the platform config dir.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Extra storage node, `<id>@<ip:port>` (repeatable).
    #[arg(long = "node", value_name = "ID@ADDR")]
    nodes: Vec<String>,
}

impl StoreArgs {
    /// The network store from the config (plus `--node` flags).
    fn net(&self) -> Result<NetStore> {
        let path = config::locate(self.config.as_deref())?;
        let loaded = config::load(&path)?;
        let mut nodes = loaded.nodes;
        nodes.extend(parse_nodes(&self.nodes).map_err(|e| anyhow!(e).context(exit_tag(2)))?);
        Ok(NetStore::new(nodes, loaded.key)?)
    }

    /// A local directory store with `--store`, else the network.
    fn open(&self) -> Result<Box<dyn ShardStore>> {
        match &self.store {
            Some(dir) => {
                Ok(Box::new(DirStore::open(dir, false).with_context(|| {
                    format!("opening store {}", dir.display())
                })?))
            }
            None => Ok(Box::new(self.net()?)),
        }
    }
}

#[derive(Args, Debug, Clone)]
struct OutputArgs {
    /// Machine-readable output on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Store a directory, a file, or stdin (`-`); prints the capability to read it back.
    Put {
        /// What to store.
        path: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// Data shards per segment (k).
        #[arg(long, default_value_t = 4)]
        k: u8,
        /// Parity shards per segment (m): up to m shards of any segment may be lost.
        #[arg(long, default_value_t = 2)]
        m: u8,
        /// Largest shard, in bytes (`K`/`M` suffixes: 1024-based); default 8 MiB / k rounded up
        /// to 64 KiB, at least 1 MiB (2 MiB for 4+2, 1 MiB for 10+4). A segment holds k shards.
        #[arg(long, value_name = "BYTES", value_parser = parse_shard_size)]
        shard_size: Option<u32>,
        /// Store unencrypted (anyone with the id can read it).
        #[arg(long)]
        public: bool,
        /// A new version of this dataset: unchanged files are not read or stored again.
        #[arg(long, value_name = "CAP")]
        update: Option<String>,
        /// Skip unreadable files with a warning instead of failing.
        #[arg(long)]
        skip_unreadable: bool,
        /// Name of the file when reading stdin.
        #[arg(long, default_value = "stdin")]
        name: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Get a whole dataset into DEST (default: a directory named after the dataset id).
    Get {
        /// The capability.
        cap: String,
        /// Destination directory (must not exist, or be empty).
        dest: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Write one file (or a byte range of it) to stdout.
    Cat {
        /// The capability.
        cap: String,
        /// Path of the file inside the dataset.
        path: String,
        /// Byte range `A-B` (B exclusive), `A-` or `-N` (last N bytes).
        #[arg(long)]
        range: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the paths of a dataset.
    Ls {
        /// The capability.
        cap: String,
        #[command(flatten)]
        store: StoreArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Remove a dataset: drop your references to all its shards on every node (owner only).
    Rm {
        /// The capability.
        cap: String,
        #[command(flatten)]
        store: StoreArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Challenge every node holding the dataset's shards to prove it stores its sealed replica:
    /// per node pass / pending / late / fail / offline, with timings.
    Verify {
        /// The capability.
        cap: String,
        #[command(flatten)]
        store: StoreArgs,
        /// Challenged chunks per node.
        #[arg(long, default_value_t = granary_proofs::params::DEFAULT_POST_CHALLENGES as u32)]
        chunks: u32,
        /// Seal-proof openings per sealed unit (0: skip seal proofs).
        #[arg(long, default_value_t = granary_proofs::params::default_seal_proof_openings() as u32)]
        openings: u32,
        /// Challenge answer deadline in milliseconds.
        #[arg(long, default_value_t = granary_proofs::params::DEFAULT_DEADLINE_MS)]
        deadline_ms: u64,
        /// First wait up to this many seconds for the nodes to finish sealing.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Find the dataset's shards that no reachable node holds any more and rebuild them from
    /// any k of their segment onto live nodes (no key needed: it works on the stored bytes).
    Repair {
        /// The capability.
        cap: String,
        #[command(flatten)]
        store: StoreArgs,
        /// Only report what is missing.
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write a registration that asks an auditor to challenge this dataset's nodes every epoch
    /// (signed with your key; it names the dataset and where its shards are, never its key).
    /// Hand the file to the auditor: `granary-auditor register --dir D FILE`.
    Register {
        /// The capability.
        cap: String,
        #[command(flatten)]
        store: StoreArgs,
        /// Where to write the registration.
        #[arg(long)]
        out: PathBuf,
        /// Ask the auditor to stop auditing the dataset instead (before `granary rm`).
        #[arg(long)]
        withdraw: bool,
    },
    /// The nodes this client knows and their health: one line (or JSON object) per node, up
    /// or down. Exits 3 if any node is unreachable, 0 if all answer.
    Status {
        #[command(flatten)]
        store: StoreArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// A local network of real node processes on loopback.
    #[command(subcommand)]
    Devnet(DevnetCmd),
    /// The main demo: a devnet, a sample dataset put, nodes killed, the dataset got back verified.
    Demo(demo::DemoArgs),
}

#[derive(Subcommand, Debug)]
enum DevnetCmd {
    /// Start N nodes under DIR and write DIR/client.toml.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 6)]
        nodes: usize,
        /// Devnet directory.
        #[arg(long)]
        dir: PathBuf,
        /// Extra argument for each `granary-node init` (repeatable), e.g.
        /// `--init-arg=--seal-idle-secs=1`.
        #[arg(long = "init-arg", allow_hyphen_values = true)]
        init_args: Vec<String>,
        /// Seconds between the auditor's epochs.
        #[arg(long, default_value_t = 30)]
        epoch_secs: u64,
        /// Start no auditor.
        #[arg(long)]
        no_auditor: bool,
        /// Spread the nodes over this many failure domains (labels `zone-0`…); 0 gives each
        /// node its own.
        #[arg(long, default_value_t = 0)]
        zones: usize,
    },
    /// Stop the nodes of the devnet in DIR.
    Down {
        /// Devnet directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Start again the nodes of the devnet in DIR that are not running (killed or crashed), on
    /// the ports they had.
    Start {
        /// Devnet directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Opens `cap` and groups its shards by the node holding them now; an error if the manifest
/// records no placement (a dataset put with `--store`).
fn placed_dataset(cap: &str, net: &NetStore) -> Result<(Dataset, audit::Placement)> {
    let ds = open(cap, net)?;
    // Where the shards are now (a repair may have moved some), not only where they were put.
    let placed = net.current_placement(&ds);
    if placed.is_empty() {
        return Err(
            anyhow!("the manifest records no placement for this dataset")
                .context(exit_tag(exit::NOT_FOUND)),
        );
    }
    Ok((ds, placed))
}

fn progress(quiet: bool, len: u64, what: &str) -> ProgressBar {
    let pb = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// Peak resident memory of this process so far, in KiB.
pub(crate) fn peak_rss_kib() -> u64 {
    // SAFETY: getrusage only writes into the struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) == 0 {
            ru.ru_maxrss as u64
        } else {
            0
        }
    }
}

fn parse_cap(s: &str) -> Result<Capability> {
    s.parse::<Capability>()
        .map_err(|e| anyhow!(e).context(exit_tag(exit::NOT_FOUND)))
}

/// Marks an error with the exit code it should produce.
#[derive(Debug)]
struct ExitTag(u8);

impl std::fmt::Display for ExitTag {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Silent: it only carries the exit code; the message is the error it wraps.
        Ok(())
    }
}

fn exit_tag(code: u8) -> ExitTag {
    ExitTag(code)
}

fn read_error(e: ReadError) -> anyhow::Error {
    let code = match &e {
        ReadError::WrongKey
        | ReadError::KeyRequired
        | ReadError::NoSuchPath(_)
        | ReadError::NotAFile(_)
        | ReadError::Root(_)
        | ReadError::RangeOutOfBounds { .. } => exit::NOT_FOUND,
        ReadError::Io { .. } | ReadError::DestinationExists(_) => 1,
        _ => exit::DATA,
    };
    anyhow!(e).context(exit_tag(code))
}

fn parse_range(spec: &str, size: u64) -> Result<std::ops::Range<u64>> {
    let bad = || anyhow!("bad --range {spec:?}: use A-B, A- or -N").context(exit_tag(2));
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let r = match (a.is_empty(), b.is_empty()) {
        (false, false) => a.parse().map_err(|_| bad())?..b.parse().map_err(|_| bad())?,
        (false, true) => a.parse().map_err(|_| bad())?..size,
        (true, false) => size.saturating_sub(b.parse().map_err(|_| bad())?)..size,
        (true, true) => return Err(bad()),
    };
    Ok(r)
}

fn open(cap: &str, store: &dyn ShardStore) -> Result<Dataset> {
    let cap = parse_cap(cap)?;
    Dataset::open(&cap, store).map_err(read_error)
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Put {
            path,
            store,
            k,
            m,
            shard_size,
            public,
            update,
            skip_unreadable,
            name,
            out,
        } => {
            let local = store.store.is_some();
            let config_flag = store.config.clone();
            let net = if local {
                None
            } else {
                let owner = config::load(&config::locate(config_flag.as_deref())?)?.key;
                let tag = if path.as_os_str() == "-" {
                    let mut t = [0u8; 32];
                    getrandom::fill(&mut t).map_err(|e| anyhow!("OS randomness: {e}"))?;
                    t
                } else {
                    config::upload_tag(&owner, &path)
                };
                Some(store.net()?.with_upload_tag(tag))
            };
            let boxed;
            let store: &dyn ShardStore = match &net {
                Some(n) => n,
                None => {
                    boxed = store.open()?;
                    &*boxed
                }
            };
            let mut opts = PackOptions {
                erasure: ErasureParams { data: k, parity: m },
                shard_size,
                encrypt: !public,
                skip_unreadable,
                // Uploads wait on the network: more segments in flight than cores.
                workers: if local { 0 } else { NET_WORKERS },
                ..PackOptions::default()
            };
            // Over the network, a private dataset's key derives from the owner's key and the
            // source path, so an interrupted put run again resumes instead of re-uploading.
            if !local && !public && path.as_os_str() != "-" {
                let cfg = config::load(&config::locate(config_flag.as_deref())?)?;
                opts.key = Some(config::derived_dataset_key(&cfg.key, &path));
            }
            if let Some(base) = update {
                let ds = open(&base, store)?;
                opts.key = ds.capability.key.clone();
                opts.encrypt = ds.root.key_check.is_some();
                opts.erasure = ds.manifest().erasure;
                opts.base = Some(Arc::new(ds.index));
            }
            let (source, total) = if path.as_os_str() == "-" {
                (
                    Source::Reader {
                        name: name.into_bytes(),
                        reader: Box::new(io::stdin()),
                    },
                    0,
                )
            } else {
                let total = granary_client::walk::walk(&path)
                    .map(|w| {
                        w.entries
                            .iter()
                            .map(|e| match e.kind {
                                granary_client::walk::WalkKind::File { size } => size,
                                _ => 0,
                            })
                            .sum()
                    })
                    .unwrap_or(0);
                (Source::Path(path.clone()), total)
            };
            let pb = progress(out.quiet, total, "packing");
            let pb2 = pb.clone();
            opts.progress = Some(Arc::new(move |n| pb2.set_position(n)));
            let t = Instant::now();
            let report = pack(source, store, &opts).map_err(|e| {
                let code = match e {
                    PackError::FileChanged { .. }
                    | PackError::Unreadable(_)
                    | PackError::Read { .. } => exit::INPUT,
                    _ => 1,
                };
                anyhow!(e).context(exit_tag(code))
            })?;
            pb.finish_and_clear();
            let secs = t.elapsed().as_secs_f64();
            let mut warnings = report.warnings.clone();
            if let Some(n) = &net {
                // Reference every shard under the dataset's own id, then drop the upload's.
                let ds = Dataset::open(&report.capability, n).map_err(read_error)?;
                let c = n.commit(&ds)?;
                for u in &c.unreachable {
                    warnings.push(format!("commit: {u}"));
                }
            }
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            let sent = net.as_ref().map(|n| n.upload_stats());
            if out.json {
                let mut v = serde_json::json!({
                    "capability": report.capability.to_string(),
                    "files": report.files, "dirs": report.dirs, "symlinks": report.symlinks,
                    "bytes": report.bytes, "new_bytes": report.new_bytes,
                    "reused_files": report.reused_files, "dedup_files": report.dedup_files,
                    "segments": report.new_segments, "shard_bytes": report.shard_bytes,
                    "seconds": secs, "peak_rss_kib": peak_rss_kib(),
                    "warnings": warnings,
                });
                if let Some(u) = sent {
                    v["sent_shards"] = u.sent_shards.into();
                    v["sent_bytes"] = u.sent_bytes.into();
                    v["held_shards"] = u.held_shards.into();
                }
                println!("{v}");
            } else {
                if let Some(u) = sent.filter(|u| u.held_shards > 0) {
                    eprintln!(
                        "{} shards were already on the nodes (not sent again); {} sent, {:.1} MB",
                        u.held_shards,
                        u.sent_shards,
                        u.sent_bytes as f64 / 1e6
                    );
                }
                eprintln!(
                    "stored {} files, {} dirs, {} symlinks: {:.1} MB ({:.1} MB new, {} files unchanged, {} duplicates) in {:.2}s ({:.0} MB/s), erasure {}",
                    report.files,
                    report.dirs,
                    report.symlinks,
                    report.bytes as f64 / 1e6,
                    report.new_bytes as f64 / 1e6,
                    report.reused_files,
                    report.dedup_files,
                    secs,
                    report.new_bytes as f64 / 1e6 / secs.max(1e-9),
                    opts.erasure
                );
                println!("{}", report.capability);
            }
            Ok(())
        }
        Cmd::Get {
            cap,
            dest,
            store,
            out,
        } => {
            let store = store.open()?;
            let store = &*store;
            let ds = open(&cap, store)?;
            let dest = dest.unwrap_or_else(|| PathBuf::from(ds.capability.id.to_string()));
            let total: u64 = ds.manifest().entries.iter().map(|e| e.size()).sum();
            let pb = progress(out.quiet, total, "getting");
            let t = Instant::now();
            let mut stats = ReadStats::default();
            let report = ds
                .extract(store, &dest, Some(&|n| pb.set_position(n)), &mut stats)
                .map_err(read_error)?;
            pb.finish_and_clear();
            let secs = t.elapsed().as_secs_f64();
            if out.json {
                let v = serde_json::json!({
                    "dest": dest.display().to_string(), "files": report.files, "dirs": report.dirs,
                    "symlinks": report.symlinks, "bytes": report.bytes, "seconds": secs,
                    "shard_reads": stats.shard_reads, "shard_failures": stats.shard_failures,
                    "rebuilds": stats.rebuilds, "raced": stats.raced, "peak_rss_kib": peak_rss_kib(),
                });
                println!("{v}");
            } else {
                eprintln!(
                    "got {} files ({:.1} MB) into {} in {:.2}s ({:.0} MB/s), all verified; {} shard failures routed around, {} ranges rebuilt",
                    report.files,
                    report.bytes as f64 / 1e6,
                    dest.display(),
                    secs,
                    report.bytes as f64 / 1e6 / secs.max(1e-9),
                    stats.shard_failures,
                    stats.rebuilds
                );
            }
            Ok(())
        }
        Cmd::Cat {
            cap,
            path,
            range,
            store,
        } => {
            let store = store.open()?;
            let store = &*store;
            let ds = open(&cap, store)?;
            let entry = ds.file(&path).map_err(read_error)?;
            let mut stdout = io::stdout().lock();
            let mut stats = ReadStats::default();
            match range {
                Some(spec) => {
                    let r = parse_range(&spec, entry.size())?;
                    let bytes = ds
                        .read_range(store, entry, r, &mut stats)
                        .map_err(read_error)?;
                    stdout.write_all(&bytes).context("writing to stdout")?;
                }
                None => {
                    ds.write_file(store, entry, &mut stdout, &mut stats)
                        .map_err(read_error)?;
                }
            }
            stdout.flush().context("writing to stdout")?;
            Ok(())
        }
        Cmd::Ls { cap, store, json } => {
            let store = store.open()?;
            let store = &*store;
            let ds = open(&cap, store)?;
            let mut stdout = io::stdout().lock();
            for e in &ds.manifest().entries {
                let (kind, extra) = match &e.kind {
                    EntryKind::File { size, .. } => ("file", size.to_string()),
                    EntryKind::Dir => ("dir", String::new()),
                    EntryKind::Symlink { target } => {
                        ("symlink", String::from_utf8_lossy(target).into_owned())
                    }
                };
                if json {
                    let v = serde_json::json!({"path": e.display_path(), "kind": kind, "mode": e.mode, "size": e.size(), "target": extra});
                    writeln!(stdout, "{v}")?;
                } else {
                    writeln!(
                        stdout,
                        "{kind:7} {:o} {extra:>12} {}",
                        e.mode,
                        e.display_path()
                    )?;
                }
            }
            Ok(())
        }
        Cmd::Rm { cap, store, json } => {
            let net = store.net()?;
            let ds = open(&cap, &net)?;
            let ids = granary_client::store::net::dataset_shards(&ds);
            let removed = net.delete(ds.capability.id.0, &ids)?;
            if removed == 0 {
                return Err(anyhow!(
                    "no shard of this dataset is stored under your key: only its owner can remove it"
                )
                .context(exit_tag(exit::NOT_FOUND)));
            }
            if json {
                let v = serde_json::json!({
                    "dataset": ds.capability.id.to_string(), "removed_references": removed,
                });
                println!("{v}");
            } else {
                eprintln!("removed {removed} shard references of {}", ds.capability.id);
            }
            Ok(())
        }
        Cmd::Verify {
            cap,
            store,
            chunks,
            openings,
            deadline_ms,
            wait,
            json,
        } => {
            let net = store.net()?;
            let (_, placed) = placed_dataset(&cap, &net)?;
            if wait > 0 {
                let mut last = None;
                net.wait_sealed(&placed, Duration::from_secs(wait), |p| {
                    if !json && last != Some(*p) {
                        last = Some(*p);
                        eprintln!(
                            "sealing: {} shards sealed, {} waiting ({} nodes unreachable)",
                            p.sealed, p.pending, p.unreachable
                        );
                    }
                });
            }
            let opts = audit::AuditOptions {
                chunks,
                openings,
                deadline: Duration::from_millis(deadline_ms),
            };
            let results = net.audit(&placed, opts);
            if json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                print!("{}", audit_table(&results, &opts));
            }
            let bad = results.iter().filter(|r| {
                matches!(
                    r.verdict,
                    audit::Verdict::Fail | audit::Verdict::Late | audit::Verdict::Offline
                )
            });
            let bad = bad.count();
            if bad > 0 {
                return Err(anyhow!("{bad} of {} nodes did not pass", results.len())
                    .context(exit_tag(exit::DATA)));
            }
            Ok(())
        }
        Cmd::Repair {
            cap,
            store,
            dry_run,
            json,
        } => {
            let probe = store.net()?;
            let ds = open(&cap, &probe)?;
            // Rebuilt shards are held under the dataset's own reference, as after a committed put.
            let net = store.net()?.with_upload_tag(ds.capability.id.0);
            let t = Instant::now();
            let r = net.repair(&ds, dry_run)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                eprintln!(
                    "checked {} shards of {} segments in {:.1}s: {} missing, {} rebuilt onto live nodes, {} segments unrecoverable; root record on {} nodes",
                    r.shards,
                    r.segments,
                    t.elapsed().as_secs_f64(),
                    r.missing,
                    r.rebuilt,
                    r.unrecoverable_segments,
                    r.root_copies
                );
                for p in &r.problems {
                    eprintln!("  {p}");
                }
            }
            if r.unrecoverable_segments > 0 || (!dry_run && r.rebuilt < r.missing) {
                return Err(
                    anyhow!("{} shards could not be rebuilt", r.missing - r.rebuilt)
                        .context(exit_tag(exit::DATA)),
                );
            }
            Ok(())
        }
        Cmd::Register {
            cap,
            store,
            out,
            withdraw,
        } => {
            let net = store.net()?;
            let (ds, placed) = placed_dataset(&cap, &net)?;
            let created_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or_default();
            let shards: usize = placed.values().map(Vec::len).sum();
            let nodes = placed.len();
            let reg = granary_client::register::AuditRegistration {
                version: granary_client::register::REGISTRATION_VERSION,
                dataset: ds.capability.id,
                owner: net.owner().public(),
                created_ms,
                active: !withdraw,
                placed,
            };
            let bytes = reg.sign(net.owner()).to_bytes();
            let tmp = out.with_extension("tmp");
            std::fs::write(&tmp, &bytes)
                .and_then(|()| std::fs::rename(&tmp, &out))
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "{} {} ({shards} shards on {nodes} nodes) in {}",
                if withdraw {
                    "withdrawal of"
                } else {
                    "registration of"
                },
                ds.capability.id,
                out.display()
            );
            Ok(())
        }
        Cmd::Status { store, json } => {
            let net = store.net()?;
            let mut healthy = 0;
            for st in net.status() {
                match &st.info {
                    Ok(info) => {
                        healthy += 1;
                        if json {
                            println!(
                                "{}",
                                serde_json::json!({"node": st.node.to_string(), "ok": true, "label": info.label, "shards": info.shard_count, "used": info.used, "free": info.free, "capacity": info.capacity, "version": info.version})
                            );
                        } else {
                            println!(
                                "up    {}  {:>8} shards  {:>10.1} MB used  {:>10.1} MB free  {}",
                                st.node,
                                info.shard_count,
                                info.used as f64 / 1e6,
                                info.free as f64 / 1e6,
                                info.label
                            );
                        }
                    }
                    Err(e) => {
                        if json {
                            println!(
                                "{}",
                                serde_json::json!({"node": st.node.to_string(), "ok": false, "error": e})
                            );
                        } else {
                            println!("down  {}  {e}", st.node);
                        }
                    }
                }
            }
            let total = net.nodes().len();
            if healthy < total {
                return Err(anyhow!("{} of {total} nodes unreachable", total - healthy)
                    .context(exit_tag(exit::DATA)));
            }
            if !json {
                eprintln!("{healthy} of {total} nodes reachable");
            }
            Ok(())
        }
        Cmd::Devnet(DevnetCmd::Up {
            nodes,
            dir,
            init_args,
            epoch_secs,
            no_auditor,
            zones,
        }) => {
            let auditor = match no_auditor {
                true => None,
                false => Some(devnet::AuditorSpec {
                    bin: devnet::auditor_binary().ok_or_else(|| {
                        anyhow!("granary-auditor not found next to granary (or use --no-auditor)")
                    })?,
                    epoch_secs,
                }),
            };
            let opts = devnet::DevnetOptions {
                init_args,
                auditor,
                zones,
            };
            let net = devnet::up_full(&dir, nodes, &devnet::node_binary(), &opts)?;
            for n in &net.nodes {
                eprintln!("node {} (pid {}) in {}", n.addr, n.pid, n.dir.display());
            }
            if let Some(a) = &net.auditor {
                eprintln!(
                    "auditor {} (pid {}) in {}: register datasets with `granary register CAP --out F` then `granary-auditor register --dir {} F`",
                    &a.id[..16],
                    a.pid,
                    a.dir.display(),
                    a.dir.display()
                );
            }
            let cfg = std::fs::canonicalize(dir.join("client.toml"))?;
            println!("GRANARY_CONFIG={}", cfg.display());
            Ok(())
        }
        Cmd::Devnet(DevnetCmd::Down { dir }) => {
            let n = devnet::down(&dir)?;
            eprintln!("stopped {n} nodes");
            Ok(())
        }
        Cmd::Devnet(DevnetCmd::Start { dir }) => {
            let started = devnet::start(&dir, &devnet::node_binary())?;
            let names: Vec<String> = started.iter().map(|i| format!("node-{i}")).collect();
            eprintln!(
                "started {} nodes{}{}",
                started.len(),
                if names.is_empty() { "" } else { ": " },
                names.join(", ")
            );
            Ok(())
        }
        Cmd::Demo(args) => demo::run(args),
    }
}

fn main() -> ExitCode {
    // Output into a pipe whose reader has gone (`granary cat CAP F | head`) ends the process
    // quietly, as it does for `cat`, instead of failing every write with EPIPE (an error message,
    // or a panic in `println!`). Rust starts programs with SIGPIPE ignored; restore the default.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to the default, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // glibc gives each thread that allocates its own heap arena (up to 8 per core), and the
    // shard and segment buffers freed in one stay there: a get from a devnet peaked at 200-229
    // MiB with the default, 152-166 MiB with two arenas, at the same speed (DEVNET=1
    // scripts/rss.sh 2, interleaved). A MALLOC_ARENA_MAX the user set wins.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.downcast_ref::<ExitTag>().map_or(1, |t| t.0);
            // Skip the exit-code marker in the chain.
            let msg: Vec<String> = e
                .chain()
                .map(|c| c.to_string())
                .filter(|m| !m.is_empty())
                .collect();
            eprintln!("error: {}", msg.join(": "));
            ExitCode::from(code)
        }
    }
}

/// The per-node table of `granary verify` and the demo.
pub(crate) fn audit_table(results: &[audit::NodeAudit], opts: &audit::AuditOptions) -> String {
    use std::fmt::Write;
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
    let mut out = format!(
        "   {:<10}  {:<7}  {:>6}  {:>6}  {:>5}  {:>8}  {:>10}  {:>10}  {:>8}\n",
        "node", "verdict", "shards", "sealed", "units", "MB", "seal proof", "challenge", "verify"
    );
    for r in results {
        let verdict = r.verdict.name();
        let _ = writeln!(
            out,
            "   {:<10}  {:<7}  {:>6}  {:>6}  {:>5}  {:>8.1}  {:>10}  {:>10}  {:>8}{}",
            r.node.get(..10).unwrap_or(&r.node),
            verdict,
            r.shards,
            r.sealed,
            r.units,
            r.unit_bytes as f64 / 1e6,
            ms(r.seal_proof_ms),
            ms(r.challenge_ms),
            ms(r.verify_ms),
            r.detail
                .as_deref()
                .map(|d| format!("  ({d})"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "   ({} challenged chunks per node, {} seal-proof openings per unit, deadline {} ms, fresh seeds)",
        opts.chunks,
        opts.openings,
        opts.deadline.as_millis()
    );
    out
}

/// `--shard-size`: a byte count as `granary_protocol::size::parse_size` reads it (digits and an
/// optional 1024-based suffix), from 4 KiB to 64 MiB.
fn parse_shard_size(s: &str) -> Result<u32, String> {
    let bytes = granary_protocol::size::parse_size(s)?;
    if !(4 << 10..=64 << 20).contains(&bytes) {
        return Err(format!("{s:?}: a shard size must be 4K ..= 64M"));
    }
    u32::try_from(bytes).map_err(|_| format!("{s:?} is too large"))
}
