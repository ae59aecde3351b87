//! Files larger than one part (16 MiB): read once and keyed part by part, yet deterministic,
//! deduplicated and checked for changes like small files. Real packs into an on-disk store.

use std::{
    fs,
    io::Write,
    path::Path,
    sync::{Arc, Mutex},
};

use granary_client::{
    Dataset, ErasureParams, PackOptions, ReadStats, Source, crypto::FileCipher,
    manifest::EntryKind, pack, pack::PackError, parts::PART, store::dir::DirStore,
};

const P: usize = PART as usize;

fn opts() -> PackOptions {
    PackOptions {
        erasure: ErasureParams { data: 4, parity: 2 },
        shard_size: Some(1 << 20),
        workers: 2,
        ..PackOptions::default()
    }
}

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    granary_client::sample::fill(&mut v, seed);
    v
}

fn write(root: &Path, name: &str, data: &[u8]) {
    let p = root.join(name);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn parts_of(ds: &Dataset, name: &str) -> (usize, [u8; 32]) {
    match &ds.file(name).unwrap().kind {
        EntryKind::File { parts, hash, .. } => (parts.len(), hash.0),
        _ => panic!("{name} is not a file"),
    }
}

#[test]
fn large_files_are_keyed_by_part_and_round_trip() {
    for encrypt in [true, false] {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let a = bytes(2 * P + 12_345, 1);
        let b = bytes(2 * P, 2);
        write(&src, "big-a", &a);
        write(&src, "dir/big-b", &b);
        write(&src, "small", &bytes(1000, 3));
        let store = DirStore::open(t.path().join("store"), false).unwrap();
        let o = PackOptions { encrypt, ..opts() };
        let r = pack(Source::Path(src.clone()), &store, &o).unwrap();
        let ds = Dataset::open(&r.capability, &store).unwrap();
        assert_eq!(parts_of(&ds, "big-a"), (3, *blake3::hash(&a).as_bytes()));
        assert_eq!(
            parts_of(&ds, "dir/big-b"),
            (2, *blake3::hash(&b).as_bytes())
        );
        assert_eq!(parts_of(&ds, "small").0, 0);
        let out = t.path().join("out");
        ds.extract(&store, &out, None, &mut ReadStats::default())
            .unwrap();
        assert_eq!(fs::read(out.join("big-a")).unwrap(), a);
        assert_eq!(fs::read(out.join("dir/big-b")).unwrap(), b);
        // Ranges within a part, across part boundaries, and the very end.
        let e = ds.file("big-a").unwrap();
        for r in [
            0..10,
            P as u64 - 10..P as u64 + 10,
            2 * P as u64 - 1..2 * P as u64 + 5,
            P as u64 / 2..2 * P as u64 + 12_345,
            a.len() as u64 - 1..a.len() as u64,
        ] {
            let got = ds
                .read_range(&store, e, r.clone(), &mut ReadStats::default())
                .unwrap();
            assert_eq!(got, &a[r.start as usize..r.end as usize], "{r:?}");
        }
    }
}

#[test]
fn each_part_has_its_own_key() {
    let key = granary_client::ids::DatasetKey::from_bytes([9; 32]);
    let cvs = [
        granary_client::ids::ContentHash([1; 32]),
        granary_client::ids::ContentHash([2; 32]),
    ];
    let whole = FileCipher::of_parts(Some(&key), &cvs, 0..2);
    let plain = vec![7u8; 100];
    // Chunk 0 of part 0 and chunk 0 of part 1, both sealed by the whole-file cipher, equal
    // what each part's own cipher seals, and differ from each other.
    let first = granary_client::crypto::CHUNKS_PER_PART;
    let (mut w0, mut w1, mut p0, mut p1) = (vec![], vec![], vec![], vec![]);
    whole.seal_chunk_into(0, &plain, &mut w0);
    whole.seal_chunk_into(first, &plain, &mut w1);
    FileCipher::part(Some(&key), 0, &cvs[0]).seal_chunk_into(0, &plain, &mut p0);
    FileCipher::part(Some(&key), 1, &cvs[1]).seal_chunk_into(first, &plain, &mut p1);
    assert_eq!((&w0, &w1), (&p0, &p1));
    assert_ne!(w0[..100], w1[..100]);
    // Other content in the same part: another key (the nonce, the chunk index, repeats).
    let mut other = vec![];
    let cv = granary_client::ids::ContentHash([3; 32]);
    FileCipher::part(Some(&key), 0, &cv).seal_chunk_into(0, &plain, &mut other);
    assert_ne!(w0, other);
    // A chunk beyond the last part has no key: opening it fails instead of panicking.
    let mut stored = w1.clone();
    assert!(whole.open_chunk_in_place(2 * first, &mut stored).is_err());
    let mut stored = w1.clone();
    assert_eq!(whole.open_chunk_in_place(first, &mut stored), Ok(100));
    assert_eq!(stored[..100], plain[..]);
    // A cipher made for part 1 alone (a range read) opens part 1 and has no key for part 0.
    let second = FileCipher::of_parts(Some(&key), &cvs, 1..5);
    let mut stored = w1;
    assert_eq!(second.open_chunk_in_place(first, &mut stored), Ok(100));
    let mut stored = w0;
    assert!(second.open_chunk_in_place(0, &mut stored).is_err());
}

/// A put that is repeated or resumed must produce the same shards, or everything is sent again.
#[test]
fn packing_a_large_file_again_makes_the_same_shards() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write(&src, "big", &bytes(P + 777_777, 4));
    let store = DirStore::open(t.path().join("store"), false).unwrap();
    let first = pack(Source::Path(src.clone()), &store, &opts()).unwrap();
    let again = PackOptions {
        key: first.capability.key.clone(),
        ..opts()
    };
    let second = pack(Source::Path(src.clone()), &store, &again).unwrap();
    let segs = |cap| {
        Dataset::open(cap, &store)
            .unwrap()
            .index
            .manifest
            .segments
            .clone()
    };
    assert_eq!(segs(&first.capability), segs(&second.capability));
    // Under another dataset key the same bytes are stored differently.
    let other = pack(Source::Path(src), &store, &opts()).unwrap();
    let (a, b) = (segs(&first.capability), segs(&other.capability));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| x.shards[0] != y.shards[0]));
}

