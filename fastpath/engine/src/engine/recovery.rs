//! Loss recovery on the send side: the rare paths of ACK processing and of
//! the send loop, over the flow's [`TxCold`] record.
//!
//! * The SACK scoreboard (RFC 6675 §3, RFC 2018 §5): up to
//!   [`SACK_RANGES`] SACKed ranges above SND.UNA, fed by the peer's SACK
//!   blocks, trimmed by cumulative ACKs.
//! * Fast recovery: with SACK as RFC 6675 §5 (DupThresh duplicate ACKs or
//!   `IsLost(SND.UNA)` enter it; RecoveryPoint, HighRxt, pipe, NextSeg
//!   rules 1-3; it ends when SND.UNA reaches RecoveryPoint), without SACK
//!   information as NewReno (RFC 6582: the first unacknowledged segment
//!   after three duplicates and after every partial ACK). Lost
//!   retransmissions are noticed when data sent after them is SACKed: the
//!   round starts again (HighRxt back to SND.UNA).
//! * After a retransmission timeout (`FastPath::retransmit`): everything
//!   not SACKed below SND.NXT counts as lost and is resent from SND.UNA in
//!   order, skipping SACKed ranges (RFC 6675 §5.1), then new data. SND.NXT
//!   never moves back; a second timeout before that recovery ends forgets
//!   the scoreboard (the peer may have reneged, RFC 2018 §8), which makes
//!   it a plain go-back-N from SND.UNA.
//! * Tail-loss probes (RFC 8985 §7), asked for by the slow path
//!   (`FastPath::probe`): one segment beyond the congestion window, new
//!   data if there is any and the peer's window allows, else the highest
//!   unSACKed segment. If the probe comes back SACKed, the holes below it
//!   count as lost (what RACK concludes from the probe's delivery, without
//!   per-segment send times). A probe request while recovery runs is RACK's
//!   reordering timer (RFC 8985 §6.3): retransmissions unacknowledged 1.25
//!   SRTT after the last went are lost again and the round restarts; when
//!   none are and recovery would send nothing, the first hole goes again.
//!
//! The congestion window itself stays the slow path's (`tx_cwnd`, or
//! none under a rate limit); it learns of each fast recovery through
//! `cnt_frexmits` and of each timeout from its own timer, and reduces it.
//! A fast recovery is reported when it ends (or as soon as one of its
//! retransmissions is found lost, or a timeout hits it), not when it
//! begins: one whose retransmissions the peer all reports back as
//! duplicates (D-SACK, RFC 2883; detection as RFC 3708, Linux's "undo")
//! was reordering, not loss, and is not reported (`spurious_recoveries`).
//! A D-SACK that completes the proof after the episode ended takes the
//! report back if the slow path has not read the counter yet.
//! Here the window is only compared with `pipe` instead of the bytes in
//! flight while recovery runs (RFC 6675 §5 step C).
//! * Reordering: each recovery proven spurious by D-SACK raises the flow's
//!   DupThresh by one (up to [`REO_MAX`]; RFC 6675 §2 allows a larger
//!   DupThresh, Linux's `tp->reordering` does the same), and while it is
//!   above 3 a partial ACK no longer declares everything sent before the
//!   last retransmission lost (RACK's conclusion without a reordering
//!   window). A retransmission timeout resets it.
//!
//! All sequence numbers handled here lie in `[SND.UNA, SND.NXT]`, so they
//! compare as offsets from SND.UNA without wrap-around trouble.

use super::ring::{ring_add, ring_sub};
use super::tx::fin_pending;
use super::Stats;
use crate::flow::{st, txf, FlowState, TxCold, SACK_RANGES};
use crate::seq;
use crate::wire::tcp;

/// DupThresh (RFC 6675 §2, RFC 5681 §3.2), before reordering is seen.
pub(super) const DUP_THRESH: u32 = 3;

/// The largest reordering degree (segments) DupThresh follows.
pub(super) const REO_MAX: u8 = 32;

