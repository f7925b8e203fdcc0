//! The daemon: opens one NIC handle per lane, starts the fast-path core
//! threads, and runs the slow-path thread until SIGINT/SIGTERM ([`run`]).
//!
//! Owns the slow-path thread's state (a `Daemon`: the fast path's shared
//! state and flow table, the [`Stack`], the [`Apps`], the control socket,
//! the core-scaling controller, the per-interface lock) and its main loop.
//! Each turn of the loop waits, then serves in this order: signals, the
//! cores' wake-up, new connections to the attach socket and the `HELLO`s
//! that arrived, exceptions from the lanes, app control messages, hang-ups
//! and outboxes, gone apps whose orphaned connections are all done (their
//! regions stay with the lanes until then), app regions the lanes have let
//! go of, the stack's timers
//! (including the congestion-control loop), core scaling, the rates sample,
//! `tasctl`, the metrics endpoint, and finally the lane commands that had to
//! wait. The answers to `tasctl` are in the `control` submodule, the metrics
//! page in `prom`, the rates in `meter`. Shutdown
//! resets live flows toward their peers, gives the cores up to 500 ms to
//! send, and stops them.
//!
//! Nothing the loop hands on is dropped: frames and commands for a lane
//! whose queue is full wait in [`LaneCommands`], messages for an app whose
//! socket is full wait in its outbox (see `apps`), and an app that does not
//! take them is throttled in the stack (no new connections) instead.
//!
//! The slow-path thread sleeps in `ppoll` until a file descriptor is ready
//! or the stack's next timer is due; timers are served with microsecond
//! precision but wake-ups are coalesced ([`TIMER_SLACK`]), so a thread with
//! thousands of flows under congestion control wakes at most ~40k times per
//! second.

use crate::apps::{AppId, Apps};
use crate::config::{Config, NicKind};
use crate::ctlsock::{self, CtlServer};
use crate::metrics::MetricsServer;
use crate::runfiles::{InstanceLock, SockPerms};
use crate::scale::{Decision, ScaleController};
use crate::stack::{FpCmd, KernelNeigh, Stack, StackIo};
use control::CtlCtx;
use meter::{sample, Meter};
use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tas_abi::CtlMsg;
use tas_engine::engine;
use tas_engine::flowtable::FlowTable;
use tas_nic::af_packet::{AfPacketNic, ArpTap};
use tas_nic::af_xdp::{AfXdpConfig, AfXdpNic, PortSteer, SharedFilter};
use tas_nic::{Nic, NicError};
use tas_runtime::{now_ns, Core, CoreCmd, CoreConfig, FastPathShared, Lane, LaneCommands};

mod capture;
mod control;
mod meter;
mod prom;
mod shared;

type Shared = FastPathShared<Box<dyn Nic>>;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot open {iface} with {kind}: {source}")]
    Nic {
        iface: String,
        kind: &'static str,
        source: NicError,
    },
    #[error(transparent)]
    Apps(#[from] crate::apps::AppsError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    RunFile(#[from] crate::runfiles::RunFileError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

struct Io<'a> {
    shared: &'a Shared,
    table: &'a FlowTable,
    apps: &'a mut Apps,
    cmds: &'a mut LaneCommands,
    /// Shared mode's port bookkeeping (None in exclusive mode).
    ports: Option<&'a mut shared::SharedPorts>,
    /// Shared mode: the kernel's neighbours and routes (rtnetlink).
    kernel: Option<&'a mut crate::netlink::Kernel>,
}

impl Io<'_> {
    /// The lane that schedules flow `id` (lane 0 if it is gone).
    fn lane_of(&self, id: tas_engine::flowtable::FlowId) -> usize {
        let g = self.table.lock(id).map_or(0, |f| f.group as usize);
        if g < self.shared.lanes.len() {
            g
        } else {
            0
        }
    }

    /// The lane of the flow a frame belongs to (lane 0 for a frame of no
    /// installed flow): `outgoing` for a frame we send (its source is the
    /// local end), else one we received. The slow path's frames and
    /// re-injected segments of a flow go to the flow's own lane, so they
    /// leave through the same queue as its other segments and no lane
    /// takes a second flow's lock for them.
    fn lane_of_frame(&self, frame: &[u8], outgoing: bool) -> usize {
        frame_lane(self.table, self.shared.lanes.len(), frame, outgoing)
    }
}

/// The lane (of `lanes`) of the installed flow `frame` belongs to, lane 0
/// for none (see `Io::lane_of_frame`).
fn frame_lane(table: &FlowTable, lanes: usize, frame: &[u8], outgoing: bool) -> usize {
    let Some(mut k) = tas_engine::engine::frame_key(frame) else {
        return 0;
    };
    if outgoing {
        std::mem::swap(&mut k.local_ip, &mut k.remote_ip);
        std::mem::swap(&mut k.local_port, &mut k.remote_port);
    }
    let g = table.lookup(&k).map_or(0, |f| f.group as usize);
    if g < lanes {
        g
    } else {
        0
    }
}

#[cfg(test)]
mod frame_lane_tests {
    use super::*;
    use tas_engine::flow::FlowState;

    /// An Ethernet/IPv4/TCP header from `src` to `dst` (what `frame_key`
    /// reads).
    fn frame(src: (u32, u16), dst: (u32, u16)) -> Vec<u8> {
        let mut f = vec![0u8; 54];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 6;
        f[26..30].copy_from_slice(&src.0.to_be_bytes());
        f[30..34].copy_from_slice(&dst.0.to_be_bytes());
        f[34..36].copy_from_slice(&src.1.to_be_bytes());
        f[36..38].copy_from_slice(&dst.1.to_be_bytes());
        f
    }

