//! Per-key linearizability of the record operations, with the WGL search of [`super::wgl`]
//! and a model of one Trove record: absent, or holding a value written at a revision.
//!
//! Values are unique (`client:seq`), so a value identifies the write that produced it,
//! and revisions are Raft log indexes, unique across the cluster, so a revision
//! identifies a value once any operation reported the pair. Compare-and-set is by
//! revision: `cas(e, v)` succeeds iff the current value is the one written at `e`
//! (0: the record is absent).
//!
//! Unknown operations never return. An unknown write whose value no read ever saw is a
//! *ghost*: all ghosts write the same symbolic value (present, revision unknown), and
//! unknown blind writes and unknown deletes get exchange classes, so the search does not
//! explore every subset of them. Unknown reads tell nothing and are left out, as are
//! refusals that carry no information.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::wgl::{self, Entry, Model, Verdict};
use crate::history::{Op, OpKind, OpResult, Outcome};

/// State: the record is absent.
const ABSENT: u32 = 0;
/// State: a value written by an unknown operation that nobody read.
const GHOST: u32 = 1;
/// Exchange class of unknown blind writes of ghosts.
const CLASS_GHOST_PUT: u32 = 1;
/// Exchange class of unknown deletes.
const CLASS_UNKNOWN_DELETE: u32 = 2;

/// A record operation as the model sees it (values as small ids).
#[derive(Clone, Debug)]
pub(crate) enum RecOp {
    /// A read that found `value` (or [`ABSENT`]).
    Read(u32),
    /// A blind write (acknowledged or unknown).
    Write(u32),
    /// A compare-and-set that succeeded (`unknown`: or may have been tried).
    Cas {
        expected: u64,
        value: u32,
        unknown: bool,
    },
    /// A compare-and-set refused because the revision was `current`.
    CasMismatch { expected: u64, current: u64 },
    /// An acknowledged delete.
    Delete,
    /// A delete with unknown outcome.
    DeleteUnknown,
    /// A delete that found no record.
    DeleteNotFound,
}

/// The model of one record.
pub(crate) struct RecordModel {
    /// Revision of each value id, when any operation reported it.
    rev_of: Vec<Option<u64>>,
    /// Value id of each reported revision.
    value_of_rev: HashMap<u64, u32>,
}

impl RecordModel {
    /// Whether a compare-and-set expecting revision `e` succeeds in `state`.
    fn cas_holds(&self, state: u32, e: u64) -> bool {
        if e == 0 {
            return state == ABSENT;
        }
        match self.value_of_rev.get(&e) {
            Some(&v) => state == v,
            // A revision nobody reported with its value: only a ghost can have it.
            None => state == GHOST,
        }
    }

    /// Whether `state` can be at revision `c` (0: absent).
    fn at_revision(&self, state: u32, c: u64) -> bool {
        match state {
            ABSENT => c == 0,
            GHOST => c != 0 && !self.value_of_rev.contains_key(&c),
            v => self.rev_of.get(v as usize).copied().flatten() == Some(c),
        }
    }
}

impl Model for RecordModel {
    type State = u32;
    type Op = RecOp;

    fn init(&self) -> u32 {
        ABSENT
    }

    fn step(&self, s: &u32, op: &RecOp) -> Option<u32> {
        let s = *s;
        match op {
            RecOp::Read(v) => (s == *v).then_some(s),
            RecOp::Write(v) => Some(*v),
            RecOp::Cas {
                expected,
                value,
                unknown,
            } => {
                if self.cas_holds(s, *expected) {
                    Some(*value)
                } else if *unknown {
                    Some(s) // tried and refused: no effect
                } else {
                    None
                }
            }
            RecOp::CasMismatch { expected, current } => {
                (!self.cas_holds(s, *expected) && self.at_revision(s, *current)).then_some(s)
            }
            RecOp::Delete => (s != ABSENT).then_some(ABSENT),
            RecOp::DeleteUnknown => Some(ABSENT),
            RecOp::DeleteNotFound => (s == ABSENT).then_some(ABSENT),
        }
    }
}

/// Verdict for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    Ok,
    /// Not linearizable; ids of the operation that could not be placed and of the
    /// operations of the key that completed just before it.
    Violation {
        stuck_op: u64,
        context: Vec<u64>,
    },
    /// The time limit passed: unknown (never a pass).
    Timeout,
}

/// The check of one key.
#[derive(Clone, Debug)]
pub struct KeyResult {
    pub key: String,
    /// Operations that entered the check.
    pub ops: usize,
    pub verdict: KeyVerdict,
    pub elapsed: Duration,
}

