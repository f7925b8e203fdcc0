//! Receive path: in-order and out-of-order data, SACK, trimming, windows.

use super::*;

#[test]
fn rx_in_order_data_is_delivered_and_acked() {
    let mut fx = fx();
    send!(fx, fx.data(0, 64));
    // Window 32768 - 64 bytes, announced >> 2; TSval from now, TSecr = peer's.
    recv!(fx, fx.ours(0, 64, 32_768 - 64));
    assert_eq!(fx.ours(0, 64, 32_768 - 64).window, 8176);
    assert_eq!(fx.ours(0, 0, 0).ts, Some((1_000_000, PEER_TS0)));
    recv_nothing!(fx);
    exc_nothing!(fx);
    assert_eq!(fx.notifications(), vec![fx.ev(64, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 64));
    assert!(fx.notifications().is_empty(), "one notification only");
    let f = fx.flow();
    assert_eq!({ f.rx_next_seq }, fx.rseq(64));
    assert_eq!({ f.rx_avail }, 32_768 - 64);
    assert_eq!(fx.fp.stats.rx_payload_bytes, 64);
    assert_eq!(fx.fp.stats.acks_sent, 1);
    // Every segment gets its ACK; the second echoes the newer TSval.
    fx.now += 3_000;
    fx.peer_ts += 1;
    send!(fx, fx.data(64, 100));
    recv!(fx, fx.ours(0, 164, 32_768 - 164));
    assert_eq!(fx.notifications(), vec![fx.ev(164, 0, 0)]);
    assert_eq!(fx.read(), pat(64, 100));
}

#[test]
fn rx_peer_without_timestamps() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::SACK,
        ..Default::default()
    });
    let s = fx.data(0, 64);
    assert_eq!(s.ts, None);
    send!(fx, s);
    let want = fx.ours(0, 64, 32_768 - 64);
    assert_eq!(want.ts, None);
    recv!(fx, want);
    assert_eq!(fx.notifications(), vec![fx.ev(64, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 64));
    // Our data carries no option either, and uses the whole MSS.
    fx.write(2000, 0).unwrap();
    assert_eq!(fx.poll(), 2);
    recv!(fx, fx.ours_data(0, 1460, 64, 32_768 - 64));
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(1460, 540, 64, 32_768 - 64)
        }
    );
    recv_nothing!(fx);
}

#[test]
fn rx_segment_without_timestamp_on_ts_flow_is_accepted() {
    // Lenient (RFC 7323 says drop): accepted, and TS.Recent is kept.
    let mut fx = fx();
    send!(
        fx,
        Seg {
            ts: None,
            ..fx.data(0, 10)
        }
    );
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
    assert_eq!({ fx.flow().tx_next_ts }, PEER_TS0);
}

#[test]
fn rx_sequence_numbers_and_ring_wrap() {
    // irs close to 2^32 and the ring position close to its end: the second
    // segment crosses the sequence wrap (at offset 100) and the ring end
    // (at offset 30); an out-of-order segment sits beyond the wrap.
    let mut fx = Fx::new(FlowOpts {
        irs: u32::MAX - 100,
        rx_pos0: 32_768 - 30,
        ..Default::default()
    });
    assert_eq!(fx.rseq(99), u32::MAX);
    send!(fx, fx.data(0, 64));
    recv!(fx, fx.ours(0, 64, 32_768 - 64));
    send!(fx, fx.data(64, 100));
    recv!(fx, fx.ours(0, 164, 32_768 - 164));
    assert_eq!(fx.rseq(164), 64);
    send!(fx, fx.data(300, 50));
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(300), fx.rseq(350))],
            ..fx.ours(0, 164, 32_768 - 164)
        }
    );
    send!(fx, fx.data(164, 136));
    recv!(fx, fx.ours(0, 350, 32_768 - 350));
    assert_eq!(fx.notifications(), vec![fx.ev(350, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 350));
    assert_eq!({ fx.flow().rx_next_pos }, 350 - 30);
}

