//! AF_XDP backend: XDP sockets in copy mode, set up with raw system calls.
//!
//! Layout of one socket (an `Xsk`):
//!
//! * a UMEM of `frames` (default 4096) chunks of 2048 bytes, anonymous
//!   memory registered with the socket. The first half of the chunks are
//!   RX buffers, always either in the fill ring, with the kernel, or in the
//!   RX ring; the second half are TX buffers, either on our free list, in
//!   the TX ring, with the kernel, or in the completion ring. Each half's ring
//!   is as large as the half, so posting a buffer back can never find its
//!   ring full.
//! * four single-producer/single-consumer rings shared with the kernel:
//!   fill and RX (receive), TX and completion (transmit). Producer and
//!   consumer indexes are read with Acquire and published with Release; the
//!   descriptors themselves are plain memory ordered by those.
//!
//! The sockets of one open share an XDP program (hand-assembled, see
//! `bpf.rs`) that redirects **every** frame (ARP too) to the socket stored
//! in an XSKMAP at the frame's RX queue index (`bpf_redirect_map(map,
//! ctx->rx_queue_index, XDP_PASS)`: a queue without a socket passes its
//! frames to the kernel). It is attached with a BPF link: in driver
//! (native) mode when the driver supports it, else in generic (skb) mode.
//! Program, map and link are held in an `Arc` by every [`AfXdpNic`] of the
//! open; the last one dropped closes the link, which detaches the program.
//!
//! **Queues and lanes.** The kernel delivers a redirected frame to an XDP
//! socket only if the socket is bound to the very queue the frame arrived
//! on (`xsk_rcv_check`: same device, same queue index), so a socket sees
//! one queue and no more. [`AfXdpNic::open`] binds one socket to one queue
//! (frames on other queues of a multi-queue interface go to the kernel).
//! [`AfXdpNic::open_lanes`] opens `n` lanes (one per fast-path core) that
//! together cover **every** RX queue of the interface: one socket per queue
//! (each with its own UMEM), queue `q` going to lane `q % n`, so a lane may
//! hold several sockets. The NIC's hash (RSS; on veth, the sender's choice of
//! TX queue, which follows the flow's hash) puts a flow on one queue, hence
//! on one lane. A lane's `recv` reads its sockets in turn (starting with a
//! different one each call, so that none starves), `send` uses its first
//! socket (lane `i` transmits on queue `i`), and `wait_fd` is that socket's
//! fd, or an epoll fd over all of its sockets when it has several. With one
//! lane, a multi-queue interface is thus still read whole. The interface
//! must have at least `n` RX queues (`ethtool -l`); memory is one UMEM
//! (`frames` × 2 KiB, 8 MiB by default) per RX queue.
//!
//! The sockets are bound with `XDP_COPY` (veth refuses zero-copy; copying
//! costs one memcpy per frame, which we pay anyway into the caller's
//! [`FrameBatch`]). `recv` copies frames out of the RX ring and hands the
//! buffers straight back to the fill ring; `send` copies frames into free TX
//! buffers, posts them, kicks the kernel with one `sendto` per batch (copy
//! mode transmits only on a kick, at most 32 frames per kick, so a larger
//! batch gets a few), and reclaims completed buffers.
//!
//! Limits: frames longer than 1792 bytes (chunk minus the kernel's 256-byte
//! XDP headroom) are dropped by the kernel on receive. On veth in generic
//! mode the queue index the program sees is the sender's TX queue minus one
//! (the skb's queue mapping read as a recorded RX queue), so the last queue
//! stays empty; driver mode (the default on veth) sees the real queue.

use super::{FrameBatch, Nic, NicError};
use crate::bpf;
use crate::linux;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

// linux/if_xdp.h
const AF_XDP: libc::c_int = 44;
const SOL_XDP: libc::c_int = 283;
const XDP_MMAP_OFFSETS: libc::c_int = 1;
const XDP_RX_RING: libc::c_int = 2;
const XDP_TX_RING: libc::c_int = 3;
const XDP_UMEM_REG: libc::c_int = 4;
const XDP_UMEM_FILL_RING: libc::c_int = 5;
const XDP_UMEM_COMPLETION_RING: libc::c_int = 6;
const XDP_STATISTICS: libc::c_int = 7;
const XDP_COPY: u16 = 1 << 1;
const XDP_PGOFF_RX_RING: u64 = 0;
const XDP_PGOFF_TX_RING: u64 = 0x8000_0000;
const XDP_UMEM_PGOFF_FILL_RING: u64 = 0x1_0000_0000;
const XDP_UMEM_PGOFF_COMPLETION_RING: u64 = 0x1_8000_0000;