#[test]
fn duplicate_large_files_are_stored_once() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let data = bytes(P + 5000, 5);
    write(&src, "a", &data);
    write(&src, "b/copy", &data);
    // Same size, other bytes: hashed first like the copy, but stored.
    write(&src, "c", &bytes(P + 5000, 6));
    let store = DirStore::open(t.path().join("store"), false).unwrap();
    let r = pack(Source::Path(src.clone()), &store, &opts()).unwrap();
    assert_eq!(r.dedup_files, 1);
    let stored = FileCipher::new(
        Some(&granary_client::ids::DatasetKey::from_bytes([0; 32])),
        &granary_client::ids::ContentHash([0; 32]),
    )
    .stored_len(data.len() as u64);
    assert_eq!(r.new_bytes, 2 * stored);
    let ds = Dataset::open(&r.capability, &store).unwrap();
    let out = t.path().join("out");
    ds.extract(&store, &out, None, &mut ReadStats::default())
        .unwrap();
    for name in ["a", "b/copy", "c"] {
        assert_eq!(
            fs::read(out.join(name)).unwrap(),
            fs::read(src.join(name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn a_large_file_renamed_in_an_update_is_not_stored_again() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let data = bytes(2 * P + 1, 7);
    write(&src, "big", &data);
    write(&src, "small", &bytes(10_000, 8));
    let store = DirStore::open(t.path().join("store"), false).unwrap();
    let v1 = pack(Source::Path(src.clone()), &store, &opts()).unwrap();
    fs::rename(src.join("big"), src.join("moved")).unwrap();
    let base = Dataset::open(&v1.capability, &store).unwrap();
    let o2 = PackOptions {
        key: v1.capability.key.clone(),
        base: Some(Arc::new(base.index.clone())),
        ..opts()
    };
    let v2 = pack(Source::Path(src.clone()), &store, &o2).unwrap();
    assert_eq!((v2.new_bytes, v2.dedup_files, v2.reused_files), (0, 1, 1));
    let ds = Dataset::open(&v2.capability, &store).unwrap();
    let e = ds.file("moved").unwrap();
    let got = ds
        .read_range(&store, e, 0..data.len() as u64, &mut ReadStats::default())
        .unwrap();
    assert_eq!(got, data);
}

/// A large file of a size seen before is read twice (hashed, then stored): a change between
/// the two reads is caught.
#[test]
fn a_large_file_changing_between_its_two_reads_is_detected() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let size = P + 300_000;
    write(&src, "a", &bytes(size, 1));
    write(&src, "b", &bytes(size, 2));
    let store = DirStore::open(t.path().join("store"), false).unwrap();
    let victim = src.join("b");
    let done = Arc::new(Mutex::new(false));
    let d2 = done.clone();
    // "a" is read once (progress up to `size`); "b", of the same size, is hashed without
    // progress reports, then read again: its first report rewrites its start.
    let progress: pack::ProgressFn = Arc::new(move |n| {
        let mut done = d2.lock().unwrap();
        if n > size as u64 && !*done {
            *done = true;
            let mut f = fs::OpenOptions::new().write(true).open(&victim).unwrap();
            f.write_all(b"changed!").unwrap();
        }
    });
    let o = PackOptions {
        progress: Some(progress),
        ..opts()
    };
    let err = pack(Source::Path(src), &store, &o).unwrap_err();
    assert!(matches!(err, PackError::FileChanged { .. }), "{err}");
    assert!(err.to_string().contains("/b"), "{err}");
    assert!(*done.lock().unwrap());
}
