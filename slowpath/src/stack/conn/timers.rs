//! Connection timers: SYN and SYN-ACK retransmission with backoff, and the
//! periodic inspection of each installed flow (retransmission timeout,
//! tail-loss probe, zero-window persist probes, the FIN the app still owes
//! after `CLOSE`, the FIN_WAIT_2 bound, TIME_WAIT expiry).

use tas_engine::engine::ts_now;
use tas_engine::flow::{st, FlowKey, FlowState};
use tas_engine::flowtable::FlowId;

use super::{Conn, ConnectPhase, Phase};
use crate::stack::{tuple, FpCmd, Stack, StackIo, Timer, MS};

/// After CLOSE without the app's FIN request, how long before we request it.
/// Also how long after an app's exit its connections' fate (FIN or RST,
/// see `close`) is decided.
pub(super) const CLOSE_FIN_GRACE: u64 = 500 * MS;

/// Added to 2·SRTT for the probe timeout: Linux's `TCP_TIMEOUT_MIN` (2
/// jiffies at HZ=1000), room for the peer's ACK and for our inspection.
const PTO_SLACK: u64 = 2 * MS;

/// Added to the PTO when a single segment is in flight, for the peer's
/// delayed ACK (RFC 8985 §7.2 WCDelAckT; Linux adds `TCP_RTO_MIN`): the
/// probe then usually goes at the RTO, in its place.
const PTO_DELACK: u64 = 200 * MS;

/// RFC 8985 §7.2 probe timeout of a flow with data in flight, if it has an
/// RTT sample (without one the RTO comes first, as Linux's 1 s initial PTO).
fn pto(f: &FlowState) -> Option<u64> {
    if f.rtt_est == 0 {
        return None;
    }
    let mss = (f.mss as u32).saturating_sub(f.opt_len()).max(1);
    // (Not during recovery, where the request is RACK's timer: the peer
    // answers out-of-order data and a FIN at once.)
    let one_segment = f.tx_sent <= mss && f.st & st::TX_RECOVERY == 0;
    Some(2 * f.rtt_est as u64 * 1000 + PTO_SLACK + if one_segment { PTO_DELACK } else { 0 })
}

/// `base` doubled `n` times (saturating).
fn shifted(base: u64, n: u32) -> u64 {
    base.saturating_mul(1u64 << n.min(32))
}

/// How often an installed flow is inspected, for an RTO of `rto`.
pub(super) fn tick(rto: u64) -> u64 {
    (rto / 2).clamp(MS, 100 * MS)
}

impl Stack {
    /// The congestion-control loop saw data in flight (`f`): a flow last
    /// inspected while idle may have its next inspection up to 4 ticks
    /// away (400 ms), too late for the probe or RACK timer of what it sends
    /// now: brought forward to one PTO (the loop runs every few RTTs for a
    /// busy flow, so this costs one comparison per round).
    pub(in crate::stack) fn flow_sending(&mut self, now: u64, id: FlowId, f: &FlowState) {
        if f.tx_sent == 0 || !self.cfg.tlp {
            return;
        }
        let Some(p) = pto(f) else {
            return;
        };
        let at = now.saturating_add(p);
        if self.conns.get(&id).is_some_and(|c| c.next_check > at) {
            self.schedule_check(id, at);
        }
    }

