//! Property and fuzz-style tests of the fast path through its public API.
//!
//! 1. `rx_never_panics`: random bytes, random mutations of valid frames
//!    (with and without a fixed-up checksum, so mutations reach the TCP
//!    logic) and random app commands into one [`FastPath`]; nothing panics,
//!    the flow's bookkeeping stays consistent, nothing is written outside
//!    the rings.
//! 2. `rx_random_segment_sequences`: a peer sends a random byte stream as
//!    random segments (duplicates, overlaps, reordering, beyond the window,
//!    FIN at the end) while the app reads and frees at random. After every
//!    step: the app has read exactly a prefix of the stream, the flow never
//!    holds more than the ring (`accepted - freed == rx_len - rx_avail`),
//!    our ACK numbers never go backwards, the out-of-order bytes held are
//!    the stream's. Finally everything is retransmitted in order and the
//!    whole stream (and FIN) must arrive. Every ACK's SACK option is
//!    checked against the intervals held (most recent first, as many as
//!    fit) and every D-SACK block against what the peer sent twice.
//! 3. `rx_sack_recovery_with_many_holes`: a SACK sender over a link that
//!    loses, duplicates and reorders sends a long stream into windows that
//!    hold many holes at once; it retransmits only what our cumulative ACK
//!    and SACK blocks do not cover, and forgets its SACK information only
//!    when it has nothing left to send (its timeout). The stream arrives
//!    byte for byte, and unless that timeout fired (we forgot an interval
//!    to make room) the sender never sent a byte we held.
//! 4. `tx_random_loss_and_acks`: the app sends a random stream over a link
//!    that drops, duplicates and reorders; a peer with a reassembly buffer
//!    ACKs what it has (with SACK blocks when negotiated, sometimes
//!    reneging on them), sometimes closing its window; the slow path's
//!    timeout (`retransmit`) and tail-loss probe (`probe`) fire at random.
//!    Every segment carries the right bytes and stays in the window,
//!    acknowledgements only move forward, and after a clean phase the peer
//!    has the whole stream.
//!
//! Seeds are fixed (xorshift64*, no extra dependencies), so a failure
//! replays; the failing seed is in the panic message.

use std::collections::VecDeque;
use std::sync::Arc;
use tas_abi::{cmd, event, AppCmd, AppEvent, VecMem};
use tas_engine::engine::{self, ts_now, Config, Exception, FastPath, Output};
use tas_engine::flow::{cfg, st, FlowState, RxCold, RX_OOO_MAX};
use tas_engine::flowtable::{FlowId, FlowTable};
use tas_engine::seq;
use tas_engine::wire::{eth, frame, ipv4, tcp};

use tas_testkit::addr::{A_IP4 as OUR_IP, A_MAC as OUR_MAC, B_IP4 as PEER_IP, B_MAC as PEER_MAC};
const OUR_PORT: u16 = 5001;
const PEER_PORT: u16 = 43_210;
const MEM: u16 = 0;
const GUARD: u8 = 0x5c;
const RX_BASE: u32 = 64;

use tas_testkit::Rng;

#[derive(Default)]
struct Cap {
    frames: Vec<Vec<u8>>,
    exceptions: Vec<(Exception, Option<FlowId>)>,
    scratch: Vec<u8>,
}

impl Output for Cap {
    fn tx_buf(&mut self) -> Option<&mut [u8]> {
        self.scratch = vec![0u8; 2048];
        Some(&mut self.scratch)
    }
    fn tx_commit(&mut self, n: usize) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.truncate(n);
        self.frames.push(buf);
    }
    fn exception(&mut self, reason: Exception, flow: Option<FlowId>, _frame: &[u8]) {
        self.exceptions.push((reason, flow));
    }
    fn forward(&mut self, lane: u16, id: FlowId) {
        panic!("single-lane engine forwarded flow {id} to lane {lane}");
    }
}

/// A segment we sent, parsed back (and checked to be well formed).
#[derive(Debug)]
struct Out {
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    ts: Option<(u32, u32)>,
    sack: Vec<(u32, u32)>,
    payload: Vec<u8>,
}

fn parse_ours(b: &[u8]) -> Out {
    let fr = frame::parse_tcp_frame(b).expect("our frames parse");
    assert_eq!((fr.eth.src(), fr.eth.dst()), (OUR_MAC, PEER_MAC));
    assert_eq!((fr.ip.src(), fr.ip.dst()), (OUR_IP, PEER_IP));
    assert!(tcp::verify_checksum(
        fr.ip.src(),
        fr.ip.dst(),
        fr.ip.payload()
    ));
    let t = fr.tcp.repr().expect("our options parse");
    assert_eq!((t.src_port, t.dst_port), (OUR_PORT, PEER_PORT));
    Out {
        seq: t.seq,
        ack: t.ack,
        flags: t.flags,
        window: t.window,
        ts: t.options.timestamp,
        sack: t.options.sack_blocks[..t.options.sack_count as usize].to_vec(),
        payload: fr.tcp.payload().to_vec(),
    }
}

/// A frame from the peer.
#[allow(clippy::too_many_arguments)]
fn peer_frame(
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    ts: Option<(u32, u32)>,
    sack: &[(u32, u32)],
    payload: &[u8],
    ecn: u8,
) -> Vec<u8> {
    let mut opts = tcp::TcpOptions {
        timestamp: ts,
        ..Default::default()
    };
    for (slot, b) in opts.sack_blocks.iter_mut().zip(sack) {
        *slot = *b;
    }
    opts.sack_count = sack.len().min(4) as u8;
    let h = frame::FrameHdr {
        src_mac: PEER_MAC,
        dst_mac: OUR_MAC,
        src_ip: PEER_IP,
        dst_ip: OUR_IP,
        ttl: 64,
        ecn,
        ident: 0,
    };
    let t = tcp::TcpRepr {
        src_port: PEER_PORT,
        dst_port: OUR_PORT,
        seq,
        ack,
        flags,
        window,
        options: opts,
    };
    let mut buf = vec![0u8; 128 + payload.len()];
    let n = frame::tcp_frame(&mut buf, &h, &t, payload).unwrap();
    buf.truncate(n);
    buf
}

struct Setup {
    irs: u32,
    iss: u32,
    cfg: u16,
    mss: u16,
    snd_wscale: u8,
    rcv_wscale: u8,
    rx_len: u32,
    tx_len: u32,
    rx_pos0: u32,
    tx_pos0: u32,
    peer_wnd: u32,
    tx_cwnd: u32,
}

/// The fast path with one installed flow and its payload region.
struct World {
    fp: FastPath,
    mem: VecMem,
    out: Cap,
    id: FlowId,
    tx_base: u32,
    s: Setup,
}

impl World {
    fn new(s: Setup) -> World {
        let tx_base = RX_BASE + s.rx_len + 64;
        let mut mem = VecMem::new(1, (tx_base + s.tx_len + 64) as usize);
        mem.regions[0].fill(GUARD);
        let table = Arc::new(FlowTable::new(4));
        let id = table
            .insert(FlowState {
                opaque: 42,
                local_ip: OUR_IP,
                remote_ip: PEER_IP,
                local_port: OUR_PORT,
                remote_port: PEER_PORT,
                remote_mac: PEER_MAC,
                context: 1,
                mem: MEM,
                cfg: s.cfg,
                mss: s.mss,
                snd_wscale: s.snd_wscale,
                rcv_wscale: s.rcv_wscale,
                rx_base: RX_BASE,
                rx_len: s.rx_len,
                tx_base,
                tx_len: s.tx_len,
                tx_cwnd: s.tx_cwnd,
                rx_avail: s.rx_len,
                rx_next_pos: s.rx_pos0,
                rx_next_seq: s.irs.wrapping_add(1),
                rx_remote_avail: s.peer_wnd,
                tx_next_pos: s.tx_pos0,
                tx_next_seq: s.iss.wrapping_add(1),
                tx_next_ts: 1,
                ..Default::default()
            })
            .unwrap();
        let fp = FastPath::new(
            table,
            Config {
                local_mac: OUR_MAC,
                ttl: 64,
                any_mac: false,
                ack_delay_ns: 0,
            },
        );
        World {
            fp,
            mem,
            out: Cap::default(),
            id,
            tx_base,
            s,
        }
    }

