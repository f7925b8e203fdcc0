//! How long a thread waiting for TAS events spins before it blocks: fixed
//! by `TAS_SPIN_US`, otherwise self-tuned by `tas_tune`'s rule
//! ([`tas_tune::SharedSpinTuner`]) from the gaps this process's waits saw,
//! toward the program's goal (`TAS_PROFILE`, set by `tasctl run
//! --profile`) or, without one, the daemon's (`tasctl tune`, read from a
//! context's region header). The `LD_PRELOAD` shim keeps one [`SpinCtl`]
//! for its process; [`Tas::wait`](crate::Tas::wait) uses the process's
//! [`process`].
//!
//! A spinning thread yields its CPU between polls ([`relax`]), as the
//! fast-path cores do, so that it holds no CPU another runnable thread
//! wants (the core it shares a CPU with, the kernel's network work, a
//! client on the same host). The self-tuned spin also keeps to a CPU
//! budget: threads spin at the same time only while, beside them and the
//! fast-path cores (one per lane tasd runs), at least one CPU of the
//! process's affinity set is left for everything else, and one thread may
//! always spin ([`spin_budget`]). Measured on two vCPUs with one core
//! (docs/perf-bench.md, session 28): a 50 µs spin that did not yield cut
//! echo1 to 0.27–0.31× Linux and redis to 0.77–0.87×, where blocking at
//! once gave 0.56× and 1.07×; one that yields gave 0.56–0.74× and
//! 1.15–1.24×, and sockperf's p50 fell from 16–19 to 9–11 µs.
//!
//! Nothing here blocks or allocates after construction; the system calls
//! are `sched_getaffinity` at construction and [`relax`]'s `sched_yield`.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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
    /// App threads in a blocking call's wait now (spinning or blocked).
    waiters: AtomicU32,
}

/// How many app threads may spin at once on `cpus` CPUs beside `lanes`
/// fast-path cores: one CPU is left for the rest of the machine, but one
/// thread may always spin (it yields its CPU to any thread that waits for
/// it, [`relax`]).
pub fn spin_budget(cpus: u32, lanes: u32) -> u32 {
    cpus.saturating_sub(lanes).saturating_sub(1).max(1)
}

/// One pause of a spinning wait: the CPU goes to any thread waiting for
/// it (`sched_yield`; with nobody waiting it returns at once, ~0.6 µs on
/// this VM). Without it a spinning app on a CPU it shares with its
/// fast-path core or its client kept that CPU until the scheduler
/// preempted it, a slice later. A thread under a seccomp filter
/// ([`crate::set_thread_ctl_io`] off, or [`forbid_yield`] for the whole
/// process) only pauses the CPU: sshd's pre-authentication sandbox kills
/// a thread that calls `sched_yield`.
#[inline]
pub fn relax() {
    if crate::ctl_io() && !NO_YIELD.load(Ordering::Relaxed) {
        // SAFETY: sched_yield takes no arguments and touches no memory.
        unsafe { libc::sched_yield() };
    } else {
        std::hint::spin_loop();
    }
}

/// Set once every thread of the process is under a seccomp filter.
static NO_YIELD: AtomicBool = AtomicBool::new(false);

/// Every thread of the process is now under a seccomp filter that may not
/// allow `sched_yield`: [`relax`] no longer calls it.
pub fn forbid_yield() {
    NO_YIELD.store(true, Ordering::Relaxed);
}

/// A thread counted in one of [`SpinCtl`]'s counters (spinning,
/// [`SpinCtl::enter`]; in a wait, [`SpinCtl::enter_wait`]) until dropped.
pub struct Counted<'a>(Option<&'a AtomicU32>);

