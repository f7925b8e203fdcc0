//! Loss recovery on the send side: SACK-based (RFC 6675), NewReno without
//! SACK (RFC 6582), retransmission after a timeout (RFC 6675 §5.1). Every
//! case here went back N (resending everything from SND.UNA) before.

use super::*;

/// Payload of a full segment (MSS 1460 less the timestamp option).
const M: u32 = 1448;

/// A duplicate-or-not ACK from the peer at `fx.peer_ack` carrying SACK
/// blocks given as our stream offsets.
fn sack(fx: &Fx, blocks: &[(u32, u32)]) -> Seg {
    Seg {
        sack: blocks
            .iter()
            .map(|&(a, b)| (fx.lseq(a), fx.lseq(b)))
            .collect(),
        ..fx.peer(0)
    }
}

/// Writes and sends `n` full segments; consumes them.
fn fx_with_segments(o: FlowOpts, n: u32) -> Fx {
    let mut fx = Fx::new(o);
    fx.write(n * M, 0).unwrap();
    assert_eq!(fx.poll() as u32, n);
    fx.out.frames.clear();
    fx
}

/// Our retransmission (or segment) `k` of `M` bytes.
fn seg_k(fx: &Fx, k: u32) -> Seg {
    fx.ours_data(k * M, M, 0, 32_768)
}

fn last_seg(fx: &Fx, k: u32) -> Seg {
    Seg {
        flags: ACK | PSH,
        ..seg_k(fx, k)
    }
}

fn in_recovery(fx: &Fx) -> bool {
    fx.flow().st & st::TX_RECOVERY != 0
}

#[test]
fn sack_recovery_resends_only_the_holes() {
    // Ten segments out; 2 and 5 are lost.
    let mut fx = fx_with_segments(FlowOpts::default(), 10);
    fx.peer_ack = 2 * M;
    send!(fx, fx.peer(0));
    fx.notifications();
    send!(fx, sack(&fx, &[(3 * M, 4 * M)]));
    send!(fx, sack(&fx, &[(3 * M, 5 * M)]));
    // Two duplicates and 2 SMSS SACKed: not yet lost (RFC 6675 IsLost wants
    // more than (DupThresh - 1) * SMSS).
    assert_eq!(fx.poll(), 0);
    assert!(!in_recovery(&fx));
    send!(fx, sack(&fx, &[(6 * M, 7 * M), (3 * M, 5 * M)]));
    // Rule 1 resends segment 2 (lost); with no new data, rule 3 the hole
    // at 5 below the highest SACKed byte. Nothing else, in particular not
    // the SACKed segments.
    assert_eq!(fx.poll(), 2);
    recv!(fx, seg_k(&fx, 2));
    recv!(fx, seg_k(&fx, 5));
    recv_nothing!(fx);
    assert!(in_recovery(&fx));
    send!(fx, sack(&fx, &[(6 * M, 8 * M), (3 * M, 5 * M)]));
    send!(fx, sack(&fx, &[(6 * M, 10 * M), (3 * M, 5 * M)]));
    assert_eq!(fx.poll(), 0);
    // The retransmissions arrive: a partial ACK, then the full one ends
    // recovery (RFC 6675 §5 step A).
    fx.peer_ack = 5 * M;
    send!(fx, sack(&fx, &[(6 * M, 10 * M)]));
    assert!(in_recovery(&fx));
    assert_eq!(fx.poll(), 0);
    fx.peer_ack = 10 * M;
    send!(fx, fx.peer(0));
    assert!(!in_recovery(&fx));
    assert_eq!(fx.notifications(), vec![fx.ev(0, 10 * M, 0)]);
    let s = fx.fp.stats;
    assert_eq!(
        (
            s.fast_retransmits,
            s.sack_recoveries,
            s.rexmit_segments,
            s.rexmit_bytes
        ),
        (1, 1, 2, 2 * M as u64)
    );
    assert_eq!({ fx.flow().cnt_frexmits }, 1);
    assert_eq!({ fx.flow().tx_sent }, 0);
    // The common case again.
    fx.write(100, 0).unwrap();
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(10 * M, 100, 0, 32_768)
        }
    );
}