    fn flow(&self) -> FlowState {
        *self.fp.table().lock(self.id).unwrap()
    }

    fn cold(&self) -> RxCold {
        self.fp.table().lock(self.id).unwrap().cold().rx
    }

    /// One frame, as a poll round of its own (its ACK, if any, goes out).
    fn rx(&mut self, frame: &[u8], now: u64) {
        self.fp.rx(frame, now, &mut self.mem, &mut self.out);
        self.fp.end_round(now, &self.mem, &mut self.out);
    }

    fn app_cmd(&mut self, tx_added: u32, rx_freed: u32, flags: u8, now: u64) -> bool {
        let c = AppCmd {
            kind: cmd::FLOW_UPDATE,
            flags,
            flow: self.id,
            tx_added,
            rx_freed,
            ..Default::default()
        };
        self.fp
            .app_cmd(MEM, &c, now, &self.mem, &mut self.out)
            .is_ok()
    }

    fn events(&mut self) -> Vec<AppEvent> {
        let mut v = Vec::new();
        self.fp.flush_notifications(|_, e| {
            v.push(*e);
            true
        });
        v
    }

    fn ring_read(&self, base: u32, len: u32, pos: u32, n: u32) -> Vec<u8> {
        (0..n)
            .map(|i| self.mem.regions[0][(base + (pos + i) % len) as usize])
            .collect()
    }

    fn ring_write(&mut self, base: u32, len: u32, pos: u32, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            self.mem.regions[0][(base + (pos + i as u32) % len) as usize] = b;
        }
    }

    /// Internal consistency of the flow's bookkeeping.
    fn check_flow(&self) {
        let f = self.flow();
        assert!(f.rx_avail <= f.rx_len, "rx_avail {} > rx_len", {
            f.rx_avail
        });
        assert!(f.rx_next_pos < f.rx_len);
        assert!(f.rx_ooo_len <= f.rx_avail);
        // The out-of-order intervals: non-empty, ahead of RCV.NXT, inside
        // the window, disjoint and not adjacent; the hot pair is the lowest.
        let c = self.cold();
        let iv = c.intervals();
        assert!(iv.len() <= RX_OOO_MAX);
        assert_eq!(f.rx_ooo_len == 0, iv.is_empty(), "hot mirror vs intervals");
        let edge = f.rx_next_seq.wrapping_add(f.rx_avail);
        for (i, &(s, e)) in iv.iter().enumerate() {
            assert!(seq::lt(s, e), "empty interval");
            assert!(seq::gt(s, f.rx_next_seq), "ooo interval not ahead");
            assert!(seq::le(e, edge), "ooo beyond ring");
            for &(s2, e2) in &iv[i + 1..] {
                assert!(
                    seq::lt(e, s2) || seq::lt(e2, s),
                    "intervals {:?} overlap or touch",
                    iv
                );
            }
        }
        if let Some(&(s, e)) = iv.iter().min_by_key(|iv| iv.0.wrapping_sub(f.rx_next_seq)) {
            assert_eq!((f.rx_ooo_start, f.rx_ooo_len), (s, e.wrapping_sub(s)));
        }
        assert!(f.tx_next_pos < f.tx_len);
        assert!(
            f.tx_avail as u64 + f.tx_data_in_flight() as u64 <= f.tx_len as u64,
            "TX ring over-committed: avail {} in flight {}",
            { f.tx_avail },
            f.tx_data_in_flight()
        );
    }

    /// Nothing outside the rings was written.
    fn check_guards(&self) {
        let rx = RX_BASE as usize..(RX_BASE + self.s.rx_len) as usize;
        let tx = self.tx_base as usize..(self.tx_base + self.s.tx_len) as usize;
        for (i, &b) in self.mem.regions[0].iter().enumerate() {
            assert!(
                rx.contains(&i) || tx.contains(&i) || b == GUARD,
                "byte {i} written"
            );
        }
    }
}

fn random_setup(rng: &mut Rng) -> Setup {
    let near_wrap = |rng: &mut Rng| match rng.below(3) {
        0 => rng.next_u32(),
        1 => u32::MAX - rng.below(70_000),
        _ => rng.below(70_000),
    };
    let rx_len = rng.pick(&[300, 1000, 4096, 8192, 65_536]);
    let tx_len = rng.pick(&[700, 3000, 16_384]);
    let mut c = 0;
    for f in [cfg::TS, cfg::SACK, cfg::ECN] {
        if rng.one_in(2) {
            c |= f;
        }
    }
    let snd_wscale = rng.below(4) as u8;
    Setup {
        irs: near_wrap(rng),
        iss: near_wrap(rng),
        cfg: c,
        mss: rng.pick(&[100, 536, 1460]),
        snd_wscale,
        rcv_wscale: rng.below(4) as u8,
        rx_len,
        tx_len,
        rx_pos0: rng.below(rx_len),
        tx_pos0: rng.below(tx_len),
        peer_wnd: ((1000 + rng.below(20_000)) >> snd_wscale) << snd_wscale,
        tx_cwnd: if rng.one_in(3) {
            500 + rng.below(5000)
        } else {
            0
        },
    }
}

/// Wall-clock cap per property, so a slow machine still finishes.
fn budget(secs: u64) -> impl Fn() -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    move || std::time::Instant::now() < end
}

// ---------------------------------------------------------------------------
// 1. Nothing panics
// ---------------------------------------------------------------------------

/// Valid frames of `w`'s flow (data, ACK, FIN, with TS and SACK options)
/// and an ARP request, to mutate.
fn fuzz_templates(w: &World) -> Vec<Vec<u8>> {
    let (irs, iss) = (w.s.irs, w.s.iss);
    let mut templates = Vec::new();
    for (off, flags, n) in [
        (0u32, tcp::ACK | tcp::PSH, 100usize),
        (500, tcp::ACK, 0),
        (50, tcp::ACK | tcp::FIN, 10),
    ] {
        let p: Vec<u8> = (0..n).map(|i| i as u8).collect();
        templates.push(peer_frame(
            irs.wrapping_add(1 + off),
            iss.wrapping_add(1),
            flags,
            1000,
            Some((7, 8)),
            &[(irs.wrapping_add(900), irs.wrapping_add(1000))],
            &p,
            ipv4::ECN_CE,
        ));
    }
    let mut arp = vec![0u8; 42];
    eth::emit(&mut arp, eth::BROADCAST, PEER_MAC, eth::ETHERTYPE_ARP).unwrap();
    templates.push(arp);
    templates
}

fn add_stats(t: &mut engine::Stats, s: &engine::Stats) {
    t.add(s);
}

