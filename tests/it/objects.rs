//! Buckets and objects through the SDK: bucket create/list/delete, a 64 MiB object
//! streamed in and out with its SHA-256 checked, byte ranges, head, list, delete, and bad
//! input that must get the canonical error and change nothing.

use std::time::{Duration, Instant};

use bytes::Bytes;
use trove_client::{Client, Consistency, ObjectInfo};
use trove_types::TroveError;

use crate::data::{DataGen, HashSink, test_seed};
use crate::harness::{Cluster, deadline};

const TEST_TIMEOUT: Duration = Duration::from_secs(600);
const MIB: u64 = 1024 * 1024;

fn mb_per_sec(bytes: u64, since: Instant) -> f64 {
    bytes as f64 / MIB as f64 / since.elapsed().as_secs_f64()
}

/// Downloads `bucket/key` (optionally a range) into memory; for small reads only.
async fn read_range(
    c: &Client,
    bucket: &str,
    key: &str,
    range: Option<(u64, u64)>,
    consistency: Consistency,
) -> Vec<u8> {
    let reader = c
        .get_object(bucket, key, range, consistency)
        .await
        .unwrap_or_else(|e| panic!("get {bucket}/{key} {range:?}: {e}"));
    let mut out = Vec::new();
    reader.copy_to(&mut out).await.expect("read object");
    out
}

/// Every object under `prefix`, following `next` page by page (`limit` per page).
async fn list_all(
    c: &Client,
    bucket: &str,
    prefix: &str,
    limit: u32,
) -> Result<Vec<ObjectInfo>, TroveError> {
    let mut out = Vec::new();
    let mut start_at = String::new();
    for _ in 0..1000 {
        let page = c.list_objects(bucket, prefix, &start_at, limit).await?;
        if limit > 0 {
            assert!(page.objects.len() <= limit as usize, "page over the limit");
        }
        out.extend(page.objects);
        match page.next {
            Some(next) => start_at = next,
            None => return Ok(out),
        }
    }
    panic!("listing {bucket}/{prefix} does not terminate");
}