/// UMEM chunk size; also the largest frame `send` accepts.
const CHUNK: usize = 2048;
/// Frames one in-place receive hands over at most (per socket).
const IN_PLACE_MAX: usize = 64;
const ETH_HLEN: usize = 14;
/// Largest number of kicks one `send` makes (the kernel sends at most 32
/// frames per kick in copy mode).
const MAX_KICKS: usize = 16;
/// `bind` retries (10 ms apart) while the queue is still held by a socket
/// that was just closed.
const BIND_BUSY_RETRIES: u32 = 100;

/// `struct xdp_umem_reg`.
#[repr(C)]
struct UmemReg {
    addr: u64,
    len: u64,
    chunk_size: u32,
    headroom: u32,
    flags: u32,
    tx_metadata_len: u32,
}

/// `struct xdp_ring_offset`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct RingOffset {
    producer: u64,
    consumer: u64,
    desc: u64,
    flags: u64,
}

/// `struct xdp_mmap_offsets`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct MmapOffsets {
    rx: RingOffset,
    tx: RingOffset,
    fr: RingOffset,
    cr: RingOffset,
}

/// `struct xdp_desc`.
#[repr(C)]
#[derive(Clone, Copy)]
struct XdpDesc {
    addr: u64,
    len: u32,
    options: u32,
}

/// `struct sockaddr_xdp`.
#[repr(C)]
struct SockaddrXdp {
    family: u16,
    flags: u16,
    ifindex: u32,
    queue_id: u32,
    shared_umem_fd: u32,
}

/// `struct xdp_statistics`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpKernelStats {
    /// Dropped for reasons other than invalid descriptors.
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    /// Dropped because the RX ring was full (we did not poll fast enough).
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived.
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Native: the program runs in the driver (veth supports it).
    Driver,
    /// Generic: the program runs on socket buffers, after the driver.
    Generic,
}

impl XdpMode {
    fn flags(self) -> u32 {
        match self {
            XdpMode::Driver => bpf::XDP_FLAGS_DRV_MODE,
            XdpMode::Generic => bpf::XDP_FLAGS_SKB_MODE,
        }
    }
}

/// Settings of an [`AfXdpNic`].
#[derive(Clone, Copy, Debug)]
pub struct AfXdpConfig {
    /// UMEM chunks of 2048 bytes (a power of two, at least 64); half for RX,
    /// half for TX. Default 4096 (8 MiB).
    pub frames: u32,
    /// Attach mode; `None` tries driver mode, then generic.
    pub mode: Option<XdpMode>,
    /// Shared mode: take only TAS's TCP traffic, pass the rest to the kernel
    /// (`None`: exclusive, every frame of the queue is taken).
    pub shared: Option<SharedFilter>,
}

/// What the shared-mode program takes from the kernel: IPv4 TCP to `ip`
/// (host order) for destination ports in `ports` (TAS's active opens) and
/// those set in the ports map ([`PortSteer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedFilter {
    pub ip: u32,
    pub ports: (u16, u16),
}

impl Default for AfXdpConfig {
    fn default() -> Self {
        AfXdpConfig {
            frames: 4096,
            mode: None,
            shared: None,
        }
    }
}

pub use crate::bpf::PortSteer;

/// Counters kept by an [`AfXdpNic`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AfXdpStats {
    pub rx_frames: u64,
    /// RX descriptors outside the UMEM or longer than a batch slot.
    pub rx_bad: u64,
    pub tx_frames: u64,
    /// Frames `send` dropped because they cannot be sent (shorter than an
    /// Ethernet header or longer than a UMEM chunk).
    pub tx_dropped: u64,
    /// Kicks that failed with a non-transient error.
    pub tx_kick_errors: u64,
}

/// One ring shared with the kernel. Entries are `u64` addresses (fill,
/// completion) or [`XdpDesc`] (RX, TX).
struct Ring {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    entries: *mut u8,
    size: u32,
    mask: u32,
    /// Our copy of the index we own, and the last seen value of the other.
    cached_prod: u32,
    cached_cons: u32,
    _map: linux::Mmap,
}

impl Ring {
    fn map(
        fd: &OwnedFd,
        off: &RingOffset,
        size: u32,
        entry: usize,
        pgoff: u64,
        what: &'static str,
    ) -> Result<Ring, NicError> {
        let len = off.desc as usize + size as usize * entry;
        let map = linux::Mmap::shared(fd, len, pgoff).map_err(linux::os(what))?;
        let base = map.ptr();
        // SAFETY: the kernel reported these offsets for this ring; they lie
        // inside the `len` bytes we mapped (desc is last, then the entries).
        let (producer, consumer, entries) = unsafe {
            (
                base.add(off.producer as usize) as *const AtomicU32,
                base.add(off.consumer as usize) as *const AtomicU32,
                base.add(off.desc as usize),
            )
        };
        let mut r = Ring {
            producer,
            consumer,
            entries,
            size,
            mask: size - 1,
            cached_prod: 0,
            cached_cons: 0,
            _map: map,
        };
        r.cached_prod = r.prod().load(Ordering::Acquire);
        r.cached_cons = r.cons().load(Ordering::Acquire);
        Ok(r)
    }