#[test]
fn rx_never_panics() {
    let time_left = budget(8);
    let mut rng = Rng::mixed(0x5eed);
    let mut w = World::new(random_setup(&mut rng));
    let mut templates = fuzz_templates(&w);
    let mut total = engine::Stats::default();
    let mut buf = vec![0u8; 300];
    let mut now = 1_000_000_000u64;
    let mut iters = 0u32;
    for i in 0..400_000u32 {
        if i % 1024 == 0 && !time_left() {
            break;
        }
        if i % 4096 == 4095 {
            // A fresh flow now and then: a random FIN or a full ring makes
            // an old one uninteresting.
            w.check_guards();
            add_stats(&mut total, &w.fp.stats);
            w = World::new(random_setup(&mut rng));
            templates = fuzz_templates(&w);
        }
        let (irs, iss) = (w.s.irs, w.s.iss);
        iters += 1;
        now += rng.below(100_000) as u64;
        let frame: &[u8] = match rng.below(4) {
            0 => {
                let n = rng.below(buf.len() as u32 + 1) as usize;
                rng.fill(&mut buf[..n]);
                &buf[..n]
            }
            1 | 2 => {
                let t = &templates[rng.below(templates.len() as u32) as usize];
                let n = t.len();
                buf[..n].copy_from_slice(t);
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(n as u32) as usize;
                    buf[at] = rng.next_u32() as u8;
                }
                if rng.one_in(2) {
                    // Make the TCP checksum right again so the mutation
                    // reaches the flow's TCP processing.
                    frame::tcp_finish(&mut buf, n);
                }
                let cut = if rng.one_in(8) {
                    rng.below(n as u32 + 1) as usize
                } else {
                    n
                };
                &buf[..cut]
            }
            _ => {
                // A well-formed segment of the flow with random fields,
                // mostly near the flow's current sequence state.
                let n = rng.below(200) as usize;
                let mut p = vec![0u8; n];
                rng.fill(&mut p);
                let f = w.flow();
                let seq_no = match rng.below(4) {
                    0 => irs.wrapping_add(rng.below(70_000)).wrapping_sub(1000),
                    1 => rng.next_u32(),
                    _ => f.rx_next_seq.wrapping_add(rng.below(600)).wrapping_sub(100),
                };
                let ack = match rng.below(4) {
                    0 => iss.wrapping_add(rng.below(5000)).wrapping_sub(100),
                    1 => rng.next_u32(),
                    _ => f
                        .snd_una()
                        .wrapping_add(rng.below(f.tx_sent + f.tx_avail + 3)),
                };
                let flags = if rng.one_in(4) {
                    rng.next_u32() as u8
                } else {
                    tcp::ACK | (rng.next_u32() as u8 & (tcp::PSH | tcp::FIN | tcp::ECE | tcp::CWR))
                };
                let f = peer_frame(
                    seq_no,
                    ack,
                    flags,
                    rng.next_u32() as u16,
                    if rng.one_in(2) {
                        Some((rng.next_u32(), rng.next_u32()))
                    } else {
                        None
                    },
                    &[],
                    &p,
                    rng.below(4) as u8,
                );
                buf[..f.len()].copy_from_slice(&f);
                &buf[..f.len()]
            }
        };
        let frame = frame.to_vec();
        w.rx(&frame, now);
        match rng.below(8) {
            0 => {
                w.fp.poll_tx(now, 8, &w.mem, &mut w.out);
            }
            1 => {
                let c = AppCmd {
                    kind: if rng.one_in(8) {
                        rng.next_u32() as u8
                    } else {
                        cmd::FLOW_UPDATE
                    },
                    flags: rng.next_u32() as u8 & if rng.one_in(20) { 0xff } else { 0 },
                    flow: if rng.one_in(8) { rng.next_u32() } else { w.id },
                    tx_added: if rng.one_in(4) {
                        rng.next_u32()
                    } else {
                        rng.below(3000)
                    },
                    rx_freed: if rng.one_in(4) {
                        rng.next_u32()
                    } else {
                        rng.below(3000)
                    },
                    ..Default::default()
                };
                let _ =
                    w.fp.app_cmd(rng.below(2) as u16, &c, now, &w.mem, &mut w.out);
            }
            2 => {
                w.fp.flush_notifications(|_, _| rng.one_in(2));
            }
            3 => w.fp.retransmit(w.id, now, &mut w.out),
            _ => {}
        }
        w.check_flow();
        for f in w.out.frames.drain(..) {
            parse_ours(&f);
        }
        w.out.exceptions.clear();
    }
    w.check_guards();
    add_stats(&mut total, &w.fp.stats);
    assert!(iters > 20_000, "only {iters} iterations in the time budget");
    let s = total;
    // The mix reached every part of the receive path.
    assert!(
        s.rx_payload_bytes > 0 && s.exceptions > 0 && s.bad_checksum > 0,
        "{s:?}"
    );
    assert!(
        s.dup_segments > 0 && s.ooo_accepted > 0 && s.acks_sent > 0,
        "{s:?}"
    );
    assert!(
        s.dupacks > 0 && s.future_acks > 0 && s.tx_payload_bytes > 0,
        "{s:?}"
    );
}

// ---------------------------------------------------------------------------
// 2. Receive: random segment sequences
// ---------------------------------------------------------------------------

/// The SACK option of one of our pure ACKs against what the flow holds
/// (`held`, unchanged since the ACK was built): with SACK negotiated, an
/// optional D-SACK block first (RFC 2883 §4: below the ACK, or inside the
/// block after it), covering bytes `sent_twice` says the peer sent more
/// than once; then exactly the most recently changed intervals, in that
/// order (RFC 2018 §4), as many as fit (three beside a timestamp, four
/// without). Nothing without SACK.
fn check_sack(
    o: &Out,
    held: &RxCold,
    ts_on: bool,
    sack_on: bool,
    sent_twice: impl Fn(u32, u32) -> bool,
) -> Result<(), String> {
    if !sack_on {
        return if o.sack.is_empty() {
            Ok(())
        } else {
            Err("SACK blocks without SACK".into())
        };
    }
    let room = if ts_on { 3 } else { 4 };
    if o.sack.len() > room {
        return Err(format!("{} blocks, room for {room}", o.sack.len()));
    }
    let mut blocks = &o.sack[..];
    if let Some(&(s, e)) = blocks.first() {
        let inside_next = blocks
            .get(1)
            .is_some_and(|&(s2, e2)| seq::le(s2, s) && seq::le(e, e2));
        if seq::le(e, o.ack) || inside_next {
            if !seq::lt(s, e) {
                return Err("empty D-SACK block".into());
            }
            if !sent_twice(s, e) {
                return Err(format!("D-SACK {s}..{e} for bytes sent once"));
            }
            blocks = &blocks[1..];
        }
    }
    let iv = held.intervals();
    let want = iv.len().min(room - (o.sack.len() - blocks.len()));
    if blocks != &iv[..want] {
        return Err(format!("blocks vs held intervals {iv:?}"));
    }
    Ok(())
}

/// The app side of the receive property.
struct RxApp {
    /// Ring position of the next byte to read.
    pos: u32,
    /// Stream offset read so far.
    read: u32,
    /// Read but not freed.
    unfreed: u32,
    freed: u64,
    rx_seq: u32,
    fin: bool,
}

