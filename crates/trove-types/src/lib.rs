//! Trove's domain vocabulary: record keys, bucket names, the commands replicated through
//! Raft, their results, every limit, and the error type shared by server and client.
//!
//! Nothing here performs IO; everything here is deterministic.

pub mod command;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod sha256;
pub mod validate;

pub use command::{ChunkRef, Command, CommandResult, Op, OpError, OpOk, RequestId, Sha256Digest};
pub use error::{LeaderHint, TroveError};
pub use sha256::Sha256;
