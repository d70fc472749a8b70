//! Linear-time checks on the revisions the server reported. A revision is the Raft log
//! index of a write, so in a correct cluster:
//! - each value (unique per write) is reported at one revision only: a second revision
//!   means the write was applied twice (or the log lost it and it came back);
//! - each revision belongs to one write: two writes at one revision mean a committed
//!   entry was replaced;
//! - revisions follow real time: a write invoked after any operation completed gets a
//!   larger revision than that operation reported (whatever the keys: the log is one
//!   sequence), and a read of a key never reports a revision below one already
//!   reported for that key by an operation that completed before the read began.

use std::collections::HashMap;

use crate::history::{Op, OpKind, OpResult};

/// What a revision check found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RevisionViolation {
    /// `value-at-two-revisions`, `revision-reused` or `revision-order`.
    pub kind: &'static str,
    pub message: String,
    /// The operations involved.
    pub ops: Vec<u64>,
}

/// The identity of what a revision was reported for.
fn identity(o: &Op) -> Option<(String, u64)> {
    let rev = o.revision()?;
    let what = match (&o.kind, &o.result) {
        (OpKind::Put { value } | OpKind::Cas { value, .. }, _) => format!("{}={value}", o.key),
        (OpKind::BlobPut { sha256, .. }, _) => format!("{}={sha256}", o.key),
        (OpKind::Get | OpKind::BlobGet, OpResult::Found { value, .. }) => {
            format!("{}={value}", o.key)
        }
        (OpKind::Delete, _) => format!("{} deleted by op {}", o.key, o.id),
        _ => return None,
    };
    Some((what, rev))
}

/// Runs every revision check over `history`.
pub fn check(history: &[Op]) -> Vec<RevisionViolation> {
    let mut out = Vec::new();
    // Value -> first (revision, op); revision -> first (identity, op).
    let mut rev_of: HashMap<String, (u64, u64)> = HashMap::new();
    let mut owner: HashMap<u64, (String, u64)> = HashMap::new();
    for o in history {
        let Some((what, rev)) = identity(o) else {
            continue;
        };
        match rev_of.get(&what) {
            Some(&(r, first)) if r != rev => out.push(RevisionViolation {
                kind: "value-at-two-revisions",
                message: format!(
                    "{what} was reported at revision {r} (op {first}) and at {rev} (op {})",
                    o.id
                ),
                ops: vec![first, o.id],
            }),
            Some(_) => {}
            None => {
                rev_of.insert(what.clone(), (rev, o.id));
            }
        }
        match owner.get(&rev) {
            Some((other, first)) if *other != what => out.push(RevisionViolation {
                kind: "revision-reused",
                message: format!(
                    "revision {rev} was reported for {other} (op {first}) and for {what} (op {})",
                    o.id
                ),
                ops: vec![*first, o.id],
            }),
            Some(_) => {}
            None => {
                owner.insert(rev, (what, o.id));
            }
        }
    }
    out.extend(real_time_order(history));
    out
}

/// The real-time rule: sweep operations in invoke order, knowing the highest revision
/// reported by operations completed before each invoke (overall, and per key).
fn real_time_order(history: &[Op]) -> Vec<RevisionViolation> {
    let mut out = Vec::new();
    let mut completed: Vec<&Op> = history.iter().filter(|o| o.revision().is_some()).collect();
    completed.sort_by_key(|o| o.complete_ns);
    let mut invoked: Vec<&Op> = completed.clone();
    invoked.sort_by_key(|o| o.invoke_ns);
    let mut done = 0;
    // Highest revision (and its op) completed so far: overall, and per key.
    let mut max_all: Option<(u64, u64)> = None;
    let mut max_key: HashMap<&str, (u64, u64)> = HashMap::new();
    for b in invoked {
        while done < completed.len() && completed[done].complete_ns < b.invoke_ns {
            let a = completed[done];
            let r = (a.revision().unwrap_or(0), a.id);
            if max_all.is_none_or(|m| r.0 > m.0) {
                max_all = Some(r);
            }
            let e = max_key.entry(a.key.as_str()).or_insert(r);
            if r.0 > e.0 {
                *e = r;
            }
            done += 1;
        }
        let rev = b.revision().unwrap_or(0);
        let is_write = matches!(b.result, OpResult::Written { .. });
        if is_write {
            if let Some((m, id)) = max_all
                && rev <= m
            {
                out.push(RevisionViolation {
                    kind: "revision-order",
                    message: format!(
                        "op {} ({} {}) got revision {rev}, but op {id} had completed with revision {m} before it was invoked",
                        b.id,
                        b.kind.name(),
                        b.key
                    ),
                    ops: vec![id, b.id],
                });
            }
        } else if let Some(&(m, id)) = max_key.get(b.key.as_str())
            && rev < m
        {
            out.push(RevisionViolation {
                kind: "revision-order",
                message: format!(
                    "op {} read {} at revision {rev}, but op {id} had completed with revision {m} for that key before the read began (stale read)",
                    b.id, b.key
                ),
                ops: vec![id, b.id],
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testutil::H;

    fn kinds(h: &H) -> Vec<&'static str> {
        check(&h.ops).into_iter().map(|v| v.kind).collect()
    }

    #[test]
    fn a_correct_history_passes() {
        let mut h = H::default();
        h.put("a", "1", 0, 10, Some(5));
        h.put("b", "2", 5, 15, Some(6)); // concurrent with the first
        h.get("a", 20, 30, Some(("1", 5)));
        h.put("a", "3", 40, 50, None); // unknown: no revision
        h.get("b", 60, 70, Some(("2", 6))); // an older key's revision is fine
        h.delete("b", 80, 90, Some(9));
        h.get("b", 100, 110, None);
        h.blob_put("o", "ff", 120, 130, Some(12));
        h.blob_get("o", 140, 150, Some(("ff", 12)));
        assert_eq!(kinds(&h), Vec::<&str>::new());
    }

    #[test]
    fn a_duplicated_write_is_rejected() {
        let mut h = H::default();
        h.put("a", "1", 0, 10, Some(5));
        h.get("a", 20, 30, Some(("1", 8)));
        assert!(kinds(&h).contains(&"value-at-two-revisions"));
    }

    #[test]
    fn a_lost_and_reused_index_is_rejected() {
        // After a lost log tail, a new write gets the index of an acknowledged one.
        let mut h = H::default();
        h.put("a", "1", 0, 10, Some(5));
        h.put("b", "2", 20, 30, Some(5));
        let k = kinds(&h);
        assert!(k.contains(&"revision-reused"), "{k:?}");
        assert!(k.contains(&"revision-order"), "{k:?}");
    }

    #[test]
    fn a_stale_read_is_rejected() {
        let mut h = H::default();
        h.put("a", "1", 0, 10, Some(5));
        h.put("a", "2", 20, 30, Some(7));
        h.get("a", 40, 50, Some(("1", 5)));
        assert_eq!(kinds(&h), vec!["revision-order"]);
    }
}
