//! `trove server` and `trove config print`: merges flags, `TROVE_*` variables, the
//! `--config` TOML file and defaults (in that order of precedence) into a
//! `ServerConfig`, sets up logging, and runs the node until SIGINT or SIGTERM.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Result, anyhow};
use clap::CommandFactory;
use clap::error::ErrorKind;
use serde::{Deserialize, Serialize};

use crate::args::{Cli, LogFormat, ServerArgs};

/// Runs a node; returns its one-line failure reason as the error.
pub async fn run(mut args: ServerArgs) -> Result<()> {
    load_config_file(&mut args, "server");
    let log_format = args.log_format.unwrap_or(LogFormat::Text);
    let log_filter = log_filter(&args);
    let config = build_config(args).unwrap_or_else(|e| e.exit());
    if let Err(e) = crate::init_logging_filter(&log_filter, log_format) {
        usage(ErrorKind::ValueValidation, format!("--log-filter: {e}")).exit();
    }
    trove_server::run(config, crate::signals::shutdown())
        .await
        .map_err(|e| anyhow!("{e}"))
}

/// `trove config print`: the merged settings as a TOML file on stdout.
pub fn print_config(mut args: ServerArgs) -> Result<()> {
    load_config_file(&mut args, "config print");
    let effective = effective(&args);
    let text = toml::to_string(&effective).map_err(|e| anyhow!("cannot print: {e}"))?;
    print!("{text}");
    if let Err(e) = build_config(args) {
        // Incomplete or invalid: say so, but still show what was merged.
        eprintln!(
            "note: {}",
            e.to_string().trim_start_matches("error: ").trim()
        );
    }
    Ok(())
}

/// Reads `--config` (if given) into the settings not given as flags or variables; a
/// file that cannot be read or parsed is a usage error (exit 2).
fn load_config_file(args: &mut ServerArgs, sub: &str) {
    let Some(path) = args.config.clone() else {
        return;
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        usage_in(
            sub,
            ErrorKind::Io,
            format!("cannot read --config {}: {e}", path.display()),
        )
        .exit()
    });
    let file = parse_config_file(&text).unwrap_or_else(|e| {
        usage_in(
            sub,
            ErrorKind::InvalidValue,
            format!("--config {}: {e}", path.display()),
        )
        .exit()
    });
    merge_file(args, file);
}

/// The log filter: --log-filter / TROVE_LOG_FILTER / the file, else RUST_LOG, else info.
fn log_filter(a: &ServerArgs) -> String {
    a.log_filter
        .clone()
        .or_else(|| {
            std::env::var("RUST_LOG")
                .ok()
                .filter(|s| !s.trim().is_empty())
        })
        .unwrap_or_else(|| "info".into())
}

/// This machine's host name (the pod name in Kubernetes).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

/// `trove-2` -> 3: the trailing number (a StatefulSet ordinal) plus one.
fn id_from_hostname(host: &str) -> Option<u64> {
    let digits = host.len() - host.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let ordinal: u64 = host[host.len() - digits..].parse().ok()?;
    ordinal.checked_add(1)
}

/// The settings of a config file: the flags' names as keys (`data-dir`, or `data_dir`),
/// optionally under a `[server]` table. Also what `trove config print` prints.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_from_hostname: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_admin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_peer: Option<String>,
    /// `"1=a:7101,2=b:7101"` or `["1=a:7101", "2=b:7101"]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_cluster: Option<MemberList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_cluster_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_source_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_every_entries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrub_rate_mib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrub_interval_hours: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_filter: Option<String>,
}

/// A member list as one comma-separated string or as an array.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MemberList {
    Text(String),
    List(Vec<String>),
}

impl MemberList {
    fn joined(self) -> String {
        match self {
            MemberList::Text(s) => s,
            MemberList::List(v) => v.join(","),
        }
    }
}

/// Parses a config file with the `toml` crate; keys may use `_` for `-`, and may sit
/// under a `[server]` table. Unknown keys and wrong types are errors (with the line).
pub fn parse_config_file(text: &str) -> Result<FileSettings, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut flat = toml::Table::new();
    for (key, value) in table {
        match (key.as_str(), value) {
            ("server", toml::Value::Table(inner)) => {
                for (k, v) in inner {
                    flat.insert(k.replace('_', "-"), v);
                }
            }
            (_, v) => {
                flat.insert(key.replace('_', "-"), v);
            }
        }
    }
    toml::Value::Table(flat)
        .try_into::<FileSettings>()
        .map_err(|e| e.to_string().trim().to_string())
}

