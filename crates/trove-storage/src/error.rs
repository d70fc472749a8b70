//! Errors of the storage layer.

use std::path::PathBuf;

/// Errors of the storage layer. None of them is retryable by the caller: an IO error on
/// a durability path means the node must stop and recover (never retry an fsync).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An IO operation failed.
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes failed verification (checksum, magic, length, hash).
    #[error("corrupt data in {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    /// The data was written by a format version this binary does not understand.
    #[error(
        "{path} has format version {found}; this binary understands version {supported}. Use a matching trove release; the directory was left untouched"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// A requested item does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A chunk the state refers to has no file in the chunk store (it can be fetched
    /// again from a peer).
    #[error("chunk {} is missing from the chunk store", hex::encode(.0))]
    MissingChunk(trove_types::Sha256Digest),
    /// Bytes do not match the hash they were stored under.
    #[error("checksum mismatch: {0}")]
    ChecksumMismatch(String),
    /// The sled database reported an error.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// Encoding or decoding a stored value failed.
    #[error("codec: {0}")]
    Codec(String),
    /// The caller broke an API contract (e.g. a gap in log indexes). A bug.
    #[error("invalid use: {0}")]
    Invalid(String),
}

impl StorageError {
    /// Wraps an IO error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }

    /// A corrupt-data error.
    pub fn corrupt(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        StorageError::Corrupt {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

/// What an operator should know when a write failed because the disk is full.
pub const DISK_FULL_HINT: &str = "the disk is full: free space on this filesystem. \
The node stops rather than acknowledge what it cannot store; restarted, it waits until \
enough space is free, then catches up from its peers";

/// Whether `kind` means that the filesystem has no space (ENOSPC) or quota (EDQUOT) left.
pub fn is_disk_full(kind: std::io::ErrorKind) -> bool {
    matches!(
        kind,
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Keeps the kind and names the path; a full disk gets a hint a person can act on.
fn io_error_at(path: &std::path::Path, source: &std::io::Error) -> std::io::Error {
    let msg = if is_disk_full(source.kind()) {
        format!("{}: {source}: {DISK_FULL_HINT}", path.display())
    } else {
        format!("{}: {source}", path.display())
    };
    std::io::Error::new(source.kind(), msg)
}

impl From<StorageError> for std::io::Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Io { path, source } => io_error_at(&path, &source),
            StorageError::Sled(sled::Error::Io(source)) => {
                io_error_at(std::path::Path::new("sled state"), &source)
            }
            other => std::io::Error::other(other.to_string()),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_names_the_file_and_says_what_to_do() {
        let e = StorageError::io(
            "/data/raft/log/seg-1.log",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        let io: std::io::Error = e.into();
        assert_eq!(io.kind(), std::io::ErrorKind::StorageFull);
        let msg = io.to_string();
        assert!(msg.starts_with("/data/raft/log/seg-1.log: "), "{msg}");
        assert!(msg.contains("free space on this filesystem"), "{msg}");
    }

    #[test]
    fn other_io_errors_keep_their_kind_and_path() {
        let e = StorageError::io(
            "/data/x",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        let io: std::io::Error = e.into();
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert!(io.to_string().starts_with("/data/x: "));
        assert!(!io.to_string().contains("disk is full"));
    }
}
