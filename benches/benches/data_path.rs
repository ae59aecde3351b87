//! Client data-path benchmarks. Each group has criterion numbers (`Throughput::Bytes`) and the
//! run ends with `RATIO` lines: a stage's throughput over its limit measured in the same run.
//!
//! `cargo bench -p granary-benches --bench data_path --profile dev`

use std::hint::black_box;

use aes::cipher::{KeyIvInit, StreamCipher};
use criterion::{Criterion, Throughput, criterion_group};
use granary_benches::{ratio, ratio_after};
use granary_client::{
    Dataset, ErasureParams, PackOptions, ReadStats, Source,
    crypto::{FileCipher, Sealer},
    erasure::Coder,
    ids::{ContentHash, DatasetKey},
    pack,
    sample::{self, SampleSpec},
    store::dir::DirStore,
};

const MB: usize = 1 << 20;

fn input(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    sample::fill(&mut v, seed);
    v
}

type Aes256Ctr = ctr::Ctr64BE<aes::Aes256>;

fn chacha(buf: &mut [u8]) {
    use chacha20::cipher::{KeyIvInit as _, StreamCipher as _};
    let mut c = chacha20::ChaCha20::new(&[7u8; 32].into(), &[0u8; 12].into());
    c.apply_keystream(buf);
}

/// Seals a buffer the way the pack pipeline does (our file cipher).
fn seal(data: &[u8]) -> usize {
    let cipher = FileCipher::new(
        Some(&DatasetKey::from_bytes([3; 32])),
        &ContentHash([1; 32]),
    );
    let mut s = Sealer::new(cipher);
    let mut n = 0;
    s.push(data, &mut |b| {
        n += b.len();
        true
    });
    s.finish(&mut |b| {
        n += b.len();
        true
    });
    n
}

fn aes_ctr(buf: &mut [u8]) {
    let mut c = Aes256Ctr::new(&[7u8; 32].into(), &[0u8; 16].into());
    c.apply_keystream(buf);
}

fn ring_gcm_chunks(key: &ring::aead::LessSafeKey, buf: &mut [u8], tags: &mut Vec<ring::aead::Tag>) {
    tags.clear();
    for (i, chunk) in buf.chunks_mut(64 * 1024).enumerate() {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let nonce = ring::aead::Nonce::assume_unique_for_key(n);
        if let Ok(tag) = key.seal_in_place_separate_tag(nonce, ring::aead::Aad::empty(), chunk) {
            tags.push(tag);
        }
    }
}

fn micro(c: &mut Criterion) {
    let data = input(16 * MB, 1);
    let mut g = c.benchmark_group("primitives");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    let mut dst = vec![0u8; data.len()];
    g.bench_function("memcpy", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&data)))
    });
    g.bench_function("blake3", |b| b.iter(|| blake3::hash(black_box(&data))));
    let mut buf = data.clone();
    g.bench_function("aes256-gcm-chunks", |b| b.iter(|| seal(black_box(&buf))));
    g.bench_function("chacha20", |b| b.iter(|| chacha(black_box(&mut buf))));
    g.bench_function("aes256-ctr", |b| b.iter(|| aes_ctr(black_box(&mut buf))));
    for p in [ErasureParams::DEVNET, ErasureParams::PUBLIC] {
        let coder = Coder::new(p).unwrap();
        let mut set = granary_client::erasure::ShardSet::default();
        g.bench_function(format!("rs-encode-{p}"), |b| {
            b.iter(|| coder.encode_into(black_box(&data), &mut set).unwrap())
        });
    }
    g.finish();
}

