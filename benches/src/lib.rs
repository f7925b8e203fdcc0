//! Benchmark programs.
