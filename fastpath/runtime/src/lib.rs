//! # tas-runtime
//!
//! The fast-path threads: *lanes* polled by *cores*.
//!
//! Owns: lanes, cores (polling threads), their sleep/wake on eventfds and
//! NIC fds, the hand-over of lanes between cores, the app ports (rings in
//! each app's region) as a lane sees them, the queues between lanes and
//! the slow path, and huge pages for the flow table (THP advice) and the
//! app regions (reserved hugetlbfs pages when enough are free, else THP
//! advice; [`huge`]). This is where threads, clocks and `poll()` are
//! allowed.
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
//! On an interface with fewer RX queues than lanes, the lanes fed by the
//! NIC steer each TCP frame to the lane its flow hashes to
//! ([`FastPathShared::enable_steering`]), so every lane has work.
//!
//! One round of a lane: take the frames steered to it; receive a NIC batch
//! and run each frame through the engine; apply app commands from this
//! lane's command ring of each app (every app has one per lane and posts a
//! flow's commands on its owner's ring; one posted elsewhere is applied all
//! the same, under the flow lock, and its TX activation forwarded, counted
//! in `LaneShared::app_cmds_forwarded`); apply slow-path commands and
//! activations forwarded by other lanes
//! (bounded); let the TX scheduler cut segments; flush the NIC batch;
//! deliver notifications into this lane's event ring of each app (one
//! eventfd kick per waiting app). A core whose lanes had nothing to do for
//! its idle spin blocks in `poll()` on its lanes' NIC fds and eventfds until
//! a frame, a kick or the next scheduler deadline. The spin is fixed
//! (`CoreConfig::adaptive` off) or self-tuned every [`EPOCH_NS`] by
//! [`tas_tune::SpinTuner`] from the gaps between work and CPU contention
//! (the larger of the thread's own wait for a CPU and the machine's CPU
//! pressure, `/proc/pressure/cpu`: a spinning core that makes the app or
//! its clients wait shows in the second, not the first; each without the
//! part that is wake-up latency, and a wake-up priced at what the core
//! measured it to cost), toward the goal in [`FastPathShared::goal`];
//! the same epoch sets how long ACKs are held for the apps' answers
//! (`ResponseWatch`) and
//! publishes the busy time, counted only while the thread ran. Where the
//! rounds' time goes, stage by stage, is estimated from one round in
//! [`STAGE_SAMPLE`] ([`StageStats`]), with the number of NIC sends and app
//! wake-ups.
//!
//! Exceptions go to the slow path in buffers taken from a preallocated pool,
//! so the loop does not allocate per packet. So do the copies of
//! [`capture`] (`tasctl capture`), only while a capture runs.
//!
//! # No queue loses anything
//!
//! * **Lane → slow path (exceptions).** An exception (SYN, FIN, RST, a frame
//!   for no flow, ARP, ...) often carries a state change, so none is
//!   dropped. When the lane's exception queue (`EXC_QUEUE` entries) is full,
//!   the exception waits in the lane's own overflow, in order, and is
//!   offered again at the start of every round (counted in
//!   `LaneShared::exc_deferred`). When the overflow holds [`EXC_OVERFLOW_MAX`]
//!   frames or [`EXC_OVERFLOW_BYTES`] bytes, the lane stops reading its NIC
//!   queue until the slow path catches up (counted per round in
//!   `exc_backpressure`): the NIC's own ring then fills and drops, as on any
//!   overloaded host, but nothing that tasd has already taken in is lost.
//!   Buffers come from the lane's pool (1,024 of them); only while the
//!   slow path lags that far behind are more allocated (and freed again
//!   when the pool is full).
//! * **Slow path → lane (commands).** A command (`Send`, `Retransmit`,
//!   `Kick`, `AddApp`, ...) that does not fit the lane's queue waits in the
//!   slow path's [`LaneCommands`] backlog for that lane, in order, and is
//!   pushed again every slow-path turn (counted in `LaneCommands::deferred`).
//! * **Lane → lane (TX activations).** A forwarded activation that does not
//!   fit waits in the sending lane's `deferred` list (retried every round).
//! * **Lane → app (notifications).** The engine keeps a flow marked until its
//!   notification fits the app's event ring.
//! * **App → lane (commands).** An app's command rings (one per lane) have
//!   room by back-pressure (the app waits for a slot of that ring; a lane
//!   takes at most `APP_CMDS_PER_ROUND` per app per round, starting each
//!   round with the next app, so no app starves another). Each lane
//!   applies what an app published on its ring before the app is removed
//!   (`RemoveApp` drains the ring first: a process's last write before it
//!   exits counts). The slow path takes numbered marks
//!   ([`FastPathShared::cmd_mark`]); each lane records, per app, the
//!   newest mark its round had seen when it found the app's ring empty, so
//!   the slow path can tell when everything an app published on any ring
//!   before a mark has been applied ([`FastPathShared::cmds_applied`]:
//!   tasd's answer to a takeover of a shared flow waits for it).

pub mod capture;
pub mod huge;

use capture::{Capture, Dir};
use crossbeam_queue::ArrayQueue;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tas_abi::{
    announce_sleep, kick_needed, peer_sleeps, AppCmd, AppEvent, PayloadMem, RegionHeader,
    RingConsumer, RingProducer,
};
use tas_engine::engine::{frame_key, Config, Exception, FastPath, Output, Stats};
use tas_engine::flowtable::{FlowId, FlowTable};
use tas_nic::{FrameBatch, Nic};
use tas_tune::{Goal, SpinTuner, WakeLatency};

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
/// Longest a core with lanes blocks without a wake-up (a backstop).
const SLEEP_CAP_MS: i32 = 100;
/// A held ACK due within this long is waited for polling while the apps
/// answer what they get (`ResponseWatch`).
const HELD_POLL_MAX_NS: u64 = 1_000_000;
/// How much longer than one wake-up a held ACK is polled for once the
/// hold grew ([`held_poll_window`]).
const HELD_POLL_MARGIN_NS: u64 = 20_000;

/// How long into a held ACK's hold of `hold` ns a core out of work polls
/// for the answer while its apps answer (`ResponseWatch`): the configured
/// hold `base`, or once the hold grew for later answers, one wake-up
/// (`wake` ns, measured) and a margin if that is longer — an app the
/// core woke for the data answers no earlier than its wake-up, and a
/// core that slept at the configured hold would pay its own wake-up for
/// each such answer. Never beyond the hold.
fn held_poll_window(base: u64, hold: u64, wake: u64) -> u64 {
    if hold <= base {
        return hold;
    }
    base.max(wake + HELD_POLL_MARGIN_NS).min(hold)
}
/// A core that has not measured a wake-up ([`WakeLatency`]) for this long
/// sleeps once to a deadline this short when it goes to sleep anyway (a
/// probe: one wake-up more per interval).
const WAKE_PROBE_EVERY_NS: u64 = 50_000_000;
const WAKE_PROBE_NS: u64 = 20_000;
/// Sleeps to a deadline at most this far are wake-up samples: the kernel
/// stretches a poll's timeout by 0.1 % on its own (`select_estimate_accuracy`),
/// under the thread's 2 µs timer slack up to here.
const WAKE_SAMPLE_MAX_NS: u64 = 1_000_000;
/// At most one wake-up sample per this long (each costs two reads of the
/// thread's schedstat).
const WAKE_SAMPLE_GAP_NS: u64 = 5_000_000;
/// A fast-path thread's timer slack: how late the kernel may end its
/// sleeps to a deadline (a held ACK, a paced flow's next send).
const FP_TIMER_SLACK_NS: u64 = 2_000;
/// Longest a core without lanes blocks without a wake-up (a backstop).
const INACTIVE_CAP_MS: i32 = 1000;
/// Entries of a lane's exception queue to the slow path.
pub const EXC_QUEUE: usize = 4096;
/// Preallocated exception buffers per lane.
const EXC_POOL: usize = 1024;
/// A lane whose exception overflow holds this many frames (or
/// [`EXC_OVERFLOW_BYTES`]) stops reading its NIC queue until the slow path
/// has taken some.
pub const EXC_OVERFLOW_MAX: usize = 65536;
pub const EXC_OVERFLOW_BYTES: usize = 32 << 20;
/// Entries of a lane's command queue from the slow path.
pub const CMD_QUEUE: usize = 16 * 1024;
/// Software steering: frames waiting for a lane (and the buffers of its
/// pool; the queue holds every buffer, so it always has room).
pub const STEER_QUEUE: usize = 2048;
/// One round in this many is timed stage by stage ([`StageStats`]).
pub const STAGE_SAMPLE: u64 = 16;

/// The stages of a lane's round, in order, as [`StageStats::ns`] indexes
/// them.
pub const STAGES: [&str; 6] = ["rx", "app_cmds", "slow_cmds", "tx", "nic_send", "notify"];
const ST_RX: usize = 0;
const ST_APP: usize = 1;
const ST_SLOW: usize = 2;
const ST_TX: usize = 3;
const ST_NIC_SEND: usize = 4;
const ST_NOTIFY: usize = 5;

/// Where a lane's time goes, without a profiler (`tasctl stats`:
/// `lanes.rounds`, `lanes.stage_*_ns`, `lanes.nic_sends`,
/// `lanes.app_wakes`, `lanes.app_kicks_skipped`). Every
/// [`STAGE_SAMPLE`]-th round is timed stage by stage (seven clock reads,
/// vDSO) and each stage's time counted [`STAGE_SAMPLE`] times: an estimate
/// of the total with no clock read in the other rounds. Stages, in round order ([`STAGES`]): `rx` (steered
/// frames, the NIC's receive and the engine's receive path, ACKs built
/// included), `app_cmds`, `slow_cmds` (slow-path commands and forwarded
/// activations), `tx` (the scheduler's segments and the held ACKs, built),
/// `nic_send` (every `Nic::send`, whichever stage called it: the copy into
/// the NIC's buffers and the transmit system call, which on AF_XDP over
/// veth runs the peer's whole receive path in this thread) and `notify`
/// (event rings and the eventfd writes that wake sleeping apps). Time a
/// core spends asleep is in neither (see `CoreSlot::idle_ns`). Refreshed
/// with the engine's counters, about every millisecond.
#[derive(Default)]
pub struct StageStats {
    /// Estimated ns per stage (index as [`STAGES`]).
    pub ns: [AtomicU64; STAGES.len()],
    /// Rounds run.
    pub rounds: AtomicU64,
    /// Calls of `Nic::send` (on AF_XDP, each is at least one transmit
    /// system call).
    pub nic_sends: AtomicU64,
    /// eventfd writes that woke a sleeping app.
    pub app_wakes: AtomicU64,
    /// Kicks of a sleeping app left out because it had not drained the
    /// last one yet (`tas_abi::kick_needed`).
    pub app_kicks_skipped: AtomicU64,
}

