//! The state machine: records, buckets, objects, uploads, chunk reference counts and the
//! request-id deduplication table, kept in sled and changed only by [`StateStore::apply`].
//!
//! Invariants:
//! - Apply is deterministic: the same entries give the same state on every replica. It
//!   never reads the clock or a random source; time comes inside the command.
//! - Each applied entry is one atomic sled batch on one tree, and that batch also stores
//!   the caller's raft meta (last applied log id, membership). sled is not the durability
//!   root: after a crash it recovers some consistent prefix of batches, the raft meta says
//!   which, and the Raft layer re-applies the rest from its log. Apply is therefore safe to
//!   repeat for entries whose effects on chunk files were already made.
//! - A chunk file is written (fsynced) before any state refers to it, and removed only
//!   after the batch that dropped its last reference has been applied.
//!
//! The current state tree is named by a pointer in sled's default tree, so that a snapshot
//! can be loaded into a fresh tree and switched to with one insert (see `snapshot.rs`).

mod apply;
mod codec;
mod migrate;
#[cfg(test)]
pub(crate) mod tests;
mod views;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use trove_types::Sha256;
use trove_types::{ChunkRef, Command, CommandResult, Sha256Digest};

use crate::chunks::ChunkStore;
use crate::error::{Result, StorageError};
use crate::fsutil::{create_dir_durable, read_format_file, write_format_file};

pub(crate) use codec::{
    APPLIED_KEY, META, decode, encode, refcount_hash, to_portable, to_stored, validate_entry,
};
pub use migrate::rewrite_in_format_1;
pub(crate) use views::View;

/// Kind name written into the state directory's `FORMAT` file.
const FORMAT_KIND: &str = "trove-state";
/// Layout version of the state directory (sled subdirectory, tree pointer, key tables):
/// 2 = every value at rest carries a CRC32C (`codec`); 1 = values without it.
const FORMAT_VERSION: u32 = 2;
/// The oldest format [`StateStore::open`] migrates from (see `migrate.rs`).
const OLDEST_FORMAT_VERSION: u32 = 1;
/// sled's default page cache is 1 GiB per database; several nodes share a test machine, and
/// the hot set (metadata, not blob bytes) is small.
const SLED_CACHE_BYTES: u64 = 128 * 1024 * 1024;
/// Key in sled's default tree naming the current state tree's generation (u64 BE).
pub(crate) const TREE_POINTER_KEY: &[u8] = b"trove/state_tree";
/// State trees are named `state.<generation>`; any other generation is leftover.
const TREE_NAME_PREFIX: &str = "state.";

/// A record's stored value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordValue {
    pub value: Bytes,
    /// Log index of the write that produced this value.
    pub revision: u64,
    /// Log index of the write that created the record (kept across overwrites).
    pub create_revision: u64,
}

/// One entry of a record listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSummary {
    pub key: String,
    pub revision: u64,
    /// Size of the value in bytes.
    pub size: u64,
}

/// A bucket's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketMeta {
    pub create_revision: u64,
}

/// An object's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    /// SHA-256 of the whole object.
    pub sha256: Sha256Digest,
    /// The chunks, in order; their lengths sum to `size`.
    pub chunks: Vec<ChunkRef>,
    /// Log index of the commit that made this object visible.
    pub revision: u64,
}

/// Sizes of the state's tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub records: u64,
    pub buckets: u64,
    pub objects: u64,
    /// Uploads in progress.
    pub uploads: u64,
    /// Distinct chunks referenced by objects or uploads.
    pub chunks: u64,
}

impl StateCounts {
    /// Counts one state key in its table (keys of other tables are not counted).
    pub(crate) fn count_key(&mut self, key: &[u8]) {
        let table = if key.starts_with(codec::RECORD) {
            &mut self.records
        } else if key.starts_with(codec::BUCKET) {
            &mut self.buckets
        } else if key.starts_with(codec::OBJECT) {
            &mut self.objects
        } else if key.starts_with(codec::UPLOAD) {
            &mut self.uploads
        } else if key.starts_with(codec::REFCOUNT) {
            &mut self.chunks
        } else {
            return;
        };
        *table += 1;
    }
}

/// A page of a record listing and the key the next page starts at, if any.
pub type RecordPage = (Vec<RecordSummary>, Option<String>);
/// A page of an object listing (key, manifest) and the key the next page starts at.
pub type ObjectPage = (Vec<(String, ObjectMeta)>, Option<String>);
/// A page of raw rows: (user key, stored value), next key.
type RawPage = (Vec<(String, sled::IVec)>, Option<String>);

