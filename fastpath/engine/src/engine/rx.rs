//! The receive path's data half: the sequence check every segment passes
//! first, what a segment's payload and FIN do to the flow's RX ring and
//! receive sequence space (in-order data, out-of-order intervals,
//! duplicates, trimming to the window, an in-order FIN), and the SACK blocks
//! that report what is held.
//!
//! Out-of-order data stays in the RX ring at its offset from RCV.NXT; the
//! intervals it forms live in the flow's cold record ([`RxCold`]), the
//! lowest one mirrored in `FlowState::rx_ooo_start/rx_ooo_len`, so in-order
//! data that does not reach it never loads the cold record.

use super::ring::{ring_add, ring_write};
use super::{RxResult, Stats};
use crate::flow::{cfg, st, FlowState, RxCold, RX_OOO_MAX};
use crate::seq;
use crate::wire::{frame, tcp};
use tas_abi::PayloadMem;

/// Least time (µs of the TSval clock) between two ACKs a flow sends for
/// unacceptable zero-length segments. RFC 5961 §10 asks for such ACKs to be
/// throttled; 500 ms is Linux's `tcp_invalid_ratelimit`.
const OOW_ACK_INTERVAL_US: u32 = 500_000;

/// The first check of RFC 9293 §3.10.7.4, for a segment that does not start
/// at RCV.NXT (the caller passes those), with RCV.WND the free RX ring:
///
/// | SEG.LEN | RCV.WND | acceptable when                                   |
/// |---------|---------|---------------------------------------------------|
/// | 0       | 0       | SEG.SEQ = RCV.NXT                                 |
/// | 0       | > 0     | RCV.NXT ≤ SEG.SEQ < RCV.NXT + RCV.WND             |
/// | > 0     | 0       | never                                             |
/// | > 0     | > 0     | its first or its last octet is in that range      |
///
/// True when acceptable. Otherwise the segment is dealt with here, before
/// any other field of it is used: counted, answered with an ACK ("If an
/// incoming segment is not acceptable, an acknowledgment should be sent in
/// reply"), its part below RCV.NXT reported as a D-SACK block (RFC 2883
/// §4); the caller drops it.
///
/// The answer to a zero-length segment is rate-limited (one per
/// [`OOW_ACK_INTERVAL_US`] per flow; RFC 5961 §10), except at RCV.NXT − 1,
/// where keep-alives (RFC 9293 §3.8.4) and zero-window probes (§3.8.6.1)
/// are sent: the prober gives up on a connection that does not answer.
/// Segments with data are always answered: a retransmission of data whose
/// ACK was lost must draw a new one or the peer's sender stalls.
#[cold]
#[inline(never)]
pub(super) fn seq_check(
    f: &FlowState,
    c: &mut RxCold,
    seg: tcp::TcpSegment<'_>,
    now_ts: u32,
    stats: &mut Stats,
    r: &mut RxResult,
) -> bool {
    let sq = seg.seq();
    let plen = seg.payload().len() as u32;
    // SEG.LEN counts the FIN (a SYN never gets here).
    let len = plen + (seg.flags() & tcp::FIN != 0) as u32;
    let nxt = f.rx_next_seq;
    let wnd = f.rx_avail;
    let edge = nxt.wrapping_add(wnd);
    // With RCV.WND = 0 only SEG.SEQ = RCV.NXT (and no data) is acceptable,
    // which the caller let through already.
    let acceptable = wnd > 0
        && (seq::in_range(sq, nxt, edge)
            || (len > 0 && seq::in_range(sq.wrapping_add(len - 1), nxt, edge)));
    if acceptable {
        return true;
    }
    stats.seq_unacceptable += 1;
    if seq::lt(sq, nxt) && seq::le(sq.wrapping_add(len), nxt) {
        stats.dup_segments += 1;
    }
    if len == 0 && sq != nxt.wrapping_sub(1) {
        if c.oow_acked && now_ts.wrapping_sub(c.oow_ack_ts) < OOW_ACK_INTERVAL_US {
            stats.unacceptable_acks_limited += 1;
            return false;
        }
        c.oow_acked = true;
        c.oow_ack_ts = now_ts;
    }
    r.ack = true;
    if plen > 0 && seq::lt(sq, nxt) && f.cfg & cfg::SACK != 0 {
        let end = sq.wrapping_add(plen);
        c.dsack = (sq, if seq::lt(end, nxt) { end } else { nxt });
        r.dsack = true;
    }
    false
}

