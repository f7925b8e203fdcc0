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
use tas_abi::{cmd, VecMem};

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

const OUR_MAC: [u8; 6] = [0x02, 0x54, 0x41, 0x53, 0x00, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0x4c, 0x4e, 0x58, 0x00, 0x02];
const OTHER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x99];
/// 198.18.0.1
const OUR_IP: u32 = 0xc612_0001;
/// 198.18.0.2
const PEER_IP: u32 = 0xc612_0002;
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
}

impl Output for Cap {
    fn tx<F: FnOnce(&mut [u8]) -> usize>(&mut self, fill: F) -> bool {
        if let Some(room) = self.room.as_mut() {
            if *room == 0 {
                return false;
            }
            *room -= 1;
        }
        let mut buf = vec![0u8; 2048];
        let n = fill(&mut buf);
        if n == 0 {
            // Like the NIC batch: nothing built, nothing sent.
            self.empty_fills += 1;
            return true;
        }
        buf.truncate(n);
        self.frames.push_back(buf);
        true
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
        let table = Arc::new(FlowTable::new(8));
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
            },
        );
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

    /// The frame the peer puts on the wire for `s`.
    fn frame(&self, s: &Seg) -> Vec<u8> {
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
            src_port: PEER_PORT,
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

    fn send_raw(&mut self, frame: &[u8]) {
        self.fp.rx(frame, self.now, &mut self.mem, &mut self.out);
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

// ---------------------------------------------------------------------------
// Receive path
// ---------------------------------------------------------------------------

#[test]
fn rx_in_order_data_is_delivered_and_acked() {
    let mut fx = fx();
    send!(fx, fx.data(0, 64));
    // Window 32768 - 64 bytes, announced >> 2; TSval from now, TSecr = peer's.
    recv!(fx, fx.ours(0, 64, 32_768 - 64));
    assert_eq!(fx.ours(0, 64, 32_768 - 64).window, 8176);
    assert_eq!(fx.ours(0, 0, 0).ts, Some((1_000_000, PEER_TS0)));
    recv_nothing!(fx);
    exc_nothing!(fx);
    assert_eq!(fx.notifications(), vec![fx.ev(64, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 64));
    assert!(fx.notifications().is_empty(), "one notification only");
    let f = fx.flow();
    assert_eq!({ f.rx_next_seq }, fx.rseq(64));
    assert_eq!({ f.rx_avail }, 32_768 - 64);
    assert_eq!(fx.fp.stats.rx_payload_bytes, 64);
    assert_eq!(fx.fp.stats.acks_sent, 1);
    // Every segment gets its ACK; the second echoes the newer TSval.
    fx.now += 3_000;
    fx.peer_ts += 1;
    send!(fx, fx.data(64, 100));
    recv!(fx, fx.ours(0, 164, 32_768 - 164));
    assert_eq!(fx.notifications(), vec![fx.ev(164, 0, 0)]);
    assert_eq!(fx.read(), pat(64, 100));
}

#[test]
fn rx_peer_without_timestamps() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::SACK,
        ..Default::default()
    });
    let s = fx.data(0, 64);
    assert_eq!(s.ts, None);
    send!(fx, s);
    let want = fx.ours(0, 64, 32_768 - 64);
    assert_eq!(want.ts, None);
    recv!(fx, want);
    assert_eq!(fx.notifications(), vec![fx.ev(64, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 64));
    // Our data carries no option either, and uses the whole MSS.
    fx.write(2000, 0).unwrap();
    assert_eq!(fx.poll(), 2);
    recv!(fx, fx.ours_data(0, 1460, 64, 32_768 - 64));
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(1460, 540, 64, 32_768 - 64)
        }
    );
    recv_nothing!(fx);
}

#[test]
fn rx_segment_without_timestamp_on_ts_flow_is_accepted() {
    // Lenient (RFC 7323 says drop): accepted, and TS.Recent is kept.
    let mut fx = fx();
    send!(
        fx,
        Seg {
            ts: None,
            ..fx.data(0, 10)
        }
    );
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
    assert_eq!({ fx.flow().tx_next_ts }, PEER_TS0);
}

#[test]
fn rx_sequence_numbers_and_ring_wrap() {
    // irs close to 2^32 and the ring position close to its end: the second
    // segment crosses the sequence wrap (at offset 100) and the ring end
    // (at offset 30); an out-of-order segment sits beyond the wrap.
    let mut fx = Fx::new(FlowOpts {
        irs: u32::MAX - 100,
        rx_pos0: 32_768 - 30,
        ..Default::default()
    });
    assert_eq!(fx.rseq(99), u32::MAX);
    send!(fx, fx.data(0, 64));
    recv!(fx, fx.ours(0, 64, 32_768 - 64));
    send!(fx, fx.data(64, 100));
    recv!(fx, fx.ours(0, 164, 32_768 - 164));
    assert_eq!(fx.rseq(164), 64);
    send!(fx, fx.data(300, 50));
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(300), fx.rseq(350))],
            ..fx.ours(0, 164, 32_768 - 164)
        }
    );
    send!(fx, fx.data(164, 136));
    recv!(fx, fx.ours(0, 350, 32_768 - 350));
    assert_eq!(fx.notifications(), vec![fx.ev(350, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 350));
    assert_eq!({ fx.flow().rx_next_pos }, 350 - 30);
}

#[test]
fn rx_peer_timestamp_wraps() {
    let mut fx = fx();
    fx.peer_ts = u32::MAX - 1;
    send!(fx, fx.data(0, 10));
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
    assert_eq!(fx.ours(0, 0, 0).ts.unwrap().1, u32::MAX - 1);
    fx.peer_ts = 5; // wrapped: newer, accepted and echoed
    fx.now += 10_000;
    send!(fx, fx.data(10, 10));
    recv!(fx, fx.ours(0, 20, 32_768 - 20));
    assert_eq!({ fx.flow().tx_next_ts }, 5);
    assert_eq!(fx.notifications(), vec![fx.ev(20, 0, 0)]);
}

#[test]
fn our_timestamp_clock_wraps_rtt_still_sane() {
    let mut fx = fx();
    fx.now = (u32::MAX as u64 - 2) * 1000; // TSval 2^32 - 3
    fx.write(100, 0).unwrap();
    fx.poll();
    let s = fx.next_frame().unwrap();
    assert_eq!(s.ts, Some((u32::MAX - 2, PEER_TS0)));
    fx.now += 50_000; // 50 µs later our clock reads 47
    assert_eq!(fx.tsv(), 47);
    fx.peer_ack = 100;
    send!(fx, fx.peer(0));
    assert_eq!({ fx.flow().rtt_est }, 50);
    // Our next segment carries the wrapped clock.
    send!(fx, fx.data(0, 1));
    recv!(fx, fx.ours(100, 1, 32_768 - 1));
    assert_eq!(fx.ours(100, 1, 0).ts.unwrap().0, 47);
}

#[test]
fn rtt_estimate_is_an_ewma_of_timestamp_samples() {
    let mut fx = fx();
    let rtt = |fx: &mut Fx, n: u32, us: u64| {
        fx.write(n, 0).unwrap();
        fx.poll();
        fx.next_frame().unwrap(); // sets peer_ecr to its TSval
        fx.now += us * 1000;
        fx.peer_ack += n;
        send!(fx, fx.peer(0));
        fx.now += 1_000_000;
        fx.flow().rtt_est
    };
    assert_eq!(rtt(&mut fx, 10, 100), 100, "first sample taken as is");
    assert_eq!(rtt(&mut fx, 10, 200), (100 * 7 + 200) / 8);
    assert_eq!(rtt(&mut fx, 10, 40), (112 * 7 + 40) / 8);
    // A TSecr of 0 (peer echoes nothing) or from the future gives no sample.
    fx.write(10, 0).unwrap();
    fx.poll();
    fx.next_frame();
    fx.peer_ack += 10;
    send!(
        fx,
        Seg {
            ts: Some((fx.peer_ts, 0)),
            ..fx.peer(0)
        }
    );
    assert_eq!({ fx.flow().rtt_est }, 103);
    fx.write(10, 0).unwrap();
    fx.poll();
    fx.next_frame();
    fx.peer_ack += 10;
    send!(
        fx,
        Seg {
            ts: Some((fx.peer_ts, fx.tsv() + 5)),
            ..fx.peer(0)
        }
    );
    assert_eq!({ fx.flow().rtt_est }, 103);
}

