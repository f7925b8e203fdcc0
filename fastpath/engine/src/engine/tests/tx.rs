//! Send path and ACK processing: segmentation, windows, ECN, fast retransmit
//! without SACK information, rate limits. SACK recovery, timeouts and probes
//! are in `sack.rs` and `probe.rs`, the RFC 5961 ACK checks in `ack_checks.rs`.

use super::*;

#[test]
fn tx_cuts_mss_segments_with_psh_on_last_and_ect0() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::TS | cfg::SACK | cfg::ECN,
        ..Default::default()
    });
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.poll(), 3);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    recv!(fx, fx.ours_data(1448, 1448, 0, 32_768));
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(2896, 104, 0, 32_768)
        }
    );
    recv_nothing!(fx);
    assert_eq!(fx.ours_data(0, 1, 0, 0).ecn, ipv4::ECN_ECT0);
    assert_eq!(fx.poll(), 0);
    let f = fx.flow();
    assert_eq!(
        ({ f.tx_sent }, { f.tx_avail }, { f.tx_next_seq }),
        (3000, 0, fx.lseq(3000))
    );
    assert_eq!(fx.fp.stats.tx_payload_bytes, 3000);
    // Pure ACKs are never ECT.
    send!(fx, fx.data(0, 10));
    recv!(fx, fx.ours(3000, 10, 32_768 - 10));
}

#[test]
fn tx_sequence_numbers_and_ring_wrap() {
    let mut fx = Fx::new(FlowOpts {
        iss: u32::MAX - 1000,
        tx_pos0: 32_768 - 100,
        ..Default::default()
    });
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.poll(), 3);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    recv!(fx, fx.ours_data(1448, 1448, 0, 32_768));
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(2896, 104, 0, 32_768)
        }
    );
    assert_eq!(fx.lseq(1448), 448);
    fx.peer_ack = 1448;
    send!(fx, fx.peer(0));
    assert_eq!(fx.notifications(), vec![fx.ev(0, 1448, 0)]);
    fx.peer_ack = 3000;
    send!(fx, fx.peer(0));
    assert_eq!(fx.notifications(), vec![fx.ev(0, 3000, 0)]);
    recv_nothing!(fx);
    // Keep going around the ring.
    fx.write(32_768, 0).unwrap();
    assert_eq!(fx.poll(), 23);
    let mut off = 3000;
    while let Some(s) = fx.next_frame() {
        assert_eq!(s.seq, fx.lseq(off));
        assert_eq!(s.payload, pat(off, s.payload.len() as u32));
        off += s.payload.len() as u32;
    }
    assert_eq!(off, 3000 + 32_768);
}

#[test]
fn tx_respects_peer_window() {
    let mut fx = Fx::new(FlowOpts {
        peer_win: 500, // << 2 = 2000 bytes
        ..Default::default()
    });
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.poll(), 2);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    recv!(fx, fx.ours_data(1448, 552, 0, 32_768));
    recv_nothing!(fx);
    // The window slides with the ACK: 2000 bytes from 1448.
    fx.peer_win = 500;
    fx.peer_ack = 1448;
    send!(fx, fx.peer(0));
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(2000, 1000, 0, 32_768)
        }
    );
    recv_nothing!(fx);
}