    #[inline]
    fn prod(&self) -> &AtomicU32 {
        // SAFETY: points at the aligned u32 producer index inside our mapping,
        // which lives as long as `self`; shared with the kernel, hence atomic.
        unsafe { &*self.producer }
    }

    #[inline]
    fn cons(&self) -> &AtomicU32 {
        // SAFETY: as for `prod`.
        unsafe { &*self.consumer }
    }

    /// Producer side: free entries, refreshing the consumer index only when
    /// the cached one says fewer than `want` are free.
    #[inline]
    fn free(&mut self, want: u32) -> u32 {
        let used = self.cached_prod.wrapping_sub(self.cached_cons);
        if self.size - used >= want {
            return self.size - used;
        }
        self.cached_cons = self.cons().load(Ordering::Acquire);
        self.size - self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Producer side: publish everything written so far.
    #[inline]
    fn submit(&self) {
        self.prod().store(self.cached_prod, Ordering::Release);
    }

    /// Consumer side: entries ready to read (at most `want`).
    #[inline]
    fn ready(&mut self, want: u32) -> u32 {
        let mut n = self.cached_prod.wrapping_sub(self.cached_cons);
        if n < want {
            self.cached_prod = self.prod().load(Ordering::Acquire);
            n = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        n.min(want)
    }

    /// Consumer side: hand everything read so far back to the kernel.
    #[inline]
    fn release(&self) {
        self.cons().store(self.cached_cons, Ordering::Release);
    }

    /// Entry `idx` (taken modulo the ring size) as a `T`.
    #[inline]
    fn entry<T>(&self, idx: u32) -> *mut T {
        // SAFETY: (idx & mask) < size, and the entries array holds `size`
        // entries of T (the caller uses the T this ring was mapped with).
        unsafe { (self.entries as *mut T).add((idx & self.mask) as usize) }
    }
}

/// One XDP socket bound to one queue, with its own UMEM and four rings.
struct Xsk {
    // Field order is drop order: the rings, then the socket, then the UMEM.
    rx: Ring,
    tx: Ring,
    fill: Ring,
    comp: Ring,
    fd: OwnedFd,
    umem: linux::Mmap,
    /// TX chunk addresses we own (preallocated to hold all of them).
    tx_free: Vec<u64>,
    queue: u32,
    kick_pending: bool,
    stats: AfXdpStats,
}

/// The XDP program, its XSKMAP and the link that attaches it to the
/// interface. Shared (through an `Arc`) by all the lanes of one open, so the
/// program stays attached until the last of them is dropped.
struct Attachment {
    // Field order is drop order: detach the program first, then free it and
    // the map.
    _link: OwnedFd,
    _prog: OwnedFd,
    _map: OwnedFd,
    /// The ports map of the shared-mode program.
    ports: Option<Arc<OwnedFd>>,
    mode: XdpMode,
}

/// A NIC reached through AF_XDP sockets (copy mode): one socket, or, as a
/// lane of [`AfXdpNic::open_lanes`], the sockets of the queues given to the
/// lane.
pub struct AfXdpNic {
    // Field order is drop order: the last lane of an open detaches the
    // program before its sockets close.
    attach: Arc<Attachment>,
    /// At least one; the first one transmits.
    socks: Vec<Xsk>,
    /// With several sockets: an epoll fd watching all of them ([`Nic::wait_fd`]).
    epoll: Option<OwnedFd>,
    /// The socket `recv` starts with (rotates, so that no queue starves).
    next: usize,
    ifname: String,
    ifindex: u32,
    mac: [u8; 6],
    mtu: usize,
}

// SAFETY: all raw pointers point into mappings owned by this value (rings,
// UMEMs) that nothing else in the process aliases; moving the value to
// another thread moves that ownership with it. The shared `Attachment` only
// holds fds, which the lanes never use.
unsafe impl Send for AfXdpNic {}

fn check_frames(cfg: &AfXdpConfig) -> Result<(), NicError> {
    if !cfg.frames.is_power_of_two() || cfg.frames < 64 || cfg.frames > 1 << 20 {
        return Err(NicError::Unsupported(format!(
            "AF_XDP: frames must be a power of two in 64..=1048576, not {}",
            cfg.frames
        )));
    }
    Ok(())
}

impl Xsk {
    /// Makes a socket with its UMEM and rings and binds it to `queue` of
    /// the interface `ifindex` (copy mode).
    fn open(ifname: &str, ifindex: u32, queue: u32, cfg: &AfXdpConfig) -> Result<Xsk, NicError> {
        let half = cfg.frames / 2;
        let umem = linux::Mmap::anonymous(cfg.frames as usize * CHUNK)
            .map_err(linux::os("mmap(AF_XDP UMEM)"))?;
        let fd = linux::socket(
            AF_XDP,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EAFNOSUPPORT) => NicError::Unsupported(
                "AF_XDP sockets are not supported by this kernel (CONFIG_XDP_SOCKETS)".into(),
            ),
            Some(libc::EPERM) => NicError::Os {
                op: "socket(AF_XDP) (needs root or CAP_NET_RAW)",
                source: e,
            },
            _ => NicError::Os {
                op: "socket(AF_XDP)",
                source: e,
            },
        })?;
        let reg = UmemReg {
            addr: umem.ptr() as u64,
            len: umem.len() as u64,
            chunk_size: CHUNK as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        linux::setsockopt(&fd, SOL_XDP, XDP_UMEM_REG, &reg)
            .map_err(linux::os("setsockopt(XDP_UMEM_REG)"))?;
        for (opt, what) in [
            (XDP_UMEM_FILL_RING, "setsockopt(XDP_UMEM_FILL_RING)"),
            (
                XDP_UMEM_COMPLETION_RING,
                "setsockopt(XDP_UMEM_COMPLETION_RING)",
            ),
            (XDP_RX_RING, "setsockopt(XDP_RX_RING)"),
            (XDP_TX_RING, "setsockopt(XDP_TX_RING)"),
        ] {
            linux::setsockopt(&fd, SOL_XDP, opt, &(half as libc::c_int))
                .map_err(linux::os(what))?;
        }
        let off = mmap_offsets(&fd)?;
        let desc = std::mem::size_of::<XdpDesc>();
        let addr = std::mem::size_of::<u64>();
        let rx = Ring::map(
            &fd,
            &off.rx,
            half,
            desc,
            XDP_PGOFF_RX_RING,
            "mmap(XDP RX ring)",
        )?;
        let tx = Ring::map(
            &fd,
            &off.tx,
            half,
            desc,
            XDP_PGOFF_TX_RING,
            "mmap(XDP TX ring)",
        )?;
        let mut fill = Ring::map(
            &fd,
            &off.fr,
            half,
            addr,
            XDP_UMEM_PGOFF_FILL_RING,
            "mmap(XDP fill ring)",
        )?;
        let comp = Ring::map(
            &fd,
            &off.cr,
            half,
            addr,
            XDP_UMEM_PGOFF_COMPLETION_RING,
            "mmap(XDP completion ring)",
        )?;

        // Every RX chunk goes into the fill ring; every TX chunk is free.
        let n = fill.free(half);
        debug_assert_eq!(n, half);
        for i in 0..n {
            let slot = fill.entry::<u64>(fill.cached_prod);
            // SAFETY: the slot is inside the fill ring and not yet published,
            // so only we access it.
            unsafe { slot.write(u64::from(i) * CHUNK as u64) };
            fill.cached_prod = fill.cached_prod.wrapping_add(1);
        }
        fill.submit();
        let tx_free: Vec<u64> = (half..cfg.frames)
            .rev()
            .map(|i| u64::from(i) * CHUNK as u64)
            .collect();

        let sxdp = SockaddrXdp {
            family: AF_XDP as u16,
            flags: XDP_COPY,
            ifindex,
            queue_id: queue,
            shared_umem_fd: 0,
        };
        // A socket that was just closed on the same queue releases it from a
        // deferred kernel work item, so EBUSY right after a close (a restart,
        // a re-open) is transient: retry for up to a second.
        let mut tries = 0;
        loop {
            // SAFETY: `sxdp` is a valid sockaddr_xdp and we pass its exact size.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    &sxdp as *const SockaddrXdp as *const libc::sockaddr,
                    std::mem::size_of::<SockaddrXdp>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EBUSY) if tries < BIND_BUSY_RETRIES => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Some(libc::EBUSY) => {
                    return Err(NicError::Unsupported(format!(
                        "bind(AF_XDP) to {ifname} queue {queue}: {e} (another AF_XDP socket uses that queue)"
                    )))
                }
                Some(libc::EINVAL) => {
                    return Err(NicError::Unsupported(format!(
                        "bind(AF_XDP) to {ifname} queue {queue}: {e} (does the queue exist?)"
                    )))
                }
                _ => return Err(NicError::Os { op: "bind(AF_XDP)", source: e }),
            }
        }
        Ok(Xsk {
            rx,
            tx,
            fill,
            comp,
            fd,
            umem,
            tx_free,
            queue,
            kick_pending: false,
            stats: AfXdpStats::default(),
        })
    }

    /// The kernel's counters for this socket (XDP_STATISTICS).
    fn kernel_stats(&self) -> Result<XdpKernelStats, NicError> {
        let mut st = XdpKernelStats::default();
        let mut len = std::mem::size_of::<XdpKernelStats>() as libc::socklen_t;
        // SAFETY: `st` is writable and `len` holds its size.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                SOL_XDP,
                XDP_STATISTICS,
                &mut st as *mut XdpKernelStats as *mut libc::c_void,
                &mut len,
            )
        };
        if rc != 0 {
            return Err(linux::last_os("getsockopt(XDP_STATISTICS)"));
        }
        Ok(st)
    }

    /// Moves completed TX chunks back to the free list.
    fn reclaim(&mut self) {
        let n = self.comp.ready(self.comp.size);
        for _ in 0..n {
            // SAFETY: the entry was published by the kernel (ready() read the
            // producer index with Acquire) and is ours until release().
            let addr = unsafe { self.comp.entry::<u64>(self.comp.cached_cons).read() };
            self.comp.cached_cons = self.comp.cached_cons.wrapping_add(1);
            // Completions only ever carry the chunks we posted, so the free
            // list (sized for all TX chunks) never overflows; still, do not
            // trust a stray value.
            if self.tx_free.len() < self.tx_free.capacity() {
                self.tx_free.push(addr - addr % CHUNK as u64);
            }
        }
        if n > 0 {
            self.comp.release();
        }
    }

    /// Kicks the kernel to transmit the TX ring, a few times if it stops
    /// early (copy mode sends at most 32 frames per kick). Returns a
    /// non-transient error.
    fn kick(&mut self) -> Result<(), std::io::Error> {
        for _ in 0..MAX_KICKS {
            // SAFETY: zero-length sendto with null buffer and address is the
            // AF_XDP TX wake-up; `fd` is an open, bound XDP socket.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if rc >= 0 {
                self.kick_pending = false;
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // More to send (per-kick budget), or the device was busy.
                Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS)
                | Some(libc::EINTR) => {
                    // Stop once the kernel has taken everything we posted.
                    if self.tx.cons().load(Ordering::Acquire) == self.tx.cached_prod {
                        self.kick_pending = false;
                        return Ok(());
                    }
                }
                _ => {
                    self.kick_pending = true;
                    self.stats.tx_kick_errors += 1;
                    return Err(e);
                }
            }
        }
        self.kick_pending = true;
        Ok(())
    }

    fn recv(&mut self, batch: &mut FrameBatch) -> usize {
        if self.kick_pending {
            let _ = self.kick();
        }
        let room = (batch.capacity() - batch.len()) as u32;
        if room == 0 {
            return 0;
        }
        // The fill ring has a slot for every RX chunk, so this is a formality.
        let n = self.rx.ready(room).min(self.fill.free(room));
        if n == 0 {
            return 0;
        }
        let umem_len = self.umem.len() as u64;
        let mut got = 0;
        for _ in 0..n {
            // SAFETY: published by the kernel (Acquire in ready()); ours until
            // release().
            let d = unsafe { self.rx.entry::<XdpDesc>(self.rx.cached_cons).read() };
            self.rx.cached_cons = self.rx.cached_cons.wrapping_add(1);
            let len = d.len as usize;
            if d.addr
                .checked_add(d.len as u64)
                .is_some_and(|end| end <= umem_len)
                && len <= super::FRAME_SLOT
                && len > 0
            {
                // SAFETY: [addr, addr + len) lies inside the UMEM (checked), and
                // the kernel wrote the chunk before publishing the descriptor;
                // it will not touch it until we return it via the fill ring.
                let frame = unsafe {
                    std::slice::from_raw_parts(self.umem.ptr().add(d.addr as usize), len)
                };
                batch.push(frame);
                got += 1;
            } else {
                self.stats.rx_bad += 1;
            }
            let slot = self.fill.entry::<u64>(self.fill.cached_prod);
            // SAFETY: free fill slot (checked by free()), not yet published.
            unsafe { slot.write(d.addr - d.addr % CHUNK as u64) };
            self.fill.cached_prod = self.fill.cached_prod.wrapping_add(1);
        }
        self.rx.release();
        self.fill.submit();
        self.stats.rx_frames += got as u64;
        got
    }

    /// [`Nic::recv_in_place`] for this socket: up to `max` (at most
    /// [`IN_PLACE_MAX`]) frames handed to `f` where the kernel put them in
    /// the UMEM, their chunks returned through the fill ring only after
    /// `f` returns. Same checks as `recv`.
    fn recv_in_place(&mut self, max: usize, f: &mut dyn FnMut(&[&[u8]])) -> usize {
        if self.kick_pending {
            let _ = self.kick();
        }
        let room = max.min(IN_PLACE_MAX) as u32;
        if room == 0 {
            return 0;
        }
        let n = self.rx.ready(room).min(self.fill.free(room));
        if n == 0 {
            return 0;
        }
        let umem_len = self.umem.len() as u64;
        let mut frames: [&[u8]; IN_PLACE_MAX] = [&[]; IN_PLACE_MAX];
        let mut chunks = [0u64; IN_PLACE_MAX];
        let mut got = 0;
        for chunk in chunks.iter_mut().take(n as usize) {
            // SAFETY: published by the kernel (Acquire in ready()); ours until
            // release().
            let d = unsafe { self.rx.entry::<XdpDesc>(self.rx.cached_cons).read() };
            self.rx.cached_cons = self.rx.cached_cons.wrapping_add(1);
            *chunk = d.addr - d.addr % CHUNK as u64;
            let len = d.len as usize;
            if d.addr
                .checked_add(d.len as u64)
                .is_some_and(|end| end <= umem_len)
                && len <= super::FRAME_SLOT
                && len > 0
            {
                // SAFETY: [addr, addr + len) lies inside the UMEM (checked),
                // and the kernel wrote the chunk before publishing the
                // descriptor; it will not touch it again until the chunk is
                // back in the fill ring, which happens below, after `f`
                // (which cannot keep the borrow: `f` takes any lifetime).
                frames[got] = unsafe {
                    std::slice::from_raw_parts(self.umem.ptr().add(d.addr as usize), len)
                };
                got += 1;
            } else {
                self.stats.rx_bad += 1;
            }
        }
        self.rx.release();
        if got > 0 {
            f(&frames[..got]);
        }
        for &chunk in chunks.iter().take(n as usize) {
            let slot = self.fill.entry::<u64>(self.fill.cached_prod);
            // SAFETY: free fill slot (checked by free()), not yet published.
            unsafe { slot.write(chunk) };
            self.fill.cached_prod = self.fill.cached_prod.wrapping_add(1);
        }
        self.fill.submit();
        self.stats.rx_frames += got as u64;
        got
    }

    fn send(&mut self, batch: &FrameBatch, ifname: &str) -> Result<usize, NicError> {
        self.reclaim();
        let want = batch.len() as u32;
        let slots = self.tx.free(want);
        let mut taken = 0;
        let mut posted = 0u32;
        for frame in batch.iter() {
            if frame.len() < ETH_HLEN || frame.len() > CHUNK {
                self.stats.tx_dropped += 1;
                taken += 1;
                continue;
            }
            if posted == slots {
                break;
            }
            let Some(addr) = self.tx_free.pop() else {
                break;
            };
            // SAFETY: `addr` is a TX chunk on our free list (owned by us, not
            // known to the kernel); addr + CHUNK <= UMEM size; frame.len() <=
            // CHUNK; the batch's buffer does not overlap the UMEM.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    frame.as_ptr(),
                    self.umem.ptr().add(addr as usize),
                    frame.len(),
                );
            }
            let d = XdpDesc {
                addr,
                len: frame.len() as u32,
                options: 0,
            };
            let slot = self.tx.entry::<XdpDesc>(self.tx.cached_prod);
            // SAFETY: a free TX slot (counted by free()), not yet published.
            unsafe { slot.write(d) };
            self.tx.cached_prod = self.tx.cached_prod.wrapping_add(1);
            posted += 1;
            taken += 1;
        }
        if posted > 0 {
            self.tx.submit();
            self.stats.tx_frames += u64::from(posted);
        }
        if posted > 0 || self.kick_pending {
            if let Err(e) = self.kick() {
                if posted == 0 {
                    return Err(NicError::Os {
                        op: "sendto(AF_XDP TX kick)",
                        source: e,
                    });
                }
                tracing::debug!(iface = %ifname, error = %e, "AF_XDP TX kick failed");
            }
        }
        Ok(taken)
    }
}

