//! Off-path attacks on tasd from the Linux test host, in namespaces.
//!
//! The attacker is this test process in the Linux namespace, writing whole
//! Ethernet frames with an AF_PACKET socket on the Linux end of the veth.
//! It knows the 4-tuple of a running transfer (from `tasctl flows`) but
//! not its sequence numbers: every sequence and acknowledgment number is
//! uniform over 2^32 from a seeded generator (tas-testkit's `Rng`), so each
//! run sends the same frames. The transfer's receiver checks every byte.
//!
//! * 100k blind RSTs: RFC 5961 §3 (an RST resets only at exactly RCV.NXT;
//!   in the window it draws a rate-limited challenge ACK).
//! * A SYN flood of 50k half-open connections from random addresses of
//!   198.19.0.0/16 (inside 198.18.0.0/15; nothing answers for them) while
//!   Linux connects 100 times: every connect completes in under 1 s, which
//!   needs SYN cookies (RFC 4987 §3.6) once the half-open table is full.
//! * 100k blind ACKs and 300k blind data segments into a transfer in each
//!   direction: RFC 5961 §5 (an ACK must acknowledge something between
//!   SND.UNA - MAX.SND.WND and SND.NXT) and RFC 9293's window checks, which
//!   are the fast path's. A few of the data segments land in the receive
//!   window (about 256 KiB of 4 GiB: one in 16k); without the ACK check
//!   they would be taken as data and the stream corrupted.
//!
//! The blind floods go as fast as the socket takes them (`sendmmsg`, 64
//! frames a call); the veth drops what the TAS side cannot take, so each
//! test reports how many frames arrived (tasd's counters) and checks it.
//! The SYN flood is paced (25k SYNs a second, on until the client is done):
//! every SYN without a connection goes to the slow path through a
//! 1024-entry queue per lane, and a flood faster than the slow path (a few
//! 100k a second here, less with other tests beside it) overflows it, and
//! then a client's SYN is lost like the flood's and its connect takes the
//! kernel's 1 s SYN retransmission; cookies cannot help with that.
//! Every test has time bounds and leaves no namespace or process behind
//! (the `Testbed`'s Drop, also on panic).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tas_engine::wire::{frame, tcp};
use tas_system_tests::*;
use tas_testkit::netns::in_netns;
use tas_testkit::Rng;
use tasd::ctlsock::Stats;
use tasd::stack::FlowDetail;

/// The Linux end of the test hosts' veth.
const LNX_IF: &str = "veth-lnx";
const TAS_IF: &str = "veth-tas";
/// Frames handed to one `sendmmsg` call.
const BATCH: usize = 64;

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().expect("IPv4 address"))
}

/// MAC of `ifname` in namespace `ns` (`ip -n NS -o link show dev IF`).
fn mac_of(ns: &str, ifname: &str) -> [u8; 6] {
    let o = std::process::Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "dev", ifname])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&o.stdout);
    let hex = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC for {ifname} in {ns}: {text}"));
    let mut mac = [0u8; 6];
    for (m, h) in mac.iter_mut().zip(hex.split(':')) {
        *m = u8::from_str_radix(h, 16).expect("MAC byte");
    }
    mac
}

/// An AF_PACKET socket bound to the Linux end of the veth: frames written
/// to it go to the TAS side as they are.
struct RawLink {
    fd: OwnedFd,
    /// Linux's MAC (source) and TAS's (destination).
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
}