/// A flow steered to lane 1 is only ever scheduled there: an app command
/// or an ACK handled by lane 0 forwards the activation, and lane 1's engine
/// (same flow table) sends the data, in order.
#[test]
fn activations_for_another_lane_are_forwarded() {
    let mut fx = Fx::new(FlowOpts::default());
    fx.set(|f| f.group = 1);
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.out.forwarded, vec![(1, fx.id)]);
    assert_eq!(fx.poll(), 0, "lane 0 must not send a lane-1 flow");
    recv_nothing!(fx);
    let mut lane1 = FastPath::new(
        fx.fp.table().clone(),
        Config {
            local_mac: OUR_MAC,
            ttl: 64,
            any_mac: false,
            ack_delay_ns: 0,
        },
    )
    .with_lane(1);
    lane1.kick(fx.id, fx.now, &mut fx.out);
    assert_eq!(lane1.poll_tx(fx.now, 64, &fx.mem, &mut fx.out), 3);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    recv!(fx, fx.ours_data(1448, 1448, 0, 32_768));
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(2896, 104, 0, 32_768)
        }
    );
    // Peer data arriving on lane 0 (a NIC that re-hashed) is still taken and
    // acknowledged there, under the flow lock; the freed window's
    // activation goes to lane 1 again.
    fx.out.forwarded.clear();
    fx.write(500, 0).unwrap();
    assert_eq!(fx.out.forwarded, vec![(1, fx.id)]);
    fx.peer_ack = 3000;
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(3000, 100, 32_768 - 100));
    assert_eq!(fx.poll(), 0);
    // The poll loop delivers forwarded activations as kicks on their lane.
    for (lane, id) in std::mem::take(&mut fx.out.forwarded) {
        assert_eq!(lane, 1);
        lane1.kick(id, fx.now, &mut fx.out);
    }
    assert_eq!(lane1.poll_tx(fx.now, 64, &fx.mem, &mut fx.out), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(3000, 500, 100, 32_768 - 100)
        }
    );
}

#[test]
fn tx_respects_congestion_window() {
    let mut fx = Fx::new(FlowOpts {
        tx_cwnd: 2000,
        ..Default::default()
    });
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.poll(), 2);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    recv!(fx, fx.ours_data(1448, 552, 0, 32_768));
    assert_eq!(fx.poll(), 0);
    fx.peer_ack = 1448;
    send!(fx, fx.peer(0));
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(2000, 1000, 0, 32_768)
        }
    );
    // The slow path opens the window: kick() sends what became allowed.
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.poll(), 1);
    recv!(fx, fx.ours_data(3000, 448, 0, 32_768));
    fx.set(|f| f.tx_cwnd = 0);
    fx.fp.kick(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 2);
    recv!(fx, fx.ours_data(3448, 1448, 0, 32_768));
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(4896, 1104, 0, 32_768)
        }
    );
}

#[test]
fn tx_respects_negotiated_small_mss() {
    for (cfg, seg) in [(cfg::TS, 524u32), (0, 536)] {
        let mut fx = Fx::new(FlowOpts {
            cfg,
            mss: 536,
            ..Default::default()
        });
        fx.write(1200, 0).unwrap();
        assert_eq!(fx.poll(), 3);
        recv!(fx, fx.ours_data(0, seg, 0, 32_768));
        recv!(fx, fx.ours_data(seg, seg, 0, 32_768));
        recv!(
            fx,
            Seg {
                flags: ACK | PSH,
                ..fx.ours_data(2 * seg, 1200 - 2 * seg, 0, 32_768)
            }
        );
    }
}

#[test]
fn ack_frees_tx_space_and_notifies() {
    let mut fx = Fx::new(FlowOpts {
        tx_len: 4096,
        ..Default::default()
    });
    fx.write(4096, 0).unwrap();
    assert_eq!(fx.write(1, 0), Err(AppCmdError::TxOverflow));
    assert_eq!(fx.poll(), 3);
    fx.out.frames.clear();
    assert_eq!(
        fx.write(1, 0),
        Err(AppCmdError::TxOverflow),
        "sent is not freed"
    );
    fx.peer_ack = 1448;
    send!(fx, fx.peer(0));
    recv_nothing!(fx);
    assert_eq!(fx.notifications(), vec![fx.ev(0, 1448, 0)]);
    assert_eq!({ fx.flow().cnt_ackb }, 1448);
    assert_eq!({ fx.flow().cnt_ecnb }, 0);
    fx.write(1448, 0).unwrap();
    assert_eq!(fx.write(1, 0), Err(AppCmdError::TxOverflow));
    fx.out.frames.clear();
    fx.peer_ack = 4096;
    send!(fx, fx.peer(0));
    assert_eq!({ fx.flow().cnt_ackb }, 4096);
    assert_eq!(fx.notifications(), vec![fx.ev(0, 4096, 0)]);
    // An old ACK changes nothing.
    let f = fx.flow();
    fx.peer_ack = 1448;
    send!(fx, fx.peer(0));
    assert_eq!(fx.flow(), f);
    assert!(fx.notifications().is_empty());
}

