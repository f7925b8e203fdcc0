//! Opening connections: passive open (options, backlog, SYN-ACK
//! retransmission, handshake errors, RST for segments without a
//! connection), active open (SYN, SYN-ACK, refusal, timeout), and the
//! parameters a handshake picks (window scale, ISN).

use super::*;

#[test]
fn passive_open_negotiates_options_and_installs_the_flow() {
    let mut c = host_cfg(A_IP, A_MAC);
    c.ecn = true;
    let mut fx = Fx::with(c);
    let lid = fx.listen(16);
    let irs = 0xFFFF_FFF0; // wraps right away
    let mut s = syn(irs, full_opts(500));
    s.flags |= tcp::ECE | tcp::CWR;
    fx.nf(&fx.peer(s, &[]));
    let sa = fx.one_tcp();
    assert_eq!((sa.dst_mac, sa.src_ip, sa.dst_ip), (B_MAC, A_IP, B_IP));
    assert_eq!(sa.t.flags, tcp::SYN | tcp::ACK | tcp::ECE);
    assert_eq!((sa.t.src_port, sa.t.dst_port), (PORT, PEER_PORT));
    assert_eq!(sa.t.ack, irs.wrapping_add(1));
    assert_eq!(sa.t.window, 65535, "SYN-ACK window is unscaled");
    let o = sa.t.options;
    assert_eq!(o.mss, Some(1460));
    assert_eq!(o.wscale, Some(3), "256 KiB >> 3 fits 16 bits");
    assert!(o.sack_permitted);
    assert_eq!(o.timestamp, Some((ts_now(fx.now), 500)));
    assert_eq!(fx.stack.flows()[1].state, "SYN_RCVD");
    assert!(
        fx.table.is_empty(),
        "half-open connections stay out of the table"
    );
    let iss = sa.t.seq;
    fx.now += 300_000;
    fx.nf(&fx.peer(
        ack_seg(
            irs.wrapping_add(1),
            iss.wrapping_add(1),
            1000,
            Some((777, 9)),
        ),
        &[],
    ));
    let m = fx.one_msg();
    assert_eq!((m.kind, m.listener, m.err), (ctl::ACCEPTED, lid, 0));
    let f = fx.state(m.flow);
    assert_eq!(
        (f.local_ip, f.remote_ip, f.local_port, f.remote_port),
        (A_IP, B_IP, PORT, PEER_PORT)
    );
    assert_eq!(f.remote_mac, B_MAC);
    assert_eq!((f.context, f.mem), (APP, APP));
    // dctcp-rate (the default) starts every flow rate-limited at 10 Mbit/s.
    assert_eq!(f.cfg, cfg::TS | cfg::SACK | cfg::ECN | cfg::RATE);
    assert_eq!({ f.tx_rate }, 10_000);
    assert_eq!(f.mss, 1400);
    assert_eq!((f.snd_wscale, f.rcv_wscale), (7, 3));
    assert_eq!(
        { f.rx_remote_avail },
        1000 << 7,
        "the final ACK's window is scaled"
    );
    assert_eq!({ f.rx_next_seq }, irs.wrapping_add(1));
    assert_eq!({ f.tx_next_seq }, iss.wrapping_add(1));
    assert_eq!({ f.rx_avail }, f.rx_len);
    assert_eq!((f.rx_len, f.tx_len), (256 << 10, 256 << 10));
    assert_eq!({ f.tx_next_ts }, 777);
    assert_eq!({ f.rtt_est }, 300, "handshake RTT seeds the estimate (µs)");
    assert_eq!(
        (f.tx_rate, f.tx_cwnd, f.tx_sent, f.tx_avail),
        (10_000, 0, 0, 0)
    );
    let i = m.info;
    assert_eq!(
        (i.flow, i.local_port, i.remote_port, i.remote_ip),
        (m.flow, PORT, PEER_PORT, B_IP)
    );
    assert_eq!(
        (i.rx_base, i.rx_len, i.tx_base, i.tx_len),
        (f.rx_base, f.rx_len, f.tx_base, f.tx_len)
    );
    assert_eq!(
        (i.rx_seq, i.tx_seq, i.mss),
        (irs.wrapping_add(1), iss.wrapping_add(1), 1388)
    );
    assert!(fx.frames().is_empty(), "no frame for a plain final ACK");
    assert!(fx.cmds().is_empty());
    assert_eq!(fx.stack.flows()[1].state, "ESTABLISHED");
    assert_eq!(fx.io.used(APP), 2);
}

