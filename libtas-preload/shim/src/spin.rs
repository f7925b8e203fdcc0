//! How long a waiting thread spins before it blocks: fixed by
//! `TAS_SPIN_US`, otherwise self-tuned by `tas_tune`'s rule
//! ([`tas_tune::SharedSpinTuner`]) from the gaps this process's waits saw,
//! toward the program's goal (`TAS_PROFILE`, set by `tasctl run
//! --profile`) or, without one, the daemon's (`tasctl tune`, read from a
//! context's region header).
//!
//! Owns the process-wide spin. Nothing here blocks (contexts are only
//! tried), allocates or makes a system call.

use crate::global::global;
use tas_tune::{Goal, SharedSpinTuner};

/// Epoch length, ns.
const EPOCH_NS: u64 = 50_000_000;
/// The spin before the first epoch ends (the historical default).
const START_SPIN_NS: u64 = 50_000;

pub struct SpinCtl {
    tuner: SharedSpinTuner,
    /// `TAS_PROFILE`: the program's own goal.
    profile: Option<Goal>,
}

impl SpinCtl {
    pub fn new(fixed_us: Option<u64>, profile: Option<Goal>) -> SpinCtl {
        SpinCtl {
            tuner: SharedSpinTuner::new(
                fixed_us.map(|us| us.saturating_mul(1000)),
                START_SPIN_NS,
                EPOCH_NS,
            ),
            profile,
        }
    }

    /// The spin to use now, ns.
    #[inline]
    pub fn spin_ns(&self) -> u64 {
        self.tuner.spin_ns()
    }

    /// A wait that began at `start` (monotonic ns) found something ready
    /// at `now`.
    pub fn record(&self, start: u64, now: u64) {
        let profile = self.profile;
        self.tuner.record(start, now, || {
            let (goal, contention) = daemon_view();
            (profile.unwrap_or(goal), contention)
        });
    }
}

/// CPU wait of the fast-path core that the app's spin ignores: a
/// ping-pong on two vCPUs (client, app and core) costs the core 10-20 %
/// anyway, and the app's spin is what keeps its latency low there; above
/// it (redis-server with 50 clients: ~33 %) the app's spinning takes the
/// core's CPU and is priced up (measured on this 2-vCPU VM, docs/perf-bench.md).
const CORE_WAIT_FREE: f64 = 0.22;

/// The daemon's goal and the contention to price the app's spinning with,
/// from the CPU wait of its fast-path core (an app thread that spins takes
/// the CPU that core needs), from the first live context free to look at.
fn daemon_view() -> (Goal, f64) {
    for c in global().live_ctxs() {
        if let Some(inner) = c.inner.try_lock() {
            let goal = Goal::from_wire(inner.tas.goal()).unwrap_or_default();
            let wait = f64::from(inner.tas.cpu_contention_ppm()) / 1e6;
            let priced = ((wait - CORE_WAIT_FREE).max(0.0) / (1.0 - CORE_WAIT_FREE) * 2.5).min(1.0);
            return (goal, priced);
        }
    }
    (Goal::default(), 0.0)
}
