use super::*;
use crate::af_packet::AfPacketNic;
use crate::testnet::*;
use std::time::Duration;

fn cfg(vdev: LinuxVdev) -> DpdkConfig {
    DpdkConfig {
        vdev,
        ..DpdkConfig::default()
    }
}

/// DPDK on `da`, an AF_PACKET socket on `db`, a veth pair between.
fn pair(net: &TestNet, vdev: LinuxVdev) -> (DpdkNic, AfPacketNic) {
    net.veth("da", "db");
    net.run(|| {
        let d = DpdkNic::open_with(Some("da"), &[], &cfg(vdev))
            .unwrap_or_else(|e| panic!("open {vdev:?} on da: {e}"));
        let p = AfPacketNic::open("db").unwrap();
        (d, p)
    })
}

fn batch_of_32(tag: &str, vdev: LinuxVdev) {
    let net = TestNet::new(tag);
    let (mut d, mut p) = pair(&net, vdev);
    assert_eq!(d.kind(), "dpdk");
    check_batch_of_32(&mut d, &mut p);
    check_batch_of_32(&mut p, &mut d);
    let st = d.stats();
    assert_eq!(st.tx_frames, 32);
    assert_eq!(st.rx_bad, 0);
    assert_eq!(st.tx_dropped, 0);
    let ps = d.port_stats().unwrap();
    assert_eq!(ps.opackets, 32, "{ps:?}");
    assert!(ps.ipackets >= 32, "{ps:?}");
}

#[test]
fn af_xdp_batch_of_32_arrives_in_order() {
    batch_of_32("dx32", LinuxVdev::AfXdp);
}

#[test]
fn af_packet_batch_of_32_arrives_in_order() {
    batch_of_32("dp32", LinuxVdev::AfPacket);
}

#[test]
fn af_xdp_many_batches_wrap_the_rings() {
    let net = TestNet::new("dxwrap");
    net.veth("da", "db");
    let small = DpdkConfig {
        rx_desc: 64,
        tx_desc: 64,
        ..DpdkConfig::default()
    };
    let (mut d, mut p) = net.run(|| {
        (
            DpdkNic::open_with(Some("da"), &[], &small).unwrap(),
            AfPacketNic::open("db").unwrap(),
        )
    });
    check_many(&mut d, &mut p, 30, 48);
    check_many(&mut p, &mut d, 30, 48);
}

#[test]
fn af_packet_many_batches_wrap_the_rings() {
    let net = TestNet::new("dpwrap");
    let (mut d, mut p) = pair(&net, LinuxVdev::AfPacket);
    check_many(&mut d, &mut p, 30, 48);
    check_many(&mut p, &mut d, 30, 48);
}

#[test]
fn arp_crosses_both_ways() {
    for (tag, vdev) in [("dxarp", LinuxVdev::AfXdp), ("dparp", LinuxVdev::AfPacket)] {
        let net = TestNet::new(tag);
        let (mut d, mut p) = pair(&net, vdev);
        check_arp_crosses(&mut d, &mut p);
        check_arp_crosses(&mut p, &mut d);
    }
}

#[test]
fn reports_mac_and_mtu_of_the_interface() {
    for (tag, vdev) in [
        ("dxinfo", LinuxVdev::AfXdp),
        ("dpinfo", LinuxVdev::AfPacket),
    ] {
        let net = TestNet::new(tag);
        net.veth("da", "db");
        net.ip(&[
            "link",
            "set",
            "da",
            "mtu",
            "1400",
            "address",
            "02:11:22:33:44:55",
        ]);
        let nic = net.run(|| DpdkNic::open_with(Some("da"), &[], &cfg(vdev)).unwrap());
        assert_eq!(nic.mac(), [0x02, 0x11, 0x22, 0x33, 0x44, 0x55], "{vdev:?}");
        assert_eq!(nic.mtu(), 1400, "{vdev:?}");
        assert_eq!(nic.wait_fd(), None, "poll mode");
        assert_eq!(nic.driver_name(), vdev.driver());
        assert!(nic.device_name().starts_with(vdev.driver()));
    }
}

#[test]
fn oversized_and_runt_frames_are_dropped_not_sent() {
    let net = TestNet::new("dxbig");
    let (mut d, mut p) = pair(&net, LinuxVdev::AfXdp);
    let big = test_frame(p.mac(), d.mac(), 1, 1600);
    let ok = test_frame(p.mac(), d.mac(), 2, 100);
    let runt = vec![0u8; 10];
    let ok2 = test_frame(p.mac(), d.mac(), 3, 1514);
    send_all(&mut d, &[big, ok.clone(), runt, ok2.clone()]);
    assert_eq!(d.stats().tx_dropped, 2);
    assert_eq!(d.stats().tx_frames, 2);
    let got = recv_matching(&mut p, 3, Duration::from_millis(500), is_test_from(d.mac()));
    assert_eq!(got, vec![ok, ok2]);
}