    /// The slow path's frames of a flow (sent, or re-injected as
    /// received) go to the flow's own lane; frames of no flow, of a flow
    /// whose lane does not exist, and non-TCP frames to lane 0.
    #[test]
    fn a_flows_frames_go_to_its_lane() {
        let table = FlowTable::new(16);
        let (us, them) = ((0x0a00_0001, 80u16), (0x0a00_0002, 40_000u16));
        let flow = |group: u16, remote_port: u16| FlowState {
            local_ip: us.0,
            local_port: us.1,
            remote_ip: them.0,
            remote_port,
            group,
            ..Default::default()
        };
        table.insert(flow(1, them.1)).unwrap();
        table.insert(flow(7, them.1 + 1)).unwrap();
        assert_eq!(frame_lane(&table, 2, &frame(us, them), true), 1);
        assert_eq!(frame_lane(&table, 2, &frame(them, us), false), 1);
        // The direction matters: a received frame read as sent is no flow.
        assert_eq!(frame_lane(&table, 2, &frame(them, us), true), 0);
        let other = (them.0, them.1 + 1);
        assert_eq!(frame_lane(&table, 2, &frame(us, other), true), 0);
        assert_eq!(frame_lane(&table, 8, &frame(us, other), true), 7);
        assert_eq!(frame_lane(&table, 2, &frame(us, (them.0, 9)), true), 0);
        let mut arp = frame(us, them);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(frame_lane(&table, 2, &arp, true), 0);
    }
}

impl StackIo for Io<'_> {
    fn send_frame(&mut self, frame: &[u8]) {
        let lane = self.lane_of_frame(frame, true);
        self.cmds
            .send(&self.shared.lanes, lane, CoreCmd::Send(frame.to_vec()));
    }
    fn fastpath(&mut self, cmd: FpCmd) {
        let (lane, c) = match cmd {
            FpCmd::Retransmit(id) => (self.lane_of(id), CoreCmd::Retransmit(id)),
            FpCmd::Probe(id) => (self.lane_of(id), CoreCmd::Probe(id)),
            FpCmd::Kick(id) => (self.lane_of(id), CoreCmd::Kick(id)),
            FpCmd::Rx(frame) => (self.lane_of_frame(&frame, false), CoreCmd::Rx(frame)),
        };
        self.cmds.send(&self.shared.lanes, lane, c);
    }
    fn app_msg(&mut self, app: AppId, msg: &CtlMsg) {
        self.apps.send(app, msg);
    }
    fn alloc(&mut self, app: AppId, len: u32) -> Option<u32> {
        self.apps.alloc(app, len)
    }
    fn free(&mut self, app: AppId, off: u32, len: u32) {
        self.apps.free(app, off, len);
    }
    fn copy(&mut self, app: AppId, from: u32, to: u32, len: u32) -> bool {
        self.apps.copy(app, from, to, len)
    }
    fn mem_of(&self, app: AppId) -> AppId {
        self.apps.mem_of(app)
    }
    fn cmd_mark(&mut self) -> u64 {
        // Every lane serves a command ring of every app.
        self.shared.cmd_mark()
    }
    fn cmds_applied(&self, app: AppId, mark: u64) -> bool {
        self.shared.cmds_applied(app, mark)
    }
    fn region_contexts(&self, app: AppId) -> Vec<AppId> {
        let mem = self.apps.mem_of(app);
        let mut v: Vec<AppId> = self
            .apps
            .iter()
            .filter(|a| a.mem == mem || a.id == mem)
            .map(|a| a.id)
            .collect();
        if !v.contains(&app) {
            v.push(app);
        }
        v
    }
    fn app_pid(&self, app: AppId) -> i32 {
        self.apps.get(app).map_or(0, |a| a.pid)
    }
    fn app_uid(&self, app: AppId) -> u32 {
        self.apps.get(app).map_or(u32::MAX, |a| a.uid)
    }
    fn claim_port(&mut self, port: u16) -> Result<(), i32> {
        match self.ports.as_deref_mut() {
            Some(p) => p.claim(port),
            None => Ok(()),
        }
    }
    fn release_port(&mut self, port: u16) {
        if let Some(p) = self.ports.as_deref_mut() {
            p.release(port);
        }
    }
    fn kernel_neighbour(&mut self, ip: u32) -> KernelNeigh {
        let Some(k) = self.kernel.as_deref_mut() else {
            return KernelNeigh::NotShared;
        };
        match k.resolve(ip) {
            Ok(Some(mac)) => KernelNeigh::Known(mac),
            Ok(None) => KernelNeigh::Resolving,
            Err(e) => {
                // The stack's timer asks again; its last failure fails
                // the connect (EHOSTUNREACH) as an unanswered ARP would.
                crate::warn_limited!("asking the kernel to resolve {}: {e}", Ipv4Addr::from(ip));
                KernelNeigh::Resolving
            }
        }
    }
    fn kernel_route(&mut self, dst: u32) -> Option<Option<u32>> {
        let k = self.kernel.as_deref_mut()?;
        match k.route(dst) {
            Ok(r) => Some(r.next_hop(dst, k.ifindex())),
            Err(crate::netlink::NlError::Kernel(e)) => {
                tracing::debug!("no kernel route to {}: errno {e}", Ipv4Addr::from(dst));
                Some(None)
            }
            Err(e) => {
                crate::warn_limited!("kernel route to {}: {e}", Ipv4Addr::from(dst));
                None
            }
        }
    }
    fn free_bytes(&self, app: AppId) -> u64 {
        // The region the app's rings come from (its own or, after a fork,
        // the one it shares).
        let mem = self.apps.mem_of(app);
        self.apps.get(mem).map_or(0, |a| a.alloc.free_bytes())
    }
}

