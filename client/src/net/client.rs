//! [`NodeClient`]: one authenticated connection to one storage node.

use std::{net::SocketAddr, ops::Range, time::Duration};

use bytes::Bytes;
use granary_proofs::{challenge::PostProof, seal_proof::SealProof};
use granary_protocol::{
    Message, NodeId, SecretKey, ShardId,
    auth::now_ms,
    message::{
        ChallengeRequest, DeleteOutcome, DeleteShards, FetchRange, HasShards, MAX_IDS_PER_REQUEST,
        MAX_PROOF_BODY, MAX_SHARD_SIZE, NodeInfo, NodeInfoRequest, RefTag, SealInfo,
        SealProofRequest, StoreOutcome, StoreShard, TagOutcome, TagShards, encoded_range_bound,
        unpack_bits,
    },
    sealing::{SealInfoBody, ShardSealState},
    tls::{self, PeerCertError},
    verified,
};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tracing::{Instrument, debug_span};

use super::{
    error::{ConnectError, RequestError},
    wire::{read_exact, read_response, unexpected},
};

/// Default bound on one call (connect, or one request and its response).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to one storage node. Cheap to clone; calls may run concurrently (each uses
/// its own QUIC stream).
#[derive(Debug, Clone)]
pub struct NodeClient {
    conn: Connection,
    node: NodeId,
    timeout: Duration,
}

