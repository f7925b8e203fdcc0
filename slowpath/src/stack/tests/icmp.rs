//! ICMP: an echo request to our address gets an exact echo reply; ICMP not
//! for us, with a bad checksum or of another type is ignored, and a
//! truncated one is counted as malformed. ICMP errors quoting our segments:
//! path MTU (RFC 1191), failed opens, soft errors, RFC 5927 checks.

use super::*;

fn icmp_frame(
    dst_ip: u32,
    typ: u8,
    id: u16,
    seqn: u16,
    payload: &[u8],
    good_csum: bool,
) -> Vec<u8> {
    let mut icmp = vec![typ, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seqn.to_be_bytes());
    icmp.extend_from_slice(payload);
    let c = checksum::fold(checksum::sum(&icmp, 0)) ^ if good_csum { 0 } else { 1 };
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut b = vec![0u8; 34 + icmp.len()];
    eth::emit(&mut b, A_MAC, B_MAC, eth::ETHERTYPE_IPV4).unwrap();
    ipv4::Ipv4Repr {
        src: B_IP,
        dst: dst_ip,
        protocol: ipv4::PROTO_ICMP,
        ttl: 64,
        ecn: 0,
        ident: 9,
        dont_fragment: true,
        payload_len: icmp.len() as u16,
    }
    .emit(&mut b[14..])
    .unwrap();
    b[34..].copy_from_slice(&icmp);
    b
}

#[test]
fn ping_gets_an_echo_reply() {
    let mut fx = Fx::new();
    let payload: Vec<u8> = (0..57u8).collect();
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_frame(A_IP, 8, 0x1234, 7, &payload, true),
    );
    let f = fx.frames();
    assert_eq!(f.len(), 1);
    let e = eth::EthFrame::parse(&f[0]).unwrap();
    assert_eq!(
        (e.dst(), e.src(), e.ethertype()),
        (B_MAC, A_MAC, eth::ETHERTYPE_IPV4)
    );
    let ip = ipv4::Ipv4Packet::parse(e.payload()).unwrap();
    assert_eq!(
        (ip.src(), ip.dst(), ip.protocol()),
        (A_IP, B_IP, ipv4::PROTO_ICMP)
    );
    let m = ip.payload();
    assert_eq!(checksum::fold(checksum::sum(m, 0)), 0, "ICMP checksum");
    assert_eq!(&m[..2], &[0, 0], "echo reply");
    assert_eq!(&m[4..6], &0x1234u16.to_be_bytes());
    assert_eq!(&m[6..8], &7u16.to_be_bytes());
    assert_eq!(&m[8..], &payload[..]);
    assert_eq!(fx.stack.stats().icmp_echo_replies, 1);
    // Not for us, bad checksum, not an echo request: ignored.
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_frame(B_IP, 8, 1, 1, b"x", true),
    );
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_frame(A_IP, 8, 1, 1, b"x", false),
    );
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_frame(A_IP, 3, 1, 1, b"x", true),
    );
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_frame(A_IP, 8, 1, 1, b"", true)[..38],
    );
    assert!(fx.frames().is_empty());
    assert_eq!(fx.stack.stats().icmp_ignored, 3);
    assert_eq!(fx.stack.stats().dropped_malformed, 1);
}

