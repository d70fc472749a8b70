//! openraft's `RaftLogStorage` over Trove's segment log and meta file.
//!
//! Durability contract (see ARCHITECTURE.md):
//! - `append` writes entries into the segment log (readable at once) and hands the
//!   `IOFlushed` callback to the flusher thread, which fdatasyncs once for every
//!   append that queued up while the previous fdatasync ran (group commit) and only
//!   then fires the callbacks. A callback never fires before its entries are on disk.
//! - A chunk entry's bytes go to its chunk file, written and fsynced (and pinned) before
//!   the record that names it is appended ([`records`]); reading the entry back loads
//!   the file, and a missing one found at open is log damage (re-seed).
//! - `save_vote` first makes all appended entries durable, then writes the vote to the
//!   meta file with fdatasync, so vote and log IO are never reordered.
//! - `truncate_after` and `purge` are durable before they return; `purge` records the
//!   purge point in the meta file before deleting any segment, so the log has no holes.
//! - `save_committed` is written without fsync (it is only an optimisation); a lost or
//!   stale value is harmless, and `read_committed` ignores a value the log cannot back.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use futures::Stream;
use openraft::OptionalSend;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use serde::{Deserialize, Serialize};
use trove_storage::chunks::ChunkStore;
use trove_storage::log::{LogOptions, SegmentLog};
use trove_storage::meta::MetaFile;
use trove_types::limits::{MAX_APPEND_BATCH_BYTES, RECENT_LOG_ENTRY_BYTES};

use crate::codec::{check_version, decode, encode};
use crate::types::{Entry, LogId, TypeConfig, Vote};

mod records;

/// Durable Raft metadata kept in the meta file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct RaftMetaRecord {
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

struct MetaState {
    file: MetaFile,
    rec: RaftMetaRecord,
    /// When `save_committed` last wrote the file (see [`COMMITTED_WRITE_INTERVAL`]).
    committed_written: Option<std::time::Instant>,
}

/// `save_committed` writes the meta file (a 4 KiB page) at most this often; in between
/// it only updates the record, which the next write of any field carries. The commit
/// index is an optimisation (entries up to it may be applied before a leader is heard
/// from), so an older value after a restart costs nothing; writing it on every commit made
/// it most of the bytes written per small record.
const COMMITTED_WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

struct Shared {
    /// The raft directory (log, meta file, re-seed marker).
    dir: std::path::PathBuf,
    log: SegmentLog,
    meta: Mutex<MetaState>,
    /// Last log id appended (or the purge point when the log is empty).
    last_log_id: Mutex<Option<LogId>>,
    /// The newest appended entries, always a suffix of the log (see [`Recent`]).
    recent: Mutex<Recent>,
    /// Where chunk entries keep their payload (see [`records`]).
    chunks: ChunkStore,
    /// Test-only fault injection (the `failpoints` feature).
    #[cfg(feature = "failpoints")]
    failpoints: crate::failpoints::Failpoints,
}

