//! Tests of the chunk store: round trips, direct writes, verification and quarantine,
//! the trash, and the skipped re-hash of named and vouched-for buffers.

#![allow(clippy::unwrap_used)]

use super::*;
use trove_types::limits::NAMED_CHUNKS_KEPT;

fn store() -> (tempfile::TempDir, ChunkStore) {
    let tmp = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(&tmp.path().join("chunks")).unwrap();
    (tmp, store)
}

fn chunk(seed: u8, len: usize) -> (Sha256Digest, Vec<u8>) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    (sha256(&data), data)
}

#[test]
fn put_get_round_trip() {
    let (_tmp, store) = store();
    let (h, data) = chunk(1, 5000);
    assert!(!store.contains(&h));
    assert!(matches!(store.get(&h), Err(StorageError::NotFound(_))));
    store.put(&h, &data).unwrap();
    assert!(store.contains(&h));
    assert_eq!(store.get(&h).unwrap(), data);
    assert_eq!(store.read_range(&h, 10, 20).unwrap(), data[10..30]);
    assert_eq!(store.read_range(&h, 5000, 0).unwrap().len(), 0);
    assert!(store.read_range(&h, 4990, 11).is_err());
    assert!(store.read_range(&h, u64::MAX, 2).is_err());
    let hex = hex::encode(h);
    assert_eq!(
        store.path_of(&h),
        store.dir().join(&hex[..2]).join(&hex),
        "layout is <dir>/<2 hex>/<64 hex>"
    );
    assert_eq!(store.list().unwrap(), vec![h]);
    assert_eq!(store.total_bytes(), 5000);
    store.remove(&h).unwrap();
    store.remove(&h).unwrap();
    assert!(!store.contains(&h));
    assert!(store.list().unwrap().is_empty());
}

