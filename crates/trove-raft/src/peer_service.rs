//! The incoming side of the peer protocol: a tonic service that checks the cluster id,
//! the target node id and the payload's CRC32C of every request, decodes it and hands it
//! to openraft.
//!
//! The chunk buffers of an AppendEntries request that arrived under its sender's CRC32C
//! are handed to the chunk store as vouched for (`ChunkStore::vouch_for`): the leader
//! named each chunk by hashing its bytes, the checksum shows these are the same bytes, and
//! the log hands apply these very buffers, so applying them does not hash them again. An
//! entry read back from the log file instead is a copy, and is hashed.
//!
//! Snapshots arrive as a stream of file pieces; they are written to a temporary
//! directory next to the snapshots (bounded memory), each file's length and CRC32C
//! checked, the whole directory verified, and only then given to openraft.

use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use openraft::EntryPayload;
use openraft::raft::AppendEntriesRequest;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tonic::{Request, Response, Status, Streaming};
use trove_proto::raft::raft_peer_server::RaftPeer;
use trove_proto::raft::{Envelope, Reply, SnapshotFrame, snapshot_frame};
use trove_storage::chunks::ChunkStore;
use trove_types::{Command, Op};

use crate::codec::{decode, encode};
use crate::gate::{RecallReply, RecallRequest, VoteGate};
use crate::network::{PeerIdentity, lock};
use crate::types::{
    Raft, Snapshot, SnapshotDir, SnapshotMeta, TroveNode, TypeConfig, Vote, VoteRequest,
};

/// Handles a node's announcement of its addresses (implemented by the server, which
/// serialises membership changes).
pub type AnnounceHandler =
    Arc<dyn Fn(u64, TroveNode) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Answers a restarting peer's `Recall` (implemented by the server's recovery module).
pub type RecallHandler = Arc<
    dyn Fn(u64, RecallRequest) -> BoxFuture<'static, Result<RecallReply, String>> + Send + Sync,
>;

/// Serves a peer's request for the verified bytes of one chunk (implemented by the
/// server, which reads its chunk store).
pub type FetchChunkHandler = Arc<
    dyn Fn(u64, trove_types::Sha256Digest) -> BoxFuture<'static, Result<bytes::Bytes, String>>
        + Send
        + Sync,
>;

/// What the server plugs into the peer service besides Raft itself.
pub struct PeerHooks {
    /// Address announcements.
    pub announce: AnnounceHandler,
    /// Questions from restarting peers.
    pub recall: RecallHandler,
    /// Chunk requests from peers repairing their copy.
    pub fetch_chunk: FetchChunkHandler,
    /// Whether this node may vote yet.
    pub gate: Arc<VoteGate>,
    /// This node's chunk store, told which chunk buffers arrived intact.
    pub chunks: ChunkStore,
}

/// The peer gRPC service.
pub struct PeerService {
    me: PeerIdentity,
    raft: Raft,
    incoming_dir: PathBuf,
    hooks: PeerHooks,
}

impl PeerService {
    /// A service for node `me`; incoming snapshots are assembled under `incoming_dir`.
    pub fn new(me: PeerIdentity, raft: Raft, incoming_dir: PathBuf, hooks: PeerHooks) -> Self {
        PeerService {
            me,
            raft,
            incoming_dir,
            hooks,
        }
    }

    /// Refuses a vote the gate does not admit (see [`VoteGate`]).
    fn gate_vote(&self, rpc: &VoteRequest) -> Result<(), Status> {
        let term = rpc.vote.leader_id().term;
        let candidate = rpc.vote.leader_id().node_id;
        self.hooks.gate.admits(term).map_err(|why| {
            tracing::info!(node = self.me.node_id, term, candidate, %why, "vote refused");
            Status::unavailable(format!("node {} {why}", self.me.node_id))
        })
    }

    fn check(&self, env: &Envelope) -> Result<(), Status> {
        check(&self.me, env)
    }

