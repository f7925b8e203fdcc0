//! Rates for `tasctl status` and `tasctl cores`: the daemon's counters
//! sampled every 100 ms ([`Meter`]), compared over about a second; and the
//! fast-path counters summed over the lanes.

use super::Shared;
use crate::config::MAX_CORES;
use crate::stack::{Stack, StackStats};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tas_engine::engine;

/// Counters sampled for per-second rates.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    pub(super) at: Instant,
    pub(super) rx_frames: u64,
    pub(super) tx_frames: u64,
    pub(super) rx_bytes: u64,
    pub(super) tx_bytes: u64,
    pub(super) drops: u64,
    pub(super) exceptions: u64,
    /// Per fast-path core, cumulative.
    pub(super) busy_ns: [u64; MAX_CORES as usize],
}

/// The last few seconds of samples (one every 100 ms).
pub(super) struct Meter {
    samples: VecDeque<Sample>,
}

impl Meter {
    pub(super) fn new() -> Self {
        Meter {
            samples: VecDeque::new(),
        }
    }

    pub(super) fn due(&self, now: Instant) -> bool {
        self.samples
            .back()
            .is_none_or(|s| now.duration_since(s.at) >= Duration::from_millis(100))
    }

    pub(super) fn push(&mut self, s: Sample) {
        self.samples.push_back(s);
        while self.samples.len() > 40 {
            self.samples.pop_front();
        }
    }

    /// Newest sample and the one about a second before it.
    pub(super) fn window(&self) -> Option<(Sample, Sample)> {
        let new = *self.samples.back()?;
        let old = self
            .samples
            .iter()
            .rev()
            .find(|s| new.at.duration_since(s.at) >= Duration::from_millis(950))
            .or(self.samples.front())
            .copied()?;
        (new.at > old.at).then_some((new, old))
    }
}

/// Frames dropped by tasd, over every cause that has a counter (the lanes'
/// exception queues drop nothing).
fn drops(fp: &engine::Stats, st: &StackStats) -> u64 {
    fp.bad_checksum
        + fp.ooo_dropped
        + fp.seq_unacceptable
        + fp.tx_full
        + fp.mem_errors
        + st.dropped_malformed
        + st.dropped_unusual_flags
        + st.dropped_not_ours
        + st.dropped_other
}

/// The fast-path counters summed over all lanes.
pub(super) fn lane_totals(shared: &Shared) -> engine::Stats {
    let mut t = engine::Stats::default();
    for l in &shared.lanes {
        if let Ok(s) = l.stats.lock() {
            t.add(&s);
        }
    }
    t
}

/// A counter of every lane, summed.
pub(super) fn lane_sum(shared: &Shared, f: impl Fn(&tas_runtime::LaneShared) -> u64) -> u64 {
    shared.lanes.iter().map(|l| f(l)).sum()
}

/// The counters now.
pub(super) fn sample(shared: &Shared, stack: &Stack) -> Sample {
    let fp = lane_totals(shared);
    let mut busy_ns = [0u64; MAX_CORES as usize];
    for (i, c) in shared.cores.iter().enumerate().take(MAX_CORES as usize) {
        busy_ns[i] = c.busy_ns.load(Ordering::Relaxed);
    }
    Sample {
        at: Instant::now(),
        rx_frames: fp.rx_frames,
        tx_frames: fp.tx_frames + fp.acks_sent,
        rx_bytes: fp.rx_payload_bytes,
        tx_bytes: fp.tx_payload_bytes,
        drops: drops(&fp, &stack.stats()),
        exceptions: fp.exceptions,
        busy_ns,
    }
}
