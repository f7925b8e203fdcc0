//! Active open after the app's `CONNECT` was accepted: waiting for the next
//! hop's MAC, SYN_SENT, the SYN-ACK that installs the flow (`CONNECTED`),
//! and the failures that end an open with `RESULT` (refused, unreachable);
//! also pointing flows and opens at a next hop whose MAC changed.

use tas_abi::{ctl, CtlMsg};
use tas_engine::engine::ts_now;
use tas_engine::flow::{cfg as fcfg, FlowKey, FlowState};
use tas_engine::wire::tcp;

use super::{flow_info, ConnectPhase, Connecting, Parsed, PeerOpts, Phase};
use crate::stack::{tuple, Stack, StackIo, Timer};

impl Stack {
    pub(super) fn syn_sent_segment(&mut self, now: u64, p: &Parsed<'_>, io: &mut impl StackIo) {
        let Some(c) = self.connecting.get(&p.key).copied() else {
            return;
        };
        let flags = p.seg.flags();
        if c.phase != ConnectPhase::SynSent {
            self.send_rst_reply(p.mac, &p.key, &p.seg, io);
            return;
        }
        if flags & tcp::ACK != 0 && p.seg.ack() != c.iss.wrapping_add(1) {
            self.send_rst_reply(p.mac, &p.key, &p.seg, io);
            return;
        }
        if flags & tcp::RST != 0 {
            if flags & tcp::ACK != 0 {
                self.stats.rst_rx += 1;
                self.stats.connect_refused += 1;
                self.connect_fail(&p.key, libc::ECONNREFUSED, io);
            } else {
                self.stats.rst_ignored += 1;
            }
            return;
        }
        if flags & (tcp::SYN | tcp::ACK) != (tcp::SYN | tcp::ACK) {
            // Simultaneous open (SYN without ACK) is not supported.
            self.stats.dropped_other += 1;
            return;
        }
        let Ok(opts) = p.seg.parse_options() else {
            self.stats.dropped_malformed += 1;
            return;
        };
        let ecn = self.cfg.ecn && flags & (tcp::ECE | tcp::CWR) == tcp::ECE;
        let peer = PeerOpts::from_options(&opts, ecn);
        let (snd_ws, rcv_ws) = match peer.ws {
            Some(ws) => (ws, c.our_ws),
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
        let hs_rtt = if c.retries == 0 {
            now.saturating_sub(c.first_sent)
        } else {
            0
        };
        let key = p.key;
        let f = FlowState {
            opaque: c.opaque,
            local_ip: key.local_ip,
            remote_ip: key.remote_ip,
            local_port: key.local_port,
            remote_port: key.remote_port,
            remote_mac: c.mac,
            context: c.app,
            mem: io.mem_of(c.app),
            group: self.rx_lane,
            cfg,
            mss: peer.mss.min(self.path_mss(now, key.remote_ip)),
            snd_wscale: snd_ws,
            rcv_wscale: rcv_ws,
            rx_base: c.rx.base,
            rx_len: c.rx.len,
            tx_base: c.tx.base,
            tx_len: c.tx.len,
            rx_avail: c.rx.len,
            rx_next_seq: p.seg.seq().wrapping_add(1),
            // The window of a SYN segment is never scaled.
            rx_remote_avail: p.seg.window() as u32,
            tx_next_seq: c.iss.wrapping_add(1),
            tx_next_ts: peer.ts.unwrap_or(0),
            rtt_est: if hs_rtt > 0 {
                (hs_rtt / 1000).max(1) as u32
            } else {
                0
            },
            ..Default::default()
        };
        self.connecting.remove(&key);
        let mut f = f;
        let cc = self.cc_new_flow(now, None, &mut f);
        let Some(id) = self.install(now, f, c.app, c.rx, c.tx, Some(c.next_hop), hs_rtt, cc) else {
            self.send_flow_rst(now, &f, io);
            Self::free_rings(c.app, c.rx, c.tx, io);
            let m = CtlMsg {
                kind: ctl::RESULT,
                req: c.req,
                err: libc::ENOBUFS,
                ..Default::default()
            };
            io.app_msg(c.app, &m);
            return;
        };
        self.set_ring_max(id, c.rx_max, c.tx_max);
        // Third segment of the handshake.
        self.send_flow_segment(now, &f, f.tx_next_seq, 0, &[], io);
        self.stats.connected += 1;
        let m = CtlMsg {
            kind: ctl::CONNECTED,
            req: c.req,
            flow: id,
            info: flow_info(id, &f),
            ..Default::default()
        };
        io.app_msg(c.app, &m);
    }

    /// Ends an active open with an error for the app.
    pub(super) fn connect_fail(&mut self, key: &FlowKey, err: i32, io: &mut impl StackIo) {
        let Some(c) = self.connecting.remove(key) else {
            return;
        };
        Self::free_rings(c.app, c.rx, c.tx, io);
        let m = CtlMsg {
            kind: ctl::RESULT,
            req: c.req,
            err,
            ..Default::default()
        };
        io.app_msg(c.app, &m);
    }

    pub(super) fn send_syn(
        &mut self,
        now: u64,
        key: &FlowKey,
        c: &Connecting,
        io: &mut impl StackIo,
    ) {
        let options = tcp::TcpOptions {
            mss: Some(self.our_mss()),
            wscale: Some(c.our_ws),
            sack_permitted: true,
            timestamp: Some((ts_now(now), 0)),
            ..Default::default()
        };
        let t = tcp::TcpRepr {
            src_port: key.local_port,
            dst_port: key.remote_port,
            seq: c.iss,
            ack: 0,
            flags: tcp::SYN | if self.cfg.ecn { tcp::ECE | tcp::CWR } else { 0 },
            window: c.rx.len.min(u16::MAX as u32) as u16,
            options,
        };
        self.stats.syn_sent += 1;
        self.send_tcp(io, c.mac, key, &t, &[]);
    }

    pub(in crate::stack) fn connect_arp_resolved(
        &mut self,
        now: u64,
        key: FlowKey,
        mac: [u8; 6],
        io: &mut impl StackIo,
    ) {
        let Some(c) = self.connecting.get_mut(&key) else {
            return;
        };
        if c.phase != ConnectPhase::Arp {
            return;
        }
        c.phase = ConnectPhase::SynSent;
        c.mac = mac;
        c.first_sent = now;
        c.deadline = now.saturating_add(self.cfg.syn_rto_ns.max(1));
        let c = *c;
        self.send_syn(now, &key, &c, io);
        self.schedule(c.deadline, Timer::Connect(tuple(&key)));
    }

    pub(in crate::stack) fn connect_arp_failed(&mut self, key: FlowKey, io: &mut impl StackIo) {
        if self.connecting.get(&key).map(|c| c.phase) == Some(ConnectPhase::Arp) {
            self.stats.connect_unreachable += 1;
            self.connect_fail(&key, libc::EHOSTUNREACH, io);
        }
    }

    /// A next hop's MAC changed: point flows and pending opens at it.
    pub(in crate::stack) fn update_next_hop_mac(&mut self, ip: u32, mac: [u8; 6]) {
        for (id, c) in self.conns.iter() {
            if c.next_hop == Some(ip) && c.phase != Phase::Dead {
                if let Some(mut g) = self.table.lock(*id) {
                    if g.key() == c.key {
                        g.remote_mac = mac;
                    }
                }
            }
        }
        for c in self.connecting.values_mut() {
            if c.next_hop == ip && c.phase == ConnectPhase::SynSent {
                c.mac = mac;
            }
        }
    }
}