    fn open<T: DeserializeOwned>(&self, env: &Envelope) -> Result<T, Status> {
        open(&self.me, env)
    }
}

/// Refuses a request meant for another cluster or another node.
fn check(me: &PeerIdentity, env: &Envelope) -> Result<(), Status> {
    if env.cluster_id != me.cluster_id {
        return Err(Status::failed_precondition(format!(
            "cluster id mismatch: this node (id {}) belongs to cluster {}, the request is for cluster {}",
            me.node_id, me.cluster_id, env.cluster_id
        )));
    }
    if env.target_node_id != me.node_id {
        return Err(Status::failed_precondition(format!(
            "node id mismatch: this is node {}, the request is for node {}",
            me.node_id, env.target_node_id
        )));
    }
    Ok(())
}

/// Checks and decodes a request. A payload that does not match its sender's CRC32C is
/// refused with DATA_LOSS (the sender retries); one without (an older sender) is taken.
fn open<T: DeserializeOwned>(me: &PeerIdentity, env: &Envelope) -> Result<T, Status> {
    check(me, env)?;
    if let Some(want) = env.payload_crc32c {
        let got = crc32c::crc32c(&env.payload);
        if got != want {
            return Err(Status::data_loss(format!(
                "peer message from node {} was damaged in transit: its {} bytes have CRC32C \
                 {got:08x}, the sender's was {want:08x}; nothing was taken",
                env.source_node_id,
                env.payload.len()
            )));
        }
    }
    decode(&env.payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable peer message: {e}")))
}

/// Checks and decodes an AppendEntries request; if it came under its sender's CRC32C,
/// vouches to `chunks` for the chunk buffers it carries (see the module docs).
fn open_append(
    me: &PeerIdentity,
    env: &Envelope,
    chunks: &ChunkStore,
) -> Result<AppendEntriesRequest<TypeConfig>, Status> {
    let rpc: AppendEntriesRequest<TypeConfig> = open(me, env)?;
    if env.payload_crc32c.is_some() {
        for entry in &rpc.entries {
            if let EntryPayload::Normal(Command {
                op: Op::PutChunk { hash, data, .. },
                ..
            }) = &entry.payload
            {
                chunks.vouch_for(*hash, data);
            }
        }
    }
    Ok(rpc)
}

/// Encodes an answer (or the error's text) for the wire.
fn encode_reply<T: Serialize, E: std::fmt::Display>(r: Result<T, E>) -> Result<Reply, Status> {
    let r: Result<T, String> = r.map_err(|e| e.to_string());
    let payload = encode(&r).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Reply {
        payload: payload.into(),
    })
}

fn reply<T: Serialize, E: std::fmt::Display>(r: Result<T, E>) -> Result<Response<Reply>, Status> {
    encode_reply(r).map(Response::new)
}

