//! Exporting the audit log for a SIEM: the records of every file rotation kept, oldest
//! first, as JSON lines (as written, hash chain included) or as ArcSight CEF lines,
//! read one line at a time so an export of any size runs in bounded memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

use super::rotation::files_oldest_first;

/// An export's line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// The log's own lines.
    JsonLines,
    /// Common Event Format (`CEF:0|keymux|keymux|<version>|<event>|...`).
    Cef,
}

impl ExportFormat {
    /// `jsonl` or `cef`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "jsonl" => Some(Self::JsonLines),
            "cef" => Some(Self::Cef),
            _ => None,
        }
    }
}

/// Calls `emit` with each record of the log at `log` (time in `[from, to)` when given,
/// compared as the RFC 3339 text the log writes), formatted, newline included. Stops
/// early when `emit` returns false (the client went away).
pub fn export(
    log: &Path,
    format: ExportFormat,
    from: Option<&str>,
    to: Option<&str>,
    mut emit: impl FnMut(String) -> bool,
) -> io::Result<()> {
    for file in files_oldest_first(log) {
        let Ok(opened) = File::open(&file) else { continue };
        for line in BufReader::new(opened).lines() {
            let line = line?;
            let Ok(record) = serde_json::from_str::<Value>(&line) else { continue };
            let time = record.get("time").and_then(Value::as_str).unwrap_or_default();
            if from.is_some_and(|from| time < from) || to.is_some_and(|to| time >= to) {
                continue;
            }
            let out = match format {
                ExportFormat::JsonLines => format!("{line}\n"),
                ExportFormat::Cef => format!("{}\n", cef(&record)),
            };
            if !emit(out) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// One record as a CEF line: the event as signature and name, a severity by kind, and
/// the record's fields as extensions (`rt`, `suser`, `src`, `act`, `cs1` the key, ...).
fn cef(record: &Value) -> String {
    let text = |field: &str| record.get(field).and_then(Value::as_str).unwrap_or_default();
    let event = text("event");
    let severity = match event {
        "denied" | "handshake_failed" | "connection_refused" | "repeated" => 5,
        "dropped" => 8,
        _ => 3,
    };
    let name = match event {
        "denied" => "access denied",
        "handshake_failed" => "handshake failed",
        "connection_refused" => "connection refused",
        "admin" => "admin action",
        "rotated" => "log rotated",
        "dropped" => "records dropped",
        "repeated" => "repeated events",
        _ => "audit record",
    };
    let mut extensions = vec![
        ("rt", text("time").to_owned()),
        ("externalId", record.get("seq").map(Value::to_string).unwrap_or_default()),
    ];
    let fields = [
        ("suser", "principal"),
        ("src", "peer"),
        ("act", "op"),
        ("act", "action"),
        ("cs1", "key"),
        ("msg", "detail"),
        ("reason", "reason"),
        ("reason", "error"),
        ("cnt", "count"),
    ];
    for (name, field) in fields {
        match record.get(field) {
            Some(Value::String(value)) if !value.is_empty() => extensions.push((name, value.clone())),
            Some(Value::Number(value)) => extensions.push((name, value.to_string())),
            _ => {}
        }
    }
    if record.get("key").is_some() {
        extensions.push(("cs1Label", "key".to_owned()));
    }
    let extensions: Vec<String> =
        extensions.iter().map(|(name, value)| format!("{name}={}", escape_extension(value))).collect();
    format!(
        "CEF:0|keymux|keymux|{}|{}|{}|{severity}|{}",
        env!("CARGO_PKG_VERSION"),
        escape_header(event),
        escape_header(name),
        extensions.join(" ")
    )
}

fn escape_header(value: &str) -> String {
    value.replace('\\', "\\\\").replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn escape_extension(value: &str) -> String {
    value.replace('\\', "\\\\").replace('=', "\\=").replace('\n', "\\n").replace('\r', "\\r")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cef_escapes_and_names_the_fields() {
        let record = serde_json::json!({
            "seq": 3, "time": "2026-01-01T00:00:00.000Z", "event": "denied",
            "principal": "cn=a|b", "peer": "127.0.0.1:1", "op": "wrap", "key": "k=v"
        });
        let line = cef(&record);
        assert!(line.starts_with("CEF:0|keymux|keymux|"), "{line}");
        assert!(line.contains("|denied|access denied|5|"), "{line}");
        assert!(line.contains("suser=cn\\=a|b"), "{line}");
        assert!(line.contains("cs1=k\\=v"), "{line}");
        assert!(line.contains("externalId=3"), "{line}");
    }
}
