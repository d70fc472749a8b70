//! Damaged chunk files on one node (issue "single-node disasters", point 3): bit flips,
//! zeroed ranges, truncations and deleted files are detected, never served, and
//! repaired from a peer, by a read that meets them and by the scrubber; damage that no
//! peer can repair is reported and fails reads with DATA_LOSS instead of serving it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use trove_client::{Consistency, TroveError};
use trove_types::Sha256;

use crate::acked::{Acked, verify_acked};
use crate::cli::trove;
use crate::data::{DataGen, test_seed};
use crate::harness::{Cluster, deadline};
use trove_testkit::segments::log_record_offsets;

const TEST_TIMEOUT: Duration = Duration::from_secs(300);
const CATCH_UP: Duration = Duration::from_secs(60);

/// Every chunk file of a node (`<data>/chunks/<2 hex>/<64 hex>`), sorted.
fn chunk_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let root = data_dir.join("chunks");
    for shard in std::fs::read_dir(&root).expect("chunks dir") {
        let shard = shard.expect("entry").path();
        let is_shard = shard
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.len() == 2);
        if !is_shard || !shard.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&shard).expect("shard dir") {
            out.push(f.expect("entry").path());
        }
    }
    out.sort();
    out
}

/// Whether the file at `path` holds the bytes its name (a SHA-256) says.
fn verifies(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).expect("name");
    std::fs::read(path).is_ok_and(|d| hex::encode(Sha256::digest(&d)) == name)
}

fn flip_bit(path: &Path) {
    let mut d = std::fs::read(path).expect("read chunk");
    let i = d.len() / 2;
    d[i] ^= 0x10;
    std::fs::write(path, d).expect("write chunk");
}

fn zero_range(path: &Path) {
    let mut d = std::fs::read(path).expect("read chunk");
    let n = d.len().min(4096);
    d[..n].fill(0);
    std::fs::write(path, d).expect("write chunk");
}

fn truncate_half(path: &Path) {
    let len = std::fs::metadata(path).expect("stat").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open")
        .set_len(len / 2)
        .expect("truncate");
}

async fn put(cluster: &mut Cluster, key: &str, size: u64, seed: u64) -> (u64, [u8; 32]) {
    let data = DataGen::new(seed, size).bytes();
    let info = cluster
        .client()
        .put_object_bytes("repair", key, Bytes::from(data))
        .await
        .expect("put object");
    (info.revision, info.sha256)
}

/// Reads `repair/<key>` from node `id`'s own state.
async fn read_local(cluster: &mut Cluster, id: u64, key: &str) -> Result<Vec<u8>, TroveError> {
    let c = cluster.client_for(id);
    let mut reader = c
        .get_object("repair", key, None, Consistency::Local)
        .await?;
    let mut got = Vec::new();
    while let Some(chunk) = reader.next_chunk().await? {
        got.extend_from_slice(&chunk);
    }
    Ok(got)
}

