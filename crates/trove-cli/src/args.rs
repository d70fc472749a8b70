//! The command line: every command, flag and environment variable of `trove`, with the
//! help texts users see.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  trove dev                                   # a 3-node cluster on 127.0.0.1:7001-7003
  export TROVE_ENDPOINTS=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
  trove cluster status
  trove record put greeting 'hello world'
  trove record get greeting
  trove record put greeting 'hi' --if-revision 5   # compare-and-set
  trove record put config --file ./config.json
  trove record list --prefix gr
  trove bucket create photos
  trove object put photos/cat.jpg ./cat.jpg
  tar c ./dir | trove object put backups/dir.tar -
  trove object get photos/cat.jpg ./copy.jpg
  trove object get photos/cat.jpg - --range 0-1024 | xxd | head
  trove object list photos --prefix c
  trove -o json object head photos/cat.jpg

Exit status: 0 success, 1 the operation failed (the message on stderr says why), 2 usage error.";

/// Trove: a replicated object and record store.
#[derive(Debug, Parser)]
#[command(name = "trove", version, after_long_help = EXAMPLES, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags shared by the client commands.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Client addresses of cluster nodes (host:port), comma-separated.
    #[arg(
        long,
        global = true,
        env = "TROVE_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
    )]
    pub endpoints: Vec<String>,
    /// Output format: human-readable text, or stable JSON for scripts (no progress bars).
    #[arg(short, long, global = true, value_enum, default_value_t = OutputFormat::Text, env = "TROVE_OUTPUT")]
    pub output: OutputFormat,
    /// Deadline of each request attempt (for streams: the longest wait for data), e.g. 10s, 500ms.
    #[arg(long, global = true, value_parser = parse_duration, default_value = "10s", env = "TROVE_TIMEOUT")]
    pub timeout: Duration,
    /// How long to keep retrying while the cluster is unavailable (no leader, node down), e.g. 30s.
    #[arg(long, global = true, value_parser = parse_duration, default_value = "30s", env = "TROVE_RETRY_BUDGET")]
    pub retry_budget: Duration,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a Trove node.
    Server(ServerArgs),
    /// Start a local cluster of `trove server` processes for development.
    Dev(DevArgs),
    /// Small key/value records with revisions and compare-and-set.
    #[command(subcommand)]
    Record(RecordCmd),
    /// Create, delete and list buckets.
    #[command(subcommand)]
    Bucket(BucketCmd),
    /// Large objects in buckets, streamed in chunks and verified end to end.
    #[command(subcommand)]
    Object(ObjectCmd),
    /// Cluster status and membership.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Off-cluster backups: save one while the cluster serves, verify it offline,
    /// restore it as a new cluster.
    #[command(subcommand, after_long_help = BACKUP_HELP)]
    Backup(BackupCmd),
    /// Seeded chaos test: a local cluster under load while nodes are killed, paused,
    /// partitioned and replaced; checks that no acknowledged write was lost.
    Chaos(crate::chaos::ChaosArgs),
    /// Closed-loop load against a cluster: ops/s, MB/s and p50/p99/p999 latency.
    Bench(crate::bench::BenchArgs),
    /// Ask one node's gRPC health service whether it is serving (exit 0) or not (exit 1).
    ///
    /// For container healthchecks and scripts: a node serves once it knows a leader.
    Health(HealthArgs),
    /// Node configuration files.
    #[command(subcommand)]
    Config(ConfigCmd),
}

/// `trove health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The node's client address.
    #[arg(
        long,
        env = "TROVE_HEALTH_ENDPOINT",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:7001"
    )]
    pub endpoint: String,
    /// The gRPC service to ask about ("" = the whole node).
    #[arg(long, default_value = "")]
    pub service: String,
}

/// Config commands.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Print the settings `trove server` would run with, as a TOML config file: flags
    /// over TROVE_* variables over the --config file over defaults.
    ///
    /// Takes the same flags as `trove server`. Settings that are required but missing
    /// are named on stderr (exit 0 all the same).
    Print(ServerArgs),
}

