//! The apps' connection requests: `LISTEN` and `UNLISTEN` (with the
//! `F_REUSEPORT` rules), `ACCEPT` credit, `CONNECT` (checks, port choice,
//! rings, then ARP or the first SYN), `CLOSE` and `ABORT`. Every request
//! for something the app does not own is answered with an error.

use tas_abi::{ConnectReq, CtlMsg, ListenReq};
use tas_engine::flow::FlowKey;
use tas_engine::flowtable::FlowId;
use tas_engine::wire::tcp;

use super::grow::ring_span;
use super::{wscale_for, Conn, ConnectPhase, Connecting, Listener, Phase};
use crate::stack::{tuple, AppId, Stack, StackIo, Timer};

/// Ring sizes are clamped to this range.
const MIN_BUF: u32 = 2048;
const MAX_BUF: u32 = 64 << 20;
const MAX_BACKLOG: u32 = 4096;
/// Most listeners sharing one port with `F_REUSEPORT`.
const MAX_REUSEPORT: usize = 64;

/// A requested ring size (0: the default), clamped.
pub(super) fn buf_len(req: u32, default: u32) -> u32 {
    let v = if req == 0 { default } else { req };
    v.clamp(MIN_BUF, MAX_BUF)
}

impl Stack {
    pub(in crate::stack) fn app_listen(&mut self, app: AppId, msg: &CtlMsg, io: &mut impl StackIo) {
        let Some(ListenReq {
            port,
            backlog,
            rx_size,
            tx_size,
            reuseport: reuse,
        }) = ListenReq::from_msg(msg)
        else {
            return self.reply_err(io, app, msg, libc::EINVAL);
        };
        if self.cfg.local_ip == 0 {
            return self.reply_err(io, app, msg, libc::EADDRNOTAVAIL);
        }
        if let Some(ids) = self.ports.get(&port) {
            let all_reuse = ids
                .iter()
                .all(|id| self.listeners.get(id).is_some_and(|l| l.reuse));
            if !ids.is_empty() && (!reuse || !all_reuse || ids.len() >= MAX_REUSEPORT) {
                return self.reply_err(io, app, msg, libc::EADDRINUSE);
            }
        }
        if self.ports.get(&port).is_none_or(|ids| ids.is_empty()) {
            if let Err(errno) = io.claim_port(port) {
                return self.reply_err(io, app, msg, errno);
            }
        }
        let id = self.next_listener;
        self.next_listener = self.next_listener.wrapping_add(1).max(1);
        self.listeners.insert(
            id,
            Listener {
                app,
                port,
                backlog: backlog.clamp(1, MAX_BACKLOG),
                pending: 0,
                half_open: 0,
                rx_size: buf_len(rx_size, self.cfg.default_rx_buf),
                tx_size: buf_len(tx_size, self.cfg.default_tx_buf),
                rx_pin: rx_size != 0,
                tx_pin: tx_size != 0,
                reuse,
                opaque: msg.info.opaque,
                cookies_until: 0,
                holders: vec![app],
                acceptors: vec![app],
                announced: Vec::new(),
            },
        );
        self.ports.entry(port).or_default().push(id);
        self.reply(io, app, msg, 0, id);
    }

    /// `LISTEN_UPDATE`: ring sizes set on a listener after `listen()`
    /// (`arg[2]`/`arg[3]`, 0: unchanged) apply, pinned, to connections
    /// accepted from now on (Linux copies a listener's buffer sizes and
    /// their lock flags to the sockets it accepts).
    pub(in crate::stack) fn app_listen_update(
        &mut self,
        app: AppId,
        msg: &CtlMsg,
        io: &mut impl StackIo,
    ) {
        let lid = msg.listener;
        let (drx, dtx) = (self.cfg.default_rx_buf, self.cfg.default_tx_buf);
        let Some(l) = self
            .listeners
            .get_mut(&lid)
            .filter(|l| l.holders.contains(&app))
        else {
            return self.reply_err(io, app, msg, libc::EBADF);
        };
        let (rx, tx) = (msg.arg[2], msg.arg[3]);
        if rx != 0 {
            l.rx_size = buf_len(rx, drx);
            l.rx_pin = true;
        }
        if tx != 0 {
            l.tx_size = buf_len(tx, dtx);
            l.tx_pin = true;
        }
        self.reply(io, app, msg, 0, lid);
    }

