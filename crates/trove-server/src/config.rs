//! Node configuration: addresses, data directory, bootstrap mode and Raft tuning.

use std::net::IpAddr;
use std::path::PathBuf;

use trove_types::Sha256;

/// Raft timing and snapshot tuning. The defaults suit a loaded 2-core machine: CPU
/// starvation must not look like a failed leader.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Election timeout range.
    pub election_min_ms: u64,
    /// Election timeout range.
    pub election_max_ms: u64,
    /// Build a snapshot after this many log entries (paced by the last build's duration;
    /// see `trove_raft`'s `snapshot_pace`). The default, 100,000, is etcd's.
    pub snapshot_every_entries: u64,
    /// How often the leader proposes the expiry of abandoned uploads and old request ids.
    pub expire_interval_ms: u64,
    /// Rate at which the scrubber reads and verifies chunks, in bytes per second
    /// (0: unthrottled; passes then run only when requested, see `scrub_interval_secs`).
    pub scrub_rate_bytes_per_sec: u64,
    /// Seconds between the starts of scheduled scrub passes (0: only on request).
    pub scrub_interval_secs: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            heartbeat_ms: 100,
            election_min_ms: 800,
            election_max_ms: 1600,
            snapshot_every_entries: 100_000,
            expire_interval_ms: 60_000,
            scrub_rate_bytes_per_sec: 16 * 1024 * 1024,
            scrub_interval_secs: 24 * 60 * 60,
        }
    }
}

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// This node's id (never reused in a cluster).
    pub node_id: u64,
    /// Data directory (created if absent).
    pub data_dir: PathBuf,
    /// Address to bind the client API on.
    pub listen_client: String,
    /// Address to bind the peer (Raft) port on.
    pub listen_peer: String,
    /// Client address other nodes and clients should use (default: listen_client).
    pub advertise_client: Option<String>,
    /// Peer address other nodes should use (default: listen_peer).
    pub advertise_peer: Option<String>,
    /// Founding members (id, peer address), for bootstrapping a new cluster.
    pub initial_cluster: Vec<(u64, String)>,
    /// Mixed into the cluster id so that two clusters founded with the same member
    /// list still get different ids.
    pub initial_cluster_token: String,
    /// Client address of a member of an existing cluster to join.
    pub join: Option<String>,
    /// Local IP that outgoing peer connections are bound to (default: chosen by the OS).
    /// Lets a test harness tell nodes apart by source address (all of 127/8 is loopback).
    pub peer_source_ip: Option<IpAddr>,
    /// Address for the admin HTTP port (metrics, health, status page); none: off.
    pub listen_admin: Option<String>,
    /// Raft tuning.
    pub tuning: Tuning,
}

impl ServerConfig {
    /// A configuration with defaults for everything but the essentials.
    pub fn new(
        node_id: u64,
        data_dir: PathBuf,
        listen_client: String,
        listen_peer: String,
    ) -> Self {
        ServerConfig {
            node_id,
            data_dir,
            listen_client,
            listen_peer,
            advertise_client: None,
            advertise_peer: None,
            initial_cluster: Vec::new(),
            initial_cluster_token: "trove".into(),
            join: None,
            peer_source_ip: None,
            listen_admin: None,
            tuning: Tuning::default(),
        }
    }

    /// The client address this node tells others about.
    pub fn client_addr(&self) -> String {
        self.advertise_client
            .clone()
            .unwrap_or_else(|| self.listen_client.clone())
    }

    /// The peer address this node tells others about.
    pub fn peer_addr(&self) -> String {
        self.advertise_peer
            .clone()
            .unwrap_or_else(|| self.listen_peer.clone())
    }
}

/// Parses `1=host:port,2=host:port,...` (ids must be positive and distinct).
pub fn parse_initial_cluster(s: &str) -> Result<Vec<(u64, String)>, String> {
    let mut out: Vec<(u64, String)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| {
            format!("bad --initial-cluster entry {part:?}: expected ID=HOST:PORT")
        })?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("bad node id {id:?} in --initial-cluster"))?;
        if id == 0 {
            return Err("node ids start at 1".into());
        }
        let addr = addr.trim();
        if !addr.contains(':') {
            return Err(format!(
                "bad address {addr:?} in --initial-cluster: expected HOST:PORT"
            ));
        }
        if out.iter().any(|(i, _)| *i == id) {
            return Err(format!("node id {id} appears twice in --initial-cluster"));
        }
        out.push((id, addr.to_string()));
    }
    if out.is_empty() {
        return Err("--initial-cluster is empty".into());
    }
    out.sort();
    Ok(out)
}

/// The cluster id of a cluster founded with `members` and `token`: the same on every
/// founding member, derived like etcd's from the initial member list.
pub fn derive_cluster_id(members: &[(u64, String)], token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"trove-cluster-v1\n");
    for (id, addr) in members {
        h.update(format!("{id}={addr}\n").as_bytes());
    }
    h.update(token.as_bytes());
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_initial_cluster() {
        let v = parse_initial_cluster("2=127.0.0.1:7102, 1=127.0.0.1:7101").expect("parse");
        assert_eq!(
            v,
            vec![(1, "127.0.0.1:7101".into()), (2, "127.0.0.1:7102".into())]
        );
        assert!(parse_initial_cluster("").is_err());
        assert!(parse_initial_cluster("0=a:1").is_err());
        assert!(parse_initial_cluster("1=a:1,1=b:2").is_err());
        assert!(parse_initial_cluster("1=nohost").is_err());
    }

    #[test]
    fn cluster_id_depends_on_members_and_token() {
        let a = vec![(1, "h:1".to_string()), (2, "h:2".to_string())];
        let b = vec![(1, "h:1".to_string()), (2, "h:3".to_string())];
        assert_eq!(derive_cluster_id(&a, "t"), derive_cluster_id(&a, "t"));
        assert_ne!(derive_cluster_id(&a, "t"), derive_cluster_id(&b, "t"));
        assert_ne!(derive_cluster_id(&a, "t"), derive_cluster_id(&a, "u"));
    }
}
