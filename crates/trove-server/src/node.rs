//! A running node's shared state and the operations every API uses: proposing a
//! command, routing a request to the leader, linearizable reads, forwarding.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::impls::ProgressResponder;
use openraft::{RaftMetrics, ReadPolicy, ServerState};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use trove_raft::{LogStore, Network, Raft, StateMachine, TroveNode, TypeConfig};
use trove_storage::state::StateStore;
use trove_types::{Command, CommandResult, LeaderHint, Op, RequestId, TroveError};

use crate::config::ServerConfig;

/// Metadata key marking a request forwarded by another node (never forwarded again).
pub const FORWARDED_KEY: &str = "x-trove-forwarded";

/// Where a request that needs the leader should go.
pub enum Route {
    /// This node is the leader.
    Local,
    /// Forward to the leader at this client address.
    Forward(String),
}

/// Shared state of a running node.
pub struct Node {
    /// This node's id.
    pub id: u64,
    /// The cluster's id.
    pub cluster_id: String,
    /// The configuration it was started with.
    pub config: ServerConfig,
    /// The Raft handle.
    pub raft: Raft,
    /// The state machine (reads go to its store).
    pub sm: StateMachine,
    /// The log store (for metrics).
    pub log: LogStore,
    /// Outgoing peer connections.
    pub network: Network,
    /// Start-up recovery: the vote gate and what this node knows of its peers.
    pub recovery: Arc<crate::recovery::Recovery>,
    /// Chunk repair and scrubbing: settings and what was found.
    pub chunk_health: Arc<crate::repair::ChunkHealth>,
    /// Serialises membership changes: concurrent changes could leave a joint config.
    pub admin_lock: tokio::sync::Mutex<()>,
    client_channels: Mutex<HashMap<String, Channel>>,
}

/// Waits for a peer RPC (within `timeout`, if given) and decodes its reply: the
/// handler's encoded `Result<T, String>`. Every failure comes back as text.
pub async fn peer_reply<T, F>(timeout: Option<Duration>, call: F) -> Result<T, String>
where
    T: serde::de::DeserializeOwned,
    F: Future<Output = Result<Response<trove_proto::raft::Reply>, Status>>,
{
    let answered = match timeout {
        Some(t) => tokio::time::timeout(t, call)
            .await
            .map_err(|_| "timed out".to_string())?,
        None => call.await,
    };
    let reply = answered.map_err(|e| e.message().to_string())?.into_inner();
    trove_raft::codec::decode::<Result<T, String>>(&reply.payload).map_err(|e| e.to_string())?
}

