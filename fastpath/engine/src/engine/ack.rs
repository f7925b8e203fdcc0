//! ACK processing on the receive path (RFC 9293 §3.10.7.4, fifth check,
//! with the RFC 5961 §5.2 bounds). The common case — an ACK for new data,
//! or one that changes nothing while nothing is in flight, without SACK
//! blocks, no recovery running — is handled inline; everything else
//! (duplicate ACKs, SACK blocks, loss recovery, probes, ACKs outside the
//! acceptable range) goes to [`rx_ack_rare`] and `recovery.rs`.

use super::recovery;
use super::tx::payload_max;
use super::{RxResult, Stats};
use crate::flow::{cfg, st, FlowState, TxCold};
use crate::seq;
use crate::wire::tcp;

/// Challenge ACKs (RFC 5961 §7) one engine sends per second at most, like
/// Linux's `tcp_challenge_ack_limit` default of 1000 per second.
pub const CHALLENGE_ACKS_PER_SEC: u32 = 1000;

/// Token bucket for challenge ACKs (RFC 5961 §7): a blind attacker must not
/// turn us into an ACK amplifier. Full at start; refills continuously, on
/// the TSval clock (µs, wrapping).
#[derive(Debug, Clone, Copy)]
pub(super) struct ChallengeLimit {
    tokens: u32,
    last: u32,
    fresh: bool,
}

impl ChallengeLimit {
    pub(super) fn new() -> Self {
        ChallengeLimit {
            tokens: CHALLENGE_ACKS_PER_SEC,
            last: 0,
            fresh: true,
        }
    }

