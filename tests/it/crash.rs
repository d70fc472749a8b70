//! Crash safety with real processes and SIGKILL: the leader killed during a stream of
//! acknowledged writes, and the whole cluster killed at once. Every acknowledged write is
//! then read back from every node, linearizably through the cluster and locally on each
//! node once it has caught up (the killed nodes included, after they restart).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use trove_client::{Client, Consistency};

use crate::acked::{Acked, verify_acked};
use crate::data::{DataGen, HashSink, test_seed};
use crate::harness::{Cluster, LEADER_TIMEOUT, deadline, poll_until};

const TEST_TIMEOUT: Duration = Duration::from_secs(600);
const CATCH_UP: Duration = Duration::from_secs(120);

/// A sequential writer of unique keys that records every acknowledged write. Failed
/// writes (outcome unknown) are counted, never verified.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(client: Client, prefix: String, seed: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicU64::new(0));
        let task = {
            let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{prefix}/{i:06}");
                    let value = Bytes::from(format!("seed {seed} write {i}"));
                    match client.put_record(&key, value.clone(), None).await {
                        Ok(revision) => acked.lock().expect("lock").push(Acked {
                            key,
                            value,
                            revision,
                        }),
                        Err(e) => {
                            if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("writer: {key}: {e} (outcome unknown; not verified)");
                            }
                        }
                    }
                    i += 1;
                }
            })
        };
        Writer {
            stop,
            acked,
            failed,
            task,
        }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().expect("lock").len()
    }

    async fn wait_acked(&self, n: usize, timeout: Duration) {
        poll_until(timeout, &format!("{n} acknowledged writes"), async || {
            let have = self.acked_count();
            if have >= n {
                Ok(())
            } else {
                Err(format!("{have} acked"))
            }
        })
        .await
    }

    async fn finish(self) -> (Vec<Acked>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer task");
        let acked = self.acked.lock().expect("lock").clone();
        (acked, self.failed.load(Ordering::Relaxed))
    }
}

/// Checks every acknowledged write: revisions increase in acknowledgement order (one
/// sequential writer); each is readable linearizably through a client over all running
/// nodes; through each node's own endpoint the newest is readable linearizably, and once
/// the node has applied it, every write is readable from its local state.
async fn verify_everywhere(cluster: &mut Cluster, acked: &[Acked]) {
    assert!(!acked.is_empty(), "nothing was acknowledged");
    for w in acked.windows(2) {
        assert!(
            w[1].revision > w[0].revision,
            "revisions out of order: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    let last = acked.last().expect("non-empty");
    for id in cluster.live_ids() {
        // A linearizable read through each node's endpoint sees the newest write.
        let r = cluster
            .client_for(id)
            .get_record(&last.key, Consistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("node {id}: linearizable read of {last:?}: {e}"));
        assert_eq!(r.revision, last.revision, "node {id}: linearizable read");
    }
    verify_acked(cluster, acked).await;
    eprintln!(
        "verified {} acknowledged writes on nodes {:?}",
        acked.len(),
        cluster.live_ids()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill9_during_writes_loses_nothing_acknowledged() {
    let seed = test_seed("leader_kill9");
    let mut cluster = Cluster::start(3).await;
    deadline(TEST_TIMEOUT, async {
        let writer = Writer::start(cluster.client(), "crash".into(), seed);
        writer.wait_acked(100, Duration::from_secs(120)).await;

        let old = cluster.wait_for_leader(LEADER_TIMEOUT).await;
        let at_kill = writer.acked_count();
        let killed_at = Instant::now();
        cluster.kill9(old);
        let new = cluster.wait_for_new_leader(old, LEADER_TIMEOUT).await;
        eprintln!(
            "node {new} leads {:.2?} after node {old} was killed",
            killed_at.elapsed()
        );
        // The survivors keep acknowledging writes.
        writer
            .wait_acked(at_kill + 100, Duration::from_secs(120))
            .await;
        eprintln!(
            "100 more writes acknowledged {:.2?} after the kill",
            killed_at.elapsed()
        );
        let (acked, failed) = writer.finish().await;
        eprintln!(
            "writer: {} acknowledged, {failed} failed (unknown outcome)",
            acked.len()
        );

        verify_everywhere(&mut cluster, &acked).await;

        // The killed leader restarts from its data directory and catches up.
        cluster.restart(old).await;
        let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
        assert!(cluster.live_ids().contains(&old));
        eprintln!("node {old} restarted; leader {leader}");
        verify_everywhere(&mut cluster, &acked).await;

        // And the cluster keeps taking writes with all three.
        let c = cluster.client();
        let rev = c
            .put_record("after-restart", Bytes::from_static(b"ok"), None)
            .await
            .expect("write after restart");
        assert!(rev > acked.last().expect("acked").revision);
        cluster.wait_applied(old, rev, CATCH_UP).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cluster_kill9_and_restart_loses_nothing_acknowledged() {
    let seed = test_seed("full_cluster_kill9");
    let mut cluster = Cluster::start(3).await;
    deadline(TEST_TIMEOUT, async {
        let c = cluster.client();
        let mut acked = Vec::new();
        for i in 0..100 {
            let key = format!("full/{i:04}");
            let value = Bytes::from(format!("seed {seed} value {i}"));
            let revision = c.put_record(&key, value.clone(), None).await.expect("put");
            acked.push(Acked {
                key,
                value,
                revision,
            });
        }
        c.create_bucket("durable").await.expect("bucket");
        let blob = DataGen::new(seed, 3 * 1024 * 1024 + 999);
        let info = c
            .put_object("durable", "blob", blob.reader(), Some(blob.size), None)
            .await
            .expect("put object");
        // One more record after the object so that "the last revision" covers everything.
        let revision = c
            .put_record("full/last", Bytes::from_static(b"last"), None)
            .await
            .expect("put last");
        acked.push(Acked {
            key: "full/last".into(),
            value: Bytes::from_static(b"last"),
            revision,
        });
        drop(c);

        // Kill every node at once, then restart them in reverse order.
        cluster.kill9_all();
        let mut ids = cluster.all_ids();
        ids.reverse();
        for id in ids {
            cluster.restart(id).await;
        }
        cluster.wait_for_leader(LEADER_TIMEOUT).await;

        verify_everywhere(&mut cluster, &acked).await;
        let want_sha = blob.sha256();
        for id in cluster.live_ids() {
            let local = cluster.client_for(id);
            let r = local
                .get_object("durable", "blob", None, Consistency::Local)
                .await
                .unwrap_or_else(|e| panic!("node {id}: object lost: {e}"));
            assert_eq!(r.info, info, "node {id}: object metadata");
            let mut sink = HashSink::new();
            r.copy_to(&mut sink).await.expect("download");
            assert_eq!(
                (sink.len, sink.digest()),
                (blob.size, want_sha),
                "node {id}: object bytes"
            );
        }
        // The restarted cluster takes new writes at later revisions.
        let c = cluster.client();
        let rev = c
            .put_record("full/after", Bytes::from_static(b"x"), None)
            .await
            .expect("write after restart");
        assert!(
            rev > revision,
            "revision {rev} after restart must exceed {revision}"
        );
        acked.push(Acked {
            key: "full/after".into(),
            value: Bytes::from_static(b"x"),
            revision: rev,
        });
        drop(c);

        // A clean stop (SIGTERM) of every node and a restart loses nothing either.
        cluster.stop_all();
        for id in cluster.all_ids() {
            cluster.restart(id).await;
        }
        cluster.wait_for_leader(LEADER_TIMEOUT).await;
        verify_everywhere(&mut cluster, &acked).await;
    })
    .await;
}
