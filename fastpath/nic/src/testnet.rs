//! Test network harness for the backends' tests: a private network namespace
//! with veth pairs (removed on drop, even when a test panics), frame builders
//! and the checks every backend runs (ARP across a link, batches, lanes).

use crate::{FrameBatch, Nic};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub(crate) use tas_testkit::netns::require_root;

/// A uniquely named network namespace, deleted on drop (with every veth
/// pair inside it), even when the test panics.
pub(crate) struct TestNet {
    pub(crate) ns: String,
}

impl TestNet {
    pub(crate) fn new(tag: &str) -> TestNet {
        require_root(tag);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let ns = format!("tasnic-{tag}-{}-{n}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &ns])
            .output()
            .expect("running `ip` (iproute2) failed; is it installed?");
        assert!(
            out.status.success(),
            "ip netns add {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let net = TestNet { ns };
        net.ip(&["link", "set", "lo", "up"]);
        // No IPv6 on the test links: no NDP/MLD chatter in the captures.
        net.run(|| {
            for p in ["all", "default"] {
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{p}/disable_ipv6"), "1");
            }
        });
        net
    }

    /// `ip -n NS ARGS...`, panicking with ip's message on failure.
    pub(crate) fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["-n", &self.ns])
            .args(args)
            .output()
            .expect("running `ip` failed");
        assert!(
            out.status.success(),
            "ip -n {} {}: {}",
            self.ns,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates an up veth pair `a`–`b` inside the namespace.
    pub(crate) fn veth(&self, a: &str, b: &str) {
        self.ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
        self.ip(&["link", "set", a, "up"]);
        self.ip(&["link", "set", b, "up"]);
    }

    /// Runs `f` on a thread that has entered the namespace. Sockets made
    /// there belong to the namespace and can be used from any thread.
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        tas_testkit::netns::in_netns(&self.ns, f)
    }

    /// Output of `ip -n NS ARGS...`.
    pub(crate) fn ip_output(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.ns])
            .args(args)
            .output()
            .expect("running `ip` failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

pub(crate) const TEST_ETHERTYPE: u16 = 0x88b5; // IEEE local experimental

/// An Ethernet frame of `len` bytes with TEST_ETHERTYPE, carrying `seq`
/// and a pattern derived from it.
pub(crate) fn test_frame(dst: [u8; 6], src: [u8; 6], seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&TEST_ETHERTYPE.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    let mut i = 0u32;
    while f.len() < len {
        f.push((seq.wrapping_mul(31).wrapping_add(i) & 0xff) as u8);
        i += 1;
    }
    f
}

/// A broadcast ARP request "who has `tpa`? tell `spa`".
pub(crate) fn arp_request(sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa);
    f
}

/// Sends all of `frames` through `nic`, retrying while the ring is full
/// (bounded to 2 s).
pub(crate) fn send_all(nic: &mut dyn Nic, frames: &[Vec<u8>]) {
    let mut batch = FrameBatch::new(frames.len().max(1));
    for f in frames {
        assert!(batch.push(f));
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while !batch.is_empty() {
        let n = nic.send(&batch).expect("send");
        batch.consume_front(n);
        assert!(Instant::now() < deadline, "send: ring stayed full for 2 s");
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Receives frames through `nic` until `want` of them match `keep`, or
/// `timeout` passes. Returns the matching frames in arrival order.
pub(crate) fn recv_matching(
    nic: &mut dyn Nic,
    want: usize,
    timeout: Duration,
    keep: impl Fn(&[u8]) -> bool,
) -> Vec<Vec<u8>> {
    let mut batch = FrameBatch::new(64);
    let mut got = Vec::new();
    let deadline = Instant::now() + timeout;
    while got.len() < want && Instant::now() < deadline {
        batch.clear();
        let n = nic.recv(&mut batch).expect("recv");
        got.extend(batch.iter().filter(|f| keep(f)).map(|f| f.to_vec()));
        if n == 0 {
            if let Some(fd) = nic.wait_fd() {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, 10 ms timeout.
                unsafe { libc::poll(&mut p, 1, 10) };
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    got
}

/// Frames of TEST_ETHERTYPE from `src`.
pub(crate) fn is_test_from(src: [u8; 6]) -> impl Fn(&[u8]) -> bool {
    move |f: &[u8]| {
        f.len() >= 14 && f[6..12] == src && u16::from_be_bytes([f[12], f[13]]) == TEST_ETHERTYPE
    }
}

/// Sends one ARP request from `tx` and checks it arrives byte-identical
/// at `rx`, and that `tx` does not see its own frame.
pub(crate) fn check_arp_crosses(tx: &mut dyn Nic, rx: &mut dyn Nic) {
    let req = arp_request(tx.mac(), [198, 18, 0, 1], [198, 18, 0, 2]);
    send_all(tx, std::slice::from_ref(&req));
    let src = tx.mac();
    let got = recv_matching(rx, 1, Duration::from_secs(2), |f| {
        f.len() >= 14 && f[6..12] == src && f[12..14] == [0x08, 0x06]
    });
    assert_eq!(got.len(), 1, "ARP request did not arrive");
    assert_eq!(got[0], req, "ARP request changed on the way");
    let echoed = recv_matching(tx, 1, Duration::from_millis(200), |f| f == &req[..]);
    assert!(echoed.is_empty(), "sender received its own frame");
}

/// Sends a batch of 32 test frames (60..1514 bytes) from `tx` and checks
/// they all arrive at `rx`, in order and byte-identical.
pub(crate) fn check_batch_of_32(tx: &mut dyn Nic, rx: &mut dyn Nic) {
    let frames: Vec<Vec<u8>> = (0..32u32)
        .map(|i| test_frame(rx.mac(), tx.mac(), i, 60 + (i as usize * 97) % 1455))
        .collect();
    send_all(tx, &frames);
    let got = recv_matching(rx, 32, Duration::from_secs(3), is_test_from(tx.mac()));
    assert_eq!(got.len(), 32, "only {} of 32 frames arrived", got.len());
    for (i, (g, f)) in got.iter().zip(&frames).enumerate() {
        assert_eq!(g, f, "frame {i} differs (or out of order)");
    }
}

/// Sends `rounds` batches of `per` frames from `tx`; all must arrive, in
/// order (sequence numbers), at `rx`. Exercises ring wrap-around.
pub(crate) fn check_many(tx: &mut dyn Nic, rx: &mut dyn Nic, rounds: u32, per: u32) {
    let (txm, rxm) = (tx.mac(), rx.mac());
    let mut next_expected = 0u32;
    for r in 0..rounds {
        let frames: Vec<Vec<u8>> = (0..per)
            .map(|i| test_frame(rxm, txm, r * per + i, 128))
            .collect();
        send_all(tx, &frames);
        let got = recv_matching(rx, per as usize, Duration::from_secs(3), is_test_from(txm));
        assert_eq!(got.len(), per as usize, "round {r}: lost frames");
        for g in got {
            let seq = u32::from_be_bytes([g[14], g[15], g[16], g[17]]);
            assert_eq!(seq, next_expected, "out of order");
            assert_eq!(g, test_frame(rxm, txm, seq, 128));
            next_expected += 1;
        }
    }
}

use tas_engine::wire::checksum::{fold as csum_fold, sum as csum_sum};

fn csum_add(sum: u32, data: &[u8]) -> u32 {
    csum_sum(data, sum)
}

/// An Ethernet/IPv4/UDP frame with correct checksums.
pub(crate) fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(ip_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&dst.0);
    let ipc = csum_fold(csum_add(0, &f[ip_start..]));
    f[ip_start + 10..ip_start + 12].copy_from_slice(&ipc.to_be_bytes());
    let udp_start = f.len();
    f.extend_from_slice(&src.1.to_be_bytes());
    f.extend_from_slice(&dst.1.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    let mut sum = csum_add(0, &src.0);
    sum = csum_add(sum, &dst.0);
    sum += 17 + udp_len as u32;
    sum = csum_add(sum, &f[udp_start..]);
    let mut c = csum_fold(sum);
    if c == 0 {
        c = 0xffff;
    }
    f[udp_start + 6..udp_start + 8].copy_from_slice(&c.to_be_bytes());
    f
}

/// Interoperation with the Linux stack. `net` holds a veth pair whose end
/// `kernel_if` carries 198.18.7.2/24 and whose other end is `nic`. The
/// kernel sends UDP to 198.18.7.1 (the backend's address); the backend
/// must answer the kernel's ARP request, then receive the datagram
/// addressed to its MAC, then send a UDP reply that the kernel's socket
/// receives.
pub(crate) fn check_kernel_interop(net: &TestNet, kernel_if: &str, nic: &mut dyn Nic) {
    const OUR_IP: [u8; 4] = [198, 18, 7, 1];
    const KERNEL_IP: [u8; 4] = [198, 18, 7, 2];
    net.ip(&["addr", "add", "198.18.7.2/24", "dev", kernel_if]);
    let sock = net.run(|| {
        let s = std::net::UdpSocket::bind("198.18.7.2:0").expect("bind UDP in netns");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        s
    });
    let kport = sock.local_addr().unwrap().port();
    let our_mac = nic.mac();
    let mut batch = FrameBatch::new(32);
    let mut out = FrameBatch::new(4);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut answered_arp = false;
    let mut got_udp = None;
    while got_udp.is_none() {
        assert!(
            Instant::now() < deadline,
            "no UDP datagram from the kernel (ARP answered: {answered_arp})"
        );
        // Each send makes the kernel (re)try ARP or deliver the datagram.
        let _ = sock.send_to(b"hello tas", "198.18.7.1:7777");
        let t_end = Instant::now() + Duration::from_millis(50);
        while Instant::now() < t_end && got_udp.is_none() {
            batch.clear();
            nic.recv(&mut batch).unwrap();
            for f in batch.iter() {
                let ethertype = u16::from_be_bytes([f[12], f[13]]);
                if ethertype == 0x0806 && f.len() >= 42 && f[21] == 1 && f[38..42] == OUR_IP {
                    // ARP request for us: answer "OUR_IP is at our_mac".
                    let mut reply = Vec::with_capacity(42);
                    reply.extend_from_slice(&f[6..12]);
                    reply.extend_from_slice(&our_mac);
                    reply.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
                    reply.extend_from_slice(&our_mac);
                    reply.extend_from_slice(&OUR_IP);
                    reply.extend_from_slice(&f[22..28]);
                    reply.extend_from_slice(&f[28..32]);
                    out.clear();
                    out.push(&reply);
                    assert_eq!(nic.send(&out).unwrap(), 1);
                    answered_arp = true;
                } else if ethertype == 0x0800
                    && f.len() >= 42
                    && f[0..6] == our_mac
                    && f[23] == 17
                    && f[30..34] == OUR_IP
                {
                    got_udp = Some(f.to_vec());
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let udp = got_udp.unwrap();
    assert!(answered_arp, "kernel sent UDP without ARP?");
    assert_eq!(&udp[42..], b"hello tas");
    assert_eq!(u16::from_be_bytes([udp[34], udp[35]]), kport);
    // Reply from "198.18.7.1:7777" to the kernel's socket.
    let kmac: [u8; 6] = udp[6..12].try_into().unwrap();
    let reply = udp_frame(
        kmac,
        our_mac,
        (OUR_IP, 7777),
        (KERNEL_IP, kport),
        b"hello linux",
    );
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        out.clear();
        out.push(&reply);
        assert_eq!(nic.send(&out).unwrap(), 1);
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                assert_eq!(&buf[..n], b"hello linux");
                assert_eq!(from.to_string(), "198.18.7.1:7777");
                break;
            }
            Err(_) => assert!(Instant::now() < deadline, "kernel never got our UDP reply"),
        }
    }
}
impl TestNet {
    /// Creates an up veth pair `a`–`b` inside the namespace, with
    /// `queues` RX and TX queues on both ends.
    pub(crate) fn veth_mq(&self, a: &str, b: &str, queues: u32) {
        let q = queues.to_string();
        self.ip(&[
            "link",
            "add",
            a,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ]);
        self.ip(&["link", "set", a, "up"]);
        self.ip(&["link", "set", b, "up"]);
    }
}

/// Address of the lanes in the lanes tests, and of the kernel peer.
pub(crate) const LANE_IP: [u8; 4] = [198, 18, 7, 1];
pub(crate) const PEER_IP: [u8; 4] = [198, 18, 7, 2];
const UDP_FLOWS: usize = 48;
const UDP_SEQS: u16 = 4;
const TCP_FLOWS: usize = 16;

/// Sets up the kernel side of a lanes test on `kernel_if` (in `net`):
/// 198.18.7.2/24, a permanent neighbour entry saying 198.18.7.1 is at
/// `lane_mac` (the lanes answer no ARP), and net.core.txrehash=0 so that
/// a socket keeps its TX hash, hence its queue, after a retransmission
/// timeout (as RSS would keep a flow on its queue). Returns the kernel
/// side's MAC.
pub(crate) fn kernel_peer(net: &TestNet, kernel_if: &str, lane_mac: [u8; 6]) -> [u8; 6] {
    let mac = lane_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    net.ip(&["addr", "add", "198.18.7.2/24", "dev", kernel_if]);
    net.ip(&[
        "neigh",
        "replace",
        "198.18.7.1",
        "lladdr",
        &mac,
        "dev",
        kernel_if,
        "nud",
        "permanent",
    ]);
    net.run(|| {
        std::fs::write("/proc/sys/net/core/txrehash", "0").expect("net.core.txrehash=0");
        crate::linux::link_info(kernel_if).unwrap().mac
    })
}

/// A flow of a lanes test: (IP protocol, the kernel's port).
pub(crate) type Flow = (u8, u16);

/// IPv4 frames to LANE_IP: (protocol, source port, destination port,
/// L4 header offset).
fn ipv4_to_lane(f: &[u8]) -> Option<(u8, u16, u16, usize)> {
    if f.len() < 14 + 20 + 8 || f[12..14] != [0x08, 0x00] || f[30..34] != LANE_IP {
        return None;
    }
    let l4 = 14 + usize::from(f[14] & 0x0f) * 4;
    if f.len() < l4 + 14 {
        return None;
    }
    let sport = u16::from_be_bytes([f[l4], f[l4 + 1]]);
    let dport = u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]);
    Some((f[23], sport, dport, l4))
}

/// Kernel flows spread over lanes. The kernel in `net` (set up by
/// [`kernel_peer`]) sends UDP_FLOWS connected UDP flows of UDP_SEQS
/// datagrams each to 198.18.7.1 and opens TCP_FLOWS TCP connections to it
/// (never answered: the SYN is sent again after 1 s). Each lane is moved
/// to a thread of its own that polls it (and moved back at the end).
///
/// Checks that no datagram arrives twice, that all frames of a flow
/// come through one lane, and, when `complete`, that every datagram and
/// a retransmitted SYN of every connection arrived, and that with
/// several lanes each lane got some flows. `run` keeps the ports of
/// successive calls apart. Returns the lanes and the lane of each flow.
pub(crate) fn check_lane_flows<N: Nic>(
    net: &TestNet,
    lanes: Vec<N>,
    run: u16,
    complete: bool,
) -> (Vec<N>, std::collections::HashMap<Flow, usize>) {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;
    let udp_port = 7000 + 2 * run;
    let tcp_port = udp_port + 1;
    let n = lanes.len();
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, Flow, u16)>();
    std::thread::scope(|s| {
        let workers: Vec<_> = lanes
            .into_iter()
            .enumerate()
            .map(|(i, mut lane)| {
                let tx = tx.clone();
                let stop = &stop;
                s.spawn(move || {
                    let mut batch = FrameBatch::new(64);
                    while !stop.load(Ordering::Relaxed) {
                        batch.clear();
                        let got = lane.recv(&mut batch).expect("lane recv");
                        for f in batch.iter() {
                            match ipv4_to_lane(f) {
                                Some((17, sport, dport, l4))
                                    if dport == udp_port
                                        && f.len() >= l4 + 16
                                        && &f[l4 + 8..l4 + 12] == b"lane" =>
                                {
                                    let seq = u16::from_be_bytes([f[l4 + 14], f[l4 + 15]]);
                                    let _ = tx.send((i, (17, sport), seq));
                                }
                                Some((6, sport, dport, l4))
                                    if dport == tcp_port && f[l4 + 13] & 0x02 != 0 =>
                                {
                                    let _ = tx.send((i, (6, sport), 0));
                                }
                                _ => {}
                            }
                        }
                        if got == 0 {
                            if let Some(fd) = lane.wait_fd() {
                                let mut p = libc::pollfd {
                                    fd,
                                    events: libc::POLLIN,
                                    revents: 0,
                                };
                                // SAFETY: one valid pollfd, 5 ms timeout.
                                unsafe { libc::poll(&mut p, 1, 5) };
                            } else {
                                std::thread::sleep(Duration::from_micros(200));
                            }
                        }
                    }
                    lane
                })
            })
            .collect();
        drop(tx);

        // The kernel's flows.
        let (udp, tcp) = net.run(|| {
            let udp: Vec<std::net::UdpSocket> = (0..UDP_FLOWS)
                .map(|_| {
                    let s = std::net::UdpSocket::bind("198.18.7.2:0").expect("bind UDP");
                    s.connect(("198.18.7.1", udp_port)).expect("connect UDP");
                    s
                })
                .collect();
            let tcp: Vec<std::os::fd::OwnedFd> = (0..TCP_FLOWS)
                .map(|_| {
                    let s = crate::linux::socket(
                        libc::AF_INET,
                        libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        0,
                    )
                    .expect("TCP socket");
                    // SAFETY: sockaddr_in is plain data; all-zero is valid.
                    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                    sin.sin_family = libc::AF_INET as libc::sa_family_t;
                    sin.sin_port = tcp_port.to_be();
                    sin.sin_addr.s_addr = u32::from_ne_bytes(LANE_IP);
                    // SAFETY: valid socket and sockaddr_in of the size given.
                    let rc = unsafe {
                        libc::connect(
                            s.as_raw_fd(),
                            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
                            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                        )
                    };
                    let e = std::io::Error::last_os_error();
                    assert!(
                        rc == 0 || e.raw_os_error() == Some(libc::EINPROGRESS),
                        "TCP connect: {e}"
                    );
                    s
                })
                .collect();
            (udp, tcp)
        });
        for seq in 0..UDP_SEQS {
            for (i, s) in udp.iter().enumerate() {
                let mut p = [0u8; 8];
                p[..4].copy_from_slice(b"lane");
                p[4..6].copy_from_slice(&(i as u16).to_be_bytes());
                p[6..8].copy_from_slice(&seq.to_be_bytes());
                s.send(&p).expect("send UDP");
            }
            std::thread::sleep(Duration::from_millis(2));
        }

        let mut lane_of: HashMap<Flow, usize> = HashMap::new();
        let mut udp_seen: HashMap<(u16, u16), usize> = HashMap::new();
        let mut syns: HashMap<u16, usize> = HashMap::new();
        let mut split = Vec::new();
        let mut dups = Vec::new();
        let start = Instant::now();
        let deadline = start + Duration::from_secs(if complete { 5 } else { 2 });
        let mut done_at = None;
        loop {
            let now = Instant::now();
            if now >= deadline || done_at.is_some_and(|t| now >= t) {
                break;
            }
            if let Ok((lane, flow, seq)) = rx.recv_timeout(Duration::from_millis(10)) {
                if *lane_of.entry(flow).or_insert(lane) != lane {
                    split.push((flow, lane));
                }
                if flow.0 == 17 {
                    let c = udp_seen.entry((flow.1, seq)).or_insert(0);
                    *c += 1;
                    if *c > 1 {
                        dups.push((flow.1, seq));
                    }
                } else {
                    *syns.entry(flow.1).or_insert(0) += 1;
                }
            }
            let all = udp_seen.len() == UDP_FLOWS * usize::from(UDP_SEQS)
                && syns.len() == TCP_FLOWS
                && syns.values().all(|&c| c >= 2);
            if complete && all && done_at.is_none() {
                // Linger: anything arriving twice shows up now.
                done_at = Some(Instant::now() + Duration::from_millis(200));
            }
        }
        stop.store(true, Ordering::Relaxed);
        drop(udp);
        drop(tcp);
        let lanes: Vec<N> = workers
            .into_iter()
            .map(|w| w.join().expect("lane thread panicked"))
            .collect();

        let mut per_lane = vec![0usize; n];
        for &l in lane_of.values() {
            per_lane[l] += 1;
        }
        assert!(dups.is_empty(), "datagrams received twice: {dups:?}");
        assert!(split.is_empty(), "flows seen on two lanes: {split:?}");
        if complete {
            assert_eq!(
                udp_seen.len(),
                UDP_FLOWS * usize::from(UDP_SEQS),
                "datagrams lost (flows per lane {per_lane:?})"
            );
            assert_eq!(syns.len(), TCP_FLOWS, "TCP connections not seen");
            assert!(
                syns.values().all(|&c| c >= 2),
                "a SYN was not retransmitted / not seen again: {syns:?}"
            );
            assert_eq!(lane_of.len(), UDP_FLOWS + TCP_FLOWS);
            assert!(
                per_lane.iter().all(|&c| c > 0),
                "a lane got no flow: flows per lane {per_lane:?}"
            );
        }
        (lanes, lane_of)
    })
}

/// Every lane, moved to a thread of its own, sends a UDP datagram from
/// 198.18.7.1:(7100 + lane) to a socket of the kernel in `net` (set up by
/// [`kernel_peer`], whose MAC is `kernel_mac`), again every 20 ms until
/// the kernel has them all (at most 3 s). Returns the lanes.
pub(crate) fn check_lanes_transmit<N: Nic>(
    net: &TestNet,
    kernel_mac: [u8; 6],
    lanes: Vec<N>,
) -> Vec<N> {
    use std::sync::atomic::AtomicBool;
    let sock = net.run(|| {
        let s = std::net::UdpSocket::bind("198.18.7.2:0").expect("bind UDP");
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        s
    });
    let kport = sock.local_addr().unwrap().port();
    let n = lanes.len();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let workers: Vec<_> = lanes
            .into_iter()
            .enumerate()
            .map(|(i, mut lane)| {
                let stop = &stop;
                s.spawn(move || {
                    let f = udp_frame(
                        kernel_mac,
                        lane.mac(),
                        (LANE_IP, 7100 + i as u16),
                        (PEER_IP, kport),
                        format!("from lane {i}").as_bytes(),
                    );
                    let deadline = Instant::now() + Duration::from_secs(3);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        send_all(&mut lane, std::slice::from_ref(&f));
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    lane
                })
            })
            .collect();
        let mut got = vec![false; n];
        let mut buf = [0u8; 64];
        let deadline = Instant::now() + Duration::from_secs(3);
        while !got.iter().all(|&g| g) && Instant::now() < deadline {
            if let Ok((len, from)) = sock.recv_from(&mut buf) {
                let i = usize::from(from.port() - 7100);
                assert_eq!(&buf[..len], format!("from lane {i}").as_bytes());
                assert_eq!(from.ip().to_string(), "198.18.7.1");
                got[i] = true;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let lanes: Vec<N> = workers
            .into_iter()
            .map(|w| w.join().expect("lane thread panicked"))
            .collect();
        assert!(
            got.iter().all(|&g| g),
            "the kernel did not get a datagram from every lane: {got:?}"
        );
        lanes
    })
}
