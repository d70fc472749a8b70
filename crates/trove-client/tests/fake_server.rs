//! The SDK against scripted in-process gRPC nodes on 127.0.0.1:0: leader hints, request-id
//! reuse across retries, timeouts, chunked uploads with trailers, verified and resumed
//! downloads.

// Test code: a panic is how a failure is reported.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};
use trove_client::{CHUNK_SIZE_BYTES, Client, ClientConfig, Consistency, TroveError};
use trove_proto::v1 as pb;
use trove_proto::v1::cluster_server::{Cluster, ClusterServer};
use trove_proto::v1::objects_server::{Objects, ObjectsServer};
use trove_proto::v1::records_server::{Records, RecordsServer};
use trove_types::LeaderHint;
use trove_types::Sha256;

/// What the nodes of one test saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    /// A call with its request id (client id, seq), if it had one.
    Call(&'static str, &'static str, Option<(String, u64)>),
    /// An upload's data message sizes and whether a valid trailer ended it.
    Upload(&'static str, Vec<usize>, bool),
}

type Log = Arc<Mutex<Vec<Event>>>;
/// A call as seen by a node: (node, method, request id).
type Call = (&'static str, &'static str, Option<(String, u64)>);

struct FakeNode {
    name: &'static str,
    log: Log,
    /// Errors for the next calls (one per call).
    fail: Mutex<VecDeque<Status>>,
    /// Delays before answering the next calls.
    delay: Mutex<VecDeque<Duration>>,
    /// The object served by `Get`.
    object: Mutex<Option<(pb::ObjectInfo, Bytes)>>,
    /// `Get` calls that break after sending their first data message.
    break_gets: Mutex<u32>,
    /// The next upload reads each data message after this pause, then fails with this
    /// status instead of storing the object (a leader change after the data was taken).
    slow_failing_upload: Mutex<Option<(Duration, Status)>>,
    /// Answers as a follower that forwarded the call to the leader at this address: the
    /// response names it (`x-trove-leader`).
    forwarded_to: Mutex<Option<String>>,
}

impl FakeNode {
    fn new(name: &'static str, log: &Log) -> Arc<FakeNode> {
        Arc::new(FakeNode {
            name,
            log: Arc::clone(log),
            fail: Mutex::new(VecDeque::new()),
            delay: Mutex::new(VecDeque::new()),
            object: Mutex::new(None),
            break_gets: Mutex::new(0),
            slow_failing_upload: Mutex::new(None),
            forwarded_to: Mutex::new(None),
        })
    }

    /// `resp`, naming the leader as a forwarding node's answer does.
    fn answer<T>(&self, resp: T) -> Response<T> {
        let mut resp = Response::new(resp);
        if let Some(leader) = self.forwarded_to.lock().unwrap().clone() {
            resp.metadata_mut()
                .insert(trove_proto::LEADER_ADDR_HEADER, leader.parse().unwrap());
        }
        resp
    }

    fn fail_next(&self, st: Status) {
        self.fail.lock().unwrap().push_back(st);
    }

    async fn enter(&self, method: &'static str, id: Option<&pb::RequestId>) -> Result<(), Status> {
        let id = id.map(|r| (r.client_id.clone(), r.seq));
        self.log
            .lock()
            .unwrap()
            .push(Event::Call(self.name, method, id));
        let delay = self.delay.lock().unwrap().pop_front();
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        match self.fail.lock().unwrap().pop_front() {
            Some(st) => Err(st),
            None => Ok(()),
        }
    }

    /// Starts serving; returns the node's `host:port`.
    async fn serve(self: &Arc<Self>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let router = tonic::transport::Server::builder()
            .add_service(RecordsServer::from_arc(Arc::clone(self)))
            .add_service(ObjectsServer::from_arc(Arc::clone(self)))
            .add_service(ClusterServer::from_arc(Arc::clone(self)));
        tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
        addr
    }
}

fn not_leader(addr: &str) -> Status {
    trove_proto::status_from_error(TroveError::Unavailable {
        message: "not the leader".into(),
        leader: Some(LeaderHint {
            id: 2,
            client_addr: addr.into(),
        }),
    })
}

