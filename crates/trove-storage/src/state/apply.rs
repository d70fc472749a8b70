//! Applying log entries: each operation's checks and effects, gathered into one sled
//! batch per group of entries (one batch per entry costs sled a synchronous write of its
//! IO buffer, which capped the apply rate near 1,000 entries per second).
//!
//! An entry sees exactly the state it would see if every earlier entry had been applied
//! on its own: point reads and prefix scans read the tree overlaid with the writes of the
//! earlier entries of the group (never its own pending writes, as before grouping), so the
//! result does not depend on how entries are grouped, which differs between replicas.
//!
//! Everything here is a pure function of the current state and the entry (no clock, no
//! randomness), so every replica computes the same batch. Refusals (`OpError`) are results,
//! not failures: they are recorded for deduplication and change nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use trove_types::limits::{REQUEST_ID_RETENTION_MS, UPLOAD_EXPIRY_MS};
use trove_types::{ChunkRef, Command, CommandResult, Op, OpError, OpOk, Sha256Digest};

use super::codec::{self, ChunkRefV1, DedupV1, ObjectV1, RecordV1, UploadV1};
use super::views::Views;
use crate::chunks::ChunkStore;
use crate::error::{Result, StorageError};

/// Dedup entries pruned on each applied command, so that the table stays bounded between
/// `Expire` commands; more than one per command so pruning outpaces new entries.
pub(super) const PRUNE_PER_APPLY: usize = 4;

/// Pending writes: `None` deletes the key.
type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// What pruning carries from one entry of a group to the next: the cursor and the floor.
type Pruning = (Option<Vec<u8>>, ExpiryFloor);

/// The pending writes of one entry over the committed tree and the writes of the earlier
/// entries of its group: point reads see earlier writes of the same entry too (an op may
/// touch one refcount several times).
pub(super) struct Tx<'a> {
    tree: &'a sled::Tree,
    earlier: &'a Writes,
    writes: Writes,
    /// Chunks whose reference count reached zero: their files go after the batch.
    released: BTreeSet<Sha256Digest>,
    /// The group's pruning cursor: every request-id expiry key up to this one is deleted
    /// by the group's writes (see [`prune_dedup`]).
    pruned_upto: Option<Vec<u8>>,
    /// What the group knows of the expiry keys after the cursor (see [`ExpiryFloor`]).
    expiry_floor: ExpiryFloor,
}

/// A lower bound on the request-id expiry keys after the group's pruning cursor, as the
/// tree and the group's writes so far hold them. Expiry keys sort by time, so when the
/// bound is not due, no key after the cursor is, and pruning can skip its scan of the
/// tree: the result is the scan's (it would delete nothing). A follower applies about 18
/// entries per group, and each entry's scan (a sled range iterator) was about 4% of its
/// CPU under record writes.
#[derive(Clone, Debug, Default)]
enum ExpiryFloor {
    /// Not known: the next pruning scans.
    #[default]
    Unknown,
    /// No expiry key after the cursor.
    Empty,
    /// Every expiry key after the cursor is at or after this one, of this time.
    At(Vec<u8>, u64),
}

impl ExpiryFloor {
    /// Whether pruning at `now_ms` would find nothing due.
    fn nothing_due(&self, now_ms: u64) -> bool {
        match self {
            ExpiryFloor::Unknown => false,
            ExpiryFloor::Empty => true,
            ExpiryFloor::At(_, time_ms) => time_ms.saturating_add(REQUEST_ID_RETENTION_MS) > now_ms,
        }
    }

    /// An expiry key written by the group: the bound is at most that key.
    fn written(&mut self, key: &[u8]) {
        let lower = match self {
            ExpiryFloor::Unknown => false,
            ExpiryFloor::Empty => true,
            ExpiryFloor::At(floor, _) => key < floor.as_slice(),
        };
        if lower {
            *self = match codec::parse_expiry_key(key) {
                Some((time_ms, _)) => ExpiryFloor::At(key.to_vec(), time_ms),
                None => ExpiryFloor::Unknown,
            };
        }
    }
}

