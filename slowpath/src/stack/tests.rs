//! Packet-level tests: crafted frames into [`Stack`], exact frames, fast-path
//! commands and app messages out (recorded by [`RecIo`]).

use std::sync::Arc;

use tas_abi::{ctl, CtlMsg, FlowInfo};
use tas_engine::engine::{ts_now, Exception};
use tas_engine::flow::{cfg, st, FlowState};
use tas_engine::flowtable::{FlowId, FlowTable};
use tas_engine::wire::{arp, checksum, eth, frame, ipv4, tcp, WireError};

use super::sim::{host_cfg, RecIo, Rng, A_IP, A_MAC, B_IP, B_MAC, MS};
use super::{AppId, FpCmd, Stack, StackConfig};

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

// ---------------------------------------------------------------------------
// ARP
// ---------------------------------------------------------------------------

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

fn parse_arp(f: &[u8]) -> ([u8; 6], arp::ArpRepr) {
    assert_eq!(f.len(), 60);
    let e = eth::EthFrame::parse(f).unwrap();
    assert_eq!(e.ethertype(), eth::ETHERTYPE_ARP);
    assert_eq!(e.src(), A_MAC);
    (e.dst(), arp::ArpPacket::parse(e.payload()).unwrap().repr())
}

#[test]
fn arp_request_for_us_is_answered_and_learned() {
    let mut fx = Fx::new();
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REQUEST, B_MAC, B_IP, [0; 6], A_IP, eth::BROADCAST),
    );
    let f = fx.frames();
    assert_eq!(f.len(), 1);
    let (dst, r) = parse_arp(&f[0]);
    assert_eq!(dst, B_MAC);
    assert_eq!(
        r,
        arp::ArpRepr {
            op: arp::OP_REPLY,
            sender_mac: A_MAC,
            sender_ip: A_IP,
            target_mac: B_MAC,
            target_ip: B_IP
        }
    );
    assert_eq!(fx.stack.arp_entries().len(), 1);
    assert_eq!(fx.stack.arp_entries()[0].0, B_IP);
    assert_eq!(fx.stack.arp_entries()[0].1, B_MAC);
}

#[test]
fn arp_not_for_us_is_not_answered_and_gratuitous_only_refreshes() {
    let mut fx = Fx::new();
    let c_ip = 0xC612_0003;
    let c_mac = [2, 0, 0, 0, 0, 3];
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REQUEST, c_mac, c_ip, [0; 6], B_IP, eth::BROADCAST),
    );
    assert!(fx.frames().is_empty());
    assert!(
        fx.stack.arp_entries().is_empty(),
        "not learned from requests for others"
    );
    // Gratuitous ARP from an unknown host: not learned.
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REQUEST, c_mac, c_ip, [0; 6], c_ip, eth::BROADCAST),
    );
    assert!(fx.stack.arp_entries().is_empty());
    // Learn B, then B announces a new MAC gratuitously: updated.
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REQUEST, B_MAC, B_IP, [0; 6], A_IP, eth::BROADCAST),
    );
    fx.frames();
    let new_mac = [2, 0, 0, 0, 0, 0x22];
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(
            arp::OP_REPLY,
            new_mac,
            B_IP,
            eth::BROADCAST,
            B_IP,
            eth::BROADCAST,
        ),
    );
    assert!(fx.frames().is_empty());
    assert_eq!(fx.stack.arp_entries()[0].1, new_mac);
    // Someone claiming our address: counted, ignored.
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REQUEST, c_mac, A_IP, [0; 6], A_IP, eth::BROADCAST),
    );
    assert_eq!(fx.stack.stats().arp_conflicts, 1);
    // Truncated ARP.
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REQUEST, c_mac, c_ip, [0; 6], A_IP, eth::BROADCAST)[..30],
    );
    assert_eq!(fx.stack.stats().dropped_malformed, 1);
}

#[test]
fn arp_change_moves_installed_flows() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, ..) = fx.accept_one(1000);
    assert_eq!(fx.state(id).remote_mac, B_MAC);
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REQUEST, B_MAC, B_IP, [0; 6], A_IP, eth::BROADCAST),
    );
    let new_mac = [2, 0, 0, 0, 0, 0x22];
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(
            arp::OP_REPLY,
            new_mac,
            B_IP,
            eth::BROADCAST,
            B_IP,
            eth::BROADCAST,
        ),
    );
    assert_eq!(fx.state(id).remote_mac, new_mac);
}

#[test]
fn connect_resolves_arp_and_cache_expires() {
    let mut c = host_cfg(A_IP, A_MAC);
    c.arp_ttl_ns = 5000 * MS;
    let mut fx = Fx::with(c);
    let connect = |fx: &mut Fx, req: u32| {
        fx.ctl(
            APP,
            CtlMsg {
                kind: ctl::CONNECT,
                req,
                arg: [B_IP, 80, 0, 0, 0],
                ..Default::default()
            },
        )
    };
    connect(&mut fx, 1);
    let f = fx.frames();
    assert_eq!(f.len(), 1);
    let (dst, r) = parse_arp(&f[0]);
    assert_eq!(dst, eth::BROADCAST);
    assert_eq!(
        (r.op, r.sender_ip, r.sender_mac, r.target_ip, r.target_mac),
        (arp::OP_REQUEST, A_IP, A_MAC, B_IP, [0; 6])
    );
    assert_eq!(fx.stack.flows()[0].state, "ARP_WAIT");
    // The reply releases the SYN.
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REPLY, B_MAC, B_IP, A_MAC, A_IP, A_MAC),
    );
    let s = fx.one_tcp();
    assert_eq!((s.dst_mac, s.t.flags, s.dst_ip), (B_MAC, tcp::SYN, B_IP));
    assert_eq!(fx.stack.flows()[0].state, "SYN_SENT");
    // A second connect within the TTL goes straight to SYN.
    fx.now += 1000 * MS;
    connect(&mut fx, 2);
    assert_eq!(fx.one_tcp().t.flags, tcp::SYN);
    // After the TTL: ARP again.
    fx.now += 5000 * MS;
    connect(&mut fx, 3);
    let f = fx.frames();
    assert_eq!(f.len(), 1);
    assert_eq!(parse_arp(&f[0]).1.op, arp::OP_REQUEST);
    assert!(fx.stack.stats().arp_expired >= 1);
}

#[test]
fn arp_retries_then_ehostunreach_for_every_waiter() {
    let mut fx = Fx::new();
    for req in 1..=2 {
        fx.ctl(
            APP,
            CtlMsg {
                kind: ctl::CONNECT,
                req,
                arg: [B_IP, 80 + req, 0, 0, 0],
                ..Default::default()
            },
        );
    }
    assert_eq!(fx.frames().len(), 1, "one request for both waiters");
    let t0 = fx.now;
    for i in 1..=3 {
        fx.at(t0 + i * 500 * MS);
        assert_eq!(fx.frames().len(), 1, "retry {i}");
        assert!(fx.msgs().is_empty());
    }
    fx.at(t0 + 2000 * MS);
    assert!(fx.frames().is_empty());
    let m = fx.msgs();
    assert_eq!(m.len(), 2);
    assert!(m
        .iter()
        .all(|(_, m)| m.kind == ctl::RESULT && m.err == libc::EHOSTUNREACH));
    assert_eq!(fx.io.used(APP), 0);
    assert!(fx.stack.flows().is_empty());
}

