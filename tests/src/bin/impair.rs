//! `impair`: a user-space link between two interfaces that loses,
//! duplicates, reorders and corrupts frames, driven by a seeded PRNG so that
//! every run with the same seed makes the same decisions for the same
//! sequence of frames.
//!
//! The kernel of the test machines has no `netem`; this program plays its
//! part in the bridge namespace of the impaired topology
//! (`tools/testhosts.sh bridge-up`): it reads every frame that arrives on
//! one interface from an AF_PACKET socket and writes it (or not, or twice,
//! or later, or with one bit flipped) to the other interface, one thread per
//! direction.
//!
//! ```text
//! impair --a IF --b IF [--seed N] [--loss P] [--dup P] [--reorder P]
//!        [--corrupt P] [--hold-max-us US] [--hold-cap N] [--mtu N]
//!        [--reject-port PORT]
//! ```
//! * Rates are fractions (`0.01`) or percentages (`1%`) of the IPv4 frames
//!   of each direction. Other frames (ARP) pass untouched: they have no
//!   checksum of their own (on a real link the Ethernet FCS drops a corrupted
//!   frame), and a poisoned or lost ARP entry tests nothing about TCP.
//! * Per IPv4 frame, in this order, with independent draws: lost (`--loss`);
//!   else one bit of the IP packet flipped (`--corrupt`; IP header or
//!   payload, never the Ethernet header or padding: the Internet checksum
//!   catches every single-bit error there); sent twice (`--dup`); held back
//!   (`--reorder`) until 1–4 (uniform) further frames of its direction have
//!   been sent, or `--hold-max-us` (default 2000) have passed, whichever is
//!   first. At most `--hold-cap` (default 64) frames are held per direction;
//!   a frame chosen for holding when the queue is full is sent at once
//!   (counted as `hold_full`).
//! * `--mtu N` makes the link a router hop with a smaller MTU (RFC 1191):
//!   an IPv4 frame of either direction whose packet is longer than N with
//!   DF set is dropped and answered with an ICMP destination unreachable,
//!   fragmentation needed, next-hop MTU N (`icmp_sent`). `--reject-port P`
//!   is a firewall rejecting TCP SYNs to port P with ICMP port unreachable
//!   (as `iptables -j REJECT`). Both answers quote the IP header and the
//!   first 8 bytes of the dropped packet (RFC 792) and go back out of the
//!   interface the frame came from, from its destination's MAC and IP.
//! * The PRNG is tas-testkit's (xorshift64*), one stream per direction seeded from `--seed`
//!   (default 1) and the direction, drawn the same number of times for every
//!   IPv4 frame whatever its fate, so decision N of a direction depends only
//!   on the seed and N.
//! * The sockets set `PACKET_IGNORE_OUTGOING` (a socket never reads back
//!   what this program wrote) and put their interface in promiscuous mode
//!   for as long as they are open.
//!
//! Prints `impair ready ...` once both sockets are bound. On SIGTERM or
//! SIGINT it stops, prints one line of counters per direction
//! (`impair a->b in=... out=... dropped=... ...`, all `key=value`), and
//! exits 0. `sock_drops` are frames the kernel dropped because this program
//! did not read them in time (PACKET_STATISTICS), i.e. loss not asked for.

use std::collections::VecDeque;
use std::ffi::CString;
use std::os::fd::RawFd;
use std::process::exit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

// Linux ABI constants (include/uapi/linux/if_packet.h, if_ether.h, socket.h).
const ETH_P_ALL: u16 = 0x0003;
const ETH_P_IP: u16 = 0x0800;
const SOL_PACKET: i32 = 263;
const PACKET_ADD_MEMBERSHIP: i32 = 1;
const PACKET_MR_PROMISC: u16 = 1;
const PACKET_STATISTICS: i32 = 6;
const PACKET_IGNORE_OUTGOING: i32 = 23;

const BATCH: usize = 64;
const FRAME_BUF: usize = 4096;
const SOCK_BUF: i32 = 8 << 20;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

use tas_testkit::Rng;

/// A probability as a threshold on a uniform u64: P(next_u64() < t) = p.
fn threshold(p: f64) -> u64 {
    if p <= 0.0 {
        0
    } else if p >= 1.0 {
        u64::MAX
    } else {
        (p * 18_446_744_073_709_551_616.0) as u64
    }
}

