//! Polls every member's own status (term, leader, commit and applied index) every
//! [`POLL_INTERVAL`] during the run, for the Raft invariants and the leader availability
//! figures ([`crate::check::invariants`]). Polls run concurrently with a short deadline,
//! so a paused or partitioned node only delays its own answer.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::check::invariants::{Sample, agreed_leader};
use crate::cluster::PollTargets;
use crate::history::Recorder;

/// Time between poll rounds.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// One poll round: when, and the leader a majority agreed on (if any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    pub t_ns: u64,
    pub leader: Option<u64>,
}

/// What the monitor saw.
#[derive(Clone, Debug, Default)]
pub struct MonitorData {
    pub samples: Vec<Sample>,
    pub rounds: Vec<Round>,
}

impl MonitorData {
    /// Durations of the intervals without an agreed leader (first round without one,
    /// to the first round with one), in seconds. An interval still open at the end is
    /// closed at the last round.
    pub fn leaderless_intervals(&self) -> Vec<f64> {
        let mut out = Vec::new();
        let mut since: Option<u64> = None;
        for r in &self.rounds {
            match (r.leader, since) {
                (None, None) => since = Some(r.t_ns),
                (Some(_), Some(s)) => {
                    out.push((r.t_ns - s) as f64 / 1e9);
                    since = None;
                }
                _ => {}
            }
        }
        if let (Some(s), Some(last)) = (since, self.rounds.last()) {
            out.push((last.t_ns - s) as f64 / 1e9);
        }
        out
    }
}

/// A running monitor.
pub struct Monitor {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<MonitorData>,
}

impl Monitor {
    /// Starts polling the nodes of `targets` on the clock of `recorder`.
    pub fn spawn(targets: PollTargets, recorder: Arc<Recorder>) -> Monitor {
        let stop = CancellationToken::new();
        let task = tokio::spawn(poll_loop(targets, recorder, stop.clone()));
        Monitor { stop, task }
    }

    /// Stops polling and returns what was seen.
    pub async fn finish(self) -> MonitorData {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

async fn poll_loop(
    targets: PollTargets,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
) -> MonitorData {
    let mut data = MonitorData::default();
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return data,
        }
        let list: Vec<(u64, crate::cluster::PollTarget)> = targets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, t)| !t.removed && t.starts > 0)
            .map(|(id, t)| (*id, t.clone()))
            .collect();
        let members = list.len();
        let polls = list.iter().map(|(id, t)| {
            let rec = recorder.clone();
            async move {
                let st = t.client.status_of(&t.client_addr).await.ok()?;
                Some(Sample {
                    t_ns: rec.now_ns(),
                    node: *id,
                    incarnation: t.starts,
                    term: st.term,
                    leader: st.leader,
                    commit: st.commit_index,
                    applied: st.applied_index,
                    recovering: st.recovering,
                })
            }
        });
        let round: Vec<Sample> = futures::future::join_all(polls)
            .await
            .into_iter()
            .flatten()
            .collect();
        data.rounds.push(Round {
            t_ns: recorder.now_ns(),
            leader: agreed_leader(&round, members),
        });
        data.samples.extend(round);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaderless_intervals_are_measured_between_rounds() {
        let r = |t: u64, l: Option<u64>| Round {
            t_ns: t * 1_000_000_000,
            leader: l,
        };
        let data = MonitorData {
            samples: vec![],
            rounds: vec![
                r(0, None),
                r(1, Some(1)),
                r(2, Some(1)),
                r(3, None),
                r(4, None),
                r(6, Some(2)),
                r(7, None),
                r(8, None),
            ],
        };
        assert_eq!(data.leaderless_intervals(), vec![1.0, 3.0, 1.0]);
    }
}