/// Puts every socket of `socks` into a fresh XSKMAP of `entries` slots at
/// its queue's index, loads the redirect program for it and attaches it to
/// the interface.
fn attach(
    ifname: &str,
    ifindex: u32,
    socks: &[Xsk],
    entries: u32,
    mode: Option<XdpMode>,
    shared: Option<SharedFilter>,
) -> Result<Attachment, NicError> {
    let map = bpf::create_xskmap(entries)?;
    for s in socks {
        bpf::xskmap_set(&map, s.queue, s.fd.as_raw_fd() as u32)?;
    }
    let (prog, ports) = match shared {
        None => (bpf::load_redirect_program(&map)?, None),
        Some(f) => {
            let ports = bpf::create_ports_map()?;
            let prog = bpf::load_shared_program(&map, &ports, f.ip, f.ports.0, f.ports.1)?;
            (prog, Some(Arc::new(ports)))
        }
    };
    let modes: &[XdpMode] = match mode {
        Some(XdpMode::Driver) => &[XdpMode::Driver],
        Some(XdpMode::Generic) => &[XdpMode::Generic],
        None => &[XdpMode::Driver, XdpMode::Generic],
    };
    let mut errors = Vec::new();
    for &mode in modes {
        match bpf::attach_xdp(&prog, ifindex, mode.flags()) {
            Ok(link) => {
                return Ok(Attachment {
                    _link: link,
                    _prog: prog,
                    _map: map,
                    ports,
                    mode,
                })
            }
            Err(e) => errors.push(format!("{mode:?} mode: {e}")),
        }
    }
    Err(NicError::Unsupported(format!(
        "attaching the XDP program to {ifname} failed ({}); is another XDP program attached?",
        errors.join("; ")
    )))
}

