//! App commands that cut their flow's segment at once
//! (`FastPath::with_direct_tx`, tasd's lanes): the same segments as the
//! send loop would cut, only sooner; flows that must wait their turn (queued,
//! paced, in recovery) still go through the scheduler.

use super::*;

const DELAY: u64 = 40_000;

fn direct(o: FlowOpts) -> Fx {
    Fx::new(FlowOpts {
        direct_tx: true,
        ..o
    })
}

/// [`direct`] with ACKs held for data to ride on ([`DELAY`]).
fn direct_held() -> Fx {
    direct(FlowOpts {
        ack_delay_ns: DELAY,
        ..Default::default()
    })
}

/// Every frame emitted so far, parsed.
fn drain(fx: &mut Fx) -> Vec<Seg> {
    std::iter::from_fn(|| fx.next_frame()).collect()
}

#[test]
fn a_command_cuts_the_response_at_once_and_it_carries_the_held_ack() {
    let mut fx = direct_held();
    send!(fx, fx.data(0, 10));
    recv_nothing!(fx);
    fx.write(20, 0).unwrap();
    // Out before any send loop ran, with the ACK of the 10 bytes.
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(0, 20, 10, 32_768 - 10)
        }
    );
    assert_eq!(fx.fp.stats.tx_direct, 1);
    // Its held entry, the newest, is taken back: no wake-up at the
    // deadline for nothing.
    assert_eq!(fx.fp.stats.acks_carried, 1);
    assert_eq!(fx.fp.poll_at(), None);
    assert_eq!(fx.poll(), 0, "nothing left for the send loop");
    fx.now += DELAY;
    assert_eq!(fx.flush_acks(), 0, "the response carried the ACK");
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.acks_delayed, 0);
}

/// The held entry is taken back only when it is the newest: behind
/// another flow's it stays and is skipped when due (the flow found owing
/// an ACK for a later hold only); an ACK held again after it still goes
/// out at its own deadline.
#[test]
fn a_carried_entry_behind_another_stays_and_is_skipped_when_due() {
    let mut fx = direct_held();
    send!(fx, fx.data(0, 10));
    // Another flow of our app, held entry after ours. (It shares our rings,
    // at the same stream offsets: the bytes it writes are ours.)
    let st = *fx.fp.table().lock(fx.id).unwrap();
    let _other = fx
        .fp
        .table()
        .insert(FlowState {
            remote_port: PEER_PORT + 2,
            rx_next_seq: fx.rseq(0),
            rx_next_pos: fx.o.rx_pos0,
            rx_avail: fx.o.rx_len,
            notify: 0,
            ..st
        })
        .unwrap();
    let f = fx.frame_from(PEER_PORT + 2, &fx.data(0, 10));
    fx.send_raw(&f);
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.acks_held, 2);
    fx.write(20, 0).unwrap();
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(0, 20, 10, 32_768 - 10)
        }
    );
    assert_eq!(fx.fp.stats.acks_carried, 0, "not the newest entry");
    assert_eq!(fx.fp.poll_at(), Some(T0 + DELAY));
    // Ours held again, behind the other's.
    send!(fx, fx.data(10, 10));
    recv_nothing!(fx);
    fx.now += DELAY;
    // The first entry finds our flow owing an ACK, but for the second
    // hold (our data went out since it was queued): skipped. The other
    // flow's ACK goes, then ours by our second entry.
    assert_eq!(fx.flush_acks(), 2);
    let b = fx.out.frames.pop_front().expect("the other flow's ACK");
    let fr = frame::parse_tcp_frame(&b).unwrap();
    assert_eq!(fr.tcp.dst_port(), PEER_PORT + 2);
    assert_eq!(fr.tcp.ack(), fx.rseq(10));
    let a = fx.next_frame().expect("our ACK");
    assert_eq!((a.ack, a.payload.len()), (fx.rseq(20), 0));
    recv_nothing!(fx);
    assert_eq!(fx.fp.poll_at(), None);
    assert_eq!(
        (
            fx.fp.stats.acks_delayed,
            fx.fp.stats.acks_carried,
            fx.fp.stats.acks_superseded
        ),
        (2, 0, 1)
    );
}

