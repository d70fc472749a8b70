//! Trove's cross-crate integration tests: one test binary that starts real `trove server`
//! processes (see `harness`) and drives them through the SDK, raw gRPC stubs, the CLI
//! and a Python client generated from `proto/`.
//!
//! Build the server first: `cargo build --bin trove` (`scripts/test.sh` does it).

mod acked;
mod backup;
mod chaos;
mod cli;
mod crash;
mod data;
mod diskfaults;
mod harness;
mod membership;
mod memory;
mod objects;
mod python;
mod records;
mod repair;
mod snapshot;
mod upgrade;
mod wipe;
mod wire;
