//! When a node asks for its next snapshot.
//!
//! A snapshot build walks the whole state, so its cost grows with the state while the
//! entries it lets the log drop do not. Built every `snapshot_every_entries` entries
//! regardless, a state of a few hundred thousand keys under a steady write load kept a
//! build running most of the time (a fifth of the leader's CPU during 64-client record
//! puts, with builds every 10,000 entries). So a node asks for a build once `snapshot_every_entries` entries were applied
//! since the last one started *and* at least [`SNAPSHOT_PACE_FACTOR`] times the last
//! build's duration has passed since it ended: builds take at most about a tenth of the
//! time, whatever the state's size. Two bounds keep the log short all the same: once
//! [`SNAPSHOT_EVERY_PAYLOAD_BYTES`] of payload were applied a build is asked for at once,
//! and openraft itself builds after `snapshot_every_entries` ×
//! [`SNAPSHOT_MAX_ENTRIES_FACTOR`] entries (see [`crate::raft_config`]).
//!
//! Only the timing of snapshots depends on this, never their content: a snapshot is the
//! state at its last applied entry, whenever it is built.

use std::time::{Duration, Instant};

use trove_types::limits::{SNAPSHOT_EVERY_PAYLOAD_BYTES, SNAPSHOT_PACE_FACTOR};

/// Counts what was applied since the last build and decides when to ask for the next.
#[derive(Debug)]
pub(crate) struct SnapshotPace {
    every_entries: u64,
    entries: u64,
    payload_bytes: u64,
    /// A build was asked for and has not started yet.
    asked: bool,
    /// No build is asked for before this (the last build's end plus its pause).
    not_before: Option<Instant>,
}

impl SnapshotPace {
    pub(crate) fn new(every_entries: u64) -> Self {
        SnapshotPace {
            every_entries: every_entries.max(1),
            entries: 0,
            payload_bytes: 0,
            asked: false,
            not_before: None,
        }
    }

    /// Counts an applied group. Returns how long to wait before asking for a build when
    /// one is due and not yet asked for (the caller then asks, after that wait).
    pub(crate) fn applied(
        &mut self,
        entries: u64,
        payload_bytes: u64,
        now: Instant,
    ) -> Option<Duration> {
        self.entries = self.entries.saturating_add(entries);
        self.payload_bytes = self.payload_bytes.saturating_add(payload_bytes);
        if self.asked {
            return None;
        }
        let wait = if self.payload_bytes >= SNAPSHOT_EVERY_PAYLOAD_BYTES {
            Duration::ZERO
        } else if self.entries >= self.every_entries {
            self.not_before
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
        } else {
            return None;
        };
        self.asked = true;
        Some(wait)
    }

    /// A build started (asked for or not): counting starts again.
    pub(crate) fn build_started(&mut self) {
        self.entries = 0;
        self.payload_bytes = 0;
        self.asked = false;
    }

    /// A build that took `took` ended at `now`.
    pub(crate) fn build_finished(&mut self, took: Duration, now: Instant) {
        self.not_before = Some(now + took.saturating_mul(SNAPSHOT_PACE_FACTOR));
    }

    /// Asking for a build failed: the next applied group may ask again.
    pub(crate) fn ask_failed(&mut self) {
        self.asked = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_is_asked_for_once_enough_entries_were_applied() {
        let t0 = Instant::now();
        let mut p = SnapshotPace::new(100);
        assert_eq!(p.applied(60, 0, t0), None);
        assert_eq!(p.applied(40, 0, t0), Some(Duration::ZERO));
        // Asked once until the build starts.
        assert_eq!(p.applied(500, 0, t0), None);
        p.build_started();
        assert_eq!(p.applied(99, 0, t0), None);
        assert_eq!(p.applied(1, 0, t0), Some(Duration::ZERO));
    }

    #[test]
    fn the_next_build_waits_for_a_multiple_of_the_last_ones_duration() {
        let t0 = Instant::now();
        let mut p = SnapshotPace::new(10);
        p.build_started();
        let took = Duration::from_millis(200);
        p.build_finished(took, t0);
        let pause = took * SNAPSHOT_PACE_FACTOR;
        // Enough entries, but the pause has not passed: ask after the rest of it.
        let later = t0 + Duration::from_millis(500);
        assert_eq!(
            p.applied(10, 0, later),
            Some(pause - Duration::from_millis(500))
        );
        p.build_started();
        // Once the pause has passed, at once.
        assert_eq!(p.applied(10, 0, t0 + pause), Some(Duration::ZERO));
    }

    #[test]
    fn payload_asks_at_once_whatever_the_pause() {
        let t0 = Instant::now();
        let mut p = SnapshotPace::new(u64::MAX);
        p.build_finished(Duration::from_secs(60), t0);
        assert_eq!(p.applied(1, SNAPSHOT_EVERY_PAYLOAD_BYTES - 1, t0), None);
        assert_eq!(p.applied(1, 1, t0), Some(Duration::ZERO));
    }

    #[test]
    fn a_failed_ask_is_repeated_on_the_next_group() {
        let t0 = Instant::now();
        let mut p = SnapshotPace::new(5);
        assert_eq!(p.applied(5, 0, t0), Some(Duration::ZERO));
        p.ask_failed();
        assert_eq!(p.applied(1, 0, t0), Some(Duration::ZERO));
    }
}
