//! # tas-tune
//!
//! The self-tuning rules of TAS: the *goal* a deployment optimises
//! (`tasctl tune latency|throughput|efficiency`, `tasctl run --profile`)
//! and the online controller that picks how long a waiting thread spins
//! before it blocks — the fast-path cores' idle spin and the app library's
//! spin alike.
//!
//! Owns: [`Goal`] (names, wire value, per-goal weights), [`SpinTuner`]
//! (gap histogram in, spin time out; one thread), [`SharedSpinTuner`]
//! (the same, lock-free, for many threads), and the rules that turn what
//! a caller measured into the tuner's inputs: [`WakeLatency`] (what a
//! wake-up costs, from how late sleeps end), [`own_contention`] and
//! [`machine_contention`] (CPU waits without the part that is only
//! wake-up latency). Must not: read clocks, files or
//! anything else; spawn threads; allocate after construction. Callers feed
//! it the times they measured (gaps, contention) and apply its answer, so
//! the same rule runs in `tasd`'s polling threads and in an app's threads,
//! and is tested without either.
//!
//! # The rule
//!
//! A thread that ran out of work can spin (burn CPU, see the next piece of
//! work at once) or block (give the CPU away, pay a wake-up when work comes:
//! a system call on each side and the scheduler's latency, tens of µs on a
//! VM). This is ski rental: spinning for `s` pays off for the arrivals that
//! come within `s` of the last work and is pure cost for the others. The
//! tuner keeps a histogram of the idle gaps it was told about (log2 buckets
//! from 1 µs) and, once per epoch, picks the spin `s` among the bucket
//! bounds (and 0) that maximises
//!
//! ```text
//!   W(goal) · wake_cost · #(gaps ≤ s)  −  (P(goal) + K(goal) · contention) · Σ min(gap, s)
//! ```
//!
//! i.e. wake-ups saved, valued by the goal, minus CPU time burnt. A CPU
//! nobody else wants costs little to spin on (`P`: 0.1 for `latency`,
//! 0.25 for `throughput`, 1 for `efficiency`, which counts every cycle;
//! an app thread's spin, which yields its CPU between polls, a fifth of
//! that, 0.02 and 0.05, but still 1 for `efficiency`:
//! [`choose_yielding_spin`]); the price rises steeply (`K`) when other threads wait for a CPU
//! (`contention` = the fraction of the epoch this thread spent runnable
//! but not running; tasd's cores use the larger of that and the share of
//! the epoch in which any task waited for a CPU, the kernel's PSI). Under
//! contention a spinning thread takes the CPU the
//! app or the kernel needs, so the spin shrinks: the fast path gives its
//! CPU back exactly when someone else needs it more. `latency` values a
//! saved wake-up twice and tolerates a spin of up to 1 ms; `efficiency`
//! spins only across gaps shorter than a wake-up.
//! After each epoch the histogram is halved, so the rule follows a changing
//! load within a few epochs while one odd epoch does not swing it.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The environment variable that states a program's own goal to the app
/// library (`tasctl run --profile GOAL` sets it).
pub const PROFILE_ENV: &str = "TAS_PROFILE";

/// What the controllers optimise. The default is [`Goal::Throughput`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Goal {
    /// Lowest latency: spin long, add cores early, keep them.
    Latency,
    /// Most requests per CPU-second under load (the default).
    #[default]
    Throughput,
    /// Fewest CPU cycles: block early, add cores late, remove them early.
    Efficiency,
}

impl Goal {
    pub const ALL: [Goal; 3] = [Goal::Latency, Goal::Throughput, Goal::Efficiency];

    /// The value stored in shared memory (never 0, so 0 means "not set").
    pub fn wire(self) -> u32 {
        match self {
            Goal::Latency => 1,
            Goal::Throughput => 2,
            Goal::Efficiency => 3,
        }
    }

    /// Inverse of [`Goal::wire`]; `None` for 0 and unknown values.
    pub fn from_wire(v: u32) -> Option<Goal> {
        match v {
            1 => Some(Goal::Latency),
            2 => Some(Goal::Throughput),
            3 => Some(Goal::Efficiency),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Goal::Latency => "latency",
            Goal::Throughput => "throughput",
            Goal::Efficiency => "efficiency",
        }
    }

