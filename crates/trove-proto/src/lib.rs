//! Generated gRPC code for Trove (`trove.v1` public API, `trove.raft.v1` peer protocol),
//! the one mapping between domain errors and gRPC statuses, and the backup stream and
//! file format ([`backup`]).
//!
//! This is the only crate that names prost types; everything else speaks `trove-types`.

#![allow(clippy::all, missing_docs)]

pub mod backup;
pub mod status;

/// Public API, package `trove.v1`.
pub mod v1 {
    tonic::include_proto!("trove.v1");
}

/// Internal peer protocol, package `trove.raft.v1`.
pub mod raft {
    tonic::include_proto!("trove.raft.v1");
}

/// Encoded descriptor set of every Trove proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("trove_descriptor");

pub use status::{error_from_status, status_from_error};

/// Response metadata a node adds when it forwarded the request to the leader: the
/// leader's client address, so that clients send their next requests there directly.
pub const LEADER_ADDR_HEADER: &str = "x-trove-leader";
