//! Tests of the segment log: behaviour, recovery from torn and damaged files, concurrency,
//! and a multi-process SIGKILL test.

use std::io::{BufRead, Write};
use std::ops::RangeInclusive;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;

/// Deterministic payload of varying length (8..105 bytes) for record `i`.
fn payload(i: u64) -> Bytes {
    let extra = (i.wrapping_mul(37) % 97) as usize;
    let mut v = i.to_le_bytes().to_vec();
    v.extend((0..extra).map(|k| (i as u8).wrapping_add(k as u8)));
    Bytes::from(v)
}

/// Opens without preallocation: the tests that edit files rely on each segment file
/// ending at its last record. The `preallocated` tests cover the other case.
fn open_log(dir: &Path, segment_size_bytes: u64) -> Result<(SegmentLog, OpenReport)> {
    SegmentLog::open(
        dir,
        LogOptions {
            segment_size_bytes,
            preallocate: false,
        },
    )
}

fn fill(log: &SegmentLog, range: RangeInclusive<u64>) {
    log.append(range.map(|i| (i, payload(i)))).unwrap();
}

/// Asserts the log holds exactly `range`, with the expected payloads.
fn assert_holds(log: &SegmentLog, range: RangeInclusive<u64>) {
    assert_eq!(log.first_index(), Some(*range.start()));
    assert_eq!(log.last_index(), Some(*range.end()));
    for i in range.clone() {
        assert_eq!(log.read(i).unwrap(), Some(payload(i)), "record {i}");
    }
    assert_eq!(log.read(range.start() - 1).unwrap(), None);
    assert_eq!(log.read(range.end() + 1).unwrap(), None);
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

fn snapshot_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    segment_files(dir)
        .into_iter()
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect()
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

fn record_bytes(i: u64) -> u64 {
    RECORD_HEADER_BYTES + payload(i).len() as u64
}

fn assert_corrupt(result: Result<(SegmentLog, OpenReport)>) {
    match result {
        Err(StorageError::Corrupt { .. }) => {}
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("expected Corrupt, the log opened"),
    }
}

#[test]
fn append_read_and_index_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) = open_log(dir.path(), 1 << 20).unwrap();
    assert_eq!(report, OpenReport::default());
    assert_eq!((log.first_index(), log.last_index()), (None, None));
    fill(&log, 5..=50);
    assert_holds(&log, 5..=50);
    // Gaps, overlaps and non-contiguous batches are refused and change nothing.
    for bad in [vec![52], vec![50], vec![51, 53]] {
        let err = log
            .append(bad.into_iter().map(|i| (i, payload(i))))
            .unwrap_err();
        assert!(matches!(err, StorageError::Invalid(_)), "{err}");
    }
    log.append(std::iter::empty()).unwrap();
    assert_holds(&log, 5..=50);
    let expected: u64 = SEGMENT_HEADER_BYTES + (5..=50).map(record_bytes).sum::<u64>();
    assert_eq!(log.total_bytes(), expected);
    assert_eq!(
        fs::metadata(&segment_files(dir.path())[0]).unwrap().len(),
        expected
    );
}

#[test]
fn read_range_caps_bytes_but_returns_at_least_one() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_log(dir.path(), 1 << 20).unwrap();
    fill(&log, 1..=10);
    let size = |r: RangeInclusive<u64>| r.map(|i| payload(i).len()).sum::<usize>();
    let indexes = |v: Vec<(u64, Bytes)>| -> Vec<u64> {
        for (i, p) in &v {
            assert_eq!(*p, payload(*i));
        }
        v.into_iter().map(|(i, _)| i).collect()
    };
    assert_eq!(
        indexes(log.read_range(2, 8, usize::MAX).unwrap()),
        (2..8).collect::<Vec<_>>()
    );
    assert_eq!(
        indexes(log.read_range(2, 8, size(2..=4)).unwrap()),
        vec![2, 3, 4]
    );
    assert_eq!(
        indexes(log.read_range(2, 8, size(2..=4) - 1).unwrap()),
        vec![2, 3]
    );
    assert_eq!(indexes(log.read_range(2, 8, 0).unwrap()), vec![2]);
    assert_eq!(
        indexes(log.read_range(8, 100, usize::MAX).unwrap()),
        vec![8, 9, 10]
    );
    assert_eq!(
        indexes(log.read_range(0, 3, usize::MAX).unwrap()),
        vec![1, 2]
    );
    assert!(log.read_range(5, 5, usize::MAX).unwrap().is_empty());
    assert!(log.read_range(11, 20, usize::MAX).unwrap().is_empty());
    log.purge_upto(4).unwrap();
    assert_eq!(
        indexes(log.read_range(1, 7, usize::MAX).unwrap()),
        vec![5, 6]
    );
}

