//! SYN cookies (RFC 4987 §3.6, as Linux does them with
//! `net.ipv4.tcp_syncookies=1`): when the half-open table is full a SYN is
//! answered with a SYN-ACK whose ISN is a cookie (MSS index and a keyed
//! hash) and, with timestamps, whose TSval's low 6 bits carry the peer's
//! window scale, SACK-permitted and ECN; the final ACK rebuilds the
//! connection from them. Cookies only when the connection could be made:
//! not with the flow table above its watermark or the app's memory full, and
//! a cookie's final ACK that finds no room is dropped, never reset; one that
//! finds the accept queue full is kept in SYN_RCVD (bounded) so that the
//! SYN-ACK timer completes it later.

use super::*;

/// Half-open connections that fill the table in these tests.
const HALF_OPEN_MAX: u32 = 2;

/// A stack listening on [`PORT`] whose half-open table is full (two
/// SYN_RCVD connections from ports 50000 and 50001).
fn full_fx(ecn: bool) -> Fx {
    let mut c = host_cfg(A_IP, A_MAC);
    c.max_half_open = HALF_OPEN_MAX;
    c.ecn = ecn;
    let mut fx = Fx::with(c);
    fx.listen(16);
    for i in 0..HALF_OPEN_MAX {
        let mut s = syn(7000 + i, full_opts(1));
        s.src_port = 50000 + i as u16;
        fx.nf(&fx.peer(s, &[]));
        assert_eq!(fx.one_tcp().t.flags, tcp::SYN | tcp::ACK);
    }
    assert_eq!(fx.stack.flows().len(), 1 + HALF_OPEN_MAX as usize);
    fx
}

/// `syn` from peer port `port`.
fn syn_from(port: u16, seq: u32, options: tcp::TcpOptions) -> tcp::TcpRepr {
    let mut s = syn(seq, options);
    s.src_port = port;
    s
}

/// The final ACK of a handshake from peer port `port`.
fn ack_from(port: u16, seq: u32, ack: u32, ts: Option<(u32, u32)>) -> tcp::TcpRepr {
    let mut a = ack_seg(seq, ack, 1000, ts);
    a.src_port = port;
    a
}

/// Sends a SYN from `port` and returns the SYN-ACK (which must come).
fn cookie_synack(fx: &mut Fx, port: u16, irs: u32, o: tcp::TcpOptions) -> Out {
    fx.nf(&fx.peer(syn_from(port, irs, o), &[]));
    let sa = fx.one_tcp();
    assert_eq!(sa.t.flags & (tcp::SYN | tcp::ACK), tcp::SYN | tcp::ACK);
    assert_eq!(sa.t.ack, irs.wrapping_add(1));
    sa
}

/// Fills the flow table with inert flows (no slow-path record) until it
/// holds `n` flows.
fn fill_table(fx: &Fx, n: usize) -> Vec<FlowId> {
    let mut ids = Vec::new();
    let mut i = 0u32;
    while fx.table.len() < n {
        let f = FlowState {
            local_ip: A_IP,
            remote_ip: 0xC613_0000 + i,
            local_port: 9,
            remote_port: 1000 + i as u16,
            ..Default::default()
        };
        ids.push(fx.table.insert(f).expect("room in the table"));
        i += 1;
    }
    ids
}

