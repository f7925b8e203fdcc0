//! Connection control: listeners, passive and active open, RST handling,
//! close and TIME_WAIT, and the per-flow timers (retransmission timeout,
//! zero-window persist, FIN_WAIT_2 bound).

use tas_abi::{ctl, CtlMsg, FlowInfo};
use tas_engine::engine::ts_now;
use tas_engine::flow::{cfg as fcfg, st, FlowKey, FlowState};
use tas_engine::flowtable::FlowId;
use tas_engine::seq;
use tas_engine::wire::{frame, tcp};

use super::ccloop::ConnCc;
use super::{hash, tuple, AppId, FlowSummary, FpCmd, Stack, StackIo, Timer, MS, RESERVED_APP, SEC};

const TTL: u8 = 64;
/// Ring sizes are clamped to this range.
const MIN_BUF: u32 = 2048;
const MAX_BUF: u32 = 64 << 20;
const MAX_BACKLOG: u32 = 4096;
const MAX_REUSEPORT: usize = 64;
/// MSS assumed when the peer announces none (RFC 9293 §3.7.1).
const DEFAULT_PEER_MSS: u16 = 536;
/// Smallest peer MSS we accept (hostile values below are raised).
const MIN_PEER_MSS: u16 = 64;
/// Challenge ACKs per second, all flows together (RFC 5961 §7).
const CHALLENGE_LIMIT: u32 = 1000;
/// After CLOSE without the app's FIN request, how long before we request it.
const CLOSE_FIN_GRACE: u64 = 500 * MS;

/// A listening port of one app.
#[derive(Debug, Clone)]
pub(super) struct Listener {
    pub(super) app: AppId,
    pub(super) port: u16,
    pub(super) backlog: u32,
    /// Established connections announced (`ACCEPTED`) and not yet taken by
    /// the app (`ACCEPT` credit).
    pub(super) pending: u32,
    pub(super) half_open: u32,
    pub(super) rx_size: u32,
    pub(super) tx_size: u32,
    pub(super) reuse: bool,
    /// Becomes `FlowState::opaque` of accepted flows.
    pub(super) opaque: u64,
}

/// What the peer's SYN (or SYN-ACK) offered.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PeerOpts {
    mss: u16,
    ws: Option<u8>,
    sack: bool,
    /// The peer's TSval, if it sent timestamps.
    ts: Option<u32>,
    ecn: bool,
}

/// A passive connection in SYN_RCVD (not in the flow table yet).
#[derive(Debug, Clone, Copy)]
pub(super) struct HalfOpen {
    listener: u32,
    app: AppId,
    irs: u32,
    iss: u32,
    peer: PeerOpts,
    mac: [u8; 6],
    our_ws: u8,
    rx_size: u32,
    tx_size: u32,
    first_sent: u64,
    retries: u32,
    deadline: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectPhase {
    Arp,
    SynSent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ring {
    base: u32,
    len: u32,
}

/// An active open in progress (not in the flow table yet).
#[derive(Debug, Clone, Copy)]
pub(super) struct Connecting {
    app: AppId,
    req: u32,
    opaque: u64,
    next_hop: u32,
    mac: [u8; 6],
    phase: ConnectPhase,
    iss: u32,
    our_ws: u8,
    retries: u32,
    deadline: u64,
    first_sent: u64,
    rx: Ring,
    tx: Ring,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Installed; the fast path runs it.
    Open,
    /// Both FINs done (we closed second), still installed because the app
    /// has not sent CLOSE yet.
    Done,
    /// We closed first: installed until `until` so retransmitted FINs are
    /// re-ACKed.
    TimeWait { until: u64 },
    /// Gone from the table (reset, timed out, TIME_WAIT over) but not
    /// released by the app; a placeholder may hold the id.
    Dead,
}

/// Slow-path bookkeeping of an installed (or not yet released) flow.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) key: FlowKey,
    pub(super) app: AppId,
    opaque: u64,
    rx: Ring,
    tx: Ring,
    next_hop: Option<u32>,
    pub(super) phase: Phase,
    placeholder: bool,
    app_closed: bool,
    closed_at: u64,
    fin_rx: bool,
    fin_acked: bool,
    /// Our FIN went out before the peer's arrived: we keep TIME_WAIT.
    active_close: bool,
    fin_acked_at: u64,
    // Retransmission timeout.
    last_una: u32,
    busy: bool,
    una_since: u64,
    backoff: u32,
    retries: u32,
    // Zero-window persist.
    zw: bool,
    zw_since: u64,
    persist_backoff: u32,
    next_check: u64,
    /// Handshake round trip (0 when unknown, e.g. after a retransmission).
    hs_rtt: u64,
    /// Congestion control of the flow (see `ccloop`).
    pub(super) cc: ConnCc,
}

/// Why an exception frame matched no installed connection.
enum Miss {
    Malformed,
    NoConn,
}

struct Parsed<'a> {
    mac: [u8; 6],
    key: FlowKey,
    seg: tcp::TcpSegment<'a>,
}

