//! The segment log: an append-only, checksummed, segmented log of `(index, payload)`
//! records. It is the durability root of Raft (the Raft adapter encodes entries into the
//! payloads), so it verifies every byte it reads and never silently drops a record.
//!
//! # Concurrency
//! All methods take `&self`. A mutex serialises writers (append, truncate, purge); an
//! `RwLock` guards the in-memory index so replication tasks read while appends run.
//! `append` only writes to the page cache; `sync` (group commit, usually from a flusher
//! thread) captures the segments written so far under the writer lock, releases it, and
//! only then fdatasyncs, so appends continue during the flush. After any failed write or
//! fsync the log refuses further writes: a failed fsync must never be retried (the kernel
//! may have dropped the dirty pages), the node has to restart and recover.
//!
//! # On-disk format, version 1
//! A directory of segment files `seg-<first index, 20 zero-padded digits>.log`.
//!
//! Segment header, 24 bytes, little-endian:
//! `magic b"TRVLOG\0\0"` (8) | `format version u32` (4) | `first index u64` (8) |
//! `CRC32C of the previous 20 bytes` (4).
//!
//! Then records back to back, each:
//! `index u64` (8) | `payload length u32` (4) | `CRC32C u32 over index, length and payload` (4)
//! | `payload`. A payload is at most [`MAX_RECORD_PAYLOAD_BYTES`].
//!
//! Indexes are contiguous within a segment (the first equals the header's) and across
//! segments. A segment rolls over once it holds at least `segment_size_bytes`; the old
//! segment is fdatasynced first, so every segment but the last is always fully durable.
//!
//! The last segment may end in zeros: segments are made from a file of zeros written
//! ahead of time, so that appends overwrite allocated blocks and an fdatasync needs no
//! journal commit ([`spare`]). An all-zero record header never verifies, so the zeros
//! hold no record, and a rollover cuts the old segment to its records. The record format
//! is unchanged; a binary that predates this takes the zeros for a torn tail and cuts
//! them off.
//!
//! # Recovery rules (`open`)
//! 1. Every header's version is checked before anything is modified: an unknown version
//!    leaves the directory untouched.
//! 2. Every record's CRC is verified. An invalid record at the end of the last segment with
//!    no valid record after it is a torn write from a crash: it is cut off (truncate + fsync).
//!    Any other damage (bad record in an earlier segment, a bad record followed by a valid
//!    one, bad header, index gap) is `Corrupt`: the node needs repair, we never guess.
//!    [`salvage`] is that repair's mechanical half: it keeps the verified prefix and sets
//!    the rest aside; the Raft layer then keeps the node from voting until a leader has
//!    sent the lost entries again (they may have been acknowledged, even committed).
//!    Note: out-of-order writeback of *unsynced* data could in principle leave a hole before
//!    valid unsynced records; that too is reported as `Corrupt` (costs this node's
//!    availability, never data).
//! 3. A last segment holding no record (crash during rollover) is removed. Zeros after the
//!    last valid record of the last segment are its unused tail, not a torn write: kept.
//! 4. Every remaining segment is fdatasynced: records that survived a process crash in the
//!    page cache become durable before anyone relies on them.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::IoSlice;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

use crate::error::{Result, StorageError};
use crate::fsutil::{Closer, create_dir_durable, sync_dir};

mod check;
mod format;
mod salvage;
mod scan;
mod spare;
pub use check::{LogInspection, inspect_log_dir};
use format::{
    encode_header, le_u32, le_u64, list_segments, record_crc, record_header, segment_file_name,
};
pub use salvage::{Salvage, salvage, set_aside_from};
use scan::{check_header, scan_records, scan_until_bad};
use spare::Spare;

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TRVLOG\0\0";
/// The segment format version this binary writes and reads.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// Size of the segment header.
pub const SEGMENT_HEADER_BYTES: u64 = 24;
/// Size of a record header (index, length, CRC).
pub const RECORD_HEADER_BYTES: u64 = 16;
/// Largest payload accepted; also bounds what a corrupted length field can make us read.
pub const MAX_RECORD_PAYLOAD_BYTES: u32 = 64 << 20;
/// Default rollover size of a segment.
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 64 << 20;

