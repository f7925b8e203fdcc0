//! A deterministic network simulator for congestion control: several hosts,
//! each running the real fast path ([`FastPath`]) and slow path ([`Stack`],
//! with its congestion-control loop) over its own [`FlowTable`], joined by
//! one output-queued switch, in virtual time driven by an event queue.
//!
//! * Every host has one full-duplex link to the switch: frames leave the
//!   host's NIC queue one at a time at the link rate and arrive after the
//!   propagation delay; the same on the way back from the switch.
//! * The switch forwards by destination MAC (broadcasts flood). Each output
//!   port has a FIFO of at most `buffer_pkts` frames (drop-tail), marks CE on
//!   ECN-capable frames that arrive to a queue of `k_pkts` or more (DCTCP's
//!   step marking), and drops frames at random with `loss_ppm`.
//! * Apps are bulk senders (active opens, always keeping their TX ring full)
//!   and sinks (passive opens, reading everything at once), driven through
//!   the same commands and notifications as real apps.
//! * A host's fast path is asked to send only while its NIC queue has room
//!   (a NIC ring), one poll round per 100 ns of virtual time.
//!
//! Everything is seeded; the same seed gives the same run.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;

use tas_abi::{cmd, ctl, event, AppCmd, AppEvent, CtlMsg, FlowInfo, VecMem};
use tas_engine::engine::{Config as FpConfig, FastPath};
use tas_engine::flowtable::{FlowId, FlowTable};
use tas_engine::wire::{checksum, ipv4};

use super::sim::{FpOut, Rng};
use super::{AppId, FpCmd, Stack, StackConfig, StackIo};
use crate::apps::RingAlloc;
use crate::cc::CcConfig;

pub(super) const US: u64 = 1_000;
pub(super) const MS: u64 = 1_000_000;
const APP: AppId = 1;
/// NIC ring: the fast path sends only while fewer frames wait.
const NIC_RING: usize = 128;
/// Virtual duration of one fast-path poll round.
const ROUND_NS: u64 = 100;

/// Network parameters.
#[derive(Debug, Clone)]
pub(super) struct NetCfg {
    pub(super) hosts: usize,
    pub(super) link_mbps: u64,
    /// Propagation delay of each link (one way).
    pub(super) delay_ns: u64,
    /// ECN marking threshold in frames (0: no marking).
    pub(super) k_pkts: usize,
    pub(super) buffer_pkts: usize,
    pub(super) loss_ppm: u32,
    pub(super) seed: u64,
    pub(super) cc: CcConfig,
    pub(super) ecn: bool,
    /// Ring sizes of every flow.
    pub(super) ring: u32,
    /// Flows a host can hold (ring memory).
    pub(super) max_flows: usize,
}

impl Default for NetCfg {
    fn default() -> Self {
        NetCfg {
            hosts: 2,
            link_mbps: 10_000,
            delay_ns: 5 * US,
            k_pkts: 65,
            buffer_pkts: 1000,
            loss_ppm: 0,
            seed: 1,
            cc: CcConfig::default(),
            ecn: true,
            ring: 256 << 10,
            max_flows: 100,
        }
    }
}

/// The slow path's outputs, and ring memory for the host's one app.
struct NetIo {
    frames: Vec<Vec<u8>>,
    cmds: Vec<FpCmd>,
    msgs: Vec<CtlMsg>,
    alloc: RingAlloc,
}

impl StackIo for NetIo {
    fn send_frame(&mut self, f: &[u8]) {
        self.frames.push(f.to_vec());
    }
    fn fastpath(&mut self, c: FpCmd) {
        self.cmds.push(c);
    }
    fn app_msg(&mut self, _app: AppId, m: &CtlMsg) {
        self.msgs.push(*m);
    }
    fn alloc(&mut self, _app: AppId, len: u32) -> Option<u32> {
        self.alloc.alloc(len)
    }
    fn free(&mut self, _app: AppId, off: u32, len: u32) {
        self.alloc.free(off, len);
    }
    fn free_bytes(&self, _app: AppId) -> u64 {
        self.alloc.free_bytes()
    }
}

