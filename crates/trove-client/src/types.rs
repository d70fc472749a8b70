//! Plain Rust types returned by the SDK, and their conversions from the wire types.
//! No prost type appears in the public API.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use trove_proto::v1 as pb;
use trove_types::TroveError;

/// Called with the number of object bytes sent so far.
pub type ProgressFn = Arc<dyn Fn(u64) + Send + Sync>;

/// How a read is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// Confirmed with a quorum through the leader: sees every acknowledged write.
    #[default]
    Linearizable,
    /// Served from the contacted node's applied state; may be stale.
    Local,
}

impl Consistency {
    pub(crate) fn to_pb(self) -> i32 {
        match self {
            Consistency::Linearizable => pb::Consistency::Linearizable as i32,
            Consistency::Local => pb::Consistency::Local as i32,
        }
    }
}

/// A record and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that produced this value.
    pub revision: u64,
    /// Revision at which the record was created.
    pub create_revision: u64,
}

/// A record in a listing (without its value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSummary {
    pub key: String,
    pub revision: u64,
    /// Size of the value in bytes.
    pub size: u64,
}

/// One page of a record listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordPage {
    pub records: Vec<RecordSummary>,
    /// Where the next page starts (pass it as `start_at`); `None` on the last page.
    pub next: Option<String>,
}

/// A bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketInfo {
    pub name: String,
    pub create_revision: u64,
}

/// An object's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub bucket: String,
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the whole object.
    pub sha256: [u8; 32],
    /// Revision of the put that created this version of the object.
    pub revision: u64,
    /// Number of chunks the object is stored as.
    pub chunk_count: u32,
}

impl ObjectInfo {
    /// The SHA-256 as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// One page of an object listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectPage {
    pub objects: Vec<ObjectInfo>,
    /// Where the next page starts (pass it as `start_at`); `None` on the last page.
    pub next: Option<String>,
}

/// A member's role in the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Leader,
    Follower,
    /// Receives the log but does not vote.
    Learner,
    /// A role this client version does not know.
    Other(String),
}

impl Role {
    /// The wire name: "leader", "follower", "learner", or what the server said.
    pub fn as_str(&self) -> &str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Learner => "learner",
            Role::Other(s) => s,
        }
    }

    fn parse(s: &str) -> Role {
        match s {
            "leader" => Role::Leader,
            "follower" => Role::Follower,
            "learner" => Role::Learner,
            other => Role::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member, as seen by the node that answered a status request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    pub role: Role,
    /// Whether the answering node could reach it (only a leader knows about others).
    pub reachable: bool,
    /// Last applied log index, when known (0 otherwise).
    pub applied_index: u64,
    /// Last log index replicated to it (leader's view).
    pub matched_index: Option<u64>,
}

/// The cluster as seen by one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    pub cluster_id: String,
    /// Node id of the current leader, if known.
    pub leader: Option<u64>,
    pub term: u64,
    /// The node that answered.
    pub node_id: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub members: Vec<MemberStatus>,
    /// Highest node id ever assigned.
    pub max_node_id: u64,
    /// True while the answering node recovers after a start and does not vote yet
    /// (its peers have not confirmed its state, e.g. after its volume was lost).
    pub recovering: bool,
    /// What a recovering node is waiting for (empty otherwise).
    pub recovery: String,
    /// Last log index covered by the node's latest snapshot (0 = none yet).
    pub snapshot_index: u64,
    /// Log entries up to this index exist only in the snapshot (0 = none purged).
    pub purged_index: u64,
}

/// One node's chunk verification and repair, from [`crate::Client::scrub_of`]. Counters
/// are since the node started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrubReport {
    /// The node that answered.
    pub node_id: u64,
    /// A scrub pass is running now.
    pub running: bool,
    /// Configured verification rate, bytes per second (0: unthrottled).
    pub rate_bytes_per_sec: u64,
    /// Seconds between scheduled passes (0: only on request).
    pub interval_secs: u64,
    pub passes_completed: u64,
    /// Chunks checked in the running (or last) pass, of `pass_total`.
    pub pass_checked: u64,
    pub pass_total: u64,
    /// Unix time the last pass finished (`None`: no pass finished yet).
    pub last_pass_finished_unix: Option<u64>,
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    /// Chunk files whose bytes did not match their hash (quarantined, never served).
    pub corrupt_found: u64,
    /// Chunks the state refers to whose file was missing.
    pub missing_found: u64,
    /// Chunks fetched again from a peer, verified and rewritten.
    pub repaired: u64,
    /// Bad chunks no peer could supply intact.
    pub unrepairable: u64,
    /// The most recent problem (empty: none).
    pub last_problem: String,
}