#[test]
fn rx_peer_timestamp_wraps() {
    let mut fx = fx();
    fx.peer_ts = u32::MAX - 1;
    send!(fx, fx.data(0, 10));
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
    assert_eq!(fx.ours(0, 0, 0).ts.unwrap().1, u32::MAX - 1);
    fx.peer_ts = 5; // wrapped: newer, accepted and echoed
    fx.now += 10_000;
    send!(fx, fx.data(10, 10));
    recv!(fx, fx.ours(0, 20, 32_768 - 20));
    assert_eq!({ fx.flow().tx_next_ts }, 5);
    assert_eq!(fx.notifications(), vec![fx.ev(20, 0, 0)]);
}

#[test]
fn our_timestamp_clock_wraps_rtt_still_sane() {
    let mut fx = fx();
    fx.now = (u32::MAX as u64 - 2) * 1000; // TSval 2^32 - 3
    fx.write(100, 0).unwrap();
    fx.poll();
    let s = fx.next_frame().unwrap();
    assert_eq!(s.ts, Some((u32::MAX - 2, PEER_TS0)));
    fx.now += 50_000; // 50 µs later our clock reads 47
    assert_eq!(fx.tsv(), 47);
    fx.peer_ack = 100;
    send!(fx, fx.peer(0));
    assert_eq!({ fx.flow().rtt_est }, 50);
    // Our next segment carries the wrapped clock.
    send!(fx, fx.data(0, 1));
    recv!(fx, fx.ours(100, 1, 32_768 - 1));
    assert_eq!(fx.ours(100, 1, 0).ts.unwrap().0, 47);
}

#[test]
fn rtt_estimate_is_an_ewma_of_timestamp_samples() {
    let mut fx = fx();
    let rtt = |fx: &mut Fx, n: u32, us: u64| {
        fx.write(n, 0).unwrap();
        fx.poll();
        fx.next_frame().unwrap(); // sets peer_ecr to its TSval
        fx.now += us * 1000;
        fx.peer_ack += n;
        send!(fx, fx.peer(0));
        fx.now += 1_000_000;
        fx.flow().rtt_est
    };
    assert_eq!(rtt(&mut fx, 10, 100), 100, "first sample taken as is");
    assert_eq!(rtt(&mut fx, 10, 200), (100 * 7 + 200) / 8);
    assert_eq!(rtt(&mut fx, 10, 40), (112 * 7 + 40) / 8);
    // A TSecr of 0 (peer echoes nothing) or from the future gives no sample.
    fx.write(10, 0).unwrap();
    fx.poll();
    fx.next_frame();
    fx.peer_ack += 10;
    send!(
        fx,
        Seg {
            ts: Some((fx.peer_ts, 0)),
            ..fx.peer(0)
        }
    );
    assert_eq!({ fx.flow().rtt_est }, 103);
    fx.write(10, 0).unwrap();
    fx.poll();
    fx.next_frame();
    fx.peer_ack += 10;
    send!(
        fx,
        Seg {
            ts: Some((fx.peer_ts, fx.tsv() + 5)),
            ..fx.peer(0)
        }
    );
    assert_eq!({ fx.flow().rtt_est }, 103);
}

#[test]
fn ooo_segment_gets_dupack_with_sack_then_gap_fill_acks_all() {
    let mut fx = fx();
    send!(fx, fx.data(100, 100));
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(100), fx.rseq(200))],
            ..fx.ours(0, 0, 32_768)
        }
    );
    recv_nothing!(fx);
    assert!(fx.notifications().is_empty(), "nothing in order yet");
    assert_eq!(fx.fp.stats.ooo_accepted, 1);
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(0, 200, 32_768 - 200));
    recv_nothing!(fx);
    assert_eq!(fx.notifications(), vec![fx.ev(200, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 200));
    assert_eq!({ fx.flow().rx_ooo_len }, 0);
}

#[test]
fn ooo_segment_without_sack_gets_plain_dupack() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::TS,
        ..Default::default()
    });
    send!(fx, fx.data(100, 100));
    recv!(fx, fx.ours(0, 0, 32_768));
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(0, 200, 32_768 - 200));
    assert_eq!(fx.notifications(), vec![fx.ev(200, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 200));
}

