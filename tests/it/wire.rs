//! The gRPC API through raw tonic stubs from `trove-proto`, for what the SDK never sends:
//! wrong checksums, truncated and abandoned upload streams, explicit retried request ids,
//! and malformed input the SDK would refuse before sending. Each case checks the gRPC
//! code and that nothing became visible (and that an abandoned upload's chunk files are
//! collected on every node).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use tonic::transport::Channel;
use tonic::{Code, Status};
use trove_proto::v1::objects_client::ObjectsClient;
use trove_proto::v1::put_object_request::Part;
use trove_proto::v1::records_client::RecordsClient;
use trove_proto::v1::*;
use trove_types::Sha256;

use crate::data::{DataGen, test_seed};
use crate::harness::{Cluster, deadline, poll_until};

const TEST_TIMEOUT: Duration = Duration::from_secs(600);
const GC_TIMEOUT: Duration = Duration::from_secs(120);
const MIB: usize = 1024 * 1024;
const MAX_MESSAGE: usize = 8 * MIB;

fn objects(ch: &Channel) -> ObjectsClient<Channel> {
    ObjectsClient::new(ch.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

fn records(ch: &Channel) -> RecordsClient<Channel> {
    RecordsClient::new(ch.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

fn rid(client: &str, seq: u64) -> Option<RequestId> {
    Some(RequestId {
        client_id: client.to_string(),
        seq,
    })
}

fn header(
    bucket: &str,
    key: &str,
    size: Option<u64>,
    request_id: Option<RequestId>,
) -> PutObjectRequest {
    PutObjectRequest {
        part: Some(Part::Header(PutObjectHeader {
            bucket: bucket.into(),
            key: key.into(),
            size,
            request_id,
        })),
    }
}

fn data_msg(b: Bytes) -> PutObjectRequest {
    PutObjectRequest {
        part: Some(Part::Data(b)),
    }
}

fn trailer(sha: &[u8]) -> PutObjectRequest {
    PutObjectRequest {
        part: Some(Part::Trailer(PutObjectTrailer {
            sha256: Bytes::copy_from_slice(sha),
        })),
    }
}

/// An upload's messages: header, 1 MiB data messages, trailer with `sha` (or the real one).
fn upload_msgs(
    bucket: &str,
    key: &str,
    body: &Bytes,
    sha: Option<&[u8]>,
    request_id: Option<RequestId>,
) -> Vec<PutObjectRequest> {
    let real: [u8; 32] = Sha256::digest(body);
    let mut msgs = vec![header(bucket, key, Some(body.len() as u64), request_id)];
    let mut off = 0;
    while off < body.len() {
        let end = (off + MIB).min(body.len());
        msgs.push(data_msg(body.slice(off..end)));
        off = end;
    }
    msgs.push(trailer(sha.unwrap_or(&real)));
    msgs
}

async fn put_stream(ch: &Channel, msgs: Vec<PutObjectRequest>) -> Result<ObjectInfo, Status> {
    let resp = objects(ch).put(futures::stream::iter(msgs)).await?;
    resp.into_inner()
        .object
        .ok_or_else(|| Status::internal("PutObjectResponse without object"))
}

fn expect_code<T: std::fmt::Debug>(r: Result<T, Status>, want: &[Code], what: &str) -> Status {
    match r {
        Err(st) if want.contains(&st.code()) => {
            assert!(
                !st.message().is_empty(),
                "{what}: {:?} without a message",
                st.code()
            );
            eprintln!("{what}: {:?}: {}", st.code(), st.message());
            st
        }
        Err(st) => panic!(
            "{what}: want {want:?}, got {:?}: {}",
            st.code(),
            st.message()
        ),
        Ok(v) => panic!("{what}: want {want:?}, got success {v:?}"),
    }
}

async fn assert_no_object(ch: &Channel, bucket: &str, key: &str) {
    let head = objects(ch)
        .head(HeadObjectRequest {
            bucket: bucket.into(),
            key: key.into(),
            consistency: Consistency::Linearizable as i32,
        })
        .await;
    expect_code(
        head,
        &[Code::NotFound],
        &format!("head {bucket}/{key} after a failed upload"),
    );
}

async fn object_keys(ch: &Channel, bucket: &str) -> Vec<String> {
    let resp = objects(ch)
        .list(ListObjectsRequest {
            bucket: bucket.into(),
            ..Default::default()
        })
        .await
        .expect("list objects")
        .into_inner();
    resp.objects.into_iter().map(|o| o.key).collect()
}

/// Chunk files (named by the chunk's SHA-256 in hex) under `root`, outside snapshots
/// (a snapshot may legitimately hard-link a chunk that was live when it was taken).
fn chunk_files(root: &Path, hexes: &[String], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            if !name.contains("snap") {
                chunk_files(&path, hexes, out);
            }
        } else if hexes.iter().any(|h| name.contains(h.as_str())) {
            out.push(path);
        }
    }
}

fn chunk_hexes(body: &Bytes) -> Vec<String> {
    body.chunks(MIB)
        .map(|c| hex::encode(Sha256::digest(c)))
        .collect()
}

/// Waits until no node holds a chunk file of `body` any more.
async fn wait_chunks_collected(cluster: &Cluster, body: &Bytes, what: &str) {
    let hexes = chunk_hexes(body);
    let dirs: Vec<PathBuf> = cluster
        .all_ids()
        .iter()
        .map(|id| cluster.node(*id).data_dir.clone())
        .collect();
    poll_until(
        GC_TIMEOUT,
        &format!("chunks of the {what} to be collected"),
        async || {
            let mut left = Vec::new();
            for d in &dirs {
                chunk_files(d, &hexes, &mut left);
            }
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_uploads_leave_no_object_and_no_chunks() {
    let seed = test_seed("failed_uploads");
    // Snapshots every 20 entries, so that the log soon drops the entries of the failed
    // uploads (see the end).
    let mut cluster = Cluster::start_with(3, &["--snapshot-every-entries", "20"]).await;
    deadline(TEST_TIMEOUT, async {
        let leader = cluster.wait_for_leader(Duration::from_secs(60)).await;
        let ch = cluster.raw_channel(leader);
        let bucket = "uploads";
        objects(&ch)
            .create_bucket(CreateBucketRequest {
                bucket: bucket.into(),
                request_id: rid("wire-uploads", 1),
            })
            .await
            .expect("create bucket");
        let body = |n: u64, len: usize| Bytes::from(DataGen::new(seed ^ n, len as u64).bytes());

        // 1. Checksum mismatch: refused with INVALID_ARGUMENT; nothing visible; chunks collected.
        let b1 = body(1, 3 * MIB + 17);
        let wrong: [u8; 32] = Sha256::digest(b"something else");
        let st = expect_code(
            put_stream(
                &ch,
                upload_msgs(bucket, "mismatch", &b1, Some(&wrong), None),
            )
            .await,
            &[Code::InvalidArgument],
            "checksum mismatch",
        );
        let m = st.message().to_lowercase();
        assert!(
            m.contains("sha") || m.contains("checksum"),
            "unclear message: {}",
            st.message()
        );
        assert_no_object(&ch, bucket, "mismatch").await;

        // 2. A trailer whose digest is not 32 bytes.
        let b2 = body(2, 1000);
        expect_code(
            put_stream(
                &ch,
                upload_msgs(bucket, "short-sha", &b2, Some(&[1, 2, 3]), None),
            )
            .await,
            &[Code::InvalidArgument],
            "5-byte sha256",
        );
        assert_no_object(&ch, bucket, "short-sha").await;

        // 3. Declared size differs from the bytes sent (correct digest of what was sent).
        let b3 = body(3, MIB + 5);
        let mut msgs = upload_msgs(bucket, "size-lie", &b3, None, None);
        msgs[0] = header(bucket, "size-lie", Some(2 * MIB as u64), None);
        expect_code(
            put_stream(&ch, msgs).await,
            &[Code::InvalidArgument],
            "size mismatch",
        );
        assert_no_object(&ch, bucket, "size-lie").await;

        // 4. Stream ends cleanly but without a trailer (truncated upload).
        let b4 = body(4, 2 * MIB + 3);
        let mut msgs = upload_msgs(bucket, "truncated", &b4, None, None);
        msgs.pop();
        expect_code(
            put_stream(&ch, msgs).await,
            &[Code::InvalidArgument],
            "no trailer",
        );
        assert_no_object(&ch, bucket, "truncated").await;

        // 5. Data before the header, and a data message over 1 MiB.
        let b5 = body(5, 10);
        let mut msgs = upload_msgs(bucket, "no-header", &b5, None, None);
        msgs.remove(0);
        expect_code(
            put_stream(&ch, msgs).await,
            &[Code::InvalidArgument],
            "no header",
        );
        let b6 = body(6, MIB + 1);
        let sha6: [u8; 32] = Sha256::digest(&b6);
        let msgs = vec![
            header(bucket, "fat-message", None, None),
            data_msg(b6.clone()),
            trailer(&sha6),
        ];
        expect_code(
            put_stream(&ch, msgs).await,
            &[Code::InvalidArgument, Code::ResourceExhausted],
            "data message over 1 MiB",
        );
        assert_no_object(&ch, bucket, "fat-message").await;

        // 6. A client that vanishes midway: the call is dropped (HTTP/2 stream reset) after
        //    some of its chunks were committed and stored. Six of eight chunks are sent:
        //    more than the server's in-flight window, so some must have been stored.
        let b7 = body(7, 8 * MIB);
        let (mut tx, rx) = futures::channel::mpsc::channel::<PutObjectRequest>(2);
        let call = {
            let mut client = objects(&ch);
            tokio::spawn(async move { client.put(rx).await })
        };
        let mut msgs = upload_msgs(bucket, "abandoned", &b7, None, None).into_iter();
        for m in msgs.by_ref().take(7) {
            tx.send(m).await.expect("send the header and six chunks");
        }
        // Wait until a chunk sent is stored on the leader, so that the abandoned upload
        // really left something to collect.
        let sent_hexes: Vec<String> = chunk_hexes(&b7).into_iter().take(6).collect();
        let leader_dir = cluster.node(leader).data_dir.clone();
        poll_until(
            Duration::from_secs(60),
            "a chunk of the abandoned upload to be stored",
            async || {
                let mut found = Vec::new();
                chunk_files(&leader_dir, &sent_hexes, &mut found);
                if found.is_empty() {
                    Err("none stored yet".to_string())
                } else {
                    Ok(())
                }
            },
        )
        .await;
        call.abort();
        drop(tx);
        let _ = call.await;
        assert_no_object(&ch, bucket, "abandoned").await;

        // Nothing from any failed upload is listed, and their chunks are collected everywhere.
        assert!(
            object_keys(&ch, bucket).await.is_empty(),
            "failed uploads must not be listed"
        );
        // A chunk file is also the payload of the raft log entry that carried it, so a
        // failed upload's chunks go once the log drops those entries: after a snapshot
        // (openraft keeps 64 entries behind it). Enough writes for that follow.
        let records = cluster.client();
        for i in 0..120 {
            records
                .put_record(
                    &format!("wire/after-failed-uploads/{i}"),
                    Bytes::from_static(b"x"),
                    None,
                )
                .await
                .expect("record put");
        }
        wait_chunks_collected(&cluster, &b1, "checksum-mismatch upload").await;
        wait_chunks_collected(&cluster, &b4, "truncated upload").await;
        wait_chunks_collected(&cluster, &b7, "abandoned upload").await;

        // The same keys can then be uploaded properly.
        let info = put_stream(&ch, upload_msgs(bucket, "abandoned", &b7, None, None))
            .await
            .expect("a proper upload after the failures");
        assert_eq!(info.size, b7.len() as u64);
        assert_eq!(object_keys(&ch, bucket).await, vec!["abandoned"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_request_ids_apply_once() {
    let seed = test_seed("retried_request_ids");
    let mut cluster = Cluster::start(3).await;
    deadline(TEST_TIMEOUT, async {
        let leader = cluster.wait_for_leader(Duration::from_secs(60)).await;
        let ch = cluster.raw_channel(leader);
        let client = format!("retry-test-{seed}");
        let put =
            |key: &str, value: &'static str, expected: Option<u64>, seq: u64| PutRecordRequest {
                key: key.into(),
                value: Bytes::from_static(value.as_bytes()),
                expected_revision: expected,
                request_id: rid(&client, seq),
            };

        // A create-if-absent retried with the same id returns the original revision instead
        // of failing its own precondition.
        let first = records(&ch)
            .put(put("r", "v1", Some(0), 1))
            .await
            .expect("put")
            .into_inner();
        let again = records(&ch)
            .put(put("r", "v1", Some(0), 1))
            .await
            .expect("retry")
            .into_inner();
        assert_eq!(
            again.revision, first.revision,
            "a retry returns the original revision"
        );
        // A new id with the same payload is a new request: its precondition now fails.
        expect_code(
            records(&ch).put(put("r", "v1", Some(0), 2)).await,
            &[Code::FailedPrecondition],
            "new id",
        );
        let got = records(&ch)
            .get(GetRecordRequest {
                key: "r".into(),
                consistency: Consistency::Linearizable as i32,
            })
            .await
            .expect("get")
            .into_inner();
        assert_eq!(got.revision, first.revision, "the retried put applied once");

        // Two copies of one request in flight at once still apply once.
        let (mut ca, mut cb) = (records(&ch), records(&ch));
        let (a, b) = tokio::join!(
            ca.put(put("concurrent", "c", None, 3)),
            cb.put(put("concurrent", "c", None, 3)),
        );
        let (a, b) = (
            a.expect("copy a").into_inner(),
            b.expect("copy b").into_inner(),
        );
        assert_eq!(a.revision, b.revision, "concurrent copies of one request");

        // Delete retried: the original revision, not NOT_FOUND.
        let del = |seq| DeleteRecordRequest {
            key: "r".into(),
            expected_revision: None,
            request_id: rid(&client, seq),
        };
        let d1 = records(&ch)
            .delete(del(4))
            .await
            .expect("delete")
            .into_inner();
        let d2 = records(&ch)
            .delete(del(4))
            .await
            .expect("delete retry")
            .into_inner();
        assert_eq!(d1.revision, d2.revision);

        // Bucket creation retried: the original revision, not ALREADY_EXISTS.
        let cb = || CreateBucketRequest {
            bucket: "retry-bucket".into(),
            request_id: rid(&client, 5),
        };
        let b1 = objects(&ch)
            .create_bucket(cb())
            .await
            .expect("create")
            .into_inner();
        let b2 = objects(&ch)
            .create_bucket(cb())
            .await
            .expect("create retry")
            .into_inner();
        assert_eq!(b1.revision, b2.revision);

        // A whole upload retried with the same id: one object, the original revision.
        let body = Bytes::from(DataGen::new(seed, (2 * MIB + 9) as u64).bytes());
        let o1 = put_stream(
            &ch,
            upload_msgs("retry-bucket", "obj", &body, None, rid(&client, 6)),
        )
        .await
        .expect("upload");
        let o2 = put_stream(
            &ch,
            upload_msgs("retry-bucket", "obj", &body, None, rid(&client, 6)),
        )
        .await
        .expect("upload retry");
        assert_eq!(
            o1.revision, o2.revision,
            "a retried upload returns the original result"
        );
        let head = objects(&ch)
            .head(HeadObjectRequest {
                bucket: "retry-bucket".into(),
                key: "obj".into(),
                consistency: Consistency::Linearizable as i32,
            })
            .await
            .expect("head")
            .into_inner();
        assert_eq!(head.revision, o1.revision, "the upload was applied once");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_rejects_bad_input_before_writing() {
    let mut cluster = Cluster::start(3).await;
    deadline(TEST_TIMEOUT, async {
        let leader = cluster.wait_for_leader(Duration::from_secs(60)).await;
        // Ask a follower too: validation must not depend on which node is asked.
        let follower = cluster
            .live_ids()
            .into_iter()
            .find(|id| *id != leader)
            .expect("follower");
        for id in [leader, follower] {
            let ch = cluster.raw_channel(id);
            let put = |key: String, value: Bytes, request_id| PutRecordRequest {
                key,
                value,
                expected_revision: None,
                request_id,
            };
            let v = || Bytes::from_static(b"v");
            let cases = vec![
                ("empty key", put(String::new(), v(), None)),
                ("1025-byte key", put("k".repeat(1025), v(), None)),
                ("empty value", put("k".into(), Bytes::new(), None)),
                (
                    "value over 1 MiB",
                    put("k".into(), Bytes::from(vec![0u8; MIB + 1]), None),
                ),
                ("empty client id", put("k".into(), v(), rid("", 1))),
                (
                    "65-byte client id",
                    put("k".into(), v(), rid(&"c".repeat(65), 1)),
                ),
            ];
            for (what, req) in cases {
                expect_code(
                    records(&ch).put(req).await,
                    &[Code::InvalidArgument],
                    &format!("node {id}: {what}"),
                );
            }
            let get_empty = records(&ch)
                .get(GetRecordRequest {
                    key: String::new(),
                    consistency: Consistency::Linearizable as i32,
                })
                .await;
            expect_code(get_empty, &[Code::InvalidArgument], "get with an empty key");
            for bad in ["ab", "UPPER", "-abc", "a_b"] {
                let r = objects(&ch)
                    .create_bucket(CreateBucketRequest {
                        bucket: bad.into(),
                        request_id: None,
                    })
                    .await;
                expect_code(r, &[Code::InvalidArgument], &format!("bucket name {bad:?}"));
            }
            let body = Bytes::from_static(b"x");
            let r = put_stream(&ch, upload_msgs("no-such-bucket", "k", &body, None, None)).await;
            expect_code(r, &[Code::NotFound], "upload into an unknown bucket");
        }

        // Nothing was written.
        let ch = cluster.raw_channel(leader);
        let all = records(&ch)
            .list(ListRecordsRequest::default())
            .await
            .expect("list")
            .into_inner();
        assert!(all.records.is_empty(), "bad input wrote {:?}", all.records);
        let buckets = objects(&ch)
            .list_buckets(ListBucketsRequest::default())
            .await
            .expect("list buckets")
            .into_inner();
        assert!(
            buckets.buckets.is_empty(),
            "bad input created {:?}",
            buckets.buckets
        );
    })
    .await;
}
