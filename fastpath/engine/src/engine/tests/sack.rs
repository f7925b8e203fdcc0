//! Several out-of-order intervals per flow and the SACK option that reports
//! them (RFC 2018), with D-SACK for duplicates (RFC 2883).
//!
//! The default flow negotiated timestamps, so three SACK blocks fit in the
//! 40 option bytes (RFC 2018 §3); without timestamps four do.

use super::*;

const W: u32 = 32_768;

/// Out-of-order intervals a flow holds at most (`flow::RX_OOO_MAX`).
const N: u32 = crate::flow::RX_OOO_MAX as u32;

#[test]
fn several_holes_are_held_and_reported_most_recent_first() {
    let mut fx = fx();
    send!(fx, fx.data(100, 100));
    recv!(fx, fx.sack(fx.ours(0, 0, W), &[(100, 200)]));
    send!(fx, fx.data(300, 100));
    recv!(fx, fx.sack(fx.ours(0, 0, W), &[(300, 400), (100, 200)]));
    send!(fx, fx.data(500, 100));
    recv!(
        fx,
        fx.sack(fx.ours(0, 0, W), &[(500, 600), (300, 400), (100, 200)])
    );
    // A fourth interval: held, but only the three most recent are reported.
    send!(fx, fx.data(700, 100));
    recv!(
        fx,
        fx.sack(fx.ours(0, 0, W), &[(700, 800), (500, 600), (300, 400)])
    );
    assert!(fx.notifications().is_empty(), "nothing in order yet");
    assert_eq!(fx.fp.stats.ooo_accepted, 4);
    assert_eq!(fx.fp.stats.ooo_dropped, 0);
    // The first hole is filled: delivered up to the end of the first
    // interval; the others still reported, most recent first.
    send!(fx, fx.data(0, 100));
    recv!(
        fx,
        fx.sack(
            fx.ours(0, 200, W - 200),
            &[(700, 800), (500, 600), (300, 400)]
        )
    );
    assert_eq!(fx.notifications(), vec![fx.ev(200, 0, 0)]);
    // The last hole next: its (merged) interval comes first.
    send!(fx, fx.data(600, 100));
    recv!(
        fx,
        fx.sack(fx.ours(0, 200, W - 200), &[(500, 800), (300, 400)])
    );
    send!(fx, fx.data(200, 100));
    recv!(fx, fx.sack(fx.ours(0, 400, W - 400), &[(500, 800)]));
    send!(fx, fx.data(400, 100));
    recv!(fx, fx.ours(0, 800, W - 800));
    recv_nothing!(fx);
    assert_eq!(fx.notifications(), vec![fx.ev(800, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 800));
    assert_eq!({ fx.flow().rx_ooo_len }, 0);
    assert_eq!(fx.fp.stats.rx_payload_bytes, 800);
}

#[test]
fn without_timestamps_four_blocks_are_reported() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::SACK,
        ..Default::default()
    });
    for k in 0..5 {
        send!(fx, fx.data(100 + 200 * k, 100));
        fx.next_frame().unwrap();
    }
    send!(fx, fx.data(1000, 50));
    recv!(
        fx,
        fx.sack(
            fx.ours(0, 0, W),
            &[(900, 1050), (700, 800), (500, 600), (300, 400)]
        )
    );
    // RFC 2018 §4: the first block is the one holding the segment that
    // triggered the ACK, even the least recently reported.
    send!(fx, fx.data(200, 50));
    recv!(
        fx,
        fx.sack(
            fx.ours(0, 0, W),
            &[(100, 250), (900, 1050), (700, 800), (500, 600)]
        )
    );
    send!(fx, fx.data(0, 100));
    recv!(
        fx,
        fx.sack(
            fx.ours(0, 250, W - 250),
            &[(900, 1050), (700, 800), (500, 600), (300, 400)]
        )
    );
    assert_eq!(fx.notifications(), vec![fx.ev(250, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 250));
}

#[test]
fn a_segment_bridging_intervals_merges_them() {
    let mut fx = fx();
    for off in [100, 300, 500, 700] {
        send!(fx, fx.data(off, 100));
        fx.next_frame().unwrap();
    }
    // Adjacent on both sides: one interval, reported first.
    send!(fx, fx.data(200, 100));
    recv!(
        fx,
        fx.sack(fx.ours(0, 0, W), &[(100, 400), (700, 800), (500, 600)])
    );
    send!(fx, fx.data(600, 100));
    recv!(fx, fx.sack(fx.ours(0, 0, W), &[(500, 800), (100, 400)]));
    send!(fx, fx.data(400, 100));
    recv!(fx, fx.sack(fx.ours(0, 0, W), &[(100, 800)]));
    assert!(fx.notifications().is_empty());
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(0, 800, W - 800));
    assert_eq!(fx.notifications(), vec![fx.ev(800, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 800));
}

