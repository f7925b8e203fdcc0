//! Whole Ethernet + IPv4 + TCP frames: building and parsing in one step.

use super::eth::{self, EthFrame};
use super::ipv4::{self, Ipv4Packet, Ipv4Repr};
use super::tcp::{TcpRepr, TcpSegment};
use super::{checksum, WireError};

/// Offset of the IPv4 header in a frame.
const IP_OFF: usize = eth::HDR_LEN;
/// Offset of the TCP header in a frame built by [`tcp_headers`].
const TCP_OFF: usize = eth::HDR_LEN + ipv4::HDR_LEN;

/// Ethernet and IPv4 fields of a TCP frame to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHdr {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: u32,
    pub dst_ip: u32,
    pub ttl: u8,
    pub ecn: u8,
    pub ident: u16,
}

/// Write Ethernet, IPv4 (DF set, total length covering `payload_len`,
/// checksum filled) and TCP headers (checksum 0) into `buf`. Returns the
/// offset of the payload. `BufferTooSmall` if `buf` cannot hold headers and
/// payload; `BadTotalLen` if the IP packet would exceed 65535 bytes.
/// Copy the payload in, then call [`tcp_finish`].
#[inline]
pub fn tcp_headers(
    buf: &mut [u8],
    h: &FrameHdr,
    t: &TcpRepr,
    payload_len: usize,
) -> Result<usize, WireError> {
    let tcp_len = t.header_len();
    let seg_len = tcp_len
        .checked_add(payload_len)
        .ok_or(WireError::BadTotalLen)?;
    if seg_len > u16::MAX as usize - ipv4::HDR_LEN {
        return Err(WireError::BadTotalLen);
    }
    if buf.len() < TCP_OFF + seg_len {
        return Err(WireError::BufferTooSmall);
    }
    eth::emit(buf, h.dst_mac, h.src_mac, eth::ETHERTYPE_IPV4)?;
    Ipv4Repr {
        src: h.src_ip,
        dst: h.dst_ip,
        protocol: ipv4::PROTO_TCP,
        ttl: h.ttl,
        ecn: h.ecn,
        ident: h.ident,
        dont_fragment: true,
        payload_len: seg_len as u16,
    }
    .emit(buf.get_mut(IP_OFF..).ok_or(WireError::BufferTooSmall)?)?;
    t.emit(buf.get_mut(TCP_OFF..).ok_or(WireError::BufferTooSmall)?)?;
    Ok(TCP_OFF + tcp_len)
}

/// A data or ACK segment in the only shapes the fast path sends: options are
/// at most a timestamp and SACK blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastSeg<'a> {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: u32,
    pub dst_ip: u32,
    pub ttl: u8,
    pub ecn: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// (TSval, TSecr), written as NOP NOP TS.
    pub ts: Option<(u32, u32)>,
    /// SACK blocks in the order given, written as NOP NOP SACK; as many as
    /// fit in the 40 option bytes ([`fast_sack_room`]), the rest dropped.
    pub sack: &'a [(u32, u32)],
}

/// SACK blocks that fit beside the other options of a [`FastSeg`]: four
/// alone, three with a timestamp (RFC 2018 §3: 2 + 8n bytes plus two NOPs,
/// within the 40 option bytes).
#[inline]
pub const fn fast_sack_room(ts: bool) -> usize {
    if ts {
        3
    } else {
        4
    }
}

/// Writes the Ethernet, IPv4 (checksum filled, DF set, ident 0) and TCP
/// headers of `s` with straight stores; returns the payload offset, or None
/// if `buf` cannot hold headers plus `payload_len`. Same bytes as
/// [`tcp_headers`] would write for these options; finish with
/// [`finish_fast`] once the payload is in place.
#[inline]
pub fn emit_fast(buf: &mut [u8], s: &FastSeg<'_>, payload_len: usize) -> Option<usize> {
    let ts_len = if s.ts.is_some() { 12 } else { 0 };
    let k = s.sack.len().min(fast_sack_room(s.ts.is_some()));
    let sack_len = if k > 0 { 4 + 8 * k } else { 0 };
    let tcp_len = 20 + ts_len + sack_len;
    let hdr_len = TCP_OFF + tcp_len;
    let ip_total = ipv4::HDR_LEN + tcp_len + payload_len;
    if ip_total > u16::MAX as usize || buf.len() < hdr_len + payload_len {
        return None;
    }
    let b = buf.first_chunk_mut::<{ TCP_OFF + 44 }>()?;
    b[0..6].copy_from_slice(&s.dst_mac);
    b[6..12].copy_from_slice(&s.src_mac);
    b[12..14].copy_from_slice(&eth::ETHERTYPE_IPV4.to_be_bytes());
    b[14] = 0x45;
    b[15] = s.ecn & 3;
    b[16..18].copy_from_slice(&(ip_total as u16).to_be_bytes());
    b[18..22].copy_from_slice(&[0, 0, 0x40, 0]);
    b[22] = s.ttl;
    b[23] = ipv4::PROTO_TCP;
    b[24..26].copy_from_slice(&[0, 0]);
    b[26..30].copy_from_slice(&s.src_ip.to_be_bytes());
    b[30..34].copy_from_slice(&s.dst_ip.to_be_bytes());
    let ipc = checksum::fold(checksum::sum(&b[IP_OFF..TCP_OFF], 0));
    b[24..26].copy_from_slice(&ipc.to_be_bytes());
    b[34..36].copy_from_slice(&s.src_port.to_be_bytes());
    b[36..38].copy_from_slice(&s.dst_port.to_be_bytes());
    b[38..42].copy_from_slice(&s.seq.to_be_bytes());
    b[42..46].copy_from_slice(&s.ack.to_be_bytes());
    b[46] = ((tcp_len / 4) as u8) << 4;
    b[47] = s.flags;
    b[48..50].copy_from_slice(&s.window.to_be_bytes());
    b[50..54].copy_from_slice(&[0, 0, 0, 0]);
    if let Some((val, ecr)) = s.ts {
        b[54..58].copy_from_slice(&[1, 1, 8, 10]);
        b[58..62].copy_from_slice(&val.to_be_bytes());
        b[62..66].copy_from_slice(&ecr.to_be_bytes());
    }
    if k > 0 {
        let o = TCP_OFF + 20 + ts_len;
        emit_sack(buf.get_mut(o..o + sack_len)?, &s.sack[..k]);
    }
    Some(hdr_len)
}

/// NOP NOP SACK and the blocks, into exactly `4 + 8 * blocks.len()` bytes.
/// Out of line: only ACKs sent while out-of-order data is held (or after a
/// duplicate) carry blocks.
#[inline(never)]
fn emit_sack(out: &mut [u8], blocks: &[(u32, u32)]) {
    let (hdr, body) = out.split_at_mut(4);
    hdr.copy_from_slice(&[1, 1, 5, (2 + 8 * blocks.len()) as u8]);
    for (c, &(l, r)) in body.chunks_exact_mut(8).zip(blocks) {
        c[..4].copy_from_slice(&l.to_be_bytes());
        c[4..].copy_from_slice(&r.to_be_bytes());
    }
}

