//! Frames the fast path hands up, dispatched by connection state: segments
//! without an installed flow (to a pending open, a listener, a SYN cookie's
//! final ACK, a recently closed 4-tuple, or answered with RST), and RST,
//! SYN and FIN exceptions on installed flows (RFC 5961 checks, TIME_WAIT
//! reuse, close progress).
//!
//! The fast path hands over every RST and SYN of an installed flow without
//! looking at its sequence number, so RFC 5961 §3 and §4 are enforced here
//! alone; challenge ACKs are rate-limited in `segment` (§7).

use tas_engine::flow::{FlowKey, FlowState};
use tas_engine::flowtable::FlowId;
use tas_engine::seq;
use tas_engine::wire::tcp;

use super::{parse, Parsed, Phase};
use crate::stack::{FpCmd, Stack, StackIo};

/// Why an exception frame matched no installed connection.
enum Miss {
    Malformed,
    NoConn,
}

impl Stack {
    /// A TCP segment for which the fast path has no flow.
    pub(in crate::stack) fn on_no_flow(&mut self, now: u64, frame: &[u8], io: &mut impl StackIo) {
        let Some(p) = parse(frame) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        if self.cfg.local_ip == 0 || p.key.local_ip != self.cfg.local_ip {
            self.stats.dropped_not_ours += 1;
            return;
        }
        // Raced the installation of its flow: back to the fast path.
        if self.table.lookup(&p.key).is_some() {
            self.stats.reinjected += 1;
            io.fastpath(FpCmd::Rx(frame.to_vec()));
            return;
        }
        if self.connecting.contains_key(&p.key) {
            return self.syn_sent_segment(now, &p, io);
        }
        if self.half_open.contains_key(&p.key) {
            return self.syn_rcvd_segment(now, &p, frame, io);
        }
        if self.time_wait_segment(now, &p, io) {
            return;
        }
        let flags = p.seg.flags();
        if let Some(&until) = self.lingering.get(&p.key) {
            if now < until && flags & (tcp::SYN | tcp::ACK) != tcp::SYN {
                self.stats.late_segments += 1;
                return;
            }
            self.lingering.remove(&p.key);
        }
        if flags & tcp::RST != 0 {
            self.stats.rst_ignored += 1;
            return;
        }
        if flags & tcp::SYN != 0
            && flags & (tcp::ACK | tcp::FIN) == 0
            && self.ports.contains_key(&p.key.local_port)
        {
            return self.listen_syn(now, &p, io);
        }
        // An ACK to a listening port: the final ACK of a SYN cookie?
        if flags & (tcp::SYN | tcp::ACK) == tcp::ACK
            && self.ports.contains_key(&p.key.local_port)
            && self.cookie_ack(now, &p, frame, io)
        {
            return;
        }
        if let Some((lo, hi)) = self.cfg.shared_ports {
            let port = p.key.local_port;
            if !(lo..=hi).contains(&port) && !self.ports.contains_key(&port) {
                // The kernel's port: its stack answers (shared mode over
                // AF_PACKET sees every frame).
                self.stats.dropped_not_ours += 1;
                return;
            }
        }
        self.send_rst_reply(p.mac, &p.key, &p.seg, io);
    }

    /// The frame, connection and flow state an exception on an installed
    /// flow refers to (the frame must parse and match the flow's 4-tuple).
    fn established<'f>(
        &self,
        flow: Option<FlowId>,
        frame: &'f [u8],
    ) -> Result<(Parsed<'f>, FlowId, FlowState), Miss> {
        let p = parse(frame).ok_or(Miss::Malformed)?;
        let id = self.conn_for(flow, &p.key).ok_or(Miss::NoConn)?;
        let f = self.snapshot(id, &p.key).ok_or(Miss::NoConn)?;
        Ok((p, id, f))
    }

    /// The conn record for an exception's flow id, checked against the
    /// frame's 4-tuple (the id may be stale by the time we see it).
    fn conn_for(&self, flow: Option<FlowId>, key: &FlowKey) -> Option<FlowId> {
        let id = flow?;
        let c = self.conns.get(&id)?;
        (c.key == *key && c.phase != Phase::Dead).then_some(id)
    }

    pub(in crate::stack) fn on_flow_rst(
        &mut self,
        now: u64,
        flow: Option<FlowId>,
        frame: &[u8],
        io: &mut impl StackIo,
    ) {
        let (p, id, f) = match self.established(flow, frame) {
            Ok(x) => x,
            Err(Miss::Malformed) => return self.stats.dropped_malformed += 1,
            Err(Miss::NoConn) => return self.stats.rst_ignored += 1,
        };
        // RFC 5961 §3.2 (RFC 9293 §3.10.7.4, "first"): the receive window
        // is [RCV.NXT, RCV.NXT + RCV.WND); with a zero window only RCV.NXT
        // itself. The RST bit is checked before SYN, so RST|SYN lands here.
        let rcv_nxt = f.rx_next_seq;
        let sq = p.seg.seq();
        if sq == rcv_nxt {
            // Exactly RCV.NXT: reset the connection.
            self.stats.rst_rx += 1;
            let open = self.conns.get(&id).map(|c| c.phase) == Some(Phase::Open);
            self.tcp_gone(id, open.then_some(libc::ECONNRESET), io);
        } else if seq::in_range(sq, rcv_nxt, rcv_nxt.wrapping_add(f.rx_avail.max(1))) {
            // In the window but not exact: a blind attacker's guess, or a
            // peer that lost state; only a challenge ACK, which makes a real
            // peer answer with an RST at exactly RCV.NXT.
            self.stats.rst_challenged += 1;
            self.challenge_ack(now, &f, io);
        } else {
            // Outside the window: drop silently.
            self.stats.rst_out_of_window += 1;
        }
    }

    pub(in crate::stack) fn on_flow_syn(
        &mut self,
        now: u64,
        flow: Option<FlowId>,
        frame: &[u8],
        io: &mut impl StackIo,
    ) {
        let (p, id, f) = match self.established(flow, frame) {
            Ok(x) => x,
            Err(Miss::Malformed) => return self.stats.dropped_malformed += 1,
            Err(Miss::NoConn) => return self.stats.dropped_other += 1,
        };
        let _ = (p, id);
        // (TIME_WAIT is no longer an installed flow: a new incarnation's
        // SYN reaches `on_no_flow`, see timewait.rs.)
        // RFC 5961 §4.2 (RFC 9293 §3.10.7.4, "fourth"): a SYN on a
        // synchronized connection, whatever its sequence number, gets a
        // challenge ACK and never resets the connection. A peer that really
        // restarted answers the ACK with an RST at RCV.NXT.
        self.stats.syn_challenged += 1;
        self.challenge_ack(now, &f, io);
    }

    pub(in crate::stack) fn on_fin_received_exc(
        &mut self,
        now: u64,
        flow: Option<FlowId>,
        frame: &[u8],
        io: &mut impl StackIo,
    ) {
        let Some(p) = parse(frame) else {
            return;
        };
        if let Some(id) = self.conn_for(flow, &p.key) {
            self.fin_received(now, id, io);
        }
    }

    pub(in crate::stack) fn on_fin_acked_exc(
        &mut self,
        now: u64,
        flow: Option<FlowId>,
        frame: &[u8],
        io: &mut impl StackIo,
    ) {
        let Some(p) = parse(frame) else {
            return;
        };
        if let Some(id) = self.conn_for(flow, &p.key) {
            self.fin_acked(now, id, io);
        }
    }
}
