//! Point-in-time snapshots of the state as self-contained directories: export, offline
//! verification, and crash-atomic install.
//!
//! A snapshot directory holds:
//! - `state.bin`: a 12-byte header (`TROVSNAP`, format version u32 BE), then frames
//!   `[len u32 BE][crc32c(payload) u32 BE][payload]` whose postcard payload is first the
//!   raft meta, then every state key/value in key order, then a 48-byte trailer
//!   (`TROVSEND`, frame count u64 BE, SHA-256 of all frame bytes).
//! - `chunks/<64 hex>`: every chunk the state refers to, hard-linked from the chunk store.
//!
//! Nothing outside the directory is needed to read it (it is also what is streamed to
//! another node, file by file). Files are read frame by frame, so a snapshot is never held
//! in memory whole.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use trove_types::Sha256;
use trove_types::Sha256Digest;

use crate::chunks::read_verified_file;
use crate::error::{Result, StorageError};
use crate::fsutil::{create_dir_durable, sync_dir};
use crate::state::{
    APPLIED_KEY, META, StateCounts, StateStore, TREE_POINTER_KEY, View, encode, refcount_hash,
    to_portable, to_stored, tree_name, validate_entry,
};

/// The state file inside a snapshot directory.
pub const STATE_FILE: &str = "state.bin";
/// The chunk directory inside a snapshot directory.
pub const CHUNKS_DIR: &str = "chunks";

const MAGIC: &[u8; 8] = b"TROVSNAP";
const TRAILER_MAGIC: &[u8; 8] = b"TROVSEND";
const VERSION: u32 = 1;
const HEADER_LEN: u64 = 12;
const FRAME_HEADER_LEN: u64 = 8;
const TRAILER_LEN: u64 = 8 + 8 + 32;
/// Entries written to the new tree per sled batch during install: large enough to be
/// fast, small enough to bound memory.
const INSTALL_BATCH_ENTRIES: usize = 1024;

/// What a snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub dir: PathBuf,
    /// The caller's raft meta given at export.
    pub raft_meta: Vec<u8>,
    /// State key/value entries in `state.bin`.
    pub entries: u64,
    /// Bytes of `state.bin` plus all chunk files.
    pub bytes: u64,
    /// Sizes of the state's tables in the snapshot (`counts.chunks`: the chunk files in
    /// `chunks/`).
    pub counts: StateCounts,
}

/// A frame's payload as written.
#[derive(Serialize)]
enum FrameRef<'a> {
    Meta { raft_meta: &'a [u8] },
    Entry { key: &'a [u8], value: &'a [u8] },
}

/// A frame's payload as read (same encoding as [`FrameRef`]).
#[derive(Deserialize)]
enum Frame {
    Meta { raft_meta: Vec<u8> },
    Entry { key: Vec<u8>, value: Vec<u8> },
}

struct FrameWriter {
    out: BufWriter<File>,
    path: PathBuf,
    hasher: Sha256,
    frames: u64,
}

impl FrameWriter {
    fn create(path: &Path) -> Result<Self> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| StorageError::io(path, e))?;
        let mut w = FrameWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            hasher: Sha256::new(),
            frames: 0,
        };
        w.write_raw(MAGIC)?;
        w.write_raw(&VERSION.to_be_bytes())?;
        Ok(w)
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| StorageError::io(&self.path, e))
    }

    fn frame(&mut self, frame: &FrameRef<'_>) -> Result<()> {
        let payload = postcard::to_allocvec(frame)
            .map_err(|e| StorageError::Codec(format!("encoding a snapshot frame: {e}")))?;
        let len = u32::try_from(payload.len()).map_err(|_| {
            StorageError::Invalid(format!("snapshot frame of {} bytes", payload.len()))
        })?;
        let mut head = [0u8; FRAME_HEADER_LEN as usize];
        head[..4].copy_from_slice(&len.to_be_bytes());
        head[4..].copy_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
        self.hasher.update(head);
        self.hasher.update(&payload);
        self.write_raw(&head)?;
        self.write_raw(&payload)?;
        self.frames += 1;
        Ok(())
    }

    /// Writes the trailer and fsyncs; returns the file's length.
    fn finish(mut self) -> Result<u64> {
        let digest: [u8; 32] = self.hasher.clone().finalize();
        self.write_raw(TRAILER_MAGIC)?;
        self.write_raw(&self.frames.to_be_bytes())?;
        self.write_raw(&digest)?;
        let path = self.path.clone();
        let file = self
            .out
            .into_inner()
            .map_err(|e| StorageError::io(&path, e.into_error()))?;
        file.sync_all().map_err(|e| StorageError::io(&path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io(&path, e))?
            .len();
        Ok(len)
    }
}