async fn follower(cluster: &mut Cluster) -> u64 {
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    cluster
        .all_ids()
        .into_iter()
        .find(|i| *i != leader)
        .expect("a follower")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_meets_bad_chunks_returns_the_right_bytes_and_repairs_them() {
    deadline(TEST_TIMEOUT, async {
        let seed = test_seed("read_repair");
        let mut cluster = Cluster::start(3).await;
        let f = follower(&mut cluster).await;
        cluster
            .client()
            .create_bucket("repair")
            .await
            .expect("bucket");
        // 3.5 MiB: four chunks.
        let (rev, sha) = put(&mut cluster, "blob", 3 * 1024 * 1024 + 512 * 1024, seed).await;
        cluster.wait_all_applied(rev, CATCH_UP).await;

        let dir = cluster.node(f).data_dir.clone();
        let files = chunk_files(&dir);
        assert_eq!(files.len(), 4, "{files:?}");
        flip_bit(&files[0]);
        std::fs::remove_file(&files[1]).expect("delete chunk");

        let got = read_local(&mut cluster, f, "blob")
            .await
            .expect("read on the damaged node");
        assert_eq!(
            Sha256::digest(&got)[..],
            sha[..],
            "bytes served after repair"
        );
        for p in &files[..2] {
            assert!(verifies(p), "{} was not rewritten intact", p.display());
        }
        let quarantined = std::fs::read_dir(dir.join("chunks/quarantine"))
            .expect("quarantine dir")
            .count();
        assert_eq!(
            quarantined, 1,
            "the corrupt copy is kept aside, never served"
        );

        let ep = cluster.node(f).client_addr.clone();
        let r = cluster
            .client()
            .scrub_of(&ep, false)
            .await
            .expect("scrub report");
        assert_eq!(
            (r.corrupt_found, r.missing_found, r.repaired, r.unrepairable),
            (1, 1, 2, 0),
            "{r:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrubber_repairs_one_node_and_reports_what_no_peer_can_repair() {
    deadline(TEST_TIMEOUT, async {
        let seed = test_seed("scrubber");
        let mut cluster = Cluster::start(3).await;
        let f = follower(&mut cluster).await;
        let ep = cluster.endpoints().join(",");
        cluster
            .client()
            .create_bucket("repair")
            .await
            .expect("bucket");
        let size = 2 * 1024 * 1024 + 512 * 1024; // three chunks each
        let (_, sha_a) = put(&mut cluster, "a", size, seed).await;
        let (rev, sha_b) = put(&mut cluster, "b", size, seed ^ 1).await;
        cluster.wait_all_applied(rev, CATCH_UP).await;

        // Four kinds of damage on one node; nothing reads these chunks.
        let dir = cluster.node(f).data_dir.clone();
        let files = chunk_files(&dir);
        assert_eq!(files.len(), 6, "{files:?}");
        flip_bit(&files[0]);
        zero_range(&files[1]);
        truncate_half(&files[2]);
        std::fs::remove_file(&files[3]).expect("delete chunk");

        let f_arg = f.to_string();
        let out = trove(
            &ep,
            &[
                "-o", "json", "cluster", "scrub", "--start", "--wait", "--node", &f_arg,
            ],
            b"",
        )
        .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        let v = out.json();
        let n = &v["nodes"][0];
        assert_eq!(n["id"], f);
        assert_eq!(n["corrupt_found"], 3, "{v}");
        assert_eq!(n["missing_found"], 1, "{v}");
        assert_eq!(n["repaired"], 4, "{v}");
        assert_eq!(n["unrepairable"], 0, "{v}");
        assert_eq!(n["running"], false, "{v}");
        assert!(n["chunks_checked"].as_u64() >= Some(6), "{v}");
        assert!(n["passes_completed"].as_u64() >= Some(1), "{v}");
        for p in &files {
            assert!(verifies(p), "{} was not repaired", p.display());
        }
        // The repaired node serves both objects from its own disk.
        for (key, sha) in [("a", sha_a), ("b", sha_b)] {
            let got = read_local(&mut cluster, f, key).await.expect("read");
            assert_eq!(Sha256::digest(&got)[..], sha[..], "{key}");
        }
        // Every member answers the text report.
        let out = trove(&ep, &["cluster", "scrub"], b"").await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stdout.starts_with("NODE"), "{}", out.stdout);
        assert_eq!(out.stdout.lines().count(), 4, "{}", out.stdout);

        // The same chunk damaged on every node: no intact copy is left. The scrubber
        // says so (exit 1), and a read fails with DATA_LOSS rather than serve bad bytes.
        let victim = files[4].strip_prefix(&dir).expect("relative").to_path_buf();
        for id in cluster.all_ids() {
            flip_bit(&cluster.node(id).data_dir.join(&victim));
        }
        let out = trove(&ep, &["cluster", "scrub", "--start", "--wait"], b"").await;
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("no peer could repair"),
            "{}",
            out.stderr
        );
        let mut failed = 0;
        for (key, sha) in [("a", sha_a), ("b", sha_b)] {
            match read_local(&mut cluster, f, key).await {
                Ok(got) => assert_eq!(Sha256::digest(&got)[..], sha[..], "{key}"),
                Err(TroveError::DataLoss(m)) => {
                    assert!(m.contains("no peer supplied an intact copy"), "{m}");
                    failed += 1;
                }
                Err(e) => panic!("{key}: expected DATA_LOSS, got {e:?}"),
            }
        }
        assert_eq!(
            failed, 1,
            "exactly the object holding the damaged chunk fails"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_log_entry_is_not_taken_for_a_torn_tail_and_is_sent_again() {
    deadline(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3).await;
        let f = follower(&mut cluster).await;
        let c = cluster.client();
        let mut acked = Vec::new();
        for i in 0..60u32 {
            let key = format!("log/{i:03}");
            let value = Bytes::from(format!("value {i}"));
            let rev = c.put_record(&key, value.clone(), None).await.expect("put");
            acked.push(Acked::new(key, value, rev));
        }
        let last = acked.last().expect("acked").revision;
        cluster.wait_all_applied(last, CATCH_UP).await;

        // A flipped byte in the middle of F's log: valid records follow it, so it is
        // no torn write. Before salvage the node refused to start at all.
        cluster.stop(f);
        let log_dir = cluster.node(f).data_dir.join("raft/log");
        let seg = std::fs::read_dir(&log_dir)
            .expect("log dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .max()
            .expect("a segment");
        let mut d = std::fs::read(&seg).expect("read segment");
        // Inside a record two fifths into the segment's records (not in the zeros that
        // may follow them).
        let records = log_record_offsets(&d);
        let at = records[records.len() * 2 / 5] + 20;
        d[at] ^= 0x5a;
        std::fs::write(&seg, d).expect("write segment");
        cluster.restart(f).await;

        // F kept the verified prefix, set the rest aside, and voted only after the
        // leader brought it up to date (not on its peers' word alone).
        cluster.wait_voting(f, CATCH_UP).await;
        let log = std::fs::read_to_string(&cluster.node(f).log_path).expect("node log");
        assert!(
            log.contains("the raft log is damaged"),
            "no salvage in F's log"
        );
        assert!(
            log.contains("caught up with the leader; voting"),
            "F voted without being re-seeded"
        );
        let raft_dir = cluster.node(f).data_dir.join("raft");
        assert!(!raft_dir.join("RESEED").exists(), "marker not cleared");
        let aside = std::fs::read_dir(&raft_dir)
            .expect("raft dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("log-damaged-"))
            })
            .count();
        assert_eq!(aside, 1, "the damaged segment is kept for inspection");

        // F is a full voter again: the cluster survives losing the leader, and every
        // acknowledged write is on every node.
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
        cluster.kill9(leader);
        cluster
            .wait_for_new_leader(leader, Duration::from_secs(30))
            .await;
        let c = cluster.client();
        let rev = c
            .put_record("log/after", Bytes::from_static(b"after"), None)
            .await
            .expect("write after losing the leader");
        acked.push(Acked::new("log/after", Bytes::from_static(b"after"), rev));
        verify_acked(&mut cluster, &acked).await;
    })
    .await;
}

/// A backup that meets a damaged chunk on the leader (the node that builds it) backs up
/// the intact bytes, repaired from a peer, instead of failing; the leader's copy is
/// repaired too. Before this, the backup ended with DATA_LOSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_that_meets_bad_chunks_on_the_leader_backs_up_repaired_bytes() {
    deadline(TEST_TIMEOUT, async {
        let seed = test_seed("backup_repair");
        let mut cluster = Cluster::start(3).await;
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
        cluster
            .client()
            .create_bucket("repair")
            .await
            .expect("bucket");
        // 2.5 MiB: three chunks.
        let (rev, _) = put(&mut cluster, "blob", 2 * 1024 * 1024 + 512 * 1024, seed).await;
        cluster.wait_all_applied(rev, CATCH_UP).await;

        let dir = cluster.node(leader).data_dir.clone();
        let files = chunk_files(&dir);
        assert_eq!(files.len(), 3, "{files:?}");
        flip_bit(&files[0]);
        std::fs::remove_file(&files[2]).expect("delete chunk");

        let ep = cluster.node(leader).client_addr.clone();
        let file = cluster.root().join("repaired.tbk");
        let file_s = file.display().to_string();
        let out = trove(&ep, &["-o", "json", "backup", "save", &file_s], b"").await;
        assert_eq!(out.code, 0, "backup save failed: {}", out.stderr);
        assert_eq!(
            out.json()["node_id"].as_u64(),
            Some(leader),
            "{}",
            out.stdout
        );
        let out = trove("", &["-o", "json", "backup", "verify", &file_s], b"").await;
        assert_eq!(out.code, 0, "backup verify failed: {}", out.stderr);
        assert_eq!(out.json()["objects"].as_u64(), Some(1), "{}", out.stdout);
        for p in [&files[0], &files[2]] {
            assert!(verifies(p), "{} was not rewritten intact", p.display());
        }
        let r = cluster
            .client()
            .scrub_of(&ep, false)
            .await
            .expect("scrub report");
        assert_eq!((r.repaired, r.unrepairable), (2, 0), "{r:?}");
    })
    .await;
}

/// Flips one bit in every 4 KiB page of a node's sled file.
fn damage_sled(data_dir: &Path) {
    let db = data_dir.join("state/sled/db");
    let mut d = std::fs::read(&db).expect("read sled db");
    for i in (100..d.len()).step_by(4096) {
        d[i] ^= 0x10;
    }
    std::fs::write(&db, d).expect("write sled db");
}

/// A damaged sled state on a follower. sled takes damage in its file for a torn tail of
/// its own log and opens an earlier state (here: empty), raft meta included; the node
/// reinstalls its snapshot and re-applies its log, and serves exactly the others' data.
/// With its snapshot gone too, the state cannot reach the log's purge point: the node
/// refuses to start, says what to run, and the cluster keeps serving; doing what it says
/// brings the node back, re-seeded from its peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_state_store_is_rebuilt_from_the_snapshot_and_the_log() {
    deadline(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start_with(3, &["--snapshot-every-entries", "100"]).await;
        let f = follower(&mut cluster).await;
        let c = cluster.client();
        let mut acked = Vec::new();
        for i in 0..400u32 {
            let key = format!("state/{:03}", i % 150);
            let value = Bytes::from(format!("value {i}"));
            let rev = c.put_record(&key, value.clone(), None).await.expect("put");
            acked.retain(|a: &Acked| a.key != key);
            acked.push(Acked::new(key, value, rev));
        }
        let last = acked.iter().map(|a| a.revision).max().expect("acked");
        cluster.wait_all_applied(last, CATCH_UP).await;

        cluster.stop(f);
        let data_dir = cluster.node(f).data_dir.clone();
        damage_sled(&data_dir);
        cluster.restart(f).await;
        cluster.wait_voting(f, CATCH_UP).await;
        let log = std::fs::read_to_string(&cluster.node(f).log_path).expect("node log");
        assert!(
            log.contains("state store is behind the last snapshot; reinstalling it"),
            "the damaged state was not brought forward from the snapshot"
        );
        verify_acked(&mut cluster, &acked).await;

        // Now without a snapshot to rebuild from: a clear refusal, not a wrong state.
        cluster.stop(f);
        damage_sled(&data_dir);
        std::fs::remove_dir_all(data_dir.join("snapshots")).expect("remove snapshots");
        let (code, output) = cluster.start_expecting_exit(f, CATCH_UP).await;
        assert_ne!(code, Some(0), "{output}");
        assert!(
            output.contains("cannot be rebuilt") && output.contains(".damaged"),
            "the refusal does not say what to do: {output}"
        );
        let rev = cluster
            .client()
            .put_record("state/while-down", Bytes::from_static(b"served"), None)
            .await
            .expect("the others serve while the node refuses to start");
        acked.push(Acked::new(
            "state/while-down",
            Bytes::from_static(b"served"),
            rev,
        ));
        // What the message says: move the directory away and start the same command.
        let mut moved = data_dir.clone().into_os_string();
        moved.push(".damaged");
        std::fs::rename(&data_dir, &moved).expect("move the data directory away");
        cluster.restart(f).await;
        cluster.wait_voting(f, CATCH_UP).await;
        verify_acked(&mut cluster, &acked).await;
    })
    .await;
}
