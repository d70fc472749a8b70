//! Storage conformance and durability tests for the Raft adapters over the real stores:
//! openraft's own storage suite, plus reopen tests (write, drop without a clean
//! shutdown, reopen, check vote, log, commit index and state).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, StorageError};
use tempfile::TempDir;
use trove_raft::types::{Entry, LogId, Vote};
use trove_raft::{LogStore, StateMachine, TypeConfig};
use trove_storage::chunks::ChunkStore;
use trove_storage::state::StateStore;
use trove_types::{Command, Op};

/// The log store of the node directory `dir`, with its chunk store (chunk entries keep
/// their payload there).
fn open_log(dir: &std::path::Path) -> std::io::Result<LogStore> {
    LogStore::open(&dir.join("raft"), ChunkStore::open(&dir.join("chunks"))?)
}

fn open(dir: &std::path::Path) -> std::io::Result<(LogStore, StateMachine)> {
    let chunks = ChunkStore::open(&dir.join("chunks"))?;
    let log = LogStore::open(&dir.join("raft"), chunks.clone())?;
    let store = Arc::new(StateStore::open(&dir.join("state"), chunks)?);
    let sm = StateMachine::open(store, &dir.join("snapshots"))?;
    Ok((log, sm))
}

/// Reopens after a drop. sled's background flusher keeps a dropped database locked
/// for a moment (in production the process is gone), so retry while it is.
async fn reopen(dir: &std::path::Path) -> (LogStore, StateMachine) {
    for _ in 0..100 {
        match open(dir) {
            Ok(v) => return v,
            Err(e) if e.to_string().contains("could not acquire lock") => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(e) => panic!("reopen failed: {e}"),
        }
    }
    panic!("the state database stayed locked after its owner was dropped");
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let td = TempDir::new().map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let (log, sm) =
            open(td.path()).map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        Ok((td, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder).await.unwrap();
}

fn log_id(term: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, 1, index)
}

fn entry(term: u64, index: u64, key: &str) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command {
            request_id: None,
            time_ms: 1,
            op: Op::PutRecord {
                key: key.to_string(),
                value: bytes::Bytes::from(format!("v{index}")),
                expected_revision: None,
            },
        }),
    }
}

async fn append_durably(log: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
}

/// Write, drop without any clean shutdown, reopen: vote, log, purge point and commit
/// index are exactly what was made durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_vote_log_and_commit() {
    let td = TempDir::new().unwrap();
    {
        let mut log = open_log(td.path()).unwrap();
        let vote = Vote::new(3, 2);
        log.save_vote(&vote).await.unwrap();
        append_durably(
            &mut log,
            (1..=20).map(|i| entry(3, i, &format!("k{i}"))).collect(),
        )
        .await;
        log.save_committed(Some(log_id(3, 15))).await.unwrap();
        log.truncate_after(Some(log_id(3, 18))).await.unwrap();
        log.purge(log_id(3, 4)).await.unwrap();
        // Dropped here without any shutdown call.
    }
    let mut log = open_log(td.path()).unwrap();
    let mut reader = log.get_log_reader().await;
    assert_eq!(reader.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    let st = log.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(3, 4)));
    assert_eq!(st.last_log_id, Some(log_id(3, 18)));
    let entries = reader.try_get_log_entries(0..100).await.unwrap();
    let idx: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(idx, (5..=18).collect::<Vec<_>>());
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(3, 15)));
}

/// A commit index that the log cannot back (lost with unsynced log pages) is not
/// reported after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_beyond_log_is_ignored() {
    let td = TempDir::new().unwrap();
    {
        let mut log = open_log(td.path()).unwrap();
        append_durably(&mut log, (1..=5).map(|i| entry(1, i, "k")).collect()).await;
        log.save_committed(Some(log_id(1, 9))).await.unwrap();
    }
    let mut log = open_log(td.path()).unwrap();
    assert_eq!(log.read_committed().await.unwrap(), None);
}

