//! The openraft type configuration for Trove and the node description stored in the
//! membership.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use trove_types::{Command, CommandResult};

/// Addresses of one member, as recorded in the Raft membership.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TroveNode {
    /// Address of the peer (Raft) port.
    pub peer_addr: String,
    /// Address of the client API port; empty until the node announced it.
    pub client_addr: String,
}

impl fmt::Display for TroveNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer={} client={}", self.peer_addr, self.client_addr)
    }
}

/// Result of applying a command, as returned through `client_write`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied(pub CommandResult);

openraft::declare_raft_types!(
    /// Trove's Raft type configuration.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = TroveNode,
);

/// A snapshot as a directory (`state.bin` + `chunks/`), see `trove_storage::snapshot`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDir {
    /// Path of the snapshot directory.
    pub path: PathBuf,
}

pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotDir>;
pub type VoteRequest = openraft::raft::VoteRequest<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachine>;

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