/// One random receive case: its counters and the most out-of-order
/// intervals held at once.
fn rx_case(seed: u64) -> (engine::Stats, usize) {
    let mut rng = Rng::mixed(seed);
    let mut w = World::new(random_setup(&mut rng));
    let (irs, iss, rx_len) = (w.s.irs, w.s.iss, w.s.rx_len);
    let ts_on = w.s.cfg & cfg::TS != 0;
    let cap = if rng.one_in(2) { 3000 } else { 40_000 };
    let len = 1 + rng.below(cap);
    let mut stream = vec![0u8; len as usize];
    rng.fill(&mut stream);
    let send_fin = rng.one_in(2);
    let rseq = |off: u32| irs.wrapping_add(1).wrapping_add(off);
    let mut app = RxApp {
        pos: w.s.rx_pos0,
        read: 0,
        unfreed: 0,
        freed: 0,
        rx_seq: rseq(0),
        fin: false,
    };
    let mut now = 5_000_000_000u64;
    let mut peer_ts = rng.next_u32();
    // What the peer learned from our ACKs: acknowledged offset and the right
    // edge of the window (offsets; may exceed len).
    let mut acked = 0u32;
    let mut edge = rx_len >> w.s.rcv_wscale << w.s.rcv_wscale;
    let mut last_ack: Option<u32> = None;
    let mut right_edge = rseq(0).wrapping_add(rx_len);
    let mut fin_exceptions = 0;
    // How often the peer sent each stream byte (a D-SACK block may only
    // report bytes sent at least twice).
    let mut sent = vec![0u8; len as usize];
    let sack_on = w.s.cfg & cfg::SACK != 0;

    // Checks our ACKs and feeds what they say to the peer model.
    let take_acks = |w: &mut World,
                     acked: &mut u32,
                     edge: &mut u32,
                     last_ack: &mut Option<u32>,
                     sent: &[u8]| {
        let held = w.cold();
        for f in w.out.frames.drain(..) {
            let o = parse_ours(&f);
            assert!(o.payload.is_empty(), "seed {seed}: we have nothing to send");
            assert_eq!(o.seq, iss.wrapping_add(1), "seed {seed}");
            assert_eq!(o.flags & (tcp::SYN | tcp::RST | tcp::FIN), 0, "seed {seed}");
            if let Some(prev) = *last_ack {
                assert!(
                    seq::ge(o.ack, prev),
                    "seed {seed}: ACK went back {prev} -> {}",
                    o.ack
                );
            }
            *last_ack = Some(o.ack);
            let off = o.ack.wrapping_sub(rseq(0));
            assert!(
                off <= len + send_fin as u32,
                "seed {seed}: ACK beyond the stream"
            );
            if off == len + 1 {
                assert!(send_fin, "seed {seed}");
            }
            *acked = off.min(len);
            let e = off + ((o.window as u32) << w.s.rcv_wscale);
            *edge = (*edge).max(e);
            assert_eq!(o.ts.is_some(), ts_on, "seed {seed}");
            check_sack(&o, &held, ts_on, sack_on, |s, e| {
                (s.wrapping_sub(rseq(0))..e.wrapping_sub(rseq(0)))
                    .all(|i| sent.get(i as usize).is_some_and(|&n| n >= 2))
            })
            .unwrap_or_else(|m| panic!("seed {seed}: {m}: {:?}", o.sack));
        }
    };

    let read_app = |w: &mut World, app: &mut RxApp| {
        for e in w.events() {
            assert_eq!({ e.opaque }, 42);
            assert!(
                seq::ge(e.rx_seq, app.rx_seq),
                "seed {seed}: rx_seq went back"
            );
            app.rx_seq = e.rx_seq;
            if e.flags & event::F_RX_FIN != 0 {
                assert!(send_fin, "seed {seed}: FIN flag without a FIN");
                assert_eq!(e.rx_seq, rseq(len), "seed {seed}: FIN before the end");
                app.fin = true;
            }
        }
        let n = app.rx_seq.wrapping_sub(rseq(app.read));
        let got = w.ring_read(RX_BASE, rx_len, app.pos, n);
        assert_eq!(
            &got[..],
            &stream[app.read as usize..(app.read + n) as usize],
            "seed {seed}: app read wrong bytes at offset {}",
            app.read
        );
        app.pos = (app.pos + n) % rx_len;
        app.read += n;
        app.unfreed += n;
    };

    let invariants = |w: &World, app: &RxApp, right_edge: &mut u32| {
        w.check_flow();
        let f = w.flow();
        let accepted = f.rx_data_seq().wrapping_sub(rseq(0));
        assert!(accepted <= len, "seed {seed}");
        assert_eq!(
            accepted as u64 - app.freed,
            (rx_len - f.rx_avail) as u64,
            "seed {seed}: ring accounting (accepted {accepted}, freed {})",
            app.freed
        );
        assert!(accepted as u64 <= app.freed + rx_len as u64, "seed {seed}");
        assert_eq!(
            f.rx_next_pos,
            (w.s.rx_pos0 + accepted) % rx_len,
            "seed {seed}"
        );
        let re = f.rx_next_seq.wrapping_add(f.rx_avail);
        assert!(
            seq::ge(re, *right_edge),
            "seed {seed}: acceptance window shrank"
        );
        *right_edge = re;
        // Every interval holds the stream's bytes at its offset.
        for &(s, e) in w.cold().intervals() {
            let off = s.wrapping_sub(rseq(0));
            let n = e.wrapping_sub(s);
            let dist = s.wrapping_sub(f.rx_next_seq);
            let held = w.ring_read(RX_BASE, rx_len, (f.rx_next_pos + dist) % rx_len, n);
            assert!(off + n <= len, "seed {seed}");
            assert_eq!(
                &held[..],
                &stream[off as usize..(off + n) as usize],
                "seed {seed}: out-of-order bytes at offset {off}"
            );
        }
    };

    let mut max_intervals = 0;
    let steps = 20 + rng.below(400);
    for _ in 0..steps {
        now += rng.below(200_000) as u64;
        match rng.below(10) {
            0..=5 => {
                let off = match rng.below(5) {
                    0 => rng.below(len + 1),
                    1 | 2 => acked,
                    _ => {
                        let lo = acked.saturating_sub(rng.below(300));
                        (lo + rng.below(edge.saturating_sub(lo) + 600)).min(len)
                    }
                };
                let max = (len - off).min(if rng.one_in(4) { 5000 } else { 1500 });
                let n = if rng.one_in(6) {
                    max
                } else {
                    rng.below(max + 1)
                };
                let mut flags = tcp::ACK;
                if n > 0 && rng.one_in(2) {
                    flags |= tcp::PSH;
                }
                if send_fin && off + n == len && rng.one_in(2) {
                    flags |= tcp::FIN;
                }
                peer_ts = peer_ts.wrapping_add(rng.below(3));
                for b in &mut sent[off as usize..(off + n) as usize] {
                    *b = b.saturating_add(1);
                }
                let f = peer_frame(
                    rseq(off),
                    iss.wrapping_add(1),
                    flags,
                    rng.next_u32() as u16,
                    ts_on.then_some((peer_ts, 0)),
                    &[],
                    &stream[off as usize..(off + n) as usize],
                    rng.pick(&[ipv4::ECN_NOT_ECT, ipv4::ECN_ECT0, ipv4::ECN_CE]),
                );
                w.rx(&f, now);
            }
            6 | 7 => read_app(&mut w, &mut app),
            8 => {
                let n = if rng.one_in(2) {
                    app.unfreed
                } else {
                    rng.below(app.unfreed + 1)
                };
                assert!(w.app_cmd(0, n, 0, now), "seed {seed}: valid free refused");
                app.unfreed -= n;
                app.freed += n as u64;
            }
            _ => {
                // The app frees more than it has: refused, nothing changes.
                let before = w.flow();
                let too_much = rx_len - before.rx_avail + 1;
                assert!(!w.app_cmd(0, too_much, 0, now), "seed {seed}");
                assert_eq!(w.flow(), before, "seed {seed}");
            }
        }
        for (r, _) in w.out.exceptions.drain(..) {
            assert_eq!(r, Exception::FinReceived, "seed {seed}");
            fin_exceptions += 1;
        }
        take_acks(&mut w, &mut acked, &mut edge, &mut last_ack, &sent);
        invariants(&w, &app, &mut right_edge);
        max_intervals = max_intervals.max(w.cold().intervals().len());
    }

    // Clean phase: the app keeps reading, the peer resends in order from
    // what we acknowledged, inside the window.
    for round in 0.. {
        assert!(
            round < 10_000,
            "seed {seed}: stuck at {} of {len}",
            app.read
        );
        read_app(&mut w, &mut app);
        if app.unfreed > 0 {
            assert!(w.app_cmd(0, app.unfreed, 0, now), "seed {seed}");
            app.freed += app.unfreed as u64;
            app.unfreed = 0;
        }
        take_acks(&mut w, &mut acked, &mut edge, &mut last_ack, &sent);
        if app.read == len && (!send_fin || app.fin) {
            break;
        }
        now += 10_000;
        let f = w.flow();
        let n = (len - acked).min(1448).min(f.rx_avail);
        let fin = send_fin && acked + n == len;
        for b in &mut sent[acked as usize..(acked + n) as usize] {
            *b = b.saturating_add(1);
        }
        let f = peer_frame(
            rseq(acked),
            iss.wrapping_add(1),
            tcp::ACK | if fin { tcp::FIN } else { 0 },
            1000,
            ts_on.then_some((peer_ts, 0)),
            &[],
            &stream[acked as usize..(acked + n) as usize],
            0,
        );
        w.rx(&f, now);
        for (r, _) in w.out.exceptions.drain(..) {
            assert_eq!(r, Exception::FinReceived, "seed {seed}");
            fin_exceptions += 1;
        }
        invariants(&w, &app, &mut right_edge);
    }
    assert_eq!(
        fin_exceptions, send_fin as u32,
        "seed {seed}: one FinReceived"
    );
    assert_eq!(w.flow().st & st::RX_FIN != 0, send_fin, "seed {seed}");
    w.check_guards();
    (w.fp.stats, max_intervals)
}

