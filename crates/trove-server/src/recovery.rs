//! Start-up recovery: a node does not vote until its peers have confirmed that its
//! state is not older than what it acknowledged before it stopped.
//!
//! The danger (issue "single-node disasters", the CTRL paper, FAST 2018): a node whose
//! data directory was wiped, or replaced by an older copy of itself, restarts under the
//! same id with less state than it acknowledged. Plain Raft lets it vote on the
//! strength of that state, so a candidate lacking committed entries can win (with the
//! stale node's vote), and the committed entries are then overwritten. The node cannot
//! see the regression on its own disk; its peers can:
//!
//! - **Watermarks.** While a node leads, it records for every follower the highest log
//!   index that follower acknowledged as durable (openraft's `matched`); while it
//!   follows an established leader, it records its own log end for that leader (the
//!   leader sent it those entries, so it held them — this covers a leader whose volume
//!   goes back in time). Kept in `<data>/peers` (a checksummed, versioned two-slot meta
//!   file), saved at most every [`SAVE_EVERY`] and answered live from memory. It also
//!   records the data-directory incarnation each peer last presented.
//! - **Recall.** Every node starts with its [`VoteGate`] closed and openraft's election
//!   timer off, and asks every other voter (peer RPC `Recall`) what it knows. The gate
//!   opens when either
//!   1. every other voter answered and none saw this node acknowledge an index beyond
//!      its log's end (a normal restart: nothing lost), or
//!   2. a leader that was elected without this node's vote has brought it up to the
//!      leader's commit index as it was when asked, and past every watermark heard
//!      (a wiped or rolled-back node, re-seeded from its peers).
//!
//!   On opening, votes are refused for terms up to the highest term any peer reported,
//!   because a node that lost its state may have voted in those terms already.
//! - A founding member whose Raft is not initialised bootstraps only when a majority of
//!   the founding members answered and none saw it acknowledge anything, knew it under
//!   another incarnation, or holds log entries past the founding membership entry
//!   (index 0; only an elected leader writes beyond it). A wiped founding member
//!   therefore never re-founds the cluster, even when it first founded it without the
//!   peer it now asks: it waits to be re-seeded by the leader.
//!
//! - A node whose raft log was found damaged at start-up (not a torn tail; the log store
//!   cut it before the damage and left a `RESEED` marker) opens its gate only by rule 2:
//!   the entries it lost may be ones it acknowledged, and no watermark may cover them.
//!
//! The price is availability in one case: a node that restarts while another voter is
//! unreachable and no leader exists waits for that voter (in a three-node cluster with
//! the leader down, the cluster waits for it), because then nothing can tell a restart
//! from a rollback. Losing acknowledged writes is worse than waiting.
//!
//! Bound: watermarks reach disk within [`SAVE_EVERY`]; a volume rolled back by less
//! than that, while the leader that knew the newer watermark also restarted, is not
//! detected.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use trove_raft::{RecallReply, RecallRequest, TroveNode, VoteGate};
use trove_storage::meta::MetaFile;

use crate::error::ServerError;
use crate::node::{Node, NodeRef};

/// Version of the `<data>/peers` record this binary writes and understands.
pub const PEERS_FORMAT: u32 = 1;

/// How often a leader saves the watermarks it learned.
pub const SAVE_EVERY: Duration = Duration::from_millis(200);

/// How often a closed gate asks its peers again.
const ASK_EVERY: Duration = Duration::from_millis(300);

/// Test-only switch (feature `failpoints`): open the gate at once.
#[cfg(feature = "failpoints")]
pub const NO_VOTE_GATE_ENV: &str = "TROVE_FAILPOINT_NO_VOTE_GATE";

/// How long one `Recall` may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// What this node knows about one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct PeerKnown {
    /// The incarnation the peer last presented.
    incarnation: Option<String>,
    /// The highest index it was seen to acknowledge as durable.
    watermark: u64,
}

/// Contents of `<data>/peers`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct PeersRecord {
    format: u32,
    peers: BTreeMap<u64, PeerKnown>,
}

struct Saved {
    file: MetaFile,
    rec: PeersRecord,
    dirty: bool,
}

/// The recovery state of a running node: its gate and what it knows about its peers.
pub struct Recovery {
    /// Whether this node may vote yet.
    pub gate: Arc<VoteGate>,
    incarnation: String,
    saved: Mutex<Saved>,
}

fn peers_err(path: &Path, e: impl std::fmt::Display) -> ServerError {
    ServerError::Storage(format!("{}: {e}", path.display()))
}

