//! End-to-end tests of the client data path against a real on-disk shard store.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use granary_client::{
    Capability, Dataset, ErasureParams, PackOptions, ReadError, ReadStats, Source,
    manifest::{EntryKind, ROOT_VERSION, RootRecord},
    pack,
    pack::PackError,
    read::SegmentError,
    store::{ShardStore, dir::DirStore},
};
use proptest::prelude::*;

/// Small shards so that tests exercise many segments with little data.
const SHARD: u32 = 4096;

fn opts(k: u8, m: u8) -> PackOptions {
    PackOptions {
        erasure: ErasureParams { data: k, parity: m },
        shard_size: Some(SHARD),
        workers: 2,
        ..PackOptions::default()
    }
}

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    granary_client::sample::fill(&mut v, seed);
    v
}

/// Reads one range of each file, picked from `ranges` (reduced into the file's length), and
/// compares it with the original.
fn check_ranges<'a>(
    ds: &Dataset,
    store: &DirStore,
    files: &[(String, Vec<u8>)],
    ranges: impl Iterator<Item = &'a (u64, u64)>,
) -> Result<(), TestCaseError> {
    for ((name, data), (a, b)) in files.iter().zip(ranges) {
        let e = ds.file(name).unwrap();
        let len = data.len() as u64;
        let (mut s, mut x) = (a % (len + 1), b % (len + 1));
        if s > x {
            std::mem::swap(&mut s, &mut x);
        }
        let got = ds
            .read_range(store, e, s..x, &mut ReadStats::default())
            .unwrap();
        prop_assert_eq!(&got[..], &data[s as usize..x as usize]);
    }
    Ok(())
}