#[derive(Clone, Copy, Debug)]
struct Config {
    seed: u64,
    loss: f64,
    dup: f64,
    reorder: f64,
    corrupt: f64,
    hold_max: Duration,
    hold_cap: usize,
    /// Router MTU (0: none) and rejected TCP port (0: none).
    mtu: u16,
    reject_port: u16,
}

#[derive(Default, Debug)]
struct Counters {
    frames_in: u64,
    bytes_in: u64,
    non_ipv4: u64,
    frames_out: u64,
    dropped: u64,
    corrupted: u64,
    duplicated: u64,
    reordered: u64,
    hold_timeouts: u64,
    hold_full: u64,
    truncated: u64,
    tx_errors: u64,
    sock_drops: u64,
    icmp_sent: u64,
}

impl Counters {
    fn line(&self, dir: &str) -> String {
        format!(
            "impair {dir} in={} bytes_in={} out={} dropped={} corrupted={} duplicated={} reordered={} \
             hold_timeouts={} hold_full={} non_ipv4={} truncated={} tx_errors={} sock_drops={} icmp_sent={}",
            self.frames_in,
            self.bytes_in,
            self.frames_out,
            self.dropped,
            self.corrupted,
            self.duplicated,
            self.reordered,
            self.hold_timeouts,
            self.hold_full,
            self.non_ipv4,
            self.truncated,
            self.tx_errors,
            self.sock_drops,
            self.icmp_sent
        )
    }
}

fn die(msg: String) -> ! {
    eprintln!("impair: {msg}");
    exit(2)
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn setsockopt<T>(fd: RawFd, level: i32, name: i32, v: &T) -> std::io::Result<()> {
    // SAFETY: v points to a live T of the size we pass.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            v as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// An AF_PACKET socket bound to `ifname` for every protocol, which does not
/// see its own (or any) outgoing frames.
fn open_packet_socket(ifname: &str) -> RawFd {
    let cname =
        CString::new(ifname).unwrap_or_else(|_| die(format!("bad interface name {ifname:?}")));
    // SAFETY: plain FFI call with a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        die(format!("interface {ifname}: {}", errno()));
    }
    // Protocol 0 receives nothing until bind() names one, so no frame of
    // another interface slips in between socket() and bind().
    // SAFETY: plain FFI call.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        die(format!(
            "socket(AF_PACKET) for {ifname}: {} (needs CAP_NET_RAW)",
            errno()
        ));
    }
    setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &1i32)
        .unwrap_or_else(|e| die(format!("PACKET_IGNORE_OUTGOING on {ifname}: {e}")));
    for (name, force) in [
        (libc::SO_RCVBUF, libc::SO_RCVBUFFORCE),
        (libc::SO_SNDBUF, libc::SO_SNDBUFFORCE),
    ] {
        // The FORCE variants need CAP_NET_ADMIN; fall back to the capped ones.
        if setsockopt(fd, libc::SOL_SOCKET, force, &SOCK_BUF).is_err() {
            let _ = setsockopt(fd, libc::SOL_SOCKET, name, &SOCK_BUF);
        }
    }
    // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ALL.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: sll is a valid sockaddr_ll of the size we pass.
    let r = unsafe {
        libc::bind(
            fd,
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r != 0 {
        die(format!("bind to {ifname}: {}", errno()));
    }
    #[repr(C)]
    struct PacketMreq {
        ifindex: i32,
        typ: u16,
        alen: u16,
        address: [u8; 8],
    }
    let mreq = PacketMreq {
        ifindex: ifindex as i32,
        typ: PACKET_MR_PROMISC,
        alen: 0,
        address: [0; 8],
    };
    setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq)
        .unwrap_or_else(|e| die(format!("promiscuous mode on {ifname}: {e}")));
    fd
}

/// Frames the kernel dropped on this socket since the last call.
fn socket_drops(fd: RawFd) -> u64 {
    #[repr(C)]
    #[derive(Default)]
    struct TpacketStats {
        packets: u32,
        drops: u32,
    }
    let mut st = TpacketStats::default();
    let mut len = std::mem::size_of::<TpacketStats>() as libc::socklen_t;
    // SAFETY: st is a writable tpacket_stats of the length we pass.
    let r = unsafe {
        libc::getsockopt(
            fd,
            SOL_PACKET,
            PACKET_STATISTICS,
            &mut st as *mut TpacketStats as *mut libc::c_void,
            &mut len,
        )
    };
    if r == 0 {
        st.drops as u64
    } else {
        0
    }
}