#[test]
fn ece_on_ack_counts_ecn_marked_bytes() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::TS | cfg::ECN,
        ..Default::default()
    });
    fx.write(2000, 0).unwrap();
    fx.poll();
    fx.peer_ack = 1448;
    send!(
        fx,
        Seg {
            flags: ACK | tcp::ECE,
            ..fx.peer(0)
        }
    );
    fx.peer_ack = 2000;
    send!(fx, fx.peer(0));
    let f = fx.flow();
    assert_eq!(({ f.cnt_ackb }, { f.cnt_ecnb }), (2000, 1448));
}

#[test]
fn ece_is_answered_with_cwr_on_the_next_data_segment() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::TS | cfg::ECN,
        ..Default::default()
    });
    fx.write(100, 0).unwrap();
    fx.poll();
    fx.out.frames.clear();
    fx.peer_ack = 100;
    send!(
        fx,
        Seg {
            flags: ACK | tcp::ECE,
            ..fx.peer(0)
        }
    );
    fx.write(200, 0).unwrap();
    fx.poll();
    let seg = fx.next_frame().expect("a data segment");
    assert_eq!(seg.flags, ACK | PSH | tcp::CWR);
    recv_nothing!(fx);
    // Only once per ECE.
    fx.peer_ack = 300;
    send!(fx, fx.peer(0));
    fx.write(10, 0).unwrap();
    fx.poll();
    assert_eq!(fx.next_frame().expect("a data segment").flags, ACK | PSH);
}

#[test]
fn ce_marked_data_is_echoed_with_ece_only_with_ecn() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::TS | cfg::ECN,
        ..Default::default()
    });
    send!(
        fx,
        Seg {
            ecn: ipv4::ECN_CE,
            ..fx.data(0, 10)
        }
    );
    recv!(
        fx,
        Seg {
            flags: ACK | tcp::ECE,
            ..fx.ours(0, 10, 32_768 - 10)
        }
    );
    send!(
        fx,
        Seg {
            ecn: ipv4::ECN_ECT0,
            ..fx.data(10, 10)
        }
    );
    recv!(fx, fx.ours(0, 20, 32_768 - 20));
    let mut fx = fx_plain();
    send!(
        fx,
        Seg {
            ecn: ipv4::ECN_CE,
            ..fx.data(0, 10)
        }
    );
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
}

fn fx_plain() -> Fx {
    Fx::new(FlowOpts {
        cfg: cfg::TS,
        ..Default::default()
    })
}

/// Sends 3000 bytes (1448, 1448, 104) and consumes the segments.
pub(super) fn fx_with_3000_in_flight() -> Fx {
    let mut fx = fx();
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.poll(), 3);
    fx.out.frames.clear();
    fx
}

pub(super) fn dupack(fx: &mut Fx) {
    send!(fx, fx.peer(0));
}

