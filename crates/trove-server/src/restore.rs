//! Backups offline: verifying a backup file without any cluster, and restoring one into
//! the data directory of a member of a NEW cluster.
//!
//! Both read the file once, front to back, through [`BackupChecker`] (order, sizes,
//! per-file CRC32C, every chunk's SHA-256, counts, the SHA-256 over the stream), write
//! `state.bin` (and, to restore, the chunk files) into a scratch directory, then verify
//! `state.bin` frame by frame and match the chunks it refers to against the chunk files
//! the backup holds: both are in ascending hash order, so this is a merge that keeps
//! only the list of chunk hashes in memory (32 bytes per chunk, i.e. per MiB of data).
//!
//! A restore then installs the state into `<dir>/state` + `<dir>/chunks` as the initial
//! state of the new cluster (see [`trove_raft::seed_restored_state`] for how that fits
//! openraft) and writes the identity last: a restore that fails or is interrupted leaves
//! no identity, so the server refuses the directory rather than start from half of it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use trove_proto::backup::{
    BackupChecker, BackupFormatError, STATE_FILE, chunk_hash, read_magic, read_record,
};
use trove_proto::v1::backup_message::Part;
use trove_proto::v1::{BackupHeader, BackupTrailer};
use trove_raft::TroveNode;
use trove_storage::StorageError;
use trove_storage::chunks::ChunkStore;
use trove_storage::fsutil::{create_dir_durable, sync_dir};
use trove_storage::state::{StateCounts, StateStore};

use crate::config::derive_cluster_id;
use crate::identity::{self, IDENTITY_FORMAT, Identity};

/// Scratch directory inside the data directory while a restore unpacks (same
/// filesystem as the chunk store, so chunk files are adopted by hard link).
const RESTORE_TMP_DIR: &str = "restore.tmp";

/// Why a backup could not be verified or restored. None is retryable as is.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The file is not a valid backup (damaged, cut, or a newer format).
    #[error("{0}")]
    Format(#[from] BackupFormatError),
    /// The backed-up state file failed verification, or does not match the chunks.
    #[error("corrupt backup: {0}")]
    State(String),
    /// The request cannot be carried out as given (bad arguments, a non-empty data
    /// directory).
    #[error("{0}")]
    Refused(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Installing the state failed.
    #[error("installing the restored state: {0}")]
    Install(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn install_err(e: impl std::fmt::Display) -> RestoreError {
    RestoreError::Install(e.to_string())
}

/// What a valid backup file holds.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    pub header: BackupHeader,
    pub trailer: BackupTrailer,
    /// Entries of the state file (records, buckets, objects, uploads, chunk references,
    /// request ids).
    pub state_entries: u64,
    /// Chunk files.
    pub chunks: u64,
    /// Size of the backup file.
    pub file_bytes: u64,
}

/// Called with the number of backup file bytes read so far.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// Verifies a backup file completely without a cluster. Needs scratch space for the
/// state file only (in the system temp directory, `TMPDIR`).
pub fn verify_file(path: &Path, progress: Progress<'_>) -> Result<VerifyReport, RestoreError> {
    let scratch = tempfile::Builder::new()
        .prefix("trove-verify-")
        .tempdir()
        .map_err(io_err(&std::env::temp_dir()))?;
    unpack(path, scratch.path(), false, progress)
}

/// A restore's parameters.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// The backup file.
    pub backup: PathBuf,
    /// This member's id in the new cluster.
    pub node_id: u64,
    /// Its data directory: absent or empty.
    pub data_dir: PathBuf,
    /// Every member of the new cluster (id, peer address), the same on each.
    pub initial_cluster: Vec<(u64, String)>,
    /// Mixed into the new cluster's id (the same on each member).
    pub initial_cluster_token: String,
}

/// What a restore prepared.
#[derive(Clone, Debug)]
pub struct RestoreReport {
    /// The new cluster's id.
    pub cluster_id: String,
    /// The backup's header (source cluster, applied index, counts).
    pub header: BackupHeader,
    /// Sizes of the installed state.
    pub counts: StateCounts,
}

/// Prepares `data_dir` as member `node_id` of a new cluster holding exactly the backed-up
/// data. Refuses a data directory that is not empty; on failure, removes what it wrote.
pub fn restore(o: &RestoreOptions, progress: Progress<'_>) -> Result<RestoreReport, RestoreError> {
    if o.node_id == 0 {
        return Err(RestoreError::Refused("--id must be at least 1".into()));
    }
    if !o.initial_cluster.iter().any(|(id, _)| *id == o.node_id) {
        return Err(RestoreError::Refused(format!(
            "--initial-cluster does not list this member's id {}",
            o.node_id
        )));
    }
    ensure_empty(&o.data_dir)?;
    create_dir_durable(&o.data_dir).map_err(install_err)?;
    let result = prepare(o, progress);
    if result.is_err() {
        // The directory was empty: everything in it is ours.
        if let Err(e) = clear_dir(&o.data_dir) {
            tracing::warn!(dir = %o.data_dir.display(), error = %e, "cleaning up a failed restore; empty the directory before trying again");
        }
    }
    result
}

fn prepare(o: &RestoreOptions, progress: Progress<'_>) -> Result<RestoreReport, RestoreError> {
    let scratch = o.data_dir.join(RESTORE_TMP_DIR);
    let verified = unpack(&o.backup, &scratch, true, progress)?;
    let members = o
        .initial_cluster
        .iter()
        .map(|(id, peer)| {
            let node = TroveNode {
                peer_addr: peer.clone(),
                // Announced by each member once it runs.
                client_addr: String::new(),
            };
            (*id, node)
        })
        .collect();
    let counts = {
        let chunks = ChunkStore::open(&o.data_dir.join("chunks")).map_err(install_err)?;
        let store = StateStore::open(&o.data_dir.join("state"), chunks).map_err(install_err)?;
        let restored =
            trove_raft::seed_restored_state(&store, &scratch, &members).map_err(install_err)?;
        restored.counts
    };
    std::fs::remove_dir_all(&scratch).map_err(io_err(&scratch))?;
    sync_dir(&o.data_dir).map_err(install_err)?;
    let h = &verified.header;
    // Deterministic, so every member restored from the same file with the same list and
    // token agrees without talking; different from the source's id.
    let token = format!(
        "{}\nrestored from {} at index {} taken at {}",
        o.initial_cluster_token, h.cluster_id, h.applied_index, h.created_unix_ms
    );
    let cluster_id = derive_cluster_id(&o.initial_cluster, &token);
    // Last: the identity marks the directory complete.
    identity::create(
        &o.data_dir,
        &Identity {
            format: IDENTITY_FORMAT,
            cluster_id: cluster_id.clone(),
            node_id: o.node_id,
            incarnation: uuid::Uuid::new_v4().to_string(),
            initial_cluster: o.initial_cluster.clone(),
        },
    )
    .map_err(install_err)?;
    Ok(RestoreReport {
        cluster_id,
        header: verified.header,
        counts,
    })
}

/// Refuses a data directory that holds anything (a restore never overwrites data).
fn ensure_empty(dir: &Path) -> Result<(), RestoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        if entry.file_name() != "lost+found" {
            return Err(RestoreError::Refused(format!(
                "{} is not empty: a restore prepares a new member and never overwrites data; use a new or empty directory",
                dir.display()
            )));
        }
    }
    Ok(())
}