fn info_for(data: &[u8]) -> pb::ObjectInfo {
    pb::ObjectInfo {
        bucket: "bkt".into(),
        key: "obj".into(),
        size: data.len() as u64,
        sha256: Bytes::copy_from_slice(&Sha256::digest(data)),
        revision: 7,
        chunk_count: data.len().div_ceil(CHUNK_SIZE_BYTES) as u32,
    }
}

#[tonic::async_trait]
impl Records for FakeNode {
    async fn put(
        &self,
        r: Request<pb::PutRecordRequest>,
    ) -> Result<Response<pb::PutRecordResponse>, Status> {
        self.enter("record.put", r.get_ref().request_id.as_ref())
            .await?;
        Ok(Response::new(pb::PutRecordResponse { revision: 42 }))
    }
    async fn get(
        &self,
        r: Request<pb::GetRecordRequest>,
    ) -> Result<Response<pb::GetRecordResponse>, Status> {
        self.enter("record.get", None).await?;
        Ok(Response::new(pb::GetRecordResponse {
            key: r.into_inner().key,
            value: Bytes::from_static(b"v"),
            revision: 3,
            create_revision: 1,
        }))
    }
    async fn delete(
        &self,
        r: Request<pb::DeleteRecordRequest>,
    ) -> Result<Response<pb::DeleteRecordResponse>, Status> {
        self.enter("record.delete", r.get_ref().request_id.as_ref())
            .await?;
        Ok(Response::new(pb::DeleteRecordResponse { revision: 43 }))
    }
    async fn list(
        &self,
        _: Request<pb::ListRecordsRequest>,
    ) -> Result<Response<pb::ListRecordsResponse>, Status> {
        self.enter("record.list", None).await?;
        Ok(Response::new(pb::ListRecordsResponse::default()))
    }
}

