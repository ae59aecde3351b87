//! Hostile and broken peers: every case gets a typed error or a closed stream, and the node
//! keeps serving others.
#![allow(clippy::unwrap_used)]

mod common;

/// The reference tag the hand-made requests use.
const TAG: [u8; 32] = [0x42; 32];

use std::time::Duration;

use bytes::Bytes;
use common::{Reply, client, random_bytes, raw_conn, raw_request, read_reply, started};
use granary_protocol::{
    ErrorCode, Message, SecretKey, ShardId,
    auth::{MAX_CLOCK_SKEW_MS, now_ms},
    frame::MsgType,
    message::{DeleteShards, FetchRange, NodeInfoRequest, StoreShard},
};

fn code(c: ErrorCode) -> Option<u16> {
    Some(c as u16)
}

async fn still_serving(node: &common::NodeProc) {
    let c = client(node, &SecretKey::generate()).await;
    assert_eq!(c.info().await.unwrap().id, node.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_typed_errors() {
    let node = started(&[], "");
    let conn = raw_conn(&node).await;

    // Length prefix far above MAX_FRAME: refused from the header alone.
    let r = raw_request(&conn, &[0xff, 0xff, 0xff, 0xf0, 1, 2], false).await;
    assert_eq!(r.error_code(), code(ErrorCode::FrameTooLarge), "{r:?}");
    // Wrong version.
    let r = raw_request(&conn, &[0, 0, 0, 2, 9, MsgType::NodeInfo as u8], true).await;
    assert_eq!(r.error_code(), code(ErrorCode::UnsupportedVersion), "{r:?}");
    // Unknown (reserved) message type.
    const V: u8 = granary_protocol::PROTOCOL_VERSION;
    let r = raw_request(&conn, &[0, 0, 0, 2, V, 20], true).await;
    assert_eq!(r.error_code(), code(ErrorCode::UnknownMessage), "{r:?}");
    // Length below the minimum.
    let r = raw_request(&conn, &[0, 0, 0, 1, V], true).await;
    assert_eq!(r.error_code(), code(ErrorCode::Malformed), "{r:?}");
    // Body that is not a valid postcard FetchRange.
    let r = raw_request(
        &conn,
        &[0, 0, 0, 5, V, MsgType::FetchRange as u8, 1, 2, 3],
        true,
    )
    .await;
    assert_eq!(r.error_code(), code(ErrorCode::Malformed), "{r:?}");
    // Trailing garbage after a valid body.
    let mut f = Message::NodeInfo(NodeInfoRequest).to_frame().unwrap();
    f[3] += 1;
    f.push(0);
    let r = raw_request(&conn, &f, true).await;
    assert_eq!(r.error_code(), code(ErrorCode::Malformed), "{r:?}");
    // Truncated: header promises 100 bytes, stream ends after 3.
    let r = raw_request(
        &conn,
        &[0, 0, 0, 102, V, MsgType::HasShards as u8, 1, 2, 3],
        true,
    )
    .await;
    assert_eq!(r.error_code(), code(ErrorCode::Malformed), "{r:?}");
    // Empty stream.
    let r = raw_request(&conn, &[], true).await;
    assert_eq!(r.error_code(), code(ErrorCode::Malformed), "{r:?}");
    // A response type sent as a request.
    let f = Message::HasShardsOk(granary_protocol::message::HasShardsOk { bitmap: vec![] })
        .to_frame()
        .unwrap();
    let r = raw_request(&conn, &f, true).await;
    assert_eq!(r.error_code(), code(ErrorCode::UnexpectedMessage), "{r:?}");
    // Too many ids.
    let ids = vec![ShardId([0; 32]); granary_protocol::message::MAX_IDS_PER_REQUEST + 1];
    let f = Message::HasShards(granary_protocol::message::HasShards { ids }).to_frame();
    let f = match f {
        Ok(f) => f,
        Err(e) => panic!("encode: {e}"),
    };
    let r = raw_request(&conn, &f, true).await;
    assert_eq!(r.error_code(), code(ErrorCode::TooManyIds), "{r:?}");

    // The same connection and others still work.
    let f = Message::NodeInfo(NodeInfoRequest).to_frame().unwrap();
    assert!(matches!(
        raw_request(&conn, &f, true).await,
        Reply::Msg(Message::NodeInfoOk(_))
    ));
    still_serving(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_is_dropped_while_others_are_served() {
    let node = started(&[], "read_timeout_ms = 1500");
    let conn = raw_conn(&node).await;
    // Header stalls after 3 bytes.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0, 0, 0]).await.unwrap();
    // Body stalls: a valid signed store header, then half the body, then nothing.
    let owner = SecretKey::generate();
    let data = random_bytes(100_000, 9);
    let req = StoreShard::signed(
        &owner,
        node.id,
        blake3::hash(&data).into(),
        data.len() as u64,
        TAG,
        now_ms(),
    );
    let (mut send2, mut recv2) = conn.open_bi().await.unwrap();
    send2
        .write_all(&Message::StoreShard(req).to_frame().unwrap())
        .await
        .unwrap();
    send2.write_all(&data[..50_000]).await.unwrap();

    // While both stall, another client is served.
    still_serving(&node).await;

    assert_eq!(
        read_reply(&mut recv).await.error_code(),
        code(ErrorCode::Timeout)
    );
    assert_eq!(
        read_reply(&mut recv2).await.error_code(),
        code(ErrorCode::Timeout)
    );
    let c = client(&node, &owner).await;
    assert_eq!(
        c.has_shards(&[blake3::hash(&data)]).await.unwrap(),
        vec![false]
    );
    drop((send, send2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_body_is_rejected_and_nothing_is_stored() {
    let node = started(&[], "");
    let owner = SecretKey::generate();
    let c = client(&node, &owner).await;
    let data = Bytes::from(random_bytes(200_000, 4));
    let claimed = blake3::hash(b"something else");
    let err = c
        .store_shard(&owner, TAG, claimed, data.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::HashMismatch), "{err}");
    assert_eq!(
        c.has_shards(&[claimed, blake3::hash(&data)]).await.unwrap(),
        vec![false, false]
    );
    assert_eq!(c.info().await.unwrap().used, 0);

    // Body shorter and longer than declared.
    let conn = raw_conn(&node).await;
    let id = blake3::hash(&data);
    for (declared, sent) in [(200_000u64, 150_000usize), (100_000, 200_000)] {
        let req = StoreShard::signed(&owner, node.id, id.into(), declared, TAG, now_ms());
        let mut f = Message::StoreShard(req).to_frame().unwrap();
        f.extend_from_slice(&data[..sent]);
        let r = raw_request(&conn, &f, true).await;
        assert_eq!(
            r.error_code(),
            code(ErrorCode::LengthMismatch),
            "declared {declared} sent {sent}: {r:?}"
        );
    }
    assert_eq!(c.has_shards(&[id]).await.unwrap(), vec![false]);
    let shards = std::fs::read_dir(node.path().join("tmp")).unwrap().count();
    assert_eq!(shards, 0, "no staged leftovers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_give_typed_errors_and_node_stays_healthy() {
    let node = started(&["--capacity", "300000", "--owner-quota", "200000"], "");
    let (alice, bob) = (SecretKey::generate(), SecretKey::generate());
    let c = client(&node, &alice).await;
    let a = Bytes::from(random_bytes(150_000, 5));
    let b = Bytes::from(random_bytes(100_000, 6));
    let d = Bytes::from(random_bytes(100_000, 7));
    c.store_shard(&alice, TAG, blake3::hash(&a), a.clone())
        .await
        .unwrap();
    let e = c
        .store_shard(&alice, TAG, blake3::hash(&b), b.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::OwnerQuotaExceeded), "{e}");
    c.store_shard(&bob, TAG, blake3::hash(&b), b.clone())
        .await
        .unwrap();
    let e = c
        .store_shard(&bob, TAG, blake3::hash(&d), d.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NodeQuotaExceeded), "{e}");
    let too_big = Bytes::from(vec![0u8; 65 << 20]);
    let e = c
        .store_shard(&bob, TAG, blake3::hash(&too_big), too_big)
        .await
        .unwrap_err();
    assert!(matches!(e, common::net::RequestError::Invalid(_)), "{e}");
    // Deleting frees room.
    c.delete_shards(&alice, TAG, &[blake3::hash(&a)])
        .await
        .unwrap();
    c.store_shard(&bob, TAG, blake3::hash(&d), d).await.unwrap();
    assert_eq!(c.info().await.unwrap().used, 200_000);
}

/// An unauthenticated store costs the node no body read and no disk write: a forged 8 MiB
/// `StoreShard` header, sent with no body at all (the stream left open), is answered
/// `BadSignature` straight away (a node that read the body first would wait for it and answer
/// `Timeout` after its read timeout), and nothing appears in `tmp/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_store_is_refused_before_its_body_is_read() {
    let node = started(&[], "");
    let conn = raw_conn(&node).await;
    let (owner, thief) = (SecretKey::generate(), SecretKey::generate());
    let id: ShardId = blake3::hash(b"never sent").into();
    let mut forged = StoreShard::signed(&thief, node.id, id, 8 << 20, TAG, now_ms());
    forged.owner = owner.public();
    let header = Message::StoreShard(forged).to_frame().unwrap();
    let reply = raw_request(&conn, &header, false).await;
    assert_eq!(
        reply.error_code(),
        code(ErrorCode::BadSignature),
        "{reply:?}"
    );
    let staged: Vec<_> = std::fs::read_dir(node.path().join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(staged.is_empty(), "{staged:?}");
    still_serving(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_misaddressed_and_replayed_requests_are_refused() {
    let node = started(&[], "");
    let conn = raw_conn(&node).await;
    let (owner, thief) = (SecretKey::generate(), SecretKey::generate());
    let data = random_bytes(10_000, 8);
    let id: ShardId = blake3::hash(&data).into();
    let store = |req: StoreShard| {
        let mut f = Message::StoreShard(req).to_frame().unwrap();
        f.extend_from_slice(&data);
        f
    };

    // Forged: claims `owner` but signed by `thief`.
    let mut forged = StoreShard::signed(&thief, node.id, id, data.len() as u64, TAG, now_ms());
    forged.owner = owner.public();
    assert_eq!(
        raw_request(&conn, &store(forged), true).await.error_code(),
        code(ErrorCode::BadSignature)
    );
    // Tampered size after signing.
    let mut tampered = StoreShard::signed(&owner, node.id, id, data.len() as u64, TAG, now_ms());
    tampered.size += 1;
    assert_eq!(
        raw_request(&conn, &store(tampered), true)
            .await
            .error_code(),
        code(ErrorCode::BadSignature)
    );
    // Stale and future timestamps.
    for ts in [
        now_ms() - MAX_CLOCK_SKEW_MS - 60_000,
        now_ms() + MAX_CLOCK_SKEW_MS + 60_000,
    ] {
        let stale = StoreShard::signed(&owner, node.id, id, data.len() as u64, TAG, ts);
        assert_eq!(
            raw_request(&conn, &store(stale), true).await.error_code(),
            code(ErrorCode::StaleTimestamp)
        );
    }
    // Addressed to another node.
    let other = SecretKey::generate().public();
    let misaddressed = StoreShard::signed(&owner, other, id, data.len() as u64, TAG, now_ms());
    assert_eq!(
        raw_request(&conn, &store(misaddressed), true)
            .await
            .error_code(),
        code(ErrorCode::WrongNode)
    );

    // A valid store, then its exact replay.
    let ok = StoreShard::signed(&owner, node.id, id, data.len() as u64, TAG, now_ms());
    assert!(matches!(
        raw_request(&conn, &store(ok.clone()), true).await,
        Reply::Msg(Message::StoreShardOk(_))
    ));
    assert_eq!(
        raw_request(&conn, &store(ok), true).await.error_code(),
        code(ErrorCode::Replay)
    );

    // Delete: forged by the thief, then a valid one replayed.
    let mut forged = DeleteShards::signed(&thief, node.id, TAG, vec![id], now_ms());
    forged.owner = owner.public();
    let f = Message::DeleteShards(forged).to_frame().unwrap();
    assert_eq!(
        raw_request(&conn, &f, true).await.error_code(),
        code(ErrorCode::BadSignature)
    );
    let del = Message::DeleteShards(DeleteShards::signed(
        &owner,
        node.id,
        TAG,
        vec![id],
        now_ms(),
    ))
    .to_frame()
    .unwrap();
    assert!(matches!(
        raw_request(&conn, &del, true).await,
        Reply::Msg(Message::DeleteShardsOk(_))
    ));
    assert_eq!(
        raw_request(&conn, &del, true).await.error_code(),
        code(ErrorCode::Replay)
    );

    let f = Message::FetchRange(FetchRange {
        shard_id: id,
        start: 0,
        end: 10,
    })
    .to_frame()
    .unwrap();
    assert_eq!(
        raw_request(&conn, &f, true).await.error_code(),
        code(ErrorCode::NotFound)
    );
    still_serving(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_leaves_nothing_half_written_served() {
    let mut node = started(&[], "");
    let owner = SecretKey::generate();
    let c = client(&node, &owner).await;
    let kept = Bytes::from(random_bytes(40_000, 10));
    let broken = Bytes::from(random_bytes(40_000, 11));
    c.store_shard(&owner, TAG, blake3::hash(&kept), kept.clone())
        .await
        .unwrap();
    c.store_shard(&owner, TAG, blake3::hash(&broken), broken.clone())
        .await
        .unwrap();

    // Start a large upload and crash the node in the middle of it.
    let big = Bytes::from(random_bytes(64 << 20, 12));
    let big_id = blake3::hash(&big);
    let upload = {
        // The dead node is only noticed by timeout; keep it short.
        let c = c.clone().with_timeout(Duration::from_secs(3));
        let owner = owner.clone();
        let big = big.clone();
        tokio::spawn(async move { c.store_shard(&owner, TAG, big_id, big).await })
    };
    // Crash once the body is streaming into tmp/.
    let tmp = node.path().join("tmp");
    while std::fs::read_dir(&tmp).unwrap().count() == 0 && !upload.is_finished() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        !upload.is_finished(),
        "64 MiB cannot cross loopback between two 1 ms polls"
    );
    node.kill9();
    assert!(
        std::fs::read_dir(&tmp).unwrap().count() > 0,
        "the crash left a partial upload"
    );
    assert!(
        upload.await.unwrap().is_err(),
        "the upload cannot have completed"
    );

    // Simulate the other crash windows: a staged file in tmp/, a renamed but unindexed file,
    // and an indexed shard whose data file was cut short.
    let dir = node.path().to_path_buf();
    std::fs::write(dir.join("tmp").join("leftover.data"), b"partial").unwrap();
    let orphan: ShardId = blake3::hash(b"orphan").into();
    let hex = orphan.to_string();
    let odir = dir.join("shards").join(&hex[..2]);
    std::fs::write(odir.join(&hex), b"orphan").unwrap();
    let bhex = blake3::hash(&broken).to_hex().to_string();
    let bpath = dir.join("shards").join(&bhex[..2]).join(&bhex);
    std::fs::write(&bpath, &broken[..1000]).unwrap();

    node.start();
    let log = node.log();
    assert!(log.contains("quarantined"), "{log}");
    let c = client(&node, &owner).await;
    let ids = [
        blake3::hash(&kept),
        blake3::hash(&broken),
        big_id,
        orphan.hash(),
    ];
    assert_eq!(
        c.has_shards(&ids).await.unwrap(),
        vec![true, false, false, false]
    );
    assert_eq!(c.fetch_shard(blake3::hash(&kept)).await.unwrap(), kept);
    assert_eq!(
        c.fetch_shard(blake3::hash(&broken))
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::NotFound)
    );
    assert_eq!(c.info().await.unwrap().used, 40_000);
    assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
    assert!(std::fs::read_dir(dir.join("quarantine")).unwrap().count() >= 2);
    // Storing the broken shard again works (it was cleanly un-indexed).
    assert_eq!(
        c.store_shard(&owner, TAG, blake3::hash(&broken), broken)
            .await
            .unwrap(),
        common::net::StoreOutcome::Stored
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_bytes_on_disk_are_never_served() {
    let node = started(&[], "");
    let owner = SecretKey::generate();
    let c = client(&node, &owner).await;
    let data = Bytes::from(random_bytes(100_000, 13));
    let id = blake3::hash(&data);
    c.store_shard(&owner, TAG, id, data.clone()).await.unwrap();
    let hex = id.to_hex().to_string();
    let path = node.path().join("shards").join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[60_000] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    // A range away from the flipped byte still verifies; one covering it is refused.
    assert_eq!(c.fetch_range(id, 0..1000).await.unwrap(), &data[..1000]);
    assert_eq!(
        c.fetch_range(id, 59_000..61_000).await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    assert_eq!(
        c.has_shards(&[id]).await.unwrap(),
        vec![false],
        "quarantined"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_store() {
    let mut node = started(&[], "");
    let owner = SecretKey::generate();
    let c = client(&node, &owner).await;
    let big = Bytes::from(random_bytes(64 << 20, 14));
    let id = blake3::hash(&big);
    let upload = {
        let (c, owner, big) = (c.clone(), owner.clone(), big.clone());
        tokio::spawn(async move { c.store_shard(&owner, TAG, id, big).await })
    };
    // SIGTERM once the body is streaming into tmp/ (or the upload already finished).
    let tmp = node.path().join("tmp");
    while std::fs::read_dir(&tmp).unwrap().count() == 0 && !upload.is_finished() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let was_in_flight = !upload.is_finished();
    // 64 MiB cannot cross loopback between two 1 ms polls: the test really interrupts an upload.
    assert!(was_in_flight);
    assert!(node.stop(), "graceful shutdown exits 0");
    // The in-flight upload was allowed to finish and was acknowledged.
    let outcome = upload.await.unwrap();
    assert!(
        outcome.is_ok(),
        "in flight: {was_in_flight}, {outcome:?}; log: {}",
        node.log()
    );
    assert!(node.log().contains("shutting down"));
    node.start();
    let c = client(&node, &owner).await;
    assert_eq!(c.fetch_shard(id).await.unwrap(), big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_is_a_typed_error_and_node_stays_healthy() {
    // Ask the node to always keep 1 EiB free: every upload looks like a full disk.
    let node = started(&[], "reserve_free_bytes = 1152921504606846976");
    let owner = SecretKey::generate();
    let c = client(&node, &owner).await;
    let data = Bytes::from(random_bytes(10_000, 15));
    let e = c
        .store_shard(&owner, TAG, blake3::hash(&data), data.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::DiskFull), "{e}");
    assert_eq!(
        c.has_shards(&[blake3::hash(&data)]).await.unwrap(),
        vec![false]
    );
    assert_eq!(c.info().await.unwrap().used, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused() {
    let node = started(&[], "max_connections = 2");
    let a = client(&node, &SecretKey::generate()).await;
    let b = client(&node, &SecretKey::generate()).await;
    a.info().await.unwrap();
    b.info().await.unwrap();
    let ep = common::net::client_endpoint(&SecretKey::generate()).unwrap();
    let third = common::net::NodeClient::connect(&ep, node.addr, node.id).await;
    assert!(
        matches!(third, Err(common::net::ConnectError::Handshake(_))),
        "{third:?}"
    );
    // Existing connections are unaffected; closing one makes room.
    a.info().await.unwrap();
    a.close();
    let mut ok = false;
    for _ in 0..50 {
        if let Ok(c) = common::net::NodeClient::connect(&ep, node.addr, node.id).await {
            c.info().await.unwrap();
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "a slot frees up after a connection closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_finds_rot_nobody_read() {
    let mut node = started(&[], "");
    let owner = SecretKey::generate();
    let c = client(&node, &owner).await;
    let good = Bytes::from(random_bytes(70_000, 16));
    let bad = Bytes::from(random_bytes(70_000, 17));
    c.store_shard(&owner, TAG, blake3::hash(&good), good.clone())
        .await
        .unwrap();
    c.store_shard(&owner, TAG, blake3::hash(&bad), bad.clone())
        .await
        .unwrap();
    let dir = node.path().to_path_buf();
    let run = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .args(args)
            .arg("--dir")
            .arg(&dir)
            .output()
            .unwrap()
    };
    // Refused while the node runs (the database is locked).
    assert!(!run(&["scrub"]).status.success());
    assert!(node.stop());
    let out = run(&["scrub"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("verified 2 shards, 140000 bytes"));

    let hex = blake3::hash(&bad).to_hex().to_string();
    let path = node.path().join("shards").join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[69_999] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let out = run(&["scrub"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("quarantined {hex}: bytes do not hash to the id")),
        "{text}"
    );

    node.start();
    let c = client(&node, &owner).await;
    let held = c
        .has_shards(&[blake3::hash(&good), blake3::hash(&bad)])
        .await
        .unwrap();
    assert_eq!(held, vec![true, false]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_scrub_quarantines_rot() {
    let mut node = started(&[], "");
    let owner = SecretKey::generate();
    let c = client(&node, &owner).await;
    let good = Bytes::from(random_bytes(50_000, 18));
    let bad = Bytes::from(random_bytes(50_000, 19));
    c.store_shard(&owner, TAG, blake3::hash(&good), good.clone())
        .await
        .unwrap();
    c.store_shard(&owner, TAG, blake3::hash(&bad), bad.clone())
        .await
        .unwrap();
    assert!(node.stop());
    let hex = blake3::hash(&bad).to_hex().to_string();
    let path = node.path().join("shards").join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[123] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    // Restart with a fast scrub; nobody reads the bad shard, yet it goes.
    let cfg = node.path().join("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace("scrub_rate = 8388608", "scrub_rate = 1073741824");
    std::fs::write(
        &cfg,
        text.replace("scrub_pause_secs = 86400", "scrub_pause_secs = 1"),
    )
    .unwrap();
    node.start();
    let c = client(&node, &owner).await;
    let ids = [blake3::hash(&good), blake3::hash(&bad)];
    let mut held = c.has_shards(&ids).await.unwrap();
    for _ in 0..600 {
        if !held[1] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        held = c.has_shards(&ids).await.unwrap();
    }
    assert_eq!(held, vec![true, false], "log: {}", node.log());
    // The index change is visible before the log line is written: wait for the line too.
    for _ in 0..100 {
        if node.log().contains("scrub: quarantined corrupt shard") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        node.log().contains("scrub: quarantined corrupt shard"),
        "log: {}",
        node.log()
    );
    assert_eq!(c.fetch_shard(ids[0]).await.unwrap(), good);
}

/// Unmounts on drop (lazily, so a still-open file cannot keep it busy).
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A real full disk: the node directory on an 8 MiB tmpfs and no free-space reserve, so writes
/// really fail with ENOSPC. Needs permission to mount (root, as on the CI machine); elsewhere it
/// says so and checks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_enospc_on_a_small_tmpfs() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "granary-test"])
        .arg(&mnt)
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    }
    let _mount = Mount(mnt.clone());
    let mut node = common::init_at(
        &mnt.join("node"),
        &["--seal-idle-secs", "3600"],
        "reserve_free_bytes = 0",
    );
    node.start();
    let owner = SecretKey::generate();
    let c = client(&node, &owner).await;
    let mut stored = Vec::new();
    let mut refused = None;
    for i in 0..20 {
        let data = Bytes::from(random_bytes(1_000_000, 500 + i));
        let id = blake3::hash(&data);
        match c.store_shard(&owner, TAG, id, data.clone()).await {
            Ok(_) => stored.push((id, data)),
            Err(e) => {
                refused = Some((id, e));
                break;
            }
        }
    }
    let (lost_id, e) = refused.expect("an 8 MiB disk fills up");
    assert_eq!(
        e.code(),
        Some(ErrorCode::DiskFull),
        "{e}; log: {}",
        node.log()
    );
    assert!(!stored.is_empty());
    // Nothing half-written is indexed or served; everything stored before is intact.
    assert_eq!(c.has_shards(&[lost_id]).await.unwrap(), vec![false]);
    for (id, data) in &stored {
        assert_eq!(&c.fetch_shard(*id).await.unwrap(), data);
    }
    assert_eq!(c.info().await.unwrap().shard_count, stored.len() as u64);
    // Freeing space makes room again.
    let (first, _) = stored[0];
    c.delete_shards(&owner, TAG, &[first]).await.unwrap();
    let small = Bytes::from(random_bytes(100_000, 999));
    c.store_shard(&owner, TAG, blake3::hash(&small), small.clone())
        .await
        .unwrap();
    assert_eq!(c.fetch_shard(blake3::hash(&small)).await.unwrap(), small);
    drop(c);
    assert!(
        node.stop(),
        "clean shutdown on a full disk; log: {}",
        node.log()
    );
}