/// Length of the IP packet in an IPv4 frame (without Ethernet padding), or
/// None for other frames.
fn ipv4_len(frame: &[u8]) -> Option<usize> {
    if frame.len() < 14 + 20 || u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_IP {
        return None;
    }
    let total = u16::from_be_bytes([frame[16], frame[17]]) as usize;
    let avail = frame.len() - 14;
    // A bogus total length (it is what we may be about to corrupt on a
    // later frame, but not this one) falls back to everything after the
    // Ethernet header.
    Some(if (20..=avail).contains(&total) {
        total
    } else {
        avail
    })
}

fn csum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The ICMP error a router hop of `mtu` (too big, DF) or a firewall
/// rejecting TCP SYNs to `reject_port` sends back for `frame`, if either
/// applies (see the module doc).
fn icmp_reply(frame: &[u8], mtu: u16, reject_port: u16) -> Option<Vec<u8>> {
    let ip_len = ipv4_len(frame)?;
    let ip = &frame[14..14 + ip_len];
    let ihl = usize::from(ip[0] & 0xf) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl + 8 {
        return None;
    }
    let df = ip[6] & 0x40 != 0;
    let (code, next_mtu) = if mtu != 0 && ip_len > usize::from(mtu) && df {
        (4u8, mtu)
    } else if reject_port != 0
        && ip[9] == 6
        && ip.len() >= ihl + 14
        && u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]) == reject_port
        && ip[ihl + 13] & 0x12 == 0x02
    {
        (3u8, 0)
    } else {
        return None;
    };
    let quote = &ip[..ihl + 8];
    let mut icmp = vec![3u8, code, 0, 0, 0, 0];
    icmp.extend_from_slice(&next_mtu.to_be_bytes());
    icmp.extend_from_slice(quote);
    let c = csum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut hdr = [0u8; 20];
    hdr[0] = 0x45;
    hdr[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    hdr[8] = 64;
    hdr[9] = 1;
    hdr[12..16].copy_from_slice(&ip[16..20]);
    hdr[16..20].copy_from_slice(&ip[12..16]);
    let c = csum(&hdr);
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
    let mut out = Vec::with_capacity(14 + 20 + icmp.len());
    out.extend_from_slice(&frame[6..12]);
    out.extend_from_slice(&frame[0..6]);
    out.extend_from_slice(&ETH_P_IP.to_be_bytes());
    out.extend_from_slice(&hdr);
    out.extend_from_slice(&icmp);
    Some(out)
}

struct Held {
    data: Vec<u8>,
    /// Further fresh frames of this direction still to be sent before it.
    behind: u32,
    deadline: Instant,
}

/// One direction: frames read from `rx` are written to `tx`.
struct Direction {
    rx: RawFd,
    tx: RawFd,
    cfg: Config,
    rng: Rng,
    t_loss: u64,
    t_corrupt: u64,
    t_dup: u64,
    t_reorder: u64,
    held: VecDeque<Held>,
    pool: Vec<Vec<u8>>,
    c: Counters,
}

/// A frame to write: a slot of the receive batch or a released held frame.
enum Out {
    Slot(usize),
    Released(Vec<u8>),
}

