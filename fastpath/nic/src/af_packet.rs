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

use crate::linux;
use crate::{FrameBatch, Nic, NicError};
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
    _rings: linux::Mmap,
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
        Self::open_inner(ifname, cfg, ETH_P_ALL)
    }

    /// A socket that only transmits on `ifname` (bound with protocol 0, it
    /// receives nothing): the TX side of a lane whose frames arrive by
    /// software steering from another lane (an AF_XDP interface with fewer
    /// RX queues than lanes).
    pub fn open_tx_only(ifname: &str) -> Result<Self, NicError> {
        Self::open_inner(
            ifname,
            AfPacketConfig {
                rx_frames: 32,
                ..AfPacketConfig::default()
            },
            0,
        )
    }

    fn open_inner(ifname: &str, cfg: AfPacketConfig, proto: u16) -> Result<Self, NicError> {
        let link = linux::link_info(ifname)?;
        // Protocol 0 at creation: the socket receives nothing until `bind`
        // names the interface and ETH_P_ALL, so no frame from another
        // interface can slip into the ring in between.
        let fd = linux::socket(
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
        linux::setsockopt(&fd, SOL_PACKET, PACKET_VERSION, &TPACKET_V2)
            .map_err(linux::os("setsockopt(PACKET_VERSION, TPACKET_V2)"))?;
        let filter_outgoing =
            match linux::setsockopt(&fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &1 as &libc::c_int) {
                Ok(()) => false,
                Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => true,
                Err(e) => {
                    return Err(NicError::Os {
                        op: "setsockopt(PACKET_IGNORE_OUTGOING)",
                        source: e,
                    })
                }
            };
        linux::setsockopt(&fd, SOL_PACKET, PACKET_LOSS, &1 as &libc::c_int)
            .map_err(linux::os("setsockopt(PACKET_LOSS)"))?;

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
            linux::setsockopt(&fd, SOL_PACKET, opt, &req).map_err(linux::os(what))?;
        }
        let rx_bytes = rx_blocks * RING_BLOCK_SIZE;
        let tx_bytes = tx_blocks * RING_BLOCK_SIZE;
        let rings = linux::Mmap::shared(&fd, rx_bytes + tx_bytes, 0)
            .map_err(linux::os("mmap(PACKET rings)"))?;
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
        sll.sll_protocol = proto.to_be();
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
            return Err(linux::last_os("bind(AF_PACKET)"));
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
        linux::setsockopt(&self.fd, SOL_PACKET, PACKET_FANOUT, &arg)
            .map_err(linux::os("setsockopt(PACKET_FANOUT)"))
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
        match linux::setsockopt(&self.fd, SOL_PACKET, PACKET_FANOUT, &arg) {
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
                    return Err(linux::last_os("getsockopt(PACKET_FANOUT)"));
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
            return Err(linux::last_os("getsockopt(PACKET_STATISTICS)"));
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

/// Copies of the ARP frames the kernel receives on an interface (shared
/// mode: the kernel owns the address and answers ARP; tasd only learns the
/// neighbours' MACs from what passes). Outgoing frames are not seen.
pub struct ArpTap {
    fd: OwnedFd,
}

const ETH_P_ARP: u16 = 0x0806;

impl ArpTap {
    pub fn open(ifname: &str) -> Result<ArpTap, NicError> {
        let link = linux::link_info(ifname)?;
        let fd = linux::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
        .map_err(linux::os("socket(AF_PACKET) for ARP"))?;
        linux::setsockopt(&fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &1 as &libc::c_int)
            .map_err(linux::os("setsockopt(PACKET_IGNORE_OUTGOING)"))?;
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ARP.to_be();
        sll.sll_ifindex = link.ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed; `fd` is open.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(linux::last_os("bind(AF_PACKET, ETH_P_ARP)"));
        }
        Ok(ArpTap { fd })
    }

    /// The next frame into `buf` (its length), or None when none waits.
    pub fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: `buf` is valid for writes of its length; `fd` is open.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        (n > 0).then_some(n as usize)
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testnet::*;
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
        let peer_mac = peer.run(|| linux::link_info("plnx").unwrap().mac);
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