fn decode_record(path: &Path, payload: &[u8]) -> Result<PeersRecord, ServerError> {
    let rec: PeersRecord = trove_raft::codec::decode(payload)
        .map_err(|e| ServerError::from_storage(format!("{}: undecodable: {e}", path.display())))?;
    if rec.format != PEERS_FORMAT {
        return Err(ServerError::Format(format!(
            "{} has format version {}; this binary understands version {PEERS_FORMAT}. Run a matching trove release; the directory was left untouched",
            path.display(),
            rec.format
        )));
    }
    Ok(rec)
}

/// Read-only format check of `<dir>/peers` (see `formats`).
pub fn check_format(dir: &Path) -> Result<(), ServerError> {
    let path = dir.join("peers");
    if !path.exists() {
        return Ok(());
    }
    match MetaFile::read(&path).map_err(ServerError::from_storage)? {
        Some(payload) => decode_record(&path, &payload).map(|_| ()),
        None => Ok(()),
    }
}

impl Recovery {
    /// Opens (or creates) `<dir>/peers`; the gate starts closed.
    pub fn open(dir: &Path, incarnation: &str) -> Result<Recovery, ServerError> {
        let path = dir.join("peers");
        let (file, payload) = MetaFile::open(&path).map_err(ServerError::from_storage)?;
        let rec = match payload {
            Some(p) => decode_record(&path, &p)?,
            None => PeersRecord {
                format: PEERS_FORMAT,
                peers: BTreeMap::new(),
            },
        };
        Ok(Recovery {
            gate: Arc::new(VoteGate::closed("asking peers what they know of this node")),
            incarnation: incarnation.to_string(),
            saved: Mutex::new(Saved {
                file,
                rec,
                dirty: false,
            }),
        })
    }

    fn with_saved<T>(&self, f: impl FnOnce(&mut Saved) -> T) -> Result<T, ServerError> {
        let mut s = self
            .saved
            .lock()
            .map_err(|_| ServerError::Storage("peers record lock poisoned".into()))?;
        Ok(f(&mut s))
    }

    /// Writes the record if it changed (fsynced), dropping peers that are no longer
    /// members (ids are never reused, so their entries can never matter again).
    fn save(&self, members: &BTreeSet<u64>) -> Result<(), ServerError> {
        let mut s = self
            .saved
            .lock()
            .map_err(|_| ServerError::Storage("peers record lock poisoned".into()))?;
        if !members.is_empty() {
            let before = s.rec.peers.len();
            s.rec.peers.retain(|id, _| members.contains(id));
            s.dirty |= s.rec.peers.len() != before;
        }
        if !s.dirty {
            return Ok(());
        }
        let bytes =
            trove_raft::codec::encode(&s.rec).map_err(|e| peers_err(Path::new("peers"), e))?;
        s.file
            .write(&bytes, true)
            .map_err(ServerError::from_storage)?;
        s.dirty = false;
        Ok(())
    }

    /// Answers a peer's `Recall` and remembers the incarnation it presented.
    pub fn answer(
        &self,
        node: &Node,
        from: u64,
        ask: RecallRequest,
    ) -> Result<RecallReply, String> {
        let m = node.metrics();
        let leading = m.current_leader == Some(node.id);
        let live = live_watermarks(node.id, &m)
            .get(&from)
            .copied()
            .unwrap_or(0);
        let known = self
            .with_saved(|s| {
                let k = s.rec.peers.entry(from).or_default();
                let before = k.clone();
                k.watermark = k.watermark.max(live);
                if k.incarnation.as_deref() != Some(ask.incarnation.as_str()) {
                    if let Some(old) = &k.incarnation {
                        tracing::warn!(
                            peer = from, old = %old, new = %ask.incarnation, watermark = k.watermark, last_log_index = ask.last_log_index,
                            "peer came back with a different data directory (lost volume?): it will not vote until re-seeded"
                        );
                    }
                    k.incarnation = Some(ask.incarnation.clone());
                }
                s.dirty |= *k != before;
                before
            })
            .map_err(|e| e.to_string())?;
        let members = member_ids(&m);
        self.save(&members).map_err(|e| e.to_string())?;
        Ok(RecallReply {
            watermark: known.watermark.max(live),
            known_incarnation: known.incarnation,
            initialized: !members.is_empty(),
            term: m.current_term,
            leader: m.current_leader,
            leader_committed: leading.then(|| m.local_committed.map(|l| l.index).unwrap_or(0)),
            last_log_index: m.last_log_index.unwrap_or(0),
        })
    }

