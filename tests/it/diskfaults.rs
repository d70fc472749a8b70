//! Disk faults on real filesystems (issue 4, points 4 and 5): every node's data
//! directory lives on its own loop-mounted XFS image, so the tests can
//! - cut the power of a node: `xfs_io -x -c shutdown` stops the filesystem at once and
//!   discards everything that was not fsynced, like a power cut; the process is then
//!   killed (`kill -9`), the filesystem unmounted and mounted again (log recovery), and
//!   the node restarted;
//! - fill a node's disk: a ballast file takes all but a few MiB of free space; deleting it
//!   gives the space back;
//! - stall a node's disk: `fsfreeze -f` blocks every write until `fsfreeze -u`.
//!
//! The promise checked everywhere: every acknowledged write (records, and objects by
//! SHA-256) is readable afterwards, linearizably through the cluster and from the local
//! state of every node once it has caught up.
//!
//! What the server does, and these tests hold it to:
//! - power cut: the log is fdatasynced before anything is acknowledged, so a node that
//!   loses its page cache still holds every entry it acknowledged; on restart it cuts a
//!   torn tail and catches up from its peers. With every node cut at once, the durable
//!   copies are all there is (test (b) loses acknowledged writes if the log skips its
//!   fdatasync).
//! - disk full: the failed write poisons the log (no retry, no further acknowledgement),
//!   Raft stops and the process exits naming the file and saying the disk is full; the
//!   others keep serving. Restarted on a disk that is still full, the node waits for free
//!   space before opening anything (no crash loop), then starts and catches up.
//! - stalled disk: a node whose log write blocks acknowledges nothing. A stalled leader's
//!   Raft core is blocked in the log write, so it stops sending heartbeats and the others
//!   elect a new leader after an election timeout: a frozen disk costs one election, not
//!   the cluster's availability. When the disk resumes, the old leader finds a newer term,
//!   steps down and catches up.
//!
//! These tests need root, loop devices and xfsprogs. Without them they print a loud
//! `SKIPPED` line and pass, unless `TROVE_REQUIRE_ROOT_TESTS=1` is set (`scripts/test.sh`
//! sets it when run as root), in which case they fail. Mounts, freezes and loop devices
//! are always undone, also when a test panics (`Disks` drop guard).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use trove_client::{Client, ClientConfig, Consistency};
use trove_types::Sha256;
use trove_types::TroveError;

use crate::data::{DataGen, test_seed};
use crate::harness::{Cluster, LEADER_TIMEOUT, deadline, poll_until};

const TEST_TIMEOUT: Duration = Duration::from_secs(900);
const CATCH_UP: Duration = Duration::from_secs(180);
/// Size of each node's XFS image (a sparse file; XFS needs at least 300 MB).
const IMAGE_BYTES: u64 = 1 << 30;
/// Free space left next to the ballast when a disk is "full".
const BALLAST_LEAVES_BYTES: u64 = 2 << 20;
const BUCKET: &str = "disk";

// ---------------------------------------------------------------------------------------
// Prerequisites

/// Finds `tool` on the PATH or in the sbin directories (a root shell's PATH may lack them).
fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Why these tests cannot run here, if they cannot.
fn missing_prerequisite() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not running as root".into());
    }
    for tool in [
        "mkfs.xfs",
        "xfs_io",
        "losetup",
        "mount",
        "umount",
        "fsfreeze",
        "fallocate",
    ] {
        if which(tool).is_none() {
            return Some(format!(
                "{tool} not found (apt-get install xfsprogs util-linux)"
            ));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no loop device support (/dev/loop-control missing)".into());
    }
    None
}

/// Whether `test` can run. If not: fails when `TROVE_REQUIRE_ROOT_TESTS=1`, else prints a
/// loud SKIPPED banner.
fn can_run(test: &str) -> bool {
    let Some(why) = missing_prerequisite() else {
        return true;
    };
    if std::env::var("TROVE_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("{test}: TROVE_REQUIRE_ROOT_TESTS=1 but this test cannot run: {why}");
    }
    let bar = "!".repeat(78);
    eprintln!(
        "\n{bar}\nSKIPPED: needs root + xfsprogs: diskfaults::{test} did not run ({why}).\n\
         Run as root with xfsprogs installed; set TROVE_REQUIRE_ROOT_TESTS=1 to fail instead.\n{bar}\n"
    );
    false
}

