//! The backup stream and backup file format (specified on `BackupMessage` in
//! `proto/trove/v1/trove.proto`): the file framing, and [`BackupChecker`], which
//! validates a stream message by message (order, names, sizes, per-file CRC32C, each
//! chunk's SHA-256, counts, and the SHA-256 over the whole stream) with bounded memory.
//!
//! Shared by the SDK (checking a backup as it is saved), and by the offline verify and
//! restore (checking it as it is read back from a file).

// The crate allows clippy's lints for the generated code; this module is hand-written.
#![warn(clippy::all)]

use std::io::{ErrorKind, Read};

use prost::Message;
use trove_types::Sha256;
use trove_types::limits::{BACKUP_PIECE_BYTES, MAX_BACKUP_RECORD_BYTES, MAX_CLIENT_MESSAGE_BYTES};

use crate::v1::backup_message::Part;
use crate::v1::{BackupHeader, BackupMessage, BackupTrailer};

/// The first 8 bytes of a backup file.
pub const FILE_MAGIC: &[u8; 8] = b"TROVBKUP";
/// The only stream and file format version this binary writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the state file, always the first file of a backup.
pub const STATE_FILE: &str = "state.bin";
/// Prefix of chunk file names (followed by 64 lowercase hex digits).
pub const CHUNK_PREFIX: &str = "chunks/";

