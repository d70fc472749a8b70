//! `trove server`: merges flags, `TROVE_*` variables and the `--config` file (in that
//! order of precedence) into a `ServerConfig`, sets up logging, and runs the node until
//! SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use clap::CommandFactory;
use clap::error::ErrorKind;

use crate::args::{Cli, LogFormat, ServerArgs};

/// Runs a node; returns its one-line failure reason as the error.
pub async fn run(mut args: ServerArgs) -> Result<()> {
    if let Some(path) = args.config.clone() {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| {
                usage(
                    ErrorKind::Io,
                    format!("cannot read --config {}: {e}", path.display()),
                )
            })
            .unwrap_or_else(|e| e.exit());
        apply_config_file(&mut args, &text)
            .map_err(|e| {
                usage(
                    ErrorKind::InvalidValue,
                    format!("--config {}: {e}", path.display()),
                )
            })
            .unwrap_or_else(|e| e.exit());
    }
    let log_format = args.log_format.unwrap_or(LogFormat::Text);
    let config = build_config(args).unwrap_or_else(|e| e.exit());
    crate::init_logging("info", log_format);
    trove_server::run(config, crate::signals::shutdown())
        .await
        .map_err(|e| anyhow!("{e}"))
}

/// A clap usage error (exit status 2) in the `server` subcommand's context.
fn usage(kind: ErrorKind, msg: String) -> clap::Error {
    let mut cmd = Cli::command();
    let sub = cmd.find_subcommand_mut("server").cloned();
    sub.map(|s| s.bin_name("trove server"))
        .unwrap_or(cmd)
        .error(kind, msg)
}

/// Checks the merged settings and builds the server's configuration.
fn build_config(a: ServerArgs) -> Result<trove_server::ServerConfig, clap::Error> {
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
    if let Some(n) = a.snapshot_every_entries {
        if n == 0 {
            return Err(usage(
                ErrorKind::ValueValidation,
                "--snapshot-every-entries must be at least 1".into(),
            ));
        }
        cfg.tuning.snapshot_every_entries = n;
    }
    Ok(cfg)
}

/// Fills the settings not given as flags or variables from a config file of
/// `key = value` lines (a TOML subset): keys are the flag names (`data-dir` or
/// `data_dir`), values are quoted strings, integers, bare words, or for
/// `initial-cluster` also an array of strings; `#` starts a comment; a `[server]`
/// header is allowed.
fn apply_config_file(a: &mut ServerArgs, text: &str) -> Result<(), String> {
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = strip_comment(raw).trim().to_string();
        if line.is_empty() || line == "[server]" {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {line_no}: expected key = value"))?;
        let key = key.trim().replace('_', "-");
        let value = parse_value(value.trim()).map_err(|e| format!("line {line_no}: {e}"))?;
        let bad = |what: &str| format!("line {line_no}: {key} must be {what}");
        match key.as_str() {
            "id" => {
                let id = value.parse().map_err(|_| bad("a positive integer"))?;
                a.id.get_or_insert(id);
            }
            "data-dir" => {
                a.data_dir.get_or_insert(PathBuf::from(value));
            }
            "listen-client" => set(&mut a.listen_client, value),
            "listen-peer" => set(&mut a.listen_peer, value),
            "advertise-client" => set(&mut a.advertise_client, value),
            "advertise-peer" => set(&mut a.advertise_peer, value),
            "initial-cluster" => set(&mut a.initial_cluster, value),
            "initial-cluster-token" => set(&mut a.initial_cluster_token, value),
            "join" => set(&mut a.join, value),
            "peer-source-ip" => {
                let ip = value.parse().map_err(|_| bad("an IP address"))?;
                a.peer_source_ip.get_or_insert(ip);
            }
            "snapshot-every-entries" => {
                let n = value.parse().map_err(|_| bad("a positive integer"))?;
                a.snapshot_every_entries.get_or_insert(n);
            }
            "log-format" => {
                let f = match value.as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(bad("\"text\" or \"json\"")),
                };
                a.log_format.get_or_insert(f);
            }
            _ => return Err(format!("line {line_no}: unknown setting {key:?}")),
        }
    }
    Ok(())
}

fn set(slot: &mut Option<String>, value: String) {
    slot.get_or_insert(value);
}

/// The line without a `#` comment that is outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some('"'), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => return &line[..i],
            _ => {}
        }
        escaped = false;
    }
    line
}

/// A value: `"basic \"string\""`, `'literal'`, an array of strings (joined with ','),
/// or a bare word/number.
fn parse_value(v: &str) -> Result<String, String> {
    if let Some(inner) = v.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or("unterminated array")?;
        let items: Result<Vec<String>, String> = split_array(inner)
            .into_iter()
            .map(|s| parse_value(s.trim()))
            .collect();
        return Ok(items?.join(","));
    }
    if let Some(inner) = v.strip_prefix('\'') {
        return inner
            .strip_suffix('\'')
            .map(str::to_string)
            .ok_or_else(|| "unterminated string".to_string());
    }
    if let Some(inner) = v.strip_prefix('"') {
        let inner = inner.strip_suffix('"').ok_or("unterminated string")?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                other => return Err(format!("unsupported escape \\{}", other.unwrap_or(' '))),
            }
        }
        return Ok(out);
    }
    if v.is_empty() || v.chars().any(char::is_whitespace) {
        return Err(format!("bad value {v:?} (quote strings)"));
    }
    Ok(v.to_string())
}

/// Splits the inside of `[..]` at commas outside quotes; empty items are dropped.
fn split_array(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quote: Option<char> = None;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, ',') => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
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
            initial-cluster = ["1=a:7101", "2=b:7101"]
            log-format = json
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
        let cfg = build_config(a).expect("complete");
        assert_eq!(cfg.node_id, 2);
        assert_eq!(cfg.initial_cluster.len(), 2);
        assert_eq!(cfg.initial_cluster_token, "trove");
    }

    #[test]
    fn bad_files_and_missing_settings_are_reported() {
        for bad in [
            "nonsense",
            "colour = \"blue\"",
            "id = abc",
            "join = \"open",
            "log-format = xml",
        ] {
            let mut a = parse(&[]);
            assert!(apply_config_file(&mut a, bad).is_err(), "{bad}");
        }
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
