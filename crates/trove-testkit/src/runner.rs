//! One chaos run, start to verdict: start the cluster behind the proxy, run the
//! workload and the nemesis for the configured duration, heal everything, read every
//! key and blob back, wait for the nodes to converge, run the checkers and write the
//! report next to the history and the node logs in the output folder:
//!
//! ```text
//! <out>/history.jsonl   every operation (JSON lines)
//! <out>/faults.jsonl    every fault as it happened
//! <out>/schedule.json   the planned faults (a function of the seed)
//! <out>/status.jsonl    the monitor's status samples
//! <out>/report.txt      the report (also report.json)
//! <out>/node-<id>.log   each node's log; <out>/node-<id>/ its data
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use trove_client::{Client, ClientConfig, Consistency, TroveError};

use crate::check::oracle::FinalRead;
use crate::check::{invariants, linearizable, oracle, revisions};
use crate::cluster::{ClusterConfig, ProcessCluster};
use crate::error::{Result, TestkitError};
use crate::history::{Op, OpKind, OpResult, Outcome, Recorder, result_of_error};
use crate::monitor::{Monitor, MonitorData};
use crate::nemesis::{self, FaultEvent, FaultKind, Nemesis};
use crate::proxy::Proxy;
use crate::report::{Availability, Convergence, Linearizability, OpCounts, Report, Verdict};
use crate::workload::{self, BlobKeys, Mix, WorkloadConfig};

/// How long the cluster may take to elect a leader (start-up, after healing).
const LEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the nodes may take to converge after healing.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);
/// Attempts of each final read.
const FINAL_READ_ATTEMPTS: usize = 3;
/// Time for all final reads together (records, then blobs); what is left unread after
/// it is reported unreadable (and the run cannot pass).
const FINAL_READS_TIMEOUT: Duration = Duration::from_secs(180);
/// Final blob downloads in flight.
const FINAL_BLOB_READS_IN_FLIGHT: usize = 4;

/// Everything that defines a run.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    pub seed: u64,
    /// How long the workload and the nemesis run.
    pub duration: Duration,
    pub nodes: u64,
    pub faults: Vec<FaultKind>,
    pub clients: u32,
    /// Target operations per second, all clients together.
    pub rate: f64,
    pub keys: u32,
    pub mix: Mix,
    /// Output folder (created).
    pub out: PathBuf,
    /// The `trove` binary to run the servers with.
    pub bin: PathBuf,
    /// `RUST_LOG` of the servers.
    pub log_level: String,
    /// Extra environment of every server (failpoints).
    pub server_env: Vec<(String, String)>,
    /// After a full-cluster kill, restart the nodes as after a power cut (needs a
    /// server built with the `failpoints` feature).
    pub power_cut: bool,
    /// Time limit of the linearizability check of one key.
    pub per_key_check_limit: Duration,
    /// SDK per-attempt deadline and retry budget of the workload clients.
    pub request_timeout: Duration,
    pub retry_budget: Duration,
}

