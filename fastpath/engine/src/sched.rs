//! The per-core TX scheduler (the paper's "queue manager").
//!
//! Decides *when* each flow may send; the engine decides *how much*. Flows
//! without a rate limit wait in a FIFO; rate-limited flows wait in a min-heap
//! ordered by their next send time (the rate bucket: after sending `b` bytes
//! at `r` kbit/s a flow may send again `b·8/r` ms later). Window limits are
//! applied by the engine, which only activates a flow when its window and its
//! TX ring allow sending.
//!
//! Every flow is queued at most once (a per-flow flag), and both queues are
//! allocated for the table's capacity up front, so nothing here allocates
//! after construction.

use crate::fifo::Fifo;
use crate::flowtable::FlowId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// How much sending time a rate-limited flow may catch up after a late poll.
pub const PACING_CREDIT_NS: u64 = 50_000;

/// `state` bits: the flow is in a queue; its `next_ns` may lie ahead (it
/// was charged at a rate). Unpaced flows never touch `next_ns`, an array
/// too big for the cache with many flows.
const QUEUED: u8 = 1;
const PACED: u8 = 2;

pub struct TxScheduler {
    /// Earliest time (ns) each flow may send again.
    next_ns: Box<[u64]>,
    state: Box<[u8]>,
    ready: Fifo<FlowId>,
    timed: BinaryHeap<Reverse<(u64, FlowId)>>,
}

impl TxScheduler {
    /// A scheduler for flow ids `0..capacity`.
    pub fn new(capacity: usize) -> Self {
        TxScheduler {
            next_ns: vec![0; capacity].into_boxed_slice(),
            state: vec![0; capacity].into_boxed_slice(),
            ready: Fifo::with_capacity(capacity),
            timed: BinaryHeap::with_capacity(capacity),
        }
    }

    /// Flow `id` has something to send; queue it unless it already is.
    #[inline]
    pub fn activate(&mut self, id: FlowId, now: u64) {
        let i = id as usize;
        let Some(s) = self.state.get_mut(i) else {
            return;
        };
        if *s & QUEUED != 0 {
            return;
        }
        *s |= QUEUED;
        let t = if *s & PACED != 0 { self.next_ns[i] } else { 0 };
        if t <= now {
            // Room by construction: each flow is queued at most once.
            let _ = self.ready.push_back(id);
        } else {
            self.timed.push(Reverse((t, id)));
        }
    }

    /// Whether flow `id` is neither queued nor paced: it may send at once
    /// without passing the queues (its turn comes at once, and charging it
    /// would change nothing).
    #[inline(always)]
    pub fn idle_unpaced(&self, id: FlowId) -> bool {
        self.state.get(id as usize) == Some(&0)
    }

    /// The next flow allowed to send at `now`, removed from the queues.
    #[inline]
    pub fn next_ready(&mut self, now: u64) -> Option<FlowId> {
        while let Some(&Reverse((t, id))) = self.timed.peek() {
            if t > now {
                break;
            }
            self.timed.pop();
            let _ = self.ready.push_back(id);
        }
        let id = self.ready.pop_front()?;
        self.state[id as usize] &= !QUEUED;
        Some(id)
    }

    /// Charges `bytes` sent at `now` to the flow's rate bucket.
    /// `rate_kbps == 0` means unlimited.
    #[inline]
    pub fn charge(&mut self, id: FlowId, bytes: u32, rate_kbps: u32, now: u64) {
        let i = id as usize;
        if i >= self.next_ns.len() {
            return;
        }
        if rate_kbps == 0 {
            if self.state[i] & PACED != 0 {
                self.state[i] &= !PACED;
                self.next_ns[i] = 0;
            }
            return;
        }
        self.state[i] |= PACED;
        // bytes·8 bits at rate·1000 bit/s = bytes·8·10^6/rate ns.
        let cost = (bytes as u64 * 8_000_000) / rate_kbps as u64;
        // A poll round that comes late may catch up on up to PACING_CREDIT
        // of missed sending time; otherwise every late round is lost rate.
        let start = self.next_ns[i].max(now.saturating_sub(PACING_CREDIT_NS));
        self.next_ns[i] = start + cost;
    }

