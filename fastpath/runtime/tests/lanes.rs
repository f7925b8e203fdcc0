//! Lanes and cores end to end, without root: two lanes, each over its own
//! in-memory link (`MemoryNic::pair`; the test holds the wire ends and plays
//! the peer), two polling cores (threads in `Core::run`), an app living in
//! this process (a heap region laid out with `RegionLayout::new` and a
//! `RegionHeader`, one event ring, one command ring and one sleep flag per
//! lane, exactly as `tasd`'s `apps.rs` lays it out) and one established
//! flow whose lane (`group`) is lane 1. The app posts the flow's commands
//! on lane 1's ring (`App::ring`) unless a test says otherwise.
//!
//! 0. `command_on_the_flows_lane_is_applied_there_without_a_handoff`: lane
//!    1 applies the command from its own ring, nothing is forwarded, lane 0
//!    applies nothing.
//! 1. `tx_activation_is_forwarded_to_the_flows_lane`: a command posted on
//!    lane 0's ring (a stale hint) is applied by lane 0 and its activation
//!    forwarded (counted); the segments leave through lane 1 only.
//! 2. `segment_on_a_foreign_lane_is_taken_there`: data arriving on lane 0
//!    (a NIC that re-hashed) lands in the RX ring, is ACKed from lane 0 and
//!    notified on lane 0's event ring.
//! 3. `lane_handover_loses_and_duplicates_nothing`: traffic both ways while
//!    lanes move between the cores (one core holding both, an inactive
//!    core, a swap); every segment arrives exactly once and in order, and
//!    `CoreSlot::lanes_held` follows the moves.
//! 4. `sleeping_core_is_woken_by_the_apps_kick`: cores that went to sleep
//!    take an app command once the app kicks per the handshake.
//! 5. `sleeping_app_is_woken_by_the_cores_notification`: an app blocked on
//!    its eventfd after `announce_sleep` is kicked when an event arrives.
//! 6. `a_full_command_ring_holds_back_only_its_own_lane`: back-pressure is
//!    per ring.
//! 7. `queued_commands_are_applied_before_a_mark_passes_and_before_removal`
//!    (on each lane's ring).
//!
//! The cores run with `Core::with_max_sleep` far beyond every deadline of
//! the test, so a sleeping core wakes only when something kicks it: a
//! missing kick fails a test instead of being covered by the 100 ms backstop.
//! The lanes' NICs wrap `MemoryNic` with an eventfd as their `wait_fd`,
//! rung by the wire end on every injected frame, as a NIC queue's interrupt
//! would. Every wait is bounded ([`DEADLINE`]); the cores are stopped and
//! joined (also bounded) when a [`Harness`] drops, also after a failure.

use std::collections::VecDeque;
use std::fmt::Display;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tas_abi::{
    announce_sleep, cmd, event, peer_sleeps, AppCmd, AppEvent, RegionHeader, RegionLayout,
    RingConsumer, RingProducer, ABI_VERSION, REGION_MAGIC,
};
use tas_engine::engine::{Config, Exception, Stats};
use tas_engine::flow::FlowState;
use tas_engine::flowtable::{FlowId, FlowTable};
use tas_engine::seq;
use tas_engine::wire::{frame, tcp};
use tas_nic::memory::MemoryNic;
use tas_nic::{FrameBatch, Nic, NicError};
use tas_runtime::{drain, kick, AppPort, Core, CoreCmd, CoreConfig, FastPathShared, Lane};
use tas_testkit::{addr, Rng};

/// Longest any single wait of the test may take.
const DEADLINE: Duration = Duration::from_secs(5);
/// How long a sleeping core blocks when nobody kicks it: beyond every wait.
const MAX_SLEEP: Duration = Duration::from_secs(600);
/// Cores without work go to sleep after this.
const IDLE_SPIN: Duration = Duration::from_micros(100);

const LANES: usize = 2;
const CORES: usize = 2;
/// The flow's own lane (its `group`): its segments leave from here only.
const FLOW_LANE: usize = 1;
/// The app's id (region and event context); not 0 on purpose.
const APP: u16 = 3;
/// An app id nobody uses: `RemoveApp` of it serves as a lane barrier.
const NO_APP: u16 = 1000;

const OUR_MAC: [u8; 6] = addr::A_MAC;
const PEER_MAC: [u8; 6] = addr::B_MAC;
const OUR_IP: u32 = addr::ip_u32(addr::A_IP);
const PEER_IP: u32 = addr::ip_u32(addr::B_IP);
const OUR_PORT: u16 = 7000;
const PEER_PORT: u16 = 40_000;
/// A port with no flow: frames to it are exceptions (see `Harness::sync`).
const PROBE_PORT: u16 = 40_001;
const OPAQUE: u64 = 0x0dd_ba11_0000_0042;
/// The peer's initial sequence number.
const IRS: u32 = 0x7000_0000;
/// Ours: close to the wrap, so the tests cross it.
const ISS: u32 = u32::MAX - 2_000;
const MSS: u16 = 1460;
/// The window the peer announces (no scaling).
const PEER_WIN: u16 = 65_535;

const REGION_SIZE: u32 = 256 * 1024;
const EVENT_CAP: u32 = 64;
const CMD_CAP: u32 = 64;
const RX_LEN: u32 = 32 * 1024;
const TX_LEN: u32 = 64 * 1024;

// ---------------------------------------------------------------------------
// Waiting, bounded
// ---------------------------------------------------------------------------

/// Calls `f` until it returns a value; panics after [`DEADLINE`].
fn wait_for<T>(what: impl Display, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut tries = 0u32;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > DEADLINE {
            panic!("timed out after {DEADLINE:?} waiting for {what}");
        }
        tries += 1;
        if tries < 64 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

fn wait_until(what: impl Display, mut cond: impl FnMut() -> bool) {
    wait_for(what, || cond().then_some(()))
}

fn eventfd() -> OwnedFd {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    let efd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).expect("eventfd");
    OwnedFd::from(efd)
}

/// Whether `fd` becomes readable within `ms` milliseconds.
fn readable(fd: &OwnedFd, ms: u16) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut p = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut p, PollTimeout::from(ms)), Ok(n) if n > 0)
}

// ---------------------------------------------------------------------------
// The link: a lane's NIC and the test's wire end
// ---------------------------------------------------------------------------

/// A lane's NIC: the lane's end of an in-memory link, plus an eventfd the
/// wire end rings for every frame it sends, so a sleeping core wakes on
/// frames as it would on a real NIC queue.
struct LaneNic {
    end: MemoryNic,
    doorbell: Arc<OwnedFd>,
}

impl Nic for LaneNic {
    fn recv(&mut self, batch: &mut FrameBatch) -> Result<usize, NicError> {
        // Reset the doorbell before looking: a frame sent after the look
        // rings it again.
        drain(self.doorbell.as_raw_fd());
        self.end.recv(batch)
    }
    fn send(&mut self, batch: &FrameBatch) -> Result<usize, NicError> {
        self.end.send(batch)
    }
    fn mac(&self) -> [u8; 6] {
        self.end.mac()
    }
    fn mtu(&self) -> usize {
        self.end.mtu()
    }
    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.doorbell.as_raw_fd())
    }
    fn kind(&self) -> &'static str {
        "memory+doorbell"
    }
}

/// The test's end of one lane's link.
struct Wire {
    end: MemoryNic,
    doorbell: Arc<OwnedFd>,
    batch: FrameBatch,
    received: VecDeque<Vec<u8>>,
}

