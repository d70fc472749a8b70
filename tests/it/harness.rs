//! Multi-process cluster harness: starts real `trove server` processes on ephemeral
//! loopback ports, each with its own data directory and log file, and lets tests crash
//! (SIGKILL), restart, add and remove them.
//!
//! The binary is `<target>/debug/trove`, found next to the test executable (override with
//! `TROVE_BIN`). Node logs go to `<tmp>/node-<id>.log`; when a test panics, the tail of
//! every node's log is printed. `TROVE_TEST_KEEP=1` keeps the data directories.
//! Server log level: `TROVE_TEST_LOG` (default `info`).
//!
//! Everything waits by polling with generous deadlines (the CI machine has 2 cores);
//! nothing sleeps a fixed time and then asserts.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use trove_proto::v1::StatusResponse;
use trove_proto::v1::cluster_client::ClusterClient;

/// How long a cluster may take to elect a leader (2 cores, debug build, fsyncs).
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to accept connections after it is spawned.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-call deadline of the harness's own status polls.
const STATUS_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Per-call deadline of raw test calls (uploads of a few MiB on a busy 2-core machine).
pub const RAW_CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause between polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Lines of each node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 80;

/// Path of the `trove` binary the tests run.
pub fn trove_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TROVE_BIN") {
        return PathBuf::from(p);
    }
    // The test executable is <target>/debug/deps/it-<hash>; the binary is <target>/debug/trove.
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("trove"))
        .expect("test executable has no grandparent directory");
    assert!(
        bin.is_file(),
        "{} does not exist: build it first: cargo build --bin trove (or set TROVE_BIN)",
        bin.display()
    );
    bin
}

/// Runs `fut` under an overall deadline so that a hung cluster fails the test instead of
/// hanging CI.
pub async fn deadline<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("test did not finish within {limit:?}"),
    }
}

/// Polls `probe` until it returns `Some`, or panics after `timeout` saying what was
/// awaited and what the last probe saw.
pub async fn poll_until<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if start.elapsed() > timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// A free loopback port: bind port 0, read the port, release it. The server binds it a
/// moment later; a collision is detected at start-up and the cluster retried.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// One `trove server` process (running or not) and everything needed to restart it.
pub struct Node {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    channel: Option<Channel>,
    starts: u32,
}

impl Node {
    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running (reaps it if it exited).
    fn running(&mut self) -> bool {
        match &mut self.child {
            None => false,
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                Ok(Some(_)) | Err(_) => {
                    self.child = None;
                    false
                }
            },
        }
    }

    fn spawn(&mut self, bin: &Path) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open node log");
        writeln!(
            log,
            "=== harness: start #{} of node {}: trove {} ===",
            self.starts,
            self.id,
            self.args.join(" ")
        )
        .expect("write node log");
        let err = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(bin);
        // Hermetic: every server flag can come from a TROVE_* variable; ignore the caller's.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TROVE_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("TROVE_TEST_LOG").unwrap_or("info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL on Unix
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL if the node does not exit within `grace`.
    fn stop(&mut self, grace: Duration) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    fn channel(&mut self) -> Channel {
        self.channel
            .get_or_insert_with(|| {
                Endpoint::from_shared(format!("http://{}", self.client_addr))
                    .expect("endpoint")
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(STATUS_CALL_TIMEOUT)
                    .connect_lazy()
            })
            .clone()
    }

    /// The last `lines` lines of this node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read(&self.log_path).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A cluster of real `trove server` processes on loopback.
pub struct Cluster {
    bin: PathBuf,
    root: Option<tempfile::TempDir>,
    root_path: PathBuf,
    nodes: BTreeMap<u64, Node>,
    /// Data directories chosen by the test (see [`Cluster::start_on`]); other nodes
    /// keep theirs under the cluster's temp directory.
    data_dirs: BTreeMap<u64, PathBuf>,
}

impl Cluster {
    /// Starts `n` founding members (ids 1..=n) and waits for a leader.
    pub async fn start(n: u64) -> Cluster {
        Cluster::start_with(n, &[]).await
    }

