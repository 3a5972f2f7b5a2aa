//! Benchmark support for keymux (benches live in `benches/`).