impl Wire {
    /// Sends `frame` to the lane and rings its doorbell.
    fn inject(&mut self, frame: &[u8]) {
        self.batch.clear();
        assert!(self.batch.push(frame), "frame of {} bytes", frame.len());
        assert_eq!(self.end.send(&self.batch).expect("memory link"), 1);
        kick(self.doorbell.as_raw_fd());
    }

    /// The next frame the lane sent, if any.
    fn take(&mut self) -> Option<Vec<u8>> {
        if self.received.is_empty() {
            self.batch.clear();
            self.end.recv(&mut self.batch).expect("memory link");
            self.received.extend(self.batch.iter().map(<[u8]>::to_vec));
        }
        self.received.pop_front()
    }
}

// ---------------------------------------------------------------------------
// Segments: ours (parsed back) and the peer's (built)
// ---------------------------------------------------------------------------

/// A segment of the flow as we sent it.
#[derive(Clone, PartialEq, Eq)]
struct Seg {
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    payload: Vec<u8>,
}

impl std::fmt::Debug for Seg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Seg {{ seq: {}, ack: {}, flags: {:#04x}, window: {}, payload: {} bytes }}",
            self.seq,
            self.ack,
            self.flags,
            self.window,
            self.payload.len()
        )
    }
}

/// Parses a frame a lane sent and checks it is a well-formed segment of
/// the flow under test.
fn parse_ours(b: &[u8]) -> Seg {
    let fr = frame::parse_tcp_frame(b).expect("our frames parse");
    assert_eq!((fr.eth.src(), fr.eth.dst()), (OUR_MAC, PEER_MAC));
    assert_eq!((fr.ip.src(), fr.ip.dst()), (OUR_IP, PEER_IP));
    assert!(
        tcp::verify_checksum(fr.ip.src(), fr.ip.dst(), fr.ip.payload()),
        "TCP checksum"
    );
    let t = fr.tcp.repr().expect("our options parse");
    assert_eq!((t.src_port, t.dst_port), (OUR_PORT, PEER_PORT));
    assert_eq!(
        t.options,
        tcp::TcpOptions::default(),
        "no options negotiated"
    );
    let s = Seg {
        seq: t.seq,
        ack: t.ack,
        flags: t.flags,
        window: t.window,
        payload: fr.tcp.payload().to_vec(),
    };
    assert_eq!(
        s.flags & !(tcp::PSH),
        tcp::ACK,
        "an established flow sends ACK or ACK|PSH: {s:?}"
    );
    s
}

/// A frame from the peer's address to `dst_port`.
fn peer_frame(dst_port: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let h = frame::FrameHdr {
        src_mac: PEER_MAC,
        dst_mac: OUR_MAC,
        src_ip: PEER_IP,
        dst_ip: OUR_IP,
        ttl: 64,
        ecn: 0,
        ident: 0,
    };
    let t = tcp::TcpRepr {
        src_port: PEER_PORT,
        dst_port,
        seq,
        ack,
        flags,
        window: PEER_WIN,
        options: tcp::TcpOptions::default(),
    };
    let mut buf = vec![0u8; 128 + payload.len()];
    let n = frame::tcp_frame(&mut buf, &h, &t, payload).expect("frame fits");
    buf.truncate(n);
    buf
}

/// The remote end of the flow, played by the test.
struct Peer {
    /// Next sequence number the peer sends.
    snd_nxt: u32,
    /// The next sequence number the peer expects from us.
    rcv_nxt: u32,
    /// Highest acknowledgement of the peer's data seen from us.
    acked: u32,
    /// Everything the peer sent.
    sent: Vec<u8>,
    /// Our stream as the peer received it.
    got: Vec<u8>,
}

impl Peer {
    fn new() -> Peer {
        Peer {
            snd_nxt: IRS.wrapping_add(1),
            rcv_nxt: ISS.wrapping_add(1),
            acked: IRS.wrapping_add(1),
            sent: Vec::new(),
            got: Vec::new(),
        }
    }

    /// The next data segment (acknowledging what the peer has).
    fn data(&mut self, payload: &[u8]) -> Vec<u8> {
        let f = peer_frame(
            OUR_PORT,
            self.snd_nxt,
            self.rcv_nxt,
            tcp::ACK | tcp::PSH,
            payload,
        );
        self.snd_nxt = self.snd_nxt.wrapping_add(payload.len() as u32);
        self.sent.extend_from_slice(payload);
        f
    }

    /// A pure ACK of everything the peer has.
    fn ack(&self) -> Vec<u8> {
        peer_frame(OUR_PORT, self.snd_nxt, self.rcv_nxt, tcp::ACK, &[])
    }

    /// Takes one of our segments sent from `lane`: data must continue our
    /// stream exactly (a gap is a lost segment, an earlier sequence number
    /// a duplicate). True when it carried new data.
    fn take(&mut self, lane: usize, s: &Seg) -> bool {
        assert!(
            seq::ge(s.ack, IRS.wrapping_add(1)) && seq::le(s.ack, self.snd_nxt),
            "ACK {} outside what the peer sent (snd_nxt {}): {s:?}",
            s.ack,
            self.snd_nxt
        );
        if seq::gt(s.ack, self.acked) {
            self.acked = s.ack;
        }
        if s.payload.is_empty() {
            return false;
        }
        assert_eq!(
            lane, FLOW_LANE,
            "a data segment left through lane {lane}, not the flow's lane: {s:?}"
        );
        assert_eq!(
            s.seq, self.rcv_nxt,
            "segment out of sequence (lost or duplicated): {s:?}"
        );
        self.rcv_nxt = self.rcv_nxt.wrapping_add(s.payload.len() as u32);
        self.got.extend_from_slice(&s.payload);
        true
    }
}

// ---------------------------------------------------------------------------
// The app: its region and its side of the rings
// ---------------------------------------------------------------------------

/// The memory and fd the cores point into. Freed only after the cores are
/// joined (or never, if one could not be stopped).
struct Shm {
    base: *mut u8,
    alloc: std::alloc::Layout,
    /// The app's eventfd (the lanes' ports hold its number).
    app_wake: OwnedFd,
}

impl Shm {
    fn new(size: usize) -> Shm {
        let alloc = std::alloc::Layout::from_size_align(size, 4096).expect("layout");
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { std::alloc::alloc_zeroed(alloc) };
        assert!(!base.is_null(), "region allocation");
        Shm {
            base,
            alloc,
            app_wake: eventfd(),
        }
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; nobody uses it any
        // more (the harness joined the cores first).
        unsafe { std::alloc::dealloc(self.base, self.alloc) };
    }
}

/// The app's side: it reads every event ring, writes a command ring and
/// the flow's TX ring, reads its RX ring.
struct App {
    base: *mut u8,
    flow: FlowId,
    events: Vec<RingConsumer<AppEvent>>,
    /// One command ring per lane.
    cmds: Vec<RingProducer<AppCmd>>,
    /// Per lane: its sleep flag in the region and its eventfd.
    lane_flags: Vec<*const AtomicU32>,
    lane_wakes: Vec<RawFd>,
    /// The ring the flow's commands go to (the flow's lane unless a test
    /// plays an app with a stale hint).
    ring: usize,
    rx_base: u32,
    tx_base: u32,
    /// Bytes appended to the TX ring so far.
    tx_written: u32,
    /// Latest `tx_acked_seq` notified.
    tx_acked: u32,
    /// Latest `rx_seq` notified.
    rx_seq: u32,
    /// Bytes read from the RX ring so far (and freed).
    rx_read: u32,
    /// The peer's stream as read.
    got: Vec<u8>,
    /// Events received, per lane.
    events_on: [usize; LANES],
}