/// How long `open` of an empty log waits for the first spare segment.
const FIRST_SPARE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Window used when searching for valid records after a damaged one.
const RESYNC_WINDOW_BYTES: u64 = 1 << 20;

/// Tuning of a [`SegmentLog`].
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Roll to a new segment once the current one holds at least this many bytes.
    pub segment_size_bytes: u64,
    /// Make each segment from a file of zeros written ahead of time by a background
    /// thread, so that appends do not grow the file ([`spare`]).
    pub preallocate: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_size_bytes: DEFAULT_SEGMENT_SIZE_BYTES,
            preallocate: true,
        }
    }
}

/// What [`SegmentLog::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Bytes of incomplete records cut from the end of the last segment.
    pub torn_tail_bytes_discarded: u64,
    /// Segment files in use after opening.
    pub segments: usize,
    /// Records present after opening.
    pub entries: u64,
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    first_index: u64,
    path: PathBuf,
    file: File,
    /// Bytes of header plus records. Only changed under the writer lock.
    len: AtomicU64,
    /// The page cache of the file's bytes below this was dropped (`drop_cached_pages`).
    uncached_upto: AtomicU64,
}

/// Asks the kernel to drop the page cache of a segment's first `len` bytes, which are
/// durable (clean). The log is written once and read back rarely (the raft layer keeps
/// the newest entries in memory): left cached, every appended byte takes a fresh page
/// and pushes out pages worth keeping (chunk files being read, the state store), and
/// copying into fresh pages was the largest cost of writing chunk entries. Advice only:
/// a failure changes nothing but the cache.
fn drop_cached_pages(seg: &Segment, len: u64) {
    // Not the page the next append writes into: dropped, it would be read back from the
    // disk first. 64 KiB covers every page size. And only once a good stretch is synced:
    // small records sync many times a second, a system call each time is not free.
    let upto = len & !(KEEP_CACHED_TAIL_BYTES - 1);
    let from = seg.uncached_upto.load(Ordering::Relaxed);
    if upto < from.saturating_add(DROP_CACHED_EVERY_BYTES) {
        return;
    }
    seg.uncached_upto.store(upto, Ordering::Relaxed);
    let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(upto - from)) else {
        return;
    };
    if let Err(e) = nix::fcntl::posix_fadvise(
        &seg.file,
        offset,
        len,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    ) {
        tracing::debug!(path = %seg.path.display(), error = %e, "posix_fadvise(DONTNEED) failed");
    }
}

/// `drop_cached_pages` keeps the segment's last (partial) block of this size cached.
const KEEP_CACHED_TAIL_BYTES: u64 = 64 * 1024;
/// `drop_cached_pages` acts once at least this much more of a segment is synced.
const DROP_CACHED_EVERY_BYTES: u64 = 1024 * 1024;

/// Where a record lives inside its segment. The segment is found by index.
#[derive(Debug, Clone, Copy)]
struct Loc {
    offset: u64,
    len: u32,
}

/// The in-memory index. Invariant: `locs` is empty if and only if `segments` is empty
/// (purge and truncate delete every file once nothing is visible).
#[derive(Debug, Default)]
struct Index {
    /// Index of `locs[0]`.
    first: u64,
    locs: VecDeque<Loc>,
    /// Segment files by first index (may hold purged records at their start).
    segments: BTreeMap<u64, Arc<Segment>>,
    purged_upto: Option<u64>,
}

impl Index {
    fn last(&self) -> Option<u64> {
        (!self.locs.is_empty()).then(|| self.first + self.locs.len() as u64 - 1)
    }

    fn lookup(&self, index: u64) -> Result<Option<(&Arc<Segment>, Loc)>> {
        if index < self.first || index - self.first >= self.locs.len() as u64 {
            return Ok(None);
        }
        let loc = self.locs[(index - self.first) as usize];
        match self.segments.range(..=index).next_back() {
            Some((_, seg)) => Ok(Some((seg, loc))),
            None => Err(StorageError::Invalid(format!(
                "log index holds record {index} but no segment covers it"
            ))),
        }
    }
}