struct FrameReader {
    input: BufReader<File>,
    path: PathBuf,
    pos: u64,
    frames_end: u64,
    hasher: Sha256,
    frames: u64,
}

impl FrameReader {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| StorageError::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io(path, e))?
            .len();
        if len < HEADER_LEN + TRAILER_LEN {
            return Err(StorageError::corrupt(path, format!("only {len} bytes")));
        }
        let mut r = FrameReader {
            input: BufReader::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            pos: HEADER_LEN,
            frames_end: len - TRAILER_LEN,
            hasher: Sha256::new(),
            frames: 0,
        };
        let mut header = [0u8; HEADER_LEN as usize];
        r.read_exact(&mut header)?;
        if &header[..8] != MAGIC {
            return Err(StorageError::corrupt(
                path,
                "not a trove snapshot (bad magic)",
            ));
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&header[8..]);
        let version = u32::from_be_bytes(version);
        if version != VERSION {
            return Err(StorageError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                supported: VERSION,
            });
        }
        Ok(r)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.input
            .read_exact(buf)
            .map_err(|e| StorageError::io(&self.path, e))
    }

    fn next(&mut self) -> Result<Option<Frame>> {
        if self.pos == self.frames_end {
            return Ok(None);
        }
        let remaining = self.frames_end - self.pos;
        if remaining < FRAME_HEADER_LEN {
            return Err(self.corrupt("truncated frame header"));
        }
        let mut head = [0u8; FRAME_HEADER_LEN as usize];
        self.read_exact(&mut head)?;
        let mut word = [0u8; 4];
        word.copy_from_slice(&head[..4]);
        let len = u64::from(u32::from_be_bytes(word));
        word.copy_from_slice(&head[4..]);
        let crc = u32::from_be_bytes(word);
        // Checked against the file size before allocating: a damaged length must not
        // make us allocate gigabytes.
        if len > remaining - FRAME_HEADER_LEN {
            return Err(self.corrupt(&format!("frame of {len} bytes runs past the end")));
        }
        let mut payload = vec![0u8; len as usize];
        self.read_exact(&mut payload)?;
        if crc32c::crc32c(&payload) != crc {
            return Err(self.corrupt("frame checksum mismatch"));
        }
        self.hasher.update(head);
        self.hasher.update(&payload);
        let (frame, tail) = postcard::take_from_bytes::<Frame>(&payload)
            .map_err(|e| self.corrupt(&format!("undecodable frame: {e}")))?;
        if !tail.is_empty() {
            return Err(self.corrupt("trailing bytes in a frame"));
        }
        self.pos += FRAME_HEADER_LEN + len;
        self.frames += 1;
        Ok(Some(frame))
    }

    /// Checks the trailer against the frames read.
    fn finish(mut self) -> Result<()> {
        let mut trailer = [0u8; TRAILER_LEN as usize];
        self.read_exact(&mut trailer)?;
        if &trailer[..8] != TRAILER_MAGIC {
            return Err(self.corrupt("bad trailer magic"));
        }
        let mut count = [0u8; 8];
        count.copy_from_slice(&trailer[8..16]);
        let count = u64::from_be_bytes(count);
        if count != self.frames {
            return Err(self.corrupt(&format!(
                "trailer counts {count} frames, the file holds {}",
                self.frames
            )));
        }
        let digest: [u8; 32] = self.hasher.clone().finalize();
        if trailer[16..] != digest {
            return Err(self.corrupt("SHA-256 of the frames does not match the trailer"));
        }
        Ok(())
    }

    fn corrupt(&self, detail: &str) -> StorageError {
        StorageError::corrupt(&self.path, format!("{detail} (at byte {})", self.pos))
    }
}

