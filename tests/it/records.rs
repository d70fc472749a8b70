//! Records through the SDK on a 3-node cluster: put/get (linearizable and local),
//! compare-and-set, delete, list with prefix and paging, revisions as log indexes, a
//! follower endpoint, and bad input that must change nothing.

use std::time::Duration;

use bytes::Bytes;
use trove_client::{Client, Consistency};
use trove_types::TroveError;

use crate::harness::{Cluster, deadline};

const TEST_TIMEOUT: Duration = Duration::from_secs(300);
const CATCH_UP: Duration = Duration::from_secs(60);

fn val(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Asserts a compare-and-set refusal that names `current` as the current revision.
fn assert_cas_failure(r: Result<u64, TroveError>, current: u64, what: &str) {
    match r {
        Err(TroveError::FailedPrecondition {
            message,
            current_revision,
        }) => {
            assert_eq!(current_revision, Some(current), "{what}: {message}");
            assert!(
                message.contains(&current.to_string()),
                "{what}: message {message:?} does not say the current revision {current}"
            );
        }
        other => panic!("{what}: want FAILED_PRECONDITION with revision {current}, got {other:?}"),
    }
}

async fn get(c: &Client, key: &str, consistency: Consistency) -> (Bytes, u64, u64) {
    let r = c
        .get_record(key, consistency)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"));
    assert_eq!(r.key, key);
    (r.value, r.revision, r.create_revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_put_get_cas_delete() {
    let mut cluster = Cluster::start(3).await;
    deadline(TEST_TIMEOUT, async {
        let c = cluster.client();

        // Put and linearizable get.
        let r1 = c.put_record("k1", val("v1"), None).await.expect("put v1");
        assert!(r1 > 0, "revision {r1}");
        assert_eq!(
            get(&c, "k1", Consistency::Linearizable).await,
            (val("v1"), r1, r1)
        );

        // Overwrite: a later log index; create_revision stays.
        let r2 = c.put_record("k1", val("v2"), None).await.expect("put v2");
        assert!(r2 > r1, "revisions must increase: {r1} then {r2}");
        assert_eq!(
            get(&c, "k1", Consistency::Linearizable).await,
            (val("v2"), r2, r1)
        );

        // A revision is the Raft log index of the write: never beyond the commit index.
        let leader = cluster.wait_for_leader(CATCH_UP).await;
        let st = cluster.status_of(leader).await.expect("status");
        assert!(
            st.commit_index >= r2,
            "commit_index {} < revision {r2}",
            st.commit_index
        );

        // Compare-and-set: a stale expectation fails, says the current revision, changes nothing.
        assert_cas_failure(
            c.put_record("k1", val("v3"), Some(r1)).await,
            r2,
            "stale CAS",
        );
        assert_eq!(
            get(&c, "k1", Consistency::Linearizable).await,
            (val("v2"), r2, r1)
        );
        let r3 = c
            .put_record("k1", val("v3"), Some(r2))
            .await
            .expect("CAS at r2");
        assert!(r3 > r2);
        assert_eq!(
            get(&c, "k1", Consistency::Linearizable).await,
            (val("v3"), r3, r1)
        );

        // Expected revision 0 = must not exist.
        assert_cas_failure(c.put_record("k1", val("x"), Some(0)).await, r3, "create k1");
        let rn = c
            .put_record("k-new", val("n"), Some(0))
            .await
            .expect("create k-new");
        assert_cas_failure(
            c.put_record("k-new", val("n2"), Some(0)).await,
            rn,
            "create twice",
        );

        // Delete: conditional refusal, then a real delete at a new revision.
        assert_cas_failure(c.delete_record("k1", Some(r1)).await, r3, "stale delete");
        let rd = c.delete_record("k1", None).await.expect("delete");
        assert!(rd > rn, "delete revision {rd} after {rn}");
        match c.get_record("k1", Consistency::Linearizable).await {
            Err(TroveError::NotFound(_)) => {}
            other => panic!("get after delete: want NOT_FOUND, got {other:?}"),
        }
        // A compare-and-set against a missing record reports current revision 0.
        assert_cas_failure(
            c.put_record("k1", val("y"), Some(rd)).await,
            0,
            "CAS on deleted",
        );
        // Re-creating starts a new life: create_revision = the new revision.
        let r4 = c
            .put_record("k1", val("v4"), Some(0))
            .await
            .expect("re-create");
        assert_eq!(
            get(&c, "k1", Consistency::Linearizable).await,
            (val("v4"), r4, r4)
        );

        // Local reads on every node agree once each has applied the last write.
        cluster.wait_all_applied(r4, CATCH_UP).await;
        for id in cluster.live_ids() {
            let local = cluster.client_for(id);
            assert_eq!(
                get(&local, "k1", Consistency::Local).await,
                (val("v4"), r4, r4),
                "local read on node {id}"
            );
            assert_eq!(get(&local, "k-new", Consistency::Local).await.1, rn);
        }

        // Through a follower's endpoint only: writes, CAS and linearizable reads work.
        let follower = cluster
            .live_ids()
            .into_iter()
            .find(|id| *id != leader)
            .expect("a follower");
        let fc = cluster.client_for(follower);
        let rf = fc
            .put_record("via-follower", val("f1"), Some(0))
            .await
            .expect("put via follower");
        assert!(rf > r4);
        assert_eq!(
            get(&fc, "via-follower", Consistency::Linearizable).await,
            (val("f1"), rf, rf)
        );
        assert_cas_failure(
            fc.put_record("via-follower", val("f2"), Some(0)).await,
            rf,
            "follower CAS",
        );
        // A write through the follower is immediately visible through the leader (linearizable).
        let lc = cluster.client_for(leader);
        assert_eq!(
            get(&lc, "via-follower", Consistency::Linearizable).await.1,
            rf
        );
        let rf2 = lc
            .put_record("via-follower", val("f3"), Some(rf))
            .await
            .expect("CAS via leader");
        assert_eq!(
            get(&fc, "via-follower", Consistency::Linearizable).await,
            (val("f3"), rf2, rf)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_list_prefix_and_paging() {
    let mut cluster = Cluster::start(3).await;
    deadline(TEST_TIMEOUT, async {
        let c = cluster.client();
        let mut want = Vec::new();
        let mut last = 0;
        for i in 0..25 {
            let key = format!("list/a/{i:02}");
            let rev = c
                .put_record(&key, val(&format!("value {i}")), None)
                .await
                .expect("put");
            assert!(rev > last, "sequential puts must get increasing revisions");
            last = rev;
            want.push((key, rev));
        }
        for key in ["list/b/x", "lisu", "list", "a"] {
            c.put_record(key, val("other"), None)
                .await
                .expect("put other");
        }

        // Pages of 10 under "list/a/": 10, 10, 5, each continuing where the last stopped.
        let mut got = Vec::new();
        let mut start_at = String::new();
        let mut pages = 0;
        loop {
            let page = c
                .list_records("list/a/", &start_at, 10)
                .await
                .expect("list page");
            pages += 1;
            assert!(
                page.records.len() <= 10,
                "page of {} > limit",
                page.records.len()
            );
            got.extend(page.records.iter().map(|r| (r.key.clone(), r.revision)));
            match page.next {
                Some(next) => start_at = next,
                None => break,
            }
            assert!(pages < 10, "paging does not terminate");
        }
        assert_eq!(got, want, "paged listing under list/a/");
        assert_eq!(pages, 3, "25 keys in pages of 10");

        // The prefix is a byte prefix: "list/" matches list/a/* and list/b/x, not "lisu" or "list".
        let page = c.list_records("list/", "", 0).await.expect("list");
        assert_eq!(page.records.len(), 26);
        assert!(page.next.is_none());
        assert!(page.records.iter().all(|r| r.key.starts_with("list/")));
        // No prefix: everything, in key order.
        let all = c.list_records("", "", 0).await.expect("list all");
        let keys: Vec<&str> = all.records.iter().map(|r| r.key.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "keys in order");
        assert_eq!(keys.len(), 29);
        assert_eq!(keys[0], "a");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_bad_input_changes_nothing() {
    let mut cluster = Cluster::start(3).await;
    deadline(TEST_TIMEOUT, async {
        let c = cluster.client();
        let max_key = "k".repeat(1024);
        let max_value = Bytes::from(vec![7u8; 1024 * 1024]);
        let rk = c
            .put_record(&max_key, val("ok"), None)
            .await
            .expect("1024-byte key");
        let rv = c
            .put_record("big", max_value.clone(), None)
            .await
            .expect("1 MiB value");

        let cases: Vec<(&str, String, Bytes)> = vec![
            ("empty key", String::new(), val("v")),
            ("1025-byte key", "k".repeat(1025), val("v")),
            ("empty value", "empty".into(), Bytes::new()),
            (
                "value over 1 MiB",
                "huge".into(),
                Bytes::from(vec![1u8; 1024 * 1024 + 1]),
            ),
        ];
        for (what, key, value) in cases {
            match c.put_record(&key, value, None).await {
                Err(TroveError::InvalidArgument(msg)) => {
                    assert!(!msg.is_empty(), "{what}: empty message")
                }
                other => panic!("{what}: want INVALID_ARGUMENT, got {other:?}"),
            }
        }
        match c.get_record("", Consistency::Linearizable).await {
            Err(TroveError::InvalidArgument(_)) => {}
            other => panic!("get empty key: want INVALID_ARGUMENT, got {other:?}"),
        }
        match c.get_record("missing", Consistency::Linearizable).await {
            Err(TroveError::NotFound(msg)) => assert!(msg.contains("missing"), "{msg}"),
            other => panic!("get missing: want NOT_FOUND, got {other:?}"),
        }

        // Nothing changed: exactly the two valid records exist, at their revisions.
        let all = c.list_records("", "", 0).await.expect("list");
        let got: Vec<(String, u64)> = all
            .records
            .iter()
            .map(|r| (r.key.clone(), r.revision))
            .collect();
        assert_eq!(got, vec![("big".to_string(), rv), (max_key.clone(), rk)]);
        assert_eq!(get(&c, "big", Consistency::Linearizable).await.0, max_value);
    })
    .await;
}
