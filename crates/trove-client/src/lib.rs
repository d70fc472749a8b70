//! The Rust SDK for Trove: records with revisions and compare-and-set, buckets of large
//! objects streamed in chunks, cluster administration, and off-cluster backups.
//!
//! A [`Client`] holds one lazily connected HTTP/2 channel per node. Every mutating request
//! carries a request id (client id + sequence number) that is reused on each retry, so
//! the server applies it at most once. Retryable errors (UNAVAILABLE, DEADLINE_EXCEEDED,
//! broken connections) are retried with exponential backoff, following leader hints,
//! within [`ClientConfig::retry_budget`].
//!
//! ```no_run
//! # async fn demo() -> trove_client::Result<()> {
//! use trove_client::{Client, Consistency};
//! let client = Client::connect(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"])?;
//! let rev = client.put_record("greeting", "hello", None).await?;
//! let rec = client.get_record("greeting", Consistency::Linearizable).await?;
//! assert_eq!(rec.revision, rev);
//! # Ok(()) }
//! ```

mod backup;
mod cluster;
mod config;
mod conn;
mod objects;
mod reader;
mod records;
mod retry;
mod types;

use std::future::Future;
use std::sync::Arc;

use tonic::transport::Channel;
use tonic::{Response, Status};
use trove_proto::v1::cluster_client::ClusterClient;
use trove_proto::v1::objects_client::ObjectsClient;
use trove_proto::v1::records_client::RecordsClient;
use trove_types::limits::MAX_CLIENT_MESSAGE_BYTES;

pub use backup::{BackupInfo, BackupReader};
pub use config::{
    ClientConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_BUDGET,
    normalize_endpoint,
};
pub use objects::UPLOAD_REPLAY_BYTES;
pub use reader::ObjectReader;
pub use trove_types::limits::{CHUNK_SIZE_BYTES, MAX_OBJECT_SIZE_BYTES, MAX_RECORD_VALUE_BYTES};
pub use trove_types::{LeaderHint, TroveError};
pub use types::{
    BucketInfo, ClusterStatus, Consistency, MemberStatus, ObjectInfo, ObjectPage, ProgressFn,
    Record, RecordPage, RecordSummary, Role, ScrubReport, StateDigest,
};

use conn::{Attempts, Inner};
use retry::{Idempotency, map_status};

/// Result of SDK operations.
pub type Result<T> = std::result::Result<T, TroveError>;

/// A handle to a Trove cluster. Cheap to clone; clones share connections and the
/// request sequence.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.cfg.endpoints)
            .field("client_id", &self.inner.cfg.client_id)
            .finish()
    }
}

impl Client {
    /// Creates a client. Connections are made on first use, so this never fails because a
    /// node is down; it fails only for an invalid configuration.
    pub fn new(cfg: ClientConfig) -> Result<Client> {
        Ok(Client {
            inner: Arc::new(Inner::new(cfg)?),
        })
    }

    /// Creates a client for `endpoints` with default timeouts.
    pub fn connect(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Result<Client> {
        Client::new(ClientConfig::new(endpoints))
    }

    /// The configuration in use (endpoints normalized to `host:port`).
    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    /// A request with the per-attempt deadline set (sent to the server as `grpc-timeout`).
    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        self.request_within(msg, self.inner.cfg.request_timeout)
    }

    /// A request with the given deadline.
    fn request_within<T>(&self, msg: T, timeout: std::time::Duration) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(timeout);
        req
    }

    /// Runs a unary call with retries: `call` performs one attempt on the given channel.
    async fn unary<T, F, Fut>(&self, idempotency: Idempotency, call: F) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>>,
    {
        self.unary_within(self.inner.cfg.request_timeout, idempotency, call)
            .await
    }

    /// [`Client::unary`] with another per-attempt deadline (the request should carry the
    /// same one, see [`Client::request_within`]).
    async fn unary_within<T, F, Fut>(
        &self,
        timeout: std::time::Duration,
        idempotency: Idempotency,
        mut call: F,
    ) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>>,
    {
        let mut attempts = self.inner.attempts(idempotency);
        loop {
            let err = match self.attempt(timeout, &attempts, &mut call).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            attempts.failed(err, true).await?;
        }
    }

    /// One attempt of a unary call on the current node, bounded by `timeout`.
    async fn attempt<T, F, Fut>(
        &self,
        timeout: std::time::Duration,
        attempts: &Attempts<'_>,
        call: &mut F,
    ) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>>,
    {
        let node = attempts.node();
        match tokio::time::timeout(timeout, call(node.channel())).await {
            Ok(Ok(resp)) => {
                attempts.answered(resp.metadata());
                Ok(resp.into_inner())
            }
            Ok(Err(st)) => Err(map_status(&st)),
            Err(_) => Err(TroveError::DeadlineExceeded(format!(
                "no answer from {} within {timeout:?}",
                node.addr
            ))),
        }
    }
}

fn records_client(ch: Channel) -> RecordsClient<Channel> {
    RecordsClient::new(ch)
        .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
}

fn objects_client(ch: Channel) -> ObjectsClient<Channel> {
    ObjectsClient::new(ch)
        .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
}

fn cluster_client(ch: Channel) -> ClusterClient<Channel> {
    ClusterClient::new(ch)
        .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
}
