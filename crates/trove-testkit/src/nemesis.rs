//! The nemesis: a fault schedule derived only from the seed, and its execution against a
//! [`ProcessCluster`]. Faults run one at a time (so at most one node is down, paused or
//! cut off at any moment, and a majority of voters can always talk), except the
//! full-cluster restart. Membership changes run while a lighter fault (delays or
//! connection resets) is active, and keep the voter count between the initial size and
//! one more.
//!
//! The schedule fixes kinds, timings and random choices; which node "the leader" or
//! "node #k" is gets resolved when the fault starts.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use trove_client::{Client, ClientConfig, Role};

use crate::cluster::{NodeState, ProcessCluster};
use crate::error::{Result, TestkitError};
use crate::history::Recorder;

/// How long a membership change may take (a joining node must catch up).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);
/// Environment that makes a (failpoints-enabled) node lose its unsynced log tail at
/// start-up, as after a power cut (see trove-raft's `failpoints` module).
pub const LOSE_UNSYNCED_ENV: &str = "TROVE_FAILPOINT_LOSE_UNSYNCED";

/// The kinds of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL a node (often the leader), restart it after a while.
    Kill,
    /// SIGSTOP a node, SIGCONT it after a while.
    Pause,
    /// Cut a node (often the leader) off from every peer, both ways.
    Partition,
    /// One-way loss: a node's outgoing (or incoming) peer traffic is dropped.
    Asym,
    /// A node's links go down and up repeatedly.
    Flap,
    /// Latency and jitter on a node's links (or on all links).
    Delay,
    /// A node's peer connections are reset repeatedly.
    Reset,
    /// SIGKILL every node at once, restart them all in random order.
    RestartAll,
    /// Add, remove or replace a node (under delays or resets).
    Membership,
    /// A lost volume: SIGKILL a node, delete its data directory, restart it with the
    /// same command (it must be re-seeded, never vote on its empty state).
    Wipe,
    /// A rolled-back volume: copy a node's data directory, let it acknowledge more
    /// writes, SIGKILL it, put the old copy back, restart it.
    Rollback,
    /// Corruption on one node: while it runs, flip bits in, zero ranges of, truncate or
    /// delete some of its chunk files and have its scrubber find and repair them from
    /// peers; then SIGKILL it, flip a byte in the middle of its raft log and restart it
    /// (it must not vote until a leader has re-sent what the damage cut off).
    Corrupt,
    /// A power cut of one node: its filesystem (a loop-mounted XFS of its own) is shut
    /// down at once, losing everything not fsynced, the process is killed, and the node
    /// comes back after a while on the remounted filesystem. Needs root and xfsprogs.
    PowerCut,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 13] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Asym,
        FaultKind::Flap,
        FaultKind::Delay,
        FaultKind::Reset,
        FaultKind::RestartAll,
        FaultKind::Membership,
        FaultKind::Wipe,
        FaultKind::Rollback,
        FaultKind::Corrupt,
        FaultKind::PowerCut,
    ];

    /// Every kind that can run on this machine (`powercut` needs root and xfsprogs).
    pub fn available() -> Vec<FaultKind> {
        let powercut_ok = crate::disks::unavailable().is_none();
        FaultKind::ALL
            .into_iter()
            .filter(|k| *k != FaultKind::PowerCut || powercut_ok)
            .collect()
    }

    /// The name used by `--faults` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Asym => "asym",
            FaultKind::Flap => "flap",
            FaultKind::Delay => "delay",
            FaultKind::Reset => "reset",
            FaultKind::RestartAll => "restart-all",
            FaultKind::Membership => "membership",
            FaultKind::Wipe => "wipe",
            FaultKind::Rollback => "rollback",
            FaultKind::Corrupt => "corrupt",
            FaultKind::PowerCut => "powercut",
        }
    }

    /// Parses a comma-separated list of names (`all` for every kind).
    pub fn parse_list(s: &str) -> Result<Vec<FaultKind>> {
        let mut out = BTreeSet::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all" {
                // Power cuts need root and xfsprogs; `all` means all that can run here.
                out.extend(FaultKind::available());
                continue;
            }
            let k = FaultKind::ALL
                .into_iter()
                .find(|k| k.name() == part)
                .ok_or_else(|| {
                    TestkitError::Config(format!(
                        "unknown fault kind {part:?}; known: all, {}",
                        FaultKind::ALL.map(FaultKind::name).join(", ")
                    ))
                })?;
            if k == FaultKind::PowerCut
                && let Some(why) = crate::disks::unavailable()
            {
                return Err(TestkitError::Config(format!(
                    "fault kind powercut {why}: each node's data goes on its own loop-mounted XFS"
                )));
            }
            out.insert(k);
        }
        Ok(out.into_iter().collect())
    }
}

