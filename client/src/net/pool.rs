//! [`NodePool`]: one live connection per node, made on first use and re-made after failure.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use granary_protocol::NodeId;
use quinn::Endpoint;

use super::{client::NodeClient, error::ConnectError};

/// Connections to many nodes, keyed by node id. Cheap to clone (shared map). Dials to different
/// nodes run in parallel; a connection that has closed is replaced on the next [`NodePool::get`].
#[derive(Debug, Clone)]
pub struct NodePool {
    endpoint: Endpoint,
    conns: Arc<Mutex<HashMap<NodeId, NodeClient>>>,
    /// One dial at a time per node: concurrent first uses share one connection (one handshake)
    /// instead of each making its own.
    dialing: Arc<Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<()>>>>>,
    timeout: Option<Duration>,
}

/// Whether two socket addresses are the same peer, an IPv4 address and its IPv4-mapped IPv6
/// form (what a dual-stack socket reports) being the same.
fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

impl NodePool {
    /// A pool dialing from `endpoint` (see [`super::client_endpoint`]).
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            conns: Arc::default(),
            dialing: Arc::default(),
            timeout: None,
        }
    }

    /// Sets the per-call timeout of the clients the pool hands out.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The endpoint the pool dials from.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn cached(&self, addr: SocketAddr, id: &NodeId) -> Option<NodeClient> {
        let g = self.conns.lock().ok()?;
        g.get(id)
            .filter(|c| c.is_alive() && same_addr(c.remote_address(), addr))
            .cloned()
    }

    /// A client for node `id` at `addr`: the cached connection if it is alive and at that
    /// address, else a new one (pinned to `id`).
    pub async fn get(&self, addr: SocketAddr, id: NodeId) -> Result<NodeClient, ConnectError> {
        if let Some(c) = self.cached(addr, &id) {
            return Ok(c);
        }
        let lock = match self.dialing.lock() {
            Ok(mut g) => Arc::clone(g.entry(id).or_default()),
            Err(_) => Arc::default(),
        };
        let _dialing = lock.lock().await;
        // Someone else may have connected while this call waited for the lock.
        if let Some(c) = self.cached(addr, &id) {
            return Ok(c);
        }
        let mut c = NodeClient::connect(&self.endpoint, addr, id).await?;
        if let Some(t) = self.timeout {
            c = c.with_timeout(t);
        }
        if let Ok(mut g) = self.conns.lock() {
            g.insert(id, c.clone());
        }
        Ok(c)
    }

    /// Forgets (and closes) the connection to `id`, e.g. after it misbehaved.
    pub fn evict(&self, id: &NodeId) {
        if let Some(c) = self.conns.lock().ok().and_then(|mut g| g.remove(id)) {
            c.close();
        }
    }

    /// Closes every connection.
    pub fn close_all(&self) {
        if let Ok(mut g) = self.conns.lock() {
            for (_, c) in g.drain() {
                c.close();
            }
        }
    }

    /// Number of cached connections (alive or not yet noticed dead).
    pub fn len(&self) -> usize {
        self.conns.lock().map_or(0, |g| g.len())
    }

    /// Whether no connection is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_address_and_its_mapped_form_are_the_same_peer() {
        let v4: SocketAddr = "127.0.0.1:7400".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:7400".parse().unwrap();
        assert!(same_addr(v4, mapped));
        assert!(same_addr(mapped, v4));
        assert!(!same_addr(v4, "127.0.0.1:7401".parse().unwrap()));
        assert!(!same_addr(v4, "[::1]:7400".parse().unwrap()));
    }
}
