//! The per-flow congestion-control loop (the paper's §3.2).
//!
//! Every installed flow has a `Timer::Cc` entry in the stack's timer heap,
//! keyed by its next due time, so a round of the loop costs time in the
//! number of flows that are due, never in the number of flows. When a flow
//! is due, under its lock: its feedback counters (`cnt_ackb`, `cnt_ecnb`,
//! `cnt_frexmits`) are read and reset, `rtt_est`, `tx_sent` and `tx_avail`
//! are read, the retransmission timeouts the stack issued since the last
//! round are added, and the flow's [`FlowControl`] runs on the feedback
//! accumulated since its last applied update. The resulting [`Limit`] is
//! written to `tx_rate` (with `cfg::RATE`) or `tx_cwnd`, which the fast path
//! enforces from its next segment on. A flow whose window grew while data
//! waits is kicked, since the fast path only re-queues a window-blocked
//! flow on an ACK.
//! A round that finds data in flight also brings the flow's timer
//! inspection forward to one PTO if it was set further out (a flow last
//! inspected while idle waits up to 4 ticks, 400 ms, for it otherwise):
//! probes and RACK's timer in recovery then work from the first flight
//! after an idle spell.
//!
//! The next round is due one control interval later (`interval` × the
//! flow's RTT, within `min_interval` and `max_interval`); a controller that
//! defers (not enough feedback) may ask to wait longer, but never past
//! `max_interval` after its last applied update. Idle flows (nothing
//! acknowledged, nothing in flight or queued) are polled every
//! `max_interval`.
//!
//! Live changes: the flow's setting (its listening port's, else the global
//! one) is looked up at every round, so new parameters apply at the next
//! round; if the setting names another algorithm, the flow gets a new
//! controller built from its current limit, RTT and send rate.

use tas_engine::flow::{cfg as fcfg, st as fst, FlowState};
use tas_engine::flowtable::FlowId;

use tas_abi::{stats, CtlMsg, FlowStats};

use super::conn::Phase;
use super::conn::GROW_ROUND;
use super::{AppId, Conn, FlowSummary, FpCmd, Stack, StackIo, Timer};
use crate::cc::{AlgoSpec, CcConfig, CcError, Feedback, FlowControl, Limit, Start, Verdict};

/// Congestion-control state of one flow, kept with its connection.
#[derive(Debug)]
pub(super) struct ConnCc {
    ctl: Box<dyn FlowControl>,
    algo: &'static AlgoSpec,
    /// Listening port of a passive flow (selects a per-port setting).
    port: Option<u16>,
    /// Feedback since the last applied update.
    pending: Feedback,
    last_read: u64,
    last_applied: u64,
    /// When the next round is due (validates heap entries).
    pub(super) due: u64,
    /// Retransmission timeouts since the last round.
    timeouts: u32,
    /// The limit last written to the flow.
    limit: Limit,
    /// Send rate measured over the last applied update (kbit/s).
    send_rate_kbps: u64,
    rtt_us: u32,
    /// Mean deviation of `rtt_us` between rounds (RFC 6298's RTTVAR over
    /// the smoothed values we read; 0 until the first sample).
    rtt_var_us: u32,
    // Lifetime totals (for `tasctl flows`).
    bytes_out: u64,
    bytes_in: u64,
    ecn_bytes: u64,
    fast_retransmits: u64,
    rtos: u64,
    last_rx_seq: u32,
}

impl ConnCc {
    /// The stack issued a retransmission timeout for this flow.
    pub(super) fn on_timeout(&mut self) {
        self.timeouts = self.timeouts.saturating_add(1);
        self.rtos += 1;
    }
}

/// Writes a limit into the flow's state (line 0, slow-path owned).
fn apply_limit(f: &mut FlowState, l: Limit) {
    match l {
        Limit::Rate(0) | Limit::Window(0) => {
            f.cfg &= !fcfg::RATE;
            f.tx_rate = 0;
            f.tx_cwnd = 0;
        }
        Limit::Rate(r) => {
            f.cfg |= fcfg::RATE;
            f.tx_rate = r.min(u32::MAX as u64) as u32;
            f.tx_cwnd = 0;
        }
        Limit::Window(w) => {
            f.cfg &= !fcfg::RATE;
            f.tx_rate = 0;
            f.tx_cwnd = w;
        }
    }
}

