//! `trove chaos`: one seeded chaos run (see the `trove-testkit` crate) against a local
//! cluster of `trove server` processes started from this very binary (or `--bin`).
//! Prints the report; exits 0 only on PASS, 1 on FAIL, 2 when the run could not decide
//! (a checker timed out, the cluster never converged). A run that did not pass keeps its
//! output folder and prints the command that replays it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use trove_testkit::report::Verdict;
use trove_testkit::{ChaosConfig, FaultKind};

/// Flags of `trove chaos`.
#[derive(Debug, Args)]
#[command(after_long_help = CHAOS_HELP)]
pub struct ChaosArgs {
    /// Seed of the run: the fault schedule and every client's choices derive from it
    /// [default: random, printed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// How long the workload and the faults run, in seconds.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub duration: u64,
    /// Number of founding nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// Fault kinds, comma-separated: kill, pause, partition, asym, flap, delay, reset,
    /// restart-all, membership, wipe (a lost volume), rollback (a volume replaced by an
    /// older copy of itself), corrupt (damaged chunk files and raft log), powercut (a
    /// node's own loop-mounted XFS shut down, losing what was not fsynced; needs root and
    /// xfsprogs), or all (every kind that can run here).
    #[arg(long, default_value = "all", value_name = "LIST")]
    pub faults: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub clients: u32,
    /// Target operations per second, all clients together.
    #[arg(long, default_value_t = 150.0, value_name = "OPS")]
    pub rate: f64,
    /// Number of record keys.
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub keys: u32,
    /// Output folder (history, fault log, node logs and data, report); kept. Without it,
    /// a temporary folder is used and deleted after a pass.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The `trove` binary to run the servers with [default: this executable].
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
    /// `RUST_LOG` of the servers.
    #[arg(long, default_value = "info", value_name = "FILTER")]
    pub server_log: String,
    /// Time limit of the linearizability check of one key, in seconds.
    #[arg(long, default_value_t = 20, value_name = "SECS")]
    pub check_limit: u64,
    /// Restart nodes after a full-cluster kill as after a power cut (their unsynced Raft
    /// log tail is lost). Needs a server built with `--features failpoints`.
    #[arg(long, hide = true)]
    pub power_cut: bool,
    /// Extra environment of every server, KEY=VALUE (repeatable); for failpoints.
    #[arg(long, hide = true, value_name = "KEY=VALUE")]
    pub server_env: Vec<String>,
    /// Re-check a kept run's history.jsonl (linearizability and revisions) instead of
    /// running; e.g. after a checker change.
    #[arg(long, value_name = "FILE")]
    pub check_history: Option<PathBuf>,
}

const CHAOS_HELP: &str = "\
Examples:
  trove chaos --seed 7 --duration 120
  trove chaos --seed 7 --faults kill,pause,partition --out /tmp/chaos-7
  trove chaos --faults partition,asym,delay,restart-all,membership --rate 200

Each run starts its own cluster on 127.0.0.1 (ephemeral ports), routes every peer link
through a fault-injecting proxy, runs the clients and the seeded faults, then heals
everything and checks: no acknowledged write lost (final read of every key and blob),
per-key linearizability, revisions unique and in real-time order, one leader per term,
monotonic terms and indexes, and identical state digests on every node.

Exit status: 0 PASS, 1 FAIL, 2 UNKNOWN (a check could not decide; never a pass).";

