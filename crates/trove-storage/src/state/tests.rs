//! Tests of the state machine: every op's result and effect, dedup, expiry, determinism,
//! reopening and listing. The harness is shared with the snapshot tests.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use trove_types::limits::{REQUEST_ID_RETENTION_MS, UPLOAD_EXPIRY_MS};
use trove_types::{ChunkRef, Command, CommandResult, Op, OpError, OpOk, RequestId};

use super::codec::{self, ChunkRefV1, ObjectV1};
use super::*;
use crate::chunks::sha256;

mod format;
mod random;
pub(crate) use random::RandomOps;

/// A store in a temp dir plus the next log index and the clock stamped on commands.
pub(crate) struct Harness {
    pub tmp: tempfile::TempDir,
    pub store: StateStore,
    pub index: u64,
    pub time_ms: u64,
}

impl Harness {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let store = open_store(tmp.path());
        Harness {
            tmp,
            store,
            index: 0,
            time_ms: 1_700_000_000_000,
        }
    }

    /// Applies `op` without a request id at the next index.
    pub fn run(&mut self, op: Op) -> CommandResult {
        self.run_with(None, op)
    }

    /// Applies `op` with request id `(client, seq)` if given.
    pub fn run_with(&mut self, rid: Option<(&str, u64)>, op: Op) -> CommandResult {
        let cmd = Command {
            request_id: rid.map(|(c, s)| RequestId {
                client_id: c.to_string(),
                seq: s,
            }),
            time_ms: self.time_ms,
            op,
        };
        self.apply(&cmd)
    }

    pub fn apply(&mut self, cmd: &Command) -> CommandResult {
        self.index += 1;
        let meta = format!("meta-{}", self.index);
        self.store
            .apply(self.index, Some(cmd), meta.as_bytes())
            .unwrap()
            .unwrap()
    }
}

/// Opens the store in `dir`. When it is a reopen: a real restart ends the process and
/// with it sled's lock on its file; in-process, sled's background thread of the dropped
/// database may hold the lock a moment longer (seen under a loaded test run), so only
/// that error is waited out.
pub(crate) fn open_store(dir: &std::path::Path) -> StateStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let chunks = ChunkStore::open(&dir.join("chunks")).unwrap();
        match StateStore::open(&dir.join("state"), chunks) {
            Err(crate::error::StorageError::Sled(sled::Error::Io(e)))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
}

pub(crate) fn chunk(seed: u8, len: usize) -> (ChunkRef, Bytes) {
    let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
    let r = ChunkRef {
        hash: sha256(&data),
        len: len as u32,
    };
    (r, Bytes::from(data))
}

pub(crate) fn put_chunk(upload_id: u128, c: &(ChunkRef, Bytes)) -> Op {
    Op::PutChunk {
        upload_id,
        hash: c.0.hash,
        data: c.1.clone(),
    }
}

pub(crate) fn commit(upload_id: u128, bucket: &str, key: &str, chunks: &[ChunkRef]) -> Op {
    Op::CommitObject {
        upload_id,
        bucket: bucket.into(),
        key: key.into(),
        size: chunks.iter().map(|c| u64::from(c.len)).sum(),
        sha256: [0x5a; 32],
        chunks: chunks.to_vec(),
    }
}

fn put(key: &str, value: &str, expected_revision: Option<u64>) -> Op {
    Op::PutRecord {
        key: key.into(),
        value: Bytes::copy_from_slice(value.as_bytes()),
        expected_revision,
    }
}

fn del(key: &str, expected_revision: Option<u64>) -> Op {
    Op::DeleteRecord {
        key: key.into(),
        expected_revision,
    }
}

fn bucket_op(create: bool, bucket: &str) -> Op {
    if create {
        Op::CreateBucket {
            bucket: bucket.into(),
        }
    } else {
        Op::DeleteBucket {
            bucket: bucket.into(),
        }
    }
}

