//! Content-addressed chunk files: the bytes of objects, one file per chunk, named by the
//! SHA-256 of its contents.
//!
//! Layout under the store's directory:
//! - `FORMAT`: `trove-chunks 2`. Version 2 means a chunk file may be the payload of a raft
//!   log entry (see [`pins`]): a release that knows only version 1 would remove such a
//!   file as unreferenced, so it refuses the directory. Version 1 (same files) is taken
//!   and rewritten as 2 by [`ChunkStore::open`]; anything else is refused before anything
//!   is touched.
//! - `<first 2 hex>/<64 hex>`: a chunk's raw bytes (the name is the checksum).
//! - `tmp/`: files being written; anything left here after a crash is garbage and is
//!   removed by [`ChunkStore::open`].
//! - `quarantine/`: chunk files that failed verification, kept for inspection and never
//!   served again.
//! - `trash/`: removed chunk files waiting to be deleted. [`ChunkStore::remove_many`]
//!   only renames a file here (and fsyncs the directories); a background thread deletes
//!   it. Deleting frees the file's blocks, which can take milliseconds per file (a
//!   filesystem mounted with `discard` trims them synchronously, inside `unlink`), and
//!   removal runs on the apply path whenever an object is replaced or deleted. Emptied at
//!   open.
//!
//! A chunk file is never modified in place: it is written under a temp name, fsynced,
//! renamed, and its directory fsynced. That is what makes hard links (snapshots) safe.
//!
//! [`ChunkStore::put`] checks that the bytes hash to their name before writing them,
//! except for a buffer the store was told about moments before: one this process named
//! itself with [`ChunkStore::name_chunk`] (the leader names each chunk as it arrives, then
//! applies the very same buffer: the log hands apply the entry it was given, not a copy),
//! or one [`ChunkStore::vouch_for`] reported as received intact, under the sender's
//! checksum, from the leader that named it. The store keeps a reference to each such
//! buffer until it is put, so the memory cannot be freed and reused: the same address and
//! length is the same bytes, and hashing them again would only repeat the answer. Any
//! other buffer (an entry read back from the log file, a repair's fetched copy) is hashed.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use trove_types::Sha256;
use trove_types::Sha256Digest;

use crate::error::{Result, StorageError};
use crate::fsutil::{create_dir_durable, read_format_file, sync_dir, write_format_file};

mod pins;
mod vouched;
use pins::Pins;
use vouched::Vouched;

/// Kind name written into the `FORMAT` file.
const FORMAT_KIND: &str = "trove-chunks";
/// The on-disk format this binary writes (see the module docs).
const FORMAT_VERSION: u32 = 2;
/// The oldest format it reads (the files are the same; `open` rewrites the version).
const OLDEST_FORMAT_VERSION: u32 = 1;
const TMP_DIR: &str = "tmp";
const QUARANTINE_DIR: &str = "quarantine";
const TRASH_DIR: &str = "trash";
/// Largest file [`ChunkStore::adopt`] accepts: chunks are bounded by the client message
/// limit, so anything larger is not a chunk, and reading it whole could exhaust memory.
const MAX_CHUNK_FILE_BYTES: u64 = trove_types::limits::MAX_CLIENT_MESSAGE_BYTES as u64;

/// A directory of content-addressed chunk files. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct ChunkStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    tmp_dir: PathBuf,
    quarantine_dir: PathBuf,
    trash_dir: PathBuf,
    /// Names of files moved to `trash/` (unique for this store's lifetime; the directory
    /// is empty when it opens).
    trashed: std::sync::atomic::AtomicU64,
    /// Wakes the thread that empties `trash/`; it ends when the store is dropped.
    reaper: std::sync::mpsc::SyncSender<()>,
    /// Serialises renames onto final chunk names with quarantining, so that a concurrent
    /// repair (a fresh `put`) can never be moved into quarantine by a reader that saw the
    /// old, corrupt file.
    rename_lock: Mutex<()>,
    /// Buffers named or vouched for and not yet put.
    vouched: Vouched,
    /// Chunks that raft log entries hold by name (see [`pins`]).
    pins: Pins,
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Sha256Digest {
    Sha256::digest(data)
}

