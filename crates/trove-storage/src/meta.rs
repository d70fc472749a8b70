//! The meta file: a tiny, durable, checksummed home for state that must survive crashes
//! and must never go backwards, such as the Raft vote, the committed index and the node's
//! identity. The caller encodes its state into an opaque payload.
//!
//! # On-disk format, version 1
//! A file of exactly two 4096-byte slots. Each write goes to one slot, so a torn write
//! damages at most that slot while the other still holds the previous state. A slot is
//! (little-endian):
//! `magic b"TRVMETA\0"` (8) | `format version u32` (4) | `seq u64` (8) | `len u32` (4) |
//! `payload` (len ≤ [`MAX_META_PAYLOAD`]) | `CRC32C of everything before it` (4) | zero padding.
//!
//! The valid slot with the highest `seq` is the current state. An all-zero slot is empty
//! (the file is created all-zero, atomically). A slot with the magic and an unknown
//! version is refused, file untouched. A file with no valid slot that is not entirely
//! zero is `Corrupt`: we never silently reinitialise, because forgetting a vote or an
//! identity can elect a leader that lacks committed data.
//!
//! # Which slot a write replaces
//! A write replaces the slot *not* holding the newest copy known to be durable (synced).
//! Normally that is the slot not holding the newest copy, alternating. After an unsynced
//! write, the next write replaces that same unsynced slot instead, so a crash during it can
//! never take the last durable copy with it (alternating blindly would overwrite the last
//! synced state while its successor may not have reached the disk yet).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};
use crate::fsutil::write_file_atomic;

/// Largest payload a slot holds.
pub const MAX_META_PAYLOAD: usize = 4000;
/// Magic bytes at the start of every written slot.
pub const META_MAGIC: [u8; 8] = *b"TRVMETA\0";
/// The slot format version this binary writes and reads.
pub const META_FORMAT_VERSION: u32 = 1;
/// Size of one slot.
pub const META_SLOT_BYTES: usize = 4096;

const SLOT_HEADER_BYTES: usize = 24;
const FILE_BYTES: usize = 2 * META_SLOT_BYTES;
const _: () = assert!(SLOT_HEADER_BYTES + MAX_META_PAYLOAD + 4 <= META_SLOT_BYTES);

/// A slot and the sequence number of the copy in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Copy {
    slot: usize,
    seq: u64,
}

/// The two-slot meta file. See the module documentation.
#[derive(Debug)]
pub struct MetaFile {
    path: PathBuf,
    file: File,
    /// The newest copy written (synced or not).
    newest: Option<Copy>,
    /// The newest copy known to be on disk.
    durable: Option<Copy>,
    /// Set after a failed write or fsync: a failed fsync must not be retried.
    failed: bool,
}

enum Slot {
    Empty,
    Valid { seq: u64, payload: Vec<u8> },
    Invalid(String),
}

