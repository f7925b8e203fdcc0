//! Test harness: a recording [`StackIo`], a two-host in-process network
//! (real `FastPath` + `Stack` + `FlowTable` + `VecMem` per host) over an
//! in-memory wire with a seeded fault injector and a virtual clock, and a
//! small app harness that drives flows through the TX/RX rings and the
//! control messages exactly as an app would.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use tas_abi::{cmd, ctl, event, AppCmd, AppEvent, CtlMsg, FlowInfo, PayloadMem, VecMem};
use tas_engine::engine::{Config as FpConfig, Exception, FastPath, Output};
use tas_engine::flowtable::{FlowId, FlowTable};
use tas_engine::wire::{frame, tcp};

use super::{AppId, FpCmd, Stack, StackConfig, StackIo};

pub(super) const MS: u64 = 1_000_000;
pub(super) const US: u64 = 1_000;
pub(super) const REGION: u32 = 8 << 20;

/// The tests' seeded PRNG (xorshift64*; seeds are mixed: `Rng::mixed`).
pub(super) use tas_testkit::Rng;

/// First-fit allocator over one app region, checking every free.
#[derive(Debug)]
pub(super) struct Region {
    free: Vec<(u32, u32)>,
    pub(super) used: BTreeMap<u32, u32>,
}

impl Region {
    fn new(size: u32) -> Self {
        // The first page stands in for the region header.
        Region {
            free: vec![(4096, size - 4096)],
            used: BTreeMap::new(),
        }
    }
    fn alloc(&mut self, len: u32) -> Option<u32> {
        let i = self.free.iter().position(|&(_, l)| l >= len)?;
        let (off, l) = self.free[i];
        if l == len {
            self.free.remove(i);
        } else {
            self.free[i] = (off + len, l - len);
        }
        self.used.insert(off, len);
        Some(off)
    }
    fn free(&mut self, off: u32, len: u32) {
        assert_eq!(self.used.remove(&off), Some(len), "bad free {off}+{len}");
        self.free.push((off, len));
        self.free.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::new();
        for (o, l) in self.free.drain(..) {
            match merged.last_mut() {
                Some((mo, ml)) if *mo + *ml == o => *ml += l,
                _ => merged.push((o, l)),
            }
        }
        self.free = merged;
    }
}

/// Records everything the stack emits.
#[derive(Default)]
pub(super) struct RecIo {
    pub(super) frames: Vec<Vec<u8>>,
    pub(super) cmds: Vec<FpCmd>,
    pub(super) msgs: Vec<(AppId, CtlMsg)>,
    pub(super) regions: HashMap<AppId, Region>,
    /// Refuse allocations (out-of-memory tests).
    pub(super) oom: bool,
    /// Each app's pid (`StackIo::app_pid`; 0 when absent).
    pub(super) pids: HashMap<AppId, i32>,
    /// Each app's uid (`StackIo::app_uid`; 1000 when absent).
    pub(super) uids: HashMap<AppId, u32>,
    /// Shared mode as the daemon does it: the kernel's neighbours (None:
    /// not shared mode) and the addresses it was asked to resolve.
    pub(super) kernel_neigh: Option<HashMap<u32, [u8; 6]>>,
    pub(super) kernel_asked: Vec<u32>,
    /// The kernel's routes: destination -> next hop (None: unreachable
    /// from our interface); None: not shared mode.
    pub(super) kernel_routes: Option<HashMap<u32, Option<u32>>>,
    /// The region an app's rings come from when not its own (a forked
    /// child uses its parent's, `StackIo::mem_of`).
    pub(super) mem: HashMap<AppId, AppId>,
    /// Copies asked for (`StackIo::copy`): region, from, to, length.
    pub(super) copies: Vec<(AppId, u32, u32, u32)>,
    /// Apps whose command rings hold commands the fast path has not
    /// applied yet (`StackIo::cmds_applied`).
    pub(super) unapplied: HashSet<AppId>,
}

impl RecIo {
    pub(super) fn used(&self, app: AppId) -> usize {
        self.regions.get(&app).map_or(0, |r| r.used.len())
    }
}

