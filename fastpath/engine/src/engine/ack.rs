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
    rtt_sample(f, ts, now_ts);
    r.notify = true;
    r.tx_ready = true;
}

/// The RTT estimate fed from the echoed timestamp of an ACK for new data
/// (RFC 7323 §4): a smoothed mean (gain 1/8), the first sample taken
/// whole; a TSecr of 0 or a sample above 10 s is ignored.
#[inline(always)]
fn rtt_sample(f: &mut FlowState, ts: Option<(u32, u32)>, now_ts: u32) {
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
///
/// `ts` must be the segment's timestamp option if the flow negotiated
/// timestamps, else `None` (as `rx_segment` reads it): the general path
/// reads it from the segment again.
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
    // The shortest path, selected by one compare chain: new data
    // acknowledged, no recovery or probe running, no FIN of ours sent (so
    // none can be acknowledged here), no ECE. `take_ack` with those known:
    // SND.UNA advances, the RTT sample (RFC 7323 §4), the window.
    if d.wrapping_sub(1) < f.tx_sent
        && f.st & (st::TX_RECOVERY | st::TX_PROBE | st::TX_FIN_SENT) == 0
        && seg.flags() & tcp::ECE == 0
    {
        f.tx_sent -= d;
        f.cnt_ackb = f.cnt_ackb.wrapping_add(d);
        rtt_sample(f, ts, now_ts);
        r.notify = true;
        r.tx_ready = true;
        f.dupack_cnt = 0;
        take_window(f, c, wnd, r);
        return true;
    }
    // Nothing new acknowledged on a segment with data (a bulk receiver's
    // every segment), or with nothing in flight: only the window.
    if d == 0
        && (f.tx_sent == 0
            || (f.st & (st::TX_RECOVERY | st::TX_PROBE) == 0 && !seg.payload().is_empty()))
    {
        take_window(f, c, wnd, r);
        return true;
    }
    rx_ack_cold(f, c, *seg, now_ts, limit, stats, r)
}

/// [`rx_ack_general`], out of line, with the timestamp option read from
/// the segment again as the receive path reads it (`rx_segment`: only
/// when the flow negotiated timestamps), so that the hot path keeps no
/// copy of it in memory for this call.
#[allow(clippy::too_many_arguments)]
#[cold]
#[inline(never)]
fn rx_ack_cold(
    f: &mut FlowState,
    c: &mut TxCold,
    seg: tcp::TcpSegment<'_>,
    now_ts: u32,
    limit: &mut ChallengeLimit,
    stats: &mut Stats,
    r: &mut RxResult,
) -> bool {
    let ts = super::seg_timestamp(f, &seg);
    rx_ack_general(f, c, seg, ts, now_ts, limit, stats, r)
}