#[test]
fn ooo_interval_extends_at_both_ends_and_merges_overlaps() {
    let mut fx = fx();
    let sack = |fx: &Fx, a: u32, b: u32| Seg {
        sack: vec![(fx.rseq(a), fx.rseq(b))],
        ..fx.ours(0, 0, 32_768)
    };
    send!(fx, fx.data(200, 100));
    recv!(fx, sack(&fx, 200, 300));
    send!(fx, fx.data(300, 100)); // adjacent at the right end
    recv!(fx, sack(&fx, 200, 400));
    send!(fx, fx.data(100, 100)); // adjacent at the left end
    recv!(fx, sack(&fx, 100, 400));
    // Overlaps: the repeated bytes are reported first (D-SACK, RFC 2883 §4).
    let dsack =
        |fx: &Fx, d: (u32, u32), a: u32, b: u32| fx.sack(fx.ours(0, 0, 32_768), &[d, (a, b)]);
    send!(fx, fx.data(350, 100)); // overlapping the right end
    recv!(fx, dsack(&fx, (350, 400), 100, 450));
    send!(fx, fx.data(50, 60)); // overlapping the left end
    recv!(fx, dsack(&fx, (100, 110), 50, 450));
    send!(fx, fx.data(150, 100)); // inside: nothing changes
    recv!(fx, dsack(&fx, (150, 250), 50, 450));
    assert_eq!(fx.fp.stats.ooo_accepted, 6);
    assert!(fx.notifications().is_empty());
    send!(fx, fx.data(0, 50));
    recv!(fx, fx.ours(0, 450, 32_768 - 450));
    assert_eq!(fx.notifications(), vec![fx.ev(450, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 450));
}

#[test]
fn ooo_non_adjacent_segment_starts_another_interval() {
    let mut fx = fx();
    send!(fx, fx.data(200, 100));
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(200), fx.rseq(300))],
            ..fx.ours(0, 0, 32_768)
        }
    );
    send!(fx, fx.data(500, 100));
    recv!(
        fx,
        fx.sack(fx.ours(0, 0, 32_768), &[(500, 600), (200, 300)])
    );
    assert_eq!(fx.fp.stats.ooo_dropped, 0);
    assert_eq!(fx.fp.stats.ooo_accepted, 2);
    send!(fx, fx.data(0, 200));
    recv!(fx, fx.sack(fx.ours(0, 300, 32_768 - 300), &[(500, 600)]));
    send!(fx, fx.data(300, 200));
    recv!(fx, fx.ours(0, 600, 32_768 - 600));
    assert_eq!(fx.notifications(), vec![fx.ev(600, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 600));
}

#[test]
fn ack_after_partial_gap_fill_still_carries_sack() {
    // RFC 2018 §4: while out-of-order data is held, every ACK carries it.
    let mut fx = fx();
    send!(fx, fx.data(200, 100));
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(200), fx.rseq(300))],
            ..fx.ours(0, 0, 32_768)
        }
    );
    send!(fx, fx.data(0, 100));
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(200), fx.rseq(300))],
            ..fx.ours(0, 100, 32_768 - 100)
        }
    );
    // A duplicate while the hole is open also reports the interval, after
    // the D-SACK block for the duplicate (RFC 2883 §4).
    send!(fx, fx.data(0, 100));
    recv!(
        fx,
        fx.sack(fx.ours(0, 100, 32_768 - 100), &[(0, 100), (200, 300)])
    );
    send!(fx, fx.data(100, 100));
    recv!(fx, fx.ours(0, 300, 32_768 - 300));
}

#[test]
fn old_duplicate_segment_is_reacked_and_not_written() {
    let mut fx = fx();
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(0, 100, 32_768 - 100));
    assert_eq!(fx.notifications(), vec![fx.ev(100, 0, 0)]);
    let before = fx.mem.regions[MEM as usize].clone();
    let flow = fx.flow();
    // Same range, different bytes: must not land anywhere. Each is
    // reported once as a duplicate (D-SACK, RFC 2883 §4).
    send!(
        fx,
        Seg {
            payload: vec![b'X'; 100],
            ..fx.data(0, 100)
        }
    );
    recv!(fx, fx.sack(fx.ours(0, 100, 32_768 - 100), &[(0, 100)]));
    send!(
        fx,
        Seg {
            payload: vec![b'X'; 40],
            ..fx.data(20, 40)
        }
    );
    recv!(fx, fx.sack(fx.ours(0, 100, 32_768 - 100), &[(20, 60)]));
    assert_eq!(fx.mem.regions[MEM as usize], before);
    assert_eq!(fx.flow(), flow);
    assert!(fx.notifications().is_empty());
    assert_eq!(fx.fp.stats.dup_segments, 2);
    assert_eq!(fx.read(), pat(0, 100));
}