#[test]
fn rx_random_segment_sequences() {
    let time_left = budget(6);
    let mut total = engine::Stats::default();
    let mut n = 0;
    let mut max_intervals = 0;
    for seed in 1..=2_000u64 {
        if !time_left() {
            break;
        }
        let (s, m) = rx_case(seed);
        add_stats(&mut total, &s);
        max_intervals = max_intervals.max(m);
        n += 1;
    }
    assert!(n >= 100, "only {n} seeds in the time budget");
    let s = total;
    assert!(
        s.ooo_accepted > 0 && s.ooo_dropped > 0 && s.window_trimmed > 0,
        "{s:?}"
    );
    assert!(s.dup_segments > 0 && s.dsack_sent > 0, "{s:?}");
    assert!(s.seq_unacceptable > 0, "{s:?}");
    assert!(max_intervals >= 4, "at most {max_intervals} holes at once");
}

// ---------------------------------------------------------------------------
// 3. Receive: recovery of many holes through SACK
// ---------------------------------------------------------------------------

/// The app read `want` (the stream from offset `at`): panics at the first
/// wrong byte.
fn same_bytes(got: &[u8], want: &[u8], at: u32, seed: u64) {
    assert_eq!(got.len(), want.len(), "seed {seed}");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "seed {seed}: app read wrong bytes from offset {} ({} of {} wrong)",
            at as usize + i,
            got.iter().zip(want).filter(|(a, b)| a != b).count(),
            got.len()
        );
    }
}

/// What one SACK recovery case saw.
#[derive(Debug, Default, Clone, Copy)]
struct SackCase {
    rounds: u32,
    /// Times the sender found nothing to send short of the end and dropped
    /// its SACK information.
    timeouts: u32,
    /// Bytes the sender sent (link duplicates aside) that we already held.
    wasted: u64,
    /// Most out-of-order intervals held at once.
    max_intervals: usize,
}

fn sack_case(seed: u64) -> (engine::Stats, SackCase) {
    let mut rng = Rng::mixed(seed ^ 0x5ac4_0000);
    let mut s = random_setup(&mut rng);
    s.cfg |= cfg::SACK;
    s.rx_len = rng.pick(&[8192, 32_768, 65_536]);
    s.rx_pos0 = rng.below(s.rx_len);
    let mut w = World::new(s);
    let (irs, iss, rx_len, wscale) = (w.s.irs, w.s.iss, w.s.rx_len, w.s.rcv_wscale);
    let ts_on = w.s.cfg & cfg::TS != 0;
    let rseq = |off: u32| irs.wrapping_add(1).wrapping_add(off);
    let seg_max = rng.pick(&[536u32, 1000, 1448]);
    let len = 20_000 + rng.below(150_000);
    let mut stream = vec![0u8; len as usize];
    rng.fill(&mut stream);
    let loss = rng.pick(&[1u32, 3, 5, 10, 20]);
    let reorder = rng.pick(&[0u32, 5, 20]);
    let dup = rng.pick(&[0u32, 2]);

    // The sender: cumulative ACK, right edge of the window, scoreboard.
    let mut acked = 0u32;
    let mut edge = (rx_len >> wscale) << wscale;
    let mut sacked = vec![false; len as usize];
    let mut sent = vec![0u8; len as usize];
    // The app: reads and frees everything after every round.
    let (mut app_pos, mut app_read, mut rx_seq) = (w.s.rx_pos0, 0u32, rseq(0));
    let mut cs = SackCase::default();
    let mut now = 3_000_000_000u64;
    let mut ts = 1u32;

    // Our ACKs (all pure ACKs): checked, then taken by the sender.
    let take_acks =
        |w: &mut World, acked: &mut u32, edge: &mut u32, sacked: &mut [bool], sent: &[u8]| {
            let held = w.cold();
            for f in w.out.frames.drain(..) {
                let o = parse_ours(&f);
                assert!(o.payload.is_empty(), "seed {seed}");
                check_sack(&o, &held, ts_on, true, |s, e| {
                    (s.wrapping_sub(rseq(0))..e.wrapping_sub(rseq(0)))
                        .all(|i| sent.get(i as usize).is_some_and(|&n| n >= 2))
                })
                .unwrap_or_else(|m| panic!("seed {seed}: {m}: {:?}", o.sack));
                let a = o.ack.wrapping_sub(rseq(0));
                assert!(a <= len, "seed {seed}");
                assert!(a >= *acked, "seed {seed}: ACK went back");
                *acked = a;
                *edge = (*edge).max(a + ((o.window as u32) << wscale));
                for (i, &(s, e)) in o.sack.iter().enumerate() {
                    // The sender tells a D-SACK block (first, below the ACK or
                    // inside the next block) from the others the same way.
                    let d = i == 0
                        && (seq::le(e, o.ack)
                            || o.sack
                                .get(1)
                                .is_some_and(|&(s2, e2)| seq::le(s2, s) && seq::le(e, e2)));
                    if !d {
                        let (s, e) = (s.wrapping_sub(rseq(0)), e.wrapping_sub(rseq(0)));
                        for b in &mut sacked[s as usize..e as usize] {
                            *b = true;
                        }
                    }
                }
            }
        };

    loop {
        cs.rounds += 1;
        assert!(cs.rounds < 3000, "seed {seed}: stuck at {acked} of {len}");
        let clean = cs.rounds > 200;
        if sacked[acked as usize] {
            // Our ACK points into data we reported: we forgot it. Like
            // Linux (tcp_check_sack_reneging) the sender takes it as a
            // timeout: SACK information is dropped (RFC 2018 §8).
            for b in &mut sacked[acked as usize..] {
                *b = false;
            }
            cs.timeouts += 1;
        }
        // Everything in the window our ACKs and SACK blocks do not cover,
        // cut at holes and at `seg_max`, lowest first.
        let end = edge.min(len);
        let mut segs = Vec::new();
        let mut off = acked;
        while off < end {
            if sacked[off as usize] {
                off += 1;
                continue;
            }
            let mut n = 0;
            while off + n < end && n < seg_max && !sacked[(off + n) as usize] {
                n += 1;
            }
            segs.push((off, n));
            off += n;
        }
        if segs.is_empty() {
            // Nothing left to send short of the end: we forgot data we had
            // reported (or the window is shut, which the app never lets
            // happen here). The sender's timeout: SACK information is
            // dropped (RFC 2018 §8) and the window resent.
            assert!(acked < end, "seed {seed}: window shut");
            for b in &mut sacked[acked as usize..] {
                *b = false;
            }
            cs.timeouts += 1;
            continue;
        }
        let mut wire = Vec::new();
        for sg in segs {
            if !clean && rng.below(100) < loss {
                continue;
            }
            wire.push((sg, false));
            if !clean && rng.below(100) < dup {
                wire.push((sg, true));
            }
        }
        if !clean && reorder > 0 {
            for i in 0..wire.len() {
                if rng.below(100) < reorder {
                    let j = rng.below(wire.len() as u32) as usize;
                    wire.swap(i, j);
                }
            }
            // The copy that arrives first is the sender's, the other the link's.
            let mut seen = std::collections::HashSet::new();
            for ((off, _), link_dup) in &mut wire {
                *link_dup = !seen.insert(*off);
            }
        }
        for ((off, n), link_dup) in wire {
            now += 1_000 + rng.below(20_000) as u64;
            ts = ts.wrapping_add(1);
            if !link_dup {
                let f = w.flow();
                let c = w.cold();
                let rcv = f.rx_next_seq.wrapping_sub(rseq(0));
                cs.wasted += (off..off + n)
                    .filter(|&i| {
                        let q = rseq(i);
                        i < rcv
                            || c.intervals()
                                .iter()
                                .any(|&(s, e)| seq::le(s, q) && seq::lt(q, e))
                    })
                    .count() as u64;
            }
            for b in &mut sent[off as usize..(off + n) as usize] {
                *b = b.saturating_add(1);
            }
            let fr = peer_frame(
                rseq(off),
                iss.wrapping_add(1),
                tcp::ACK,
                1000,
                ts_on.then_some((ts, 0)),
                &[],
                &stream[off as usize..(off + n) as usize],
                0,
            );
            w.rx(&fr, now);
            cs.max_intervals = cs.max_intervals.max(w.cold().intervals().len());
            take_acks(&mut w, &mut acked, &mut edge, &mut sacked, &sent);
            w.check_flow();
            assert!(w.out.exceptions.is_empty(), "seed {seed}");
        }
        // The app reads what it was told of, checks it, frees it.
        for e in w.events() {
            rx_seq = e.rx_seq;
        }
        let n = rx_seq.wrapping_sub(rseq(app_read));
        let got = w.ring_read(RX_BASE, rx_len, app_pos, n);
        same_bytes(
            &got,
            &stream[app_read as usize..(app_read + n) as usize],
            app_read,
            seed,
        );
        app_pos = (app_pos + n) % rx_len;
        app_read += n;
        if n > 0 {
            assert!(w.app_cmd(0, n, 0, now), "seed {seed}");
        }
        take_acks(&mut w, &mut acked, &mut edge, &mut sacked, &sent);
        if app_read == len {
            break;
        }
    }
    assert_eq!(acked, len, "seed {seed}");
    assert!(w.cold().intervals().is_empty(), "seed {seed}");
    if cs.timeouts == 0 {
        assert_eq!(cs.wasted, 0, "seed {seed}: sent again what we held: {cs:?}");
    }
    w.check_guards();
    (w.fp.stats, cs)
}

