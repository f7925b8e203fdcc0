//! TIME_WAIT without buffers. When we closed first and both FINs are done,
//! the flow leaves the fast path's table and the app's rings go back to its
//! region at once (if the app has closed; otherwise when it does): what
//! TIME_WAIT needs — the 4-tuple, both sequence numbers, the peer's last
//! timestamp, the next hop's MAC — is a copy of the flow's final state in a
//! slow-path table, for `time_wait_ns` (RFC 9293 §3.10.7.4, TIME-WAIT). A
//! segment for such a 4-tuple arrives as an unknown-flow exception and is
//! answered here:
//!
//! * a retransmitted FIN (or data) is acknowledged and the wait restarts
//!   (RFC 9293: "acknowledge it, and restart the 2 MSL timeout");
//! * a SYN with a sequence number above RCV.NXT, or a newer timestamp, is a
//!   new incarnation: the entry goes and the SYN is handled as any other
//!   (RFC 6191, RFC 1122 §4.2.2.13); an older SYN gets our ACK;
//! * an RST ends TIME_WAIT early (as Linux with `tcp_rfc1337=0`);
//! * a bare ACK is dropped.
//!
//! ACKs from TIME_WAIT are limited to one per entry per 100 ms, so a flood
//! aimed at a 4-tuple in TIME_WAIT cannot make us send at its rate.

use std::collections::VecDeque;

use tas_engine::flow::{cfg as fcfg, FlowKey, FlowState};
use tas_engine::flowtable::FlowId;
use tas_engine::seq;
use tas_engine::wire::tcp;

use super::Parsed;
use crate::stack::{Stack, StackIo};

/// Least time between two ACKs sent from one TIME_WAIT entry.
const ACK_GAP: u64 = 100_000_000;

/// One 4-tuple in TIME_WAIT.
#[derive(Debug, Clone, Copy)]
pub(in crate::stack) struct TwEntry {
    /// When TIME_WAIT ends.
    until: u64,
    /// The flow's last state (sequence numbers, TS.Recent, MAC, options).
    f: FlowState,
    /// When we last sent an ACK from this entry.
    last_ack: u64,
}

/// The TIME_WAIT table: entries by 4-tuple and their deadlines in the order
/// they were set (every entry lasts the same time, so the queue is sorted;
/// a restarted entry is queued again and its stale position skipped).
#[derive(Debug, Default)]
pub(in crate::stack) struct TimeWait {
    entries: std::collections::HashMap<FlowKey, TwEntry>,
    expiry: VecDeque<(u64, FlowKey)>,
}

impl TimeWait {
    pub(in crate::stack) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(in crate::stack) fn keys(&self) -> impl Iterator<Item = &FlowKey> {
        self.entries.keys()
    }

    /// Drops entries whose time is up; returns how many.
    pub(in crate::stack) fn expire(&mut self, now: u64) -> u64 {
        let mut n = 0;
        while let Some(&(t, k)) = self.expiry.front() {
            if t > now {
                break;
            }
            self.expiry.pop_front();
            if self.entries.get(&k).is_some_and(|e| e.until == t) {
                self.entries.remove(&k);
                n += 1;
            }
        }
        n
    }

    /// The earliest deadline (possibly of a restarted entry: early is fine).
    pub(in crate::stack) fn next_expiry(&self) -> Option<u64> {
        self.expiry.front().map(|&(t, _)| t)
    }

    fn insert(&mut self, key: FlowKey, e: TwEntry) {
        self.expiry.push_back((e.until, key));
        self.entries.insert(key, e);
    }
}

impl Stack {
    /// We closed first and both FINs are done. If the app has closed the
    /// connection, TIME_WAIT starts now; otherwise the flow stays installed
    /// (the app may still read) until its CLOSE.
    pub(super) fn enter_time_wait(&mut self, now: u64, id: FlowId, io: &mut impl StackIo) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.time_wait = true;
        if c.app_closed {
            self.start_time_wait(now, id, io);
        } else {
            c.phase = super::Phase::Done;
        }
    }

    /// Moves the 4-tuple to TIME_WAIT, takes the flow out of the fast path
    /// and gives its rings back (`RELEASED`).
    pub(super) fn start_time_wait(&mut self, now: u64, id: FlowId, io: &mut impl StackIo) {
        let Some(c) = self.conns.get(&id) else {
            return;
        };
        let key = c.key;
        if let Some(f) = self.snapshot(id, &key) {
            let until = now.saturating_add(self.cfg.time_wait_ns);
            self.lingering.remove(&key);
            self.time_wait.insert(
                key,
                TwEntry {
                    until,
                    f,
                    last_ack: 0,
                },
            );
            self.stats.time_wait_entered += 1;
        }
        self.release(id, io);
    }

    /// A segment for a 4-tuple in TIME_WAIT. True when it was handled;
    /// false when TIME_WAIT has ended for it and the segment must be
    /// handled as if the 4-tuple were unknown (a new incarnation's SYN).
    pub(super) fn time_wait_segment(
        &mut self,
        now: u64,
        p: &Parsed<'_>,
        io: &mut impl StackIo,
    ) -> bool {
        let Some(e) = self.time_wait.entries.get(&p.key).copied() else {
            return false;
        };
        let seg = &p.seg;
        let flags = seg.flags();
        if flags & tcp::RST != 0 {
            self.time_wait.entries.remove(&p.key);
            self.stats.time_wait_killed += 1;
            return true;
        }
        if flags & tcp::SYN != 0 {
            let newer_ts = e.f.cfg & fcfg::TS != 0
                && seg
                    .timestamp()
                    .is_some_and(|(val, _)| seq::gt(val, e.f.tx_next_ts));
            let newer = seq::gt(seg.seq(), e.f.rx_next_seq) || newer_ts;
            if flags & tcp::ACK == 0 && newer {
                self.time_wait.entries.remove(&p.key);
                self.stats.time_wait_reused += 1;
                return false;
            }
            // RFC 5961 §4.2: any other SYN (an old one, a SYN|ACK) gets a
            // challenge ACK from our final state and changes nothing.
            self.stats.syn_challenged += 1;
            let _ = self.time_wait_ack(now, &p.key, e, io);
            return true;
        }
        let fin = flags & tcp::FIN != 0;
        if fin || !seg.payload().is_empty() {
            // The wait restarts only with an ACK actually sent, so a flood
            // of FINs for one 4-tuple queues at most one expiry per 100 ms.
            if self.time_wait_ack(now, &p.key, e, io) && fin {
                let mut e2 = self.time_wait.entries[&p.key];
                e2.until = now.saturating_add(self.cfg.time_wait_ns);
                self.time_wait.insert(p.key, e2);
            }
            return true;
        }
        self.stats.late_segments += 1;
        true
    }

    /// ACKs from TIME_WAIT's final state unless one went out less than
    /// [`ACK_GAP`] ago; true when it was sent.
    fn time_wait_ack(
        &mut self,
        now: u64,
        key: &FlowKey,
        e: TwEntry,
        io: &mut impl StackIo,
    ) -> bool {
        if e.last_ack != 0 && now.saturating_sub(e.last_ack) < ACK_GAP {
            self.stats.time_wait_acks_limited += 1;
            return false;
        }
        if let Some(x) = self.time_wait.entries.get_mut(key) {
            x.last_ack = now;
        }
        self.stats.time_wait_acks += 1;
        self.send_flow_segment(now, &e.f, e.f.tx_next_seq, 0, &[], io);
        true
    }
}
