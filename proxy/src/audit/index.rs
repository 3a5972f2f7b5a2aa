//! The audit log's query index: the records of the JSON-lines log (the source of
//! truth, with its hash chain) copied into SQLite, by time, principal, key, operation
//! and outcome, for `GET /audit/query` and `keymux audit query`.
//!
//! The index holds nothing the log does not: [`AuditIndex::sync`] adds the records
//! past the last one indexed (reading every file rotation kept, oldest first) and
//! [`AuditIndex::rebuild`] starts it over, so it can be deleted or rebuilt at any time
//! (`keymux audit reindex`). Each row keeps the record's line as written, so a query
//! answers with the records themselves. The file is in WAL mode, so the CLI may read it
//! while the proxy updates it.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::Value;

use super::chain::last_record;
use super::rotation::files_oldest_first;

/// Most records one query returns.
pub const MAX_LIMIT: u32 = 10_000;
/// Records a query returns when it names no limit.
pub const DEFAULT_LIMIT: u32 = 100;

/// Why the index could not be read or updated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// SQLite failed.
    #[error("audit index: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The log could not be read.
    #[error("audit log: {0}")]
    Log(#[from] io::Error),
}

/// What a query selects; every filter given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Records at or after this time (RFC 3339, as the log writes it).
    pub from: Option<String>,
    /// Records before this time.
    pub to: Option<String>,
    /// The principal (exact).
    pub principal: Option<String>,
    /// The key name (exact).
    pub key: Option<String>,
    /// The operation or admin action (`wrap`, `config_reload`, `handshake`, ...).
    pub op: Option<String>,
    /// `denied`, `failed`, `refused`, `ok` or `info`.
    pub outcome: Option<String>,
    /// Most records returned (at most [`MAX_LIMIT`]); newest first.
    pub limit: u32,
}

/// The fields a record is indexed by.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    seq: u64,
    time: String,
    event: String,
    principal: Option<String>,
    peer: Option<String>,
    key: Option<String>,
    op: Option<String>,
    outcome: &'static str,
    /// How many events the record stands for (a `repeated` record's `count`).
    count: u64,
}

impl Row {
    fn of(record: &Value) -> Option<Self> {
        let text = |field: &str| record.get(field).and_then(Value::as_str).map(str::to_owned);
        let event = text("event")?;
        let (op, outcome) = match event.as_str() {
            "denied" => (text("op"), "denied"),
            "handshake_failed" => (Some("handshake".to_owned()), "failed"),
            "connection_refused" => (Some("connect".to_owned()), "refused"),
            "admin" => {
                let action = text("action");
                let failed =
                    action.as_deref().is_some_and(|a| a.ends_with("_failed") || a.ends_with("_refused"));
                (action, if failed { "failed" } else { "ok" })
            }
            "repeated" => match record.get("of").and_then(Value::as_str) {
                Some("denied") => (None, "denied"),
                _ => (Some("handshake".to_owned()), "failed"),
            },
            _ => (None, "info"),
        };
        Some(Self {
            seq: record.get("seq")?.as_u64()?,
            time: text("time")?,
            event,
            principal: text("principal").filter(|p| !p.is_empty()),
            peer: text("peer"),
            key: text("key"),
            op,
            outcome,
            count: if event_is_repeated(record) {
                record.get("count").and_then(Value::as_u64).unwrap_or(1)
            } else {
                1
            },
        })
    }
}

fn event_is_repeated(record: &Value) -> bool {
    record.get("event").and_then(Value::as_str) == Some("repeated")
}

/// The index's schema version (`PRAGMA user_version`); an index of another version is
/// dropped and rebuilt from the log.
const SCHEMA_VERSION: i64 = 4;

/// Events of one kind, per principal, key, operation and outcome, over a period.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// `denied`, `handshake_failed`, `admin`, ...
    pub event: String,
    /// Who (absent for handshakes).
    pub principal: Option<String>,
    /// The key named.
    pub key: Option<String>,
    /// The operation or admin action.
    pub op: Option<String>,
    /// The outcome.
    pub outcome: String,
    /// How many events (a flood's summarised repeats included).
    pub count: u64,
}

/// The SQLite index of one audit log.
pub struct AuditIndex {
    db: Connection,
    log: PathBuf,
}

