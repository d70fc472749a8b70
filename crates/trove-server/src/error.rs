//! Errors that stop a node from starting or running.

/// Why a node could not start or had to stop. Displayed as one line.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory cannot be used (wrong node, foreign files, unreadable).
    #[error("unusable data directory {dir}: {reason}")]
    DataDir { dir: String, reason: String },
    /// The data directory's format is not understood by this binary.
    #[error("{0}")]
    Format(String),
    /// A listen address is taken or invalid.
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    /// The configuration is inconsistent.
    #[error("bad configuration: {0}")]
    Config(String),
    /// Joining an existing cluster failed.
    #[error("cannot join the cluster: {0}")]
    Join(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(String),
    /// Raft failed fatally.
    #[error("raft: {0}")]
    Raft(String),
}

impl ServerError {
    /// Classifies an error from opening storage: format problems get their own variant.
    pub fn from_storage(e: impl std::fmt::Display) -> ServerError {
        let s = e.to_string();
        if s.contains("format version") || s.contains("unsupported encoding version") {
            ServerError::Format(s)
        } else {
            ServerError::Storage(s)
        }
    }
}
