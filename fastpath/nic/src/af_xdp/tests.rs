use super::*;
use crate::af_packet::AfPacketNic;
use crate::testnet::*;
use std::time::Duration;

fn xdp_cfg(mode: XdpMode) -> AfXdpConfig {
    AfXdpConfig {
        mode: Some(mode),
        ..AfXdpConfig::default()
    }
}

#[test]
fn bad_config_and_unknown_interface_are_errors() {
    let bad = AfXdpConfig {
        frames: 100,
        mode: None,
        shared: None,
    };
    assert!(matches!(
        AfXdpNic::open_with("lo", 0, bad),
        Err(NicError::Unsupported(_))
    ));
    assert!(matches!(
        AfXdpNic::open("tas-no-such-if0", 0),
        Err(NicError::NoSuchInterface(_))
    ));
}

/// AF_PACKET on `xa`, AF_XDP on `xb`.
fn mixed(net: &TestNet, mode: XdpMode) -> (AfPacketNic, AfXdpNic) {
    net.veth("xa", "xb");
    net.run(|| {
        let b = AfXdpNic::open_with("xb", 0, xdp_cfg(mode)).expect("open AF_XDP");
        (AfPacketNic::open("xa").unwrap(), b)
    })
}

fn exchange_with_af_packet(mode: XdpMode) {
    let net = TestNet::new(if mode == XdpMode::Driver {
        "xdpdrv"
    } else {
        "xdpgen"
    });
    let (mut a, mut b) = mixed(&net, mode);
    assert_eq!(b.mode(), mode);
    assert_eq!(b.kind(), "af_xdp");
    check_arp_crosses(&mut a, &mut b);
    check_arp_crosses(&mut b, &mut a);
    check_batch_of_32(&mut a, &mut b);
    check_batch_of_32(&mut b, &mut a);
    check_many(&mut a, &mut b, 10, 64);
    check_many(&mut b, &mut a, 10, 64);
    let ks = b.kernel_stats().unwrap();
    assert_eq!(ks.rx_invalid_descs + ks.tx_invalid_descs, 0, "{ks:?}");
    assert_eq!(b.stats().rx_bad, 0);
}

#[test]
fn driver_mode_exchanges_frames_with_af_packet() {
    exchange_with_af_packet(XdpMode::Driver);
}

#[test]
fn generic_mode_exchanges_frames_with_af_packet() {
    exchange_with_af_packet(XdpMode::Generic);
}

#[test]
fn xdp_to_xdp_and_ring_wrap_around() {
    let net = TestNet::new("xdpxdp");
    net.veth("xa", "xb");
    // Small UMEM (32 RX + 32 TX chunks) so that the rings wrap many times.
    let small = AfXdpConfig {
        frames: 64,
        mode: None,
        shared: None,
    };
    let (mut a, mut b) = net.run(|| {
        (
            AfXdpNic::open_with("xa", 0, small).unwrap(),
            AfXdpNic::open_with("xb", 0, small).unwrap(),
        )
    });
    check_batch_of_32(&mut a, &mut b);
    check_many(&mut a, &mut b, 40, 24);
    check_many(&mut b, &mut a, 40, 24);
}

#[test]
fn big_batches_need_several_kicks() {
    // Copy mode sends at most 32 frames per kick; a batch of 200 must
    // still go out whole from one send().
    let net = TestNet::new("xdpbig");
    let (mut a, mut b) = mixed(&net, XdpMode::Generic);
    let frames: Vec<Vec<u8>> = (0..200)
        .map(|i| test_frame(a.mac(), b.mac(), i, 100))
        .collect();
    let mut batch = FrameBatch::new(200);
    for f in &frames {
        batch.push(f);
    }
    assert_eq!(b.send(&batch).unwrap(), 200);
    let got = recv_matching(&mut a, 200, Duration::from_secs(3), is_test_from(b.mac()));
    assert_eq!(got.len(), 200);
    assert_eq!(got, frames);
}

#[test]
fn interoperates_with_linux_kernel() {
    let net = TestNet::new("xdpkern");
    net.veth("xtas", "xlnx");
    let mut nic = net.run(|| AfXdpNic::open("xtas", 0).unwrap());
    check_kernel_interop(&net, "xlnx", &mut nic);
}