/// One planned fault: every random choice is made here, from the seed.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedFault {
    /// Quiet time before the fault starts.
    pub gap_ms: u64,
    pub kind: FaultKind,
    /// Aim at the leader (else at a member chosen with `pick`).
    pub at_leader: bool,
    pub pick: u64,
    /// How long the fault lasts.
    pub hold_ms: u64,
    /// Kind-specific: delay (ms), flap or reset period (ms), asym direction (0: the node
    /// cannot send, 1: cannot receive), membership action (0 add, 1 remove, 2 replace).
    pub a: u64,
    /// Kind-specific: jitter (ms); for membership, the concurrent fault (0 delay, 1 reset).
    pub b: u64,
}

/// The schedule of a run: faults until `duration` is used up.
pub fn schedule(seed: u64, duration: Duration, kinds: &[FaultKind]) -> Vec<PlannedFault> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6E65_6D65_7369_7321);
    let mut out = Vec::new();
    if kinds.is_empty() {
        return out;
    }
    let total_ms = duration.as_millis() as u64;
    // The first fault waits for the workload to warm up.
    let mut t = 0;
    let mut first = true;
    loop {
        let gap_ms = if first {
            rng.random_range(2_000..=4_000)
        } else {
            rng.random_range(1_000..=3_000)
        };
        first = false;
        let kind = kinds[rng.random_range(0..kinds.len())];
        let (hold_ms, a, b) = match kind {
            FaultKind::Kill | FaultKind::Pause => (rng.random_range(1_000..=4_000), 0, 0),
            FaultKind::Partition => (rng.random_range(2_000..=6_000), 0, 0),
            FaultKind::Asym => (rng.random_range(2_000..=6_000), rng.random_range(0..2), 0),
            FaultKind::Flap => (
                rng.random_range(3_000..=6_000),
                rng.random_range(200..=800),
                0,
            ),
            FaultKind::Delay => (
                rng.random_range(3_000..=8_000),
                rng.random_range(20..=250),
                rng.random_range(0..=100),
            ),
            FaultKind::Reset => (
                rng.random_range(2_000..=4_000),
                rng.random_range(300..=1_000),
                0,
            ),
            FaultKind::RestartAll => (rng.random_range(500..=2_000), 0, 0),
            FaultKind::Membership => (0, rng.random_range(0..3), rng.random_range(0..2)),
            // Wipe: how long the node stays down. Rollback: how long it runs (and
            // acknowledges writes) between the copy and the rollback.
            FaultKind::Wipe | FaultKind::PowerCut => (rng.random_range(1_000..=3_000), 0, 0),
            FaultKind::Rollback => (rng.random_range(2_000..=5_000), 0, 0),
            // Corrupt: how long the node stays down for the log damage; `a` chunk files
            // are damaged; `b` seeds the choice of files and damage.
            FaultKind::Corrupt => (
                rng.random_range(500..=2_000),
                rng.random_range(1..=4),
                rng.random(),
            ),
        };
        // Restarts and membership changes take a few seconds beyond their hold.
        let cost = gap_ms
            + hold_ms
            + match kind {
                FaultKind::Membership => 8_000,
                // Re-seeding from a peer (a snapshot of the whole state) takes a while.
                FaultKind::Wipe
                | FaultKind::Rollback
                | FaultKind::Corrupt
                | FaultKind::PowerCut => 5_000,
                _ => 1_000,
            };
        if t + cost > total_ms.saturating_sub(2_000) {
            break;
        }
        t += cost;
        out.push(PlannedFault {
            gap_ms,
            kind,
            at_leader: rng.random_bool(0.5),
            pick: rng.random(),
            hold_ms,
            a,
            b,
        });
    }
    out
}

