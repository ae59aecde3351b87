//! End-to-end: a get over a node that *lies* — it answers reads with corrupted bytes — is
//! detected and routed around.
//!
//! The on-disk corruption test (`devnet.rs`) flips bytes in a node's shard files, which the node
//! itself notices (it re-verifies what it serves) and answers `NotFound`. Here the node's storage
//! is intact and the corrupt bytes come over the wire: a *lying proxy* in the test process
//! forwards every request stream to a real node and every response back, byte for byte, except
//! that it flips one byte in the middle of each `FetchRangeOk` raw body (the bao-encoded range,
//! docs/protocol.md §6). Only the client's own verification can catch that.
//!
//! Why the proxy impersonates node 0. A client pins the node id it expects in the TLS handshake,
//! and a manifest's placement hints name node ids, so a proxy with an id of its own would never be
//! asked for anything. The proxy therefore presents node 0's identity: the test reads node 0's
//! secret key from its data directory (`identity.key`) and serves TLS with it. A second client
//! config lists node 0's id at the proxy's address; reads go there exactly as they would go to
//! node 0, and the proxy relays them, over a connection of its own (with a key of its own), to
//! the real node 0. This models a node whose operator serves bad bytes — possible only because
//! the operator holds the node's key, as the test does.
//!
//! The scenario, all with real processes and sockets (no Granary code is mocked):
//! 1. a devnet of six `granary-node` processes; `granary put` of ~20 MB in 24 files, in 64 KiB
//!    shards (k = 4, m = 2: each segment has one shard on every node), with the real config;
//! 2. control: `granary get` through the proxy while it tells the truth — byte-exact, bodies went
//!    through the proxy, no shard failure (so the failures in step 3 are the lies' doing);
//! 3. `granary get` through the proxy while it lies — byte-exact, the proxy corrupted bodies of
//!    the dataset's shards, and the client counted shard failures and rebuilt segments;
//! 4. `granary cat --range` through the lying proxy returns exact slices, with lies about the
//!    dataset's shards told (and survived) during those reads.
//!
//! The proxy runs on a tokio runtime whose worker threads serve it in the background while the
//! test thread runs the CLI as child processes. Each child is bounded by [`TIMEOUT`], which only
//! catches hangs; nothing asserts on wall time and nothing sleeps to synchronise.

use std::{
    collections::HashSet,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::SeqCst},
    },
    thread,
    time::Duration,
};

use granary_client::{
    Dataset,
    config::{self, ClientConfig},
    devnet,
    store::net::NetStore,
};
use granary_protocol::{
    Message, NodeAddr, SecretKey,
    frame::{FrameHeader, HEADER_LEN, MAX_FRAME},
    tls,
};
use quinn::{Connection, Endpoint, Incoming, RecvStream, SendStream};

mod common;

use common::{TIMEOUT, cli_bin, node_bin, run_with_timeout};