#[test]
fn small_batches_keep_extra_frames_for_the_next_recv() {
    // A batch with room for 3 still gets every frame, in order: the
    // driver is asked for 8 and the rest wait in the stash.
    let net = TestNet::new("dxsmall");
    let (mut d, mut p) = pair(&net, LinuxVdev::AfXdp);
    let frames: Vec<Vec<u8>> = (0..20)
        .map(|i| test_frame(d.mac(), p.mac(), i, 80))
        .collect();
    send_all(&mut p, &frames);
    std::thread::sleep(Duration::from_millis(50));
    let mut got = Vec::new();
    let mut b = FrameBatch::new(3);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while got.len() < 20 && std::time::Instant::now() < deadline {
        b.clear();
        d.recv(&mut b).unwrap();
        assert!(b.len() <= 3);
        got.extend(
            b.iter()
                .filter(|f| is_test_from(p.mac())(f))
                .map(|f| f.to_vec()),
        );
    }
    assert_eq!(got, frames);
}

#[test]
fn interoperates_with_linux_kernel() {
    let net = TestNet::new("dxkern");
    net.veth("da", "db");
    let mut nic = net.run(|| DpdkNic::open(Some("da"), &[]).unwrap());
    check_kernel_interop(&net, "db", &mut nic);
}

#[test]
fn unknown_interface_is_an_error() {
    let net = TestNet::new("dxnone");
    // Start the EAL (if no other test has) so that the lookup is reached.
    net.veth("da", "db");
    let mut d = net.run(|| DpdkNic::open(Some("da"), &[]).unwrap());
    for name in ["tas-no-such-if0", "a/b", "da,iface=lo"] {
        match net.run(|| DpdkNic::open(Some(name), &[])) {
            Err(NicError::NoSuchInterface(n)) => assert_eq!(n, name),
            Err(e) => panic!("{name}: unexpected error {e}"),
            Ok(_) => panic!("{name}: opened?"),
        }
    }
    // The same interface twice: refused before anything is set up (the
    // driver would detach the first one's XDP program when it fails).
    let err = net
        .run(|| DpdkNic::open(Some("da"), &[]))
        .err()
        .expect("two XDP sockets on one queue?")
        .to_string();
    assert!(err.contains("already has an XDP program"), "{err}");
    let mut p = net.run(|| AfPacketNic::open("db").unwrap());
    check_batch_of_32(&mut d, &mut p);
    check_batch_of_32(&mut p, &mut d);
    // Other EAL arguments than the running EAL's are refused, clearly.
    let err = net
        .run(|| DpdkNic::open(Some("da"), &["-l".into(), "0".into()]))
        .err()
        .expect("different EAL args accepted")
        .to_string();
    assert!(err.contains("already runs"), "{err}");
}

#[test]
fn leaves_an_interface_with_another_xdp_user_alone() {
    // Another AF_XDP user (this workspace's own backend) on `da`: DPDK
    // refuses the interface, and the other one keeps receiving.
    let net = TestNet::new("dxother");
    net.veth("da", "db");
    let (mut x, mut p) = net.run(|| {
        (
            super::super::af_xdp::AfXdpNic::open("da", 0).unwrap(),
            AfPacketNic::open("db").unwrap(),
        )
    });
    let err = net
        .run(|| DpdkNic::open(Some("da"), &[]))
        .err()
        .expect("opened an interface with an XDP program")
        .to_string();
    assert!(err.contains("already has an XDP program"), "{err}");
    check_batch_of_32(&mut p, &mut x);
}

#[test]
fn nics_can_be_opened_again_after_close() {
    let net = TestNet::new("dxreopen");
    net.veth("da", "db");
    for round in 0..3 {
        let (mut d, mut p) = net.run(|| {
            (
                DpdkNic::open(Some("da"), &[]).unwrap(),
                AfPacketNic::open("db").unwrap(),
            )
        });
        check_many(&mut d, &mut p, 1, 8);
        check_many(&mut p, &mut d, 1, 8);
        // Dropped here, outside the namespace: closing goes back into it.
        let _ = round;
    }
}

/// Runs test `name` of this test binary in a child process (the EAL can
/// start only once per process) with `TAS_DPDK_CHILD` and `env` set.
fn run_child(name: &str, env: &[(&str, &str)]) {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            &format!("dpdk::tests::{name}"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TAS_DPDK_CHILD", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child {name} failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "child {name} ran no test:\n{text}"
    );
}

use tas_testkit::netns::in_netns;

#[test]
fn eal_start_failures_are_explained() {
    run_child("child_eal_start_failures", &[]);
}