    /// How much a saved wake-up is worth.
    fn wake_weight(self) -> f64 {
        match self {
            Goal::Latency => 2.0,
            Goal::Throughput => 1.0,
            Goal::Efficiency => 0.5,
        }
    }

    /// The price of a CPU nanosecond spun when nobody else wants the CPU:
    /// low unless the goal is to save CPU for its own sake.
    fn idle_price(self) -> f64 {
        match self {
            Goal::Latency => 0.1,
            Goal::Throughput => 0.25,
            Goal::Efficiency => 1.0,
        }
    }

    /// The same price for a spin that yields its CPU between polls to any
    /// thread that waits for it (an app's threads: [`SharedSpinTuner`]).
    /// Such a spin takes no CPU another thread wants, so for `latency`
    /// and `throughput` what it burns is CPU nobody else would have used,
    /// priced at a fifth of a spin that holds its CPU; `efficiency` counts
    /// every cycle all the same. (Measured on two vCPUs, `perf-bench
    /// --rows echo64`, a one-thread server of 64 connections under the
    /// `tas` API: its waits between batches last 64–512 µs, which the
    /// holding price never spins across; it blocked for every batch and
    /// served 92–125k req/s where a fixed 50 µs spin gave 124–148k.)
    fn yielding_idle_price(self) -> f64 {
        match self {
            Goal::Latency => 0.02,
            Goal::Throughput => 0.05,
            Goal::Efficiency => 1.0,
        }
    }

    /// How steeply the price of spinning rises with contention.
    fn contention_price(self) -> f64 {
        match self {
            Goal::Latency => 4.0,
            Goal::Throughput => 8.0,
            Goal::Efficiency => 16.0,
        }
    }

    /// The longest spin the goal allows, ns.
    pub fn max_spin_ns(self) -> u64 {
        match self {
            Goal::Latency => 1_000_000,
            Goal::Throughput => 256_000,
            Goal::Efficiency => 64_000,
        }
    }

    /// The scaling controller's thresholds for this goal: add a core when
    /// the active cores' aggregate idle is below the first (in cores),
    /// remove one when it is above the second. The gap stays above one
    /// core (the scaling controller's hysteresis rule).
    pub fn scale_thresholds(self) -> (f64, f64) {
        match self {
            Goal::Latency => (0.35, 1.5),
            Goal::Throughput => (0.2, 1.25),
            Goal::Efficiency => (0.1, 1.15),
        }
    }
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A goal name that is not one of the three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownGoal(pub String);

impl fmt::Display for UnknownGoal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown goal {:?} (one of: latency, throughput, efficiency)",
            self.0
        )
    }
}

impl std::error::Error for UnknownGoal {}

impl FromStr for Goal {
    type Err = UnknownGoal;
    fn from_str(s: &str) -> Result<Goal, UnknownGoal> {
        match s {
            "latency" => Ok(Goal::Latency),
            "throughput" => Ok(Goal::Throughput),
            "efficiency" => Ok(Goal::Efficiency),
            _ => Err(UnknownGoal(s.to_string())),
        }
    }
}

/// Buckets of the gap histogram: bucket 0 holds gaps below 2 µs, bucket
/// `b` gaps in `[2^b, 2^(b+1))` µs, the last everything longer.
pub const BUCKETS: usize = 18;

/// What a wake-up costs by default, ns: a blocked thread's wake-up on the
/// VMs we measured (the kernel's ping-pong p50 fell from ~50 µs idle to
/// ~14 µs with its CPUs kept busy, two wake-ups per round trip).
pub const DEFAULT_WAKE_COST_NS: u64 = 18_000;

/// The rule itself (crate docs): the spin, ns, that maximises the value of
/// the gaps in `hist` (counts per bucket, see [`bucket_of`]) for `goal`
/// under `contention` (0..=1; anything else counts as 0), a wake-up
/// costing `wake_cost_ns`. `None` when `hist` holds less than one gap.
pub fn choose_spin(
    goal: Goal,
    hist: &[f64; BUCKETS],
    contention: f64,
    wake_cost_ns: u64,
) -> Option<u64> {
    choose_priced(goal, goal.idle_price(), hist, contention, wake_cost_ns)
}

/// [`choose_spin`] for a spin that yields its CPU between polls
/// ([`Goal::yielding_idle_price`]).
pub fn choose_yielding_spin(
    goal: Goal,
    hist: &[f64; BUCKETS],
    contention: f64,
    wake_cost_ns: u64,
) -> Option<u64> {
    choose_priced(
        goal,
        goal.yielding_idle_price(),
        hist,
        contention,
        wake_cost_ns,
    )
}