/// Fills the settings not given as flags or variables from the file.
fn merge_file(a: &mut ServerArgs, f: FileSettings) {
    fn fill<T>(slot: &mut Option<T>, v: Option<T>) {
        if slot.is_none() {
            *slot = v;
        }
    }
    fill(&mut a.id, f.id);
    a.id_from_hostname |= f.id_from_hostname.unwrap_or(false);
    fill(&mut a.data_dir, f.data_dir);
    fill(&mut a.listen_client, f.listen_client);
    fill(&mut a.listen_peer, f.listen_peer);
    fill(&mut a.listen_admin, f.listen_admin);
    fill(&mut a.advertise_client, f.advertise_client);
    fill(&mut a.advertise_peer, f.advertise_peer);
    fill(
        &mut a.initial_cluster,
        f.initial_cluster.map(MemberList::joined),
    );
    fill(&mut a.initial_cluster_token, f.initial_cluster_token);
    fill(&mut a.join, f.join);
    fill(&mut a.peer_source_ip, f.peer_source_ip);
    fill(&mut a.snapshot_every_entries, f.snapshot_every_entries);
    fill(&mut a.scrub_rate_mib, f.scrub_rate_mib);
    fill(&mut a.scrub_interval_hours, f.scrub_interval_hours);
    fill(&mut a.log_format, f.log_format);
    fill(&mut a.log_filter, f.log_filter);
}

/// The merged settings with defaults filled in, as `trove config print` shows them.
fn effective(a: &ServerArgs) -> FileSettings {
    let defaults = trove_server::Tuning::default();
    FileSettings {
        id: a.id,
        id_from_hostname: a.id_from_hostname.then_some(true),
        data_dir: a.data_dir.clone(),
        listen_client: a.listen_client.clone(),
        listen_peer: a.listen_peer.clone(),
        listen_admin: a.listen_admin.clone(),
        advertise_client: a.advertise_client.clone(),
        advertise_peer: a.advertise_peer.clone(),
        initial_cluster: a.initial_cluster.as_ref().map(|s| {
            MemberList::List(
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect(),
            )
        }),
        initial_cluster_token: Some(
            a.initial_cluster_token
                .clone()
                .unwrap_or_else(|| "trove".into()),
        ),
        join: a.join.clone(),
        peer_source_ip: a.peer_source_ip,
        snapshot_every_entries: Some(
            a.snapshot_every_entries
                .unwrap_or(defaults.snapshot_every_entries),
        ),
        scrub_rate_mib: Some(
            a.scrub_rate_mib
                .unwrap_or(defaults.scrub_rate_bytes_per_sec >> 20),
        ),
        scrub_interval_hours: Some(
            a.scrub_interval_hours
                .unwrap_or(defaults.scrub_interval_secs / 3600),
        ),
        log_format: Some(a.log_format.unwrap_or(LogFormat::Text)),
        log_filter: Some(log_filter(a)),
    }
}

/// A clap usage error (exit status 2) in the `server` subcommand's context.
fn usage(kind: ErrorKind, msg: String) -> clap::Error {
    usage_in("server", kind, msg)
}

/// A clap usage error (exit status 2) in subcommand `sub`'s context (`config print`).
fn usage_in(sub: &str, kind: ErrorKind, msg: String) -> clap::Error {
    let mut cmd = Cli::command();
    let mut names = sub.split(' ');
    let found = names.next().and_then(|first| {
        let mut c = cmd.find_subcommand_mut(first)?.clone();
        for n in names {
            c = c.find_subcommand_mut(n)?.clone();
        }
        Some(c)
    });
    found
        .map(|s| s.bin_name(format!("trove {sub}")))
        .unwrap_or(cmd)
        .error(kind, msg)
}

