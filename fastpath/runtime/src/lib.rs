//! # tas-runtime
//!
//! The fast-path threads: *lanes* polled by *cores*.
//!
//! Owns: lanes, cores (polling threads), their sleep/wake on eventfds and
//! NIC fds, the hand-over of lanes between cores, the app ports (rings in
//! each app's region) as a lane sees them, and the queues between lanes and
//! the slow path. This is where threads, clocks and `poll()` are allowed.
//!
//! Must not: decide TCP (that is `tas-engine`'s), touch NIC internals
//! (`tas-nic`), make policy (how many cores, congestion control: the slow
//! path's), or allocate per packet.
//!
//! A lane is one NIC queue with its own sans-I/O [`FastPath`] engine (and so
//! its own TX scheduler), its app ports and its queues to and from the slow
//! path. A core is a polling thread that holds some lanes; lanes move between
//! cores when the slow path adds or removes cores, always whole and always
//! held by exactly one core, so a queue's frames are never polled twice and
//! a flow's segments leave from one lane (its `group`) only. Frames of a flow
//! that arrive on another lane (a NIC that re-hashed) are still processed
//! there under the per-flow lock; the TX activation is forwarded to the
//! flow's lane.
//!
//! One round of a lane: receive a NIC batch and run each frame through the
//! engine; apply app commands (lane 0 only: apps have one command ring);
//! apply slow-path commands and activations forwarded by other lanes
//! (bounded); let the TX scheduler cut segments; flush the NIC batch;
//! deliver notifications into this lane's event ring of each app (one
//! eventfd kick per waiting app). A core whose lanes had nothing to do for
//! `idle_spin` blocks in `poll()` on its lanes' NIC fds and eventfds until a
//! frame, a kick or the next scheduler deadline.
//!
//! Exceptions go to the slow path in buffers taken from a preallocated pool,
//! so the loop does not allocate per packet.

use crossbeam_queue::ArrayQueue;
use std::os::fd::RawFd;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tas_abi::{
    announce_sleep, peer_sleeps, AppCmd, AppEvent, PayloadMem, RegionHeader, RingConsumer,
    RingProducer,
};
use tas_engine::engine::{Config, Exception, FastPath, Output, Stats};
use tas_engine::flowtable::{FlowId, FlowTable};
use tas_nic::{FrameBatch, Nic};

/// Most app regions a core serves at once (ids `0..MAX_APPS`).
pub const MAX_APPS: usize = 1024;
/// Frames per NIC batch.
pub const BATCH: usize = 32;
/// App commands taken per app per round.
const APP_CMDS_PER_ROUND: usize = 16;
/// Slow-path commands taken per round.
const SLOW_CMDS_PER_ROUND: usize = 16;
/// Flows the TX scheduler may fire per round.
const TX_PER_ROUND: usize = 32;
/// Activations forwarded by other lanes taken per round.
const KICKS_PER_ROUND: usize = 64;
/// Lanes one core sleeps on at once (more are polled, not waited on).
const MAX_LANES_PER_CORE: usize = 64;

/// Monotonic nanoseconds (vDSO, no system call).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An attached app as one lane sees it: its mapped region, this lane's
/// event ring, and (lane 0 only) the app's command ring.
pub struct AppPort {
    pub id: u16,
    pub base: *mut u8,
    pub len: usize,
    pub events: RingProducer<AppEvent>,
    pub cmds: Option<RingConsumer<AppCmd>>,
    /// The app's eventfd: written to wake the app.
    pub app_wake: RawFd,
}

// SAFETY: the region behind `base` stays mapped until every lane
// acknowledges `CoreCmd::RemoveApp` (the slow path waits for that before
// unmapping).
unsafe impl Send for AppPort {}

impl AppPort {
    fn header(&self) -> &RegionHeader {
        // SAFETY: every region starts with a RegionHeader (the slow path
        // creates it that way and keeps it mapped while the port exists).
        unsafe { &*(self.base as *const RegionHeader) }
    }
}

/// Commands from the slow path to a lane.
pub enum CoreCmd {
    AddApp(AppPort),
    /// Forget app `id`; each lane decrements the counter once it no longer
    /// touches the app's region.
    RemoveApp(u16, Arc<AtomicU32>),
    /// Transmit this frame.
    Send(Vec<u8>),
    /// Run this frame through the receive path (data that raced an install).
    Rx(Vec<u8>),
    /// Retransmission timeout (`FastPath::retransmit`).
    Retransmit(FlowId),
    /// Tail-loss probe (`FastPath::probe`).
    Probe(FlowId),
    Kick(FlowId),
}