/// Applied state survives a reopen; a snapshot survives and is found again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_machine_reopen_and_snapshot() {
    use openraft::storage::RaftSnapshotBuilder;
    let td = TempDir::new().unwrap();
    let snap_meta;
    {
        let (_log, mut sm) = open(td.path()).unwrap();
        let items: Vec<Result<_, std::io::Error>> = (1..=10)
            .map(|i| Ok((entry(2, i, &format!("k{i}")), None)))
            .collect();
        sm.apply(futures::stream::iter(items)).await.unwrap();
        let mut b = sm.get_snapshot_builder().await;
        let snap = b.build_snapshot().await.unwrap();
        snap_meta = snap.meta.clone();
        assert_eq!(snap.meta.last_log_id, Some(log_id(2, 10)));
        sm.store().flush().unwrap();
    }
    let (_log, mut sm) = reopen(td.path()).await;
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(2, 10)));
    let cur = sm
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("snapshot found after reopen");
    assert_eq!(cur.meta, snap_meta);
    let rec = sm.store().get_record("k7").unwrap().unwrap();
    assert_eq!(rec.revision, 7);
    assert_eq!(&rec.value[..], b"v7");
}

/// A backup export seeds a fresh store as a new cluster's state: same data, the source's
/// applied index at term 0, the new members as voters; the source keeps applying while
/// the export directory stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_export_seeds_a_new_cluster_state() {
    use std::collections::BTreeMap;
    use trove_raft::TroveNode;
    let td = TempDir::new().unwrap();
    let (_log, mut sm) = open(&td.path().join("source")).unwrap();
    let items: Vec<Result<_, std::io::Error>> = (1..=6)
        .map(|i| Ok((entry(3, i, &format!("k{i}")), None)))
        .collect();
    sm.apply(futures::stream::iter(items)).await.unwrap();
    let export_dir = td.path().join("source").join("backups").join("b1");
    let export = sm.export_backup(&export_dir).await.unwrap();
    assert_eq!(export.meta.last_log_id, Some(log_id(3, 6)));
    assert_eq!(export.info.counts.records, 6);
    let digest = sm.store().digest().unwrap();
    // Later writes do not reach the export.
    let more: Vec<Result<_, std::io::Error>> = vec![Ok((entry(3, 7, "k7"), None))];
    sm.apply(futures::stream::iter(more)).await.unwrap();

    let dest = td.path().join("dest");
    let store = StateStore::open(
        &dest.join("state"),
        ChunkStore::open(&dest.join("chunks")).unwrap(),
    )
    .unwrap();
    let members: BTreeMap<u64, TroveNode> = (1..=3)
        .map(|i| {
            let node = TroveNode {
                peer_addr: format!("h{i}:7101"),
                client_addr: String::new(),
            };
            (i, node)
        })
        .collect();
    let restored = trove_raft::seed_restored_state(&store, &export_dir, &members).unwrap();
    assert_eq!(restored.source_last_applied, Some(log_id(3, 6)));
    assert_eq!(restored.last_applied.index, 6);
    assert_eq!(restored.last_applied.leader_id.term, 0);
    assert_eq!(store.digest().unwrap(), digest);
    assert!(store.get_record("k7").unwrap().is_none());
    let rm: trove_raft::RaftMeta =
        trove_raft::codec::decode(&store.raft_meta().unwrap().unwrap()).unwrap();
    assert_eq!(rm.last_applied, Some(restored.last_applied));
    let voters: Vec<u64> = rm.membership.membership().voter_ids().collect();
    assert_eq!(voters, vec![1, 2, 3]);
    assert_eq!(rm.max_node_id, 3);
}

fn membership_entry(index: u64, ids: &[u64]) -> Entry {
    use std::collections::{BTreeMap, BTreeSet};
    let nodes: BTreeMap<u64, trove_raft::TroveNode> = ids
        .iter()
        .map(|&i| {
            let node = trove_raft::TroveNode {
                peer_addr: format!("h{i}:7101"),
                client_addr: String::new(),
            };
            (i, node)
        })
        .collect();
    let voters: BTreeSet<u64> = ids.iter().copied().collect();
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Membership(openraft::Membership::new(vec![voters], nodes).unwrap()),
    }
}