#[test]
fn routing_uses_the_gateway_off_subnet() {
    let gw = 0xC612_00FE;
    let mut c = host_cfg(A_IP, A_MAC);
    c.gateway = Some(gw);
    let mut fx = Fx::with(c);
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::CONNECT,
            req: 1,
            arg: [0xC613_0005, 80, 0, 0, 0],
            ..Default::default()
        },
    );
    let f = fx.frames();
    assert_eq!(parse_arp(&f[0]).1.target_ip, gw);
}

// ---------------------------------------------------------------------------
// ICMP
// ---------------------------------------------------------------------------

fn icmp_frame(
    dst_ip: u32,
    typ: u8,
    id: u16,
    seqn: u16,
    payload: &[u8],
    good_csum: bool,
) -> Vec<u8> {
    let mut icmp = vec![typ, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seqn.to_be_bytes());
    icmp.extend_from_slice(payload);
    let c = checksum::fold(checksum::sum(&icmp, 0)) ^ if good_csum { 0 } else { 1 };
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut b = vec![0u8; 34 + icmp.len()];
    eth::emit(&mut b, A_MAC, B_MAC, eth::ETHERTYPE_IPV4).unwrap();
    ipv4::Ipv4Repr {
        src: B_IP,
        dst: dst_ip,
        protocol: ipv4::PROTO_ICMP,
        ttl: 64,
        ecn: 0,
        ident: 9,
        dont_fragment: true,
        payload_len: icmp.len() as u16,
    }
    .emit(&mut b[14..])
    .unwrap();
    b[34..].copy_from_slice(&icmp);
    b
}

#[test]
fn ping_gets_an_echo_reply() {
    let mut fx = Fx::new();
    let payload: Vec<u8> = (0..57u8).collect();
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_frame(A_IP, 8, 0x1234, 7, &payload, true),
    );
    let f = fx.frames();
    assert_eq!(f.len(), 1);
    let e = eth::EthFrame::parse(&f[0]).unwrap();
    assert_eq!(
        (e.dst(), e.src(), e.ethertype()),
        (B_MAC, A_MAC, eth::ETHERTYPE_IPV4)
    );
    let ip = ipv4::Ipv4Packet::parse(e.payload()).unwrap();
    assert_eq!(
        (ip.src(), ip.dst(), ip.protocol()),
        (A_IP, B_IP, ipv4::PROTO_ICMP)
    );
    let m = ip.payload();
    assert_eq!(checksum::fold(checksum::sum(m, 0)), 0, "ICMP checksum");
    assert_eq!(&m[..2], &[0, 0], "echo reply");
    assert_eq!(&m[4..6], &0x1234u16.to_be_bytes());
    assert_eq!(&m[6..8], &7u16.to_be_bytes());
    assert_eq!(&m[8..], &payload[..]);
    assert_eq!(fx.stack.stats().icmp_echo_replies, 1);
    // Not for us, bad checksum, not an echo request: ignored.
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_frame(B_IP, 8, 1, 1, b"x", true),
    );
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_frame(A_IP, 8, 1, 1, b"x", false),
    );
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_frame(A_IP, 3, 1, 1, b"x", true),
    );
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_frame(A_IP, 8, 1, 1, b"", true)[..38],
    );
    assert!(fx.frames().is_empty());
    assert_eq!(fx.stack.stats().icmp_ignored, 3);
    assert_eq!(fx.stack.stats().dropped_malformed, 1);
}

// ---------------------------------------------------------------------------
// Passive open
// ---------------------------------------------------------------------------

#[test]
fn passive_open_negotiates_options_and_installs_the_flow() {
    let mut c = host_cfg(A_IP, A_MAC);
    c.ecn = true;
    let mut fx = Fx::with(c);
    let lid = fx.listen(16);
    let irs = 0xFFFF_FFF0; // wraps right away
    let mut s = syn(irs, full_opts(500));
    s.flags |= tcp::ECE | tcp::CWR;
    fx.nf(&fx.peer(s, &[]));
    let sa = fx.one_tcp();
    assert_eq!((sa.dst_mac, sa.src_ip, sa.dst_ip), (B_MAC, A_IP, B_IP));
    assert_eq!(sa.t.flags, tcp::SYN | tcp::ACK | tcp::ECE);
    assert_eq!((sa.t.src_port, sa.t.dst_port), (PORT, PEER_PORT));
    assert_eq!(sa.t.ack, irs.wrapping_add(1));
    assert_eq!(sa.t.window, 65535, "SYN-ACK window is unscaled");
    let o = sa.t.options;
    assert_eq!(o.mss, Some(1460));
    assert_eq!(o.wscale, Some(3), "256 KiB >> 3 fits 16 bits");
    assert!(o.sack_permitted);
    assert_eq!(o.timestamp, Some((ts_now(fx.now), 500)));
    assert_eq!(fx.stack.flows()[1].state, "SYN_RCVD");
    assert!(
        fx.table.is_empty(),
        "half-open connections stay out of the table"
    );
    let iss = sa.t.seq;
    fx.now += 300_000;
    fx.nf(&fx.peer(
        ack_seg(
            irs.wrapping_add(1),
            iss.wrapping_add(1),
            1000,
            Some((777, 9)),
        ),
        &[],
    ));
    let m = fx.one_msg();
    assert_eq!((m.kind, m.listener, m.err), (ctl::ACCEPTED, lid, 0));
    let f = fx.state(m.flow);
    assert_eq!(
        (f.local_ip, f.remote_ip, f.local_port, f.remote_port),
        (A_IP, B_IP, PORT, PEER_PORT)
    );
    assert_eq!(f.remote_mac, B_MAC);
    assert_eq!((f.context, f.mem), (APP, APP));
    // dctcp-rate (the default) starts every flow rate-limited at 10 Mbit/s.
    assert_eq!(f.cfg, cfg::TS | cfg::SACK | cfg::ECN | cfg::RATE);
    assert_eq!({ f.tx_rate }, 10_000);
    assert_eq!(f.mss, 1400);
    assert_eq!((f.snd_wscale, f.rcv_wscale), (7, 3));
    assert_eq!(
        { f.rx_remote_avail },
        1000 << 7,
        "the final ACK's window is scaled"
    );
    assert_eq!({ f.rx_next_seq }, irs.wrapping_add(1));
    assert_eq!({ f.tx_next_seq }, iss.wrapping_add(1));
    assert_eq!({ f.rx_avail }, f.rx_len);
    assert_eq!((f.rx_len, f.tx_len), (256 << 10, 256 << 10));
    assert_eq!({ f.tx_next_ts }, 777);
    assert_eq!({ f.rtt_est }, 300, "handshake RTT seeds the estimate (µs)");
    assert_eq!(
        (f.tx_rate, f.tx_cwnd, f.tx_sent, f.tx_avail),
        (10_000, 0, 0, 0)
    );
    let i = m.info;
    assert_eq!(
        (i.flow, i.local_port, i.remote_port, i.remote_ip),
        (m.flow, PORT, PEER_PORT, B_IP)
    );
    assert_eq!(
        (i.rx_base, i.rx_len, i.tx_base, i.tx_len),
        (f.rx_base, f.rx_len, f.tx_base, f.tx_len)
    );
    assert_eq!(
        (i.rx_seq, i.tx_seq, i.mss),
        (irs.wrapping_add(1), iss.wrapping_add(1), 1388)
    );
    assert!(fx.frames().is_empty(), "no frame for a plain final ACK");
    assert!(fx.cmds().is_empty());
    assert_eq!(fx.stack.flows()[1].state, "ESTABLISHED");
    assert_eq!(fx.io.used(APP), 2);
}