/// Reads and checks a snapshot's `state.bin`, calling `on_entry` for every state entry in
/// order. Returns (raft meta, entry count, file length). Every value is decoded, so a
/// snapshot this binary cannot read is refused here, before anything is installed.
fn read_state_file(
    dir: &Path,
    mut on_entry: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<(Vec<u8>, u64, u64)> {
    let path = dir.join(STATE_FILE);
    let mut reader = FrameReader::open(&path)?;
    let file_len = reader.frames_end + TRAILER_LEN;
    let raft_meta = match reader.next()? {
        Some(Frame::Meta { raft_meta }) => raft_meta,
        _ => return Err(reader.corrupt("the first frame is not the raft meta")),
    };
    let mut entries = 0u64;
    let mut last_key: Option<Vec<u8>> = None;
    while let Some(frame) = reader.next()? {
        let Frame::Entry { key, value } = frame else {
            return Err(reader.corrupt("a second raft meta frame"));
        };
        // Strict order rules out duplicates, which would make the count lie.
        if last_key.as_ref().is_some_and(|last| *last >= key) {
            return Err(reader.corrupt("entries out of key order"));
        }
        if key.starts_with(META) {
            return Err(reader.corrupt("raft bookkeeping key among the state entries"));
        }
        validate_entry(&key, &value).map_err(|e| reader.corrupt(&e.to_string()))?;
        on_entry(&key, &value)?;
        entries += 1;
        last_key = Some(key);
    }
    reader.finish()?;
    Ok((raft_meta, entries, file_len))
}

fn chunk_file(dir: &Path, hash: &[u8; 32]) -> PathBuf {
    dir.join(CHUNKS_DIR).join(hex::encode(hash))
}

/// Verifies a snapshot directory without installing it: every frame's checksum, the
/// trailer, every value's format, and every referenced chunk file's presence and hash.
pub fn verify_snapshot(dir: &Path) -> Result<SnapshotInfo> {
    let mut chunk_bytes = 0u64;
    let mut counts = StateCounts::default();
    let (raft_meta, entries, state_bytes) = read_state_file(dir, |key, _| {
        counts.count_key(key);
        if let Some(hash) = refcount_hash(key) {
            let path = chunk_file(dir, &hash);
            let data = read_verified_file(&path, &hash).map_err(|e| match e {
                StorageError::NotFound(_) => StorageError::corrupt(
                    &path,
                    "the snapshot is incomplete: a referenced chunk file is missing",
                ),
                other => other,
            })?;
            chunk_bytes += data.len() as u64;
        }
        Ok(())
    })?;
    Ok(SnapshotInfo {
        dir: dir.to_path_buf(),
        raft_meta,
        entries,
        bytes: state_bytes + chunk_bytes,
        counts,
    })
}

/// Checks `state.bin`'s header only, reading 12 bytes and modifying nothing: a snapshot
/// written by a newer format is `UnsupportedVersion`. A missing, short or foreign file is
/// not an error here (it is an invalid snapshot, which [`verify_snapshot`] reports).
pub fn check_version(dir: &Path) -> Result<()> {
    let path = dir.join(STATE_FILE);
    let mut header = [0u8; HEADER_LEN as usize];
    let read = File::open(&path).and_then(|mut f| f.read_exact(&mut header));
    match read {
        Ok(()) => {}
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            return Ok(());
        }
        Err(e) => return Err(StorageError::io(&path, e)),
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&header[8..]);
    let found = u32::from_be_bytes(version);
    if &header[..8] == MAGIC && found != VERSION {
        return Err(StorageError::UnsupportedVersion {
            path,
            found,
            supported: VERSION,
        });
    }
    Ok(())
}