fn clear_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == "lost+found" {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Counts the bytes read through it (for progress).
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Reads and checks the whole backup file, writing `state.bin` (and the chunk files if
/// `keep_chunks`) into `dest` (created; must not exist), then checks the state file
/// against the chunk files.
fn unpack(
    path: &Path,
    dest: &Path,
    keep_chunks: bool,
    progress: Progress<'_>,
) -> Result<VerifyReport, RestoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut r = Counting {
        inner: BufReader::with_capacity(1 << 20, file),
        read: 0,
    };
    read_magic(&mut r)?;
    let chunks_dir = dest.join("chunks");
    std::fs::create_dir_all(&chunks_dir).map_err(io_err(&chunks_dir))?;
    let mut checker = BackupChecker::new();
    let mut out: Option<(PathBuf, BufWriter<File>)> = None;
    let mut chunk_hashes: Vec<[u8; 32]> = Vec::new();
    while let Some((msg, record)) = read_record(&mut r)? {
        checker.check(&msg, &record)?;
        match msg.part {
            Some(Part::File(f)) => {
                // The checker accepted the name: "state.bin" or "chunks/<64 hex>".
                if let Some(hash) = chunk_hash(&f.name) {
                    chunk_hashes.push(hash);
                }
                if f.name == STATE_FILE || keep_chunks {
                    let p = dest.join(&f.name);
                    let w = File::options()
                        .write(true)
                        .create_new(true)
                        .open(&p)
                        .map_err(io_err(&p))?;
                    out = Some((p, BufWriter::with_capacity(1 << 20, w)));
                }
            }
            Some(Part::Data(d)) => {
                if let Some((p, w)) = &mut out {
                    w.write_all(&d).map_err(io_err(p))?;
                }
            }
            Some(Part::FileEnd(_)) => {
                if let Some((p, w)) = out.take() {
                    let f = w.into_inner().map_err(|e| io_err(&p)(e.into_error()))?;
                    f.sync_all().map_err(io_err(&p))?;
                }
            }
            _ => {}
        }
        progress(r.read);
    }
    let summary = checker.finish()?;
    sync_dir(&chunks_dir).map_err(install_err)?;
    sync_dir(dest).map_err(install_err)?;

    // The state file, frame by frame, and the chunks it refers to against those held.
    let mut next = 0usize;
    let scanned = trove_storage::snapshot::scan_state_file(dest, |hash| {
        if chunk_hashes.get(next) == Some(hash) {
            next += 1;
            Ok(())
        } else {
            Err(StorageError::corrupt(
                dest.join(STATE_FILE),
                format!(
                    "the state refers to chunk {} which the backup does not hold",
                    hex::encode(hash)
                ),
            ))
        }
    });
    let (raft_meta, state_entries) = scanned.map_err(|e| RestoreError::State(e.to_string()))?;
    if next != chunk_hashes.len() {
        return Err(RestoreError::State(format!(
            "the backup holds {} chunk files the state does not refer to",
            chunk_hashes.len() - next
        )));
    }
    let (meta, _) = trove_raft::state_machine::decode_snapshot_meta(&raft_meta)
        .map_err(|e| RestoreError::State(format!("the state's raft meta: {e}")))?;
    let index = meta.last_log_id.map_or(0, |l| l.index);
    if index != summary.header.applied_index {
        return Err(RestoreError::State(format!(
            "the header says applied index {}, the state file says {index}",
            summary.header.applied_index
        )));
    }
    Ok(VerifyReport {
        header: summary.header,
        trailer: summary.trailer,
        state_entries,
        chunks: chunk_hashes.len() as u64,
        file_bytes: r.read,
    })
}

#[cfg(test)]
mod tests;