#[test]
fn passive_open_without_options() {
    let mut fx = Fx::new();
    fx.listen(16);
    fx.nf(&fx.peer(syn(5000, tcp::TcpOptions::default()), &[]));
    let sa = fx.one_tcp();
    assert_eq!(sa.t.flags, tcp::SYN | tcp::ACK);
    assert_eq!(
        sa.t.options,
        tcp::TcpOptions {
            mss: Some(1460),
            ..Default::default()
        }
    );
    fx.nf(&fx.peer(ack_seg(5001, sa.t.seq + 1, 30000, None), &[]));
    let m = fx.one_msg();
    let f = fx.state(m.flow);
    assert_eq!(f.cfg, cfg::RATE);
    assert_eq!(f.mss, 536);
    assert_eq!((f.snd_wscale, f.rcv_wscale), (0, 0));
    assert_eq!({ f.rx_remote_avail }, 30000);
}

#[test]
fn data_racing_the_install_goes_back_to_the_fast_path() {
    let mut fx = Fx::new();
    fx.listen(16);
    fx.nf(&fx.peer(syn(100, full_opts(1)), &[]));
    let sa = fx.one_tcp();
    let mut a = ack_seg(101, sa.t.seq + 1, 1000, Some((2, 1)));
    a.flags |= tcp::PSH;
    let with_data = fx.peer(a, b"hello");
    fx.nf(&with_data);
    assert_eq!(fx.one_msg().kind, ctl::ACCEPTED);
    assert_eq!(fx.cmds(), vec![FpCmd::Rx(with_data)]);
    // A later segment that was queued as NoFlow before the install.
    let later = fx.peer(ack_seg(106, sa.t.seq + 1, 1000, Some((3, 1))), b"world");
    fx.nf(&later);
    assert_eq!(fx.cmds(), vec![FpCmd::Rx(later)]);
    assert!(fx.frames().is_empty());
    assert_eq!(fx.stack.stats().reinjected, 2);
}

#[test]
fn handshake_errors() {
    let mut fx = Fx::new();
    fx.listen(16);
    fx.nf(&fx.peer(syn(100, full_opts(1)), &[]));
    let sa = fx.one_tcp();
    // Duplicate SYN: the SYN-ACK again, same ISN.
    fx.nf(&fx.peer(syn(100, full_opts(1)), &[]));
    let again = fx.one_tcp();
    assert_eq!(
        (again.t.seq, again.t.flags),
        (sa.t.seq, tcp::SYN | tcp::ACK)
    );
    // ACK of the wrong sequence: RST with seq = its ack.
    fx.nf(&fx.peer(ack_seg(101, sa.t.seq + 7, 1000, None), &[]));
    let r = fx.one_tcp();
    assert_eq!((r.t.flags, r.t.seq), (tcp::RST, sa.t.seq + 7));
    // RST with a wrong sequence: ignored; with the right one: forgotten.
    let mut rst = ack_seg(150, 0, 0, None);
    rst.flags = tcp::RST;
    fx.nf(&fx.peer(rst, &[]));
    assert_eq!(fx.stack.flows().len(), 2);
    rst.seq = 101;
    fx.nf(&fx.peer(rst, &[]));
    assert!(fx.frames().is_empty());
    assert_eq!(fx.stack.flows().len(), 1, "only the listener is left");
    assert!(fx.msgs().is_empty());
}

#[test]
fn syn_ack_is_retransmitted_with_backoff_then_dropped() {
    let mut fx = Fx::new();
    fx.listen(16);
    let t0 = fx.now;
    fx.nf(&fx.peer(syn(100, full_opts(1)), &[]));
    fx.frames();
    let mut t = t0;
    for i in 0..6u64 {
        t += (200 * MS) << i;
        fx.at(t - 1);
        assert!(fx.frames().is_empty(), "not before {t}");
        fx.at(t);
        assert_eq!(fx.one_tcp().t.flags, tcp::SYN | tcp::ACK);
    }
    fx.at(t + ((200 * MS) << 6));
    assert!(fx.frames().is_empty());
    assert_eq!(fx.stack.flows().len(), 1);
    assert_eq!(fx.stack.stats().half_open_timeouts, 1);
}