/// The flow's DupThresh: 3, or the reordering degree seen on the path
/// (`TxCold::reo`). RFC 6675 §2 lets DupThresh be raised where reordering
/// is known; as Linux's `tp->reordering` (and the reordering window of RFC
/// 8985 §6.2 in segments rather than time), it grows when reordering is
/// detected, so a path that delivers some segments a few places late does
/// not cost a spurious fast retransmit (and a rate cut) every time.
#[inline]
fn dup_thresh(c: &TxCold) -> u32 {
    DUP_THRESH.max(c.reo as u32)
}

/// Reordering of `degree` segments was seen: DupThresh grows to it.
fn reordering(c: &mut TxCold, degree: u32, stats: &mut Stats) {
    let d = degree.min(REO_MAX as u32) as u8;
    if d > c.reo && d as u32 > DUP_THRESH {
        c.reo = d;
        stats.reordering_seen += 1;
    }
}

/// The later of two sequence numbers.
#[inline]
fn smax(a: u32, b: u32) -> u32 {
    if seq::gt(a, b) {
        a
    } else {
        b
    }
}

/// The earlier of two sequence numbers.
#[inline]
fn smin(a: u32, b: u32) -> u32 {
    if seq::lt(a, b) {
        a
    } else {
        b
    }
}

/// Whether our FIN occupies the last sequence number in flight.
#[inline]
fn fin_in_flight(f: &FlowState) -> bool {
    f.st & (st::TX_FIN_SENT | st::TX_FIN_ACKED) == st::TX_FIN_SENT
}

/// End of the payload sent so far (SND.NXT without our FIN).
#[inline]
fn data_end(f: &FlowState) -> u32 {
    f.tx_next_seq.wrapping_sub(fin_in_flight(f) as u32)
}

// ---------------------------------------------------------------------------
// The scoreboard
// ---------------------------------------------------------------------------

fn ranges(c: &TxCold) -> &[(u32, u32)] {
    &c.sacked[..(c.sacked_n as usize).min(SACK_RANGES)]
}

/// Drops the ranges a cumulative ACK to `una` reached. A range that `una`
/// only partly covers contradicts it (the peer would have acknowledged all
/// of it): it is forgotten too.
pub(super) fn sb_prune(c: &mut TxCold, una: u32) {
    let mut k = 0;
    for i in 0..ranges(c).len() {
        let r = c.sacked[i];
        if seq::gt(r.0, una) {
            c.sacked[k] = r;
            k += 1;
        }
    }
    c.sacked_n = k as u8;
}

/// SACKed bytes in the scoreboard.
fn sb_bytes(c: &TxCold) -> u32 {
    ranges(c).iter().map(|&(l, r)| seq::dist(l, r)).sum()
}

/// SACKed bytes in `[from, to)`.
fn sacked_in(c: &TxCold, from: u32, to: u32) -> u32 {
    let mut n = 0;
    for &(l, r) in ranges(c) {
        let (a, b) = (smax(l, from), smin(r, to));
        if seq::lt(a, b) {
            n += seq::dist(a, b);
        }
    }
    n
}

/// Takes one SACK block into the scoreboard (RFC 6675 §4 Update(), RFC
/// 2018 §5). Blocks below SND.UNA (D-SACK, RFC 2883 §4) or reaching
/// beyond SND.NXT are ignored and counted. Returns whether it SACKed bytes
/// that were not SACKed before.
pub(super) fn sb_add(
    f: &mut FlowState,
    c: &mut TxCold,
    block: (u32, u32),
    una: u32,
    nxt: u32,
    stats: &mut Stats,
) -> bool {
    let (l, r) = block;
    c.flags |= txf::SACK_SEEN;
    // As offsets above SND.UNA (exact, unlike seq::lt half the sequence
    // space away): 0 < l < r <= SND.NXT.
    let (ol, or, on) = (
        l.wrapping_sub(una),
        r.wrapping_sub(una),
        nxt.wrapping_sub(una),
    );
    if !(0 < ol && ol < or && or <= on) {
        if seq::lt(l, r) && seq::le(l, una) && seq::le(r, nxt) {
            // Starts at or below SND.UNA: a D-SACK (RFC 2883 §4).
            stats.dsack_blocks += 1;
            undo_dsack(f, c, block, stats);
        } else {
            stats.sack_invalid += 1;
        }
        return false;
    }
    let before = sb_bytes(c);
    let (mut nl, mut nr) = (l, r);
    let mut out = [(0u32, 0u32); SACK_RANGES + 1];
    let mut k = 0;
    let mut placed = false;
    for &(a, b) in ranges(c) {
        if seq::lt(b, nl) {
            out[k] = (a, b);
            k += 1;
        } else if seq::gt(a, nr) {
            if !placed {
                out[k] = (nl, nr);
                k += 1;
                placed = true;
            }
            out[k] = (a, b);
            k += 1;
        } else {
            // Overlapping or touching: one range.
            nl = smin(nl, a);
            nr = smax(nr, b);
        }
    }
    if !placed {
        out[k] = (nl, nr);
        k += 1;
    }
    if k > SACK_RANGES {
        // Forget the highest range (see `SACK_RANGES`).
        stats.sack_ranges_dropped += 1;
        k = SACK_RANGES;
    }
    c.sacked[..k].copy_from_slice(&out[..k]);
    c.sacked_n = k as u8;
    sb_bytes(c) > before
}

