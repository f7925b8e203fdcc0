//! The ACK's shortest path (`ack::rx_ack`: new data acknowledged, no
//! recovery or probe, no FIN of ours sent, no ECE) and the ACKs that must
//! not take it, as the peer sends them. (`ack::tests` checks the two paths
//! agree on every ACK; these check what the state becomes.)

use super::*;

/// Payload of a full segment (MSS 1460 less the timestamp option).
const M: u32 = 1448;

/// `n` full segments written and sent 300 µs ago; consumed.
fn fx_sent(o: FlowOpts, n: u32, flags: u8) -> Fx {
    let mut fx = Fx::new(o);
    fx.write(n * M, flags).unwrap();
    assert_eq!(fx.poll() as u32, n);
    while fx.next_frame().is_some() {}
    fx.now += 300_000;
    fx
}

#[test]
fn ack_of_new_data_frees_it_takes_the_rtt_sample_and_the_window() {
    let mut fx = fx_sent(FlowOpts::default(), 3, 0);
    let f0 = fx.flow();
    fx.peer_ack = M;
    fx.peer_win = 1000;
    send!(fx, fx.peer(0));
    let f = fx.flow();
    assert_eq!({ f.tx_sent }, 2 * M);
    assert_eq!(f.snd_una(), fx.lseq(M));
    assert_eq!({ f.cnt_ackb }, { f0.cnt_ackb } + M);
    // RFC 7323 §4: now − TSecr, the first sample taken whole.
    assert_eq!({ f.rtt_est }, 300);
    assert_eq!({ f.rx_remote_avail }, 1000 << 2);
    assert_eq!({ f.dupack_cnt }, 0);
    assert_eq!(f.st, f0.st);
    assert_eq!(fx.notifications(), vec![fx.ev(0, M, 0)]);
    // The next one smooths (gain 1/8) and takes a grown window.
    fx.now += 100_000;
    fx.peer_ack = 2 * M;
    fx.peer_win = 2000;
    send!(fx, fx.peer(0));
    let f = fx.flow();
    assert_eq!({ f.rtt_est }, (300 * 7 + 400) / 8);
    assert_eq!({ f.rx_remote_avail }, 2000 << 2);
    assert_eq!({ f.tx_sent }, M);
    recv_nothing!(fx);
}

#[test]
fn ack_with_ece_counts_the_marked_bytes() {
    let mut fx = fx_sent(
        FlowOpts {
            cfg: cfg::TS | cfg::SACK | cfg::ECN,
            ..Default::default()
        },
        2,
        0,
    );
    fx.peer_ack = M;
    send!(
        fx,
        Seg {
            flags: ACK | tcp::ECE,
            ..fx.peer(0)
        }
    );
    let f = fx.flow();
    assert_eq!({ f.tx_sent }, M);
    assert_eq!({ f.cnt_ecnb }, M);
    assert_ne!(f.st & st::CWR_PENDING, 0);
}

#[test]
fn ack_of_our_fin_reports_it() {
    let mut fx = fx_sent(FlowOpts::default(), 2, cmd::F_TX_FIN);
    // A partial ACK with our FIN out: SND.UNA moves, the FIN is not acked.
    fx.peer_ack = M;
    send!(fx, fx.peer(0));
    assert_eq!({ fx.flow().tx_sent }, M + 1);
    assert_eq!(fx.flow().st & st::TX_FIN_ACKED, 0);
    assert_eq!(fx.notifications(), vec![fx.ev(0, M, 0)]);
    // Everything and the FIN: data bytes counted without it.
    let ackb = { fx.flow().cnt_ackb };
    fx.peer_ack = 2 * M + 1;
    send!(fx, fx.peer(0));
    let f = fx.flow();
    assert_eq!({ f.tx_sent }, 0);
    assert_ne!(f.st & st::TX_FIN_ACKED, 0);
    assert_eq!({ f.cnt_ackb }, ackb + M);
    let evs = fx.notifications();
    assert_eq!(evs.len(), 1);
    assert_ne!(evs[0].flags & event::F_TX_FIN_ACKED, 0);
    exc!(fx, Exception::FinAcked, Some(fx.id));
}

#[test]
fn dup_acks_with_sack_then_a_partial_ack_with_a_new_window_stay_in_recovery() {
    let mut fx = fx_sent(FlowOpts::default(), 8, 0);
    fx.peer_ack = M;
    send!(fx, fx.peer(0));
    let sack = |fx: &Fx, to: u32| Seg {
        sack: vec![(fx.lseq(2 * M), fx.lseq(to * M))],
        ..fx.peer(0)
    };
    // Duplicate ACKs (SND.UNA unchanged) that SACK new data: counted, the
    // third starts SACK recovery (RFC 6675), never the short path.
    for (k, to) in [(1u8, 3), (2, 4), (3, 5)] {
        send!(fx, sack(&fx, to));
        let f = fx.flow();
        assert_eq!(f.snd_una(), fx.lseq(M), "dup ACK {k}");
        assert_eq!({ f.tx_sent }, 7 * M);
    }
    assert_ne!(fx.flow().st & st::TX_RECOVERY, 0);
    assert!(fx.poll() >= 1, "the hole is resent");
    while fx.next_frame().is_some() {}
    // A partial ACK in recovery with another window: SND.UNA moves, the
    // window is taken, recovery goes on (RFC 6675 §5: until RecoveryPoint).
    fx.peer_ack = 5 * M;
    fx.peer_win = 3000;
    send!(fx, fx.peer(0));
    let f = fx.flow();
    assert_eq!({ f.tx_sent }, 3 * M);
    assert_eq!({ f.rx_remote_avail }, 3000 << 2);
    assert_ne!(f.st & st::TX_RECOVERY, 0);
    // The full ACK ends it.
    fx.peer_ack = 8 * M;
    send!(fx, fx.peer(0));
    let f = fx.flow();
    assert_eq!({ f.tx_sent }, 0);
    assert_eq!(f.st & st::TX_RECOVERY, 0);
}