    /// Takes a token at `now_ts` (µs), if there is one.
    pub(super) fn take(&mut self, now_ts: u32) -> bool {
        const US_PER_TOKEN: u32 = 1_000_000 / CHALLENGE_ACKS_PER_SEC;
        if self.fresh {
            self.fresh = false;
            self.last = now_ts;
        }
        let elapsed = now_ts.wrapping_sub(self.last);
        if elapsed > i32::MAX as u32 {
            // The clock went back (another lane's `now`): start again.
            self.last = now_ts;
        } else if elapsed >= US_PER_TOKEN {
            let earned = elapsed / US_PER_TOKEN;
            self.tokens = self
                .tokens
                .saturating_add(earned)
                .min(CHALLENGE_ACKS_PER_SEC);
            self.last = self.last.wrapping_add(earned * US_PER_TOKEN);
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// Drops an unacceptable segment's ACK processing with a challenge ACK
/// (RFC 5961 §5.2), if the rate limit (§7) has a token; false.
#[cold]
fn challenge(limit: &mut ChallengeLimit, now_ts: u32, stats: &mut Stats, r: &mut RxResult) -> bool {
    if limit.take(now_ts) {
        stats.challenge_acks += 1;
        r.ack = true;
    } else {
        stats.challenge_acks_limited += 1;
    }
    false
}

/// The acknowledgment of `ack`, `acked` (1..=`tx_sent`) bytes above SND.UNA,
/// taken: frees TX ring space, notes an acknowledged FIN, feeds the slow
/// path's counters and the RTT estimate (RFC 7323 §4, from TSecr).
#[inline(always)]
fn take_ack(
    f: &mut FlowState,
    ack: u32,
    acked: u32,
    flags: u8,
    ts: Option<(u32, u32)>,
    now_ts: u32,
    r: &mut RxResult,
) {
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
}

/// The peer's window `wnd` (scaled) taken, keeping MAX.SND.WND (RFC 5961
/// §5.2) in the cold record: a new maximum is always above the window it
/// replaces, so only a growing window touches it.
#[inline(always)]
fn take_window(f: &mut FlowState, c: &mut TxCold, wnd: u32, r: &mut RxResult) {
    if wnd > f.rx_remote_avail {
        r.tx_ready = true;
        if wnd > c.max_snd_wnd {
            c.max_snd_wnd = wnd;
        }
    }
    f.rx_remote_avail = wnd;
}

/// ACK processing of one segment (RFC 9293 §3.10.7.4, fifth check). False
/// when the segment must be dropped (its ACK is unacceptable, RFC 5961
/// §5.2); `r.ack` then asks for the challenge ACK, if `limit` allowed it.
///
/// SACK blocks on an ACK taken inline (new data acknowledged, no recovery
/// or probe running) are not read: the duplicate ACKs that follow a loss
/// repeat them (RFC 2018 §4). The scoreboard is trimmed to SND.UNA when
/// the rare paths next use it.
///
/// The window is taken from every acceptable ACK that is not older than
/// SND.UNA. RFC 9293's SND.WL1/SND.WL2 rule (take it only from the newest
/// segment) is not applied: it would need 8 more bytes in the hot state,
/// and a reordered segment with an older window can only shrink or grow
/// the window until the next ACK.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) fn rx_ack(
    f: &mut FlowState,
    c: &mut TxCold,
    seg: &tcp::TcpSegment<'_>,
    ts: Option<(u32, u32)>,
    now_ts: u32,
    limit: &mut ChallengeLimit,
    stats: &mut Stats,
    r: &mut RxResult,
) -> bool {
    let ack = seg.ack();
    // Offset above SND.UNA: new data acknowledged iff 1 ..= tx_sent. (Not
    // seq::gt/le: half the sequence space away both would hold.)
    let d = ack.wrapping_sub(f.snd_una());
    let wnd = (seg.window() as u32) << f.snd_wscale;
    let common = f.st & (st::TX_RECOVERY | st::TX_PROBE) == 0;
    if d.wrapping_sub(1) < f.tx_sent {
        if common {
            take_ack(f, ack, d, seg.flags(), ts, now_ts, r);
            f.dupack_cnt = 0;
            take_window(f, c, wnd, r);
            return true;
        }
    } else if d == 0 && (f.tx_sent == 0 || (common && !seg.payload().is_empty())) {
        // Not a duplicate ACK (RFC 5681 §2: nothing in flight, or data).
        take_window(f, c, wnd, r);
        return true;
    }
    rx_ack_rare(f, c, *seg, ts, now_ts, limit, stats, r)
}

/// Everything [`rx_ack`] does not handle inline. (The segment's view by
/// value: a cold callee that took its address would keep the receive
/// path's view in memory on the hot path too.)
#[allow(clippy::too_many_arguments)]
#[cold]
#[inline(never)]
fn rx_ack_rare(
    f: &mut FlowState,
    c: &mut TxCold,
    seg: tcp::TcpSegment<'_>,
    ts: Option<(u32, u32)>,
    now_ts: u32,
    limit: &mut ChallengeLimit,
    stats: &mut Stats,
    r: &mut RxResult,
) -> bool {
    let flags = seg.flags();
    let ack = seg.ack();
    let una = f.snd_una();
    let nxt = f.tx_next_seq;
    let wnd = (seg.window() as u32) << f.snd_wscale;
    // RFC 5961 §5.2: acceptable is SND.UNA - MAX.SND.WND <= SEG.ACK <=
    // SND.NXT (SND.NXT never moves back here, so it is also SND.MAX).
    // Outside it the segment is dropped and a challenge ACK sent: an ACK
    // for data never sent must not free TX ring space the peer never got.
    let d = ack.wrapping_sub(una);
    if d > f.tx_sent {
        let max_wnd = c.max_snd_wnd.max(f.rx_remote_avail);
        if una.wrapping_sub(ack) <= max_wnd {
            // An old duplicate (RFC 9293 §3.10.7.4): its ACK and window
            // are ignored, its data is not.
            stats.acks_old += 1;
            return true;
        }
        if seq::gt(ack, nxt) {
            stats.future_acks += 1;
        } else {
            stats.acks_too_old += 1;
        }
        return challenge(limit, now_ts, stats, r);
    }
    let smss = payload_max(f);
    // What the inline path acknowledged is still in the scoreboard.
    recovery::sb_prune(c, una);
    let advanced = d > 0;
    if advanced {
        take_ack(f, ack, d, flags, ts, now_ts, r);
        recovery::sb_prune(c, ack);
    }
    let mut new_sack = false;
    if f.cfg & cfg::SACK != 0 && seg.options().len() > f.opt_len() as usize {
        let (blocks, n) = recovery::sack_blocks(&seg);
        for &b in &blocks[..n] {
            new_sack |= recovery::sb_add(f, c, b, ack, nxt, stats);
        }
    }
    // RFC 5681 §2 duplicate ACK: data in flight, no data or FIN on it, ACK
    // at SND.UNA, same window; also (RFC 6675 §2) one that SACKs new bytes
    // whatever its window says. A repeated SACK block still counts: a
    // receiver that holds one out-of-order interval repeats it for every
    // segment it had to drop.
    let fin = flags & tcp::FIN != 0;
    let dup = !advanced
        && seg.payload().is_empty()
        && !fin
        && f.tx_sent > 0
        && (new_sack || wnd == f.rx_remote_avail);
    take_window(f, c, wnd, r);
    if recovery::after_ack(f, c, una, dup, new_sack, smss, now_ts, stats) {
        r.tx_ready = true;
    }
    true
}