impl Direction {
    fn new(rx: RawFd, tx: RawFd, cfg: Config, stream: u64) -> Direction {
        // Derive the direction's stream from the seed through the mixer, so
        // that seeds 1 and 2 give unrelated streams, as do the directions.
        let mut s = Rng::mixed(cfg.seed ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03));
        let start = s.next_u64();
        Direction {
            rx,
            tx,
            cfg,
            rng: Rng::mixed(start),
            t_loss: threshold(cfg.loss),
            t_corrupt: threshold(cfg.corrupt),
            t_dup: threshold(cfg.dup),
            t_reorder: threshold(cfg.reorder),
            held: VecDeque::new(),
            pool: Vec::new(),
            c: Counters::default(),
        }
    }

    /// A fresh frame goes out: it passes every held frame by one, and those
    /// with none left to wait for follow it.
    fn emit(&mut self, o: Out, out: &mut Vec<Out>) {
        out.push(o);
        for h in self.held.iter_mut() {
            h.behind = h.behind.saturating_sub(1);
        }
        while let Some(i) = self.held.iter().position(|h| h.behind == 0) {
            let h = self.held.remove(i).expect("index from position");
            out.push(Out::Released(h.data));
        }
    }

    /// Releases held frames whose time is up.
    fn expire(&mut self, now: Instant, out: &mut Vec<Out>) {
        while let Some(i) = self.held.iter().position(|h| h.deadline <= now) {
            let h = self.held.remove(i).expect("index from position");
            self.c.hold_timeouts += 1;
            out.push(Out::Released(h.data));
        }
    }

    /// Decides the fate of one received frame (batch slot `i`).
    fn frame(&mut self, i: usize, frame: &mut [u8], now: Instant, out: &mut Vec<Out>) {
        self.c.frames_in += 1;
        self.c.bytes_in += frame.len() as u64;
        let Some(ip_len) = ipv4_len(frame) else {
            self.c.non_ipv4 += 1;
            self.emit(Out::Slot(i), out);
            return;
        };
        // Always the same six draws per IPv4 frame.
        let r_loss = self.rng.next_u64();
        let r_corrupt = self.rng.next_u64();
        let r_dup = self.rng.next_u64();
        let r_reorder = self.rng.next_u64();
        let bit = self.rng.below(ip_len as u64 * 8) as usize;
        let behind = 1 + self.rng.below(4) as u32;
        if let Some(reply) = icmp_reply(frame, self.cfg.mtu, self.cfg.reject_port) {
            // SAFETY: a valid buffer of the given length.
            let r = unsafe {
                libc::send(
                    self.rx,
                    reply.as_ptr() as *const libc::c_void,
                    reply.len(),
                    0,
                )
            };
            if r < 0 {
                self.c.tx_errors += 1;
            } else {
                self.c.icmp_sent += 1;
            }
            self.c.dropped += 1;
            return;
        }
        if r_loss < self.t_loss {
            self.c.dropped += 1;
            return;
        }
        if r_corrupt < self.t_corrupt {
            frame[14 + bit / 8] ^= 1 << (bit % 8);
            self.c.corrupted += 1;
        }
        let dup = r_dup < self.t_dup;
        if dup {
            self.c.duplicated += 1;
        }
        if r_reorder < self.t_reorder {
            if self.held.len() < self.cfg.hold_cap {
                let mut data = self.pool.pop().unwrap_or_default();
                data.clear();
                data.extend_from_slice(frame);
                self.held.push_back(Held {
                    data,
                    behind,
                    deadline: now + self.cfg.hold_max,
                });
                self.c.reordered += 1;
                // A duplicate of a held frame goes ahead of it.
                if dup {
                    self.emit(Out::Slot(i), out);
                }
                return;
            }
            self.c.hold_full += 1;
        }
        self.emit(Out::Slot(i), out);
        if dup {
            self.emit(Out::Slot(i), out);
        }
    }

    fn run(mut self) -> Counters {
        let mut bufs = vec![[0u8; FRAME_BUF]; BATCH];
        // SAFETY: iovec and mmsghdr are plain old data; zeroes are valid.
        let mut iov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut out: Vec<Out> = Vec::with_capacity(4 * BATCH);
        let mut tx_iov: Vec<libc::iovec> = Vec::with_capacity(4 * BATCH);
        let mut tx_msgs: Vec<libc::mmsghdr> = Vec::with_capacity(4 * BATCH);
        while !STOP.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wait = self
                .held
                .iter()
                .map(|h| h.deadline.saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_millis(50))
                .min(Duration::from_millis(50));
            let mut pfd = libc::pollfd {
                fd: self.rx,
                events: libc::POLLIN,
                revents: 0,
            };
            // Round up so that a 0.3 ms wait does not become a busy loop.
            let ms = (wait.as_micros() as i32 + 999) / 1000;
            // SAFETY: one valid pollfd.
            let pr = unsafe { libc::poll(&mut pfd, 1, ms) };
            if pr < 0 && errno().kind() != std::io::ErrorKind::Interrupted {
                die(format!("poll: {}", errno()));
            }
            let mut n = 0;
            if pr > 0 {
                for k in 0..BATCH {
                    iov[k] = libc::iovec {
                        iov_base: bufs[k].as_mut_ptr() as *mut libc::c_void,
                        iov_len: FRAME_BUF,
                    };
                    msgs[k].msg_hdr.msg_iov = &mut iov[k];
                    msgs[k].msg_hdr.msg_iovlen = 1;
                    msgs[k].msg_hdr.msg_name = std::ptr::null_mut();
                    msgs[k].msg_hdr.msg_namelen = 0;
                    msgs[k].msg_hdr.msg_control = std::ptr::null_mut();
                    msgs[k].msg_hdr.msg_controllen = 0;
                    msgs[k].msg_hdr.msg_flags = 0;
                    msgs[k].msg_len = 0;
                }
                // SAFETY: BATCH message headers, each with one iovec into
                // its own buffer of FRAME_BUF bytes, all alive across the call.
                let r = unsafe {
                    libc::recvmmsg(
                        self.rx,
                        msgs.as_mut_ptr(),
                        BATCH as u32,
                        libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                        std::ptr::null_mut(),
                    )
                };
                if r < 0 {
                    let e = errno();
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) {
                        die(format!("recvmmsg: {e}"));
                    }
                } else {
                    n = r as usize;
                }
            }
            let now = Instant::now();
            out.clear();
            for k in 0..n {
                let len = msgs[k].msg_len as usize;
                if len > FRAME_BUF || msgs[k].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    self.c.truncated += 1;
                    continue;
                }
                self.frame(k, &mut bufs[k][..len], now, &mut out);
            }
            self.expire(now, &mut out);
            if out.is_empty() {
                continue;
            }
            // Write everything decided in this round, in order.
            tx_iov.clear();
            tx_msgs.clear();
            for o in &out {
                let (ptr, len) = match o {
                    Out::Slot(k) => (bufs[*k].as_ptr(), msgs[*k].msg_len as usize),
                    Out::Released(v) => (v.as_ptr(), v.len()),
                };
                tx_iov.push(libc::iovec {
                    iov_base: ptr as *mut libc::c_void,
                    iov_len: len,
                });
            }
            for v in tx_iov.iter_mut() {
                // SAFETY: plain old data.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                tx_msgs.push(m);
            }
            let mut sent = 0;
            while sent < tx_msgs.len() {
                // SAFETY: the headers point into tx_iov, whose buffers (bufs
                // and the Released vectors in `out`) outlive the call.
                let r = unsafe {
                    libc::sendmmsg(
                        self.tx,
                        tx_msgs[sent..].as_mut_ptr(),
                        (tx_msgs.len() - sent) as u32,
                        0,
                    )
                };
                if r < 0 {
                    if errno().kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    // This frame could not be sent (too big, no buffer): skip it.
                    self.c.tx_errors += 1;
                    sent += 1;
                } else {
                    self.c.frames_out += r as u64;
                    sent += r as usize;
                }
            }
            for o in out.drain(..) {
                if let Out::Released(v) = o {
                    self.pool.push(v);
                }
            }
        }
        // Do not leave held frames behind on a clean stop.
        out.clear();
        let held: Vec<Held> = self.held.drain(..).collect();
        for h in held {
            // SAFETY: a valid buffer of the given length.
            let r = unsafe {
                libc::send(
                    self.tx,
                    h.data.as_ptr() as *const libc::c_void,
                    h.data.len(),
                    0,
                )
            };
            if r >= 0 {
                self.c.frames_out += 1;
            }
        }
        self.c.sock_drops = socket_drops(self.rx);
        self.c
    }
}

