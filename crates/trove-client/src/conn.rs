//! Connections and the retry loop: one lazily created HTTP/2 channel per node, the
//! node that answered last, leader hints, and the [`Attempts`] state that every
//! operation drives.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use tonic::transport::{Channel, Endpoint};
use trove_types::TroveError;

use crate::config::{
    ClientConfig, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_ENDPOINTS, normalize_endpoint,
    normalize_endpoints,
};
use crate::retry::{Idempotency, annotate, backoff_delay, should_retry};

/// One node the client may talk to.
pub(crate) struct Node {
    /// `host:port`, as in leader hints.
    pub(crate) addr: String,
    endpoint: Endpoint,
    /// Created on first use: `connect_lazy` must run inside a Tokio runtime, and
    /// `Client::new` need not.
    channel: OnceLock<Channel>,
}

impl Node {
    fn new(addr: String, cfg: &ClientConfig) -> Result<Node, TroveError> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| TroveError::invalid(format!("invalid endpoint {addr:?}: {e}")))?
            .connect_timeout(cfg.connect_timeout)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .initial_stream_window_size(trove_types::limits::HTTP2_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(trove_types::limits::HTTP2_CONNECTION_WINDOW_BYTES)
            .max_frame_size(trove_types::limits::HTTP2_MAX_FRAME_BYTES)
            .tcp_nodelay(true);
        Ok(Node {
            addr,
            endpoint,
            channel: OnceLock::new(),
        })
    }

    /// The node's channel; cheap to clone, multiplexes every request over one connection
    /// that reconnects by itself.
    pub(crate) fn channel(&self) -> Channel {
        self.channel
            .get_or_init(|| self.endpoint.connect_lazy())
            .clone()
    }
}

/// Shared state of a client and its clones.
pub(crate) struct Inner {
    pub(crate) cfg: ClientConfig,
    nodes: RwLock<Vec<Arc<Node>>>,
    /// Index of the node that answered last; tried first.
    preferred: AtomicUsize,
    /// Next request sequence number.
    seq: AtomicU64,
}

impl Inner {
    pub(crate) fn new(mut cfg: ClientConfig) -> Result<Inner, TroveError> {
        trove_types::validate::client_id(&cfg.client_id)?;
        let addrs = normalize_endpoints(&cfg.endpoints)?;
        let nodes = addrs
            .iter()
            .map(|a| Node::new(a.clone(), &cfg).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        cfg.endpoints = addrs;
        Ok(Inner {
            cfg,
            nodes: RwLock::new(nodes),
            preferred: AtomicUsize::new(0),
            seq: AtomicU64::new(1),
        })
    }

    /// A fresh request id for one logical mutating request; every retry reuses it.
    pub(crate) fn next_request_id(&self) -> trove_proto::v1::RequestId {
        trove_proto::v1::RequestId {
            client_id: self.cfg.client_id.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn node_at(&self, idx: usize) -> Arc<Node> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        // The list is never empty and only grows, so `idx % len` is always valid.
        Arc::clone(&nodes[idx % nodes.len()])
    }

    fn len(&self) -> usize {
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Index of the node with address `addr`, adding it (a leader we learned about)
    /// when it is new and there is room.
    fn index_of_or_add(&self, addr: &str) -> Option<usize> {
        let addr = normalize_endpoint(addr).ok()?;
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = nodes.iter().position(|n| n.addr == addr) {
            return Some(i);
        }
        if nodes.len() >= MAX_ENDPOINTS {
            return None;
        }
        let node = Node::new(addr, &self.cfg).ok()?;
        nodes.push(Arc::new(node));
        Some(nodes.len() - 1)
    }

    /// The node for `addr` if the client knows it, else a new node outside the set (for
    /// asking one specific node).
    pub(crate) fn node_for(&self, addr: &str) -> Result<Arc<Node>, TroveError> {
        let addr = normalize_endpoint(addr)?;
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = nodes.iter().find(|n| n.addr == addr) {
            return Ok(Arc::clone(n));
        }
        drop(nodes);
        Ok(Arc::new(Node::new(addr, &self.cfg)?))
    }

    /// Starts the attempts of one logical request.
    pub(crate) fn attempts(&self, idempotency: Idempotency) -> Attempts<'_> {
        Attempts {
            inner: self,
            idempotency,
            started: Instant::now(),
            attempt: 0,
            idx: self.preferred.load(Ordering::Relaxed),
            redirected: false,
        }
    }
}

/// The retry state of one logical request: which node to try next and how long to wait.
pub(crate) struct Attempts<'a> {
    inner: &'a Inner,
    idempotency: Idempotency,
    started: Instant,
    /// Failed attempts so far.
    attempt: u32,
    idx: usize,
    /// Whether the next attempt follows a fresh leader hint (tried without waiting).
    redirected: bool,
}

impl Attempts<'_> {
    /// The node to try now.
    pub(crate) fn node(&self) -> Arc<Node> {
        self.inner.node_at(self.idx)
    }