#[test]
fn sack_recovery_sends_holes_first_then_new_data_within_cwnd_minus_pipe() {
    let mut fx = fx_with_segments(
        FlowOpts {
            tx_cwnd: 5 * M,
            ..Default::default()
        },
        5,
    );
    fx.write(5 * M, 0).unwrap();
    assert_eq!(fx.poll(), 0, "window full");
    // Segment 0 lost; 1, 2, 3 SACKed.
    send!(fx, sack(&fx, &[(M, 2 * M)]));
    send!(fx, sack(&fx, &[(M, 3 * M)]));
    send!(fx, sack(&fx, &[(M, 4 * M)]));
    // pipe = 5 in flight - 3 SACKed - 1 lost = 1 (segment 4): the hole,
    // then three new segments fill cwnd - pipe (RFC 6675 §5 step C).
    assert_eq!(fx.poll(), 4);
    recv!(fx, seg_k(&fx, 0));
    recv!(fx, seg_k(&fx, 5));
    recv!(fx, seg_k(&fx, 6));
    recv!(fx, seg_k(&fx, 7));
    recv_nothing!(fx);
    assert!(in_recovery(&fx));
    // Segment 4 SACKed: room for one more.
    send!(fx, sack(&fx, &[(M, 5 * M)]));
    assert_eq!(fx.poll(), 1);
    recv!(fx, seg_k(&fx, 8));
    // The retransmission arrives: everything up to 5 is ACKed, which is
    // RecoveryPoint (SND.NXT when recovery began).
    fx.peer_ack = 5 * M;
    send!(fx, fx.peer(0));
    assert!(!in_recovery(&fx));
    // Back to the common case: the window counts bytes in flight.
    assert_eq!(fx.poll(), 1);
    recv!(fx, last_seg(&fx, 9));
    assert_eq!(fx.fp.stats.rexmit_segments, 1);
}

#[test]
fn lost_retransmission_is_resent_once_later_data_is_sacked() {
    let mut fx = fx_with_segments(FlowOpts::default(), 10);
    // Segment 0 lost; 1-3 SACKed: recovery resends 0.
    send!(fx, sack(&fx, &[(M, 2 * M)]));
    send!(fx, sack(&fx, &[(M, 3 * M)]));
    send!(fx, sack(&fx, &[(M, 4 * M)]));
    assert_eq!(fx.poll(), 1);
    recv!(fx, seg_k(&fx, 0));
    // The rest of the first flight arrives; the retransmission does not.
    send!(fx, sack(&fx, &[(M, 10 * M)]));
    assert_eq!(fx.poll(), 0, "HighRxt: segment 0 is not resent again yet");
    // New data goes out and arrives after the retransmission should have.
    fx.write(5 * M, 0).unwrap();
    assert_eq!(fx.poll(), 5);
    fx.out.frames.clear();
    send!(fx, sack(&fx, &[(M, 11 * M)]));
    send!(fx, sack(&fx, &[(M, 12 * M)]));
    assert_eq!(fx.poll(), 0, "2 SMSS after it are not enough");
    send!(fx, sack(&fx, &[(M, 13 * M)]));
    // More than (DupThresh - 1) * SMSS sent after the retransmission got
    // there: it was lost too. Resent without waiting for the timeout.
    assert_eq!(fx.poll(), 1);
    recv!(fx, seg_k(&fx, 0));
    assert_eq!(fx.fp.stats.rexmit_lost, 1);
    fx.peer_ack = 15 * M;
    send!(fx, fx.peer(0));
    assert!(!in_recovery(&fx));
    assert_eq!(fx.fp.stats.fast_retransmits, 1);
}

#[test]
fn newreno_without_sack_resends_the_first_segment_and_one_per_partial_ack() {
    let mut fx = fx_with_segments(
        FlowOpts {
            cfg: cfg::TS,
            ..Default::default()
        },
        6,
    );
    // Segments 1 and 3 lost.
    fx.peer_ack = M;
    send!(fx, fx.peer(0));
    for _ in 0..3 {
        send!(fx, fx.peer(0));
    }
    assert_eq!(fx.poll(), 1);
    recv!(fx, seg_k(&fx, 1));
    assert!(in_recovery(&fx));
    // Partial ACK up to the next hole: it is resent (RFC 6582 §3.2 step 5).
    fx.peer_ack = 3 * M;
    send!(fx, fx.peer(0));
    assert_eq!(fx.poll(), 1);
    recv!(fx, seg_k(&fx, 3));
    fx.peer_ack = 6 * M;
    send!(fx, fx.peer(0));
    assert!(!in_recovery(&fx));
    assert_eq!(fx.poll(), 0);
    let s = fx.fp.stats;
    assert_eq!(
        (s.fast_retransmits, s.sack_recoveries, s.rexmit_segments),
        (1, 0, 2)
    );
}

