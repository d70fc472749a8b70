//! Trove's chaos test kit: runs a cluster of real `trove server` processes on loopback
//! with every peer link routed through a fault-injecting TCP proxy, drives it with
//! concurrent SDK clients while a seeded nemesis kills, pauses, partitions and
//! reconfigures nodes, records every operation, and then checks the history.
//!
//! - [`cluster`]: the node processes (start, SIGKILL, SIGSTOP/SIGCONT, restart, join,
//!   remove), each on its own ports, data directory and log file.
//! - [`proxy`]: the per-node peer proxy: partitions, one-way loss, delay and jitter,
//!   connection resets, per directed link.
//! - [`workload`]: the clients (record put / compare-and-set / get / delete, blob
//!   put / get) and [`history`]: the recorded operations.
//! - [`nemesis`]: the fault schedule (derived only from the seed) and its execution.
//! - [`monitor`]: status polls during the run (Raft invariants, leader availability).
//! - [`check`]: the checkers; [`runner`]: one whole run; [`report`]: its verdict.
//!
//! `trove chaos` (the CLI) and `tests/it/chaos.rs` drive [`runner::run`].

pub mod check;
pub mod cluster;
pub mod disks;
pub mod error;
pub mod history;
pub mod monitor;
pub mod nemesis;
pub mod proxy;
pub mod report;
pub mod runner;
pub mod segments;
pub mod workload;

pub use error::{Result, TestkitError};
pub use nemesis::FaultKind;
pub use report::Report;
pub use runner::{ChaosConfig, run};