#[test]
fn passive_open_without_options() {
    let mut fx = Fx::new();
    fx.listen(16);
    fx.nf(&fx.peer(syn(5000, tcp::TcpOptions::default()), &[]));
    let sa = fx.one_tcp();
    assert_eq!(sa.t.flags, tcp::SYN | tcp::ACK);
    assert_eq!(
        sa.t.options,
        tcp::TcpOptions {
            mss: Some(1460),
            ..Default::default()
        }
    );
    fx.nf(&fx.peer(ack_seg(5001, sa.t.seq + 1, 30000, None), &[]));
    let m = fx.one_msg();
    let f = fx.state(m.flow);
    assert_eq!(f.cfg, cfg::RATE);
    assert_eq!(f.mss, 536);
    assert_eq!((f.snd_wscale, f.rcv_wscale), (0, 0));
    assert_eq!({ f.rx_remote_avail }, 30000);
}

#[test]
fn data_racing_the_install_goes_back_to_the_fast_path() {
    let mut fx = Fx::new();
    fx.listen(16);
    fx.nf(&fx.peer(syn(100, full_opts(1)), &[]));
    let sa = fx.one_tcp();
    let mut a = ack_seg(101, sa.t.seq + 1, 1000, Some((2, 1)));
    a.flags |= tcp::PSH;
    let with_data = fx.peer(a, b"hello");
    fx.nf(&with_data);
    assert_eq!(fx.one_msg().kind, ctl::ACCEPTED);
    assert_eq!(fx.cmds(), vec![FpCmd::Rx(with_data)]);
    // A later segment that was queued as NoFlow before the install.
    let later = fx.peer(ack_seg(106, sa.t.seq + 1, 1000, Some((3, 1))), b"world");
    fx.nf(&later);
    assert_eq!(fx.cmds(), vec![FpCmd::Rx(later)]);
    assert!(fx.frames().is_empty());
    assert_eq!(fx.stack.stats().reinjected, 2);
}

#[test]
fn handshake_errors() {
    let mut fx = Fx::new();
    fx.listen(16);
    fx.nf(&fx.peer(syn(100, full_opts(1)), &[]));
    let sa = fx.one_tcp();
    // Duplicate SYN: the SYN-ACK again, same ISN.
    fx.nf(&fx.peer(syn(100, full_opts(1)), &[]));
    let again = fx.one_tcp();
    assert_eq!(
        (again.t.seq, again.t.flags),
        (sa.t.seq, tcp::SYN | tcp::ACK)
    );
    // ACK of the wrong sequence: RST with seq = its ack.
    fx.nf(&fx.peer(ack_seg(101, sa.t.seq + 7, 1000, None), &[]));
    let r = fx.one_tcp();
    assert_eq!((r.t.flags, r.t.seq), (tcp::RST, sa.t.seq + 7));
    // RST with a wrong sequence: ignored; with the right one: forgotten.
    let mut rst = ack_seg(150, 0, 0, None);
    rst.flags = tcp::RST;
    fx.nf(&fx.peer(rst, &[]));
    assert_eq!(fx.stack.flows().len(), 2);
    rst.seq = 101;
    fx.nf(&fx.peer(rst, &[]));
    assert!(fx.frames().is_empty());
    assert_eq!(fx.stack.flows().len(), 1, "only the listener is left");
    assert!(fx.msgs().is_empty());
}

#[test]
fn syn_ack_is_retransmitted_with_backoff_then_dropped() {
    let mut fx = Fx::new();
    fx.listen(16);
    let t0 = fx.now;
    fx.nf(&fx.peer(syn(100, full_opts(1)), &[]));
    fx.frames();
    let mut t = t0;
    for i in 0..6u64 {
        t += (200 * MS) << i;
        fx.at(t - 1);
        assert!(fx.frames().is_empty(), "not before {t}");
        fx.at(t);
        assert_eq!(fx.one_tcp().t.flags, tcp::SYN | tcp::ACK);
    }
    fx.at(t + ((200 * MS) << 6));
    assert!(fx.frames().is_empty());
    assert_eq!(fx.stack.flows().len(), 1);
    assert_eq!(fx.stack.stats().half_open_timeouts, 1);
}

#[test]
fn segments_without_a_connection_get_rst() {
    let mut fx = Fx::new();
    // SYN to a closed port: RST|ACK, ack = seq + 1.
    fx.nf(&fx.peer(syn(1000, full_opts(1)), &[]));
    let r = fx.one_tcp();
    assert_eq!(
        (r.t.flags, r.t.seq, r.t.ack),
        (tcp::RST | tcp::ACK, 0, 1001)
    );
    assert_eq!(
        (r.t.src_port, r.t.dst_port, r.dst_mac),
        (PORT, PEER_PORT, B_MAC)
    );
    // Data without ACK (and a FIN): ack covers payload and FIN.
    let mut d = ack_seg(7, 0, 0, None);
    d.flags = tcp::FIN | tcp::PSH;
    fx.nf(&fx.peer(d, b"abc"));
    let r = fx.one_tcp();
    assert_eq!((r.t.flags, r.t.seq, r.t.ack), (tcp::RST | tcp::ACK, 0, 11));
    // An ACK: RST with seq = its ack.
    fx.nf(&fx.peer(ack_seg(7, 0xDEAD_BEEF, 100, None), b"zz"));
    let r = fx.one_tcp();
    assert_eq!((r.t.flags, r.t.seq), (tcp::RST, 0xDEAD_BEEF));
    // Never RST an RST; nothing for other addresses or from broadcast ones.
    let mut rst = ack_seg(7, 8, 0, None);
    rst.flags = tcp::RST | tcp::ACK;
    fx.nf(&fx.peer(rst, &[]));
    fx.nf(&build(
        A_MAC,
        B_MAC,
        B_IP,
        0xC612_0009,
        &syn(1, full_opts(1)),
        &[],
    ));
    fx.nf(&build(
        A_MAC,
        B_MAC,
        0xFFFF_FFFF,
        A_IP,
        &syn(1, full_opts(1)),
        &[],
    ));
    fx.nf(&build(
        A_MAC,
        B_MAC,
        0xC612_00FF,
        A_IP,
        &syn(1, full_opts(1)),
        &[],
    ));
    assert!(fx.frames().is_empty());
    assert_eq!(fx.stack.stats().rst_sent, 3);
    // Junk.
    fx.nf(&[0u8; 20]);
    fx.rx(Exception::Malformed(WireError::Truncated), None, &[1, 2, 3]);
    fx.rx(Exception::BadChecksum, None, &[1, 2, 3]);
    fx.rx(Exception::UnusualFlags, Some(3), &[1, 2, 3]);
    fx.rx(Exception::Rst, Some(3), &[1, 2, 3]);
    fx.rx(Exception::Syn, None, &fx.peer(syn(1, full_opts(1)), &[]));
    fx.rx(
        Exception::FinAcked,
        Some(99),
        &fx.peer(syn(1, full_opts(1)), &[]),
    );
    assert!(fx.frames().is_empty());
    let s = fx.stack.stats();
    assert_eq!(
        (
            s.dropped_malformed,
            s.dropped_bad_checksum,
            s.dropped_unusual_flags
        ),
        (3, 1, 1)
    );
}

