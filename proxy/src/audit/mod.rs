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
//!
//! Floods write summaries, not one record per attempt: the first denial (or failed
//! handshake) of a principal from a peer host is written at once, the ones that follow
//! within a second are counted, and one `repeated` record per second says how many.
//! A write that fails (a full disk) is counted (`keymux_audit_write_failures_total`),
//! `keymux_audit_failing` is 1 until a write succeeds again, and `/healthz` says so.
//! A last line cut short by a crash (no newline, does not parse) is moved aside to
//! `<log>.torn-<time>` on start, and a record says so; a complete last line that does
//! not verify is tampering, and the log refuses to open. The file is rotated by size
//! (`rotation.rs`), the chain running on across files.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;

mod chain;
pub mod export;
pub mod index;
mod rotation;

pub use chain::{ChainError, Verified, verify};
use chain::{HASH_FIELD, hash_body, last_record, move_torn_tail};
pub use rotation::Rotation;

/// Records queued ahead of the writer before new ones are counted as dropped.
const QUEUE: usize = 64 * 1024;

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
    /// The first record of a file started by rotation (see `rotation.rs`).
    Rotated {
        /// The file the chain continues from (`<log>.1`).
        continues: String,
        /// The last `seq` of the files rotation removed, ever: 0 while none was.
        removed_through_seq: u64,
    },
    /// Records lost because the queue was full.
    Dropped {
        /// How many.
        count: u64,
    },
    /// Denials or failed handshakes like the last one written, of the same principal
    /// from the same peer host, counted instead of written one by one.
    Repeated {
        /// `denied` or `handshake_failed`.
        of: &'static str,
        /// Who (empty for handshakes).
        principal: String,
        /// The peer host.
        peer: String,
        /// How many were not written.
        count: u64,
        /// Over how many seconds.
        seconds: u64,
    },
}

/// How a flood's repeats are summarised: one `repeated` record per window.
const AGGREGATION_WINDOW: Duration = Duration::from_secs(1);

/// The host part of a peer address (`10.0.0.1:5123` → `10.0.0.1`), so repeats from one
/// host on many source ports count together.
fn peer_host(peer: &str) -> &str {
    peer.rsplit_once(':').map_or(peer, |(host, port)| if port.parse::<u16>().is_ok() { host } else { peer })
}

impl Event {
    /// The flood this event belongs to, if it is one that floods: (kind, principal,
    /// peer host).
    fn flood_key(&self) -> Option<(&'static str, String, String)> {
        match self {
            Event::Denied { principal, peer, .. } => {
                Some(("denied", principal.clone(), peer_host(peer).to_owned()))
            }
            Event::HandshakeFailed { peer, .. } => {
                Some(("handshake_failed", String::new(), peer_host(peer).to_owned()))
            }
            Event::ConnectionRefused { principal, peer, .. } => {
                Some(("connection_refused", principal.clone(), peer_host(peer).to_owned()))
            }
            _ => None,
        }
    }
}

/// Counted repeats of one flood since its last written record.
struct Repeats {
    since: Instant,
    count: u64,
}

