//! AF_PACKET backend: a raw packet socket with TPACKET_V2 RX and TX rings.
//!
//! The fallback for Linux hosts where AF_XDP is not available. One socket is
//! bound to one interface for all protocols (`ETH_P_ALL`); the socket is
//! non-blocking and its fd is poll-able ([`Nic::wait_fd`]).
//!
//! Why TPACKET_V2 and not V3: V3 hands frames to user space a whole *block*
//! at a time and only retires a partly filled block when its timer fires, which
//! adds up to the block timeout (milliseconds) of latency at low packet rates.
//! V2 publishes every frame as soon as it is written. Both rings live in one
//! shared mapping (RX ring first, then TX ring), so receiving and sending need
//! no system call per frame: RX polls the status word of the next slot, TX
//! fills slots and kicks the kernel with one `send()` per batch.
//!
//! Our own transmitted frames are not looped back to us
//! (`PACKET_IGNORE_OUTGOING`; on kernels without it, outgoing frames are
//! dropped by looking at `sll_pkttype`). Frames for other MACs may be received
//! when the interface is promiscuous; the fast path filters.
//!
//! `PACKET_LOSS` is set so that a frame the kernel refuses to send (too long,
//! for example) is dropped instead of wedging the TX ring.
//!
//! The `sys` submodule holds the small amount of Linux plumbing (interface
//! lookup, ioctls, mappings) that the AF_XDP backend shares.

use super::{FrameBatch, Nic, NicError};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

// linux/if_packet.h and linux/if_ether.h. Defined here rather than taken from
// `libc` so that the backend builds against any libc 0.2.x.
const SOL_PACKET: libc::c_int = 263;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_TX_RING: libc::c_int = 13;
const PACKET_LOSS: libc::c_int = 14;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const TPACKET_V2: libc::c_int = 1;
const PACKET_FANOUT_HASH: u32 = 0;
/// Ask the kernel for an unused group id (Linux 4.13); in the type's flags byte.
const PACKET_FANOUT_FLAG_UNIQUEID: u32 = 0x2000;
/// Most sockets one fanout group takes.
const PACKET_FANOUT_MAX: usize = 256;
const PACKET_OUTGOING: u8 = 4;
const ETH_P_ALL: u16 = 0x0003;
const ETH_HLEN: usize = 14;

const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_SENDING: u32 = 2;
const TP_STATUS_WRONG_FORMAT: u32 = 4;

/// `struct tpacket_req`.
#[repr(C)]
struct TpacketReq {
    tp_block_size: u32,
    tp_block_nr: u32,
    tp_frame_size: u32,
    tp_frame_nr: u32,
}

/// `struct tpacket2_hdr`: the header at the start of every ring slot.
#[repr(C)]
struct Tpacket2Hdr {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_sec: u32,
    tp_nsec: u32,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
    tp_padding: [u8; 4],
}
const _: () = assert!(std::mem::size_of::<Tpacket2Hdr>() == 32);

/// `struct tpacket_stats`.
#[repr(C)]
#[derive(Default)]
struct TpacketStats {
    tp_packets: u32,
    tp_drops: u32,
}

/// TPACKET_ALIGN(sizeof(struct tpacket2_hdr)): where the `sockaddr_ll` of an
/// RX slot starts, and where frame data starts in a TX slot (the kernel uses
/// `tp_hdrlen - sizeof(struct sockaddr_ll)` when no TX offset is configured).
const TPACKET2_ALIGNED_HDR: usize = 32;
/// Offset of `sll_pkttype` inside `struct sockaddr_ll`.
const SLL_PKTTYPE_OFFSET: usize = 10;

/// Ring geometry. Every slot is 2048 bytes; blocks are 64 KiB (a multiple of
/// any page size Linux uses), holding 32 slots each.
const RING_FRAME_SIZE: usize = 2048;
const RING_BLOCK_SIZE: usize = 1 << 16;
const FRAMES_PER_BLOCK: usize = RING_BLOCK_SIZE / RING_FRAME_SIZE;

/// Ring sizes of an [`AfPacketNic`].
#[derive(Clone, Copy, Debug)]
pub struct AfPacketConfig {
    /// RX ring slots (rounded up to a multiple of 32). Default 2048 (4 MiB).
    pub rx_frames: usize,
    /// TX ring slots (rounded up to a multiple of 32). Default 1024 (2 MiB).
    pub tx_frames: usize,
}

impl Default for AfPacketConfig {
    fn default() -> Self {
        AfPacketConfig {
            rx_frames: 2048,
            tx_frames: 1024,
        }
    }
}

/// Counters kept by an [`AfPacketNic`] (this socket only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AfPacketStats {
    /// Frames handed to the caller by `recv`.
    pub rx_frames: u64,
    /// Frames dropped by `recv` because the kernel truncated them (longer
    /// than a ring slot) or their ring header was inconsistent.
    pub rx_bad: u64,
    /// Frames posted to the TX ring.
    pub tx_frames: u64,
    /// Frames `send` dropped because they cannot be sent (shorter than an
    /// Ethernet header, or longer than a ring slot / the MTU).
    pub tx_dropped: u64,
    /// Slots found in `TP_STATUS_WRONG_FORMAT` (kernel refused a frame).
    pub tx_rejected: u64,
    /// `send()` kicks that failed with a non-transient error.
    pub tx_kick_errors: u64,
}