fn parse(frame: &[u8]) -> Option<Parsed<'_>> {
    let f = frame::parse_tcp_frame(frame).ok()?;
    Some(Parsed {
        mac: f.eth.src(),
        key: FlowKey {
            local_ip: f.ip.dst(),
            remote_ip: f.ip.src(),
            local_port: f.tcp.dst_port(),
            remote_port: f.tcp.src_port(),
        },
        seg: f.tcp,
    })
}

fn buf_len(req: u32, default: u32) -> u32 {
    let v = if req == 0 { default } else { req };
    v.clamp(MIN_BUF, MAX_BUF)
}

/// Our window-scale shift for an RX ring of `len` bytes.
fn wscale_for(len: u32) -> u8 {
    let mut s = 0u8;
    while s < tcp::MAX_WSCALE && (len >> s) > u16::MAX as u32 {
        s += 1;
    }
    s
}

fn shifted(base: u64, n: u32) -> u64 {
    base.saturating_mul(1u64 << n.min(32))
}

impl PeerOpts {
    fn from_options(o: &tcp::TcpOptions, ecn: bool) -> Self {
        PeerOpts {
            mss: o.mss.unwrap_or(DEFAULT_PEER_MSS).max(MIN_PEER_MSS),
            ws: o.wscale,
            sack: o.sack_permitted,
            ts: o.timestamp.map(|t| t.0),
            ecn,
        }
    }
}

fn flow_info(id: FlowId, f: &FlowState) -> FlowInfo {
    FlowInfo {
        flow: id,
        local_ip: f.local_ip,
        remote_ip: f.remote_ip,
        local_port: f.local_port,
        remote_port: f.remote_port,
        rx_base: f.rx_base,
        rx_len: f.rx_len,
        tx_base: f.tx_base,
        tx_len: f.tx_len,
        rx_seq: f.rx_next_seq,
        tx_seq: f.tx_next_seq,
        mss: (f.mss as u32).saturating_sub(f.opt_len()).max(1),
        _pad: 0,
        opaque: { f.opaque },
    }
}

impl Stack {
    // ------------------------------------------------------------------
    // Helpers
    // ------------------------------------------------------------------

    fn our_mss(&self) -> u16 {
        self.cfg.mtu.saturating_sub(40).max(MIN_PEER_MSS)
    }

    fn isn(&self, key: &FlowKey, now: u64) -> u32 {
        #[cfg(test)]
        if let Some(v) = self.isn_override {
            return v;
        }
        let mut b = [0u8; 12];
        b[0..4].copy_from_slice(&key.local_ip.to_be_bytes());
        b[4..8].copy_from_slice(&key.remote_ip.to_be_bytes());
        b[8..10].copy_from_slice(&key.local_port.to_be_bytes());
        b[10..12].copy_from_slice(&key.remote_port.to_be_bytes());
        let h = hash::siphash24(self.isn_key.0, self.isn_key.1, &b) as u32;
        // RFC 6528: a 4 µs clock plus a keyed hash of the 4-tuple.
        ((now / 4000) as u32).wrapping_add(h)
    }

    fn tuple_in_use(&self, key: &FlowKey) -> bool {
        self.table.lookup(key).is_some()
            || self.connecting.contains_key(key)
            || self.half_open.contains_key(key)
    }

