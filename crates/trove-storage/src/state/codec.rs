//! Key layout and versioned value encoding of the state tree.
//!
//! All state lives in one sled tree so that every applied entry is one atomic batch. Keys
//! start with a two-byte prefix naming the table; integers in keys are big-endian so that
//! byte order is numeric order.
//!
//! A value has two forms. The portable form (version byte 1, then postcard) is what
//! snapshots and backups carry, and what state format 1 stored. At rest (state format 2)
//! a value is version byte 2, the same postcard bytes, then the CRC32C of everything
//! before it (u32 little-endian), so that damage sled's own checks miss is still caught
//! when the value is read. Snapshots stay in the portable form, so nodes of either
//! format can exchange them.
//!
//! The stored structs below are the frozen v1 formats. They are deliberately separate from
//! the public types and from `trove-types` (whose serde layout may change for the wire), so
//! that nothing outside this file can change what is on disk; the frozen-bytes tests fail
//! if this file does.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use trove_types::{ChunkRef, CommandResult, OpError, OpOk, RequestId, Sha256Digest};

use crate::error::{Result, StorageError};

/// Version byte of a value in portable form (snapshots, backups, state format 1).
pub(crate) const VALUE_V1: u8 = 1;
/// Version byte of a value at rest in state format 2: the portable payload + CRC32C.
pub(crate) const VALUE_V2: u8 = 2;
/// Length of the CRC32C trailer of a value at rest.
const CRC_LEN: usize = 4;

/// `r/<key>` → [`RecordV1`].
pub(crate) const RECORD: &[u8] = b"r/";
/// `b/<bucket>` → [`BucketV1`].
pub(crate) const BUCKET: &[u8] = b"b/";
/// `o/<bucket len u32><bucket><key>` → [`ObjectV1`]. The length prefix (rather than a
/// separator) keeps the encoding unambiguous even for names apply never validated.
pub(crate) const OBJECT: &[u8] = b"o/";
/// `u/<upload id u128>` → [`UploadV1`].
pub(crate) const UPLOAD: &[u8] = b"u/";
/// `w/<upload id u128><position u64>` → [`ChunkRefV1`]: one key per chunk, so that adding
/// a chunk to a large upload costs O(1) instead of rewriting the whole list.
pub(crate) const UPLOAD_CHUNK: &[u8] = b"w/";
/// `c/<sha256>` → u64: references to the chunk from objects and uploads.
pub(crate) const REFCOUNT: &[u8] = b"c/";
/// `q/<client id>\0<seq u64>` → [`DedupV1`]. The seq has a fixed width at the end, so
/// the key is unambiguous whatever the client id holds.
pub(crate) const DEDUP: &[u8] = b"q/";
/// `e/<time_ms u64><client id>\0<seq u64>` → `()`: the dedup table ordered by time.
pub(crate) const DEDUP_EXPIRY: &[u8] = b"e/";
/// `m/...`: Raft bookkeeping; not part of the logical state (digest, snapshot frames).
pub(crate) const META: &[u8] = b"m/";
/// `m/applied` → `Vec<u8>`: the caller's opaque raft meta of the last applied entry.
pub(crate) const APPLIED_KEY: &[u8] = b"m/applied";