/// One flow as the bulk app sees it.
#[derive(Debug, Clone, Default)]
pub(super) struct BulkFlow {
    pub(super) info: FlowInfo,
    /// Active open: sends forever. Passive open: a sink.
    pub(super) sender: bool,
    written: u64,
    pub(super) acked: u64,
    pub(super) received: u64,
    rx_seq: u32,
    unfreed: u32,
    pub(super) reset: Option<i32>,
}

#[derive(Debug, Default)]
pub(super) struct BulkApp {
    pub(super) flows: BTreeMap<FlowId, BulkFlow>,
    outbox: Vec<CtlMsg>,
    pub(super) connect_errors: u32,
    /// Senders send nothing (idle connections).
    pub(super) quiet: bool,
}

impl BulkApp {
    fn on_ctl(&mut self, m: CtlMsg) {
        match m.kind {
            ctl::ACCEPTED | ctl::CONNECTED => {
                let f = BulkFlow {
                    info: m.info,
                    sender: m.kind == ctl::CONNECTED,
                    rx_seq: m.info.rx_seq,
                    ..Default::default()
                };
                self.flows.insert(m.flow, f);
                if m.kind == ctl::ACCEPTED {
                    self.outbox.push(CtlMsg {
                        kind: ctl::ACCEPT,
                        listener: m.listener,
                        arg: [1, 0, 0, 0, 0],
                        ..Default::default()
                    });
                }
            }
            ctl::RESULT if m.err != 0 => self.connect_errors += 1,
            ctl::RESET => {
                if let Some(f) = self.flows.get_mut(&m.flow) {
                    f.reset = Some(m.err);
                }
            }
            _ => {}
        }
    }

    fn on_event(&mut self, ev: &AppEvent) {
        let Some(f) = self.flows.get_mut(&ev.flow) else {
            return;
        };
        debug_assert_eq!(ev.kind, event::FLOW_UPDATE);
        let new = ev.rx_seq.wrapping_sub(f.rx_seq);
        if new > 0 && new < 1 << 30 {
            f.rx_seq = ev.rx_seq;
            f.received += new as u64;
            f.unfreed += new;
        }
        if f.sender {
            let acked = ev
                .tx_acked_seq
                .wrapping_sub(f.info.tx_seq.wrapping_add(f.acked as u32));
            if acked < 1 << 30 {
                f.acked += acked as u64;
            }
        }
    }

    /// Commands for the fast path: fill TX rings, free RX rings.
    fn act(&mut self) -> Vec<AppCmd> {
        let mut v = Vec::new();
        for (&id, f) in self.flows.iter_mut() {
            if f.reset.is_some() {
                continue;
            }
            let mut c = AppCmd {
                kind: cmd::FLOW_UPDATE,
                flow: id,
                ..Default::default()
            };
            c.rx_freed = std::mem::take(&mut f.unfreed);
            if f.sender && !self.quiet {
                let space = f.info.tx_len as u64 - (f.written - f.acked);
                if space >= f.info.tx_len as u64 / 8 {
                    c.tx_added = space as u32;
                    f.written += space;
                }
            }
            if c.rx_freed > 0 || c.tx_added > 0 {
                v.push(c);
            }
        }
        v
    }
}

/// One host: fast path, slow path, memory, NIC queue and app.
pub(super) struct NetHost {
    pub(super) fp: FastPath,
    pub(super) stack: Stack,
    pub(super) table: Arc<FlowTable>,
    mem: VecMem,
    io: NetIo,
    out: FpOut,
    inbox: Vec<Vec<u8>>,
    pub(super) app: BulkApp,
    nic_q: VecDeque<Vec<u8>>,
    nic_busy: bool,
    wake_at: Option<u64>,
    pub(super) bad_cmds: u64,
}

