//! tasd beside the kernel on one interface and one address (shared mode):
//! the kernel owns 198.18.0.1 on veth-tas, answers ping and serves a
//! kernel program on port 8000, while a redis-server under the shim
//! listens on 6379 of the same address through TAS. After tasd exits,
//! nothing of it is left on the interface and the port is the kernel's
//! again (also after a SIGKILL, once the next tasd started). ICMP errors
//! for TAS's connections reach TAS (path MTU through `impair --mtu`, a
//! rejected connect), and neighbours are resolved by the kernel.

use std::path::Path;
use std::time::Duration;
use tas_system_tests::*;
use tasd::ctlsock::Status;
use tasd::stack::FlowDetail;

fn sh(tb: &mut Testbed, tas_side: bool, script: &str) -> std::process::Output {
    let args = ["-c", script];
    if tas_side {
        tb.run_tas(Path::new("/bin/sh"), &args, Duration::from_secs(60))
    } else {
        tb.run_lnx(Path::new("/bin/sh"), &args, Duration::from_secs(60))
    }
}

#[test]
fn shared_mode_serves_tas_ports_and_leaves_the_rest_to_the_kernel() {
    shared_mode("shr", Backend::AfXdp);
}

/// The same over AF_PACKET: its sockets see every frame, a tcx ingress
/// filter keeps TAS's frames from the kernel stack, and tasd leaves the
/// kernel's frames alone (no RST, no echo reply).
#[test]
fn shared_mode_over_af_packet() {
    shared_mode("shrp", Backend::AfPacket);
}