/// Writes the TCP checksum of a frame built by [`emit_fast`] whose payload
/// (of `payload_len` bytes) is in place. `hdr_len` is what `emit_fast`
/// returned.
#[inline]
pub fn finish_fast(buf: &mut [u8], s: &FastSeg<'_>, hdr_len: usize, payload_len: usize) {
    let Some(seg) = buf.get_mut(TCP_OFF..hdr_len + payload_len) else {
        return;
    };
    let c = checksum::tcp(s.src_ip, s.dst_ip, seg);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
}

/// The flow's part of a [`HdrTemplate`]'s key: addresses and ports
/// (host order) and the next hop's MAC, packed into two words and a half
/// (in the order `FlowState` keeps them, so the loads can merge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TmplPath(u64, u64, u16);

impl TmplPath {
    #[inline(always)]
    pub fn new(src_ip: u32, dst_ip: u32, src_port: u16, dst_port: u16, dst_mac: [u8; 6]) -> Self {
        let m = u32::from_ne_bytes([dst_mac[0], dst_mac[1], dst_mac[2], dst_mac[3]]);
        let m2 = u16::from_ne_bytes([dst_mac[4], dst_mac[5]]);
        TmplPath(
            src_ip as u64 | (dst_ip as u64) << 32,
            src_port as u64 | (dst_port as u64) << 16 | (m as u64) << 32,
            m2,
        )
    }
}

/// The engine's part of a [`HdrTemplate`]'s key: local MAC (as the
/// template's bytes 6..14 hold it, with the EtherType), TTL, checksum
/// offload. Constant per engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TmplLocal {
    mac: u64,
    /// TTL and offload flag where a template's `key2` keeps them (bits
    /// 16..24 and 24), the flow's part zero.
    bits: u32,
}

impl TmplLocal {
    #[inline(always)]
    pub fn new(src_mac: [u8; 6], ttl: u8, offload: bool) -> Self {
        let e = eth::ETHERTYPE_IPV4.to_be_bytes();
        TmplLocal {
            mac: u64::from_ne_bytes([
                src_mac[0], src_mac[1], src_mac[2], src_mac[3], src_mac[4], src_mac[5], e[0], e[1],
            ]),
            bits: key2(0, ttl, offload),
        }
    }

    /// The NIC completes TCP checksums.
    #[inline(always)]
    pub fn offload(&self) -> bool {
        self.bits & KEY2_OFFLOAD != 0
    }
}

/// A template's `key2`: the next hop's MAC bytes 4 and 5 (as
/// [`TmplPath::new`] packs them), the TTL, the offload flag.
#[inline(always)]
const fn key2(mac_hi: u16, ttl: u8, offload: bool) -> u32 {
    mac_hi as u32 | (ttl as u32) << 16 | (offload as u32) << 24
}

/// The offload flag in a `key2`.
const KEY2_OFFLOAD: u32 = 1 << 24;

impl TmplPath {
    /// `key2` of this path with the engine's part `local`.
    #[inline(always)]
    fn key2(self, local: TmplLocal) -> u32 {
        self.2 as u32 | local.bits
    }
}

/// A flow's prebuilt header prefix: its Ethernet header, IPv4 header (TOS,
/// total length and checksum zero) and TCP ports, with the native-endian
/// partial sums of the IPv4 header's constant words and of the TCP pseudo
/// header's constant part (addresses, protocol) plus the ports. Built once
/// per flow (and again when the addresses, the next hop or the local MAC
/// change: [`HdrTemplate::matches`]); every segment then copies it and
/// patches only what varies (IPv4 TOS/ECN and total length, sequence, ACK,
/// flags, window, timestamps), with both checksums computed from the
/// partial sums (RFC 1071 §2, the incremental form of RFC 1624 §3 applied
/// to fields that start at zero), the TCP one over header words and the
/// payload only. Same bytes as [`emit_fast`] without SACK blocks (tested).
///
/// With TX checksum offload ([`HdrTemplate::new`]'s `offload`), the TCP
/// checksum field is left holding the pseudo header's sum, as Linux's
/// `CHECKSUM_PARTIAL` and DPDK's `RTE_ETH_TX_OFFLOAD_TCP_CKSUM` expect, and
/// the NIC completes it: neither header words nor payload are summed.
///
/// One cache line; never part of the hot `FlowState` (the flow table keeps
/// these in their own array, see `FlowTable`).
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HdrTemplate {
    /// Bytes 0..38 of every frame of the flow.
    hdr: [u8; TMPL_LEN],
    /// Native-endian folded sum of the IPv4 header with TOS, total length
    /// and checksum zero.
    ip_sum: u16,
    /// The flow's part of what the template was built from (addresses,
    /// ports, next hop), packed as [`TmplPath::new`] packs it, and the
    /// engine's TTL and offload flag: compared word by word for every
    /// segment. (The engine's local MAC is in `hdr`, compared as one word
    /// too.) `key2`: the next hop's last two bytes, the TTL, the flag that
    /// the NIC completes TCP checksums ([`key2`]).
    path0: u64,
    path1: u64,
    key2: u32,
    /// Native-endian folded sum of the pseudo header's addresses and
    /// protocol and the TCP ports.
    tcp_sum: u16,
    /// The same without the ports: the pseudo header's constant part.
    ph_sum: u16,
}

/// Template bytes: Ethernet, IPv4, TCP source and destination port.
const TMPL_LEN: usize = TCP_OFF + 4;

const _: () = assert!(std::mem::size_of::<HdrTemplate>() == 64);

impl Default for HdrTemplate {
    /// An empty template, which [`HdrTemplate::matches`] nothing.
    fn default() -> Self {
        HdrTemplate {
            hdr: [0; TMPL_LEN],
            ip_sum: 0,
            path0: 0,
            path1: 0,
            key2: 0,
            tcp_sum: 0,
            ph_sum: 0,
        }
    }
}

/// Adds a big-endian 16-bit field's value to a native-endian sum.
#[inline(always)]
fn ne16(v: u16) -> u64 {
    u16::from_ne_bytes(v.to_be_bytes()) as u64
}

/// Adds a big-endian 32-bit field's value to a native-endian sum (a `u32`
/// is congruent mod 0xffff to the sum of its two 16-bit halves).
#[inline(always)]
fn ne32(v: u32) -> u64 {
    u32::from_ne_bytes(v.to_be_bytes()) as u64
}