/// One fault as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct FaultEvent {
    pub kind: FaultKind,
    /// Nodes hit.
    pub targets: Vec<u64>,
    /// Whether the target was the leader when the fault started.
    pub leader: bool,
    pub detail: String,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Why the fault could not be carried out, if it could not.
    pub error: Option<String>,
    /// For `corrupt`: what was damaged and what the node's scrubber made of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damage: Option<DamageOutcome>,
}

/// The outcome of a `corrupt` fault, checked by the report: every bad chunk the node
/// found must have been repaired from a peer (one node's damage never costs data).
#[derive(Clone, Debug, Default, Serialize)]
pub struct DamageOutcome {
    pub node: u64,
    /// Chunk files damaged.
    pub chunks_damaged: u64,
    /// Bad chunks the node found (scrub pass or reads) while the fault ran.
    pub chunks_found: u64,
    pub chunks_repaired: u64,
    pub chunks_unrepairable: u64,
    /// Whether a byte of its raft log was flipped before its restart.
    pub log_damaged: bool,
}

/// Executes a schedule.
pub struct Nemesis {
    pub cluster: Arc<Mutex<ProcessCluster>>,
    pub recorder: Arc<Recorder>,
    /// Voters at the start; membership changes keep between this and one more.
    pub base_voters: usize,
    /// Restart nodes after a full-cluster kill as after a power cut (failpoint builds).
    pub power_cut: bool,
}

/// Sleeps `d` unless `stop` comes first; returns whether it slept fully.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.cancelled() => false,
    }
}

impl Nemesis {
    /// Runs `plan` until it ends or `stop` is cancelled; every fault is healed before
    /// the next one starts (and before this returns).
    pub async fn run(&self, plan: &[PlannedFault], stop: &CancellationToken) -> Vec<FaultEvent> {
        let mut events = Vec::new();
        for f in plan {
            if !sleep_or_stop(Duration::from_millis(f.gap_ms), stop).await {
                break;
            }
            let start_ns = self.recorder.now_ns();
            let mut ev = FaultEvent {
                kind: f.kind,
                targets: vec![],
                leader: false,
                detail: String::new(),
                start_ns,
                end_ns: start_ns,
                error: None,
                damage: None,
            };
            if let Err(e) = self.execute(f, &mut ev, stop).await {
                ev.error = Some(e.to_string());
            }
            ev.end_ns = self.recorder.now_ns();
            tracing::info!(kind = f.kind.name(), targets = ?ev.targets, detail = %ev.detail, error = ?ev.error, "fault done");
            events.push(ev);
        }
        events
    }

    /// The node a fault aims at: the leader, or a running member chosen by `pick`
    /// (`ev.leader` says whether it was the leader either way).
    async fn target(&self, f: &PlannedFault, ev: &mut FaultEvent) -> Result<u64> {
        let mut c = self.cluster.lock().await;
        let leader = c.leader().await.map(|(l, _)| l);
        let live = c.live_ids();
        let id = match leader {
            Some(l) if f.at_leader => l,
            _ if live.is_empty() => {
                return Err(TestkitError::Timeout("no node is running".into()));
            }
            _ => live[(f.pick % live.len() as u64) as usize],
        };
        ev.leader = leader == Some(id);
        ev.targets = vec![id];
        Ok(id)
    }