fn shared_mode(tag: &str, backend: Backend) {
    ensure_packages(&[
        ("command -v redis-server", "redis-server"),
        ("command -v redis-benchmark", "redis-tools"),
        ("command -v curl", "curl"),
        ("command -v python3", "python3"),
        ("command -v ping", "iputils-ping"),
    ]);
    let mut tb = Testbed::hosts(tag);
    let o = sh(&mut tb, true, "ip addr add 198.18.0.1/24 dev veth-tas");
    assert_ok(&o, "ip addr add");
    tb.start_tasd(backend, &[]);
    let o = tb.tasctl(&["--json", "status"]);
    assert_ok(&o, "tasctl status");
    let st: Status = serde_json::from_slice(&o.stdout).expect("status JSON");
    assert_eq!(st.mode, "shared", "{st:?}");

    // A kernel web server on 8000 with a 5 MB file.
    let dir = std::env::temp_dir().join(format!("tas-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("blob"), &data).unwrap();
    tb.spawn_tas(
        Path::new("python3"),
        &[
            "-u",
            "-m",
            "http.server",
            "8000",
            "--bind",
            TAS_IP,
            "--directory",
            dir.to_str().unwrap(),
        ],
        Some("Serving HTTP"),
    );
    // redis-server under the shim on 6379 of the same address.
    let shim = bin_dir().join("libtas_preload.so");
    tb.spawn_tas(
        Path::new("/usr/bin/env"),
        &[
            &format!("LD_PRELOAD={}", shim.display()),
            "redis-server",
            "--port",
            "6379",
            "--bind",
            TAS_IP,
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            "",
        ],
        Some("Ready to accept connections"),
    );

    // From the Linux host: ping (kernel), the file over HTTP (kernel),
    // redis (TAS), at the same time.
    let o = sh(&mut tb, false, &format!("ping -c 3 -i 0.2 -W 2 {TAS_IP}"));
    assert_ok(&o, "ping the shared address");
    let o = sh(
        &mut tb,
        false,
        &format!(
            "redis-benchmark -h {TAS_IP} -p 6379 -n 5000 -c 10 -t set,get -q --csv & \
             curl -sS --max-time 30 http://{TAS_IP}:8000/blob | sha256sum; wait"
        ),
    );
    assert_ok(&o, "curl + redis-benchmark");
    let out = stdout(&o);
    let want = sha256(&dir.join("blob"));
    assert!(out.contains(&want), "kernel HTTP transfer corrupted: {out}");
    assert!(
        out.contains("\"SET\"") && out.contains("\"GET\""),
        "redis-benchmark through TAS: {out}\n{}",
        stderr(&o)
    );
    let o = sh(
        &mut tb,
        false,
        &format!("redis-cli -h {TAS_IP} -p 6379 set k v && redis-cli -h {TAS_IP} -p 6379 get k"),
    );
    assert_ok(&o, "redis-cli");
    assert!(stdout(&o).contains('v'), "{}", stdout(&o));

    // TAS carried redis only.
    let o = tb.tasctl(&["--json", "flows"]);
    let flows: Vec<FlowDetail> = serde_json::from_slice(&o.stdout).expect("flows JSON");
    assert!(
        flows.iter().any(|f| f.local.ends_with(":6379")),
        "no redis flow in tasctl flows: {flows:?}"
    );
    assert!(
        flows.iter().all(|f| f.local.ends_with(":6379")),
        "tasctl flows shows more than redis: {flows:?}"
    );
    assert!(tb.tasd_counter("slowpath.accepted") >= 10);
    // A kernel program cannot take the port TAS listens on.
    let bind = |tb: &mut Testbed| {
        sh(
            tb,
            true,
            &format!(
                "python3 -c 'import socket; s=socket.socket(); s.bind((\"{TAS_IP}\", 6379)); print(\"bound\")'"
            ),
        )
    };
    let o = bind(&mut tb);
    assert!(
        !o.status.success() && stderr(&o).contains("Address already in use"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    // An active open from TAS (its local port comes from the reserved
    // range, which the XDP program steers to TAS): 10 MB verified.
    tb.spawn_lnx(
        &bin("peer"),
        &["serve-send", "7100", "10000000", "5"],
        Some("listening"),
    );
    let o = tb.run_tas(
        &bin("peer"),
        &["--tas", "connect-recv", LNX_IP, "7100", "10000000", "5"],
        Duration::from_secs(60),
    );
    assert_ok(&o, "TAS connect-recv from the Linux host");
    let o = sh(
        &mut tb,
        true,
        "cat /proc/sys/net/ipv4/ip_local_reserved_ports",
    );
    assert!(stdout(&o).contains("61000-64999"), "{}", stdout(&o));
    // tasd exits: the port is the kernel's again, no XDP program is left.
    assert!(tb.stop_tasd(), "tasd did not stop cleanly");
    let o = bind(&mut tb);
    assert!(stdout(&o).contains("bound"), "{}{}", stdout(&o), stderr(&o));
    // And its frames reach the kernel again (no XDP program or tc filter
    // left behind): a kernel server on 6379 answers the Linux host.
    tb.spawn_tas(
        Path::new("python3"),
        &[
            "-u",
            "-m",
            "http.server",
            "6379",
            "--bind",
            TAS_IP,
            "--directory",
            dir.to_str().unwrap(),
        ],
        Some("Serving HTTP"),
    );
    let o = sh(
        &mut tb,
        false,
        &format!("curl -sS --max-time 10 http://{TAS_IP}:6379/blob | sha256sum"),
    );
    assert!(stdout(&o).contains(&want), "{}{}", stdout(&o), stderr(&o));
    let o = sh(&mut tb, true, "ip link show veth-tas");
    assert!(!stdout(&o).contains("xdp"), "{}", stdout(&o));
    let o = sh(
        &mut tb,
        true,
        "cat /proc/sys/net/ipv4/ip_local_reserved_ports",
    );
    assert!(!stdout(&o).contains("61000-64999"), "{}", stdout(&o));
    let o = sh(&mut tb, false, &format!("ping -c 1 -W 2 {TAS_IP}"));
    assert_ok(&o, "ping after tasd exits");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sharing the kernel's address over DPDK is refused with one line that
/// says why (it would need rte_flow isolation); `--exclusive` takes the interface
/// as before.
#[test]
fn shared_mode_needs_af_xdp_and_exclusive_is_explicit() {
    let mut tb = Testbed::hosts("shr2");
    let o = sh(&mut tb, true, "ip addr add 198.18.0.1/24 dev veth-tas");
    assert_ok(&o, "ip addr add");
    let sock = tb.dir.join("x.sock");
    let o = tb.run_tas(
        &bin("tasd"),
        &[
            "--ip",
            "198.18.0.1/24",
            "--iface",
            "veth-tas",
            "--nic",
            "dpdk",
            "--socket",
            sock.to_str().unwrap(),
        ],
        Duration::from_secs(20),
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("needs --nic af_xdp or af_packet")
            && err.contains("rte_flow isolation")
            && err.trim().lines().count() == 1,
        "{err}"
    );
    tb.start_tasd(Backend::AfPacket, &["--exclusive"]);
    let o = tb.tasctl(&["--json", "status"]);
    let st: Status = serde_json::from_slice(&o.stdout).expect("status JSON");
    assert_eq!(st.mode, "exclusive", "{st:?}");
}

/// ICMP errors for TAS's connections reach TAS in shared mode (the XDP
/// program steers them; the kernel's own ICMP stays the kernel's): through
/// a router hop of MTU 1000 that answers bigger DF packets with
/// fragmentation needed (`impair --mtu`), a TAS->Linux transfer lowers its
/// MSS (RFC 1191) and completes byte for byte — without it every
/// full-sized segment vanishes and the transfer times out; and a firewall
/// rejecting SYNs to a port with ICMP port unreachable fails TAS's
/// connect at once with ECONNREFUSED, as Linux's (not after 25 s of SYN
/// retransmissions).
#[test]
fn shared_mode_icmp_errors_reach_tas() {
    icmp_errors("impicmp", Backend::AfXdp);
}

/// The same over AF_PACKET (tasd sees a copy of every ICMP frame; the tc
/// filter keeps those about TAS's connections from the kernel).
#[test]
fn shared_mode_icmp_errors_reach_tas_over_af_packet() {
    icmp_errors("impicmpp", Backend::AfPacket);
}

fn icmp_errors(tag: &str, backend: Backend) {
    let mut tb = Testbed::bridged(tag);
    let o = sh(&mut tb, true, "ip addr add 198.18.0.1/24 dev veth-tas");
    assert_ok(&o, "ip addr add");
    tb.start_tasd(backend, &[]);
    let fwd = tb.start_impair_with(
        &tas_system_tests::impair::Impairment::NONE,
        1,
        &["--mtu", "1000", "--reject-port", "7301"],
    );
    tb.spawn_lnx(
        &bin("peer"),
        &["recv", "7300", "3000000", "7"],
        Some("listening"),
    );
    let o = tb.run_tas(
        &bin("peer"),
        &["--tas", "send", LNX_IP, "7300", "3000000", "7"],
        Duration::from_secs(60),
    );
    assert_ok(&o, "TAS send through the MTU-1000 hop");
    assert!(stdout(&o).contains("sent"), "{}", stdout(&o));
    assert!(
        tb.tasd_counter("slowpath.icmp_pmtu_updates") >= 1,
        "no path MTU update:\n{}",
        tb.tasd_log()
    );
    let t = std::time::Instant::now();
    let o = tb.run_tas(
        &bin("peer"),
        &["--tas", "connect", LNX_IP, "7301"],
        Duration::from_secs(60),
    );
    assert_ok(&o, "TAS connect to the rejected port");
    assert!(
        stdout(&o).contains(&format!("error {}", libc::ECONNREFUSED)),
        "{}",
        stdout(&o)
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(tb.tasd_counter("slowpath.icmp_conn_errors") >= 1);
    let c = tb.stop_impair(fwd);
    eprintln!("{c:?}");
}

/// After tasd is killed outright (SIGKILL: no Drop runs), the next tasd
/// in the namespace gives the kernel its reserved ports back (from the
/// record in the run dir) and nothing of the dead one is left on the
/// interface: no XDP program or tc filter (they hung on the process's
/// links), so the kernel serves the port TAS listened on again.
#[test]
fn shared_mode_leftovers_of_a_killed_tasd_are_removed() {
    for backend in [Backend::AfXdp, Backend::AfPacket] {
        let mut tb = Testbed::hosts("shrk");
        let o = sh(&mut tb, true, "ip addr add 198.18.0.1/24 dev veth-tas");
        assert_ok(&o, "ip addr add");
        let reserved = |tb: &mut Testbed| {
            stdout(&sh(
                tb,
                true,
                "cat /proc/sys/net/ipv4/ip_local_reserved_ports",
            ))
        };
        let before = reserved(&mut tb);
        assert!(!before.contains("61000-64999"), "{before}");
        tb.start_tasd(backend, &[]);
        tb.spawn_tas(
            &bin("peer"),
            &["--tas", "recv", "6390", "1000", "1"],
            Some("listening"),
        );
        assert!(reserved(&mut tb).contains("61000-64999"));
        let pid = tb.tasd_pid().expect("tasd pid");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let _ = tb.stop_tasd();
        assert!(
            reserved(&mut tb).contains("61000-64999"),
            "SIGKILL leaves the reservation (else this test shows nothing)"
        );
        // The next start (exclusive here: it reserves nothing itself).
        tb.start_tasd(backend, &["--exclusive"]);
        assert_eq!(reserved(&mut tb), before, "{backend:?}");
        assert!(tb.tasd_log().contains("which is gone"), "{}", tb.tasd_log());
        assert!(tb.stop_tasd());
        let o = sh(
            &mut tb,
            true,
            "ip link show veth-tas; tc filter show dev veth-tas ingress",
        );
        assert!(!stdout(&o).contains("xdp"), "{}", stdout(&o));
        let dir = tb.dir.clone();
        std::fs::write(dir.join("f"), b"kernel again").unwrap();
        tb.spawn_tas(
            Path::new("python3"),
            &[
                "-u",
                "-m",
                "http.server",
                "6390",
                "--bind",
                TAS_IP,
                "--directory",
                dir.to_str().unwrap(),
            ],
            Some("Serving HTTP"),
        );
        let o = sh(
            &mut tb,
            false,
            &format!("curl -sS --max-time 10 http://{TAS_IP}:6390/f"),
        );
        assert!(
            stdout(&o).contains("kernel again"),
            "{backend:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
    }
}

/// Shared mode takes its neighbours from the kernel (rtnetlink): a TAS
/// active open to a host the kernel has never talked to makes the kernel
/// resolve it (tasd sends no ARP request of its own), and the transfer
/// goes through; the kernel's table then has the host.
#[test]
fn shared_mode_neighbours_come_from_the_kernel() {
    let mut tb = Testbed::hosts("shrn");
    let o = sh(&mut tb, true, "ip addr add 198.18.0.1/24 dev veth-tas");
    assert_ok(&o, "ip addr add");
    tb.start_tasd(Backend::AfXdp, &[]);
    let o = sh(
        &mut tb,
        true,
        "ip neigh flush dev veth-tas; ip neigh show dev veth-tas",
    );
    assert!(!stdout(&o).contains(LNX_IP), "{}", stdout(&o));
    tb.spawn_lnx(
        &bin("peer"),
        &["serve-send", "7200", "1000000", "3"],
        Some("listening"),
    );
    let o = tb.run_tas(
        &bin("peer"),
        &["--tas", "connect-recv", LNX_IP, "7200", "1000000", "3"],
        Duration::from_secs(30),
    );
    assert_ok(&o, "TAS connect-recv");
    assert_eq!(tb.tasd_counter("slowpath.arp_requests_sent"), 0);
    assert!(tb.tasd_counter("slowpath.arp_kernel_resolves") >= 1);
    let o = sh(
        &mut tb,
        true,
        &format!("ip neigh show {LNX_IP} dev veth-tas"),
    );
    assert!(stdout(&o).contains("lladdr"), "{}", stdout(&o));
}
