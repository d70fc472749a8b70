//! Point-in-time views of the state for exports (snapshots, backups) that do not stop
//! apply.
//!
//! sled has no snapshots, and an export walks the whole state (tens of milliseconds per
//! 10,000 keys). Holding the apply lock for that long stalled every write behind it (the
//! 220 ms p99 of record puts under load). Instead, an export registers a view under the
//! apply lock (that instant is its point, `I`) and then walks the live tree while apply
//! goes on. Apply keeps each view true to `I`:
//!
//! - Before a batch is written, every key it changes that the view's walk has not passed
//!   yet (greater than the view's cursor) and that has no pre-image yet gets one: its
//!   value in the tree before the batch, which is its value at `I` (or "absent"), because
//!   every earlier change after `I` would already have recorded one.
//! - The walk, at each key `k` the tree yields, first emits the pre-images of keys below
//!   `k` it will never meet (deleted since `I`), then `k` with its pre-image if it has
//!   one (skipped if it was absent at `I`), else the value read; and moves the cursor to
//!   `k`, all under the view's lock. Keys at or below the cursor are never captured
//!   again: their value at `I` has been emitted already. After the walk, the remaining
//!   pre-images are emitted. Keys come out in strict order, as the snapshot format wants.
//! - Chunk files released while any view is open are removed only when the last view
//!   closes (and then only if nothing refers to them again), so every chunk referenced at
//!   `I` can still be linked.
//!
//! Memory: one pre-image per distinct key changed during an export, ahead of its walk.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use trove_types::Sha256Digest;

use super::codec::META;
use crate::error::Result;

/// The open views and the chunk files whose removal waits for them.
#[derive(Default)]
pub(crate) struct Views {
    inner: Mutex<ViewsInner>,
}

#[derive(Default)]
struct ViewsInner {
    open: Vec<Arc<View>>,
    deferred: BTreeSet<Sha256Digest>,
}

/// One export's view: how far its walk got and the values at its point of keys changed
/// since (ahead of the walk).
#[derive(Default)]
pub(crate) struct View {
    state: Mutex<ViewState>,
}

#[derive(Default)]
struct ViewState {
    /// The last key the walk emitted or passed; `None` before the first.
    cursor: Option<Vec<u8>>,
    /// The walk is over: nothing more is captured.
    done: bool,
    /// Key → its value at the view's point (`None`: absent then).
    preimages: BTreeMap<Vec<u8>, Option<sled::IVec>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent even if it panics half-way
    // (inserts and removes of whole entries), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Views {
    /// Opens a view at the current state. Call with the apply lock held.
    pub(crate) fn open(&self) -> Arc<View> {
        let view = Arc::new(View::default());
        lock(&self.inner).open.push(view.clone());
        view
    }

    /// Closes `view`; returns the chunk files whose removal waited for it, once no view
    /// is open any more. Call with the apply lock held (the caller checks they are still
    /// unreferenced before removing them).
    pub(crate) fn close(&self, view: &Arc<View>) -> Vec<Sha256Digest> {
        let mut inner = lock(&self.inner);
        inner.open.retain(|v| !Arc::ptr_eq(v, view));
        if inner.open.is_empty() {
            std::mem::take(&mut inner.deferred).into_iter().collect()
        } else {
            Vec::new()
        }
    }

    /// Records the pre-images of `keys` (the keys a batch is about to change) in every
    /// open view that needs them. Call with the apply lock held, before the batch.
    pub(crate) fn capture<'k>(
        &self,
        tree: &sled::Tree,
        keys: impl Iterator<Item = &'k Vec<u8>>,
    ) -> Result<()> {
        let open = lock(&self.inner).open.clone();
        if open.is_empty() {
            return Ok(());
        }
        let keys: Vec<&Vec<u8>> = keys.filter(|k| !k.starts_with(META)).collect();
        for view in open {
            let mut st = lock(&view.state);
            if st.done {
                continue;
            }
            for key in &keys {
                let passed = st
                    .cursor
                    .as_ref()
                    .is_some_and(|c| key.as_slice() <= c.as_slice());
                if !passed && !st.preimages.contains_key(key.as_slice()) {
                    let before = tree.get(key)?;
                    st.preimages.insert((*key).clone(), before);
                }
            }
        }
        Ok(())
    }

    /// Chunk files released by a batch: those to remove now (no view open) or none (their
    /// removal waits for the last view to close).
    pub(crate) fn release_or_defer(&self, released: Vec<Sha256Digest>) -> Vec<Sha256Digest> {
        let mut inner = lock(&self.inner);
        if inner.open.is_empty() {
            released
        } else {
            inner.deferred.extend(released);
            Vec::new()
        }
    }
}

impl View {
    /// The walk met `key` with `value` (read from the live tree): returns, in key order,
    /// what to emit for everything up to and including `key` as it was at the view's
    /// point.
    pub(crate) fn step(&self, key: &[u8], value: sled::IVec) -> Vec<(Vec<u8>, sled::IVec)> {
        let mut st = lock(&self.state);
        // Pre-images below `key`: keys the walk will not meet (deleted since the point).
        let at_and_after = st.preimages.split_off(key);
        let below = std::mem::replace(&mut st.preimages, at_and_after);
        let mut out: Vec<(Vec<u8>, sled::IVec)> = below
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        match st.preimages.remove(key) {
            Some(Some(before)) => out.push((key.to_vec(), before)),
            Some(None) => {} // created since the point
            None => out.push((key.to_vec(), value)),
        }
        st.cursor = Some(key.to_vec());
        out
    }

    /// The walk is over: returns, in key order, the remaining keys that existed at the
    /// view's point (deleted since, beyond the last key the walk met).
    pub(crate) fn finish(&self) -> Vec<(Vec<u8>, sled::IVec)> {
        let mut st = lock(&self.state);
        st.done = true;
        std::mem::take(&mut st.preimages)
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect()
    }
}
