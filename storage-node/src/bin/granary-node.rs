//! `granary-node`: the Granary storage node daemon.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use granary_node::{Config, node, status};
use granary_protocol::SecretKey;
use granary_protocol::size::parse_size;

#[derive(Parser, Debug)]
#[command(name = "granary-node", version, about = "Granary storage node")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a node directory: config.toml and identity.key.
    Init {
        /// Node directory.
        #[arg(long, env = "GRANARY_NODE_DIR")]
        dir: PathBuf,
        /// UDP address to listen on.
        #[arg(long, default_value = granary_node::config::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Capacity, e.g. 500G (binary units).
        #[arg(long, value_parser = parse_size)]
        capacity: Option<u64>,
        /// Per-owner quota (defaults to the capacity).
        #[arg(long, value_parser = parse_size)]
        owner_quota: Option<u64>,
        /// Failure-domain label (operator/zone).
        #[arg(long, default_value = "default")]
        label: String,
        /// Seal waiting shards as a smaller unit after this many idle seconds.
        #[arg(long)]
        seal_idle_secs: Option<u64>,
        /// Sealing unit size, e.g. 128M.
        #[arg(long, value_parser = parse_size)]
        seal_unit: Option<u64>,
        /// Keep plain shard files after sealing.
        #[arg(long)]
        keep_plain: bool,
        /// Sealer threads (each seals its own unit).
        #[arg(long)]
        seal_threads: Option<u32>,
        /// An auditor (node id) allowed to challenge this node; repeat for several.
        #[arg(long = "auditor")]
        auditors: Vec<granary_protocol::NodeId>,
    },
    /// Run the node until SIGINT/SIGTERM (a second one stops it at once, exit code 1).
    Run {
        /// Node directory.
        #[arg(long, env = "GRANARY_NODE_DIR")]
        dir: PathBuf,
    },
    /// Print what the node stores (works while it runs).
    Status {
        /// Node directory.
        #[arg(long, env = "GRANARY_NODE_DIR")]
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// List at most this many shards.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Re-hash every stored shard and quarantine corrupt ones (run while the node is stopped).
    Scrub {
        /// Node directory.
        #[arg(long, env = "GRANARY_NODE_DIR")]
        dir: PathBuf,
    },
    /// Proofs: `--self-test` seals nothing new but proves everything sealed so far, with fresh
    /// randomness: a seal proof per unit and one storage challenge over all units, verified.
    Prove {
        /// Node directory.
        #[arg(long, env = "GRANARY_NODE_DIR")]
        dir: PathBuf,
        /// Run the local challenge round (the only mode so far; required).
        #[arg(long, required = true)]
        self_test: bool,
        /// Challenged chunks.
        #[arg(long, default_value_t = granary_proofs::params::DEFAULT_POST_CHALLENGES)]
        chunks: usize,
        /// Seal-proof openings per unit.
        #[arg(long, default_value_t = granary_proofs::params::default_seal_proof_openings())]
        openings: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the node id (with `--addr`: `<id>@<bound address>` of the running node).
    Id {
        /// Node directory.
        #[arg(long, env = "GRANARY_NODE_DIR")]
        dir: PathBuf,
        /// Print `<id>@<addr>` using the address the node last bound (`node.addr`).
        #[arg(long)]
        addr: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Init {
            dir,
            listen,
            capacity,
            owner_quota,
            label,
            seal_idle_secs,
            seal_unit,
            keep_plain,
            seal_threads,
            auditors,
        } => {
            let d = Config::default();
            let sealing = granary_node::config::Sealing {
                idle_secs: seal_idle_secs.unwrap_or(d.sealing.idle_secs),
                unit_bytes: seal_unit.unwrap_or(d.sealing.unit_bytes),
                keep_plain,
                threads: seal_threads.unwrap_or(d.sealing.threads),
                ..d.sealing
            };
            let capacity = capacity.unwrap_or(d.capacity);
            let cfg = Config {
                listen,
                capacity,
                owner_quota: owner_quota.unwrap_or(capacity),
                label,
                sealing,
                auditors: auditors.iter().map(ToString::to_string).collect(),
                ..d
            };
            let id = node::init(&dir, &cfg)
                .with_context(|| format!("initialising {}", dir.display()))?;
            println!("{id}");
        }
        Cmd::Id { dir, addr } => {
            let id = SecretKey::load(&node::identity_path(&dir))?.public();
            if addr {
                let path = node::addr_path(&dir);
                let bound = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {} (has the node run?)", path.display()))?;
                let na = granary_protocol::NodeAddr {
                    id,
                    addr: bound.trim().parse()?,
                };
                println!("{na}");
            } else {
                println!("{id}");
            }
        }
        Cmd::Status { dir, json, limit } => {
            let s = status::read(&dir, limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{s}");
            }
        }
        Cmd::Run { dir } => run(dir)?,
        Cmd::Prove {
            dir,
            self_test: _,
            chunks,
            openings,
            json,
        } => {
            let r = granary_node::prove::self_test(&dir, chunks, openings)
                .with_context(|| format!("proving from {}", dir.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for u in &r.units {
                    println!(
                        "unit {}: {} shards, {} bytes: seal proof {} (prove {:.0} ms, verify {:.1} ms)",
                        u.unit,
                        u.shards,
                        u.bytes,
                        u.error.as_deref().unwrap_or("ok"),
                        u.prove_ms,
                        u.verify_ms
                    );
                }
                match &r.post {
                    Some(p) => println!(
                        "challenge: {} chunks over {} units: {} (prove {:.1} ms of a {} ms deadline, verify {:.1} ms, proof {} KiB)",
                        p.chunks,
                        r.units.len(),
                        p.error.as_deref().unwrap_or("ok"),
                        p.prove_ms,
                        p.deadline_ms,
                        p.verify_ms,
                        p.proof_bytes / 1024
                    ),
                    None => println!("challenge: nothing sealed yet"),
                }
                if r.pending_shards > 0 {
                    println!("{} shards wait to be sealed", r.pending_shards);
                }
                println!("{}", if r.passed() { "PASS" } else { "FAIL" });
            }
            if !r.passed() {
                std::process::exit(2);
            }
        }
        Cmd::Scrub { dir } => {
            let r = granary_node::scrub::scrub(&dir)
                .with_context(|| format!("scrubbing {} (is the node stopped?)", dir.display()))?;
            println!("verified {} shards, {} bytes", r.verified, r.bytes);
            for q in r.check.quarantined.iter().chain(&r.corrupt) {
                println!("quarantined {q}");
            }
            if !r.corrupt.is_empty() || !r.check.quarantined.is_empty() {
                std::process::exit(2);
            }
        }
    }
    Ok(())
}

fn run(dir: PathBuf) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Handlers first: a SIGTERM right after the "listening" line must shut down gracefully.
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let node = node::start(&dir)
            .await
            .with_context(|| format!("starting node in {}", dir.display()))?;
        println!(
            "granary-node {} listening on {}",
            node.node_id(),
            node.local_addr()
        );
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("signal received; shutting down (a second signal stops at once)");
        tokio::select! {
            () = node.shutdown() => {}
            _ = async { tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} } } => {
                // As after a crash: unfinished uploads leave only tmp/ files, which the next
                // start removes, and without the clean-shutdown marker it checks every shard.
                tracing::warn!("second signal: stopping at once");
                std::process::exit(1);
            }
        }
        anyhow::Ok(())
    })
}