impl NetHost {
    /// Runs the host at `now`: frames in, exceptions, timers, app, TX.
    /// Returns when to run it again.
    fn step(&mut self, now: u64) -> Option<u64> {
        for f in std::mem::take(&mut self.inbox) {
            self.fp.rx(&f, now, &mut self.mem, &mut self.out);
        }
        for _ in 0..1000 {
            self.settle(now);
            // The app reacts to control messages and notifications.
            let mut work = false;
            for m in std::mem::take(&mut self.io.msgs) {
                self.app.on_ctl(m);
                work = true;
            }
            let app = &mut self.app;
            self.fp.flush_notifications(|_, ev| {
                app.on_event(ev);
                true
            });
            for c in self.app.act() {
                work = true;
                if self
                    .fp
                    .app_cmd(APP, &c, now, &self.mem, &mut self.out)
                    .is_err()
                {
                    self.bad_cmds += 1;
                }
            }
            for m in std::mem::take(&mut self.app.outbox) {
                work = true;
                self.stack.on_app_msg(now, APP, &m, &mut self.io);
            }
            if !work && self.io.msgs.is_empty() {
                break;
            }
        }
        // Transmit while the NIC ring has room.
        let room = NIC_RING.saturating_sub(self.nic_q.len());
        if room > 0 {
            self.fp.poll_tx(now, room, &self.mem, &mut self.out);
        }
        // The round's ACKs (and held ones that are due), as the runtime's
        // loop sends them after its send loop.
        self.fp.flush_acks(now, false, &self.mem, &mut self.out);
        self.settle(now);
        self.nic_q.extend(self.out.frames.drain(..));
        self.nic_q.extend(self.io.frames.drain(..));
        let fp = match self.fp.poll_at() {
            Some(t) if self.nic_q.len() < NIC_RING => Some(t.max(now + ROUND_NS)),
            _ => None,
        };
        [fp, self.stack.poll_at().map(|t| t.max(now + 1))]
            .into_iter()
            .flatten()
            .min()
    }

    /// Exceptions to the slow path, its commands to the fast path, timers.
    fn settle(&mut self, now: u64) {
        super::sim::settle(
            now,
            &mut self.stack,
            &mut self.fp,
            &mut self.mem,
            &mut self.out,
            &mut self.io,
            |io| std::mem::take(&mut io.cmds),
        );
    }
}

/// An output port of the switch (toward host `i`).
#[derive(Debug, Default)]
pub(super) struct Port {
    q: VecDeque<Vec<u8>>,
    busy: bool,
    pub(super) marks: u64,
    pub(super) drops: u64,
    pub(super) tx_bytes: u64,
    pub(super) tx_frames: u64,
}

#[derive(Debug)]
enum Ev {
    /// Run host `h`.
    Wake(usize),
    /// Host `h`'s NIC finished serializing its head frame.
    HostTxDone(usize),
    /// A frame from host `h` reaches the switch.
    SwitchIn(usize, Vec<u8>),
    /// Switch port `p` finished serializing its head frame.
    PortDone(usize),
    /// A frame reaches host `h`.
    Deliver(usize, Vec<u8>),
    /// Measurement sample.
    Sample,
}

struct Queued {
    t: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.t, self.seq).cmp(&(o.t, o.seq))
    }
}

/// What a measurement window recorded.
#[derive(Debug, Default, Clone)]
pub(super) struct Measure {
    pub(super) start: u64,
    pub(super) sample_ns: u64,
    /// Switch port observed.
    pub(super) port: usize,
    /// Queue length (frames) of the port at every sample.
    pub(super) queue: Vec<usize>,
    /// Bytes the port sent, at the start.
    port_bytes0: u64,
    port_marks0: u64,
    port_drops0: u64,
    /// Per flow (host, flow id): received bytes at every fairness sample.
    pub(super) fair_ns: u64,
    next_fair: u64,
    pub(super) received: BTreeMap<(usize, FlowId), Vec<u64>>,
    /// Smoothed RTT (µs) of every sending flow at every sample.
    pub(super) rtts: Vec<u32>,
}

