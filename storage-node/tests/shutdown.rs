//! Stopping a node, and many peers at once: SIGINT takes the same graceful path as SIGTERM; a
//! store still running when the grace period ends is rolled back (nothing half-written is kept
//! or served, and no clean shutdown is claimed); many concurrent connections are all served, and
//! a burst beyond `max_connections` is refused without disturbing the admitted ones.
#![allow(clippy::unwrap_used)]

mod common;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use common::{NodeProc, Reply, TAG, client, net, random_bytes, raw_conn, read_reply, started};
use granary_protocol::{
    ErrorCode, Message, NodeId, SecretKey,
    auth::now_ms,
    message::{StoreShard, StoreShardOk},
};
use net::StoreOutcome;
use tokio::task::JoinSet;

/// Bound on anything that should take seconds: only catches hangs.
const HANG: Duration = Duration::from_secs(60);

/// Polls `cond` every millisecond until it holds; fails the test if it has not after [`HANG`].
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + HANG;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The uploads staged in the node's `tmp/`: (file name, bytes written so far).
fn staged(node: &NodeProc) -> Vec<(String, u64)> {
    std::fs::read_dir(node.path().join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| {
            let len = e.metadata().map_or(0, |m| m.len());
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect()
}

fn clean_marker(node: &NodeProc) -> std::path::PathBuf {
    node.path().join("clean-shutdown")
}

/// A signed store whose body has only partly been sent; its stream stays open (the client
/// neither sends more nor finishes) until [`StalledStore::complete`] or [`StalledStore::reply`].
struct StalledStore {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    data: Bytes,
    sent: usize,
}

impl StalledStore {
    /// Opens a stream on `conn` and sends a `StoreShard` of `data` signed by `owner`, followed
    /// by the first `sent` bytes of the body.
    async fn begin(
        conn: &quinn::Connection,
        node: &NodeProc,
        owner: &SecretKey,
        data: Bytes,
        sent: usize,
    ) -> Self {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        let id = blake3::hash(&data).into();
        let req = StoreShard::signed(owner, node.id, id, data.len() as u64, TAG, now_ms());
        let frame = Message::StoreShard(req).to_frame().unwrap();
        send.write_all(&frame).await.unwrap();
        send.write_all(&data[..sent]).await.unwrap();
        Self {
            send,
            recv,
            data,
            sent,
        }
    }

    fn id(&self) -> blake3::Hash {
        blake3::hash(&self.data)
    }

    /// Sends the rest of the body, finishes the stream and returns the node's reply.
    async fn complete(mut self) -> Reply {
        self.send.write_all(&self.data[self.sent..]).await.unwrap();
        self.send.finish().unwrap();
        read_reply(&mut self.recv).await
    }

    /// Sends nothing more and returns the node's reply, or how the stream ended.
    async fn reply(mut self) -> Reply {
        read_reply(&mut self.recv).await
    }
}

/// Stores each of `kept` whole as `owner`, then starts a 1 MiB store (random bytes from `seed`)
/// on a connection of its own that stalls after 600 KB, and waits until part of its body is in
/// a staged file. Returns the connection (keep it open) and the stalled store.
async fn kept_then_stalled(
    node: &NodeProc,
    owner: &SecretKey,
    kept: &[Bytes],
    seed: u64,
) -> (quinn::Connection, StalledStore) {
    let c = client(node, owner).await;
    for s in kept {
        c.store_shard(owner, TAG, blake3::hash(s), s.clone())
            .await
            .unwrap();
    }
    let conn = raw_conn(node).await;
    let data = Bytes::from(random_bytes(1 << 20, seed));
    let stalled = StalledStore::begin(&conn, node, owner, data, 600_000).await;
    let hex = stalled.id().to_hex().to_string();
    wait_until("part of the body is written to a staged file", || {
        staged(node)
            .iter()
            .any(|(name, len)| name.starts_with(&hex) && *len > 0)
    })
    .await;
    (conn, stalled)
}

/// Connects a fresh client (its own key and endpoint, so its own UDP socket) to the node `id`
/// at `addr`.
async fn connect_fresh(addr: SocketAddr, id: NodeId) -> Result<net::NodeClient, net::ConnectError> {
    let ep = net::client_endpoint(&SecretKey::generate()).unwrap();
    net::NodeClient::connect(&ep, addr, id).await
}

/// Whether `reply` acknowledges a newly stored shard.
fn is_stored(reply: &Reply) -> bool {
    matches!(
        reply,
        Reply::Msg(Message::StoreShardOk(StoreShardOk {
            outcome: StoreOutcome::Stored
        }))
    )
}

/// Whether a connection attempt was actively refused by the node (QUIC `CONNECTION_REFUSED`),
/// not merely left unanswered until the client's handshake timeout.
fn is_refused(attempt: &Result<net::NodeClient, net::ConnectError>) -> bool {
    matches!(
        attempt,
        Err(net::ConnectError::Handshake(quinn::ConnectionError::ConnectionClosed(close)))
            if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED
    )
}

/// SIGINT (Ctrl-C) takes the same graceful path as SIGTERM. A store has sent its header and
/// 600 KB of a 1 MiB body when SIGINT arrives; once the node says it is shutting down, a new
/// request on the same connection gets `ShuttingDown` and a new connection is refused; then the
/// client sends the rest, and the store completes and is acknowledged. The process exits 0 and
/// records the clean-shutdown marker, and the next start trusts the marker (compares no shard
/// files) and serves both the earlier shard and the one that was in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_lets_the_store_in_flight_finish_and_shuts_down_cleanly() {
    let mut node = started(&[], "");
    let owner = SecretKey::generate();
    let earlier = Bytes::from(random_bytes(50_000, 30));
    let (conn, stalled) =
        kept_then_stalled(&node, &owner, std::slice::from_ref(&earlier), 31).await;
    let (in_flight, in_flight_id) = (stalled.data.clone(), stalled.id());

    node.signal(libc::SIGINT);
    wait_until("the node stops accepting (or exits)", || {
        node.log().contains("shutting down: no new connections") || node.exited()
    })
    .await;
    // While it stops, a new request on an open connection gets a typed `ShuttingDown`, and a
    // new connection is refused outright: clients go elsewhere without waiting for a timeout.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let info = Message::NodeInfo(granary_protocol::message::NodeInfoRequest);
    send.write_all(&info.to_frame().unwrap()).await.unwrap();
    let _ = send.finish();
    let refused = read_reply(&mut recv).await;
    assert_eq!(
        refused.error_code(),
        Some(ErrorCode::ShuttingDown as u16),
        "{refused:?}"
    );
    let attempt = connect_fresh(node.addr, node.id).await;
    assert!(is_refused(&attempt), "{:?}", attempt.err());
    let reply = stalled.complete().await;
    assert!(is_stored(&reply), "{reply:?}; log: {}", node.log());
    let exit = node.wait_exit(HANG).await;
    assert!(exit.success(), "{exit}; log: {}", node.log());
    assert!(
        clean_marker(&node).exists(),
        "every request finished: a clean shutdown; log: {}",
        node.log()
    );
    assert!(staged(&node).is_empty(), "{:?}", staged(&node));

    node.start();
    let log = node.log();
    assert!(
        log.contains("checked=0") && log.contains("after_clean_shutdown=true"),
        "{log}"
    );
    let c = client(&node, &owner).await;
    assert_eq!(
        c.fetch_shard(blake3::hash(&earlier)).await.unwrap(),
        earlier
    );
    assert_eq!(c.fetch_shard(in_flight_id).await.unwrap(), in_flight);
    assert_eq!(c.info().await.unwrap().shard_count, 2);
}

/// A second signal stops a node that is waiting for a stalled request at once (exit code 1, as
/// the operator asked), where one signal would wait out the grace period: no clean-shutdown
/// marker is written, and the next start removes the staged file, checks every shard and serves
/// the complete ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once() {
    let mut node = started(&[], "");
    let owner = SecretKey::generate();
    let kept = Bytes::from(random_bytes(70_000, 50));
    let (_conn, stalled) = kept_then_stalled(&node, &owner, std::slice::from_ref(&kept), 51).await;
    let stalled_id = stalled.id();

    node.signal(libc::SIGTERM);
    wait_until("the node starts shutting down", || {
        node.log().contains("shutting down: no new connections")
    })
    .await;
    node.signal(libc::SIGINT);
    let exit = node.wait_exit(HANG).await;
    assert_eq!(exit.code(), Some(1), "{exit}; log: {}", node.log());
    assert!(node.log().contains("second signal"), "{}", node.log());
    assert!(!clean_marker(&node).exists(), "not a clean shutdown");
    drop(stalled);

    node.start();
    let log = node.log();
    assert!(log.contains("after_clean_shutdown=false"), "{log}");
    assert!(staged(&node).is_empty(), "{:?}", staged(&node));
    let c = client(&node, &owner).await;
    assert_eq!(c.fetch_shard(blake3::hash(&kept)).await.unwrap(), kept);
    assert!(
        c.fetch_shard(stalled_id).await.is_err(),
        "the stalled shard is not served"
    );
    assert_eq!(c.info().await.unwrap().shard_count, 1);
}