impl ChaosConfig {
    /// Defaults: 120 s, 3 nodes, every fault kind, 6 clients at 150 ops/s on 48 keys.
    pub fn new(seed: u64, bin: PathBuf, out: PathBuf) -> ChaosConfig {
        ChaosConfig {
            seed,
            duration: Duration::from_secs(120),
            nodes: 3,
            faults: FaultKind::available(),
            clients: 6,
            rate: 150.0,
            keys: 48,
            mix: Mix::default(),
            out,
            bin,
            log_level: "info".into(),
            server_env: Vec::new(),
            power_cut: false,
            per_key_check_limit: Duration::from_secs(20),
            request_timeout: Duration::from_secs(2),
            retry_budget: Duration::from_secs(4),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(TestkitError::Config(m.into()));
        if !(1..=9).contains(&self.nodes) {
            return bad("--nodes must be 1 to 9");
        }
        if self.clients == 0 || self.rate <= 0.0 || self.keys == 0 {
            return bad("clients, rate and keys must be positive");
        }
        if !self.bin.is_file() {
            return Err(TestkitError::Config(format!(
                "the trove binary {} does not exist",
                self.bin.display()
            )));
        }
        Ok(())
    }
}

/// Runs one chaos run and returns its report (also written to `<out>/report.txt`).
/// An `Err` means the harness could not run (no cluster, bad configuration), not that
/// a check failed.
pub async fn run(cfg: &ChaosConfig) -> Result<Report> {
    cfg.validate()?;
    std::fs::create_dir_all(&cfg.out)
        .map_err(|e| TestkitError::io(format!("create {}", cfg.out.display()), e))?;
    let recorder = Recorder::new(Some(&cfg.out.join("history.jsonl")))?;
    let cluster_cfg = ClusterConfig {
        bin: cfg.bin.clone(),
        root: cfg.out.clone(),
        log_level: cfg.log_level.clone(),
        env: cfg.server_env.clone(),
        extra_args: Vec::new(),
        loop_disks: cfg.faults.contains(&FaultKind::PowerCut),
    };
    let cluster = ProcessCluster::start(cluster_cfg, cfg.nodes, Proxy::new(cfg.seed)).await?;
    let cluster = Arc::new(Mutex::new(cluster));
    let result = run_started(cfg, &cluster, &recorder).await;
    cluster.lock().await.shutdown();
    let report = result?;
    write_file(
        &cfg.out.join("report.txt"),
        format!("{report}\n").as_bytes(),
    )?;
    let json =
        serde_json::to_vec_pretty(&report).map_err(|e| TestkitError::io("report", e.into()))?;
    write_file(&cfg.out.join("report.json"), &json)?;
    Ok(report)
}

async fn run_started(
    cfg: &ChaosConfig,
    cluster: &Arc<Mutex<ProcessCluster>>,
    recorder: &Arc<Recorder>,
) -> Result<Report> {
    cluster.lock().await.wait_leader(LEADER_TIMEOUT).await?;
    let endpoints = cluster.lock().await.client_addrs();
    create_bucket(&endpoints).await?;

    let plan = nemesis::schedule(cfg.seed, cfg.duration, &cfg.faults);
    write_json(&cfg.out.join("schedule.json"), &plan)?;
    let monitor = Monitor::spawn(cluster.lock().await.poll_targets(), recorder.clone());

    // Workload and nemesis, for the configured duration.
    let wl = Arc::new(WorkloadConfig {
        seed: cfg.seed,
        clients: cfg.clients,
        rate: cfg.rate,
        keys: cfg.keys,
        mix: cfg.mix,
        endpoints: endpoints.clone(),
        request_timeout: cfg.request_timeout,
        retry_budget: cfg.retry_budget,
    });
    let blobs: BlobKeys = Arc::new(StdMutex::new(Vec::new()));
    let stop_clients = CancellationToken::new();
    let workload_start = recorder.now_ns();
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..cfg.clients {
        clients.spawn(workload::run_client(
            wl.clone(),
            id,
            recorder.clone(),
            blobs.clone(),
            stop_clients.clone(),
        ));
    }
    let stop_faults = CancellationToken::new();
    let nem = Nemesis {
        cluster: cluster.clone(),
        recorder: recorder.clone(),
        base_voters: cfg.nodes as usize,
        power_cut: cfg.power_cut,
    };
    let nemesis_task = {
        let stop = stop_faults.clone();
        tokio::spawn(async move { nem.run(&plan, &stop).await })
    };
    tokio::time::sleep(cfg.duration).await;
    stop_faults.cancel();
    let faults = nemesis_task.await.unwrap_or_default();
    stop_clients.cancel();
    let mut errors = Vec::new();
    while let Some(r) = clients.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("client: {e}")),
            Err(e) => errors.push(format!("client task: {e}")),
        }
    }
    let workload_end = recorder.now_ns();
    write_jsonl(&cfg.out.join("faults.jsonl"), &faults)?;

    // Heal, then read everything back and wait for the nodes to agree.
    errors.extend(nemesis::heal_all(cluster).await);
    if let Err(e) = cluster.lock().await.wait_leader(LEADER_TIMEOUT).await {
        errors.push(format!("after healing: {e}"));
    }
    let endpoints = cluster.lock().await.client_addrs();
    let reader = Client::new(ClientConfig {
        request_timeout: Duration::from_secs(5),
        retry_budget: Duration::from_secs(5),
        client_id: format!("chaos-{}-final", cfg.seed),
        ..ClientConfig::new(endpoints)
    })
    .map_err(|e| TestkitError::client("final reader", e))?;
    let final_client = cfg.clients;
    let reads_deadline = tokio::time::Instant::now() + FINAL_READS_TIMEOUT;
    let final_records = final_record_reads(
        &reader,
        &wl.key_names(),
        recorder,
        final_client,
        reads_deadline,
    )
    .await;
    let blob_keys: Vec<String> = blobs.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let final_blobs =
        final_blob_reads(&reader, blob_keys, recorder, final_client, reads_deadline).await;
    let convergence = converge(cluster).await;

    let monitor = monitor.finish().await;
    write_jsonl(&cfg.out.join("status.jsonl"), &monitor.samples)?;
    let history = recorder.finish().await?;

    // The checkers.
    let oracle = oracle::check(&history, &final_records, &final_blobs);
    let per_key = cfg.per_key_check_limit;
    let lin = {
        let h = history.clone();
        tokio::task::spawn_blocking(move || linearizable::check_all(&h, per_key, 2))
            .await
            .map_err(|e| TestkitError::io("linearizability checker", std::io::Error::other(e)))?
    };
    let revisions = revisions::check(&history);
    let invariants = invariants::check(&monitor.samples);
    let workload_ops: Vec<Op> = history
        .iter()
        .filter(|o| o.client != final_client)
        .cloned()
        .collect();
    let mut report = Report {
        seed: cfg.seed,
        duration_s: cfg.duration.as_secs_f64(),
        nodes: cfg.nodes,
        clients: cfg.clients,
        keys: cfg.keys,
        rate: cfg.rate,
        fault_kinds: cfg.faults.iter().map(|k| k.name().to_string()).collect(),
        ops: OpCounts::of(&workload_ops),
        oracle,
        lost: 0,
        linearizability: Linearizability::of(&lin),
        revisions,
        invariants,
        availability: availability(
            &workload_ops,
            &faults,
            &monitor,
            workload_start,
            workload_end,
        ),
        faults,
        convergence,
        errors,
        verdict: Verdict::Unknown,
    };
    report.decide();
    Ok(report)
}