#[test]
fn backlog_full_drops_syns_and_final_acks() {
    let mut fx = Fx::new();
    let lid = fx.listen(1);
    fx.accept_one(1000);
    // Backlog full: a SYN is dropped silently.
    let mut s2 = syn(2000, full_opts(1));
    s2.src_port = PEER_PORT + 1;
    fx.nf(&fx.peer(s2, &[]));
    assert!(fx.frames().is_empty());
    assert_eq!(fx.stack.stats().syn_dropped_backlog, 1);
    // Credit from the app: it goes through.
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::ACCEPT,
            listener: lid,
            arg: [1, 0, 0, 0, 0],
            ..Default::default()
        },
    );
    assert!(fx.msgs().is_empty(), "ACCEPT is not answered");
    fx.nf(&fx.peer(s2, &[]));
    let sa = fx.one_tcp();
    // Filled again before the final ACK arrives (another connection).
    let mut s3 = syn(3000, full_opts(1));
    s3.src_port = PEER_PORT + 2;
    fx.nf(&fx.peer(s3, &[]));
    let sa3 = fx.one_tcp();
    let mut a3 = ack_seg(3001, sa3.t.seq + 1, 100, None);
    a3.src_port = PEER_PORT + 2;
    fx.nf(&fx.peer(a3, &[]));
    assert_eq!(fx.one_msg().kind, ctl::ACCEPTED);
    let mut a2 = ack_seg(2001, sa.t.seq + 1, 100, None);
    a2.src_port = PEER_PORT + 1;
    fx.nf(&fx.peer(a2, &[]));
    assert!(
        fx.msgs().is_empty(),
        "final ACK dropped while the queue is full"
    );
    assert_eq!(fx.stack.stats().accept_overflow, 1);
    assert!(fx.stack.flows().iter().any(|f| f.state == "SYN_RCVD"));
}

// ---------------------------------------------------------------------------
// Active open
// ---------------------------------------------------------------------------

fn arp_known(fx: &mut Fx) {
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REQUEST, B_MAC, B_IP, [0; 6], A_IP, eth::BROADCAST),
    );
    fx.frames();
}

