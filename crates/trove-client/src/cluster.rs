//! Cluster status and membership administration.

use std::time::Duration;

use trove_proto::v1 as pb;
use trove_types::TroveError;

use crate::retry::{Idempotency, map_status};
use crate::types::{ClusterStatus, ScrubReport, StateDigest, cluster_status, scrub_report};
use crate::{Client, Result, cluster_client};

/// Shortest per-attempt deadline of `add_node`, which returns only once the new member
/// has caught up with the log.
const ADD_NODE_TIMEOUT: Duration = Duration::from_secs(120);

impl Client {
    /// The cluster's status from any reachable node (the one that answered last first),
    /// which asks the leader for its view when there is one: only a leader knows
    /// whether the other members are reachable. See [`Client::status_of`] to ask one
    /// particular node for its own view.
    pub async fn status(&self) -> Result<ClusterStatus> {
        let resp = self
            .unary(Idempotency::Safe, |ch| {
                let req = self.request(pb::StatusRequest {
                    local: false,
                    include_digest: false,
                });
                async move { cluster_client(ch).status(req).await }
            })
            .await?;
        Ok(cluster_status(resp))
    }

    /// Asks one specific node (`host:port`) for its own view of the cluster: a single
    /// attempt, no retry, no failover and no forwarding to the leader.
    pub async fn status_of(&self, endpoint: &str) -> Result<ClusterStatus> {
        let req = self.request(pb::StatusRequest {
            local: true,
            include_digest: false,
        });
        let resp = self
            .ask_one(endpoint, |ch| async move {
                cluster_client(ch).status(req).await
            })
            .await?;
        Ok(cluster_status(resp))
    }

    /// Asks one specific node (`host:port`) for a digest of its applied state: a single
    /// attempt, answered by that node itself. Replicas that applied the same index have
    /// equal digests, so comparing them shows whether the nodes converged.
    pub async fn state_digest_of(&self, endpoint: &str) -> Result<StateDigest> {
        let req = self.request(pb::StatusRequest {
            local: true,
            include_digest: true,
        });
        let resp = self
            .ask_one(endpoint, |ch| async move {
                cluster_client(ch).status(req).await
            })
            .await?;
        if resp.state_digest.is_empty() {
            return Err(TroveError::Internal(format!(
                "{endpoint} sent no state digest (is it an older version?)"
            )));
        }
        Ok(StateDigest {
            node_id: resp.node_id,
            applied_index: resp.applied_index,
            digest: resp.state_digest,
        })
    }

    /// Asks one specific node (`host:port`) what its scrubber checked, found and
    /// repaired; with `start`, it first starts a scrub pass (unless one is running).
    /// A single attempt, answered by that node itself.
    pub async fn scrub_of(&self, endpoint: &str, start: bool) -> Result<ScrubReport> {
        let req = self.request(pb::ScrubRequest { start });
        let resp = self
            .ask_one(
                endpoint,
                |ch| async move { cluster_client(ch).scrub(req).await },
            )
            .await?;
        Ok(scrub_report(resp))
    }

    /// One attempt of `call` against the node at `endpoint`, within the request timeout.
    async fn ask_one<T, F, Fut>(&self, endpoint: &str, call: F) -> Result<T>
    where
        F: FnOnce(tonic::transport::Channel) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let node = self.inner.node_for(endpoint)?;
        let timeout = self.inner.cfg.request_timeout;
        match tokio::time::timeout(timeout, call(node.channel())).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(st)) => Err(map_status(&st)),
            Err(_) => Err(TroveError::DeadlineExceeded(format!(
                "no answer from {} within {timeout:?}",
                node.addr
            ))),
        }
    }

    /// Adds a member that joins as a learner and, with `promote`, becomes a voter once
    /// caught up. `id: None` lets the cluster assign the next unused id. Returns the id.
    /// Waits until the learner has caught up (each attempt may take up to two minutes,
    /// or the request timeout if longer); not retried after a timeout, whose outcome is
    /// unknown.
    pub async fn add_node(
        &self,
        id: Option<u64>,
        client_addr: &str,
        peer_addr: &str,
        promote: bool,
    ) -> Result<u64> {
        if id == Some(0) {
            return Err(TroveError::invalid(
                "node id 0 is reserved; omit the id to have one assigned",
            ));
        }
        let msg = pb::AddNodeRequest {
            id: id.unwrap_or(0),
            client_addr: client_addr.to_string(),
            peer_addr: peer_addr.to_string(),
            promote,
        };
        // The server answers once the learner has caught up, which takes a while.
        let timeout = self.inner.cfg.request_timeout.max(ADD_NODE_TIMEOUT);
        let resp = self
            .unary_within(timeout, Idempotency::Unsafe, |ch| {
                let req = self.request_within(msg.clone(), timeout);
                async move { cluster_client(ch).add_node(req).await }
            })
            .await?;
        Ok(resp.id)
    }

    /// Removes a member. Its id is never reused.
    pub async fn remove_node(&self, id: u64) -> Result<()> {
        let msg = pb::RemoveNodeRequest { id };
        self.unary(Idempotency::Unsafe, |ch| {
            let req = self.request(msg);
            async move { cluster_client(ch).remove_node(req).await }
        })
        .await?;
        Ok(())
    }

    /// Asks the leader to hand leadership to voter `id`.
    pub async fn transfer_leader(&self, id: u64) -> Result<()> {
        let msg = pb::TransferLeaderRequest { id };
        self.unary(Idempotency::Unsafe, |ch| {
            let req = self.request(msg);
            async move { cluster_client(ch).transfer_leader(req).await }
        })
        .await?;
        Ok(())
    }
}
