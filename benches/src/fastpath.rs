//! Harness for `fastpath-bench`: the sans-I/O fast path driven over
//! in-memory frames, with many established flows visited in random order.
//!
//! One [`Bench`] is one scenario at one flow count. It installs `flows`
//! established flows in a [`FlowTable`] sized for them, each with its own RX
//! and TX ring (`ring` bytes each) in one [`VecMem`] region, and plays the
//! peer: it builds the frames a Linux peer would send (IPv4, TCP timestamps,
//! valid checksums) from its own per-flow state, never from the fast path's.
//!
//! Scenarios (one *unit* is what the ns and instruction counts are per):
//!
//! * [`Scenario::Rx`] — (a): a 64-byte in-order data segment in → parse,
//!   checksum verify, lookup, lock, payload into the flow's RX ring, ACK built
//!   (with its checksum) into the output batch.
//! * [`Scenario::AckTx`] — (b): a pure ACK in, acknowledging the 64-byte
//!   segment sent on the previous visit, + the app adds 64 bytes through
//!   [`FastPath::app_cmd`], which cuts the 64-byte segment at once as in
//!   tasd's lanes ([`FastPath::with_direct_tx`]; otherwise
//!   [`FastPath::poll_tx`] would).
//! * [`Scenario::Pair`] — (a) and (b) for the same flow in one visit: data
//!   in, ACK in, one `app_cmd` that frees the 64 received bytes and adds 64
//!   to send, segment out (an echo server's work per request).
//! * [`Scenario::Rpc`] — issue 15's "64 B request in + response out" as it
//!   is on the wire of a ping-pong with a Linux peer: the request carries
//!   the ACK of the previous response (Linux delays its ACK and the next
//!   request takes it: `tcpdump` of `sockperf ping-pong` against tasd
//!   showed 3 pure ACKs from the client for 7,436 requests), one `app_cmd`
//!   frees it and adds the response, which carries the request's ACK.
//!
//! Work is done the way a poll loop does it: in batches of [`BATCH`] visits
//! (the output [`FrameBatch`] is reused and cleared after every batch,
//! pending app notifications are flushed into a fake context queue after
//! every batch, `poll_tx` runs once per batch with the batch size as budget,
//! for whatever the app commands left queued). The flow table's arrays are
//! advised for huge pages as tasd does (`tas_runtime::huge::flow_table`);
//! the ring region only where the kernel gives shared memory huge pages
//! (as tasd's app regions get them) or with `Setup::thp`, or on reserved
//! hugetlbfs pages as tasd's app regions with `--huge-pages auto` when
//! enough are free (`Setup::hugetlb`).
//! Flows whose next segment depends on the previous one being sent (TX
//! scenarios) never appear twice in one batch, so with fewer than
//! [`BATCH`] flows a batch is the flow count.
//!
//! Timing: the peer prepares a *chunk* of up to [`CHUNK`] visits (frames
//! built into a small buffer, as a NIC would have DMA'd them), then only
//! [`tas_bench_measured`] runs under the clock. Between chunks, outside the
//! clock, the app side of scenario (a) frees the RX bytes it received. So
//! the per-packet path timed is the real one, and nothing untimed touches
//! the fast path's per-flow state right before it is measured (the peer's
//! state lives in separate arrays): with 64K flows the flow state, the index
//! and the rings really come from far away.
//!
//! `tas_bench_measured` is `#[inline(never)]` with a distinctive name so that
//! `valgrind --tool=callgrind --collect-atstart=no
//! --toggle-collect='*tas_bench_measured*'` counts exactly the measured work.

use std::sync::Arc;
use std::time::Instant;
use tas_abi::{cmd, AppCmd, AppEvent, VecMem};
use tas_engine::engine::{ts_now, Config, Exception, FastPath, Output, Stats};
use tas_engine::flow::{cfg, FlowState};
use tas_engine::flowtable::{FlowGuard, FlowId, FlowTable};
use tas_engine::wire::{frame, ipv4, tcp};
use tas_nic::FrameBatch;
use tas_testkit::Rng;

/// Payload bytes per data segment, in and out.
pub const PAYLOAD: usize = 64;
/// Visits per poll-loop batch (output batch cleared, notifications flushed).
pub const BATCH: usize = 32;
/// Most visits prepared and timed at once.
pub const CHUNK: usize = 256;
/// Default per-flow RX and TX ring size.
pub const DEFAULT_RING: u32 = 4096;
/// Simulated time between visits (ns); `now` is constant within a chunk.
const NS_PER_VISIT: u64 = 100;
/// Bytes reserved per input frame in a chunk.
const STRIDE: usize = 256;

/// 198.18.0.1 (benchmarking range; these frames never leave memory anyway).
pub use tas_testkit::addr::{A_IP4 as LOCAL_IP, A_MAC as LOCAL_MAC, B_MAC as PEER_MAC};
pub const LOCAL_PORT: u16 = 7777;
/// The peer announces `PEER_WINDOW << WSCALE` = 64 KiB.
const PEER_WINDOW: u16 = 512;
const WSCALE: u8 = 7;
const MSS: u16 = 1448;