fn connect_msg(req: u32, port: u16, local: u16) -> CtlMsg {
    CtlMsg {
        kind: ctl::CONNECT,
        req,
        arg: [B_IP, port as u32, local as u32, 100_000, 0],
        info: FlowInfo {
            opaque: 0xABCD,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn active_open_sends_syn_and_installs_on_syn_ack() {
    let mut fx = Fx::new();
    arp_known(&mut fx);
    fx.ctl(APP, connect_msg(9, 443, 0));
    let s = fx.one_tcp();
    assert_eq!(
        (s.dst_mac, s.dst_ip, s.t.dst_port, s.t.flags),
        (B_MAC, B_IP, 443, tcp::SYN)
    );
    assert!((32768..=60999).contains(&s.t.src_port));
    assert_eq!(s.t.window, 65535);
    let o = s.t.options;
    assert_eq!(
        (o.mss, o.wscale, o.sack_permitted),
        (Some(1460), Some(1), true)
    );
    assert_eq!(o.timestamp, Some((ts_now(fx.now), 0)));
    let iss = s.t.seq;
    fx.now += 50_000;
    let sa = tcp::TcpRepr {
        src_port: 443,
        dst_port: s.t.src_port,
        seq: 7777,
        ack: iss.wrapping_add(1),
        flags: tcp::SYN | tcp::ACK,
        window: 29000,
        options: tcp::TcpOptions {
            mss: Some(1200),
            wscale: Some(9),
            sack_permitted: false,
            timestamp: Some((4242, ts_now(fx.now))),
            ..Default::default()
        },
    };
    fx.nf(&fx.peer(sa, &[]));
    let m = fx.one_msg();
    assert_eq!((m.kind, m.req, m.err), (ctl::CONNECTED, 9, 0));
    let f = fx.state(m.flow);
    assert_eq!(f.cfg, cfg::TS | cfg::RATE);
    assert_eq!(f.mss, 1200);
    assert_eq!((f.snd_wscale, f.rcv_wscale), (9, 1));
    assert_eq!({ f.rx_remote_avail }, 29000, "SYN-ACK window is not scaled");
    assert_eq!({ f.rx_next_seq }, 7778);
    assert_eq!({ f.tx_next_seq }, iss.wrapping_add(1));
    assert_eq!({ f.tx_next_ts }, 4242);
    assert_eq!({ f.opaque }, 0xABCD);
    assert_eq!(f.rx_len, 100_000);
    assert_eq!({ f.rtt_est }, 50);
    assert_eq!(
        (m.info.opaque, m.info.rx_seq, m.info.mss),
        (0xABCD, 7778, 1188)
    );
    let a = fx.one_tcp();
    assert_eq!(
        (a.t.flags, a.t.seq, a.t.ack),
        (tcp::ACK, iss.wrapping_add(1), 7778)
    );
    assert_eq!(a.t.window, (100_000u32 >> 1) as u16);
    assert_eq!(a.t.options.timestamp, Some((ts_now(fx.now), 4242)));
    // A retransmitted SYN-ACK (our ACK was lost) reaches the flow as a SYN
    // exception and is answered with an ACK.
    fx.rx(Exception::Syn, Some(m.flow), &fx.peer(sa, &[]));
    let a2 = fx.one_tcp();
    assert_eq!((a2.t.flags, a2.t.ack), (tcp::ACK, 7778));
}

#[test]
fn active_open_refused_and_timed_out() {
    let mut c = host_cfg(A_IP, A_MAC);
    c.syn_retries = 2;
    c.ecn = true;
    let mut fx = Fx::with(c);
    arp_known(&mut fx);
    fx.ctl(APP, connect_msg(1, 443, 5555));
    let s = fx.one_tcp();
    assert_eq!(s.t.flags, tcp::SYN | tcp::ECE | tcp::CWR);
    assert_eq!(s.t.src_port, 5555);
    // Same 4-tuple again: in use.
    fx.ctl(APP, connect_msg(2, 443, 5555));
    assert_eq!(fx.one_msg().err, libc::EADDRINUSE);
    // RST without ACK: ignored. RST|ACK acking our SYN: refused.
    let mut r = tcp::TcpRepr {
        src_port: 443,
        dst_port: 5555,
        seq: 0,
        ack: 0,
        flags: tcp::RST,
        window: 0,
        options: Default::default(),
    };
    fx.nf(&fx.peer(r, &[]));
    assert!(fx.msgs().is_empty());
    r.flags = tcp::RST | tcp::ACK;
    r.ack = s.t.seq.wrapping_add(1);
    fx.nf(&fx.peer(r, &[]));
    let m = fx.one_msg();
    assert_eq!((m.kind, m.req, m.err), (ctl::RESULT, 1, libc::ECONNREFUSED));
    assert_eq!(fx.io.used(APP), 0);
    // Timeout: 200 ms, 400 ms, then 800 ms after the last SYN.
    fx.ctl(APP, connect_msg(3, 443, 0));
    fx.frames();
    let t0 = fx.now;
    fx.at(t0 + 200 * MS);
    assert_eq!(fx.one_tcp().t.flags & tcp::SYN, tcp::SYN);
    fx.at(t0 + 600 * MS);
    assert_eq!(fx.one_tcp().t.flags & tcp::SYN, tcp::SYN);
    fx.at(t0 + 1400 * MS - 1);
    assert!(fx.msgs().is_empty());
    fx.at(t0 + 1400 * MS);
    let m = fx.one_msg();
    assert_eq!((m.req, m.err), (3, libc::ETIMEDOUT));
    assert_eq!(fx.io.used(APP), 0);
}

#[test]
fn syn_ack_with_wrong_ack_gets_rst() {
    let mut fx = Fx::new();
    arp_known(&mut fx);
    fx.ctl(APP, connect_msg(1, 443, 6000));
    let s = fx.one_tcp();
    let sa = tcp::TcpRepr {
        src_port: 443,
        dst_port: 6000,
        seq: 1,
        ack: s.t.seq.wrapping_add(99),
        flags: tcp::SYN | tcp::ACK,
        window: 100,
        options: Default::default(),
    };
    fx.nf(&fx.peer(sa, &[]));
    let r = fx.one_tcp();
    assert_eq!((r.t.flags, r.t.seq), (tcp::RST, s.t.seq.wrapping_add(99)));
    assert!(fx.msgs().is_empty(), "still connecting");
    assert_eq!(fx.stack.flows()[0].state, "SYN_SENT");
}

// ---------------------------------------------------------------------------
// Established flows
// ---------------------------------------------------------------------------

#[test]
fn rst_validation_and_reset_lifecycle() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, irs, _) = fx.accept_one(1000);
    let mut rst = ack_seg(irs + 1 + 10, 0, 0, None);
    rst.flags = tcp::RST;
    fx.rx(Exception::Rst, Some(id), &fx.peer(rst, &[]));
    let ch = fx.one_tcp();
    assert_eq!((ch.t.flags, ch.t.ack), (tcp::ACK, irs + 1), "challenge ACK");
    assert!(ch.t.options.timestamp.is_some());
    rst.seq = irs + 1;
    // A stale flow id (the frame's 4-tuple does not match): ignored.
    fx.rx(Exception::Rst, Some(id + 1), &fx.peer(rst, &[]));
    assert!(fx.msgs().is_empty());
    fx.rx(Exception::Rst, Some(id), &fx.peer(rst, &[]));
    let m = fx.one_msg();
    assert_eq!((m.kind, m.flow, m.err), (ctl::RESET, id, libc::ECONNRESET));
    assert!(fx.frames().is_empty(), "never RST an RST");
    // Gone from the table, but the id stays reserved until CLOSE.
    let key = tas_engine::flow::FlowKey {
        local_ip: A_IP,
        remote_ip: B_IP,
        local_port: PORT,
        remote_port: PEER_PORT,
    };
    assert!(fx.table.lookup(&key).is_none());
    assert_eq!(fx.table.len(), 1);
    assert_eq!(fx.stack.flows()[1].state, "CLOSED");
    let (id2, ..) = {
        let mut s = syn(5000, full_opts(1));
        s.src_port = PEER_PORT + 1;
        fx.nf(&fx.peer(s, &[]));
        let sa = fx.one_tcp();
        let mut a = ack_seg(5001, sa.t.seq + 1, 10, None);
        a.src_port = PEER_PORT + 1;
        fx.nf(&fx.peer(a, &[]));
        let m = fx.one_msg();
        (m.flow, 0, 0)
    };
    assert_ne!(id2, id, "reserved id not reused");
    // ABORT of a reset flow releases it (no RST: it is gone already).
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::ABORT,
            flow: id,
            ..Default::default()
        },
    );
    let m = fx.one_msg();
    assert_eq!((m.kind, m.flow), (ctl::RELEASED, id));
    assert!(fx.frames().is_empty());
    assert_eq!(fx.table.len(), 1);
    assert_eq!(fx.io.used(APP), 2);
}

#[test]
fn syn_on_established_flow_gets_challenge_ack() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, irs, iss) = fx.accept_one(1000);
    fx.rx(
        Exception::Syn,
        Some(id),
        &fx.peer(syn(12345, full_opts(1)), &[]),
    );
    let ch = fx.one_tcp();
    assert_eq!(
        (ch.t.flags, ch.t.seq, ch.t.ack),
        (tcp::ACK, iss + 1, irs + 1)
    );
    assert_eq!(ch.t.window, ((256u32 << 10) >> 3) as u16);
    assert_eq!(fx.table.len(), 1);
    assert!(fx.msgs().is_empty());
}

#[test]
fn challenge_acks_are_rate_limited() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, ..) = fx.accept_one(1000);
    for _ in 0..1500 {
        fx.rx(
            Exception::Syn,
            Some(id),
            &fx.peer(syn(12345, full_opts(1)), &[]),
        );
    }
    assert_eq!(fx.frames().len(), 1000);
    fx.now += 1000 * MS;
    fx.rx(
        Exception::Syn,
        Some(id),
        &fx.peer(syn(12345, full_opts(1)), &[]),
    );
    assert_eq!(fx.frames().len(), 1);
}

