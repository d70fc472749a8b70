//! Outgoing Raft RPCs over gRPC: one channel per peer for AppendEntries and votes, a
//! separate channel per peer for snapshots (so a long transfer never delays
//! heartbeats). Every request carries the cluster id and the target node id.
//!
//! Replication is pipelined: openraft's `stream_append` is one bidirectional gRPC
//! stream per follower, so the leader sends the next batch of entries while the
//! follower is still writing the previous one, and no entry pays for a call's headers.
//! A peer that does not know the stream (an older release during a rolling upgrade) is
//! served one unary AppendEntries at a time instead.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, stream_append_sequential};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{AnyError, OptionalSend, RaftNetworkV2};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncReadExt;
use tonic::transport::{Channel, Endpoint};
use trove_proto::raft::raft_peer_client::RaftPeerClient;
use trove_proto::raft::{
    Envelope, Reply, SnapshotFileChunk, SnapshotFrame, SnapshotHeader, snapshot_frame,
};
use trove_types::limits::{
    HTTP2_CONNECTION_WINDOW_BYTES, HTTP2_MAX_FRAME_BYTES, HTTP2_STREAM_WINDOW_BYTES,
    MAX_PEER_MESSAGE_BYTES, PEER_STREAM_RETRY_MAX_MS, PEER_STREAM_RETRY_MIN_MS,
    SNAPSHOT_PIECE_BYTES,
};

use crate::codec::{decode, encode};
use crate::types::{Snapshot, SnapshotDir, TroveNode, TypeConfig, Vote};

/// Shortest deadline of a peer RPC (see `PeerClient::call`).
const MIN_PEER_RPC_TIMEOUT: Duration = Duration::from_secs(1);

/// Identity stamped on every outgoing peer request.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    /// Cluster id of this node's cluster.
    pub cluster_id: String,
    /// This node's id.
    pub node_id: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Lane {
    Main,
    Snapshot,
}

/// Creates peer clients; caches one channel per (peer address, lane).
#[derive(Clone)]
pub struct Network {
    me: PeerIdentity,
    /// Local IP outgoing peer connections are bound to (None: the OS chooses).
    source_ip: Option<IpAddr>,
    channels: Arc<Mutex<HashMap<(String, Lane), Channel>>>,
}

impl Network {
    /// A network for the node `me`; outgoing connections bind to `source_ip` if given.
    pub fn new(me: PeerIdentity, source_ip: Option<IpAddr>) -> Network {
        Network {
            me,
            source_ip,
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn channel(&self, addr: &str, lane: Lane) -> Result<Channel, String> {
        let mut map = self.channels.lock().map_err(|e| e.to_string())?;
        if let Some(c) = map.get(&(addr.to_string(), lane)) {
            return Ok(c.clone());
        }
        let ch = peer_endpoint(addr)?
            .local_address(self.source_ip)
            .connect_lazy();
        map.insert((addr.to_string(), lane), ch.clone());
        Ok(ch)
    }

    fn client(&self, target: u64, node: &TroveNode, lane: Lane) -> PeerClient {
        PeerClient {
            stamp: Stamp {
                me: self.me.clone(),
                target,
            },
            addr: node.peer_addr.clone(),
            channel: self.channel(&node.peer_addr, lane),
            unary_append: false,
            failed_opens: 0,
        }
    }

    /// A raw gRPC client to a peer's Raft port (used for announcements).
    pub fn raw_client(&self, addr: &str) -> Result<RaftPeerClient<Channel>, String> {
        Ok(peer_grpc(self.channel(addr, Lane::Main)?))
    }

    /// This node's identity.
    pub fn identity(&self) -> &PeerIdentity {
        &self.me
    }
}

/// Builds the endpoint for a peer address ("host:port" or a URL).
pub fn peer_endpoint(addr: &str) -> Result<Endpoint, String> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(url)
        .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES)
        .max_frame_size(HTTP2_MAX_FRAME_BYTES))
}

fn peer_grpc(ch: Channel) -> RaftPeerClient<Channel> {
    RaftPeerClient::new(ch)
        .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES)
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &TroveNode) -> PeerClient {
        self.client(target, node, Lane::Main)
    }

    /// Heartbeats are single AppendEntries without entries, each sent as a one-request
    /// `stream_append`: as unary calls they skip a stream's set-up and the follower's
    /// per-stream pipeline task (reads confirm leadership with heartbeats, so they are
    /// frequent under a read load).
    async fn new_heartbeat_client(&mut self, target: u64, node: &TroveNode) -> PeerClient {
        let mut client = self.client(target, node, Lane::Main);
        client.unary_append = true;
        client
    }

    async fn new_snapshot_client(&mut self, target: u64, node: &TroveNode) -> PeerClient {
        self.client(target, node, Lane::Snapshot)
    }
}

