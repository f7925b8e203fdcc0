//! App commands and notifications.

use super::*;

#[test]
fn invalid_app_commands_are_refused_counted_and_change_nothing() {
    let mut fx = fx();
    // Some state first: 100 bytes received, 100 queued for sending.
    send!(fx, fx.data(0, 100));
    fx.out.frames.clear();
    fx.notifications();
    fx.write(100, 0).unwrap();
    let good = AppCmd {
        kind: cmd::FLOW_UPDATE,
        flow: fx.id,
        ..Default::default()
    };
    let cases = [
        (MEM, AppCmd { kind: 0, ..good }, AppCmdError::BadKind(0)),
        (MEM, AppCmd { kind: 9, ..good }, AppCmdError::BadKind(9)),
        (MEM, AppCmd { flow: 6, ..good }, AppCmdError::NoFlow),
        (
            MEM,
            AppCmd {
                flow: 1 << 30,
                ..good
            },
            AppCmdError::NoFlow,
        ),
        (
            OTHER_MEM,
            AppCmd {
                tx_added: 1,
                ..good
            },
            AppCmdError::NotOwner,
        ),
        (
            MEM,
            AppCmd {
                flow: fx.decoy,
                ..good
            },
            AppCmdError::NotOwner,
        ),
        (
            MEM,
            AppCmd {
                tx_added: 32_768 - 99,
                ..good
            },
            AppCmdError::TxOverflow,
        ),
        (
            MEM,
            AppCmd {
                tx_added: u32::MAX,
                ..good
            },
            AppCmdError::TxOverflow,
        ),
        (
            MEM,
            AppCmd {
                rx_freed: 101,
                ..good
            },
            AppCmdError::RxOverflow,
        ),
        (
            MEM,
            AppCmd {
                rx_freed: u32::MAX,
                ..good
            },
            AppCmdError::RxOverflow,
        ),
        // All or nothing: a valid TX part does not go through either.
        (
            MEM,
            AppCmd {
                tx_added: 10,
                rx_freed: 101,
                ..good
            },
            AppCmdError::RxOverflow,
        ),
    ];
    let before = fx.flow();
    for (i, (mem, c, err)) in cases.iter().enumerate() {
        assert_eq!(
            fx.fp.app_cmd(*mem, c, fx.now, &fx.mem, &mut fx.out),
            Err(*err),
            "case {i}"
        );
        assert_eq!(fx.fp.stats.app_cmd_invalid, i as u64 + 1);
        assert_eq!(fx.flow(), before, "case {i}");
    }
    recv_nothing!(fx);
    assert!(fx.notifications().is_empty());
    // The limits themselves are fine.
    assert_eq!(fx.cmd(32_768 - 100, 100, 0), Ok(()));
    assert_eq!(fx.fp.stats.app_cmd_invalid, cases.len() as u64);
    // After FIN: no more data, but freeing RX is still fine.
    let mut fx2 = self::fx();
    send!(fx2, fx2.data(0, 100));
    fx2.out.frames.clear();
    fx2.cmd(0, 0, cmd::F_TX_FIN).unwrap();
    let before = fx2.flow();
    assert_eq!(fx2.cmd(1, 0, 0), Err(AppCmdError::AfterFin));
    assert_eq!(fx2.cmd(1, 0, cmd::F_TX_FIN), Err(AppCmdError::AfterFin));
    assert_eq!(fx2.flow(), before);
    assert_eq!(fx2.cmd(0, 100, 0), Ok(()));
    // Data and FIN in one command is fine.
    let mut fx3 = self::fx();
    fx3.write(10, cmd::F_TX_FIN).unwrap();
    fx3.poll();
    recv!(
        fx3,
        Seg {
            flags: ACK | PSH | FIN,
            ..fx3.ours_data(0, 10, 0, 32_768)
        }
    );
}