impl<'a> Tx<'a> {
    fn new(tree: &'a sled::Tree, earlier: &'a Writes, pruning: Pruning) -> Self {
        Tx {
            tree,
            earlier,
            writes: BTreeMap::new(),
            released: BTreeSet::new(),
            pruned_upto: pruning.0,
            expiry_floor: pruning.1,
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.writes.get(key).or_else(|| self.earlier.get(key)) {
            Some(pending) => Ok(pending.clone()),
            None => Ok(self.tree.get(key)?.map(|v| v.to_vec())),
        }
    }

    /// Keys and values starting with `prefix` in key order, as the earlier entries of the
    /// group left them (this entry's own pending writes are not seen, as before grouping).
    fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + use<'a> {
        self.scan_prefix_after(prefix, None)
    }

    /// [`Self::scan_prefix`] from the first key after `after` (a key with the prefix).
    fn scan_prefix_after(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + use<'a> {
        let start = match after {
            Some(k) => Bound::Excluded(k.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        let (in_overlay, in_tree) = (prefix.to_vec(), prefix.to_vec());
        let overlay = self
            .earlier
            .range((start.clone(), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(&in_overlay))
            .map(|(k, v)| (k.clone(), v.clone()));
        let tree = self
            .tree
            .range((start, Bound::<Vec<u8>>::Unbounded))
            .take_while(move |r| match r {
                Ok((k, _)) => k.starts_with(&in_tree),
                Err(_) => true,
            });
        MergedScan {
            tree: tree.peekable(),
            overlay: overlay.peekable(),
        }
    }

    fn get_decoded<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        what: &str,
    ) -> Result<Option<T>> {
        self.get(key)?.map(|v| codec::decode(&v, what)).transpose()
    }

    fn put<T: serde::Serialize>(&mut self, key: Vec<u8>, value: &T) -> Result<()> {
        if key.starts_with(codec::DEDUP_EXPIRY) {
            if self.pruned_upto.as_ref().is_some_and(|upto| key <= *upto) {
                // An expiry key at or before the cursor (a clock that went back): the
                // keys up to the cursor are no longer all deleted.
                self.pruned_upto = None;
            }
            self.expiry_floor.written(&key);
        }
        self.writes.insert(key, Some(codec::encode(value)?));
        Ok(())
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Forgets the op's writes (a refusal must change nothing).
    fn discard(&mut self) {
        self.writes.clear();
        self.released.clear();
    }

    fn incref(&mut self, hash: &Sha256Digest) -> Result<()> {
        let key = codec::refcount_key(hash);
        let n: u64 = self
            .get_decoded(&key, "chunk reference count")?
            .unwrap_or(0);
        self.put(key, &n.saturating_add(1))?;
        self.released.remove(hash);
        Ok(())
    }

    fn decref(&mut self, hash: &Sha256Digest) -> Result<()> {
        let key = codec::refcount_key(hash);
        match self.get_decoded::<u64>(&key, "chunk reference count")? {
            Some(n) if n > 1 => self.put(key, &(n - 1))?,
            Some(_) => {
                self.delete(key);
                self.released.insert(*hash);
            }
            None => {
                // A reference without a count is a bug; keep the file (losing data on a
                // bug is worse than leaking it) and say so.
                tracing::error!(
                    chunk = %hex::encode(hash),
                    "chunk reference released without a reference count"
                );
            }
        }
        Ok(())
    }
}

/// Applies a group of entries to `tree` in one atomic batch, with `raft_meta` (the meta
/// after the last of them); see [`super::StateStore::apply_entries`]. Returns each entry's
/// result, `None` for an entry without a command.
pub(super) fn apply_entries(
    tree: &sled::Tree,
    chunks: &ChunkStore,
    views: &Views,
    entries: &[(u64, Option<&Command>)],
    raft_meta: &[u8],
) -> Result<Vec<Option<CommandResult>>> {
    let mut group = Writes::new();
    let mut maybe_released = BTreeSet::new();
    let mut results = Vec::with_capacity(entries.len());
    let mut pruning = Pruning::default();
    for &(index, cmd) in entries {
        let mut tx = Tx::new(tree, &group, std::mem::take(&mut pruning));
        let result = match cmd {
            Some(cmd) => Some(apply_command(&mut tx, chunks, index, cmd)?),
            None => None,
        };
        let Tx {
            writes,
            released,
            pruned_upto,
            expiry_floor,
            ..
        } = tx;
        pruning = (pruned_upto, expiry_floor);
        group.extend(writes);
        maybe_released.extend(released);
        results.push(result);
    }
    group.insert(
        codec::APPLIED_KEY.to_vec(),
        Some(codec::encode(&raft_meta.to_vec())?),
    );

    let mut batch = sled::Batch::default();
    for (key, value) in group.iter() {
        match value {
            Some(v) => batch.insert(key.as_slice(), v.as_slice()),
            None => batch.remove(key.as_slice()),
        }
    }
    // Exports walking the tree meanwhile keep the values they have not reached yet.
    views.capture(tree, group.keys())?;
    tree.apply_batch(batch)?;

    // Only after the batch: a crash in between leaves an unreferenced file (collected by
    // `remove_unreferenced_chunks`), never a reference to a missing file. A chunk released
    // by one entry and referenced again by a later one of the group keeps its file; while
    // an export is open, removal waits for it (the export may still link the file). A
    // failed removal is not a failed apply: the entries have been applied.
    let mut released: BTreeSet<Sha256Digest> = maybe_released
        .into_iter()
        .filter(|h| matches!(group.get(&codec::refcount_key(h)), Some(None)))
        .collect();
    // Chunks the raft log no longer holds by name (`ChunkStore::take_unpinned`): a
    // truncated entry's file, or one released earlier while its entry was in the log.
    for h in chunks.take_unpinned() {
        if !tree.contains_key(codec::refcount_key(&h))? {
            released.insert(h);
        }
    }
    let released: Vec<Sha256Digest> = released.into_iter().collect();
    let released = views.release_or_defer(released);
    if let Err(e) = chunks.remove_many(&released) {
        tracing::error!(
            error = %e,
            "removing released chunk files failed; they stay as unreferenced files"
        );
    }
    Ok(results)
}

/// A prefix scan of the tree with pending writes laid over it, in key order.
struct MergedScan<T, O>
where
    T: Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    O: Iterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
{
    tree: std::iter::Peekable<T>,
    overlay: std::iter::Peekable<O>,
}

impl<T, O> Iterator for MergedScan<T, O>
where
    T: Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    O: Iterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
{
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let take_overlay = match (self.tree.peek(), self.overlay.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) => {
                    let Some(Err(e)) = self.tree.next() else {
                        unreachable!("peeked an error")
                    };
                    return Some(Err(e.into()));
                }
                (Some(Ok((tk, _))), Some((ok, _))) => {
                    if ok.as_slice() == tk.as_ref() {
                        // The pending write replaces the tree's value.
                        self.tree.next();
                        true
                    } else {
                        ok.as_slice() < tk.as_ref()
                    }
                }
                (None, Some(_)) => true,
                (Some(Ok(_)), None) => false,
            };
            if take_overlay {
                match self.overlay.next() {
                    Some((k, Some(v))) => return Some(Ok((k, v))),
                    _ => continue, // deleted by an earlier entry
                }
            }
            return match self.tree.next() {
                Some(Ok((k, v))) => Some(Ok((k.to_vec(), v.to_vec()))),
                Some(Err(e)) => Some(Err(e.into())),
                None => None,
            };
        }
    }
}

