//! Property tests of the config parser: no text makes it panic or hang. Every input
//! either gives a config that validates or an error naming what is wrong.
//!
//! Inputs are the example configs with one line mutated (deleted, doubled, or its value
//! replaced by something hostile: huge or negative numbers, out-of-range durations,
//! wrong types, unterminated strings), and arbitrary text.

use std::path::Path;

use proptest::prelude::*;

use super::Config;

const EXAMPLES: [&str; 5] = ["soft.toml", "softhsm.toml", "kms.toml", "tls.toml", "vault.toml"];

/// Values a hostile or careless operator might write after `=`.
const HOSTILE_VALUES: &[&str] = &[
    "",
    "0",
    "-1",
    "18446744073709551616",
    "9223372036854775807",
    "1e400",
    "nan",
    "\"\"",
    "\"0s\"",
    "\"-1s\"",
    "\"18446744073709551615s\"",
    "\"99999999999999999999999h\"",
    "\"1 fortnight\"",
    "\"\u{202e}\u{0}\"",
    "[",
    "[\"*\", 1]",
    "{ a = 1 }",
    "true",
    "\"unterminated",
    "'''",
];

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    std::fs::read_to_string(path).unwrap()
}

/// `text` with line `line` (modulo the line count) changed by `mutation`.
fn mutate(text: &str, line: usize, mutation: usize, value: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let at = line % lines.len().max(1);
    match mutation % 3 {
        0 => {
            lines.remove(at);
        }
        1 => {
            let copy = lines[at].clone();
            lines.insert(at, copy);
        }
        _ => {
            if let Some((key, _)) = lines[at].split_once('=') {
                lines[at] = format!("{key}= {value}");
            }
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn a_mutated_example_parses_or_names_its_error(
        file in 0..EXAMPLES.len(),
        line in any::<usize>(),
        mutation in any::<usize>(),
        value in prop::sample::select(HOSTILE_VALUES),
    ) {
        let text = mutate(&example(EXAMPLES[file]), line, mutation, value);
        if let Err(error) = Config::parse(&text) {
            prop_assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        let _ = Config::parse(&text);
    }
}