/// What one measured unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// (a) 64-byte data segment in → RX ring + ACK out.
    Rx,
    /// (b) ACK in + 64-byte segment out.
    AckTx,
    /// (a) + (b) on the same flow in one visit.
    Pair,
    /// A request that acknowledges the previous response in, the response
    /// out: one frame each way.
    Rpc,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [Scenario::Rx, Scenario::AckTx, Scenario::Pair, Scenario::Rpc];

    /// Name on the command line (`--callgrind MODE`).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Rx => "rx",
            Scenario::AckTx => "ack_tx",
            Scenario::Pair => "pair",
            Scenario::Rpc => "rpc",
        }
    }

    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Row label in the tables.
    pub fn label(self) -> &'static str {
        match self {
            Scenario::Rx => "(a) data in -> RX ring + ACK out",
            Scenario::AckTx => "(b) ACK in + 64 B segment out",
            Scenario::Pair => "(a)+(b) pair, one visit",
            Scenario::Rpc => "request (with ACK) in + response out",
        }
    }

    /// Frames received per unit.
    pub fn frames_in(self) -> u64 {
        match self {
            Scenario::Rx | Scenario::AckTx | Scenario::Rpc => 1,
            Scenario::Pair => 2,
        }
    }

    /// Most frames sent per unit (an ACK for each data segment and the
    /// segment); with ACKs held (tasd's default) the pair's ACK rides on
    /// its response, and the segments of a flow in one batch (one poll
    /// round) share one ACK.
    pub fn frames_out(self) -> u64 {
        self.frames_in()
    }

    /// Fewest frames `units` units may send: the segments, and for data
    /// without a response at least one ACK per batch (a flow's in-order
    /// segments of one poll round share one ACK).
    pub fn min_frames_out(self, units: u64) -> u64 {
        match self {
            Scenario::Rx => units.div_ceil(BATCH as u64),
            Scenario::AckTx | Scenario::Pair | Scenario::Rpc => units,
        }
    }

    fn sends(self) -> bool {
        self != Scenario::Rx
    }
}

/// How to build a [`Bench`].
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub scenario: Scenario,
    pub flows: usize,
    /// Bytes of each flow's RX ring and of its TX ring.
    pub ring: u32,
    /// Seeds the visit order and the initial sequence numbers.
    pub seed: u64,
    /// `madvise(MADV_HUGEPAGE)` on the payload region (fewer TLB misses).
    /// Default: as tasd's app regions get them, i.e. when the kernel gives
    /// shared memory huge pages (`tas_runtime::huge::shared_allowed`).
    pub thp: bool,
    /// The flow table's arrays advised for huge pages as tasd does
    /// (`tas_runtime::huge::flow_table`; default on).
    pub huge_table: bool,
    /// The ring region's whole 2 MiB pages on reserved hugetlbfs pages
    /// (`tas_runtime::huge::hugetlb_memfd`, as tasd's app regions with
    /// `--huge-pages auto`); [`Bench::new`] fails when too few are free
    /// ([`hugetlb_pages`] tells how many it needs).
    pub hugetlb: bool,
}

impl Setup {
    pub fn new(scenario: Scenario, flows: usize) -> Setup {
        Setup {
            scenario,
            flows,
            ring: DEFAULT_RING,
            seed: 0x7a5_f1a5,
            thp: tas_runtime::huge::shared_allowed(),
            huge_table: true,
            hugetlb: false,
        }
    }
}

/// Result of [`Bench::run`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Units measured.
    pub units: u64,
    /// Wall-clock ns spent inside [`tas_bench_measured`].
    pub nanos: u64,
    /// Frames handed to [`FastPath::rx`] under the clock.
    pub frames_in: u64,
    /// Frames the fast path produced under the clock.
    pub frames_out: u64,
    /// App notifications delivered under the clock.
    pub events: u64,
}

impl RunStats {
    pub fn ns_per_unit(&self) -> f64 {
        if self.units == 0 {
            return f64::NAN;
        }
        self.nanos as f64 / self.units as f64
    }
}

/// The peer's IPv4 address for flow index `fi` (198.19.x.y).
pub fn peer_ip(fi: usize) -> u32 {
    0xC613_0000 | (fi as u32 & 0xffff)
}

/// The peer's port for flow index `fi`.
pub fn peer_port(fi: usize) -> u16 {
    10_000 + (fi >> 16) as u16
}

/// Flow index from the peer's address and port (inverse of the two above).
pub fn flow_index(ip: u32, port: u16) -> Option<usize> {
    if ip & 0xffff_0000 != 0xC613_0000 || port < 10_000 {
        return None;
    }
    Some((ip & 0xffff) as usize | ((port - 10_000) as usize) << 16)
}

/// The byte the peer sends at sequence number `seq` of flow `fi`.
pub fn rx_byte(fi: usize, seq: u32) -> u8 {
    (seq.wrapping_mul(0x9E37_79B1) >> 24) as u8 ^ fi as u8 ^ (fi >> 8) as u8
}

/// Byte `k` of the TX pattern template.
fn tx_template(k: usize) -> u8 {
    (k as u32).wrapping_mul(0x85EB_CA6B).rotate_right(13) as u8
}

/// The byte at position `pos` of flow `fi`'s TX ring (filled at setup; the
/// app "adds" bytes that are already there).
pub fn tx_byte(fi: usize, pos: u32, ring: u32) -> u8 {
    tx_template((13 * fi) % ring as usize + pos as usize)
}

/// The fast path's [`Output`]: a reused [`FrameBatch`], cleared after every
/// batch of visits. Exceptions are only counted (the benchmark expects none).
pub struct BatchOut {
    pub batch: FrameBatch,
    /// Frames produced and cleared so far.
    pub frames: u64,
    pub exceptions: u64,
    pub last_exception: Option<Exception>,
}