fn apply_command(
    tx: &mut Tx<'_>,
    chunks: &ChunkStore,
    index: u64,
    cmd: &Command,
) -> Result<CommandResult> {
    if let Some(rid) = &cmd.request_id
        && let Some(seen) = tx.get_decoded::<DedupV1>(&codec::dedup_key(rid), "request id")?
    {
        return Ok(seen.result.into());
    }
    let result = execute(tx, chunks, index, cmd)?;
    if result.is_err() {
        tx.discard();
    }
    if !matches!(cmd.op, Op::Expire) {
        // Expire already pruned everything due; pruning again would re-read the tree
        // behind the pending deletes.
        prune_dedup(tx, cmd.time_ms, Some(PRUNE_PER_APPLY))?;
    }
    if let Some(rid) = &cmd.request_id {
        let entry = DedupV1 {
            time_ms: cmd.time_ms,
            result: (&result).into(),
        };
        tx.put(codec::dedup_key(rid), &entry)?;
        tx.put(codec::expiry_key(cmd.time_ms, rid), &())?;
    }
    Ok(result)
}

fn execute(
    tx: &mut Tx<'_>,
    chunks: &ChunkStore,
    index: u64,
    cmd: &Command,
) -> Result<CommandResult> {
    match &cmd.op {
        Op::PutRecord {
            key,
            value,
            expected_revision,
        } => {
            let rkey = codec::record_key(key);
            let current: Option<RecordV1> = tx.get_decoded(&rkey, "record")?;
            let current_rev = current.as_ref().map_or(0, |r| r.revision);
            if let Some(expected) = *expected_revision
                && expected != current_rev
            {
                return Ok(Err(OpError::RevisionMismatch {
                    expected,
                    current: current_rev,
                }));
            }
            let record = RecordV1 {
                revision: index,
                create_revision: current.map_or(index, |r| r.create_revision),
                value: value.clone(),
            };
            tx.put(rkey, &record)?;
            Ok(Ok(OpOk::Revision(index)))
        }
        Op::DeleteRecord {
            key,
            expected_revision,
        } => {
            let rkey = codec::record_key(key);
            let current: Option<RecordV1> = tx.get_decoded(&rkey, "record")?;
            let current_rev = current.as_ref().map_or(0, |r| r.revision);
            if let Some(expected) = *expected_revision
                && expected != current_rev
            {
                return Ok(Err(OpError::RevisionMismatch {
                    expected,
                    current: current_rev,
                }));
            }
            if current.is_none() {
                return Ok(Err(OpError::NotFound(format!("record {key}"))));
            }
            tx.delete(rkey);
            Ok(Ok(OpOk::Revision(index)))
        }
        Op::CreateBucket { bucket } => {
            let bkey = codec::bucket_key(bucket);
            if tx.get(&bkey)?.is_some() {
                return Ok(Err(OpError::AlreadyExists(format!("bucket {bucket}"))));
            }
            tx.put(
                bkey,
                &codec::BucketV1 {
                    create_revision: index,
                },
            )?;
            Ok(Ok(OpOk::Revision(index)))
        }
        Op::DeleteBucket { bucket } => {
            let bkey = codec::bucket_key(bucket);
            if tx.get(&bkey)?.is_none() {
                return Ok(Err(OpError::NotFound(format!("bucket {bucket}"))));
            }
            // Uploads are not tied to a bucket until they commit, so only objects count.
            if let Some(kv) = tx.scan_prefix(&codec::object_prefix(bucket)).next() {
                kv?;
                return Ok(Err(OpError::BucketNotEmpty(bucket.clone())));
            }
            tx.delete(bkey);
            Ok(Ok(OpOk::Revision(index)))
        }
        Op::PutChunk {
            upload_id,
            hash,
            data,
        } => put_chunk(tx, chunks, cmd.time_ms, *upload_id, hash, data),
        Op::CommitObject {
            upload_id,
            bucket,
            key,
            size,
            sha256,
            chunks: manifest,
        } => commit_object(tx, index, *upload_id, bucket, key, *size, sha256, manifest),
        Op::AbortUpload { upload_id } => {
            release_upload(tx, *upload_id)?;
            Ok(Ok(OpOk::Done))
        }
        Op::DeleteObject { bucket, key } => {
            let okey = codec::object_key(bucket, key);
            let Some(old) = tx.get_decoded::<ObjectV1>(&okey, "object")? else {
                return Ok(Err(OpError::NotFound(format!("object {bucket}/{key}"))));
            };
            for c in &old.chunks {
                tx.decref(&c.hash)?;
            }
            tx.delete(okey);
            Ok(Ok(OpOk::Revision(index)))
        }
        Op::Expire => {
            expire_uploads(tx, cmd.time_ms)?;
            prune_dedup(tx, cmd.time_ms, None)?;
            Ok(Ok(OpOk::Done))
        }
    }
}

