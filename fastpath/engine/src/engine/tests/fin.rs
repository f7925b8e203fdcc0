//! FIN in both directions.

use super::tx::dupack;
use super::*;

#[test]
fn in_order_fin_with_data() {
    let mut fx = fx();
    send!(
        fx,
        Seg {
            flags: ACK | PSH | FIN,
            ..fx.data(0, 10)
        }
    );
    recv!(fx, fx.ours(0, 11, 32_768 - 10));
    exc!(fx, Exception::FinReceived, Some(fx.id));
    exc_nothing!(fx);
    assert_eq!(fx.notifications(), vec![fx.ev(10, 0, event::F_RX_FIN)]);
    assert_eq!(fx.read(), pat(0, 10));
    assert_ne!(fx.flow().st & st::RX_FIN, 0);
    // The peer retransmits its FIN: ACKed again (the data with a D-SACK
    // block, RFC 2883), nothing else.
    let f = fx.flow();
    send!(
        fx,
        Seg {
            flags: ACK | PSH | FIN,
            ..fx.data(0, 10)
        }
    );
    recv!(fx, fx.sack(fx.ours(0, 11, 32_768 - 10), &[(0, 10)]));
    send!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.peer(10)
        }
    );
    recv!(fx, fx.ours(0, 11, 32_768 - 10));
    // Data after the FIN is a retransmission as well (or garbage).
    send!(fx, fx.data(11, 5));
    recv!(fx, fx.ours(0, 11, 32_768 - 10));
    exc_nothing!(fx);
    assert_eq!(fx.flow(), f);
    assert!(fx.notifications().is_empty());
    assert_eq!(fx.fp.stats.dup_segments, 3);
    // The send side is still open.
    fx.write(5, 0).unwrap();
    fx.poll();
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(0, 5, 11, 32_768 - 10)
        }
    );
}

#[test]
fn in_order_fin_alone() {
    let mut fx = fx();
    send!(fx, fx.data(0, 10));
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
    send!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.peer(10)
        }
    );
    recv!(fx, fx.ours(0, 11, 32_768 - 10));
    exc!(fx, Exception::FinReceived, Some(fx.id));
    assert_eq!(fx.notifications(), vec![fx.ev(10, 0, event::F_RX_FIN)]);
    assert_ne!(fx.flow().st & st::RX_FIN_FIRST, 0, "the peer closed first");
}

#[test]
fn peer_fin_after_ours_is_not_marked_first() {
    let mut fx = fx();
    fx.cmd(0, 0, cmd::F_TX_FIN).unwrap();
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.ours(0, 0, 32_768)
        }
    );
    send!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.peer(0)
        }
    );
    let f = fx.flow();
    assert_ne!(f.st & st::RX_FIN, 0);
    assert_eq!(f.st & st::RX_FIN_FIRST, 0, "simultaneous close, ours first");
}

#[test]
fn fin_only_counts_when_in_order_and_complete() {
    let mut fx = fx();
    // Out of order: the FIN is not remembered.
    send!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.peer(10)
        }
    );
    recv!(fx, fx.ours(0, 0, 32_768));
    send!(
        fx,
        Seg {
            flags: ACK | PSH | FIN,
            ..fx.data(20, 10)
        }
    );
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(20), fx.rseq(30))],
            ..fx.ours(0, 0, 32_768)
        }
    );
    exc_nothing!(fx);
    // The gap is filled; the FIN on the held data still has to come again.
    send!(fx, fx.data(0, 20));
    recv!(fx, fx.ours(0, 30, 32_768 - 30));
    assert_eq!(fx.notifications(), vec![fx.ev(30, 0, 0)]);
    exc_nothing!(fx);
    // Retransmission of the whole last segment: data old (D-SACK), FIN new.
    send!(
        fx,
        Seg {
            flags: ACK | PSH | FIN,
            ..fx.data(20, 10)
        }
    );
    recv!(fx, fx.sack(fx.ours(0, 31, 32_768 - 30), &[(20, 30)]));
    exc!(fx, Exception::FinReceived, Some(fx.id));
    assert_eq!(fx.notifications(), vec![fx.ev(30, 0, event::F_RX_FIN)]);

    // A FIN whose data is cut by the window is not taken either.
    let mut fx = Fx::new(FlowOpts {
        rx_len: 4096,
        rcv_wscale: 0,
        ..Default::default()
    });
    send!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.data(0, 4100)
        }
    );
    recv!(fx, fx.ours(0, 4096, 0));
    exc_nothing!(fx);
    assert_eq!(fx.flow().st & st::RX_FIN, 0);
    // With a full ring, a bare FIN still fits (it takes no buffer space).
    send!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.peer(4100)
        }
    );
    recv!(fx, fx.ours(0, 4096, 0));
    send!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.peer(4096)
        }
    );
    recv!(fx, fx.ours(0, 4097, 0));
    exc!(fx, Exception::FinReceived, Some(fx.id));
}

