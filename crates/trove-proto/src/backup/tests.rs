//! Tests of the backup format checker: a valid stream passes, every kind of damage is
//! refused, and a file round-trips through the record framing.
#![allow(clippy::unwrap_used)]

use trove_types::Sha256;

use super::*;
use crate::v1::{BackupFile, BackupFileEnd};

fn msg(part: Part) -> BackupMessage {
    BackupMessage { part: Some(part) }
}

/// A valid stream: state.bin of 3 bytes, then two chunks (one in two pieces).
fn valid_stream() -> Vec<BackupMessage> {
    let mut chunks: Vec<Vec<u8>> = vec![b"hello chunk".to_vec(), vec![7u8; BACKUP_PIECE_BYTES + 5]];
    chunks.sort_by_key(|c| hex::encode(Sha256::digest(c)));
    let mut files: Vec<(String, Vec<u8>)> = vec![(STATE_FILE.into(), b"abc".to_vec())];
    for c in chunks {
        files.push((
            format!("{CHUNK_PREFIX}{}", hex::encode(Sha256::digest(&c))),
            c,
        ));
    }
    let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    let mut out = vec![msg(Part::Header(BackupHeader {
        format_version: FORMAT_VERSION,
        cluster_id: "c".into(),
        files: files.len() as u64,
        total_bytes: total,
        ..Default::default()
    }))];
    for (name, bytes) in &files {
        out.push(msg(Part::File(BackupFile {
            name: name.clone(),
            size: bytes.len() as u64,
        })));
        for piece in bytes.chunks(BACKUP_PIECE_BYTES) {
            out.push(msg(Part::Data(bytes::Bytes::copy_from_slice(piece))));
        }
        out.push(msg(Part::FileEnd(BackupFileEnd {
            crc32c: crc32c::crc32c(bytes),
        })));
    }
    let mut h = Sha256::new();
    for m in &out {
        h.update(encode_record(m));
    }
    out.push(msg(Part::Trailer(BackupTrailer {
        files: files.len() as u64,
        total_bytes: total,
        sha256: h.finalize().to_vec().into(),
    })));
    out
}

fn check_all(stream: &[BackupMessage]) -> Result<BackupSummary> {
    let mut c = BackupChecker::new();
    for m in stream {
        c.check(m, &encode_record(m))?;
    }
    c.finish()
}

#[test]
fn a_valid_stream_passes_and_round_trips_through_a_file() {
    let stream = valid_stream();
    let summary = check_all(&stream).unwrap();
    assert_eq!(summary.trailer.files, 3);
    let mut file = FILE_MAGIC.to_vec();
    for m in &stream {
        file.extend(encode_record(m));
    }
    let mut r = &file[..];
    read_magic(&mut r).unwrap();
    let mut c = BackupChecker::new();
    while let Some((m, rec)) = read_record(&mut r).unwrap() {
        c.check(&m, &rec).unwrap();
    }
    assert_eq!(c.finish().unwrap(), summary);
    // A cut file is truncated, never complete.
    let mut r = &file[..file.len() - 3];
    read_magic(&mut r).unwrap();
    let mut c = BackupChecker::new();
    let err = loop {
        match read_record(&mut r) {
            Ok(Some((m, rec))) => c.check(&m, &rec).unwrap(),
            Ok(None) => break c.finish().unwrap_err(),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, BackupFormatError::Truncated(_)), "{err}");
}

#[test]
fn damage_is_refused() {
    type Mutation = fn(&mut Vec<BackupMessage>);
    let cases: &[(&str, Mutation)] = &[
        ("flipped data byte", |s| {
            if let Some(Part::Data(d)) = &mut s[2].part {
                let mut v = d.to_vec();
                v[0] ^= 1;
                *d = v.into();
            }
        }),
        ("missing trailer", |s| {
            s.pop();
        }),
        ("missing file", |s| {
            s.drain(4..7);
        }),
        ("wrong trailer hash", |s| {
            if let Some(Part::Trailer(t)) = &mut s.last_mut().unwrap().part {
                t.sha256 = vec![0u8; 32].into();
            }
        }),
        ("newer version", |s| {
            if let Some(Part::Header(h)) = &mut s[0].part {
                h.format_version = 2;
            }
        }),
        ("header count", |s| {
            if let Some(Part::Header(h)) = &mut s[0].part {
                h.files += 1;
            }
        }),
        ("no header", |s| {
            s.remove(0);
        }),
        ("empty piece", |s| {
            s.insert(2, msg(Part::Data(bytes::Bytes::new())))
        }),
    ];
    for (what, mutate) in cases {
        let mut s = valid_stream();
        mutate(&mut s);
        assert!(check_all(&s).is_err(), "{what} was accepted");
    }
    let mut s = valid_stream();
    if let Some(Part::Header(h)) = &mut s[0].part {
        h.format_version = 2;
    }
    assert!(matches!(
        check_all(&s),
        Err(BackupFormatError::UnsupportedVersion { found: 2, .. })
    ));
}

#[test]
fn oversized_records_are_refused_before_allocation() {
    let mut file = ((MAX_BACKUP_RECORD_BYTES + 1) as u32)
        .to_be_bytes()
        .to_vec();
    file.extend([0u8; 16]);
    assert!(matches!(
        read_record(&mut &file[..]),
        Err(BackupFormatError::Corrupt(_))
    ));
    assert!(matches!(
        read_magic(&mut &b"TROVSNAP"[..]),
        Err(BackupFormatError::Corrupt(_))
    ));
}
