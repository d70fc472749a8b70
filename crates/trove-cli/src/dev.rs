//! `trove dev`: a local cluster of `trove server` child processes for development, with
//! a short demo through the SDK, stopped cleanly on Ctrl-C or SIGTERM. [`LocalCluster`] is
//! the same cluster for other commands (`trove bench --local`).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::process::{Child, Command};
use trove_client::{Client, ClientConfig, ClusterStatus, Consistency, TroveError};
use trove_types::Sha256;

use crate::args::{DevArgs, GlobalArgs};
use crate::output::human_bytes;
use crate::signals;

/// Longest wait for the new cluster to elect a leader.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long stopped nodes get to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Lines of a node's log shown when it exits unexpectedly.
const LOG_TAIL_LINES: usize = 15;
/// Size of the demo object: a bit over three chunks, so the last chunk is short.
const DEMO_OBJECT_BYTES: usize = 3 * 1024 * 1024 + 4321;

/// Node `id`'s admin HTTP address (metrics, health, status page): BASE+400+id.
fn admin_addr(base: u64, id: u64) -> String {
    format!("127.0.0.1:{}", base + 400 + id)
}

/// One node of the dev cluster.
struct DevNode {
    id: u64,
    client_addr: String,
    peer_addr: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// Where this run's part of the log starts.
    log_start: u64,
    child: Child,
    exited: bool,
}

impl DevNode {
    fn log_tail(&self) -> String {
        log_tail(&self.log_path, self.log_start)
            .unwrap_or_else(|e| format!("(cannot read the log: {e})"))
    }
}

pub async fn run(args: DevArgs, global: &GlobalArgs) -> Result<()> {
    let base = u64::from(args.base_port);
    ensure!(
        base + 400 + args.nodes <= 65535,
        "--base-port {base} is too high for {} nodes (admin ports are BASE+400+i)",
        args.nodes
    );
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let reusing = args.data_dir.join("node1").exists();
    let exe = std::env::current_exe().context("finding the trove executable")?;
    let initial_cluster = plan_ports(base, args.nodes)?;
    println!(
        "Starting {} node{} (data in {}{}):",
        args.nodes,
        if args.nodes == 1 { "" } else { "s" },
        args.data_dir.display(),
        if reusing {
            ", reusing existing data"
        } else {
            ""
        }
    );
    let mut nodes = spawn_all(
        &exe,
        &args.data_dir,
        args.nodes,
        base,
        &initial_cluster,
        true,
    )
    .await?;
    for n in &nodes {
        println!(
            "  node {}  client {}  peer {}  status page http://{}/  pid {}  log {}",
            n.id,
            n.client_addr,
            n.peer_addr,
            admin_addr(base, n.id),
            n.child.id().map_or_else(|| "?".into(), |p| p.to_string()),
            n.log_path.display()
        );
    }
    let endpoints: Vec<String> = nodes.iter().map(|n| n.client_addr.clone()).collect();
    println!("\nexport TROVE_ENDPOINTS={}\n", endpoints.join(","));

    let started = tokio::select! {
        r = start_up(&mut nodes, &endpoints, global, args.no_demo) => Some(r),
        _ = signals::shutdown() => None,
    };
    match started {
        Some(Ok(())) => {
            println!("\nPress Ctrl-C to stop the cluster.");
            watch(&mut nodes).await;
        }
        Some(Err(e)) => {
            stop_all(&mut nodes, true).await;
            return Err(e);
        }
        None => println!("\nInterrupted."),
    }
    stop_all(&mut nodes, true).await;
    Ok(())
}

/// The `--initial-cluster` value for `count` nodes from `base`, after checking that
/// every port they will use is free.
fn plan_ports(base: u64, count: u64) -> Result<String> {
    let ports: Vec<u64> = (1..=count)
        .flat_map(|i| [base + i, base + 100 + i, base + 400 + i])
        .collect();
    check_ports_free(&ports)?;
    Ok((1..=count)
        .map(|i| format!("{i}=127.0.0.1:{}", base + 100 + i))
        .collect::<Vec<_>>()
        .join(","))
}