#[test]
fn app_closing_before_the_slow_path_sees_the_peers_fin_is_still_a_passive_close() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, ..) = fx.accept_one(1000);
    // The fast path took the peer's FIN first; by the time the slow path
    // handles FinReceived, the app has already asked for its own FIN.
    fx.set(id, |f| {
        f.st |= st::RX_FIN | st::RX_FIN_FIRST | st::TX_FIN_REQ | st::TX_FIN_SENT
    });
    fx.rx(
        Exception::FinReceived,
        Some(id),
        &fx.peer(ack_seg(1001, 0, 0, None), &[]),
    );
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::CLOSE,
            flow: id,
            ..Default::default()
        },
    );
    fx.set(id, |f| f.st |= st::TX_FIN_ACKED);
    fx.rx(
        Exception::FinAcked,
        Some(id),
        &fx.peer(ack_seg(1001, 0, 0, None), &[]),
    );
    // No TIME_WAIT: released (and the rings freed) at once.
    let m = fx.one_msg();
    assert_eq!((m.kind, m.flow), (ctl::RELEASED, id));
    assert!(fx.table.is_empty());
    assert_eq!(fx.io.used(APP), 0);
    assert_eq!(fx.stack.stats().time_wait_entered, 0);
}

#[test]
fn passive_close_releases_at_once_active_close_waits() {
    let mut fx = Fx::new();
    fx.listen(16);
    // Passive: peer FIN first, then our FIN is acknowledged.
    let (id, ..) = fx.accept_one(1000);
    fx.set(id, |f| f.st |= st::RX_FIN);
    fx.rx(
        Exception::FinReceived,
        Some(id),
        &fx.peer(ack_seg(1001, 0, 0, None), &[]),
    );
    assert_eq!(fx.stack.flows()[1].state, "CLOSE_WAIT");
    fx.set(id, |f| f.st |= st::TX_FIN_REQ | st::TX_FIN_SENT);
    assert_eq!(fx.stack.flows()[1].state, "LAST_ACK");
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::CLOSE,
            flow: id,
            ..Default::default()
        },
    );
    assert!(fx.msgs().is_empty());
    fx.set(id, |f| f.st |= st::TX_FIN_ACKED);
    fx.rx(
        Exception::FinAcked,
        Some(id),
        &fx.peer(ack_seg(1001, 0, 0, None), &[]),
    );
    let m = fx.one_msg();
    assert_eq!((m.kind, m.flow), (ctl::RELEASED, id));
    assert!(fx.table.is_empty());
    assert_eq!(fx.io.used(APP), 0);
    // Active: our FIN acknowledged first, then theirs: TIME_WAIT.
    let (id, ..) = {
        let mut s = syn(7000, full_opts(1));
        s.src_port = PEER_PORT + 1;
        fx.nf(&fx.peer(s, &[]));
        let sa = fx.one_tcp();
        let mut a = ack_seg(7001, sa.t.seq + 1, 10, None);
        a.src_port = PEER_PORT + 1;
        fx.nf(&fx.peer(a, &[]));
        (fx.one_msg().flow, 0, 0)
    };
    let key_frame = {
        let mut a = ack_seg(7001, 0, 0, None);
        a.src_port = PEER_PORT + 1;
        fx.peer(a, &[])
    };
    fx.set(id, |f| f.st |= st::TX_FIN_REQ | st::TX_FIN_SENT);
    assert_eq!(fx.stack.flows()[1].state, "FIN_WAIT1");
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::CLOSE,
            flow: id,
            ..Default::default()
        },
    );
    fx.set(id, |f| f.st |= st::TX_FIN_ACKED);
    fx.rx(Exception::FinAcked, Some(id), &key_frame);
    assert_eq!(fx.stack.flows()[1].state, "FIN_WAIT2");
    fx.set(id, |f| f.st |= st::RX_FIN);
    fx.rx(Exception::FinReceived, Some(id), &key_frame);
    assert_eq!(fx.stack.flows()[1].state, "TIME_WAIT");
    assert!(fx.msgs().is_empty());
    let t0 = fx.now;
    fx.at(t0 + 2000 * MS - 1);
    assert!(fx.msgs().is_empty());
    assert_eq!(fx.table.len(), 1);
    fx.at(t0 + 2000 * MS);
    assert_eq!(fx.one_msg().kind, ctl::RELEASED);
    assert!(fx.table.is_empty());
    assert!(fx.frames().is_empty(), "no RST on a normal close");
}

#[test]
fn missed_fin_exceptions_are_caught_by_the_timer() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, ..) = fx.accept_one(1000);
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::CLOSE,
            flow: id,
            ..Default::default()
        },
    );
    fx.set(id, |f| {
        f.st |= st::RX_FIN | st::TX_FIN_REQ | st::TX_FIN_SENT | st::TX_FIN_ACKED
    });
    let t = fx.now;
    fx.at(t + 200 * MS);
    // Both FINs were seen at once; our FIN was out: TIME_WAIT, then release.
    fx.at(t + 200 * MS + 2000 * MS + 200 * MS);
    assert_eq!(fx.one_msg().kind, ctl::RELEASED);
}

#[test]
fn rto_retransmits_with_backoff_and_resets_after_retries() {
    let mut c = host_cfg(A_IP, A_MAC);
    c.data_retries = 3;
    let mut fx = Fx::with(c);
    fx.listen(16);
    let (id, ..) = fx.accept_one(1000);
    // Data in flight, never acknowledged.
    fx.set(id, |f| {
        f.tx_sent = 1000;
        f.tx_next_seq = f.tx_next_seq.wrapping_add(1000);
        f.rtt_est = 0;
    });
    let mut rtx = Vec::new();
    let t0 = fx.now;
    let mut t = t0;
    while t < t0 + 2000 * MS && fx.msgs().is_empty() {
        t += MS;
        fx.at(t);
        for c in fx.cmds() {
            assert_eq!(c, FpCmd::Retransmit(id));
            rtx.push(t - t0);
        }
    }
    assert_eq!(rtx.len(), 3, "{rtx:?}");
    // Each wait doubles (20 ms base, 40, 80; checked every 10 ms).
    let gaps: Vec<u64> = rtx.windows(2).map(|w| (w[1] - w[0]) / MS).collect();
    assert!(
        gaps[0] >= 40 && gaps[0] <= 50 && gaps[1] >= 80 && gaps[1] <= 90,
        "{rtx:?}"
    );
    // The fourth timeout resets: RST to the peer, RESET(ETIMEDOUT) to the app.
    let f = fx.frames();
    assert_eq!(f.len(), 1);
    assert_eq!(parse_out(&f[0]).t.flags, tcp::RST | tcp::ACK);
    assert_eq!(fx.stack.stats().data_timeouts, 1);
}

#[test]
fn rto_progress_resets_the_backoff() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, ..) = fx.accept_one(1000);
    fx.set(id, |f| {
        f.tx_sent = 1000;
        f.rtt_est = 0;
    });
    let t0 = fx.now;
    let mut times = Vec::new();
    for ms in 1..=400u64 {
        fx.at(t0 + ms * MS);
        if !fx.cmds().is_empty() {
            times.push(ms);
            // Some progress after each retransmission.
            fx.set(id, |f| f.tx_next_seq = f.tx_next_seq.wrapping_add(10));
        }
    }
    // Never backs off: retransmissions stay ~20-30 ms apart.
    assert!(times.len() >= 10, "{times:?}");
    assert!(times.windows(2).all(|w| w[1] - w[0] <= 40), "{times:?}");
}