    /// Like [`Cluster::start`], with extra `trove server` flags for every node.
    pub async fn start_with(n: u64, extra_args: &[&str]) -> Cluster {
        Cluster::start_on(n, extra_args, BTreeMap::new()).await
    }

    /// Like [`Cluster::start_with`], with node `id`'s data directory at `data_dirs[id]`
    /// (for example on a filesystem of its own) where given. Such a directory must not
    /// exist yet or be empty; a failed start attempt empties it again.
    pub async fn start_on(
        n: u64,
        extra_args: &[&str],
        data_dirs: BTreeMap<u64, PathBuf>,
    ) -> Cluster {
        let bin = trove_bin();
        // A freshly allocated port can be taken by someone else before the server binds it;
        // then the node exits at start-up and we try again with new ports.
        for attempt in 1..=3 {
            let root = tempfile::Builder::new()
                .prefix("trove-it-")
                .tempdir()
                .expect("tempdir");
            let root_path = root.path().to_path_buf();
            let mut cluster = Cluster {
                bin: bin.clone(),
                root: Some(root),
                root_path,
                nodes: BTreeMap::new(),
                data_dirs: data_dirs.clone(),
            };
            for dir in data_dirs.values() {
                if dir.exists() {
                    std::fs::remove_dir_all(dir)
                        .unwrap_or_else(|e| panic!("empty {}: {e}", dir.display()));
                }
            }
            let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
            let initial = (1..=n)
                .zip(&ports)
                .map(|(id, (_, peer))| format!("{id}=127.0.0.1:{peer}"))
                .collect::<Vec<_>>()
                .join(",");
            for (id, (client, peer)) in (1..=n).zip(&ports) {
                let mut node = cluster.new_node(id, *client, *peer);
                node.args
                    .extend(["--initial-cluster".into(), initial.clone()]);
                node.args.extend(extra_args.iter().map(|a| a.to_string()));
                node.spawn(&cluster.bin);
                cluster.nodes.insert(id, node);
            }
            match cluster.wait_listening(None).await {
                Ok(()) => {
                    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
                    eprintln!(
                        "harness: {n}-node cluster up in {} (leader {leader})",
                        cluster.root_path.display()
                    );
                    return cluster;
                }
                Err(e) if attempt < 3 => {
                    eprintln!("harness: start attempt {attempt} failed ({e}); retrying");
                    cluster.print_logs();
                }
                Err(e) => panic!("cluster did not start: {e}"),
            }
        }
        unreachable!()
    }

    fn new_node(&self, id: u64, client_port: u16, peer_port: u16) -> Node {
        let data_dir = self
            .data_dirs
            .get(&id)
            .cloned()
            .unwrap_or_else(|| self.root_path.join(format!("node-{id}")));
        let client_addr = format!("127.0.0.1:{client_port}");
        let peer_addr = format!("127.0.0.1:{peer_port}");
        let args = vec![
            "server".to_string(),
            "--id".into(),
            id.to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen-client".into(),
            client_addr.clone(),
            "--listen-peer".into(),
            peer_addr.clone(),
        ];
        Node {
            id,
            client_addr,
            peer_addr,
            log_path: self.root_path.join(format!("node-{id}.log")),
            data_dir,
            args,
            child: None,
            channel: None,
            starts: 0,
        }
    }

