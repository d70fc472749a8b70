//! Tests of snapshot export, verification and install.
#![allow(clippy::unwrap_used)]

use std::fs;

use trove_types::{Op, OpOk};

use super::*;
use crate::state::tests::{
    Harness, RandomOps, check_invariants, chunk, commit, open_store, put_chunk,
};

/// A store with random history plus one known two-chunk object.
fn populated(seed: u64) -> (Harness, RandomOps) {
    let mut h = Harness::new();
    let mut ops = RandomOps::new(seed);
    for _ in 0..300 {
        let cmd = ops.next(h.index + 1);
        let result = h.apply(&cmd);
        ops.observe(&cmd, &result, &h.store);
    }
    let (c1, c2) = (chunk(100, 1000), chunk(101, 2000));
    assert!(
        h.run(Op::CreateBucket {
            bucket: "snap".into()
        })
        .is_ok()
    );
    assert!(h.run(put_chunk(1000, &c1)).is_ok());
    assert!(h.run(put_chunk(1000, &c2)).is_ok());
    assert!(h.run(commit(1000, "snap", "obj", &[c1.0, c2.0])).is_ok());
    assert!(h.run(put_chunk(1001, &chunk(102, 10))).is_ok());
    (h, ops)
}

fn flip(path: &std::path::Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

fn tree_names(store: &StateStore) -> Vec<String> {
    let mut names: Vec<String> = store
        .db
        .tree_names()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .filter(|n| n.starts_with("state."))
        .collect();
    names.sort();
    names
}

#[test]
fn export_verify_install_round_trip() {
    let (mut a, mut ops) = populated(11);
    let dir = a.tmp.path().join("snaps").join("snap-1");
    let info = a.store.export_snapshot(&dir, b"snap-meta").unwrap();
    let counts = a.store.counts().unwrap();
    assert_eq!(info.counts, counts);
    assert!(info.counts.chunks >= 3 && info.entries > counts.chunks);
    assert!(!tmp_dir_for(&dir).unwrap().exists());
    assert_eq!(verify_snapshot(&dir).unwrap(), info);
    let state = fs::read(dir.join(STATE_FILE)).unwrap();
    assert_eq!(&state[..12], b"TROVSNAP\0\0\0\x01", "frozen header");
    assert_eq!(&state[state.len() - 48..state.len() - 40], b"TROVSEND");
    assert!(
        a.store.export_snapshot(&dir, b"again").is_err(),
        "never overwrites"
    );

    let mut b = Harness::new();
    assert_eq!(b.store.install_snapshot(&dir).unwrap(), b"snap-meta");
    assert_eq!(b.store.digest().unwrap(), a.store.digest().unwrap());
    assert_eq!(b.store.raft_meta().unwrap().unwrap(), b"snap-meta");
    check_invariants(&b.store);
    let obj = b.store.get_object("snap", "obj").unwrap().unwrap();
    for c in &obj.chunks {
        assert_eq!(
            b.store.chunks().get(&c.hash).unwrap(),
            a.store.chunks().get(&c.hash).unwrap()
        );
    }

    // Both continue identically from the snapshot's point.
    b.index = a.index;
    for _ in 0..200 {
        let cmd = ops.next(a.index + 1);
        let ra = a.apply(&cmd);
        let rb = b.apply(&cmd);
        assert_eq!(ra, rb, "{cmd:?}");
        ops.observe(&cmd, &ra, &a.store);
    }
    assert!(
        a.run(Op::DeleteObject {
            bucket: "snap".into(),
            key: "obj".into()
        })
        .is_ok()
    );
    assert!(
        b.run(Op::DeleteObject {
            bucket: "snap".into(),
            key: "obj".into()
        })
        .is_ok()
    );
    assert_eq!(b.store.digest().unwrap(), a.store.digest().unwrap());
    check_invariants(&b.store);

    // The snapshot is point-in-time: later releases of its chunks do not touch it.
    assert_eq!(verify_snapshot(&dir).unwrap(), info);
    // And it survives a reopen of the store it was installed into.
    let digest = b.store.digest().unwrap();
    let Harness { tmp, store, .. } = b;
    drop(store);
    let reopened = open_store(tmp.path());
    assert_eq!(reopened.digest().unwrap(), digest);
    assert_eq!(tree_names(&reopened), ["state.1"]);
}

#[test]
fn empty_store_round_trip() {
    let a = Harness::new();
    let dir = a.tmp.path().join("empty-snap");
    let info = a.store.export_snapshot(&dir, b"").unwrap();
    assert_eq!((info.entries, info.counts.chunks), (0, 0));
    assert_eq!(verify_snapshot(&dir).unwrap(), info);
    let (b, _) = populated(3);
    assert_eq!(b.store.install_snapshot(&dir).unwrap(), b"");
    assert_eq!(b.store.digest().unwrap(), a.store.digest().unwrap());
    assert_eq!(b.store.counts().unwrap(), Default::default());
    assert!(
        b.store.chunks().list().unwrap().is_empty(),
        "all released chunks removed"
    );
}

#[test]
fn corrupt_state_file_fails_verify_and_install() {
    let (a, _) = populated(12);
    let dir = a.tmp.path().join("snap");
    a.store.export_snapshot(&dir, b"meta").unwrap();
    let path = dir.join(STATE_FILE);
    let len = fs::metadata(&path).unwrap().len();

    let (b, _) = populated(13);
    let before = b.store.digest().unwrap();
    let before_meta = b.store.raft_meta().unwrap();
    let before_chunks = b.store.chunks().list().unwrap();
    // Magic, version, a frame header, a payload, the middle, the trailer's count and hash.
    for offset in [
        0,
        11,
        12,
        17,
        40,
        len / 2,
        len - 45,
        len - 33,
        len - 30,
        len - 1,
    ] {
        flip(&path, offset);
        let err = verify_snapshot(&dir).unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::Corrupt { .. } | StorageError::UnsupportedVersion { .. }
            ),
            "offset {offset}: {err}"
        );
        assert!(b.store.install_snapshot(&dir).is_err(), "offset {offset}");
        assert_eq!(
            b.store.digest().unwrap(),
            before,
            "offset {offset}: state untouched"
        );
        assert_eq!(b.store.raft_meta().unwrap(), before_meta);
        assert_eq!(
            b.store.chunks().list().unwrap(),
            before_chunks,
            "no adopted leftovers"
        );
        assert_eq!(tree_names(&b.store), ["state.0"]);
        flip(&path, offset);
    }
    // Truncated, and extended by a byte.
    let good = fs::read(&path).unwrap();
    fs::write(&path, &good[..good.len() - 1]).unwrap();
    assert!(verify_snapshot(&dir).is_err());
    let mut longer = good.clone();
    longer.push(0);
    fs::write(&path, &longer).unwrap();
    assert!(verify_snapshot(&dir).is_err());
    fs::write(&path, &good).unwrap();
    verify_snapshot(&dir).unwrap();
}

