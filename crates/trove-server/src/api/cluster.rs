//! `trove.v1.Cluster`: status and membership administration.
//!
//! Membership changes run one at a time (the node's admin lock): concurrent changes can
//! leave a joint configuration behind. New members join as learners and are promoted
//! once caught up. Node ids are never reused: the state machine remembers the highest
//! id that was ever a member. Backups are built by the leader (followers forward the
//! stream), after a read barrier, see `crate::backup`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Instant};
use tonic::{Request, Response, Status};
use trove_proto::v1::cluster_client::ClusterClient;
use trove_proto::v1::cluster_server::Cluster;
use trove_proto::v1::{
    AddNodeRequest, AddNodeResponse, BackupMessage, BackupRequest, MemberStatus, RemoveNodeRequest,
    RemoveNodeResponse, ScrubRequest, ScrubResponse, StatusRequest, StatusResponse,
    TransferLeaderRequest, TransferLeaderResponse,
};
use trove_raft::TroveNode;
use trove_types::TroveError;

use super::status;
use crate::node::{Node, NodeRef, Route};

/// A backup stream, built here or forwarded from the leader.
type BackupStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<BackupMessage, Status>> + Send>>;

/// The cluster service.
pub struct ClusterService {
    node: NodeRef,
}

impl ClusterService {
    /// A service backed by `node`.
    pub fn new(node: NodeRef) -> Self {
        ClusterService { node }
    }
}

fn membership_err(
    e: RaftError<trove_raft::TypeConfig, ClientWriteError<trove_raft::TypeConfig>>,
) -> TroveError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            TroveError::unavailable("leadership changed during a membership change; retry")
        }
        RaftError::APIError(e) => TroveError::FailedPrecondition {
            message: format!("membership change refused: {e}"),
            current_revision: None,
        },
        RaftError::Fatal(e) => TroveError::unavailable(format!("node stopped: {e}")),
    }
}

/// This node's view of the cluster.
pub fn local_status(node: &Node) -> StatusResponse {
    let m = node.metrics();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let is_leader = m.current_leader == Some(node.id);
    let matched: BTreeMap<u64, Option<u64>> = m
        .replication
        .as_ref()
        .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
        .unwrap_or_default();
    let heartbeat_ok: BTreeMap<u64, bool> = m
        .heartbeat
        .as_ref()
        .map(|h| {
            h.iter()
                .map(|(id, t)| (*id, t.is_some_and(|t| t.elapsed() < Duration::from_secs(3))))
                .collect()
        })
        .unwrap_or_default();
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let members = membership
        .nodes()
        .map(|(id, n)| {
            let role = if m.current_leader == Some(*id) {
                "leader"
            } else if voters.contains(id) {
                "follower"
            } else {
                "learner"
            };
            let me = *id == node.id;
            MemberStatus {
                id: *id,
                client_addr: n.client_addr.clone(),
                peer_addr: n.peer_addr.clone(),
                role: role.into(),
                reachable: me || (is_leader && heartbeat_ok.get(id).copied().unwrap_or(false)),
                applied_index: if me {
                    applied
                } else {
                    matched.get(id).copied().flatten().unwrap_or(0)
                },
                matched_index: if is_leader {
                    matched.get(id).copied().flatten()
                } else {
                    None
                },
            }
        })
        .collect();
    let max_node_id = node
        .sm
        .raft_meta()
        .map(|r| r.max_node_id)
        .unwrap_or(0)
        .max(membership.nodes().map(|(id, _)| *id).max().unwrap_or(0));
    StatusResponse {
        cluster_id: node.cluster_id.clone(),
        leader: m.current_leader,
        term: m.current_term,
        node_id: node.id,
        commit_index: m.local_committed.map(|l| l.index).unwrap_or(0),
        applied_index: applied,
        members,
        max_node_id,
        state_digest: String::new(),
        recovering: !node.recovery.gate.is_open(),
        recovery: node.recovery.gate.waiting_for(),
        snapshot_index: m.snapshot.as_ref().map(|l| l.index).unwrap_or(0),
        purged_index: m.purged.as_ref().map(|l| l.index).unwrap_or(0),
    }
}

