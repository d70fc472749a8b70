//! Tests of segments made from pre-written zeros (`spare`): the zeros overwritten and kept
//! as the last segment's unused end, cut at rollover, told apart from torn writes and
//! damage, and written so that a small append dirties one page.

use super::*;

/// Opens with preallocation and waits until the first spare segment is ready, so that
/// the next segment is made from it.
fn open_preallocated(dir: &Path, segment_size_bytes: u64) -> (SegmentLog, OpenReport) {
    let opened = SegmentLog::open(
        dir,
        LogOptions {
            segment_size_bytes,
            preallocate: true,
        },
    )
    .unwrap();
    // A new log's first spare is ready when `open` returns; wait for any other.
    opened.0.wait_for_spare(Duration::from_secs(30));
    opened
}

/// Bytes of the records of segment `path` (whose first record is `first`), found by
/// reading it as `open` does: the end of the last valid record.
fn end_of_records(path: &Path) -> u64 {
    let bytes = fs::read(path).unwrap();
    let mut at = SEGMENT_HEADER_BYTES as usize;
    while at + RECORD_HEADER_BYTES as usize <= bytes.len() {
        let len = le_u32(&bytes[at + 8..at + 12]) as usize;
        let end = at + RECORD_HEADER_BYTES as usize + len;
        if end > bytes.len()
            || record_crc(&bytes[at..at + 12], &bytes[at + 16..end])
                != le_u32(&bytes[at + 12..at + 16])
        {
            break;
        }
        at = end;
    }
    at as u64
}

fn spare_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| spare::is_spare_name(n))
        .collect()
}

#[test]
fn an_all_zero_record_header_never_verifies() {
    // What lets zeros after the last record stand for "no record".
    assert_ne!(record_crc(&[0u8; 12], &[]), 0);
}

#[test]
fn preallocated_segments_are_overwritten_not_grown() {
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * 1024;
    let (log, _) = open_preallocated(dir.path(), size);
    fill(&log, 1..=100);
    log.sync().unwrap();
    let seg = segment_files(dir.path()).pop().unwrap();
    let records = SEGMENT_HEADER_BYTES + (1..=100).map(record_bytes).sum::<u64>();
    assert!(records < size);
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        size,
        "made from the spare"
    );
    assert_eq!(end_of_records(&seg), records);
    assert_eq!(log.total_bytes(), records);
    drop(log);

    // The zeros after the records are the unused tail: kept, and written into next.
    let (log, report) = open_preallocated(dir.path(), size);
    assert_eq!(report.torn_tail_bytes_discarded, 0);
    assert_eq!(report.entries, 100);
    assert_holds(&log, 1..=100);
    assert_eq!(fs::metadata(&seg).unwrap().len(), size);
    fill(&log, 101..=150);
    log.sync().unwrap();
    drop(log);
    let (log, report) = open_log(dir.path(), size).unwrap();
    assert_eq!(report.torn_tail_bytes_discarded, 0);
    assert_holds(&log, 1..=150);
    assert_eq!(fs::metadata(&seg).unwrap().len(), size);
}

#[test]
fn preallocated_rollover_cuts_the_finished_segment_to_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let size = 4096;
    let (log, _) = open_preallocated(dir.path(), size);
    // One record at a time, each spare finished before the next append: every segment is
    // made from one. Past 300, until the last segment has asked for the next spare.
    let mut n = 0;
    while n < 300 || !log.wait_for_spare(Duration::from_secs(30)) {
        n += 1;
        fill(&log, n..=n);
        log.sync().unwrap();
        log.wait_for_spare(Duration::from_secs(30));
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 4, "{} segments", files.len());
    let (last, earlier) = files.split_last().unwrap();
    for f in earlier {
        assert_eq!(
            fs::metadata(f).unwrap().len(),
            end_of_records(f),
            "{} ends in zeros",
            f.display()
        );
    }
    assert!(fs::metadata(last).unwrap().len() >= size);
    assert_eq!(spare_files(dir.path()).len(), 1, "one spare, ready");
    drop(log);
    let (log, report) = open_preallocated(dir.path(), size);
    assert_eq!(report.torn_tail_bytes_discarded, 0);
    assert_holds(&log, 1..=n);
    // A shrunk segment size: the last segment, preallocated for the old size, is cut to
    // its records when it rolls over.
    drop(log);
    let (log, _) = open_preallocated(dir.path(), 64);
    fill(&log, n + 1..=n + 10);
    log.sync().unwrap();
    drop(log);
    let files = segment_files(dir.path());
    for f in &files[..files.len() - 1] {
        assert_eq!(fs::metadata(f).unwrap().len(), end_of_records(f));
    }
    let (log, _) = open_log(dir.path(), 64).unwrap();
    assert_holds(&log, 1..=n + 10);
}