impl App {
    fn header(&self) -> &RegionHeader {
        // SAFETY: the region starts with the RegionHeader the harness wrote
        // and outlives the app.
        unsafe { &*(self.base as *const RegionHeader) }
    }

    /// Copies `data` into the region at ring offset `pos` of the ring at
    /// `base` of length `len` (wrapping).
    fn ring_copy_in(&mut self, base: u32, len: u32, pos: u32, data: &[u8]) {
        let first = data.len().min((len - pos) as usize);
        // SAFETY: both pieces lie inside the ring, which lies inside the
        // region; the fast path reads this part only after the command that
        // announces it.
        unsafe {
            let p = self.base.add(base as usize);
            std::ptr::copy_nonoverlapping(data.as_ptr(), p.add(pos as usize), first);
            std::ptr::copy_nonoverlapping(data[first..].as_ptr(), p, data.len() - first);
        }
    }

    fn ring_copy_out(&self, base: u32, len: u32, pos: u32, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        let first = n.min((len - pos) as usize);
        // SAFETY: as in `ring_copy_in`; the fast path wrote this part
        // before publishing the event that announced it.
        unsafe {
            let p = self.base.add(base as usize);
            std::ptr::copy_nonoverlapping(p.add(pos as usize), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(p, out[first..].as_mut_ptr(), n - first);
        }
        out
    }

    /// Publishes a command (waiting for room) without kicking.
    fn push_cmd(&mut self, tx_added: u32, rx_freed: u32) {
        let c = AppCmd {
            kind: cmd::FLOW_UPDATE,
            flow: self.flow,
            tx_added,
            rx_freed,
            ..Default::default()
        };
        let cmds = &mut self.cmds[self.ring];
        wait_until("room in the command ring", || cmds.push(c));
    }

    /// Lane `lane`'s sleep flag.
    fn lane_flag(&self, lane: usize) -> &AtomicU32 {
        // SAFETY: the flag lies inside the region, which outlives the app.
        unsafe { &*self.lane_flags[lane] }
    }

    /// The eventfd of the lane the app posts on.
    fn cmd_lane_wake(&self) -> RawFd {
        self.lane_wakes[self.ring]
    }

    /// The publishing side of the handshake: kicks the lane it posts on if
    /// its core announced that it sleeps. True if it kicked.
    fn kick_if_sleeping(&self) -> bool {
        let sleeping = peer_sleeps(self.lane_flag(self.ring));
        if sleeping {
            kick(self.cmd_lane_wake());
        }
        sleeping
    }

    /// Appends `data` to the TX ring and publishes the command, without
    /// kicking.
    fn queue_send(&mut self, data: &[u8]) {
        assert!(data.len() as u32 <= TX_LEN - (self.tx_written - self.tx_acked_bytes()));
        let pos = self.tx_written % TX_LEN;
        self.ring_copy_in(self.tx_base, TX_LEN, pos, data);
        self.tx_written += data.len() as u32;
        self.push_cmd(data.len() as u32, 0);
    }

    /// What an app's `send` does: append, publish, kick per the handshake.
    fn send(&mut self, data: &[u8]) {
        self.queue_send(data);
        self.kick_if_sleeping();
    }

    fn tx_acked_bytes(&self) -> u32 {
        self.tx_acked.wrapping_sub(ISS.wrapping_add(1))
    }

    /// Sequence number just after everything the app wrote.
    fn tx_end(&self) -> u32 {
        ISS.wrapping_add(1).wrapping_add(self.tx_written)
    }

    /// Takes every event from every lane's ring.
    fn poll_events(&mut self) -> Vec<(usize, AppEvent)> {
        let mut v = Vec::new();
        for lane in 0..LANES {
            while let Some(e) = self.events[lane].pop() {
                assert_eq!(
                    (e.kind, e.flags, e.flow, e.opaque),
                    (event::FLOW_UPDATE, 0, self.flow, OPAQUE),
                    "event on lane {lane}: {e:?}"
                );
                if seq::gt(e.rx_seq, self.rx_seq) {
                    self.rx_seq = e.rx_seq;
                }
                if seq::gt(e.tx_acked_seq, self.tx_acked) {
                    self.tx_acked = e.tx_acked_seq;
                }
                assert!(
                    seq::le(self.tx_acked, self.tx_end()),
                    "acknowledged beyond what the app wrote: {e:?}"
                );
                self.events_on[lane] += 1;
                v.push((lane, e));
            }
        }
        v
    }

    /// Reads what the events announced from the RX ring and frees it
    /// (kicking per the handshake). Returns the bytes read.
    fn recv(&mut self) -> usize {
        let n = self
            .rx_seq
            .wrapping_sub(IRS.wrapping_add(1))
            .wrapping_sub(self.rx_read);
        assert!(n <= RX_LEN, "more announced than the RX ring holds: {n}");
        if n == 0 {
            return 0;
        }
        let data = self.ring_copy_out(self.rx_base, RX_LEN, self.rx_read % RX_LEN, n as usize);
        self.got.extend_from_slice(&data);
        self.rx_read += n;
        self.push_cmd(0, n);
        self.kick_if_sleeping();
        n as usize
    }
}

// ---------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------

/// The fast path with its cores running, the app, the wires and the peer.
/// Dropping it stops and joins the cores first.
struct Harness {
    shared: Arc<FastPathShared<LaneNic>>,
    cores: Vec<JoinHandle<()>>,
    table: Arc<FlowTable>,
    flow: FlowId,
    wires: Vec<Wire>,
    app: App,
    peer: Peer,
    rng: Rng,
    /// Which core each lane is assigned to.
    owner: [usize; LANES],
    probes: u16,
    shm: Option<Shm>,
}

impl Harness {
    fn new(seed: u64) -> Harness {
        Harness::with_ack_delay(seed, 0)
    }