/// The first unSACKed interval `[s, e)` with `s` at or above `from` and
/// below `to` (`e` is the hole's end, at most SND.NXT, not cut at `to`).
fn next_hole(c: &TxCold, una: u32, nxt: u32, from: u32, to: u32) -> Option<(u32, u32)> {
    let mut s = una;
    for &(l, r) in ranges(c) {
        let hs = smax(s, from);
        if seq::lt(hs, l) {
            return seq::lt(hs, to).then_some((hs, l));
        }
        s = smax(s, r);
    }
    let hs = smax(s, from);
    (seq::lt(hs, nxt) && seq::lt(hs, to)).then_some((hs, nxt))
}

/// The highest unSACKed interval below SND.NXT.
fn last_hole(c: &TxCold, una: u32, nxt: u32) -> Option<(u32, u32)> {
    let mut hole = None;
    let mut s = una;
    for &(l, r) in ranges(c) {
        if seq::lt(s, l) {
            hole = Some((s, l));
        }
        s = smax(s, r);
    }
    if seq::lt(s, nxt) {
        hole = Some((s, nxt));
    }
    hole
}

/// Everything unSACKed below the result counts as lost: RFC 6675 §4
/// IsLost() (DupThresh SACKed ranges or more than (DupThresh - 1) · SMSS
/// SACKed bytes above), the recovery's `lost_floor`, and after a probe
/// whose segment was SACKed, everything below it.
fn lost_end(f: &FlowState, c: &TxCold, smss: u32) -> u32 {
    let una = f.snd_una();
    let mut end = una;
    if f.st & st::TX_RECOVERY != 0 {
        end = smax(end, c.lost_floor);
    }
    let thresh = dup_thresh(c);
    let rs = ranges(c);
    let mut bytes = 0u32;
    for (i, &(l, r)) in rs.iter().enumerate().rev() {
        bytes += seq::dist(l, r);
        if (rs.len() - i) as u32 >= thresh || bytes > (thresh - 1) * smss {
            end = smax(end, l);
            break;
        }
    }
    if f.st & st::TX_PROBE != 0 && c.flags & txf::PROBE_SENT != 0 {
        if let Some(&(l, r)) = rs.last() {
            if r == data_end(f) {
                end = smax(end, l);
            }
        }
    }
    smin(end, f.tx_next_seq)
}

/// RFC 6675 §4 SetPipe(): sequence space presumed in the network — in
/// flight, minus SACKed, minus what is lost and not resent in this round.
fn pipe(f: &FlowState, c: &TxCold, lost_end: u32) -> u32 {
    let from = smax(f.snd_una(), c.high_rxt);
    let lost = if seq::lt(from, lost_end) {
        seq::dist(from, lost_end) - sacked_in(c, from, lost_end)
    } else {
        0
    };
    f.tx_sent.saturating_sub(sb_bytes(c)).saturating_sub(lost)
}

// ---------------------------------------------------------------------------
// Entering and leaving recovery (called from ACK processing)
// ---------------------------------------------------------------------------

