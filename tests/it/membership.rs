//! Membership changes on real processes: a fourth node started with `--join` becomes a
//! voter and serves reads; nodes are removed through the SDK and the CLI; a removed id is
//! never handed out again.

use std::time::Duration;

use bytes::Bytes;
use trove_client::Consistency;
use trove_types::TroveError;

use crate::harness::{Cluster, LEADER_TIMEOUT, deadline, poll_until, trove_bin};

const TEST_TIMEOUT: Duration = Duration::from_secs(600);
const CATCH_UP: Duration = Duration::from_secs(120);

/// The member ids and roles the leader reports.
async fn members(cluster: &mut Cluster) -> Vec<(u64, String)> {
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
    let st = cluster.status_of(leader).await.expect("status");
    let mut m: Vec<(u64, String)> = st.members.iter().map(|m| (m.id, m.role.clone())).collect();
    m.sort();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_nodes_and_never_reuse_ids() {
    let mut cluster = Cluster::start(3).await;
    deadline(TEST_TIMEOUT, async {
        let c = cluster.client();
        let before = c
            .put_record("before-join", Bytes::from_static(b"b"), None)
            .await
            .expect("put");

        // A fourth node joins (learner first, then voter once caught up).
        let four = cluster.add_node().await;
        assert_eq!(four, 4, "the first new node gets the next id");
        let m = members(&mut cluster).await;
        assert_eq!(m.len(), 4, "members {m:?}");
        assert!(
            m.iter()
                .any(|(id, role)| *id == four && (role == "follower" || role == "leader")),
            "node {four} is not a voter: {m:?}"
        );
        let leader = cluster.leader().await.expect("an agreed leader");
        let st = cluster.status_of(leader).await.expect("status");
        let entry = st.members.iter().find(|m| m.id == four).expect("member 4");
        let node = cluster.node(four);
        assert_eq!(
            (entry.client_addr.as_str(), entry.peer_addr.as_str()),
            (node.client_addr.as_str(), node.peer_addr.as_str()),
            "member 4's advertised addresses"
        );
        // It serves reads: the data written before it joined, locally and linearizably.
        cluster.wait_applied(four, before, CATCH_UP).await;
        let c4 = cluster.client_for(four);
        let r = c4
            .get_record("before-join", Consistency::Local)
            .await
            .expect("local read on node 4");
        assert_eq!(r.revision, before);
        let rev = c4
            .put_record("via-four", Bytes::from_static(b"4"), None)
            .await
            .expect("write through node 4");
        let r = c4
            .get_record("via-four", Consistency::Linearizable)
            .await
            .expect("read");
        assert_eq!(r.revision, rev);

        // Remove node 4 through the SDK: it leaves the membership, the rest keep serving.
        c.remove_node(four).await.expect("remove node 4");
        poll_until(CATCH_UP, "node 4 to leave the membership", async || {
            let m = members(&mut cluster).await;
            if m.iter().all(|(id, _)| *id != four) {
                Ok(())
            } else {
                Err(format!("{m:?}"))
            }
        })
        .await;
        cluster.forget(four);
        let c = cluster.client();
        c.put_record("after-remove", Bytes::from_static(b"r"), None)
            .await
            .expect("write after removing node 4");

        // The removed id is never reused: asking for it explicitly is refused, and a new
        // node added without an id gets a larger one.
        match c
            .add_node(Some(four), "127.0.0.1:1", "127.0.0.1:2", false)
            .await
        {
            Err(TroveError::FailedPrecondition { message, .. }) => {
                eprintln!("re-adding id {four} refused: {message}")
            }
            other => panic!("re-adding removed id {four}: want FAILED_PRECONDITION, got {other:?}"),
        }
        // The operator's way: `add_node` without an id, then start the process with it.
        let five = cluster.add_node_via_admin().await;
        assert!(five > four, "new id {five} must exceed removed id {four}");
        let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
        let st = cluster.status_of(leader).await.expect("status");
        assert!(
            st.max_node_id >= five,
            "max_node_id {} < {five}",
            st.max_node_id
        );

        // Remove a founding follower through the CLI.
        let founding = cluster
            .live_ids()
            .into_iter()
            .find(|id| *id != leader && *id <= 3)
            .expect("a founding follower");
        let out = std::process::Command::new(trove_bin())
            .args([
                "--endpoints",
                &cluster.endpoints().join(","),
                "cluster",
                "remove-node",
            ])
            .arg(founding.to_string())
            .output()
            .expect("run trove cluster remove-node");
        assert!(
            out.status.success(),
            "trove cluster remove-node {founding}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        poll_until(CATCH_UP, "the founding follower to leave", async || {
            let m = members(&mut cluster).await;
            if m.iter().all(|(id, _)| *id != founding) {
                Ok(())
            } else {
                Err(format!("{m:?}"))
            }
        })
        .await;
        cluster.forget(founding);
        let m = members(&mut cluster).await;
        assert_eq!(
            m.len(),
            3,
            "members after two removals and one addition: {m:?}"
        );
        let c = cluster.client();
        let last = c
            .put_record("final", Bytes::from_static(b"f"), None)
            .await
            .expect("write on the reshaped cluster");
        cluster.wait_all_applied(last, CATCH_UP).await;
        for id in cluster.live_ids() {
            let r = cluster
                .client_for(id)
                .get_record("before-join", Consistency::Local)
                .await
                .expect("old data on every remaining node");
            assert_eq!(r.revision, before, "node {id}");
        }
    })
    .await;
}