#[test]
fn an_in_order_segment_reaching_past_several_intervals_delivers_them() {
    let mut fx = fx();
    for off in [100, 300, 500] {
        send!(fx, fx.data(off, 100));
        fx.next_frame().unwrap();
    }
    // A go-back-N style retransmission of [0, 300): in order, it reaches the
    // first interval and touches the second. The held bytes it repeats are
    // reported with a D-SACK block (RFC 2883 §4), below the new ACK.
    send!(fx, fx.data(0, 300));
    recv!(
        fx,
        fx.sack(fx.ours(0, 400, W - 400), &[(100, 200), (500, 600)])
    );
    assert_eq!(fx.notifications(), vec![fx.ev(400, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 400));
    send!(fx, fx.data(400, 100));
    recv!(fx, fx.ours(0, 600, W - 600));
    assert_eq!(fx.notifications(), vec![fx.ev(600, 0, 0)]);
    assert_eq!(fx.read(), pat(400, 200));
    assert_eq!(fx.fp.stats.rx_payload_bytes, 600);
}

#[test]
fn full_intervals_drop_new_ones_and_never_forget_what_was_reported() {
    let mut fx = fx();
    // N intervals [100, 200), [300, 400), ..., [100 + 200 (N - 1), ...).
    for k in 0..N {
        send!(fx, fx.data(100 + 200 * k, 100));
        fx.next_frame().unwrap();
    }
    let last = 100 + 200 * (N - 1);
    let mru = |fx: &Fx| {
        fx.sack(
            fx.ours(0, 0, W),
            &[
                (last, last + 100),
                (last - 200, last - 100),
                (last - 400, last - 300),
            ],
        )
    };
    // Beyond the furthest interval: no room, dropped, nothing written.
    let before = fx.region();
    send!(fx, fx.data(last + 200, 100));
    recv!(fx, mru(&fx));
    assert_eq!(fx.region(), before, "dropped data not written");
    assert_eq!(fx.fp.stats.ooo_intervals_full, 1);
    assert_eq!(fx.fp.stats.ooo_dropped, 1);
    // Growing an interval needs no new one.
    send!(fx, fx.data(last + 100, 50));
    recv!(
        fx,
        fx.sack(
            fx.ours(0, 0, W),
            &[
                (last, last + 150),
                (last - 200, last - 100),
                (last - 400, last - 300)
            ],
        )
    );
    // In the first hole, closer to RCV.NXT than any interval: dropped as
    // well. Forgetting a reported interval instead (reneging, RFC 2018 §8)
    // makes a Linux sender wait for its retransmission timeout.
    let before = fx.region();
    send!(fx, fx.data(20, 30));
    recv!(
        fx,
        fx.sack(
            fx.ours(0, 0, W),
            &[
                (last, last + 150),
                (last - 200, last - 100),
                (last - 400, last - 300)
            ],
        )
    );
    assert_eq!(fx.region(), before, "dropped data not written");
    assert_eq!(fx.fp.stats.ooo_intervals_full, 2);
    assert_eq!(fx.fp.stats.ooo_dropped, 2);
    assert_eq!(fx.fp.stats.ooo_accepted, N as u64 + 1);
    // Filling every hole in order delivers everything held.
    let mut holes = vec![(0, 100)];
    for k in 1..N {
        holes.push((200 * k, 100));
    }
    for (off, n) in holes {
        send!(fx, fx.data(off, n));
        fx.next_frame().unwrap();
    }
    assert_eq!({ fx.flow().rx_next_seq }, fx.rseq(last + 150));
    assert_eq!({ fx.flow().rx_ooo_len }, 0);
    fx.notifications();
    assert_eq!(fx.read(), pat(0, last + 150));
}

#[test]
fn an_old_duplicate_is_reported_with_a_dsack_block_once() {
    // RFC 2883 §4.1.1: a duplicate below the cumulative ACK is reported in
    // the first block of the ACK it draws, and only there.
    let mut fx = fx();
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(0, 100, W - 100));
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.sack(fx.ours(0, 100, W - 100), &[(0, 100)]));
    assert_eq!(fx.fp.stats.dsack_sent, 1);
    send!(fx, fx.data(100, 10));
    recv!(fx, fx.ours(0, 110, W - 110));
    // Part of an old segment.
    send!(fx, fx.data(20, 30));
    recv!(fx, fx.sack(fx.ours(0, 110, W - 110), &[(20, 50)]));
    assert_eq!(fx.fp.stats.dsack_sent, 2);
    // Nor does a window update from the app, sent after one.
    let mut fx = Fx::new(FlowOpts {
        rx_len: 4096,
        rcv_wscale: 0,
        ..Default::default()
    });
    send!(fx, fx.data(0, 4096));
    recv!(fx, fx.ours(0, 4096, 0));
    send!(fx, fx.data(4000, 96));
    recv!(fx, fx.sack(fx.ours(0, 4096, 0), &[(4000, 4096)]));
    fx.notifications();
    assert_eq!(fx.read(), pat(0, 4096));
    fx.free().unwrap();
    recv!(fx, fx.ours(0, 4096, 4096));
    assert_eq!(fx.fp.stats.dsack_sent, 1);
}