impl AuditIndex {
    /// The default index file of `log`: `<log>.index.sqlite`.
    pub fn default_path(log: &Path) -> PathBuf {
        let mut name = log.as_os_str().to_owned();
        name.push(".index.sqlite");
        PathBuf::from(name)
    }

    /// Opens (creating if needed) the index at `path` of the log at `log`.
    pub fn open(path: &Path, log: &Path) -> Result<Self, IndexError> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = db.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if version != SCHEMA_VERSION {
            db.execute_batch("DROP TABLE IF EXISTS records; DROP TABLE IF EXISTS position;")?;
            db.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS records (
                seq INTEGER PRIMARY KEY,
                time TEXT NOT NULL,
                event TEXT NOT NULL,
                principal TEXT,
                peer TEXT,
                key TEXT,
                op TEXT,
                outcome TEXT NOT NULL,
                count INTEGER NOT NULL,
                line TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS records_time ON records(time);
            CREATE INDEX IF NOT EXISTS records_principal ON records(principal, time);
            CREATE INDEX IF NOT EXISTS records_key ON records(key, time);
            CREATE TABLE IF NOT EXISTS position (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                offset INTEGER NOT NULL,
                seq INTEGER NOT NULL,
                first_seq INTEGER NOT NULL
            );",
        )?;
        Ok(Self { db, log: log.to_owned() })
    }

    /// Indexes the records past the last one indexed; returns how many were added. A
    /// log that starts over (seq below the last indexed, a new log) is indexed anew.
    pub fn sync(&mut self) -> Result<u64, IndexError> {
        let last: u64 =
            self.db.query_row("SELECT COALESCE(MAX(seq), 0) FROM records", [], |row| row.get(0))?;
        let newest = newest_seq(&self.log)?;
        if newest < last {
            return self.rebuild();
        }
        if newest == last {
            return Ok(0);
        }
        self.add_from(last)
    }

    /// Drops every row and indexes the whole log again; returns the records indexed.
    pub fn rebuild(&mut self) -> Result<u64, IndexError> {
        self.db.execute("DELETE FROM records", [])?;
        self.db.execute("DELETE FROM position", [])?;
        self.add_from(0)
    }

    fn add_from(&mut self, after: u64) -> Result<u64, IndexError> {
        // Where the last sync stopped in the current file, if the log has only grown
        // since: then only the new lines are read. Otherwise (rotated, rebuilt) every
        // file is read, skipping what is indexed.
        let files: Vec<(PathBuf, u64)> = match self.resume_point(after)? {
            Some(offset) => vec![(self.log.clone(), offset)],
            None => files_oldest_first(&self.log).into_iter().map(|file| (file, 0)).collect(),
        };
        let tx = self.db.transaction()?;
        let mut added = 0;
        let mut newest = after;
        let mut position = None;
        {
            let mut insert = tx.prepare(
                "INSERT OR REPLACE INTO records (seq, time, event, principal, peer, key, op, outcome, count, line)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for (file, start) in files {
                let Ok(mut opened) = File::open(&file) else { continue };
                opened.seek(SeekFrom::Start(start))?;
                let mut reader = BufReader::new(opened);
                let mut offset = start;
                let mut line = String::new();
                loop {
                    line.clear();
                    let read = reader.read_line(&mut line)?;
                    // Stop before a line still being written (no newline yet).
                    if read == 0 || !line.ends_with('\n') {
                        break;
                    }
                    offset += read as u64;
                    let text = line.trim_end();
                    // Skip what is indexed without parsing the JSON.
                    let Some(seq) = seq_of(text).filter(|seq| *seq > after) else { continue };
                    let Ok(record) = serde_json::from_str::<Value>(text) else { continue };
                    let Some(row) = Row::of(&record) else { continue };
                    insert.execute(params![
                        row.seq as i64,
                        row.time,
                        row.event,
                        row.principal,
                        row.peer,
                        row.key,
                        row.op,
                        row.outcome,
                        row.count as i64,
                        text
                    ])?;
                    newest = newest.max(seq);
                    added += 1;
                }
                if file == self.log {
                    position = Some((offset, first_seq(&file)?));
                }
            }
            if let Some((offset, first)) = position {
                tx.execute(
                    "INSERT OR REPLACE INTO position (id, offset, seq, first_seq) VALUES (1, ?1, ?2, ?3)",
                    params![offset as i64, newest as i64, first as i64],
                )?;
            }
        }
        tx.commit()?;
        Ok(added)
    }