/// RFC 6675 §5 step 4 / RFC 6582 §3.2 step 2: fast retransmit and enter
/// recovery.
fn enter(f: &mut FlowState, c: &mut TxCold, smss: u32, stats: &mut Stats) {
    let una = f.snd_una();
    c.recover = f.tx_next_seq;
    c.high_rxt = una;
    c.lost_floor = smin(una.wrapping_add(smss), f.tx_next_seq);
    c.rxt_nxt = f.tx_next_seq;
    c.flags &= !txf::RTO;
    f.st |= st::TX_RECOVERY;
    f.dupack_cnt = 0;
    // The loss is reported when the episode ends (see the module doc).
    c.flags = (c.flags | txf::UNDO) & !(txf::UNDO_REPORTED | txf::UNDO_DSACKED);
    c.undo_retrans = 0;
    c.undo_marker = una;
    stats.fast_retransmits += 1;
    if c.sacked_n > 0 {
        stats.sack_recoveries += 1;
    }
}

/// RFC 6675 §5 step A / RFC 6582 §3.2 step 5: SND.UNA reached
/// RecoveryPoint. The scoreboard above SND.UNA stays.
fn leave(f: &mut FlowState, c: &mut TxCold, stats: &mut Stats) {
    f.st &= !st::TX_RECOVERY;
    if c.flags & (txf::UNDO | txf::UNDO_REPORTED) == txf::UNDO {
        if c.undo_retrans == 0 {
            // Everything resent was reported back as a duplicate (or
            // nothing had to be resent): reordering, not loss.
            c.flags &= !txf::UNDO;
            stats.spurious_recoveries += 1;
            if c.flags & txf::UNDO_DSACKED != 0 {
                // Proven by D-SACK: more dupACKs than DupThresh came from
                // reordering alone.
                reordering(c, dup_thresh(c) + 1, stats);
            }
        } else {
            report_loss(f, c);
        }
    }
    c.flags &= !txf::RTO;
    f.dupack_cnt = 0;
}

/// The episode's loss goes to congestion control (once); D-SACKs may
/// still take it back (`txf::UNDO_REPORTED`).
fn report_loss(f: &mut FlowState, c: &mut TxCold) {
    if c.flags & (txf::UNDO | txf::UNDO_REPORTED) == txf::UNDO {
        f.cnt_frexmits = f.cnt_frexmits.saturating_add(1);
        c.flags |= txf::UNDO_REPORTED;
    }
}

/// The episode's loss is proven (a retransmission was lost, or a timeout
/// came): reported if it was not, and no D-SACK takes it back.
fn loss_proven(f: &mut FlowState, c: &mut TxCold) {
    report_loss(f, c);
    c.flags &= !(txf::UNDO | txf::UNDO_REPORTED);
}

/// A D-SACK block (RFC 2883) that reports one of the episode's
/// retransmissions back as a duplicate (RFC 3708 §3.2): when none is left,
/// the episode was spurious; its report, if made and not read by the slow
/// path yet, is taken back.
fn undo_dsack(f: &mut FlowState, c: &mut TxCold, block: (u32, u32), stats: &mut Stats) {
    if c.flags & txf::UNDO == 0 || c.undo_retrans == 0 {
        return;
    }
    let (l, r) = block;
    if !(seq::ge(l, c.undo_marker) && seq::le(r, c.recover)) {
        return;
    }
    c.undo_retrans -= 1;
    c.flags |= txf::UNDO_DSACKED;
    if c.undo_retrans > 0 {
        return;
    }
    if c.flags & txf::UNDO_REPORTED != 0 {
        if f.cnt_frexmits == 0 {
            // The slow path has taken it already: too late.
            c.flags &= !(txf::UNDO | txf::UNDO_REPORTED);
            return;
        }
        f.cnt_frexmits -= 1;
    } else if f.st & st::TX_RECOVERY != 0 {
        // Still running: decided when it ends (more may be resent).
        return;
    }
    c.flags &= !(txf::UNDO | txf::UNDO_REPORTED);
    stats.spurious_recoveries += 1;
    // More dupACKs than DupThresh came from reordering alone.
    reordering(c, dup_thresh(c) + 1, stats);
}

