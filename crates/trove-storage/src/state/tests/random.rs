//! Randomised state machine tests: a replayable command generator ([`RandomOps`], shared
//! with the snapshot tests), determinism across replicas, and grouped apply giving the
//! same results and state as applying one entry at a time.

use std::collections::BTreeMap;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trove_types::{ChunkRef, Command, CommandResult, Op, OpError, OpOk, RequestId};

use super::{Harness, bucket_op, check_invariants, chunk, commit, put_chunk};
use crate::state::StateStore;
use crate::state::codec;

/// Generates a random but replayable stream of commands over small key spaces, so that
/// conflicts, shared chunks, retries and expiry all happen.
pub(crate) struct RandomOps {
    rng: StdRng,
    time_ms: u64,
    uploads: BTreeMap<u128, Vec<ChunkRef>>,
    payloads: Vec<(ChunkRef, Bytes)>,
    last_rid: Option<RequestId>,
    seq: u64,
}

impl RandomOps {
    pub fn new(seed: u64) -> Self {
        RandomOps {
            rng: StdRng::seed_from_u64(seed),
            time_ms: 1_700_000_000_000,
            uploads: BTreeMap::new(),
            payloads: (0..5).map(|s| chunk(s, 20 + s as usize)).collect(),
            last_rid: None,
            seq: 0,
        }
    }

    pub fn next(&mut self, max_index: u64) -> Command {
        let r = &mut self.rng;
        self.time_ms += r.random_range(0..40_000);
        let key = ["a", "b", "c", "d"][r.random_range(0..4)].to_string();
        let bucket = ["bk1", "bk2"][r.random_range(0..2)].to_string();
        let upload_id: u128 = r.random_range(1..=3);
        let op = match r.random_range(0..16) {
            0 | 1 => Op::PutRecord {
                key,
                value: Bytes::from(vec![r.random::<u8>(); r.random_range(1..8)]),
                expected_revision: match r.random_range(0..3) {
                    0 => None,
                    1 => Some(0),
                    _ => Some(r.random_range(0..=max_index)),
                },
            },
            2 => Op::DeleteRecord {
                key,
                expected_revision: r.random_bool(0.5).then(|| r.random_range(0..=max_index)),
            },
            3 | 4 => Op::CreateBucket { bucket },
            5 => Op::DeleteBucket { bucket },
            6..=9 => {
                let (c, data) = self.payloads[r.random_range(0..self.payloads.len())].clone();
                let data = if r.random_bool(0.05) {
                    Bytes::from_static(b"bad")
                } else {
                    data
                };
                Op::PutChunk {
                    upload_id,
                    hash: c.hash,
                    data,
                }
            }
            10..=12 => {
                let mut chunks = self.uploads.get(&upload_id).cloned().unwrap_or_default();
                if r.random_bool(0.1) {
                    chunks.pop();
                }
                let key = ["x", "y"][r.random_range(0..2)];
                commit(upload_id, &bucket, key, &chunks)
            }
            13 => Op::AbortUpload { upload_id },
            14 => Op::DeleteObject {
                bucket,
                key: ["x", "y"][r.random_range(0..2)].into(),
            },
            _ => Op::Expire,
        };
        let request_id = match r.random_range(0..4) {
            0 => None,
            1 if self.last_rid.is_some() => self.last_rid.clone(),
            _ => {
                self.seq += 1;
                Some(RequestId {
                    client_id: format!("client-{}", r.random_range(0..2)),
                    seq: self.seq,
                })
            }
        };
        self.last_rid = request_id.clone();
        Command {
            request_id,
            time_ms: self.time_ms,
            op,
        }
    }

    /// Keeps the generator's view of uploads close to the store's, so commits often match.
    pub fn observe(&mut self, cmd: &Command, result: &CommandResult, store: &StateStore) {
        match (&cmd.op, result) {
            (
                Op::PutChunk {
                    upload_id,
                    hash,
                    data,
                },
                Ok(_),
            ) => {
                let len = data.len() as u32;
                self.uploads
                    .entry(*upload_id)
                    .or_default()
                    .push(ChunkRef { hash: *hash, len });
            }
            (Op::CommitObject { upload_id, .. }, Ok(_)) | (Op::AbortUpload { upload_id }, _) => {
                self.uploads.remove(upload_id);
            }
            _ => {}
        }
        self.uploads.retain(|id, _| {
            store
                .with_tree(|t| Ok(t.contains_key(codec::upload_key(*id))?))
                .unwrap()
        });
    }
}