#[test]
fn drop_detaches_the_program() {
    let net = TestNet::new("xdpdet");
    net.veth("xa", "xb");
    let nic = net.run(|| AfXdpNic::open("xb", 0).unwrap());
    let shown = net.ip_output(&["link", "show", "dev", "xb"]);
    assert!(shown.contains("xdp"), "no XDP program on xb: {shown}");
    // A second socket cannot attach a second program.
    assert!(net.run(|| AfXdpNic::open("xb", 0)).is_err());
    drop(nic);
    let shown = net.ip_output(&["link", "show", "dev", "xb"]);
    assert!(
        !shown.contains("xdp"),
        "XDP program still attached: {shown}"
    );
    // And the interface can be opened again.
    let again = net.run(|| AfXdpNic::open("xb", 0));
    assert!(again.is_ok(), "{:?}", again.err());
}

fn xdp_attached(net: &TestNet, ifname: &str) -> bool {
    net.ip_output(&["link", "show", "dev", ifname])
        .contains("xdp")
}

/// `n` lanes on a 4-queue veth: lane `i` holds queues `i, i + n, ...`;
/// the kernel's flows spread over the lanes, each flow on one lane, each
/// frame once; every lane transmits, also from another thread. After
/// one lane is dropped the program stays attached and the other lanes
/// keep their flows; after the last one it is detached.
fn lanes_on_multiqueue_veth(tag: &str, n: usize, mode: Option<XdpMode>) {
    let net = TestNet::new(tag);
    net.veth_mq("xtas", "xlnx", 4);
    let cfg = AfXdpConfig {
        mode,
        ..AfXdpConfig::default()
    };
    let lanes = net.run(|| AfXdpNic::open_lanes_with("xtas", n, cfg).unwrap());
    assert_eq!(lanes.len(), n);
    for (i, l) in lanes.iter().enumerate() {
        let want: Vec<u32> = (0..4).filter(|q| *q as usize % n == i).collect();
        assert_eq!(l.queues(), want, "queues of lane {i}");
        assert_eq!(l.queue(), i as u32);
        if let Some(m) = mode {
            assert_eq!(l.mode(), m);
        }
    }
    assert!(xdp_attached(&net, "xtas"));
    let kmac = kernel_peer(&net, "xlnx", lanes[0].mac());
    let (lanes, _) = check_lane_flows(&net, lanes, 0, true);
    let mut lanes = check_lanes_transmit(&net, kmac, lanes);
    for l in &lanes {
        let ks = l.kernel_stats().unwrap();
        assert_eq!(ks.rx_invalid_descs + ks.tx_invalid_descs, 0, "{ks:?}");
        assert_eq!(l.stats().rx_bad, 0);
    }
    if n > 1 {
        // The dropped lane's queues go to the kernel; the others go on.
        drop(lanes.remove(0));
        assert!(xdp_attached(&net, "xtas"), "program detached too early");
        let (rest, lane_of) = check_lane_flows(&net, lanes, 1, false);
        for i in 0..rest.len() {
            assert!(
                lane_of.values().any(|&l| l == i),
                "lane {} got nothing after lane 0 was dropped: {lane_of:?}",
                i + 1
            );
        }
        lanes = check_lanes_transmit(&net, kmac, rest);
    }
    drop(lanes);
    assert!(!xdp_attached(&net, "xtas"), "XDP program still attached");
    // And the interface can be opened again.
    let again = net.run(|| AfXdpNic::open_lanes("xtas", n));
    assert!(again.is_ok(), "{:?}", again.err());
}

#[test]
fn one_lane_reads_every_queue() {
    lanes_on_multiqueue_veth("xlane1", 1, None);
}

#[test]
fn two_lanes_split_flows() {
    lanes_on_multiqueue_veth("xlane2", 2, None);
}

#[test]
fn four_lanes_split_flows() {
    lanes_on_multiqueue_veth("xlane4", 4, None);
}

#[test]
fn one_lane_reads_every_queue_in_generic_mode() {
    lanes_on_multiqueue_veth("xlaneg1", 1, Some(XdpMode::Generic));
}

