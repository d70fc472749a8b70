//! Printing results: stable JSON shapes for scripts, aligned tables and sizes for people.

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result};
use base64::Engine;
use serde_json::{Value, json};
use trove_client::{ObjectInfo, Record};

use crate::args::OutputFormat;

/// Prints a JSON value on stdout: indented on a terminal, one line otherwise.
pub fn print_json(v: &Value) -> Result<()> {
    let text = if std::io::stdout().is_terminal() {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    }
    .context("encoding JSON")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").context("writing to stdout")?;
    out.flush().context("writing to stdout")
}

/// Prints a line of text on stdout.
pub fn print_line(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}").context("writing to stdout")
}

/// Prints `{"key", "revision"}` or `OK revision N` for a record write.
pub fn print_revision(format: OutputFormat, fields: Value, revision: u64) -> Result<()> {
    match format {
        OutputFormat::Json => {
            let mut v = fields;
            v["revision"] = json!(revision);
            print_json(&v)
        }
        OutputFormat::Text => print_line(&format!("OK revision {revision}")),
    }
}

/// The JSON form of a record: the value as text when it is UTF-8, else base64.
pub fn record_json(r: &Record) -> Value {
    let mut v =
        json!({ "key": r.key, "revision": r.revision, "create_revision": r.create_revision });
    match std::str::from_utf8(&r.value) {
        Ok(text) => v["value"] = json!(text),
        Err(_) => {
            v["value_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&r.value))
        }
    }
    v
}

/// The JSON form of an object's metadata (`object put` and `object head`).
pub fn object_json(o: &ObjectInfo) -> Value {
    json!({
        "bucket": o.bucket,
        "key": o.key,
        "size": o.size,
        "sha256": o.sha256_hex(),
        "revision": o.revision,
        "chunk_count": o.chunk_count,
    })
}

/// A size for people: `512 B`, `3.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, (cell, w)) in cells.into_iter().zip(&widths).enumerate() {
            if i + 1 == n {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(headers.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn record_values_are_text_or_base64() {
        let mut r = Record {
            key: "k".into(),
            value: Bytes::from_static(b"hello"),
            revision: 4,
            create_revision: 2,
        };
        let v = record_json(&r);
        assert_eq!(v["value"], "hello");
        assert_eq!(v["revision"], 4);
        assert!(v.get("value_base64").is_none());
        r.value = Bytes::from_static(&[0xff, 0x00, 0x41]);
        let v = record_json(&r);
        assert_eq!(v["value_base64"], "/wBB");
        assert!(v.get("value").is_none());
    }

    #[test]
    fn object_json_has_the_contract_fields() {
        let o = ObjectInfo {
            bucket: "b".into(),
            key: "k".into(),
            size: 3,
            sha256: [0xab; 32],
            revision: 9,
            chunk_count: 1,
        };
        let v = object_json(&o);
        for f in ["bucket", "key", "size", "sha256", "revision"] {
            assert!(v.get(f).is_some(), "{f}");
        }
        assert_eq!(v["sha256"], "ab".repeat(32));
    }

    #[test]
    fn sizes_and_tables() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
        let t = table(
            &["ID", "ROLE"],
            &[
                vec!["1".into(), "leader".into()],
                vec!["22".into(), "follower".into()],
            ],
        );
        assert_eq!(t, "ID  ROLE\n1   leader\n22  follower");
    }
}
