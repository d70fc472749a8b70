//! `trove backup save|verify|restore`: off-cluster backups.
//!
//! `save` streams `Cluster.Backup` into a file (temp name, fsync, rename; or stdout);
//! `verify` and `restore` work offline on the file (see `trove_server::restore`).

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use trove_client::BackupInfo;
use trove_server::restore::{RestoreOptions, VerifyReport};

use crate::args::{BackupCmd, GlobalArgs, OutputFormat};
use crate::output::{human_bytes, print_json, print_line};

pub async fn run(g: &GlobalArgs, cmd: BackupCmd) -> Result<()> {
    match cmd {
        BackupCmd::Save { file } => save(g, &file).await,
        BackupCmd::Verify { file } => verify(g.output, file).await,
        BackupCmd::Restore {
            file,
            id,
            data_dir,
            initial_cluster,
            initial_cluster_token,
        } => {
            crate::init_logging("warn", crate::args::LogFormat::Text);
            let initial_cluster = trove_server::parse_initial_cluster(&initial_cluster)
                .map_err(|e| anyhow!("--initial-cluster: {e}"))?;
            let opts = RestoreOptions {
                backup: file,
                node_id: id,
                data_dir,
                initial_cluster,
                initial_cluster_token,
            };
            restore(g.output, opts).await
        }
    }
}

/// A byte progress bar on stderr, only for people: text output on a terminal.
fn progress_bar(format: OutputFormat, total: u64) -> Option<ProgressBar> {
    if format != OutputFormat::Text || !std::io::stderr().is_terminal() {
        return None;
    }
    let style = ProgressStyle::with_template(
        "{bar:30.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .ok()?;
    Some(ProgressBar::new(total).with_style(style))
}

fn info_json(i: &BackupInfo) -> serde_json::Value {
    json!({
        "cluster_id": i.cluster_id,
        "node_id": i.node_id,
        "applied_index": i.applied_index,
        "applied_term": i.applied_term,
        "created_unix_ms": i.created_unix_ms,
        "records": i.records,
        "buckets": i.buckets,
        "objects": i.objects,
        "uploads": i.uploads,
        "files": i.files,
        "bytes": i.total_bytes,
    })
}

/// Where `save` writes before the file is complete: a hidden name next to it.
fn temp_path(file: &Path) -> Result<PathBuf> {
    let name = file
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file name", file.display()))?;
    let tmp = format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id());
    Ok(file.with_file_name(tmp))
}

async fn save(g: &GlobalArgs, file: &Path) -> Result<()> {
    let ctx = crate::client_ctx(g);
    let to_stdout = file == Path::new("-");
    let mut reader = ctx.client.backup().await.context("starting the backup")?;
    let info = reader.info().clone();
    let bar = if to_stdout {
        None
    } else {
        progress_bar(ctx.format, info.total_bytes)
    };
    let tmp = if to_stdout {
        None
    } else {
        Some(temp_path(file)?)
    };
    let mut out: Box<dyn Write> = match &tmp {
        None => Box::new(std::io::stdout().lock()),
        Some(p) => Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            File::options()
                .write(true)
                .create_new(true)
                .open(p)
                .with_context(|| format!("creating {}", p.display()))?,
        )),
    };
    let written: Result<u64> = async {
        let mut file_bytes = 0u64;
        while let Some(bytes) = reader.next_bytes().await? {
            out.write_all(&bytes).context("writing the backup")?;
            file_bytes += bytes.len() as u64;
            if let Some(b) = &bar {
                b.set_position(reader.received_bytes());
            }
        }
        out.flush().context("writing the backup")?;
        Ok(file_bytes)
    }
    .await;
    drop(out);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let file_bytes = match (written, &tmp) {
        (Ok(n), None) => n,
        (Ok(n), Some(tmp)) => {
            let done = commit(tmp, file);
            if done.is_err() {
                let _ = std::fs::remove_file(tmp);
            }
            done?;
            n
        }
        (Err(e), tmp) => {
            if let Some(tmp) = tmp {
                let _ = std::fs::remove_file(tmp);
            }
            return Err(e.context("the backup was not saved"));
        }
    };
    let name = if to_stdout {
        "stdout".to_string()
    } else {
        file.display().to_string()
    };
    let text = format!(
        "OK backup of cluster {} at applied index {}: {} records, {} buckets, {} objects ({} files, {}) -> {name} ({})",
        info.cluster_id,
        info.applied_index,
        info.records,
        info.buckets,
        info.objects,
        info.files,
        human_bytes(info.total_bytes),
        human_bytes(file_bytes)
    );
    let summary = match ctx.format {
        OutputFormat::Json => {
            let mut v = info_json(&info);
            v["file"] = json!(name);
            v["file_bytes"] = json!(file_bytes);
            v.to_string()
        }
        OutputFormat::Text => text,
    };
    if to_stdout {
        // stdout holds the backup itself: the summary goes to stderr.
        eprintln!("{summary}");
        Ok(())
    } else {
        print_line(&summary)
    }
}

