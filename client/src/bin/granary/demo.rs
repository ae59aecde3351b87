//! `granary demo`: the main job. A devnet of real node processes on loopback, a sample dataset
//! put into it, two nodes killed, the dataset got back and verified byte for byte, then a round
//! of storage challenges once the live nodes have sealed what they hold.
//! `--local` runs the same data path against a local shard directory instead.

use std::{
    collections::HashSet,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Args;
use granary_client::{
    Dataset, ErasureParams, PackOptions, ReadStats, Source, audit, config, devnet, pack,
    sample::{self, SampleSpec},
    store::{ShardStore, dir::DirStore, net::NetStore},
};

/// Options of `granary demo`.
#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Working directory (sample data, nodes, restored copy); a fresh temporary one by default.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Files in the sample dataset.
    #[arg(long, default_value_t = 3000)]
    files: usize,
    /// Approximate size of the sample dataset in MB.
    #[arg(long, default_value_t = 200)]
    mb: u64,
    /// Storage nodes to start.
    #[arg(long, default_value_t = 6)]
    nodes: usize,
    /// Data shards per segment.
    #[arg(long, default_value_t = 4)]
    k: u8,
    /// Parity shards per segment; this many nodes are killed (or, with --local, shards deleted).
    #[arg(long, default_value_t = 2)]
    m: u8,
    /// Use a local shard directory instead of a devnet.
    #[arg(long)]
    local: bool,
    /// Keep the working directory afterwards.
    #[arg(long)]
    keep: bool,
    /// Seconds to wait for the nodes to seal before challenging them.
    #[arg(long, default_value_t = 300)]
    seal_wait: u64,
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs.max(1e-9)
}

pub(crate) fn run(args: DemoArgs) -> Result<()> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("granary-demo-{}", std::process::id())),
    };
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} is not empty; pick a new --dir", dir.display());
    }
    let result = run_in(&args, &dir);
    if !args.local {
        let _ = devnet::down(&dir.join("devnet"));
    }
    if result.is_ok() && !args.keep && args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("   files kept in {}", dir.display());
    }
    result
}

