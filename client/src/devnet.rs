//! A local network of real `granary-node` processes on loopback, for demos and tests.
//!
//! `up` initialises N node directories under `dir`, starts each node as its own process (in
//! its own process group, so it outlives the command that started it), waits until each has
//! bound its port, and writes `dir/client.toml` listing them and `dir/devnet.toml` with their
//! pids. [`up_full`] also starts an auditor (`dir/auditor`) that the nodes trust. `down` stops
//! them with SIGTERM (then SIGKILL after a grace period); [`start`] brings back nodes that were
//! killed, on the ports they had.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use granary_protocol::NodeAddr;
use serde::{Deserialize, Serialize};

use crate::config::{ClientConfig, save};

/// One node of a devnet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevnetNode {
    /// Its data directory.
    pub dir: PathBuf,
    /// Its process id.
    pub pid: u32,
    /// `<id>@<addr>`.
    pub addr: String,
}

/// The auditor process of a devnet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevnetAuditor {
    /// Its directory.
    pub dir: PathBuf,
    /// Its process id.
    pub pid: u32,
    /// Its id (the nodes list it as an auditor).
    pub id: String,
}

/// What `devnet.toml` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Devnet {
    /// The nodes.
    pub nodes: Vec<DevnetNode>,
    /// The auditor, if one was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auditor: Option<DevnetAuditor>,
}

/// An auditor to start with a devnet ([`DevnetOptions::auditor`]).
#[derive(Debug, Clone)]
pub struct AuditorSpec {
    /// The `granary-auditor` binary.
    pub bin: PathBuf,
    /// Seconds between its epochs.
    pub epoch_secs: u64,
}

/// Devnet failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevnetError {
    /// A command or file operation failed.
    #[error("{0}")]
    Failed(String),
}

fn fail(s: impl Into<String>) -> DevnetError {
    DevnetError::Failed(s.into())
}

/// `$env` if set, else `name` next to this executable (or one directory up, for test
/// binaries under `deps/`).
fn find_binary(env: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|cand| cand.is_file())
}

/// Finds the `granary-node` binary: `$GRANARY_NODE_BIN`, next to this executable, or `PATH`.
pub fn node_binary() -> PathBuf {
    find_binary("GRANARY_NODE_BIN", "granary-node").unwrap_or_else(|| PathBuf::from("granary-node"))
}

/// Finds the `granary-auditor` binary: `$GRANARY_AUDITOR_BIN` or next to this executable.
pub fn auditor_binary() -> Option<PathBuf> {
    find_binary("GRANARY_AUDITOR_BIN", "granary-auditor")
}

/// Starts `bin run --dir dir` in its own process group (so it outlives this process), its
/// output appended to `log`; its pid.
fn run_logged(bin: &Path, dir: &Path, log: &Path) -> std::io::Result<u32> {
    let log = std::fs::File::create(log)?;
    let child = Command::new(bin)
        .arg("run")
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    Ok(child.id())
}