#[test]
fn ooo_segment_gets_dupack_with_sack_then_gap_fill_acks_all() {
    let mut fx = fx();
    send!(fx, fx.data(100, 100));
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(100), fx.rseq(200))],
            ..fx.ours(0, 0, 32_768)
        }
    );
    recv_nothing!(fx);
    assert!(fx.notifications().is_empty(), "nothing in order yet");
    assert_eq!(fx.fp.stats.ooo_accepted, 1);
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(0, 200, 32_768 - 200));
    recv_nothing!(fx);
    assert_eq!(fx.notifications(), vec![fx.ev(200, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 200));
    assert_eq!({ fx.flow().rx_ooo_len }, 0);
}

#[test]
fn ooo_segment_without_sack_gets_plain_dupack() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::TS,
        ..Default::default()
    });
    send!(fx, fx.data(100, 100));
    recv!(fx, fx.ours(0, 0, 32_768));
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(0, 200, 32_768 - 200));
    assert_eq!(fx.notifications(), vec![fx.ev(200, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 200));
}

#[test]
fn ooo_interval_extends_at_both_ends_and_merges_overlaps() {
    let mut fx = fx();
    let sack = |fx: &Fx, a: u32, b: u32| Seg {
        sack: vec![(fx.rseq(a), fx.rseq(b))],
        ..fx.ours(0, 0, 32_768)
    };
    send!(fx, fx.data(200, 100));
    recv!(fx, sack(&fx, 200, 300));
    send!(fx, fx.data(300, 100)); // adjacent at the right end
    recv!(fx, sack(&fx, 200, 400));
    send!(fx, fx.data(100, 100)); // adjacent at the left end
    recv!(fx, sack(&fx, 100, 400));
    send!(fx, fx.data(350, 100)); // overlapping the right end
    recv!(fx, sack(&fx, 100, 450));
    send!(fx, fx.data(50, 60)); // overlapping the left end
    recv!(fx, sack(&fx, 50, 450));
    send!(fx, fx.data(150, 100)); // inside: nothing changes
    recv!(fx, sack(&fx, 50, 450));
    assert_eq!(fx.fp.stats.ooo_accepted, 6);
    assert!(fx.notifications().is_empty());
    send!(fx, fx.data(0, 50));
    recv!(fx, fx.ours(0, 450, 32_768 - 450));
    assert_eq!(fx.notifications(), vec![fx.ev(450, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 450));
}

#[test]
fn ooo_non_adjacent_segment_is_dropped() {
    let mut fx = fx();
    send!(fx, fx.data(200, 100));
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(200), fx.rseq(300))],
            ..fx.ours(0, 0, 32_768)
        }
    );
    let before = fx.mem.regions[MEM as usize].clone();
    send!(fx, fx.data(500, 100));
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(200), fx.rseq(300))],
            ..fx.ours(0, 0, 32_768)
        }
    );
    assert_eq!(
        fx.mem.regions[MEM as usize], before,
        "dropped data not written"
    );
    assert_eq!(fx.fp.stats.ooo_dropped, 1);
    send!(fx, fx.data(0, 200));
    recv!(fx, fx.ours(0, 300, 32_768 - 300));
    assert_eq!(fx.notifications(), vec![fx.ev(300, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 300));
}

#[test]
fn ack_after_partial_gap_fill_still_carries_sack() {
    // RFC 2018 §4: while out-of-order data is held, every ACK carries it.
    let mut fx = fx();
    send!(fx, fx.data(200, 100));
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(200), fx.rseq(300))],
            ..fx.ours(0, 0, 32_768)
        }
    );
    send!(fx, fx.data(0, 100));
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(200), fx.rseq(300))],
            ..fx.ours(0, 100, 32_768 - 100)
        }
    );
    // A duplicate while the hole is open also reports the interval.
    send!(fx, fx.data(0, 100));
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(200), fx.rseq(300))],
            ..fx.ours(0, 100, 32_768 - 100)
        }
    );
    send!(fx, fx.data(100, 100));
    recv!(fx, fx.ours(0, 300, 32_768 - 300));
}

#[test]
fn old_duplicate_segment_is_reacked_and_not_written() {
    let mut fx = fx();
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(0, 100, 32_768 - 100));
    assert_eq!(fx.notifications(), vec![fx.ev(100, 0, 0)]);
    let before = fx.mem.regions[MEM as usize].clone();
    let flow = fx.flow();
    // Same range, different bytes: must not land anywhere.
    send!(
        fx,
        Seg {
            payload: vec![b'X'; 100],
            ..fx.data(0, 100)
        }
    );
    recv!(fx, fx.ours(0, 100, 32_768 - 100));
    send!(
        fx,
        Seg {
            payload: vec![b'X'; 40],
            ..fx.data(20, 40)
        }
    );
    recv!(fx, fx.ours(0, 100, 32_768 - 100));
    assert_eq!(fx.mem.regions[MEM as usize], before);
    assert_eq!(fx.flow(), flow);
    assert!(fx.notifications().is_empty());
    assert_eq!(fx.fp.stats.dup_segments, 2);
    assert_eq!(fx.read(), pat(0, 100));
}

#[test]
fn partially_old_segment_is_trimmed() {
    let mut fx = fx();
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(0, 100, 32_768 - 100));
    send!(fx, fx.data(50, 100));
    recv!(fx, fx.ours(0, 150, 32_768 - 150));
    assert_eq!(fx.notifications(), vec![fx.ev(150, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 150));
    assert_eq!(fx.fp.stats.rx_payload_bytes, 150);
}

#[test]
fn data_beyond_the_window_is_trimmed() {
    let mut fx = Fx::new(FlowOpts {
        rx_len: 4096,
        rcv_wscale: 0,
        ..Default::default()
    });
    // In order, 5000 bytes into 4096 of space.
    send!(fx, fx.data(0, 5000));
    recv!(fx, fx.ours(0, 4096, 0));
    assert_eq!(fx.fp.stats.window_trimmed, 1);
    assert_eq!(fx.notifications(), vec![fx.ev(4096, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 4096));

    // Out of order, partly beyond the window: kept up to the window's edge.
    let mut fx = Fx::new(FlowOpts {
        rx_len: 4096,
        rcv_wscale: 0,
        ..Default::default()
    });
    send!(fx, fx.data(4000, 200));
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(4000), fx.rseq(4096))],
            ..fx.ours(0, 0, 4096)
        }
    );
    // Entirely beyond: dropped.
    send!(fx, fx.data(4096, 10));
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(4000), fx.rseq(4096))],
            ..fx.ours(0, 0, 4096)
        }
    );
    assert_eq!(fx.fp.stats.ooo_dropped, 1);
    send!(fx, fx.data(0, 4000));
    recv!(fx, fx.ours(0, 4096, 0));
    assert_eq!(fx.notifications(), vec![fx.ev(4096, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 4096));
}