#[test]
fn three_duplicate_acks_trigger_one_fast_retransmit() {
    let mut fx = fx_with_3000_in_flight();
    fx.now += 100_000;
    dupack(&mut fx);
    dupack(&mut fx);
    recv_nothing!(fx);
    assert_eq!(fx.poll(), 0);
    dupack(&mut fx);
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.dupacks, 3);
    // No SACK information: NewReno (RFC 6582) resends the first
    // unacknowledged segment only.
    assert_eq!(fx.poll(), 1);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    // Congestion control learns of the episode when it ends (a spurious
    // one, proven by D-SACK, it never learns of).
    assert_eq!({ fx.flow().cnt_frexmits }, 0);
    assert_eq!(fx.fp.stats.fast_retransmits, 1);
    // The 4th and 5th duplicates do not retransmit again.
    dupack(&mut fx);
    dupack(&mut fx);
    assert_eq!(fx.poll(), 0);
    assert_eq!({ fx.flow().cnt_frexmits }, 0);
    // The full ACK ends recovery: the retransmission was not reported as
    // a duplicate, the loss goes to congestion control.
    fx.peer_ack = 3000;
    send!(fx, fx.peer(0));
    assert_eq!(fx.flow().st & st::TX_RECOVERY, 0);
    assert_eq!({ fx.flow().cnt_frexmits }, 1);
    assert_eq!(fx.poll(), 0);
    // A window change is not a duplicate.
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.poll(), 3);
    fx.out.frames.clear();
    dupack(&mut fx);
    dupack(&mut fx);
    fx.peer_win -= 1;
    dupack(&mut fx);
    assert_eq!(fx.poll(), 0);
    assert_eq!({ fx.flow().cnt_frexmits }, 1);
    // Data-carrying segments are not duplicate ACKs either.
    send!(fx, fx.data(0, 1));
    send!(fx, fx.data(1, 1));
    send!(fx, fx.data(2, 1));
    fx.out.frames.clear();
    assert_eq!(fx.poll(), 0);
    assert_eq!(fx.fp.stats.fast_retransmits, 1);
}

#[test]
fn duplicates_during_recovery_do_not_retransmit_again() {
    let mut fx = fx_with_3000_in_flight();
    for _ in 0..3 {
        dupack(&mut fx);
    }
    assert_eq!(fx.poll(), 1);
    fx.out.frames.clear();
    // Segments still in flight from the first round draw more duplicates.
    for _ in 0..9 {
        dupack(&mut fx);
    }
    assert_eq!(fx.poll(), 0);
    assert_eq!({ fx.flow().cnt_frexmits }, 0, "reported when recovery ends");
    // A partial ACK resends the next segment (RFC 6582 §3.2 step 5) and
    // stays in recovery: duplicates still start nothing new.
    fx.peer_ack = 1448;
    send!(fx, fx.peer(0));
    assert_eq!(fx.poll(), 1);
    recv!(fx, fx.ours_data(1448, 1448, 0, 32_768));
    for _ in 0..3 {
        dupack(&mut fx);
    }
    assert_eq!(fx.poll(), 0);
    assert_eq!({ fx.flow().cnt_frexmits }, 0);
    // The full ACK ends recovery (and reports it); a new loss is recovered
    // again.
    fx.peer_ack = 3000;
    send!(fx, fx.peer(0));
    assert_eq!({ fx.flow().cnt_frexmits }, 1);
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.poll(), 3);
    fx.out.frames.clear();
    for _ in 0..3 {
        dupack(&mut fx);
    }
    assert_eq!({ fx.flow().cnt_frexmits }, 1);
    assert_eq!(fx.poll(), 1);
    recv!(fx, fx.ours_data(3000, 1448, 0, 32_768));
    fx.peer_ack = 6000;
    send!(fx, fx.peer(0));
    assert_eq!({ fx.flow().cnt_frexmits }, 2);
}

#[test]
fn ack_beyond_sent_after_go_back_n_is_accepted() {
    let mut fx = fx_with_3000_in_flight();
    for _ in 0..3 {
        dupack(&mut fx);
    }
    // Retransmit only the first segment, then the peer (which had the rest)
    // acknowledges everything.
    assert_eq!(fx.fp.poll_tx(fx.now, 1, &fx.mem, &mut fx.out), 1);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    fx.peer_ack = 3000;
    send!(fx, fx.peer(0));
    assert_eq!(fx.fp.stats.future_acks, 0);
    let f = fx.flow();
    assert_eq!(
        ({ f.tx_sent }, { f.tx_avail }, { f.tx_next_seq }),
        (0, 0, fx.lseq(3000))
    );
    assert_eq!({ f.tx_next_pos }, 3000);
    assert_eq!({ f.cnt_ackb }, 3000);
    assert_eq!(fx.notifications(), vec![fx.ev(0, 3000, 0)]);
    assert_eq!(fx.poll(), 0);
    recv_nothing!(fx);
    // And the stream continues where it should.
    fx.write(10, 0).unwrap();
    fx.poll();
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(3000, 10, 0, 32_768)
        }
    );
}

