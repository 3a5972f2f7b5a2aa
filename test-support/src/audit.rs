//! Counting what an audit log recorded, with floods summarised: a denial (or failed
//! handshake) is either its own record or counted in a `repeated` record.

/// How many events of kind `event` (`denied`, `handshake_failed`) the JSON-lines audit
/// log `log` accounts for: the records of that kind, plus the counts of the `repeated`
/// records summarising more of them.
pub fn events(log: &str, event: &str) -> u64 {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|record| match record["event"].as_str() {
            Some(kind) if kind == event => 1,
            Some("repeated") if record["of"] == event => record["count"].as_u64().unwrap_or(0),
            _ => 0,
        })
        .sum()
}