/// A store still receiving its body when the grace period ends is rolled back. The client sends
/// the header and 600 KB of a 1 MiB body, then nothing (its stream stays open); the node gets
/// SIGTERM with `shutdown_grace_ms = 500` (the 10 s read timeout cannot end the request first).
/// The node exits 0 without writing the clean-shutdown marker, the client gets no
/// acknowledgement, and the staged file is gone. The next start, finding no marker, checks every
/// shard and finds nothing to quarantine: the half-sent shard is not found, only the two
/// complete shards are counted and served, and the shard can be stored whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_stalled_past_the_grace_period_is_rolled_back() {
    let mut node = started(&[], "shutdown_grace_ms = 500");
    let owner = SecretKey::generate();
    let kept: Vec<Bytes> = (0..2u64)
        .map(|i| Bytes::from(random_bytes(60_000 + i as usize, 40 + i)))
        .collect();
    let (_conn, stalled) = kept_then_stalled(&node, &owner, &kept, 42).await;
    let (partial, partial_id) = (stalled.data.clone(), stalled.id());
    let hex = partial_id.to_hex().to_string();

    node.signal(libc::SIGTERM);
    let exit = node.wait_exit(HANG).await;
    assert!(exit.success(), "{exit}; log: {}", node.log());
    let log = node.log();
    assert!(log.contains("grace period over"), "{log}");
    assert!(
        !clean_marker(&node).exists(),
        "a request was cut short: no clean shutdown; log: {log}"
    );
    assert!(
        staged(&node).is_empty(),
        "the aborted upload removed its staged file: {:?}",
        staged(&node)
    );
    let reply = stalled.reply().await;
    assert!(matches!(reply, Reply::Closed(_)), "{reply:?}");

    node.start();
    let log = node.log();
    assert!(
        log.contains("checked=2")
            && log.contains("quarantined=0")
            && log.contains("after_clean_shutdown=false"),
        "{log}"
    );
    let c = client(&node, &owner).await;
    assert_eq!(
        c.fetch_shard(partial_id).await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    let kept_ids: Vec<_> = kept.iter().map(|s| blake3::hash(s)).collect();
    assert_eq!(
        c.has_shards(&[partial_id, kept_ids[0], kept_ids[1]])
            .await
            .unwrap(),
        vec![false, true, true]
    );
    for (id, s) in kept_ids.iter().zip(&kept) {
        assert_eq!(&c.fetch_shard(*id).await.unwrap(), s);
    }
    let info = c.info().await.unwrap();
    let kept_bytes: u64 = kept.iter().map(|s| s.len() as u64).sum();
    assert_eq!((info.shard_count, info.used), (2, kept_bytes));
    let status = node.status();
    assert!(
        status.contains("shards      2") && !status.contains(&hex),
        "{status}"
    );
    assert_eq!(
        c.store_shard(&owner, TAG, partial_id, partial.clone())
            .await
            .unwrap(),
        StoreOutcome::Stored
    );
    assert_eq!(c.fetch_shard(partial_id).await.unwrap(), partial);
}