/// Payload bytes per segment of a flow.
fn payload_mss(f: &FlowState) -> u32 {
    (f.mss as u32).saturating_sub(f.opt_len()).max(1)
}

/// Whether the fast path must be told: a blocked flow may send more now.
fn needs_kick(old: Limit, new: Limit) -> bool {
    match (old, new) {
        (Limit::Window(o), Limit::Window(n)) => o != 0 && (n == 0 || n > o),
        (Limit::Rate(_), Limit::Rate(_)) => false,
        _ => true,
    }
}

/// RFC 6298's RTTVAR update (β = 1/4) for a new RTT value `rtt` after
/// `prev`; the first value gives `rtt / 2`, as Linux starts.
fn rtt_var(var: u32, prev: u32, rtt: u32) -> u32 {
    if var == 0 || prev == 0 {
        return rtt / 2;
    }
    ((3 * var as u64 + prev.abs_diff(rtt) as u64) / 4) as u32
}

fn ip_port(ip: u32, port: u16) -> String {
    format!("{}:{}", std::net::Ipv4Addr::from(ip), port)
}

/// One line of `tasctl flows`: a flow with its congestion control.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FlowDetail {
    /// Flow id (None for listeners and connections being opened).
    pub id: Option<u32>,
    pub local: String,
    pub remote: String,
    pub state: String,
    pub app: u16,
    /// Algorithm of the flow.
    pub cc: Option<String>,
    pub slow_start: Option<bool>,
    /// Rate limit (kbit/s) of a rate-controlled flow; 0 = unlimited.
    pub rate_kbps: Option<u64>,
    /// Window (bytes) of a window-controlled flow.
    pub cwnd: Option<u32>,
    /// Smoothed RTT (µs).
    pub rtt_us: Option<u32>,
    /// Send rate measured at the last update (kbit/s).
    pub send_rate_kbps: Option<u64>,
    /// Payload received / acknowledged by the peer.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub in_flight: u32,
    /// Bytes the app queued that were not sent yet.
    pub queued: u32,
    pub fast_retransmits: u64,
    pub timeouts: u64,
    /// ECN negotiated.
    pub ecn: bool,
    /// Fraction of acknowledged bytes that carried ECE (lifetime).
    pub ecn_fraction: Option<f64>,
    /// DCTCP's α.
    pub alpha: Option<f64>,
    /// The flow's RX and TX ring sizes now (they grow: `conn/grow.rs`).
    #[serde(default)]
    pub rx_buf: u32,
    #[serde(default)]
    pub tx_buf: u32,
}

impl Stack {
    /// A controller for a flow about to be installed; writes its initial
    /// limit into `f`. `port`: the listening port of a passive flow.
    pub(super) fn cc_new_flow(&self, now: u64, port: Option<u16>, f: &mut FlowState) -> ConnCc {
        let setting = self.cfg.cc.setting_for(port);
        let start = Start {
            mss: payload_mss(f),
            rtt_us: f.rtt_est,
            ..Default::default()
        };
        let ctl = (setting.algo.new_flow)(&setting.params, &start);
        let limit = ctl.limit();
        apply_limit(f, limit);
        ConnCc {
            ctl,
            algo: setting.algo,
            port,
            pending: Feedback::default(),
            last_read: now,
            last_applied: now,
            due: now + setting.interval_ns(f.rtt_est),
            timeouts: 0,
            limit,
            send_rate_kbps: 0,
            rtt_us: f.rtt_est,
            rtt_var_us: f.rtt_est / 2,
            bytes_out: 0,
            bytes_in: 0,
            ecn_bytes: 0,
            fast_retransmits: 0,
            rtos: 0,
            last_rx_seq: f.rx_data_seq(),
        }
    }