#[test]
fn zero_receive_window_then_window_update_when_app_frees() {
    let mut fx = Fx::new(FlowOpts {
        rx_len: 8192,
        rcv_wscale: 0,
        ..Default::default()
    });
    for (off, n) in [
        (0, 1448),
        (1448, 1448),
        (2896, 1448),
        (4344, 1448),
        (5792, 1448),
    ] {
        send!(fx, fx.data(off, n));
        recv!(fx, fx.ours(0, off + n, 8192 - off - n));
    }
    send!(fx, fx.data(7240, 952));
    recv!(fx, fx.ours(0, 8192, 0));
    // Ring full: more data (and a zero-window probe) is dropped and ACKed.
    let before = fx.mem.regions[MEM as usize].clone();
    send!(fx, fx.data(8192, 100));
    recv!(fx, fx.ours(0, 8192, 0));
    send!(fx, fx.data(8192, 1));
    recv!(fx, fx.ours(0, 8192, 0));
    assert_eq!(fx.mem.regions[MEM as usize], before);
    assert_eq!(fx.notifications(), vec![fx.ev(8192, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 8192));
    // Freeing a little is not worth a window update (receiver SWS avoidance)...
    fx.now += 1000;
    fx.cmd(0, 1000, 0).unwrap();
    recv_nothing!(fx);
    // ...reaching two segments is; so is reaching half the ring.
    fx.cmd(0, 2000, 0).unwrap();
    recv!(fx, fx.ours(0, 8192, 3000));
    fx.cmd(0, 1000, 0).unwrap();
    recv_nothing!(fx);
    fx.cmd(0, 4192, 0).unwrap();
    recv!(fx, fx.ours(0, 8192, 8192));
    recv_nothing!(fx);
    // And the stream goes on, wrapping the ring.
    send!(fx, fx.data(8192, 1000));
    recv!(fx, fx.ours(0, 9192, 7192));
    assert_eq!(fx.notifications(), vec![fx.ev(9192, 0, 0)]);
    assert_eq!(fx.read(), pat(8192, 1000));
}

// ---------------------------------------------------------------------------
// Send path and ACK processing
// ---------------------------------------------------------------------------

#[test]
fn tx_cuts_mss_segments_with_psh_on_last_and_ect0() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::TS | cfg::SACK | cfg::ECN,
        ..Default::default()
    });
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.poll(), 3);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    recv!(fx, fx.ours_data(1448, 1448, 0, 32_768));
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(2896, 104, 0, 32_768)
        }
    );
    recv_nothing!(fx);
    assert_eq!(fx.ours_data(0, 1, 0, 0).ecn, ipv4::ECN_ECT0);
    assert_eq!(fx.poll(), 0);
    let f = fx.flow();
    assert_eq!(
        ({ f.tx_sent }, { f.tx_avail }, { f.tx_next_seq }),
        (3000, 0, fx.lseq(3000))
    );
    assert_eq!(fx.fp.stats.tx_payload_bytes, 3000);
    // Pure ACKs are never ECT.
    send!(fx, fx.data(0, 10));
    recv!(fx, fx.ours(3000, 10, 32_768 - 10));
}

#[test]
fn tx_sequence_numbers_and_ring_wrap() {
    let mut fx = Fx::new(FlowOpts {
        iss: u32::MAX - 1000,
        tx_pos0: 32_768 - 100,
        ..Default::default()
    });
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.poll(), 3);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    recv!(fx, fx.ours_data(1448, 1448, 0, 32_768));
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(2896, 104, 0, 32_768)
        }
    );
    assert_eq!(fx.lseq(1448), 448);
    fx.peer_ack = 1448;
    send!(fx, fx.peer(0));
    assert_eq!(fx.notifications(), vec![fx.ev(0, 1448, 0)]);
    fx.peer_ack = 3000;
    send!(fx, fx.peer(0));
    assert_eq!(fx.notifications(), vec![fx.ev(0, 3000, 0)]);
    recv_nothing!(fx);
    // Keep going around the ring.
    fx.write(32_768, 0).unwrap();
    assert_eq!(fx.poll(), 23);
    let mut off = 3000;
    while let Some(s) = fx.next_frame() {
        assert_eq!(s.seq, fx.lseq(off));
        assert_eq!(s.payload, pat(off, s.payload.len() as u32));
        off += s.payload.len() as u32;
    }
    assert_eq!(off, 3000 + 32_768);
}

#[test]
fn tx_respects_peer_window() {
    let mut fx = Fx::new(FlowOpts {
        peer_win: 500, // << 2 = 2000 bytes
        ..Default::default()
    });
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.poll(), 2);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    recv!(fx, fx.ours_data(1448, 552, 0, 32_768));
    recv_nothing!(fx);
    // The window slides with the ACK: 2000 bytes from 1448.
    fx.peer_win = 500;
    fx.peer_ack = 1448;
    send!(fx, fx.peer(0));
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(2000, 1000, 0, 32_768)
        }
    );
    recv_nothing!(fx);
}

/// A flow steered to lane 1 is only ever scheduled there: an app command
/// or an ACK handled by lane 0 forwards the activation, and lane 1's engine
/// (same flow table) sends the data, in order.
#[test]
fn activations_for_another_lane_are_forwarded() {
    let mut fx = Fx::new(FlowOpts::default());
    fx.set(|f| f.group = 1);
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.out.forwarded, vec![(1, fx.id)]);
    assert_eq!(fx.poll(), 0, "lane 0 must not send a lane-1 flow");
    recv_nothing!(fx);
    let mut lane1 = FastPath::new(
        fx.fp.table().clone(),
        Config {
            local_mac: OUR_MAC,
            ttl: 64,
            any_mac: false,
        },
    )
    .with_lane(1);
    lane1.kick(fx.id, fx.now, &mut fx.out);
    assert_eq!(lane1.poll_tx(fx.now, 64, &fx.mem, &mut fx.out), 3);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    recv!(fx, fx.ours_data(1448, 1448, 0, 32_768));
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(2896, 104, 0, 32_768)
        }
    );
    // Peer data arriving on lane 0 (a NIC that re-hashed) is still taken and
    // acknowledged there, under the flow lock; the freed window's
    // activation goes to lane 1 again.
    fx.out.forwarded.clear();
    fx.write(500, 0).unwrap();
    assert_eq!(fx.out.forwarded, vec![(1, fx.id)]);
    fx.peer_ack = 3000;
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(3000, 100, 32_768 - 100));
    assert_eq!(fx.poll(), 0);
    // The poll loop delivers forwarded activations as kicks on their lane.
    for (lane, id) in std::mem::take(&mut fx.out.forwarded) {
        assert_eq!(lane, 1);
        lane1.kick(id, fx.now, &mut fx.out);
    }
    assert_eq!(lane1.poll_tx(fx.now, 64, &fx.mem, &mut fx.out), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(3000, 500, 100, 32_768 - 100)
        }
    );
}

#[test]
fn tx_respects_congestion_window() {
    let mut fx = Fx::new(FlowOpts {
        tx_cwnd: 2000,
        ..Default::default()
    });
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.poll(), 2);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    recv!(fx, fx.ours_data(1448, 552, 0, 32_768));
    assert_eq!(fx.poll(), 0);
    fx.peer_ack = 1448;
    send!(fx, fx.peer(0));
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(2000, 1000, 0, 32_768)
        }
    );
    // The slow path opens the window: kick() sends what became allowed.
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.poll(), 1);
    recv!(fx, fx.ours_data(3000, 448, 0, 32_768));
    fx.set(|f| f.tx_cwnd = 0);
    fx.fp.kick(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 2);
    recv!(fx, fx.ours_data(3448, 1448, 0, 32_768));
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(4896, 1104, 0, 32_768)
        }
    );
}

