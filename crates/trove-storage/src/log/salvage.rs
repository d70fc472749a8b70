//! Salvaging a log that [`SegmentLog::open`](super::SegmentLog::open) refused as corrupt
//! (damage that is not a torn tail: a bad record in the middle, a bad segment header, an
//! index gap).
//!
//! Such damage may hit entries this node acknowledged, even committed ones, so they are
//! never dropped as if they had been a torn write: the caller must keep the node from
//! voting until a leader has sent it those entries again (`trove-server`'s `recovery`).
//! What salvage does is only the mechanical part: keep the longest verified prefix of the
//! log, move everything from the first damage on into `aside` (kept for inspection, never
//! read again), so that the log opens and the node can be re-seeded by its peers.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use super::scan::only_zeros_from;
use super::{Found, SEGMENT_HEADER_BYTES, check_header, list_segments, scan_until_bad};
use crate::error::{Result, StorageError};
use crate::fsutil::{create_dir_durable, sync_dir};

/// What [`salvage`] kept and set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvage {
    /// The first index that was damaged (and everything from it on was set aside).
    pub first_damaged: u64,
    /// The last index kept, if any record was kept.
    pub kept_through: Option<u64>,
    /// Where the damaged segment files were moved (whole, as found).
    pub set_aside: PathBuf,
    /// What was wrong, for the log.
    pub detail: String,
}

/// Keeps the verified prefix of the log in `dir` and moves the rest into `aside` (see the
/// module docs). `Ok(None)` if no damage was found.
pub fn salvage(dir: &Path, aside: &Path) -> Result<Option<Salvage>> {
    let listed = list_segments(dir)?;
    let mut expected: Option<u64> = None;
    // (position in `listed`, bytes of it to keep, first damaged index, detail)
    let mut cut: Option<(usize, u64, u64, String)> = None;
    for (k, (first_index, path)) in listed.iter().enumerate() {
        let io = |e| StorageError::io(path, e);
        let file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let at = expected.unwrap_or(*first_index);
        if *first_index != at {
            cut = Some((
                k,
                0,
                at,
                format!("{}: index gap (expected {at})", path.display()),
            ));
            break;
        }
        let seg = Found {
            first_index: *first_index,
            path: path.clone(),
            file,
            file_len,
            locs: Vec::new(),
            valid_len: 0,
            zero_tail: false,
            unborn: false,
        };
        if file_len < SEGMENT_HEADER_BYTES {
            cut = Some((k, 0, at, format!("{}: no segment header", path.display())));
            break;
        }
        if let Err(e) = check_header(&seg) {
            cut = Some((k, 0, at, e.to_string()));
            break;
        }
        let scan = scan_until_bad(&seg)?;
        let next = first_index + scan.locs.len() as u64;
        if let Some((bad, intact)) = scan.bad {
            // The unused zeros of a preallocated last segment are no damage.
            if k + 1 == listed.len() && !intact && only_zeros_from(&seg, scan.valid_len)? {
                break;
            }
            let keep = if scan.locs.is_empty() {
                0
            } else {
                scan.valid_len
            };
            cut = Some((k, keep, next, format!("{}: {bad}", path.display())));
            break;
        }
        expected = Some(next);
    }
    let Some((k, keep, first_damaged, detail)) = cut else {
        return Ok(None);
    };

    create_dir_durable(aside)?;
    for (j, (_, path)) in listed.iter().enumerate().skip(k) {
        let name = path.file_name().unwrap_or_default();
        let dest = aside.join(name);
        if j == k && keep > 0 {
            // Keep the verified records of this segment: a copy of the whole file goes
            // aside, the original is cut after the last verified record.
            fs::copy(path, &dest).map_err(|e| StorageError::io(&dest, e))?;
            File::open(&dest)
                .and_then(|f| f.sync_all())
                .map_err(|e| StorageError::io(&dest, e))?;
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| StorageError::io(path, e))?;
            f.set_len(keep).map_err(|e| StorageError::io(path, e))?;
            f.sync_all().map_err(|e| StorageError::io(path, e))?;
        } else {
            fs::rename(path, &dest).map_err(|e| StorageError::io(path, e))?;
        }
    }
    sync_dir(aside)?;
    sync_dir(dir)?;
    let kept_through = first_damaged.checked_sub(1).filter(|_| k > 0 || keep > 0);
    tracing::error!(
        first_damaged,
        kept_through = ?kept_through,
        set_aside = %aside.display(),
        %detail,
        "the raft log is damaged: kept the verified entries before the damage, set the rest aside"
    );
    Ok(Some(Salvage {
        first_damaged,
        kept_through,
        set_aside: aside.to_path_buf(),
        detail,
    }))
}

