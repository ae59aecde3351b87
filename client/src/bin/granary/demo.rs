//! `granary demo`: the data path end to end on one machine, with shards lost on purpose.

use std::{collections::HashSet, path::PathBuf, time::Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use granary_client::{
    Dataset, ErasureParams, PackOptions, ReadStats, Source, pack,
    sample::{self, SampleSpec},
    store::dir::DirStore,
};

/// Options of `granary demo`.
#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Working directory (sample data, store, restored copy); a fresh temporary one by default.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Files in the sample dataset.
    #[arg(long, default_value_t = 3000)]
    files: usize,
    /// Approximate size of the sample dataset in MB.
    #[arg(long, default_value_t = 200)]
    mb: u64,
    /// Data shards per segment.
    #[arg(long, default_value_t = 4)]
    k: u8,
    /// Parity shards per segment (this many are deleted from every segment).
    #[arg(long, default_value_t = 2)]
    m: u8,
    /// Keep the working directory afterwards.
    #[arg(long)]
    keep: bool,
}

pub(crate) fn run(args: DemoArgs) -> Result<()> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("granary-demo-{}", std::process::id()));
            tmp.clone()
        }
    };
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} is not empty; pick a new --dir", dir.display());
    }
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
        "1. generated {files} files, {:.1} MB in {} ({:.2}s)",
        bytes as f64 / 1e6,
        src.display(),
        t.elapsed().as_secs_f64()
    );

    let store = DirStore::open(dir.join("store"), false)?;
    let opts = PackOptions {
        erasure: ErasureParams {
            data: args.k,
            parity: args.m,
        },
        ..PackOptions::default()
    };
    let t = Instant::now();
    let report = pack(Source::Path(src.clone()), &store, &opts)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "2. packed: {} segments, {:.1} MB of shards ({} data + {} parity each), {:.0} MB/s, peak RSS {} MiB",
        report.new_segments,
        report.shard_bytes as f64 / 1e6,
        args.k,
        args.m,
        report.bytes as f64 / 1e6 / secs,
        super::peak_rss_kib() / 1024
    );
    println!("   capability: {}", report.capability);

    let ds = Dataset::open(&report.capability, &store)?;
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
                store.remove_shard(&id)?;
                removed += 1;
            }
        }
    }
    println!(
        "3. deleted {} shards: {} of the {} shards of every segment",
        lost.len(),
        args.m,
        args.k + args.m
    );

    let out = dir.join("restored");
    let t = Instant::now();
    let mut stats = ReadStats::default();
    let ds = Dataset::open(&report.capability, &store)?;
    let ex = ds.extract(&store, &out, None, &mut stats)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "4. reassembled {} files, {:.1} MB in {:.2}s ({:.0} MB/s): {} shard reads, {} missing shards routed around, {} ranges rebuilt with Reed-Solomon",
        ex.files,
        ex.bytes as f64 / 1e6,
        secs,
        ex.bytes as f64 / 1e6 / secs,
        stats.shard_reads,
        stats.shard_failures,
        stats.rebuilds
    );
    match sample::compare_trees(&src, &out)? {
        None => {
            println!("5. verified: the restored copy is byte-for-byte identical to the original")
        }
        Some(diff) => bail!("restored copy differs: {diff}"),
    }
    if !args.keep && args.dir.is_none() {
        std::fs::remove_dir_all(&dir)?;
    } else {
        println!("   files kept in {}", dir.display());
    }
    Ok(())
}