/// Kernel-side counters of the socket (`PACKET_STATISTICS`; reading them
/// resets them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketKernelStats {
    /// Frames the socket saw.
    pub packets: u32,
    /// Frames dropped because the RX ring was full.
    pub drops: u32,
}

/// One TPACKET_V2 ring inside the shared mapping.
struct PacketRing {
    base: *mut u8,
    frames: usize,
    head: usize,
}

impl PacketRing {
    #[inline]
    fn slot(&self, i: usize) -> *mut u8 {
        debug_assert!(i < self.frames);
        // SAFETY: `i < frames`, and the ring is `frames * RING_FRAME_SIZE`
        // bytes of the mapping owned by the socket, so the result stays in it.
        unsafe { self.base.add(i * RING_FRAME_SIZE) }
    }
    #[inline]
    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: every slot starts with the 4-byte-aligned `tp_status` word
        // (slots are 2048-byte aligned in a page-aligned mapping), which the
        // kernel and we access concurrently; AtomicU32 has the layout of u32.
        // The mapping lives as long as `self` (both owned by AfPacketNic).
        unsafe { &*(self.slot(i) as *const AtomicU32) }
    }
    #[inline]
    fn advance(&mut self) {
        self.head += 1;
        if self.head == self.frames {
            self.head = 0;
        }
    }
}

/// A NIC reached through an AF_PACKET socket with TPACKET_V2 rings.
pub struct AfPacketNic {
    rx: PacketRing,
    tx: PacketRing,
    /// The RX and TX rings; unmapped on drop (before the socket closes).
    _rings: sys::Mmap,
    fd: OwnedFd,
    ifname: String,
    ifindex: u32,
    mac: [u8; 6],
    mtu: usize,
    /// Set when PACKET_IGNORE_OUTGOING is unavailable: drop outgoing frames
    /// by their `sll_pkttype` instead.
    filter_outgoing: bool,
    /// A previous kick did not get through (would block); retry it.
    kick_pending: bool,
    stats: AfPacketStats,
}

// SAFETY: the raw pointers in `rx`/`tx` point into `_rings`, a mapping owned
// exclusively by this value; nothing else in this process aliases it, so
// moving the whole value to another thread is sound.
unsafe impl Send for AfPacketNic {}

impl AfPacketNic {
    /// Opens `ifname` with default ring sizes.
    pub fn open(ifname: &str) -> Result<Self, NicError> {
        Self::open_with(ifname, AfPacketConfig::default())
    }