const BACKUP_HELP: &str = "\
Examples:
  trove backup save /backups/trove-$(date +%F).tbk
  trove backup save - | ssh vault 'cat > trove.tbk'
  trove backup verify /backups/trove-2024-05-01.tbk
  # a new 3-node cluster from the backup: on each new node (its own --id and dir)
  trove backup restore trove.tbk --id 1 --data-dir /var/lib/trove \\
      --initial-cluster 1=n1:7101,2=n2:7101,3=n3:7101
  trove server --id 1 --data-dir /var/lib/trove --listen-client 0.0.0.0:7001 \\
      --listen-peer 0.0.0.0:7101

A backup holds every write acknowledged before `save` started, and nothing later than
the applied index it reports. A restored cluster gets a new cluster id.";

/// Backup commands.
#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Stream a consistent backup of the whole cluster into FILE (`-`: stdout).
    ///
    /// Records, buckets, objects and their bytes, as of one moment, while the cluster
    /// keeps serving. Every piece is checked as it arrives; the file appears only when
    /// complete (written to a temp name, fsynced, renamed).
    Save {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Check a backup file offline: exit 0 if it is intact, 1 if not.
    ///
    /// No cluster is needed. Checks every checksum, every chunk's SHA-256 and every entry
    /// of the state (scratch space for the state file is taken in TMPDIR).
    Verify {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Prepare one member of a NEW cluster from a backup.
    ///
    /// Run it for each member with the same FILE and --initial-cluster, then start each
    /// with `trove server --id N --data-dir DIR --listen-client .. --listen-peer ..`
    /// (--initial-cluster is not needed then, and ignored). The new cluster gets a new id
    /// and holds exactly the backed-up data.
    Restore {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// This member's id in the new cluster.
        #[arg(long, value_name = "N")]
        id: u64,
        /// Its data directory: must be absent or empty.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Every member of the new cluster (id=peer address), the same for each.
        #[arg(long, value_name = "ID=HOST:PEERPORT,...")]
        initial_cluster: String,
        /// Mixed into the new cluster's id (the same for each member).
        #[arg(long, value_name = "TOKEN", default_value = "trove")]
        initial_cluster_token: String,
    },
}

/// Every flag may also come from a `TROVE_*` environment variable or from the
/// `--config` file (flags win over the environment, which wins over the file).
#[derive(Debug, Args)]
#[command(after_long_help = SERVER_HELP)]
pub struct ServerArgs {
    /// This node's id, at least 1; never reuse the id of a removed node. [required,
    /// unless --id-from-hostname]
    #[arg(long, env = "TROVE_ID")]
    pub id: Option<u64>,
    /// Take the id from the host name's trailing number plus one, for a Kubernetes
    /// StatefulSet (pod trove-0 is node 1, trove-2 node 3); --id wins if given.
    #[arg(long, env = "TROVE_ID_FROM_HOSTNAME")]
    pub id_from_hostname: bool,
    /// Data directory (created if absent). It holds the node's identity; a node refuses a
    /// directory that belongs to another node or cluster. [required]
    #[arg(long, env = "TROVE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address for the client API (gRPC), e.g. 0.0.0.0:7001. [required]
    #[arg(long, env = "TROVE_LISTEN_CLIENT", value_name = "HOST:PORT")]
    pub listen_client: Option<String>,
    /// Address for Raft traffic between nodes, e.g. 0.0.0.0:7101. [required]
    #[arg(long, env = "TROVE_LISTEN_PEER", value_name = "HOST:PORT")]
    pub listen_peer: Option<String>,
    /// Client address announced to clients and other nodes (default: --listen-client).
    #[arg(long, env = "TROVE_ADVERTISE_CLIENT", value_name = "HOST:PORT")]
    pub advertise_client: Option<String>,
    /// Peer address announced to other nodes (default: --listen-peer).
    #[arg(long, env = "TROVE_ADVERTISE_PEER", value_name = "HOST:PORT")]
    pub advertise_peer: Option<String>,
    /// Founding members of a new cluster, the same list on each of them. Ignored when the
    /// data directory already holds data.
    #[arg(
        long,
        env = "TROVE_INITIAL_CLUSTER",
        value_name = "ID=HOST:PEERPORT,..."
    )]
    pub initial_cluster: Option<String>,
    /// Mixed into the new cluster's id, so that two clusters founded with the same member
    /// list differ [default: trove].
    #[arg(long, env = "TROVE_INITIAL_CLUSTER_TOKEN", value_name = "TOKEN")]
    pub initial_cluster_token: Option<String>,
    /// Join an existing cluster through this member's client address: the node is added
    /// as a learner, then promoted to voter once caught up.
    #[arg(
        long,
        env = "TROVE_JOIN",
        value_name = "CLIENT-ADDR",
        conflicts_with = "initial_cluster"
    )]
    pub join: Option<String>,
    /// Build a Raft snapshot (and allow the log before it to be purged) after this many
    /// log entries [default: 100000, etcd's default snapshot count], but no sooner than 9×
    /// the last build's duration after it (builds of a large state are paced to a tenth of
    /// the time) and at the latest after 10× N entries; one is also built after 512 MiB of
    /// applied payload.
    #[arg(long, env = "TROVE_SNAPSHOT_EVERY_ENTRIES", value_name = "N")]
    pub snapshot_every_entries: Option<u64>,
    /// How fast the background scrubber reads and verifies this node's chunks, in MiB/s
    /// (0: unthrottled) [default: 16].
    #[arg(long, env = "TROVE_SCRUB_RATE_MIB", value_name = "MIB_PER_SEC")]
    pub scrub_rate_mib: Option<u64>,
    /// Hours between the starts of scheduled scrub passes (0: only when
    /// `trove cluster scrub --start` asks) [default: 24].
    #[arg(long, env = "TROVE_SCRUB_INTERVAL_HOURS", value_name = "HOURS")]
    pub scrub_interval_hours: Option<u64>,
    /// Bind outgoing peer (Raft) connections to this local IP, e.g. 127.0.0.11; the chaos
    /// harness uses it to tell nodes apart in its fault proxy [default: chosen by the OS].
    #[arg(long, env = "TROVE_PEER_SOURCE_IP", value_name = "IP")]
    pub peer_source_ip: Option<std::net::IpAddr>,
    /// Address for the admin HTTP port: /metrics (Prometheus), /livez, /readyz,
    /// /api/status and a status page at / [default: off].
    #[arg(long, env = "TROVE_LISTEN_ADMIN", value_name = "HOST:PORT")]
    pub listen_admin: Option<String>,
    /// Log format on stderr; json gives one object per line [default: text].
    #[arg(long, env = "TROVE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to log, in RUST_LOG syntax, e.g. `info,trove_raft=debug` [default: RUST_LOG,
    /// else info].
    #[arg(long, env = "TROVE_LOG_FILTER", value_name = "FILTER")]
    pub log_filter: Option<String>,
    /// Read settings from this TOML file: keys named like the flags
    /// (e.g. `data-dir = "/var/lib/trove"`); see `trove config print`.
    #[arg(long, env = "TROVE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