/// Nodes in the devnet; with k + m = 6, every segment has one shard on each.
const NODES: usize = 6;
/// The devnet node the proxy impersonates.
const VICTIM: usize = 0;
/// Small shards, so that ~20 MB is ~80 segments and the liar holds a shard of each.
const SHARD_SIZE: &str = "65536";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Runs `granary args… --config config`, which must succeed; its stdout.
fn granary(config: &Path, args: &[&str]) -> Vec<u8> {
    let mut cmd = Command::new(cli_bin());
    cmd.env_remove("GRANARY_CONFIG")
        .env_remove("GRANARY_STORE")
        .args(args)
        .arg("--config")
        .arg(config);
    let out = run_with_timeout(cmd, TIMEOUT);
    assert!(
        out.status.success(),
        "granary {} --config {}: {}\nstdout: {}\nstderr: {}",
        args.join(" "),
        config.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs a `--json` command that prints one object; that object.
fn granary_json(config: &Path, args: &[&str]) -> serde_json::Value {
    let out = granary(config, args);
    let text = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one JSON object from {args:?}: {text}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("bad JSON {:?}: {e}", lines[0]))
}

/// `put --json` of `path` in small shards; the capability.
fn put(config: &Path, path: &Path) -> String {
    let p = path.to_str().expect("utf-8 path");
    let report = granary_json(
        config,
        &["put", p, "--json", "-q", "--shard-size", SHARD_SIZE],
    );
    report["capability"]
        .as_str()
        .expect("capability field")
        .to_string()
}

/// `get --json` of `cap` into `dest`; its report (`shard_reads`, `shard_failures`, `rebuilds`,
/// `raced`, …).
fn get(config: &Path, cap: &str, dest: &Path) -> serde_json::Value {
    let d = dest.to_str().expect("utf-8 path");
    granary_json(config, &["get", cap, d, "--json", "-q"])
}

/// A counter of a `get --json` report.
fn count(report: &serde_json::Value, name: &str) -> u64 {
    report[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {report}"))
}

// ---------------------------------------------------------------------------------------------
// Devnet
// ---------------------------------------------------------------------------------------------

/// A devnet of real `granary-node` processes; stopped on drop, even when the test panics.
#[derive(Debug)]
struct Devnet {
    dir: PathBuf,
    net: devnet::Devnet,
}

impl Devnet {
    /// Starts `n` nodes under `dir` ([`devnet::up`]), which writes `dir/client.toml`.
    fn up(dir: &Path, n: usize) -> Self {
        let net = devnet::up(dir, n, node_bin()).unwrap_or_else(|e| panic!("devnet up: {e}"));
        Self {
            dir: dir.to_path_buf(),
            net,
        }
    }

    /// The client config listing the real nodes.
    fn config(&self) -> PathBuf {
        self.dir.join("client.toml")
    }

    /// Node `i`'s `<id>@<addr>`.
    fn addr(&self, i: usize) -> NodeAddr {
        self.net.nodes[i].addr.parse().expect("node address")
    }

    /// Node `i`'s secret identity key (`<dir>/identity.key`, as `granary-node init` writes it).
    fn secret_key(&self, i: usize) -> SecretKey {
        let path = self.net.nodes[i].dir.join("identity.key");
        SecretKey::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Writes `dir/<name>`: the client config with node `i` listed at `addr` instead of its own
    /// address (same id, same client key); its path.
    fn config_with_node_at(&self, name: &str, i: usize, addr: SocketAddr) -> PathBuf {
        let nodes = (0..self.net.nodes.len())
            .map(|j| {
                let mut a = self.addr(j);
                if j == i {
                    a.addr = addr;
                }
                a.to_string()
            })
            .collect();
        let path = self.dir.join(name);
        config::save(
            &path,
            &ClientConfig {
                key_file: PathBuf::from("client.key"),
                nodes,
            },
        )
        .expect("writing the client config");
        path
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        if thread::panicking() {
            let log = self.net.nodes[VICTIM].dir.join("node.log");
            if let Ok(text) = fs::read_to_string(&log) {
                eprintln!("--- {} (last lines) ---", log.display());
                let lines: Vec<&str> = text.lines().collect();
                for l in &lines[lines.len().saturating_sub(20)..] {
                    eprintln!("{l}");
                }
            }
        }
        if let Err(e) = devnet::down(&self.dir) {
            eprintln!("devnet down: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The lying proxy
// ---------------------------------------------------------------------------------------------

/// What the proxy did, shared by its tasks and the test.
#[derive(Debug, Default)]
struct Ledger {
    /// Whether `FetchRangeOk` bodies are corrupted; otherwise everything passes unchanged.
    lying: AtomicBool,
    /// `FetchRangeOk` bodies relayed, corrupted or not.
    bodies: AtomicU64,
    /// The shards whose bytes were corrupted, one entry per corrupted body, in order. Recorded
    /// before the body is sent, so a client that has exited has seen no lie missing here.
    lies: Mutex<Vec<[u8; 32]>>,
}

impl Ledger {
    /// Corrupts `body` (the raw body of a `FetchRangeOk` for `shard`) if lying: flips one byte in
    /// its middle. Any flipped byte of a bao-encoded range — data or proof hash — fails the
    /// reader's verification.
    fn tamper(&self, shard: [u8; 32], body: &mut [u8]) {
        self.bodies.fetch_add(1, SeqCst);
        if !self.lying.load(SeqCst) || body.is_empty() {
            return;
        }
        let mid = body.len() / 2;
        body[mid] ^= 0x5a;
        self.lies.lock().expect("ledger lock").push(shard);
    }
}

/// A QUIC server on loopback that presents a node's identity and relays every request to the
/// real node, corrupting fetched bytes while told to lie. Stopped on drop.
#[derive(Debug)]
struct LyingProxy {
    /// Runs the proxy; its worker threads serve in the background. Dropping it ends every task
    /// (the accept loop, the relays) and with them the endpoints.
    _rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    ledger: Arc<Ledger>,
}

impl LyingProxy {
    /// Serves as `identity` (the impersonated node's key) on a fresh loopback port, relaying to
    /// `upstream` (that node, dialled with a key of the proxy's own). Starts lying.
    fn start(identity: &SecretKey, upstream: NodeAddr) -> Self {
        assert_eq!(identity.public(), upstream.id, "the key is the node's");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lying-proxy")
            .enable_all()
            .build()
            .expect("proxy runtime");
        let ledger = Arc::new(Ledger::default());
        ledger.lying.store(true, SeqCst);
        let (server, dialer) = {
            let _guard = rt.enter();
            let dialer = granary_client::net::client_endpoint(&SecretKey::generate())
                .expect("proxy's dialing endpoint");
            (server_endpoint(identity), dialer)
        };
        let addr = server.local_addr().expect("proxy address");
        rt.spawn(serve(server, dialer, upstream, Arc::clone(&ledger)));
        Self {
            _rt: rt,
            addr,
            ledger,
        }
    }

    /// Whether it corrupts fetched bytes from now on.
    fn set_lying(&self, lying: bool) {
        self.ledger.lying.store(lying, SeqCst);
    }

    /// `FetchRangeOk` bodies relayed so far.
    fn bodies(&self) -> u64 {
        self.ledger.bodies.load(SeqCst)
    }

    /// The shards it lied about so far, one entry per corrupted body.
    fn lies(&self) -> Vec<[u8; 32]> {
        self.ledger.lies.lock().expect("ledger lock").clone()
    }
}

/// The proxy's listening endpoint: TLS as `identity`, transport limits like a node's.
fn server_endpoint(identity: &SecretKey) -> Endpoint {
    let tls_id = tls::TlsIdentity::new(identity).expect("TLS identity");
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(
        tls::server_config(&tls_id).expect("TLS server config"),
    )
    .expect("QUIC server crypto");
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(64u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .max_idle_timeout(Some(
            Duration::from_secs(30)
                .try_into()
                .expect("idle timeout fits"),
        ))
        .stream_receive_window((16u32 << 20).into())
        .receive_window((64u32 << 20).into())
        .send_window(64 << 20);
    cfg.transport_config(Arc::new(t));
    cfg.migration(false);
    let socket = granary_protocol::udp::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("binding the proxy's socket");
    Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(cfg),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .expect("proxy endpoint")
}

/// Accepts client connections for as long as the runtime runs.
async fn serve(server: Endpoint, dialer: Endpoint, upstream: NodeAddr, ledger: Arc<Ledger>) {
    while let Some(inc) = server.accept().await {
        tokio::spawn(relay_connection(
            inc,
            dialer.clone(),
            upstream,
            Arc::clone(&ledger),
        ));
    }
}

/// One client connection: its own connection to the real node, then one relay per stream.
async fn relay_connection(
    inc: Incoming,
    dialer: Endpoint,
    upstream: NodeAddr,
    ledger: Arc<Ledger>,
) {
    let Ok(conn) = inc.await else { return };
    let up = match dial(&dialer, upstream).await {
        Ok(up) => up,
        Err(e) => {
            eprintln!("lying proxy: dialling {upstream}: {e}");
            conn.close(1u32.into(), b"upstream unreachable");
            return;
        }
    };
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(relay_stream(up.clone(), send, recv, Arc::clone(&ledger)));
    }
    up.close(0u32.into(), b"client left");
}

/// Connects to `node`, pinning its id as a client does.
async fn dial(dialer: &Endpoint, node: NodeAddr) -> Result<Connection, BoxError> {
    Ok(dialer
        .connect(node.addr, &tls::server_name(&node.id))?
        .await?)
}

/// One exchange. The request passes through unchanged (its frame parsed on the way, to learn
/// which shard a `FetchRange` asks for); so does the response, except a `FetchRangeOk` body while
/// lying. A stream that fails on one side is reset on the other, as a node would.
async fn relay_stream(
    up: Connection,
    mut c_send: SendStream,
    mut c_recv: RecvStream,
    ledger: Arc<Ledger>,
) {
    let opened = async {
        let (frame, msg) = read_frame(&mut c_recv).await?;
        let (u_send, u_recv) = up.open_bi().await?;
        Ok::<_, BoxError>((frame, msg, u_send, u_recv))
    };
    let (frame, msg, mut u_send, mut u_recv) = match opened.await {
        Ok(x) => x,
        Err(_) => {
            let _ = c_send.reset(0u32.into());
            return;
        }
    };
    let shard = match msg {
        Message::FetchRange(r) => r.shard_id.0,
        _ => [0; 32],
    };
    let forward = async {
        u_send.write_all(&frame).await?;
        tokio::io::copy(&mut c_recv, &mut u_send).await?;
        u_send.finish()?;
        Ok::<_, BoxError>(())
    };
    let respond = relay_response(&mut u_recv, &mut c_send, shard, &ledger);
    let (forwarded, responded) = tokio::join!(forward, respond);
    if forwarded.is_err() {
        // The node stopped reading (it answered early) or the client reset: stop the client too.
        let _ = c_recv.stop(0u32.into());
        let _ = u_send.reset(0u32.into());
    }
    match responded {
        Ok(()) => {
            let _ = c_send.finish();
        }
        Err(_) => {
            let _ = c_send.reset(0u32.into());
            let _ = u_recv.stop(0u32.into());
        }
    }
}

/// Relays the node's response to the client: the frame as it came, then a `FetchRangeOk` body
/// through [`Ledger::tamper`], then whatever else follows (other raw bodies) unchanged.
async fn relay_response(
    u_recv: &mut RecvStream,
    c_send: &mut SendStream,
    shard: [u8; 32],
    ledger: &Ledger,
) -> Result<(), BoxError> {
    let (frame, msg) = read_frame(u_recv).await?;
    c_send.write_all(&frame).await?;
    if let Message::FetchRangeOk(ok) = msg {
        let mut body = vec![0u8; usize::try_from(ok.encoded_len)?];
        u_recv.read_exact(&mut body).await?;
        ledger.tamper(shard, &mut body);
        c_send.write_all(&body).await?;
    }
    tokio::io::copy(u_recv, c_send).await?;
    Ok(())
}

/// Reads one frame (docs/protocol.md §3) off `recv`: its bytes exactly as received, and the
/// decoded message.
async fn read_frame(recv: &mut RecvStream) -> Result<(Vec<u8>, Message), BoxError> {
    let mut head = [0u8; HEADER_LEN];
    recv.read_exact(&mut head).await?;
    let h = FrameHeader::decode(&head, MAX_FRAME)?;
    let mut frame = head.to_vec();
    frame.resize(HEADER_LEN + h.body_len as usize, 0);
    recv.read_exact(&mut frame[HEADER_LEN..]).await?;
    let msg = Message::decode_body(h.msg_type, &frame[HEADER_LEN..])?;
    Ok((frame, msg))
}

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/// Writes 24 files of 200 kB to 1.5 MB (~20 MB) of deterministic pseudo-random bytes; their
/// names and sizes.
fn dataset(root: &Path) -> Vec<(String, usize)> {
    fs::create_dir_all(root).expect("mkdir");
    (0..24)
        .map(|i| {
            let name = format!("part-{i:02}.bin");
            let size = 200_000 + i * 55_000;
            let mut bytes = vec![0u8; size];
            granary_client::sample::fill(&mut bytes, 1000 + i as u64);
            fs::write(root.join(&name), &bytes).expect("write");
            (name, size)
        })
        .collect()
}

/// Asserts that `got` holds exactly the files of `expected` (a flat directory), byte for byte.
fn assert_same_files(expected: &Path, got: &Path) {
    let names = |d: &Path| {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        v.sort();
        v
    };
    let files = names(expected);
    assert_eq!(files, names(got), "same files in {}", got.display());
    for f in &files {
        let same =
            fs::read(expected.join(f)).expect("read") == fs::read(got.join(f)).expect("read");
        assert!(same, "{f} differs in {}", got.display());
    }
}

/// The ids of every shard (data and parity) of `cap`'s data segments — not of its manifest's
/// segments or its root record — read from its manifest through the real nodes.
fn content_shards(config: &Path, cap: &str) -> HashSet<[u8; 32]> {
    let client = config::load(config).expect("client config");
    let store = NetStore::new(client.nodes, client.key).expect("store");
    let ds = Dataset::open(&cap.parse().expect("capability"), &store).expect("open");
    ds.manifest()
        .segments
        .iter()
        .flat_map(|s| s.shards.iter().map(|id| id.0))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

/// A get over a node that serves corrupted bytes is byte-exact: the client detects the lies
/// (shard failures) and routes around them (segments rebuilt from the other nodes' shards); a
/// range read likewise. A control run through the same proxy telling the truth has no failures,
/// so the failures are the lies' doing and the assertions cannot pass vacuously.
#[test]
fn get_routes_around_a_node_that_serves_corrupted_bytes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let files = dataset(&data);
    let net = Devnet::up(&tmp.path().join("net"), NODES);
    let cap = put(&net.config(), &data);
    let content = content_shards(&net.config(), &cap);

    let proxy = LyingProxy::start(&net.secret_key(VICTIM), net.addr(VICTIM));
    let via_liar = net.config_with_node_at("client-via-liar.toml", VICTIM, proxy.addr);

    // Control: the proxy tells the truth. Reads go through it, and nothing fails.
    proxy.set_lying(false);
    let honest = get(&via_liar, &cap, &tmp.path().join("got-honest"));
    eprintln!("get through the honest proxy: {honest}");
    assert_same_files(&data, &tmp.path().join("got-honest"));
    assert!(proxy.bodies() > 0, "reads went through the proxy");
    assert!(proxy.lies().is_empty(), "an honest proxy corrupts nothing");
    assert_eq!(
        count(&honest, "shard_failures"),
        0,
        "no failures without lies: {honest}"
    );

    // The proxy lies: every fetched range it relays comes back corrupted.
    proxy.set_lying(true);
    let lying = get(&via_liar, &cap, &tmp.path().join("got-lying"));
    eprintln!("get through the lying proxy: {lying}");
    assert_same_files(&data, &tmp.path().join("got-lying"));
    let lies = proxy.lies();
    let about_content = lies.iter().filter(|s| content.contains(*s)).count();
    eprintln!(
        "{} bodies corrupted, {about_content} of them of the dataset's data segments",
        lies.len()
    );
    assert!(!lies.is_empty(), "the proxy lied");
    assert!(
        count(&lying, "shard_failures") > 0,
        "the corrupted shards were detected: {lying}"
    );
    assert!(
        count(&lying, "rebuilds") > 0,
        "and routed around (segments rebuilt from other shards): {lying}"
    );
    // A node caught lying is not asked again during the job: a few lies (reads already in
    // flight when the first was caught), not one per segment it holds.
    assert!(
        lies.len() <= 8 && (lies.len() as u64) < count(&lying, "rebuilds"),
        "{} lies for {} rebuilds: the liar kept being asked",
        lies.len(),
        count(&lying, "rebuilds")
    );

    // Range reads through the liar: the middle 60 % of the four largest files (~3 segments
    // each, so it holds a data shard of some) comes back exact.
    let told = proxy.lies().len();
    for (name, size) in files.iter().rev().take(4) {
        let (a, z) = (size / 5, size - size / 5);
        let range = format!("{a}-{z}");
        let got = granary(&via_liar, &["cat", &cap, name, "--range", &range]);
        let want = fs::read(data.join(name)).expect("read");
        assert!(got == want[a..z], "cat {name} --range {range}: wrong bytes");
    }
    // Each `cat` is a new process that meets the liar afresh (its first read there, of the
    // manifest or of a data shard, is a lie).
    let cat_lies = proxy.lies().len() - told;
    eprintln!("cat --range: {cat_lies} lies routed around");
    assert!(cat_lies > 0, "the range reads met lies");
}