/// Milliseconds since the Unix epoch (stamped into commands by the leader).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Node {
    /// Wires a node together.
    pub fn new(
        config: ServerConfig,
        cluster_id: String,
        raft: Raft,
        sm: StateMachine,
        log: LogStore,
        network: Network,
        recovery: Arc<crate::recovery::Recovery>,
    ) -> Node {
        let t = &config.tuning;
        let chunk_health = Arc::new(crate::repair::ChunkHealth::new(
            t.scrub_rate_bytes_per_sec,
            Duration::from_secs(t.scrub_interval_secs),
        ));
        Node {
            id: config.node_id,
            cluster_id,
            config,
            raft,
            sm,
            log,
            network,
            recovery,
            chunk_health,
            admin_lock: tokio::sync::Mutex::new(()),
            client_channels: Mutex::new(HashMap::new()),
        }
    }

    /// A peer RPC envelope from this node to `peer` carrying `msg` (the peer checks the
    /// cluster id and that it is the target).
    pub fn peer_envelope<T: serde::Serialize>(
        &self,
        peer: u64,
        msg: &T,
    ) -> Result<trove_proto::raft::Envelope, String> {
        trove_raft::network::seal(&self.cluster_id, self.id, peer, msg)
    }

    /// The state store, for reads.
    pub fn store(&self) -> &StateStore {
        self.sm.store()
    }

    /// A snapshot of the Raft metrics (never holds the watch borrow).
    pub fn metrics(&self) -> RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    /// The leader's id and client address, as far as this node knows.
    pub fn leader_hint(&self) -> Option<LeaderHint> {
        let m = self.metrics();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        if node.client_addr.is_empty() {
            return None;
        }
        Some(LeaderHint {
            id,
            client_addr: node.client_addr,
        })
    }

    fn no_leader(&self) -> TroveError {
        TroveError::Unavailable {
            message: format!(
                "node {} does not know a leader yet (election in progress or no quorum); retry",
                self.id
            ),
            leader: self.leader_hint(),
        }
    }

    /// Decides where a request that must run on the leader goes.
    pub fn route(&self, md: &MetadataMap) -> Result<Route, TroveError> {
        // Two fields, read in place: this runs on every request, and a clone of the whole
        // metrics (membership, per-peer maps) allocates.
        let (leader, state) = {
            let rx = self.raft.metrics();
            let m = rx.borrow_watched();
            (m.current_leader, m.state)
        };
        match leader {
            Some(l) if l == self.id && state == ServerState::Leader => Ok(Route::Local),
            Some(l) if l != self.id => {
                if md.contains_key(FORWARDED_KEY) {
                    // Forwarded to us, but we are not the leader: let the client retry.
                    return Err(TroveError::Unavailable {
                        message: format!("node {} is not the leader", self.id),
                        leader: self.leader_hint(),
                    });
                }
                match self.leader_hint() {
                    Some(h) => Ok(Route::Forward(h.client_addr)),
                    None => Err(self.no_leader()),
                }
            }
            _ => Err(self.no_leader()),
        }
    }

    /// A cached channel to another node's client API.
    pub fn client_channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut map = self
            .client_channels
            .lock()
            .map_err(|_| Status::internal("channel cache poisoned"))?;
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ch = trove_raft::network::peer_endpoint(addr)
            .map_err(Status::internal)?
            .connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    /// Forwards a unary request to the leader's client API, marking it as forwarded. The
    /// leader must answer within `FORWARDED_CALL_TIMEOUT_MS`.
    pub async fn forward<T, R, F, Fut>(
        &self,
        addr: &str,
        msg: T,
        call: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(Channel, Request<T>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        self.forward_within(
            addr,
            msg,
            call,
            Some(Duration::from_millis(
                trove_types::limits::FORWARDED_CALL_TIMEOUT_MS,
            )),
        )
        .await
    }

    /// Forwards an upload or a download: like [`Self::forward`] but with no deadline on
    /// the whole call, which may take hours for a large object. The client's own idle
    /// limits still apply, and a broken stream ends the call.
    pub async fn forward_stream<T, R, F, Fut>(
        &self,
        addr: &str,
        msg: T,
        call: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(Channel, Request<T>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        self.forward_within(addr, msg, call, None).await
    }

    async fn forward_within<T, R, F, Fut>(
        &self,
        addr: &str,
        msg: T,
        call: F,
        deadline: Option<Duration>,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(Channel, Request<T>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let ch = self.client_channel(addr)?;
        let mut req = Request::new(msg);
        req.metadata_mut().insert(
            FORWARDED_KEY,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        if let Some(d) = deadline {
            req.set_timeout(d);
        }
        let mut resp = call(ch, req).await?;
        // Tell the client where the leader is, so its next request skips this hop.
        if let Ok(v) = tonic::metadata::MetadataValue::try_from(addr) {
            resp.metadata_mut()
                .insert(trove_proto::LEADER_ADDR_HEADER, v);
        }
        Ok(resp)
    }

    /// Submits a command to Raft on this node (which must be the leader) and returns a
    /// future of its outcome. Commands submitted one after another from one task enter
    /// the log in that order; the returned futures may be awaited later (pipelining).
    pub async fn submit(
        &self,
        request_id: Option<RequestId>,
        op: Op,
    ) -> Result<
        impl Future<Output = Result<(u64, CommandResult), TroveError>> + Send + 'static,
        TroveError,
    > {
        let cmd = Command {
            request_id,
            time_ms: now_ms(),
            op,
        };
        let (responder, done) = ProgressResponder::complete_only();
        let pending = crate::telemetry::PendingProposal::start();
        self.raft
            .client_write_ff(cmd, Some(responder))
            .await
            .map_err(|e| TroveError::unavailable(format!("node {} has stopped: {e}", self.id)))?;
        let id = self.id;
        Ok(async move {
            let res = done.await;
            pending.finish(matches!(res, Ok(Ok(_))));
            let res = res.map_err(|_| {
                TroveError::unavailable(
                    "the write was dropped before completing; retry with the same request id",
                )
            })?;
            match res {
                Ok(resp) => Ok((resp.log_id.index, resp.data.0)),
                Err(ClientWriteError::ForwardToLeader(f)) => Err(TroveError::Unavailable {
                    message: format!("node {id} is not the leader"),
                    leader: match (f.leader_id, f.leader_node) {
                        (Some(lid), Some(n)) if !n.client_addr.is_empty() => Some(LeaderHint {
                            id: lid,
                            client_addr: n.client_addr,
                        }),
                        _ => None,
                    },
                }),
                Err(e) => Err(TroveError::Unavailable {
                    message: format!("write outcome unknown ({e}); retry with the same request id"),
                    leader: None,
                }),
            }
        })
    }

    /// Proposes a command on this node (which must be the leader) and waits until it
    /// is committed and applied. Returns the log index and the result.
    pub async fn propose(
        &self,
        request_id: Option<RequestId>,
        op: Op,
    ) -> Result<(u64, CommandResult), TroveError> {
        self.submit(request_id, op).await?.await
    }

    /// Proposes a command and turns a state-machine refusal into an error.
    pub async fn propose_ok(
        &self,
        request_id: Option<RequestId>,
        op: Op,
    ) -> Result<trove_types::OpOk, TroveError> {
        let (_, res) = self.propose(request_id, op).await?;
        res.map_err(TroveError::from)
    }

    /// Waits until this node (the leader) may serve a linearizable read: its applied
    /// state includes everything committed before the read started (read index).
    pub async fn linearizable_barrier(&self) -> Result<(), TroveError> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(e)) => Err(TroveError::Unavailable {
                message: format!("cannot confirm leadership for a linearizable read: {e}"),
                leader: self.leader_hint(),
            }),
            Err(RaftError::Fatal(e)) => Err(TroveError::unavailable(format!(
                "node {} has stopped: {e}",
                self.id
            ))),
        }
    }

    /// This node's membership entry as it should be.
    pub fn self_node(&self) -> TroveNode {
        TroveNode {
            peer_addr: self.config.peer_addr(),
            client_addr: self.config.client_addr(),
        }
    }
}

/// Shorthand for `Arc<Node>`.
pub type NodeRef = Arc<Node>;