#[test]
fn app_fin_rides_on_last_data_segment_and_is_acked() {
    let mut fx = fx();
    fx.write(3000, cmd::F_TX_FIN).unwrap();
    assert_eq!(fx.poll(), 3);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    recv!(fx, fx.ours_data(1448, 1448, 0, 32_768));
    recv!(
        fx,
        Seg {
            flags: ACK | PSH | FIN,
            ..fx.ours_data(2896, 104, 0, 32_768)
        }
    );
    assert_eq!({ fx.flow().tx_sent }, 3001);
    assert_eq!(fx.write(1, 0), Err(AppCmdError::AfterFin));
    // Data acknowledged, FIN not yet.
    fx.peer_ack = 3000;
    send!(fx, fx.peer(0));
    exc_nothing!(fx);
    assert_eq!(fx.notifications(), vec![fx.ev(0, 3000, 0)]);
    fx.peer_ack = 3001;
    send!(fx, fx.peer(0));
    exc!(fx, Exception::FinAcked, Some(fx.id));
    assert_eq!(
        fx.notifications(),
        vec![fx.ev(0, 3000, event::F_TX_FIN_ACKED)]
    );
    let f = fx.flow();
    assert_eq!(
        ({ f.tx_sent }, { f.cnt_ackb }, { f.tx_next_seq }),
        (0, 3000, fx.lseq(3001))
    );
    assert_eq!(fx.poll(), 0);
    recv_nothing!(fx);
    // The peer's FIN after ours: ACKed with our FIN counted.
    send!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.peer(0)
        }
    );
    recv!(fx, fx.ours(3001, 1, 32_768));
    exc!(fx, Exception::FinReceived, Some(fx.id));
    assert_eq!(
        fx.notifications(),
        vec![fx.ev(0, 3000, event::F_RX_FIN | event::F_TX_FIN_ACKED)]
    );
}

#[test]
fn app_fin_alone() {
    let mut fx = fx();
    fx.write(100, 0).unwrap();
    fx.poll();
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(0, 100, 0, 32_768)
        }
    );
    fx.cmd(0, 0, cmd::F_TX_FIN).unwrap();
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.ours(100, 0, 32_768)
        }
    );
    fx.peer_ack = 101;
    send!(fx, fx.peer(0));
    exc!(fx, Exception::FinAcked, Some(fx.id));
    assert_eq!(
        fx.notifications(),
        vec![fx.ev(0, 100, event::F_TX_FIN_ACKED)]
    );
    // A second FIN command changes nothing.
    fx.cmd(0, 0, cmd::F_TX_FIN).unwrap();
    assert_eq!(fx.poll(), 0);
}

#[test]
fn app_fin_is_retransmitted_after_go_back_n() {
    let mut fx = fx();
    fx.write(100, cmd::F_TX_FIN).unwrap();
    fx.poll();
    let fin_seg = Seg {
        flags: ACK | PSH | FIN,
        ..fx.ours_data(0, 100, 0, 32_768)
    };
    recv!(fx, fin_seg.clone());
    for _ in 0..3 {
        dupack(&mut fx);
    }
    assert_eq!(fx.poll(), 1);
    recv!(fx, fin_seg);
    // Data acknowledged, the FIN lost: the slow path's timeout resends it alone.
    fx.peer_ack = 100;
    send!(fx, fx.peer(0));
    fx.now += 10_000_000;
    fx.fp.retransmit(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | FIN,
            ..fx.ours(100, 0, 32_768)
        }
    );
    fx.peer_ack = 101;
    send!(fx, fx.peer(0));
    exc!(fx, Exception::FinAcked, Some(fx.id));
    assert_eq!(
        fx.notifications(),
        vec![fx.ev(0, 100, event::F_TX_FIN_ACKED)]
    );
}

#[test]
fn fin_ack_beyond_sent_after_go_back_n_is_accepted() {
    let mut fx = fx();
    fx.write(100, cmd::F_TX_FIN).unwrap();
    fx.poll();
    fx.out.frames.clear();
    for _ in 0..3 {
        dupack(&mut fx);
    }
    // Before we resend anything, the peer acknowledges data and FIN.
    fx.peer_ack = 101;
    send!(fx, fx.peer(0));
    exc!(fx, Exception::FinAcked, Some(fx.id));
    assert_eq!(fx.fp.stats.future_acks, 0);
    assert_eq!(
        fx.notifications(),
        vec![fx.ev(0, 100, event::F_TX_FIN_ACKED)]
    );
    let f = fx.flow();
    assert_eq!(({ f.tx_sent }, { f.tx_avail }, { f.cnt_ackb }), (0, 0, 100));
    assert_eq!(fx.poll(), 0);
    recv_nothing!(fx);
}
