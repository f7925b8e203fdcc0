//! The per-core poll loop: a thin layer that wires a NIC, the apps' context
//! queues and the slow path's queues around the sans-I/O [`FastPath`].
//!
//! One round: receive a NIC batch and run each frame through the engine;
//! apply app commands (round-robin, bounded per app); apply slow-path
//! commands (bounded); let the TX scheduler cut segments; flush the NIC
//! batch; deliver notifications (one eventfd kick per waiting app). A core
//! with nothing to do for `idle_spin` blocks in `poll()` on the NIC's fd and
//! its own eventfd until a frame, a kick or the scheduler's next deadline.
//!
//! Exceptions go to the slow path in buffers taken from a preallocated pool,
//! so the loop does not allocate per packet.

use crate::abi::{
    announce_sleep, peer_sleeps, AppCmd, AppEvent, PayloadMem, RegionHeader, RingConsumer,
    RingProducer,
};
use crate::engine::{Config, Exception, FastPath, Output, Stats};
use crate::flowtable::{FlowId, FlowTable};
use crate::nic::{FrameBatch, Nic};
use crossbeam_queue::ArrayQueue;
use std::os::fd::RawFd;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// An attached app as a core sees it: its mapped region and context queues.
pub struct AppPort {
    pub id: u16,
    pub base: *mut u8,
    pub len: usize,
    pub events: RingProducer<AppEvent>,
    pub cmds: RingConsumer<AppCmd>,
    /// The app's eventfd: written to wake the app.
    pub app_wake: RawFd,
}

// SAFETY: the region behind `base` stays mapped until the core acknowledges
// `CoreCmd::RemoveApp` (the slow path waits for that before unmapping).
unsafe impl Send for AppPort {}

impl AppPort {
    fn header(&self) -> &RegionHeader {
        // SAFETY: every region starts with a RegionHeader (the slow path
        // creates it that way and keeps it mapped while the port exists).
        unsafe { &*(self.base as *const RegionHeader) }
    }
}

/// Commands from the slow path to a core.
pub enum CoreCmd {
    AddApp(AppPort),
    /// Forget app `id`; `done` is set once the core no longer touches its region.
    RemoveApp(u16, Arc<AtomicBool>),
    /// Transmit this frame.
    Send(Vec<u8>),
    /// Run this frame through the receive path (data that raced an install).
    Rx(Vec<u8>),
    Retransmit(FlowId),
    Kick(FlowId),
}

/// An exception for the slow path.
pub struct Exc {
    pub reason: Exception,
    pub flow: Option<FlowId>,
    pub frame: Vec<u8>,
}

/// Queues and wake-ups shared between one core and the slow path.
pub struct CoreShared {
    pub cmds: ArrayQueue<CoreCmd>,
    pub exc: ArrayQueue<Exc>,
    /// Empty frame buffers for exceptions (the slow path returns them).
    pub exc_pool: ArrayQueue<Vec<u8>>,
    /// eventfd the core sleeps on (slow path and apps write it).
    pub core_wake: RawFd,
    /// eventfd the slow path sleeps on (the core writes it).
    pub slow_wake: RawFd,
    pub sleeping: AtomicBool,
    pub stop: AtomicBool,
    /// A copy of the engine's counters, refreshed about every millisecond.
    pub stats: Mutex<Stats>,
    pub busy_ns: AtomicU64,
    pub idle_ns: AtomicU64,
    pub exc_dropped: AtomicU64,
}

fn eventfd() -> std::io::Result<RawFd> {
    // SAFETY: plain syscall; the fd is owned by CoreShared and closed on drop.
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

impl CoreShared {
    pub fn new() -> std::io::Result<Arc<Self>> {
        let pool = ArrayQueue::new(1024);
        for _ in 0..1024 {
            let _ = pool.push(Vec::with_capacity(crate::nic::FRAME_SLOT));
        }
        Ok(Arc::new(CoreShared {
            cmds: ArrayQueue::new(16 * 1024),
            exc: ArrayQueue::new(1024),
            exc_pool: pool,
            core_wake: eventfd()?,
            slow_wake: eventfd()?,
            sleeping: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            stats: Mutex::new(Stats::default()),
            busy_ns: AtomicU64::new(0),
            idle_ns: AtomicU64::new(0),
            exc_dropped: AtomicU64::new(0),
        }))
    }

    /// Queues a command and wakes the core if it sleeps. False if the queue is full.
    pub fn command(&self, c: CoreCmd) -> bool {
        let ok = self.cmds.push(c).is_ok();
        // The publishing side of the sleep handshake (see `abi::announce_sleep`).
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            kick(self.core_wake);
        }
        ok
    }

    /// Returns an exception's buffer to the pool.
    pub fn recycle(&self, mut buf: Vec<u8>) {
        buf.clear();
        let _ = self.exc_pool.push(buf);
    }
}

impl Drop for CoreShared {
    fn drop(&mut self) {
        // SAFETY: closing the eventfds this struct created.
        unsafe {
            libc::close(self.core_wake);
            libc::close(self.slow_wake);
        }
    }
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
    shared: &'a CoreShared,
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
}

