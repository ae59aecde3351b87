//! Request handlers: one function per request type, each returning the response frame (and raw
//! body) or a [`Reject`].
//!
//! Order of checks for owner-signed requests, cheapest first, before any body byte is read:
//! addressee, timestamp, signature, size limit, nonce (replay), quota reservation, free disk.

use std::sync::Arc;

use bytes::Bytes;
use granary_protocol::{
    ErrorCode, Message, NodeId, ShardId,
    auth::{AuthError, MAX_CLOCK_SKEW_MS, now_ms},
    message::{
        ChallengeOk, ChallengeRequest, DeleteOutcome, DeleteShards, DeleteShardsOk, FetchRange,
        FetchRangeOk, HasShards, HasShardsOk, MAX_PROOF_BODY, NodeInfo, RefTag, SealInfo,
        SealInfoOk, SealProofOk, SealProofRequest, StoreOutcome, StoreShard, StoreShardOk,
        TagOutcome, TagShards, TagShardsOk, pack_bits,
    },
    verified::{self, EncodeError},
};
use quinn::RecvStream;

use crate::{
    state::{Reject, State, disk_free},
    store::{AddOutcome, RemoveOutcome},
    upload,
};

/// A successful response.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) msg: Message,
    pub(crate) body: Option<Bytes>,
    /// Memory budget held until the body is written.
    pub(crate) _budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl From<Message> for Response {
    fn from(msg: Message) -> Self {
        Self {
            msg,
            body: None,
            _budget: None,
        }
    }
}

impl From<AuthError> for Reject {
    fn from(e: AuthError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

/// Runs blocking work (RocksDB commits, fsync, hashing) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Reject> + Send + 'static,
) -> Result<T, Reject> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Reject::internal("blocking task failed", e))?
}

fn check_nonce(
    st: &State,
    owner: &NodeId,
    f: &granary_protocol::message::Freshness,
) -> Result<(), Reject> {
    if st.store.remember_nonce(owner, &f.nonce, f.timestamp_ms)? {
        Ok(())
    } else {
        Err(AuthError::Replay { owner: *owner }.into())
    }
}

pub(crate) async fn node_info(st: &Arc<State>) -> Result<Response, Reject> {
    let usage = st.store.usage()?;
    let room = st.config.capacity.saturating_sub(usage.used);
    let free = disk_free(st.blobs.tmp_dir()).map_or(room, |d| d.min(room));
    Ok(Message::NodeInfoOk(NodeInfo {
        id: st.id,
        version: env!("CARGO_PKG_VERSION").to_string(),
        capacity: st.config.capacity,
        free,
        used: usage.used,
        label: st.config.label.clone(),
        shard_count: usage.shards,
    })
    .into())
}

pub(crate) async fn has_shards(st: &Arc<State>, req: HasShards) -> Result<Response, Reject> {
    let store = Arc::clone(&st.store);
    let bits = blocking(move || Ok(store.has(&req.ids)?)).await?;
    Ok(Message::HasShardsOk(HasShardsOk {
        bitmap: pack_bits(&bits),
    })
    .into())
}