/// Checks the merged settings and builds the server's configuration.
fn build_config(mut a: ServerArgs) -> Result<trove_server::ServerConfig, clap::Error> {
    if a.id.is_none() && a.id_from_hostname {
        let host = hostname();
        a.id = Some(id_from_hostname(&host).ok_or_else(|| {
            usage(
                ErrorKind::ValueValidation,
                format!("--id-from-hostname: host name {host:?} does not end in a number"),
            )
        })?);
    }
    let missing: Vec<&str> = [
        ("--id", a.id.is_none()),
        ("--data-dir", a.data_dir.is_none()),
        ("--listen-client", a.listen_client.is_none()),
        ("--listen-peer", a.listen_peer.is_none()),
    ]
    .into_iter()
    .filter_map(|(flag, absent)| absent.then_some(flag))
    .collect();
    let (Some(id), Some(data_dir), Some(listen_client), Some(listen_peer)) =
        (a.id, a.data_dir, a.listen_client, a.listen_peer)
    else {
        return Err(usage(
            ErrorKind::MissingRequiredArgument,
            format!(
                "missing {} (give each as a flag, a TROVE_* variable, or in the --config file)",
                missing.join(", ")
            ),
        ));
    };
    if id == 0 {
        return Err(usage(
            ErrorKind::ValueValidation,
            "--id must be at least 1".into(),
        ));
    }
    if a.join.is_some() && a.initial_cluster.is_some() {
        return Err(usage(
            ErrorKind::ArgumentConflict,
            "--join and --initial-cluster cannot be used together".into(),
        ));
    }
    let mut cfg = trove_server::ServerConfig::new(id, data_dir, listen_client, listen_peer);
    cfg.advertise_client = a.advertise_client;
    cfg.advertise_peer = a.advertise_peer;
    if let Some(ic) = a.initial_cluster {
        cfg.initial_cluster = trove_server::parse_initial_cluster(&ic).map_err(|e| {
            usage(
                ErrorKind::ValueValidation,
                format!("--initial-cluster: {e}"),
            )
        })?;
    }
    if let Some(t) = a.initial_cluster_token {
        cfg.initial_cluster_token = t;
    }
    cfg.join = a.join;
    cfg.peer_source_ip = a.peer_source_ip;
    cfg.listen_admin = a.listen_admin;
    if let Some(n) = a.snapshot_every_entries {
        if n == 0 {
            return Err(usage(
                ErrorKind::ValueValidation,
                "--snapshot-every-entries must be at least 1".into(),
            ));
        }
        cfg.tuning.snapshot_every_entries = n;
    }
    if let Some(mib) = a.scrub_rate_mib {
        cfg.tuning.scrub_rate_bytes_per_sec = mib.saturating_mul(1 << 20);
    }
    if let Some(h) = a.scrub_interval_hours {
        cfg.tuning.scrub_interval_secs = h.saturating_mul(3600);
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> ServerArgs {
        let mut full = vec!["trove", "server"];
        full.extend_from_slice(args);
        match Cli::try_parse_from(full).expect("valid").command {
            crate::args::Command::Server(a) => a,
            _ => panic!("not server"),
        }
    }

    fn apply_config_file(a: &mut ServerArgs, text: &str) -> Result<(), String> {
        merge_file(a, parse_config_file(text)?);
        Ok(())
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let mut a = parse(&["--id", "2", "--listen-client", "1.2.3.4:7001"]);
        let file = r#"
            # a comment
            [server]
            id = 9
            data_dir = "/var/lib/trove # not a comment"
            listen-client = "0.0.0.0:1"
            listen-peer = '0.0.0.0:7101'   # trailing comment
            listen-admin = "0.0.0.0:7400"
            initial-cluster = ["1=a:7101", "2=b:7101"]
            log-format = "json"
            log-filter = "info,trove_raft=debug"
        "#;
        apply_config_file(&mut a, file).expect("valid file");
        assert_eq!(a.id, Some(2));
        assert_eq!(a.listen_client.as_deref(), Some("1.2.3.4:7001"));
        assert_eq!(a.listen_peer.as_deref(), Some("0.0.0.0:7101"));
        assert_eq!(
            a.data_dir,
            Some(PathBuf::from("/var/lib/trove # not a comment"))
        );
        assert_eq!(a.initial_cluster.as_deref(), Some("1=a:7101,2=b:7101"));
        assert_eq!(a.log_format, Some(LogFormat::Json));
        assert_eq!(a.log_filter.as_deref(), Some("info,trove_raft=debug"));
        let cfg = build_config(a).expect("complete");
        assert_eq!(cfg.node_id, 2);
        assert_eq!(cfg.initial_cluster.len(), 2);
        assert_eq!(cfg.initial_cluster_token, "trove");
        assert_eq!(cfg.listen_admin.as_deref(), Some("0.0.0.0:7400"));
    }

    #[test]
    fn ids_come_from_statefulset_host_names() {
        assert_eq!(id_from_hostname("trove-0"), Some(1));
        assert_eq!(id_from_hostname("trove-12"), Some(13));
        assert_eq!(id_from_hostname("trove"), None);
        assert_eq!(id_from_hostname(""), None);
    }

    #[test]
    fn printed_config_reads_back_the_same() {
        let mut a = parse(&["--id", "3", "--initial-cluster", "1=a:1,2=b:2,3=c:3"]);
        apply_config_file(&mut a, "data-dir = \"/d\"\nlisten-client = \"x:1\"\n").expect("valid");
        let printed = toml::to_string(&effective(&a)).expect("prints");
        assert!(printed.contains("initial-cluster = ["), "{printed}");
        assert!(
            printed.contains("snapshot-every-entries = 10000"),
            "{printed}"
        );
        let back = parse_config_file(&printed).expect("reads back");
        assert_eq!(back.id, Some(3));
        assert_eq!(back.data_dir, Some(PathBuf::from("/d")));
        assert_eq!(
            back.initial_cluster.map(MemberList::joined).as_deref(),
            Some("1=a:1,2=b:2,3=c:3")
        );
    }

    #[test]
    fn bad_files_and_missing_settings_are_reported() {
        for bad in [
            "nonsense",
            "colour = \"blue\"",
            "id = \"abc\"",
            "join = \"open",
            "log-format = \"xml\"",
            "peer-source-ip = \"not-an-ip\"",
        ] {
            let mut a = parse(&[]);
            assert!(apply_config_file(&mut a, bad).is_err(), "{bad}");
        }
        let err = parse_config_file("id = 1\ncolour = 2\n").expect_err("unknown key");
        assert!(err.contains("colour"), "{err}");
        let err = build_config(parse(&["--id", "1"])).expect_err("incomplete");
        let msg = err.to_string();
        assert!(
            msg.contains("--data-dir") && msg.contains("--listen-peer"),
            "{msg}"
        );
        let a = parse(&[
            "--id",
            "1",
            "--data-dir",
            "d",
            "--listen-client",
            "a:1",
            "--listen-peer",
            "a:2",
            "--initial-cluster",
            "1=oops",
        ]);
        assert!(build_config(a).is_err());
    }
}