    /// Records that the current node answered: it is tried first next time.
    pub(crate) fn succeeded(&self) {
        let idx = self.idx % self.inner.len();
        self.inner.preferred.store(idx, Ordering::Relaxed);
    }

    /// Records that the current node answered, with the answer's metadata: the node is
    /// tried first next time, or, if it forwarded the request (the answer names the
    /// leader it went to), the leader is, so later requests skip the extra hop.
    pub(crate) fn answered(&self, metadata: &tonic::metadata::MetadataMap) {
        self.succeeded();
        if let Some(leader) = metadata
            .get(trove_proto::LEADER_ADDR_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            self.prefer(leader);
        }
    }

    /// Makes the node at `addr` (a leader a node forwarded to) the one tried first by
    /// the next requests.
    pub(crate) fn prefer(&self, addr: &str) {
        if let Some(i) = self.inner.index_of_or_add(addr) {
            self.inner.preferred.store(i, Ordering::Relaxed);
        }
    }

    /// Records that the attempt that just failed had moved the request forward (an
    /// upload whose data the server had taken): the retry budget counts again from now.
    /// A leader change an hour into an upload is one failure, not an hour of them.
    pub(crate) fn progressed(&mut self) {
        self.started = Instant::now();
    }

    /// Decides what to do after a failed attempt. `Ok(())`: the caller should try again
    /// (with [`Self::node`]); `Err(e)`: give up with `e`. `replayable` is false when the
    /// request cannot be sent again (an upload whose data is gone).
    pub(crate) async fn failed(
        &mut self,
        err: TroveError,
        replayable: bool,
    ) -> Result<(), TroveError> {
        if !replayable || !should_retry(&err, self.idempotency) {
            return Err(err);
        }
        let tried = self.node().addr.clone();
        // Follow a leader hint that names another node right away, once in a row;
        // otherwise rotate and back off.
        let hinted = match &err {
            TroveError::Unavailable {
                leader: Some(hint), ..
            } => self
                .inner
                .index_of_or_add(&hint.client_addr)
                .filter(|&i| self.inner.node_at(i).addr != tried),
            _ => None,
        };
        let delay = match hinted {
            Some(i) if !self.redirected => {
                self.idx = i;
                self.redirected = true;
                std::time::Duration::ZERO
            }
            other => {
                self.idx = other.unwrap_or(self.idx.wrapping_add(1) % self.inner.len());
                self.redirected = false;
                backoff_delay(self.attempt, rand::random::<f64>())
            }
        };
        self.attempt += 1;
        let elapsed = self.started.elapsed();
        if elapsed + delay >= self.inner.cfg.retry_budget {
            let note = format!(
                "gave up after {} attempts in {:.1}s; last tried {tried}",
                self.attempt,
                elapsed.as_secs_f64()
            );
            return Err(annotate(err, &note));
        }
        tracing::debug!(error = %err, node = %tried, next = %self.node().addr, ?delay, "retrying");
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use trove_types::LeaderHint;

    fn inner(endpoints: &[&str], budget_ms: u64) -> Inner {
        let mut cfg = ClientConfig::new(endpoints.iter().copied());
        cfg.retry_budget = Duration::from_millis(budget_ms);
        Inner::new(cfg).expect("valid config")
    }

    #[tokio::test]
    async fn rotates_follows_hints_and_remembers_success() {
        let inner = inner(&["a:1", "b:2", "c:3"], 60_000);
        let mut at = inner.attempts(Idempotency::Safe);
        assert_eq!(at.node().addr, "a:1");
        at.failed(TroveError::unavailable("down"), true)
            .await
            .expect("retry");
        assert_eq!(at.node().addr, "b:2");
        let hint = |addr: &str| TroveError::Unavailable {
            message: "not leader".into(),
            leader: Some(LeaderHint {
                id: 9,
                client_addr: addr.into(),
            }),
        };
        // A hint naming a new node adds it and goes there.
        at.failed(hint("d:4"), true).await.expect("retry");
        assert_eq!(at.node().addr, "d:4");
        at.succeeded();
        assert_eq!(inner.len(), 4);
        // The next request starts at the node that answered.
        let mut at = inner.attempts(Idempotency::Safe);
        assert_eq!(at.node().addr, "d:4");
        // A hint naming the node just tried rotates instead.
        at.failed(hint("http://d:4"), true).await.expect("retry");
        assert_eq!(at.node().addr, "a:1");
        // Not retryable, not replayable, or not safe: give up at once.
        let nf = TroveError::NotFound("k".into());
        assert_eq!(at.failed(nf.clone(), true).await, Err(nf));
        let un = TroveError::unavailable("x");
        assert_eq!(at.failed(un.clone(), false).await, Err(un));
        let mut at = inner.attempts(Idempotency::Unsafe);
        let dl = TroveError::DeadlineExceeded("slow".into());
        assert_eq!(at.failed(dl.clone(), true).await, Err(dl));
    }

    #[test]
    fn a_forwarding_node_names_the_leader_and_later_requests_go_there() {
        let inner = inner(&["a:1", "b:2"], 60_000);
        let at = inner.attempts(Idempotency::Safe);
        assert_eq!(at.node().addr, "a:1");
        at.succeeded();
        at.prefer("b:2");
        assert_eq!(inner.attempts(Idempotency::Safe).node().addr, "b:2");
        // A leader the client was not given is added.
        inner.attempts(Idempotency::Safe).prefer("http://c:3");
        assert_eq!(inner.attempts(Idempotency::Safe).node().addr, "c:3");
        assert_eq!(inner.len(), 3);
    }

    #[tokio::test]
    async fn stops_when_the_budget_is_spent() {
        let inner = inner(&["a:1"], 200);
        let mut at = inner.attempts(Idempotency::Safe);
        let started = Instant::now();
        let mut n = 0;
        let err = loop {
            match at.failed(TroveError::unavailable("down"), true).await {
                Ok(()) => n += 1,
                Err(e) => break e,
            }
        };
        assert!(n >= 3, "only {n} retries");
        assert!(started.elapsed() < Duration::from_millis(400));
        assert!(err.is_retryable());
        assert!(err.to_string().contains("gave up after"), "{err}");
    }

    #[tokio::test]
    async fn progress_restarts_the_budget() {
        let inner = inner(&["a:1"], 200);
        let mut at = inner.attempts(Idempotency::Safe);
        tokio::time::sleep(Duration::from_millis(250)).await;
        // A long attempt that moved data: retried.
        at.progressed();
        at.failed(TroveError::unavailable("leader changed"), true)
            .await
            .expect("retried after progress");
        // The same wait without progress spends the budget.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let err = at
            .failed(TroveError::unavailable("down"), true)
            .await
            .expect_err("budget spent");
        assert!(
            err.to_string().contains("gave up after 2 attempts"),
            "{err}"
        );
    }

    #[test]
    fn request_ids_are_unique_per_request() {
        let inner = inner(&["a:1"], 0);
        let a = inner.next_request_id();
        let b = inner.next_request_id();
        assert_eq!(a.client_id, b.client_id);
        assert_ne!(a.seq, b.seq);
    }
}
