//! The audit log: an append-only JSON-lines file in which every record carries the hash
//! of the one before it, so a changed, removed or reordered record breaks the chain.
//!
//! What goes in: every denied request, every failed handshake or authentication, and
//! every admin action (start, stop, certificate reload, key refresh). What never goes
//! in: key material, AADs, blobs, PINs or passphrases; records name identities, peers,
//! operations and key names only.
//!
//! A record is one line:
//!
//! ```text
//! {"seq":7,"time":"2026-01-01T00:00:00.000Z","prev":"<hex>","event":"denied",...,"hash":"<hex>"}
//! ```
//!
//! `hash` is BLAKE3 over the line up to (not including) `,"hash"`, closed with `}`;
//! `prev` is the previous record's `hash` (64 zeros for the first). Records are
//! written by one thread that owns the file, so the request path only queues them; if
//! the queue is full, records are counted and a `dropped` record says how many.
//!
//! The chain detects edits by anyone who cannot rewrite the tail of the file
//! consistently; ship the log off the host (or note its last hash elsewhere) to detect
//! an attacker with write access to the file.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;

/// Records queued ahead of the writer before new ones are counted as dropped.
const QUEUE: usize = 64 * 1024;
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const HASH_FIELD: &str = ",\"hash\":\"";

/// Something worth auditing.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A request the ACL refused.
    Denied {
        /// Who asked.
        principal: String,
        /// From where.
        peer: String,
        /// The operation (`wrap`, `unwrap`, ...).
        op: &'static str,
        /// The key it named.
        key: String,
    },
    /// A TLS or QUIC handshake (certificate verification included) that failed.
    HandshakeFailed {
        /// `tls` or `quic`.
        transport: &'static str,
        /// The peer address.
        peer: String,
        /// Why, as rustls or quinn says it.
        error: String,
    },
    /// A connection refused after the handshake (over the identity's connection limit).
    ConnectionRefused {
        /// Who.
        principal: String,
        /// From where.
        peer: String,
        /// Why.
        reason: String,
    },
    /// An administrative action.
    Admin {
        /// What was done (`start`, `stop`, `cert_reload`, `cert_reload_failed`, `key_change`).
        action: String,
        /// Details, without secrets.
        detail: String,
    },
    /// Records lost because the queue was full.
    Dropped {
        /// How many.
        count: u64,
    },
}

#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    time: String,
    prev: &'a str,
    #[serde(flatten)]
    event: &'a Event,
}

enum Message {
    Record(Event),
    Sync(std::sync::mpsc::Sender<()>),
}

/// A handle to the audit log; cheap to clone. A disabled log accepts and discards.
#[derive(Clone, Default)]
pub struct AuditLog {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    sender: Sender<Message>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("enabled", &self.inner.is_some()).finish()
    }
}

impl AuditLog {
    /// A log that records nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Opens (or creates, mode 0600) `path` for appending, continuing its chain, and
    /// starts the writer thread. The thread ends when every handle is dropped.
    pub fn open(path: &Path) -> io::Result<Self> {
        let (seq, prev) = last_record(path)?;
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path)?;
        let (sender, receiver) = crossbeam_channel::bounded(QUEUE);
        let inner = Arc::new(Inner { sender, dropped: AtomicU64::new(0) });
        let writer = Writer { file: BufWriter::new(file), seq, prev, path: path.to_owned() };
        std::thread::Builder::new().name("keymux-audit".into()).spawn(move || writer.run(receiver))?;
        Ok(Self { inner: Some(inner) })
    }

    /// Queues a record; never blocks.
    pub fn record(&self, event: Event) {
        let Some(inner) = &self.inner else { return };
        let dropped = inner.dropped.load(Ordering::Relaxed);
        if dropped > 0 && inner.sender.try_send(Message::Record(Event::Dropped { count: dropped })).is_ok() {
            inner.dropped.fetch_sub(dropped, Ordering::Relaxed);
        }
        match inner.sender.try_send(Message::Record(event)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => tracing::error!("audit writer is gone; record lost"),
        }
    }

    /// Waits (blocking) until every record queued so far is written and synced.
    pub fn sync(&self) {
        let Some(inner) = &self.inner else { return };
        let (done, wait) = std::sync::mpsc::channel();
        if inner.sender.send(Message::Sync(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

struct Writer {
    file: BufWriter<File>,
    seq: u64,
    prev: String,
    path: PathBuf,
}

impl Writer {
    fn run(mut self, receiver: Receiver<Message>) {
        while let Ok(first) = receiver.recv() {
            let mut waiting = Vec::new();
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Record(event) => {
                        if let Err(error) = self.append(&event) {
                            tracing::error!(path = %self.path.display(), %error, "cannot write the audit log");
                        }
                    }
                    Message::Sync(done) => waiting.push(done),
                }
                next = receiver.try_recv().ok();
            }
            let flushed = self.file.flush().and_then(|()| self.file.get_ref().sync_data());
            if let Err(error) = flushed {
                tracing::error!(path = %self.path.display(), %error, "cannot sync the audit log");
            }
            for done in waiting {
                let _ = done.send(());
            }
        }
    }

    fn append(&mut self, event: &Event) -> io::Result<()> {
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let body = Body { seq: self.seq + 1, time, prev: &self.prev, event };
        let mut line = serde_json::to_string(&body).map_err(io::Error::other)?;
        let hash = hash_body(&line);
        line.pop(); // the closing brace
        line.push_str(HASH_FIELD);
        line.push_str(&hash);
        line.push_str("\"}\n");
        self.file.write_all(line.as_bytes())?;
        self.seq += 1;
        self.prev = hash;
        Ok(())
    }
}

fn hash_body(body: &str) -> String {
    blake3::hash(body.as_bytes()).to_hex().to_string()
}

/// The sequence number and hash of the last record of an existing log (0 and the
/// genesis hash for a missing or empty one), reading only the file's tail.
fn last_record(path: &Path) -> io::Result<(u64, String)> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((0, GENESIS.to_owned())),
        Err(error) => return Err(error),
    };
    let length = file.metadata()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(64 * 1024)))?;
    // Bytes, not a string: the seek may land inside a multi-byte character of an
    // earlier record, and only the last line needs to be text.
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let Some(line) = tail.split(|byte| *byte == b'\n').rev().find(|line| !line.trim_ascii().is_empty())
    else {
        return Ok((0, GENESIS.to_owned()));
    };
    let broken = |reason: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: last record is broken: {reason}", path.display()),
        )
    };
    let line = std::str::from_utf8(line).map_err(|error| broken(error.to_string()))?;
    let record = check_line(line).map_err(broken)?;
    Ok((record.seq, record.hash))
}