/// Every regular file under `root`, relative path → content.
fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            let p = e.path();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                out.push((
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

fn shard_files(store_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in fs::read_dir(store_dir.join("shards")).unwrap() {
        for f in fs::read_dir(d.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_none() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn write_tree(root: &Path, files: &[(String, Vec<u8>)]) {
    for (name, data) in files {
        let p = root.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
}

fn round_trip(dir: &Path, o: &PackOptions) -> (Capability, DirStore, PathBuf) {
    let store = DirStore::open(dir.join("store"), false).unwrap();
    let report = pack(Source::Path(dir.join("src")), &store, o).unwrap();
    let out = dir.join("out");
    let ds = Dataset::open(&report.capability, &store).unwrap();
    ds.extract(&store, &out, None, &mut ReadStats::default())
        .unwrap();
    assert_eq!(snapshot(&dir.join("src")), snapshot(&out));
    (report.capability, store, out)
}

fn tree_strategy() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    proptest::collection::vec(
        (
            0u8..4,
            0u8..6,
            prop_oneof![0usize..10, 0usize..5000, 0usize..40_000],
            any::<u64>(),
        ),
        1..12,
    )
    .prop_map(|spec| {
        let mut seen = std::collections::BTreeMap::new();
        for (dir, name, len, seed) in spec {
            seen.insert(format!("d{dir}/f{name}"), bytes(len, seed));
        }
        seen.into_iter().collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Any dataset round-trips byte-exact, and still does after losing up to m shards of every
    /// segment; range reads equal the same slice of the original.
    #[test]
    fn any_dataset_round_trips_and_survives_m_losses(
        files in tree_strategy(), k in 1u8..6, m in 1u8..4, encrypt in any::<bool>(),
        lose_seed in any::<u64>(), ranges in proptest::collection::vec((any::<u64>(), any::<u64>()), 4)
    ) {
        let t = tempfile::tempdir().unwrap();
        write_tree(&t.path().join("src"), &files);
        let o = PackOptions { encrypt, ..opts(k, m) };
        let (cap, store, _) = round_trip(t.path(), &o);
        let ds = Dataset::open(&cap, &store).unwrap();
        // Range reads.
        check_ranges(&ds, &store, &files, ranges.iter().cycle())?;
        // Lose up to m shards of every data segment (never the manifest's, to keep the test
        // simple). One id can stand at several positions (k = 1 makes parity equal data, and
        // zero padding repeats), so an id is removed only if no segment then loses more than m.
        let mut rng = lose_seed | 1;
        let mut ids: Vec<_> = ds.manifest().segments.iter().flat_map(|s| s.shards.clone()).collect();
        for i in (1..ids.len()).rev() {
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
            ids.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        let manifest_ids: std::collections::HashSet<_> = ds.root.manifest_segments.iter().flat_map(|s| s.shards.clone()).collect();
        let mut removed = std::collections::HashSet::new();
        for id in ids {
            if manifest_ids.contains(&id) || removed.contains(&id) {
                continue;
            }
            removed.insert(id);
            let ok = ds.manifest().segments.iter().all(|s| s.shards.iter().filter(|x| removed.contains(x)).count() <= m as usize);
            if !ok {
                removed.remove(&id);
            }
        }
        for id in &removed {
            store.remove_shard(id).unwrap();
        }
        let out2 = t.path().join("out2");
        let ds = Dataset::open(&cap, &store).unwrap();
        let mut stats = ReadStats::default();
        ds.extract(&store, &out2, None, &mut stats).unwrap();
        prop_assert_eq!(snapshot(&t.path().join("src")), snapshot(&out2));
        // Degraded range reads rebuild just the columns they need.
        check_ranges(&ds, &store, &files, ranges.iter().rev().cycle())?;
    }

    /// Any single flipped byte in any shard is detected: the read never returns wrong bytes,
    /// it counts a failed shard and rebuilds around it.
    #[test]
    fn any_flipped_byte_is_detected(files in tree_strategy(), pick in any::<prop::sample::Index>(), pos in any::<prop::sample::Index>()) {
        let t = tempfile::tempdir().unwrap();
        write_tree(&t.path().join("src"), &files);
        let (cap, store, _) = round_trip(t.path(), &opts(3, 2));
        let shards = shard_files(&t.path().join("store"));
        let victim = &shards[pick.index(shards.len())];
        let mut b = fs::read(victim).unwrap();
        let at = pos.index(b.len());
        b[at] ^= 0x01;
        fs::write(victim, &b).unwrap();
        let ds = Dataset::open(&cap, &store).unwrap();
        let mut stats = ReadStats::default();
        let out2 = t.path().join("out2");
        ds.extract(&store, &out2, None, &mut stats).unwrap();
        prop_assert_eq!(snapshot(&t.path().join("src")), snapshot(&out2));
        // A flipped data shard of a data segment is read, fails and is rebuilt around; a flipped
        // manifest shard is rebuilt around inside `open` (which succeeded above); a parity shard
        // is not read on a healthy read.
        let victim_name = victim.file_name().unwrap().to_str().unwrap().to_string();
        // Only data shards holding some of the segment's bytes are read: a data shard that is
        // all zero padding (a short segment) is never touched by a healthy read.
        let is_read_data_shard = ds.manifest().segments.iter().any(|s| {
            s.shards[..s.shards.len() - 2].iter().enumerate().any(|(i, id)| {
                hex(&id.0) == victim_name && (i as u64) * (s.shard_len as u64) < s.len as u64
            })
        });
        if is_read_data_shard {
            prop_assert!(stats.shard_failures >= 1 && stats.rebuilds >= 1, "{stats:?}");
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sample_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            (
                format!("dir{}/file{i:03}", i % 5),
                bytes(100 + i * 997, i as u64),
            )
        })
        .chain([("big.bin".to_string(), bytes(100_000, 99))])
        .collect();
    write_tree(root, &files);
    files
}

#[test]
fn more_than_m_lost_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(&t.path().join("src"));
    let (cap, store, _) = round_trip(t.path(), &opts(4, 2));
    let ds = Dataset::open(&cap, &store).unwrap();
    let seg = &ds.manifest().segments[0];
    for id in &seg.shards[..3] {
        store.remove_shard(id).unwrap();
    }
    let err = ds
        .extract(
            &store,
            &t.path().join("out2"),
            None,
            &mut ReadStats::default(),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            ReadError::Segment {
                segment: 0,
                source: SegmentError::TooManyLost {
                    available: 3,
                    needed: 4,
                    ..
                }
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("only 3 of 4 shards"), "{err}");
    // Nothing half-written is left under a final name.
    for (p, _) in snapshot(&t.path().join("out2")) {
        assert!(!p.to_string_lossy().contains("granary-partial"), "{p:?}");
    }
}

#[test]
fn truncated_and_swapped_shards_are_treated_as_lost() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(&t.path().join("src"));
    let (cap, store, _) = round_trip(t.path(), &opts(4, 2));
    let ds = Dataset::open(&cap, &store).unwrap();
    let seg = &ds.manifest().segments[1];
    // Truncate data shard 0; replace data shard 1 with another shard's bytes (wrong id).
    let p0 = store.shard_path(&seg.shards[0]);
    let b0 = fs::read(&p0).unwrap();
    fs::write(&p0, &b0[..b0.len() / 2]).unwrap();
    let other = fs::read(store.shard_path(&ds.manifest().segments[2].shards[0])).unwrap();
    fs::write(store.shard_path(&seg.shards[1]), other).unwrap();
    let mut stats = ReadStats::default();
    ds.extract(&store, &t.path().join("out2"), None, &mut stats)
        .unwrap();
    assert_eq!(
        snapshot(&t.path().join("src")),
        snapshot(&t.path().join("out2"))
    );
    assert!(
        stats.shard_failures >= 2 && stats.rebuilds >= 1,
        "{stats:?}"
    );
    // A range read inside the truncated shard also routes around it.
    let e = ds.file("big.bin").unwrap();
    let got = ds
        .read_range(&store, e, 10..90_000, &mut ReadStats::default())
        .unwrap();
    assert_eq!(got, bytes(100_000, 99)[10..90_000]);
}

#[test]
fn wrong_key_missing_key_and_future_versions_are_clear_errors() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(&t.path().join("src"));
    let (cap, store, _) = round_trip(t.path(), &opts(2, 1));
    let wrong = Capability {
        key: Some(granary_client::ids::DatasetKey::generate()),
        ..cap.clone()
    };
    assert!(matches!(
        Dataset::open(&wrong, &store),
        Err(ReadError::WrongKey)
    ));
    let keyless = Capability {
        key: None,
        ..cap.clone()
    };
    assert!(matches!(
        Dataset::open(&keyless, &store),
        Err(ReadError::KeyRequired)
    ));
    // A truncated capability string is refused before any I/O.
    let text = cap.to_string();
    assert!(text[..text.len() - 5].parse::<Capability>().is_err());

    // A root record from a future version: same store, re-stored under its own hash.
    let root = store.get_root(&cap.id).unwrap();
    let mut future = root.clone();
    future[4] = ROOT_VERSION + 1;
    let fid = granary_client::ids::DatasetId(*blake3::hash(&future).as_bytes());
    store.put_root(&fid, &future, 3).unwrap();
    let err = Dataset::open(
        &Capability {
            id: fid,
            ..cap.clone()
        },
        &store,
    )
    .unwrap_err();
    assert!(err.to_string().contains("newer than this client"), "{err}");
    // A corrupted root record (stored under its own new hash, so only the decoder can object).
    let mut bad = root.clone();
    let n = bad.len();
    bad.truncate(n - 7);
    let bid = granary_client::ids::DatasetId(*blake3::hash(&bad).as_bytes());
    store.put_root(&bid, &bad, 3).unwrap();
    assert!(matches!(
        Dataset::open(
            &Capability {
                id: bid,
                ..cap.clone()
            },
            &store
        ),
        Err(ReadError::Format(_))
    ));
    // A root record that was swapped on disk fails its hash check.
    let d = RootRecord::decode(&root).unwrap();
    assert_eq!(d.erasure, ErasureParams { data: 2, parity: 1 });
}

#[test]
fn symlinks_empty_things_and_odd_names_round_trip() {
    use std::os::unix::ffi::OsStringExt;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("empty/dir")).unwrap();
    fs::write(src.join("zero"), b"").unwrap();
    fs::write(
        src.join(std::ffi::OsString::from_vec(b"bad\xffname".to_vec())),
        b"odd",
    )
    .unwrap();
    std::os::unix::fs::symlink("../../etc/passwd", src.join("escape")).unwrap();
    std::os::unix::fs::symlink("zero", src.join("inner")).unwrap();
    let (cap, store, out) = round_trip(
        t.path(),
        &PackOptions {
            encrypt: false,
            ..opts(2, 1)
        },
    );
    assert!(out.join("empty/dir").is_dir());
    assert_eq!(
        fs::read_link(out.join("escape")).unwrap(),
        Path::new("../../etc/passwd")
    );
    assert_eq!(fs::read_link(out.join("inner")).unwrap(), Path::new("zero"));
    let ds = Dataset::open(&cap, &store).unwrap();
    assert!(cap.key.is_none(), "public dataset has a keyless capability");
    assert!(matches!(
        ds.index.find(b"escape").unwrap().kind,
        EntryKind::Symlink { .. }
    ));
}

#[test]
fn identical_files_are_stored_once() {
    let t = tempfile::tempdir().unwrap();
    let data = bytes(50_000, 5);
    write_tree(
        &t.path().join("src"),
        &[
            ("a".into(), data.clone()),
            ("b/c".into(), data.clone()),
            ("d".into(), data),
        ],
    );
    let store = DirStore::open(t.path().join("store"), false).unwrap();
    let r = pack(Source::Path(t.path().join("src")), &store, &opts(4, 2)).unwrap();
    assert_eq!(r.dedup_files, 2);
    // Stored once: 50,000 bytes plus one 16-byte tag per 64 KiB chunk.
    assert_eq!(r.new_bytes, 50_016);
}

/// Re-packing a corpus in which 1% of the files changed (edited, inserted early, deleted)
/// against the previous version encodes only the changed bytes.
#[test]
fn one_percent_change_reencodes_under_three_percent() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let n = 1000;
    let files: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            (
                format!("shard-{:02}/item-{i:05}.bin", i % 17),
                bytes(2000 + (i * 7919) % 30_000, i as u64),
            )
        })
        .collect();
    write_tree(&src, &files);
    let store = DirStore::open(t.path().join("store"), false).unwrap();
    let o = PackOptions {
        shard_size: Some(64 * 1024),
        ..opts(4, 2)
    };
    let v1 = pack(Source::Path(src.clone()), &store, &o).unwrap();
    // 1% of files: 4 edited, 3 inserted (sorting before everything else), 3 deleted.
    for i in [10, 400, 650, 999] {
        let p = src.join(&files[i].0);
        let mut b = fs::read(&p).unwrap();
        b[0] ^= 0xff;
        b.extend_from_slice(b"edited");
        fs::write(&p, b).unwrap();
    }
    for i in 0..3 {
        write_tree(
            &src,
            &[(format!("aaa-inserted-{i}"), bytes(9000, 10_000 + i))],
        );
    }
    for i in [5, 500, 800] {
        fs::remove_file(src.join(&files[i].0)).unwrap();
    }
    let base = Dataset::open(&v1.capability, &store).unwrap();
    let o2 = PackOptions {
        key: v1.capability.key.clone(),
        base: Some(Arc::new(base.index.clone())),
        ..o
    };
    let v2 = pack(Source::Path(src.clone()), &store, &o2).unwrap();
    let fraction = v2.new_bytes as f64 / v2.bytes as f64;
    println!(
        "re-encoded {} of {} bytes ({:.2}%), {} files reused",
        v2.new_bytes,
        v2.bytes,
        fraction * 100.0,
        v2.reused_files
    );
    assert!(fraction <= 0.03, "re-encoded {:.2}%", fraction * 100.0);
    assert_eq!(v2.reused_files, (n - 3 - 4) as u64);
    let out = t.path().join("out");
    Dataset::open(&v2.capability, &store)
        .unwrap()
        .extract(&store, &out, None, &mut ReadStats::default())
        .unwrap();
    assert_eq!(snapshot(&src), snapshot(&out));
}

#[test]
fn a_file_changing_during_pack_is_detected() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    // Above READ_ONCE_MAX, a file is hashed, then read again to be stored: the second read sees
    // the change. (Smaller files are read once and checked by size, mtime and ctime.)
    let size = pack::READ_ONCE_MAX as usize + 300_000;
    write_tree(&src, &[("big".into(), bytes(size, 1))]);
    let store = DirStore::open(t.path().join("store"), false).unwrap();
    let victim = src.join("big");
    let done = Arc::new(Mutex::new(false));
    let d2 = done.clone();
    // Reads of a large file report progress per block; the first report of the second pass
    // (bytes read > file size) rewrites the file's start.
    let progress: pack::ProgressFn = Arc::new(move |n| {
        let mut done = d2.lock().unwrap();
        if n > 0 && !*done {
            *done = true;
            let mut f = fs::OpenOptions::new().write(true).open(&victim).unwrap();
            f.write_all(b"changed!").unwrap();
        }
    });
    let o = PackOptions {
        progress: Some(progress),
        shard_size: Some(1 << 20),
        ..opts(2, 1)
    };
    let err = pack(Source::Path(src), &store, &o).unwrap_err();
    assert!(matches!(err, PackError::FileChanged { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("changed while it was being packed"),
        "{err}"
    );
}

#[test]
fn unreadable_files_fail_or_are_skipped_with_a_message() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write_tree(
        &src,
        &[("a".into(), bytes(10, 1)), ("b".into(), bytes(10, 2))],
    );
    let store = DirStore::open(t.path().join("store"), false).unwrap();
    // "b" disappears between the walk and its read (as an unreadable file would fail to open).
    let victim = src.join("b");
    let hook = move |_: u64| {
        let _ = fs::remove_file(&victim);
    };
    let o = PackOptions {
        progress: Some(Arc::new(hook.clone())),
        ..opts(2, 1)
    };
    let err = pack(Source::Path(src.clone()), &store, &o).unwrap_err();
    assert!(matches!(err, PackError::Unreadable(_)), "{err}");
    assert!(err.to_string().contains("/b"), "{err}");
    write_tree(&src, &[("b".into(), bytes(10, 2))]);
    let o = PackOptions {
        progress: Some(Arc::new(hook)),
        skip_unreadable: true,
        ..opts(2, 1)
    };
    let r = pack(Source::Path(src), &store, &o).unwrap();
    assert_eq!(r.files, 1);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("skipped") && w.contains("/b")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn stdin_streams_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let data = bytes(70_000, 3);
    let store = DirStore::open(t.path().join("store"), false).unwrap();
    let r = pack(
        Source::Reader {
            name: b"stream.bin".to_vec(),
            reader: Box::new(io::Cursor::new(data.clone())),
        },
        &store,
        &opts(3, 2),
    )
    .unwrap();
    let ds = Dataset::open(&r.capability, &store).unwrap();
    let mut out = Vec::new();
    ds.write_file(
        &store,
        ds.file("stream.bin").unwrap(),
        &mut out,
        &mut ReadStats::default(),
    )
    .unwrap();
    assert_eq!(out, data);
}

#[test]
fn a_full_output_device_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(&t.path().join("src"));
    let (cap, store, _) = round_trip(t.path(), &opts(2, 1));
    let ds = Dataset::open(&cap, &store).unwrap();
    let mut full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let err = ds
        .write_file(
            &store,
            ds.file("big.bin").unwrap(),
            &mut full,
            &mut ReadStats::default(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");

    // Extracting into a tiny filesystem fails cleanly, leaving no partial file behind.
    let mnt = t.path().join("tiny");
    fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("tmpfs mount not permitted here; /dev/full case above still ran");
        return;
    }
    let dest = mnt.join("out");
    let err = ds
        .extract(&store, &dest, None, &mut ReadStats::default())
        .unwrap_err();
    let partials: Vec<_> = snapshot(&dest)
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains("granary-partial"))
        .collect();
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    assert!(err.to_string().contains("No space left on device"), "{err}");
    assert!(partials.is_empty(), "{partials:?}");
}

/// A healthy range read touches only the data shards that cover it: one shard for a range
/// inside one shard, and no parity.
#[test]
fn healthy_range_reads_touch_only_covering_data_shards() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(&t.path().join("src"));
    let (cap, store, _) = round_trip(
        t.path(),
        &PackOptions {
            encrypt: false,
            ..opts(4, 2)
        },
    );
    let ds = Dataset::open(&cap, &store).unwrap();
    let e = ds.file("big.bin").unwrap();
    let mut stats = ReadStats::default();
    let got = ds.read_range(&store, e, 100..164, &mut stats).unwrap();
    assert_eq!(got, bytes(100_000, 99)[100..164]);
    assert_eq!(
        stats,
        ReadStats {
            shard_reads: 1,
            shard_failures: 0,
            rebuilds: 0,
            raced: 0
        }
    );
    // Delete every parity shard: healthy reads of the whole file do not notice.
    for seg in &ds.manifest().segments {
        for id in &seg.shards[4..] {
            let _ = store.remove_shard(id);
        }
    }
    let mut stats = ReadStats::default();
    let all = ds.read_range(&store, e, 0..100_000, &mut stats).unwrap();
    assert_eq!(all, bytes(100_000, 99));
    assert_eq!(stats.shard_failures, 0);
}