    /// The harness with ACKs for in-order data held up to `ack_delay_ns`
    /// for a response to carry them (tasd's `--ack-delay-us`).
    fn with_ack_delay(seed: u64, ack_delay_ns: u64) -> Harness {
        let shared = FastPathShared::<LaneNic>::new(CORES, LANES).expect("lanes");
        let table = Arc::new(FlowTable::new(16));
        let engine = Config {
            local_mac: OUR_MAC,
            ttl: 64,
            any_mac: false,
            ack_delay_ns,
        };
        let mut wires = Vec::new();
        for lane in 0..LANES {
            let (ours, theirs) = MemoryNic::pair(OUR_MAC, PEER_MAC);
            let doorbell = Arc::new(eventfd());
            let nic = LaneNic {
                end: ours,
                doorbell: doorbell.clone(),
            };
            let l = Lane::new(nic, table.clone(), engine, shared.lanes[lane].clone());
            // Lane i starts on core i.
            shared.place(l, lane);
            wires.push(Wire {
                end: theirs,
                doorbell,
                batch: FrameBatch::new(tas_runtime::BATCH),
                received: VecDeque::new(),
            });
        }

        // The app's region, as `tasd` lays it out (slowpath/src/apps.rs).
        let layout = RegionLayout::new(REGION_SIZE, LANES as u32, EVENT_CAP, CMD_CAP)
            .expect("region layout");
        let shm = Shm::new(REGION_SIZE as usize);
        let base = shm.base;
        // SAFETY: the region is 4 KiB aligned, at least 64 bytes long and
        // not shared with anyone yet.
        unsafe {
            std::ptr::write(
                base as *mut RegionHeader,
                RegionHeader {
                    magic: REGION_MAGIC,
                    version: ABI_VERSION,
                    _reserved: 0,
                    app_waiting: Default::default(),
                    goal: Default::default(),
                    ctl_sent: Default::default(),
                    app_drains: Default::default(),
                },
            )
        };
        let rx_base = layout.payload_off;
        let tx_base = rx_base + RX_LEN;
        assert!(tx_base + TX_LEN <= REGION_SIZE);

        let flow = table
            .insert(FlowState {
                opaque: OPAQUE,
                local_ip: OUR_IP,
                remote_ip: PEER_IP,
                local_port: OUR_PORT,
                remote_port: PEER_PORT,
                remote_mac: PEER_MAC,
                context: APP,
                mem: APP,
                group: FLOW_LANE as u16,
                cfg: 0,
                mss: MSS,
                rx_base,
                rx_len: RX_LEN,
                tx_base,
                tx_len: TX_LEN,
                rx_avail: RX_LEN,
                rx_next_seq: IRS.wrapping_add(1),
                rx_remote_avail: PEER_WIN as u32,
                tx_next_seq: ISS.wrapping_add(1),
                ..Default::default()
            })
            .expect("flow installed");

        let app_wake = shm.app_wake.as_raw_fd();
        for lane in 0..LANES {
            // SAFETY: the rings lie inside the region (RegionLayout checked
            // the sizes), which stays allocated until the cores are joined;
            // each ring has one lane on its side.
            let port = unsafe {
                AppPort {
                    id: APP,
                    mem: APP,
                    base,
                    len: REGION_SIZE as usize,
                    events: RingProducer::new(
                        base.add(layout.event_ring_off(lane as u32) as usize),
                        layout.event_cap,
                    ),
                    cmds: RingConsumer::new(
                        base.add(layout.cmd_ring_off(lane as u32) as usize),
                        layout.cmd_cap,
                    ),
                    lane_sleeping: base.add(layout.lane_flag_off(lane as u32) as usize)
                        as *const AtomicU32,
                    app_wake,
                    kicked_at: None,
                }
            };
            assert!(shared.lanes[lane].command(CoreCmd::AddApp(port)).is_ok());
        }
        // SAFETY: as above; the app is the other side of each ring.
        let (events, cmds, lane_flags) = unsafe {
            (
                (0..LANES)
                    .map(|lane| {
                        RingConsumer::new(
                            base.add(layout.event_ring_off(lane as u32) as usize),
                            layout.event_cap,
                        )
                    })
                    .collect(),
                (0..LANES)
                    .map(|lane| {
                        RingProducer::new(
                            base.add(layout.cmd_ring_off(lane as u32) as usize),
                            layout.cmd_cap,
                        )
                    })
                    .collect(),
                (0..LANES)
                    .map(|lane| {
                        base.add(layout.lane_flag_off(lane as u32) as usize) as *const AtomicU32
                    })
                    .collect(),
            )
        };
        let app = App {
            base,
            flow,
            events,
            cmds,
            lane_flags,
            lane_wakes: shared.lanes.iter().map(|l| l.wake.as_raw_fd()).collect(),
            ring: FLOW_LANE,
            rx_base,
            tx_base,
            tx_written: 0,
            tx_acked: ISS.wrapping_add(1),
            rx_seq: IRS.wrapping_add(1),
            rx_read: 0,
            got: Vec::new(),
            events_on: [0; LANES],
        };

        let mut h = Harness {
            shared,
            cores: Vec::new(),
            table,
            flow,
            wires,
            app,
            peer: Peer::new(),
            rng: Rng::mixed(seed),
            owner: [0, 1],
            probes: 0,
            shm: Some(shm),
        };
        for k in 0..CORES {
            let shared = h.shared.clone();
            let cfg = CoreConfig {
                idle_spin: IDLE_SPIN,
                adaptive: false,
                idle_yield: true,
            };
            let t = std::thread::Builder::new()
                .name(format!("test-fp{k}"))
                .spawn(move || Core::new(k, shared, cfg).with_max_sleep(MAX_SLEEP).run())
                .expect("spawn core");
            h.cores.push(t);
        }
        // The ports are in place before anything else happens.
        for lane in 0..LANES {
            h.barrier(lane);
        }
        h.check_held();
        h
    }

    /// Returns once lane `lane` has taken every command queued before (the
    /// acknowledgement of removing an app nobody uses).
    fn barrier(&self, lane: usize) {
        let left = Arc::new(AtomicU32::new(1));
        assert!(self.shared.lanes[lane]
            .command(CoreCmd::RemoveApp(NO_APP, left.clone()))
            .is_ok());
        wait_until(format!("lane {lane} to take a command"), || {
            left.load(Ordering::Acquire) == 0
        });
    }

    /// Returns every frame lane `lane` sent in the rounds it started before
    /// the call: a frame of no flow goes in, and once the lane has queued
    /// it as an exception, those rounds have flushed their output.
    fn sync(&mut self, lane: usize) -> Vec<Seg> {
        self.probes = self.probes.wrapping_add(1);
        let probe = peer_frame(PROBE_PORT, self.probes as u32, 0, tcp::ACK, &[]);
        self.wires[lane].inject(&probe);
        let exc = &self.shared.lanes[lane].exc;
        let e = wait_for(format!("lane {lane} to take the probe"), || exc.pop());
        assert_eq!((e.reason, e.flow), (Exception::NoFlow, None));
        assert_eq!(e.frame, probe, "an unexpected exception on lane {lane}");
        self.shared.lanes[lane].recycle(e.frame);
        let mut v = Vec::new();
        while let Some(f) = self.wires[lane].take() {
            v.push(parse_ours(&f));
        }
        v
    }

    /// Waits for the next frame lane `lane` sends.
    fn expect_seg(&mut self, lane: usize) -> Seg {
        let w = &mut self.wires[lane];
        parse_ours(&wait_for(format!("a segment on lane {lane}"), || w.take()))
    }

    /// Waits for the next event(s) the app gets.
    fn expect_events(&mut self) -> Vec<(usize, AppEvent)> {
        let app = &mut self.app;
        wait_for("an app event", || {
            Some(app.poll_events()).filter(|v| !v.is_empty())
        })
    }

    fn flow(&self) -> FlowState {
        *self.table.lock(self.flow).expect("flow installed")
    }

    fn held(&self) -> Vec<u64> {
        let s = &self.shared.cores;
        s.iter()
            .map(|c| c.lanes_held.load(Ordering::Relaxed))
            .collect()
    }

    /// Waits until every core reports holding exactly the lanes assigned
    /// to it.
    fn check_held(&self) {
        let mut want = vec![0u64; CORES];
        for (lane, &core) in self.owner.iter().enumerate() {
            want[core] |= 1 << lane;
        }
        wait_until(
            format!(
                "cores to hold lanes {want:?} (lane → core {:?})",
                self.owner
            ),
            || self.held() == want,
        );
    }

    /// Moves lane `lane` to core `core`.
    fn assign(&mut self, lane: usize, core: usize) {
        self.owner[lane] = core;
        self.shared.assign(lane, core);
    }