/// An exception for the slow path.
pub struct Exc {
    pub reason: Exception,
    pub flow: Option<FlowId>,
    pub frame: Vec<u8>,
}

/// Queues and wake-ups of one lane, shared with the slow path and the
/// other lanes.
pub struct LaneShared {
    pub id: u16,
    pub cmds: ArrayQueue<CoreCmd>,
    pub exc: ArrayQueue<Exc>,
    /// Empty frame buffers for exceptions (the slow path returns them).
    pub exc_pool: ArrayQueue<Vec<u8>>,
    /// TX activations forwarded by other lanes for this lane's flows.
    pub kicks: ArrayQueue<FlowId>,
    /// eventfd that wakes whichever core holds the lane (slow path, apps
    /// and other lanes write it).
    pub wake: RawFd,
    /// Set while the holding core sleeps.
    pub sleeping: AtomicBool,
    /// The core that should hold this lane (the slow path writes it; the
    /// holder hands the lane over when it differs).
    pub owner: AtomicU32,
    /// A copy of the engine's counters, refreshed about every millisecond.
    pub stats: Mutex<Stats>,
    pub exc_dropped: AtomicU64,
}

impl LaneShared {
    fn new(id: u16) -> std::io::Result<Self> {
        let pool = ArrayQueue::new(1024);
        for _ in 0..1024 {
            let _ = pool.push(Vec::with_capacity(tas_nic::FRAME_SLOT));
        }
        Ok(LaneShared {
            id,
            cmds: ArrayQueue::new(16 * 1024),
            exc: ArrayQueue::new(1024),
            exc_pool: pool,
            kicks: ArrayQueue::new(16 * 1024),
            wake: eventfd()?,
            sleeping: AtomicBool::new(false),
            owner: AtomicU32::new(0),
            stats: Mutex::new(Stats::default()),
            exc_dropped: AtomicU64::new(0),
        })
    }

    /// Queues a command and wakes the lane's core if it sleeps. False if the
    /// queue is full.
    pub fn command(&self, c: CoreCmd) -> bool {
        let ok = self.cmds.push(c).is_ok();
        self.wake_if_sleeping();
        ok
    }

    /// Hands this lane a TX activation from another lane and wakes its core
    /// if it sleeps. False when the queue is full (the caller retries).
    fn push_kick(&self, id: FlowId) -> bool {
        let ok = self.kicks.push(id).is_ok();
        if ok {
            self.wake_if_sleeping();
        }
        ok
    }

    /// The publishing side of the sleep handshake (see `abi::announce_sleep`).
    fn wake_if_sleeping(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            kick(self.wake);
        }
    }

    /// Returns an exception's buffer to the pool.
    pub fn recycle(&self, mut buf: Vec<u8>) {
        buf.clear();
        let _ = self.exc_pool.push(buf);
    }
}

impl Drop for LaneShared {
    fn drop(&mut self) {
        // SAFETY: closing the eventfd this struct created.
        unsafe { libc::close(self.wake) };
    }
}

/// One polling thread's shared state.
pub struct CoreSlot {
    pub id: u16,
    /// eventfd that wakes the core (lane hand-over, stop).
    pub wake: RawFd,
    /// Time spent in rounds that found work.
    pub busy_ns: AtomicU64,
    /// Time spent in empty rounds (spinning) and asleep.
    pub idle_ns: AtomicU64,
    /// Lanes the core holds now (a bit per lane below 64).
    pub lanes_held: AtomicU64,
}

/// Everything the cores and the slow path share.
pub struct FastPathShared<N: Nic> {
    pub lanes: Vec<Arc<LaneShared>>,
    pub cores: Vec<CoreSlot>,
    /// Lanes being handed to each core.
    inbox: Vec<ArrayQueue<Lane<N>>>,
    /// eventfd the slow path sleeps on (cores write it).
    pub slow_wake: RawFd,
    pub stop: AtomicBool,
}

