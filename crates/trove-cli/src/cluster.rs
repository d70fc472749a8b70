//! `trove cluster ...`: status (the leader's view, or each member asked directly when no
//! leader answers) and membership changes.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use trove_client::{Client, ClusterStatus};

use crate::Ctx;
use crate::args::{ClusterCmd, OutputFormat};
use crate::output::{print_json, print_line, table};

/// Longest wait for one member when probing members directly.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run(ctx: &Ctx, cmd: ClusterCmd) -> Result<()> {
    match cmd {
        ClusterCmd::Status => {
            let st = gather_status(&ctx.client).await?;
            match ctx.format {
                OutputFormat::Json => print_json(&status_json(&st)),
                OutputFormat::Text => print_line(&status_text(&st)),
            }
        }
        ClusterCmd::AddNode {
            client_addr,
            peer_addr,
            id,
            no_promote,
        } => {
            let id = ctx
                .client
                .add_node(id, &client_addr, &peer_addr, !no_promote)
                .await?;
            match ctx.format {
                OutputFormat::Json => print_json(&json!({ "id": id })),
                OutputFormat::Text => print_line(&format!(
                    "OK added node {id} as a {}",
                    if no_promote { "learner" } else { "voter" }
                )),
            }
        }
        ClusterCmd::RemoveNode { id } => {
            ctx.client.remove_node(id).await?;
            done(ctx.format, id, &format!("OK removed node {id}"))
        }
        ClusterCmd::UpgradeCheck { id, max_lag } => {
            let st = gather_status(&ctx.client).await?;
            crate::upgrade::report(ctx.format, &crate::upgrade::check(&st, id, max_lag))
        }
        ClusterCmd::Scrub { start, wait, node } => crate::scrub::run(ctx, start, wait, node).await,
        ClusterCmd::TransferLeader { id } => {
            ctx.client.transfer_leader(id).await?;
            done(
                ctx.format,
                id,
                &format!("OK node {id} is taking over leadership"),
            )
        }
    }
}

fn done(format: OutputFormat, id: u64, text: &str) -> Result<()> {
    match format {
        OutputFormat::Json => print_json(&json!({ "id": id, "ok": true })),
        OutputFormat::Text => print_line(text),
    }
}

/// The leader's view when a leader answers. Otherwise the answering node only vouches
/// for itself, so each member is asked directly: `reachable` then means "answered this
/// command", and `applied_index` is the member's own.
pub async fn gather_status(client: &Client) -> Result<ClusterStatus> {
    let mut st = client.status().await?;
    if st.leader.is_some() && st.leader == Some(st.node_id) {
        return Ok(st);
    }
    let probes = st.members.iter().map(|m| {
        let addr = m.client_addr.clone();
        async move {
            tokio::time::timeout(PROBE_TIMEOUT, client.status_of(&addr))
                .await
                .ok()
                .and_then(Result::ok)
        }
    });
    let answers = futures::future::join_all(probes).await;
    for (m, answer) in st.members.iter_mut().zip(answers) {
        m.reachable = answer.is_some();
        if let Some(a) = answer {
            m.applied_index = a.applied_index;
        }
    }
    Ok(st)
}

/// The JSON shape of `cluster status` (interface.md), plus a few extra fields.
pub fn status_json(st: &ClusterStatus) -> Value {
    json!({
        "cluster_id": st.cluster_id,
        "leader": st.leader,
        "term": st.term,
        "node_id": st.node_id,
        "commit_index": st.commit_index,
        "applied_index": st.applied_index,
        "recovering": st.recovering,
        "recovery": st.recovery,
        "snapshot_index": st.snapshot_index,
        "purged_index": st.purged_index,
        "members": st.members.iter().map(|m| json!({
            "id": m.id,
            "client_addr": m.client_addr,
            "peer_addr": m.peer_addr,
            "role": m.role.as_str(),
            "reachable": m.reachable,
            "applied_index": m.applied_index,
            "matched_index": m.matched_index,
        })).collect::<Vec<_>>(),
    })
}

fn status_text(st: &ClusterStatus) -> String {
    let leader = match st.leader {
        Some(id) => format!("leader {id}"),
        None => "NO LEADER (election in progress or no quorum)".to_string(),
    };
    let head = format!(
        "cluster {}  {leader}  term {}  commit {}  applied {}  snapshot {}  (answered by node {})",
        st.cluster_id, st.term, st.commit_index, st.applied_index, st.snapshot_index, st.node_id
    );
    let rows: Vec<Vec<String>> = st
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.role.to_string(),
                m.client_addr.clone(),
                m.peer_addr.clone(),
                if m.reachable {
                    "reachable"
                } else {
                    "UNREACHABLE"
                }
                .to_string(),
                m.applied_index.to_string(),
                m.matched_index
                    .map_or_else(|| "-".to_string(), |i| i.to_string()),
            ]
        })
        .collect();
    let t = table(
        &[
            "ID", "ROLE", "CLIENT", "PEER", "HEALTH", "APPLIED", "MATCHED",
        ],
        &rows,
    );
    if st.recovering {
        format!(
            "{head}\nnode {} is RECOVERING and does not vote yet: {}\n{t}",
            st.node_id, st.recovery
        )
    } else {
        format!("{head}\n{t}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trove_client::{MemberStatus, Role};

    #[test]
    fn status_json_has_the_contract_shape() {
        let st = ClusterStatus {
            cluster_id: "abc".into(),
            leader: None,
            term: 3,
            node_id: 2,
            commit_index: 10,
            applied_index: 9,
            members: vec![MemberStatus {
                id: 1,
                client_addr: "h:7001".into(),
                peer_addr: "h:7101".into(),
                role: Role::Follower,
                reachable: false,
                applied_index: 8,
                matched_index: None,
            }],
            max_node_id: 3,
            recovering: false,
            recovery: String::new(),
            snapshot_index: 0,
            purged_index: 0,
        };
        let v = status_json(&st);
        assert_eq!(v["leader"], Value::Null);
        assert_eq!(v["term"], 3);
        let m = &v["members"][0];
        assert_eq!(m["role"], "follower");
        assert_eq!(m["reachable"], false);
        for f in ["id", "client_addr", "peer_addr", "applied_index"] {
            assert!(m.get(f).is_some(), "{f}");
        }
        assert!(status_text(&st).contains("NO LEADER"));
    }
}
