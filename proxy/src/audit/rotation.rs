//! Rotation by size: when the log would grow past `max_bytes`, it is renamed to
//! `<log>.1` (the older ones moving up to `<log>.2` ... `<log>.<keep>`, the oldest beyond
//! removed) and a new file is started. The hash chain runs on across files: the new
//! file's first record is a `rotated` record whose `prev` is the last hash of
//! `<log>.1` and which says through which `seq` rotation has removed records, so a
//! file missing from the middle or the head breaks the chain while those removed by
//! rotation are accounted for.

use std::io;
use std::path::{Path, PathBuf};

/// When to rotate, and how many rotated files to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a record would take the file past this many bytes; 0 never
    /// rotates.
    pub max_bytes: u64,
    /// Rotated files kept beside the log (at least 1).
    pub keep: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Self { max_bytes: 64 * 1024 * 1024, keep: 8 }
    }
}

impl Rotation {
    /// Whether a file of `size` bytes must rotate before taking a record of `record`
    /// bytes (a file that holds nothing never does, whatever the record's size).
    pub(super) fn due(&self, size: u64, record: usize) -> bool {
        self.max_bytes > 0 && size > 0 && size.saturating_add(record as u64) > self.max_bytes
    }

    /// Shifts `<log>.<n>` to `<log>.<n+1>` (removing what would pass `keep`) and
    /// `<log>` to `<log>.1`, then syncs the directory. Returns the last `seq` of the
    /// files removed (0 if none).
    pub(super) fn rotate(&self, log: &Path) -> io::Result<u64> {
        let keep = self.keep.max(1);
        let mut removed_through = 0;
        let mut n = keep;
        while rotated(log, n).exists() {
            let path = rotated(log, n);
            match super::chain::last_record(&path) {
                Ok((seq, _, _)) => removed_through = removed_through.max(seq),
                // `verify` will then report the records it cannot account for.
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "removing an unreadable audit file")
                }
            }
            std::fs::remove_file(&path)?;
            tracing::info!(path = %path.display(), "removed an audit file older than the {keep} kept");
            n += 1;
        }
        for n in (1..keep).rev() {
            let from = rotated(log, n);
            if from.exists() {
                std::fs::rename(&from, rotated(log, n + 1))?;
            }
        }
        std::fs::rename(log, rotated(log, 1))?;
        if let Some(dir) = log.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(removed_through)
    }
}

/// `<log>.<n>`.
pub(super) fn rotated(log: &Path, n: u32) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The log's files, oldest first: `<log>.<k>` ... `<log>.1`, then `<log>` itself.
pub(super) fn files_oldest_first(log: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..).map(|n| rotated(log, n)).take_while(|path| path.exists()).collect();
    files.reverse();
    files.push(log.to_owned());
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditHealth, AuditLog, Event, verify};

    #[test]
    fn rotation_is_due_only_past_the_bound_and_never_for_an_empty_file() {
        let rotation = Rotation { max_bytes: 100, keep: 2 };
        assert!(!rotation.due(50, 50));
        assert!(rotation.due(51, 50));
        assert!(!rotation.due(0, 500), "one record larger than the bound still goes in");
        assert!(!Rotation { max_bytes: 0, keep: 2 }.due(u64::MAX / 2, 10));
    }

    #[test]
    fn files_shift_up_and_the_oldest_beyond_keep_go() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        let rotation = Rotation { max_bytes: 1, keep: 2 };
        for round in 0..4 {
            std::fs::write(&log, format!("round {round}\n")).unwrap();
            rotation.rotate(&log).unwrap();
        }
        assert_eq!(std::fs::read_to_string(rotated(&log, 1)).unwrap(), "round 3\n");
        assert_eq!(std::fs::read_to_string(rotated(&log, 2)).unwrap(), "round 2\n");
        assert!(!rotated(&log, 3).exists());
        assert_eq!(files_oldest_first(&log), vec![rotated(&log, 2), rotated(&log, 1), log]);
    }

    #[test]
    fn rotation_by_size_keeps_one_chain_across_files_and_accounts_for_removed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let rotation = Rotation { max_bytes: 1_000, keep: 2 };
        let log = AuditLog::open(&path, rotation, AuditHealth::default()).unwrap();
        for n in 0..60 {
            log.record(Event::Admin { action: format!("action-{n}"), detail: String::new() });
        }
        log.sync();
        drop(log);
        let files = files_oldest_first(&path);
        assert_eq!(files.len(), 3, "the log and the two kept: {files:?}");
        for file in &files {
            let size = std::fs::metadata(file).unwrap().len();
            assert!(size <= 1_000, "{} holds {size} bytes", file.display());
        }
        let verified = verify(&path).unwrap().unwrap();
        assert!(verified.first_seq > 1, "the oldest files were removed: {verified:?}");
        let first = std::fs::read_to_string(&path).unwrap().lines().next().unwrap().to_owned();
        assert!(first.contains("\"event\":\"rotated\""), "{first}");

        // Reopening continues the same chain and the same accounting.
        let log = AuditLog::open(&path, rotation, AuditHealth::default()).unwrap();
        log.record(Event::Admin { action: "again".into(), detail: String::new() });
        log.sync();
        drop(log);
        assert!(verify(&path).unwrap().is_ok());

        // A file missing from the middle, or the oldest one removed by hand, breaks it.
        let middle = rotated(&path, 1);
        let kept = std::fs::read(&middle).unwrap();
        std::fs::rename(&middle, dir.path().join("elsewhere")).unwrap();
        assert!(verify(&path).unwrap().is_err(), "the current file alone does not account for the rest");
        std::fs::write(&middle, kept).unwrap();
        assert!(verify(&path).unwrap().is_ok());
        std::fs::remove_file(rotated(&path, 2)).unwrap();
        let broken = verify(&path).unwrap().unwrap_err();
        assert!(broken.reason.contains("a file is missing"), "{broken}");
    }
}
