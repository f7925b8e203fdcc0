//! The first check on a segment of an established flow: is its sequence
//! number acceptable (RFC 9293 §3.10.7.4)? And data on a segment whose ACK is
//! not acceptable (RFC 5961 §5.2) never reaches the RX ring.
//!
//! | SEG.LEN | RCV.WND | acceptable when                                   |
//! |---------|---------|---------------------------------------------------|
//! | 0       | 0       | SEG.SEQ = RCV.NXT                                 |
//! | 0       | > 0     | RCV.NXT ≤ SEG.SEQ < RCV.NXT + RCV.WND             |
//! | > 0     | 0       | never                                             |
//! | > 0     | > 0     | the first or the last octet in the window         |

use super::tx::fx_with_3000_in_flight;
use super::*;

const W: u32 = 32_768;

#[test]
fn a_segment_beyond_the_window_is_dropped_before_any_field_is_used() {
    // Its ACK, window, FIN, ECN marks and timestamp are all ignored; the
    // answer is a plain ACK of what we have.
    let mut fx = fx_with_3000_in_flight();
    let before = fx.flow();
    let region = fx.region();
    fx.peer_ack = 3000;
    fx.peer_win = 0;
    fx.peer_ts += 100;
    send!(
        fx,
        Seg {
            flags: ACK | PSH | FIN | tcp::ECE,
            ecn: ipv4::ECN_CE,
            ..fx.data(W, 100)
        }
    );
    recv!(
        fx,
        Seg {
            ts: Some((fx.tsv(), PEER_TS0)),
            ..fx.ours(3000, 0, W)
        }
    );
    recv_nothing!(fx);
    exc_nothing!(fx);
    assert_eq!(fx.flow(), before);
    assert_eq!(fx.region(), region);
    assert!(fx.notifications().is_empty());
    assert_eq!(fx.fp.stats.seq_unacceptable, 1);
    assert_eq!(fx.fp.stats.dup_segments, 0);
}

#[test]
fn an_old_duplicate_is_answered_and_its_ack_ignored() {
    let mut fx = fx_with_3000_in_flight();
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(3000, 100, W - 100));
    assert_eq!(fx.notifications(), vec![fx.ev(100, 0, 0)]);
    let before = fx.flow();
    fx.peer_ack = 3000;
    fx.peer_ts += 5;
    send!(fx, fx.data(0, 100));
    recv!(
        fx,
        fx.sack(
            Seg {
                ts: Some((fx.tsv(), PEER_TS0)),
                ..fx.ours(3000, 100, W - 100)
            },
            &[(0, 100)]
        )
    );
    assert_eq!(fx.flow(), before, "ACK, window and TS.Recent untouched");
    assert!(fx.notifications().is_empty());
    assert_eq!(fx.fp.stats.seq_unacceptable, 1);
    assert_eq!(fx.fp.stats.dup_segments, 1);
    // The same ACK on an acceptable segment is taken.
    send!(fx, fx.peer(100));
    recv_nothing!(fx);
    assert_eq!(fx.notifications(), vec![fx.ev(100, 3000, 0)]);
}

#[test]
fn unacceptable_zero_length_segments_get_rate_limited_acks() {
    // Answered as RFC 9293 §3.10.7.4 says, but at most once per 500 ms and
    // flow (RFC 5961 §10 ACK throttling; Linux's tcp_invalid_ratelimit):
    // forged or stale pure ACKs cannot draw an ACK each.
    let mut fx = fx();
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(0, 100, W - 100));
    // Right edge: offset 100 + (W - 100) = W.
    send!(fx, fx.peer(W));
    recv!(fx, fx.ours(0, 100, W - 100));
    send!(fx, fx.peer(W + 5000));
    send!(fx, fx.peer(50));
    send!(fx, fx.peer(0u32.wrapping_sub(3)));
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.unacceptable_acks_limited, 3);
    // A keepalive or zero-window probe (at RCV.NXT - 1) is always answered,
    // and so is a segment with data.
    send!(fx, fx.peer(99));
    recv!(fx, fx.ours(0, 100, W - 100));
    send!(fx, fx.peer(99));
    recv!(fx, fx.ours(0, 100, W - 100));
    send!(fx, fx.data(W, 10));
    recv!(fx, fx.ours(0, 100, W - 100));
    send!(fx, fx.data(W + 10, 10));
    recv!(fx, fx.ours(0, 100, W - 100));
    // 500 ms later the next one is answered again.
    fx.now += 499_000_000;
    send!(fx, fx.peer(50));
    recv_nothing!(fx);
    fx.now += 1_000_000;
    send!(fx, fx.peer(50));
    recv!(fx, fx.ours(0, 100, W - 100));
    assert_eq!(fx.fp.stats.seq_unacceptable, 10);
    assert_eq!(fx.fp.stats.unacceptable_acks_limited, 4);
    assert_eq!(fx.notifications(), vec![fx.ev(100, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 100));
}