/// Node ids are never reused, also by a node whose state came from a snapshot taken
/// after a member was removed: the snapshot carries the highest id ever a member, so a
/// follower that installs it, a node that rebuilds its state from its own snapshot, and
/// a cluster restored from a backup all still know node 4 existed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_carry_the_highest_node_id_ever_a_member() {
    use openraft::storage::RaftSnapshotBuilder;
    let td = TempDir::new().unwrap();
    let source = td.path().join("source");
    let snap = {
        let (_log, mut sm) = open(&source).unwrap();
        let items: Vec<Result<_, std::io::Error>> = vec![
            Ok((membership_entry(1, &[1, 2, 3, 4]), None)),
            Ok((membership_entry(2, &[1, 2, 3]), None)),
            Ok((entry(1, 3, "k3"), None)),
        ];
        sm.apply(futures::stream::iter(items)).await.unwrap();
        assert_eq!(sm.raft_meta().unwrap().max_node_id, 4);
        let mut b = sm.get_snapshot_builder().await;
        let snap = b.build_snapshot().await.unwrap();
        let export = sm.export_backup(&source.join("b1")).await.unwrap();
        assert_eq!(export.meta.last_log_id, Some(log_id(1, 3)));
        snap
    };
    let members: Vec<u64> = snap.meta.last_membership.membership().voter_ids().collect();
    assert_eq!(members, vec![1, 2, 3], "node 4 is gone from the membership");

    // A follower that installs the snapshot.
    let (_log, mut follower) = open(&td.path().join("follower")).unwrap();
    let copy = td.path().join("incoming");
    std::fs::create_dir_all(copy.join("chunks")).unwrap();
    std::fs::copy(snap.snapshot.path.join("state.bin"), copy.join("state.bin")).unwrap();
    follower
        .install_snapshot(&snap.meta, trove_raft::SnapshotDir { path: copy })
        .await
        .unwrap();
    assert_eq!(follower.raft_meta().unwrap().max_node_id, 4);

    // The source, its state lost, rebuilt from its own snapshot at start-up.
    std::fs::remove_dir_all(source.join("state")).unwrap();
    let (_log, rebuilt) = reopen(&source).await;
    assert_eq!(
        rebuilt.raft_meta().unwrap().last_applied,
        Some(log_id(1, 3))
    );
    assert_eq!(rebuilt.raft_meta().unwrap().max_node_id, 4);

    // A new cluster of nodes 1 to 3 restored from the backup.
    let dest = td.path().join("dest");
    let store = StateStore::open(
        &dest.join("state"),
        ChunkStore::open(&dest.join("chunks")).unwrap(),
    )
    .unwrap();
    let members: std::collections::BTreeMap<u64, trove_raft::TroveNode> = (1..=3)
        .map(|i| {
            let node = trove_raft::TroveNode {
                peer_addr: format!("n{i}:7101"),
                client_addr: String::new(),
            };
            (i, node)
        })
        .collect();
    trove_raft::seed_restored_state(&store, &source.join("b1"), &members).unwrap();
    let rm: trove_raft::RaftMeta =
        trove_raft::codec::decode(&store.raft_meta().unwrap().unwrap()).unwrap();
    assert_eq!(rm.max_node_id, 4);
}