#[test]
fn lanes_need_enough_queues() {
    let net = TestNet::new("xlaneq");
    net.veth("xa", "xb");
    let err = net
        .run(|| AfXdpNic::open_lanes("xa", 2))
        .err()
        .expect("2 lanes on a 1-queue veth")
        .to_string();
    assert!(err.contains("xa has 1 RX queue but"), "{err}");
    assert!(err.contains("numrxqueues 2"), "{err}");
    assert!(err.contains("af_packet"), "{err}");
    assert!(net.run(|| AfXdpNic::open_lanes("xa", 0)).is_err());
    assert!(!xdp_attached(&net, "xa"));
    // One lane on one queue is a plain socket.
    let mut lanes = net.run(|| AfXdpNic::open_lanes("xa", 1).unwrap());
    assert_eq!(lanes[0].queues(), vec![0]);
    let mut b = net.run(|| AfPacketNic::open("xb").unwrap());
    check_batch_of_32(&mut lanes[0], &mut b);
    check_batch_of_32(&mut b, &mut lanes[0]);
    // The single-socket open still works beside lanes of another link.
    net.veth_mq("xc", "xd", 2);
    let single = net.run(|| AfXdpNic::open("xc", 1).unwrap());
    assert_eq!(single.queues(), vec![1]);
    assert_eq!(net.run(|| linux::rx_queues("xc").unwrap()), Some(2));
    assert_eq!(net.run(|| linux::rx_queues("xa").unwrap()), Some(1));
    assert!(matches!(
        net.run(|| linux::rx_queues("tas-no-such-if0")),
        Err(NicError::NoSuchInterface(_))
    ));
}

/// Frames received in place through `nic` (as `recv_matching`, without
/// the copy into a `FrameBatch`): each call of the callback sees frames
/// still in the UMEM.
fn recv_in_place_matching(
    nic: &mut AfXdpNic,
    want: usize,
    timeout: Duration,
    keep: impl Fn(&[u8]) -> bool,
) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + timeout;
    while got.len() < want && std::time::Instant::now() < deadline {
        let mut seen = 0;
        let n = nic
            .recv_in_place(16, &mut |frames| {
                assert!(!frames.is_empty() && frames.len() <= 16);
                seen += frames.len();
                got.extend(frames.iter().filter(|f| keep(f)).map(|f| f.to_vec()));
            })
            .expect("AF_XDP receives in place")
            .expect("recv_in_place");
        assert_eq!(n, seen);
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    got
}

/// In-place receive (issue 15, item 3): frames arrive byte-identical and in
/// order, and the chunks lent to the callback go back to the fill ring —
/// with 32 RX chunks, 40 rounds of 24 frames only arrive if every chunk
/// is recycled many times.
#[test]
fn receive_in_place_recycles_every_chunk() {
    let net = TestNet::new("xdpinpl");
    net.veth("xa", "xb");
    let small = AfXdpConfig {
        frames: 64,
        mode: None,
        shared: None,
    };
    let (mut a, mut b) = net.run(|| {
        (
            AfPacketNic::open("xa").unwrap(),
            AfXdpNic::open_with("xb", 0, small).unwrap(),
        )
    });
    let (am, bm) = (a.mac(), b.mac());
    let mut next = 0u32;
    for r in 0..40u32 {
        let frames: Vec<Vec<u8>> = (0..24u32)
            .map(|i| test_frame(bm, am, r * 24 + i, 60 + ((r * 24 + i) as usize * 53) % 1455))
            .collect();
        send_all(&mut a, &frames);
        let got = recv_in_place_matching(&mut b, 24, Duration::from_secs(3), is_test_from(am));
        assert_eq!(got.len(), 24, "round {r}: lost frames");
        for g in got {
            let seq = u32::from_be_bytes([g[14], g[15], g[16], g[17]]);
            assert_eq!(seq, next, "out of order");
            assert_eq!(g, frames[(seq - r * 24) as usize]);
            next += 1;
        }
    }
    assert_eq!(b.stats().rx_bad, 0);
    assert!(b.stats().rx_frames >= 960);
    // A zero budget takes nothing, and the copying path still works.
    assert_eq!(
        b.recv_in_place(0, &mut |_| panic!("no frames"))
            .unwrap()
            .unwrap(),
        0
    );
    check_batch_of_32(&mut a, &mut b);
}