/// Stores a shard through `c` and reads it back whole.
async fn store_and_fetch(c: &net::NodeClient, owner: &SecretKey, data: Bytes) {
    let id = blake3::hash(&data);
    assert_eq!(
        c.store_shard(owner, TAG, id, data.clone()).await.unwrap(),
        StoreOutcome::Stored
    );
    assert_eq!(c.fetch_shard(id).await.unwrap(), data);
}

/// 150 clients, each with its own key and endpoint, connect at once (well within the default
/// `max_connections`); with all 150 connections open, each asks NodeInfo and stores and fetches
/// its own small shard. Every call succeeds, every connection is still open at the end, the node
/// counts all 150 shards, and a client arriving afterwards is served too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_connections_are_all_served() {
    const CLIENTS: usize = 150;
    let node = started(&[], "");
    let mut connecting = JoinSet::new();
    for _ in 0..CLIENTS {
        connecting.spawn(connect_fresh(node.addr, node.id));
    }
    let mut clients = Vec::new();
    while let Some(c) = connecting.join_next().await {
        clients.push(c.unwrap().unwrap_or_else(|e| panic!("connect: {e}")));
    }

    let mut requests = JoinSet::new();
    for (i, c) in clients.iter().enumerate() {
        let (c, node_id) = (c.clone(), node.id);
        requests.spawn(async move {
            assert_eq!(c.info().await.unwrap().id, node_id);
            let owner = SecretKey::generate();
            let data = Bytes::from(random_bytes(2_000 + i, 100 + i as u64));
            store_and_fetch(&c, &owner, data).await;
        });
    }
    while let Some(done) = requests.join_next().await {
        done.unwrap();
    }
    assert!(clients.iter().all(net::NodeClient::is_alive));

    let late = connect_fresh(node.addr, node.id).await.unwrap();
    let info = late.info().await.unwrap();
    let expect_used: u64 = (0..CLIENTS).map(|i| 2_000 + i as u64).sum();
    assert_eq!((info.shard_count, info.used), (CLIENTS as u64, expect_used));
    let owner = SecretKey::generate();
    store_and_fetch(&late, &owner, Bytes::from(random_bytes(30_000, 99))).await;
}

