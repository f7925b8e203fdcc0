//! Passive open: a listener's SYN becomes a half-open connection
//! (SYN_RCVD, not in the flow table), SYN-ACKs are sent and resent, and the
//! final ACK installs the flow and announces it to the app (`ACCEPTED`),
//! within the listener's backlog and the half-open limits. While the
//! half-open table is full, SYNs get SYN cookies instead (see `cookie`) and
//! a cookie's final ACK makes the connection.

use tas_abi::{ctl, CtlMsg};
use tas_engine::engine::ts_now;
use tas_engine::flow::{cfg as fcfg, FlowKey, FlowState};
use tas_engine::seq;
use tas_engine::wire::tcp;

use super::{cookie, flow_info, wscale_for, HalfOpen, Parsed, PeerOpts};
use crate::stack::{tuple, AppId, FpCmd, Stack, StackIo, Timer};

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
        let Some(lid) = self.listener_for(&p.key) else {
            return;
        };
        let Some(lst) = self.listeners.get(&lid) else {
            return;
        };
        if lst.pending >= lst.backlog || self.app_throttled(lst.app) {
            // Linux drops these too, cookies or not: the app is behind.
            self.stats.syn_dropped_backlog += 1;
            return;
        }
        if lst.acceptors.is_empty() {
            // Shared by processes none of which accepts yet (a master
            // before its workers start): the peer retries the SYN.
            self.stats.syn_dropped_no_acceptor += 1;
            return;
        }
        let flags = p.seg.flags();
        let ecn = self.cfg.ecn && flags & (tcp::ECE | tcp::CWR) == (tcp::ECE | tcp::CWR);
        if lst.half_open as u64 >= (lst.backlog as u64 * 2).max(64)
            || self.half_open.len() >= self.cfg.max_half_open as usize
        {
            return self.cookie_syn(now, p, &opts, lid, ecn, io);
        }
        // Refuse early: with the flow table or the app's memory full the SYN
        // is dropped as a listen overflow (the peer retries), never answered
        // with a handshake we could not complete (issue: connect() succeeded,
        // then the first read got ECONNRESET).
        let (app, rx_size, tx_size) = self.sized_for(lid, io);
        if !self.room_for(app, rx_size, tx_size, io) {
            self.stats.syn_dropped_no_room += 1;
            return;
        }
        let Some(lst) = self.listeners.get(&lid) else {
            return;
        };
        let h = HalfOpen {
            listener: lid,
            app: lst.app,
            irs: p.seg.seq(),
            iss: self.isn(&p.key, now),
            peer: PeerOpts::from_options(&opts, ecn),
            mac: p.mac,
            // The scale for the configured size: the same whatever size
            // the rings get (a cookie's ACK recomputes it).
            our_ws: wscale_for(lst.rx_size),
            rx_size,
            tx_size,
            first_sent: now,
            retries: 0,
            deadline: now.saturating_add(self.cfg.syn_rto_ns.max(1)),
        };
        if let Some(l) = self.listeners.get_mut(&lid) {
            l.half_open += 1;
        }
        self.rotate_acceptor(lid);
        self.send_synack(&p.key, &h, ts_now(now), io);
        self.promise(&h, true);
        self.half_open.insert(p.key, h);
        self.schedule(h.deadline, Timer::HalfOpen(tuple(&p.key)));
    }

    /// A SYN while the half-open table is full: answered with a SYN cookie
    /// (RFC 4987 §3.6) and no state kept, if the connection could be made
    /// now; otherwise (or with cookies off) dropped.
    fn cookie_syn(
        &mut self,
        now: u64,
        p: &Parsed<'_>,
        opts: &tcp::TcpOptions,
        lid: u32,
        ecn: bool,
        io: &mut impl StackIo,
    ) {
        let Some(lst) = self.listeners.get(&lid) else {
            return;
        };
        let ws_size = lst.rx_size;
        if !self.cfg.syncookies {
            self.stats.syn_dropped_overflow += 1;
            return;
        }
        let (app, rx_size, tx_size) = self.sized_for(lid, io);
        // No cookie for a connection that could not be made: its final ACK
        // would only be dropped.
        if !self.room_for(app, rx_size, tx_size, io) {
            self.stats.syncookies_refused += 1;
            self.stats.syn_dropped_overflow += 1;
            return;
        }
        let mut peer = PeerOpts::from_options(opts, ecn);
        if peer.ts.is_none() {
            // Only the timestamp can carry these back: offer none of them
            // (Linux clears them the same way).
            peer.ws = None;
            peer.sack = false;
            peer.ecn = false;
        }
        let irs = p.seg.seq();
        let iss = cookie::make(
            self.cookie_key,
            &p.key,
            irs,
            now,
            cookie::mss_index(peer.mss),
        );
        let h = HalfOpen {
            listener: lid,
            app,
            irs,
            iss,
            peer,
            mac: p.mac,
            our_ws: wscale_for(ws_size),
            // The SYN-ACK's window: the rings are sized again at the final
            // ACK, possibly down to the floor; never announce more.
            rx_size: match self.cfg.ring_floor {
                0 => rx_size,
                f => rx_size.min(f),
            },
            tx_size,
            first_sent: now,
            retries: 0,
            deadline: 0,
        };
        if let Some(l) = self.listeners.get_mut(&lid) {
            l.cookies_until = now.saturating_add(cookie::VALID_NS);
        }
        self.stats.syncookies_sent += 1;
        let tsval = cookie::encode_ts(ts_now(now), peer.ws, peer.sack, peer.ecn);
        self.send_synack(&p.key, &h, tsval, io);
    }

    /// An ACK without a connection to a listening port. If the listener
    /// sent cookies lately and SEG.ACK - 1 is a cookie for this 4-tuple and
    /// SEG.SEQ - 1, the connection is made from what the cookie and the
    /// echoed timestamp carry (or the ACK is dropped when there is no room)
    /// and true is returned; false: not a cookie's ACK (the caller answers
    /// it with an RST, as RFC 9293 §3.10.7.2 says for an ACK in LISTEN).
    pub(super) fn cookie_ack(
        &mut self,
        now: u64,
        p: &Parsed<'_>,
        frame: &[u8],
        io: &mut impl StackIo,
    ) -> bool {
        if !self.cfg.syncookies {
            return false;
        }
        let Some(lid) = self.listener_for(&p.key) else {
            return false;
        };
        let Some(lst) = self.listeners.get(&lid) else {
            return false;
        };
        if now >= lst.cookies_until {
            return false;
        }
        let ws_size = lst.rx_size;
        let (app, rx_size, tx_size) = self.sized_for(lid, io);
        let irs = p.seg.seq().wrapping_sub(1);
        let iss = p.seg.ack().wrapping_sub(1);
        let ts = p.seg.timestamp();
        let opts = match ts {
            Some((_, tsecr)) => cookie::decode_ts(tsecr, ts_now(now)),
            None => Some((None, false, false)),
        };
        let idx = cookie::check(self.cookie_key, &p.key, irs, iss, now);
        let (Some(idx), Some((ws, sack, ecn))) = (idx, opts) else {
            self.stats.syncookies_failed += 1;
            return false;
        };
        self.stats.syncookies_recv += 1;
        let h = HalfOpen {
            listener: lid,
            app,
            irs,
            iss,
            peer: PeerOpts {
                mss: cookie::MSS_TABLE[idx as usize],
                ws,
                sack,
                ts: ts.map(|t| t.0),
                ecn: ecn && self.cfg.ecn,
            },
            mac: p.mac,
            our_ws: wscale_for(ws_size),
            rx_size,
            tx_size,
            first_sent: now,
            // Not a first transmission as far as we know: no handshake RTT.
            retries: 1,
            deadline: 0,
        };
        self.complete_passive(now, p, &h, frame, true, io);
        true
    }

    /// Notes (`on`) or drops the ring bytes half-open `h` will need
    /// ([`Stack::ring_sizes`] does not count them as free).
    pub(super) fn promise(&mut self, h: &HalfOpen, on: bool) {
        let page = |n: u32| (u64::from(n) + 4095) & !4095;
        let bytes = page(h.rx_size) + page(h.tx_size);
        let p = self.promised.entry(h.app).or_default();
        if on {
            *p += bytes;
        } else {
            *p = p.saturating_sub(bytes);
            if *p == 0 {
                self.promised.remove(&h.app);
            }
        }
    }

    /// Listener `lid`'s app and the ring sizes a new connection gets now
    /// ([`Stack::ring_sizes`]).
    fn sized_for(&self, lid: u32, io: &impl StackIo) -> (AppId, u32, u32) {
        let Some(l) = self.listeners.get(&lid) else {
            return (0, 0, 0);
        };
        let (rx0, tx0) = (self.cfg.init_rx_buf, self.cfg.init_tx_buf);
        let (rx, tx) = self.ring_sizes(
            l.app,
            l.rx_init(rx0),
            l.tx_init(tx0),
            (l.rx_pin, l.tx_pin),
            io,
        );
        (l.app, rx, tx)
    }

    /// The listener a connection of `key` belongs to (with `F_REUSEPORT`,
    /// one of the port's listeners by the 4-tuple's hash).
    fn listener_for(&self, key: &FlowKey) -> Option<u32> {
        let lids = self.ports.get(&key.local_port)?;
        if lids.is_empty() {
            return None;
        }
        Some(lids[key.hash() as usize % lids.len()])
    }

    /// A SYN-ACK for `h` with `tsval` as our timestamp (if the peer uses
    /// timestamps).
    pub(super) fn send_synack(
        &mut self,
        key: &FlowKey,
        h: &HalfOpen,
        tsval: u32,
        io: &mut impl StackIo,
    ) {
        let options = tcp::TcpOptions {
            mss: Some(self.our_mss()),
            wscale: h.peer.ws.map(|_| h.our_ws),
            sack_permitted: h.peer.sack,
            timestamp: h.peer.ts.map(|tsv| (tsval, tsv)),
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
        self.promise(&h, false);
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
                self.send_synack(&p.key, &h, ts_now(now), io);
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
        self.complete_passive(now, p, &h, frame, false, io);
    }

    /// The final ACK of a handshake: installs the flow and announces it.
    /// For a SYN cookie's (`cookie`), no room for the connection (app memory,
    /// flow table) means the ACK is dropped: the client thinks it is
    /// connected and sends again, and the cookie is still good then. Linux
    /// drops it the same way; an accepted connection that is reset at once
    /// would be worse. A cookie's ACK that finds the accept queue full is
    /// kept in SYN_RCVD instead (bounded), so a client that sends nothing
    /// first is not left alone in ESTABLISHED.
    fn complete_passive(
        &mut self,
        now: u64,
        p: &Parsed<'_>,
        h: &HalfOpen,
        frame: &[u8],
        cookie: bool,
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
            // Beyond the half-open limit by at most the flow table's free
            // slots (each will need one anyway): a HalfOpen is ~100 bytes.
            let room = self.table.capacity().saturating_sub(self.table.len());
            if cookie && self.half_open.len() < self.cfg.max_half_open as usize + room {
                // A valid cookie proves the peer completed the handshake
                // (it saw our SYN-ACK): instead of losing the connection
                // (Linux does: a client that sends nothing stays
                // ESTABLISHED alone), keep it in SYN_RCVD from what the
                // cookie carried, so the SYN-ACK timer draws the peer's
                // ACK once the app has made room.
                self.stats.syncookies_parked += 1;
                // (`retries` stays 1: no handshake RTT from it.)
                let h = HalfOpen {
                    deadline: now.saturating_add(self.cfg.syn_rto_ns.max(1)),
                    ..*h
                };
                if let Some(l) = self.listeners.get_mut(&h.listener) {
                    l.half_open += 1;
                }
                self.promise(&h, true);
                self.half_open.insert(key, h);
                self.schedule(h.deadline, Timer::HalfOpen(tuple(&key)));
            }
            return;
        }
        let Some((rx, tx)) = self.alloc_rings(h.app, h.rx_size, h.tx_size, io) else {
            // Memory went between SYN and ACK: drop the ACK as Linux does
            // with a full accept queue (the SYN-ACK timer or the client's
            // retransmission tries again); never a completed handshake
            // followed by a reset.
            if cookie {
                self.stats.syncookies_dropped += 1;
            } else {
                self.stats.accept_no_room += 1;
            }
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
            mem: io.mem_of(h.app),
            group: self.rx_lane,
            cfg,
            mss: peer.mss.min(self.path_mss(now, key.remote_ip)),
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
        let next_hop = self.route(key.remote_ip, io);
        let Some(id) = self.install(now, f, h.app, rx, tx, next_hop, hs_rtt, cc) else {
            Self::free_rings(h.app, rx, tx, io);
            if cookie {
                self.stats.syncookies_dropped += 1;
            } else {
                self.stats.accept_no_room += 1;
            }
            return;
        };
        self.set_ring_max(id, lst.rx_size, lst.tx_size);
        if !cookie {
            self.drop_half_open(&key);
        }
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
        // Recorded whether or not the listener is shared yet: one announced
        // before a fork is handed to the child's acceptors like any other
        // (`share::hand_back`).
        if let Some(l) = self.listeners.get_mut(&h.listener) {
            l.announced.push((id, h.app, m.info));
        }
        if !p.seg.payload().is_empty() || p.seg.flags() & tcp::FIN != 0 {
            self.stats.reinjected += 1;
            io.fastpath(FpCmd::Rx(frame.to_vec()));
        }
    }
}