/// The slow path's retransmission timeout (RFC 6675 §5.1, RFC 6298 §5.4):
/// everything unSACKed below SND.NXT is lost and goes again from SND.UNA;
/// RecoveryPoint is SND.NXT, so no fast recovery starts before all of it
/// is acknowledged. Returns false when nothing is in flight.
pub(super) fn on_rto(f: &mut FlowState, c: &mut TxCold, stats: &mut Stats) -> bool {
    if f.tx_sent == 0 {
        return false;
    }
    sb_prune(c, f.snd_una());
    if c.flags & txf::RTO != 0 && c.sacked_n > 0 {
        // The last timeout's recovery did not get through: do not trust
        // the SACKed ranges any more.
        c.sacked_n = 0;
        stats.sack_reneged += 1;
    }
    loss_proven(f, c);
    // As Linux after a timeout: the reordering estimate starts over.
    c.reo = 0;
    let una = f.snd_una();
    c.recover = f.tx_next_seq;
    c.high_rxt = una;
    c.lost_floor = f.tx_next_seq;
    c.rxt_nxt = f.tx_next_seq;
    c.flags = (c.flags | txf::RTO) & !txf::PROBE_SENT;
    f.st = (f.st | st::TX_RECOVERY) & !st::TX_PROBE;
    f.dupack_cnt = 0;
    stats.rto_recoveries += 1;
    true
}

/// The slow path's tail-loss probe request (RFC 8985 §7.2), made when the
/// flow went quiet for a PTO: not with nothing in flight. Returns whether
/// the send loop has something to do. In recovery it is RACK's reordering
/// timer instead (RFC 8985 §6.3, see [`rack_timeout`]), and when that finds
/// nothing, the first hole goes again if recovery has nothing else to send
/// ([`txf::RXT_PROBE`]).
pub(super) fn on_probe(f: &mut FlowState, c: &mut TxCold, now_ts: u32, stats: &mut Stats) -> bool {
    if f.tx_sent == 0 {
        return false;
    }
    if f.st & st::TX_RECOVERY != 0 {
        if !rack_timeout(f, c, now_ts, stats) {
            c.flags |= txf::RXT_PROBE;
        }
        return true;
    }
    sb_prune(c, f.snd_una());
    f.st |= st::TX_PROBE;
    c.flags &= !txf::PROBE_SENT;
    true
}

/// RACK's timer rule (RFC 8985 §6.3) in recovery, when no ACK comes to
/// apply [`lost_head_retransmission`]: the round's retransmissions went out
/// no later than `rxt_ts`; a hole below HighRxt still open more than a
/// round trip plus a reordering window (SRTT/4) after it was lost again.
/// The round starts over from SND.UNA with everything below the old
/// HighRxt counted as lost, instead of waiting for the retransmission
/// timeout (and the rate collapse that follows it).
fn rack_timeout(f: &mut FlowState, c: &mut TxCold, now_ts: u32, stats: &mut Stats) -> bool {
    sb_prune(c, f.snd_una());
    let una = f.snd_una();
    if f.rtt_est == 0 || !seq::gt(c.high_rxt, una) {
        return false;
    }
    let srtt = f.rtt_est;
    if now_ts.wrapping_sub(c.rxt_ts) <= srtt + srtt / 4 {
        return false;
    }
    if next_hole(c, una, f.tx_next_seq, una, c.high_rxt).is_none() {
        return false;
    }
    c.lost_floor = smax(c.lost_floor, c.high_rxt);
    c.high_rxt = una;
    c.rxt_nxt = f.tx_next_seq;
    stats.rexmit_lost += 1;
    stats.rack_timeouts += 1;
    loss_proven(f, c);
    true
}

