//! The TCP segments connection control sends itself: any segment from a
//! header and payload, a segment of an installed flow built from its state,
//! RSTs (for an installed flow, and in answer to a segment that has no
//! connection), and rate-limited challenge ACKs (RFC 5961). Also the MSS we
//! announce.

use tas_engine::engine::ts_now;
use tas_engine::flow::{cfg as fcfg, FlowKey, FlowState};
use tas_engine::wire::{frame, tcp};

use super::MIN_PEER_MSS;
use crate::stack::{Stack, StackIo, CHALLENGE_BURST, CHALLENGE_RATE, SEC};

/// IPv4 TTL of everything we send.
const TTL: u8 = 64;

impl Stack {
    pub(super) fn our_mss(&self) -> u16 {
        self.cfg.mtu.saturating_sub(40).max(MIN_PEER_MSS)
    }

    pub(super) fn send_tcp(
        &mut self,
        io: &mut impl StackIo,
        dst_mac: [u8; 6],
        key: &FlowKey,
        t: &tcp::TcpRepr,
        payload: &[u8],
    ) {
        let mut buf = [0u8; 160];
        let h = frame::FrameHdr {
            src_mac: self.cfg.local_mac,
            dst_mac,
            src_ip: key.local_ip,
            dst_ip: key.remote_ip,
            ttl: TTL,
            ecn: 0,
            ident: self.next_ident(),
        };
        if let Ok(n) = frame::tcp_frame(&mut buf, &h, t, payload) {
            // Pad to the Ethernet minimum (the IP length excludes padding).
            io.send_frame(&buf[..n.max(60)]);
        }
    }

    /// A segment of an installed flow built from its state: ACK with our
    /// window and timestamps (RST: no options, zero window).
    pub(super) fn send_flow_segment(
        &mut self,
        now: u64,
        f: &FlowState,
        seq_no: u32,
        flags: u8,
        payload: &[u8],
        io: &mut impl StackIo,
    ) {
        let rst = flags & tcp::RST != 0;
        let mut options = tcp::TcpOptions::default();
        if f.cfg & fcfg::TS != 0 && !rst {
            options.timestamp = Some((ts_now(now), f.tx_next_ts));
        }
        let window = if rst {
            0
        } else {
            (f.rx_avail >> f.rcv_wscale).min(u16::MAX as u32) as u16
        };
        let t = tcp::TcpRepr {
            src_port: f.local_port,
            dst_port: f.remote_port,
            seq: seq_no,
            ack: f.rx_next_seq,
            flags: flags | tcp::ACK,
            window,
            options,
        };
        self.send_tcp(io, f.remote_mac, &f.key(), &t, payload);
    }

    pub(super) fn send_flow_rst(&mut self, now: u64, f: &FlowState, io: &mut impl StackIo) {
        self.stats.rst_sent += 1;
        self.send_flow_segment(now, f, f.tx_next_seq, tcp::RST, &[], io);
    }

    /// RST in answer to a segment without a connection (RFC 9293 §3.10.7.1).
    pub(super) fn send_rst_reply(
        &mut self,
        mac: [u8; 6],
        key: &FlowKey,
        seg: &tcp::TcpSegment<'_>,
        io: &mut impl StackIo,
    ) {
        let flags = seg.flags();
        if flags & tcp::RST != 0 || !self.unicast_ok(key.remote_ip) || mac[0] & 1 != 0 {
            return;
        }
        let (seq_no, ack, fl) = if flags & tcp::ACK != 0 {
            (seg.ack(), 0, tcp::RST)
        } else {
            let len = seg.payload().len() as u32
                + (flags & tcp::SYN != 0) as u32
                + (flags & tcp::FIN != 0) as u32;
            (0, seg.seq().wrapping_add(len), tcp::RST | tcp::ACK)
        };
        let t = tcp::TcpRepr {
            src_port: key.local_port,
            dst_port: key.remote_port,
            seq: seq_no,
            ack,
            flags: fl,
            window: 0,
            options: tcp::TcpOptions::default(),
        };
        self.stats.rst_sent += 1;
        self.send_tcp(io, mac, key, &t, &[]);
    }

    /// A challenge ACK (RFC 5961 §3.2, §4.2): <SEQ=SND.NXT><ACK=RCV.NXT>
    /// <CTL=ACK>, if the daemon-wide token bucket allows (§7: 1000 a second
    /// as Linux's `tcp_challenge_ack_limit`, at most 1000 at once). A bucket
    /// rather than a count per second: a window that restarts would let
    /// twice the limit out within a moment across its boundary.
    pub(super) fn challenge_ack(&mut self, now: u64, f: &FlowState, io: &mut impl StackIo) {
        let (last, tokens) = self.challenge;
        let refill = now.saturating_sub(last).saturating_mul(CHALLENGE_RATE);
        let tokens = tokens.saturating_add(refill).min(CHALLENGE_BURST * SEC);
        // A clock that went backwards adds nothing (max keeps `last`).
        self.challenge = (now.max(last), tokens);
        if tokens < SEC {
            self.stats.challenge_acks_limited += 1;
            return;
        }
        self.challenge.1 = tokens - SEC;
        self.stats.challenge_acks += 1;
        self.send_flow_segment(now, f, f.tx_next_seq, 0, &[], io);
    }
}