type GetStream = Pin<Box<dyn Stream<Item = Result<pb::GetObjectResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Objects for FakeNode {
    async fn create_bucket(
        &self,
        r: Request<pb::CreateBucketRequest>,
    ) -> Result<Response<pb::CreateBucketResponse>, Status> {
        self.enter("bucket.create", r.get_ref().request_id.as_ref())
            .await?;
        Ok(Response::new(pb::CreateBucketResponse { revision: 5 }))
    }
    async fn delete_bucket(
        &self,
        _: Request<pb::DeleteBucketRequest>,
    ) -> Result<Response<pb::DeleteBucketResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_buckets(
        &self,
        _: Request<pb::ListBucketsRequest>,
    ) -> Result<Response<pb::ListBucketsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn put(
        &self,
        r: Request<Streaming<pb::PutObjectRequest>>,
    ) -> Result<Response<pb::PutObjectResponse>, Status> {
        use pb::put_object_request::Part;
        let mut stream = r.into_inner();
        let header = match stream.message().await? {
            Some(pb::PutObjectRequest {
                part: Some(Part::Header(h)),
            }) => h,
            _ => return Err(Status::invalid_argument("no header")),
        };
        self.enter("object.put", header.request_id.as_ref()).await?;
        let slow = self.slow_failing_upload.lock().unwrap().take();
        let (mut sizes, mut hasher, mut data) = (Vec::new(), Sha256::new(), Vec::new());
        let ok = loop {
            if let Some((pause, _)) = &slow {
                tokio::time::sleep(*pause).await;
            }
            match stream.message().await {
                Ok(Some(pb::PutObjectRequest {
                    part: Some(Part::Data(d)),
                })) => {
                    sizes.push(d.len());
                    hasher.update(&d);
                    data.extend_from_slice(&d);
                }
                Ok(Some(pb::PutObjectRequest {
                    part: Some(Part::Trailer(t)),
                })) => {
                    break t.sha256.as_ref() == hasher.clone().finalize().as_slice();
                }
                _ => break false,
            }
        };
        self.log
            .lock()
            .unwrap()
            .push(Event::Upload(self.name, sizes, ok));
        if let Some((_, st)) = slow {
            return Err(st);
        }
        if !ok {
            return Err(Status::invalid_argument(
                "upload ended without a valid trailer",
            ));
        }
        Ok(self.answer(pb::PutObjectResponse {
            object: Some(info_for(&data)),
        }))
    }

    type GetStream = GetStream;

    async fn get(&self, r: Request<pb::GetObjectRequest>) -> Result<Response<GetStream>, Status> {
        use pb::get_object_response::Part;
        self.enter("object.get", None).await?;
        let req = r.into_inner();
        let Some((info, data)) = self.object.lock().unwrap().clone() else {
            return Err(Status::not_found("no object"));
        };
        let end = if req.range_end == 0 {
            data.len()
        } else {
            req.range_end as usize
        };
        let mut msgs = vec![Ok(pb::GetObjectResponse {
            part: Some(Part::Info(info)),
        })];
        let body = data.slice(req.range_start as usize..end.min(data.len()));
        for c in body.chunks(1000) {
            msgs.push(Ok(pb::GetObjectResponse {
                part: Some(Part::Data(Bytes::copy_from_slice(c))),
            }));
        }
        let mut breaks = self.break_gets.lock().unwrap();
        if *breaks > 0 && msgs.len() > 2 {
            *breaks -= 1;
            msgs.truncate(2);
            msgs.push(Err(Status::unavailable("node stopping")));
        }
        Ok(self.answer(Box::pin(futures::stream::iter(msgs)) as GetStream))
    }

    async fn head(
        &self,
        _: Request<pb::HeadObjectRequest>,
    ) -> Result<Response<pb::ObjectInfo>, Status> {
        self.enter("object.head", None).await?;
        Ok(Response::new(pb::ObjectInfo {
            sha256: Bytes::from_static(b"not 32 bytes"),
            ..pb::ObjectInfo::default()
        }))
    }
    async fn delete(
        &self,
        _: Request<pb::DeleteObjectRequest>,
    ) -> Result<Response<pb::DeleteObjectResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list(
        &self,
        _: Request<pb::ListObjectsRequest>,
    ) -> Result<Response<pb::ListObjectsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

#[tonic::async_trait]
impl Cluster for FakeNode {
    async fn status(
        &self,
        r: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.enter(
            if r.get_ref().local {
                "status.local"
            } else {
                "status"
            },
            None,
        )
        .await?;
        Ok(Response::new(pb::StatusResponse {
            cluster_id: "c1".into(),
            leader: Some(1),
            node_id: 1,
            ..Default::default()
        }))
    }
    async fn add_node(
        &self,
        _: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::AddNodeResponse>, Status> {
        self.enter("add_node", None).await?;
        Ok(Response::new(pb::AddNodeResponse {
            id: 4,
            cluster_id: "c1".into(),
        }))
    }
    async fn remove_node(
        &self,
        _: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        self.enter("remove_node", None).await?;
        Ok(Response::new(pb::RemoveNodeResponse {}))
    }
    async fn transfer_leader(
        &self,
        _: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    type BackupStream = futures::stream::Empty<Result<pb::BackupMessage, Status>>;
    async fn backup(
        &self,
        _: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn scrub(
        &self,
        _: Request<pb::ScrubRequest>,
    ) -> Result<Response<pb::ScrubResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// An address where nothing listens.
async fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

fn client(endpoints: &[&str], timeout_ms: u64, budget_ms: u64) -> Client {
    let mut cfg = ClientConfig::new(endpoints.iter().copied());
    cfg.request_timeout = Duration::from_millis(timeout_ms);
    cfg.retry_budget = Duration::from_millis(budget_ms);
    cfg.client_id = "test-client".into();
    Client::new(cfg).unwrap()
}

fn calls(log: &Log) -> Vec<Call> {
    log.lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Call(n, m, id) => Some((*n, *m, id.clone())),
            Event::Upload(..) => None,
        })
        .collect()
}

/// The uploads the nodes saw: (node, data message sizes, whether a valid trailer ended it).
fn uploads(log: &Log) -> Vec<(&'static str, Vec<usize>, bool)> {
    log.lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Upload(n, sizes, ok) => Some((*n, sizes.clone(), *ok)),
            Event::Call(..) => None,
        })
        .collect()
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 253) as u8).collect()
}