#[test]
fn tx_respects_negotiated_small_mss() {
    for (cfg, seg) in [(cfg::TS, 524u32), (0, 536)] {
        let mut fx = Fx::new(FlowOpts {
            cfg,
            mss: 536,
            ..Default::default()
        });
        fx.write(1200, 0).unwrap();
        assert_eq!(fx.poll(), 3);
        recv!(fx, fx.ours_data(0, seg, 0, 32_768));
        recv!(fx, fx.ours_data(seg, seg, 0, 32_768));
        recv!(
            fx,
            Seg {
                flags: ACK | PSH,
                ..fx.ours_data(2 * seg, 1200 - 2 * seg, 0, 32_768)
            }
        );
    }
}

#[test]
fn ack_frees_tx_space_and_notifies() {
    let mut fx = Fx::new(FlowOpts {
        tx_len: 4096,
        ..Default::default()
    });
    fx.write(4096, 0).unwrap();
    assert_eq!(fx.write(1, 0), Err(AppCmdError::TxOverflow));
    assert_eq!(fx.poll(), 3);
    fx.out.frames.clear();
    assert_eq!(
        fx.write(1, 0),
        Err(AppCmdError::TxOverflow),
        "sent is not freed"
    );
    fx.peer_ack = 1448;
    send!(fx, fx.peer(0));
    recv_nothing!(fx);
    assert_eq!(fx.notifications(), vec![fx.ev(0, 1448, 0)]);
    assert_eq!({ fx.flow().cnt_ackb }, 1448);
    assert_eq!({ fx.flow().cnt_ecnb }, 0);
    fx.write(1448, 0).unwrap();
    assert_eq!(fx.write(1, 0), Err(AppCmdError::TxOverflow));
    fx.out.frames.clear();
    fx.peer_ack = 4096;
    send!(fx, fx.peer(0));
    assert_eq!({ fx.flow().cnt_ackb }, 4096);
    assert_eq!(fx.notifications(), vec![fx.ev(0, 4096, 0)]);
    // An old ACK changes nothing.
    let f = fx.flow();
    fx.peer_ack = 1448;
    send!(fx, fx.peer(0));
    assert_eq!(fx.flow(), f);
    assert!(fx.notifications().is_empty());
}

#[test]
fn ece_on_ack_counts_ecn_marked_bytes() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::TS | cfg::ECN,
        ..Default::default()
    });
    fx.write(2000, 0).unwrap();
    fx.poll();
    fx.peer_ack = 1448;
    send!(
        fx,
        Seg {
            flags: ACK | tcp::ECE,
            ..fx.peer(0)
        }
    );
    fx.peer_ack = 2000;
    send!(fx, fx.peer(0));
    let f = fx.flow();
    assert_eq!(({ f.cnt_ackb }, { f.cnt_ecnb }), (2000, 1448));
}

#[test]
fn ece_is_answered_with_cwr_on_the_next_data_segment() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::TS | cfg::ECN,
        ..Default::default()
    });
    fx.write(100, 0).unwrap();
    fx.poll();
    fx.out.frames.clear();
    fx.peer_ack = 100;
    send!(
        fx,
        Seg {
            flags: ACK | tcp::ECE,
            ..fx.peer(0)
        }
    );
    fx.write(200, 0).unwrap();
    fx.poll();
    let seg = fx.next_frame().expect("a data segment");
    assert_eq!(seg.flags, ACK | PSH | tcp::CWR);
    recv_nothing!(fx);
    // Only once per ECE.
    fx.peer_ack = 300;
    send!(fx, fx.peer(0));
    fx.write(10, 0).unwrap();
    fx.poll();
    assert_eq!(fx.next_frame().expect("a data segment").flags, ACK | PSH);
}

#[test]
fn ce_marked_data_is_echoed_with_ece_only_with_ecn() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::TS | cfg::ECN,
        ..Default::default()
    });
    send!(
        fx,
        Seg {
            ecn: ipv4::ECN_CE,
            ..fx.data(0, 10)
        }
    );
    recv!(
        fx,
        Seg {
            flags: ACK | tcp::ECE,
            ..fx.ours(0, 10, 32_768 - 10)
        }
    );
    send!(
        fx,
        Seg {
            ecn: ipv4::ECN_ECT0,
            ..fx.data(10, 10)
        }
    );
    recv!(fx, fx.ours(0, 20, 32_768 - 20));
    let mut fx = fx_plain();
    send!(
        fx,
        Seg {
            ecn: ipv4::ECN_CE,
            ..fx.data(0, 10)
        }
    );
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
}

fn fx_plain() -> Fx {
    Fx::new(FlowOpts {
        cfg: cfg::TS,
        ..Default::default()
    })
}

/// Sends 3000 bytes (1448, 1448, 104) and consumes the segments.
fn fx_with_3000_in_flight() -> Fx {
    let mut fx = fx();
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.poll(), 3);
    fx.out.frames.clear();
    fx
}

fn dupack(fx: &mut Fx) {
    send!(fx, fx.peer(0));
}

#[test]
fn three_duplicate_acks_trigger_one_fast_retransmit() {
    let mut fx = fx_with_3000_in_flight();
    fx.now += 100_000;
    dupack(&mut fx);
    dupack(&mut fx);
    recv_nothing!(fx);
    assert_eq!(fx.poll(), 0);
    dupack(&mut fx);
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.dupacks, 3);
    // Go back N: everything from snd_una again.
    assert_eq!(fx.poll(), 3);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    recv!(fx, fx.ours_data(1448, 1448, 0, 32_768));
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(2896, 104, 0, 32_768)
        }
    );
    assert_eq!({ fx.flow().cnt_frexmits }, 1);
    assert_eq!(fx.fp.stats.fast_retransmits, 1);
    // The 4th and 5th duplicates do not retransmit again.
    dupack(&mut fx);
    dupack(&mut fx);
    assert_eq!(fx.poll(), 0);
    assert_eq!({ fx.flow().cnt_frexmits }, 1);
    // Progress resets the count; a window change is not a duplicate.
    fx.peer_ack = 1448;
    send!(fx, fx.peer(0));
    dupack(&mut fx);
    dupack(&mut fx);
    fx.peer_win -= 1;
    dupack(&mut fx);
    assert_eq!(fx.poll(), 0);
    assert_eq!({ fx.flow().cnt_frexmits }, 1);
    // Data-carrying segments are not duplicate ACKs either.
    send!(fx, fx.data(0, 1));
    send!(fx, fx.data(1, 1));
    send!(fx, fx.data(2, 1));
    fx.out.frames.clear();
    assert_eq!(fx.poll(), 0);
    assert_eq!(fx.fp.stats.fast_retransmits, 1);
}

#[test]
fn duplicates_during_recovery_do_not_rewind_again() {
    let mut fx = fx_with_3000_in_flight();
    for _ in 0..3 {
        dupack(&mut fx);
    }
    assert_eq!(fx.poll(), 3);
    fx.out.frames.clear();
    // Segments still in flight from the first round draw more duplicates.
    for _ in 0..9 {
        dupack(&mut fx);
    }
    assert_eq!(fx.poll(), 0);
    assert_eq!({ fx.flow().cnt_frexmits }, 1);
    // Progress ends recovery; a new loss is recovered again.
    fx.peer_ack = 1448;
    send!(fx, fx.peer(0));
    for _ in 0..3 {
        dupack(&mut fx);
    }
    assert_eq!({ fx.flow().cnt_frexmits }, 2);
    assert_eq!(fx.poll(), 2);
}