    /// One round of the control loop for flow `id` (a `Timer::Cc` fired).
    pub(super) fn cc_timer(&mut self, now: u64, t: u64, id: FlowId, io: &mut impl StackIo) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.cc.due != t || c.phase != Phase::Open {
            return;
        }
        let key = c.key;
        let cc = &mut c.cc;
        let setting = self.cfg.cc.setting_for(cc.port);
        let Some(mut g) = self.table.lock(id) else {
            return;
        };
        if g.key() != key {
            return;
        }
        // Read and reset the feedback counters.
        let fresh = Feedback {
            elapsed_ns: now.saturating_sub(cc.last_read),
            acked: g.cnt_ackb as u64,
            ecn: g.cnt_ecnb as u64,
            fast_retransmits: g.cnt_frexmits as u32,
            timeouts: cc.timeouts,
            rtt_us: g.rtt_est,
            mss: payload_mss(&g),
            in_flight: g.tx_sent,
            queued: g.tx_avail,
            overdue: false,
            recovering: g.st & fst::TX_RECOVERY != 0,
        };
        g.cnt_ackb = 0;
        g.cnt_ecnb = 0;
        g.cnt_frexmits = 0;
        let rx = g.rx_data_seq();
        let receiving = rx != cc.last_rx_seq;
        cc.bytes_in += rx.wrapping_sub(cc.last_rx_seq) as u64;
        cc.last_rx_seq = rx;
        cc.timeouts = 0;
        cc.last_read = now;
        cc.bytes_out += fresh.acked;
        cc.ecn_bytes += fresh.ecn;
        cc.fast_retransmits += fresh.fast_retransmits as u64;
        if fresh.rtt_us > 0 {
            cc.rtt_var_us = rtt_var(cc.rtt_var_us, cc.rtt_us, fresh.rtt_us);
            cc.rtt_us = fresh.rtt_us;
        }
        cc.pending.merge(&fresh);
        let max_iv = setting.max_interval_ns();
        cc.pending.overdue = now.saturating_sub(cc.last_applied) >= max_iv;

        // The setting may name another algorithm now: hand over.
        if setting.algo != cc.algo {
            let start = Start {
                mss: fresh.mss,
                rtt_us: cc.rtt_us,
                current: Some(cc.limit),
                send_rate_kbps: cc.send_rate_kbps.max(cc.pending.send_rate_kbps()),
                alpha: cc.ctl.info().alpha,
            };
            cc.ctl = (setting.algo.new_flow)(&setting.params, &start);
            cc.algo = setting.algo;
            self.stats.cc_switches += 1;
        }

        let verdict = cc.ctl.update(&setting.params, &cc.pending);
        match verdict {
            Verdict::Apply => {
                self.stats.cc_updates += 1;
                cc.send_rate_kbps = cc.pending.send_rate_kbps();
                cc.pending = Feedback::default();
                cc.last_applied = now;
            }
            Verdict::Defer { .. } => self.stats.cc_deferred += 1,
        }
        // A deferring controller may still change its limit (additive
        // increase per interval).
        let new = cc.ctl.limit();
        let mut kick = false;
        if new != cc.limit {
            apply_limit(&mut g, new);
            kick = fresh.queued > 0 && needs_kick(cc.limit, new);
            cc.limit = new;
        }
        let snap = *g;
        drop(g);
        let tau = setting.interval_ns(cc.rtt_us);
        let min_iv = setting.min_interval_ns();
        // The RX ring may grow (`conn/grow.rs`): while data arrives, come
        // back within GROW_ROUND rather than at the idle poll period.
        let grow = self.rx_grow_round(now, id, receiving, io);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let cc = &mut c.cc;