/// Data and FIN of one acceptable segment (RFC 9293 §3.10.7.4, sixth to
/// eighth checks): in-order payload into the RX ring and the intervals it
/// reaches, out-of-order payload into an interval, duplicates and trimming
/// to the window, an in-order FIN. `ts` must be the segment's timestamp
/// option if the flow negotiated timestamps, else `None` (as `rx_segment`
/// reads it): the general path reads it from the segment again.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn rx_data<M: PayloadMem>(
    f: &mut FlowState,
    c: &mut RxCold,
    seg: &tcp::TcpSegment<'_>,
    ce: bool,
    ts: Option<(u32, u32)>,
    mem: &mut M,
    stats: &mut Stats,
    r: &mut RxResult,
) {
    let flags = seg.flags();
    let payload = seg.payload();
    // The shortest path, selected by one compare chain: data at RCV.NXT
    // that fits the window, no FIN, nothing held out of order, no FIN
    // received before, no ACK asked for already, no CE mark. The data goes
    // into the RX ring and its ACK may wait (what the general path below
    // decides for such a segment, `r.coalesce`).
    if seg.seq() == f.rx_next_seq
        && flags & tcp::FIN == 0
        && !r.ack
        && !ce
        && f.rx_ooo_len == 0
        && f.st & st::RX_FIN == 0
        && !payload.is_empty()
        && payload.len() <= f.rx_avail as usize
    {
        let n = payload.len() as u32;
        if !ring_write(mem, f.mem, f.rx_base, f.rx_len, f.rx_next_pos, payload) {
            stats.mem_errors += 1;
            return;
        }
        f.rx_next_pos = ring_add(f.rx_next_pos, n, f.rx_len);
        f.rx_next_seq = f.rx_next_seq.wrapping_add(n);
        f.rx_avail -= n;
        stats.rx_payload_bytes += n as u64;
        if let Some((val, _)) = ts {
            f.tx_next_ts = val;
        }
        r.notify = true;
        r.ack = true;
        r.coalesce = true;
        return;
    }
    rx_data_cold(f, c, seg, ce, mem, stats, r);
}

/// [`rx_data_general`], out of line, with the timestamp option read from
/// the segment again as the receive path reads it (`rx_segment`: only
/// when the flow negotiated timestamps), so that the hot path keeps no
/// copy of it in memory for this call.
#[cold]
#[inline(never)]
fn rx_data_cold<M: PayloadMem>(
    f: &mut FlowState,
    c: &mut RxCold,
    seg: &tcp::TcpSegment<'_>,
    ce: bool,
    mem: &mut M,
    stats: &mut Stats,
    r: &mut RxResult,
) {
    let ts = super::seg_timestamp(f, seg);
    rx_data_general(f, c, seg, ce, ts, mem, stats, r);
}

