//! Off-cluster backups end to end, with real processes and the real `trove` binary:
//! records and objects (one of several chunks) are written, `trove backup save` runs
//! while a writer keeps writing, the file is verified offline (and a copy with one
//! flipped byte, and a cut copy, are refused), every node's data directory is destroyed,
//! three members of a new cluster are restored from the file and started, and the new
//! cluster serves exactly the backed-up data: everything acknowledged before the backup
//! began, with the same values, revisions and SHA-256s, nothing acknowledged after the
//! backup's applied index, and a new cluster id. It then accepts new writes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use trove_client::{Client, Consistency, TroveError};
use trove_types::Sha256;

use crate::acked::Acked;
use crate::data::{DataGen, test_seed};
use crate::harness::{Cluster, deadline, poll_until, trove_bin};

const TEST_TIMEOUT: Duration = Duration::from_secs(600);

/// What a `trove` command did.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// `trove <args>` with `TROVE_ENDPOINTS` set and the caller's `TROVE_*` removed.
fn trove_command(endpoints: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(trove_bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TROVE_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .env("TROVE_ENDPOINTS", endpoints)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs `trove <args>` (see [`trove_command`]) to completion.
pub async fn run_trove(endpoints: &str, args: &[&str]) -> Out {
    let out = trove_command(endpoints, args)
        .output()
        .await
        .expect("run trove");
    let out = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "$ trove {} -> exit {}\n{}{}",
        args.join(" "),
        out.code,
        out.stdout,
        out.stderr
    );
    out
}

fn json(out: &Out) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

/// Writes unique keys one after another until stopped, recording every acknowledgement.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(client: Client) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (stop, acked) = (stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("during/{i:06}");
                    let value = Bytes::from(format!("written while backing up: {i}"));
                    if let Ok(revision) = client.put_record(&key, value.clone(), None).await {
                        acked.lock().expect("lock").push(Acked {
                            key,
                            value,
                            revision,
                        });
                    }
                    i += 1;
                }
            })
        };
        Writer { stop, acked, task }
    }

    fn acked(&self) -> Vec<Acked> {
        self.acked.lock().expect("lock").clone()
    }

    async fn stop(self) -> Vec<Acked> {
        self.stop.store(true, Ordering::Relaxed);
        let acked = self.acked.clone();
        self.task.await.expect("writer task");
        acked.lock().expect("lock").clone()
    }
}