const SERVER_HELP: &str = "\
Examples:
  # found a 3-node cluster (run on each node with its own --id and addresses)
  trove server --id 1 --data-dir /var/lib/trove --listen-client 0.0.0.0:7001 \\
      --listen-peer 0.0.0.0:7101 --advertise-client n1:7001 --advertise-peer n1:7101 \\
      --initial-cluster 1=n1:7101,2=n2:7101,3=n3:7101
  # add a fourth node to the running cluster
  trove server --id 4 --data-dir /var/lib/trove --listen-client 0.0.0.0:7001 \\
      --listen-peer 0.0.0.0:7101 --advertise-client n4:7001 --advertise-peer n4:7101 --join n1:7001

Config file example (trove.toml; `trove config print --config trove.toml` shows the
merged settings):
  id = 1
  data-dir = \"/var/lib/trove\"
  listen-client = \"0.0.0.0:7001\"
  listen-peer = \"0.0.0.0:7101\"
  listen-admin = \"0.0.0.0:7400\"
  initial-cluster = [\"1=n1:7101\", \"2=n2:7101\", \"3=n3:7101\"]
  log-format = \"json\"
  log-filter = \"info,trove_raft=debug\"

Precedence: flags, then TROVE_* variables, then the file, then defaults.

The node exits with status 1 and a one-line reason for an unusable data directory, an
identity mismatch, a data format it does not understand, or a port in use. SIGINT and
SIGTERM stop it cleanly.";

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Starts N nodes on 127.0.0.1 (node i: client port BASE+i, peer port BASE+100+i, admin
/// HTTP port with the status page BASE+400+i, data in
/// DATA-DIR/node<i>, log in DATA-DIR/node<i>.log), waits for a leader, runs a short demo,
/// and stops the nodes on Ctrl-C. Running it again reuses the data.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// Directory for the nodes' data and logs.
    #[arg(long, default_value = "./trove-data")]
    pub data_dir: PathBuf,
    /// Node i listens on BASE+i (client), BASE+100+i (peer) and BASE+400+i (admin HTTP).
    #[arg(long, default_value_t = 7000, value_parser = clap::value_parser!(u16).range(1..=65000))]
    pub base_port: u16,
    /// Skip the demo (a record, a bucket and a 3 MiB object written and read back).
    #[arg(long)]
    pub no_demo: bool,
}

/// Record commands.
#[derive(Debug, Subcommand)]
pub enum RecordCmd {
    /// Create or replace a record (value up to 1 MiB). Prints the new revision.
    #[command(
        group(ArgGroup::new("source").required(true).args(["value", "file"])),
        override_usage = "trove record put <KEY> <VALUE | --file <F> | -> [--if-revision <R>]"
    )]
    Put {
        /// Record key (1 to 1024 bytes of UTF-8).
        key: String,
        /// The value; `-` reads it from stdin.
        value: Option<OsString>,
        /// Read the value from this file.
        #[arg(long, value_name = "F")]
        file: Option<PathBuf>,
        /// Write only if the record's current revision is R (0: only if it does not exist).
        #[arg(long, value_name = "R")]
        if_revision: Option<u64>,
    },
    /// Print a record's value (raw bytes on stdout; JSON adds the revision).
    Get {
        key: String,
        /// `linearizable` sees every acknowledged write; `local` asks one node and may be stale.
        #[arg(long, value_enum, default_value_t = ConsistencyArg::Linearizable)]
        consistency: ConsistencyArg,
    },
    /// Delete a record. Prints the revision of the delete.
    Delete {
        key: String,
        /// Delete only if the record's current revision is R.
        #[arg(long, value_name = "R")]
        if_revision: Option<u64>,
    },
    /// List records in key order (one page; `next` tells where the next page starts).
    List {
        /// Only keys starting with P.
        #[arg(long, value_name = "P", default_value = "")]
        prefix: String,
        /// At most N records (default 1000, at most 10000).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Start at this key (inclusive): the `next` of the previous page.
        #[arg(long, value_name = "KEY", default_value = "")]
        start_at: String,
    },
}

