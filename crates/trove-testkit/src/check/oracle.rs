//! The acknowledged-write oracle: a linear-time check that nothing acknowledged was
//! lost, from the final (post-heal, linearizable) read of every record and object.
//!
//! Records: an acknowledged put or compare-and-set must be the final value (at the
//! revision it was acknowledged at), or be superseded: the final value has a larger
//! revision, another acknowledged write of the key has a larger revision, or the record
//! is gone and a delete could have come after it (an acknowledged delete with a larger
//! revision, or any delete of unknown outcome). An acknowledged delete must be the final
//! state or be followed by a write with a larger revision. A final value must have been
//! written by some put or compare-and-set of that key that may have taken effect.
//!
//! Objects (blobs): every key is written once. An acknowledged upload must read back
//! with its SHA-256; an upload of unknown outcome may be missing but never different.
//! During the run, a download must return exactly the uploaded bytes, and must find an
//! object whose upload was acknowledged before the download began.

use std::collections::{BTreeMap, HashMap};

use crate::history::{Op, OpKind, OpResult, Outcome};

/// The final read of a record or object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinalRead {
    /// Value (objects: SHA-256 hex of the bytes read) and revision.
    Found {
        value: String,
        revision: u64,
    },
    NotFound,
    /// Could not be read before the deadline: the oracle cannot vouch for this key.
    Unreadable {
        error: String,
    },
}

/// One problem the oracle found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// `lost`, `phantom`, `duplicate`, `unreadable`, `blob-lost`, `blob-corrupt`,
    /// `blob-wrong-bytes`, `blob-stale-read`.
    pub kind: &'static str,
    pub key: String,
    pub message: String,
    pub ops: Vec<u64>,
}

/// The oracle's figures and findings.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct OracleReport {
    /// Acknowledged record writes (puts, compare-and-sets, deletes).
    pub acked_writes: usize,
    /// ... that are the final state of their key.
    pub present: usize,
    /// ... that a later write replaced.
    pub superseded: usize,
    /// ... that are neither: lost.
    pub lost: usize,
    /// Acknowledged object uploads.
    pub blobs_written: usize,
    /// ... read back with the right SHA-256.
    pub blobs_verified: usize,
    /// Downloads during the run whose bytes were checked.
    pub blob_reads_checked: usize,
    pub findings: Vec<Finding>,
}

impl OracleReport {
    /// Whether the oracle passes: nothing lost, corrupt, phantom or unverifiable.
    pub fn passed(&self) -> bool {
        self.findings.is_empty()
    }

    /// Whether it found a violation (as opposed to writes it could not verify because
    /// the final read failed: no verdict, but no pass either).
    pub fn violated(&self) -> bool {
        self.findings.iter().any(|f| f.kind != "unreadable")
    }
}

/// Runs the oracle over `history` and the final reads of records and objects.
pub fn check(
    history: &[Op],
    final_records: &BTreeMap<String, FinalRead>,
    final_blobs: &BTreeMap<String, FinalRead>,
) -> OracleReport {
    let mut r = OracleReport::default();
    check_records(history, final_records, &mut r);
    check_blobs(history, final_blobs, &mut r);
    r
}