#[derive(Debug, Default)]
struct Writer {
    /// The segment appends go to (the last one).
    current: Option<Arc<Segment>>,
    /// Segments written since the last `sync`.
    unsynced: Vec<Arc<Segment>>,
}

/// The append-only segmented log. See the module documentation.
#[derive(Debug)]
pub struct SegmentLog {
    dir: PathBuf,
    opts: LogOptions,
    /// Serialises `sync` calls, so a second caller cannot return before the first one's
    /// fdatasync, which covers its records too, has finished.
    sync_lock: Mutex<()>,
    writer: Mutex<Writer>,
    index: RwLock<Index>,
    /// Set after a failed write or fsync; the log then refuses writes and syncs.
    failed: AtomicBool,
    /// Closes deleted segments' files off the writer's thread.
    closer: Closer,
    /// The next segment's file, made ahead of time (`LogOptions::preallocate`).
    spare: Option<Spare>,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SegmentLog>();
};

/// A segment as found on disk during `open`.
struct Found {
    first_index: u64,
    path: PathBuf,
    file: File,
    file_len: u64,
    locs: Vec<Loc>,
    valid_len: u64,
    /// Only zeros follow the last valid record: the unused part of a preallocated
    /// segment (accepted in the last segment only).
    zero_tail: bool,
    /// Shorter than a header, or an all-zero header: a crash while creating it.
    unborn: bool,
}

impl SegmentLog {
    /// Opens (creating if absent) the log in `dir`, verifying every record. See the module
    /// documentation for the recovery rules.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<(SegmentLog, OpenReport)> {
        create_dir_durable(dir)?;
        let listed = list_segments(dir)?;

