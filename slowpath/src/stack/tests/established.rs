//! Installed flows: RST validation and the reset lifecycle, challenge
//! ACKs and their rate limit, passive and active close (TIME_WAIT), FIN
//! exceptions the timer catches up on, retransmission timeout with
//! backoff, zero-window probes.

use super::*;

#[test]
fn rst_validation_and_reset_lifecycle() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, irs, _) = fx.accept_one(1000);
    let mut rst = ack_seg(irs + 1 + 10, 0, 0, None);
    rst.flags = tcp::RST;
    fx.rx(Exception::Rst, Some(id), &fx.peer(rst, &[]));
    let ch = fx.one_tcp();
    assert_eq!((ch.t.flags, ch.t.ack), (tcp::ACK, irs + 1), "challenge ACK");
    assert!(ch.t.options.timestamp.is_some());
    rst.seq = irs + 1;
    // A stale flow id (the frame's 4-tuple does not match): ignored.
    fx.rx(Exception::Rst, Some(id + 1), &fx.peer(rst, &[]));
    assert!(fx.msgs().is_empty());
    fx.rx(Exception::Rst, Some(id), &fx.peer(rst, &[]));
    let m = fx.one_msg();
    assert_eq!((m.kind, m.flow, m.err), (ctl::RESET, id, libc::ECONNRESET));
    assert!(fx.frames().is_empty(), "never RST an RST");
    // Gone from the table, but the id stays reserved until CLOSE.
    let key = tas_engine::flow::FlowKey {
        local_ip: A_IP,
        remote_ip: B_IP,
        local_port: PORT,
        remote_port: PEER_PORT,
    };
    assert!(fx.table.lookup(&key).is_none());
    assert_eq!(fx.table.len(), 1);
    assert_eq!(fx.stack.flows()[1].state, "CLOSED");
    let (id2, ..) = {
        let mut s = syn(5000, full_opts(1));
        s.src_port = PEER_PORT + 1;
        fx.nf(&fx.peer(s, &[]));
        let sa = fx.one_tcp();
        let mut a = ack_seg(5001, sa.t.seq + 1, 10, None);
        a.src_port = PEER_PORT + 1;
        fx.nf(&fx.peer(a, &[]));
        let m = fx.one_msg();
        (m.flow, 0, 0)
    };
    assert_ne!(id2, id, "reserved id not reused");
    // ABORT of a reset flow releases it (no RST: it is gone already).
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::ABORT,
            flow: id,
            ..Default::default()
        },
    );
    let m = fx.one_msg();
    assert_eq!((m.kind, m.flow), (ctl::RELEASED, id));
    assert!(fx.frames().is_empty());
    assert_eq!(fx.table.len(), 1);
    assert_eq!(fx.io.used(APP), 2);
}

#[test]
fn syn_on_established_flow_gets_challenge_ack() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, irs, iss) = fx.accept_one(1000);
    fx.rx(
        Exception::Syn,
        Some(id),
        &fx.peer(syn(12345, full_opts(1)), &[]),
    );
    let ch = fx.one_tcp();
    assert_eq!(
        (ch.t.flags, ch.t.seq, ch.t.ack),
        (tcp::ACK, iss + 1, irs + 1)
    );
    assert_eq!(ch.t.window, ((256u32 << 10) >> 3) as u16);
    assert_eq!(fx.table.len(), 1);
    assert!(fx.msgs().is_empty());
}

#[test]
fn challenge_acks_are_rate_limited() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, ..) = fx.accept_one(1000);
    for _ in 0..1500 {
        fx.rx(
            Exception::Syn,
            Some(id),
            &fx.peer(syn(12345, full_opts(1)), &[]),
        );
    }
    assert_eq!(fx.frames().len(), 1000);
    fx.now += 1000 * MS;
    fx.rx(
        Exception::Syn,
        Some(id),
        &fx.peer(syn(12345, full_opts(1)), &[]),
    );
    assert_eq!(fx.frames().len(), 1);
}