/// What an ACK outside the common case does to the send side's state once
/// its cumulative part is applied (`una_before` is SND.UNA before it,
/// `dup` says whether it is a duplicate ACK in the sense of RFC 5681 §2,
/// `new_sack` whether its blocks SACKed new bytes, `now_ts` is the TSval
/// clock). Returns true when the send loop should look at the flow.
#[allow(clippy::too_many_arguments)]
pub(super) fn after_ack(
    f: &mut FlowState,
    c: &mut TxCold,
    una_before: u32,
    dup: bool,
    new_sack: bool,
    smss: u32,
    now_ts: u32,
    stats: &mut Stats,
) -> bool {
    let una = f.snd_una();
    let advanced = una != una_before;
    if dup {
        stats.dupacks += 1;
    }
    // The probe episode ends when its segment is acknowledged (RFC 8985
    // §7.4): the common case takes over again.
    if f.st & st::TX_PROBE != 0 && c.flags & txf::PROBE_SENT != 0 && seq::ge(una, c.tlp_end) {
        f.st &= !st::TX_PROBE;
        c.flags &= !txf::PROBE_SENT;
    }
    if f.st & st::TX_RECOVERY != 0 {
        if seq::ge(una, c.recover) {
            leave(f, c, stats);
        } else {
            if advanced {
                // Partial ACK: holes below SND.UNA are gone.
                let rexmits_acked = seq::ge(una, c.high_rxt);
                c.high_rxt = smax(c.high_rxt, una);
                let floor = if c.flags & txf::SACK_SEEN == 0 {
                    // NewReno (RFC 6582 §3.2 step 5): the segment now at
                    // SND.UNA is lost.
                    smin(una.wrapping_add(smss), f.tx_next_seq)
                } else if rexmits_acked && c.reo as u32 <= DUP_THRESH {
                    // It covers every retransmission of the round, so the
                    // last one was delivered: what was sent before it and is
                    // neither acknowledged nor SACKed is lost (RACK, RFC
                    // 8985 §6.2, with no reordering window; the peer would
                    // have SACKed it). A receiver that keeps a single
                    // out-of-order interval has dropped it. Not on a path
                    // known to reorder: it may only be late.
                    c.rxt_nxt
                } else {
                    una
                };
                c.lost_floor = smax(c.lost_floor, floor);
            }
            if new_sack {
                lost_retransmission(f, c, smss, stats);
            }
            if dup {
                lost_head_retransmission(f, c, now_ts, stats);
            }
            return true;
        }
    }
    if f.tx_sent == 0 {
        f.dupack_cnt = 0;
        return advanced;
    }
    if advanced {
        f.dupack_cnt = 0;
    } else if dup {
        f.dupack_cnt = f.dupack_cnt.saturating_add(1);
    }
    // RFC 6675 §5 steps 1-2: DupThresh duplicates, or IsLost(SND.UNA).
    if f.dupack_cnt as u32 >= dup_thresh(c) || seq::gt(lost_end(f, c, smss), una) {
        enter(f, c, smss, stats);
        return true;
    }
    advanced
}

/// RFC 6675 leaves a lost retransmission to the timeout. When more than
/// (DupThresh - 1) · SMSS bytes sent after the last retransmission are
/// SACKed while a hole below HighRxt is still open, that hole's
/// retransmission was lost too (data sent later arrived): the round starts
/// again from SND.UNA, as RACK (RFC 8985 §6.2) would decide.
fn lost_retransmission(f: &mut FlowState, c: &mut TxCold, smss: u32, stats: &mut Stats) {
    let una = f.snd_una();
    if !seq::gt(c.high_rxt, una) || !seq::lt(c.rxt_nxt, f.tx_next_seq) {
        return;
    }
    if sacked_in(c, c.rxt_nxt, f.tx_next_seq) <= (dup_thresh(c) - 1) * smss {
        return;
    }
    if next_hole(c, una, f.tx_next_seq, una, c.high_rxt).is_some() {
        c.high_rxt = una;
        c.rxt_nxt = f.tx_next_seq;
        stats.rexmit_lost += 1;
        loss_proven(f, c);
    }
}

/// RACK's time rule (RFC 8985 §6.2) for the one segment it matters most
/// for: the peer still lacks SND.UNA although it was resent (no later than
/// the last retransmission) more than a round trip plus a reordering window
/// (SRTT/4) before this duplicate ACK. The retransmission is lost: the
/// round starts again from SND.UNA. This also covers a peer that cannot
/// SACK what was sent after it (one that keeps a single out-of-order
/// interval drops it).
fn lost_head_retransmission(f: &mut FlowState, c: &mut TxCold, now_ts: u32, stats: &mut Stats) {
    let una = f.snd_una();
    if f.rtt_est == 0 || !seq::gt(c.high_rxt, una) {
        return;
    }
    let srtt = f.rtt_est;
    if now_ts.wrapping_sub(c.rxt_ts) > srtt + srtt / 4 {
        c.high_rxt = una;
        c.rxt_nxt = f.tx_next_seq;
        stats.rexmit_lost += 1;
        loss_proven(f, c);
    }
}