impl StackIo for RecIo {
    fn send_frame(&mut self, frame: &[u8]) {
        self.frames.push(frame.to_vec());
    }
    fn fastpath(&mut self, cmd: FpCmd) {
        self.cmds.push(cmd);
    }
    fn app_msg(&mut self, app: AppId, msg: &CtlMsg) {
        self.msgs.push((app, *msg));
    }
    fn alloc(&mut self, app: AppId, len: u32) -> Option<u32> {
        if self.oom {
            return None;
        }
        let app = self.mem_of(app);
        self.regions
            .entry(app)
            .or_insert_with(|| Region::new(REGION))
            .alloc(len)
    }
    fn copy(&mut self, app: AppId, from: u32, to: u32, len: u32) -> bool {
        let app = self.mem_of(app);
        self.copies.push((app, from, to, len));
        true
    }
    fn free(&mut self, app: AppId, off: u32, len: u32) {
        let app = self.mem_of(app);
        self.regions
            .get_mut(&app)
            .expect("free in unknown region")
            .free(off, len);
    }
    fn app_pid(&self, app: AppId) -> i32 {
        self.pids.get(&app).copied().unwrap_or(0)
    }
    fn mem_of(&self, app: AppId) -> AppId {
        self.mem.get(&app).copied().unwrap_or(app)
    }
    fn cmds_applied(&self, app: AppId, _mark: u64) -> bool {
        !self.unapplied.contains(&app)
    }
    fn region_contexts(&self, app: AppId) -> Vec<AppId> {
        let mem = self.mem_of(app);
        let mut v: Vec<AppId> = self
            .pids
            .keys()
            .chain(self.mem.keys())
            .copied()
            .filter(|&a| self.mem_of(a) == mem)
            .chain([app])
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
    fn app_uid(&self, app: AppId) -> u32 {
        self.uids.get(&app).copied().unwrap_or(1000)
    }
    fn kernel_neighbour(&mut self, ip: u32) -> super::KernelNeigh {
        let Some(t) = &self.kernel_neigh else {
            return super::KernelNeigh::NotShared;
        };
        self.kernel_asked.push(ip);
        match t.get(&ip) {
            Some(&mac) => super::KernelNeigh::Known(mac),
            None => super::KernelNeigh::Resolving,
        }
    }
    fn kernel_route(&mut self, dst: u32) -> Option<Option<u32>> {
        let r = self.kernel_routes.as_ref()?;
        Some(r.get(&dst).copied().flatten())
    }
    fn free_bytes(&self, app: AppId) -> u64 {
        match self.regions.get(&self.mem_of(app)) {
            Some(r) => r.free.iter().map(|&(_, l)| l as u64).sum(),
            None if self.oom => 0,
            // Not touched yet: the whole region less its header page.
            None => (REGION - 4096) as u64,
        }
    }
}

/// The fast path's output: frames and exceptions.
#[derive(Default)]
pub(super) struct FpOut {
    pub(super) frames: Vec<Vec<u8>>,
    pub(super) exc: Vec<(Exception, Option<FlowId>, Vec<u8>)>,
    /// The frame being built (`tx_buf`).
    scratch: Vec<u8>,
}

impl Output for FpOut {
    fn tx_buf(&mut self) -> Option<&mut [u8]> {
        self.scratch = vec![0u8; 2048];
        Some(&mut self.scratch)
    }
    fn tx_commit(&mut self, n: usize) {
        if n > 0 {
            let mut b = std::mem::take(&mut self.scratch);
            b.truncate(n);
            self.frames.push(b);
        }
    }
    fn exception(&mut self, reason: Exception, flow: Option<FlowId>, frame: &[u8]) {
        self.exc.push((reason, flow, frame.to_vec()));
    }
    fn forward(&mut self, lane: u16, id: FlowId) {
        panic!("single-lane engine forwarded flow {id} to lane {lane}");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum FinPolicy {
    /// FIN right after the last byte is written.
    #[default]
    AfterSend,
    /// FIN once the peer's FIN arrived and everything is written.
    AfterEof,
    Never,
}

/// One flow as the harness app sees it.
#[derive(Debug, Clone, Default)]
pub(super) struct FlowApp {
    pub(super) info: FlowInfo,
    pub(super) tx_data: Vec<u8>,
    pub(super) tx_written: usize,
    pub(super) tx_acked: usize,
    pub(super) fin: FinPolicy,
    pub(super) fin_requested: bool,
    pub(super) rx_data: Vec<u8>,
    pub(super) rx_seq: u32,
    pub(super) rx_unfreed: u32,
    /// Stop reading (and freeing) RX data until this time.
    pub(super) read_paused_until: u64,
    pub(super) eof: bool,
    pub(super) fin_acked: bool,
    /// Send CLOSE once FIN requested and EOF seen.
    pub(super) close_when_done: bool,
    pub(super) close_sent: bool,
    pub(super) released: bool,
    pub(super) reset: Option<i32>,
}

/// A harness app.
#[derive(Debug, Default)]
pub(super) struct App {
    pub(super) flows: BTreeMap<FlowId, FlowApp>,
    /// Released flows whose id was reused.
    pub(super) history: Vec<FlowApp>,
    early: HashMap<FlowId, AppEvent>,
    /// Template for flows from `ACCEPTED` and `CONNECTED`.
    pub(super) template: FlowApp,
    /// Send `ACCEPT` credit for every `ACCEPTED`.
    pub(super) auto_accept: bool,
    pub(super) log: Vec<CtlMsg>,
    pub(super) outbox: Vec<CtlMsg>,
}

impl App {
    pub(super) fn new(template: FlowApp) -> Self {
        App {
            template,
            auto_accept: true,
            ..Default::default()
        }
    }

    pub(super) fn result_for(&self, req: u32) -> Option<CtlMsg> {
        self.log
            .iter()
            .find(|m| m.req == req && (m.kind == ctl::RESULT || m.kind == ctl::CONNECTED))
            .copied()
    }

    fn on_ctl(&mut self, m: CtlMsg, mem: &VecMem, id: AppId) {
        self.log.push(m);
        match m.kind {
            ctl::ACCEPTED | ctl::CONNECTED => {
                let mut f = self.template.clone();
                f.info = m.info;
                f.rx_seq = m.info.rx_seq;
                if let Some(old) = self.flows.insert(m.flow, f) {
                    assert!(old.released, "flow id {} reused before RELEASED", m.flow);
                    self.history.push(old);
                }
                if let Some(ev) = self.early.remove(&m.flow) {
                    self.on_event(ev, mem, id, 0);
                }
                if m.kind == ctl::ACCEPTED && self.auto_accept {
                    self.outbox.push(CtlMsg {
                        kind: ctl::ACCEPT,
                        listener: m.listener,
                        arg: [1, 0, 0, 0, 0],
                        ..Default::default()
                    });
                }
            }
            ctl::RESET => {
                let f = self.flows.get_mut(&m.flow).expect("RESET for unknown flow");
                assert!(f.reset.is_none() && !f.released);
                f.reset = Some(m.err);
                if !f.close_sent {
                    f.close_sent = true;
                    self.outbox.push(CtlMsg {
                        kind: ctl::CLOSE,
                        flow: m.flow,
                        ..Default::default()
                    });
                }
            }
            ctl::RELEASED => {
                let f = self
                    .flows
                    .get_mut(&m.flow)
                    .expect("RELEASED for unknown flow");
                assert!(f.close_sent, "RELEASED before the app closed");
                assert!(!f.released, "double RELEASED");
                f.released = true;
            }
            _ => {}
        }
    }

    fn on_event(&mut self, ev: AppEvent, mem: &VecMem, id: AppId, now: u64) {
        let Some(f) = self.flows.get_mut(&ev.flow) else {
            self.early.insert(ev.flow, ev);
            return;
        };
        assert_eq!(ev.kind, event::FLOW_UPDATE);
        assert_eq!(ev.opaque, f.info.opaque);
        if f.released || f.reset.is_some() {
            return;
        }
        let _ = now;
        let new = ev.rx_seq.wrapping_sub(f.rx_seq);
        assert!(new < 1 << 30, "rx_seq went backwards");
        if new > 0 {
            let len = f.info.rx_len as usize;
            let mut pos = f.rx_data.len() % len;
            let mut left = new as usize;
            while left > 0 {
                let n = left.min(len - pos);
                let mut buf = vec![0u8; n];
                assert!(mem.read(id, f.info.rx_base + pos as u32, &mut buf));
                f.rx_data.extend_from_slice(&buf);
                left -= n;
                pos = (pos + n) % len;
            }
            f.rx_seq = ev.rx_seq;
            f.rx_unfreed += new;
        }
        let acked = ev.tx_acked_seq.wrapping_sub(f.info.tx_seq) as usize;
        assert!(
            acked <= f.tx_written,
            "peer acked {acked} > written {}",
            f.tx_written
        );
        f.tx_acked = f.tx_acked.max(acked);
        if ev.flags & event::F_RX_FIN != 0 {
            f.eof = true;
        }
        if ev.flags & event::F_TX_FIN_ACKED != 0 {
            assert!(f.fin_requested || f.close_sent);
            f.fin_acked = true;
        }
    }

    /// Commands for the fast path and control messages for the stack.
    fn act(&mut self, mem: &mut VecMem, id: AppId, now: u64) -> (Vec<AppCmd>, Vec<CtlMsg>) {
        let mut cmds = Vec::new();
        let mut ctls = std::mem::take(&mut self.outbox);
        for (&fid, f) in self.flows.iter_mut() {
            if f.released || f.reset.is_some() || f.close_sent && f.fin_requested {
                continue;
            }
            let mut c = AppCmd {
                kind: cmd::FLOW_UPDATE,
                flow: fid,
                ..Default::default()
            };
            if now >= f.read_paused_until {
                c.rx_freed = std::mem::take(&mut f.rx_unfreed);
            }
            let len = f.info.tx_len as usize;
            let space = len - (f.tx_written - f.tx_acked);
            let n = space.min(f.tx_data.len() - f.tx_written);
            if n > 0 && !f.fin_requested {
                let mut pos = f.tx_written % len;
                let mut left = n;
                let mut src = f.tx_written;
                while left > 0 {
                    let k = left.min(len - pos);
                    assert!(mem.write(id, f.info.tx_base + pos as u32, &f.tx_data[src..src + k]));
                    src += k;
                    left -= k;
                    pos = (pos + k) % len;
                }
                f.tx_written += n;
                c.tx_added = n as u32;
            }
            let all_written = f.tx_written == f.tx_data.len();
            let want_fin = match f.fin {
                FinPolicy::AfterSend => all_written,
                FinPolicy::AfterEof => all_written && f.eof,
                FinPolicy::Never => false,
            };
            if want_fin && !f.fin_requested {
                f.fin_requested = true;
                c.flags |= cmd::F_TX_FIN;
            }
            if c.rx_freed > 0 || c.tx_added > 0 || c.flags != 0 {
                cmds.push(c);
            }
            if f.close_when_done && f.fin_requested && f.eof && !f.close_sent {
                f.close_sent = true;
                ctls.push(CtlMsg {
                    kind: ctl::CLOSE,
                    flow: fid,
                    ..Default::default()
                });
            }
        }
        (cmds, ctls)
    }
}

/// One host: fast path, slow path, memory and apps.
pub(super) struct Host {
    pub(super) fp: FastPath,
    pub(super) stack: Stack,
    pub(super) table: Arc<FlowTable>,
    pub(super) mem: VecMem,
    pub(super) io: RecIo,
    pub(super) out: FpOut,
    pub(super) inbox: Vec<Vec<u8>>,
    pub(super) apps: BTreeMap<AppId, App>,
    events: HashMap<u16, VecDeque<AppEvent>>,
    /// App commands the fast path refused (should stay 0).
    pub(super) bad_cmds: usize,
}

impl Host {
    pub(super) fn new(cfg: StackConfig, seed: u64) -> Self {
        let table = Arc::new(FlowTable::new(256));
        let fp = FastPath::new(
            table.clone(),
            FpConfig {
                local_mac: cfg.local_mac,
                ttl: 64,
                any_mac: false,
                ack_delay_ns: 0,
            },
        );
        Host {
            fp,
            stack: Stack::new(cfg, table.clone(), seed),
            table,
            mem: VecMem::new(4, REGION as usize),
            io: RecIo::default(),
            out: FpOut::default(),
            inbox: Vec::new(),
            apps: BTreeMap::new(),
            events: HashMap::new(),
            bad_cmds: 0,
        }
    }

    /// Exceptions to the stack, stack commands to the fast path, timers.
    fn internal(&mut self, now: u64) {
        settle(
            now,
            &mut self.stack,
            &mut self.fp,
            &mut self.mem,
            &mut self.out,
            &mut self.io,
            |io| std::mem::take(&mut io.cmds),
        );
    }

    fn run_apps(&mut self, now: u64) -> bool {
        let mut work = false;
        for (aid, m) in std::mem::take(&mut self.io.msgs) {
            if let Some(app) = self.apps.get_mut(&aid) {
                app.on_ctl(m, &self.mem, aid);
                work = true;
            }
        }
        let ids: Vec<AppId> = self.apps.keys().copied().collect();
        for aid in ids {
            let app = self.apps.get_mut(&aid).expect("app");
            if let Some(evs) = self.events.remove(&aid) {
                for ev in evs {
                    app.on_event(ev, &self.mem, aid, now);
                }
            }
            let (cmds, ctls) = app.act(&mut self.mem, aid, now);
            for c in cmds {
                work = true;
                if self
                    .fp
                    .app_cmd(aid, &c, now, &self.mem, &mut self.out)
                    .is_err()
                {
                    self.bad_cmds += 1;
                }
            }
            for m in ctls {
                work = true;
                self.stack.on_app_msg(now, aid, &m, &mut self.io);
            }
        }
        work
    }

    /// One round at `now`; true if anything happened.
    pub(super) fn step(&mut self, now: u64) -> bool {
        let mut work = !self.inbox.is_empty();
        for f in std::mem::take(&mut self.inbox) {
            self.fp.rx(&f, now, &mut self.mem, &mut self.out);
        }
        self.internal(now);
        work |= self.run_apps(now);
        self.internal(now);
        work |= self.fp.poll_tx(now, 256, &self.mem, &mut self.out) > 0;
        work |= self.fp.flush_acks(now, false, &self.mem, &mut self.out) > 0;
        let events = &mut self.events;
        work |= self.fp.flush_notifications(|ctx, ev| {
            events.entry(ctx).or_default().push_back(*ev);
            true
        }) > 0;
        work
    }

    fn take_tx(&mut self) -> Vec<Vec<u8>> {
        let mut v = std::mem::take(&mut self.out.frames);
        v.append(&mut self.io.frames);
        v
    }

    fn next_time(&self, now: u64) -> Option<u64> {
        let fp = self.fp.poll_at().map(|t| t.max(now + 1));
        [fp, self.stack.poll_at()].into_iter().flatten().min()
    }

    pub(super) fn app(&mut self, id: AppId) -> &mut App {
        self.apps.get_mut(&id).expect("no such app")
    }
}

/// Fault injection probabilities (parts per million).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Faults {
    pub(super) loss: u32,
    pub(super) reorder: u32,
    pub(super) dup: u32,
    pub(super) corrupt: u32,
}

/// (arrival time, sequence number, destination host, frame).
type InFlight = (u64, u64, usize, Vec<u8>);

type Filter = Box<dyn FnMut(u64, usize, &[u8]) -> bool>;

/// A point-to-point link between host 0 and host 1.
pub(super) struct Wire {
    q: BinaryHeap<Reverse<InFlight>>,
    n: u64,
    pub(super) latency: u64,
    /// Link rate in Mbit/s per direction (0: infinite); frames queue.
    pub(super) rate_mbps: u64,
    busy_until: [u64; 2],
    pub(super) faults: Faults,
    rng: Rng,
    /// Frames seen per direction, RSTs seen per direction.
    pub(super) frames: [u64; 2],
    pub(super) rsts: [u64; 2],
    /// Every TCP frame's (time, src host, flags).
    pub(super) tcp_log: Vec<(u64, usize, u8)>,
    /// Drops a frame when it returns false: (now, src host, frame).
    pub(super) filter: Option<Filter>,
}

impl Wire {
    fn new(seed: u64) -> Self {
        Wire {
            q: BinaryHeap::new(),
            n: 0,
            latency: 10 * US,
            rate_mbps: 0,
            busy_until: [0; 2],
            faults: Faults::default(),
            rng: Rng::mixed(seed ^ 0x5EED),
            frames: [0; 2],
            rsts: [0; 2],
            tcp_log: Vec::new(),
            filter: None,
        }
    }