/// An epoll fd that is readable when any of `socks` has frames.
fn epoll_over(socks: &[Xsk]) -> Result<OwnedFd, NicError> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain system call.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(linux::last_os("epoll_create1"));
    }
    // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
    let ep = unsafe { OwnedFd::from_raw_fd(fd) };
    for s in socks {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: u64::from(s.queue),
        };
        // SAFETY: both fds are open; `ev` is a valid epoll_event.
        let rc = unsafe {
            libc::epoll_ctl(
                ep.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                s.fd.as_raw_fd(),
                &mut ev,
            )
        };
        if rc != 0 {
            return Err(linux::last_os("epoll_ctl(EPOLL_CTL_ADD, AF_XDP socket)"));
        }
    }
    Ok(ep)
}

impl AfXdpNic {
    /// Opens queue `queue` of `ifname` with the default settings.
    pub fn open(ifname: &str, queue: u32) -> Result<Self, NicError> {
        Self::open_with(ifname, queue, AfXdpConfig::default())
    }

    /// Opens queue `queue` of `ifname`: one socket, and a program that
    /// redirects that queue's frames to it. Frames that arrive on other
    /// queues of a multi-queue interface go to the kernel: use
    /// [`AfXdpNic::open_lanes`] to receive them all.
    pub fn open_with(ifname: &str, queue: u32, cfg: AfXdpConfig) -> Result<Self, NicError> {
        check_frames(&cfg)?;
        let link = linux::link_info(ifname)?;
        let sock = Xsk::open(ifname, link.ifindex, queue, &cfg)?;
        let socks = vec![sock];
        let attach = attach(
            ifname,
            link.ifindex,
            &socks,
            queue + 1,
            cfg.mode,
            cfg.shared,
        )?;
        tracing::info!(
            iface = ifname,
            queue,
            mode = ?attach.mode,
            frames = cfg.frames,
            "AF_XDP socket open (copy mode)"
        );
        Ok(AfXdpNic {
            attach: Arc::new(attach),
            socks,
            epoll: None,
            next: 0,
            ifname: ifname.to_string(),
            ifindex: link.ifindex,
            mac: link.mac,
            mtu: link.mtu,
        })
    }

