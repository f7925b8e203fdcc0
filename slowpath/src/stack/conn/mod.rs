//! Connection control: everything about a TCP connection that is not the
//! fast path's common case, from the first SYN to the app letting go of the
//! flow id. This module holds the records (listeners, half-open and
//! connecting opens, installed connections) and the small pure helpers they
//! share; the work is split by stage:
//!
//! * [`exceptions`]: frames the fast path hands up, dispatched by state;
//! * [`icmp_error`]: ICMP errors quoting our segments (path MTU, failed opens);
//! * [`passive`] and [`active`]: the two ways a connection opens, and
//!   [`cookie`], the SYN cookies of a passive open under a SYN flood;
//! * [`close`]: FINs, TIME_WAIT, resets, release and teardown;
//! * [`timers`]: handshake retransmission and per-flow inspection (RTO,
//!   zero-window persist, FIN_WAIT_2 bound);
//! * [`requests`]: the apps' `LISTEN`/`CONNECT`/`CLOSE`/... messages;
//! * [`segment`] and [`resources`]: what the others share (building and
//!   sending segments; ISN, ports, rings and flow-table entries);
//! * [`grow`]: rings that start small and double while the flow needs them
//!   (`RING`, `TX_GROW`, `TX_SWITCH`).

use tas_abi::FlowInfo;
use tas_engine::flow::{st, FlowKey, FlowState};
use tas_engine::flowtable::FlowId;
use tas_engine::wire::{frame, tcp};

use super::ccloop::ConnCc;
use super::{AppId, FlowSummary, ListenerInfo, Stack};

mod active;
mod close;
mod cookie;
mod exceptions;
mod grow;
mod icmp_error;
mod passive;
mod requests;
mod resources;
mod segment;
mod share;
mod timers;
mod timewait;
mod xfer;

pub(in crate::stack) use grow::GROW_ROUND;
pub(in crate::stack) use icmp_error::IcmpError;
#[cfg(test)]
pub(in crate::stack) use share::STATE_WAIT_MAX_NS;
pub(in crate::stack) use share::{Grant, StateWait};
pub(in crate::stack) use timewait::TimeWait;
#[cfg(test)]
pub(in crate::stack) use xfer::{MAX_PENDING_XFERS, XFER_TTL_NS};

/// MSS assumed when the peer announces none (RFC 9293 §3.7.1).
const DEFAULT_PEER_MSS: u16 = 536;
/// Smallest peer MSS we accept (hostile values below are raised).
const MIN_PEER_MSS: u16 = 64;

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
    /// Ring sizes of accepted connections: the most they grow to, or
    /// (pinned: `SO_RCVBUF`/`SO_SNDBUF`) what they get.
    pub(super) rx_size: u32,
    pub(super) tx_size: u32,
    pub(super) rx_pin: bool,
    pub(super) tx_pin: bool,
    pub(super) reuse: bool,
    /// Becomes `FlowState::opaque` of accepted flows.
    pub(super) opaque: u64,
    /// Until when final ACKs are checked against SYN cookies (set when a
    /// cookie is sent; see `cookie`).
    pub(super) cookies_until: u64,
    /// Contexts holding the listener (several after a fork; see `share`).
    pub(super) holders: Vec<AppId>,
    /// The holders that take connections, in turn (`app` is the next).
    pub(super) acceptors: Vec<AppId>,
    /// Connections announced (`ACCEPTED`) and not yet taken, oldest
    /// first, with the app they went to and what it was told (to hand
    /// them to another acceptor when that app stops accepting; at most
    /// about `backlog` long, as `pending`).
    pub(super) announced: Vec<(FlowId, AppId, FlowInfo)>,
}

impl Conn {
    /// The RX and TX ring sizes now.
    pub(in crate::stack) fn ring_lens(&self) -> (u32, u32) {
        (self.rx.len, self.tx.len)
    }
}

impl Listener {
    /// The RX ring an accepted connection starts with (before
    /// [`Stack::ring_sizes`]): the pinned size, or `init` growing to
    /// `rx_size`.
    fn rx_init(&self, init: u32) -> u32 {
        if self.rx_pin {
            self.rx_size
        } else {
            init.min(self.rx_size)
        }
    }
    fn tx_init(&self, init: u32) -> u32 {
        if self.tx_pin {
            self.tx_size
        } else {
            init.min(self.tx_size)
        }
    }
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

/// Where an active open stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectPhase {
    Arp,
    SynSent,
}

/// A ring in the app's region: offset and length in bytes.
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
    /// The most the rings grow to.
    rx_max: u32,
    tx_max: u32,
}