/// RS throughput in data bytes/s for both crates, encode and reconstruct of m lost data shards.
fn rs_ratios(data: &[u8]) {
    use reed_solomon_erasure::galois_8::ReedSolomon;
    for p in [ErasureParams::DEVNET, ErasureParams::PUBLIC] {
        let (k, m) = (p.data as usize, p.parity as usize);
        let coder = Coder::new(p).unwrap();
        let set = coder.encode(data).unwrap();
        let sl = set.shard_len;
        let n = data.len() as u64;
        let rse = ReedSolomon::new(k, m).unwrap();
        let mut buf = set.buf.clone();
        let erasure_encode = || {
            let (d, par) = buf.split_at_mut(sl * k);
            let d: Vec<&[u8]> = d.chunks(sl).collect();
            let mut par: Vec<&mut [u8]> = par.chunks_mut(sl).collect();
            rse.encode_sep(&d, &mut par).unwrap();
        };
        let mut out = granary_client::erasure::ShardSet::default();
        let simd_encode = || coder.encode_into(data, &mut out).unwrap();
        ratio(
            &format!("rs-encode {p}: reed-solomon-simd (ours) vs reed-solomon-erasure"),
            n,
            simd_encode,
            "reed-solomon-erasure",
            erasure_encode,
        );
        // Each crate reconstructs m lost data shards from its own parity.
        let mut ebuf = set.buf[..sl * k].to_vec();
        ebuf.resize(sl * (k + m), 0);
        {
            let (d, par) = ebuf.split_at_mut(sl * k);
            let d: Vec<&[u8]> = d.chunks(sl).collect();
            let mut par: Vec<&mut [u8]> = par.chunks_mut(sl).collect();
            rse.encode_sep(&d, &mut par).unwrap();
        }
        let e_shards: Vec<Vec<u8>> = ebuf.chunks(sl).map(|c| c.to_vec()).collect();
        let s_shards: Vec<Vec<u8>> = set.shards().map(|c| c.to_vec()).collect();
        let erasure_rebuild = || {
            let mut v: Vec<Option<Vec<u8>>> = e_shards.iter().cloned().map(Some).collect();
            for s in v.iter_mut().take(m) {
                *s = None;
            }
            rse.reconstruct_data(&mut v).unwrap();
            black_box(v);
        };
        let simd_rebuild = || {
            let mut v: Vec<Option<Vec<u8>>> = s_shards.iter().cloned().map(Some).collect();
            for s in v.iter_mut().take(m) {
                *s = None;
            }
            coder.reconstruct_data(&mut v).unwrap();
            black_box(v);
        };
        ratio(
            &format!(
                "rs-reconstruct {p} ({m} data shards lost): reed-solomon-simd (ours) vs reed-solomon-erasure"
            ),
            n,
            simd_rebuild,
            "reed-solomon-erasure",
            erasure_rebuild,
        );
    }
}

fn primitive_ratios() {
    let data = input(16 * MB, 2);
    let n = data.len() as u64;
    let mut dst = vec![0u8; data.len()];
    let mut buf = data.clone();
    ratio(
        "blake3 vs memcpy",
        n,
        || {
            black_box(blake3::hash(&data));
        },
        "memcpy",
        || dst.copy_from_slice(black_box(&data)),
    );
    ratio(
        "chacha20 (RustCrypto) vs blake3",
        n,
        || chacha(&mut buf),
        "blake3",
        || {
            black_box(blake3::hash(&data));
        },
    );
    ratio(
        "file cipher: aes256-gcm 64 KiB chunks (ring, ours) vs blake3",
        n,
        || {
            black_box(seal(&data));
        },
        "blake3",
        || {
            black_box(blake3::hash(&data));
        },
    );
    let mut buf2 = data.clone();
    ratio(
        "aes256-ctr (RustCrypto) vs blake3",
        n,
        || aes_ctr(&mut buf2),
        "blake3",
        || {
            black_box(blake3::hash(&data));
        },
    );
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &[9u8; 32]).unwrap(),
    );
    let mut buf3 = data.clone();
    let mut tags = Vec::new();
    ratio(
        "aes256-gcm (ring, 64 KiB chunks) vs blake3",
        n,
        || ring_gcm_chunks(&key, &mut buf3, &mut tags),
        "blake3",
        || {
            black_box(blake3::hash(&data));
        },
    );
    rs_ratios(&data);
    outboard_ratios(&data);
}