    fn push(&mut self, at: u64, dst: usize, f: Vec<u8>) {
        self.n += 1;
        self.q.push(Reverse((at, self.n, dst, f)));
    }

    fn send(&mut self, now: u64, src: usize, mut f: Vec<u8>) {
        self.frames[src] += 1;
        if let Ok(p) = frame::parse_tcp_frame(&f) {
            let fl = p.tcp.flags();
            self.tcp_log.push((now, src, fl));
            if fl & tcp::RST != 0 {
                self.rsts[src] += 1;
            }
        }
        if let Some(filter) = self.filter.as_mut() {
            if !filter(now, src, &f) {
                return;
            }
        }
        if self.rng.chance_ppm(self.faults.loss) {
            return;
        }
        let mut depart = now;
        // Serialization: bits / (Mbit/s) = µs.
        if let Some(ser) = (f.len() as u64 * 8 * 1000).checked_div(self.rate_mbps) {
            depart = now.max(self.busy_until[src]) + ser;
            self.busy_until[src] = depart;
        }
        let mut at = depart + self.latency;
        if self.rng.chance_ppm(self.faults.reorder) {
            at += US + self.rng.below(40 * US);
        }
        if self.rng.chance_ppm(self.faults.corrupt) && f.len() > 14 {
            // Behind the Ethernet header: the FCS would catch the rest.
            let i = 14 + self.rng.below(f.len() as u64 - 14) as usize;
            f[i] ^= 1 << self.rng.below(8);
        }
        if self.rng.chance_ppm(self.faults.dup) {
            let extra = self.rng.below(20 * US);
            self.push(at + extra, 1 - src, f.clone());
        }
        self.push(at, 1 - src, f);
    }