    pub(super) fn remove_listener(&mut self, lid: u32, io: &mut impl StackIo) {
        let Some(l) = self.listeners.remove(&lid) else {
            return;
        };
        if let Some(ids) = self.ports.get_mut(&l.port) {
            ids.retain(|&i| i != lid);
            if ids.is_empty() {
                self.ports.remove(&l.port);
                io.release_port(l.port);
            }
        }
        let keys: Vec<FlowKey> = self
            .half_open
            .iter()
            .filter(|(_, h)| h.listener == lid)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(h) = self.half_open.remove(&k) {
                self.promise(&h, false);
                let t = tcp::TcpRepr {
                    src_port: k.local_port,
                    dst_port: k.remote_port,
                    seq: h.iss.wrapping_add(1),
                    ack: h.irs.wrapping_add(1),
                    flags: tcp::RST | tcp::ACK,
                    window: 0,
                    options: tcp::TcpOptions::default(),
                };
                self.stats.rst_sent += 1;
                self.send_tcp(io, h.mac, &k, &t, &[]);
            }
        }
    }

    pub(in crate::stack) fn app_unlisten(
        &mut self,
        _now: u64,
        app: AppId,
        msg: &CtlMsg,
        io: &mut impl StackIo,
    ) {
        if self.listeners.get(&msg.listener).map(|l| l.app) != Some(app) {
            return self.reply_err(io, app, msg, libc::EBADF);
        }
        self.remove_listener(msg.listener, io);
        self.reply(io, app, msg, 0, msg.listener);
    }

    pub(in crate::stack) fn app_accept(&mut self, app: AppId, msg: &CtlMsg, io: &mut impl StackIo) {
        match self.listeners.get_mut(&msg.listener) {
            Some(l) if l.app == app || l.holders.contains(&app) => {
                l.pending = l.pending.saturating_sub(msg.accept_credit());
                // Taken in order (the app library accepts oldest first).
                let mut n = msg.accept_credit();
                l.announced.retain(|&(_, a, _)| {
                    if a == app && n > 0 {
                        n -= 1;
                        false
                    } else {
                        true
                    }
                });
            }
            _ => self.reply_err(io, app, msg, libc::EBADF),
        }
    }

    pub(in crate::stack) fn app_connect(
        &mut self,
        now: u64,
        app: AppId,
        msg: &CtlMsg,
        io: &mut impl StackIo,
    ) {
        let Some(ConnectReq {
            remote_ip: rip,
            remote_port: rport,
            local_port: lport,
            rx_size,
            tx_size,
            ..
        }) = ConnectReq::from_msg(msg).filter(|r| self.unicast_ok(r.remote_ip))
        else {
            return self.reply_err(io, app, msg, libc::EINVAL);
        };
        if self.cfg.local_ip == 0 {
            return self.reply_err(io, app, msg, libc::EADDRNOTAVAIL);
        }
        if rip == self.cfg.local_ip {
            // Talking to ourselves through the NIC is not possible.
            return self.reply_err(io, app, msg, libc::ECONNREFUSED);
        }
        let Some(hop) = self.route(rip, io) else {
            self.stats.connect_unreachable += 1;
            return self.reply_err(io, app, msg, libc::ENETUNREACH);
        };
        let lport = if lport != 0 {
            let key = FlowKey {
                local_ip: self.cfg.local_ip,
                remote_ip: rip,
                local_port: lport,
                remote_port: rport,
            };
            if self.tuple_in_use(&key) {
                return self.reply_err(io, app, msg, libc::EADDRINUSE);
            }
            lport
        } else {
            match self.pick_port(rip, rport) {
                Some(p) => p,
                None => return self.reply_err(io, app, msg, libc::EADDRNOTAVAIL),
            }
        };
        let key = FlowKey {
            local_ip: self.cfg.local_ip,
            remote_ip: rip,
            local_port: lport,
            remote_port: rport,
        };
        let (rx_len, rx_max) = ring_span(rx_size, self.cfg.default_rx_buf, self.cfg.init_rx_buf);
        let (tx_len, tx_max) = ring_span(tx_size, self.cfg.default_tx_buf, self.cfg.init_tx_buf);
        // Refuse before the SYN when the flow table has no room (the same
        // watermark passive opens use), rather than reset the peer after
        // its SYN-ACK.
        let cap = self.table.capacity();
        if !crate::stack::below_watermark(self.table.len() + self.connecting.len(), cap) {
            self.stats.connect_no_room += 1;
            return self.reply_err(io, app, msg, libc::ENOBUFS);
        }
        // The window scale is for the most the ring grows to.
        let ws_len = rx_max;
        let pin = (rx_size != 0, tx_size != 0);
        let (rx_len, tx_len) = self.ring_sizes(app, rx_len, tx_len, pin, io);
        let Some((rx, tx)) = self.alloc_rings(app, rx_len, tx_len, io) else {
            return self.reply_err(io, app, msg, libc::ENOMEM);
        };
        let mac = self.arp_lookup(now, hop);
        let c = Connecting {
            app,
            req: msg.req,
            opaque: msg.info.opaque,
            next_hop: hop,
            mac: mac.unwrap_or([0; 6]),
            phase: if mac.is_some() {
                ConnectPhase::SynSent
            } else {
                ConnectPhase::Arp
            },
            iss: self.isn(&key, now),
            our_ws: wscale_for(ws_len),
            retries: 0,
            deadline: now.saturating_add(self.cfg.syn_rto_ns.max(1)),
            first_sent: now,
            rx,
            tx,
            rx_max,
            tx_max,
        };
        self.connecting.insert(key, c);
        if mac.is_some() {
            self.send_syn(now, &key, &c, io);
            self.schedule(c.deadline, Timer::Connect(tuple(&key)));
        } else {
            self.arp_resolve(now, hop, key, io);
        }
    }

    fn owned_conn(&self, app: AppId, flow: FlowId) -> Option<&Conn> {
        self.conns.get(&flow).filter(|c| c.app == app)
    }

    pub(in crate::stack) fn app_close(
        &mut self,
        now: u64,
        app: AppId,
        msg: &CtlMsg,
        io: &mut impl StackIo,
    ) {
        let id = msg.flow;
        match self.owned_conn(app, id) {
            Some(c) if !c.app_closed => {}
            _ => return self.reply_err(io, app, msg, libc::EBADF),
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.app_closed = true;
        c.closed_at = now;
        match c.phase {
            Phase::Done if c.time_wait => self.start_time_wait(now, id, io),
            Phase::Dead | Phase::Done => self.release(id, io),
            // The app requested its FIN through the fast path before CLOSE;
            // if it did not, the flow timer requests it after a grace period
            // (requesting it here could race data the app queued just before).
            Phase::Open => {}
        }
    }

    pub(in crate::stack) fn app_abort(
        &mut self,
        now: u64,
        app: AppId,
        msg: &CtlMsg,
        io: &mut impl StackIo,
    ) {
        let id = msg.flow;
        let Some(c) = self.owned_conn(app, id) else {
            return self.reply_err(io, app, msg, libc::EBADF);
        };
        if c.phase == Phase::Open {
            let key = c.key;
            if let Some(f) = self.snapshot(id, &key) {
                self.send_flow_rst(now, &f, io);
            }
        }
        self.stats.aborted += 1;
        if let Some(c) = self.conns.get_mut(&id) {
            c.app_closed = true;
        }
        self.release(id, io);
    }
}
