//! Names of every Prometheus metric a node exports, in one place, with their help texts.
//!
//! Names and units follow etcd's (`etcd_server_has_leader`, `etcd_disk_wal_fsync_duration_seconds`,
//! `grpc_server_handled_total`), so dashboards and alerts written for etcd carry over with a
//! prefix change.

/// 1 if this node knows a leader, else 0.
pub const HAS_LEADER: &str = "trove_server_has_leader";
/// 1 if this node is the leader, else 0.
pub const IS_LEADER: &str = "trove_server_is_leader";
/// The Raft term this node is in.
pub const TERM: &str = "trove_server_term";
/// Leader changes seen by this node since it started.
pub const LEADER_CHANGES: &str = "trove_server_leader_changes_seen_total";
/// Highest log index known committed (like etcd's gauge of the same name).
pub const PROPOSALS_COMMITTED: &str = "trove_server_proposals_committed_total";
/// Highest log index applied to the state machine.
pub const PROPOSALS_APPLIED: &str = "trove_server_proposals_applied_total";
/// Proposals made on this node that failed (no leader, leadership lost, node stopping).
pub const PROPOSALS_FAILED: &str = "trove_server_proposals_failed_total";
/// Proposals made on this node still waiting to be committed and applied.
pub const PROPOSALS_PENDING: &str = "trove_server_proposals_pending";
/// Committed entries not yet applied on this node.
pub const APPLY_LAG: &str = "trove_server_apply_lag_entries";
/// On the leader, per follower (`peer` label): entries the follower's log is behind the
/// leader's last log index.
pub const REPLICATION_LAG: &str = "trove_server_replication_lag_entries";
/// 1 if `/readyz` would answer ready, else 0.
pub const READY: &str = "trove_server_ready";
/// Duration of each Raft log fdatasync (one per group commit).
pub const WAL_FSYNC_SECONDS: &str = "trove_disk_wal_fsync_duration_seconds";
/// Duration of building a Raft snapshot.
pub const SNAPSHOT_BUILD_SECONDS: &str = "trove_snapshot_build_duration_seconds";
/// Duration of installing a snapshot received from the leader.
pub const SNAPSHOT_INSTALL_SECONDS: &str = "trove_snapshot_install_duration_seconds";
/// Bytes used on disk by the data directory (walked periodically).
pub const DATA_DIR_BYTES: &str = "trove_storage_data_dir_bytes";
/// Free bytes on the data directory's file system.
pub const DISK_FREE_BYTES: &str = "trove_storage_disk_free_bytes";
/// Records in the state machine.
pub const RECORDS: &str = "trove_storage_records";
/// Objects in the state machine (committed manifests).
pub const OBJECTS: &str = "trove_storage_objects";
/// Buckets in the state machine.
pub const BUCKETS: &str = "trove_storage_buckets";
/// Distinct chunks stored (content-addressed, deduplicated).
pub const CHUNKS: &str = "trove_storage_chunks";
/// Chunks fetched again from a peer, verified and rewritten after this node's copy was
/// found corrupt or missing (by a read or by the scrubber).
pub const CHUNKS_REPAIRED: &str = "trove_chunks_repaired_total";
/// Bad chunks no peer could supply intact (reads of them fail with DATA_LOSS).
pub const CHUNKS_UNREPAIRABLE: &str = "trove_chunks_unrepairable_total";
/// Chunk files found corrupt (bytes not matching their SHA-256; quarantined).
pub const SCRUB_CORRUPT_FOUND: &str = "trove_scrub_corrupt_chunks_found_total";
/// Chunks the state refers to whose file was missing.
pub const SCRUB_MISSING_FOUND: &str = "trove_scrub_missing_chunks_found_total";
/// Chunks the scrubber read and verified.
pub const SCRUB_CHUNKS_CHECKED: &str = "trove_scrub_chunks_checked_total";
/// Bytes the scrubber read and verified.
pub const SCRUB_BYTES_CHECKED: &str = "trove_scrub_bytes_checked_total";
/// Scrub passes completed.
pub const SCRUB_PASSES: &str = "trove_scrub_passes_completed_total";
/// Fraction of the current (or last) scrub pass done, 0 to 1.
pub const SCRUB_PASS_PROGRESS: &str = "trove_scrub_pass_progress_ratio";
/// Unix time the last scrub pass finished.
pub const SCRUB_LAST_PASS_FINISHED: &str = "trove_scrub_last_pass_finished_timestamp_seconds";
/// gRPC requests finished, by `grpc_service`, `grpc_method` and `grpc_code`.
pub const GRPC_HANDLED: &str = "grpc_server_handled_total";
/// gRPC request duration (whole stream for streaming calls), by service and method.
pub const GRPC_HANDLING_SECONDS: &str = "grpc_server_handling_seconds";