impl<N: Nic> FastPathShared<N> {
    /// Shared state for `cores` polling threads and `lanes` lanes.
    pub fn new(cores: usize, lanes: usize) -> std::io::Result<Arc<Self>> {
        let mut lane_v = Vec::with_capacity(lanes);
        for i in 0..lanes {
            lane_v.push(Arc::new(LaneShared::new(i as u16)?));
        }
        let mut core_v = Vec::with_capacity(cores);
        for i in 0..cores {
            core_v.push(CoreSlot {
                id: i as u16,
                wake: eventfd()?,
                busy_ns: AtomicU64::new(0),
                idle_ns: AtomicU64::new(0),
                lanes_held: AtomicU64::new(0),
            });
        }
        Ok(Arc::new(FastPathShared {
            lanes: lane_v,
            inbox: (0..cores).map(|_| ArrayQueue::new(lanes.max(1))).collect(),
            cores: core_v,
            slow_wake: eventfd()?,
            stop: AtomicBool::new(false),
        }))
    }

    /// Hands `lane` to `core` before the cores start (or while they run:
    /// the holder passes it on).
    pub fn place(&self, lane: Lane<N>, core: usize) {
        let id = lane.shared.id as usize;
        self.lanes[id].owner.store(core as u32, Ordering::SeqCst);
        if self.inbox[core].push(lane).is_err() {
            unreachable!("an inbox holds every lane");
        }
        kick(self.cores[core].wake);
    }

    /// Moves lane `lane` to core `core`; its current holder hands it over
    /// at the end of its round.
    pub fn assign(&self, lane: usize, core: usize) {
        let l = &self.lanes[lane];
        let old = l.owner.swap(core as u32, Ordering::SeqCst) as usize;
        if old != core {
            kick(self.cores[old].wake);
            kick(l.wake);
        }
    }

    /// Stops every core (they return from `run`).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in &self.cores {
            kick(c.wake);
        }
    }
}

impl<N: Nic> Drop for FastPathShared<N> {
    fn drop(&mut self) {
        // SAFETY: closing the eventfds this struct created.
        unsafe {
            libc::close(self.slow_wake);
            for c in &self.cores {
                libc::close(c.wake);
            }
        }
    }
}

fn eventfd() -> std::io::Result<RawFd> {
    // SAFETY: plain syscall; the fd is owned by the struct that stores it
    // and closed on drop.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(fd)
    }
}

/// Adds 1 to an eventfd (wakes whoever waits on it).
pub fn kick(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to an eventfd we hold open.
    unsafe { libc::write(fd, &one as *const u64 as *const libc::c_void, 8) };
}

/// Resets an eventfd's counter.
pub fn drain(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a valid u64 from a non-blocking eventfd.
    unsafe { libc::read(fd, &mut v as *mut u64 as *mut libc::c_void, 8) };
}

/// Payload memory backed by the mapped app regions.
pub struct ShmMem {
    regions: Vec<(usize, usize)>,
}

impl ShmMem {
    fn new() -> Self {
        ShmMem {
            regions: vec![(0, 0); MAX_APPS],
        }
    }
    #[inline]
    fn range(&self, mem: u16, off: u32, len: usize) -> Option<*mut u8> {
        let &(base, size) = self.regions.get(mem as usize)?;
        let end = (off as usize).checked_add(len)?;
        if base == 0 || end > size {
            return None;
        }
        Some((base + off as usize) as *mut u8)
    }
}

impl PayloadMem for ShmMem {
    #[inline]
    fn write(&mut self, mem: u16, off: u32, data: &[u8]) -> bool {
        match self.range(mem, off, data.len()) {
            // SAFETY: the range lies inside a region that stays mapped while
            // registered; the app may scribble on it concurrently, which only
            // corrupts its own payload.
            Some(p) => unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len());
                true
            },
            None => false,
        }
    }
    #[inline]
    fn read(&self, mem: u16, off: u32, out: &mut [u8]) -> bool {
        match self.range(mem, off, out.len()) {
            // SAFETY: as in `write`.
            Some(p) => unsafe {
                std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len());
                true
            },
            None => false,
        }
    }
}

/// Tuning of the loop.
#[derive(Debug, Clone, Copy)]
pub struct CoreConfig {
    /// Spin this long without work before blocking.
    pub idle_spin: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            idle_spin: Duration::from_micros(200),
        }
    }
}

struct Sink<'a, N: Nic> {
    nic: &'a mut N,
    tx: &'a mut FrameBatch,
    shared: &'a LaneShared,
    lanes: &'a [Arc<LaneShared>],
    /// Forwarded activations whose lane queue was full (retried next round).
    deferred: &'a mut Vec<(u16, FlowId)>,
    exc_sent: bool,
}