/// Checks that reference counts equal the references held by objects and uploads, that
/// every upload's chunk keys are complete, and that chunk files exist exactly for the
/// referenced chunks.
pub(crate) fn check_invariants(store: &StateStore) {
    let mut expected: BTreeMap<[u8; 32], u64> = BTreeMap::new();
    let mut actual = BTreeMap::new();
    let mut upload_chunks: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut uploads = BTreeMap::new();
    store
        .with_tree(|t| {
            for kv in t.iter() {
                let (k, v) = kv.unwrap();
                if k.starts_with(codec::OBJECT) {
                    let o: ObjectV1 = decode(&v, "object").unwrap();
                    assert_eq!(
                        o.chunks.iter().map(|c| u64::from(c.len)).sum::<u64>(),
                        o.size
                    );
                    for c in o.chunks {
                        *expected.entry(c.hash).or_default() += 1;
                    }
                } else if k.starts_with(codec::UPLOAD_CHUNK) {
                    let c: ChunkRefV1 = decode(&v, "upload chunk").unwrap();
                    *expected.entry(c.hash).or_default() += 1;
                    *upload_chunks.entry(k[2..18].to_vec()).or_default() += 1;
                } else if k.starts_with(codec::UPLOAD) {
                    let u: codec::UploadV1 = decode(&v, "upload").unwrap();
                    uploads.insert(k[2..].to_vec(), u.chunk_count);
                } else if k.starts_with(codec::REFCOUNT) {
                    let n: u64 = decode(&v, "refcount").unwrap();
                    actual.insert(refcount_hash(&k).unwrap(), n);
                }
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(actual, expected, "reference counts");
    assert_eq!(uploads, upload_chunks, "upload chunk keys");
    let files: BTreeSet<_> = store.chunks().list().unwrap().into_iter().collect();
    let referenced: BTreeSet<_> = expected.keys().copied().collect();
    assert_eq!(
        files, referenced,
        "chunk files exist exactly for referenced chunks"
    );
}

/// What to check after a table row.
enum Effect {
    None,
    Record(&'static str, Option<(&'static str, u64, u64)>),
    Bucket(&'static str, bool),
}

#[test]
fn record_and_bucket_ops_table() {
    use OpError::*;
    use OpOk::Revision;
    let mut h = Harness::new();
    let rows: Vec<(Op, CommandResult, Effect)> = vec![
        // 1: CAS on a missing record reports current revision 0.
        (
            put("a", "v1", Some(5)),
            Err(RevisionMismatch {
                expected: 5,
                current: 0,
            }),
            Effect::Record("a", None),
        ),
        // 2: expected 0 = must not exist.
        (
            put("a", "v1", Some(0)),
            Ok(Revision(2)),
            Effect::Record("a", Some(("v1", 2, 2))),
        ),
        (
            put("a", "v2", Some(0)),
            Err(RevisionMismatch {
                expected: 0,
                current: 2,
            }),
            Effect::Record("a", Some(("v1", 2, 2))),
        ),
        // 4: CAS at the current revision; create_revision is kept.
        (
            put("a", "v2", Some(2)),
            Ok(Revision(4)),
            Effect::Record("a", Some(("v2", 4, 2))),
        ),
        (
            put("a", "v3", None),
            Ok(Revision(5)),
            Effect::Record("a", Some(("v3", 5, 2))),
        ),
        (
            del("a", Some(4)),
            Err(RevisionMismatch {
                expected: 4,
                current: 5,
            }),
            Effect::Record("a", Some(("v3", 5, 2))),
        ),
        (
            del("b", None),
            Err(NotFound("record b".into())),
            Effect::Record("b", None),
        ),
        (
            del("b", Some(0)),
            Err(NotFound("record b".into())),
            Effect::Record("b", None),
        ),
        (
            del("b", Some(3)),
            Err(RevisionMismatch {
                expected: 3,
                current: 0,
            }),
            Effect::Record("b", None),
        ),
        // 10
        (
            del("a", Some(5)),
            Ok(Revision(10)),
            Effect::Record("a", None),
        ),
        // 11: re-created: a new create_revision.
        (
            put("a", "v4", Some(0)),
            Ok(Revision(11)),
            Effect::Record("a", Some(("v4", 11, 11))),
        ),
        (del("a", None), Ok(Revision(12)), Effect::Record("a", None)),
        (
            bucket_op(false, "bkt"),
            Err(NotFound("bucket bkt".into())),
            Effect::Bucket("bkt", false),
        ),
        (
            bucket_op(true, "bkt"),
            Ok(Revision(14)),
            Effect::Bucket("bkt", true),
        ),
        (
            bucket_op(true, "bkt"),
            Err(AlreadyExists("bucket bkt".into())),
            Effect::Bucket("bkt", true),
        ),
        (
            commit(0, "bkt", "empty", &[]),
            Ok(OpOk::Object {
                revision: 16,
                size: 0,
                sha256: [0x5a; 32],
                chunk_count: 0,
            }),
            Effect::None,
        ),
        (
            bucket_op(false, "bkt"),
            Err(BucketNotEmpty("bkt".into())),
            Effect::Bucket("bkt", true),
        ),
        (
            Op::DeleteObject {
                bucket: "bkt".into(),
                key: "empty".into(),
            },
            Ok(Revision(18)),
            Effect::None,
        ),
        (
            Op::DeleteObject {
                bucket: "bkt".into(),
                key: "empty".into(),
            },
            Err(NotFound("object bkt/empty".into())),
            Effect::None,
        ),
        (
            bucket_op(false, "bkt"),
            Ok(Revision(20)),
            Effect::Bucket("bkt", false),
        ),
        (
            commit(0, "bkt", "x", &[]),
            Err(NotFound("bucket bkt".into())),
            Effect::None,
        ),
    ];
    for (row, (op, expected, effect)) in rows.into_iter().enumerate() {
        let desc = format!("row {row} (index {}): {op:?}", h.index + 1);
        assert_eq!(h.run(op), expected, "{desc}");
        match effect {
            Effect::None => {}
            Effect::Record(key, want) => {
                let got = h.store.get_record(key).unwrap().map(|r| {
                    (
                        String::from_utf8(r.value.to_vec()).unwrap(),
                        r.revision,
                        r.create_revision,
                    )
                });
                let want = want.map(|(v, r, c)| (v.to_string(), r, c));
                assert_eq!(got, want, "{desc}");
            }
            Effect::Bucket(b, exists) => {
                assert_eq!(h.store.get_bucket(b).unwrap().is_some(), exists, "{desc}");
            }
        }
        check_invariants(&h.store);
    }
}

#[test]
fn uploads_commit_overwrite_abort_and_delete() {
    let mut h = Harness::new();
    let [c1, c2, c3, c4] = [1, 2, 3, 4].map(|s| chunk(s, 100 + s as usize));
    assert!(h.run(bucket_op(true, "bkt")).is_ok());

    // A chunk whose bytes do not match its hash is refused and stores nothing.
    let bad = Op::PutChunk {
        upload_id: 9,
        hash: c1.0.hash,
        data: c2.1.clone(),
    };
    assert!(matches!(h.run(bad), Err(OpError::ChecksumMismatch(_))));
    assert_eq!(h.store.counts().unwrap().uploads, 0);
    assert!(!h.store.chunks().contains(&c1.0.hash));

    // The leader proposes a commit right behind its chunks, without waiting for their
    // outcomes (the upload path in trove-server): a commit listing a chunk that was
    // refused must fail, and aborting the upload leaves nothing behind.
    let before = h.store.digest().unwrap();
    assert_eq!(h.run(put_chunk(5, &c3)), Ok(OpOk::Done));
    let refused = Op::PutChunk {
        upload_id: 5,
        hash: c4.0.hash,
        data: c3.1.clone(),
    };
    assert!(matches!(h.run(refused), Err(OpError::ChecksumMismatch(_))));
    assert!(matches!(
        h.run(commit(5, "bkt", "y", &[c3.0, c4.0])),
        Err(OpError::BadUpload(_))
    ));
    assert_eq!(h.run(Op::AbortUpload { upload_id: 5 }), Ok(OpOk::Done));
    assert_eq!(
        h.store.digest().unwrap(),
        before,
        "nothing of upload 5 is left"
    );

    assert_eq!(h.run(put_chunk(1, &c1)), Ok(OpOk::Done));
    assert_eq!(h.run(put_chunk(1, &c2)), Ok(OpOk::Done));
    assert!(h.store.chunks().contains(&c1.0.hash));
    check_invariants(&h.store);

    // Wrong chunk list, wrong size, unknown upload: refused, nothing changes.
    let before = h.store.digest().unwrap();
    assert!(matches!(
        h.run(commit(1, "bkt", "x", &[c2.0, c1.0])),
        Err(OpError::BadUpload(_))
    ));
    assert!(matches!(
        h.run(commit(1, "bkt", "x", &[c1.0])),
        Err(OpError::BadUpload(_))
    ));
    let mut wrong_size = commit(1, "bkt", "x", &[c1.0, c2.0]);
    if let Op::CommitObject { size, .. } = &mut wrong_size {
        *size += 1;
    }
    assert!(matches!(h.run(wrong_size), Err(OpError::BadUpload(_))));
    assert!(matches!(
        h.run(commit(77, "bkt", "x", &[c1.0])),
        Err(OpError::BadUpload(_))
    ));
    assert_eq!(h.store.digest().unwrap(), before, "refusals change nothing");

    let index = h.index + 1;
    assert_eq!(
        h.run(commit(1, "bkt", "x", &[c1.0, c2.0])),
        Ok(OpOk::Object {
            revision: index,
            size: 203,
            sha256: [0x5a; 32],
            chunk_count: 2
        })
    );
    let obj = h.store.get_object("bkt", "x").unwrap().unwrap();
    assert_eq!(
        (obj.size, obj.revision, obj.chunks.clone()),
        (203, index, vec![c1.0, c2.0])
    );
    assert_eq!(h.store.counts().unwrap().uploads, 0);
    check_invariants(&h.store);

    // Overwrite with chunks sharing c2: c1 is released (file gone), c2 stays.
    assert!(h.run(put_chunk(2, &c2)).is_ok());
    assert!(h.run(put_chunk(2, &c3)).is_ok());
    assert!(h.run(commit(2, "bkt", "x", &[c2.0, c3.0])).is_ok());
    assert!(!h.store.chunks().contains(&c1.0.hash));
    assert!(h.store.chunks().contains(&c2.0.hash));
    assert!(h.store.chunks().contains(&c3.0.hash));
    check_invariants(&h.store);

    // Abort releases the upload's chunks; aborting again is fine.
    assert!(h.run(put_chunk(3, &c4)).is_ok());
    assert!(h.store.chunks().contains(&c4.0.hash));
    assert_eq!(h.run(Op::AbortUpload { upload_id: 3 }), Ok(OpOk::Done));
    assert!(!h.store.chunks().contains(&c4.0.hash));
    assert_eq!(h.run(Op::AbortUpload { upload_id: 3 }), Ok(OpOk::Done));
    check_invariants(&h.store);

    // An upload holding a chunk an object also holds keeps it alive after the delete.
    assert!(h.run(put_chunk(4, &c3)).is_ok());
    assert!(matches!(
        h.run(bucket_op(false, "bkt")),
        Err(OpError::BucketNotEmpty(_))
    ));
    assert!(
        h.run(Op::DeleteObject {
            bucket: "bkt".into(),
            key: "x".into()
        })
        .is_ok()
    );
    assert!(!h.store.chunks().contains(&c2.0.hash));
    assert!(h.store.chunks().contains(&c3.0.hash));
    assert_eq!(h.store.get_object("bkt", "x").unwrap(), None);
    check_invariants(&h.store);
    assert!(h.run(Op::AbortUpload { upload_id: 4 }).is_ok());
    assert!(h.store.chunks().list().unwrap().is_empty());
    assert!(h.run(bucket_op(false, "bkt")).is_ok());
    assert_eq!(h.store.counts().unwrap(), StateCounts::default());
}

#[test]
fn dedup_returns_the_first_result() {
    let mut h = Harness::new();
    assert_eq!(
        h.run_with(Some(("c", 1)), put("k", "first", None)),
        Ok(OpOk::Revision(1))
    );
    assert_eq!(
        h.run_with(Some(("c", 2)), put("k", "second", None)),
        Ok(OpOk::Revision(2))
    );
    let state = h.store.digest().unwrap();
    // The retry is answered from the table even though the record has changed since.
    assert_eq!(
        h.run_with(Some(("c", 1)), put("k", "first", None)),
        Ok(OpOk::Revision(1))
    );
    assert_eq!(h.store.get_record("k").unwrap().unwrap().value, "second");
    assert_eq!(h.store.digest().unwrap(), state, "a retry changes nothing");
    assert_eq!(
        h.store.raft_meta().unwrap().unwrap(),
        b"meta-3",
        "but the raft meta moves"
    );
    // Refusals are remembered too; another client's seq 1 is a different request.
    let refused = h.run_with(Some(("c", 3)), put("k", "x", Some(0)));
    assert_eq!(
        refused,
        Err(OpError::RevisionMismatch {
            expected: 0,
            current: 2
        })
    );
    assert!(h.run(del("k", None)).is_ok());
    assert_eq!(h.run_with(Some(("c", 3)), put("k", "x", Some(0))), refused);
    assert_eq!(
        h.run_with(Some(("d", 1)), put("k", "x", Some(0))),
        Ok(OpOk::Revision(7))
    );
}

#[test]
fn an_active_upload_never_expires() {
    let mut h = Harness::new();
    let t0 = h.time_ms;
    // An upload that keeps receiving chunks never expires, however long it runs: expiry
    // counts from its latest chunk.
    let c3 = chunk(3, 10);
    assert!(h.run(put_chunk(3, &c3)).is_ok());
    for step in 1..=3u64 {
        h.time_ms = t0 + step * (UPLOAD_EXPIRY_MS - 1);
        let c = chunk(40 + step as u8, 10);
        assert!(h.run(put_chunk(3, &c)).is_ok());
        assert_eq!(h.run(Op::Expire), Ok(OpOk::Done));
        assert!(
            h.store.chunks().contains(&c3.0.hash),
            "an active upload expired at step {step}"
        );
    }
    h.time_ms += UPLOAD_EXPIRY_MS;
    assert_eq!(h.run(Op::Expire), Ok(OpOk::Done));
    assert!(
        !h.store.chunks().contains(&c3.0.hash),
        "an idle upload must expire"
    );
    check_invariants(&h.store);
}

#[test]
fn expire_drops_old_uploads_and_dedup_entries() {
    let mut h = Harness::new();
    let t0 = h.time_ms;
    let (c1, c2) = (chunk(1, 10), chunk(2, 10));
    assert!(h.run_with(Some(("c", 1)), put_chunk(1, &c1)).is_ok());
    h.time_ms = t0 + 1000;
    assert!(h.run(put_chunk(2, &c2)).is_ok());

    h.time_ms = t0 + UPLOAD_EXPIRY_MS - 1;
    assert_eq!(h.run(Op::Expire), Ok(OpOk::Done));
    assert_eq!(h.store.counts().unwrap().uploads, 2);

    h.time_ms = t0 + UPLOAD_EXPIRY_MS;
    assert_eq!(h.run(Op::Expire), Ok(OpOk::Done));
    assert_eq!(
        h.store.counts().unwrap().uploads,
        1,
        "only the older upload expired"
    );
    assert!(!h.store.chunks().contains(&c1.0.hash));
    assert!(h.store.chunks().contains(&c2.0.hash));
    check_invariants(&h.store);
    // The request id is still remembered: the retry does not re-add the chunk.
    assert!(h.run_with(Some(("c", 1)), put_chunk(1, &c1)).is_ok());
    assert!(!h.store.chunks().contains(&c1.0.hash));

    h.time_ms = t0 + REQUEST_ID_RETENTION_MS;
    assert!(h.run(Op::Expire).is_ok());
    assert_eq!(h.store.counts().unwrap().uploads, 0);
    let dedup_keys = |s: &StateStore| {
        s.with_tree(|t| {
            Ok(t.scan_prefix(codec::DEDUP).count() + t.scan_prefix(codec::DEDUP_EXPIRY).count())
        })
        .unwrap()
    };
    assert_eq!(dedup_keys(&h.store), 0);
    // Forgotten: the same request id now executes again.
    assert!(h.run_with(Some(("c", 1)), put_chunk(1, &c1)).is_ok());
    assert!(h.store.chunks().contains(&c1.0.hash));
    check_invariants(&h.store);

    // Ordinary commands prune expired ids a few at a time, without an Expire.
    for seq in 10..20 {
        assert!(h.run_with(Some(("p", seq)), put("k", "v", None)).is_ok());
    }
    assert_eq!(dedup_keys(&h.store), 2 * 11);
    h.time_ms += REQUEST_ID_RETENTION_MS + 1;
    assert!(h.run(put("k", "v", None)).is_ok());
    assert_eq!(
        dedup_keys(&h.store),
        2 * (11 - super::apply::PRUNE_PER_APPLY)
    );
}

#[test]
fn blank_entries_only_move_the_raft_meta() {
    let mut h = Harness::new();
    assert_eq!(h.store.raft_meta().unwrap(), None);
    let empty = h.store.digest().unwrap();
    assert_eq!(h.store.apply(1, None, b"blank").unwrap(), None);
    assert_eq!(h.store.raft_meta().unwrap().unwrap(), b"blank");
    assert_eq!(h.store.digest().unwrap(), empty);
    h.index = 1;
    assert_eq!(h.run(put("a", "b", None)), Ok(OpOk::Revision(2)));
}

#[test]
fn reopen_keeps_state_and_raft_meta() {
    let mut h = Harness::new();
    let c = chunk(1, 50);
    assert!(h.run(bucket_op(true, "bkt")).is_ok());
    assert!(h.run(put("a", "1", None)).is_ok());
    assert!(h.run(put_chunk(5, &c)).is_ok());
    assert!(h.run(commit(5, "bkt", "o", &[c.0])).is_ok());
    h.store.flush().unwrap();
    let digest = h.store.digest().unwrap();
    let Harness { tmp, store, .. } = h;
    drop(store);
    let store = open_store(tmp.path());
    assert_eq!(store.digest().unwrap(), digest);
    assert_eq!(store.raft_meta().unwrap().unwrap(), b"meta-4");
    assert_eq!(store.get_record("a").unwrap().unwrap().revision, 2);
    assert_eq!(
        store.get_object("bkt", "o").unwrap().unwrap().chunks,
        vec![c.0]
    );
    check_invariants(&store);
}

#[test]
fn open_refuses_unknown_format_version() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("FORMAT"), "trove-state 3\n").unwrap();
    let chunks = ChunkStore::open(&tmp.path().join("chunks")).unwrap();
    let err = StateStore::open(&dir, chunks).err().unwrap();
    assert!(
        matches!(err, StorageError::UnsupportedVersion { found: 3, .. }),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "nothing created"
    );
}

#[test]
fn list_paging_with_prefix() {
    let mut h = Harness::new();
    let mut want = Vec::new();
    for i in 0..25 {
        let key = format!("a/{i}");
        assert!(h.run(put(&key, &"x".repeat(i + 1), None)).is_ok());
        want.push(key);
    }
    for key in ["a", "b/1", "a0"] {
        assert!(h.run(put(key, "y", None)).is_ok());
    }
    want.sort();
    let mut got = Vec::new();
    let mut start = String::new();
    let mut pages = 0;
    loop {
        let (page, next) = h.store.list_records("a/", &start, 10).unwrap();
        assert!(page.len() <= 10);
        pages += 1;
        for r in page {
            let n: usize = r.key[2..].parse().unwrap();
            assert_eq!(r.size, n as u64 + 1);
            got.push(r.key);
        }
        match next {
            Some(n) => start = n,
            None => break,
        }
    }
    assert_eq!(got, want);
    assert_eq!(pages, 3);
    // A start before the prefix starts at the prefix; 0 means the default limit.
    let (all, next) = h.store.list_records("a/", "0", 0).unwrap();
    assert_eq!((all.len(), next), (25, None));
    let (none, next) = h.store.list_records("zzz", "", 10).unwrap();
    assert!(none.is_empty() && next.is_none());

    for b in ["bkt", "bkt2"] {
        assert!(h.run(bucket_op(true, b)).is_ok());
    }
    for key in ["p/1", "p/2", "p/3", "q"] {
        assert!(h.run(commit(0, "bkt", key, &[])).is_ok());
    }
    assert!(h.run(commit(0, "bkt2", "p/0", &[])).is_ok());
    let (page, next) = h.store.list_objects("bkt", "p/", "", 2).unwrap();
    let keys: Vec<_> = page.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!((keys, next.as_deref()), (vec!["p/1", "p/2"], Some("p/3")));
    let (page, next) = h.store.list_objects("bkt", "p/", "p/3", 2).unwrap();
    assert_eq!((page.len(), next), (1, None));
    let (page, _) = h.store.list_objects("bkt", "", "", 100).unwrap();
    assert_eq!(page.len(), 4, "other buckets' objects never leak in");
    let names: Vec<_> = h
        .store
        .list_buckets()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["bkt", "bkt2"]);
}

