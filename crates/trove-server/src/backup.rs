//! Off-cluster backups, the server side: the leader exports a point-in-time copy of the
//! state (the state machine's [`export_backup`](trove_raft::StateMachine::export_backup):
//! `state.bin` written and chunk files hard-linked under the apply lock, so applying
//! pauses only for that) into `<data>/backups/backup-<uuid>/`, then streams it as
//! `BackupMessage`s (format: `trove.proto` and [`trove_proto::backup`]) while the
//! cluster keeps serving. The export is removed when the stream ends, fails or is
//! cancelled, and any leftover (a crash mid-backup) at the next start-up.
//!
//! Memory is bounded: files are read in [`BACKUP_PIECE_BYTES`] pieces into a channel of
//! [`BACKUP_QUEUE_MESSAGES`] messages; chunk files are streamed in the order the state
//! file refers to them (ascending hash), so no list of chunks is ever built. Every chunk
//! (at most one chunk size) is read whole and verified against its hash before it is
//! sent: a corrupt or missing copy is repaired the way a read repairs it (from a peer,
//! see [`crate::repair`]) and the intact bytes are backed up; only if no peer holds an
//! intact copy does the backup end with DATA_LOSS. A corrupt copy is never backed up.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use trove_proto::backup::{CHUNK_PREFIX, FORMAT_VERSION, STATE_FILE, encode_record};
use trove_proto::v1::backup_message::Part;
use trove_proto::v1::{BackupFile, BackupFileEnd, BackupHeader, BackupMessage, BackupTrailer};
use trove_raft::BackupExport;
use trove_storage::StorageError;
use trove_types::Sha256;
use trove_types::limits::{BACKUP_PIECE_BYTES, BACKUP_QUEUE_MESSAGES};
use trove_types::{Sha256Digest, TroveError};

use crate::api::status;
use crate::error::ServerError;
use crate::node::{NodeRef, now_ms};

/// Directory (in the data directory) holding exports while they stream.
pub const BACKUPS_DIR: &str = "backups";

/// A stream of backup messages, as the Cluster service returns it.
pub type BackupStream = ReceiverStream<Result<BackupMessage, Status>>;

/// Removes exports left by backups that a crash interrupted. Runs at start-up, after the
/// format check.
pub fn remove_leftovers(data_dir: &Path) -> Result<(), ServerError> {
    let dir = data_dir.join(BACKUPS_DIR);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ServerError::DataDir {
            dir: dir.display().to_string(),
            reason: format!("cannot remove leftover backup exports: {e}"),
        }),
    }
}

/// Starts a backup on this node, which must be the leader and have passed the read
/// barrier (so its state holds every write acknowledged before the request). The export
/// runs inside the stream's task: a big export does not delay the response headers.
pub fn start(node: NodeRef) -> BackupStream {
    let (tx, rx) = mpsc::channel(BACKUP_QUEUE_MESSAGES);
    tokio::spawn(async move {
        let dir = node
            .config
            .data_dir
            .join(BACKUPS_DIR)
            .join(format!("backup-{}", uuid::Uuid::new_v4()));
        let res = produce(&node, &dir, &tx).await;
        let removed = dir.clone();
        let _ = tokio::task::spawn_blocking(move || remove_export(&removed)).await;
        match res {
            Ok(()) => {
                tracing::info!(node = node.id, "backup streamed");
            }
            Err(Outcome::ClientGone) => {
                tracing::info!(node = node.id, "backup cancelled by the client");
            }
            Err(Outcome::Failed(e)) => {
                tracing::error!(node = node.id, error = %e, "backup failed");
                let _ = tx.send(Err(status(e))).await;
            }
        }
    });
    ReceiverStream::new(rx)
}

fn remove_export(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "removing a backup export failed; it is removed at the next start");
    }
}

/// How a backup ended, when not by completing.
pub(crate) enum Outcome {
    /// The receiver went away: nothing to report.
    ClientGone,
    /// The backup could not be made.
    Failed(TroveError),
}

