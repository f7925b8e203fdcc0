//! ARP: answering requests for our address, learning and refreshing
//! neighbours, moving installed flows when a MAC changes, resolution for
//! connects (retries, EHOSTUNREACH, cache expiry) and routing via the
//! gateway.

use super::*;

fn parse_arp(f: &[u8]) -> ([u8; 6], arp::ArpRepr) {
    assert_eq!(f.len(), 60);
    let e = eth::EthFrame::parse(f).unwrap();
    assert_eq!(e.ethertype(), eth::ETHERTYPE_ARP);
    assert_eq!(e.src(), A_MAC);
    (e.dst(), arp::ArpPacket::parse(e.payload()).unwrap().repr())
}

#[test]
fn arp_request_for_us_is_answered_and_learned() {
    let mut fx = Fx::new();
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REQUEST, B_MAC, B_IP, [0; 6], A_IP, eth::BROADCAST),
    );
    let f = fx.frames();
    assert_eq!(f.len(), 1);
    let (dst, r) = parse_arp(&f[0]);
    assert_eq!(dst, B_MAC);
    assert_eq!(
        r,
        arp::ArpRepr {
            op: arp::OP_REPLY,
            sender_mac: A_MAC,
            sender_ip: A_IP,
            target_mac: B_MAC,
            target_ip: B_IP
        }
    );
    assert_eq!(fx.stack.arp_entries().len(), 1);
    assert_eq!(fx.stack.arp_entries()[0].0, B_IP);
    assert_eq!(fx.stack.arp_entries()[0].1, B_MAC);
}

#[test]
fn arp_not_for_us_is_not_answered_and_gratuitous_only_refreshes() {
    let mut fx = Fx::new();
    let c_ip = 0xC612_0003;
    let c_mac = [2, 0, 0, 0, 0, 3];
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REQUEST, c_mac, c_ip, [0; 6], B_IP, eth::BROADCAST),
    );
    assert!(fx.frames().is_empty());
    assert!(
        fx.stack.arp_entries().is_empty(),
        "not learned from requests for others"
    );
    // Gratuitous ARP from an unknown host: not learned.
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REQUEST, c_mac, c_ip, [0; 6], c_ip, eth::BROADCAST),
    );
    assert!(fx.stack.arp_entries().is_empty());
    // Learn B, then B announces a new MAC gratuitously: updated.
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REQUEST, B_MAC, B_IP, [0; 6], A_IP, eth::BROADCAST),
    );
    fx.frames();
    let new_mac = [2, 0, 0, 0, 0, 0x22];
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(
            arp::OP_REPLY,
            new_mac,
            B_IP,
            eth::BROADCAST,
            B_IP,
            eth::BROADCAST,
        ),
    );
    assert!(fx.frames().is_empty());
    assert_eq!(fx.stack.arp_entries()[0].1, new_mac);
    // Someone claiming our address: counted, ignored.
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REQUEST, c_mac, A_IP, [0; 6], A_IP, eth::BROADCAST),
    );
    assert_eq!(fx.stack.stats().arp_conflicts, 1);
    // Truncated ARP.
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REQUEST, c_mac, c_ip, [0; 6], A_IP, eth::BROADCAST)[..30],
    );
    assert_eq!(fx.stack.stats().dropped_malformed, 1);
}

#[test]
fn arp_change_moves_installed_flows() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, ..) = fx.accept_one(1000);
    assert_eq!(fx.state(id).remote_mac, B_MAC);
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REQUEST, B_MAC, B_IP, [0; 6], A_IP, eth::BROADCAST),
    );
    let new_mac = [2, 0, 0, 0, 0, 0x22];
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(
            arp::OP_REPLY,
            new_mac,
            B_IP,
            eth::BROADCAST,
            B_IP,
            eth::BROADCAST,
        ),
    );
    assert_eq!(fx.state(id).remote_mac, new_mac);
}

#[test]
fn connect_resolves_arp_and_cache_expires() {
    let mut c = host_cfg(A_IP, A_MAC);
    c.arp_ttl_ns = 5000 * MS;
    let mut fx = Fx::with(c);
    let connect = |fx: &mut Fx, req: u32| {
        fx.ctl(
            APP,
            CtlMsg {
                kind: ctl::CONNECT,
                req,
                arg: [B_IP, 80, 0, 0, 0],
                ..Default::default()
            },
        )
    };
    connect(&mut fx, 1);
    let f = fx.frames();
    assert_eq!(f.len(), 1);
    let (dst, r) = parse_arp(&f[0]);
    assert_eq!(dst, eth::BROADCAST);
    assert_eq!(
        (r.op, r.sender_ip, r.sender_mac, r.target_ip, r.target_mac),
        (arp::OP_REQUEST, A_IP, A_MAC, B_IP, [0; 6])
    );
    assert_eq!(fx.stack.flows()[0].state, "ARP_WAIT");
    // The reply releases the SYN.
    fx.rx(
        Exception::NotTcp,
        None,
        &arp_frame(arp::OP_REPLY, B_MAC, B_IP, A_MAC, A_IP, A_MAC),
    );
    let s = fx.one_tcp();
    assert_eq!((s.dst_mac, s.t.flags, s.dst_ip), (B_MAC, tcp::SYN, B_IP));
    assert_eq!(fx.stack.flows()[0].state, "SYN_SENT");
    // A second connect within the TTL goes straight to SYN.
    fx.now += 1000 * MS;
    connect(&mut fx, 2);
    assert_eq!(fx.one_tcp().t.flags, tcp::SYN);
    // After the TTL: ARP again.
    fx.now += 5000 * MS;
    connect(&mut fx, 3);
    let f = fx.frames();
    assert_eq!(f.len(), 1);
    assert_eq!(parse_arp(&f[0]).1.op, arp::OP_REQUEST);
    assert!(fx.stack.stats().arp_expired >= 1);
}

