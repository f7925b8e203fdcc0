//! Rate-limited warnings: every warning that outside input can cause (an
//! app's or a control client's misbehaviour, a flood of attach attempts)
//! goes through [`warn_limited!`](crate::warn_limited) (and routine lines
//! whose rate a client decides, like apps attaching, through
//! [`info_limited!`](crate::info_limited)), so no client can fill the log.
//!
//! Each call site logs at most [`BURST`] lines per [`WINDOW_NS`]; what it
//! suppresses is counted, reported as `suppressed=N` on the site's next
//! line that gets through, and summed over all sites in [`suppressed_total`]
//! (`tasctl stats`: `log.suppressed`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Lines per call site and window.
pub const BURST: u64 = 5;
/// The window: 10 s.
pub const WINDOW_NS: u64 = 10_000_000_000;

static SUPPRESSED_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Lines suppressed so far, over every call site.
pub fn suppressed_total() -> u64 {
    SUPPRESSED_TOTAL.load(Ordering::Relaxed)
}

/// The state of one call site.
pub struct RateLimit {
    /// Start of the current window (ns, monotonic); 0 before the first line.
    window: AtomicU64,
    /// Lines asked for in the current window.
    count: AtomicU64,
    /// Lines suppressed since the last one that got through.
    suppressed: AtomicU64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimit {
    pub const fn new() -> Self {
        RateLimit {
            window: AtomicU64::new(0),
            count: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged at `now_ns`: `Some(n)` with the number
    /// suppressed since the last logged one, or None (counted as
    /// suppressed). Races between threads only blur the counts.
    pub fn check(&self, now_ns: u64) -> Option<u64> {
        let start = self.window.load(Ordering::Relaxed);
        if start == 0 || now_ns.saturating_sub(start) >= WINDOW_NS {
            self.window.store(now_ns.max(1), Ordering::Relaxed);
            self.count.store(0, Ordering::Relaxed);
        }
        if self.count.fetch_add(1, Ordering::Relaxed) < BURST {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            SUPPRESSED_TOTAL.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// `tracing::warn!` with a per-call-site rate limit (see the module docs);
/// the same arguments as `warn!`.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::ratelimit::RateLimit = $crate::ratelimit::RateLimit::new();
        if let Some(suppressed) = LIMIT.check(::tas_runtime::now_ns()) {
            if suppressed > 0 {
                ::tracing::warn!(suppressed, $($arg)+);
            } else {
                ::tracing::warn!($($arg)+);
            }
        }
    }};
}

/// `tracing::info!` with the same per-call-site rate limit, for routine
/// lines whose rate outside input decides (apps attaching and detaching).
#[macro_export]
macro_rules! info_limited {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::ratelimit::RateLimit = $crate::ratelimit::RateLimit::new();
        if let Some(suppressed) = LIMIT.check(::tas_runtime::now_ns()) {
            if suppressed > 0 {
                ::tracing::info!(suppressed, $($arg)+);
            } else {
                ::tracing::info!($($arg)+);
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_counts_what_it_suppressed() {
        let r = RateLimit::new();
        let t0 = 5_000_000_000;
        let before = suppressed_total();
        for i in 0..BURST {
            assert_eq!(r.check(t0 + i), Some(0));
        }
        for i in 0..100 {
            assert_eq!(r.check(t0 + 1000 + i), None);
        }
        assert!(suppressed_total() >= before + 100);
        // The next window lets lines through again and reports the count once.
        assert_eq!(r.check(t0 + WINDOW_NS), Some(100));
        assert_eq!(r.check(t0 + WINDOW_NS + 1), Some(0));
    }

    #[test]
    fn the_macro_compiles_with_fields() {
        let pid = 7;
        for _ in 0..20 {
            crate::warn_limited!(pid, "test line {}", 1);
        }
    }
}