impl From<StorageError> for Outcome {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Corrupt { .. } | StorageError::ChecksumMismatch(_) => {
                Outcome::Failed(TroveError::DataLoss(format!(
                    "the leader's copy failed verification; the backup was aborted: {e}"
                )))
            }
            other => Outcome::Failed(TroveError::internal(format!("backup: {other}"))),
        }
    }
}

async fn produce(
    node: &NodeRef,
    dir: &Path,
    tx: &mpsc::Sender<Result<BackupMessage, Status>>,
) -> Result<(), Outcome> {
    let parent = node.config.data_dir.join(BACKUPS_DIR);
    tokio::task::spawn_blocking(move || trove_storage::fsutil::create_dir_durable(&parent))
        .await
        .map_err(|e| Outcome::Failed(TroveError::internal(e.to_string())))??;
    let export =
        node.sm.export_backup(dir).await.map_err(|e| {
            Outcome::Failed(TroveError::internal(format!("exporting the state: {e}")))
        })?;
    let header = header(node, &export);
    tracing::info!(
        node = node.id,
        applied = header.applied_index,
        files = header.files,
        bytes = header.total_bytes,
        "backup exported; streaming"
    );
    let tx = tx.clone();
    let dir = dir.to_path_buf();
    let runtime = tokio::runtime::Handle::current();
    let n = node.clone();
    let repair: ChunkRepair =
        Box::new(move |hash| runtime.block_on(crate::repair::read_chunk(&n, *hash)));
    tokio::task::spawn_blocking(move || Sender::new(tx).with_repair(repair).stream(&dir, header))
        .await
        .map_err(|e| Outcome::Failed(TroveError::internal(e.to_string())))?
}

fn header(node: &NodeRef, export: &BackupExport) -> BackupHeader {
    let applied = export.meta.last_log_id;
    BackupHeader {
        format_version: FORMAT_VERSION,
        cluster_id: node.cluster_id.clone(),
        node_id: node.id,
        applied_index: applied.map_or(0, |l| l.index),
        applied_term: applied.map_or(0, |l| l.leader_id.term),
        created_unix_ms: now_ms(),
        records: export.info.counts.records,
        buckets: export.info.counts.buckets,
        objects: export.info.counts.objects,
        uploads: export.info.counts.uploads,
        files: 1 + export.info.counts.chunks,
        total_bytes: export.info.bytes,
    }
}

/// Gets an intact copy of a chunk whose exported copy failed verification (called on the
/// blocking thread that streams the backup).
pub(crate) type ChunkRepair =
    Box<dyn FnMut(&Sha256Digest) -> Result<bytes::Bytes, TroveError> + Send>;

/// The blocking side of a backup: reads the export's files and sends the messages,
/// hashing each one's record bytes for the trailer.
pub(crate) struct Sender {
    tx: mpsc::Sender<Result<BackupMessage, Status>>,
    hasher: Sha256,
    files: u64,
    bytes: u64,
    buf: Vec<u8>,
    repair: Option<ChunkRepair>,
}

impl Sender {
    pub(crate) fn new(tx: mpsc::Sender<Result<BackupMessage, Status>>) -> Self {
        Sender {
            tx,
            hasher: Sha256::new(),
            files: 0,
            bytes: 0,
            buf: vec![0u8; BACKUP_PIECE_BYTES],
            repair: None,
        }
    }

    /// Repairs chunks that fail verification with `repair` instead of failing the backup.
    pub(crate) fn with_repair(mut self, repair: ChunkRepair) -> Self {
        self.repair = Some(repair);
        self
    }

    fn send(&mut self, part: Part) -> Result<(), Outcome> {
        let msg = BackupMessage { part: Some(part) };
        if !matches!(msg.part, Some(Part::Trailer(_))) {
            self.hasher.update(encode_record(&msg));
        }
        self.tx
            .blocking_send(Ok(msg))
            .map_err(|_| Outcome::ClientGone)
    }

