//! `trove bucket ...` and `trove object ...`: buckets, streamed uploads and verified
//! downloads with progress bars on a terminal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWriteExt};
use trove_client::{ObjectReader, ProgressFn};

use crate::Ctx;
use crate::args::{BucketCmd, ObjectCmd, OutputFormat};
use crate::output::{human_bytes, object_json, print_json, print_line, print_revision, table};

pub async fn run_bucket(ctx: &Ctx, cmd: BucketCmd) -> Result<()> {
    match cmd {
        BucketCmd::Create { bucket } => {
            let rev = ctx.client.create_bucket(&bucket).await?;
            print_revision(ctx.format, json!({ "bucket": bucket }), rev)
        }
        BucketCmd::Delete { bucket } => {
            let rev = ctx.client.delete_bucket(&bucket).await?;
            print_revision(ctx.format, json!({ "bucket": bucket }), rev)
        }
        BucketCmd::List => {
            let buckets = ctx.client.list_buckets().await?;
            match ctx.format {
                OutputFormat::Json => print_json(&json!({
                    "buckets": buckets.iter().map(|b| json!({
                        "name": b.name, "create_revision": b.create_revision,
                    })).collect::<Vec<_>>(),
                })),
                OutputFormat::Text if buckets.is_empty() => Ok(()),
                OutputFormat::Text => {
                    let rows: Vec<Vec<String>> = buckets
                        .iter()
                        .map(|b| vec![b.name.clone(), b.create_revision.to_string()])
                        .collect();
                    print_line(&table(&["BUCKET", "CREATED AT REVISION"], &rows))
                }
            }
        }
    }
}

pub async fn run_object(ctx: &Ctx, cmd: ObjectCmd) -> Result<()> {
    match cmd {
        ObjectCmd::Put { target, source } => {
            let (reader, size): (Box<dyn AsyncRead + Unpin + Send>, Option<u64>) = if source == "-"
            {
                (Box::new(tokio::io::stdin()), None)
            } else {
                let f = tokio::fs::File::open(&source)
                    .await
                    .with_context(|| format!("opening {source}"))?;
                let meta = f
                    .metadata()
                    .await
                    .with_context(|| format!("reading {source}"))?;
                if meta.is_dir() {
                    bail!(
                        "{source} is a directory; upload files one at a time (or tar them and use -)"
                    );
                }
                (Box::new(f), meta.is_file().then_some(meta.len()))
            };
            let bar = progress_bar(ctx, size);
            let progress = bar
                .clone()
                .map(|b| -> ProgressFn { Arc::new(move |n| b.set_position(n)) });
            let result = ctx
                .client
                .put_object(&target.bucket, &target.key, reader, size, progress)
                .await;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            let info = result?;
            match ctx.format {
                OutputFormat::Json => print_json(&object_json(&info)),
                OutputFormat::Text => print_line(&format!(
                    "OK {}/{} {} sha256 {} revision {}",
                    info.bucket,
                    info.key,
                    human_bytes(info.size),
                    info.sha256_hex(),
                    info.revision
                )),
            }
        }
        ObjectCmd::Get {
            target,
            dest,
            range,
            consistency,
        } => {
            let reader = ctx
                .client
                .get_object(&target.bucket, &target.key, range, consistency.into())
                .await?;
            if dest == "-" {
                return download_to_stdout(reader).await;
            }
            let path = destination(Path::new(&dest), &target.key);
            let info = reader.info.clone();
            let written = download_to_file(ctx, reader, &path).await?;
            match ctx.format {
                OutputFormat::Json => {
                    let mut v = object_json(&info);
                    v["file"] = json!(path.display().to_string());
                    v["bytes_written"] = json!(written);
                    print_json(&v)
                }
                OutputFormat::Text => print_line(&format!(
                    "OK wrote {} to {}{}",
                    human_bytes(written),
                    path.display(),
                    if range.is_none() {
                        " (sha256 verified)"
                    } else {
                        ""
                    }
                )),
            }
        }
        ObjectCmd::Head {
            target,
            consistency,
        } => {
            let info = ctx
                .client
                .head_object(&target.bucket, &target.key, consistency.into())
                .await?;
            match ctx.format {
                OutputFormat::Json => print_json(&object_json(&info)),
                OutputFormat::Text => print_line(&format!(
                    "bucket:   {}\nkey:      {}\nsize:     {} ({} bytes)\nsha256:   {}\nrevision: {}\nchunks:   {}",
                    info.bucket,
                    info.key,
                    human_bytes(info.size),
                    info.size,
                    info.sha256_hex(),
                    info.revision,
                    info.chunk_count
                )),
            }
        }
        ObjectCmd::Delete { target } => {
            let rev = ctx
                .client
                .delete_object(&target.bucket, &target.key)
                .await?;
            print_revision(
                ctx.format,
                json!({ "bucket": target.bucket, "key": target.key }),
                rev,
            )
        }
        ObjectCmd::List {
            bucket,
            prefix,
            limit,
            start_at,
        } => {
            let page = ctx
                .client
                .list_objects(&bucket, &prefix, &start_at, limit.unwrap_or(0))
                .await?;
            match ctx.format {
                OutputFormat::Json => print_json(&json!({
                    "objects": page.objects.iter().map(object_json).collect::<Vec<_>>(),
                    "next": page.next,
                })),
                OutputFormat::Text => {
                    if !page.objects.is_empty() {
                        let rows: Vec<Vec<String>> = page
                            .objects
                            .iter()
                            .map(|o| {
                                vec![human_bytes(o.size), o.revision.to_string(), o.key.clone()]
                            })
                            .collect();
                        print_line(&table(&["SIZE", "REVISION", "KEY"], &rows))?;
                    }
                    if let Some(next) = page.next {
                        eprintln!("(more objects: add --start-at {next:?})");
                    }
                    Ok(())
                }
            }
        }
    }
}