/// Results of a measurement window.
#[derive(Debug, Clone)]
pub(super) struct Report {
    pub(super) secs: f64,
    pub(super) utilization: f64,
    pub(super) queue_mean: f64,
    pub(super) queue_p50: usize,
    pub(super) queue_p99: usize,
    pub(super) queue_max: usize,
    pub(super) marks: u64,
    pub(super) drops: u64,
    /// Per-flow throughput samples (Mbit/s) over all flows and intervals.
    pub(super) tput: Vec<f64>,
    pub(super) tput_p1: f64,
    pub(super) tput_p50: f64,
    pub(super) tput_p99: f64,
    pub(super) rtt_p5: u32,
    pub(super) rtt_p50: u32,
    pub(super) rtt_p95: u32,
    /// Round trip through the observed port: the base RTT of a full-sized
    /// segment and its ACK, plus the queueing delay of every queue sample
    /// (µs).
    pub(super) path_rtt_p5: f64,
    pub(super) path_rtt_p50: f64,
    pub(super) path_rtt_p95: f64,
}

/// The `p`-th percentile (0..=100) of `v`, nearest rank rounded (v must not
/// be empty).
fn pct<T: Copy + PartialOrd>(v: &[T], p: f64) -> T {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    s[((s.len() - 1) as f64 * p / 100.0).round() as usize]
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} ms: util {:.1}%, queue mean {:.1} p50 {} p99 {} max {} pkts, marks {}, drops {}, \
             per-flow Mbit/s p1 {:.0} p50 {:.0} p99 {:.0} (n={}), rtt_est us p5 {} p50 {} p95 {}, \
             path rtt us p5 {:.0} p50 {:.0} p95 {:.0}",
            self.secs * 1e3,
            self.utilization * 100.0,
            self.queue_mean,
            self.queue_p50,
            self.queue_p99,
            self.queue_max,
            self.marks,
            self.drops,
            self.tput_p1,
            self.tput_p50,
            self.tput_p99,
            self.tput.len(),
            self.rtt_p5,
            self.rtt_p50,
            self.rtt_p95,
            self.path_rtt_p5,
            self.path_rtt_p50,
            self.path_rtt_p95
        )
    }
}

/// Hosts, switch, event queue, virtual clock.
pub(super) struct Net {
    pub(super) cfg: NetCfg,
    pub(super) hosts: Vec<NetHost>,
    pub(super) ports: Vec<Port>,
    q: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    pub(super) now: u64,
    rng: Rng,
    req: u32,
    pub(super) measure: Option<Measure>,
}

pub(super) fn host_ip(i: usize) -> u32 {
    0xC612_0001 + i as u32 // 198.18.0.1 + i
}

fn host_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, (i >> 8) as u8, i as u8 + 1]
}

/// Sets CE on an ECN-capable IPv4 frame; false if it is not ECN-capable.
fn mark_ce(f: &mut [u8]) -> bool {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return false;
    }
    let tos = f[15];
    let ecn = tos & 3;
    if ecn != ipv4::ECN_ECT0 && ecn != ipv4::ECN_ECT1 {
        return ecn == ipv4::ECN_CE;
    }
    f[15] = tos | ipv4::ECN_CE;
    let ihl = (f[14] & 0x0f) as usize * 4;
    f[24] = 0;
    f[25] = 0;
    let c = checksum::ipv4_header(&f[14..14 + ihl]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    true
}

