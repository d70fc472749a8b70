//! The checkers that decide whether a chaos run passed. Each is a pure function over
//! the recorded history (and the final reads, or the polled statuses), so each can be
//! fed hand-written histories in unit tests and must reject a lost write, a stale read
//! and a duplicated write.
//!
//! - [`oracle`]: every acknowledged write is in the final state or superseded; every
//!   acknowledged blob reads back with its SHA-256 (linear time; the headline number).
//! - [`linearizable`]: per-key linearizability (WGL search, [`wgl`]) under a time limit.
//! - [`revisions`]: revisions are unique per write and follow real time.
//! - [`invariants`]: one leader per term; terms, commit and applied indexes never go
//!   backwards.

pub mod invariants;
pub mod linearizable;
pub mod oracle;
pub mod revisions;
#[cfg(test)]
mod testutil;
pub mod wgl;