    /// Opens `n` lanes on `ifname` with the default settings; see
    /// [`AfXdpNic::open_lanes_with`].
    pub fn open_lanes(ifname: &str, n: usize) -> Result<Vec<AfXdpNic>, NicError> {
        Self::open_lanes_with(ifname, n, AfXdpConfig::default())
    }

    /// Opens `n` lanes (one per fast-path core) covering every RX queue of
    /// `ifname`: one socket per queue (each with a UMEM of `cfg.frames`
    /// chunks), queue `q` given to lane `q % n`, and one XDP program with one
    /// XSKMAP for all of them. Lane `i` transmits on queue `i`. The
    /// interface needs at least `n` RX queues. The program is detached when
    /// the last lane is dropped; dropping a lane earlier sends its queues'
    /// frames to the kernel while the other lanes go on.
    pub fn open_lanes_with(
        ifname: &str,
        n: usize,
        cfg: AfXdpConfig,
    ) -> Result<Vec<AfXdpNic>, NicError> {
        check_frames(&cfg)?;
        if n == 0 {
            return Err(NicError::Unsupported(
                "AF_XDP: at least one lane is needed".into(),
            ));
        }
        let link = linux::link_info(ifname)?;
        let queues = linux::rx_queues(ifname)?;
        let q = queues.unwrap_or(1);
        if (q as usize) < n {
            let has = match queues {
                Some(1) => "has 1 RX queue".to_string(),
                Some(q) => format!("has {q} RX queues"),
                None => "does not report its RX queues (ethtool -l), so it is taken to have 1"
                    .to_string(),
            };
            return Err(NicError::Unsupported(format!(
                "{ifname} {has} but {n} lanes (--cores max {n}) need {n}: create the interface \
                 with more queues (ip link add ... numrxqueues {n} numtxqueues {n}; on a real \
                 NIC: ethtool -L {ifname} combined {n}) or use --nic af_packet"
            )));
        }
        let mut socks = Vec::with_capacity(q as usize);
        for queue in 0..q {
            socks.push(Xsk::open(ifname, link.ifindex, queue, &cfg)?);
        }
        let attach = Arc::new(attach(
            ifname,
            link.ifindex,
            &socks,
            q,
            cfg.mode,
            cfg.shared,
        )?);
        let mut per_lane: Vec<Vec<Xsk>> = (0..n).map(|_| Vec::new()).collect();
        for (i, s) in socks.into_iter().enumerate() {
            per_lane[i % n].push(s);
        }
        let mut lanes = Vec::with_capacity(n);
        for socks in per_lane {
            let epoll = if socks.len() > 1 {
                Some(epoll_over(&socks)?)
            } else {
                None
            };
            lanes.push(AfXdpNic {
                attach: Arc::clone(&attach),
                socks,
                epoll,
                next: 0,
                ifname: ifname.to_string(),
                ifindex: link.ifindex,
                mac: link.mac,
                mtu: link.mtu,
            });
        }
        tracing::info!(
            iface = ifname,
            lanes = n,
            queues = q,
            mode = ?attach.mode,
            frames = cfg.frames,
            "AF_XDP lanes open (copy mode, one socket per queue)"
        );
        Ok(lanes)
    }

