//! Helpers shared by the client's end-to-end tests: the binaries under test, and child processes
//! bounded by a timeout (killed, and the test failed, after it; nothing asserts on wall time).
#![allow(dead_code)] // each test crate uses its own subset

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

/// Bound on any one child process.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on building the node binary when it is missing.
pub(crate) const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// The `granary` CLI under test.
pub(crate) fn cli_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_granary"))
}

/// `granary-node` next to the CLI binary; built with the same target dir and profile if missing.
pub(crate) fn node_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("granary-node"))
}

/// The workspace binary `name` (its package has the same name) next to the CLI binary; built
/// with the same target dir and profile if missing.
pub(crate) fn workspace_bin(name: &str) -> PathBuf {
    let cli = cli_bin();
    let out_dir = cli.parent().expect("CLI binary has a directory");
    let bin = out_dir.join(name);
    if bin.is_file() {
        return bin;
    }
    // <target>/<profile dir>/granary: the target dir is two levels up.
    let profile_dir = out_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    let target = out_dir
        .parent()
        .expect("binary directory has a parent (the target dir)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", name, "--bin", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target);
    match profile_dir.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = run_with_timeout(cmd, BUILD_TIMEOUT);
    assert!(
        out.status.success() && bin.is_file(),
        "{name} is missing at {} and building it failed; build it first with \
         `cargo build -p {name} --bin {name}` (same CARGO_TARGET_DIR).\n{}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Runs `cmd` to completion with its output captured; kills it and panics after `timeout`.
pub(crate) fn run_with_timeout(cmd: Command, timeout: Duration) -> Output {
    run_with_stdin(cmd, None, timeout)
}

/// `run_with_timeout`, with `input` (if any) written to the child's stdin, which is then closed.
pub(crate) fn run_with_stdin(
    mut cmd: Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> Output {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {desc}: {e}"));
    let writer = input.map(|data| {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // A child that exits without reading it all makes this fail; its status tells why.
        thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, &data);
        })
    });
    let (out, err) = drain(&mut child);
    let status = wait_with_timeout(&mut child, timeout, &desc);
    if let Some(w) = writer {
        w.join().expect("stdin writer");
    }
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

pub(crate) type Reader = thread::JoinHandle<Vec<u8>>;

/// Reads a child's piped stdout and stderr on threads (so a full pipe never blocks it).
pub(crate) fn drain(child: &mut Child) -> (Reader, Reader) {
    fn reader(mut r: impl Read + Send + 'static) -> Reader {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    }
    let out = child.stdout.take().expect("stdout is piped");
    let err = child.stderr.take().expect("stderr is piped");
    (reader(out), reader(err))
}

/// Waits for `child`; kills it and panics after `timeout`.
pub(crate) fn wait_with_timeout(child: &mut Child, timeout: Duration, desc: &str) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().expect("waiting for a child") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{desc} did not finish within {timeout:?}; killed it");
        }
        thread::sleep(Duration::from_millis(10));
    }
}