#[test]
fn rollover_spreads_records_over_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_log(dir.path(), 512).unwrap();
    for i in 1..=200 {
        fill(&log, i..=i);
    }
    fill(&log, 201..=400); // one batch spanning many segments
    assert_holds(&log, 1..=400);
    let files = segment_files(dir.path());
    assert!(files.len() > 20, "{} segments", files.len());
    let mut on_disk = 0;
    for path in &files {
        let len = fs::metadata(path).unwrap().len();
        // A segment only exceeds the limit by its last record.
        assert!(
            len < 512 + record_bytes(0) + 100,
            "{} is {len} bytes",
            path.display()
        );
        on_disk += len;
    }
    assert_eq!(log.total_bytes(), on_disk);
    let all = log.read_range(1, 401, usize::MAX).unwrap();
    assert_eq!(all.len(), 400);
    drop(log);
    let (log, report) = open_log(dir.path(), 512).unwrap();
    assert_eq!((report.segments, report.entries), (files.len(), 400));
    assert_holds(&log, 1..=400);
}

#[test]
fn one_append_of_more_records_than_one_write_takes() {
    // 1,500 records are 3,000 slices: several `pwritev` calls, and rollovers in between.
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = open_log(dir.path(), 64 * 1024).unwrap();
        fill(&log, 1..=1500);
        log.sync().unwrap();
        assert_holds(&log, 1..=1500);
        assert!(segment_files(dir.path()).len() > 1);
    }
    let (log, report) = open_log(dir.path(), 64 * 1024).unwrap();
    assert_eq!(report.entries, 1500);
    assert_eq!(report.torn_tail_bytes_discarded, 0);
    assert_holds(&log, 1..=1500);
}

#[test]
fn truncate_after_within_and_across_segments() {
    // Within a segment, then re-append different payloads at the cut.
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_log(dir.path(), 1 << 20).unwrap();
    fill(&log, 1..=10);
    log.truncate_after(Some(10)).unwrap();
    log.truncate_after(Some(6)).unwrap();
    assert_holds(&log, 1..=6);
    let file = &segment_files(dir.path())[0];
    let len6 = SEGMENT_HEADER_BYTES + (1..=6).map(record_bytes).sum::<u64>();
    assert_eq!(fs::metadata(file).unwrap().len(), len6);
    log.append([(7, Bytes::from_static(b"new seven"))]).unwrap();
    drop(log);
    let (log, _) = open_log(dir.path(), 1 << 20).unwrap();
    assert_eq!(log.read(7).unwrap(), Some(Bytes::from_static(b"new seven")));
    assert_eq!(log.last_index(), Some(7));
    drop(log);

    // Across segments: later files are deleted, the holding one is cut.
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_log(dir.path(), 300).unwrap();
    fill(&log, 1..=100);
    let before = segment_files(dir.path()).len();
    log.truncate_after(Some(30)).unwrap();
    assert_holds(&log, 1..=30);
    let firsts: Vec<u64> = list_segments(dir.path())
        .unwrap()
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert!(firsts.len() < before);
    assert!(firsts.iter().all(|f| *f <= 30), "{firsts:?}");
    fill(&log, 31..=120);
    drop(log);
    let (log, _) = open_log(dir.path(), 300).unwrap();
    assert_holds(&log, 1..=120);

    // None removes everything; any index may follow (nothing purged).
    log.truncate_after(None).unwrap();
    assert_eq!(
        (log.first_index(), log.last_index(), log.total_bytes()),
        (None, None, 0)
    );
    assert!(segment_files(dir.path()).is_empty());
    fill(&log, 3..=4);
    drop(log);
    let (log, _) = open_log(dir.path(), 300).unwrap();
    assert_holds(&log, 3..=4);
}