// ---------------------------------------------------------------------------
// Choosing what to send (called from the send loop)
// ---------------------------------------------------------------------------

/// One segment to send: payload `[seq, seq + len)` at TX ring position
/// `pos`, plus FIN and PSH. `rexmit`: below SND.NXT (SND.NXT unchanged),
/// else new data cut at SND.NXT. `probe`: the episode's tail-loss probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cut {
    pub(super) seq: u32,
    pub(super) pos: u32,
    pub(super) len: u32,
    pub(super) fin: bool,
    pub(super) psh: bool,
    pub(super) rexmit: bool,
    pub(super) probe: bool,
}

/// New data at SND.NXT, at most `room` bytes (FIN with the last byte).
#[inline]
pub(super) fn new_cut(f: &FlowState, room: u32, smss: u32) -> Cut {
    let len = f.tx_avail.min(room).min(smss);
    Cut {
        seq: f.tx_next_seq,
        pos: f.tx_next_pos,
        len,
        fin: fin_pending(f) && len == f.tx_avail,
        psh: len > 0 && len == f.tx_avail,
        rexmit: false,
        probe: false,
    }
}

/// A retransmission from `s` inside the hole `[s, he)`: at most one SMSS
/// of payload and `room` of sequence space, our FIN if the hole holds it.
fn rexmit_cut(f: &FlowState, s: u32, he: u32, smss: u32, room: u32) -> Cut {
    let una = f.snd_una();
    let dend = data_end(f);
    let pend = smin(smin(he, dend), s.wrapping_add(smss.min(room)));
    let len = if seq::lt(s, pend) {
        seq::dist(s, pend)
    } else {
        0
    };
    let fin = fin_in_flight(f) && he == f.tx_next_seq && s.wrapping_add(len) == dend;
    // The TX ring holds SND.UNA..SND.NXT behind `tx_next_pos`.
    let una_pos = ring_sub(f.tx_next_pos, f.tx_data_in_flight(), f.tx_len);
    Cut {
        seq: s,
        pos: ring_add(
            una_pos,
            seq::dist(una, s).min(f.tx_data_in_flight()),
            f.tx_len,
        ),
        len,
        fin,
        psh: len > 0 && s.wrapping_add(len) == dend,
        rexmit: true,
        probe: false,
    }
}

/// RFC 6675 §4 NextSeg() for a flow in recovery, within `cwnd - pipe` (no
/// window from the slow path: the rate limit alone paces).
fn next_seg(f: &FlowState, c: &TxCold, smss: u32) -> Option<Cut> {
    let una = f.snd_una();
    let nxt = f.tx_next_seq;
    let lost = lost_end(f, c, smss);
    let room = if f.tx_cwnd == 0 {
        u32::MAX
    } else {
        f.tx_cwnd.saturating_sub(pipe(f, c, lost))
    };
    if room == 0 {
        return None;
    }
    let from = smax(una, c.high_rxt);
    // Rule 1: the first lost unSACKed sequence number above HighRxt.
    if let Some((s, he)) = next_hole(c, una, nxt, from, lost) {
        return Some(rexmit_cut(f, s, he, smss, room));
    }
    // Rule 2: new data, as far as the peer's window allows.
    let peer = f.rx_remote_avail.saturating_sub(f.tx_sent);
    if (f.tx_avail > 0 && peer > 0) || (fin_pending(f) && f.tx_avail == 0) {
        return Some(new_cut(f, peer.min(room), smss));
    }
    // Rule 3: the first unSACKed sequence number above HighRxt below the
    // highest SACKed one, lost or not.
    let high = ranges(c).last()?.1;
    let (s, he) = next_hole(c, una, nxt, from, high)?;
    Some(rexmit_cut(f, s, he, smss, room))
}