/// A lane's own copy of its [`StageStats`] (published with the engine's
/// counters).
#[derive(Default, Clone, Copy)]
struct StageLocal {
    ns: [u64; STAGES.len()],
    rounds: u64,
    nic_sends: u64,
    app_wakes: u64,
    app_kicks_skipped: u64,
}

/// Times the stages of one sampled round (does nothing in the others).
struct StageClock {
    on: bool,
    last: u64,
    /// `Sink::send_ns` already charged to `nic_send`.
    send_seen: u64,
}

impl StageClock {
    fn start(on: bool) -> StageClock {
        StageClock {
            on,
            last: if on { now_ns() } else { 0 },
            send_seen: 0,
        }
    }

    /// Ends `stage`: the time since the previous mark, less what
    /// `Nic::send` took meanwhile (`send_ns`, cumulative), which goes to
    /// `nic_send`.
    #[inline]
    fn mark(&mut self, stage: usize, send_ns: u64, acc: &mut StageLocal) {
        if !self.on {
            return;
        }
        let t = now_ns();
        let send = send_ns.saturating_sub(self.send_seen);
        self.send_seen = send_ns;
        let d = t.saturating_sub(self.last).saturating_sub(send);
        self.last = t;
        acc.ns[stage] += d * STAGE_SAMPLE;
        acc.ns[ST_NIC_SEND] += send * STAGE_SAMPLE;
    }
}

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
/// event ring, this lane's command ring and this lane's sleep flag.
pub struct AppPort {
    pub id: u16,
    /// The payload region whose flows this app's command ring may drive:
    /// its own id, or (a context sharing another app's region after a
    /// fork) the region owner's.
    pub mem: u16,
    pub base: *mut u8,
    pub len: usize,
    pub events: RingProducer<AppEvent>,
    pub cmds: RingConsumer<AppCmd>,
    /// This lane's sleep flag in the region (`RegionLayout::lane_flag_off`):
    /// raised while the core holding the lane sleeps.
    pub lane_sleeping: *const AtomicU32,
    /// The app's eventfd: written to wake the app.
    pub app_wake: RawFd,
    /// `RegionHeader::app_drains` when this lane last wrote `app_wake`
    /// (`tas_abi::kick_needed`); None before the first kick.
    pub kicked_at: Option<u32>,
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

    fn lane_sleeping(&self) -> &AtomicU32 {
        // SAFETY: the flag lies inside the region (its creator derived the
        // offset from `RegionLayout`) and is aligned (64-byte stride from a
        // 64-byte aligned offset); the region stays mapped while the port
        // exists.
        unsafe { &*self.lane_sleeping }
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
    pub wake: OwnedFd,
    /// Set while the holding core sleeps.
    pub sleeping: AtomicBool,
    /// The core that should hold this lane (the slow path writes it; the
    /// holder hands the lane over when it differs).
    pub owner: AtomicU32,
    /// A copy of the engine's counters, refreshed about every millisecond.
    pub stats: Mutex<Stats>,
    /// Exceptions that found the queue full and waited in the lane's
    /// overflow (none is ever dropped).
    pub exc_deferred: AtomicU64,
    /// Rounds in which the lane left its NIC queue unread because its
    /// exception overflow was at its bound.
    pub exc_backpressure: AtomicU64,
    /// Exceptions in the lane's overflow now.
    pub exc_overflow: AtomicU64,
    /// Copies of frames for `tasctl capture` (off unless asked for).
    pub capture: Capture,
    /// Software steering (an interface with fewer RX queues than lanes, see
    /// [`FastPathShared::enable_steering`]): frames lanes fed by the NIC
    /// received for this lane's flows, in buffers from `steer_pool`.
    pub steered: ArrayQueue<Vec<u8>>,
    steer_pool: ArrayQueue<Vec<u8>>,
    /// Steering is on: take frames from `steered` every round.
    steer_in: AtomicBool,
    /// Lanes this lane hashes its received TCP frames over (0: none, it
    /// processes all of them itself).
    steer_over: AtomicU32,
    /// Fed by a NIC queue of its own (false: by steering only).
    pub hw_fed: AtomicBool,
    /// Frames this lane got by steering, and frames for it that found its
    /// pool empty (dropped, like a full NIC ring).
    pub steered_in: AtomicU64,
    pub steer_dropped: AtomicU64,
    /// Per app id: the newest mark ([`FastPathShared::cmd_mark`]) a round
    /// of this lane had seen when it found the app's command ring of this
    /// lane empty, every command popped before applied (`u64::MAX` once
    /// the app was removed: its ring was drained then).
    cmds_empty: Box<[AtomicU64]>,
    /// App commands this lane applied, and those of them whose flow is
    /// another lane's (posted on the wrong ring: the TX activation was
    /// handed to the owner). Refreshed with the engine's counters.
    pub app_cmds: AtomicU64,
    pub app_cmds_forwarded: AtomicU64,
    /// Where the lane's rounds spend their time.
    pub stages: StageStats,
}

impl LaneShared {
    fn new(id: u16) -> std::io::Result<Self> {
        let pool = ArrayQueue::new(EXC_POOL);
        for _ in 0..EXC_POOL {
            let _ = pool.push(Vec::with_capacity(tas_nic::FRAME_SLOT));
        }
        Ok(LaneShared {
            id,
            cmds: ArrayQueue::new(CMD_QUEUE),
            exc: ArrayQueue::new(EXC_QUEUE),
            exc_pool: pool,
            kicks: ArrayQueue::new(16 * 1024),
            wake: eventfd()?,
            sleeping: AtomicBool::new(false),
            owner: AtomicU32::new(0),
            stats: Mutex::new(Stats::default()),
            exc_deferred: AtomicU64::new(0),
            exc_backpressure: AtomicU64::new(0),
            exc_overflow: AtomicU64::new(0),
            capture: Capture::default(),
            steered: ArrayQueue::new(STEER_QUEUE),
            steer_pool: ArrayQueue::new(STEER_QUEUE),
            steer_in: AtomicBool::new(false),
            steer_over: AtomicU32::new(0),
            hw_fed: AtomicBool::new(true),
            steered_in: AtomicU64::new(0),
            steer_dropped: AtomicU64::new(0),
            cmds_empty: (0..MAX_APPS).map(|_| AtomicU64::new(0)).collect(),
            app_cmds: AtomicU64::new(0),
            app_cmds_forwarded: AtomicU64::new(0),
            stages: StageStats::default(),
        })
    }

    /// Whether this lane found app `app`'s command ring empty in a round
    /// that started after `mark` ([`FastPathShared::cmd_mark`]) was taken,
    /// or the app was removed (its ring drained first): everything it
    /// published on this lane's ring before the mark has been applied.
    /// True for an id outside the table (it has no ring).
    pub fn cmds_applied(&self, app: u16, mark: u64) -> bool {
        self.cmds_empty
            .get(app as usize)
            .is_none_or(|e| e.load(Ordering::Acquire) >= mark)
    }

    /// Queues a command and wakes the lane's core if it sleeps; gives the
    /// command back when the queue is full (see [`LaneCommands`], which
    /// keeps it for later).
    pub fn command(&self, c: CoreCmd) -> Result<(), CoreCmd> {
        let r = self.cmds.push(c);
        self.wake_if_sleeping();
        r
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
            kick(self.wake.as_raw_fd());
        }
    }

