//! Memory stays bounded: packing and reassembling a dataset much larger than the pipeline's
//! buffers keeps the CLI's peak RSS under 256 MiB. The 10 GiB figure in docs/performance.md
//! comes from `scripts/rss.sh 10`; this test runs the same check at 1 GiB.

use std::process::Command;

const LIMIT_KIB: u64 = 256 * 1024;

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "granary failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json output")
}

#[test]
fn pack_and_reassemble_of_1gib_stay_under_256mib_rss() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // One sparse 1 GiB file (reads as zeros, costs no disk) plus a few small ones.
    let big = std::fs::File::create(src.join("big.bin")).unwrap();
    big.set_len(1 << 30).unwrap();
    for i in 0..50 {
        std::fs::write(src.join(format!("small-{i}")), vec![i as u8; 10_000]).unwrap();
    }
    let exe = env!("CARGO_BIN_EXE_granary");
    let store = t.path().join("store");
    let put = json(
        &Command::new(exe)
            .args(["put", "--json", "-q", "--store"])
            .arg(&store)
            .arg(&src)
            .output()
            .unwrap(),
    );
    let cap = put["capability"].as_str().unwrap().to_string();
    let put_rss = put["peak_rss_kib"].as_u64().unwrap();
    let get = json(
        &Command::new(exe)
            .args(["get", "--json", "-q", &cap, "--store"])
            .arg(&store)
            .arg(t.path().join("out"))
            .output()
            .unwrap(),
    );
    let get_rss = get["peak_rss_kib"].as_u64().unwrap();
    println!(
        "peak RSS: put {} MiB, get {} MiB",
        put_rss / 1024,
        get_rss / 1024
    );
    assert_eq!(get["bytes"].as_u64().unwrap(), (1 << 30) + 50 * 10_000);
    assert!(
        put_rss > 0 && put_rss < LIMIT_KIB,
        "put peak RSS {put_rss} KiB"
    );
    assert!(
        get_rss > 0 && get_rss < LIMIT_KIB,
        "get peak RSS {get_rss} KiB"
    );
}
