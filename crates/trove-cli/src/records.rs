//! `trove record ...`: put, get, delete and list records.

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde_json::json;
use trove_client::MAX_RECORD_VALUE_BYTES;

use crate::Ctx;
use crate::args::{OutputFormat, RecordCmd};
use crate::output::{human_bytes, print_json, print_revision, record_json, table};

pub async fn run(ctx: &Ctx, cmd: RecordCmd) -> Result<()> {
    match cmd {
        RecordCmd::Put {
            key,
            value,
            file,
            if_revision,
        } => {
            let value = read_value(value, file.as_deref())?;
            let rev = ctx.client.put_record(&key, value, if_revision).await?;
            print_revision(ctx.format, json!({ "key": key }), rev)
        }
        RecordCmd::Get { key, consistency } => {
            let rec = ctx.client.get_record(&key, consistency.into()).await?;
            match ctx.format {
                OutputFormat::Json => print_json(&record_json(&rec)),
                OutputFormat::Text => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&rec.value).context("writing to stdout")?;
                    // Keep a shell prompt on its own line; pipes get the exact bytes.
                    if out.is_terminal() && !rec.value.ends_with(b"\n") {
                        out.write_all(b"\n").context("writing to stdout")?;
                    }
                    out.flush().context("writing to stdout")
                }
            }
        }
        RecordCmd::Delete { key, if_revision } => {
            let rev = ctx.client.delete_record(&key, if_revision).await?;
            print_revision(ctx.format, json!({ "key": key }), rev)
        }
        RecordCmd::List {
            prefix,
            limit,
            start_at,
        } => {
            let page = ctx
                .client
                .list_records(&prefix, &start_at, limit.unwrap_or(0))
                .await?;
            match ctx.format {
                OutputFormat::Json => print_json(&json!({
                    "records": page.records.iter().map(|r| json!({
                        "key": r.key, "revision": r.revision, "size": r.size,
                    })).collect::<Vec<_>>(),
                    "next": page.next,
                })),
                OutputFormat::Text => {
                    if !page.records.is_empty() {
                        let rows: Vec<Vec<String>> = page
                            .records
                            .iter()
                            .map(|r| {
                                vec![r.revision.to_string(), human_bytes(r.size), r.key.clone()]
                            })
                            .collect();
                        crate::output::print_line(&table(&["REVISION", "SIZE", "KEY"], &rows))?;
                    }
                    if let Some(next) = page.next {
                        eprintln!("(more records: add --start-at {next:?})");
                    }
                    Ok(())
                }
            }
        }
    }
}

/// The value of `record put`: the argument's bytes, stdin for `-`, or a file. Reads at
/// most one byte past the limit, so a huge input fails fast instead of filling memory.
fn read_value(value: Option<OsString>, file: Option<&Path>) -> Result<Bytes> {
    let limit = MAX_RECORD_VALUE_BYTES as u64 + 1;
    let mut buf = Vec::new();
    match (value, file) {
        (_, Some(path)) => {
            let f =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            f.take(limit)
                .read_to_end(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
        }
        (Some(v), None) if v == "-" => {
            std::io::stdin()
                .lock()
                .take(limit)
                .read_to_end(&mut buf)
                .context("reading the value from stdin")?;
        }
        (Some(v), None) => buf = os_bytes(v),
        (None, None) => bail!("give a value, --file <F>, or - to read stdin"),
    }
    if buf.len() > MAX_RECORD_VALUE_BYTES {
        bail!(
            "the value is larger than {} (the record limit); store large data as an object",
            human_bytes(MAX_RECORD_VALUE_BYTES as u64)
        );
    }
    Ok(Bytes::from(buf))
}

/// The raw bytes of a command-line argument (which need not be UTF-8 on Unix).
fn os_bytes(v: OsString) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        v.into_vec()
    }
    #[cfg(not(unix))]
    {
        v.to_string_lossy().into_owned().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_from_arguments_or_files() {
        assert_eq!(
            read_value(Some("abc".into()), None).expect("ok"),
            Bytes::from_static(b"abc")
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let small = dir.path().join("small");
        std::fs::write(&small, b"from file").expect("write");
        assert_eq!(
            read_value(None, Some(&small)).expect("ok"),
            Bytes::from_static(b"from file")
        );
        let big = dir.path().join("big");
        std::fs::write(&big, vec![0u8; MAX_RECORD_VALUE_BYTES + 1]).expect("write");
        let err = read_value(None, Some(&big)).expect_err("too big");
        assert!(
            err.to_string().contains("store large data as an object"),
            "{err}"
        );
        assert!(read_value(None, Some(&dir.path().join("missing"))).is_err());
    }
}