#[test]
fn partially_old_segment_is_trimmed() {
    let mut fx = fx();
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(0, 100, 32_768 - 100));
    send!(fx, fx.data(50, 100));
    recv!(fx, fx.sack(fx.ours(0, 150, 32_768 - 150), &[(50, 100)]));
    assert_eq!(fx.notifications(), vec![fx.ev(150, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 150));
    assert_eq!(fx.fp.stats.rx_payload_bytes, 150);
}

#[test]
fn data_beyond_the_window_is_trimmed() {
    let mut fx = Fx::new(FlowOpts {
        rx_len: 4096,
        rcv_wscale: 0,
        ..Default::default()
    });
    // In order, 5000 bytes into 4096 of space.
    send!(fx, fx.data(0, 5000));
    recv!(fx, fx.ours(0, 4096, 0));
    assert_eq!(fx.fp.stats.window_trimmed, 1);
    assert_eq!(fx.notifications(), vec![fx.ev(4096, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 4096));

    // Out of order, partly beyond the window: kept up to the window's edge.
    let mut fx = Fx::new(FlowOpts {
        rx_len: 4096,
        rcv_wscale: 0,
        ..Default::default()
    });
    send!(fx, fx.data(4000, 200));
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(4000), fx.rseq(4096))],
            ..fx.ours(0, 0, 4096)
        }
    );
    // Entirely beyond: unacceptable (RFC 9293 §3.10.7.4), dropped.
    send!(fx, fx.data(4096, 10));
    recv!(
        fx,
        Seg {
            sack: vec![(fx.rseq(4000), fx.rseq(4096))],
            ..fx.ours(0, 0, 4096)
        }
    );
    assert_eq!(fx.fp.stats.seq_unacceptable, 1);
    send!(fx, fx.data(0, 4000));
    recv!(fx, fx.ours(0, 4096, 0));
    assert_eq!(fx.notifications(), vec![fx.ev(4096, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 4096));
}