fn flip_byte(from: &Path, to: &Path, at: usize) {
    let mut bytes = std::fs::read(from).expect("read backup");
    bytes[at] ^= 0x10;
    std::fs::write(to, bytes).expect("write copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_writing_then_restore_as_a_new_cluster() {
    deadline(TEST_TIMEOUT, async {
        let seed = test_seed("backup_while_writing_then_restore_as_a_new_cluster");
        let mut old = Cluster::start(3).await;
        let old_id = old.status_of(1).await.expect("status").cluster_id;
        let c = old.client();

        // Data before the backup: records (one overwritten, one deleted), a bucket,
        // objects of several sizes (one of four chunks, one empty).
        let mut records: BTreeMap<String, Acked> = BTreeMap::new();
        for i in 0..40u32 {
            let key = format!("before/{i:03}");
            let value = Bytes::from(format!("seed {seed} record {i}"));
            let revision = c.put_record(&key, value.clone(), None).await.expect("put");
            records.insert(
                key.clone(),
                Acked {
                    key,
                    value,
                    revision,
                },
            );
        }
        let value = Bytes::from_static(b"overwritten");
        let revision = c
            .put_record("before/000", value.clone(), None)
            .await
            .expect("overwrite");
        records.insert(
            "before/000".into(),
            Acked {
                key: "before/000".into(),
                value,
                revision,
            },
        );
        c.delete_record("before/001", None).await.expect("delete");
        records.remove("before/001");
        c.create_bucket("vault").await.expect("bucket");
        let mut objects = BTreeMap::new();
        for (key, size) in [
            ("big", 3 * 1024 * 1024 + 4321),
            ("small", 100),
            ("empty", 0),
        ] {
            let data = Bytes::from(DataGen::new(seed ^ size, size).bytes());
            let info = c
                .put_object_bytes("vault", key, data.clone())
                .await
                .expect("put object");
            assert_eq!(info.sha256[..], Sha256::digest(&data)[..]);
            objects.insert(key.to_string(), info);
        }

        // The backup runs while a writer keeps writing.
        let writer = Writer::start(old.client());
        poll_until(
            Duration::from_secs(60),
            "the writer's first acknowledgements",
            async || {
                if writer.acked().len() >= 5 {
                    Ok(())
                } else {
                    Err("fewer than 5".into())
                }
            },
        )
        .await;
        let acked_before_backup = writer.acked();
        let endpoints = old.endpoints().join(",");
        let file = old.root().join("cluster.tbk");
        let file_s = file.display().to_string();
        // `backup save -` streams to stdout. Read its beginning, then stop reading: the
        // pipe fills, and the leader's bounded stream holds the backup open, while the
        // writer must keep being acknowledged.
        let mut save = trove_command(&endpoints, &["-o", "json", "backup", "save", "-"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn backup save");
        let mut stdout = save.stdout.take().expect("stdout");
        let mut backup = vec![0u8; 256 * 1024];
        stdout
            .read_exact(&mut backup)
            .await
            .expect("the backup's first bytes");
        let held_at = writer.acked().len();
        poll_until(
            Duration::from_secs(60),
            "writes acknowledged while a backup is in flight",
            async || {
                let n = writer.acked().len() - held_at;
                if n >= 10 {
                    Ok(())
                } else {
                    Err(format!("{n} so far"))
                }
            },
        )
        .await;
        stdout
            .read_to_end(&mut backup)
            .await
            .expect("the rest of the backup");
        let saved = save.wait_with_output().await.expect("backup save");
        let stderr = String::from_utf8_lossy(&saved.stderr);
        eprintln!("$ trove backup save - -> {:?}\n{stderr}", saved.status);
        assert!(saved.status.success(), "backup save failed: {stderr}");
        std::fs::write(&file, &backup).expect("write the backup file");
        let saved: serde_json::Value = serde_json::from_str(stderr.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("no JSON summary on stderr ({e}): {stderr}"));
        let applied = saved["applied_index"].as_u64().expect("applied_index");
        assert_eq!(saved["cluster_id"], old_id.as_str());
        assert_eq!(saved["file_bytes"].as_u64(), Some(backup.len() as u64));
        let during = writer.stop().await;

        // Saving into a file (temp name, fsync, rename) works too, through a follower
        // (which forwards the stream from the leader).
        let leader = old.wait_for_leader(Duration::from_secs(30)).await;
        let follower = old
            .all_ids()
            .into_iter()
            .find(|i| *i != leader)
            .expect("follower");
        let via_follower = old.node(follower).client_addr.clone();
        let second = old.root().join("second.tbk");
        let out = run_trove(
            &via_follower,
            &[
                "-o",
                "json",
                "backup",
                "save",
                &second.display().to_string(),
            ],
        )
        .await;
        assert_eq!(out.code, 0, "backup save FILE failed: {}", out.stderr);
        assert_eq!(
            json(&out)["node_id"].as_u64(),
            Some(leader),
            "built by the leader"
        );
        let out = run_trove("", &["backup", "verify", &second.display().to_string()]).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        let leftovers: Vec<_> = std::fs::read_dir(old.root())
            .expect("read root")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");

        // Offline verification; damaged copies are refused.
        let verified = run_trove("", &["-o", "json", "backup", "verify", &file_s]).await;
        assert_eq!(verified.code, 0, "verify failed: {}", verified.stderr);
        let verified = json(&verified);
        assert_eq!(verified["ok"], true);
        assert_eq!(verified["applied_index"].as_u64(), Some(applied));
        assert_eq!(verified["objects"].as_u64(), Some(3));
        let len = std::fs::metadata(&file).expect("backup file").len() as usize;
        let damaged = old.root().join("damaged.tbk");
        for at in [len / 2, len / 3, 40, len - 5] {
            flip_byte(&file, &damaged, at);
            let out = run_trove("", &["backup", "verify", &damaged.display().to_string()]).await;
            assert_eq!(
                out.code, 1,
                "a byte flipped at {at} of {len} was not detected"
            );
            assert!(out.stderr.contains("NOT a valid backup"), "{}", out.stderr);
        }
        let bytes = std::fs::read(&file).expect("read");
        std::fs::write(&damaged, &bytes[..len - 100]).expect("cut copy");
        let out = run_trove("", &["backup", "verify", &damaged.display().to_string()]).await;
        assert_eq!(out.code, 1, "a cut backup was not detected");

        // Every node's data is lost.
        old.kill9_all();
        for id in old.all_ids() {
            std::fs::remove_dir_all(&old.node(id).data_dir).expect("destroy data dir");
        }

        // Three members of a new cluster, restored from the file.
        let mut new = Cluster::start_prepared(3, async |initial, dirs| {
            for (id, dir) in dirs {
                let out = run_trove(
                    "",
                    &[
                        "-o",
                        "json",
                        "backup",
                        "restore",
                        &file_s,
                        "--id",
                        &id.to_string(),
                        "--data-dir",
                        &dir.display().to_string(),
                        "--initial-cluster",
                        &initial,
                    ],
                )
                .await;
                assert_eq!(out.code, 0, "restore of node {id} failed: {}", out.stderr);
                assert_eq!(json(&out)["applied_index"].as_u64(), Some(applied));
                // A restore never overwrites.
                let again = run_trove(
                    "",
                    &[
                        "backup",
                        "restore",
                        &file_s,
                        "--id",
                        &id.to_string(),
                        "--data-dir",
                        &dir.display().to_string(),
                        "--initial-cluster",
                        &initial,
                    ],
                )
                .await;
                assert_eq!(again.code, 1, "restoring into a non-empty directory");
                assert!(again.stderr.contains("not empty"), "{}", again.stderr);
            }
        })
        .await;
        let new_id = new.status_of(1).await.expect("status").cluster_id;
        assert_ne!(new_id, old_id, "a restored cluster gets a new id");
        let c = new.client();

        // Exactly the backed-up data.
        for a in records.values() {
            let r = c
                .get_record(&a.key, Consistency::Linearizable)
                .await
                .expect("restored record");
            assert_eq!((&r.value, r.revision), (&a.value, a.revision), "{}", a.key);
        }
        assert!(matches!(
            c.get_record("before/001", Consistency::Linearizable).await,
            Err(TroveError::NotFound(_))
        ));
        for a in &acked_before_backup {
            assert!(
                a.revision <= applied,
                "{} was acknowledged before the backup began",
                a.key
            );
        }
        let (mut kept, mut absent) = (0, 0);
        for a in &during {
            match c.get_record(&a.key, Consistency::Linearizable).await {
                Ok(r) if a.revision <= applied => {
                    assert_eq!((&r.value, r.revision), (&a.value, a.revision), "{}", a.key);
                    kept += 1;
                }
                Err(TroveError::NotFound(_)) if a.revision > applied => absent += 1,
                other => panic!(
                    "{} (revision {}, backup at {applied}): {other:?}",
                    a.key, a.revision
                ),
            }
        }
        eprintln!("writes during the backup: {kept} in it, {absent} after it");
        assert!(absent > 0, "the writer kept writing after the backup");
        let listed = c.list_records("", "", 10_000).await.expect("list");
        assert!(listed.next.is_none());
        assert_eq!(
            listed.records.len() as u64,
            saved["records"].as_u64().expect("records")
        );
        assert!(listed.records.iter().all(|r| r.revision <= applied));
        for (key, info) in &objects {
            let (got, data) = c
                .get_object_bytes("vault", key)
                .await
                .expect("restored object");
            assert_eq!(got.sha256, info.sha256, "{key}");
            assert_eq!(
                (got.size, got.revision),
                (info.size, info.revision),
                "{key}"
            );
            assert_eq!(Sha256::digest(&data)[..], info.sha256[..], "{key} bytes");
        }

        // And it is a working cluster.
        let rev = c
            .put_record("after/restore", Bytes::from_static(b"new"), None)
            .await
            .expect("write");
        assert!(rev > applied, "revisions continue after the backup's index");
        let data = Bytes::from(DataGen::new(seed, 2 * 1024 * 1024 + 7).bytes());
        let info = c
            .put_object_bytes("vault", "new", data)
            .await
            .expect("new object");
        let last = rev.max(info.revision);
        new.wait_all_applied(last, Duration::from_secs(120)).await;
    })
    .await;
}