#[tokio::test]
async fn follows_leader_hints_and_reuses_the_request_id() {
    let log = Log::default();
    let (a, b) = (FakeNode::new("a", &log), FakeNode::new("b", &log));
    let (a_addr, b_addr) = (a.serve().await, b.serve().await);
    let dead = dead_addr().await;
    // Only `a` and a dead node are configured; `b` is learned from a hint.
    let c = client(&[&dead, &a_addr], 2000, 10_000);
    a.fail_next(not_leader(&b_addr));
    b.fail_next(Status::unavailable("electing"));
    a.fail_next(not_leader(&b_addr));

    assert_eq!(c.put_record("k", "v", None).await, Ok(42));
    let seen = calls(&log);
    let nodes: Vec<_> = seen.iter().map(|(n, _, _)| *n).collect();
    // dead (connect error) → a (hint) → b (unavailable) → dead → a (hint) → b.
    assert_eq!(nodes, vec!["a", "b", "a", "b"], "{seen:?}");
    let first_id = seen[0].2.clone().expect("request id");
    assert!(seen.iter().all(|(_, _, id)| id.as_ref() == Some(&first_id)));
    assert_eq!(first_id.0, "test-client");

    // The next request starts at `b`, the node that answered, with a new id.
    assert_eq!(c.delete_record("k", Some(42)).await, Ok(43));
    let seen = calls(&log);
    let last = seen.last().unwrap();
    assert_eq!(last.0, "b");
    assert_ne!(last.2, Some(first_id));
}

#[tokio::test]
async fn a_timed_out_attempt_is_retried_with_the_same_id() {
    let log = Log::default();
    let a = FakeNode::new("a", &log);
    let addr = a.serve().await;
    let c = client(&[&addr], 300, 5_000);
    a.delay
        .lock()
        .unwrap()
        .push_back(Duration::from_millis(1000));
    assert_eq!(c.create_bucket("bkt").await, Ok(5));
    let seen = calls(&log);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].2, seen[1].2);
}