    fn next_time(&self) -> Option<u64> {
        self.q.peek().map(|Reverse((t, ..))| *t)
    }
}

pub(super) use tas_testkit::addr::{A_IP4 as A_IP, A_MAC, B_IP4 as B_IP, B_MAC};

pub(super) fn host_cfg(ip: u32, mac: [u8; 6]) -> StackConfig {
    StackConfig {
        local_ip: ip,
        prefix_len: 24,
        local_mac: mac,
        ..Default::default()
    }
}

/// Two hosts and a wire under a virtual clock.
pub(super) struct Sim {
    pub(super) hosts: Vec<Host>,
    pub(super) wire: Wire,
    pub(super) now: u64,
    req: u32,
}

impl Sim {
    pub(super) fn new(seed: u64) -> Self {
        Self::with(seed, host_cfg(A_IP, A_MAC), host_cfg(B_IP, B_MAC), 0)
    }

    pub(super) fn with(seed: u64, a: StackConfig, b: StackConfig, start: u64) -> Self {
        Sim {
            hosts: vec![Host::new(a, seed), Host::new(b, seed.wrapping_add(77))],
            wire: Wire::new(seed),
            now: start,
            req: 0,
        }
    }

    /// Sends a control message from `app` on `host` now; returns its req id.
    pub(super) fn ctl(&mut self, host: usize, app: AppId, mut m: CtlMsg) -> u32 {
        self.req += 1;
        m.req = self.req;
        let h = &mut self.hosts[host];
        h.stack.on_app_msg(self.now, app, &m, &mut h.io);
        self.req
    }