#[test]
fn unreferenced_chunk_files_are_collected() {
    let mut h = Harness::new();
    let (kept, orphan) = (chunk(1, 10), chunk(2, 10));
    assert!(h.run(put_chunk(1, &kept)).is_ok());
    // As if a crash fell between a batch releasing `orphan` and the file's removal.
    h.store.chunks().put(&orphan.0.hash, &orphan.1).unwrap();
    assert_eq!(h.store.remove_unreferenced_chunks().unwrap(), 1);
    assert!(h.store.chunks().contains(&kept.0.hash));
    assert!(!h.store.chunks().contains(&orphan.0.hash));
    check_invariants(&h.store);
}

/// A chunk that a raft log entry holds by name (its file is the entry's payload) keeps its
/// file when the state releases it, until the log drops the entry; then the next apply
/// removes it. A chunk only a truncated entry held goes the same way.
#[test]
fn a_chunk_a_log_entry_holds_is_removed_once_the_log_drops_it() {
    let mut h = Harness::new();
    let (held, truncated) = (chunk(3, 10), chunk(4, 10));
    let chunks = h.store.chunks().clone();
    // As the log store appends them: pinned, then the file written.
    chunks.pin(1, held.0.hash);
    chunks.put_for_log(&held.0.hash, &held.1).unwrap();
    chunks.pin(2, truncated.0.hash);
    chunks.put_for_log(&truncated.0.hash, &truncated.1).unwrap();
    assert!(h.run(put_chunk(7, &held)).is_ok());
    assert!(h.run(Op::AbortUpload { upload_id: 7 }).is_ok());
    assert!(
        chunks.contains(&held.0.hash),
        "released while its entry is in the log"
    );
    assert_eq!(h.store.remove_unreferenced_chunks().unwrap(), 0);
    assert!(chunks.contains(&truncated.0.hash));

    // The log cuts entry 2 (never committed): its file goes at the next apply.
    chunks.unpin_after(Some(1));
    assert!(h.run(put("k", "v", None)).is_ok());
    assert!(!chunks.contains(&truncated.0.hash));
    assert!(chunks.contains(&held.0.hash));

    // The log is purged past entry 1: the released file goes too.
    chunks.unpin_through(1);
    assert!(h.run(put("k", "w", None)).is_ok());
    assert!(!chunks.contains(&held.0.hash));
    assert_eq!(chunks.pinned_entries(), 0);
    check_invariants(&h.store);

    // Referenced by the state when its entry goes: kept.
    let kept = chunk(5, 10);
    chunks.pin(9, kept.0.hash);
    chunks.put_for_log(&kept.0.hash, &kept.1).unwrap();
    assert!(h.run(put_chunk(8, &kept)).is_ok());
    chunks.unpin_through(9);
    assert!(h.run(put("k", "x", None)).is_ok());
    assert!(chunks.contains(&kept.0.hash));
    check_invariants(&h.store);
}