    /// The RX queues of `ifname` as the kernel reports them (`None`: it does
    /// not say, and one is assumed).
    pub fn rx_queue_count(ifname: &str) -> Result<Option<u32>, NicError> {
        linux::rx_queues(ifname)
    }

    /// The ports map handle in shared mode (`None` in exclusive mode).
    pub fn port_steer(&self) -> Option<PortSteer> {
        self.attach
            .ports
            .as_ref()
            .map(|m| PortSteer::new(Arc::clone(m), Vec::new()))
    }

    /// How the XDP program got attached.
    pub fn mode(&self) -> XdpMode {
        self.attach.mode
    }

    /// Interface name, index and queue this socket serves.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
    /// The queue this NIC transmits on (the first of [`AfXdpNic::queues`]).
    pub fn queue(&self) -> u32 {
        self.socks[0].queue
    }
    /// The queues this NIC receives from (one socket each).
    pub fn queues(&self) -> Vec<u32> {
        self.socks.iter().map(|s| s.queue).collect()
    }

    /// This NIC's counters (summed over its sockets).
    pub fn stats(&self) -> AfXdpStats {
        let mut t = AfXdpStats::default();
        for s in &self.socks {
            t.rx_frames += s.stats.rx_frames;
            t.rx_bad += s.stats.rx_bad;
            t.tx_frames += s.stats.tx_frames;
            t.tx_dropped += s.stats.tx_dropped;
            t.tx_kick_errors += s.stats.tx_kick_errors;
        }
        t
    }