#[test]
fn purge_deletes_whole_segments_and_hides_records() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_log(dir.path(), 300).unwrap();
    fill(&log, 1..=100);
    log.purge_upto(50).unwrap();
    log.purge_upto(20).unwrap(); // never moves backwards
    assert_holds(&log, 51..=100);
    assert_eq!(log.read(50).unwrap(), None);
    let firsts: Vec<u64> = list_segments(dir.path())
        .unwrap()
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    // Exactly the segments holding only purged records are gone.
    assert!(firsts[0] <= 51 && firsts[1] > 51, "{firsts:?}");
    assert!(log.append([(50, payload(50))]).is_err());
    fill(&log, 101..=110);
    drop(log);
    // The caller re-applies its durable purge mark after reopening.
    let (log, _) = open_log(dir.path(), 300).unwrap();
    assert_eq!(log.first_index(), Some(firsts[0]));
    log.purge_upto(50).unwrap();
    assert_holds(&log, 51..=110);
}

#[test]
fn purge_past_the_end_then_append() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_log(dir.path(), 300).unwrap();
    fill(&log, 1..=100);
    log.purge_upto(150).unwrap();
    assert_eq!(
        (log.first_index(), log.last_index(), log.total_bytes()),
        (None, None, 0)
    );
    assert!(segment_files(dir.path()).is_empty());
    assert_eq!(log.sync().unwrap(), None);
    assert!(matches!(
        log.append([(150, payload(150))]),
        Err(StorageError::Invalid(_))
    ));
    fill(&log, 151..=160);
    assert_holds(&log, 151..=160);
    drop(log);
    let (log, _) = open_log(dir.path(), 300).unwrap();
    assert_holds(&log, 151..=160);
}

#[test]
fn reopen_restores_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_log(dir.path(), 1000).unwrap();
    fill(&log, 7..=300);
    let state = |log: &SegmentLog| {
        (
            log.first_index(),
            log.last_index(),
            log.total_bytes(),
            log.read_range(0, u64::MAX, usize::MAX).unwrap(),
        )
    };
    let before = state(&log);
    let files = snapshot_files(dir.path());
    drop(log);
    let (log, report) = open_log(dir.path(), 1000).unwrap();
    assert_eq!(state(&log), before);
    assert_eq!(
        report,
        OpenReport {
            torn_tail_bytes_discarded: 0,
            segments: files.len(),
            entries: 294
        }
    );
    assert_eq!(snapshot_files(dir.path()), files);
}

#[test]
fn sync_returns_the_last_index() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_log(dir.path(), 300).unwrap();
    assert_eq!(log.sync().unwrap(), None);
    fill(&log, 1..=40);
    assert_eq!(log.sync().unwrap(), Some(40));
    assert_eq!(log.sync().unwrap(), Some(40));
    log.truncate_after(Some(25)).unwrap();
    assert_eq!(log.sync().unwrap(), Some(25));
}

#[test]
fn torn_tail_chopped_off_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_log(dir.path(), 600).unwrap();
    fill(&log, 1..=40);
    drop(log);
    let last = segment_files(dir.path()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let (log, report) = open_log(dir.path(), 600).unwrap();
    assert_eq!(report.torn_tail_bytes_discarded, record_bytes(40) - 5);
    assert_eq!(report.entries, 39);
    assert_holds(&log, 1..=39);
    assert_eq!(fs::metadata(&last).unwrap().len(), len - record_bytes(40));
    fill(&log, 40..=41);
    drop(log);
    let (log, report) = open_log(dir.path(), 600).unwrap();
    assert_eq!(report.torn_tail_bytes_discarded, 0);
    assert_holds(&log, 1..=41);
}

