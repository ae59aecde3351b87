//! End-to-end tests: the real `granary` CLI against real `granary-node` processes on loopback.
//!
//! Each test starts its own devnet (`granary devnet up`) in its own temporary directory and
//! stops it in a drop guard (`granary devnet down`, then SIGKILL of any node still alive), so
//! a failing test leaves no processes behind. Every child process is bounded by a timeout
//! ([`TIMEOUT`]) after which it is killed and the test fails; nothing asserts on wall time.
//!
//! The node binary is taken from next to the CLI binary (built on demand if missing) and
//! passed to the CLI as `$GRANARY_NODE_BIN`.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

mod common;

use common::{
    TIMEOUT, cli_bin, drain, node_bin, run_with_stdin, run_with_timeout, wait_with_timeout,
    workspace_bin,
};

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

fn sigkill(pid: u32) {
    // SAFETY: plain kill(2) on a node process this test started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

/// A `granary` command with the node binary set.
fn granary() -> Command {
    let mut cmd = Command::new(cli_bin());
    cmd.env("GRANARY_NODE_BIN", node_bin())
        .env_remove("GRANARY_CONFIG")
        .env_remove("GRANARY_STORE");
    cmd
}

/// Runs `granary args… --config config`.
fn run_cli(config: &Path, args: &[&str]) -> Output {
    let mut cmd = granary();
    cmd.args(args).arg("--config").arg(config);
    run_with_timeout(cmd, TIMEOUT)
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "granary {}: {}\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command that must succeed; returns its stdout.
fn ok(config: &Path, args: &[&str]) -> Vec<u8> {
    let out = run_cli(config, args);
    assert!(out.status.success(), "{}", describe(args, &out));
    out.stdout
}

/// Runs a command that must fail with exit code `code`.
fn fails_with(config: &Path, args: &[&str], code: i32) -> Output {
    let out = run_cli(config, args);
    assert_eq!(out.status.code(), Some(code), "{}", describe(args, &out));
    out
}

// ---------------------------------------------------------------------------------------------
// Devnet guard
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Node {
    dir: PathBuf,
    pid: u32,
    addr: String,
}

/// A running devnet; stopped on drop, even when the test panics.
#[derive(Debug)]
struct Devnet {
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl Devnet {
    fn up(dir: &Path, n: usize) -> Self {
        Self::up_with(dir, n, &[])
    }

    /// `up`, passing `init_args` to every `granary-node init`.
    fn up_with(dir: &Path, n: usize, init_args: &[&str]) -> Self {
        Self::up_env(dir, n, init_args, &[], &[])
    }

    /// `up_with`, the nodes running with the environment variables `envs` too, and `flags`
    /// added to `granary devnet up`.
    fn up_env(
        dir: &Path,
        n: usize,
        init_args: &[&str],
        envs: &[(&str, &str)],
        flags: &[&str],
    ) -> Self {
        let mut cmd = granary();
        cmd.envs(envs.iter().copied());
        // The auditor has its own tests (auditor/tests); these need only the nodes.
        cmd.args([
            "devnet",
            "up",
            "--no-auditor",
            "--nodes",
            &n.to_string(),
            "--dir",
        ])
        .arg(dir);
        for a in init_args {
            cmd.arg(format!("--init-arg={a}"));
        }
        cmd.args(flags);
        let out = run_with_timeout(cmd, TIMEOUT);
        // Read devnet.toml even if `up` failed part way, so that the guard stops what started.
        let nodes = read_devnet(dir);
        let net = Self {
            dir: dir.to_path_buf(),
            nodes,
        };
        assert!(
            out.status.success(),
            "devnet up: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(net.nodes.len(), n, "devnet.toml lists every node");
        net
    }

    fn config(&self) -> PathBuf {
        self.dir.join("client.toml")
    }

    fn kill(&self, i: usize) {
        let pid = self.nodes[i].pid;
        sigkill(pid);
        // The node was re-parented to init when `devnet up` exited; wait until it is gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `granary devnet start`: brings back the killed nodes on their ports.
    fn start(&mut self) {
        let mut cmd = granary();
        cmd.args(["devnet", "start", "--dir"]).arg(&self.dir);
        let out = run_with_timeout(cmd, TIMEOUT);
        // Record the new pids even if it failed part way, so that the guard stops them.
        self.nodes = read_devnet(&self.dir);
        assert!(
            out.status.success(),
            "devnet start: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `status --json`, one object per node, in config order (exit 0 or 3, see [`status_of`]).
    fn status(&self) -> Vec<serde_json::Value> {
        self.status_code().1
    }

    /// `status --json`: its exit code and one object per node, in config order.
    fn status_code(&self) -> (i32, Vec<serde_json::Value>) {
        let mut cmd = granary();
        cmd.args(["status", "--json", "--config"])
            .arg(self.config());
        status_of(cmd)
    }

    /// Bytes stored over all nodes (the `used` of every reachable node).
    fn used(&self) -> u64 {
        self.status()
            .iter()
            .map(|s| s["used"].as_u64().unwrap_or(0))
            .sum()
    }
}

/// Runs `cmd`, a `granary status --json …`: its exit code and one object per node. The code
/// must be 0 when every node answered and 3 when any did not; anything else fails the test.
fn status_of(cmd: Command) -> (i32, Vec<serde_json::Value>) {
    let desc = format!("{cmd:?}");
    let out = run_with_timeout(cmd, TIMEOUT);
    let describe = || {
        format!(
            "{desc}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let st = parse_json_lines(&out.stdout);
    let all_up = st.iter().all(|s| s["ok"] == true);
    let code = out.status.code();
    assert!(
        code == Some(if all_up { 0 } else { 3 }) && !st.is_empty(),
        "{}",
        describe()
    );
    (code.unwrap_or_default(), st)
}

/// Stops devnets concurrently.
fn down_all(nets: Vec<Devnet>) {
    thread::scope(|s| {
        for n in nets {
            s.spawn(move || drop(n));
        }
    });
}

fn read_devnet(dir: &Path) -> Vec<Node> {
    let Ok(text) = fs::read_to_string(dir.join("devnet.toml")) else {
        return Vec::new();
    };
    let v: toml::Value = toml::from_str(&text).expect("devnet.toml parses");
    v["nodes"]
        .as_array()
        .expect("devnet.toml has [[nodes]]")
        .iter()
        .map(|n| Node {
            dir: PathBuf::from(n["dir"].as_str().expect("node dir")),
            pid: u32::try_from(n["pid"].as_integer().expect("node pid")).expect("pid fits"),
            addr: n["addr"].as_str().expect("node addr").to_string(),
        })
        .collect()
}

impl Drop for Devnet {
    fn drop(&mut self) {
        if thread::panicking() {
            for n in &self.nodes {
                if let Ok(log) = fs::read_to_string(n.dir.join("node.log")) {
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    eprintln!(
                        "--- {} node.log (last lines, newest first) ---",
                        n.dir.display()
                    );
                    for l in tail {
                        eprintln!("{l}");
                    }
                }
            }
        }
        let mut cmd = granary();
        cmd.args(["devnet", "down", "--dir"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Ok(mut child) = cmd.spawn() {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        for n in &self.nodes {
            if alive(n.pid) {
                sigkill(n.pid);
            }
        }
    }
}

fn parse_json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (the sample generator's).
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    granary_client::sample::fill(&mut v, seed);
    v
}

/// Writes a small tree (about 2.3 MB): nested dirs, an empty file, an empty dir, a
/// duplicate file, text and random bytes. Returns the relative paths of its files.
fn small_dataset(root: &Path) -> Vec<String> {
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a.bin", bytes(300_000, 1)),
        ("empty.txt", Vec::new()),
        ("readme.txt", b"hello granary\n".repeat(1000)),
        ("sub/b.bin", bytes(1_500_000, 2)),
        ("sub/copy-of-a.bin", bytes(300_000, 1)),
        ("sub/deeper/c.bin", bytes(200_001, 3)),
    ];
    for (p, data) in &files {
        let path = root.join(p);
        fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        fs::write(&path, data).expect("write");
    }
    fs::create_dir_all(root.join("empty-dir")).expect("mkdir");
    files.iter().map(|(p, _)| p.to_string()).collect()
}

/// `n` files of `size` random bytes each.
fn big_dataset(root: &Path, n: usize, size: usize) {
    fs::create_dir_all(root).expect("mkdir");
    for i in 0..n {
        fs::write(
            root.join(format!("part-{i:03}.bin")),
            bytes(size, 100 + i as u64),
        )
        .expect("write");
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Item {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

/// Every entry under `root` by relative path.
fn tree(root: &Path) -> Vec<(PathBuf, Item)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let e = e.expect("dir entry");
            let ft = e.file_type().expect("file type");
            let p = e.path();
            let rel = p.strip_prefix(root).expect("under root").to_path_buf();
            if ft.is_symlink() {
                out.push((rel, Item::Link(fs::read_link(&p).expect("readlink"))));
            } else if ft.is_dir() {
                out.push((rel, Item::Dir));
                stack.push(p);
            } else {
                out.push((rel, Item::File(fs::read(&p).expect("read"))));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Asserts that two trees are identical (paths, kinds, contents), with a short message.
fn assert_same_tree(expected: &Path, got: &Path) {
    let a = tree(expected);
    let b = tree(got);
    let names = |t: &[(PathBuf, Item)]| t.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "same paths");
    for ((p, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{} differs", p.display());
    }
}

/// `put --json` of `path` with extra flags; its report.
fn put_json(config: &Path, path: &Path, extra: &[&str]) -> serde_json::Value {
    let p = path.to_str().expect("utf-8 path");
    let mut args = vec!["put", p, "--json", "-q"];
    args.extend_from_slice(extra);
    let out = ok(config, &args);
    let mut v = parse_json_lines(&out);
    assert_eq!(v.len(), 1, "put --json prints one object");
    v.remove(0)
}

/// `put` of `path` with extra flags; returns the capability.
fn put(config: &Path, path: &Path, extra: &[&str]) -> String {
    put_json(config, path, extra)["capability"]
        .as_str()
        .expect("capability field")
        .to_string()
}

/// `get` into a fresh `dest` that must then equal `expected`.
fn get_exact(config: &Path, cap: &str, dest: &Path, expected: &Path) {
    ok(config, &["get", cap, dest.to_str().expect("utf-8"), "-q"]);
    assert_same_tree(expected, dest);
}

/// A second client identity: the same nodes, its own key.
fn other_client(net: &Devnet, dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).expect("mkdir");
    let cfg = dir.join("client.toml");
    fs::copy(net.config(), &cfg).expect("copy client.toml");
    let text = fs::read_to_string(&cfg).expect("read");
    assert!(text.contains("key_file = \"client.key\""), "{text}");
    cfg
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn put_get_cat_ls_rm_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let files = small_dataset(&data);
    let net = Devnet::up(&tmp.path().join("net"), 6);
    let cfg = net.config();

    let cap = put(&cfg, &data, &[]);
    get_exact(&cfg, &cap, &tmp.path().join("got"), &data);

    // cat: whole files and byte ranges (B exclusive), including an empty file.
    for f in &files {
        let want = fs::read(data.join(f)).expect("read");
        assert_eq!(ok(&cfg, &["cat", &cap, f]), want, "cat {f}");
    }
    let b = fs::read(data.join("sub/b.bin")).expect("read");
    for (a, z) in [
        (0, 1),
        (12_345, 400_000),
        (1_048_570, 1_048_590),
        (1_499_000, 1_500_000),
    ] {
        let r = format!("{a}-{z}");
        assert_eq!(
            ok(&cfg, &["cat", &cap, "sub/b.bin", "--range", &r]),
            &b[a..z],
            "cat --range {r}"
        );
    }
    // A path that is not in the dataset: exit 4.
    fails_with(&cfg, &["cat", &cap, "no/such/file"], 4);

    // ls lists every path (files and directories).
    let listed: BTreeSet<String> = parse_json_lines(&ok(&cfg, &["ls", &cap, "--json"]))
        .iter()
        .map(|e| e["path"].as_str().expect("path").to_string())
        .collect();
    for p in files
        .iter()
        .map(String::as_str)
        .chain(["sub", "sub/deeper", "empty-dir"])
    {
        assert!(listed.contains(p), "ls lists {p}: {listed:?}");
    }
    let plain = String::from_utf8(ok(&cfg, &["ls", &cap])).expect("utf-8");
    for f in &files {
        assert!(plain.lines().any(|l| l.ends_with(f.as_str())), "ls: {f}");
    }

    // rm with another client key: refused with exit 4, nothing removed.
    let other = other_client(&net, &tmp.path().join("other"));
    fails_with(&other, &["rm", &cap], 4);
    assert!(
        tmp.path().join("other/client.key").is_file(),
        "the other client got its own key"
    );
    get_exact(&cfg, &cap, &tmp.path().join("got-after-foreign-rm"), &data);

    // rm by the owner; then the dataset cannot be got.
    let rm = parse_json_lines(&ok(&cfg, &["rm", &cap, "--json"]));
    assert_eq!(rm.len(), 1, "rm --json prints one object");
    assert!(cap.starts_with(&format!(
        "granary:{}",
        rm[0]["dataset"].as_str().expect("dataset")
    )));
    assert!(
        rm[0]["removed_references"].as_u64().expect("count") > 0,
        "{}",
        rm[0]
    );
    let gone = tmp.path().join("gone");
    let args = ["get", &cap, gone.to_str().expect("utf-8"), "-q"];
    let out = run_cli(&cfg, &args);
    assert!(
        !out.status.success(),
        "get after rm: {}",
        describe(&args, &out)
    );
}

#[test]
fn get_with_m_nodes_killed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    small_dataset(&data);
    big_dataset(&data.join("big"), 3, 1_000_000);
    let net = Devnet::up(&tmp.path().join("net"), 6);
    let cfg = net.config();

    let cap = put(&cfg, &data, &["--k", "4", "--m", "2"]);
    net.kill(1);
    net.kill(4);
    get_exact(&cfg, &cap, &tmp.path().join("got"), &data);
    let b = fs::read(data.join("sub/b.bin")).expect("read");
    assert_eq!(
        ok(&cfg, &["cat", &cap, "sub/b.bin", "--range", "1000-700000"]),
        &b[1000..700_000]
    );
}

/// The devnet nodes (indices in the client config) that hold `cap`'s root record, each asked.
fn root_holders(cfg: &Path, cap: &str) -> Vec<usize> {
    let client = granary_client::config::load(cfg).expect("client config");
    let root = granary_client::ids::ShardId(
        cap.parse::<granary_client::Capability>()
            .expect("capability")
            .id
            .0,
    );
    (0..client.nodes.len())
        .filter(|&i| {
            let one = granary_client::store::net::NetStore::new(
                vec![client.nodes[i]],
                client.key.clone(),
            )
            .expect("store");
            granary_client::store::ShardStore::has_shards(&one, &[root]).expect("has_shards")[0]
        })
        .collect()
}

/// The root record survives whatever the data survives: with m = 3 it has m + 1 = 4 copies,
/// and killing three of its holders still leaves the dataset readable.
#[test]
fn killing_m_root_record_holders_keeps_the_dataset_readable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    small_dataset(&data);
    let net = Devnet::up(&tmp.path().join("net"), 6);
    let cfg = net.config();

    let cap = put(&cfg, &data, &["--k", "2", "--m", "3"]);
    let holders = root_holders(&cfg, &cap);
    assert_eq!(holders.len(), 4, "root record copies: {holders:?}");
    for &i in &holders[..3] {
        net.kill(i);
    }
    get_exact(&cfg, &cap, &tmp.path().join("got"), &data);
}

/// Every shard data file (not outboards) under a node's `shards/` tree.
fn shard_files(node_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![node_dir.join("shards")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_none() {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn get_with_one_node_corrupted_on_disk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    small_dataset(&data);
    big_dataset(&data.join("big"), 3, 1_000_000);
    // Plain shard files must stay in place for this test: no sealing while it runs.
    let net = Devnet::up_with(&tmp.path().join("net"), 6, &["--seal-idle-secs=3600"]);
    let cfg = net.config();
    let cap = put(&cfg, &data, &[]);

    // Flip a byte in the middle of every shard file of the node holding the most shards.
    let victim = net
        .nodes
        .iter()
        .max_by_key(|n| shard_files(&n.dir).len())
        .expect("nodes");
    let shards = shard_files(&victim.dir);
    assert!(!shards.is_empty(), "node {} holds shards", victim.addr);
    for p in &shards {
        let mut b = fs::read(p).expect("read shard");
        assert!(!b.is_empty());
        let i = b.len() / 2;
        b[i] ^= 0x5a;
        fs::write(p, &b).expect("write shard");
    }

    let got = tmp.path().join("got");
    let stats = parse_json_lines(&ok(
        &cfg,
        &["get", &cap, got.to_str().expect("utf-8"), "--json", "-q"],
    ));
    assert_same_tree(&data, &got);
    // The corrupt shards were noticed (by the node or the client) and routed around.
    eprintln!("get over a corrupted node: {}", stats[0]);
    let failures = stats[0]["shard_failures"].as_u64().unwrap_or(0);
    let rebuilds = stats[0]["rebuilds"].as_u64().unwrap_or(0);
    // Which reads touch the victim depends on placement: the root record is fetched from its
    // first answering copy and the manifest is read inside `open` (not in these counters), so
    // the node's own refusal to serve rot counts as noticing too.
    let victim_log = fs::read_to_string(victim.dir.join("node.log")).unwrap_or_default();
    assert!(
        failures + rebuilds > 0 || victim_log.contains("failed verification"),
        "{}",
        stats[0]
    );
    let b = fs::read(data.join("sub/b.bin")).expect("read");
    assert_eq!(ok(&cfg, &["cat", &cap, "sub/b.bin"]), b);
}

/// Small shards, so that a put of a few tens of MB is hundreds of shards and lasts long enough
/// to be interrupted half way.
const SMALL_SHARDS: &[&str] = &["--shard-size", "65536"];

/// How an interrupted put ended.
struct Interrupted {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Bytes the nodes held when `act` ran; `None` if the put ended before they held enough.
    held_at_act: Option<u64>,
}

/// Starts `granary put DATA --json -q EXTRA…` on `net` and calls `act` with the put's process
/// once the nodes hold at least `at_least` bytes while it still runs; then waits for it.
fn put_interrupted(
    net: &Devnet,
    data: &Path,
    extra: &[&str],
    at_least: u64,
    act: impl FnOnce(&mut Child),
) -> Interrupted {
    let mut cmd = granary();
    cmd.arg("put")
        .arg(data)
        .args(["--json", "-q", "--config"])
        .arg(net.config())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn put");
    let (out, err) = drain(&mut child);
    let deadline = Instant::now() + TIMEOUT;
    let mut held_at_act = None;
    while child.try_wait().expect("try_wait").is_none() {
        let used = net.used();
        if used >= at_least && child.try_wait().expect("try_wait").is_none() {
            act(&mut child);
            held_at_act = Some(used);
            break;
        }
        assert!(Instant::now() < deadline, "put did not end in {TIMEOUT:?}");
    }
    let status = wait_with_timeout(&mut child, TIMEOUT, "put");
    Interrupted {
        status,
        stdout: out.join().expect("out"),
        stderr: err.join().expect("err"),
        held_at_act,
    }
}

/// The client killed with SIGKILL half way through `put`; the same `put` again completes, reads
/// back byte-exact, stores no more than a clean put would, and sends only the shards the nodes
/// do not hold yet (it asks before sending).
///
/// Encrypted: the dataset key derives from the owner's key and the source path, so the second
/// put produces the same shards as the interrupted one, for small files (keyed by content) and
/// for a file over 16 MiB (keyed per part by each part's hash) alike.
#[test]
fn client_killed_during_put_then_put_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    big_dataset(&data, 12, 1_000_000);
    fs::write(data.join("large.bin"), bytes(20_000_000, 99)).expect("write");

    // What a clean put of the same data stores and sends.
    // Devnets are stopped together at the end (each stop can take a while).
    let mut nets = Vec::new();
    let clean = Devnet::up(&tmp.path().join("clean"), 6);
    let clean_put = put_json(&clean.config(), &data, SMALL_SHARDS);
    let clean_used = clean.used();
    nets.push(clean);
    assert!(
        clean_used > 30_000_000,
        "clean put stored {clean_used} bytes"
    );
    let clean_sent = clean_put["sent_bytes"].as_u64().expect("sent_bytes");
    assert!(clean_sent >= clean_used * 9 / 10, "{clean_put}");

    // A put can end before the test sees a third of it stored; then try again on a fresh
    // devnet.
    for attempt in 0..8 {
        let net = Devnet::up(&tmp.path().join(format!("run-{attempt}")), 6);
        let cfg = net.config();
        // Create the client key before `put` and `status` run concurrently: two processes
        // that both find the key file missing race to create it, and the loser fails.
        assert_eq!(net.used(), 0);
        let run = put_interrupted(&net, &data, SMALL_SHARDS, clean_used / 3, |put| {
            let _ = put.kill(); // SIGKILL
        });
        if run.held_at_act.is_none() || run.status.success() {
            assert!(
                run.status.success(),
                "put failed: {}\n{}",
                run.status,
                String::from_utf8_lossy(&run.stderr)
            );
            eprintln!("attempt {attempt}: put finished before it could be killed; again");
            nets.push(net);
            continue;
        }
        assert_eq!(run.status.signal(), Some(libc::SIGKILL), "put was killed");
        assert!(run.stdout.is_empty(), "no capability from a killed put");

        let partial = net.used();
        assert!(partial > 0, "the killed put left shards on the nodes");
        eprintln!("attempt {attempt}: killed put left {partial} of {clean_used} bytes");

        let again = put_json(&cfg, &data, SMALL_SHARDS);
        let cap = again["capability"].as_str().expect("capability");
        get_exact(&cfg, cap, &tmp.path().join("got"), &data);
        let used = net.used();
        assert!(
            used as f64 <= clean_used as f64 * 1.05,
            "after the interrupted and the second put the nodes hold {used} bytes; a clean \
             put stores {clean_used} (partial after the kill: {partial})"
        );
        // Only what was missing went over the wire (plus shards that were in flight when the
        // client died, a few segments' worth).
        let sent = again["sent_bytes"].as_u64().expect("sent_bytes");
        let missing = clean_used.saturating_sub(partial);
        eprintln!(
            "attempt {attempt}: the second put sent {sent} bytes ({} shards; {} held); \
             {missing} were missing, a clean put sent {clean_sent}",
            again["sent_shards"], again["held_shards"]
        );
        assert!(
            sent <= missing + clean_used / 10,
            "the second put sent {sent} bytes; {missing} were missing: {again}"
        );
        assert!(
            again["held_shards"].as_u64().expect("held_shards") > 0,
            "{again}"
        );
        nets.push(net);
        down_all(nets);
        return;
    }
    panic!("put always finished before a third of it was stored; could not interrupt it");
}

/// A node killed with SIGKILL half way through `put`: the put routes around it (or fails
/// with a clear error); the node comes back (`granary devnet start`) and the same put again
/// completes, sending only what is missing. Then any m = 2 nodes may go, the one that died
/// among them, and the dataset still reads back byte-exact.
#[test]
fn node_killed_during_put_then_put_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    big_dataset(&data, 30, 1_000_000);
    let mut nets = Vec::new();
    for attempt in 0..8 {
        let mut net = Devnet::up(&tmp.path().join(format!("run-{attempt}")), 6);
        let cfg = net.config();
        assert_eq!(net.used(), 0);
        let victim = net.nodes[0].pid;
        let run = put_interrupted(&net, &data, SMALL_SHARDS, 10_000_000, |_| {
            sigkill(victim);
        });
        if run.held_at_act.is_none() {
            eprintln!("attempt {attempt}: put finished before a node could be killed; again");
            nets.push(net);
            continue;
        }
        // Routed around the dead node, or a clear error (never a hang: put_interrupted bounds
        // the wait).
        if !run.status.success() {
            let err = String::from_utf8_lossy(&run.stderr);
            assert!(err.contains("error"), "a failed put says why: {err}");
            eprintln!("attempt {attempt}: the put failed: {err}");
        }
        net.start();
        assert!(net.status().iter().all(|s| s["ok"] == true), "all nodes up");

        let again = put_json(&cfg, &data, SMALL_SHARDS);
        let cap = again["capability"]
            .as_str()
            .expect("capability")
            .to_string();
        let held = again["held_shards"].as_u64().expect("held_shards");
        assert!(held > 0, "the first put's shards are found: {again}");
        let shard_bytes = again["shard_bytes"].as_u64().expect("shard_bytes");
        let sent = again["sent_bytes"].as_u64().expect("sent_bytes");
        eprintln!(
            "attempt {attempt}: the second put sent {sent} of {shard_bytes} shard bytes \
             ({held} shards held)"
        );
        assert!(
            sent < shard_bytes * 3 / 4,
            "the second put sent {sent} of {shard_bytes} shard bytes: {again}"
        );
        get_exact(&cfg, &cap, &tmp.path().join("got"), &data);

        // Each segment's shards are on distinct nodes again: losing any two loses nothing.
        net.kill(0);
        net.kill(3);
        get_exact(&cfg, &cap, &tmp.path().join("got-degraded"), &data);
        nets.push(net);
        down_all(nets);
        return;
    }
    panic!("put always finished before 10 MB were stored; could not kill a node during it");
}

/// The README's main job, smaller: `granary demo` starts a 6-node devnet and an auditor, puts a
/// sample dataset, kills 2 nodes, gets it back verified, runs a round of storage challenges and
/// shows the verified rewards ledger; then stops every process it started.
#[test]
fn the_demo_runs_end_to_end() {
    node_bin();
    workspace_bin("granary-auditor");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let mut cmd = granary();
    cmd.args(["demo", "--files", "300", "--mb", "20", "--dir"])
        .arg(&dir);
    let out = run_with_timeout(cmd, Duration::from_secs(300));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "started 6 granary-node processes",
        "killed 2 of 6 nodes with SIGKILL",
        "verified: the retrieved copy is byte-for-byte identical",
        "4 nodes passed, 2 offline (killed), 0 live nodes did not pass",
        "ledger verified",
    ] {
        assert!(text.contains(step), "no `{step}` in:\n{text}");
    }
    // `devnet down` ran: its record is gone and no node it listed is alive.
    let net = dir.join("devnet");
    assert!(!net.join("devnet.toml").exists(), "devnet.toml left behind");
    for i in 0..6 {
        let log = fs::read_to_string(net.join(format!("node-{i}/node.log"))).unwrap_or_default();
        assert!(!log.is_empty(), "node {i} logged nothing");
    }
    let left: Vec<String> = fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(net.to_str().expect("utf-8")))
        .collect();
    assert!(left.is_empty(), "processes still running: {left:?}");
}

/// A put over every node's owner quota fails with a message naming the quota, and leaves the
/// nodes healthy: they all answer `status`, and a put within the quota then works.
#[test]
fn a_put_over_the_owner_quota_fails_clearly_and_the_nodes_stay_healthy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let net = Devnet::up_with(&tmp.path().join("net"), 6, &["--owner-quota=2000000"]);
    let cfg = net.config();
    let big = tmp.path().join("big");
    big_dataset(&big, 20, 1_000_000);
    let out = fails_with(&cfg, &["put", big.to_str().expect("utf-8"), "-q"], 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("OwnerQuotaExceeded") || err.contains("quota"),
        "{err}"
    );

    let (code, st) = net.status_code();
    assert_eq!(code, 0, "every node still answers: {st:?}");
    let small = tmp.path().join("small");
    big_dataset(&small, 2, 100_000);
    let cap = put(&cfg, &small, &[]);
    get_exact(&cfg, &cap, &tmp.path().join("got"), &small);
}

/// `status` reports every node, up or down, and exits 0 when all answer, 3 when one does not
/// (both forms, still listing every node).
#[test]
fn status_reports_up_and_down_nodes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let net = Devnet::up(&tmp.path().join("net"), 6);

    let (code, st) = net.status_code();
    assert_eq!(code, 0, "{st:?}");
    assert_eq!(st.len(), 6, "{st:?}");
    for (s, n) in st.iter().zip(&net.nodes) {
        assert_eq!(s["node"].as_str(), Some(n.addr.as_str()), "{s}");
        assert_eq!(s["ok"], serde_json::Value::Bool(true), "{s}");
    }
    let text = String::from_utf8(ok(&net.config(), &["status"])).expect("utf-8");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("up")).count(),
        6,
        "{text}"
    );

    net.kill(3);
    let (code, st) = net.status_code();
    assert_eq!(code, 3, "{st:?}");
    assert_eq!(st.len(), 6, "{st:?}");
    for (i, (s, n)) in st.iter().zip(&net.nodes).enumerate() {
        assert_eq!(s["node"].as_str(), Some(n.addr.as_str()), "{s}");
        assert_eq!(s["ok"], serde_json::Value::Bool(i != 3), "node {i}: {s}");
    }
    // The plain form says the same, and why it exits 3.
    let out = fails_with(&net.config(), &["status"], 3);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(text.lines().count(), 6, "{text}");
    let down: Vec<&str> = text.lines().filter(|l| l.starts_with("down")).collect();
    assert_eq!(down.len(), 1, "{text}");
    assert!(down[0].contains(&net.nodes[3].addr), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 of 6 nodes unreachable"), "{err}");
}

/// Writes a client config at `path` listing `nodes` (the key is created next to it on first use).
fn write_config(path: &Path, nodes: &[&str]) -> PathBuf {
    fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    let cfg = granary_client::config::ClientConfig {
        key_file: "client.key".into(),
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
    };
    granary_client::config::save(path, &cfg).expect("write client config");
    path.to_path_buf()
}

/// Which config `granary status` uses: `--config` over `$GRANARY_CONFIG` over the platform
/// config dir (`$XDG_CONFIG_HOME/granary/client.toml`, else `$HOME/.config/granary/…`), each
/// config naming a different node; `--node` adds to the configured nodes. The child's `HOME`
/// and `XDG_CONFIG_HOME` are temporary directories, never the user's.
#[test]
fn config_precedence_and_extra_nodes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let net = Devnet::up(&tmp.path().join("net"), 3);
    let addr = |i: usize| net.nodes[i].addr.as_str();
    let flag_cfg = write_config(&tmp.path().join("flag/client.toml"), &[addr(0)]);
    let env_cfg = write_config(&tmp.path().join("env/client.toml"), &[addr(1)]);
    let home = tmp.path().join("home");
    let xdg = tmp.path().join("xdg");
    write_config(&xdg.join("granary/client.toml"), &[addr(2)]);
    // Only HOME has a config: used when XDG_CONFIG_HOME is unset.
    let home_only = tmp.path().join("home-only");
    write_config(&home_only.join(".config/granary/client.toml"), &[addr(1)]);

    // The nodes `status` lists with `args`, `$GRANARY_CONFIG` = `env` (unset if None) and the
    // platform dir under `home` (and `xdg`, if given).
    let nodes = |args: &[&str], env: Option<&Path>, home: &Path, xdg: Option<&Path>| {
        let mut cmd = granary();
        cmd.args(["status", "--json"]).args(args).env("HOME", home);
        match xdg {
            Some(x) => cmd.env("XDG_CONFIG_HOME", x),
            None => cmd.env_remove("XDG_CONFIG_HOME"),
        };
        if let Some(e) = env {
            cmd.env("GRANARY_CONFIG", e);
        }
        let (code, st) = status_of(cmd);
        assert_eq!(code, 0, "{st:?}");
        st.iter()
            .map(|s| s["node"].as_str().expect("node").to_string())
            .collect::<Vec<_>>()
    };
    let flag = flag_cfg.to_str().expect("utf-8");
    let (x, h) = (Some(xdg.as_path()), home.as_path());
    assert_eq!(
        nodes(&["--config", flag], Some(&env_cfg), h, x),
        [addr(0)],
        "--config first"
    );
    assert_eq!(
        nodes(&[], Some(&env_cfg), h, x),
        [addr(1)],
        "then $GRANARY_CONFIG"
    );
    assert_eq!(nodes(&[], None, h, x), [addr(2)], "then $XDG_CONFIG_HOME");
    assert_eq!(
        nodes(&[], Some(Path::new("")), h, x),
        [addr(2)],
        "an empty $GRANARY_CONFIG is unset"
    );
    assert_eq!(
        nodes(&[], None, &home_only, None),
        [addr(1)],
        "then $HOME/.config"
    );
    // `--node` adds to the configured nodes, after them.
    assert_eq!(
        nodes(&["--config", flag, "--node", addr(2)], Some(&env_cfg), h, x),
        [addr(0), addr(2)],
        "--node adds"
    );
    assert!(!home.join(".config").exists(), "nothing written to HOME");
}

/// `put -` stores stdin as one file named by `--name`, read back byte-exact by `cat` and `get`;
/// `get` without DEST writes into a new directory named after the dataset id in the current
/// directory, and refuses to write into it again once it holds files.
#[test]
fn put_from_stdin_and_get_into_the_default_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let net = Devnet::up(&tmp.path().join("net"), 6);
    let cfg = net.config();
    // Several segments (1 MiB each at 4 x 256 KiB), the last one partial.
    let data = bytes(3_500_000, 7);
    let mut cmd = granary();
    cmd.args([
        "put",
        "-",
        "--name",
        "from-stdin.bin",
        "--shard-size",
        "256K",
    ])
    .args(["--json", "-q", "--config"])
    .arg(&cfg);
    let out = run_with_stdin(cmd, Some(data.clone()), TIMEOUT);
    assert!(out.status.success(), "{}", describe(&["put", "-"], &out));
    let put = parse_json_lines(&out.stdout);
    assert_eq!(put[0]["files"], 1, "{put:?}");
    assert_eq!(put[0]["bytes"], data.len(), "{put:?}");
    let cap = put[0]["capability"].as_str().expect("capability");

    assert_eq!(ok(&cfg, &["cat", cap, "from-stdin.bin"]), data, "cat");
    let listed = parse_json_lines(&ok(&cfg, &["ls", cap, "--json"]));
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["path"], "from-stdin.bin", "{listed:?}");

    // `granary:<id>#<key>`: the default destination is `<id>` in the current directory.
    let id = cap
        .strip_prefix("granary:")
        .and_then(|c| c.split('#').next())
        .expect("granary:<id>#<key>");
    let cwd = tmp.path().join("cwd");
    fs::create_dir_all(&cwd).expect("mkdir");
    let get = |json: bool| {
        let mut cmd = granary();
        cmd.args(["get", cap, "-q", "--config"])
            .arg(&cfg)
            .current_dir(&cwd);
        if json {
            cmd.arg("--json");
        }
        run_with_timeout(cmd, TIMEOUT)
    };
    let out = get(true);
    assert!(out.status.success(), "{}", describe(&["get", cap], &out));
    assert_eq!(
        parse_json_lines(&out.stdout)[0]["dest"],
        id,
        "reported dest"
    );
    let entries: Vec<PathBuf> = fs::read_dir(&cwd)
        .expect("read cwd")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(
        entries,
        [cwd.join(id)],
        "one new directory, named after the id"
    );
    let got = tree(&cwd.join(id));
    let names: Vec<&PathBuf> = got.iter().map(|(p, _)| p).collect();
    assert_eq!(names, [Path::new("from-stdin.bin")], "get");
    assert!(got[0].1 == Item::File(data), "get: the file's bytes differ");
    // Again into the same, now non-empty, directory: refused (exit 1), nothing changed.
    let before = tree(&cwd);
    let out = get(false);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        describe(&["get", cap], &out)
    );
    assert!(tree(&cwd) == before, "the first copy is untouched");
}

/// Two owners store identical public content; the first owner's `rm` must not delete the
/// second owner's data (each store adds the owner's reference even when the node holds it).
#[test]
fn rm_by_one_owner_keeps_identical_data_of_another() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    small_dataset(&data);
    let net = Devnet::up(&tmp.path().join("net"), 6);
    let cfg = net.config();
    let other = other_client(&net, &tmp.path().join("other"));
    let cap_a = put(&cfg, &data, &["--public"]);
    let cap_b = put(&other, &data, &["--public"]);
    // The root records differ (creation time, manifest nonce), but every data shard is the same
    // content-addressed bytes, held once per node with two owners' references.
    ok(&cfg, &["rm", &cap_a]);
    get_exact(&other, &cap_b, &tmp.path().join("got-b"), &data);
}

/// `verify --json`: one audit object per node the manifest names, keyed by `<id>@<addr>`.
fn verify_json(config: &Path, cap: &str, extra: &[&str], code: i32) -> Vec<serde_json::Value> {
    let mut args = vec!["verify", cap, "--json"];
    args.extend_from_slice(extra);
    let out = if code == 0 {
        ok(config, &args)
    } else {
        fails_with(config, &args, code).stdout
    };
    let v: serde_json::Value = serde_json::from_slice(&out).expect("verify --json parses");
    v.as_array().expect("an array").clone()
}

fn verdict_of<'a>(audits: &'a [serde_json::Value], node: &Node) -> &'a str {
    audits
        .iter()
        .find(|a| a["node"].as_str() == Some(&node.addr))
        .and_then(|a| a["verdict"].as_str())
        .unwrap_or("absent")
}

