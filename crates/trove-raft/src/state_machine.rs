//! openraft's `RaftStateMachine` over Trove's sled state store and snapshot directories.
//!
//! Apply is deterministic: it only reads the command and the current state. The last
//! applied log id and the membership are stored atomically with each entry's effects
//! (as "raft meta" in the same sled batch), so after a crash the store reports exactly
//! what it holds and openraft re-applies the rest from the log.
//!
//! Snapshots are directories under `<data>/snapshots/`, built from a point-in-time view
//! of the state (`StateStore::begin_export`: apply goes on while the export is written)
//! with hard links to the chunk files they reference. Off-cluster backups are exported
//! the same way into a directory of the caller's ([`StateMachine::export_backup`]), and
//! a backup becomes the initial state of a new cluster through [`seed_restored_state`].

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::vote::RaftLeaderIdExt;
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use trove_storage::snapshot::{SnapshotInfo, verify_snapshot};
use trove_storage::state::{StateCounts, StateStore};
use trove_types::limits::{
    INLINE_APPLY_MAX_BYTES, INLINE_APPLY_MAX_ENTRIES, MAX_APPLY_GROUP_BYTES,
    MAX_APPLY_GROUP_ENTRIES,
};
use trove_types::{Command, Op, OpOk};

use crate::codec::{decode, encode};
use crate::snapshot_pace::SnapshotPace;
use crate::types::{
    Applied, LogId, Snapshot, SnapshotDir, SnapshotMeta, StoredMembership, TroveNode, TypeConfig,
};

/// What the state store keeps about Raft next to the data.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RaftMeta {
    /// Last applied log id.
    pub last_applied: Option<LogId>,
    /// Last membership applied.
    pub membership: StoredMembership,
    /// Highest node id that was ever a member: ids are never reused.
    pub max_node_id: u64,
}

impl RaftMeta {
    fn decode(b: Option<Vec<u8>>) -> io::Result<RaftMeta> {
        match b {
            Some(b) => Ok(decode(&b)?),
            None => Ok(RaftMeta::default()),
        }
    }
}

/// What a snapshot (or backup) says about Raft: openraft's snapshot meta, then the
/// highest node id ever a member up to that point, so that a node rebuilt from the
/// snapshot still knows the ids of members removed before it and never hands one out
/// again.
///
/// Encoded as the codec's version byte, the postcard of the `SnapshotMeta`, then the id
/// as a postcard varint. Releases before the id was carried wrote the meta alone; they
/// read this encoding as well (postcard ignores trailing bytes), and their snapshots
/// decode here with the id taken from the membership.
pub fn encode_snapshot_meta(meta: &SnapshotMeta, max_node_id: u64) -> io::Result<Vec<u8>> {
    Ok(encode(&(meta, max_node_id))?)
}

/// Decodes what [`encode_snapshot_meta`] wrote (or an older release's meta alone):
/// the meta and the highest node id it knew of.
pub fn decode_snapshot_meta(raw: &[u8]) -> io::Result<(SnapshotMeta, u64)> {
    crate::codec::check_version(raw)?;
    let bad = |e: postcard::Error| io_err(format!("undecodable snapshot meta: {e}"));
    let (meta, rest): (SnapshotMeta, &[u8]) = postcard::take_from_bytes(&raw[1..]).map_err(bad)?;
    let carried = if rest.is_empty() {
        0
    } else {
        postcard::from_bytes::<u64>(rest).map_err(bad)?
    };
    let max_node_id = max_id(&meta.last_membership, carried);
    Ok((meta, max_node_id))
}