impl RawLink {
    fn open(tb: &Testbed) -> RawLink {
        let fd = in_netns(&tb.lnx_ns, || {
            let name = std::ffi::CString::new(LNX_IF).unwrap();
            // SAFETY: plain libc calls on a socket we create and own; the
            // sockaddr is a zeroed sockaddr_ll of the right size.
            unsafe {
                let ifindex = libc::if_nametoindex(name.as_ptr());
                assert!(ifindex > 0, "no {LNX_IF} in the Linux namespace");
                // Protocol 0: this socket sends only, it receives nothing.
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
                assert!(
                    fd >= 0,
                    "AF_PACKET socket: {}",
                    std::io::Error::last_os_error()
                );
                let fd = OwnedFd::from_raw_fd(fd);
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_ifindex = ifindex as i32;
                let rc = libc::bind(
                    fd.as_raw_fd(),
                    &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
                // Straight to the driver: no qdisc in between.
                let one: libc::c_int = 1;
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_QDISC_BYPASS,
                    &one as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as u32,
                );
                fd
            }
        });
        RawLink {
            fd,
            src_mac: mac_of(&tb.lnx_ns, LNX_IF),
            dst_mac: mac_of(&tb.tas_ns, TAS_IF),
        }
    }

    /// Sends `n` frames that `make` writes (into a buffer it returns the
    /// length of), `BATCH` at a time, until `stop` is set; at most `rate`
    /// frames a second if given, else as fast as the socket takes them.
    /// Returns the number sent and the time it took.
    fn flood(
        &self,
        n: usize,
        rate: Option<u64>,
        stop: &AtomicBool,
        mut make: impl FnMut(&mut [u8]) -> usize,
    ) -> (usize, Duration) {
        let t0 = Instant::now();
        let mut bufs = vec![[0u8; 1600]; BATCH];
        let mut sent = 0;
        while sent < n && !stop.load(Ordering::Relaxed) {
            if let Some(r) = rate {
                let due = Duration::from_secs_f64(sent as f64 / r.max(1) as f64);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            let k = BATCH.min(n - sent);
            let mut lens = [0usize; BATCH];
            for (b, l) in bufs.iter_mut().zip(lens.iter_mut()).take(k) {
                *l = make(b);
            }
            let mut done = 0;
            let mut tries = 0;
            while done < k {
                let mut iov: Vec<libc::iovec> = (done..k)
                    .map(|i| libc::iovec {
                        iov_base: bufs[i].as_mut_ptr() as *mut libc::c_void,
                        iov_len: lens[i],
                    })
                    .collect();
                // SAFETY: zeroed mmsghdrs, each pointing at one iovec that
                // points into `bufs`, all alive across the call.
                let mut msgs: Vec<libc::mmsghdr> = iov
                    .iter_mut()
                    .map(|v| {
                        let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                        m.msg_hdr.msg_iov = v as *mut libc::iovec;
                        m.msg_hdr.msg_iovlen = 1;
                        m
                    })
                    .collect();
                // SAFETY: see above; the socket is ours.
                let r = unsafe {
                    libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0)
                };
                if r > 0 {
                    done += r as usize;
                    tries = 0;
                } else {
                    // ENOBUFS/EAGAIN: the device queue is full; wait a bit.
                    tries += 1;
                    assert!(
                        tries < 10_000,
                        "sendmmsg keeps failing: {}",
                        std::io::Error::last_os_error()
                    );
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            sent += k;
        }
        (sent, t0.elapsed())
    }
}

/// Writes a TCP/IPv4 frame into `buf`, returns its length.
#[allow(clippy::too_many_arguments)]
fn tcp_frame(
    buf: &mut [u8],
    link: &RawLink,
    src: (u32, u16),
    dst: (u32, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: tcp::TcpOptions,
    payload: &[u8],
    ident: u16,
) -> usize {
    let h = frame::FrameHdr {
        src_mac: link.src_mac,
        dst_mac: link.dst_mac,
        src_ip: src.0,
        dst_ip: dst.0,
        ttl: 64,
        ecn: 0,
        ident,
    };
    let t = tcp::TcpRepr {
        src_port: src.1,
        dst_port: dst.1,
        seq,
        ack,
        flags,
        window,
        options,
    };
    frame::tcp_frame(buf, &h, &t, payload).expect("frame fits")
}

fn json<T: serde::de::DeserializeOwned>(tb: &mut Testbed, args: &[&str]) -> T {
    let mut a = args.to_vec();
    a.push("--json");
    let o = tb.tasctl(&a);
    assert_ok(&o, &format!("tasctl {args:?}"));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("tasctl {args:?} --json: {e}\n{}", stdout(&o)))
}

fn counters(tb: &mut Testbed) -> std::collections::BTreeMap<String, u64> {
    json::<Stats>(tb, &["stats"]).counters
}

fn counter(c: &std::collections::BTreeMap<String, u64>, k: &str) -> u64 {
    *c.get(k).unwrap_or_else(|| panic!("no counter {k}"))
}

/// The remote port of the established TAS flow on local port `port`.
fn remote_port_of(tb: &mut Testbed, port: u16, limit: Duration) -> u16 {
    let t = Instant::now();
    while t.elapsed() < limit {
        let flows: Vec<FlowDetail> = json(tb, &["flows"]);
        let f = flows.iter().find(|d| {
            d.id.is_some() && d.state == "ESTABLISHED" && d.local.ends_with(&format!(":{port}"))
        });
        if let Some(f) = f {
            let (host, p) = f.remote.rsplit_once(':').expect("ip:port");
            assert_eq!(host, LNX_IP);
            return p.parse().expect("port");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no established flow on port {port} after {limit:?}");
}

/// Which way the data of the attacked transfer flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Linux sends, TAS receives and checks every byte.
    LinuxToTas,
    /// TAS sends, Linux receives and checks every byte.
    TasToLinux,
}

/// A transfer of `bytes` between a TAS app (serving on `port`) and a Linux
/// program, both from `peer`, whose receiver checks every byte.
struct Transfer {
    port: u16,
    /// The Linux side's port: the rest of the 4-tuple an attacker needs.
    lnx_port: u16,
    tas_pid: u32,
    lnx_pid: u32,
}

impl Transfer {
    fn start(tb: &mut Testbed, dir: Dir, port: u16, bytes: u64, seed: u64) -> Transfer {
        let (p, b, s) = (port.to_string(), bytes.to_string(), seed.to_string());
        let peer = bin("peer");
        let (tas_mode, lnx_mode) = match dir {
            Dir::LinuxToTas => ("recv", "send"),
            Dir::TasToLinux => ("serve-send", "connect-recv"),
        };
        let tas_pid = tb.spawn_tas(&peer, &["--tas", tas_mode, &p, &b, &s], Some("listening"));
        let lnx_pid = tb.spawn_lnx(&peer, &[lnx_mode, TAS_IP, &p, &b, &s], None);
        let lnx_port = remote_port_of(tb, port, Duration::from_secs(10));
        Transfer {
            port,
            lnx_port,
            tas_pid,
            lnx_pid,
        }
    }

    /// Whether neither side has exited yet.
    fn running(&self, tb: &mut Testbed) -> bool {
        tb.wait_child(self.tas_pid, Duration::ZERO).is_none()
            && tb.wait_child(self.lnx_pid, Duration::ZERO).is_none()
    }

    /// Waits for both sides; panics unless both succeeded (the receiver
    /// exits 0 only with every byte right).
    fn finish(&self, tb: &mut Testbed, limit: Duration) {
        let t = Instant::now();
        let tas = tb.wait_child(self.tas_pid, limit);
        let lnx = tb.wait_child(self.lnx_pid, limit.saturating_sub(t.elapsed()));
        assert_eq!(
            (tas, lnx),
            (Some(true), Some(true)),
            "transfer (TAS side, Linux side) did not complete byte-exact \
             (None: still running after {limit:?})"
        );
    }
}

/// What the attacker sends into a transfer.
#[derive(Debug, Clone, Copy)]
enum Blind {
    /// RST or RST|ACK.
    Rst,
    /// A bare ACK (half of them with a random timestamp option).
    Ack,
    /// ACK|PSH with 1..=512 random bytes (half with a random timestamp).
    Data,
}

/// Starts a transfer, floods it with `n` blind segments of `kind` spoofed
/// from the Linux side's 4-tuple, checks that the transfer was still
/// running when the flood ended and that the flood reached tasd, and that
/// the transfer completes byte-exact.
///
/// The veth drops what the TAS side cannot take in time (the AF_XDP ring
/// fills while the flood has the CPU), with no word to the sender. RSTs
/// are counted one by one by the slow path, so an RST flood goes on until
/// tasd has judged `n` of them (at most 4n sent); for the others `n` are
/// sent and tasd's received-frame count is checked against a floor.
fn blind_flood(tag: &str, dir: Dir, kind: Blind, n: usize, bytes: u64, seed: u64) {
    let mut tb = Testbed::new(tag, Backend::from_env());
    let link = RawLink::open(&tb);
    let tr = Transfer::start(&mut tb, dir, 5001, bytes, seed);
    let before = counters(&mut tb);
    let mut rng = Rng::mixed(seed);
    let mut payload = [0u8; 512];
    let src = (ip(LNX_IP), tr.lnx_port);
    let dst = (ip(TAS_IP), tr.port);
    let stop = AtomicBool::new(false);
    let mut make = |buf: &mut [u8]| {
        let (seq, ack) = (rng.next_u32(), rng.next_u32());
        let window = rng.next_u16();
        let ident = rng.next_u16();
        let mut o = tcp::TcpOptions::default();
        if rng.one_in(2) {
            o.timestamp = Some((rng.next_u32(), rng.next_u32()));
        }
        let (flags, len) = match kind {
            Blind::Rst => {
                o = tcp::TcpOptions::default();
                (tcp::RST | if rng.one_in(2) { tcp::ACK } else { 0 }, 0)
            }
            Blind::Ack => (tcp::ACK, 0),
            Blind::Data => (tcp::ACK | tcp::PSH, 1 + rng.below(512usize)),
        };
        rng.fill(&mut payload[..len]);
        let p = &payload[..len];
        tcp_frame(buf, &link, src, dst, seq, ack, flags, window, o, p, ident)
    };
    // RSTs the slow path judged since `before`.
    let rsts = |c: &std::collections::BTreeMap<String, u64>| {
        [
            "slowpath.rst_rx",
            "slowpath.rst_challenged",
            "slowpath.rst_out_of_window",
        ]
        .iter()
        .map(|k| counter(c, k) - counter(&before, k))
        .sum::<u64>()
    };
    let t0 = Instant::now();
    let mut sent = 0;
    loop {
        let chunk = match kind {
            Blind::Rst => 20_000,
            _ => n,
        };
        sent += link.flood(chunk, None, &stop, &mut make).0;
        let enough = match kind {
            Blind::Rst => rsts(&counters(&mut tb)) >= n as u64,
            _ => true,
        };
        if enough || sent >= 4 * n || t0.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    let took = t0.elapsed();
    let still = tr.running(&mut tb);
    let after = counters(&mut tb);
    let d = |k: &str| counter(&after, k) - counter(&before, k);
    let rx = d("fastpath.rx_frames");
    eprintln!(
        "{tag}: {sent} blind {kind:?} sent into {dir:?} in {:.2} s ({:.0}/s); tasd received \
         {rx} frames (the transfer's included); slow path: RSTs judged {}, reset {}, \
         challenged {}, out of window {}; challenge ACKs {} (limited {}); exceptions dropped {}",
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64(),
        rsts(&after),
        d("slowpath.rst_rx"),
        d("slowpath.rst_challenged"),
        d("slowpath.rst_out_of_window"),
        d("slowpath.challenge_acks"),
        d("slowpath.challenge_acks_limited"),
        d("lanes.exceptions_deferred"),
    );
    if !still {
        // Failed (a byte wrong, a reset), or too short for the flood.
        tr.finish(&mut tb, Duration::from_secs(10));
        panic!("the transfer ended before the flood did: make it longer than {bytes} bytes");
    }
    match kind {
        Blind::Rst => {
            assert!(
                rsts(&after) >= n as u64,
                "tasd judged only {} of {sent} RSTs sent",
                rsts(&after)
            );
            assert_eq!(d("slowpath.rst_rx"), 0, "a blind RST reset a flow");
            // RFC 5961 §7: at most 1000 a second, plus the bucket's depth.
            let limit = 1000.0 * (took.as_secs_f64() + 2.0);
            assert!(d("slowpath.challenge_acks") as f64 <= limit);
        }
        // A floor: most of the flood must have reached tasd for the test to
        // mean anything.
        _ => assert!(
            rx >= n as u64 / 4,
            "only {rx} frames reached tasd during a flood of {n}"
        ),
    }
    tr.finish(&mut tb, Duration::from_secs(60));
}

// Transfer sizes: long enough to outlast the flood on this 2-core machine
// (checked: a test fails if the transfer ended first), short enough to keep
// the file within about two minutes.
const MB: u64 = 1 << 20;

#[test]
fn blind_rsts_into_a_transfer_linux_to_tas() {
    blind_flood(
        "arst1",
        Dir::LinuxToTas,
        Blind::Rst,
        100_000,
        512 * MB,
        0x5961_0001,
    );
}

#[test]
fn blind_rsts_into_a_transfer_tas_to_linux() {
    blind_flood(
        "arst2",
        Dir::TasToLinux,
        Blind::Rst,
        100_000,
        512 * MB,
        0x5961_0006,
    );
}

#[test]
fn blind_acks_into_a_transfer_linux_to_tas() {
    blind_flood(
        "aack1",
        Dir::LinuxToTas,
        Blind::Ack,
        100_000,
        512 * MB,
        0x5961_0002,
    );
}

#[test]
fn blind_acks_into_a_transfer_tas_to_linux() {
    blind_flood(
        "aack2",
        Dir::TasToLinux,
        Blind::Ack,
        100_000,
        512 * MB,
        0x5961_0003,
    );
}

#[test]
fn blind_data_into_a_transfer_linux_to_tas() {
    blind_flood(
        "adat1",
        Dir::LinuxToTas,
        Blind::Data,
        300_000,
        1024 * MB,
        0x5961_0004,
    );
}

#[test]
fn blind_data_into_a_transfer_tas_to_linux() {
    blind_flood(
        "adat2",
        Dir::TasToLinux,
        Blind::Data,
        300_000,
        1024 * MB,
        0x5961_0005,
    );
}

/// Sets its flag when dropped (also when the thread holding it panics).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn syn_flood_does_not_keep_clients_out() {
    /// At least this many SYNs, and on until the client is done, at
    /// `SYN_RATE` a second.
    const FLOOD: u64 = 50_000;
    const SYN_RATE: u64 = 25_000;
    const CONNECTS: usize = 100;
    const PORT: u16 = 7;
    let mut tb = Testbed::new("asyn", Backend::from_env());
    let link = RawLink::open(&tb);
    tb.spawn_tas(
        &bin("peer"),
        &["--tas", "echo-server", &PORT.to_string()],
        Some("listening"),
    );
    let before = counters(&mut tb);
    let never = AtomicBool::new(false);
    let client_done = AtomicBool::new(false);
    let flood_done = AtomicBool::new(false);
    let flooded = AtomicU64::new(0);
    let lnx_ns = tb.lnx_ns.clone();
    let (took, connects) = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            let _done = SetOnDrop(&flood_done);
            let mut rng = Rng::mixed(0x5f100d);
            let dst = (ip(TAS_IP), PORT);
            let mut make = |buf: &mut [u8]| {
                // A source nobody answers for: 198.19.0.0/16 (in the
                // benchmarking range, off the test link's /24), and a SYN
                // as Linux writes it (MSS, SACK, timestamp, window scale).
                let a = 0xC613_0000 | (rng.next_u32() & 0xFFFF);
                let src = (a, 1024 + rng.below(64512u32) as u16);
                let o = tcp::TcpOptions {
                    mss: Some(1460),
                    wscale: Some(7),
                    sack_permitted: true,
                    timestamp: Some((rng.next_u32(), 0)),
                    ..Default::default()
                };
                let (seq, ident) = (rng.next_u32(), rng.next_u16());
                flooded.fetch_add(1, Ordering::SeqCst);
                tcp_frame(buf, &link, src, dst, seq, 0, tcp::SYN, 64240, o, &[], ident)
            };
            let t0 = Instant::now();
            let mut sent = 0;
            loop {
                // Paced so that the flood's SYNs themselves stay within
                // what tasd's slow path takes on this 2-core machine: past
                // that, its exception queues overflow and a client's SYN is
                // lost like any other (see the module doc).
                let t = t0 + Duration::from_secs_f64(sent as f64 / SYN_RATE as f64);
                if let Some(wait) = t.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                sent += link.flood(1024, Some(SYN_RATE), &never, &mut make).0;
                let n = flooded.load(Ordering::SeqCst);
                if (n >= FLOOD && client_done.load(Ordering::SeqCst))
                    || n >= 10 * FLOOD
                    || t0.elapsed() > Duration::from_secs(30)
                {
                    break t0.elapsed();
                }
            }
        });
        let _done = SetOnDrop(&client_done);
        // Connect once the half-open table is surely full (its limit is
        // 2 x the echo server's backlog of 512).
        let t = Instant::now();
        while flooded.load(Ordering::SeqCst) < 5_000 && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let connects = in_netns(&lnx_ns, || {
            let addr = SocketAddrV4::new(TAS_IP.parse().unwrap(), PORT).into();
            let mut times = Vec::new();
            for i in 0..CONNECTS {
                let t = Instant::now();
                let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("connect {i}: {e}"));
                let took = t.elapsed();
                // The connection works: one byte echoed.
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                c.write_all(&[i as u8]).expect("write");
                let mut b = [0u8; 1];
                c.read_exact(&mut b)
                    .unwrap_or_else(|e| panic!("echo {i}: {e}"));
                assert_eq!(b[0], i as u8);
                times.push((took, !flood_done.load(Ordering::SeqCst)));
            }
            times
        });
        drop(_done);
        (flood.join().expect("flood thread"), connects)
    });
    let after = counters(&mut tb);
    let d = |k: &str| counter(&after, k) - counter(&before, k);
    let sent = flooded.load(Ordering::SeqCst);
    let worst = connects.iter().map(|c| c.0).max().unwrap();
    let during = connects.iter().filter(|c| c.1).count();
    eprintln!(
        "SYN flood: {sent} SYNs in {:.2} s; {CONNECTS} connects, slowest {worst:?}, {during} of \
         them under the flood; syn_rx {} synack_sent {}; cookies sent {} recv {} failed {} \
         refused {} dropped {}; syn_dropped_overflow {}; exceptions dropped {}",
        took.as_secs_f64(),
        d("slowpath.syn_rx"),
        d("slowpath.synack_sent"),
        d("slowpath.syncookies_sent"),
        d("slowpath.syncookies_recv"),
        d("slowpath.syncookies_failed"),
        d("slowpath.syncookies_refused"),
        d("slowpath.syncookies_dropped"),
        d("slowpath.syn_dropped_overflow"),
        d("lanes.exceptions_deferred"),
    );
    assert!(sent >= FLOOD);
    assert_eq!(during, CONNECTS, "every connect while the flood ran");
    for (i, (t, _)) in connects.iter().enumerate() {
        assert!(*t < Duration::from_secs(1), "connect {i} took {t:?}");
    }
    assert!(
        d("slowpath.syn_rx") >= FLOOD / 2,
        "the flood did not reach tasd"
    );
    // The half-open table (1024 for this listener) filled, then cookies.
    assert!(d("slowpath.syncookies_sent") >= FLOOD / 4);
    assert!(
        d("slowpath.syncookies_recv") >= CONNECTS as u64,
        "the client's connections were made through cookies"
    );
    assert_eq!(d("slowpath.syncookies_dropped"), 0);
    assert!(tb.tasd_alive());
}