/// The rule with the price of a nanosecond spun on an idle CPU given.
fn choose_priced(
    goal: Goal,
    idle_price: f64,
    hist: &[f64; BUCKETS],
    contention: f64,
    wake_cost_ns: u64,
) -> Option<u64> {
    let c = if contention.is_finite() {
        contention.clamp(0.0, 1.0)
    } else {
        0.0
    };
    if hist.iter().sum::<f64>() < 1.0 {
        return None;
    }
    let save = goal.wake_weight() * wake_cost_ns as f64;
    let price = idle_price + goal.contention_price() * c;
    let max = goal.max_spin_ns();
    // Candidate 0: nothing saved, nothing burnt.
    let mut best = (0.0f64, 0u64);
    for top in 0..BUCKETS - 1 {
        let s = bucket_top_ns(top);
        if s > max {
            break;
        }
        let mut value = 0.0;
        for (b, &n) in hist.iter().enumerate() {
            if n == 0.0 {
                continue;
            }
            if b <= top {
                value += n * (save - price * bucket_mid_ns(b));
            } else {
                value -= n * price * s as f64;
            }
        }
        if value > best.0 {
            best = (value, s);
        }
    }
    Some(best.1)
}

/// The online spin controller (see the crate docs for the rule).
#[derive(Debug, Clone)]
pub struct SpinTuner {
    goal: Goal,
    hist: [f64; BUCKETS],
    spin_ns: u64,
    wake_cost_ns: u64,
    epochs: u64,
}

/// The histogram bucket of a gap of `gap_ns`.
pub fn bucket_of(gap_ns: u64) -> usize {
    let us = gap_ns / 1000;
    if us < 2 {
        0
    } else {
        ((63 - us.leading_zeros()) as usize).min(BUCKETS - 1)
    }
}

/// A typical gap of bucket `b`, ns (its middle in log scale, roughly).
fn bucket_mid_ns(b: usize) -> f64 {
    if b == 0 {
        1_000.0
    } else {
        1.5 * (1u64 << b) as f64 * 1000.0
    }
}

/// The upper bound of bucket `b`, ns.
fn bucket_top_ns(b: usize) -> u64 {
    (1u64 << (b + 1)) * 1000
}

impl SpinTuner {
    /// A tuner that starts at `initial_ns` (clamped to the goal's maximum).
    pub fn new(goal: Goal, initial_ns: u64) -> SpinTuner {
        SpinTuner {
            goal,
            hist: [0.0; BUCKETS],
            spin_ns: initial_ns.min(goal.max_spin_ns()),
            wake_cost_ns: DEFAULT_WAKE_COST_NS,
            epochs: 0,
        }
    }

    /// Sets what one wake-up costs, ns.
    pub fn with_wake_cost(mut self, ns: u64) -> SpinTuner {
        self.wake_cost_ns = ns.max(1);
        self
    }

    /// Changes what one wake-up costs, ns (a measured [`WakeLatency`]);
    /// the next epoch decides with it.
    pub fn set_wake_cost(&mut self, ns: u64) {
        self.wake_cost_ns = ns.max(1);
    }

    /// What one wake-up costs now, ns.
    pub fn wake_cost_ns(&self) -> u64 {
        self.wake_cost_ns
    }

    pub fn goal(&self) -> Goal {
        self.goal
    }

    /// Changes the goal; the next epoch decides with it.
    pub fn set_goal(&mut self, goal: Goal) {
        self.goal = goal;
        self.spin_ns = self.spin_ns.min(goal.max_spin_ns());
    }

    /// The spin to use now, ns.
    pub fn spin_ns(&self) -> u64 {
        self.spin_ns
    }

    /// Epochs decided so far.
    pub fn epochs(&self) -> u64 {
        self.epochs
    }

    /// Work arrived `gap_ns` after the previous work ended (whether the
    /// thread spun through the gap or slept and was woken).
    #[inline]
    pub fn record_gap(&mut self, gap_ns: u64) {
        self.hist[bucket_of(gap_ns)] += 1.0;
    }

    /// Gaps recorded and not yet decayed away.
    pub fn weight(&self) -> f64 {
        self.hist.iter().sum()
    }