#[test]
fn full_half_open_table_answers_with_a_cookie_that_carries_the_options() {
    let mut fx = full_fx(true);
    let irs = 0xFFFF_FFF0; // wraps right away
    let mut s = syn(irs, full_opts(500));
    s.flags |= tcp::ECE | tcp::CWR;
    fx.nf(&fx.peer(s, &[]));
    let sa = fx.one_tcp();
    assert_eq!(
        sa.t.flags,
        tcp::SYN | tcp::ACK | tcp::ECE,
        "a cookie SYN-ACK, not a dropped SYN"
    );
    assert_eq!(sa.t.ack, irs.wrapping_add(1));
    assert_eq!(sa.t.window, 65535, "SYN-ACK window is unscaled");
    let o = sa.t.options;
    assert_eq!(o.mss, Some(1460));
    assert_eq!(o.wscale, Some(3));
    assert!(o.sack_permitted);
    let (tsval, tsecr) = o.timestamp.expect("timestamps");
    assert_eq!(tsecr, 500);
    // TSval's low 6 bits: peer's window scale 7, SACK (0x10), ECN (0x20).
    assert_eq!(tsval & 0x3f, 7 | 0x10 | 0x20);
    let clock = ts_now(fx.now);
    assert!(
        tsval <= clock && clock - tsval < 64,
        "TSval {tsval} never ahead of the clock {clock}, at most 63 behind"
    );
    assert_eq!(
        fx.stack.flows().len(),
        1 + HALF_OPEN_MAX as usize,
        "a cookie keeps no state"
    );
    let cookie = sa.t.seq;
    fx.now += 300_000;
    fx.nf(&fx.peer(
        ack_seg(
            irs.wrapping_add(1),
            cookie.wrapping_add(1),
            1000,
            Some((777, tsval)),
        ),
        &[],
    ));
    let m = fx.one_msg();
    assert_eq!((m.kind, m.err), (ctl::ACCEPTED, 0));
    let f = fx.state(m.flow);
    assert_eq!(
        (f.local_ip, f.remote_ip, f.local_port, f.remote_port),
        (A_IP, B_IP, PORT, PEER_PORT)
    );
    assert_eq!(f.remote_mac, B_MAC);
    assert_eq!(f.cfg, cfg::TS | cfg::SACK | cfg::ECN | cfg::RATE);
    assert_eq!(f.mss, 1300, "1400 rounds down to the MSS table's 1300");
    assert_eq!((f.snd_wscale, f.rcv_wscale), (7, 3));
    assert_eq!({ f.rx_remote_avail }, 1000 << 7);
    assert_eq!({ f.rx_next_seq }, irs.wrapping_add(1));
    assert_eq!({ f.tx_next_seq }, cookie.wrapping_add(1));
    assert_eq!({ f.tx_next_ts }, 777);
    assert_eq!({ f.rtt_est }, 0, "no handshake RTT without state");
    assert_eq!((m.info.mss, m.info.tx_seq), (1288, cookie.wrapping_add(1)));
    assert!(fx.frames().is_empty());
    assert!(fx.cmds().is_empty());
    assert_eq!(fx.stack.flows().len(), 2 + HALF_OPEN_MAX as usize);
    let st = fx.stack.stats();
    assert_eq!(
        (st.syncookies_sent, st.syncookies_recv, st.syncookies_failed),
        (1, 1, 0)
    );
    assert_eq!((st.syn_dropped_overflow, st.accepted), (0, 1));
}

#[test]
fn cookie_without_timestamps_carries_only_the_mss() {
    let mut fx = full_fx(true);
    let o = tcp::TcpOptions {
        mss: Some(1400),
        wscale: Some(7),
        sack_permitted: true,
        ..Default::default()
    };
    let mut s = syn(100, o);
    s.flags |= tcp::ECE | tcp::CWR;
    fx.nf(&fx.peer(s, &[]));
    let sa = fx.one_tcp();
    // Nowhere to keep window scale, SACK or ECN: offer none of them.
    assert_eq!(sa.t.flags, tcp::SYN | tcp::ACK);
    assert_eq!(
        sa.t.options,
        tcp::TcpOptions {
            mss: Some(1460),
            ..Default::default()
        }
    );
    fx.nf(&fx.peer(ack_seg(101, sa.t.seq + 1, 30000, None), &[]));
    let m = fx.one_msg();
    assert_eq!(m.kind, ctl::ACCEPTED);
    let f = fx.state(m.flow);
    assert_eq!(f.cfg, cfg::RATE);
    assert_eq!(f.mss, 1300);
    assert_eq!((f.snd_wscale, f.rcv_wscale), (0, 0));
    assert_eq!({ f.rx_remote_avail }, 30000);
}

#[test]
fn cookie_mss_is_the_largest_table_value_not_above_the_peers() {
    let mut fx = full_fx(false);
    // (announced MSS, MSS of the connection): the table is 536, 1300, 1440,
    // 1460 (Linux's); below 536 the IPv4 minimum every host takes is used.
    let cases: [(Option<u16>, u16); 8] = [
        (None, 536),
        (Some(100), 536),
        (Some(1299), 536),
        (Some(1300), 1300),
        (Some(1439), 1300),
        (Some(1440), 1440),
        (Some(1460), 1460),
        (Some(9000), 1460),
    ];
    for (i, (mss, want)) in cases.into_iter().enumerate() {
        let port = 20000 + i as u16;
        let o = tcp::TcpOptions {
            mss,
            ..Default::default()
        };
        let sa = cookie_synack(&mut fx, port, 1000, o);
        fx.nf(&fx.peer(ack_from(port, 1001, sa.t.seq + 1, None), &[]));
        let m = fx.one_msg();
        assert_eq!(m.kind, ctl::ACCEPTED, "MSS {mss:?}");
        assert_eq!(fx.state(m.flow).mss, want, "MSS {mss:?}");
    }
}

