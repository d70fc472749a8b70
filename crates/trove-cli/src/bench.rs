//! `trove bench`: closed-loop load against a running cluster (or one it starts itself with
//! `--local`). Each client is its own connection issuing one operation after another;
//! latencies go into an HDR histogram. Prints ops/s, MB/s, p50/p99/p999 and errors, as a
//! table or JSON; with `--local` also each node's peak RSS, CPU seconds and bytes written
//! to disk per byte written by the clients (write amplification).

mod driver;
mod procstat;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde_json::json;
use trove_client::{Client, Consistency, TroveError};
use trove_types::limits::CHUNK_SIZE_BYTES;

use self::driver::{Cas, Driver, System};
use crate::args::{GlobalArgs, OutputFormat};
use crate::dev::LocalCluster;
use crate::output::{human_bytes, print_json, print_line, table};

/// Bucket the object workloads use.
const BUCKET: &str = "bench";
/// Objects an `object-get` run reads (written once before the run).
const GET_OBJECTS: u64 = 4;
/// Keys each `object-put` client overwrites in turn (bounds the disk the run uses).
const PUT_OBJECT_SLOTS: u64 = 4;

/// What each operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Write a record (`--value-size` bytes) to one of `--keys` keys.
    RecordPut,
    /// Linearizable read of one of `--keys` records (written before the run).
    RecordGet,
    /// Read of one of `--keys` records from the contacted node's own state.
    RecordGetLocal,
    /// Compare-and-set of the client's own record (each write expects the last revision).
    RecordCas,
    /// Upload an object of `--object-size` bytes.
    ObjectPut,
    /// Download a whole object of `--object-size` bytes (written before the run).
    ObjectGet,
    /// 50% linearizable record reads, 40% record writes, 10% compare-and-set.
    Mixed,
    /// Re-seeding a lost volume (needs --local): writes `--ops` objects of
    /// `--object-size` bytes, deletes a follower's data directory, starts it again with
    /// the same command and times until it votes again at the leader's commit index.
    Reseed,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::RecordPut => "record-put",
            Workload::RecordGet => "record-get",
            Workload::RecordGetLocal => "record-get-local",
            Workload::RecordCas => "record-cas",
            Workload::ObjectPut => "object-put",
            Workload::ObjectGet => "object-get",
            Workload::Mixed => "mixed",
            Workload::Reseed => "reseed",
        }
    }
}

#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  trove bench --workload record-put --clients 1 --duration 10
  trove bench --workload record-get --clients 64 --ops 100000 -o json
  trove bench --workload object-put --object-size 67108864 --ops 8
  trove bench --local --workload object-put --object-size 1073741824 --ops 1
  trove bench --system etcd --endpoints 127.0.0.1:2379 --workload record-put --clients 64

--local starts a fresh three-node cluster on ports from --base-port (data in a temporary
directory, removed afterwards) and adds each node's peak RSS during the run (not while
writing the data a read workload reads), CPU seconds and disk bytes written per client
byte written. --system etcd runs the record workloads against etcd
(a build with the `etcd` cargo feature).")]
pub struct BenchArgs {
    /// What each operation does.
    #[arg(long, value_enum, default_value = "record-put")]
    pub workload: Workload,
    /// Concurrent closed-loop clients, each on its own connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub clients: u32,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Object size in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub object_size: u64,
    /// Distinct record keys.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Run for this many seconds (unless --ops is given).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Run exactly this many operations in total instead of for --duration.
    #[arg(long)]
    pub ops: Option<u64>,
    /// The system to load.
    #[arg(long, value_enum, default_value = "trove")]
    pub system: System,
    /// Start a fresh local three-node Trove cluster for the run (ignores --endpoints) and
    /// report each node's peak RSS, CPU time and disk writes.
    #[arg(long, conflicts_with = "system")]
    pub local: bool,
    /// With --local: node i listens on BASE+i, BASE+100+i and BASE+400+i.
    #[arg(long, default_value_t = 7800, requires = "local")]
    pub base_port: u16,
}

