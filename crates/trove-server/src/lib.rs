//! A Trove node: opens its data directory, starts Raft, serves the peer protocol on the
//! peer port and the public API (plus gRPC health and reflection) on the client port.
//!
//! Entry point: [`run`]. Data directory layout:
//! `identity` (cluster id, node id, incarnation), `peers` (what this node knows of its
//! peers' acknowledged indexes, see `recovery`), `raft/` (log + vote),
//! `state/` (sled), `chunks/` (content-addressed chunk files), `snapshots/`, and
//! `backups/` (temporary exports while a backup streams; removed at start-up).

pub mod admin;
pub mod api;
pub mod backup;
pub mod config;
pub mod diskspace;
pub mod error;
pub mod formats;
pub mod identity;
pub mod node;
pub mod recovery;
pub mod repair;
pub mod restore;
pub mod telemetry;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use tokio::net::TcpListener;
use tonic::transport::Server;
use trove_proto::raft::raft_peer_server::RaftPeerServer;
use trove_proto::v1::cluster_client::ClusterClient;
use trove_proto::v1::cluster_server::ClusterServer;
use trove_proto::v1::objects_server::ObjectsServer;
use trove_proto::v1::records_server::RecordsServer;
use trove_proto::v1::{AddNodeRequest, StatusRequest};
use trove_raft::{
    AnnounceHandler, FetchChunkHandler, LogStore, Network, PeerHooks, PeerIdentity, PeerService,
    Raft, RecallHandler, StateMachine, TroveNode,
};
use trove_storage::chunks::ChunkStore;
use trove_storage::state::StateStore;
use trove_types::Op;
use trove_types::limits::{
    HTTP2_CONNECTION_WINDOW_BYTES, HTTP2_MAX_FRAME_BYTES, HTTP2_STREAM_WINDOW_BYTES,
    MAX_CLIENT_MESSAGE_BYTES, MAX_PEER_MESSAGE_BYTES,
};

pub use config::{ServerConfig, Tuning, derive_cluster_id, parse_initial_cluster};
pub use error::ServerError;
use identity::Identity;
use node::{Node, NodeRef};

/// How this start relates to the cluster.
enum Start {
    /// Existing data: just run.
    Restart,
    /// Founding member of a new cluster: initialise Raft if it is still pristine.
    Bootstrap(Vec<(u64, String)>),
    /// New member of an existing cluster: ask it to add us.
    Join(String),
}

async fn bind(addr: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError::Listen {
            addr: addr.to_string(),
            reason: if e.kind() == std::io::ErrorKind::AddrInUse {
                "address already in use (is another node running?)".into()
            } else {
                e.to_string()
            },
        })
}

/// Asks an existing cluster for its id (through any member's client port).
async fn fetch_cluster_id(join: &str) -> Result<String, ServerError> {
    let ch = trove_raft::network::peer_endpoint(join)
        .map_err(ServerError::Join)?
        .connect()
        .await
        .map_err(|e| ServerError::Join(format!("cannot reach {join}: {e}")))?;
    let st = ClusterClient::new(ch)
        .status(StatusRequest {
            local: true,
            include_digest: false,
        })
        .await
        .map_err(|e| ServerError::Join(format!("{join} did not answer status: {}", e.message())))?;
    Ok(st.into_inner().cluster_id)
}