#[test]
fn sack_blocks_from_a_peer_without_sack_permitted_are_ignored() {
    let mut fx = fx_with_segments(
        FlowOpts {
            cfg: cfg::TS,
            ..Default::default()
        },
        6,
    );
    fx.peer_win += 1;
    send!(fx, sack(&fx, &[(M, 5 * M)]));
    assert!(!in_recovery(&fx), "not negotiated: not read");
    assert_eq!(fx.poll(), 0);
}

#[test]
fn timeout_resends_from_snd_una_skipping_sacked_ranges() {
    let mut fx = fx_with_segments(FlowOpts::default(), 10);
    fx.peer_ack = M;
    send!(fx, fx.peer(0));
    // One duplicate SACKing 4 and 5: no recovery yet; then silence.
    send!(fx, sack(&fx, &[(4 * M, 6 * M)]));
    assert!(!in_recovery(&fx));
    fx.now += 300_000_000;
    fx.fp.retransmit(fx.id, fx.now, &mut fx.out);
    // RFC 6675 §5.1: everything not SACKed is lost, resent in order.
    assert_eq!(fx.poll(), 7);
    for k in [1, 2, 3, 6, 7, 8] {
        recv!(fx, seg_k(&fx, k));
    }
    recv!(fx, last_seg(&fx, 9));
    assert!(in_recovery(&fx));
    assert_eq!(fx.poll(), 0);
    let f = fx.flow();
    assert_eq!(
        ({ f.tx_next_seq }, { f.tx_sent }),
        (fx.lseq(10 * M), 9 * M),
        "SND.NXT stays"
    );
    assert_eq!({ f.cnt_frexmits }, 0, "a timeout is not a fast retransmit");
    assert_eq!(fx.fp.stats.rto_recoveries, 1);
    // Duplicates during the timeout's recovery start no fast recovery.
    for _ in 0..3 {
        send!(fx, sack(&fx, &[(2 * M, 6 * M)]));
    }
    assert_eq!(fx.poll(), 0);
    assert_eq!(fx.fp.stats.fast_retransmits, 0);
    // The peer had more than was resent: an ACK up to SND.NXT is fine.
    fx.peer_ack = 10 * M;
    send!(fx, fx.peer(0));
    assert!(!in_recovery(&fx));
    assert_eq!(fx.fp.stats.future_acks, 0);
    assert_eq!(fx.notifications(), vec![fx.ev(0, 10 * M, 0)]);
}

#[test]
fn second_timeout_forgets_the_scoreboard() {
    let mut fx = fx_with_segments(FlowOpts::default(), 4);
    send!(fx, sack(&fx, &[(2 * M, 3 * M)]));
    fx.fp.retransmit(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 3);
    recv!(fx, seg_k(&fx, 0));
    recv!(fx, seg_k(&fx, 1));
    recv!(fx, last_seg(&fx, 3));
    // Nothing comes back: the peer may have dropped what it SACKed (RFC
    // 2018 §8). The next timeout resends everything from SND.UNA.
    fx.fp.retransmit(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 4);
    for k in 0..3 {
        recv!(fx, seg_k(&fx, k));
    }
    recv!(fx, last_seg(&fx, 3));
    assert_eq!(fx.fp.stats.sack_reneged, 1);
    assert_eq!(fx.fp.stats.rto_recoveries, 2);
}