async fn bucket_names(c: &Client) -> Vec<String> {
    let mut names: Vec<String> = c
        .list_buckets()
        .await
        .expect("list buckets")
        .into_iter()
        .map(|b| b.name)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_64mib_round_trip_ranges_head_list_delete() {
    let seed = test_seed("object_64mib_round_trip");
    let mut cluster = Cluster::start(3).await;
    deadline(TEST_TIMEOUT, async {
        let c = cluster.client();
        let bucket = "photos";
        c.create_bucket(bucket).await.expect("create bucket");
        c.create_bucket("other-1").await.expect("create bucket 2");
        match c.create_bucket(bucket).await {
            Err(TroveError::AlreadyExists(_)) => {}
            other => panic!("create twice: want ALREADY_EXISTS, got {other:?}"),
        }
        assert_eq!(bucket_names(&c).await, vec!["other-1", "photos"]);

        // 64 MiB plus a partial chunk, streamed from a generator (never a Vec).
        let data = DataGen::new(seed, 64 * MIB + 12_345);
        let want_sha = data.sha256();
        let t = Instant::now();
        let info = c
            .put_object(bucket, "big/one.bin", data.reader(), Some(data.size), None)
            .await
            .expect("put 64 MiB");
        eprintln!(
            "object put: {} bytes in {:.2?} = {:.1} MB/s ({} chunks)",
            data.size,
            t.elapsed(),
            mb_per_sec(data.size, t),
            info.chunk_count
        );
        assert_eq!(
            (info.bucket.as_str(), info.key.as_str()),
            (bucket, "big/one.bin")
        );
        assert_eq!(info.size, data.size);
        assert_eq!(
            hex::encode(info.sha256),
            hex::encode(want_sha),
            "put sha256"
        );
        assert_eq!(
            u64::from(info.chunk_count),
            data.size.div_ceil(MIB),
            "1 MiB chunks"
        );
        assert!(info.revision > 0);

        let head = c
            .head_object(bucket, "big/one.bin", Consistency::Linearizable)
            .await
            .expect("head");
        assert_eq!(head, info, "head returns what put returned");

        // Full download, hashed as it streams.
        let t = Instant::now();
        let reader = c
            .get_object(bucket, "big/one.bin", None, Consistency::Linearizable)
            .await
            .expect("get");
        assert_eq!(reader.info, info);
        let mut sink = HashSink::new();
        reader.copy_to(&mut sink).await.expect("download");
        eprintln!(
            "object get: {} bytes in {:.2?} = {:.1} MB/s",
            sink.len,
            t.elapsed(),
            mb_per_sec(sink.len, t)
        );
        assert_eq!(sink.len, data.size, "downloaded length");
        assert_eq!(
            hex::encode(sink.digest()),
            hex::encode(want_sha),
            "downloaded sha256"
        );

        // Byte ranges [start, end): first byte, across a chunk boundary, the tail.
        let ranges = [
            (0, 1),
            (MIB - 3, MIB + 5),
            (5 * MIB + 100, 7 * MIB + 200),
            (data.size - 10, data.size),
        ];
        for (s, e) in ranges {
            let got = read_range(
                &c,
                bucket,
                "big/one.bin",
                Some((s, e)),
                Consistency::Linearizable,
            )
            .await;
            assert!(
                got == data.slice(s, e),
                "range {s}..{e} differs ({} bytes)",
                got.len()
            );
        }
        // Range and head served locally by every node once it has applied the put.
        cluster
            .wait_all_applied(info.revision, Duration::from_secs(120))
            .await;
        for id in cluster.live_ids() {
            let local = cluster.client_for(id);
            let h = local
                .head_object(bucket, "big/one.bin", Consistency::Local)
                .await
                .expect("local head");
            assert_eq!(h, info, "local head on node {id}");
            let (s, e) = (MIB - 3, MIB + 5);
            let got = read_range(
                &local,
                bucket,
                "big/one.bin",
                Some((s, e)),
                Consistency::Local,
            )
            .await;
            assert!(got == data.slice(s, e), "local range on node {id}");
        }
        match c
            .get_object(
                bucket,
                "big/one.bin",
                Some((data.size + 1, data.size + 2)),
                Consistency::Linearizable,
            )
            .await
        {
            Err(TroveError::InvalidArgument(_)) => {}
            other => panic!(
                "range past the end: want INVALID_ARGUMENT, got {:?}",
                other.map(|r| r.info)
            ),
        }

        // Small objects and listing by prefix.
        let small = Bytes::from_static(b"hello, trove");
        let s_info = c
            .put_object_bytes(bucket, "small/a.txt", small.clone())
            .await
            .expect("put small");
        assert_eq!(s_info.size, small.len() as u64);
        c.put_object_bytes(bucket, "small/b.txt", Bytes::from_static(b"b"))
            .await
            .expect("put small b");
        let (got_info, got) = c
            .get_object_bytes(bucket, "small/a.txt")
            .await
            .expect("get small");
        assert_eq!((got_info, got), (s_info.clone(), small));
        // One object per page: paging must return both, in order.
        let listed = list_all(&c, bucket, "small/", 1)
            .await
            .expect("list small/");
        let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, vec!["small/a.txt", "small/b.txt"]);
        assert_eq!(listed[0], s_info);
        let all = list_all(&c, bucket, "", 0).await.expect("list all");
        assert_eq!(all.len(), 3);

        // A non-empty bucket cannot be deleted.
        match c.delete_bucket(bucket).await {
            Err(TroveError::FailedPrecondition { .. }) => {}
            other => panic!("delete non-empty bucket: want FAILED_PRECONDITION, got {other:?}"),
        }
        // Delete the objects, then the bucket.
        for key in ["big/one.bin", "small/a.txt", "small/b.txt"] {
            c.delete_object(bucket, key).await.expect("delete object");
        }
        match c
            .head_object(bucket, "big/one.bin", Consistency::Linearizable)
            .await
        {
            Err(TroveError::NotFound(_)) => {}
            other => panic!("head after delete: want NOT_FOUND, got {other:?}"),
        }
        match c
            .get_object(bucket, "big/one.bin", None, Consistency::Linearizable)
            .await
        {
            Err(TroveError::NotFound(_)) => {}
            other => panic!(
                "get after delete: want NOT_FOUND, got {:?}",
                other.map(|r| r.info)
            ),
        }
        assert!(list_all(&c, bucket, "", 0).await.expect("list").is_empty());
        c.delete_bucket(bucket).await.expect("delete empty bucket");
        assert_eq!(bucket_names(&c).await, vec!["other-1"]);
        match c.delete_bucket(bucket).await {
            Err(TroveError::NotFound(_)) => {}
            other => panic!("delete missing bucket: want NOT_FOUND, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_bad_input_changes_nothing() {
    let mut cluster = Cluster::start(3).await;
    deadline(TEST_TIMEOUT, async {
        let c = cluster.client();
        c.create_bucket("good-bucket").await.expect("create");
        let long = "b".repeat(64);
        for bad in [
            "ab",
            "Upper",
            "-abc",
            "abc-",
            "a_b",
            "a.b",
            "",
            long.as_str(),
        ] {
            match c.create_bucket(bad).await {
                Err(TroveError::InvalidArgument(msg)) => {
                    assert!(
                        msg.contains("bucket"),
                        "message for {bad:?} is unclear: {msg}"
                    )
                }
                other => panic!("bucket name {bad:?}: want INVALID_ARGUMENT, got {other:?}"),
            }
        }
        let data = Bytes::from_static(b"data");
        match c
            .put_object_bytes("no-such-bucket", "k", data.clone())
            .await
        {
            Err(TroveError::NotFound(msg)) => assert!(msg.contains("no-such-bucket"), "{msg}"),
            other => panic!("put into unknown bucket: want NOT_FOUND, got {other:?}"),
        }
        let long_key = "o".repeat(1025);
        for (what, key) in [("empty key", ""), ("1025-byte key", long_key.as_str())] {
            match c.put_object_bytes("good-bucket", key, data.clone()).await {
                Err(TroveError::InvalidArgument(_)) => {}
                other => panic!("{what}: want INVALID_ARGUMENT, got {other:?}"),
            }
        }
        match c.put_object_bytes("Bad_Bucket", "k", data.clone()).await {
            Err(TroveError::InvalidArgument(_)) => {}
            other => panic!("put into bad bucket name: want INVALID_ARGUMENT, got {other:?}"),
        }
        match c
            .head_object("good-bucket", "missing", Consistency::Linearizable)
            .await
        {
            Err(TroveError::NotFound(_)) => {}
            other => panic!("head missing: want NOT_FOUND, got {other:?}"),
        }
        match list_all(&c, "no-such-bucket", "", 0).await {
            Err(TroveError::NotFound(_)) => {}
            other => panic!("list unknown bucket: want NOT_FOUND, got {other:?}"),
        }

        // Nothing changed.
        assert_eq!(bucket_names(&c).await, vec!["good-bucket"]);
        assert!(
            list_all(&c, "good-bucket", "", 0)
                .await
                .expect("list")
                .is_empty()
        );
        // And the cluster still works.
        let info = c
            .put_object_bytes("good-bucket", "k", data.clone())
            .await
            .expect("valid put");
        assert_eq!(info.size, 4);
    })
    .await;
}

/// A reader that hands out `data` a piece at a time, one piece per `every`: an upload
/// from a slow source.
fn trickle(data: DataGen, piece: u64, every: Duration) -> tokio::io::DuplexStream {
    let (mut tx, rx) = tokio::io::duplex(piece as usize);
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut offset = 0;
        while offset < data.size {
            let end = (offset + piece).min(data.size);
            if tx.write_all(&data.slice(offset, end)).await.is_err() {
                return;
            }
            offset = end;
            tokio::time::sleep(every).await;
        }
    });
    rx
}

/// A node that is not the leader, once there is one.
async fn a_follower(cluster: &mut Cluster) -> u64 {
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    cluster
        .all_ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_through_a_follower_may_take_longer_than_a_minute() {
    // A follower forwards an upload to the leader. The forwarded call once carried the
    // one-minute deadline of forwarded unary calls, so the leader cut off any upload
    // through a follower after 60 s. This one takes about 70 s.
    let seed = test_seed("upload_through_a_follower");
    let mut cluster = Cluster::start(3).await;
    deadline(TEST_TIMEOUT, async {
        let follower = a_follower(&mut cluster).await;
        cluster
            .client()
            .create_bucket("slow")
            .await
            .expect("create bucket");
        // The upload is this client's first request: after a forwarded answer the SDK
        // goes to the leader itself.
        let c = cluster.client_for(follower);
        let data = DataGen::new(seed, 35 * MIB);
        let t = Instant::now();
        let info = c
            .put_object(
                "slow",
                "trickled",
                trickle(data, MIB / 2, Duration::from_secs(1)),
                Some(data.size),
                None,
            )
            .await
            .expect("a 70-second upload through a follower");
        assert!(
            t.elapsed() > Duration::from_secs(61),
            "the upload took {:.1?}; it must outlast the one-minute deadline",
            t.elapsed()
        );
        assert_eq!(hex::encode(info.sha256), hex::encode(data.sha256()));
        let got = read_range(
            &cluster.client(),
            "slow",
            "trickled",
            None,
            Consistency::Linearizable,
        )
        .await;
        assert_eq!(got.len() as u64, data.size);
        assert_eq!(got, data.bytes(), "what was uploaded slowly reads back");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_through_a_follower_tells_the_client_where_the_leader_is() {
    // A client that knows only a follower downloads once (the follower forwards to the
    // leader, and its answer names the leader); with the follower gone, its next
    // download must go to the leader by itself.
    let seed = test_seed("download_through_a_follower");
    let mut cluster = Cluster::start(3).await;
    deadline(TEST_TIMEOUT, async {
        let follower = a_follower(&mut cluster).await;
        let data = DataGen::new(seed, 3 * MIB + 5);
        let all = cluster.client();
        all.create_bucket("fwd").await.expect("create bucket");
        all.put_object("fwd", "obj", data.reader(), Some(data.size), None)
            .await
            .expect("put");

        let mut cfg = trove_client::ClientConfig::new([cluster.node(follower).client_addr.clone()]);
        cfg.retry_budget = Duration::from_secs(3);
        let c = Client::new(cfg).expect("client");
        let (_, got) = c
            .get_object_bytes("fwd", "obj")
            .await
            .expect("get via follower");
        assert_eq!(got, data.bytes());
        cluster.kill9(follower);
        let (_, got) = c
            .get_object_bytes("fwd", "obj")
            .await
            .expect("the second download goes to the leader the follower named");
        assert_eq!(got, data.bytes());
    })
    .await;
}
