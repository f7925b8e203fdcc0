//! Passive open: a listener's SYN becomes a half-open connection
//! (SYN_RCVD, not in the flow table), SYN-ACKs are sent and resent, and the
//! final ACK installs the flow and announces it to the app (`ACCEPTED`),
//! within the listener's backlog and the half-open limits.

use tas_abi::{ctl, CtlMsg};
use tas_engine::engine::ts_now;
use tas_engine::flow::{cfg as fcfg, FlowKey, FlowState};
use tas_engine::seq;
use tas_engine::wire::tcp;

use super::{flow_info, wscale_for, HalfOpen, Parsed, PeerOpts};
use crate::stack::{tuple, FpCmd, Stack, StackIo, Timer};

impl Stack {
    pub(super) fn listen_syn(&mut self, now: u64, p: &Parsed<'_>, io: &mut impl StackIo) {
        self.stats.syn_rx += 1;
        if !self.unicast_ok(p.key.remote_ip) || p.mac[0] & 1 != 0 {
            self.stats.dropped_other += 1;
            return;
        }
        let Ok(opts) = p.seg.parse_options() else {
            self.stats.dropped_malformed += 1;
            return;
        };
        let Some(lids) = self.ports.get(&p.key.local_port) else {
            return;
        };
        if lids.is_empty() {
            return;
        }
        let lid = lids[p.key.hash() as usize % lids.len()];
        let Some(lst) = self.listeners.get(&lid) else {
            return;
        };
        if lst.pending >= lst.backlog || self.app_throttled(lst.app) {
            self.stats.syn_dropped_backlog += 1;
            return;
        }
        if lst.half_open as u64 >= (lst.backlog as u64 * 2).max(64)
            || self.half_open.len() >= self.cfg.max_half_open as usize
        {
            self.stats.syn_dropped_overflow += 1;
            return;
        }
        let flags = p.seg.flags();
        let ecn = self.cfg.ecn && flags & (tcp::ECE | tcp::CWR) == (tcp::ECE | tcp::CWR);
        let h = HalfOpen {
            listener: lid,
            app: lst.app,
            irs: p.seg.seq(),
            iss: self.isn(&p.key, now),
            peer: PeerOpts::from_options(&opts, ecn),
            mac: p.mac,
            our_ws: wscale_for(lst.rx_size),
            rx_size: lst.rx_size,
            tx_size: lst.tx_size,
            first_sent: now,
            retries: 0,
            deadline: now.saturating_add(self.cfg.syn_rto_ns.max(1)),
        };
        if let Some(l) = self.listeners.get_mut(&lid) {
            l.half_open += 1;
        }
        self.send_synack(now, &p.key, &h, io);
        self.half_open.insert(p.key, h);
        self.schedule(h.deadline, Timer::HalfOpen(tuple(&p.key)));
    }

    pub(super) fn send_synack(
        &mut self,
        now: u64,
        key: &FlowKey,
        h: &HalfOpen,
        io: &mut impl StackIo,
    ) {
        let options = tcp::TcpOptions {
            mss: Some(self.our_mss()),
            wscale: h.peer.ws.map(|_| h.our_ws),
            sack_permitted: h.peer.sack,
            timestamp: h.peer.ts.map(|tsv| (ts_now(now), tsv)),
            ..Default::default()
        };
        let t = tcp::TcpRepr {
            src_port: key.local_port,
            dst_port: key.remote_port,
            seq: h.iss,
            ack: h.irs.wrapping_add(1),
            flags: tcp::SYN | tcp::ACK | if h.peer.ecn { tcp::ECE } else { 0 },
            window: h.rx_size.min(u16::MAX as u32) as u16,
            options,
        };
        self.stats.synack_sent += 1;
        self.send_tcp(io, h.mac, key, &t, &[]);
    }

    pub(super) fn drop_half_open(&mut self, key: &FlowKey) -> Option<HalfOpen> {
        let h = self.half_open.remove(key)?;
        if let Some(l) = self.listeners.get_mut(&h.listener) {
            l.half_open = l.half_open.saturating_sub(1);
        }
        Some(h)
    }

