//! The admin HTTP port (`--listen-admin`): `/metrics` (Prometheus text), `/livez`,
//! `/readyz`, `/api/status` (JSON) and a read-only status page at `/` that polls it.
//!
//! Everything here only reads. The member table comes from the leader's view (its
//! heartbeats and replication progress); on a follower it is fetched from the leader
//! over the client port, and this node's own view is shown if the leader does not answer.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;
use trove_proto::v1::StatusRequest;
use trove_proto::v1::cluster_client::ClusterClient;
use trove_types::limits::{ADMIN_LEADER_STATUS_TIMEOUT_MS, READY_MAX_APPLY_LAG_ENTRIES};

use crate::ServerError;
use crate::node::{Node, NodeRef};
use crate::telemetry::{self, LoggedError, Observed, ObservedRef};

/// The status page: static HTML and script that polls `/api/status`.
const STATUS_PAGE: &str = include_str!("admin/status.html");

#[derive(Clone)]
struct AdminState {
    node: NodeRef,
    observed: ObservedRef,
    started: std::time::Instant,
}

/// Serves the admin port on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    node: NodeRef,
    observed: ObservedRef,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let state = AdminState {
        node,
        observed,
        started: std::time::Instant::now(),
    };
    let app = Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/api/status", get(api_status))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .map_err(|e| ServerError::Listen {
            addr: format!("admin port {addr}"),
            reason: e.to_string(),
        })
}

async fn page() -> Html<&'static str> {
    Html(STATUS_PAGE)
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::prometheus().render(),
    )
        .into_response()
}

/// Alive while Raft runs (a node whose Raft stopped exits anyway; this catches a hang).
async fn livez(State(s): State<AdminState>) -> Response {
    match &s.node.metrics().running_state {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("raft stopped: {e}\n"),
        )
            .into_response(),
    }
}

async fn readyz(State(s): State<AdminState>) -> Response {
    match readiness(&s.node) {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// Ready = Raft running, start-up recovery done, a member of the cluster, a leader
/// known, and applied within `READY_MAX_APPLY_LAG_ENTRIES` of the commit index.
pub fn readiness(node: &Node) -> Result<(), String> {
    let m = node.metrics();
    if let Err(e) = &m.running_state {
        return Err(format!("raft stopped: {e}"));
    }
    if !node.recovery.gate.is_open() {
        return Err(format!("recovering ({})", node.recovery.gate.waiting_for()));
    }
    if m.membership_config
        .membership()
        .get_node(&node.id)
        .is_none()
    {
        return Err("not a member of the cluster yet".into());
    }
    if m.current_leader.is_none() {
        return Err("no leader known".into());
    }
    let committed = m.local_committed.map(|l| l.index).unwrap_or(0);
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let lag = committed.saturating_sub(applied);
    if lag > READY_MAX_APPLY_LAG_ENTRIES {
        return Err(format!(
            "applying: {lag} committed entries not applied yet (at most {READY_MAX_APPLY_LAG_ENTRIES})"
        ));
    }
    Ok(())
}

/// `/api/status`: this node and the cluster as the leader sees it.
#[derive(Serialize)]
struct StatusJson {
    node_id: u64,
    cluster_id: String,
    version: &'static str,
    uptime_seconds: u64,
    ready: bool,
    not_ready_reason: Option<String>,
    leader: Option<u64>,
    term: u64,
    commit_index: u64,
    applied_index: u64,
    apply_lag: u64,
    /// Whose view the member table is: the leader's, or this node's if it could not be had.
    members_from: u64,
    members: Vec<MemberJson>,
    #[serde(flatten)]
    observed: Observed,
    recent_errors: Vec<LoggedError>,
}

#[derive(Serialize)]
struct MemberJson {
    id: u64,
    client_addr: String,
    peer_addr: String,
    role: String,
    reachable: bool,
    applied_index: u64,
    /// Leader's view: the follower's last log index known replicated.
    matched_index: Option<u64>,
    /// Entries the member is behind the leader's commit index (leader's view only).
    replication_lag: Option<u64>,
}

async fn api_status(State(s): State<AdminState>) -> Response {
    let node = &s.node;
    let local = crate::api::cluster::local_status(node);
    let view = match local.leader {
        Some(l) if l != node.id => leader_view(node).await.unwrap_or_else(|| local.clone()),
        _ => local.clone(),
    };
    let members = view
        .members
        .iter()
        .map(|m| MemberJson {
            id: m.id,
            client_addr: m.client_addr.clone(),
            peer_addr: m.peer_addr.clone(),
            role: m.role.clone(),
            reachable: m.reachable,
            applied_index: m.applied_index,
            matched_index: m.matched_index,
            replication_lag: m.matched_index.map(|x| view.commit_index.saturating_sub(x)),
        })
        .collect();
    let ready = readiness(node);
    let observed = s.observed.lock().map(|o| o.clone()).unwrap_or_default();
    let body = StatusJson {
        node_id: node.id,
        cluster_id: local.cluster_id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: s.started.elapsed().as_secs(),
        ready: ready.is_ok(),
        not_ready_reason: ready.err(),
        leader: local.leader,
        term: local.term,
        commit_index: local.commit_index,
        applied_index: local.applied_index,
        apply_lag: local.commit_index.saturating_sub(local.applied_index),
        members_from: view.node_id,
        members,
        observed,
        recent_errors: telemetry::recent_errors(),
    };
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// The leader's own status, through its client port.
async fn leader_view(node: &Node) -> Option<trove_proto::v1::StatusResponse> {
    let hint = node.leader_hint()?;
    let ch = node.client_channel(&hint.client_addr).ok()?;
    let mut client = ClusterClient::new(ch);
    let call = client.status(StatusRequest {
        local: true,
        include_digest: false,
    });
    match tokio::time::timeout(Duration::from_millis(ADMIN_LEADER_STATUS_TIMEOUT_MS), call).await {
        Ok(Ok(r)) => Some(r.into_inner()),
        _ => None,
    }
}