pub(crate) async fn store_shard(
    st: &Arc<State>,
    req: StoreShard,
    recv: &mut RecvStream,
) -> Result<Response, Reject> {
    req.verify(st.id, now_ms())?;
    if req.size > st.config.max_shard_size {
        return Err(Reject::new(
            ErrorCode::ShardTooLarge,
            format!(
                "{} bytes exceeds the limit of {}",
                req.size, st.config.max_shard_size
            ),
        ));
    }
    check_nonce(st, &req.owner, &req.freshness)?;
    let (id, size, owner, tag) = (req.shard_id, req.size, req.owner, req.tag);
    let ok = |outcome| Ok(Message::StoreShardOk(StoreShardOk { outcome }).into());

    if st.store.shard(&id)?.is_some() {
        // Held already: record the reference without reading the body. Under the commit lock,
        // so a concurrent delete of the last reference cannot leave an index entry without files.
        let state = Arc::clone(st);
        let added = blocking(move || {
            let _g = state
                .commit_lock
                .lock()
                .map_err(|_| Reject::internal("commit lock", "poisoned"))?;
            if state.store.shard(&id)?.is_none() {
                return Ok(false);
            }
            state
                .store
                .add_reference(&id, size, &owner, &tag, &state.quota())?;
            Ok(true)
        })
        .await?;
        if added {
            return ok(StoreOutcome::AlreadyHeld);
        }
        // Deleted meanwhile: take the body.
    }

    let read_timeout = st.read_timeout();
    let permit = tokio::time::timeout(read_timeout, Arc::clone(&st.store_permits).acquire_owned())
        .await
        .map_err(|_| Reject::new(ErrorCode::Busy, "too many uploads in progress"))?
        .map_err(|_| Reject::new(ErrorCode::ShuttingDown, "node is shutting down"))?;
    let reservation = st.reserve(owner, size)?;
    let need = size + verified::outboard_len(size) + st.config.limits.reserve_free_bytes;
    if disk_free(st.blobs.tmp_dir()).is_some_and(|free| free < need) {
        return Err(Reject::new(
            ErrorCode::DiskFull,
            "not enough free disk space",
        ));
    }

    let received = upload::receive(st, id, size, recv).await?;

    let state = Arc::clone(st);
    let outcome = blocking(move || {
        let _permit = permit;
        let _reservation = reservation;
        commit_shard(&state, id, size, owner, &tag, received)
    })
    .await?;
    ok(outcome)
}

/// Makes a received, verified shard durable (fsync, rename) and indexes it with its outboard.
fn commit_shard(
    st: &State,
    id: ShardId,
    size: u64,
    owner: NodeId,
    tag: &RefTag,
    received: upload::Received,
) -> Result<StoreOutcome, Reject> {
    let upload::Received {
        outboard,
        staged,
        file,
    } = received;
    file.sync_data()?;
    let _g = st
        .commit_lock
        .lock()
        .map_err(|_| Reject::internal("commit lock", "poisoned"))?;
    let was_indexed = st.store.shard(&id)?.is_some();
    if !was_indexed {
        st.blobs.commit(staged)?;
    }
    let quota = st.quota();
    match st
        .store
        .add_shard(&id, size, &owner, tag, &quota, Some(&outboard.data))
    {
        Ok(AddOutcome::NewShard) => Ok(StoreOutcome::Stored),
        Ok(_) => Ok(StoreOutcome::AlreadyHeld),
        Err(e) => {
            if !was_indexed {
                let _ = st.blobs.remove(&id);
            }
            Err(e.into())
        }
    }
}

pub(crate) async fn fetch_range(st: &Arc<State>, req: FetchRange) -> Result<Response, Reject> {
    let id = req.shard_id;
    let rec = st
        .store
        .shard(&id)?
        .ok_or_else(|| Reject::new(ErrorCode::NotFound, format!("shard {id} not held")))?;
    let end = req.end.min(rec.size);
    if req.start > end {
        return Err(Reject::new(
            ErrorCode::RangeOutOfBounds,
            format!(
                "range {}..{} outside shard of {} bytes",
                req.start, req.end, rec.size
            ),
        ));
    }
    let start = req.start;
    let bound = granary_protocol::message::encoded_range_bound(end - start);
    let units = u32::try_from(bound.div_ceil(crate::state::FETCH_UNIT)).unwrap_or(u32::MAX);
    let budget = tokio::time::timeout(
        st.read_timeout(),
        Arc::clone(&st.fetch_permits).acquire_many_owned(units),
    )
    .await
    .map_err(|_| Reject::new(ErrorCode::Busy, "too many range reads in progress"))?
    .map_err(|_| Reject::new(ErrorCode::ShuttingDown, "node is shutting down"))?;
    let state = Arc::clone(st);
    let encoded = blocking(move || {
        let ob = state.blobs.outboard(state.store.as_ref(), &id, rec.size)?;
        let mut out = Vec::with_capacity(bound as usize);
        let res = match state.blobs.open_data(&id) {
            Ok(file) => verified::encode_range(&file, &ob, start..end, &mut out),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Sealed and plain copy dropped: unseal the 16 KiB groups the proof covers.
                let g = verified::BLOCK_SIZE.bytes() as u64;
                let (from, to) = (
                    start / g * g,
                    end.div_ceil(g).saturating_mul(g).min(rec.size),
                );
                let bytes =
                    crate::sealing::read_sealed(state.store.as_ref(), &state.units, &id, from..to)?
                        .ok_or(e)?;
                verified::encode_range(OffsetBytes { base: from, bytes }, &ob, start..end, &mut out)
            }
            Err(e) => return Err(e.into()),
        };
        match res {
            Ok(()) => Ok(out),
            Err(EncodeError::Corrupt(why)) => {
                tracing::error!(%id, %why, "stored shard failed verification; quarantining");
                let _g = state.commit_lock.lock();
                let _ = state.store.drop_shard(&id);
                let _ = state.blobs.quarantine(&id);
                Err(Reject::new(
                    ErrorCode::NotFound,
                    "shard failed verification and was quarantined",
                ))
            }
            Err(EncodeError::Io(e)) => Err(e.into()),
            Err(e) => Err(Reject::internal("encoding range", e)),
        }
    })
    .await?;
    let msg = Message::FetchRangeOk(FetchRangeOk {
        size: rec.size,
        end,
        encoded_len: encoded.len() as u64,
    });
    Ok(Response {
        msg,
        body: Some(Bytes::from(encoded)),
        _budget: Some(budget),
    })
}