/// Runs a command, returning its stdout, or a message with its stderr.
fn run(tool: &str, args: &[&str]) -> Result<String, String> {
    let bin = which(tool).ok_or_else(|| format!("{tool} not found"))?;
    let out = Command::new(&bin)
        .args(args)
        .output()
        .map_err(|e| format!("{tool}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{tool} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(tool: &str, args: &[&str]) -> String {
    run(tool, args).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------
// One XFS image per node

struct Disk {
    mnt: PathBuf,
    dev: String,
    mounted: bool,
    frozen: bool,
}

/// A loop-mounted XFS image per node; unmounts, thaws and detaches everything on drop.
struct Disks {
    dir: tempfile::TempDir,
    disks: BTreeMap<u64, Disk>,
}

impl Disks {
    fn new(ids: &[u64]) -> Disks {
        let dir = tempfile::Builder::new()
            .prefix("trove-disks-")
            .tempdir()
            .expect("tempdir");
        let mut disks = Disks {
            dir,
            disks: BTreeMap::new(),
        };
        for &id in ids {
            let image = disks.dir.path().join(format!("node-{id}.xfs"));
            std::fs::File::create(&image)
                .and_then(|f| f.set_len(IMAGE_BYTES))
                .expect("create image");
            let image = image.display().to_string();
            must("mkfs.xfs", &["-q", &image]);
            let mnt = disks.dir.path().join(format!("mnt-{id}"));
            std::fs::create_dir(&mnt).expect("mount point");
            let dev = must("losetup", &["--find", "--show", &image])
                .trim()
                .to_string();
            disks.disks.insert(
                id,
                Disk {
                    mnt,
                    dev,
                    mounted: false,
                    frozen: false,
                },
            );
            disks.mount(id);
        }
        eprintln!(
            "disks: XFS images for nodes {ids:?} under {}",
            disks.dir.path().display()
        );
        disks
    }

    fn disk(&mut self, id: u64) -> &mut Disk {
        self.disks.get_mut(&id).expect("no disk for node")
    }

    fn mnt(&self, id: u64) -> String {
        self.disks[&id].mnt.display().to_string()
    }

    /// Each node's data directory: a subdirectory of its mount point.
    fn data_dirs(&self) -> BTreeMap<u64, PathBuf> {
        self.disks
            .iter()
            .map(|(id, d)| (*id, d.mnt.join("data")))
            .collect()
    }

    fn mount(&mut self, id: u64) {
        let (dev, mnt) = (self.disks[&id].dev.clone(), self.mnt(id));
        // A fixed, small speculative preallocation: XFS otherwise reserves room beyond the
        // end of growing files (the log), and a "full" disk would still take megabytes.
        must("mount", &["-t", "xfs", "-o", "allocsize=64k", &dev, &mnt]);
        self.disk(id).mounted = true;
    }

    fn umount(&mut self, id: u64) {
        must("umount", &[&self.mnt(id)]);
        self.disk(id).mounted = false;
    }

    /// Power cut: the filesystem stops at once; whatever was not fsynced is gone.
    fn power_cut(&mut self, id: u64) {
        eprintln!("disks: power cut of node {id} (xfs shutdown)");
        must("xfs_io", &["-x", "-c", "shutdown", &self.mnt(id)]);
    }

    /// Unmounts and mounts again after a power cut (XFS replays its log).
    fn remount(&mut self, id: u64) {
        self.umount(id);
        self.mount(id);
    }

    fn freeze(&mut self, id: u64) {
        eprintln!("disks: freeze node {id}'s filesystem");
        must("fsfreeze", &["-f", &self.mnt(id)]);
        self.disk(id).frozen = true;
    }

    fn thaw(&mut self, id: u64) {
        eprintln!("disks: thaw node {id}'s filesystem");
        must("fsfreeze", &["-u", &self.mnt(id)]);
        self.disk(id).frozen = false;
    }

    fn free_bytes(&self, id: u64) -> u64 {
        let out = must("df", &["-B1", "--output=avail", &self.mnt(id)]);
        out.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("cannot parse df output {out:?}"))
    }

    fn ballast(&self, id: u64) -> PathBuf {
        self.disks[&id].mnt.join("ballast")
    }

    /// Fills node `id`'s disk with a ballast file until only a few MiB are free.
    fn fill(&self, id: u64) {
        let free = self.free_bytes(id);
        let size = free.saturating_sub(BALLAST_LEAVES_BYTES);
        let path = self.ballast(id).display().to_string();
        must("fallocate", &["-l", &size.to_string(), &path]);
        eprintln!(
            "disks: node {id}'s disk filled ({size} byte ballast, {} bytes free)",
            self.free_bytes(id)
        );
    }

    /// Deletes the ballast: the space returns.
    fn unfill(&self, id: u64) {
        std::fs::remove_file(self.ballast(id)).expect("remove ballast");
        eprintln!(
            "disks: node {id}'s ballast removed ({} bytes free)",
            self.free_bytes(id)
        );
    }
}

impl Drop for Disks {
    fn drop(&mut self) {
        for (id, d) in &mut self.disks {
            if d.frozen {
                let mnt = d.mnt.display().to_string();
                if let Err(e) = run("fsfreeze", &["-u", &mnt]) {
                    eprintln!("disks: cleanup of node {id}: {e}");
                }
            }
            if d.mounted {
                let mnt = d.mnt.display().to_string();
                if run("umount", &[&mnt]).is_err()
                    && let Err(e) = run("umount", &["-l", &mnt])
                {
                    eprintln!("disks: cleanup of node {id}: {e}");
                }
            }
            if let Err(e) = run("losetup", &["-d", &d.dev]) {
                eprintln!("disks: cleanup of node {id}: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Load: a record writer and an object writer that remember what was acknowledged

#[derive(Clone, Debug)]
struct AckedRecord {
    key: String,
    value: Bytes,
    revision: u64,
}

#[derive(Clone, Debug)]
struct AckedBlob {
    key: String,
    size: u64,
    sha256: [u8; 32],
    revision: u64,
}

#[derive(Default)]
struct Acked {
    records: Vec<AckedRecord>,
    blobs: Vec<AckedBlob>,
    failed: u64,
}

/// Sequential writers (records; objects of 100 KiB to 2.5 MiB) that record every
/// acknowledged write. Failed writes have an unknown outcome and are not verified.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acked>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    blob_pause: Arc<AtomicBool>,
}

/// A client that waits out elections and restarts: short attempts, a long retry budget.
fn patient_client(cluster: &mut Cluster) -> Client {
    let cfg = ClientConfig {
        request_timeout: Duration::from_secs(8),
        retry_budget: Duration::from_secs(90),
        ..ClientConfig::new(cluster.endpoints())
    };
    Client::new(cfg).expect("client")
}

fn blob_size(seed: u64, i: u64) -> u64 {
    let r = seed.wrapping_add(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    100 * 1024 + r % (2_500 * 1024)
}

impl Load {
    /// Starts `record_writers` concurrent record writers and one object writer.
    fn start(client: Client, seed: u64, record_writers: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let blob_pause = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Acked::default()));
        let failures = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for w in 0..record_writers {
            let (stop, acked, client, failures) = (
                stop.clone(),
                acked.clone(),
                client.clone(),
                failures.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("rec/{w}/{i:06}");
                    let value = Bytes::from(format!("seed {seed} writer {w} record {i}"));
                    match client.put_record(&key, value.clone(), None).await {
                        Ok(revision) => acked.lock().expect("lock").records.push(AckedRecord {
                            key,
                            value,
                            revision,
                        }),
                        Err(e) => {
                            acked.lock().expect("lock").failed += 1;
                            if failures.fetch_add(1, Ordering::Relaxed) < 10 {
                                eprintln!("load: {key}: {e} (outcome unknown; not verified)");
                            }
                        }
                    }
                    i += 1;
                }
            }));
        }
        let blobs = {
            let (stop, acked, pause) = (stop.clone(), acked.clone(), blob_pause.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if pause.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    let key = format!("blob/{i:04}");
                    let src = DataGen::new(seed ^ (i + 1), blob_size(seed, i));
                    let data = Bytes::from(src.bytes());
                    let sha: [u8; 32] = Sha256::digest(&data);
                    match client.put_object_bytes(BUCKET, &key, data).await {
                        Ok(info) => {
                            assert_eq!(info.sha256, sha, "{key}: server's SHA-256");
                            acked.lock().expect("lock").blobs.push(AckedBlob {
                                key,
                                size: src.size,
                                sha256: sha,
                                revision: info.revision,
                            });
                        }
                        Err(e) => {
                            acked.lock().expect("lock").failed += 1;
                            if failures.fetch_add(1, Ordering::Relaxed) < 10 {
                                eprintln!("load: {key}: {e} (outcome unknown; not verified)");
                            }
                        }
                    }
                    i += 1;
                }
            })
        };
        tasks.push(blobs);
        Load {
            stop,
            acked,
            tasks,
            blob_pause,
        }
    }

    fn counts(&self) -> (usize, usize) {
        let a = self.acked.lock().expect("lock");
        (a.records.len(), a.blobs.len())
    }

    /// Waits until at least `records` records and `blobs` objects were acknowledged.
    async fn wait(&self, records: usize, blobs: usize, timeout: Duration) {
        let what = format!("{records} acknowledged records and {blobs} objects");
        poll_until(timeout, &what, async || {
            let (r, b) = self.counts();
            if r >= records && b >= blobs {
                Ok(())
            } else {
                Err(format!("{r} records, {b} objects acknowledged"))
            }
        })
        .await
    }

    /// Waits for `records` and `blobs` more acknowledgements than now.
    async fn wait_more(&self, records: usize, blobs: usize, timeout: Duration) {
        let (r, b) = self.counts();
        self.wait(r + records, b + blobs, timeout).await;
    }

    /// Stops the writers at once (a write in flight is abandoned: outcome unknown).
    async fn finish(self) -> Acked {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.abort();
            if let Err(e) = t.await
                && !e.is_cancelled()
            {
                panic!("load task: {e}");
            }
        }
        let a = std::mem::take(&mut *self.acked.lock().expect("lock"));
        eprintln!(
            "load: {} records and {} objects acknowledged, {} writes failed (unknown outcome)",
            a.records.len(),
            a.blobs.len(),
            a.failed
        );
        a
    }
}