/// Works out identity and start mode from the data directory and the configuration.
async fn prepare_identity(cfg: &ServerConfig) -> Result<(Identity, Start), ServerError> {
    if cfg.node_id == 0 {
        return Err(ServerError::Config("--id must be at least 1".into()));
    }
    if let Some(id) = identity::load(&cfg.data_dir)? {
        if id.node_id != cfg.node_id {
            return Err(ServerError::DataDir {
                dir: cfg.data_dir.display().to_string(),
                reason: format!(
                    "it belongs to node {}, not node {}",
                    id.node_id, cfg.node_id
                ),
            });
        }
        identity::make_durable(&cfg.data_dir)?;
        let start = if id.initial_cluster.is_empty() {
            Start::Restart
        } else {
            Start::Bootstrap(id.initial_cluster.clone())
        };
        return Ok((id, start));
    }
    let incarnation = uuid::Uuid::new_v4().to_string();
    if let Some(join) = &cfg.join {
        let cluster_id = fetch_cluster_id(join).await?;
        let id = Identity {
            format: identity::IDENTITY_FORMAT,
            cluster_id,
            node_id: cfg.node_id,
            incarnation,
            initial_cluster: Vec::new(),
        };
        return Ok((id, Start::Join(join.clone())));
    }
    if cfg.initial_cluster.is_empty() {
        return Err(ServerError::Config(format!(
            "{} holds no data: pass --initial-cluster to found a new cluster or --join <CLIENT-ADDR> to join one",
            cfg.data_dir.display()
        )));
    }
    if !cfg.initial_cluster.iter().any(|(i, _)| *i == cfg.node_id) {
        return Err(ServerError::Config(format!(
            "--initial-cluster does not list this node's id {}",
            cfg.node_id
        )));
    }
    let members = cfg.initial_cluster.clone();
    let id = Identity {
        format: identity::IDENTITY_FORMAT,
        cluster_id: derive_cluster_id(&members, &cfg.initial_cluster_token),
        node_id: cfg.node_id,
        incarnation,
        initial_cluster: members.clone(),
    };
    Ok((id, Start::Bootstrap(members)))
}

/// Opens the sled state, reading and checking every value. A state that is damaged
/// (sled reports corruption, a value does not decode) is moved aside to
/// `state-damaged-<unix time>/` and an empty one opened: the state is derived, and
/// `StateMachine::open` and Raft rebuild it from the snapshot and the log. Damage that
/// sled takes for a torn tail of its own log opens as an earlier state, which the same
/// mechanisms bring forward.
fn open_state(dir: &Path, node_id: u64, chunks: &ChunkStore) -> Result<StateStore, ServerError> {
    let state_dir = dir.join("state");
    let chunks = || Ok::<_, ServerError>(chunks.clone());
    let started = std::time::Instant::now();
    match StateStore::open_verified(&state_dir, chunks()?) {
        Ok(store) => {
            tracing::info!(
                node = node_id,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "state store opened and verified"
            );
            Ok(store)
        }
        Err(e @ trove_storage::StorageError::Corrupt { .. }) => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let aside = dir.join(format!("state-damaged-{secs}"));
            tracing::error!(node = node_id, error = %e, aside = %aside.display(), "the state store is damaged: keeping it aside for inspection and rebuilding it from the snapshot and the log");
            std::fs::rename(&state_dir, &aside)
                .map_err(|e| ServerError::Storage(format!("{}: {e}", state_dir.display())))?;
            trove_storage::fsutil::sync_dir(dir).map_err(ServerError::from_storage)?;
            StateStore::open(&state_dir, chunks()?).map_err(ServerError::from_storage)
        }
        Err(e) => Err(ServerError::from_storage(e)),
    }
}