    /// An ephemeral port giving a unique 4-tuple (RFC 6056, algorithm 3).
    fn pick_port(&mut self, remote_ip: u32, remote_port: u16) -> Option<u16> {
        let (mut lo, mut hi) = self.cfg.ephemeral;
        if lo == 0 || hi < lo {
            (lo, hi) = (32768, 60999);
        }
        let n = (hi - lo) as u32 + 1;
        let mut b = [0u8; 10];
        b[0..4].copy_from_slice(&self.cfg.local_ip.to_be_bytes());
        b[4..8].copy_from_slice(&remote_ip.to_be_bytes());
        b[8..10].copy_from_slice(&remote_port.to_be_bytes());
        let off = hash::siphash24(self.port_key.0, self.port_key.1, &b) as u32;
        for i in 0..n {
            let p = lo + (off.wrapping_add(self.port_counter).wrapping_add(i) % n) as u16;
            let key = FlowKey {
                local_ip: self.cfg.local_ip,
                remote_ip,
                local_port: p,
                remote_port,
            };
            if !self.ports.contains_key(&p) && !self.tuple_in_use(&key) {
                self.port_counter = self.port_counter.wrapping_add(i + 1);
                return Some(p);
            }
        }
        None
    }

    fn alloc_rings(
        &mut self,
        app: AppId,
        rx: u32,
        tx: u32,
        io: &mut impl StackIo,
    ) -> Option<(Ring, Ring)> {
        let Some(rb) = io.alloc(app, rx) else {
            self.stats.alloc_failures += 1;
            return None;
        };
        let Some(tb) = io.alloc(app, tx) else {
            io.free(app, rb, rx);
            self.stats.alloc_failures += 1;
            return None;
        };
        Some((Ring { base: rb, len: rx }, Ring { base: tb, len: tx }))
    }

    fn free_rings(app: AppId, rx: Ring, tx: Ring, io: &mut impl StackIo) {
        io.free(app, rx.base, rx.len);
        io.free(app, tx.base, tx.len);
    }