/// The answers of a replication stream.
type AnswerStream = Pin<Box<dyn Stream<Item = Result<Reply, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, req: Request<Envelope>) -> Result<Response<Reply>, Status> {
        let rpc = open_append(&self.me, req.get_ref(), &self.hooks.chunks)?;
        reply(self.raft.append_entries(rpc).await)
    }

    type StreamAppendStream = AnswerStream;

    /// Hands every request of the stream to openraft as it arrives (openraft pipelines
    /// them and answers in order). A request for another cluster or node, or one that
    /// does not decode, ends the stream: the answers to the requests before it are
    /// sent, then the refusal as the stream's status.
    async fn stream_append(
        &self,
        req: Request<Streaming<Envelope>>,
    ) -> Result<Response<AnswerStream>, Status> {
        let refused: Arc<std::sync::Mutex<Option<Status>>> = Arc::default();
        let (me, refusal) = (self.me.clone(), refused.clone());
        let chunks = self.hooks.chunks.clone();
        let requests = futures::stream::unfold(req.into_inner(), move |mut incoming| {
            let (me, refusal, chunks) = (me.clone(), refusal.clone(), chunks.clone());
            async move {
                match incoming.message().await {
                    Ok(Some(env)) => match open_append(&me, &env, &chunks) {
                        Ok(rpc) => Some((rpc, incoming)),
                        Err(st) => {
                            *lock(&refusal) = Some(st);
                            None
                        }
                    },
                    // The leader closed the stream or the connection dropped.
                    Ok(None) | Err(_) => None,
                }
            }
        });
        let answers = self
            .raft
            .stream_append(requests)
            .map(|r| encode_reply(r.map_err(|fatal| fatal.to_string())));
        let refusal = futures::stream::once(async move { lock(&refused).take() })
            .filter_map(|st| futures::future::ready(st.map(Err)));
        Ok(Response::new(Box::pin(answers.chain(refusal))))
    }

    async fn vote(&self, req: Request<Envelope>) -> Result<Response<Reply>, Status> {
        let rpc: VoteRequest = self.open(req.get_ref())?;
        self.gate_vote(&rpc)?;
        reply(self.raft.vote(rpc).await)
    }

    async fn pre_vote(&self, req: Request<Envelope>) -> Result<Response<Reply>, Status> {
        let rpc: VoteRequest = self.open(req.get_ref())?;
        self.gate_vote(&rpc)?;
        reply(self.raft.pre_vote(rpc).await)
    }

    async fn recall(&self, req: Request<Envelope>) -> Result<Response<Reply>, Status> {
        let ask: RecallRequest = self.open(req.get_ref())?;
        let from = req.get_ref().source_node_id;
        reply((self.hooks.recall)(from, ask).await)
    }

    async fn fetch_chunk(&self, req: Request<Envelope>) -> Result<Response<Reply>, Status> {
        let hash: trove_types::Sha256Digest = self.open(req.get_ref())?;
        let from = req.get_ref().source_node_id;
        // `Vec<u8>`: postcard writes it as a length and the raw bytes.
        reply(
            (self.hooks.fetch_chunk)(from, hash)
                .await
                .map(|b| b.to_vec()),
        )
    }

    async fn transfer_leader(&self, req: Request<Envelope>) -> Result<Response<Reply>, Status> {
        let rpc = self.open(req.get_ref())?;
        reply(self.raft.handle_transfer_leader(rpc).await)
    }

    async fn announce(&self, req: Request<Envelope>) -> Result<Response<Reply>, Status> {
        self.check(req.get_ref())?;
        let node: TroveNode = decode(&req.get_ref().payload)
            .map_err(|e| Status::invalid_argument(format!("undecodable announcement: {e}")))?;
        let from = req.get_ref().source_node_id;
        reply((self.hooks.announce)(from, node).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotFrame>>,
    ) -> Result<Response<Reply>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let Some(snapshot_frame::Frame::Header(h)) = first.frame else {
            return Err(Status::invalid_argument(
                "snapshot stream must start with a header",
            ));
        };
        let env = h
            .envelope
            .ok_or_else(|| Status::invalid_argument("snapshot header without envelope"))?;
        let (vote, meta): (Vote, SnapshotMeta) = self.open(&env)?;
        let tmp = self
            .incoming_dir
            .join(format!("incoming-{}.tmp", uuid_like(&meta)));
        let res = receive_files(&mut stream, &tmp).await;
        let dir = match res {
            Ok(()) => tmp.with_extension("ready"),
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&tmp).await;
                return Err(e);
            }
        };
        // Verify everything before openraft sees it.
        let tmp2 = tmp.clone();
        let dir2 = dir.clone();
        let verified = tokio::task::spawn_blocking(move || -> Result<(), String> {
            trove_storage::snapshot::verify_snapshot(&tmp2).map_err(|e| e.to_string())?;
            if dir2.exists() {
                std::fs::remove_dir_all(&dir2).map_err(|e| e.to_string())?;
            }
            std::fs::rename(&tmp2, &dir2).map_err(|e| e.to_string())?;
            Ok(())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        if let Err(e) = verified {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
            return Err(Status::data_loss(format!(
                "received snapshot failed verification: {e}"
            )));
        }
        let snapshot = Snapshot {
            meta,
            snapshot: SnapshotDir { path: dir.clone() },
        };
        let r = self.raft.install_full_snapshot(vote, snapshot).await;
        // The state machine copied (hard-linked) what it needs.
        let _ = tokio::fs::remove_dir_all(&dir).await;
        reply(r)
    }
}