/// The state machine. `Send + Sync`; share it behind an `Arc`.
pub struct StateStore {
    pub(crate) db: sled::Db,
    /// The current state tree. Readers hold the read guard for the whole read (never a
    /// clone of the tree), because installing a snapshot drops the old tree and sled
    /// does not support using a dropped tree.
    pub(crate) tree: RwLock<sled::Tree>,
    /// Taken by apply, export and install: a point-in-time view for export, and a total
    /// order of every change. Holds the current tree's generation.
    pub(crate) apply_lock: Mutex<u64>,
    pub(crate) chunks: ChunkStore,
    pub(crate) dir: PathBuf,
    /// Open point-in-time views of exports that run while apply goes on.
    pub(crate) views: views::Views,
}

// Shared between apply, the server's readers and snapshot transfer threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<StateStore>();
    send_sync::<ChunkStore>();
};

pub(crate) fn tree_name(generation: u64) -> String {
    format!("{TREE_NAME_PREFIX}{generation}")
}

impl StateStore {
    /// Checks, without modifying anything, that `dir` (if it exists) holds state of a
    /// format this binary understands or migrates (`UnsupportedVersion` otherwise).
    /// sled's own files are covered by this version: sled writes on open, so it is only
    /// opened after.
    pub fn check_format(dir: &Path) -> Result<()> {
        if dir.is_dir() {
            read_format_file(dir, FORMAT_KIND, OLDEST_FORMAT_VERSION, FORMAT_VERSION)?;
        }
        Ok(())
    }

    /// Opens (creating if needed) the state in `dir`. Refuses an unknown format version
    /// without modifying anything; migrates an older one (`migrate.rs`: an interrupted
    /// migration starts over here and completes); drops a state tree left half-loaded by
    /// an interrupted snapshot install.
    pub fn open(dir: &Path, chunks: ChunkStore) -> Result<StateStore> {
        let found = if dir.is_dir() {
            read_format_file(dir, FORMAT_KIND, OLDEST_FORMAT_VERSION, FORMAT_VERSION)?
        } else {
            None
        };
        create_dir_durable(dir)?;
        match found {
            None => write_format_file(dir, FORMAT_KIND, FORMAT_VERSION)?,
            Some(v) if v < FORMAT_VERSION => migrate::begin(dir, v)?,
            Some(_) => {}
        }
        let db = sled::Config::new()
            .path(dir.join("sled"))
            .cache_capacity(SLED_CACHE_BYTES)
            .open()?;
        let mut generation = match migrate::tree_generation(&db, dir)? {
            Some(g) => g,
            None => {
                // A new state: its (empty) tree is in the current format from the start.
                let mut b = sled::Batch::default();
                b.insert(TREE_POINTER_KEY, &0u64.to_be_bytes());
                b.insert(migrate::VALUES_FORMAT_KEY, &FORMAT_VERSION.to_be_bytes());
                db.apply_batch(b)?;
                db.flush()?;
                0
            }
        };
        migrate::drop_stale_trees(&db, generation)?;
        if migrate::values_format(&db, dir)? < FORMAT_VERSION {
            generation = migrate::to_format_2(&db, dir, generation)?;
        }
        migrate::finish(dir)?;
        let current = tree_name(generation);
        let tree = db.open_tree(&current)?;
        Ok(StateStore {
            db,
            tree: RwLock::new(tree),
            apply_lock: Mutex::new(generation),
            chunks,
            dir: dir.to_path_buf(),
            views: views::Views::default(),
        })
    }

