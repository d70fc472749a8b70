//! The read-only start-up check of a data directory's formats.
//!
//! Every persisted structure carries a format version: the identity (`format`), the
//! peers record (`format`), the raft
//! meta file's slots and payload encoding, each log segment header and the encoding of
//! its entries, the state and chunk directories' `FORMAT` files, and each snapshot's
//! `state.bin` header. [`check_formats`] reads all of them before the node writes
//! anything (opening the log may cut a torn tail, sled writes when it opens, the chunk
//! store cleans its temp files), so a binary that does not understand a directory
//! refuses it with a one-line message naming the version and leaves it byte-for-byte
//! untouched. Damage that is not a version problem is left for the stores' own `open`,
//! which diagnoses it in detail.

use std::path::Path;

use trove_raft::{LogStore, StateMachine};
use trove_storage::chunks::ChunkStore;
use trove_storage::state::StateStore;

use crate::error::ServerError;
use crate::identity;

/// Checks, without modifying anything, that this binary understands every format in
/// the data directory `dir` (which may not exist yet).
pub fn check_formats(dir: &Path) -> Result<(), ServerError> {
    if !dir.exists() {
        return Ok(());
    }
    identity::load(dir)?;
    crate::recovery::check_format(dir)?;
    LogStore::check_formats(&dir.join("raft")).map_err(ServerError::from_storage)?;
    ChunkStore::check_format(&dir.join("chunks")).map_err(ServerError::from_storage)?;
    StateStore::check_format(&dir.join("state")).map_err(ServerError::from_storage)?;
    StateMachine::check_formats(&dir.join("snapshots")).map_err(ServerError::from_storage)?;
    Ok(())
}