    /// Hands this lane a frame another lane received for one of its flows;
    /// false when its pool is empty (the frame is dropped and counted).
    fn steer_in_frame(&self, frame: &[u8]) -> bool {
        let Some(mut b) = self.steer_pool.pop() else {
            self.steer_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        b.clear();
        b.extend_from_slice(frame);
        // Pool and queue hold the same buffers: there is room.
        if let Err(b) = self.steered.push(b) {
            let _ = self.steer_pool.push(b);
            self.steer_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Returns an exception's buffer to the pool.
    pub fn recycle(&self, mut buf: Vec<u8>) {
        buf.clear();
        let _ = self.exc_pool.push(buf);
    }
}

/// The slow path's side of the lanes' command queues: a command that does
/// not fit its lane's queue waits here, behind any earlier one for that
/// lane, until [`LaneCommands::flush`] can push it. Nothing is dropped; a
/// lane's commands keep their order.
pub struct LaneCommands {
    backlog: Vec<VecDeque<CoreCmd>>,
    /// Per lane: commands that had to wait (cumulative).
    pub deferred: Vec<u64>,
}

impl LaneCommands {
    pub fn new(lanes: usize) -> Self {
        LaneCommands {
            backlog: (0..lanes).map(|_| VecDeque::new()).collect(),
            deferred: vec![0; lanes],
        }
    }

    /// Queues `c` for lane `lane` (of `lanes`), or keeps it when that
    /// lane's queue is full or older commands wait.
    pub fn send(&mut self, lanes: &[Arc<LaneShared>], lane: usize, c: CoreCmd) {
        let lane = if lane < lanes.len() { lane } else { 0 };
        let q = &mut self.backlog[lane];
        let c = if q.is_empty() {
            match lanes[lane].command(c) {
                Ok(()) => return,
                Err(c) => c,
            }
        } else {
            c
        };
        q.push_back(c);
        self.deferred[lane] += 1;
    }

    /// Pushes waiting commands while there is room; true when none waits.
    pub fn flush(&mut self, lanes: &[Arc<LaneShared>]) -> bool {
        let mut empty = true;
        for (q, l) in self.backlog.iter_mut().zip(lanes) {
            let mut pushed = false;
            while let Some(c) = q.pop_front() {
                if let Err(c) = l.cmds.push(c) {
                    q.push_front(c);
                    break;
                }
                pushed = true;
            }
            if pushed {
                l.wake_if_sleeping();
            }
            empty &= q.is_empty();
        }
        empty
    }

    /// Commands waiting, over all lanes.
    pub fn waiting(&self) -> usize {
        self.backlog.iter().map(VecDeque::len).sum()
    }
}

/// A lane's exceptions that did not fit its queue to the slow path, in
/// arrival order.
#[derive(Default)]
struct ExcOverflow {
    q: VecDeque<Exc>,
    bytes: usize,
}

impl ExcOverflow {
    fn push(&mut self, e: Exc) {
        self.bytes += e.frame.len();
        self.q.push_back(e);
    }

    /// Moves what fits into `shared.exc`; returns how many moved.
    fn drain_into(&mut self, shared: &LaneShared) -> usize {
        let mut n = 0;
        while let Some(e) = self.q.pop_front() {
            let len = e.frame.len();
            if let Err(e) = shared.exc.push(e) {
                self.q.push_front(e);
                break;
            }
            self.bytes -= len;
            n += 1;
        }
        n
    }

    fn at_bound(&self) -> bool {
        self.q.len() >= EXC_OVERFLOW_MAX || self.bytes >= EXC_OVERFLOW_BYTES
    }
}

/// One polling thread's shared state.
pub struct CoreSlot {
    pub id: u16,
    /// eventfd that wakes the core (lane hand-over, stop).
    pub wake: OwnedFd,
    /// Time spent in rounds that found work, on the CPU: the wall-clock
    /// time of those rounds scaled, every [`EPOCH_NS`], by the share of the
    /// core's awake time the thread actually ran (the kernel's schedstat),
    /// so time preempted by other threads is not counted as busy.
    pub busy_ns: AtomicU64,
    /// Time spent in empty rounds (spinning) and asleep.
    pub idle_ns: AtomicU64,
    /// Lanes the core holds now (a bit per lane below 64).
    pub lanes_held: AtomicU64,
    /// The idle spin in use now, ns (the self-tuned value, or the static
    /// `--idle-spin-us`).
    pub spin_ns: AtomicU64,
    /// Share of the last epoch the thread waited for a CPU, parts per
    /// million (0 when the kernel keeps no schedstat).
    pub contention_ppm: AtomicU64,
    /// Share of the last epoch in which some task of the machine waited
    /// for a CPU (`/proc/pressure/cpu`, `some`), parts per million (0
    /// without PSI). The idle spin is priced with the larger of this and
    /// `contention_ppm`.
    pub pressure_ppm: AtomicU64,
    /// What a wake-up of this core costs, measured ([`WakeLatency`]), ns.
    pub wake_ns: AtomicU64,
    /// CPU the machine left idle over the last few epochs, in thousandths
    /// of a CPU (`/proc/stat`); with half a CPU idle or more, the
    /// pressure above is wake-up latency, not CPUs short
    /// ([`tas_tune::machine_contention`]).
    pub idle_cpu_milli: AtomicU64,
    /// How long the core's lanes hold an ACK for the apps' answer now, ns
    /// (`--ack-delay-us`, or longer while answers come later:
    /// `ResponseWatch`).
    pub ack_hold_ns: AtomicU64,
    /// The polling thread's kernel thread id (0 until it runs).
    pub tid: AtomicU32,
}

/// Everything the cores and the slow path share.
pub struct FastPathShared<N: Nic> {
    pub lanes: Vec<Arc<LaneShared>>,
    pub cores: Vec<CoreSlot>,
    /// Lanes being handed to each core.
    inbox: Vec<ArrayQueue<Lane<N>>>,
    /// eventfd the slow path sleeps on (cores write it).
    pub slow_wake: OwnedFd,
    pub stop: AtomicBool,
    /// The goal the self-tuning optimises ([`Goal::wire`]; `tasctl tune`).
    pub goal: AtomicU32,
    /// The newest command mark taken ([`FastPathShared::cmd_mark`]).
    cmd_epoch: AtomicU64,
}

impl<N: Nic> FastPathShared<N> {
    /// The goal the cores' spin controllers follow.
    pub fn goal(&self) -> Goal {
        Goal::from_wire(self.goal.load(Ordering::Relaxed)).unwrap_or_default()
    }

    /// A mark of where the lanes' serving of the apps' command rings stands
    /// now. Every command an app published (on any lane's ring) before the
    /// mark was taken has been applied once
    /// [`FastPathShared::cmds_applied`] says so for that app (every lane is
    /// woken so that it gets there even when it slept). Used before tasd
    /// answers where a shared flow stands (another process's last writes
    /// may still be queued in its rings).
    pub fn cmd_mark(&self) -> u64 {
        let m = self.cmd_epoch.fetch_add(1, Ordering::SeqCst) + 1;
        for l in &self.lanes {
            l.wake_if_sleeping();
        }
        m
    }

    /// Whether every lane applied what app `app` published on its ring
    /// before `mark` ([`FastPathShared::cmd_mark`]) was taken
    /// ([`LaneShared::cmds_applied`]).
    pub fn cmds_applied(&self, app: u16, mark: u64) -> bool {
        self.lanes.iter().all(|l| l.cmds_applied(app, mark))
    }

    /// Changes the goal; each core follows at its next epoch.
    pub fn set_goal(&self, g: Goal) {
        self.goal.store(g.wire(), Ordering::Relaxed);
    }

    /// Software steering for an interface with fewer RX queues than lanes:
    /// lanes `0..hw` are fed by the NIC and hash every TCP frame they
    /// receive (its flow key, as the flow table does) over all lanes,
    /// handing the frames of other lanes' flows over through their
    /// `steered` queues; lanes `hw..` get frames only that way. Non-TCP
    /// frames stay where they arrived. A flow's segments are thus always
    /// processed by one lane, the one its handshake was processed on, which
    /// is also the lane that sends for it (its `group`). Call before the
    /// cores start.
    pub fn enable_steering(&self, hw: usize) {
        let n = self.lanes.len() as u32;
        for (i, l) in self.lanes.iter().enumerate() {
            while l.steer_pool.len() < STEER_QUEUE {
                let _ = l.steer_pool.push(Vec::with_capacity(tas_nic::FRAME_SLOT));
            }
            l.steer_in.store(true, Ordering::SeqCst);
            l.hw_fed.store(i < hw, Ordering::SeqCst);
            l.steer_over
                .store(if i < hw { n } else { 0 }, Ordering::SeqCst);
        }
    }

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
                spin_ns: AtomicU64::new(0),
                contention_ppm: AtomicU64::new(0),
                pressure_ppm: AtomicU64::new(0),
                wake_ns: AtomicU64::new(tas_tune::DEFAULT_WAKE_COST_NS),
                idle_cpu_milli: AtomicU64::new(0),
                ack_hold_ns: AtomicU64::new(0),
                tid: AtomicU32::new(0),
            });
        }
        Ok(Arc::new(FastPathShared {
            lanes: lane_v,
            inbox: (0..cores).map(|_| ArrayQueue::new(lanes.max(1))).collect(),
            cores: core_v,
            slow_wake: eventfd()?,
            stop: AtomicBool::new(false),
            goal: AtomicU32::new(Goal::default().wire()),
            cmd_epoch: AtomicU64::new(0),
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
        kick(self.cores[core].wake.as_raw_fd());
    }

    /// Moves lane `lane` to core `core`; its current holder hands it over
    /// at the end of its round.
    pub fn assign(&self, lane: usize, core: usize) {
        let l = &self.lanes[lane];
        let old = l.owner.swap(core as u32, Ordering::SeqCst) as usize;
        if old != core {
            kick(self.cores[old].wake.as_raw_fd());
            kick(l.wake.as_raw_fd());
        }
    }

    /// Stops every core (they return from `run`).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in &self.cores {
            kick(c.wake.as_raw_fd());
        }
    }
}

/// A non-blocking eventfd, closed when its owner drops it.
fn eventfd() -> std::io::Result<OwnedFd> {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    let efd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
    Ok(OwnedFd::from(efd))
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
    fn prefetch(&self, mem: u16, off: u32) {
        // (No bounds check on `off`: a prefetch never faults, so a stale
        // offset or an unmapped region's base of 0 only hints a useless line.)
        if let Some(&(base, _)) = self.regions.get(mem as usize) {
            tas_abi::prefetch_line(base.wrapping_add(off as usize) as *const u8);
        }
    }
    #[inline]
    fn read_sum(&self, mem: u16, off: u32, out: &mut [u8]) -> Option<u64> {
        let p = self.range(mem, off, out.len())?;
        // SAFETY: as in `write`: `out.len()` bytes at `p` lie inside a
        // mapped region.
        Some(unsafe { tas_abi::copy_sum_raw(out, p) })
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
    /// Spin this long without work before blocking: the fixed value, or
    /// the start value when `adaptive`.
    pub idle_spin: Duration,
    /// Self-tune the spin ([`tas_tune::SpinTuner`], following
    /// [`FastPathShared::goal`]) from the gaps between work and the
    /// thread's CPU contention, once per [`EPOCH_NS`].
    pub adaptive: bool,
    /// Yield the CPU (`sched_yield`) between polls that found nothing to
    /// do, so that a thread waiting for this CPU runs before the spin ends.
    pub idle_yield: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            idle_spin: Duration::from_micros(200),
            adaptive: false,
            idle_yield: true,
        }
    }
}

/// How often a core publishes its busy time and re-tunes its spin.
pub const EPOCH_NS: u64 = 20_000_000;

/// Cumulative kernel counters in a small `/proc` file, read once per epoch
/// (one `pread`): the thread's schedstat (`/proc/thread-self/schedstat`:
/// time on a CPU and time runnable but waiting for one, ns) and the
/// machine's CPU pressure (`/proc/pressure/cpu`, the kernel's PSI: time in
/// which some runnable task waited for a CPU, µs). The pressure counts the
/// waits a spinning core causes other threads (the app, its clients, the
/// kernel's workers), which the core's own schedstat does not show while
/// the scheduler lets it keep its CPU. `None` where the kernel has no such
/// file.
struct ProcCounters<const K: usize> {
    file: Option<std::fs::File>,
    parse: fn(&str) -> Option<[u64; K]>,
    last: [u64; K],
}

impl<const K: usize> ProcCounters<K> {
    fn open(path: &str, parse: fn(&str) -> Option<[u64; K]>) -> Self {
        let file = std::fs::File::open(path).ok();
        let mut c = ProcCounters {
            file,
            parse,
            last: [0; K],
        };
        if let Some(v) = c.read() {
            c.last = v;
        }
        c
    }

    fn read(&self) -> Option<[u64; K]> {
        use std::os::unix::fs::FileExt;
        let f = self.file.as_ref()?;
        let mut buf = [0u8; 256];
        let n = f.read_at(&mut buf, 0).ok()?;
        (self.parse)(std::str::from_utf8(&buf[..n]).ok()?)
    }

    /// How much each counter grew since the previous call.
    fn delta(&mut self) -> Option<[u64; K]> {
        let now = self.read()?;
        let d = std::array::from_fn(|i| now[i].saturating_sub(self.last[i]));
        self.last = now;
        Some(d)
    }
}

/// The first two fields of a schedstat file: (time on a CPU, time waiting
/// for one), ns.
pub fn schedstat_fields(text: &str) -> Option<[u64; 2]> {
    let mut it = text.split_ascii_whitespace();
    Some([it.next()?.parse().ok()?, it.next()?.parse().ok()?])
}

