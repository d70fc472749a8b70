//! sled's IO thread pool wakes one thread per job, not all of them: the workspace uses a
//! patched sled (`vendor/sled/TROVE-PATCH.md`). Its own process, because the pool is
//! global: other tests' sled work would be counted too.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

/// sled's IO threads and their voluntary context switches (a thread going to sleep) so
/// far (Linux: `/proc/self/task`).
fn io_thread_switches() -> (usize, u64) {
    let (mut threads, mut total) = (0, 0);
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("sled-io") {
            continue;
        }
        threads += 1;
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        total += status
            .lines()
            .filter(|l| l.starts_with("voluntary_ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    (threads, total)
}

#[test]
fn a_write_batch_wakes_one_io_thread_per_buffer_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let batch = |i: u32| {
        let mut b = sled::Batch::default();
        b.insert(&i.to_be_bytes(), vec![1u8; 256]);
        b.insert(&b"applied"[..], &i.to_be_bytes());
        b
    };
    // The pool starts its seven idle threads on first use.
    for i in 0..20 {
        db.apply_batch(batch(i)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));

    // One batch at a time with a pause between, as a lightly loaded node applies them:
    // the pool's threads are asleep when each job arrives.
    let n = 200;
    let (threads, before) = io_thread_switches();
    // Without them the count below would be zero and prove nothing.
    assert!(
        threads >= 7,
        "found {threads} sled-io threads; sled names them sled-io-N"
    );
    for i in 0..n {
        db.apply_batch(batch(i)).unwrap();
        std::thread::sleep(Duration::from_micros(500));
    }
    let per_batch = (io_thread_switches().1 - before) as f64 / n as f64;
    // Each batch hands sled's pool its buffer writes. Waking every idle thread for each
    // (upstream sled) measured about 12 switches per batch here; one thread per job
    // about 5.
    assert!(
        per_batch >= 1.0,
        "{per_batch:.1} IO-thread context switches per batch: the pool did no work?"
    );
    assert!(
        per_batch < 8.0,
        "{per_batch:.1} IO-thread context switches per write batch: is sled's pool waking all its threads again?"
    );
    println!("{per_batch:.1} IO-thread context switches per batch");
}
