//! The on-disk layout of a log directory (see the format in the parent module's docs):
//! segment file names, the segment header, record headers with their CRC32C, and the
//! little-endian fields they are made of.

use std::fs;
use std::path::{Path, PathBuf};

use super::{
    RECORD_HEADER_BYTES, SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, spare,
};
use crate::error::{Result, StorageError};

pub(super) fn segment_file_name(first_index: u64) -> String {
    format!("seg-{first_index:020}.log")
}

pub(super) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segment files in `dir`, sorted by first index.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let io = |e| StorageError::io(dir, e);
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        match name.to_str().and_then(parse_segment_file_name) {
            Some(first) => out.push((first, entry.path())),
            None if name.to_str().is_some_and(spare::is_spare_name) => {}
            None => {
                tracing::warn!(file = ?name, dir = %dir.display(), "ignoring unknown file in log directory")
            }
        }
    }
    out.sort_unstable_by_key(|(first, _)| *first);
    Ok(out)
}

pub(super) fn encode_header(first_index: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_index.to_le_bytes());
    let crc = crc32c::crc32c(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

pub(super) fn record_crc(header12: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header12), payload)
}

/// The header of record `index` holding `payload`.
pub(super) fn record_header(index: u64, payload: &[u8]) -> [u8; RECORD_HEADER_BYTES as usize] {
    let mut h = [0u8; RECORD_HEADER_BYTES as usize];
    h[0..8].copy_from_slice(&index.to_le_bytes());
    h[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = record_crc(&h[..12], payload);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

pub(super) fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

pub(super) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}