    pub(super) fn schedule_check(&mut self, id: FlowId, at: u64) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.next_check = at;
            self.schedule(at, Timer::Flow(id));
        }
    }

    pub(super) fn rto_base(&self, c: &Conn, rtt_est_us: u32) -> u64 {
        let est = rtt_est_us as u64 * 3000;
        est.max(c.hs_rtt * 2)
            .max(self.cfg.rto_min_ns)
            .min(self.cfg.rto_max_ns.max(self.cfg.rto_min_ns))
    }

    fn backed_off(&self, base: u64, n: u32) -> u64 {
        shifted(base, n).min(self.cfg.rto_max_ns.max(base))
    }

    pub(in crate::stack) fn connect_timer(
        &mut self,
        now: u64,
        t: u64,
        key: FlowKey,
        io: &mut impl StackIo,
    ) {
        let Some(c) = self.connecting.get_mut(&key) else {
            return;
        };
        if c.deadline != t || c.phase != ConnectPhase::SynSent {
            return;
        }
        if c.retries >= self.cfg.syn_retries {
            self.stats.connect_timeouts += 1;
            self.connect_fail(&key, libc::ETIMEDOUT, io);
            return;
        }
        c.retries += 1;
        c.deadline = now.saturating_add(shifted(self.cfg.syn_rto_ns.max(1), c.retries));
        let c = *c;
        self.stats.syn_retransmits += 1;
        self.send_syn(now, &key, &c, io);
        self.schedule(c.deadline, Timer::Connect(tuple(&key)));
    }

    pub(in crate::stack) fn half_open_timer(
        &mut self,
        now: u64,
        t: u64,
        key: FlowKey,
        io: &mut impl StackIo,
    ) {
        let Some(h) = self.half_open.get_mut(&key) else {
            return;
        };
        if h.deadline != t {
            return;
        }
        if h.retries >= self.cfg.syn_retries {
            self.stats.half_open_timeouts += 1;
            self.drop_half_open(&key);
            return;
        }
        h.retries += 1;
        h.deadline = now.saturating_add(shifted(self.cfg.syn_rto_ns.max(1), h.retries));
        let h = *h;
        self.stats.synack_retransmits += 1;
        self.send_synack(&key, &h, ts_now(now), io);
        self.schedule(h.deadline, Timer::HalfOpen(tuple(&key)));
    }

    /// Periodic inspection of an installed flow.
    pub(in crate::stack) fn flow_timer(
        &mut self,
        now: u64,
        t: u64,
        id: FlowId,
        io: &mut impl StackIo,
    ) {
        let Some(c) = self.conns.get(&id) else {
            return;
        };
        if c.next_check != t {
            return;
        }
        match c.phase {
            Phase::Dead | Phase::Done => return,
            Phase::Open => {}
        }
        let key = c.key;
        let Some(f) = self.snapshot(id, &key) else {
            return;
        };
        // Catch up on FIN exceptions that did not reach us.
        if f.st & st::RX_FIN != 0 {
            self.fin_received(now, id, io);
        }
        if f.st & st::TX_FIN_ACKED != 0 {
            self.fin_acked(now, id, io);
        }
        let Some(c) = self.conns.get(&id) else {
            return;
        };
        if c.phase != Phase::Open {
            return;
        }
        let base = self.rto_base(c, f.rtt_est);
        let rto = self.backed_off(base, c.backoff);
        let persist = self.backed_off(base, c.persist_backoff);
        let (mut data_retries, fin_timeout) = (self.cfg.data_retries, self.cfg.fin_timeout_ns);
        let orphan_retries = self.cfg.orphan_retries;
        let tlp = self.cfg.tlp;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.orphan {
            data_retries = data_retries.min(orphan_retries);
            // An orphan with received data nobody will read: left unread
            // when the app exited (Linux resets at close: RFC 2525 §2.17),
            // or arrived after it (Linux's TCPAbortOnData). Decided after
            // the grace, so the app's last reads have reached the fast path.
            if now.saturating_sub(c.closed_at) >= CLOSE_FIN_GRACE && f.rx_avail < f.rx_len {
                if c.exit_close {
                    self.stats.abort_on_close += 1;
                } else {
                    self.stats.abort_on_data += 1;
                }
                self.stats.aborted += 1;
                self.send_flow_rst(now, &f, io);
                self.tcp_gone(id, None, io);
                return;
            }
        }
        let una = f.snd_una();
        let progressed = una != c.last_una;
        if progressed {
            c.last_una = una;
            c.backoff = 0;
            c.retries = 0;
            // Linux's tcp_ack: something got through, forget soft errors.
            c.soft_err = 0;
        }
        // Tail-loss probe state: the flow is quiet while neither SND.UNA
        // nor SND.NXT moves (no ACK progress, nothing new sent).
        if progressed || f.tx_next_seq != c.last_nxt {
            c.last_nxt = f.tx_next_seq;
            c.quiet_since = now;
            c.probed = false;
        }
        let mut next_probe = None;
        // The app closed: its FIN must follow (a CLOSE without it).
        let fin_req = f.st & (st::TX_FIN_REQ | st::TX_FIN_SENT | st::TX_FIN_ACKED) != 0;
        if c.app_closed && !fin_req && now.saturating_sub(c.closed_at) >= CLOSE_FIN_GRACE {
            if let Some(mut g) = self.table.lock(id) {
                if g.key() == key {
                    g.st |= st::TX_FIN_REQ;
                }
            }
            io.fastpath(FpCmd::Kick(id));
        }
        // FIN_WAIT_2 with a silent peer.
        if c.app_closed
            && c.fin_acked
            && !c.fin_rx
            && now.saturating_sub(c.fin_acked_at.max(c.closed_at)) >= fin_timeout
        {
            self.stats.fin_timeouts += 1;
            self.send_flow_rst(now, &f, io);
            self.tcp_gone(id, None, io);
            return;
        }
        if f.tx_sent > 0 {
            c.zw = false;
            // RFC 8985 §7.2: the probe is armed when there was no timeout
            // since the last progress, once per quiet state, a PTO after
            // the flow went quiet or at the RTO if that is earlier: then it
            // goes instead of the timeout (as Linux), and the RTO restarts
            // from it (§7.3). While fast recovery runs the same request is
            // RACK's reordering timer (§6.3): the fast path resends
            // retransmissions that were lost too, rather than waiting for
            // the RTO; like Linux's RACK timer it comes again every PTO
            // while recovery makes no progress, and the RTO still counts
            // from the last progress.
            let recovering = f.st & st::TX_RECOVERY != 0;
            let rto_due = now.saturating_sub(c.una_since) >= rto;
            let pto = pto(&f).filter(|_| tlp);
            let probe_at = pto.filter(|_| !c.probed && c.backoff == 0).map(|p| {
                let at = c.quiet_since.saturating_add(p);
                if recovering {
                    at
                } else {
                    at.min(c.una_since.saturating_add(rto))
                }
            });
            if !c.busy || progressed {
                c.busy = true;
                c.una_since = now;
            } else if probe_at.is_some_and(|at| now >= at) && !(recovering && rto_due) {
                if recovering {
                    c.quiet_since = now;
                } else {
                    c.probed = true;
                    c.una_since = now;
                }
                self.stats.tlp_probes += 1;
                io.fastpath(FpCmd::Probe(id));
            } else if rto_due {
                if c.retries >= data_retries {
                    // Linux's tcp_write_err: the soft error, if one came.
                    let err = if c.soft_err != 0 {
                        c.soft_err
                    } else {
                        libc::ETIMEDOUT
                    };
                    self.stats.data_timeouts += 1;
                    if c.orphan {
                        self.stats.orphan_timeouts += 1;
                    }
                    self.send_flow_rst(now, &f, io);
                    self.tcp_gone(id, Some(err), io);
                    return;
                }
                c.retries += 1;
                c.backoff += 1;
                c.una_since = now;
                c.cc.on_timeout();
                self.stats.rto_retransmits += 1;
                io.fastpath(FpCmd::Retransmit(id));
            } else if let Some(at) = probe_at {
                next_probe = Some(at);
            }
            // While data is in flight, look at least once per PTO, so a
            // quiet flow is noticed within one.
            if let Some(p) = pto {
                next_probe = Some(next_probe.unwrap_or(u64::MAX).min(now + p));
            }
        } else {
            c.busy = false;
            if f.tx_avail > 0 && f.rx_remote_avail == 0 {
                if !c.zw {
                    c.zw = true;
                    c.zw_since = now;
                    c.persist_backoff = 0;
                } else if now.saturating_sub(c.zw_since) >= persist {
                    if c.orphan && c.persist_backoff >= orphan_retries {
                        // Linux's tcp_probe_timer: an orphan whose peer
                        // keeps its window shut is given up.
                        self.stats.orphan_timeouts += 1;
                        self.send_flow_rst(now, &f, io);
                        self.tcp_gone(id, None, io);
                        return;
                    }
                    c.persist_backoff += 1;
                    c.zw_since = now;
                    self.stats.persist_probes += 1;
                    // One byte the peer already has: it must answer with an
                    // ACK carrying its current window.
                    self.send_flow_segment(now, &f, una.wrapping_sub(1), 0, &[0], io);
                }
            } else {
                c.zw = false;
            }
        }
        // Idle flows (nothing in flight, no window to probe) are looked at
        // less often; the congestion-control loop brings the inspection
        // forward when it sees data in flight again (`flow_sending`).
        let idle = f.tx_sent == 0 && self.conns.get(&id).is_some_and(|c| !c.zw && !c.app_closed);
        let next = if idle { 4 * tick(base) } else { tick(base) };
        let at = (now + next)
            .min(next_probe.unwrap_or(u64::MAX))
            .max(now + 1);
        self.schedule_check(id, at);
    }
}
