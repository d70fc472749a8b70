//! Object downloads: a server stream that starts with the object's metadata, then the
//! bytes in order. The [`ObjectReader`] verifies the SHA-256 when it has read the whole
//! object, and resumes from the last byte received when a stream breaks.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tonic::codec::Streaming;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use trove_proto::v1 as pb;
use trove_proto::v1::get_object_response::Part;
use trove_types::Sha256;
use trove_types::{TroveError, validate};

use crate::retry::{Idempotency, map_status};
use crate::types::{Consistency, ObjectInfo, object_info};
use crate::{Client, Result, objects_client};

/// Resumes in a row that bring no new byte before a download gives up.
const MAX_RESUMES_WITHOUT_PROGRESS: u32 = 3;
/// Most bytes `get_object_bytes` reserves up front, whatever size the server claims.
const MAX_PREALLOCATION_BYTES: u64 = 64 * 1024 * 1024;

impl Client {
    /// Opens a download of an object, or of the byte range `[start, end)` of it (an `end`
    /// past the object's size, e.g. `u64::MAX`, means "to the end"). The reader's `info`
    /// is available at once; read the bytes with [`ObjectReader::next_chunk`] or
    /// [`ObjectReader::copy_to`].
    pub async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<(u64, u64)>,
        consistency: Consistency,
    ) -> Result<ObjectReader> {
        validate::bucket_name(bucket)?;
        validate::object_key(key)?;
        if let Some((start, end)) = range
            && end <= start
        {
            return Err(TroveError::invalid(format!(
                "empty byte range {start}-{end} (the end is exclusive and must be larger than the start)"
            )));
        }
        let (start, end) = range.unwrap_or((0, u64::MAX));
        let request = pb::GetObjectRequest {
            bucket: bucket.to_string(),
            key: key.to_string(),
            range_start: start,
            // 0 = to the end of the object.
            range_end: if end == u64::MAX { 0 } else { end },
            consistency: consistency.to_pb(),
        };
        let (info, stream) = self.open_download(&request).await?;
        if start > info.size || (start == info.size && info.size > 0) {
            return Err(TroveError::invalid(format!(
                "range starts at byte {start}, past the end of the {}-byte object",
                info.size
            )));
        }
        let end = end.min(info.size);
        let whole = start == 0 && end == info.size;
        Ok(ObjectReader {
            client: self.clone(),
            request,
            info,
            stream,
            offset: start,
            end,
            hasher: whole.then(Sha256::new),
            done: false,
            resumes_without_progress: 0,
        })
    }

    /// Reads a whole object into memory and verifies its SHA-256.
    pub async fn get_object_bytes(&self, bucket: &str, key: &str) -> Result<(ObjectInfo, Bytes)> {
        let mut reader = self
            .get_object(bucket, key, None, Consistency::Linearizable)
            .await?;
        let mut buf =
            BytesMut::with_capacity(reader.info.size.min(MAX_PREALLOCATION_BYTES) as usize);
        while let Some(chunk) = reader.next_chunk().await? {
            buf.extend_from_slice(&chunk);
        }
        Ok((reader.info, buf.freeze()))
    }

    /// Starts a download stream and reads its first message (the info), with retries.
    async fn open_download(
        &self,
        request: &pb::GetObjectRequest,
    ) -> Result<(ObjectInfo, Streaming<pb::GetObjectResponse>)> {
        let idle = self.inner.cfg.request_timeout;
        let mut attempts = self.inner.attempts(Idempotency::Safe);
        loop {
            let node = attempts.node();
            let err = match tokio::time::timeout(idle, open_once(node.channel(), request.clone()))
                .await
            {
                Ok(Ok((metadata, info, stream))) => {
                    attempts.answered(&metadata);
                    return Ok((info, stream));
                }
                Ok(Err(e)) => e,
                Err(_) => TroveError::DeadlineExceeded(format!(
                    "{} did not start the download within {idle:?}",
                    node.addr
                )),
            };
            attempts.failed(err, true).await?;
        }
    }
}

/// Opens a download on one node: the response's metadata (it names the leader if the
/// node forwarded the request), the object's info and the rest of the stream.
async fn open_once(
    ch: Channel,
    request: pb::GetObjectRequest,
) -> Result<(MetadataMap, ObjectInfo, Streaming<pb::GetObjectResponse>)> {
    let (metadata, mut stream, _) = objects_client(ch)
        .get(request)
        .await
        .map_err(|st| map_status(&st))?
        .into_parts();
    match stream.message().await.map_err(|st| map_status(&st))? {
        Some(pb::GetObjectResponse {
            part: Some(Part::Info(info)),
        }) => Ok((metadata, object_info(info)?, stream)),
        Some(_) => Err(TroveError::internal(
            "the download did not start with the object's info",
        )),
        None => Err(TroveError::unavailable(
            "the download ended before the object's info",
        )),
    }
}