/// What one client measured.
struct Tally {
    hist: Histogram<u64>,
    ops: u64,
    errors: u64,
    /// Payload bytes moved (written or read).
    bytes: u64,
    /// Payload bytes written (what write amplification is relative to).
    written: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Result<Tally> {
        Ok(Tally {
            // 1 µs to 10 minutes, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 600_000_000, 3)?,
            ops: 0,
            errors: 0,
            bytes: 0,
            written: 0,
            first_error: None,
        })
    }
}

pub async fn run(global: &GlobalArgs, a: BenchArgs) -> Result<()> {
    if !a.local {
        if a.workload == Workload::Reseed {
            bail!(
                "--workload reseed needs --local: it deletes the data directory of a node it started"
            );
        }
        return bench(global, &a, &global.endpoints, None).await;
    }
    let dir = tempfile::Builder::new()
        .prefix("trove-bench-")
        .tempdir()
        .context("creating a temporary data directory")?;
    let mut cluster = LocalCluster::start(dir.path(), 3, a.base_port).await?;
    let endpoints = cluster.endpoints.clone();
    let r = if a.workload == Workload::Reseed {
        reseed(global, &a, &mut cluster).await
    } else {
        bench(global, &a, &endpoints, Some(&cluster)).await
    };
    cluster.stop().await;
    r
}

/// Objects written before a re-seed when `--ops` is not given.
const RESEED_OBJECTS: u64 = 16;

