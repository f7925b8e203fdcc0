//! How long a thread waiting for TAS events spins before it blocks: fixed
//! by `TAS_SPIN_US`, otherwise self-tuned by `tas_tune`'s rule
//! ([`tas_tune::SharedSpinTuner`]) from the gaps this process's waits saw,
//! toward the program's goal (`TAS_PROFILE`, set by `tasctl run
//! --profile`) or, without one, the daemon's (`tasctl tune`, read from a
//! context's region header). The `LD_PRELOAD` shim keeps one [`SpinCtl`]
//! for its process; [`Tas::wait`](crate::Tas::wait) uses the process's
//! [`process`].
//!
//! The self-tuned spin also keeps to a CPU budget: threads spin at the
//! same time only while, beside them and the fast-path cores (one per lane
//! tasd runs), at least one CPU of the process's affinity set is left for
//! everything else — the kernel's network work, the peer on the same host,
//! other programs ([`spin_budget`]). On two vCPUs with one fast-path core
//! that leaves no app spin at all: measured there (docs/perf-bench.md,
//! session 22), echo1, redis and sockperf's p99 ran best with the app
//! blocking at once (sockperf's p50 did not), since a spinning app thread
//! takes the CPU the kernel and the client need.
//!
//! Nothing here blocks or allocates after construction; the one system
//! call is `sched_getaffinity` at construction.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use tas_tune::{Goal, SharedSpinTuner};

/// Epoch length, ns.
const EPOCH_NS: u64 = 50_000_000;
/// The spin before the first epoch ends (the historical default).
const START_SPIN_NS: u64 = 50_000;

pub struct SpinCtl {
    tuner: SharedSpinTuner,
    /// `TAS_PROFILE`: the program's own goal.
    profile: Option<Goal>,
    /// CPUs the process may run on (at start).
    cpus: u32,
    /// The most fast-path lanes of any attached context.
    lanes: AtomicU32,
    /// App threads spinning now.
    spinners: AtomicU32,
}

/// How many app threads may spin at once on `cpus` CPUs beside `lanes`
/// fast-path cores: one CPU is always left for the rest of the machine.
pub fn spin_budget(cpus: u32, lanes: u32) -> u32 {
    cpus.saturating_sub(lanes).saturating_sub(1)
}

/// A thread counted as spinning ([`SpinCtl::enter`]) until dropped.
pub struct Spinning<'a>(Option<&'a AtomicU32>);

impl Drop for Spinning<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.0 {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// CPUs in the calling process's affinity set (1 if unknown).
fn affinity_cpus() -> u32 {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity writes at most
    // size_of::<cpu_set_t>() bytes into it; CPU_COUNT only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return 1;
        }
        (libc::CPU_COUNT(&set) as u32).max(1)
    }
}

impl SpinCtl {
    pub fn new(fixed_us: Option<u64>, profile: Option<Goal>) -> SpinCtl {
        SpinCtl::with_cpus(fixed_us, profile, affinity_cpus())
    }

    fn with_cpus(fixed_us: Option<u64>, profile: Option<Goal>, cpus: u32) -> SpinCtl {
        SpinCtl {
            tuner: SharedSpinTuner::new(
                fixed_us.map(|us| us.saturating_mul(1000)),
                START_SPIN_NS,
                EPOCH_NS,
            ),
            profile,
            cpus,
            // Until a context says otherwise: one fast-path core.
            lanes: AtomicU32::new(1),
            spinners: AtomicU32::new(0),
        }
    }

    /// A context attached to a tasd that runs `lanes` lanes.
    pub fn note_lanes(&self, lanes: usize) {
        self.lanes
            .fetch_max(lanes.min(u32::MAX as usize) as u32, Ordering::Relaxed);
    }

    /// The spin to use now, ns.
    #[inline]
    pub fn spin_ns(&self) -> u64 {
        self.tuner.spin_ns()
    }

    /// Whether a wait might spin now: with `TAS_SPIN_US`, or while the CPU
    /// budget has room for another spinner (whatever the tuned spin is).
    /// When not, a wait has no use for a look before it blocks: the
    /// kernel's wait returns at once when something is ready.
    pub fn may_spin(&self) -> bool {
        self.tuner.is_fixed()
            || self.spinners.load(Ordering::Relaxed)
                < spin_budget(self.cpus, self.lanes.load(Ordering::Relaxed))
    }

    /// Whether the calling thread may spin now: always with `TAS_SPIN_US`,
    /// else while fewer threads spin than [`spin_budget`] allows. The
    /// thread counts as spinning until the answer is dropped.
    pub fn enter(&self) -> Option<Spinning<'_>> {
        // `TAS_SPIN_US` given: the spin is the user's, no budget applies.
        if self.tuner.is_fixed() {
            return Some(Spinning(None));
        }
        let budget = spin_budget(self.cpus, self.lanes.load(Ordering::Relaxed));
        self.spinners
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < budget).then_some(n + 1)
            })
            .ok()
            .map(|_| Spinning(Some(&self.spinners)))
    }

    /// A wait that began at `start` (monotonic ns) found something ready
    /// at `now`. `view` tells the daemon's goal and the contention to price
    /// spinning with ([`priced_contention`]); it is called only when the
    /// record ends an epoch.
    pub fn record(&self, start: u64, now: u64, view: impl FnOnce() -> (Goal, f64)) {
        let profile = self.profile;
        self.tuner.record(start, now, || {
            let (goal, contention) = view();
            (profile.unwrap_or(goal), contention)
        });
    }
}

