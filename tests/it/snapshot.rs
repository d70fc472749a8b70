//! Catch-up by snapshot: a follower that was down while the leader snapshotted and
//! purged its log receives the snapshot (state file and chunk files streamed, verified,
//! installed) and ends with exactly the acknowledged records and objects.

use std::time::Duration;

use bytes::Bytes;
use trove_client::Consistency;
use trove_types::Sha256;

use crate::data::test_seed;
use crate::harness::{Cluster, deadline, poll_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_by_snapshot() {
    deadline(Duration::from_secs(300), async {
        let seed = test_seed("lagging_follower_catches_up_by_snapshot");
        let mut cluster = Cluster::start_with(3, &["--snapshot-every-entries", "40"]).await;
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
        let follower = cluster
            .all_ids()
            .into_iter()
            .find(|i| *i != leader)
            .expect("a follower");
        let follower_applied = cluster.status_of(follower).await.expect("status").applied_index;
        cluster.kill9(follower);

        let c = cluster.client();
        c.create_bucket("snap").await.expect("create bucket");
        // A 3.5 MiB object: four chunk entries, so the snapshot must carry chunk files.
        let mut data = vec![0u8; 3 * 1024 * 1024 + 512 * 1024];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i as u64).wrapping_mul(seed | 1).wrapping_shr(7) as u8;
        }
        let data = Bytes::from(data);
        let info = c
            .put_object_bytes("snap", "blob", data.clone())
            .await
            .expect("put object");
        let mut revisions = Vec::new();
        for i in 0..200u32 {
            let rev = c
                .put_record(
                    &format!("k{i:03}"),
                    Bytes::from(format!("value-{i}-{seed}")),
                    None,
                )
                .await
                .expect("put record");
            revisions.push(rev);
        }
        let last = *revisions.last().expect("writes");

        // The leader purges its log only between replication attempts to the dead
        // follower (openraft keeps entries an in-flight AppendEntries may still read), so
        // wait until the entries the follower lacks are gone: from here on only a
        // snapshot can bring it up to date.
        poll_until(
            Duration::from_secs(60),
            "the leader to purge the log entries the stopped follower lacks",
            async || {
                let st = cluster.status_of(leader).await?;
                if st.purged_index > follower_applied {
                    Ok(())
                } else {
                    Err(format!(
                        "leader purged up to {} (snapshot {}), follower stopped at {follower_applied}",
                        st.purged_index, st.snapshot_index
                    ))
                }
            },
        )
        .await;

        cluster.restart(follower).await;
        cluster
            .wait_applied(follower, last, Duration::from_secs(120))
            .await;

        // The follower caught up through a snapshot, not by replaying the log.
        let log = cluster.node(follower).log_tail(10_000);
        assert!(
            log.contains("installed snapshot"),
            "follower {follower} never installed a snapshot; its log:\n{}",
            cluster.node(follower).log_tail(60)
        );

        // Its own state holds every acknowledged write, read locally.
        let fc = cluster.client_for(follower);
        for (i, rev) in revisions.iter().enumerate() {
            let r = fc
                .get_record(&format!("k{i:03}"), Consistency::Local)
                .await
                .expect("local read on the caught-up follower");
            assert_eq!(r.value, Bytes::from(format!("value-{i}-{seed}")));
            assert_eq!(r.revision, *rev);
        }
        let mut reader = fc
            .get_object("snap", "blob", None, Consistency::Local)
            .await
            .expect("local object read on the caught-up follower");
        let mut got = Vec::new();
        while let Some(chunk) = reader.next_chunk().await.expect("object chunk") {
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got.len(), data.len());
        assert_eq!(
            Sha256::digest(&got)[..],
            info.sha256[..],
            "object bytes after snapshot install"
        );
    })
    .await;
}
