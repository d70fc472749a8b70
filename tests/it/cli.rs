//! The real `trove` binary as a script would use it: `-o json` shapes from interface.md,
//! exit codes (0 success, 1 failed operation with an `error:` message, 2 usage error), and
//! the compare-and-set failure naming the current revision.

use std::time::Duration;

use serde_json::Value;
use trove_types::Sha256;

use crate::harness::{Cluster, deadline, trove_bin};

const TEST_TIMEOUT: Duration = Duration::from_secs(300);

pub(crate) struct Out {
    pub code: i32,
    pub stdout: String,
    stdout_bytes: Vec<u8>,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
}

/// Runs `trove <args>` with `TROVE_ENDPOINTS` set, feeding `stdin`.
pub(crate) async fn trove(endpoints: &str, args: &[&str], stdin: &[u8]) -> Out {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(trove_bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TROVE_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(args)
        .env("TROVE_ENDPOINTS", endpoints)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn trove");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).await.expect("write stdin");
    drop(input);
    let out = child.wait_with_output().await.expect("trove output");
    let out = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stdout_bytes: out.stdout.clone(),
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

/// Runs a command that must succeed and print JSON.
async fn ok_json(endpoints: &str, args: &[&str]) -> Value {
    let out = trove(endpoints, args, b"").await;
    assert_eq!(out.code, 0, "trove {args:?} failed: {}", out.stderr);
    out.json()
}

/// Runs a command that must fail with exit status 1 and an `error:` line.
async fn fails(endpoints: &str, args: &[&str]) -> String {
    let out = trove(endpoints, args, b"").await;
    assert_eq!(
        out.code, 1,
        "trove {args:?}: want exit 1, got {}: {}",
        out.code, out.stderr
    );
    assert!(
        out.stderr.contains("error:"),
        "trove {args:?}: no `error:` in {:?}",
        out.stderr
    );
    out.stderr.to_lowercase()
}

fn u64_field(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a number in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_json_shapes_and_exit_codes() {
    let mut cluster = Cluster::start(3).await;
    deadline(TEST_TIMEOUT, async {
        let ep = cluster.endpoints().join(",");
        let ep = ep.as_str();

        // Records.
        let put = ok_json(ep, &["-o", "json", "record", "put", "greeting", "hello"]).await;
        assert_eq!(put["key"], "greeting");
        let rev = u64_field(&put, "revision");
        let get = ok_json(ep, &["-o", "json", "record", "get", "greeting"]).await;
        assert_eq!(
            (get["key"].as_str(), get["value"].as_str()),
            (Some("greeting"), Some("hello"))
        );
        assert_eq!(u64_field(&get, "revision"), rev);
        let local = ok_json(
            ep,
            &[
                "-o",
                "json",
                "record",
                "get",
                "greeting",
                "--consistency",
                "local",
            ],
        )
        .await;
        assert_eq!(local["value"], "hello");

        // A value from stdin, and one that is not UTF-8 (from a file) comes back as base64.
        let out = trove(
            ep,
            &["-o", "json", "record", "put", "from-stdin", "-"],
            b"piped value",
        )
        .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        let get = ok_json(ep, &["-o", "json", "record", "get", "from-stdin"]).await;
        assert_eq!(get["value"], "piped value");
        let bin_path = cluster.root().join("binary-value");
        std::fs::write(&bin_path, [0xff, 0xfe, 0x00, 0x01]).expect("write file");
        ok_json(
            ep,
            &[
                "-o",
                "json",
                "record",
                "put",
                "binary",
                "--file",
                bin_path.to_str().expect("utf8"),
            ],
        )
        .await;
        let get = ok_json(ep, &["-o", "json", "record", "get", "binary"]).await;
        assert!(
            get.get("value").is_none(),
            "non-UTF-8 value must not be in `value`: {get}"
        );
        assert_eq!(get["value_base64"], "//4AAQ==");

        // Compare-and-set failure: exit 1, message names the current revision.
        let err = fails(
            ep,
            &[
                "-o",
                "json",
                "record",
                "put",
                "greeting",
                "again",
                "--if-revision",
                "1",
            ],
        )
        .await;
        assert!(
            err.contains(&rev.to_string()),
            "CAS failure does not name revision {rev}: {err}"
        );
        let err = fails(
            ep,
            &["record", "put", "greeting", "again", "--if-revision", "0"],
        )
        .await;
        assert!(
            err.contains(&rev.to_string()),
            "create-if-absent failure: {err}"
        );
        let cas = ok_json(
            ep,
            &[
                "-o",
                "json",
                "record",
                "put",
                "greeting",
                "bye",
                "--if-revision",
                &rev.to_string(),
            ],
        )
        .await;
        let rev2 = u64_field(&cas, "revision");
        assert!(rev2 > rev);

        // Not found is its own message.
        let err = fails(ep, &["-o", "json", "record", "get", "missing-key"]).await;
        assert!(err.contains("not found"), "{err}");

        // List: records with key and revision, and `next`.
        for k in ["list/a", "list/b", "list/c"] {
            ok_json(ep, &["-o", "json", "record", "put", k, "v"]).await;
        }
        let list = ok_json(ep, &["-o", "json", "record", "list", "--prefix", "list/"]).await;
        let keys: Vec<&str> = list["records"]
            .as_array()
            .expect("records array")
            .iter()
            .map(|r| {
                u64_field(r, "revision");
                r["key"].as_str().expect("key")
            })
            .collect();
        assert_eq!(keys, vec!["list/a", "list/b", "list/c"]);
        assert!(list["next"].is_null(), "next: {}", list["next"]);
        let page = ok_json(
            ep,
            &[
                "-o", "json", "record", "list", "--prefix", "list/", "--limit", "2",
            ],
        )
        .await;
        assert_eq!(page["records"].as_array().expect("records").len(), 2);
        assert_eq!(page["next"], "list/c");

        let del = ok_json(ep, &["-o", "json", "record", "delete", "greeting"]).await;
        assert_eq!(del["key"], "greeting");
        assert!(u64_field(&del, "revision") > rev2);
        fails(ep, &["record", "get", "greeting"]).await;

        // Buckets and objects.
        ok_json(ep, &["-o", "json", "bucket", "create", "cli-bucket"]).await;
        let err = fails(ep, &["bucket", "create", "Bad_Name"]).await;
        assert!(err.contains("bucket"), "{err}");
        let body: Vec<u8> = (0..(2 * 1024 * 1024 + 333))
            .map(|i: u32| (i % 251) as u8)
            .collect();
        let src = cluster.root().join("upload.bin");
        std::fs::write(&src, &body).expect("write upload");
        let sha = hex::encode(Sha256::digest(&body));
        let put = ok_json(
            ep,
            &[
                "-o",
                "json",
                "object",
                "put",
                "cli-bucket/dir/file.bin",
                src.to_str().expect("utf8"),
            ],
        )
        .await;
        assert_eq!(
            (put["bucket"].as_str(), put["key"].as_str()),
            (Some("cli-bucket"), Some("dir/file.bin"))
        );
        assert_eq!(u64_field(&put, "size"), body.len() as u64);
        assert_eq!(put["sha256"], sha.as_str());
        u64_field(&put, "revision");
        let head = ok_json(
            ep,
            &["-o", "json", "object", "head", "cli-bucket/dir/file.bin"],
        )
        .await;
        for f in ["bucket", "key", "size", "sha256", "revision"] {
            assert_eq!(head[f], put[f], "head field {f}");
        }
        let dst = cluster.root().join("download.bin");
        let out = trove(
            ep,
            &[
                "object",
                "get",
                "cli-bucket/dir/file.bin",
                dst.to_str().expect("utf8"),
            ],
            b"",
        )
        .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            std::fs::read(&dst).expect("read download") == body,
            "downloaded file differs"
        );
        // A byte range [start, end) to stdout.
        let out = trove(
            ep,
            &[
                "object",
                "get",
                "cli-bucket/dir/file.bin",
                "-",
                "--range",
                "1048570-1048590",
            ],
            b"",
        )
        .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            out.stdout_bytes == body[1_048_570..1_048_590],
            "range to stdout differs: {:?}",
            out.stdout_bytes
        );
        let err = fails(
            ep,
            &[
                "object",
                "put",
                "no-such-bucket/k",
                src.to_str().expect("utf8"),
            ],
        )
        .await;
        assert!(
            err.contains("not found") || err.contains("no-such-bucket"),
            "{err}"
        );
        let err = fails(ep, &["bucket", "delete", "cli-bucket"]).await;
        assert!(err.contains("empty"), "deleting a non-empty bucket: {err}");

        // Cluster status.
        let st = ok_json(ep, &["-o", "json", "cluster", "status"]).await;
        assert!(st["cluster_id"].is_string(), "cluster_id: {st}");
        let leader = u64_field(&st, "leader");
        u64_field(&st, "term");
        let members = st["members"].as_array().expect("members");
        assert_eq!(members.len(), 3);
        for m in members {
            u64_field(m, "id");
            u64_field(m, "applied_index");
            assert!(
                m["client_addr"].is_string() && m["peer_addr"].is_string(),
                "{m}"
            );
            assert!(m["reachable"].is_boolean(), "{m}");
            let role = m["role"].as_str().expect("role");
            assert!(["leader", "follower", "learner"].contains(&role), "{m}");
            assert_eq!(role == "leader", m["id"].as_u64() == Some(leader), "{m}");
        }

        // Usage errors exit 2.
        for args in [
            &["record", "put"][..],
            &["no-such-command"][..],
            &["record", "get", "k", "--consistency", "psychic"][..],
        ] {
            let out = trove(ep, args, b"").await;
            assert_eq!(
                out.code, 2,
                "trove {args:?}: want usage error 2, got {}",
                out.code
            );
        }
        // No reachable endpoint: a failed operation (1), not a usage error.
        let out = trove(
            "127.0.0.1:1",
            &["record", "get", "k", "--retry-budget", "2s"],
            b"",
        )
        .await;
        assert_eq!(out.code, 1, "unreachable cluster: {}", out.stderr);
        assert!(out.stderr.contains("error:"), "{}", out.stderr);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_every_workload_and_prints_the_figures() {
    deadline(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3).await;
        cluster.wait_for_leader(Duration::from_secs(30)).await;
        let ep = cluster.endpoints().join(",");
        for workload in [
            "record-put",
            "record-get",
            "record-get-local",
            "record-cas",
            "object-put",
            "object-get",
            "mixed",
        ] {
            let v = ok_json(
                &ep,
                &[
                    "-o",
                    "json",
                    "bench",
                    "--workload",
                    workload,
                    "--clients",
                    "2",
                    "--ops",
                    "40",
                    "--keys",
                    "20",
                    "--object-size",
                    "300000",
                ],
            )
            .await;
            assert_eq!(v["workload"], workload);
            assert_eq!(v["ops"], 40, "{v}");
            assert_eq!(v["errors"], 0, "{v}");
            assert!(v["ops_per_sec"].as_f64() > Some(0.0), "{v}");
            let (p50, p99, p999) = (
                v["p50_ms"].as_f64().expect("p50"),
                v["p99_ms"].as_f64().expect("p99"),
                v["p999_ms"].as_f64().expect("p999"),
            );
            assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{v}");
            if workload.starts_with("object") {
                // 40 objects of 300,000 bytes moved.
                let mb =
                    v["mb_per_sec"].as_f64().expect("mb/s") * v["seconds"].as_f64().expect("s");
                assert!((mb - 12.0).abs() < 0.01, "{v}");
            }
        }
        let out = trove(&ep, &["bench", "--ops", "10"], b"").await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stdout.starts_with("WORKLOAD"), "{}", out.stdout);
    })
    .await;
}

/// `bench --local` starts its own cluster and reports what each node spent: every replica
/// stores every chunk, so each node writes at least the bytes the clients wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_local_reports_memory_cpu_and_disk_writes_per_node() {
    deadline(TEST_TIMEOUT, async {
        let v = ok_json(
            "127.0.0.1:1",
            &[
                "-o",
                "json",
                "bench",
                "--local",
                "--base-port",
                "21800",
                "--workload",
                "object-put",
                "--ops",
                "4",
                "--object-size",
                "2000000",
            ],
        )
        .await;
        assert_eq!(v["ops"], 4, "{v}");
        assert_eq!(v["bytes_written"], 8_000_000, "{v}");
        let nodes = v["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), 3, "{v}");
        for n in nodes {
            assert!(n["peak_rss_bytes"].as_u64() > Some(1 << 20), "{v}");
            assert!(n["cpu_seconds"].as_f64() > Some(0.0), "{v}");
            let amp = n["write_amplification"]
                .as_f64()
                .expect("write amplification");
            // The chunk files hold the bytes once, and the raft log only names them
            // (every chunk the bench writes is distinct, so nothing is deduplicated
            // away). This was 2.0 while the log held a second copy. A follower outside
            // the majority may not have written the last chunk yet.
            assert!(
                (0.75..1.4).contains(&amp),
                "a replica wrote other than the chunk bytes once: {v}"
            );
        }
        // Re-seeding: a follower's volume is deleted and the node brought back.
        let v = ok_json(
            "127.0.0.1:1",
            &[
                "-o",
                "json",
                "bench",
                "--local",
                "--base-port",
                "21800",
                "--workload",
                "reseed",
                "--ops",
                "3",
                "--object-size",
                "1048576",
            ],
        )
        .await;
        assert_eq!(
            (v["workload"].as_str(), v["ops"].as_u64()),
            (Some("reseed"), Some(1)),
            "{v}"
        );
        assert!(v["mb_per_sec"].as_f64() > Some(0.0), "{v}");
        let out = trove("127.0.0.1:1", &["bench", "--workload", "reseed"], b"").await;
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains("needs --local"), "{}", out.stderr);
        // Without the etcd driver compiled in, asking for etcd says how to get it.
        let out = trove("127.0.0.1:1", &["bench", "--system", "etcd"], b"").await;
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains("--features etcd"), "{}", out.stderr);
    })
    .await;
}