/// [`rx_data`] without its shortest path: every segment gives the same
/// result here as there (tested against it). Out of line
/// ([`rx_data_cold`]): FIN, out-of-order, trimmed, duplicate and CE-marked
/// data and data whose ACK was asked for already are rare.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rx_data_general<M: PayloadMem>(
    f: &mut FlowState,
    c: &mut RxCold,
    seg: &tcp::TcpSegment<'_>,
    ce: bool,
    ts: Option<(u32, u32)>,
    mem: &mut M,
    stats: &mut Stats,
    r: &mut RxResult,
) {
    let flags = seg.flags();
    let payload = seg.payload();
    let fin = flags & tcp::FIN != 0;
    // ---- data and FIN ----
    if payload.is_empty() && !fin {
        // A pure ACK inside the window: only one at RCV.NXT is in sequence.
        if seg.seq() == f.rx_next_seq {
            if let Some((val, _)) = ts {
                f.tx_next_ts = val;
            }
        }
        return;
    }
    r.ece = ce && f.cfg & cfg::ECN != 0;
    // An ACK already asked for (a challenge, an ACK check) is never held.
    let ack_asked = r.ack;
    r.ack = true;
    if f.st & st::RX_FIN != 0 {
        // Anything after the peer's FIN is a retransmission: re-ACK it.
        stats.dup_segments += 1;
        return;
    }
    let nxt = f.rx_next_seq;
    let mut sq = seg.seq();
    let mut data = payload;
    let mut fin = fin;
    if seq::lt(sq, nxt) {
        let skip = seq::dist(sq, nxt) as usize;
        if skip > data.len() || (skip == data.len() && !fin) {
            // Entirely old; `seq_check` answers these before we get here.
            stats.dup_segments += 1;
            return;
        }
        // The part already received is a duplicate (RFC 2883 §4).
        if f.cfg & cfg::SACK != 0 && skip > 0 {
            c.dsack = (sq, nxt);
            r.dsack = true;
        }
        data = &data[skip..];
        sq = nxt;
    }
    if sq == nxt {
        // Out-of-order data is held: this segment fills (part of) a hole.
        let holes = f.rx_ooo_len > 0;
        let trimmed = data.len() > f.rx_avail as usize;
        if trimmed {
            data = &data[..f.rx_avail as usize];
            fin = false;
            stats.window_trimmed += 1;
        }
        if !data.is_empty() {
            let n = data.len() as u32;
            if !ring_write(mem, f.mem, f.rx_base, f.rx_len, f.rx_next_pos, data) {
                stats.mem_errors += 1;
                r.ack = false;
                return;
            }
            f.rx_next_pos = ring_add(f.rx_next_pos, n, f.rx_len);
            f.rx_next_seq = f.rx_next_seq.wrapping_add(n);
            f.rx_avail -= n;
            stats.rx_payload_bytes += n as u64;
            r.notify = true;
        }
        if let Some((val, _)) = ts {
            f.tx_next_ts = val;
        }
        if f.rx_ooo_len > 0 && seq::le(f.rx_ooo_start, f.rx_next_seq) {
            ooo_reached(f, c, sq, stats, r);
        }
        // A FIN counts only when nothing is held beyond it (as before there
        // were several intervals: a FIN on out-of-order data is forgotten
        // and must come again in order).
        if fin && f.rx_ooo_len == 0 && f.rx_next_seq == sq.wrapping_add(data.len() as u32) {
            f.rx_next_seq = f.rx_next_seq.wrapping_add(1);
            f.st |= st::RX_FIN;
            if f.st & st::TX_FIN_SENT == 0 {
                f.st |= st::RX_FIN_FIRST;
            }
            r.fin_rx = true;
            r.notify = true;
        }
        // Data with nothing to report and no FIN: its ACK may wait for data
        // to ride on (RFC 9293 §3.8.6.3) and cover later segments, when it
        // filled no hole, or (with SACK) one of several, since Linux ACKs a
        // filled hole at once only once none is left. Everything else is
        // ACKed at once, as RFC 5681 §4.2 wants for out-of-order data and
        // hole filling.
        let plain = !ack_asked
            && !data.is_empty()
            && !trimmed
            && !r.dsack
            && !r.fin_rx
            && !r.ece
            && f.st & st::RX_FIN == 0;
        r.coalesce = plain && (!holes || (f.rx_ooo_len > 0 && f.cfg & cfg::SACK != 0));
        return;
    }
    ooo_insert(f, c, sq, data, mem, stats, r);
}