#[tokio::test]
async fn errors_that_are_not_retryable_are_returned_at_once() {
    let log = Log::default();
    let a = FakeNode::new("a", &log);
    let addr = a.serve().await;
    let c = client(&[&addr], 2000, 5_000);
    a.fail_next(trove_proto::status_from_error(
        TroveError::FailedPrecondition {
            message: "revision mismatch: expected 1, current revision is 9".into(),
            current_revision: Some(9),
        },
    ));
    match c.put_record("k", "v", Some(1)).await {
        Err(TroveError::FailedPrecondition {
            current_revision,
            message,
        }) => {
            assert_eq!(current_revision, Some(9));
            assert!(message.contains("current revision is 9"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(calls(&log).len(), 1);
    // A malformed answer is an error, not a panic.
    assert!(matches!(
        c.head_object("bkt", "obj", Consistency::Local).await,
        Err(TroveError::Internal(_))
    ));
    // Invalid input never reaches the network.
    assert!(matches!(
        c.put_record("", "v", None).await,
        Err(TroveError::InvalidArgument(_))
    ));
    assert!(matches!(
        c.create_bucket("No").await,
        Err(TroveError::InvalidArgument(_))
    ));
    assert_eq!(calls(&log).len(), 2);
}

#[tokio::test]
async fn gives_up_when_every_node_is_down() {
    let dead = dead_addr().await;
    let c = client(&[&dead], 500, 300);
    let started = std::time::Instant::now();
    let err = c
        .get_record("k", Consistency::Linearizable)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("gave up after"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn admin_calls_are_not_retried_after_a_deadline() {
    let log = Log::default();
    let a = FakeNode::new("a", &log);
    let addr = a.serve().await;
    let c = client(&[&addr], 200, 5_000);
    a.delay
        .lock()
        .unwrap()
        .push_back(Duration::from_millis(600));
    assert!(matches!(
        c.remove_node(3).await,
        Err(TroveError::DeadlineExceeded(_))
    ));
    // UNAVAILABLE means not carried out: retried.
    a.fail_next(Status::unavailable("no leader"));
    assert_eq!(c.remove_node(3).await, Ok(()));
    // add_node waits for the learner to catch up: a slow answer is not a timeout.
    a.delay
        .lock()
        .unwrap()
        .push_back(Duration::from_millis(600));
    assert_eq!(c.add_node(None, "x:1", "x:2", true).await, Ok(4));
    assert_eq!(calls(&log).len(), 4);
}

#[tokio::test]
async fn status_asks_the_leader_and_status_of_asks_the_node() {
    let log = Log::default();
    let a = FakeNode::new("a", &log);
    let addr = a.serve().await;
    let c = client(&[&addr], 2000, 5_000);
    assert_eq!(c.status().await.unwrap().leader, Some(1));
    assert_eq!(
        c.status_of(&format!("http://{addr}"))
            .await
            .unwrap()
            .cluster_id,
        "c1"
    );
    let methods: Vec<_> = calls(&log).into_iter().map(|(_, m, _)| m).collect();
    assert_eq!(methods, vec!["status", "status.local"]);
}

#[tokio::test]
async fn uploads_full_chunks_and_a_trailer_and_replays_after_a_redirect() {
    let log = Log::default();
    let (a, b) = (FakeNode::new("a", &log), FakeNode::new("b", &log));
    let (a_addr, b_addr) = (a.serve().await, b.serve().await);
    let c = client(&[&a_addr], 2000, 10_000);
    a.fail_next(not_leader(&b_addr));
    let data = pattern(2 * CHUNK_SIZE_BYTES + 4321);
    let sent = Arc::new(Mutex::new(Vec::new()));
    let sent2 = Arc::clone(&sent);
    let progress: trove_client::ProgressFn = Arc::new(move |n| sent2.lock().unwrap().push(n));
    let reader = std::io::Cursor::new(data.clone());
    let info = c
        .put_object(
            "bkt",
            "obj",
            reader,
            Some(data.len() as u64),
            Some(progress),
        )
        .await
        .unwrap();
    assert_eq!(info.sha256.as_slice(), Sha256::digest(&data).as_slice());
    let uploads = uploads(&log);
    // `a` refused at the header (the fake then reads nothing more); `b` got everything.
    let last = uploads.last().unwrap();
    assert_eq!(last.0, "b");
    assert_eq!(last.1, vec![CHUNK_SIZE_BYTES, CHUNK_SIZE_BYTES, 4321]);
    assert!(last.2);
    let ids: Vec<_> = calls(&log).into_iter().map(|(_, _, id)| id).collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1]);
    assert_eq!(
        sent.lock().unwrap().last().copied(),
        Some(data.len() as u64)
    );

    // In-memory uploads too.
    let info = c
        .put_object_bytes("bkt", "obj", Bytes::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(info.size, data.len() as u64);
}

#[tokio::test]
async fn after_a_forwarded_upload_or_download_the_client_goes_to_the_leader() {
    let log = Log::default();
    let (a, b) = (FakeNode::new("a", &log), FakeNode::new("b", &log));
    let (a_addr, b_addr) = (a.serve().await, b.serve().await);
    // `a` is a follower: it forwards to `b` and its answers name `b`.
    *a.forwarded_to.lock().unwrap() = Some(b_addr.clone());
    let data = Bytes::from(pattern(CHUNK_SIZE_BYTES + 10));
    for n in [&a, &b] {
        *n.object.lock().unwrap() = Some((info_for(&data), data.clone()));
    }
    let c = client(&[&a_addr, &b_addr], 2000, 10_000);
    c.put_object_bytes("bkt", "obj", data.clone())
        .await
        .unwrap();
    c.put_object_bytes("bkt", "obj", data.clone())
        .await
        .unwrap();
    assert_eq!(
        uploads(&log).iter().map(|u| u.0).collect::<Vec<_>>(),
        ["a", "b"],
        "the second upload goes straight to the leader"
    );

    let c = client(&[&a_addr, &b_addr], 2000, 10_000);
    for _ in 0..2 {
        let (_, got) = c.get_object_bytes("bkt", "obj").await.unwrap();
        assert_eq!(got, data);
    }
    let gets: Vec<_> = calls(&log)
        .into_iter()
        .filter(|c| c.1 == "object.get")
        .map(|c| c.0)
        .collect();
    assert_eq!(
        gets,
        ["a", "b"],
        "the second download goes straight to the leader"
    );
}

#[tokio::test]
async fn an_upload_that_outlasts_the_retry_budget_survives_a_late_leader_change() {
    let log = Log::default();
    let (a, b) = (FakeNode::new("a", &log), FakeNode::new("b", &log));
    let (a_addr, b_addr) = (a.serve().await, b.serve().await);
    // `a` takes 24 MiB (more than the queue and the HTTP/2 window hold) over ~1.2 s,
    // well past the 500 ms budget, then says it is no longer the leader.
    *a.slow_failing_upload.lock().unwrap() = Some((Duration::from_millis(50), not_leader(&b_addr)));
    let c = client(&[&a_addr], 5000, 500);
    let data = Bytes::from(pattern(24 * CHUNK_SIZE_BYTES));
    let started = std::time::Instant::now();
    let info = c
        .put_object_bytes("bkt", "obj", data.clone())
        .await
        .unwrap();
    assert!(started.elapsed() > Duration::from_millis(1000));
    assert_eq!(info.sha256.as_slice(), Sha256::digest(&data).as_slice());
    let uploads: Vec<_> = uploads(&log)
        .into_iter()
        .map(|(n, sizes, ok)| (n, sizes.len(), ok))
        .collect();
    assert_eq!(uploads, vec![("a", 24, true), ("b", 24, true)]);

    // Without progress the same budget is spent: `a` stalls before reading anything.
    a.delay
        .lock()
        .unwrap()
        .push_back(Duration::from_millis(1500));
    let c = client(&[&a_addr], 700, 500);
    let err = c.put_object_bytes("bkt", "obj2", data).await.unwrap_err();
    assert!(err.to_string().contains("gave up after"), "{err}");
}

#[tokio::test]
async fn a_failing_reader_ends_the_upload_without_a_trailer() {
    struct Failing(usize);
    impl tokio::io::AsyncRead for Failing {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.0 == 0 {
                return std::task::Poll::Ready(Err(std::io::Error::other("disk on fire")));
            }
            let n = self.0.min(buf.remaining()).min(100_000);
            buf.put_slice(&vec![1u8; n]);
            self.0 -= n;
            std::task::Poll::Ready(Ok(()))
        }
    }
    let log = Log::default();
    let a = FakeNode::new("a", &log);
    let addr = a.serve().await;
    let c = client(&[&addr], 2000, 5_000);
    let err = c
        .put_object("bkt", "obj", Failing(CHUNK_SIZE_BYTES + 10), None, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("disk on fire"), "{err}");
    let uploads: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Event::Upload(..)))
        .cloned()
        .collect();
    assert_eq!(
        uploads,
        vec![Event::Upload("a", vec![CHUNK_SIZE_BYTES], false)]
    );
    assert_eq!(calls(&log).len(), 1, "a reader failure is not retried");
}

#[tokio::test]
async fn downloads_are_verified_and_resumed() {
    let log = Log::default();
    let a = FakeNode::new("a", &log);
    let addr = a.serve().await;
    let c = client(&[&addr], 2000, 5_000);
    let data = Bytes::from(pattern(10_000));
    *a.object.lock().unwrap() = Some((info_for(&data), data.clone()));

    // Whole object, with the stream breaking twice on the way.
    *a.break_gets.lock().unwrap() = 2;
    let mut out = Vec::new();
    let reader = c
        .get_object("bkt", "obj", None, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(reader.info.size, 10_000);
    assert_eq!(reader.copy_to(&mut out).await, Ok(10_000));
    assert_eq!(out, data);
    assert_eq!(calls(&log).len(), 3);

    // A range.
    let mut r = c
        .get_object("bkt", "obj", Some((100, 2100)), Consistency::Local)
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = r.next_chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, data[100..2100]);
    assert!(matches!(
        c.get_object("bkt", "obj", Some((5, 5)), Consistency::Local)
            .await,
        Err(TroveError::InvalidArgument(_))
    ));

    // A digest that does not match the bytes is data loss.
    let mut bad = info_for(&data);
    bad.sha256 = Bytes::from(vec![0u8; 32]);
    *a.object.lock().unwrap() = Some((bad, data.clone()));
    assert!(matches!(
        c.get_object_bytes("bkt", "obj").await,
        Err(TroveError::DataLoss(_))
    ));

    // The object changing between a break and the resume is reported.
    let mut changed = info_for(&data);
    changed.revision = 8;
    *a.object.lock().unwrap() = Some((info_for(&data), data.clone()));
    *a.break_gets.lock().unwrap() = 1;
    let mut r = c
        .get_object("bkt", "obj", None, Consistency::Linearizable)
        .await
        .unwrap();
    assert!(r.next_chunk().await.unwrap().is_some());
    *a.object.lock().unwrap() = Some((changed, data.clone()));
    let err = loop {
        match r.next_chunk().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("finished despite the change"),
            Err(e) => break e,
        }
    };
    assert!(
        err.to_string().contains("changed during the download"),
        "{err}"
    );
}