/// Read consistency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConsistencyArg {
    Linearizable,
    Local,
}

impl From<ConsistencyArg> for trove_client::Consistency {
    fn from(c: ConsistencyArg) -> Self {
        match c {
            ConsistencyArg::Linearizable => trove_client::Consistency::Linearizable,
            ConsistencyArg::Local => trove_client::Consistency::Local,
        }
    }
}

/// Bucket commands.
#[derive(Debug, Subcommand)]
pub enum BucketCmd {
    /// Create a bucket (3 to 63 characters of a-z, 0-9 and '-').
    Create { bucket: String },
    /// Delete an empty bucket.
    Delete { bucket: String },
    /// List buckets.
    List,
}

/// Object commands.
#[derive(Debug, Subcommand)]
pub enum ObjectCmd {
    /// Upload a file (or stdin with `-`) as BUCKET/KEY. Shows a progress bar on a terminal.
    Put {
        #[arg(value_name = "BUCKET/KEY", value_parser = parse_object_path)]
        target: ObjectPath,
        /// File to upload, or `-` for stdin.
        #[arg(value_name = "FILE|-")]
        source: String,
    },
    /// Download BUCKET/KEY to a file (written beside it, renamed once its SHA-256 is
    /// verified) or to stdout with `-`.
    Get {
        #[arg(value_name = "BUCKET/KEY", value_parser = parse_object_path)]
        target: ObjectPath,
        /// Destination file (or directory), or `-` for stdout.
        #[arg(value_name = "FILE|-")]
        dest: String,
        /// Only bytes START (inclusive) to END (exclusive); `START-` means to the end.
        /// A range is not checked against the whole object's SHA-256.
        #[arg(long, value_name = "START-END", value_parser = parse_range)]
        range: Option<(u64, u64)>,
        #[arg(long, value_enum, default_value_t = ConsistencyArg::Linearizable)]
        consistency: ConsistencyArg,
    },
    /// Show an object's size, SHA-256 and revision.
    Head {
        #[arg(value_name = "BUCKET/KEY", value_parser = parse_object_path)]
        target: ObjectPath,
        #[arg(long, value_enum, default_value_t = ConsistencyArg::Linearizable)]
        consistency: ConsistencyArg,
    },
    /// Delete an object.
    Delete {
        #[arg(value_name = "BUCKET/KEY", value_parser = parse_object_path)]
        target: ObjectPath,
    },
    /// List a bucket's objects in key order (one page; `next` tells where the next starts).
    List {
        bucket: String,
        /// Only keys starting with P.
        #[arg(long, value_name = "P", default_value = "")]
        prefix: String,
        /// At most N objects (default 1000, at most 10000).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Start at this key (inclusive): the `next` of the previous page.
        #[arg(long, value_name = "KEY", default_value = "")]
        start_at: String,
    },
}