/// Reads and verifies a snapshot's `state.bin` alone (every frame, the trailer, every
/// value's format), calling `on_chunk` with the hash of every chunk the state refers to,
/// in ascending order. Returns (raft meta, entry count). For checking a snapshot whose
/// chunk files are not (all) on disk, such as a backup being verified as it streams.
pub fn scan_state_file(
    dir: &Path,
    mut on_chunk: impl FnMut(&Sha256Digest) -> Result<()>,
) -> Result<(Vec<u8>, u64)> {
    let (raft_meta, entries, _) = read_state_file(dir, |key, _| match refcount_hash(key) {
        Some(hash) => on_chunk(&hash),
        None => Ok(()),
    })?;
    Ok((raft_meta, entries))
}

/// `<dir>.tmp`: where a snapshot is built before it is renamed into place.
fn tmp_dir_for(dir: &Path) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .ok_or_else(|| StorageError::Invalid(format!("{} has no file name", dir.display())))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    Ok(dir.with_file_name(tmp_name))
}

/// An export in progress: a point-in-time view of the state, opened by
/// [`StateStore::begin_export`], written by [`Export::write`] while apply goes on (see
/// `state/views.rs` for how apply keeps the view true to its point).
pub struct Export<'a> {
    store: &'a StateStore,
    view: Arc<View>,
    applied_raft_meta: Option<Vec<u8>>,
}

impl StateStore {
    /// Opens a point-in-time view of the state: what [`Export::write`] writes is the state
    /// as it is now, however many entries are applied meanwhile. Apply waits only for
    /// this call, not for the export.
    pub fn begin_export(&self) -> Result<Export<'_>> {
        let _guard = self.lock_apply();
        let applied_raft_meta = self.raft_meta()?;
        let view = self.views.open();
        Ok(Export {
            store: self,
            view,
            applied_raft_meta,
        })
    }

    /// Writes a point-in-time snapshot of the state into `dir` (which must not exist),
    /// storing `raft_meta` as its raft meta: [`Self::begin_export`] then [`Export::write`],
    /// failing on a missing chunk file.
    pub fn export_snapshot(&self, dir: &Path, raft_meta: &[u8]) -> Result<SnapshotInfo> {
        self.begin_export()?
            .write(dir, raft_meta, &mut |h| Err(StorageError::MissingChunk(*h)))
    }
}