/// Makes the complete temp file durable under its final name.
fn commit(tmp: &Path, file: &Path) -> Result<()> {
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(tmp, file).with_context(|| format!("renaming to {}", file.display()))?;
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

/// Runs an offline backup operation on a blocking thread with a progress bar over the
/// file's size.
async fn offline<T: Send + 'static>(
    format: OutputFormat,
    file: &Path,
    op: impl FnOnce(&(dyn Fn(u64) + Sync)) -> T + Send + 'static,
) -> Result<T> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let bar = progress_bar(format, size);
    let bar2 = bar.clone();
    let out = tokio::task::spawn_blocking(move || {
        let progress = move |n: u64| {
            if let Some(b) = &bar2 {
                b.set_position(n);
            }
        };
        op(&progress)
    })
    .await?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    Ok(out)
}

fn verify_json(r: &VerifyReport) -> serde_json::Value {
    let h = &r.header;
    json!({
        "ok": true,
        "cluster_id": h.cluster_id,
        "applied_index": h.applied_index,
        "applied_term": h.applied_term,
        "created_unix_ms": h.created_unix_ms,
        "records": h.records,
        "buckets": h.buckets,
        "objects": h.objects,
        "uploads": h.uploads,
        "state_entries": r.state_entries,
        "chunks": r.chunks,
        "bytes": r.trailer.total_bytes,
        "file_bytes": r.file_bytes,
    })
}

async fn verify(format: OutputFormat, file: PathBuf) -> Result<()> {
    let path = file.clone();
    let res = offline(format, &file, move |p| {
        trove_server::restore::verify_file(&path, p)
    })
    .await?;
    let r = match res {
        Ok(r) => r,
        Err(e) => {
            if format == OutputFormat::Json {
                print_json(&json!({ "ok": false, "error": e.to_string() }))?;
            }
            return Err(anyhow!("{} is NOT a valid backup: {e}", file.display()));
        }
    };
    match format {
        OutputFormat::Json => print_json(&verify_json(&r)),
        OutputFormat::Text => {
            let h = &r.header;
            print_line(&format!(
                "OK {} is intact: cluster {}, applied index {}, taken at {} ms; {} records, {} buckets, {} objects, {} uploads in progress; {} chunks, {} of data; every checksum verified",
                file.display(),
                h.cluster_id,
                h.applied_index,
                h.created_unix_ms,
                h.records,
                h.buckets,
                h.objects,
                h.uploads,
                r.chunks,
                human_bytes(r.trailer.total_bytes)
            ))
        }
    }
}

async fn restore(format: OutputFormat, opts: RestoreOptions) -> Result<()> {
    let o = opts.clone();
    let file = opts.backup.clone();
    let r = offline(format, &file, move |p| {
        trove_server::restore::restore(&o, p)
    })
    .await?
    .map_err(|e| anyhow!("restore into {} failed: {e}", opts.data_dir.display()))?;
    let peer = opts
        .initial_cluster
        .iter()
        .find(|(id, _)| *id == opts.node_id)
        .map(|(_, p)| p.clone())
        .unwrap_or_default();
    match format {
        OutputFormat::Json => print_json(&json!({
            "node_id": opts.node_id,
            "data_dir": opts.data_dir.display().to_string(),
            "cluster_id": r.cluster_id,
            "source_cluster_id": r.header.cluster_id,
            "applied_index": r.header.applied_index,
            "records": r.counts.records,
            "buckets": r.counts.buckets,
            "objects": r.counts.objects,
        })),
        OutputFormat::Text => print_line(&format!(
            "OK node {} of new cluster {} prepared in {} from cluster {} at applied index {} ({} records, {} buckets, {} objects).\nStart it (and the other members) with: trove server --id {} --data-dir {} --listen-client <HOST:PORT> --listen-peer {peer}",
            opts.node_id,
            r.cluster_id,
            opts.data_dir.display(),
            r.header.cluster_id,
            r.header.applied_index,
            r.counts.records,
            r.counts.buckets,
            r.counts.objects,
            opts.node_id,
            opts.data_dir.display(),
        )),
    }
}