fn hashed_by_put(store: &ChunkStore) -> u64 {
    store
        .inner
        .vouched
        .hashed_by_put
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// A buffer named by `name_chunk` is put without hashing it again, once; a copy of
/// the same bytes, a different slice of the buffer, or a buffer forgotten because
/// newer ones pushed it out is hashed, and a copy that does not match is refused.
#[test]
fn put_of_a_named_buffer_skips_only_the_repeated_hash() {
    let (_tmp, store) = store();
    let (h, data) = chunk(3, 70_000);
    let buf = Bytes::from(data.clone());
    assert_eq!(store.name_chunk(&buf), h);
    store.put(&h, &buf).unwrap();
    assert_eq!(hashed_by_put(&store), 0, "the named buffer itself");
    assert_eq!(store.get(&h).unwrap(), data);
    store.put(&h, &buf).unwrap();
    assert_eq!(hashed_by_put(&store), 1, "named once, shortcut once");

    // A copy with other bytes under the name of the named buffer is refused.
    let (h2, data2) = chunk(4, 5000);
    let named = Bytes::from(data2.clone());
    assert_eq!(store.name_chunk(&named), h2);
    let mut forged = data2.clone();
    forged[17] ^= 1;
    assert!(matches!(
        store.put(&h2, &forged),
        Err(StorageError::ChecksumMismatch(_))
    ));
    // So is a shorter slice of the named buffer itself.
    assert!(matches!(
        store.put(&h2, &named[..4999]),
        Err(StorageError::ChecksumMismatch(_))
    ));
    assert_eq!(hashed_by_put(&store), 3);
    assert!(!store.contains(&h2));
    store.put(&h2, &named).unwrap();
    assert_eq!(hashed_by_put(&store), 3);

    // Only the newest NAMED_CHUNKS_KEPT buffers are remembered.
    let (h3, data3) = chunk(5, 100);
    let oldest = Bytes::from(data3);
    store.name_chunk(&oldest);
    for i in 0..NAMED_CHUNKS_KEPT {
        store.name_chunk(&Bytes::from(vec![i as u8; 10]));
    }
    assert_eq!(store.vouched_count(), NAMED_CHUNKS_KEPT);
    store.put(&h3, &oldest).unwrap();
    assert_eq!(hashed_by_put(&store), 4, "pushed out, so hashed");
}

/// Removal moves the file out of its name at once and a background thread deletes
/// it; the same chunk can be stored again right away; files a crash left in the
/// trash are deleted when the store opens.
#[test]
fn removed_chunks_go_through_the_trash() {
    let (tmp, store) = store();
    let chunks: Vec<_> = (0..20u8).map(|i| chunk(i, 9000)).collect();
    for (h, data) in &chunks {
        store.put(h, data).unwrap();
    }
    let gone: Vec<Sha256Digest> = chunks[..15].iter().map(|(h, _)| *h).collect();
    store.remove_many(&gone).unwrap();
    for (i, (h, data)) in chunks.iter().enumerate() {
        assert_eq!(store.contains(h), i >= 15, "chunk {i}");
        if i >= 15 {
            assert_eq!(store.get(h).unwrap(), *data);
        }
    }
    assert_eq!(store.list().unwrap().len(), 5);
    let trash = tmp.path().join("chunks").join(TRASH_DIR);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fs::read_dir(&trash).unwrap().count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the trash was never emptied"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Stored again after its removal: a new file, not the one in the trash.
    let (h, data) = &chunks[3];
    store.put(h, data).unwrap();
    assert_eq!(store.get(h).unwrap(), *data);

    // A crash between the rename and the delete: the next open deletes it.
    drop(store);
    fs::write(trash.join("7"), b"left by a crash").unwrap();
    let store = ChunkStore::open(&tmp.path().join("chunks")).unwrap();
    assert_eq!(fs::read_dir(&trash).unwrap().count(), 0);
    assert_eq!(store.list().unwrap().len(), 6);
}

/// Direct writes pad the last block and cut the file back: every length around the
/// 4 KiB block reads back exactly, also after a larger chunk left other bytes in the
/// thread's buffer; the page-cache path (used where direct IO is refused) writes the
/// same files.
#[test]
fn direct_writes_keep_exact_contents_and_lengths() {
    let (_tmp, store) = store();
    let sizes = [
        1024 * 1024 + 123,
        1,
        4095,
        4096,
        4097,
        8191,
        1024 * 1024,
        0,
        70_000,
    ];
    for (seed, len) in sizes.into_iter().enumerate() {
        let (h, data) = chunk(seed as u8 + 10, len);
        store.put(&h, &data).unwrap();
        assert_eq!(file_len(&store.path_of(&h)).unwrap(), Some(len as u64));
        assert_eq!(store.get(&h).unwrap(), data, "{len} bytes");
        let direct = store.dir().join(format!("direct-{len}"));
        assert!(
            write_direct(&direct, &data).unwrap(),
            "this filesystem does direct IO"
        );
        let buffered = store.dir().join(format!("buffered-{len}"));
        write_buffered(&buffered, &data).unwrap();
        assert_eq!(fs::read(&direct).unwrap(), data);
        assert_eq!(fs::read(&buffered).unwrap(), data);
    }
}

#[test]
fn put_rejects_wrong_hash() {
    let (_tmp, store) = store();
    let (h, mut data) = chunk(2, 100);
    data[0] ^= 1;
    assert!(matches!(
        store.put(&h, &data),
        Err(StorageError::ChecksumMismatch(_))
    ));
    assert!(!store.contains(&h));
}

#[test]
fn corrupt_file_is_detected_and_quarantined() {
    let (_tmp, store) = store();
    let (h, data) = chunk(3, 1000);
    store.put(&h, &data).unwrap();
    let path = store.path_of(&h);
    let mut bytes = fs::read(&path).unwrap();
    bytes[500] ^= 0x40;
    fs::write(&path, &bytes).unwrap();

    assert!(matches!(store.get(&h), Err(StorageError::Corrupt { .. })));
    assert!(
        !store.contains(&h),
        "a corrupt chunk must not stay servable"
    );
    assert!(matches!(store.get(&h), Err(StorageError::NotFound(_))));
    let quarantined: Vec<_> = fs::read_dir(store.dir().join(QUARANTINE_DIR))
        .unwrap()
        .collect();
    assert_eq!(quarantined.len(), 1);
    // Repair: a fresh put brings the good bytes back.
    store.put(&h, &data).unwrap();
    assert_eq!(store.get(&h).unwrap(), data);
}

#[test]
fn put_is_idempotent_and_repairs_wrong_length() {
    let (_tmp, store) = store();
    let (h, data) = chunk(4, 300);
    store.put(&h, &data).unwrap();
    let path = store.path_of(&h);
    let before = fs::metadata(&path).unwrap();
    store.put(&h, &data).unwrap();
    let after = fs::metadata(&path).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        before.ino(),
        after.ino(),
        "an existing chunk is not rewritten"
    );
    // A truncated file (torn write of an older binary, bad disk) is replaced.
    fs::write(&path, &data[..10]).unwrap();
    store.put(&h, &data).unwrap();
    assert_eq!(store.get(&h).unwrap(), data);
    assert_eq!(fs::read_dir(store.dir().join(TMP_DIR)).unwrap().count(), 0);
}