#[test]
fn ack_for_never_sent_data_is_answered_and_dropped() {
    let mut fx = fx_with_3000_in_flight();
    let f = fx.flow();
    fx.peer_ack = 3001;
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(3000, 0, 32_768));
    assert_eq!(fx.fp.stats.future_acks, 1);
    assert_eq!(fx.flow(), f, "segment dropped entirely");
    assert!(fx.notifications().is_empty());
    assert!(fx.mem.regions[MEM as usize][RX_BASE as usize..][..100]
        .iter()
        .all(|&b| b == GUARD));
}

#[test]
fn slow_path_retransmit_goes_back_to_snd_una() {
    let mut fx = fx_with_3000_in_flight();
    fx.peer_ack = 1448;
    send!(fx, fx.peer(0));
    fx.now += 5_000_000;
    fx.fp.retransmit(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 2);
    recv!(fx, fx.ours_data(1448, 1448, 0, 32_768));
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(2896, 104, 0, 32_768)
        }
    );
    assert_eq!({ fx.flow().cnt_frexmits }, 0, "not a fast retransmit");
    // Nothing in flight: a no-op.
    fx.peer_ack = 3000;
    send!(fx, fx.peer(0));
    fx.fp.retransmit(fx.id, fx.now, &mut fx.out);
    assert_eq!(fx.poll(), 0);
    // Unknown flow: ignored.
    fx.fp.retransmit(7, fx.now, &mut fx.out);
    fx.fp.retransmit(1000, fx.now, &mut fx.out);
}

#[test]
fn rate_limit_spaces_segments_and_poll_at_says_when() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::TS | cfg::RATE,
        tx_rate: 10_000, // 10 Mbit/s: 1448 bytes every 1.1584 ms
        ..Default::default()
    });
    assert_eq!(fx.fp.poll_at(), None);
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.fp.poll_at(), Some(0));
    assert_eq!(fx.poll(), 1);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    // A fresh flow starts with the scheduler's catch-up credit.
    let next = T0 - crate::sched::PACING_CREDIT_NS + 1_158_400;
    assert_eq!(fx.fp.poll_at(), Some(next));
    fx.now = next - 1;
    assert_eq!(fx.poll(), 0);
    fx.now = next;
    assert_eq!(fx.poll(), 1);
    recv!(fx, fx.ours_data(1448, 1448, 0, 32_768));
    assert_eq!(fx.fp.poll_at(), Some(next + 1_158_400));
    fx.now = next + 1_158_400;
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(2896, 104, 0, 32_768)
        }
    );
    assert_eq!(fx.fp.poll_at(), None);
    // Without cfg::RATE the same tx_rate is ignored.
    let mut fx = Fx::new(FlowOpts {
        tx_rate: 10_000,
        ..Default::default()
    });
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.poll(), 3);
    fx.out.frames.clear();
}

#[test]
fn peer_zero_window_stops_sending_until_update() {
    let mut fx = fx();
    fx.peer_win = 0;
    send!(fx, fx.peer(0));
    fx.write(100, 0).unwrap();
    assert_eq!(fx.poll(), 0);
    recv_nothing!(fx);
    assert_eq!(fx.fp.poll_at(), None);
    fx.peer_win = 10;
    send!(fx, fx.peer(0));
    assert_eq!(fx.poll(), 1);
    recv!(fx, fx.ours_data(0, 40, 0, 32_768));
    fx.peer_win = 1000;
    send!(fx, fx.peer(0));
    assert_eq!(fx.poll(), 1);
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(40, 60, 0, 32_768)
        }
    );
}

