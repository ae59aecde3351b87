//! Transport: single-node QUIC shard transfer through the Granary protocol vs a raw quinn
//! loopback transfer of the same bytes, measured in the same run, same process, same transport
//! settings and TLS identities. Prints `RATIO` lines (target ≥ 0.6).
//!
//! `cargo bench -p granary-benches --bench transport --profile dev -- --quick`
//!
//! - fetch: `NodeClient::fetch_shard` (frame, bao-encoded body, client-side verification against
//!   the shard id) vs the raw server writing the same bytes on a stream.
//! - store: `NodeClient::store_shard` (signed request, node hashes + builds the outboard, fsyncs
//!   data, outboard, directory and the RocksDB batch) vs a raw upload the server reads to the end
//!   and acknowledges. Stores delete the shard afterwards (outside the timed part where possible).

use granary_client::net;

/// Reference tag of the benchmark's stores.
const TAG: [u8; 32] = [0x42; 32];

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use granary_protocol::{SecretKey, tls};
use tokio::runtime::Runtime;

const SHARD: usize = 4 << 20;

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}

/// A raw quinn server with the same TLS and window settings as the node: `b'u'` + bytes →
/// read to end, ack one byte; `b'w'` + bytes → the same, but first write the bytes to a file in
/// `dir`, fsync it, rename it and fsync the directory (what durability costs at minimum);
/// `b'd'` → write `SHARD` bytes.
fn raw_server(
    rt: &Runtime,
    payload: Bytes,
    dir: std::path::PathBuf,
) -> (SocketAddr, granary_protocol::NodeId) {
    let key = SecretKey::generate();
    let id = key.public();
    let _guard = rt.enter();
    let tls_id = tls::TlsIdentity::new(&key).unwrap();
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls::server_config(&tls_id).unwrap())
            .unwrap();
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window((16u32 << 20).into())
        .receive_window((64u32 << 20).into())
        .send_window(64 << 20);
    cfg.transport_config(Arc::new(t));
    // The same socket set-up as the node's (enlarged UDP buffers), so the baseline is fair.
    let socket = granary_protocol::udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let ep = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(cfg),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    let addr = ep.local_addr().unwrap();
    rt.spawn(async move {
        while let Some(inc) = ep.accept().await {
            let payload = payload.clone();
            let dir = dir.clone();
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let payload = payload.clone();
                    let dir = dir.clone();
                    tokio::spawn(async move {
                        let mut kind = [0u8];
                        if recv.read_exact(&mut kind).await.is_err() {
                            return;
                        }
                        if kind[0] == b'u' {
                            let _ = recv.read_to_end(64 << 20).await;
                            let _ = send.write_all(b"k").await;
                        } else if kind[0] == b'w' {
                            let data = recv.read_to_end(64 << 20).await.unwrap();
                            tokio::task::spawn_blocking(move || durable_write(&dir, &data))
                                .await
                                .unwrap();
                            let _ = send.write_all(b"k").await;
                        } else {
                            let _ = send.write_chunk(payload).await;
                        }
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    });
                }
            });
        }
    });
    (addr, id)
}

fn durable_write(dir: &std::path::Path, data: &[u8]) {
    use std::io::Write;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{n}.tmp"));
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(data).unwrap();
    f.sync_data().unwrap();
    let dest = dir.join(format!("{n}"));
    std::fs::rename(&tmp, &dest).unwrap();
    std::fs::File::open(dir).unwrap().sync_all().unwrap();
    std::fs::remove_file(dest).unwrap();
}

async fn raw_upload(conn: &quinn::Connection, data: Bytes) {
    raw_upload_kind(conn, data, b"u").await
}

async fn raw_upload_kind(conn: &quinn::Connection, data: Bytes, kind: &[u8]) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(kind).await.unwrap();
    send.write_chunk(data).await.unwrap();
    send.finish().unwrap();
    recv.read_to_end(16).await.unwrap();
}

async fn raw_download(conn: &quinn::Connection) -> Vec<u8> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"d").await.unwrap();
    send.finish().unwrap();
    recv.read_to_end(64 << 20).await.unwrap()
}

struct Setup {
    rt: Runtime,
    _dir: tempfile::TempDir,
    _node: granary_node::RunningNode,
    client: net::NodeClient,
    raw: quinn::Connection,
    owner: SecretKey,
    shard: Bytes,
    id: blake3::Hash,
}

/// A node and a raw server with their data under a fresh directory in `base` (the system's
/// temporary directory if `None`).
fn setup(base: Option<&std::path::Path>) -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = match base {
        Some(b) => tempfile::tempdir_in(b).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let cfg = granary_node::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        capacity: 1 << 40,
        owner_quota: 1 << 40,
        ..Default::default()
    };
    granary_node::init(dir.path(), &cfg).unwrap();
    let node = rt.block_on(granary_node::start(dir.path())).unwrap();
    let owner = SecretKey::generate();
    let shard = Bytes::from(random(SHARD, 1));
    let id = blake3::hash(&shard);
    let raw_dir = dir.path().join("raw");
    std::fs::create_dir_all(&raw_dir).unwrap();
    let (raw_addr, raw_id) = raw_server(&rt, shard.clone(), raw_dir);
    let (client, raw) = rt.block_on(async {
        let ep = net::client_endpoint(&owner).unwrap();
        let client = net::NodeClient::connect(&ep, node.local_addr(), node.node_id())
            .await
            .unwrap();
        let raw = ep
            .connect(raw_addr, &tls::server_name(&raw_id))
            .unwrap()
            .await
            .unwrap();
        client
            .store_shard(&owner, TAG, id, shard.clone())
            .await
            .unwrap();
        (client, raw)
    });
    Setup {
        rt,
        _dir: dir,
        _node: node,
        client,
        raw,
        owner,
        shard,
        id,
    }
}

