//! The CLI as a Unix tool: when the reader of its output goes away early (`granary cat CAP F |
//! head`), it ends quietly, killed by SIGPIPE as `cat` would be, with no error message or
//! panic.

use std::{
    io::Read,
    os::unix::process::ExitStatusExt,
    process::{Command, Stdio},
};

/// Puts `data` as `a.bin` into a local store; returns the store and the capability.
fn put(dir: &std::path::Path, data: &[u8]) -> (std::path::PathBuf, String) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.bin"), data).unwrap();
    let store = dir.join("store");
    let out = Command::new(env!("CARGO_BIN_EXE_granary"))
        .args(["put", "--json", "-q", "--store"])
        .arg(&store)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (store, v["capability"].as_str().unwrap().to_string())
}

/// Starts `granary ARGS… PATHS…` with its stdout and stderr piped.
fn spawn(args: &[&str], paths: &[&std::path::Path], rest: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_granary"))
        .args(args)
        .args(paths)
        .args(rest)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The process was ended by SIGPIPE and said nothing on stderr.
fn assert_quiet_sigpipe(out: &std::process::Output) {
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_reader_that_stops_early_ends_the_cli_quietly() {
    let t = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let (store, cap) = put(t.path(), &data);

    // `granary cat` read for 10 bytes, then the pipe is closed.
    let mut child = spawn(&["cat", "--store"], &[&store], &[&cap, "a.bin"]);
    let mut head = [0u8; 10];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    assert_eq!(head, data[..10]);
    assert_quiet_sigpipe(&child.wait_with_output().unwrap());

    // `granary put --json` whose reader is gone before it prints: the put itself completes.
    let src = t.path().join("src");
    let store2 = t.path().join("store2");
    let mut child = spawn(&["put", "--json", "-q", "--store"], &[&store2, &src], &[]);
    drop(child.stdout.take());
    assert_quiet_sigpipe(&child.wait_with_output().unwrap());
    // Its capability went into the closed pipe, but the shards are all there: as many files,
    // as many bytes, as the first put of the same file wrote.
    let tree = |root: &std::path::Path| {
        let (mut files, mut bytes) = (0, 0);
        let mut dirs = vec![root.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    dirs.push(e.path());
                } else {
                    files += 1;
                    bytes += e.metadata().unwrap().len();
                }
            }
        }
        (files, bytes)
    };
    assert_eq!(
        tree(&store2),
        tree(&store),
        "the interrupted put stored everything"
    );
}
