//! `trove.v1.Objects`: buckets, and objects streamed in chunks.
//!
//! Upload: the leader cuts the incoming bytes into 1 MiB chunks, proposes each as a
//! `PutChunk` entry with at most `UPLOAD_CHUNKS_IN_FLIGHT` in flight (backpressure to
//! the client), checks the whole-object SHA-256 from the trailer, then proposes the
//! manifest (`CommitObject`). Nothing is visible before the manifest commits; an upload
//! that fails, is cancelled or is cut off is aborted (its chunks released) by a guard,
//! and any upload a crashed leader left behind expires.
//!
//! Download: chunks are read from their files and verified against their hashes before
//! a byte is sent; a corrupt chunk ends the stream with DATA_LOSS.

use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::Future;

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};
use trove_proto::v1::objects_client::ObjectsClient;
use trove_proto::v1::objects_server::Objects;
use trove_proto::v1::{
    BucketInfo, CreateBucketRequest, CreateBucketResponse, DeleteBucketRequest,
    DeleteBucketResponse, DeleteObjectRequest, DeleteObjectResponse, GetObjectRequest,
    GetObjectResponse, HeadObjectRequest, ListBucketsRequest, ListBucketsResponse,
    ListObjectsRequest, ListObjectsResponse, ObjectInfo, PutObjectRequest, PutObjectResponse,
    get_object_response, put_object_request,
};
use trove_storage::state::ObjectMeta;
use trove_types::Sha256;
use trove_types::limits::{
    CHUNK_SIZE_BYTES, MAX_CLIENT_MESSAGE_BYTES, MAX_OBJECT_SIZE_BYTES, UPLOAD_CHUNKS_IN_FLIGHT,
};
use trove_types::{ChunkRef, CommandResult, Op, OpOk, TroveError, validate};

use super::{is_linearizable, request_id, status};
use crate::node::{NodeRef, Route};

type GetStream = Pin<Box<dyn Stream<Item = Result<GetObjectResponse, Status>> + Send>>;

/// The objects service.
pub struct ObjectsService {
    node: NodeRef,
}

impl ObjectsService {
    /// A service backed by `node`.
    pub fn new(node: NodeRef) -> Self {
        ObjectsService { node }
    }
}

fn client(ch: tonic::transport::Channel) -> ObjectsClient<tonic::transport::Channel> {
    ObjectsClient::new(ch)
        .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
}

fn internal(e: impl std::fmt::Display) -> Status {
    status(TroveError::internal(e.to_string()))
}

fn info(bucket: &str, key: &str, m: &ObjectMeta) -> ObjectInfo {
    ObjectInfo {
        bucket: bucket.to_string(),
        key: key.to_string(),
        size: m.size,
        sha256: Bytes::copy_from_slice(&m.sha256),
        revision: m.revision,
        chunk_count: m.chunks.len() as u32,
    }
}

/// Aborts an upload when dropped unless disarmed: covers errors, cancelled handlers
/// and clients that vanish mid-stream.
struct AbortGuard {
    node: NodeRef,
    upload_id: u128,
    armed: bool,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let node = self.node.clone();
        let upload_id = self.upload_id;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = node.propose(None, Op::AbortUpload { upload_id }).await {
                    tracing::debug!(error = %e, upload = %format!("{upload_id:x}"), "abort of a failed upload not proposed; it will expire");
                }
            });
        }
    }
}

type ChunkOutcome = Pin<Box<dyn Future<Output = Result<(u64, CommandResult), TroveError>> + Send>>;

/// Submits one chunk of an upload to Raft (in order) and records it in the manifest.
async fn submit_chunk(
    node: &NodeRef,
    upload_id: u128,
    data: Bytes,
    chunks: &mut Vec<ChunkRef>,
) -> Result<ChunkOutcome, TroveError> {
    // Named through the chunk store, so that applying this very buffer on this node does
    // not hash it a second time.
    let hash = node.store().chunks().name_chunk(&data);
    chunks.push(ChunkRef {
        hash,
        len: data.len() as u32,
    });
    let fut = node
        .submit(
            None,
            Op::PutChunk {
                upload_id,
                hash,
                data,
            },
        )
        .await?;
    Ok(Box::pin(fut))
}

