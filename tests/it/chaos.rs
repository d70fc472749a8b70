//! Chaos runs (`trove-testkit`) against real `trove server` processes.
//!
//! - `short_chaos_run_passes`: a short seeded run with every fault kind must pass.
//! - `checkers_catch_acks_before_fsync`: the proof that the checkers catch a real
//!   durability bug, with a server built with `--features failpoints` (ignored by
//!   default because building that second binary takes minutes; `.ci/run` builds it
//!   and runs this test with `TROVE_FAILPOINT_BIN` pointing at it).
//!
//! The two longer seeded release-build runs that CI also does are plain `trove chaos`
//! commands in `.ci/run`; `scripts/chaos.sh` runs soaks of many seeds.
//!
//! Design of the proof. The bug is `TROVE_FAILPOINT_ACK_BEFORE_FSYNC=1`: the Raft log's
//! flusher fires openraft's "flushed" callbacks without syncing, so writes are
//! acknowledged before they are durable. SIGKILL alone cannot expose that (the page
//! cache survives a killed process), so the failpoint build also simulates power cuts:
//! after every real log sync it records the highest synced index (in a side file, not
//! synced, which survives SIGKILL), and a node started with
//! `TROVE_FAILPOINT_LOSE_UNSYNCED=1` first cuts its log after that index, exactly as a
//! power cut drops what was never fsynced. The chaos runner passes that variable when it
//! restarts the nodes after a full-cluster kill (`power_cut`).
//!
//! The same seed runs twice with only `restart-all` faults, both with power cuts:
//! 1. the correct server (failpoint build, bug off) must PASS: a correct server syncs
//!    before it acknowledges, so losing the unsynced tail loses nothing acknowledged;
//!    this also shows the simulation itself is harmless (the logs prove it ran);
//! 2. with the bug on it must FAIL: every cluster-wide power cut drops the recently
//!    acknowledged entries from every node, so the final reads miss acknowledged
//!    writes (`lost > 0`), later writes reuse their revisions, and reads after the
//!    restart go back in time (linearizability and revision violations).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use trove_testkit::report::{Report, Verdict};
use trove_testkit::{ChaosConfig, FaultKind};

use crate::harness::{deadline, trove_bin};

/// The output folder of a run: deleted on drop unless the run surprised us.
struct Out {
    path: PathBuf,
    keep: bool,
}

impl Drop for Out {
    fn drop(&mut self) {
        if self.keep || std::thread::panicking() {
            eprintln!("chaos: output kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs one chaos run in a fresh temporary folder, which is kept (and its path printed)
/// if the run did not end as `expect` or the test fails.
async fn chaos(mut cfg: ChaosConfig, expect: Verdict) -> (Report, Out) {
    let path = tempfile::Builder::new()
        .prefix("trove-chaos-it-")
        .tempdir()
        .expect("tempdir")
        .keep();
    cfg.out = path.clone();
    let mut out = Out { path, keep: true };
    let report = match trove_testkit::run(&cfg).await {
        Ok(r) => r,
        Err(e) => panic!("chaos run did not complete: {e}"),
    };
    eprintln!("{report}");
    out.keep = report.verdict != expect;
    (report, out)
}

#[tokio::test(flavor = "multi_thread")]
async fn short_chaos_run_passes() {
    let seed = std::env::var("TROVE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_121);
    eprintln!("chaos test seed {seed} (TROVE_TEST_SEED to replay)");
    let mut cfg = ChaosConfig::new(seed, trove_bin(), PathBuf::new());
    cfg.duration = Duration::from_secs(30);
    cfg.rate = 100.0;
    let (report, _) = deadline(Duration::from_secs(300), chaos(cfg, Verdict::Pass)).await;
    assert_eq!(report.verdict, Verdict::Pass, "seed {seed}: {report}");
    assert!(!report.faults.is_empty(), "no fault was injected");
    assert!(report.oracle.acked_writes > 100, "{report}");
}

/// A `trove` binary built with the `failpoints` feature: `TROVE_FAILPOINT_BIN`, or built
/// now into `target/failpoints` (its own target dir, so the normal binary is untouched).
fn failpoint_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TROVE_FAILPOINT_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let target = root.join("target").join("failpoints");
    eprintln!(
        "building trove with --features failpoints into {}",
        target.display()
    );
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args([
            "build",
            "-p",
            "trove-cli",
            "--features",
            "failpoints",
            "--target-dir",
        ])
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the failpoints binary failed");
    target.join("debug").join("trove")
}

fn power_cut_runs(out: &Path) -> usize {
    (1..=9)
        .map(|id| {
            let log =
                std::fs::read_to_string(out.join(format!("node-{id}.log"))).unwrap_or_default();
            log.matches("failpoint: power cut simulated").count()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "builds a second trove binary with --features failpoints (minutes); CI runs it"]
async fn checkers_catch_acks_before_fsync() {
    let bin = failpoint_bin();
    let seed = 4242;
    let config = |bug: bool| {
        let mut cfg = ChaosConfig::new(seed, bin.clone(), PathBuf::new());
        cfg.duration = Duration::from_secs(40);
        cfg.faults = vec![FaultKind::RestartAll];
        cfg.rate = 100.0;
        cfg.power_cut = true;
        if bug {
            // The vote gate (server `recovery`) notices that every node lost what it
            // acknowledged and stops the cluster rather than serve it (the run then
            // ends UNKNOWN: no leader). The proof is about the checkers, so the bug
            // run trusts local disks like plain Raft and must be caught by them.
            cfg.server_env = vec![
                ("TROVE_FAILPOINT_ACK_BEFORE_FSYNC".into(), "1".into()),
                ("TROVE_FAILPOINT_NO_VOTE_GATE".into(), "1".into()),
            ];
        }
        cfg
    };

    // 1. A correct server survives the simulated power cuts.
    let (good, out) = deadline(
        Duration::from_secs(400),
        chaos(config(false), Verdict::Pass),
    )
    .await;
    assert_eq!(good.verdict, Verdict::Pass, "correct server failed: {good}");
    assert!(
        good.faults
            .iter()
            .filter(|f| f.kind == FaultKind::RestartAll)
            .count()
            >= 3,
        "{good}"
    );
    let cuts = power_cut_runs(&out.path);
    assert!(
        cuts >= 3,
        "the power-cut simulation ran {cuts} times: is {} a failpoints build?",
        bin.display()
    );

    // 2. Acknowledging before fsync loses acknowledged writes, and the checkers say so.
    let (bad, _) = deadline(Duration::from_secs(400), chaos(config(true), Verdict::Fail)).await;
    assert_eq!(bad.verdict, Verdict::Fail, "the bug went unnoticed: {bad}");
    let caught = bad.oracle.lost > 0
        || !bad.linearizability.violations.is_empty()
        || !bad.revisions.is_empty();
    assert!(caught, "failed, but not for lost writes: {bad}");
    eprintln!(
        "failpoint run: lost={} non-linearizable keys={} revision violations={}",
        bad.oracle.lost,
        bad.linearizability.violations.len(),
        bad.revisions.len()
    );
}