/// One NIC handle per lane (`n` lanes, the core budget's maximum).
/// The NIC lanes, and how many of them (the first) are fed by a NIC queue
/// of their own: fewer than all when an AF_XDP interface has fewer RX
/// queues than lanes; the others then receive by software steering and
/// transmit through an AF_PACKET socket.
type Lanes = (Vec<Box<dyn Nic>>, usize, Option<PortSteer>);

fn open_lanes(cfg: &Config, n: usize) -> Result<Lanes, DaemonError> {
    let err = |kind, source| DaemonError::Nic {
        iface: cfg.iface.clone(),
        kind,
        source,
    };
    if cfg.nic == NicKind::AfXdp {
        let queues = AfXdpNic::rx_queue_count(&cfg.iface).map_err(|e| err("af_xdp", e))?;
        let hw = (queues.unwrap_or(1) as usize).clamp(1, n);
        let xcfg = AfXdpConfig {
            shared: cfg.shared.then_some(SharedFilter {
                ip: cfg.ip,
                ports: cfg.port_range,
            }),
            ..AfXdpConfig::default()
        };
        let xdp = AfXdpNic::open_lanes_with(&cfg.iface, hw, xcfg).map_err(|e| err("af_xdp", e))?;
        let steer = xdp[0].port_steer();
        let lanes = xdp
            .into_iter()
            .map(|l| Box::new(l) as Box<dyn Nic>)
            .collect();
        return Ok((add_steered_lanes(cfg, lanes, n)?, hw, steer));
    }
    #[cfg(feature = "dpdk")]
    if cfg.nic == NicKind::Dpdk {
        let lanes: Vec<Box<dyn Nic>> =
            tas_nic::dpdk::DpdkNic::open_lanes(&cfg.iface, &cfg.dpdk_args, n)
                .map_err(|e| err("dpdk", e))?
                .into_iter()
                .map(|l| Box::new(l) as Box<dyn Nic>)
                .collect();
        let hw = lanes.len();
        return Ok((add_steered_lanes(cfg, lanes, n)?, hw, None));
    }
    let lanes = open_hw_lanes(cfg, n)?;
    let hw = lanes.len();
    let steer = if cfg.shared && cfg.nic == NicKind::AfPacket {
        // Every frame reaches the AF_PACKET sockets; TAS's must not reach
        // the kernel stack as well, or it would reset TAS's connections.
        let ifindex = tas_nic::ifindex(&cfg.iface).map_err(|e| err("af_packet", e))?;
        Some(
            tas_nic::bpf::kernel_filter(ifindex, cfg.ip, cfg.port_range.0, cfg.port_range.1)
                .map_err(|e| err("af_packet", e))?,
        )
    } else {
        None
    };
    Ok((lanes, hw, steer))
}

/// Fills `lanes` (one per RX queue) up to `n` with lanes that transmit
/// through AF_PACKET and receive by software steering.
fn add_steered_lanes(
    cfg: &Config,
    mut lanes: Vec<Box<dyn Nic>>,
    n: usize,
) -> Result<Vec<Box<dyn Nic>>, DaemonError> {
    let hw = lanes.len();
    if hw >= n {
        return Ok(lanes);
    }
    for _ in hw..n {
        lanes.push(Box::new(AfPacketNic::open_tx_only(&cfg.iface).map_err(
            |e| DaemonError::Nic {
                iface: cfg.iface.clone(),
                kind: "af_packet",
                source: e,
            },
        )?));
    }
    tracing::info!(
        "{} has {hw} RX queue(s) for {n} lanes: lanes {hw}..{} are fed by software \
         steering from the queue lanes and transmit through AF_PACKET",
        cfg.iface,
        n - 1
    );
    Ok(lanes)
}

fn open_hw_lanes(cfg: &Config, n: usize) -> Result<Vec<Box<dyn Nic>>, DaemonError> {
    let err = |kind, source| DaemonError::Nic {
        iface: cfg.iface.clone(),
        kind,
        source,
    };
    fn boxed<N: Nic + 'static>(v: Vec<N>) -> Vec<Box<dyn Nic>> {
        v.into_iter().map(|n| Box::new(n) as Box<dyn Nic>).collect()
    }
    Ok(match cfg.nic {
        NicKind::AfXdp => {
            boxed(AfXdpNic::open_lanes(&cfg.iface, n).map_err(|e| err("af_xdp", e))?)
        }
        NicKind::AfPacket => {
            boxed(AfPacketNic::open_lanes(&cfg.iface, n).map_err(|e| err("af_packet", e))?)
        }
        #[cfg(feature = "dpdk")]
        NicKind::Dpdk => vec![Box::new(
            tas_nic::dpdk::DpdkNic::open(Some(&cfg.iface), &cfg.dpdk_args)
                .map_err(|e| err("dpdk", e))?,
        )],
        #[cfg(not(feature = "dpdk"))]
        NicKind::Dpdk => {
            return Err(err(
                "dpdk",
                NicError::Unsupported(
                    "this tasd was built without DPDK: rebuild with `cargo build -p tasd --features dpdk` (needs libdpdk-dev)"
                        .into(),
                ),
            ))
        }
    })
}

/// Blocks SIGINT/SIGTERM (in this thread and every thread it spawns later)
/// and returns a signalfd for them.
fn signal_fd() -> nix::Result<SignalFd> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block()?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    // nix has no getrandom(2) wrapper; a failure leaves `b` zeroed and the
    // clock still varies the seed.
    // SAFETY: getrandom writes at most 8 bytes into `b`, which is 8 long.
    unsafe { libc::getrandom(b.as_mut_ptr() as *mut libc::c_void, 8, 0) };
    u64::from_ne_bytes(b) ^ now_ns()
}

/// Timers are served at most this much late, so that wake-ups batch up.
pub const TIMER_SLACK: Duration = Duration::from_micros(25);

/// How often the main loop looks whether the lanes have taken the commands an
/// answer to `ADOPT` waits for.
const STATE_WAIT_POLL_NS: u64 = 50_000;