fn transport(c: &mut Criterion) {
    let s = setup(None);
    let mut g = c.benchmark_group("transport");
    g.throughput(Throughput::Bytes(SHARD as u64));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));

    g.bench_function("fetch_shard_4MiB", |b| {
        b.iter(|| s.rt.block_on(s.client.fetch_shard(s.id)).unwrap())
    });
    g.bench_function("raw_quinn_download_4MiB", |b| {
        b.iter(|| s.rt.block_on(raw_download(&s.raw)))
    });

    // Each store needs a shard the node does not hold: flip a counter into the first bytes.
    let mut n = 0u64;
    let mut fresh = || {
        n += 1;
        let mut v = s.shard.to_vec();
        v[..8].copy_from_slice(&n.to_le_bytes());
        let id = blake3::hash(&v);
        (id, Bytes::from(v))
    };
    g.bench_function("store_shard_4MiB", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (id, data) = fresh();
                let t = std::time::Instant::now();
                s.rt.block_on(s.client.store_shard(&s.owner, TAG, id, data))
                    .unwrap();
                total += t.elapsed();
                s.rt.block_on(s.client.delete_shards(&s.owner, TAG, &[id]))
                    .unwrap();
            }
            total
        })
    });
    g.bench_function("raw_quinn_upload_4MiB", |b| {
        b.iter(|| s.rt.block_on(raw_upload(&s.raw, s.shard.clone())))
    });
    g.finish();

    // Ratios, interleaved in one run.
    granary_benches::ratio(
        "transport fetch_shard 4 MiB (verified) / raw quinn download [target >= 0.6]",
        SHARD as u64,
        || {
            s.rt.block_on(s.client.fetch_shard(s.id)).unwrap();
        },
        "raw quinn",
        || {
            s.rt.block_on(raw_download(&s.raw));
        },
    );
    store_ratios(&s, "", &mut fresh);
    // The same node with its data on tmpfs, where fsync costs nothing: what the protocol,
    // the verification and the index cost on top of the raw transfer.
    if std::path::Path::new("/dev/shm").is_dir() {
        let t = setup(Some(std::path::Path::new("/dev/shm")));
        store_ratios(&t, " (node on tmpfs)", &mut fresh);
    }
}

/// The store ratios against `s`'s node; each store sends a shard the node does not hold yet
/// (made by `fresh`, untimed), and deletes run untimed between stores.
fn store_ratios(s: &Setup, suffix: &str, fresh: &mut impl FnMut() -> (blake3::Hash, Bytes)) {
    let next = std::cell::RefCell::new(Vec::new());
    let stored = std::cell::RefCell::new(Vec::new());
    // Untimed: delete what earlier stores left (every 16 shards), make the next `k` shards.
    let mut prepare = |k: usize| {
        if stored.borrow().len() >= 16 {
            let old: Vec<_> = stored.borrow_mut().drain(..).collect();
            s.rt.block_on(s.client.delete_shards(&s.owner, TAG, &old))
                .unwrap();
        }
        *next.borrow_mut() = (0..k).map(|_| fresh()).collect::<Vec<_>>();
    };
    let store = || {
        let batch = std::mem::take(&mut *next.borrow_mut());
        s.rt.block_on(async {
            let calls = batch
                .iter()
                .map(|(id, data)| s.client.store_shard(&s.owner, TAG, *id, data.clone()));
            for r in futures_join_all(calls).await {
                r.unwrap();
            }
        });
        stored.borrow_mut().extend(batch.iter().map(|(id, _)| *id));
    };
    let raw_n = |k: usize, kind: &'static [u8]| {
        s.rt.block_on(async {
            let calls = (0..k).map(|_| raw_upload_kind(&s.raw, s.shard.clone(), kind));
            futures_join_all(calls).await;
        })
    };
    let prepare = std::cell::RefCell::new(&mut prepare);
    granary_benches::ratio_after(
        &format!(
            "transport store_shard 4 MiB (hash, outboard, fsync, index){suffix} / raw quinn upload [target >= 0.6]"
        ),
        SHARD as u64,
        || (prepare.borrow_mut())(1),
        store,
        "raw quinn",
        || raw_n(1, b"u"),
    );
    granary_benches::ratio_after(
        &format!(
            "transport store_shard 4 MiB{suffix} / raw quinn upload + write, fsync, rename, dir fsync"
        ),
        SHARD as u64,
        || (prepare.borrow_mut())(1),
        store,
        "raw durable",
        || raw_n(1, b"w"),
    );
    granary_benches::ratio_after(
        &format!(
            "transport 4 concurrent store_shard 4 MiB{suffix} / 4 concurrent raw quinn uploads"
        ),
        4 * SHARD as u64,
        || (prepare.borrow_mut())(4),
        store,
        "raw quinn x4",
        || raw_n(4, b"u"),
    );
}

/// Runs futures concurrently on the current task (no extra dependency).
async fn futures_join_all<F: Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("all ready")).collect()
}

criterion_group!(benches, transport);
criterion_main!(benches);