#[test]
fn missing_or_corrupt_chunk_fails_verify_and_install() {
    let (a, _) = populated(14);
    let dir = a.tmp.path().join("snap");
    a.store.export_snapshot(&dir, b"meta").unwrap();
    let obj = a.store.get_object("snap", "obj").unwrap().unwrap();
    let victim = dir.join(CHUNKS_DIR).join(hex::encode(obj.chunks[1].hash));
    let good = fs::read(&victim).unwrap();

    let (b, _) = populated(15);
    let before = b.store.digest().unwrap();
    let before_chunks = b.store.chunks().list().unwrap();

    fs::remove_file(&victim).unwrap();
    assert!(matches!(
        verify_snapshot(&dir),
        Err(StorageError::Corrupt { .. })
    ));
    assert!(b.store.install_snapshot(&dir).is_err());
    assert_eq!(b.store.digest().unwrap(), before);
    assert_eq!(b.store.chunks().list().unwrap(), before_chunks);

    // A new file, not an in-place edit: the original is a hard link into a's store.
    let mut bad = good.clone();
    bad[7] ^= 0x80;
    fs::write(&victim, &bad).unwrap();
    assert!(matches!(
        verify_snapshot(&dir),
        Err(StorageError::Corrupt { .. })
    ));
    assert!(b.store.install_snapshot(&dir).is_err());
    assert_eq!(b.store.digest().unwrap(), before);
    assert_eq!(b.store.chunks().list().unwrap(), before_chunks);
    check_invariants(&b.store);

    fs::remove_file(&victim).unwrap();
    fs::write(&victim, &good).unwrap();
    verify_snapshot(&dir).unwrap();
    b.store.install_snapshot(&dir).unwrap();
    assert_eq!(b.store.digest().unwrap(), a.store.digest().unwrap());
}

