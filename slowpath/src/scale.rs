//! The fast-path scaling controller: decides when to add or remove a
//! fast-path core (`tasd --cores MIN-MAX`, `tasctl cores`).
//!
//! Owns: the rule. Every window (default 200 ms) it measures the aggregate
//! idle time of the active cores, in cores, and asks for one more core
//! when that idle is below [`ScaleConfig::up_below_idle`] (default 0.2) or
//! one less when it is above [`ScaleConfig::down_above_idle`] (default
//! 1.25), within the budget `min..=max`. After any change it waits
//! [`ScaleConfig::cooldown`] (default 1 s) before the next one; together
//! with the gap of more than one core between the two thresholds this is
//! the hysteresis that keeps it from flapping.
//!
//! Must not: spawn threads, read clocks or do I/O. It is sans-I/O like the
//! stack: the daemon feeds it the time and the cores' cumulative busy/idle
//! counters ([`ScaleController::sample`]) and applies the [`Decision`]s it
//! returns (moving NIC lanes between cores is the daemon's and the fast
//! path's business, not this module's).
//!
//! # Measurement
//!
//! A core's busy fraction over a window is its `busy_ns` delta divided by
//! the window's wall-clock length, clamped to [0, 1]; its idle is 1 minus
//! that. Only `busy_ns` matters: a core blocked for the whole window does
//! not update its counters until it wakes, and so counts as fully idle.
//! The aggregate idle is the sum over the active cores (it is computed in
//! integer nanoseconds and divided once, so a load exactly at a threshold
//! compares equal to it rather than a rounding error off).
//!
//! Windows are consecutive. A window completes at the first sample at
//! least [`ScaleConfig::window`] after its first sample; a sample that is
//! late makes the window longer, not wrong. A new window starts after
//! every decision, budget change that moved the active count, change in
//! the number of cores reported, or time going backwards.

use std::time::Duration;

/// The scaling rule's parameters (`tasd --cores`, `--scale-*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleConfig {
    /// Fewest active fast-path cores.
    pub min: u32,
    /// Most active fast-path cores.
    pub max: u32,
    /// Add a core when the active cores' aggregate idle is below this many cores (default 0.2).
    pub up_below_idle: f64,
    /// Remove a core when the aggregate idle is above this many cores (default 1.25).
    pub down_above_idle: f64,
    /// Length of the measurement window (default 200 ms).
    pub window: Duration,
    /// No further change for this long after a change (default 1 s); hysteresis.
    pub cooldown: Duration,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        ScaleConfig {
            min: 1,
            max: 1,
            up_below_idle: 0.2,
            down_above_idle: 1.25,
            window: Duration::from_millis(200),
            cooldown: Duration::from_secs(1),
        }
    }
}

impl ScaleConfig {
    /// Checks the budget and the thresholds.
    pub fn validate(&self) -> Result<(), ScaleError> {
        if self.min == 0 {
            return Err(ScaleError::MinZero);
        }
        if self.min > self.max {
            return Err(ScaleError::MinAboveMax {
                min: self.min,
                max: self.max,
            });
        }
        if !self.up_below_idle.is_finite() {
            return Err(ScaleError::NotFinite {
                which: "scale-up",
                value: self.up_below_idle,
            });
        }
        if !self.down_above_idle.is_finite() {
            return Err(ScaleError::NotFinite {
                which: "scale-down",
                value: self.down_above_idle,
            });
        }
        if self.up_below_idle < 0.0 {
            return Err(ScaleError::UpNegative(self.up_below_idle));
        }
        // Removing a core lowers the aggregate idle by about one core, adding
        // one raises it by about one: with a gap of one core or less, either
        // change would at once call for its reverse.
        if self.down_above_idle <= self.up_below_idle + 1.0 {
            return Err(ScaleError::GapTooSmall {
                up: self.up_below_idle,
                down: self.down_above_idle,
            });
        }
        if self.window.is_zero() {
            return Err(ScaleError::ZeroWindow);
        }
        Ok(())
    }
}