#[test]
fn notification_back_pressure_keeps_the_flow_pending_and_coalesces() {
    let mut fx = fx();
    send!(fx, fx.data(0, 10));
    fx.out.frames.clear();
    assert_eq!(fx.fp.pending_notifications(), 1);
    let mut tries = 0;
    assert_eq!(
        fx.fp.flush_notifications(|_, _| {
            tries += 1;
            false
        }),
        0
    );
    assert_eq!(tries, 1);
    assert_eq!(fx.fp.pending_notifications(), 1);
    assert_eq!(fx.fp.stats.notify_backpressure, 1);
    // More progress while the queue is full: still one pending entry.
    send!(fx, fx.data(10, 10));
    fx.write(100, 0).unwrap();
    fx.poll();
    fx.peer_ack = 100;
    send!(fx, fx.data(20, 10));
    fx.out.frames.clear();
    assert_eq!(fx.fp.pending_notifications(), 1);
    assert_eq!(fx.fp.flush_notifications(|_, _| false), 0);
    assert_eq!(fx.fp.stats.notify_backpressure, 2);
    // Room again: one notification with the latest sequence numbers.
    assert_eq!(fx.notifications(), vec![fx.ev(30, 100, 0)]);
    assert_eq!(fx.fp.pending_notifications(), 0);
    assert!(fx.notifications().is_empty());
    assert_eq!(fx.read(), pat(0, 30));
}

#[test]
fn notifications_for_a_removed_flow_are_dropped() {
    let mut fx = fx();
    send!(fx, fx.data(0, 10));
    fx.out.frames.clear();
    let st = fx.fp.table().remove(fx.id).unwrap();
    assert!(fx.notifications().is_empty());
    assert_eq!(fx.fp.pending_notifications(), 0);
    fx.id = fx.fp.table().insert(st).unwrap();
}

#[test]
fn keepalive_and_zero_window_probes_are_answered() {
    // Linux probes with a zero-length segment at rcv_nxt - 1 (keepalive and
    // persist timer alike) and resets the connection if nobody answers.
    let mut fx = Fx::new(FlowOpts {
        rx_len: 4096,
        rcv_wscale: 0,
        ..Default::default()
    });
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(0, 100, 3996));
    let before = fx.flow();
    fx.now += 75_000_000_000;
    send!(fx, fx.peer(99));
    recv!(fx, fx.ours(0, 100, 3996));
    assert_eq!(fx.flow(), before);
    // BSD-style keepalive: one garbage byte at rcv_nxt - 1, not written;
    // reported as the duplicate it is (RFC 2883, as Linux does).
    send!(
        fx,
        Seg {
            payload: vec![0xee],
            ..fx.peer(99)
        }
    );
    recv!(fx, fx.sack(fx.ours(0, 100, 3996), &[(99, 100)]));
    assert_eq!(fx.notifications(), vec![fx.ev(100, 0, 0)]);
    assert_eq!(fx.read(), pat(0, 100));
    // Zero window: the probe learns whether it opened.
    send!(fx, fx.data(100, 3996));
    recv!(fx, fx.ours(0, 4096, 0));
    send!(fx, fx.peer(4095));
    recv!(fx, fx.ours(0, 4096, 0));
    fx.notifications();
    fx.read();
    fx.free().unwrap();
    recv!(fx, fx.ours(0, 4096, 4096));
    // Say that window update was lost: the next probe gets the news.
    send!(fx, fx.peer(4095));
    recv!(fx, fx.ours(0, 4096, 4096));
    // A pure ACK in sequence needs no answer.
    send!(fx, fx.peer(4096));
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.dupacks, 0, "probes are not duplicate ACKs here");
}

#[test]
fn rings_outside_the_region_are_memory_errors_not_panics() {
    let mut fx = fx();
    let size = fx.mem.regions[MEM as usize].len() as u32;
    // The slow path points the rings past the end of the app's region (a
    // region that shrank, a bad install): counted, nothing written or sent.
    fx.set(|f| {
        f.rx_base = size - 10;
        f.tx_base = size - 10;
    });
    let before = fx.flow();
    send!(fx, fx.data(0, 100));
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.mem_errors, 1);
    assert_eq!(fx.flow(), before);
    assert!(fx.notifications().is_empty());
    fx.write(100, 0).unwrap();
    assert_eq!(fx.poll(), 0);
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.mem_errors, 2);
    assert_eq!(fx.out.empty_fills, 1);
    assert_eq!({ fx.flow().tx_avail }, 100, "nothing counted as sent");
    assert_eq!(fx.fp.poll_at(), None, "and no busy loop on it");
    // Out-of-order data into a bad ring: dropped, still ACKed.
    send!(fx, fx.data(200, 10));
    recv!(fx, fx.ours(0, 0, 32_768));
    assert_eq!(fx.fp.stats.mem_errors, 3);
    assert_eq!({ fx.flow().rx_ooo_len }, 0);
    fx.set(|f| {
        f.rx_base = RX_BASE;
        f.tx_base = RX_BASE + 32_768 + 64;
    });
}

