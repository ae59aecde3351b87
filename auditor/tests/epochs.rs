//! The auditor against real node processes on loopback: registrations, epochs over sealed
//! replicas, rewards that follow the verdicts, and a ledger that verifies (and stops verifying
//! when touched). Needs the workspace binaries (`cargo nextest run --workspace` builds them).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use granary_auditor::{
    Auditor, Intake,
    ledger::{self, Record, Verdict, Verifier},
};
use granary_client::{
    Dataset, ErasureParams, PackOptions, Source, audit,
    config::{self, Loaded as ClientConfig},
    devnet::{self, AuditorSpec},
    ids::ShardId,
    pack,
    register::{AuditRegistration, REGISTRATION_VERSION},
    store::net::NetStore,
};

const AUDITOR: &str = env!("CARGO_BIN_EXE_granary-auditor");

/// Stops the devnet when the test ends, however it ends.
struct Guard(PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = devnet::down(&self.0);
    }
}

fn write_data(root: &Path) {
    for i in 0..3u64 {
        let d = root.join(format!("d{i}"));
        fs::create_dir_all(&d).unwrap();
        let mut v = vec![0u8; 700_000 + i as usize * 100_000];
        granary_client::sample::fill(&mut v, 40 + i);
        fs::write(d.join("part.bin"), v).unwrap();
    }
}