/// A snapshot written before the highest id was carried (the meta alone) still opens;
/// its id is then the membership's.
#[test]
fn snapshot_meta_without_the_id_decodes() {
    let meta = trove_raft::types::SnapshotMeta {
        last_log_id: Some(log_id(2, 9)),
        last_membership: Default::default(),
    };
    let old = trove_raft::codec::encode(&meta).unwrap();
    let (decoded, max) = trove_raft::state_machine::decode_snapshot_meta(&old).unwrap();
    assert_eq!((decoded, max), (meta.clone(), 0));
    let new = trove_raft::state_machine::encode_snapshot_meta(&meta, 7).unwrap();
    assert_eq!(
        trove_raft::state_machine::decode_snapshot_meta(&new).unwrap(),
        (meta.clone(), 7)
    );
    // What an older release reads from the new encoding: the meta, the id ignored.
    let read_by_old: trove_raft::types::SnapshotMeta = trove_raft::codec::decode(&new).unwrap();
    assert_eq!(read_by_old, meta);
}

/// A chunk entry whose `hash` field marks which append wrote it (the log does not check
/// it) and whose data has `len` bytes.
fn chunk_entry(term: u64, index: u64, generation: u8, len: usize) -> Entry {
    let mut hash = [0u8; 32];
    hash[0] = generation;
    hash[1..9].copy_from_slice(&index.to_le_bytes());
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command {
            request_id: None,
            time_ms: 1,
            op: Op::PutChunk {
                upload_id: 7,
                hash,
                data: bytes::Bytes::from(vec![generation; len]),
            },
        }),
    }
}

/// What identifies a chunk entry written by [`chunk_entry`].
fn chunk_mark(e: &Entry) -> (LogId, [u8; 32], usize) {
    match &e.payload {
        EntryPayload::Normal(Command {
            op: Op::PutChunk { hash, data, .. },
            ..
        }) => (e.log_id, *hash, data.len()),
        other => panic!("not a chunk entry: {other:?}"),
    }
}

/// A small deterministic generator (xorshift), so a failure replays.
struct Roll(u64);

impl Roll {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

type Model = std::collections::BTreeMap<u64, (LogId, [u8; 32], usize)>;

/// Random ranges read through openraft's reader API match `model`, capped reads
/// included.
async fn check_reads(log: &mut LogStore, model: &Model, roll: &mut Roll) {
    let mut reader = log.get_log_reader().await;
    let lo = model.keys().next().copied().unwrap_or(0);
    let hi = model.keys().last().map(|k| k + 1).unwrap_or(0);
    for _ in 0..12 {
        let start = lo.saturating_sub(1) + roll.below(hi - lo + 3);
        let end = start + 1 + roll.below(30);
        let got: Vec<_> = reader
            .try_get_log_entries(start..end)
            .await
            .unwrap()
            .iter()
            .map(chunk_mark)
            .collect();
        let want: Vec<_> = model.range(start..end).map(|(_, m)| *m).collect();
        assert_eq!(got, want, "entries {start}..{end}");
        let capped: Vec<_> = reader
            .limited_get_log_entries(start, end)
            .await
            .unwrap()
            .iter()
            .map(chunk_mark)
            .collect();
        assert!(
            capped.len() <= want.len() && capped[..] == want[..capped.len()],
            "a capped read of {start}..{end} is a prefix of the entries"
        );
        assert!(
            want.is_empty() || !capped.is_empty(),
            "a capped read of {start}..{end} returns at least one entry"
        );
        let bytes: usize = capped.iter().map(|m| m.2).sum();
        assert!(
            capped.len() <= 1 || bytes <= trove_types::limits::MAX_APPEND_BATCH_BYTES,
            "a capped read of {start}..{end} holds {bytes} bytes of chunk data"
        );
    }
}

/// The newest entries are read from memory, not the file: reads must match the log
/// exactly through appends beyond what memory keeps, truncations (a new leader's
/// entries replacing the old ones at the same indexes) and purges, for any range and
/// with the byte cap of an AppendEntries batch. Checked against a model, and then
/// against the file alone after reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_reads_match_the_log_through_truncations_and_purges() {
    let td = TempDir::new().unwrap();
    let mut log = open_log(td.path()).unwrap();
    let mut model = Model::new();
    let (mut truncated, mut purged) = (0, 0);
    let mut next = 0u64;
    // Every third entry is 1.5 MiB, so memory (16 MiB) holds only part of the log and
    // capped reads cross between large and small entries.
    let size = |i: u64| {
        if i.is_multiple_of(3) {
            1536 * 1024
        } else {
            100 + (i % 7) as usize
        }
    };
    let mut roll = Roll(0x2545_f491_4f6c_dd1d);
    for step in 0..80u8 {
        match roll.below(10) {
            // Truncate: a new leader's entries replace the tail.
            0 if !model.is_empty() => {
                let first = *model.keys().next().unwrap();
                let cut = first + roll.below(model.len() as u64);
                log.truncate_after(Some(model[&cut].0)).await.unwrap();
                model.retain(|&i, _| i <= cut);
                next = cut + 1;
                truncated += 1;
            }
            // Purge a prefix.
            1 if model.len() > 4 => {
                let first = *model.keys().next().unwrap();
                let upto = first + roll.below(model.len() as u64 / 2);
                log.purge(model[&upto].0).await.unwrap();
                model.retain(|&i, _| i > upto);
                purged += 1;
            }
            _ => {
                let n = 1 + roll.below(6);
                let term = 1 + u64::from(step) / 8;
                let batch: Vec<Entry> = (next..next + n)
                    .map(|i| chunk_entry(term, i, step, size(i)))
                    .collect();
                for e in &batch {
                    model.insert(e.log_id.index, chunk_mark(e));
                }
                append_durably(&mut log, batch).await;
                next += n;
            }
        }
        check_reads(&mut log, &model, &mut roll).await;
    }
    assert!(
        truncated > 2 && purged > 2 && next > 60,
        "the run appended ({next}), truncated ({truncated}) and purged ({purged})"
    );
    drop(log);
    // The file alone (nothing is in memory after a reopen) holds the same entries.
    let mut log = open_log(td.path()).unwrap();
    let mut reader = log.get_log_reader().await;
    let all: Vec<_> = reader
        .try_get_log_entries(0..next + 10)
        .await
        .unwrap()
        .iter()
        .map(chunk_mark)
        .collect();
    assert_eq!(all, model.values().copied().collect::<Vec<_>>());
}

