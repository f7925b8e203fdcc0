//! Header templates (`wire::frame::HdrTemplate`): every frame the engine
//! builds from a flow's template equals the frame the generic field-by-field
//! builder (`frame::tcp_frame`) makes from the same fields, and its IPv4
//! and TCP checksums hold under the reference bytewise sum — also after the
//! flow's next hop (an ARP update by the slow path), receive window scale,
//! MSS or timestamp option change under the lock.

use super::*;
use crate::wire::testutil::ref_checksum;

/// Our next frame, raw.
fn pop(fx: &mut Fx) -> Vec<u8> {
    fx.out.frames.pop_front().expect("a frame was sent")
}

/// The frame the generic builder makes for `b`'s sequence fields, flags,
/// window, options and payload, with the flow's addresses and `dst_mac`.
fn field_by_field(b: &[u8], dst_mac: [u8; 6]) -> Vec<u8> {
    let fr = frame::parse_tcp_frame(b).expect("our frame parses");
    let t = fr.tcp.repr().expect("our options parse");
    let h = frame::FrameHdr {
        src_mac: OUR_MAC,
        dst_mac,
        src_ip: OUR_IP,
        dst_ip: PEER_IP,
        ttl: 64,
        ecn: fr.ip.ecn(),
        ident: 0,
    };
    let repr = tcp::TcpRepr {
        src_port: OUR_PORT,
        dst_port: PEER_PORT,
        seq: t.seq,
        ack: t.ack,
        flags: t.flags,
        window: t.window,
        options: tcp::TcpOptions {
            timestamp: t.options.timestamp,
            ..Default::default()
        },
    };
    let mut out = vec![0u8; 2048];
    let n = frame::tcp_frame(&mut out, &h, &repr, fr.tcp.payload()).unwrap();
    out.truncate(n);
    out
}

/// Both checksums of `b` verified with the reference sum (not the
/// engine's checksum code), over an explicitly built pseudo header.
fn reference_checksums_hold(b: &[u8]) {
    assert_eq!(ref_checksum(&b[14..34]), 0, "IPv4 header checksum");
    let seg = &b[34..];
    let mut ph = Vec::new();
    ph.extend_from_slice(&OUR_IP.to_be_bytes());
    ph.extend_from_slice(&PEER_IP.to_be_bytes());
    ph.extend_from_slice(&[0, ipv4::PROTO_TCP]);
    ph.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    ph.extend_from_slice(seg);
    assert_eq!(ref_checksum(&ph), 0, "TCP checksum");
}

/// Pops our next frame, checks it against the field-by-field build and the
/// reference checksums, and returns it parsed: (TCP fields, payload length).
fn check(fx: &mut Fx, dst_mac: [u8; 6]) -> (tcp::TcpRepr, usize) {
    let b = pop(fx);
    assert_eq!(
        b,
        field_by_field(&b, dst_mac),
        "template frame vs field by field"
    );
    reference_checksums_hold(&b);
    let fr = frame::parse_tcp_frame(&b).unwrap();
    (fr.tcp.repr().unwrap(), fr.tcp.payload().len())
}

#[test]
fn template_frames_equal_field_by_field_ones_across_flow_changes() {
    let mut fx = fx();
    // Data, then the ACK of peer data: both from the template.
    fx.write(100, 0).unwrap();
    assert_eq!(fx.poll(), 1);
    let (t, n) = check(&mut fx, PEER_MAC);
    assert_eq!((t.seq, n), (fx.lseq(0), 100));
    assert_eq!(t.options.timestamp, Some((1_000_000, PEER_TS0)));
    send!(fx, fx.data(0, 64));
    let (t, n) = check(&mut fx, PEER_MAC);
    assert_eq!((t.ack, n), (fx.rseq(64), 0));
    assert_eq!(t.window, fx.win(32_768 - 64));

    // The slow path moves the next hop (ARP): the template follows.
    let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    fx.set(|f| f.remote_mac = mac);
    fx.now += 1_000_000;
    fx.write(7, 0).unwrap();
    assert_eq!(fx.poll(), 1);
    let (t, n) = check(&mut fx, mac);
    assert_eq!((t.seq, n), (fx.lseq(100), 7));
    assert_eq!(t.options.timestamp, Some((1_001_000, PEER_TS0)));

    // Another receive window scale: the window field follows, the rest
    // of the header stays.
    fx.set(|f| f.rcv_wscale = 7);
    send!(fx, fx.data(64, 64));
    let (t, _) = check(&mut fx, mac);
    assert_eq!(t.window, ((32_768 - 128) >> 7) as u16);

    // A smaller MSS: segments are cut to it (less the timestamp option).
    fx.set(|f| f.mss = 536);
    fx.write(1_200, 0).unwrap();
    let sent = fx.poll();
    assert!(sent >= 1);
    let mut off = 107;
    for _ in 0..sent {
        let (t, n) = check(&mut fx, mac);
        assert_eq!(t.seq, fx.lseq(off));
        assert!(n <= 536 - 12, "{n} bytes");
        off += n as u32;
    }

    // Timestamps off, then on again: the option goes and comes back.
    fx.set(|f| f.cfg &= !cfg::TS);
    fx.write(33, 0).unwrap();
    while fx.poll() > 0 {}
    let mut last = None;
    while let Some(b) = fx.out.frames.front() {
        let _ = b;
        last = Some(check(&mut fx, mac));
    }
    let (t, n) = last.expect("a segment without timestamps");
    assert_eq!((t.options.timestamp, n), (None, 33));
    fx.set(|f| f.cfg |= cfg::TS);
    fx.now += 5_000_000;
    fx.write(5, 0).unwrap();
    while fx.poll() > 0 {}
    let mut last = None;
    while fx.out.frames.front().is_some() {
        last = Some(check(&mut fx, mac));
    }
    let (t, n) = last.expect("a segment with timestamps");
    assert_eq!(n, 5);
    assert_eq!(t.options.timestamp.map(|(v, _)| v), Some(1_006_000));
}