impl Export<'_> {
    /// The raft meta stored with the last entry applied at the export's point (`None`:
    /// nothing applied).
    pub fn applied_raft_meta(&self) -> Option<&[u8]> {
        self.applied_raft_meta.as_deref()
    }

    /// Writes the snapshot into `dir` (which must not exist): built in `<dir>.tmp`,
    /// fsynced, then renamed into place, with `raft_meta` (the caller's snapshot meta) as
    /// its raft meta. A chunk file missing from the chunk store is handed to
    /// `fetch_missing` (which puts it back, or fails) and linked again.
    pub fn write(
        self,
        dir: &Path,
        raft_meta: &[u8],
        fetch_missing: &mut dyn FnMut(&Sha256Digest) -> Result<()>,
    ) -> Result<SnapshotInfo> {
        self.write_observed(dir, raft_meta, fetch_missing, &mut |_| {})
    }

    /// [`Self::write`], calling `observe` with each key after it is written (tests use it
    /// to apply entries in the middle of an export).
    pub(crate) fn write_observed(
        self,
        dir: &Path,
        raft_meta: &[u8],
        fetch_missing: &mut dyn FnMut(&Sha256Digest) -> Result<()>,
        observe: &mut dyn FnMut(&[u8]),
    ) -> Result<SnapshotInfo> {
        if dir.exists() {
            return Err(StorageError::Invalid(format!(
                "snapshot directory {} already exists",
                dir.display()
            )));
        }
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        create_dir_durable(parent)?;
        let tmp = tmp_dir_for(dir)?;
        if tmp.exists() {
            // Left by an export interrupted by a crash.
            fs::remove_dir_all(&tmp).map_err(|e| StorageError::io(&tmp, e))?;
        }
        let built = self.write_files(&tmp, raft_meta, fetch_missing, observe);
        let (entries, bytes, counts) = match built {
            Ok(stats) => stats,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        fs::rename(&tmp, dir).map_err(|e| StorageError::io(dir, e))?;
        sync_dir(parent)?;
        Ok(SnapshotInfo {
            dir: dir.to_path_buf(),
            raft_meta: raft_meta.to_vec(),
            entries,
            bytes,
            counts,
        })
    }

    /// Writes `state.bin` and the chunk links into `tmp`; returns (entries, bytes, table
    /// sizes).
    fn write_files(
        &self,
        tmp: &Path,
        raft_meta: &[u8],
        fetch_missing: &mut dyn FnMut(&Sha256Digest) -> Result<()>,
        observe: &mut dyn FnMut(&[u8]),
    ) -> Result<(u64, u64, StateCounts)> {
        let chunks_dir = tmp.join(CHUNKS_DIR);
        fs::create_dir(tmp).map_err(|e| StorageError::io(tmp, e))?;
        fs::create_dir(&chunks_dir).map_err(|e| StorageError::io(&chunks_dir, e))?;
        let mut w = FrameWriter::create(&tmp.join(STATE_FILE))?;
        w.frame(&FrameRef::Meta { raft_meta })?;
        let (mut entries, mut chunk_bytes) = (0u64, 0u64);
        let mut counts = StateCounts::default();
        let mut emit = |key: &[u8], value: &[u8]| -> Result<()> {
            // Snapshots carry values in their portable form (checksum verified here).
            let value = to_portable(value).map_err(|e| {
                StorageError::Codec(format!("{e} (key {})", String::from_utf8_lossy(key)))
            })?;
            w.frame(&FrameRef::Entry { key, value: &value })?;
            entries += 1;
            counts.count_key(key);
            if let Some(hash) = refcount_hash(key) {
                let dest = chunk_file(tmp, &hash);
                match self.store.chunks.link_to(&hash, &dest) {
                    Err(StorageError::MissingChunk(h)) => {
                        fetch_missing(&h)?;
                        self.store.chunks.link_to(&hash, &dest)?;
                    }
                    other => other?,
                }
                let len = fs::metadata(&dest)
                    .map_err(|e| StorageError::io(&dest, e))?
                    .len();
                chunk_bytes += len;
            }
            observe(key);
            Ok(())
        };
        // The live tree, walked while apply goes on; the view gives back each key's value
        // at the export's point. An install never runs meanwhile (the Raft layer keeps
        // them apart), and the tree guard would hold it off anyway.
        self.store.with_tree(|tree| {
            for kv in tree.iter() {
                let (key, value) = kv?;
                if key.starts_with(META) {
                    continue;
                }
                for (k, v) in self.view.step(&key, value) {
                    emit(&k, &v)?;
                }
            }
            Ok(())
        })?;
        for (k, v) in self.view.finish() {
            emit(&k, &v)?;
        }
        let state_bytes = w.finish()?;
        // Linked chunk files are already durable (fsynced when stored); their new names
        // become durable with the directory.
        sync_dir(&chunks_dir)?;
        sync_dir(tmp)?;
        Ok((entries, state_bytes + chunk_bytes, counts))
    }
}