    /// Records what this node currently knows of its peers' state (see
    /// [`live_watermarks`]).
    fn note_progress(&self, node: &Node) -> Result<(), ServerError> {
        let m = node.metrics();
        let live = live_watermarks(node.id, &m);
        if live.is_empty() {
            return Ok(());
        }
        self.with_saved(|s| {
            for (id, idx) in live {
                let k = s.rec.peers.entry(id).or_default();
                if idx > k.watermark {
                    k.watermark = idx;
                    s.dirty = true;
                }
            }
        })?;
        let members = member_ids(&m);
        self.save(&members)
    }
}

/// Every node id in the membership (voters and learners).
fn member_ids(m: &openraft::RaftMetrics<trove_raft::TypeConfig>) -> BTreeSet<u64> {
    m.membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect()
}

/// What this node can vouch for, right now, about its peers' logs:
/// - as leader, each follower's `matched` index (what it acknowledged as durable);
/// - as a follower of an established leader, the leader's: it sent this node every
///   entry up to this node's log end, so it held them. Without this a leader whose
///   volume is rolled back right after it committed entries (counting its own copy)
///   would find nobody who remembers them.
fn live_watermarks(
    me: u64,
    m: &openraft::RaftMetrics<trove_raft::TypeConfig>,
) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    match m.current_leader {
        Some(l) if l == me => {
            for (id, matched) in m.replication.iter().flatten() {
                if *id != me
                    && let Some(idx) = matched.map(|l| l.index)
                {
                    out.insert(*id, idx);
                }
            }
        }
        Some(l) if m.vote.is_committed() && m.vote.leader_id().node_id == l => {
            out.insert(l, m.last_log_index.unwrap_or(0));
        }
        _ => {}
    }
    out
}

/// Saves watermarks every [`SAVE_EVERY`], until `stop`.
pub async fn keep_watermarks(
    node: NodeRef,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let mut tick = tokio::time::interval(SAVE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return Ok(()),
        }
        let n = node.clone();
        // The peers file is part of what the node promised to keep: a failure to save
        // it stops the node like any other storage failure.
        tokio::task::spawn_blocking(move || n.recovery.note_progress(&n))
            .await
            .map_err(|e| ServerError::Storage(e.to_string()))??;
    }
}

async fn ask(
    node: &Node,
    peer: u64,
    addr: &str,
    req: &RecallRequest,
) -> Result<RecallReply, String> {
    let mut c = node.network.raw_client(addr)?;
    let env = node.peer_envelope(peer, req)?;
    crate::node::peer_reply(Some(ASK_TIMEOUT), c.recall(env)).await
}