    /// When the scheduler next has work: `Some(0)` if a flow is ready now.
    pub fn poll_at(&self) -> Option<u64> {
        if self.ready.len() > 0 {
            return Some(0);
        }
        self.timed.peek().map(|Reverse((t, _))| *t)
    }

    /// Forgets a flow's bucket (a new flow took the slot).
    pub fn reset(&mut self, id: FlowId) {
        if let Some(t) = self.next_ns.get_mut(id as usize) {
            *t = 0;
            self.state[id as usize] &= !PACED;
        }
    }

    /// Flows currently queued.
    #[inline]
    pub fn queued(&self) -> usize {
        self.ready.len() + self.timed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_flows_are_fifo_and_queued_once() {
        let mut s = TxScheduler::new(8);
        s.activate(3, 100);
        s.activate(1, 100);
        s.activate(3, 100);
        assert_eq!(s.queued(), 2);
        assert_eq!(s.next_ready(100), Some(3));
        assert_eq!(s.next_ready(100), Some(1));
        assert_eq!(s.next_ready(100), None);
        s.activate(9, 0); // out of range: ignored
        assert_eq!(s.poll_at(), None);
    }

    #[test]
    fn rate_bucket_spaces_segments() {
        let mut s = TxScheduler::new(4);
        // 1448 bytes at 10 Mbit/s = 1.1584 ms, counted from `now` once the
        // flow has used up its catch-up credit.
        let t0 = 1_000_000;
        s.charge(2, 1448, 10_000, t0);
        assert_eq!(s.next_ns[2], t0 - PACING_CREDIT_NS + 1_158_400);
        let t1 = s.next_ns[2];
        s.activate(2, t0);
        assert_eq!(s.next_ready(t0), None);
        assert_eq!(s.poll_at(), Some(t1));
        assert_eq!(s.next_ready(t1 - 1), None);
        assert_eq!(s.next_ready(t1), Some(2));
        // Back-to-back charges accumulate from the previous deadline.
        s.charge(2, 1448, 10_000, t1);
        s.charge(2, 1448, 10_000, t1);
        assert_eq!(s.next_ns[2], t1 + 2 * 1_158_400);
        s.charge(2, 100, 0, 5);
        s.activate(2, 5);
        assert_eq!(s.next_ready(5), Some(2));
    }

    #[test]
    fn late_poll_rounds_do_not_lose_rate() {
        let mut s = TxScheduler::new(2);
        // 8 Mbit/s = 1 µs per byte: 1000 bytes cost 1 ms.
        s.charge(0, 1000, 8_000, 0);
        assert_eq!(s.next_ns[0], 1_000_000);
        // The next round runs 40 µs late: the flow keeps its schedule.
        s.charge(0, 1000, 8_000, 1_040_000);
        assert_eq!(s.next_ns[0], 2_000_000);
        // After a long idle time no burst larger than the credit builds up.
        s.charge(0, 1000, 8_000, 10_000_000);
        assert_eq!(s.next_ns[0], 10_000_000 - PACING_CREDIT_NS + 1_000_000);
    }

    #[test]
    fn timed_flows_come_out_in_deadline_order() {
        let mut s = TxScheduler::new(4);
        for (id, bytes) in [(0u32, 3000u32), (1, 1000), (2, 2000)] {
            s.charge(id, bytes, 8_000, 0); // 1 µs per byte
            s.activate(id, 0);
        }
        assert_eq!(s.next_ready(5_000_000), Some(1));
        assert_eq!(s.next_ready(5_000_000), Some(2));
        assert_eq!(s.next_ready(5_000_000), Some(0));
    }
}