const CHUNK: usize = 1 << 20;

/// A 1 MiB chunk entry named by its SHA-256, as the leader proposes them.
fn named_chunk_entry(term: u64, index: u64) -> (Entry, trove_types::Sha256Digest) {
    let data: Vec<u8> = (0..CHUNK).map(|i| (i as u8) ^ (index as u8)).collect();
    let hash = trove_types::Sha256::digest(&data);
    let e = Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command {
            request_id: None,
            time_ms: 1,
            op: Op::PutChunk {
                upload_id: 5,
                hash,
                data: bytes::Bytes::from(data),
            },
        }),
    };
    (e, hash)
}

/// A chunk entry's bytes are written once: into its chunk file, durable by the time the
/// append is, and the log record names the file. Read back after a reopen (nothing in
/// memory) the entries are whole again; the file is kept while the log holds the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_entry_keeps_its_bytes_only_in_its_chunk_file() {
    let td = TempDir::new().unwrap();
    let (entries, hashes): (Vec<Entry>, Vec<_>) = (1..=3).map(|i| named_chunk_entry(1, i)).unzip();
    {
        let chunks = ChunkStore::open(&td.path().join("chunks")).unwrap();
        let mut log = LogStore::open(&td.path().join("raft"), chunks.clone()).unwrap();
        append_durably(&mut log, entries.clone()).await;
        for h in &hashes {
            assert_eq!(chunks.file_len(h).unwrap(), Some(CHUNK as u64));
        }
        assert!(
            log.log_bytes() < 64 * 1024,
            "the log holds {} bytes for three 1 MiB chunk entries",
            log.log_bytes()
        );
        assert_eq!(chunks.pinned_entries(), 3);
        // A release by the state while the log holds the entry leaves the file.
        chunks.remove_many(&hashes[..1]).unwrap();
        assert!(chunks.contains(&hashes[0]));
    }
    let chunks = ChunkStore::open(&td.path().join("chunks")).unwrap();
    let mut log = LogStore::open(&td.path().join("raft"), chunks.clone()).unwrap();
    assert_eq!(chunks.pinned_entries(), 3, "pins are rebuilt from the log");
    assert!(log.reseed_needed().is_none());
    let mut reader = log.get_log_reader().await;
    assert_eq!(reader.try_get_log_entries(1..4).await.unwrap(), entries);

    // Truncation and purge let go of them.
    log.truncate_after(Some(log_id(1, 2))).await.unwrap();
    assert_eq!(chunks.take_unpinned(), vec![hashes[2]]);
    log.purge(log_id(1, 1)).await.unwrap();
    assert_eq!(chunks.take_unpinned(), vec![hashes[0]]);
    assert_eq!(chunks.pinned_entries(), 1);
}

