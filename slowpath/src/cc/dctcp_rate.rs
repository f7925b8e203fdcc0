//! `dctcp-rate`: DCTCP's control law applied to a sending rate (the TAS
//! paper's default, §3.2).
//!
//! Per applied update, in this order:
//!
//! 1. **Cap.** Except on loss or during loss recovery (acked bytes then
//!    under-measure what the peer received), the rate is cut to `cap` × the
//!    measured send rate (acked bytes over the update's time), never below
//!    `min_rate`, so the rate cannot grow without bound while the app or
//!    the peer's window limits the flow. A cut without any congestion
//!    signal re-arms slow start up to ¾ of the old rate, so a flow that paused (app-limited, or a host
//!    hiccup) gets back to speed quickly, like Linux's slow start after
//!    idle; an app-limited flow (nothing queued) gets no increase in that
//!    update.
//! 2. **Slow start** (from `init_rate`): the rate doubles per update until
//!    the first ECN mark or loss (or the re-armed target is reached).
//! 3. **Congestion avoidance:** on loss (fast retransmit or timeout) the rate
//!    is multiplied by `loss_beta`; otherwise α ← (1−g)·α + g·F, where F is
//!    the fraction of acked bytes that were ECN-marked, and the rate becomes
//!    rate·(1 − α/2) when F > 0, else it grows additively (below). α starts
//!    at 1 (the first mark after slow start halves the rate, like the
//!    classic exit from slow start).
//!
//! **Additive increase.** `step` per control interval. A flow that has never
//! seen an ECN mark (its path signals congestion by loss only, so DCTCP
//! answers like Reno, RFC 8257 §3.5) grows at least as a window flow does
//! in congestion avoidance, one MSS per RTT (RFC 5681 §3.1): with the rate
//! R = cwnd / RTT that is MSS / RTT per RTT, i.e. MSS·T / RTT² over an
//! interval of length T (at most doubling per interval). The RTT is the
//! smallest smoothed RTT seen in the last 10 s: at a low rate the peer's
//! delayed ACKs inflate the measured RTT many times over (milliseconds for
//! a 100 µs path), and growth with 1/RTT² would then keep the flow at the
//! bottom for a long time after a bad stretch. Without this, a
//! fixed step meets random loss badly: at 1 % loss and a 150 µs RTT a
//! 10 Mbit/s step per interval holds a flow near 230 Mbit/s where Reno's
//! rule allows ~1 Gbit/s (the rate at which the cuts, one per interval with
//! a loss, balance the growth scales with the square root of the growth).
//! On loss the rate is multiplied by `loss_beta` (0.7 by default, CUBIC's
//! β, RFC 9438 §4.6, Linux's default; DCTCP's 0.5 is `loss_beta=0.5`); a
//! loss is reported once per recovery episode by the fast path, and at
//! most one cut is made per control interval (≥ 1 RTT), as a window flow
//! reduces once per window (RFC 5681 §3.2, RFC 6675 §5).
//!
//! An update needs at least `min_acks` segments acknowledged
//! (`ss_min_acks` in slow start, `mark_min_acks` once ECN marks arrived), a loss, or the
//! loop's `max_interval`; before that the feedback keeps accumulating. The
//! additive increase is not tied to updates: it applies once per control
//! interval (the loop runs every interval), while the flow has data queued
//! and saw no mark since its last update. Tying it to updates (every 50
//! ACKs) would let a fast flow grow faster than a slow one and never
//! converge to fair shares.

use super::{
    AlgoSpec, CcInfo, Feedback, FlowControl, Limit, ParamSpec, Params, Start, Unit, Verdict,
};