/// Runs `trove chaos`; returns the process exit code.
pub async fn run(a: ChaosArgs) -> Result<u8> {
    if let Some(path) = &a.check_history {
        return recheck(path, Duration::from_secs(a.check_limit.max(1))).await;
    }
    let seed = a.seed.unwrap_or_else(rand_seed);
    let faults = FaultKind::parse_list(&a.faults).context("--faults")?;
    if a.duration == 0 || !a.rate.is_finite() || a.rate <= 0.0 {
        bail!("--duration and --rate must be positive");
    }
    let bin = match &a.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("cannot find this executable")?,
    };
    let (out, temporary) = match &a.out {
        Some(o) => (o.clone(), false),
        None => (
            std::env::temp_dir().join(format!("trove-chaos-{seed}-{}", std::process::id())),
            true,
        ),
    };
    let mut server_env = Vec::new();
    for kv in &a.server_env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--server-env {kv:?}: expected KEY=VALUE"))?;
        server_env.push((k.to_string(), v.to_string()));
    }
    let mut cfg = ChaosConfig::new(seed, bin, out.clone());
    cfg.duration = Duration::from_secs(a.duration);
    cfg.nodes = a.nodes;
    cfg.faults = faults;
    cfg.clients = a.clients;
    cfg.rate = a.rate;
    cfg.keys = a.keys;
    cfg.log_level = a.server_log.clone();
    cfg.server_env = server_env;
    cfg.power_cut = a.power_cut;
    cfg.per_key_check_limit = Duration::from_secs(a.check_limit.max(1));
    eprintln!(
        "chaos: seed {seed}, {}s, {} nodes, faults {}, output in {}",
        a.duration,
        a.nodes,
        cfg.faults
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(","),
        out.display()
    );
    let report = match trove_testkit::run(&cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chaos: the run could not complete: {e}");
            eprintln!("chaos: output kept in {}", out.display());
            eprintln!("chaos: replay with: {}", replay_command(&a, seed));
            return Ok(2);
        }
    };
    println!("{report}");
    let code = match report.verdict {
        Verdict::Pass => 0,
        Verdict::Fail => 1,
        Verdict::Unknown => 2,
    };
    if code == 0 {
        if temporary {
            let _ = std::fs::remove_dir_all(&out);
        } else {
            println!("output         {}", out.display());
        }
    } else {
        println!("output         {} (kept)", out.display());
        println!("replay         {}", replay_command(&a, seed));
    }
    Ok(code)
}

/// Re-runs the history checkers over a kept `history.jsonl`.
async fn recheck(path: &std::path::Path, limit: Duration) -> Result<u8> {
    use trove_testkit::check::{linearizable, revisions};
    let history = trove_testkit::history::read_history(path)?;
    let h = history.clone();
    let keys = tokio::task::spawn_blocking(move || linearizable::check_all(&h, limit, 2)).await?;
    let lin = trove_testkit::report::Linearizability::of(&keys);
    let revs = revisions::check(&history);
    println!(
        "{} operations; linearizable keys {}/{}, violations {}, timeouts {}; revision violations {}",
        history.len(),
        lin.ok,
        lin.keys,
        lin.violations.len(),
        lin.timeouts.len(),
        revs.len()
    );
    for (key, stuck, ctx) in &lin.violations {
        println!("  not linearizable: key {key}: op {stuck} cannot be placed (after ops {ctx:?})");
    }
    for v in revs.iter().take(20) {
        println!("  revisions {}: {}", v.kind, v.message);
    }
    Ok(if !lin.violations.is_empty() || !revs.is_empty() {
        1
    } else if !lin.timeouts.is_empty() {
        2
    } else {
        0
    })
}

/// The command that repeats this run (same seed and settings).
fn replay_command(a: &ChaosArgs, seed: u64) -> String {
    let mut cmd = format!(
        "trove chaos --seed {seed} --duration {} --nodes {} --faults {} --clients {} --rate {} --keys {}",
        a.duration, a.nodes, a.faults, a.clients, a.rate, a.keys
    );
    if let Some(b) = &a.bin {
        cmd.push_str(&format!(" --bin {}", b.display()));
    }
    if a.power_cut {
        cmd.push_str(" --power-cut");
    }
    for kv in &a.server_env {
        cmd.push_str(&format!(" --server-env {kv}"));
    }
    cmd
}

/// A seed from the clock and the process id, for runs without `--seed`.
fn rand_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ (u64::from(std::process::id()) << 32)) % 1_000_000_007
}