    /// Ends an epoch: picks the spin from the histogram and `contention`
    /// (the fraction, 0..=1, of the epoch the caller's thread waited for
    /// a CPU), halves the histogram, and returns the new spin in ns. With
    /// no gaps recorded the spin stays as it is.
    pub fn end_epoch(&mut self, contention: f64) -> u64 {
        self.epochs += 1;
        if let Some(s) = choose_spin(self.goal, &self.hist, contention, self.wake_cost_ns) {
            self.spin_ns = s;
        }
        for n in self.hist.iter_mut() {
            *n *= 0.5;
        }
        self.spin_ns
    }
}

/// What a wake-up costs on this machine, measured: how late a thread that
/// blocked with a deadline runs after the deadline (the timer's expiry,
/// the vCPU's way back from its halt, the scheduler). On the VMs we run
/// on this is 15–40 µs depending on the host, and it is the latency any
/// blocked thread pays when it is woken, by a timer, a frame or an
/// eventfd alike. The median of the last [`WakeLatency::SAMPLES`] samples
/// (one odd sample, a preemption, moves it little);
/// [`DEFAULT_WAKE_COST_NS`] until the first.
#[derive(Debug, Clone, Copy, Default)]
pub struct WakeLatency {
    samples: [u64; WakeLatency::SAMPLES],
    n: usize,
}

impl WakeLatency {
    pub const SAMPLES: usize = 9;
    /// Samples above this are not wake-ups but something else (a thread
    /// descheduled for a while): dropped.
    pub const MAX_SAMPLE_NS: u64 = 2_000_000;

    /// A thread asked to sleep until a deadline ran `late_ns` after it.
    pub fn record(&mut self, late_ns: u64) {
        if late_ns > Self::MAX_SAMPLE_NS {
            return;
        }
        self.samples[self.n % Self::SAMPLES] = late_ns;
        self.n += 1;
    }

    /// Samples recorded so far.
    pub fn count(&self) -> usize {
        self.n
    }

    /// The estimate, ns (the median of the samples kept).
    pub fn estimate_ns(&self) -> u64 {
        let k = self.n.min(Self::SAMPLES);
        if k == 0 {
            return DEFAULT_WAKE_COST_NS;
        }
        let mut v = self.samples;
        let v = &mut v[..k];
        v.sort_unstable();
        v[k / 2].max(1)
    }
}

/// A thread's own CPU contention over an epoch of `wall_ns`: the share of
/// it the thread was runnable but not running (`waited_ns`, the kernel's
/// schedstat), less what its own `wakeups` explain. Every wake-up counts
/// as waiting until the woken CPU runs the thread, which is the wake-up
/// latency that spinning saves, not a CPU held by someone else; counted
/// as contention it would make a thread that blocks often look contended
/// and block even more.
pub fn own_contention(waited_ns: u64, wakeups: u64, wake_ns: u64, wall_ns: u64) -> f64 {
    let own = waited_ns.saturating_sub(wakeups.saturating_mul(wake_ns));
    (own as f64 / wall_ns.max(1) as f64).clamp(0.0, 1.0)
}

/// Idle CPU (in CPUs, over an epoch) from which the machine's CPU pressure
/// no longer says that CPUs are short: see [`machine_contention`].
pub const SPARE_CPU: f64 = 0.5;