/// Sealing and storage challenges across real node processes: every node seals what it holds
/// and passes; reads unseal byte-exact once the plain copies are gone; a stranger's proof
/// requests are refused; a node whose replica was corrupted or deleted fails; a killed node is
/// offline. The attackers are edits to the node's files; the challenges run the real protocol.
#[test]
fn storage_challenges_over_sealed_replicas() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    small_dataset(&data);
    big_dataset(&data.join("big"), 2, 1_000_000);
    let net = Devnet::up_with(&tmp.path().join("net"), 5, &["--seal-idle-secs=1"]);
    let cfg = net.config();
    // 2 + 3: the dataset stays readable with three of the five nodes attacked below.
    let cap = put(&cfg, &data, &["--k", "2", "--m", "3"]);

    let audits = verify_json(&cfg, &cap, &["--wait", "120"], 0);
    assert_eq!(audits.len(), net.nodes.len(), "{audits:?}");
    for a in &audits {
        assert_eq!(a["verdict"], "pass", "{a}");
        assert_eq!(a["sealed"], a["shards"], "{a}");
        assert_eq!(a["missing"], 0, "{a}");
        assert!(a["units"].as_u64().unwrap_or(0) >= 1, "{a}");
    }
    // Sealed without keeping plain copies: reads now unseal, and still verify byte for byte.
    // The plain copies go right after each unit is committed (which verify may see first).
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in &net.nodes {
        while !shard_files(&n.dir).is_empty() {
            assert!(
                Instant::now() < deadline,
                "plain copies dropped in {}",
                n.dir.display()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
    get_exact(&cfg, &cap, &tmp.path().join("got"), &data);

    // Someone with the capability but no data on the nodes may not make them prove anything.
    let stranger = other_client(&net, &tmp.path().join("stranger"));
    let audits = verify_json(&stranger, &cap, &[], 3);
    for a in &audits {
        assert_eq!(a["verdict"], "fail", "{a}");
        assert!(
            a["detail"].as_str().unwrap_or("").contains("Forbidden"),
            "{a}"
        );
    }

    let replicas = |n: &Node| -> Vec<PathBuf> {
        fs::read_dir(n.dir.join("units"))
            .expect("units dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "replica"))
            .collect()
    };
    // Three nodes are attacked; the root record has three copies, so keep one holder of it out
    // of the attack, or the dataset cannot even be opened (whichever three nodes hold it).
    let keep = root_holders(&cfg, &cap)[0];
    let order: Vec<usize> = (0..net.nodes.len())
        .filter(|&i| i != keep)
        .chain([keep])
        .collect();
    let (rotted, emptied, killed) = (order[0], order[1], order[2]);
    // One: a flipped byte in every 16 KiB group of its replicas.
    for p in replicas(&net.nodes[rotted]) {
        let mut b = fs::read(&p).expect("read replica");
        for i in (100..b.len()).step_by(16 * 1024) {
            b[i] ^= 0x01;
        }
        fs::write(&p, &b).expect("write replica");
    }
    // Another: replicas deleted (kept only metadata).
    for p in replicas(&net.nodes[emptied]) {
        fs::remove_file(p).expect("delete replica");
    }
    // A third: killed.
    net.kill(killed);
    let audits = verify_json(&cfg, &cap, &[], 3);
    assert_eq!(
        verdict_of(&audits, &net.nodes[rotted]),
        "fail",
        "{audits:?}"
    );
    assert_eq!(
        verdict_of(&audits, &net.nodes[emptied]),
        "fail",
        "{audits:?}"
    );
    assert_eq!(
        verdict_of(&audits, &net.nodes[killed]),
        "offline",
        "{audits:?}"
    );
    assert_eq!(
        verdict_of(&audits, &net.nodes[order[3]]),
        "pass",
        "{audits:?}"
    );
    assert_eq!(
        verdict_of(&audits, &net.nodes[order[4]]),
        "pass",
        "{audits:?}"
    );
}

/// Removing one version of a dataset never drops shards another version still names: every
/// dataset holds its shards under its own reference tag on the nodes. Removing both frees all.
#[test]
fn rm_of_one_version_keeps_the_other() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    small_dataset(&data);
    big_dataset(&data.join("big"), 2, 1_000_000);
    let net = Devnet::up(&tmp.path().join("net"), 6);
    let cfg = net.config();
    let v1 = put(&cfg, &data, &[]);
    let mut b = fs::read(data.join("sub/b.bin")).expect("read");
    b.extend_from_slice(b"a new tail");
    fs::write(data.join("sub/b.bin"), &b).expect("write");
    fs::write(data.join("new.txt"), b"added in v2").expect("write");
    let v2 = put(&cfg, &data, &["--update", &v1]);
    assert_ne!(v1, v2);

    ok(&cfg, &["rm", &v1]);
    get_exact(&cfg, &v2, &tmp.path().join("got-v2"), &data);
    assert!(net.used() > 0);
    ok(&cfg, &["rm", &v2]);
    assert_eq!(
        net.used(),
        0,
        "no reference left behind: {:?}",
        net.status()
    );
}

/// A node that freezes (SIGSTOP: its connections stay up, nothing answers) under a reader that
/// already holds connections to every node: the read does not wait on it — each segment it holds
/// a shard of is raced by a parity read (hedged) and rebuilt — and the dataset comes back
/// byte-exact. In-process, so the freeze lands after the connections exist, deterministically.
#[test]
fn read_is_hedged_around_a_node_that_freezes() {
    use granary_client::{Dataset, ReadStats, config, store::net::NetStore};
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    small_dataset(&data);
    big_dataset(&data.join("big"), 12, 1_000_000);
    let net = Devnet::up_with(&tmp.path().join("net"), 6, &["--seal-idle-secs=3600"]);
    let cfg = net.config();
    let cap = put(
        &cfg,
        &data,
        &["--k", "4", "--m", "2", "--shard-size", "256K"],
    );

    let client = config::load(&cfg).expect("client config");
    let store = NetStore::new(client.nodes, client.key).expect("store");
    // Connect to every node (pooled), then freeze one.
    assert!(store.status().iter().all(|s| s.info.is_ok()));
    let frozen = net.nodes[3].pid;
    // SAFETY: plain kill(2) on a node process this test started.
    unsafe { libc::kill(frozen as i32, libc::SIGSTOP) };
    let result = (|| {
        let ds = Dataset::open(&cap.parse().expect("capability"), &store)?;
        let mut stats = ReadStats::default();
        ds.extract(&store, &tmp.path().join("got"), None, &mut stats)?;
        Ok::<_, granary_client::ReadError>(stats)
    })();
    // SAFETY: as above; let the node go on so the devnet stops cleanly.
    unsafe { libc::kill(frozen as i32, libc::SIGCONT) };
    let stats = result.expect("read around a frozen node");
    assert_same_tree(&data, &tmp.path().join("got"));
    eprintln!("read with a frozen node: {stats:?}");
    // Raced, not timed out: the frozen node's reads were outrun by parity (and after a few
    // strikes it is skipped), and the segments rebuilt.
    assert!(
        stats.rebuilds > 0,
        "segments were rebuilt from parity: {stats:?}"
    );
    assert!(stats.raced > 0, "hedged, not waited out: {stats:?}");
}

/// Sample-sized range reads (inside one shard, as a training loader makes them) race a node
/// that froze mid-job: a read whose shard sits on it is outrun by the same column of k other
/// shards, rebuilt, and correct. Without hedging each such read waits out its timeout instead
/// (`raced` stays 0).
#[test]
fn range_reads_are_hedged_around_a_node_that_freezes() {
    use granary_client::{Dataset, ReadStats, config, store::net::NetStore};
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    big_dataset(&data, 6, 2_000_000);
    let net = Devnet::up_with(&tmp.path().join("net"), 6, &["--seal-idle-secs=3600"]);
    let cfg = net.config();
    let cap = put(&cfg, &data, &["--k", "4", "--m", "2"]);

    let client = config::load(&cfg).expect("client config");
    let store = NetStore::new(client.nodes, client.key).expect("store");
    let ds = Dataset::open(&cap.parse().expect("capability"), &store).expect("open");
    let samples: Vec<(String, u64, std::ops::Range<u64>)> = (0..6)
        .flat_map(|i| {
            (0..2_000_000u64 - 5000)
                .step_by(97_000)
                .map(move |a| (format!("part-{i:03}.bin"), 100 + i, a..a + 5000))
        })
        .collect();
    let read_all = |stats: &mut ReadStats| -> Result<(), String> {
        for (path, seed, r) in &samples {
            let entry = ds.file(path).map_err(|e| e.to_string())?;
            let got = ds
                .read_range(&store, entry, r.clone(), stats)
                .map_err(|e| format!("{path} {r:?}: {e}"))?;
            let want = bytes(2_000_000, *seed);
            if got != want[r.start as usize..r.end as usize] {
                return Err(format!("{path} {r:?}: wrong bytes"));
            }
        }
        Ok(())
    };
    // Warm up: connections made, typical read times learnt.
    let mut warm = ReadStats::default();
    read_all(&mut warm).expect("healthy reads");
    assert_eq!(
        warm.raced + warm.rebuilds + warm.shard_failures,
        0,
        "{warm:?}"
    );

    // Freeze the node holding the most data shards, so that many of the sampled ranges sit on it.
    let m = ds.manifest();
    let mut held = vec![0usize; m.nodes.len()];
    for seg in &m.segments {
        for &p in seg.placement.iter().take(4) {
            if let Some(h) = held.get_mut(p as usize) {
                *h += 1;
            }
        }
    }
    let busiest = (0..held.len()).max_by_key(|&i| held[i]).expect("placed");
    let frozen = net
        .nodes
        .iter()
        .find(|n| n.addr.starts_with(&hex::encode(m.nodes[busiest])))
        .expect("a devnet node")
        .pid;
    // SAFETY: plain kill(2) on a node process this test started.
    unsafe { libc::kill(frozen as i32, libc::SIGSTOP) };
    let mut stats = ReadStats::default();
    let result = read_all(&mut stats);
    // SAFETY: as above; let the node go on so the devnet stops cleanly.
    unsafe { libc::kill(frozen as i32, libc::SIGCONT) };
    result.expect("range reads around a frozen node");
    eprintln!(
        "{} range reads with a frozen node: {stats:?}",
        samples.len()
    );
    assert!(
        stats.rebuilds > 0,
        "ranges were rebuilt from other shards: {stats:?}"
    );
    assert!(stats.raced > 0, "hedged, not waited out: {stats:?}");
}

/// A node lost for good (killed, its directory gone): `granary repair` rebuilds what it held
/// from the other shards of each segment onto live nodes, and readers find the rebuilt shards
/// where repair put them. Then two more nodes holding shards of the same segment go down: 3 of
/// that segment's 4 shards are gone from their first places, more than m = 2, and the get still
/// succeeds because of the repair.
#[test]
fn repair_rebuilds_what_a_lost_node_held() {
    use granary_client::{Dataset, config, store::net::NetStore};
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    small_dataset(&data);
    big_dataset(&data.join("big"), 6, 1_000_000);
    let net = Devnet::up_with(&tmp.path().join("net"), 6, &["--seal-idle-secs=3600"]);
    let cfg = net.config();
    let cap = put(&cfg, &data, &["--k", "2", "--m", "2"]);

    // The node holding the most shards is lost; a segment with a shard on it picks two more.
    let client = config::load(&cfg).expect("client config");
    let store = NetStore::new(client.nodes, client.key).expect("store");
    let ds = Dataset::open(&cap.parse().expect("capability"), &store).expect("open");
    let m = ds.manifest();
    let node_of = |id: &[u8; 32]| {
        net.nodes
            .iter()
            .position(|n| n.addr.starts_with(&hex::encode(id)))
            .expect("a devnet node")
    };
    // Shards per node, over the data segments and the manifest's own segments.
    let mut count = vec![0usize; net.nodes.len()];
    for (_, hint) in ds.shard_hints() {
        count[node_of(&hint.expect("every shard has a hint"))] += 1;
    }
    let lost = (0..count.len()).max_by_key(|&i| count[i]).expect("nodes");
    let seg = m
        .segments
        .iter()
        .find(|s| {
            s.placement
                .iter()
                .any(|&p| node_of(&m.nodes[p as usize]) == lost)
        })
        .expect("a segment on the lost node");
    let later: Vec<usize> = seg
        .placement
        .iter()
        .map(|&p| node_of(&m.nodes[p as usize]))
        .filter(|&i| i != lost)
        .take(2)
        .collect();
    drop(store);
    net.kill(lost);
    fs::remove_dir_all(&net.nodes[lost].dir).expect("remove the lost node's directory");

    let dry = parse_json_lines(&ok(&cfg, &["repair", &cap, "--dry-run", "--json"]));
    assert_eq!(
        dry[0]["missing"].as_u64(),
        Some(count[lost] as u64),
        "{dry:?}"
    );
    assert_eq!(dry[0]["rebuilt"], 0, "{dry:?}");
    let done = parse_json_lines(&ok(&cfg, &["repair", &cap, "--json"]));
    assert_eq!(done[0]["rebuilt"], done[0]["missing"], "{done:?}");
    assert_eq!(done[0]["unrecoverable_segments"], 0, "{done:?}");
    // A second repair finds nothing missing: readers and repair look in the same places.
    let again = parse_json_lines(&ok(&cfg, &["repair", &cap, "--json"]));
    assert_eq!(again[0]["missing"], 0, "{again:?}");
    // `verify` challenges the shards where they are now: the lost node is not among the
    // nodes asked any more, so no node is offline (exit 0; unsealed shards are pending).
    let audits = verify_json(&cfg, &cap, &["--openings", "0"], 0);
    assert!(
        audits
            .iter()
            .all(|a| a["verdict"] != "offline" && a["missing"] == 0),
        "{audits:?}"
    );

    for &i in &later {
        net.kill(i);
    }
    get_exact(&cfg, &cap, &tmp.path().join("got"), &data);
}

/// One client talks to each node over one QUIC connection, however many requests it makes and
/// however many of them start at once: concurrent first uses share one dial, and a connection
/// is reused although a dual-stack socket reports the node's IPv4 address in its IPv6-mapped
/// form. (Before, every request dialled afresh: about 150 handshakes per node for a 600 MB put,
/// which also ate into the nodes' connection limit.)
#[test]
fn one_connection_per_node_however_many_requests() {
    use granary_client::{Dataset, ReadStats, config, store::net::NetStore};
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    small_dataset(&data);
    big_dataset(&data.join("big"), 8, 1_000_000);
    let net = Devnet::up_env(
        &tmp.path().join("net"),
        4,
        &["--seal-idle-secs=3600"],
        &[("RUST_LOG", "granary_node::server=debug")],
        &[],
    );
    let cfg = net.config();
    let cap = put(
        &cfg,
        &data,
        &["--k", "2", "--m", "2", "--shard-size", "256K"],
    );
    let handshakes = || -> Vec<usize> {
        net.nodes
            .iter()
            .map(|n| {
                fs::read_to_string(n.dir.join("node.log"))
                    .expect("node.log")
                    .lines()
                    .filter(|l| l.ends_with(": connected"))
                    .count()
            })
            .collect()
    };
    let before = handshakes();
    let client = config::load(&cfg).expect("client config");
    let store = NetStore::new(client.nodes, client.key).expect("store");
    let ds = Dataset::open(&cap.parse().expect("capability"), &store).expect("open");
    for _ in 0..8 {
        let mut stats = ReadStats::default();
        let got = tmp.path().join("got");
        let _ = fs::remove_dir_all(&got);
        ds.extract(&store, &got, None, &mut stats).expect("get");
        assert!(stats.shard_reads >= 6, "{stats:?}");
    }
    let after = handshakes();
    // One each; a read that times out on a loaded machine drops its connection, so allow a
    // re-dial or two (a dial per request would be about 20 here).
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(
            (1..=3).contains(&(a - b)),
            "node {i}: {} handshakes for one client",
            a - b
        );
    }
}

/// Six nodes in three failure domains (two per zone) and a 2 + 1 code: every segment's three
/// shards land in three different zones, so losing a whole zone loses at most one shard of any
/// segment, and the dataset is read back with both nodes of a zone killed. (Rendezvous order
/// alone puts two shards of a segment in one zone 60 % of the time.)
#[test]
fn shards_of_a_segment_go_to_distinct_failure_domains() {
    use granary_client::{Dataset, config, store::net::NetStore};
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    small_dataset(&data);
    big_dataset(&data.join("big"), 12, 1_000_000);
    let net = Devnet::up_env(
        &tmp.path().join("net"),
        6,
        &["--seal-idle-secs=3600"],
        &[],
        &["--zones", "3"],
    );
    let cfg = net.config();
    let cap = put(
        &cfg,
        &data,
        &["--k", "2", "--m", "1", "--shard-size", "256K"],
    );
    let client = config::load(&cfg).expect("client config");
    let store = NetStore::new(client.nodes, client.key).expect("store");
    let ds = Dataset::open(&cap.parse().expect("capability"), &store).expect("open");
    // devnet labels node i `zone-{i % 3}`.
    let zone_of = |id: &[u8; 32]| {
        net.nodes
            .iter()
            .position(|n| n.addr.starts_with(&hex::encode(id)))
            .expect("a devnet node")
            % 3
    };
    let mut segments = 0;
    for (seg, nodes) in ds.segment_tables() {
        let mut zones: Vec<usize> = (0..seg.shards.len())
            .map(|i| zone_of(&seg.hint(i, nodes).expect("every shard has a hint")))
            .collect();
        zones.sort_unstable();
        zones.dedup();
        assert_eq!(zones.len(), seg.shards.len(), "one zone per shard: {seg:?}");
        segments += 1;
    }
    assert!(segments >= 5, "{segments} segments checked");
    drop(store);
    // Zone 1 goes down entirely (nodes 1 and 4).
    net.kill(1);
    net.kill(4);
    get_exact(&cfg, &cap, &tmp.path().join("got"), &data);
}
