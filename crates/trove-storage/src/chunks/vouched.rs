//! The chunk buffers a [`ChunkStore`](super::ChunkStore) need not hash again: named by
//! this process, or vouched for as received intact from the node that named them.
//!
//! Each entry holds a reference to its buffer, so the memory cannot be freed and reused
//! while it is here: a `put` of the same address and length is a put of the same bytes.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use trove_types::Sha256Digest;
use trove_types::limits::NAMED_CHUNKS_KEPT;

/// At most [`NAMED_CHUNKS_KEPT`] buffers with their hashes, newest last.
#[derive(Default)]
pub(super) struct Vouched {
    buffers: Mutex<VecDeque<(Sha256Digest, Bytes)>>,
    /// How many `put`s hashed their data (tests check the shortcut is taken).
    #[cfg(test)]
    pub(super) hashed_by_put: std::sync::atomic::AtomicU64,
}

impl Vouched {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Sha256Digest, Bytes)>> {
        // Whole entries are pushed and removed, so a poisoned lock is still consistent.
        self.buffers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers `data` as the bytes named `hash`, forgetting the oldest if full.
    pub(super) fn add(&self, hash: Sha256Digest, data: &Bytes) {
        let mut buffers = self.lock();
        if buffers.len() >= NAMED_CHUNKS_KEPT {
            buffers.pop_front();
        }
        buffers.push_back((hash, data.clone()));
    }

    /// Whether `data` is a buffer remembered as `hash`, forgetting it if so and `forget`.
    pub(super) fn take(&self, hash: &Sha256Digest, data: &[u8], forget: bool) -> bool {
        let found = {
            let mut buffers = self.lock();
            let at = buffers.iter().position(|(h, b)| {
                h == hash && std::ptr::eq(b.as_ptr(), data.as_ptr()) && b.len() == data.len()
            });
            if forget {
                at.and_then(|i| buffers.remove(i)).map(|_| ())
            } else {
                at.map(|_| ())
            }
        };
        #[cfg(test)]
        if found.is_none() {
            self.hashed_by_put
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        found.is_some()
    }

    /// How many buffers are remembered.
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}