/// A chunk entry whose file is gone lost its payload: the log is damaged from that entry
/// on, exactly as if its record were, so the node keeps the entries before it and waits
/// to be re-seeded before it votes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_entry_whose_file_is_gone_is_log_damage() {
    let td = TempDir::new().unwrap();
    let (mut entries, hashes): (Vec<Entry>, Vec<_>) =
        (1..=4).map(|i| named_chunk_entry(1, i)).unzip();
    entries.push(entry(1, 5, "k"));
    {
        let mut log = open_log(td.path()).unwrap();
        append_durably(&mut log, entries.clone()).await;
    }
    let chunks = ChunkStore::open(&td.path().join("chunks")).unwrap();
    std::fs::remove_file(chunks.path_of(&hashes[2])).unwrap();
    let mut log = LogStore::open(&td.path().join("raft"), chunks.clone()).unwrap();
    let why = log.reseed_needed().expect("must wait to be re-seeded");
    assert!(why.contains("from index 3"), "{why}");
    assert!(log.state_rebuild_pending());
    let st = log.get_log_state().await.unwrap();
    assert_eq!(st.last_log_id, Some(log_id(1, 2)));
    assert_eq!(chunks.pinned_entries(), 2);
    let aside: Vec<_> = std::fs::read_dir(td.path().join("raft"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("log-damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged part is kept for inspection");
    assert!(std::fs::read_dir(aside[0].path()).unwrap().count() > 0);
    let mut reader = log.get_log_reader().await;
    assert_eq!(
        reader.try_get_log_entries(1..10).await.unwrap(),
        entries[..2].to_vec()
    );
}

/// Reads from the log file are bounded by the memory they load: a record that names its
/// chunk file is a few dozen bytes, but reading it back loads the whole chunk. An
/// AppendEntries batch (8 MiB) read for a follower far behind stays within its cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_named_chunks_back_is_bounded_by_their_bytes() {
    let td = TempDir::new().unwrap();
    let (entries, _): (Vec<Entry>, Vec<_>) = (1..=20).map(|i| named_chunk_entry(1, i)).unzip();
    {
        let mut log = open_log(td.path()).unwrap();
        append_durably(&mut log, entries.clone()).await;
    }
    // Reopened: nothing in memory, every read goes to the files.
    let mut log = open_log(td.path()).unwrap();
    let mut reader = log.get_log_reader().await;
    let batch = reader.limited_get_log_entries(1, 21).await.unwrap();
    let cap = trove_types::limits::MAX_APPEND_BATCH_BYTES / CHUNK;
    assert!(
        !batch.is_empty() && batch.len() <= cap,
        "{} chunk entries of 1 MiB in one batch capped at {cap} MiB",
        batch.len()
    );
    assert_eq!(batch, entries[..batch.len()].to_vec());
    let mut streamed = Vec::new();
    let mut stream = std::pin::pin!(reader.entries_stream(1..21).await);
    while let Some(e) = futures::StreamExt::next(&mut stream).await {
        streamed.push(e.unwrap());
    }
    assert_eq!(streamed, entries);
}
