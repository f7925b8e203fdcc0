//! The system's CPU pressure (`/proc/pressure/cpu`, PSI): the share of
//! wall-clock time in which at least one runnable task waited for a CPU.
//!
//! A polling thread that spins keeps a CPU that someone else may want;
//! its own run delay (schedstat) only says that *it* was kept waiting.
//! PSI's `some` line says whether *anyone* was: the client on the same
//! host, the kernel's softirq work on veth, the app's own threads. The
//! spin controllers price spinning with the larger of the two, so a core
//! or an app thread stops spinning when another task needs the CPU more.
//!
//! Owns the reading and parsing of the file, once per epoch (one `pread`
//! of an open fd); nothing per packet. Must not fail anything: without
//! PSI (a kernel built without it, `psi=0`, a container that hides it)
//! [`CpuPressure::delta`] answers `None` and callers fall back to the
//! thread's own wait.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// The pressure file (the host's, or the cgroup's in a container).
const PATH: &str = "/proc/pressure/cpu";

pub struct CpuPressure {
    file: Option<File>,
    /// `some` total, µs, at the previous read.
    last_us: Option<u64>,
}

impl CpuPressure {
    pub fn open() -> CpuPressure {
        let mut p = CpuPressure {
            file: File::open(PATH).ok(),
            last_us: None,
        };
        p.last_us = p.read();
        p
    }

    /// The `some` total now, µs.
    fn read(&mut self) -> Option<u64> {
        let f = self.file.as_ref()?;
        let mut buf = [0u8; 256];
        let n = match f.read_at(&mut buf, 0) {
            Ok(n) => n,
            Err(_) => {
                // EOPNOTSUPP with psi=0: stop trying.
                self.file = None;
                return None;
            }
        };
        parse_some_total(&buf[..n])
    }

    /// The share (0..=1) of the last `wall_ns` in which some task waited
    /// for a CPU; `None` without PSI or on the first epoch.
    pub fn delta(&mut self, wall_ns: u64) -> Option<f64> {
        let now = self.read()?;
        let prev = self.last_us.replace(now)?;
        if wall_ns == 0 {
            return None;
        }
        let waited_ns = now.saturating_sub(prev).saturating_mul(1000);
        Some((waited_ns as f64 / wall_ns as f64).clamp(0.0, 1.0))
    }
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

    #[test]
    fn share_of_the_epoch() {
        let mut p = CpuPressure {
            file: None,
            last_us: None,
        };
        // No file: no answer, however often asked.
        assert_eq!(p.delta(20_000_000), None);
    }
}
