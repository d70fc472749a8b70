//! Migrating a state directory from an older format, crash-safely.
//!
//! Format 1 stored values without a checksum of their own; format 2 ends every value with
//! a CRC32C (`codec`). The migration from 1 to 2 runs in [`super::StateStore::open`]:
//!
//! 1. `MIGRATING` is written, then `FORMAT` says 2: from here on a binary that only
//!    knows format 1 refuses the directory (it would misread it after step 3), and this
//!    binary knows a migration may be under way.
//! 2. Every value of the current state tree is copied, converted, into a new tree
//!    (`state.<generation + 1>`), which is flushed. The old tree is not touched.
//! 3. One atomic sled batch switches the tree pointer to the new tree and records the
//!    values' format (`trove/state_format` = 2), and is flushed: the commit point.
//! 4. The old tree is dropped and `MIGRATING` removed.
//!
//! A crash before step 3 leaves the old tree, intact and current; the next start drops the
//! half-built tree and starts the copy over. A crash after it leaves the new tree current;
//! the next start only finishes step 4. Either way the migration completes on restart, and
//! no state is ever half in one format and half in the other.

use std::path::Path;

use super::{FORMAT_KIND, FORMAT_VERSION, TREE_NAME_PREFIX, TREE_POINTER_KEY, codec, tree_name};
use crate::error::{Result, StorageError};
use crate::fsutil::{remove_file_durable, write_file_atomic, write_format_file};

/// Key in sled's default tree: the format of the values in the current state tree,
/// switched together with the tree pointer (absent: format 1).
pub(super) const VALUES_FORMAT_KEY: &[u8] = b"trove/state_format";
/// Present in the state directory while a migration may be under way.
const MIGRATING_FILE: &str = "MIGRATING";
/// Entries copied per sled batch.
const COPY_BATCH_ENTRIES: usize = 1024;

/// Step 1, before sled is opened: marks the migration and bumps `FORMAT`.
pub(super) fn begin(dir: &Path, from: u32) -> Result<()> {
    tracing::warn!(
        dir = %dir.display(), from, to = FORMAT_VERSION,
        "migrating the state to a newer format (every value gets a checksum); if interrupted, it resumes on the next start"
    );
    write_file_atomic(
        &dir.join(MIGRATING_FILE),
        format!("from {from} to {FORMAT_VERSION}\n").as_bytes(),
    )?;
    fail_point("after-marker")?;
    write_format_file(dir, FORMAT_KIND, FORMAT_VERSION)
}

/// The format of the values in the current state tree.
pub(super) fn values_format(db: &sled::Db, dir: &Path) -> Result<u32> {
    match db.get(VALUES_FORMAT_KEY)? {
        None => Ok(1),
        Some(v) => Ok(u32::from_be_bytes(v.as_ref().try_into().map_err(|_| {
            StorageError::corrupt(dir, "state values format is not 4 bytes")
        })?)),
    }
}

/// Drops every state tree but the current one: half-built by an interrupted snapshot
/// install or migration, or replaced and not yet dropped.
pub(super) fn drop_stale_trees(db: &sled::Db, generation: u64) -> Result<()> {
    let current = tree_name(generation);
    for name in db.tree_names() {
        if name.starts_with(TREE_NAME_PREFIX.as_bytes()) && name != current.as_bytes() {
            tracing::info!(
                tree = %String::from_utf8_lossy(&name),
                "dropping a state tree left by an interrupted snapshot install or migration"
            );
            db.drop_tree(&name)?;
        }
    }
    Ok(())
}

/// Steps 2 and 3: copies the current tree (format 1 values) into a new tree in format 2
/// and switches to it. Returns the new generation.
pub(super) fn to_format_2(db: &sled::Db, dir: &Path, generation: u64) -> Result<u64> {
    let next = rewrite_tree(db, dir, generation, codec::to_stored, Some(FORMAT_VERSION))?;
    tracing::info!("state values copied into format {FORMAT_VERSION}");
    Ok(next)
}

