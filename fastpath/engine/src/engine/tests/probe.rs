//! Tail-loss probes (RFC 8985 §7), which the slow path asks for with
//! `FastPath::probe` about two round trips after the flow went quiet.

use super::*;

const M: u32 = 1448;

fn sack(fx: &Fx, blocks: &[(u32, u32)]) -> Seg {
    Seg {
        sack: blocks
            .iter()
            .map(|&(a, b)| (fx.lseq(a), fx.lseq(b)))
            .collect(),
        ..fx.peer(0)
    }
}

fn fx_with(o: FlowOpts, bytes: u32) -> Fx {
    let mut fx = Fx::new(o);
    fx.write(bytes, 0).unwrap();
    fx.poll();
    fx.out.frames.clear();
    fx
}

#[test]
fn probe_resends_the_last_segment_when_there_is_no_new_data() {
    let mut fx = fx_with(FlowOpts::default(), 3000);
    fx.peer_ack = M;
    send!(fx, fx.peer(0));
    fx.fp.probe(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 1);
    // The last SMSS of what is in flight (segment boundaries are not kept).
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(3000 - M, M, 0, 32_768)
        }
    );
    assert_eq!(fx.poll(), 0, "one probe");
    assert_eq!(fx.fp.stats.tlp_probes, 1);
    // The tail was lost and the probe repaired it: the ACK for all of it
    // ends the episode; no recovery, no timeout.
    fx.peer_ack = 3000;
    send!(fx, fx.peer(0));
    let f = fx.flow();
    assert_eq!(f.st & (st::TX_PROBE | st::TX_RECOVERY), 0);
    assert_eq!(({ f.tx_sent }, { f.cnt_frexmits }), (0, 0));
    assert_eq!(fx.fp.stats.fast_retransmits, 0);
    fx.write(10, 0).unwrap();
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(3000, 10, 0, 32_768)
        }
    );
}

#[test]
fn probe_sends_new_data_beyond_the_congestion_window() {
    let mut fx = fx_with(
        FlowOpts {
            tx_cwnd: 2 * M,
            ..Default::default()
        },
        4 * M,
    );
    assert_eq!({ fx.flow().tx_sent }, 2 * M);
    fx.fp.probe(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 1);
    recv!(fx, fx.ours_data(2 * M, M, 0, 32_768));
    assert_eq!(fx.poll(), 0, "only one segment beyond the window");
    // Its ACK ends the episode; the window rules again.
    fx.peer_ack = 3 * M;
    send!(fx, fx.peer(0));
    assert_eq!(fx.flow().st & st::TX_PROBE, 0);
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(3 * M, M, 0, 32_768)
        }
    );
}

#[test]
fn sacked_probe_marks_the_holes_below_it_lost() {
    // Five segments; the last three are lost.
    let mut fx = fx_with(FlowOpts::default(), 5 * M);
    fx.peer_ack = 2 * M;
    send!(fx, fx.peer(0));
    fx.fp.probe(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(4 * M, M, 0, 32_768)
        }
    );
    // The probe arrives and is SACKed: one duplicate, one segment above the
    // holes -- not enough for RFC 6675, but the probe's delivery shows
    // that what was sent before it is lost (RFC 8985 §7.4).
    send!(fx, sack(&fx, &[(4 * M, 5 * M)]));
    assert_ne!(fx.flow().st & st::TX_RECOVERY, 0);
    assert_eq!(fx.poll(), 2);
    recv!(fx, fx.ours_data(2 * M, M, 0, 32_768));
    recv!(fx, fx.ours_data(3 * M, M, 0, 32_768));
    assert_eq!(fx.poll(), 0);
    fx.peer_ack = 5 * M;
    send!(fx, fx.peer(0));
    assert_eq!(fx.flow().st & (st::TX_PROBE | st::TX_RECOVERY), 0);
}

#[test]
fn probe_resends_the_highest_hole_when_the_last_segment_was_sacked() {
    // Two segments, the first lost: one duplicate only.
    let mut fx = fx_with(FlowOpts::default(), 2 * M);
    send!(fx, sack(&fx, &[(M, 2 * M)]));
    assert_eq!(fx.poll(), 0);
    fx.fp.probe(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 1);
    recv!(fx, fx.ours_data(0, M, 0, 32_768));
    fx.peer_ack = 2 * M;
    send!(fx, fx.peer(0));
    assert_eq!(fx.flow().st & (st::TX_PROBE | st::TX_RECOVERY), 0);
    assert_eq!(fx.fp.stats.rexmit_segments, 1);
}

#[test]
fn probe_carries_the_fin_when_it_is_last() {
    let mut fx = fx();
    fx.write(100, cmd::F_TX_FIN).unwrap();
    fx.poll();
    fx.out.frames.clear();
    fx.fp.probe(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | PSH | FIN,
            ..fx.ours_data(0, 100, 0, 32_768)
        }
    );
}

#[test]
fn probe_is_a_no_op_with_nothing_in_flight_or_right_after_a_timeout_retransmission() {
    let mut fx = fx();
    fx.fp.probe(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 0);
    assert_eq!(fx.flow().st & st::TX_PROBE, 0);
    let mut fx = fx_with(FlowOpts::default(), 3 * M);
    fx.fp.retransmit(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 3);
    fx.out.frames.clear();
    // (During recovery a probe request is RACK's timer, which finds
    // nothing within a round trip of the retransmissions.)
    fx.fp.probe(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 0);
    assert_eq!(fx.fp.stats.tlp_probes, 0);
    // Unknown flows are ignored.
    fx.fp.probe(1000, fx.now, &mut fx.out);
}