/// Ring growth (tasd's `conn/grow.rs`) switches a flow's rings under its
/// lock with nothing in them: the fast path then writes the next in-order
/// byte at position 0 of the new RX ring (the old one is not touched),
/// its notification carries the new generation, and sends from position 0
/// of the new TX ring.
#[test]
fn switched_rings_are_used_from_position_0_and_events_carry_the_generation() {
    let mut fx = fx();
    send!(fx, fx.data(0, 100));
    fx.out.frames.clear();
    assert_eq!(fx.notifications()[0].gen, 0);
    assert_eq!(fx.read(), pat(0, 100));
    fx.free().unwrap();
    let old = fx.region();
    // The slow path's RX switch: a 4 KiB ring past the end of the region.
    let new_base = old.len() as u32;
    fx.mem.regions[MEM as usize].resize(old.len() + 8192, GUARD);
    fx.set(|f| {
        assert_eq!(f.rx_avail, f.rx_len, "switched only when empty");
        f.rx_base = new_base;
        f.rx_len = 4096;
        f.rx_next_pos = 0;
        f.rx_avail = 4096;
        f.ring_gen = 1;
    });
    send!(fx, fx.data(100, 50));
    let evs = fx.notifications();
    assert_eq!(evs.len(), 1);
    assert_eq!((evs[0].gen, evs[0].rx_seq), (1, fx.rseq(150)));
    let r = &fx.mem.regions[MEM as usize];
    assert_eq!(
        r[new_base as usize..new_base as usize + 50],
        pat(100, 50)[..]
    );
    assert_eq!(r[..old.len()], old[..], "the old ring is not written");
    // The window now offers the new ring.
    assert_eq!(fx.flow().rx_avail, 4096 - 50);

    // TX: nothing in flight, switched to the second half of the new space.
    let tx_new = new_base + 4096;
    fx.set(|f| {
        assert_eq!((f.tx_avail, f.tx_sent), (0, 0));
        f.tx_base = tx_new;
        f.tx_len = 4096;
        f.tx_next_pos = 0;
    });
    let (tx_base0, tx_len0) = (fx.tx_base, fx.o.tx_len);
    fx.tx_base = tx_new;
    fx.o.tx_len = 4096;
    fx.app.tx_head = 0;
    fx.write(30, 0).unwrap();
    fx.poll();
    let mut s = None;
    while let Some(x) = fx.next_frame() {
        if !x.payload.is_empty() {
            s = Some(x);
        }
    }
    assert_eq!(s.expect("a data segment").payload, pat(0, 30));
    // For the fixture's own checks (nothing written outside the original
    // rings, the decoy untouched): the new rings' space is dropped again.
    fx.mem.regions[MEM as usize].truncate(old.len());
    fx.tx_base = tx_base0;
    fx.o.tx_len = tx_len0;
}

/// A notification is built by `rx` under the flow's lock (`Notes`): the
/// segments of one round still give one notification per flow, with the
/// state after the last of them (data, our data acknowledged, the FIN),
/// and the next round builds a new one.
#[test]
fn notifications_built_in_rx_coalesce_per_round_and_carry_fin_flags() {
    let mut fx = fx();
    fx.write(100, 0).unwrap();
    fx.poll();
    fx.out.frames.clear();
    // One round: data, more data with the ACK of our 100 bytes, a FIN.
    fx.peer_ack = 100;
    let fin = Seg {
        flags: ACK | PSH | FIN,
        ..fx.data(20, 10)
    };
    fx.send_round(&[fx.data(0, 10), fx.data(10, 10), fin]);
    fx.out.frames.clear();
    exc!(fx, Exception::FinReceived, Some(fx.id));
    assert_eq!(fx.fp.pending_notifications(), 1);
    assert_eq!(
        fx.notifications(),
        vec![AppEvent {
            rx_seq: fx.rseq(30),
            ..fx.ev(30, 100, event::F_RX_FIN)
        }]
    );
    assert_eq!(fx.fp.pending_notifications(), 0);
    assert!(fx.notifications().is_empty());
    // Next round: our FIN, acknowledged; the entry of the last round is
    // not this one (same flow, new entry, both FIN flags).
    fx.cmd(0, 0, tas_abi::cmd::F_TX_FIN).unwrap();
    fx.poll();
    fx.out.frames.clear();
    fx.peer_ack = 101;
    send!(fx, fx.peer(31));
    exc!(fx, Exception::FinAcked, Some(fx.id));
    assert_eq!(
        fx.notifications(),
        vec![fx.ev(30, 100, event::F_RX_FIN | event::F_TX_FIN_ACKED)]
    );
    assert_eq!(fx.read(), pat(0, 30));
}

