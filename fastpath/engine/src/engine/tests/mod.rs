//! Packet-level tests of the fast path, in the spirit of smoltcp's
//! `socket/tcp.rs`: one established flow is installed in a table, crafted
//! peer frames go into [`FastPath::rx`] at a chosen `now`, and the exact
//! segments, exceptions and app notifications that come out are asserted.
//!
//! Conventions: stream offsets, not sequence numbers, appear in the cases.
//! `fx.rseq(n)` is the peer's sequence number of its `n`th payload byte
//! (`irs + 1 + n`), `fx.lseq(n)` ours (`iss + 1 + n`). `fx.peer(n)` is a peer
//! segment at offset `n` that acknowledges `fx.peer_ack` of our stream;
//! `fx.ours(snd, rcv, free)` is the segment we are expected to send, at our
//! offset `snd`, acknowledging peer offset `rcv`, announcing `free` bytes.

use super::*;
use std::collections::VecDeque;
use tas_abi::{cmd, VecMem};

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

use tas_testkit::addr::{
    A_IP4 as OUR_IP, A_MAC as OUR_MAC, B_IP4 as PEER_IP, B_MAC as PEER_MAC, OTHER_MAC,
};
const OUR_PORT: u16 = 6379;
const PEER_PORT: u16 = 40_000;
/// Payload region of the app that owns the flow under test.
const MEM: u16 = 1;
/// Payload region of another app (owns the decoy flow).
const OTHER_MEM: u16 = 0;
const CTX: u16 = 5;
const OPAQUE: u64 = 0x0123_4567_89ab_cdef;
/// Fill byte of the payload region outside the rings: must never change.
const GUARD: u8 = 0xa5;
/// Offset of the RX ring inside the region (non-zero on purpose).
const RX_BASE: u32 = 128;
/// Start time: 1 s, so our first TSval is 1_000_000.
const T0: u64 = 1_000_000_000;
const PEER_TS0: u32 = 70_000;
/// Window field the peer sends by default (scaled by `snd_wscale`).
const PEER_WIN: u16 = 16_384;

/// How the flow under test is installed.
#[derive(Debug, Clone, Copy)]
struct FlowOpts {
    irs: u32,
    iss: u32,
    cfg: u16,
    mss: u16,
    snd_wscale: u8,
    rcv_wscale: u8,
    rx_len: u32,
    tx_len: u32,
    /// Window field of the peer's last segment (scaled by `snd_wscale`).
    peer_win: u16,
    tx_rate: u32,
    tx_cwnd: u32,
    /// Ring positions where the flow starts (to test ring wraparound).
    rx_pos0: u32,
    tx_pos0: u32,
    /// The engine's `Config::ack_delay_ns` (0: ACK at once).
    ack_delay_ns: u64,
    /// `FastPath::with_tx_csum_offload`.
    csum_offload: bool,
    /// `FastPath::with_direct_tx`.
    direct_tx: bool,
    /// The flow table's capacity (above 4K flows its index does not stay
    /// in the cache: `FastPath::prefetch` takes its three-pass path).
    table_capacity: usize,
}

impl Default for FlowOpts {
    fn default() -> Self {
        FlowOpts {
            irs: 1_000_000,
            iss: 2_000_000,
            cfg: cfg::TS | cfg::SACK,
            mss: 1460,
            snd_wscale: 2,
            rcv_wscale: 2,
            rx_len: 32_768,
            tx_len: 32_768,
            peer_win: PEER_WIN,
            tx_rate: 0,
            tx_cwnd: 0,
            rx_pos0: 0,
            tx_pos0: 0,
            ack_delay_ns: 0,
            csum_offload: false,
            direct_tx: false,
            table_capacity: 8,
        }
    }
}

/// One TCP segment as the peer sends it or as we sent it (parsed back).
#[derive(Clone, PartialEq, Eq)]
struct Seg {
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    ts: Option<(u32, u32)>,
    sack: Vec<(u32, u32)>,
    payload: Vec<u8>,
    /// IP ECN bits.
    ecn: u8,
    /// Peer side: build with a wrong TCP checksum. Parsed: checksum wrong.
    bad_csum: bool,
}