#[test]
fn segments_without_a_connection_get_rst() {
    let mut fx = Fx::new();
    // SYN to a closed port: RST|ACK, ack = seq + 1.
    fx.nf(&fx.peer(syn(1000, full_opts(1)), &[]));
    let r = fx.one_tcp();
    assert_eq!(
        (r.t.flags, r.t.seq, r.t.ack),
        (tcp::RST | tcp::ACK, 0, 1001)
    );
    assert_eq!(
        (r.t.src_port, r.t.dst_port, r.dst_mac),
        (PORT, PEER_PORT, B_MAC)
    );
    // Data without ACK (and a FIN): ack covers payload and FIN.
    let mut d = ack_seg(7, 0, 0, None);
    d.flags = tcp::FIN | tcp::PSH;
    fx.nf(&fx.peer(d, b"abc"));
    let r = fx.one_tcp();
    assert_eq!((r.t.flags, r.t.seq, r.t.ack), (tcp::RST | tcp::ACK, 0, 11));
    // An ACK: RST with seq = its ack.
    fx.nf(&fx.peer(ack_seg(7, 0xDEAD_BEEF, 100, None), b"zz"));
    let r = fx.one_tcp();
    assert_eq!((r.t.flags, r.t.seq), (tcp::RST, 0xDEAD_BEEF));
    // Never RST an RST; nothing for other addresses or from broadcast ones.
    let mut rst = ack_seg(7, 8, 0, None);
    rst.flags = tcp::RST | tcp::ACK;
    fx.nf(&fx.peer(rst, &[]));
    fx.nf(&build(
        A_MAC,
        B_MAC,
        B_IP,
        0xC612_0009,
        &syn(1, full_opts(1)),
        &[],
    ));
    fx.nf(&build(
        A_MAC,
        B_MAC,
        0xFFFF_FFFF,
        A_IP,
        &syn(1, full_opts(1)),
        &[],
    ));
    fx.nf(&build(
        A_MAC,
        B_MAC,
        0xC612_00FF,
        A_IP,
        &syn(1, full_opts(1)),
        &[],
    ));
    assert!(fx.frames().is_empty());
    assert_eq!(fx.stack.stats().rst_sent, 3);
    // Junk.
    fx.nf(&[0u8; 20]);
    fx.rx(Exception::Malformed(WireError::Truncated), None, &[1, 2, 3]);
    fx.rx(Exception::BadChecksum, None, &[1, 2, 3]);
    fx.rx(Exception::UnusualFlags, Some(3), &[1, 2, 3]);
    fx.rx(Exception::Rst, Some(3), &[1, 2, 3]);
    fx.rx(Exception::Syn, None, &fx.peer(syn(1, full_opts(1)), &[]));
    fx.rx(
        Exception::FinAcked,
        Some(99),
        &fx.peer(syn(1, full_opts(1)), &[]),
    );
    assert!(fx.frames().is_empty());
    let s = fx.stack.stats();
    assert_eq!(
        (
            s.dropped_malformed,
            s.dropped_bad_checksum,
            s.dropped_unusual_flags
        ),
        (3, 1, 1)
    );
}

#[test]
fn backlog_full_drops_syns_and_final_acks() {
    let mut fx = Fx::new();
    let lid = fx.listen(1);
    fx.accept_one(1000);
    // Backlog full: a SYN is dropped silently.
    let mut s2 = syn(2000, full_opts(1));
    s2.src_port = PEER_PORT + 1;
    fx.nf(&fx.peer(s2, &[]));
    assert!(fx.frames().is_empty());
    assert_eq!(fx.stack.stats().syn_dropped_backlog, 1);
    // Credit from the app: it goes through.
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::ACCEPT,
            listener: lid,
            arg: [1, 0, 0, 0, 0],
            ..Default::default()
        },
    );
    assert!(fx.msgs().is_empty(), "ACCEPT is not answered");
    fx.nf(&fx.peer(s2, &[]));
    let sa = fx.one_tcp();
    // Filled again before the final ACK arrives (another connection).
    let mut s3 = syn(3000, full_opts(1));
    s3.src_port = PEER_PORT + 2;
    fx.nf(&fx.peer(s3, &[]));
    let sa3 = fx.one_tcp();
    let mut a3 = ack_seg(3001, sa3.t.seq + 1, 100, None);
    a3.src_port = PEER_PORT + 2;
    fx.nf(&fx.peer(a3, &[]));
    assert_eq!(fx.one_msg().kind, ctl::ACCEPTED);
    let mut a2 = ack_seg(2001, sa.t.seq + 1, 100, None);
    a2.src_port = PEER_PORT + 1;
    fx.nf(&fx.peer(a2, &[]));
    assert!(
        fx.msgs().is_empty(),
        "final ACK dropped while the queue is full"
    );
    assert_eq!(fx.stack.stats().accept_overflow, 1);
    assert!(fx.stack.flows().iter().any(|f| f.state == "SYN_RCVD"));
}