fn put_chunk(
    tx: &mut Tx<'_>,
    chunks: &ChunkStore,
    time_ms: u64,
    upload_id: u128,
    hash: &Sha256Digest,
    data: &[u8],
) -> Result<CommandResult> {
    let Ok(len) = u32::try_from(data.len()) else {
        return Ok(Err(OpError::BadUpload(format!(
            "chunk of {} bytes is larger than any chunk can be",
            data.len()
        ))));
    };
    // The file must be durable before any state refers to it. The store verifies the
    // hash, so a mismatch is a (deterministic) refusal, not a failure.
    match chunks.put(hash, data) {
        Ok(()) => {}
        Err(StorageError::ChecksumMismatch(m)) => return Ok(Err(OpError::ChecksumMismatch(m))),
        Err(e) => return Err(e),
    }
    let ukey = codec::upload_key(upload_id);
    let mut upload = tx
        .get_decoded::<UploadV1>(&ukey, "upload")?
        .unwrap_or(UploadV1 {
            last_active_ms: time_ms,
            chunk_count: 0,
            total_bytes: 0,
        });
    upload.last_active_ms = upload.last_active_ms.max(time_ms);
    tx.put(
        codec::upload_chunk_key(upload_id, upload.chunk_count),
        &ChunkRefV1 { hash: *hash, len },
    )?;
    upload.chunk_count = upload.chunk_count.saturating_add(1);
    upload.total_bytes = upload.total_bytes.saturating_add(u64::from(len));
    tx.put(ukey, &upload)?;
    tx.incref(hash)?;
    Ok(Ok(OpOk::Done))
}

