//! Acknowledged record writes and the check most fault tests end with: every one of them
//! is readable linearizably, and from the own state of every running node.

use std::time::Duration;

use bytes::Bytes;
use trove_client::Consistency;

use crate::harness::Cluster;

/// How long a node may take to apply the newest acknowledged write.
const CATCH_UP: Duration = Duration::from_secs(120);

/// A record write the cluster acknowledged.
#[derive(Clone, Debug)]
pub struct Acked {
    pub key: String,
    pub value: Bytes,
    pub revision: u64,
}

impl Acked {
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>, revision: u64) -> Acked {
        Acked {
            key: key.into(),
            value: value.into(),
            revision,
        }
    }
}

/// Every write in `acked` (one per key, or the newest last) is readable linearizably
/// through the cluster, and each running node, once it applied the newest of them, holds
/// every one in its own state (local reads).
pub async fn verify_acked(cluster: &mut Cluster, acked: &[Acked]) {
    assert!(!acked.is_empty(), "nothing was acknowledged");
    let c = cluster.client();
    for a in acked {
        let r = c
            .get_record(&a.key, Consistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("acknowledged write {a:?} lost: {e}"));
        assert_eq!((&r.value, r.revision), (&a.value, a.revision), "{}", a.key);
    }
    let last = acked.iter().map(|a| a.revision).max().unwrap_or(0);
    for id in cluster.live_ids() {
        cluster.wait_applied(id, last, CATCH_UP).await;
        let local = cluster.client_for(id);
        for a in acked {
            let r = local
                .get_record(&a.key, Consistency::Local)
                .await
                .unwrap_or_else(|e| panic!("node {id}: acknowledged write {a:?} missing: {e}"));
            assert_eq!(
                (&r.value, r.revision),
                (&a.value, a.revision),
                "node {id}: {}",
                a.key
            );
        }
    }
}