#[test]
fn full_nic_batch_loses_nothing() {
    let mut fx = fx();
    fx.write(3000, 0).unwrap();
    fx.out.room = Some(1);
    assert_eq!(fx.poll(), 1);
    assert_eq!(fx.fp.stats.tx_full, 1);
    recv!(fx, fx.ours_data(0, 1448, 0, 32_768));
    fx.out.room = Some(0);
    assert_eq!(fx.poll(), 0);
    assert_eq!(fx.fp.poll_at(), Some(0), "still waiting to send");
    fx.out.room = None;
    assert_eq!(fx.poll(), 2);
    recv!(fx, fx.ours_data(1448, 1448, 0, 32_768));
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(2896, 104, 0, 32_768)
        }
    );
    assert_eq!(fx.fp.stats.tx_payload_bytes, 3000);
    // An ACK that finds no room is counted, and the data is still taken.
    fx.out.room = Some(0);
    send!(fx, fx.data(0, 10));
    assert_eq!(fx.fp.stats.tx_full, 3);
    assert_eq!(fx.notifications(), vec![fx.ev(10, 0, 0)]);
}

#[test]
fn window_update_carries_sack_while_ooo_data_is_held() {
    let mut fx = Fx::new(FlowOpts {
        rx_len: 8192,
        rcv_wscale: 0,
        ..Default::default()
    });
    for off in (0..7000).step_by(1000) {
        send!(fx, fx.data(off, 1000));
        recv!(fx, fx.ours(0, off + 1000, 8192 - off - 1000));
    }
    send!(fx, fx.data(7100, 100));
    let sack = vec![(fx.rseq(7100), fx.rseq(7200))];
    recv!(
        fx,
        Seg {
            sack: sack.clone(),
            ..fx.ours(0, 7000, 1192)
        }
    );
    assert_eq!(fx.notifications(), vec![fx.ev(7000, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 7000));
    fx.free().unwrap();
    recv!(
        fx,
        Seg {
            sack,
            ..fx.ours(0, 7000, 8192)
        }
    );
}

/// With TX checksum offload every frame we build (data, pure ACK, ACK with
/// SACK blocks) carries the pseudo header's sum in the TCP checksum field,
/// and is exactly the frame built without offload once the "NIC" completes
/// it.
#[test]
fn tx_csum_offload_leaves_the_pseudo_header_sum() {
    let opts = FlowOpts::default();
    let mut plain = Fx::new(opts);
    let mut off = Fx::new(FlowOpts {
        csum_offload: true,
        ..opts
    });
    let mut frames = 0;
    for fx in [&mut plain, &mut off] {
        fx.write(3000, 0).unwrap();
        assert_eq!(fx.poll(), 3);
        // In-order data: a pure ACK; out of order: an ACK with SACK blocks.
        send!(fx, fx.data(0, 100));
        send!(fx, fx.data(300, 100));
    }
    while let Some(a) = plain.out.frames.pop_front() {
        let mut b = off.out.frames.pop_front().expect("as many frames");
        let p = crate::wire::frame::parse_tcp_frame(&b).unwrap();
        let (src, dst, seg_len) = (p.ip.src(), p.ip.dst(), p.ip.payload().len());
        let field = u16::from_be_bytes([b[50], b[51]]);
        let ph = crate::wire::checksum::pseudo_header(src, dst, 6, seg_len as u16);
        assert_eq!(field as u32 % 0xffff, ph % 0xffff, "frame {frames}");
        assert!(!tcp::verify_checksum(src, dst, p.ip.payload()) || field == 0);
        // The NIC's part: sum the segment from the field's value.
        let c = crate::wire::checksum::fold(crate::wire::checksum::sum(&b[34..], 0));
        b[50..52].copy_from_slice(&c.to_be_bytes());
        assert_eq!(a, b, "frame {frames}");
        frames += 1;
    }
    assert!(off.out.frames.is_empty());
    assert_eq!(frames, 5);
    plain.out.frames.clear();
}