impl std::fmt::Debug for Seg {
    /// Compact: the payload as its length and a short hash of its bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = self.payload.iter().fold(0xcbf2_9ce4u32, |h, &b| {
            (h ^ b as u32).wrapping_mul(0x0100_0193)
        });
        write!(
            f,
            "Seg {{ seq: {}, ack: {}, flags: {:#04x}, window: {}, ts: {:?}, sack: {:?}, \
             payload: {} bytes #{:08x}, ecn: {}, bad_csum: {} }}",
            self.seq,
            self.ack,
            self.flags,
            self.window,
            self.ts,
            self.sack,
            self.payload.len(),
            h,
            self.ecn,
            self.bad_csum
        )
    }
}

const ACK: u8 = tcp::ACK;
const PSH: u8 = tcp::PSH;
const FIN: u8 = tcp::FIN;

/// Captures what the fast path emits. `room` simulates a NIC batch that
/// has space for that many more frames.
#[derive(Default)]
struct Cap {
    frames: VecDeque<Vec<u8>>,
    exceptions: VecDeque<(Exception, Option<FlowId>, Vec<u8>)>,
    room: Option<usize>,
    /// `fill` calls that built nothing.
    empty_fills: usize,
    /// Activations handed to another lane.
    forwarded: Vec<(u16, FlowId)>,
    /// The frame being built (`tx_buf`).
    scratch: Vec<u8>,
}

impl Output for Cap {
    fn tx_buf(&mut self) -> Option<&mut [u8]> {
        if let Some(room) = self.room.as_mut() {
            if *room == 0 {
                return None;
            }
            *room -= 1;
        }
        self.scratch = vec![0u8; 2048];
        Some(&mut self.scratch)
    }
    fn tx_commit(&mut self, n: usize) {
        if n == 0 {
            // Like the NIC batch: nothing built, nothing sent.
            self.empty_fills += 1;
            return;
        }
        let mut buf = std::mem::take(&mut self.scratch);
        buf.truncate(n);
        self.frames.push_back(buf);
    }

    fn exception(&mut self, reason: Exception, flow: Option<FlowId>, frame: &[u8]) {
        self.exceptions.push_back((reason, flow, frame.to_vec()));
    }
    fn forward(&mut self, lane: u16, id: FlowId) {
        self.forwarded.push((lane, id));
    }
}

/// The app's view of its flow: its own ring positions and what it was told.
#[derive(Debug, Default)]
struct App {
    /// Where the app writes its next TX byte (ring offset).
    tx_head: u32,
    /// Bytes the app has written (its TX stream offset).
    tx_written: u32,
    /// Where the app reads its next RX byte (ring offset).
    rx_pos: u32,
    /// Peer stream offset the app has read up to.
    rx_read: u32,
    /// Bytes read but not yet freed.
    rx_unfreed: u32,
    /// Latest `rx_seq` notified.
    rx_seq: u32,
    /// Latest `tx_acked_seq` notified.
    tx_acked_seq: u32,
}

struct Fx {
    fp: FastPath,
    mem: VecMem,
    out: Cap,
    id: FlowId,
    decoy: FlowId,
    now: u64,
    o: FlowOpts,
    tx_base: u32,
    /// TSval the peer puts on its next segment.
    peer_ts: u32,
    /// TSecr the peer puts on its next segment (our latest TSval seen).
    peer_ecr: u32,
    /// Our stream offset the peer acknowledges by default.
    peer_ack: u32,
    /// Window field of the peer's segments.
    peer_win: u16,
    app: App,
}

