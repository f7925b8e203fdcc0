//! Benchmark programs and the harnesses behind them.
//!
//! Benchmarks print tables and never fail on a number (see
//! `/work/shared/TESTING.md`). The harness code lives in the library so the
//! smoke tests in `tests/` can run every scenario at small sizes and check
//! that the benchmark still measures what it claims to (frame counts, bytes
//! in the rings), without ever asserting on timing.
//!
//! * [`fastpath`]: the sans-I/O fast path driven over in-memory frames
//!   (binary `fastpath-bench`, script `callgrind.sh`; results and method in
//!   `docs/fastpath-bench.md`).
//! * [`floor`]: the host's memory floor under the fast path's per-flow
//!   access pattern (`fastpath-bench --floor`), no TCP in it.

pub mod fastpath;
pub mod floor;