impl Net {
    pub(super) fn new(cfg: NetCfg) -> Net {
        let mut hosts = Vec::new();
        for i in 0..cfg.hosts {
            let table = Arc::new(FlowTable::new(1024));
            let sc = StackConfig {
                local_ip: host_ip(i),
                prefix_len: 16,
                local_mac: host_mac(i),
                ecn: cfg.ecn,
                cc: cfg.cc.clone(),
                default_rx_buf: cfg.ring,
                default_tx_buf: cfg.ring,
                ..Default::default()
            };
            let fp = FastPath::new(
                table.clone(),
                FpConfig {
                    local_mac: host_mac(i),
                    ttl: 64,
                    any_mac: false,
                    ack_delay_ns: 0,
                },
            );
            // Room for every flow's rings; pages never touched cost nothing.
            let region = (cfg.ring as usize * 2 + 8192) * cfg.max_flows + (1 << 20);
            hosts.push(NetHost {
                fp,
                stack: Stack::new(
                    sc,
                    table.clone(),
                    cfg.seed.wrapping_mul(31).wrapping_add(i as u64),
                ),
                table,
                mem: VecMem::new(2, region),
                io: NetIo {
                    frames: Vec::new(),
                    cmds: Vec::new(),
                    msgs: Vec::new(),
                    alloc: RingAlloc::new(4096, region as u32),
                },
                out: FpOut::default(),
                inbox: Vec::new(),
                app: BulkApp::default(),
                nic_q: VecDeque::new(),
                nic_busy: false,
                wake_at: None,
                bad_cmds: 0,
            });
        }
        let ports = (0..cfg.hosts).map(|_| Port::default()).collect();
        let rng = Rng::mixed(cfg.seed ^ 0x0C0C);
        Net {
            cfg,
            hosts,
            ports,
            q: BinaryHeap::new(),
            seq: 0,
            now: 0,
            rng,
            req: 0,
            measure: None,
        }
    }

    fn push(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.q.push(Reverse(Queued {
            t,
            seq: self.seq,
            ev,
        }));
    }

    fn wake(&mut self, h: usize, t: u64) {
        let host = &mut self.hosts[h];
        if host.wake_at.is_some_and(|w| w <= t) {
            return;
        }
        host.wake_at = Some(t);
        self.push(t, Ev::Wake(h));
    }

    fn ser_ns(&self, len: usize) -> u64 {
        // Preamble, SFD, FCS and inter-frame gap: 24 bytes; minimum frame 64.
        let wire = (len.max(60) + 24) as u64 * 8;
        (wire * 1000).div_ceil(self.cfg.link_mbps.max(1))
    }

    /// Sends a control message from host `h`'s app; returns its request id.
    pub(super) fn ctl(&mut self, h: usize, mut m: CtlMsg) -> u32 {
        self.req += 1;
        m.req = self.req;
        let now = self.now;
        let host = &mut self.hosts[h];
        host.stack.on_app_msg(now, APP, &m, &mut host.io);
        self.wake(h, now);
        self.req
    }

    pub(super) fn listen(&mut self, h: usize, port: u16) {
        self.ctl(
            h,
            CtlMsg {
                kind: ctl::LISTEN,
                arg: [port as u32, 1024, 0, 0, 0],
                ..Default::default()
            },
        );
    }

    /// Host `h` opens a bulk flow to `dst`:`port`.
    pub(super) fn connect(&mut self, h: usize, dst: usize, port: u16) {
        let ip = host_ip(dst);
        self.ctl(
            h,
            CtlMsg {
                kind: ctl::CONNECT,
                arg: [ip, port as u32, 0, 0, 0],
                ..Default::default()
            },
        );
    }