const INIT_RATE: usize = 0;
const STEP: usize = 1;
const MIN_RATE: usize = 2;
const WEIGHT: usize = 3;
const MIN_ACKS: usize = 4;
const SS_MIN_ACKS: usize = 5;
const CAP: usize = 6;
const MARK_MIN_ACKS: usize = 7;
const LOSS_BETA: usize = 8;
const AI_MSS: usize = 9;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "init_rate",
        unit: Unit::Rate,
        default: 10_000.0,
        min: 1.0,
        max: 4e9,
        help: "initial rate of a new flow",
    },
    ParamSpec {
        name: "step",
        unit: Unit::Rate,
        default: 10_000.0,
        min: 0.0,
        max: 4e9,
        help: "additive increase per update",
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
        name: "weight",
        unit: Unit::Number,
        default: 0.0625,
        min: 0.0,
        max: 1.0,
        help: "EWMA weight g of alpha",
    },
    ParamSpec {
        name: "min_acks",
        unit: Unit::Number,
        default: 50.0,
        min: 0.0,
        max: 1e6,
        help: "segments acked before an update",
    },
    ParamSpec {
        name: "ss_min_acks",
        unit: Unit::Number,
        default: 4.0,
        min: 0.0,
        max: 1e6,
        help: "segments acked before an update in slow start",
    },
    ParamSpec {
        name: "cap",
        unit: Unit::Number,
        default: 1.2,
        min: 0.0,
        max: 100.0,
        help: "rate at most cap x measured send rate (0 = no cap)",
    },
    ParamSpec {
        name: "mark_min_acks",
        unit: Unit::Number,
        default: 16.0,
        min: 0.0,
        max: 1e6,
        help: "segments acked before an update once ECN marks arrived",
    },
    ParamSpec {
        name: "loss_beta",
        unit: Unit::Number,
        default: 0.7,
        min: 0.05,
        max: 1.0,
        help: "rate x loss_beta on loss (at most once per update)",
    },
    ParamSpec {
        name: "ai_mss",
        unit: Unit::Number,
        default: 1.0,
        min: 0.0,
        max: 100.0,
        help:
            "without ECN marks, grow at least ai_mss MSS per RTT as a window would (0 = step only)",
    },
];

pub const SPEC: AlgoSpec = AlgoSpec {
    name: "dctcp-rate",
    help: "rate-based DCTCP: slow start doubling, additive step (Reno-like without marks), rate x (1 - alpha/2) on ECN marks, x loss_beta on loss",
    params: PARAMS,
    new_flow,
};

fn new_flow(p: &Params, s: &Start) -> Box<dyn FlowControl> {
    let init = p.get(INIT_RATE);
    Box::new(DctcpRate {
        rate: s.handover_rate(init as u64).max(p.get(MIN_RATE) as u64) as f64,
        alpha: s.alpha.unwrap_or(1.0),
        slow_start: s.current.is_none(),
        ss_target: 0.0,
        grown_ns: 0,
        marked: false,
        min_rtt_us: 0,
        min_rtt_age_ns: 0,
    })
}

#[derive(Debug, Clone)]
pub struct DctcpRate {
    /// kbit/s.
    rate: f64,
    alpha: f64,
    slow_start: bool,
    /// Slow start ends here (0 = only on congestion).
    ss_target: f64,
    /// `elapsed_ns` of the pending feedback at the last additive increase.
    grown_ns: u64,
    /// An ECN mark was ever seen (the path marks: the fixed step only).
    marked: bool,
    /// Smallest smoothed RTT seen (µs; 0 = none yet), for the increase.
    min_rtt_us: u32,
    /// Time since `min_rtt_us` was started over.
    min_rtt_age_ns: u64,
}

/// `min_rtt_us` starts over from the current RTT this often (the path may
/// have changed).
const MIN_RTT_WINDOW_NS: u64 = 10_000_000_000;

impl DctcpRate {
    /// The additive increase for the time since the last one: `step`, or
    /// for a flow without marks at least `ai_mss` MSS per RTT per RTT.
    fn increase(&mut self, p: &Params, fb: &Feedback) -> f64 {
        let dt = fb.elapsed_ns.saturating_sub(self.grown_ns);
        self.grown_ns = fb.elapsed_ns;
        let step = p.get(STEP);
        let ai = p.get(AI_MSS);
        if self.marked || ai == 0.0 || self.min_rtt_us == 0 {
            return step;
        }
        // kbit/s: ai·MSS·8 bits / RTT per RTT, over dt.
        let rtt_s = self.min_rtt_us as f64 * 1e-6;
        let per_s = ai * fb.mss.max(1) as f64 * 8e-3 / (rtt_s * rtt_s);
        step.max((per_s * dt as f64 * 1e-9).min(self.rate))
    }
}