/// Runs `bin args…` to completion; its trimmed stdout, or its stderr as the error.
fn output(bin: &Path, args: &[&std::ffi::OsStr]) -> Result<String, DevnetError> {
    let out = Command::new(bin)
        .args(args)
        .output()
        .map_err(|e| fail(format!("running {}: {e}", bin.display())))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{} {}: {}",
            bin.display(),
            args.first()
                .map_or(String::new(), |a| a.to_string_lossy().into_owned()),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Starts `n` nodes under `dir` and writes `dir/client.toml`.
pub fn up(dir: &Path, n: usize, node_bin: &Path) -> Result<Devnet, DevnetError> {
    up_with(dir, n, node_bin, &[])
}

/// [`up`], passing `init_args` to each `granary-node init` (e.g. sealing settings).
pub fn up_with(
    dir: &Path,
    n: usize,
    node_bin: &Path,
    init_args: &[String],
) -> Result<Devnet, DevnetError> {
    let opts = DevnetOptions {
        init_args: init_args.to_vec(),
        ..DevnetOptions::default()
    };
    up_full(dir, n, node_bin, &opts)
}

/// How [`up_full`] sets up a devnet.
#[derive(Debug, Clone, Default)]
pub struct DevnetOptions {
    /// Extra arguments for each `granary-node init`.
    pub init_args: Vec<String>,
    /// An auditor to start, that the nodes trust.
    pub auditor: Option<AuditorSpec>,
    /// Failure domains: node i gets the label `zone-{i % zones}`; 0 gives each node its own.
    pub zones: usize,
}

/// [`up_with`] with all of [`DevnetOptions`]: with an auditor, an auditor process that the
/// nodes trust, challenging them every `epoch_secs` once a dataset is registered with it
/// (`dir/auditor`); with `zones`, nodes spread over that many failure-domain labels.
pub fn up_full(
    dir: &Path,
    n: usize,
    node_bin: &Path,
    opts: &DevnetOptions,
) -> Result<Devnet, DevnetError> {
    let auditor = opts.auditor.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    if dir.join("devnet.toml").exists() {
        return Err(fail(format!(
            "{} already has a devnet; run `granary devnet down --dir {}` first",
            dir.display(),
            dir.display()
        )));
    }
    let adir = dir.join("auditor");
    let mut init_args = opts.init_args.clone();
    let auditor_id = match auditor {
        Some(a) => {
            let id = if adir.join("auditor.toml").exists() {
                output(&a.bin, &["id".as_ref(), "--dir".as_ref(), adir.as_os_str()])?
            } else {
                output(
                    &a.bin,
                    &["init".as_ref(), "--dir".as_ref(), adir.as_os_str()],
                )?
            };
            init_args.push(format!("--auditor={id}"));
            Some(id)
        }
        None => None,
    };
    let init_args = &init_args[..];
    let mut nodes = Vec::new();
    for i in 0..n {
        let nd = dir.join(format!("node-{i}"));
        if !nd.join("config.toml").exists() {
            let label = format!("zone-{}", if opts.zones > 0 { i % opts.zones } else { i });
            let mut args: Vec<&std::ffi::OsStr> = vec![
                "init".as_ref(),
                "--listen".as_ref(),
                "127.0.0.1:0".as_ref(),
                "--label".as_ref(),
                label.as_ref(),
                "--dir".as_ref(),
                nd.as_os_str(),
            ];
            args.extend(init_args.iter().map(std::ffi::OsStr::new));
            output(node_bin, &args)?;
        }
        let _ = std::fs::remove_file(nd.join("node.addr"));
        let pid = run_logged(node_bin, &nd, &nd.join("node.log"))
            .map_err(|e| fail(format!("starting node {i}: {e}")))?;
        nodes.push(DevnetNode {
            dir: nd,
            pid,
            addr: String::new(),
        });
    }
    // Record the pids before waiting, so that `down` stops them even if one fails to start.
    write_devnet(
        dir,
        &Devnet {
            nodes: nodes.clone(),
            auditor: None,
        },
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &mut nodes {
        node.addr = wait_addr(node_bin, &node.dir, deadline)?;
        pin_port(&node.dir, &node.addr)?;
    }
    let auditor = match (auditor, auditor_id) {
        (Some(a), Some(id)) => {
            let epoch = a.epoch_secs.to_string();
            let mut args: Vec<&std::ffi::OsStr> = vec![
                "init".as_ref(),
                "--force".as_ref(),
                "--dir".as_ref(),
                adir.as_os_str(),
                "--epoch-secs".as_ref(),
                epoch.as_ref(),
            ];
            for node in &nodes {
                args.push("--node".as_ref());
                args.push(node.addr.as_ref());
            }
            output(&a.bin, &args)?;
            let pid = run_logged(&a.bin, &adir, &adir.join("auditor.log"))
                .map_err(|e| fail(format!("starting the auditor: {e}")))?;
            Some(DevnetAuditor { dir: adir, pid, id })
        }
        _ => None,
    };
    let net = Devnet { nodes, auditor };
    write_devnet(dir, &net)?;
    save(
        &dir.join("client.toml"),
        &ClientConfig {
            key_file: PathBuf::from("client.key"),
            nodes: net.nodes.iter().map(|n| n.addr.clone()).collect(),
        },
    )
    .map_err(|e| fail(e.to_string()))?;
    Ok(net)
}

/// Waits (until `deadline`) for the node in `dir` to bind its port; its `<id>@<addr>`.
fn wait_addr(node_bin: &Path, dir: &Path, deadline: Instant) -> Result<String, DevnetError> {
    loop {
        let out = Command::new(node_bin)
            .args(["id", "--addr", "--dir"])
            .arg(dir)
            .output()
            .map_err(|e| fail(e.to_string()))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && text.parse::<NodeAddr>().is_ok() {
            return Ok(text);
        }
        if Instant::now() > deadline {
            return Err(fail(format!(
                "node in {} did not start; see its node.log",
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A node initialised to listen on port 0 gets whatever port is free on its first start; this
/// writes that port into its config, so a restarted node is found where the clients expect it.
fn pin_port(dir: &Path, addr: &str) -> Result<(), DevnetError> {
    let bound = addr
        .parse::<NodeAddr>()
        .map_err(|e| fail(format!("{addr}: {e}")))?
        .addr;
    let path = dir.join("config.toml");
    let text =
        std::fs::read_to_string(&path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    let mut changed = false;
    let pinned: Vec<String> = text
        .lines()
        .map(|l| match l.strip_prefix("listen = ") {
            Some(v) if v.trim_matches('"').ends_with(":0") => {
                changed = true;
                format!("listen = \"{bound}\"")
            }
            _ => l.to_string(),
        })
        .collect();
    if changed {
        let tmp = dir.join("config.toml.tmp");
        std::fs::write(&tmp, pinned.join("\n") + "\n")
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| fail(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

fn write_devnet(dir: &Path, net: &Devnet) -> Result<(), DevnetError> {
    let text = toml::to_string_pretty(net).map_err(|e| fail(e.to_string()))?;
    std::fs::write(dir.join("devnet.toml"), text).map_err(|e| fail(e.to_string()))
}

/// Starts again the nodes of the devnet in `dir` whose process is gone (killed or crashed), on
/// their old ports, and records their new pids; returns their indexes.
pub fn start(dir: &Path, node_bin: &Path) -> Result<Vec<usize>, DevnetError> {
    let mut net = load(dir)?;
    let mut started = Vec::new();
    for (i, node) in net.nodes.iter_mut().enumerate() {
        reap(node.pid);
        if alive(node.pid) {
            continue;
        }
        let _ = std::fs::remove_file(node.dir.join("node.addr"));
        node.pid = run_logged(node_bin, &node.dir, &node.dir.join("node.log"))
            .map_err(|e| fail(format!("starting node {i}: {e}")))?;
        started.push(i);
    }
    // Record the pids before waiting, so that `down` stops them even if one fails to start.
    write_devnet(dir, &net)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    for &i in &started {
        let node = &net.nodes[i];
        let addr = wait_addr(node_bin, &node.dir, deadline)?;
        if addr != node.addr {
            return Err(fail(format!(
                "node {i} came back as {addr}, not {}; its config.toml changed",
                node.addr
            )));
        }
    }
    Ok(started)
}

/// Reads `dir/devnet.toml`.
pub fn load(dir: &Path) -> Result<Devnet, DevnetError> {
    let text = std::fs::read_to_string(dir.join("devnet.toml"))
        .map_err(|e| fail(format!("{}/devnet.toml: {e}", dir.display())))?;
    toml::from_str(&text).map_err(|e| fail(e.to_string()))
}

fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// Sends `signal` to a node process.
pub fn signal(pid: u32, signal: i32) -> bool {
    // SAFETY: plain kill(2) on a pid we started.
    unsafe { libc::kill(pid as i32, signal) == 0 }
}

/// Stops every node and the auditor (SIGTERM, then SIGKILL after 15 s, beyond the node's 10 s
/// shutdown grace) and removes `devnet.toml`; returns how many nodes were stopped.
pub fn down(dir: &Path) -> Result<usize, DevnetError> {
    let net = load(dir)?;
    let mut stopped = 0;
    let pids: Vec<u32> = net
        .nodes
        .iter()
        .map(|n| n.pid)
        .chain(net.auditor.as_ref().map(|a| a.pid))
        .collect();
    for (i, &pid) in pids.iter().enumerate() {
        if alive(pid) && signal(pid, libc::SIGTERM) && i < net.nodes.len() {
            stopped += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for &pid in &pids {
        while alive(pid) && Instant::now() < deadline {
            reap(pid);
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(pid) {
            signal(pid, libc::SIGKILL);
        }
        reap(pid);
    }
    let _ = std::fs::remove_file(dir.join("devnet.toml"));
    Ok(stopped)
}

/// Collects a child's exit status if it was ours, so it does not linger as a zombie.
pub fn reap(pid: u32) {
    // SAFETY: waitpid with WNOHANG on a pid; harmless if it is not our child.
    unsafe {
        let mut status = 0;
        libc::waitpid(pid as i32, &mut status, libc::WNOHANG);
    }
}