#[test]
fn install_replaces_existing_state_entirely() {
    let (a, _) = populated(16);
    let dir = a.tmp.path().join("snap");
    a.store.export_snapshot(&dir, b"meta").unwrap();

    let mut b = Harness::new();
    let own = chunk(200, 500);
    assert!(
        b.run(Op::CreateBucket {
            bucket: "mine".into()
        })
        .is_ok()
    );
    assert!(b.run(put_chunk(1, &own)).is_ok());
    assert!(b.run(commit(1, "mine", "o", &[own.0])).is_ok());
    assert!(
        b.run_with(
            Some(("only-b", 1)),
            Op::PutRecord {
                key: "only-b".into(),
                value: "v".into(),
                expected_revision: None
            }
        )
        .is_ok()
    );
    assert!(b.store.chunks().contains(&own.0.hash));

    b.store.install_snapshot(&dir).unwrap();
    assert_eq!(b.store.digest().unwrap(), a.store.digest().unwrap());
    assert_eq!(b.store.get_record("only-b").unwrap(), None);
    assert_eq!(b.store.get_bucket("mine").unwrap(), None);
    assert!(
        !b.store.chunks().contains(&own.0.hash),
        "released chunk files removed"
    );
    check_invariants(&b.store);
    // The dedup table came from the snapshot too: b's old request id is forgotten.
    let fresh = b.run_with(
        Some(("only-b", 1)),
        Op::PutRecord {
            key: "only-b".into(),
            value: "w".into(),
            expected_revision: None,
        },
    );
    assert!(matches!(fresh, Ok(OpOk::Revision(_))));
    assert_eq!(b.store.get_record("only-b").unwrap().unwrap().value, "w");
}

#[test]
fn open_drops_trees_left_by_interrupted_installs() {
    let (a, _) = populated(17);
    let digest = a.store.digest().unwrap();
    // As if an install crashed half-way through loading generation 5.
    let junk = a.store.db.open_tree(tree_name(5)).unwrap();
    junk.insert(b"r/junk", b"x").unwrap();
    drop(junk);
    a.store.flush().unwrap();
    let Harness { tmp, store, .. } = a;
    drop(store);
    let store = open_store(tmp.path());
    assert_eq!(tree_names(&store), ["state.0"]);
    assert_eq!(store.digest().unwrap(), digest);

    // As if an install crashed after switching the pointer, before dropping the old tree.
    let dir = tmp.path().join("snap");
    store.export_snapshot(&dir, b"m").unwrap();
    store.install_snapshot(&dir).unwrap();
    let stale = store.db.open_tree(tree_name(0)).unwrap();
    stale.insert(b"r/stale", b"x").unwrap();
    drop(stale);
    store.flush().unwrap();
    drop(store);
    let store = open_store(tmp.path());
    assert_eq!(tree_names(&store), ["state.1"]);
    assert_eq!(store.digest().unwrap(), digest);
    assert_eq!(store.get_record("stale").unwrap(), None);
}

#[test]
fn scan_reports_chunk_refs_in_order_and_check_version_reads_only_the_header() {
    let (a, _) = populated(13);
    let dir = a.tmp.path().join("snap-scan");
    let info = a.store.export_snapshot(&dir, b"meta").unwrap();
    let mut refs = Vec::new();
    let (meta, entries) = scan_state_file(&dir, |h| {
        refs.push(*h);
        Ok(())
    })
    .unwrap();
    assert_eq!((meta.as_slice(), entries), (&b"meta"[..], info.entries));
    assert_eq!(refs.len() as u64, info.counts.chunks);
    assert!(refs.windows(2).all(|w| w[0] < w[1]), "ascending hashes");
    // The scan needs no chunk file.
    fs::remove_dir_all(dir.join(CHUNKS_DIR)).unwrap();
    assert!(scan_state_file(&dir, |_| Ok(())).is_ok());

    check_version(&dir).unwrap();
    check_version(&a.tmp.path().join("no-such-snapshot")).unwrap();
    let path = dir.join(STATE_FILE);
    let mut bytes = fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_be_bytes());
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        check_version(&dir),
        Err(StorageError::UnsupportedVersion {
            found: 2,
            supported: 1,
            ..
        })
    ));
    assert_eq!(fs::read(&path).unwrap(), bytes, "untouched");
}