/// Bytes `base..base + bytes.len()` of a shard, for encoding a range unsealed from its unit.
struct OffsetBytes {
    base: u64,
    bytes: Vec<u8>,
}

impl verified::ReadAt for OffsetBytes {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let at = pos
            .checked_sub(self.base)
            .ok_or_else(|| std::io::Error::other("read before the unsealed range"))?;
        let src = self.bytes.get(at as usize..).unwrap_or_default();
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        Ok(n)
    }
}

/// Proof requests are for peers that store data here (owners now, auditors later): nobody else
/// can make the node unseal or read replicas.
fn check_prover_access(st: &State, peer: &NodeId) -> Result<(), Reject> {
    if !st.config.is_auditor(peer) && st.store.owner_usage(peer)?.shards == 0 {
        return Err(Reject::new(
            ErrorCode::Forbidden,
            "proof requests are served to owners of data on this node and its auditors only",
        ));
    }
    Ok(())
}

async fn proof_permit(st: &Arc<State>) -> Result<tokio::sync::OwnedSemaphorePermit, Reject> {
    tokio::time::timeout(
        st.read_timeout(),
        Arc::clone(&st.proof_permits).acquire_owned(),
    )
    .await
    .map_err(|_| Reject::new(ErrorCode::Busy, "too many proof requests in progress"))?
    .map_err(|_| Reject::new(ErrorCode::ShuttingDown, "node is shutting down"))
}

fn postcard_body<T: serde::Serialize>(v: &T) -> Result<Bytes, Reject> {
    let b = postcard::to_stdvec(v).map_err(|e| Reject::internal("encoding proof", e))?;
    if b.len() as u64 > MAX_PROOF_BODY {
        return Err(Reject::new(
            ErrorCode::Internal,
            "proof larger than the body limit",
        ));
    }
    Ok(Bytes::from(b))
}

/// Serves a proof request from a data owner: the access check, one of the node's proof permits
/// (when `limited`), `prove` on a blocking thread, then the frame `ok(body_len)` followed by the
/// postcard-encoded result.
async fn proof_response<T: serde::Serialize>(
    st: &Arc<State>,
    peer: &NodeId,
    limited: bool,
    prove: impl FnOnce(&State) -> Result<T, Reject> + Send + 'static,
    ok: impl FnOnce(u64) -> Message,
) -> Result<Response, Reject> {
    check_prover_access(st, peer)?;
    let permit = match limited {
        true => Some(proof_permit(st).await?),
        false => None,
    };
    let state = Arc::clone(st);
    let body = blocking(move || {
        let _permit = permit;
        postcard_body(&prove(&state)?)
    })
    .await?;
    Ok(Response {
        msg: ok(body.len() as u64),
        body: Some(body),
        _budget: None,
    })
}