fn arp_known(fx: &mut Fx) {
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REQUEST, B_MAC, B_IP, [0; 6], A_IP, eth::BROADCAST),
    );
    fx.frames();
}

fn connect_msg(req: u32, port: u16, local: u16) -> CtlMsg {
    CtlMsg {
        kind: ctl::CONNECT,
        req,
        arg: [B_IP, port as u32, local as u32, 100_000, 0],
        info: FlowInfo {
            opaque: 0xABCD,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn active_open_sends_syn_and_installs_on_syn_ack() {
    let mut fx = Fx::new();
    arp_known(&mut fx);
    fx.ctl(APP, connect_msg(9, 443, 0));
    let s = fx.one_tcp();
    assert_eq!(
        (s.dst_mac, s.dst_ip, s.t.dst_port, s.t.flags),
        (B_MAC, B_IP, 443, tcp::SYN)
    );
    assert!((32768..=60999).contains(&s.t.src_port));
    assert_eq!(s.t.window, 65535);
    let o = s.t.options;
    assert_eq!(
        (o.mss, o.wscale, o.sack_permitted),
        (Some(1460), Some(1), true)
    );
    assert_eq!(o.timestamp, Some((ts_now(fx.now), 0)));
    let iss = s.t.seq;
    fx.now += 50_000;
    let sa = tcp::TcpRepr {
        src_port: 443,
        dst_port: s.t.src_port,
        seq: 7777,
        ack: iss.wrapping_add(1),
        flags: tcp::SYN | tcp::ACK,
        window: 29000,
        options: tcp::TcpOptions {
            mss: Some(1200),
            wscale: Some(9),
            sack_permitted: false,
            timestamp: Some((4242, ts_now(fx.now))),
            ..Default::default()
        },
    };
    fx.nf(&fx.peer(sa, &[]));
    let m = fx.one_msg();
    assert_eq!((m.kind, m.req, m.err), (ctl::CONNECTED, 9, 0));
    let f = fx.state(m.flow);
    assert_eq!(f.cfg, cfg::TS | cfg::RATE);
    assert_eq!(f.mss, 1200);
    assert_eq!((f.snd_wscale, f.rcv_wscale), (9, 1));
    assert_eq!({ f.rx_remote_avail }, 29000, "SYN-ACK window is not scaled");
    assert_eq!({ f.rx_next_seq }, 7778);
    assert_eq!({ f.tx_next_seq }, iss.wrapping_add(1));
    assert_eq!({ f.tx_next_ts }, 4242);
    assert_eq!({ f.opaque }, 0xABCD);
    assert_eq!(f.rx_len, 100_000);
    assert_eq!({ f.rtt_est }, 50);
    assert_eq!(
        (m.info.opaque, m.info.rx_seq, m.info.mss),
        (0xABCD, 7778, 1188)
    );
    let a = fx.one_tcp();
    assert_eq!(
        (a.t.flags, a.t.seq, a.t.ack),
        (tcp::ACK, iss.wrapping_add(1), 7778)
    );
    assert_eq!(a.t.window, (100_000u32 >> 1) as u16);
    assert_eq!(a.t.options.timestamp, Some((ts_now(fx.now), 4242)));
    // A retransmitted SYN-ACK (our ACK was lost) reaches the flow as a SYN
    // exception and is answered with an ACK.
    fx.rx(Exception::Syn, Some(m.flow), &fx.peer(sa, &[]));
    let a2 = fx.one_tcp();
    assert_eq!((a2.t.flags, a2.t.ack), (tcp::ACK, 7778));
}

#[test]
fn active_open_refused_and_timed_out() {
    let mut c = host_cfg(A_IP, A_MAC);
    c.syn_retries = 2;
    c.ecn = true;
    let mut fx = Fx::with(c);
    arp_known(&mut fx);
    fx.ctl(APP, connect_msg(1, 443, 5555));
    let s = fx.one_tcp();
    assert_eq!(s.t.flags, tcp::SYN | tcp::ECE | tcp::CWR);
    assert_eq!(s.t.src_port, 5555);
    // Same 4-tuple again: in use.
    fx.ctl(APP, connect_msg(2, 443, 5555));
    assert_eq!(fx.one_msg().err, libc::EADDRINUSE);
    // RST without ACK: ignored. RST|ACK acking our SYN: refused.
    let mut r = tcp::TcpRepr {
        src_port: 443,
        dst_port: 5555,
        seq: 0,
        ack: 0,
        flags: tcp::RST,
        window: 0,
        options: Default::default(),
    };
    fx.nf(&fx.peer(r, &[]));
    assert!(fx.msgs().is_empty());
    r.flags = tcp::RST | tcp::ACK;
    r.ack = s.t.seq.wrapping_add(1);
    fx.nf(&fx.peer(r, &[]));
    let m = fx.one_msg();
    assert_eq!((m.kind, m.req, m.err), (ctl::RESULT, 1, libc::ECONNREFUSED));
    assert_eq!(fx.io.used(APP), 0);
    // Timeout: 200 ms, 400 ms, then 800 ms after the last SYN.
    fx.ctl(APP, connect_msg(3, 443, 0));
    fx.frames();
    let t0 = fx.now;
    fx.at(t0 + 200 * MS);
    assert_eq!(fx.one_tcp().t.flags & tcp::SYN, tcp::SYN);
    fx.at(t0 + 600 * MS);
    assert_eq!(fx.one_tcp().t.flags & tcp::SYN, tcp::SYN);
    fx.at(t0 + 1400 * MS - 1);
    assert!(fx.msgs().is_empty());
    fx.at(t0 + 1400 * MS);
    let m = fx.one_msg();
    assert_eq!((m.req, m.err), (3, libc::ETIMEDOUT));
    assert_eq!(fx.io.used(APP), 0);
}

#[test]
fn syn_ack_with_wrong_ack_gets_rst() {
    let mut fx = Fx::new();
    arp_known(&mut fx);
    fx.ctl(APP, connect_msg(1, 443, 6000));
    let s = fx.one_tcp();
    let sa = tcp::TcpRepr {
        src_port: 443,
        dst_port: 6000,
        seq: 1,
        ack: s.t.seq.wrapping_add(99),
        flags: tcp::SYN | tcp::ACK,
        window: 100,
        options: Default::default(),
    };
    fx.nf(&fx.peer(sa, &[]));
    let r = fx.one_tcp();
    assert_eq!((r.t.flags, r.t.seq), (tcp::RST, s.t.seq.wrapping_add(99)));
    assert!(fx.msgs().is_empty(), "still connecting");
    assert_eq!(fx.stack.flows()[0].state, "SYN_SENT");
}

#[test]
fn wscale_choice() {
    assert_eq!(crate::stack::conn::wscale_for_test(65535), 0);
    assert_eq!(crate::stack::conn::wscale_for_test(65536), 1);
    assert_eq!(crate::stack::conn::wscale_for_test(256 << 10), 3);
    assert_eq!(crate::stack::conn::wscale_for_test(64 << 20), 11);
    assert_eq!(crate::stack::conn::wscale_for_test(u32::MAX), 14);
}

#[test]
fn isn_is_keyed_and_clocked() {
    let table = Arc::new(FlowTable::new(4));
    let a = Stack::new(host_cfg(A_IP, A_MAC), table.clone(), 1);
    let b = Stack::new(host_cfg(A_IP, A_MAC), table, 2);
    let k = tas_engine::flow::FlowKey {
        local_ip: A_IP,
        remote_ip: B_IP,
        local_port: 1,
        remote_port: 2,
    };
    let k2 = tas_engine::flow::FlowKey {
        remote_port: 3,
        ..k
    };
    assert_ne!(a.isn_test(&k, 0), b.isn_test(&k, 0), "different secrets");
    assert_ne!(a.isn_test(&k, 0), a.isn_test(&k2, 0), "different tuples");
    assert_eq!(
        a.isn_test(&k, 4000).wrapping_sub(a.isn_test(&k, 0)),
        1,
        "4 µs clock"
    );
}