impl<N: Nic> Sink<'_, N> {
    fn flush(&mut self) {
        // A few attempts; a NIC that keeps refusing drops the rest (TCP recovers).
        for _ in 0..4 {
            if self.tx.is_empty() {
                return;
            }
            match self.nic.send(self.tx) {
                Ok(n) => self.tx.consume_front(n),
                Err(e) => {
                    tracing::debug!("nic send: {e}");
                    break;
                }
            }
        }
        self.tx.clear();
    }
}

impl<N: Nic> Output for Sink<'_, N> {
    #[inline]
    fn tx<F: FnOnce(&mut [u8]) -> usize>(&mut self, fill: F) -> bool {
        if self.tx.is_full() {
            self.flush();
        }
        self.tx.push_with(fill)
    }
    fn exception(&mut self, reason: Exception, flow: Option<FlowId>, frame: &[u8]) {
        let Some(mut buf) = self.shared.exc_pool.pop() else {
            self.shared.exc_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        buf.extend_from_slice(frame);
        if let Err(e) = self.shared.exc.push(Exc {
            reason,
            flow,
            frame: buf,
        }) {
            self.shared.exc_dropped.fetch_add(1, Ordering::Relaxed);
            self.shared.recycle(e.frame);
        }
        self.exc_sent = true;
    }
    fn forward(&mut self, lane: u16, id: FlowId) {
        match self.lanes.get(lane as usize) {
            // Never lose an activation: the flow would stall.
            Some(l) => {
                if !l.push_kick(id) {
                    self.deferred.push((lane, id));
                }
            }
            // A group outside the lanes (a slow-path bug): send from here.
            None => tracing::debug!(lane, id, "flow steered to a lane that does not exist"),
        }
    }
}

/// One lane: a NIC queue, its engine, and its view of the apps.
pub struct Lane<N: Nic> {
    fp: FastPath,
    nic: N,
    rx: FrameBatch,
    tx: FrameBatch,
    mem: ShmMem,
    apps: Vec<Option<AppPort>>,
    woken: Vec<bool>,
    deferred: Vec<(u16, FlowId)>,
    shared: Arc<LaneShared>,
}

// SAFETY: every field is Send except the raw pointers inside `AppPort`
// (Send by its own impl) and `ShmMem`'s addresses, which point into regions
// that stay mapped while registered, whichever thread holds the lane.
unsafe impl<N: Nic> Send for Lane<N> {}

impl<N: Nic> Lane<N> {
    /// Lane `shared.id` over `nic`, with the flow table shared by all lanes.
    pub fn new(nic: N, table: Arc<FlowTable>, engine: Config, shared: Arc<LaneShared>) -> Self {
        let cap = table.capacity();
        Lane {
            fp: FastPath::new(table, engine).with_lane(shared.id),
            nic,
            rx: FrameBatch::new(BATCH),
            tx: FrameBatch::new(BATCH),
            mem: ShmMem::new(),
            apps: (0..MAX_APPS).map(|_| None).collect(),
            woken: vec![false; MAX_APPS],
            deferred: Vec::with_capacity(cap.min(1 << 16)),
            shared,
        }
    }

    pub fn id(&self) -> u16 {
        self.shared.id
    }