/// A `BUCKET/KEY` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectPath {
    pub bucket: String,
    pub key: String,
}

/// Cluster commands.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Members, roles, leader, term, commit/applied indexes and reachability.
    Status,
    /// Add a member by its addresses: a learner first, then a voter once caught up
    /// (unless --no-promote). A node started with `trove server --join` asks for this
    /// itself. Waits until the new member has caught up.
    AddNode {
        /// The new node's client address.
        #[arg(long, value_name = "HOST:PORT")]
        client_addr: String,
        /// The new node's peer address.
        #[arg(long, value_name = "HOST:PORT")]
        peer_addr: String,
        /// Id for the new node (default: the next unused id).
        #[arg(long, value_name = "N")]
        id: Option<u64>,
        /// Keep the node a learner (it replicates but does not vote).
        #[arg(long)]
        no_promote: bool,
    },
    /// Remove a member. Its id is never reused.
    RemoveNode {
        #[arg(value_name = "ID")]
        id: u64,
    },
    /// Hand leadership to another voter.
    TransferLeader {
        #[arg(value_name = "ID")]
        id: u64,
    },
    /// Say whether node ID can be taken down now without losing quorum (exit 0 / 1).
    ///
    /// For an upgrade or a restart: the other voters that the leader reaches and that are
    /// caught up must still be a majority of all voters. Exit 0 if safe, 1 (with the
    /// reason) if not.
    UpgradeCheck {
        #[arg(value_name = "ID")]
        id: u64,
        /// A voter counts as caught up if its log is at most this many entries behind
        /// the leader's commit index.
        #[arg(long, value_name = "ENTRIES", default_value_t = 1000)]
        max_lag: u64,
    },
    /// What each node's scrubber checked, found and repaired (exit 1 if any node holds
    /// a damaged chunk no peer could repair).
    ///
    /// Every node verifies the SHA-256 of each chunk it stores, in the background at
    /// `--scrub-rate` and on every read; a corrupt or missing chunk is fetched again
    /// from a peer. With --start a pass begins now on every member (or on --node).
    Scrub {
        /// Start a scrub pass now (on nodes not already running one).
        #[arg(long)]
        start: bool,
        /// With --start: wait until the passes finish, then report.
        #[arg(long, requires = "start")]
        wait: bool,
        /// Only this member.
        #[arg(long, value_name = "ID")]
        node: Option<u64>,
    },
}

