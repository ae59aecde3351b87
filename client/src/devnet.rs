//! A local network of real `granary-node` processes on loopback, for demos and tests.
//!
//! `up` initialises N node directories under `dir`, starts each node as its own process (in
//! its own process group, so it outlives the command that started it), waits until each has
//! bound its port, and writes `dir/client.toml` listing them and `dir/devnet.toml` with their
//! pids. `down` stops them with SIGTERM (then SIGKILL after a grace period).

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

/// What `devnet.toml` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Devnet {
    /// The nodes.
    pub nodes: Vec<DevnetNode>,
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

/// Finds the `granary-node` binary: `$GRANARY_NODE_BIN`, next to this executable, or `PATH`.
pub fn node_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("GRANARY_NODE_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let cand = dir.join("granary-node");
            if cand.is_file() {
                return cand;
            }
        }
    }
    PathBuf::from("granary-node")
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
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    if dir.join("devnet.toml").exists() {
        return Err(fail(format!(
            "{} already has a devnet; run `granary devnet down --dir {}` first",
            dir.display(),
            dir.display()
        )));
    }
    let mut nodes = Vec::new();
    for i in 0..n {
        let nd = dir.join(format!("node-{i}"));
        if !nd.join("config.toml").exists() {
            let out = Command::new(node_bin)
                .args(["init", "--listen", "127.0.0.1:0", "--label"])
                .arg(format!("zone-{i}"))
                .arg("--dir")
                .arg(&nd)
                .args(init_args)
                .output()
                .map_err(|e| fail(format!("running {}: {e}", node_bin.display())))?;
            if !out.status.success() {
                return Err(fail(format!(
                    "granary-node init failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
        }
        let _ = std::fs::remove_file(nd.join("node.addr"));
        let log = std::fs::File::create(nd.join("node.log")).map_err(|e| fail(e.to_string()))?;
        let log2 = log.try_clone().map_err(|e| fail(e.to_string()))?;
        let child = Command::new(node_bin)
            .arg("run")
            .arg("--dir")
            .arg(&nd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|e| fail(format!("starting node {i}: {e}")))?;
        nodes.push(DevnetNode {
            dir: nd,
            pid: child.id(),
            addr: String::new(),
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &mut nodes {
        loop {
            let out = Command::new(node_bin)
                .args(["id", "--addr", "--dir"])
                .arg(&node.dir)
                .output()
                .map_err(|e| fail(e.to_string()))?;
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && text.parse::<NodeAddr>().is_ok() {
                node.addr = text;
                break;
            }
            if Instant::now() > deadline {
                return Err(fail(format!(
                    "node in {} did not start; see its node.log",
                    node.dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let net = Devnet { nodes };
    let text = toml::to_string_pretty(&net).map_err(|e| fail(e.to_string()))?;
    std::fs::write(dir.join("devnet.toml"), text).map_err(|e| fail(e.to_string()))?;
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

/// Stops every node (SIGTERM, then SIGKILL after 15 s, beyond the node's 10 s shutdown grace)
/// and removes `devnet.toml`.
pub fn down(dir: &Path) -> Result<usize, DevnetError> {
    let net = load(dir)?;
    let mut stopped = 0;
    for n in &net.nodes {
        if alive(n.pid) && signal(n.pid, libc::SIGTERM) {
            stopped += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in &net.nodes {
        while alive(n.pid) && Instant::now() < deadline {
            reap(n.pid);
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(n.pid) {
            signal(n.pid, libc::SIGKILL);
        }
        reap(n.pid);
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
