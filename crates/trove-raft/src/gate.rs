//! The vote gate: a node that has just started does not vote (nor campaign) until it
//! knows its state is not older than what it acknowledged before it stopped.
//!
//! Why: Raft's safety rests on every voter keeping what it acknowledged. A node whose
//! volume was wiped, or replaced by an older copy of itself, comes back with the same
//! id but less state; if it votes on the strength of that state it can elect a leader
//! that lacks committed entries, and one more fault then erases acknowledged writes.
//! The node cannot tell from its own disk that the disk went back in time, so the
//! knowledge comes from outside the volume: its peers (see `Recall` in the peer
//! protocol and the server's `recovery` module, which decides when to open the gate).
//!
//! The gate only ever opens, once per process. While it is closed the peer service
//! answers vote and pre-vote requests with UNAVAILABLE (the candidate counts no vote),
//! and the server keeps openraft's election timer off. When it opens it carries a term
//! floor: votes are refused for terms at or below the highest term the node's peers
//! reported, so a vote the node may have cast before it lost its state (which it no
//! longer remembers) can never be cast again differently in the same term.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Whether this node may vote, and from which term on.
#[derive(Debug)]
pub struct VoteGate {
    open: AtomicBool,
    floor: AtomicU64,
    waiting_for: Mutex<String>,
}

impl VoteGate {
    /// A closed gate (every node starts with one).
    pub fn closed(waiting_for: impl Into<String>) -> Self {
        VoteGate {
            open: AtomicBool::new(false),
            floor: AtomicU64::new(0),
            waiting_for: Mutex::new(waiting_for.into()),
        }
    }

    /// Opens the gate: votes are granted again, for terms above `term_floor`.
    pub fn open(&self, term_floor: u64) {
        self.floor.store(term_floor, Ordering::SeqCst);
        self.open.store(true, Ordering::SeqCst);
        if let Ok(mut w) = self.waiting_for.lock() {
            w.clear();
        }
    }

    /// True once the gate has opened.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// Records what a closed gate is waiting for (shown by `trove cluster status`).
    pub fn set_waiting_for(&self, what: impl Into<String>) {
        if let Ok(mut w) = self.waiting_for.lock() {
            *w = what.into();
        }
    }

    /// What the closed gate is waiting for; empty once open.
    pub fn waiting_for(&self) -> String {
        self.waiting_for
            .lock()
            .map(|w| w.clone())
            .unwrap_or_default()
    }

    /// Whether a vote (or pre-vote) for `term` may be considered at all; openraft then
    /// applies Raft's own rules. The error says why not.
    pub fn admits(&self, term: u64) -> Result<(), String> {
        if !self.is_open() {
            return Err(format!(
                "not voting: recovering after start-up ({})",
                self.waiting_for()
            ));
        }
        let floor = self.floor.load(Ordering::SeqCst);
        if term <= floor {
            return Err(format!(
                "not voting in term {term}: this node recovered its state at term {floor} and may have voted in it before"
            ));
        }
        Ok(())
    }
}

/// A restarting node's question to a peer (payload of the `Recall` peer RPC).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecallRequest {
    /// The asker's data-directory incarnation (a new one means a new directory).
    pub incarnation: String,
    /// The asker's last log index (what it holds now).
    pub last_log_index: u64,
}

/// What a peer knows about the asker, and about the cluster.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecallReply {
    /// The highest log index the peer ever saw the asker acknowledge as durable (while
    /// the peer led), kept on the peer's own disk: the asker's state must reach it.
    pub watermark: u64,
    /// The incarnation the peer last saw for the asker's id, if any.
    pub known_incarnation: Option<String>,
    /// Whether the peer's Raft is initialised (a cluster exists).
    pub initialized: bool,
    /// The peer's current term.
    pub term: u64,
    /// The leader the peer knows, if any.
    pub leader: Option<u64>,
    /// If the peer is the leader: its committed index.
    pub leader_committed: Option<u64>,
    /// The last index in the peer's own log (0 when it holds at most the founding
    /// membership entry, which `initialize` writes at index 0). Anything beyond it was
    /// written by an elected leader: the cluster already existed.
    pub last_log_index: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_gate_refuses_every_term_and_says_why() {
        let g = VoteGate::closed("peers 1, 3 unreachable");
        let e = g.admits(100).unwrap_err();
        assert!(e.contains("peers 1, 3 unreachable"), "{e}");
    }

    #[test]
    fn open_gate_refuses_terms_at_or_below_the_floor() {
        let g = VoteGate::closed("x");
        g.open(7);
        assert!(g.admits(7).is_err());
        assert!(g.admits(6).is_err());
        assert!(g.admits(8).is_ok());
        assert!(g.waiting_for().is_empty());
    }
}