    /// One round; returns how much work it did.
    fn round(&mut self, now: u64, lanes: &[Arc<LaneShared>], slow_wake: RawFd) -> usize {
        let mut work = 0;
        let Lane {
            fp,
            nic,
            rx,
            tx,
            mem,
            apps,
            shared,
            woken,
            deferred,
        } = self;
        // Activations that did not fit into another lane's queue last round.
        deferred.retain(|&(lane, id)| !lanes[lane as usize].push_kick(id));
        let mut out = Sink {
            nic,
            tx,
            shared,
            lanes,
            deferred,
            exc_sent: false,
        };

        // 1. Receive.
        rx.clear();
        match out.nic.recv(rx) {
            Ok(n) => {
                work += n;
                fp.prefetch(rx.iter());
                for i in 0..n {
                    fp.rx(rx.frame(i), now, mem, &mut out);
                }
            }
            Err(e) => tracing::debug!("nic recv: {e}"),
        }

        // 2. App commands (their rings are served by lane 0; other lanes
        // skip the scan of the app table).
        let cmd_ports = if out.shared.id == 0 {
            &mut apps[..]
        } else {
            &mut []
        };
        for port in cmd_ports.iter_mut().flatten() {
            let Some(cmds) = port.cmds.as_mut() else {
                continue;
            };
            for _ in 0..APP_CMDS_PER_ROUND {
                let Some(c) = cmds.pop() else { break };
                work += 1;
                if let Err(e) = fp.app_cmd(port.id, &c, now, mem, &mut out) {
                    tracing::debug!(app = port.id, "refused app command: {e}");
                }
            }
        }

        // 3. Slow-path commands and forwarded activations.
        for _ in 0..SLOW_CMDS_PER_ROUND {
            let Some(c) = out.shared.cmds.pop() else {
                break;
            };
            work += 1;
            match c {
                CoreCmd::AddApp(port) => {
                    let id = port.id as usize;
                    if id < MAX_APPS {
                        mem.regions[id] = (port.base as usize, port.len);
                        apps[id] = Some(port);
                    }
                }
                CoreCmd::RemoveApp(id, remaining) => {
                    if let Some(slot) = apps.get_mut(id as usize) {
                        *slot = None;
                        mem.regions[id as usize] = (0, 0);
                    }
                    remaining.fetch_sub(1, Ordering::AcqRel);
                }
                CoreCmd::Send(frame) => {
                    out.tx(|b| {
                        let n = frame.len().min(b.len());
                        b[..n].copy_from_slice(&frame[..n]);
                        n
                    });
                }
                CoreCmd::Rx(frame) => fp.rx(&frame, now, mem, &mut out),
                CoreCmd::Retransmit(id) => fp.retransmit(id, now, &mut out),
                CoreCmd::Probe(id) => fp.probe(id, now, &mut out),
                CoreCmd::Kick(id) => fp.kick(id, now, &mut out),
            }
        }
        for _ in 0..KICKS_PER_ROUND {
            let Some(id) = out.shared.kicks.pop() else {
                break;
            };
            work += 1;
            fp.kick(id, now, &mut out);
        }

        // 4. Transmit what the scheduler allows, then flush.
        work += fp.poll_tx(now, TX_PER_ROUND, mem, &mut out);
        out.flush();
        if out.exc_sent {
            kick(slow_wake);
        }

        // 5. Notifications into this lane's event ring of each app.
        if fp.pending_notifications() > 0 {
            let n = fp.flush_notifications(|ctx, ev| match apps.get_mut(ctx as usize) {
                Some(Some(port)) => {
                    let ok = port.events.push(*ev);
                    if ok {
                        woken[ctx as usize] = true;
                    }
                    ok
                }
                // The app is gone: drop the notification.
                _ => true,
            });
            if n > 0 {
                work += n;
                for (i, w) in woken.iter_mut().enumerate() {
                    if *w {
                        *w = false;
                        if let Some(port) = &apps[i] {
                            if peer_sleeps(&port.header().app_waiting) {
                                kick(port.app_wake);
                            }
                        }
                    }
                }
            }
        }
        work
    }

    /// Tells apps (lane 0 holds their command rings) whether to kick.
    fn announce_sleep(&self, on: bool) {
        self.shared.sleeping.store(on, Ordering::SeqCst);
        for port in self.apps.iter().flatten() {
            if port.cmds.is_some() {
                announce_sleep(&port.header().core_sleeping, on);
            }
        }
        fence(Ordering::SeqCst);
    }

    fn publish_stats(&self) {
        if let Ok(mut s) = self.shared.stats.lock() {
            *s = self.fp.stats;
        }
    }
}

/// One fast-path polling thread.
pub struct Core<N: Nic> {
    id: usize,
    lanes: Vec<Lane<N>>,
    shared: Arc<FastPathShared<N>>,
    cfg: CoreConfig,
}

impl<N: Nic> Core<N> {
    pub fn new(id: usize, shared: Arc<FastPathShared<N>>, cfg: CoreConfig) -> Self {
        Core {
            id,
            lanes: Vec::new(),
            shared,
            cfg,
        }
    }

