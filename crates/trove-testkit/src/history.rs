//! The operation history of a run: every client operation with its invoke and completion
//! time (nanoseconds on one monotonic clock, since the start of the run) and its result,
//! streamed as JSON lines to `history.jsonl` and kept in memory for the checkers.
//!
//! Outcomes follow Jepsen: `ok` (took effect, or a read that returned), `fail` (certainly
//! had no effect: a compare-and-set mismatch, a delete of a missing record, a refusal)
//! and `unknown` (a timeout, a lost connection, an unavailable cluster: it may or may not
//! have taken effect, at any time up to the end of the run). A client whose operation
//! ended unknown continues as a new process id.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use trove_types::TroveError;

use crate::error::{Result, TestkitError};

/// Operations queued for the history writer.
const WRITER_QUEUE_OPS: usize = 4096;

/// What an operation does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum OpKind {
    /// Linearizable record read.
    Get,
    /// Unconditional record write of a unique value.
    Put { value: String },
    /// Compare-and-set: write `value` only if the record's revision is `expected`
    /// (0: only if the record does not exist).
    Cas { expected: u64, value: String },
    /// Record delete.
    Delete,
    /// Object upload (unique object key) of `size` bytes with this SHA-256 (hex).
    BlobPut { size: u64, sha256: String },
    /// Object download; the result's value is the SHA-256 (hex) of the bytes read.
    BlobGet,
}

impl OpKind {
    /// Short name: get, put, cas, delete, blob_put, blob_get.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Put { .. } => "put",
            OpKind::Cas { .. } => "cas",
            OpKind::Delete => "delete",
            OpKind::BlobPut { .. } => "blob_put",
            OpKind::BlobGet => "blob_get",
        }
    }

    /// Whether the operation may change state.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            OpKind::Put { .. } | OpKind::Cas { .. } | OpKind::Delete | OpKind::BlobPut { .. }
        )
    }

    /// The value a put or compare-and-set writes.
    pub fn written_value(&self) -> Option<&str> {
        match self {
            OpKind::Put { value } | OpKind::Cas { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OpResult {
    /// A write took effect at this revision.
    Written { revision: u64 },
    /// A read found this value (for blobs: the SHA-256 hex of the bytes) at this revision.
    Found { value: String, revision: u64 },
    /// The record or object does not exist (a read, or a delete that found nothing).
    NotFound,
    /// A compare-and-set found the record at another revision (0: missing).
    Mismatch { current: u64 },
    /// Refused for another reason; certainly had no effect and tells nothing.
    Refused { error: String },
    /// Unknown outcome: may or may not have taken effect.
    Unknown { error: String },
}

/// Jepsen-style outcome class of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Fail,
    Unknown,
}

/// One completed operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Unique in the run, in invoke order per client.
    pub id: u64,
    pub client: u32,
    /// Jepsen process: changes after each unknown outcome of the client.
    pub process: u64,
    /// Record key, or the object key for blobs.
    pub key: String,
    #[serde(flatten)]
    pub kind: OpKind,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    pub result: OpResult,
    /// Derived from `kind` and `result`; stored for people reading the file.
    pub outcome: Outcome,
}

impl Op {
    /// Builds an operation, deriving its outcome.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        client: u32,
        process: u64,
        key: impl Into<String>,
        kind: OpKind,
        invoke_ns: u64,
        complete_ns: u64,
        result: OpResult,
    ) -> Op {
        let outcome = outcome_of(&kind, &result);
        Op {
            id,
            client,
            process,
            key: key.into(),
            kind,
            invoke_ns,
            complete_ns,
            result,
            outcome,
        }
    }

    /// The revision this operation reported (a write's, or the value's for a read).
    pub fn revision(&self) -> Option<u64> {
        match &self.result {
            OpResult::Written { revision } | OpResult::Found { revision, .. } => Some(*revision),
            _ => None,
        }
    }

    /// Whether this is a blob operation.
    pub fn is_blob(&self) -> bool {
        matches!(self.kind, OpKind::BlobPut { .. } | OpKind::BlobGet)
    }
}

fn outcome_of(kind: &OpKind, result: &OpResult) -> Outcome {
    match result {
        OpResult::Written { .. } | OpResult::Found { .. } => Outcome::Ok,
        OpResult::NotFound if matches!(kind, OpKind::Get | OpKind::BlobGet) => Outcome::Ok,
        OpResult::NotFound | OpResult::Mismatch { .. } | OpResult::Refused { .. } => Outcome::Fail,
        OpResult::Unknown { .. } => Outcome::Unknown,
    }
}

/// Classifies an SDK error: definite refusals carry their meaning, everything that
/// could have happened after the request was sent is unknown.
pub fn result_of_error(e: &TroveError) -> OpResult {
    match e {
        TroveError::NotFound(_) => OpResult::NotFound,
        TroveError::FailedPrecondition {
            current_revision: Some(current),
            ..
        } => OpResult::Mismatch { current: *current },
        TroveError::InvalidArgument(_)
        | TroveError::AlreadyExists(_)
        | TroveError::ResourceExhausted(_)
        | TroveError::FailedPrecondition { .. } => OpResult::Refused {
            error: e.to_string(),
        },
        TroveError::Unavailable { .. }
        | TroveError::DeadlineExceeded(_)
        | TroveError::Cancelled(_)
        | TroveError::DataLoss(_)
        | TroveError::Internal(_) => OpResult::Unknown {
            error: e.to_string(),
        },
    }
}

