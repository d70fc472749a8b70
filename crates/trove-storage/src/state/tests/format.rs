//! The state directory's format at rest: damage to sled's files or to a stored value is
//! caught (or reads as an earlier, consistent state), a state in use is never taken for
//! damage, and the migration from format 1 completes however it is interrupted.

use super::{Harness, RandomOps, check_invariants, open_store, put};
use crate::chunks::ChunkStore;
use crate::error::StorageError;
use crate::state::{
    StateCounts, StateStore, TREE_POINTER_KEY, codec, rewrite_in_format_1, tree_name,
};

/// How a damaged sled file shows up: either `open_verified` reports the state as corrupt,
/// or what it opens is a consistent earlier state (every record holds the value written
/// at its revision, no revision beyond the applied index): never wrong data.
#[test]
fn damaged_sled_files_are_reported_or_read_as_an_earlier_state() {
    type Damage = fn(&std::path::Path);
    let flip_every_page: Damage = |p| {
        let mut b = std::fs::read(p).unwrap();
        for i in (100..b.len()).step_by(4096) {
            b[i] ^= 0x10;
        }
        std::fs::write(p, b).unwrap();
    };
    let zero_middle: Damage = |p| {
        let mut b = std::fs::read(p).unwrap();
        let (from, to) = (b.len() / 3, b.len() / 3 * 2);
        b[from..to].fill(0);
        std::fs::write(p, b).unwrap();
    };
    let truncate_half: Damage = |p| {
        let len = std::fs::metadata(p).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    };
    let flip_one_byte: Damage = |p| {
        let mut b = std::fs::read(p).unwrap();
        let i = b.len() / 2;
        b[i] ^= 0xff;
        std::fs::write(p, b).unwrap();
    };
    for (name, damage) in [
        ("flip every page", flip_every_page),
        ("zero the middle third", zero_middle),
        ("truncate to half", truncate_half),
        ("flip one byte", flip_one_byte),
    ] {
        let mut h = Harness::new();
        for i in 0..3000u64 {
            let v = format!("value of {} at {}", i % 700, h.index + 1);
            assert!(h.run(put(&format!("k{}", i % 700), &v, None)).is_ok());
        }
        h.store.flush().unwrap();
        let Harness { tmp, store, .. } = h;
        drop(store);
        let sled_dir = tmp.path().join("state").join("sled");
        damage(&sled_dir.join("db"));
        let chunks = ChunkStore::open(&tmp.path().join("chunks")).unwrap();
        match StateStore::open_verified(&tmp.path().join("state"), chunks) {
            Err(StorageError::Corrupt { .. }) => eprintln!("{name}: reported as corrupt"),
            Err(e) => panic!("{name}: damage reported as something else: {e}"),
            Ok(s) => {
                let applied: u64 = match s.raft_meta().unwrap() {
                    Some(m) => String::from_utf8(m).unwrap()["meta-".len()..]
                        .parse()
                        .unwrap(),
                    None => 0,
                };
                let (records, _) = s.list_records("", "", 10_000).unwrap();
                for r in &records {
                    let v = s.get_record(&r.key).unwrap().unwrap();
                    assert!(r.revision <= applied, "{name}: revision beyond applied");
                    let expected = format!("value of {} at {}", &r.key[1..], r.revision);
                    assert_eq!(v.value, expected.as_bytes(), "{name}: wrong value");
                }
                eprintln!(
                    "{name}: opened an earlier state: applied {applied} of 3000, {} records",
                    records.len()
                );
            }
        }
    }
}

/// A value that does not decode is damage (`Corrupt`, so the server rebuilds the state);
/// a state another process has open is not (it must never be moved aside).
#[test]
fn open_verified_tells_damage_from_a_state_in_use() {
    let mut h = Harness::new();
    assert!(h.run(put("good", "v", None)).is_ok());
    let dir = h.tmp.path().join("state");
    let chunks = || ChunkStore::open(&h.tmp.path().join("chunks")).unwrap();
    match StateStore::open_verified(&dir, chunks()) {
        Err(StorageError::Io { .. }) | Err(StorageError::Sled(sled::Error::Io(_))) => {}
        Err(e) => panic!("a state in use is reported as {e:?}"),
        Ok(_) => panic!("a state in use opened twice"),
    }
    h.store
        .with_tree(|t| Ok(t.insert(b"r/bad", &b"\x01\xff\xff\xff"[..])?))
        .unwrap();
    h.store.flush().unwrap();
    let Harness { tmp, store, .. } = h;
    drop(store);
    let chunks = ChunkStore::open(&tmp.path().join("chunks")).unwrap();
    match StateStore::open_verified(&tmp.path().join("state"), chunks) {
        Err(StorageError::Corrupt { detail, .. }) => assert!(detail.contains("r/bad"), "{detail}"),
        other => panic!(
            "an undecodable value is not reported as damage: {:?}",
            other.err()
        ),
    }
}

