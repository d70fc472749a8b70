//! Verification of segments as found on disk during `open` (and `salvage`): headers,
//! records up to the first bad one, and the search for a valid record after a bad one
//! that tells a torn tail from damage in the middle of the log.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use super::{
    Found, Loc, MAX_RECORD_PAYLOAD_BYTES, RECORD_HEADER_BYTES, RESYNC_WINDOW_BYTES,
    SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, le_u32, le_u64, record_crc,
};
use crate::error::{Result, StorageError};

/// Verifies a segment header (version already checked in phase 1).
pub(super) fn check_header(seg: &Found) -> Result<()> {
    let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
    seg.file
        .read_exact_at(&mut h, 0)
        .map_err(|e| StorageError::io(&seg.path, e))?;
    let problem = if h[..8] != SEGMENT_MAGIC {
        "bad magic".to_string()
    } else if crc32c::crc32c(&h[..20]) != le_u32(&h[20..24]) {
        "header checksum mismatch".to_string()
    } else if le_u64(&h[12..20]) != seg.first_index {
        format!(
            "header says first index {} but the file name says {}",
            le_u64(&h[12..20]),
            seg.first_index
        )
    } else {
        return Ok(());
    };
    Err(StorageError::corrupt(&seg.path, problem))
}

/// Scans the records of a segment whose header is valid. Returns the record locations and
/// the end of the last valid record. A bad record is accepted as a torn tail only at the
/// end of the last segment with no valid record after it; anything else is `Corrupt`.
///
/// Also returns whether only zeros follow the last valid record of the last segment: the
/// unused part of a preallocated segment, which is no damage.
pub(super) fn scan_records(seg: &Found, is_last: bool) -> Result<(Vec<Loc>, u64, bool)> {
    let scan = scan_until_bad(seg)?;
    let Some((bad, intact)) = scan.bad else {
        return Ok((scan.locs, scan.valid_len, false));
    };
    if is_last && !intact && only_zeros_from(seg, scan.valid_len)? {
        return Ok((scan.locs, scan.valid_len, true));
    }
    if !is_last || intact {
        return Err(StorageError::corrupt(
            &seg.path,
            format!("{bad}, in a segment that is not the last"),
        ));
    }
    let expected = seg.first_index + scan.locs.len() as u64;
    if let Some(at) = find_valid_record_after(seg, scan.valid_len, expected)? {
        return Err(StorageError::corrupt(
            &seg.path,
            format!("{bad}, followed by a valid record at offset {at}"),
        ));
    }
    Ok((scan.locs, scan.valid_len, false))
}

/// Whether every byte of the segment from `offset` to its end is zero.
pub(super) fn only_zeros_from(seg: &Found, offset: u64) -> Result<bool> {
    let mut buf = vec![0u8; RESYNC_WINDOW_BYTES as usize];
    let mut pos = offset;
    while pos < seg.file_len {
        let n = (seg.file_len - pos).min(RESYNC_WINDOW_BYTES) as usize;
        seg.file
            .read_exact_at(&mut buf[..n], pos)
            .map_err(|e| StorageError::io(&seg.path, e))?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

/// The records of a segment up to the first one that fails verification.
pub(super) struct Scan {
    pub(super) locs: Vec<Loc>,
    /// End of the last valid record.
    pub(super) valid_len: u64,
    /// What is wrong with the record at `valid_len`, if it is not the end of the file,
    /// and whether that record passed its checksum (then it is no torn write).
    pub(super) bad: Option<(String, bool)>,
}

/// Reads and verifies records from the start of a segment (whose header is valid) until
/// the end of the file or the first record that fails (length, checksum, index).
pub(super) fn scan_until_bad(seg: &Found) -> Result<Scan> {
    let io = |e| StorageError::io(&seg.path, e);
    let mut file = &seg.file;
    file.seek(SeekFrom::Start(SEGMENT_HEADER_BYTES))
        .map_err(io)?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut locs = Vec::new();
    let mut payload = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut expected = seg.first_index;
    while offset < seg.file_len {
        let remaining = seg.file_len - offset;
        let mut h = [0u8; RECORD_HEADER_BYTES as usize];
        let problem = if remaining < RECORD_HEADER_BYTES {
            Some(("incomplete record header".to_string(), false))
        } else {
            reader.read_exact(&mut h).map_err(io)?;
            let len = le_u32(&h[8..12]);
            if len > MAX_RECORD_PAYLOAD_BYTES {
                Some(("record length beyond the limit".to_string(), false))
            } else if u64::from(len) > remaining - RECORD_HEADER_BYTES {
                Some(("record extends past the end of the file".to_string(), false))
            } else {
                payload.resize(len as usize, 0);
                reader.read_exact(&mut payload).map_err(io)?;
                if record_crc(&h[..12], &payload) != le_u32(&h[12..16]) {
                    Some(("checksum mismatch".to_string(), false))
                } else if le_u64(&h[0..8]) != expected {
                    Some((format!("has index {}", le_u64(&h[0..8])), true))
                } else {
                    None
                }
            }
        };
        if let Some((problem, intact)) = problem {
            return Ok(Scan {
                locs,
                valid_len: offset,
                bad: Some((
                    format!("record at offset {offset} (expected index {expected}): {problem}"),
                    intact,
                )),
            });
        }
        locs.push(Loc {
            offset,
            len: payload.len() as u32,
        });
        offset += RECORD_HEADER_BYTES + payload.len() as u64;
        expected += 1;
    }
    Ok(Scan {
        locs,
        valid_len: offset,
        bad: None,
    })
}

/// Looks for any valid record starting after `bad_offset` whose index could belong to the
/// log (at least `expected`, at most as many records as the remaining bytes could hold).
/// Reads a bounded window at a time, so a damaged file cannot make us allocate much.
pub(super) fn find_valid_record_after(
    seg: &Found,
    bad_offset: u64,
    expected: u64,
) -> Result<Option<u64>> {
    let io = |e| StorageError::io(&seg.path, e);
    let highest = expected.saturating_add((seg.file_len - bad_offset) / RECORD_HEADER_BYTES + 1);
    let mut window = Vec::new();
    let mut pos = bad_offset + 1;
    while pos + RECORD_HEADER_BYTES <= seg.file_len {
        let window_len = (RESYNC_WINDOW_BYTES + RECORD_HEADER_BYTES - 1).min(seg.file_len - pos);
        window.resize(window_len as usize, 0);
        seg.file.read_exact_at(&mut window, pos).map_err(io)?;
        let starts = window_len - RECORD_HEADER_BYTES + 1;
        for i in 0..starts as usize {
            let h = &window[i..i + RECORD_HEADER_BYTES as usize];
            let index = le_u64(&h[0..8]);
            let len = le_u32(&h[8..12]);
            let at = pos + i as u64;
            if index < expected
                || index > highest
                || len > MAX_RECORD_PAYLOAD_BYTES
                || at + RECORD_HEADER_BYTES + u64::from(len) > seg.file_len
            {
                continue;
            }
            let mut payload = vec![0u8; len as usize];
            seg.file
                .read_exact_at(&mut payload, at + RECORD_HEADER_BYTES)
                .map_err(io)?;
            if record_crc(&h[..12], &payload) == le_u32(&h[12..16]) {
                return Ok(Some(at));
            }
        }
        pos += starts;
    }
    Ok(None)
}
