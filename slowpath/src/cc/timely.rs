//! `timely`: RTT-gradient rate control (Mittal et al., SIGCOMM 2015),
//! adapted for TCP with a slow start as in TAS.
//!
//! Per update with a fresh RTT sample `r` (the fast path's smoothed
//! estimate): `diff ← (1−α)·diff + α·(r − r_prev)`, gradient = diff /
//! `min_rtt`. In slow start the rate doubles until `r` > (T_low + T_high)/2.
//! Then: r < T_low → rate + δ; r > T_high → rate·(1 − β·(1 − T_high/r));
//! gradient ≤ 0 → rate + N·δ, with N = `hai_mult` after `hai_after`
//! consecutive such updates (hyper-additive increase), else 1; gradient > 0
//! → rate·(1 − β·gradient). Loss halves the rate. The rate is capped at
//! `cap` × the send rate measured over the last 16 acknowledged segments
//! (as in `dctcp-rate`) and never falls below `min_rate`.

use super::{
    AlgoSpec, CapMeter, CcInfo, Feedback, FlowControl, Limit, ParamSpec, Params, Start, Unit,
    Verdict,
};

const T_LOW: usize = 0;
const T_HIGH: usize = 1;
const STEP: usize = 2;
const INIT_RATE: usize = 3;
const ALPHA: usize = 4;
const BETA: usize = 5;
const MIN_RTT: usize = 6;
const MIN_RATE: usize = 7;
const HAI_AFTER: usize = 8;
const HAI_MULT: usize = 9;
const CAP: usize = 10;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "t_low",
        unit: Unit::Time,
        default: 30_000.0,
        min: 0.0,
        max: 1e10,
        help: "below this RTT: additive increase",
    },
    ParamSpec {
        name: "t_high",
        unit: Unit::Time,
        default: 150_000.0,
        min: 0.0,
        max: 1e10,
        help: "above this RTT: multiplicative decrease",
    },
    ParamSpec {
        name: "step",
        unit: Unit::Rate,
        default: 10_000.0,
        min: 0.0,
        max: 4e9,
        help: "additive increase delta",
    },
    ParamSpec {
        name: "init_rate",
        unit: Unit::Rate,
        default: 10_000.0,
        min: 1.0,
        max: 4e9,
        help: "initial rate of a new flow",
    },
    ParamSpec {
        name: "alpha",
        unit: Unit::Number,
        default: 0.02,
        min: 0.0,
        max: 1.0,
        help: "EWMA weight of the RTT difference",
    },
    ParamSpec {
        name: "beta",
        unit: Unit::Number,
        default: 0.8,
        min: 0.0,
        max: 1.0,
        help: "multiplicative decrease factor",
    },
    ParamSpec {
        name: "min_rtt",
        unit: Unit::Time,
        default: 11_000.0,
        min: 1.0,
        max: 1e10,
        help: "RTT that normalizes the gradient",
    },
    ParamSpec {
        name: "min_rate",
        unit: Unit::Rate,
        default: 10_000.0,
        min: 1.0,
        max: 4e9,
        help: "lowest rate",
    },
    ParamSpec {
        name: "hai_after",
        unit: Unit::Number,
        default: 5.0,
        min: 0.0,
        max: 1e6,
        help: "increases before hyper-additive increase",
    },
    ParamSpec {
        name: "hai_mult",
        unit: Unit::Number,
        default: 5.0,
        min: 1.0,
        max: 1e3,
        help: "hyper-additive increase multiple of step",
    },
    ParamSpec {
        name: "cap",
        unit: Unit::Number,
        default: 1.2,
        min: 0.0,
        max: 100.0,
        help: "rate at most cap x measured send rate (0 = no cap)",
    },
];

pub const SPEC: AlgoSpec = AlgoSpec {
    name: "timely",
    help: "RTT-gradient rate control with slow start; keeps the RTT between t_low and t_high",
    params: PARAMS,
    new_flow,
};

fn new_flow(p: &Params, s: &Start) -> Box<dyn FlowControl> {
    let init = p.get(INIT_RATE);
    Box::new(Timely {
        rate: s.handover_rate(init as u64).max(p.get(MIN_RATE) as u64) as f64,
        prev_rtt: s.rtt_us as f64,
        rtt_diff: 0.0,
        hai: 0,
        slow_start: s.current.is_none(),
        meter: CapMeter::default(),
    })
}

/// Segments per measurement of the send rate for the cap.
const CAP_SEGS: u64 = 16;

#[derive(Debug, Clone)]
pub struct Timely {
    /// kbit/s.
    rate: f64,
    /// µs.
    prev_rtt: f64,
    rtt_diff: f64,
    hai: u32,
    slow_start: bool,
    meter: CapMeter,
}

