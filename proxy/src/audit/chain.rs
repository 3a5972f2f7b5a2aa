//! The hash chain on disk: each record's hash, reading the last record of an existing
//! log (and moving a torn one aside), and checking a whole log.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The `prev` of the first record.
pub(super) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// What precedes a record's hash, its last field.
pub(super) const HASH_FIELD: &str = ",\"hash\":\"";

pub(super) fn hash_body(body: &str) -> String {
    blake3::hash(body.as_bytes()).to_hex().to_string()
}

/// The sequence number and hash of the last complete record of an existing log (0 and
/// the genesis hash for a missing or empty one), reading only the file's tail, and, if
/// the file ends in a record cut short by a crash (no final newline, and the bytes do
/// not verify), the offset where that torn record starts.
pub(super) fn last_record(path: &Path) -> io::Result<(u64, String, Option<u64>)> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((0, GENESIS.to_owned(), None)),
        Err(error) => return Err(error),
    };
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        // A device or a pipe (/dev/null, a log shipper's FIFO): nothing to continue.
        return Ok((0, GENESIS.to_owned(), None));
    }
    let length = metadata.len();
    let start = length.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start))?;
    // Bytes, not a string: the seek may land inside a multi-byte character of an
    // earlier record, and only the last lines need to be text.
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let mut torn = None;
    if !tail.is_empty() && !tail.ends_with(b"\n") {
        let cut = tail.iter().rposition(|byte| *byte == b'\n').map_or(0, |at| at + 1);
        let partial = std::str::from_utf8(&tail[cut..]).ok();
        if partial.is_none_or(|line| check_line(line).is_err()) {
            if cut == 0 && start > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: a torn last record longer than 64 KiB", path.display()),
                ));
            }
            torn = Some(start + cut as u64);
            tail.truncate(cut);
        }
    }
    let Some(line) = tail.split(|byte| *byte == b'\n').rev().find(|line| !line.trim_ascii().is_empty())
    else {
        return Ok((0, GENESIS.to_owned(), torn));
    };
    let broken = |reason: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: last record is broken: {reason}", path.display()),
        )
    };
    let line = std::str::from_utf8(line).map_err(|error| broken(error.to_string()))?;
    let record = check_line(line).map_err(broken)?;
    Ok((record.seq, record.hash, torn))
}

/// Moves the torn bytes from `offset` to the end of the log into `<log>.torn-<time>`
/// (kept for forensics) and truncates the log there; says what it did, for the record.
pub(super) fn move_torn_tail(path: &Path, offset: u64) -> io::Result<String> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut torn = Vec::new();
    file.read_to_end(&mut torn)?;
    let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let aside = PathBuf::from(format!("{}.torn-{stamp}", path.display()));
    std::fs::write(&aside, &torn)?;
    file.set_len(offset)?;
    file.sync_all()?;
    let detail = format!(
        "{} bytes of a record cut short (a crash while writing) moved to {}",
        torn.len(),
        aside.display()
    );
    tracing::warn!(path = %path.display(), "{detail}");
    Ok(detail)
}

struct Checked {
    seq: u64,
    prev: String,
    hash: String,
    /// For the `rotated` record a file started by rotation begins with: through which
    /// `seq` rotation had removed records.
    removed_through: Option<u64>,
}

/// Through which `seq` rotation has removed records of the log at `path`, as the
/// `rotated` record its current file starts with says (0 if it starts otherwise).
pub(super) fn removed_through_seq(path: &Path) -> io::Result<u64> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    if !file.metadata()?.is_file() {
        return Ok(0);
    }
    let mut first = String::new();
    // A record is far shorter; the bound keeps a strange file from filling memory.
    BufReader::new(file.take(64 * 1024)).read_line(&mut first)?;
    Ok(check_line(first.trim_end()).ok().and_then(|record| record.removed_through).unwrap_or(0))
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
    let removed_through = if value.get("event").and_then(|v| v.as_str()) == Some("rotated") {
        Some(field("removed_through_seq")?.as_u64().ok_or("removed_through_seq is not a number")?)
    } else {
        None
    };
    Ok(Checked { seq, prev, hash, removed_through })
}

/// Why a log does not verify: the first broken record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}, line {line}: {reason}", file.display())]
pub struct ChainError {
    /// The file holding it.
    pub file: PathBuf,
    /// 1-based line number of the first broken record.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// What [`verify`] found intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records checked, across every file.
    pub records: u64,
    /// Files checked: the log and the rotated files beside it.
    pub files: usize,
    /// The first record's `seq`: above 1 when the oldest files were removed by
    /// rotation (the first remaining file says what was removed).
    pub first_seq: u64,
}

/// Checks the whole chain of the log at `path`, through its rotated files
/// (`<path>.<n>` ... `<path>.1`, oldest first): every record verifies, and each follows
/// the one before it, across files; the records before the first are exactly those that
/// rotation says it removed.
pub fn verify(path: &Path) -> Result<Result<Verified, ChainError>, io::Error> {
    let files = super::rotation::files_oldest_first(path);
    let mut last: Option<(u64, String)> = None;
    let mut removed_through = 0;
    let mut found = Verified { records: 0, files: files.len(), first_seq: 1 };
    for file in &files {
        let reader = BufReader::new(File::open(file)?);
        for (index, line) in reader.lines().enumerate() {
            let line = line?;
            let broken = |reason: String| Ok(Err(ChainError { file: file.clone(), line: index + 1, reason }));
            let record = match check_line(&line) {
                Ok(record) => record,
                Err(reason) => return broken(reason),
            };
            match &last {
                None if record.seq == 1 && record.prev != GENESIS => {
                    return broken("the first record does not start the chain".into());
                }
                None if record.seq > 1 && record.removed_through.is_none() => {
                    return broken(format!(
                        "the log starts at seq {} with no rotated record (its head was cut)",
                        record.seq
                    ));
                }
                None => found.first_seq = record.seq,
                Some((seq, prev)) => {
                    if record.prev != *prev {
                        return broken(
                            "prev does not match the previous record's hash (a record was changed, removed \
                             or inserted, or a file is missing)"
                                .into(),
                        );
                    }
                    if record.seq != seq + 1 {
                        return broken(format!("seq {} follows {seq}", record.seq));
                    }
                }
            }
            found.records += 1;
            removed_through = removed_through.max(record.removed_through.unwrap_or(0));
            last = Some((record.seq, record.hash));
        }
    }
    if found.first_seq != removed_through + 1 {
        return Ok(Err(ChainError {
            file: files[0].clone(),
            line: 1,
            reason: format!(
                "the chain starts at seq {}, but rotation removed records only through seq {removed_through} \
                 (a file is missing)",
                found.first_seq
            ),
        }));
    }
    Ok(Ok(found))
}