impl BatchOut {
    pub fn new(capacity: usize) -> BatchOut {
        BatchOut {
            batch: FrameBatch::new(capacity),
            frames: 0,
            exceptions: 0,
            last_exception: None,
        }
    }
}

impl Output for BatchOut {
    #[inline(always)]
    fn tx_buf(&mut self) -> Option<&mut [u8]> {
        self.batch.slot()
    }
    #[inline(always)]
    fn tx_commit(&mut self, len: usize) {
        self.batch.commit(len)
    }

    #[cold]
    fn exception(&mut self, reason: Exception, _flow: Option<FlowId>, _frame: &[u8]) {
        self.exceptions += 1;
        self.last_exception = Some(reason);
    }
    fn forward(&mut self, lane: u16, id: FlowId) {
        panic!("single-lane engine forwarded flow {id} to lane {lane}");
    }
}

/// A stand-in for an app context queue: notifications are copied into a
/// small ring (as the real queue would copy 32-byte entries) and counted.
pub struct EventSink {
    ring: Box<[AppEvent; 64]>,
    pub delivered: u64,
}

impl EventSink {
    fn new() -> EventSink {
        EventSink {
            ring: Box::new([AppEvent::default(); 64]),
            delivered: 0,
        }
    }

    #[inline]
    fn push(&mut self, _ctx: u16, ev: &AppEvent) -> bool {
        self.ring[(self.delivered & 63) as usize] = *ev;
        self.delivered += 1;
        true
    }

    /// The most recent notification.
    pub fn last(&self) -> Option<AppEvent> {
        self.delivered
            .checked_sub(1)
            .map(|i| self.ring[(i & 63) as usize])
    }
}

/// Frames prepared by the peer for one timed chunk.
pub struct Chunk {
    buf: Vec<u8>,
    lens: Vec<u16>,
    /// Flow id of every visit (what the app knows when it issues app_cmd).
    visits: Vec<FlowId>,
    /// Visit counts at which batches end (cumulative, last == visits.len()).
    batch_ends: Vec<u32>,
}

impl Chunk {
    fn new(frames: usize) -> Chunk {
        Chunk {
            buf: vec![0u8; frames * STRIDE],
            lens: Vec::with_capacity(frames),
            visits: Vec::with_capacity(frames),
            batch_ends: Vec::with_capacity(frames),
        }
    }

    fn clear(&mut self) {
        self.lens.clear();
        self.visits.clear();
        self.batch_ends.clear();
    }

    /// Every frame of the chunk, as the runtime gets a received batch (a
    /// slice of frame slices: `Nic::recv_in_place`). Built outside the
    /// measured loop.
    fn slices(&self) -> Vec<&[u8]> {
        self.buf
            .chunks_exact(STRIDE)
            .zip(&self.lens)
            .map(|(b, &n)| &b[..n as usize])
            .collect()
    }

    fn push_frame(&mut self, build: impl FnOnce(&mut [u8]) -> usize) {
        let k = self.lens.len();
        let n = build(&mut self.buf[k * STRIDE..(k + 1) * STRIDE]);
        self.lens.push(n as u16);
    }
}

/// Inspects every output batch before it is cleared (smoke tests only).
pub type Checker<'a> = &'a mut dyn FnMut(&FrameBatch);

/// The measured work for one chunk: every call inside happens under the
/// clock (and, under callgrind, with collection on). Not generic, never
/// inlined, so its symbol is easy to find.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
pub fn tas_bench_measured(
    fp: &mut FastPath,
    mem: &mut VecMem,
    out: &mut BatchOut,
    events: &mut EventSink,
    chunk: &Chunk,
    frames: &[&[u8]],
    scenario: Scenario,
    now: u64,
    check: Option<Checker<'_>>,
) {
    run_chunk(fp, mem, out, events, chunk, frames, scenario, now, check)
}

/// One loop per scenario, as the runtime has one loop per kind of work:
/// no scenario test per visit, and no register shared with the code of the
/// other scenarios. Warm-up runs the same loops.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn run_chunk(
    fp: &mut FastPath,
    mem: &mut VecMem,
    out: &mut BatchOut,
    events: &mut EventSink,
    chunk: &Chunk,
    frames: &[&[u8]],
    scenario: Scenario,
    now: u64,
    check: Option<Checker<'_>>,
) {
    match scenario {
        Scenario::Rx => {
            measured_loop::<{ Scenario::Rx as u8 }>(fp, mem, out, events, chunk, frames, now, check)
        }
        Scenario::AckTx => measured_loop::<{ Scenario::AckTx as u8 }>(
            fp, mem, out, events, chunk, frames, now, check,
        ),
        Scenario::Pair => measured_loop::<{ Scenario::Pair as u8 }>(
            fp, mem, out, events, chunk, frames, now, check,
        ),
        Scenario::Rpc => measured_loop::<{ Scenario::Rpc as u8 }>(
            fp, mem, out, events, chunk, frames, now, check,
        ),
    }
}

/// [`tas_bench_measured`] for one scenario (`S` is `Scenario as u8`).
/// (Its name must not match callgrind's `--toggle-collect` pattern: a
/// matching callee would switch collection off again.)
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn measured_loop<const S: u8>(
    fp: &mut FastPath,
    mem: &mut VecMem,
    out: &mut BatchOut,
    events: &mut EventSink,
    chunk: &Chunk,
    frames: &[&[u8]],
    now: u64,
    check: Option<Checker<'_>>,
) {
    let scenario = Scenario::ALL[S as usize];
    chunk_body(fp, mem, out, events, chunk, frames, scenario, now, check)
}

