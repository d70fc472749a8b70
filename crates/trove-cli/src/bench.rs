//! `trove bench`: closed-loop load over the SDK against a running cluster. Each client is
//! its own SDK connection issuing one operation after another; latencies go into an
//! HDR histogram. Prints ops/s, MB/s, p50/p99/p999 and errors, as a table or JSON.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde_json::json;
use trove_client::{Client, ClientConfig, Consistency, TroveError};

use crate::args::{GlobalArgs, OutputFormat};
use crate::output::{print_json, print_line, table};

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
        }
    }
}

#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  trove bench --workload record-put --clients 1 --duration 10
  trove bench --workload record-get --clients 64 --ops 100000 -o json
  trove bench --workload object-put --object-size 67108864 --ops 8")]
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
}

/// What one client measured.
struct Tally {
    hist: Histogram<u64>,
    ops: u64,
    errors: u64,
    bytes: u64,
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
            first_error: None,
        })
    }
}

/// A client with its own connections (and its own client id, so request ids never
/// collide with another run's).
fn connect(global: &GlobalArgs) -> Result<Client> {
    let mut cfg = ClientConfig::new(global.endpoints.iter().cloned());
    cfg.request_timeout = global.timeout;
    cfg.retry_budget = global.retry_budget;
    Client::new(cfg).context("--endpoints")
}

pub async fn run(global: &GlobalArgs, a: BenchArgs) -> Result<()> {
    let setup = connect(global)?;
    let data = Bytes::from(vec![0x5a; a.object_size as usize]);
    let value = Bytes::from(vec![0x61; a.value_size]);
    prepare(&setup, &a, &value, &data).await?;

    let deadline = Instant::now() + Duration::from_secs(a.duration);
    let per_client = a.ops.map(|n| n.div_ceil(u64::from(a.clients)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..a.clients {
        let client = connect(global)?;
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
                let t0 = Instant::now();
                let r = one_op(
                    &client,
                    workload,
                    w,
                    i,
                    keys,
                    &mut rng,
                    &value,
                    &data,
                    &mut cas_rev,
                )
                .await;
                let us = t0.elapsed().as_micros().max(1) as u64;
                match r {
                    Ok(bytes) => {
                        t.hist.saturating_record(us);
                        t.ops += 1;
                        t.bytes += bytes;
                    }
                    Err(e) => {
                        t.errors += 1;
                        t.first_error.get_or_insert_with(|| e.to_string());
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
        if all.first_error.is_none() {
            all.first_error = t.first_error;
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    report(global.output, &a, &all, secs)?;
    if all.ops == 0 {
        bail!(
            "no operation succeeded: {}",
            all.first_error.unwrap_or_default()
        );
    }
    Ok(())
}

/// Writes what the read workloads read, and the bucket.
async fn prepare(c: &Client, a: &BenchArgs, value: &Bytes, data: &Bytes) -> Result<()> {
    if matches!(a.workload, Workload::ObjectPut | Workload::ObjectGet) {
        match c.create_bucket(BUCKET).await {
            Ok(_) | Err(TroveError::AlreadyExists(_)) => {}
            Err(e) => return Err(e).context("create bucket"),
        }
    }
    match a.workload {
        Workload::RecordGet | Workload::RecordGetLocal | Workload::Mixed => {
            let mut last = 0;
            for k in 0..a.keys {
                last = c
                    .put_record(&key(k), value.clone(), None)
                    .await
                    .context("prefill records")?;
            }
            // A local read must find them on whichever node it asks.
            wait_applied_everywhere(c, last).await?;
        }
        Workload::ObjectGet => {
            for k in 0..GET_OBJECTS {
                c.put_object_bytes(BUCKET, &format!("get/{k}"), data.clone())
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

/// One operation; returns the payload bytes it moved.
#[allow(clippy::too_many_arguments)]
async fn one_op(
    c: &Client,
    workload: Workload,
    worker: u32,
    i: u64,
    keys: u64,
    rng: &mut impl Rng,
    value: &Bytes,
    data: &Bytes,
    cas_rev: &mut Option<u64>,
) -> Result<u64, TroveError> {
    let w = match workload {
        Workload::Mixed => match rng.random_range(0..10) {
            0..5 => Workload::RecordGet,
            5..9 => Workload::RecordPut,
            _ => Workload::RecordCas,
        },
        w => w,
    };
    match w {
        Workload::RecordPut | Workload::Mixed => {
            c.put_record(&key(rng.random_range(0..keys)), value.clone(), None)
                .await?;
            Ok(value.len() as u64)
        }
        Workload::RecordGet | Workload::RecordGetLocal => {
            let consistency = if w == Workload::RecordGet {
                Consistency::Linearizable
            } else {
                Consistency::Local
            };
            let r = c
                .get_record(&key(rng.random_range(0..keys)), consistency)
                .await?;
            Ok(r.value.len() as u64)
        }
        Workload::RecordCas => {
            let k = format!("bench/cas/{worker}");
            let expected = match *cas_rev {
                Some(r) => r,
                None => match c.get_record(&k, Consistency::Linearizable).await {
                    Ok(r) => r.revision,
                    Err(TroveError::NotFound(_)) => 0,
                    Err(e) => return Err(e),
                },
            };
            match c.put_record(&k, value.clone(), Some(expected)).await {
                Ok(rev) => {
                    *cas_rev = Some(rev);
                    Ok(value.len() as u64)
                }
                Err(e) => {
                    *cas_rev = None;
                    Err(e)
                }
            }
        }
        Workload::ObjectPut => {
            let key = format!("put/{worker}/{}", i % PUT_OBJECT_SLOTS);
            c.put_object_bytes(BUCKET, &key, data.clone()).await?;
            Ok(data.len() as u64)
        }
        Workload::ObjectGet => {
            let key = format!("get/{}", rng.random_range(0..GET_OBJECTS));
            let mut reader = c
                .get_object(BUCKET, &key, None, Consistency::Linearizable)
                .await?;
            let mut n = 0u64;
            while let Some(chunk) = reader.next_chunk().await? {
                n += chunk.len() as u64;
            }
            Ok(n)
        }
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn report(format: OutputFormat, a: &BenchArgs, t: &Tally, secs: f64) -> Result<()> {
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
            if let Some(e) = &t.first_error {
                out.push_str(&format!("\nfirst error: {e}"));
            }
            print_line(&out)
        }
    }
}
