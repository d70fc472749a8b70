//! Offline verify and restore against backup files made by the server's own sender:
//! a valid file verifies and restores; a file whose chunk files do not match what the
//! state refers to, or whose header disagrees with its state, is refused even though
//! every checksum in it is right; a restore never touches a non-empty directory.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use tokio::sync::mpsc;
use trove_proto::backup::{FILE_MAGIC, FORMAT_VERSION, encode_record};
use trove_proto::v1::BackupMessage;
use trove_raft::types::SnapshotMeta;
use trove_types::Sha256;
use trove_types::{ChunkRef, Command, Op};

use super::*;
use crate::backup::Sender;

fn cmd(op: Op) -> Command {
    Command {
        request_id: None,
        time_ms: 1,
        op,
    }
}

/// A store with a record and a two-chunk object, exported as a backup; returns the
/// backup's messages.
async fn backup_messages(dir: &Path) -> Vec<BackupMessage> {
    let store = StateStore::open(
        &dir.join("state"),
        ChunkStore::open(&dir.join("chunks")).unwrap(),
    )
    .unwrap();
    let chunks: Vec<Bytes> = vec![Bytes::from(vec![1u8; 1000]), Bytes::from(vec![2u8; 10])];
    let refs: Vec<ChunkRef> = chunks
        .iter()
        .map(|c| ChunkRef {
            hash: Sha256::digest(c),
            len: c.len() as u32,
        })
        .collect();
    let whole: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
    let mut ops = vec![
        Op::PutRecord {
            key: "k".into(),
            value: Bytes::from_static(b"v"),
            expected_revision: None,
        },
        Op::CreateBucket {
            bucket: "bkt".into(),
        },
    ];
    for (c, r) in chunks.iter().zip(&refs) {
        ops.push(Op::PutChunk {
            upload_id: 7,
            hash: r.hash,
            data: c.clone(),
        });
    }
    ops.push(Op::CommitObject {
        upload_id: 7,
        bucket: "bkt".into(),
        key: "obj".into(),
        size: whole.len() as u64,
        sha256: Sha256::digest(&whole),
        chunks: refs,
    });
    let n = ops.len() as u64;
    for (i, op) in ops.into_iter().enumerate() {
        store.apply(i as u64 + 1, Some(&cmd(op)), b"meta").unwrap();
    }
    let meta = SnapshotMeta {
        last_log_id: Some(openraft::testing::log_id::<trove_raft::TypeConfig>(3, 1, n)),
        last_membership: Default::default(),
    };
    let export = dir.join("export");
    let info = store
        .export_snapshot(&export, &trove_raft::codec::encode(&meta).unwrap())
        .unwrap();
    let header = BackupHeader {
        format_version: FORMAT_VERSION,
        cluster_id: "source".into(),
        applied_index: n,
        files: 1 + info.counts.chunks,
        total_bytes: info.bytes,
        ..Default::default()
    };
    let (tx, mut rx) = mpsc::channel(1024);
    tokio::task::spawn_blocking(move || Sender::new(tx).stream(&export, header).is_ok())
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(m) = rx.recv().await {
        out.push(m.unwrap());
    }
    out
}

fn write_file(path: &Path, msgs: &[BackupMessage]) {
    let mut bytes = FILE_MAGIC.to_vec();
    for m in msgs {
        bytes.extend(encode_record(m));
    }
    std::fs::write(path, bytes).unwrap();
}

/// Recomputes the header's counts and the trailer after messages were removed.
fn reseal(msgs: &mut [BackupMessage], files_delta: u64, bytes_delta: u64) {
    if let Some(Part::Header(h)) = &mut msgs[0].part {
        h.files -= files_delta;
        h.total_bytes -= bytes_delta;
    }
    let (body, last) = msgs.split_at_mut(msgs.len() - 1);
    let mut sha = Sha256::new();
    for m in body.iter() {
        sha.update(encode_record(m));
    }
    if let Some(Part::Trailer(t)) = &mut last[0].part {
        t.files -= files_delta;
        t.total_bytes -= bytes_delta;
        t.sha256 = sha.finalize().to_vec().into();
    }
}

fn no_progress(_: u64) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_restore_check_the_state_against_the_chunks() {
    let td = tempfile::tempdir().unwrap();
    let msgs = backup_messages(&td.path().join("src")).await;
    let good = td.path().join("good.tbk");
    write_file(&good, &msgs);
    let report = verify_file(&good, &no_progress).unwrap();
    assert_eq!((report.chunks, report.header.applied_index), (2, 5));

    // Drop the last chunk file: every remaining checksum is right, the state is not.
    let mut missing = msgs.clone();
    let start = missing
        .iter()
        .rposition(|m| matches!(m.part, Some(Part::File(_))))
        .unwrap();
    let size = match &missing[start].part {
        Some(Part::File(f)) => f.size,
        _ => unreachable!(),
    };
    let end = missing.len() - 1;
    missing.drain(start..end);
    reseal(&mut missing, 1, size);
    let path = td.path().join("missing.tbk");
    write_file(&path, &missing);
    match verify_file(&path, &no_progress) {
        Err(RestoreError::State(m)) => assert!(m.contains("does not hold"), "{m}"),
        other => panic!("a backup without a referenced chunk: {other:?}"),
    }

    // A header that disagrees with the state file.
    let mut lying = msgs.clone();
    if let Some(Part::Header(h)) = &mut lying[0].part {
        h.applied_index += 1;
    }
    reseal(&mut lying, 0, 0);
    let path = td.path().join("lying.tbk");
    write_file(&path, &lying);
    assert!(matches!(
        verify_file(&path, &no_progress),
        Err(RestoreError::State(_))
    ));

    // Restore: a new member holding the data; never into a non-empty directory; a bad
    // file leaves nothing behind.
    let opts = |dir: &str, backup: &Path| RestoreOptions {
        backup: backup.to_path_buf(),
        node_id: 2,
        data_dir: td.path().join(dir),
        initial_cluster: vec![(1, "h1:1".into()), (2, "h2:1".into())],
        initial_cluster_token: "t".into(),
    };
    let r = restore(&opts("n2", &good), &no_progress).unwrap();
    assert_eq!(
        (r.counts.records, r.counts.objects, r.counts.chunks),
        (1, 1, 2)
    );
    let id = identity::load(&td.path().join("n2")).unwrap().unwrap();
    assert_eq!(
        (id.node_id, id.cluster_id.as_str()),
        (2, r.cluster_id.as_str())
    );
    assert!(!td.path().join("n2").join(RESTORE_TMP_DIR).exists());
    assert!(matches!(
        restore(&opts("n2", &good), &no_progress),
        Err(RestoreError::Refused(_))
    ));
    assert!(restore(&opts("bad", &path), &no_progress).is_err());
    assert_eq!(std::fs::read_dir(td.path().join("bad")).unwrap().count(), 0);
}