/// Parses a 64-character lowercase hex chunk name.
pub fn parse_hash(name: &str) -> Option<Sha256Digest> {
    if name.len() != 64 || name.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(name, &mut out).ok()?;
    Some(out)
}

impl ChunkStore {
    /// Checks, without modifying anything, that `dir` (if it exists) holds a chunk store
    /// of a format this binary understands (`UnsupportedVersion` otherwise).
    pub fn check_format(dir: &Path) -> Result<()> {
        if dir.is_dir() {
            read_format_file(dir, FORMAT_KIND, OLDEST_FORMAT_VERSION, FORMAT_VERSION)?;
        }
        Ok(())
    }

    /// Opens (creating if needed) the chunk store in `dir`. Refuses an unknown format
    /// version without modifying anything; removes temp files left by a crash.
    pub fn open(dir: &Path) -> Result<ChunkStore> {
        // Check before creating or removing anything: a binary that does not understand
        // the directory must leave it byte-for-byte untouched.
        let found = if dir.is_dir() {
            read_format_file(dir, FORMAT_KIND, OLDEST_FORMAT_VERSION, FORMAT_VERSION)?
        } else {
            None
        };
        create_dir_durable(dir)?;
        // Before any log entry can name a chunk file (the log store opens after this).
        if found != Some(FORMAT_VERSION) {
            write_format_file(dir, FORMAT_KIND, FORMAT_VERSION)?;
        }
        let trash_dir = dir.join(TRASH_DIR);
        create_dir_durable(&trash_dir)?;
        remove_dir_contents(&trash_dir)?;
        let (reaper, wake) = std::sync::mpsc::sync_channel(1);
        let trash = trash_dir.clone();
        std::thread::Builder::new()
            .name("chunk-reaper".into())
            .spawn(move || {
                while wake.recv().is_ok() {
                    if let Err(e) = remove_dir_contents(&trash) {
                        tracing::warn!(error = %e, "emptying the chunk trash failed; retried on the next removal");
                    }
                }
            })
            .map_err(|e| StorageError::io(&trash_dir, e))?;
        let inner = Inner {
            dir: dir.to_path_buf(),
            tmp_dir: dir.join(TMP_DIR),
            quarantine_dir: dir.join(QUARANTINE_DIR),
            trash_dir,
            trashed: Default::default(),
            reaper,
            rename_lock: Mutex::new(()),
            vouched: Vouched::default(),
            pins: Pins::default(),
        };
        create_dir_durable(&inner.tmp_dir)?;
        create_dir_durable(&inner.quarantine_dir)?;
        remove_dir_contents(&inner.tmp_dir)?;
        // Shard directories are created once here so that `put` never has to check.
        let mut created = false;
        for shard in 0..=255u8 {
            let d = dir.join(hex::encode([shard]));
            if !d.is_dir() {
                fs::create_dir(&d).map_err(|e| StorageError::io(&d, e))?;
                created = true;
            }
        }
        if created {
            sync_dir(dir)?;
        }
        Ok(ChunkStore {
            inner: Arc::new(inner),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Where the chunk `hash` lives: `<dir>/<first 2 hex>/<64 hex>`.
    pub fn path_of(&self, hash: &Sha256Digest) -> PathBuf {
        let name = hex::encode(hash);
        self.inner.dir.join(&name[..2]).join(name)
    }

    /// Stores `data` under `hash` durably. Fails with `ChecksumMismatch` if the data does
    /// not hash to `hash`. A file already present with the right length is kept (a corrupt
    /// one is caught and quarantined by [`ChunkStore::get`], after which `put` rewrites it).
    pub fn put(&self, hash: &Sha256Digest, data: &[u8]) -> Result<()> {
        self.put_checked(hash, data, false)
    }

    /// [`ChunkStore::put`] for the raft log's append (a chunk entry's payload), which
    /// comes before the entry's apply puts the same buffer: a buffer named or vouched for
    /// stays so, and that put does not hash it either. A file already present gets its
    /// directory fsynced: another thread may have just renamed it into place, and the
    /// entry is acknowledged on the strength of it.
    pub fn put_for_log(&self, hash: &Sha256Digest, data: &[u8]) -> Result<()> {
        self.put_checked(hash, data, true)
    }

    fn put_checked(&self, hash: &Sha256Digest, data: &[u8], for_log: bool) -> Result<()> {
        if !self.inner.vouched.take(hash, data, !for_log) {
            let actual = sha256(data);
            if &actual != hash {
                return Err(StorageError::ChecksumMismatch(format!(
                    "chunk {}: its {} bytes hash to {}",
                    hex::encode(hash),
                    data.len(),
                    hex::encode(actual)
                )));
            }
        }
        let path = self.path_of(hash);
        if file_len(&path)? == Some(data.len() as u64) {
            return match path.parent() {
                Some(shard) if for_log => sync_dir(shard),
                _ => Ok(()),
            };
        }
        let tmp = self.tmp_path(hash);
        let written = match write_direct(&tmp, data) {
            Ok(true) => Ok(()),
            // The filesystem refused direct IO: write through the page cache instead.
            Ok(false) => write_buffered(&tmp, data),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.install_tmp(&tmp, &path)
    }

    /// The SHA-256 of `data`, remembered with the buffer itself so that a [`ChunkStore::put`]
    /// of this very buffer (same address and length, not a copy) soon after does not hash
    /// it again. Keeps at most [`NAMED_CHUNKS_KEPT`] buffers (the oldest is forgotten, and
    /// then simply hashed again by its `put`).
    pub fn name_chunk(&self, data: &Bytes) -> Sha256Digest {
        let hash = sha256(data);
        self.vouch_for(hash, data);
        hash
    }

    /// Remembers `data` as the bytes named `hash`, without hashing them, so that a
    /// [`ChunkStore::put`] of this very buffer soon after does not hash them either. Only
    /// for a buffer that arrived under a checksum from the node that named it by hashing
    /// it (a follower's AppendEntries); at most [`NAMED_CHUNKS_KEPT`] are kept.
    pub fn vouch_for(&self, hash: Sha256Digest, data: &Bytes) {
        self.inner.vouched.add(hash, data);
    }

    /// How many buffers named or vouched for are waiting for their `put`.
    pub fn vouched_count(&self) -> usize {
        self.inner.vouched.len()
    }

    /// Reads and verifies the chunk `hash`. A file whose contents do not match its name is
    /// moved to `quarantine/` (so it is never served again) and reported as `Corrupt`; a
    /// missing chunk is `NotFound`.
    pub fn get(&self, hash: &Sha256Digest) -> Result<Bytes> {
        let path = self.path_of(hash);
        let data = read_chunk_file(&path, hash)?;
        if &sha256(&data) == hash {
            return Ok(Bytes::from(data));
        }
        self.quarantine(hash, &path)
    }

    /// `len` bytes of chunk `hash` from `offset` (the whole chunk is read and verified:
    /// chunks are small, and unverified bytes are never served).
    pub fn read_range(&self, hash: &Sha256Digest, offset: u64, len: u64) -> Result<Bytes> {
        let data = self.get(hash)?;
        let end = offset.checked_add(len);
        match end {
            Some(end) if end <= data.len() as u64 => Ok(data.slice(offset as usize..end as usize)),
            _ => Err(StorageError::Invalid(format!(
                "range {offset}+{len} is outside chunk {} of {} bytes",
                hex::encode(hash),
                data.len()
            ))),
        }
    }

    /// Whether a file for `hash` exists (not verified).
    pub fn contains(&self, hash: &Sha256Digest) -> bool {
        self.path_of(hash).is_file()
    }

    /// Removes the chunk `hash` durably; fine if it is already absent.
    pub fn remove(&self, hash: &Sha256Digest) -> Result<()> {
        self.remove_many(std::slice::from_ref(hash))
    }

    /// Removes several chunks durably, fsyncing each affected shard directory once
    /// (deleting a large object removes thousands of chunks; one fsync per file would
    /// dominate). Each file is moved to `trash/` and deleted by a background thread.
    ///
    /// A chunk that a raft log entry holds by name ([`ChunkStore::pin`]) is skipped: the
    /// file is that entry's only copy of its payload. It is reported by
    /// [`ChunkStore::take_unpinned`] once the log drops the entry.
    pub fn remove_many(&self, hashes: &[Sha256Digest]) -> Result<()> {
        let mut shards = BTreeSet::new();
        for hash in hashes {
            // Held across the check and the rename: a `pin` followed by the append's
            // look for the file cannot fall between them. Taken per file, so that a
            // large object's removal does not hold up appends.
            let pins = self.inner.pins.lock();
            if pins.is_pinned(hash) {
                continue;
            }
            let path = self.path_of(hash);
            let seq = self
                .inner
                .trashed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match fs::rename(&path, self.inner.trash_dir.join(seq.to_string())) {
                Ok(()) => {
                    shards.insert(hash[0]);
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(&path, e)),
            }
        }
        if shards.is_empty() {
            return Ok(());
        }
        for shard in shards {
            sync_dir(&self.inner.dir.join(hex::encode([shard])))?;
        }
        sync_dir(&self.inner.trash_dir)?;
        // Full means a wake-up is already pending, which covers these files too.
        let _ = self.inner.reaper.try_send(());
        Ok(())
    }

    /// Records that raft log entry `index` holds chunk `hash` by name: its file is the
    /// entry's payload, so [`ChunkStore::remove_many`] keeps it until the log drops the
    /// entry ([`ChunkStore::unpin_after`], [`ChunkStore::unpin_through`]). Call before
    /// looking for or writing the file ([`ChunkStore::put`]).
    pub fn pin(&self, index: u64, hash: Sha256Digest) {
        self.inner.pins.pin(index, hash);
    }

    /// Entry `index` holds no chunk by name after all (its append kept the payload in
    /// the log record).
    pub fn unpin(&self, index: u64) {
        self.inner.pins.unpin(index);
    }

    /// The log dropped its entries after `index` (all of them for `None`): a truncation.
    pub fn unpin_after(&self, index: Option<u64>) {
        self.inner.pins.unpin_after(index);
    }

    /// The log dropped its entries up to and including `index`: a purge.
    pub fn unpin_through(&self, index: u64) {
        self.inner.pins.unpin_through(index);
    }

    /// Chunks whose last log entry went away since the last call, each reported once.
    /// The caller removes those that nothing in the state refers to.
    pub fn take_unpinned(&self) -> Vec<Sha256Digest> {
        self.inner.pins.take_unpinned()
    }

    /// Whether [`ChunkStore::take_unpinned`] has chunks to report: the next apply will
    /// remove their files.
    pub fn has_unpinned(&self) -> bool {
        self.inner.pins.has_unpinned()
    }

    /// Whether a raft log entry holds `hash` by name.
    pub fn is_pinned(&self, hash: &Sha256Digest) -> bool {
        self.inner.pins.lock().is_pinned(hash)
    }

    /// How many raft log entries hold a chunk by name.
    pub fn pinned_entries(&self) -> usize {
        self.inner.pins.len()
    }

    /// The length of chunk `hash`'s file, if it has one (not verified).
    pub fn file_len(&self, hash: &Sha256Digest) -> Result<Option<u64>> {
        file_len(&self.path_of(hash))
    }

    /// Every chunk hash with a file in the store, sorted (files with other names are
    /// ignored).
    pub fn list(&self) -> Result<Vec<Sha256Digest>> {
        let mut out = Vec::new();
        self.walk(|hash, _len| out.push(hash))?;
        // Directory order depends on the filesystem; callers get a stable order.
        out.sort_unstable();
        Ok(out)
    }

    /// Makes `dest` a hard link to the chunk `hash` (a durable copy if hard links are not
    /// possible, e.g. across filesystems). The caller fsyncs `dest`'s directory.
    pub fn link_to(&self, hash: &Sha256Digest, dest: &Path) -> Result<()> {
        let src = self.path_of(hash);
        match fs::hard_link(&src, dest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound && !src.exists() => {
                Err(StorageError::MissingChunk(*hash))
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(StorageError::io(dest, e)),
            Err(_) => copy_durable(&src, dest),
        }
    }

    /// Verifies that the file `src` holds the chunk `hash` and brings it into the store
    /// durably (hard link, else copy). `src` itself is left as it is; it must never be
    /// modified in place afterwards, since it may now share its inode with the store.
    pub fn adopt(&self, hash: &Sha256Digest, src: &Path) -> Result<()> {
        let data = read_verified_file(src, hash)?;
        let path = self.path_of(hash);
        if file_len(&path)? == Some(data.len() as u64) {
            return Ok(());
        }
        let tmp = self.tmp_path(hash);
        if fs::hard_link(src, &tmp).is_err() {
            // Different filesystem or no hard links: write the bytes we verified.
            return self.put(hash, &data);
        }
        // The link shares src's inode; make sure its data is on disk before it becomes
        // a chunk the state may refer to (src's writer may not have fsynced it).
        let synced = File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| StorageError::io(&tmp, e));
        if let Err(e) = synced {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.install_tmp(&tmp, &path)
    }

    /// Total size of all chunk files, in bytes (walks the directory; for metrics).
    pub fn total_bytes(&self) -> u64 {
        let mut total = 0u64;
        // A failed walk only makes the figure approximate; metrics must not fail.
        let _ = self.walk(|_, len| total = total.saturating_add(len));
        total
    }

    fn tmp_path(&self, hash: &Sha256Digest) -> PathBuf {
        // Unique per call: two threads may write the same chunk at once.
        self.inner.tmp_dir.join(format!(
            "{}.{}.tmp",
            hex::encode(hash),
            uuid::Uuid::new_v4().simple()
        ))
    }

    /// Renames a complete, fsynced temp file onto its final name and fsyncs the shard
    /// directory.
    fn install_tmp(&self, tmp: &Path, path: &Path) -> Result<()> {
        let renamed = {
            let _guard = self
                .inner
                .rename_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            fs::rename(tmp, path)
        };
        if let Err(e) = renamed {
            let _ = fs::remove_file(tmp);
            return Err(StorageError::io(path, e));
        }
        match path.parent() {
            Some(shard) => sync_dir(shard),
            None => Ok(()),
        }
    }

    /// Moves a chunk file that failed verification out of the way, unless a concurrent
    /// `put` has already replaced it with good bytes (then those are returned).
    fn quarantine(&self, hash: &Sha256Digest, path: &Path) -> Result<Bytes> {
        let _guard = self
            .inner
            .rename_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let data = read_chunk_file(path, hash)?;
        let actual = sha256(&data);
        if &actual == hash {
            return Ok(Bytes::from(data));
        }
        let name = hex::encode(hash);
        let dest = self
            .inner
            .quarantine_dir
            .join(format!("{name}.{}", uuid::Uuid::new_v4().simple()));
        fs::rename(path, &dest).map_err(|e| StorageError::io(path, e))?;
        sync_dir(&self.inner.quarantine_dir)?;
        if let Some(shard) = path.parent() {
            sync_dir(shard)?;
        }
        tracing::error!(
            chunk = %name,
            quarantined_as = %dest.display(),
            "chunk file failed verification and was quarantined"
        );
        Err(StorageError::corrupt(
            path,
            format!(
                "chunk {name} holds {} bytes hashing to {}; moved to {}",
                data.len(),
                hex::encode(actual),
                dest.display()
            ),
        ))
    }

    /// Calls `f(hash, len)` for every chunk file.
    fn walk(&self, mut f: impl FnMut(Sha256Digest, u64)) -> Result<()> {
        for shard in 0..=255u8 {
            let shard_hex = hex::encode([shard]);
            let dir = self.inner.dir.join(&shard_hex);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| StorageError::io(&dir, e))?;
                let name = entry.file_name();
                let Some(hash) = name.to_str().and_then(parse_hash) else {
                    continue;
                };
                if hash[0] != shard {
                    continue;
                }
                let len = entry
                    .metadata()
                    .map_err(|e| StorageError::io(entry.path(), e))?
                    .len();
                f(hash, len);
            }
        }
        Ok(())
    }
}

/// Reads a file that should hold the chunk `hash` (from outside the store, e.g. a
/// snapshot) and verifies it: `Corrupt` if it does not match, `NotFound` if absent.
pub fn read_verified_file(path: &Path, hash: &Sha256Digest) -> Result<Vec<u8>> {
    let len = file_len(path)?
        .ok_or_else(|| StorageError::NotFound(format!("chunk file {}", path.display())))?;
    if len > MAX_CHUNK_FILE_BYTES {
        return Err(StorageError::corrupt(
            path,
            format!("{len} bytes is larger than any chunk"),
        ));
    }
    let data = fs::read(path).map_err(|e| StorageError::io(path, e))?;
    let actual = sha256(&data);
    if &actual != hash {
        return Err(StorageError::corrupt(
            path,
            format!(
                "chunk {} has contents hashing to {}",
                hex::encode(hash),
                hex::encode(actual)
            ),
        ));
    }
    Ok(data)
}

/// Reads a chunk file whole, mapping absence to `NotFound`.
fn read_chunk_file(path: &Path, hash: &Sha256Digest) -> Result<Vec<u8>> {
    match fs::read(path) {
        Ok(d) => Ok(d),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(StorageError::NotFound(format!(
            "chunk {}",
            hex::encode(hash)
        ))),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// The length of the file at `path`, or `None` if it does not exist.
fn file_len(path: &Path) -> Result<Option<u64>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Alignment of direct IO: memory address, file offset and length. 4 KiB covers every
/// logical block size up to the page size (512-byte and 4 KiB disks alike).
const DIRECT_ALIGN: usize = 4096;

thread_local! {
    /// Per-thread aligned staging buffer for direct writes (grown to the largest chunk
    /// this thread has written; chunks are at most a few MiB).
    static DIRECT_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes `data` to the new file `path` with `O_DIRECT` and fsyncs it. Chunk bytes are
/// written once and not read again soon, so they skip the page cache: the kernel's copy
/// into it was the largest single cost of object uploads (in a profile of a three-node
/// cluster on one machine, 16% of all CPU), and a direct write of 1 MiB with a sync
/// reaches several times the disk bandwidth of a buffered one.
/// The last partial block is written padded with zeros and the file then cut to its
/// length. Returns `Ok(false)`, with no file left at `path`, where the filesystem does
/// not support direct IO (`EINVAL`: some network and FUSE filesystems).
fn write_direct(path: &Path, data: &[u8]) -> Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| StorageError::io(path, e);
    // Some filesystems refuse `O_DIRECT` at open, after creating the file.
    let refused = || match fs::remove_file(path) {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(e)),
    };
    let mut f = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(EINVAL) => return refused(),
        Err(e) => return Err(io(e)),
    };
    let padded = data.len().div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
    let written = DIRECT_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < padded + DIRECT_ALIGN {
            buf.clear();
            buf.resize(padded + DIRECT_ALIGN, 0);
        }
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
        let block = &mut buf[start..start + padded];
        block[..data.len()].copy_from_slice(data);
        block[data.len()..].fill(0);
        f.write_all(block)
    });
    match written {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(EINVAL) => {
            drop(f);
            return refused();
        }
        Err(e) => return Err(io(e)),
    }
    if padded != data.len() {
        f.set_len(data.len() as u64).map_err(io)?;
    }
    f.sync_all().map_err(io)?;
    Ok(true)
}

/// What a filesystem without direct IO answers to `O_DIRECT`.
const EINVAL: i32 = nix::errno::Errno::EINVAL as i32;

/// Writes `data` to the new file `path` through the page cache and fsyncs it.
fn write_buffered(path: &Path, data: &[u8]) -> Result<()> {
    let io = |e| StorageError::io(path, e);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Copies `src` to a new file `dest` and fsyncs it.
fn copy_durable(src: &Path, dest: &Path) -> Result<()> {
    let mut from = File::open(src).map_err(|e| StorageError::io(src, e))?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| StorageError::io(dest, e))?;
    std::io::copy(&mut from, &mut to).map_err(|e| StorageError::io(dest, e))?;
    to.sync_all().map_err(|e| StorageError::io(dest, e))
}

/// Removes every file in `dir` (temp files of interrupted writes).
fn remove_dir_contents(dir: &Path) -> Result<()> {
    let mut removed = false;
    for entry in fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let path = entry.path();
        let result = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        result.map_err(|e| StorageError::io(&path, e))?;
        removed = true;
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