    /// Opens `ifname` with the given ring sizes.
    pub fn open_with(ifname: &str, cfg: AfPacketConfig) -> Result<Self, NicError> {
        let link = sys::link_info(ifname)?;
        // Protocol 0 at creation: the socket receives nothing until `bind`
        // names the interface and ETH_P_ALL, so no frame from another
        // interface can slip into the ring in between.
        let fd = sys::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => NicError::Os {
                op: "socket(AF_PACKET) (needs root or CAP_NET_RAW)",
                source: e,
            },
            _ => NicError::Os {
                op: "socket(AF_PACKET)",
                source: e,
            },
        })?;
        sys::setsockopt(&fd, SOL_PACKET, PACKET_VERSION, &TPACKET_V2)
            .map_err(sys::os("setsockopt(PACKET_VERSION, TPACKET_V2)"))?;
        let filter_outgoing =
            match sys::setsockopt(&fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &1 as &libc::c_int) {
                Ok(()) => false,
                Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => true,
                Err(e) => {
                    return Err(NicError::Os {
                        op: "setsockopt(PACKET_IGNORE_OUTGOING)",
                        source: e,
                    })
                }
            };
        sys::setsockopt(&fd, SOL_PACKET, PACKET_LOSS, &1 as &libc::c_int)
            .map_err(sys::os("setsockopt(PACKET_LOSS)"))?;

        let rx_blocks = cfg.rx_frames.max(1).div_ceil(FRAMES_PER_BLOCK);
        let tx_blocks = cfg.tx_frames.max(1).div_ceil(FRAMES_PER_BLOCK);
        for (opt, blocks, what) in [
            (PACKET_RX_RING, rx_blocks, "setsockopt(PACKET_RX_RING)"),
            (PACKET_TX_RING, tx_blocks, "setsockopt(PACKET_TX_RING)"),
        ] {
            let req = TpacketReq {
                tp_block_size: RING_BLOCK_SIZE as u32,
                tp_block_nr: blocks as u32,
                tp_frame_size: RING_FRAME_SIZE as u32,
                tp_frame_nr: (blocks * FRAMES_PER_BLOCK) as u32,
            };
            sys::setsockopt(&fd, SOL_PACKET, opt, &req).map_err(sys::os(what))?;
        }
        let rx_bytes = rx_blocks * RING_BLOCK_SIZE;
        let tx_bytes = tx_blocks * RING_BLOCK_SIZE;
        let rings = sys::Mmap::shared(&fd, rx_bytes + tx_bytes, 0)
            .map_err(sys::os("mmap(PACKET rings)"))?;
        let rx = PacketRing {
            base: rings.ptr(),
            frames: rx_blocks * FRAMES_PER_BLOCK,
            head: 0,
        };
        let tx = PacketRing {
            // SAFETY: the TX ring follows the RX ring inside the mapping of
            // rx_bytes + tx_bytes bytes.
            base: unsafe { rings.ptr().add(rx_bytes) },
            frames: tx_blocks * FRAMES_PER_BLOCK,
            head: 0,
        };

        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = link.ifindex as i32;
        // SAFETY: `sll` is a valid, initialised sockaddr_ll and we pass its
        // exact size; `fd` is an open socket.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(sys::last_os("bind(AF_PACKET)"));
        }
        tracing::debug!(
            iface = ifname,
            ifindex = link.ifindex,
            rx_frames = rx.frames,
            tx_frames = tx.frames,
            filter_outgoing,
            "AF_PACKET socket open (TPACKET_V2)"
        );
        Ok(AfPacketNic {
            rx,
            tx,
            _rings: rings,
            fd,
            ifname: ifname.to_string(),
            ifindex: link.ifindex,
            mac: link.mac,
            mtu: link.mtu,
            filter_outgoing,
            kick_pending: false,
            stats: AfPacketStats::default(),
        })
    }

    /// Joins fanout group `group_id` with hash distribution: all sockets of a
    /// group (one per fast-path core) share the interface's frames, each flow
    /// going to one socket.
    pub fn set_fanout(&self, group_id: u16) -> Result<(), NicError> {
        let arg: u32 = u32::from(group_id) | (PACKET_FANOUT_HASH << 16);
        sys::setsockopt(&self.fd, SOL_PACKET, PACKET_FANOUT, &arg)
            .map_err(sys::os("setsockopt(PACKET_FANOUT)"))
    }

    /// Opens `n` lanes on `ifname` with default ring sizes; see
    /// [`AfPacketNic::open_lanes_with`].
    pub fn open_lanes(ifname: &str, n: usize) -> Result<Vec<AfPacketNic>, NicError> {
        Self::open_lanes_with(ifname, n, AfPacketConfig::default())
    }

    /// Opens `n` lanes (one per fast-path core) on `ifname`: `n` sockets,
    /// each with its own rings, that share the interface's received frames
    /// by flow. For `n > 1` the sockets form one `PACKET_FANOUT_HASH` group
    /// of their own: the kernel hashes each frame's flow (addresses and
    /// ports, symmetric) to pick the socket, so every frame of a flow lands
    /// on the same lane, and every frame on exactly one lane. `n == 1` is a
    /// plain [`AfPacketNic::open_with`]. Each lane transmits on its own.
    ///
    /// The group's id is chosen by the kernel (`PACKET_FANOUT_FLAG_UNIQUEID`),
    /// so it never joins another process's group; kernels without that
    /// flag get an id made from the process id and a counter. Frames that
    /// reached a socket before the whole group was formed are discarded
    /// (they may have reached another socket too). If a lane is dropped,
    /// the others stay in the group and its flows are spread over them.
    pub fn open_lanes_with(
        ifname: &str,
        n: usize,
        cfg: AfPacketConfig,
    ) -> Result<Vec<AfPacketNic>, NicError> {
        if n == 0 || n > PACKET_FANOUT_MAX {
            return Err(NicError::Unsupported(format!(
                "AF_PACKET: the number of lanes must be in 1..={PACKET_FANOUT_MAX}, not {n}"
            )));
        }
        let first = Self::open_with(ifname, cfg)?;
        if n == 1 {
            return Ok(vec![first]);
        }
        let group = first.new_fanout_group()?;
        let mut lanes = Vec::with_capacity(n);
        lanes.push(first);
        for _ in 1..n {
            let lane = Self::open_with(ifname, cfg)?;
            lane.set_fanout(group)?;
            lanes.push(lane);
        }
        for lane in &mut lanes {
            lane.discard_rx();
        }
        tracing::debug!(
            iface = ifname,
            lanes = n,
            group,
            "AF_PACKET fanout lanes open"
        );
        Ok(lanes)
    }

    /// Starts a new hash fanout group with this socket as its first member;
    /// returns the group's id, for [`AfPacketNic::set_fanout`].
    fn new_fanout_group(&self) -> Result<u16, NicError> {
        let arg: u32 = (PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_UNIQUEID) << 16;
        match sys::setsockopt(&self.fd, SOL_PACKET, PACKET_FANOUT, &arg) {
            Ok(()) => {
                let mut got: u32 = 0;
                let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
                // SAFETY: `got` is a writable u32 and `len` holds its size.
                let rc = unsafe {
                    libc::getsockopt(
                        self.fd.as_raw_fd(),
                        SOL_PACKET,
                        PACKET_FANOUT,
                        &mut got as *mut u32 as *mut libc::c_void,
                        &mut len,
                    )
                };
                if rc != 0 {
                    return Err(sys::last_os("getsockopt(PACKET_FANOUT)"));
                }
                Ok((got & 0xffff) as u16)
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // A kernel without PACKET_FANOUT_FLAG_UNIQUEID (before 4.13):
                // an id of our own, different per process and per call.
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let k = NEXT.fetch_add(1, Ordering::Relaxed);
                let id = (std::process::id().wrapping_mul(0x9e37) ^ k.wrapping_mul(0x61)) as u16;
                self.set_fanout(id)?;
                Ok(id)
            }
            Err(e) => Err(NicError::Os {
                op: "setsockopt(PACKET_FANOUT, UNIQUEID)",
                source: e,
            }),
        }
    }

    /// Hands every frame waiting in the RX ring back to the kernel unread.
    fn discard_rx(&mut self) {
        loop {
            let head = self.rx.head;
            if self.rx.status(head).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                break;
            }
            self.rx
                .status(head)
                .store(TP_STATUS_KERNEL, Ordering::Release);
            self.rx.advance();
        }
    }

    /// Interface name this socket is bound to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Interface index this socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// This socket's counters.
    pub fn stats(&self) -> AfPacketStats {
        self.stats
    }

    /// Reads (and resets) the kernel's counters for this socket.
    pub fn kernel_stats(&self) -> Result<PacketKernelStats, NicError> {
        let mut st = TpacketStats::default();
        let mut len = std::mem::size_of::<TpacketStats>() as libc::socklen_t;
        // SAFETY: `st` is a writable TpacketStats and `len` holds its size;
        // the kernel writes at most `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                SOL_PACKET,
                PACKET_STATISTICS,
                &mut st as *mut TpacketStats as *mut libc::c_void,
                &mut len,
            )
        };
        if rc != 0 {
            return Err(sys::last_os("getsockopt(PACKET_STATISTICS)"));
        }
        Ok(PacketKernelStats {
            packets: st.tp_packets,
            drops: st.tp_drops,
        })
    }

    /// Largest frame (with Ethernet header) that `send` accepts.
    fn max_tx_frame(&self) -> usize {
        (RING_FRAME_SIZE - TPACKET2_ALIGNED_HDR).min(self.mtu + ETH_HLEN + 4)
    }

    /// Asks the kernel to transmit every slot marked SEND_REQUEST. Returns a
    /// non-transient error; transient ones leave `kick_pending` set.
    fn kick(&mut self) -> Result<(), std::io::Error> {
        // SAFETY: a zero-length send with a null buffer is the documented
        // TX-ring kick; `fd` is an open packet socket.
        let rc =
            unsafe { libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT) };
        if rc >= 0 {
            self.kick_pending = false;
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        self.kick_pending = true;
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR) => Ok(()),
            _ => {
                self.stats.tx_kick_errors += 1;
                Err(err)
            }
        }
    }
}