#[test]
fn zero_receive_window_then_window_update_when_app_frees() {
    let mut fx = Fx::new(FlowOpts {
        rx_len: 8192,
        rcv_wscale: 0,
        ..Default::default()
    });
    for (off, n) in [
        (0, 1448),
        (1448, 1448),
        (2896, 1448),
        (4344, 1448),
        (5792, 1448),
    ] {
        send!(fx, fx.data(off, n));
        recv!(fx, fx.ours(0, off + n, 8192 - off - n));
    }
    send!(fx, fx.data(7240, 952));
    recv!(fx, fx.ours(0, 8192, 0));
    // Ring full: more data (and a zero-window probe) is dropped and ACKed.
    let before = fx.mem.regions[MEM as usize].clone();
    send!(fx, fx.data(8192, 100));
    recv!(fx, fx.ours(0, 8192, 0));
    send!(fx, fx.data(8192, 1));
    recv!(fx, fx.ours(0, 8192, 0));
    assert_eq!(fx.mem.regions[MEM as usize], before);
    assert_eq!(fx.notifications(), vec![fx.ev(8192, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 8192));
    // Freeing a little is not worth a window update (receiver SWS avoidance)...
    fx.now += 1000;
    fx.cmd(0, 1000, 0).unwrap();
    recv_nothing!(fx);
    // ...reaching two segments is; so is reaching half the ring.
    fx.cmd(0, 2000, 0).unwrap();
    recv!(fx, fx.ours(0, 8192, 3000));
    fx.cmd(0, 1000, 0).unwrap();
    recv_nothing!(fx);
    fx.cmd(0, 4192, 0).unwrap();
    recv!(fx, fx.ours(0, 8192, 8192));
    recv_nothing!(fx);
    // And the stream goes on, wrapping the ring.
    send!(fx, fx.data(8192, 1000));
    recv!(fx, fx.ours(0, 9192, 7192));
    assert_eq!(fx.notifications(), vec![fx.ev(9192, 0, 0)]);
    assert_eq!(fx.read(), pat(8192, 1000));
}

/// `prefetch` leaves each frame's flow candidate for `rx`, found by the
/// hash alone and matched to the frame by its address: a candidate is only
/// a guess. A buffer that holds another frame by the time `rx` sees it
/// (reused between prefetch and receive, or never prefetched) still reaches
/// the flow of its own 4-tuple, or none.
#[test]
fn rx_prefetch_candidates_are_checked_against_the_frame() {
    let mut fx = fx();
    let real = fx.frame(&fx.data(0, 64));
    // The same segment addressed to the decoy flow (another app's), and to
    // a 4-tuple nobody has; prefetch reads only the addresses.
    let mut to_decoy = real.clone();
    to_decoy[34..36].copy_from_slice(&(PEER_PORT + 1).to_be_bytes());
    let mut to_nobody = real.clone();
    to_nobody[34..36].copy_from_slice(&(PEER_PORT + 2).to_be_bytes());
    let mut buf = vec![0u8; real.len()];

    // Prefetched as the decoy's, received as the flow's own: delivered to
    // the flow, the decoy untouched (Fx's drop checks it).
    buf.copy_from_slice(&to_decoy);
    fx.fp.prefetch(std::iter::once(&buf[..]), &fx.mem);
    buf.copy_from_slice(&real);
    fx.send_raw(&buf);
    recv!(fx, fx.ours(0, 64, 32_768 - 64));
    exc_nothing!(fx);
    assert_eq!(fx.notifications(), vec![fx.ev(64, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 64));

    // Prefetched as the flow's, received as a frame of no flow: NoFlow.
    let next = fx.frame(&fx.data(64, 64));
    buf.copy_from_slice(&next);
    fx.fp.prefetch(std::iter::once(&buf[..]), &fx.mem);
    let mut stray = next.clone();
    stray[34..36].copy_from_slice(&(PEER_PORT + 2).to_be_bytes());
    // (a valid checksum for the changed port)
    let seg_len = stray.len() - 34;
    stray[50..52].fill(0);
    let c = crate::wire::checksum::tcp(PEER_IP, OUR_IP, &stray[34..34 + seg_len]);
    stray[50..52].copy_from_slice(&c.to_be_bytes());
    buf.copy_from_slice(&stray);
    fx.send_raw(&buf);
    exc!(fx, Exception::NoFlow, None);
    recv_nothing!(fx);
    assert_eq!({ fx.flow().rx_next_seq }, fx.rseq(64));

    // Candidates are used in frame order and only for their own frame: a
    // batch prefetched, received in another order, all delivered.
    let a = fx.frame(&fx.data(64, 64));
    let b = fx.frame(&fx.data(128, 64));
    fx.fp
        .prefetch([&to_nobody[..], &b[..], &a[..]].into_iter(), &fx.mem);
    fx.fp.rx(&a, fx.now, &mut fx.mem, &mut fx.out);
    fx.fp.rx(&b, fx.now, &mut fx.mem, &mut fx.out);
    fx.fp.end_round(fx.now, &fx.mem, &mut fx.out);
    exc_nothing!(fx);
    assert_eq!({ fx.flow().rx_next_seq }, fx.rseq(192));
    assert_eq!(fx.notifications(), vec![fx.ev(192, 0, 0)]);
    assert_eq!(fx.read(), pat(64, 128));
    recv!(fx, fx.ours(0, 192, 32_768 - 192));
    recv_nothing!(fx);
}

/// Payload memory that records the ring lines `FastPath::prefetch` hints
/// (region, offset) and holds no data.
struct Hints(std::cell::RefCell<Vec<(u16, u32)>>);

impl PayloadMem for Hints {
    fn write(&mut self, _: u16, _: u32, _: &[u8]) -> bool {
        false
    }
    fn read(&self, _: u16, _: u32, _: &mut [u8]) -> bool {
        false
    }
    fn prefetch(&self, mem: u16, off: u32) {
        self.0.borrow_mut().push((mem, off));
    }
}

/// The prefetch's last stage hints the lines the frame's processing will
/// touch in the flow's rings: for a pure ACK the TX ring line the next
/// segment is cut from; for data the RX ring line its payload goes to and
/// also that TX line (a request's answer follows within the ACK hold and
/// reads it: the `rpc` unit of `fastpath-bench` missed on it at 64K flows).
#[test]
fn prefetch_hints_the_ring_lines_the_frame_will_touch() {
    let mut fx = fx();
    // Some data in and out first, so the positions are not the bases.
    send!(fx, fx.data(0, 100));
    fx.write(300, 0).unwrap();
    fx.flush_acks();
    while fx.next_frame().is_some() {}
    let f = fx.flow();
    let rx_line = (MEM, f.rx_base.wrapping_add(f.rx_next_pos));
    let tx_line = (MEM, f.tx_base.wrapping_add(f.tx_next_pos));
    assert_ne!(rx_line, tx_line);
    let hints = Hints(Default::default());

    let data = fx.frame(&fx.data(100, 64));
    fx.fp.prefetch(std::iter::once(&data[..]), &hints);
    let mut got = hints.0.take();
    got.sort_unstable();
    let mut want = vec![rx_line, tx_line];
    want.sort_unstable();
    assert_eq!(
        got, want,
        "a data segment: its RX line and the answer's TX line"
    );

    let ack = fx.frame(&fx.peer(100));
    fx.fp.prefetch(std::iter::once(&ack[..]), &hints);
    assert_eq!(
        hints.0.take(),
        vec![tx_line],
        "a pure ACK: the TX line only"
    );
}

/// With a table whose index does not stay in the cache, the third stage
/// hints a flow's ring lines once for consecutive frames of that flow (a
/// request, then the ACK of the answer before it): the second time it
/// took the slot's lock again right after the first and hinted the same
/// TX line again, which made `pair` at 64K flows 19 % slower in
/// `fastpath-bench`.
/// A later frame of the flow that brings payload where the earlier did not
/// still hints its RX line.
#[test]
fn prefetch_hints_a_flows_rings_once_for_consecutive_frames() {
    let mut fx = Fx::new(FlowOpts {
        table_capacity: 8192,
        ..Default::default()
    });
    assert!(!fx.fp.table.index_cached(), "the three-pass path");
    let f = fx.flow();
    let rx_line = (MEM, f.rx_base.wrapping_add(f.rx_next_pos));
    let tx_line = (MEM, f.tx_base.wrapping_add(f.tx_next_pos));
    let hints = Hints(Default::default());

    let data = fx.frame(&fx.data(0, 64));
    let ack = fx.frame(&fx.peer(0));
    let batch = [&data[..], &ack[..]];
    fx.fp.prefetch(batch.iter().copied(), &hints);
    let mut got = hints.0.take();
    got.sort_unstable();
    let mut want = vec![rx_line, tx_line];
    want.sort_unstable();
    assert_eq!(got, want, "data then ACK of one flow: each line once");

    let batch = [&ack[..], &data[..]];
    fx.fp.prefetch(batch.iter().copied(), &hints);
    assert_eq!(
        hints.0.take(),
        vec![tx_line, tx_line, rx_line],
        "ACK then data: the data's RX line still hinted"
    );
}

/// `frame_key` (prefetch, software steering) reads the 4-tuple the generic
/// parse reads, from our side, for random addresses and ports, and gives
/// nothing for a frame that is not IPv4/TCP or too short.
#[test]
fn frame_key_is_the_parsed_four_tuple() {
    use crate::wire::testutil::Rng;
    let mut rng = Rng::new(0x4e7);
    let mut buf = [0u8; 256];
    for _ in 0..20_000 {
        let h = frame::FrameHdr {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: rng.next_u32(),
            dst_ip: rng.next_u32(),
            ttl: 64,
            ecn: 0,
            ident: 0,
        };
        let t = tcp::TcpRepr {
            src_port: rng.next_u32() as u16,
            dst_port: rng.next_u32() as u16,
            seq: 1,
            ack: 2,
            flags: tcp::ACK,
            window: 100,
            options: Default::default(),
        };
        let n = frame::tcp_frame(&mut buf, &h, &t, &[7; 10]).unwrap();
        let fr = frame::parse_tcp_frame(&buf[..n]).unwrap();
        let want = FlowKey {
            local_ip: fr.ip.dst(),
            remote_ip: fr.ip.src(),
            local_port: fr.tcp.dst_port(),
            remote_port: fr.tcp.src_port(),
        };
        assert_eq!(frame_key(&buf[..n]), Some(want));
        assert_eq!(frame_key(&buf[..37]), None);
        let mut udp = buf;
        udp[23] = 17;
        assert_eq!(frame_key(&udp[..n]), None);
    }
}