fn check_records(history: &[Op], finals: &BTreeMap<String, FinalRead>, r: &mut OracleReport) {
    let mut by_key: HashMap<&str, Vec<&Op>> = HashMap::new();
    for o in history.iter().filter(|o| !o.is_blob()) {
        by_key.entry(o.key.as_str()).or_default().push(o);
    }
    for (key, fin) in finals {
        let ops = by_key.get(key.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let acked: Vec<&Op> = ops
            .iter()
            .copied()
            .filter(|o| o.kind.is_write() && matches!(o.result, OpResult::Written { .. }))
            .collect();
        let max_acked_rev = |after: u64| acked.iter().any(|o| o.revision().unwrap_or(0) > after);
        let unknown_delete = ops
            .iter()
            .any(|o| o.kind == OpKind::Delete && o.outcome == Outcome::Unknown);
        let acked_delete_after = |rev: u64| {
            acked
                .iter()
                .any(|o| o.kind == OpKind::Delete && o.revision().unwrap_or(0) > rev)
        };
        if let FinalRead::Unreadable { error } = fin {
            if !acked.is_empty() {
                r.findings.push(Finding {
                    kind: "unreadable",
                    key: key.clone(),
                    message: format!(
                        "the final read failed ({error}); {} acknowledged writes unverified",
                        acked.len()
                    ),
                    ops: vec![],
                });
            }
            continue;
        }
        for w in &acked {
            r.acked_writes += 1;
            let rev = w.revision().unwrap_or(0);
            let verdict = match (&w.kind, fin) {
                (OpKind::Delete, FinalRead::NotFound) => Ok(true),
                (OpKind::Delete, FinalRead::Found { revision, .. }) => {
                    if *revision > rev {
                        Ok(false)
                    } else {
                        Err(())
                    }
                }
                (_, FinalRead::Found { value, revision }) => {
                    if Some(value.as_str()) == w.kind.written_value() {
                        if *revision != rev {
                            r.findings.push(Finding {
                                kind: "duplicate",
                                key: key.clone(),
                                message: format!(
                                    "the final value {value} is at revision {revision}, but its write was acknowledged at {rev}"
                                ),
                                ops: vec![w.id],
                            });
                        }
                        Ok(true)
                    } else if *revision > rev || max_acked_rev(rev) {
                        Ok(false)
                    } else {
                        Err(())
                    }
                }
                (_, FinalRead::NotFound) => {
                    if acked_delete_after(rev) || unknown_delete || max_acked_rev(rev) {
                        Ok(false)
                    } else {
                        Err(())
                    }
                }
                (_, FinalRead::Unreadable { .. }) => Ok(false),
            };
            match verdict {
                Ok(true) => r.present += 1,
                Ok(false) => r.superseded += 1,
                Err(()) => {
                    r.lost += 1;
                    r.findings.push(Finding {
                        kind: "lost",
                        key: key.clone(),
                        message: format!(
                            "acknowledged {} at revision {rev} is missing: the final read found {}",
                            describe(w),
                            describe_final(fin)
                        ),
                        ops: vec![w.id],
                    });
                }
            }
        }
        if let FinalRead::Found { value, revision } = fin {
            let writer = ops.iter().find(|o| {
                o.kind.written_value() == Some(value.as_str())
                    && matches!(
                        o.result,
                        OpResult::Written { .. } | OpResult::Unknown { .. }
                    )
            });
            if writer.is_none() {
                r.findings.push(Finding {
                    kind: "phantom",
                    key: key.clone(),
                    message: format!(
                        "the final value {value} (revision {revision}) was never written to this key by an operation that may have taken effect"
                    ),
                    ops: vec![],
                });
            }
        }
    }
}

fn describe(o: &Op) -> String {
    match &o.kind {
        OpKind::Put { value } => format!("put {}={value} (op {})", o.key, o.id),
        OpKind::Cas { expected, value } => {
            format!("cas {}={value} if revision {expected} (op {})", o.key, o.id)
        }
        OpKind::Delete => format!("delete {} (op {})", o.key, o.id),
        other => format!("{} {} (op {})", other.name(), o.key, o.id),
    }
}

fn describe_final(f: &FinalRead) -> String {
    match f {
        FinalRead::Found { value, revision } => format!("{value} at revision {revision}"),
        FinalRead::NotFound => "no record".into(),
        FinalRead::Unreadable { error } => format!("an error ({error})"),
    }
}

fn check_blobs(history: &[Op], finals: &BTreeMap<String, FinalRead>, r: &mut OracleReport) {
    // The upload of each object key (keys are written once).
    let puts: HashMap<&str, &Op> = history
        .iter()
        .filter(|o| matches!(o.kind, OpKind::BlobPut { .. }))
        .map(|o| (o.key.as_str(), o))
        .collect();
    let sha_of = |o: &Op| match &o.kind {
        OpKind::BlobPut { sha256, .. } => sha256.clone(),
        _ => String::new(),
    };
    for g in history.iter().filter(|o| o.kind == OpKind::BlobGet) {
        let Some(put) = puts.get(g.key.as_str()) else {
            continue;
        };
        match &g.result {
            OpResult::Found { value, .. } => {
                r.blob_reads_checked += 1;
                if *value != sha_of(put) {
                    r.findings.push(Finding {
                        kind: "blob-wrong-bytes",
                        key: g.key.clone(),
                        message: format!(
                            "a download returned bytes with SHA-256 {value}, but {} was uploaded",
                            sha_of(put)
                        ),
                        ops: vec![put.id, g.id],
                    });
                }
            }
            OpResult::NotFound if put.outcome == Outcome::Ok && put.complete_ns < g.invoke_ns => {
                r.findings.push(Finding {
                    kind: "blob-stale-read",
                    key: g.key.clone(),
                    message: "a download found nothing after the upload was acknowledged".into(),
                    ops: vec![put.id, g.id],
                });
            }
            _ => {}
        }
    }
    for (key, put) in &puts {
        if put.outcome == Outcome::Fail {
            continue;
        }
        let acked = put.outcome == Outcome::Ok;
        if acked {
            r.blobs_written += 1;
        }
        let want = sha_of(put);
        match finals.get(*key) {
            Some(FinalRead::Found { value, .. }) if *value == want => {
                r.blobs_verified += usize::from(acked);
            }
            Some(FinalRead::Found { value, .. }) => r.findings.push(Finding {
                kind: "blob-corrupt",
                key: key.to_string(),
                message: format!("reads back with SHA-256 {value}, but {want} was uploaded"),
                ops: vec![put.id],
            }),
            Some(FinalRead::NotFound) if acked => r.findings.push(Finding {
                kind: "blob-lost",
                key: key.to_string(),
                message: format!("acknowledged upload (op {}) is missing", put.id),
                ops: vec![put.id],
            }),
            Some(FinalRead::Unreadable { error }) if acked => r.findings.push(Finding {
                kind: "unreadable",
                key: key.to_string(),
                message: format!("the final download failed: {error}"),
                ops: vec![put.id],
            }),
            None if acked => r.findings.push(Finding {
                kind: "unreadable",
                key: key.to_string(),
                message: "never read back".into(),
                ops: vec![put.id],
            }),
            _ => {}
        }
    }
    r.findings
        .sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testutil::H;

    fn finals(list: &[(&str, Option<(&str, u64)>)]) -> BTreeMap<String, FinalRead> {
        list.iter()
            .map(|(k, f)| {
                let f = match f {
                    Some((v, r)) => FinalRead::Found {
                        value: v.to_string(),
                        revision: *r,
                    },
                    None => FinalRead::NotFound,
                };
                (k.to_string(), f)
            })
            .collect()
    }

    fn run(
        h: &H,
        recs: &[(&str, Option<(&str, u64)>)],
        blobs: &[(&str, Option<(&str, u64)>)],
    ) -> OracleReport {
        check(&h.ops, &finals(recs), &finals(blobs))
    }

    fn kinds(r: &OracleReport) -> Vec<&'static str> {
        r.findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn a_clean_history_passes() {
        let mut h = H::default();
        h.put("a", "1", 0, 10, Some(5));
        h.put("a", "2", 20, 30, Some(6));
        h.put("b", "3", 0, 10, Some(7));
        h.delete("b", 20, 30, Some(8));
        h.put("c", "4", 0, 10, Some(9));
        h.delete_unknown("c", 20);
        h.put("d", "5", 0, 10, None); // unknown and final
        h.blob_put("o1", "aa", 0, 10, Some(10));
        h.blob_put("o2", "bb", 0, 10, None); // unknown, never applied
        h.blob_get("o1", 20, 30, Some(("aa", 10)));
        let r = run(
            &h,
            &[
                ("a", Some(("2", 6))),
                ("b", None),
                ("c", None),
                ("d", Some(("5", 11))),
            ],
            &[("o1", Some(("aa", 10))), ("o2", None)],
        );
        assert!(r.passed(), "{:?}", r.findings);
        assert_eq!(
            (r.acked_writes, r.present, r.superseded, r.lost),
            (5, 2, 3, 0)
        );
        assert_eq!(
            (r.blobs_written, r.blobs_verified, r.blob_reads_checked),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_lost_write_is_rejected() {
        let mut h = H::default();
        h.put("a", "1", 0, 10, Some(5));
        h.put("a", "2", 20, 30, Some(6));
        // The final read shows the older value: the acknowledged "2" is lost.
        let r = run(&h, &[("a", Some(("1", 5)))], &[]);
        assert_eq!(r.lost, 1);
        assert_eq!(kinds(&r), vec!["lost"]);
        // Or nothing at all, with no delete ("1" counts as superseded by "2").
        let r = run(&h, &[("a", None)], &[]);
        assert_eq!((r.lost, r.superseded), (1, 1));
    }

    #[test]
    fn a_stale_final_read_and_a_resurrected_record_are_rejected() {
        let mut h = H::default();
        h.put("a", "1", 0, 10, Some(5));
        h.delete("a", 20, 30, Some(6));
        let r = run(&h, &[("a", Some(("1", 5)))], &[]);
        assert_eq!(kinds(&r), vec!["lost"]);
    }

    #[test]
    fn a_duplicated_write_is_rejected() {
        let mut h = H::default();
        h.put("a", "1", 0, 10, Some(5));
        h.put("a", "2", 20, 30, Some(6));
        // "1" applied a second time (at revision 9) after "2".
        let r = run(&h, &[("a", Some(("1", 9)))], &[]);
        assert!(kinds(&r).contains(&"duplicate"), "{:?}", r.findings);
    }

    #[test]
    fn phantoms_and_unreadable_keys_are_rejected() {
        let mut h = H::default();
        h.put("a", "1", 0, 10, Some(5));
        let r = run(&h, &[("a", Some(("zz", 9)))], &[]);
        assert!(kinds(&r).contains(&"phantom"));
        let mut f = finals(&[]);
        f.insert(
            "a".into(),
            FinalRead::Unreadable {
                error: "timeout".into(),
            },
        );
        let r = check(&h.ops, &f, &BTreeMap::new());
        assert_eq!(kinds(&r), vec!["unreadable"]);
    }

    #[test]
    fn blob_losses_and_wrong_bytes_are_rejected() {
        let mut h = H::default();
        h.blob_put("o1", "aa", 0, 10, Some(5));
        h.blob_put("o2", "bb", 0, 10, Some(6));
        h.blob_put("o3", "cc", 0, 10, None);
        h.blob_get("o1", 20, 30, Some(("ab", 5))); // wrong bytes during the run
        h.blob_get("o2", 20, 30, None); // acknowledged, then not found
        let r = run(
            &h,
            &[],
            &[
                ("o1", Some(("aa", 5))),
                ("o2", None),
                ("o3", Some(("cd", 7))),
            ],
        );
        let k = kinds(&r);
        for want in [
            "blob-wrong-bytes",
            "blob-stale-read",
            "blob-lost",
            "blob-corrupt",
        ] {
            assert!(k.contains(&want), "{want} missing from {k:?}");
        }
    }
}