#[test]
fn random_ops_are_deterministic() {
    for seed in [1u64, 2, 3, 0xdead_beef] {
        let a = Harness::new();
        let b = Harness::new();
        let mut ops = RandomOps::new(seed);
        let mut outcomes = Vec::new();
        for step in 0..400u64 {
            let index = step + 1;
            let cmd = (step % 50 != 49).then(|| ops.next(index));
            let ra = a.store.apply(index, cmd.as_ref(), b"m").unwrap();
            let rb = b.store.apply(index, cmd.as_ref(), b"m").unwrap();
            assert_eq!(ra, rb, "seed {seed} step {step}: {cmd:?}");
            if let (Some(cmd), Some(result)) = (&cmd, &ra) {
                ops.observe(cmd, result, &a.store);
                outcomes.push(result.clone());
            }
        }
        assert_eq!(
            a.store.digest().unwrap(),
            b.store.digest().unwrap(),
            "seed {seed}"
        );
        check_invariants(&a.store);
        check_invariants(&b.store);
        // The stream must exercise the interesting paths, or the test proves little.
        let seen = |f: &dyn Fn(&CommandResult) -> bool| outcomes.iter().filter(|r| f(r)).count();
        let objects =
            seen(&|r| matches!(r, Ok(OpOk::Object { chunk_count, .. }) if *chunk_count > 0));
        let bad_uploads = seen(&|r| matches!(r, Err(OpError::BadUpload(_))));
        let mismatches = seen(&|r| matches!(r, Err(OpError::RevisionMismatch { .. })));
        eprintln!(
            "seed {seed}: {objects} objects, {bad_uploads} bad uploads, {mismatches} mismatches"
        );
        assert!(
            objects >= 3 && bad_uploads >= 1 && mismatches >= 1,
            "seed {seed}"
        );
    }
}