#[test]
fn adopt_verifies_content_and_leaves_src() {
    let (tmp, store) = store();
    let (h, data) = chunk(5, 2000);
    let src = tmp.path().join("incoming");
    fs::write(&src, &data).unwrap();
    let (other, _) = chunk(6, 10);
    assert!(matches!(
        store.adopt(&other, &src),
        Err(StorageError::Corrupt { .. })
    ));
    assert!(!store.contains(&other));
    assert!(store.adopt(&h, &tmp.path().join("missing")).is_err());
    store.adopt(&h, &src).unwrap();
    assert_eq!(store.get(&h).unwrap(), data);
    assert_eq!(fs::read(&src).unwrap(), data, "src is untouched");
    store.adopt(&h, &src).unwrap();
}

#[test]
fn link_to_shares_the_file() {
    let (tmp, store) = store();
    let (h, data) = chunk(7, 64);
    store.put(&h, &data).unwrap();
    let dest = tmp.path().join("linked");
    store.link_to(&h, &dest).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), data);
    assert!(store.link_to(&h, &dest).is_err(), "never overwrites dest");
    let (missing, _) = chunk(8, 64);
    assert!(matches!(
        store.link_to(&missing, &tmp.path().join("x")),
        Err(StorageError::MissingChunk(h)) if h == missing
    ));
}

#[test]
fn open_cleans_temp_files_and_keeps_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("chunks");
    let (h, data) = chunk(9, 10);
    {
        let store = ChunkStore::open(&dir).unwrap();
        store.put(&h, &data).unwrap();
        fs::write(dir.join(TMP_DIR).join("leftover.tmp"), b"half").unwrap();
    }
    let store = ChunkStore::open(&dir).unwrap();
    assert_eq!(fs::read_dir(dir.join(TMP_DIR)).unwrap().count(), 0);
    assert_eq!(store.get(&h).unwrap(), data);
}

#[test]
fn open_refuses_unknown_format_version_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("chunks");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("FORMAT"), "trove-chunks 3\n").unwrap();
    fs::create_dir(dir.join(TMP_DIR)).unwrap();
    fs::write(dir.join(TMP_DIR).join("x.tmp"), b"keep").unwrap();
    let err = ChunkStore::open(&dir).err().unwrap();
    assert!(matches!(
        err,
        StorageError::UnsupportedVersion {
            found: 3,
            supported: 2,
            ..
        }
    ));
    assert!(dir.join(TMP_DIR).join("x.tmp").exists(), "nothing modified");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 2, "no shards created");
}

/// Version 1 directories (written before log entries could name chunk files) are taken
/// as they are and marked version 2, so that a release knowing only version 1 refuses
/// them from then on.
#[test]
fn a_version_1_store_is_opened_and_marked_version_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("chunks");
    let (h, data) = chunk(4, 10);
    {
        let store = ChunkStore::open(&dir).unwrap();
        store.put(&h, &data).unwrap();
    }
    assert_eq!(
        fs::read_to_string(dir.join("FORMAT")).unwrap(),
        "trove-chunks 2\n"
    );
    fs::write(dir.join("FORMAT"), "trove-chunks 1\n").unwrap();
    ChunkStore::check_format(&dir).unwrap();
    let store = ChunkStore::open(&dir).unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("FORMAT")).unwrap(),
        "trove-chunks 2\n"
    );
    assert_eq!(store.get(&h).unwrap(), data);
    // What a version-1 release checks: it is refused.
    assert!(matches!(
        crate::fsutil::check_format_file(&dir, "trove-chunks", 1),
        Err(StorageError::UnsupportedVersion { found: 2, .. })
    ));
}