    /// One step of both ends: the peer takes our segments and ACKs new
    /// data (on the flow's lane, or on lane 0 now and then), the app takes
    /// its events and reads what arrived.
    fn pump(&mut self) {
        let mut new_data = false;
        for lane in 0..LANES {
            while let Some(f) = self.wires[lane].take() {
                let s = parse_ours(&f);
                new_data |= self.peer.take(lane, &s);
            }
        }
        if new_data {
            let lane = if self.rng.one_in(4) { 0 } else { FLOW_LANE };
            let ack = self.peer.ack();
            self.wires[lane].inject(&ack);
        }
        self.app.poll_events();
        self.app.recv();
        assert!(
            seq::le(self.app.rx_seq, self.peer.snd_nxt),
            "the app was told of data the peer never sent"
        );
    }

    /// Both directions delivered, acknowledged and known to the app.
    fn settled(&self) -> bool {
        self.peer.rcv_nxt == self.app.tx_end()
            && self.peer.acked == self.peer.snd_nxt
            && self.app.rx_read as usize == self.peer.sent.len()
            && self.app.tx_acked == self.app.tx_end()
    }

    fn settle(&mut self, what: impl Display) {
        wait_until(what, || {
            self.pump();
            self.settled()
        });
        assert_eq!(self.app.got, self.peer.sent, "what the app read");
        assert_eq!(self.peer.got.len(), self.app.tx_written as usize);
    }

    fn random_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.rng.fill(&mut v);
        v
    }

    /// Stops the cores and joins them, each within the deadline; panics if
    /// one panicked or hangs (unless already unwinding). Idempotent.
    fn stop(&mut self) {
        if self.cores.is_empty() {
            return;
        }
        self.shared.shutdown();
        let start = Instant::now();
        let mut trouble = Vec::new();
        for (k, t) in self.cores.drain(..).enumerate() {
            while !t.is_finished() && start.elapsed() < DEADLINE {
                std::thread::sleep(Duration::from_millis(1));
            }
            if !t.is_finished() {
                trouble.push(format!("core {k} did not stop within {DEADLINE:?}"));
                // It may still touch the region: never free it.
                std::mem::forget(self.shm.take());
                continue;
            }
            if t.join().is_err() {
                trouble.push(format!("core {k} panicked"));
            }
        }
        if !trouble.is_empty() {
            if std::thread::panicking() {
                eprintln!("while unwinding: {}", trouble.join("; "));
            } else {
                panic!("{}", trouble.join("; "));
            }
        }
    }

    /// The lanes' engine counters (final once the cores are stopped).
    fn stats(&self, lane: usize) -> Stats {
        *self.shared.lanes[lane].stats.lock().expect("stats")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

/// The app posts the flow's command on the flow's own lane's ring: lane 1
/// applies it and schedules the flow itself. No command is forwarded, lane
/// 0 applies none, and the segment leaves through lane 1.
#[test]
fn command_on_the_flows_lane_is_applied_there_without_a_handoff() {
    let mut h = Harness::new(11);
    assert_eq!(h.app.ring, FLOW_LANE);
    for round in 0..4 {
        let data = h.random_bytes(300 + round * 100);
        h.app.send(&data);
        let s = h.expect_seg(FLOW_LANE);
        assert_eq!(s.payload, data);
        assert!(h.peer.take(FLOW_LANE, &s));
        let ack = h.peer.ack();
        h.wires[FLOW_LANE].inject(&ack);
        h.settle(format!("round {round}: the ACK to reach the app"));
    }
    assert_eq!(h.sync(0), vec![], "lane 0 sent segments of the flow");
    h.stop();
    let r = Ordering::Relaxed;
    let l = &h.shared.lanes;
    assert_eq!(l[0].app_cmds.load(r), 0, "lane 0 applied a command");
    assert!(l[FLOW_LANE].app_cmds.load(r) >= 4);
    assert_eq!(
        (
            l[0].app_cmds_forwarded.load(r),
            l[FLOW_LANE].app_cmds_forwarded.load(r)
        ),
        (0, 0),
        "a command was handed to another lane"
    );
    let (s0, s1) = (h.stats(0), h.stats(FLOW_LANE));
    assert_eq!(s0.tx_frames, 0, "{s0:?}");
    assert_eq!(s1.tx_payload_bytes, 300 + 400 + 500 + 600, "{s1:?}");
    assert_eq!(s0.app_cmd_invalid + s1.app_cmd_invalid, 0);
}

/// A command posted on the wrong lane's ring (lane 0's: a stale hint) is
/// applied all the same: lane 0 takes it under the flow lock and forwards
/// the activation to lane 1 (counted in `app_cmds_forwarded`). The
/// segments leave through lane 1's NIC, none through lane 0's.
#[test]
fn tx_activation_is_forwarded_to_the_flows_lane() {
    let mut h = Harness::new(1);
    h.app.ring = 0;
    let first = h.random_bytes(1000);
    h.app.queue_send(&first);
    // The brief's app kicks lane 0 unconditionally (always allowed).
    kick(h.app.cmd_lane_wake());
    let s = h.expect_seg(FLOW_LANE);
    assert_eq!(
        s,
        Seg {
            seq: ISS.wrapping_add(1),
            ack: IRS.wrapping_add(1),
            flags: tcp::ACK | tcp::PSH,
            window: RX_LEN as u16,
            payload: first.clone(),
        }
    );
    assert!(h.peer.take(FLOW_LANE, &s));
    // Lane 0 finished the round that forwarded the activation (and later
    // ones) without sending anything; lane 1 sent the segment once.
    assert_eq!(h.sync(0), vec![], "lane 0 sent segments of the flow");
    assert_eq!(
        h.sync(FLOW_LANE),
        vec![],
        "lane 1 sent more than the segment"
    );

    // More than one MSS, across the sequence-number wrap: MSS-sized
    // segments in order, PSH on the last.
    let second = h.random_bytes(3000);
    h.app.send(&second);
    let mut got = Vec::new();
    while got.len() < second.len() {
        let s = h.expect_seg(FLOW_LANE);
        let last = got.len() + s.payload.len() == second.len();
        assert_eq!(s.seq, ISS.wrapping_add(1 + 1000 + got.len() as u32));
        assert_eq!(s.payload.len(), if last { 80 } else { MSS as usize });
        assert_eq!(s.flags, if last { tcp::ACK | tcp::PSH } else { tcp::ACK });
        assert!(h.peer.take(FLOW_LANE, &s));
        got.extend_from_slice(&s.payload);
    }
    assert_eq!(got, second);
    assert!(h.peer.rcv_nxt < ISS, "the stream crossed the wrap");
    assert_eq!(h.sync(0), vec![], "lane 0 sent segments of the flow");
    assert_eq!(h.sync(FLOW_LANE), vec![]);

    // The peer's ACK frees the TX ring; the app hears of it on lane 1.
    let ack = h.peer.ack();
    h.wires[FLOW_LANE].inject(&ack);
    let ev = h.expect_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].0, FLOW_LANE);
    assert_eq!(ev[0].1.tx_acked_seq, h.app.tx_end());
    assert_eq!(ev[0].1.rx_seq, IRS.wrapping_add(1));
    let f = h.flow();
    assert_eq!((f.tx_sent, f.tx_avail), (0, 0));

