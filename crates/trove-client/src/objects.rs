//! Buckets and objects: unary calls, and the client-streaming upload.
//!
//! An upload sends a header, then data messages of exactly [`CHUNK_SIZE_BYTES`] (the last
//! may be shorter), then a trailer with the SHA-256 of everything sent. The reader feeds
//! a bounded channel, so at most a few chunks are in memory. The bytes read so far are
//! kept for replay until they exceed [`UPLOAD_REPLAY_BYTES`]: an upload that fails with a
//! retryable error early (say, a follower redirecting at the header) is sent again with
//! the same request id; once the replay buffer has been dropped, it is not retried.
//! In-memory uploads are always replayable; an attempt that got data through before it
//! failed (a leader change mid-upload) restarts the retry budget, so a long upload is
//! not given up for the time it spent streaming.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use trove_proto::v1 as pb;
use trove_proto::v1::put_object_request::Part;
use trove_types::Sha256;
use trove_types::TroveError;
use trove_types::limits::{CHUNK_SIZE_BYTES, MAX_OBJECT_SIZE_BYTES};
use trove_types::validate;

use crate::retry::{Idempotency, map_status};
use crate::types::{
    BucketInfo, Consistency, ObjectInfo, ObjectPage, ProgressFn, next_key, object_info,
};
use crate::{Client, Result, objects_client};

/// Upload messages queued ahead of the network (each up to one chunk).
const UPLOAD_QUEUE_MESSAGES: usize = 4;
/// More than the queue, the gRPC encoder and an HTTP/2 stream window hold between the
/// producer and a server that reads nothing; an attempt that sent more than this had the
/// server take data (progress).
const UPLOAD_BUFFERED_BYTES: u64 = (2 * UPLOAD_QUEUE_MESSAGES * CHUNK_SIZE_BYTES) as u64
    + trove_types::limits::HTTP2_STREAM_WINDOW_BYTES as u64;
/// Bytes of a streamed upload kept so it can be sent again after a retryable failure.
pub const UPLOAD_REPLAY_BYTES: u64 = 8 * CHUNK_SIZE_BYTES as u64;

impl Client {
    /// Creates a bucket; returns the revision of the creation.
    pub async fn create_bucket(&self, bucket: &str) -> Result<u64> {
        validate::bucket_name(bucket)?;
        let msg = pb::CreateBucketRequest {
            bucket: bucket.to_string(),
            request_id: Some(self.inner.next_request_id()),
        };
        let resp = self
            .unary(Idempotency::Safe, |ch| {
                let req = self.request(msg.clone());
                async move { objects_client(ch).create_bucket(req).await }
            })
            .await?;
        Ok(resp.revision)
    }