/// A notification built in a round whose flow is removed and installed
/// again (same slot) before delivery: the old flow's is dropped; the new
/// flow's, built after it in the same round, goes out with its values.
#[test]
fn a_flow_reinstalled_in_its_slot_within_a_round_gets_only_its_own_notification() {
    let mut fx = fx();
    send!(fx, fx.data(0, 10));
    fx.out.frames.clear();
    let st = fx.fp.table().remove(fx.id).unwrap();
    let id = fx
        .fp
        .table()
        .insert(FlowState {
            opaque: 99,
            note: 0,
            ..st
        })
        .unwrap();
    assert_eq!(id, fx.id, "the slot is reused");
    send!(fx, fx.data(10, 10));
    fx.out.frames.clear();
    assert_eq!(
        fx.notifications(),
        vec![AppEvent {
            opaque: 99,
            ..fx.ev(20, 0, 0)
        }]
    );
    assert_eq!(fx.read(), pat(0, 20));
}

/// More flows make progress in one round than the lane's table of built
/// notifications holds (`NOTES_MAX`): the rest are queued as pending and
/// built from the flow when delivered. Every flow gets exactly one
/// notification, with its latest state, whichever way it went.
#[test]
fn a_round_with_more_notifying_flows_than_built_notes_reads_the_rest_at_delivery() {
    let fx = fx(); // for its frame builder; its own flows stay idle
    let o = FlowOpts::default();
    let n = NOTES_MAX + 44;
    let ring = 1024u32;
    let table = Arc::new(FlowTable::new(n));
    let mut mem = VecMem::new(2, n * 2 * ring as usize);
    let mut ids = Vec::new();
    for i in 0..n {
        let base = i as u32 * 2 * ring;
        let st = FlowState {
            remote_port: 10_000 + i as u16,
            opaque: i as u64,
            rx_base: base,
            rx_len: ring,
            rx_avail: ring,
            rx_next_pos: 0,
            tx_base: base + ring,
            tx_len: ring,
            tx_next_pos: 0,
            ..flow_state(&o, 0)
        };
        ids.push(table.insert(st).unwrap());
    }
    let mut fp = FastPath::new(
        table.clone(),
        Config {
            local_mac: OUR_MAC,
            ttl: 64,
            any_mac: false,
            ack_delay_ns: 0,
        },
    );
    let mut out = Cap::default();
    // Two segments per flow in the round, the second of each after every
    // flow's first (so the table is full when the late flows come again).
    for off in [0, 10] {
        for i in 0..n {
            let f = fx.frame_from(10_000 + i as u16, &fx.data(off, 10));
            fp.rx(&f, T0, &mut mem, &mut out);
        }
    }
    assert!(out.exceptions.is_empty());
    assert_eq!(fp.pending_notifications(), n);
    let mut evs = Vec::new();
    assert_eq!(
        fp.flush_notifications(|ctx, e| {
            assert_eq!(ctx, CTX);
            evs.push(*e);
            true
        }),
        n
    );
    assert_eq!(fp.pending_notifications(), 0);
    evs.sort_by_key(|e| e.opaque);
    let want: Vec<AppEvent> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| AppEvent {
            kind: event::FLOW_UPDATE,
            flow: id,
            opaque: i as u64,
            rx_seq: fx.rseq(20),
            tx_acked_seq: fx.lseq(0),
            ..Default::default()
        })
        .collect();
    assert_eq!(evs, want);
    // The pending ones were cleared: nothing is delivered twice.
    assert_eq!(fp.flush_notifications(|_, _| true), 0);
    for (i, &id) in ids.iter().enumerate() {
        let f = *table.lock(id).unwrap();
        assert_eq!(f.notify & notify::PENDING, 0, "flow {i}");
    }
}