/// Shard outboards (2 MiB shards): built in place from memory, and through `bao-tree`'s
/// `io::Read` interface (which copies each 16 KiB block), against raw BLAKE3 of the same bytes.
fn outboard_ratios(data: &[u8]) {
    use bao_tree::io::{outboard::PreOrderOutboard, sync::CreateOutboard};
    use granary_protocol::verified;
    let shards = || data.chunks(2 * MB);
    let blake = || {
        black_box(blake3::hash(data));
    };
    ratio(
        "outboards in place (verified::outboard_of, 2 MiB shards) vs blake3",
        data.len() as u64,
        || shards().for_each(|s| drop(black_box(verified::outboard_of(s)))),
        "blake3",
        blake,
    );
    ratio(
        "outboards through io::Read (bao-tree create_sized, 2 MiB shards) vs blake3",
        data.len() as u64,
        || {
            shards().for_each(|s| {
                let ob = PreOrderOutboard::<Vec<u8>>::create_sized(
                    s,
                    s.len() as u64,
                    verified::BLOCK_SIZE,
                );
                drop(black_box(ob.unwrap()));
            })
        },
        "blake3",
        blake,
    );
}

/// User and system CPU seconds of this process so far (Linux), else zeros.
fn cpu_times() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    (tick(11), tick(12))
}

/// Runs `f` `runs` times and prints CPU (user, system) and wall seconds per GB of `bytes`,
/// best run: where the pipeline's time goes, and how much of it is the kernel's.
fn cpu_profile(name: &str, bytes: u64, runs: usize, mut setup: impl FnMut(), mut f: impl FnMut()) {
    let gb = bytes as f64 / 1e9;
    let mut best: Option<(f64, f64, f64)> = None;
    for _ in 0..runs {
        setup();
        let (u0, s0) = cpu_times();
        let t = std::time::Instant::now();
        f();
        let w = t.elapsed().as_secs_f64();
        let (u1, s1) = cpu_times();
        let r = ((u1 - u0) / gb, (s1 - s0) / gb, w / gb);
        if best.is_none_or(|b| r.2 < b.2) {
            best = Some(r);
        }
    }
    if let Some((u, s, w)) = best {
        println!(
            "CPU {name}: user {u:.2} + system {s:.2} s/GB on {:.2} s/GB wall ({:.1} cores busy)",
            w,
            (u + s) / w
        );
    }
}

/// What the page cache costs on this machine: writing, reading and deleting 1 GiB of 1 MiB
/// files in the same directory the pipeline uses.
fn page_cache_floor(base: &std::path::Path) {
    let dir = base.join("floor");
    let buf = input(MB, 9);
    let mut rb = vec![0u8; MB];
    for round in 0..2 {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (u0, s0) = cpu_times();
        for i in 0..1024 {
            std::fs::write(dir.join(format!("f{i}")), &buf).unwrap();
        }
        let (u1, s1) = cpu_times();
        for i in 0..1024 {
            use std::io::Read;
            std::fs::File::open(dir.join(format!("f{i}")))
                .unwrap()
                .read_exact(&mut rb)
                .unwrap();
        }
        let (u2, s2) = cpu_times();
        std::fs::remove_dir_all(&dir).unwrap();
        let (u3, s3) = cpu_times();
        if round == 1 {
            let gib = (1u64 << 30) as f64 / 1e9;
            println!(
                "CPU page cache, 1 GiB in 1 MiB files: write {:.2}, read {:.2}, delete {:.2} s/GB (user + system)",
                (u1 - u0 + s1 - s0) / gib,
                (u2 - u1 + s2 - s1) / gib,
                (u3 - u2 + s3 - s2) / gib
            );
        }
    }
}