/// The raw values of the current state tree.
fn raw_values(store: &StateStore) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .with_tree(|t| {
            Ok(t.iter()
                .map(|kv| {
                    let (k, v) = kv.unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect())
        })
        .unwrap()
}

/// A store with history: random ops plus an object, closed; returns (tmp dir, digest,
/// counts).
fn closed_store_in_format_1() -> (tempfile::TempDir, String, StateCounts) {
    let mut h = Harness::new();
    let mut ops = RandomOps::new(77);
    for _ in 0..2500 {
        let cmd = ops.next(h.index + 1);
        let result = h.apply(&cmd);
        ops.observe(&cmd, &result, &h.store);
    }
    // More than one copy batch (1,024 entries).
    for i in 0..1500 {
        assert!(h.run(put(&format!("bulk/{i:04}"), "v", None)).is_ok());
    }
    let (digest, counts) = (h.store.digest().unwrap(), h.store.counts().unwrap());
    let Harness { tmp, store, .. } = h;
    drop(store);
    rewrite_in_format_1(&tmp.path().join("state")).unwrap();
    (tmp, digest, counts)
}

fn format_line(tmp: &tempfile::TempDir) -> String {
    std::fs::read_to_string(tmp.path().join("state").join("FORMAT")).unwrap()
}

#[test]
fn a_format_1_state_is_migrated_with_the_same_contents() {
    let (tmp, digest, counts) = closed_store_in_format_1();
    assert_eq!(format_line(&tmp), "trove-state 1\n");
    {
        // Format 1 on disk: no value carries a checksum.
        let db = sled::open(tmp.path().join("state").join("sled")).unwrap();
        let generation = u64::from_be_bytes(
            db.get(TREE_POINTER_KEY)
                .unwrap()
                .unwrap()
                .as_ref()
                .try_into()
                .unwrap(),
        );
        let tree = db.open_tree(tree_name(generation)).unwrap();
        assert!(tree.iter().all(|kv| kv.unwrap().1[0] == codec::VALUE_V1));
        assert!(db.get(b"trove/state_format").unwrap().is_none());
    }
    StateStore::check_format(&tmp.path().join("state")).unwrap();
    let store = open_store(tmp.path());
    assert_eq!(format_line(&tmp), "trove-state 2\n");
    assert!(!tmp.path().join("state").join("MIGRATING").exists());
    assert!(
        raw_values(&store)
            .iter()
            .all(|(_, v)| codec::is_stored_form(v))
    );
    store.verify().unwrap();
    assert_eq!(store.digest().unwrap(), digest);
    assert_eq!(store.counts().unwrap(), counts);
    check_invariants(&store);
}

/// A crash at any step of the migration: the next start completes it, with the same
/// contents; before the switch the old tree is what stays current.
#[test]
fn an_interrupted_migration_completes_on_the_next_start() {
    for step in ["after-marker", "mid-copy", "before-switch", "after-switch"] {
        let (tmp, digest, _) = closed_store_in_format_1();
        let dir = tmp.path().join("state");
        super::migrate::CRASH_AT.with(|c| c.set(Some(step)));
        let chunks = ChunkStore::open(&tmp.path().join("chunks")).unwrap();
        let crashed = StateStore::open(&dir, chunks);
        super::migrate::CRASH_AT.with(|c| c.set(None));
        let err = crashed.err().expect("the simulated crash");
        assert!(err.to_string().contains(step), "{step}: {err}");
        assert!(dir.join("MIGRATING").exists(), "{step}: marker");
        if step != "after-marker" {
            assert_eq!(
                format_line(&tmp),
                "trove-state 2\n",
                "{step}: an old binary must refuse it now"
            );
        }
        let store = open_store(tmp.path());
        assert!(!dir.join("MIGRATING").exists(), "{step}: not finished");
        assert_eq!(format_line(&tmp), "trove-state 2\n");
        store.verify().unwrap();
        assert_eq!(store.digest().unwrap(), digest, "{step}");
        let trees: Vec<_> = store
            .db
            .tree_names()
            .into_iter()
            .filter(|n| n.starts_with(b"state."))
            .collect();
        assert_eq!(trees.len(), 1, "{step}: stale trees left");
        check_invariants(&store);
    }
}

/// A value damaged at rest in a way sled does not notice fails its own checksum: the
/// read fails instead of returning it, and `open_verified` reports the state as damaged.
#[test]
fn a_value_damaged_at_rest_is_never_returned() {
    let mut h = Harness::new();
    assert!(h.run(put("k", "the right value", None)).is_ok());
    let key = codec::record_key("k");
    let mut v = h
        .store
        .with_tree(|t| Ok(t.get(&key)?.unwrap().to_vec()))
        .unwrap();
    let at = v.len() - 6;
    v[at] ^= 0x01;
    h.store
        .with_tree(|t| Ok(t.insert(&key, v.clone())?))
        .unwrap();
    let err = h.store.get_record("k").unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
    h.store.flush().unwrap();
    let Harness { tmp, store, .. } = h;
    drop(store);
    let chunks = ChunkStore::open(&tmp.path().join("chunks")).unwrap();
    assert!(matches!(
        StateStore::open_verified(&tmp.path().join("state"), chunks),
        Err(StorageError::Corrupt { .. })
    ));
}