/// The in-order point (RCV.NXT, just advanced over in-order data that
/// started at `from`) reached the lowest out-of-order interval: every
/// interval it reached is delivered and forgotten, RCV.NXT moves to the end
/// of the furthest. Held bytes the in-order data repeated are reported as a
/// D-SACK block (RFC 2883 §4), unless a lower duplicate already is.
#[cold]
#[inline(never)]
fn ooo_reached(f: &mut FlowState, c: &mut RxCold, from: u32, stats: &mut Stats, r: &mut RxResult) {
    let to = f.rx_next_seq;
    let sack = f.cfg & cfg::SACK != 0;
    // One pass suffices while the intervals are disjoint and not adjacent;
    // the loop only guards against that not holding.
    loop {
        let n = c.ooo_n as usize;
        let mut kept = 0;
        for i in 0..n {
            let (s, e) = c.ooo[i];
            if seq::gt(s, f.rx_next_seq) {
                c.ooo[kept] = (s, e);
                kept += 1;
                continue;
            }
            let ds = if seq::gt(s, from) { s } else { from };
            let de = if seq::lt(e, to) { e } else { to };
            if sack && !r.dsack && seq::lt(ds, de) {
                c.dsack = (ds, de);
                r.dsack = true;
            }
            if seq::gt(e, f.rx_next_seq) {
                let extra = seq::dist(f.rx_next_seq, e);
                f.rx_next_pos = ring_add(f.rx_next_pos, extra, f.rx_len);
                f.rx_next_seq = e;
                f.rx_avail -= extra;
                stats.rx_payload_bytes += extra as u64;
            }
        }
        c.ooo_n = kept as u8;
        if kept == n {
            break;
        }
    }
    r.notify = true;
    sync_lowest(f, c);
}

/// An out-of-order segment (`sq` above RCV.NXT): its data goes to its place
/// in the RX ring and joins the intervals it touches, or starts one. The
/// resulting interval becomes the most recent one, reported first (RFC 2018
/// §4: the first block holds the segment that triggered the ACK). Bytes
/// already held are reported as a D-SACK block (RFC 2883 §4).
///
/// All [`RX_OOO_MAX`] intervals in use and none touched: the segment is
/// dropped (the sender, which never saw it SACKed, sends it again). An
/// interval already reported is never forgotten: a sender that sees a
/// SACKed range go unreported (reneging, which RFC 2018 §8 allows) waits
/// for its retransmission timeout before it sends that range again
/// (Linux: `TCPSACKReneging`), and with a window larger than the intervals
/// cover that cost a Linux sender through 5 % loss an RTO every few
/// hundred milliseconds. Dropping never blocks the first hole's recovery:
/// data at RCV.NXT is in order and needs no interval.
#[cold]
#[inline(never)]
fn ooo_insert<M: PayloadMem>(
    f: &mut FlowState,
    c: &mut RxCold,
    sq: u32,
    mut data: &[u8],
    mem: &mut M,
    stats: &mut Stats,
    r: &mut RxResult,
) {
    let off = seq::dist(f.rx_next_seq, sq);
    if off >= f.rx_avail || data.is_empty() {
        stats.ooo_dropped += 1;
        return;
    }
    if data.len() as u32 > f.rx_avail - off {
        data = &data[..(f.rx_avail - off) as usize];
        stats.window_trimmed += 1;
    }
    let end = sq.wrapping_add(data.len() as u32);
    let n = c.ooo_n as usize;
    // Extends the most recent interval at its right edge (and nothing
    // else): what the last ACK reported, a little longer.
    let extends = n > 0 && c.ooo[0].1 == sq;
    let (mut lo, mut hi) = (sq, end);
    let mut touched = 0u32;
    let mut dup: Option<(u32, u32)> = None;
    for i in 0..n {
        let (s, e) = c.ooo[i];
        if seq::gt(sq, e) || seq::lt(end, s) {
            continue;
        }
        touched |= 1 << i;
        if seq::lt(s, lo) {
            lo = s;
        }
        if seq::gt(e, hi) {
            hi = e;
        }
        let ds = if seq::gt(s, sq) { s } else { sq };
        let de = if seq::lt(e, end) { e } else { end };
        let lower = match dup {
            None => true,
            Some((d, _)) => seq::lt(ds, d),
        };
        if seq::lt(ds, de) && lower {
            dup = Some((ds, de));
        }
    }
    if touched == 0 && n == RX_OOO_MAX {
        stats.ooo_intervals_full += 1;
        stats.ooo_dropped += 1;
        return;
    }
    if dup != Some((sq, end)) {
        let pos = ring_add(f.rx_next_pos, off, f.rx_len);
        if !ring_write(mem, f.mem, f.rx_base, f.rx_len, pos, data) {
            stats.mem_errors += 1;
            return;
        }
    }
    let mut ooo = [(0, 0); RX_OOO_MAX];
    ooo[0] = (lo, hi);
    let mut k = 1;
    for (i, &iv) in c.ooo[..n].iter().enumerate() {
        if touched & (1 << i) == 0 {
            ooo[k] = iv;
            k += 1;
        }
    }
    c.ooo = ooo;
    c.ooo_n = k as u8;
    sync_lowest(f, c);
    stats.ooo_accepted += 1;
    r.coalesce = extends && touched == 1 && dup.is_none() && !r.ece && f.cfg & cfg::SACK != 0;
    if let Some(d) = dup {
        if f.cfg & cfg::SACK != 0 {
            c.dsack = d;
            r.dsack = true;
        }
    }
}