/// Adds the state digest to `st` (this node's view), with `applied_index` set to the
/// index the digest covers: the state is hashed between two reads of the applied index,
/// and retried if an entry was applied meanwhile.
fn add_state_digest(node: &Node, st: &mut StatusResponse) -> Result<(), TroveError> {
    let applied = || -> Result<u64, TroveError> {
        let meta = node
            .sm
            .raft_meta()
            .map_err(|e| TroveError::internal(e.to_string()))?;
        Ok(meta.last_applied.map(|l| l.index).unwrap_or(0))
    };
    for _ in 0..5 {
        let before = applied()?;
        let digest = node
            .store()
            .digest()
            .map_err(|e| TroveError::internal(e.to_string()))?;
        if applied()? == before {
            st.applied_index = before;
            st.state_digest = digest;
            return Ok(());
        }
    }
    Err(TroveError::unavailable(
        "entries kept being applied while the state was hashed; retry",
    ))
}

/// Records a member's current addresses in the membership (leader only).
pub async fn set_node_addrs(node: &Node, id: u64, addrs: TroveNode) -> Result<(), TroveError> {
    let _g = node.admin_lock.lock().await;
    let m = node.metrics();
    match m.membership_config.membership().get_node(&id) {
        Some(cur) if *cur == addrs => return Ok(()),
        Some(_) => {}
        None => return Err(TroveError::NotFound(format!("node {id} is not a member"))),
    }
    let mut map = BTreeMap::new();
    map.insert(id, addrs);
    node.raft
        .change_membership(ChangeMembers::SetNodes(map), false)
        .await
        .map_err(membership_err)?;
    Ok(())
}

async fn add_node(node: &Node, r: AddNodeRequest) -> Result<AddNodeResponse, TroveError> {
    if r.client_addr.is_empty() || r.peer_addr.is_empty() {
        return Err(TroveError::invalid(
            "add-node needs both --client-addr and --peer-addr",
        ));
    }
    let addrs = TroveNode {
        peer_addr: r.peer_addr,
        client_addr: r.client_addr,
    };
    let _g = node.admin_lock.lock().await;
    let m = node.metrics();
    let membership = m.membership_config.membership();
    let max_id = node
        .sm
        .raft_meta()
        .map(|rm| rm.max_node_id)
        .map_err(|e| TroveError::internal(e.to_string()))?
        .max(membership.nodes().map(|(id, _)| *id).max().unwrap_or(0));
    let id = if r.id == 0 { max_id + 1 } else { r.id };
    let is_voter = membership.voter_ids().any(|v| v == id);
    match membership.get_node(&id) {
        Some(cur) if *cur != addrs => {
            return Err(TroveError::AlreadyExists(format!(
                "node {id} is already a member with other addresses ({cur})"
            )));
        }
        Some(_) => {} // same node retrying: continue (idempotent)
        None if id <= max_id => {
            return Err(TroveError::FailedPrecondition {
                message: format!(
                    "node id {id} was used before and ids are never reused; use --id {} or omit --id",
                    max_id + 1
                ),
                current_revision: None,
            });
        }
        None => {}
    }
    if !is_voter {
        // Blocks until the learner has caught up, so promoting it cannot stall commits.
        node.raft
            .add_learner(id, addrs, true)
            .await
            .map_err(membership_err)?;
        if r.promote {
            let mut ids = BTreeSet::new();
            ids.insert(id);
            node.raft
                .change_membership(ChangeMembers::AddVoterIds(ids), false)
                .await
                .map_err(membership_err)?;
        }
    }
    Ok(AddNodeResponse {
        id,
        cluster_id: node.cluster_id.clone(),
    })
}

async fn remove_node(node: &Node, id: u64) -> Result<(), TroveError> {
    let _g = node.admin_lock.lock().await;
    let m = node.metrics();
    let membership = m.membership_config.membership();
    if membership.get_node(&id).is_none() {
        return Err(TroveError::NotFound(format!("node {id} is not a member")));
    }
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let mut ids = BTreeSet::new();
    ids.insert(id);
    if voters.contains(&id) {
        if voters.len() == 1 {
            return Err(TroveError::FailedPrecondition {
                message: "cannot remove the last voter".into(),
                current_revision: None,
            });
        }
        node.raft
            .change_membership(ChangeMembers::RemoveVoters(ids), false)
            .await
            .map_err(membership_err)?;
    } else {
        node.raft
            .change_membership(ChangeMembers::RemoveNodes(ids), false)
            .await
            .map_err(membership_err)?;
    }
    Ok(())
}

