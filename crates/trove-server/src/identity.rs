//! The identity of a data directory: which cluster and which node it belongs to, and
//! the incarnation created with it. Stored in a checksummed meta file and checked at
//! every start, so a data directory is never used as another node's.

use std::path::Path;

use serde::{Deserialize, Serialize};
use trove_storage::StorageError;
use trove_storage::meta::MetaFile;

use crate::error::ServerError;

/// Version of the identity record this binary writes and understands.
pub const IDENTITY_FORMAT: u32 = 1;

/// Contents of `<data>/identity`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Format version of the data directory layout.
    pub format: u32,
    /// Cluster this directory belongs to.
    pub cluster_id: String,
    /// Node id this directory belongs to.
    pub node_id: u64,
    /// Random id created with the directory; a wiped and recreated directory gets a
    /// new one.
    pub incarnation: String,
    /// Founding members, if this node founded the cluster (used to finish an
    /// interrupted bootstrap).
    pub initial_cluster: Vec<(u64, String)>,
}

/// The one field every identity format version has.
#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

fn dir_err(dir: &Path, reason: impl Into<String>) -> ServerError {
    ServerError::DataDir {
        dir: dir.display().to_string(),
        reason: reason.into(),
    }
}

/// Reads the identity of `dir`, if it has one. A directory that holds files but no
/// identity is refused (it is not ours, or it is damaged).
pub fn load(dir: &Path) -> Result<Option<Identity>, ServerError> {
    let path = dir.join("identity");
    if !path.exists() {
        if dir.exists() {
            let foreign = std::fs::read_dir(dir)
                .map_err(|e| dir_err(dir, e.to_string()))?
                .filter_map(|e| e.ok())
                .any(|e| e.file_name() != "lost+found");
            if foreign {
                return Err(dir_err(
                    dir,
                    "it holds files but no Trove identity file; use an empty directory",
                ));
            }
        }
        return Ok(None);
    }
    // Read-only: a directory this binary refuses must be left byte-for-byte untouched.
    let payload = MetaFile::read(&path).map_err(|e| match e {
        StorageError::UnsupportedVersion { .. } => ServerError::Format(e.to_string()),
        other => dir_err(dir, format!("identity file: {other}")),
    })?;
    let Some(payload) = payload else {
        // The identity is the first thing written into a new directory: an empty one
        // means its creation was interrupted before anything else existed.
        return Ok(None);
    };
    // The version first: a newer identity may not decode as this binary's `Identity`.
    let versioned: FormatOnly = serde_json::from_slice(&payload)
        .map_err(|e| dir_err(dir, format!("identity file undecodable: {e}")))?;
    if versioned.format != IDENTITY_FORMAT {
        return Err(ServerError::Format(format!(
            "data directory {} has format version {}; this binary understands version {IDENTITY_FORMAT}. Run a matching trove release; the directory was left untouched",
            dir.display(),
            versioned.format
        )));
    }
    let id: Identity = serde_json::from_slice(&payload)
        .map_err(|e| dir_err(dir, format!("identity file undecodable: {e}")))?;
    Ok(Some(id))
}

/// Makes the identity file, its name and the directory's own name durable. The node is
/// about to act as this identity (vote, acknowledge writes), so it must not vanish in a
/// power cut: a volume restored by copying files may still be only in the page cache
/// (seen in the chaos test's roll-back fault: the identity came back from a power cut
/// as a 0-byte file and the node could not start).
pub fn make_durable(dir: &Path) -> Result<(), ServerError> {
    use trove_storage::fsutil::{parent_dir, sync_dir};
    std::fs::File::open(dir.join("identity"))
        .and_then(|f| f.sync_all())
        .map_err(|e| dir_err(dir, format!("identity file: {e}")))?;
    // The identity's name in the directory, then the directory's name in its parent
    // (`.` for a bare relative path).
    std::iter::once(dir)
        .chain(parent_dir(dir))
        .try_for_each(sync_dir)
        .map_err(|e| dir_err(dir, e.to_string()))
}

/// Creates the directory and writes its identity durably.
pub fn create(dir: &Path, id: &Identity) -> Result<(), ServerError> {
    trove_storage::fsutil::create_dir_durable(dir).map_err(|e| dir_err(dir, e.to_string()))?;
    let payload = serde_json::to_vec(id).map_err(|e| dir_err(dir, e.to_string()))?;
    let (mut f, _) =
        MetaFile::open(&dir.join("identity")).map_err(|e| dir_err(dir, e.to_string()))?;
    f.write(&payload, true)
        .map_err(|e| dir_err(dir, e.to_string()))?;
    Ok(())
}