    /// Streams the export in `dir` (header first, then its files, then the trailer).
    pub(crate) fn stream(mut self, dir: &Path, header: BackupHeader) -> Result<(), Outcome> {
        let (files, total) = (header.files, header.total_bytes);
        self.send(Part::Header(header))?;
        self.send_file(&dir.join(STATE_FILE), STATE_FILE)?;
        // Chunks in the order the state refers to them: ascending hash, i.e. name.
        let mut failed = None;
        let scanned = trove_storage::snapshot::scan_state_file(dir, |hash| {
            let name = format!("{CHUNK_PREFIX}{}", hex::encode(hash));
            let path = dir.join(&name);
            match self.send_chunk(&path, &name, hash) {
                Ok(()) => Ok(()),
                Err(outcome) => {
                    failed = Some(outcome);
                    Err(StorageError::Invalid("backup stopped".into()))
                }
            }
        });
        if let Some(outcome) = failed {
            return Err(outcome);
        }
        scanned?;
        if (self.files, self.bytes) != (files, total) {
            return Err(Outcome::Failed(TroveError::internal(format!(
                "the export changed while streaming: {} files / {} bytes sent, {files} / {total} exported",
                self.files, self.bytes
            ))));
        }
        let digest: [u8; 32] = self.hasher.clone().finalize();
        self.send(Part::Trailer(BackupTrailer {
            files: self.files,
            total_bytes: self.bytes,
            sha256: digest.to_vec().into(),
        }))
    }

    /// Sends one file: its name and size, its bytes in pieces, its CRC32C.
    fn send_file(&mut self, path: &Path, name: &str) -> Result<(), Outcome> {
        let io = |e| Outcome::from(StorageError::io(path, e));
        let mut file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        self.send(Part::File(BackupFile {
            name: name.to_string(),
            size,
        }))?;
        let mut crc = 0u32;
        let mut sent = 0u64;
        loop {
            let n = read_full(&mut file, &mut self.buf).map_err(io)?;
            if n == 0 {
                break;
            }
            let piece = &self.buf[..n];
            crc = crc32c::crc32c_append(crc, piece);
            sent += n as u64;
            if sent > size {
                break;
            }
            let data = bytes::Bytes::copy_from_slice(piece);
            self.send(Part::Data(data))?;
        }
        if sent != size {
            return Err(Outcome::from(StorageError::corrupt(
                path,
                format!("{sent} bytes read, {size} expected"),
            )));
        }
        self.end_file(crc, size)
    }

    /// Sends one chunk, verified against `hash` before any of it is sent; a copy that
    /// fails is replaced by an intact one from the repair path, or the backup fails.
    fn send_chunk(&mut self, path: &Path, name: &str, hash: &Sha256Digest) -> Result<(), Outcome> {
        let data =
            match trove_storage::chunks::read_verified_file(path, hash).map(bytes::Bytes::from) {
                Ok(data) => data,
                Err(damage) => {
                    let Some(repair) = self.repair.as_mut() else {
                        return Err(Outcome::from(damage));
                    };
                    tracing::warn!(
                        chunk = %hex::encode(hash),
                        problem = %damage,
                        "a chunk in the backup export failed verification; repairing it"
                    );
                    repair(hash).map_err(|e| {
                        Outcome::Failed(TroveError::DataLoss(format!(
                            "chunk {} failed verification ({damage}) and could not be repaired; \
                         the backup was aborted: {e}",
                            hex::encode(hash)
                        )))
                    })?
                }
            };
        self.send(Part::File(BackupFile {
            name: name.to_string(),
            size: data.len() as u64,
        }))?;
        for piece in data.chunks(BACKUP_PIECE_BYTES) {
            self.send(Part::Data(data.slice_ref(piece)))?;
        }
        self.end_file(crc32c::crc32c(&data), data.len() as u64)
    }

    fn end_file(&mut self, crc32c: u32, size: u64) -> Result<(), Outcome> {
        self.send(Part::FileEnd(BackupFileEnd { crc32c }))?;
        self.files += 1;
        self.bytes += size;
        Ok(())
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
