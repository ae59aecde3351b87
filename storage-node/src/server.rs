//! The QUIC listener.
//!
//! Task hierarchy: one accept loop (this module's [`serve`]) owns a `JoinSet` of connection
//! tasks; each connection task (its own tracing span: peer id and address) owns a `JoinSet` of
//! stream tasks, one per request. Shutdown is a `watch` flag: the accept loop stops accepting,
//! connection tasks stop accepting streams and let running requests finish within the grace
//! period; requests still running after it are aborted (their staged files are removed on drop).

use std::{sync::Arc, time::Duration};

use granary_protocol::{ErrorCode, Message, NodeId, tls};
use quinn::{Connection, Endpoint, Incoming, RecvStream, SendStream};
use rustls::pki_types::CertificateDer;
use tokio::{sync::watch, task::JoinSet, time::timeout};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{handler, state::State, wire};

/// Builds the quinn server configuration from the node identity and limits.
pub(crate) fn server_config(
    st: &State,
    identity: &tls::TlsIdentity,
) -> Result<quinn::ServerConfig, crate::node::StartError> {
    let tls = tls::server_config(identity)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| crate::node::StartError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let l = &st.config.limits;
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(l.max_streams_per_connection.into())
        .max_concurrent_uni_streams(0u32.into())
        .max_idle_timeout(Some(
            Duration::from_millis(l.idle_timeout_ms)
                .try_into()
                .map_err(|_| crate::node::StartError::Quic("idle timeout too large".into()))?,
        ))
        .stream_receive_window((16u32 << 20).into())
        .receive_window((64u32 << 20).into())
        .send_window(64 << 20);
    cfg.transport_config(Arc::new(t));
    cfg.migration(false);
    Ok(cfg)
}

/// Accepts connections until `shutdown` turns true, then drains. Returns whether every
/// request finished within the grace period (none was cut short).
pub(crate) async fn serve(
    endpoint: Endpoint,
    st: Arc<State>,
    shutdown: watch::Receiver<bool>,
) -> bool {
    let mut conns = JoinSet::new();
    let mut stop = shutdown.clone();
    let max = st.config.limits.max_connections as usize;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            inc = endpoint.accept() => {
                let Some(inc) = inc else { break };
                if conns.len() >= max {
                    warn!(remote = %inc.remote_address(), "connection limit reached; refusing");
                    inc.refuse();
                    continue;
                }
                conns.spawn(connection(inc, Arc::clone(&st), shutdown.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    info!(
        connections = conns.len(),
        "shutting down: no new connections"
    );
    // Refuse new connections at once (a client then tries another node) rather than leaving
    // their handshakes to time out.
    let grace = Duration::from_millis(st.config.limits.shutdown_grace_ms);
    let drained = timeout(grace, async {
        loop {
            tokio::select! {
                joined = conns.join_next() => if joined.is_none() { break },
                Some(inc) = endpoint.accept() => inc.refuse(),
            }
        }
    })
    .await
    .is_ok();
    if !drained {
        warn!("grace period over; aborting remaining requests");
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    endpoint.close(0u32.into(), b"shutdown");
    let _ = timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    info!("stopped");
    drained
}

fn peer_of(conn: &Connection) -> Option<NodeId> {
    let any = conn.peer_identity()?;
    let certs = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    tls::peer_id(&certs).ok()
}

async fn connection(inc: Incoming, st: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let remote = inc.remote_address();
    let conn = match timeout(st.read_timeout(), inc).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return debug!(%remote, %e, "handshake failed"),
        Err(_) => return debug!(%remote, "handshake timed out"),
    };
    let Some(peer) = peer_of(&conn) else {
        return conn.close(1u32.into(), b"no identity");
    };
    let span = info_span!("conn", peer = %peer.fmt_short(), %remote);
    async move {
        debug!("connected");
        let mut streams = JoinSet::new();
        // Once stopping, requests already running finish (the node-level grace timeout bounds
        // this) and new ones get `ShuttingDown` at once, so the client goes elsewhere.
        let mut stopping = false;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    if streams.is_empty() {
                        break;
                    }
                }
                s = conn.accept_bi() => match s {
                    Ok((send, recv)) if stopping => {
                        streams.spawn(refuse(send, recv, st.read_timeout()).in_current_span());
                    }
                    Ok((send, recv)) => {
                        let st = Arc::clone(&st);
                        streams.spawn(stream(st, peer, send, recv).in_current_span());
                    }
                    Err(e) => {
                        debug!(%e, "connection ended");
                        break;
                    }
                },
                Some(_) = streams.join_next(), if !streams.is_empty() => {
                    if stopping && streams.is_empty() {
                        break;
                    }
                }
            }
        }
        while streams.join_next().await.is_some() {}
        conn.close(0u32.into(), b"bye");
    }
    .instrument(span)
    .await;
}

/// Answers a request that arrived while the node is stopping with `ShuttingDown`, unread.
async fn refuse(mut send: SendStream, mut recv: RecvStream, limit: Duration) {
    let code = ErrorCode::ShuttingDown;
    wire::write_error(&mut send, code, "the node is shutting down".into(), limit).await;
    let _ = recv.stop((code as u32).into());
    let _ = send.finish();
}

async fn stream(st: Arc<State>, peer: NodeId, mut send: SendStream, mut recv: RecvStream) {
    let limit = st.read_timeout();
    let req = match wire::read_frame(&mut recv, limit).await {
        Ok(m) => m,
        Err(e) => {
            debug!(%e, "bad request");
            wire::write_error(&mut send, e.code(), e.to_string(), limit).await;
            let _ = recv.stop((e.code() as u32).into());
            let _ = send.finish();
            return;
        }
    };
    let kind = req.msg_type();
    if matches!(req, Message::StoreShard(_) | Message::FetchRange(_)) {
        st.last_transfer_ms.store(
            granary_protocol::auth::now_ms(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    let res = match req {
        Message::NodeInfo(_) => handler::node_info(&st).await,
        Message::HasShards(r) => handler::has_shards(&st, r).await,
        Message::StoreShard(r) => handler::store_shard(&st, r, &mut recv).await,
        Message::FetchRange(r) => handler::fetch_range(&st, r).await,
        Message::DeleteShards(r) => handler::delete_shards(&st, r).await,
        Message::TagShards(r) => handler::tag_shards(&st, r).await,
        Message::SealInfo(r) => handler::seal_info(&st, &peer, r).await,
        Message::SealProof(r) => handler::seal_proof(&st, &peer, r).await,
        Message::Challenge(r) => handler::challenge(&st, &peer, r).await,
        other => Err(crate::state::Reject::new(
            ErrorCode::UnexpectedMessage,
            format!("{:?} is not a request", other.msg_type()),
        )),
    };
    match res {
        Ok(resp) => {
            debug!(?kind, "ok");
            if let Err(e) = wire::write_message(&mut send, &resp.msg, resp.body, limit).await {
                debug!(%e, "writing response failed");
            }
        }
        Err(rej) => {
            debug!(?kind, code = %rej.code, detail = %rej.detail, "refused");
            wire::write_error(&mut send, rej.code, rej.detail, limit).await;
        }
    }
    let _ = recv.stop(0u32.into());
    let _ = send.finish();
    // Keep the stream open until the peer has the response (or the timeout passes).
    let _ = timeout(limit, send.stopped()).await;
}
