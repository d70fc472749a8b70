//! How a log entry is stored as a segment-log record.
//!
//! Every record starts with an encoding version byte:
//! - `1` ([`INLINE`]): the entry in postcard ([`crate::codec`]'s format), whatever it
//!   carries. Entries written by earlier releases are all of this kind.
//! - `2` ([`CHUNK_BY_NAME`]): a chunk entry (`Op::PutChunk`) whose bytes are in its chunk
//!   file, written and fsynced before the record: the payload's length (u32,
//!   little-endian), then the entry in postcard with an empty payload. The chunk's name is
//!   its SHA-256, so reading the file back verifies it; the record needs no copy of the
//!   bytes. That halves what an upload writes on each node (the log and the chunk file
//!   held the same bytes).
//!
//! Version 2 came with the chunk store's format 2 (`trove_storage::chunks`): a release
//! that knows only version 1 refuses that directory before it touches anything. It must:
//! it would read version 2 records as garbage, and remove their chunk files as
//! unreferenced.

use bytes::Bytes;
use openraft::EntryPayload;
use trove_types::{Command, Op, Sha256Digest};

use crate::codec::CodecError;
use crate::types::Entry;

/// An entry stored whole (what [`crate::codec::encode`] writes).
pub(super) const INLINE: u8 = crate::codec::FORMAT_VERSION;
/// A chunk entry whose payload is its chunk file.
pub(super) const CHUNK_BY_NAME: u8 = 2;

/// The chunk an entry carries: its name and bytes.
pub(super) fn chunk_of(e: &Entry) -> Option<(Sha256Digest, &Bytes)> {
    match &e.payload {
        EntryPayload::Normal(Command {
            op: Op::PutChunk { hash, data, .. },
            ..
        }) => Some((*hash, data)),
        _ => None,
    }
}

/// Encodes `e` as a record; `by_name` leaves a chunk entry's payload out (the caller has
/// made its chunk file durable).
pub(super) fn encode(e: &Entry, by_name: bool) -> Result<Vec<u8>, CodecError> {
    if !by_name {
        return crate::codec::encode(e);
    }
    let mut light = e.clone();
    let len = match &mut light.payload {
        EntryPayload::Normal(Command {
            op: Op::PutChunk { data, .. },
            ..
        }) => std::mem::take(data).len(),
        _ => return crate::codec::encode(e),
    };
    let len = u32::try_from(len).map_err(|_| CodecError::TooLarge(len))?;
    let mut out = Vec::with_capacity(64);
    out.push(CHUNK_BY_NAME);
    out.extend_from_slice(&len.to_le_bytes());
    postcard::to_io(&light, &mut out)?;
    Ok(out)
}

/// The memory record `buf` stands for once read back: its own length, plus the payload
/// of a chunk stored by name.
pub(super) fn held_bytes(buf: &[u8]) -> usize {
    let named = match (buf.first(), buf.get(1..5)) {
        (Some(&CHUNK_BY_NAME), Some(len)) => len
            .try_into()
            .map_or(0, |b: [u8; 4]| u32::from_le_bytes(b) as usize),
        _ => 0,
    };
    buf.len().saturating_add(named)
}

/// A decoded record. For a chunk entry stored by name, `entry`'s payload is empty and
/// `by_name` tells which file holds it.
pub(super) struct Stored {
    pub entry: Entry,
    pub by_name: Option<(Sha256Digest, u32)>,
}

/// Decodes a record without reading any chunk file.
pub(super) fn decode(buf: &[u8]) -> Result<Stored, CodecError> {
    match buf.first() {
        Some(&CHUNK_BY_NAME) => {
            let len_bytes: [u8; 4] = buf
                .get(1..5)
                .and_then(|b| b.try_into().ok())
                .ok_or(CodecError::Empty)?;
            let entry: Entry = postcard::from_bytes(&buf[5..])?;
            let hash = chunk_of(&entry)
                .map(|(h, _)| h)
                .ok_or(CodecError::NotAChunk)?;
            Ok(Stored {
                entry,
                by_name: Some((hash, u32::from_le_bytes(len_bytes))),
            })
        }
        Some(&INLINE) | None => Ok(Stored {
            entry: crate::codec::decode(buf)?,
            by_name: None,
        }),
        Some(&v) => Err(CodecError::RecordVersion(v)),
    }
}

/// Puts `data` back as the payload of a chunk entry decoded by [`decode`].
pub(super) fn fill(entry: &mut Entry, bytes: Bytes) {
    if let EntryPayload::Normal(Command {
        op: Op::PutChunk { data, .. },
        ..
    }) = &mut entry.payload
    {
        *data = bytes;
    }
}

/// Checks only a record's version byte (for read-only start-up checks).
pub(super) fn check_version(buf: &[u8]) -> Result<(), CodecError> {
    match buf.first() {
        Some(&CHUNK_BY_NAME) => Ok(()),
        Some(&INLINE) | None => crate::codec::check_version(buf),
        Some(&v) => Err(CodecError::RecordVersion(v)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn chunk_entry(index: u64, data: &'static [u8]) -> Entry {
        Entry {
            log_id: openraft::testing::log_id::<crate::TypeConfig>(3, 1, index),
            payload: EntryPayload::Normal(Command {
                request_id: None,
                time_ms: 7,
                op: Op::PutChunk {
                    upload_id: 9,
                    hash: [5; 32],
                    data: Bytes::from_static(data),
                },
            }),
        }
    }

    #[test]
    fn a_chunk_stored_by_name_keeps_everything_but_its_bytes() {
        let e = chunk_entry(4, b"hello chunk");
        let whole = encode(&e, false).unwrap();
        assert_eq!(whole[0], INLINE);
        let back = decode(&whole).unwrap();
        assert!(back.by_name.is_none());
        assert_eq!(back.entry, e);

        let light = encode(&e, true).unwrap();
        assert_eq!(light[0], CHUNK_BY_NAME);
        assert!(light.len() < whole.len());
        check_version(&light).unwrap();
        assert_eq!(held_bytes(&light), light.len() + 11);
        assert_eq!(held_bytes(&whole), whole.len());
        let mut back = decode(&light).unwrap();
        assert_eq!(back.by_name, Some(([5; 32], 11)));
        assert_ne!(back.entry, e);
        fill(&mut back.entry, Bytes::from_static(b"hello chunk"));
        assert_eq!(back.entry, e);

        // Other entries are stored whole either way; unknown versions are refused.
        let blank = Entry {
            log_id: e.log_id,
            payload: EntryPayload::Blank,
        };
        assert_eq!(
            encode(&blank, true).unwrap(),
            encode(&blank, false).unwrap()
        );
        let mut newer = light.clone();
        newer[0] = 7;
        assert!(matches!(
            check_version(&newer),
            Err(CodecError::RecordVersion(7))
        ));
        assert!(matches!(decode(&newer), Err(CodecError::RecordVersion(7))));
    }
}