    h.stop();
    let (s0, s1) = (h.stats(0), h.stats(FLOW_LANE));
    assert_eq!((s0.tx_frames, s0.tx_payload_bytes), (0, 0), "{s0:?}");
    assert_eq!((s1.tx_frames, s1.tx_payload_bytes), (4, 4000), "{s1:?}");
    assert_eq!(s0.app_cmd_invalid + s1.app_cmd_invalid, 0);
    let r = Ordering::Relaxed;
    let l = &h.shared.lanes;
    assert_eq!(l[0].app_cmds.load(r), 2, "both sends applied by lane 0");
    assert_eq!(l[0].app_cmds_forwarded.load(r), 2, "both handed to lane 1");
    assert_eq!(l[FLOW_LANE].app_cmds.load(r), 0);
}

/// Data for the flow arriving on lane 0 (as if the NIC re-hashed) is taken
/// there: into the RX ring under the flow lock, ACKed from lane 0, notified
/// on lane 0's event ring. Lane 1 sees nothing of it.
#[test]
fn segment_on_a_foreign_lane_is_taken_there() {
    let mut h = Harness::new(2);
    let data = h.random_bytes(700);
    let seg = h.peer.data(&data);
    h.wires[0].inject(&seg);

    let ev = h.expect_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    let (lane, e) = ev[0];
    assert_eq!(lane, 0, "notified on lane {lane}'s ring: {e:?}");
    assert_eq!(e.rx_seq, IRS.wrapping_add(1 + 700));
    assert_eq!(e.tx_acked_seq, ISS.wrapping_add(1));

    let ack = h.expect_seg(0);
    assert_eq!(
        ack,
        Seg {
            seq: ISS.wrapping_add(1),
            ack: IRS.wrapping_add(1 + 700),
            flags: tcp::ACK,
            window: (RX_LEN - 700) as u16,
            payload: vec![],
        }
    );
    assert!(!h.peer.take(0, &ack));
    let f = h.flow();
    assert_eq!(f.rx_next_seq, IRS.wrapping_add(1 + 700));
    assert_eq!((f.rx_avail, f.rx_next_pos), (RX_LEN - 700, 700));
    assert_eq!(h.sync(0), vec![], "one ACK only");
    assert_eq!(h.sync(FLOW_LANE), vec![], "lane 1 sent something");
    assert_eq!(h.app.poll_events(), vec![]);

    // The app reads the payload and frees it (a command on lane 0).
    assert_eq!(h.app.recv(), 700);
    assert_eq!(h.app.got, data);
    wait_until("the RX ring to be freed", || h.flow().rx_avail == RX_LEN);

    // The next segment comes through the flow's own lane.
    let more = h.random_bytes(300);
    let seg = h.peer.data(&more);
    h.wires[FLOW_LANE].inject(&seg);
    let ev = h.expect_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].0, FLOW_LANE);
    assert_eq!(ev[0].1.rx_seq, IRS.wrapping_add(1 + 1000));
    let ack = h.expect_seg(FLOW_LANE);
    assert_eq!(
        (ack.ack, ack.payload.len()),
        (IRS.wrapping_add(1 + 1000), 0)
    );
    assert_eq!(ack.window, (RX_LEN - 300) as u16);
    assert_eq!(h.app.recv(), 300);
    assert_eq!(h.app.got, h.peer.sent);
    assert_eq!(h.sync(0), vec![]);

    h.stop();
    let (s0, s1) = (h.stats(0), h.stats(FLOW_LANE));
    assert_eq!((s0.rx_payload_bytes, s0.acks_sent), (700, 1), "{s0:?}");
    assert_eq!((s1.rx_payload_bytes, s1.acks_sent), (300, 1), "{s1:?}");
}

/// Lanes move between the cores while data flows both ways: lane 1 to
/// core 0 and back, lane 0 to core 1 and back, both swapped (core 0 left
/// without lanes in between). No segment is lost or duplicated, and the
/// cores' `lanes_held` follow every move.
#[test]
fn lane_handover_loses_and_duplicates_nothing() {
    const ROUNDS: usize = 160;
    const MOVE_EVERY: usize = 8;
    let moves: [&[(usize, usize)]; 6] = [
        &[(1, 0)],
        &[(1, 1)],
        &[(0, 1)],
        &[(0, 0)],
        &[(0, 1), (1, 0)],
        &[(0, 0), (1, 1)],
    ];
    let mut h = Harness::new(3);
    let mut moved = 0;
    for round in 0..ROUNDS {
        if round % MOVE_EVERY == MOVE_EVERY / 2 {
            // Traffic is in flight when the lanes move.
            for &(lane, core) in moves[moved % moves.len()] {
                h.assign(lane, core);
            }
            moved += 1;
        }
        let n = 1 + h.rng.below(2 * MSS as usize);
        let out = h.random_bytes(n);
        h.app.send(&out);
        let n = 1 + h.rng.below(MSS as usize);
        let data = h.random_bytes(n);
        let seg = h.peer.data(&data);
        let lane = if h.rng.one_in(3) { 0 } else { FLOW_LANE };
        h.wires[lane].inject(&seg);
        h.settle(format!("round {round} to be delivered both ways"));
        if round % MOVE_EVERY == MOVE_EVERY - 1 {
            h.check_held();
        }
    }
    assert_eq!(moved, ROUNDS / MOVE_EVERY);
    assert_eq!(h.owner, [0, 1], "the moves end where they started");
    h.check_held();
    assert!(
        h.app.events_on.iter().all(|&n| n > 0),
        "{:?}",
        h.app.events_on
    );

    h.stop();
    let s: Vec<Stats> = (0..LANES).map(|l| h.stats(l)).collect();
    let mut total = Stats::default();
    s.iter().for_each(|x| total.add(x));
    assert_eq!(s[0].tx_frames, 0, "lane 0 sent data: {:?}", s[0]);
    assert_eq!(total.tx_payload_bytes, h.app.tx_written as u64, "{total:?}");
    assert_eq!(
        total.rx_payload_bytes,
        h.peer.sent.len() as u64,
        "{total:?}"
    );
    assert_eq!(
        (total.dup_segments, total.dupacks, total.fast_retransmits),
        (0, 0, 0),
        "{total:?}"
    );
    assert_eq!(
        (total.exceptions, total.app_cmd_invalid),
        (0, 0),
        "{total:?}"
    );
}

/// Cores that went to sleep (with lane 1 on its own core, then with both
/// lanes on core 0) take the app's command once it kicks per the handshake
/// the lane whose ring it posted on: lane 1's (the flow's) in even rounds,
/// lane 0's in odd ones, where the forwarded activation then wakes lane
/// 1's core.
#[test]
fn sleeping_core_is_woken_by_the_apps_kick() {
    let mut h = Harness::new(4);
    let mut needed_the_kick = 0;
    for round in 0..6 {
        if round == 3 {
            h.assign(1, 0);
            h.check_held();
        }
        let lanes = &h.shared.lanes;
        let app = &h.app;
        wait_until(format!("round {round}: the cores to sleep"), || {
            lanes.iter().all(|l| l.sleeping.load(Ordering::SeqCst))
                && (0..LANES).all(|i| peer_sleeps(app.lane_flag(i)))
        });
        // Let them block in poll().
        std::thread::sleep(Duration::from_millis(20));
        assert!(lanes.iter().all(|l| l.sleeping.load(Ordering::SeqCst)));

        h.app.ring = if round % 2 == 0 { FLOW_LANE } else { 0 };
        let data = h.random_bytes(500);
        h.app.queue_send(&data);
        assert!(
            peer_sleeps(h.app.lane_flag(h.app.ring)),
            "the lane's core announced sleep: the app must kick"
        );
        // A slow app: the kick comes a little later. A core that is
        // really blocked does not take the command meanwhile.
        std::thread::sleep(Duration::from_millis(30));
        let early = h.wires[FLOW_LANE].take();
        // Still asleep unless it took the command in the round it runs
        // after announcing sleep (then no kick is needed).
        if h.app.kick_if_sleeping() && early.is_none() {
            needed_the_kick += 1;
        }
        let s = match early {
            Some(f) => parse_ours(&f),
            None => h.expect_seg(FLOW_LANE),
        };
        assert_eq!(s.payload, data);
        assert!(h.peer.take(FLOW_LANE, &s));
        // The peer's ACK wakes lane 1's core through its NIC.
        let ack = h.peer.ack();
        h.wires[FLOW_LANE].inject(&ack);
        h.settle(format!("round {round}: the ACK to reach the app"));
    }
    assert!(
        needed_the_kick > 0,
        "a sleeping core never waited for the kick: it did not really sleep"
    );
}

