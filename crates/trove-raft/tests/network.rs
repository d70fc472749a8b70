//! The replication transport over real gRPC: a follower (a real openraft node over the
//! real stores, served by `PeerService`) and the leader side's `PeerClient`.
//!
//! - `stream_append` carries a pipeline of AppendEntries over one stream and the answers
//!   come back in order, each acknowledging its batch; the entries are in the follower's
//!   log afterwards.
//! - A stream meant for another cluster is refused.
//! - A follower that does not know `StreamAppend` (an older release during a rolling
//!   upgrade) still gets the entries: one failed attempt, then unary calls.
//! - A request whose payload does not match its CRC32C is refused with DATA_LOSS and
//!   nothing is appended; one without a CRC (an older sender) is taken. Only chunks that
//!   came under a matching CRC are vouched for to the chunk store.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::AppendEntriesRequest;
use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::{EntryPayload, RaftNetworkV2};
use tempfile::TempDir;
use trove_proto::raft::raft_peer_server::RaftPeerServer;
use trove_raft::types::{Entry, LogId, Vote};
use trove_raft::{
    LogStore, Network, PeerHooks, PeerIdentity, PeerService, Raft, StateMachine, TroveNode,
    TypeConfig, VoteGate,
};
use trove_storage::chunks::ChunkStore;
use trove_storage::state::StateStore;
use trove_types::{Command, Op};

const CLUSTER: &str = "c1";
const FOLLOWER: u64 = 2;

fn log_id(index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(1, 1, index)
}

fn entry(index: u64) -> Entry {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Command {
            request_id: None,
            time_ms: 1,
            op: Op::PutRecord {
                key: format!("k{index}"),
                value: bytes::Bytes::from(format!("v{index}")),
                expected_revision: None,
            },
        }),
    }
}

/// AppendEntries from leader 1 (term 1) with entries `first..=last` (openraft's log
/// starts at index 0).
fn append(first: u64, last: u64) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: first.checked_sub(1).map(log_id),
        leader_commit: None,
        entries: (first..=last).map(entry).collect(),
    }
}

/// Which service the follower's peer port serves.
enum Serve {
    /// Today's peer service.
    Current,
    /// The peer service without `StreamAppend`, as a release before it answered.
    WithoutStreamAppend,
}

struct Follower {
    raft: Raft,
    log: LogStore,
    chunks: ChunkStore,
    addr: SocketAddr,
    _dir: TempDir,
}

async fn follower(serve: Serve) -> Follower {
    let dir = TempDir::new().unwrap();
    let chunks = ChunkStore::open(&dir.path().join("chunks")).unwrap();
    let log = LogStore::open(&dir.path().join("raft"), chunks.clone()).unwrap();
    let store = Arc::new(StateStore::open(&dir.path().join("state"), chunks.clone()).unwrap());
    let sm = StateMachine::open(store, &dir.path().join("snapshots")).unwrap();
    let incoming = sm.incoming_dir();
    let me = PeerIdentity {
        cluster_id: CLUSTER.into(),
        node_id: FOLLOWER,
    };
    // Elections far off: this node only follows.
    let config = Arc::new(trove_raft::raft_config(500, 60_000, 90_000, 10_000).unwrap());
    let raft = Raft::new(
        FOLLOWER,
        config,
        Network::new(me.clone(), None),
        log.clone(),
        sm,
    )
    .await
    .unwrap();
    let hooks = PeerHooks {
        announce: Arc::new(|_, _| Box::pin(async { Err("not in this test".to_string()) })),
        recall: Arc::new(|_, _| Box::pin(async { Err("not in this test".to_string()) })),
        fetch_chunk: Arc::new(|_, _| Box::pin(async { Err("not in this test".to_string()) })),
        gate: Arc::new(VoteGate::closed("a test follower never votes")),
        chunks: chunks.clone(),
    };
    let svc = RaftPeerServer::new(PeerService::new(me, raft.clone(), incoming, hooks));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let router = match serve {
        Serve::Current => tonic::transport::Server::builder().add_service(svc),
        Serve::WithoutStreamAppend => {
            tonic::transport::Server::builder().add_service(WithoutStreamAppend(svc))
        }
    };
    tokio::spawn(router.serve_with_incoming(incoming));
    Follower {
        raft,
        log,
        chunks,
        addr,
        _dir: dir,
    }
}