/// Why a backup stream or file was refused.
#[derive(Debug, thiserror::Error)]
pub enum BackupFormatError {
    /// Written in a format version this binary does not understand. Not retryable.
    #[error(
        "backup format version {found}; this binary reads version {supported} (use a matching trove release)"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    /// Not a backup, or damaged: a checksum, length, name, order or count is wrong.
    /// Not retryable (the bytes are bad).
    #[error("corrupt backup: {0}")]
    Corrupt(String),
    /// The stream or file ends before its trailer. Retryable for a stream.
    #[error("the backup is incomplete: {0}")]
    Truncated(String),
    /// Reading the file failed.
    #[error("reading the backup: {0}")]
    Io(#[from] std::io::Error),
}

type Result<T, E = BackupFormatError> = std::result::Result<T, E>;

fn corrupt(msg: impl Into<String>) -> BackupFormatError {
    BackupFormatError::Corrupt(msg.into())
}

/// A message as stored in a backup file: 4-byte big-endian length, then the encoding.
pub fn encode_record(msg: &BackupMessage) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = Vec::with_capacity(4 + body.len());
    // Messages are built from pieces of at most BACKUP_PIECE_BYTES: far below u32::MAX.
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads and checks the file magic.
pub fn read_magic(r: &mut impl Read) -> Result<()> {
    let mut magic = [0u8; 8];
    match r.read_exact(&mut magic) {
        Ok(()) if &magic == FILE_MAGIC => Ok(()),
        Ok(()) => Err(corrupt("not a Trove backup file (bad magic)")),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
            Err(corrupt("not a Trove backup file (shorter than its magic)"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads the next record of a backup file: the message and its record bytes (length
/// prefix included, as hashed). `None` at a clean end of file. A length over
/// [`MAX_BACKUP_RECORD_BYTES`] is refused before anything is allocated.
pub fn read_record(r: &mut impl Read) -> Result<Option<(BackupMessage, Vec<u8>)>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(BackupFormatError::Truncated(
                    "a record length is cut".into(),
                ));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_BACKUP_RECORD_BYTES {
        return Err(corrupt(format!(
            "a record claims {n} bytes (the limit is {MAX_BACKUP_RECORD_BYTES})"
        )));
    }
    let mut record = vec![0u8; 4 + n];
    record[..4].copy_from_slice(&len);
    r.read_exact(&mut record[4..]).map_err(|e| {
        if e.kind() == ErrorKind::UnexpectedEof {
            BackupFormatError::Truncated("the last record is cut".into())
        } else {
            e.into()
        }
    })?;
    let msg = BackupMessage::decode(&record[4..])
        .map_err(|e| corrupt(format!("undecodable record: {e}")))?;
    Ok(Some((msg, record)))
}

/// The 32-byte hash named by a chunk file name, if it is one.
pub fn chunk_hash(name: &str) -> Option<[u8; 32]> {
    let hex_part = name.strip_prefix(CHUNK_PREFIX)?;
    if hex_part.len() != 64 || hex_part.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

/// The file currently being received.
struct OpenFile {
    name: String,
    size: u64,
    received: u64,
    crc: u32,
    /// For a chunk: its expected SHA-256 and the hash of the bytes so far.
    chunk: Option<([u8; 32], Sha256)>,
}

/// What a complete, valid backup holds.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupSummary {
    pub header: BackupHeader,
    pub trailer: BackupTrailer,
}

/// Validates a backup stream one message at a time. Memory is bounded: it keeps one
/// file's running checksums, never its bytes.
#[derive(Default)]
pub struct BackupChecker {
    hasher: Sha256,
    header: Option<BackupHeader>,
    file: Option<OpenFile>,
    last_name: Option<String>,
    files: u64,
    bytes: u64,
    trailer: Option<BackupTrailer>,
}

impl BackupChecker {
    /// A checker expecting a header first.
    pub fn new() -> Self {
        Self::default()
    }

    /// The header, once seen.
    pub fn header(&self) -> Option<&BackupHeader> {
        self.header.as_ref()
    }

    /// Files completed and their bytes so far.
    pub fn progress(&self) -> (u64, u64) {
        let open = self.file.as_ref().map_or(0, |f| f.received);
        (self.files, self.bytes + open)
    }

    /// Checks `msg` against everything before it. `record` is its record bytes as
    /// stored in a file ([`encode_record`] or [`read_record`]); all but the trailer's are
    /// hashed.
    pub fn check(&mut self, msg: &BackupMessage, record: &[u8]) -> Result<()> {
        if self.trailer.is_some() {
            return Err(corrupt("data after the trailer"));
        }
        let Some(part) = &msg.part else {
            return Err(corrupt("a message without content"));
        };
        if !matches!(part, Part::Trailer(_)) {
            self.hasher.update(record);
        }
        match part {
            Part::Header(h) => {
                if self.header.is_some() {
                    return Err(corrupt("a second header"));
                }
                if h.format_version != FORMAT_VERSION {
                    return Err(BackupFormatError::UnsupportedVersion {
                        found: h.format_version,
                        supported: FORMAT_VERSION,
                    });
                }
                self.header = Some(h.clone());
                Ok(())
            }
            _ if self.header.is_none() => Err(corrupt("the backup does not start with a header")),
            Part::File(f) => self.start_file(&f.name, f.size),
            Part::Data(d) => self.data(d),
            Part::FileEnd(e) => self.end_file(e.crc32c),
            Part::Trailer(t) => self.trailer(t),
        }
    }

    fn start_file(&mut self, name: &str, size: u64) -> Result<()> {
        if let Some(f) = &self.file {
            return Err(corrupt(format!("{name} starts before {} ended", f.name)));
        }
        let chunk = match (&self.last_name, name) {
            (None, STATE_FILE) => None,
            (None, _) => {
                return Err(corrupt(format!(
                    "the first file is {name:?}, not {STATE_FILE}"
                )));
            }
            (Some(last), _) => {
                let hash = chunk_hash(name)
                    .ok_or_else(|| corrupt(format!("unexpected file name {name:?}")))?;
                if last != STATE_FILE && name <= last.as_str() {
                    return Err(corrupt(format!("{name} comes after {last} (out of order)")));
                }
                if size > MAX_CLIENT_MESSAGE_BYTES as u64 {
                    return Err(corrupt(format!(
                        "{name}: {size} bytes is larger than any chunk"
                    )));
                }
                Some((hash, Sha256::new()))
            }
        };
        self.file = Some(OpenFile {
            name: name.to_string(),
            size,
            received: 0,
            crc: 0,
            chunk,
        });
        Ok(())
    }

    fn data(&mut self, d: &[u8]) -> Result<()> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| corrupt("data outside a file"))?;
        if d.is_empty() || d.len() > BACKUP_PIECE_BYTES {
            return Err(corrupt(format!("{}: a piece of {} bytes", f.name, d.len())));
        }
        if f.received + d.len() as u64 > f.size {
            return Err(corrupt(format!(
                "{}: more bytes than its size {}",
                f.name, f.size
            )));
        }
        f.received += d.len() as u64;
        f.crc = crc32c::crc32c_append(f.crc, d);
        if let Some((_, h)) = &mut f.chunk {
            h.update(d);
        }
        Ok(())
    }

    fn end_file(&mut self, crc: u32) -> Result<()> {
        let f = self
            .file
            .take()
            .ok_or_else(|| corrupt("a file end outside a file"))?;
        if f.received != f.size {
            return Err(corrupt(format!(
                "{}: {} of {} bytes",
                f.name, f.received, f.size
            )));
        }
        if f.crc != crc {
            return Err(corrupt(format!("{}: CRC32C mismatch", f.name)));
        }
        if let Some((want, h)) = f.chunk {
            let got: [u8; 32] = h.finalize();
            if got != want {
                return Err(corrupt(format!(
                    "{}: the bytes hash to {}",
                    f.name,
                    hex::encode(got)
                )));
            }
        }
        self.files += 1;
        self.bytes += f.size;
        self.last_name = Some(f.name);
        Ok(())
    }

    fn trailer(&mut self, t: &BackupTrailer) -> Result<()> {
        if let Some(f) = &self.file {
            return Err(corrupt(format!("the trailer arrives inside {}", f.name)));
        }
        let h = self
            .header
            .as_ref()
            .ok_or_else(|| corrupt("a trailer without a header"))?;
        let counts = [
            (t.files, self.files, h.files),
            (t.total_bytes, self.bytes, h.total_bytes),
        ];
        if counts.iter().any(|(a, b, c)| a != b || b != c) {
            return Err(corrupt(format!(
                "counts disagree: trailer {} files / {} bytes, received {} / {}, header {} / {}",
                t.files, t.total_bytes, self.files, self.bytes, h.files, h.total_bytes
            )));
        }
        let digest: [u8; 32] = self.hasher.clone().finalize();
        if t.sha256.as_ref() != digest {
            return Err(corrupt(
                "the SHA-256 over the stream does not match its trailer",
            ));
        }
        self.trailer = Some(t.clone());
        Ok(())
    }

    /// The summary of a complete backup; `Truncated` if the trailer never came.
    pub fn finish(&self) -> Result<BackupSummary> {
        match (&self.header, &self.trailer) {
            (Some(header), Some(trailer)) => Ok(BackupSummary {
                header: header.clone(),
                trailer: trailer.clone(),
            }),
            (None, _) => Err(BackupFormatError::Truncated("no header".into())),
            (Some(_), None) => Err(BackupFormatError::Truncated(format!(
                "it ends after {} files without a trailer",
                self.files
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