/// The same commands and segments with and without direct sends give the
/// same frames on the wire, byte for byte after parsing: more than one
/// MSS (one segment at once, the rest from the send loop), a FIN riding
/// on the last segment, a command while the flow is queued (not sent at
/// once: it keeps its turn).
#[test]
fn direct_sends_are_the_segments_the_send_loop_would_cut() {
    let run = |on: bool| {
        let mut fx = Fx::new(FlowOpts {
            direct_tx: on,
            ..Default::default()
        });
        let mut segs = Vec::new();
        fx.write(3000, 0).unwrap();
        // Queued for the rest: this one waits its turn.
        fx.write(100, 0).unwrap();
        segs.extend(drain(&mut fx));
        let n = fx.poll();
        segs.extend(drain(&mut fx));
        fx.peer_ack = 3100;
        send!(fx, fx.peer(0));
        fx.write(10, cmd::F_TX_FIN).unwrap();
        let m = fx.poll();
        segs.extend(drain(&mut fx));
        (segs, n, m, fx.fp.stats.tx_direct, fx.flow().tx_sent)
    };
    let (on, n_on, m_on, direct_on, sent_on) = run(true);
    let (off, n_off, m_off, direct_off, sent_off) = run(false);
    assert_eq!(on, off);
    assert_eq!(on.len(), 4, "{on:?}");
    assert_eq!(on[3].flags, ACK | PSH | FIN);
    assert_eq!((n_off, m_off, direct_off), (3, 1, 0));
    // The first segment and the FIN segment went at once.
    assert_eq!((n_on, m_on, direct_on), (2, 0, 2));
    assert_eq!((sent_on, sent_off), (11, 11));
}

#[test]
fn paced_flows_and_flows_in_recovery_wait_for_the_send_loop() {
    let mut fx = direct(FlowOpts {
        cfg: cfg::TS | cfg::RATE,
        tx_rate: 10_000,
        ..Default::default()
    });
    fx.write(100, 0).unwrap();
    recv_nothing!(fx);
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(0, 100, 0, 32_768)
        }
    );
    assert_eq!(fx.fp.stats.tx_direct, 0);

    let mut fx = direct(FlowOpts::default());
    fx.write(100, 0).unwrap();
    assert_eq!(drain(&mut fx).len(), 1);
    // Timeout: the segment is resent by the send loop, and new data
    // waits behind it (RFC 6675 §5.1), not cut by the command.
    fx.fp.retransmit(fx.id, fx.now, &mut fx.out);
    fx.write(50, 0).unwrap();
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.tx_direct, 1);
    assert!(fx.poll() >= 1);
    let segs = drain(&mut fx);
    assert_eq!(segs[0].seq, fx.lseq(0), "the retransmission first");
    assert_eq!(segs[0].payload, pat(0, 100));
}

#[test]
fn a_closed_window_queues_nothing_and_sends_nothing() {
    let mut fx = direct(FlowOpts {
        peer_win: 0,
        ..Default::default()
    });
    fx.write(100, 0).unwrap();
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.tx_direct, 0);
    assert_eq!(fx.poll(), 0);
}

/// Only a flow of the engine's own lane is sent at once, whichever order
/// the builder set the lane and direct sends in; another lane's flow is
/// forwarded to its lane, as without direct sends.
#[test]
fn only_flows_of_the_engines_lane_are_sent_at_once() {
    let cfg = Config {
        local_mac: OUR_MAC,
        ttl: 64,
        any_mac: false,
        ack_delay_ns: 0,
    };
    for lane_first in [false, true] {
        let mut fx = direct(FlowOpts::default());
        let table = fx.fp.table().clone();
        fx.fp = if lane_first {
            FastPath::new(table, cfg).with_lane(1).with_direct_tx(true)
        } else {
            FastPath::new(table, cfg).with_direct_tx(true).with_lane(1)
        };
        // Group 0 on lane 1: forwarded, nothing cut here.
        fx.write(10, 0).unwrap();
        assert_eq!(
            fx.out.forwarded,
            vec![(0, fx.id)],
            "lane first: {lane_first}"
        );
        assert_eq!(fx.fp.stats.tx_direct, 0);
        recv_nothing!(fx);
        // Group 1 on lane 1: cut at once (the 10 bytes queued first
        // ride along, lane 0 never sent them).
        fx.set(|f| f.group = 1);
        fx.write(20, 0).unwrap();
        assert_eq!(fx.fp.stats.tx_direct, 1, "lane first: {lane_first}");
        recv!(
            fx,
            Seg {
                flags: ACK | PSH,
                ..fx.ours_data(0, 30, 0, 32_768)
            }
        );
    }
    // Direct sends off again: lane 1's own flow waits for the send loop.
    let mut fx = direct(FlowOpts::default());
    let table = fx.fp.table().clone();
    fx.fp = FastPath::new(table, cfg)
        .with_direct_tx(true)
        .with_lane(1)
        .with_direct_tx(false);
    fx.set(|f| f.group = 1);
    fx.write(20, 0).unwrap();
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.tx_direct, 0);
    assert_eq!(fx.poll(), 1);
}
