//! Bounded memory: a 256 MiB object streamed in (from a generator, never a buffer) and
//! back out keeps every node's peak RSS (VmHWM) under 200 MiB. Also prints the figures the
//! issue asks for: single-record put latency and object throughput (printed, not asserted).

use std::time::{Duration, Instant};

use bytes::Bytes;
use trove_client::Consistency;

use crate::data::{DataGen, HashSink, test_seed};
use crate::harness::{Cluster, deadline};

const TEST_TIMEOUT: Duration = Duration::from_secs(900);
const MIB: u64 = 1024 * 1024;
const RSS_LIMIT_KIB: u64 = 200 * 1024;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_256mib_keeps_node_rss_under_200mib() {
    let seed = test_seed("object_256mib_rss");
    let mut cluster = Cluster::start(3).await;
    deadline(TEST_TIMEOUT, async {
        let c = cluster.client();

        // Commit latency of a single 256-byte record put, one client, sequential.
        let value = Bytes::from(vec![b'x'; 256]);
        let mut lat = Vec::new();
        for i in 0..200 {
            let t = Instant::now();
            c.put_record(&format!("lat/{i}"), value.clone(), None).await.expect("put");
            lat.push(t.elapsed());
        }
        lat.sort();
        eprintln!(
            "FIGURE record put 256 B, 1 client (debug build): p50 {:.2?} p99 {:.2?} max {:.2?}",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat[lat.len() - 1]
        );

        c.create_bucket("big").await.expect("bucket");
        let data = DataGen::new(seed, 256 * MIB);
        let want_sha = data.sha256();
        let t = Instant::now();
        let info = c
            .put_object("big", "256mib", data.reader(), Some(data.size), None)
            .await
            .expect("put 256 MiB");
        let put_secs = t.elapsed().as_secs_f64();
        assert_eq!(info.size, data.size);
        assert_eq!(hex::encode(info.sha256), hex::encode(want_sha));

        let t = Instant::now();
        let reader = c
            .get_object("big", "256mib", None, Consistency::Linearizable)
            .await
            .expect("get");
        let mut sink = HashSink::new();
        reader.copy_to(&mut sink).await.expect("download");
        let get_secs = t.elapsed().as_secs_f64();
        assert_eq!(sink.len, data.size);
        assert_eq!(hex::encode(sink.digest()), hex::encode(want_sha), "downloaded sha256");
        eprintln!(
            "FIGURE object 256 MiB, 1 client (debug build): put {:.1} MB/s ({put_secs:.1} s), get {:.1} MB/s ({get_secs:.1} s)",
            256.0 / put_secs,
            256.0 / get_secs
        );

        // Followers apply the whole object too; measure once every node has it.
        cluster.wait_all_applied(info.revision, Duration::from_secs(300)).await;
        let mut over = Vec::new();
        for id in cluster.live_ids() {
            let kib = cluster.peak_rss_kib(id);
            eprintln!("FIGURE node {id} peak RSS (VmHWM): {:.1} MiB", kib as f64 / 1024.0);
            if kib >= RSS_LIMIT_KIB {
                over.push((id, kib / 1024));
            }
        }
        assert!(over.is_empty(), "nodes over the 200 MiB peak RSS budget (id, MiB): {over:?}");
    })
    .await;
}