/// An invalid [`ScaleConfig`] or budget.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScaleError {
    #[error("MIN cores must be at least 1")]
    MinZero,
    #[error("MIN cores ({min}) must not exceed MAX ({max})")]
    MinAboveMax { min: u32, max: u32 },
    #[error("{which} idle threshold must be a finite number of cores, not {value}")]
    NotFinite { which: &'static str, value: f64 },
    #[error("scale-up idle threshold ({0} cores) must not be negative")]
    UpNegative(f64),
    #[error(
        "scale-down idle threshold ({down} cores) must exceed the scale-up one ({up} cores) \
         by more than 1 core: otherwise removing a core (about 1 core less idle) would at once \
         call for adding it back"
    )]
    GapTooSmall { up: f64, down: f64 },
    #[error("scale window must be longer than 0")]
    ZeroWindow,
}

/// What the daemon should do with the number of active cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Activate one more core.
    Up,
    /// Deactivate one core.
    Down,
}

/// The controller (see the module documentation for the rule).
#[derive(Debug, Clone)]
pub struct ScaleController {
    cfg: ScaleConfig,
    active: u32,
    /// Start of the current window: its time and the counters then.
    start: Option<(u64, Vec<(u64, u64)>)>,
    /// Time of the last change of `active` (decision or forced by the budget).
    last_change: Option<u64>,
    last_idle: f64,
    ups: u64,
    downs: u64,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl ScaleController {
    /// A controller for `active` running cores. `cfg` should have passed
    /// [`ScaleConfig::validate`]; `active` is clamped into `min..=max`
    /// (read [`active`](Self::active) for the count to start).
    pub fn new(cfg: ScaleConfig, active: u32) -> Self {
        ScaleController {
            cfg,
            active: active.min(cfg.max).max(cfg.min),
            start: None,
            last_change: None,
            last_idle: 0.0,
            ups: 0,
            downs: 0,
        }
    }

    pub fn config(&self) -> ScaleConfig {
        self.cfg
    }

    /// Changes min/max at runtime (validated). Returns the active count the budget forces right away (clamped into min..=max), the daemon applies it.
    ///
    /// On error nothing changes. If the count moves, that counts as a
    /// change for the cooldown and a new window starts; it is not counted
    /// in [`scale_ups`](Self::scale_ups)/[`scale_downs`](Self::scale_downs),
    /// which count the controller's own decisions.
    pub fn set_budget(&mut self, min: u32, max: u32, now_ns: u64) -> Result<u32, ScaleError> {
        let cfg = ScaleConfig {
            min,
            max,
            ..self.cfg
        };
        cfg.validate()?;
        self.cfg = cfg;
        let forced = self.active.clamp(min, max);
        if forced != self.active {
            self.active = forced;
            self.last_change = Some(now_ns);
            self.start = None;
        }
        Ok(forced)
    }

    /// Changes the thresholds at runtime (validated; on error nothing
    /// changes). The current window goes on.
    pub fn set_thresholds(
        &mut self,
        up_below_idle: f64,
        down_above_idle: f64,
    ) -> Result<(), ScaleError> {
        let cfg = ScaleConfig {
            up_below_idle,
            down_above_idle,
            ..self.cfg
        };
        cfg.validate()?;
        self.cfg = cfg;
        Ok(())
    }

    /// Feed cumulative per-core counters of the ACTIVE cores (busy_ns, idle_ns as monotonically growing totals, one entry per active core, in core-id order) at time now_ns. Returns a decision when the window is complete and a threshold is crossed and the cooldown has passed and the budget allows. After returning a decision the controller assumes the daemon applied it (active +/- 1) and starts a new window (the next sample's core set differs).
    ///
    /// If the number of entries differs from [`active`](Self::active) (the
    /// daemon could not apply a decision, or did something else), the
    /// entries are taken as the truth: `active` becomes their number and a
    /// new window starts. An empty slice is ignored.
    pub fn sample(&mut self, now_ns: u64, cores: &[(u64, u64)]) -> Option<Decision> {
        if cores.is_empty() {
            return None;
        }
        let n = u32::try_from(cores.len()).unwrap_or(u32::MAX);
        if n != self.active {
            self.active = n;
            self.start = None;
        }
        let Some((t0, base)) = &self.start else {
            self.start = Some((now_ns, cores.to_vec()));
            return None;
        };
        if now_ns < *t0 {
            self.start = Some((now_ns, cores.to_vec()));
            return None;
        }
        let elapsed = now_ns - *t0;
        if elapsed < ns(self.cfg.window).max(1) {
            return None;
        }
        // Idle nanoseconds summed over the cores, then one division.
        let idle_ns: u128 = cores
            .iter()
            .zip(base)
            .map(|(&(busy, _), &(busy0, _))| {
                u128::from(elapsed - busy.saturating_sub(busy0).min(elapsed))
            })
            .sum();
        let idle = idle_ns as f64 / elapsed as f64;
        self.last_idle = idle;
        self.start = Some((now_ns, cores.to_vec()));

        let cooled = self
            .last_change
            .is_none_or(|t| now_ns.saturating_sub(t) >= ns(self.cfg.cooldown));
        if !cooled {
            return None;
        }
        let decision = if idle < self.cfg.up_below_idle && self.active < self.cfg.max {
            self.active += 1;
            self.ups += 1;
            Decision::Up
        } else if idle > self.cfg.down_above_idle && self.active > self.cfg.min {
            self.active -= 1;
            self.downs += 1;
            Decision::Down
        } else {
            return None;
        };
        self.last_change = Some(now_ns);
        self.start = None;
        Some(decision)
    }

    /// Cores that should be polling now.
    pub fn active(&self) -> u32 {
        self.active
    }

    /// Aggregate idle (in cores) measured over the last complete window.
    /// 0 until the first window completes.
    pub fn last_idle_cores(&self) -> f64 {
        self.last_idle
    }

    /// The controller's scale-up decisions since start.
    pub fn scale_ups(&self) -> u64 {
        self.ups
    }

    /// The controller's scale-down decisions since start.
    pub fn scale_downs(&self) -> u64 {
        self.downs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    /// Sampling period of the simulated daemon.
    const STEP: u64 = 10 * MS;

    fn cfg(min: u32, max: u32) -> ScaleConfig {
        ScaleConfig {
            min,
            max,
            ..ScaleConfig::default()
        }
    }

    /// A daemon with a load of `load_mc` milli-cores of work, spread evenly
    /// over the active cores (a core is at most fully busy), sampling every
    /// STEP and applying every decision.
    struct Sim {
        ctl: ScaleController,
        now: u64,
        load_mc: u64,
        counters: Vec<(u64, u64)>,
        /// (time, decision, active after it)
        log: Vec<(u64, Decision, u32)>,
    }

    impl Sim {
        fn new(cfg: ScaleConfig, active: u32, load_mc: u64) -> Sim {
            let ctl = ScaleController::new(cfg, active);
            let counters = vec![(0, 0); ctl.active() as usize];
            Sim {
                ctl,
                now: 1_000 * MS,
                load_mc,
                counters,
                log: Vec::new(),
            }
        }

        fn step(&mut self) {
            self.now += STEP;
            let n = self.counters.len() as u64;
            let per_core = (self.load_mc * STEP / 1000 / n).min(STEP);
            for c in &mut self.counters {
                c.0 += per_core;
                c.1 += STEP - per_core;
            }
            if let Some(d) = self.ctl.sample(self.now, &self.counters) {
                match d {
                    Decision::Up => self.counters.push((0, 0)),
                    Decision::Down => {
                        self.counters.pop();
                    }
                }
                assert_eq!(self.counters.len() as u32, self.ctl.active());
                self.log.push((self.now, d, self.ctl.active()));
            }
        }

        fn run(&mut self, ms: u64) {
            for _ in 0..ms * MS / STEP {
                self.step();
            }
        }
    }

    #[test]
    fn default_config_is_valid_and_documented() {
        let c = ScaleConfig::default();
        assert_eq!((c.min, c.max), (1, 1));
        assert_eq!((c.up_below_idle, c.down_above_idle), (0.2, 1.25));
        assert_eq!(c.window, Duration::from_millis(200));
        assert_eq!(c.cooldown, Duration::from_secs(1));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn ramp_up_adds_cores_one_at_a_time_respecting_the_cooldown_and_stops_at_max() {
        let mut s = Sim::new(cfg(1, 4), 1, 3_900);
        s.run(20_000);
        let actives: Vec<u32> = s.log.iter().map(|l| l.2).collect();
        assert_eq!(actives, [2, 3, 4], "{:?}", s.log);
        assert!(s.log.iter().all(|l| l.1 == Decision::Up));
        // The first one after one window; then one per cooldown (the first
        // window that completes after it), never sooner.
        assert!(s.log[0].0 - 1_000 * MS <= 200 * MS + STEP, "{:?}", s.log);
        for w in s.log.windows(2) {
            let gap = w[1].0 - w[0].0;
            assert!(
                (1_000 * MS..=1_000 * MS + 200 * MS + 2 * STEP).contains(&gap),
                "{:?}",
                s.log
            );
        }
        // Saturated at max (idle 0.1 < 0.2): stays there.
        assert_eq!(s.ctl.active(), 4);
        assert_eq!((s.ctl.scale_ups(), s.ctl.scale_downs()), (3, 0));
        assert!((s.ctl.last_idle_cores() - 0.1).abs() < 1e-9);
    }

    #[test]
    fn load_drop_removes_cores_down_to_min() {
        let mut s = Sim::new(cfg(2, 6), 6, 100);
        s.run(20_000);
        let actives: Vec<u32> = s.log.iter().map(|l| l.2).collect();
        assert_eq!(actives, [5, 4, 3, 2], "{:?}", s.log);
        assert!(s.log.iter().all(|l| l.1 == Decision::Down));
        for w in s.log.windows(2) {
            assert!(w[1].0 - w[0].0 >= 1_000 * MS, "{:?}", s.log);
        }
        // Idle 1.9 > 1.25 but min is 2.
        assert_eq!(s.ctl.active(), 2);
        assert!((s.ctl.last_idle_cores() - 1.9).abs() < 1e-9);
        assert_eq!((s.ctl.scale_ups(), s.ctl.scale_downs()), (0, 4));
    }

    #[test]
    fn in_band_load_changes_nothing() {
        // (active, load): idle 0.7, 1.0, 0.25, 1.2: all between 0.2 and 1.25.
        for (active, load) in [(2, 1_300), (3, 2_000), (4, 3_750), (1, 0)] {
            let mut s = Sim::new(cfg(1, 8), active, load);
            s.run(30_000);
            assert!(s.log.is_empty(), "{active} cores, load {load}: {:?}", s.log);
            assert_eq!(s.ctl.active(), active);
        }
    }

    #[test]
    fn load_exactly_at_a_threshold_does_not_flap() {
        // Exactly 0.2 idle on 1 core: not below, no change.
        let mut s = Sim::new(cfg(1, 4), 1, 800);
        s.run(30_000);
        assert!(s.log.is_empty(), "{:?}", s.log);
        assert_eq!(s.ctl.last_idle_cores(), 0.2);
        // Exactly 1.25 idle on 2 cores: not above, no change.
        let mut s = Sim::new(cfg(1, 4), 2, 750);
        s.run(30_000);
        assert!(s.log.is_empty(), "{:?}", s.log);
        assert_eq!(s.ctl.last_idle_cores(), 1.25);
        // Just past a threshold: one change, then the other threshold is
        // out of reach (idle 0.19 on 1 core becomes 1.19 on 2; 1.26 on 2
        // becomes 0.26 on 1).
        let mut s = Sim::new(cfg(1, 4), 1, 810);
        s.run(30_000);
        assert_eq!(s.log.len(), 1, "{:?}", s.log);
        assert_eq!(s.ctl.active(), 2);
        let mut s = Sim::new(cfg(1, 4), 2, 740);
        s.run(30_000);
        assert_eq!(s.log.len(), 1, "{:?}", s.log);
        assert_eq!(s.ctl.active(), 1);
    }

    #[test]
    fn sleeping_cores_count_as_idle() {
        // Counters that never move: both cores blocked the whole time.
        let mut c = ScaleController::new(cfg(1, 2), 2);
        let z = [(5, 7), (9, 11)];
        assert_eq!(c.sample(0, &z), None);
        assert_eq!(c.sample(100 * MS, &z), None, "window not complete");
        assert_eq!(c.sample(200 * MS, &z), Some(Decision::Down));
        assert_eq!(c.last_idle_cores(), 2.0);
        assert_eq!(c.active(), 1);
    }

    #[test]
    fn busy_is_measured_against_wall_clock_and_clamped() {
        let mut c = ScaleController::new(cfg(1, 3), 2);
        c.sample(0, &[(0, 0), (0, 0)]);
        // A late sample (400 ms): core 0 busy 300 ms (idle 0.25), core 1
        // reports more busy time than elapsed (clamped: idle 0).
        assert_eq!(
            c.sample(400 * MS, &[(300 * MS, 0), (900 * MS, 0)]),
            None,
            "0.25 idle is in band"
        );
        assert_eq!(c.last_idle_cores(), 0.25);
        // Counters going backwards count as no busy time.
        assert_eq!(c.sample(600 * MS, &[(0, 0), (1_100 * MS, 0)]), None);
        assert_eq!(c.last_idle_cores(), 1.0);
    }

    #[test]
    fn windows_restart_on_decisions_core_set_changes_and_time_going_back() {
        let mut c = ScaleController::new(cfg(1, 4), 1);
        c.sample(0, &[(0, 0)]);
        assert_eq!(c.sample(200 * MS, &[(200 * MS, 0)]), Some(Decision::Up));
        assert_eq!(c.active(), 2);
        // The daemon could not apply it: still one core. Taken as the truth;
        // a new window starts, and the cooldown (from the decision) holds.
        assert_eq!(c.sample(210 * MS, &[(210 * MS, 0)]), None);
        assert_eq!(c.active(), 1);
        assert_eq!(c.sample(1_100 * MS, &[(1_100 * MS, 0)]), None, "cooldown");
        assert_eq!(c.last_idle_cores(), 0.0);
        assert_eq!(c.sample(1_300 * MS, &[(1_300 * MS, 0)]), Some(Decision::Up));
        // Time going backwards restarts the window instead of underflowing.
        let mut c = ScaleController::new(cfg(1, 4), 1);
        c.sample(500 * MS, &[(0, 0)]);
        assert_eq!(c.sample(100 * MS, &[(0, 0)]), None);
        assert_eq!(c.sample(250 * MS, &[(150 * MS, 0)]), None, "not complete");
        assert_eq!(c.sample(300 * MS, &[(200 * MS, 0)]), Some(Decision::Up));
        // Nothing reported: ignored.
        assert_eq!(c.sample(900 * MS, &[]), None);
        assert_eq!(c.active(), 2);
    }

    #[test]
    fn set_budget_forces_up_and_down_and_restarts_the_cooldown() {
        let mut c = ScaleController::new(cfg(1, 4), 3);
        assert_eq!(c.active(), 3);
        assert_eq!(c.set_budget(1, 2, 0), Ok(2));
        assert_eq!(c.active(), 2);
        assert_eq!((c.config().min, c.config().max), (1, 2));
        assert_eq!(c.set_budget(4, 6, 0), Ok(4));
        assert_eq!(c.active(), 4);
        // In range: nothing forced.
        assert_eq!(c.set_budget(1, 8, 0), Ok(4));
        // Forced changes are not the controller's decisions.
        assert_eq!((c.scale_ups(), c.scale_downs()), (0, 0));
        // Refused budgets change nothing.
        assert_eq!(
            c.set_budget(3, 1, 0),
            Err(ScaleError::MinAboveMax { min: 3, max: 1 })
        );
        assert_eq!(c.set_budget(0, 2, 0), Err(ScaleError::MinZero));
        assert_eq!((c.config().min, c.config().max, c.active()), (1, 8, 4));

        // A forced change starts the cooldown: a saturated load waits for it.
        let mut c = ScaleController::new(cfg(1, 4), 1);
        c.sample(0, &[(0, 0)]);
        assert_eq!(c.set_budget(2, 4, 100 * MS), Ok(2));
        let full = |t: u64| [(t, 0), (t, 0)];
        for t in (110..1_100).step_by(10) {
            assert_eq!(c.sample(t * MS, &full(t * MS)), None, "at {t} ms");
        }
        assert_eq!(c.sample(1_110 * MS, &full(1_110 * MS)), Some(Decision::Up));

        // Clamping in new().
        assert_eq!(ScaleController::new(cfg(2, 3), 1).active(), 2);
        assert_eq!(ScaleController::new(cfg(2, 3), 9).active(), 3);
    }

    #[test]
    fn invalid_configs_are_rejected_with_their_messages() {
        let d = ScaleConfig::default();
        let cases = [
            (ScaleConfig { min: 0, ..d }, "MIN cores must be at least 1"),
            (
                ScaleConfig {
                    min: 3,
                    max: 2,
                    ..d
                },
                "MIN cores (3) must not exceed MAX (2)",
            ),
            (
                ScaleConfig {
                    up_below_idle: f64::NAN,
                    ..d
                },
                "scale-up idle threshold must be a finite number of cores, not NaN",
            ),
            (
                ScaleConfig {
                    down_above_idle: f64::INFINITY,
                    ..d
                },
                "scale-down idle threshold must be a finite number of cores, not inf",
            ),
            (
                ScaleConfig {
                    up_below_idle: -0.1,
                    ..d
                },
                "scale-up idle threshold (-0.1 cores) must not be negative",
            ),
            (
                ScaleConfig {
                    down_above_idle: 1.2,
                    ..d
                },
                "scale-down idle threshold (1.2 cores) must exceed the scale-up one (0.2 cores) \
                 by more than 1 core: otherwise removing a core (about 1 core less idle) would \
                 at once call for adding it back",
            ),
            (
                ScaleConfig {
                    up_below_idle: 0.5,
                    down_above_idle: 1.5,
                    ..d
                },
                "scale-down idle threshold (1.5 cores) must exceed the scale-up one (0.5 cores) \
                 by more than 1 core: otherwise removing a core (about 1 core less idle) would \
                 at once call for adding it back",
            ),
            (
                ScaleConfig {
                    window: Duration::ZERO,
                    ..d
                },
                "scale window must be longer than 0",
            ),
        ];
        for (c, msg) in cases {
            let e = c.validate().unwrap_err();
            assert_eq!(e.to_string(), msg, "{c:?}");
            assert!(!msg.contains('\n'));
        }
        // Edge cases that are fine: up 0 (never scale up), zero cooldown.
        for c in [
            ScaleConfig {
                up_below_idle: 0.0,
                down_above_idle: 1.01,
                ..d
            },
            ScaleConfig {
                cooldown: Duration::ZERO,
                min: 4,
                max: 4,
                ..d
            },
        ] {
            assert_eq!(c.validate(), Ok(()), "{c:?}");
        }
    }
}