#[test]
fn cookie_is_checked_against_tuple_sequence_and_time() {
    let mut fx = full_fx(false);
    let sa = cookie_synack(&mut fx, PEER_PORT, 5000, full_opts(9));
    let cookie = sa.t.seq;
    let ts = sa.t.options.timestamp.map(|(v, _)| (10, v));
    // Wrong cookie (a forged ACK): RST with seq = its ack, no connection.
    // (The low 2 bits only name the MSS; the other 30 are the hash.)
    for bad in [4u32, 8, 0x100, 0x8000_0000] {
        let a = ack_from(PEER_PORT, 5001, (cookie ^ bad).wrapping_add(1), ts);
        fx.nf(&fx.peer(a, &[]));
        let r = fx.one_tcp();
        assert_eq!((r.t.flags, r.t.seq), (tcp::RST, (cookie ^ bad) + 1));
    }
    // Not the client's sequence number (the cookie covers it).
    fx.nf(&fx.peer(ack_from(PEER_PORT, 5002, cookie + 1, ts), &[]));
    assert_eq!(fx.one_tcp().t.flags, tcp::RST);
    // The same cookie from another 4-tuple.
    fx.nf(&fx.peer(ack_from(PEER_PORT + 1, 5001, cookie + 1, ts), &[]));
    assert_eq!(fx.one_tcp().t.flags, tcp::RST);
    assert!(fx.msgs().is_empty());
    // The right one, in the next 64 s period: still good.
    let period = 64_000 * MS;
    fx.now = (fx.now / period + 1) * period + 63_000 * MS;
    fx.nf(&fx.peer(ack_from(PEER_PORT, 5001, cookie + 1, ts), &[]));
    let m = fx.one_msg();
    assert_eq!(m.kind, ctl::ACCEPTED);
    assert!(fx.frames().is_empty());
    // The same ACK again finds the flow installed: back to the fast path.
    let again = fx.peer(ack_from(PEER_PORT, 5001, cookie + 1, ts), &[]);
    fx.nf(&again);
    assert_eq!(fx.cmds(), vec![FpCmd::Rx(again)]);
    assert!(fx.msgs().is_empty());

    // Two periods later a cookie has expired, even while cookies are being
    // sent (another SYN keeps the listener in cookie mode).
    let sa = cookie_synack(&mut fx, PEER_PORT + 2, 9000, full_opts(9));
    let old = sa.t.seq;
    let ts = sa.t.options.timestamp.map(|(v, _)| (10, v));
    fx.now = (fx.now / period + 2) * period;
    cookie_synack(&mut fx, PEER_PORT + 3, 1, full_opts(9));
    fx.nf(&fx.peer(ack_from(PEER_PORT + 2, 9001, old + 1, ts), &[]));
    assert_eq!(fx.one_tcp().t.flags, tcp::RST, "expired cookie");
    assert!(fx.msgs().is_empty());
    let st = fx.stack.stats();
    assert_eq!((st.syncookies_sent, st.syncookies_recv), (3, 1));
    assert_eq!(st.syncookies_failed, 4 + 1 + 1 + 1);
}

#[test]
fn final_acks_are_checked_against_cookies_only_while_they_are_sent() {
    let mut fx = Fx::new();
    fx.listen(16);
    // No cookie sent yet: a stray ACK to the listener is reset without a
    // cookie check (nothing to count).
    fx.nf(&fx.peer(ack_seg(1, 2, 100, None), &[]));
    assert_eq!(fx.one_tcp().t.flags, tcp::RST);
    assert_eq!(fx.stack.stats().syncookies_failed, 0);
    // Cookies sent: checked (and failed).
    let mut c = host_cfg(A_IP, A_MAC);
    c.max_half_open = 0;
    let mut fx = Fx::with(c);
    fx.listen(16);
    let sa = cookie_synack(&mut fx, PEER_PORT, 1, tcp::TcpOptions::default());
    fx.nf(&fx.peer(ack_from(PEER_PORT + 1, 2, sa.t.seq + 1, None), &[]));
    assert_eq!(fx.one_tcp().t.flags, tcp::RST);
    assert_eq!(fx.stack.stats().syncookies_failed, 1);
    // 128 s after the last cookie the listener is out of cookie mode: even
    // a cookie that would still be valid is not looked at.
    fx.now += 2 * 64_000 * MS;
    fx.nf(&fx.peer(ack_from(PEER_PORT, 2, sa.t.seq + 1, None), &[]));
    assert_eq!(fx.one_tcp().t.flags, tcp::RST);
    assert_eq!(fx.stack.stats().syncookies_failed, 1);
}