#[test]
fn ack_beyond_sent_after_go_back_n_is_accepted() {
    let mut fx = fx_with_3000_in_flight();
    for _ in 0..3 {
        dupack(&mut fx);
    }
    // Retransmit only the first segment, then the peer (which had the rest)
    // acknowledges everything.
    assert_eq!(fx.fp.poll_tx(fx.now, 1, &fx.mem, &mut fx.out), 1);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    fx.peer_ack = 3000;
    send!(fx, fx.peer(0));
    assert_eq!(fx.fp.stats.future_acks, 0);
    let f = fx.flow();
    assert_eq!(
        ({ f.tx_sent }, { f.tx_avail }, { f.tx_next_seq }),
        (0, 0, fx.lseq(3000))
    );
    assert_eq!({ f.tx_next_pos }, 3000);
    assert_eq!({ f.cnt_ackb }, 3000);
    assert_eq!(fx.notifications(), vec![fx.ev(0, 3000, 0)]);
    assert_eq!(fx.poll(), 0);
    recv_nothing!(fx);
    // And the stream continues where it should.
    fx.write(10, 0).unwrap();
    fx.poll();
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(3000, 10, 0, 32_768)
        }
    );
}

#[test]
fn ack_for_never_sent_data_is_answered_and_dropped() {
    let mut fx = fx_with_3000_in_flight();
    let f = fx.flow();
    fx.peer_ack = 3001;
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(3000, 0, 32_768));
    assert_eq!(fx.fp.stats.future_acks, 1);
    assert_eq!(fx.flow(), f, "segment dropped entirely");
    assert!(fx.notifications().is_empty());
    assert!(fx.mem.regions[MEM as usize][RX_BASE as usize..][..100]
        .iter()
        .all(|&b| b == GUARD));
}

#[test]
fn slow_path_retransmit_goes_back_to_snd_una() {
    let mut fx = fx_with_3000_in_flight();
    fx.peer_ack = 1448;
    send!(fx, fx.peer(0));
    fx.now += 5_000_000;
    fx.fp.retransmit(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 2);
    recv!(fx, fx.ours_data(1448, 1448, 0, 32_768));
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(2896, 104, 0, 32_768)
        }
    );
    assert_eq!({ fx.flow().cnt_frexmits }, 0, "not a fast retransmit");
    // Nothing in flight: a no-op.
    fx.peer_ack = 3000;
    send!(fx, fx.peer(0));
    fx.fp.retransmit(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 0);
    // Unknown flow: ignored.
    fx.fp.retransmit(7, fx.now, &mut fx.out);
    fx.fp.retransmit(1000, fx.now, &mut fx.out);
}

#[test]
fn rate_limit_spaces_segments_and_poll_at_says_when() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::TS | cfg::RATE,
        tx_rate: 10_000, // 10 Mbit/s: 1448 bytes every 1.1584 ms
        ..Default::default()
    });
    assert_eq!(fx.fp.poll_at(), None);
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.fp.poll_at(), Some(0));
    assert_eq!(fx.poll(), 1);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    // A fresh flow starts with the scheduler's catch-up credit.
    let next = T0 - crate::sched::PACING_CREDIT_NS + 1_158_400;
    assert_eq!(fx.fp.poll_at(), Some(next));
    fx.now = next - 1;
    assert_eq!(fx.poll(), 0);
    fx.now = next;
    assert_eq!(fx.poll(), 1);
    recv!(fx, fx.ours_data(1448, 1448, 0, 32_768));
    assert_eq!(fx.fp.poll_at(), Some(next + 1_158_400));
    fx.now = next + 1_158_400;
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(2896, 104, 0, 32_768)
        }
    );
    assert_eq!(fx.fp.poll_at(), None);
    // Without cfg::RATE the same tx_rate is ignored.
    let mut fx = Fx::new(FlowOpts {
        tx_rate: 10_000,
        ..Default::default()
    });
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.poll(), 3);
    fx.out.frames.clear();
}

#[test]
fn peer_zero_window_stops_sending_until_update() {
    let mut fx = fx();
    fx.peer_win = 0;
    send!(fx, fx.peer(0));
    fx.write(100, 0).unwrap();
    assert_eq!(fx.poll(), 0);
    recv_nothing!(fx);
    assert_eq!(fx.fp.poll_at(), None);
    fx.peer_win = 10;
    send!(fx, fx.peer(0));
    assert_eq!(fx.poll(), 1);
    recv!(fx, fx.ours_data(0, 40, 0, 32_768));
    fx.peer_win = 1000;
    send!(fx, fx.peer(0));
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(40, 60, 0, 32_768)
        }
    );
}

#[test]
fn full_nic_batch_loses_nothing() {
    let mut fx = fx();
    fx.write(3000, 0).unwrap();
    fx.out.room = Some(1);
    assert_eq!(fx.poll(), 1);
    assert_eq!(fx.fp.stats.tx_full, 1);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    fx.out.room = Some(0);
    assert_eq!(fx.poll(), 0);
    assert_eq!(fx.fp.poll_at(), Some(0), "still waiting to send");
    fx.out.room = None;
    assert_eq!(fx.poll(), 2);
    recv!(fx, fx.ours_data(1448, 1448, 0, 32_768));
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(2896, 104, 0, 32_768)
        }
    );
    assert_eq!(fx.fp.stats.tx_payload_bytes, 3000);
    // An ACK that finds no room is counted, and the data is still taken.
    fx.out.room = Some(0);
    send!(fx, fx.data(0, 10));
    assert_eq!(fx.fp.stats.tx_full, 3);
    assert_eq!(fx.notifications(), vec![fx.ev(10, 0, 0)]);
}

#[test]
fn window_update_carries_sack_while_ooo_data_is_held() {
    let mut fx = Fx::new(FlowOpts {
        rx_len: 8192,
        rcv_wscale: 0,
        ..Default::default()
    });
    for off in (0..7000).step_by(1000) {
        send!(fx, fx.data(off, 1000));
        recv!(fx, fx.ours(0, off + 1000, 8192 - off - 1000));
    }
    send!(fx, fx.data(7100, 100));
    let sack = vec![(fx.rseq(7100), fx.rseq(7200))];
    recv!(
        fx,
        Seg {
            sack: sack.clone(),
            ..fx.ours(0, 7000, 1192)
        }
    );
    assert_eq!(fx.notifications(), vec![fx.ev(7000, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 7000));
    fx.free().unwrap();
    recv!(
        fx,
        Seg {
            sack,
            ..fx.ours(0, 7000, 8192)
        }
    );
}

// ---------------------------------------------------------------------------
// FIN
// ---------------------------------------------------------------------------

#[test]
fn in_order_fin_with_data() {
    let mut fx = fx();
    send!(
        fx,
        Seg {
            flags: ACK | PSH | FIN,
            ..fx.data(0, 10)
        }
    );
    recv!(fx, fx.ours(0, 11, 32_768 - 10));
    exc!(fx, Exception::FinReceived, Some(fx.id));
    exc_nothing!(fx);
    assert_eq!(fx.notifications(), vec![fx.ev(10, 0, event::F_RX_FIN)]);
    assert_eq!(fx.read(), pat(0, 10));
    assert_ne!(fx.flow().st & st::RX_FIN, 0);
    // The peer retransmits its FIN: ACKed again, nothing else.
    let f = fx.flow();
    send!(
        fx,
        Seg {
            flags: ACK | PSH | FIN,
            ..fx.data(0, 10)
        }
    );
    recv!(fx, fx.ours(0, 11, 32_768 - 10));
    send!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.peer(10)
        }
    );
    recv!(fx, fx.ours(0, 11, 32_768 - 10));
    // Data after the FIN is a retransmission as well (or garbage).
    send!(fx, fx.data(11, 5));
    recv!(fx, fx.ours(0, 11, 32_768 - 10));
    exc_nothing!(fx);
    assert_eq!(fx.flow(), f);
    assert!(fx.notifications().is_empty());
    assert_eq!(fx.fp.stats.dup_segments, 3);
    // The send side is still open.
    fx.write(5, 0).unwrap();
    fx.poll();
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(0, 5, 11, 32_768 - 10)
        }
    );
}