impl Drop for Counted<'_> {
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
            waiters: AtomicU32::new(0),
        }
    }

    /// In a child after `fork`: the parent's other threads, which may have
    /// been spinning, do not exist here.
    pub fn after_fork_child(&self) {
        self.spinners.store(0, Ordering::Relaxed);
        self.waiters.store(0, Ordering::Relaxed);
    }

    /// The calling thread is in a blocking call's wait until the answer is
    /// dropped.
    pub fn enter_wait(&self) -> Counted<'_> {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        Counted(Some(&self.waiters))
    }

    /// Whether another thread of the process is in a wait beside the
    /// calling one (which has entered its own).
    pub fn others_wait(&self) -> bool {
        self.waiters.load(Ordering::Relaxed) > 1
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
    pub fn enter(&self) -> Option<Counted<'_>> {
        // `TAS_SPIN_US` given: the spin is the user's, no budget applies.
        if self.tuner.is_fixed() {
            return Some(Counted(None));
        }
        let budget = spin_budget(self.cpus, self.lanes.load(Ordering::Relaxed));
        self.spinners
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < budget).then_some(n + 1)
            })
            .ok()
            .map(|_| Counted(Some(&self.spinners)))
    }

    /// A wait that began at `start` (monotonic ns) found something ready
    /// at `now`. `goal` tells the daemon's goal; it is called only when
    /// the record ends an epoch.
    ///
    /// The spin is not priced with CPU contention: it yields its CPU to
    /// any thread that waits for it ([`relax`]), so what it costs is the
    /// CPU it burns, which the goal prices as a yielding spin's
    /// (`tas_tune::choose_yielding_spin`). (Until session 28 it did not
    /// yield and was priced with its fast-path core's CPU wait; on two
    /// vCPUs that kept sockperf's ping-pong at p50 15-19 µs where the
    /// unpriced, yielding spin gives 9-10 µs, docs/perf-bench.md.)
    pub fn record(&self, start: u64, now: u64, goal: impl FnOnce() -> Goal) {
        let profile = self.profile;
        self.tuner
            .record(start, now, || (profile.unwrap_or_else(goal), 0.0));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_leaves_a_cpu_beside_the_cores_and_one_spinner() {
        assert_eq!(spin_budget(2, 1), 1);
        assert_eq!(spin_budget(2, 2), 1);
        assert_eq!(spin_budget(1, 1), 1);
        assert_eq!(spin_budget(4, 1), 2);
        assert_eq!(spin_budget(16, 4), 11);
        assert_eq!(spin_budget(0, 0), 1);
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
        // A tasd with 3 lanes: one (it yields).
        c.note_lanes(3);
        let one = c.enter().expect("one spinner always");
        assert!(c.enter().is_none());
        // Fewer lanes later never raises the budget again (any context
        // may use the larger tasd).
        c.note_lanes(1);
        assert!(c.enter().is_none());
        drop(one);
    }

    /// A child forked while another thread spun: that thread does not
    /// exist in the child, so its slot must not stay taken (before, the
    /// child of a two-CPU process never spun again).
    #[test]
    fn a_forked_child_has_no_spinners_of_its_parent() {
        let c = SpinCtl::with_cpus(None, None, 2);
        let parents = c.enter().expect("the parent's spinner");
        assert!(c.enter().is_none());
        // In the child the guard is never dropped.
        std::mem::forget(parents);
        c.after_fork_child();
        assert!(c.enter().is_some(), "the child's thread may spin");
    }

    #[test]
    fn two_cpus_one_core_one_app_spinner() {
        let c = SpinCtl::with_cpus(None, None, 2);
        let a = c.enter().expect("one thread spins, yielding");
        assert!(c.enter().is_none(), "a second would hold the other CPU");
        drop(a);
    }

    #[test]
    fn a_fixed_spin_is_the_users() {
        let c = SpinCtl::with_cpus(Some(50), None, 2);
        let a = c.enter().expect("TAS_SPIN_US spins regardless");
        let b = c.enter().expect("every thread");
        drop((a, b));
        assert_eq!(c.spinners.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn waits_that_time_out_bring_the_spin_down() {
        let c = SpinCtl::with_cpus(None, None, 2);
        assert_eq!(c.spin_ns(), START_SPIN_NS);
        // 1 ms waits that found nothing, recorded as 1 ms gaps: a spin
        // cannot bridge them.
        let mut t = 1_000;
        for _ in 0..300 {
            c.record(t, t + 1_000_000, || Goal::Throughput);
            t += 1_000_000;
        }
        assert_eq!(c.spin_ns(), 0);
    }
}
