//! The test kit's error type. None of these is retryable: each means the harness itself
//! could not do its job (as opposed to a check failing, which is a verdict in the
//! report, not an error).

use trove_types::TroveError;

/// Errors of the test kit.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A file, socket or process operation of the harness failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The cluster did not reach an expected state in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A node process misbehaved (exited at start-up, could not be signalled).
    #[error("node {id}: {message}")]
    Node { id: u64, message: String },
    /// An SDK call the harness needed failed.
    #[error("{what}: {source}")]
    Client {
        what: String,
        #[source]
        source: TroveError,
    },
    /// The run was configured wrongly (unknown fault kind, zero clients, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl TestkitError {
    /// Wraps an IO error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        TestkitError::Io {
            what: what.into(),
            source,
        }
    }

    /// Wraps an SDK error with what was being done.
    pub fn client(what: impl Into<String>, source: TroveError) -> Self {
        TestkitError::Client {
            what: what.into(),
            source,
        }
    }
}

/// Result of test kit operations.
pub type Result<T> = std::result::Result<T, TestkitError>;
