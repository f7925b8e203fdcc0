//! ACK processing on the receive path and the sender's reaction to loss
//! (duplicate ACKs, fast retransmit by going back to SND.UNA).

use super::ring::{ring_add, ring_sub};
use super::tx::fin_pending;
use super::{RxResult, Stats};
use crate::flow::{cfg, st, FlowState, TxCold};
use crate::seq;
use crate::wire::tcp;

/// `dupack_cnt` value after a fast retransmit, until an ACK makes progress.
pub(super) const IN_RECOVERY: u8 = u8::MAX;

/// Rewinds the sender to the first unacknowledged byte (go-back-N).
pub(super) fn go_back_n(f: &mut FlowState) {
    let data = f.tx_data_in_flight();
    let una = f.snd_una();
    f.tx_next_pos = ring_sub(f.tx_next_pos, data, f.tx_len);
    f.tx_avail += data;
    f.tx_next_seq = una;
    if f.st & st::TX_FIN_ACKED == 0 {
        f.st &= !st::TX_FIN_SENT;
    }
    f.tx_sent = 0;
    f.dupack_cnt = 0;
}

/// ACK processing of one segment (RFC 9293 §3.10.7.4, fifth check): frees
/// TX ring space, updates the peer's window, the RTT estimate and the
/// feedback counters, counts duplicate ACKs and starts fast retransmit.
/// False when the segment must be dropped after the ACK `r` asks for (it
/// acknowledges data never sent).
pub(super) fn rx_ack(
    f: &mut FlowState,
    _c: &mut TxCold,
    seg: &tcp::TcpSegment<'_>,
    ts: Option<(u32, u32)>,
    now_ts: u32,
    stats: &mut Stats,
    r: &mut RxResult,
) -> bool {
    let flags = seg.flags();
    let payload = seg.payload();
    let fin = flags & tcp::FIN != 0;
    let ack = seg.ack();
    let una = f.snd_una();
    let max_ack = f
        .tx_next_seq
        .wrapping_add(f.tx_avail)
        .wrapping_add(fin_pending(f) as u32);
    let wnd = (seg.window() as u32) << f.snd_wscale;
    if seq::gt(ack, una) && seq::le(ack, max_ack) {
        if seq::gt(ack, f.tx_next_seq) {
            // After a go-back-N the peer may acknowledge data we sent before.
            let skip = seq::dist(f.tx_next_seq, ack);
            let data_skip = skip.min(f.tx_avail);
            f.tx_next_pos = ring_add(f.tx_next_pos, data_skip, f.tx_len);
            f.tx_avail -= data_skip;
            f.tx_next_seq = ack;
            f.tx_sent += skip;
            if skip > data_skip {
                f.st |= st::TX_FIN_SENT;
            }
        }
        let acked = seq::dist(una, ack);
        let mut data_acked = acked;
        if f.st & (st::TX_FIN_SENT | st::TX_FIN_ACKED) == st::TX_FIN_SENT && ack == f.tx_next_seq {
            data_acked -= 1;
            f.st |= st::TX_FIN_ACKED;
            r.fin_acked = true;
        }
        f.tx_sent -= acked;
        f.cnt_ackb = f.cnt_ackb.wrapping_add(data_acked);
        if flags & tcp::ECE != 0 && f.cfg & cfg::ECN != 0 {
            f.cnt_ecnb = f.cnt_ecnb.wrapping_add(data_acked);
            f.st |= st::CWR_PENDING;
        }
        f.dupack_cnt = 0;
        if let Some((_, ecr)) = ts {
            let sample = now_ts.wrapping_sub(ecr);
            if ecr != 0 && sample < 10_000_000 {
                f.rtt_est = if f.rtt_est == 0 {
                    sample.max(1)
                } else {
                    (f.rtt_est * 7 + sample) / 8
                };
            }
        }
        r.notify = true;
        r.tx_ready = true;
        f.rx_remote_avail = wnd;
    } else if ack == una {
        if payload.is_empty() && !fin && f.tx_sent > 0 && wnd == f.rx_remote_avail {
            stats.dupacks += 1;
            f.dupack_cnt = f.dupack_cnt.saturating_add(1);
            if f.dupack_cnt == 3 {
                go_back_n(f);
                // In recovery until an ACK makes progress: the duplicates
                // that segments still in flight draw must not rewind again.
                f.dupack_cnt = IN_RECOVERY;
                f.cnt_frexmits = f.cnt_frexmits.saturating_add(1);
                stats.fast_retransmits += 1;
                r.tx_ready = true;
            }
        }
        if wnd > f.rx_remote_avail {
            r.tx_ready = true;
        }
        f.rx_remote_avail = wnd;
    } else if seq::gt(ack, max_ack) {
        // Acknowledges data never sent: ACK and drop (RFC 5961 §5.2).
        stats.future_acks += 1;
        r.ack = true;
        return false;
    }
    true
}