    pub(super) fn syn_rcvd_segment(
        &mut self,
        now: u64,
        p: &Parsed<'_>,
        frame: &[u8],
        io: &mut impl StackIo,
    ) {
        let Some(h) = self.half_open.get(&p.key).copied() else {
            return;
        };
        let flags = p.seg.flags();
        if flags & tcp::RST != 0 {
            if p.seg.seq() == h.irs.wrapping_add(1) {
                self.stats.rst_rx += 1;
                self.drop_half_open(&p.key);
            } else {
                self.stats.rst_ignored += 1;
            }
            return;
        }
        if flags & tcp::SYN != 0 {
            if flags & tcp::ACK != 0 {
                self.send_rst_reply(p.mac, &p.key, &p.seg, io);
            } else if p.seg.seq() == h.irs {
                // Our SYN-ACK was lost (or theirs is a duplicate).
                self.stats.synack_retransmits += 1;
                self.send_synack(now, &p.key, &h, io);
            } else {
                // A new incarnation: forget the old attempt.
                self.drop_half_open(&p.key);
                if self.ports.contains_key(&p.key.local_port) {
                    self.listen_syn(now, p, io);
                }
            }
            return;
        }
        if flags & tcp::ACK == 0 {
            self.stats.dropped_unusual_flags += 1;
            return;
        }
        if p.seg.ack() != h.iss.wrapping_add(1) {
            self.send_rst_reply(p.mac, &p.key, &p.seg, io);
            return;
        }
        let lo = h.irs.wrapping_add(1);
        if !seq::in_range(p.seg.seq(), lo, lo.wrapping_add(h.rx_size.max(1))) {
            self.stats.dropped_other += 1;
            return;
        }
        self.complete_passive(now, p, &h, frame, io);
    }

    fn complete_passive(
        &mut self,
        now: u64,
        p: &Parsed<'_>,
        h: &HalfOpen,
        frame: &[u8],
        io: &mut impl StackIo,
    ) {
        let key = p.key;
        let Some(lst) = self.listeners.get(&h.listener).cloned() else {
            self.drop_half_open(&key);
            self.send_rst_reply(p.mac, &key, &p.seg, io);
            return;
        };
        if lst.pending >= lst.backlog {
            // Linux: drop the ACK, keep SYN_RCVD; the SYN-ACK timer retries.
            self.stats.accept_overflow += 1;
            return;
        }
        let Some((rx, tx)) = self.alloc_rings(h.app, h.rx_size, h.tx_size, io) else {
            self.drop_half_open(&key);
            self.send_rst_reply(p.mac, &key, &p.seg, io);
            return;
        };
        let peer = h.peer;
        let (snd_ws, rcv_ws) = match peer.ws {
            Some(ws) => (ws, h.our_ws),
            None => (0, 0),
        };
        let mut cfg = 0;
        if peer.ts.is_some() {
            cfg |= fcfg::TS;
        }
        if peer.sack {
            cfg |= fcfg::SACK;
        }
        if peer.ecn {
            cfg |= fcfg::ECN;
        }
        let tx_next_ts = match peer.ts {
            Some(syn_ts) => p.seg.timestamp().map(|t| t.0).unwrap_or(syn_ts),
            None => 0,
        };
        let hs_rtt = if h.retries == 0 {
            now.saturating_sub(h.first_sent)
        } else {
            0
        };
        let f = FlowState {
            opaque: lst.opaque,
            local_ip: key.local_ip,
            remote_ip: key.remote_ip,
            local_port: key.local_port,
            remote_port: key.remote_port,
            remote_mac: h.mac,
            context: h.app,
            mem: h.app,
            group: self.rx_lane,
            cfg,
            mss: peer.mss.min(self.our_mss()),
            snd_wscale: snd_ws,
            rcv_wscale: rcv_ws,
            rx_base: rx.base,
            rx_len: rx.len,
            tx_base: tx.base,
            tx_len: tx.len,
            rx_avail: rx.len,
            rx_next_seq: h.irs.wrapping_add(1),
            rx_remote_avail: (p.seg.window() as u32) << snd_ws,
            tx_next_seq: h.iss.wrapping_add(1),
            tx_next_ts,
            rtt_est: if hs_rtt > 0 {
                (hs_rtt / 1000).max(1) as u32
            } else {
                0
            },
            ..Default::default()
        };
        let mut f = f;
        let cc = self.cc_new_flow(now, Some(lst.port), &mut f);
        let next_hop = self.next_hop(key.remote_ip);
        let Some(id) = self.install(now, f, h.app, rx, tx, next_hop, hs_rtt, cc) else {
            Self::free_rings(h.app, rx, tx, io);
            self.drop_half_open(&key);
            self.send_rst_reply(p.mac, &key, &p.seg, io);
            return;
        };
        self.drop_half_open(&key);
        if let Some(l) = self.listeners.get_mut(&h.listener) {
            l.pending += 1;
        }
        self.stats.accepted += 1;
        let m = CtlMsg {
            kind: ctl::ACCEPTED,
            listener: h.listener,
            flow: id,
            info: flow_info(id, &f),
            ..Default::default()
        };
        io.app_msg(h.app, &m);
        if !p.seg.payload().is_empty() || p.seg.flags() & tcp::FIN != 0 {
            self.stats.reinjected += 1;
            io.fastpath(FpCmd::Rx(frame.to_vec()));
        }
    }
}