#[test]
#[ignore = "run in a child process by eal_start_failures_are_explained"]
fn child_eal_start_failures() {
    if std::env::var_os("TAS_DPDK_CHILD").is_none() {
        return;
    }
    let err = DpdkNic::open(None, &[]).err().unwrap().to_string();
    assert!(err.contains("give an interface name"), "{err}");
    let bad = vec!["--no-huge".to_string(), "--no-such-eal-option".to_string()];
    let err = DpdkNic::open(None, &bad).err().unwrap().to_string();
    assert!(
        err.contains("rte_eal_init")
            && err.contains("--no-such-eal-option")
            && err.contains("--dpdk-args"),
        "{err}"
    );
    // The EAL cannot be started again: every later open says why.
    let err2 = DpdkNic::open(Some("lo"), &[]).err().unwrap().to_string();
    assert_eq!(err2, err);
}

/// Explicit EAL arguments (as for a real NIC) are passed through: here
/// they create a net_af_packet device themselves, and the port is named
/// by its DPDK name; a Linux interface that is no DPDK port still gets a
/// hot-plugged net_af_xdp device on that EAL.
#[test]
fn explicit_eal_args_are_passed_through() {
    let net = TestNet::new("dxargs");
    net.veth("da", "db");
    net.veth("dc", "dd");
    run_child("child_explicit_eal_args", &[("TAS_DPDK_NS", &net.ns)]);
}

#[test]
#[ignore = "run in a child process by explicit_eal_args_are_passed_through"]
fn child_explicit_eal_args() {
    let Some(ns) = std::env::var_os("TAS_DPDK_CHILD").and(std::env::var("TAS_DPDK_NS").ok()) else {
        return;
    };
    let args: Vec<String> = [
        "--no-huge",
        "--no-pci",
        "--no-shconf",
        "--no-telemetry",
        "-m",
        "256",
        "-l",
        "0",
        "--log-level=warning",
        "--vdev=net_af_packet7,iface=da",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    in_netns(&ns, || {
        let mut d = DpdkNic::open(Some("net_af_packet7"), &args).unwrap();
        assert_eq!(d.driver_name(), "net_af_packet");
        assert!(d.vdev.is_none(), "the EAL made this device, not us");
        let mut p = AfPacketNic::open("db").unwrap();
        check_batch_of_32(&mut d, &mut p);
        check_batch_of_32(&mut p, &mut d);
        // Taken already.
        let err = DpdkNic::open(Some("net_af_packet7"), &args).err().unwrap();
        assert!(err.to_string().contains("already open"), "{err}");
        // No port left to pick without a name.
        let err = DpdkNic::open(None, &args).err().unwrap();
        assert!(err.to_string().contains("no free DPDK port"), "{err}");
        // A Linux interface on the same EAL.
        let mut x = DpdkNic::open(Some("dc"), &args).unwrap();
        assert_eq!(x.driver_name(), "net_af_xdp");
        let mut q = AfPacketNic::open("dd").unwrap();
        check_batch_of_32(&mut x, &mut q);
        check_batch_of_32(&mut q, &mut x);
    });
}

/// net_af_xdp on a 4-queue veth: one device per queue, every flow of the
/// kernel received (each datagram once), transmission works, and
/// closing detaches the XDP program.
#[test]
fn af_xdp_reads_every_queue_of_a_multiqueue_interface() {
    let net = TestNet::new("dxmq");
    net.veth_mq("da", "db", 4);
    let nic = net.run(|| DpdkNic::open(Some("da"), &[]).unwrap());
    assert_eq!(nic.devices(), 4);
    let kmac = kernel_peer(&net, "db", nic.mac());
    let (nics, _) = check_lane_flows(&net, vec![nic], 0, true);
    let nics = check_lanes_transmit(&net, kmac, nics);
    let st = nics[0].stats();
    assert_eq!(st.rx_bad, 0);
    let ps = nics[0].port_stats().unwrap();
    assert!(ps.ipackets >= st.rx_frames, "{ps:?} {st:?}");
    drop(nics);
    let shown = net.ip_output(&["link", "show", "dev", "da"]);
    assert!(
        !shown.contains("xdp"),
        "XDP program still attached: {shown}"
    );
    // Naming the queue opens that one only.
    let c = DpdkConfig {
        vdev_args: "start_queue=0".into(),
        ..DpdkConfig::default()
    };
    let one = net.run(|| DpdkNic::open_with(Some("da"), &[], &c).unwrap());
    assert_eq!(one.devices(), 1);
    drop(one);
    // Right after a close the queues may still be held: opened anyway.
    let again = net.run(|| DpdkNic::open(Some("da"), &[]).unwrap());
    assert_eq!(again.devices(), 4);
    check_lane_flows(&net, vec![again], 1, true);
}