/// The audit log's health, shared with the metrics registry.
#[derive(Clone, Debug, Default)]
pub struct AuditHealth {
    /// Records (or syncs) that could not be written.
    pub write_failures: Counter,
    /// 1 while the last write failed.
    pub failing: Gauge,
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
    /// starts the writer thread, which reports its write failures on `health`. A torn
    /// last record is moved aside first (and recorded). The thread ends when every
    /// handle is dropped.
    pub fn open(path: &Path, rotation: Rotation, health: AuditHealth) -> io::Result<Self> {
        let (seq, prev, torn) = last_record(path)?;
        let recovered = match torn {
            Some(offset) => Some(move_torn_tail(path, offset)?),
            None => None,
        };
        let file = open_for_append(path)?;
        let metadata = file.metadata()?;
        // Only a regular file is ever renamed.
        let rotation = if metadata.is_file() { rotation } else { Rotation { max_bytes: 0, ..rotation } };
        let size = metadata.len();
        let removed_through_seq = chain::removed_through_seq(path)?;
        let (sender, receiver) = crossbeam_channel::bounded(QUEUE);
        let inner = Arc::new(Inner { sender, dropped: AtomicU64::new(0) });
        let writer = Writer {
            file: BufWriter::new(file),
            size,
            rotation,
            removed_through_seq,
            seq,
            prev,
            path: path.to_owned(),
            health,
            repeats: std::collections::HashMap::new(),
        };
        std::thread::Builder::new().name("keymux-audit".into()).spawn(move || writer.run(receiver))?;
        let log = Self { inner: Some(inner) };
        if let Some(detail) = recovered {
            log.record(Event::Admin { action: "audit_tail_recovered".into(), detail });
        }
        Ok(log)
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

/// Opens (or creates, mode 0600) `path` for appending.
fn open_for_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

struct Writer {
    file: BufWriter<File>,
    /// The current file's length in bytes.
    size: u64,
    rotation: Rotation,
    /// The last `seq` of the files rotation removed (carried in every `rotated` record).
    removed_through_seq: u64,
    seq: u64,
    prev: String,
    path: PathBuf,
    health: AuditHealth,
    /// Floods being counted, by (kind, principal, peer host).
    repeats: std::collections::HashMap<(&'static str, String, String), Repeats>,
}

impl Writer {
    fn run(mut self, receiver: Receiver<Message>) {
        loop {
            let first = match receiver.recv_timeout(AGGREGATION_WINDOW) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => {
                    self.summarise_repeats(false);
                    self.flush();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut waiting = Vec::new();
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Record(event) => self.record(event),
                    Message::Sync(done) => {
                        self.summarise_repeats(true);
                        waiting.push(done);
                    }
                }
                next = receiver.try_recv().ok();
            }
            self.summarise_repeats(false);
            self.flush();
            for done in waiting {
                let _ = done.send(());
            }
        }
        self.summarise_repeats(true);
        self.flush();
    }

    /// Writes `event`, unless it repeats a flood already written within the window:
    /// then it is only counted.
    fn record(&mut self, event: Event) {
        if let Some(key) = event.flood_key() {
            if let Some(repeats) = self.repeats.get_mut(&key) {
                repeats.count += 1;
                return;
            }
            self.repeats.insert(key, Repeats { since: Instant::now(), count: 0 });
        }
        self.write(&event);
    }

    /// Writes one `repeated` record per flood whose window has passed (every flood if
    /// `all`), and forgets it.
    fn summarise_repeats(&mut self, all: bool) {
        let due: Vec<_> = self
            .repeats
            .iter()
            .filter(|(_, repeats)| all || repeats.since.elapsed() >= AGGREGATION_WINDOW)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            let Some(repeats) = self.repeats.remove(&key) else { continue };
            if repeats.count > 0 {
                let (of, principal, peer) = key;
                let seconds = repeats.since.elapsed().as_secs().max(1);
                self.write(&Event::Repeated { of, principal, peer, count: repeats.count, seconds });
            }
        }
    }

    fn write(&mut self, event: &Event) {
        let written = self.append(event);
        self.report(written, "cannot write the audit log");
    }

    fn flush(&mut self) {
        let flushed = self.file.flush().and_then(|()| self.file.get_ref().sync_data());
        self.report(flushed, "cannot sync the audit log");
    }

    /// Counts a failed write on the metrics (and logs it); a success clears `failing`.
    fn report(&self, outcome: io::Result<()>, what: &str) {
        match outcome {
            Ok(()) => {
                self.health.failing.set(0);
            }
            Err(error) => {
                self.health.write_failures.inc();
                self.health.failing.set(1);
                tracing::error!(path = %self.path.display(), %error, "{what}");
            }
        }
    }

    /// Appends `event` as the next record, first rotating the file if the record would
    /// take it past the bound.
    fn append(&mut self, event: &Event) -> io::Result<()> {
        let (mut line, mut hash) = self.next_line(event)?;
        if self.rotation.due(self.size, line.len()) {
            self.start_new_file()?;
            (line, hash) = self.next_line(event)?;
        }
        self.file.write_all(line.as_bytes())?;
        self.seq += 1;
        self.prev = hash;
        self.size += line.len() as u64;
        Ok(())
    }

    /// The line recording `event` after the last record, and its hash.
    fn next_line(&self, event: &Event) -> io::Result<(String, String)> {
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let body = Body { seq: self.seq + 1, time, prev: &self.prev, event };
        let mut line = serde_json::to_string(&body).map_err(io::Error::other)?;
        let hash = hash_body(&line);
        line.pop(); // the closing brace
        line.push_str(HASH_FIELD);
        line.push_str(&hash);
        line.push_str("\"}\n");
        Ok((line, hash))
    }

    /// Syncs the full file, rotates it and starts the new one with a `rotated` record,
    /// which continues the chain.
    fn start_new_file(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        let removed = self.rotation.rotate(&self.path)?;
        self.removed_through_seq = self.removed_through_seq.max(removed);
        self.file = BufWriter::new(open_for_append(&self.path)?);
        self.size = 0;
        let continues = rotation::rotated(&self.path, 1).display().to_string();
        self.append(&Event::Rotated { continues, removed_through_seq: self.removed_through_seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log at `path` with the default rotation and its own health gauges.
    fn open(path: &Path) -> io::Result<AuditLog> {
        AuditLog::open(path, Rotation::default(), AuditHealth::default())
    }

    fn admin(action: &str) -> Event {
        Event::Admin { action: action.into(), detail: String::new() }
    }

    #[test]
    fn reopening_reads_a_tail_that_starts_inside_a_character() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = open(&path).unwrap();
        let denied = |key: &str| Event::Denied {
            principal: "é".repeat(400),
            peer: "p".into(),
            op: "wrap",
            key: key.into(),
        };
        let mut written = 0;
        // Grow the log until the tail read (the last 64 KiB) starts inside an "é".
        loop {
            log.record(denied(if written % 3 == 0 { "k" } else { "kk" })); // vary the parity
            log.sync();
            written += 1;
            let bytes = std::fs::read(&path).unwrap();
            if bytes.len() > 64 * 1024 && (0x80..0xC0).contains(&bytes[bytes.len() - 64 * 1024]) {
                break;
            }
            assert!(written < 1000, "never landed inside a character");
        }
        drop(log);
        let log = open(&path).unwrap();
        log.record(denied("after"));
        log.sync();
        assert_eq!(records(&path), Ok(written + 1));
    }

    #[test]
    fn a_torn_last_record_is_moved_aside_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = open(&path).unwrap();
        log.record(admin("start"));
        log.sync();
        drop(log);
        // A crash in the middle of writing the next record.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"seq\":2,\"time\":\"2026-").unwrap();
        drop(file);
        let log = open(&path).expect("a torn tail does not stop the proxy");
        log.record(admin("after"));
        log.sync();
        assert_eq!(records(&path), Ok(3), "start, the recovery record, after");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("audit_tail_recovered"), "{text}");
        let aside: Vec<_> = std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).collect();
        assert!(aside.iter().any(|e| e.file_name().to_string_lossy().contains(".torn-")), "kept aside");
    }

