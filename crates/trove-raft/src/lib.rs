//! openraft glue for Trove: the type configuration, the storage adapters (log store
//! over the segment log, state machine over the sled state store), the network
//! adapter (tonic clients, one channel per peer) and the peer gRPC service.
//!
//! Nothing here knows about the public API; the server crate wires it up.

pub mod codec;
#[cfg(feature = "failpoints")]
mod failpoints;
pub mod gate;
pub mod log_store;
pub mod network;
pub mod peer_service;
mod snapshot_pace;
pub mod state_machine;
pub mod types;

pub use gate::{RecallReply, RecallRequest, VoteGate};
pub use log_store::LogStore;
pub use network::{Network, PeerIdentity};
pub use peer_service::{AnnounceHandler, FetchChunkHandler, PeerHooks, PeerService, RecallHandler};
pub use state_machine::{
    BackupExport, ChunkRepairer, RaftMeta, RestoredState, StateMachine, seed_restored_state,
};
pub use types::{Applied, LogId, Raft, SnapshotDir, TroveNode, TypeConfig};

use trove_types::limits::SNAPSHOT_MAX_ENTRIES_FACTOR;

/// openraft configuration tuned for Trove (validated).
pub fn raft_config(
    heartbeat_ms: u64,
    election_min_ms: u64,
    election_max_ms: u64,
    snapshot_every_entries: u64,
) -> Result<openraft::Config, openraft::ConfigError> {
    openraft::Config {
        cluster_name: "trove".into(),
        heartbeat_interval: heartbeat_ms,
        election_timeout_min: election_min_ms,
        election_timeout_max: election_max_ms,
        // A big snapshot is streamed; openraft uses this as the transfer's hard deadline.
        install_snapshot_timeout: 3_600_000,
        max_payload_entries: 256,
        // The state machine asks for snapshots, paced by their cost (`snapshot_pace`);
        // openraft's own policy is only the bound on how long the log may grow.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
            snapshot_every_entries.saturating_mul(SNAPSHOT_MAX_ENTRIES_FACTOR),
        ),
        max_in_snapshot_log_to_keep: 64,
        enable_pre_vote: Some(true),
        // A follower whose log goes back (a wiped, rolled-back or damaged volume) is a
        // fault Trove expects: the vote gate keeps such a node from voting until it is
        // re-seeded, and the leader must then search back for where their logs agree.
        // Without this openraft keeps the old match point (a debug build panics) and
        // never re-seeds the node.
        allow_log_reversion: Some(true),
        broadcast_submitted_on_append: Some(true),
        ..Default::default()
    }
    .validate()
}