/// Where an installed (or not yet released) connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Installed; the fast path runs it.
    Open,
    /// Both FINs done, still installed because the app has not sent CLOSE
    /// yet (it may still read what arrived). With `Conn::time_wait` we
    /// closed first: CLOSE then moves the 4-tuple to TIME_WAIT.
    Done,
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
    /// The app has exited: the connection lives on as an orphan until its
    /// data and FIN are done (counted in `Stack::orphans`; nothing is sent
    /// to the app).
    orphan: bool,
    /// Closed by the app's exit rather than by its `CLOSE`: reset instead
    /// of FIN if it left received data unread (decided once the app's last
    /// commands are in, see `timers`).
    exit_close: bool,
    closed_at: u64,
    fin_rx: bool,
    fin_acked: bool,
    /// Our FIN went out before the peer's arrived: we keep TIME_WAIT.
    active_close: bool,
    /// We closed first and both FINs are done: TIME_WAIT starts when the
    /// app lets go (timewait.rs).
    time_wait: bool,
    fin_acked_at: u64,
    // Retransmission timeout.
    last_una: u32,
    busy: bool,
    una_since: u64,
    backoff: u32,
    retries: u32,
    // Tail-loss probe: SND.NXT at the last inspection, since when neither
    // it nor SND.UNA moved, whether that state was probed.
    last_nxt: u32,
    quiet_since: u64,
    probed: bool,
    // Zero-window persist.
    zw: bool,
    zw_since: u64,
    persist_backoff: u32,
    /// The last ICMP soft error (errno, 0: none; Linux's `sk_err_soft`):
    /// what the app is told instead of ETIMEDOUT if the connection times
    /// out; cleared when SND.UNA moves.
    soft_err: i32,
    next_check: u64,
    /// Handshake round trip (0 when unknown, e.g. after a retransmission).
    hs_rtt: u64,
    /// Congestion control of the flow (see `ccloop`).
    pub(super) cc: ConnCc,
    /// Contexts holding the flow (several after a fork; see `share`);
    /// `app` gets its notifications.
    pub(super) holders: Vec<AppId>,
    /// Ring growth (`grow`).
    grow: grow::Grow,
}

/// A TCP frame as connection control reads it: the sender's MAC, the
/// 4-tuple from our side, and the segment.
struct Parsed<'a> {
    mac: [u8; 6],
    key: FlowKey,
    seg: tcp::TcpSegment<'a>,
}

/// `frame` parsed, if it is a well-formed TCP/IPv4 frame.
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

/// Our window-scale shift for an RX ring of `len` bytes.
fn wscale_for(len: u32) -> u8 {
    let mut s = 0u8;
    while s < tcp::MAX_WSCALE && (len >> s) > u16::MAX as u32 {
        s += 1;
    }
    s
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

/// The flow as an app is told about it in `ACCEPTED` and `CONNECTED`.
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
        ring_gen: u16::from(f.ring_gen),
        lane: f.group,
        opaque: { f.opaque },
    }
}

impl Stack {
    /// Every listener with its accept queue, for `tasctl listeners`.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        let mut v: Vec<ListenerInfo> = self
            .listeners
            .iter()
            .map(|(id, l)| ListenerInfo {
                id: *id,
                app: l.app,
                port: l.port,
                backlog: l.backlog,
                pending: l.pending,
                half_open: l.half_open,
                reuseport: l.reuse,
            })
            .collect();
        v.sort_by_key(|l| (l.port, l.id));
        v
    }

    /// Whether a listener, handshake, connection or TIME_WAIT entry still
    /// uses local `port` (shared mode keeps the port steered to TAS until
    /// none does).
    pub fn local_port_in_use(&self, port: u16) -> bool {
        self.ports.contains_key(&port)
            || self.half_open.keys().any(|k| k.local_port == port)
            || self.connecting.keys().any(|k| k.local_port == port)
            || self.conns.values().any(|c| c.key.local_port == port)
            || self.lingering.keys().any(|k| k.local_port == port)
            || self.time_wait.keys().any(|k| k.local_port == port)
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
        for k in self.time_wait.keys() {
            v.push(summary(k, None, "TIME_WAIT", crate::stack::RESERVED_APP));
        }
        v
    }
}

#[cfg(test)]
pub(super) fn wscale_for_test(len: u32) -> u8 {
    wscale_for(len)
}

#[cfg(test)]
pub(super) fn next_gen_for_test(cur: u8, last: Option<u8>) -> u8 {
    grow::next_gen(cur, last)
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