        // When to look again.
        let idle = fresh.acked == 0 && fresh.in_flight == 0 && fresh.queued == 0;
        let next = if idle && grow && receiving {
            GROW_ROUND.min(max_iv)
        } else if idle {
            max_iv
        } else {
            match verdict {
                Verdict::Apply => tau,
                Verdict::Defer { wait_ns } => {
                    let until_overdue = (cc.last_applied + max_iv).saturating_sub(now);
                    tau.max(wait_ns).min(until_overdue).max(min_iv)
                }
            }
        };
        let due = now + next.max(1);
        cc.due = due;
        if kick {
            self.stats.cc_kicks += 1;
            io.fastpath(FpCmd::Kick(id));
        }
        self.schedule(due, Timer::Cc(id));
        // A flow that was idle at its last inspection is sending again.
        self.flow_sending(now, id, &snap);
    }

    /// The congestion control configuration in force.
    pub fn cc_config(&self) -> &CcConfig {
        &self.cfg.cc
    }

    /// Selects an algorithm (with parameters) globally or for flows accepted
    /// on a listening port; live flows follow at their next round.
    pub fn cc_set(
        &mut self,
        port: Option<u16>,
        algo: &str,
        kv: &[(String, String)],
    ) -> Result<(), CcError> {
        self.cfg.cc.set(port, algo, kv)
    }

    /// Drops a port's own setting; its flows follow the global one.
    pub fn cc_unset(&mut self, port: u16) -> Result<(), CcError> {
        self.cfg.cc.unset(port)
    }

    /// Installed flows by the algorithm that controls them now (a flow
    /// whose setting changed follows at its next round).
    pub fn cc_usage(&self) -> std::collections::BTreeMap<String, u64> {
        let mut m = std::collections::BTreeMap::new();
        for c in self.conns.values().filter(|c| c.phase == Phase::Open) {
            *m.entry(c.cc.algo.name.to_string()).or_default() += 1;
        }
        m
    }

    /// Every listener, connection being opened and flow, with congestion
    /// control details (`tasctl flows`).
    pub fn flow_details(&self) -> Vec<FlowDetail> {
        self.flows()
            .into_iter()
            .map(|s| self.flow_detail(&s))
            .collect()
    }

    fn flow_detail(&self, s: &FlowSummary) -> FlowDetail {
        let mut d = FlowDetail {
            id: s.flow,
            local: ip_port(s.local_ip, s.local_port),
            remote: ip_port(s.remote_ip, s.remote_port),
            state: s.state.to_string(),
            app: s.app,
            cc: None,
            slow_start: None,
            rate_kbps: None,
            cwnd: None,
            rtt_us: None,
            send_rate_kbps: None,
            bytes_in: 0,
            bytes_out: 0,
            in_flight: 0,
            queued: 0,
            fast_retransmits: 0,
            timeouts: 0,
            ecn: false,
            ecn_fraction: None,
            alpha: None,
            rx_buf: 0,
            tx_buf: 0,
        };
        let Some(id) = s.flow else {
            return d;
        };
        let Some(c) = self.conns.get(&id) else {
            return d;
        };
        (d.rx_buf, d.tx_buf) = c.ring_lens();
        let cc = &c.cc;
        let live = self.table.lock(id).filter(|g| g.key() == c.key).map(|g| *g);
        let (mut acked, mut ecn, mut rx, mut frx) = (0u64, 0u64, 0u64, 0u64);
        if let Some(f) = live.filter(|_| c.phase == Phase::Open) {
            acked = f.cnt_ackb as u64;
            ecn = f.cnt_ecnb as u64;
            frx = f.cnt_frexmits as u64;
            rx = f.rx_data_seq().wrapping_sub(cc.last_rx_seq) as u64;
            d.in_flight = f.tx_sent;
            d.queued = f.tx_avail;
            d.ecn = f.cfg & fcfg::ECN != 0;
            if f.rtt_est > 0 {
                d.rtt_us = Some(f.rtt_est);
            }
        }
        d.bytes_out = cc.bytes_out + acked;
        d.bytes_in = cc.bytes_in + rx;
        d.fast_retransmits = cc.fast_retransmits + frx;
        d.timeouts = cc.rtos;
        if d.rtt_us.is_none() && cc.rtt_us > 0 {
            d.rtt_us = Some(cc.rtt_us);
        }
        if c.phase == Phase::Open {
            let info = cc.ctl.info();
            d.cc = Some(cc.algo.name.to_string());
            d.slow_start = Some(info.slow_start);
            d.alpha = info.alpha;
            match cc.limit {
                Limit::Rate(r) => d.rate_kbps = Some(r),
                Limit::Window(w) => d.cwnd = Some(w),
            }
            d.send_rate_kbps = Some(cc.send_rate_kbps);
        }
        if d.bytes_out > 0 {
            d.ecn_fraction = Some((cc.ecn_bytes + ecn) as f64 / d.bytes_out as f64);
        }
        d
    }

    /// `STATS` from app `app`: the statistics of its flow `msg.flow` (what
    /// the app library reports as `TCP_INFO`), answered with `STATS_OK`, or
    /// `EBADF` for a flow the app does not hold. Read like `tasctl flows`
    /// reads them: one copy of the flow's state under its lock.
    pub(super) fn app_flow_stats(&mut self, app: AppId, msg: &CtlMsg, io: &mut impl StackIo) {
        let id = msg.flow;
        let st = match self.conns.get(&id) {
            Some(c) if c.app == app => self.flow_stats(c, id),
            _ => return self.reply_err(io, app, msg, libc::EBADF),
        };
        io.app_msg(app, &st.to_msg(msg.req, id));
    }

    fn flow_stats(&self, c: &Conn, id: FlowId) -> FlowStats {
        let cc = &c.cc;
        let live = self
            .table
            .lock(id)
            .filter(|g| g.key() == c.key)
            .map(|g| *g)
            .filter(|_| c.phase == Phase::Open);
        let rtt = live
            .map(|f| f.rtt_est)
            .filter(|&r| r > 0)
            .unwrap_or(cc.rtt_us);
        let mut s = FlowStats {
            rtt_us: rtt,
            rttvar_us: if cc.rtt_var_us > 0 {
                cc.rtt_var_us
            } else {
                rtt / 2
            },
            timeouts: cc.rtos.min(u32::MAX as u64) as u32,
            ..Default::default()
        };
        let (mut acked, mut rx, mut frx) = (0u64, 0u64, 0u64);
        if let Some(f) = live {
            acked = f.cnt_ackb as u64;
            frx = f.cnt_frexmits as u64;
            rx = f.rx_data_seq().wrapping_sub(cc.last_rx_seq) as u64;
            s.flags |= stats::F_OPEN;
            for (bit, flag) in [
                (fcfg::TS, stats::F_TS),
                (fcfg::SACK, stats::F_SACK),
                (fcfg::ECN, stats::F_ECN),
            ] {
                if f.cfg & bit != 0 {
                    s.flags |= flag;
                }
            }
            // Our shift is never 0 with window scaling on for rings above
            // 64 KiB, and both are 0 without it (RFC 7323 §2.2).
            if f.snd_wscale != 0 || f.rcv_wscale != 0 {
                s.flags |= stats::F_WSCALE;
            }
            s.snd_wscale = f.snd_wscale;
            s.rcv_wscale = f.rcv_wscale;
            s.snd_wnd = f.rx_remote_avail;
            s.rcv_wnd = f.rx_avail;
            s.in_flight = f.tx_sent;
            s.not_sent = f.tx_avail;
            if cc.ctl.info().slow_start {
                s.flags |= stats::F_SLOW_START;
            }
            let window = match cc.limit {
                // A rate-based controller has no window: rate × RTT is the
                // data it keeps in flight (10 segments until the first RTT
                // sample, Linux's initial window).
                Limit::Rate(r) if r > 0 => {
                    s.flags |= stats::F_RATE;
                    s.rate_kbps = r;
                    if rtt > 0 {
                        Limit::Rate(r).as_window(rtt, 0)
                    } else {
                        10 * payload_mss(&f) as u64
                    }
                }
                Limit::Window(w) if w > 0 => w as u64,
                // Unlimited: only the peer's window holds the flow back.
                _ => f.rx_remote_avail.max(f.tx_sent) as u64,
            };
            s.cwnd_bytes = window.min(u32::MAX as u64) as u32;
        }
        s.bytes_acked = cc.bytes_out + acked;
        s.bytes_received = cc.bytes_in + rx;
        s.retransmits = (cc.fast_retransmits + frx + cc.rtos).min(u32::MAX as u64) as u32;
        // The stack's RTO before backoff (3 RTTs within rto_min..rto_max).
        let rto_ns = (rtt as u64 * 3000)
            .max(self.cfg.rto_min_ns)
            .min(self.cfg.rto_max_ns.max(self.cfg.rto_min_ns));
        s.rto_us = (rto_ns / 1000).min(u32::MAX as u64) as u32;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::rtt_var;

    #[test]
    fn rtt_variation_starts_at_half_and_follows_deviations() {
        assert_eq!(rtt_var(0, 0, 100), 50);
        assert_eq!(rtt_var(50, 100, 100), 37);
        assert_eq!(rtt_var(40, 100, 180), 50);
        assert_eq!(rtt_var(40, 180, 100), 50);
        assert_eq!(rtt_var(u32::MAX, u32::MAX, 1), u32::MAX - 1);
    }
}