/// With shards larger than a cipher chunk, most chunks lie wholly inside a segment and a
/// healthy extraction checks them with the cipher alone. A flipped byte in such a chunk, in the
/// zero padding of a segment's last data shard, or in a public dataset's shard is still caught:
/// the segment is re-read verified, the bad shard counted and rebuilt around. Identical files
/// (one inside a segment, one spanning segments) come back too.
#[test]
fn flipped_bytes_in_large_segments_are_caught_and_rebuilt() {
    for encrypt in [true, false] {
        let t = tempfile::tempdir().unwrap();
        let big = bytes(700_000, 11);
        let small = bytes(90_000, 12);
        write_tree(
            &t.path().join("src"),
            &[
                ("a/big".into(), big.clone()),
                ("a/small".into(), small.clone()),
                ("b/big-again".into(), big),
                ("b/small-again".into(), small),
                ("c/odd".into(), bytes(123_457, 13)),
            ],
        );
        let o = PackOptions {
            encrypt,
            shard_size: Some(64 * 1024),
            ..opts(3, 2)
        };
        let (cap, store, _) = round_trip(t.path(), &o);
        let ds = Dataset::open(&cap, &store).unwrap();
        let segs = &ds.manifest().segments;
        assert!(segs.len() >= 3, "{} segments", segs.len());
        // A byte in the middle of data shard 1 of the first segment.
        let p = store.shard_path(&segs[0].shards[1]);
        let mut b = fs::read(&p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x40;
        fs::write(&p, &b).unwrap();
        // A byte of zero padding at the end of the last segment's last data shard.
        let last = segs.last().unwrap();
        let sl = last.shard_len as usize;
        let li = (last.len as usize - 1) / sl;
        assert!(
            (li + 1) * sl > last.len as usize,
            "the last segment has padding"
        );
        let p = store.shard_path(&last.shards[li]);
        let mut b = fs::read(&p).unwrap();
        let n = b.len();
        b[n - 1] ^= 0x01;
        fs::write(&p, &b).unwrap();
        let mut stats = ReadStats::default();
        let out2 = t.path().join("out2");
        ds.extract(&store, &out2, None, &mut stats).unwrap();
        assert_eq!(snapshot(&t.path().join("src")), snapshot(&out2));
        assert!(
            stats.shard_failures >= 2 && stats.rebuilds >= 2,
            "encrypt {encrypt}: {stats:?}"
        );
    }
}

/// Extracting many files that each span several segments keeps only a few of them open at a
/// time: a file is closed once its last segment is written.
#[test]
fn extraction_does_not_hold_finished_files_open() {
    let t = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| (format!("f{i:03}"), bytes(20_000 + i, i as u64)))
        .collect();
    write_tree(&t.path().join("src"), &files);
    let store = DirStore::open(t.path().join("store"), false).unwrap();
    let r = pack(Source::Path(t.path().join("src")), &store, &opts(2, 1)).unwrap();
    let ds = Dataset::open(&r.capability, &store).unwrap();
    let open_fds = || fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let before = open_fds();
    let most = std::cell::Cell::new(0usize);
    let progress = |_: u64| most.set(most.get().max(open_fds()));
    ds.extract(
        &store,
        &t.path().join("out"),
        Some(&progress),
        &mut ReadStats::default(),
    )
    .unwrap();
    assert_eq!(
        snapshot(&t.path().join("src")),
        snapshot(&t.path().join("out"))
    );
    // Other tests in the same process may hold a few descriptors too; 300 would be a leak.
    assert!(
        most.get() < before + 100,
        "{} descriptors open during extraction, {before} before",
        most.get()
    );
}
