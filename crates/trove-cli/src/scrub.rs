//! `trove cluster scrub`: each member's chunk verification and repair, asked of every
//! member directly (a scrubber's figures are its own node's).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use serde_json::{Value, json};
use trove_client::ScrubReport;

use crate::Ctx;
use crate::args::OutputFormat;
use crate::cluster::gather_status;
use crate::output::{human_bytes, print_json, print_line, table};

/// How often `--wait` polls the nodes.
const POLL: Duration = Duration::from_millis(500);

/// One member's answer, or why it gave none.
type Answer = (u64, Result<ScrubReport, String>);

pub async fn run(ctx: &Ctx, start: bool, wait: bool, only: Option<u64>) -> Result<()> {
    let st = gather_status(&ctx.client).await?;
    let targets: Vec<(u64, String)> = st
        .members
        .iter()
        .filter(|m| only.is_none_or(|id| id == m.id))
        .map(|m| (m.id, m.client_addr.clone()))
        .collect();
    if targets.is_empty() {
        bail!(
            "node {} is not a member of the cluster",
            only.unwrap_or_default()
        );
    }
    let mut answers = ask(ctx, &targets, start).await;
    if wait {
        // A pass is done once the node says it is idle with more passes than before.
        let before: BTreeMap<u64, u64> = answers
            .iter()
            .filter_map(|(id, r)| r.as_ref().ok().map(|r| (*id, r.passes_completed)))
            .collect();
        loop {
            let done = answers.iter().all(|(id, r)| match r {
                Ok(r) => !r.running && r.passes_completed > before.get(id).copied().unwrap_or(0),
                Err(_) => true,
            });
            if done {
                break;
            }
            tokio::time::sleep(POLL).await;
            answers = ask(ctx, &targets, false).await;
        }
    }
    match ctx.format {
        OutputFormat::Json => print_json(&json!({
            "nodes": answers.iter().map(|(id, r)| answer_json(*id, r)).collect::<Vec<_>>(),
        }))?,
        OutputFormat::Text => print_line(&text(&answers, unix_now()))?,
    }
    let damaged: Vec<String> = answers
        .iter()
        .filter_map(|(id, r)| {
            r.as_ref()
                .ok()
                .filter(|r| r.unrepairable > 0)
                .map(|r| format!("node {id}: {} ({})", r.unrepairable, r.last_problem))
        })
        .collect();
    if !damaged.is_empty() {
        bail!("chunks that no peer could repair: {}", damaged.join("; "));
    }
    Ok(())
}

/// Asks every target at once (starting a pass first with `start`).
async fn ask(ctx: &Ctx, targets: &[(u64, String)], start: bool) -> Vec<Answer> {
    let calls = targets.iter().map(|(id, addr)| async move {
        let r = ctx
            .client
            .scrub_of(addr, start)
            .await
            .map_err(|e| e.to_string());
        (*id, r)
    });
    futures::future::join_all(calls).await
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn answer_json(id: u64, r: &Result<ScrubReport, String>) -> Value {
    match r {
        Err(e) => json!({ "id": id, "error": e }),
        Ok(r) => json!({
            "id": id,
            "running": r.running,
            "rate_bytes_per_sec": r.rate_bytes_per_sec,
            "interval_secs": r.interval_secs,
            "passes_completed": r.passes_completed,
            "pass_checked": r.pass_checked,
            "pass_total": r.pass_total,
            "last_pass_finished_unix": r.last_pass_finished_unix,
            "chunks_checked": r.chunks_checked,
            "bytes_checked": r.bytes_checked,
            "corrupt_found": r.corrupt_found,
            "missing_found": r.missing_found,
            "repaired": r.repaired,
            "unrepairable": r.unrepairable,
            "last_problem": r.last_problem,
        }),
    }
}

fn ago(now: u64, then: Option<u64>) -> String {
    match then {
        None => "never".to_string(),
        Some(t) => {
            let s = now.saturating_sub(t);
            match s {
                0..120 => format!("{s}s ago"),
                120..7200 => format!("{}m ago", s / 60),
                _ => format!("{}h ago", s / 3600),
            }
        }
    }
}

fn text(answers: &[Answer], now: u64) -> String {
    let rows: Vec<Vec<String>> = answers
        .iter()
        .map(|(id, r)| match r {
            Err(e) => vec![id.to_string(), format!("NO ANSWER: {e}")],
            Ok(r) => vec![
                id.to_string(),
                if r.running {
                    format!("running {}/{}", r.pass_checked, r.pass_total)
                } else {
                    "idle".to_string()
                },
                r.passes_completed.to_string(),
                ago(now, r.last_pass_finished_unix),
                format!("{} ({})", r.chunks_checked, human_bytes(r.bytes_checked)),
                r.corrupt_found.to_string(),
                r.missing_found.to_string(),
                r.repaired.to_string(),
                r.unrepairable.to_string(),
                r.last_problem.clone(),
            ],
        })
        .collect();
    table(
        &[
            "NODE",
            "STATE",
            "PASSES",
            "LAST PASS",
            "CHECKED",
            "CORRUPT",
            "MISSING",
            "REPAIRED",
            "UNREPAIRABLE",
            "LAST PROBLEM",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(unrepairable: u64) -> ScrubReport {
        ScrubReport {
            node_id: 2,
            running: false,
            rate_bytes_per_sec: 1 << 24,
            interval_secs: 86_400,
            passes_completed: 3,
            pass_checked: 10,
            pass_total: 10,
            last_pass_finished_unix: Some(1_000),
            chunks_checked: 30,
            bytes_checked: 3 << 20,
            corrupt_found: 2,
            missing_found: 1,
            repaired: 3 - unrepairable,
            unrepairable,
            last_problem: "chunk ab missing".into(),
        }
    }

    #[test]
    fn the_table_shows_what_was_found() {
        let t = text(&[(2, Ok(report(0))), (3, Err("timed out".into()))], 1_090);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NODE"), "{t}");
        assert!(
            lines[1].contains("90s ago") && lines[1].contains("3.0 MiB"),
            "{t}"
        );
        assert!(lines[2].contains("NO ANSWER: timed out"), "{t}");
    }

    #[test]
    fn json_has_every_counter() {
        let v = answer_json(2, &Ok(report(1)));
        for f in [
            "corrupt_found",
            "missing_found",
            "repaired",
            "unrepairable",
            "passes_completed",
            "last_pass_finished_unix",
        ] {
            assert!(v.get(f).is_some(), "{f}");
        }
        assert_eq!(v["unrepairable"], 1);
        assert_eq!(answer_json(3, &Err("x".into()))["error"], "x");
    }
}