/// An app that announced it waits and then blocks on its eventfd is woken
/// by the core that delivers an event for it — on lane 0 and on lane 1,
/// with the cores asleep when the segment comes.
#[test]
fn sleeping_app_is_woken_by_the_cores_notification() {
    let mut h = Harness::new(5);
    for round in 0..6 {
        let lane = round % LANES;
        let data = h.random_bytes(200 + round * 10);
        let seg = h.peer.data(&data);
        let lanes = &h.shared.lanes;
        wait_until(format!("round {round}: the cores to sleep"), || {
            lanes.iter().all(|l| l.sleeping.load(Ordering::SeqCst))
        });
        let wake = &h.shm.as_ref().expect("region").app_wake;
        drain(wake.as_raw_fd());
        tas_abi::note_drained(h.app.header());
        // The app's side of the handshake: announce, look once more, block.
        announce_sleep(&h.app.header().app_waiting, true);
        assert_eq!(h.app.poll_events(), vec![]);
        assert!(!readable(wake, 0));
        let wire = &mut h.wires[lane];
        let woke = std::thread::scope(|s| {
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                wire.inject(&seg);
            });
            readable(wake, DEADLINE.as_millis() as u16)
        });
        announce_sleep(&h.app.header().app_waiting, false);
        assert!(
            woke,
            "round {round}: the app was never kicked (lost wake-up)"
        );
        drain(wake.as_raw_fd());
        tas_abi::note_drained(h.app.header());
        // The kick follows the event: it is already in lane `lane`'s ring.
        let ev = h.app.poll_events();
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].0, lane);
        assert_eq!(ev[0].1.rx_seq, h.peer.snd_nxt);
        h.settle(format!("round {round}: the ACK"));
    }
    assert_eq!(h.app.events_on, [3, 3]);

    // The per-stage counters (`tasctl stats`: lanes.*) saw it: each lane
    // woke the sleeping app once per round of its own, sent (at least)
    // those rounds' ACKs through `Nic::send`, and timed some rounds.
    h.stop();
    for (i, l) in h.shared.lanes.iter().enumerate() {
        let st = &l.stages;
        let r = Ordering::Relaxed;
        let acks = h.stats(i).acks_sent;
        assert_eq!(st.app_wakes.load(r), 3, "lane {i}");
        assert!(acks >= 3, "lane {i}: {acks} ACKs");
        assert!(
            (1..=acks).contains(&st.nic_sends.load(r)),
            "lane {i}: {} sends for {acks} ACKs",
            st.nic_sends.load(r)
        );
        let rounds = st.rounds.load(r);
        assert!(
            rounds > tas_runtime::STAGE_SAMPLE,
            "lane {i}: {rounds} rounds"
        );
        let ns: Vec<u64> = st.ns.iter().map(|a| a.load(r)).collect();
        assert!(ns[0] > 0, "lane {i}: no time in rx: {ns:?}");
        assert!(
            ns.iter().all(|v| v % tas_runtime::STAGE_SAMPLE == 0),
            "lane {i}: not whole samples: {ns:?}"
        );
    }
}

/// A core whose only work is a held ACK due in less than a millisecond,
/// where the app does not answer what it gets (one-way data), sleeps
/// until the ACK is due instead of spinning to it (its idle spin alone
/// says how long it spins), and the ACK still goes out on time. Before,
/// the sleep's millisecond timeout rounded such a deadline down to zero:
/// the core polled without pause until the ACK went out, whatever its
/// idle spin (`--idle-spin-us 0` included).
#[test]
fn a_core_sleeps_to_a_held_acks_deadline_instead_of_spinning() {
    const DELAY: Duration = Duration::from_micros(900);
    let mut h = Harness::with_ack_delay(11, DELAY.as_nanos() as u64);
    // A core starts out polling for answers (`ResponseWatch`); nobody
    // answers here, so after an epoch (20 ms) it sleeps to held ACKs.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(60) {
        let seg = h.peer.data(b"no answer");
        h.wires[FLOW_LANE].inject(&seg);
        let ack = h.expect_seg(FLOW_LANE);
        assert!(!h.peer.take(FLOW_LANE, &ack));
        h.settle("the app to read");
    }
    for round in 0..4 {
        let lanes = &h.shared.lanes;
        wait_until(format!("round {round}: the cores to sleep"), || {
            lanes.iter().all(|l| l.sleeping.load(Ordering::SeqCst))
        });
        let stages = &h.shared.lanes[FLOW_LANE].stages;
        let rounds0 = stages.rounds.load(Ordering::Relaxed);
        let data = h.random_bytes(100);
        let seg = h.peer.data(&data);
        let t0 = Instant::now();
        h.wires[FLOW_LANE].inject(&seg);
        // The app is told but does not answer: the ACK goes out alone.
        let ack = h.expect_seg(FLOW_LANE);
        let waited = t0.elapsed();
        assert!(ack.payload.is_empty(), "round {round}: {ack:?}");
        assert_eq!(
            ack.ack, h.peer.snd_nxt,
            "round {round}: the ACK covers the data"
        );
        assert!(
            waited >= DELAY - Duration::from_micros(100),
            "round {round}: the ACK was not held ({waited:?})"
        );
        // The core publishes its counters when it goes to sleep.
        wait_until(format!("round {round}: the core to sleep again"), || {
            h.shared.lanes[FLOW_LANE].sleeping.load(Ordering::SeqCst)
        });
        let rounds = h.shared.lanes[FLOW_LANE]
            .stages
            .rounds
            .load(Ordering::Relaxed)
            - rounds0;
        // Spinning through the 0.9 ms costs thousands of rounds; a core
        // that spins IDLE_SPIN (100 µs) and then sleeps to the deadline,
        // a few hundred at most.
        assert!(
            rounds < 1000,
            "round {round}: {rounds} rounds while only a held ACK was due: the core spun to it"
        );
        // A pure ACK: the peer notes it (nothing to deliver).
        assert!(!h.peer.take(FLOW_LANE, &ack));
        h.settle(format!("round {round}: the app to read"));
    }
}