    /// The offset in the current log file where the last sync stopped, if it stopped
    /// after record `after`, the file still starts with the same record (rotation has
    /// not replaced it), and the next line there is record `after + 1` (or nothing
    /// yet): the file has only grown since.
    fn resume_point(&self, after: u64) -> Result<Option<u64>, IndexError> {
        let stored: Option<(i64, i64, i64)> = self
            .db
            .query_row("SELECT offset, seq, first_seq FROM position WHERE id = 1", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?;
        let Some((offset, seq, first)) = stored else { return Ok(None) };
        let offset = offset as u64;
        if seq as u64 != after || first_seq(&self.log)? != first as u64 {
            return Ok(None);
        }
        let Ok(mut file) = File::open(&self.log) else { return Ok(None) };
        if file.metadata()?.len() < offset {
            return Ok(None);
        }
        file.seek(SeekFrom::Start(offset))?;
        let mut next = String::new();
        BufReader::new(file).read_line(&mut next)?;
        let continues = next.is_empty() || seq_of(&next) == Some(after + 1);
        Ok(continues.then_some(offset))
    }

    /// The records `query` selects, newest first, as the log's lines.
    pub fn query(&self, query: &Query) -> Result<Vec<String>, IndexError> {
        let mut sql = String::from("SELECT line FROM records WHERE 1 = 1");
        let mut args: Vec<String> = Vec::new();
        let filters = [
            ("time >= ?", &query.from),
            ("time < ?", &query.to),
            ("principal = ?", &query.principal),
            ("key = ?", &query.key),
            ("op = ?", &query.op),
            ("outcome = ?", &query.outcome),
        ];
        for (clause, value) in filters {
            if let Some(value) = value {
                sql.push_str(" AND ");
                sql.push_str(clause);
                args.push(value.clone());
            }
        }
        let limit = if query.limit == 0 { DEFAULT_LIMIT } else { query.limit.min(MAX_LIMIT) };
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT {limit}"));
        let mut statement = self.db.prepare(&sql)?;
        let lines = statement.query_map(params_from_iter(args.iter()), |row| row.get::<_, String>(0))?;
        Ok(lines.collect::<Result<_, _>>()?)
    }
}

impl AuditIndex {
    /// Events in `[from, to)` counted by event, principal, key, operation and outcome,
    /// most frequent first.
    pub fn tally(&self, from: &str, to: &str) -> Result<Vec<Tally>, IndexError> {
        let mut statement = self.db.prepare(
            "SELECT event, principal, key, op, outcome, SUM(count) AS n FROM records
             WHERE time >= ?1 AND time < ?2
             GROUP BY event, principal, key, op, outcome ORDER BY n DESC, event, principal, key",
        )?;
        let rows = statement.query_map(params![from, to], |row| {
            Ok(Tally {
                event: row.get(0)?,
                principal: row.get(1)?,
                key: row.get(2)?,
                op: row.get(3)?,
                outcome: row.get(4)?,
                count: row.get::<_, i64>(5)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The admin records in `[from, to)`, oldest first, at most `limit`.
    pub fn admin_actions(&self, from: &str, to: &str, limit: u32) -> Result<Vec<String>, IndexError> {
        let mut statement = self.db.prepare(
            "SELECT line FROM records WHERE event = 'admin' AND time >= ?1 AND time < ?2 ORDER BY seq LIMIT ?3",
        )?;
        let lines = statement.query_map(params![from, to, limit], |row| row.get::<_, String>(0))?;
        Ok(lines.collect::<Result<_, _>>()?)
    }
}

/// The `seq` a line starts with (`{"seq":N,`), as the log writes every record.
fn seq_of(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("{\"seq\":")?;
    let end = rest.find(',')?;
    rest[..end].parse().ok()
}

/// The `seq` of a file's first record (0 for an empty or missing file): which file a
/// stored position belongs to.
fn first_seq(file: &Path) -> io::Result<u64> {
    let Ok(opened) = File::open(file) else { return Ok(0) };
    let mut first = String::new();
    BufReader::new(opened).read_line(&mut first)?;
    Ok(seq_of(&first).unwrap_or(0))
}

/// The newest record's `seq` in the log (0 for none): the current file's last record,
/// read from its tail; the rotated files only when the current one is still empty.
fn newest_seq(log: &Path) -> io::Result<u64> {
    let (seq, _, _) = last_record(log)?;
    if seq > 0 {
        return Ok(seq);
    }
    for file in files_oldest_first(log).iter().rev() {
        let Ok(opened) = File::open(file) else { continue };
        let mut newest = None;
        for line in BufReader::new(opened).lines() {
            if let Some(seq) = seq_of(&line?) {
                newest = Some(seq);
            }
        }
        if let Some(seq) = newest {
            return Ok(seq);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditHealth, AuditLog, Event, Rotation};

    fn denied(principal: &str, key: &str) -> Event {
        Event::Denied { principal: principal.into(), peer: "127.0.0.1:1".into(), op: "wrap", key: key.into() }
    }

    #[test]
    fn records_are_indexed_queried_and_rebuilt_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&log_path, Rotation::default(), AuditHealth::default()).unwrap();
        log.record(denied("alice", "pay"));
        log.record(denied("bob", "hr"));
        log.record(Event::Admin { action: "config_reload".into(), detail: "test".into() });
        log.sync();
        let index_path = AuditIndex::default_path(&log_path);
        let mut index = AuditIndex::open(&index_path, &log_path).unwrap();
        assert_eq!(index.sync().unwrap(), 3);
        assert_eq!(index.sync().unwrap(), 0, "nothing new");

        let alice = index.query(&Query { principal: Some("alice".into()), ..Query::default() }).unwrap();
        assert_eq!(alice.len(), 1);
        assert!(alice[0].contains("\"key\":\"pay\""), "{}", alice[0]);
        let denials = index.query(&Query { outcome: Some("denied".into()), ..Query::default() }).unwrap();
        assert_eq!(denials.len(), 2);
        assert!(denials[0].contains("bob"), "newest first");
        let reloads = index.query(&Query { op: Some("config_reload".into()), ..Query::default() }).unwrap();
        assert_eq!(reloads.len(), 1);
        let one = index.query(&Query { limit: 1, ..Query::default() }).unwrap();
        assert_eq!(one.len(), 1);
        let future =
            index.query(&Query { from: Some("2999-01-01T00:00:00.000Z".into()), ..Query::default() });
        assert!(future.unwrap().is_empty());

        log.record(denied("carol", "pay"));
        log.sync();
        assert_eq!(index.sync().unwrap(), 1, "only the new record");
        drop(index);
        std::fs::remove_file(&index_path).unwrap();
        let mut index = AuditIndex::open(&index_path, &log_path).unwrap();
        assert_eq!(index.rebuild().unwrap(), 4, "rebuilt from the log alone");
        let tally = index.tally("2000-01-01T00:00:00.000Z", "2999-01-01T00:00:00.000Z").unwrap();
        let pay_denials: u64 = tally
            .iter()
            .filter(|t| t.event == "denied" && t.key.as_deref() == Some("pay"))
            .map(|t| t.count)
            .sum();
        assert_eq!(pay_denials, 2);
        let admin = index.admin_actions("2000-01-01T00:00:00.000Z", "2999-01-01T00:00:00.000Z", 10).unwrap();
        assert!(admin.iter().any(|line| line.contains("config_reload")), "{admin:?}");
    }

    #[test]
    fn syncs_resume_where_they_stopped_and_follow_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("audit.jsonl");
        let rotation = Rotation { max_bytes: 1200, keep: 10 };
        let log = AuditLog::open(&log_path, rotation, AuditHealth::default()).unwrap();
        let mut index = AuditIndex::open(&AuditIndex::default_path(&log_path), &log_path).unwrap();
        let mut total = 0;
        for round in 0..6 {
            for n in 0..3 {
                log.record(denied(&format!("p{round}-{n}"), "pay"));
            }
            log.sync();
            total += index.sync().unwrap();
        }
        assert!(log_path.with_extension("jsonl.1").exists(), "the log rotated");
        let verified = crate::audit::verify(&log_path).unwrap().unwrap();
        assert_eq!(total, verified.records, "every record indexed once, across rotations");
        assert_eq!(index.query(&Query { limit: MAX_LIMIT, ..Query::default() }).unwrap().len() as u64, total);
    }

    #[test]
    fn seq_is_read_without_parsing() {
        assert_eq!(seq_of("{\"seq\":42,\"time\":\"x\"}"), Some(42));
        assert_eq!(seq_of("garbage"), None);
    }
}