/// Runs a node until `shutdown` resolves (or a fatal error).
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    // Bind first: a port in use must fail before anything is written.
    let client_listener = bind(&config.listen_client).await?;
    let peer_listener = bind(&config.listen_peer).await?;
    let admin_listener = match &config.listen_admin {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    // A node that stopped on a full disk waits for space here instead of crash-looping.
    diskspace::wait_for_space(&config.data_dir, diskspace::MIN_FREE_BYTES_TO_START).await;
    let (ident, start) = prepare_identity(&config).await?;

    let dir = config.data_dir.clone();
    let raft_dir = dir.join("raft");
    // Every format version in the directory is checked, read-only, before anything is
    // written: a format this binary does not understand stops here, untouched.
    formats::check_formats(&dir)?;
    let is_new = identity::load(&dir)?.is_none();
    if is_new {
        identity::create(&dir, &ident)?;
    }
    // One chunk store for the log (chunk entries keep their payload in it) and the state.
    let chunks = ChunkStore::open(&dir.join("chunks")).map_err(ServerError::from_storage)?;
    let log = LogStore::open(&raft_dir, chunks.clone()).map_err(ServerError::from_storage)?;
    // Never resume leadership from the stored vote (see `forget_leadership`): leading
    // again requires an election, which requires the peers' confirmation (`recovery`).
    if log
        .forget_leadership(config.node_id)
        .map_err(ServerError::from_storage)?
    {
        tracing::info!(
            node = config.node_id,
            "was leader before this start; starting as a follower"
        );
    }
    let rebuilding = log.state_rebuild_pending();
    if rebuilding {
        // The damaged log was cut below what the state may have applied: rebuild the
        // (derived) state from the latest snapshot and the kept log.
        let state = dir.join("state");
        tracing::warn!(node = config.node_id, dir = %state.display(), "discarding the state store, to rebuild it from the snapshot and the log");
        match std::fs::remove_dir_all(&state) {
            Ok(()) => trove_storage::fsutil::sync_dir(&dir).map_err(ServerError::from_storage)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ServerError::Storage(format!("{}: {e}", state.display()))),
        }
    }
    let store = Arc::new(open_state(&dir, config.node_id, &chunks)?);
    let sm = StateMachine::open(store.clone(), &dir.join("snapshots"))
        .map_err(ServerError::from_storage)?;
    // The state must reach the log's start: entries up to the purge point exist only in
    // a snapshot. A state behind it (rebuilt or rolled back by damage, with no valid
    // snapshot left to reinstall) cannot be brought forward from this node's own disk.
    let applied = sm
        .raft_meta()
        .map_err(ServerError::from_storage)?
        .last_applied
        .map(|l| l.index);
    if let Some(purged) = log.last_purged_index()
        && applied.is_none_or(|a| a < purged)
    {
        let what = if rebuilding {
            format!("the raft log in {} was damaged and", raft_dir.display())
        } else {
            format!(
                "the state in {} is behind the log and",
                dir.join("state").display()
            )
        };
        return Err(ServerError::Storage(format!(
            "{what} this node's state cannot be rebuilt from what is left (no valid snapshot reaches index {purged}, where the log was purged). Move the data directory away (mv {} {}.damaged) and start the node again with the same command: it will be re-seeded from its peers and will not vote until then",
            dir.display(),
            dir.display()
        )));
    }
    if rebuilding {
        log.state_rebuilt().map_err(ServerError::from_storage)?;
    }
    backup::remove_leftovers(&dir)?;
    // Chunk files that nothing in the state refers to and no log entry holds are left by
    // a crash at the wrong moment (between a chunk entry's file and its log record, or
    // while a release waited for the log to drop the entry): removed in the background.
    let node_id = config.node_id;
    tokio::task::spawn_blocking(move || match store.remove_unreferenced_chunks() {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            node = node_id,
            files = n,
            "removed unreferenced chunk files"
        ),
        Err(e) => {
            tracing::warn!(node = node_id, error = %e, "removing unreferenced chunk files failed")
        }
    });
    let recovery = Arc::new(recovery::Recovery::open(&dir, &ident.incarnation)?);

    let me = PeerIdentity {
        cluster_id: ident.cluster_id.clone(),
        node_id: config.node_id,
    };
    let network = Network::new(me.clone(), config.peer_source_ip);
    let t = &config.tuning;
    let raft_cfg = trove_raft::raft_config(
        t.heartbeat_ms,
        t.election_min_ms,
        t.election_max_ms,
        t.snapshot_every_entries,
    )
    .map_err(|e| ServerError::Config(e.to_string()))?;
    let raft = Raft::new(
        config.node_id,
        Arc::new(raft_cfg),
        network.clone(),
        log.clone(),
        sm.clone(),
    )
    .await
    .map_err(|e| ServerError::Raft(e.to_string()))?;
    // No campaigning until recovery has confirmed this node's state (see `recovery`).
    raft.runtime_config().elect(false);

    let node: NodeRef = Arc::new(Node::new(
        config.clone(),
        ident.cluster_id.clone(),
        raft.clone(),
        sm.clone(),
        log,
        network,
        recovery,
    ));
    tracing::info!(
        node = config.node_id, cluster = %ident.cluster_id, client = %config.client_addr(), peer = %config.peer_addr(),
        "trove node starting"
    );
    // Snapshot builds fetch chunks this node lost from its peers (weak: no cycle).
    let weak = Arc::downgrade(&node);
    sm.set_chunk_repairer(Arc::new(move |hash| {
        let weak = weak.clone();
        Box::pin(async move {
            let node = weak.upgrade().ok_or("the node is stopping")?;
            repair::restore_missing(&node, hash)
                .await
                .map_err(|e| e.to_string())
        })
    }));

    let weak = Arc::downgrade(&node);
    sm.set_snapshot_trigger(
        t.snapshot_every_entries,
        Arc::new(move || {
            let weak = weak.clone();
            Box::pin(async move {
                let node = weak.upgrade().ok_or("the node is stopping")?;
                node.raft
                    .trigger()
                    .snapshot()
                    .await
                    .map_err(|e| e.to_string())
            })
        }),
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    // Peer port: Raft traffic only.
    let announce_node = node.clone();
    let announce: AnnounceHandler = Arc::new(move |id, addrs| {
        let n = announce_node.clone();
        Box::pin(async move {
            api::cluster::set_node_addrs(&n, id, addrs)
                .await
                .map_err(|e| e.to_string())
        })
    });
    let recall_node = node.clone();
    let recall: RecallHandler = Arc::new(move |id, ask| {
        let n = recall_node.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || n.recovery.answer(&n, id, ask))
                .await
                .map_err(|e| e.to_string())?
        })
    });
    let fetch_node = node.clone();
    let fetch_chunk: FetchChunkHandler = Arc::new(move |from, hash| {
        let n = fetch_node.clone();
        Box::pin(async move { repair::serve_fetch(&n, from, hash).await })
    });
    let hooks = PeerHooks {
        announce,
        recall,
        fetch_chunk,
        gate: node.recovery.gate.clone(),
        chunks: node.store().chunks().clone(),
    };
    let peer_svc =
        RaftPeerServer::new(PeerService::new(me, raft.clone(), sm.incoming_dir(), hooks))
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
    let mut rx = stop_rx.clone();
    tasks.spawn(async move {
        Server::builder()
            .initial_stream_window_size(HTTP2_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES)
            .max_frame_size(HTTP2_MAX_FRAME_BYTES)
            .http2_keepalive_interval(Some(Duration::from_secs(5)))
            .add_service(peer_svc)
            .serve_with_incoming_shutdown(accepting(peer_listener), async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
            .map_err(|e| ServerError::Listen {
                addr: "peer port".into(),
                reason: e.to_string(),
            })
    });

    // Client port: public API + health + reflection.
    let (health_reporter, health_svc) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(trove_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(trove_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let records = RecordsServer::new(api::records::RecordsService::new(node.clone()))
        .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES);
    let objects = ObjectsServer::new(api::objects::ObjectsService::new(node.clone()))
        .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES);
    let cluster = ClusterServer::new(api::cluster::ClusterService::new(node.clone()));
    let mut rx = stop_rx.clone();
    tasks.spawn(async move {
        Server::builder()
            .initial_stream_window_size(HTTP2_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES)
            .max_frame_size(HTTP2_MAX_FRAME_BYTES)
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .layer(telemetry::GrpcLayer::new(config.node_id))
            .add_service(health_svc)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(records)
            .add_service(objects)
            .add_service(cluster)
            .serve_with_incoming_shutdown(accepting(client_listener), async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
            .map_err(|e| ServerError::Listen {
                addr: "client port".into(),
                reason: e.to_string(),
            })
    });

    // Join the cluster as the start mode requires. Recovery opens the vote gate when
    // this node's state is confirmed (and founds the cluster if it is new); neither task
    // is in `tasks`: their completion must not end the node.
    match start {
        Start::Restart => {
            tokio::spawn(recovery::recover(node.clone(), None));
        }
        Start::Bootstrap(members) => {
            tokio::spawn(recovery::recover(node.clone(), Some(members)));
        }
        Start::Join(addr) => {
            let n = node.clone();
            tokio::spawn(async move { join_cluster(&n, &addr).await });
            tokio::spawn(recovery::recover(node.clone(), None));
        }
    }
    tasks.spawn(recovery::keep_watermarks(node.clone(), stop_rx.clone()));
    // The scrubber ends only with the node.
    tokio::spawn(repair::scrub(node.clone(), stop_rx.clone()));

    tasks.spawn(background(node.clone(), health_reporter, stop_rx.clone()));

    // Admin port: metrics, health probes, status page.
    if let Some(listener) = admin_listener {
        let observed = telemetry::ObservedRef::default();
        tokio::spawn(telemetry::observe(
            node.clone(),
            observed.clone(),
            stop_rx.clone(),
        ));
        tasks.spawn(admin::serve(
            listener,
            node.clone(),
            observed,
            stop_rx.clone(),
        ));
    }
    // Both ports accept connections: tell systemd (Type=notify) we are up. Waiting for a
    // leader here would deadlock a cluster whose members start one after another.
    notify_systemd(&[sd_notify::NotifyState::Ready]);

    // Wait for shutdown or a task failing.
    let result = tokio::select! {
        _ = shutdown => Ok(()),
        Some(r) = tasks.join_next() => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(ServerError::Raft(e.to_string())),
        },
    };
    tracing::info!(node = config.node_id, "trove node stopping");
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    let _ = raft.shutdown().await;
    let _ = node.store().flush();
    tasks.abort_all();
    result
}