#[test]
fn in_order_fin_alone() {
    let mut fx = fx();
    send!(fx, fx.data(0, 10));
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
    send!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.peer(10)
        }
    );
    recv!(fx, fx.ours(0, 11, 32_768 - 10));
    exc!(fx, Exception::FinReceived, Some(fx.id));
    assert_eq!(fx.notifications(), vec![fx.ev(10, 0, event::F_RX_FIN)]);
    assert_ne!(fx.flow().st & st::RX_FIN_FIRST, 0, "the peer closed first");
}

#[test]
fn peer_fin_after_ours_is_not_marked_first() {
    let mut fx = fx();
    fx.cmd(0, 0, cmd::F_TX_FIN).unwrap();
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.ours(0, 0, 32_768)
        }
    );
    send!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.peer(0)
        }
    );
    let f = fx.flow();
    assert_ne!(f.st & st::RX_FIN, 0);
    assert_eq!(f.st & st::RX_FIN_FIRST, 0, "simultaneous close, ours first");
}

#[test]
fn fin_only_counts_when_in_order_and_complete() {
    let mut fx = fx();
    // Out of order: the FIN is not remembered.
    send!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.peer(10)
        }
    );
    recv!(fx, fx.ours(0, 0, 32_768));
    send!(
        fx,
        Seg {
            flags: ACK | PSH | FIN,
            ..fx.data(20, 10)
        }
    );
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(20), fx.rseq(30))],
            ..fx.ours(0, 0, 32_768)
        }
    );
    exc_nothing!(fx);
    // The gap is filled; the FIN on the held data still has to come again.
    send!(fx, fx.data(0, 20));
    recv!(fx, fx.ours(0, 30, 32_768 - 30));
    assert_eq!(fx.notifications(), vec![fx.ev(30, 0, 0)]);
    exc_nothing!(fx);
    // Retransmission of the whole last segment: data old, FIN new.
    send!(
        fx,
        Seg {
            flags: ACK | PSH | FIN,
            ..fx.data(20, 10)
        }
    );
    recv!(fx, fx.ours(0, 31, 32_768 - 30));
    exc!(fx, Exception::FinReceived, Some(fx.id));
    assert_eq!(fx.notifications(), vec![fx.ev(30, 0, event::F_RX_FIN)]);

    // A FIN whose data is cut by the window is not taken either.
    let mut fx = Fx::new(FlowOpts {
        rx_len: 4096,
        rcv_wscale: 0,
        ..Default::default()
    });
    send!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.data(0, 4100)
        }
    );
    recv!(fx, fx.ours(0, 4096, 0));
    exc_nothing!(fx);
    assert_eq!(fx.flow().st & st::RX_FIN, 0);
    // With a full ring, a bare FIN still fits (it takes no buffer space).
    send!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.peer(4100)
        }
    );
    recv!(fx, fx.ours(0, 4096, 0));
    send!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.peer(4096)
        }
    );
    recv!(fx, fx.ours(0, 4097, 0));
    exc!(fx, Exception::FinReceived, Some(fx.id));
}

#[test]
fn app_fin_rides_on_last_data_segment_and_is_acked() {
    let mut fx = fx();
    fx.write(3000, cmd::F_TX_FIN).unwrap();
    assert_eq!(fx.poll(), 3);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    recv!(fx, fx.ours_data(1448, 1448, 0, 32_768));
    recv!(
        fx,
        Seg {
            flags: ACK | PSH | FIN,
            ..fx.ours_data(2896, 104, 0, 32_768)
        }
    );
    assert_eq!({ fx.flow().tx_sent }, 3001);
    assert_eq!(fx.write(1, 0), Err(AppCmdError::AfterFin));
    // Data acknowledged, FIN not yet.
    fx.peer_ack = 3000;
    send!(fx, fx.peer(0));
    exc_nothing!(fx);
    assert_eq!(fx.notifications(), vec![fx.ev(0, 3000, 0)]);
    fx.peer_ack = 3001;
    send!(fx, fx.peer(0));
    exc!(fx, Exception::FinAcked, Some(fx.id));
    assert_eq!(
        fx.notifications(),
        vec![fx.ev(0, 3000, event::F_TX_FIN_ACKED)]
    );
    let f = fx.flow();
    assert_eq!(
        ({ f.tx_sent }, { f.cnt_ackb }, { f.tx_next_seq }),
        (0, 3000, fx.lseq(3001))
    );
    assert_eq!(fx.poll(), 0);
    recv_nothing!(fx);
    // The peer's FIN after ours: ACKed with our FIN counted.
    send!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.peer(0)
        }
    );
    recv!(fx, fx.ours(3001, 1, 32_768));
    exc!(fx, Exception::FinReceived, Some(fx.id));
    assert_eq!(
        fx.notifications(),
        vec![fx.ev(0, 3000, event::F_RX_FIN | event::F_TX_FIN_ACKED)]
    );
}

#[test]
fn app_fin_alone() {
    let mut fx = fx();
    fx.write(100, 0).unwrap();
    fx.poll();
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(0, 100, 0, 32_768)
        }
    );
    fx.cmd(0, 0, cmd::F_TX_FIN).unwrap();
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.ours(100, 0, 32_768)
        }
    );
    fx.peer_ack = 101;
    send!(fx, fx.peer(0));
    exc!(fx, Exception::FinAcked, Some(fx.id));
    assert_eq!(
        fx.notifications(),
        vec![fx.ev(0, 100, event::F_TX_FIN_ACKED)]
    );
    // A second FIN command changes nothing.
    fx.cmd(0, 0, cmd::F_TX_FIN).unwrap();
    assert_eq!(fx.poll(), 0);
}

#[test]
fn app_fin_is_retransmitted_after_go_back_n() {
    let mut fx = fx();
    fx.write(100, cmd::F_TX_FIN).unwrap();
    fx.poll();
    let fin_seg = Seg {
        flags: ACK | PSH | FIN,
        ..fx.ours_data(0, 100, 0, 32_768)
    };
    recv!(fx, fin_seg.clone());
    for _ in 0..3 {
        dupack(&mut fx);
    }
    assert_eq!(fx.poll(), 1);
    recv!(fx, fin_seg);
    // Data acknowledged, the FIN lost: the slow path's timeout resends it alone.
    fx.peer_ack = 100;
    send!(fx, fx.peer(0));
    fx.now += 10_000_000;
    fx.fp.retransmit(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.ours(100, 0, 32_768)
        }
    );
    fx.peer_ack = 101;
    send!(fx, fx.peer(0));
    exc!(fx, Exception::FinAcked, Some(fx.id));
    assert_eq!(
        fx.notifications(),
        vec![fx.ev(0, 100, event::F_TX_FIN_ACKED)]
    );
}

#[test]
fn fin_ack_beyond_sent_after_go_back_n_is_accepted() {
    let mut fx = fx();
    fx.write(100, cmd::F_TX_FIN).unwrap();
    fx.poll();
    fx.out.frames.clear();
    for _ in 0..3 {
        dupack(&mut fx);
    }
    // Before we resend anything, the peer acknowledges data and FIN.
    fx.peer_ack = 101;
    send!(fx, fx.peer(0));
    exc!(fx, Exception::FinAcked, Some(fx.id));
    assert_eq!(fx.fp.stats.future_acks, 0);
    assert_eq!(
        fx.notifications(),
        vec![fx.ev(0, 100, event::F_TX_FIN_ACKED)]
    );
    let f = fx.flow();
    assert_eq!(({ f.tx_sent }, { f.tx_avail }, { f.cnt_ackb }), (0, 0, 100));
    assert_eq!(fx.poll(), 0);
    recv_nothing!(fx);
}

