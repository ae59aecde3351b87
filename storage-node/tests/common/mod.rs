//! Helpers for tests that run real `granary-node` processes on loopback.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

#[allow(unused_imports)]
#[path = "../../../client/src/net/mod.rs"]
pub mod net;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use granary_protocol::{
    Message, NodeId, SecretKey,
    frame::{FrameHeader, HEADER_LEN, MAX_FRAME},
    tls,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_granary-node");

/// The reference tag tests store and delete under.
pub const TAG: [u8; 32] = [0x42; 32];

/// A node directory plus (while running) its process.
pub struct NodeProc {
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub id: NodeId,
}

/// `granary-node init` into a fresh temp dir with extra args; `limits` (`key = value`, comma
/// separated) overrides lines of the `[limits]` table in config.toml.
pub fn init(extra: &[&str], limits: &str) -> NodeProc {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let mut n = init_at(&dir, extra, limits);
    n._tmp = Some(tmp);
    n
}

/// `init` into the given (new) directory.
pub fn init_at(dir: &Path, extra: &[&str], limits: &str) -> NodeProc {
    let dir = dir.to_path_buf();
    let out = Command::new(BIN)
        .args([
            "init",
            "--dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--label",
            "test-zone",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id: NodeId = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if !limits.is_empty() {
        let cfg = dir.join("config.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        for setting in limits.split(',') {
            let key = setting.split('=').next().unwrap().trim();
            let line = lines
                .iter_mut()
                .find(|l| l.starts_with(&format!("{key} =")))
                .unwrap();
            *line = setting.trim().to_string();
        }
        std::fs::write(&cfg, lines.join("\n")).unwrap();
    }
    NodeProc {
        dir,
        _tmp: None,
        child: None,
        addr: "127.0.0.1:0".parse().unwrap(),
        id,
    }
}

impl NodeProc {
    /// Starts `granary-node run` and waits for its "listening" line.
    pub fn start(&mut self) {
        assert!(self.child.is_none());
        let mut child = Command::new(BIN)
            .args(["run", "--dir", self.dir.to_str().unwrap()])
            .env("RUST_LOG", "granary_node=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.join("node.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.contains("listening on"),
            "node did not start: {line:?}; log: {}",
            self.log()
        );
        self.addr = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// SIGTERM and wait: graceful shutdown. Returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let mut child = self.child.take().unwrap();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().unwrap().success()
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) to the running node.
    pub fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().unwrap();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, signal) };
    }

    /// Whether the started node's process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_some()
    }

    /// Waits for the node to exit, at most `limit` (a bound that only catches hangs: past it
    /// the node is killed and the test fails), and returns its exit status.
    pub async fn wait_exit(&mut self, limit: std::time::Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node still running after {limit:?}; log: {}", self.log());
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// SIGKILL: crash.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn status(&self) -> String {
        let out = Command::new(BIN)
            .args(["status", "--dir", self.dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn started(extra: &[&str], limits: &str) -> NodeProc {
    let mut n = init(extra, limits);
    n.start();
    n
}

pub async fn client(node: &NodeProc, key: &SecretKey) -> net::NodeClient {
    let ep = net::client_endpoint(key).unwrap();
    net::NodeClient::connect(&ep, node.addr, node.id)
        .await
        .unwrap()
}

/// A raw QUIC connection to the node, for hand-made frames.
pub async fn raw_conn(node: &NodeProc) -> quinn::Connection {
    let ep = net::client_endpoint(&SecretKey::generate()).unwrap();
    ep.connect(node.addr, &tls::server_name(&node.id))
        .unwrap()
        .await
        .unwrap()
}

/// What came back on a raw stream.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a test helper; boxing would only obscure the matches
pub enum Reply {
    Msg(Message),
    /// The stream ended or was reset without a frame.
    Closed(String),
}

impl Reply {
    pub fn error_code(&self) -> Option<u16> {
        match self {
            Self::Msg(Message::Error(e)) => Some(e.code),
            _ => None,
        }
    }
}

pub async fn read_reply(recv: &mut quinn::RecvStream) -> Reply {
    let mut head = [0u8; HEADER_LEN];
    if let Err(e) = recv.read_exact(&mut head).await {
        return Reply::Closed(e.to_string());
    }
    let h = FrameHeader::decode(&head, MAX_FRAME).unwrap();
    let mut body = vec![0u8; h.body_len as usize];
    recv.read_exact(&mut body).await.unwrap();
    Reply::Msg(Message::decode_body(h.msg_type, &body).unwrap())
}

/// Sends `bytes` on a new stream (finishing it if `finish`) and reads the reply.
pub async fn raw_request(conn: &quinn::Connection, bytes: &[u8], finish: bool) -> Reply {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    if finish {
        send.finish().unwrap();
    }
    let r = read_reply(&mut recv).await;
    drop(send);
    r
}

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut ctr = 0u64;
    while out.len() < len {
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        h.update(&ctr.to_le_bytes());
        let mut xof = h.finalize_xof();
        let mut block = [0u8; 4096];
        xof.fill(&mut block);
        out.extend_from_slice(&block);
        ctr += 1;
    }
    out.truncate(len);
    out
}

/// Every file under `dir`, recursively.
pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