/// The tail-loss probe (RFC 8985 §7.3): new data if the peer's window
/// allows, else the highest unSACKed segment (RFC 8985 sends the last
/// segment; when that one is SACKed already, the highest hole is what the
/// peer is missing). Beyond the congestion window.
fn probe_seg(f: &FlowState, c: &TxCold, smss: u32) -> Option<Cut> {
    let peer = f.rx_remote_avail.saturating_sub(f.tx_sent);
    let mut cut = if f.tx_avail > 0 && peer > 0 {
        new_cut(f, peer, smss)
    } else {
        let (hs, he) = last_hole(c, f.snd_una(), f.tx_next_seq)?;
        // The last SMSS of payload of the hole (and the FIN in it).
        let pend = smin(he, data_end(f));
        let back = if seq::lt(hs, pend) {
            seq::dist(hs, pend).min(smss)
        } else {
            0
        };
        rexmit_cut(f, pend.wrapping_sub(back), he, smss, u32::MAX)
    };
    cut.probe = true;
    Some(cut)
}

/// What the send loop sends next for a flow in recovery or in a probe
/// episode, if anything. A probe request that meets a recovery is dropped
/// (recovery does better).
pub(super) fn poll_cut(
    f: &mut FlowState,
    c: &mut TxCold,
    smss: u32,
    now_ts: u32,
    stats: &mut Stats,
) -> Option<Cut> {
    sb_prune(c, f.snd_una());
    if f.st & st::TX_RECOVERY != 0 {
        if c.flags & txf::PROBE_SENT == 0 {
            f.st &= !st::TX_PROBE;
        }
        let cut = next_seg(f, c, smss);
        if c.flags & txf::RXT_PROBE == 0 {
            return cut;
        }
        c.flags &= !txf::RXT_PROBE;
        if cut.is_some() || now_ts.wrapping_sub(c.rxt_ts) <= f.rtt_est {
            // Something goes anyway, or a retransmission went within the
            // last round trip: its ACK will tell.
            return cut;
        }
        // The recovery went quiet with nothing it would send (what is
        // missing is not known lost, e.g. a last segment or FIN with
        // nothing SACKed above it): resend the first hole, whose ACK tells
        // the rest (RFC 8985 §7's probe, here within recovery).
        let (una, nxt) = (f.snd_una(), f.tx_next_seq);
        let (s, he) = next_hole(c, una, nxt, una, nxt)?;
        stats.tlp_probes += 1;
        return Some(rexmit_cut(f, s, he, smss, u32::MAX));
    }
    if c.flags & txf::PROBE_SENT == 0 {
        let cut = probe_seg(f, c, smss);
        if cut.is_none() {
            f.st &= !st::TX_PROBE;
        }
        return cut;
    }
    // A probe is out: new data as usual until its ACK ends the episode.
    let peer = f.rx_remote_avail.saturating_sub(f.tx_sent);
    let room = if f.tx_cwnd == 0 {
        peer
    } else {
        peer.min(f.tx_cwnd.saturating_sub(f.tx_sent))
    };
    let cut = new_cut(f, room, smss);
    (cut.len > 0 || cut.fin).then_some(cut)
}

/// Bookkeeping after `cut` went out at `now_ts` (the new-data part of
/// SND.NXT is the send loop's).
pub(super) fn sent(f: &mut FlowState, c: &mut TxCold, cut: &Cut, now_ts: u32, stats: &mut Stats) {
    let end = cut.seq.wrapping_add(cut.len + cut.fin as u32);
    if cut.rexmit {
        stats.rexmit_segments += 1;
        stats.rexmit_bytes += cut.len as u64;
        c.rxt_ts = now_ts;
        if f.st & st::TX_RECOVERY != 0 && c.flags & txf::UNDO != 0 {
            c.undo_retrans = c.undo_retrans.saturating_add(1);
        }
        if f.st & st::TX_RECOVERY != 0 {
            // RFC 6675 §5 step C.2.
            c.high_rxt = smax(c.high_rxt, end);
            c.rxt_nxt = f.tx_next_seq;
        }
    }
    if cut.probe {
        c.flags |= txf::PROBE_SENT;
        c.tlp_end = f.tx_next_seq;
        stats.tlp_probes += 1;
    }
}

/// The SACK blocks of a segment (RFC 2018 §3); none if its options do not
/// parse.
pub(super) fn sack_blocks(
    seg: &tcp::TcpSegment<'_>,
) -> ([(u32, u32); tcp::MAX_SACK_BLOCKS], usize) {
    match seg.parse_options() {
        Ok(o) => (o.sack_blocks, o.sack_count as usize),
        Err(_) => ([(0, 0); tcp::MAX_SACK_BLOCKS], 0),
    }
}
