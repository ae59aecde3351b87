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
    timeout: Option<Duration>,
}

impl NodePool {
    /// A pool dialing from `endpoint` (see [`super::client_endpoint`]).
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            conns: Arc::default(),
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
            .filter(|c| c.is_alive() && c.remote_address() == addr)
            .cloned()
    }

    /// A client for node `id` at `addr`: the cached connection if it is alive and at that
    /// address, else a new one (pinned to `id`).
    pub async fn get(&self, addr: SocketAddr, id: NodeId) -> Result<NodeClient, ConnectError> {
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
