//! `dctcp-win`: window-based DCTCP (Alizadeh et al., SIGCOMM 2010), run once
//! per control interval instead of per ACK.
//!
//! The window starts at `init_window` segments. Per update with acked bytes
//! A, of which E were ECN-echoed: α ← (1−g)·α + g·E/A; if E > 0 the window
//! becomes cwnd·(1 − α/2) and slow start ends; otherwise, if the flow was
//! window-limited (data queued, or the window nearly full), it grows by A in
//! slow start and by MSS·A/cwnd in congestion avoidance (one segment per
//! window of data). Loss (fast retransmit or timeout) halves the window.
//! Never below `min_window` segments. α starts at 1.

use super::{
    AlgoSpec, CcInfo, Feedback, FlowControl, Limit, ParamSpec, Params, Start, Unit, Verdict,
};

const INIT_WINDOW: usize = 0;
const MIN_WINDOW: usize = 1;
const WEIGHT: usize = 2;
const MAX_WINDOW: usize = 3;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "init_window",
        unit: Unit::Number,
        default: 2.0,
        min: 1.0,
        max: 1e6,
        help: "initial window in segments",
    },
    ParamSpec {
        name: "min_window",
        unit: Unit::Number,
        default: 2.0,
        min: 1.0,
        max: 1e6,
        help: "smallest window in segments",
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
        name: "max_window",
        unit: Unit::Bytes,
        default: 64.0 * 1024.0 * 1024.0,
        min: 1024.0,
        max: 4e9,
        help: "largest window",
    },
];

pub const SPEC: AlgoSpec = AlgoSpec {
    name: "dctcp-win",
    help: "window-based DCTCP: slow start, one segment per window, cwnd x (1 - alpha/2) on ECN marks, halving on loss",
    params: PARAMS,
    new_flow,
};

fn new_flow(p: &Params, s: &Start) -> Box<dyn FlowControl> {
    let mss = s.mss.max(1) as f64;
    let min = p.get(MIN_WINDOW) * mss;
    let cwnd = match s.current {
        None => p.get(INIT_WINDOW) * mss,
        Some(l) => {
            let fallback = if s.send_rate_kbps > 0 {
                s.send_rate_kbps
            } else {
                10_000
            };
            l.as_window(s.rtt_or_default(), fallback) as f64
        }
    };
    Box::new(DctcpWin {
        cwnd: cwnd.clamp(min, p.get(MAX_WINDOW).max(min)),
        alpha: s.alpha.unwrap_or(1.0),
        slow_start: s.current.is_none(),
    })
}

#[derive(Debug, Clone)]
pub struct DctcpWin {
    /// Bytes.
    cwnd: f64,
    alpha: f64,
    slow_start: bool,
}

impl FlowControl for DctcpWin {
    fn update(&mut self, p: &Params, fb: &Feedback) -> Verdict {
        if fb.acked == 0 && !fb.loss() {
            if fb.overdue {
                return Verdict::Apply;
            }
            return Verdict::Defer { wait_ns: 0 };
        }
        let mss = fb.mss.max(1) as f64;
        let min = p.get(MIN_WINDOW) * mss;
        let max = p.get(MAX_WINDOW).max(min);
        if fb.loss() {
            self.cwnd /= 2.0;
            self.slow_start = false;
        } else {
            let g = p.get(WEIGHT);
            self.alpha = (1.0 - g) * self.alpha + g * fb.ecn_fraction();
            if fb.ecn > 0 {
                self.cwnd *= 1.0 - self.alpha / 2.0;
                self.slow_start = false;
            } else if fb.queued > 0 || fb.in_flight as f64 + mss >= self.cwnd {
                let a = fb.acked as f64;
                if self.slow_start {
                    self.cwnd += a;
                } else {
                    self.cwnd += mss * a / self.cwnd;
                }
            }
        }
        self.cwnd = self.cwnd.clamp(min, max);
        Verdict::Apply
    }

    fn limit(&self) -> Limit {
        Limit::Window((self.cwnd as u32).max(1))
    }

    fn info(&self) -> CcInfo {
        CcInfo {
            slow_start: self.slow_start,
            alpha: Some(self.alpha),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;

    fn win(c: &dyn FlowControl) -> u32 {
        match c.limit() {
            Limit::Window(w) => w,
            l => panic!("not a window: {l:?}"),
        }
    }

    fn fb(acked: u64, ecn: u64) -> Feedback {
        Feedback {
            elapsed_ns: 100_000,
            acked,
            ecn,
            mss: MSS,
            rtt_us: 50,
            queued: 1,
            ..Default::default()
        }
    }

    #[test]
    fn recorded_sequence() {
        let p = Params::defaults(PARAMS);
        let mut c = (SPEC.new_flow)(
            &p,
            &Start {
                mss: MSS,
                ..Default::default()
            },
        );
        assert_eq!(win(&*c), 2000);
        // Slow start: a full window acked per update doubles it.
        for w in [2000, 4000, 8000, 16000] {
            assert_eq!(c.update(&p, &fb(w, 0)), Verdict::Apply);
            assert_eq!(win(&*c), 2 * w as u32);
        }
        // 25 % marked: alpha = (15/16)^5 · 1 ... after 4 clean updates and this one.
        c.update(&p, &fb(32000, 8000));
        let a = (15.0f64 / 16.0).powi(5) + 0.25 / 16.0;
        assert!((c.info().alpha.unwrap() - a).abs() < 1e-9);
        assert_eq!(win(&*c), (32000.0 * (1.0 - a / 2.0)) as u32);
        assert!(!c.info().slow_start);
        // Congestion avoidance: one MSS per window acked.
        let w = win(&*c) as u64;
        c.update(&p, &fb(w, 0));
        assert!(
            win(&*c).abs_diff(w as u32 + MSS) <= 1,
            "{} vs {}",
            win(&*c),
            w + MSS as u64
        );
        // Loss halves; never below min_window.
        let mut l = fb(0, 0);
        l.fast_retransmits = 1;
        for _ in 0..20 {
            c.update(&p, &l);
        }
        assert_eq!(win(&*c), 2 * MSS);
        // No acks: defer (unless overdue).
        assert!(matches!(c.update(&p, &fb(0, 0)), Verdict::Defer { .. }));
    }

    #[test]
    fn app_limited_flows_do_not_grow() {
        let p = Params::defaults(PARAMS);
        let mut c = (SPEC.new_flow)(
            &p,
            &Start {
                mss: MSS,
                ..Default::default()
            },
        );
        let mut f = fb(500, 0);
        f.queued = 0;
        f.in_flight = 0;
        c.update(&p, &f);
        assert_eq!(win(&*c), 2000);
    }

    #[test]
    fn switching_in_converts_the_rate() {
        let p = Params::defaults(PARAMS);
        let c = (SPEC.new_flow)(
            &p,
            &Start {
                mss: MSS,
                rtt_us: 100,
                current: Some(Limit::Rate(80_000)),
                alpha: Some(0.3),
                ..Default::default()
            },
        );
        // 80 Mbit/s · 100 µs = 1000 bytes → raised to the 2-segment floor.
        assert_eq!(win(&*c), 2000);
        assert_eq!(c.info().alpha, Some(0.3));
        let c = (SPEC.new_flow)(
            &p,
            &Start {
                mss: MSS,
                rtt_us: 100,
                current: Some(Limit::Rate(8_000_000)),
                ..Default::default()
            },
        );
        assert_eq!(win(&*c), 100_000);
        assert!(!c.info().slow_start);
    }
}
