//! `const-rate`: a fixed rate per flow (0 = unlimited: only the peer's
//! window limits the flow). Ignores all feedback.

use super::{AlgoSpec, Feedback, FlowControl, Limit, ParamSpec, Params, Start, Unit, Verdict};

const RATE: usize = 0;

const PARAMS: &[ParamSpec] = &[ParamSpec {
    name: "rate",
    unit: Unit::Rate,
    default: 0.0,
    min: 0.0,
    max: 4e9,
    help: "rate of every flow (0 = unlimited)",
}];

pub const SPEC: AlgoSpec = AlgoSpec {
    name: "const-rate",
    help: "a fixed rate per flow, no feedback (0 = unlimited)",
    params: PARAMS,
    new_flow,
};

fn new_flow(p: &Params, _: &Start) -> Box<dyn FlowControl> {
    Box::new(ConstRate {
        rate: p.get(RATE) as u64,
    })
}

#[derive(Debug, Clone)]
pub struct ConstRate {
    rate: u64,
}

impl FlowControl for ConstRate {
    fn update(&mut self, p: &Params, fb: &Feedback) -> Verdict {
        self.rate = p.get(RATE) as u64;
        // No feedback needed: look again only every max_interval (a new
        // rate still applies at once: this runs at every round).
        if fb.overdue {
            Verdict::Apply
        } else {
            Verdict::Defer { wait_ns: u64::MAX }
        }
    }

    fn limit(&self) -> Limit {
        Limit::Rate(self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_parameter_and_ignores_feedback() {
        let mut p = Params::defaults(PARAMS);
        let mut c = (SPEC.new_flow)(&p, &Start::default());
        assert_eq!(c.limit(), Limit::Rate(0));
        p.set("rate", "1gbps").unwrap();
        let loss = Feedback {
            fast_retransmits: 3,
            timeouts: 1,
            ..Default::default()
        };
        assert_eq!(c.update(&p, &loss), Verdict::Defer { wait_ns: u64::MAX });
        assert_eq!(c.limit(), Limit::Rate(1_000_000));
        let overdue = Feedback {
            overdue: true,
            ..Default::default()
        };
        assert_eq!(c.update(&p, &overdue), Verdict::Apply);
    }
}