impl FlowControl for Timely {
    fn update(&mut self, p: &Params, fb: &Feedback) -> Verdict {
        if fb.acked == 0 && !fb.loss() && !fb.overdue {
            return Verdict::Defer { wait_ns: 0 };
        }
        let min_rate = p.get(MIN_RATE);
        let cap = p.get(CAP);
        if let Some(measured) = self.meter.add(fb, CAP_SEGS) {
            if cap > 0.0 && self.rate > measured * cap {
                self.rate = (measured * cap).max(min_rate);
            }
        }
        if fb.loss() {
            self.rate = (self.rate / 2.0).max(min_rate);
            self.slow_start = false;
            self.hai = 0;
            return Verdict::Apply;
        }
        if fb.acked == 0 || fb.rtt_us == 0 {
            self.rate = self.rate.max(min_rate);
            return Verdict::Apply;
        }
        let (t_low, t_high) = (p.get(T_LOW) / 1000.0, p.get(T_HIGH) / 1000.0);
        let step = p.get(STEP);
        let beta = p.get(BETA);
        let rtt = fb.rtt_us as f64;
        if self.prev_rtt <= 0.0 {
            self.prev_rtt = rtt;
        }
        let a = p.get(ALPHA);
        self.rtt_diff = (1.0 - a) * self.rtt_diff + a * (rtt - self.prev_rtt);
        self.prev_rtt = rtt;
        let gradient = self.rtt_diff / (p.get(MIN_RTT) / 1000.0);

        if self.slow_start {
            if rtt > (t_low + t_high) / 2.0 {
                self.slow_start = false;
            } else {
                self.rate = (self.rate * 2.0).clamp(min_rate, 4e9);
                return Verdict::Apply;
            }
        }
        if rtt < t_low {
            self.rate += step;
            self.hai = 0;
        } else if rtt > t_high {
            self.rate *= 1.0 - beta * (1.0 - t_high / rtt);
            self.hai = 0;
        } else if gradient <= 0.0 {
            self.hai += 1;
            let n = if self.hai as f64 > p.get(HAI_AFTER) {
                p.get(HAI_MULT)
            } else {
                1.0
            };
            self.rate += n * step;
        } else {
            self.rate *= (1.0 - beta * gradient).max(0.0);
            self.hai = 0;
        }
        self.rate = self.rate.clamp(min_rate, 4e9);
        Verdict::Apply
    }

    fn limit(&self) -> Limit {
        Limit::Rate((self.rate as u64).max(1))
    }

    fn info(&self) -> CcInfo {
        CcInfo {
            slow_start: self.slow_start,
            alpha: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(c: &dyn FlowControl) -> u64 {
        match c.limit() {
            Limit::Rate(r) => r,
            l => panic!("not a rate: {l:?}"),
        }
    }

    /// One interval of a flow that used its full `kbps` and saw `rtt_us`.
    fn fb(kbps: u64, rtt_us: u32) -> Feedback {
        let elapsed_ns = 1_000_000;
        Feedback {
            elapsed_ns,
            acked: kbps * 1000 / 8 / 1000 * 1000, // 1 ms at kbps
            rtt_us,
            mss: 1448,
            queued: 10_000,
            ..Default::default()
        }
    }

    #[test]
    fn recorded_sequence() {
        let p = Params::defaults(PARAMS);
        let mut c = (SPEC.new_flow)(
            &p,
            &Start {
                mss: 1448,
                rtt_us: 20,
                ..Default::default()
            },
        );
        // Slow start while the RTT stays below (30+150)/2 = 90 µs.
        for (i, rtt) in [20, 25, 40, 80].into_iter().enumerate() {
            let r = rate(&*c);
            c.update(&p, &fb(r, rtt));
            assert_eq!(rate(&*c), 10_000 << (i + 1));
            assert!(c.info().slow_start);
        }
        // Above the midpoint: slow start ends; 120 µs is between the
        // thresholds and rising: multiplicative decrease by the gradient.
        let r = rate(&*c);
        c.update(&p, &fb(r, 120));
        assert!(!c.info().slow_start);
        // diff history: 0.02·5 → 0.02·15·... recompute the EWMA.
        let mut d = 0.0f64;
        for (a, b) in [(20.0, 25.0), (25.0, 40.0), (40.0, 80.0), (80.0, 120.0)] {
            d = 0.98 * d + 0.02 * (b - a);
        }
        // (the first sample only primes prev_rtt: 20 → 20)
        let g = d / 11.0;
        let expect = r as f64 * (1.0 - 0.8 * g);
        assert!(
            (rate(&*c) as f64 - expect).abs() < 2.0,
            "{} vs {expect}",
            rate(&*c)
        );
        // Above T_high: rate · (1 - β(1 - 150/300)) = rate · 0.6.
        let r = rate(&*c);
        c.update(&p, &fb(r, 300));
        assert!((rate(&*c) as f64 - r as f64 * 0.6).abs() < 2.0);
        // Below T_low: + δ.
        let r = rate(&*c);
        c.update(&p, &fb(r, 20));
        assert_eq!(rate(&*c), r + 10_000);
    }

    #[test]
    fn falling_rtt_gets_hyper_additive_increase() {
        let p = Params::defaults(PARAMS);
        let mut c = (SPEC.new_flow)(
            &p,
            &Start {
                mss: 1448,
                rtt_us: 100,
                current: Some(Limit::Rate(500_000)),
                ..Default::default()
            },
        );
        assert!(!c.info().slow_start);
        let mut incs = Vec::new();
        for rtt in [100, 99, 98, 97, 96, 95, 94, 93] {
            let r = rate(&*c);
            c.update(&p, &fb(r, rtt));
            incs.push(rate(&*c) - r);
        }
        assert_eq!(
            incs,
            [10_000, 10_000, 10_000, 10_000, 10_000, 50_000, 50_000, 50_000]
        );
    }

    #[test]
    fn loss_halves_and_the_floor_holds() {
        let p = Params::defaults(PARAMS);
        let mut c = (SPEC.new_flow)(
            &p,
            &Start {
                mss: 1448,
                rtt_us: 20,
                ..Default::default()
            },
        );
        let mut f = fb(10_000, 20);
        f.timeouts = 1;
        c.update(&p, &f);
        assert_eq!(rate(&*c), 10_000);
        assert!(!c.info().slow_start);
        assert!(matches!(
            c.update(&p, &Feedback::default()),
            Verdict::Defer { .. }
        ));
    }
}
