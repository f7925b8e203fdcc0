//! Exceptions to the slow path and frames that are not ours.

use super::*;

/// Feeds `frame` and checks it became exactly one exception with the frame
/// attached, nothing was sent, and the flow did not change.
#[track_caller]
fn check_exception(fx: &mut Fx, frame: &[u8], reason: Exception, flow: Option<FlowId>) {
    let before = fx.flow();
    let exc = fx.fp.stats.exceptions;
    fx.send_raw(frame);
    match fx.exception() {
        Some((r, f, b)) => {
            assert_eq!((r, f), (reason, flow));
            assert_eq!(b, frame, "the frame goes along");
        }
        None => panic!("expected {reason:?}"),
    }
    exc_nothing!(fx);
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.exceptions, exc + 1);
    assert_eq!(fx.flow(), before);
    assert!(fx.notifications().is_empty());
}

#[test]
fn unusual_segments_on_a_flow_are_exceptions() {
    let mut fx = fx();
    let id = Some(fx.id);
    for (flags, reason) in [
        (tcp::SYN, Exception::Syn),
        (tcp::SYN | ACK, Exception::Syn),
        (tcp::RST, Exception::Rst),
        (tcp::RST | ACK, Exception::Rst),
        (tcp::RST | tcp::SYN | ACK, Exception::Rst),
        (tcp::URG | ACK, Exception::UnusualFlags),
        (PSH, Exception::UnusualFlags),
        (FIN, Exception::UnusualFlags),
        (0, Exception::UnusualFlags),
    ] {
        let f = fx.frame(&Seg {
            flags,
            ..fx.data(0, 10)
        });
        check_exception(&mut fx, &f, reason, id);
    }
    // The flow still works.
    send!(fx, fx.data(0, 10));
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
}

#[test]
fn frames_the_fast_path_does_not_handle_are_exceptions() {
    let mut fx = fx();
    let good = fx.frame(&fx.data(0, 10));
    // Unknown flow: another port, another address.
    let mut f = good.clone();
    f[34..36].copy_from_slice(&(PEER_PORT + 2).to_be_bytes());
    frame::tcp_finish(&mut f, good.len());
    check_exception(&mut fx, &f, Exception::NoFlow, None);
    let mut f = good.clone();
    f[14 + 16..14 + 20].copy_from_slice(&(OUR_IP + 9).to_be_bytes());
    f[24..26].fill(0);
    let c = crate::wire::checksum::ipv4_header(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    frame::tcp_finish(&mut f, good.len());
    check_exception(&mut fx, &f, Exception::NoFlow, None);
    // Bad TCP checksum: never looked up.
    let f = fx.frame(&Seg {
        bad_csum: true,
        ..fx.data(0, 10)
    });
    check_exception(&mut fx, &f, Exception::BadChecksum, None);
    assert_eq!(fx.fp.stats.bad_checksum, 1);
    // ARP.
    let mut f = vec![0u8; 60];
    crate::wire::eth::emit(
        &mut f,
        crate::wire::eth::BROADCAST,
        PEER_MAC,
        crate::wire::eth::ETHERTYPE_ARP,
    )
    .unwrap();
    crate::wire::arp::ArpRepr {
        op: crate::wire::arp::OP_REQUEST,
        sender_mac: PEER_MAC,
        sender_ip: PEER_IP,
        target_mac: [0; 6],
        target_ip: OUR_IP,
    }
    .emit(&mut f[14..])
    .unwrap();
    check_exception(&mut fx, &f, Exception::NotTcp, None);
    // UDP.
    let mut f = good.clone();
    f[23] = ipv4::PROTO_UDP;
    f[24..26].fill(0);
    let c = crate::wire::checksum::ipv4_header(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    check_exception(&mut fx, &f, Exception::NotTcp, None);
    // Malformed: truncated at every length, bad IP checksum, bad version.
    for n in 0..good.len() {
        check_exception(
            &mut fx,
            &good[..n],
            Exception::Malformed(WireError::Truncated),
            None,
        );
    }
    let mut f = good.clone();
    f[22] ^= 1;
    check_exception(
        &mut fx,
        &f,
        Exception::Malformed(WireError::BadChecksum),
        None,
    );
    let mut f = good.clone();
    f[14] = 0x65;
    check_exception(
        &mut fx,
        &f,
        Exception::Malformed(WireError::BadVersion),
        None,
    );
    let mut f = good.clone();
    f[14 + 20 + 12] = 0x30; // TCP data offset 3
    check_exception(
        &mut fx,
        &f,
        Exception::Malformed(WireError::BadHeaderLen),
        None,
    );
    // Nothing of this reached the ring.
    assert!(fx.mem.regions[MEM as usize][RX_BASE as usize..][..10]
        .iter()
        .all(|&b| b == GUARD));
    send!(fx, fx.data(0, 10));
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
}

#[test]
fn slow_path_flow_is_an_exception() {
    let mut fx = fx();
    let id = Some(fx.id);
    fx.set(|f| f.cfg |= cfg::SLOWPATH);
    let f = fx.frame(&fx.data(0, 10));
    check_exception(&mut fx, &f, Exception::SlowPathFlow, id);
    let f = fx.frame(&Seg {
        flags: tcp::RST,
        ..fx.peer(0)
    });
    check_exception(&mut fx, &f, Exception::SlowPathFlow, id);
    fx.set(|f| f.cfg &= !cfg::SLOWPATH);
    send!(fx, fx.data(0, 10));
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
}

#[test]
fn frames_for_another_mac_are_ignored() {
    let mut fx = fx();
    let mut f = fx.frame(&fx.data(0, 10));
    f[..6].copy_from_slice(&OTHER_MAC);
    let before = fx.flow();
    fx.send_raw(&f);
    recv_nothing!(fx);
    exc_nothing!(fx);
    assert_eq!(fx.flow(), before);
    assert_eq!(fx.fp.stats.not_for_us, 1);
    assert_eq!(fx.fp.stats.exceptions, 0);
    // Broadcast is taken, and with `any_mac` everything is.
    f[..6].copy_from_slice(&crate::wire::eth::BROADCAST);
    fx.send_raw(&f);
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
    fx.fp = FastPath::new(
        Arc::clone(fx.fp.table()),
        Config {
            local_mac: OUR_MAC,
            ttl: 64,
            any_mac: true,
            ack_delay_ns: 0,
        },
    );
    let mut f = fx.frame(&fx.data(10, 10));
    f[..6].copy_from_slice(&OTHER_MAC);
    fx.send_raw(&f);
    recv!(fx, fx.ours(0, 20, 32_768 - 20));
}

/// The destination MAC is compared whole (as one word): a frame whose
/// destination differs from ours in any one bit of any byte is not ours.
#[test]
fn a_destination_one_bit_off_our_mac_is_not_ours() {
    let mut fx = fx();
    let good = fx.frame(&fx.data(0, 10));
    let mut n = 0;
    for byte in 0..6 {
        for bit in 0..8 {
            let mut f = good.clone();
            f[byte] ^= 1 << bit;
            fx.send_raw(&f);
            n += 1;
            assert_eq!(fx.fp.stats.not_for_us, n, "byte {byte} bit {bit}");
        }
    }
    recv_nothing!(fx);
    exc_nothing!(fx);
    fx.send_raw(&good);
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
}
