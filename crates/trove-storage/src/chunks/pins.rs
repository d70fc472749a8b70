//! Chunk files that raft log entries hold by name.
//!
//! A chunk entry's bytes are written once per node: into the chunk file, when the entry
//! is appended to the log, and the log record keeps only the chunk's name and length
//! (`trove-raft`'s log store). Until the log drops that entry (a purge after a snapshot,
//! or a truncation of entries that were never committed), the file is the only copy of
//! the entry's payload, so it must outlive any release by the state machine: an aborted
//! upload or a deleted object may release a chunk whose entry a lagging follower still
//! needs, or that a restart replays.
//!
//! [`Pins`] counts, per chunk, the log entries holding it. [`super::ChunkStore::remove_many`]
//! skips pinned chunks under the same lock that [`super::ChunkStore::pin`] takes before
//! the append looks for (or writes) the file, so a file an entry relies on is never
//! removed between the two. A chunk whose last pin goes away is reported by
//! [`Pins::take_unpinned`], and the state machine removes it at its next apply if nothing
//! in the state refers to it (that is how a truncated entry's file goes, and a file whose
//! release had to wait for the purge).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use trove_types::Sha256Digest;

/// Which chunk each unpurged log entry holds by name (see the module docs).
#[derive(Default)]
pub(super) struct Pins {
    state: Mutex<PinState>,
}

#[derive(Default)]
pub(super) struct PinState {
    /// Log index → the chunk that entry holds.
    by_index: BTreeMap<u64, Sha256Digest>,
    /// Chunk → how many entries hold it.
    counts: HashMap<Sha256Digest, u32>,
    /// Chunks whose count reached zero since the last [`Pins::take_unpinned`].
    unpinned: BTreeSet<Sha256Digest>,
}

impl PinState {
    /// Whether some log entry holds `hash`.
    pub(super) fn is_pinned(&self, hash: &Sha256Digest) -> bool {
        self.counts.contains_key(hash)
    }

    fn add(&mut self, index: u64, hash: Sha256Digest) {
        if let Some(old) = self.by_index.insert(index, hash) {
            self.drop_one(old);
        }
        *self.counts.entry(hash).or_insert(0) += 1;
        self.unpinned.remove(&hash);
    }

    fn drop_one(&mut self, hash: Sha256Digest) {
        if let Some(n) = self.counts.get_mut(&hash) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&hash);
                self.unpinned.insert(hash);
            }
        }
    }

    fn drop_indexes(&mut self, indexes: Vec<u64>) {
        for i in indexes {
            if let Some(h) = self.by_index.remove(&i) {
                self.drop_one(h);
            }
        }
    }
}

impl Pins {
    pub(super) fn lock(&self) -> MutexGuard<'_, PinState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that log entry `index` holds `hash` (replacing what it held before).
    pub(super) fn pin(&self, index: u64, hash: Sha256Digest) {
        self.lock().add(index, hash);
    }

    /// Forgets the entries after `index` (all of them for `None`): a log truncation.
    pub(super) fn unpin_after(&self, index: Option<u64>) {
        let mut s = self.lock();
        let from = index.map_or(0, |i| i.saturating_add(1));
        let gone: Vec<u64> = s.by_index.range(from..).map(|(i, _)| *i).collect();
        s.drop_indexes(gone);
    }

    /// Forgets what entry `index` holds (its append stored the payload in the log after all).
    pub(super) fn unpin(&self, index: u64) {
        self.lock().drop_indexes(vec![index]);
    }

    /// Forgets the entries up to and including `index`: a log purge.
    pub(super) fn unpin_through(&self, index: u64) {
        let mut s = self.lock();
        let gone: Vec<u64> = s.by_index.range(..=index).map(|(i, _)| *i).collect();
        s.drop_indexes(gone);
    }

    /// The chunks no entry holds any more, reported once each.
    pub(super) fn take_unpinned(&self) -> Vec<Sha256Digest> {
        std::mem::take(&mut self.lock().unpinned)
            .into_iter()
            .collect()
    }

    /// Whether [`Pins::take_unpinned`] has chunks to report.
    pub(super) fn has_unpinned(&self) -> bool {
        !self.lock().unpinned.is_empty()
    }

    /// How many log entries hold a chunk.
    pub(super) fn len(&self) -> usize {
        self.lock().by_index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_entries_and_reports_a_chunk_once_its_last_entry_goes() {
        let pins = Pins::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        pins.pin(1, a);
        pins.pin(2, b);
        pins.pin(3, a);
        assert_eq!(pins.len(), 3);
        pins.unpin_through(1);
        assert!(pins.lock().is_pinned(&a), "entry 3 still holds a");
        assert!(pins.take_unpinned().is_empty());
        pins.unpin_after(Some(2));
        assert!(!pins.lock().is_pinned(&a));
        assert!(pins.lock().is_pinned(&b));
        assert_eq!(pins.take_unpinned(), vec![a]);
        assert!(pins.take_unpinned().is_empty(), "reported once");
        // Pinned again before anyone took it: not reported.
        pins.unpin_after(None);
        pins.pin(5, b);
        assert!(pins.take_unpinned().is_empty());
        // An index appended again after a truncation replaces what it held.
        pins.pin(5, a);
        assert_eq!(pins.take_unpinned(), vec![b]);
        assert_eq!(pins.len(), 1);
    }
}