#[test]
fn cookies_off_drop_syns_when_the_half_open_table_is_full() {
    let mut c = host_cfg(A_IP, A_MAC);
    c.max_half_open = 0;
    c.syncookies = false;
    let mut fx = Fx::with(c);
    fx.listen(16);
    fx.nf(&fx.peer(syn(100, full_opts(1)), &[]));
    assert!(fx.frames().is_empty());
    let st = fx.stack.stats();
    assert_eq!((st.syn_dropped_overflow, st.syncookies_sent), (1, 0));
}

#[test]
fn cookie_final_ack_with_data_is_handed_back_to_the_fast_path() {
    let mut fx = full_fx(false);
    let sa = cookie_synack(&mut fx, PEER_PORT, 100, full_opts(1));
    let tsv = sa.t.options.timestamp.unwrap().0;
    let mut a = ack_seg(101, sa.t.seq + 1, 1000, Some((2, tsv)));
    a.flags |= tcp::PSH;
    let with_data = fx.peer(a, b"hello");
    fx.nf(&with_data);
    assert_eq!(fx.one_msg().kind, ctl::ACCEPTED);
    assert_eq!(fx.cmds(), vec![FpCmd::Rx(with_data)]);
    assert!(fx.frames().is_empty());
}

#[test]
fn no_cookie_when_the_connection_could_not_be_made() {
    let mut fx = full_fx(false);
    // Room: a cookie.
    cookie_synack(&mut fx, PEER_PORT, 100, full_opts(1));
    // The app's memory cannot hold the rings: the SYN is dropped.
    fx.io.oom = true;
    fx.nf(&fx.peer(syn_from(PEER_PORT + 1, 100, full_opts(1)), &[]));
    assert!(fx.frames().is_empty(), "no cookie without app memory");
    fx.io.oom = false;
    // The flow table above its fill watermark (15/16 of 64): dropped.
    fill_table(&fx, 60);
    fx.nf(&fx.peer(syn_from(PEER_PORT + 2, 100, full_opts(1)), &[]));
    assert!(fx.frames().is_empty(), "no cookie above the watermark");
    assert!(fx.msgs().is_empty());
    let st = fx.stack.stats();
    assert_eq!((st.syncookies_sent, st.syncookies_refused), (1, 2));
    assert_eq!(st.syn_dropped_overflow, 2);
    // One below the watermark: cookies again.
    fx.table.remove(fx.table.ids()[0]);
    cookie_synack(&mut fx, PEER_PORT + 3, 100, full_opts(1));
}

#[test]
fn cookie_final_ack_without_room_is_dropped_not_reset() {
    let mut fx = full_fx(false);
    let sa = cookie_synack(&mut fx, PEER_PORT, 100, full_opts(1));
    let tsv = sa.t.options.timestamp.unwrap().0;
    let ack = fx.peer(ack_seg(101, sa.t.seq + 1, 1000, Some((2, tsv))), &[]);
    // App memory full when the ACK comes: dropped silently (the peer
    // retransmits; Linux drops it the same way when the accept queue is
    // full), never accepted and then reset.
    fx.io.oom = true;
    fx.nf(&ack);
    assert!(fx.frames().is_empty(), "no RST");
    assert!(fx.msgs().is_empty());
    fx.io.oom = false;
    // Flow table full: dropped too.
    let ids = fill_table(&fx, 64);
    fx.nf(&ack);
    assert!(fx.frames().is_empty(), "no RST");
    assert!(fx.msgs().is_empty());
    assert_eq!(fx.io.used(APP), 0, "rings given back");
    // Room again: the retransmitted ACK makes the connection.
    fx.table.remove(ids[0]);
    fx.nf(&ack);
    assert_eq!(fx.one_msg().kind, ctl::ACCEPTED);
    assert!(fx.frames().is_empty());
    let st = fx.stack.stats();
    assert_eq!((st.syncookies_recv, st.syncookies_dropped), (3, 2));
    assert_eq!((st.alloc_failures, st.table_full), (1, 1));
}