impl Drop for Export<'_> {
    /// Closes the view; chunk files released while it was open are removed now if no
    /// other view is open and nothing refers to them again.
    fn drop(&mut self) {
        let _guard = self.store.lock_apply();
        let waiting = self.store.views.close(&self.view);
        if waiting.is_empty() {
            return;
        }
        // If the check fails, keep the file: an unreferenced file is harmless.
        let unreferenced: Vec<Sha256Digest> = waiting
            .into_iter()
            .filter(|h| matches!(self.store.is_chunk_referenced(h), Ok(false)))
            .collect();
        if let Err(e) = self.store.chunks.remove_many(&unreferenced) {
            tracing::error!(
                error = %e,
                "removing chunk files released during an export failed; they stay as unreferenced files"
            );
        }
    }
}

impl StateStore {
    /// Replaces the whole state with the snapshot in `dir` and returns its raft meta.
    ///
    /// The snapshot is loaded into a fresh sled tree (verifying every frame, value and
    /// chunk on the way); only when all of it checked out does one insert switch the tree
    /// pointer to it. A crash before the switch leaves the old state (and `open` drops the
    /// half-loaded tree); a crash after it leaves the new one. Chunk files no longer
    /// referenced afterwards are removed.
    pub fn install_snapshot(&self, dir: &Path) -> Result<Vec<u8>> {
        let mut generation = self.lock_apply();
        let old_name = tree_name(*generation);
        let new_generation = generation
            .checked_add(1)
            .ok_or_else(|| StorageError::Invalid("state tree generations exhausted".into()))?;
        let new_name = tree_name(new_generation);
        // A leftover from an install that failed in this process.
        self.db.drop_tree(&new_name)?;
        let new_tree = self.db.open_tree(&new_name)?;

        let loaded = (|| {
            let mut batch = sled::Batch::default();
            let mut in_batch = 0usize;
            let (raft_meta, _, _) = read_state_file(dir, |key, value| {
                if let Some(hash) = refcount_hash(key) {
                    // Verifies the chunk's hash; the tree is not live yet, so a failure
                    // here leaves the current state untouched.
                    self.chunks.adopt(&hash, &chunk_file(dir, &hash))?;
                }
                batch.insert(key, to_stored(value)?);
                in_batch += 1;
                if in_batch == INSTALL_BATCH_ENTRIES {
                    new_tree.apply_batch(std::mem::take(&mut batch))?;
                    in_batch = 0;
                }
                Ok(())
            })?;
            batch.insert(APPLIED_KEY, encode(&raft_meta)?);
            new_tree.apply_batch(batch)?;
            // The new tree must be on disk before the pointer that names it.
            self.db.flush()?;
            Ok::<_, StorageError>(raft_meta)
        })();
        let raft_meta = match loaded {
            Ok(m) => m,
            Err(e) => {
                drop(new_tree);
                if let Err(drop_err) = self.db.drop_tree(&new_name) {
                    tracing::warn!(error = %drop_err, "dropping a half-loaded state tree failed; open will retry");
                }
                // Chunks adopted before the failure are referenced by nothing.
                if let Err(gc_err) = self.remove_unreferenced_chunks_locked() {
                    tracing::warn!(error = %gc_err, "removing chunks of a failed snapshot install failed");
                }
                return Err(e);
            }
        };

        self.db
            .insert(TREE_POINTER_KEY, &new_generation.to_be_bytes())?;
        self.db.flush()?;
        *generation = new_generation;
        let old_tree = {
            let mut current = self.tree.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *current, new_tree)
        };
        drop(old_tree);
        // The install has happened; failures to clean up are repaired later (open drops
        // stale trees, and unreferenced chunks can be collected again).
        if let Err(e) = self.db.drop_tree(&old_name) {
            tracing::warn!(error = %e, tree = %old_name, "dropping the replaced state tree failed; open will retry");
        }
        if let Err(e) = self.remove_unreferenced_chunks_locked() {
            tracing::warn!(error = %e, "removing chunks released by a snapshot install failed");
        }
        Ok(raft_meta)
    }
}

#[cfg(test)]
mod tests;