/// Parses `BUCKET/KEY` (the key may contain further slashes).
pub fn parse_object_path(s: &str) -> Result<ObjectPath, String> {
    match s.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok(ObjectPath {
            bucket: b.to_string(),
            key: k.to_string(),
        }),
        _ => Err(format!("expected BUCKET/KEY, got {s:?}")),
    }
}

/// Parses `START-END` (END exclusive) or `START-` (to the end: END = u64::MAX).
pub fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("expected START-END or START- (bytes, END exclusive), got {s:?}");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let end: u64 = match b.trim() {
        "" => u64::MAX,
        e => e.parse().map_err(|_| bad())?,
    };
    if end <= start {
        return Err(format!(
            "empty range {s:?}: END is exclusive and must exceed START"
        ));
    }
    Ok((start, end))
}

/// Parses a duration: `500ms`, `10s`, `1.5s`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (try 500ms, 10s, 2m)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown unit {u:?} in {s:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_object_paths() {
        let p = parse_object_path("b/dir/file.txt").expect("valid");
        assert_eq!((p.bucket.as_str(), p.key.as_str()), ("b", "dir/file.txt"));
        for bad in ["b", "/k", "b/", ""] {
            assert!(parse_object_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_ranges() {
        assert_eq!(parse_range("0-10"), Ok((0, 10)));
        assert_eq!(parse_range("5-"), Ok((5, u64::MAX)));
        for bad in ["10-10", "10-5", "-5", "a-b", "5"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "s", "10x", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_client_commands() {
        let cli = Cli::try_parse_from([
            "trove",
            "-o",
            "json",
            "--endpoints",
            "a:1,b:2",
            "record",
            "put",
            "k",
            "--file",
            "f",
            "--if-revision",
            "0",
        ])
        .expect("valid");
        assert_eq!(cli.global.endpoints, vec!["a:1", "b:2"]);
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert!(matches!(
            cli.command,
            Command::Record(RecordCmd::Put { if_revision: Some(0), ref file, .. }) if file.is_some()
        ));
        // A value and --file together, or neither, is a usage error.
        assert!(Cli::try_parse_from(["trove", "record", "put", "k", "v", "--file", "f"]).is_err());
        assert!(Cli::try_parse_from(["trove", "record", "put", "k"]).is_err());
        // Global flags may follow the subcommand.
        let cli = Cli::try_parse_from([
            "trove", "object", "get", "b/k", "-", "--range", "1-2", "-o", "json",
        ])
        .expect("valid");
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert!(Cli::try_parse_from(["trove", "backup", "save", "f"]).is_ok());
        assert!(Cli::try_parse_from(["trove", "backup", "restore", "f", "--id", "1"]).is_err());
        assert!(
            Cli::try_parse_from(["trove", "cluster", "upgrade-check", "2", "--max-lag", "5"])
                .is_ok()
        );
    }
}