/// The app spin's settings in the environment: `TAS_SPIN_US` (µs; unset
/// or not a number: self-tuned) and `TAS_PROFILE` (unset or blank: none;
/// a name that is not a goal: the error, for the caller to report).
pub fn settings_from_env() -> (Option<u64>, Result<Option<Goal>, String>) {
    let fixed = std::env::var("TAS_SPIN_US")
        .ok()
        .and_then(|v| v.trim().parse().ok());
    let profile = match std::env::var(tas_tune::PROFILE_ENV) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| format!("{}: {e}", tas_tune::PROFILE_ENV)),
        _ => Ok(None),
    };
    (fixed, profile)
}

/// The process's spin for [`Tas::wait`](crate::Tas::wait), from
/// [`settings_from_env`] once (a profile that is not a goal is ignored).
pub fn process() -> &'static SpinCtl {
    static SPIN: OnceLock<SpinCtl> = OnceLock::new();
    SPIN.get_or_init(|| {
        let (fixed, profile) = settings_from_env();
        SpinCtl::new(fixed, profile.unwrap_or(None))
    })
}

/// A monotonic clock for [`process`]'s records, ns since its first use in
/// this process.
pub fn monotonic_ns() -> u64 {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos()
        .min(u128::from(u64::MAX)) as u64
}

/// CPU wait of the fast-path core that the app's spin ignores: a
/// ping-pong on two vCPUs (client, app and core) costs the core 10-20 %
/// anyway, and the app's spin is what keeps its latency low there; above
/// it (redis-server with 50 clients: ~33 %) the app's spinning takes the
/// core's CPU and is priced up (measured on this 2-vCPU VM, docs/perf-bench.md).
const CORE_WAIT_FREE: f64 = 0.22;

/// The contention to price an app's spinning with, from the CPU wait of
/// its fast-path core (`core_wait_ppm`, a region header's
/// `cpu_contention_ppm`): an app thread that spins takes the CPU that core
/// needs.
pub fn priced_contention(core_wait_ppm: u32) -> f64 {
    let wait = f64::from(core_wait_ppm) / 1e6;
    ((wait - CORE_WAIT_FREE).max(0.0) / (1.0 - CORE_WAIT_FREE) * 2.5).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_leaves_a_cpu_beside_the_cores() {
        assert_eq!(spin_budget(2, 1), 0);
        assert_eq!(spin_budget(2, 2), 0);
        assert_eq!(spin_budget(1, 1), 0);
        assert_eq!(spin_budget(4, 1), 2);
        assert_eq!(spin_budget(16, 4), 11);
        assert_eq!(spin_budget(0, 0), 0);
    }

    #[test]
    fn at_most_the_budget_spins_at_once() {
        // 4 CPUs, one lane: two spinners.
        let c = SpinCtl::with_cpus(None, None, 4);
        let a = c.enter().expect("first spinner");
        let b = c.enter().expect("second spinner");
        assert!(c.enter().is_none(), "a third would take the last CPU");
        drop(a);
        let a2 = c.enter().expect("a slot came free");
        drop((a2, b));
        assert_eq!(c.spinners.load(Ordering::Relaxed), 0);
        // A tasd with 3 lanes: none.
        c.note_lanes(3);
        assert!(c.enter().is_none());
        // Fewer lanes later never lowers the count (any context may use
        // the larger tasd).
        c.note_lanes(1);
        assert!(c.enter().is_none());
    }

    #[test]
    fn the_core_wait_prices_the_spin_above_what_a_ping_pong_costs_anyway() {
        assert_eq!(priced_contention(0), 0.0);
        assert_eq!(priced_contention(220_000), 0.0);
        let mid = priced_contention(376_000);
        assert!((mid - 0.5).abs() < 1e-9, "{mid}");
        assert_eq!(priced_contention(1_000_000), 1.0);
        assert_eq!(priced_contention(u32::MAX), 1.0);
    }

    #[test]
    fn two_cpus_one_core_no_app_spin() {
        let c = SpinCtl::with_cpus(None, None, 2);
        assert!(c.enter().is_none());
    }

    #[test]
    fn a_fixed_spin_is_the_users() {
        let c = SpinCtl::with_cpus(Some(50), None, 2);
        let a = c.enter().expect("TAS_SPIN_US spins regardless");
        let b = c.enter().expect("every thread");
        drop((a, b));
        assert_eq!(c.spinners.load(Ordering::Relaxed), 0);
    }
}