impl FlowControl for DctcpRate {
    fn update(&mut self, p: &Params, fb: &Feedback) -> Verdict {
        if fb.rtt_us > 0 && (self.min_rtt_us == 0 || fb.rtt_us < self.min_rtt_us) {
            self.min_rtt_us = fb.rtt_us;
        }
        let v = self.step(p, fb);
        if v == Verdict::Apply {
            // The loop starts new feedback (elapsed from 0).
            self.grown_ns = 0;
            self.min_rtt_age_ns += fb.elapsed_ns;
            if self.min_rtt_age_ns >= MIN_RTT_WINDOW_NS {
                self.min_rtt_age_ns = 0;
                self.min_rtt_us = fb.rtt_us;
            }
        }
        v
    }

    fn limit(&self) -> Limit {
        Limit::Rate((self.rate as u64).max(1))
    }

    fn info(&self) -> CcInfo {
        CcInfo {
            slow_start: self.slow_start,
            alpha: Some(self.alpha),
        }
    }
}

impl DctcpRate {
    /// One update (see the module doc).
    fn step(&mut self, p: &Params, fb: &Feedback) -> Verdict {
        let min_rate = p.get(MIN_RATE);
        let need = if self.slow_start {
            p.get(SS_MIN_ACKS)
        } else {
            p.get(MIN_ACKS)
        } as u64;
        let segs = fb.acked_segments();
        if fb.ecn > 0 {
            self.marked = true;
        }
        // Marks call for a prompt decrease: fewer segments suffice then.
        let need = if fb.ecn > 0 {
            need.min(p.get(MARK_MIN_ACKS) as u64)
        } else {
            need
        };
        if !fb.loss() && !fb.overdue && segs < need {
            if !self.slow_start && fb.ecn == 0 && fb.acked > 0 && fb.queued > 0 {
                // Additive increase once per control interval (the loop
                // calls every interval): the same per unit of time for every
                // flow, whatever its rate, so that flows converge to fair
                // shares. Only while the rate limits the flow (data queued)
                // and nothing was marked since the last update.
                let inc = self.increase(p, fb);
                self.rate = (self.rate + inc).min(4e9);
            }
            // A backlogged flow is looked at every interval (for the
            // increase); another one when enough ACKs may be there at the
            // pace they came so far (the loop bounds the wait).
            let wait_ns = if fb.queued > 0 {
                0
            } else {
                let missing = (need - segs) * fb.mss.max(1) as u64;
                let pace = fb.send_rate_kbps().max(1) as f64;
                (missing as f64 * 8e6 / pace) as u64
            };
            return Verdict::Defer { wait_ns };
        }

        // 1. Cap at a multiple of what the flow actually sent. Not on loss
        // or while recovery runs: while a hole is repaired the cumulative ACK stands still although
        // the peer receives (SACKs) at the full rate, so acknowledged bytes
        // under-measure the sending rate, down to nothing when a
        // retransmission is lost; capping then would throw the rate to
        // `min_rate` on every such episode. The loss response applies.
        let cap = p.get(CAP);
        let measured = fb.send_rate_kbps() as f64;
        if cap > 0.0 && !fb.loss() && !fb.recovering && self.rate > measured * cap {
            let capped = (measured * cap).max(min_rate);
            if !fb.loss() && fb.ecn == 0 {
                // Not congestion: the app (or the host) sent less than the
                // rate allowed. Come back quickly once it sends again, by
                // slow start up to 3/4 of the old rate.
                // (The first slow start has no target: it ends on congestion.)
                if !(self.slow_start && self.ss_target == 0.0) {
                    self.ss_target = self.ss_target.max(self.rate * 0.75);
                    if capped < self.ss_target {
                        self.slow_start = true;
                    }
                }
                if fb.queued == 0 {
                    // App-limited: no increase now, the rate was not used.
                    self.rate = capped;
                    return Verdict::Apply;
                }
            }
            self.rate = capped;
        }
        if fb.acked == 0 && !fb.loss() {
            // Nothing learned (idle): no increase.
            self.rate = self.rate.max(min_rate);
            return Verdict::Apply;
        }

        // 2. Slow start.
        if self.slow_start {
            if fb.loss() || fb.ecn > 0 {
                self.slow_start = false;
                self.ss_target = 0.0;
            } else {
                self.rate *= 2.0;
                if self.ss_target > 0.0 && self.rate >= self.ss_target {
                    self.slow_start = false;
                    self.ss_target = 0.0;
                }
                self.rate = self.rate.clamp(min_rate, 4e9);
                return Verdict::Apply;
            }
        }

        // 3. Congestion avoidance.
        if fb.loss() {
            self.rate *= p.get(LOSS_BETA);
        } else {
            let g = p.get(WEIGHT);
            self.alpha = (1.0 - g) * self.alpha + g * fb.ecn_fraction();
            if fb.ecn > 0 {
                self.rate *= 1.0 - self.alpha / 2.0;
            } else {
                self.rate += self.increase(p, fb);
            }
        }
        self.rate = self.rate.clamp(min_rate, 4e9);
        Verdict::Apply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1448;
    const MS: u64 = 1_000_000;

    /// The classic rule: halving on loss, the fixed step only.
    fn params() -> Params {
        let mut p = Params::defaults(PARAMS);
        p.set("loss_beta", "0.5").unwrap();
        p.set("ai_mss", "0").unwrap();
        p
    }

    /// Feedback of a flow that sent `kbps` for `ms` with `ecn_pct` % marked.
    fn fb(kbps: u64, ms: u64, ecn_pct: u64) -> Feedback {
        let acked = kbps * ms * 1000 / 8 / 1000; // kbit/s · ms = bits; /8 bytes
        Feedback {
            elapsed_ns: ms * MS,
            acked,
            ecn: acked * ecn_pct / 100,
            rtt_us: 50,
            mss: MSS,
            queued: 100_000,
            ..Default::default()
        }
    }

    fn rate(c: &dyn FlowControl) -> u64 {
        match c.limit() {
            Limit::Rate(r) => r,
            l => panic!("not a rate: {l:?}"),
        }
    }

    fn new(p: &Params) -> Box<dyn FlowControl> {
        (SPEC.new_flow)(
            p,
            &Start {
                mss: MSS,
                rtt_us: 50,
                ..Default::default()
            },
        )
    }

    #[test]
    fn slow_start_doubles_until_the_first_mark_then_cuts_by_alpha() {
        let p = params();
        let mut c = new(&p);
        assert_eq!(rate(&*c), 10_000);
        // A recorded ramp: each interval the flow sent at its full rate.
        let mut r = 10_000;
        for _ in 0..6 {
            assert_eq!(c.update(&p, &fb(r, 10, 0)), Verdict::Apply);
            r *= 2;
            assert_eq!(rate(&*c), r);
            assert!(c.info().slow_start);
        }
        // First marks: leave slow start, alpha = 15/16 + 0.1/16, rate · (1 - alpha/2).
        assert_eq!(c.update(&p, &fb(r, 10, 10)), Verdict::Apply);
        assert!(!c.info().slow_start);
        let alpha = 15.0 / 16.0 + 0.1 / 16.0;
        assert!((c.info().alpha.unwrap() - alpha).abs() < 1e-9);
        let expect = (r as f64 * (1.0 - alpha / 2.0)) as u64;
        assert!(rate(&*c).abs_diff(expect) <= 1, "{} vs {expect}", rate(&*c));
        // Unmarked interval: additive step.
        let r2 = rate(&*c);
        c.update(&p, &fb(r2, 10, 0));
        assert_eq!(rate(&*c), r2 + 10_000);
    }

    #[test]
    fn alpha_tracks_the_marked_fraction() {
        let p = params();
        let mut c = new(&p);
        c.update(&p, &fb(10_000, 100, 50)); // leaves slow start
        for _ in 0..200 {
            let r = rate(&*c);
            assert_eq!(c.update(&p, &fb(r, 100, 20)), Verdict::Apply);
        }
        let a = c.info().alpha.unwrap();
        assert!((a - 0.2).abs() < 0.01, "alpha {a}");
        // Marks every interval: the rate falls to the floor, never below.
        assert_eq!(rate(&*c), 10_000);
    }

    #[test]
    fn loss_halves_and_ends_slow_start() {
        let p = params();
        let mut c = new(&p);
        c.update(&p, &fb(10_000, 10, 0));
        c.update(&p, &fb(20_000, 10, 0));
        assert_eq!(rate(&*c), 40_000);
        let mut f = fb(40_000, 10, 0);
        f.fast_retransmits = 1;
        c.update(&p, &f);
        assert!(!c.info().slow_start);
        assert_eq!(rate(&*c), 20_000);
        let mut f = fb(20_000, 1, 0);
        f.timeouts = 1;
        f.acked = 0; // a timeout is applied even without acks
        assert_eq!(c.update(&p, &f), Verdict::Apply);
        assert_eq!(rate(&*c), 10_000);
    }

    #[test]
    fn updates_wait_for_enough_acks() {
        let p = params();
        let mut c = new(&p);
        // Slow start needs 4 segments.
        let mut f = fb(10_000, 1, 0); // 1250 bytes: not even one segment
        assert_eq!(
            c.update(&p, &f),
            Verdict::Defer { wait_ns: 0 },
            "backlogged: every interval"
        );
        f.queued = 0;
        match c.update(&p, &f) {
            // App-limited: 4 segments at the 10 Mbit/s acks came at ≈ 4.6 ms.
            Verdict::Defer { wait_ns } => assert!((4 * MS..5 * MS).contains(&wait_ns), "{wait_ns}"),
            v => panic!("{v:?}"),
        }
        f.queued = 1;
        assert_eq!(rate(&*c), 10_000);
        f.overdue = true;
        assert_eq!(c.update(&p, &f), Verdict::Apply);
        // In congestion avoidance 50 segments are needed.
        let mut f = fb(20_000, 10, 0);
        f.fast_retransmits = 1;
        c.update(&p, &f);
        assert!(!c.info().slow_start);
        let r0 = rate(&*c);
        // Deferred, but one control interval passed with data queued and
        // no marks: additive increase.
        assert!(matches!(
            c.update(&p, &fb(10_000, 10, 0)),
            Verdict::Defer { .. }
        ));
        assert_eq!(rate(&*c), r0 + 10_000);
        // Not while app-limited...
        let mut idle = fb(10_000, 10, 0);
        idle.queued = 0;
        assert!(matches!(c.update(&p, &idle), Verdict::Defer { .. }));
        assert_eq!(rate(&*c), r0 + 10_000);
        assert_eq!(c.update(&p, &fb(10_000, 60, 0)), Verdict::Apply);
        // Marks need only `mark_min_acks` (16) segments for a decrease.
        let mut c = (SPEC.new_flow)(
            &p,
            &Start {
                mss: MSS,
                rtt_us: 50,
                current: Some(Limit::Rate(100_000)),
                ..Default::default()
            },
        );
        assert!(matches!(
            c.update(&p, &fb(100_000, 1, 0)),
            Verdict::Defer { .. }
        )); // 8 segments
        assert_eq!(rate(&*c), 110_000);
        assert_eq!(c.update(&p, &fb(100_000, 2, 50)), Verdict::Apply); // 17 segments
        assert!(rate(&*c) < 100_000);
    }

    #[test]
    fn rate_is_capped_at_the_measured_send_rate() {
        let p = params();
        let mut c = new(&p);
        for r in [10_000, 20_000, 40_000, 80_000, 160_000] {
            c.update(&p, &fb(r, 10, 0));
        }
        assert_eq!(rate(&*c), 320_000);
        // The peer's window holds the flow at 100 Mbit/s (data queued):
        // cap at 120 Mbit/s, then doubled in slow start, no further.
        c.update(&p, &fb(100_000, 10, 0));
        assert_eq!(rate(&*c), 240_000);
        c.update(&p, &fb(100_000, 10, 0));
        assert_eq!(rate(&*c), 240_000);
        // ...and the first slow start goes on until congestion.
        assert!(c.info().slow_start);
        c.update(&p, &fb(240_000, 10, 0));
        assert_eq!(rate(&*c), 480_000);
        assert!(c.info().slow_start);
    }

    #[test]
    fn a_hiccup_without_congestion_slow_starts_back() {
        let p = params();
        let mut c = (SPEC.new_flow)(
            &p,
            &Start {
                mss: MSS,
                rtt_us: 50,
                current: Some(Limit::Rate(1_000_000)),
                ..Default::default()
            },
        );
        assert!(!c.info().slow_start);
        // The host stalled: 200 Mbit/s measured with data queued. Capped to
        // 240, re-armed slow start doubles at once.
        assert_eq!(c.update(&p, &fb(200_000, 10, 0)), Verdict::Apply);
        assert_eq!(rate(&*c), 480_000);
        assert!(c.info().slow_start);
        c.update(&p, &fb(480_000, 10, 0));
        assert_eq!(rate(&*c), 960_000);
        assert!(!c.info().slow_start, "stops at 3/4 of the old rate");
        // With marks the cap does not re-arm slow start.
        c.update(&p, &fb(300_000, 10, 10));
        assert!(!c.info().slow_start);
        assert!(rate(&*c) < 360_000);
    }

    #[test]
    fn an_app_limited_flow_drops_its_rate_and_slow_starts_back() {
        let p = params();
        let mut c = new(&p);
        let mut f = fb(10_000, 10, 0);
        f.fast_retransmits = 1;
        c.update(&p, &f);
        for _ in 0..100 {
            let r = rate(&*c);
            assert_eq!(c.update(&p, &fb(r, 100, 0)), Verdict::Apply);
        }
        let high = rate(&*c);
        assert_eq!(high, 1_010_000);
        assert!(!c.info().slow_start);
        // The app sends little (and has nothing queued): capped low...
        let mut f = fb(5_000, 200, 0);
        f.queued = 0;
        c.update(&p, &f);
        assert_eq!(rate(&*c), 10_000);
        assert!(c.info().slow_start);
        // ...idle: stays put...
        let mut idle = fb(0, 10, 0);
        idle.queued = 0;
        idle.overdue = true;
        assert_eq!(c.update(&p, &idle), Verdict::Apply);
        assert_eq!(rate(&*c), 10_000);
        // ...then bulk again: doubling up to 3/4 of the old rate.
        let mut steps = 0;
        while c.info().slow_start {
            let r = rate(&*c);
            c.update(&p, &fb(r, 10, 0));
            steps += 1;
            assert!(steps < 20);
        }
        assert!(
            rate(&*c) as f64 >= high as f64 * 0.75,
            "{} vs {high}",
            rate(&*c)
        );
    }

    #[test]
    fn switching_in_keeps_the_speed() {
        let p = params();
        let c = (SPEC.new_flow)(
            &p,
            &Start {
                mss: MSS,
                rtt_us: 100,
                current: Some(Limit::Window(125_000)),
                ..Default::default()
            },
        );
        assert_eq!(rate(&*c), 10_000_000);
        assert!(!c.info().slow_start);
        let c = (SPEC.new_flow)(
            &p,
            &Start {
                mss: MSS,
                rtt_us: 100,
                current: Some(Limit::Rate(0)),
                send_rate_kbps: 2_000_000,
                ..Default::default()
            },
        );
        assert_eq!(rate(&*c), 2_000_000);
    }

    /// A flow in congestion avoidance at `kbps` (after one loss).
    fn avoiding(p: &Params, kbps: u64) -> Box<dyn FlowControl> {
        let mut c = (SPEC.new_flow)(
            p,
            &Start {
                mss: MSS,
                rtt_us: 150,
                current: Some(Limit::Rate(kbps)),
                ..Default::default()
            },
        );
        assert!(!c.info().slow_start);
        // One applied update without loss or marks first (grows).
        let mut f = fb(kbps, 1, 0);
        f.rtt_us = 150;
        f.overdue = true;
        c.update(p, &f);
        c
    }

    #[test]
    fn without_marks_the_increase_is_one_mss_per_rtt_per_rtt() {
        let p = Params::defaults(PARAMS);
        let mut c = avoiding(&p, 200_000);
        let r0 = rate(&*c);
        // A deferred interval of 300 µs with data queued at RTT 150 µs:
        // MSS·8 bits / RTT per RTT = 77.2 Mbit/s per 150 µs, 154.5 over
        // 300 µs (a fixed 10 Mbit/s step would give 10).
        let mut f = fb(r0, 0, 0);
        f.elapsed_ns = 300_000;
        f.acked = 2 * MSS as u64;
        f.rtt_us = 150;
        assert!(matches!(c.update(&p, &f), Verdict::Defer { .. }));
        let inc = rate(&*c) - r0;
        let want = (MSS as f64 * 8e-3 / (150e-6f64 * 150e-6) * 300e-6) as u64;
        assert!(inc.abs_diff(want) <= 2, "{inc} vs {want}");
        // The next interval counts only its own time (600 µs in all).
        let r1 = rate(&*c);
        f.elapsed_ns = 600_000;
        c.update(&p, &f);
        assert!((rate(&*c) - r1).abs_diff(want) <= 2);
        // Never more than doubling per interval, whatever the RTT says.
        f.rtt_us = 1;
        f.elapsed_ns = 10_000_000;
        let r2 = rate(&*c);
        c.update(&p, &f);
        assert!(rate(&*c).abs_diff(2 * r2) <= 1);
    }

    #[test]
    fn with_marks_the_increase_stays_the_fixed_step() {
        let p = Params::defaults(PARAMS);
        let mut c = avoiding(&p, 200_000);
        // One marked update: the path marks, DCTCP's own law rules.
        let mut f = fb(200_000, 2, 50);
        f.rtt_us = 150;
        assert_eq!(c.update(&p, &f), Verdict::Apply);
        let r0 = rate(&*c);
        let mut f = fb(r0, 0, 0);
        f.elapsed_ns = 300_000;
        f.acked = 2 * MSS as u64;
        f.rtt_us = 150;
        c.update(&p, &f);
        assert_eq!(rate(&*c), r0 + 10_000);
    }

    #[test]
    fn loss_multiplies_by_loss_beta_once_per_update() {
        let p = Params::defaults(PARAMS);
        let mut c = avoiding(&p, 500_000);
        let r0 = rate(&*c) as f64;
        // Several recovery episodes within one interval: one cut.
        let mut f = fb(r0 as u64, 1, 0);
        f.rtt_us = 150;
        f.fast_retransmits = 3;
        assert_eq!(c.update(&p, &f), Verdict::Apply);
        assert!((rate(&*c) as f64 - r0 * 0.7).abs() <= 1.0, "{}", rate(&*c));
    }

    #[test]
    fn a_loss_while_the_cumulative_ack_stalls_is_no_reason_to_cap() {
        let p = Params::defaults(PARAMS);
        let mut c = avoiding(&p, 500_000);
        let r0 = rate(&*c) as f64;
        // A recovery whose first retransmission was lost: almost nothing
        // cumulatively acknowledged over the interval, one loss.
        let mut f = fb(1_000, 1, 0);
        f.rtt_us = 150;
        f.fast_retransmits = 1;
        assert_eq!(c.update(&p, &f), Verdict::Apply);
        assert!((rate(&*c) as f64 - r0 * 0.7).abs() <= 1.0, "{}", rate(&*c));
    }

    #[test]
    fn the_increase_uses_the_smallest_rtt_seen_not_one_inflated_by_delayed_acks() {
        let p = Params::defaults(PARAMS);
        let mut c = avoiding(&p, 20_000); // saw 150 µs
        let r0 = rate(&*c);
        // At 20 Mbit/s the peer's delayed ACKs make the RTT look 3 ms.
        let mut f = fb(r0, 0, 0);
        f.elapsed_ns = 300_000;
        f.acked = 2 * MSS as u64;
        f.rtt_us = 3000;
        c.update(&p, &f);
        let want = (MSS as f64 * 8e-3 / (150e-6f64 * 150e-6) * 300e-6) as u64;
        // (At most doubling per interval.)
        assert!(
            (rate(&*c) - r0).abs_diff(want.min(r0)) <= 2,
            "{} {want}",
            rate(&*c) - r0
        );
        assert!(rate(&*c) - r0 > 10_000);
    }

    #[test]
    fn no_cap_while_recovery_runs() {
        let p = Params::defaults(PARAMS);
        let mut c = avoiding(&p, 500_000);
        let r0 = rate(&*c);
        // Recovery is running (its loss is reported when it ends): the
        // cumulative ACK stands behind a hole, little is acknowledged.
        let mut f = fb(1_000, 10, 0);
        f.rtt_us = 150;
        f.overdue = true;
        f.recovering = true;
        assert_eq!(c.update(&p, &f), Verdict::Apply);
        assert!(rate(&*c) >= r0, "{} < {r0}", rate(&*c));
        assert!(!c.info().slow_start);
        // Without recovery the same feedback caps (app or window limited).
        f.recovering = false;
        c.update(&p, &f);
        assert!(rate(&*c) < r0);
    }
}
