//! ICMP: an echo request to our address gets an exact echo reply; ICMP not
//! for us, with a bad checksum or of another type is ignored, and a
//! truncated one is counted as malformed.

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
