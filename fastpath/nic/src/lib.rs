//! # tas-nic
//!
//! NIC backends behind one narrow, batched trait.
//!
//! Owns: the [`Nic`] trait and [`FrameBatch`], the backends (in-memory,
//! AF_PACKET, AF_XDP with its XDP program, DPDK behind the `dpdk` feature),
//! their shared Linux plumbing (`linux`: interface queries, raw sockets,
//! ring mappings) and, for tests, the network-namespace harness (`testnet`).
//!
//! Must not: know TCP or flows (frames are opaque bytes here; steering is by
//! the NIC's hash), keep per-packet state beyond the rings, or allocate on
//! the per-packet path.
//!
//! Every backend moves whole Ethernet frames in batches: [`Nic::recv`] fills a
//! caller-owned [`FrameBatch`] (or, with [`Nic::recv_in_place`], lends its
//! own receive buffers for the time of a callback), [`Nic::send`] drains one. Frames carry complete
//! checksums unless a backend reports [`Nic::tx_csum_offload`] (none does
//! yet; the hook is there for one that can). The batch memory is allocated once, when
//! the poll loop starts, so the per-packet path never allocates.

#[cfg(target_os = "linux")]
pub mod af_packet;
#[cfg(target_os = "linux")]
pub mod af_xdp;
#[cfg(target_os = "linux")]
pub mod bpf;
#[cfg(feature = "dpdk")]
pub mod dpdk;
#[cfg(target_os = "linux")]
pub(crate) mod linux;

/// The interface index of `ifname`.
pub fn ifindex(ifname: &str) -> Result<u32, NicError> {
    Ok(linux::link_info(ifname)?.ifindex)
}
pub mod memory;
#[cfg(test)]
pub(crate) mod testnet;

use std::os::fd::RawFd;

/// Largest frame a batch slot holds (1500-byte MTU + Ethernet header, rounded up).
pub const FRAME_SLOT: usize = 2048;

/// Errors a backend reports. Transient conditions (would block, ring full) are
/// not errors: `recv` returns 0 frames and `send` returns fewer than offered.
#[derive(Debug, thiserror::Error)]
pub enum NicError {
    #[error("interface {0}: not found")]
    NoSuchInterface(String),
    #[error("{op} failed: {source}")]
    Os {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
}

/// A fixed-capacity batch of frames in one preallocated slab.
pub struct FrameBatch {
    /// One slot per frame (as many as `lens`): a slot is found by one
    /// bounds check, which also tells whether the batch is full.
    slab: Box<[[u8; FRAME_SLOT]]>,
    lens: Box<[u16]>,
    count: usize,
}

impl FrameBatch {
    /// A batch of `capacity` frame slots of [`FRAME_SLOT`] bytes each.
    pub fn new(capacity: usize) -> Self {
        FrameBatch {
            slab: vec![[0u8; FRAME_SLOT]; capacity].into_boxed_slice(),
            lens: vec![0u16; capacity].into_boxed_slice(),
            count: 0,
        }
    }
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }
    pub fn len(&self) -> usize {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    pub fn is_full(&self) -> bool {
        self.count == self.lens.len()
    }
    pub fn clear(&mut self) {
        self.count = 0;
    }
    /// Frame `i` (`i < len()`).
    pub fn frame(&self, i: usize) -> &[u8] {
        let l = self.lens[i] as usize;
        &self.slab[i][..l]
    }
    /// Mutable view of frame `i` (`i < len()`).
    pub fn frame_mut(&mut self, i: usize) -> &mut [u8] {
        let l = self.lens[i] as usize;
        &mut self.slab[i][..l]
    }
    /// The next free slot, to write a frame into and then [`commit`] it;
    /// `None` when the batch is full.
    ///
    /// [`commit`]: FrameBatch::commit
    #[inline(always)]
    pub fn slot(&mut self) -> Option<&mut [u8]> {
        // (`count < slab.len()` unless full: one compare for both.)
        self.slab.get_mut(self.count).map(|s| &mut s[..])
    }
    /// Appends the frame of `n` bytes written into the slot [`slot`] gave
    /// (truncated to a slot; 0 = nothing written, the slot stays free).
    ///
    /// [`slot`]: FrameBatch::slot
    #[inline(always)]
    pub fn commit(&mut self, n: usize) {
        let n = n.min(FRAME_SLOT);
        let i = self.count;
        if n == 0 || i >= self.lens.len() {
            return;
        }
        self.lens[i] = n as u16;
        self.count = i + 1;
    }
    /// Appends a frame written by `fill` into a fresh slot; `fill` returns the
    /// frame's length (0 = nothing written). Returns false when the batch is full.
    #[inline(always)]
    pub fn push_with(&mut self, fill: impl FnOnce(&mut [u8]) -> usize) -> bool {
        let Some(slot) = self.slot() else {
            return false;
        };
        let n = fill(slot);
        self.commit(n);
        true
    }
    /// Appends a copy of `frame` (truncated to a slot). False when full.
    pub fn push(&mut self, frame: &[u8]) -> bool {
        self.push_with(|slot| {
            let n = frame.len().min(slot.len());
            slot[..n].copy_from_slice(&frame[..n]);
            n
        })
    }
    /// Removes the first `n` frames, keeping the rest in order.
    pub fn consume_front(&mut self, n: usize) {
        let n = n.min(self.count);
        if n == 0 {
            return;
        }
        let rest = self.count - n;
        self.slab.copy_within(n..self.count, 0);
        self.lens.copy_within(n..self.count, 0);
        self.count = rest;
    }
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.count).map(move |i| self.frame(i))
    }
}