/// A client for one peer.
pub struct PeerClient {
    stamp: Stamp,
    addr: String,
    channel: Result<Channel, String>,
    /// Send AppendEntries as unary calls, one at a time, rather than over a stream: for
    /// heartbeats, and for a peer that answered `StreamAppend` with UNIMPLEMENTED (an
    /// older release).
    unary_append: bool,
    /// Attempts to open the append stream that failed in a row (see
    /// [`PEER_STREAM_RETRY_MIN_MS`]).
    failed_opens: u32,
}

/// How long to wait before the next attempt to open an append stream, after `failed`
/// failed attempts in a row.
fn stream_retry_wait(failed: u32) -> Option<Duration> {
    let doublings = failed.checked_sub(1)?.min(16);
    let ms = PEER_STREAM_RETRY_MIN_MS.saturating_mul(1 << doublings);
    Some(Duration::from_millis(ms.min(PEER_STREAM_RETRY_MAX_MS)))
}

type RpcErr = RPCError<TypeConfig>;

fn unreachable(msg: impl std::fmt::Display) -> RpcErr {
    RPCError::Unreachable(Unreachable::new(&AnyError::error(msg)))
}

fn network(msg: impl std::fmt::Display) -> RpcErr {
    RPCError::Network(NetworkError::new(&AnyError::error(msg)))
}

/// Maps a gRPC failure: connection-level problems are `Unreachable` (openraft backs
/// off); anything else is a network error.
fn from_status(addr: &str, st: tonic::Status) -> RpcErr {
    match st.code() {
        tonic::Code::Unavailable
        | tonic::Code::FailedPrecondition
        | tonic::Code::PermissionDenied => unreachable(format!("{addr}: {}", st.message())),
        _ => network(format!("{addr}: {st}")),
    }
}

impl PeerClient {
    fn envelope<T: Serialize>(&self, v: &T) -> Result<Envelope, RpcErr> {
        self.stamp.wrap(v).map_err(network)
    }

    fn grpc(&self) -> Result<RaftPeerClient<Channel>, RpcErr> {
        self.channel.clone().map(peer_grpc).map_err(unreachable)
    }

    async fn call<Req, Resp, F, Fut>(
        &self,
        req: &Req,
        option: &RPCOption,
        f: F,
    ) -> Result<Resp, RpcErr>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftPeerClient<Channel>, tonic::Request<Envelope>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<trove_proto::raft::Reply>, tonic::Status>>,
    {
        let mut request = tonic::Request::new(self.envelope(req)?);
        // openraft passes the heartbeat interval as the deadline of every AppendEntries;
        // a slow link (RTT above it) would then never commit anything while the followers,
        // still hearing heartbeats, never elect another leader. Floor it.
        request.set_timeout(option.hard_ttl().max(MIN_PEER_RPC_TIMEOUT));
        let reply = f(self.grpc()?, request)
            .await
            .map_err(|st| from_status(&self.addr, st))?
            .into_inner();
        let res: Result<Resp, String> = decode(&reply.payload).map_err(network)?;
        res.map_err(network)
    }

    /// Opens the replication stream and returns the follower's answers, in order.
    ///
    /// A stalled link is detected per request: when the oldest unanswered request is
    /// older than the RPC deadline, the stream ends with an error (openraft then backs
    /// off and opens a new one). An idle stream (nothing unanswered) may stay open
    /// indefinitely; HTTP/2 keep-alives watch the connection meanwhile.
    async fn open_append_stream<S>(
        &mut self,
        input: S,
        option: &RPCOption,
    ) -> Result<BoxStream<'static, Result<StreamAppendResult<TypeConfig>, RpcErr>>, RpcErr>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let deadline = option.hard_ttl().max(MIN_PEER_RPC_TIMEOUT);
        let pending: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
        let unsendable: Arc<Mutex<Option<String>>> = Arc::default();
        let (sent, failed) = (pending.clone(), unsendable.clone());
        let stamp = self.stamp.clone();
        // Requests go out as openraft produces them; an unencodable one ends the stream
        // (and is reported on the answer side once the earlier answers are in).
        let requests = input.scan((), move |_, rpc| {
            let item = match stamp.wrap(&rpc) {
                Ok(env) => {
                    lock(&sent).push_back(Instant::now());
                    Some(env)
                }
                Err(e) => {
                    *lock(&failed) = Some(e);
                    None
                }
            };
            futures::future::ready(item)
        });
        let answers = match self.grpc()?.stream_append(requests).await {
            Ok(r) => r.into_inner(),
            Err(st) if st.code() == tonic::Code::Unimplemented => {
                tracing::info!(target = self.stamp.target, addr = %self.addr,
                    "peer has no StreamAppend (older release): replicating with unary calls");
                self.unary_append = true;
                return Err(unreachable(format!(
                    "{}: no StreamAppend; retrying with unary AppendEntries",
                    self.addr
                )));
            }
            Err(st) => return Err(from_status(&self.addr, st)),
        };
        let state = AnswerState {
            addr: self.addr.clone(),
            answers,
            pending,
            unsendable,
            deadline,
        };
        Ok(Box::pin(futures::stream::unfold(
            Some(state),
            |st| async move {
                let mut st = st?;
                let item = st.next_answer().await?;
                let go_on = matches!(item, Ok(Ok(_)));
                Some((item, go_on.then_some(st)))
            },
        )))
    }
}