    async fn execute(
        &self,
        f: &PlannedFault,
        ev: &mut FaultEvent,
        stop: &CancellationToken,
    ) -> Result<()> {
        let hold = Duration::from_millis(f.hold_ms);
        match f.kind {
            FaultKind::Kill => {
                let id = self.target(f, ev).await?;
                self.cluster.lock().await.kill(id)?;
                ev.detail = format!("SIGKILL node {id}, down {hold:?}");
                sleep_or_stop(hold, stop).await;
                self.cluster.lock().await.restart(id, &[]).await?;
            }
            FaultKind::Pause => {
                let id = self.target(f, ev).await?;
                self.cluster.lock().await.pause(id)?;
                ev.detail = format!("SIGSTOP node {id} for {hold:?}");
                sleep_or_stop(hold, stop).await;
                self.cluster.lock().await.resume(id)?;
            }
            FaultKind::Partition | FaultKind::Asym | FaultKind::Flap => {
                let id = self.target(f, ev).await?;
                let c = self.cluster.lock().await;
                let (proxy, all) = (c.proxy().clone(), c.all_ids());
                drop(c);
                let others: Vec<u64> = all.into_iter().filter(|&o| o != id).collect();
                let cut = |on: bool| match (f.kind, f.a) {
                    (FaultKind::Asym, 0) => others.iter().for_each(|&o| {
                        proxy.set_rule(id, o, rule_blackhole(proxy.rule(id, o), on))
                    }),
                    (FaultKind::Asym, _) => others.iter().for_each(|&o| {
                        proxy.set_rule(o, id, rule_blackhole(proxy.rule(o, id), on))
                    }),
                    _ => proxy.update_links(id, &others, |r| r.blackhole = on),
                };
                ev.detail = match (f.kind, f.a) {
                    (FaultKind::Asym, 0) => format!("node {id} cannot send for {hold:?}"),
                    (FaultKind::Asym, _) => format!("node {id} cannot receive for {hold:?}"),
                    (FaultKind::Flap, _) => {
                        format!("node {id} flapping every {}ms for {hold:?}", f.a)
                    }
                    _ => format!("node {id} isolated for {hold:?}"),
                };
                if f.kind == FaultKind::Flap {
                    let end = tokio::time::Instant::now() + hold;
                    let mut on = true;
                    while tokio::time::Instant::now() < end && !stop.is_cancelled() {
                        cut(on);
                        on = !on;
                        sleep_or_stop(Duration::from_millis(f.a), stop).await;
                    }
                } else {
                    cut(true);
                    sleep_or_stop(hold, stop).await;
                }
                cut(false);
            }
            FaultKind::Delay => {
                let c = self.cluster.lock().await;
                let (proxy, all) = (c.proxy().clone(), c.all_ids());
                drop(c);
                let nodes = if f.pick.is_multiple_of(3) {
                    ev.detail = format!("all links +{}ms ±{}ms for {hold:?}", f.a, f.b);
                    all.clone()
                } else {
                    let id = self.target(f, ev).await?;
                    ev.detail = format!("node {id}'s links +{}ms ±{}ms for {hold:?}", f.a, f.b);
                    vec![id]
                };
                let set = |ms: u32, jitter: u32| {
                    for &n in &nodes {
                        proxy.update_links(n, &all, |r| {
                            r.delay_ms = ms;
                            r.jitter_ms = jitter;
                        });
                    }
                };
                set(f.a as u32, f.b as u32);
                sleep_or_stop(hold, stop).await;
                set(0, 0);
            }
            FaultKind::Reset => {
                let id = self.target(f, ev).await?;
                let proxy = self.cluster.lock().await.proxy().clone();
                let end = tokio::time::Instant::now() + hold;
                let mut n = 0;
                while tokio::time::Instant::now() < end && !stop.is_cancelled() {
                    n += proxy.reset_node(id);
                    sleep_or_stop(Duration::from_millis(f.a), stop).await;
                }
                ev.detail = format!("reset node {id}'s connections every {}ms ({n} resets)", f.a);
            }
            FaultKind::RestartAll => {
                let mut c = self.cluster.lock().await;
                let members = c.member_ids();
                ev.targets = members.clone();
                c.kill_all();
                drop(c);
                sleep_or_stop(hold, stop).await;
                let mut order = members;
                let mut rng = StdRng::seed_from_u64(f.pick);
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.random_range(0..=i));
                }
                let env: Vec<(String, String)> = if self.power_cut {
                    vec![(LOSE_UNSYNCED_ENV.to_string(), "1".to_string())]
                } else {
                    vec![]
                };
                ev.detail = format!(
                    "SIGKILL all, down {hold:?}, restarted in order {order:?}{}",
                    if self.power_cut {
                        " (power cut: unsynced log tails and state stores lost)"
                    } else {
                        ""
                    }
                );
                for id in order {
                    let gap = Duration::from_millis(rng.random_range(0..500));
                    tokio::time::sleep(gap).await;
                    let mut c = self.cluster.lock().await;
                    if self.power_cut {
                        c.drop_state_store(id)?;
                    }
                    c.restart(id, &env).await?;
                }
            }
            FaultKind::Membership => self.membership(f, ev).await?,
            FaultKind::Wipe => {
                self.no_node_recovering().await?;
                let id = self.target(f, ev).await?;
                let mut c = self.cluster.lock().await;
                c.kill(id)?;
                c.wipe(id)?;
                drop(c);
                ev.detail = format!("SIGKILL node {id}, data directory deleted, down {hold:?}");
                sleep_or_stop(hold, stop).await;
                self.cluster.lock().await.restart(id, &[]).await?;
            }
            FaultKind::Rollback => {
                self.no_node_recovering().await?;
                let id = self.target(f, ev).await?;
                let mut c = self.cluster.lock().await;
                let copy = c.root().join(format!("rollback-copy-{id}"));
                c.kill(id)?;
                c.copy_volume(id, &copy)?;
                c.restart(id, &[]).await?;
                drop(c);
                // The node acknowledges more writes, then loses them to the old copy.
                sleep_or_stop(hold, stop).await;
                let mut c = self.cluster.lock().await;
                c.kill(id)?;
                c.roll_back(id, &copy)?;
                let _ = std::fs::remove_dir_all(&copy);
                c.restart(id, &[]).await?;
                ev.detail = format!("node {id}'s data directory rolled back by {hold:?}");
            }
            FaultKind::Corrupt => self.corrupt(f, ev, hold, stop).await?,
            FaultKind::PowerCut => {
                self.no_node_recovering().await?;
                let id = self.target(f, ev).await?;
                self.cluster.lock().await.power_cut(id)?;
                ev.detail = format!(
                    "node {id}'s filesystem shut down (unsynced writes lost), process killed, down {hold:?}"
                );
                sleep_or_stop(hold, stop).await;
                self.cluster.lock().await.restart(id, &[]).await?;
            }
        }
        Ok(())
    }

    /// Damages one node's chunk files while it runs and has its scrubber repair them,
    /// then damages its raft log while it is down (see [`FaultKind::Corrupt`]).
    async fn corrupt(
        &self,
        f: &PlannedFault,
        ev: &mut FaultEvent,
        hold: Duration,
        stop: &CancellationToken,
    ) -> Result<()> {
        self.no_node_recovering().await?;
        let id = self.target(f, ev).await?;
        let mut rng = StdRng::seed_from_u64(f.b);
        let mut out = DamageOutcome {
            node: id,
            ..DamageOutcome::default()
        };
        let c = self.cluster.lock().await;
        let before = c.scrub_of(id, false).await?;
        let damaged = c.damage_chunks(id, f.a as usize, &mut rng)?;
        out.chunks_damaged = damaged.len() as u64;
        c.scrub_of(id, true).await?;
        drop(c);
        // Wait for the pass (reads by the workload may repair some chunks first).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let after = loop {
            let r = self.cluster.lock().await.scrub_of(id, false).await?;
            if !r.running && r.passes_completed > before.passes_completed {
                break r;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(TestkitError::Timeout(format!(
                    "node {id}'s scrub pass did not finish within 60s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        out.chunks_found = (after.corrupt_found + after.missing_found)
            .saturating_sub(before.corrupt_found + before.missing_found);
        out.chunks_repaired = after.repaired.saturating_sub(before.repaired);
        out.chunks_unrepairable = after.unrepairable.saturating_sub(before.unrepairable);
        let mut c = self.cluster.lock().await;
        c.kill(id)?;
        out.log_damaged = c.damage_log(id, &mut rng)?;
        drop(c);
        ev.detail = format!(
            "node {id}: {}; scrub found {}, repaired {}, unrepairable {}; raft log byte flipped: {}; down {hold:?}",
            if damaged.is_empty() {
                "no chunk file to damage".to_string()
            } else {
                damaged.join(", ")
            },
            out.chunks_found,
            out.chunks_repaired,
            out.chunks_unrepairable,
            out.log_damaged
        );
        ev.damage = Some(out);
        sleep_or_stop(hold, stop).await;
        self.cluster.lock().await.restart(id, &[]).await
    }

    /// Disk faults hit one node at a time (two lost volumes at once are beyond what a
    /// three-node cluster can survive): waits until no running member is still being
    /// re-seeded after the previous one.
    async fn no_node_recovering(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut c = self.cluster.lock().await;
            let mut busy = Vec::new();
            for id in c.live_ids() {
                match c.status_of(id).await {
                    Ok(st) if !st.recovering => {}
                    _ => busy.push(id),
                }
            }
            drop(c);
            if busy.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(TestkitError::Timeout(format!(
                    "nodes {busy:?} still recovering from the previous disk fault after 60s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Add, remove or replace a node, while delays or resets hit another node.
    async fn membership(&self, f: &PlannedFault, ev: &mut FaultEvent) -> Result<()> {
        let (leader, st) = self
            .cluster
            .lock()
            .await
            .wait_leader(Duration::from_secs(20))
            .await?;
        let voters: Vec<u64> = st
            .members
            .iter()
            .filter(|m| matches!(m.role, Role::Leader | Role::Follower))
            .map(|m| m.id)
            .collect();
        let grow = voters.len() <= self.base_voters;
        let action = match (f.a, grow) {
            (0 | 1, true) => "add",
            (0 | 1, false) => "remove",
            _ => "replace",
        };
        // The lighter fault that runs meanwhile, on another voter.
        let proxy = self.cluster.lock().await.proxy().clone();
        let all = self.cluster.lock().await.all_ids();
        let victim = voters[(f.pick % voters.len() as u64) as usize];
        if f.b == 0 {
            proxy.update_links(victim, &all, |r| r.delay_ms = 80);
        } else {
            proxy.reset_node(victim);
        }
        let result = async {
            let mut done = Vec::new();
            match action {
                "add" => done.push(format!("added node {}", self.add_node(leader).await?)),
                "remove" => {
                    let id = voters[(f.pick.rotate_left(17) % voters.len() as u64) as usize];
                    self.remove_node(id).await?;
                    done.push(format!("removed node {id}"));
                }
                _ => {
                    let old = voters[(f.pick.rotate_left(17) % voters.len() as u64) as usize];
                    if grow {
                        done.push(format!("added node {}", self.add_node(leader).await?));
                        self.remove_node(old).await?;
                    } else {
                        self.remove_node(old).await?;
                        let (l, _) = self
                            .cluster
                            .lock()
                            .await
                            .wait_leader(Duration::from_secs(20))
                            .await?;
                        done.push(format!("added node {}", self.add_node(l).await?));
                    }
                    done.push(format!("removed node {old}"));
                }
            }
            Ok::<_, TestkitError>(done)
        }
        .await;
        proxy.update_links(victim, &all, |r| r.delay_ms = 0);
        let lighter = if f.b == 0 { "delayed" } else { "reset" };
        match result {
            Ok(done) => {
                ev.detail = format!(
                    "{action}: {} (node {victim} {lighter} meanwhile)",
                    done.join(", ")
                );
                Ok(())
            }
            Err(e) => {
                ev.detail = format!("{action} (node {victim} {lighter} meanwhile)");
                Err(e)
            }
        }
    }

    /// Starts a new node that joins through `via` and waits until it is a voter.
    async fn add_node(&self, via: u64) -> Result<u64> {
        let mut c = self.cluster.lock().await;
        let (_, st) = c.wait_leader(Duration::from_secs(20)).await?;
        let id = st
            .max_node_id
            .max(c.all_ids().into_iter().max().unwrap_or(0))
            + 1;
        c.spawn_joining(id, via).await?;
        let start = tokio::time::Instant::now();
        loop {
            if let Some((_, st)) = c.leader().await
                && st
                    .members
                    .iter()
                    .any(|m| m.id == id && matches!(m.role, Role::Leader | Role::Follower))
            {
                return Ok(id);
            }
            if start.elapsed() > MEMBERSHIP_TIMEOUT {
                return Err(TestkitError::Timeout(format!(
                    "node {id} did not become a voter within {MEMBERSHIP_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Removes voter `id` through the admin API, then stops its process.
    async fn remove_node(&self, id: u64) -> Result<()> {
        let endpoints = self.cluster.lock().await.client_addrs();
        let admin = Client::new(ClientConfig {
            request_timeout: Duration::from_secs(10),
            retry_budget: Duration::from_secs(20),
            ..ClientConfig::new(endpoints)
        })
        .map_err(|e| TestkitError::client("admin client", e))?;
        let res = admin.remove_node(id).await;
        // Whatever the answer, believe the membership: the call may have timed out
        // after it took effect.
        let start = tokio::time::Instant::now();
        loop {
            let mut c = self.cluster.lock().await;
            if let Some((_, st)) = c.leader().await {
                if st.members.iter().all(|m| m.id != id) {
                    c.retire(id);
                    return Ok(());
                }
                if let Err(e) = &res
                    && !e.is_retryable()
                {
                    return Err(TestkitError::client(format!("remove node {id}"), e.clone()));
                }
            }
            drop(c);
            if start.elapsed() > MEMBERSHIP_TIMEOUT {
                return Err(TestkitError::Timeout(format!(
                    "node {id} still a member {MEMBERSHIP_TIMEOUT:?} after remove ({res:?})"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn rule_blackhole(mut r: crate::proxy::LinkRule, on: bool) -> crate::proxy::LinkRule {
    r.blackhole = on;
    r
}

/// Heals everything after the run: lifts every proxy rule, resumes paused nodes and
/// restarts dead members. Returns what could not be healed.
pub async fn heal_all(cluster: &Mutex<ProcessCluster>) -> Vec<String> {
    let mut c = cluster.lock().await;
    c.proxy().heal_all();
    let mut errors = Vec::new();
    for id in c.member_ids() {
        let r = match c.state(id) {
            NodeState::Paused => c.resume(id),
            NodeState::Down => c.restart(id, &[]).await,
            NodeState::Running | NodeState::Removed => Ok(()),
        };
        if let Err(e) = r {
            errors.push(format!("healing node {id}: {e}"));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_depend_only_on_the_seed() {
        let d = Duration::from_secs(120);
        let a = schedule(7, d, &FaultKind::ALL);
        let b = schedule(7, d, &FaultKind::ALL);
        let c = schedule(8, d, &FaultKind::ALL);
        let text = |s: &[PlannedFault]| serde_json::to_string(s).unwrap();
        assert_eq!(text(&a), text(&b));
        assert_ne!(text(&a), text(&c));
        assert!(a.len() >= 8, "only {} faults in 120s", a.len());
        let total: u64 = a.iter().map(|f| f.gap_ms + f.hold_ms).sum();
        assert!(total < 120_000);
    }

    #[test]
    fn powercut_is_in_all_only_where_it_can_run() {
        let why = crate::disks::unavailable();
        let all = FaultKind::parse_list("all").unwrap();
        assert_eq!(all.contains(&FaultKind::PowerCut), why.is_none());
        assert_eq!(all.len(), FaultKind::ALL.len() - usize::from(why.is_some()));
        match why {
            // Asked for by name where it cannot run: a clear error, not a silent skip.
            Some(_) => assert!(FaultKind::parse_list("powercut,kill").is_err()),
            None => assert_eq!(
                FaultKind::parse_list("powercut").unwrap(),
                vec![FaultKind::PowerCut]
            ),
        }
    }

    #[test]
    fn schedules_use_only_the_chosen_kinds() {
        let kinds = FaultKind::parse_list("kill,partition").unwrap();
        let s = schedule(1, Duration::from_secs(300), &kinds);
        assert!(s.iter().all(|f| kinds.contains(&f.kind)));
        assert!(s.iter().any(|f| f.kind == FaultKind::Kill));
        assert!(s.iter().any(|f| f.kind == FaultKind::Partition));
    }

    #[test]
    fn fault_lists_parse() {
        // `all` leaves out what this machine cannot do (power cuts need root and xfsprogs).
        assert_eq!(
            FaultKind::parse_list("all").unwrap(),
            FaultKind::available()
        );
        assert!(FaultKind::available().len() >= FaultKind::ALL.len() - 1);
        assert_eq!(
            FaultKind::parse_list("restart-all, asym").unwrap(),
            vec![FaultKind::Asym, FaultKind::RestartAll]
        );
        assert!(FaultKind::parse_list("kill,nuke").is_err());
    }
}