/// Deterministic test payload: `n` bytes starting at stream offset `off`.
fn pat(off: u32, n: u32) -> Vec<u8> {
    (off..off + n)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

fn flow_state(o: &FlowOpts, tx_base: u32) -> FlowState {
    FlowState {
        opaque: OPAQUE,
        local_ip: OUR_IP,
        remote_ip: PEER_IP,
        local_port: OUR_PORT,
        remote_port: PEER_PORT,
        remote_mac: PEER_MAC,
        context: CTX,
        mem: MEM,
        group: 0,
        cfg: o.cfg,
        mss: o.mss,
        snd_wscale: o.snd_wscale,
        rcv_wscale: o.rcv_wscale,
        rx_base: RX_BASE,
        rx_len: o.rx_len,
        tx_base,
        tx_len: o.tx_len,
        tx_rate: o.tx_rate,
        tx_cwnd: o.tx_cwnd,
        rx_avail: o.rx_len,
        rx_next_pos: o.rx_pos0,
        rx_next_seq: o.irs.wrapping_add(1),
        rx_remote_avail: (o.peer_win as u32) << o.snd_wscale,
        tx_next_pos: o.tx_pos0,
        tx_next_seq: o.iss.wrapping_add(1),
        tx_next_ts: PEER_TS0,
        ..Default::default()
    }
}

impl Fx {
    fn new(o: FlowOpts) -> Fx {
        let tx_base = RX_BASE + o.rx_len + 64;
        let size = (tx_base + o.tx_len + 128) as usize;
        let mut mem = VecMem::new(2, size);
        for r in &mut mem.regions {
            r.fill(GUARD);
        }
        let table = Arc::new(FlowTable::new(o.table_capacity));
        // Same addresses, another port and another app: must never be touched.
        let decoy = table
            .insert(FlowState {
                remote_port: PEER_PORT + 1,
                mem: OTHER_MEM,
                opaque: 7,
                ..flow_state(&o, tx_base)
            })
            .unwrap();
        let id = table.insert(flow_state(&o, tx_base)).unwrap();
        let fp = FastPath::new(
            table,
            Config {
                local_mac: OUR_MAC,
                ttl: 64,
                any_mac: false,
                ack_delay_ns: o.ack_delay_ns,
            },
        )
        .with_tx_csum_offload(o.csum_offload)
        .with_direct_tx(o.direct_tx);
        Fx {
            fp,
            mem,
            out: Cap::default(),
            id,
            decoy,
            now: T0,
            o,
            tx_base,
            peer_ts: PEER_TS0,
            peer_ecr: 0,
            peer_ack: 0,
            peer_win: o.peer_win,
            app: App {
                tx_head: o.tx_pos0,
                rx_pos: o.rx_pos0,
                rx_seq: o.irs.wrapping_add(1),
                tx_acked_seq: o.iss.wrapping_add(1),
                ..Default::default()
            },
        }
    }

    fn ts_on(&self) -> bool {
        self.o.cfg & cfg::TS != 0
    }

    fn rseq(&self, off: u32) -> u32 {
        self.o.irs.wrapping_add(1).wrapping_add(off)
    }

    fn lseq(&self, off: u32) -> u32 {
        self.o.iss.wrapping_add(1).wrapping_add(off)
    }

    /// Our TSval at the current time.
    fn tsv(&self) -> u32 {
        ts_now(self.now)
    }

    /// Window field we announce with `free` bytes of RX ring.
    fn win(&self, free: u32) -> u16 {
        (free >> self.o.rcv_wscale).min(u16::MAX as u32) as u16
    }

    /// Snapshot of the flow's state.
    fn flow(&self) -> FlowState {
        *self.fp.table().lock(self.id).expect("flow installed")
    }

    fn set(&mut self, edit: impl FnOnce(&mut FlowState)) {
        edit(&mut self.fp.table().lock(self.id).expect("flow installed"));
    }

    /// A peer segment at peer offset `off`: ACK, no payload, default window,
    /// timestamps when negotiated.
    fn peer(&self, off: u32) -> Seg {
        Seg {
            seq: self.rseq(off),
            ack: self.lseq(self.peer_ack),
            flags: ACK,
            window: self.peer_win,
            ts: self.ts_on().then_some((self.peer_ts, self.peer_ecr)),
            sack: vec![],
            payload: vec![],
            ecn: ipv4::ECN_NOT_ECT,
            bad_csum: false,
        }
    }

    /// A peer data segment carrying the test pattern for `[off, off + n)`.
    fn data(&self, off: u32, n: u32) -> Seg {
        Seg {
            flags: ACK | PSH,
            payload: pat(off, n),
            ..self.peer(off)
        }
    }

    /// What we should send: our offset `snd`, acknowledging peer offset
    /// `rcv`, announcing `free` bytes, at the current time.
    fn ours(&self, snd: u32, rcv: u32, free: u32) -> Seg {
        Seg {
            seq: self.lseq(snd),
            ack: self.rseq(rcv),
            flags: ACK,
            window: self.win(free),
            ts: self.ts_on().then_some((self.tsv(), self.peer_ts)),
            sack: vec![],
            payload: vec![],
            ecn: ipv4::ECN_NOT_ECT,
            bad_csum: false,
        }
    }

    /// A data segment of ours carrying our pattern for `[snd, snd + n)`
    /// (ECT(0) when ECN was negotiated).
    fn ours_data(&self, snd: u32, n: u32, rcv: u32, free: u32) -> Seg {
        Seg {
            payload: pat(snd, n),
            ecn: if self.o.cfg & cfg::ECN != 0 {
                ipv4::ECN_ECT0
            } else {
                ipv4::ECN_NOT_ECT
            },
            ..self.ours(snd, rcv, free)
        }
    }

    /// `s` with SACK blocks, given as peer stream offsets `[from, to)`.
    fn sack(&self, s: Seg, blocks: &[(u32, u32)]) -> Seg {
        Seg {
            sack: blocks
                .iter()
                .map(|&(a, b)| (self.rseq(a), self.rseq(b)))
                .collect(),
            ..s
        }
    }

    /// A snapshot of the app's payload region, to prove nothing was written.
    fn region(&self) -> Vec<u8> {
        self.mem.regions[MEM as usize].clone()
    }

    /// The frame the peer puts on the wire for `s`.
    fn frame(&self, s: &Seg) -> Vec<u8> {
        self.frame_from(PEER_PORT, s)
    }

    /// [`Fx::frame`] from another peer port (another flow of the table).
    fn frame_from(&self, peer_port: u16, s: &Seg) -> Vec<u8> {
        let mut opts = tcp::TcpOptions {
            timestamp: s.ts,
            ..Default::default()
        };
        for (slot, b) in opts.sack_blocks.iter_mut().zip(&s.sack) {
            *slot = *b;
        }
        opts.sack_count = s.sack.len() as u8;
        let h = frame::FrameHdr {
            src_mac: PEER_MAC,
            dst_mac: OUR_MAC,
            src_ip: PEER_IP,
            dst_ip: OUR_IP,
            ttl: 64,
            ecn: s.ecn,
            ident: 1,
        };
        let t = tcp::TcpRepr {
            src_port: peer_port,
            dst_port: OUR_PORT,
            seq: s.seq,
            ack: s.ack,
            flags: s.flags,
            window: s.window,
            options: opts,
        };
        let mut buf = vec![0u8; 128 + s.payload.len()];
        let n = frame::tcp_frame(&mut buf, &h, &t, &s.payload).unwrap();
        buf.truncate(n);
        if s.bad_csum {
            buf[14 + 20 + 16] ^= 0x5a;
        }
        buf
    }

    fn send(&mut self, s: &Seg) {
        let f = self.frame(s);
        self.send_raw(&f);
    }

    /// One frame, as a poll round of its own (its ACK, if any, goes out).
    fn send_raw(&mut self, frame: &[u8]) {
        self.fp.rx(frame, self.now, &mut self.mem, &mut self.out);
        self.fp.end_round(self.now, &self.mem, &mut self.out);
    }

    /// Several segments received in one poll round, then the round's end.
    fn send_round(&mut self, segs: &[Seg]) {
        for s in segs {
            let f = self.frame(s);
            self.fp.rx(&f, self.now, &mut self.mem, &mut self.out);
        }
        self.fp.end_round(self.now, &self.mem, &mut self.out);
    }

    /// Sends the held ACKs due at the current time.
    fn flush_acks(&mut self) -> usize {
        self.fp
            .flush_acks(self.now, false, &self.mem, &mut self.out)
    }

    /// Runs the TX scheduler at the current time.
    fn poll(&mut self) -> usize {
        self.fp.poll_tx(self.now, 64, &self.mem, &mut self.out)
    }

    /// The next frame we emitted, parsed and checked for the invariant
    /// headers (addresses, ports, TTL, DF, checksum, no other options).
    fn next_frame(&mut self) -> Option<Seg> {
        let b = self.out.frames.pop_front()?;
        let fr = frame::parse_tcp_frame(&b).expect("our frame parses");
        assert_eq!(fr.eth.src(), OUR_MAC);
        assert_eq!(fr.eth.dst(), PEER_MAC);
        assert_eq!(fr.ip.src(), OUR_IP);
        assert_eq!(fr.ip.dst(), PEER_IP);
        assert_eq!(fr.ip.ttl(), 64);
        assert!(fr.ip.dont_fragment());
        assert_eq!(fr.ip.total_len() + 14, b.len(), "no trailing bytes");
        let t = fr.tcp.repr().expect("our options parse");
        assert_eq!((t.src_port, t.dst_port), (OUR_PORT, PEER_PORT));
        assert_eq!(t.options.mss, None);
        assert_eq!(t.options.wscale, None);
        assert!(!t.options.sack_permitted);
        assert_eq!(fr.tcp.urgent(), 0);
        let s = Seg {
            seq: t.seq,
            ack: t.ack,
            flags: t.flags,
            window: t.window,
            ts: t.options.timestamp,
            sack: t.options.sack_blocks[..t.options.sack_count as usize].to_vec(),
            payload: fr.tcp.payload().to_vec(),
            ecn: fr.ip.ecn(),
            bad_csum: !tcp::verify_checksum(fr.ip.src(), fr.ip.dst(), fr.ip.payload()),
        };
        if let Some((val, _)) = s.ts {
            self.peer_ecr = val;
        }
        Some(s)
    }

    /// Delivers pending notifications, checking each goes to our context,
    /// and updates the app's view.
    fn notifications(&mut self) -> Vec<AppEvent> {
        let mut evs = Vec::new();
        self.fp.flush_notifications(|ctx, e| {
            assert_eq!(ctx, CTX);
            evs.push(*e);
            true
        });
        for e in &evs {
            if e.flow == self.id {
                self.app.rx_seq = e.rx_seq;
                self.app.tx_acked_seq = e.tx_acked_seq;
            }
        }
        evs
    }

    /// The notification we expect: peer data up to offset `rx`, our data
    /// acknowledged up to offset `tx`.
    fn ev(&self, rx: u32, tx: u32, flags: u8) -> AppEvent {
        AppEvent {
            kind: event::FLOW_UPDATE,
            flags,
            flow: self.id,
            opaque: OPAQUE,
            rx_seq: self.rseq(rx),
            tx_acked_seq: self.lseq(tx),
            ..Default::default()
        }
    }

    fn cmd(&mut self, tx_added: u32, rx_freed: u32, flags: u8) -> Result<(), AppCmdError> {
        let c = AppCmd {
            kind: cmd::FLOW_UPDATE,
            flags,
            flow: self.id,
            tx_added,
            rx_freed,
            ..Default::default()
        };
        self.fp.app_cmd(MEM, &c, self.now, &self.mem, &mut self.out)
    }

    /// The app appends our pattern for its next `n` bytes to the TX ring and
    /// tells the fast path (with `flags`, e.g. `F_TX_FIN`).
    fn write(&mut self, n: u32, flags: u8) -> Result<(), AppCmdError> {
        let data = pat(self.app.tx_written, n);
        let (base, len) = (self.tx_base, self.o.tx_len);
        let mut pos = self.app.tx_head;
        for &b in &data {
            self.mem.regions[MEM as usize][(base + pos) as usize] = b;
            pos = if pos + 1 == len { 0 } else { pos + 1 };
        }
        let r = self.cmd(n, 0, flags);
        if r.is_ok() {
            self.app.tx_head = pos;
            self.app.tx_written += n;
        }
        r
    }

    /// Reads what the notifications so far announced, without freeing it.
    fn read(&mut self) -> Vec<u8> {
        let n = self.app.rx_seq.wrapping_sub(self.rseq(self.app.rx_read));
        let mut out = vec![0u8; n as usize];
        let (base, len) = (RX_BASE, self.o.rx_len);
        let mut pos = self.app.rx_pos;
        for b in &mut out {
            *b = self.mem.regions[MEM as usize][(base + pos) as usize];
            pos = if pos + 1 == len { 0 } else { pos + 1 };
        }
        self.app.rx_pos = pos;
        self.app.rx_read += n;
        self.app.rx_unfreed += n;
        out
    }

    /// Frees everything read so far.
    fn free(&mut self) -> Result<(), AppCmdError> {
        let n = self.app.rx_unfreed;
        let r = self.cmd(0, n, 0);
        if r.is_ok() {
            self.app.rx_unfreed = 0;
        }
        r
    }

    fn exception(&mut self) -> Option<(Exception, Option<FlowId>, Vec<u8>)> {
        self.out.exceptions.pop_front()
    }
}

impl Drop for Fx {
    /// Every case also checks that nothing was written outside the rings,
    /// that every TX slot taken got a frame, and that the decoy flow is
    /// untouched.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        assert!(self.out.empty_fills as u64 <= self.fp.stats.mem_errors);
        let tx_base = self.tx_base as usize;
        let rx_end = (RX_BASE + self.o.rx_len) as usize;
        let tx_end = tx_base + self.o.tx_len as usize;
        for (i, &b) in self.mem.regions[MEM as usize].iter().enumerate() {
            let in_ring = (RX_BASE as usize..rx_end).contains(&i) || (tx_base..tx_end).contains(&i);
            assert!(in_ring || b == GUARD, "byte {i} outside the rings written");
        }
        assert!(self.mem.regions[OTHER_MEM as usize]
            .iter()
            .all(|&b| b == GUARD));
        let d = *self.fp.table().lock(self.decoy).unwrap();
        assert_eq!(
            d,
            FlowState {
                remote_port: PEER_PORT + 1,
                mem: OTHER_MEM,
                opaque: 7,
                ..flow_state(&self.o, self.tx_base)
            }
        );
    }
}