#[test]
fn timeout_with_only_the_fin_outstanding_resends_the_fin() {
    let mut fx = fx();
    fx.write(100, cmd::F_TX_FIN).unwrap();
    assert_eq!(fx.poll(), 1);
    fx.out.frames.clear();
    fx.peer_ack = 100;
    send!(fx, fx.peer(0));
    fx.fp.retransmit(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.ours(100, 0, 32_768)
        }
    );
    assert_eq!(fx.poll(), 0);
    fx.peer_ack = 101;
    send!(fx, fx.peer(0));
    exc!(fx, Exception::FinAcked, Some(fx.id));
    assert!(!in_recovery(&fx));
}

#[test]
fn retransmissions_are_not_ect_and_carry_no_cwr() {
    let mut fx = fx_with_segments(
        FlowOpts {
            cfg: cfg::TS | cfg::SACK | cfg::ECN,
            ..Default::default()
        },
        3,
    );
    fx.peer_ack = M;
    send!(
        fx,
        Seg {
            flags: ACK | tcp::ECE,
            ..fx.peer(0)
        }
    );
    assert_ne!(fx.flow().st & st::CWR_PENDING, 0);
    send!(fx, sack(&fx, &[(2 * M, 3 * M)]));
    fx.fp.retransmit(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 1);
    // RFC 3168 §6.1.5: not-ECT; CWR waits for new data (§6.1.2).
    recv!(
        fx,
        Seg {
            ecn: ipv4::ECN_NOT_ECT,
            ..seg_k(&fx, 1)
        }
    );
    fx.write(10, 0).unwrap();
    assert_eq!(fx.poll(), 1);
    let s = fx.next_frame().unwrap();
    assert_eq!((s.flags, s.ecn), (ACK | PSH | tcp::CWR, ipv4::ECN_ECT0));
}

#[test]
fn scoreboard_is_bounded_and_never_loses_data() {
    let mut fx = Fx::new(FlowOpts {
        tx_len: 65_536,
        ..Default::default()
    });
    fx.peer_win = 30_000;
    send!(fx, fx.peer(0));
    fx.write(40 * M, 0).unwrap();
    assert_eq!(fx.poll(), 40);
    fx.out.frames.clear();
    // Every other segment lost: 20 SACKed ranges, reported 3 at a time,
    // most recent first (RFC 2018 §4).
    let mut got: Vec<(u32, u32)> = Vec::new();
    for k in (1..40).step_by(2) {
        got.insert(0, (k * M, (k + 1) * M));
        let blocks: Vec<(u32, u32)> = got.iter().take(3).copied().collect();
        send!(fx, sack(&fx, &blocks));
    }
    assert!(fx.fp.stats.sack_ranges_dropped > 0);
    // What was forgotten is only resent needlessly: recovery, ACKs and
    // timeouts get every byte through, each segment with the right bytes.
    let mut peer = [false; 40];
    for k in (1..40).step_by(2) {
        peer[k as usize] = true;
    }
    for round in 0..20 {
        fx.poll();
        while let Some(s) = fx.next_frame() {
            let off = s.seq.wrapping_sub(fx.lseq(0));
            assert_eq!(off % M, 0);
            assert_eq!(s.payload, pat(off, s.payload.len() as u32));
            peer[(off / M) as usize] = true;
        }
        let ack = peer.iter().position(|&b| !b).unwrap_or(40) as u32;
        fx.peer_ack = ack * M;
        send!(fx, fx.peer(0));
        if ack == 40 {
            assert!(round < 10, "took {round} rounds");
            break;
        }
        fx.fp.retransmit(fx.id, fx.now, &mut fx.out);
    }
    assert_eq!({ fx.flow().tx_sent }, 0);
    assert!(!in_recovery(&fx));
}

#[test]
fn invalid_and_duplicate_sack_blocks_are_ignored() {
    let mut fx = fx_with_segments(FlowOpts::default(), 6);
    fx.peer_ack = M;
    send!(fx, fx.peer(0));
    // Beyond SND.NXT, and a D-SACK below SND.UNA (RFC 2883): neither may
    // mark anything SACKed or lost.
    send!(fx, sack(&fx, &[(2 * M, 20 * M)]));
    send!(fx, sack(&fx, &[(0, M)]));
    assert_eq!(fx.poll(), 0);
    // They are still duplicate ACKs (RFC 5681): the third one starts
    // recovery, which knows of no SACKed data: the first segment only,
    // then the hole up to the highest SACKed byte -- none.
    send!(fx, sack(&fx, &[(3 * M, 2 * M)]));
    assert_eq!(fx.poll(), 1);
    recv!(fx, seg_k(&fx, 1));
    recv_nothing!(fx);
    assert!(in_recovery(&fx));
    assert_eq!((fx.fp.stats.sack_invalid, fx.fp.stats.dsack_blocks), (2, 1));
}