/// The most recently appended entries, in index order and contiguous, at most
/// [`RECENT_LOG_ENTRY_BYTES`] of memory (always at least the last entry). It is
/// a suffix of the log at all times: entries are added after they are written, removed
/// before a truncation or purge removes them from the file. Replication reads an entry
/// just after its append and apply just after its commit; serving those from here saves
/// reading, checking and decoding each one again (a chunk entry is 1 MiB).
#[derive(Default)]
struct Recent {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Recent {
    fn push(&mut self, entry: Entry, held_bytes: usize) {
        if self
            .entries
            .back()
            .is_some_and(|(last, _)| last.log_id.index + 1 != entry.log_id.index)
        {
            // Not contiguous (cannot happen: the log refuses such an append); start over
            // rather than serve a gap.
            self.clear();
        }
        self.bytes += held_bytes;
        self.entries.push_back((entry, held_bytes));
        while self.bytes > RECENT_LOG_ENTRY_BYTES && self.entries.len() > 1 {
            if let Some((_, len)) = self.entries.pop_front() {
                self.bytes -= len;
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Drops every entry after `index` (`None`: all).
    fn truncate_after(&mut self, index: Option<u64>) {
        while let Some((e, len)) = self.entries.back() {
            if index.is_some_and(|i| e.log_id.index <= i) {
                break;
            }
            self.bytes -= len;
            self.entries.pop_back();
        }
    }

    /// Drops every entry up to and including `index`.
    fn purge_upto(&mut self, index: u64) {
        while let Some((e, len)) = self.entries.front() {
            if e.log_id.index > index {
                break;
            }
            self.bytes -= len;
            self.entries.pop_front();
        }
    }

    /// Entries `[start, end)` capped like [`SegmentLog::read_range`] (at least one), if
    /// `start` is held here; `None` sends the reader to the file.
    fn read(&self, start: u64, end: u64, max_bytes: usize) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.0.log_id.index;
        let skip = usize::try_from(start.checked_sub(first)?).ok()?;
        if skip >= self.entries.len() {
            return None;
        }
        let mut out = Vec::new();
        let mut total = 0usize;
        for (e, len) in self.entries.iter().skip(skip) {
            if e.log_id.index >= end || (!out.is_empty() && total.saturating_add(*len) > max_bytes)
            {
                break;
            }
            total += len;
            out.push(e.clone());
        }
        Some(out)
    }
}

/// A flush request: fire `callback` once everything appended before it is durable.
type FlushRequest = IOFlushed<TypeConfig>;

/// The log store handed to openraft. Cheap to clone (shares everything).
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    flusher: SyncSender<FlushRequest>,
}

/// Reader handle given to replication tasks and the apply worker.
#[derive(Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
}

/// Present while the node must be re-seeded before it votes (see
/// [`LogStore::reseed_needed`]): first line `trove-reseed 1`, then the reason.
const RESEED_MARKER: &str = "RESEED";

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Present while the derived state must be rebuilt before Raft starts (see
/// [`LogStore::state_rebuild_pending`]).
const REBUILD_MARKER: &str = "REBUILD-STATE";

/// Writes a marker file durably.
fn write_marker(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    trove_storage::fsutil::sync_dir(dir).map_err(io_err)
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// An encoding this binary cannot read, found by the read-only start-up check.
fn unreadable(path: &Path, e: crate::codec::CodecError) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{}: {e}. Use a matching trove release; the directory was left untouched",
            path.display()
        ),
    )
}