struct Checked {
    seq: u64,
    prev: String,
    hash: String,
}

/// Checks one line's own hash, returning its fields.
fn check_line(line: &str) -> Result<Checked, String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let field = |name: &str| value.get(name).ok_or_else(|| format!("no {name:?} field"));
    let seq = field("seq")?.as_u64().ok_or("seq is not a number")?;
    let prev = field("prev")?.as_str().ok_or("prev is not a string")?.to_owned();
    let hash = field("hash")?.as_str().ok_or("hash is not a string")?.to_owned();
    let at = line.rfind(HASH_FIELD).ok_or("the hash is not the last field")?;
    let expected_tail = format!("{HASH_FIELD}{hash}\"}}");
    if line[at..] != expected_tail {
        return Err("the hash is not the last field".into());
    }
    let body = format!("{}}}", &line[..at]);
    if hash_body(&body) != hash {
        return Err("the record's hash does not match its contents".into());
    }
    Ok(Checked { seq, prev, hash })
}

/// Why a log does not verify: the first broken record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ChainError {
    /// 1-based line number of the first broken record.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks the whole chain of the log at `path`, returning the number of records.
pub fn verify(path: &Path) -> Result<Result<u64, ChainError>, io::Error> {
    let reader = BufReader::new(File::open(path)?);
    let mut prev = GENESIS.to_owned();
    let mut seq = 0;
    for (index, line) in reader.lines().enumerate() {
        let line = line?;
        let broken = |reason: String| Ok(Err(ChainError { line: index + 1, reason }));
        let record = match check_line(&line) {
            Ok(record) => record,
            Err(reason) => return broken(reason),
        };
        if record.prev != prev {
            return broken(
                "prev does not match the previous record's hash (a record was changed, removed or inserted)"
                    .into(),
            );
        }
        if record.seq != seq + 1 {
            return broken(format!("seq {} follows {seq}", record.seq));
        }
        prev = record.hash;
        seq = record.seq;
    }
    Ok(Ok(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(action: &str) -> Event {
        Event::Admin { action: action.into(), detail: String::new() }
    }

    #[test]
    fn reopening_reads_a_tail_that_starts_inside_a_character() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        let denied = |key: &str| Event::Denied {
            principal: "é".repeat(400),
            peer: "p".into(),
            op: "wrap",
            key: key.into(),
        };
        let mut records = 0;
        // Grow the log until the tail read (the last 64 KiB) starts inside an "é".
        loop {
            log.record(denied(if records % 3 == 0 { "k" } else { "kk" })); // vary the parity
            log.sync();
            records += 1;
            let bytes = std::fs::read(&path).unwrap();
            if bytes.len() > 64 * 1024 && (0x80..0xC0).contains(&bytes[bytes.len() - 64 * 1024]) {
                break;
            }
            assert!(records < 1000, "never landed inside a character");
        }
        drop(log);
        let log = AuditLog::open(&path).unwrap();
        log.record(denied("after"));
        log.sync();
        assert_eq!(verify(&path).unwrap(), Ok(records + 1));
    }

    #[test]
    fn the_chain_continues_across_reopens_and_detects_edits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.record(admin("start"));
        log.record(Event::Denied { principal: "a".into(), peer: "p".into(), op: "wrap", key: "k".into() });
        log.sync();
        drop(log);
        let log = AuditLog::open(&path).unwrap();
        log.record(admin("stop"));
        log.sync();
        assert_eq!(verify(&path).unwrap(), Ok(3));

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("\"key\":\"k\"", "\"key\":\"j\"", 1)).unwrap();
        assert_eq!(verify(&path).unwrap().unwrap_err().line, 2);
        let mut lines: Vec<&str> = text.lines().collect();
        lines.remove(1);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        assert_eq!(verify(&path).unwrap().unwrap_err().line, 2);
    }
}