impl NodeClient {
    /// Connects to the node at `addr`, refusing it unless it proves it is `expected`.
    pub async fn connect(
        endpoint: &Endpoint,
        addr: SocketAddr,
        expected: NodeId,
    ) -> Result<Self, ConnectError> {
        let connecting = endpoint.connect(addr, &tls::server_name(&expected))?;
        let conn = match tokio::time::timeout(DEFAULT_TIMEOUT, connecting).await {
            Err(_) => return Err(ConnectError::Timeout),
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(match tls::take_refusal(&expected) {
                    Some(PeerCertError::UnexpectedPeer { expected, actual }) => {
                        ConnectError::UnexpectedPeer { expected, actual }
                    }
                    Some(other) => ConnectError::BadCertificate(other),
                    None => ConnectError::Handshake(e),
                });
            }
        };
        Ok(Self {
            conn,
            node: expected,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Sets the bound on each later call (default 60 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The node's id (as pinned and proven).
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// The node's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Whether the connection is still open (it may still fail on next use).
    pub fn is_alive(&self) -> bool {
        self.conn.close_reason().is_none()
    }

    /// Closes the connection (pending calls fail).
    pub fn close(&self) {
        self.conn.close(0u32.into(), b"bye");
    }

    async fn call<T>(
        &self,
        what: &'static str,
        f: impl Future<Output = Result<T, RequestError>>,
    ) -> Result<T, RequestError> {
        let span = debug_span!("node_call", node = %self.node.fmt_short(), what);
        tokio::time::timeout(self.timeout, f.instrument(span))
            .await
            .map_err(|_| RequestError::Timeout)?
    }

    async fn open(&self, req: &Message) -> Result<(SendStream, RecvStream), RequestError> {
        let (mut send, recv) = self.conn.open_bi().await?;
        let frame = req
            .to_frame()
            .map_err(|e| RequestError::Invalid(e.to_string()))?;
        send.write_all(&frame).await?;
        Ok((send, recv))
    }

    async fn simple(&self, req: Message) -> Result<Message, RequestError> {
        let (mut send, mut recv) = self.open(&req).await?;
        let _ = send.finish();
        read_response(&mut recv).await
    }

    /// Stores a shard whose BLAKE3 hash is `id`, signed by `owner` (who is charged for it and
    /// may later delete it). The node verifies the bytes against `id` before keeping them.
    pub async fn store_shard(
        &self,
        owner: &SecretKey,
        tag: RefTag,
        id: blake3::Hash,
        bytes: Bytes,
    ) -> Result<StoreOutcome, RequestError> {
        let size = bytes.len() as u64;
        if size > MAX_SHARD_SIZE {
            return Err(RequestError::Invalid(format!(
                "shard of {size} bytes exceeds {MAX_SHARD_SIZE}"
            )));
        }
        let req = Message::StoreShard(StoreShard::signed(
            owner,
            self.node,
            ShardId::from(id),
            size,
            tag,
            now_ms(),
        ));
        self.call("store_shard", async {
            let (mut send, mut recv) = self.open(&req).await?;
            // The node may answer before taking the body (already held, refused): it then stops
            // the stream, and the write fails with `Stopped`; the response says why.
            let sent = send.write_chunk(bytes).await;
            let _ = send.finish();
            match (read_response(&mut recv).await, sent) {
                (Ok(Message::StoreShardOk(ok)), _) => Ok(ok.outcome),
                (Ok(m), _) => Err(unexpected(&m)),
                (Err(RequestError::Rejected(r)), _) => Err(r.into()),
                (Err(e), Ok(())) => Err(e),
                (Err(_), Err(w)) => Err(w.into()),
            }
        })
        .await
    }

    /// Fetches bytes `range` of shard `id` (the end is clamped to the shard size), verified
    /// against `id`; a proof that does not verify is [`RequestError::Verify`].
    pub async fn fetch_range(
        &self,
        id: blake3::Hash,
        range: Range<u64>,
    ) -> Result<Vec<u8>, RequestError> {
        let req = FetchRange {
            shard_id: ShardId::from(id),
            start: range.start,
            end: range.end,
        };
        self.call("fetch_range", async {
            let (mut send, mut recv) = self.open(&Message::FetchRange(req)).await?;
            let _ = send.finish();
            let ok = match read_response(&mut recv).await? {
                Message::FetchRangeOk(ok) => ok,
                m => return Err(unexpected(&m)),
            };
            if ok.end != range.end.min(ok.size) || ok.end < range.start {
                return Err(RequestError::Protocol(format!(
                    "node answered range end {} for {}..{} of a {}-byte shard",
                    ok.end, range.start, range.end, ok.size
                )));
            }
            let bound = encoded_range_bound(ok.end - range.start);
            if ok.encoded_len > bound {
                return Err(RequestError::Protocol(format!(
                    "encoded range of {} bytes exceeds {bound}",
                    ok.encoded_len
                )));
            }
            let mut encoded = vec![0u8; ok.encoded_len as usize];
            read_exact(&mut recv, &mut encoded).await?;
            let data = tokio::task::spawn_blocking(move || {
                verified::decode_range(&id, ok.size, range.start..ok.end, &encoded)
            })
            .await
            .map_err(|e| RequestError::Protocol(format!("verification task: {e}")))??;
            Ok(data)
        })
        .await
    }

    /// Fetches a whole shard, verified against `id`.
    pub async fn fetch_shard(&self, id: blake3::Hash) -> Result<Vec<u8>, RequestError> {
        self.fetch_range(id, 0..u64::MAX).await
    }

    /// Which of `ids` the node holds (batched; any number of ids).
    pub async fn has_shards(&self, ids: &[blake3::Hash]) -> Result<Vec<bool>, RequestError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_IDS_PER_REQUEST) {
            let req = Message::HasShards(HasShards {
                ids: chunk.iter().map(|h| ShardId::from(*h)).collect(),
            });
            let bits = self
                .call("has_shards", async {
                    match self.simple(req).await? {
                        Message::HasShardsOk(ok) => unpack_bits(&ok.bitmap, chunk.len())
                            .ok_or_else(|| {
                                RequestError::Protocol("bitmap length does not match".into())
                            }),
                        m => Err(unexpected(&m)),
                    }
                })
                .await?;
            out.extend(bits);
        }
        Ok(out)
    }

    /// Sends `request(batch)` for each batch of at most [`MAX_IDS_PER_REQUEST`] of `ids` and
    /// collects the one outcome per id that `outcomes` takes from each answer (`None`: an answer
    /// of the wrong type).
    async fn batched<O>(
        &self,
        what: &'static str,
        ids: &[blake3::Hash],
        request: impl Fn(Vec<ShardId>) -> Message,
        outcomes: impl Fn(&mut Message) -> Option<Vec<O>>,
    ) -> Result<Vec<O>, RequestError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_IDS_PER_REQUEST) {
            let req = request(chunk.iter().map(|h| ShardId::from(*h)).collect());
            let got = self
                .call(what, async {
                    let mut answer = self.simple(req).await?;
                    match outcomes(&mut answer) {
                        Some(o) if o.len() == chunk.len() => Ok(o),
                        Some(_) => Err(RequestError::Protocol("wrong number of outcomes".into())),
                        None => Err(unexpected(&answer)),
                    }
                })
                .await?;
            out.extend(got);
        }
        Ok(out)
    }

    /// Releases `owner`'s `tag` references to `ids`; the owner's hold ends with its last tag,
    /// and the node removes a shard's bytes when no owner holds it any more. One outcome per id,
    /// in order.
    pub async fn delete_shards(
        &self,
        owner: &SecretKey,
        tag: RefTag,
        ids: &[blake3::Hash],
    ) -> Result<Vec<DeleteOutcome>, RequestError> {
        self.batched(
            "delete_shards",
            ids,
            |batch| {
                Message::DeleteShards(DeleteShards::signed(owner, self.node, tag, batch, now_ms()))
            },
            |m| match m {
                Message::DeleteShardsOk(ok) => Some(std::mem::take(&mut ok.outcomes)),
                _ => None,
            },
        )
        .await
    }

    /// Adds `owner`'s `tag` reference to `ids` the node already holds. One outcome per id.
    pub async fn tag_shards(
        &self,
        owner: &SecretKey,
        tag: RefTag,
        ids: &[blake3::Hash],
    ) -> Result<Vec<TagOutcome>, RequestError> {
        self.batched(
            "tag_shards",
            ids,
            |batch| Message::TagShards(TagShards::signed(owner, self.node, tag, batch, now_ms())),
            |m| match m {
                Message::TagShardsOk(ok) => Some(std::mem::take(&mut ok.outcomes)),
                _ => None,
            },
        )
        .await
    }

    /// The node's description: id, version, capacity, free and used bytes, label, shard count.
    pub async fn info(&self) -> Result<NodeInfo, RequestError> {
        self.call("info", async {
            match self.simple(Message::NodeInfo(NodeInfoRequest)).await? {
                Message::NodeInfoOk(info) if info.id == self.node => Ok(info),
                Message::NodeInfoOk(info) => Err(RequestError::Protocol(format!(
                    "node reports id {}",
                    info.id
                ))),
                m => Err(unexpected(&m)),
            }
        })
        .await
    }

    /// Sends `req` and reads a response frame followed by a raw postcard body (proof requests).
    async fn with_body<T: serde::de::DeserializeOwned>(
        &self,
        req: Message,
        body_len: impl Fn(&Message) -> Option<u64>,
    ) -> Result<T, RequestError> {
        let (mut send, mut recv) = self.open(&req).await?;
        let _ = send.finish();
        let m = read_response(&mut recv).await?;
        let Some(n) = body_len(&m) else {
            return Err(unexpected(&m));
        };
        if n > MAX_PROOF_BODY {
            return Err(RequestError::Protocol(format!(
                "body of {n} bytes exceeds {MAX_PROOF_BODY}"
            )));
        }
        let mut body = vec![0u8; n as usize];
        read_exact(&mut recv, &mut body).await?;
        postcard::from_bytes(&body)
            .map_err(|e| RequestError::Protocol(format!("undecodable proof body: {e}")))
    }

    /// The sealing state of `ids` and the node's signed statements for their units (unchecked:
    /// verify each unit with [`SignedUnit::verify`](granary_protocol::sealing::SignedUnit)).
    pub async fn seal_info(&self, ids: &[blake3::Hash]) -> Result<SealInfoBody, RequestError> {
        let mut out = SealInfoBody {
            shards: Vec::with_capacity(ids.len()),
            units: Vec::new(),
        };
        for chunk in ids.chunks(MAX_IDS_PER_REQUEST) {
            let req = Message::SealInfo(SealInfo {
                ids: chunk.iter().map(|h| ShardId::from(*h)).collect(),
            });
            let part: SealInfoBody = self
                .call(
                    "seal_info",
                    self.with_body(req, |m| match m {
                        Message::SealInfoOk(ok) => Some(ok.body_len),
                        _ => None,
                    }),
                )
                .await?;
            if part.shards.len() != chunk.len() {
                return Err(RequestError::Protocol(
                    "wrong number of shard states".into(),
                ));
            }
            let base = out.units.len() as u32;
            for s in part.shards {
                out.shards.push(match s {
                    ShardSealState::Sealed { unit } if (unit as usize) < part.units.len() => {
                        ShardSealState::Sealed { unit: base + unit }
                    }
                    ShardSealState::Sealed { .. } => {
                        return Err(RequestError::Protocol("unit index out of range".into()));
                    }
                    other => other,
                });
            }
            out.units.extend(part.units);
        }
        Ok(out)
    }

    /// A seal proof for the unit `comm_r` with `openings` openings from `seed` (unchecked).
    pub async fn seal_proof(
        &self,
        comm_r: [u8; 32],
        seed: [u8; 32],
        openings: u32,
    ) -> Result<SealProof, RequestError> {
        let req = Message::SealProof(SealProofRequest {
            comm_r,
            seed,
            openings,
        });
        self.call(
            "seal_proof",
            self.with_body(req, |m| match m {
                Message::SealProofOk(ok) => Some(ok.proof_len),
                _ => None,
            }),
        )
        .await
    }

    /// Answers to `chunks` storage challenges from `seed` over `units` (unchecked).
    pub async fn challenge(
        &self,
        seed: [u8; 32],
        units: Vec<[u8; 32]>,
        chunks: u32,
    ) -> Result<PostProof, RequestError> {
        let req = Message::Challenge(ChallengeRequest {
            seed,
            units,
            chunks,
        });
        self.call(
            "challenge",
            self.with_body(req, |m| match m {
                Message::ChallengeOk(ok) => Some(ok.proof_len),
                _ => None,
            }),
        )
        .await
    }
}
