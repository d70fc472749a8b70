//! A client no one on the team wrote: Python stubs generated from `proto/` with
//! grpcio-tools, plus grpcio-health-checking and grpcio-reflection, run
//! `tests/python/client_roundtrip.py` against a live node (health, reflection v1 and
//! v1alpha, a record and a multi-chunk object round trip).
//!
//! Interpreter: `TROVE_PYTHON`, else `<repo>/.venv/bin/python3`, else `python3`. Missing
//! Python packages fail the test (run `scripts/test.sh`, which installs them); never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::data::test_seed;
use crate::harness::{Cluster, LEADER_TIMEOUT, deadline};

const TEST_TIMEOUT: Duration = Duration::from_secs(300);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("TROVE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python3");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_generated_client_round_trips() {
    let py = python();
    let probe = Command::new(&py)
        .args(["-c", "import grpc_tools.protoc, grpc_health.v1.health_pb2, grpc_reflection.v1alpha.reflection_pb2"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        other => panic!(
            "{} cannot import grpc_tools / grpc_health / grpc_reflection ({other:?}); \
             run scripts/test.sh (it creates .venv with the pinned grpcio packages) or set TROVE_PYTHON",
            py.display()
        ),
    }
    let seed = test_seed("python_client");
    let stubs = tempfile::tempdir().expect("tempdir");
    let root = repo_root();
    run(
        Command::new(&py)
            .args(["-m", "grpc_tools.protoc", "-I"])
            .arg(root.join("proto"))
            .arg(format!("--python_out={}", stubs.path().display()))
            .arg(format!("--grpc_python_out={}", stubs.path().display()))
            .arg("trove/v1/trove.proto"),
        "grpc_tools.protoc",
    );
    assert!(
        stubs.path().join("trove/v1/trove_pb2_grpc.py").is_file(),
        "no stubs generated"
    );

    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
    let endpoint = cluster.node(leader).client_addr.clone();
    let script = root.join("tests/python/client_roundtrip.py");
    let stubs_dir = stubs.path().to_path_buf();
    let out = deadline(
        TEST_TIMEOUT,
        tokio::task::spawn_blocking(move || {
            Command::new(&py)
                .arg(script)
                .arg(stubs_dir)
                .arg(endpoint)
                .arg(seed.to_string())
                .output()
        }),
    )
    .await
    .expect("python task")
    .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "tests/python/client_roundtrip.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("python client: OK"),
        "script did not finish: {stdout}"
    );
}