fn auditor(args: &[&str]) -> (bool, String) {
    let out = Command::new(AUDITOR)
        .args(args)
        .output()
        .expect("run granary-auditor");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn put(cfg: &ClientConfig, data: &Path) -> (NetStore, granary_client::Capability) {
    let net = NetStore::new(cfg.nodes.clone(), cfg.key.clone()).expect("store");
    let opts = PackOptions {
        erasure: ErasureParams { data: 2, parity: 2 },
        ..PackOptions::default()
    };
    let report = pack(Source::Path(data.to_path_buf()), &net, &opts).expect("put");
    (net, report.capability)
}

fn registration(cfg: &ClientConfig, ds: &Dataset, created_ms: u64) -> AuditRegistration {
    AuditRegistration {
        version: REGISTRATION_VERSION,
        dataset: ds.capability.id,
        owner: cfg.key.public(),
        created_ms,
        active: true,
        placed: audit::placed_shards(ds),
    }
}

/// Epochs over a 4-node devnet, run in-process: waiting shards earn nothing, sealed ones earn
/// what the rule gives, a node whose replica rotted and a killed node earn nothing, a shard an
/// owner claims a node holds but the node never acknowledged does not fail it, and the ledger
/// verifies, through the CLI too, until a byte of its export is changed.
#[test]
fn epochs_pay_for_proven_storage_only_and_the_ledger_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let adir = tmp.path().join("auditor");
    let (ok, id) = auditor(&["init", "--dir", adir.to_str().unwrap()]);
    assert!(ok, "{id}");
    let id = id.trim().to_string();
    let ddir = tmp.path().join("net");
    let net = devnet::up_with(
        &ddir,
        4,
        &devnet::node_binary(),
        &["--seal-idle-secs=1".into(), format!("--auditor={id}")],
    )
    .expect("devnet");
    let _guard = Guard(ddir.clone());
    let mut args = vec!["init", "--force", "--dir", adir.to_str().unwrap()];
    for n in &net.nodes {
        args.extend(["--node", n.addr.as_str()]);
    }
    let (ok, text) = auditor(&args);
    assert!(ok, "{text}");

    let data = tmp.path().join("data");
    write_data(&data);
    let cfg = config::load(&ddir.join("client.toml")).unwrap();
    let (store, cap) = put(&cfg, &data);
    let ds = Dataset::open(&cap, &store).unwrap();
    let reg = registration(&cfg, &ds, 1);
    let placed = reg.placed.clone();

    let mut a = Auditor::open(&adir).expect("auditor");
    assert_eq!(
        a.run_epoch().unwrap().map(|r| r.epoch),
        None,
        "nothing registered yet"
    );
    // Someone else cannot register (or withdraw) the dataset in the owner's name.
    let stranger = granary_protocol::SecretKey::from_bytes(&[77; 32]);
    let mut forged = a.register(&reg.sign(&stranger).to_bytes());
    assert!(forged.is_err(), "{forged:?}");
    let bytes = reg.sign(&cfg.key).to_bytes();
    assert!(matches!(a.register(&bytes), Ok(Intake::Registered { .. })));
    assert_eq!(
        a.register(&bytes).unwrap(),
        Intake::Stale,
        "the same one again"
    );
    let mut theirs = registration(&cfg, &ds, 2);
    theirs.owner = stranger.public();
    forged = a.register(&theirs.sign(&stranger).to_bytes());
    assert!(
        forged
            .as_ref()
            .is_err_and(|e| e.to_string().contains("another owner")),
        "{forged:?}"
    );

    // Before sealing: shards are held but not provable yet; nothing is paid.
    let early = a.run_epoch().unwrap().expect("an epoch");
    for (rec, amount) in &early.nodes {
        assert!(
            matches!(rec.verdict, Verdict::Pending | Verdict::Pass),
            "{rec:?}"
        );
        if rec.verdict == Verdict::Pending {
            assert!(rec.pending > 0, "{rec:?}");
        }
        assert_eq!(
            *amount,
            ledger::reward(a.rules(), rec.verdict, rec.sealed_bytes)
        );
    }

    // Once sealed: every node passes and earns for exactly the bytes it proved.
    let p = store.wait_sealed(&placed, Duration::from_secs(120), |_| {});
    assert_eq!(p.pending, 0, "sealed in time: {p:?}");
    let sealed = a.run_epoch().unwrap().expect("an epoch");
    assert_eq!(sealed.nodes.len(), 4);
    for (rec, amount) in &sealed.nodes {
        assert_eq!(rec.verdict, Verdict::Pass, "{rec:?}");
        assert_eq!(rec.sealed, rec.shards);
        assert!(rec.sealed_bytes > 0);
        assert_eq!(*amount, rec.sealed_bytes * 1000 / (1 << 30), "{rec:?}");
    }

    // An auditor the nodes do not list gets nothing proven: every node refuses it, and it
    // records them as not enrolled (no reward, and no failure held against them).
    let other_dir = tmp.path().join("other-auditor");
    let mut args = vec!["init", "--dir", other_dir.to_str().unwrap()];
    for n in &net.nodes {
        args.extend(["--node", n.addr.as_str()]);
    }
    let (ok, text) = auditor(&args);
    assert!(ok, "{text}");
    let mut other = Auditor::open(&other_dir).expect("second auditor");
    other.register(&bytes).unwrap();
    let refused = other.run_epoch().unwrap().expect("an epoch");
    for (rec, amount) in &refused.nodes {
        assert_eq!(rec.verdict, Verdict::Offline, "{rec:?}");
        assert!(
            rec.detail.as_deref().unwrap_or("").contains("not enrolled"),
            "{rec:?}"
        );
        assert_eq!(*amount, 0);
    }
    drop(other);

    // A registration naming a shard node 3 never received: not held, never acknowledged, so
    // not its fault (an owner cannot frame a node by listing shards it never sent).
    let framed = *net.nodes[3]
        .addr
        .parse::<granary_protocol::NodeAddr>()
        .unwrap()
        .id
        .as_bytes();
    let mut extra = registration(&cfg, &ds, 3);
    extra.dataset = granary_client::ids::DatasetId([9; 32]);
    extra.placed = [(framed, vec![ShardId([0xAB; 32])])].into();
    a.register(&extra.sign(&cfg.key).to_bytes()).unwrap();

    // Node 0's replicas rot (one byte in every 16 KiB group); node 1 is killed.
    for e in fs::read_dir(net.nodes[0].dir.join("units"))
        .unwrap()
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "replica") {
            let mut b = fs::read(e.path()).unwrap();
            for i in (100..b.len()).step_by(16 * 1024) {
                b[i] ^= 0x01;
            }
            fs::write(e.path(), &b).unwrap();
        }
    }
    devnet::signal(net.nodes[1].pid, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while devnet::signal(net.nodes[1].pid, 0) && Instant::now() < deadline {
        devnet::reap(net.nodes[1].pid);
        std::thread::sleep(Duration::from_millis(20));
    }
    let bad = a.run_epoch().unwrap().expect("an epoch");
    let by_node = |i: usize| {
        let nid = *net.nodes[i]
            .addr
            .parse::<granary_protocol::NodeAddr>()
            .unwrap()
            .id
            .as_bytes();
        bad.nodes
            .iter()
            .find(|(r, _)| r.node == nid)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_node(0).0.verdict, Verdict::Fail, "{:?}", by_node(0));
    assert_eq!(by_node(0).1, 0);
    assert_eq!(by_node(1).0.verdict, Verdict::Offline, "{:?}", by_node(1));
    assert_eq!(by_node(1).1, 0);
    let (r3, paid3) = by_node(3);
    assert_eq!(r3.verdict, Verdict::Pass, "{r3:?}");
    assert_eq!((r3.unacknowledged, r3.missing), (1, 0), "{r3:?}");
    assert!(paid3 > 0);
    assert_eq!(by_node(2).0.verdict, Verdict::Pass);

    // auditor.toml's reward rate changes: the ledger's rules (genesis) still apply, so its
    // rewards keep verifying.
    drop(a);
    let mut args = vec![
        "init",
        "--force",
        "--reward-per-gib",
        "7",
        "--dir",
        adir.to_str().unwrap(),
    ];
    for n in &net.nodes {
        args.extend(["--node", n.addr.as_str()]);
    }
    let (ok, text) = auditor(&args);
    assert!(ok, "{text}");
    let mut a = Auditor::open(&adir).expect("auditor");
    assert_eq!(a.rules().reward_per_gib_epoch, 1000);
    let later = a.run_epoch().unwrap().expect("an epoch");
    let (r2, paid2) = later
        .nodes
        .iter()
        .find(|(r, _)| r.verdict == Verdict::Pass)
        .cloned()
        .expect("a passing node");
    assert_eq!(paid2, r2.sealed_bytes * 1000 / (1 << 30));

    // The ledger: every entry signed and chained; the totals are what the epochs paid.
    let entries: Vec<_> = a.db().entries().collect::<Result<_, _>>().unwrap();
    let mut v = Verifier::new(a.id());
    for e in &entries {
        v.push(e).unwrap();
    }
    let s = v.finish().unwrap();
    assert_eq!(s.epochs, 4);
    assert_eq!(s.datasets, 2);
    let paid: u64 = [&early, &sealed, &bad, &later]
        .iter()
        .flat_map(|r| r.nodes.iter().map(|(_, x)| x))
        .sum();
    assert_eq!(s.paid, paid);
    assert!(matches!(
        entries[0].entry().unwrap().record,
        Record::Genesis { .. }
    ));
    drop(a);

    // The CLI: verify, rewards, export; a changed export no longer verifies.
    let d = adir.to_str().unwrap();
    let (ok, text) = auditor(&["ledger", "verify", "--dir", d]);
    assert!(ok && text.contains("ledger verified"), "{text}");
    let (ok, text) = auditor(&["rewards", "--dir", d, "--json"]);
    assert!(ok, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["paid"], paid);
    let export = tmp.path().join("ledger.bin");
    let (ok, text) = auditor(&[
        "ledger",
        "export",
        "--dir",
        d,
        "--out",
        export.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let verify_export = || {
        let file = export.to_str().unwrap();
        auditor(&["ledger", "verify", "--file", file, "--auditor", &id])
    };
    let (ok, text) = verify_export();
    assert!(ok, "{text}");
    let mut b = fs::read(&export).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x04;
    fs::write(&export, &b).unwrap();
    let (ok, text) = verify_export();
    assert!(!ok, "a changed ledger verified: {text}");
    // And a ledger checked against another auditor's id does not verify.
    let other = granary_protocol::SecretKey::from_bytes(&[5; 32])
        .public()
        .to_string();
    let (ok, _) = auditor(&["ledger", "verify", "--dir", d, "--auditor", &other]);
    assert!(!ok);
}

/// A 3-node devnet with its own auditor process (epochs of `epoch_secs`), a dataset put into
/// it and its registration written to a file (not yet handed in). Returns the guard, the
/// devnet, and the registration file.
fn running_auditor_with_a_dataset(tmp: &Path, epoch_secs: u64) -> (Guard, devnet::Devnet, PathBuf) {
    let ddir = tmp.join("net");
    let opts = devnet::DevnetOptions {
        auditor: Some(AuditorSpec {
            bin: PathBuf::from(AUDITOR),
            epoch_secs,
        }),
        ..devnet::DevnetOptions::default()
    };
    let net = devnet::up_full(&ddir, 3, &devnet::node_binary(), &opts).expect("devnet");
    let guard = Guard(ddir.clone());
    let data = tmp.join("data");
    write_data(&data);
    let cfg = config::load(&ddir.join("client.toml")).unwrap();
    let (store, cap) = put(&cfg, &data);
    let ds = Dataset::open(&cap, &store).unwrap();
    let file = tmp.join("reg.bin");
    fs::write(&file, registration(&cfg, &ds, 1).sign(&cfg.key).to_bytes()).unwrap();
    (guard, net, file)
}

/// The devnet's own auditor process: a registration handed to the running auditor is queued,
/// taken in, audited in an epoch, and visible to readers (`rewards`) while it keeps running.
#[test]
fn the_running_auditor_takes_registrations_and_readers_see_its_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let (_guard, net, file) = running_auditor_with_a_dataset(tmp.path(), 3600);
    let adir = net.auditor.as_ref().expect("an auditor").dir.clone();
    let d = adir.to_str().unwrap();
    let (ok, text) = auditor(&["register", "--dir", d, file.to_str().unwrap()]);
    assert!(ok && text.contains("queued"), "{text}");
    // A file that is not a registration is refused at once.
    fs::write(&file, b"not a registration").unwrap();
    let (ok, text) = auditor(&["register", "--dir", d, file.to_str().unwrap()]);
    assert!(!ok && text.contains("not a registration"), "{text}");
    // The first epoch runs as soon as the first dataset is taken in.
    let deadline = Instant::now() + Duration::from_secs(60);
    let json = loop {
        let (ok, text) = auditor(&["rewards", "--dir", d, "--json"]);
        if ok {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["epochs"].as_u64() >= Some(1) {
                break v;
            }
        }
        assert!(Instant::now() < deadline, "no epoch: {text}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(json["datasets"], 1, "{json}");
    let nodes = json["nodes"].as_object().unwrap();
    assert_eq!(nodes.len(), 3, "{json}");
    for (_, t) in nodes {
        // Freshly stored, not sealed yet (nodes seal after 5 idle seconds): held, not paid.
        assert!(
            ["pending", "pass"].contains(&t["last_verdict"].as_str().unwrap_or("")),
            "{t}"
        );
    }
    let (ok, text) = auditor(&["ledger", "show", "--dir", d]);
    assert!(
        ok && text.contains("registered") && text.contains("epoch 0 closed"),
        "{text}"
    );
}

/// `kill -9` of the running auditor at random moments, again and again, while it runs epochs
/// back to back: every restart carries on from a ledger of whole epochs (each epoch is one
/// atomic write), and the final ledger verifies with every epoch closed and numbered in order.
#[test]
fn a_killed_auditor_leaves_whole_epochs_only() {
    let tmp = tempfile::tempdir().unwrap();
    let (_guard, net, file) = running_auditor_with_a_dataset(tmp.path(), 1);
    let a = net.auditor.as_ref().expect("an auditor");
    let d = a.dir.to_str().unwrap().to_string();
    let (ok, text) = auditor(&["register", "--dir", &d, file.to_str().unwrap()]);
    assert!(ok, "{text}");

    let epochs = || -> u64 {
        let (ok, text) = auditor(&["rewards", "--dir", &d, "--json"]);
        assert!(ok, "the ledger verifies at every point: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["epochs"].as_u64().unwrap_or(0)
    };
    let mut pid = a.pid;
    let mut children: Vec<std::process::Child> = Vec::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut last = 0;
    for round in 0..6 {
        // Let it run a little (an epoch over 3 nodes takes tens to hundreds of ms), then kill.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(300 + seed % 900));
        devnet::signal(pid, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while devnet::signal(pid, 0) && Instant::now() < deadline {
            devnet::reap(pid);
            std::thread::sleep(Duration::from_millis(10));
        }
        let now = epochs();
        assert!(
            now >= last,
            "round {round}: epochs went from {last} to {now}"
        );
        last = now;
        let child = Command::new(AUDITOR)
            .args(["run", "--dir", &d])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("restart the auditor");
        pid = child.id();
        // Reaped below through its pid (kill + waitpid), like the devnet's own processes.
        children.push(child);
    }
    // A last stretch, then a clean stop (SIGTERM).
    let deadline = Instant::now() + Duration::from_secs(30);
    while epochs() <= last && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    devnet::signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while devnet::signal(pid, 0) && Instant::now() < deadline {
        devnet::reap(pid);
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each was killed and reaped through its pid above; nothing is left to wait for.
    for mut c in children {
        let _ = c.try_wait();
    }
    let total = epochs();
    assert!(total > last, "epochs went on after the restarts: {total}");
    let (ok, text) = auditor(&["ledger", "show", "--dir", &d]);
    assert!(ok, "{text}");
    for e in 0..total {
        assert!(
            text.contains(&format!("epoch {e} closed")),
            "epoch {e} is closed in the ledger"
        );
    }
}
