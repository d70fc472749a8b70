//! Read-only inspection of a log directory, for the start-up check that runs before a
//! node writes anything: every segment header's format version, and the payload of the
//! newest complete record (whose own encoding version the caller checks).
//!
//! Nothing here opens a file for writing, creates, truncates or syncs anything: a binary
//! that does not understand the directory must leave it byte-for-byte untouched.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{
    MAX_RECORD_PAYLOAD_BYTES, RECORD_HEADER_BYTES, SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_BYTES,
    SEGMENT_MAGIC, le_u32, list_segments, record_crc,
};
use crate::error::{Result, StorageError};

/// Records whose checksum is tried, newest first, when looking for the newest complete
/// record: the newest may be a torn write.
const LAST_RECORD_CANDIDATES: usize = 2;

/// What a read-only look at a log directory found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogInspection {
    /// Segment files present.
    pub segments: usize,
    /// Payload of the newest record whose checksum verifies, if any.
    pub last_payload: Option<Vec<u8>>,
}

/// Inspects the log in `dir` without modifying anything: refuses a segment header with
/// an unknown format version (`UnsupportedVersion`), and returns the newest complete
/// record's payload. Damage is not diagnosed here; [`super::SegmentLog::open`] does that.
pub fn inspect_log_dir(dir: &Path) -> Result<LogInspection> {
    if !dir.is_dir() {
        return Ok(LogInspection::default());
    }
    let segments = list_segments(dir)?;
    let mut files = Vec::with_capacity(segments.len());
    for (_, path) in &segments {
        let file = File::open(path).map_err(|e| StorageError::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io(path, e))?
            .len();
        let mut header = vec![0u8; len.min(SEGMENT_HEADER_BYTES) as usize];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| StorageError::io(path, e))?;
        if header.len() >= 12 && header[..8] == SEGMENT_MAGIC {
            let found = le_u32(&header[8..12]);
            if found != SEGMENT_FORMAT_VERSION {
                return Err(StorageError::UnsupportedVersion {
                    path: path.clone(),
                    found,
                    supported: SEGMENT_FORMAT_VERSION,
                });
            }
        }
        files.push((path, file, len));
    }
    // The newest record lives in the last segment, or in the one before it when the last
    // was created but never written (a crash during rollover).
    let mut last_payload = None;
    for (path, file, len) in files.iter().rev().take(2) {
        if *len <= SEGMENT_HEADER_BYTES {
            continue;
        }
        last_payload = newest_valid_record(path, file, *len)?;
        if last_payload.is_some() {
            break;
        }
    }
    Ok(LogInspection {
        segments: segments.len(),
        last_payload,
    })
}

/// Walks the record headers of one segment (skipping payloads) and returns the payload
/// of the newest record whose checksum verifies.
fn newest_valid_record(path: &Path, file: &File, len: u64) -> Result<Option<Vec<u8>>> {
    let io = |e| StorageError::io(path, e);
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    reader
        .seek(SeekFrom::Start(SEGMENT_HEADER_BYTES))
        .map_err(io)?;
    let mut offsets = Vec::with_capacity(LAST_RECORD_CANDIDATES);
    let mut offset = SEGMENT_HEADER_BYTES;
    while offset + RECORD_HEADER_BYTES <= len {
        let mut h = [0u8; RECORD_HEADER_BYTES as usize];
        reader.read_exact(&mut h).map_err(io)?;
        if h.iter().all(|b| *b == 0) {
            // The unused, preallocated end of the last segment: no record is all zeros.
            break;
        }
        let payload_len = le_u32(&h[8..12]);
        let end = offset + RECORD_HEADER_BYTES + u64::from(payload_len);
        if payload_len > MAX_RECORD_PAYLOAD_BYTES || end > len {
            break;
        }
        if offsets.len() == LAST_RECORD_CANDIDATES {
            offsets.remove(0);
        }
        offsets.push((offset, h));
        reader.seek_relative(i64::from(payload_len)).map_err(io)?;
        offset = end;
    }
    for (at, h) in offsets.into_iter().rev() {
        let mut payload = vec![0u8; le_u32(&h[8..12]) as usize];
        file.read_exact_at(&mut payload, at + RECORD_HEADER_BYTES)
            .map_err(io)?;
        if record_crc(&h[..12], &payload) == le_u32(&h[12..16]) {
            return Ok(Some(payload));
        }
    }
    Ok(None)
}