/// The model and WGL entries for one key's record operations (blob ops are ignored).
pub(crate) fn build(ops: &[&Op]) -> (RecordModel, Vec<Entry<RecOp>>, Vec<u64>) {
    // Values some read returned: writes of any other value by unknown ops are ghosts.
    let read_values: HashSet<&str> = ops
        .iter()
        .filter_map(|o| match (&o.kind, &o.result) {
            (OpKind::Get, OpResult::Found { value, .. }) => Some(value.as_str()),
            _ => None,
        })
        .collect();
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut rev_of: Vec<Option<u64>> = vec![None, None];
    let mut value_of_rev: HashMap<u64, u32> = HashMap::new();
    let mut id_of = |v: &str, rev: Option<u64>| -> u32 {
        let id = *ids.entry(v.to_string()).or_insert_with(|| {
            rev_of.push(None);
            (rev_of.len() - 1) as u32
        });
        if let Some(r) = rev {
            rev_of[id as usize].get_or_insert(r);
            value_of_rev.entry(r).or_insert(id);
        }
        id
    };
    let mut entries = Vec::new();
    let mut op_ids = Vec::new();
    for o in ops {
        let unknown = o.outcome == Outcome::Unknown;
        let ret = (!unknown).then_some(o.complete_ns);
        let mut push = |op: RecOp, class: Option<u32>| {
            entries.push(Entry {
                call: o.invoke_ns,
                ret,
                class,
                op,
            });
            op_ids.push(o.id);
        };
        match (&o.kind, &o.result) {
            (OpKind::Get, OpResult::Found { value, revision }) => {
                push(RecOp::Read(id_of(value, Some(*revision))), None)
            }
            (OpKind::Get, OpResult::NotFound) => push(RecOp::Read(ABSENT), None),
            (OpKind::Put { value }, OpResult::Written { revision }) => {
                push(RecOp::Write(id_of(value, Some(*revision))), None)
            }
            (OpKind::Put { value }, OpResult::Unknown { .. }) => {
                if read_values.contains(value.as_str()) {
                    push(RecOp::Write(id_of(value, None)), None)
                } else {
                    push(RecOp::Write(GHOST), Some(CLASS_GHOST_PUT))
                }
            }
            (OpKind::Cas { expected, value }, OpResult::Written { revision }) => push(
                RecOp::Cas {
                    expected: *expected,
                    value: id_of(value, Some(*revision)),
                    unknown: false,
                },
                None,
            ),
            (OpKind::Cas { expected, value }, OpResult::Unknown { .. }) => {
                let value = if read_values.contains(value.as_str()) {
                    id_of(value, None)
                } else {
                    GHOST
                };
                push(
                    RecOp::Cas {
                        expected: *expected,
                        value,
                        unknown: true,
                    },
                    None,
                )
            }
            (OpKind::Cas { expected, .. }, OpResult::Mismatch { current }) => push(
                RecOp::CasMismatch {
                    expected: *expected,
                    current: *current,
                },
                None,
            ),
            (OpKind::Delete, OpResult::Written { .. }) => push(RecOp::Delete, None),
            (OpKind::Delete, OpResult::NotFound) => push(RecOp::DeleteNotFound, None),
            (OpKind::Delete, OpResult::Unknown { .. }) => {
                push(RecOp::DeleteUnknown, Some(CLASS_UNKNOWN_DELETE))
            }
            // Unknown reads, refusals and blob operations carry no information here.
            _ => {}
        }
    }
    (
        RecordModel {
            rev_of,
            value_of_rev,
        },
        entries,
        op_ids,
    )
}

/// Checks one key's operations under `limit`.
pub fn check_key(key: &str, ops: &[&Op], limit: Duration) -> KeyResult {
    let started = Instant::now();
    let (model, entries, op_ids) = build(ops);
    let verdict = match wgl::check(&model, &entries, started + limit) {
        Verdict::Linearizable => KeyVerdict::Ok,
        Verdict::Timeout { .. } => KeyVerdict::Timeout,
        Verdict::NotLinearizable(w) => {
            let stuck = &entries[w.stuck_op];
            let stuck_ret = stuck.ret.unwrap_or(u64::MAX);
            // The operations that completed last before the stuck one returned.
            let mut before: Vec<(u64, u64)> = entries
                .iter()
                .zip(&op_ids)
                .filter_map(|(e, id)| e.ret.filter(|&r| r <= stuck_ret).map(|r| (r, *id)))
                .filter(|(_, id)| *id != op_ids[w.stuck_op])
                .collect();
            before.sort_unstable();
            let context = before
                .iter()
                .rev()
                .take(8)
                .rev()
                .map(|(_, id)| *id)
                .collect();
            KeyVerdict::Violation {
                stuck_op: op_ids[w.stuck_op],
                context,
            }
        }
    };
    KeyResult {
        key: key.to_string(),
        ops: entries.len(),
        verdict,
        elapsed: started.elapsed(),
    }
}