#[test]
fn zero_window_probe() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, irs, iss) = fx.accept_one(1000);
    fx.set(id, |f| {
        f.tx_avail = 500;
        f.rx_remote_avail = 0;
        f.rtt_est = 0;
    });
    let t0 = fx.now;
    let mut probes = Vec::new();
    for ms in 1..=200u64 {
        fx.at(t0 + ms * MS);
        for fr in fx.frames() {
            let o = parse_out(&fr);
            assert_eq!((o.t.flags, o.t.seq, o.t.ack), (tcp::ACK, iss, irs + 1));
            assert_eq!(o.payload.len(), 1);
            probes.push(ms);
        }
    }
    assert!(probes.len() >= 2, "{probes:?}");
    assert!(probes[1] - probes[0] >= 40, "backs off: {probes:?}");
    // The window opens: no more probes.
    fx.set(id, |f| f.rx_remote_avail = 10_000);
    for ms in 201..=400u64 {
        fx.at(t0 + ms * MS);
    }
    assert!(fx.frames().is_empty());
    assert!(fx.cmds().is_empty());
}

// ---------------------------------------------------------------------------
// Control messages
// ---------------------------------------------------------------------------

#[test]
fn control_message_errors() {
    let mut fx = Fx::new();
    let m = |kind, arg: [u32; 5]| CtlMsg {
        kind,
        req: 77,
        arg,
        ..Default::default()
    };
    let err = |fx: &mut Fx, app: AppId, msg: CtlMsg| {
        fx.ctl(app, msg);
        let out = fx.msgs();
        assert_eq!(out.len(), 1, "{msg:?} → {out:?}");
        assert_eq!(
            (out[0].0, out[0].1.kind, out[0].1.req),
            (app, ctl::RESULT, 77)
        );
        out[0].1.err
    };
    assert_eq!(err(&mut fx, APP, m(999, [0; 5])), libc::EINVAL);
    assert_eq!(err(&mut fx, APP, m(ctl::HELLO, [0; 5])), libc::EINVAL);
    assert_eq!(
        err(&mut fx, APP, m(ctl::LISTEN, [0, 1, 0, 0, 0])),
        libc::EINVAL
    );
    assert_eq!(
        err(&mut fx, APP, m(ctl::LISTEN, [70000, 1, 0, 0, 0])),
        libc::EINVAL
    );
    assert_eq!(
        err(&mut fx, APP, m(ctl::LISTEN, [80, 1, 0, 0, 0x80])),
        libc::EINVAL
    );
    assert_eq!(
        err(
            &mut fx,
            super::RESERVED_APP,
            m(ctl::LISTEN, [80, 1, 0, 0, 0])
        ),
        libc::EINVAL
    );
    assert_eq!(err(&mut fx, APP, m(ctl::LISTEN, [80, 1, 0, 0, 0])), 0);
    assert_eq!(
        err(&mut fx, 2, m(ctl::LISTEN, [80, 1, 0, 0, 0])),
        libc::EADDRINUSE
    );
    assert_eq!(
        err(&mut fx, 2, m(ctl::LISTEN, [80, 1, 0, 0, ctl::F_REUSEPORT])),
        libc::EADDRINUSE
    );
    assert_eq!(
        err(
            &mut fx,
            APP,
            m(ctl::LISTEN, [81, 1, 0, 0, ctl::F_REUSEPORT])
        ),
        0
    );
    assert_eq!(
        err(&mut fx, 2, m(ctl::LISTEN, [81, 1, 0, 0, ctl::F_REUSEPORT])),
        0
    );
    assert_eq!(
        err(&mut fx, 2, m(ctl::LISTEN, [81, 1, 0, 0, 0])),
        libc::EADDRINUSE
    );
    let lid = fx.stack.listener_ids()[0];
    let mut u = m(ctl::UNLISTEN, [0; 5]);
    u.listener = lid;
    assert_eq!(err(&mut fx, 2, u), libc::EBADF);
    let mut a = m(ctl::ACCEPT, [1, 0, 0, 0, 0]);
    a.listener = lid;
    assert_eq!(err(&mut fx, 2, a), libc::EBADF);
    a.listener = 12345;
    assert_eq!(err(&mut fx, APP, a), libc::EBADF);
    assert_eq!(err(&mut fx, APP, u), 0);
    assert_eq!(err(&mut fx, APP, u), libc::EBADF, "twice");
    for kind in [ctl::CLOSE, ctl::ABORT] {
        let mut c = m(kind, [0; 5]);
        c.flow = 3;
        assert_eq!(err(&mut fx, APP, c), libc::EBADF);
        c.flow = u32::MAX;
        assert_eq!(err(&mut fx, APP, c), libc::EBADF);
    }
    assert_eq!(
        err(&mut fx, APP, m(ctl::CONNECT, [B_IP, 0, 0, 0, 0])),
        libc::EINVAL
    );
    assert_eq!(
        err(&mut fx, APP, m(ctl::CONNECT, [B_IP, 70000, 0, 0, 0])),
        libc::EINVAL
    );
    assert_eq!(
        err(&mut fx, APP, m(ctl::CONNECT, [B_IP, 80, 70000, 0, 0])),
        libc::EINVAL
    );
    assert_eq!(
        err(&mut fx, APP, m(ctl::CONNECT, [0, 80, 0, 0, 0])),
        libc::EINVAL
    );
    assert_eq!(
        err(&mut fx, APP, m(ctl::CONNECT, [0xFFFF_FFFF, 80, 0, 0, 0])),
        libc::EINVAL
    );
    assert_eq!(
        err(&mut fx, APP, m(ctl::CONNECT, [0xE000_0001, 80, 0, 0, 0])),
        libc::EINVAL
    );
    assert_eq!(
        err(&mut fx, APP, m(ctl::CONNECT, [0xC612_00FF, 80, 0, 0, 0])),
        libc::EINVAL
    );
    assert_eq!(
        err(&mut fx, APP, m(ctl::CONNECT, [0x0808_0808, 80, 0, 0, 0])),
        libc::ENETUNREACH
    );
    assert_eq!(
        err(&mut fx, APP, m(ctl::CONNECT, [A_IP, 80, 0, 0, 0])),
        libc::ECONNREFUSED
    );
    fx.io.oom = true;
    assert_eq!(
        err(&mut fx, APP, m(ctl::CONNECT, [B_IP, 80, 0, 0, 0])),
        libc::ENOMEM
    );
    assert_eq!(fx.stack.stats().ctl_errors, 27);
}