/// `total=` of the `some` line of a PSI file (microseconds).
fn psi_some_total_us(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_ascii_whitespace()
        .find_map(|w| w.strip_prefix("total="))?
        .parse()
        .ok()
}

/// Idle time of all CPUs together (`idle` + `iowait` of the `cpu` line of
/// `/proc/stat`), in clock ticks.
fn stat_idle_ticks(text: &str) -> Option<u64> {
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let mut it = line.split_ascii_whitespace().skip(3);
    let idle: u64 = it.next()?.parse().ok()?;
    let iowait: u64 = it.next()?.parse().ok()?;
    Some(idle + iowait)
}

/// The CPU the machine left idle over the last [`IdleWindow::EPOCHS`]
/// epochs, in CPUs, not counting the time the core itself slept: a CPU
/// idle only because the core slept on it is no CPU that others could
/// have had while it spun (when others wait for it, the kernel moves them
/// there and it is not idle). `/proc/stat` counts in clock ticks (10 ms),
/// too coarse for one 20 ms epoch; over eight the error is a few
/// hundredths of a CPU.
struct IdleWindow {
    stat: ProcCounters<1>,
    tick_ns: f64,
    /// Cumulative idle ticks, the core's cumulative sleep (ns) and the time
    /// they were read, per epoch.
    ring: [(u64, u64, u64); IdleWindow::EPOCHS],
    n: usize,
    /// The core's sleep so far, ns.
    slept: u64,
}

impl IdleWindow {
    const EPOCHS: usize = 8;

    fn open() -> Self {
        // SAFETY: sysconf takes an integer and touches no memory.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        IdleWindow {
            stat: ProcCounters::open("/proc/stat", |t| stat_idle_ticks(t).map(|v| [v])),
            tick_ns: 1e9 / if hz > 0 { hz as f64 } else { 100.0 },
            ring: [(0, 0, 0); IdleWindow::EPOCHS],
            n: 0,
            slept: 0,
        }
    }

    /// Reads the counter at the end of an epoch at `now` in which the core
    /// slept `slept_ns`; returns the idle CPUs since the oldest reading kept
    /// (`None` without `/proc/stat`, or before two readings).
    fn update(&mut self, now: u64, slept_ns: u64) -> Option<f64> {
        self.slept += slept_ns;
        let slept_ns = self.slept;
        let [ticks] = self.stat.read()?;
        let slot = self.n % Self::EPOCHS;
        let oldest = if self.n >= Self::EPOCHS { slot } else { 0 };
        let (t0, s0, at0) = self.ring[oldest];
        let had = self.n > 0;
        self.ring[slot] = (ticks, slept_ns, now);
        self.n += 1;
        if !had || now <= at0 {
            return None;
        }
        let idle = ticks.saturating_sub(t0) as f64 * self.tick_ns;
        let own = slept_ns.saturating_sub(s0) as f64;
        Some((idle - own).max(0.0) / (now - at0) as f64)
    }
}

struct Sink<'a, N: Nic> {
    /// `None` while the NIC lends its receive buffers (in-place receive):
    /// then nothing is flushed, and the TX batch has room by construction.
    nic: Option<&'a mut N>,
    tx: &'a mut FrameBatch,
    shared: &'a LaneShared,
    lanes: &'a [Arc<LaneShared>],
    /// Forwarded activations whose lane queue was full (retried next round).
    deferred: &'a mut Vec<(u16, FlowId)>,
    /// Exceptions whose queue was full (offered again next round).
    overflow: &'a mut ExcOverflow,
    exc_sent: bool,
    /// Calls of `Nic::send` this round.
    nic_sends: u64,
    /// Time `Nic::send` took this round, ns (measured only when `timed`).
    send_ns: u64,
    timed: bool,
    /// Activations handed to other lanes this round ([`Output::forward`]).
    forwards: u64,
}

