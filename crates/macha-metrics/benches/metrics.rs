//! Benchmarks of metrics over time (filled in below).
fn main() {}