/// Checks every record key of `history` on up to `threads` threads, each key under
/// `per_key_limit`. Results in key order.
pub fn check_all(history: &[Op], per_key_limit: Duration, threads: usize) -> Vec<KeyResult> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for o in history.iter().filter(|o| !o.is_blob()) {
        by_key.entry(o.key.as_str()).or_default().push(o);
    }
    let keys: Vec<(&str, Vec<&Op>)> = by_key.into_iter().collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((key, ops)) = keys.get(i) else { break };
                    let r = check_key(key, ops, per_key_limit);
                    results.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                }
            });
        }
    });
    let mut out = results.into_inner().unwrap_or_else(|p| p.into_inner());
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testutil::H;

    fn verdict(h: &H) -> KeyVerdict {
        let ops: Vec<&Op> = h.ops.iter().collect();
        check_key("k", &ops, Duration::from_secs(10)).verdict
    }

    fn ok(h: &H) {
        assert_eq!(verdict(h), KeyVerdict::Ok, "{:#?}", h.ops);
    }

    fn bad(h: &H) {
        assert!(
            matches!(verdict(h), KeyVerdict::Violation { .. }),
            "accepted: {:#?}",
            h.ops
        );
    }

    #[test]
    fn valid_histories_pass() {
        let mut h = H::default();
        h.put("k", "a", 0, 10, Some(5));
        h.get("k", 20, 30, Some(("a", 5)));
        h.cas("k", 5, "b", 40, 50, Ok(9));
        h.cas("k", 5, "c", 60, 70, Err(9)); // mismatch: current 9
        h.delete("k", 80, 90, Some(12));
        h.get("k", 100, 110, None);
        h.delete_not_found("k", 120, 130);
        h.cas("k", 0, "d", 140, 150, Ok(20)); // create if absent
        ok(&h);
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_apply() {
        let mut h = H::default();
        h.put("k", "a", 0, 10, Some(5));
        h.put("k", "x", 20, 0, None); // unknown, later seen
        h.put("k", "y", 21, 0, None); // unknown, never seen (ghost)
        h.get("k", 30, 40, Some(("a", 5)));
        h.get("k", 50, 60, Some(("x", 7)));
        h.cas("k", 7, "b", 70, 80, Ok(11)); // x was at 7
        h.delete_unknown("k", 90);
        h.get("k", 100, 110, Some(("b", 11)));
        h.get("k", 120, 130, None); // the unknown delete applied late
        ok(&h);
        // A mismatch whose current revision belongs to an unread (ghost) write.
        let mut g = H::default();
        g.put("k", "a", 0, 10, Some(5));
        g.put("k", "z", 20, 0, None);
        g.cas("k", 5, "q", 30, 40, Err(8));
        ok(&g);
    }

    #[test]
    fn stale_read_is_rejected() {
        let mut h = H::default();
        h.put("k", "a", 0, 10, Some(5));
        h.put("k", "b", 20, 30, Some(6));
        h.get("k", 40, 50, Some(("a", 5)));
        bad(&h);
    }

    #[test]
    fn lost_write_is_rejected() {
        // An acknowledged write that a later read does not see (nothing overwrote it).
        let mut h = H::default();
        h.put("k", "a", 0, 10, Some(5));
        h.get("k", 20, 30, None);
        bad(&h);
    }

    #[test]
    fn duplicated_write_is_rejected() {
        // "a" written once, overwritten by "b", then read again: applied twice.
        let mut h = H::default();
        h.put("k", "a", 0, 10, Some(5));
        h.put("k", "b", 20, 30, Some(6));
        h.get("k", 40, 50, Some(("b", 6)));
        h.get("k", 60, 70, Some(("a", 5)));
        bad(&h);
    }

    #[test]
    fn wrong_cas_results_are_rejected() {
        // CAS succeeded although the record was at another revision.
        let mut h = H::default();
        h.put("k", "a", 0, 10, Some(5));
        h.put("k", "b", 20, 30, Some(6));
        h.cas("k", 5, "c", 40, 50, Ok(9));
        bad(&h);
        // CAS refused with a current revision that is not the record's.
        let mut h = H::default();
        h.put("k", "a", 0, 10, Some(5));
        h.cas("k", 3, "c", 40, 50, Err(4));
        bad(&h);
        // Delete reported "not found" while the record existed.
        let mut h = H::default();
        h.put("k", "a", 0, 10, Some(5));
        h.delete_not_found("k", 20, 30);
        bad(&h);
    }

    #[test]
    fn a_value_read_before_its_write_was_called_is_rejected() {
        let mut h = H::default();
        h.get("k", 0, 10, Some(("a", 5)));
        h.put("k", "a", 20, 0, None);
        bad(&h);
    }

    #[test]
    fn many_unknown_operations_stay_fast() {
        let mut h = H::default();
        let mut t = 0;
        for i in 0..300u64 {
            t += 10;
            match i % 5 {
                0 => h.put("k", &format!("u{i}"), t, 0, None),
                1 => h.delete_unknown("k", t),
                _ => h.put("k", &format!("v{i}"), t, t + 5, Some(1000 + i)),
            }
        }
        h.get("k", t + 100, t + 110, Some(("zzz", 1))); // never written: violation
        let started = Instant::now();
        bad(&h);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