/// Kind of a metric, for its `# TYPE` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric: name, kind and help text.
pub const ALL: &[(&str, Kind, &str)] = &[
    (
        HAS_LEADER,
        Kind::Gauge,
        "1 if this node knows a leader, else 0.",
    ),
    (
        IS_LEADER,
        Kind::Gauge,
        "1 if this node is the leader, else 0.",
    ),
    (TERM, Kind::Gauge, "The Raft term this node is in."),
    (
        LEADER_CHANGES,
        Kind::Counter,
        "Leader changes seen by this node since it started.",
    ),
    (
        PROPOSALS_COMMITTED,
        Kind::Gauge,
        "Highest log index known committed.",
    ),
    (
        PROPOSALS_APPLIED,
        Kind::Gauge,
        "Highest log index applied to the state machine.",
    ),
    (
        PROPOSALS_FAILED,
        Kind::Counter,
        "Proposals made on this node that failed.",
    ),
    (
        PROPOSALS_PENDING,
        Kind::Gauge,
        "Proposals on this node not yet committed and applied.",
    ),
    (
        APPLY_LAG,
        Kind::Gauge,
        "Committed entries not yet applied on this node.",
    ),
    (
        REPLICATION_LAG,
        Kind::Gauge,
        "Leader only: entries each follower is behind the leader's log.",
    ),
    (
        READY,
        Kind::Gauge,
        "1 if the node is ready to serve (/readyz), else 0.",
    ),
    (
        WAL_FSYNC_SECONDS,
        Kind::Histogram,
        "Raft log fdatasync latency.",
    ),
    (
        SNAPSHOT_BUILD_SECONDS,
        Kind::Histogram,
        "Time to build a Raft snapshot.",
    ),
    (
        SNAPSHOT_INSTALL_SECONDS,
        Kind::Histogram,
        "Time to install a snapshot from the leader.",
    ),
    (
        DATA_DIR_BYTES,
        Kind::Gauge,
        "Bytes used on disk by the data directory.",
    ),
    (
        DISK_FREE_BYTES,
        Kind::Gauge,
        "Free bytes on the data directory's file system.",
    ),
    (RECORDS, Kind::Gauge, "Records in the state machine."),
    (OBJECTS, Kind::Gauge, "Objects in the state machine."),
    (BUCKETS, Kind::Gauge, "Buckets in the state machine."),
    (CHUNKS, Kind::Gauge, "Distinct chunks stored."),
    (
        CHUNKS_REPAIRED,
        Kind::Counter,
        "Chunks fetched again from a peer, verified and rewritten after this node's copy was found corrupt or missing.",
    ),
    (
        CHUNKS_UNREPAIRABLE,
        Kind::Counter,
        "Bad chunks no peer could supply intact (reads of them fail with DATA_LOSS).",
    ),
    (
        SCRUB_CORRUPT_FOUND,
        Kind::Counter,
        "Chunk files found corrupt (bytes not matching their SHA-256; quarantined).",
    ),
    (
        SCRUB_MISSING_FOUND,
        Kind::Counter,
        "Chunks the state refers to whose file was missing.",
    ),
    (
        SCRUB_CHUNKS_CHECKED,
        Kind::Counter,
        "Chunks the scrubber read and verified.",
    ),
    (
        SCRUB_BYTES_CHECKED,
        Kind::Counter,
        "Bytes the scrubber read and verified.",
    ),
    (SCRUB_PASSES, Kind::Counter, "Scrub passes completed."),
    (
        SCRUB_PASS_PROGRESS,
        Kind::Gauge,
        "Fraction of the current (or last) scrub pass done, 0 to 1.",
    ),
    (
        SCRUB_LAST_PASS_FINISHED,
        Kind::Gauge,
        "Unix time the last scrub pass finished.",
    ),
    (
        GRPC_HANDLED,
        Kind::Counter,
        "gRPC requests finished, by service, method and code.",
    ),
    (
        GRPC_HANDLING_SECONDS,
        Kind::Histogram,
        "gRPC request latency (whole stream for streams).",
    ),
];

/// Histogram buckets for every `_seconds` metric: 0.5 ms to about 8 s, doubling (etcd's
/// fsync buckets, one step finer at the bottom).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048,
    4.096, 8.192,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for (name, kind, help) in ALL {
            assert!(seen.insert(*name), "{name} twice");
            assert!(!help.is_empty());
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
            if *kind == Kind::Counter {
                assert!(name.ends_with("_total"), "{name}");
            }
            if *kind == Kind::Histogram {
                assert!(name.ends_with("_seconds"), "{name}");
            }
        }
    }
}
