//! The commands replicated through Raft and their results.
//!
//! A [`Command`] is the application payload of one Raft log entry. Applying it is
//! deterministic: everything that varies (time, ids) is inside the command, stamped by
//! the leader before proposing.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// SHA-256 digest (32 bytes).
pub type Sha256Digest = [u8; 32];

/// Identifies one logical mutating request; retries with the same id are applied once.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// Stable client identity, 1..=64 bytes.
    pub client_id: String,
    /// Unique per client for each logical request.
    pub seq: u64,
}

/// One replicated command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Deduplication id; `None` for internal commands and clients that send none.
    pub request_id: Option<RequestId>,
    /// Leader's wall clock when proposing, in ms since the Unix epoch. Apply uses this
    /// (never its own clock) for expiry decisions.
    pub time_ms: u64,
    /// What to do.
    pub op: Op,
}

/// A chunk of an object, as listed in its manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// SHA-256 of the chunk's bytes: its content address.
    pub hash: Sha256Digest,
    /// Length in bytes.
    pub len: u32,
}

/// The operations of the state machine.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Create or replace a record; with `expected_revision`, compare-and-set.
    PutRecord {
        key: String,
        value: Bytes,
        expected_revision: Option<u64>,
    },
    /// Delete a record; with `expected_revision`, only at that revision.
    DeleteRecord {
        key: String,
        expected_revision: Option<u64>,
    },
    /// Create a bucket.
    CreateBucket { bucket: String },
    /// Delete an empty bucket.
    DeleteBucket { bucket: String },
    /// Store one chunk of an upload in progress. The chunk is not visible as part of any
    /// object until the upload's manifest commits.
    PutChunk {
        upload_id: u128,
        hash: Sha256Digest,
        data: Bytes,
    },
    /// Make an upload visible as an object: the manifest.
    CommitObject {
        upload_id: u128,
        bucket: String,
        key: String,
        size: u64,
        sha256: Sha256Digest,
        chunks: Vec<ChunkRef>,
    },
    /// Drop an unfinished upload and release its chunks.
    AbortUpload { upload_id: u128 },
    /// Delete an object.
    DeleteObject { bucket: String, key: String },
    /// Drop uploads started before `time_ms - UPLOAD_EXPIRY_MS` and request ids older
    /// than the retention; proposed periodically by the leader.
    Expire,
}

impl std::fmt::Debug for Op {
    // Manual impl so that chunk data and values are never dumped into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::PutRecord {
                key,
                value,
                expected_revision,
            } => write!(
                f,
                "PutRecord({key:?}, {} bytes, if={expected_revision:?})",
                value.len()
            ),
            Op::DeleteRecord {
                key,
                expected_revision,
            } => write!(f, "DeleteRecord({key:?}, if={expected_revision:?})"),
            Op::CreateBucket { bucket } => write!(f, "CreateBucket({bucket})"),
            Op::DeleteBucket { bucket } => write!(f, "DeleteBucket({bucket})"),
            Op::PutChunk {
                upload_id,
                hash,
                data,
            } => write!(
                f,
                "PutChunk(upload={upload_id:x}, {}, {} bytes)",
                hex::encode(&hash[..6]),
                data.len()
            ),
            Op::CommitObject {
                upload_id,
                bucket,
                key,
                size,
                chunks,
                ..
            } => write!(
                f,
                "CommitObject(upload={upload_id:x}, {bucket}/{key}, {size} bytes, {} chunks)",
                chunks.len()
            ),
            Op::AbortUpload { upload_id } => write!(f, "AbortUpload({upload_id:x})"),
            Op::DeleteObject { bucket, key } => write!(f, "DeleteObject({bucket}/{key})"),
            Op::Expire => write!(f, "Expire"),
        }
    }
}

/// The successful result of a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpOk {
    /// A write took effect at this revision (the log index of the command).
    Revision(u64),
    /// An object was committed.
    Object {
        revision: u64,
        size: u64,
        sha256: Sha256Digest,
        chunk_count: u32,
    },
    /// Nothing to report (internal commands).
    Done,
}

/// A deterministic refusal by the state machine. Identical on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpError {
    /// Compare-and-set failed; `current` is the record's revision (0 = it does not exist).
    RevisionMismatch { expected: u64, current: u64 },
    /// The record, bucket or object does not exist.
    NotFound(String),
    /// The bucket already exists.
    AlreadyExists(String),
    /// The bucket still holds objects.
    BucketNotEmpty(String),
    /// The upload is unknown (expired, aborted or from a previous leader) or its chunks
    /// do not match its manifest.
    BadUpload(String),
    /// A chunk's bytes do not match its hash.
    ChecksumMismatch(String),
}

/// Result of applying one command.
pub type CommandResult = Result<OpOk, OpError>;

impl OpOk {
    /// The revision of the write, if it was a write.
    pub fn revision(&self) -> Option<u64> {
        match self {
            OpOk::Revision(r) | OpOk::Object { revision: r, .. } => Some(*r),
            OpOk::Done => None,
        }
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.request_id {
            Some(r) => write!(f, "{:?} [req {}:{}]", self.op, r.client_id, r.seq),
            None => write!(f, "{:?}", self.op),
        }
    }
}