    /// Waits until every node (or just `only`) accepts TCP connections on its client
    /// port. Errors if a node process has exited or exits meanwhile.
    async fn wait_listening(&mut self, only: Option<u64>) -> Result<(), String> {
        let start = Instant::now();
        let ids: Vec<u64> = match only {
            Some(id) => vec![id],
            None => self.all_ids(),
        };
        for id in ids {
            loop {
                let node = self.nodes.get_mut(&id).expect("node");
                if !node.running() {
                    return Err(format!(
                        "node {id} exited at start-up; log tail:\n{}",
                        node.log_tail(20)
                    ));
                }
                if tokio::net::TcpStream::connect(&node.client_addr)
                    .await
                    .is_ok()
                {
                    break;
                }
                if start.elapsed() > STARTUP_TIMEOUT {
                    return Err(format!("node {id} not listening after {STARTUP_TIMEOUT:?}"));
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
        Ok(())
    }

    /// Ids of the nodes whose process is running.
    pub fn live_ids(&mut self) -> Vec<u64> {
        self.nodes
            .values_mut()
            .filter_map(|n| n.running().then_some(n.id))
            .collect()
    }

    /// Ids of every node the harness knows, running or not.
    pub fn all_ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn node(&self, id: u64) -> &Node {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Client endpoints (host:port) of the running nodes.
    pub fn endpoints(&mut self) -> Vec<String> {
        let live = self.live_ids();
        live.iter()
            .map(|id| self.node(*id).client_addr.clone())
            .collect()
    }

    /// An SDK client over every running node.
    pub fn client(&mut self) -> trove_client::Client {
        let eps = self.endpoints();
        trove_client::Client::connect(eps.clone())
            .unwrap_or_else(|e| panic!("connect to {eps:?}: {e}"))
    }

    /// An SDK client that talks to node `id` only.
    pub fn client_for(&mut self, id: u64) -> trove_client::Client {
        let ep = self.node(id).client_addr.clone();
        trove_client::Client::connect(vec![ep.clone()])
            .unwrap_or_else(|e| panic!("connect to node {id} at {ep}: {e}"))
    }

    /// The harness's own short-deadline channel to node `id` (status polls).
    fn channel(&mut self, id: u64) -> Channel {
        self.node_mut(id).channel()
    }

    /// A new raw gRPC channel to node `id`, for calls the SDK deliberately hides
    /// (malformed uploads, explicit request ids). Per-call deadline `RAW_CALL_TIMEOUT`.
    pub fn raw_channel(&self, id: u64) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.node(id).client_addr))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .timeout(RAW_CALL_TIMEOUT)
            .connect_lazy()
    }

    /// `Cluster.Status` as node `id` sees it (its own view: `local: true`).
    pub async fn status_of(&mut self, id: u64) -> Result<StatusResponse, String> {
        let ch = self.channel(id);
        ClusterClient::new(ch)
            .status(trove_proto::v1::StatusRequest {
                local: true,
                include_digest: false,
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|e| format!("node {id}: {:?}: {}", e.code(), e.message()))
    }

    /// The leader every running node agrees on right now, if any.
    pub async fn leader(&mut self) -> Option<u64> {
        self.agreed_leader().await.ok()
    }

    async fn agreed_leader(&mut self) -> Result<u64, String> {
        let live = self.live_ids();
        if live.is_empty() {
            return Err("no node is running".into());
        }
        let mut seen = Vec::new();
        for id in &live {
            let st = self.status_of(*id).await?;
            seen.push((*id, st.leader, st.term));
        }
        let (_, first, term) = seen[0];
        let agreed = seen.iter().all(|(_, l, t)| *l == first && *t == term);
        match first {
            Some(l) if agreed && live.contains(&l) => Ok(l),
            _ => Err(format!("(node, leader, term) = {seen:?}")),
        }
    }

    /// Polls every running node until all name the same running leader in the same term.
    pub async fn wait_for_leader(&mut self, timeout: Duration) -> u64 {
        let start = Instant::now();
        loop {
            match self.agreed_leader().await {
                Ok(l) => return l,
                Err(e) if start.elapsed() > timeout => {
                    self.print_logs();
                    panic!("no agreed leader after {timeout:?}: {e}");
                }
                Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    /// Waits for a leader other than `old` (after `old` was killed or stepped down).
    pub async fn wait_for_new_leader(&mut self, old: u64, timeout: Duration) -> u64 {
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            let l = self.wait_for_leader(left).await;
            if l != old {
                return l;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(&mut self, id: u64, index: u64, timeout: Duration) {
        let what = format!("node {id} to apply index {index}");
        poll_until(timeout, &what, async || {
            let st = self.status_of(id).await?;
            if st.applied_index >= index {
                Ok(())
            } else {
                Err(format!("applied_index {}", st.applied_index))
            }
        })
        .await
    }

    /// Waits until every running node has applied at least `index`.
    pub async fn wait_all_applied(&mut self, index: u64, timeout: Duration) {
        for id in self.live_ids() {
            self.wait_applied(id, index, timeout).await;
        }
    }

    /// SIGKILLs node `id` (no clean shutdown) and reaps it.
    pub fn kill9(&mut self, id: u64) {
        eprintln!("harness: kill -9 node {id}");
        self.node_mut(id).kill9();
    }

    /// SIGKILLs every node at once.
    pub fn kill9_all(&mut self) {
        eprintln!("harness: kill -9 every node");
        // Signal all first, then reap, so no node sees the others shut down in order.
        for n in self.nodes.values_mut() {
            if let Some(c) = &mut n.child {
                let _ = c.kill();
            }
        }
        for n in self.nodes.values_mut() {
            n.kill9();
        }
    }

    /// Stops node `id` cleanly (SIGTERM, SIGKILL after 10 s), as an operator would.
    pub fn stop(&mut self, id: u64) {
        eprintln!("harness: stop (SIGTERM) node {id}");
        self.node_mut(id).stop(Duration::from_secs(10));
    }

    /// Freezes node `id` (SIGSTOP): it keeps its sockets but answers nothing.
    pub fn pause(&mut self, id: u64) {
        self.signal(id, nix::sys::signal::Signal::SIGSTOP);
    }

    /// Lets a paused node run again (SIGCONT).
    pub fn resume(&mut self, id: u64) {
        self.signal(id, nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&mut self, id: u64, sig: nix::sys::signal::Signal) {
        eprintln!("harness: {sig:?} node {id}");
        let pid = self.node_mut(id).pid().expect("node is running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("signal");
    }

    /// Restarts node `id` with the same arguments and data directory; waits until it
    /// accepts connections.
    pub async fn restart(&mut self, id: u64) {
        eprintln!("harness: restart node {id}");
        let bin = self.bin.clone();
        self.node_mut(id).spawn(&bin);
        if let Err(e) = self.wait_listening(Some(id)).await {
            self.print_logs();
            panic!("node {id} did not restart: {e}");
        }
    }

    /// Waits until node `id` votes again (it no longer reports itself recovering: its
    /// peers vouched for its state or a leader brought it up to date).
    pub async fn wait_voting(&mut self, id: u64, timeout: Duration) {
        poll_until(timeout, &format!("node {id} to vote again"), async || {
            let st = self.status_of(id).await?;
            if st.recovering {
                Err(st.recovery)
            } else {
                Ok(())
            }
        })
        .await;
    }

    /// Starts node `id` with the same arguments and data directory, without waiting for
    /// anything (the caller watches it).
    pub fn spawn(&mut self, id: u64) {
        eprintln!("harness: spawn node {id}");
        let bin = self.bin.clone();
        self.node_mut(id).spawn(&bin);
    }

    /// Stops every node cleanly (SIGTERM, then SIGKILL after a grace period).
    pub fn stop_all(&mut self) {
        for n in self.nodes.values_mut() {
            n.stop(Duration::from_secs(10));
        }
    }

    /// Stops node `id` and forgets it (after it was removed from the membership).
    pub fn forget(&mut self, id: u64) {
        if let Some(mut n) = self.nodes.remove(&id) {
            n.stop(Duration::from_secs(10));
        }
    }

    /// Starts a brand-new node with `--join` pointed at the current leader's client
    /// address and a fresh id (one above the highest id the cluster ever assigned), and
    /// waits until it is a voter that has caught up. Returns its id.
    pub async fn add_node(&mut self) -> u64 {
        let leader = self.wait_for_leader(LEADER_TIMEOUT).await;
        let st = self
            .status_of(leader)
            .await
            .unwrap_or_else(|e| panic!("status: {e}"));
        let highest = self.nodes.keys().copied().max().unwrap_or(0);
        let id = st.max_node_id.max(highest) + 1;
        self.spawn_joining(id, leader).await;
        self.wait_voter(id, LEADER_TIMEOUT).await;
        id
    }

    /// Starts a new process `trove server --id <id> --join <client addr of via>`.
    pub async fn spawn_joining(&mut self, id: u64, via: u64) {
        self.spawn_joining_on(id, free_port(), free_port(), via)
            .await
    }

    async fn spawn_joining_on(&mut self, id: u64, client_port: u16, peer_port: u16, via: u64) {
        let join = self.node(via).client_addr.clone();
        let mut node = self.new_node(id, client_port, peer_port);
        node.args.extend(["--join".into(), join]);
        node.spawn(&self.bin);
        self.nodes.insert(id, node);
        if let Err(e) = self.wait_listening(Some(id)).await {
            self.print_logs();
            panic!("joining node {id} did not start: {e}");
        }
    }

    /// Adds a node the operator's way: `add_node` without an id through the SDK (the
    /// cluster assigns the id), then the new process is started with that id and
    /// `--join`. Returns the assigned id once the node is a caught-up voter.
    pub async fn add_node_via_admin(&mut self) -> u64 {
        let leader = self.wait_for_leader(LEADER_TIMEOUT).await;
        let (client_port, peer_port) = (free_port(), free_port());
        let client_addr = format!("127.0.0.1:{client_port}");
        let peer_addr = format!("127.0.0.1:{peer_port}");
        // AddNode returns once the learner has caught up and was promoted, which needs the
        // process we start below: allow it much longer than the default request timeout.
        let cfg = trove_client::ClientConfig {
            request_timeout: LEADER_TIMEOUT,
            ..trove_client::ClientConfig::new(self.endpoints())
        };
        let admin = trove_client::Client::new(cfg).expect("client");
        let call = {
            let (ca, pa) = (client_addr.clone(), peer_addr.clone());
            tokio::spawn(async move { admin.add_node(None, &ca, &pa, true).await })
        };
        let what = format!("a member with client address {client_addr} to appear");
        let id = poll_until(LEADER_TIMEOUT, &what, async || {
            let leader = self.agreed_leader().await?;
            let st = self.status_of(leader).await?;
            st.members
                .iter()
                .find(|m| m.client_addr == client_addr)
                .map(|m| m.id)
                .ok_or_else(|| format!("members {:?}", st.members))
        })
        .await;
        self.spawn_joining_on(id, client_port, peer_port, leader)
            .await;
        let returned = call
            .await
            .expect("add_node task")
            .unwrap_or_else(|e| panic!("add_node for {client_addr}: {e}"));
        assert_eq!(
            returned, id,
            "add_node returned another id than the member list shows"
        );
        self.wait_voter(id, LEADER_TIMEOUT).await;
        id
    }

    /// Waits until the leader reports node `id` as a voter (leader or follower) that has
    /// applied everything committed when it was promoted.
    pub async fn wait_voter(&mut self, id: u64, timeout: Duration) {
        let what = format!("node {id} to become a caught-up voter");
        let index = poll_until(timeout, &what, async || {
            let leader = self.agreed_leader().await?;
            let st = self.status_of(leader).await?;
            let m = st.members.iter().find(|m| m.id == id);
            match m {
                Some(m) if m.role == "follower" || m.role == "leader" => Ok(st.commit_index),
                other => Err(format!("member entry {other:?}")),
            }
        })
        .await;
        self.wait_applied(id, index, timeout).await;
    }

    /// Peak resident set size (VmHWM) of node `id`'s process, in KiB.
    pub fn peak_rss_kib(&self, id: u64) -> u64 {
        let pid = self.node(id).pid().expect("node is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    /// Root of the cluster's temp directory (data dirs and logs).
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// Prints the tail of every node's log to stderr.
    pub fn print_logs(&self) {
        for n in self.nodes.values() {
            eprintln!(
                "----- node {} log ({}), last {LOG_TAIL_LINES} lines -----\n{}",
                n.id,
                n.log_path.display(),
                n.log_tail(LOG_TAIL_LINES)
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if failed {
            self.print_logs();
        }
        for n in self.nodes.values_mut() {
            n.kill9();
        }
        if std::env::var_os("TROVE_TEST_KEEP").is_some()
            && let Some(root) = self.root.take()
        {
            let kept = root.keep();
            eprintln!("harness: kept cluster files in {}", kept.display());
        }
    }
}

/// Nodes that must fail to start, and clusters started from prepared data directories
/// (the upgrade and backup tests).
impl Cluster {
    /// Starts node `id` with its usual arguments, expecting it to refuse to start: waits
    /// until the process exits (panics if it still runs after `timeout`) and returns its
    /// exit code and what it printed in this run.
    pub async fn start_expecting_exit(
        &mut self,
        id: u64,
        timeout: Duration,
    ) -> (Option<i32>, String) {
        eprintln!("harness: start node {id}, expecting it to exit");
        let bin = self.bin.clone();
        let node = self.node_mut(id);
        node.spawn(&bin);
        let start = Instant::now();
        let status = loop {
            let child = node.child.as_mut().expect("just spawned");
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                break status;
            }
            if start.elapsed() > timeout {
                node.kill9();
                panic!(
                    "node {id} was expected to refuse to start, but still runs after {timeout:?}"
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        let log = String::from_utf8_lossy(&std::fs::read(&node.log_path).unwrap_or_default())
            .into_owned();
        let marker = format!("=== harness: start #{} of node {id}", node.starts);
        let this_run = log.rsplit_once(&marker).map_or(log.as_str(), |(_, r)| r);
        let output = this_run.split_once('\n').map_or("", |(_, r)| r).to_string();
        (status.code(), output)
    }

    /// Starts `n` nodes (ids 1..=n) whose data directories `prepare` fills first, given
    /// the `--initial-cluster` list (peer addresses) and each node's data directory, for
    /// example with `trove backup restore`. The nodes start without `--initial-cluster`:
    /// their directories must say what they are. Waits for a leader.
    pub async fn start_prepared(
        n: u64,
        mut prepare: impl AsyncFnMut(String, Vec<(u64, PathBuf)>),
    ) -> Cluster {
        let bin = trove_bin();
        for attempt in 1..=3 {
            let root = tempfile::Builder::new()
                .prefix("trove-it-")
                .tempdir()
                .expect("tempdir");
            let root_path = root.path().to_path_buf();
            let mut cluster = Cluster {
                bin: bin.clone(),
                root: Some(root),
                root_path,
                nodes: BTreeMap::new(),
                data_dirs: BTreeMap::new(),
            };
            let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
            let initial = (1..=n)
                .zip(&ports)
                .map(|(id, (_, peer))| format!("{id}=127.0.0.1:{peer}"))
                .collect::<Vec<_>>()
                .join(",");
            let nodes: Vec<Node> = (1..=n)
                .zip(&ports)
                .map(|(id, (client, peer))| cluster.new_node(id, *client, *peer))
                .collect();
            let dirs = nodes.iter().map(|n| (n.id, n.data_dir.clone())).collect();
            prepare(initial, dirs).await;
            for mut node in nodes {
                node.spawn(&cluster.bin);
                cluster.nodes.insert(node.id, node);
            }
            match cluster.wait_listening(None).await {
                Ok(()) => {
                    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
                    eprintln!(
                        "harness: {n}-node prepared cluster up in {} (leader {leader})",
                        cluster.root_path.display()
                    );
                    return cluster;
                }
                Err(e) if attempt < 3 => {
                    eprintln!("harness: start attempt {attempt} failed ({e}); retrying");
                    cluster.print_logs();
                }
                Err(e) => panic!("prepared cluster did not start: {e}"),
            }
        }
        unreachable!()
    }
}