#[test]
fn torn_tail_of_garbage_is_discarded() {
    let seed = rand::random::<u64>();
    println!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_log(dir.path(), 600).unwrap();
    fill(&log, 1..=40);
    drop(log);
    let last = segment_files(dir.path()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    let garbage: Vec<u8> = (0..100).map(|_| rng.random()).collect();
    fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap()
        .write_all(&garbage)
        .unwrap();
    let (log, report) = open_log(dir.path(), 600).unwrap();
    assert_eq!(
        (report.torn_tail_bytes_discarded, report.entries),
        (100, 40)
    );
    assert_eq!(fs::metadata(&last).unwrap().len(), len);
    assert_holds(&log, 1..=40);
}

#[test]
fn torn_only_record_of_last_segment_removes_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_log(dir.path(), 300).unwrap();
    fill(&log, 1..=30);
    let files = segment_files(dir.path());
    drop(log);
    // Chop into the first record of the last segment, so it holds none.
    let last = files.last().unwrap();
    let first_of_last = list_segments(dir.path()).unwrap().last().unwrap().0;
    let keep = SEGMENT_HEADER_BYTES + 3;
    let cut = fs::metadata(last).unwrap().len() - keep;
    fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(keep)
        .unwrap();
    let (log, report) = open_log(dir.path(), 300).unwrap();
    assert_eq!(report.torn_tail_bytes_discarded, 3);
    assert!(cut > 0);
    assert_eq!(segment_files(dir.path()).len(), files.len() - 1);
    assert_holds(&log, 1..=first_of_last - 1);
    fill(&log, first_of_last..=35);
    assert_holds(&log, 1..=35);
}

#[test]
fn corrupt_record_followed_by_valid_ones_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_log(dir.path(), 1 << 20).unwrap();
    fill(&log, 1..=20);
    drop(log);
    let file = segment_files(dir.path()).pop().unwrap();
    let record3 = SEGMENT_HEADER_BYTES + (1..=2).map(record_bytes).sum::<u64>();
    let before = snapshot_files(dir.path());
    flip_byte(&file, record3 + RECORD_HEADER_BYTES + 2); // inside record 3's payload
    assert_corrupt(open_log(dir.path(), 1 << 20));
    // Nothing was "repaired" away.
    assert_eq!(fs::metadata(&file).unwrap().len(), before[0].1.len() as u64);
    // A damaged length field loses the framing; the valid records after it still count.
    flip_byte(&file, record3 + RECORD_HEADER_BYTES + 2);
    flip_byte(&file, record3 + 10);
    assert_corrupt(open_log(dir.path(), 1 << 20));
}

#[test]
fn damage_outside_the_tail_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_log(dir.path(), 300).unwrap();
    fill(&log, 1..=60);
    drop(log);
    let files = segment_files(dir.path());
    assert!(files.len() >= 4);
    // The last record of a non-last segment.
    let len = fs::metadata(&files[0]).unwrap().len();
    flip_byte(&files[0], len - 1);
    assert_corrupt(open_log(dir.path(), 300));
    flip_byte(&files[0], len - 1);
    // A header checksum.
    flip_byte(&files[1], 14);
    assert_corrupt(open_log(dir.path(), 300));
    flip_byte(&files[1], 14);
    // A missing middle segment is a gap.
    let saved = fs::read(&files[2]).unwrap();
    fs::remove_file(&files[2]).unwrap();
    assert_corrupt(open_log(dir.path(), 300));
    fs::write(&files[2], saved).unwrap();
    let (log, _) = open_log(dir.path(), 300).unwrap();
    assert_holds(&log, 1..=60);
}