/// An app whose region the lanes are letting go of.
struct PendingRemoval {
    id: AppId,
    /// Lanes that still hold the region.
    left: Arc<AtomicU32>,
    since: Instant,
}

/// Tells every lane to let go of app `id`; the region may be unmapped once
/// `left` reaches 0.
fn remove_app(shared: &Shared, cmds: &mut LaneCommands, id: AppId) -> PendingRemoval {
    let left = Arc::new(AtomicU32::new(shared.lanes.len() as u32));
    for lane in 0..shared.lanes.len() {
        cmds.send(&shared.lanes, lane, CoreCmd::RemoveApp(id, left.clone()));
    }
    PendingRemoval {
        id,
        left,
        since: Instant::now(),
    }
}

/// Lanes 0..n go round-robin to cores 0..active.
fn assign_lanes(shared: &Shared, active: u32) {
    let active = (active as usize).clamp(1, shared.cores.len());
    for lane in 0..shared.lanes.len() {
        shared.assign(lane, lane % active);
    }
}

/// What `ppoll` reported for `p`. Bits nix has no name for (none that
/// Linux sets for these descriptors) count as readable.
fn revents(p: PollFd<'_>) -> PollFlags {
    p.revents().unwrap_or(PollFlags::POLLIN)
}

/// What woke the main loop: one `ppoll`'s results.
#[derive(Default)]
struct Ready {
    /// SIGINT or SIGTERM is pending.
    signal: bool,
    /// The attach socket has a connection to accept.
    attach: bool,
    /// Connections waiting for their HELLO and what their sockets reported.
    hellos: Vec<(u64, PollFlags)>,
    /// A core kicked the slow path's eventfd.
    wake: bool,
    /// Every polled app and what its socket reported (empty: nothing).
    apps: Vec<(AppId, PollFlags)>,
    /// The control socket or one of its connections is ready.
    ctl: bool,
    /// The metrics listener or one of its connections is ready.
    metrics: bool,
    /// Shared mode: ARP frames wait in the tap.
    arp: bool,
    /// Shared mode: the kernel reported neighbour changes.
    neigh: bool,
}

/// Runs the daemon until SIGINT/SIGTERM.
pub fn run(cfg: Config) -> Result<(), DaemonError> {
    let mut d = Daemon::start(cfg)?;
    d.kernel_neighbours(now_ns());
    while !d.stop_requested {
        d.turn();
    }
    d.shutdown();
    Ok(())
}

/// The control answers' view of the daemon, borrowed field by field so
/// that the server being served (control socket or metrics) stays free.
/// `$ctl`: the control socket's (requests, errors, dropped) counters.
macro_rules! ctl_ctx {
    ($d:expr, $ctl:expr, $metrics:expr) => {
        CtlCtx {
            cfg: &$d.cfg,
            started: $d.started,
            nic: &$d.nic_name,
            mac: $d.mac,
            stack: &mut $d.stack,
            apps: &mut $d.apps,
            shared: &$d.shared,
            cmds: &$d.cmds,
            scaler: &mut $d.scaler,
            meter: &$d.meter,
            ctl_requests: $ctl.0,
            ctl_errors: $ctl.1,
            ctl_dropped: $ctl.2,
            exceptions: &$d.exc_counts,
            metrics: $metrics,
            captures: &mut $d.captures,
        }
    };
}

/// Everything the slow-path thread owns while the daemon runs: the fast
/// path it started (shared state, flow table, core threads), the stack, the
/// apps, the control socket, core scaling and the main loop's bookkeeping.
struct Daemon {
    cfg: Config,
    /// One tasd per interface (held while the daemon runs).
    _lock: InstanceLock,
    started: Instant,
    /// SIGINT/SIGTERM, blocked and delivered here.
    sigfd: SignalFd,
    mac: [u8; 6],
    nic_name: String,
    table: Arc<FlowTable>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    stack: Stack,
    apps: Apps,
    /// Commands for the lanes that did not fit their queues yet.
    cmds: LaneCommands,
    ctl: CtlServer,
    /// `--metrics-addr`: the Prometheus endpoint.
    metrics: Option<MetricsServer>,
    /// Exceptions taken from the lanes, by reason (`prom::EXCEPTION_REASONS`).
    exc_counts: [u64; 10],
    /// `tasctl capture` sessions.
    captures: capture::Captures,
    /// Shared mode: listening ports steered to TAS and held from the kernel.
    shared_ports: Option<shared::SharedPorts>,
    /// Shared mode: the active-open ports reserved from the kernel.
    _reserved: Option<shared::ReservedPorts>,
    /// Shared mode: copies of the ARP frames the kernel gets.
    arp_tap: Option<ArpTap>,
    /// Shared mode: the kernel's neighbours and routes (rtnetlink).
    kernel: Option<crate::netlink::Kernel>,
    scaler: ScaleController,
    meter: Meter,
    stop_requested: bool,
    /// Apps being removed: their regions are unmapped once every lane has
    /// let go of them.
    pending_removals: Vec<PendingRemoval>,
    /// What the last wait reported (kept for its allocation).
    ready: Ready,
    /// (busy, idle) ns of each active core, for the scaler.
    core_counters: Vec<(u64, u64)>,
    /// When grants and zombie apps were last checked.
    last_share_check: u64,
}