/// A preallocated log of records 1..=40 in `dir`, closed: its segment and the end of its
/// records.
fn closed_preallocated_log(dir: &Path, size: u64) -> (PathBuf, u64) {
    let (log, _) = open_preallocated(dir, size);
    fill(&log, 1..=40);
    log.sync().unwrap();
    drop(log);
    let seg = segment_files(dir).pop().unwrap();
    let end = end_of_records(&seg);
    (seg, end)
}

/// Writes the first `halves` halves (1 or 2) of record `i`, header and payload, at
/// `offset` of `path`.
fn write_record_at(path: &Path, i: u64, halves: usize, offset: u64) {
    let mut rec = record_header(i, &payload(i)).to_vec();
    rec.extend_from_slice(&payload(i));
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&rec[..rec.len() * halves / 2], offset)
        .unwrap();
}

#[test]
fn preallocated_torn_write_into_the_zeros_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * 1024;
    let (seg, end) = closed_preallocated_log(dir.path(), size);
    // Half of record 41's header and payload reached the disk, the rest is still zeros.
    write_record_at(&seg, 41, 1, end);
    let (log, report) = open_preallocated(dir.path(), size);
    assert_eq!(report.torn_tail_bytes_discarded, size - end);
    assert_holds(&log, 1..=40);
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        end,
        "cut after the last record"
    );
    fill(&log, 41..=45);
    drop(log);
    let (log, _) = open_log(dir.path(), size).unwrap();
    assert_holds(&log, 1..=45);
}

#[test]
fn preallocated_zeros_before_a_valid_record_are_damage() {
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * 1024;
    let (seg, end) = closed_preallocated_log(dir.path(), size);
    // Record 41 landed 4 KiB past the end, with zeros in between: not a torn tail.
    write_record_at(&seg, 41, 2, end + 4096);
    let before = fs::read(&seg).unwrap();
    assert_corrupt(open_log(dir.path(), size));
    assert_eq!(fs::read(&seg).unwrap(), before, "untouched");
}

#[test]
fn preallocated_zeros_at_the_end_of_an_earlier_segment_are_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_log(dir.path(), 600).unwrap();
    fill(&log, 1..=40);
    drop(log);
    let first = segment_files(dir.path()).remove(0);
    let len = fs::metadata(&first).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(len + 4096)
        .unwrap();
    assert_corrupt(open_log(dir.path(), 600));
}

#[test]
fn preallocated_stale_spares_are_removed_and_inspection_finds_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("spare-0-0.tmp"), [0u8; 100]).unwrap();
    // Five records of 10..50 bytes pass half of it: the next spare is asked for.
    let size = 500;
    let (log, _) = open_preallocated(dir.path(), size);
    assert!(!dir.path().join("spare-0-0.tmp").exists());
    assert_eq!(spare_files(dir.path()).len(), 1);
    log.append((1..=5u64).map(|i| (i, Bytes::from(vec![i as u8; 10 * i as usize]))))
        .unwrap();
    log.sync().unwrap();
    let found = inspect_log_dir(dir.path()).unwrap();
    assert_eq!(found.segments, 1);
    assert_eq!(found.last_payload, Some(vec![5u8; 50]));
    // Dropping the log deletes its spare (a ready one at once, one being made by its
    // thread when it notices).
    assert!(log.wait_for_spare(Duration::from_secs(30)));
    drop(log);
    assert!(spare_files(dir.path()).is_empty());
}

/// Bytes this thread has caused to be written to storage so far (`write_bytes` of
/// `/proc/thread-self/io`: a buffered write is counted when it dirties a page).
fn thread_write_bytes() -> u64 {
    fs::read_to_string("/proc/thread-self/io")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn preallocated_small_appends_dirty_a_page_not_a_folio() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_preallocated(dir.path(), 8 << 20);
    fill(&log, 1..=1);
    log.sync().unwrap();
    let before = thread_write_bytes();
    for i in 2..=101 {
        fill(&log, i..=i);
        log.sync().unwrap();
    }
    let per_record = (thread_write_bytes() - before) / 100;
    // One page, or two where a record crosses into the next. A spare written in large
    // writes made every record dirty (and each fdatasync write) a whole large folio.
    assert!(
        per_record <= 2 * 4096,
        "{per_record} bytes written per record"
    );
}

#[test]
fn preallocated_new_log_starts_with_a_segment_of_zeros() {
    // `open` of an empty log makes the first spare itself, so the first append (inside
    // Raft, which must not stall) finds it ready.
    let dir = tempfile::tempdir().unwrap();
    let size = 1 << 20;
    let opts = LogOptions {
        segment_size_bytes: size,
        preallocate: true,
    };
    let (log, _) = SegmentLog::open(dir.path(), opts).unwrap();
    fill(&log, 1..=3);
    let seg = segment_files(dir.path()).pop().unwrap();
    assert_eq!(fs::metadata(&seg).unwrap().len(), size);
}
