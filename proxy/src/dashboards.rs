//! Checks that `deploy/grafana/keymux.json` and `deploy/prometheus/keymux-alerts.yml`
//! query only metrics keymux exports: the core families from [`Metrics`] as encoded,
//! the backends' own families (`keymux_kms_*`, `keymux_pkcs11_*`) from their
//! registrations, which only a proxy on that backend exports.

use std::collections::BTreeSet;
use std::path::Path;

use crate::telemetry::Metrics;

/// Every metric name the text names (`keymux_` and on).
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("keymux_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The sample names keymux can export: each family as `# TYPE` names it, with the
/// suffixes its type adds.
fn exported() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut families: Vec<(String, String)> = Metrics::new()
        .encode()
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' ').map(|(name, kind)| (name.to_owned(), kind.to_owned())))
        .collect();
    // Families with no sample yet are not encoded, and the backends' only with their
    // backend: `<registry>.register("<name>", ...)` where they are registered.
    let sources = [
        ("registry", "keymux_", "telemetry.rs"),
        ("kms", "keymux_kms_", "backend/kms/metrics.rs"),
        ("pkcs11", "keymux_pkcs11_", "backend/pkcs11/metrics.rs"),
    ];
    for (registry, prefix, file) in sources {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let call = format!("{registry}.register(");
        for (at, _) in text.match_indices(&call) {
            let after = &text[at + call.len()..];
            let quoted = after.split('"').nth(1).unwrap();
            families.push((format!("{prefix}{quoted}"), "unknown".into()));
        }
    }
    let mut names = BTreeSet::new();
    for (family, kind) in families {
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "gauge" => &[""],
            _ => &["", "_total", "_bucket", "_sum", "_count"],
        };
        for suffix in suffixes {
            names.insert(format!("{family}{suffix}"));
        }
    }
    names
}

#[test]
fn the_dashboard_and_the_alerts_name_metrics_that_exist() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let exported = exported();
    assert!(exported.contains("keymux_requests_total"), "{exported:?}");
    assert!(exported.contains("keymux_kms_circuit_open"), "{exported:?}");
    let dashboard = std::fs::read_to_string(deploy.join("grafana/keymux.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    assert!(parsed["panels"].as_array().is_some_and(|panels| panels.len() >= 8));
    let alerts = std::fs::read_to_string(deploy.join("prometheus/keymux-alerts.yml")).unwrap();
    for (file, text) in [("grafana/keymux.json", &dashboard), ("prometheus/keymux-alerts.yml", &alerts)] {
        let named = names_in(text);
        assert!(named.len() >= 5, "{file}: {named:?}");
        let unknown: Vec<&String> = named.iter().filter(|name| !exported.contains(*name)).collect();
        assert!(unknown.is_empty(), "{file} queries metrics keymux does not export: {unknown:?}");
    }
}