impl Nic for AfPacketNic {
    fn recv(&mut self, batch: &mut FrameBatch) -> Result<usize, NicError> {
        if self.kick_pending {
            // Best effort: a failure is reported by the next `send`.
            let _ = self.kick();
        }
        let mut n = 0;
        while !batch.is_full() {
            let head = self.rx.head;
            let status = self.rx.status(head).load(Ordering::Acquire);
            if status & TP_STATUS_USER == 0 {
                break;
            }
            let slot = self.rx.slot(head);
            let hdr = slot as *const Tpacket2Hdr;
            // SAFETY: TP_STATUS_USER (read with Acquire) hands the slot to us:
            // the kernel wrote the header and the frame before publishing the
            // status, and will not touch the slot until we set it back to
            // TP_STATUS_KERNEL. `hdr` is aligned and inside the slot.
            let (mac_off, snaplen, len, pkttype) = unsafe {
                (
                    (*hdr).tp_mac as usize,
                    (*hdr).tp_snaplen as usize,
                    (*hdr).tp_len as usize,
                    *slot.add(TPACKET2_ALIGNED_HDR + SLL_PKTTYPE_OFFSET),
                )
            };
            if self.filter_outgoing && pkttype == PACKET_OUTGOING {
                // Our own transmission, looped back: not a received frame.
            } else if snaplen != len || mac_off + snaplen > RING_FRAME_SIZE || snaplen == 0 {
                self.stats.rx_bad += 1;
            } else {
                // SAFETY: mac_off + snaplen <= RING_FRAME_SIZE was checked, so
                // the frame lies inside the slot that we own (see above).
                let frame = unsafe { std::slice::from_raw_parts(slot.add(mac_off), snaplen) };
                batch.push(frame);
                n += 1;
            }
            self.rx
                .status(head)
                .store(TP_STATUS_KERNEL, Ordering::Release);
            self.rx.advance();
        }
        self.stats.rx_frames += n as u64;
        Ok(n)
    }