/// The machine's CPU contention for pricing a spin: `pressure` (0..=1, the
/// share of the epoch in which some task waited for a CPU, the kernel's
/// PSI `some`) scaled down by the CPU left idle over the same epoch
/// (`idle_cpus`, in CPUs, not counting the spinning thread's own sleep):
/// none at [`SPARE_CPU`] or more idle. On a VM a task woken onto a halted
/// vCPU waits for it to come back, tens of µs, and PSI counts that as a
/// stall although the CPU was free; with a CPU's worth of work waiting for
/// a CPU, there is no idle time to speak of.
pub fn machine_contention(pressure: f64, idle_cpus: f64) -> f64 {
    let p = if pressure.is_finite() {
        pressure.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let idle = if idle_cpus.is_finite() {
        idle_cpus.max(0.0)
    } else {
        0.0
    };
    p * (1.0 - idle / SPARE_CPU).clamp(0.0, 1.0)
}

/// The same rule for a spin shared by many threads (an app's threads
/// under the shim, or those of a `tas` API app), which yield their CPU
/// between polls ([`choose_yielding_spin`]): lock-free, so it can be used by any thread at any
/// time (also right after `fork`, when a lock another thread held would
/// stay held). Gaps go into atomic counters; the thread whose record ends
/// an epoch (a compare-and-swap on the epoch's start) computes the next
/// spin, the others go on.
pub struct SharedSpinTuner {
    fixed: bool,
    spin_ns: AtomicU64,
    /// Gaps per bucket, ×16 (halved at every epoch's end).
    hist: [AtomicU32; BUCKETS],
    epoch_start: AtomicU64,
    epoch_ns: u64,
}

impl SharedSpinTuner {
    /// A tuner whose spin starts at `start_ns` and is re-decided every
    /// `epoch_ns`; with `fixed_ns` the spin is that and never moves.
    pub fn new(fixed_ns: Option<u64>, start_ns: u64, epoch_ns: u64) -> SharedSpinTuner {
        SharedSpinTuner {
            fixed: fixed_ns.is_some(),
            spin_ns: AtomicU64::new(fixed_ns.unwrap_or(start_ns)),
            hist: std::array::from_fn(|_| AtomicU32::new(0)),
            epoch_start: AtomicU64::new(0),
            epoch_ns: epoch_ns.max(1),
        }
    }

    /// The spin to use now, ns.
    #[inline]
    pub fn spin_ns(&self) -> u64 {
        self.spin_ns.load(Ordering::Relaxed)
    }

    /// Whether the spin was fixed at construction (it never moves).
    pub fn is_fixed(&self) -> bool {
        self.fixed
    }

    /// A wait that began at `start` (monotonic ns) found something ready at
    /// `now`. When this ends an epoch, `view()` says what to optimise and
    /// the CPU contention to price spinning with (0..=1).
    pub fn record(&self, start: u64, now: u64, view: impl FnOnce() -> (Goal, f64)) {
        if self.fixed {
            return;
        }
        let n = &self.hist[bucket_of(now.saturating_sub(start))];
        let _ = n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_add(16));
        let e = self.epoch_start.load(Ordering::Relaxed);
        if e == 0 {
            let _ = self.epoch_start.compare_exchange(
                0,
                now.max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return;
        }
        if now.saturating_sub(e) < self.epoch_ns
            || self
                .epoch_start
                .compare_exchange(e, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        // This thread ends the epoch.
        let mut h = [0f64; BUCKETS];
        for (slot, n) in h.iter_mut().zip(self.hist.iter()) {
            let v = n.load(Ordering::Relaxed);
            *slot = f64::from(v) / 16.0;
            // Halve what was there (records since the load stay whole).
            n.fetch_sub(v - v / 2, Ordering::Relaxed);
        }
        let (goal, contention) = view();
        if let Some(s) = choose_yielding_spin(goal, &h, contention, DEFAULT_WAKE_COST_NS) {
            self.spin_ns.store(s, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut SpinTuner, gap_ns: u64, n: usize) {
        for _ in 0..n {
            t.record_gap(gap_ns);
        }
    }

    #[test]
    fn goal_names_and_wire_values_round_trip() {
        for g in Goal::ALL {
            assert_eq!(g.name().parse::<Goal>().unwrap(), g);
            assert_eq!(Goal::from_wire(g.wire()), Some(g));
            let (up, down) = g.scale_thresholds();
            assert!(down > up + 1.0, "{g}: hysteresis gap");
        }
        assert_eq!(Goal::from_wire(0), None);
        assert!("fast"
            .parse::<Goal>()
            .unwrap_err()
            .to_string()
            .contains("fast"));
        assert_eq!(Goal::default(), Goal::Throughput);
    }

    #[test]
    fn short_gaps_make_it_spin_past_them() {
        let mut t = SpinTuner::new(Goal::Throughput, 0);
        feed(&mut t, 5_000, 100);
        let s = t.end_epoch(0.0);
        assert!((5_000..=16_000).contains(&s), "spin {s}");
    }

    #[test]
    fn wake_latency_is_the_median_of_recent_samples() {
        let mut w = WakeLatency::default();
        assert_eq!(w.estimate_ns(), DEFAULT_WAKE_COST_NS);
        w.record(30_000);
        assert_eq!(w.estimate_ns(), 30_000);
        // One outlier among steady samples moves nothing.
        for v in [36_000, 38_000, 37_000, 900_000, 35_000] {
            w.record(v);
        }
        assert_eq!(w.estimate_ns(), 37_000);
        // Longer than a wake-up can be: not a sample.
        w.record(5_000_000);
        assert_eq!(w.count(), 6);
        // Old samples age out: the host got faster.
        for _ in 0..WakeLatency::SAMPLES {
            w.record(12_000);
        }
        assert_eq!(w.estimate_ns(), 12_000);
    }

    #[test]
    fn a_thread_that_blocks_often_is_not_contended_by_its_own_wakeups() {
        // 20 ms epoch, 400 wake-ups of 35 µs each: 14 ms "waited", all of
        // it the wake-ups' latency.
        assert_eq!(own_contention(14_000_000, 400, 35_000, 20_000_000), 0.0);
        // 4 ms more than the wake-ups explain: 20 %.
        let c = own_contention(18_000_000, 400, 35_000, 20_000_000);
        assert!((c - 0.2).abs() < 1e-9, "{c}");
        assert_eq!(own_contention(50_000_000, 0, 35_000, 20_000_000), 1.0);
        assert_eq!(own_contention(1, 0, 0, 0), 1.0);
    }

    #[test]
    fn pressure_with_idle_cpus_is_wakeup_latency_not_contention() {
        // A busy neighbour: no idle time, the pressure counts in full.
        assert_eq!(machine_contention(0.4, 0.0), 0.4);
        // Half a CPU idle or more: none of it.
        assert_eq!(machine_contention(0.3, 0.5), 0.0);
        assert_eq!(machine_contention(0.3, 1.3), 0.0);
        // In between, in proportion.
        assert!((machine_contention(0.4, 0.25) - 0.2).abs() < 1e-9);
        assert_eq!(machine_contention(f64::NAN, 0.0), 0.0);
        assert_eq!(machine_contention(2.0, f64::NAN), 1.0);
    }

    #[test]
    fn a_slower_wakeup_makes_longer_gaps_worth_spinning() {
        // Gaps of ~24 µs under a little contention: not worth a default
        // wake-up, worth one that costs 37 µs (measured on a slow host).
        let mut t = SpinTuner::new(Goal::Throughput, 0);
        feed(&mut t, 24_000, 100);
        assert_eq!(t.clone().end_epoch(0.1), 0);
        t.set_wake_cost(37_000);
        assert_eq!(t.wake_cost_ns(), 37_000);
        assert!(t.end_epoch(0.1) >= 24_000);
    }

    #[test]
    fn long_gaps_make_it_block_at_once() {
        let mut t = SpinTuner::new(Goal::Throughput, 200_000);
        feed(&mut t, 2_000_000, 100);
        assert_eq!(t.end_epoch(0.0), 0);
    }

    #[test]
    fn contention_shrinks_the_spin() {
        let mut quiet = SpinTuner::new(Goal::Throughput, 0);
        let mut busy = SpinTuner::new(Goal::Throughput, 0);
        for t in [&mut quiet, &mut busy] {
            feed(t, 3_000, 50);
            feed(t, 12_000, 50);
        }
        let q = quiet.end_epoch(0.0);
        let b = busy.end_epoch(0.5);
        assert!(q >= 12_000, "quiet {q}");
        assert!(b < q, "busy {b} quiet {q}");
    }

    #[test]
    fn goals_order_the_spin() {
        let mut s = Vec::new();
        for g in Goal::ALL {
            let mut t = SpinTuner::new(g, 0);
            feed(&mut t, 3_000, 40);
            feed(&mut t, 30_000, 40);
            feed(&mut t, 300_000, 20);
            s.push(t.end_epoch(0.0));
        }
        assert!(s[0] >= s[1] && s[1] >= s[2], "{s:?}");
        assert!(s[0] > s[2], "{s:?}");
        assert!(s[0] <= Goal::Latency.max_spin_ns());
    }

    #[test]
    fn no_gaps_keeps_the_spin_and_history_decays() {
        let mut t = SpinTuner::new(Goal::Latency, 50_000);
        assert_eq!(t.end_epoch(0.0), 50_000);
        feed(&mut t, 4_000, 64);
        t.end_epoch(0.0);
        assert!((t.weight() - 32.0).abs() < 1e-9);
        // The load changes: long gaps now; within a few epochs it follows.
        for _ in 0..6 {
            feed(&mut t, 5_000_000, 64);
            t.end_epoch(0.0);
        }
        assert_eq!(t.spin_ns(), 0);
    }

    #[test]
    fn shared_fixed_spin_never_moves() {
        let s = SharedSpinTuner::new(Some(7_000), 50_000, 1_000_000);
        for i in 1..1000u64 {
            s.record(i * 1_000_000, i * 1_000_000 + 3_000, || {
                (Goal::Latency, 0.0)
            });
        }
        assert_eq!(s.spin_ns(), 7_000);
    }

    #[test]
    fn shared_follows_long_then_short_waits() {
        let s = SharedSpinTuner::new(None, 50_000, 50_000_000);
        assert_eq!(s.spin_ns(), 50_000);
        let mut t = 1_000u64;
        for _ in 0..200 {
            s.record(t, t + 5_000_000, || (Goal::Throughput, 0.0));
            t += 5_000_000;
        }
        assert_eq!(s.spin_ns(), 0);
        for _ in 0..200_000 {
            s.record(t, t + 3_000, || (Goal::Throughput, 0.0));
            t += 3_000;
        }
        let v = s.spin_ns();
        assert!((3_000..=8_000).contains(&v), "spin {v}");
    }

    #[test]
    fn shared_spins_less_when_the_core_waits_for_a_cpu() {
        let run = |contention: f64| {
            let s = SharedSpinTuner::new(None, 0, 1_000_000);
            let mut t = 1u64;
            for _ in 0..20_000 {
                s.record(t, t + 12_000, || (Goal::Throughput, contention));
                t += 12_000;
            }
            s.spin_ns()
        };
        let (quiet, busy) = (run(0.0), run(0.3));
        assert!(quiet >= 12_000, "quiet {quiet}");
        assert_eq!(busy, 0, "quiet {quiet}");
    }

    #[test]
    fn shared_is_consistent_across_threads() {
        let s = std::sync::Arc::new(SharedSpinTuner::new(None, 0, 1_000_000));
        let hs: Vec<_> = (0..4)
            .map(|k| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let mut t = 1 + k;
                    for _ in 0..50_000 {
                        s.record(t, t + 10_000, || (Goal::Latency, 0.0));
                        t += 10_000;
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let v = s.spin_ns();
        assert!((10_000..=32_000).contains(&v), "spin {v}");
    }

    /// A one-thread server of 64 connections (`perf-bench --rows
    /// echo64`, `tas` API): between batches it waited 32–512 µs. A spin
    /// that holds its CPU does not pay across such gaps; one that yields
    /// does (unless every cycle counts), and a shared tuner's is one.
    #[test]
    fn a_yielding_spin_bridges_the_gaps_between_batches() {
        let mut h = [0f64; BUCKETS];
        for (b, n) in [
            (4, 5.0),
            (5, 20.0),
            (6, 78.0),
            (7, 128.0),
            (8, 69.0),
            (9, 10.0),
        ] {
            h[b] = n;
        }
        let c = DEFAULT_WAKE_COST_NS;
        assert_eq!(choose_spin(Goal::Throughput, &h, 0.0, c), Some(0));
        let y = choose_yielding_spin(Goal::Throughput, &h, 0.0, c).unwrap();
        assert!(y >= 128_000, "yielding spin {y}");
        let l = choose_yielding_spin(Goal::Latency, &h, 0.0, c).unwrap();
        assert!(l >= y, "latency {l} throughput {y}");
        assert_eq!(choose_yielding_spin(Goal::Efficiency, &h, 0.0, c), Some(0));
        // Others waiting for the CPU still stop it.
        assert_eq!(choose_yielding_spin(Goal::Throughput, &h, 0.3, c), Some(0));
        // And through the shared tuner: waits of ~150 µs.
        let s = SharedSpinTuner::new(None, 0, 1_000_000);
        let mut t = 1u64;
        for _ in 0..20_000 {
            s.record(t, t + 150_000, || (Goal::Throughput, 0.0));
            t += 150_000;
        }
        assert!(s.spin_ns() >= 150_000, "shared spin {}", s.spin_ns());
    }

    #[test]
    fn garbage_contention_is_ignored() {
        let mut t = SpinTuner::new(Goal::Throughput, 0);
        feed(&mut t, 5_000, 10);
        let a = t.clone().end_epoch(f64::NAN);
        let b = t.end_epoch(0.0);
        assert_eq!(a, b);
    }
}
