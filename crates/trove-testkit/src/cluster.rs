//! A cluster of real `trove server` processes on loopback, each behind its own peer
//! proxy ([`crate::proxy`]): node `i` listens on its own client and peer ports,
//! advertises the proxy's address as its peer address, and binds its outgoing peer
//! connections to 127.0.0.(10+i). Logs go to `<root>/node-<i>.log` (appended across
//! restarts), data to `<root>/node-<i>/`.
//!
//! Processes are signalled by PID: SIGKILL (crash), SIGSTOP/SIGCONT (pause). Every
//! wait is a bounded poll. Dropping the cluster SIGKILLs every process it started.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use trove_client::{Client, ClientConfig, ClusterStatus};

use crate::error::{Result, TestkitError};
use crate::proxy::{Proxy, source_ip};

/// How long a node may take to accept connections after it is spawned.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of one status poll of one node.
pub const POLL_TIMEOUT: Duration = Duration::from_millis(800);
/// Grace period of a clean stop before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How to run the nodes.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The `trove` binary.
    pub bin: PathBuf,
    /// Folder for data directories and logs.
    pub root: PathBuf,
    /// `RUST_LOG` of the servers.
    pub log_level: String,
    /// Extra environment of every server process (e.g. failpoints).
    pub env: Vec<(String, String)>,
    /// Extra `trove server` flags for every node.
    pub extra_args: Vec<String>,
    /// Put each node's data on its own loop-mounted XFS (for power cuts; needs root).
    pub loop_disks: bool,
}

/// Where a node's process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Running,
    /// SIGSTOPped.
    Paused,
    /// Not running (killed, or exited).
    Down,
    /// Removed from the membership and stopped for good.
    Removed,
}

/// One node and everything needed to restart it.
pub struct NodeProc {
    pub id: u64,
    pub client_addr: String,
    /// The proxy address the node advertises as its peer address.
    pub peer_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
    removed: bool,
    /// How many times the process was started.
    pub starts: u32,
}

/// What the monitor needs to poll one node, without locking the cluster.
#[derive(Clone)]
pub struct PollTarget {
    pub client_addr: String,
    /// An SDK client for this node only (one attempt, short deadline).
    pub client: Client,
    /// How many times the process was started (its incarnation).
    pub starts: u32,
    pub removed: bool,
}

/// The poll targets of every node, shared with the monitor.
pub type PollTargets = Arc<RwLock<BTreeMap<u64, PollTarget>>>;

impl NodeProc {
    /// Current state (reaps the process if it exited).
    pub fn state(&mut self) -> NodeState {
        if self.removed {
            return NodeState::Removed;
        }
        if let Some(c) = &mut self.child
            && !matches!(c.try_wait(), Ok(None))
        {
            self.child = None;
            self.paused = false;
        }
        match (&self.child, self.paused) {
            (None, _) => NodeState::Down,
            (Some(_), true) => NodeState::Paused,
            (Some(_), false) => NodeState::Running,
        }
    }

    fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        let pid = self.pid().ok_or_else(|| TestkitError::Node {
            id: self.id,
            message: format!("cannot send {sig}: not running"),
        })?;
        kill(pid, sig).map_err(|e| TestkitError::Node {
            id: self.id,
            message: format!("{sig}: {e}"),
        })
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read(&self.log_path).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn free_port() -> Result<u16> {
    let l =
        TcpListener::bind("127.0.0.1:0").map_err(|e| TestkitError::io("bind a free port", e))?;
    Ok(l.local_addr()
        .map_err(|e| TestkitError::io("free port", e))?
        .port())
}

fn poll_client(addr: &str) -> Result<Client> {
    let cfg = ClientConfig {
        request_timeout: POLL_TIMEOUT,
        connect_timeout: Duration::from_millis(300),
        retry_budget: Duration::ZERO,
        ..ClientConfig::new([addr])
    };
    Client::new(cfg).map_err(|e| TestkitError::client(format!("client for {addr}"), e))
}

/// The node processes of one cluster.
pub struct ProcessCluster {
    cfg: ClusterConfig,
    nodes: BTreeMap<u64, NodeProc>,
    proxy: Proxy,
    targets: PollTargets,
    /// Each node's filesystem, with `loop_disks` (dropped after the processes stop).
    disks: Option<crate::disks::LoopDisks>,
}

impl ProcessCluster {
    /// Starts `n` founding members (ids 1..=n) behind `proxy` and waits until they
    /// accept connections (not for a leader: see [`ProcessCluster::wait_leader`]).
    pub async fn start(cfg: ClusterConfig, n: u64, proxy: Proxy) -> Result<ProcessCluster> {
        std::fs::create_dir_all(&cfg.root)
            .map_err(|e| TestkitError::io(format!("create {}", cfg.root.display()), e))?;
        let disks = cfg
            .loop_disks
            .then(|| crate::disks::LoopDisks::new(&cfg.root));
        let mut cluster = ProcessCluster {
            cfg,
            nodes: BTreeMap::new(),
            proxy,
            targets: Arc::new(RwLock::new(BTreeMap::new())),
            disks,
        };
        let mut planned = Vec::new();
        for id in 1..=n {
            planned.push(cluster.plan(id).await?);
        }
        let initial = planned
            .iter()
            .map(|p| format!("{}={}", p.id, p.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        for mut node in planned {
            node.args
                .extend(["--initial-cluster".into(), initial.clone()]);
            cluster.nodes.insert(node.id, node);
        }
        for id in 1..=n {
            cluster.spawn(id, &[])?;
        }
        for id in 1..=n {
            cluster.wait_listening(id).await?;
        }
        Ok(cluster)
    }

    /// Allocates ports and the proxy of a new node `id` (not started).
    async fn plan(&mut self, id: u64) -> Result<NodeProc> {
        let client_addr = format!("127.0.0.1:{}", free_port()?);
        let peer_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let peer_addr = self.proxy.add_node(id, peer_listen).await?;
        let data_dir = match &mut self.disks {
            Some(d) => d.create(id)?.join(format!("node-{id}")),
            None => self.cfg.root.join(format!("node-{id}")),
        };
        let mut args = vec![
            "server".to_string(),
            "--id".into(),
            id.to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen-client".into(),
            client_addr.clone(),
            "--listen-peer".into(),
            peer_listen.to_string(),
            "--advertise-peer".into(),
            peer_addr.to_string(),
            "--peer-source-ip".into(),
            source_ip(id)?.to_string(),
            // Snapshots far more often than the default, so that snapshot builds, log
            // purges and snapshot installs happen under the faults of a short run.
            "--snapshot-every-entries".into(),
            "1024".into(),
        ];
        args.extend(self.cfg.extra_args.iter().cloned());
        self.targets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                PollTarget {
                    client: poll_client(&client_addr)?,
                    client_addr: client_addr.clone(),
                    starts: 0,
                    removed: false,
                },
            );
        Ok(NodeProc {
            id,
            client_addr,
            peer_addr,
            log_path: self.cfg.root.join(format!("node-{id}.log")),
            data_dir,
            args,
            child: None,
            paused: false,
            removed: false,
            starts: 0,
        })
    }

    fn spawn(&mut self, id: u64, extra_env: &[(String, String)]) -> Result<()> {
        let cfg = &self.cfg;
        let node = self.nodes.get_mut(&id).ok_or_else(|| no_node(id))?;
        node.starts += 1;
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&node.log_path)
                .map_err(|e| TestkitError::io(format!("open {}", node.log_path.display()), e))
        };
        let mut log = open()?;
        let env_note: Vec<String> = extra_env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        writeln!(
            log,
            "=== harness: start #{} of node {}: {}trove {} ===",
            node.starts,
            id,
            env_note.concat(),
            node.args.join(" ")
        )
        .map_err(|e| TestkitError::io("write node log", e))?;
        let mut cmd = Command::new(&cfg.bin);
        // Hermetic: every server flag can come from a TROVE_* variable; drop the caller's.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TROVE_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(&node.args)
            .env("RUST_LOG", &cfg.log_level)
            .env("NO_COLOR", "1")
            .envs(cfg.env.iter().map(|(k, v)| (k, v)))
            .envs(extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(open()?))
            .stderr(Stdio::from(log));
        let child = cmd.spawn().map_err(|e| {
            TestkitError::io(format!("spawn {} for node {id}", cfg.bin.display()), e)
        })?;
        node.child = Some(child);
        node.paused = false;
        if let Some(t) = self
            .targets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&id)
        {
            t.starts = node.starts;
        }
        Ok(())
    }

    /// Waits until node `id` accepts connections on its client port.
    async fn wait_listening(&mut self, id: u64) -> Result<()> {
        let start = Instant::now();
        loop {
            let node = self.nodes.get_mut(&id).ok_or_else(|| no_node(id))?;
            if node.state() == NodeState::Down {
                return Err(TestkitError::Node {
                    id,
                    message: format!("exited at start-up; log tail:\n{}", node.log_tail(20)),
                });
            }
            if tokio::net::TcpStream::connect(&node.client_addr)
                .await
                .is_ok()
            {
                return Ok(());
            }
            if start.elapsed() > STARTUP_TIMEOUT {
                return Err(TestkitError::Timeout(format!(
                    "node {id} not listening after {STARTUP_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The proxy in front of the peer ports.
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// The folder of data directories and logs.
    pub fn root(&self) -> &Path {
        &self.cfg.root
    }

    /// Node `id`.
    pub fn node(&self, id: u64) -> Option<&NodeProc> {
        self.nodes.get(&id)
    }

    /// Every node ever started, removed ones included.
    pub fn all_ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Nodes that were not removed (running or not).
    pub fn member_ids(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| !n.removed)
            .map(|n| n.id)
            .collect()
    }

    /// State of node `id`.
    pub fn state(&mut self, id: u64) -> NodeState {
        self.nodes
            .get_mut(&id)
            .map_or(NodeState::Removed, NodeProc::state)
    }

    /// Members whose process runs and is not paused.
    pub fn live_ids(&mut self) -> Vec<u64> {
        self.nodes
            .values_mut()
            .filter_map(|n| (n.state() == NodeState::Running).then_some(n.id))
            .collect()
    }

    /// Client addresses of the members.
    pub fn client_addrs(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| !n.removed)
            .map(|n| n.client_addr.clone())
            .collect()
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        self.nodes.get_mut(&id).ok_or_else(|| no_node(id))?.kill9();
        Ok(())
    }

    /// SIGKILLs every member at once (all signalled before any is reaped).
    pub fn kill_all(&mut self) {
        for n in self.nodes.values() {
            if let Some(pid) = n.pid() {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        for n in self.nodes.values_mut() {
            n.kill9();
        }
    }

    /// SIGSTOPs node `id`.
    pub fn pause(&mut self, id: u64) -> Result<()> {
        let node = self.nodes.get_mut(&id).ok_or_else(|| no_node(id))?;
        node.signal(Signal::SIGSTOP)?;
        node.paused = true;
        Ok(())
    }

    /// SIGCONTs node `id` (no-op unless paused).
    pub fn resume(&mut self, id: u64) -> Result<()> {
        let node = self.nodes.get_mut(&id).ok_or_else(|| no_node(id))?;
        if node.paused {
            node.signal(Signal::SIGCONT)?;
            node.paused = false;
        }
        Ok(())
    }

    /// Starts node `id` again with its arguments and data (plus `extra_env` for this
    /// start only) and waits until it accepts connections.
    pub async fn restart(&mut self, id: u64, extra_env: &[(String, String)]) -> Result<()> {
        if self.state(id) != NodeState::Down {
            return Ok(());
        }
        self.spawn(id, extra_env)?;
        self.wait_listening(id).await
    }

    /// A power cut of node `id`: its filesystem stops at once (everything not fsynced is
    /// lost), the process is killed, and the filesystem is mounted again (ready for
    /// [`ProcessCluster::restart`]). Needs `ClusterConfig::loop_disks`.
    pub fn power_cut(&mut self, id: u64) -> Result<()> {
        let disks = self.disks.as_mut().ok_or_else(|| TestkitError::Node {
            id,
            message: "power cuts need the cluster's loop disks".into(),
        })?;
        disks.cut(id)?;
        self.nodes.get_mut(&id).ok_or_else(|| no_node(id))?.kill9();
        self.disks.as_mut().map_or(Ok(()), |d| d.remount(id))
    }

    /// Simulates what a power cut does to the derived state store of node `id` (which
    /// must be down): removes `<data>/state`. The state is derived (ARCHITECTURE.md):
    /// the node must rebuild it from its latest snapshot and its log, so losing all of
    /// it, the worst a power cut can do to it, must lose nothing acknowledged.
    pub fn drop_state_store(&mut self, id: u64) -> Result<()> {
        if self.state(id) != NodeState::Down {
            return Err(TestkitError::Node {
                id,
                message: "its state store can only be dropped while it is down".into(),
            });
        }
        let dir = self
            .nodes
            .get(&id)
            .ok_or_else(|| no_node(id))?
            .data_dir
            .join("state");
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(TestkitError::io(format!("remove {}", dir.display()), e)),
        }
    }

    /// The data directory of node `id`.
    fn data_dir(&self, id: u64) -> Result<PathBuf> {
        Ok(self
            .nodes
            .get(&id)
            .ok_or_else(|| no_node(id))?
            .data_dir
            .clone())
    }

    fn require_down(&mut self, id: u64, what: &str) -> Result<()> {
        if self.state(id) != NodeState::Down {
            return Err(TestkitError::Node {
                id,
                message: format!("{what} only while it is down"),
            });
        }
        Ok(())
    }

    /// A lost volume: deletes node `id`'s whole data directory (the node must be down).
    pub fn wipe(&mut self, id: u64) -> Result<()> {
        self.require_down(id, "its volume can be wiped")?;
        let dir = self.data_dir(id)?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(TestkitError::io(format!("remove {}", dir.display()), e)),
        }
        match dir.parent() {
            Some(parent) => sync_filesystem(parent),
            None => Ok(()),
        }
    }

    /// Damages up to `n` of node `id`'s chunk files (it may be running), chosen with
    /// `rng`, each in one of four ways: a flipped bit, a zeroed range, a truncation, a
    /// deletion. Returns what was done, one line per file.
    pub fn damage_chunks(
        &self,
        id: u64,
        n: usize,
        rng: &mut impl rand::Rng,
    ) -> Result<Vec<String>> {
        let root = self.data_dir(id)?.join("chunks");
        let mut files = Vec::new();
        let shards = std::fs::read_dir(&root)
            .map_err(|e| TestkitError::io(format!("list {}", root.display()), e))?;
        for shard in shards.flatten() {
            let name = shard.file_name();
            if name.len() != 2 || !shard.path().is_dir() {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(shard.path()) {
                files.extend(entries.flatten().map(|e| e.path()));
            }
        }
        files.sort();
        let mut done = Vec::new();
        for _ in 0..n {
            if files.is_empty() {
                break;
            }
            let path = files.swap_remove(rng.random_range(0..files.len()));
            let io = |e| TestkitError::io(format!("damage {}", path.display()), e);
            let how = match rng.random_range(0..4u8) {
                3 => {
                    std::fs::remove_file(&path).map_err(io)?;
                    "deleted"
                }
                2 => {
                    let len = std::fs::metadata(&path).map_err(io)?.len();
                    OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(len / 2))
                        .map_err(io)?;
                    "truncated"
                }
                k => {
                    let mut d = std::fs::read(&path).map_err(io)?;
                    if d.is_empty() {
                        continue;
                    }
                    let at = rng.random_range(0..d.len());
                    if k == 0 {
                        d[at] ^= 1 << rng.random_range(0..8);
                    } else {
                        let end = (at + 512).min(d.len());
                        if d[at..end].iter().all(|b| *b == 0) {
                            d[at] = 0xff;
                        } else {
                            d[at..end].fill(0);
                        }
                    }
                    std::fs::write(&path, d).map_err(io)?;
                    if k == 0 {
                        "bit flipped"
                    } else {
                        "range zeroed"
                    }
                }
            };
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            done.push(format!("chunk {}… {how}", &name[..name.len().min(12)]));
        }
        Ok(done)
    }

    /// Flips a byte in the middle of node `id`'s newest raft log segment (the node must
    /// be down). Returns false if it has no segment.
    pub fn damage_log(&mut self, id: u64, rng: &mut impl rand::Rng) -> Result<bool> {
        self.require_down(id, "its log can be damaged")?;
        let dir = self.data_dir(id)?.join("raft").join("log");
        let newest = std::fs::read_dir(&dir)
            .map_err(|e| TestkitError::io(format!("list {}", dir.display()), e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .max();
        let Some(path) = newest else {
            return Ok(false);
        };
        let io = |e| TestkitError::io(format!("damage {}", path.display()), e);
        let mut d = std::fs::read(&path).map_err(io)?;
        let records = crate::segments::log_record_offsets(&d);
        if records.len() < 4 {
            return Ok(false);
        }
        // Inside a record between 30% and 60% into the segment's records (not in the
        // zeros that may follow them): records follow, so this is no torn tail.
        let at = records[records.len() * rng.random_range(30..=60) / 100] + 1;
        d[at] ^= 0xa5;
        std::fs::write(&path, d).map_err(io)?;
        Ok(true)
    }

    /// Node `id`'s scrubber figures; with `start`, a pass begins first.
    pub async fn scrub_of(&self, id: u64, start: bool) -> Result<trove_client::ScrubReport> {
        let t = self.target(id)?;
        t.client
            .scrub_of(&t.client_addr, start)
            .await
            .map_err(|e| TestkitError::client(format!("scrub of node {id}"), e))
    }

    /// Copies node `id`'s data directory (the node must be down) to `dest`, to roll it
    /// back to later with [`ProcessCluster::roll_back`].
    pub fn copy_volume(&mut self, id: u64, dest: &Path) -> Result<()> {
        self.require_down(id, "its volume can be copied")?;
        let dir = self.data_dir(id)?;
        if dest.exists() {
            std::fs::remove_dir_all(dest)
                .map_err(|e| TestkitError::io(format!("remove {}", dest.display()), e))?;
        }
        copy_tree(&dir, dest)
    }

    /// A rolled-back volume: replaces node `id`'s data directory (the node must be down)
    /// by the older copy at `copy`.
    pub fn roll_back(&mut self, id: u64, copy: &Path) -> Result<()> {
        self.wipe(id)?;
        let dir = self.data_dir(id)?;
        copy_tree(copy, &dir)?;
        // The restored volume is on disk before the node starts, as after restoring a
        // volume snapshot: a later power cut must not take the restore itself back (it
        // did: a node whose copied identity file had not reached the disk came back from
        // a power cut with a 0-byte file).
        sync_filesystem(&dir)
    }

    /// Starts a brand-new node `id` that joins through `via`'s client address.
    pub async fn spawn_joining(&mut self, id: u64, via: u64) -> Result<()> {
        if self.nodes.contains_key(&id) {
            return Err(TestkitError::Config(format!("node id {id} already used")));
        }
        let join = self
            .nodes
            .get(&via)
            .ok_or_else(|| no_node(via))?
            .client_addr
            .clone();
        let mut node = self.plan(id).await?;
        node.args.extend(["--join".into(), join]);
        self.nodes.insert(id, node);
        self.spawn(id, &[])?;
        self.wait_listening(id).await
    }

    /// Marks node `id` removed (after the membership change), stops it (SIGTERM, then
    /// SIGKILL) and closes its proxy.
    pub fn retire(&mut self, id: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            if let Some(pid) = n.pid() {
                if n.paused {
                    let _ = kill(pid, Signal::SIGCONT);
                }
                let _ = kill(pid, Signal::SIGTERM);
                let start = Instant::now();
                while start.elapsed() < STOP_GRACE {
                    if let Some(c) = &mut n.child
                        && let Ok(Some(_)) = c.try_wait()
                    {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            n.kill9();
            n.removed = true;
        }
        if let Some(t) = self
            .targets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&id)
        {
            t.removed = true;
        }
        self.proxy.remove_node(id);
    }

    /// Node `id`'s own view of the cluster (one attempt, short deadline).
    pub async fn status_of(&self, id: u64) -> Result<ClusterStatus> {
        let t = self.target(id)?;
        t.client
            .status_of(&t.client_addr)
            .await
            .map_err(|e| TestkitError::client(format!("status of node {id}"), e))
    }

    fn target(&self, id: u64) -> Result<PollTarget> {
        self.targets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .ok_or_else(|| no_node(id))
    }

    /// The poll targets, shared (the monitor reads them while the cluster changes).
    pub fn poll_targets(&self) -> PollTargets {
        self.targets.clone()
    }

    /// Node `id`'s applied index and state digest.
    pub async fn digest_of(&self, id: u64) -> Result<trove_client::StateDigest> {
        let t = self.target(id)?;
        t.client
            .state_digest_of(&t.client_addr)
            .await
            .map_err(|e| TestkitError::client(format!("state digest of node {id}"), e))
    }

    /// The leader a majority of the members agree on right now, with its status.
    pub async fn leader(&mut self) -> Option<(u64, ClusterStatus)> {
        let members = self.member_ids();
        let live = self.live_ids();
        let polls = futures::future::join_all(live.iter().map(|&id| self.status_of(id))).await;
        let sts: Vec<ClusterStatus> = polls.into_iter().filter_map(|r| r.ok()).collect();
        let majority = members.len() / 2 + 1;
        let leader = sts.iter().find(|s| s.leader == Some(s.node_id))?;
        let agree = sts
            .iter()
            .filter(|s| s.term == leader.term && s.leader == leader.leader)
            .count();
        (agree >= majority).then(|| (leader.node_id, leader.clone()))
    }

    /// Polls until a majority agrees on a leader, or fails after `timeout`.
    pub async fn wait_leader(&mut self, timeout: Duration) -> Result<(u64, ClusterStatus)> {
        let start = Instant::now();
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            if start.elapsed() > timeout {
                return Err(TestkitError::Timeout(format!(
                    "no leader agreed on by a majority within {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last `lines` log lines of every node, for a failure message.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for n in self.nodes.values() {
            out.push_str(&format!(
                "----- node {} ({}) -----\n{}\n",
                n.id,
                n.log_path.display(),
                n.log_tail(lines)
            ));
        }
        out
    }

    /// SIGKILLs every process and stops the proxy.
    pub fn shutdown(&mut self) {
        for n in self.nodes.values_mut() {
            n.kill9();
        }
        self.proxy.shutdown();
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn no_node(id: u64) -> TestkitError {
    TestkitError::Node {
        id,
        message: "unknown to the harness".into(),
    }
}

/// Flushes the whole filesystem holding `path` (syncfs).
fn sync_filesystem(path: &Path) -> Result<()> {
    let io = |e| TestkitError::io(format!("sync the filesystem of {}", path.display()), e);
    let dir = std::fs::File::open(path).map_err(io)?;
    nix::unistd::syncfs(&dir).map_err(|e| io(std::io::Error::from(e)))
}

/// Copies the directory tree `from` to `to` (which must not exist).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let io = |what: &Path, e| TestkitError::io(format!("copy {}", what.display()), e);
    std::fs::create_dir_all(to).map_err(|e| io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| io(from, e))? {
        let entry = entry.map_err(|e| io(from, e))?;
        let (src, dest) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().map_err(|e| io(&src, e))?.is_dir() {
            copy_tree(&src, &dest)?;
        } else {
            std::fs::copy(&src, &dest).map_err(|e| io(&src, e))?;
        }
    }
    Ok(())
}