    fn send(&mut self, batch: &FrameBatch) -> Result<usize, NicError> {
        let max = self.max_tx_frame();
        let mut taken = 0;
        let mut posted = 0u64;
        for frame in batch.iter() {
            if frame.len() < ETH_HLEN || frame.len() > max {
                self.stats.tx_dropped += 1;
                taken += 1;
                continue;
            }
            let head = self.tx.head;
            let status = self.tx.status(head).load(Ordering::Acquire);
            if status & (TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING) != 0 {
                break; // ring full: the kernel still owns this slot
            }
            if status & TP_STATUS_WRONG_FORMAT != 0 {
                self.stats.tx_rejected += 1;
            }
            debug_assert!(status == TP_STATUS_AVAILABLE || status & TP_STATUS_WRONG_FORMAT != 0);
            let slot = self.tx.slot(head);
            // SAFETY: the slot is AVAILABLE (or rejected), i.e. owned by us
            // until we publish SEND_REQUEST; TPACKET2_ALIGNED_HDR + len <=
            // RING_FRAME_SIZE because len <= max; `frame` is a separate
            // buffer so the copy does not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    frame.as_ptr(),
                    slot.add(TPACKET2_ALIGNED_HDR),
                    frame.len(),
                );
                let hdr = slot as *mut Tpacket2Hdr;
                std::ptr::addr_of_mut!((*hdr).tp_len).write(frame.len() as u32);
            }
            // Release: the frame and tp_len are visible before the status.
            self.tx
                .status(head)
                .store(TP_STATUS_SEND_REQUEST, Ordering::Release);
            self.tx.advance();
            taken += 1;
            posted += 1;
        }
        self.stats.tx_frames += posted;
        if posted > 0 || self.kick_pending {
            if let Err(e) = self.kick() {
                if posted == 0 {
                    return Err(NicError::Os {
                        op: "send(AF_PACKET TX ring kick)",
                        source: e,
                    });
                }
                tracing::debug!(iface = %self.ifname, error = %e, "AF_PACKET TX kick failed");
            }
        }
        Ok(taken)
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn kind(&self) -> &'static str {
        "af_packet"
    }
}

/// Linux plumbing shared by the AF_PACKET and AF_XDP backends.
pub(crate) mod sys {
    use super::NicError;
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    const SIOCGIFMTU: libc::c_ulong = 0x8921;
    const SIOCGIFHWADDR: libc::c_ulong = 0x8927;
    const ARPHRD_ETHER: u16 = 1;
    const ARPHRD_LOOPBACK: u16 = 772;