/// Answers `StreamAppend` with UNIMPLEMENTED, as a server whose service lacks the
/// method does; everything else goes to the wrapped service.
#[derive(Clone)]
struct WithoutStreamAppend<S>(S);

impl<S> tonic::server::NamedService for WithoutStreamAppend<S>
where
    S: tonic::server::NamedService,
{
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for WithoutStreamAppend<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path().ends_with("/StreamAppend") {
            let resp = tonic::Status::unimplemented("").into_http();
            return Box::pin(async move { Ok(resp) });
        }
        Box::pin(self.0.call(req))
    }
}

/// The leader side's client for the follower, stamped with `cluster`.
async fn leader_client(cluster: &str, follower: &Follower) -> impl RaftNetworkV2<TypeConfig> {
    let me = PeerIdentity {
        cluster_id: cluster.into(),
        node_id: 1,
    };
    let node = TroveNode {
        peer_addr: follower.addr.to_string(),
        client_addr: String::new(),
    };
    Network::new(me, None).new_client(FOLLOWER, &node).await
}

fn option() -> RPCOption {
    RPCOption::new(Duration::from_secs(5))
}

async fn follower_log(f: &Follower, upto: u64) -> Vec<u64> {
    let mut reader = f.log.clone().get_log_reader().await;
    reader
        .try_get_log_entries(0..upto + 1)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_appends_is_answered_in_order() {
    let f = follower(Serve::Current).await;
    let mut client = leader_client(CLUSTER, &f).await;
    let batches = vec![append(0, 3), append(4, 4), append(5, 9), append(10, 12)];
    let answers: Vec<_> = client
        .stream_append(futures::stream::iter(batches), option())
        .await
        .unwrap()
        .collect()
        .await;
    let acked: Vec<Option<LogId>> = answers.into_iter().map(|a| a.unwrap().unwrap()).collect();
    assert_eq!(
        acked,
        vec![
            Some(log_id(3)),
            Some(log_id(4)),
            Some(log_id(9)),
            Some(log_id(12))
        ]
    );
    assert_eq!(follower_log(&f, 12).await, (0..=12).collect::<Vec<_>>());
    f.raft.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_for_another_cluster_is_refused() {
    let f = follower(Serve::Current).await;
    let mut client = leader_client("another-cluster", &f).await;
    let answers: Vec<_> = match client
        .stream_append(futures::stream::iter(vec![append(0, 2)]), option())
        .await
    {
        Ok(s) => s.collect().await,
        Err(e) => vec![Err(e)],
    };
    assert_eq!(answers.len(), 1, "{answers:?}");
    let err = answers[0].as_ref().unwrap_err().to_string();
    assert!(err.contains("cluster id mismatch"), "{err}");
    assert!(follower_log(&f, 2).await.is_empty());
    f.raft.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_without_stream_append_gets_unary_calls() {
    let f = follower(Serve::WithoutStreamAppend).await;
    let mut client = leader_client(CLUSTER, &f).await;
    // The first attempt learns that the peer has no stream (openraft backs off and
    // opens the next session) ...
    let first = client
        .stream_append(futures::stream::iter(vec![append(0, 2)]), option())
        .await;
    let err = first.err().expect("the first session fails").to_string();
    assert!(err.contains("no StreamAppend"), "{err}");
    // ... which then goes through one unary call per batch.
    let answers: Vec<_> = client
        .stream_append(
            futures::stream::iter(vec![append(0, 2), append(3, 5)]),
            option(),
        )
        .await
        .unwrap()
        .collect()
        .await;
    let acked: Vec<Option<LogId>> = answers.into_iter().map(|a| a.unwrap().unwrap()).collect();
    assert_eq!(acked, vec![Some(log_id(2)), Some(log_id(5))]);
    assert_eq!(follower_log(&f, 5).await, (0..=5).collect::<Vec<_>>());
    f.raft.shutdown().await.unwrap();
}

/// AppendEntries from leader 1 with `n` chunk entries from index `first` on.
fn chunk_append(first: u64, n: u64) -> AppendEntriesRequest<TypeConfig> {
    let entries = (first..first + n)
        .map(|index| {
            let data = bytes::Bytes::from(vec![index as u8; 3000]);
            Entry {
                log_id: log_id(index),
                payload: EntryPayload::Normal(Command {
                    request_id: None,
                    time_ms: 1,
                    op: Op::PutChunk {
                        upload_id: 7,
                        hash: trove_types::Sha256::digest(&data),
                        data,
                    },
                }),
            }
        })
        .collect();
    AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: first.checked_sub(1).map(log_id),
        leader_commit: None,
        entries,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_damaged_in_transit_is_refused_and_an_unstamped_one_taken() {
    let f = follower(Serve::Current).await;
    let mut peer =
        trove_proto::raft::raft_peer_client::RaftPeerClient::connect(format!("http://{}", f.addr))
            .await
            .unwrap();

    // One flipped bit in the payload: refused before decoding, nothing appended.
    let mut env = trove_raft::network::seal(CLUSTER, 1, FOLLOWER, &chunk_append(0, 3)).unwrap();
    let mut payload = env.payload.to_vec();
    let last = payload.len() - 10;
    payload[last] ^= 0x04;
    env.payload = payload.into();
    let err = peer.append_entries(env).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err}");
    assert!(err.message().contains("damaged in transit"), "{err}");
    assert!(follower_log(&f, 2).await.is_empty());
    assert_eq!(f.chunks.vouched_count(), 0);

    // Intact and stamped: appended, and its three chunks vouched for.
    let env = trove_raft::network::seal(CLUSTER, 1, FOLLOWER, &chunk_append(0, 3)).unwrap();
    assert!(env.payload_crc32c.is_some());
    peer.append_entries(env).await.unwrap();
    assert_eq!(follower_log(&f, 2).await, vec![0, 1, 2]);
    assert_eq!(f.chunks.vouched_count(), 3);

    // Without a CRC (a release before it was added): appended, nothing vouched for.
    let mut env = trove_raft::network::seal(CLUSTER, 1, FOLLOWER, &chunk_append(3, 2)).unwrap();
    env.payload_crc32c = None;
    peer.append_entries(env).await.unwrap();
    assert_eq!(follower_log(&f, 4).await, vec![0, 1, 2, 3, 4]);
    assert_eq!(f.chunks.vouched_count(), 3);
    f.raft.shutdown().await.unwrap();
}

/// A peer that is down: openraft retries a stream that could not open at once, so each
/// failed attempt makes the next one wait (10 ms, doubling, at most 500 ms). Eight
/// attempts take at least 10 + 20 + 40 + 80 + 160 + 320 + 500 = 1,130 ms, not
/// microseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_is_down_is_retried_with_growing_waits() {
    // A port nothing listens on: bound, then released.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let me = PeerIdentity {
        cluster_id: CLUSTER.into(),
        node_id: 1,
    };
    let node = TroveNode {
        peer_addr: addr.to_string(),
        client_addr: String::new(),
    };
    let mut client = Network::new(me, None).new_client(FOLLOWER, &node).await;
    let started = std::time::Instant::now();
    for _ in 0..8 {
        let opened = client
            .stream_append(futures::stream::iter(vec![append(1, 1)]), option())
            .await;
        assert!(opened.is_err(), "nothing listens on {addr}");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1_100),
        "eight failed attempts took {took:?}: no wait between them"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}