pub(crate) fn scrub_report(p: pb::ScrubResponse) -> ScrubReport {
    ScrubReport {
        node_id: p.node_id,
        running: p.running,
        rate_bytes_per_sec: p.rate_bytes_per_sec,
        interval_secs: p.interval_secs,
        passes_completed: p.passes_completed,
        pass_checked: p.pass_checked,
        pass_total: p.pass_total,
        last_pass_finished_unix: (p.last_pass_finished_unix > 0)
            .then_some(p.last_pass_finished_unix),
        chunks_checked: p.chunks_checked,
        bytes_checked: p.bytes_checked,
        corrupt_found: p.corrupt_found,
        missing_found: p.missing_found,
        repaired: p.repaired,
        unrepairable: p.unrepairable,
        last_problem: p.last_problem,
    }
}

/// A digest of one node's applied state, from [`crate::Client::state_digest_of`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDigest {
    /// The node that answered.
    pub node_id: u64,
    /// The last applied log index the digest covers.
    pub applied_index: u64,
    /// SHA-256 (hex) of the applied state.
    pub digest: String,
}

impl ClusterStatus {
    /// The leader's member entry, if the leader is known and listed.
    pub fn leader_member(&self) -> Option<&MemberStatus> {
        let id = self.leader?;
        self.members.iter().find(|m| m.id == id)
    }
}

pub(crate) fn object_info(p: pb::ObjectInfo) -> Result<ObjectInfo, TroveError> {
    let sha256: [u8; 32] = p.sha256.as_ref().try_into().map_err(|_| {
        TroveError::internal(format!(
            "server sent a {}-byte sha256 for {}/{}",
            p.sha256.len(),
            p.bucket,
            p.key
        ))
    })?;
    Ok(ObjectInfo {
        bucket: p.bucket,
        key: p.key,
        size: p.size,
        sha256,
        revision: p.revision,
        chunk_count: p.chunk_count,
    })
}

pub(crate) fn next_key(next: String) -> Option<String> {
    if next.is_empty() { None } else { Some(next) }
}

pub(crate) fn cluster_status(p: pb::StatusResponse) -> ClusterStatus {
    ClusterStatus {
        cluster_id: p.cluster_id,
        leader: p.leader,
        term: p.term,
        node_id: p.node_id,
        commit_index: p.commit_index,
        applied_index: p.applied_index,
        members: p
            .members
            .into_iter()
            .map(|m| MemberStatus {
                id: m.id,
                client_addr: m.client_addr,
                peer_addr: m.peer_addr,
                role: Role::parse(&m.role),
                reachable: m.reachable,
                applied_index: m.applied_index,
                matched_index: m.matched_index,
            })
            .collect(),
        max_node_id: p.max_node_id,
        recovering: p.recovering,
        recovery: p.recovery,
        snapshot_index: p.snapshot_index,
        purged_index: p.purged_index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_info_requires_a_32_byte_digest() {
        let mut p = pb::ObjectInfo {
            bucket: "b".into(),
            key: "k".into(),
            size: 3,
            sha256: Bytes::from(vec![7u8; 32]),
            revision: 5,
            chunk_count: 1,
        };
        let info = object_info(p.clone()).expect("valid");
        assert_eq!(info.sha256, [7u8; 32]);
        assert_eq!(info.sha256_hex(), "07".repeat(32));
        p.sha256 = Bytes::from_static(b"short");
        assert!(matches!(object_info(p), Err(TroveError::Internal(_))));
    }

    #[test]
    fn roles_round_trip() {
        for s in ["leader", "follower", "learner", "candidate"] {
            assert_eq!(Role::parse(s).as_str(), s);
        }
        assert_eq!(Role::parse("candidate"), Role::Other("candidate".into()));
    }
}