    /// `struct ifreq`: the name, then a 24-byte union (we read `ifru_mtu`
    /// and `ifru_hwaddr` out of it).
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        data: [u8; 24],
    }

    /// What the backends need to know about an interface.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct LinkInfo {
        pub ifindex: u32,
        pub mac: [u8; 6],
        pub mtu: usize,
    }

    /// An error builder for `map_err`: `os("what failed")`.
    pub(crate) fn os(op: &'static str) -> impl Fn(std::io::Error) -> NicError {
        move |source| NicError::Os { op, source }
    }

    /// `errno` of the last failed call, as a NicError.
    pub(crate) fn last_os(op: &'static str) -> NicError {
        NicError::Os {
            op,
            source: std::io::Error::last_os_error(),
        }
    }

    /// Index, MAC and MTU of `ifname` in the calling thread's network
    /// namespace. Errors with NoSuchInterface if it does not exist.
    pub(crate) fn link_info(ifname: &str) -> Result<LinkInfo, NicError> {
        if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains(['\0', '/']) {
            return Err(NicError::NoSuchInterface(ifname.to_string()));
        }
        let cname =
            CString::new(ifname).map_err(|_| NicError::NoSuchInterface(ifname.to_string()))?;
        // SAFETY: `cname` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(NicError::NoSuchInterface(ifname.to_string()));
        }
        // Any socket reaches the interface ioctls; a UDP one needs no privilege.
        let sock = socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
            .map_err(os("socket(AF_INET) for interface ioctls"))?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: [0; 24],
        };
        for (d, s) in req.name.iter_mut().zip(ifname.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: `req` is a properly sized, initialised ifreq with a
        // NUL-terminated name; SIOCGIFHWADDR writes only inside it.
        if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIFHWADDR as _, &mut req as *mut IfReq) } != 0
        {
            return Err(last_os("ioctl(SIOCGIFHWADDR)"));
        }
        // ifru_hwaddr is a sockaddr: sa_family (u16), then sa_data.
        let family = u16::from_ne_bytes([req.data[0], req.data[1]]);
        if family != ARPHRD_ETHER && family != ARPHRD_LOOPBACK {
            return Err(NicError::Unsupported(format!(
                "interface {ifname}: not an Ethernet device (ARPHRD {family})"
            )));
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&req.data[2..8]);
        req.data = [0; 24];
        // SAFETY: as above; SIOCGIFMTU writes an int into the union.
        if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIFMTU as _, &mut req as *mut IfReq) } != 0 {
            return Err(last_os("ioctl(SIOCGIFMTU)"));
        }
        let mtu = i32::from_ne_bytes([req.data[0], req.data[1], req.data[2], req.data[3]]);
        Ok(LinkInfo {
            ifindex,
            mac,
            mtu: mtu.max(0) as usize,
        })
    }

    /// How many RX queues `ifname` (in the calling thread's namespace) has
    /// now, from the driver's channel counts (`ETHTOOL_GCHANNELS`: RX-only
    /// plus combined channels). `None` when the driver does not report
    /// channels (such devices have one queue as a rule). Read with an ioctl
    /// rather than from /sys/class/net, which shows the namespace that sysfs
    /// was mounted in, not necessarily the caller's.
    pub(crate) fn rx_queues(ifname: &str) -> Result<Option<u32>, NicError> {
        const SIOCETHTOOL: libc::c_ulong = 0x8946;
        const ETHTOOL_GCHANNELS: u32 = 0x3c;
        /// `struct ethtool_channels`.
        #[repr(C)]
        #[derive(Default)]
        struct Channels {
            cmd: u32,
            max_rx: u32,
            max_tx: u32,
            max_other: u32,
            max_combined: u32,
            rx_count: u32,
            tx_count: u32,
            other_count: u32,
            combined_count: u32,
        }
        if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains(['\0', '/']) {
            return Err(NicError::NoSuchInterface(ifname.to_string()));
        }
        let sock = socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
            .map_err(os("socket(AF_INET) for interface ioctls"))?;
        let mut ch = Channels {
            cmd: ETHTOOL_GCHANNELS,
            ..Channels::default()
        };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: [0; 24],
        };
        for (d, s) in req.name.iter_mut().zip(ifname.bytes()) {
            *d = s as libc::c_char;
        }
        // ifru_data: a pointer to the ethtool command.
        let ptr = &mut ch as *mut Channels as usize;
        req.data[..std::mem::size_of::<usize>()].copy_from_slice(&ptr.to_ne_bytes());
        // SAFETY: `req` is an initialised ifreq with a NUL-terminated name
        // whose ifru_data points to `ch`, a live ethtool_channels that the
        // kernel reads the command from and fills in.
        if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req as *mut IfReq) } != 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EOPNOTSUPP) => Ok(None),
                Some(libc::ENODEV) => Err(NicError::NoSuchInterface(ifname.to_string())),
                _ => Err(NicError::Os {
                    op: "ioctl(SIOCETHTOOL, ETHTOOL_GCHANNELS)",
                    source: e,
                }),
            };
        }
        let n = ch.rx_count.saturating_add(ch.combined_count);
        Ok((n > 0).then_some(n))
    }

    /// `socket(2)` returning an owned fd.
    pub(crate) fn socket(
        domain: libc::c_int,
        ty: libc::c_int,
        proto: libc::c_int,
    ) -> std::io::Result<OwnedFd> {
        // SAFETY: plain system call with integer arguments.
        let fd = unsafe { libc::socket(domain, ty, proto) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// `setsockopt(2)` with a value of type T (passed by its exact size).
    pub(crate) fn setsockopt<T>(
        fd: &OwnedFd,
        level: libc::c_int,
        name: libc::c_int,
        value: &T,
    ) -> std::io::Result<()> {
        // SAFETY: `value` points to size_of::<T>() readable bytes; the kernel
        // only reads them.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                value as *const T as *const libc::c_void,
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// A memory mapping, unmapped on drop.
    pub(crate) struct Mmap {
        ptr: *mut u8,
        len: usize,
    }

    // SAFETY: a Mmap is a plain owned region of memory; ownership may move
    // between threads. (The types embedding it decide about Sync.)
    unsafe impl Send for Mmap {}

    impl Mmap {
        /// A shared mapping of `len` bytes of `fd` at `offset` (rings of
        /// packet and XDP sockets), prefaulted.
        pub(crate) fn shared(fd: &OwnedFd, len: usize, offset: i64) -> std::io::Result<Mmap> {
            // SAFETY: we ask the kernel for a fresh mapping (no fixed address),
            // so no existing memory is affected.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_POPULATE,
                    fd.as_raw_fd(),
                    offset as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Mmap {
                ptr: p as *mut u8,
                len,
            })
        }

        /// Zeroed anonymous private memory of `len` bytes, prefaulted.
        pub(crate) fn anonymous(len: usize) -> std::io::Result<Mmap> {
            // SAFETY: as above, a fresh anonymous mapping.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Mmap {
                ptr: p as *mut u8,
                len,
            })
        }

        pub(crate) fn ptr(&self) -> *mut u8 {
            self.ptr
        }

        pub(crate) fn len(&self) -> usize {
            self.len
        }
    }

    impl Drop for Mmap {
        fn drop(&mut self) {
            // SAFETY: `ptr`/`len` describe a mapping we created and still own;
            // no reference into it outlives `self` (owners keep the Mmap
            // alive as long as they use pointers into it).
            unsafe {
                libc::munmap(self.ptr as *mut libc::c_void, self.len);
            }
        }
    }
}

/// Helpers for tests that need a private network namespace with veth pairs.
/// Shared with the AF_XDP tests.
#[cfg(test)]
pub(crate) mod testnet {
    use super::super::{FrameBatch, Nic};
    use std::os::fd::AsRawFd;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    static SEQ: AtomicUsize = AtomicUsize::new(0);