/// The `reseed` workload: how fast a node that lost its volume is brought back. The one
/// "operation" is the whole re-seed; MB/s is object bytes per second of it.
async fn reseed(global: &GlobalArgs, a: &BenchArgs, cluster: &mut LocalCluster) -> Result<()> {
    let objects = a.ops.unwrap_or(RESEED_OBJECTS);
    let d = Driver::connect(System::Trove, global, &cluster.endpoints).await?;
    let c = d.trove()?;
    ensure_bucket(c).await?;
    let data = Bytes::from(vec![0x5a; a.object_size as usize]);
    for k in 0..objects {
        c.put_object_bytes(BUCKET, &format!("reseed/{k}"), unique(&data, u64::MAX, k))
            .await
            .context("writing the objects to re-seed")?;
    }
    let st = c.status().await?;
    wait_applied_everywhere(c, st.commit_index).await?;
    let leader = st.leader.context("no leader")?;
    let (follower, endpoint) = st
        .members
        .iter()
        .find(|m| m.id != leader)
        .map(|m| (m.id, m.client_addr.clone()))
        .context("no follower")?;
    let started = Instant::now();
    cluster.wipe_and_restart(follower).await?;
    let give_up = started + Duration::from_secs(RESEED_TIMEOUT_SECS);
    loop {
        // Answered by the wiped node itself: it votes again once re-seeded.
        if let Ok(s) = c.status_of(&endpoint).await
            && s.node_id == follower
            && !s.recovering
            && s.applied_index >= st.commit_index
        {
            break;
        }
        ensure!(
            Instant::now() < give_up,
            "node {follower} was not re-seeded within {RESEED_TIMEOUT_SECS} s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut t = Tally::new()?;
    t.hist.saturating_record((secs * 1e6) as u64);
    t.ops = 1;
    t.bytes = objects * a.object_size;
    report(global.output, a, &t, secs, &[])
}

/// How long a re-seed may take before the benchmark gives up.
const RESEED_TIMEOUT_SECS: u64 = 600;

/// Prepares, runs the workers and reports; `local` is the cluster started for the run.
async fn bench(
    global: &GlobalArgs,
    a: &BenchArgs,
    endpoints: &[String],
    local: Option<&LocalCluster>,
) -> Result<()> {
    if a.system == System::Etcd && matches!(a.workload, Workload::ObjectPut | Workload::ObjectGet) {
        bail!("the object workloads run against Trove only");
    }
    let mut setup = Driver::connect(a.system, global, endpoints).await?;
    let data = Bytes::from(vec![0x5a; a.object_size as usize]);
    let value = Bytes::from(vec![0x61; a.value_size]);
    prepare(&mut setup, a, &value, &data).await?;

    let mut drivers = Vec::new();
    for _ in 0..a.clients {
        drivers.push(Driver::connect(a.system, global, endpoints).await?);
    }
    // CPU and disk figures are differences over the run; the peak RSS is the run's own,
    // not the preparation's (writing the objects an object-get run reads, for example).
    if let Some(cluster) = local {
        for (_, pid) in cluster.pids() {
            procstat::reset_peak(pid)?;
        }
    }
    let before = node_samples(local)?;
    let deadline = Instant::now() + Duration::from_secs(a.duration);
    let per_client = a.ops.map(|n| n.div_ceil(u64::from(a.clients)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (w, mut driver) in (0u32..).zip(drivers) {
        let (value, data) = (value.clone(), data.clone());
        let (workload, keys) = (a.workload, a.keys);
        tasks.spawn(async move {
            let mut t = Tally::new()?;
            let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(w));
            let mut cas_rev = None;
            let mut i = 0u64;
            loop {
                match per_client {
                    Some(n) if i >= n => break,
                    None if Instant::now() >= deadline => break,
                    _ => {}
                }
                let op = Step {
                    workload,
                    worker: w,
                    i,
                    keys,
                };
                let t0 = Instant::now();
                let r = one_op(&mut driver, op, &mut rng, &value, &data, &mut cas_rev).await;
                let us = t0.elapsed().as_micros().max(1) as u64;
                match r {
                    Ok(moved) => {
                        t.hist.saturating_record(us);
                        t.ops += 1;
                        t.bytes += moved.bytes;
                        if moved.write {
                            t.written += moved.bytes;
                        }
                    }
                    Err(e) => {
                        t.errors += 1;
                        t.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
                i += 1;
            }
            anyhow::Ok(t)
        });
    }
    let mut all = Tally::new()?;
    while let Some(r) = tasks.join_next().await {
        let t = r.context("bench client")??;
        all.hist.add(&t.hist).context("merge histograms")?;
        all.ops += t.ops;
        all.errors += t.errors;
        all.bytes += t.bytes;
        all.written += t.written;
        if all.first_error.is_none() {
            all.first_error = t.first_error;
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let nodes = match (before, node_samples(local)?) {
        (Some(b), Some(after)) => node_report(&b, &after, all.written),
        _ => Vec::new(),
    };
    report(global.output, a, &all, secs, &nodes)?;
    if all.ops == 0 {
        bail!(
            "no operation succeeded: {}",
            all.first_error.unwrap_or_default()
        );
    }
    Ok(())
}

/// `(node id, reading)` of each node of a local cluster, `None` without one.
fn node_samples(local: Option<&LocalCluster>) -> Result<Option<Vec<(u64, procstat::Sample)>>> {
    let Some(cluster) = local else {
        return Ok(None);
    };
    let samples = cluster
        .pids()
        .into_iter()
        .map(|(id, pid)| Ok((id, procstat::sample(pid)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(samples))
}

/// What one node of a `--local` cluster spent on the run.
struct NodeFigures {
    id: u64,
    peak_rss_bytes: u64,
    cpu_seconds: f64,
    disk_write_bytes: u64,
    /// Disk bytes written per client byte written (`None` when nothing was written).
    write_amplification: Option<f64>,
}

fn node_report(
    before: &[(u64, procstat::Sample)],
    after: &[(u64, procstat::Sample)],
    user_written: u64,
) -> Vec<NodeFigures> {
    after
        .iter()
        .map(|(id, a)| {
            let b = before
                .iter()
                .find(|(bid, _)| bid == id)
                .map(|(_, s)| *s)
                .unwrap_or_default();
            let disk = a.disk_write_bytes.saturating_sub(b.disk_write_bytes);
            NodeFigures {
                id: *id,
                peak_rss_bytes: a.peak_rss_bytes,
                cpu_seconds: a.cpu_seconds - b.cpu_seconds,
                disk_write_bytes: disk,
                write_amplification: (user_written > 0).then(|| disk as f64 / user_written as f64),
            }
        })
        .collect()
}

/// Creates the benchmark's bucket unless it exists.
async fn ensure_bucket(c: &Client) -> Result<()> {
    match c.create_bucket(BUCKET).await {
        Ok(_) | Err(TroveError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e).context("create bucket"),
    }
}

/// Writes what the read workloads read, and the bucket.
async fn prepare(d: &mut Driver, a: &BenchArgs, value: &Bytes, data: &Bytes) -> Result<()> {
    if matches!(a.workload, Workload::ObjectPut | Workload::ObjectGet) {
        ensure_bucket(d.trove()?).await?;
    }
    match a.workload {
        Workload::RecordGet | Workload::RecordGetLocal | Workload::Mixed => {
            for k in 0..a.keys {
                d.put(&key(k), value).await.context("prefill records")?;
            }
            if a.system == System::Trove {
                // A local read must find them on whichever node it asks.
                let c = d.trove()?;
                let last = c.status().await?.commit_index;
                wait_applied_everywhere(c, last).await?;
            }
        }
        Workload::ObjectGet => {
            for k in 0..GET_OBJECTS {
                d.trove()?
                    .put_object_bytes(BUCKET, &format!("get/{k}"), unique(data, u64::MAX, k))
                    .await
                    .context("prefill objects")?;
            }
        }
        _ => {}
    }
    Ok(())
}

async fn wait_applied_everywhere(c: &Client, index: u64) -> Result<()> {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let st = c.status().await?;
        if st.members.iter().all(|m| m.applied_index >= index) || Instant::now() > give_up {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn key(k: u64) -> String {
    format!("bench/{k:08}")
}

/// Which operation a worker runs next (a bench step, not a state machine `Op`).
#[derive(Clone, Copy)]
struct Step {
    workload: Workload,
    worker: u32,
    /// The worker's operation number.
    i: u64,
    keys: u64,
}

/// Payload bytes one operation moved, and whether it wrote them.
struct Moved {
    bytes: u64,
    write: bool,
}

impl Moved {
    fn written(bytes: usize) -> Moved {
        Moved {
            bytes: bytes as u64,
            write: true,
        }
    }

    fn read(bytes: u64) -> Moved {
        Moved {
            bytes,
            write: false,
        }
    }
}

/// One operation.
async fn one_op(
    d: &mut Driver,
    op: Step,
    rng: &mut impl Rng,
    value: &Bytes,
    data: &Bytes,
    cas_rev: &mut Option<u64>,
) -> Result<Moved> {
    let w = match op.workload {
        Workload::Mixed => match rng.random_range(0..10) {
            0..5 => Workload::RecordGet,
            5..9 => Workload::RecordPut,
            _ => Workload::RecordCas,
        },
        w => w,
    };
    match w {
        Workload::RecordPut | Workload::Mixed => {
            d.put(&key(rng.random_range(0..op.keys)), value).await?;
            Ok(Moved::written(value.len()))
        }
        Workload::RecordGet | Workload::RecordGetLocal => {
            let linearizable = w == Workload::RecordGet;
            let (n, _) = d
                .get(&key(rng.random_range(0..op.keys)), linearizable)
                .await?;
            Ok(Moved::read(n as u64))
        }
        Workload::RecordCas => {
            let k = format!("bench/cas/{}", op.worker);
            let expected = match *cas_rev {
                Some(r) => r,
                None => d.get(&k, true).await?.1,
            };
            match d.cas(&k, value, expected).await {
                Ok(Cas::Written(rev)) => {
                    *cas_rev = Some(rev);
                    Ok(Moved::written(value.len()))
                }
                Ok(Cas::Conflict) => {
                    *cas_rev = None;
                    bail!("{k}: revision {expected} was no longer current")
                }
                Err(e) => {
                    *cas_rev = None;
                    Err(e)
                }
            }
        }
        Workload::ObjectPut => {
            let key = format!("put/{}/{}", op.worker, op.i % PUT_OBJECT_SLOTS);
            d.trove()?
                .put_object_bytes(BUCKET, &key, unique(data, u64::from(op.worker), op.i))
                .await?;
            Ok(Moved::written(data.len()))
        }
        Workload::ObjectGet => {
            let key = format!("get/{}", rng.random_range(0..GET_OBJECTS));
            Ok(Moved::read(read_object(d.trove()?, &key).await?))
        }
        Workload::Reseed => {
            bail!("reseed is measured as a whole (see `reseed`), not per operation")
        }
    }
}

/// `base` with every chunk made distinct (its first 16 bytes: `worker`, `i`, chunk
/// number), so that chunks are never deduplicated: every object put stores its bytes.
fn unique(base: &Bytes, worker: u64, i: u64) -> Bytes {
    let mut data = base.to_vec();
    for (n, chunk) in (0u64..).zip(data.chunks_mut(CHUNK_SIZE_BYTES)) {
        let tag = [worker.to_be_bytes(), (i << 20 | n).to_be_bytes()].concat();
        let len = tag.len().min(chunk.len());
        chunk[..len].copy_from_slice(&tag[..len]);
    }
    Bytes::from(data)
}

async fn read_object(c: &Client, key: &str) -> Result<u64, TroveError> {
    let mut reader = c
        .get_object(BUCKET, key, None, Consistency::Linearizable)
        .await?;
    let mut n = 0u64;
    while let Some(chunk) = reader.next_chunk().await? {
        n += chunk.len() as u64;
    }
    Ok(n)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn report(
    format: OutputFormat,
    a: &BenchArgs,
    t: &Tally,
    secs: f64,
    nodes: &[NodeFigures],
) -> Result<()> {
    let h = &t.hist;
    let ops_per_sec = t.ops as f64 / secs;
    let mb_per_sec = t.bytes as f64 / secs / 1e6;
    let (p50, p99, p999, max) = if t.ops > 0 {
        (
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
        )
    } else {
        (0.0, 0.0, 0.0, 0.0)
    };
    match format {
        OutputFormat::Json => print_json(&json!({
            "system": a.system.name(),
            "workload": a.workload.name(),
            "clients": a.clients,
            "value_size": a.value_size,
            "object_size": a.object_size,
            "seconds": secs,
            "ops": t.ops,
            "errors": t.errors,
            "first_error": t.first_error,
            "ops_per_sec": ops_per_sec,
            "mb_per_sec": mb_per_sec,
            "p50_ms": p50,
            "p99_ms": p99,
            "p999_ms": p999,
            "max_ms": max,
            "bytes_written": t.written,
            "nodes": nodes.iter().map(|n| json!({
                "id": n.id,
                "peak_rss_bytes": n.peak_rss_bytes,
                "cpu_seconds": n.cpu_seconds,
                "disk_write_bytes": n.disk_write_bytes,
                "write_amplification": n.write_amplification,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            let row = vec![
                a.workload.name().to_string(),
                a.clients.to_string(),
                t.ops.to_string(),
                t.errors.to_string(),
                format!("{ops_per_sec:.0}"),
                format!("{mb_per_sec:.1}"),
                format!("{p50:.2}"),
                format!("{p99:.2}"),
                format!("{p999:.2}"),
                format!("{max:.2}"),
            ];
            let mut out = table(
                &[
                    "WORKLOAD", "CLIENTS", "OPS", "ERRORS", "OPS/S", "MB/S", "P50 MS", "P99 MS",
                    "P999 MS", "MAX MS",
                ],
                &[row],
            );
            if !nodes.is_empty() {
                let rows: Vec<Vec<String>> = nodes
                    .iter()
                    .map(|n| {
                        vec![
                            n.id.to_string(),
                            human_bytes(n.peak_rss_bytes),
                            format!("{:.1}", n.cpu_seconds),
                            human_bytes(n.disk_write_bytes),
                            n.write_amplification
                                .map_or_else(|| "-".into(), |w| format!("{w:.2}")),
                        ]
                    })
                    .collect();
                out.push_str("\n\n");
                out.push_str(&table(
                    &["NODE", "PEAK RSS", "CPU S", "DISK WRITTEN", "WRITE AMP"],
                    &rows,
                ));
            }
            if let Some(e) = &t.first_error {
                out.push_str(&format!("\nfirst error: {e}"));
            }
            print_line(&out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Object bytes are never deduplicated: every chunk of every object differs.
    #[test]
    fn unique_objects_have_no_chunk_in_common() {
        let base = Bytes::from(vec![0x5a; 3 * CHUNK_SIZE_BYTES + 100]);
        let mut seen = std::collections::HashSet::new();
        for (worker, i) in [(0, 0), (0, 1), (1, 0), (u64::MAX, 0)] {
            let data = unique(&base, worker, i);
            assert_eq!(data.len(), base.len());
            for chunk in data.chunks(CHUNK_SIZE_BYTES) {
                assert!(seen.insert(chunk.to_vec()), "a chunk repeats");
            }
        }
        assert_eq!(unique(&base, 3, 4), unique(&base, 3, 4), "deterministic");
    }
}