#[test]
fn a_partly_old_segment_reports_the_old_part() {
    // RFC 2883 §4.1.3 (partial duplicates): the duplicate part is reported.
    let mut fx = fx();
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(0, 100, W - 100));
    send!(fx, fx.data(50, 100));
    recv!(fx, fx.sack(fx.ours(0, 150, W - 150), &[(50, 100)]));
    assert_eq!(fx.notifications(), vec![fx.ev(150, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 150));
}

#[test]
fn a_duplicate_of_held_data_is_reported_before_its_interval() {
    // RFC 2883 §4.2: D-SACK block first, then the interval holding it, then
    // the other intervals as RFC 2018 orders them.
    let mut fx = fx();
    send!(fx, fx.data(200, 100));
    fx.next_frame().unwrap();
    send!(fx, fx.data(400, 100));
    fx.next_frame().unwrap();
    send!(fx, fx.data(600, 100));
    fx.next_frame().unwrap();
    send!(fx, fx.data(200, 100));
    recv!(
        fx,
        fx.sack(fx.ours(0, 0, W), &[(200, 300), (200, 300), (600, 700)])
    );
    send!(fx, fx.data(420, 50));
    recv!(
        fx,
        fx.sack(fx.ours(0, 0, W), &[(420, 470), (400, 500), (200, 300)])
    );
    // Overlapping one end: the repeated part is reported, the interval grows.
    send!(fx, fx.data(650, 100));
    recv!(
        fx,
        fx.sack(fx.ours(0, 0, W), &[(650, 700), (600, 750), (400, 500)])
    );
    assert_eq!(fx.fp.stats.dsack_sent, 3);
    // Without a duplicate the next ACK has none.
    send!(fx, fx.data(750, 10));
    recv!(
        fx,
        fx.sack(fx.ours(0, 0, W), &[(600, 760), (400, 500), (200, 300)])
    );
    send!(fx, fx.data(0, 200));
    fx.next_frame().unwrap();
    send!(fx, fx.data(300, 100));
    fx.next_frame().unwrap();
    send!(fx, fx.data(500, 100));
    recv!(fx, fx.ours(0, 760, W - 760));
    fx.notifications();
    assert_eq!(fx.read(), pat(0, 760));
}

#[test]
fn an_old_duplicate_while_holding_intervals() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::SACK,
        ..Default::default()
    });
    send!(fx, fx.data(0, 100));
    fx.next_frame().unwrap();
    for off in [200, 400, 600, 800] {
        send!(fx, fx.data(off, 100));
        fx.next_frame().unwrap();
    }
    // D-SACK plus three intervals: four blocks without timestamps.
    send!(fx, fx.data(0, 50));
    recv!(
        fx,
        fx.sack(
            fx.ours(0, 100, W - 100),
            &[(0, 50), (800, 900), (600, 700), (400, 500)]
        )
    );
}

#[test]
fn no_dsack_without_sack() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::TS,
        ..Default::default()
    });
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(0, 100, W - 100));
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(0, 100, W - 100));
    send!(fx, fx.data(300, 100));
    recv!(fx, fx.ours(0, 100, W - 100));
    send!(fx, fx.data(300, 100));
    recv!(fx, fx.ours(0, 100, W - 100));
    assert_eq!(fx.fp.stats.dsack_sent, 0);
}

#[test]
fn a_fin_on_out_of_order_data_still_waits_for_an_in_order_one() {
    // Today's semantics kept: a FIN counts only on a segment that is in
    // order and complete after reassembly.
    let mut fx = fx();
    send!(fx, fx.data(100, 100));
    fx.next_frame().unwrap();
    send!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.data(300, 100)
        }
    );
    recv!(fx, fx.sack(fx.ours(0, 0, W), &[(300, 400), (100, 200)]));
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.sack(fx.ours(0, 200, W - 200), &[(300, 400)]));
    send!(fx, fx.data(200, 100));
    recv!(fx, fx.ours(0, 400, W - 400));
    exc_nothing!(fx);
    assert_eq!(fx.flow().st & st::RX_FIN, 0);
    send!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.peer(400)
        }
    );
    recv!(fx, fx.ours(0, 401, W - 400));
    exc!(fx, Exception::FinReceived, Some(fx.id));
    assert_eq!(fx.notifications(), vec![fx.ev(400, 0, event::F_RX_FIN)]);
    assert_eq!(fx.read(), pat(0, 400));
}
