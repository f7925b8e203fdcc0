//! The receive path's data half: what a segment's payload and FIN do to the
//! flow's RX ring and receive sequence space.

use super::ring::{ring_add, ring_write};
use super::{RxResult, Stats};
use crate::flow::{cfg, st, FlowState, RxCold};
use crate::seq;
use crate::wire::tcp;
use tas_abi::PayloadMem;

/// Data and FIN of one segment (RFC 9293 §3.10.7.4, sixth to eighth
/// checks): in-order payload into the RX ring, the out-of-order interval,
/// duplicates and trimming to the window, an in-order FIN.
#[allow(clippy::too_many_arguments)]
pub(super) fn rx_data<M: PayloadMem>(
    f: &mut FlowState,
    _c: &mut RxCold,
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
        if seg.seq() == f.rx_next_seq {
            if let Some((val, _)) = ts {
                f.tx_next_ts = val;
            }
        } else if seq::lt(seg.seq(), f.rx_next_seq) {
            // An old zero-length segment: a keepalive or zero-window probe
            // (sent at RCV.NXT - 1). Unacceptable segments get an ACK
            // (RFC 9293 §3.10.7.4); the prober resets the connection
            // after a few unanswered ones.
            stats.dup_segments += 1;
            r.ack = true;
        }
        return;
    }
    r.ece = ce && f.cfg & cfg::ECN != 0;
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
            stats.dup_segments += 1;
            return;
        }
        data = &data[skip..];
        sq = nxt;
    }
    if sq == nxt {
        if data.len() > f.rx_avail as usize {
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
            let end = f.rx_ooo_start.wrapping_add(f.rx_ooo_len);
            if seq::gt(end, f.rx_next_seq) {
                let extra = seq::dist(f.rx_next_seq, end);
                f.rx_next_pos = ring_add(f.rx_next_pos, extra, f.rx_len);
                f.rx_next_seq = end;
                f.rx_avail -= extra;
                stats.rx_payload_bytes += extra as u64;
            }
            f.rx_ooo_len = 0;
            r.notify = true;
        }
        if fin && f.rx_ooo_len == 0 && f.rx_next_seq == sq.wrapping_add(data.len() as u32) {
            f.rx_next_seq = f.rx_next_seq.wrapping_add(1);
            f.st |= st::RX_FIN;
            if f.st & st::TX_FIN_SENT == 0 {
                f.st |= st::RX_FIN_FIRST;
            }
            r.fin_rx = true;
            r.notify = true;
        }
        return;
    }

    // Out of order: keep it if it fits the window and touches the interval.
    let off = seq::dist(nxt, sq);
    if off >= f.rx_avail || data.is_empty() {
        stats.ooo_dropped += 1;
        return;
    }
    if data.len() as u32 > f.rx_avail - off {
        data = &data[..(f.rx_avail - off) as usize];
        stats.window_trimmed += 1;
    }
    let end = sq.wrapping_add(data.len() as u32);
    let (new_start, new_end) = if f.rx_ooo_len == 0 {
        (sq, end)
    } else {
        let os = f.rx_ooo_start;
        let oe = os.wrapping_add(f.rx_ooo_len);
        if seq::gt(sq, oe) || seq::lt(end, os) {
            stats.ooo_dropped += 1;
            return;
        }
        (
            if seq::lt(sq, os) { sq } else { os },
            if seq::gt(end, oe) { end } else { oe },
        )
    };
    let pos = ring_add(f.rx_next_pos, off, f.rx_len);
    if !ring_write(mem, f.mem, f.rx_base, f.rx_len, pos, data) {
        stats.mem_errors += 1;
        return;
    }
    f.rx_ooo_start = new_start;
    f.rx_ooo_len = seq::dist(new_start, new_end);
    stats.ooo_accepted += 1;
}