#[allow(clippy::too_many_arguments)]
fn commit_object(
    tx: &mut Tx<'_>,
    index: u64,
    upload_id: u128,
    bucket: &str,
    key: &str,
    size: u64,
    sha256: &Sha256Digest,
    manifest: &[ChunkRef],
) -> Result<CommandResult> {
    if tx.get(&codec::bucket_key(bucket))?.is_none() {
        return Ok(Err(OpError::NotFound(format!("bucket {bucket}"))));
    }
    let manifest_bytes = manifest
        .iter()
        .fold(0u64, |sum, c| sum.saturating_add(u64::from(c.len)));
    if manifest_bytes != size {
        return Ok(Err(OpError::BadUpload(format!(
            "the manifest's chunks hold {manifest_bytes} bytes but the object size is {size}"
        ))));
    }
    let ukey = codec::upload_key(upload_id);
    match tx.get_decoded::<UploadV1>(&ukey, "upload")? {
        // An empty object needs no upload: no chunk was ever sent.
        None if manifest.is_empty() => {}
        None => {
            return Ok(Err(OpError::BadUpload(format!(
                "upload {upload_id:x} is unknown (expired, aborted or never started)"
            ))));
        }
        Some(upload) => {
            if upload.chunk_count != manifest.len() as u64 {
                return Ok(Err(OpError::BadUpload(format!(
                    "upload {upload_id:x} holds {} chunks but the manifest lists {}",
                    upload.chunk_count,
                    manifest.len()
                ))));
            }
            for (position, expected) in (0u64..).zip(manifest) {
                let stored = upload_chunk(tx, upload_id, position)?;
                if stored != ChunkRefV1::from(*expected) {
                    return Ok(Err(OpError::BadUpload(format!(
                        "chunk {position} of upload {upload_id:x} differs from the manifest"
                    ))));
                }
            }
            // The upload's references become the object's: counts stay as they are.
            for position in 0..upload.chunk_count {
                tx.delete(codec::upload_chunk_key(upload_id, position));
            }
            tx.delete(ukey);
        }
    }
    let okey = codec::object_key(bucket, key);
    if let Some(old) = tx.get_decoded::<ObjectV1>(&okey, "object")? {
        for c in &old.chunks {
            tx.decref(&c.hash)?;
        }
    }
    let object = ObjectV1 {
        revision: index,
        size,
        sha256: *sha256,
        chunks: manifest.iter().copied().map(ChunkRefV1::from).collect(),
    };
    tx.put(okey, &object)?;
    Ok(Ok(OpOk::Object {
        revision: index,
        size,
        sha256: *sha256,
        chunk_count: u32::try_from(manifest.len()).unwrap_or(u32::MAX),
    }))
}