/// Sets aside every record of the open `log` (in `dir`) from `first_damaged` on, for
/// damage [`SegmentLog::open`](super::SegmentLog::open) cannot see: the records verify,
/// but something they rely on is gone (a chunk entry whose payload file is missing).
/// Copies of the segment files holding those records go to `aside`, whole, as found;
/// then the log is cut durably after `first_damaged - 1`. The same rules as [`salvage`]
/// apply to the caller: the node must not vote until a leader has re-sent the entries.
pub fn set_aside_from(
    log: &super::SegmentLog,
    dir: &Path,
    aside: &Path,
    first_damaged: u64,
    detail: String,
) -> Result<Salvage> {
    let listed = list_segments(dir)?;
    // The segment holding `first_damaged` is the last one starting at or before it.
    let from = listed
        .iter()
        .rposition(|(first, _)| *first <= first_damaged)
        .unwrap_or(0);
    create_dir_durable(aside)?;
    for (_, path) in &listed[from..] {
        let dest = aside.join(path.file_name().unwrap_or_default());
        fs::copy(path, &dest).map_err(|e| StorageError::io(&dest, e))?;
        File::open(&dest)
            .and_then(|f| f.sync_all())
            .map_err(|e| StorageError::io(&dest, e))?;
    }
    sync_dir(aside)?;
    let kept_through = first_damaged
        .checked_sub(1)
        .filter(|k| log.first_index().is_some_and(|f| f <= *k));
    log.truncate_after(kept_through)?;
    tracing::error!(
        first_damaged,
        kept_through = ?kept_through,
        set_aside = %aside.display(),
        %detail,
        "the raft log is damaged: kept the entries before the damage, set the rest aside"
    );
    Ok(Salvage {
        first_damaged,
        kept_through,
        set_aside: aside.to_path_buf(),
        detail,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::log::{LogOptions, SegmentLog};

    fn write_log(dir: &Path, n: u64, segment_size_bytes: u64) {
        let opts = LogOptions {
            segment_size_bytes,
            preallocate: false,
        };
        let (log, _) = SegmentLog::open(dir, opts).unwrap();
        for i in 1..=n {
            log.append([(i, bytes::Bytes::from(vec![i as u8; 100]))])
                .unwrap();
        }
        log.sync().unwrap();
    }

    /// Flips a byte in the payload of record `index` (records are 116 bytes here).
    fn damage(dir: &Path, index: u64) {
        let segs = list_segments(dir).unwrap();
        let (first, path) = segs
            .iter()
            .rev()
            .find(|(f, _)| *f <= index)
            .unwrap()
            .clone();
        let mut d = fs::read(&path).unwrap();
        let at = SEGMENT_HEADER_BYTES as usize + (index - first) as usize * 116 + 50;
        d[at] ^= 0xff;
        fs::write(&path, d).unwrap();
    }

    #[test]
    fn keeps_the_prefix_before_mid_log_damage_and_sets_the_rest_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let aside = tmp.path().join("aside");
        // ~8 records per segment: damage in the middle of the second of several.
        write_log(&dir, 40, 1000);
        damage(&dir, 12);
        assert!(matches!(
            SegmentLog::open(&dir, LogOptions::default()),
            Err(StorageError::Corrupt { .. })
        ));
        let s = salvage(&dir, &aside).unwrap().expect("damage found");
        assert_eq!(s.first_damaged, 12);
        assert_eq!(s.kept_through, Some(11));
        let (log, _) = SegmentLog::open(&dir, LogOptions::default()).unwrap();
        assert_eq!(log.first_index(), Some(1));
        assert_eq!(log.last_index(), Some(11));
        assert_eq!(log.read(11).unwrap().unwrap()[..], [11u8; 100][..]);
        // The damaged segment and every later one are kept aside, whole.
        assert!(fs::read_dir(&aside).unwrap().count() >= 4);
        assert_eq!(
            salvage(&dir, &aside).unwrap(),
            None,
            "nothing left to salvage"
        );
    }

    #[test]
    fn zeros_after_the_last_record_are_no_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        write_log(&dir, 40, 1000);
        // The unused end of a preallocated last segment.
        let (_, last) = list_segments(&dir).unwrap().pop().unwrap();
        let f = OpenOptions::new().write(true).open(&last).unwrap();
        f.set_len(f.metadata().unwrap().len() + 8192).unwrap();
        assert_eq!(salvage(&dir, &tmp.path().join("aside")).unwrap(), None);
        // Damage before them is still found.
        damage(&dir, 12);
        let s = salvage(&dir, &tmp.path().join("aside")).unwrap().unwrap();
        assert_eq!(s.first_damaged, 12);
    }

    #[test]
    fn damage_in_the_first_record_keeps_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        write_log(&dir, 5, 1 << 20);
        damage(&dir, 1);
        // Valid records follow the bad one: not a torn tail.
        assert!(SegmentLog::open(&dir, LogOptions::default()).is_err());
        let s = salvage(&dir, &tmp.path().join("aside")).unwrap().unwrap();
        assert_eq!((s.first_damaged, s.kept_through), (1, None));
        let (log, _) = SegmentLog::open(&dir, LogOptions::default()).unwrap();
        assert_eq!(log.last_index(), None);
    }
}
