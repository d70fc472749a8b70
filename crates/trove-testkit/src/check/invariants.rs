//! Raft invariants from the nodes' own status, polled during the run: at most one leader
//! per term; a node's term never goes backwards (it is durable with the vote, so not
//! even across restarts); its commit and applied indexes never go backwards while the
//! process runs (after a restart they may restart lower: the commit index is written
//! lazily and the state store is re-applied from the log).
//!
//! Also derives leader availability: the intervals in which no leader was agreed on by
//! a majority of the members.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// One node's status at one poll.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Run clock (nanoseconds) when the answer arrived.
    pub t_ns: u64,
    pub node: u64,
    /// How many times the harness had started this node's process.
    pub incarnation: u32,
    pub term: u64,
    pub leader: Option<u64>,
    pub commit: u64,
    pub applied: u64,
    /// The node said it is recovering after a start (its vote gate is closed: it
    /// neither votes nor campaigns). After a rolled-back volume its term is the old
    /// disk's, lower than before; that is what the gate exists for, so the term check
    /// skips such samples (a node whose term went back while it was voting is caught).
    #[serde(default)]
    pub recovering: bool,
}

impl Sample {
    /// openraft's metrics before the node published the state it loaded: term 0, no
    /// leader, indexes 0. A node answers status for a moment after a restart with these;
    /// they say nothing about the node's durable state, so the checks skip them.
    pub fn is_blank(&self) -> bool {
        self.term == 0 && self.leader.is_none() && self.commit == 0 && self.applied == 0
    }
}

/// What the invariant check found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct InvariantReport {
    pub samples: usize,
    /// Terms seen with an elected leader.
    pub terms_with_leader: usize,
    pub violations: Vec<String>,
}

/// Checks the invariants over samples (in any order).
pub fn check(samples: &[Sample]) -> InvariantReport {
    let mut sorted: Vec<&Sample> = samples.iter().collect();
    sorted.sort_by_key(|s| (s.t_ns, s.node));
    let mut leaders: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut last_term: HashMap<u64, &Sample> = HashMap::new();
    let mut last_run: HashMap<(u64, u32), &Sample> = HashMap::new();
    let mut violations = Vec::new();
    for s in sorted.iter().filter(|s| !s.is_blank()) {
        if s.leader == Some(s.node) {
            leaders.entry(s.term).or_default().insert(s.node);
        }
        if s.recovering {
            continue;
        }
        if let Some(p) = last_term.get(&s.node)
            && s.term < p.term
        {
            violations.push(format!(
                "node {}: term went back from {} to {} (at {:.1}s)",
                s.node,
                p.term,
                s.term,
                secs(s.t_ns)
            ));
        }
        last_term.insert(s.node, s);
        if let Some(p) = last_run.get(&(s.node, s.incarnation)) {
            if s.commit < p.commit {
                violations.push(format!(
                    "node {}: commit index went back from {} to {} (at {:.1}s)",
                    s.node,
                    p.commit,
                    s.commit,
                    secs(s.t_ns)
                ));
            }
            if s.applied < p.applied {
                violations.push(format!(
                    "node {}: applied index went back from {} to {} (at {:.1}s)",
                    s.node,
                    p.applied,
                    s.applied,
                    secs(s.t_ns)
                ));
            }
        }
        last_run.insert((s.node, s.incarnation), s);
    }
    for (term, ids) in &leaders {
        if ids.len() > 1 {
            violations.push(format!("term {term} had {} leaders: {ids:?}", ids.len()));
        }
    }
    InvariantReport {
        samples: samples.len(),
        terms_with_leader: leaders.len(),
        violations,
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Whether one poll round (the samples of one instant, one per responding node) shows
/// a leader that a majority of `members` nodes agree on.
pub fn agreed_leader(round: &[Sample], members: usize) -> Option<u64> {
    let majority = members / 2 + 1;
    round
        .iter()
        .filter(|s| s.leader == Some(s.node))
        .map(|l| {
            let votes = round
                .iter()
                .filter(|s| s.term == l.term && s.leader == Some(l.node))
                .count();
            (l.node, votes)
        })
        .find(|(_, votes)| *votes >= majority)
        .map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: u64, node: u64, inc: u32, term: u64, leader: Option<u64>, commit: u64) -> Sample {
        Sample {
            t_ns: t,
            node,
            incarnation: inc,
            term,
            leader,
            commit,
            applied: commit,
            recovering: false,
        }
    }

    #[test]
    fn a_recovering_node_may_report_its_old_disk_term_but_not_once_voting() {
        let mut old_disk = s(2, 3, 2, 4, None, 10);
        old_disk.recovering = true;
        let v = vec![
            s(1, 3, 1, 5, Some(1), 10),
            old_disk,
            s(3, 3, 2, 5, Some(1), 12),
        ];
        assert!(check(&v).violations.is_empty());
        let v = vec![s(1, 3, 1, 5, Some(1), 10), s(2, 3, 2, 4, None, 10)];
        assert_eq!(check(&v).violations.len(), 1);
    }

    #[test]
    fn a_healthy_run_passes() {
        let v = vec![
            s(1, 1, 1, 2, Some(1), 10),
            s(1, 2, 1, 2, Some(1), 10),
            s(2, 1, 1, 3, Some(2), 12),
            s(2, 2, 1, 3, Some(2), 12),
            // Node 1 restarted: its commit index may start lower.
            s(3, 1, 2, 3, Some(2), 4),
        ];
        let r = check(&v);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.terms_with_leader, 2);
    }

    #[test]
    fn two_leaders_in_a_term_and_regressions_are_caught() {
        let v = vec![
            s(1, 1, 1, 5, Some(1), 10),
            s(2, 2, 1, 5, Some(2), 10),
            s(3, 3, 1, 6, None, 10),
            s(4, 3, 2, 4, None, 10),   // term back, even across a restart
            s(4, 2, 2, 0, None, 0),    // blank metrics right after a restart: skipped
            s(5, 1, 1, 5, Some(1), 9), // commit and applied back in one process
        ];
        let r = check(&v);
        assert_eq!(r.violations.len(), 4, "{:?}", r.violations);
    }

    #[test]
    fn agreement_needs_a_majority() {
        let round = [s(1, 1, 1, 2, Some(1), 1), s(1, 2, 1, 2, Some(1), 1)];
        assert_eq!(agreed_leader(&round, 3), Some(1));
        assert_eq!(agreed_leader(&round[..1], 3), None);
        let split = [s(1, 1, 1, 2, Some(1), 1), s(1, 2, 1, 3, None, 1)];
        assert_eq!(agreed_leader(&split, 3), None);
    }
}