/// Ten segments out; segment 0 is late (reordered), 1..=3 arrive first and
/// draw SACKs: fast recovery resends segment 0 (and `extra` new segments
/// written beforehand go out with it).
fn fx_reordered_head(extra: u32) -> Fx {
    let mut fx = fx_with_segments(FlowOpts::default(), 10);
    if extra > 0 {
        fx.write(extra * M, 0).unwrap();
    }
    send!(fx, sack(&fx, &[(M, 2 * M)]));
    send!(fx, sack(&fx, &[(M, 3 * M)]));
    send!(fx, sack(&fx, &[(M, 4 * M)]));
    assert!(in_recovery(&fx));
    assert_eq!(fx.poll() as u32, 1 + extra);
    recv!(fx, seg_k(&fx, 0));
    fx.out.frames.clear();
    assert_eq!({ fx.flow().cnt_frexmits }, 0, "reported when it ends");
    fx
}

#[test]
fn recovery_whose_retransmission_is_dsacked_is_not_a_loss() {
    let mut fx = fx_reordered_head(0);
    // The late original arrives: a partial ACK (4..9 still on their way).
    fx.peer_ack = 4 * M;
    send!(fx, fx.peer(0));
    assert!(in_recovery(&fx));
    // Then our retransmission: the peer reports it as a duplicate (RFC
    // 2883), before recovery ends.
    send!(fx, sack(&fx, &[(0, M)]));
    assert_eq!(fx.fp.stats.dsack_blocks, 1);
    assert_eq!({ fx.flow().cnt_frexmits }, 0);
    fx.peer_ack = 10 * M;
    send!(fx, fx.peer(0));
    assert!(!in_recovery(&fx));
    let s = fx.fp.stats;
    assert_eq!(
        (s.fast_retransmits, s.sack_recoveries, s.spurious_recoveries),
        (1, 1, 1)
    );
    assert_eq!(
        { fx.flow().cnt_frexmits },
        0,
        "reordering is not congestion"
    );
}

#[test]
fn dsack_after_recovery_ended_takes_the_loss_report_back() {
    // Two new segments go out with the retransmission, so data is still in
    // flight after recovery ends.
    let mut fx = fx_reordered_head(2);
    // The late original arrives after 1..=9: everything up to
    // RecoveryPoint is ACKed, recovery ends and is reported ...
    fx.peer_ack = 10 * M;
    send!(fx, fx.peer(0));
    assert!(!in_recovery(&fx));
    assert_eq!({ fx.flow().cnt_frexmits }, 1);
    // ... then the retransmission comes back as a duplicate: the report is
    // taken back, the slow path not having read it yet.
    send!(fx, sack(&fx, &[(0, M)]));
    assert_eq!({ fx.flow().cnt_frexmits }, 0);
    assert_eq!(fx.fp.stats.spurious_recoveries, 1);
    // A second D-SACK for the same episode changes nothing.
    send!(fx, sack(&fx, &[(0, M)]));
    assert_eq!({ fx.flow().cnt_frexmits }, 0);
    assert_eq!(fx.fp.stats.spurious_recoveries, 1);
}

#[test]
fn dsack_after_the_slow_path_read_the_report_is_too_late() {
    let mut fx = fx_reordered_head(2);
    fx.peer_ack = 10 * M;
    send!(fx, fx.peer(0));
    assert_eq!({ fx.flow().cnt_frexmits }, 1);
    // The slow path reads and resets the counter (under the flow lock).
    fx.set(|f| f.cnt_frexmits = 0);
    send!(fx, sack(&fx, &[(0, M)]));
    assert_eq!({ fx.flow().cnt_frexmits }, 0);
    assert_eq!(fx.fp.stats.spurious_recoveries, 0);
}

