//! The audit log: one JSON object per line for every decision and lifecycle event, to the
//! configured file and to the journal. Records carry key fingerprints only — never a
//! token, a signature or a secret.
//!
//! Every record has `ts` (RFC 3339, UTC), `event` and event-specific fields; the events
//! and their fields are listed in `docs/broker-api.md`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Why the audit log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("opening audit log {path}: {source}")]
pub struct AuditOpenError {
    /// File.
    pub path: PathBuf,
    /// OS error.
    pub source: io::Error,
}

/// Where audit records go.
#[derive(Debug)]
pub struct Audit {
    file: Option<File>,
    journal: Option<UnixDatagram>,
    /// Records that could not be written (reported in `Status` logs).
    failures: u64,
}

impl Audit {
    /// Opens the file (append, created 0640, parents created 0750) and, when `journal` is
    /// set and the journal's socket exists, a socket to it.
    pub fn open(path: Option<&Path>, journal: bool) -> Result<Audit, AuditOpenError> {
        let file = match path {
            Some(p) => {
                let err = |source| AuditOpenError {
                    path: p.to_path_buf(),
                    source,
                };
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    if !dir.exists() {
                        std::fs::DirBuilder::new()
                            .recursive(true)
                            .mode(0o750)
                            .create(dir)
                            .map_err(err)?;
                    }
                }
                Some(
                    OpenOptions::new()
                        .append(true)
                        .create(true)
                        .mode(0o640)
                        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                        .open(p)
                        .map_err(err)?,
                )
            }
            None => None,
        };
        let journal = journal
            .then(|| {
                let s = UnixDatagram::unbound().ok()?;
                s.connect(crate::logging::JOURNAL_SOCKET).ok()?;
                Some(s)
            })
            .flatten();
        Ok(Audit {
            file,
            journal,
            failures: 0,
        })
    }

    /// An audit sink that writes nowhere (for `--check-config` and unit tests).
    pub fn disabled() -> Audit {
        Audit {
            file: None,
            journal: None,
            failures: 0,
        }
    }

    /// Records that could not be written so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Writes one record: `{"ts":..., "event": event, ...fields}`. `fields` should be a
    /// JSON object; anything else is stored under `detail`.
    pub fn record(&mut self, event: &str, fields: Value) {
        let line = format_record(OffsetDateTime::now_utc(), event, fields);
        if let Some(f) = &mut self.file {
            let mut buf = Vec::with_capacity(line.len() + 1);
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            // One write(2) per record: with O_APPEND, lines never interleave.
            if f.write_all(&buf).is_err() {
                self.failures += 1;
                tracing::error!("audit record could not be written to the file: {line}");
            }
        }
        if let Some(j) = &self.journal {
            let msg = format!(
                "MESSAGE={line}\nSYSLOG_IDENTIFIER=memgated-audit\nPRIORITY=5\nMEMGATE_AUDIT_EVENT={event}\n"
            );
            if j.send(msg.as_bytes()).is_err() {
                self.failures += 1;
            }
        }
        tracing::debug!(target: "memgated::audit", "{line}");
    }
}

/// Formats one record (no trailing newline). serde_json escapes control characters, so a
/// record is always exactly one line.
pub fn format_record(ts: OffsetDateTime, event: &str, fields: Value) -> String {
    let mut obj = Map::new();
    obj.insert(
        "ts".into(),
        Value::String(ts.format(&Rfc3339).unwrap_or_default()),
    );
    obj.insert("event".into(), Value::String(event.to_string()));
    match fields {
        Value::Object(m) => {
            for (k, v) in m {
                if k != "ts" && k != "event" {
                    obj.insert(k, v);
                }
            }
        }
        Value::Null => {}
        other => {
            obj.insert("detail".into(), other);
        }
    }
    Value::Object(obj).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_line_per_record_with_ts_and_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/audit.jsonl");
        let mut a = Audit::open(Some(&path), false).expect("open");
        a.record(
            "export_deny",
            json!({"code": "token_expired", "message": "a\nb"}),
        );
        a.record("start", json!({"event": "forged", "pid": 1}));
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: Value = serde_json::from_str(lines[0]).expect("json");
        assert_eq!(v["event"], "export_deny");
        assert_eq!(v["message"], "a\nb");
        assert!(v["ts"].as_str().is_some_and(|t| t.ends_with('Z')));
        let v: Value = serde_json::from_str(lines[1]).expect("json");
        assert_eq!(
            v["event"], "start",
            "fields cannot overwrite the event name"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }
}