/// Feeds a peer segment (built from a [`Seg`]) to the fast path.
macro_rules! send {
    ($fx:expr, $seg:expr) => {{
        let s = $seg;
        $fx.send(&s)
    }};
}

/// Asserts the next frame we emitted equals the expected segment.
macro_rules! recv {
    ($fx:expr, $want:expr) => {{
        let want = $want;
        match $fx.next_frame() {
            Some(got) => assert_eq!(got, want, "emitted segment"),
            None => panic!("expected {:?}, nothing was sent", want),
        }
    }};
}

/// Asserts nothing more was emitted.
macro_rules! recv_nothing {
    ($fx:expr) => {{
        if let Some(got) = $fx.next_frame() {
            panic!("expected nothing, got {:?}", got);
        }
    }};
}

/// Asserts the next exception.
macro_rules! exc {
    ($fx:expr, $reason:expr, $flow:expr) => {{
        let want = ($reason, $flow);
        match $fx.exception() {
            Some((r, f, _)) => assert_eq!((r, f), want, "exception"),
            None => panic!("expected exception {:?}", $reason),
        }
    }};
}

macro_rules! exc_nothing {
    ($fx:expr) => {{
        if let Some((r, f, _)) = $fx.exception() {
            panic!("unexpected exception {:?} for {:?}", r, f);
        }
    }};
}

fn fx() -> Fx {
    Fx::new(FlowOpts::default())
}

mod ack_checks;
mod ack_short;
mod app;
mod delack;
mod direct;
mod exceptions;
mod fin;
mod probe;
mod round;
mod rx;
mod rx_short;
mod sack;
mod sack_recovery;
mod seqcheck;
mod template;
mod tx;