/// Mirrors the lowest interval into the hot state (length 0: none held).
#[inline]
fn sync_lowest(f: &mut FlowState, c: &RxCold) {
    let Some((&first, rest)) = c.intervals().split_first() else {
        f.rx_ooo_len = 0;
        return;
    };
    let lo = rest
        .iter()
        .fold(first, |a, &b| if seq::lt(b.0, a.0) { b } else { a });
    f.rx_ooo_start = lo.0;
    f.rx_ooo_len = seq::dist(lo.0, lo.1);
}

/// The SACK blocks for a pure ACK of a flow that negotiated SACK: the
/// D-SACK block first when `dsack` (RFC 2883 §4), then the out-of-order
/// intervals, most recently changed first (RFC 2018 §4), as many as fit
/// beside the timestamp option. Returns the blocks and their number.
#[cold]
#[inline(never)]
pub(super) fn sack_blocks(
    f: &FlowState,
    c: &RxCold,
    dsack: bool,
) -> ([(u32, u32); tcp::MAX_SACK_BLOCKS], usize) {
    let room = frame::fast_sack_room(f.cfg & cfg::TS != 0);
    let mut b = [(0, 0); tcp::MAX_SACK_BLOCKS];
    let mut n = 0;
    if dsack {
        b[0] = c.dsack;
        n = 1;
    }
    for &iv in c.intervals() {
        if n == room {
            break;
        }
        b[n] = iv;
        n += 1;
    }
    (b, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tcp::TcpRepr;
    use crate::wire::testutil::Rng;
    use tas_abi::VecMem;

    const RING: u32 = 4096;

    fn below(rng: &mut Rng, n: usize) -> usize {
        rng.below(n)
    }

    /// A flow with a 4 KiB RX ring anywhere in its state: the ring partly
    /// full, an out-of-order interval held or not, FIN received or not,
    /// SACK/ECN/TS on or off, sometimes a region that does not exist.
    fn random_flow(rng: &mut Rng) -> (FlowState, RxCold) {
        let nxt = rng.next_u32();
        let avail = match below(rng, 4) {
            0 => 0,
            1 => RING,
            _ => below(rng, RING as usize + 1) as u32,
        };
        let mut f = FlowState {
            mem: if below(rng, 50) == 0 { 7 } else { 1 },
            rx_base: 64,
            rx_len: RING,
            rx_next_pos: below(rng, RING as usize) as u32,
            rx_next_seq: nxt,
            rx_avail: avail,
            tx_next_ts: rng.next_u32(),
            ..Default::default()
        };
        for (bit, p) in [(cfg::SACK, 2), (cfg::ECN, 3), (cfg::TS, 2)] {
            if below(rng, p) == 0 {
                f.cfg |= bit;
            }
        }
        for (bit, p) in [(st::RX_FIN, 8), (st::TX_FIN_SENT, 4)] {
            if below(rng, p) == 0 {
                f.st |= bit;
            }
        }
        let mut c = RxCold::default();
        if avail > 100 && below(rng, 3) == 0 {
            let off = 1 + below(rng, avail as usize - 50) as u32;
            let len = 1 + below(rng, (avail - off) as usize) as u32;
            let s = nxt.wrapping_add(off);
            c.ooo[0] = (s, s.wrapping_add(len));
            c.ooo_n = 1;
            f.rx_ooo_start = s;
            f.rx_ooo_len = len;
        }
        (f, c)
    }

    /// `rx_data` leaves the flow, its cold record, the result, the counters
    /// and the RX ring's bytes exactly as `rx_data_general` (the path every
    /// segment took before) does, for random flows and segments (at,
    /// below and above RCV.NXT; larger than the window; with FIN, CE, an
    /// ACK already asked for; into a region that does not exist).
    #[test]
    fn shortest_path_agrees_with_the_general_one() {
        let mut rng = Rng::new(0xda7a);
        let mut short = 0;
        for i in 0..200_000 {
            let (f0, c0) = random_flow(&mut rng);
            let seq = match below(&mut rng, 6) {
                0 => f0.rx_next_seq.wrapping_sub(below(&mut rng, 300) as u32),
                1 => f0.rx_next_seq.wrapping_add(below(&mut rng, 5000) as u32),
                _ => f0.rx_next_seq,
            };
            let fin = below(&mut rng, 6) == 0;
            let n = if fin && below(&mut rng, 2) == 0 {
                0
            } else if below(&mut rng, 8) == 0 {
                1 + below(&mut rng, RING as usize + 200)
            } else {
                1 + below(&mut rng, 200)
            };
            let repr = TcpRepr {
                src_port: 1,
                dst_port: 2,
                seq,
                ack: 0,
                flags: tcp::ACK | if fin { tcp::FIN } else { 0 },
                window: 100,
                options: tcp::TcpOptions {
                    timestamp: (below(&mut rng, 4) != 0).then(|| (rng.next_u32(), rng.next_u32())),
                    ..Default::default()
                },
            };
            let mut buf = vec![0u8; repr.header_len() + n];
            let h = repr.emit(&mut buf).unwrap();
            let b0 = rng.next_u32() as u8;
            for (k, b) in buf[h..].iter_mut().enumerate() {
                *b = b0.wrapping_add(k as u8);
            }
            let seg = tcp::TcpSegment::parse(&buf).unwrap();
            let ce = below(&mut rng, 10) == 0;
            let asked = below(&mut rng, 10) == 0;
            // As `rx_segment` reads it.
            let ts = if f0.cfg & cfg::TS != 0 {
                seg.timestamp()
            } else {
                None
            };
            let mem0 = VecMem::new(2, (64 + RING) as usize);
            short += (seq == f0.rx_next_seq
                && !fin
                && !ce
                && !asked
                && f0.rx_ooo_len == 0
                && f0.st & st::RX_FIN == 0
                && n as u32 <= f0.rx_avail) as u32;
            let run = |general: bool| {
                let (mut f, mut c) = (f0, c0);
                let mut mem = VecMem {
                    regions: mem0.regions.clone(),
                };
                let mut stats = Stats::default();
                let mut r = RxResult {
                    ack: asked,
                    ..Default::default()
                };
                if general {
                    rx_data_general(&mut f, &mut c, &seg, ce, ts, &mut mem, &mut stats, &mut r);
                } else {
                    rx_data(&mut f, &mut c, &seg, ce, ts, &mut mem, &mut stats, &mut r);
                }
                (f, c, r, stats, mem.regions)
            };
            let (a, b) = (run(false), run(true));
            assert!(
                a == b,
                "case {i}: {f0:?} seq {seq} len {n} fin {fin}\n{:?}\n{:?}",
                (a.0, a.1, a.2, a.3),
                (b.0, b.1, b.2, b.3)
            );
        }
        assert!(short > 30_000, "{short}");
    }
}