/// The same work during warm-up, under another name, so that callgrind's
/// `--toggle-collect='*tas_bench_measured*'` leaves the warm-up out. (The
/// `black_box` makes its code differ: rustc merges identical functions.)
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn bench_warm_up_chunk(
    fp: &mut FastPath,
    mem: &mut VecMem,
    out: &mut BatchOut,
    events: &mut EventSink,
    chunk: &Chunk,
    frames: &[&[u8]],
    scenario: Scenario,
    now: u64,
    check: Option<Checker<'_>>,
) {
    std::hint::black_box(now);
    run_chunk(fp, mem, out, events, chunk, frames, scenario, now, check)
}

/// The app's answer to what a visit brought: it frees the `rx_freed`
/// request bytes it read and adds 64 bytes to send. Refusals are counted in
/// `fp.stats.app_cmd_invalid`.
#[inline(always)]
fn respond(
    fp: &mut FastPath,
    flow: FlowId,
    rx_freed: usize,
    now: u64,
    mem: &VecMem,
    out: &mut BatchOut,
) {
    let c = AppCmd {
        kind: cmd::FLOW_UPDATE,
        flow,
        tx_added: PAYLOAD as u32,
        rx_freed: rx_freed as u32,
        ..Default::default()
    };
    // Opaque, as a command read from an app's queue is: should `app_cmd`
    // be inlined here, its checks must not fold away on these constants.
    let _ = fp.app_cmd(0, std::hint::black_box(&c), now, mem, out);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn chunk_body(
    fp: &mut FastPath,
    mem: &mut VecMem,
    out: &mut BatchOut,
    events: &mut EventSink,
    chunk: &Chunk,
    frames: &[&[u8]],
    scenario: Scenario,
    now: u64,
    mut check: Option<Checker<'_>>,
) {
    let mut v = 0usize;
    for &end in &chunk.batch_ends {
        let end = end as usize;
        let n = end - v;
        // The batch's frames as the runtime's receive loop has them.
        let batch = match scenario {
            Scenario::Pair => &frames[2 * v..2 * end],
            _ => &frames[v..end],
        };
        fp.prefetch(batch.iter().copied(), mem);
        if scenario == Scenario::Pair {
            for (&flow, ab) in chunk.visits[v..end].iter().zip(batch.chunks_exact(2)) {
                fp.rx_inline(ab[0], now, mem, out);
                fp.rx_inline(ab[1], now, mem, out);
                respond(fp, flow, PAYLOAD, now, mem, out);
            }
        } else {
            for (&flow, &f) in chunk.visits[v..end].iter().zip(batch) {
                fp.rx_inline(f, now, mem, out);
                match scenario {
                    Scenario::Rx => {}
                    Scenario::AckTx => respond(fp, flow, 0, now, mem, out),
                    _ => respond(fp, flow, PAYLOAD, now, mem, out),
                }
            }
        }
        v = end;
        if scenario.sends() {
            fp.poll_tx(now, n, mem, out);
        }
        // Held ACKs that no response carried go out alone, as if their
        // delay ended before the flow's next segment (the worst case: every
        // ACK is still sent, after the cost of holding it).
        fp.flush_acks(now, true, mem, out);
        fp.flush_notifications(|ctx, ev| events.push(ctx, ev));
        out.frames += out.batch.len() as u64;
        if let Some(c) = check.as_mut() {
            c(&out.batch);
        }
        out.batch.clear();
    }
}

/// The peer's view of one flow.
#[derive(Debug, Clone, Copy, Default)]
struct Peer {
    /// Next sequence number the peer sends (our RCV.NXT once delivered).
    seq: u32,
    /// Our data the peer has acknowledged (our SND.UNA once delivered).
    acked: u32,
}

/// One scenario at one flow count: flows installed, peer ready.
pub struct Bench {
    pub setup: Setup,
    fp: FastPath,
    /// Dropped before `mem`, whose pages it replaced.
    _hugetlb: Option<HugetlbRings>,
    mem: VecMem,
    out: BatchOut,
    events: EventSink,
    ids: Vec<FlowId>,
    order: Vec<u32>,
    cursor: usize,
    peer: Vec<Peer>,
    irs: Vec<u32>,
    iss: Vec<u32>,
    tx_start: Vec<u32>,
    chunk: Chunk,
    now: u64,
    peer_ts: u32,
    batch: usize,
    chunk_max: usize,
    /// RX bytes the app has not freed yet (scenario (a), freed between chunks).
    to_free: Vec<(FlowId, u32)>,
}

impl Bench {
    /// Installs the flows. Errors if the rings do not fit one region.
    pub fn new(setup: Setup) -> Result<Bench, String> {
        let flows = setup.flows;
        let ring = setup.ring;
        if flows == 0 {
            return Err("need at least one flow".into());
        }
        if ring < 4 * PAYLOAD as u32 {
            return Err(format!("ring must be at least {} bytes", 4 * PAYLOAD));
        }
        // Rings start 2 MiB-aligned in memory (as in a page-aligned shared
        // mapping; 2 MiB so --thp can use huge pages from the first ring):
        // `VecMem`'s heap vector itself is only 16-byte aligned, which
        // would make every 64-byte ring access straddle two cache lines.
        const ALIGN: u64 = 2 << 20;
        let region = region_len(flows, ring, setup.hugetlb);
        if region > u32::MAX as u64 {
            return Err(format!(
                "{flows} flows x 2 x {ring} B rings = {region} B does not fit a 4 GiB region"
            ));
        }
        let table = Arc::new(if setup.huge_table {
            tas_runtime::huge::flow_table(flows)
        } else {
            FlowTable::new(flows)
        });
        let fp = FastPath::new(
            Arc::clone(&table),
            Config {
                local_mac: LOCAL_MAC,
                ttl: 64,
                any_mac: false,
                // tasd's default: an ACK waits up to 40 µs for a response.
                ack_delay_ns: 40_000,
            },
        )
        // As tasd's lanes: an app command cuts its segment at once.
        .with_direct_tx(true);
        let mut mem = VecMem::new(1, region as usize);
        let addr = mem.regions[0].as_ptr() as u64;
        let pad = ((ALIGN - addr % ALIGN) % ALIGN) as u32;
        let hugetlb = if setup.hugetlb {
            Some(HugetlbRings::over(&mut mem.regions[0])?)
        } else {
            if setup.thp {
                advise_huge(&mut mem.regions[0][pad as usize..]);
            }
            None
        };
        let mut rng = Rng::new(setup.seed);
        let mut ids = Vec::with_capacity(flows);
        let mut irs = Vec::with_capacity(flows);
        let mut iss = Vec::with_capacity(flows);
        let mut peer = Vec::with_capacity(flows);
        let mut tx_start = Vec::with_capacity(flows);
        for fi in 0..flows {
            let r = rng.next_u64();
            // Initial sequence numbers, some close to wrapping.
            let (i_rs, i_ss) = (r as u32, (r >> 32) as u32);
            // Random line-aligned start positions in the rings: flows do not
            // advance in lockstep, and rings at power-of-two strides must
            // not all be written at the same offset (that would map every
            // visit of a round to the same cache sets).
            let lines = (ring as usize / PAYLOAD) as u32;
            let rx_start = rng.below(lines as usize) as u32 * PAYLOAD as u32;
            let tx_pos0 = rng.below(lines as usize) as u32 * PAYLOAD as u32;
            let base = pad + fi as u32 * 2 * ring;
            let st = FlowState {
                opaque: fi as u64,
                local_ip: LOCAL_IP,
                remote_ip: peer_ip(fi),
                local_port: LOCAL_PORT,
                remote_port: peer_port(fi),
                remote_mac: PEER_MAC,
                context: 0,
                mem: 0,
                group: 0,
                cfg: cfg::TS | cfg::SACK,
                mss: MSS,
                snd_wscale: WSCALE,
                rcv_wscale: WSCALE,
                rx_base: base,
                rx_len: ring,
                tx_base: base + ring,
                tx_len: ring,
                rx_avail: ring,
                rx_next_pos: rx_start,
                rx_next_seq: i_rs,
                rx_remote_avail: (PEER_WINDOW as u32) << WSCALE,
                tx_next_pos: tx_pos0,
                tx_next_seq: i_ss,
                ..Default::default()
            };
            let id = table
                .insert(st)
                .map_err(|e| format!("installing flow {fi}: {e}"))?;
            ids.push(id);
            irs.push(i_rs);
            iss.push(i_ss);
            tx_start.push(tx_pos0);
            peer.push(Peer {
                seq: i_rs,
                acked: i_ss,
            });
        }
        if setup.scenario.sends() {
            let len = ring as usize;
            let template: Vec<u8> = (0..2 * len).map(tx_template).collect();
            let r = &mut mem.regions[0];
            for fi in 0..flows {
                // Flow fi's TX ring is the template from (13 fi mod len) on:
                // see `tx_byte`.
                let off = pad as usize + (fi * 2 + 1) * len;
                let shift = (13 * fi) % len;
                r[off..off + len].copy_from_slice(&template[shift..shift + len]);
            }
        }
        let order = rng.permutation(flows);
        let batch = if setup.scenario.sends() {
            BATCH.min(flows)
        } else {
            BATCH
        };
        // Scenario (a) frees RX space only between chunks: at most half a
        // ring per flow per chunk.
        let per_flow = (ring as usize / PAYLOAD / 2).max(1);
        let chunk_max = CHUNK.min(flows.saturating_mul(per_flow));
        let frames = chunk_max * setup.scenario.frames_in() as usize;
        let mut b = Bench {
            setup,
            fp,
            _hugetlb: hugetlb,
            mem,
            out: BatchOut::new(2 * BATCH),
            events: EventSink::new(),
            ids,
            order,
            cursor: 0,
            peer,
            irs,
            iss,
            tx_start,
            chunk: Chunk::new(frames),
            now: 1_000_000_000,
            peer_ts: 1,
            batch,
            chunk_max,
            to_free: Vec::with_capacity(chunk_max),
        };
        if setup.scenario.sends() {
            b.send_initial_segments();
        }
        Ok(b)
    }

    /// Puts one 64-byte segment in flight on every flow (not measured), so
    /// that each visit of scenario (b) has something to acknowledge.
    fn send_initial_segments(&mut self) {
        for group in self.ids.chunks(BATCH) {
            for &id in group {
                let c = AppCmd {
                    kind: cmd::FLOW_UPDATE,
                    flow: id,
                    tx_added: PAYLOAD as u32,
                    ..Default::default()
                };
                let _ = self.fp.app_cmd(0, &c, self.now, &self.mem, &mut self.out);
            }
            self.fp
                .poll_tx(self.now, group.len(), &self.mem, &mut self.out);
            self.out.batch.clear();
        }
    }

    /// Number of flows (flow indices `fi` are `0..flows()`).
    pub fn flows(&self) -> usize {
        self.ids.len()
    }

    /// Visits per batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Visits per timed chunk (at most).
    pub fn chunk_len(&self) -> usize {
        self.chunk_max
    }

    /// The fast path's counters.
    pub fn stats(&self) -> Stats {
        self.fp.stats
    }

    pub fn exceptions(&self) -> (u64, Option<Exception>) {
        (self.out.exceptions, self.out.last_exception)
    }

    /// The events sink (notifications the fast path delivered).
    pub fn events(&self) -> &EventSink {
        &self.events
    }

    /// Peer's initial sequence number of flow `fi` (our IRS).
    pub fn irs(&self, fi: usize) -> u32 {
        self.irs[fi]
    }

    /// Our initial sequence number of flow `fi`.
    pub fn iss(&self, fi: usize) -> u32 {
        self.iss[fi]
    }

    /// Position in flow `fi`'s TX ring of our byte with sequence `seq`.
    pub fn tx_pos(&self, fi: usize, seq: u32) -> u32 {
        let ring = self.setup.ring;
        ((self.tx_start[fi] as u64 + seq.wrapping_sub(self.iss[fi]) as u64) % ring as u64) as u32
    }

    /// Next sequence number the peer will send on flow `fi`.
    pub fn peer_seq(&self, fi: usize) -> u32 {
        self.peer[fi].seq
    }

    /// How far the peer has acknowledged our data on flow `fi`.
    pub fn peer_acked(&self, fi: usize) -> u32 {
        self.peer[fi].acked
    }

    /// Locks flow `fi` (tests: inspect its state).
    pub fn lock(&self, fi: usize) -> Option<FlowGuard<'_>> {
        self.fp.table().lock(self.ids[fi])
    }

    /// Payload memory (tests: inspect the rings).
    pub fn mem(&self) -> &VecMem {
        &self.mem
    }

    /// One warm-up pass: every flow visited at least twice, page faults
    /// taken, caches and branch predictors in steady state. Not reported.
    pub fn warm_up(&mut self) -> RunStats {
        let n = (2 * self.flows()).max(4 * CHUNK);
        self.run_inner(n as u64, None, true)
    }

    /// Measures `units` visits (exactly), in chunks.
    pub fn run(&mut self, units: u64, check: Option<Checker<'_>>) -> RunStats {
        self.run_inner(units, check, false)
    }

    fn run_inner(&mut self, units: u64, mut check: Option<Checker<'_>>, warm: bool) -> RunStats {
        let f = if warm {
            bench_warm_up_chunk
        } else {
            tas_bench_measured
        };
        let mut rs = RunStats::default();
        let frames0 = self.out.frames;
        let events0 = self.events.delivered;
        let mut left = units;
        while left > 0 {
            let n = (left as usize).min(self.chunk_max);
            self.prepare(n);
            let frames = self.chunk.slices();
            let t = Instant::now();
            f(
                &mut self.fp,
                &mut self.mem,
                &mut self.out,
                &mut self.events,
                &self.chunk,
                &frames,
                self.setup.scenario,
                self.now,
                check.as_mut().map(|c| &mut **c as Checker<'_>),
            );
            rs.nanos += t.elapsed().as_nanos() as u64;
            self.after_chunk();
            self.now += n as u64 * NS_PER_VISIT;
            left -= n as u64;
        }
        rs.units = units;
        rs.frames_in = units * self.setup.scenario.frames_in();
        rs.frames_out = self.out.frames - frames0;
        rs.events = self.events.delivered - events0;
        rs
    }

    /// The peer builds the frames of the next `visits` visits.
    fn prepare(&mut self, visits: usize) {
        self.chunk.clear();
        let flows = self.flows();
        let sends = self.setup.scenario.sends();
        let mut v = 0;
        while v < visits {
            // A TX batch never holds a flow twice (its ACK would acknowledge
            // a segment not sent yet), so it ends where the order wraps.
            let room = if sends {
                self.batch.min(flows - self.cursor)
            } else {
                self.batch
            };
            let n = room.min(visits - v);
            for _ in 0..n {
                let fi = self.order[self.cursor] as usize;
                self.cursor += 1;
                if self.cursor == flows {
                    self.cursor = 0;
                }
                self.visit(fi);
            }
            v += n;
            self.chunk.batch_ends.push(v as u32);
        }
    }

    /// The peer's frames for one visit of flow `fi`.
    fn visit(&mut self, fi: usize) {
        let ecr = ts_now(self.now).wrapping_sub(10).max(1);
        let p = self.peer[fi];
        match self.setup.scenario {
            Scenario::Rx => {
                self.data_frame(fi, p.seq, p.acked, ecr);
                self.peer[fi].seq = p.seq.wrapping_add(PAYLOAD as u32);
            }
            Scenario::AckTx => {
                let ack = p.acked.wrapping_add(PAYLOAD as u32);
                self.ack_frame(fi, p.seq, ack, ecr);
                self.peer[fi].acked = ack;
            }
            Scenario::Rpc => {
                let ack = p.acked.wrapping_add(PAYLOAD as u32);
                self.data_frame(fi, p.seq, ack, ecr);
                let seq = p.seq.wrapping_add(PAYLOAD as u32);
                self.peer[fi] = Peer { seq, acked: ack };
            }
            Scenario::Pair => {
                self.data_frame(fi, p.seq, p.acked, ecr);
                let seq = p.seq.wrapping_add(PAYLOAD as u32);
                let ack = p.acked.wrapping_add(PAYLOAD as u32);
                self.ack_frame(fi, seq, ack, ecr);
                self.peer[fi] = Peer { seq, acked: ack };
            }
        }
        self.chunk.visits.push(self.ids[fi]);
    }

    fn hdr(fi: usize) -> frame::FrameHdr {
        frame::FrameHdr {
            src_mac: PEER_MAC,
            dst_mac: LOCAL_MAC,
            src_ip: peer_ip(fi),
            dst_ip: LOCAL_IP,
            ttl: 64,
            ecn: ipv4::ECN_NOT_ECT,
            ident: 0,
        }
    }

    fn repr(&mut self, fi: usize, seq: u32, ack: u32, flags: u8, ecr: u32) -> tcp::TcpRepr {
        self.peer_ts = self.peer_ts.wrapping_add(1);
        tcp::TcpRepr {
            src_port: peer_port(fi),
            dst_port: LOCAL_PORT,
            seq,
            ack,
            flags,
            window: PEER_WINDOW,
            options: tcp::TcpOptions {
                timestamp: Some((self.peer_ts, ecr)),
                ..Default::default()
            },
        }
    }

    fn data_frame(&mut self, fi: usize, seq: u32, ack: u32, ecr: u32) {
        let t = self.repr(fi, seq, ack, tcp::ACK | tcp::PSH, ecr);
        let mut payload = [0u8; PAYLOAD];
        for (k, b) in payload.iter_mut().enumerate() {
            *b = rx_byte(fi, seq.wrapping_add(k as u32));
        }
        let h = Self::hdr(fi);
        self.chunk.push_frame(|buf| {
            frame::tcp_frame(buf, &h, &t, &payload).expect("frame fits its slot")
        });
    }

    fn ack_frame(&mut self, fi: usize, seq: u32, ack: u32, ecr: u32) {
        let t = self.repr(fi, seq, ack, tcp::ACK, ecr);
        let h = Self::hdr(fi);
        self.chunk
            .push_frame(|buf| frame::tcp_frame(buf, &h, &t, &[]).expect("frame fits its slot"));
    }

    /// Outside the clock: the app of scenario (a) consumes what it received.
    fn after_chunk(&mut self) {
        if self.setup.scenario != Scenario::Rx {
            return;
        }
        // Coalesce per flow (with few flows one flow appears many times).
        self.to_free.clear();
        for &id in &self.chunk.visits {
            match self.to_free.iter_mut().rev().take(4).find(|e| e.0 == id) {
                Some(e) => e.1 += PAYLOAD as u32,
                None => self.to_free.push((id, PAYLOAD as u32)),
            }
        }
        for &(flow, n) in &self.to_free {
            let c = AppCmd {
                kind: cmd::FLOW_UPDATE,
                flow,
                rx_freed: n,
                ..Default::default()
            };
            let _ = self.fp.app_cmd(0, &c, self.now, &self.mem, &mut self.out);
        }
        // Window updates the frees may have caused are not measured.
        self.out.batch.clear();
    }

    /// Checks every flow against the peer's view: all data the peer sent is
    /// in order in the RX ring (the last `ring` bytes compared byte by byte),
    /// everything we sent was acknowledged and the next segment is in
    /// flight, and nothing went to the slow path.
    pub fn verify(&self) -> Result<(), String> {
        let s = self.fp.stats;
        if self.out.exceptions != 0 || s.exceptions != 0 {
            return Err(format!(
                "{} exceptions (last {:?})",
                s.exceptions, self.out.last_exception
            ));
        }
        let bad = [
            ("tx_full", s.tx_full),
            ("mem_errors", s.mem_errors),
            ("app_cmd_invalid", s.app_cmd_invalid),
            ("dup_segments", s.dup_segments),
            ("ooo_accepted", s.ooo_accepted),
            ("ooo_dropped", s.ooo_dropped),
            ("window_trimmed", s.window_trimmed),
            ("dupacks", s.dupacks),
            ("future_acks", s.future_acks),
            ("seq_unacceptable", s.seq_unacceptable),
            ("ooo_intervals_full", s.ooo_intervals_full),
            ("dsack_sent", s.dsack_sent),
            ("acks_too_old", s.acks_too_old),
            ("rexmit_segments", s.rexmit_segments),
            ("fast_retransmits", s.fast_retransmits),
            ("bad_checksum", s.bad_checksum),
        ];
        for (name, v) in bad {
            if v != 0 {
                return Err(format!("fast path counter {name} = {v}"));
            }
        }
        let ring = self.setup.ring;
        let region = &self.mem.regions[0];
        for fi in 0..self.flows() {
            let f = self.lock(fi).ok_or_else(|| format!("flow {fi} gone"))?;
            let p = self.peer[fi];
            let (rx_next_seq, rx_next_pos, rx_base) = (f.rx_next_seq, f.rx_next_pos, f.rx_base);
            let (una, nxt) = (f.snd_una(), f.tx_next_seq);
            drop(f);
            if rx_next_seq != p.seq {
                return Err(format!(
                    "flow {fi}: RCV.NXT {rx_next_seq:#x}, peer sent up to {:#x}",
                    p.seq
                ));
            }
            if self.setup.scenario.sends() {
                let want_nxt = p.acked.wrapping_add(PAYLOAD as u32);
                if una != p.acked || nxt != want_nxt {
                    return Err(format!(
                        "flow {fi}: SND.UNA {una:#x} SND.NXT {nxt:#x}, want {:#x} {want_nxt:#x}",
                        p.acked
                    ));
                }
            }
            let received = p.seq.wrapping_sub(self.irs[fi]);
            for d in 1..=received.min(ring) {
                let pos = (rx_next_pos + ring - d) % ring;
                let seq = rx_next_seq.wrapping_sub(d);
                let got = region[(rx_base + pos) as usize];
                if got != rx_byte(fi, seq) {
                    return Err(format!(
                        "flow {fi}: RX ring byte at pos {pos} (seq {seq:#x}) is {got:#x}, want {:#x}",
                        rx_byte(fi, seq)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Bytes of the ring region for `flows` flows with `ring`-byte rings:
/// their RX and TX rings (for `hugetlb`, whole 2 MiB pages of them) and
/// 2 MiB to align the first at a huge page.
pub(crate) fn region_len(flows: usize, ring: u32, hugetlb: bool) -> u64 {
    const HUGE: u64 = 2 << 20;
    let rings = flows as u64 * 2 * ring as u64;
    let rings = if hugetlb {
        rings.div_ceil(HUGE) * HUGE
    } else {
        rings
    };
    rings + HUGE
}

/// The 2 MiB hugetlbfs pages [`Setup::hugetlb`] needs for `flows` flows
/// with `ring`-byte rings (at most the whole huge pages of the region).
pub fn hugetlb_pages(flows: usize, ring: u32) -> u64 {
    region_len(flows, ring, true) / (2 << 20)
}

/// The whole 2 MiB pages of the ring region remapped onto a hugetlbfs
/// memfd (shared, its pages reserved), as tasd's app regions are with
/// `--huge-pages auto`. The region stays a `VecMem` (the harness and the
/// fast path's accesses are unchanged); on drop anonymous memory is mapped
/// back before the vector is freed.
pub(crate) struct HugetlbRings {
    addr: usize,
    len: usize,
    _fd: std::os::fd::OwnedFd,
}

impl HugetlbRings {
    /// Remaps the whole huge pages of `region` (fresh: all zero, not yet
    /// used) onto a new hugetlbfs memfd. Fails, leaving the region as it
    /// was, when the pages cannot be had.
    pub(crate) fn over(region: &mut [u8]) -> Result<HugetlbRings, String> {
        use std::os::fd::AsRawFd;
        const HUGE: usize = 2 << 20;
        let start = region.as_mut_ptr() as usize;
        let addr = (start + HUGE - 1) & !(HUGE - 1);
        let end = (start + region.len()) & !(HUGE - 1);
        if end <= addr {
            return Err("ring region smaller than a huge page".into());
        }
        let len = end - addr;
        let fd = tas_runtime::huge::hugetlb_memfd("fastpath-bench-rings", len).map_err(|e| {
            format!("--hugetlb: {e}: reserve them (echo N > /proc/sys/vm/nr_hugepages)")
        })?;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // First where the kernel likes: this mapping reserves every page of
        // the file (no MAP_NORESERVE), so failing here changes nothing.
        // SAFETY: a new mapping at an address of the kernel's choice.
        let probe = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if probe == libc::MAP_FAILED {
            return Err(format!(
                "--hugetlb: reserving {} huge pages: {}",
                len / HUGE,
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: [addr, addr + len) lies inside `region`, which we borrow
        // mutably (nobody else reads or writes it) and which is all zero,
        // as the new file's pages are: the bytes the vector owns do not
        // change, only the pages behind them. The file's pages are
        // reserved already (by `probe`), so this cannot fail for want of
        // them.
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                0,
            )
        };
        // SAFETY: `probe` is our mapping of `len` bytes, unused.
        unsafe { libc::munmap(probe, len) };
        if p == libc::MAP_FAILED {
            // The old pages may be gone: the vector's memory is not
            // usable, and it must not be freed either.
            eprintln!(
                "fastpath-bench: mapping the huge pages over the ring region failed: {}",
                std::io::Error::last_os_error()
            );
            std::process::abort();
        }
        Ok(HugetlbRings { addr, len, _fd: fd })
    }
}

impl Drop for HugetlbRings {
    fn drop(&mut self) {
        // SAFETY: [addr, addr + len) is our hugetlbfs mapping inside the
        // vector's allocation; anonymous memory goes back before the
        // vector is freed (the allocator may unmap or reuse the range).
        let p = unsafe {
            libc::mmap(
                self.addr as *mut libc::c_void,
                self.len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            eprintln!(
                "fastpath-bench: restoring the ring region's pages failed: {}",
                std::io::Error::last_os_error()
            );
            std::process::abort();
        }
    }
}

/// Asks for transparent huge pages on a (not yet touched) payload region.
fn advise_huge(region: &mut [u8]) {
    if !tas_runtime::huge::advise(region.as_mut_ptr(), region.len()) {
        eprintln!(
            "fastpath-bench: madvise(MADV_HUGEPAGE) on the payload region failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Wall-clock cost of one `Instant::now()` (ns), to judge timer overhead.
pub fn timer_overhead_ns() -> f64 {
    let n = 100_000u32;
    let t = Instant::now();
    let mut last = t;
    for _ in 0..n {
        last = std::hint::black_box(Instant::now());
    }
    (last - t).as_nanos() as f64 / n as f64
}
