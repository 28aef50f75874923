//! Criterion benchmarks live in `benches/`; see RESULTS.md.