    /// Deletes an empty bucket; returns the revision of the deletion.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<u64> {
        validate::bucket_name(bucket)?;
        let msg = pb::DeleteBucketRequest {
            bucket: bucket.to_string(),
            request_id: Some(self.inner.next_request_id()),
        };
        let resp = self
            .unary(Idempotency::Safe, |ch| {
                let req = self.request(msg.clone());
                async move { objects_client(ch).delete_bucket(req).await }
            })
            .await?;
        Ok(resp.revision)
    }

    /// Lists all buckets.
    pub async fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        let msg = pb::ListBucketsRequest {
            consistency: Consistency::Linearizable.to_pb(),
        };
        let resp = self
            .unary(Idempotency::Safe, |ch| {
                let req = self.request(msg);
                async move { objects_client(ch).list_buckets(req).await }
            })
            .await?;
        Ok(resp
            .buckets
            .into_iter()
            .map(|b| BucketInfo {
                name: b.name,
                create_revision: b.create_revision,
            })
            .collect())
    }

    /// An object's metadata.
    pub async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        consistency: Consistency,
    ) -> Result<ObjectInfo> {
        validate::bucket_name(bucket)?;
        validate::object_key(key)?;
        let msg = pb::HeadObjectRequest {
            bucket: bucket.to_string(),
            key: key.to_string(),
            consistency: consistency.to_pb(),
        };
        let resp = self
            .unary(Idempotency::Safe, |ch| {
                let req = self.request(msg.clone());
                async move { objects_client(ch).head(req).await }
            })
            .await?;
        object_info(resp)
    }

    /// Deletes an object; returns the revision of the deletion.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<u64> {
        validate::bucket_name(bucket)?;
        validate::object_key(key)?;
        let msg = pb::DeleteObjectRequest {
            bucket: bucket.to_string(),
            key: key.to_string(),
            request_id: Some(self.inner.next_request_id()),
        };
        let resp = self
            .unary(Idempotency::Safe, |ch| {
                let req = self.request(msg.clone());
                async move { objects_client(ch).delete(req).await }
            })
            .await?;
        Ok(resp.revision)
    }

    /// Lists objects of a bucket in key order, like [`Client::list_records`].
    pub async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        start_at: &str,
        limit: u32,
    ) -> Result<ObjectPage> {
        validate::bucket_name(bucket)?;
        let msg = pb::ListObjectsRequest {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            start_after_or_at: start_at.to_string(),
            limit,
            consistency: Consistency::Linearizable.to_pb(),
        };
        let resp = self
            .unary(Idempotency::Safe, |ch| {
                let req = self.request(msg.clone());
                async move { objects_client(ch).list(req).await }
            })
            .await?;
        Ok(ObjectPage {
            objects: resp
                .objects
                .into_iter()
                .map(object_info)
                .collect::<Result<_>>()?,
            next: next_key(resp.next),
        })
    }

    /// Uploads an object from `reader`. `size`, when known, is sent in the header and
    /// checked against the bytes read. `progress` is called with the bytes sent so far.
    /// Never holds more than a few chunks of the object in memory, so the upload is
    /// retried only while the part read so far still fits the replay buffer.
    pub async fn put_object<R: AsyncRead + Unpin + Send + 'static>(
        &self,
        bucket: &str,
        key: &str,
        reader: R,
        size: Option<u64>,
        progress: Option<ProgressFn>,
    ) -> Result<ObjectInfo> {
        let upload = Upload::from_reader(Box::new(reader), UPLOAD_REPLAY_BYTES);
        self.upload(bucket, key, size, upload, progress).await
    }

    /// Uploads an object held in memory; retried safely (same request id) on retryable
    /// errors.
    pub async fn put_object_bytes(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
    ) -> Result<ObjectInfo> {
        let size = data.len() as u64;
        self.upload(bucket, key, Some(size), Upload::from_bytes(data), None)
            .await
    }

    async fn upload(
        &self,
        bucket: &str,
        key: &str,
        size: Option<u64>,
        mut upload: Upload,
        progress: Option<ProgressFn>,
    ) -> Result<ObjectInfo> {
        validate::bucket_name(bucket)?;
        validate::object_key(key)?;
        if let Some(n) = size.filter(|&n| n > MAX_OBJECT_SIZE_BYTES) {
            return Err(TroveError::invalid(format!(
                "object is {n} bytes; the limit is {MAX_OBJECT_SIZE_BYTES}"
            )));
        }
        upload.declared_size = size;
        let header = pb::PutObjectRequest {
            part: Some(Part::Header(pb::PutObjectHeader {
                bucket: bucket.to_string(),
                key: key.to_string(),
                size,
                request_id: Some(self.inner.next_request_id()),
            })),
        };
        let mut attempts = self.inner.attempts(Idempotency::Safe);
        loop {
            let err = match self
                .upload_attempt(&attempts.node(), &header, &mut upload, progress.as_ref())
                .await
            {
                Ok((metadata, info)) => {
                    attempts.answered(&metadata);
                    return Ok(info);
                }
                Err(AttemptError::Local(e)) => return Err(e),
                Err(AttemptError::Remote(e)) => e,
            };
            if upload.sent_this_attempt > UPLOAD_BUFFERED_BYTES {
                attempts.progressed();
            }
            attempts.failed(err, upload.replayable()).await?;
        }
    }

    /// One attempt: streams header, replayed chunks, new chunks and trailer to `node`.
    /// Returns the answer's metadata (it names the leader if `node` forwarded the upload)
    /// and the stored object's info.
    async fn upload_attempt(
        &self,
        node: &crate::conn::Node,
        header: &pb::PutObjectRequest,
        upload: &mut Upload,
        progress: Option<&ProgressFn>,
    ) -> std::result::Result<(tonic::metadata::MetadataMap, ObjectInfo), AttemptError> {
        let idle = self.inner.cfg.request_timeout;
        let (tx, rx) = mpsc::channel(UPLOAD_QUEUE_MESSAGES);
        let mut client = objects_client(node.channel());
        // No deadline on the whole call (an upload may take long); idle limits instead.
        let call = client.put(tonic::Request::new(ReceiverStream::new(rx)));
        let producer = produce(upload, tx, header.clone(), progress, idle);
        tokio::pin!(call, producer);
        let mut answer_deadline: Option<tokio::time::Instant> = None;
        let mut produced = false;
        let result = loop {
            tokio::select! {
                r = &mut call => break r,
                end = &mut producer, if !produced => {
                    produced = true;
                    match end {
                        Produced::Finished => {
                            answer_deadline = Some(tokio::time::Instant::now() + idle);
                        }
                        Produced::ReceiverGone => {}
                        Produced::Stalled => {
                            return Err(AttemptError::Remote(TroveError::DeadlineExceeded(format!(
                                "{} accepted no upload data for {idle:?}", node.addr
                            ))));
                        }
                        Produced::Failed(e) => {
                            // The stream has ended without a trailer: the server discards
                            // the upload. Let it say so, briefly, then report our error.
                            let _ = tokio::time::timeout(idle, &mut call).await;
                            return Err(AttemptError::Local(e));
                        }
                    }
                }
                _ = sleep_until_opt(answer_deadline) => {
                    return Err(AttemptError::Remote(TroveError::DeadlineExceeded(format!(
                        "no answer from {} within {idle:?} after the upload ended", node.addr
                    ))));
                }
            }
        };
        match result {
            Ok(resp) => match resp.into_parts() {
                (metadata, pb::PutObjectResponse { object: Some(info) }, _) => {
                    let info = object_info(info).map_err(AttemptError::Local)?;
                    Ok((metadata, info))
                }
                (_, pb::PutObjectResponse { object: None }, _) => Err(AttemptError::Local(
                    TroveError::internal("the server's put response has no object info"),
                )),
            },
            Err(st) => Err(AttemptError::Remote(map_status(&st))),
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Why an upload attempt failed: `Local` errors (the reader, the size, a bad answer) are
/// final; `Remote` ones go through the retry policy.
enum AttemptError {
    Local(TroveError),
    Remote(TroveError),
}

/// How the producer of one attempt ended.
enum Produced {
    /// Header, data and trailer are queued.
    Finished,
    /// The call ended first (its error tells why).
    ReceiverGone,
    /// The server accepted nothing for the idle timeout.
    Stalled,
    /// The source failed or did not match the declared size; no trailer was sent.
    Failed(TroveError),
}

/// The data of one upload, read once, with what is needed to send it again.
struct Upload {
    /// `None` once the source is exhausted (or for in-memory data).
    reader: Option<Box<dyn AsyncRead + Unpin + Send>>,
    /// A chunk being filled; kept here so a cancelled read loses nothing.
    pending: BytesMut,
    /// Every chunk read so far, while their total fits `replay_cap`; `None` after.
    kept: Option<Vec<Bytes>>,
    kept_bytes: u64,
    replay_cap: u64,
    read_bytes: u64,
    /// SHA-256 of the bytes read so far.
    hasher: Sha256,
    declared_size: Option<u64>,
    /// Data bytes the current (or last) attempt queued for the server.
    sent_this_attempt: u64,
}

impl Upload {
    fn from_reader(reader: Box<dyn AsyncRead + Unpin + Send>, replay_cap: u64) -> Upload {
        Upload {
            reader: Some(reader),
            pending: BytesMut::new(),
            kept: Some(Vec::new()),
            kept_bytes: 0,
            replay_cap,
            read_bytes: 0,
            hasher: Sha256::new(),
            declared_size: None,
            sent_this_attempt: 0,
        }
    }

    fn from_bytes(data: Bytes) -> Upload {
        let mut up = Upload::from_reader(Box::new(tokio::io::empty()), u64::MAX);
        up.reader = None;
        up.hasher.update(&data);
        up.read_bytes = data.len() as u64;
        up.kept_bytes = up.read_bytes;
        let mut rest = data;
        let mut chunks = Vec::with_capacity(rest.len().div_ceil(CHUNK_SIZE_BYTES));
        while !rest.is_empty() {
            chunks.push(rest.split_to(rest.len().min(CHUNK_SIZE_BYTES)));
        }
        up.kept = Some(chunks);
        up
    }

    fn replayable(&self) -> bool {
        self.kept.is_some()
    }

    /// Reads the next new chunk (exactly one chunk size unless it is the last).
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(None);
        };
        while self.pending.len() < CHUNK_SIZE_BYTES {
            self.pending.reserve(CHUNK_SIZE_BYTES - self.pending.len());
            let mut limited = (&mut *reader).take((CHUNK_SIZE_BYTES - self.pending.len()) as u64);
            if limited.read_buf(&mut self.pending).await? == 0 {
                self.reader = None;
                break;
            }
        }
        if self.pending.is_empty() {
            return Ok(None);
        }
        let chunk = self.pending.split().freeze();
        self.hasher.update(&chunk);
        self.read_bytes += chunk.len() as u64;
        if let Some(kept) = self.kept.as_mut() {
            if self.kept_bytes + chunk.len() as u64 <= self.replay_cap {
                self.kept_bytes += chunk.len() as u64;
                kept.push(chunk.clone());
            } else {
                self.kept = None;
            }
        }
        Ok(Some(chunk))
    }

    /// Checks the bytes read against the declared size (`done`: the source is exhausted).
    fn check_size(&self, done: bool) -> std::result::Result<(), TroveError> {
        let read = self.read_bytes;
        match self.declared_size {
            Some(n) if read > n || (done && read != n) => Err(TroveError::invalid(format!(
                "the source gave {}{read} bytes but the declared size is {n}",
                if done { "" } else { "at least " }
            ))),
            None if read > MAX_OBJECT_SIZE_BYTES => Err(TroveError::invalid(format!(
                "object exceeds the limit of {MAX_OBJECT_SIZE_BYTES} bytes"
            ))),
            _ => Ok(()),
        }
    }
}