/// The current state tree's generation, from the pointer in sled's default tree (`None`:
/// a new state, no pointer yet).
pub(super) fn tree_generation(db: &sled::Db, dir: &Path) -> Result<Option<u64>> {
    match db.get(TREE_POINTER_KEY)? {
        Some(v) => Ok(Some(u64::from_be_bytes(v.as_ref().try_into().map_err(
            |_| StorageError::corrupt(dir, "state tree pointer is not 8 bytes"),
        )?))),
        None => Ok(None),
    }
}

/// Copies the tree of `generation` into a new tree (`generation + 1`), each value
/// converted by `convert`; then, in one atomic sled batch, points the state at the new
/// tree and records the values' format (`None`: removes the record, i.e. format 1); then
/// drops the old tree. The old tree stays current and untouched until the switch.
fn rewrite_tree(
    db: &sled::Db,
    dir: &Path,
    generation: u64,
    convert: fn(&[u8]) -> Result<Vec<u8>>,
    values_format: Option<u32>,
) -> Result<u64> {
    let next = generation
        .checked_add(1)
        .ok_or_else(|| StorageError::Invalid("state tree generations exhausted".into()))?;
    let old = db.open_tree(tree_name(generation))?;
    let new = db.open_tree(tree_name(next))?;
    let mut batch = sled::Batch::default();
    let (mut in_batch, mut copied) = (0usize, 0u64);
    for kv in old.iter() {
        let (key, value) = kv?;
        let converted = convert(&value).map_err(|e| {
            StorageError::corrupt(
                dir,
                format!("cannot convert key {}: {e}", String::from_utf8_lossy(&key)),
            )
        })?;
        batch.insert(key, converted);
        in_batch += 1;
        copied += 1;
        if in_batch == COPY_BATCH_ENTRIES {
            new.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
            if copied == COPY_BATCH_ENTRIES as u64 {
                fail_point("mid-copy")?;
            }
        }
    }
    new.apply_batch(batch)?;
    db.flush()?;
    fail_point("before-switch")?;
    let mut switch = sled::Batch::default();
    switch.insert(TREE_POINTER_KEY, &next.to_be_bytes());
    match values_format {
        Some(v) => switch.insert(VALUES_FORMAT_KEY, &v.to_be_bytes()),
        None => switch.remove(VALUES_FORMAT_KEY),
    }
    db.apply_batch(switch)?;
    db.flush()?;
    fail_point("after-switch")?;
    drop(old);
    db.drop_tree(tree_name(generation))?;
    tracing::debug!(entries = copied, "state tree rewritten");
    Ok(next)
}

/// Step 4's end: removes the marker once the current tree is in the current format.
pub(super) fn finish(dir: &Path) -> Result<()> {
    let marker = dir.join(MIGRATING_FILE);
    if marker.exists() {
        remove_file_durable(&marker)?;
        tracing::warn!(dir = %dir.display(), "state migration to format {FORMAT_VERSION} complete");
    }
    Ok(())
}

/// Rewrites the state in `dir` (not open elsewhere) in format 1, as releases before
/// format 2 wrote it: for upgrade tests, which need a directory of the previous format.
pub fn rewrite_in_format_1(dir: &Path) -> Result<()> {
    let db = sled::Config::new().path(dir.join("sled")).open()?;
    let generation = tree_generation(&db, dir)?
        .ok_or_else(|| StorageError::Invalid(format!("{} holds no state", dir.display())))?;
    rewrite_tree(&db, dir, generation, codec::to_portable, None)?;
    db.flush()?;
    write_format_file(dir, FORMAT_KIND, 1)
}

#[cfg(test)]
thread_local! {
    /// Tests: the migration step at which to stop as if the process had crashed.
    pub(super) static CRASH_AT: std::cell::Cell<Option<&'static str>> =
        const { std::cell::Cell::new(None) };
}

/// A simulated crash at `step` (tests only): the migration stops there, leaving what a
/// crash would leave.
fn fail_point(step: &'static str) -> Result<()> {
    #[cfg(test)]
    if CRASH_AT.with(|c| c.get()) == Some(step) {
        return Err(StorageError::Invalid(format!("simulated crash at {step}")));
    }
    let _ = step;
    Ok(())
}
