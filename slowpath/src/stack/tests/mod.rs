//! Packet-level tests: crafted frames into [`Stack`], exact frames, fast-path
//! commands and app messages out (recorded by [`RecIo`]).
//!
//! This module holds the fixture ([`Fx`]: one stack, host A, talking to
//! peer B) and the frame builders and parsers every topic shares; the tests
//! are split by topic: [`arp_routing`], [`icmp`], [`open`] (passive and
//! active open, handshake parameters), [`established`] (RST and SYN on
//! installed flows, close, retransmission timeout, zero-window probes),
//! [`control`] (app control messages and ownership), [`robustness`]
//! (hostile input) and [`timeouts`] (RTO backoff, tail-loss probes).

use std::sync::Arc;

use tas_abi::{ctl, CtlMsg, FlowInfo};
use tas_engine::engine::{ts_now, Exception};
use tas_engine::flow::{cfg, st, FlowState};
use tas_engine::flowtable::{FlowId, FlowTable};
use tas_engine::wire::{arp, checksum, eth, frame, ipv4, tcp, WireError};

use super::sim::{host_cfg, RecIo, Rng, A_IP, A_MAC, B_IP, B_MAC, MS};
use super::{AppId, FpCmd, Stack, StackConfig};

mod arp_routing;
mod backpressure;
mod control;
mod established;
mod flow_stats;
mod grow;
mod icmp;
mod open;
mod rfc5961;
mod robustness;
mod share;
mod syncookies;
mod timeouts;

const APP: AppId = 1;
const PORT: u16 = 80;
const PEER_PORT: u16 = 40000;

/// A frame from `src` to `dst` (no options unless given).
#[allow(clippy::too_many_arguments)]
pub(super) fn tcp_frame_to(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src_ip: u32,
    dst_ip: u32,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let t = tcp::TcpRepr {
        src_port: sport,
        dst_port: dport,
        seq,
        ack,
        flags,
        window: 65535,
        options: tcp::TcpOptions::default(),
    };
    build(dst_mac, src_mac, src_ip, dst_ip, &t, payload)
}

fn build(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src_ip: u32,
    dst_ip: u32,
    t: &tcp::TcpRepr,
    payload: &[u8],
) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let h = frame::FrameHdr {
        src_mac,
        dst_mac,
        src_ip,
        dst_ip,
        ttl: 64,
        ecn: 0,
        ident: 1,
    };
    let n = frame::tcp_frame(&mut buf, &h, t, payload).unwrap();
    buf.truncate(n);
    buf
}

/// A parsed TCP frame the stack sent.
#[derive(Debug)]
struct Out {
    dst_mac: [u8; 6],
    src_ip: u32,
    dst_ip: u32,
    t: tcp::TcpRepr,
    payload: Vec<u8>,
}

fn parse_out(f: &[u8]) -> Out {
    assert!(f.len() >= 60, "frames are padded to 60 bytes");
    let p = frame::parse_tcp_frame(f).expect("a TCP frame");
    assert!(
        tcp::verify_checksum(p.ip.src(), p.ip.dst(), p.ip.payload()),
        "bad TCP checksum"
    );
    assert_eq!(p.eth.src(), A_MAC);
    Out {
        dst_mac: p.eth.dst(),
        src_ip: p.ip.src(),
        dst_ip: p.ip.dst(),
        t: p.tcp.repr().unwrap(),
        payload: p.tcp.payload().to_vec(),
    }
}

/// One stack (host A, 198.18.0.1) with a recording I/O; the peer is B.
struct Fx {
    stack: Stack,
    table: Arc<FlowTable>,
    io: RecIo,
    now: u64,
}