const PREFIX_LEN: usize = 2;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordV1 {
    pub revision: u64,
    pub create_revision: u64,
    pub value: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BucketV1 {
    pub create_revision: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChunkRefV1 {
    pub hash: Sha256Digest,
    pub len: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ObjectV1 {
    pub revision: u64,
    pub size: u64,
    pub sha256: Sha256Digest,
    pub chunks: Vec<ChunkRefV1>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UploadV1 {
    /// `time_ms` of the command that added the latest chunk: an upload expires after
    /// being idle, however long it has been running.
    pub last_active_ms: u64,
    /// Number of `w/` keys of this upload (positions `0..chunk_count`).
    pub chunk_count: u64,
    pub total_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DedupV1 {
    pub time_ms: u64,
    pub result: ResultV1,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ResultV1 {
    Ok(OkV1),
    Err(ErrV1),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum OkV1 {
    Revision(u64),
    Object {
        revision: u64,
        size: u64,
        sha256: Sha256Digest,
        chunk_count: u32,
    },
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ErrV1 {
    RevisionMismatch { expected: u64, current: u64 },
    NotFound(String),
    AlreadyExists(String),
    BucketNotEmpty(String),
    BadUpload(String),
    ChecksumMismatch(String),
}

impl From<ChunkRef> for ChunkRefV1 {
    fn from(c: ChunkRef) -> Self {
        ChunkRefV1 {
            hash: c.hash,
            len: c.len,
        }
    }
}

impl From<ChunkRefV1> for ChunkRef {
    fn from(c: ChunkRefV1) -> Self {
        ChunkRef {
            hash: c.hash,
            len: c.len,
        }
    }
}

impl From<&CommandResult> for ResultV1 {
    fn from(r: &CommandResult) -> Self {
        match r.clone() {
            Ok(ok) => ResultV1::Ok(match ok {
                OpOk::Revision(r) => OkV1::Revision(r),
                OpOk::Object {
                    revision,
                    size,
                    sha256,
                    chunk_count,
                } => OkV1::Object {
                    revision,
                    size,
                    sha256,
                    chunk_count,
                },
                OpOk::Done => OkV1::Done,
            }),
            Err(e) => ResultV1::Err(match e {
                OpError::RevisionMismatch { expected, current } => {
                    ErrV1::RevisionMismatch { expected, current }
                }
                OpError::NotFound(s) => ErrV1::NotFound(s),
                OpError::AlreadyExists(s) => ErrV1::AlreadyExists(s),
                OpError::BucketNotEmpty(s) => ErrV1::BucketNotEmpty(s),
                OpError::BadUpload(s) => ErrV1::BadUpload(s),
                OpError::ChecksumMismatch(s) => ErrV1::ChecksumMismatch(s),
            }),
        }
    }
}

impl From<ResultV1> for CommandResult {
    fn from(r: ResultV1) -> Self {
        match r {
            ResultV1::Ok(ok) => Ok(match ok {
                OkV1::Revision(r) => OpOk::Revision(r),
                OkV1::Object {
                    revision,
                    size,
                    sha256,
                    chunk_count,
                } => OpOk::Object {
                    revision,
                    size,
                    sha256,
                    chunk_count,
                },
                OkV1::Done => OpOk::Done,
            }),
            ResultV1::Err(e) => Err(match e {
                ErrV1::RevisionMismatch { expected, current } => {
                    OpError::RevisionMismatch { expected, current }
                }
                ErrV1::NotFound(s) => OpError::NotFound(s),
                ErrV1::AlreadyExists(s) => OpError::AlreadyExists(s),
                ErrV1::BucketNotEmpty(s) => OpError::BucketNotEmpty(s),
                ErrV1::BadUpload(s) => OpError::BadUpload(s),
                ErrV1::ChecksumMismatch(s) => OpError::ChecksumMismatch(s),
            }),
        }
    }
}

/// Encodes a value in its at-rest form: version byte 2, postcard, CRC32C.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = postcard::to_extend(value, vec![VALUE_V2])
        .map_err(|e| StorageError::Codec(format!("encoding a state value: {e}")))?;
    seal(&mut bytes);
    Ok(bytes)
}

/// Appends the CRC32C of `bytes`.
fn seal(bytes: &mut Vec<u8>) {
    let crc = crc32c::crc32c(bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
}

/// The postcard payload of a value in either form, its checksum verified (at rest).
fn payload<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8]> {
    match bytes.split_first() {
        Some((&VALUE_V1, rest)) => Ok(rest),
        Some((&VALUE_V2, _)) => {
            let Some(body_len) = bytes.len().checked_sub(CRC_LEN).filter(|l| *l >= 1) else {
                return Err(StorageError::Codec(format!("{what} is truncated")));
            };
            let (body, crc) = bytes.split_at(body_len);
            let mut stored = [0u8; CRC_LEN];
            stored.copy_from_slice(crc);
            if crc32c::crc32c(body) != u32::from_le_bytes(stored) {
                return Err(StorageError::Codec(format!(
                    "{what} fails its checksum: the stored value is damaged"
                )));
            }
            Ok(&body[1..])
        }
        Some((version, _)) => Err(StorageError::Codec(format!(
            "{what} has value format version {version}; this binary understands {VALUE_V1} and {VALUE_V2}"
        ))),
        None => Err(StorageError::Codec(format!("{what} is empty"))),
    }
}

/// Decodes a value in either form (verifying the checksum of one at rest); refuses
/// unknown versions and trailing bytes.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    let rest = payload(bytes, what)?;
    let (value, tail) = postcard::take_from_bytes(rest)
        .map_err(|e| StorageError::Codec(format!("decoding {what}: {e}")))?;
    if !tail.is_empty() {
        return Err(StorageError::Codec(format!(
            "decoding {what}: {} unexpected trailing bytes",
            tail.len()
        )));
    }
    Ok(value)
}

/// The portable form of a value (for snapshots), its checksum verified.
pub(crate) fn to_portable(bytes: &[u8]) -> Result<Vec<u8>> {
    let rest = payload(bytes, "a state value")?;
    let mut out = Vec::with_capacity(rest.len() + 1);
    out.push(VALUE_V1);
    out.extend_from_slice(rest);
    Ok(out)
}

/// The at-rest form of a value in either form.
pub(crate) fn to_stored(bytes: &[u8]) -> Result<Vec<u8>> {
    let rest = payload(bytes, "a state value")?;
    let mut out = Vec::with_capacity(rest.len() + 1 + CRC_LEN);
    out.push(VALUE_V2);
    out.extend_from_slice(rest);
    seal(&mut out);
    Ok(out)
}

/// Whether `bytes` is a value in its at-rest form (not checked further).
pub(crate) fn is_stored_form(bytes: &[u8]) -> bool {
    bytes.first() == Some(&VALUE_V2)
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub(crate) fn record_key(key: &str) -> Vec<u8> {
    concat(&[RECORD, key.as_bytes()])
}

pub(crate) fn bucket_key(bucket: &str) -> Vec<u8> {
    concat(&[BUCKET, bucket.as_bytes()])
}

/// The prefix of every object key of `bucket`.
pub(crate) fn object_prefix(bucket: &str) -> Vec<u8> {
    // Names are bounded far below 4 GiB by the message limits; saturating keeps this total.
    let len = u32::try_from(bucket.len()).unwrap_or(u32::MAX);
    concat(&[OBJECT, &len.to_be_bytes(), bucket.as_bytes()])
}

pub(crate) fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = object_prefix(bucket);
    k.extend_from_slice(key.as_bytes());
    k
}

pub(crate) fn upload_key(upload_id: u128) -> Vec<u8> {
    concat(&[UPLOAD, &upload_id.to_be_bytes()])
}

pub(crate) fn upload_chunk_key(upload_id: u128, position: u64) -> Vec<u8> {
    concat(&[
        UPLOAD_CHUNK,
        &upload_id.to_be_bytes(),
        &position.to_be_bytes(),
    ])
}

pub(crate) fn refcount_key(hash: &Sha256Digest) -> Vec<u8> {
    concat(&[REFCOUNT, hash])
}

/// The chunk hash of a `c/` key.
pub(crate) fn refcount_hash(key: &[u8]) -> Option<Sha256Digest> {
    key.strip_prefix(REFCOUNT)?.try_into().ok()
}

/// The upload id of a `u/` key.
pub(crate) fn upload_id_of(key: &[u8]) -> Option<u128> {
    Some(u128::from_be_bytes(
        key.strip_prefix(UPLOAD)?.try_into().ok()?,
    ))
}

fn request_suffix(rid: &RequestId) -> Vec<u8> {
    concat(&[rid.client_id.as_bytes(), b"\0", &rid.seq.to_be_bytes()])
}

pub(crate) fn dedup_key(rid: &RequestId) -> Vec<u8> {
    concat(&[DEDUP, &request_suffix(rid)])
}

pub(crate) fn expiry_key(time_ms: u64, rid: &RequestId) -> Vec<u8> {
    concat(&[DEDUP_EXPIRY, &time_ms.to_be_bytes(), &request_suffix(rid)])
}

/// Splits an `e/` key into its time and the matching `q/` key.
pub(crate) fn parse_expiry_key(key: &[u8]) -> Option<(u64, Vec<u8>)> {
    let rest = key.strip_prefix(DEDUP_EXPIRY)?;
    if rest.len() < 8 + 1 + 8 {
        return None;
    }
    let (time, suffix) = rest.split_at(8);
    let time_ms = u64::from_be_bytes(time.try_into().ok()?);
    Some((time_ms, concat(&[DEDUP, suffix])))
}

/// Checks that a key belongs to a known table and its value decodes as that table's type;
/// used to refuse a snapshot this binary could not read before installing any of it.
pub(crate) fn validate_entry(key: &[u8], value: &[u8]) -> Result<()> {
    let bad = |why: &str| {
        Err(StorageError::Codec(format!(
            "state key {}: {why}",
            String::from_utf8_lossy(key)
        )))
    };
    let prefix = key.get(..PREFIX_LEN).unwrap_or(key);
    match prefix {
        p if p == RECORD => {
            if std::str::from_utf8(&key[PREFIX_LEN..]).is_err() {
                return bad("record key is not UTF-8");
            }
            decode::<RecordV1>(value, "record").map(drop)
        }
        p if p == BUCKET => decode::<BucketV1>(value, "bucket").map(drop),
        p if p == OBJECT => {
            let rest = &key[PREFIX_LEN..];
            let ok = rest.len() >= 4 && {
                let mut len = [0u8; 4];
                len.copy_from_slice(&rest[..4]);
                let bucket_len = u32::from_be_bytes(len) as usize;
                rest.len() >= 4 + bucket_len
                    && std::str::from_utf8(&rest[4..4 + bucket_len]).is_ok()
                    && std::str::from_utf8(&rest[4 + bucket_len..]).is_ok()
            };
            if !ok {
                return bad("malformed object key");
            }
            decode::<ObjectV1>(value, "object").map(drop)
        }
        p if p == UPLOAD => {
            if upload_id_of(key).is_none() {
                return bad("malformed upload key");
            }
            decode::<UploadV1>(value, "upload").map(drop)
        }
        p if p == UPLOAD_CHUNK => {
            if key.len() != PREFIX_LEN + 16 + 8 {
                return bad("malformed upload chunk key");
            }
            decode::<ChunkRefV1>(value, "upload chunk").map(drop)
        }
        p if p == REFCOUNT => {
            if refcount_hash(key).is_none() {
                return bad("malformed chunk reference key");
            }
            decode::<u64>(value, "chunk reference count").map(drop)
        }
        p if p == DEDUP => {
            if key.len() < PREFIX_LEN + 1 + 8 {
                return bad("malformed request id key");
            }
            decode::<DedupV1>(value, "request id").map(drop)
        }
        p if p == DEDUP_EXPIRY => {
            if parse_expiry_key(key).is_none() {
                return bad("malformed request expiry key");
            }
            decode::<()>(value, "request expiry").map(drop)
        }
        _ => bad("unknown table"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `encode` in the portable form (what snapshots carry, and what format 1 stored).
    fn encode_v1<T: Serialize>(value: &T) -> Result<Vec<u8>> {
        to_portable(&encode(value)?)
    }

    /// Frozen v1 (portable) bytes: if one of these changes, the snapshot format changed,
    /// which needs a new version byte and a migration, not an edit of this test.
    #[test]
    fn frozen_v1_bytes() {
        let record = RecordV1 {
            revision: 300,
            create_revision: 7,
            value: Bytes::from_static(b"hi"),
        };
        assert_eq!(
            encode_v1(&record).unwrap(),
            [1, 0xac, 0x02, 7, 2, b'h', b'i']
        );
        assert_eq!(
            decode::<RecordV1>(&[1, 0xac, 0x02, 7, 2, b'h', b'i'], "r").unwrap(),
            record
        );

        let object = ObjectV1 {
            revision: 9,
            size: 5,
            sha256: [0xaa; 32],
            chunks: vec![ChunkRefV1 {
                hash: [0xbb; 32],
                len: 5,
            }],
        };
        let mut expected = vec![1, 9, 5];
        expected.extend([0xaa; 32]);
        expected.push(1);
        expected.extend([0xbb; 32]);
        expected.push(5);
        assert_eq!(encode_v1(&object).unwrap(), expected);

        let upload = UploadV1 {
            last_active_ms: 1,
            chunk_count: 2,
            total_bytes: 3,
        };
        assert_eq!(encode_v1(&upload).unwrap(), [1, 1, 2, 3]);
        assert_eq!(encode_v1(&BucketV1 { create_revision: 4 }).unwrap(), [1, 4]);
        assert_eq!(encode_v1(&5u64).unwrap(), [1, 5]);
        assert_eq!(encode_v1(&()).unwrap(), [1]);

        let dedup = DedupV1 {
            time_ms: 2,
            result: ResultV1::Err(ErrV1::RevisionMismatch {
                expected: 3,
                current: 4,
            }),
        };
        assert_eq!(encode_v1(&dedup).unwrap(), [1, 2, 1, 0, 3, 4]);
        let done = DedupV1 {
            time_ms: 0,
            result: ResultV1::Ok(OkV1::Done),
        };
        assert_eq!(encode_v1(&done).unwrap(), [1, 0, 0, 2]);
    }

    /// Frozen v2 (at-rest) bytes: the portable bytes with version 2 and a CRC32C trailer.
    #[test]
    fn frozen_v2_bytes() {
        let record = RecordV1 {
            revision: 300,
            create_revision: 7,
            value: Bytes::from_static(b"hi"),
        };
        let stored = encode(&record).unwrap();
        let body = [2, 0xac, 0x02, 7, 2, b'h', b'i'];
        assert_eq!(&stored[..7], body);
        assert_eq!(stored[7..], crc32c::crc32c(&body).to_le_bytes());
        assert_eq!(decode::<RecordV1>(&stored, "r").unwrap(), record);
        assert_eq!(
            to_portable(&stored).unwrap(),
            [1, 0xac, 0x02, 7, 2, b'h', b'i']
        );
        assert_eq!(to_stored(&to_portable(&stored).unwrap()).unwrap(), stored);
        assert!(is_stored_form(&stored) && !is_stored_form(&to_portable(&stored).unwrap()));
    }

    #[test]
    fn a_damaged_value_at_rest_fails_its_checksum() {
        let stored = encode(&5u64).unwrap();
        for i in 1..stored.len() {
            let mut bad = stored.clone();
            bad[i] ^= 0x04;
            let err = decode::<u64>(&bad, "x").unwrap_err().to_string();
            assert!(err.contains("checksum"), "byte {i}: {err}");
            assert!(to_portable(&bad).is_err());
        }
        assert!(decode::<u64>(&stored[..stored.len() - 1], "x").is_err());
        assert!(
            decode::<u64>(&[2, 1, 2], "x").is_err(),
            "too short for a checksum"
        );
    }

    #[test]
    fn decode_refuses_unknown_version_and_trailing_bytes() {
        assert!(decode::<u64>(&[3, 5], "x").is_err());
        assert!(decode::<u64>(&[1, 5, 0], "x").is_err());
        assert!(decode::<u64>(&[], "x").is_err());
        assert_eq!(decode::<u64>(&[1, 5], "x").unwrap(), 5);
        let mut extra = vec![2, 5, 0];
        seal(&mut extra);
        assert!(decode::<u64>(&extra, "x").is_err());
    }

    #[test]
    fn keys_are_unambiguous_and_ordered() {
        assert_ne!(object_key("a\0b", "c"), object_key("a", "b\0c"));
        assert!(object_key("bkt", "a") < object_key("bkt", "b"));
        assert!(object_key("bkt", "a").starts_with(&object_prefix("bkt")));
        assert!(!object_key("bkt2", "a").starts_with(&object_prefix("bkt")));
        let rid = RequestId {
            client_id: "c".into(),
            seq: 258,
        };
        let (t, q) = parse_expiry_key(&expiry_key(1000, &rid)).unwrap();
        assert_eq!((t, q), (1000, dedup_key(&rid)));
        assert!(expiry_key(999, &rid) < expiry_key(1000, &rid));
        assert!(upload_chunk_key(1, 2) < upload_chunk_key(1, 256));
        assert_eq!(refcount_hash(&refcount_key(&[3; 32])), Some([3; 32]));
        assert_eq!(upload_id_of(&upload_key(77)), Some(77));
    }

    #[test]
    fn results_round_trip() {
        let results: Vec<CommandResult> = vec![
            Ok(OpOk::Revision(1)),
            Ok(OpOk::Object {
                revision: 2,
                size: 3,
                sha256: [4; 32],
                chunk_count: 5,
            }),
            Ok(OpOk::Done),
            Err(OpError::RevisionMismatch {
                expected: 1,
                current: 2,
            }),
            Err(OpError::NotFound("n".into())),
            Err(OpError::AlreadyExists("a".into())),
            Err(OpError::BucketNotEmpty("b".into())),
            Err(OpError::BadUpload("u".into())),
            Err(OpError::ChecksumMismatch("c".into())),
        ];
        for r in results {
            let stored = encode(&ResultV1::from(&r)).unwrap();
            let back: CommandResult = decode::<ResultV1>(&stored, "r").unwrap().into();
            assert_eq!(back, r);
        }
    }
}