    /// Runs `dur` of virtual time.
    pub(super) fn run_for(&mut self, dur: u64) {
        let end = self.now + dur;
        while let Some(Reverse(top)) = self.q.peek() {
            if top.t > end {
                break;
            }
            let Some(Reverse(Queued { t, ev, .. })) = self.q.pop() else {
                break;
            };
            self.now = t;
            self.handle(ev);
        }
        self.now = end;
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Wake(h) => {
                if self.hosts[h].wake_at != Some(now) {
                    return;
                }
                self.hosts[h].wake_at = None;
                let next = self.hosts[h].step(now);
                self.start_host_tx(h);
                if let Some(t) = next {
                    self.wake(h, t.max(now + 1));
                }
            }
            Ev::HostTxDone(h) => {
                let host = &mut self.hosts[h];
                host.nic_busy = false;
                if let Some(f) = host.nic_q.pop_front() {
                    let d = self.cfg.delay_ns;
                    self.push(now + d, Ev::SwitchIn(h, f));
                }
                self.start_host_tx(h);
                // Room in the NIC ring again: the fast path may send.
                if self.hosts[h].nic_q.len() < NIC_RING && self.hosts[h].fp.poll_at().is_some() {
                    self.wake(h, now);
                }
            }
            Ev::SwitchIn(src, mut f) => {
                if f.len() < 14 {
                    return;
                }
                let dst: [u8; 6] = f[0..6].try_into().unwrap_or([0; 6]);
                let outs: Vec<usize> = if dst[0] & 1 != 0 {
                    (0..self.hosts.len()).filter(|&p| p != src).collect()
                } else {
                    (0..self.hosts.len())
                        .filter(|&p| host_mac(p) == dst)
                        .collect()
                };
                for (k, &p) in outs.iter().enumerate() {
                    let mut fr = if k + 1 == outs.len() {
                        std::mem::take(&mut f)
                    } else {
                        f.clone()
                    };
                    if self.rng.chance_ppm(self.cfg.loss_ppm) {
                        self.ports[p].drops += 1;
                        continue;
                    }
                    let port = &mut self.ports[p];
                    if port.q.len() >= self.cfg.buffer_pkts {
                        port.drops += 1;
                        continue;
                    }
                    if self.cfg.k_pkts > 0 && port.q.len() >= self.cfg.k_pkts && mark_ce(&mut fr) {
                        port.marks += 1;
                    }
                    port.q.push_back(fr);
                    self.start_port(p);
                }
            }
            Ev::PortDone(p) => {
                let d = self.cfg.delay_ns;
                let port = &mut self.ports[p];
                port.busy = false;
                if let Some(f) = port.q.pop_front() {
                    port.tx_bytes += f.len() as u64;
                    port.tx_frames += 1;
                    self.push(now + d, Ev::Deliver(p, f));
                }
                self.start_port(p);
            }
            Ev::Deliver(h, f) => {
                self.hosts[h].inbox.push(f);
                self.wake(h, now);
            }
            Ev::Sample => self.sample(),
        }
    }

    fn start_host_tx(&mut self, h: usize) {
        let host = &self.hosts[h];
        if host.nic_busy {
            return;
        }
        let Some(len) = host.nic_q.front().map(|f| f.len()) else {
            return;
        };
        let t = self.now + self.ser_ns(len);
        self.hosts[h].nic_busy = true;
        self.push(t, Ev::HostTxDone(h));
    }

    fn start_port(&mut self, p: usize) {
        let port = &self.ports[p];
        if port.busy {
            return;
        }
        let Some(len) = port.q.front().map(|f| f.len()) else {
            return;
        };
        let t = self.now + self.ser_ns(len);
        self.ports[p].busy = true;
        self.push(t, Ev::PortDone(p));
    }

    /// Starts recording: switch port `port` every `sample_ns`, per-flow
    /// received bytes every `fair_ns`.
    pub(super) fn start_measure(&mut self, port: usize, sample_ns: u64, fair_ns: u64) {
        let p = &self.ports[port];
        self.measure = Some(Measure {
            start: self.now,
            sample_ns,
            port,
            port_bytes0: p.tx_bytes,
            port_marks0: p.marks,
            port_drops0: p.drops,
            fair_ns,
            next_fair: self.now,
            ..Default::default()
        });
        self.sample();
    }

    fn sample(&mut self) {
        let now = self.now;
        let Some(m) = self.measure.as_mut() else {
            return;
        };
        m.queue.push(self.ports[m.port].q.len());
        if now >= m.next_fair {
            m.next_fair = now + m.fair_ns;
            for (h, host) in self.hosts.iter().enumerate() {
                for (&id, f) in &host.app.flows {
                    if !f.sender {
                        m.received.entry((h, id)).or_default().push(f.received);
                    }
                }
                for (&id, f) in &host.app.flows {
                    if f.sender && f.reset.is_none() {
                        if let Some(g) = host.table.lock(id) {
                            if g.rtt_est > 0 {
                                m.rtts.push(g.rtt_est);
                            }
                        }
                    }
                }
            }
        }
        let t = now + m.sample_ns;
        self.push(t, Ev::Sample);
    }

    /// Ends the measurement window and summarizes it.
    pub(super) fn report(&mut self) -> Report {
        let m = self.measure.take().expect("measuring");
        let secs = (self.now - m.start) as f64 / 1e9;
        let p = &self.ports[m.port];
        let bytes = p.tx_bytes - m.port_bytes0;
        let capacity = self.cfg.link_mbps as f64 * 1e6 / 8.0 * secs;
        let mut tput = Vec::new();
        for v in m.received.values() {
            for w in v.windows(2) {
                tput.push((w[1] - w[0]) as f64 * 8.0 / (m.fair_ns as f64 / 1e9) / 1e6);
            }
        }
        let queue_mean = m.queue.iter().sum::<usize>() as f64 / m.queue.len().max(1) as f64;
        let rtts = if m.rtts.is_empty() {
            vec![0]
        } else {
            m.rtts.clone()
        };
        let t = if tput.is_empty() {
            vec![0.0]
        } else {
            tput.clone()
        };
        Report {
            secs,
            // Frame bytes without preamble/IFG: a few % below the line rate at best.
            utilization: bytes as f64 / capacity,
            queue_mean,
            queue_p50: pct(&m.queue, 50.0),
            queue_p99: pct(&m.queue, 99.0),
            queue_max: m.queue.iter().copied().max().unwrap_or(0),
            marks: p.marks - m.port_marks0,
            drops: p.drops - m.port_drops0,
            tput,
            tput_p1: pct(&t, 1.0),
            tput_p50: pct(&t, 50.0),
            tput_p99: pct(&t, 99.0),
            rtt_p5: pct(&rtts, 5.0),
            rtt_p50: pct(&rtts, 50.0),
            rtt_p95: pct(&rtts, 95.0),
            path_rtt_p5: self.path_rtt_us(pct(&m.queue, 5.0)),
            path_rtt_p50: self.path_rtt_us(pct(&m.queue, 50.0)),
            path_rtt_p95: self.path_rtt_us(pct(&m.queue, 95.0)),
        }
    }

    /// RTT (µs) of a full-sized segment that finds `queued` full-sized
    /// frames ahead of it: four link delays, two serializations of the
    /// segment and two of its ACK, and the queue.
    pub(super) fn path_rtt_us(&self, queued: usize) -> f64 {
        let seg = self.ser_ns(1514) as f64;
        let ack = self.ser_ns(66) as f64;
        (4.0 * self.cfg.delay_ns as f64 + 2.0 * seg + 2.0 * ack + queued as f64 * seg) / 1000.0
    }

    /// Sender flows of all hosts: (host, flow id, bytes acknowledged).
    pub(super) fn sender_progress(&self) -> Vec<(usize, FlowId, u64)> {
        let mut v = Vec::new();
        for (h, host) in self.hosts.iter().enumerate() {
            for (&id, f) in &host.app.flows {
                if f.sender {
                    v.push((h, id, f.acked));
                }
            }
        }
        v
    }

    /// Flows reset anywhere, plus failed connects and refused app commands.
    pub(super) fn failures(&self) -> u64 {
        self.hosts
            .iter()
            .map(|h| {
                h.app.flows.values().filter(|f| f.reset.is_some()).count() as u64
                    + h.app.connect_errors as u64
                    + h.bad_cmds
            })
            .sum()
    }

    /// Applies a congestion control setting on every host (as `tasctl cc
    /// set` does on a daemon).
    pub(super) fn cc_set(&mut self, algo: &str, kv: &[(&str, &str)]) {
        let kv: Vec<(String, String)> = kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for h in self.hosts.iter_mut() {
            h.stack.cc_set(None, algo, &kv).expect("cc set");
        }
    }

    /// Random delay below `max` (for staggering).
    pub(super) fn jitter(&mut self, max: u64) -> u64 {
        self.rng.below(max)
    }

    /// Established sender flows.
    pub(super) fn senders(&self) -> usize {
        self.hosts
            .iter()
            .map(|h| h.app.flows.values().filter(|f| f.sender).count())
            .sum()
    }
}