    /// Fails the test loudly unless we run as root.
    pub(crate) fn require_root(what: &str) {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "{what} needs root (network namespaces, veth, raw sockets); run the tests as root"
        );
    }

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
                    let _ =
                        std::fs::write(format!("/proc/sys/net/ipv6/conf/{p}/disable_ipv6"), "1");
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
            let path = format!("/run/netns/{}", self.ns);
            std::thread::scope(|s| {
                s.spawn(|| {
                    let file = std::fs::File::open(&path).expect("open netns file");
                    // SAFETY: setns on the calling thread only, with a valid
                    // namespace fd; the thread is ours and ends after `f`.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .expect("thread in netns panicked")
            })
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

    fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [b] = chunks.remainder() {
            sum += u32::from(*b) << 8;
        }
        sum
    }

    fn csum_fold(mut sum: u32) -> u16 {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
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
            super::sys::link_info(kernel_if).unwrap().mac
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
                        let s = super::sys::socket(
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
}

#[cfg(test)]
mod tests {
    use super::testnet::*;
    use super::*;
    use std::time::Duration;

    #[test]
    fn unknown_interface_is_an_error() {
        for name in ["tas-no-such-if0", "", "a/b", "much-too-long-interface-name"] {
            match AfPacketNic::open(name) {
                Err(NicError::NoSuchInterface(n)) => assert_eq!(n, name),
                Err(e) => panic!("{name}: unexpected error {e}"),
                Ok(_) => panic!("{name}: opened?"),
            }
        }
    }

    fn pair(net: &TestNet) -> (AfPacketNic, AfPacketNic) {
        net.veth("pa", "pb");
        net.run(|| {
            (
                AfPacketNic::open("pa").unwrap(),
                AfPacketNic::open("pb").unwrap(),
            )
        })
    }

    #[test]
    fn reports_mac_mtu_and_fd() {
        let net = TestNet::new("apinfo");
        net.veth("pa", "pb");
        net.ip(&[
            "link",
            "set",
            "pa",
            "mtu",
            "1400",
            "address",
            "02:11:22:33:44:55",
        ]);
        let nic = net.run(|| AfPacketNic::open("pa").unwrap());
        assert_eq!(nic.mac(), [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(nic.mtu(), 1400);
        assert_eq!(nic.kind(), "af_packet");
        assert!(nic.wait_fd().unwrap() >= 0);
        assert!(nic.ifindex() > 0);
        nic.set_fanout(0x7a5).unwrap();
    }

    #[test]
    fn arp_request_crosses_veth() {
        let net = TestNet::new("aparp");
        let (mut a, mut b) = pair(&net);
        check_arp_crosses(&mut a, &mut b);
        check_arp_crosses(&mut b, &mut a);
    }

    #[test]
    fn outgoing_frames_of_other_sockets_are_not_received() {
        // The kernel never loops a socket's own frames back to it; frames that
        // *others* (the kernel, other sockets) send out of the interface must
        // not show up either.
        let net = TestNet::new("apout");
        net.veth("pa", "pb");
        let (mut a1, mut a2, mut b) = net.run(|| {
            (
                AfPacketNic::open("pa").unwrap(),
                AfPacketNic::open("pa").unwrap(),
                AfPacketNic::open("pb").unwrap(),
            )
        });
        let f = test_frame(b.mac(), a1.mac(), 7, 64);
        send_all(&mut a1, std::slice::from_ref(&f));
        let at_b = recv_matching(&mut b, 1, Duration::from_secs(2), is_test_from(a1.mac()));
        assert_eq!(at_b, vec![f]);
        let at_a2 = recv_matching(
            &mut a2,
            1,
            Duration::from_millis(200),
            is_test_from(a1.mac()),
        );
        assert!(
            at_a2.is_empty(),
            "a second socket on the sender saw the outgoing frame"
        );
    }

    #[test]
    fn batch_of_32_arrives_in_order() {
        let net = TestNet::new("ap32");
        let (mut a, mut b) = pair(&net);
        check_batch_of_32(&mut a, &mut b);
        check_batch_of_32(&mut b, &mut a);
        assert_eq!(a.stats().tx_frames, 32);
        assert_eq!(b.stats().rx_bad, 0);
    }

    #[test]
    fn rings_wrap_around() {
        let net = TestNet::new("apwrap");
        net.veth("pa", "pb");
        let small = AfPacketConfig {
            rx_frames: 64,
            tx_frames: 32,
        };
        let (mut a, mut b) = net.run(|| {
            (
                AfPacketNic::open_with("pa", small).unwrap(),
                AfPacketNic::open_with("pb", small).unwrap(),
            )
        });
        check_many(&mut a, &mut b, 20, 24);
    }

    #[test]
    fn oversized_frames_are_dropped_not_sent() {
        let net = TestNet::new("apbig");
        let (mut a, mut b) = pair(&net);
        let big = test_frame(b.mac(), a.mac(), 1, 1600);
        let ok = test_frame(b.mac(), a.mac(), 2, 100);
        send_all(&mut a, &[big, ok.clone()]);
        assert_eq!(a.stats().tx_dropped, 1);
        let got = recv_matching(&mut b, 2, Duration::from_millis(500), is_test_from(a.mac()));
        assert_eq!(got, vec![ok]);
    }

    #[test]
    fn sent_data_is_not_changed_by_later_sends() {
        // The kernel may keep a sent frame (here: queued in a UDP socket
        // that nobody reads, in another namespace) after the TX slot that
        // carried it has been handed back; reusing the slot must not change
        // what the peer eventually reads.
        let net = TestNet::new("apimm");
        let peer = TestNet::new("apimmp");
        net.veth("ptas", "plnx");
        net.ip(&["link", "set", "plnx", "netns", &peer.ns]);
        peer.ip(&["addr", "add", "198.18.9.2/24", "dev", "plnx"]);
        peer.ip(&["link", "set", "plnx", "up"]);
        let sock = peer.run(|| {
            let s = std::net::UdpSocket::bind("198.18.9.2:5000").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        });
        let peer_mac = peer.run(|| sys::link_info("plnx").unwrap().mac);
        let small = AfPacketConfig {
            rx_frames: 32,
            tx_frames: 32,
        };
        let mut nic = net.run(|| AfPacketNic::open_with("ptas", small).unwrap());
        let me = ([198, 18, 9, 1], 4000);
        let first = udp_frame(
            peer_mac,
            nic.mac(),
            me,
            ([198, 18, 9, 2], 5000),
            &[b'A'; 1000],
        );
        send_all(&mut nic, &[first]);
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..4 {
            let later: Vec<Vec<u8>> = (0..32)
                .map(|_| {
                    udp_frame(
                        peer_mac,
                        nic.mac(),
                        me,
                        ([198, 18, 9, 2], 5001),
                        &[b'B'; 1000],
                    )
                })
                .collect();
            send_all(&mut nic, &later);
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut buf = [0u8; 2000];
        let (n, _) = sock
            .recv_from(&mut buf)
            .expect("first datagram never arrived");
        assert_eq!(n, 1000);
        assert!(
            buf[..n].iter().all(|&b| b == b'A'),
            "datagram changed after it was sent"
        );
    }

    #[test]
    fn interoperates_with_linux_kernel() {
        let net = TestNet::new("apkern");
        net.veth("ptas", "plnx");
        let mut nic = net.run(|| AfPacketNic::open("ptas").unwrap());
        check_kernel_interop(&net, "plnx", &mut nic);
    }

    /// The fanout group a socket is in (getsockopt PACKET_FANOUT).
    fn fanout_group(nic: &AfPacketNic) -> u16 {
        let mut got: u32 = 0;
        let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
        // SAFETY: `got` is a writable u32 and `len` holds its size.
        let rc = unsafe {
            libc::getsockopt(
                nic.fd.as_raw_fd(),
                SOL_PACKET,
                PACKET_FANOUT,
                &mut got as *mut u32 as *mut libc::c_void,
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        (got & 0xffff) as u16
    }

    /// `n` lanes on a 4-queue veth: the kernel's flows spread over them,
    /// each flow on one lane, each frame once; every lane transmits, also
    /// from another thread; after one lane is dropped the others get all
    /// flows.
    fn lanes_on_multiqueue_veth(tag: &str, n: usize) {
        let net = TestNet::new(tag);
        net.veth_mq("ptas", "plnx", 4);
        let lanes = net.run(|| AfPacketNic::open_lanes("ptas", n).unwrap());
        assert_eq!(lanes.len(), n);
        if n > 1 {
            let g = fanout_group(&lanes[0]);
            assert!(lanes.iter().all(|l| fanout_group(l) == g));
        }
        let kmac = kernel_peer(&net, "plnx", lanes[0].mac());
        let (lanes, _) = check_lane_flows(&net, lanes, 0, true);
        let mut lanes = check_lanes_transmit(&net, kmac, lanes);
        if n > 1 {
            drop(lanes.remove(0));
            let (lanes, _) = check_lane_flows(&net, lanes, 1, true);
            check_lanes_transmit(&net, kmac, lanes);
        }
    }

    #[test]
    fn one_lane_gets_every_flow() {
        lanes_on_multiqueue_veth("aplane1", 1);
    }

    #[test]
    fn two_lanes_split_flows() {
        lanes_on_multiqueue_veth("aplane2", 2);
    }

    #[test]
    fn four_lanes_split_flows() {
        lanes_on_multiqueue_veth("aplane4", 4);
    }

    #[test]
    fn lanes_of_two_opens_are_separate_groups() {
        let net = TestNet::new("aplgrp");
        net.veth_mq("ptas", "plnx", 4);
        let (a, b) = net.run(|| {
            (
                AfPacketNic::open_lanes("ptas", 2).unwrap(),
                AfPacketNic::open_lanes("ptas", 3).unwrap(),
            )
        });
        assert_ne!(fanout_group(&a[0]), fanout_group(&b[0]));
        // Both groups see every frame: each is a complete set of lanes.
        let kmac = kernel_peer(&net, "plnx", a[0].mac());
        let (_a, _) = check_lane_flows(&net, a, 0, true);
        let (_b, _) = check_lane_flows(&net, b, 1, true);
        let _ = kmac;
        assert!(net.run(|| AfPacketNic::open_lanes("ptas", 0)).is_err());
    }
}