/// Locks a mutex whose data stays valid if a holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stamps outgoing requests with the cluster and both node ids.
#[derive(Clone)]
struct Stamp {
    me: PeerIdentity,
    target: u64,
}

impl Stamp {
    fn wrap<T: Serialize>(&self, v: &T) -> Result<Envelope, String> {
        seal(&self.me.cluster_id, self.me.node_id, self.target, v)
    }
}

/// The envelope of a peer request from `source` to `target` in cluster `cluster_id`: the
/// encoded message and its CRC32C, which the receiver checks before decoding.
pub fn seal<T: Serialize>(
    cluster_id: &str,
    source: u64,
    target: u64,
    msg: &T,
) -> Result<Envelope, String> {
    let payload = encode(msg).map_err(|e| e.to_string())?;
    Ok(Envelope {
        cluster_id: cluster_id.to_string(),
        target_node_id: target,
        source_node_id: source,
        payload_crc32c: Some(crc32c::crc32c(&payload)),
        payload: payload.into(),
    })
}

/// The answering half of a replication stream.
struct AnswerState {
    addr: String,
    answers: tonic::Streaming<Reply>,
    /// When each unanswered request was sent, oldest first.
    pending: Arc<Mutex<VecDeque<Instant>>>,
    /// Why the request side stopped early, if it did.
    unsendable: Arc<Mutex<Option<String>>>,
    deadline: Duration,
}