#[test]
fn unknown_version_is_refused_and_nothing_is_modified() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_log(dir.path(), 300).unwrap();
    fill(&log, 1..=60);
    drop(log);
    let files = segment_files(dir.path());
    // A torn tail in the last segment that a careless open would truncate...
    fs::OpenOptions::new()
        .append(true)
        .open(files.last().unwrap())
        .unwrap()
        .write_all(b"torn")
        .unwrap();
    // ...and a future version in the first one.
    let mut bytes = fs::read(&files[0]).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    fs::write(&files[0], bytes).unwrap();
    let before = snapshot_files(dir.path());
    match open_log(dir.path(), 300) {
        Err(StorageError::UnsupportedVersion {
            found: 2,
            supported: 1,
            ..
        }) => {}
        Err(other) => panic!("expected UnsupportedVersion, got {other}"),
        Ok(_) => panic!("a future version was opened"),
    }
    assert_eq!(snapshot_files(dir.path()), before);
}

#[test]
fn concurrent_reader_writer_and_syncer() {
    const LAST: u64 = 3000;
    let seed = rand::random::<u64>();
    println!("seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_log(dir.path(), 4096).unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut next = 1;
            while next <= LAST {
                let end = (next + rng.random_range(0..20)).min(LAST);
                fill(&log, next..=end);
                next = end + 1;
            }
            done.store(true, Ordering::Release);
        });
        s.spawn(|| {
            let mut durable = None;
            while !done.load(Ordering::Acquire) {
                let now = log.sync().unwrap();
                assert!(
                    now >= durable && now <= Some(LAST),
                    "{now:?} after {durable:?}"
                );
                durable = now;
            }
        });
        for reader in 0..2 {
            let (log, done) = (&log, &done);
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ reader);
                while !done.load(Ordering::Acquire) {
                    let Some(last) = log.last_index() else {
                        continue;
                    };
                    let i = rng.random_range(1..=last);
                    assert_eq!(log.read(i).unwrap(), Some(payload(i)));
                    let got = log
                        .read_range(i, last + 1, rng.random_range(0..2000))
                        .unwrap();
                    assert!(!got.is_empty());
                    for (k, (index, p)) in got.into_iter().enumerate() {
                        assert_eq!(index, i + k as u64);
                        assert_eq!(p, payload(index));
                    }
                }
            });
        }
    });
    assert_eq!(log.sync().unwrap(), Some(LAST));
    assert_holds(&log, 1..=LAST);
}

const CRASH_CHILD_ENV: &str = "TROVE_TEST_LOG_CRASH_CHILD_DIR";
const CRASH_SEGMENT_BYTES: u64 = 16 << 10;

/// Child role: append and sync forever, printing each index once `sync` covers it.
fn crash_child(dir: &Path) {
    let (log, _) = open_log(dir, CRASH_SEGMENT_BYTES).unwrap();
    let mut next = log.last_index().map_or(1, |l| l + 1);
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    // Bounded so an orphan cannot run forever if the parent dies.
    while started.elapsed() < Duration::from_secs(60) {
        let end = next + next % 7;
        fill(&log, next..=end);
        let durable = log.sync().unwrap();
        assert_eq!(durable, Some(end));
        writeln!(out, "acked {end}").unwrap();
        out.flush().unwrap();
        next = end + 1;
    }
}