#[test]
fn recovery_that_repairs_a_real_loss_is_reported_once_it_ends() {
    // Segment 0 is lost: only the retransmission fills the hole, and no
    // D-SACK ever comes.
    let mut fx = fx_reordered_head(0);
    send!(fx, sack(&fx, &[(M, 10 * M)]));
    assert_eq!(fx.poll(), 0);
    assert_eq!({ fx.flow().cnt_frexmits }, 0);
    fx.peer_ack = 10 * M;
    send!(fx, fx.peer(0));
    assert!(!in_recovery(&fx));
    assert_eq!({ fx.flow().cnt_frexmits }, 1);
    assert_eq!(fx.fp.stats.spurious_recoveries, 0);
}

/// `fx_reordered_head(0)` proven spurious: the late original is ACKed,
/// then the retransmission comes back as a duplicate (D-SACK).
fn fx_after_a_spurious_recovery() -> Fx {
    let mut fx = fx_reordered_head(0);
    fx.peer_ack = 4 * M;
    send!(fx, fx.peer(0));
    send!(fx, sack(&fx, &[(0, M)]));
    fx.peer_ack = 10 * M;
    send!(fx, fx.peer(0));
    assert!(!in_recovery(&fx));
    assert_eq!(fx.fp.stats.spurious_recoveries, 1);
    fx
}

#[test]
fn a_spurious_recovery_raises_dupthresh() {
    let mut fx = fx_after_a_spurious_recovery();
    assert_eq!(fx.fp.stats.reordering_seen, 1);
    // Ten more segments; segment 10 is overtaken by three again. DupThresh
    // is 4 now (RFC 6675 §2, as Linux's tp->reordering): no recovery, no
    // retransmission.
    fx.write(10 * M, 0).unwrap();
    assert_eq!(fx.poll(), 10);
    fx.out.frames.clear();
    send!(fx, sack(&fx, &[(11 * M, 12 * M)]));
    send!(fx, sack(&fx, &[(11 * M, 13 * M)]));
    send!(fx, sack(&fx, &[(11 * M, 14 * M)]));
    assert!(!in_recovery(&fx), "reordering by 3 is within DupThresh 4");
    assert_eq!(fx.poll(), 0);
    // A fourth segment SACKed above the hole: lost now.
    send!(fx, sack(&fx, &[(11 * M, 15 * M)]));
    assert!(in_recovery(&fx));
    assert_eq!(fx.poll(), 1);
    recv!(fx, seg_k(&fx, 10));
}

#[test]
fn a_timeout_resets_dupthresh() {
    let mut fx = fx_after_a_spurious_recovery();
    fx.write(10 * M, 0).unwrap();
    assert_eq!(fx.poll(), 10);
    fx.out.frames.clear();
    fx.now += 300_000_000;
    fx.fp.retransmit(fx.id, fx.now, &mut fx.out);
    fx.out.frames.clear();
    fx.peer_ack = 20 * M;
    send!(fx, fx.peer(0));
    assert!(!in_recovery(&fx));
    // Back to DupThresh 3.
    fx.write(10 * M, 0).unwrap();
    assert_eq!(fx.poll(), 10);
    fx.out.frames.clear();
    send!(fx, sack(&fx, &[(21 * M, 22 * M)]));
    send!(fx, sack(&fx, &[(21 * M, 23 * M)]));
    send!(fx, sack(&fx, &[(21 * M, 24 * M)]));
    assert!(in_recovery(&fx));
}