impl HdrTemplate {
    /// The template of a flow: frames from `src_mac`/`src_ip`:`src_port`
    /// to `dst_mac`/`dst_ip`:`dst_port` with `ttl` (DF set, ident 0); with
    /// `offload`, TCP checksums are left for the NIC to complete.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src_ip: u32,
        dst_ip: u32,
        src_port: u16,
        dst_port: u16,
        ttl: u8,
        offload: bool,
    ) -> HdrTemplate {
        let mut hdr = [0u8; TMPL_LEN];
        hdr[0..6].copy_from_slice(&dst_mac);
        hdr[6..12].copy_from_slice(&src_mac);
        hdr[12..14].copy_from_slice(&eth::ETHERTYPE_IPV4.to_be_bytes());
        hdr[14] = 0x45;
        hdr[18..22].copy_from_slice(&[0, 0, 0x40, 0]);
        hdr[22] = ttl;
        hdr[23] = ipv4::PROTO_TCP;
        hdr[26..30].copy_from_slice(&src_ip.to_be_bytes());
        hdr[30..34].copy_from_slice(&dst_ip.to_be_bytes());
        hdr[34..36].copy_from_slice(&src_port.to_be_bytes());
        hdr[36..38].copy_from_slice(&dst_port.to_be_bytes());
        let ip_sum = checksum::fold_ne(checksum::sum_ne(&hdr[IP_OFF..TCP_OFF]));
        // Pseudo header (RFC 9293 §3.1): addresses, zero, protocol; the
        // length is added per segment.
        let ph_sum = checksum::sum_ne(&hdr[26..34]) + ne16(ipv4::PROTO_TCP as u16);
        let tcp_sum = ph_sum + checksum::sum_ne(&hdr[TCP_OFF..TMPL_LEN]);
        let path = TmplPath::new(src_ip, dst_ip, src_port, dst_port, dst_mac);
        HdrTemplate {
            hdr,
            ip_sum,
            path0: path.0,
            path1: path.1,
            key2: key2(path.2, ttl, offload),
            tcp_sum: checksum::fold_ne(tcp_sum),
            ph_sum: checksum::fold_ne(ph_sum),
        }
    }

    /// Whether TCP checksums are left to the NIC.
    #[inline]
    pub fn offload(&self) -> bool {
        self.key2 & KEY2_OFFLOAD != 0
    }

    /// Whether this is the template [`HdrTemplate::new`] would build from
    /// these values (an empty one matches nothing).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn matches(
        &self,
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src_ip: u32,
        dst_ip: u32,
        src_port: u16,
        dst_port: u16,
        ttl: u8,
        offload: bool,
    ) -> bool {
        self.matches_path(
            TmplLocal::new(src_mac, ttl, offload),
            TmplPath::new(src_ip, dst_ip, src_port, dst_port, dst_mac),
        )
    }

    /// [`HdrTemplate::matches`] with its arguments packed: the engine's
    /// part `local` and the flow's part `path`. A handful of word
    /// compares, one branch.
    #[inline(always)]
    pub fn matches_path(&self, local: TmplLocal, path: TmplPath) -> bool {
        let h = u64::from_ne_bytes([
            self.hdr[6],
            self.hdr[7],
            self.hdr[8],
            self.hdr[9],
            self.hdr[10],
            self.hdr[11],
            self.hdr[12],
            self.hdr[13],
        ]);
        // An empty template never matches: its bytes 12..14 are not the
        // EtherType.
        let diff = (self.path0 ^ path.0)
            | (self.path1 ^ path.1)
            | (h ^ local.mac)
            | (self.key2 ^ path.key2(local)) as u64;
        diff == 0
    }

    /// Writes the headers of a segment (options: the timestamp when `ts`
    /// is given, nothing else) from the template; returns the payload
    /// offset and the TCP checksum's partial sum so far, or None if `buf`
    /// cannot hold headers plus `payload_len`. Copy the payload in, then
    /// call [`HdrTemplate::finish`].
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn emit(
        &self,
        buf: &mut [u8],
        ecn: u8,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        ts: Option<(u32, u32)>,
        payload_len: usize,
    ) -> Option<(usize, u64)> {
        let tcp_len = if ts.is_some() { 32 } else { 20 };
        let hdr_len = TCP_OFF + tcp_len;
        let seg_len = tcp_len + payload_len;
        let ip_total = ipv4::HDR_LEN + seg_len;
        if ip_total > u16::MAX as usize || buf.len() < hdr_len + payload_len {
            return None;
        }
        let b = buf.first_chunk_mut::<{ TCP_OFF + 32 }>()?;
        b[..TMPL_LEN].copy_from_slice(&self.hdr);
        let ecn = ecn & 3;
        b[15] = ecn;
        b[16..18].copy_from_slice(&(ip_total as u16).to_be_bytes());
        // RFC 1624 §3: the constant part's sum plus the fields that vary.
        let ip_sum = self.ip_sum as u64 + ne16(ecn as u16) + ne16(ip_total as u16);
        b[24..26].copy_from_slice(&(!checksum::fold_ne(ip_sum)).to_ne_bytes());
        b[38..42].copy_from_slice(&seq.to_be_bytes());
        b[42..46].copy_from_slice(&ack.to_be_bytes());
        let off_flags = (((tcp_len / 4) as u16) << 12) | flags as u16;
        b[46..48].copy_from_slice(&off_flags.to_be_bytes());
        b[48..50].copy_from_slice(&window.to_be_bytes());
        if self.offload() {
            // The pseudo header's sum, not complemented; the NIC adds the
            // segment's words and writes the complement.
            let ph = checksum::fold_ne(self.ph_sum as u64 + ne16(seg_len as u16));
            b[50..52].copy_from_slice(&ph.to_ne_bytes());
        } else {
            b[50..52].copy_from_slice(&[0, 0]);
        }
        b[52..54].copy_from_slice(&[0, 0]);
        let mut sum = self.tcp_sum as u64
            + ne16(seg_len as u16)
            + ne32(seq)
            + ne32(ack)
            + ne16(off_flags)
            + ne16(window);
        if let Some((val, ecr)) = ts {
            const TS_KIND: [u8; 4] = [1, 1, 8, 10];
            b[54..58].copy_from_slice(&TS_KIND);
            b[58..62].copy_from_slice(&val.to_be_bytes());
            b[62..66].copy_from_slice(&ecr.to_be_bytes());
            sum += u32::from_ne_bytes(TS_KIND) as u64 + ne32(val) + ne32(ecr);
        }
        Some((hdr_len, sum))
    }

    /// Writes the TCP checksum of a frame [`HdrTemplate::emit`] built, once
    /// its `payload_len` bytes of payload are in place (`hdr_len` and `sum`
    /// as `emit` returned them). With offload, nothing: the NIC does it.
    #[inline(always)]
    pub fn finish(&self, buf: &mut [u8], hdr_len: usize, payload_len: usize, sum: u64) {
        if self.offload() {
            return;
        }
        let Some(payload) = buf.get(hdr_len..hdr_len + payload_len) else {
            return;
        };
        let sum = sum + checksum::sum_ne(payload);
        if let Some(c) = buf.get_mut(TCP_OFF + 16..TCP_OFF + 18) {
            c.copy_from_slice(&(!checksum::fold_ne(sum)).to_ne_bytes());
        }
    }

    /// [`HdrTemplate::finish`] with the payload's sum already taken
    /// (`payload_sum`, any `u64` congruent to the sum of its native-endian
    /// 16-bit words, e.g. `tas_abi::copy_sum`'s): writes the TCP checksum
    /// from `emit`'s `sum` and it. With offload, nothing.
    #[inline(always)]
    pub fn finish_sum(&self, buf: &mut [u8], sum: u64, payload_sum: u64) {
        if self.offload() {
            return;
        }
        // End-around carry: the total stays congruent mod 0xffff.
        let (s, o) = sum.overflowing_add(payload_sum);
        let s = s + o as u64;
        if let Some(c) = buf.get_mut(TCP_OFF + 16..TCP_OFF + 18) {
            c.copy_from_slice(&(!checksum::fold_ne(s)).to_ne_bytes());
        }
    }
}