#[test]
fn with_a_zero_window_only_rcv_nxt_is_acceptable() {
    // RCV.WND = 0: a zero-length segment is acceptable only at RCV.NXT, one
    // with data never; but "special allowance should be made to accept
    // valid ACKs": at RCV.NXT its ACK is taken and its data dropped.
    let mut fx = Fx::new(FlowOpts {
        rx_len: 4096,
        rcv_wscale: 0,
        ..Default::default()
    });
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.poll(), 3);
    fx.out.frames.clear();
    send!(fx, fx.data(0, 4096));
    recv!(fx, fx.ours(3000, 4096, 0));
    fx.notifications();
    let region = fx.region();
    fx.peer_ack = 1448;
    send!(fx, fx.peer(4097));
    recv!(fx, fx.ours(3000, 4096, 0));
    assert_eq!(
        { fx.flow().tx_sent },
        3000,
        "ACK of an unacceptable segment"
    );
    send!(fx, fx.peer(4096));
    recv_nothing!(fx);
    assert_eq!({ fx.flow().tx_sent }, 3000 - 1448);
    fx.peer_ack = 2896;
    send!(fx, fx.data(4096, 1));
    recv!(fx, fx.ours(3000, 4096, 0));
    assert_eq!({ fx.flow().tx_sent }, 3000 - 2896);
    fx.peer_ack = 3000;
    send!(fx, fx.data(4097, 10));
    recv!(fx, fx.ours(3000, 4096, 0));
    assert_eq!({ fx.flow().tx_sent }, 3000 - 2896);
    assert_eq!(fx.region(), region);
    assert_eq!(fx.notifications(), vec![fx.ev(4096, 2896, 0)]);
    assert_eq!(fx.fp.stats.seq_unacceptable, 2);
    assert_eq!(fx.fp.stats.window_trimmed, 1);
}

#[test]
fn acceptable_segments_not_at_rcv_nxt_are_processed() {
    // Guards for the other side of the table: these were and stay accepted.
    let mut fx = Fx::new(FlowOpts {
        rx_len: 4096,
        rcv_wscale: 0,
        ..Default::default()
    });
    fx.write(3000, 0).unwrap();
    fx.poll();
    fx.out.frames.clear();
    // Zero-length inside the window: its ACK is taken, nothing to answer.
    fx.peer_ack = 1000;
    send!(fx, fx.peer(10));
    recv_nothing!(fx);
    assert_eq!({ fx.flow().tx_sent }, 2000);
    // Last octet in the window (first one old): trimmed at the left.
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(3000, 100, 3996));
    fx.peer_ack = 2000;
    send!(fx, fx.data(50, 100));
    recv!(fx, fx.sack(fx.ours(3000, 150, 3946), &[(50, 100)]));
    assert_eq!({ fx.flow().tx_sent }, 1000);
    // First octet in the window (last one beyond): trimmed at the right.
    send!(fx, fx.data(4000, 200));
    recv!(fx, fx.sack(fx.ours(3000, 150, 3946), &[(4000, 4096)]));
    assert_eq!(fx.fp.stats.seq_unacceptable, 0);
    assert_eq!(fx.fp.stats.window_trimmed, 1);
}

#[test]
fn blind_data_with_an_ack_beyond_snd_nxt_never_reaches_the_ring() {
    // RFC 5961 §5.2: a segment acknowledging what was never sent is dropped
    // after an ACK, data and all: in order, out of order, bridging a hole,
    // with a FIN.
    let mut fx = fx_with_3000_in_flight();
    send!(fx, fx.data(200, 100));
    recv!(fx, fx.sack(fx.ours(3000, 0, W), &[(200, 300)]));
    let before = fx.flow();
    let region = fx.region();
    fx.peer_ack = 4001;
    for (off, n, flags) in [
        (0, 100, ACK | PSH),
        (100, 100, ACK),
        (300, 50, ACK),
        (1000, 100, ACK | FIN),
        (0, 300, ACK | FIN),
    ] {
        send!(
            fx,
            Seg {
                payload: vec![b'X'; n],
                flags,
                ..fx.peer(off)
            }
        );
        recv!(fx, fx.sack(fx.ours(3000, 0, W), &[(200, 300)]));
    }
    exc_nothing!(fx);
    assert!(fx.notifications().is_empty());
    assert_eq!(fx.flow(), before);
    assert_eq!(fx.region(), region);
    assert_eq!(fx.fp.stats.future_acks, 5);
    // The real data still goes where it belongs.
    fx.peer_ack = 0;
    send!(fx, fx.data(0, 200));
    recv!(fx, fx.ours(3000, 300, W - 300));
    assert_eq!(fx.notifications(), vec![fx.ev(300, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 300));
}

#[test]
fn blind_data_with_an_ack_older_than_the_window_never_reaches_the_ring() {
    let mut fx = fx_with_3000_in_flight();
    send!(fx, fx.data(200, 100));
    recv!(fx, fx.sack(fx.ours(3000, 0, W), &[(200, 300)]));
    let before = fx.flow();
    let region = fx.region();
    // 2^30 below SND.UNA: older than any window the peer can announce
    // (65535 << 14 < 2^30).
    fx.peer_ack = 0u32.wrapping_sub(1 << 30);
    for (off, n, flags) in [
        (0, 100, ACK | PSH),
        (100, 100, ACK),
        (300, 50, ACK),
        (1000, 100, ACK | FIN),
        (0, 300, ACK | FIN),
    ] {
        send!(
            fx,
            Seg {
                payload: vec![b'X'; n],
                flags,
                ..fx.peer(off)
            }
        );
    }
    fx.out.frames.clear();
    exc_nothing!(fx);
    assert!(fx.notifications().is_empty());
    assert_eq!(fx.flow(), before);
    assert_eq!(fx.region(), region);
    fx.peer_ack = 0;
    send!(fx, fx.data(0, 200));
    recv!(fx, fx.ours(3000, 300, W - 300));
    assert_eq!(fx.notifications(), vec![fx.ev(300, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 300));
}