/// An object being downloaded.
pub struct ObjectReader {
    /// Metadata of the object (the whole object, even for a range).
    pub info: ObjectInfo,
    client: Client,
    request: pb::GetObjectRequest,
    stream: Streaming<pb::GetObjectResponse>,
    /// Position of the next byte to receive.
    offset: u64,
    /// End (exclusive) of the bytes to receive.
    end: u64,
    /// Hash of the bytes so far, when the whole object is being read.
    hasher: Option<Sha256>,
    done: bool,
    resumes_without_progress: u32,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("info", &self.info)
            .field("offset", &self.offset)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl ObjectReader {
    /// Offset of the next byte to be returned.
    pub fn position(&self) -> u64 {
        self.offset
    }

    /// End (exclusive) of the bytes this reader returns.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The next piece of the object, or `None` at the end. At the end of a whole-object
    /// read the SHA-256 is checked, and a mismatch is a `DataLoss` error.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        let idle = self.client.inner.cfg.request_timeout;
        loop {
            if self.done {
                return Ok(None);
            }
            let err = match tokio::time::timeout(idle, self.stream.message()).await {
                Ok(Ok(Some(msg))) => match msg.part {
                    Some(Part::Data(b)) if b.is_empty() => continue,
                    Some(Part::Data(b)) => return self.accept(b).map(Some),
                    Some(Part::Info(_)) => {
                        return Err(TroveError::internal(
                            "the download sent the object's info twice",
                        ));
                    }
                    None => continue,
                },
                Ok(Ok(None)) if self.offset == self.end => {
                    self.finish()?;
                    return Ok(None);
                }
                Ok(Ok(None)) => TroveError::unavailable(format!(
                    "the download ended at byte {} of {}",
                    self.offset, self.end
                )),
                Ok(Err(st)) => map_status(&st),
                Err(_) => TroveError::DeadlineExceeded(format!("no data for {idle:?}")),
            };
            self.resume(err).await?;
        }
    }

    /// Writes the rest of the object to `w` and returns the number of bytes written.
    /// A whole-object read is verified before this returns (the bytes are written as
    /// they arrive, so on `DataLoss` the writer has already seen them).
    pub async fn copy_to<W: AsyncWrite + Unpin>(mut self, mut w: W) -> Result<u64> {
        let mut written = 0u64;
        let write_err =
            |e: std::io::Error| TroveError::Cancelled(format!("writing the object failed: {e}"));
        while let Some(chunk) = self.next_chunk().await? {
            w.write_all(&chunk).await.map_err(write_err)?;
            written += chunk.len() as u64;
        }
        w.flush().await.map_err(write_err)?;
        Ok(written)
    }

    fn accept(&mut self, b: Bytes) -> Result<Bytes> {
        let len = b.len() as u64;
        if len > self.end - self.offset {
            return Err(TroveError::internal(format!(
                "the server sent {len} bytes at offset {} but only {} were expected",
                self.offset,
                self.end - self.offset
            )));
        }
        self.offset += len;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&b);
        }
        self.resumes_without_progress = 0;
        Ok(b)
    }

    fn finish(&mut self) -> Result<()> {
        self.done = true;
        if let Some(h) = self.hasher.take() {
            let got: [u8; 32] = h.finalize();
            if got != self.info.sha256 {
                return Err(TroveError::DataLoss(format!(
                    "{}/{}: the received bytes have SHA-256 {} but the object's is {}",
                    self.info.bucket,
                    self.info.key,
                    hex::encode(got),
                    self.info.sha256_hex()
                )));
            }
        }
        Ok(())
    }

    /// After a broken stream: reopen it from the next byte, if the error is retryable
    /// and the object has not changed.
    async fn resume(&mut self, err: TroveError) -> Result<()> {
        if !err.is_retryable() {
            return Err(err);
        }
        if self.offset == self.end {
            return self.finish();
        }
        self.resumes_without_progress += 1;
        if self.resumes_without_progress > MAX_RESUMES_WITHOUT_PROGRESS {
            return Err(err);
        }
        tracing::debug!(error = %err, offset = self.offset, "resuming the download");
        let mut request = self.request.clone();
        request.range_start = self.offset;
        let (info, stream) = self.client.open_download(&request).await?;
        if info.revision != self.info.revision || info.sha256 != self.info.sha256 {
            return Err(TroveError::FailedPrecondition {
                message: format!(
                    "{}/{} changed during the download (revision {} became {}); download it again",
                    self.info.bucket, self.info.key, self.info.revision, info.revision
                ),
                current_revision: None,
            });
        }
        self.stream = stream;
        Ok(())
    }
}