#[test]
fn crash_sigkill_keeps_every_acked_record() {
    if let Some(dir) = std::env::var_os(CRASH_CHILD_ENV) {
        crash_child(Path::new(&dir));
        return;
    }
    let name = "log::tests::crash_sigkill_keeps_every_acked_record";
    let dir = tempfile::tempdir().unwrap();
    let mut acked_max = 0;
    for round in 0..4u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CRASH_CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let kill_after = 50 + 150 * round;
        let mut seen = 0;
        while seen < kill_after {
            let Some(line) = lines.next() else {
                panic!("child exited early: {:?}", child.wait())
            };
            if let Some(n) = line.unwrap().strip_prefix("acked ") {
                acked_max = acked_max.max(n.parse().unwrap());
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL, most likely mid-append or mid-sync
        // Acks already in the pipe were acknowledged too.
        for line in lines {
            if let Some(n) = line.unwrap().strip_prefix("acked ") {
                acked_max = acked_max.max(n.parse().unwrap());
            }
        }
        child.wait().unwrap();
        let (log, report) = open_log(dir.path(), CRASH_SEGMENT_BYTES).unwrap();
        println!("round {round}: acked up to {acked_max}, reopened with {report:?}");
        let last = log.last_index().unwrap();
        assert!(
            last >= acked_max,
            "acked {acked_max} but the log ends at {last}"
        );
        assert_holds(&log, 1..=last);
    }
}

#[test]
fn frozen_version_1_bytes_still_read() {
    // Guards the format: if this breaks, the on-disk layout changed.
    let dir = tempfile::tempdir().unwrap();
    let mut seg = b"TRVLOG\0\0\x01\0\0\0\x09\0\0\0\0\0\0\0".to_vec();
    seg.extend_from_slice(&crc32c::crc32c(&seg).to_le_bytes());
    for (index, payload) in [(9u8, &b"nine"[..]), (10, b"")] {
        let mut rec = vec![index, 0, 0, 0, 0, 0, 0, 0, payload.len() as u8, 0, 0, 0];
        let crc = crc32c::crc32c_append(crc32c::crc32c(&rec), payload);
        rec.extend_from_slice(&crc.to_le_bytes());
        rec.extend_from_slice(payload);
        seg.extend_from_slice(&rec);
    }
    fs::write(dir.path().join("seg-00000000000000000009.log"), &seg).unwrap();
    let (log, report) = open_log(dir.path(), 1 << 20).unwrap();
    assert_eq!(report.entries, 2);
    assert_eq!(log.read(9).unwrap(), Some(Bytes::from_static(b"nine")));
    assert_eq!(log.read(10).unwrap(), Some(Bytes::new()));
    fill(&log, 11..=11);
    let written = fs::read(dir.path().join("seg-00000000000000000009.log")).unwrap();
    assert_eq!(&written[..seg.len()], &seg[..]);
    let mut expected_rec = record_header(11, &payload(11)).to_vec();
    expected_rec.extend_from_slice(&payload(11));
    assert_eq!(&written[seg.len()..], &expected_rec[..]);
}

#[test]
fn inspection_is_read_only_refuses_new_versions_and_finds_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    assert_eq!(inspect_log_dir(&log_dir).unwrap(), LogInspection::default());
    assert!(
        !log_dir.exists(),
        "inspection must not create the directory"
    );
    {
        let (log, _) = open_log(&log_dir, DEFAULT_SEGMENT_SIZE_BYTES).unwrap();
        log.append((1..=5u64).map(|i| (i, Bytes::from(vec![i as u8; 10 * i as usize]))))
            .unwrap();
        log.sync().unwrap();
    }
    let seg = log_dir.join(segment_file_name(1));
    // A torn tail after the last record: the last complete record is still found.
    let mut bytes = fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[7u8; 9]);
    fs::write(&seg, &bytes).unwrap();
    let found = inspect_log_dir(&log_dir).unwrap();
    assert_eq!(found.segments, 1);
    assert_eq!(found.last_payload, Some(vec![5u8; 50]));
    assert_eq!(fs::read(&seg).unwrap(), bytes, "untouched");

    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..20]);
    bytes[20..24].copy_from_slice(&crc.to_le_bytes());
    fs::write(&seg, &bytes).unwrap();
    assert!(matches!(
        inspect_log_dir(&log_dir),
        Err(StorageError::UnsupportedVersion { found: 2, .. })
    ));
    assert_eq!(fs::read(&seg).unwrap(), bytes, "untouched");
}

mod preallocated;