/// An ICMP error (`typ`, `code`, `mtu` in the second word) from a router
/// to us, quoting a segment we sent: `sport` -> `dport` with `seq`.
fn icmp_error(typ: u8, code: u8, mtu: u16, sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let mut quote = vec![0u8; 20];
    quote[0] = 0x45;
    quote[2..4].copy_from_slice(&1500u16.to_be_bytes());
    quote[6] = 0x40; // DF
    quote[8] = 64;
    quote[9] = ipv4::PROTO_TCP;
    quote[12..16].copy_from_slice(&A_IP.to_be_bytes());
    quote[16..20].copy_from_slice(&B_IP.to_be_bytes());
    quote.extend_from_slice(&sport.to_be_bytes());
    quote.extend_from_slice(&dport.to_be_bytes());
    quote.extend_from_slice(&seq.to_be_bytes());
    let mut icmp = vec![typ, code, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&quote);
    let c = checksum::fold(checksum::sum(&icmp, 0));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut b = vec![0u8; 34 + icmp.len()];
    eth::emit(&mut b, A_MAC, B_MAC, eth::ETHERTYPE_IPV4).unwrap();
    ipv4::Ipv4Repr {
        src: 0xc612_00fe, // a router
        dst: A_IP,
        protocol: ipv4::PROTO_ICMP,
        ttl: 64,
        ecn: 0,
        ident: 9,
        dont_fragment: false,
        payload_len: icmp.len() as u16,
    }
    .emit(&mut b[14..])
    .unwrap();
    b[34..].copy_from_slice(&icmp);
    b
}

/// An installed flow with 3000 bytes in flight from SND.UNA = `una`.
fn flow_in_flight(fx: &mut Fx) -> (FlowId, u32) {
    fx.listen(16);
    let (id, _, iss) = fx.accept_one(1000);
    let una = iss.wrapping_add(1);
    fx.set(id, |f| {
        f.tx_sent = 3000;
        f.tx_next_seq = una.wrapping_add(3000);
    });
    fx.frames();
    fx.cmds();
    (id, una)
}

/// RFC 1191 / RFC 5927: fragmentation needed quoting a segment in flight
/// lowers the flow's MSS to MTU - 40 and resends what is in flight; one
/// quoting a sequence number not in flight, a larger MTU or a bad checksum
/// changes nothing; the MSS never goes below the 552-byte path MTU floor.
#[test]
fn frag_needed_lowers_the_mss_and_retransmits() {
    let mut fx = Fx::new();
    let (id, una) = flow_in_flight(&mut fx);
    assert_eq!(fx.state(id).mss, 1400);
    // Not in flight: before SND.UNA, at SND.NXT.
    for seq in [una.wrapping_sub(1), una.wrapping_add(3000)] {
        fx.rx(
            Exception::NotTcp,
            None,
            &icmp_error(3, 4, 1200, PORT, PEER_PORT, seq),
        );
    }
    assert_eq!(fx.stack.stats().icmp_out_of_window, 2);
    // Bad checksum.
    let mut bad = icmp_error(3, 4, 1200, PORT, PEER_PORT, una);
    bad[40] ^= 1;
    fx.rx(Exception::NotTcp, None, &bad);
    // Another connection's port.
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_error(3, 4, 1200, PORT, 1, una),
    );
    assert_eq!(fx.stack.stats().icmp_ignored, 2);
    assert_eq!(fx.state(id).mss, 1400);
    assert!(fx.cmds().is_empty());
    // In flight: MSS 1160, everything in flight goes again.
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_error(3, 4, 1200, PORT, PEER_PORT, una.wrapping_add(1500)),
    );
    assert_eq!(fx.state(id).mss, 1160);
    assert_eq!(fx.cmds(), vec![FpCmd::Retransmit(id)]);
    assert_eq!(fx.stack.stats().icmp_pmtu_updates, 1);
    // A larger MTU never raises it.
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_error(3, 4, 1400, PORT, PEER_PORT, una),
    );
    assert_eq!(fx.state(id).mss, 1160);
    assert!(fx.cmds().is_empty());
    // Below the floor (and 0, an old router): 552 - 40.
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_error(3, 4, 68, PORT, PEER_PORT, una),
    );
    assert_eq!(fx.state(id).mss, 512);
    assert_eq!(fx.cmds(), vec![FpCmd::Retransmit(id)]);
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_error(3, 4, 0, PORT, PEER_PORT, una),
    );
    assert_eq!(fx.state(id).mss, 512);
    assert_eq!(fx.stack.stats().icmp_pmtu_updates, 2);
    assert!(fx.frames().is_empty(), "ICMP errors are never answered");
}