    /// The kernel's counters (XDP_STATISTICS), summed over this NIC's sockets.
    pub fn kernel_stats(&self) -> Result<XdpKernelStats, NicError> {
        let mut t = XdpKernelStats::default();
        for s in &self.socks {
            let k = s.kernel_stats()?;
            t.rx_dropped += k.rx_dropped;
            t.rx_invalid_descs += k.rx_invalid_descs;
            t.tx_invalid_descs += k.tx_invalid_descs;
            t.rx_ring_full += k.rx_ring_full;
            t.rx_fill_ring_empty_descs += k.rx_fill_ring_empty_descs;
            t.tx_ring_empty_descs += k.tx_ring_empty_descs;
        }
        Ok(t)
    }
}

fn mmap_offsets(fd: &OwnedFd) -> Result<MmapOffsets, NicError> {
    let mut off = MmapOffsets::default();
    let mut len = std::mem::size_of::<MmapOffsets>() as libc::socklen_t;
    // SAFETY: `off` is writable and `len` holds its size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_XDP,
            XDP_MMAP_OFFSETS,
            &mut off as *mut MmapOffsets as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(linux::last_os("getsockopt(XDP_MMAP_OFFSETS)"));
    }
    if len as usize != std::mem::size_of::<MmapOffsets>() {
        // Kernels before 5.4 have no `flags` member; not supported here.
        return Err(NicError::Unsupported(format!(
            "AF_XDP: unexpected xdp_mmap_offsets size {len} (kernel too old?)"
        )));
    }
    Ok(off)
}

impl Nic for AfXdpNic {
    fn recv(&mut self, batch: &mut FrameBatch) -> Result<usize, NicError> {
        let k = self.socks.len();
        if k == 1 {
            return Ok(self.socks[0].recv(batch));
        }
        let mut got = 0;
        for i in 0..k {
            if batch.is_full() {
                break;
            }
            got += self.socks[(self.next + i) % k].recv(batch);
        }
        self.next = (self.next + 1) % k;
        Ok(got)
    }

    fn recv_in_place(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(&[&[u8]]),
    ) -> Option<Result<usize, NicError>> {
        let k = self.socks.len();
        let mut got = 0;
        for i in 0..k {
            if got >= max {
                break;
            }
            got += self.socks[(self.next + i) % k].recv_in_place(max - got, f);
        }
        if k > 1 {
            self.next = (self.next + 1) % k;
        }
        Some(Ok(got))
    }

    fn send(&mut self, batch: &FrameBatch) -> Result<usize, NicError> {
        self.socks[0].send(batch, &self.ifname)
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn wait_fd(&self) -> Option<RawFd> {
        Some(match &self.epoll {
            Some(ep) => ep.as_raw_fd(),
            None => self.socks[0].fd.as_raw_fd(),
        })
    }

    fn kind(&self) -> &'static str {
        "af_xdp"
    }
}

#[cfg(test)]
mod tests;