#[test]
fn rx_sack_recovery_with_many_holes() {
    let time_left = budget(6);
    let mut total = engine::Stats::default();
    let mut all = SackCase::default();
    let mut n = 0;
    for seed in 1..=2_000u64 {
        if !time_left() {
            break;
        }

        let (s, cs) = sack_case(seed);
        add_stats(&mut total, &s);
        all.rounds += cs.rounds;
        all.timeouts += cs.timeouts;
        all.max_intervals = all.max_intervals.max(cs.max_intervals);
        n += 1;
    }
    assert!(n >= 20, "only {n} seeds in the time budget");
    let s = total;
    // The mix held every interval there is, filled them, dropped what
    // found none, reported duplicates.
    assert_eq!(all.max_intervals, RX_OOO_MAX, "{all:?}");
    assert!(
        s.ooo_intervals_full > 0 && s.ooo_dropped > 0 && s.dsack_sent > 0,
        "{s:?}"
    );
}

// ---------------------------------------------------------------------------
// 4. Send: random loss, reordering, duplicate ACKs and timeouts
// ---------------------------------------------------------------------------

/// The peer: a receiver with a reassembly buffer for the whole stream.
struct Peer {
    got: Vec<bool>,
    /// Cumulative: every byte before it arrived.
    rcv_nxt: u32,
    fin: bool,
    fin_off: Option<u32>,
    /// Window the peer announces (bytes, before scaling).
    wnd: u32,
    ts: u32,
    last_tsval: u32,
}