fn list(ids: &[u64]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Keeps the gate closed until this node's state is confirmed (see the module docs),
/// then turns elections on; a pristine founding member then initialises Raft.
/// `founding` is the founding membership if this node is a founding member.
pub async fn recover(node: NodeRef, founding: Option<Vec<(u64, String)>>) {
    let gate = node.recovery.gate.clone();
    // Test-only (cargo feature `failpoints`, never in a release): plain Raft's trust in
    // the local disk, so the chaos suite's proof can show that its checkers catch lost
    // writes that the gate would otherwise stop the cluster from ever serving.
    #[cfg(feature = "failpoints")]
    if std::env::var_os(NO_VOTE_GATE_ENV).is_some() {
        tracing::warn!(node = node.id, "failpoint: vote gate disabled");
        gate.open(0);
        node.raft.runtime_config().elect(true);
        if let Some(members) = &founding {
            initialize(&node, members).await;
        }
        return;
    }
    // A damaged log was cut before the damage (`LogStore::open`): entries this node
    // acknowledged may be gone, so only a leader's catch-up (rule 2) may open the gate.
    let damaged = node.log.reseed_needed();
    if let Some(why) = &damaged {
        tracing::error!(node = node.id, %why, "not voting until a leader re-sends what the damaged log lost");
    }
    let mut catch_up: Option<(u64, u64)> = None; // (leader, target index)
    let mut told_lost = false;
    let mut lost_volume_seen_by: Option<(u64, String)> = None;
    loop {
        let m = node.metrics();
        let membership = m.membership_config.membership();
        let initialized = membership.nodes().next().is_some();
        let (voters, addrs): (Vec<u64>, BTreeMap<u64, String>) = if initialized {
            (
                membership.voter_ids().collect(),
                membership
                    .nodes()
                    .map(|(id, n): (&u64, &TroveNode)| (*id, n.peer_addr.clone()))
                    .collect(),
            )
        } else if let Some(f) = &founding {
            (
                f.iter().map(|(id, _)| *id).collect(),
                f.iter().cloned().collect(),
            )
        } else {
            gate.set_waiting_for("waiting to be added to the cluster");
            tokio::time::sleep(ASK_EVERY).await;
            continue;
        };
        if initialized && !voters.contains(&node.id) {
            // A learner never votes; there is nothing to guard.
            gate.open(0);
            break;
        }
        let my_last = m.last_log_index.unwrap_or(0);
        let req = RecallRequest {
            incarnation: node.recovery.incarnation.clone(),
            last_log_index: my_last,
        };
        let others: Vec<u64> = voters.iter().copied().filter(|i| *i != node.id).collect();
        let answers = futures::future::join_all(others.iter().map(|id| {
            let addr = addrs.get(id).cloned().unwrap_or_default();
            let node = &node;
            let req = &req;
            async move { (*id, ask(node, *id, &addr, req).await) }
        }))
        .await;
        let mut answered: BTreeMap<u64, RecallReply> = BTreeMap::new();
        let mut unreachable = Vec::new();
        for (id, r) in answers {
            match r {
                Ok(r) => {
                    answered.insert(id, r);
                }
                Err(e) => {
                    tracing::debug!(peer = id, error = %e, "recall unanswered");
                    unreachable.push(id);
                }
            }
        }
        let max_watermark = answered.values().map(|r| r.watermark).max().unwrap_or(0);
        let max_term = answered
            .values()
            .map(|r| r.term)
            .max()
            .unwrap_or(0)
            .max(m.current_term);
        let lost = answered
            .iter()
            .filter(|(_, r)| r.watermark > my_last)
            .map(|(id, r)| (*id, r.watermark))
            .max_by_key(|(_, w)| *w);
        if let Some((peer, w)) = lost
            && !told_lost
        {
            told_lost = true;
            tracing::warn!(
                node = node.id,
                peer,
                acknowledged = w,
                log_end = my_last,
                "this node's log ends before what it acknowledged: its volume was wiped or rolled back; not voting until re-seeded by a leader"
            );
        }

        if !initialized {
            // The cluster already exists if a peer saw this node acknowledge anything,
            // knew it under another incarnation, or holds log entries past the founding
            // membership (only an elected leader writes those, so a majority of the
            // founding members, possibly this node's lost volume, formed the cluster).
            // Then this node must not found it again: with an empty log it would vote
            // for candidates lacking what it acknowledged. It waits to be re-seeded by
            // the leader (a founding member that was merely slow to start is caught up
            // the same way). A peer that only initialised first in this same founding
            // round knows this incarnation or none, no watermark and no entry past 0.
            if let Some(seen) = cluster_exists(&answered, &node.recovery.incarnation) {
                lost_volume_seen_by.get_or_insert(seen);
            }
            if let Some((peer, why)) = &lost_volume_seen_by {
                if !told_lost {
                    told_lost = true;
                    tracing::warn!(
                        node = node.id,
                        peer,
                        "this node's data directory is new but the cluster already exists (node {peer} {why}): if this node was a member before, its volume was wiped or lost; not voting until re-seeded by the leader"
                    );
                }
                gate.set_waiting_for(format!(
                    "the cluster already exists (node {peer} {why}) and this node's data directory is new: waiting to be re-seeded by the leader"
                ));
            } else if 2 * (answered.len() + 1) > voters.len() {
                gate.open(0);
                node.raft.runtime_config().elect(true);
                initialize(&node, founding.as_deref().unwrap_or_default()).await;
                tracing::info!(node = node.id, "founding a new cluster");
                return;
            } else {
                gate.set_waiting_for(format!(
                    "founding a new cluster: waiting for a majority of the founding members (no answer from {})",
                    list(&unreachable)
                ));
            }
            tokio::time::sleep(ASK_EVERY).await;
            continue;
        }

        // 1. Everyone who could know answered, and nobody saw us further along.
        if damaged.is_none() && unreachable.is_empty() && max_watermark <= my_last {
            gate.open(max_term);
            tracing::info!(
                node = node.id,
                term_floor = max_term,
                log_end = my_last,
                "state confirmed by every voter; voting"
            );
            break;
        }
        // 2. Caught up with a leader elected without us.
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        if let Some(leader) = m.current_leader.filter(|l| *l != node.id)
            && let Some(committed) = answered.get(&leader).and_then(|r| r.leader_committed)
        {
            let target = match catch_up {
                Some((l, t)) if l == leader => t.max(max_watermark),
                _ => committed.max(max_watermark),
            };
            catch_up = Some((leader, target));
            if applied >= target {
                if damaged.is_some()
                    && let Err(e) = node.log.reseeded()
                {
                    // Stay closed: the marker must not outlive a repair it cannot record.
                    gate.set_waiting_for(format!("cannot clear the re-seed marker: {e}"));
                    tokio::time::sleep(ASK_EVERY).await;
                    continue;
                }
                gate.open(max_term);
                tracing::info!(
                    node = node.id,
                    leader,
                    term_floor = max_term,
                    applied,
                    "caught up with the leader; voting"
                );
                break;
            }
            gate.set_waiting_for(format!(
                "catching up with leader {leader}: applied {applied} of {target}"
            ));
        } else if let Some(why) = &damaged {
            gate.set_waiting_for(format!(
                "this node's raft log was damaged and cut before the damage ({why}): waiting for a leader to re-send the lost entries"
            ));
        } else if let Some((peer, w)) = lost {
            gate.set_waiting_for(format!(
                "node {peer} saw this node acknowledge index {w} but its log ends at {my_last} (wiped or rolled-back volume): waiting for a leader to re-seed it"
            ));
        } else {
            gate.set_waiting_for(format!(
                "waiting for every voter to confirm this node's state (no answer from {}) or for a leader to catch up with",
                list(&unreachable)
            ));
        }
        tokio::time::sleep(ASK_EVERY).await;
    }
    node.raft.runtime_config().elect(true);
}

/// For a node whose Raft is not initialised: the first peer whose answer shows that
/// the cluster already exists, and how (see [`recover`]); `None` while a new cluster
/// may still be founded.
fn cluster_exists(
    answered: &BTreeMap<u64, RecallReply>,
    incarnation: &str,
) -> Option<(u64, String)> {
    answered.iter().find_map(|(id, r)| {
        let other_incarnation = r
            .known_incarnation
            .as_deref()
            .is_some_and(|k| k != incarnation);
        if r.watermark > 0 {
            Some((
                *id,
                format!("saw this node acknowledge index {}", r.watermark),
            ))
        } else if other_incarnation {
            Some((
                *id,
                "knew this node under another data directory".to_string(),
            ))
        } else if r.last_log_index > 0 {
            Some((*id, format!("holds log entries up to {}", r.last_log_index)))
        } else {
            None
        }
    })
}

/// Initialises Raft with the founding membership (if nobody did yet).
async fn initialize(node: &Node, members: &[(u64, String)]) {
    match node.raft.is_initialized().await {
        Ok(true) => return,
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "bootstrap: cannot tell whether raft is initialised");
            return;
        }
    }
    let mut map = BTreeMap::new();
    for (id, peer) in members {
        let (peer_addr, client_addr) = if *id == node.id {
            (node.config.peer_addr(), node.config.client_addr())
        } else {
            (peer.clone(), String::new())
        };
        map.insert(
            *id,
            TroveNode {
                peer_addr,
                client_addr,
            },
        );
    }
    if let Err(e) = node.raft.initialize(map).await {
        tracing::info!(error = %e, "bootstrap: raft already initialised");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(watermark: u64, known: Option<&str>, last_log_index: u64) -> RecallReply {
        RecallReply {
            watermark,
            known_incarnation: known.map(str::to_string),
            initialized: known.is_some() || last_log_index > 0,
            term: 1,
            leader: None,
            leader_committed: None,
            last_log_index,
        }
    }

    #[test]
    fn a_founding_round_may_found() {
        // Peers that never heard of this node, or initialised first in the same round
        // (the founding membership entry at index 0 only), do not stop the founding.
        let answered = BTreeMap::from([(2, reply(0, None, 0)), (3, reply(0, Some("me"), 0))]);
        assert_eq!(cluster_exists(&answered, "me"), None);
    }

    #[test]
    fn a_wiped_member_never_founds_again() {
        for (r, want) in [
            (reply(40, Some("old"), 50), "acknowledge index 40"),
            (reply(0, Some("old"), 50), "another data directory"),
            // The case that once slipped through: this node founded the cluster with
            // one peer while the third was not up yet, so the third never heard of it
            // and, being a follower, kept no watermark for it. Its log shows the cluster.
            (reply(0, None, 57), "log entries up to 57"),
        ] {
            let answered = BTreeMap::from([(3, r)]);
            let (peer, why) = cluster_exists(&answered, "me").expect("cluster exists");
            assert_eq!(peer, 3);
            assert!(why.contains(want), "{why}");
        }
    }
}