#[test]
fn app_closing_before_the_slow_path_sees_the_peers_fin_is_still_a_passive_close() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, ..) = fx.accept_one(1000);
    // The fast path took the peer's FIN first; by the time the slow path
    // handles FinReceived, the app has already asked for its own FIN.
    fx.set(id, |f| {
        f.st |= st::RX_FIN | st::RX_FIN_FIRST | st::TX_FIN_REQ | st::TX_FIN_SENT
    });
    fx.rx(
        Exception::FinReceived,
        Some(id),
        &fx.peer(ack_seg(1001, 0, 0, None), &[]),
    );
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::CLOSE,
            flow: id,
            ..Default::default()
        },
    );
    fx.set(id, |f| f.st |= st::TX_FIN_ACKED);
    fx.rx(
        Exception::FinAcked,
        Some(id),
        &fx.peer(ack_seg(1001, 0, 0, None), &[]),
    );
    // No TIME_WAIT: released (and the rings freed) at once.
    let m = fx.one_msg();
    assert_eq!((m.kind, m.flow), (ctl::RELEASED, id));
    assert!(fx.table.is_empty());
    assert_eq!(fx.io.used(APP), 0);
    assert_eq!(fx.stack.stats().time_wait_entered, 0);
}

#[test]
fn passive_close_releases_at_once_active_close_waits() {
    let mut fx = Fx::new();
    fx.listen(16);
    // Passive: peer FIN first, then our FIN is acknowledged.
    let (id, ..) = fx.accept_one(1000);
    fx.set(id, |f| f.st |= st::RX_FIN);
    fx.rx(
        Exception::FinReceived,
        Some(id),
        &fx.peer(ack_seg(1001, 0, 0, None), &[]),
    );
    assert_eq!(fx.stack.flows()[1].state, "CLOSE_WAIT");
    fx.set(id, |f| f.st |= st::TX_FIN_REQ | st::TX_FIN_SENT);
    assert_eq!(fx.stack.flows()[1].state, "LAST_ACK");
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::CLOSE,
            flow: id,
            ..Default::default()
        },
    );
    assert!(fx.msgs().is_empty());
    fx.set(id, |f| f.st |= st::TX_FIN_ACKED);
    fx.rx(
        Exception::FinAcked,
        Some(id),
        &fx.peer(ack_seg(1001, 0, 0, None), &[]),
    );
    let m = fx.one_msg();
    assert_eq!((m.kind, m.flow), (ctl::RELEASED, id));
    assert!(fx.table.is_empty());
    assert_eq!(fx.io.used(APP), 0);
    // Active: our FIN acknowledged first, then theirs: TIME_WAIT.
    let (id, ..) = {
        let mut s = syn(7000, full_opts(1));
        s.src_port = PEER_PORT + 1;
        fx.nf(&fx.peer(s, &[]));
        let sa = fx.one_tcp();
        let mut a = ack_seg(7001, sa.t.seq + 1, 10, None);
        a.src_port = PEER_PORT + 1;
        fx.nf(&fx.peer(a, &[]));
        (fx.one_msg().flow, 0, 0)
    };
    let key_frame = {
        let mut a = ack_seg(7001, 0, 0, None);
        a.src_port = PEER_PORT + 1;
        fx.peer(a, &[])
    };
    fx.set(id, |f| f.st |= st::TX_FIN_REQ | st::TX_FIN_SENT);
    assert_eq!(fx.stack.flows()[1].state, "FIN_WAIT1");
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::CLOSE,
            flow: id,
            ..Default::default()
        },
    );
    fx.set(id, |f| f.st |= st::TX_FIN_ACKED);
    fx.rx(Exception::FinAcked, Some(id), &key_frame);
    assert_eq!(fx.stack.flows()[1].state, "FIN_WAIT2");
    fx.set(id, |f| f.st |= st::RX_FIN);
    let last = fx.state(id);
    fx.rx(Exception::FinReceived, Some(id), &key_frame);
    // TIME_WAIT keeps the 4-tuple only: the flow leaves the table and the
    // app (which has closed) gets its rings back at once.
    assert_eq!(fx.one_msg().kind, ctl::RELEASED);
    assert!(fx.table.is_empty());
    assert_eq!(fx.io.used(APP), 0);
    let flows = fx.stack.flows();
    assert_eq!((flows[1].state, flows[1].flow), ("TIME_WAIT", None));
    assert!(fx.frames().is_empty(), "no RST on a normal close");
    time_wait_answers(&mut fx, &last);
}