fn tx_case(seed: u64) -> engine::Stats {
    let mut rng = Rng::mixed(seed ^ 0xabcd_ef01);
    let mut s = random_setup(&mut rng);
    if s.cfg & cfg::TS != 0 && s.mss <= 100 {
        s.mss = 536;
    }
    let mut w = World::new(s);
    let (irs, iss, tx_len) = (w.s.irs, w.s.iss, w.s.tx_len);
    let ts_on = w.s.cfg & cfg::TS != 0;
    let sack_on = w.s.cfg & cfg::SACK != 0;
    let seg_max = w.s.mss as u32 - if ts_on { 12 } else { 0 };
    let cap = if rng.one_in(2) { 5000 } else { 60_000 };
    let len = 1 + rng.below(cap);
    let mut stream = vec![0u8; len as usize];
    rng.fill(&mut stream);
    let want_fin = rng.one_in(2);
    let lseq = |off: u32| iss.wrapping_add(1).wrapping_add(off);
    let shift = w.s.snd_wscale;
    let mut peer = Peer {
        got: vec![false; len as usize],
        rcv_nxt: 0,
        fin: false,
        fin_off: None,
        wnd: w.s.peer_wnd,
        ts: 1,
        last_tsval: 0,
    };
    // App: bytes written, acknowledged (notified), FIN requested.
    let mut written = 0u32;
    let mut head = w.s.tx_pos0;
    let mut acked_seq = lseq(0);
    let mut fin_req = false;
    let mut fin_acked_seen = false;
    // The furthest right edge the peer ever announced (offset).
    let mut max_edge = w.s.peer_wnd;
    let mut wire: VecDeque<Vec<u8>> = VecDeque::new();
    let mut now = 2_000_000_000u64;

    // The peer's ACK for its current state: with SACK, blocks for what it
    // holds above RCV.NXT (RFC 2018 §4: as many as fit, here the lowest
    // first or, at random, the highest first).
    let ack_frame = |peer: &Peer, ce: bool, high_first: bool| {
        let ack_off = peer.rcv_nxt + peer.fin as u32;
        let mut blocks: Vec<(u32, u32)> = Vec::new();
        if sack_on {
            let end = len.min(peer.rcv_nxt + tx_len + 1);
            let mut i = peer.rcv_nxt;
            while i < end {
                if peer.got[i as usize] {
                    let a = i;
                    while i < end && peer.got[i as usize] {
                        i += 1;
                    }
                    blocks.push((lseq(a), lseq(i)));
                }
                i += 1;
            }
            if high_first {
                blocks.reverse();
            }
            blocks.truncate(if ts_on { 3 } else { 4 });
        }
        peer_frame(
            irs.wrapping_add(1),
            lseq(ack_off),
            tcp::ACK | if ce { tcp::ECE } else { 0 },
            (peer.wnd >> shift).min(65_535) as u16,
            ts_on.then_some((peer.ts, peer.last_tsval)),
            &blocks,
            &[],
            0,
        )
    };

    // Our segment arrives at the peer: check it, take it, ACK it.
    let deliver = |w: &mut World,
                   peer: &mut Peer,
                   max_edge: &mut u32,
                   seg: &[u8],
                   now: u64,
                   rng: &mut Rng| {
        let o = parse_ours(seg);
        assert_eq!(o.ack, irs.wrapping_add(1), "seed {seed}");
        let off = o.seq.wrapping_sub(lseq(0));
        let n = o.payload.len() as u32;
        assert!(n <= seg_max, "seed {seed}: segment of {n} > {seg_max}");
        assert!(off + n <= len, "seed {seed}: beyond the stream");
        assert_eq!(
            &o.payload[..],
            &stream[off as usize..(off + n) as usize],
            "seed {seed}: wrong bytes at offset {off}"
        );
        if n > 0 {
            assert!(
                off + n <= *max_edge,
                "seed {seed}: beyond the peer's window"
            );
        }
        if o.flags & tcp::FIN != 0 {
            assert!(
                want_fin && off + n == len,
                "seed {seed}: FIN at {}",
                off + n
            );
            peer.fin_off = Some(len);
        }
        if let Some((val, _)) = o.ts {
            peer.last_tsval = val;
        }
        for i in off..off + n {
            peer.got[i as usize] = true;
        }
        while peer.rcv_nxt < len && peer.got[peer.rcv_nxt as usize] {
            peer.rcv_nxt += 1;
        }
        if peer.fin_off == Some(peer.rcv_nxt) {
            peer.fin = true;
        }
        peer.ts = peer.ts.wrapping_add(1);
        if rng.one_in(15) {
            peer.wnd = if rng.one_in(3) {
                0
            } else {
                500 + rng.below(30_000)
            };
        }
        let scaled = (peer.wnd >> shift) << shift;
        *max_edge = (*max_edge).max(peer.rcv_nxt + scaled);
        let a = ack_frame(peer, rng.one_in(10), rng.one_in(2));
        w.rx(&a, now);
        if rng.one_in(10) {
            w.rx(&a, now); // duplicated ACK
        }
    };

    let steps = 50 + rng.below(600);
    let mut clean = false;
    for step in 0.. {
        if step >= steps {
            clean = true;
        }
        if clean {
            let f = w.flow();
            if peer.rcv_nxt == len && (!want_fin || fin_acked_seen) && f.tx_sent == 0 {
                break;
            }
            assert!(
                step < steps + 20_000,
                "seed {seed}: stuck, peer at {} of {len}, written {written}, fin {fin_req}/{}, \
                 window {}, wire {}, flow {:?}",
                peer.rcv_nxt,
                peer.fin,
                peer.wnd,
                wire.len(),
                f
            );
        }
        now += rng.below(100_000) as u64;
        let action = if clean { step % 4 } else { rng.below(8) };
        match action {
            0 => {
                // The app writes what fits.
                let room = tx_len - written.wrapping_sub(acked_seq.wrapping_sub(lseq(0)));
                let n = rng.below(room.min(len - written) + 1);
                let fin = want_fin && !fin_req && written + n == len && (clean || rng.one_in(2));
                if n > 0 || fin {
                    w.ring_write(
                        w.tx_base,
                        tx_len,
                        head,
                        &stream[written as usize..(written + n) as usize],
                    );
                    assert!(
                        w.app_cmd(n, 0, if fin { cmd::F_TX_FIN } else { 0 }, now),
                        "seed {seed}"
                    );
                    head = (head + n) % tx_len;
                    written += n;
                    fin_req |= fin;
                }
                if rng.one_in(20) {
                    assert!(
                        !w.app_cmd(room - n + 1, 0, 0, now),
                        "seed {seed}: overflow taken"
                    );
                }
            }
            1 => {
                w.fp.poll_tx(now, 1 + rng.below(8) as usize, &w.mem, &mut w.out);
                wire.extend(w.out.frames.drain(..));
            }
            2 => {
                // The link delivers, drops, duplicates or reorders (in the
                // clean phase: delivers everything in order).
                let burst = if clean {
                    wire.len() as u32
                } else {
                    1 + rng.below(6)
                };
                for _ in 0..burst {
                    let Some(seg) = wire.pop_front() else { break };
                    match if clean { 0 } else { rng.below(10) } {
                        0..=5 => deliver(&mut w, &mut peer, &mut max_edge, &seg, now, &mut rng),
                        6 => {}
                        7 => {
                            deliver(&mut w, &mut peer, &mut max_edge, &seg, now, &mut rng);
                            wire.push_back(seg);
                        }
                        _ => {
                            let at = rng.below(wire.len() as u32 + 1) as usize;
                            wire.insert(at, seg);
                        }
                    }
                }
            }
            _ => {
                if clean {
                    // Nothing moving: the window opens, the timeout fires.
                    peer.wnd = peer.wnd.max(1 << 14);
                    let scaled = (peer.wnd >> shift) << shift;
                    max_edge = max_edge.max(peer.rcv_nxt + scaled);
                    let a = ack_frame(&peer, false, false);
                    w.rx(&a, now);
                    if wire.is_empty() && step % 16 == 3 {
                        w.fp.retransmit(w.id, now, &mut w.out);
                    }
                } else if rng.one_in(3) {
                    w.fp.retransmit(w.id, now, &mut w.out);
                } else if rng.one_in(3) {
                    w.fp.probe(w.id, now, &mut w.out);
                } else if rng.one_in(20) {
                    // The peer reneges: drops what it held out of order
                    // (RFC 2018 §8), SACKed or not.
                    for b in &mut peer.got[peer.rcv_nxt as usize..] {
                        *b = false;
                    }
                    if peer.fin_off.is_some_and(|o| o > peer.rcv_nxt) {
                        peer.fin_off = None;
                    }
                } else {
                    let a = ack_frame(&peer, false, rng.one_in(2));
                    w.rx(&a, now);
                }
            }
        }
        // Our ACK-only frames produced on receive go on the wire too.
        wire.extend(w.out.frames.drain(..));
        for (r, flow) in w.out.exceptions.drain(..) {
            assert_eq!((r, flow), (Exception::FinAcked, Some(w.id)), "seed {seed}");
            assert!(want_fin && peer.fin && !fin_acked_seen, "seed {seed}");
            fin_acked_seen = true;
        }
        for e in w.events() {
            assert!(
                seq::ge(e.tx_acked_seq, acked_seq),
                "seed {seed}: tx_acked_seq went back"
            );
            assert!(
                seq::le(e.tx_acked_seq, lseq(peer.rcv_nxt)),
                "seed {seed}: acknowledged more than the peer has"
            );
            acked_seq = e.tx_acked_seq;
            if e.flags & event::F_TX_FIN_ACKED != 0 {
                assert!(peer.fin && fin_acked_seen, "seed {seed}");
            }
        }
        w.check_flow();
        let f = w.flow();
        let una_off = f.snd_una().wrapping_sub(lseq(0));
        assert!(
            una_off <= peer.rcv_nxt + peer.fin as u32,
            "seed {seed}: snd_una ahead of the peer"
        );
        let next_off = f.tx_next_seq.wrapping_sub(lseq(0));
        let fin_in = (f.st & st::TX_FIN_SENT != 0) as u32;
        assert_eq!(
            f.tx_next_pos,
            (w.s.tx_pos0 + next_off - fin_in) % tx_len,
            "seed {seed}: ring position vs sequence"
        );
        assert_eq!(
            next_off - fin_in + f.tx_avail,
            written,
            "seed {seed}: bytes lost or invented"
        );
    }
    assert_eq!(peer.rcv_nxt, len, "seed {seed}");
    assert_eq!(acked_seq, lseq(len), "seed {seed}");
    assert_eq!(fin_acked_seen, want_fin, "seed {seed}");
    w.check_guards();
    // Our TSvals follow the clock.
    if ts_on {
        assert_ne!(peer.last_tsval, 0);
        assert!(seq::le(peer.last_tsval, ts_now(now)));
    }
    w.fp.stats
}

