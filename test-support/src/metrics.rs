//! Samples read from a Prometheus metrics page (the admin endpoint's `/metrics`, or
//! the registry's own encoding).

/// The sum of every sample in a metrics page whose name and labels start with
/// `prefix` (e.g. `keymux_kms_calls_total{backend="a",call="decrypt"`); 0 if none.
pub fn metric_sum(page: &str, prefix: &str) -> f64 {
    page.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of the sample `name` (with labels, as printed) in a metrics page.
pub fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} not in metrics page"))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