        // Phase 1, read-only: open every file and refuse unknown versions before anything
        // else, so that a downgrade leaves the directory exactly as it was.
        let mut found = Vec::with_capacity(listed.len());
        for (first_index, path) in listed {
            let io = |e| StorageError::io(&path, e);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io)?;
            let file_len = file.metadata().map_err(io)?.len();
            let mut header = vec![0u8; file_len.min(SEGMENT_HEADER_BYTES) as usize];
            file.read_exact_at(&mut header, 0).map_err(io)?;
            if header.len() >= 12 && header[..8] == SEGMENT_MAGIC {
                let version = le_u32(&header[8..12]);
                if version != SEGMENT_FORMAT_VERSION {
                    return Err(StorageError::UnsupportedVersion {
                        path,
                        found: version,
                        supported: SEGMENT_FORMAT_VERSION,
                    });
                }
            }
            let unborn = file_len < SEGMENT_HEADER_BYTES
                || (file_len == SEGMENT_HEADER_BYTES && header.iter().all(|b| *b == 0));
            found.push(Found {
                first_index,
                path,
                file,
                file_len,
                locs: Vec::new(),
                valid_len: 0,
                zero_tail: false,
                unborn,
            });
        }

        // Phase 2, read-only: verify headers, records and continuity.
        let count = found.len();
        for (k, seg) in found.iter_mut().enumerate() {
            let is_last = k + 1 == count;
            if seg.unborn {
                if is_last {
                    continue;
                }
                return Err(StorageError::corrupt(
                    &seg.path,
                    "segment header missing in a segment that is not the last",
                ));
            }
            check_header(seg)?;
            let (locs, valid_len, zero_tail) = scan_records(seg, is_last)?;
            seg.locs = locs;
            seg.valid_len = valid_len;
            seg.zero_tail = zero_tail;
        }
        let mut report = OpenReport::default();
        // A last segment without records (crash during rollover, or its only record torn)
        // holds no data; it is removed below and excluded from the continuity checks.
        let drop_last = found.last().is_some_and(|s| s.unborn || s.locs.is_empty());
        let kept = if drop_last { count - 1 } else { count };
        for pair in found[..kept].windows(2) {
            let (prev, next) = (&pair[0], &pair[1]);
            if prev.locs.is_empty() {
                return Err(StorageError::corrupt(
                    &prev.path,
                    "segment without records that is not the last",
                ));
            }
            let expected = prev.first_index + prev.locs.len() as u64;
            if next.first_index != expected {
                return Err(StorageError::corrupt(
                    &next.path,
                    format!(
                        "index gap: previous segment ends at {}, this one starts at {}",
                        expected - 1,
                        next.first_index
                    ),
                ));
            }
        }

        // Phase 3: repair the tail, then make everything we will serve durable.
        spare::remove_stale(dir).map_err(|e| StorageError::io(dir, e))?;
        if let Some(last) = found.last() {
            if !last.unborn && !last.zero_tail && last.valid_len < last.file_len {
                report.torn_tail_bytes_discarded = last.file_len - last.valid_len;
                tracing::warn!(
                    path = %last.path.display(),
                    offset = last.valid_len,
                    bytes = report.torn_tail_bytes_discarded,
                    "discarding torn tail of the log"
                );
                if !drop_last {
                    let io = |e| StorageError::io(&last.path, e);
                    last.file.set_len(last.valid_len).map_err(io)?;
                    last.file.sync_all().map_err(io)?;
                }
            }
            if drop_last {
                tracing::info!(path = %last.path.display(), "removing log segment without records");
                fs::remove_file(&last.path).map_err(|e| StorageError::io(&last.path, e))?;
                sync_dir(dir)?;
                found.pop();
            }
        }
        let mut index = Index::default();
        for seg in found {
            seg.file
                .sync_data()
                .map_err(|e| StorageError::io(&seg.path, e))?;
            if index.locs.is_empty() {
                index.first = seg.first_index;
            }
            index.locs.extend(seg.locs);
            let segment = Arc::new(Segment {
                first_index: seg.first_index,
                path: seg.path,
                file: seg.file,
                len: AtomicU64::new(seg.valid_len),
                uncached_upto: AtomicU64::new(0),
            });
            index.segments.insert(segment.first_index, segment);
        }
        sync_dir(dir)?;
        report.segments = index.segments.len();
        report.entries = index.locs.len() as u64;
        let writer = Writer {
            current: index.segments.values().next_back().cloned(),
            unsynced: Vec::new(),
        };
        let spare = if opts.preallocate {
            let spare =
                Spare::start(dir, opts.segment_size_bytes).map_err(|e| StorageError::io(dir, e))?;
            if index.segments.is_empty() {
                // A new log's first segment is made from a spare too (a segment keeps its
                // way of growing until it is full), so the first spare is made here, at
                // start-up, rather than waited for by the first append: that runs inside
                // Raft, which must not stall.
                spare.refill();
                spare.wait_ready(FIRST_SPARE_WAIT);
            } else if let Some(last) = index.segments.values().next_back() {
                spare_due(
                    &spare,
                    opts.segment_size_bytes,
                    0,
                    last.len.load(Ordering::Relaxed),
                );
            }
            Some(spare)
        } else {
            None
        };
        let log = SegmentLog {
            dir: dir.to_path_buf(),
            opts,
            sync_lock: Mutex::new(()),
            writer: Mutex::new(writer),
            index: RwLock::new(index),
            failed: AtomicBool::new(false),
            closer: Closer::spawn("log-closer").map_err(|e| StorageError::io(dir, e))?,
            spare,
        };
        Ok((log, report))
    }

    /// The first index present (after purge), if any.
    pub fn first_index(&self) -> Option<u64> {
        let ix = self.read_index();
        (!ix.locs.is_empty()).then_some(ix.first)
    }

    /// The last index present, if any.
    pub fn last_index(&self) -> Option<u64> {
        self.read_index().last()
    }

    /// Appends records. The first index must be `last_index + 1`, or, on an empty log, any
    /// index above the purged index; indexes must be contiguous. The records are readable
    /// when this returns but not durable: durability comes from [`SegmentLog::sync`].
    /// All-or-nothing with respect to validation; an IO failure makes the log unusable.
    pub fn append(&self, records: impl IntoIterator<Item = (u64, Bytes)>) -> Result<()> {
        let records: Vec<(u64, Bytes)> = records.into_iter().collect();
        let Some(&(first_new, _)) = records.first() else {
            return Ok(());
        };
        let mut w = self.lock_writer()?;
        {
            let ix = self.read_index();
            match ix.last() {
                Some(last) if last.checked_add(1) != Some(first_new) => {
                    return Err(StorageError::Invalid(format!(
                        "append of index {first_new} to a log ending at {last}"
                    )));
                }
                None if ix.purged_upto.is_some_and(|p| first_new <= p) => {
                    return Err(StorageError::Invalid(format!(
                        "append of index {first_new} at or below the purged index {:?}",
                        ix.purged_upto
                    )));
                }
                _ => {}
            }
        }
        for (k, (index, payload)) in records.iter().enumerate() {
            if first_new.checked_add(k as u64) != Some(*index) {
                return Err(StorageError::Invalid(format!(
                    "append batch not contiguous: index {index} at position {k} after {first_new}"
                )));
            }
            if payload.len() > MAX_RECORD_PAYLOAD_BYTES as usize {
                return Err(StorageError::Invalid(format!(
                    "record {index} has {} bytes, more than the limit {MAX_RECORD_PAYLOAD_BYTES}",
                    payload.len()
                )));
            }
        }
        let result = self.append_locked(&mut w, &records);
        self.fail_on_err(result)
    }

    fn append_locked(&self, w: &mut Writer, records: &[(u64, Bytes)]) -> Result<()> {
        let mut seg = match &w.current {
            Some(seg) => Arc::clone(seg),
            None => self.start_segment(w, records[0].0, None)?,
        };
        let mut pos = seg.len.load(Ordering::Relaxed);
        let mut buf_start = pos;
        // Where the segment written last stood before this append (see `spare_due`).
        let mut seg_len_before = pos;
        // Headers and payloads are written in place (one `pwritev`), not copied into one
        // buffer first: payloads are up to a chunk each.
        let headers: Vec<[u8; RECORD_HEADER_BYTES as usize]> = records
            .iter()
            .map(|(index, payload)| record_header(*index, payload))
            .collect();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(2 * records.len());
        let mut locs = Vec::with_capacity(records.len());
        for ((index, payload), header) in records.iter().zip(&headers) {
            // Roll only when the segment already holds a record: no segment is ever
            // left without records, except transiently the last one.
            if pos >= self.opts.segment_size_bytes && pos > SEGMENT_HEADER_BYTES {
                write_parts_at(&seg, &parts, buf_start)?;
                seg.len.store(pos, Ordering::Relaxed);
                parts.clear();
                seg = self.start_segment(w, *index, Some(&seg))?;
                pos = SEGMENT_HEADER_BYTES;
                buf_start = pos;
                seg_len_before = pos;
            }
            locs.push(Loc {
                offset: pos,
                len: payload.len() as u32,
            });
            parts.push(header);
            parts.push(payload);
            pos += RECORD_HEADER_BYTES + payload.len() as u64;
        }
        write_parts_at(&seg, &parts, buf_start)?;
        seg.len.store(pos, Ordering::Relaxed);
        if let Some(spare) = &self.spare {
            spare_due(spare, self.opts.segment_size_bytes, seg_len_before, pos);
        }
        if !w.unsynced.iter().any(|s| Arc::ptr_eq(s, &seg)) {
            w.unsynced.push(seg);
        }
        // Publish only after the bytes are written, so readers never see a hole.
        let mut ix = self.write_index();
        if ix.locs.is_empty() {
            ix.first = records[0].0;
        }
        ix.locs.extend(locs);
        Ok(())
    }

    /// Creates the segment starting at `first_index`, after making `prev` durable.
    fn start_segment(
        &self,
        w: &mut Writer,
        first_index: u64,
        prev: Option<&Arc<Segment>>,
    ) -> Result<Arc<Segment>> {
        if let Some(prev) = prev {
            let io = |e| StorageError::io(&prev.path, e);
            let len = prev.len.load(Ordering::Relaxed);
            // Only the last segment may end in unused zeros (it does when the segment
            // size shrank since its spare was made).
            if prev.file.metadata().map_err(io)?.len() > len {
                prev.file.set_len(len).map_err(io)?;
            }
            prev.file.sync_data().map_err(io)?;
            drop_cached_pages(prev, len);
            w.unsynced.retain(|s| !Arc::ptr_eq(s, prev));
        }
        let path = self.dir.join(segment_file_name(first_index));
        let io = |e| StorageError::io(&path, e);
        // Header durable before the name: a crash leaves no file or a complete header
        // (open still tolerates an unborn last segment, for filesystems that differ).
        let file = match self.spare.as_ref().and_then(Spare::take) {
            Some((file, spare_path)) => {
                file.write_all_at(&encode_header(first_index), 0)
                    .map_err(io)?;
                file.sync_data().map_err(io)?;
                // A link, unlike a rename, never replaces an existing file.
                fs::hard_link(&spare_path, &path).map_err(io)?;
                fs::remove_file(&spare_path).map_err(|e| StorageError::io(&spare_path, e))?;
                file
            }
            None => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io)?;
                file.write_all_at(&encode_header(first_index), 0)
                    .map_err(io)?;
                file.sync_data().map_err(io)?;
                file
            }
        };
        sync_dir(&self.dir)?;
        let seg = Arc::new(Segment {
            first_index,
            path,
            file,
            len: AtomicU64::new(SEGMENT_HEADER_BYTES),
            uncached_upto: AtomicU64::new(0),
        });
        self.write_index()
            .segments
            .insert(first_index, Arc::clone(&seg));
        w.current = Some(Arc::clone(&seg));
        Ok(seg)
    }

    /// Makes everything appended so far durable and returns the highest durable index
    /// (`None` if the log is empty). Appends may run concurrently; they are not blocked
    /// during the fdatasync. If a concurrent `truncate_after` removes records, the returned
    /// index may exceed `last_index` afterwards; ordering those is the caller's business.
    pub fn sync(&self) -> Result<Option<u64>> {
        let _serial = self
            .sync_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (segments, last) = {
            let mut w = self.lock_writer()?;
            (std::mem::take(&mut w.unsynced), self.last_index())
        };
        for seg in segments {
            let synced_len = seg.len.load(Ordering::Relaxed);
            let result = seg
                .file
                .sync_data()
                .map_err(|e| StorageError::io(&seg.path, e));
            self.fail_on_err(result)?;
            drop_cached_pages(&seg, synced_len);
        }
        Ok(last)
    }

    /// Reads record `index`, verifying its checksum. `None` if absent or purged.
    pub fn read(&self, index: u64) -> Result<Option<Bytes>> {
        // The read lock is held during the read so a concurrent truncate cannot cut or
        // rewrite the bytes under us.
        let ix = self.read_index();
        match ix.lookup(index)? {
            Some((seg, loc)) => read_record(seg, index, loc).map(Some),
            None => Ok(None),
        }
    }

    /// Records in `[start, end)` in order. Stops before the record that would make the
    /// payload total exceed `max_bytes`, but always returns at least one record when the
    /// range holds any, so a caller can cap a message without ever stalling. Indexes absent
    /// at either end (purged, not yet written) are simply not returned.
    pub fn read_range(&self, start: u64, end: u64, max_bytes: usize) -> Result<Vec<(u64, Bytes)>> {
        self.read_range_weighed(start, end, max_bytes, |b| b.len())
    }

    /// [`SegmentLog::read_range`] where each record counts as `weigh(record)` bytes
    /// against `max_bytes` (a record that stands for more memory than its own length,
    /// once its reader has loaded what it refers to).
    pub fn read_range_weighed(
        &self,
        start: u64,
        end: u64,
        max_bytes: usize,
        weigh: impl Fn(&[u8]) -> usize,
    ) -> Result<Vec<(u64, Bytes)>> {
        let ix = self.read_index();
        let Some(last) = ix.last() else {
            return Ok(Vec::new());
        };
        if start >= end {
            return Ok(Vec::new());
        }
        let (from, to) = (start.max(ix.first), (end - 1).min(last));
        let mut out = Vec::new();
        let mut total = 0usize;
        let mut index = from;
        while index <= to {
            let Some((seg, loc)) = ix.lookup(index)? else {
                break;
            };
            let record = read_record(seg, index, loc)?;
            let len = weigh(&record);
            if !out.is_empty() && total.saturating_add(len) > max_bytes {
                break;
            }
            out.push((index, record));
            total = total.saturating_add(len);
            index += 1;
        }
        Ok(out)
    }

    /// Removes every record after `index` (`None` removes all), durably: later segment
    /// files are deleted from the tail backwards (directory fsynced after each, so a crash
    /// never leaves a gap), then the segment holding `index` is truncated and fsynced.
    pub fn truncate_after(&self, index: Option<u64>) -> Result<()> {
        let mut w = self.lock_writer()?;
        let mut ix = self.write_index();
        let result = self.truncate_locked(&mut w, &mut ix, index);
        self.fail_on_err(result)
    }

    fn truncate_locked(&self, w: &mut Writer, ix: &mut Index, index: Option<u64>) -> Result<()> {
        let Some(last) = ix.last() else {
            return Ok(());
        };
        let keep = match index {
            Some(i) if i >= last => return Ok(()),
            Some(i) if i >= ix.first => Some(i),
            _ => None,
        };
        let doomed: Vec<u64> = match keep {
            Some(i) => ix.segments.range(i + 1..).map(|(k, _)| *k).collect(),
            None => ix.segments.keys().copied().collect(),
        };
        for first in doomed.into_iter().rev() {
            self.delete_segment(w, ix, first)?;
        }
        let Some(keep) = keep else {
            // Every segment was deleted, and the writer's references with them.
            ix.locs.clear();
            return Ok(());
        };
        let Some((seg, loc)) = ix.lookup(keep)? else {
            return Err(StorageError::Invalid(format!("record {keep} vanished")));
        };
        let seg = Arc::clone(seg);
        let end = loc.offset + RECORD_HEADER_BYTES + u64::from(loc.len);
        let io = |e| StorageError::io(&seg.path, e);
        seg.file.set_len(end).map_err(io)?;
        seg.file.sync_all().map_err(io)?;
        seg.len.store(end, Ordering::Relaxed);
        let kept = (keep - ix.first + 1) as usize;
        ix.locs.truncate(kept);
        w.current = Some(seg);
        Ok(())
    }

    /// Logically removes records `<= index` and deletes segment files holding only such
    /// records (oldest first, directory fsynced after each, so a crash leaves a contiguous
    /// suffix). The caller keeps the durable purge mark and calls this again after reopen.
    /// Purging past the end empties the log; the next append may then start at `index + 1`.
    pub fn purge_upto(&self, index: u64) -> Result<()> {
        let mut w = self.lock_writer()?;
        let mut ix = self.write_index();
        let result = self.purge_locked(&mut w, &mut ix, index);
        self.fail_on_err(result)
    }

    fn purge_locked(&self, w: &mut Writer, ix: &mut Index, index: u64) -> Result<()> {
        ix.purged_upto = Some(ix.purged_upto.map_or(index, |p| p.max(index)));
        let Some(last) = ix.last() else {
            return Ok(());
        };
        if index < ix.first {
            return Ok(());
        }
        let firsts: Vec<u64> = ix.segments.keys().copied().collect();
        if index >= last {
            // Deleting every segment also drops the writer's references to them.
            ix.locs.clear();
            for first in firsts {
                self.delete_segment(w, ix, first)?;
            }
            return Ok(());
        }
        let dropped = (index - ix.first + 1) as usize;
        ix.locs.drain(..dropped);
        ix.first = index + 1;
        // A segment holds only purged records iff its successor starts at or before
        // `index + 1`; the last segment holds `last > index`, so it always stays.
        for pair in firsts.windows(2) {
            if pair[1] > index + 1 {
                break;
            }
            self.delete_segment(w, ix, pair[0])?;
        }
        Ok(())
    }

    /// Waits up to `timeout` for the spare segment being made; whether one is ready.
    #[cfg(test)]
    fn wait_for_spare(&self, timeout: std::time::Duration) -> bool {
        self.spare.as_ref().is_some_and(|s| s.wait_ready(timeout))
    }

    /// Bytes of all segment files (headers included), for metrics.
    pub fn total_bytes(&self) -> u64 {
        self.read_index()
            .segments
            .values()
            .map(|s| s.len.load(Ordering::Relaxed))
            .sum()
    }

    /// Deletes segment `first` durably. The writer's references go first, so that the
    /// file is closed (and its blocks freed) by the closer thread, not by this one.
    fn delete_segment(&self, w: &mut Writer, ix: &mut Index, first: u64) -> Result<()> {
        let Some(seg) = ix.segments.remove(&first) else {
            return Ok(());
        };
        w.unsynced.retain(|s| s.first_index != first);
        if w.current.as_ref().is_some_and(|c| c.first_index == first) {
            w.current = None;
        }
        fs::remove_file(&seg.path).map_err(|e| StorageError::io(&seg.path, e))?;
        sync_dir(&self.dir)?;
        self.closer.close(seg);
        Ok(())
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        let guard = self.writer.lock().map_err(|_| self.unusable())?;
        if self.failed.load(Ordering::Acquire) {
            return Err(self.unusable());
        }
        Ok(guard)
    }

    fn unusable(&self) -> StorageError {
        StorageError::io(
            &self.dir,
            std::io::Error::other(
                "the log is unusable after an earlier write or fsync failure; restart to recover",
            ),
        )
    }

    fn fail_on_err<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.failed.store(true, Ordering::Release);
        }
        result
    }

    fn read_index(&self) -> RwLockReadGuard<'_, Index> {
        // Index updates cannot panic half-way, so a poisoned lock still guards valid data.
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_index(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn read_record(seg: &Segment, index: u64, loc: Loc) -> Result<Bytes> {
    let mut buf = vec![0u8; (RECORD_HEADER_BYTES + u64::from(loc.len)) as usize];
    seg.file
        .read_exact_at(&mut buf, loc.offset)
        .map_err(|e| StorageError::io(&seg.path, e))?;
    let (h, payload) = buf.split_at(RECORD_HEADER_BYTES as usize);
    if le_u64(&h[0..8]) != index
        || le_u32(&h[8..12]) != loc.len
        || record_crc(&h[..12], payload) != le_u32(&h[12..16])
    {
        return Err(StorageError::corrupt(
            &seg.path,
            format!("record {index} at offset {} fails verification", loc.offset),
        ));
    }
    Ok(Bytes::from(buf).slice(RECORD_HEADER_BYTES as usize..))
}

/// Asks for the next segment's spare once the segment being written grows past half its
/// size (from `before` to `after` bytes): soon enough to be ready at the rollover, and
/// only for a log that will need it (a log of object names may never fill its first
/// segment, and a spare made at once after each rollover was 64 MiB of writes in the
/// first moments of every new node). A failed spare is asked for again by the next
/// segment, not by every append.
fn spare_due(spare: &Spare, segment_size_bytes: u64, before: u64, after: u64) {
    let half = segment_size_bytes / 2;
    if before < half && after >= half {
        spare.refill();
    }
}

/// Slices one `pwritev` takes at most (Linux's `IOV_MAX` is 1024).
const MAX_IOVECS: usize = 1024;

/// Writes `parts` back to back from `offset`, all of them (a short write goes on where
/// it stopped; an interrupted one is repeated).
fn write_parts_at(seg: &Segment, parts: &[&[u8]], mut offset: u64) -> Result<()> {
    let io = |e: std::io::Error| StorageError::io(&seg.path, e);
    for group in parts.chunks(MAX_IOVECS) {
        let mut slices: Vec<IoSlice<'_>> = group.iter().map(|p| IoSlice::new(p)).collect();
        let mut rest = &mut slices[..];
        IoSlice::advance_slices(&mut rest, 0);
        while !rest.is_empty() {
            let at = i64::try_from(offset).map_err(|_| {
                io(std::io::Error::other(format!(
                    "offset {offset} is too large"
                )))
            })?;
            match nix::sys::uio::pwritev(&seg.file, rest, at) {
                Ok(0) => return Err(io(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    offset += n as u64;
                    IoSlice::advance_slices(&mut rest, n);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(io(e.into())),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
