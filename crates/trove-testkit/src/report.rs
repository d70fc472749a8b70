//! The report of a chaos run (the figures `faults.md` asks for) and its verdict: PASS
//! only when every checker passed and none timed out; a checker timeout or a cluster
//! that never converged is UNKNOWN, never a pass.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::check::invariants::InvariantReport;
use crate::check::linearizable::{KeyResult, KeyVerdict};
use crate::check::oracle::OracleReport;
use crate::check::revisions::RevisionViolation;
use crate::history::{Op, Outcome};
use crate::nemesis::FaultEvent;

/// Overall verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    Fail,
    /// Not decided (a checker ran out of time, the cluster did not converge in time).
    Unknown,
}

/// Operation counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OpCounts {
    pub invoked: usize,
    pub ok: usize,
    pub fail: usize,
    pub unknown: usize,
    /// Per operation name: [ok, fail, unknown].
    pub by_kind: BTreeMap<String, [usize; 3]>,
}

impl OpCounts {
    /// Counts `ops`.
    pub fn of(ops: &[Op]) -> OpCounts {
        let mut c = OpCounts::default();
        for o in ops {
            c.invoked += 1;
            let slot = c.by_kind.entry(o.kind.name().to_string()).or_default();
            match o.outcome {
                Outcome::Ok => {
                    c.ok += 1;
                    slot[0] += 1;
                }
                Outcome::Fail => {
                    c.fail += 1;
                    slot[1] += 1;
                }
                Outcome::Unknown => {
                    c.unknown += 1;
                    slot[2] += 1;
                }
            }
        }
        c
    }
}

/// Availability figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Availability {
    /// Leaderless intervals seen by the monitor (seconds).
    pub leader_losses: usize,
    pub recovery_p50_s: f64,
    pub recovery_max_s: f64,
    /// Longest time without any successful client operation (seconds), and when.
    pub max_unavailable_s: f64,
    pub max_unavailable_at_s: f64,
    /// Successful operations per second outside and inside fault windows.
    pub ok_rate_calm: f64,
    pub ok_rate_faulty: f64,
}

/// Whether the nodes ended with the same state.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Convergence {
    pub converged: bool,
    /// Same applied index, different digests: a real divergence.
    pub diverged: bool,
    pub nodes: usize,
    pub applied_index: u64,
    pub digest: String,
    pub seconds: f64,
    /// Per node: (id, applied index, digest or error) at the last poll.
    pub last: Vec<(u64, u64, String)>,
}

/// Linearizability summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Linearizability {
    pub keys: usize,
    pub ok: usize,
    pub timeouts: Vec<String>,
    /// (key, operation that could not be linearized, operations just before it).
    pub violations: Vec<(String, u64, Vec<u64>)>,
    pub max_key_ops: usize,
    pub checker_s: f64,
}

impl Linearizability {
    /// Summarises per-key results.
    pub fn of(results: &[KeyResult]) -> Linearizability {
        let mut l = Linearizability {
            keys: results.len(),
            ..Default::default()
        };
        for r in results {
            l.max_key_ops = l.max_key_ops.max(r.ops);
            l.checker_s += r.elapsed.as_secs_f64();
            match &r.verdict {
                KeyVerdict::Ok => l.ok += 1,
                KeyVerdict::Timeout => l.timeouts.push(r.key.clone()),
                KeyVerdict::Violation { stuck_op, context } => {
                    l.violations
                        .push((r.key.clone(), *stuck_op, context.clone()))
                }
            }
        }
        l
    }
}

/// Everything a run reports.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub duration_s: f64,
    pub nodes: u64,
    pub clients: u32,
    pub keys: u32,
    pub rate: f64,
    pub fault_kinds: Vec<String>,
    pub ops: OpCounts,
    pub oracle: OracleReport,
    pub lost: usize,
    pub linearizability: Linearizability,
    pub revisions: Vec<RevisionViolation>,
    pub invariants: InvariantReport,
    pub faults: Vec<FaultEvent>,
    pub availability: Availability,
    pub convergence: Convergence,
    /// Problems of the harness or the cluster that prevent a verdict.
    pub errors: Vec<String>,
    pub verdict: Verdict,
}

impl Report {
    /// Computes the verdict from the parts.
    pub fn decide(&mut self) {
        let failed = self.oracle.violated()
            || !self.linearizability.violations.is_empty()
            || !self.revisions.is_empty()
            || !self.invariants.violations.is_empty()
            || !self.damage_violations().is_empty()
            || self.convergence.diverged;
        let undecided = !self.oracle.passed()
            || !self.linearizability.timeouts.is_empty()
            || !self.convergence.converged
            || !self.errors.is_empty();
        self.lost = self.oracle.lost;
        self.verdict = if failed {
            Verdict::Fail
        } else if undecided {
            Verdict::Unknown
        } else {
            Verdict::Pass
        };
    }

    /// `corrupt` faults whose damage was not all repaired from peers: one node's bad
    /// chunks must never cost data while the other nodes hold intact copies.
    pub fn damage_violations(&self) -> Vec<String> {
        self.faults
            .iter()
            .filter_map(|f| f.damage.as_ref())
            .filter(|d| d.chunks_unrepairable > 0 || d.chunks_repaired < d.chunks_found)
            .map(|d| {
                format!(
                    "node {}: {} bad chunks found, {} repaired, {} unrepairable",
                    d.node, d.chunks_found, d.chunks_repaired, d.chunks_unrepairable
                )
            })
            .collect()
    }