/// Collects the operations of a run and streams them to `history.jsonl`.
pub struct Recorder {
    start: Instant,
    next_id: AtomicU64,
    ops: Mutex<Vec<Op>>,
    tx: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<tokio::task::JoinHandle<std::io::Result<()>>>>,
    path: Option<PathBuf>,
}

impl Recorder {
    /// A recorder writing to `path` (or keeping operations in memory only). Must be
    /// created inside a Tokio runtime when `path` is given.
    pub fn new(path: Option<&Path>) -> Result<Arc<Recorder>> {
        let (tx, writer) = match path {
            Some(p) => {
                let file = std::fs::File::create(p)
                    .map_err(|e| TestkitError::io(format!("create {}", p.display()), e))?;
                let (tx, mut rx) = mpsc::channel::<Op>(WRITER_QUEUE_OPS);
                let writer = tokio::task::spawn_blocking(move || {
                    let mut out = std::io::BufWriter::new(file);
                    while let Some(op) = rx.blocking_recv() {
                        serde_json::to_writer(&mut out, &op).map_err(std::io::Error::other)?;
                        out.write_all(b"\n")?;
                    }
                    out.flush()
                });
                (Some(tx), Some(writer))
            }
            None => (None, None),
        };
        Ok(Arc::new(Recorder {
            start: Instant::now(),
            next_id: AtomicU64::new(1),
            ops: Mutex::new(Vec::new()),
            tx: Mutex::new(tx),
            writer: Mutex::new(writer),
            path: path.map(Path::to_path_buf),
        }))
    }

    /// Nanoseconds since the recorder was created (the run's clock).
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// The run's clock origin.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// A fresh operation id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Records a completed operation.
    pub async fn record(&self, op: Op) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(tx) = tx {
            // The writer only stops when the recorder is finished; a send error then
            // means the op arrived too late for the file, not for the checkers.
            let _ = tx.send(op.clone()).await;
        }
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).push(op);
    }

    /// Stops the writer (flushing the file) and returns every operation, sorted by
    /// invoke time.
    pub async fn finish(&self) -> Result<Vec<Op>> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = writer {
            let what = format!(
                "write {}",
                self.path
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
            w.await
                .map_err(|e| TestkitError::io(&what, std::io::Error::other(e)))?
                .map_err(|e| TestkitError::io(&what, e))?;
        }
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
        ops.sort_by_key(|o| (o.invoke_ns, o.id));
        Ok(ops)
    }
}

/// Reads a `history.jsonl` file back (to re-check a kept run).
pub fn read_history(path: &Path) -> Result<Vec<Op>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TestkitError::io(format!("read {}", path.display()), e))?;
    let mut ops = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let op: Op = serde_json::from_str(line).map_err(|e| {
            TestkitError::io(
                format!("{}:{}", path.display(), n + 1),
                std::io::Error::other(e),
            )
        })?;
        ops.push(op);
    }
    ops.sort_by_key(|o| (o.invoke_ns, o.id));
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_jepsen() {
        let w = OpResult::Written { revision: 3 };
        assert_eq!(outcome_of(&OpKind::Delete, &w), Outcome::Ok);
        assert_eq!(outcome_of(&OpKind::Get, &OpResult::NotFound), Outcome::Ok);
        assert_eq!(
            outcome_of(&OpKind::Delete, &OpResult::NotFound),
            Outcome::Fail
        );
        let mm = OpResult::Mismatch { current: 2 };
        let cas = OpKind::Cas {
            expected: 1,
            value: "v".into(),
        };
        assert_eq!(outcome_of(&cas, &mm), Outcome::Fail);
        let un = OpResult::Unknown { error: "t".into() };
        assert_eq!(outcome_of(&cas, &un), Outcome::Unknown);
    }

    #[test]
    fn errors_are_unknown_unless_definite() {
        let timeout = TroveError::DeadlineExceeded("slow".into());
        assert!(matches!(
            result_of_error(&timeout),
            OpResult::Unknown { .. }
        ));
        let reset = TroveError::unavailable("connection lost");
        assert!(matches!(result_of_error(&reset), OpResult::Unknown { .. }));
        let nf = TroveError::NotFound("k".into());
        assert_eq!(result_of_error(&nf), OpResult::NotFound);
        let mm = TroveError::FailedPrecondition {
            message: "m".into(),
            current_revision: Some(7),
        };
        assert_eq!(result_of_error(&mm), OpResult::Mismatch { current: 7 });
        let bad = TroveError::invalid("key");
        assert!(matches!(result_of_error(&bad), OpResult::Refused { .. }));
    }

    #[tokio::test]
    async fn history_round_trips_through_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let rec = Recorder::new(Some(&path)).unwrap();
        let op = Op::new(
            rec.next_id(),
            1,
            1,
            "k1",
            OpKind::Cas {
                expected: 0,
                value: "c1:1".into(),
            },
            5,
            9,
            OpResult::Written { revision: 4 },
        );
        rec.record(op.clone()).await;
        let ops = rec.finish().await.unwrap();
        assert_eq!(ops, vec![op.clone()]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"f\":\"cas\""), "{text}");
        assert!(text.contains("\"outcome\":\"ok\""), "{text}");
        assert_eq!(read_history(&path).unwrap(), vec![op]);
    }
}