#[test]
fn arp_retries_then_ehostunreach_for_every_waiter() {
    let mut fx = Fx::new();
    for req in 1..=2 {
        fx.ctl(
            APP,
            CtlMsg {
                kind: ctl::CONNECT,
                req,
                arg: [B_IP, 80 + req, 0, 0, 0],
                ..Default::default()
            },
        );
    }
    assert_eq!(fx.frames().len(), 1, "one request for both waiters");
    let t0 = fx.now;
    for i in 1..=3 {
        fx.at(t0 + i * 500 * MS);
        assert_eq!(fx.frames().len(), 1, "retry {i}");
        assert!(fx.msgs().is_empty());
    }
    fx.at(t0 + 2000 * MS);
    assert!(fx.frames().is_empty());
    let m = fx.msgs();
    assert_eq!(m.len(), 2);
    assert!(m
        .iter()
        .all(|(_, m)| m.kind == ctl::RESULT && m.err == libc::EHOSTUNREACH));
    assert_eq!(fx.io.used(APP), 0);
    assert!(fx.stack.flows().is_empty());
}

#[test]
fn routing_uses_the_gateway_off_subnet() {
    let gw = 0xC612_00FE;
    let mut c = host_cfg(A_IP, A_MAC);
    c.gateway = Some(gw);
    let mut fx = Fx::with(c);
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::CONNECT,
            req: 1,
            arg: [0xC613_0005, 80, 0, 0, 0],
            ..Default::default()
        },
    );
    let f = fx.frames();
    assert_eq!(parse_arp(&f[0]).1.target_ip, gw);
}

fn connect(fx: &mut Fx, req: u32, ip: u32) {
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::CONNECT,
            req,
            arg: [ip, 80, 0, 0, 0],
            ..Default::default()
        },
    )
}

/// Shared mode: the kernel resolves. A neighbour it knows goes straight
/// to SYN; one it does not is left to it (no ARP request of ours) and its
/// answer, reported as a kernel neighbour, releases the SYN; the retries
/// ask it again, and its silence fails the connect with EHOSTUNREACH.
#[test]
fn shared_mode_resolves_through_the_kernel() {
    let mut fx = Fx::new();
    fx.io.kernel_neigh = Some([(B_IP, B_MAC)].into_iter().collect());
    connect(&mut fx, 1, B_IP);
    let s = fx.one_tcp();
    assert_eq!((s.dst_mac, s.t.flags), (B_MAC, tcp::SYN));
    assert_eq!(fx.io.kernel_asked, vec![B_IP]);
    // Not known to the kernel yet.
    let c_ip = 0xC612_0003;
    let c_mac = [2, 0, 0, 0, 0, 3];
    connect(&mut fx, 2, c_ip);
    assert!(fx.frames().is_empty(), "no ARP request of our own");
    assert_eq!(fx.stack.stats().arp_kernel_resolves, 2);
    let now = fx.now;
    fx.stack.neighbour(now, c_ip, c_mac, &mut fx.io);
    let s = fx.one_tcp();
    assert_eq!((s.dst_mac, s.t.flags, s.dst_ip), (c_mac, tcp::SYN, c_ip));
    // Never answered: asked again per retry, then EHOSTUNREACH.
    let d_ip = 0xC612_0004;
    fx.io.kernel_asked.clear();
    connect(&mut fx, 3, d_ip);
    let t0 = fx.now;
    for i in 1..=4 {
        fx.at(t0 + i * 500 * MS);
    }
    // (The other connects' SYN retransmissions only.)
    assert!(fx
        .frames()
        .iter()
        .all(|f| eth::EthFrame::parse(f).unwrap().ethertype() != eth::ETHERTYPE_ARP));
    assert_eq!(fx.io.kernel_asked, vec![d_ip; 4]);
    let m = fx.msgs();
    assert!(
        m.iter()
            .any(|(_, m)| m.kind == ctl::RESULT && m.req == 3 && m.err == libc::EHOSTUNREACH),
        "{m:?}"
    );
}

/// Shared mode: the kernel's FIB picks the next hop per destination (a
/// gateway for one prefix, on-link for another, whatever the stack's own
/// prefix and gateway say); no route out of our interface: ENETUNREACH.
#[test]
fn shared_mode_routes_through_the_kernels_fib() {
    let mut c = host_cfg(A_IP, A_MAC);
    c.gateway = Some(0xC612_00FE);
    let mut fx = Fx::with(c);
    let (far, gw2, onlink, nowhere) = (0x0A00_0005, 0xC612_00FD, 0xC613_0007, 0x0B00_0001);
    fx.io.kernel_routes = Some(
        [(far, Some(gw2)), (onlink, Some(onlink)), (nowhere, None)]
            .into_iter()
            .collect(),
    );
    connect(&mut fx, 1, far);
    assert_eq!(parse_arp(&fx.frames()[0]).1.target_ip, gw2);
    connect(&mut fx, 2, onlink);
    assert_eq!(parse_arp(&fx.frames()[0]).1.target_ip, onlink);
    connect(&mut fx, 3, nowhere);
    assert!(fx.frames().is_empty());
    let m = fx.msgs();
    assert!(
        m.iter()
            .any(|(_, m)| m.req == 3 && m.err == libc::ENETUNREACH),
        "{m:?}"
    );
}
