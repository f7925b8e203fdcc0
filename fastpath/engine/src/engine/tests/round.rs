//! One ACK per poll round for segments that only extend what was reported:
//! in-order data with no hole, and with SACK out-of-order data that extends
//! the most recent interval share one ACK sent at the round's end
//! (`FastPath::end_round`), as Linux's receiver ACKs a GRO batch. A segment
//! that opens or fills a hole, a duplicate (D-SACK), a CE mark, and
//! out-of-order data without SACK (the sender counts duplicate ACKs) are
//! ACKed at once.

use super::*;

const W: u32 = 32_768;

#[test]
fn in_order_segments_of_one_round_share_one_ack() {
    let mut fx = fx();
    let segs: Vec<Seg> = (0..4).map(|k| fx.data(k * 1000, 1000)).collect();
    fx.send_round(&segs);
    recv!(fx, fx.ours(0, 4000, W - 4000));
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.acks_coalesced, 3);
    assert_eq!(fx.fp.poll_at(), None, "nothing left owed");
    // One segment per round: one ACK each, as before.
    send!(fx, fx.data(4000, 1000));
    recv!(fx, fx.ours(0, 5000, W - 5000));
}

#[test]
fn out_of_order_segments_extending_the_latest_interval_share_one_ack() {
    let mut fx = fx();
    // A hole at 0: the first out-of-order segment is ACKed at once (a new
    // interval), those that extend it wait for the round's end.
    let segs = [
        fx.data(1000, 500),
        fx.data(1500, 500),
        fx.data(2000, 500),
        fx.data(2500, 500),
    ];
    fx.send_round(&segs);
    recv!(fx, fx.sack(fx.ours(0, 0, W), &[(1000, 1500)]));
    recv!(fx, fx.sack(fx.ours(0, 0, W), &[(1000, 3000)]));
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.acks_coalesced, 2);
    // A second hole: its first segment is ACKed at once, with both blocks
    // (the new one first, RFC 2018 §4); the rest of the round extends it.
    let segs = [fx.data(4000, 500), fx.data(4500, 500)];
    fx.send_round(&segs);
    recv!(fx, fx.sack(fx.ours(0, 0, W), &[(4000, 4500), (1000, 3000)]));
    recv!(fx, fx.sack(fx.ours(0, 0, W), &[(4000, 5000), (1000, 3000)]));
    recv_nothing!(fx);
    // The first hole filled (another left: its ACK joins the round's, as
    // Linux ACKs a filled hole at once only when none is left) and a
    // duplicate, ACKed at once with its D-SACK block (RFC 2883 §4), which
    // says everything.
    let segs = [fx.data(0, 1000), fx.data(1000, 500)];
    fx.send_round(&segs);
    recv!(
        fx,
        fx.sack(fx.ours(0, 3000, W - 3000), &[(1000, 1500), (4000, 5000)])
    );
    recv_nothing!(fx);
    // The last hole filled: at once (RFC 5681 §4.2).
    let segs = [fx.data(3000, 1000)];
    fx.send_round(&segs);
    recv!(fx, fx.ours(0, 5000, W - 5000));
    recv_nothing!(fx);
    assert_eq!(fx.notifications(), vec![fx.ev(5000, 0, 0)]);
}

#[test]
fn without_sack_every_out_of_order_segment_draws_its_duplicate_ack() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::TS,
        ..Default::default()
    });
    let segs = [fx.data(1000, 500), fx.data(1500, 500), fx.data(2000, 500)];
    fx.send_round(&segs);
    for _ in 0..3 {
        recv!(fx, fx.ours(0, 0, W));
    }
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.acks_coalesced, 0);
}

#[test]
fn a_ce_marked_segment_is_acked_at_once_with_ece() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::TS | cfg::SACK | cfg::ECN,
        ..Default::default()
    });
    let segs = [
        fx.data(0, 1000),
        Seg {
            ecn: ipv4::ECN_CE,
            ..fx.data(1000, 1000)
        },
        fx.data(2000, 1000),
    ];
    fx.send_round(&segs);
    // The CE mark's ACK at once (it covers the first segment too), the
    // last segment's at the round's end.
    recv!(
        fx,
        Seg {
            flags: ACK | tcp::ECE,
            ..fx.ours(0, 2000, W - 2000)
        }
    );
    recv!(fx, fx.ours(0, 3000, W - 3000));
    recv_nothing!(fx);
}

#[test]
fn segments_held_together_get_one_ack_when_the_delay_ends() {
    let mut fx = Fx::new(FlowOpts {
        ack_delay_ns: 40_000,
        ..Default::default()
    });
    // The first in-order segment's ACK is held for data to ride on; the
    // second joins it; one ACK when the delay ends.
    let segs = [fx.data(0, 1000), fx.data(1000, 1000)];
    fx.send_round(&segs);
    recv_nothing!(fx);
    fx.now += 40_000;
    assert_eq!(fx.flush_acks(), 1);
    recv!(fx, fx.ours(0, 2000, W - 2000));
    recv_nothing!(fx);
}