#[test]
fn on_a_reordering_path_a_partial_ack_does_not_declare_earlier_segments_lost() {
    // DupThresh 4 after a spurious recovery; a window of 10 segments.
    let mut fx = fx_after_a_spurious_recovery();
    fx.set(|f| f.tx_cwnd = 10 * M);
    fx.write(10 * M, 0).unwrap();
    assert_eq!(fx.poll(), 10);
    fx.write(10 * M, 0).unwrap();
    assert_eq!(fx.poll(), 0, "window full");
    fx.out.frames.clear();
    // 10 is lost, 13 late: 11, 12, 14, 15 SACKed (4 above 10: lost).
    send!(fx, sack(&fx, &[(11 * M, 13 * M)]));
    send!(fx, sack(&fx, &[(14 * M, 15 * M), (11 * M, 13 * M)]));
    send!(fx, sack(&fx, &[(14 * M, 16 * M), (11 * M, 13 * M)]));
    assert!(in_recovery(&fx));
    // pipe = 10 - 4 SACKed: segment 10 again, then new data 20..=23.
    assert_eq!(fx.poll(), 5);
    recv!(fx, seg_k(&fx, 10));
    fx.out.frames.clear();
    // The retransmission of 10 arrives: a partial ACK up to 13 covering
    // every retransmission of the round. Only 2 segments are SACKed above
    // 13: on a path known to reorder it may be late, so neither it nor
    // 16..=19 count as lost (RACK would wait out its reordering window):
    // pipe = 11 - 2, room for one new segment, no retransmission.
    fx.peer_ack = 13 * M;
    send!(fx, sack(&fx, &[(14 * M, 16 * M)]));
    assert!(in_recovery(&fx));
    assert_eq!(fx.poll(), 1);
    recv!(fx, seg_k(&fx, 24));
    assert_eq!(fx.fp.stats.rexmit_segments, 2, "0 and 10 only");
    // 16 and 17 arrive, 13 still missing: 4 SACKed above it, lost now.
    send!(fx, sack(&fx, &[(14 * M, 18 * M)]));
    assert!(fx.poll() >= 1);
    recv!(fx, seg_k(&fx, 13));
}

#[test]
fn in_recovery_a_probe_request_resends_a_retransmission_rack_finds_lost() {
    let mut fx = fx_with_segments(FlowOpts::default(), 10);
    fx.set(|f| f.rtt_est = 100);
    // Segment 0 lost; the rest SACKed: recovery resends 0, which is lost
    // as well. Nothing else is in flight, so no ACK will tell.
    send!(fx, sack(&fx, &[(M, 2 * M)]));
    send!(fx, sack(&fx, &[(M, 3 * M)]));
    send!(fx, sack(&fx, &[(M, 10 * M)]));
    assert_eq!(fx.poll(), 1);
    recv!(fx, seg_k(&fx, 0));
    // The slow path's PTO (2 SRTT + 2 ms) asks for a probe. Within SRTT +
    // SRTT/4 of the retransmission: nothing yet.
    fx.now += 100_000;
    fx.fp.probe(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 0);
    // Later: RACK (RFC 8985 §6.3) finds it lost; resent at once, not at the
    // retransmission timeout.
    fx.now += 2_000_000;
    fx.fp.probe(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 1);
    recv!(fx, seg_k(&fx, 0));
    let s = fx.fp.stats;
    assert_eq!((s.rack_timeouts, s.rexmit_lost, s.tlp_probes), (1, 1, 0));
    assert!(in_recovery(&fx));
    assert_eq!(
        { fx.flow().cnt_frexmits },
        1,
        "a lost retransmission is a loss"
    );
    fx.peer_ack = 10 * M;
    send!(fx, fx.peer(0));
    assert!(!in_recovery(&fx));
}

#[test]
fn in_recovery_a_probe_request_resends_the_first_hole_when_nothing_else_goes() {
    // DupThresh 4 (reordering seen): 10 is lost and resent; its partial
    // ACK reaches 19, which is lost too but, with nothing SACKed above it,
    // not known lost. Recovery has nothing to send.
    let mut fx = fx_after_a_spurious_recovery();
    fx.write(10 * M, 0).unwrap();
    assert_eq!(fx.poll(), 10);
    fx.out.frames.clear();
    for k in 12..=15 {
        send!(fx, sack(&fx, &[(11 * M, k * M)]));
    }
    assert!(in_recovery(&fx));
    assert_eq!(fx.poll(), 1);
    recv!(fx, seg_k(&fx, 10));
    fx.peer_ack = 19 * M;
    send!(fx, fx.peer(0));
    assert!(in_recovery(&fx));
    assert_eq!(fx.poll(), 0);
    // The flow goes quiet; the slow path's probe request resends the hole
    // rather than leaving it to the retransmission timeout.
    fx.now += 2_000_000;
    fx.fp.probe(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 1);
    recv!(fx, last_seg(&fx, 19));
    assert_eq!(fx.poll(), 0, "one probe per request");
    fx.peer_ack = 20 * M;
    send!(fx, fx.peer(0));
    assert!(!in_recovery(&fx));
}