    #[test]
    fn a_complete_but_tampered_last_record_still_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = open(&path).unwrap();
        log.record(admin("start"));
        log.sync();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("start", "stop!")).unwrap();
        assert!(open(&path).is_err());
    }

    #[test]
    fn a_flood_of_denials_writes_summaries_not_one_record_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = open(&path).unwrap();
        let denied = |port: u32| Event::Denied {
            principal: "mallory".into(),
            peer: format!("10.0.0.9:{port}"),
            op: "unwrap",
            key: "k".into(),
        };
        for port in 0..10_000 {
            log.record(denied(40_000 + port));
        }
        log.record(Event::Denied {
            principal: "alice".into(),
            peer: "10.0.0.1:1".into(),
            op: "wrap",
            key: "k".into(),
        });
        log.sync();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() <= 4, "a first record and a summary per flood, not 10,001: {}", lines.len());
        let counted: u64 = lines
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|record| record["event"] == "repeated" && record["principal"] == "mallory")
            .map(|record| record["count"].as_u64().unwrap())
            .sum();
        assert_eq!(counted, 9_999, "every repeat is counted");
        assert!(text.contains("\"alice\""), "another principal's denial is written on its own");
        assert_eq!(records(&path), Ok(lines.len() as u64));
    }

    fn records(path: &Path) -> Result<u64, ChainError> {
        verify(path).unwrap().map(|verified| verified.records)
    }

    #[test]
    fn write_failures_are_counted_and_raised() {
        let health = AuditHealth::default();
        let log = AuditLog::open(Path::new("/dev/full"), Rotation::default(), health.clone()).unwrap();
        log.record(admin("start"));
        log.sync();
        assert!(health.write_failures.get() >= 1, "a full disk is counted, never silent");
        assert_eq!(health.failing.get(), 1);
    }

    #[test]
    fn the_chain_continues_across_reopens_and_detects_edits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = open(&path).unwrap();
        log.record(admin("start"));
        log.record(Event::Denied { principal: "a".into(), peer: "p".into(), op: "wrap", key: "k".into() });
        log.sync();
        drop(log);
        let log = open(&path).unwrap();
        log.record(admin("stop"));
        log.sync();
        assert_eq!(records(&path), Ok(3));

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("\"key\":\"k\"", "\"key\":\"j\"", 1)).unwrap();
        assert_eq!(records(&path).unwrap_err().line, 2);
        let mut lines: Vec<&str> = text.lines().collect();
        lines.remove(1);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        assert_eq!(records(&path).unwrap_err().line, 2);
    }
}