    fn send_tcp(
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
    fn send_flow_segment(
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

    fn send_flow_rst(&mut self, now: u64, f: &FlowState, io: &mut impl StackIo) {
        self.stats.rst_sent += 1;
        self.send_flow_segment(now, f, f.tx_next_seq, tcp::RST, &[], io);
    }

    /// RST in answer to a segment without a connection (RFC 9293 §3.10.7.1).
    fn send_rst_reply(
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

    /// A copy of flow `id`'s state, if it is installed with `key`.
    fn snapshot(&self, id: FlowId, key: &FlowKey) -> Option<FlowState> {
        let g = self.table.lock(id)?;
        if g.key() != *key {
            return None;
        }
        Some(*g)
    }

    /// The conn record for an exception's flow id, checked against the
    /// frame's 4-tuple (the id may be stale by the time we see it).
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

    fn conn_for(&self, flow: Option<FlowId>, key: &FlowKey) -> Option<FlowId> {
        let id = flow?;
        let c = self.conns.get(&id)?;
        (c.key == *key && c.phase != Phase::Dead).then_some(id)
    }

    fn challenge_ack(&mut self, now: u64, f: &FlowState, io: &mut impl StackIo) {
        if now.saturating_sub(self.challenge.0) >= SEC {
            self.challenge = (now, 0);
        }
        if self.challenge.1 >= CHALLENGE_LIMIT {
            return;
        }
        self.challenge.1 += 1;
        self.stats.challenge_acks += 1;
        self.send_flow_segment(now, f, f.tx_next_seq, 0, &[], io);
    }

    fn rto_base(&self, c: &Conn, rtt_est_us: u32) -> u64 {
        let est = rtt_est_us as u64 * 3000;
        est.max(c.hs_rtt * 2)
            .max(self.cfg.rto_min_ns)
            .min(self.cfg.rto_max_ns.max(self.cfg.rto_min_ns))
    }

    fn backed_off(&self, base: u64, n: u32) -> u64 {
        shifted(base, n).min(self.cfg.rto_max_ns.max(base))
    }

    fn schedule_check(&mut self, id: FlowId, at: u64) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.next_check = at;
            self.schedule(at, Timer::Flow(id));
        }
    }

    /// Installs `f` and starts its bookkeeping.
    #[allow(clippy::too_many_arguments)]
    fn install(
        &mut self,
        now: u64,
        f: FlowState,
        app: AppId,
        rx: Ring,
        tx: Ring,
        next_hop: Option<u32>,
        hs_rtt: u64,
        cc: ConnCc,
    ) -> Option<FlowId> {
        let id = match self.table.insert(f) {
            Ok(id) => id,
            Err(_) => {
                self.stats.table_full += 1;
                return None;
            }
        };
        let c = Conn {
            key: f.key(),
            app,
            opaque: f.opaque,
            rx,
            tx,
            next_hop,
            phase: Phase::Open,
            placeholder: false,
            app_closed: false,
            closed_at: 0,
            fin_rx: false,
            fin_acked: false,
            active_close: false,
            fin_acked_at: 0,
            last_una: f.snd_una(),
            busy: false,
            una_since: now,
            backoff: 0,
            retries: 0,
            zw: false,
            zw_since: now,
            persist_backoff: 0,
            next_check: 0,
            hs_rtt,
            cc,
        };
        let base = self.rto_base(&c, f.rtt_est);
        let cc_due = c.cc.due;
        self.conns.insert(id, c);
        self.schedule_check(id, now + tick(base));
        self.schedule(cc_due, Timer::Cc(id));
        Some(id)
    }

    fn send_app(io: &mut impl StackIo, app: AppId, kind: u32, id: FlowId, c: &Conn, err: i32) {
        let m = CtlMsg {
            kind,
            err,
            flow: id,
            info: FlowInfo {
                flow: id,
                local_ip: c.key.local_ip,
                remote_ip: c.key.remote_ip,
                local_port: c.key.local_port,
                remote_port: c.key.remote_port,
                rx_base: c.rx.base,
                rx_len: c.rx.len,
                tx_base: c.tx.base,
                tx_len: c.tx.len,
                opaque: c.opaque,
                ..Default::default()
            },
            ..Default::default()
        };
        io.app_msg(app, &m);
    }

    /// The flow's TCP life is over: out of the table. If the app has closed
    /// it, it is released; otherwise the app gets `RESET(err)` (if any) and
    /// a placeholder keeps the id until the app closes it.
    fn tcp_gone(&mut self, id: FlowId, err: Option<i32>, io: &mut impl StackIo) {
        let Some(c) = self.conns.get(&id) else {
            return;
        };
        if c.phase == Phase::Dead {
            return;
        }
        if c.app_closed {
            self.release(id, io);
            return;
        }
        self.table.remove(id);
        let placeholder = FlowState {
            local_port: (id >> 16) as u16,
            remote_port: id as u16,
            mem: RESERVED_APP,
            context: RESERVED_APP,
            cfg: fcfg::SLOWPATH,
            ..Default::default()
        };
        let held = match self.table.insert(placeholder) {
            Ok(got) if got == id => true,
            Ok(other) => {
                // Not our slot after all (cannot happen with a single
                // writer); give it back.
                self.table.remove(other);
                false
            }
            Err(_) => false,
        };
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.phase = Phase::Dead;
        c.placeholder = held;
        if let Some(e) = err {
            Self::send_app(io, c.app, ctl::RESET, id, c, e);
        }
    }

    /// The app is done with the flow and TCP is done (or being torn down):
    /// remove it, free its rings, `RELEASED`.
    fn release(&mut self, id: FlowId, io: &mut impl StackIo) {
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        if c.phase != Phase::Dead || c.placeholder {
            self.table.remove(id);
        }
        Self::free_rings(c.app, c.rx, c.tx, io);
        Self::send_app(io, c.app, ctl::RELEASED, id, &c, 0);
    }

    fn enter_time_wait(&mut self, now: u64, id: FlowId) {
        let until = now.saturating_add(self.cfg.time_wait_ns);
        if let Some(c) = self.conns.get_mut(&id) {
            c.phase = Phase::TimeWait { until };
            self.stats.time_wait_entered += 1;
            self.schedule_check(id, until);
        }
    }

    /// Both FINs are done and we closed second: no TIME_WAIT. Late
    /// duplicates for the 4-tuple (e.g. ACKs of retransmissions that
    /// crossed our last ACK) are dropped silently for a while instead of
    /// being answered with RST.
    fn finish_graceful(&mut self, now: u64, id: FlowId, io: &mut impl StackIo) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        self.stats.closed_graceful += 1;
        self.lingering
            .insert(c.key, now.saturating_add(self.cfg.time_wait_ns));
        if c.app_closed {
            self.release(id, io);
        } else {
            c.phase = Phase::Done;
        }
    }