impl Daemon {
    /// Opens the NIC lanes, starts the fast-path cores, binds the attach and
    /// control sockets, and prints the `tasd ready` line.
    fn start(cfg: Config) -> Result<Daemon, DaemonError> {
        // Signals first, so every thread spawned later inherits the mask.
        let sigfd = signal_fd().map_err(std::io::Error::from)?;
        let started = Instant::now();
        // Before touching the NIC or the socket files: one tasd per interface.
        let lock = InstanceLock::acquire(&cfg.run_dir, &cfg.iface)?;
        // What a tasd of this network namespace killed outright left in the
        // kernel's reserved ports (its XDP program, tc filter and maps went
        // with it: they hang on links and fds, nothing is pinned).
        shared::ReservedPorts::clean_stale(&cfg.run_dir);
        let n_cores = cfg.scale.max as usize;
        // Shared mode: the active-open ports are reserved from the kernel
        // before anything can use them.
        let reserved = if cfg.shared {
            Some(shared::ReservedPorts::reserve(
                &cfg.run_dir,
                cfg.port_range,
            )?)
        } else {
            None
        };
        let (nics, hw_lanes, steer) = open_lanes(&cfg, n_cores)?;
        let shared_ports = steer.map(|s| shared::SharedPorts::new(s, cfg.ip));
        let arp_tap = if cfg.shared && cfg.nic == NicKind::AfXdp {
            Some(ArpTap::open(&cfg.iface).map_err(|e| DaemonError::Nic {
                iface: cfg.iface.clone(),
                kind: "af_packet",
                source: e,
            })?)
        } else {
            None
        };
        let kernel = if cfg.shared {
            let ifindex = crate::netlink::ifindex(&cfg.iface).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no interface {}", cfg.iface),
                )
            })?;
            Some(crate::netlink::Kernel::open(ifindex).map_err(std::io::Error::other)?)
        } else {
            None
        };
        let mac = nics[0].mac();
        let mtu = nics[0].mtu().min(cfg.mtu as usize) as u16;
        let nic_kind = nics[0].kind();
        let nic_name = nic_kind.to_string();
        // A backend without a file descriptor to sleep on (DPDK) must poll.
        let polls = nics.iter().any(|n| n.wait_fd().is_none());
        let ccfg = match (polls, cfg.idle_spin_us) {
            (true, _) => CoreConfig {
                idle_spin: Duration::from_nanos(u64::MAX),
                adaptive: false,
                idle_yield: cfg.idle_yield,
            },
            (false, Some(us)) => CoreConfig {
                idle_spin: Duration::from_micros(us),
                adaptive: false,
                idle_yield: cfg.idle_yield,
            },
            // Self-tuned from a moderate start.
            (false, None) => CoreConfig {
                idle_spin: Duration::from_micros(50),
                adaptive: true,
                idle_yield: cfg.idle_yield,
            },
        };
        let table = Arc::new(tas_runtime::huge::flow_table(crate::stack::table_slots(
            cfg.max_flows,
        )));
        let huge = tas_runtime::huge::stats();
        tracing::debug!(
            advised_bytes = huge.advised_bytes,
            refused = huge.refused,
            "flow table arrays advised for huge pages"
        );
        let shared: Arc<Shared> = FastPathShared::new(n_cores, nics.len())?;
        if hw_lanes < nics.len() {
            shared.enable_steering(hw_lanes);
        }
        let gid = crate::runfiles::group_id(&cfg.socket_group);
        if gid.is_none() {
            tracing::info!(
                "group {} does not exist: the attach socket keeps tasd's group (mode {:o})",
                cfg.socket_group,
                cfg.socket_mode
            );
        }
        let perms = SockPerms {
            mode: cfg.socket_mode,
            gid,
        };
        let ctl_path = ctlsock::ctl_path(&cfg.socket);
        let ctl = CtlServer::bind(&ctl_path)?;
        let metrics = cfg.metrics_addr.map(MetricsServer::bind).transpose()?;
        let mut apps = Apps::bind(&cfg.socket, cfg.app_mem, perms)?;
        apps.huge_pages = cfg.huge_pages;
        apps.local_ip = cfg.ip;
        apps.lanes = nics.len() as u32;
        apps.limits = cfg.limits;
        apps.goal = cfg.goal;
        shared.set_goal(cfg.goal);

        let scaler = ScaleController::new(cfg.scale, cfg.scale.min);
        let ecfg = engine::Config {
            local_mac: mac,
            ttl: 64,
            any_mac: false,
            ack_delay_ns: cfg.ack_delay_us * 1000,
        };
        let active = scaler.active().max(1) as usize;
        for (i, nic) in nics.into_iter().enumerate() {
            let lane = Lane::new(nic, table.clone(), ecfg, shared.lanes[i].clone());
            shared.place(lane, i % active);
        }
        let mut threads = Vec::with_capacity(n_cores);
        for k in 0..n_cores {
            let shared = shared.clone();
            let cpu = (!cfg.cpus.is_empty()).then(|| cfg.cpus[k % cfg.cpus.len()]);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("tas-fp{k}"))
                    .spawn(move || {
                        if let Some(c) = cpu {
                            pin_to(c);
                        }
                        Core::new(k, shared, ccfg).run()
                    })?,
            );
        }

        let stack = Stack::new(cfg.stack_config(mac, mtu), table.clone(), seed());
        println!(
            "tasd ready: ip {}/{} iface {} nic {} mode {} mac {} socket {} control {} cc {} cores {}-{}",
            std::net::Ipv4Addr::from(cfg.ip),
            cfg.prefix_len,
            cfg.iface,
            nic_kind,
            if cfg.shared { "shared" } else { "exclusive" },
            tas_engine::wire::eth::fmt_mac(mac),
            cfg.socket.display(),
            ctl_path.display(),
            stack.cc_config().global.algo.name,
            cfg.scale.min,
            cfg.scale.max,
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();

        let cmds = LaneCommands::new(shared.lanes.len());
        Ok(Daemon {
            cfg,
            _lock: lock,
            started,
            sigfd,
            mac,
            nic_name,
            table,
            shared,
            threads,
            stack,
            apps,
            cmds,
            ctl,
            metrics,
            exc_counts: [0; 10],
            captures: capture::Captures::default(),
            shared_ports,
            _reserved: reserved,
            arp_tap,
            kernel,
            scaler,
            meter: Meter::new(),
            stop_requested: false,
            pending_removals: Vec::new(),
            ready: Ready::default(),
            core_counters: Vec::with_capacity(n_cores),
            last_share_check: 0,
        })
    }

    /// One turn of the main loop: wait, then serve whatever is due.
    fn turn(&mut self) {
        let mut ready = std::mem::take(&mut self.ready);
        self.wait(&mut ready);
        if ready.signal {
            tracing::info!("signal received; shutting down");
            self.stop_requested = true;
        }
        if ready.wake {
            tas_runtime::drain(self.shared.slow_wake.as_raw_fd());
        }
        let now = now_ns();
        self.attach(now, ready.attach, &ready.hellos);
        if ready.arp {
            self.arp_frames(now);
        }
        self.exceptions(now);
        self.app_messages(now, &ready.apps);
        self.shares(now);
        self.reap_removed_apps();
        self.timers();
        self.scale();
        // Rates for `tasctl status`.
        let t = Instant::now();
        if self.meter.due(t) {
            self.meter.push(sample(&self.shared, &self.stack));
        }
        if ready.ctl {
            self.control();
        }
        self.captures.expire(&self.shared);
        if let Some(p) = self.shared_ports.as_mut() {
            let stack = &self.stack;
            p.tick(|port| stack.local_port_in_use(port));
        }
        if ready.neigh {
            self.neighbour_events(now);
        }
        if ready.metrics {
            self.serve_metrics();
        }
        for (id, on) in self.apps.take_throttle_changes() {
            self.stack.set_app_throttled(id, on);
        }
        self.cmds.flush(&self.shared.lanes);
        self.ready = ready;
    }

    /// The stack and the I/O it emits through, borrowed side by side.
    fn stack_io(&mut self) -> (&mut Stack, Io<'_>) {
        let io = Io {
            shared: &self.shared,
            table: &self.table,
            apps: &mut self.apps,
            cmds: &mut self.cmds,
            ports: self.shared_ports.as_mut(),
            kernel: self.kernel.as_mut(),
        };
        (&mut self.stack, io)
    }

    /// How long the next wait may sleep: until the stack's next timer
    /// (coalesced by [`TIMER_SLACK`]) or the next attach deadline, at most
    /// 50 ms, at most 1 ms while exceptions, lane commands or app removals
    /// are pending.
    fn timeout_ns(&self) -> u64 {
        let slack = TIMER_SLACK.as_nanos() as u64;
        let now = now_ns();
        let mut timeout_ns: u64 = 50_000_000;
        if let Some(t) = self.stack.poll_at() {
            timeout_ns = if t <= now {
                0
            } else {
                (t - now).clamp(slack, timeout_ns)
            };
        }
        if let Some(t) = self.apps.next_deadline() {
            timeout_ns = timeout_ns.min(t.saturating_sub(now).max(slack));
        }
        if self.shared.lanes.iter().any(|l| !l.exc.is_empty())
            || !self.pending_removals.is_empty()
            || self.cmds.waiting() > 0
        {
            timeout_ns = timeout_ns.min(1_000_000);
        }
        // An answer to `ADOPT` waits for the lanes to take other contexts'
        // commands (a round or two).
        if self.stack.waits_for_fastpath() {
            timeout_ns = timeout_ns.min(STATE_WAIT_POLL_NS);
        }
        timeout_ns
    }

    /// Sleeps until a file descriptor is ready or [`Self::timeout_ns`] has
    /// passed, and records in `ready` what fired.
    fn wait(&mut self, ready: &mut Ready) {
        ready.apps.clear();
        ready.hellos.clear();
        let mut pfds: Vec<PollFd<'_>> = Vec::with_capacity(4 + self.apps.count());
        let shared = &self.shared;
        for fd in [
            self.sigfd.as_fd(),
            self.apps.listener.as_fd(),
            shared.slow_wake.as_fd(),
        ] {
            pfds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        for a in self.apps.iter() {
            if a.zombie || a.orphaned || self.pending_removals.iter().any(|r| r.id == a.id) {
                continue;
            }
            // Requests are read while the app takes our messages; its
            // socket is watched for room while messages wait for it.
            // Hang-ups are reported either way.
            let mut ev = PollFlags::empty();
            if self.apps.wants_requests(a.id) {
                ev |= PollFlags::POLLIN;
            }
            if !a.outbox.is_empty() {
                ev |= PollFlags::POLLOUT;
            }
            pfds.push(PollFd::new(a.sock.as_fd(), ev));
            ready.apps.push((a.id, PollFlags::empty()));
        }
        let hello_first = pfds.len();
        for (token, fd) in self.apps.pending_fds() {
            pfds.push(PollFd::new(fd, PollFlags::POLLIN));
            ready.hellos.push((token, PollFlags::empty()));
        }
        let ctl_first = pfds.len();
        self.ctl.poll_fds(&mut pfds);
        let metrics_first = pfds.len();
        if let Some(m) = &self.metrics {
            m.poll_fds(&mut pfds);
        }
        let arp_at = pfds.len();
        if let Some(t) = &self.arp_tap {
            pfds.push(PollFd::new(t.fd(), PollFlags::POLLIN));
        }
        let neigh_at = pfds.len();
        if let Some(k) = &self.kernel {
            pfds.push(PollFd::new(k.events_fd(), PollFlags::POLLIN));
        }
        let timeout = TimeSpec::from_duration(Duration::from_nanos(self.timeout_ns()));
        // An error (EINTR) leaves every revents empty: nothing is served
        // but timers.
        let _ = ppoll(&mut pfds, Some(timeout), None);
        ready.signal = !revents(pfds[0]).is_empty();
        ready.attach = !revents(pfds[1]).is_empty();
        ready.wake = !revents(pfds[2]).is_empty();
        for (i, (_, ev)) in ready.apps.iter_mut().enumerate() {
            *ev = revents(pfds[3 + i]);
        }
        for (i, (_, ev)) in ready.hellos.iter_mut().enumerate() {
            *ev = revents(pfds[hello_first + i]);
        }
        ready.ctl = pfds[ctl_first..metrics_first]
            .iter()
            .any(|p| !revents(*p).is_empty());
        ready.metrics = pfds[metrics_first..arp_at]
            .iter()
            .any(|p| !revents(*p).is_empty());
        ready.arp =
            self.arp_tap.is_some() && pfds.get(arp_at).is_some_and(|p| !revents(*p).is_empty());
        ready.neigh =
            self.kernel.is_some() && pfds.get(neigh_at).is_some_and(|p| !revents(*p).is_empty());
    }

    /// The attach socket: new connections (when `accept`), the `HELLO`s
    /// that arrived (each new app's lanes get its port: an event ring and
    /// a command ring each), and connections that stayed silent too long.
    fn attach(&mut self, now: u64, accept: bool, hellos: &[(u64, PollFlags)]) {
        let lane_wakes: Vec<RawFd> = self
            .shared
            .lanes
            .iter()
            .map(|l| l.wake.as_raw_fd())
            .collect();
        for &(token, re) in hellos {
            if re.is_empty() {
                continue;
            }
            let stack = &self.stack;
            if let Some((_, ports)) = self
                .apps
                .hello(token, &lane_wakes, |pid, t| stack.has_grant(pid, t))
            {
                for (lane, port) in ports.into_iter().enumerate() {
                    self.cmds
                        .send(&self.shared.lanes, lane, CoreCmd::AddApp(port));
                }
            }
        }
        if accept {
            self.apps.accept_new(now);
        }
        self.apps.expire_pending(now);
    }

    /// Shared mode: the kernel's whole neighbour table (at start, and
    /// when neighbour events were lost), so tasd uses the MACs the kernel
    /// uses.
    fn kernel_neighbours(&mut self, now: u64) {
        let Some(k) = self.kernel.as_mut() else {
            return;
        };
        match k.neighbours() {
            Ok(ns) => {
                for n in ns {
                    if let Some(mac) = n.usable() {
                        let (stack, mut io) = self.stack_io();
                        stack.neighbour(now, n.ip, mac, &mut io);
                    }
                }
            }
            Err(e) => crate::warn_limited!("reading the kernel's neighbours: {e}"),
        }
    }

    /// Shared mode: the kernel's neighbour changes (new or changed
    /// addresses are learnt; a lost batch of changes means a new dump).
    fn neighbour_events(&mut self, now: u64) {
        let Some(k) = self.kernel.as_mut() else {
            return;
        };
        let mut learnt = Vec::new();
        let overrun = k
            .events(|n| {
                if let Some(mac) = n.usable() {
                    learnt.push((n.ip, mac));
                }
            })
            .is_err();
        for (ip, mac) in learnt {
            let (stack, mut io) = self.stack_io();
            stack.neighbour(now, ip, mac, &mut io);
        }
        if overrun {
            tracing::info!("neighbour events were lost; reading the kernel's table again");
            self.kernel_neighbours(now);
        }
    }

    /// Shared mode: the ARP frames the kernel received (copies), for the
    /// stack to learn its neighbours from (at most 256 per turn).
    fn arp_frames(&mut self, now: u64) {
        let mut buf = [0u8; 2048];
        for _ in 0..256 {
            let Some(n) = self.arp_tap.as_ref().and_then(|t| t.recv(&mut buf)) else {
                break;
            };
            let (stack, mut io) = self.stack_io();
            stack.on_frame(
                now,
                tas_engine::engine::Exception::NotTcp,
                None,
                &buf[..n],
                &mut io,
            );
        }
    }

    /// Exceptions from the fast path, lane by lane (at most 4096 per lane
    /// and turn).
    fn exceptions(&mut self, now: u64) {
        let shared = self.shared.clone();
        for lane in &shared.lanes {
            self.stack.set_rx_lane(lane.id);
            for _ in 0..4096 {
                let Some(e) = lane.exc.pop() else { break };
                self.exc_counts[prom::exception_index(&e.reason)] += 1;
                let (stack, mut io) = self.stack_io();
                stack.on_frame(now, e.reason, e.flow, &e.frame, &mut io);
                lane.recycle(e.frame);
            }
        }
        self.stack.set_rx_lane(0);
    }

    /// Control messages from the apps whose sockets are ready (at most 256
    /// per app and turn, none while too many of our messages wait for the
    /// app), messages that waited for room in an app's socket, and
    /// hang-ups: a gone app's flows are torn down and its removal from the
    /// lanes starts.
    fn app_messages(&mut self, now: u64, ready: &[(AppId, PollFlags)]) {
        for &(id, re) in ready {
            if re.is_empty() {
                continue;
            }
            let mut gone = re.intersects(PollFlags::POLLHUP | PollFlags::POLLERR);
            if re.contains(PollFlags::POLLOUT) {
                self.apps.flush(id);
            }
            let reads = if re.contains(PollFlags::POLLIN) || gone {
                256
            } else {
                0
            };
            for _ in 0..reads {
                if !gone && !self.apps.wants_requests(id) {
                    break;
                }
                match self.apps.recv(id) {
                    Ok(Some((m, fd))) => {
                        let (stack, mut io) = self.stack_io();
                        stack.on_app_msg_fd(now, id, &m, fd, &mut io);
                    }
                    Ok(None) => break,
                    Err(why) => {
                        tracing::debug!(app = id, "detaching: {why}");
                        gone = true;
                        break;
                    }
                }
            }
            if gone {
                let (stack, mut io) = self.stack_io();
                let orphans = stack.app_gone(now, id, &mut io);
                self.stack.set_app_throttled(id, false);
                if orphans > 0 || self.stack.references(id) || self.apps.has_aliases(id) {
                    // Other processes still use its flows or its region, or
                    // its orphaned connections still deliver their data: the
                    // lanes keep its region (and run its command rings: what
                    // it queued before exiting still counts).
                    self.apps.set_zombie(id);
                    if let Some(a) = self.apps.get_mut(id) {
                        a.orphaned = orphans > 0;
                    }
                    tracing::debug!(
                        app = id,
                        orphans,
                        "app gone; kept for its orphans or sharers"
                    );
                } else {
                    self.pending_removals
                        .push(remove_app(&self.shared, &mut self.cmds, id));
                }
            }
        }
    }

    /// Sockets shared across fork: grants whose process exited are
    /// dropped, and zombie apps (gone, kept for other processes' use of
    /// their flows or region, or for their orphaned connections) that
    /// nothing needs any more are removed (at most every 100 ms).
    fn shares(&mut self, now: u64) {
        if now.saturating_sub(self.last_share_check) < 100_000_000 {
            return;
        }
        self.last_share_check = now;
        if self.stack.has_grants() {
            let (stack, mut io) = self.stack_io();
            stack.expire_grants(now, crate::runfiles::pid_alive, &mut io);
        }
        let zombies: Vec<AppId> = self
            .apps
            .iter()
            .filter(|a| a.zombie)
            .map(|a| a.id)
            .collect();
        for id in zombies {
            if self.pending_removals.iter().any(|r| r.id == id) {
                continue;
            }
            if !self.stack.references(id)
                && !self.apps.has_aliases(id)
                && self.stack.orphans_of(id) == 0
            {
                self.pending_removals
                    .push(remove_app(&self.shared, &mut self.cmds, id));
            }
        }
    }

    /// Unmaps the regions every lane has let go of.
    fn reap_removed_apps(&mut self) {
        let apps = &mut self.apps;
        self.pending_removals.retain(|r| {
            if r.left.load(Ordering::Acquire) == 0 {
                apps.remove(r.id);
                false
            } else {
                if r.since.elapsed() > Duration::from_secs(5) {
                    crate::warn_limited!(
                        app = r.id,
                        "a lane has not released the app's region after 5 s"
                    );
                }
                true
            }
        });
    }

    /// The stack's timers (retransmissions, congestion control, ...).
    fn timers(&mut self) {
        let (stack, mut io) = self.stack_io();
        stack.poll(now_ns(), &mut io);
    }

    /// Core scaling: feeds the active cores' counters to the controller and
    /// moves lanes when it decides.
    fn scale(&mut self) {
        self.core_counters.clear();
        for c in self.shared.cores.iter().take(self.scaler.active() as usize) {
            self.core_counters.push((
                c.busy_ns.load(Ordering::Relaxed),
                c.idle_ns.load(Ordering::Relaxed),
            ));
        }
        if let Some(d) = self.scaler.sample(now_ns(), &self.core_counters) {
            let active = self.scaler.active();
            tracing::info!(
                "fast-path cores {} to {active} (aggregate idle {:.2} cores)",
                if d == Decision::Up { "up" } else { "down" },
                self.scaler.last_idle_cores()
            );
            assign_lanes(&self.shared, active);
        }
    }

    /// Serves the `tasctl` control socket.
    fn control(&mut self) {
        let ctl = (self.ctl.requests, self.ctl.errors, self.ctl.dropped);
        let metrics = self
            .metrics
            .as_ref()
            .map(|m| m.counters)
            .unwrap_or_default();
        let mut cx = ctl_ctx!(self, ctl, metrics);
        self.ctl.service(|r| cx.handle(r));
    }

    /// Serves the metrics endpoint (`--metrics-addr`).
    fn serve_metrics(&mut self) {
        let Some(mut server) = self.metrics.take() else {
            return;
        };
        let ctl = (self.ctl.requests, self.ctl.errors, self.ctl.dropped);
        let cx = ctl_ctx!(self, ctl, server.counters);
        server.service(|| cx.metrics_page());
        self.metrics = Some(server);
    }

    /// Closes the control socket, resets flows toward their peers, gives the
    /// cores time to send, stops them. `self` is taken apart so that the
    /// control socket goes first; hence the `Io` built by hand here.
    fn shutdown(self) {
        let Daemon {
            sigfd,
            table,
            shared,
            threads,
            mut stack,
            mut apps,
            mut cmds,
            ctl,
            _lock,
            ..
        } = self;
        drop(ctl);
        {
            let mut io = Io {
                shared: &shared,
                table: &table,
                apps: &mut apps,
                cmds: &mut cmds,
                ports: None,
                kernel: None,
            };
            stack.shutdown(now_ns(), &mut io);
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        while (!cmds.flush(&shared.lanes) || shared.lanes.iter().any(|l| !l.cmds.is_empty()))
            && Instant::now() < deadline
        {
            for l in &shared.lanes {
                tas_runtime::kick(l.wake.as_raw_fd());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(20));
        shared.shutdown();
        for t in threads {
            let _ = t.join();
        }
        drop(apps);
        drop(sigfd);
        drop(_lock);
        tracing::info!("stopped");
    }
}

/// Pins the calling thread to `cpu` (`--cpus`; validated at start, so a
/// failure here is only logged).
fn pin_to(cpu: u32) {
    let mut set = nix::sched::CpuSet::new();
    let r = set
        .set(cpu as usize)
        .and_then(|()| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
    if let Err(e) = r {
        tracing::warn!("cannot pin a fast-path core to CPU {cpu}: {e}");
    }
}