/// With no room to keep it in SYN_RCVD either (no half-open table here; see
/// the next test), a cookie's final ACK that finds the accept queue full is
/// dropped, never reset.
#[test]
fn cookie_final_ack_with_the_accept_queue_full_is_dropped() {
    let mut c = host_cfg(A_IP, A_MAC);
    c.max_half_open = 0;
    let mut fx = Fx::with(c);
    fx.listen(1);
    let sa1 = cookie_synack(&mut fx, PEER_PORT, 100, full_opts(1));
    let sa2 = cookie_synack(&mut fx, PEER_PORT + 1, 200, full_opts(1));
    let ack = |port, seq, sa: &Out| {
        let tsv = sa.t.options.timestamp.unwrap().0;
        ack_from(port, seq, sa.t.seq + 1, Some((2, tsv)))
    };
    fx.nf(&fx.peer(ack(PEER_PORT + 1, 201, &sa2), &[]));
    assert_eq!(fx.one_msg().kind, ctl::ACCEPTED);
    // The app has not taken it: the queue (backlog 1) is full.
    fx.nf(&fx.peer(ack(PEER_PORT, 101, &sa1), &[]));
    assert!(fx.frames().is_empty(), "no RST");
    assert!(fx.msgs().is_empty());
    assert_eq!(fx.stack.stats().accept_overflow, 1);
}

/// A valid cookie's final ACK that finds the accept queue full is kept in
/// SYN_RCVD (beyond the half-open limit, by at most the free flow slots) instead
/// of being lost: the SYN-ACK timer draws the peer's ACK again once the app
/// has taken its queue. Before, a client that sends nothing first stayed
/// ESTABLISHED alone (1,251 of 20,000 connections in the system test
/// `twenty_thousand_connections_vanish_within_2s_of_the_client_being_killed`).
#[test]
fn cookie_final_ack_with_the_accept_queue_full_is_kept_in_syn_rcvd() {
    let mut c = host_cfg(A_IP, A_MAC);
    c.max_half_open = 1;
    let mut fx = Fx::with(c);
    let lid = fx.listen(1);
    // One half-open connection fills the table: cookies from now on.
    fx.nf(&fx.peer(syn_from(50000, 7000, full_opts(1)), &[]));
    fx.one_tcp();
    let sa1 = cookie_synack(&mut fx, PEER_PORT, 100, full_opts(1));
    let sa2 = cookie_synack(&mut fx, PEER_PORT + 1, 200, full_opts(1));
    let ack = |port, seq, sa: &Out| {
        let tsv = sa.t.options.timestamp.unwrap().0;
        ack_from(port, seq, sa.t.seq + 1, Some((2, tsv)))
    };
    fx.nf(&fx.peer(ack(PEER_PORT + 1, 201, &sa2), &[]));
    assert_eq!(fx.one_msg().kind, ctl::ACCEPTED);
    // The queue (backlog 1) is full: no connection yet, no RST, but kept.
    fx.nf(&fx.peer(ack(PEER_PORT, 101, &sa1), &[]));
    assert!(fx.frames().is_empty(), "no RST");
    assert!(fx.msgs().is_empty());
    let st = fx.stack.stats();
    assert_eq!((st.accept_overflow, st.syncookies_parked), (1, 1));
    assert!(fx
        .stack
        .flows()
        .iter()
        .any(|f| f.state == "SYN_RCVD" && f.remote_port == PEER_PORT));
    // The app takes its connection; the SYN-ACK timer sends our cookie
    // SYN-ACK again and the peer's ACK completes the connection.
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::ACCEPT,
            listener: lid,
            arg: [1, 0, 0, 0, 0],
            ..Default::default()
        },
    );
    let t = fx.now + 250 * MS;
    fx.at(t);
    let again = fx
        .frames()
        .iter()
        .map(|f| parse_out(f))
        .find(|o| o.t.dst_port == PEER_PORT)
        .expect("the SYN-ACK again");
    assert_eq!(
        (again.t.flags, again.t.seq, again.t.ack),
        (tcp::SYN | tcp::ACK, sa1.t.seq, 101)
    );
    fx.nf(&fx.peer(ack(PEER_PORT, 101, &again), &[]));
    let m = fx.one_msg();
    assert_eq!(m.kind, ctl::ACCEPTED);
    assert_eq!(m.info.remote_port, PEER_PORT);
}