#[test]
fn flows_of_other_apps_are_off_limits() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, ..) = fx.accept_one(1000);
    for kind in [ctl::CLOSE, ctl::ABORT] {
        fx.ctl(
            2,
            CtlMsg {
                kind,
                flow: id,
                ..Default::default()
            },
        );
        let m = fx.msgs();
        assert_eq!((m[0].0, m[0].1.err), (2, libc::EBADF));
    }
    assert_eq!(fx.table.len(), 1);
    // A second CLOSE by the owner is refused too.
    let close = CtlMsg {
        kind: ctl::CLOSE,
        flow: id,
        ..Default::default()
    };
    fx.ctl(APP, close);
    assert!(fx.msgs().is_empty());
    fx.ctl(APP, close);
    assert_eq!(fx.one_msg().err, libc::EBADF);
}

#[test]
fn out_of_memory_on_accept_resets_the_peer() {
    let mut fx = Fx::new();
    fx.listen(16);
    fx.nf(&fx.peer(syn(100, full_opts(1)), &[]));
    let sa = fx.one_tcp();
    fx.io.oom = true;
    fx.nf(&fx.peer(ack_seg(101, sa.t.seq + 1, 10, None), &[]));
    let r = fx.one_tcp();
    assert_eq!((r.t.flags, r.t.seq), (tcp::RST, sa.t.seq + 1));
    assert!(fx.msgs().is_empty());
    assert_eq!(fx.stack.stats().alloc_failures, 1);
    assert_eq!(fx.stack.flows().len(), 1);
}

#[test]
fn unlisten_resets_half_open_and_app_gone_cleans_up() {
    let mut fx = Fx::new();
    let lid = fx.listen(16);
    let (id, ..) = fx.accept_one(1000);
    let mut s = syn(5000, full_opts(1));
    s.src_port = PEER_PORT + 1;
    fx.nf(&fx.peer(s, &[]));
    let sa = fx.one_tcp();
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::UNLISTEN,
            listener: lid,
            ..Default::default()
        },
    );
    let r = fx.one_tcp();
    assert_eq!(
        (r.t.flags, r.t.seq, r.t.ack, r.t.dst_port),
        (tcp::RST | tcp::ACK, sa.t.seq + 1, 5001, PEER_PORT + 1)
    );
    assert_eq!(fx.one_msg().err, 0);
    // The accepted flow is unaffected; app_gone resets it.
    assert_eq!(fx.table.len(), 1);
    let now = fx.now;
    fx.stack.app_gone(now, APP, &mut fx.io);
    let r = fx.one_tcp();
    assert_eq!(r.t.flags, tcp::RST | tcp::ACK);
    assert!(fx.msgs().is_empty(), "nothing is sent to a gone app");
    assert!(fx.table.is_empty());
    assert_eq!(fx.io.used(APP), 0);
    assert!(fx.stack.flows().is_empty());
    let _ = id;
}

#[test]
fn hostile_control_messages_never_panic() {
    let mut fx = Fx::new();
    fx.listen(16);
    fx.accept_one(1000);
    let mut r = Rng::new(99);
    for _ in 0..50_000 {
        let kinds = [1, 2, 3, 4, 5, 6, 7, 101, 0, u32::MAX];
        let mut m = CtlMsg {
            kind: kinds[r.below(kinds.len() as u64) as usize],
            req: r.next() as u32,
            listener: r.below(4) as u32,
            flow: r.below(4) as u32,
            ..Default::default()
        };
        for a in m.arg.iter_mut() {
            *a = match r.below(4) {
                0 => 0,
                1 => r.below(70_000) as u32,
                2 => B_IP,
                _ => r.next() as u32,
            };
        }
        let app = r.below(4) as AppId;
        fx.now += r.below(5 * MS);
        fx.ctl(app, m);
        let t = fx.now;
        fx.at(t);
        fx.msgs();
        fx.frames();
        fx.cmds();
        if r.below(100) == 0 {
            fx.rx(
                Exception::NotTcp,
                None,
                &arp_frame(arp::OP_REPLY, B_MAC, B_IP, A_MAC, A_IP, A_MAC),
            );
        }
    }
    let now = fx.now;
    fx.stack.shutdown(now, &mut fx.io);
    assert!(fx.table.is_empty());
    for app in 0..4 {
        assert_eq!(fx.io.used(app), 0, "app {app} memory");
    }
}

#[test]
fn random_frames_never_panic() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, irs, iss) = fx.accept_one(1000);
    let mut r = Rng::new(7);
    let reasons = [
        Exception::NoFlow,
        Exception::NotTcp,
        Exception::Rst,
        Exception::Syn,
        Exception::FinAcked,
        Exception::FinReceived,
        Exception::UnusualFlags,
    ];
    for i in 0..100_000u32 {
        let mut t = ack_seg(
            irs + r.below(3) as u32,
            iss + r.below(3) as u32,
            r.next() as u16,
            None,
        );
        t.flags = r.next() as u8;
        if r.below(2) == 0 {
            t.src_port = r.next() as u16;
        }
        let mut f = fx.peer(t, &[1, 2, 3][..r.below(4) as usize]);
        if r.below(3) == 0 {
            let n = f.len();
            f[r.below(n as u64) as usize] ^= r.next() as u8;
        }
        if r.below(5) == 0 {
            let n = r.below(f.len() as u64) as usize;
            f.truncate(n);
        }
        let reason = reasons[r.below(reasons.len() as u64) as usize];
        let flow = if r.below(2) == 0 {
            Some(id)
        } else {
            Some(i % 70)
        };
        fx.rx(reason, flow, &f);
        if i % 1000 == 0 {
            let t = fx.now + 50 * MS;
            fx.at(t);
        }
        fx.frames();
        fx.msgs();
        fx.cmds();
    }
}

#[test]
fn wscale_choice() {
    assert_eq!(super::conn::wscale_for_test(65535), 0);
    assert_eq!(super::conn::wscale_for_test(65536), 1);
    assert_eq!(super::conn::wscale_for_test(256 << 10), 3);
    assert_eq!(super::conn::wscale_for_test(64 << 20), 11);
    assert_eq!(super::conn::wscale_for_test(u32::MAX), 14);
}

#[test]
fn isn_is_keyed_and_clocked() {
    let table = Arc::new(FlowTable::new(4));
    let a = Stack::new(host_cfg(A_IP, A_MAC), table.clone(), 1);
    let b = Stack::new(host_cfg(A_IP, A_MAC), table, 2);
    let k = tas_engine::flow::FlowKey {
        local_ip: A_IP,
        remote_ip: B_IP,
        local_port: 1,
        remote_port: 2,
    };
    let k2 = tas_engine::flow::FlowKey {
        remote_port: 3,
        ..k
    };
    assert_ne!(a.isn_test(&k, 0), b.isn_test(&k, 0), "different secrets");
    assert_ne!(a.isn_test(&k, 0), a.isn_test(&k2, 0), "different tuples");
    assert_eq!(
        a.isn_test(&k, 4000).wrapping_sub(a.isn_test(&k, 0)),
        1,
        "4 µs clock"
    );
}