/// tasd answers where a shared flow stands only once every lane has
/// applied what the other contexts had queued on its ring
/// (`FastPathShared::cmd_mark`, `cmds_applied`): when it says so, the flow
/// shows every command the app published before the mark, on lane 0's ring
/// and on lane 1's. And an app removed with commands still in its rings (a
/// spawned `sh` that writes its answer and exits at once; the process that
/// shares the connection carries on after that answer) has them applied
/// before each lane lets its ring go: before, lane 0 took at most one
/// round's worth (16) and dropped the rest.
#[test]
fn queued_commands_are_applied_before_a_mark_passes_and_before_removal() {
    let mut h = Harness::new(9);
    let shared = h.shared.clone();
    let sent = |h: &Harness| {
        let f = h.flow();
        f.tx_avail + f.tx_sent
    };
    // Published without a kick, on both lanes' rings; the mark wakes the
    // lanes.
    for i in 0..40 {
        h.app.ring = i % LANES;
        h.app.queue_send(b"a");
    }
    let mark = shared.cmd_mark();
    wait_until("every lane to apply the commands before the mark", || {
        shared.cmds_applied(APP, mark)
    });
    assert_eq!(sent(&h), 40, "applied when the mark passed");
    // Lane 1 alone (the flow's own lane): 30 more, then a mark.
    h.app.ring = FLOW_LANE;
    for _ in 0..30 {
        h.app.queue_send(b"c");
    }
    let mark = shared.cmd_mark();
    wait_until("lane 1 to apply the commands before the mark", || {
        shared.cmds_applied(APP, mark)
    });
    assert_eq!(
        sent(&h),
        70,
        "lane 1's commands applied when the mark passed"
    );
    // A mark taken now passes once each lane has run a round after it.
    let mark = shared.cmd_mark();
    assert!(
        !shared.lanes[0].cmds_applied(APP, mark + 1),
        "a mark not taken yet cannot have passed"
    );
    wait_until("a round after the third mark", || {
        shared.cmds_applied(APP, mark)
    });
    // More than a round's worth on each ring, then the app is removed at
    // once.
    for i in 0..120 {
        h.app.ring = i % LANES;
        h.app.queue_send(b"b");
    }
    let left = Arc::new(AtomicU32::new(LANES as u32));
    for l in &shared.lanes {
        assert!(l.command(CoreCmd::RemoveApp(APP, left.clone())).is_ok());
    }
    wait_until("the lanes to remove the app", || {
        left.load(Ordering::Acquire) == 0
    });
    assert_eq!(sent(&h), 190, "every queued command applied before removal");
    assert!(
        shared.cmds_applied(APP, u64::MAX - 1),
        "a removed app's rings count as drained"
    );
}

/// Back-pressure is per ring: while lane 1's core sleeps and nobody kicks
/// it, the app fills lane 1's command ring (it refuses the next command)
/// and lane 0's ring still takes commands. Once kicked, lane 1 applies
/// them all, at most `APP_CMDS_PER_ROUND` a round, and the ring has room
/// again.
#[test]
fn a_full_command_ring_holds_back_only_its_own_lane() {
    let mut h = Harness::new(12);
    let lanes = h.shared.lanes.clone();
    let app = &h.app;
    wait_until("the cores to sleep", || {
        lanes.iter().all(|l| l.sleeping.load(Ordering::SeqCst))
            && (0..LANES).all(|i| peer_sleeps(app.lane_flag(i)))
    });
    let cmd = |flow| AppCmd {
        kind: cmd::FLOW_UPDATE,
        flow,
        tx_added: 1,
        ..Default::default()
    };
    let flow = h.app.flow;
    let mut n = 0;
    while h.app.cmds[FLOW_LANE].push(cmd(flow)) {
        n += 1;
        assert!(n <= CMD_CAP, "a ring of {CMD_CAP} took more");
    }
    assert_eq!(n, CMD_CAP, "lane 1's ring is full");
    assert!(
        lanes[FLOW_LANE].sleeping.load(Ordering::SeqCst),
        "lane 1's core took commands without a kick"
    );
    // Lane 0's ring is not held back by lane 1's.
    assert!(h.app.cmds[0].push(cmd(flow)), "lane 0's ring refused");
    assert!(h.app.cmds[0].push(cmd(flow)));
    kick(h.app.lane_wakes[0]);
    kick(h.app.lane_wakes[FLOW_LANE]);
    let total = CMD_CAP + 2;
    wait_until("every command applied", || {
        let f = h.flow();
        f.tx_avail + f.tx_sent == total
    });
    // Room again.
    assert!(h.app.cmds[FLOW_LANE].push(cmd(flow)));
    kick(h.app.lane_wakes[FLOW_LANE]);
    wait_until("the last command applied", || {
        let f = h.flow();
        f.tx_avail + f.tx_sent == total + 1
    });
    h.stop();
    let r = Ordering::Relaxed;
    assert_eq!(lanes[FLOW_LANE].app_cmds.load(r), u64::from(CMD_CAP + 1));
    assert_eq!(lanes[FLOW_LANE].app_cmds_forwarded.load(r), 0);
    assert_eq!(lanes[0].app_cmds.load(r), 2);
    assert_eq!(lanes[0].app_cmds_forwarded.load(r), 2);
    assert_eq!(h.stats(0).app_cmd_invalid + h.stats(1).app_cmd_invalid, 0);
}

/// A core writes a sleeping app's eventfd once until the app has drained
/// it (`tas_abi::note_drained`): the events of later rounds meanwhile find
/// the eventfd still readable, and a core whose rounds are faster than the
/// app's wake-up wrote it again every round before. Once the app noted
/// the drain, the next event kicks again (no lost wake-up).
#[test]
fn a_core_kicks_a_sleeping_app_once_until_it_drained() {
    let mut h = Harness::new(5);
    let lane = 0;
    let wake = h.shm.as_ref().expect("region").app_wake.as_raw_fd();
    drain(wake);
    tas_abi::note_drained(h.app.header());
    announce_sleep(&h.app.header().app_waiting, true);
    assert_eq!(h.app.poll_events(), vec![]);
    // Three segments, each in a round of its own, the app asleep all along
    // and not draining.
    for round in 0..3 {
        let data = h.random_bytes(100 + round);
        let seg = h.peer.data(&data);
        h.wires[lane].inject(&seg);
        h.settle(format!("round {round}: the ACK"));
    }
    let r = Ordering::Relaxed;
    let st = &h.shared.lanes[lane].stages;
    wait_until("the counters of three rounds", || {
        st.app_wakes.load(r) + st.app_kicks_skipped.load(r) >= 3
    });
    assert_eq!(
        (st.app_wakes.load(r), st.app_kicks_skipped.load(r)),
        (1, 2),
        "one write for three rounds of events while the app did not drain"
    );
    let mut v = 0u64;
    // SAFETY: an 8-byte read into a live u64 from the non-blocking eventfd.
    let n = unsafe { libc::read(wake, &mut v as *mut u64 as *mut libc::c_void, 8) };
    assert_eq!((n, v), (8, 1), "the eventfd was written once");
    // The app drains and looks at its rings (the harness's settling took
    // the three events already).
    tas_abi::note_drained(h.app.header());
    h.app.poll_events();
    // Still asleep: the next event kicks again.
    let data = h.random_bytes(50);
    let seg = h.peer.data(&data);
    h.wires[lane].inject(&seg);
    let mut p = libc::pollfd {
        fd: wake,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    let woke = unsafe { libc::poll(&mut p, 1, DEADLINE.as_millis() as i32) } == 1;
    assert!(
        woke,
        "the app was not kicked after it drained (lost wake-up)"
    );
    announce_sleep(&h.app.header().app_waiting, false);
}