impl AnswerState {
    /// The next answer; `None` when the stream ended cleanly.
    async fn next_answer(&mut self) -> Option<Result<StreamAppendResult<TypeConfig>, RpcErr>> {
        loop {
            match tokio::time::timeout(self.deadline, self.answers.next()).await {
                Ok(Some(Ok(reply))) => {
                    lock(&self.pending).pop_front();
                    let r: Result<StreamAppendResult<TypeConfig>, String> =
                        match decode(&reply.payload) {
                            Ok(r) => r,
                            Err(e) => return Some(Err(network(format!("{}: {e}", self.addr)))),
                        };
                    return Some(r.map_err(network));
                }
                Ok(Some(Err(st))) => return Some(Err(from_status(&self.addr, st))),
                Ok(None) => {
                    let why = lock(&self.unsendable).take();
                    return why.map(|e| Err(network(format!("encoding AppendEntries: {e}"))));
                }
                Err(_) => {
                    let stalled = lock(&self.pending)
                        .front()
                        .is_some_and(|t| t.elapsed() >= self.deadline);
                    if stalled {
                        return Some(Err(network(format!(
                            "{}: no answer to AppendEntries within {:?}",
                            self.addr, self.deadline
                        ))));
                    }
                }
            }
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotDir;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RpcErr> {
        self.call(&rpc, &option, |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RpcErr>>, RpcErr>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        if self.unary_append {
            return stream_append_sequential(self, input, option);
        }
        Box::pin(async move {
            if let Some(wait) = stream_retry_wait(self.failed_opens) {
                tokio::time::sleep(wait).await;
            }
            let opened = self.open_append_stream(input, &option).await;
            self.failed_opens = match &opened {
                Ok(_) => 0,
                Err(_) => self.failed_opens.saturating_add(1),
            };
            opened
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcErr> {
        self.call(&rpc, &option, |mut c, r| async move { c.vote(r).await })
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcErr> {
        self.call(&rpc, &option, |mut c, r| async move { c.pre_vote(r).await })
            .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RpcErr> {
        self.call(&req, &option, |mut c, r| async move {
            c.transfer_leader(r).await
        })
        .await
    }

    /// Streams the snapshot directory file by file in bounded pieces. The producer runs
    /// in its own task feeding a bounded channel, so the gRPC call and the reading
    /// proceed together and memory stays bounded.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let header = SnapshotFrame {
            frame: Some(snapshot_frame::Frame::Header(SnapshotHeader {
                envelope: Some(
                    self.envelope(&(vote, snapshot.meta.clone()))
                        .map_err(rpc_to_streaming)?,
                ),
            })),
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotFrame>(2);
        let dir = snapshot.snapshot.path.clone();
        let producer = tokio::spawn(async move {
            if tx.send(header).await.is_err() {
                return Ok(());
            }
            send_snapshot_files(&dir, &tx).await
        });
        let mut grpc = self.grpc().map_err(rpc_to_streaming)?;
        let call = grpc.install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx));
        let res = tokio::select! {
            r = call => r,
            closed = cancel => {
                producer.abort();
                return Err(StreamingError::Closed(closed));
            }
        };
        match producer.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(rpc_to_streaming(network(format!("reading snapshot: {e}")))),
            Err(e) => return Err(rpc_to_streaming(network(e))),
        }
        let reply = res
            .map_err(|st| rpc_to_streaming(from_status(&self.addr, st)))?
            .into_inner();
        let r: Result<SnapshotResponse<TypeConfig>, String> =
            decode(&reply.payload).map_err(|e| rpc_to_streaming(network(e)))?;
        r.map_err(|e| rpc_to_streaming(network(e)))
    }
}

fn rpc_to_streaming(e: RpcErr) -> StreamingError<TypeConfig> {
    match e {
        RPCError::Unreachable(u) => StreamingError::Unreachable(u),
        RPCError::Timeout(t) => StreamingError::Timeout(t),
        RPCError::Network(n) => StreamingError::Network(n),
        RPCError::RemoteError(r) => StreamingError::Network(NetworkError::new(&AnyError::error(r))),
    }
}

/// Lists the files of a snapshot directory as relative names (`state.bin`,
/// `chunks/<hex>`), in a stable order.
pub fn snapshot_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = vec![("state.bin".to_string(), dir.join("state.bin"))];
    let chunks = dir.join("chunks");
    if chunks.is_dir() {
        let mut names: Vec<String> = std::fs::read_dir(&chunks)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        for n in names {
            out.push((format!("chunks/{n}"), chunks.join(&n)));
        }
    }
    Ok(out)
}

async fn send_snapshot_files(
    dir: &Path,
    tx: &tokio::sync::mpsc::Sender<SnapshotFrame>,
) -> std::io::Result<()> {
    let files = snapshot_files(dir)?;
    let count = files.len() as u64;
    for (name, path) in files {
        let mut f = tokio::fs::File::open(&path).await?;
        let mut offset = 0u64;
        let mut crc = 0u32;
        loop {
            let mut buf = vec![0u8; SNAPSHOT_PIECE_BYTES];
            let mut filled = 0;
            while filled < buf.len() {
                let n = f.read(&mut buf[filled..]).await?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            buf.truncate(filled);
            crc = crc32c::crc32c_append(crc, &buf);
            let last = filled < SNAPSHOT_PIECE_BYTES;
            let len = buf.len() as u64;
            let frame = SnapshotFrame {
                frame: Some(snapshot_frame::Frame::Chunk(SnapshotFileChunk {
                    name: name.clone(),
                    offset,
                    data: buf.into(),
                    last,
                    file_len: if last { offset + len } else { 0 },
                    file_crc32c: if last { crc } else { 0 },
                })),
            };
            if tx.send(frame).await.is_err() {
                return Ok(()); // the call ended; its result reports why
            }
            offset += len;
            if last {
                break;
            }
        }
    }
    let _ = tx
        .send(SnapshotFrame {
            frame: Some(snapshot_frame::Frame::DoneFileCount(count)),
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_retries_wait_longer_after_each_failure_up_to_the_cap() {
        let ms = |n| stream_retry_wait(n).map(|d| d.as_millis() as u64);
        assert_eq!(ms(0), None, "the first attempt does not wait");
        assert_eq!(ms(1), Some(PEER_STREAM_RETRY_MIN_MS));
        assert_eq!(ms(2), Some(2 * PEER_STREAM_RETRY_MIN_MS));
        assert_eq!(ms(3), Some(4 * PEER_STREAM_RETRY_MIN_MS));
        assert_eq!(ms(40), Some(PEER_STREAM_RETRY_MAX_MS));
        assert_eq!(ms(u32::MAX), Some(PEER_STREAM_RETRY_MAX_MS));
    }
}