/// RFC 1122 §4.2.3.9, as Linux: unreachables and time exceeded on an
/// established connection are soft errors (counted, the flow goes on);
/// the last one is what the app is told if the connection then times out
/// (Linux's sk_err_soft), unless something got through meanwhile.
#[test]
fn unreachable_on_an_established_flow_is_a_soft_error() {
    for progress in [false, true] {
        let mut c = host_cfg(A_IP, A_MAC);
        c.data_retries = 2;
        let mut fx = Fx::with(c);
        let (id, una) = flow_in_flight(&mut fx);
        for (t, c) in [(3, 1), (11, 0), (3, 3)] {
            fx.rx(
                Exception::NotTcp,
                None,
                &icmp_error(t, c, 0, PORT, PEER_PORT, una),
            );
        }
        assert_eq!(fx.stack.stats().icmp_soft_errors, 3);
        assert!(fx.msgs().is_empty() && fx.cmds().is_empty());
        assert_eq!(fx.state(id).mss, 1400);
        assert!(fx.stack.flows().iter().any(|f| f.state == "ESTABLISHED"));
        if progress {
            // 1000 bytes acknowledged: the soft error is forgotten.
            fx.set(id, |f| f.tx_sent -= 1000);
        }
        let t0 = fx.now;
        let mut t = t0;
        let mut reset = None;
        while t < t0 + 10_000 * MS && reset.is_none() {
            t += 10 * MS;
            fx.at(t);
            reset = fx.msgs().into_iter().find(|(_, m)| m.kind == ctl::RESET);
        }
        let want = if progress {
            libc::ETIMEDOUT
        } else {
            libc::ECONNREFUSED
        };
        assert_eq!(reset.expect("timed out").1.err, want, "progress {progress}");
    }
}

fn arp_known(fx: &mut Fx) {
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REQUEST, B_MAC, B_IP, [0; 6], A_IP, eth::BROADCAST),
    );
    fx.frames();
}

fn connect(fx: &mut Fx, req: u32, code: u8) -> (u16, u32) {
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::CONNECT,
            req,
            arg: [B_IP, 443, 0, 100_000, 0],
            ..Default::default()
        },
    );
    let s = fx.one_tcp();
    assert_eq!(s.t.flags, tcp::SYN, "code {code}");
    (s.t.src_port, s.t.seq)
}

/// As Linux's tcp_v4_err: an unreachable quoting our SYN fails the
/// connect with the code's errno (port unreachable: ECONNREFUSED, host
/// unreachable: EHOSTUNREACH, net unreachable: ENETUNREACH); one quoting
/// another sequence number is ignored.
#[test]
fn unreachable_fails_a_connect_in_syn_sent() {
    let mut fx = Fx::new();
    arp_known(&mut fx);
    for (req, (typ, code, errno)) in [
        (3, 3, libc::ECONNREFUSED),
        (3, 1, libc::EHOSTUNREACH),
        (3, 0, libc::ENETUNREACH),
        (11, 0, libc::EHOSTUNREACH),
    ]
    .into_iter()
    .enumerate()
    {
        let req = req as u32 + 1;
        let (port, iss) = connect(&mut fx, req, code);
        fx.rx(
            Exception::NotTcp,
            None,
            &icmp_error(typ, code, 0, port, 443, iss.wrapping_add(1)),
        );
        assert!(fx.msgs().is_empty(), "wrong sequence number: ignored");
        fx.rx(
            Exception::NotTcp,
            None,
            &icmp_error(typ, code, 0, port, 443, iss),
        );
        let m = fx.one_msg();
        assert_eq!((m.kind, m.req, m.err), (ctl::RESULT, req, errno));
        assert!(fx.stack.flows().is_empty());
    }
    let s = fx.stack.stats();
    assert_eq!((s.icmp_conn_errors, s.icmp_out_of_window), (4, 4));
    assert_eq!((s.connect_refused, s.connect_unreachable), (1, 3));
    // Fragmentation needed for a SYN: ignored, the open goes on.
    let (port, iss) = connect(&mut fx, 9, 4);
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_error(3, 4, 600, port, 443, iss),
    );
    assert!(fx.msgs().is_empty());
    assert!(fx.stack.flows().iter().any(|f| f.state == "SYN_SENT"));
}