/// Replicas group entries differently (the leader applies what committed together), so
/// grouped apply must give the same results and state as applying one entry at a time:
/// scans see earlier entries of the group, a refusal discards only its own entry, and a
/// chunk released and referenced again within a group keeps its file.
#[test]
fn grouped_apply_matches_one_by_one() {
    for seed in [7u64, 8, 9, 0xfeed] {
        let a = Harness::new();
        let b = Harness::new();
        let mut ops = RandomOps::new(seed);
        let mut entries = Vec::new();
        let mut expected = Vec::new();
        for step in 0..600u64 {
            let index = step + 1;
            let cmd = (step % 50 != 49).then(|| ops.next(index));
            let r = a.store.apply(index, cmd.as_ref(), b"m").unwrap();
            if let (Some(cmd), Some(result)) = (&cmd, &r) {
                ops.observe(cmd, result, &a.store);
            }
            entries.push((index, cmd));
            expected.push(r);
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut got = Vec::new();
        let mut at = 0;
        while at < entries.len() {
            let n = rng.random_range(1..=24).min(entries.len() - at);
            let group: Vec<(u64, Option<&Command>)> = entries[at..at + n]
                .iter()
                .map(|(i, c)| (*i, c.as_ref()))
                .collect();
            got.extend(b.store.apply_entries(&group, b"m").unwrap());
            at += n;
        }
        for (i, (want, have)) in expected.iter().zip(&got).enumerate() {
            assert_eq!(
                want,
                have,
                "seed {seed} entry {}: {:?}",
                i + 1,
                entries[i].1
            );
        }
        assert_eq!(
            a.store.digest().unwrap(),
            b.store.digest().unwrap(),
            "seed {seed}"
        );
        check_invariants(&b.store);
    }
}

/// A chunk whose last reference goes and comes back within one group keeps its file.
#[test]
fn a_chunk_released_and_reused_in_one_group_keeps_its_file() {
    let mut h = Harness::new();
    let c = chunk(3, 100);
    assert!(h.run(bucket_op(true, "b")).is_ok());
    assert!(h.run(put_chunk(1, &c)).is_ok());
    assert!(h.run(commit(1, "b", "x", &[c.0])).is_ok());
    let time_ms = h.time_ms;
    let cmd = |op| Command {
        request_id: None,
        time_ms,
        op,
    };
    let group = [
        cmd(Op::DeleteObject {
            bucket: "b".into(),
            key: "x".into(),
        }),
        cmd(put_chunk(2, &c)),
        cmd(commit(2, "b", "y", &[c.0])),
    ];
    let entries: Vec<(u64, Option<&Command>)> = group
        .iter()
        .enumerate()
        .map(|(i, c)| (h.index + 1 + i as u64, Some(c)))
        .collect();
    let results = h.store.apply_entries(&entries, b"m").unwrap();
    assert!(
        results.iter().all(|r| matches!(r, Some(Ok(_)))),
        "{results:?}"
    );
    check_invariants(&h.store);
}

/// Request ids pruned within one group (each entry deleting the oldest due ids, starting
/// after what the entries before it deleted) give the same results and state as one entry
/// at a time, also when a command's clock went back and its id sorts before the ids the
/// group already pruned.
#[test]
fn pruning_request_ids_in_a_group_matches_one_by_one() {
    let t0 = 1_700_000_000_000u64;
    let rid = |seq: u64| {
        Some(RequestId {
            client_id: "c".into(),
            seq,
        })
    };
    let put = |seq: u64, time_ms: u64| Command {
        request_id: rid(seq),
        time_ms,
        op: Op::PutRecord {
            key: format!("k{}", seq % 7),
            value: Bytes::from(vec![seq as u8; 3]),
            expected_revision: None,
        },
    };
    // 60 ids, 1 ms apart, applied one at a time on both replicas.
    let early: Vec<Command> = (0..60).map(|s| put(s, t0 + s)).collect();
    // Then, past their retention: a group of 30 commands, one of them from a clock 15 s
    // behind (its id is due for pruning by the others' time, and sorts first).
    let now = t0 + trove_types::limits::REQUEST_ID_RETENTION_MS + 100;
    let late: Vec<Command> = (100..130)
        .map(|s| {
            let time = if s == 110 { t0 + 30 - 15_000 } else { now + s };
            put(s, time)
        })
        .collect();
    let a = Harness::new();
    let b = Harness::new();
    for (i, cmd) in early.iter().enumerate() {
        let ra = a.store.apply(i as u64 + 1, Some(cmd), b"m").unwrap();
        let rb = b.store.apply(i as u64 + 1, Some(cmd), b"m").unwrap();
        assert_eq!(ra, rb);
    }
    apply_one_by_one_and_grouped(&a, &b, early.len() as u64 + 1, &late);
    // Every early id and the one from the slow clock are gone (30 entries prune up to
    // 4 each), the 29 others remain.
    assert_eq!(expiry_keys(&a), 29);
    assert_eq!(expiry_keys(&b), 29);
}

/// Applies `cmds` from index `first` one at a time to `a` and as one group to `b`, and
/// checks that the results and the states are the same.
fn apply_one_by_one_and_grouped(a: &Harness, b: &Harness, first: u64, cmds: &[Command]) {
    let one_by_one: Vec<_> = cmds
        .iter()
        .enumerate()
        .map(|(i, cmd)| a.store.apply(first + i as u64, Some(cmd), b"m").unwrap())
        .collect();
    let group: Vec<(u64, Option<&Command>)> = cmds
        .iter()
        .enumerate()
        .map(|(i, cmd)| (first + i as u64, Some(cmd)))
        .collect();
    assert_eq!(one_by_one, b.store.apply_entries(&group, b"m").unwrap());
    assert_eq!(a.store.digest().unwrap(), b.store.digest().unwrap());
}

/// Request ids still remembered (their expiry keys).
fn expiry_keys(h: &Harness) -> usize {
    h.store
        .with_tree(|t| Ok(t.scan_prefix(codec::DEDUP_EXPIRY).count()))
        .unwrap()
}

/// Pruning skips its scan while the group's floor shows nothing is due; an id written by
/// the group from a clock far behind lowers the floor, so a later entry of the group that
/// finds that id due prunes it, as one at a time.
#[test]
fn an_id_from_a_clock_behind_lowers_the_groups_pruning_floor() {
    let retention = trove_types::limits::REQUEST_ID_RETENTION_MS;
    let t0 = 1_700_000_000_000u64;
    let put = |seq: u64, time_ms: u64| Command {
        request_id: Some(RequestId {
            client_id: "c".into(),
            seq,
        }),
        time_ms,
        op: Op::PutRecord {
            key: format!("k{seq}"),
            value: Bytes::from_static(b"v"),
            expected_revision: None,
        },
    };
    let early = put(0, t0);
    let late = [
        // Not yet due: the floor becomes the early id.
        put(1, t0 + retention - 10),
        // A clock far behind: its id sorts before the floor.
        put(2, t0 - 5),
        // Due: the id of the clock behind (t0 - 5), not the early one (t0).
        put(3, t0 + retention - 3),
    ];
    let a = Harness::new();
    let b = Harness::new();
    a.store.apply(1, Some(&early), b"m").unwrap();
    b.store.apply(1, Some(&early), b"m").unwrap();
    apply_one_by_one_and_grouped(&a, &b, 2, &late);
    // The early id and ids 1 and 3 remain; id 2 was pruned by id 3.
    assert_eq!(expiry_keys(&a), 3);
    assert_eq!(expiry_keys(&b), 3);
}