/// One fast-path core.
pub struct Core<N: Nic> {
    fp: FastPath,
    nic: N,
    rx: FrameBatch,
    tx: FrameBatch,
    mem: ShmMem,
    apps: Vec<Option<AppPort>>,
    shared: Arc<CoreShared>,
    cfg: CoreConfig,
    woken: Vec<bool>,
}

impl<N: Nic> Core<N> {
    pub fn new(
        nic: N,
        table: Arc<FlowTable>,
        engine: Config,
        shared: Arc<CoreShared>,
        cfg: CoreConfig,
    ) -> Self {
        Core {
            fp: FastPath::new(table, engine),
            nic,
            rx: FrameBatch::new(BATCH),
            tx: FrameBatch::new(BATCH),
            mem: ShmMem::new(),
            apps: (0..MAX_APPS).map(|_| None).collect(),
            shared,
            cfg,
            woken: vec![false; MAX_APPS],
        }
    }

    /// Runs until `shared.stop` is set.
    pub fn run(mut self) {
        let mut last_work = now_ns();
        let mut last_stats = 0u64;
        let mut busy_since = last_work;
        while !self.shared.stop.load(Ordering::Relaxed) {
            let now = now_ns();
            let work = self.round(now);
            if work > 0 {
                last_work = now;
            } else if now - last_work > self.cfg.idle_spin.as_nanos() as u64 {
                self.shared
                    .busy_ns
                    .fetch_add(now - busy_since, Ordering::Relaxed);
                self.sleep(now);
                let after = now_ns();
                self.shared
                    .idle_ns
                    .fetch_add(after - now, Ordering::Relaxed);
                busy_since = after;
                last_work = after;
            }
            if now - last_stats > 1_000_000 {
                last_stats = now;
                if let Ok(mut s) = self.shared.stats.lock() {
                    *s = self.fp.stats;
                }
                self.shared
                    .busy_ns
                    .fetch_add(now - busy_since, Ordering::Relaxed);
                busy_since = now;
            }
        }
        // Stopping: release every region before returning.
        for a in self.apps.iter_mut() {
            *a = None;
        }
    }

    /// One round of the loop; returns how much work it did.
    pub fn round(&mut self, now: u64) -> usize {
        let mut work = 0;
        let Core {
            fp,
            nic,
            rx,
            tx,
            mem,
            apps,
            shared,
            woken,
            ..
        } = self;
        let mut out = Sink {
            nic,
            tx,
            shared,
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

        // 2. App commands.
        for port in apps.iter_mut().flatten() {
            for _ in 0..APP_CMDS_PER_ROUND {
                let Some(c) = port.cmds.pop() else { break };
                work += 1;
                if let Err(e) = fp.app_cmd(port.id, &c, now, mem, &mut out) {
                    tracing::debug!(app = port.id, "refused app command: {e}");
                }
            }
        }

        // 3. Slow-path commands.
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
                CoreCmd::RemoveApp(id, done) => {
                    if let Some(slot) = apps.get_mut(id as usize) {
                        *slot = None;
                        mem.regions[id as usize] = (0, 0);
                    }
                    done.store(true, Ordering::Release);
                }
                CoreCmd::Send(frame) => {
                    out.tx(|b| {
                        let n = frame.len().min(b.len());
                        b[..n].copy_from_slice(&frame[..n]);
                        n
                    });
                }
                CoreCmd::Rx(frame) => fp.rx(&frame, now, mem, &mut out),
                CoreCmd::Retransmit(id) => fp.retransmit(id, now),
                CoreCmd::Kick(id) => fp.kick(id, now),
            }
        }

        // 4. Transmit what the scheduler allows, then flush.
        work += fp.poll_tx(now, TX_PER_ROUND, mem, &mut out);
        out.flush();
        if out.exc_sent {
            kick(out.shared.slow_wake);
        }

        // 5. Notifications.
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

    fn sleep(&mut self, now: u64) {
        self.shared.sleeping.store(true, Ordering::SeqCst);
        for port in self.apps.iter().flatten() {
            announce_sleep(&port.header().core_sleeping, true);
        }
        fence(Ordering::SeqCst);
        // Re-check after announcing sleep, so no kick is missed.
        let mut timeout_ms: i32 = 100;
        if let Some(t) = self.fp.poll_at() {
            timeout_ms = if t <= now {
                0
            } else {
                (((t - now) / 1_000_000) as i32).clamp(0, 100)
            };
        }
        if self.round(now_ns()) == 0 && timeout_ms != 0 {
            let mut fds = [
                libc::pollfd {
                    fd: self.shared.core_wake,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.nic.wait_fd().unwrap_or(-1),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let nfds = if fds[1].fd >= 0 { 2 } else { 1 };
            // SAFETY: `fds` is a valid array of `nfds` pollfd entries.
            unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout_ms) };
            drain(self.shared.core_wake);
        }
        self.shared.sleeping.store(false, Ordering::SeqCst);
        for port in self.apps.iter().flatten() {
            announce_sleep(&port.header().core_sleeping, false);
        }
    }
}
