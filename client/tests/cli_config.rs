//! The `granary` CLI without nodes: errors for a client config that is named but missing, and
//! progress bars that stay off a stderr that is not a terminal.
//!
//! Every child gets temporary `HOME` and `XDG_CONFIG_HOME` (never the user's config) and no
//! `GRANARY_*` variables unless a test sets them. Each child is bounded by a timeout (hangs only).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

mod common;

use common::{TIMEOUT, run_with_timeout};

/// A `granary` command isolated from the user's environment: `HOME` and `XDG_CONFIG_HOME` under
/// `root`, no `GRANARY_CONFIG` / `GRANARY_STORE`, a capable `TERM` (so that only the missing
/// terminal can turn progress bars off), stdin closed and output captured.
fn granary(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_granary"));
    cmd.env("HOME", root.join("home"))
        .env("XDG_CONFIG_HOME", root.join("xdg"))
        .env("TERM", "xterm-256color")
        .env_remove("GRANARY_CONFIG")
        .env_remove("GRANARY_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `cmd` to completion (bounded by [`TIMEOUT`]).
fn run(cmd: Command) -> Output {
    run_with_timeout(cmd, TIMEOUT)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A valid config with no nodes at `path` (it would fail differently if it were used).
fn write_config(path: &Path) -> PathBuf {
    fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    fs::write(path, "key_file = \"client.key\"\nnodes = []\n").expect("write config");
    path.to_path_buf()
}

/// A config named by `--config` or `$GRANARY_CONFIG` that does not exist is an error naming
/// that file (exit 1), never a fall back to the next place; with no config anywhere the error
/// names the platform default and how to give one. Loading a config creates its key, so no key
/// next to the fallbacks proves they were not read.
#[test]
fn a_missing_config_is_an_error_that_names_it() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    let env_cfg = write_config(&root.join("env/client.toml"));
    let platform = write_config(&root.join("xdg/granary/client.toml"));
    let no_key = |cfg: &Path| {
        assert!(
            !cfg.with_file_name("client.key").exists(),
            "{} was loaded",
            cfg.display()
        );
    };

    let missing = root.join("nope/client.toml");
    let mut cmd = granary(root);
    cmd.args(["status", "--config"])
        .arg(&missing)
        .env("GRANARY_CONFIG", &env_cfg);
    let out = run(cmd);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty(), "{err}");
    assert!(
        err.contains(&format!("client config {}", missing.display()))
            && err.contains("No such file"),
        "{err}"
    );

    let missing_env = root.join("nope/env.toml");
    let mut cmd = granary(root);
    cmd.arg("status").env("GRANARY_CONFIG", &missing_env);
    let out = run(cmd);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("client config {}", missing_env.display())),
        "{err}"
    );
    no_key(&env_cfg);
    no_key(&platform);

    // Nothing anywhere: the error says where the default would be, and the other ways.
    fs::remove_file(&platform).expect("rm");
    let mut cmd = granary(root);
    cmd.arg("status");
    let out = run(cmd);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&platform.display().to_string())
            && err.contains("--config")
            && err.contains("GRANARY_CONFIG"),
        "{err}"
    );
}

/// Without `-q`, `put` and `get` of 50 MB with stderr a pipe draw no progress bar: stderr holds
/// only the one summary line, no carriage returns, ANSI escapes or bar text.
#[test]
fn progress_bars_stay_off_a_stderr_that_is_not_a_terminal() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    let data = root.join("data");
    fs::create_dir_all(&data).expect("mkdir");
    for i in 0..5u64 {
        let mut b = vec![0u8; 10_000_000];
        granary_client::sample::fill(&mut b, 40 + i);
        fs::write(data.join(format!("part-{i}.bin")), b).expect("write");
    }
    let store = root.join("store");
    let quiet_summary = |out: &Output, summary: &str| {
        let err = stderr(out);
        assert!(out.status.success(), "{err}");
        let lines: Vec<&str> = err.lines().collect();
        assert!(
            lines.len() == 1 && lines[0].starts_with(summary),
            "only the summary line on stderr: {err:?}"
        );
        for bar in ["\r", "\x1b", "[=", "eta", "packing", "getting", "MiB/s"] {
            assert!(!err.contains(bar), "{bar:?} on stderr: {err:?}");
        }
    };

    let mut cmd = granary(root);
    cmd.arg("put").arg(&data).arg("--store").arg(&store);
    let out = run(cmd);
    quiet_summary(&out, "stored 5 files, ");
    let cap = String::from_utf8(out.stdout).expect("utf-8");
    let cap = cap.trim();
    assert!(cap.starts_with("granary:"), "{cap}");

    let got = root.join("got");
    let mut cmd = granary(root);
    cmd.args(["get", cap]).arg(&got).arg("--store").arg(&store);
    let out = run(cmd);
    quiet_summary(&out, "got 5 files (50.0 MB)");
    assert!(out.stdout.is_empty());
    for i in 0..5 {
        let name = format!("part-{i}.bin");
        assert!(
            fs::read(got.join(&name)).expect("read") == fs::read(data.join(&name)).expect("read"),
            "{name} differs"
        );
    }
}