/// Waits for the oldest outstanding chunk and checks it was stored.
async fn wait_chunk(inflight: &mut VecDeque<ChunkOutcome>) -> Result<(), TroveError> {
    if let Some(f) = inflight.pop_front() {
        let (_, res) = f.await?;
        res.map_err(TroveError::from)?;
    }
    Ok(())
}

impl ObjectsService {
    async fn put_local(
        &self,
        mut s: Streaming<PutObjectRequest>,
    ) -> Result<ObjectInfo, TroveError> {
        let first = s
            .message()
            .await
            .map_err(|e| TroveError::Cancelled(format!("upload stream failed: {}", e.message())))?;
        let Some(PutObjectRequest {
            part: Some(put_object_request::Part::Header(h)),
        }) = first
        else {
            return Err(TroveError::invalid(
                "the first message of an object upload must be its header",
            ));
        };
        validate::bucket_name(&h.bucket)?;
        validate::object_key(&h.key)?;
        let rid = request_id(h.request_id.clone())?;
        if let Some(size) = h.size
            && size > MAX_OBJECT_SIZE_BYTES
        {
            return Err(TroveError::invalid(format!(
                "object size {size} exceeds the limit of {MAX_OBJECT_SIZE_BYTES} bytes"
            )));
        }
        let store = self.node.store();
        if store
            .get_bucket(&h.bucket)
            .map_err(|e| TroveError::internal(e.to_string()))?
            .is_none()
        {
            return Err(TroveError::NotFound(format!("bucket {}", h.bucket)));
        }

        let upload_id: u128 = rand::random();
        let mut guard = AbortGuard {
            node: self.node.clone(),
            upload_id,
            armed: true,
        };
        let mut hasher = Sha256::new();
        let mut total: u64 = 0;
        let mut buf = BytesMut::with_capacity(CHUNK_SIZE_BYTES);
        let mut chunks: Vec<ChunkRef> = Vec::new();
        // Chunks are submitted to Raft in order as soon as they are cut (so they enter
        // the log in order and replicate while more data arrives); at most
        // UPLOAD_CHUNKS_IN_FLIGHT outcomes are outstanding, which is the backpressure.
        let mut inflight = VecDeque::new();
        let node = &self.node;
        let trailer = loop {
            let msg = match s.message().await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    return Err(TroveError::invalid(
                        "upload stream ended without a trailer (truncated upload); nothing was stored",
                    ));
                }
                Err(e) => {
                    return Err(TroveError::Cancelled(format!(
                        "upload stream broke ({}); nothing was stored",
                        e.message()
                    )));
                }
            };
            match msg.part {
                Some(put_object_request::Part::Data(d)) => {
                    if d.len() > CHUNK_SIZE_BYTES {
                        return Err(TroveError::invalid(format!(
                            "data message of {} bytes exceeds the {CHUNK_SIZE_BYTES}-byte limit per message",
                            d.len()
                        )));
                    }
                    total += d.len() as u64;
                    if total > MAX_OBJECT_SIZE_BYTES || h.size.is_some_and(|s| total > s) {
                        return Err(TroveError::invalid(format!(
                            "upload sent more bytes ({total}) than its declared size or the object size limit"
                        )));
                    }
                    hasher.update(&d);
                    buf.extend_from_slice(&d);
                    while buf.len() >= CHUNK_SIZE_BYTES {
                        let chunk = buf.split_to(CHUNK_SIZE_BYTES).freeze();
                        if inflight.len() >= UPLOAD_CHUNKS_IN_FLIGHT {
                            wait_chunk(&mut inflight).await?;
                        }
                        inflight
                            .push_back(submit_chunk(node, upload_id, chunk, &mut chunks).await?);
                    }
                }
                Some(put_object_request::Part::Trailer(t)) => break t,
                Some(put_object_request::Part::Header(_)) => {
                    return Err(TroveError::invalid(
                        "an object upload has exactly one header",
                    ));
                }
                None => return Err(TroveError::invalid("empty upload message")),
            }
        };
        if !buf.is_empty() {
            inflight
                .push_back(submit_chunk(node, upload_id, buf.split().freeze(), &mut chunks).await?);
        }
        let digest: [u8; 32] = hasher.finalize();
        if trailer.sha256.len() != 32 {
            return Err(TroveError::invalid(format!(
                "trailer sha256 must be 32 bytes, got {}",
                trailer.sha256.len()
            )));
        }
        if trailer.sha256[..] != digest[..] {
            return Err(TroveError::invalid(format!(
                "checksum mismatch: the client declared sha256 {} but the received bytes hash to {}; nothing was stored",
                hex::encode(&trailer.sha256),
                hex::encode(digest)
            )));
        }
        if let Some(size) = h.size
            && size != total
        {
            return Err(TroveError::invalid(format!(
                "upload declared {size} bytes but sent {total}; nothing was stored"
            )));
        }
        // The manifest enters the log right behind its chunks, without waiting for them
        // to be applied: entries apply in log order, and applying the commit checks that
        // the upload holds exactly the manifest's chunks, so a refused chunk fails the
        // commit too. This saves the wait for the last chunk's round and file write.
        let commit = self
            .node
            .submit(
                rid,
                Op::CommitObject {
                    upload_id,
                    bucket: h.bucket.clone(),
                    key: h.key.clone(),
                    size: total,
                    sha256: digest,
                    chunks,
                },
            )
            .await?;
        while !inflight.is_empty() {
            wait_chunk(&mut inflight).await?;
        }
        let ok = commit
            .await
            .and_then(|(_, res)| res.map_err(TroveError::from));
        match ok {
            Ok(OpOk::Object {
                revision,
                size,
                sha256,
                chunk_count,
            }) => {
                guard.armed = false;
                Ok(ObjectInfo {
                    bucket: h.bucket,
                    key: h.key,
                    size,
                    sha256: Bytes::copy_from_slice(&sha256),
                    revision,
                    chunk_count,
                })
            }
            Ok(other) => Err(TroveError::internal(format!(
                "unexpected commit result {other:?}"
            ))),
            Err(e) => Err(e),
        }
    }

    fn get_local(&self, r: GetObjectRequest) -> Result<GetStream, TroveError> {
        let meta = self
            .node
            .store()
            .get_object(&r.bucket, &r.key)
            .map_err(|e| TroveError::internal(e.to_string()))?
            .ok_or_else(|| TroveError::NotFound(format!("object {}/{}", r.bucket, r.key)))?;
        let end = if r.range_end == 0 {
            meta.size
        } else {
            r.range_end
        };
        if r.range_start > end || end > meta.size {
            return Err(TroveError::invalid(format!(
                "range {}-{} is outside the object (size {})",
                r.range_start, r.range_end, meta.size
            )));
        }
        let start = r.range_start;
        let first = GetObjectResponse {
            part: Some(get_object_response::Part::Info(info(
                &r.bucket, &r.key, &meta,
            ))),
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<GetObjectResponse, Status>>(4);
        let node = self.node.clone();
        tokio::spawn(async move {
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            let mut offset = 0u64;
            for c in meta.chunks {
                let (c_start, c_end) = (offset, offset + c.len as u64);
                offset = c_end;
                if c_end <= start || c_start >= end {
                    continue;
                }
                let from = start.max(c_start) - c_start;
                let to = end.min(c_end) - c_start;
                // Verified bytes only; a corrupt or missing copy is repaired from a peer.
                let msg = match crate::repair::read_chunk(&node, c.hash).await {
                    Ok(data) if data.len() as u64 >= to => Ok(GetObjectResponse {
                        part: Some(get_object_response::Part::Data(
                            data.slice(from as usize..to as usize),
                        )),
                    }),
                    Ok(data) => Err(status(TroveError::DataLoss(format!(
                        "chunk {} of {}/{} holds {} bytes, its manifest says {}",
                        hex::encode(c.hash),
                        r.bucket,
                        r.key,
                        data.len(),
                        c.len
                    )))),
                    Err(e) => Err(status(e)),
                };
                let stop = msg.is_err();
                if tx.send(msg).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    /// Routes a linearizable read to the leader (returns `Some(addr)` to forward), or
    /// waits for the read barrier here.
    async fn read_route(
        &self,
        md: &tonic::metadata::MetadataMap,
        consistency: i32,
    ) -> Result<Option<String>, Status> {
        if !is_linearizable(consistency) {
            return Ok(None);
        }
        match self.node.route(md).map_err(status)? {
            Route::Forward(addr) => Ok(Some(addr)),
            Route::Local => {
                self.node.linearizable_barrier().await.map_err(status)?;
                Ok(None)
            }
        }
    }
}

#[tonic::async_trait]
impl Objects for ObjectsService {
    async fn create_bucket(
        &self,
        req: Request<CreateBucketRequest>,
    ) -> Result<Response<CreateBucketResponse>, Status> {
        validate::bucket_name(&req.get_ref().bucket).map_err(status)?;
        let rid = request_id(req.get_ref().request_id.clone()).map_err(status)?;
        match self.node.route(req.metadata()).map_err(status)? {
            Route::Forward(addr) => {
                self.node
                    .forward(&addr, req.into_inner(), |ch, r| async move {
                        client(ch).create_bucket(r).await
                    })
                    .await
            }
            Route::Local => {
                let bucket = req.into_inner().bucket;
                let ok = self
                    .node
                    .propose_ok(rid, Op::CreateBucket { bucket })
                    .await
                    .map_err(status)?;
                Ok(Response::new(CreateBucketResponse {
                    revision: ok.revision().unwrap_or(0),
                }))
            }
        }
    }

    async fn delete_bucket(
        &self,
        req: Request<DeleteBucketRequest>,
    ) -> Result<Response<DeleteBucketResponse>, Status> {
        validate::bucket_name(&req.get_ref().bucket).map_err(status)?;
        let rid = request_id(req.get_ref().request_id.clone()).map_err(status)?;
        match self.node.route(req.metadata()).map_err(status)? {
            Route::Forward(addr) => {
                self.node
                    .forward(&addr, req.into_inner(), |ch, r| async move {
                        client(ch).delete_bucket(r).await
                    })
                    .await
            }
            Route::Local => {
                let bucket = req.into_inner().bucket;
                let ok = self
                    .node
                    .propose_ok(rid, Op::DeleteBucket { bucket })
                    .await
                    .map_err(status)?;
                Ok(Response::new(DeleteBucketResponse {
                    revision: ok.revision().unwrap_or(0),
                }))
            }
        }
    }

    async fn list_buckets(
        &self,
        req: Request<ListBucketsRequest>,
    ) -> Result<Response<ListBucketsResponse>, Status> {
        if let Some(addr) = self
            .read_route(req.metadata(), req.get_ref().consistency)
            .await?
        {
            return self
                .node
                .forward(&addr, req.into_inner(), |ch, r| async move {
                    client(ch).list_buckets(r).await
                })
                .await;
        }
        let buckets = self.node.store().list_buckets().map_err(internal)?;
        Ok(Response::new(ListBucketsResponse {
            buckets: buckets
                .into_iter()
                .map(|(name, m)| BucketInfo {
                    name,
                    create_revision: m.create_revision,
                })
                .collect(),
        }))
    }

    async fn put(
        &self,
        req: Request<Streaming<PutObjectRequest>>,
    ) -> Result<Response<PutObjectResponse>, Status> {
        match self.node.route(req.metadata()).map_err(status)? {
            Route::Forward(addr) => {
                // Pass the stream through; if the client's stream breaks, the leader sees
                // it end without a trailer and stores nothing.
                let incoming = req.into_inner();
                let out = tokio_stream::StreamExt::map_while(incoming, |r| r.ok());
                self.node
                    .forward_stream(&addr, out, |ch, r| async move { client(ch).put(r).await })
                    .await
            }
            Route::Local => {
                let obj = self.put_local(req.into_inner()).await.map_err(status)?;
                Ok(Response::new(PutObjectResponse { object: Some(obj) }))
            }
        }
    }

    type GetStream = GetStream;

    async fn get(&self, req: Request<GetObjectRequest>) -> Result<Response<GetStream>, Status> {
        validate::bucket_name(&req.get_ref().bucket).map_err(status)?;
        validate::object_key(&req.get_ref().key).map_err(status)?;
        if let Some(addr) = self
            .read_route(req.metadata(), req.get_ref().consistency)
            .await?
        {
            let resp = self
                .node
                .forward_stream(&addr, req.into_inner(), |ch, r| async move {
                    client(ch).get(r).await
                })
                .await?;
            // Keep the metadata: it names the leader for the client's next request.
            let (metadata, stream, extensions) = resp.into_parts();
            let s: GetStream = Box::pin(stream);
            return Ok(Response::from_parts(metadata, s, extensions));
        }
        let s = self.get_local(req.into_inner()).map_err(status)?;
        Ok(Response::new(s))
    }

    async fn head(&self, req: Request<HeadObjectRequest>) -> Result<Response<ObjectInfo>, Status> {
        validate::bucket_name(&req.get_ref().bucket).map_err(status)?;
        validate::object_key(&req.get_ref().key).map_err(status)?;
        if let Some(addr) = self
            .read_route(req.metadata(), req.get_ref().consistency)
            .await?
        {
            return self
                .node
                .forward(&addr, req.into_inner(), |ch, r| async move {
                    client(ch).head(r).await
                })
                .await;
        }
        let r = req.into_inner();
        let m = self
            .node
            .store()
            .get_object(&r.bucket, &r.key)
            .map_err(internal)?
            .ok_or_else(|| {
                status(TroveError::NotFound(format!(
                    "object {}/{}",
                    r.bucket, r.key
                )))
            })?;
        Ok(Response::new(info(&r.bucket, &r.key, &m)))
    }

    async fn delete(
        &self,
        req: Request<DeleteObjectRequest>,
    ) -> Result<Response<DeleteObjectResponse>, Status> {
        validate::bucket_name(&req.get_ref().bucket).map_err(status)?;
        validate::object_key(&req.get_ref().key).map_err(status)?;
        let rid = request_id(req.get_ref().request_id.clone()).map_err(status)?;
        match self.node.route(req.metadata()).map_err(status)? {
            Route::Forward(addr) => {
                self.node
                    .forward(&addr, req.into_inner(), |ch, r| async move {
                        client(ch).delete(r).await
                    })
                    .await
            }
            Route::Local => {
                let r = req.into_inner();
                let ok = self
                    .node
                    .propose_ok(
                        rid,
                        Op::DeleteObject {
                            bucket: r.bucket,
                            key: r.key,
                        },
                    )
                    .await
                    .map_err(status)?;
                Ok(Response::new(DeleteObjectResponse {
                    revision: ok.revision().unwrap_or(0),
                }))
            }
        }
    }

    async fn list(
        &self,
        req: Request<ListObjectsRequest>,
    ) -> Result<Response<ListObjectsResponse>, Status> {
        validate::bucket_name(&req.get_ref().bucket).map_err(status)?;
        if let Some(addr) = self
            .read_route(req.metadata(), req.get_ref().consistency)
            .await?
        {
            return self
                .node
                .forward(&addr, req.into_inner(), |ch, r| async move {
                    client(ch).list(r).await
                })
                .await;
        }
        let r = req.into_inner();
        let store = self.node.store();
        if store.get_bucket(&r.bucket).map_err(internal)?.is_none() {
            return Err(status(TroveError::NotFound(format!("bucket {}", r.bucket))));
        }
        let (items, next) = store
            .list_objects(
                &r.bucket,
                &r.prefix,
                &r.start_after_or_at,
                validate::list_limit(r.limit),
            )
            .map_err(internal)?;
        Ok(Response::new(ListObjectsResponse {
            objects: items.iter().map(|(k, m)| info(&r.bucket, k, m)).collect(),
            next: next.unwrap_or_default(),
        }))
    }
}