/// Turns the complete TCP checksum of an Ethernet/IPv4/TCP frame into the
/// partial one a NIC with TX checksum offload completes (the pseudo
/// header's sum, not complemented: Linux `CHECKSUM_PARTIAL`, DPDK
/// `RTE_ETH_TX_OFFLOAD_TCP_CKSUM`). For frames built elsewhere (the slow
/// path's) that leave on a lane with offload on. Returns false, changing
/// nothing, for anything but a well-formed TCP frame.
pub fn tcp_csum_to_partial(buf: &mut [u8]) -> bool {
    let Ok(fr) = parse_tcp_frame(buf) else {
        return false;
    };
    let (src, dst) = (fr.ip.src(), fr.ip.dst());
    let seg_len = fr.ip.payload().len();
    let off = IP_OFF + fr.ip.header.len() + 16;
    let ph = checksum::fold(!checksum::pseudo_header(
        src,
        dst,
        ipv4::PROTO_TCP,
        seg_len as u16,
    ));
    match buf.get_mut(off..off + 2) {
        Some(c) => {
            c.copy_from_slice(&ph.to_be_bytes());
            true
        }
        None => false,
    }
}

/// Compute and write the TCP checksum of a frame built by [`tcp_headers`]
/// once its payload is in place (`frame_len` = payload offset + payload
/// length). The segment is the one the IPv4 header describes, which must
/// lie within `frame_len` (trailing Ethernet padding is allowed). Does
/// nothing if the frame is malformed.
#[inline]
pub fn tcp_finish(buf: &mut [u8], frame_len: usize) {
    let Some(frame) = buf.get_mut(..frame_len) else {
        return;
    };
    let Some((_, pkt)) = frame.split_at_mut_checked(IP_OFF) else {
        return;
    };
    let Some(ip) = pkt.first_chunk::<{ ipv4::HDR_LEN }>() else {
        return;
    };
    if ip[0] >> 4 != 4 {
        return;
    }
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
    if ihl < ipv4::HDR_LEN || total < ihl {
        return;
    }
    let Some(seg) = pkt.get_mut(ihl..total) else {
        return;
    };
    let Some(ck) = seg.get_mut(16..18) else {
        return;
    };
    ck.fill(0);
    let c = checksum::tcp(src, dst, seg);
    if let Some(ck) = seg.get_mut(16..18) {
        ck.copy_from_slice(&c.to_be_bytes());
    }
}

/// Build a complete frame with `payload` (headers, copy, checksum). Returns the frame length.
#[inline]
pub fn tcp_frame(
    buf: &mut [u8],
    h: &FrameHdr,
    t: &TcpRepr,
    payload: &[u8],
) -> Result<usize, WireError> {
    let off = tcp_headers(buf, h, t, payload.len())?;
    let end = off + payload.len();
    buf.get_mut(off..end)
        .ok_or(WireError::BufferTooSmall)?
        .copy_from_slice(payload);
    tcp_finish(buf, end);
    Ok(end)
}

/// Parsed view of an Ethernet/IPv4/TCP frame, the fast path's entry point.
#[derive(Debug, Clone, Copy)]
pub struct TcpFrame<'a> {
    pub eth: EthFrame<'a>,
    pub ip: Ipv4Packet<'a>,
    pub tcp: TcpSegment<'a>,
}

/// Parse a frame down to TCP. Non-IPv4, non-TCP and fragmented packets are
/// `Unsupported`. The IPv4 header checksum is verified, the TCP checksum is
/// not (see [`super::tcp::verify_checksum`]).
#[inline]
pub fn parse_tcp_frame<'a>(buf: &'a [u8]) -> Result<TcpFrame<'a>, WireError> {
    let eth = EthFrame::parse(buf)?;
    if eth.ethertype() != eth::ETHERTYPE_IPV4 {
        return Err(WireError::Unsupported);
    }
    let ip = Ipv4Packet::parse(eth.payload())?;
    if ip.protocol() != ipv4::PROTO_TCP || ip.is_fragment() {
        return Err(WireError::Unsupported);
    }
    let tcp = TcpSegment::parse(ip.payload())?;
    Ok(TcpFrame { eth, ip, tcp })
}

/// The common shape of a received segment — IPv4 without options, TCP,
/// not a fragment — parsed with both checksums verified in one pass (the
/// IPv4 header's, and TCP's over the pseudo header and the segment, RFC
/// 9293 §3.1). `None` for anything else, including every frame
/// [`parse_tcp_frame`] rejects and every bad checksum: the caller then
/// takes the generic path, which tells why. Accepts exactly the frames
/// that `parse_tcp_frame` accepts with an IHL of 5 and for which
/// [`super::tcp::verify_checksum`] holds, with the same view (tested).
#[inline]
pub fn parse_tcp_frame_verified(buf: &[u8]) -> Option<TcpFrame<'_>> {
    let v = parse_rx_verified(buf)?;
    let (eth_hdr, eth_payload) = buf.split_first_chunk::<{ eth::HDR_LEN }>()?;
    let ip: &[u8; ipv4::HDR_LEN] = v.hdr[IP_OFF..].first_chunk()?;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    Some(TcpFrame {
        eth: EthFrame {
            hdr: eth_hdr,
            payload: eth_payload,
        },
        ip: Ipv4Packet {
            fixed: ip,
            header: ip,
            payload: eth_payload.get(ipv4::HDR_LEN..total)?,
        },
        tcp: v.tcp,
    })
}

/// What the receive path needs of a frame: its Ethernet and fixed IPv4
/// header bytes (read at fixed offsets: the destination MAC, the
/// addresses, the ECN bits) and the TCP segment's view. Six words where a
/// [`TcpFrame`] is thirteen: the receive path keeps it in registers.
#[derive(Debug, Clone, Copy)]
pub struct RxFrame<'a> {
    /// The Ethernet header and the fixed IPv4 header (ethertype IPv4).
    pub hdr: &'a [u8; TCP_OFF],
    pub tcp: TcpSegment<'a>,
}

impl<'a> RxFrame<'a> {
    /// From a frame [`parse_tcp_frame`] accepted (its Ethernet and fixed
    /// IPv4 headers are at the fixed offsets, whatever the IHL).
    #[inline]
    pub fn from_frame(buf: &'a [u8], fr: &TcpFrame<'a>) -> Option<Self> {
        Some(RxFrame {
            hdr: buf.first_chunk()?,
            tcp: fr.tcp,
        })
    }

    /// The Ethernet destination.
    #[inline(always)]
    pub fn eth_dst(&self) -> [u8; 6] {
        let h = self.hdr;
        [h[0], h[1], h[2], h[3], h[4], h[5]]
    }

    /// The Ethernet destination packed as `u64::from_le_bytes` packs its
    /// six bytes and two zeros (one load and a mask).
    #[inline(always)]
    pub fn eth_dst_word(&self) -> u64 {
        let (a, _) = self.hdr.split_first_chunk::<8>().unwrap_or((&[0; 8], &[]));
        u64::from_le_bytes(*a) & 0xffff_ffff_ffff
    }