    /// Opens the state in `dir` like [`Self::open`], then reads and checks every stored
    /// value ([`Self::verify`]). Damage sled reports (its own checksums), a value that
    /// does not decode, or a panic inside sled while reading are all `Corrupt` (naming
    /// `dir`): the state is derived, so the caller can move it aside and rebuild it from
    /// the snapshot and the log. Anything else (a lock held by another process, an IO
    /// error, an unknown format version) is returned as it is.
    pub fn open_verified(dir: &Path, chunks: ChunkStore) -> Result<StateStore> {
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let store = StateStore::open(dir, chunks)?;
            store.verify()?;
            Ok(store)
        }));
        let damaged = |detail: String| StorageError::corrupt(dir, detail);
        match opened {
            Ok(Err(StorageError::Sled(sled::Error::Corruption { at, .. }))) => {
                Err(damaged(format!("sled reports corruption (at {at:?})")))
            }
            Ok(Err(StorageError::Sled(e @ sled::Error::ReportableBug(_)))) => {
                Err(damaged(format!("sled could not read its files: {e}")))
            }
            Ok(Err(e @ StorageError::Codec(_))) => Err(damaged(e.to_string())),
            Ok(Err(StorageError::Corrupt { detail, .. })) => Err(damaged(detail)),
            Ok(other) => other,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(damaged(format!(
                    "sled panicked while reading its files: {what}"
                )))
            }
        }
    }

    /// Reads every key and value of the state and checks that each belongs to a known
    /// table and decodes (sled checks its own checksums on the way). Returns how many
    /// entries it checked.
    pub fn verify(&self) -> Result<u64> {
        self.with_tree(|t| {
            let mut n = 0u64;
            for kv in t.iter() {
                let (k, v) = kv?;
                let checked = if !codec::is_stored_form(&v) {
                    Err(StorageError::Codec(
                        "a value is not in the at-rest form of this format".into(),
                    ))
                } else if k.starts_with(META) {
                    if k.as_ref() == APPLIED_KEY {
                        decode::<Vec<u8>>(&v, "raft meta").map(drop)
                    } else {
                        Ok(())
                    }
                } else {
                    validate_entry(&k, &v)
                };
                checked.map_err(|e| {
                    StorageError::Codec(format!("{e} (key {})", String::from_utf8_lossy(&k)))
                })?;
                n += 1;
            }
            Ok(n)
        })
    }

    /// The directory the state lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The chunk store whose files the state refers to.
    pub fn chunks(&self) -> &ChunkStore {
        &self.chunks
    }

    pub(crate) fn lock_apply(&self) -> MutexGuard<'_, u64> {
        // A panic while holding the lock cannot leave sled half-changed (batches are
        // atomic), so the state behind a poisoned lock is still consistent.
        self.apply_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the current state tree, holding it against a snapshot install.
    pub(crate) fn with_tree<R>(&self, f: impl FnOnce(&sled::Tree) -> Result<R>) -> Result<R> {
        let guard = self.tree.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// The opaque raft meta stored with the last applied entry (`None`: nothing applied).
    pub fn raft_meta(&self) -> Result<Option<Vec<u8>>> {
        self.with_tree(|t| match t.get(APPLIED_KEY)? {
            Some(v) => Ok(Some(decode::<Vec<u8>>(&v, "raft meta")?)),
            None => Ok(None),
        })
    }

    /// Applies one log entry at `index` (the revision of its writes). `cmd` is `None` for
    /// entries without application data. `raft_meta` is stored in the same atomic batch
    /// as the entry's effects. Returns the command's result, `None` for no command.
    ///
    /// An `Err` means the node could not apply (IO, corrupt state): the caller must stop,
    /// not skip the entry. Nothing in the state changed in that case (a chunk file may
    /// have been written; it is unreferenced until the entry is applied again).
    pub fn apply(
        &self,
        index: u64,
        cmd: Option<&Command>,
        raft_meta: &[u8],
    ) -> Result<Option<CommandResult>> {
        Ok(self
            .apply_entries(&[(index, cmd)], raft_meta)?
            .pop()
            .flatten())
    }

    /// Applies consecutive entries `(index, command)` in one atomic batch, with
    /// `raft_meta` as it is after the last of them; returns each entry's result. The
    /// state afterwards is the same as after applying them one by one with [`Self::apply`].
    pub fn apply_entries(
        &self,
        entries: &[(u64, Option<&Command>)],
        raft_meta: &[u8],
    ) -> Result<Vec<Option<CommandResult>>> {
        let _guard = self.lock_apply();
        self.apply_locked(entries, raft_meta)
    }

    /// The work of [`Self::apply_entries`], for a caller holding the apply lock.
    fn apply_locked(
        &self,
        entries: &[(u64, Option<&Command>)],
        raft_meta: &[u8],
    ) -> Result<Vec<Option<CommandResult>>> {
        self.with_tree(|tree| {
            apply::apply_entries(tree, &self.chunks, &self.views, entries, raft_meta)
        })
    }

    /// [`Self::apply_entries`], but only if it can run at once and briefly, for a caller on
    /// an async task: `None` (nothing applied) while another holder has the apply lock
    /// (an export closing, the start-up sweep of unreferenced chunks) or while chunk files
    /// wait to be removed by the next apply.
    pub fn try_apply_entries_now(
        &self,
        entries: &[(u64, Option<&Command>)],
        raft_meta: &[u8],
    ) -> Option<Result<Vec<Option<CommandResult>>>> {
        let _guard = match self.apply_lock.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        if self.chunks.has_unpinned() {
            return None;
        }
        Some(self.apply_locked(entries, raft_meta))
    }

    /// Asks sled to write its buffers to disk (sled's flush is not a full fsync; the Raft
    /// log, not sled, is the durability root).
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// A record, if it exists.
    pub fn get_record(&self, key: &str) -> Result<Option<RecordValue>> {
        self.with_tree(|t| match t.get(codec::record_key(key))? {
            Some(v) => {
                let r: codec::RecordV1 = decode(&v, "record")?;
                Ok(Some(RecordValue {
                    value: r.value,
                    revision: r.revision,
                    create_revision: r.create_revision,
                }))
            }
            None => Ok(None),
        })
    }

    /// Records whose key starts with `prefix`, from `start_at` (inclusive) in key order, at
    /// most `limit` of them (0 = the default; clamped to the maximum). The second value is
    /// the key to start the next page at, if there are more.
    pub fn list_records(&self, prefix: &str, start_at: &str, limit: u32) -> Result<RecordPage> {
        let (rows, next) = self.list_page(codec::RECORD, prefix, start_at, limit)?;
        let mut out = Vec::with_capacity(rows.len());
        for (key, value) in rows {
            let r: codec::RecordV1 = decode(&value, "record")?;
            out.push(RecordSummary {
                key,
                revision: r.revision,
                size: r.value.len() as u64,
            });
        }
        Ok((out, next))
    }

    /// A bucket, if it exists.
    pub fn get_bucket(&self, bucket: &str) -> Result<Option<BucketMeta>> {
        self.with_tree(|t| match t.get(codec::bucket_key(bucket))? {
            Some(v) => {
                let b: codec::BucketV1 = decode(&v, "bucket")?;
                Ok(Some(BucketMeta {
                    create_revision: b.create_revision,
                }))
            }
            None => Ok(None),
        })
    }

    /// Every bucket, in name order.
    pub fn list_buckets(&self) -> Result<Vec<(String, BucketMeta)>> {
        self.with_tree(|t| {
            let mut out = Vec::new();
            for kv in t.scan_prefix(codec::BUCKET) {
                let (k, v) = kv?;
                let name = key_suffix_string(&k, codec::BUCKET.len())?;
                let b: codec::BucketV1 = decode(&v, "bucket")?;
                out.push((
                    name,
                    BucketMeta {
                        create_revision: b.create_revision,
                    },
                ));
            }
            Ok(out)
        })
    }

    /// An object's manifest, if it exists.
    pub fn get_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
        self.with_tree(|t| match t.get(codec::object_key(bucket, key))? {
            Some(v) => Ok(Some(object_meta(decode(&v, "object")?))),
            None => Ok(None),
        })
    }

    /// Objects of `bucket` whose key starts with `prefix`, paged like
    /// [`StateStore::list_records`].
    pub fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        start_at: &str,
        limit: u32,
    ) -> Result<ObjectPage> {
        let (rows, next) =
            self.list_page(&codec::object_prefix(bucket), prefix, start_at, limit)?;
        let mut out = Vec::with_capacity(rows.len());
        for (key, value) in rows {
            out.push((key, object_meta(decode(&value, "object")?)));
        }
        Ok((out, next))
    }

    /// One page of `table` keys whose user part starts with `prefix`, from `start_at`, as
    /// (user key, value).
    fn list_page(&self, table: &[u8], prefix: &str, start_at: &str, limit: u32) -> Result<RawPage> {
        let limit = trove_types::validate::list_limit(limit) as usize;
        let full_prefix = [table, prefix.as_bytes()].concat();
        let start = [table, start_at.as_bytes()].concat();
        let from = std::cmp::max(start, full_prefix.clone());
        self.with_tree(|t| {
            let mut rows = Vec::new();
            let mut next = None;
            for kv in t.range(from..) {
                let (k, v) = kv?;
                if !k.starts_with(&full_prefix) {
                    break;
                }
                let key = key_suffix_string(&k, table.len())?;
                if rows.len() == limit {
                    next = Some(key);
                    break;
                }
                rows.push((key, v));
            }
            Ok((rows, next))
        })
    }

    /// Sizes of the state's tables (walks them).
    pub fn counts(&self) -> Result<StateCounts> {
        self.with_tree(|t| {
            let count = |p: &[u8]| -> Result<u64> {
                let mut n = 0u64;
                for kv in t.scan_prefix(p) {
                    kv?;
                    n += 1;
                }
                Ok(n)
            };
            Ok(StateCounts {
                records: count(codec::RECORD)?,
                buckets: count(codec::BUCKET)?,
                objects: count(codec::OBJECT)?,
                uploads: count(codec::UPLOAD)?,
                chunks: count(codec::REFCOUNT)?,
            })
        })
    }

    /// SHA-256 (hex) of all logical state: every table except the raft meta. Replicas
    /// that applied the same entries have equal digests.
    pub fn digest(&self) -> Result<String> {
        self.with_tree(|t| {
            let mut h = Sha256::new();
            for kv in t.iter() {
                let (k, v) = kv?;
                if k.starts_with(META) {
                    continue;
                }
                // The portable form, so that the digest does not depend on the format at
                // rest. Length-prefixed so that different splits of the same bytes differ.
                let v = to_portable(&v)?;
                h.update((k.len() as u64).to_be_bytes());
                h.update(&k);
                h.update((v.len() as u64).to_be_bytes());
                h.update(&v);
            }
            Ok(hex::encode(h.finalize()))
        })
    }

    /// Up to `limit` chunks the state refers to (objects and uploads), in hash order,
    /// starting after `after`: the scrubber pages through them with bounded memory.
    pub fn referenced_chunks(
        &self,
        after: Option<&Sha256Digest>,
        limit: usize,
    ) -> Result<Vec<Sha256Digest>> {
        self.with_tree(|t| {
            let start = match after {
                // The smallest key greater than `c/<after>`.
                Some(h) => {
                    let mut k = codec::refcount_key(h);
                    k.push(0);
                    k
                }
                None => codec::REFCOUNT.to_vec(),
            };
            let mut out = Vec::new();
            for kv in t.range(start..) {
                let (k, _) = kv?;
                let Some(hash) = codec::refcount_hash(&k) else {
                    break;
                };
                out.push(hash);
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// How many distinct chunks the state refers to.
    pub fn referenced_chunk_count(&self) -> Result<u64> {
        self.with_tree(|t| {
            let mut n = 0u64;
            for kv in t.scan_prefix(codec::REFCOUNT) {
                kv?;
                n += 1;
            }
            Ok(n)
        })
    }

    /// Whether an object or upload refers to the chunk `hash`.
    pub fn is_chunk_referenced(&self, hash: &Sha256Digest) -> Result<bool> {
        self.with_tree(|t| Ok(t.contains_key(codec::refcount_key(hash))?))
    }

    /// Removes chunk files that no object or upload refers to and no raft log entry holds
    /// by name ([`ChunkStore::pin`]), returning how many. They appear when a crash falls
    /// between applying a batch and removing the files it released, between writing a
    /// chunk entry's file and its log record, while a release waits for the log to drop
    /// the entry, or when a snapshot install fails half-way.
    pub fn remove_unreferenced_chunks(&self) -> Result<u64> {
        // Listed without holding up apply (a large store has many files); each file is
        // then checked under the lock.
        let listed = self.chunks.list()?;
        let _guard = self.lock_apply();
        self.remove_unreferenced_among(listed)
    }

    pub(crate) fn remove_unreferenced_chunks_locked(&self) -> Result<u64> {
        self.remove_unreferenced_among(self.chunks.list()?)
    }

    /// The part of `remove_unreferenced_chunks` that needs the apply lock. Files an open
    /// export may still link wait for it to close, like any released chunk.
    fn remove_unreferenced_among(&self, listed: Vec<Sha256Digest>) -> Result<u64> {
        let mut orphans = Vec::new();
        self.with_tree(|t| {
            for hash in listed {
                // A chunk a log entry holds by name is that entry's payload.
                if !t.contains_key(codec::refcount_key(&hash))? && !self.chunks.is_pinned(&hash) {
                    orphans.push(hash);
                }
            }
            Ok(())
        })?;
        let n = orphans.len() as u64;
        let now = self.views.release_or_defer(orphans);
        self.chunks.remove_many(&now)?;
        Ok(n)
    }
}

fn object_meta(o: codec::ObjectV1) -> ObjectMeta {
    ObjectMeta {
        size: o.size,
        sha256: o.sha256,
        chunks: o.chunks.into_iter().map(ChunkRef::from).collect(),
        revision: o.revision,
    }
}

/// The UTF-8 text of `key` after its first `skip` bytes.
fn key_suffix_string(key: &[u8], skip: usize) -> Result<String> {
    let tail = key.get(skip..).unwrap_or_default();
    String::from_utf8(tail.to_vec())
        .map_err(|_| StorageError::Codec(format!("state key {key:?} is not UTF-8")))
}