/// "0.01" or "1%" as a fraction in 0..=1.
fn parse_rate(s: &str) -> Option<f64> {
    let (num, scale) = match s.strip_suffix('%') {
        Some(n) => (n, 0.01),
        None => (s, 1.0),
    };
    let v = num.trim().parse::<f64>().ok()? * scale;
    (0.0..=1.0).contains(&v).then_some(v)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut a = None;
    let mut b = None;
    let mut cfg = Config {
        seed: 1,
        loss: 0.0,
        dup: 0.0,
        reorder: 0.0,
        corrupt: 0.0,
        hold_max: Duration::from_micros(2000),
        hold_cap: 64,
        mtu: 0,
        reject_port: 0,
    };
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        if flag == "-h" || flag == "--help" {
            println!("usage: impair --a IF --b IF [--seed N] [--loss P] [--dup P] [--reorder P] [--corrupt P] [--hold-max-us US] [--hold-cap N] [--mtu N] [--reject-port PORT]\n(P: fraction like 0.01 or percentage like 1%; see the doc comment of tests/src/bin/impair.rs)");
            return;
        }
        let val = args
            .get(i + 1)
            .unwrap_or_else(|| die(format!("{flag} needs a value")))
            .as_str();
        let rate = || {
            parse_rate(val)
                .unwrap_or_else(|| die(format!("{flag} {val}: not a rate in 0..1 or 0%..100%")))
        };
        match flag {
            "--a" => a = Some(val.to_string()),
            "--b" => b = Some(val.to_string()),
            "--seed" => cfg.seed = val.parse().unwrap_or_else(|_| die(format!("--seed {val}"))),
            "--loss" => cfg.loss = rate(),
            "--dup" => cfg.dup = rate(),
            "--reorder" => cfg.reorder = rate(),
            "--corrupt" => cfg.corrupt = rate(),
            "--hold-max-us" => {
                let us: u64 = val
                    .parse()
                    .unwrap_or_else(|_| die(format!("--hold-max-us {val}")));
                if !(1..=1_000_000).contains(&us) {
                    die("--hold-max-us must be in 1..=1000000".into());
                }
                cfg.hold_max = Duration::from_micros(us)
            }
            "--hold-cap" => {
                cfg.hold_cap = val
                    .parse()
                    .unwrap_or_else(|_| die(format!("--hold-cap {val}")));
                if !(1..=4096).contains(&cfg.hold_cap) {
                    die("--hold-cap must be in 1..=4096".into());
                }
            }
            "--mtu" => {
                cfg.mtu = val.parse().unwrap_or_else(|_| die(format!("--mtu {val}")));
                if cfg.mtu < 68 {
                    die("--mtu must be at least 68 (RFC 791)".into());
                }
            }
            "--reject-port" => {
                cfg.reject_port = val
                    .parse()
                    .unwrap_or_else(|_| die(format!("--reject-port {val}")))
            }
            _ => die(format!("unknown flag {flag} (see --help)")),
        }
        i += 2;
    }
    let (Some(a), Some(b)) = (a, b) else {
        die("--a IF and --b IF are required".into())
    };
    if a == b {
        die("--a and --b must be different interfaces".into());
    }
    // SAFETY: the handler makes one atomic store, async-signal-safe.
    unsafe { tas_testkit::on_interrupt(on_signal) };
    let fa = open_packet_socket(&a);
    let fb = open_packet_socket(&b);
    let ab = Direction::new(fa, fb, cfg, 1);
    let ba = Direction::new(fb, fa, cfg, 2);
    let t_ab = std::thread::Builder::new()
        .name("impair a->b".into())
        .spawn(move || ab.run())
        .expect("thread");
    let t_ba = std::thread::Builder::new()
        .name("impair b->a".into())
        .spawn(move || ba.run())
        .expect("thread");
    println!(
        "impair ready a={a} b={b} seed={} loss={} dup={} reorder={} corrupt={} hold_max_us={} hold_cap={} mtu={} reject_port={}",
        cfg.seed,
        cfg.loss,
        cfg.dup,
        cfg.reorder,
        cfg.corrupt,
        cfg.hold_max.as_micros(),
        cfg.hold_cap,
        cfg.mtu,
        cfg.reject_port
    );
    let c_ab = t_ab
        .join()
        .unwrap_or_else(|_| die("a->b thread panicked".into()));
    let c_ba = t_ba
        .join()
        .unwrap_or_else(|_| die("b->a thread panicked".into()));
    println!("{}", c_ab.line("a->b"));
    println!("{}", c_ba.line("b->a"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(loss: f64, dup: f64, reorder: f64, corrupt: f64) -> Config {
        Config {
            seed: 42,
            loss,
            dup,
            reorder,
            corrupt,
            hold_max: Duration::from_millis(2),
            hold_cap: 64,
            mtu: 0,
            reject_port: 0,
        }
    }

    /// A TCP frame of `len` IP bytes, DF set, to `dport` with `flags`.
    fn tcp_frame(len: usize, dport: u16, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + len];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&(len as u16).to_be_bytes());
        f[20] = 0x40;
        f[23] = 6;
        f[26..30].copy_from_slice(&[198, 18, 0, 1]);
        f[30..34].copy_from_slice(&[198, 18, 0, 2]);
        f[34..36].copy_from_slice(&61000u16.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[38..42].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        f[47] = flags;
        f
    }

    #[test]
    fn too_big_and_rejected_frames_draw_icmp_errors() {
        // Fits, or no DF: no answer.
        assert!(icmp_reply(&tcp_frame(1000, 80, 0x10), 1000, 0).is_none());
        let mut nodf = tcp_frame(1500, 80, 0x10);
        nodf[20] = 0;
        assert!(icmp_reply(&nodf, 1000, 0).is_none());
        let r = icmp_reply(&tcp_frame(1500, 80, 0x10), 1000, 0).expect("frag needed");
        assert_eq!(&r[0..6], &[2, 0, 0, 0, 0, 1], "back to the sender");
        assert_eq!(&r[26..34], &[198, 18, 0, 2, 198, 18, 0, 1]);
        assert_eq!((r[23], r[34], r[35]), (1, 3, 4));
        assert_eq!(&r[40..42], &1000u16.to_be_bytes());
        assert_eq!(csum(&r[14..34]), 0, "IP checksum");
        assert_eq!(csum(&r[34..]), 0, "ICMP checksum");
        assert_eq!(r.len(), 14 + 20 + 8 + 28, "quotes the header + 8 bytes");
        assert_eq!(&r[42 + 24..42 + 28], &0xdead_beefu32.to_be_bytes());
        // A SYN to the rejected port: port unreachable; its ACK: no.
        let r = icmp_reply(&tcp_frame(60, 7301, 0x02), 0, 7301).expect("port unreachable");
        assert_eq!((r[34], r[35]), (3, 3));
        assert!(icmp_reply(&tcp_frame(60, 7301, 0x12), 0, 7301).is_none());
        assert!(icmp_reply(&tcp_frame(60, 7300, 0x02), 0, 7301).is_none());
        // Short or not IPv4: nothing, never a panic.
        for n in 0..48 {
            let _ = icmp_reply(&tcp_frame(1500, 7301, 2)[..n], 1000, 7301);
        }
    }

    /// A minimal IPv4 frame (Ethernet + 20-byte header + payload) whose
    /// payload starts with `id`.
    fn frame(id: u32) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 100];
        f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&120u16.to_be_bytes());
        f[34..38].copy_from_slice(&id.to_be_bytes());
        f
    }

    fn id_of(f: &[u8]) -> u32 {
        u32::from_be_bytes([f[34], f[35], f[36], f[37]])
    }

    /// Pushes `n` frames through a direction (no sockets) and returns the
    /// ids in the order they would be sent, and the frames themselves.
    fn run(d: &mut Direction, n: u32, now: Instant) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        for id in 0..n {
            let mut f = frame(id);
            let mut out = Vec::new();
            d.frame(0, &mut f, now, &mut out);
            for o in out {
                sent.push(match o {
                    Out::Slot(_) => f.clone(),
                    Out::Released(v) => v,
                });
            }
        }
        sent
    }

    #[test]
    fn same_seed_same_decisions_other_direction_other_stream() {
        let now = Instant::now();
        let c = cfg(0.05, 0.05, 0.05, 0.05);
        let a: Vec<Vec<u8>> = run(&mut Direction::new(-1, -1, c, 1), 5000, now);
        let b: Vec<Vec<u8>> = run(&mut Direction::new(-1, -1, c, 1), 5000, now);
        let other: Vec<Vec<u8>> = run(&mut Direction::new(-1, -1, c, 2), 5000, now);
        assert_eq!(a, b);
        assert_ne!(a, other);
    }

    #[test]
    fn rates_are_about_what_was_asked() {
        let now = Instant::now();
        let mut d = Direction::new(-1, -1, cfg(0.05, 0.02, 0.03, 0.01), 1);
        run(&mut d, 100_000, now);
        let c = &d.c;
        let near =
            |n: u64, p: f64, base: u64| (n as f64 - p * base as f64).abs() < 0.1 * p * base as f64;
        assert!(near(c.dropped, 0.05, 100_000), "{c:?}");
        let kept = 100_000 - c.dropped;
        assert!(near(c.duplicated, 0.02, kept), "{c:?}");
        assert!(near(c.reordered + c.hold_full, 0.03, kept), "{c:?}");
        assert!(near(c.corrupted, 0.01, kept), "{c:?}");
    }

    #[test]
    fn loss_only_drops_and_keeps_order() {
        let now = Instant::now();
        let mut d = Direction::new(-1, -1, cfg(0.1, 0.0, 0.0, 0.0), 1);
        let ids: Vec<u32> = run(&mut d, 1000, now).iter().map(|f| id_of(f)).collect();
        assert_eq!(ids.len() as u64, 1000 - d.c.dropped);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_held_frame_goes_out_behind_one_to_four_fresh_frames() {
        let now = Instant::now();
        let mut d = Direction::new(-1, -1, cfg(0.0, 0.0, 0.2, 0.0), 1);
        let mut sent: Vec<u32> = Vec::new();
        let mut held = std::collections::HashSet::new();
        for id in 0..2000 {
            let mut f = frame(id);
            let mut out = Vec::new();
            d.frame(0, &mut f, now, &mut out);
            let ids: Vec<u32> = out
                .iter()
                .map(|o| match o {
                    Out::Slot(_) => id,
                    Out::Released(v) => id_of(v),
                })
                .collect();
            if !ids.contains(&id) {
                held.insert(id);
            }
            sent.extend(ids);
        }
        assert!(held.len() > 300, "{:?}", d.c);
        assert_eq!(held.len() as u64, d.c.reordered);
        // Every frame once, except those still held at the end.
        let mut uniq = sent.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), sent.len());
        assert_eq!(sent.len() + d.held.len(), 2000);
        // Frames never held go out in order; a held frame goes out behind
        // exactly 1 to 4 later frames that were never held.
        for (pos, &id) in sent.iter().enumerate() {
            let fresh_ahead = sent[..pos]
                .iter()
                .filter(|&&x| x > id && !held.contains(&x))
                .count();
            if held.contains(&id) {
                assert!(
                    (1..=4).contains(&fresh_ahead),
                    "held frame {id} went out behind {fresh_ahead} fresh ones"
                );
            } else {
                assert_eq!(fresh_ahead, 0, "frame {id} overtaken by fresh frames");
            }
        }
    }

    #[test]
    fn held_frames_leave_after_hold_max() {
        let now = Instant::now();
        let mut d = Direction::new(-1, -1, cfg(0.0, 0.0, 1.0, 0.0), 1);
        let sent = run(&mut d, 3, now);
        // Every frame is held and none goes out fresh, so only time
        // releases them.
        assert!(sent.is_empty());
        assert_eq!(d.held.len(), 3);
        let mut out = Vec::new();
        d.expire(now + Duration::from_millis(1), &mut out);
        assert!(out.is_empty());
        d.expire(now + Duration::from_millis(2), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(d.c.hold_timeouts, 3);
    }

    #[test]
    fn corruption_flips_one_bit_of_the_ip_packet() {
        let now = Instant::now();
        let mut d = Direction::new(-1, -1, cfg(0.0, 0.0, 0.0, 1.0), 1);
        for id in 0..1000 {
            let orig = frame(id);
            let mut f = orig.clone();
            let mut out = Vec::new();
            d.frame(0, &mut f, now, &mut out);
            let diff: u32 = orig.iter().zip(&f).map(|(a, b)| (a ^ b).count_ones()).sum();
            assert_eq!(diff, 1);
            assert_eq!(orig[..14], f[..14], "Ethernet header touched");
        }
    }

    #[test]
    fn arp_passes_untouched() {
        let now = Instant::now();
        let mut d = Direction::new(-1, -1, cfg(1.0, 1.0, 1.0, 1.0), 1);
        let mut f = frame(0);
        f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let orig = f.clone();
        let mut out = Vec::new();
        d.frame(0, &mut f, now, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(f, orig);
        assert_eq!(d.c.non_ipv4, 1);
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("0.01"), Some(0.01));
        assert_eq!(parse_rate("5%"), Some(0.05));
        assert_eq!(parse_rate("0.5%"), Some(0.005));
        assert_eq!(parse_rate("150%"), None);
        assert_eq!(parse_rate("-1"), None);
        assert_eq!(threshold(0.0), 0);
        assert_eq!(threshold(1.0), u64::MAX);
    }
}