fn uuid_like(meta: &SnapshotMeta) -> String {
    let idx = meta.last_log_id.map(|l| l.index).unwrap_or(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{idx}-{nanos}")
}

/// Only `state.bin` and `chunks/<64 hex>` may be written: nothing can escape the
/// temporary directory.
fn safe_relative(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    if name == "state.bin" {
        return Some(p.to_path_buf());
    }
    let rest = name.strip_prefix("chunks/")?;
    (rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit())).then(|| p.to_path_buf())
}

async fn receive_files(stream: &mut Streaming<SnapshotFrame>, dir: &Path) -> Result<(), Status> {
    let io = |e: std::io::Error| Status::internal(format!("writing snapshot: {e}"));
    if tokio::fs::try_exists(dir).await.map_err(io)? {
        tokio::fs::remove_dir_all(dir).await.map_err(io)?;
    }
    tokio::fs::create_dir_all(dir.join("chunks"))
        .await
        .map_err(io)?;
    let mut current: Option<(String, Pin<Box<tokio::fs::File>>, u32, u64)> = None;
    let mut files_done = 0u64;
    loop {
        let Some(frame) = stream.message().await? else {
            return Err(Status::invalid_argument("snapshot stream ended early"));
        };
        match frame.frame {
            Some(snapshot_frame::Frame::Chunk(c)) => {
                let rel = safe_relative(&c.name).ok_or_else(|| {
                    Status::invalid_argument(format!("bad snapshot file name {:?}", c.name))
                })?;
                if current.as_ref().is_none_or(|(n, ..)| n != &c.name) {
                    if c.offset != 0 {
                        return Err(Status::invalid_argument(
                            "snapshot file does not start at offset 0",
                        ));
                    }
                    let f = tokio::fs::File::create(dir.join(&rel)).await.map_err(io)?;
                    current = Some((c.name.clone(), Box::pin(f), 0, 0));
                }
                let Some((_, f, crc, written)) = current.as_mut() else {
                    return Err(Status::internal("no open snapshot file"));
                };
                if c.offset != *written {
                    return Err(Status::invalid_argument("snapshot pieces out of order"));
                }
                f.seek(std::io::SeekFrom::Start(c.offset))
                    .await
                    .map_err(io)?;
                f.write_all(&c.data).await.map_err(io)?;
                *crc = crc32c::crc32c_append(*crc, &c.data);
                *written += c.data.len() as u64;
                if c.last {
                    if *written != c.file_len || *crc != c.file_crc32c {
                        return Err(Status::data_loss(format!(
                            "snapshot file {} arrived damaged (length or CRC mismatch)",
                            c.name
                        )));
                    }
                    f.sync_all().await.map_err(io)?;
                    current = None;
                    files_done += 1;
                }
            }
            Some(snapshot_frame::Frame::DoneFileCount(n)) => {
                if n != files_done || current.is_some() {
                    return Err(Status::data_loss(format!(
                        "snapshot incomplete: {files_done} of {n} files received"
                    )));
                }
                trove_storage::fsutil::sync_dir(&dir.join("chunks"))
                    .map_err(|e| Status::internal(e.to_string()))?;
                trove_storage::fsutil::sync_dir(dir)
                    .map_err(|e| Status::internal(e.to_string()))?;
                return Ok(());
            }
            _ => {
                return Err(Status::invalid_argument(
                    "unexpected frame in snapshot stream",
                ));
            }
        }
    }
}
