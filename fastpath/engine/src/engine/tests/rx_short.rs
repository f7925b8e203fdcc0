//! The receive path's shortest data path (`rx::rx_data`: at RCV.NXT,
//! within the window, no FIN, nothing held out of order, no CE, no ACK
//! asked for) and the segments beside it that must take the general one,
//! as the peer sends them. (`rx::tests` checks the two paths agree on
//! every segment; these check what the peer and the app see.)

use super::*;

fn fx_small() -> Fx {
    Fx::new(FlowOpts {
        rx_len: 4096,
        rcv_wscale: 0,
        ..Default::default()
    })
}

#[test]
fn data_that_exactly_fills_the_window_is_taken_whole() {
    let mut fx = fx_small();
    send!(fx, fx.data(0, 96));
    recv!(fx, fx.ours(0, 96, 4000));
    // The window's last byte: still the short path, nothing trimmed.
    send!(fx, fx.data(96, 4000));
    recv!(fx, fx.ours(0, 4096, 0));
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.window_trimmed, 0);
    assert_eq!(fx.fp.stats.rx_payload_bytes, 4096);
    assert_eq!(fx.notifications(), vec![fx.ev(4096, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 4096));
}

#[test]
fn data_one_byte_beyond_the_window_is_trimmed() {
    let mut fx = fx_small();
    send!(fx, fx.data(0, 96));
    recv!(fx, fx.ours(0, 96, 4000));
    send!(fx, fx.data(96, 4001));
    recv!(fx, fx.ours(0, 4096, 0));
    assert_eq!(fx.fp.stats.window_trimmed, 1);
    assert_eq!(fx.notifications(), vec![fx.ev(4096, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 4096));
}

#[test]
fn in_order_data_while_a_later_interval_is_held_reports_it() {
    let mut fx = fx_small();
    send!(fx, fx.data(200, 100));
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(200), fx.rseq(300))],
            ..fx.ours(0, 0, 4096)
        }
    );
    // At RCV.NXT but not reaching the interval: the general path, whose
    // ACK still reports the interval.
    send!(fx, fx.data(0, 100));
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(200), fx.rseq(300))],
            ..fx.ours(0, 100, 3996)
        }
    );
    // Filling the hole delivers both.
    send!(fx, fx.data(100, 100));
    recv!(fx, fx.ours(0, 300, 3796));
    recv_nothing!(fx);
    assert_eq!(fx.notifications(), vec![fx.ev(300, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 300));
}

#[test]
fn data_into_a_missing_region_is_counted_and_not_acked() {
    let mut fx = fx_small();
    fx.set(|f| f.mem = 9);
    send!(fx, fx.data(0, 64));
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.mem_errors, 1);
    assert_eq!({ fx.flow().rx_next_seq }, fx.rseq(0));
    assert!(fx.notifications().is_empty());
}