    /// Faults per kind, as `kind=count` (with how many hit the leader).
    pub fn fault_counts(&self) -> String {
        let mut by: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
        for f in &self.faults {
            let e = by.entry(f.kind.name()).or_default();
            e.0 += 1;
            if f.leader {
                e.1 += 1;
            }
            if f.error.is_some() {
                e.2 += 1;
            }
        }
        if by.is_empty() {
            return "none".into();
        }
        by.iter()
            .map(|(k, (n, l, err))| {
                let mut s = format!("{k}={n}");
                if *l > 0 {
                    s.push_str(&format!(" (leader {l})"));
                }
                if *err > 0 {
                    s.push_str(&format!(" (incomplete {err})"));
                }
                s
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn ok_or(b: bool) -> &'static str {
    if b { "OK" } else { "VIOLATED" }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.oracle;
        let l = &self.linearizability;
        let a = &self.availability;
        let c = &self.convergence;
        writeln!(
            f,
            "chaos seed={} duration={:.0}s nodes={} clients={} keys={} rate={}/s faults={}",
            self.seed,
            self.duration_s,
            self.nodes,
            self.clients,
            self.keys,
            self.rate,
            self.fault_kinds.join(",")
        )?;
        let kinds: Vec<String> = self
            .ops
            .by_kind
            .iter()
            .map(|(k, [ok, fail, unk])| format!("{k} {ok}/{fail}/{unk}"))
            .collect();
        writeln!(
            f,
            "ops            invoked={} ok={} fail={} unknown={}   (ok/fail/unknown: {})",
            self.ops.invoked,
            self.ops.ok,
            self.ops.fail,
            self.ops.unknown,
            kinds.join(", ")
        )?;
        writeln!(
            f,
            "acked writes   {} records; present-at-final-read={} superseded={} lost={}",
            o.acked_writes, o.present, o.superseded, o.lost
        )?;
        writeln!(
            f,
            "blobs          {} written, {} sha256-verified, {} downloads checked during the run",
            o.blobs_written, o.blobs_verified, o.blob_reads_checked
        )?;
        let lin = if !l.violations.is_empty() {
            format!("{} NOT LINEARIZABLE", l.violations.len())
        } else if !l.timeouts.is_empty() {
            format!("UNKNOWN ({} timed out)", l.timeouts.len())
        } else {
            "OK".into()
        };
        writeln!(
            f,
            "linearizable   keys {}/{} checked: {lin}  (max key history {} ops, checker {:.1}s, timeouts {})",
            l.ok,
            l.keys,
            l.max_key_ops,
            l.checker_s,
            l.timeouts.len()
        )?;
        writeln!(
            f,
            "revisions      unique-per-write and real-time ordered: {}",
            if self.revisions.is_empty() {
                "OK".to_string()
            } else {
                format!("{} VIOLATIONS", self.revisions.len())
            }
        )?;
        writeln!(
            f,
            "invariants     leaders/term<=1, term/commit/applied monotonic: {}  ({} status samples, {} terms with a leader)",
            ok_or(self.invariants.violations.is_empty()),
            self.invariants.samples,
            self.invariants.terms_with_leader
        )?;
        writeln!(f, "faults         {}", self.fault_counts())?;
        let damage: Vec<_> = self
            .faults
            .iter()
            .filter_map(|f| f.damage.as_ref())
            .collect();
        if !damage.is_empty() {
            let sum = |g: fn(&crate::nemesis::DamageOutcome) -> u64| -> u64 {
                damage.iter().map(|d| g(d)).sum()
            };
            writeln!(
                f,
                "disk damage    chunk files damaged {}, found {}, repaired from peers {}, unrepairable {}; raft logs damaged {}: {}",
                sum(|d| d.chunks_damaged),
                sum(|d| d.chunks_found),
                sum(|d| d.chunks_repaired),
                sum(|d| d.chunks_unrepairable),
                damage.iter().filter(|d| d.log_damaged).count(),
                ok_or(self.damage_violations().is_empty())
            )?;
        }
        writeln!(
            f,
            "recovery       leader losses {}: new leader p50={:.1}s max={:.1}s; longest unavailability {:.1}s (at {:.0}s); ok/s calm {:.0}, during faults {:.0}",
            a.leader_losses,
            a.recovery_p50_s,
            a.recovery_max_s,
            a.max_unavailable_s,
            a.max_unavailable_at_s,
            a.ok_rate_calm,
            a.ok_rate_faulty
        )?;
        let conv = if c.converged {
            format!(
                "{}/{} nodes identical at index {} (digest {}…) in {:.1}s",
                c.nodes,
                c.nodes,
                c.applied_index,
                c.digest.get(..12).unwrap_or(&c.digest),
                c.seconds
            )
        } else if c.diverged {
            format!("DIVERGED: {:?}", c.last)
        } else {
            format!("NOT CONVERGED after {:.0}s: {:?}", c.seconds, c.last)
        };
        writeln!(f, "convergence    {conv}")?;
        for finding in o.findings.iter().take(20) {
            writeln!(
                f,
                "  oracle {}: {}: {} (ops {:?})",
                finding.kind, finding.key, finding.message, finding.ops
            )?;
        }
        for (key, stuck, ctx) in l.violations.iter().take(10) {
            writeln!(
                f,
                "  not linearizable: key {key}: op {stuck} cannot be placed (after ops {ctx:?})"
            )?;
        }
        for v in self.revisions.iter().take(10) {
            writeln!(f, "  revisions {}: {}", v.kind, v.message)?;
        }
        for v in self.invariants.violations.iter().take(10) {
            writeln!(f, "  invariant: {v}")?;
        }
        for v in self.damage_violations() {
            writeln!(f, "  disk damage: {v}")?;
        }
        for e in &self.errors {
            writeln!(f, "  error: {e}")?;
        }
        write!(f, "verdict        {:?}", self.verdict)
    }
}
