//! The error type shared by the server, the SDK and the CLI.
//!
//! Each variant corresponds to one canonical gRPC code; the one mapping to and from
//! `tonic::Status` lives in `trove-proto::status`.

use crate::command::OpError;

/// Where the leader is, when a node that is not the leader knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderHint {
    /// Leader's node id.
    pub id: u64,
    /// Leader's client address (host:port).
    pub client_addr: String,
}

/// Errors of Trove operations.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TroveError {
    /// Bad input (key, value, name, size, range, checksum). Not retryable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The record, bucket or object does not exist. Not retryable.
    #[error("not found: {0}")]
    NotFound(String),
    /// The bucket already exists. Not retryable.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A precondition failed: compare-and-set revision mismatch (with the current
    /// revision) or a non-empty bucket. Not retryable as is.
    #[error("failed precondition: {message}")]
    FailedPrecondition {
        message: String,
        /// Current revision of the record for a compare-and-set mismatch (0 = missing).
        current_revision: Option<u64>,
    },
    /// No leader, no quorum, or the contacted node is not the leader. Retryable.
    #[error("unavailable: {message}")]
    Unavailable {
        message: String,
        leader: Option<LeaderHint>,
    },
    /// The deadline passed; the outcome of a write is unknown. Retry with the same
    /// request id.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// A limit was exceeded. Not retryable as is.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// A stored copy is corrupt and could not be repaired.
    #[error("data loss: {0}")]
    DataLoss(String),
    /// The request was cancelled or cut off.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// A bug or an unexpected failure on the server.
    #[error("internal error: {0}")]
    Internal(String),
}

impl TroveError {
    /// Shorthand for [`TroveError::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        TroveError::InvalidArgument(msg.into())
    }

    /// Shorthand for [`TroveError::Unavailable`] without a leader hint.
    pub fn unavailable(msg: impl Into<String>) -> Self {
        TroveError::Unavailable {
            message: msg.into(),
            leader: None,
        }
    }

    /// Shorthand for [`TroveError::Internal`].
    pub fn internal(msg: impl Into<String>) -> Self {
        TroveError::Internal(msg.into())
    }

    /// Whether retrying the same request (with the same request id) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TroveError::Unavailable { .. } | TroveError::DeadlineExceeded(_)
        )
    }
}

impl From<OpError> for TroveError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::RevisionMismatch { expected, current } => TroveError::FailedPrecondition {
                message: if current == 0 {
                    format!(
                        "revision mismatch: expected {expected}, but the record does not exist (current revision 0)"
                    )
                } else {
                    format!("revision mismatch: expected {expected}, current revision is {current}")
                },
                current_revision: Some(current),
            },
            OpError::NotFound(what) => TroveError::NotFound(what),
            OpError::AlreadyExists(what) => TroveError::AlreadyExists(what),
            OpError::BucketNotEmpty(b) => TroveError::FailedPrecondition {
                message: format!("bucket {b} is not empty; delete its objects first"),
                current_revision: None,
            },
            OpError::BadUpload(m) => TroveError::Unavailable {
                message: format!("upload interrupted ({m}); retry the upload"),
                leader: None,
            },
            OpError::ChecksumMismatch(m) => TroveError::InvalidArgument(m),
        }
    }
}