/// What a 4-tuple in TIME_WAIT answers (RFC 9293 §3.10.7.4 TIME-WAIT,
/// RFC 6191), for the flow whose last state was `last`.
fn time_wait_answers(fx: &mut Fx, last: &FlowState) {
    let seg = |seq: u32, flags: u8| {
        let mut t = ack_seg(seq, last.tx_next_seq, 100, None);
        t.src_port = PEER_PORT + 1;
        t.flags = flags;
        t
    };
    let fin_seq = last.rx_next_seq.wrapping_sub(1);
    // A retransmitted FIN is acknowledged with our final numbers...
    let t0 = fx.now;
    fx.nf(&fx.peer(seg(fin_seq, tcp::FIN | tcp::ACK), &[]));
    let a = fx.one_tcp();
    assert_eq!(
        (a.t.seq, a.t.ack, a.t.flags),
        (last.tx_next_seq, last.rx_next_seq, tcp::ACK)
    );
    // ...once per 100 ms at most.
    fx.nf(&fx.peer(seg(fin_seq, tcp::FIN | tcp::ACK), &[]));
    assert!(fx.frames().is_empty());
    assert_eq!(fx.stack.stats().time_wait_acks_limited, 1);
    // A bare ACK is dropped.
    fx.at(t0 + 200 * MS);
    fx.nf(&fx.peer(seg(last.rx_next_seq, tcp::ACK), &[]));
    assert!(fx.frames().is_empty());
    // An old SYN gets our ACK, not a new connection.
    let mut old = syn(fin_seq.wrapping_sub(5000), full_opts(1));
    old.src_port = PEER_PORT + 1;
    fx.nf(&fx.peer(old, &[]));
    let a = fx.one_tcp();
    assert_eq!((a.t.seq, a.t.flags), (last.tx_next_seq, tcp::ACK));
    // The FIN restarted the wait: still there just before 2 s after it...
    fx.at(t0 + 2000 * MS - 1);
    assert_eq!(fx.stack.stats().time_wait_now, 1);
    // ...and a newer SYN is a new incarnation: SYN-ACK (RFC 6191).
    let mut new = syn(last.rx_next_seq.wrapping_add(100_000), full_opts(1));
    new.src_port = PEER_PORT + 1;
    fx.nf(&fx.peer(new, &[]));
    let sa = fx.one_tcp();
    assert_eq!(sa.t.flags, tcp::SYN | tcp::ACK);
    assert_eq!(fx.stack.stats().time_wait_now, 0);
    assert_eq!(fx.stack.stats().time_wait_reused, 1);
}

/// TIME_WAIT ends by itself after `time_wait_ns`, or at once on an RST.
#[test]
fn time_wait_expires_or_is_killed_by_rst() {
    let mut fx = Fx::new();
    fx.listen(16);
    for (i, rst) in [(0u16, false), (1, true)] {
        let (id, ..) = {
            let mut s = syn(7000, full_opts(1));
            s.src_port = PEER_PORT + 10 + i;
            fx.nf(&fx.peer(s, &[]));
            let sa = fx.one_tcp();
            let mut a = ack_seg(7001, sa.t.seq + 1, 10, None);
            a.src_port = PEER_PORT + 10 + i;
            fx.nf(&fx.peer(a, &[]));
            (fx.one_msg().flow, 0, 0)
        };
        let mut k = ack_seg(7001, 0, 0, None);
        k.src_port = PEER_PORT + 10 + i;
        let key_frame = fx.peer(k, &[]);
        fx.ctl(
            APP,
            CtlMsg {
                kind: ctl::CLOSE,
                flow: id,
                ..Default::default()
            },
        );
        fx.set(id, |f| {
            f.st |= st::TX_FIN_REQ | st::TX_FIN_SENT | st::TX_FIN_ACKED
        });
        fx.rx(Exception::FinAcked, Some(id), &key_frame);
        fx.set(id, |f| f.st |= st::RX_FIN);
        let last = fx.state(id);
        fx.rx(Exception::FinReceived, Some(id), &key_frame);
        assert_eq!(fx.one_msg().kind, ctl::RELEASED);
        assert_eq!(fx.stack.stats().time_wait_now, 1);
        let t0 = fx.now;
        if rst {
            let mut r = ack_seg(last.rx_next_seq, 0, 0, None);
            r.src_port = PEER_PORT + 10 + i;
            r.flags = tcp::RST;
            fx.nf(&fx.peer(r, &[]));
            assert_eq!(fx.stack.stats().time_wait_killed, 1);
        } else {
            fx.at(t0 + 2000 * MS - 1);
            assert_eq!(fx.stack.stats().time_wait_now, 1);
            fx.at(t0 + 2000 * MS);
            assert_eq!(fx.stack.stats().time_wait_expired, 1);
        }
        assert_eq!(fx.stack.stats().time_wait_now, 0);
        assert!(fx.frames().is_empty());
    }
}