#[test]
fn tx_random_loss_and_acks() {
    let time_left = budget(6);
    let mut total = engine::Stats::default();
    let mut n = 0;
    for seed in 1..=2_000u64 {
        if !time_left() {
            break;
        }
        let s = tx_case(seed);
        add_stats(&mut total, &s);
        n += 1;
    }
    assert!(n >= 50, "only {n} seeds in the time budget");
    let s = total;
    assert!(
        s.dupacks > 0 && s.fast_retransmits > 0 && s.tx_payload_bytes > 0,
        "{s:?}"
    );
    assert!(
        s.sack_recoveries > 0 && s.rto_recoveries > 0 && s.tlp_probes > 0,
        "{s:?}"
    );
}

// ---------------------------------------------------------------------------
// 5. Receive: blind in-window data
// ---------------------------------------------------------------------------

/// Which unacceptable ACK the blind segments carry (RFC 5961 §5.2: an ACK
/// is acceptable when SND.UNA − MAX.SND.WND ≤ SEG.ACK ≤ SND.NXT).
#[derive(Debug, Clone, Copy)]
enum BadAck {
    /// Beyond anything sent or queued.
    Future,
    /// Older than any window the peer can have announced.
    Old,
}

/// An off-path attacker who knows the 4-tuple sprays data segments with
/// random sequence numbers (mostly inside our window), random bytes, random
/// FINs and an unacceptable ACK, while the real peer sends its stream with
/// reordering. None of it may reach the app: it reads exactly the stream,
/// and no FIN.
fn blind_case(seed: u64, bad: BadAck) -> engine::Stats {
    let mut rng = Rng::mixed(seed ^ 0xb11d_0000);
    let mut s = random_setup(&mut rng);
    s.rx_len = rng.pick(&[4096, 32_768, 65_536]);
    s.rx_pos0 = rng.below(s.rx_len);
    let mut w = World::new(s);
    let (irs, iss, rx_len, wscale) = (w.s.irs, w.s.iss, w.s.rx_len, w.s.rcv_wscale);
    let ts_on = w.s.cfg & cfg::TS != 0;
    let rseq = |off: u32| irs.wrapping_add(1).wrapping_add(off);
    // Some data of ours in flight: SND.UNA < SND.NXT.
    let n = 1 + rng.below(w.s.tx_len);
    let mut now = 4_000_000_000u64;
    assert!(w.app_cmd(n, 0, 0, now), "seed {seed}");
    w.fp.poll_tx(now, 64, &w.mem, &mut w.out);
    w.out.frames.clear();
    let seg_max = rng.pick(&[536u32, 1448]);
    let len = 10_000 + rng.below(90_000);
    let mut stream = vec![0u8; len as usize];
    rng.fill(&mut stream);
    let (mut acked, mut edge) = (0u32, (rx_len >> wscale) << wscale);
    let (mut app_pos, mut app_read, mut rx_seq) = (w.s.rx_pos0, 0u32, rseq(0));
    let mut junk = vec![0u8; 1448];
    for round in 0.. {
        assert!(round < 1000, "seed {seed}: stuck at {app_read} of {len}");
        // The peer resends all of its window, reordered.
        let mut segs = Vec::new();
        let mut off = acked;
        while off < edge.min(len) {
            let n = seg_max.min(edge.min(len) - off);
            segs.push((off, n));
            off += n;
        }
        for i in 0..segs.len() {
            let j = rng.below(segs.len() as u32) as usize;
            segs.swap(i, j);
        }
        for (off, n) in segs {
            now += 1_000;
            let fr = peer_frame(
                rseq(off),
                iss.wrapping_add(1),
                tcp::ACK,
                1000,
                ts_on.then_some((1, 0)),
                &[],
                &stream[off as usize..(off + n) as usize],
                0,
            );
            w.rx(&fr, now);
            for _ in 0..rng.below(6) {
                let f = w.flow();
                let una = f.snd_una();
                let ack = match bad {
                    BadAck::Future => f
                        .tx_next_seq
                        .wrapping_add(f.tx_avail)
                        .wrapping_add(1 + rng.below(1 << 30)),
                    BadAck::Old => una
                        .wrapping_sub(65_535 << w.s.snd_wscale)
                        .wrapping_sub(1 + rng.below(1 << 30)),
                };
                let sq = f
                    .rx_next_seq
                    .wrapping_add(rng.below(f.rx_avail + 2000))
                    .wrapping_sub(1000);
                let k = 1 + rng.below(1448) as usize;
                rng.fill(&mut junk[..k]);
                let flags = tcp::ACK | if rng.one_in(4) { tcp::FIN } else { 0 };
                let fr = peer_frame(
                    sq,
                    ack,
                    flags,
                    rng.next_u32() as u16,
                    ts_on.then_some((rng.next_u32(), 0)),
                    &[],
                    &junk[..k],
                    0,
                );
                w.rx(&fr, now);
            }
            for f in w.out.frames.drain(..) {
                let o = parse_ours(&f);
                let a = o.ack.wrapping_sub(rseq(0));
                assert!(a <= len, "seed {seed}: ACK beyond the stream");
                acked = acked.max(a);
                edge = edge.max(a + ((o.window as u32) << wscale));
            }
            assert!(
                w.out.exceptions.is_empty(),
                "seed {seed}: {:?}",
                w.out.exceptions
            );
            w.check_flow();
        }
        for e in w.events() {
            assert_eq!(e.flags & event::F_RX_FIN, 0, "seed {seed}: a blind FIN");
            rx_seq = e.rx_seq;
        }
        let n = rx_seq.wrapping_sub(rseq(app_read));
        let got = w.ring_read(RX_BASE, rx_len, app_pos, n);
        same_bytes(
            &got,
            &stream[app_read as usize..(app_read + n) as usize],
            app_read,
            seed,
        );
        app_pos = (app_pos + n) % rx_len;
        app_read += n;
        if n > 0 {
            assert!(w.app_cmd(0, n, 0, now), "seed {seed}");
        }
        for f in w.out.frames.drain(..) {
            let o = parse_ours(&f);
            let a = o.ack.wrapping_sub(rseq(0));
            edge = edge.max(a + ((o.window as u32) << wscale));
        }
        if app_read == len {
            break;
        }
    }
    w.check_guards();
    w.fp.stats
}

fn blind_data(bad: BadAck) -> engine::Stats {
    let time_left = budget(4);
    let mut total = engine::Stats::default();
    let mut n = 0;
    for seed in 1..=500u64 {
        if !time_left() {
            break;
        }
        add_stats(&mut total, &blind_case(seed, bad));
        n += 1;
    }
    assert!(n >= 20, "only {n} seeds in the time budget");
    total
}

#[test]
fn rx_blind_data_with_a_future_ack_never_reaches_the_app() {
    let s = blind_data(BadAck::Future);
    assert!(s.future_acks > 0 && s.seq_unacceptable > 0, "{s:?}");
}

#[test]
fn rx_blind_data_with_an_old_ack_never_reaches_the_app() {
    blind_data(BadAck::Old);
}