impl MetaFile {
    /// Opens or creates `path` and returns the payload of the newest valid slot (`None` if
    /// the file is new or was never written).
    pub fn open(path: &Path) -> Result<(MetaFile, Option<Vec<u8>>)> {
        let io = |e| StorageError::io(path, e);
        let existing = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => Some(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        let Some(file) = existing else {
            // Atomic creation (temp file, fsync, rename, directory fsync): the file is
            // either absent or complete and all-zero, never half-created.
            write_file_atomic(path, &[0u8; FILE_BYTES])?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(io)?;
            let meta = MetaFile {
                path: path.to_path_buf(),
                file,
                newest: None,
                durable: None,
                failed: false,
            };
            return Ok((meta, None));
        };

        let len = file.metadata().map_err(io)?.len();
        if len != FILE_BYTES as u64 {
            return Err(StorageError::corrupt(
                path,
                format!("meta file is {len} bytes, expected {FILE_BYTES}"),
            ));
        }
        let mut bytes = vec![0u8; FILE_BYTES];
        file.read_exact_at(&mut bytes, 0).map_err(io)?;
        let Some((copy, payload, problems)) = newest_slot(path, &bytes)? else {
            // All zero: created but never written.
            let meta = MetaFile {
                path: path.to_path_buf(),
                file,
                newest: None,
                durable: None,
                failed: false,
            };
            return Ok((meta, None));
        };
        for problem in &problems {
            // Normal after a crash during an unsynced or in-flight write.
            tracing::warn!(path = %path.display(), %problem, "ignoring invalid meta slot");
        }
        // What we read may be an unsynced write still in the page cache from a process that
        // crashed; make it durable before anyone acts on it.
        file.sync_data().map_err(io)?;
        let meta = MetaFile {
            path: path.to_path_buf(),
            file,
            newest: Some(copy),
            durable: Some(copy),
            failed: false,
        };
        Ok((meta, Some(payload)))
    }

    /// Reads the newest payload of an existing meta file without modifying anything
    /// (no creation, no sync): for start-up checks that must leave a directory a binary
    /// does not understand untouched. Same checks and errors as [`MetaFile::open`].
    pub fn read(path: &Path) -> Result<Option<Vec<u8>>> {
        let io = |e| StorageError::io(path, e);
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len != FILE_BYTES as u64 {
            return Err(StorageError::corrupt(
                path,
                format!("meta file is {len} bytes, expected {FILE_BYTES}"),
            ));
        }
        let mut bytes = vec![0u8; FILE_BYTES];
        file.read_exact_at(&mut bytes, 0).map_err(io)?;
        Ok(newest_slot(path, &bytes)?.map(|(_, payload, _)| payload))
    }

    /// Writes `payload` (at most [`MAX_META_PAYLOAD`] bytes) as the new newest copy; if
    /// `sync`, it is on disk (fdatasync) when this returns. An unsynced write may be lost on
    /// power failure, in which case the previous durable copy is what `open` returns.
    pub fn write(&mut self, payload: &[u8], sync: bool) -> Result<()> {
        if self.failed {
            return Err(StorageError::io(
                &self.path,
                std::io::Error::other(
                    "the meta file is unusable after an earlier write or fsync failure; restart to recover",
                ),
            ));
        }
        if payload.len() > MAX_META_PAYLOAD {
            return Err(StorageError::Invalid(format!(
                "meta payload of {} bytes exceeds the limit of {MAX_META_PAYLOAD}",
                payload.len()
            )));
        }
        let slot = match (self.durable, self.newest) {
            (Some(durable), _) => 1 - durable.slot,
            (None, Some(newest)) => 1 - newest.slot,
            (None, None) => 0,
        };
        let seq = self.newest.map_or(1, |n| n.seq + 1);
        let bytes = encode_slot(seq, payload);
        let written = self
            .file
            .write_all_at(&bytes, (slot * META_SLOT_BYTES) as u64)
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            self.failed = true;
            return Err(StorageError::io(&self.path, e));
        }
        self.newest = Some(Copy { slot, seq });
        if sync {
            self.durable = self.newest;
        }
        Ok(())
    }
}

/// The newest valid slot of a whole file's bytes and the problems of the other slot;
/// `None` if both slots are empty. Both slots' versions are checked before anything is
/// chosen; a file with no valid slot that is not all zero is `Corrupt`.
/// The newest valid copy, its payload, and the problems found in the other slot.
type Newest = (Copy, Vec<u8>, Vec<String>);

fn newest_slot(path: &Path, bytes: &[u8]) -> Result<Option<Newest>> {
    let slots = [
        parse_slot(path, &bytes[..META_SLOT_BYTES])?,
        parse_slot(path, &bytes[META_SLOT_BYTES..])?,
    ];
    let mut newest: Option<(Copy, Vec<u8>)> = None;
    let mut problems = Vec::new();
    for (slot, parsed) in slots.into_iter().enumerate() {
        match parsed {
            Slot::Empty => {}
            Slot::Invalid(why) => problems.push(format!("slot {slot}: {why}")),
            Slot::Valid { seq, payload } => match &newest {
                Some((other, _)) if other.seq == seq => {
                    return Err(StorageError::corrupt(
                        path,
                        format!("both slots hold sequence number {seq}"),
                    ));
                }
                Some((other, _)) if other.seq > seq => {}
                _ => newest = Some((Copy { slot, seq }, payload)),
            },
        }
    }
    match newest {
        Some((copy, payload)) => Ok(Some((copy, payload, problems))),
        None if problems.is_empty() => Ok(None),
        None => Err(StorageError::corrupt(
            path,
            format!("no valid slot: {}", problems.join("; ")),
        )),
    }
}

/// One full slot, zero padded.
fn encode_slot(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut s = vec![0u8; META_SLOT_BYTES];
    s[0..8].copy_from_slice(&META_MAGIC);
    s[8..12].copy_from_slice(&META_FORMAT_VERSION.to_le_bytes());
    s[12..20].copy_from_slice(&seq.to_le_bytes());
    s[20..24].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let end = SLOT_HEADER_BYTES + payload.len();
    s[SLOT_HEADER_BYTES..end].copy_from_slice(payload);
    let crc = crc32c::crc32c(&s[..end]);
    s[end..end + 4].copy_from_slice(&crc.to_le_bytes());
    s
}