#[test]
fn applying_at_once_declines_while_slow_work_is_due() {
    let h = Harness::new();
    let cmd = Command {
        request_id: None,
        time_ms: h.time_ms,
        op: put("k", "v", None),
    };
    // Another holder of the apply lock (an export closing, the start-up sweep).
    {
        let _held = h.store.lock_apply();
        assert!(
            h.store
                .try_apply_entries_now(&[(1, Some(&cmd))], b"m1")
                .is_none()
        );
    }
    // A chunk file the next apply removes.
    let c = chunk(6, 10);
    let chunks = h.store.chunks().clone();
    chunks.pin(1, c.0.hash);
    chunks.put_for_log(&c.0.hash, &c.1).unwrap();
    chunks.unpin_after(None);
    assert!(
        h.store
            .try_apply_entries_now(&[(1, Some(&cmd))], b"m1")
            .is_none()
    );
    assert!(
        h.store.get_record("k").unwrap().is_none(),
        "declined means not applied"
    );

    // Nothing due: applied, and the same as `apply_entries`.
    h.store.apply_entries(&[(1, None)], b"m1").unwrap();
    assert!(!chunks.contains(&c.0.hash));
    let results = h.store.try_apply_entries_now(&[(2, Some(&cmd))], b"m2");
    let results = results.expect("nothing due").unwrap();
    assert_eq!(results, vec![Some(Ok(OpOk::Revision(2)))]);
    assert_eq!(h.store.get_record("k").unwrap().unwrap().revision, 2);
    check_invariants(&h.store);
}