// ---------------------------------------------------------------------------------------
// Verification

async fn object_sha(
    c: &Client,
    key: &str,
    consistency: Consistency,
) -> Result<(u64, [u8; 32]), TroveError> {
    let mut r = c.get_object(BUCKET, key, None, consistency).await?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = r.next_chunk().await? {
        n += chunk.len() as u64;
        h.update(&chunk);
    }
    Ok((n, h.finalize()))
}

/// Every acknowledged write is readable linearizably through the cluster, and from the
/// local state of every running node once it has applied the newest of them.
async fn verify_everywhere(cluster: &mut Cluster, acked: &Acked) {
    assert!(!acked.records.is_empty(), "no record was acknowledged");
    let c = patient_client(cluster);
    // Count every loss before failing: how much was lost says what went wrong.
    let mut lost = Vec::new();
    for a in &acked.records {
        match c.get_record(&a.key, Consistency::Linearizable).await {
            Ok(r) if (&r.value, r.revision) == (&a.value, a.revision) => {}
            Ok(r) => lost.push(format!(
                "{}: read revision {}, acknowledged {a:?}",
                a.key, r.revision
            )),
            Err(e) => lost.push(format!("{} (revision {}): {e}", a.key, a.revision)),
        }
    }
    for b in &acked.blobs {
        match object_sha(&c, &b.key, Consistency::Linearizable).await {
            Ok(got) if got == (b.size, b.sha256) => {}
            Ok(got) => lost.push(format!(
                "object {}: read {got:?}, acknowledged {b:?}",
                b.key
            )),
            Err(e) => lost.push(format!("object {} (revision {}): {e}", b.key, b.revision)),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost or wrong: {lost:#?}",
        lost.len(),
        acked.records.len() + acked.blobs.len()
    );
    let newest = acked
        .records
        .iter()
        .map(|r| r.revision)
        .chain(acked.blobs.iter().map(|b| b.revision))
        .max()
        .expect("non-empty");
    for id in cluster.live_ids() {
        cluster.wait_applied(id, newest, CATCH_UP).await;
        let local = cluster.client_for(id);
        for a in &acked.records {
            let r = local
                .get_record(&a.key, Consistency::Local)
                .await
                .unwrap_or_else(|e| panic!("node {id}: acknowledged record {a:?} missing: {e}"));
            assert_eq!(
                (&r.value, r.revision),
                (&a.value, a.revision),
                "node {id}: {}",
                a.key
            );
        }
        for b in &acked.blobs {
            let got = object_sha(&local, &b.key, Consistency::Local)
                .await
                .unwrap_or_else(|e| panic!("node {id}: acknowledged object {b:?} missing: {e}"));
            assert_eq!(got, (b.size, b.sha256), "node {id}: object {}", b.key);
        }
    }
    eprintln!(
        "verified {} records and {} objects on nodes {:?} (newest revision {newest})",
        acked.records.len(),
        acked.blobs.len(),
        cluster.live_ids()
    );
}

/// The leader that every node in `ids` names (nodes outside `ids` may be stalled).
async fn agreed_among(cluster: &mut Cluster, ids: &[u64]) -> Result<u64, String> {
    let mut seen = Vec::new();
    for id in ids {
        let st = cluster.status_of(*id).await?;
        seen.push((*id, st.leader, st.term));
    }
    match seen[0] {
        (_, Some(l), term) if seen.iter().all(|s| s.1 == Some(l) && s.2 == term) => Ok(l),
        _ => Err(format!("(node, leader, term) = {seen:?}")),
    }
}

/// Node `id`'s applied index.
async fn applied_of(cluster: &mut Cluster, id: u64) -> u64 {
    cluster
        .status_of(id)
        .await
        .unwrap_or_else(|e| panic!("status: {e}"))
        .applied_index
}

async fn wait_exited(cluster: &mut Cluster, id: u64, timeout: Duration) {
    poll_until(timeout, &format!("node {id} to exit"), async || {
        if cluster.live_ids().contains(&id) {
            Err("still running".into())
        } else {
            Ok(())
        }
    })
    .await
}

fn log_of(cluster: &Cluster, id: u64) -> String {
    String::from_utf8_lossy(&std::fs::read(&cluster.node(id).log_path).unwrap_or_default())
        .into_owned()
}

// ---------------------------------------------------------------------------------------
// (a) power cut of the leader

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_of_the_leader_loses_nothing_acknowledged() {
    if !can_run("power_cut_of_the_leader_loses_nothing_acknowledged") {
        return;
    }
    let seed = test_seed("power_cut_leader");
    let mut disks = Disks::new(&[1, 2, 3]);
    let mut cluster = Cluster::start_on(3, &[], disks.data_dirs()).await;
    deadline(TEST_TIMEOUT, async {
        let c = patient_client(&mut cluster);
        c.create_bucket(BUCKET).await.expect("bucket");
        let load = Load::start(c, seed, 2);
        load.wait(150, 3, Duration::from_secs(180)).await;

        let old = cluster.wait_for_leader(LEADER_TIMEOUT).await;
        let cut_at = Instant::now();
        disks.power_cut(old);
        cluster.kill9(old);
        let new = cluster.wait_for_new_leader(old, LEADER_TIMEOUT).await;
        eprintln!(
            "node {new} leads {:.2?} after node {old}'s power cut",
            cut_at.elapsed()
        );
        // The survivors keep acknowledging writes.
        load.wait_more(100, 2, Duration::from_secs(180)).await;
        let acked = load.finish().await;

        disks.remount(old);
        cluster.restart(old).await;
        cluster.wait_for_leader(LEADER_TIMEOUT).await;
        verify_everywhere(&mut cluster, &acked).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// (b) power cut of every node at once

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_of_every_node_loses_nothing_acknowledged() {
    if !can_run("power_cut_of_every_node_loses_nothing_acknowledged") {
        return;
    }
    let seed = test_seed("power_cut_all");
    let mut disks = Disks::new(&[1, 2, 3]);
    let mut cluster = Cluster::start_on(3, &[], disks.data_dirs()).await;
    deadline(TEST_TIMEOUT, async {
        let c = patient_client(&mut cluster);
        c.create_bucket(BUCKET).await.expect("bucket");
        let load = Load::start(c, seed, 8);
        load.wait(600, 4, Duration::from_secs(180)).await;

        // All three filesystems stop while writes are in flight, then the processes die.
        for id in cluster.all_ids() {
            disks.power_cut(id);
        }
        cluster.kill9_all();
        let acked = load.finish().await;
        for id in cluster.all_ids() {
            disks.remount(id);
        }
        for id in cluster.all_ids() {
            cluster.restart(id).await;
        }
        cluster.wait_for_leader(LEADER_TIMEOUT).await;
        verify_everywhere(&mut cluster, &acked).await;

        // The cluster takes new writes at later revisions.
        let c = patient_client(&mut cluster);
        let rev = c
            .put_record("after", Bytes::from_static(b"x"), None)
            .await
            .expect("write after the power cut");
        let newest = acked.records.iter().map(|r| r.revision).max().unwrap_or(0);
        assert!(
            rev > newest,
            "revision {rev} after restart must exceed {newest}"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// (c) disk full

/// A blob put while `full` (the leader) cannot write: it either succeeds (through another
/// leader) or fails with a retryable or resource status; either way no partial object is
/// ever visible.
async fn put_while_leader_full(c: &Client, seed: u64, attempt: u64) -> Option<AckedBlob> {
    let key = &format!("full-leader/{attempt}");
    let src = DataGen::new(seed ^ 0xF011 ^ attempt, 6 * 1024 * 1024 + 17);
    let data = Bytes::from(src.bytes());
    let sha: [u8; 32] = Sha256::digest(&data);
    let res = c.put_object_bytes(BUCKET, key, data).await;
    let out = match res {
        Ok(info) => {
            eprintln!(
                "put while the leader's disk is full: succeeded at revision {}",
                info.revision
            );
            assert_eq!(info.sha256, sha);
            Some(AckedBlob {
                key: key.into(),
                size: src.size,
                sha256: sha,
                revision: info.revision,
            })
        }
        Err(e) => {
            eprintln!("put while the leader's disk is full: failed: {e}");
            assert!(
                matches!(
                    e,
                    TroveError::ResourceExhausted(_)
                        | TroveError::Unavailable { .. }
                        | TroveError::DeadlineExceeded(_)
                ),
                "a put that could not be made durable must fail with a retryable or resource status, got {e:?}"
            );
            None
        }
    };
    // Whatever happened, the object is either absent or complete.
    match object_sha(c, key, Consistency::Linearizable).await {
        Ok(got) => assert_eq!(got, (src.size, sha), "a partial object became visible"),
        Err(TroveError::NotFound(_)) => assert!(out.is_none(), "an acknowledged object is missing"),
        Err(e) => panic!("reading {key}: {e}"),
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_on_one_node_then_space_returns() {
    if !can_run("disk_full_on_one_node_then_space_returns") {
        return;
    }
    let seed = test_seed("disk_full");
    let disks = Disks::new(&[1, 2, 3]);
    let mut cluster = Cluster::start_on(3, &[], disks.data_dirs()).await;
    deadline(TEST_TIMEOUT, async {
        let c = patient_client(&mut cluster);
        c.create_bucket(BUCKET).await.expect("bucket");
        let load = Load::start(c.clone(), seed, 1);
        load.wait(50, 2, Duration::from_secs(180)).await;

        // 1. A follower's disk fills up: it stops (it cannot persist, so it must not
        //    acknowledge), and the other two keep serving.
        let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
        let full = *cluster
            .all_ids()
            .iter()
            .find(|id| **id != leader)
            .expect("follower");
        disks.fill(full);
        wait_exited(&mut cluster, full, Duration::from_secs(240)).await;
        let log = log_of(&cluster, full);
        assert!(
            log.contains("No space left on device"),
            "node {full} stopped without saying that its disk is full; log tail:\n{}",
            cluster.node(full).log_tail(30)
        );
        eprintln!("node {full} stopped on a full disk");
        load.wait_more(50, 3, Duration::from_secs(180)).await;

        // 2. Restarted while the disk is still full (as a supervisor would), it waits for
        //    space instead of crash-looping.
        cluster.restart(full).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            cluster.live_ids().contains(&full),
            "node {full} exited again on a full disk; log tail:\n{}",
            cluster.node(full).log_tail(30)
        );
        assert!(
            log_of(&cluster, full).contains("waiting for free space"),
            "node {full} does not say that it waits for space; log tail:\n{}",
            cluster.node(full).log_tail(30)
        );

        // 3. Space returns: the node starts and catches up.
        disks.unfill(full);
        load.wait_more(20, 1, Duration::from_secs(180)).await;
        let now_leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
        let target = applied_of(&mut cluster, now_leader).await;
        cluster.wait_applied(full, target, CATCH_UP).await;
        eprintln!("node {full} caught up to index {target} after its space returned");

        // 4. The leader's disk fills up; a blob put then fails cleanly or succeeds through
        //    another leader, and nothing partial is ever visible.
        load.blob_pause.store(true, Ordering::Relaxed);
        let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
        disks.fill(leader);
        let mut extra = Vec::new();
        for attempt in 0.. {
            extra.extend(put_while_leader_full(&c, seed, attempt).await);
            let stopped = async {
                while cluster.live_ids().contains(&leader) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            if tokio::time::timeout(Duration::from_secs(10), stopped)
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                attempt < 4,
                "leader {leader} still runs after {attempt} object puts on a full disk"
            );
        }
        load.blob_pause.store(false, Ordering::Relaxed);
        load.wait_more(50, 1, Duration::from_secs(240)).await;
        let mut acked = load.finish().await;
        acked.blobs.extend(extra);

        // The full leader stopped (it could not write the object's chunks to its log),
        // waits for space when restarted, and comes back once it has space again.
        assert!(
            log_of(&cluster, leader).contains("No space left on device"),
            "node {leader} stopped without saying that its disk is full"
        );
        cluster.restart(leader).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            cluster.live_ids().contains(&leader),
            "node {leader} exited again on a full disk"
        );
        disks.unfill(leader);
        cluster.wait_for_leader(LEADER_TIMEOUT).await;
        verify_everywhere(&mut cluster, &acked).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// (d) stalled disk

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_disk_on_a_follower_and_on_the_leader() {
    if !can_run("stalled_disk_on_a_follower_and_on_the_leader") {
        return;
    }
    let seed = test_seed("stalled_disk");
    let mut disks = Disks::new(&[1, 2, 3]);
    let mut cluster = Cluster::start_on(3, &[], disks.data_dirs()).await;
    deadline(TEST_TIMEOUT, async {
        let c = patient_client(&mut cluster);
        c.create_bucket(BUCKET).await.expect("bucket");
        let load = Load::start(c, seed, 2);
        load.wait(50, 2, Duration::from_secs(180)).await;
        let all = cluster.all_ids();

        // A follower's disk stalls: the other two keep serving.
        let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
        let stalled = *all.iter().find(|id| **id != leader).expect("follower");
        disks.freeze(stalled);
        load.wait_more(100, 2, Duration::from_secs(120)).await;
        disks.thaw(stalled);
        load.wait_more(20, 0, Duration::from_secs(120)).await;
        let target = applied_of(&mut cluster, leader).await;
        cluster.wait_applied(stalled, target, CATCH_UP).await;
        eprintln!("follower {stalled} caught up after its disk resumed");

        // The leader's disk stalls: it cannot persist, so it must lose leadership to a
        // node that can; the cluster keeps serving.
        let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
        let others: Vec<u64> = all.iter().copied().filter(|id| *id != leader).collect();
        let frozen_at = Instant::now();
        disks.freeze(leader);
        let new = poll_until(
            LEADER_TIMEOUT,
            "a new leader among the others",
            async || match agreed_among(&mut cluster, &others).await? {
                l if l != leader => Ok(l),
                l => Err(format!("still {l}")),
            },
        )
        .await;
        eprintln!(
            "node {new} leads {:.2?} after node {leader}'s disk stalled",
            frozen_at.elapsed()
        );
        load.wait_more(100, 2, Duration::from_secs(120)).await;
        disks.thaw(leader);
        let acked = load.finish().await;
        cluster.wait_for_leader(LEADER_TIMEOUT).await;
        verify_everywhere(&mut cluster, &acked).await;
    })
    .await;
}