fn client(ch: tonic::transport::Channel) -> ClusterClient<tonic::transport::Channel> {
    ClusterClient::new(ch)
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        if req.get_ref().include_digest {
            // Always this node's own state: never forwarded.
            let node = self.node.clone();
            let st = tokio::task::spawn_blocking(move || {
                let mut st = local_status(&node);
                add_state_digest(&node, &mut st).map(|()| st)
            })
            .await
            .map_err(|e| status(TroveError::internal(e.to_string())))?
            .map_err(status)?;
            return Ok(Response::new(st));
        }
        if !req.get_ref().local
            && let Ok(Route::Forward(addr)) = self.node.route(req.metadata())
        {
            // The leader has the cluster-wide view; fall back to ours if it is unreachable.
            if let Ok(r) = self
                .node
                .forward(&addr, req.into_inner(), |ch, r| async move {
                    client(ch).status(r).await
                })
                .await
            {
                return Ok(r);
            }
        }
        Ok(Response::new(local_status(&self.node)))
    }

    async fn add_node(
        &self,
        req: Request<AddNodeRequest>,
    ) -> Result<Response<AddNodeResponse>, Status> {
        match self.node.route(req.metadata()).map_err(status)? {
            Route::Forward(addr) => {
                self.node
                    .forward(&addr, req.into_inner(), |ch, r| async move {
                        client(ch).add_node(r).await
                    })
                    .await
            }
            Route::Local => Ok(Response::new(
                add_node(&self.node, req.into_inner())
                    .await
                    .map_err(status)?,
            )),
        }
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        match self.node.route(req.metadata()).map_err(status)? {
            Route::Forward(addr) => {
                self.node
                    .forward(&addr, req.into_inner(), |ch, r| async move {
                        client(ch).remove_node(r).await
                    })
                    .await
            }
            Route::Local => {
                remove_node(&self.node, req.into_inner().id)
                    .await
                    .map_err(status)?;
                Ok(Response::new(RemoveNodeResponse {}))
            }
        }
    }

    async fn transfer_leader(
        &self,
        req: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        match self.node.route(req.metadata()).map_err(status)? {
            Route::Forward(addr) => {
                self.node
                    .forward(&addr, req.into_inner(), |ch, r| async move {
                        client(ch).transfer_leader(r).await
                    })
                    .await
            }
            Route::Local => {
                let id = req.into_inner().id;
                let m = self.node.metrics();
                if !m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .any(|v| v == id)
                {
                    return Err(status(TroveError::invalid(format!(
                        "node {id} is not a voter"
                    ))));
                }
                if id == self.node.id {
                    return Ok(Response::new(TransferLeaderResponse {}));
                }
                self.node
                    .raft
                    .trigger()
                    .transfer_leader(id)
                    .await
                    .map_err(|e| status(TroveError::unavailable(e.to_string())))?;
                // The trigger only starts the hand-over; report success only once it happened.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                loop {
                    if self.node.metrics().current_leader == Some(id) {
                        return Ok(Response::new(TransferLeaderResponse {}));
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(status(TroveError::Unavailable {
                            message: format!(
                                "leadership did not move to node {id} within 10s (is it reachable and caught up?)"
                            ),
                            leader: self.node.leader_hint(),
                        }));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    type BackupStream = BackupStream;

    async fn backup(&self, req: Request<BackupRequest>) -> Result<Response<BackupStream>, Status> {
        match self.node.route(req.metadata()).map_err(status)? {
            Route::Forward(addr) => {
                let resp = self
                    .node
                    .forward(&addr, req.into_inner(), |ch, r| async move {
                        client(ch).backup(r).await
                    })
                    .await?;
                let s: BackupStream = Box::pin(resp.into_inner());
                Ok(Response::new(s))
            }
            Route::Local => {
                // Everything acknowledged before this request is applied here first.
                self.node.linearizable_barrier().await.map_err(status)?;
                let s: BackupStream = Box::pin(crate::backup::start(self.node.clone()));
                Ok(Response::new(s))
            }
        }
    }

    async fn scrub(&self, req: Request<ScrubRequest>) -> Result<Response<ScrubResponse>, Status> {
        let health = &self.node.chunk_health;
        if req.get_ref().start && !health.stats().running {
            health.request_pass();
        }
        Ok(Response::new(health.response(self.node.id)))
    }
}
