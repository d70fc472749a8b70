//! A node that comes back with less state than it acknowledged — its data directory
//! wiped, or replaced by an older copy of itself — must not vote on the strength of
//! that state (the server's `recovery` module and the vote gate in `trove-raft`).
//!
//! Both tests play the dangerous interleaving of the issue: writes are committed by the
//! leader L and node W only (the third node T is paused), W loses state and restarts,
//! L is killed, T resumes. With plain Raft W votes T into office, T lacks the writes,
//! and they are gone once T commits in its term (L's copy is overwritten when it
//! returns). Trove's W refuses to vote until a peer that knows better confirms its
//! state or a leader re-seeds it, so the cluster waits for L rather than losing data;
//! when L returns every acknowledged write is there, on every node, and W votes again.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::acked::{Acked, verify_acked};
use crate::harness::{Cluster, LEADER_TIMEOUT, deadline, poll_until};

const TEST_TIMEOUT: Duration = Duration::from_secs(300);
const CATCH_UP: Duration = Duration::from_secs(120);
/// How long the two remaining nodes are watched for electing a leader they must not.
const WATCH: Duration = Duration::from_secs(8);

async fn write(cluster: &mut Cluster, prefix: &str, n: usize) -> Vec<Acked> {
    let c = cluster.client();
    let mut acked = Vec::new();
    for i in 0..n {
        let key = format!("{prefix}/{i:03}");
        let value = Bytes::from(format!("{prefix} value {i}"));
        let revision = c.put_record(&key, value.clone(), None).await.expect("put");
        acked.push(Acked {
            key,
            value,
            revision,
        });
    }
    acked
}

/// Watches W and T for [`WATCH`]: neither may become leader (L, the only node with
/// every committed write besides the damaged W, is down). Returns W's last status.
async fn neither_becomes_leader(cluster: &mut Cluster, w: u64, t: u64) -> String {
    let start = Instant::now();
    let mut last_recovery = String::new();
    let mut w_answered = false;
    while start.elapsed() < WATCH {
        for id in [w, t] {
            if let Ok(st) = cluster.status_of(id).await {
                assert!(
                    st.leader != Some(w) && st.leader != Some(t),
                    "node {id} reports node {:?} as leader in term {} although only the damaged node could have voted for it",
                    st.leader,
                    st.term
                );
                if id == w {
                    w_answered = true;
                    assert!(st.recovering, "node {w} lost state but is not recovering");
                    last_recovery = st.recovery;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(w_answered, "node {w} never answered status");
    last_recovery
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

/// Picks the leader L, a follower W (the node that loses state) and the third node T.
async fn roles(cluster: &mut Cluster) -> (u64, u64, u64) {
    let l = cluster.wait_for_leader(LEADER_TIMEOUT).await;
    let others: Vec<u64> = cluster.all_ids().into_iter().filter(|i| *i != l).collect();
    eprintln!(
        "leader {l}, damaged node {}, paused node {}",
        others[0], others[1]
    );
    (l, others[0], others[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_volume_does_not_vote_until_reseeded() {
    let mut cluster = Cluster::start(3).await;
    deadline(TEST_TIMEOUT, async {
        let (l, w, t) = roles(&mut cluster).await;
        let mut acked = write(&mut cluster, "before", 10).await;
        let last = acked.last().expect("acked").revision;
        cluster.wait_all_applied(last, CATCH_UP).await;

        // Committed by L and W only.
        cluster.pause(t);
        acked.extend(write(&mut cluster, "only-l-and-w", 40).await);

        // W's volume is lost; W restarts with the same command. L is frozen first so
        // that it cannot re-seed W before it dies, then killed; T resumes.
        cluster.kill9(w);
        let w_dir = cluster.node(w).data_dir.clone();
        std::fs::remove_dir_all(&w_dir).expect("wipe");
        cluster.pause(l);
        cluster.restart(w).await;
        cluster.kill9(l);
        cluster.resume(t);

        let why = neither_becomes_leader(&mut cluster, w, t).await;
        eprintln!("node {w} while L is down: {why}");
        assert!(
            why.contains("the cluster already exists") && why.contains("re-seeded"),
            "unexpected recovery state: {why}"
        );

        // L returns: it leads (W does not vote, T's log is behind), re-seeds W, and
        // every acknowledged write is there.
        cluster.restart(l).await;
        cluster.wait_for_leader(LEADER_TIMEOUT).await;
        acked.extend(write(&mut cluster, "after", 5).await);
        verify_acked(&mut cluster, &acked).await;
        cluster.wait_voting(w, CATCH_UP).await;

        // Re-seeded, W is a full voter again: the cluster survives losing L now.
        let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
        cluster.kill9(leader);
        cluster.wait_for_new_leader(leader, LEADER_TIMEOUT).await;
        acked.extend(write(&mut cluster, "after-reseed", 5).await);
        verify_acked(&mut cluster, &acked).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_volume_does_not_vote_until_reseeded() {
    let mut cluster = Cluster::start(3).await;
    let old_copy = tempfile::tempdir().expect("tempdir");
    deadline(TEST_TIMEOUT, async {
        let (l, w, t) = roles(&mut cluster).await;
        let mut acked = write(&mut cluster, "before", 10).await;
        let last = acked.last().expect("acked").revision;
        cluster.wait_all_applied(last, CATCH_UP).await;

        // An old copy of W's data directory (taken while W is down, as a volume
        // snapshot or a restored backup of the disk would be).
        cluster.kill9(w);
        let w_dir = cluster.node(w).data_dir.clone();
        let old = old_copy.path().join("w");
        copy_dir(&w_dir, &old);
        cluster.restart(w).await;
        cluster.wait_applied(w, last, CATCH_UP).await;
        cluster.wait_voting(w, CATCH_UP).await;

        // Committed by L and W only; then give L time to record what W acknowledged.
        cluster.pause(t);
        acked.extend(write(&mut cluster, "only-l-and-w", 40).await);
        tokio::time::sleep(Duration::from_secs(1)).await;

        // W's volume goes back in time; same restart, same interleaving as above.
        cluster.kill9(w);
        std::fs::remove_dir_all(&w_dir).expect("remove");
        copy_dir(&old, &w_dir);
        cluster.pause(l);
        cluster.restart(w).await;
        cluster.kill9(l);
        cluster.resume(t);

        let why = neither_becomes_leader(&mut cluster, w, t).await;
        eprintln!("node {w} while L is down: {why}");

        cluster.restart(l).await;
        cluster.wait_for_leader(LEADER_TIMEOUT).await;
        // L told W what it had acknowledged: the rollback is named in W's log.
        poll_until(CATCH_UP, "node W to report the rollback", async || {
            let log = std::fs::read_to_string(&cluster.node(w).log_path).unwrap_or_default();
            if log.contains("wiped or rolled back") {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        })
        .await;
        acked.extend(write(&mut cluster, "after", 5).await);
        verify_acked(&mut cluster, &acked).await;
        cluster.wait_voting(w, CATCH_UP).await;
    })
    .await;
}