struct Inner {
    store: Arc<StateStore>,
    snapshots_dir: PathBuf,
    /// Serialises apply against snapshot install.
    apply_lock: Mutex<()>,
    /// Held by exports (snapshot builds, backups) and installs: an install never replaces
    /// the state under an export's walk. Taken before `apply_lock`.
    export_lock: Mutex<()>,
    /// The current snapshot (meta + directory).
    current: std::sync::Mutex<Option<(SnapshotMeta, PathBuf)>>,
    /// Fetches a chunk this node lost from a peer (set by the server once it runs).
    repairer: std::sync::OnceLock<ChunkRepairer>,
    /// Asks Raft for a snapshot (set by the server once it runs).
    snapshot_trigger: std::sync::OnceLock<SnapshotTrigger>,
    /// When to ask for the next snapshot (set with the trigger).
    snapshot_pace: std::sync::OnceLock<std::sync::Mutex<SnapshotPace>>,
}

/// Asks Raft to build a snapshot; resolves once Raft took the request (not the build).
pub type SnapshotTrigger =
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Fetches the chunk with this hash from a peer, verifies it and stores it in this
/// node's chunk store (the server's `repair` module).
pub type ChunkRepairer = Arc<
    dyn Fn(trove_types::Sha256Digest) -> futures::future::BoxFuture<'static, Result<(), String>>
        + Send
        + Sync,
>;

/// How many missing chunks one snapshot build repairs before giving up.
const MAX_SNAPSHOT_REPAIRS: usize = 64;

/// The state machine handed to openraft; clones share everything.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(io_err)?
}

/// A group's entries as `StateStore::apply_entries` takes them.
fn as_refs(group: &[(u64, Option<Command>)]) -> Vec<(u64, Option<&Command>)> {
    group.iter().map(|(i, c)| (*i, c.as_ref())).collect()
}

/// Whether a group of entries may be applied on the calling task rather than on a
/// blocking thread: small groups of record writes, a few sled operations each, for which
/// the two thread switches of `spawn_blocking` cost more than the work. Object commands
/// (chunk files, manifests with thousands of references) always go to a blocking thread,
/// and so does any group while the store has slow work due
/// (`StateStore::try_apply_entries_now`).
fn applies_quickly(group: &[(u64, Option<Command>)], bytes: usize) -> bool {
    bytes <= INLINE_APPLY_MAX_BYTES
        && group.len() <= INLINE_APPLY_MAX_ENTRIES
        && group.iter().all(|(_, c)| {
            c.as_ref()
                .is_none_or(|c| matches!(c.op, Op::PutRecord { .. } | Op::DeleteRecord { .. }))
        })
}