/// Linux's tcp_req_err: host unreachable quoting our SYN-ACK drops the
/// SYN_RCVD connection silently; port unreachable does not.
#[test]
fn unreachable_drops_a_syn_rcvd() {
    let mut fx = Fx::new();
    fx.listen(16);
    fx.nf(&fx.peer(syn(1000, full_opts(500)), &[]));
    let sa = fx.one_tcp();
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_error(3, 3, 0, PORT, PEER_PORT, sa.t.seq),
    );
    assert!(fx.stack.flows().iter().any(|f| f.state == "SYN_RCVD"));
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_error(3, 1, 0, PORT, PEER_PORT, sa.t.seq.wrapping_add(7)),
    );
    assert!(fx.stack.flows().iter().any(|f| f.state == "SYN_RCVD"));
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_error(3, 1, 0, PORT, PEER_PORT, sa.t.seq),
    );
    assert!(!fx.stack.flows().iter().any(|f| f.state == "SYN_RCVD"));
    assert!(fx.msgs().is_empty() && fx.frames().is_empty());
    assert_eq!(fx.stack.listeners()[0].half_open, 0);
}

/// RFC 1191 §5, as Linux's route exceptions: the lowered MSS is kept for
/// the destination, so the next connection to it starts there (whatever
/// the peer announces); after 10 minutes it is forgotten.
#[test]
fn a_lowered_path_mss_is_remembered_for_the_destination() {
    let mut fx = Fx::new();
    let (id, una) = flow_in_flight(&mut fx);
    fx.rx(
        Exception::NotTcp,
        None,
        &icmp_error(3, 4, 1200, PORT, PEER_PORT, una),
    );
    assert_eq!(fx.state(id).mss, 1160);
    // A new passive open from the same host announces 1400: 1160 it is.
    let syn2 = tcp::TcpRepr {
        src_port: PEER_PORT + 1,
        ..syn(5000, full_opts(900))
    };
    fx.nf(&fx.peer(syn2, &[]));
    let sa = fx.one_tcp();
    let ack = tcp::TcpRepr {
        src_port: PEER_PORT + 1,
        ..ack_seg(
            5001,
            sa.t.seq + 1,
            1000,
            Some((901, sa.t.options.timestamp.unwrap().0)),
        )
    };
    fx.nf(&fx.peer(ack, &[]));
    let m = fx.one_msg();
    assert_eq!(m.kind, ctl::ACCEPTED);
    assert_eq!(fx.state(m.flow).mss, 1160);
    // Ten minutes later: the full size again.
    fx.at(fx.now + 601_000 * MS);
    fx.frames();
    fx.msgs();
    let syn3 = tcp::TcpRepr {
        src_port: PEER_PORT + 2,
        ..syn(9000, full_opts(950))
    };
    fx.nf(&fx.peer(syn3, &[]));
    let sa = fx.one_tcp();
    let ack = tcp::TcpRepr {
        src_port: PEER_PORT + 2,
        ..ack_seg(
            9001,
            sa.t.seq + 1,
            1000,
            Some((951, sa.t.options.timestamp.unwrap().0)),
        )
    };
    fx.nf(&fx.peer(ack, &[]));
    let m = fx.one_msg();
    assert_eq!(m.kind, ctl::ACCEPTED);
    assert_eq!(fx.state(m.flow).mss, 1400);
}