    /// The IPv4 source and destination addresses, read as one word.
    #[inline(always)]
    pub fn ip_addrs(&self) -> (u32, u32) {
        let (_, a) = self.hdr.split_last_chunk::<8>().unwrap_or((&[], &[0; 8]));
        let w = u64::from_be_bytes(*a);
        ((w >> 32) as u32, w as u32)
    }

    /// The IPv4 source address.
    #[inline(always)]
    pub fn ip_src(&self) -> u32 {
        let h = self.hdr;
        u32::from_be_bytes([h[26], h[27], h[28], h[29]])
    }

    /// The IPv4 destination address.
    #[inline(always)]
    pub fn ip_dst(&self) -> u32 {
        let h = self.hdr;
        u32::from_be_bytes([h[30], h[31], h[32], h[33]])
    }

    /// The IPv4 ECN bits (RFC 3168 §5).
    #[inline(always)]
    pub fn ecn(&self) -> u8 {
        self.hdr[IP_OFF + 1] & 0x03
    }
}

/// [`parse_tcp_frame_verified`]'s checks, giving the receive path's
/// compact view ([`RxFrame`]) instead of the full one: accepts exactly the
/// same frames, with the same TCP segment (tested).
#[inline]
pub fn parse_rx_verified(buf: &[u8]) -> Option<RxFrame<'_>> {
    let (hdr, rest) = buf.split_first_chunk::<TCP_OFF>()?;
    // IPv4 (version 4, IHL 5), TCP, neither MF nor a fragment offset.
    if hdr[12..15] != [0x08, 0x00, 0x45]
        || hdr[23] != ipv4::PROTO_TCP
        || (hdr[20] & 0x3f) | hdr[21] != 0
    {
        return None;
    }
    let total = u16::from_be_bytes([hdr[16], hdr[17]]) as usize;
    // (One compare for both headers: the segment's length below is then
    // known to hold the fixed TCP header.)
    if total < ipv4::HDR_LEN + super::tcp::HDR_LEN {
        return None;
    }
    let seg = rest.get(..total - ipv4::HDR_LEN)?;
    let (fixed, _) = seg.split_first_chunk::<{ super::tcp::HDR_LEN }>()?;
    let hlen = (fixed[12] >> 4) as usize * 4;
    if hlen < super::tcp::HDR_LEN {
        return None;
    }
    let (thdr, payload) = seg.split_at_checked(hlen)?;
    let ip: &[u8; ipv4::HDR_LEN] = hdr[IP_OFF..].first_chunk()?;
    // Native-endian sums (RFC 1071 §2B): valid iff all ones, in either order.
    if !checksum::verifies_ne(checksum::sum_ne(ip)) {
        return None;
    }
    let pseudo = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]) as u64
        + u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]) as u64
        + ne16(ipv4::PROTO_TCP as u16)
        + ne16(seg.len() as u16);
    if !checksum::verifies_ne(pseudo + checksum::sum_ne(seg)) {
        return None;
    }
    Some(RxFrame {
        hdr,
        tcp: TcpSegment {
            fixed,
            options: thdr.get(super::tcp::HDR_LEN..).unwrap_or(&[]),
            payload,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tcp::{self, TcpOptions};
    use crate::wire::testutil::{ref_checksum, Rng};

    fn hdr() -> FrameHdr {
        FrameHdr {
            src_mac: [0x02, 0, 0, 0, 0, 1],
            dst_mac: [0x02, 0, 0, 0, 0, 2],
            src_ip: 0xc612_0001,
            dst_ip: 0xc612_0002,
            ttl: 64,
            ecn: ipv4::ECN_ECT0,
            ident: 7,
        }
    }

    fn repr() -> TcpRepr {
        TcpRepr {
            src_port: 6379,
            dst_port: 40000,
            seq: 1000,
            ack: 2000,
            flags: tcp::ACK | tcp::PSH,
            window: 512,
            options: TcpOptions {
                timestamp: Some((11, 22)),
                sack_blocks: [(5, 6), (0, 0), (0, 0), (0, 0)],
                sack_count: 1,
                ..Default::default()
            },
        }
    }

    fn build(payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 1600];
        let n = tcp_frame(&mut buf, &hdr(), &repr(), payload).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn round_trip() {
        let payload: Vec<u8> = (0..=200u8).collect();
        let f = build(&payload);
        assert_eq!(f.len(), 14 + 20 + 20 + 24 + payload.len());
        let p = parse_tcp_frame(&f).unwrap();
        assert_eq!(p.eth.src(), hdr().src_mac);
        assert_eq!(p.eth.dst(), hdr().dst_mac);
        assert_eq!(p.ip.src(), hdr().src_ip);
        assert_eq!(p.ip.dst(), hdr().dst_ip);
        assert_eq!(p.ip.ttl(), 64);
        assert_eq!(p.ip.ecn(), ipv4::ECN_ECT0);
        assert_eq!(p.ip.ident(), 7);
        assert!(p.ip.dont_fragment());
        assert_eq!(p.ip.total_len(), f.len() - 14);
        assert_eq!(p.tcp.repr().unwrap(), repr());
        assert_eq!(p.tcp.payload(), &payload[..]);
        assert!(tcp::verify_checksum(p.ip.src(), p.ip.dst(), p.ip.payload()));
        // Independent reference checksum over pseudo header + segment.
        let seg = &f[34..];
        let mut ph = Vec::new();
        ph.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2, 0, 6]);
        ph.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        ph.extend_from_slice(seg);
        assert_eq!(ref_checksum(&ph), 0);
        assert_eq!(ref_checksum(&f[14..34]), 0);
    }

    #[test]
    fn odd_and_empty_payloads_with_padding() {
        for len in [0usize, 1, 2, 3, 5, 1447] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            let mut f = build(&payload);
            // Ethernet padding after the frame must not change anything.
            f.extend_from_slice(&[0xee; 6]);
            let p = parse_tcp_frame(&f).unwrap();
            assert_eq!(p.tcp.payload(), &payload[..]);
            assert!(tcp::verify_checksum(p.ip.src(), p.ip.dst(), p.ip.payload()));
        }
    }

    #[test]
    fn finish_with_padding_in_frame_len() {
        let mut buf = [0u8; 128];
        let off = tcp_headers(&mut buf, &hdr(), &repr(), 2).unwrap();
        buf[off..off + 2].copy_from_slice(b"hi");
        buf[off + 2..off + 10].fill(0x55);
        tcp_finish(&mut buf, off + 10);
        let p = parse_tcp_frame(&buf[..off + 10]).unwrap();
        assert!(tcp::verify_checksum(p.ip.src(), p.ip.dst(), p.ip.payload()));
    }

    #[test]
    fn headers_errors() {
        let need = 14 + 20 + repr().header_len() + 10;
        for n in 0..need {
            let mut buf = vec![0u8; n];
            assert_eq!(
                tcp_headers(&mut buf, &hdr(), &repr(), 10),
                Err(WireError::BufferTooSmall)
            );
        }
        let mut buf = vec![0u8; need];
        assert_eq!(tcp_headers(&mut buf, &hdr(), &repr(), 10), Ok(need - 10));
        assert_eq!(
            tcp_headers(&mut buf, &hdr(), &repr(), usize::MAX),
            Err(WireError::BadTotalLen)
        );
        assert_eq!(
            tcp_headers(&mut buf, &hdr(), &repr(), 65535),
            Err(WireError::BadTotalLen)
        );
        // Largest IP packet is fine (given a big enough buffer).
        let max_payload = 65535 - 20 - repr().header_len();
        let mut big = vec![0u8; 14 + 65535];
        assert!(tcp_headers(&mut big, &hdr(), &repr(), max_payload).is_ok());
        assert_eq!(
            tcp_headers(&mut big, &hdr(), &repr(), max_payload + 1),
            Err(WireError::BadTotalLen)
        );
        tcp_finish(&mut big, 14 + 65535);
        let p = parse_tcp_frame(&big).unwrap();
        assert!(tcp::verify_checksum(p.ip.src(), p.ip.dst(), p.ip.payload()));
    }

    #[test]
    fn finish_never_panics() {
        let good = build(b"payload");
        // Any frame_len, including beyond the buffer and below the headers.
        for n in 0..good.len() + 10 {
            let mut b = good.clone();
            tcp_finish(&mut b, n);
            if n < good.len() {
                // Segment would extend past frame_len: untouched.
                assert_eq!(b, good);
            }
        }
        let mut rng = Rng::new(8);
        let mut buf = [0u8; 100];
        for _ in 0..300_000 {
            let n = rng.below(buf.len() + 1);
            rng.fill(&mut buf[..n]);
            if rng.below(2) == 0 && n > 20 {
                buf[14] = 0x40 | (rng.below(16) as u8);
                buf[16..18].copy_from_slice(&(rng.below(100) as u16).to_be_bytes());
            }
            let fl = rng.below(120);
            tcp_finish(&mut buf[..n], fl);
        }
    }

    #[test]
    fn unsupported_and_errors() {
        let good = build(b"abc");
        let fix_ip = |b: &mut Vec<u8>| {
            b[24] = 0;
            b[25] = 0;
            let c = checksum::ipv4_header(&b[14..34]);
            b[24..26].copy_from_slice(&c.to_be_bytes());
        };
        let mut b = good.clone();
        b[12..14].copy_from_slice(&eth::ETHERTYPE_ARP.to_be_bytes());
        assert_eq!(parse_tcp_frame(&b).unwrap_err(), WireError::Unsupported);
        let mut b = good.clone();
        b[23] = ipv4::PROTO_UDP;
        fix_ip(&mut b);
        assert_eq!(parse_tcp_frame(&b).unwrap_err(), WireError::Unsupported);
        for frag in [0x2000u16, 0x0001, 0x6000, 0x40ff] {
            let mut b = good.clone();
            b[20..22].copy_from_slice(&frag.to_be_bytes());
            fix_ip(&mut b);
            assert_eq!(parse_tcp_frame(&b).unwrap_err(), WireError::Unsupported);
        }
        let mut b = good.clone();
        b[22] ^= 1; // TTL without fixing checksum
        assert_eq!(parse_tcp_frame(&b).unwrap_err(), WireError::BadChecksum);
        let mut b = good.clone();
        b[14 + 20 + 12] = 0x40;
        assert_eq!(parse_tcp_frame(&b).unwrap_err(), WireError::BadHeaderLen);
        // A bad TCP checksum still parses (the caller verifies).
        let mut b = good.clone();
        let last = b.len() - 1;
        b[last] ^= 0xff;
        let p = parse_tcp_frame(&b).unwrap();
        assert!(!tcp::verify_checksum(
            p.ip.src(),
            p.ip.dst(),
            p.ip.payload()
        ));
    }

    #[test]
    fn every_truncation() {
        let good = build(b"some payload bytes");
        let hdrs = 14 + 20 + repr().header_len();
        for n in 0..good.len() {
            // The IP total length covers the whole frame, so every strict
            // prefix is truncated.
            assert_eq!(
                parse_tcp_frame(&good[..n]).unwrap_err(),
                WireError::Truncated,
                "{n}"
            );
        }
        assert!(hdrs < good.len());
        assert!(parse_tcp_frame(&good).is_ok());
    }

    #[test]
    fn random_never_panics() {
        let template = build(b"0123456789");
        let mut rng = Rng::new(9);
        let mut buf = vec![0u8; template.len() + 8];
        let mut ok = 0;
        for i in 0..300_000 {
            let n = rng.below(buf.len() + 1);
            if i % 2 == 0 {
                rng.fill(&mut buf[..n]);
            } else {
                // Mutate a valid frame at a few random places.
                buf[..template.len()].copy_from_slice(&template);
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(buf.len());
                    buf[at] = rng.next_u32() as u8;
                }
            }
            if let Ok(p) = parse_tcp_frame(&buf[..n]) {
                ok += 1;
                let _ = p.tcp.parse_options();
                let _ = p.tcp.timestamp();
                let _ = tcp::verify_checksum(p.ip.src(), p.ip.dst(), p.ip.payload());
                assert!(p.tcp.payload().len() <= n);
            }
        }
        assert!(ok > 1000, "{ok}");
    }

    /// The one-pass parse accepts exactly what the generic parse accepts
    /// with IHL 5 and a good TCP checksum, with the same view.
    #[test]
    fn verified_parse_agrees_with_the_generic_one() {
        let template = build(b"0123456789abcdef");
        let mut rng = Rng::new(0xfa57);
        let mut buf = vec![0u8; template.len() + 8];
        let (mut fast_ok, mut slow_ok) = (0, 0);
        for i in 0..400_000 {
            let n = if i % 4 == 0 {
                rng.below(buf.len() + 1)
            } else {
                template.len() + rng.below(9)
            };
            buf[..template.len()].copy_from_slice(&template);
            // Mutate 0-2 bytes; with 0, the frame is valid (padding aside).
            for _ in 0..rng.below(3) {
                let at = rng.below(buf.len());
                buf[at] = rng.next_u32() as u8;
            }
            if i % 5 == 0 {
                // Keep the IPv4 header checksum right, so TCP's is tested.
                buf[24] = 0;
                buf[25] = 0;
                let c = checksum::ipv4_header(&buf[14..34]);
                buf[24..26].copy_from_slice(&c.to_be_bytes());
            }
            let f = &buf[..n];
            let slow = parse_tcp_frame(f).ok().filter(|p| {
                p.ip.header.len() == ipv4::HDR_LEN
                    && tcp::verify_checksum(p.ip.src(), p.ip.dst(), p.ip.payload())
            });
            let fast = parse_tcp_frame_verified(f);
            assert_eq!(fast.is_some(), parse_rx_verified(f).is_some(), "case {i}");
            if let Ok(a) = parse_tcp_frame(f) {
                // The view the generic path gives the receive path.
                let r = RxFrame::from_frame(f, &a).expect("headers in the frame");
                assert_eq!(r.eth_dst(), a.eth.dst());
                assert_eq!(r.ip_src(), a.ip.src());
                assert_eq!(r.ip_dst(), a.ip.dst());
                assert_eq!(r.ip_addrs(), (a.ip.src(), a.ip.dst()));
                assert_eq!(r.ecn(), a.ip.ecn());
                assert_eq!(r.tcp.payload, a.tcp.payload);
            }
            match (slow, fast) {
                (None, None) => {}
                (Some(a), Some(b)) => {
                    fast_ok += 1;
                    assert_eq!(a.eth.hdr, b.eth.hdr);
                    assert_eq!(a.eth.payload, b.eth.payload);
                    assert_eq!(a.ip.fixed, b.ip.fixed);
                    assert_eq!(a.ip.header, b.ip.header);
                    assert_eq!(a.ip.payload, b.ip.payload);
                    assert_eq!(a.tcp.fixed, b.tcp.fixed);
                    assert_eq!(a.tcp.options, b.tcp.options);
                    assert_eq!(a.tcp.payload, b.tcp.payload);
                    // The receive path's compact view: the same segment,
                    // the same header fields at their fixed offsets.
                    let r = parse_rx_verified(f).expect("compact view");
                    assert_eq!(a.tcp.fixed, r.tcp.fixed);
                    assert_eq!(a.tcp.options, r.tcp.options);
                    assert_eq!(a.tcp.payload, r.tcp.payload);
                    assert_eq!(r.eth_dst(), a.eth.dst());
                    let d = a.eth.dst();
                    let w = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], 0, 0]);
                    assert_eq!(r.eth_dst_word(), w);
                    assert_eq!(r.ip_src(), a.ip.src());
                    assert_eq!(r.ip_dst(), a.ip.dst());
                    assert_eq!(r.ip_addrs(), (a.ip.src(), a.ip.dst()));
                    assert_eq!(r.ecn(), a.ip.ecn());
                }
                (a, b) => panic!(
                    "case {i}: generic {:?} one-pass {:?}",
                    a.is_some(),
                    b.is_some()
                ),
            }
            if parse_tcp_frame(f).is_ok() {
                slow_ok += 1;
            }
        }
        assert!(fast_ok > 50_000, "{fast_ok}");
        assert!(slow_ok > fast_ok, "{slow_ok}");
    }

    #[test]
    fn csum_to_partial_round_trips_through_a_nic() {
        for len in [0usize, 1, 7, 64, 1447] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 13 + 5) as u8).collect();
            let good = build(&payload);
            let mut b = good.clone();
            assert!(tcp_csum_to_partial(&mut b));
            assert_ne!(b, good);
            // The NIC's part: sum the segment from the field's value.
            let seg_end = 14 + u16::from_be_bytes([b[16], b[17]]) as usize;
            let c = checksum::fold(checksum::sum(&b[34..seg_end], 0));
            b[34 + 16..34 + 18].copy_from_slice(&c.to_be_bytes());
            assert_eq!(b, good, "len {len}");
        }
        let mut arp = build(b"x");
        arp[12..14].copy_from_slice(&eth::ETHERTYPE_ARP.to_be_bytes());
        let before = arp.clone();
        assert!(!tcp_csum_to_partial(&mut arp));
        assert_eq!(arp, before);
        assert!(!tcp_csum_to_partial(&mut [0u8; 20]));
    }

    /// The packed key compare ([`HdrTemplate::matches_path`]) tells every
    /// single changed bit of every input apart, and an empty template
    /// matches nothing, not even an all-zero flow.
    #[test]
    fn template_key_sees_every_bit() {
        let (sm, dm) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let (si, di, sp, dp, ttl) = (0xc612_0001u32, 0xc612_0002u32, 7000u16, 40000u16, 64u8);
        for off in [false, true] {
            let t = HdrTemplate::new(sm, dm, si, di, sp, dp, ttl, off);
            assert!(t.matches(sm, dm, si, di, sp, dp, ttl, off));
            assert!(!t.matches(sm, dm, si, di, sp, dp, ttl, !off));
            for bit in 0..48 {
                let flip = |m: [u8; 6]| {
                    let mut m = m;
                    m[bit / 8] ^= 1 << (bit % 8);
                    m
                };
                assert!(!t.matches(flip(sm), dm, si, di, sp, dp, ttl, off));
                assert!(!t.matches(sm, flip(dm), si, di, sp, dp, ttl, off));
            }
            for bit in 0..32 {
                assert!(!t.matches(sm, dm, si ^ 1 << bit, di, sp, dp, ttl, off));
                assert!(!t.matches(sm, dm, si, di ^ 1 << bit, sp, dp, ttl, off));
            }
            for bit in 0..16 {
                assert!(!t.matches(sm, dm, si, di, sp ^ 1 << bit, dp, ttl, off));
                assert!(!t.matches(sm, dm, si, di, sp, dp ^ 1 << bit, ttl, off));
            }
            for bit in 0..8 {
                assert!(!t.matches(sm, dm, si, di, sp, dp, ttl ^ 1 << bit, off));
            }
            // Swapped addresses or ports are another flow.
            assert!(!t.matches(sm, dm, di, si, sp, dp, ttl, off));
            assert!(!t.matches(sm, dm, si, di, dp, sp, ttl, off));
        }
        let e = HdrTemplate::default();
        assert!(!e.matches([0; 6], [0; 6], 0, 0, 0, 0, 0, false));
        assert!(!e.matches(sm, dm, si, di, sp, dp, ttl, false));
    }

    #[test]
    fn template_matches_emit_fast() {
        let mut x = 0x0bad_cafe_f00d_1234u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut payload = vec![0u8; 1600];
        for i in 0..20_000 {
            let r = next();
            let s = FastSeg {
                src_mac: [2, 0, (r >> 56) as u8, 0, 0, 1],
                dst_mac: [2, (r >> 48) as u8, 0, 0, 0, r as u8],
                src_ip: r as u32,
                dst_ip: (r >> 32) as u32,
                ttl: (r >> 40) as u8,
                ecn: (r >> 8) as u8 & 3,
                src_port: (r >> 16) as u16,
                dst_port: (r >> 24) as u16,
                seq: next() as u32,
                ack: next() as u32,
                flags: (r >> 40) as u8,
                window: (r >> 48) as u16,
                ts: if i % 3 != 0 {
                    Some((next() as u32, next() as u32))
                } else {
                    None
                },
                sack: &[],
            };
            // Mostly small payloads; some odd, some empty, some all ones.
            let payload_len = match i % 5 {
                0 => 0,
                1 => (next() % 1460) as usize,
                _ => (next() % 130) as usize,
            };
            let fill = next();
            for (j, p) in payload[..payload_len].iter_mut().enumerate() {
                *p = if i % 7 == 0 {
                    0xff
                } else {
                    (j as u64 ^ fill) as u8
                };
            }
            let t = HdrTemplate::new(
                s.src_mac, s.dst_mac, s.src_ip, s.dst_ip, s.src_port, s.dst_port, s.ttl, false,
            );
            assert!(t.matches(
                s.src_mac, s.dst_mac, s.src_ip, s.dst_ip, s.src_port, s.dst_port, s.ttl, false
            ));
            assert!(!t.matches(
                s.src_mac,
                s.dst_mac,
                s.src_ip,
                s.dst_ip,
                s.src_port,
                s.dst_port,
                s.ttl ^ 1,
                false
            ));
            assert!(!t.matches(
                s.src_mac, [9; 6], s.src_ip, s.dst_ip, s.src_port, s.dst_port, s.ttl, false
            ));
            assert!(!t.matches(
                s.src_mac,
                s.dst_mac,
                s.src_ip ^ 1,
                s.dst_ip,
                s.src_port,
                s.dst_port,
                s.ttl,
                false
            ));
            let mut a = vec![0x5au8; 1600];
            let (off, sum) = t
                .emit(
                    &mut a,
                    s.ecn,
                    s.seq,
                    s.ack,
                    s.flags,
                    s.window,
                    s.ts,
                    payload_len,
                )
                .unwrap();
            a[off..off + payload_len].copy_from_slice(&payload[..payload_len]);
            t.finish(&mut a, off, payload_len, sum);
            let mut b = vec![0u8; 1600];
            let off2 = emit_fast(&mut b, &s, payload_len).unwrap();
            b[off2..off2 + payload_len].copy_from_slice(&payload[..payload_len]);
            finish_fast(&mut b, &s, off2, payload_len);
            assert_eq!(off, off2);
            assert_eq!(a[..off + payload_len], b[..off + payload_len], "case {i}");
            let p = parse_tcp_frame(&a[..off + payload_len]).unwrap();
            assert!(tcp::verify_checksum(p.ip.src(), p.ip.dst(), p.ip.payload()));
            // With offload: the same frame once the "NIC" has summed the
            // segment over the pseudo header's sum left in the field.
            let to = HdrTemplate::new(
                s.src_mac, s.dst_mac, s.src_ip, s.dst_ip, s.src_port, s.dst_port, s.ttl, true,
            );
            assert!(!t.matches(
                s.src_mac, s.dst_mac, s.src_ip, s.dst_ip, s.src_port, s.dst_port, s.ttl, true
            ));
            let mut o = vec![0x33u8; 1600];
            let (off3, sum3) = to
                .emit(
                    &mut o,
                    s.ecn,
                    s.seq,
                    s.ack,
                    s.flags,
                    s.window,
                    s.ts,
                    payload_len,
                )
                .unwrap();
            o[off3..off3 + payload_len].copy_from_slice(&payload[..payload_len]);
            to.finish(&mut o, off3, payload_len, sum3);
            let seg = &mut o[TCP_OFF..off3 + payload_len];
            let partial = u16::from_be_bytes([seg[16], seg[17]]);
            let want_partial = checksum::pseudo_header(s.src_ip, s.dst_ip, 6, seg.len() as u16);
            assert_eq!(partial as u32 % 0xffff, want_partial % 0xffff);
            let c = checksum::fold(checksum::sum(seg, 0));
            seg[16..18].copy_from_slice(&c.to_be_bytes());
            assert_eq!(
                o[..off3 + payload_len],
                b[..off + payload_len],
                "offload case {i}"
            );
        }
        let t = HdrTemplate::default();
        assert!(!t.matches([0; 6], [0; 6], 0, 0, 0, 0, 0, false));
        let t = HdrTemplate::new([0; 6], [0; 6], 0, 0, 0, 0, 64, false);
        assert_eq!(t.emit(&mut [0u8; 65], 0, 0, 0, 0, 0, None, 12), None);
        assert_eq!(
            t.emit(&mut [0u8; 200], 0, 0, 0, 0, 0, Some((1, 2)), 135),
            None
        );
        assert!(t
            .emit(&mut [0u8; 200], 0, 0, 0, 0, 0, Some((1, 2)), 134)
            .is_some());
        let mut big = vec![0u8; 70_000];
        assert_eq!(t.emit(&mut big, 0, 0, 0, 0, 0, None, 65_496), None);
        assert!(t.emit(&mut big, 0, 0, 0, 0, 0, None, 65_495).is_some());
    }

    #[test]
    fn emit_fast_matches_the_generic_builder() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..2000 {
            let r = next();
            let blocks: Vec<(u32, u32)> =
                (0..i % 7).map(|_| (next() as u32, next() as u32)).collect();
            let s = FastSeg {
                src_mac: [2, 0, 0, 0, 0, 1],
                dst_mac: [2, 0, 0, 0, 0, r as u8],
                src_ip: r as u32,
                dst_ip: (r >> 32) as u32,
                ttl: 64,
                ecn: (r >> 8) as u8 & 3,
                src_port: (r >> 16) as u16,
                dst_port: (r >> 24) as u16,
                seq: next() as u32,
                ack: next() as u32,
                flags: (r >> 40) as u8,
                window: (r >> 48) as u16,
                ts: if i % 2 == 0 {
                    Some((next() as u32, next() as u32))
                } else {
                    None
                },
                sack: &blocks,
            };
            let payload_len = (next() % 1400) as usize;
            let payload: Vec<u8> = (0..payload_len).map(|j| (j as u64 ^ r) as u8).collect();
            let mut a = vec![0u8; 1600];
            let off = emit_fast(&mut a, &s, payload_len).unwrap();
            a[off..off + payload_len].copy_from_slice(&payload);
            finish_fast(&mut a, &s, off, payload_len);
            let mut opts = crate::wire::tcp::TcpOptions {
                timestamp: s.ts,
                ..Default::default()
            };
            // The generic builder drops the blocks that do not fit the same way.
            for (slot, b) in opts.sack_blocks.iter_mut().zip(s.sack) {
                *slot = *b;
            }
            opts.sack_count = s.sack.len().min(4) as u8;
            let t = TcpRepr {
                src_port: s.src_port,
                dst_port: s.dst_port,
                seq: s.seq,
                ack: s.ack,
                flags: s.flags,
                window: s.window,
                options: opts,
            };
            let h = FrameHdr {
                src_mac: s.src_mac,
                dst_mac: s.dst_mac,
                src_ip: s.src_ip,
                dst_ip: s.dst_ip,
                ttl: 64,
                ecn: s.ecn,
                ident: 0,
            };
            let mut b = vec![0u8; 1600];
            let off2 = tcp_headers(&mut b, &h, &t, payload_len).unwrap();
            b[off2..off2 + payload_len].copy_from_slice(&payload);
            tcp_finish(&mut b, off2 + payload_len);
            assert_eq!(off, off2);
            assert_eq!(a[..off + payload_len], b[..off + payload_len], "case {i}");
        }
        let s = FastSeg {
            src_mac: [0; 6],
            dst_mac: [0; 6],
            src_ip: 0,
            dst_ip: 0,
            ttl: 1,
            ecn: 0,
            src_port: 0,
            dst_port: 0,
            seq: 0,
            ack: 0,
            flags: 0,
            window: 0,
            ts: None,
            sack: &[],
        };
        assert_eq!(emit_fast(&mut [0u8; 60], &s, 10), None);
        assert_eq!(emit_fast(&mut [0u8; 100], &s, 70_000), None);
    }
}