#[test]
fn missed_fin_exceptions_are_caught_by_the_timer() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, ..) = fx.accept_one(1000);
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::CLOSE,
            flow: id,
            ..Default::default()
        },
    );
    fx.set(id, |f| {
        f.st |= st::RX_FIN | st::TX_FIN_REQ | st::TX_FIN_SENT | st::TX_FIN_ACKED
    });
    let t = fx.now;
    fx.at(t + 200 * MS);
    // Both FINs were seen at once; our FIN was out: TIME_WAIT, then release.
    fx.at(t + 200 * MS + 2000 * MS + 200 * MS);
    assert_eq!(fx.one_msg().kind, ctl::RELEASED);
}

#[test]
fn rto_retransmits_with_backoff_and_resets_after_retries() {
    let mut c = host_cfg(A_IP, A_MAC);
    c.data_retries = 3;
    let mut fx = Fx::with(c);
    fx.listen(16);
    let (id, ..) = fx.accept_one(1000);
    // Data in flight, never acknowledged.
    fx.set(id, |f| {
        f.tx_sent = 1000;
        f.tx_next_seq = f.tx_next_seq.wrapping_add(1000);
        f.rtt_est = 0;
    });
    let mut rtx = Vec::new();
    let t0 = fx.now;
    let mut t = t0;
    while t < t0 + 5000 * MS && fx.msgs().is_empty() {
        t += MS;
        fx.at(t);
        for c in fx.cmds() {
            assert_eq!(c, FpCmd::Retransmit(id));
            rtx.push(t - t0);
        }
    }
    assert_eq!(rtx.len(), 3, "{rtx:?}");
    // Each wait doubles (200 ms minimum as Linux, 400, 800; checked every
    // 100 ms).
    let gaps: Vec<u64> = rtx.windows(2).map(|w| (w[1] - w[0]) / MS).collect();
    assert!(
        gaps[0] >= 400 && gaps[0] <= 500 && gaps[1] >= 800 && gaps[1] <= 900,
        "{rtx:?}"
    );
    // The fourth timeout resets: RST to the peer, RESET(ETIMEDOUT) to the app.
    let f = fx.frames();
    assert_eq!(f.len(), 1);
    assert_eq!(parse_out(&f[0]).t.flags, tcp::RST | tcp::ACK);
    assert_eq!(fx.stack.stats().data_timeouts, 1);
}

#[test]
fn rto_progress_resets_the_backoff() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, ..) = fx.accept_one(1000);
    fx.set(id, |f| {
        f.tx_sent = 1000;
        f.rtt_est = 0;
    });
    let t0 = fx.now;
    let mut times = Vec::new();
    for ms in 1..=4000u64 {
        fx.at(t0 + ms * MS);
        if !fx.cmds().is_empty() {
            times.push(ms);
            // Some progress after each retransmission.
            fx.set(id, |f| f.tx_next_seq = f.tx_next_seq.wrapping_add(10));
        }
    }
    // Never backs off: retransmissions stay ~200-300 ms apart.
    assert!(times.len() >= 10, "{times:?}");
    assert!(times.windows(2).all(|w| w[1] - w[0] <= 400), "{times:?}");
}

#[test]
fn zero_window_probe() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, irs, iss) = fx.accept_one(1000);
    fx.set(id, |f| {
        f.tx_avail = 500;
        f.rx_remote_avail = 0;
        f.rtt_est = 0;
    });
    let t0 = fx.now;
    let mut probes = Vec::new();
    for ms in 1..=2000u64 {
        fx.at(t0 + ms * MS);
        for fr in fx.frames() {
            let o = parse_out(&fr);
            assert_eq!((o.t.flags, o.t.seq, o.t.ack), (tcp::ACK, iss, irs + 1));
            assert_eq!(o.payload.len(), 1);
            probes.push(ms);
        }
    }
    assert!(probes.len() >= 2, "{probes:?}");
    assert!(probes[1] - probes[0] >= 400, "backs off: {probes:?}");
    // The window opens: no more probes.
    fx.set(id, |f| f.rx_remote_avail = 10_000);
    for ms in 2001..=4000u64 {
        fx.at(t0 + ms * MS);
    }
    assert!(fx.frames().is_empty());
    assert!(fx.cmds().is_empty());
}