fn upload_chunk(tx: &Tx<'_>, upload_id: u128, position: u64) -> Result<ChunkRefV1> {
    tx.get_decoded(
        &codec::upload_chunk_key(upload_id, position),
        "upload chunk",
    )?
    .ok_or_else(|| {
        StorageError::Codec(format!(
            "upload {upload_id:x} lacks its chunk at position {position}"
        ))
    })
}

/// Drops an upload and its references; nothing to do if it does not exist.
fn release_upload(tx: &mut Tx<'_>, upload_id: u128) -> Result<()> {
    let ukey = codec::upload_key(upload_id);
    let Some(upload) = tx.get_decoded::<UploadV1>(&ukey, "upload")? else {
        return Ok(());
    };
    for position in 0..upload.chunk_count {
        let c = upload_chunk(tx, upload_id, position)?;
        tx.decref(&c.hash)?;
        tx.delete(codec::upload_chunk_key(upload_id, position));
    }
    tx.delete(ukey);
    Ok(())
}

fn expire_uploads(tx: &mut Tx<'_>, now_ms: u64) -> Result<()> {
    let mut expired = Vec::new();
    for kv in tx.scan_prefix(codec::UPLOAD) {
        let (k, v) = kv?;
        let upload: UploadV1 = codec::decode(&v, "upload")?;
        if upload.last_active_ms.saturating_add(UPLOAD_EXPIRY_MS) <= now_ms {
            let id = codec::upload_id_of(&k)
                .ok_or_else(|| StorageError::Codec(format!("malformed upload key {k:?}")))?;
            expired.push(id);
        }
    }
    for id in expired {
        release_upload(tx, id)?;
    }
    Ok(())
}

/// Forgets request ids older than the retention, oldest first, at most `limit` of them.
///
/// The scan starts after the group's cursor, the last expiry key an earlier entry of the
/// group deleted: every key up to it is deleted in the group's writes (they are deleted
/// oldest first, and a key inserted at or before the cursor resets it), so a scan from the
/// start would only skip them. Without the cursor each entry re-walked all the deletions
/// of the entries before it in its group.
///
/// The scan is skipped when the group's [`ExpiryFloor`] shows nothing is due; otherwise
/// it leaves the floor at the first key it kept (or `Empty` when it ran out of keys).
fn prune_dedup(tx: &mut Tx<'_>, now_ms: u64, limit: Option<usize>) -> Result<()> {
    if tx.expiry_floor.nothing_due(now_ms) {
        return Ok(());
    }
    let scan = tx.scan_prefix_after(codec::DEDUP_EXPIRY, tx.pruned_upto.as_deref());
    let mut floor = ExpiryFloor::Empty;
    for (pruned, kv) in scan.enumerate() {
        let (k, _) = kv?;
        if limit.is_some_and(|l| pruned >= l) {
            // The first key kept: due or not, a bound on the keys after the cursor.
            floor = match codec::parse_expiry_key(&k) {
                Some((time_ms, _)) => ExpiryFloor::At(k, time_ms),
                None => ExpiryFloor::Unknown,
            };
            break;
        }
        let (time_ms, qkey) = codec::parse_expiry_key(&k)
            .ok_or_else(|| StorageError::Codec(format!("malformed expiry key {k:?}")))?;
        if time_ms.saturating_add(REQUEST_ID_RETENTION_MS) > now_ms {
            floor = ExpiryFloor::At(k, time_ms);
            break;
        }
        tx.delete(k.clone());
        tx.delete(qkey);
        tx.pruned_upto = Some(k);
    }
    tx.expiry_floor = floor;
    Ok(())
}