/// [`rx_ack`] without its shortest path: every ACK gives the same result
/// here as there (tested against it).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rx_ack_general(
    f: &mut FlowState,
    c: &mut TxCold,
    seg: tcp::TcpSegment<'_>,
    ts: Option<(u32, u32)>,
    now_ts: u32,
    limit: &mut ChallengeLimit,
    stats: &mut Stats,
    r: &mut RxResult,
) -> bool {
    let ack = seg.ack();
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
    rx_ack_rare(f, c, seg, ts, now_ts, limit, stats, r)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tcp::{TcpOptions, TcpRepr};
    use crate::wire::testutil::Rng;

    fn below(rng: &mut Rng, n: usize) -> usize {
        rng.below(n)
    }

    /// A random segment header for `f`: its ACK around SND.UNA (old, at it,
    /// over part or all of what is in flight, beyond SND.NXT), any window,
    /// ECE/FIN/PSH sometimes, payload sometimes, TS and SACK blocks
    /// sometimes.
    fn random_segment(rng: &mut Rng, f: &FlowState, now_ts: u32) -> Vec<u8> {
        let una = f.snd_una();
        let ack = match below(rng, 8) {
            0 => una.wrapping_sub(below(rng, 70_000) as u32),
            1 | 2 => una,
            3 => f.tx_next_seq.wrapping_add(1 + below(rng, 3000) as u32),
            4 => f.tx_next_seq,
            _ => una.wrapping_add(1 + below(rng, f.tx_sent.max(1) as usize) as u32),
        };
        let mut flags = tcp::ACK;
        for (bit, p) in [(tcp::ECE, 6), (tcp::FIN, 10), (tcp::PSH, 2), (tcp::CWR, 10)] {
            if below(rng, p) == 0 {
                flags |= bit;
            }
        }
        let mut options = TcpOptions::default();
        if below(rng, 4) != 0 {
            let ecr = match below(rng, 5) {
                0 => 0,
                1 => now_ts.wrapping_sub(20_000_000),
                _ => now_ts.wrapping_sub(below(rng, 50_000) as u32),
            };
            options.timestamp = Some((rng.next_u32(), ecr));
        }
        if below(rng, 4) == 0 {
            let n = 1 + below(rng, 3);
            for i in 0..n {
                let s = una.wrapping_add(below(rng, f.tx_sent as usize + 2000) as u32);
                options.sack_blocks[i] = (s, s.wrapping_add(1 + below(rng, 3000) as u32));
            }
            options.sack_count = n as u8;
        }
        let window = match below(rng, 3) {
            0 => (f.rx_remote_avail >> f.snd_wscale) as u16,
            _ => rng.next_u32() as u16,
        };
        let repr = TcpRepr {
            src_port: 1,
            dst_port: 2,
            seq: rng.next_u32(),
            ack,
            flags,
            window,
            options,
        };
        let payload = if below(rng, 3) == 0 {
            vec![0x5a; 1 + below(rng, 100)]
        } else {
            vec![]
        };
        let mut b = vec![0u8; repr.header_len() + payload.len()];
        let n = repr.emit(&mut b).unwrap();
        b[n..].copy_from_slice(&payload);
        b
    }

    fn random_flow(rng: &mut Rng) -> FlowState {
        let mut st = 0;
        for (bit, p) in [
            (st::TX_FIN_SENT, 5),
            (st::TX_FIN_ACKED, 8),
            (st::TX_RECOVERY, 5),
            (st::TX_PROBE, 8),
            (st::CWR_PENDING, 6),
            (st::RX_FIN, 8),
        ] {
            if below(rng, p) == 0 {
                st |= bit;
            }
        }
        let mut cfgb = 0;
        for (bit, p) in [(cfg::TS, 2), (cfg::SACK, 2), (cfg::ECN, 3)] {
            if below(rng, p) == 0 {
                cfgb |= bit;
            }
        }
        FlowState {
            st,
            cfg: cfgb,
            mss: 1460,
            snd_wscale: below(rng, 8) as u8,
            tx_next_seq: rng.next_u32(),
            tx_sent: if below(rng, 5) == 0 {
                0
            } else {
                1 + below(rng, 40_000) as u32
            },
            rx_remote_avail: below(rng, 200_000) as u32,
            rtt_est: if below(rng, 4) == 0 {
                0
            } else {
                below(rng, 100_000) as u32
            },
            dupack_cnt: below(rng, 4) as u8,
            tx_cwnd: 10 * 1448,
            tx_len: 65_536,
            tx_avail: below(rng, 10_000) as u32,
            ..Default::default()
        }
    }

    /// The shortest path changes nothing: for random flows (in recovery or
    /// not, probing, our FIN sent or acknowledged, ECN on or off) and random
    /// ACKs (new data, duplicate, old, beyond SND.NXT, with SACK blocks,
    /// ECE, FIN, data, windows moved or not), `rx_ack` leaves the flow, its
    /// cold record, the result, the counters and the challenge limit
    /// exactly as `rx_ack_general` (the path every ACK took before) does.
    #[test]
    fn shortest_path_agrees_with_the_general_one() {
        let mut rng = Rng::new(0xac4);
        let mut short = 0;
        for i in 0..300_000 {
            let f0 = random_flow(&mut rng);
            let mut c0 = TxCold {
                max_snd_wnd: f0.rx_remote_avail + below(&mut rng, 100_000) as u32,
                ..Default::default()
            };
            c0.recover = f0
                .tx_next_seq
                .wrapping_sub(below(&mut rng, f0.tx_sent as usize + 1) as u32);
            c0.high_rxt = f0.snd_una();
            let now_ts = rng.next_u32();
            let buf = random_segment(&mut rng, &f0, now_ts);
            let seg = tcp::TcpSegment::parse(&buf).unwrap();
            let ts = if f0.cfg & cfg::TS != 0 {
                seg.timestamp()
            } else {
                None
            };
            let taken = seg.ack().wrapping_sub(f0.snd_una()).wrapping_sub(1) < f0.tx_sent
                && f0.st & (st::TX_RECOVERY | st::TX_PROBE | st::TX_FIN_SENT) == 0
                && seg.flags() & tcp::ECE == 0;
            short += taken as u32;
            let run = |general: bool| {
                let (mut f, mut c) = (f0, c0);
                let mut limit = ChallengeLimit::new();
                let mut stats = Stats::default();
                let mut r = RxResult::default();
                let ok = if general {
                    rx_ack_general(
                        &mut f, &mut c, seg, ts, now_ts, &mut limit, &mut stats, &mut r,
                    )
                } else {
                    rx_ack(
                        &mut f, &mut c, &seg, ts, now_ts, &mut limit, &mut stats, &mut r,
                    )
                };
                (ok, f, c, r, stats, format!("{limit:?}"))
            };
            assert_eq!(run(false), run(true), "case {i}: {f0:?} {:?}", seg.repr());
        }
        assert!(short > 30_000, "{short}");
    }
}