    /// Takes lanes handed to this core and hands on those assigned elsewhere.
    fn exchange_lanes(&mut self) {
        let sh = &*self.shared;
        while let Some(l) = sh.inbox[self.id].pop() {
            self.lanes.push(l);
        }
        let mut i = 0;
        while i < self.lanes.len() {
            let owner = self.lanes[i].shared.owner.load(Ordering::SeqCst) as usize;
            if owner != self.id && owner < sh.cores.len() {
                let l = self.lanes.swap_remove(i);
                l.publish_stats();
                if let Err(l) = sh.inbox[owner].push(l) {
                    // Cannot happen (an inbox holds every lane); keep it.
                    self.lanes.push(l);
                    break;
                }
                kick(sh.cores[owner].wake);
            } else {
                i += 1;
            }
        }
        let mut mask = 0u64;
        for l in &self.lanes {
            if l.id() < 64 {
                mask |= 1 << l.id();
            }
        }
        sh.cores[self.id].lanes_held.store(mask, Ordering::Relaxed);
    }

    /// One round of every lane held; returns the work done.
    fn round_all(&mut self, now: u64, lanes_sh: &[Arc<LaneShared>]) -> usize {
        let slow_wake = self.shared.slow_wake;
        self.lanes
            .iter_mut()
            .map(|l| l.round(now, lanes_sh, slow_wake))
            .sum()
    }

    /// Runs until `shared.stop` is set.
    pub fn run(mut self) {
        let spin = self.cfg.idle_spin.as_nanos().min(u64::MAX as u128) as u64;
        let mut last_work = now_ns();
        let mut last_stats = 0u64;
        let shared = self.shared.clone();
        let lanes_sh = &shared.lanes;
        let slot = &shared.cores[self.id];
        while !shared.stop.load(Ordering::Relaxed) {
            self.exchange_lanes();
            if self.lanes.is_empty() {
                // Inactive: sleep until the slow path hands over a lane.
                let mut pfd = libc::pollfd {
                    fd: slot.wake,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 1000) };
                drain(slot.wake);
                last_work = now_ns();
                continue;
            }
            let t0 = now_ns();
            let work = self.round_all(t0, lanes_sh);
            let t1 = now_ns();
            if work > 0 {
                slot.busy_ns.fetch_add(t1 - t0, Ordering::Relaxed);
                last_work = t1;
            } else {
                slot.idle_ns.fetch_add(t1 - t0, Ordering::Relaxed);
                if t1 - last_work > spin {
                    let slept = self.sleep(t1, lanes_sh);
                    slot.idle_ns.fetch_add(slept, Ordering::Relaxed);
                    last_work = now_ns();
                }
            }
            if t1 - last_stats > 1_000_000 {
                last_stats = t1;
                for l in &self.lanes {
                    l.publish_stats();
                }
            }
        }
        // Stopping: release every region before returning.
        for l in self.lanes.iter_mut() {
            l.publish_stats();
            for a in l.apps.iter_mut() {
                *a = None;
            }
        }
    }

    /// Blocks until a frame, a kick or the next scheduler deadline; returns
    /// the time asleep.
    fn sleep(&mut self, now: u64, lanes_sh: &[Arc<LaneShared>]) -> u64 {
        for l in &self.lanes {
            l.announce_sleep(true);
        }
        let mut timeout_ms: i32 = 100;
        for l in &self.lanes {
            if let Some(t) = l.fp.poll_at() {
                let ms = if t <= now {
                    0
                } else {
                    (((t - now) / 1_000_000) as i32).clamp(0, 100)
                };
                timeout_ms = timeout_ms.min(ms);
            }
        }
        // Re-check after announcing sleep, so no kick is missed.
        let t = now_ns();
        let work = self.round_all(t, lanes_sh);
        let slot = &self.shared.cores[self.id];
        let mut slept = 0;
        if work == 0 && timeout_ms != 0 {
            let mut fds: [libc::pollfd; 1 + 2 * MAX_LANES_PER_CORE] = [libc::pollfd {
                fd: -1,
                events: libc::POLLIN,
                revents: 0,
            };
                1 + 2 * MAX_LANES_PER_CORE];
            fds[0].fd = slot.wake;
            let mut n = 1;
            for l in self.lanes.iter().take(MAX_LANES_PER_CORE) {
                fds[n].fd = l.shared.wake;
                n += 1;
                if let Some(fd) = l.nic.wait_fd() {
                    fds[n].fd = fd;
                    n += 1;
                }
            }
            // SAFETY: `fds` holds `n` valid pollfd entries.
            unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, timeout_ms) };
            let after = now_ns();
            slept = after.saturating_sub(t);
            drain(slot.wake);
            for l in &self.lanes {
                drain(l.shared.wake);
            }
        }
        for l in &self.lanes {
            l.announce_sleep(false);
        }
        slept
    }
}