/// Fails if a port is taken: otherwise the status poll could find another cluster on
/// these ports and take it for ours while our nodes fail to start.
fn check_ports_free(ports: &[u64]) -> Result<()> {
    for &port in ports {
        let port = u16::try_from(port).context("port out of range")?;
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            bail!(
                "127.0.0.1:{port} is not available ({e}); is another cluster running? \
                 Stop it, or choose other ports with --base-port"
            );
        }
    }
    Ok(())
}

/// Starts nodes 1..=count; if one cannot start, stops those already started.
async fn spawn_all(
    exe: &Path,
    data_dir: &Path,
    count: u64,
    base: u64,
    initial_cluster: &str,
    verbose: bool,
) -> Result<Vec<DevNode>> {
    let mut nodes = Vec::new();
    for id in 1..=count {
        match spawn_node(exe, data_dir, id, base, initial_cluster) {
            Ok(n) => nodes.push(n),
            Err(e) => {
                stop_all(&mut nodes, verbose).await;
                return Err(e);
            }
        }
    }
    Ok(nodes)
}

fn spawn_node(
    exe: &Path,
    data_dir: &Path,
    id: u64,
    base: u64,
    initial_cluster: &str,
) -> Result<DevNode> {
    let client_addr = format!("127.0.0.1:{}", base + id);
    let peer_addr = format!("127.0.0.1:{}", base + 100 + id);
    let node_dir = data_dir.join(format!("node{id}"));
    let log_path = data_dir.join(format!("node{id}.log"));
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    writeln!(log, "=== trove dev: starting node {id} ===")
        .with_context(|| format!("writing {}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut cmd = Command::new(exe);
    cmd.arg("server")
        .arg("--id")
        .arg(id.to_string())
        .arg("--data-dir")
        .arg(&node_dir)
        .arg("--listen-client")
        .arg(&client_addr)
        .arg("--listen-peer")
        .arg(&peer_addr)
        .arg("--initial-cluster")
        .arg(initial_cluster)
        .arg("--listen-admin")
        .arg(admin_addr(base, id))
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log handle")?)
        .stderr(log)
        // Own process group: Ctrl-C reaches only `trove dev`, which stops the nodes in
        // order. If `trove dev` fails, dropping the child kills it.
        .process_group(0)
        .kill_on_drop(true);
    // Settings meant for this shell's nodes must not leak into the dev nodes.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TROVE_") {
            cmd.env_remove(k);
        }
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting node {id} ({})", exe.display()))?;
    Ok(DevNode {
        id,
        client_addr,
        peer_addr,
        data_dir: node_dir,
        log_path,
        log_start,
        child,
        exited: false,
    })
}

/// Waits for a leader (failing early if a node exits), then runs the demo.
async fn start_up(
    nodes: &mut [DevNode],
    endpoints: &[String],
    global: &GlobalArgs,
    no_demo: bool,
) -> Result<()> {
    print!("Waiting for a leader... ");
    std::io::stdout().flush().ok();
    let t = Instant::now();
    let st = wait_for_leader(nodes, endpoints).await?;
    println!(
        "node {} leads (term {}), after {:.1}s",
        st.leader.unwrap_or(0),
        st.term,
        t.elapsed().as_secs_f64()
    );
    if !no_demo {
        let mut cfg = ClientConfig::new(endpoints.iter().cloned());
        cfg.request_timeout = global.timeout;
        cfg.retry_budget = global.retry_budget;
        let client = Client::new(cfg)?;
        if let Err(e) = demo(&client).await {
            eprintln!("warning: the demo failed: {e:#}");
        }
    }
    print_examples(endpoints);
    Ok(())
}

async fn wait_for_leader(nodes: &mut [DevNode], endpoints: &[String]) -> Result<ClusterStatus> {
    let mut cfg = ClientConfig::new(endpoints.iter().cloned());
    cfg.request_timeout = Duration::from_secs(1);
    cfg.connect_timeout = Duration::from_secs(1);
    cfg.retry_budget = Duration::from_secs(1);
    let client = Client::new(cfg)?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let status = client.status().await;
        // Checked after the status, so a leader is only believed while all nodes run.
        for n in nodes.iter_mut() {
            if let Some(status) = n.child.try_wait().context("checking a node")? {
                n.exited = true;
                println!();
                bail!(
                    "node {} exited during start-up ({status}). Last lines of {}:\n{}",
                    n.id,
                    n.log_path.display(),
                    n.log_tail()
                );
            }
        }
        if let Ok(st) = status
            && st.leader.is_some()
        {
            return Ok(st);
        }
        if Instant::now() > deadline {
            println!();
            let dirs: Vec<String> = nodes
                .iter()
                .map(|n| n.data_dir.display().to_string())
                .collect();
            bail!(
                "no leader after {}s; see the node logs beside {}",
                READY_TIMEOUT.as_secs(),
                dirs.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Writes and reads back a record and an object, printing each step.
async fn demo(client: &Client) -> Result<()> {
    println!("\nDemo through the Rust SDK:");
    let value = "hello from trove";
    let rev = client.put_record("demo/greeting", value, None).await?;
    println!("  record put demo/greeting {value:?}  -> revision {rev}");
    let rec = client
        .get_record("demo/greeting", Consistency::Linearizable)
        .await?;
    println!(
        "  record get demo/greeting  -> {:?} (revision {})",
        String::from_utf8_lossy(&rec.value),
        rec.revision
    );
    match client.create_bucket("demo").await {
        Ok(rev) => println!("  bucket create demo  -> revision {rev}"),
        Err(TroveError::AlreadyExists(_)) => println!("  bucket create demo  -> already exists"),
        Err(e) => return Err(e.into()),
    }
    let data = demo_bytes(DEMO_OBJECT_BYTES);
    let digest: [u8; 32] = Sha256::digest(&data);
    let t = Instant::now();
    let info = client
        .put_object_bytes("demo", "sample.bin", data.into())
        .await?;
    ensure!(
        info.sha256 == digest,
        "the cluster reports a different SHA-256 for the demo object"
    );
    println!(
        "  object put demo/sample.bin ({})  -> revision {}, sha256 {}..., {} ms",
        human_bytes(info.size),
        info.revision,
        &info.sha256_hex()[..16],
        t.elapsed().as_millis()
    );
    let t = Instant::now();
    let (_, back) = client.get_object_bytes("demo", "sample.bin").await?;
    let back_digest: [u8; 32] = Sha256::digest(&back);
    ensure!(back_digest == digest, "the demo object came back different");
    println!(
        "  object get demo/sample.bin  -> {} bytes, sha256 verified, {} ms",
        back.len(),
        t.elapsed().as_millis()
    );
    Ok(())
}

/// Deterministic, incompressible-looking demo bytes (xorshift).
fn demo_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

fn print_examples(endpoints: &[String]) {
    println!(
        "\nTry, in another terminal:\n  \
         export TROVE_ENDPOINTS={}\n  \
         trove cluster status\n  \
         trove record put hello world\n  \
         trove record get hello\n  \
         trove record list\n  \
         echo 'some bytes' | trove object put demo/hello.txt -\n  \
         trove object get demo/sample.bin ./sample.bin\n  \
         trove object list demo\n  \
         trove -o json object head demo/sample.bin",
        endpoints.join(",")
    );
}

/// Runs until SIGINT/SIGTERM, reporting nodes that exit meanwhile (the others go on).
async fn watch(nodes: &mut [DevNode]) {
    let shutdown = signals::shutdown();
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        for n in nodes.iter_mut().filter(|n| !n.exited) {
            if let Ok(Some(status)) = n.child.try_wait() {
                n.exited = true;
                eprintln!(
                    "node {} exited ({status}). Last lines of {}:\n{}",
                    n.id,
                    n.log_path.display(),
                    n.log_tail()
                );
            }
        }
        if nodes.iter().all(|n| n.exited) {
            eprintln!("every node has exited");
            return;
        }
    }
}

/// A local cluster started for another command, quietly: fresh data in `data_dir`.
pub struct LocalCluster {
    nodes: Vec<DevNode>,
    /// The nodes' client addresses.
    pub endpoints: Vec<String>,
    exe: PathBuf,
    data_dir: PathBuf,
    base: u64,
    initial_cluster: String,
}

impl LocalCluster {
    /// Starts `count` nodes on ports from `base` (as `trove dev` does) and waits for a leader.
    pub async fn start(data_dir: &Path, count: u64, base: u16) -> Result<LocalCluster> {
        let base = u64::from(base);
        ensure!(
            base + 400 + count <= 65535,
            "--base-port {base} is too high for {count} nodes (admin ports are BASE+400+i)"
        );
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let exe = std::env::current_exe().context("finding the trove executable")?;
        let initial_cluster = plan_ports(base, count)?;
        let mut nodes = spawn_all(&exe, data_dir, count, base, &initial_cluster, false).await?;
        let endpoints: Vec<String> = nodes.iter().map(|n| n.client_addr.clone()).collect();
        if let Err(e) = wait_for_leader(&mut nodes, &endpoints).await {
            stop_all(&mut nodes, false).await;
            return Err(e);
        }
        Ok(LocalCluster {
            nodes,
            endpoints,
            exe,
            data_dir: data_dir.to_path_buf(),
            base,
            initial_cluster,
        })
    }

    /// A lost volume: stops node `id` (SIGTERM), deletes its data directory and starts it
    /// again with the same command.
    pub async fn wipe_and_restart(&mut self, id: u64) -> Result<()> {
        let i = self
            .nodes
            .iter()
            .position(|n| n.id == id)
            .with_context(|| format!("no node {id}"))?;
        stop_all(std::slice::from_mut(&mut self.nodes[i]), false).await;
        let dir = &self.nodes[i].data_dir;
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        self.nodes[i] = spawn_node(
            &self.exe,
            &self.data_dir,
            id,
            self.base,
            &self.initial_cluster,
        )?;
        Ok(())
    }

    /// `(node id, pid)` of each running node.
    pub fn pids(&self) -> Vec<(u64, u32)> {
        self.nodes
            .iter()
            .filter_map(|n| Some((n.id, n.child.id()?)))
            .collect()
    }

    /// Stops every node (SIGTERM, then SIGKILL after a grace period).
    pub async fn stop(mut self) {
        stop_all(&mut self.nodes, false).await;
    }
}

/// SIGTERM to every running node, then SIGKILL to those still running after the grace.
/// `verbose` prints each step (for `trove dev`).
async fn stop_all(nodes: &mut [DevNode], verbose: bool) {
    let running: Vec<&mut DevNode> = nodes.iter_mut().filter(|n| !n.exited).collect();
    if running.is_empty() {
        return;
    }
    if verbose {
        println!("Stopping {} node(s)...", running.len());
    }
    for n in &running {
        if let Some(pid) = n.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    for n in running {
        match tokio::time::timeout_at(deadline, n.child.wait()).await {
            Ok(Ok(status)) if verbose => println!("  node {} stopped ({status})", n.id),
            Ok(Ok(_)) => {}
            _ => {
                let _ = n.child.start_kill();
                let _ = n.child.wait().await;
                eprintln!(
                    "  node {} did not stop within {}s; killed",
                    n.id,
                    STOP_GRACE.as_secs()
                );
            }
        }
        n.exited = true;
    }
}

/// The last lines of a log written since `start`.
fn log_tail(path: &Path, start: u64) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    // Read at most the last 64 KiB of this run's part of the log.
    let from = start.max(len.saturating_sub(64 * 1024));
    f.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    Ok(if tail.is_empty() {
        "  (the log is empty)".to_string()
    } else {
        tail.iter()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_bytes_are_deterministic() {
        let a = demo_bytes(1000);
        assert_eq!(a.len(), 1000);
        assert_eq!(a, demo_bytes(1000));
        assert_eq!(&demo_bytes(2000)[..1000], &a[..]);
    }

    #[test]
    fn log_tails_show_only_this_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n.log");
        std::fs::write(&path, "old run\n").expect("write");
        let start = std::fs::metadata(&path).expect("meta").len();
        let mut text = String::new();
        for i in 0..30 {
            text.push_str(&format!("line {i}\n"));
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("append");
        let tail = log_tail(&path, start).expect("tail");
        assert!(!tail.contains("old run"));
        assert!(tail.contains("line 29"));
        assert_eq!(tail.lines().count(), LOG_TAIL_LINES);
        assert!(
            log_tail(&path, std::fs::metadata(&path).expect("meta").len())
                .expect("tail")
                .contains("empty")
        );
    }
}