/// A network interface as the fast path sees it.
pub trait Nic: Send {
    /// Receives up to `batch.capacity() - batch.len()` frames, appending them.
    /// Returns how many were appended (0 when nothing is waiting).
    fn recv(&mut self, batch: &mut FrameBatch) -> Result<usize, NicError>;
    /// Transmits frames from the front of `batch`; returns how many were
    /// taken (the caller removes them with `consume_front`).
    fn send(&mut self, batch: &FrameBatch) -> Result<usize, NicError>;
    /// The interface's MAC address.
    fn mac(&self) -> [u8; 6];
    /// The interface MTU (IP packet size, without the Ethernet header).
    fn mtu(&self) -> usize;
    /// A file descriptor that becomes readable when frames arrive, for
    /// blocking waits; `None` if the backend cannot block.
    fn wait_fd(&self) -> Option<RawFd> {
        None
    }
    /// Short name for logs and `tasctl status`.
    fn kind(&self) -> &'static str;
    /// Receives up to `max` frames *in place*: `f` sees them where the
    /// backend received them (the AF_XDP UMEM: no copy into a
    /// [`FrameBatch`]), possibly in several calls (one per queue), and
    /// their buffers go back to the NIC only when `f` has returned. `None`
    /// when the backend cannot (AF_PACKET and DPDK so far): use
    /// [`Nic::recv`].
    fn recv_in_place(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(&[&[u8]]),
    ) -> Option<Result<usize, NicError>> {
        let _ = (max, f);
        None
    }
    /// Whether the backend completes TCP checksums on transmit: every TCP
    /// frame handed to [`Nic::send`] then carries the pseudo header's sum
    /// (not complemented) in its checksum field, as Linux's
    /// `CHECKSUM_PARTIAL` and DPDK's `RTE_ETH_TX_OFFLOAD_TCP_CKSUM` expect
    /// (`tas_engine::engine::FastPath::with_tx_csum_offload`, and
    /// `tas_engine::wire::frame::tcp_csum_to_partial` for the slow path's
    /// frames). No backend offers it yet: AF_PACKET has no per-frame
    /// offload request, AF_XDP only through TX metadata (Linux 6.8+) on
    /// drivers that implement it, which veth does not, and the DPDK backend
    /// would set `RTE_MBUF_F_TX_TCP_CKSUM` and the header lengths per mbuf
    /// when the port reports the capability (not wired).
    fn tx_csum_offload(&self) -> bool {
        false
    }
}

/// A backend chosen at run time.
impl Nic for Box<dyn Nic> {
    fn recv(&mut self, batch: &mut FrameBatch) -> Result<usize, NicError> {
        (**self).recv(batch)
    }
    fn send(&mut self, batch: &FrameBatch) -> Result<usize, NicError> {
        (**self).send(batch)
    }
    fn mac(&self) -> [u8; 6] {
        (**self).mac()
    }
    fn mtu(&self) -> usize {
        (**self).mtu()
    }
    fn wait_fd(&self) -> Option<RawFd> {
        (**self).wait_fd()
    }
    fn kind(&self) -> &'static str {
        (**self).kind()
    }
    fn tx_csum_offload(&self) -> bool {
        (**self).tx_csum_offload()
    }
    fn recv_in_place(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(&[&[u8]]),
    ) -> Option<Result<usize, NicError>> {
        (**self).recv_in_place(max, f)
    }
}