pub(crate) async fn seal_info(
    st: &Arc<State>,
    peer: &NodeId,
    req: SealInfo,
) -> Result<Response, Reject> {
    proof_response(
        st,
        peer,
        false,
        move |s| crate::sealing::seal_info(s.store.as_ref(), &req.ids),
        |body_len| Message::SealInfoOk(SealInfoOk { body_len }),
    )
    .await
}

pub(crate) async fn seal_proof(
    st: &Arc<State>,
    peer: &NodeId,
    req: SealProofRequest,
) -> Result<Response, Reject> {
    proof_response(
        st,
        peer,
        true,
        move |s| {
            crate::sealing::prove_seal(
                s.store.as_ref(),
                &s.units,
                &req.comm_r,
                &req.seed,
                req.openings as usize,
            )
        },
        |proof_len| Message::SealProofOk(SealProofOk { proof_len }),
    )
    .await
}

pub(crate) async fn challenge(
    st: &Arc<State>,
    peer: &NodeId,
    req: ChallengeRequest,
) -> Result<Response, Reject> {
    proof_response(
        st,
        peer,
        true,
        move |s| {
            crate::sealing::prove_post(
                s.store.as_ref(),
                &s.units,
                &req.units,
                &req.seed,
                req.chunks as usize,
            )
        },
        |proof_len| Message::ChallengeOk(ChallengeOk { proof_len }),
    )
    .await
}

pub(crate) async fn delete_shards(st: &Arc<State>, req: DeleteShards) -> Result<Response, Reject> {
    req.verify(st.id, now_ms())?;
    check_nonce(st, &req.owner, &req.freshness)?;
    let state = Arc::clone(st);
    let outcomes = blocking(move || {
        let mut out = Vec::with_capacity(req.ids.len());
        for id in &req.ids {
            let _g = state
                .commit_lock
                .lock()
                .map_err(|_| Reject::internal("commit lock", "poisoned"))?;
            out.push(
                match state.store.remove_reference(id, &req.owner, &req.tag)? {
                    RemoveOutcome::LastReference => {
                        state.blobs.remove(id)?;
                        DeleteOutcome::Deleted
                    }
                    RemoveOutcome::Released | RemoveOutcome::StillTagged => DeleteOutcome::Released,
                    _ => DeleteOutcome::NotOwner,
                },
            );
        }
        Ok(out)
    })
    .await?;
    Ok(Message::DeleteShardsOk(DeleteShardsOk { outcomes }).into())
}

pub(crate) async fn tag_shards(st: &Arc<State>, req: TagShards) -> Result<Response, Reject> {
    req.verify(st.id, now_ms())?;
    check_nonce(st, &req.owner, &req.freshness)?;
    let state = Arc::clone(st);
    let outcomes = blocking(move || {
        let mut out = Vec::with_capacity(req.ids.len());
        for id in &req.ids {
            let _g = state
                .commit_lock
                .lock()
                .map_err(|_| Reject::internal("commit lock", "poisoned"))?;
            out.push(match state.store.shard(id)? {
                None => TagOutcome::NotHeld,
                Some(rec) => {
                    state.store.add_reference(
                        id,
                        rec.size,
                        &req.owner,
                        &req.tag,
                        &state.quota(),
                    )?;
                    TagOutcome::Tagged
                }
            });
        }
        Ok(out)
    })
    .await?;
    Ok(Message::TagShardsOk(TagShardsOk { outcomes }).into())
}

/// Forgets nonces older than twice the skew window (they would be refused as stale anyway).
pub(crate) fn expire_nonces(st: &State) {
    let before = now_ms().saturating_sub(2 * MAX_CLOCK_SKEW_MS);
    match st.store.expire_nonces(before) {
        Ok(n) if n > 0 => tracing::debug!(n, "expired nonces"),
        Ok(_) => {}
        Err(e) => tracing::warn!(%e, "expiring nonces failed"),
    }
}