/// With ECN negotiated a data segment goes out ECT(0) and its IPv4
/// checksum covers the TOS byte; with checksum offload the TCP checksum
/// field holds the pseudo header's sum, which a NIC completes to the
/// field-by-field frame's.
#[test]
fn template_frames_with_ecn_and_with_offload() {
    let mut fx = Fx::new(FlowOpts {
        cfg: cfg::TS | cfg::SACK | cfg::ECN,
        ..Default::default()
    });
    fx.write(64, 0).unwrap();
    assert_eq!(fx.poll(), 1);
    let b = pop(&mut fx);
    let fr = frame::parse_tcp_frame(&b).unwrap();
    assert_eq!(fr.ip.ecn(), ipv4::ECN_ECT0);
    assert_eq!(b, field_by_field(&b, PEER_MAC));
    reference_checksums_hold(&b);

    let mut fx = Fx::new(FlowOpts {
        csum_offload: true,
        ..Default::default()
    });
    fx.write(64, 0).unwrap();
    assert_eq!(fx.poll(), 1);
    let mut b = pop(&mut fx);
    assert_eq!(ref_checksum(&b[14..34]), 0, "IPv4 header checksum is ours");
    // The "NIC": the field holds the pseudo header's sum (not complemented);
    // the complement of the segment's sum with it in place is the checksum.
    let seg_len = b.len() - 34;
    let partial = u16::from_be_bytes([b[50], b[51]]) as u32;
    let ph = (OUR_IP >> 16)
        + (OUR_IP & 0xffff)
        + (PEER_IP >> 16)
        + (PEER_IP & 0xffff)
        + ipv4::PROTO_TCP as u32
        + seg_len as u32;
    assert_eq!(partial % 0xffff, ph % 0xffff);
    let c = ref_checksum(&b[34..]);
    b[50..52].copy_from_slice(&c.to_be_bytes());
    assert_eq!(b, field_by_field(&b, PEER_MAC));
    reference_checksums_hold(&b);
}

/// Data segments of every payload length from 1 to 70 bytes (the payload
/// copied out of the TX ring and summed in one pass, `PayloadMem::read_sum`;
/// odd lengths and partial last words included), and among them those
/// that wrap around the ring's end (copied in two pieces, summed after):
/// the same frames as the field-by-field builder, both checksums right
/// under the reference sum.
#[test]
fn payload_summed_while_copied_at_every_length_and_across_the_ring_end() {
    let mut fx = Fx::new(FlowOpts {
        tx_pos0: 32_768 - 700,
        ..Default::default()
    });
    let mut wrapped = 0;
    for n in 1..=70u32 {
        let pos = fx.flow().tx_next_pos;
        wrapped += (pos + n > 32_768) as u32;
        fx.write(n, 0).unwrap();
        assert_eq!(fx.poll(), 1);
        let (t, len) = check(&mut fx, PEER_MAC);
        assert_eq!(len, n as usize);
        assert_eq!(t.flags, ACK | PSH);
        recv_nothing!(fx);
    }
    assert_eq!(wrapped, 1, "one segment crossed the ring's end");
}