// ---------------------------------------------------------------------------
// Exceptions and frames that are not ours
// ---------------------------------------------------------------------------

/// Feeds `frame` and checks it became exactly one exception with the frame
/// attached, nothing was sent, and the flow did not change.
#[track_caller]
fn check_exception(fx: &mut Fx, frame: &[u8], reason: Exception, flow: Option<FlowId>) {
    let before = fx.flow();
    let exc = fx.fp.stats.exceptions;
    fx.send_raw(frame);
    match fx.exception() {
        Some((r, f, b)) => {
            assert_eq!((r, f), (reason, flow));
            assert_eq!(b, frame, "the frame goes along");
        }
        None => panic!("expected {reason:?}"),
    }
    exc_nothing!(fx);
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.exceptions, exc + 1);
    assert_eq!(fx.flow(), before);
    assert!(fx.notifications().is_empty());
}

#[test]
fn unusual_segments_on_a_flow_are_exceptions() {
    let mut fx = fx();
    let id = Some(fx.id);
    for (flags, reason) in [
        (tcp::SYN, Exception::Syn),
        (tcp::SYN | ACK, Exception::Syn),
        (tcp::RST, Exception::Rst),
        (tcp::RST | ACK, Exception::Rst),
        (tcp::RST | tcp::SYN | ACK, Exception::Rst),
        (tcp::URG | ACK, Exception::UnusualFlags),
        (PSH, Exception::UnusualFlags),
        (FIN, Exception::UnusualFlags),
        (0, Exception::UnusualFlags),
    ] {
        let f = fx.frame(&Seg {
            flags,
            ..fx.data(0, 10)
        });
        check_exception(&mut fx, &f, reason, id);
    }
    // The flow still works.
    send!(fx, fx.data(0, 10));
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
}

