//! The system's CPU pressure (`/proc/pressure/cpu`, PSI): the share of
//! wall-clock time in which at least one runnable task waited for a CPU.
//! Benchmarks print it beside each run (`perf-bench`) to show how much the
//! parties of a run got in each other's way.
//!
//! Not a spin signal: pricing the cores' self-tuned spin with it as well as
//! with their own run delay was measured (session 22, docs/perf-bench.md)
//! and lost on every row: a ping-pong's wake-ups alone keep the pressure at
//! 10-15 %, enough to stop the spin that makes its latency.
//!
//! Owns the reading and parsing of the file. Without PSI (a kernel built
//! without it, `psi=0`, a container that hides it) [`some_total_us`]
//! answers `None`.

/// The pressure file (the host's, or the cgroup's in a container).
const PATH: &str = "/proc/pressure/cpu";

/// PSI's `some` total now, µs: how long, in all, some task waited for a
/// CPU since boot. `None` without PSI.
pub fn some_total_us() -> Option<u64> {
    parse_some_total(&std::fs::read(PATH).ok()?)
}

/// `total=` of the `some` line of a PSI file:
/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=12345`.
pub fn parse_some_total(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_ascii_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_some_line() {
        let t = b"some avg10=4.00 avg60=7.48 avg300=16.83 total=16749793310\n\
                  full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_some_total(t), Some(16_749_793_310));
        // `full` first, `some` second: still the `some` total.
        let t = b"full avg10=0.00 avg60=0.00 avg300=0.00 total=7\nsome avg10=0.00 total=42\n";
        assert_eq!(parse_some_total(t), Some(42));
    }

    #[test]
    fn rejects_what_is_not_psi() {
        assert_eq!(parse_some_total(b""), None);
        assert_eq!(parse_some_total(b"some avg10=1.0\n"), None);
        assert_eq!(parse_some_total(b"some total=x\n"), None);
        assert_eq!(parse_some_total(&[0xff, 0xfe]), None);
    }
}
