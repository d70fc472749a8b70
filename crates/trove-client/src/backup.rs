//! Off-cluster backups: `Cluster.Backup` read as the bytes of a backup file.
//!
//! [`Client::backup`] opens the stream (the leader builds a point-in-time export; a
//! follower forwards) and [`BackupReader::next_bytes`] returns the file's bytes: the
//! magic, then one length-prefixed record per message (format: `BackupMessage` in
//! `trove.proto`). Every message is checked as it arrives (order, sizes, per-file
//! CRC32C, each chunk's SHA-256, and the trailer's counts and SHA-256), so a stream
//! damaged in transit or cut short is an error, never a silently bad file. Only opening
//! is retried: a stream that breaks later must be started again.

use std::time::Duration;

use tonic::codec::Streaming;
use tonic::transport::Channel;
use trove_proto::backup::{BackupChecker, BackupFormatError, FILE_MAGIC, encode_record};
use trove_proto::v1 as pb;
use trove_proto::v1::backup_message::Part;
use trove_types::TroveError;

use crate::retry::{Idempotency, map_status};
use crate::{Client, Result, cluster_client};

/// Shortest wait for the header: the leader exports the state before sending it.
const BACKUP_START_TIMEOUT: Duration = Duration::from_secs(600);
/// Shortest wait for each further message.
const BACKUP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a backup holds, from its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupInfo {
    /// The backed-up cluster.
    pub cluster_id: String,
    /// The node (leader) that built it.
    pub node_id: u64,
    /// Every write up to this log index (revision) is in the backup, none after.
    pub applied_index: u64,
    /// Raft term of that entry.
    pub applied_term: u64,
    /// When it was taken (ms since the Unix epoch, the leader's clock).
    pub created_unix_ms: u64,
    pub records: u64,
    pub buckets: u64,
    pub objects: u64,
    /// Unfinished uploads at the time of the backup.
    pub uploads: u64,
    /// Files (the state file and one per chunk) and their total size.
    pub files: u64,
    pub total_bytes: u64,
}

fn info(h: &pb::BackupHeader) -> BackupInfo {
    BackupInfo {
        cluster_id: h.cluster_id.clone(),
        node_id: h.node_id,
        applied_index: h.applied_index,
        applied_term: h.applied_term,
        created_unix_ms: h.created_unix_ms,
        records: h.records,
        buckets: h.buckets,
        objects: h.objects,
        uploads: h.uploads,
        files: h.files,
        total_bytes: h.total_bytes,
    }
}

fn format_error(e: BackupFormatError) -> TroveError {
    match e {
        BackupFormatError::Truncated(m) => TroveError::unavailable(format!(
            "the backup stream ended early ({m}); start it again"
        )),
        BackupFormatError::UnsupportedVersion { .. } => TroveError::FailedPrecondition {
            message: e.to_string(),
            current_revision: None,
        },
        other => TroveError::DataLoss(format!("the backup stream failed verification: {other}")),
    }
}

impl Client {
    /// Starts a consistent backup of the whole cluster and returns a reader of the backup
    /// file's bytes. The backup holds every write acknowledged before this call.
    pub async fn backup(&self) -> Result<BackupReader> {
        let start = self.inner.cfg.request_timeout.max(BACKUP_START_TIMEOUT);
        let mut attempts = self.inner.attempts(Idempotency::Safe);
        loop {
            let node = attempts.node();
            let err = match tokio::time::timeout(start, open_once(node.channel())).await {
                Ok(Ok((header, record, stream))) => {
                    attempts.succeeded();
                    let mut checker = BackupChecker::new();
                    let msg = pb::BackupMessage {
                        part: Some(Part::Header(header.clone())),
                    };
                    checker.check(&msg, &record).map_err(format_error)?;
                    let mut first = FILE_MAGIC.to_vec();
                    first.extend_from_slice(&record);
                    return Ok(BackupReader {
                        info: info(&header),
                        stream,
                        checker,
                        idle: self.inner.cfg.request_timeout.max(BACKUP_IDLE_TIMEOUT),
                        first: Some(first),
                        done: false,
                    });
                }
                Ok(Err(e)) => e,
                Err(_) => TroveError::DeadlineExceeded(format!(
                    "{} did not start the backup within {start:?}",
                    node.addr
                )),
            };
            attempts.failed(err, true).await?;
        }
    }
}

async fn open_once(
    ch: Channel,
) -> Result<(pb::BackupHeader, Vec<u8>, Streaming<pb::BackupMessage>)> {
    let mut stream = cluster_client(ch)
        .backup(pb::BackupRequest {})
        .await
        .map_err(|st| map_status(&st))?
        .into_inner();
    match stream.message().await.map_err(|st| map_status(&st))? {
        Some(msg) => {
            let record = encode_record(&msg);
            match msg.part {
                Some(Part::Header(h)) => Ok((h, record, stream)),
                _ => Err(TroveError::internal(
                    "the backup stream did not start with a header",
                )),
            }
        }
        None => Err(TroveError::unavailable(
            "the backup stream ended before its header",
        )),
    }
}

/// A backup being received, as the bytes of a backup file.
pub struct BackupReader {
    info: BackupInfo,
    stream: Streaming<pb::BackupMessage>,
    checker: BackupChecker,
    idle: Duration,
    /// The magic and the header's record, not yet returned.
    first: Option<Vec<u8>>,
    done: bool,
}

impl std::fmt::Debug for BackupReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupReader")
            .field("info", &self.info)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl BackupReader {
    /// What the backup holds (from its header).
    pub fn info(&self) -> &BackupInfo {
        &self.info
    }

    /// Bytes of the backed-up files received so far (compare with `info().total_bytes`).
    pub fn received_bytes(&self) -> u64 {
        self.checker.progress().1
    }

    /// The next bytes of the backup file, or `None` once the trailer arrived and the
    /// whole backup checked out. An error means the file written so far is unusable.
    pub async fn next_bytes(&mut self) -> Result<Option<Vec<u8>>> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        if self.done {
            return Ok(None);
        }
        let msg = match tokio::time::timeout(self.idle, self.stream.message()).await {
            Ok(Ok(Some(msg))) => msg,
            Ok(Ok(None)) => {
                // Ended: complete only if the trailer came (then `done` was set).
                return Err(format_error(self.checker.finish().err().unwrap_or_else(
                    || BackupFormatError::Truncated("ended without a trailer".into()),
                )));
            }
            Ok(Err(st)) => return Err(map_status(&st)),
            Err(_) => {
                return Err(TroveError::DeadlineExceeded(format!(
                    "no backup data for {:?}",
                    self.idle
                )));
            }
        };
        let record = encode_record(&msg);
        self.checker.check(&msg, &record).map_err(format_error)?;
        if matches!(msg.part, Some(Part::Trailer(_))) {
            self.checker.finish().map_err(format_error)?;
            self.done = true;
        }
        Ok(Some(record))
    }
}