    pub(super) fn listen(&mut self, host: usize, app: AppId, port: u16, backlog: u32) -> u32 {
        let req = self.ctl(
            host,
            app,
            CtlMsg {
                kind: ctl::LISTEN,
                arg: [port as u32, backlog, 0, 0, 0],
                ..Default::default()
            },
        );
        self.run_for(MS);
        let r = self.hosts[host]
            .app(app)
            .result_for(req)
            .expect("LISTEN answered");
        assert_eq!(r.err, 0);
        r.listener
    }

    pub(super) fn connect(&mut self, host: usize, app: AppId, ip: u32, port: u16) -> u32 {
        self.ctl(
            host,
            app,
            CtlMsg {
                kind: ctl::CONNECT,
                arg: [ip, port as u32, 0, 0, 0],
                info: FlowInfo {
                    opaque: 0xC0FFEE,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
    }

    /// Runs until `done` holds (true) or `limit` ns pass (false).
    pub(super) fn run_until(&mut self, limit: u64, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let deadline = self.now.saturating_add(limit);
        for _ in 0..20_000_000u64 {
            while self.wire.next_time().is_some_and(|t| t <= self.now) {
                let Some(Reverse((_, _, dst, f))) = self.wire.q.pop() else {
                    break;
                };
                self.hosts[dst].inbox.push(f);
            }
            let mut work = false;
            for h in self.hosts.iter_mut() {
                work |= h.step(self.now);
            }
            for i in 0..self.hosts.len() {
                for f in self.hosts[i].take_tx() {
                    self.wire.send(self.now, i, f);
                }
            }
            if done(self) {
                return true;
            }
            let mut next = if work { Some(self.now + US) } else { None };
            for t in self
                .hosts
                .iter()
                .filter_map(|h| h.next_time(self.now))
                .chain(self.wire.next_time())
            {
                next = Some(next.map_or(t, |n: u64| n.min(t)));
            }
            let Some(next) = next else {
                return false;
            };
            self.now = next.max(self.now + 1);
            if self.now > deadline {
                return false;
            }
        }
        panic!("simulation did not finish");
    }

    pub(super) fn run_for(&mut self, d: u64) {
        let end = self.now + d;
        self.run_until(d, |s| s.now >= end);
        self.now = self.now.max(end);
    }
}

/// Deterministic test data.
pub(super) fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng::mixed(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next_u64().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Runs a host's exception/command loop until it settles: exceptions from
/// the fast path to the stack, the stack's commands back to the fast path
/// (`take_cmds` empties the I/O's command list), due timers.
pub(super) fn settle<I: StackIo>(
    now: u64,
    stack: &mut Stack,
    fp: &mut FastPath,
    mem: &mut VecMem,
    out: &mut FpOut,
    io: &mut I,
    take_cmds: fn(&mut I) -> Vec<FpCmd>,
) {
    for _ in 0..10_000 {
        let exc = std::mem::take(&mut out.exc);
        let cmds = take_cmds(io);
        if exc.is_empty() && cmds.is_empty() {
            if stack.poll_at().is_some_and(|t| t <= now) {
                stack.poll(now, io);
                continue;
            }
            return;
        }
        for (r, fl, fr) in exc {
            stack.on_frame(now, r, fl, &fr, io);
        }
        for c in cmds {
            match c {
                FpCmd::Rx(f) => fp.rx(&f, now, mem, out),
                FpCmd::Retransmit(id) => fp.retransmit(id, now, out),
                FpCmd::Probe(id) => fp.probe(id, now, out),
                FpCmd::Kick(id) => fp.kick(id, now, out),
            }
        }
    }
    panic!("exception/command loop does not settle");
}