impl<N: Nic> Sink<'_, N> {
    #[inline(never)]
    fn flush(&mut self) {
        if self.timed && !self.tx.is_empty() {
            let t = now_ns();
            self.flush_inner();
            self.send_ns += now_ns().saturating_sub(t);
        } else {
            self.flush_inner();
        }
    }

    fn flush_inner(&mut self) {
        if self.shared.capture.active() && !self.tx.is_empty() {
            let t = now_ns();
            for f in self.tx.iter() {
                self.shared.capture.record(Dir::Tx, t, f);
            }
        }
        // A few attempts; a NIC that keeps refusing drops the rest (TCP recovers).
        for _ in 0..4 {
            if self.tx.is_empty() {
                return;
            }
            let Some(nic) = self.nic.as_deref_mut() else {
                return;
            };
            self.nic_sends += 1;
            match nic.send(self.tx) {
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
    #[inline(always)]
    fn tx_buf(&mut self) -> Option<&mut [u8]> {
        if self.tx.is_full() {
            self.flush();
        }
        self.tx.slot()
    }
    #[inline(always)]
    fn tx_commit(&mut self, len: usize) {
        self.tx.commit(len)
    }
    fn exception(&mut self, reason: Exception, flow: Option<FlowId>, frame: &[u8]) {
        // The pool runs dry only while the slow path lags; then (only then)
        // the buffer is allocated.
        let mut buf = self
            .shared
            .exc_pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(frame.len()));
        buf.extend_from_slice(frame);
        let e = Exc {
            reason,
            flow,
            frame: buf,
        };
        // Behind older waiting exceptions, never ahead of them.
        let e = if self.overflow.q.is_empty() {
            match self.shared.exc.push(e) {
                Ok(()) => {
                    self.exc_sent = true;
                    return;
                }
                Err(e) => e,
            }
        } else {
            e
        };
        self.overflow.push(e);
        self.shared.exc_deferred.fetch_add(1, Ordering::Relaxed);
    }
    fn forward(&mut self, lane: u16, id: FlowId) {
        self.forwards += 1;
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

/// Applies one command from app `id`'s ring to a flow of region `region`;
/// one refused is logged at debug (the app is untrusted).
fn app_cmd<N: Nic>(
    fp: &mut FastPath,
    (id, region): (u16, u16),
    c: &AppCmd,
    now: u64,
    mem: &mut ShmMem,
    out: &mut Sink<'_, N>,
) {
    if let Err(e) = fp.app_cmd(region, c, now, mem, out) {
        tracing::debug!(
            app = id,
            flow = c.flow,
            kind = c.kind,
            "refused app command: {e}"
        );
    }
}

/// The receive step of a lane fed by the NIC while steering is on: each
/// TCP frame goes to the lane its flow key hashes to (this one: processed
/// here), the others' lanes are woken once.
#[allow(clippy::too_many_arguments)]
fn steer<N: Nic>(
    fp: &mut FastPath,
    rx: &FrameBatch,
    n: usize,
    spread: usize,
    lanes: &[Arc<LaneShared>],
    now: u64,
    mem: &mut ShmMem,
    out: &mut Sink<'_, N>,
) {
    let own = out.shared.id as usize;
    let spread = spread.min(lanes.len());
    let mut woken = 0u64;
    for i in 0..n {
        let f = rx.frame(i);
        let to = frame_key(f).map_or(own, |k| k.hash() as usize % spread);
        if to == own {
            fp.rx(f, now, mem, out);
        } else if lanes[to].steer_in_frame(f) {
            woken |= 1 << (to % 64);
        }
    }
    for (i, l) in lanes.iter().enumerate().take(64) {
        if woken & (1 << i) != 0 {
            l.wake_if_sleeping();
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
    /// Apps that got an event this round: a flag per app and the list of
    /// the flagged (each app at most once, so it never outgrows
    /// [`MAX_APPS`]).
    woken: Vec<bool>,
    woken_list: Vec<u16>,
    deferred: Vec<(u16, FlowId)>,
    overflow: ExcOverflow,
    shared: Arc<LaneShared>,
    stage: StageLocal,
    /// The ids of the apps in `apps` (the command stage walks these, not
    /// the whole table), and where the next round starts among them.
    live: Vec<u16>,
    next_app: usize,
    /// App commands applied, and those handed to another lane
    /// (published as `LaneShared::app_cmds*`).
    app_cmds: u64,
    app_cmds_forwarded: u64,
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
            fp: FastPath::new(table, engine)
                .with_lane(shared.id)
                .with_tx_csum_offload(nic.tx_csum_offload())
                .with_direct_tx(true),
            nic,
            rx: FrameBatch::new(BATCH),
            tx: FrameBatch::new(BATCH),
            mem: ShmMem::new(),
            apps: (0..MAX_APPS).map(|_| None).collect(),
            woken: vec![false; MAX_APPS],
            woken_list: Vec::with_capacity(MAX_APPS),
            deferred: Vec::with_capacity(cap.min(1 << 16)),
            overflow: ExcOverflow::default(),
            shared,
            stage: StageLocal::default(),
            live: Vec::with_capacity(MAX_APPS),
            next_app: 0,
            app_cmds: 0,
            app_cmds_forwarded: 0,
        }
    }

    pub fn id(&self) -> u16 {
        self.shared.id
    }

    /// One round; returns how much work it did. `mark` is the newest
    /// command mark ([`FastPathShared::cmd_mark`]) taken before the round.
    fn round(&mut self, now: u64, lanes: &[Arc<LaneShared>], slow_wake: RawFd, mark: u64) -> usize {
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
            woken_list,
            deferred,
            overflow,
            stage,
            live,
            next_app,
            app_cmds,
            app_cmds_forwarded,
        } = self;
        let mut clock = StageClock::start(stage.rounds % STAGE_SAMPLE == 0);
        stage.rounds += 1;
        // Activations that did not fit into another lane's queue last round.
        deferred.retain(|&(lane, id)| !lanes[lane as usize].push_kick(id));
        // Exceptions that did not fit the slow path's queue, oldest first.
        let moved = if overflow.q.is_empty() {
            0
        } else {
            overflow.drain_into(shared)
        };
        work += moved;
        let hold_nic = overflow.at_bound();
        let mut out = Sink {
            nic: Some(nic),
            tx,
            shared,
            lanes,
            deferred,
            overflow,
            exc_sent: moved > 0,
            nic_sends: 0,
            send_ns: 0,
            timed: clock.on,
            forwards: 0,
        };

        // 0. Frames lanes fed by the NIC steered to this one.
        if out.shared.steer_in.load(Ordering::Relaxed) {
            for _ in 0..BATCH {
                let Some(buf) = out.shared.steered.pop() else {
                    break;
                };
                work += 1;
                fp.rx(&buf, now, mem, &mut out);
                let _ = out.shared.steer_pool.push(buf);
                out.shared.steered_in.fetch_add(1, Ordering::Relaxed);
            }
        }

        // 1. Receive (unless the slow path is so far behind that the
        // exceptions of more frames would have nowhere to wait).
        rx.clear();
        if hold_nic {
            out.shared.exc_backpressure.fetch_add(1, Ordering::Relaxed);
        } else {
            let spread = out.shared.steer_over.load(Ordering::Relaxed) as usize;
            // In place when the NIC can (AF_XDP: frames read where the
            // kernel put them, no copy into `rx`), unless frames are
            // steered to other lanes or captured. The NIC is lent out
            // meanwhile, so nothing can be flushed: each received frame
            // draws at most one frame out (its ACK), and at most as many
            // frames are taken as the TX batch has room for.
            let room = out.tx.capacity() - out.tx.len();
            let mut received = None;
            if spread <= 1 && room > 0 && !out.shared.capture.active() {
                if let Some(nic) = out.nic.take() {
                    received = nic.recv_in_place(room.min(BATCH), &mut |frames: &[&[u8]]| {
                        fp.prefetch(frames.iter().copied(), mem);
                        for f in frames {
                            fp.rx_inline(f, now, mem, &mut out);
                        }
                    });
                    out.nic = Some(nic);
                }
            }
            if received.is_none() {
                if let Some(nic) = out.nic.as_deref_mut() {
                    received = Some(nic.recv(rx).inspect(|&n| {
                        if n > 0 && out.shared.capture.active() {
                            for f in rx.iter() {
                                out.shared.capture.record(Dir::Rx, now, f);
                            }
                        }
                        if spread > 1 {
                            steer(fp, rx, n, spread, lanes, now, mem, &mut out);
                        } else {
                            fp.prefetch(rx.iter(), mem);
                            for i in 0..n {
                                fp.rx_inline(rx.frame(i), now, mem, &mut out);
                            }
                        }
                    }));
                }
            }
            match received {
                Some(Ok(n)) => work += n,
                Some(Err(e)) => tracing::debug!("nic recv: {e}"),
                None => {}
            }
        }
        clock.mark(ST_RX, out.send_ns, stage);

        // 2. App commands: this lane's ring of each app, at most
        // APP_CMDS_PER_ROUND each, starting with the next app every round.
        let n_live = live.len();
        if n_live > 0 {
            let start = *next_app % n_live;
            *next_app = start + 1;
            for k in 0..n_live {
                let i = live[(start + k) % n_live] as usize;
                let Some(port) = apps[i].as_mut() else {
                    continue;
                };
                let mut empty = false;
                for _ in 0..APP_CMDS_PER_ROUND {
                    let Some(c) = port.cmds.pop() else {
                        empty = true;
                        break;
                    };
                    work += 1;
                    let before = out.forwards;
                    app_cmd(fp, (port.id, port.mem), &c, now, mem, &mut out);
                    *app_cmds += 1;
                    if out.forwards != before {
                        *app_cmds_forwarded += 1;
                    }
                }
                if empty {
                    if let Some(e) = out.shared.cmds_empty.get(i) {
                        if e.load(Ordering::Relaxed) < mark {
                            e.store(mark, Ordering::Release);
                        }
                    }
                }
            }
        }

        clock.mark(ST_APP, out.send_ns, stage);

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
                        // A new app under an id used before: nothing of
                        // its ring is known to be applied yet.
                        if let Some(e) = out.shared.cmds_empty.get(id) {
                            e.store(0, Ordering::Release);
                        }
                        mem.regions[id] = (port.base as usize, port.len);
                        if apps[id].replace(port).is_none() {
                            live.push(id as u16);
                        }
                    }
                }
                CoreCmd::RemoveApp(id, remaining) => {
                    if let Some(slot) = apps.get_mut(id as usize) {
                        if let Some(mut port) = slot.take() {
                            // What the app queued before it went still
                            // counts (its last write before exiting, which
                            // a process sharing the flow carries on
                            // after): drained before the ring is let go.
                            let cap = port.cmds.capacity();
                            for _ in 0..cap {
                                let Some(c) = port.cmds.pop() else {
                                    break;
                                };
                                work += 1;
                                let before = out.forwards;
                                app_cmd(fp, (port.id, port.mem), &c, now, mem, &mut out);
                                *app_cmds += 1;
                                if out.forwards != before {
                                    *app_cmds_forwarded += 1;
                                }
                            }
                            if let Some(e) = out.shared.cmds_empty.get(id as usize) {
                                e.store(u64::MAX, Ordering::Release);
                            }
                            live.retain(|&a| a != id);
                        }
                        mem.regions[id as usize] = (0, 0);
                    }
                    remaining.fetch_sub(1, Ordering::AcqRel);
                }
                CoreCmd::Send(frame) => {
                    let partial = fp.tx_csum_offload();
                    out.tx(|b| {
                        let n = frame.len().min(b.len());
                        b[..n].copy_from_slice(&frame[..n]);
                        if partial {
                            // The NIC completes the TCP checksum of every
                            // frame of this lane (see `Nic::tx_csum_offload`).
                            tas_engine::wire::frame::tcp_csum_to_partial(&mut b[..n]);
                        }
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
        clock.mark(ST_SLOW, out.send_ns, stage);

        // 4. Transmit what the scheduler allows, then the held ACKs that
        // no segment carried in time, then flush.
        work += fp.poll_tx(now, TX_PER_ROUND, mem, &mut out);
        work += fp.flush_acks(now, false, mem, &mut out);
        clock.mark(ST_TX, out.send_ns, stage);
        out.flush();
        clock.mark(ST_NIC_SEND, out.send_ns, stage);
        stage.nic_sends += out.nic_sends;
        if out.exc_sent {
            kick(slow_wake);
        }
        let waiting = out.overflow.q.len() as u64;
        if waiting != 0 || out.shared.exc_overflow.load(Ordering::Relaxed) != 0 {
            out.shared.exc_overflow.store(waiting, Ordering::Relaxed);
        }

        // 5. Notifications into this lane's event ring of each app, then
        // one kick per sleeping app that got one (the apps of this round
        // only, not a scan of the app table).
        if fp.pending_notifications() > 0 {
            let n = fp.flush_notifications(|ctx, ev| match apps.get_mut(ctx as usize) {
                Some(Some(port)) => {
                    let ok = port.events.push(*ev);
                    if ok && !woken[ctx as usize] {
                        woken[ctx as usize] = true;
                        woken_list.push(ctx);
                    }
                    ok
                }
                // The app is gone: drop the notification.
                _ => true,
            });
            work += n;
            for &i in woken_list.iter() {
                woken[i as usize] = false;
                if let Some(port) = &mut apps[i as usize] {
                    // One write until the app has drained it: a core whose
                    // rounds are faster than the app's wake-up would write
                    // the eventfd again every round meanwhile.
                    if peer_sleeps(&port.header().app_waiting) {
                        match kick_needed(port.header(), port.kicked_at) {
                            Some(drains) => {
                                port.kicked_at = Some(drains);
                                kick(port.app_wake);
                                stage.app_wakes += 1;
                            }
                            None => stage.app_kicks_skipped += 1,
                        }
                    }
                }
            }
            woken_list.clear();
        }
        clock.mark(ST_NOTIFY, 0, stage);
        work
    }

    /// Tells the apps (through this lane's flag in each region) whether
    /// to kick this lane after posting on its command ring.
    fn announce_sleep(&self, on: bool) {
        self.shared.sleeping.store(on, Ordering::SeqCst);
        for &i in &self.live {
            if let Some(port) = &self.apps[i as usize] {
                announce_sleep(port.lane_sleeping(), on);
            }
        }
        fence(Ordering::SeqCst);
    }

    fn publish_stats(&self) {
        if let Ok(mut s) = self.shared.stats.lock() {
            *s = self.fp.stats;
        }
        let st = &self.shared.stages;
        let r = Ordering::Relaxed;
        for (a, v) in st.ns.iter().zip(self.stage.ns) {
            a.store(v, r);
        }
        st.rounds.store(self.stage.rounds, r);
        self.shared.app_cmds.store(self.app_cmds, r);
        self.shared
            .app_cmds_forwarded
            .store(self.app_cmds_forwarded, r);
        st.nic_sends.store(self.stage.nic_sends, r);
        st.app_wakes.store(self.stage.app_wakes, r);
        st.app_kicks_skipped.store(self.stage.app_kicks_skipped, r);
    }
}

/// One fast-path polling thread.
pub struct Core<N: Nic> {
    id: usize,
    lanes: Vec<Lane<N>>,
    shared: Arc<FastPathShared<N>>,
    cfg: CoreConfig,
    /// Poll timeouts of a sleeping core with and without lanes.
    sleep_cap_ms: i32,
    inactive_cap_ms: i32,
    /// Whether the apps answer the data this core holds ACKs for: then a
    /// core out of work keeps polling until the held ACK is due (the
    /// answer, which carries it, is likely to come first and is taken
    /// without a kick); otherwise it sleeps to the deadline. Decided per
    /// epoch by [`ResponseWatch`].
    responses: ResponseWatch,
    /// How far into a held ACK's hold the core polls for the answer
    /// ([`held_poll_window`]), set each epoch with the hold; never more
    /// than a lane's hold (`u64::MAX` until the first epoch: all of it,
    /// which is the configured hold then).
    held_poll_ns: u64,
    /// What a wake-up costs this core, measured from its sleeps to a
    /// deadline (how late they end), and when it was last sampled.
    wake: WakeLatency,
    wake_sampled_at: u64,
    /// The polling thread's own schedstat (opened by it in `run`): its
    /// time on a CPU and waiting for one, per epoch and around a sampled
    /// sleep.
    sched: Option<ProcCounters<2>>,
    /// Sleeps (wake-ups) this epoch.
    epoch_wakes: u64,
}

/// Whether the data we hold ACKs for is answered (a request/response
/// exchange: about one data segment of ours per ACK held) or one-way (a
/// stream or messages nobody answers: polling until the held ACK is due
/// only burns the CPU the app and the kernel need; the ACK goes out alone
/// or when the next segments complete it), and how long to hold an ACK
/// for the answer. Fed once per epoch with the lanes' `acks_held`,
/// `tx_frames` (data segments sent) and `acks_delayed` less
/// `acks_awaited` (held ACKs that went out alone when their time was up,
/// less those the peer's next data showed it had waited for) counters.
///
/// The hold starts at the configured `--ack-delay-us` (40 µs). While the
/// apps answer, but more than one in 64 of the held ACKs go out alone
/// with no more data from the peer before the answer (answers slower than
/// the hold: a server working through many connections' requests, as
/// redis does with 50; not a request whose second part a Nagle sender
/// sends only once this ACK came), the hold doubles, up
/// to [`ResponseWatch::HOLD_MAX_NS`]; it shrinks back by a 64th an
/// epoch once under one in 256 goes alone, and returns to the
/// configured one when the data is not answered. Linux holds an ACK for
/// up to 40 ms (its delayed-ACK timer) and in an exchange sends it with
/// the answer; RFC 9293 §3.8.6.3 (RFC 1122 §4.2.3.2) allows up to 0.5 s;
/// the rules that ACK at once (the second full-sized segment, out-of-order
/// data, window updates, FIN) do not change.
#[derive(Debug, Clone, Copy)]
struct ResponseWatch {
    /// Counter totals at the last epoch (of the lanes held then).
    held: u64,
    sent: u64,
    alone: u64,
    awaited: u64,
    /// At least one data segment of ours for every two ACKs held last
    /// time (until there is a verdict: yes, the polling of earlier
    /// versions).
    expect: bool,
    /// The hold now, ns (0 until the first verdict: the configured one).
    hold_ns: u64,
}

impl Default for ResponseWatch {
    fn default() -> Self {
        ResponseWatch {
            held: 0,
            sent: 0,
            alone: 0,
            awaited: 0,
            expect: true,
            hold_ns: 0,
        }
    }
}

impl ResponseWatch {
    /// Held ACKs an epoch needs before it changes the verdict.
    const MIN_HELD: u64 = 8;
    /// The longest hold while answers come more slowly than the configured
    /// one.
    const HOLD_MAX_NS: u64 = 2_000_000;
    /// The hold doubles while more than one held ACK in this many goes
    /// out alone, and shrinks (by [`ResponseWatch::SHRINK_BY`]) while
    /// under one in [`ResponseWatch::SHRINK_ALONE`] does. Each one alone
    /// is a frame Linux's delayed ACK (up to 40 ms) would not have sent:
    /// with one in 16, redis with 50 connections settled at 2.6–4.6 % of
    /// its requests answered by a pure ACK first (1.027–1.051 frames per
    /// answer against Linux's 1.001), the hold still at 40 µs.
    const GROW_ALONE: u64 = 64;
    const SHRINK_ALONE: u64 = 256;
    /// Each epoch's shrink takes 1/`SHRINK_BY` of the hold. A grown hold
    /// costs nothing while the answers come before it (they carry the
    /// ACK), so it shrinks slowly: by an eighth an epoch, the redis hold
    /// above swung between ~150 µs and ~1 ms every few hundred
    /// milliseconds, and each swing down sent a burst of ACKs alone
    /// (`tasctl tune` sampled 182, 1,079 and 146 µs 0.7 s apart; 1.024
    /// frames per answer). A 64th an epoch halves it in ~0.9 s.
    const SHRINK_BY: u64 = 64;

    /// Ends an epoch with the counters' totals now: ACKs held, data
    /// segments sent, held ACKs sent alone and not awaited, held ACKs sent
    /// alone that the peer's next data showed it had waited for; `base_ns`
    /// is the configured hold (0: none). Returns the hold to use.
    fn update(&mut self, held: u64, sent: u64, alone: u64, awaited: u64, base_ns: u64) -> u64 {
        if self.hold_ns == 0 || base_ns == 0 {
            self.hold_ns = base_ns;
        }
        // Totals fall when a lane moves to another core: start over.
        if held < self.held || sent < self.sent || alone < self.alone || awaited < self.awaited {
            (self.held, self.sent, self.alone, self.awaited) = (held, sent, alone, awaited);
            return self.hold_ns;
        }
        let (h, d, a, w) = (
            held - self.held,
            sent - self.sent,
            alone - self.alone,
            awaited - self.awaited,
        );
        if h >= Self::MIN_HELD {
            self.expect = d * 2 >= h;
            (self.held, self.sent, self.alone, self.awaited) = (held, sent, alone, awaited);
            self.hold_ns = if !self.expect {
                base_ns
            } else if w * 8 > h {
                // Peers wait for our ACKs (a Nagle sender's request in two
                // parts: the first part's ACK every time): a longer hold
                // would delay each of those exchanges by as much, whatever
                // it saves on the answers that come late.
                base_ns
            } else if a * Self::GROW_ALONE > h {
                (self.hold_ns * 2).min(Self::HOLD_MAX_NS.max(base_ns))
            } else if a * Self::SHRINK_ALONE < h {
                (self.hold_ns - self.hold_ns / Self::SHRINK_BY).max(base_ns)
            } else {
                self.hold_ns
            };
        }
        self.hold_ns
    }
}

impl<N: Nic> Core<N> {
    pub fn new(id: usize, shared: Arc<FastPathShared<N>>, cfg: CoreConfig) -> Self {
        Core {
            id,
            lanes: Vec::new(),
            shared,
            cfg,
            sleep_cap_ms: SLEEP_CAP_MS,
            inactive_cap_ms: INACTIVE_CAP_MS,
            responses: ResponseWatch::default(),
            held_poll_ns: u64::MAX,
            wake: WakeLatency::default(),
            wake_sampled_at: 0,
            sched: None,
            epoch_wakes: 0,
        }
    }

    /// Test hook: a sleeping core blocks up to `cap` (instead of 100 ms
    /// with lanes, 1 s without) unless it is woken. Tests set a cap longer
    /// than their own deadlines, so a lost wake-up fails them instead of
    /// being hidden by the periodic backstop.
    #[doc(hidden)]
    pub fn with_max_sleep(mut self, cap: Duration) -> Self {
        let ms = cap.as_millis().clamp(1, i32::MAX as u128) as i32;
        self.sleep_cap_ms = ms;
        self.inactive_cap_ms = ms;
        self
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
                kick(sh.cores[owner].wake.as_raw_fd());
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
        let slow_wake = self.shared.slow_wake.as_raw_fd();
        // Rounds that start after this load see every command published
        // before the mark (`FastPathShared::cmd_mark`).
        let mark = self.shared.cmd_epoch.load(Ordering::SeqCst);
        self.lanes
            .iter_mut()
            .map(|l| l.round(now, lanes_sh, slow_wake, mark))
            .sum()
    }

    /// Runs until `shared.stop` is set.
    pub fn run(mut self) {
        // Deadlines closer than a millisecond are slept to (`sleep`); the
        // default 50 µs timer slack would stretch a 20 µs one to 70 µs.
        // SAFETY: PR_SET_TIMERSLACK takes one integer and touches no memory.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, FP_TIMER_SLACK_NS as libc::c_ulong) };
        let mut spin = self.cfg.idle_spin.as_nanos().min(u64::MAX as u128) as u64;
        let shared = self.shared.clone();
        let mut tuner = SpinTuner::new(shared.goal(), spin);
        self.sched = Some(ProcCounters::open(
            "/proc/thread-self/schedstat",
            schedstat_fields,
        ));
        let mut pressure =
            ProcCounters::open("/proc/pressure/cpu", |t| psi_some_total_us(t).map(|v| [v]));
        let mut idle_cpus = IdleWindow::open();
        let mut last_work = now_ns();
        let mut last_stats = 0u64;
        let lanes_sh = &shared.lanes;
        let slot = &shared.cores[self.id];
        slot.spin_ns.store(spin, Ordering::Relaxed);
        slot.tid
            .store(nix::unistd::gettid().as_raw() as u32, Ordering::Relaxed);
        // Since when the core has had nothing to do (None while working).
        let mut idle_since: Option<u64> = None;
        // If the core slept in this idle gap: how long it had been idle
        // when it first went to sleep (the work came after that).
        let mut slept_after: Option<u64> = None;
        // Wall-clock time in rounds with work, and asleep, this epoch.
        let mut epoch_busy = 0u64;
        let mut epoch_slept = 0u64;
        let mut epoch_start = now_ns();
        while !shared.stop.load(Ordering::Relaxed) {
            self.exchange_lanes();
            if self.lanes.is_empty() {
                // Inactive: sleep until the slow path hands over a lane.
                let mut pfd = libc::pollfd {
                    fd: slot.wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, self.inactive_cap_ms) };
                drain(slot.wake.as_raw_fd());
                last_work = now_ns();
                idle_since = None;
                slept_after = None;
                continue;
            }
            let t0 = now_ns();
            let work = self.round_all(t0, lanes_sh);
            let t1 = now_ns();
            if work > 0 {
                epoch_busy += t1 - t0;
                last_work = t1;
                if let Some(since) = idle_since.take() {
                    let mut gap = t0.saturating_sub(since);
                    // Work that woke the core came one wake-up earlier
                    // than the core saw it (the gap the spin would have
                    // bridged), and after the core went to sleep.
                    if let Some(floor) = slept_after.take() {
                        gap = gap.saturating_sub(self.wake.estimate_ns()).max(floor);
                    }
                    tuner.record_gap(gap);
                }
            } else {
                slot.idle_ns.fetch_add(t1 - t0, Ordering::Relaxed);
                idle_since.get_or_insert(t0);
                if self.cfg.idle_yield {
                    // Between idle polls the CPU goes to any thread waiting
                    // for it (the app just notified, on a machine with
                    // fewer CPUs than busy threads), which otherwise waits
                    // until the scheduler preempts the spin: a slice, 1-3
                    // ms. With nobody waiting it returns at once (0.6 µs
                    // here).
                    // SAFETY: sched_yield takes no arguments.
                    unsafe { libc::sched_yield() };
                }
                if t1.saturating_sub(last_work.max(self.held_poll_end(t1))) > spin {
                    if let Some(since) = idle_since {
                        slept_after.get_or_insert(t1.saturating_sub(since));
                    }
                    let slept = self.sleep(t1, lanes_sh);
                    slot.idle_ns.fetch_add(slept, Ordering::Relaxed);
                    epoch_slept += slept;
                    last_work = now_ns();
                }
            }
            if t1.saturating_sub(epoch_start) >= EPOCH_NS {
                let wall = t1 - epoch_start;
                epoch_start = t1;
                let wake_ns = self.wake.estimate_ns();
                let wakes = std::mem::take(&mut self.epoch_wakes);
                let (busy, contention, own) = match self.sched.as_mut().and_then(|c| c.delta()) {
                    Some([on, waited]) => {
                        // Of the time awake, the share the thread ran.
                        let awake = wall.saturating_sub(epoch_slept).max(1);
                        let ran = (on as f64 / awake as f64).min(1.0);
                        (
                            (epoch_busy as f64 * ran) as u64,
                            waited as f64 / wall as f64,
                            tas_tune::own_contention(waited, wakes, wake_ns, wall),
                        )
                    }
                    None => (epoch_busy, 0.0, 0.0),
                };
                // The core's own wait is what it publishes (the app's spin
                // prices itself with it); its own spin is priced with the
                // machine's contention too (someone else waited while it
                // spun), whichever is larger, each without the part that
                // is only wake-up latency (`tas_tune::own_contention`,
                // `machine_contention`), and a wake-up costs what it was
                // measured to cost.
                let pressure_now = pressure
                    .delta()
                    .map_or(0.0, |[us]| (us as f64 * 1e3 / wall as f64).clamp(0.0, 1.0));
                let idle = idle_cpus.update(t1, epoch_slept);
                let machine = idle.map_or(pressure_now, |i| {
                    tas_tune::machine_contention(pressure_now, i)
                });
                slot.pressure_ppm
                    .store((pressure_now * 1e6) as u64, Ordering::Relaxed);
                slot.idle_cpu_milli
                    .store(idle.map_or(0, |i| (i * 1e3) as u64), Ordering::Relaxed);
                slot.wake_ns.store(wake_ns, Ordering::Relaxed);
                slot.busy_ns.fetch_add(busy, Ordering::Relaxed);
                let ppm = (contention.clamp(0.0, 1.0) * 1e6) as u32;
                slot.contention_ppm.store(u64::from(ppm), Ordering::Relaxed);
                epoch_busy = 0;
                epoch_slept = 0;
                // Held ACKs that went out alone and were not followed by
                // more of the peer's data: answers that come later than
                // the hold (a peer that sent more had waited for the ACK,
                // and a longer hold would only delay it).
                let (held, sent, alone, awaited) =
                    self.lanes.iter().fold((0, 0, 0, 0), |(h, s, a, w), l| {
                        let st = &l.fp.stats;
                        let late = st.acks_delayed.saturating_sub(st.acks_awaited);
                        (
                            h + st.acks_held,
                            s + st.tx_frames,
                            a + late,
                            w + st.acks_awaited,
                        )
                    });
                let base = self.lanes.first().map_or(0, |l| l.fp.config().ack_delay_ns);
                let hold = self.responses.update(held, sent, alone, awaited, base);
                for l in self.lanes.iter_mut() {
                    l.fp.set_ack_delay(hold);
                }
                slot.ack_hold_ns.store(hold, Ordering::Relaxed);
                self.held_poll_ns = held_poll_window(base, hold, wake_ns);
                if self.cfg.adaptive {
                    tuner.set_goal(shared.goal());
                    tuner.set_wake_cost(wake_ns);
                    spin = tuner.end_epoch(own.max(machine));
                    slot.spin_ns.store(spin, Ordering::Relaxed);
                }
            }
            if t1 - last_stats > 1_000_000 {
                last_stats = t1;
                for l in &self.lanes {
                    l.publish_stats();
                }
            }
        }
        slot.busy_ns.fetch_add(epoch_busy, Ordering::Relaxed);
        // Stopping: release every region before returning.
        for l in self.lanes.iter_mut() {
            l.publish_stats();
            for a in l.apps.iter_mut() {
                *a = None;
            }
            l.live.clear();
        }
    }

    /// When the poll window of the oldest held ACK ends (capped at `now`),
    /// while the apps answer what they get (`ResponseWatch`); 0 otherwise.
    /// Idle time counts from there: with the configured hold the ACK would
    /// have gone out then, and sending it is work after which the core
    /// spins on for its idle spin; a hold grown longer for later answers
    /// must not make the core go to sleep earlier than that, or every
    /// answer that comes after the window also pays the core's wake-up (a
    /// one-connection server whose app blocks between requests answers
    /// 50–100 µs after the data: going to sleep at 40 µs cut its rate
    /// 2–3×).
    fn held_poll_end(&self, now: u64) -> u64 {
        if !self.responses.expect {
            return 0;
        }
        let mut end = 0;
        for l in &self.lanes {
            if let Some(due) = l.fp.held_ack_due() {
                let hold = l.fp.ack_delay();
                let poll = self.held_poll_ns.min(hold);
                end = end.max((due - hold.min(due) + poll).min(now));
            }
        }
        end
    }

    /// Blocks until a frame, a kick or the next scheduler deadline; returns
    /// the time asleep.
    fn sleep(&mut self, now: u64, lanes_sh: &[Arc<LaneShared>]) -> u64 {
        for l in &self.lanes {
            l.announce_sleep(true);
        }
        // The timeout in nanoseconds: a deadline closer than a millisecond
        // (a paced flow's, a held ACK's) is slept to, not spun to, with
        // one exception: while the apps answer what they get
        // (`ResponseWatch`), a held ACK under a millisecond away and within
        // its poll window is waited for polling, since the answer that
        // carries it likely comes first.
        let mut timeout_ns = self.sleep_cap_ms as u64 * 1_000_000;
        for l in &self.lanes {
            if !l.overflow.q.is_empty() {
                // Exceptions wait for room in the slow path's queue.
                timeout_ns = timeout_ns.min(1_000_000);
            }
            if let Some(t) = l.fp.poll_at() {
                timeout_ns = timeout_ns.min(t.saturating_sub(now));
            }
            // (Only through its poll window, `held_poll_window`: beyond it,
            // when the hold grew because the answers come later, the core
            // sleeps to the deadline and the app's command wakes it.)
            let hold = l.fp.ack_delay();
            let poll = self.held_poll_ns.min(hold);
            if self.responses.expect
                && l.fp.held_ack_due().is_some_and(|t| {
                    let left = t.saturating_sub(now);
                    left < HELD_POLL_MAX_NS && left + poll > hold
                })
            {
                timeout_ns = 0;
            }
        }
        // No wake-up measured for a while: sleep to a short deadline once
        // (an event may still end it first: then no sample).
        if timeout_ns > WAKE_PROBE_NS
            && now.saturating_sub(self.wake_sampled_at) > WAKE_PROBE_EVERY_NS
        {
            timeout_ns = WAKE_PROBE_NS;
        }
        // Re-check after announcing sleep, so no kick is missed.
        let t = now_ns();
        let work = self.round_all(t, lanes_sh);
        let slot = &self.shared.cores[self.id];
        let mut slept = 0;
        if work == 0 && timeout_ns != 0 {
            // What a sleeping core counted is visible while it sleeps
            // (`tasctl stats`, metrics), not only after its next wake-up.
            for l in &self.lanes {
                l.publish_stats();
            }
            let mut fds: [libc::pollfd; 1 + 2 * MAX_LANES_PER_CORE] = [libc::pollfd {
                fd: -1,
                events: libc::POLLIN,
                revents: 0,
            };
                1 + 2 * MAX_LANES_PER_CORE];
            fds[0].fd = slot.wake.as_raw_fd();
            let mut n = 1;
            // Where each lane's wake eventfd is in `fds`.
            let mut wake_at = [0usize; MAX_LANES_PER_CORE];
            for (i, l) in self.lanes.iter().take(MAX_LANES_PER_CORE).enumerate() {
                fds[n].fd = l.shared.wake.as_raw_fd();
                wake_at[i] = n;
                n += 1;
                if let Some(fd) = l.nic.wait_fd() {
                    fds[n].fd = fd;
                    n += 1;
                }
            }
            let ts = libc::timespec {
                tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
            };
            // A sample (see below) at most every few ms: two reads of the
            // thread's schedstat around the sleep.
            let sampled = timeout_ns <= WAKE_SAMPLE_MAX_NS
                && t.saturating_sub(self.wake_sampled_at) >= WAKE_SAMPLE_GAP_NS;
            let queued = |c: &Option<ProcCounters<2>>| c.as_ref()?.read().map(|[_, q]| q);
            let queued_before = if sampled { queued(&self.sched) } else { None };
            // SAFETY: `fds` holds `n` valid pollfd entries; `ts` is a valid
            // timespec; a null signal mask leaves the thread's mask as is.
            let ready =
                unsafe { libc::ppoll(fds.as_mut_ptr(), n as libc::nfds_t, &ts, std::ptr::null()) };
            let after = now_ns();
            slept = after.saturating_sub(t);
            self.epoch_wakes += 1;
            if ready == 0 && sampled {
                // Woken by a near deadline alone: how late, less the timer
                // slack the kernel may add and less the time the thread
                // then waited for its CPU behind other threads (that is
                // contention, priced apart), is what a wake-up costs here.
                // (For a far deadline the kernel adds a slack of its own,
                // 0.1 % of the timeout: not a sample.)
                if let (Some(a), Some(b)) = (queued_before, queued(&self.sched)) {
                    let q = b.saturating_sub(a);
                    self.wake.record(
                        slept
                            .saturating_sub(timeout_ns + FP_TIMER_SLACK_NS)
                            .saturating_sub(q),
                    );
                    self.wake_sampled_at = after;
                }
            }
            // Only the eventfds that fired are drained (a read of an empty
            // one is a system call for nothing, on every wake-up by a
            // frame); one written after `ppoll` returned stays readable
            // and costs the next sleep one more round.
            if fds[0].revents != 0 {
                drain(slot.wake.as_raw_fd());
            }
            for (i, l) in self.lanes.iter().take(MAX_LANES_PER_CORE).enumerate() {
                if fds[wake_at[i]].revents != 0 {
                    drain(l.shared.wake.as_raw_fd());
                }
            }
        }
        for l in &self.lanes {
            l.announce_sleep(false);
        }
        slept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tas_engine::engine::Exception;

    fn lanes(n: usize) -> Vec<Arc<LaneShared>> {
        (0..n)
            .map(|i| Arc::new(LaneShared::new(i as u16).unwrap()))
            .collect()
    }

    fn kick_id(c: CoreCmd) -> FlowId {
        match c {
            CoreCmd::Kick(id) => id,
            _ => panic!("not a kick"),
        }
    }

    #[test]
    fn stat_idle_is_idle_plus_iowait_of_the_cpu_line() {
        let text = "cpu  56173 0 43013 216125 838 0 15166 322 0 0\n\
                    cpu0 28000 0 21000 108000 400 0 7000 100 0 0\n";
        assert_eq!(stat_idle_ticks(text), Some(216_963));
        assert_eq!(stat_idle_ticks("cpu0 1 2 3 4 5\n"), None);
        assert_eq!(stat_idle_ticks("cpu  1 2 3\n"), None);
    }

    #[test]
    fn psi_some_total_is_read_from_the_some_line() {
        let text = "some avg10=33.19 avg60=35.64 avg300=37.73 total=20568319118\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=7\n";
        assert_eq!(psi_some_total_us(text), Some(20_568_319_118));
        assert_eq!(psi_some_total_us("full total=3\n"), None);
        assert_eq!(psi_some_total_us("some avg10=1.0 total=x\n"), None);
        assert_eq!(psi_some_total_us(""), None);
    }

    #[test]
    fn response_watch_follows_whether_held_acks_are_answered() {
        let mut w = ResponseWatch::default();
        let up = |w: &mut ResponseWatch, h, s| w.update(h, s, 0, 0, 40_000);
        assert!(w.expect, "starts by polling for the answer");
        // A one-way epoch: 100 ACKs held, 10 segments of ours.
        up(&mut w, 100, 10);
        assert!(!w.expect);
        // A request/response epoch: 100 held, 90 answers.
        up(&mut w, 200, 100);
        assert!(w.expect);
        // Too few held ACKs to judge: the verdict stays, and they count
        // with the next epoch's.
        up(&mut w, 205, 101);
        assert!(w.expect);
        up(&mut w, 210, 101);
        assert!(!w.expect, "one answer for 10 held ACKs");
        // One segment for every two held ACKs still counts as answered.
        up(&mut w, 230, 111);
        assert!(w.expect);
        up(&mut w, 250, 119);
        assert!(!w.expect);
        // A lane handed to another core: the totals fall; start over
        // without a verdict change.
        up(&mut w, 40, 30);
        assert!(!w.expect);
        up(&mut w, 60, 50);
        assert!(w.expect);
    }

    /// The hold follows answers that come after it: redis with 50
    /// connections answered 60 % of its requests after the 40 µs hold
    /// (0.68–0.82 pure ACKs per request, `tasctl stats`).
    #[test]
    fn the_ack_hold_grows_while_answers_come_after_it() {
        let mut w = ResponseWatch::default();
        let base = 40_000;
        // No verdict yet: the configured hold.
        assert_eq!(w.update(0, 0, 0, 0, base), base);
        // Answered, but 60 of 100 held ACKs went out alone: double.
        assert_eq!(w.update(100, 100, 60, 0, base), 80_000);
        assert_eq!(w.update(200, 200, 120, 0, base), 160_000);
        assert_eq!(w.update(300, 300, 180, 0, base), 320_000);
        assert_eq!(w.update(400, 400, 240, 0, base), 640_000);
        assert_eq!(w.update(500, 500, 300, 0, base), 1_280_000);
        assert_eq!(w.update(600, 600, 360, 0, base), 2_000_000, "capped");
        assert_eq!(w.update(700, 700, 420, 0, base), 2_000_000);
        // Between one in 256 and one in 64 alone: it stays.
        assert_eq!(w.update(1700, 1700, 430, 0, base), 2_000_000);
        // Under one in 256: shrinks by a 64th, never below the base.
        assert_eq!(w.update(2700, 2700, 433, 0, base), 1_968_750);
        // Not answered (a stream): the configured hold at once.
        assert_eq!(w.update(2800, 2710, 480, 0, base), base);
        // Holding turned off (--ack-delay-us 0) stays off.
        let mut off = ResponseWatch::default();
        assert_eq!(off.update(100, 100, 90, 0, 0), 0);
    }

    /// 64 connections of echo requests (`rpc client --conns 64 --busy`
    /// against `peer --tas echo-server`, session 32): the answers queue
    /// behind each other for 0.4–0.6 ms, and with the hold at 500 µs
    /// 10–18 % of the held ACKs still went out alone, each a frame the
    /// client's kernel receives (`tasctl stats`: 24–60k pure ACKs for
    /// 200–300k requests). More than one in sixteen alone doubled the
    /// hold from then on (one in 64 since session 34), up to 2 ms (it
    /// stayed put under one in four before, and stopped at 500 µs).
    #[test]
    fn the_ack_hold_grows_while_one_in_eight_goes_alone() {
        let mut w = ResponseWatch::default();
        let base = 40_000;
        for i in 1..=4 {
            w.update(i * 100, i * 100, i * 60, 0, base);
        }
        assert_eq!(w.hold_ns, 640_000);
        assert_eq!(w.update(1400, 1400, 365, 0, base), 1_280_000);
    }

    /// redis-benchmark `-c 50` against redis-server under the shim: with
    /// the hold at 40 µs, 4.2–4.6 % of the held ACKs went out alone
    /// (`tasctl stats`: 12,500 and 13,701 of 300,001), inside the old dead
    /// band (one in 64 to one in 16), so the hold never grew and each of
    /// those answers cost the client's kernel a second frame. Now the hold
    /// grows until under one in 64 goes alone (with `--ack-delay-us 1000`
    /// 0.3 % did: 874 of 300,001).
    #[test]
    fn the_ack_hold_grows_while_over_one_in_64_go_alone() {
        let mut w = ResponseWatch::default();
        let base = 40_000;
        assert_eq!(w.update(300_001, 300_000, 13_701, 0, base), 80_000);
        assert_eq!(w.update(600_001, 600_000, 25_000, 0, base), 160_000);
        // One in 100 alone: neither grows nor shrinks.
        assert_eq!(w.update(900_001, 900_000, 28_000, 0, base), 160_000);
        // Grown to 1.28 ms, then the answers come in time: it shrinks by a
        // 64th an epoch, so five quiet epochs (100 ms) leave 92 % of it
        // (by an eighth they left 51 %, and the late answers that made it
        // grow went out alone again).
        let mut g = ResponseWatch::default();
        let mut t = 0;
        for _ in 0..5 {
            t += 1000;
            g.update(t, t, t / 2, 0, base);
        }
        assert_eq!(g.hold_ns, 1_280_000);
        let alone = t / 2;
        for _ in 0..5 {
            t += 1000;
            g.update(t, t, alone, 0, base);
        }
        assert!(g.hold_ns > 1_170_000, "{}", g.hold_ns);
    }

    /// A Nagle sender's request in two parts: the first part's held ACK
    /// goes alone and the peer waits for it (awaited), the second part's
    /// answer may come late. The hold does not grow for those late
    /// answers, and a grown one returns to the configured hold: every
    /// awaited ACK would wait the longer hold (the python two-part test
    /// in tests/preload.rs saw the hold grow to 70–80 µs in 3 of 4 runs).
    #[test]
    fn the_ack_hold_stays_short_while_peers_wait_for_our_acks() {
        let mut w = ResponseWatch::default();
        let base = 40_000;
        // 100 exchanges: 200 held, 100 awaited, 60 of the answers late.
        assert_eq!(w.update(200, 100, 60, 100, base), base);
        // Grown on late answers alone, then peers start to wait: back.
        let mut g = ResponseWatch::default();
        assert_eq!(g.update(100, 100, 60, 0, base), 80_000);
        assert_eq!(g.update(200, 200, 120, 0, base), 160_000);
        assert_eq!(g.update(300, 300, 180, 20, base), base);
        // One awaited in twenty held: no reason to stay short.
        assert_eq!(g.update(400, 400, 240, 25, base), 80_000);
    }

    #[test]
    fn a_grown_hold_is_polled_for_one_wake_up_and_a_margin() {
        // Not grown: the configured hold, whatever a wake-up costs.
        assert_eq!(held_poll_window(40_000, 40_000, 45_000), 40_000);
        assert_eq!(held_poll_window(40_000, 40_000, 5_000), 40_000);
        // Grown: a 45 µs wake-up and the margin.
        assert_eq!(held_poll_window(40_000, 500_000, 45_000), 65_000);
        // Cheap wake-ups: never shorter than the configured hold.
        assert_eq!(held_poll_window(40_000, 500_000, 10_000), 40_000);
        // Never beyond the hold itself.
        assert_eq!(held_poll_window(40_000, 80_000, 90_000), 80_000);
    }

    #[test]
    fn lane_commands_wait_in_order_and_are_never_dropped() {
        let l = lanes(2);
        let mut cmds = LaneCommands::new(2);
        let n = CMD_QUEUE as u32 + 1000;
        for i in 0..n {
            cmds.send(&l, 1, CoreCmd::Kick(i));
        }
        assert_eq!(cmds.waiting(), 1000);
        assert_eq!(cmds.deferred, vec![0, 1000]);
        // Lane 0 is unaffected by lane 1's backlog.
        cmds.send(&l, 0, CoreCmd::Kick(7));
        assert_eq!(kick_id(l[0].cmds.pop().unwrap()), 7);
        // A full queue stays full: nothing moves, nothing is lost.
        assert!(!cmds.flush(&l));
        assert_eq!(cmds.waiting(), 1000);
        // The lane takes 600; flushing moves 600, then the lane takes all.
        let mut got = Vec::new();
        for _ in 0..600 {
            got.push(kick_id(l[1].cmds.pop().unwrap()));
        }
        assert!(!cmds.flush(&l));
        assert_eq!(cmds.waiting(), 400);
        // A new command goes behind the waiting ones.
        cmds.send(&l, 1, CoreCmd::Kick(n));
        while let Some(c) = l[1].cmds.pop() {
            got.push(kick_id(c));
            cmds.flush(&l);
        }
        assert_eq!(cmds.waiting(), 0);
        assert_eq!(got, (0..=n).collect::<Vec<_>>());
        // An out-of-range lane means lane 0 (as the daemon's lane_of does).
        cmds.send(&l, 9, CoreCmd::Kick(3));
        assert_eq!(kick_id(l[0].cmds.pop().unwrap()), 3);
    }

    #[test]
    fn exception_overflow_keeps_order_and_counts_bytes() {
        let l = lanes(1);
        let mut o = ExcOverflow::default();
        let exc = |i: u32| Exc {
            reason: Exception::Rst,
            flow: Some(i),
            frame: vec![0u8; 60],
        };
        for i in 0..EXC_QUEUE as u32 {
            assert!(l[0].exc.push(exc(i)).is_ok());
        }
        for i in 0..100u32 {
            o.push(exc(EXC_QUEUE as u32 + i));
        }
        assert_eq!((o.q.len(), o.bytes), (100, 6000));
        assert_eq!(o.drain_into(&l[0]), 0);
        for _ in 0..30 {
            l[0].exc.pop().unwrap();
        }
        assert_eq!(o.drain_into(&l[0]), 30);
        assert_eq!((o.q.len(), o.bytes), (70, 4200));
        let mut seen = Vec::new();
        while let Some(e) = l[0].exc.pop() {
            seen.push(e.flow.unwrap());
            o.drain_into(&l[0]);
        }
        assert_eq!(seen, (30..EXC_QUEUE as u32 + 100).collect::<Vec<_>>());
        assert!(!o.at_bound());
        for i in 0..EXC_OVERFLOW_MAX as u32 {
            o.push(Exc {
                reason: Exception::Syn,
                flow: Some(i),
                frame: Vec::new(),
            });
        }
        assert!(o.at_bound());
    }
}