    fn fin_received(&mut self, now: u64, id: FlowId) {
        let st_now = self.table.lock(id).map(|g| g.st).unwrap_or(0);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.phase != Phase::Open || c.fin_rx {
            return;
        }
        c.fin_rx = true;
        if c.fin_acked {
            self.stats.closed_graceful += 1;
            self.enter_time_wait(now, id);
        } else if st_now & st::RX_FIN_FIRST == 0
            && st_now & (st::TX_FIN_REQ | st::TX_FIN_SENT | st::TX_FIN_ACKED) != 0
        {
            // Our FIN was sent before theirs arrived (the fast path records
            // which came first): simultaneous close, keep TIME_WAIT. An app
            // that closed after the peer's FIN is a passive close, even if
            // its FIN request is visible by now.
            c.active_close = true;
        }
    }

    fn fin_acked(&mut self, now: u64, id: FlowId, io: &mut impl StackIo) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.phase != Phase::Open || c.fin_acked {
            return;
        }
        c.fin_acked = true;
        c.fin_acked_at = now;
        if !c.fin_rx {
            c.active_close = true;
        } else if c.active_close {
            self.stats.closed_graceful += 1;
            self.enter_time_wait(now, id);
        } else {
            self.finish_graceful(now, id, io);
        }
    }

    // ------------------------------------------------------------------
    // Frames
    // ------------------------------------------------------------------

    /// A TCP segment for which the fast path has no flow.
    pub(super) fn on_no_flow(&mut self, now: u64, frame: &[u8], io: &mut impl StackIo) {
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
        self.send_rst_reply(p.mac, &p.key, &p.seg, io);
    }

    fn listen_syn(&mut self, now: u64, p: &Parsed<'_>, io: &mut impl StackIo) {
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
        if lst.pending >= lst.backlog {
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

    fn send_synack(&mut self, now: u64, key: &FlowKey, h: &HalfOpen, io: &mut impl StackIo) {
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

    fn drop_half_open(&mut self, key: &FlowKey) -> Option<HalfOpen> {
        let h = self.half_open.remove(key)?;
        if let Some(l) = self.listeners.get_mut(&h.listener) {
            l.half_open = l.half_open.saturating_sub(1);
        }
        Some(h)
    }

    fn syn_rcvd_segment(&mut self, now: u64, p: &Parsed<'_>, frame: &[u8], io: &mut impl StackIo) {
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

    fn syn_sent_segment(&mut self, now: u64, p: &Parsed<'_>, io: &mut impl StackIo) {
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
            mem: c.app,
            group: self.rx_lane,
            cfg,
            mss: peer.mss.min(self.our_mss()),
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
    fn connect_fail(&mut self, key: &FlowKey, err: i32, io: &mut impl StackIo) {
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

    fn send_syn(&mut self, now: u64, key: &FlowKey, c: &Connecting, io: &mut impl StackIo) {
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

    pub(super) fn connect_arp_resolved(
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

    pub(super) fn connect_arp_failed(&mut self, key: FlowKey, io: &mut impl StackIo) {
        if self.connecting.get(&key).map(|c| c.phase) == Some(ConnectPhase::Arp) {
            self.stats.connect_unreachable += 1;
            self.connect_fail(&key, libc::EHOSTUNREACH, io);
        }
    }

    /// A next hop's MAC changed: point flows and pending opens at it.
    pub(super) fn update_next_hop_mac(&mut self, ip: u32, mac: [u8; 6]) {
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

    pub(super) fn on_flow_rst(
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
        let rcv_nxt = f.rx_next_seq;
        let sq = p.seg.seq();
        if sq == rcv_nxt {
            self.stats.rst_rx += 1;
            let open = self.conns.get(&id).map(|c| c.phase) == Some(Phase::Open);
            self.tcp_gone(id, open.then_some(libc::ECONNRESET), io);
        } else if seq::in_range(sq, rcv_nxt, rcv_nxt.wrapping_add(f.rx_avail.max(1))) {
            // RFC 5961 §3.2: in the window but not exact.
            self.challenge_ack(now, &f, io);
        } else {
            self.stats.rst_ignored += 1;
        }
    }

    pub(super) fn on_flow_syn(
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
        let tw = matches!(
            self.conns.get(&id).map(|c| c.phase),
            Some(Phase::TimeWait { .. })
        );
        // A newer timestamp also marks a new incarnation (RFC 6191).
        let newer_ts = f.cfg & fcfg::TS != 0
            && p.seg
                .timestamp()
                .is_some_and(|(val, _)| seq::gt(val, f.tx_next_ts));
        let newer = seq::gt(p.seg.seq(), f.rx_next_seq) || newer_ts;
        if tw && p.seg.flags() & tcp::ACK == 0 && newer {
            // A new incarnation may end TIME_WAIT (RFC 1122 §4.2.2.13).
            self.stats.time_wait_expired += 1;
            self.tcp_gone(id, None, io);
            if self.table.lookup(&p.key).is_none() {
                self.on_no_flow(now, frame, io);
            }
            return;
        }
        // RFC 5961 §4: a SYN on a synchronized connection gets an ACK.
        self.challenge_ack(now, &f, io);
    }

    pub(super) fn on_fin_received_exc(
        &mut self,
        now: u64,
        flow: Option<FlowId>,
        frame: &[u8],
        _io: &mut impl StackIo,
    ) {
        let Some(p) = parse(frame) else {
            return;
        };
        if let Some(id) = self.conn_for(flow, &p.key) {
            self.fin_received(now, id);
        }
    }

    pub(super) fn on_fin_acked_exc(
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

    // ------------------------------------------------------------------
    // Timers
    // ------------------------------------------------------------------

    pub(super) fn connect_timer(&mut self, now: u64, t: u64, key: FlowKey, io: &mut impl StackIo) {
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

    pub(super) fn half_open_timer(
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
        self.send_synack(now, &key, &h, io);
        self.schedule(h.deadline, Timer::HalfOpen(tuple(&key)));
    }

    /// Periodic inspection of an installed flow.
    pub(super) fn flow_timer(&mut self, now: u64, t: u64, id: FlowId, io: &mut impl StackIo) {
        let Some(c) = self.conns.get(&id) else {
            return;
        };
        if c.next_check != t {
            return;
        }
        match c.phase {
            Phase::Dead | Phase::Done => return,
            Phase::TimeWait { until } => {
                if now >= until {
                    self.stats.time_wait_expired += 1;
                    self.tcp_gone(id, None, io);
                } else {
                    self.schedule_check(id, until);
                }
                return;
            }
            Phase::Open => {}
        }
        let key = c.key;
        let Some(f) = self.snapshot(id, &key) else {
            return;
        };
        // Catch up on FIN exceptions that did not reach us.
        if f.st & st::RX_FIN != 0 {
            self.fin_received(now, id);
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
        let (data_retries, fin_timeout) = (self.cfg.data_retries, self.cfg.fin_timeout_ns);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let una = f.snd_una();
        let progressed = una != c.last_una;
        if progressed {
            c.last_una = una;
            c.backoff = 0;
            c.retries = 0;
        }
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
            if !c.busy || progressed {
                c.busy = true;
                c.una_since = now;
            } else if now.saturating_sub(c.una_since) >= rto {
                if c.retries >= data_retries {
                    self.stats.data_timeouts += 1;
                    self.send_flow_rst(now, &f, io);
                    self.tcp_gone(id, Some(libc::ETIMEDOUT), io);
                    return;
                }
                c.retries += 1;
                c.backoff += 1;
                c.una_since = now;
                c.cc.on_timeout();
                self.stats.rto_retransmits += 1;
                io.fastpath(FpCmd::Retransmit(id));
            }
        } else {
            c.busy = false;
            if f.tx_avail > 0 && f.rx_remote_avail == 0 {
                if !c.zw {
                    c.zw = true;
                    c.zw_since = now;
                    c.persist_backoff = 0;
                } else if now.saturating_sub(c.zw_since) >= persist {
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
        // less often: a loss right after an idle period is then detected
        // after at most 4 ticks + RTO instead of 1 tick + RTO.
        let idle = f.tx_sent == 0 && self.conns.get(&id).is_some_and(|c| !c.zw && !c.app_closed);
        let next = if idle { 4 * tick(base) } else { tick(base) };
        self.schedule_check(id, now + next);
    }

    // ------------------------------------------------------------------
    // App requests
    // ------------------------------------------------------------------

    pub(super) fn app_listen(&mut self, app: AppId, msg: &CtlMsg, io: &mut impl StackIo) {
        let [port, backlog, rx_size, tx_size, flags] = msg.arg;
        if port == 0 || port > u16::MAX as u32 || flags & !ctl::F_REUSEPORT != 0 {
            return self.reply_err(io, app, msg, libc::EINVAL);
        }
        if self.cfg.local_ip == 0 {
            return self.reply_err(io, app, msg, libc::EADDRNOTAVAIL);
        }
        let port = port as u16;
        let reuse = flags & ctl::F_REUSEPORT != 0;
        if let Some(ids) = self.ports.get(&port) {
            let all_reuse = ids
                .iter()
                .all(|id| self.listeners.get(id).is_some_and(|l| l.reuse));
            if !ids.is_empty() && (!reuse || !all_reuse || ids.len() >= MAX_REUSEPORT) {
                return self.reply_err(io, app, msg, libc::EADDRINUSE);
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
                reuse,
                opaque: msg.info.opaque,
            },
        );
        self.ports.entry(port).or_default().push(id);
        self.reply(io, app, msg, 0, id);
    }

    fn remove_listener(&mut self, lid: u32, io: &mut impl StackIo) {
        let Some(l) = self.listeners.remove(&lid) else {
            return;
        };
        if let Some(ids) = self.ports.get_mut(&l.port) {
            ids.retain(|&i| i != lid);
            if ids.is_empty() {
                self.ports.remove(&l.port);
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

    pub(super) fn app_unlisten(
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

    pub(super) fn app_accept(&mut self, app: AppId, msg: &CtlMsg, io: &mut impl StackIo) {
        match self.listeners.get_mut(&msg.listener) {
            Some(l) if l.app == app => l.pending = l.pending.saturating_sub(msg.arg[0]),
            _ => self.reply_err(io, app, msg, libc::EBADF),
        }
    }

    pub(super) fn app_connect(
        &mut self,
        now: u64,
        app: AppId,
        msg: &CtlMsg,
        io: &mut impl StackIo,
    ) {
        let [rip, rport, lport, rx_size, tx_size] = msg.arg;
        if rport == 0 || rport > u16::MAX as u32 || lport > u16::MAX as u32 || !self.unicast_ok(rip)
        {
            return self.reply_err(io, app, msg, libc::EINVAL);
        }
        if self.cfg.local_ip == 0 {
            return self.reply_err(io, app, msg, libc::EADDRNOTAVAIL);
        }
        if rip == self.cfg.local_ip {
            // Talking to ourselves through the NIC is not possible.
            return self.reply_err(io, app, msg, libc::ECONNREFUSED);
        }
        let Some(hop) = self.next_hop(rip) else {
            self.stats.connect_unreachable += 1;
            return self.reply_err(io, app, msg, libc::ENETUNREACH);
        };
        let rport = rport as u16;
        let lport = if lport != 0 {
            let key = FlowKey {
                local_ip: self.cfg.local_ip,
                remote_ip: rip,
                local_port: lport as u16,
                remote_port: rport,
            };
            if self.tuple_in_use(&key) {
                return self.reply_err(io, app, msg, libc::EADDRINUSE);
            }
            lport as u16
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
        let rx_len = buf_len(rx_size, self.cfg.default_rx_buf);
        let tx_len = buf_len(tx_size, self.cfg.default_tx_buf);
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
            our_ws: wscale_for(rx_len),
            retries: 0,
            deadline: now.saturating_add(self.cfg.syn_rto_ns.max(1)),
            first_sent: now,
            rx,
            tx,
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

    pub(super) fn app_close(&mut self, now: u64, app: AppId, msg: &CtlMsg, io: &mut impl StackIo) {
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
            Phase::Dead | Phase::Done => self.release(id, io),
            Phase::TimeWait { .. } => {}
            // The app requested its FIN through the fast path before CLOSE;
            // if it did not, the flow timer requests it after a grace period
            // (requesting it here could race data the app queued just before).
            Phase::Open => {}
        }
    }

    pub(super) fn app_abort(&mut self, now: u64, app: AppId, msg: &CtlMsg, io: &mut impl StackIo) {
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

    /// App `app` exited or crashed: RST its connections toward their peers,
    /// remove them, drop its listeners (resetting their half-open
    /// connections) and free its ring memory. No message goes to the app.
    pub fn app_gone(&mut self, now: u64, app: AppId, io: &mut impl StackIo) {
        self.teardown(now, Some(app), io);
    }

    /// The daemon is stopping: every live flow is reset toward its peer and
    /// removed, listeners and half-open connections dropped.
    pub fn shutdown(&mut self, now: u64, io: &mut impl StackIo) {
        self.teardown(now, None, io);
    }

    fn teardown(&mut self, now: u64, app: Option<AppId>, io: &mut impl StackIo) {
        let mine = |a: AppId| match app {
            None => true,
            Some(x) => x == a,
        };
        let lids: Vec<u32> = self
            .listeners
            .iter()
            .filter(|(_, l)| mine(l.app))
            .map(|(id, _)| *id)
            .collect();
        for lid in lids {
            self.remove_listener(lid, io);
        }
        let keys: Vec<FlowKey> = self
            .connecting
            .iter()
            .filter(|(_, c)| mine(c.app))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(c) = self.connecting.remove(&k) {
                Self::free_rings(c.app, c.rx, c.tx, io);
            }
        }
        let mut ids: Vec<FlowId> = self
            .conns
            .iter()
            .filter(|(_, c)| mine(c.app))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            let Some(c) = self.conns.remove(&id) else {
                continue;
            };
            match c.phase {
                Phase::Open => {
                    if let Some(f) = self.snapshot(id, &c.key) {
                        self.stats.aborted += 1;
                        self.send_flow_rst(now, &f, io);
                    }
                    self.table.remove(id);
                }
                Phase::Done | Phase::TimeWait { .. } => {
                    self.table.remove(id);
                }
                Phase::Dead => {
                    if c.placeholder {
                        self.table.remove(id);
                    }
                }
            }
            Self::free_rings(c.app, c.rx, c.tx, io);
        }
    }

    /// Listeners, opens in progress and flows, for `tasctl flows`.
    pub fn flows(&self) -> Vec<FlowSummary> {
        let mut v = Vec::new();
        for l in self.listeners.values() {
            v.push(FlowSummary {
                flow: None,
                local_ip: self.cfg.local_ip,
                local_port: l.port,
                remote_ip: 0,
                remote_port: 0,
                state: "LISTEN",
                app: l.app,
            });
        }
        let summary = |k: &FlowKey, flow, state, app| FlowSummary {
            flow,
            local_ip: k.local_ip,
            local_port: k.local_port,
            remote_ip: k.remote_ip,
            remote_port: k.remote_port,
            state,
            app,
        };
        for (k, c) in &self.connecting {
            let s = match c.phase {
                ConnectPhase::Arp => "ARP_WAIT",
                ConnectPhase::SynSent => "SYN_SENT",
            };
            v.push(summary(k, None, s, c.app));
        }
        for (k, h) in &self.half_open {
            v.push(summary(k, None, "SYN_RCVD", h.app));
        }
        for (id, c) in &self.conns {
            let s = match c.phase {
                Phase::Dead | Phase::Done => "CLOSED",
                Phase::TimeWait { .. } => "TIME_WAIT",
                Phase::Open => {
                    let fst = self.snapshot(*id, &c.key).map(|f| f.st).unwrap_or(0);
                    let fin = fst & (st::TX_FIN_REQ | st::TX_FIN_SENT | st::TX_FIN_ACKED) != 0;
                    let acked = c.fin_acked || fst & st::TX_FIN_ACKED != 0;
                    let rx_fin = c.fin_rx || fst & st::RX_FIN != 0;
                    match (fin, acked, rx_fin) {
                        (false, _, false) => "ESTABLISHED",
                        (false, _, true) => "CLOSE_WAIT",
                        (true, false, false) => "FIN_WAIT1",
                        (true, true, false) => "FIN_WAIT2",
                        (true, false, true) if c.active_close => "CLOSING",
                        (true, false, true) => "LAST_ACK",
                        (true, true, true) => "TIME_WAIT",
                    }
                }
            };
            v.push(summary(&c.key, Some(*id), s, c.app));
        }
        v.sort_by_key(|s| (s.flow, s.local_port, s.remote_ip, s.remote_port));
        v
    }
}

/// How often an installed flow is inspected, for an RTO of `rto`.
fn tick(rto: u64) -> u64 {
    (rto / 2).clamp(MS, 100 * MS)
}

#[cfg(test)]
pub(super) fn wscale_for_test(len: u32) -> u8 {
    wscale_for(len)
}

#[cfg(test)]
impl Stack {
    pub(super) fn isn_test(&self, key: &FlowKey, now: u64) -> u32 {
        self.isn(key, now)
    }
    pub(super) fn listener_ids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.listeners.keys().copied().collect();
        v.sort_unstable();
        v
    }
}