/// The whole pack pipeline (walk, read, hash, encrypt, RS, outboards, write to tmpfs) and the
/// healthy reassembly, against raw single-core BLAKE3 of the same bytes.
fn pipeline_ratios() {
    let only = std::env::var("DATA_PATH_ONLY");
    let only_pack = only.as_deref() == Ok("pack");
    // Packs once (untimed) for the data, then measures the reassembly alone.
    let only_reassembly = only.as_deref() == Ok("reassembly");
    let base = if let Ok(dir) = std::env::var("DATA_PATH_DIR") {
        tempfile::tempdir_in(dir).unwrap()
    } else if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let src = base.path().join("src");
    let (_, bytes) = sample::generate(
        &src,
        SampleSpec {
            files: 400,
            total_bytes: std::env::var("DATA_PATH_MB")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(256)
                << 20,
            seed: 7,
        },
    )
    .unwrap();
    let all = input(bytes as usize, 3);
    let blake = || {
        black_box(blake3::hash(&all));
    };
    for p in [ErasureParams::DEVNET, ErasureParams::PUBLIC] {
        let mut last = None;
        let opts = PackOptions {
            erasure: p,
            workers: std::env::var("DATA_PATH_WORKERS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            ..PackOptions::default()
        };
        let store_root = base.path().join(format!("store-{p}"));
        // Deleting the previous run's shards is not part of packing: it runs untimed.
        let clear_store = || {
            let _ = std::fs::remove_dir_all(&store_root);
        };
        let mut pack_once = || {
            let store = DirStore::open(&store_root, false).unwrap();
            last = Some(
                pack(Source::Path(src.clone()), &store, &opts)
                    .unwrap()
                    .capability,
            );
        };
        if only_reassembly {
            clear_store();
            pack_once();
        } else {
            ratio_after(
                &format!("pack pipeline {p} vs raw blake3 (1 core)"),
                bytes,
                clear_store,
                &mut pack_once,
                "blake3",
                blake,
            );
        }
        if p == ErasureParams::DEVNET && !only_reassembly {
            cpu_profile(
                &format!("pack pipeline {p}"),
                bytes,
                5,
                clear_store,
                &mut pack_once,
            );
        }
        if only_pack {
            continue;
        }
        let store = DirStore::open(&store_root, false).unwrap();
        let cap = last.clone().unwrap();
        let out = base.path().join("out");
        let clear_out = || {
            let _ = std::fs::remove_dir_all(&out);
        };
        let mut unpack_once = || {
            let ds = Dataset::open(&cap, &store).unwrap();
            ds.extract(&store, &out, None, &mut ReadStats::default())
                .unwrap();
        };
        ratio_after(
            &format!("reassembly {p} (healthy) vs raw blake3 (1 core)"),
            bytes,
            clear_out,
            &mut unpack_once,
            "blake3",
            blake,
        );
        if p == ErasureParams::DEVNET {
            cpu_profile(
                &format!("reassembly {p}"),
                bytes,
                5,
                clear_out,
                &mut unpack_once,
            );
        }
    }
    if only_pack || only_reassembly {
        return;
    }
    page_cache_floor(base.path());
    // Stage sum for 4+2: hashing twice-equivalent work is bounded by these stages.
    let coder = Coder::new(ErasureParams::DEVNET).unwrap();
    let mut set = granary_client::erasure::ShardSet::default();
    let stages = || {
        black_box(blake3::hash(&all));
        black_box(seal(&all));
        for seg in all.chunks(4 * MB) {
            coder.encode_into(seg, &mut set).unwrap();
            for s in set.shards() {
                black_box(granary_protocol::verified::outboard_of(s));
            }
        }
    };
    ratio(
        "sum of stages 4+2 (hash, encrypt, RS, outboards; 1 thread) vs raw blake3",
        bytes,
        stages,
        "blake3",
        blake,
    );
}

criterion_group!(benches, micro);

fn main() {
    // `DATA_PATH_ONLY=pipeline` runs just the pipeline ratios, `DATA_PATH_ONLY=pack` (or
    // `reassembly`) just that pipeline (for quick iterations and profiles); `DATA_PATH_DIR` sets
    // where they write.
    if std::env::var("DATA_PATH_ONLY").is_err() {
        benches();
        primitive_ratios();
    }
    pipeline_ratios();
    Criterion::default().configure_from_args().final_summary();
}