fn run_in(args: &DemoArgs, dir: &std::path::Path) -> Result<()> {
    let src = dir.join("sample");
    let t = Instant::now();
    let (files, bytes) = sample::generate(
        &src,
        SampleSpec {
            files: args.files,
            total_bytes: args.mb * 1_000_000,
            seed: 2026,
        },
    )
    .context("generating the sample dataset")?;
    println!(
        "1. generated {files} files, {:.1} MB of mixed sizes in {} ({:.1}s)",
        bytes as f64 / 1e6,
        src.display(),
        t.elapsed().as_secs_f64()
    );

    let ddir = dir.join("devnet");
    let mut devnet_nodes = Vec::new();
    let mut auditor = None;
    let mut owner = None;
    let dir_store;
    let net_store;
    let (store, net): (&dyn ShardStore, Option<&NetStore>) = if args.local {
        dir_store = DirStore::open(dir.join("store"), false)?;
        println!("2. local shard store in {}", dir.join("store").display());
        (&dir_store, None)
    } else {
        let t = Instant::now();
        // The devnet's auditor: its first epoch runs when the dataset is registered (step 8).
        let spec = devnet::auditor_binary().map(|bin| devnet::AuditorSpec {
            bin,
            epoch_secs: 3600,
        });
        let opts = devnet::DevnetOptions {
            auditor: spec.clone(),
            ..devnet::DevnetOptions::default()
        };
        let d = devnet::up_full(&ddir, args.nodes, &devnet::node_binary(), &opts)
            .context("starting the devnet (is granary-node built next to granary?)")?;
        devnet_nodes = d.nodes.clone();
        auditor = d.auditor.clone().zip(spec.map(|s| s.bin));
        let cfg = config::load(&ddir.join("client.toml"))?;
        let tag = config::upload_tag(&cfg.key, &src);
        owner = Some(cfg.key.clone());
        net_store = NetStore::new(cfg.nodes, cfg.key)?.with_upload_tag(tag);
        println!(
            "2. started {} granary-node processes on loopback in {:.1}s (GRANARY_CONFIG={}){}",
            d.nodes.len(),
            t.elapsed().as_secs_f64(),
            ddir.join("client.toml").display(),
            if d.auditor.is_some() {
                ", and an auditor"
            } else {
                ""
            }
        );
        (&net_store, Some(&net_store))
    };

    let opts = PackOptions {
        erasure: ErasureParams {
            data: args.k,
            parity: args.m,
        },
        workers: if net.is_some() { super::NET_WORKERS } else { 0 },
        ..PackOptions::default()
    };
    let t = Instant::now();
    let report = pack(Source::Path(src.clone()), store, &opts)?;
    let put_secs = t.elapsed().as_secs_f64();
    println!(
        "3. put: {} files in {} segments, {:.1} MB of shards ({}+{}), {:.2}s = {:.0} MB/s, peak RSS {} MiB",
        report.files,
        report.new_segments,
        report.shard_bytes as f64 / 1e6,
        args.k,
        args.m,
        put_secs,
        mbps(report.bytes, put_secs),
        super::peak_rss_kib() / 1024
    );
    println!("   capability: {}", report.capability);
    if let Some(net) = net {
        let c = net.commit(&Dataset::open(&report.capability, net)?)?;
        println!(
            "   committed: {} shards referenced under the dataset's id ({} references)",
            c.shards, c.tagged
        );
    }

    if let Some(net) = net {
        println!("   shards per node:");
        for st in net.status() {
            match st.info {
                Ok(i) => println!(
                    "     {}  {:>5} shards  {:>8.1} MB  {}",
                    st.node.id.fmt_short(),
                    i.shard_count,
                    i.used as f64 / 1e6,
                    i.label
                ),
                Err(e) => println!("     {}  unreachable: {e}", st.node.id.fmt_short()),
            }
        }
        for n in devnet_nodes.iter().take(args.m as usize) {
            devnet::signal(n.pid, libc::SIGKILL);
            devnet::reap(n.pid);
        }
        println!(
            "4. killed {} of {} nodes with SIGKILL: {}",
            args.m,
            devnet_nodes.len(),
            devnet_nodes
                .iter()
                .take(args.m as usize)
                .map(|n| format!("pid {}", n.pid))
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else {
        let dirstore = DirStore::open(dir.join("store"), false)?;
        let ds = Dataset::open(&report.capability, store)?;
        let mut lost = HashSet::new();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for seg in &ds.manifest().segments {
            let mut removed = 0;
            let mut tries = 0;
            while removed < args.m as usize && tries < 64 {
                tries += 1;
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let id = seg.shards[(seed % seg.shards.len() as u64) as usize];
                if lost.insert(id) {
                    dirstore.remove_shard(&id)?;
                    removed += 1;
                }
            }
        }
        println!(
            "4. deleted {} shards: {} of the {} shards of every segment",
            lost.len(),
            args.m,
            args.k + args.m
        );
    }

    let out = dir.join("restored");
    let t = Instant::now();
    let mut stats = ReadStats::default();
    let ds = Dataset::open(&report.capability, store)?;
    let ex = ds.extract(store, &out, None, &mut stats)?;
    let get_secs = t.elapsed().as_secs_f64();
    println!(
        "5. get: {} files, {:.1} MB in {:.2}s = {:.0} MB/s; {} verified shard reads, {} failed reads routed around, {} ranges rebuilt with Reed-Solomon",
        ex.files,
        ex.bytes as f64 / 1e6,
        get_secs,
        mbps(ex.bytes, get_secs),
        stats.shard_reads,
        stats.shard_failures,
        stats.rebuilds
    );
    match sample::compare_trees(&src, &out)? {
        None => {
            println!("6. verified: the retrieved copy is byte-for-byte identical to the original")
        }
        Some(diff) => bail!("retrieved copy differs: {diff}"),
    }
    if let Some(net) = net {
        challenge_round(net, &ds, args)?;
        match (&auditor, &owner) {
            (Some((a, bin)), Some(key)) => rewards_round(&ds, key, a, bin, dir)?,
            _ => println!("8. (no granary-auditor next to granary: no rewards ledger)"),
        }
    }
    println!(
        "report: put {:.0} MB/s, get {:.0} MB/s (with {} of {} shards of every segment gone), {} files, {:.1} MB",
        mbps(report.bytes, put_secs),
        mbps(ex.bytes, get_secs),
        args.m,
        args.k + args.m,
        ex.files,
        ex.bytes as f64 / 1e6
    );
    Ok(())
}

/// Step 7: waits for the live nodes to seal what they hold, then challenges every node the
/// manifest names; the killed ones show as offline.
fn challenge_round(net: &NetStore, ds: &Dataset, args: &DemoArgs) -> Result<()> {
    let placed = audit::placed_shards(ds);
    let t = Instant::now();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut said = false;
    let p = net.wait_sealed(&placed, Duration::from_secs(args.seal_wait), |p| {
        if p.pending == 0 {
            return;
        }
        if tty {
            print!(
                "\r7. sealing in the background: {} shards sealed, {} waiting ({:.0}s)   ",
                p.sealed,
                p.pending,
                t.elapsed().as_secs_f64()
            );
            let _ = std::io::Write::flush(&mut std::io::stdout());
        } else if !said {
            println!(
                "7. waiting for the live nodes to seal {} shards (sealing is slow by design: ~3-4 MB/s per core)",
                p.pending
            );
            said = true;
        }
    });
    if tty {
        print!("\r");
    }
    println!(
        "7. sealed: {} shards on the {} live nodes ({} still waiting) after {:.1}s; storage challenges:",
        p.sealed,
        placed.len().saturating_sub(p.unreachable),
        p.pending,
        t.elapsed().as_secs_f64()
    );
    let opts = audit::AuditOptions::default();
    let results = net.audit(&placed, opts);
    print!("{}", super::audit_table(&results, &opts));
    let live_bad = results
        .iter()
        .filter(|r| !matches!(r.verdict, audit::Verdict::Pass | audit::Verdict::Offline))
        .count();
    let offline = results
        .iter()
        .filter(|r| r.verdict == audit::Verdict::Offline)
        .count();
    println!(
        "   {} nodes passed, {offline} offline (killed), {live_bad} live nodes did not pass",
        results.len() - offline - live_bad
    );
    if live_bad > 0 && p.pending == 0 {
        bail!("{live_bad} live nodes failed their storage challenge");
    }
    Ok(())
}

/// Runs `granary-auditor args…`; its stdout, or an error with its stderr.
fn auditor_cmd(bin: &std::path::Path, args: &[&std::ffi::OsStr]) -> Result<String> {
    let out = std::process::Command::new(bin)
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "granary-auditor {}: {}",
            args.first()
                .map_or(String::new(), |a| a.to_string_lossy().into_owned()),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Step 8: registers the dataset with the devnet's auditor (its placement, signed by the owner,
/// never the key), waits for the epoch it triggers, and prints the verified rewards ledger.
fn rewards_round(
    ds: &Dataset,
    owner: &granary_protocol::SecretKey,
    a: &devnet::DevnetAuditor,
    bin: &std::path::Path,
    dir: &std::path::Path,
) -> Result<()> {
    let reg = granary_client::register::AuditRegistration {
        version: granary_client::register::REGISTRATION_VERSION,
        dataset: ds.capability.id,
        owner: owner.public(),
        created_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default(),
        active: true,
        placed: audit::placed_shards(ds),
    };
    let file = dir.join("registration.bin");
    std::fs::write(&file, reg.sign(owner).to_bytes())?;
    let adir = a.dir.as_os_str();
    auditor_cmd(
        bin,
        &[
            "register".as_ref(),
            "--dir".as_ref(),
            adir,
            file.as_os_str(),
        ],
    )?;
    let t = Instant::now();
    loop {
        let text = auditor_cmd(
            bin,
            &[
                "rewards".as_ref(),
                "--dir".as_ref(),
                adir,
                "--json".as_ref(),
            ],
        )?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        if v["epochs"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!(
                "the auditor ran no epoch within 120 s; see {}/auditor.log",
                a.dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    println!(
        "8. registered the dataset with the auditor {} (owner-signed placement, no key); its first epoch after {:.1}s:",
        &a.id[..16],
        t.elapsed().as_secs_f64()
    );
    let table = auditor_cmd(bin, &["rewards".as_ref(), "--dir".as_ref(), adir])?;
    for line in table.lines() {
        println!("   {line}");
    }
    println!(
        "   (check the ledger with `granary-auditor ledger verify --dir {}`; `granary demo --keep` keeps it)",
        a.dir.display()
    );
    Ok(())
}
