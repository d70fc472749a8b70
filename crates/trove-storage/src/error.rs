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

impl From<StorageError> for std::io::Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Io { source, .. } => {
                std::io::Error::new(source.kind(), source.to_string())
            }
            other => std::io::Error::other(other.to_string()),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