/// Feeds one attempt's request stream: header, the kept chunks, new chunks, trailer.
async fn produce(
    up: &mut Upload,
    tx: mpsc::Sender<pb::PutObjectRequest>,
    header: pb::PutObjectRequest,
    progress: Option<&ProgressFn>,
    idle: Duration,
) -> Produced {
    let send = |msg: pb::PutObjectRequest| {
        let tx = tx.clone();
        async move {
            match tokio::time::timeout(idle, tx.send(msg)).await {
                Ok(Ok(())) => None,
                Ok(Err(_)) => Some(Produced::ReceiverGone),
                Err(_) => Some(Produced::Stalled),
            }
        }
    };
    let data = |b: Bytes| pb::PutObjectRequest {
        part: Some(Part::Data(b)),
    };
    if let Some(end) = send(header).await {
        return end;
    }
    let mut sent = 0u64;
    up.sent_this_attempt = 0;
    let replay = up.kept.clone().unwrap_or_default();
    for chunk in replay {
        sent += chunk.len() as u64;
        if let Some(end) = send(data(chunk)).await {
            return end;
        }
        up.sent_this_attempt = sent;
        if let Some(p) = progress {
            p(sent);
        }
    }
    loop {
        let chunk = match up.next_chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                return Produced::Failed(TroveError::Cancelled(format!(
                    "reading the object's data failed: {e}"
                )));
            }
        };
        if let Err(e) = up.check_size(false) {
            return Produced::Failed(e);
        }
        sent += chunk.len() as u64;
        if let Some(end) = send(data(chunk)).await {
            return end;
        }
        up.sent_this_attempt = sent;
        if let Some(p) = progress {
            p(sent);
        }
    }
    if let Err(e) = up.check_size(true) {
        return Produced::Failed(e);
    }
    let trailer = pb::PutObjectRequest {
        part: Some(Part::Trailer(pb::PutObjectTrailer {
            sha256: Bytes::copy_from_slice(&up.hasher.clone().finalize()),
        })),
    };
    send(trailer).await.unwrap_or(Produced::Finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    async fn drain(up: &mut Upload) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(c) = up.next_chunk().await.expect("read") {
            out.push(c);
        }
        out
    }

    #[tokio::test]
    async fn reader_chunks_are_exactly_chunk_sized() {
        let data = pattern(2 * CHUNK_SIZE_BYTES + 123);
        // A reader that returns small pieces must still yield full chunks.
        let reader = piecewise_reader(data.clone(), 1000);
        let mut up = Upload::from_reader(Box::new(reader), UPLOAD_REPLAY_BYTES);
        let chunks = drain(&mut up).await;
        let sizes: Vec<_> = chunks.iter().map(Bytes::len).collect();
        assert_eq!(sizes, vec![CHUNK_SIZE_BYTES, CHUNK_SIZE_BYTES, 123]);
        assert_eq!(chunks.concat(), data);
        assert_eq!(
            up.hasher.clone().finalize().as_slice(),
            Sha256::digest(&data).as_slice()
        );
        assert!(up.replayable());
        assert_eq!(up.kept.as_ref().map(Vec::len), Some(3));
    }

    #[tokio::test]
    async fn replay_buffer_is_dropped_past_the_cap() {
        let data = pattern(3 * CHUNK_SIZE_BYTES);
        let reader = piecewise_reader(data, 64 * 1024);
        let mut up = Upload::from_reader(Box::new(reader), 2 * CHUNK_SIZE_BYTES as u64);
        up.next_chunk().await.expect("read");
        up.next_chunk().await.expect("read");
        assert!(up.replayable());
        up.next_chunk().await.expect("read");
        assert!(!up.replayable());
    }

    #[tokio::test]
    async fn bytes_uploads_are_pre_chunked() {
        let data = Bytes::from(pattern(CHUNK_SIZE_BYTES + 1));
        let mut up = Upload::from_bytes(data.clone());
        assert!(up.next_chunk().await.expect("read").is_none());
        let kept = up.kept.clone().expect("kept");
        assert_eq!(
            kept.iter().map(Bytes::len).collect::<Vec<_>>(),
            vec![CHUNK_SIZE_BYTES, 1]
        );
        up.declared_size = Some(data.len() as u64);
        assert!(up.check_size(true).is_ok());
        up.declared_size = Some(data.len() as u64 + 1);
        assert!(up.check_size(true).is_err());
        assert!(up.check_size(false).is_ok());
        up.declared_size = Some(1);
        assert!(up.check_size(false).is_err());
    }

    /// A reader that hands out `data` in pieces of at most `piece` bytes, through a pipe.
    fn piecewise_reader(data: Vec<u8>, piece: usize) -> impl AsyncRead + Unpin + Send {
        let (mut w, r) = tokio::io::duplex(piece);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for c in data.chunks(piece) {
                if w.write_all(c).await.is_err() {
                    return;
                }
            }
        });
        r
    }
}