fn parse_slot(path: &Path, s: &[u8]) -> Result<Slot> {
    if s.iter().all(|b| *b == 0) {
        return Ok(Slot::Empty);
    }
    if s[..8] != META_MAGIC {
        return Ok(Slot::Invalid("bad magic".into()));
    }
    // Checked before the CRC: a future version may lay out (and checksum) slots differently.
    let version = le_u32(&s[8..12]);
    if version != META_FORMAT_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: META_FORMAT_VERSION,
        });
    }
    let len = le_u32(&s[20..24]) as usize;
    if len > MAX_META_PAYLOAD {
        return Ok(Slot::Invalid(format!(
            "payload length {len} beyond the limit"
        )));
    }
    let end = SLOT_HEADER_BYTES + len;
    if crc32c::crc32c(&s[..end]) != le_u32(&s[end..end + 4]) {
        return Ok(Slot::Invalid("checksum mismatch".into()));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&s[12..20]);
    Ok(Slot::Valid {
        seq: u64::from_le_bytes(seq),
        payload: s[SLOT_HEADER_BYTES..end].to_vec(),
    })
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fs;

    use super::*;

    /// The sequence number in each slot (None if empty), read from the raw file.
    fn raw_seqs(path: &Path) -> [Option<u64>; 2] {
        let bytes = fs::read(path).unwrap();
        [0, 1].map(|slot| {
            let s = &bytes[slot * META_SLOT_BYTES..(slot + 1) * META_SLOT_BYTES];
            (s[..8] == META_MAGIC).then(|| {
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&s[12..20]);
                u64::from_le_bytes(seq)
            })
        })
    }

    fn damage_slot(path: &Path, slot: usize) {
        let mut bytes = fs::read(path).unwrap();
        bytes[slot * META_SLOT_BYTES + SLOT_HEADER_BYTES + 1] ^= 0xff;
        fs::write(path, bytes).unwrap();
    }

    fn reopen(path: &Path) -> Option<Vec<u8>> {
        MetaFile::open(path).unwrap().1
    }

    fn assert_corrupt(path: &Path) {
        match MetaFile::open(path) {
            Err(StorageError::Corrupt { .. }) => {}
            Err(other) => panic!("expected Corrupt, got {other}"),
            Ok((_, payload)) => panic!("expected Corrupt, opened with {payload:?}"),
        }
    }

    #[test]
    fn fresh_file_then_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        let (mut meta, payload) = MetaFile::open(&path).unwrap();
        assert_eq!(payload, None);
        assert_eq!(fs::read(&path).unwrap(), vec![0u8; FILE_BYTES]);
        drop(meta);
        let (m, payload) = MetaFile::open(&path).unwrap();
        assert_eq!(payload, None);
        meta = m;
        meta.write(b"vote=3", true).unwrap();
        meta.write(b"", true).unwrap();
        meta.write(&[7u8; MAX_META_PAYLOAD], true).unwrap();
        assert_eq!(reopen(&path), Some(vec![7u8; MAX_META_PAYLOAD]));
        assert!(matches!(
            meta.write(&[0u8; MAX_META_PAYLOAD + 1], true),
            Err(StorageError::Invalid(_))
        ));
    }

    #[test]
    fn synced_writes_alternate_slots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        let (mut meta, _) = MetaFile::open(&path).unwrap();
        meta.write(b"one", true).unwrap();
        assert_eq!(raw_seqs(&path), [Some(1), None]);
        meta.write(b"two", true).unwrap();
        assert_eq!(raw_seqs(&path), [Some(1), Some(2)]);
        meta.write(b"three", true).unwrap();
        assert_eq!(raw_seqs(&path), [Some(3), Some(2)]);
        drop(meta);
        // Reopening continues from the newest copy.
        let (mut meta, payload) = MetaFile::open(&path).unwrap();
        assert_eq!(payload.as_deref(), Some(&b"three"[..]));
        meta.write(b"four", true).unwrap();
        assert_eq!(raw_seqs(&path), [Some(3), Some(4)]);
        assert_eq!(reopen(&path).as_deref(), Some(&b"four"[..]));
    }

    #[test]
    fn unsynced_writes_never_replace_the_last_synced_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        let (mut meta, _) = MetaFile::open(&path).unwrap();
        meta.write(b"durable", true).unwrap();
        meta.write(b"maybe 1", false).unwrap();
        meta.write(b"maybe 2", false).unwrap();
        assert_eq!(raw_seqs(&path), [Some(1), Some(3)]);
        meta.write(b"synced again", true).unwrap();
        assert_eq!(raw_seqs(&path), [Some(1), Some(4)]);
        meta.write(b"next", true).unwrap();
        assert_eq!(raw_seqs(&path), [Some(5), Some(4)]);
        assert_eq!(reopen(&path).as_deref(), Some(&b"next"[..]));
    }

    #[test]
    fn torn_newest_slot_falls_back_to_the_older() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        let (mut meta, _) = MetaFile::open(&path).unwrap();
        meta.write(b"old", true).unwrap();
        meta.write(b"new", true).unwrap();
        drop(meta);
        damage_slot(&path, 1);
        let (mut meta, payload) = MetaFile::open(&path).unwrap();
        assert_eq!(payload.as_deref(), Some(&b"old"[..]));
        // The next write replaces the damaged slot, keeping the good one.
        meta.write(b"newer", true).unwrap();
        assert_eq!(raw_seqs(&path), [Some(1), Some(2)]);
        assert_eq!(reopen(&path).as_deref(), Some(&b"newer"[..]));
    }

    #[test]
    fn no_valid_slot_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        let (mut meta, _) = MetaFile::open(&path).unwrap();
        meta.write(b"a", true).unwrap();
        meta.write(b"b", true).unwrap();
        drop(meta);
        damage_slot(&path, 0);
        damage_slot(&path, 1);
        assert_corrupt(&path);
        // One damaged slot and one empty one: the only write may have been acknowledged.
        let single = dir.path().join("single");
        MetaFile::open(&single)
            .unwrap()
            .0
            .write(b"a", true)
            .unwrap();
        damage_slot(&single, 0);
        assert_corrupt(&single);
        // Garbage and a wrong size are refused too.
        fs::write(&single, vec![0xa5u8; FILE_BYTES]).unwrap();
        assert_corrupt(&single);
        fs::write(&single, vec![0u8; 100]).unwrap();
        assert_corrupt(&single);
    }

    #[test]
    fn unknown_version_is_refused_and_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        let (mut meta, _) = MetaFile::open(&path).unwrap();
        meta.write(b"a", true).unwrap();
        meta.write(b"b", true).unwrap();
        drop(meta);
        let mut bytes = fs::read(&path).unwrap();
        bytes[META_SLOT_BYTES + 8..META_SLOT_BYTES + 12].copy_from_slice(&9u32.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        match MetaFile::open(&path) {
            Err(StorageError::UnsupportedVersion {
                found: 9,
                supported: 1,
                ..
            }) => {}
            Err(other) => panic!("expected UnsupportedVersion, got {other}"),
            Ok(_) => panic!("an unknown version was opened"),
        }
        assert!(matches!(
            MetaFile::read(&path),
            Err(StorageError::UnsupportedVersion { found: 9, .. })
        ));
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn read_only_reader_agrees_with_open_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        assert!(matches!(
            MetaFile::read(&path),
            Err(StorageError::Io { .. })
        ));
        assert!(!path.exists(), "read must not create the file");
        let (mut meta, _) = MetaFile::open(&path).unwrap();
        assert_eq!(MetaFile::read(&path).unwrap(), None);
        meta.write(b"one", true).unwrap();
        meta.write(b"two", true).unwrap();
        drop(meta);
        damage_slot(&path, 1);
        let before = fs::read(&path).unwrap();
        assert_eq!(MetaFile::read(&path).unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(fs::read(&path).unwrap(), before);
        damage_slot(&path, 0);
        assert!(matches!(
            MetaFile::read(&path),
            Err(StorageError::Corrupt { .. })
        ));
    }

    #[test]
    fn frozen_version_1_bytes_still_read() {
        // Guards the format: if this breaks, the on-disk layout changed.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        let mut bytes = vec![0u8; FILE_BYTES];
        let slot: &[u8] = b"TRVMETA\0\x01\0\0\0\x2a\0\0\0\0\0\0\0\x02\0\0\0hi";
        bytes[META_SLOT_BYTES..META_SLOT_BYTES + slot.len()].copy_from_slice(slot);
        let crc = crc32c::crc32c(slot).to_le_bytes();
        bytes[META_SLOT_BYTES + slot.len()..META_SLOT_BYTES + slot.len() + 4].copy_from_slice(&crc);
        assert_eq!(
            &bytes[META_SLOT_BYTES..][..META_SLOT_BYTES],
            &encode_slot(42, b"hi")[..]
        );
        fs::write(&path, &bytes).unwrap();
        let (mut meta, payload) = MetaFile::open(&path).unwrap();
        assert_eq!(payload.as_deref(), Some(&b"hi"[..]));
        meta.write(b"x", true).unwrap();
        assert_eq!(raw_seqs(&path), [Some(43), Some(42)]);
    }
}