/// Streams a download to stdout. A reader that goes away (`| head`) ends it quietly,
/// as with other Unix tools.
async fn download_to_stdout(mut reader: ObjectReader) -> Result<()> {
    let mut out = tokio::io::stdout();
    while let Some(chunk) = reader.next_chunk().await? {
        match out.write_all(&chunk).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).context("writing to stdout"),
        }
    }
    match out.flush().await {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// A progress bar on stderr, only for people: text output on a terminal.
fn progress_bar(ctx: &Ctx, total: Option<u64>) -> Option<ProgressBar> {
    if ctx.format != OutputFormat::Text || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .ok()?,
        ),
        None => ProgressBar::new_spinner()
            .with_style(ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}").ok()?),
    };
    Some(bar)
}

/// Where `object get` writes: the path itself, or `<dir>/<last part of the key>` when the
/// path is a directory.
fn destination(dest: &Path, key: &str) -> PathBuf {
    if dest.is_dir() {
        let name = key.rsplit('/').find(|s| !s.is_empty()).unwrap_or(key);
        dest.join(name)
    } else {
        dest.to_path_buf()
    }
}

/// Streams a download into a temporary file beside `path`, flushes it to disk, and
/// renames it over `path` only when every byte arrived (and, for a whole object, the
/// SHA-256 matched). On any failure the temporary file is removed.
async fn download_to_file(ctx: &Ctx, mut reader: ObjectReader, path: &Path) -> Result<u64> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".trove-part");
    // A normal file in the end (0666 less the umask), not tempfile's private 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let tmp = builder
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let std_file = tmp
        .as_file()
        .try_clone()
        .context("opening the temporary file")?;
    let mut file = tokio::fs::File::from_std(std_file);
    let bar = progress_bar(ctx, Some(reader.end() - reader.position()));
    let mut written = 0u64;
    let result: Result<()> = async {
        while let Some(chunk) = reader.next_chunk().await? {
            file.write_all(&chunk)
                .await
                .with_context(|| format!("writing {}", tmp.path().display()))?;
            written += chunk.len() as u64;
            if let Some(b) = &bar {
                b.set_position(written);
            }
        }
        file.flush().await.context("flushing the download")?;
        file.sync_all()
            .await
            .context("syncing the download to disk")?;
        Ok(())
    }
    .await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    result?;
    drop(file);
    tmp.persist(path)
        .with_context(|| format!("renaming the download to {}", path.display()))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_destination_takes_the_key_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            destination(dir.path(), "a/b/c.txt"),
            dir.path().join("c.txt")
        );
        assert_eq!(destination(dir.path(), "plain"), dir.path().join("plain"));
        let file = dir.path().join("out.bin");
        assert_eq!(destination(&file, "a/b"), file);
    }
}
