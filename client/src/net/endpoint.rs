//! The client's QUIC endpoint.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use granary_protocol::{SecretKey, tls};

use super::error::EndpointError;

/// Transport settings shared by every connection the client makes: windows sized for
/// multi-MiB shard transfers, no unidirectional streams, keep-alive below the node's idle timeout.
pub(crate) fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_uni_streams(0u32.into())
        .stream_receive_window((16u32 << 20).into())
        .receive_window((64u32 << 20).into())
        .send_window(64 << 20)
        .keep_alive_interval(Some(Duration::from_secs(1)));
    // Connections are pooled, so a node that dies is noticed by its silence: 5 s without a
    // packet (keep-alives every second keep a healthy idle connection open). Requests on the
    // dead connection then fail and the node is routed around, instead of waiting out a
    // request timeout.
    if let Ok(idle) = Duration::from_secs(5).try_into() {
        t.max_idle_timeout(Some(idle));
    }
    t
}

/// A client endpoint that authenticates as `identity`, bound to `[::]:0` (dual-stack: reaches
/// IPv4 and IPv6 nodes) or, where IPv6 is unavailable, to `0.0.0.0:0`.
pub fn client_endpoint(identity: &SecretKey) -> Result<quinn::Endpoint, EndpointError> {
    client_endpoint_on(identity, SocketAddr::from(([0u16; 8], 0)))
        .or_else(|_| client_endpoint_on(identity, SocketAddr::from(([0, 0, 0, 0], 0))))
}

/// A client endpoint bound to `bind` (e.g. `[::]:0` for IPv6) that authenticates as `identity`.
pub fn client_endpoint_on(
    identity: &SecretKey,
    bind: SocketAddr,
) -> Result<quinn::Endpoint, EndpointError> {
    let tls_id = tls::TlsIdentity::new(identity)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls::client_config(&tls_id)?)
        .map_err(|e| EndpointError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    let socket = granary_protocol::udp::bind(bind).map_err(EndpointError::Bind)?;
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(EndpointError::Bind)?;
    endpoint.set_default_client_config(cfg);
    Ok(endpoint)
}