#[test]
fn frames_the_fast_path_does_not_handle_are_exceptions() {
    let mut fx = fx();
    let good = fx.frame(&fx.data(0, 10));
    // Unknown flow: another port, another address.
    let mut f = good.clone();
    f[34..36].copy_from_slice(&(PEER_PORT + 2).to_be_bytes());
    frame::tcp_finish(&mut f, good.len());
    check_exception(&mut fx, &f, Exception::NoFlow, None);
    let mut f = good.clone();
    f[14 + 16..14 + 20].copy_from_slice(&(OUR_IP + 9).to_be_bytes());
    f[24..26].fill(0);
    let c = crate::wire::checksum::ipv4_header(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    frame::tcp_finish(&mut f, good.len());
    check_exception(&mut fx, &f, Exception::NoFlow, None);
    // Bad TCP checksum: never looked up.
    let f = fx.frame(&Seg {
        bad_csum: true,
        ..fx.data(0, 10)
    });
    check_exception(&mut fx, &f, Exception::BadChecksum, None);
    assert_eq!(fx.fp.stats.bad_checksum, 1);
    // ARP.
    let mut f = vec![0u8; 60];
    crate::wire::eth::emit(
        &mut f,
        crate::wire::eth::BROADCAST,
        PEER_MAC,
        crate::wire::eth::ETHERTYPE_ARP,
    )
    .unwrap();
    crate::wire::arp::ArpRepr {
        op: crate::wire::arp::OP_REQUEST,
        sender_mac: PEER_MAC,
        sender_ip: PEER_IP,
        target_mac: [0; 6],
        target_ip: OUR_IP,
    }
    .emit(&mut f[14..])
    .unwrap();
    check_exception(&mut fx, &f, Exception::NotTcp, None);
    // UDP.
    let mut f = good.clone();
    f[23] = ipv4::PROTO_UDP;
    f[24..26].fill(0);
    let c = crate::wire::checksum::ipv4_header(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    check_exception(&mut fx, &f, Exception::NotTcp, None);
    // Malformed: truncated at every length, bad IP checksum, bad version.
    for n in 0..good.len() {
        check_exception(
            &mut fx,
            &good[..n],
            Exception::Malformed(WireError::Truncated),
            None,
        );
    }
    let mut f = good.clone();
    f[22] ^= 1;
    check_exception(
        &mut fx,
        &f,
        Exception::Malformed(WireError::BadChecksum),
        None,
    );
    let mut f = good.clone();
    f[14] = 0x65;
    check_exception(
        &mut fx,
        &f,
        Exception::Malformed(WireError::BadVersion),
        None,
    );
    let mut f = good.clone();
    f[14 + 20 + 12] = 0x30; // TCP data offset 3
    check_exception(
        &mut fx,
        &f,
        Exception::Malformed(WireError::BadHeaderLen),
        None,
    );
    // Nothing of this reached the ring.
    assert!(fx.mem.regions[MEM as usize][RX_BASE as usize..][..10]
        .iter()
        .all(|&b| b == GUARD));
    send!(fx, fx.data(0, 10));
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
}

#[test]
fn slow_path_flow_is_an_exception() {
    let mut fx = fx();
    let id = Some(fx.id);
    fx.set(|f| f.cfg |= cfg::SLOWPATH);
    let f = fx.frame(&fx.data(0, 10));
    check_exception(&mut fx, &f, Exception::SlowPathFlow, id);
    let f = fx.frame(&Seg {
        flags: tcp::RST,
        ..fx.peer(0)
    });
    check_exception(&mut fx, &f, Exception::SlowPathFlow, id);
    fx.set(|f| f.cfg &= !cfg::SLOWPATH);
    send!(fx, fx.data(0, 10));
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
}

#[test]
fn frames_for_another_mac_are_ignored() {
    let mut fx = fx();
    let mut f = fx.frame(&fx.data(0, 10));
    f[..6].copy_from_slice(&OTHER_MAC);
    let before = fx.flow();
    fx.send_raw(&f);
    recv_nothing!(fx);
    exc_nothing!(fx);
    assert_eq!(fx.flow(), before);
    assert_eq!(fx.fp.stats.not_for_us, 1);
    assert_eq!(fx.fp.stats.exceptions, 0);
    // Broadcast is taken, and with `any_mac` everything is.
    f[..6].copy_from_slice(&crate::wire::eth::BROADCAST);
    fx.send_raw(&f);
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
    fx.fp = FastPath::new(
        Arc::clone(fx.fp.table()),
        Config {
            local_mac: OUR_MAC,
            ttl: 64,
            any_mac: true,
        },
    );
    let mut f = fx.frame(&fx.data(10, 10));
    f[..6].copy_from_slice(&OTHER_MAC);
    fx.send_raw(&f);
    recv!(fx, fx.ours(0, 20, 32_768 - 20));
}

// ---------------------------------------------------------------------------
// App commands and notifications
// ---------------------------------------------------------------------------

#[test]
fn invalid_app_commands_are_refused_counted_and_change_nothing() {
    let mut fx = fx();
    // Some state first: 100 bytes received, 100 queued for sending.
    send!(fx, fx.data(0, 100));
    fx.out.frames.clear();
    fx.notifications();
    fx.write(100, 0).unwrap();
    let good = AppCmd {
        kind: cmd::FLOW_UPDATE,
        flow: fx.id,
        ..Default::default()
    };
    let cases = [
        (MEM, AppCmd { kind: 0, ..good }, AppCmdError::BadKind(0)),
        (MEM, AppCmd { kind: 9, ..good }, AppCmdError::BadKind(9)),
        (MEM, AppCmd { flow: 6, ..good }, AppCmdError::NoFlow),
        (
            MEM,
            AppCmd {
                flow: 1 << 30,
                ..good
            },
            AppCmdError::NoFlow,
        ),
        (
            OTHER_MEM,
            AppCmd {
                tx_added: 1,
                ..good
            },
            AppCmdError::NotOwner,
        ),
        (
            MEM,
            AppCmd {
                flow: fx.decoy,
                ..good
            },
            AppCmdError::NotOwner,
        ),
        (
            MEM,
            AppCmd {
                tx_added: 32_768 - 99,
                ..good
            },
            AppCmdError::TxOverflow,
        ),
        (
            MEM,
            AppCmd {
                tx_added: u32::MAX,
                ..good
            },
            AppCmdError::TxOverflow,
        ),
        (
            MEM,
            AppCmd {
                rx_freed: 101,
                ..good
            },
            AppCmdError::RxOverflow,
        ),
        (
            MEM,
            AppCmd {
                rx_freed: u32::MAX,
                ..good
            },
            AppCmdError::RxOverflow,
        ),
        // All or nothing: a valid TX part does not go through either.
        (
            MEM,
            AppCmd {
                tx_added: 10,
                rx_freed: 101,
                ..good
            },
            AppCmdError::RxOverflow,
        ),
    ];
    let before = fx.flow();
    for (i, (mem, c, err)) in cases.iter().enumerate() {
        assert_eq!(
            fx.fp.app_cmd(*mem, c, fx.now, &fx.mem, &mut fx.out),
            Err(*err),
            "case {i}"
        );
        assert_eq!(fx.fp.stats.app_cmd_invalid, i as u64 + 1);
        assert_eq!(fx.flow(), before, "case {i}");
    }
    recv_nothing!(fx);
    assert!(fx.notifications().is_empty());
    // The limits themselves are fine.
    assert_eq!(fx.cmd(32_768 - 100, 100, 0), Ok(()));
    assert_eq!(fx.fp.stats.app_cmd_invalid, cases.len() as u64);
    // After FIN: no more data, but freeing RX is still fine.
    let mut fx2 = self::fx();
    send!(fx2, fx2.data(0, 100));
    fx2.out.frames.clear();
    fx2.cmd(0, 0, cmd::F_TX_FIN).unwrap();
    let before = fx2.flow();
    assert_eq!(fx2.cmd(1, 0, 0), Err(AppCmdError::AfterFin));
    assert_eq!(fx2.cmd(1, 0, cmd::F_TX_FIN), Err(AppCmdError::AfterFin));
    assert_eq!(fx2.flow(), before);
    assert_eq!(fx2.cmd(0, 100, 0), Ok(()));
    // Data and FIN in one command is fine.
    let mut fx3 = self::fx();
    fx3.write(10, cmd::F_TX_FIN).unwrap();
    fx3.poll();
    recv!(
        fx3,
        Seg {
            flags: ACK | PSH | FIN,
            ..fx3.ours_data(0, 10, 0, 32_768)
        }
    );
}

#[test]
fn notification_back_pressure_keeps_the_flow_pending_and_coalesces() {
    let mut fx = fx();
    send!(fx, fx.data(0, 10));
    fx.out.frames.clear();
    assert_eq!(fx.fp.pending_notifications(), 1);
    let mut tries = 0;
    assert_eq!(
        fx.fp.flush_notifications(|_, _| {
            tries += 1;
            false
        }),
        0
    );
    assert_eq!(tries, 1);
    assert_eq!(fx.fp.pending_notifications(), 1);
    assert_eq!(fx.fp.stats.notify_backpressure, 1);
    // More progress while the queue is full: still one pending entry.
    send!(fx, fx.data(10, 10));
    fx.write(100, 0).unwrap();
    fx.poll();
    fx.peer_ack = 100;
    send!(fx, fx.data(20, 10));
    fx.out.frames.clear();
    assert_eq!(fx.fp.pending_notifications(), 1);
    assert_eq!(fx.fp.flush_notifications(|_, _| false), 0);
    assert_eq!(fx.fp.stats.notify_backpressure, 2);
    // Room again: one notification with the latest sequence numbers.
    assert_eq!(fx.notifications(), vec![fx.ev(30, 100, 0)]);
    assert_eq!(fx.fp.pending_notifications(), 0);
    assert!(fx.notifications().is_empty());
    assert_eq!(fx.read(), pat(0, 30));
}

#[test]
fn notifications_for_a_removed_flow_are_dropped() {
    let mut fx = fx();
    send!(fx, fx.data(0, 10));
    fx.out.frames.clear();
    let st = fx.fp.table().remove(fx.id).unwrap();
    assert!(fx.notifications().is_empty());
    assert_eq!(fx.fp.pending_notifications(), 0);
    fx.id = fx.fp.table().insert(st).unwrap();
}

#[test]
fn keepalive_and_zero_window_probes_are_answered() {
    // Linux probes with a zero-length segment at rcv_nxt - 1 (keepalive and
    // persist timer alike) and resets the connection if nobody answers.
    let mut fx = Fx::new(FlowOpts {
        rx_len: 4096,
        rcv_wscale: 0,
        ..Default::default()
    });
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(0, 100, 3996));
    let before = fx.flow();
    fx.now += 75_000_000_000;
    send!(fx, fx.peer(99));
    recv!(fx, fx.ours(0, 100, 3996));
    assert_eq!(fx.flow(), before);
    // BSD-style keepalive: one garbage byte at rcv_nxt - 1, not written.
    send!(
        fx,
        Seg {
            payload: vec![0xee],
            ..fx.peer(99)
        }
    );
    recv!(fx, fx.ours(0, 100, 3996));
    assert_eq!(fx.notifications(), vec![fx.ev(100, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 100));
    // Zero window: the probe learns whether it opened.
    send!(fx, fx.data(100, 3996));
    recv!(fx, fx.ours(0, 4096, 0));
    send!(fx, fx.peer(4095));
    recv!(fx, fx.ours(0, 4096, 0));
    fx.notifications();
    fx.read();
    fx.free().unwrap();
    recv!(fx, fx.ours(0, 4096, 4096));
    // Say that window update was lost: the next probe gets the news.
    send!(fx, fx.peer(4095));
    recv!(fx, fx.ours(0, 4096, 4096));
    // A pure ACK in sequence needs no answer.
    send!(fx, fx.peer(4096));
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.dupacks, 0, "probes are not duplicate ACKs here");
}

#[test]
fn rings_outside_the_region_are_memory_errors_not_panics() {
    let mut fx = fx();
    let size = fx.mem.regions[MEM as usize].len() as u32;
    // The slow path points the rings past the end of the app's region (a
    // region that shrank, a bad install): counted, nothing written or sent.
    fx.set(|f| {
        f.rx_base = size - 10;
        f.tx_base = size - 10;
    });
    let before = fx.flow();
    send!(fx, fx.data(0, 100));
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.mem_errors, 1);
    assert_eq!(fx.flow(), before);
    assert!(fx.notifications().is_empty());
    fx.write(100, 0).unwrap();
    assert_eq!(fx.poll(), 0);
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.mem_errors, 2);
    assert_eq!(fx.out.empty_fills, 1);
    assert_eq!({ fx.flow().tx_avail }, 100, "nothing counted as sent");
    assert_eq!(fx.fp.poll_at(), None, "and no busy loop on it");
    // Out-of-order data into a bad ring: dropped, still ACKed.
    send!(fx, fx.data(200, 10));
    recv!(fx, fx.ours(0, 0, 32_768));
    assert_eq!(fx.fp.stats.mem_errors, 3);
    assert_eq!({ fx.flow().rx_ooo_len }, 0);
    fx.set(|f| {
        f.rx_base = RX_BASE;
        f.tx_base = RX_BASE + 32_768 + 64;
    });
}
