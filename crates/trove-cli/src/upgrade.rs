//! `trove cluster upgrade-check <ID>`: whether a node can be taken down now (to upgrade
//! or restart it) without losing quorum.
//!
//! Decided client-side from the leader's view (`Cluster.Status` answered by the leader,
//! which knows which voters answer its heartbeats and how far each one's log reaches):
//! taking node ID down is safe when the OTHER voters that are reachable and caught up
//! (log at most `--max-lag` entries behind the commit index) are still a majority of all
//! voters. A learner never counts towards quorum, so taking one down is always safe.
//! Without a leader nothing is safe: the cluster has no quorum to spare. The answer is a
//! snapshot of this moment; run it right before each step of a rolling upgrade.

use anyhow::{Result, bail};
use serde_json::json;
use trove_client::{ClusterStatus, Role};

use crate::args::OutputFormat;
use crate::output::{print_json, print_line};

/// The answer for one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub node: u64,
    pub safe: bool,
    /// One line saying why.
    pub reason: String,
    /// Voters, and how many must stay up.
    pub voters: usize,
    pub quorum: usize,
    /// Other voters that are reachable and caught up.
    pub healthy_others: Vec<u64>,
}

/// Applies the rule to the leader's view `st` for node `id`.
pub fn check(st: &ClusterStatus, id: u64, max_lag: u64) -> Verdict {
    let voters: Vec<_> = st
        .members
        .iter()
        .filter(|m| matches!(m.role, Role::Leader | Role::Follower))
        .collect();
    let quorum = voters.len() / 2 + 1;
    let verdict = |safe: bool, healthy_others: Vec<u64>, reason: String| Verdict {
        node: id,
        safe,
        reason,
        voters: voters.len(),
        quorum,
        healthy_others,
    };
    let Some(target) = st.members.iter().find(|m| m.id == id) else {
        return verdict(false, Vec::new(), format!("node {id} is not a member"));
    };
    if matches!(target.role, Role::Learner) {
        return verdict(
            true,
            Vec::new(),
            format!("node {id} is a learner: it does not count towards quorum"),
        );
    }
    let Some(leader) = st.leader.filter(|l| *l == st.node_id) else {
        return verdict(
            false,
            Vec::new(),
            "no leader answered: the cluster has no quorum to spare right now".into(),
        );
    };
    let mut healthy = Vec::new();
    let mut unhealthy = Vec::new();
    for m in voters.iter().filter(|m| m.id != id) {
        let log_end = if m.id == leader {
            st.commit_index
        } else {
            m.matched_index.unwrap_or(m.applied_index)
        };
        let behind = st.commit_index.saturating_sub(log_end);
        if m.id != leader && !m.reachable {
            unhealthy.push(format!("node {} is unreachable", m.id));
        } else if behind > max_lag {
            unhealthy.push(format!("node {} is {behind} entries behind", m.id));
        } else {
            healthy.push(m.id);
        }
    }
    let count = healthy.len();
    let total = voters.len();
    if count >= quorum {
        let mut reason = format!(
            "without node {id}, {count} of {total} voters stay reachable and caught up (quorum {quorum})"
        );
        if id == leader {
            reason.push_str(&format!(
                "; it is the leader: `trove cluster transfer-leader {}` first avoids an election pause",
                healthy.iter().find(|h| **h != id).copied().unwrap_or(0)
            ));
        }
        verdict(true, healthy, reason)
    } else {
        let mut reason = format!(
            "without node {id}, only {count} of {total} voters would be reachable and caught up (quorum {quorum})"
        );
        if !unhealthy.is_empty() {
            reason.push_str(&format!(": {}", unhealthy.join(", ")));
        }
        verdict(false, healthy, reason)
    }
}

/// Prints the verdict; an unsafe one is an error (exit status 1).
pub fn report(format: OutputFormat, v: &Verdict) -> Result<()> {
    if format == OutputFormat::Json {
        print_json(&json!({
            "node": v.node,
            "safe": v.safe,
            "reason": v.reason,
            "voters": v.voters,
            "quorum": v.quorum,
            "healthy_others": v.healthy_others,
        }))?;
    } else if v.safe {
        print_line(&format!("SAFE to take node {} down: {}", v.node, v.reason))?;
    }
    if !v.safe {
        bail!("NOT safe to take node {} down: {}", v.node, v.reason);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use trove_client::MemberStatus;

    fn member(id: u64, role: Role, reachable: bool, matched: u64) -> MemberStatus {
        MemberStatus {
            id,
            client_addr: format!("h:{id}"),
            peer_addr: format!("h:1{id}"),
            role,
            reachable,
            applied_index: matched,
            matched_index: Some(matched),
        }
    }

    fn status(members: Vec<MemberStatus>) -> ClusterStatus {
        ClusterStatus {
            cluster_id: "c".into(),
            leader: Some(1),
            term: 2,
            node_id: 1,
            commit_index: 100,
            applied_index: 100,
            members,
            max_node_id: 4,
            recovering: false,
            recovery: String::new(),
            snapshot_index: 0,
            purged_index: 0,
        }
    }

    #[test]
    fn quorum_rule_cases() {
        let healthy = status(vec![
            member(1, Role::Leader, true, 100),
            member(2, Role::Follower, true, 100),
            member(3, Role::Follower, true, 99),
        ]);
        assert!(check(&healthy, 3, 10).safe);
        let leader = check(&healthy, 1, 10);
        assert!(leader.safe && leader.reason.contains("transfer-leader"));
        assert!(!check(&healthy, 9, 10).safe, "not a member");

        let one_down = status(vec![
            member(1, Role::Leader, true, 100),
            member(2, Role::Follower, false, 100),
            member(3, Role::Follower, true, 100),
        ]);
        let v = check(&one_down, 3, 10);
        assert!(
            !v.safe && v.reason.contains("node 2 is unreachable"),
            "{v:?}"
        );
        assert!(check(&one_down, 2, 10).safe, "the node already down");

        let lagging = status(vec![
            member(1, Role::Leader, true, 100),
            member(2, Role::Follower, true, 10),
            member(3, Role::Follower, true, 100),
            member(4, Role::Learner, false, 0),
        ]);
        assert!(!check(&lagging, 3, 10).safe);
        assert!(check(&lagging, 3, 1000).safe);
        assert!(check(&lagging, 4, 10).safe, "learners never count");

        let mut no_leader = healthy.clone();
        no_leader.leader = None;
        assert!(!check(&no_leader, 3, 10).safe);
    }
}