/// Record writes applied in the middle of an export: every existing record overwritten or
/// deleted, and new ones created on both sides of the walk's position.
fn churn(keys: &[String], round: u64) -> Vec<Op> {
    let mut ops = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if (i as u64 + round).is_multiple_of(2) {
            ops.push(Op::PutRecord {
                key: key.clone(),
                value: bytes::Bytes::from(format!("changed in round {round}")),
                expected_revision: None,
            });
        } else {
            ops.push(Op::DeleteRecord {
                key: key.clone(),
                expected_revision: None,
            });
        }
    }
    for name in ["!first", "mid", "~last"] {
        ops.push(Op::PutRecord {
            key: format!("{name}-{round}"),
            value: bytes::Bytes::from_static(b"new"),
            expected_revision: None,
        });
    }
    ops
}

#[test]
fn an_export_is_its_point_in_time_while_entries_are_applied() {
    let (mut a, _) = populated(21);
    for i in 0..40 {
        let put = Op::PutRecord {
            key: format!("key-{i:02}"),
            value: bytes::Bytes::from(format!("value {i}")),
            expected_revision: None,
        };
        assert!(a.run(put).is_ok());
    }
    let (records, _) = a.store.list_records("", "", 10_000).unwrap();
    let keys: Vec<String> = records.into_iter().map(|r| r.key).collect();
    assert!(keys.len() > 20, "enough records to walk past");
    let at_point = a.store.digest().unwrap();
    let counts_at_point = a.store.counts().unwrap();
    let dir = a.tmp.path().join("snaps").join("during-apply");

    let export = a.store.begin_export().unwrap();
    assert_eq!(
        export.applied_raft_meta(),
        Some(format!("meta-{}", a.index).as_bytes())
    );
    let (to_applier, jobs) = std::sync::mpsc::channel::<u64>();
    let (to_exporter, done) = std::sync::mpsc::channel::<()>();
    let info = std::thread::scope(|s| {
        // Apply runs on its own thread while the export is paused mid-walk (with the old
        // apply lock held for the whole export, this deadlocked).
        s.spawn(|| {
            let mut index = a.index;
            for round in jobs {
                let mut cmds: Vec<Op> = churn(&keys, round);
                if round == 1 {
                    // Releases the object's chunks: their files must outlive the export.
                    cmds.push(Op::DeleteObject {
                        bucket: "snap".into(),
                        key: "obj".into(),
                    });
                }
                for op in cmds {
                    index += 1;
                    let cmd = trove_types::Command {
                        request_id: None,
                        time_ms: 1_700_000_000_000,
                        op,
                    };
                    a.store.apply(index, Some(&cmd), b"later").unwrap();
                }
                to_exporter.send(()).unwrap();
            }
        });
        let (mut seen, mut records_seen, mut round) = (0usize, 0usize, 0u64);
        let info = export
            .write_observed(
                &dir,
                b"point",
                &mut |h| Err(StorageError::MissingChunk(*h)),
                &mut |key| {
                    seen += 1;
                    if key.starts_with(b"r/") {
                        records_seen += 1;
                    }
                    // Churn early in the walk (every record ahead of it), then again
                    // half-way through the records (some passed, some ahead).
                    if (seen == 3 && round == 0) || (records_seen == keys.len() / 2 && round == 1) {
                        round += 1;
                        to_applier.send(round).unwrap();
                        done.recv().unwrap();
                    }
                },
            )
            .unwrap();
        drop(to_applier);
        info
    });
    assert_eq!(info.counts, counts_at_point);
    assert_eq!(verify_snapshot(&dir).unwrap(), info);
    let b = Harness::new();
    assert_eq!(b.store.install_snapshot(&dir).unwrap(), b"point");
    assert_eq!(
        b.store.digest().unwrap(),
        at_point,
        "the export is the state at its point"
    );
    check_invariants(&b.store);
    // The live store has every later write, and the chunk files released during the
    // export were removed when it closed.
    assert_ne!(a.store.digest().unwrap(), at_point);
    assert!(a.store.get_object("snap", "obj").unwrap().is_none());
    check_invariants(&a.store);
}