impl LogStore {
    /// Opens the log in `dir/log` and the meta file `dir/raft-meta`; chunk entries keep
    /// their payload in `chunks` (see [`records`]).
    pub fn open(dir: &Path, chunks: ChunkStore) -> io::Result<LogStore> {
        trove_storage::fsutil::create_dir_durable(dir)?;
        let (meta_file, payload) = MetaFile::open(&dir.join("raft-meta"))?;
        let rec: RaftMetaRecord = match payload {
            Some(p) => decode(&p)?,
            None => RaftMetaRecord::default(),
        };
        let log_dir = dir.join("log");
        let (log, report) = match SegmentLog::open(&log_dir, LogOptions::default()) {
            Err(trove_storage::StorageError::Corrupt { path, detail }) => {
                // Not a torn tail: entries this node acknowledged may be gone. Keep the
                // verified prefix, set the rest aside, and mark the node as needing to
                // be re-seeded by a leader before it votes again (`reseed_needed`).
                let aside = dir.join(format!("log-damaged-{}", unix_now()));
                // The state machine may have applied entries the cut removes, beyond
                // its latest snapshot; openraft cannot start from that (it would purge
                // the log past the snapshot). The state is derived: it is rebuilt from
                // the snapshot and the kept log (`state_rebuild_pending`). Marked before
                // the cut, so a crash in between cannot skip it.
                write_marker(dir, REBUILD_MARKER, "trove-rebuild-state 1\n")?;
                let salvage = trove_storage::log::salvage(&log_dir, &aside)?.ok_or_else(|| {
                    io_err(format!(
                        "{}: {detail}, but no damage was found to set aside",
                        path.display()
                    ))
                })?;
                write_marker(
                    dir,
                    RESEED_MARKER,
                    &format!(
                        "trove-reseed 1\nraft log damaged from index {} ({}); damaged segments moved to {}\n",
                        salvage.first_damaged,
                        salvage.detail,
                        salvage.set_aside.display()
                    ),
                )?;
                SegmentLog::open(&log_dir, LogOptions::default())?
            }
            other => other?,
        };
        if report.torn_tail_bytes_discarded > 0 {
            tracing::warn!(
                bytes = report.torn_tail_bytes_discarded,
                "discarded a torn (unacknowledged) tail of the raft log"
            );
        }
        #[cfg(feature = "failpoints")]
        let failpoints = crate::failpoints::Failpoints::open(dir, &log)?;
        if let Some(p) = &rec.last_purged {
            log.purge_upto(p.index)?;
        }
        if let Some(missing) = pin_chunks(&log, &chunks)? {
            // The records verify, but a payload they rely on is gone: the same damage
            // as a bad record there, handled the same way. Both markers are written
            // before the cut, so a crash in between cannot leave a shorter log that
            // does not know it must be re-seeded.
            write_marker(dir, REBUILD_MARKER, "trove-rebuild-state 1\n")?;
            let aside = dir.join(format!("log-damaged-{}-payload", unix_now()));
            write_marker(
                dir,
                RESEED_MARKER,
                &format!(
                    "trove-reseed 1\nraft log damaged from index {} ({}); damaged segments copied to {}\n",
                    missing.index,
                    missing.detail,
                    aside.display()
                ),
            )?;
            let salvage = trove_storage::log::set_aside_from(
                &log,
                &log_dir,
                &aside,
                missing.index,
                missing.detail,
            )?;
            chunks.unpin_after(salvage.kept_through);
        }
        let last_log_id = match log.last_index() {
            Some(i) => {
                let bytes = log
                    .read(i)?
                    .ok_or_else(|| io_err(format!("last log entry {i} unreadable")))?;
                Some(records::decode(&bytes)?.entry.log_id)
            }
            None => rec.last_purged,
        };
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            log,
            meta: Mutex::new(MetaState {
                file: meta_file,
                rec,
                committed_written: None,
            }),
            last_log_id: Mutex::new(last_log_id),
            recent: Mutex::new(Recent::default()),
            chunks,
            #[cfg(feature = "failpoints")]
            failpoints,
        });
        let (tx, rx) = sync_channel::<FlushRequest>(4096);
        let s2 = shared.clone();
        std::thread::Builder::new()
            .name("raft-log-flusher".into())
            .spawn(move || flusher_loop(s2, rx))?;
        Ok(LogStore {
            shared,
            flusher: tx,
        })
    }

    /// Read-only check of a raft directory (as [`LogStore::open`] would use it) for
    /// formats this binary does not understand: the meta file's slot version and payload
    /// encoding, every segment header's version, and the encoding version of the newest
    /// log entry. Creates, truncates and syncs nothing, so a refused directory is left
    /// byte-for-byte untouched; damage is left for `open` to diagnose.
    pub fn check_formats(dir: &Path) -> io::Result<()> {
        let meta_path = dir.join("raft-meta");
        if meta_path.exists()
            && let Some(payload) = MetaFile::read(&meta_path)?
        {
            check_version(&payload).map_err(|e| unreadable(&meta_path, e))?;
        }
        let log_dir = dir.join("log");
        let found = trove_storage::log::inspect_log_dir(&log_dir)?;
        if let Some(payload) = found.last_payload {
            records::check_version(&payload).map_err(|e| unreadable(&log_dir, e))?;
        }
        Ok(())
    }

    /// Makes sure this node starts as a follower. openraft resumes leadership at start-up
    /// when the stored vote is a committed vote for this node; that is only sound if the
    /// log is exactly what it was, and Trove cannot assume that (a rolled-back volume
    /// carries an old committed self-vote: resuming would reuse log ids the cluster
    /// already gave to other entries). The vote is kept, uncommitted: the node still
    /// voted for itself in that term and grants no other vote in it. Returns whether it
    /// changed anything. Call before the Raft instance is created.
    pub fn forget_leadership(&self, me: u64) -> io::Result<bool> {
        let current = self.shared.meta.lock().map_err(io_err)?.rec.vote;
        match current {
            Some(v) if v.committed && v.leader_id.node_id == me => {
                let mut demoted = v;
                demoted.committed = false;
                self.write_meta(|r| r.vote = Some(demoted), true)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Why this node must be re-seeded by a leader before it votes, if it must: its log
    /// was found damaged (not a torn tail) and cut before the damage, so it may lack
    /// entries it acknowledged. Persists across restarts until [`LogStore::reseeded`].
    pub fn reseed_needed(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.shared.dir.join(RESEED_MARKER)).ok()?;
        Some(
            text.lines()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" ")
                .trim()
                .to_string(),
        )
    }

    /// A leader has brought this node up to date: the damage is repaired.
    pub fn reseeded(&self) -> io::Result<()> {
        self.remove_marker(RESEED_MARKER)
    }

    /// Whether the state machine's store must be discarded and rebuilt from the latest
    /// snapshot and the log before Raft starts: the log was cut below entries it may
    /// have applied. Call [`LogStore::state_rebuilt`] once it is gone.
    pub fn state_rebuild_pending(&self) -> bool {
        self.shared.dir.join(REBUILD_MARKER).exists()
    }

    /// The index up to which the log was purged (covered by a snapshot), if any.
    pub fn last_purged_index(&self) -> Option<u64> {
        self.shared
            .meta
            .lock()
            .ok()
            .and_then(|m| m.rec.last_purged.map(|l| l.index))
    }

    /// The state store was discarded (see [`LogStore::state_rebuild_pending`]).
    pub fn state_rebuilt(&self) -> io::Result<()> {
        self.remove_marker(REBUILD_MARKER)
    }

    fn remove_marker(&self, name: &str) -> io::Result<()> {
        match std::fs::remove_file(self.shared.dir.join(name)) {
            Ok(()) => trove_storage::fsutil::sync_dir(&self.shared.dir).map_err(io_err),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Total bytes of the log's segment files.
    pub fn log_bytes(&self) -> u64 {
        self.shared.log.total_bytes()
    }

    fn write_meta(&self, f: impl FnOnce(&mut RaftMetaRecord), sync: bool) -> io::Result<()> {
        let mut m = self.shared.meta.lock().map_err(io_err)?;
        let mut rec = m.rec.clone();
        f(&mut rec);
        let bytes = encode(&rec)?;
        m.file.write(&bytes, sync)?;
        m.rec = rec;
        Ok(())
    }
}

/// A chunk entry whose payload file is missing or has the wrong length.
struct MissingPayload {
    index: u64,
    detail: String,
}

/// Pins every chunk the log holds by name (so that its file outlives any release until
/// the log drops the entry) and checks each file is there with its length. Returns the
/// first entry whose file is not: the log is damaged from there on.
fn pin_chunks(log: &SegmentLog, chunks: &ChunkStore) -> io::Result<Option<MissingPayload>> {
    let (Some(first), Some(last)) = (log.first_index(), log.last_index()) else {
        return Ok(None);
    };
    let mut next = first;
    while next <= last {
        let recs = log.read_range(next, last + 1, MAX_APPEND_BATCH_BYTES)?;
        let Some((end, _)) = recs.last() else {
            break;
        };
        next = end + 1;
        for (idx, b) in recs {
            let Some((hash, len)) = records::decode(&b)?.by_name else {
                continue;
            };
            chunks.pin(idx, hash);
            let found = chunks.file_len(&hash)?;
            if found != Some(u64::from(len)) {
                let what = found.map_or("missing".to_string(), |n| format!("{n} bytes long"));
                return Ok(Some(MissingPayload {
                    index: idx,
                    detail: format!(
                        "entry {idx} keeps its {len} bytes in {}, which is {what}",
                        chunks.path_of(&hash).display()
                    ),
                }));
            }
        }
    }
    Ok(None)
}

impl Shared {
    /// For a chunk entry: makes its chunk file durable and pins it, so that the log
    /// record can hold the chunk by name (returns true). A payload that does not hash to
    /// its name is kept in the record instead (false), for apply to refuse as before.
    fn store_chunk(&self, e: &Entry) -> io::Result<bool> {
        let Some((hash, data)) = records::chunk_of(e) else {
            return Ok(false);
        };
        let index = e.log_id.index;
        // Pinned before the file is looked for: a concurrent removal either happened
        // before (and `put` writes the file again) or skips it.
        self.chunks.pin(index, hash);
        match self.chunks.put_for_log(&hash, data) {
            Ok(()) => Ok(true),
            Err(trove_storage::StorageError::ChecksumMismatch(_)) => {
                self.chunks.unpin(index);
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Completes decoded record `idx`, reading a chunk entry's payload back from its file
    /// (which verifies it against its name).
    fn load(&self, idx: u64, stored: records::Stored) -> io::Result<Entry> {
        let records::Stored { mut entry, by_name } = stored;
        if let Some((hash, len)) = by_name {
            let lost = |what: String| {
                io_err(format!(
                    "raft log entry {idx} keeps its payload in {}, which is {what}. Restart the node: it sets the damaged part of its log aside and is re-seeded by its peers before it votes again",
                    self.chunks.path_of(&hash).display()
                ))
            };
            let data = match self.chunks.get(&hash) {
                Ok(d) => d,
                Err(
                    e @ (trove_storage::StorageError::NotFound(_)
                    | trove_storage::StorageError::Corrupt { .. }),
                ) => return Err(lost(format!("missing or damaged ({e})"))),
                Err(e) => return Err(e.into()),
            };
            if data.len() as u64 != u64::from(len) {
                return Err(lost(format!("{} bytes long, not {len}", data.len())));
            }
            records::fill(&mut entry, data);
        }
        Ok(entry)
    }
}

/// Group commit: wait for one request, take every request queued behind it, fdatasync
/// once, complete them all.
fn flusher_loop(shared: Arc<Shared>, rx: Receiver<FlushRequest>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        #[cfg(feature = "failpoints")]
        if shared.failpoints.ack_before_fsync() {
            // The test-only bug (see `failpoints`): acknowledged but not durable.
            for cb in batch {
                cb.io_completed(Ok(()));
            }
            continue;
        }
        let sync_started = std::time::Instant::now();
        let res = shared.log.sync();
        metrics::histogram!(trove_types::metrics::WAL_FSYNC_SECONDS)
            .record(sync_started.elapsed().as_secs_f64());
        #[cfg(feature = "failpoints")]
        if let Ok(last) = &res {
            shared.failpoints.synced(*last);
        }
        match res {
            Ok(_) => {
                for cb in batch {
                    cb.io_completed(Ok(()));
                }
            }
            Err(e) => {
                // Never retry an fsync: after a failed fsync the page cache may have dropped
                // the dirty pages. Report the error; openraft stops the node.
                tracing::error!(error = %e, "raft log fdatasync failed; the node must stop");
                let msg = e.to_string();
                for cb in batch {
                    cb.io_completed(Err(io::Error::other(msg.clone())));
                }
            }
        }
    }
}

fn range_to_half_open<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl LogReader {
    fn read(&self, start: u64, end: u64, max_bytes: usize) -> io::Result<Vec<Entry>> {
        if start >= end {
            return Ok(Vec::new());
        }
        if let Some(hit) = self
            .shared
            .recent
            .lock()
            .map_err(io_err)?
            .read(start, end, max_bytes)
        {
            return Ok(hit);
        }
        // `max_bytes` bounds memory, and a record that names its chunk file is small:
        // it counts with the payload it loads.
        let recs =
            self.shared
                .log
                .read_range_weighed(start, end, max_bytes, records::held_bytes)?;
        let mut out = Vec::with_capacity(recs.len());
        for (idx, b) in recs {
            let e = self.shared.load(idx, records::decode(&b)?)?;
            if e.log_id.index != idx {
                return Err(io_err(format!(
                    "log record {idx} holds entry {}: corrupt log",
                    e.log_id.index
                )));
            }
            out.push(e);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (s, e) = range_to_half_open(&range);
        self.read(s, e, usize::MAX)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.shared.meta.lock().map_err(io_err)?.rec.vote)
    }

    /// Caps an AppendEntries payload by bytes (openraft caps only by entry count).
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        self.read(start, end, MAX_APPEND_BATCH_BYTES)
    }

    /// Streams entries in bounded batches so that applying a long backlog of chunk
    /// entries never loads it all into memory.
    async fn entries_stream<RB>(
        &mut self,
        range: RB,
    ) -> impl Stream<Item = Result<Entry, io::Error>> + OptionalSend
    where
        RB: RangeBounds<u64> + Clone + Debug + OptionalSend,
    {
        let (start, end) = range_to_half_open(&range);
        let reader = self.clone();
        let batches = futures::stream::unfold(Some(start), move |next| {
            let reader = reader.clone();
            async move {
                let next = next?;
                if next >= end {
                    return None;
                }
                match reader.read(next, end, MAX_APPEND_BATCH_BYTES) {
                    Ok(v) if v.is_empty() => None,
                    Ok(v) => {
                        let after = v.last().map(|e| e.log_id.index + 1);
                        let items: Vec<Result<Entry, io::Error>> = v.into_iter().map(Ok).collect();
                        Some((futures::stream::iter(items), after))
                    }
                    Err(e) => Some((futures::stream::iter(vec![Err(e)]), None)),
                }
            }
        });
        futures::StreamExt::flatten(batches)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id = self.shared.meta.lock().map_err(io_err)?.rec.last_purged;
        let last_log_id = *self.shared.last_log_id.lock().map_err(io_err)?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last_log_id.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            shared: self.shared.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // Entries appended before this vote become durable first: log and vote IO are
        // never reordered.
        let _synced = self.shared.log.sync()?;
        #[cfg(feature = "failpoints")]
        self.shared.failpoints.synced(_synced);
        let v = *vote;
        self.write_meta(|r| r.vote = Some(v), true)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let now = std::time::Instant::now();
        {
            let mut m = self.shared.meta.lock().map_err(io_err)?;
            if m.committed_written
                .is_some_and(|t| now.duration_since(t) < COMMITTED_WRITE_INTERVAL)
            {
                m.rec.committed = committed;
                return Ok(());
            }
            m.committed_written = Some(now);
        }
        self.write_meta(|r| r.committed = committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let rec = self.shared.meta.lock().map_err(io_err)?.rec.clone();
        let Some(c) = rec.committed else {
            return Ok(None);
        };
        // A lazily written commit index may be ahead of what the log holds after a power
        // cut; only report it if the log (or the purge point) backs it.
        if let Some(p) = rec.last_purged
            && c.index <= p.index
        {
            return Ok(Some(c));
        }
        match self.shared.log.read(c.index)? {
            Some(b) => {
                let e = records::decode(&b)?.entry;
                Ok((e.log_id == c).then_some(c))
            }
            None => Ok(None),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut last = None;
        let mut recs = Vec::new();
        let mut appended = Vec::new();
        for e in entries {
            last = Some(e.log_id);
            let by_name = self.shared.store_chunk(&e)?;
            let encoded = records::encode(&e, by_name)?;
            // Memory is what bounds the recent entries: a chunk stored by name still
            // holds its bytes here.
            let held = match records::chunk_of(&e) {
                Some((_, data)) if by_name => encoded.len() + data.len(),
                _ => encoded.len(),
            };
            appended.push((e.clone(), held));
            recs.push((e.log_id.index, bytes::Bytes::from(encoded)));
        }
        self.shared.log.append(recs)?;
        {
            let mut recent = self.shared.recent.lock().map_err(io_err)?;
            for (e, len) in appended {
                recent.push(e, len);
            }
        }
        if let Some(l) = last {
            *self.shared.last_log_id.lock().map_err(io_err)? = Some(l);
        }
        self.flusher
            .send(callback)
            .map_err(|_| io_err("raft log flusher thread has stopped"))?;
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.shared
            .recent
            .lock()
            .map_err(io_err)?
            .truncate_after(last_log_id.map(|l| l.index));
        self.shared
            .log
            .truncate_after(last_log_id.map(|l| l.index))?;
        self.shared.chunks.unpin_after(last_log_id.map(|l| l.index));
        let purged = self.shared.meta.lock().map_err(io_err)?.rec.last_purged;
        let mut last = self.shared.last_log_id.lock().map_err(io_err)?;
        // Truncating after a point beyond the end changes nothing.
        let keep = match (*last, last_log_id) {
            (Some(cur), Some(cut)) if cur.index <= cut.index => Some(cur),
            (_, cut) => cut,
        };
        *last = keep.or(purged);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point durably first, then delete: never a hole.
        self.write_meta(|r| r.last_purged = Some(log_id), true)?;
        self.shared
            .recent
            .lock()
            .map_err(io_err)?
            .purge_upto(log_id.index);
        self.shared.log.purge_upto(log_id.index)?;
        self.shared.chunks.unpin_through(log_id.index);
        let mut last = self.shared.last_log_id.lock().map_err(io_err)?;
        if last.is_none_or(|l| l.index < log_id.index) {
            *last = Some(log_id);
        }
        Ok(())
    }
}