impl Fx {
    fn new() -> Self {
        Self::with(host_cfg(A_IP, A_MAC))
    }
    fn with(c: StackConfig) -> Self {
        let table = Arc::new(FlowTable::new(64));
        Fx {
            stack: Stack::new(c, table.clone(), 42),
            table,
            io: RecIo::default(),
            now: 1_000 * MS,
        }
    }
    fn rx(&mut self, reason: Exception, flow: Option<FlowId>, f: &[u8]) {
        self.stack.on_frame(self.now, reason, flow, f, &mut self.io);
    }
    fn nf(&mut self, f: &[u8]) {
        self.rx(Exception::NoFlow, None, f);
    }
    fn ctl(&mut self, app: AppId, m: CtlMsg) {
        self.stack.on_app_msg(self.now, app, &m, &mut self.io);
    }
    fn at(&mut self, t: u64) {
        self.now = t;
        self.stack.poll(t, &mut self.io);
    }
    fn frames(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.io.frames)
    }
    fn one_tcp(&mut self) -> Out {
        let f = self.frames();
        assert_eq!(f.len(), 1, "expected exactly one frame, got {}", f.len());
        parse_out(&f[0])
    }
    fn msgs(&mut self) -> Vec<(AppId, CtlMsg)> {
        std::mem::take(&mut self.io.msgs)
    }
    fn one_msg(&mut self) -> CtlMsg {
        let m = self.msgs();
        assert_eq!(m.len(), 1, "expected one message: {m:?}");
        assert_eq!(m[0].0, APP);
        m[0].1
    }
    fn cmds(&mut self) -> Vec<FpCmd> {
        std::mem::take(&mut self.io.cmds)
    }
    fn peer(&self, t: tcp::TcpRepr, payload: &[u8]) -> Vec<u8> {
        build(A_MAC, B_MAC, B_IP, A_IP, &t, payload)
    }
    fn listen(&mut self, backlog: u32) -> u32 {
        self.ctl(
            APP,
            CtlMsg {
                kind: ctl::LISTEN,
                req: 1,
                arg: [PORT as u32, backlog, 0, 0, 0],
                ..Default::default()
            },
        );
        let m = self.one_msg();
        assert_eq!((m.kind, m.req, m.err), (ctl::RESULT, 1, 0));
        m.listener
    }
    /// Passive open with full options; returns (flow id, irs, iss).
    fn accept_one(&mut self, irs: u32) -> (FlowId, u32, u32) {
        self.nf(&self.peer(syn(irs, full_opts(500)), &[]));
        let sa = self.one_tcp();
        self.now += 100_000;
        let ack = ack_seg(
            irs + 1,
            sa.t.seq + 1,
            1000,
            Some((501, sa.t.options.timestamp.unwrap().0)),
        );
        self.nf(&self.peer(ack, &[]));
        let m = self.one_msg();
        assert_eq!(m.kind, ctl::ACCEPTED);
        (m.flow, irs, sa.t.seq)
    }
    fn state(&self, id: FlowId) -> FlowState {
        *self.table.lock(id).expect("flow installed")
    }
    fn set(&self, id: FlowId, f: impl FnOnce(&mut FlowState)) {
        f(&mut self.table.lock(id).expect("flow installed"));
    }
    fn set_cold(&self, id: FlowId, f: impl FnOnce(&mut tas_engine::flow::FlowCold)) {
        f(self.table.lock(id).expect("flow installed").cold_mut());
    }
}

fn syn(seq: u32, options: tcp::TcpOptions) -> tcp::TcpRepr {
    tcp::TcpRepr {
        src_port: PEER_PORT,
        dst_port: PORT,
        seq,
        ack: 0,
        flags: tcp::SYN,
        window: 64240,
        options,
    }
}

fn ack_seg(seq: u32, ack: u32, window: u16, ts: Option<(u32, u32)>) -> tcp::TcpRepr {
    tcp::TcpRepr {
        src_port: PEER_PORT,
        dst_port: PORT,
        seq,
        ack,
        flags: tcp::ACK,
        window,
        options: tcp::TcpOptions {
            timestamp: ts,
            ..Default::default()
        },
    }
}

fn full_opts(tsval: u32) -> tcp::TcpOptions {
    tcp::TcpOptions {
        mss: Some(1400),
        wscale: Some(7),
        sack_permitted: true,
        timestamp: Some((tsval, 0)),
        ..Default::default()
    }
}

/// An ARP frame (`op`) from `smac`/`sip` about `tmac`/`tip`, sent to `dst`.
fn arp_frame(op: u16, smac: [u8; 6], sip: u32, tmac: [u8; 6], tip: u32, dst: [u8; 6]) -> Vec<u8> {
    let mut b = vec![0u8; 60];
    eth::emit(&mut b, dst, smac, eth::ETHERTYPE_ARP).unwrap();
    arp::ArpRepr {
        op,
        sender_mac: smac,
        sender_ip: sip,
        target_mac: tmac,
        target_ip: tip,
    }
    .emit(&mut b[14..])
    .unwrap();
    b
}