/// Tells systemd about a state change when it runs us as `Type=notify` (no-op otherwise).
fn notify_systemd(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Asks the cluster (through `addr`) to add this node, retrying until it succeeds.
async fn join_cluster(node: &Node, addr: &str) {
    let me = node.self_node();
    let mut delay = Duration::from_millis(200);
    loop {
        let res = async {
            let ch = node.client_channel(addr)?;
            ClusterClient::new(ch)
                .add_node(AddNodeRequest {
                    id: node.id,
                    client_addr: me.client_addr.clone(),
                    peer_addr: me.peer_addr.clone(),
                    promote: true,
                })
                .await
        }
        .await;
        match res {
            Ok(_) => {
                tracing::info!(node = node.id, "joined the cluster");
                return;
            }
            Err(st)
                if st.code() == tonic::Code::FailedPrecondition
                    || st.code() == tonic::Code::AlreadyExists =>
            {
                tracing::error!(node = node.id, error = %st.message(), "the cluster refused to add this node");
                return;
            }
            Err(st) => {
                tracing::warn!(node = node.id, error = %st.message(), "join attempt failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Periodic duties: health status, announcing our addresses, expiring abandoned uploads.
async fn background(
    node: NodeRef,
    health: tonic_health::server::HealthReporter,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_expire = tokio::time::Instant::now();
    let expire_every = Duration::from_millis(node.config.tuning.expire_interval_ms);
    let mut serving: Option<bool> = None;
    // React to Raft changes (a leader appearing flips health to SERVING at once), and
    // tick for the periodic duties.
    let mut raft_changes = node.raft.metrics();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = raft_changes.changed() => {
                if r.is_err() {
                    return Ok(()); // Raft has shut down.
                }
            }
            _ = stop.changed() => return Ok(()),
        }
        let m = node.metrics();
        if let Err(e) = &m.running_state {
            return Err(ServerError::Raft(format!("raft stopped: {e}")));
        }
        // Health: serving while a leader is known.
        let ok = m.current_leader.is_some();
        if serving != Some(ok) {
            serving = Some(ok);
            let st = if ok {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            for name in [
                "",
                "trove.v1.Records",
                "trove.v1.Objects",
                "trove.v1.Cluster",
            ] {
                health.set_service_status(name, st).await;
            }
        }
        // Announce our addresses if the membership does not have them yet.
        let want = node.self_node();
        let have = m.membership_config.membership().get_node(&node.id).cloned();
        if let (Some(have), Some(leader)) = (have, m.current_leader)
            && have != want
        {
            let res = if leader == node.id {
                api::cluster::set_node_addrs(&node, node.id, want)
                    .await
                    .map_err(|e| e.to_string())
            } else {
                announce_to(&node, leader, &want).await
            };
            if let Err(e) = res {
                tracing::debug!(error = %e, "announcing addresses failed; will retry");
            }
        }
        // Expire abandoned uploads and old request ids (leader only).
        if m.current_leader == Some(node.id) && last_expire.elapsed() >= expire_every {
            last_expire = tokio::time::Instant::now();
            if let Err(e) = node.propose(None, Op::Expire).await {
                tracing::debug!(error = %e, "expiry proposal failed");
            }
        }
    }
}

async fn announce_to(node: &Node, leader: u64, want: &TroveNode) -> Result<(), String> {
    let m = node.metrics();
    let leader_node = m
        .membership_config
        .membership()
        .get_node(&leader)
        .cloned()
        .ok_or("leader not in membership")?;
    let mut c = node.network.raw_client(&leader_node.peer_addr)?;
    let env = node.peer_envelope(leader, want)?;
    node::peer_reply(None, c.announce(env)).await
}

/// Connections accepted on `listener`, with Nagle's algorithm off. `Server::tcp_nodelay`
/// only applies to listeners tonic binds itself, and with Nagle on every small response
/// waited for the client's delayed ACK (about 40 ms per request on Linux).
fn accepting(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}
