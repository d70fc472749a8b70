//! Generates the gRPC code from `proto/` with a vendored `protoc`, so a plain
//! `cargo build` needs nothing installed on the system.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut cfg = prost_build::Config::new();
    cfg.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    cfg.bytes(["."]);
    let files = [
        root.join("trove/v1/trove.proto"),
        root.join("trove/raft/v1/raft.proto"),
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("trove_descriptor.bin"))
        .compile_with_config(cfg, &files, std::slice::from_ref(&root))?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