/// With `max_connections = 5` and five connections admitted, four of them in the middle of an
/// upload (header and 1 of 2 MiB sent, the node staging each), a burst of 20 connection attempts
/// at once is actively refused (`CONNECTION_REFUSED`, not left to a handshake timeout). The
/// admitted connections are undisturbed: the four uploads complete and are acknowledged, and the
/// fifth connection fetches all four shards (verified) and stores another.
/// (`connections_over_the_limit_are_refused` covers one extra connection and a freed slot; this
/// is a concurrent burst against busy connections.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_limit_is_refused_while_admitted_uploads_continue() {
    const UPLOADS: usize = 4;
    const BURST: usize = 20;
    let node = started(&[], &format!("max_connections = {}", UPLOADS + 1));
    let owner = SecretKey::generate();
    let c = client(&node, &owner).await;
    let mut uploads = Vec::new();
    for i in 0..UPLOADS {
        let conn = raw_conn(&node).await;
        let data = Bytes::from(random_bytes(2 << 20, 200 + i as u64));
        let stalled = StalledStore::begin(&conn, &node, &owner, data.clone(), 1 << 20).await;
        uploads.push((conn, stalled, data));
    }
    wait_until("every upload is staged", || staged(&node).len() == UPLOADS).await;

    let mut burst = JoinSet::new();
    for _ in 0..BURST {
        burst.spawn(connect_fresh(node.addr, node.id));
    }
    while let Some(attempt) = burst.join_next().await {
        let attempt = attempt.unwrap();
        assert!(is_refused(&attempt), "{attempt:?}");
    }

    for (_conn, stalled, data) in uploads {
        let id = stalled.id();
        let reply = stalled.complete().await;
        assert!(is_stored(&reply), "{reply:?}");
        assert_eq!(c.fetch_shard(id).await.unwrap(), data);
    }
    assert_eq!(c.info().await.unwrap().shard_count, UPLOADS as u64);
    store_and_fetch(&c, &owner, Bytes::from(random_bytes(20_000, 300))).await;
}