impl StateMachine {
    /// Opens the state machine over `store`, with snapshots kept in `snapshots_dir`.
    /// Loads the newest valid snapshot; if the store is behind it (the store lost
    /// unflushed state), installs the snapshot into the store.
    pub fn open(store: Arc<StateStore>, snapshots_dir: &Path) -> io::Result<StateMachine> {
        trove_storage::fsutil::create_dir_durable(snapshots_dir)?;
        let mut best: Option<(SnapshotMeta, u64, PathBuf)> = None;
        let mut entries: Vec<PathBuf> = std::fs::read_dir(snapshots_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            if !name.starts_with("snap-") || name.ends_with(".tmp") {
                // Leftover of an interrupted build or transfer.
                let _ = std::fs::remove_dir_all(&path);
                continue;
            }
            match verify_snapshot(&path) {
                Ok(info) => {
                    let (meta, max_node_id) = decode_snapshot_meta(&info.raft_meta)?;
                    if best
                        .as_ref()
                        .is_none_or(|(b, ..)| b.last_log_id < meta.last_log_id)
                    {
                        best = Some((meta, max_node_id, path));
                    }
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "ignoring an invalid snapshot");
                }
            }
        }
        if let Some((meta, snapshot_max_id, path)) = &best {
            let applied = RaftMeta::decode(store.raft_meta()?)?;
            if applied.last_applied < meta.last_log_id {
                tracing::warn!(
                    snapshot = ?meta.last_log_id, applied = ?applied.last_applied,
                    "state store is behind the last snapshot; reinstalling it"
                );
                let rm = RaftMeta {
                    last_applied: meta.last_log_id,
                    membership: meta.last_membership.clone(),
                    max_node_id: applied.max_node_id.max(*snapshot_max_id),
                };
                store.install_snapshot(path)?;
                store.apply(
                    meta.last_log_id.map(|l| l.index).unwrap_or(0),
                    None,
                    &encode(&rm)?,
                )?;
            }
        }
        Ok(StateMachine {
            inner: Arc::new(Inner {
                store,
                snapshots_dir: snapshots_dir.to_path_buf(),
                apply_lock: Mutex::new(()),
                export_lock: Mutex::new(()),
                current: std::sync::Mutex::new(best.map(|(meta, _, path)| (meta, path))),
                repairer: std::sync::OnceLock::new(),
                snapshot_trigger: std::sync::OnceLock::new(),
                snapshot_pace: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The state store, for reads.
    pub fn store(&self) -> &Arc<StateStore> {
        &self.inner.store
    }

    /// The Raft meta stored with the last applied entry.
    pub fn raft_meta(&self) -> io::Result<RaftMeta> {
        RaftMeta::decode(self.inner.store.raft_meta()?)
    }

    /// After the chunk store's copy of `hash` was repaired: if the current snapshot's
    /// copy (a hard link that shared the damaged file) fails verification, links the
    /// repaired file in its place, so the snapshot can again be installed and sent.
    /// Returns whether it replaced anything.
    pub fn repair_snapshot_chunk(&self, hash: &trove_types::Sha256Digest) -> io::Result<bool> {
        let Some(dir) = self
            .inner
            .current
            .lock()
            .map_err(io_err)?
            .as_ref()
            .map(|(_, p)| p.clone())
        else {
            return Ok(false);
        };
        let name = hex::encode(hash);
        let path = dir.join(trove_storage::snapshot::CHUNKS_DIR).join(&name);
        if !path.exists() || trove_storage::chunks::read_verified_file(&path, hash).is_ok() {
            return Ok(false);
        }
        let tmp = path.with_extension("repair");
        let _ = std::fs::remove_file(&tmp);
        self.inner
            .store
            .chunks()
            .link_to(hash, &tmp)
            .map_err(io_err)?;
        std::fs::rename(&tmp, &path)?;
        if let Some(parent) = path.parent() {
            trove_storage::fsutil::sync_dir(parent).map_err(io_err)?;
        }
        tracing::warn!(chunk = %name, snapshot = %dir.display(), "replaced the snapshot's damaged copy of a repaired chunk");
        Ok(true)
    }

    /// Lets snapshot builds fetch chunks this node lost from its peers (once).
    pub fn set_chunk_repairer(&self, r: ChunkRepairer) {
        let _ = self.inner.repairer.set(r);
    }

    /// Lets the state machine ask for snapshots, paced as [`crate::snapshot_pace`] says:
    /// after `every_entries` entries, no sooner than the last build allows, and once
    /// [`trove_types::limits::SNAPSHOT_EVERY_PAYLOAD_BYTES`] of command payload were
    /// applied (once).
    pub fn set_snapshot_trigger(&self, every_entries: u64, t: SnapshotTrigger) {
        let _ = self
            .inner
            .snapshot_pace
            .set(std::sync::Mutex::new(SnapshotPace::new(every_entries)));
        let _ = self.inner.snapshot_trigger.set(t);
    }

    fn pace(inner: &Inner) -> Option<std::sync::MutexGuard<'_, SnapshotPace>> {
        let pace = inner.snapshot_pace.get()?;
        Some(pace.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Counts an applied group and asks for a snapshot when one is due.
    fn count_applied(&self, entries: usize, bytes: usize) {
        let inner = &self.inner;
        let Some(wait) = Self::pace(inner)
            .and_then(|mut p| p.applied(entries as u64, bytes as u64, Instant::now()))
        else {
            return;
        };
        let Some(trigger) = inner.snapshot_trigger.get().cloned() else {
            return;
        };
        // Weak: a wait of minutes (after a slow build) must not keep a stopped node's
        // state store open.
        let inner = Arc::downgrade(inner);
        tracing::debug!(?wait, "a snapshot is due; asking for one");
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if inner.strong_count() == 0 {
                return;
            }
            if let Err(e) = trigger().await {
                tracing::warn!(error = %e, "asking for a snapshot failed");
                if let Some(inner) = inner.upgrade()
                    && let Some(mut p) = Self::pace(&inner)
                {
                    p.ask_failed();
                }
            }
        });
    }

    /// Whether a valid snapshot was found (at open) or built since.
    pub fn has_snapshot(&self) -> bool {
        self.inner
            .current
            .lock()
            .map(|c| c.is_some())
            .unwrap_or(false)
    }

    /// Directory where incoming snapshots are assembled (same filesystem as the store).
    pub fn incoming_dir(&self) -> PathBuf {
        self.inner.snapshots_dir.clone()
    }
}

/// A point-in-time export of the state for an off-cluster backup.
#[derive(Clone, Debug)]
pub struct BackupExport {
    /// Last applied log id and membership at the moment of the export.
    pub meta: SnapshotMeta,
    /// The exported directory (`state.bin` + `chunks/`) and its tables' sizes.
    pub info: SnapshotInfo,
}

/// What [`seed_restored_state`] installed.
#[derive(Clone, Debug)]
pub struct RestoredState {
    /// The log id the restored state stands at (see [`seed_restored_state`]).
    pub last_applied: LogId,
    /// The source cluster's last applied log id, as recorded in the backup.
    pub source_last_applied: Option<LogId>,
    /// Sizes of the installed state's tables.
    pub counts: StateCounts,
}

impl StateMachine {
    /// Read-only check of the snapshot directories in `snapshots_dir`: a snapshot written
    /// in a format this binary does not understand is refused (rather than ignored as
    /// invalid, which would quietly fall back to an older state). Modifies nothing.
    pub fn check_formats(snapshots_dir: &Path) -> io::Result<()> {
        if !snapshots_dir.is_dir() {
            return Ok(());
        }
        for entry in std::fs::read_dir(snapshots_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("snap-") && !name.ends_with(".tmp") {
                trove_storage::snapshot::check_version(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Exports the state into `dir` (which must not exist) for an off-cluster backup:
    /// like [`RaftSnapshotBuilder::build_snapshot`], exactly the state after
    /// `meta.last_log_id` (and the counts are of that state), while apply goes on; but the
    /// directory is the caller's and never becomes the current snapshot. Chunk files are
    /// hard links: `dir` must be on the data directory's filesystem.
    pub async fn export_backup(&self, dir: &Path) -> io::Result<BackupExport> {
        let inner = self.inner.clone();
        let _exporting = inner.export_lock.lock().await;
        let dir = dir.to_path_buf();
        let (meta, info) = export(&inner, "backup export", move |_| Ok(dir)).await?;
        Ok(BackupExport { meta, info })
    }
}

/// Exports a point-in-time view of the state into the directory `dir_for` names for its
/// snapshot meta (replacing what is there), with the caller holding the export lock.
/// Apply waits only while the view opens. A chunk file this node lost (the scrubber may
/// not have reached it yet) is fetched from a peer rather than failing the export.
async fn export(
    inner: &Arc<Inner>,
    what: &'static str,
    dir_for: impl FnOnce(&SnapshotMeta) -> io::Result<PathBuf> + Send + 'static,
) -> io::Result<(SnapshotMeta, SnapshotInfo)> {
    let inner2 = inner.clone();
    let runtime = tokio::runtime::Handle::current();
    blocking(move || {
        let export = inner2.store.begin_export().map_err(io_err)?;
        let rm = RaftMeta::decode(export.applied_raft_meta().map(<[u8]>::to_vec))?;
        let meta = SnapshotMeta {
            last_log_id: rm.last_applied,
            last_membership: rm.membership,
        };
        let dir = dir_for(&meta)?;
        if dir.exists() {
            // Same point as an existing snapshot: it is rebuilt cleanly.
            std::fs::remove_dir_all(&dir)?;
        }
        let mut repairs = 0;
        let mut fetch_missing = |hash: &trove_types::Sha256Digest| {
            let missing = || trove_storage::StorageError::MissingChunk(*hash);
            let Some(repair) = inner2.repairer.get() else {
                return Err(missing());
            };
            if repairs >= MAX_SNAPSHOT_REPAIRS {
                return Err(missing());
            }
            repairs += 1;
            tracing::warn!(chunk = %hex::encode(hash), "{what} met a missing chunk; fetching it from a peer");
            runtime.block_on(repair(*hash)).map_err(|e| {
                trove_storage::StorageError::Invalid(format!(
                    "{what}: chunk {} is missing and could not be repaired: {e}",
                    hex::encode(hash)
                ))
            })
        };
        let info = export
            .write(
                &dir,
                &encode_snapshot_meta(&meta, rm.max_node_id)?,
                &mut fetch_missing,
            )
            .map_err(io_err)?;
        Ok((meta, info))
    })
    .await
}

/// Seeds an empty state store with a backup (a snapshot directory exported by
/// [`StateMachine::export_backup`]) as the initial state of a NEW cluster of `members`.
///
/// How a restored node fits openraft's model:
/// - The state is installed with raft meta `last_applied = (term 0, node 0, index N)`,
///   N being the source's last applied index, and the membership `members` (all voters)
///   stored at that same log id. No log entry is written: the log stays empty.
/// - On its first start openraft finds `last_applied` ahead of the empty log and purges
///   the log up to it (its clean-up for "a snapshot was installed but the log not yet
///   purged"), builds a snapshot from the state (to send to new or lagging members), and
///   takes the membership from the state machine. The node counts as initialised (it
///   has a last log id), so `Raft::initialize` is never called and no membership entry
///   is appended at an index that would overwrite the restored raft meta.
/// - Term 0 is below every term an election produces, so the first leader's entries
///   (term >= 1, index N+1 on) sort after it; keeping index N keeps revisions monotonic
///   (every new write gets a revision above every revision in the backup).
/// - Every member restored from the same backup with the same member list holds the
///   same state at the same log id, so any of them can be elected.
pub fn seed_restored_state(
    store: &StateStore,
    backup_dir: &Path,
    members: &BTreeMap<u64, TroveNode>,
) -> io::Result<RestoredState> {
    let voters: BTreeSet<u64> = members.keys().copied().collect();
    if voters.is_empty() {
        return Err(io_err("a restored cluster needs at least one member"));
    }
    let raw = store.install_snapshot(backup_dir)?;
    let (source, source_max_id) = decode_snapshot_meta(&raw)?;
    let index = source.last_log_id.map(|l| l.index).unwrap_or(0);
    let last_applied = LogId::new(
        <<TypeConfig as openraft::RaftTypeConfig>::LeaderId as RaftLeaderIdExt>::new_committed(
            0, 0,
        ),
        index,
    );
    let membership = openraft::Membership::new(vec![voters], members.clone())
        .map_err(|e| io_err(format!("invalid member list: {e}")))?;
    let membership = StoredMembership::new(Some(last_applied), membership);
    let rm = RaftMeta {
        last_applied: Some(last_applied),
        max_node_id: max_id(&membership, source_max_id),
        membership,
    };
    store.apply(index, None, &encode(&rm)?)?;
    store.flush()?;
    Ok(RestoredState {
        last_applied,
        source_last_applied: source.last_log_id,
        counts: store.counts()?,
    })
}

/// The bytes a command carries (what bounds an apply group's memory).
fn payload_bytes(cmd: &Command) -> usize {
    match &cmd.op {
        Op::PutRecord { value, .. } => value.len(),
        Op::PutChunk { data, .. } => data.len(),
        _ => 0,
    }
}

fn max_id(m: &StoredMembership, prev: u64) -> u64 {
    m.membership()
        .nodes()
        .map(|(id, _)| *id)
        .fold(prev, u64::max)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotDir;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let m = self.raft_meta()?;
        Ok((m.last_applied, m.membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        // Entries are applied in groups (one sled batch each, see
        // `StateStore::apply_entries`), bounded in count and in command bytes.
        let mut meta = self.raft_meta()?;
        let mut ended = false;
        while !ended {
            let mut group = Vec::new();
            let mut responders = Vec::new();
            let mut bytes = 0usize;
            while group.len() < MAX_APPLY_GROUP_ENTRIES && bytes < MAX_APPLY_GROUP_BYTES {
                let Some((entry, responder)) = entries.next().await.transpose()? else {
                    ended = true;
                    break;
                };
                meta.last_applied = Some(entry.log_id);
                let cmd = match entry.payload {
                    EntryPayload::Blank => None,
                    EntryPayload::Normal(cmd) => Some(cmd),
                    EntryPayload::Membership(m) => {
                        meta.membership = StoredMembership::new(Some(entry.log_id), m);
                        meta.max_node_id = max_id(&meta.membership, meta.max_node_id);
                        None
                    }
                };
                bytes += cmd.as_ref().map_or(0, payload_bytes);
                group.push((entry.log_id.index, cmd));
                responders.push(responder);
            }
            if group.is_empty() {
                break;
            }
            let meta_bytes = encode(&meta)?;
            let store = self.inner.store.clone();
            let guard = self.inner.apply_lock.lock().await;
            let now = if applies_quickly(&group, bytes) {
                store.try_apply_entries_now(&as_refs(&group), &meta_bytes)
            } else {
                None
            };
            let results = match now {
                Some(results) => results?,
                None => {
                    blocking(move || Ok(store.apply_entries(&as_refs(&group), &meta_bytes)?))
                        .await?
                }
            };
            drop(guard);
            self.count_applied(responders.len(), bytes);
            for (responder, result) in responders.into_iter().zip(results) {
                if let Some(r) = responder {
                    r.send(Applied(result.unwrap_or(Ok(OpOk::Done))));
                }
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotDir,
    ) -> Result<(), io::Error> {
        let started = Instant::now();
        let inner = self.inner.clone();
        let name = snapshot_name(meta);
        let dest = inner.snapshots_dir.join(&name);
        let lock_holder = self.inner.clone();
        let _exporting = lock_holder.export_lock.lock().await;
        let _guard = lock_holder.apply_lock.lock().await;
        let meta2 = meta.clone();
        let prev_max = self.raft_meta()?.max_node_id;
        let dest2 = dest.clone();
        blocking(move || {
            if snapshot.path != dest2 {
                if dest2.exists() {
                    std::fs::remove_dir_all(&dest2)?;
                }
                copy_snapshot_dir(&snapshot.path, &dest2)?;
            }
            verify_snapshot(&dest2)?;
            let raw = inner.store.install_snapshot(&dest2)?;
            let (_, snapshot_max_id) = decode_snapshot_meta(&raw)?;
            let rm = RaftMeta {
                last_applied: meta2.last_log_id,
                membership: meta2.last_membership.clone(),
                // `snapshot_max_id` counts the snapshot's membership already.
                max_node_id: prev_max.max(snapshot_max_id),
            };
            inner.store.apply(
                meta2.last_log_id.map(|l| l.index).unwrap_or(0),
                None,
                &encode(&rm)?,
            )?;
            inner.store.flush()?;
            Ok(())
        })
        .await?;
        self.set_current(meta.clone(), dest)?;
        metrics::histogram!(trove_types::metrics::SNAPSHOT_INSTALL_SECONDS)
            .record(started.elapsed().as_secs_f64());
        tracing::info!(last = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let cur = self.inner.current.lock().map_err(io_err)?.clone();
        Ok(cur.map(|(meta, path)| Snapshot {
            meta,
            snapshot: SnapshotDir { path },
        }))
    }
}

impl StateMachine {
    /// Makes `(meta, dir)` the current snapshot and deletes older snapshot directories.
    fn set_current(&self, meta: SnapshotMeta, dir: PathBuf) -> io::Result<()> {
        let old = self
            .inner
            .current
            .lock()
            .map_err(io_err)?
            .replace((meta, dir.clone()));
        if let Some((_, old_dir)) = old
            && old_dir != dir
        {
            let _ = std::fs::remove_dir_all(&old_dir);
        }
        Ok(())
    }
}

fn snapshot_name(meta: &SnapshotMeta) -> String {
    match meta.last_log_id {
        Some(l) => format!("snap-{:020}-{:020}", l.index, l.leader_id.term),
        None => "snap-00000000000000000000-00000000000000000000".to_string(),
    }
}

/// Copies a snapshot directory by hard links where possible (same filesystem), else by
/// copying; fsyncs the result. Used when the source belongs to someone else.
fn copy_snapshot_dir(src: &Path, dest: &Path) -> io::Result<()> {
    let tmp = dest.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    copy_tree(src, &tmp)?;
    std::fs::rename(&tmp, dest)?;
    if let Some(p) = dest.parent() {
        trove_storage::fsutil::sync_dir(p)?;
    }
    Ok(())
}

fn copy_tree(src: &Path, dest: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dest)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let to = dest.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &to)?;
        } else if std::fs::hard_link(e.path(), &to).is_err() {
            std::fs::copy(e.path(), &to)?;
            std::fs::File::open(&to)?.sync_all()?;
        }
    }
    trove_storage::fsutil::sync_dir(dest)?;
    Ok(())
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotDir;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let started = Instant::now();
        let inner = self.inner.clone();
        let _exporting = inner.export_lock.lock().await;
        if let Some(mut p) = Self::pace(&inner) {
            p.build_started();
        }
        let snapshots_dir = inner.snapshots_dir.clone();
        let (meta, info) = export(&inner, "snapshot build", move |meta| {
            Ok(snapshots_dir.join(snapshot_name(meta)))
        })
        .await?;
        let dir = info.dir.clone();
        self.set_current(meta.clone(), dir.clone())?;
        let took = started.elapsed();
        if let Some(mut p) = Self::pace(&inner) {
            p.build_finished(took, Instant::now());
        }
        metrics::histogram!(trove_types::metrics::SNAPSHOT_BUILD_SECONDS)
            .record(took.as_secs_f64());
        tracing::info!(last = ?meta.last_log_id, "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: SnapshotDir { path: dir },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, len: usize) -> Option<Command> {
        Some(Command {
            request_id: None,
            time_ms: 0,
            op: Op::PutRecord {
                key: key.into(),
                value: vec![0u8; len].into(),
                expected_revision: None,
            },
        })
    }

    #[test]
    fn only_small_groups_of_record_writes_are_applied_inline() {
        let records: Vec<_> = (0..8).map(|i| (i, put("k", 256))).collect();
        assert!(applies_quickly(&records, 8 * 256));
        let with_blank = vec![(1, None), (2, put("k", 10))];
        assert!(applies_quickly(&with_blank, 10));

        let many: Vec<_> = (0..INLINE_APPLY_MAX_ENTRIES as u64 + 1)
            .map(|i| (i, put("k", 1)))
            .collect();
        assert!(!applies_quickly(&many, many.len()));
        assert!(!applies_quickly(&records, INLINE_APPLY_MAX_BYTES + 1));

        let chunk = Some(Command {
            request_id: None,
            time_ms: 0,
            op: Op::PutChunk {
                upload_id: 1,
                hash: [0; 32],
                data: vec![0u8; 16].into(),
            },
        });
        assert!(!applies_quickly(&[(1, put("k", 1)), (2, chunk)], 17));
    }
}