async fn create_bucket(endpoints: &[String]) -> Result<()> {
    let c = Client::new(ClientConfig {
        retry_budget: Duration::from_secs(30),
        ..ClientConfig::new(endpoints.iter().cloned())
    })
    .map_err(|e| TestkitError::client("setup client", e))?;
    match c.create_bucket(workload::BUCKET).await {
        Ok(_) | Err(TroveError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(TestkitError::client("create the chaos bucket", e)),
    }
}

/// Reads every record key (linearizable), recording each attempt in the history.
async fn final_record_reads(
    c: &Client,
    keys: &[String],
    recorder: &Arc<Recorder>,
    client: u32,
    deadline: tokio::time::Instant,
) -> BTreeMap<String, FinalRead> {
    let mut out = BTreeMap::new();
    for key in keys {
        let mut last = FinalRead::Unreadable {
            error: "not read: the final reads ran out of time".into(),
        };
        for _ in 0..FINAL_READ_ATTEMPTS {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            let invoke = recorder.now_ns();
            let result = match c.get_record(key, Consistency::Linearizable).await {
                Ok(r) => OpResult::Found {
                    value: String::from_utf8_lossy(&r.value).into_owned(),
                    revision: r.revision,
                },
                Err(e) => result_of_error(&e),
            };
            let op = Op::new(
                recorder.next_id(),
                client,
                u64::from(client) << 32,
                key,
                OpKind::Get,
                invoke,
                recorder.now_ns(),
                result.clone(),
            );
            recorder.record(op).await;
            last = match result {
                OpResult::Found { value, revision } => FinalRead::Found { value, revision },
                OpResult::NotFound => FinalRead::NotFound,
                OpResult::Unknown { error } | OpResult::Refused { error } => {
                    FinalRead::Unreadable { error }
                }
                other => FinalRead::Unreadable {
                    error: format!("{other:?}"),
                },
            };
            if !matches!(last, FinalRead::Unreadable { .. }) {
                break;
            }
        }
        out.insert(key.clone(), last);
    }
    out
}

/// Downloads every blob whose upload was attempted, a few at a time.
async fn final_blob_reads(
    c: &Client,
    keys: Vec<String>,
    recorder: &Arc<Recorder>,
    client: u32,
    deadline: tokio::time::Instant,
) -> BTreeMap<String, FinalRead> {
    let reads = futures::stream::iter(keys)
        .map(|key| async move {
            let mut last = FinalRead::Unreadable {
                error: "not read: the final reads ran out of time".into(),
            };
            for _ in 0..FINAL_READ_ATTEMPTS {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                let invoke = recorder.now_ns();
                let result = workload::read_blob(c, &key).await;
                let op = Op::new(
                    recorder.next_id(),
                    client,
                    u64::from(client) << 32,
                    &key,
                    OpKind::BlobGet,
                    invoke,
                    recorder.now_ns(),
                    result.clone(),
                );
                recorder.record(op).await;
                last = match result {
                    OpResult::Found { value, revision } => FinalRead::Found { value, revision },
                    OpResult::NotFound => FinalRead::NotFound,
                    other => FinalRead::Unreadable {
                        error: format!("{other:?}"),
                    },
                };
                if !matches!(last, FinalRead::Unreadable { .. }) {
                    break;
                }
            }
            (key, last)
        })
        .buffer_unordered(FINAL_BLOB_READS_IN_FLIGHT);
    reads.collect().await
}

/// Polls every member's state digest until all applied the same index with the same
/// digest (converged), or the same index with different digests twice (diverged).
async fn converge(cluster: &Mutex<ProcessCluster>) -> Convergence {
    let start = Instant::now();
    let mut conv = Convergence::default();
    let mut mismatches = 0;
    loop {
        let c = cluster.lock().await;
        let members = c.member_ids();
        let polls = futures::future::join_all(members.iter().map(|&id| c.digest_of(id))).await;
        drop(c);
        conv.nodes = members.len();
        conv.seconds = start.elapsed().as_secs_f64();
        conv.last = members
            .iter()
            .zip(&polls)
            .map(|(id, p)| match p {
                Ok(d) => (*id, d.applied_index, d.digest.clone()),
                Err(e) => (*id, 0, format!("error: {e}")),
            })
            .collect();
        let digests: Vec<&trove_client::StateDigest> =
            polls.iter().filter_map(|p| p.as_ref().ok()).collect();
        if digests.len() == members.len() && !digests.is_empty() {
            let first = digests[0];
            if digests
                .iter()
                .all(|d| d.applied_index == first.applied_index)
            {
                if digests.iter().all(|d| d.digest == first.digest) {
                    conv.converged = true;
                    conv.applied_index = first.applied_index;
                    conv.digest = first.digest.clone();
                    return conv;
                }
                mismatches += 1;
                if mismatches >= 2 {
                    conv.diverged = true;
                    return conv;
                }
            }
        }
        if start.elapsed() > CONVERGE_TIMEOUT {
            return conv;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Availability figures from the history, the faults and the monitor.
fn availability(
    ops: &[Op],
    faults: &[FaultEvent],
    monitor: &MonitorData,
    start_ns: u64,
    end_ns: u64,
) -> Availability {
    let mut a = Availability::default();
    let mut losses = monitor.leaderless_intervals();
    losses.sort_by(f64::total_cmp);
    a.leader_losses = losses.len();
    a.recovery_p50_s = losses.get(losses.len() / 2).copied().unwrap_or(0.0);
    a.recovery_max_s = losses.last().copied().unwrap_or(0.0);
    let mut done: Vec<u64> = ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .map(|o| o.complete_ns)
        .collect();
    done.sort_unstable();
    let mut prev = start_ns;
    for &t in done.iter().chain(std::iter::once(&end_ns)) {
        let gap = t.saturating_sub(prev) as f64 / 1e9;
        if gap > a.max_unavailable_s {
            a.max_unavailable_s = gap;
            a.max_unavailable_at_s = prev as f64 / 1e9;
        }
        prev = prev.max(t);
    }
    let in_fault = |t: u64| faults.iter().any(|f| f.start_ns <= t && t <= f.end_ns);
    let fault_ns: u64 = faults
        .iter()
        .map(|f| f.end_ns.saturating_sub(f.start_ns))
        .sum();
    let calm_ns = end_ns
        .saturating_sub(start_ns)
        .saturating_sub(fault_ns)
        .max(1);
    let (faulty, calm): (Vec<u64>, Vec<u64>) = done.iter().partition(|&&t| in_fault(t));
    a.ok_rate_calm = calm.len() as f64 / (calm_ns as f64 / 1e9);
    a.ok_rate_faulty = if fault_ns > 0 {
        faulty.len() as f64 / (fault_ns as f64 / 1e9)
    } else {
        0.0
    };
    a
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes)
        .map_err(|e| TestkitError::io(format!("write {}", path.display()), e))
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(v)
        .map_err(|e| TestkitError::io(format!("encode {}", path.display()), e.into()))?;
    write_file(path, &bytes)
}

fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> Result<()> {
    let mut out = Vec::new();
    for it in items {
        serde_json::to_writer(&mut out, it)
            .map_err(|e| TestkitError::io(format!("encode {}", path.display()), e.into()))?;
        out.write_all(b"\n")
            .map_err(|e| TestkitError::io("encode", e))?;
    }
    write_file(path, &out)
}
