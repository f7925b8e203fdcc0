//! TCP segments (RFC 9293) and the options the service uses: MSS, window
//! scale (RFC 7323), SACK (RFC 2018) and timestamps (RFC 7323).

use super::{be16, be32, checksum, WireError};

pub const HDR_LEN: usize = 20;
/// Maximum length of the options area.
pub const MAX_OPTIONS_LEN: usize = 40;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

pub const MAX_SACK_BLOCKS: usize = 4;
/// Largest window-scale shift (RFC 7323 §2.3); larger received values are clamped.
pub const MAX_WSCALE: u8 = 14;

const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_WS: u8 = 3;
const OPT_SACK_PERM: u8 = 4;
const OPT_SACK: u8 = 5;
const OPT_TS: u8 = 8;

/// Zero-copy view of a TCP segment.
#[derive(Debug, Clone, Copy)]
pub struct TcpSegment<'a> {
    pub(super) fixed: &'a [u8; HDR_LEN],
    pub(super) options: &'a [u8],
    pub(super) payload: &'a [u8],
}

impl<'a> TcpSegment<'a> {
    /// Parse a segment; `buf` is exactly the IP payload. The data offset must
    /// be at least 5 (`BadHeaderLen`) and the header must fit (`Truncated`).
    /// Options are not parsed here.
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let fixed = buf.first_chunk::<HDR_LEN>().ok_or(WireError::Truncated)?;
        let hlen = (fixed[12] >> 4) as usize * 4;
        if hlen < HDR_LEN {
            return Err(WireError::BadHeaderLen);
        }
        let (hdr, payload) = buf.split_at_checked(hlen).ok_or(WireError::Truncated)?;
        let options = hdr.get(HDR_LEN..).unwrap_or(&[]);
        Ok(TcpSegment {
            fixed,
            options,
            payload,
        })
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.fixed, 0)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.fixed, 2)
    }

    #[inline]
    pub fn seq(&self) -> u32 {
        be32(self.fixed, 4)
    }

    #[inline]
    pub fn ack(&self) -> u32 {
        be32(self.fixed, 8)
    }

    /// The eight flag bits ([`FIN`] .. [`CWR`]); the NS bit is ignored.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.fixed[13]
    }

    #[inline]
    pub fn window(&self) -> u16 {
        be16(self.fixed, 14)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.fixed, 16)
    }

    #[inline]
    pub fn urgent(&self) -> u16 {
        be16(self.fixed, 18)
    }

    /// Header length in bytes, options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        HDR_LEN + self.options.len()
    }

    /// The raw options area.
    #[inline]
    pub fn options(&self) -> &'a [u8] {
        self.options
    }

    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Parse all options (see [`TcpOptions::parse`]).
    #[inline]
    pub fn parse_options(&self) -> Result<TcpOptions, WireError> {
        TcpOptions::parse(self.options)
    }

    /// The timestamp option `(value, echo reply)`. Checks the common layout
    /// (NOP NOP TS first) before falling back to a full parse; `None` if
    /// absent or if the options are malformed.
    #[inline]
    pub fn timestamp(&self) -> Option<(u32, u32)> {
        if let Some(o) = self.options.first_chunk::<12>() {
            if o[..4] == [OPT_NOP, OPT_NOP, OPT_TS, 10] {
                return Some((be32(o, 4), be32(o, 8)));
            }
        }
        if self.options.is_empty() {
            return None;
        }
        self.parse_options().ok()?.timestamp
    }

    /// Header fields and parsed options as a [`TcpRepr`].
    pub fn repr(&self) -> Result<TcpRepr, WireError> {
        Ok(TcpRepr {
            src_port: self.src_port(),
            dst_port: self.dst_port(),
            seq: self.seq(),
            ack: self.ack(),
            flags: self.flags(),
            window: self.window(),
            options: self.parse_options()?,
        })
    }
}

/// TCP options, parsed or to emit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpOptions {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    pub timestamp: Option<(u32, u32)>,
    /// `(left edge, right edge)`; the first `sack_count` are valid.
    pub sack_blocks: [(u32, u32); MAX_SACK_BLOCKS],
    pub sack_count: u8,
}

impl TcpOptions {
    /// Parse an options area: EOL ends it; NOP is skipped; MSS, window scale
    /// (clamped to [`MAX_WSCALE`]), SACK-permitted, SACK (1..4 blocks) and
    /// timestamps are decoded; other kinds are skipped by their length.
    /// `BadOption` for a length below 2, an option running past the end, or
    /// a wrong length for a known kind. A repeated option overrides.
    pub fn parse(mut o: &[u8]) -> Result<TcpOptions, WireError> {
        let mut out = TcpOptions::default();
        loop {
            match *o {
                [] | [OPT_EOL, ..] => break,
                [OPT_NOP, ref rest @ ..] => o = rest,
                [_] => return Err(WireError::BadOption),
                [kind, len, ..] => {
                    let len = len as usize;
                    if len < 2 {
                        return Err(WireError::BadOption);
                    }
                    let (opt, rest) = o.split_at_checked(len).ok_or(WireError::BadOption)?;
                    let body = opt.get(2..).unwrap_or(&[]);
                    match (kind, body) {
                        (OPT_MSS, &[a, b]) => out.mss = Some(u16::from_be_bytes([a, b])),
                        (OPT_WS, &[s]) => out.wscale = Some(s.min(MAX_WSCALE)),
                        (OPT_SACK_PERM, &[]) => out.sack_permitted = true,
                        (OPT_TS, &[a, b, c, d, e, f, g, h]) => {
                            out.timestamp = Some((
                                u32::from_be_bytes([a, b, c, d]),
                                u32::from_be_bytes([e, f, g, h]),
                            ))
                        }
                        (OPT_SACK, _) => {
                            if body.is_empty()
                                || body.len() % 8 != 0
                                || body.len() > 8 * MAX_SACK_BLOCKS
                            {
                                return Err(WireError::BadOption);
                            }
                            out.sack_blocks = [(0, 0); MAX_SACK_BLOCKS];
                            let mut n = 0u8;
                            for (slot, c) in out.sack_blocks.iter_mut().zip(body.chunks_exact(8)) {
                                if let Some(c) = c.first_chunk::<8>() {
                                    *slot = (be32(c, 0), be32(c, 4));
                                    n += 1;
                                }
                            }
                            out.sack_count = n;
                        }
                        (OPT_MSS | OPT_WS | OPT_SACK_PERM | OPT_TS, _) => {
                            return Err(WireError::BadOption)
                        }
                        _ => {}
                    }
                    o = rest;
                }
            }
        }
        Ok(out)
    }

    /// Number of SACK blocks that are emitted (those that fit in 40 bytes).
    #[inline]
    pub fn emit_sack_count(&self) -> usize {
        let n = (self.sack_count as usize).min(MAX_SACK_BLOCKS);
        if n == 0 {
            return 0;
        }
        let room = MAX_OPTIONS_LEN - self.fixed_len();
        if room < 12 {
            0
        } else {
            n.min((room - 4) / 8)
        }
    }

    /// Bytes of everything but SACK blocks (at most 20).
    #[inline]
    fn fixed_len(&self) -> usize {
        let mut l = 0;
        if self.mss.is_some() {
            l += 4;
        }
        if self.timestamp.is_some() {
            l += 12;
        } else if self.sack_permitted {
            l += 4;
        }
        if self.wscale.is_some() {
            l += 4;
        }
        l
    }

    /// Length of the emitted options: a multiple of 4, at most 40 (SACK
    /// blocks that do not fit are dropped, last ones first).
    #[inline]
    pub fn emit_len(&self) -> usize {
        let k = self.emit_sack_count();
        self.fixed_len() + if k > 0 { 4 + 8 * k } else { 0 }
    }

    /// Write the options into `buf`; returns [`emit_len`](Self::emit_len).
    /// Layout: MSS; SACK-permitted + TS as `4,2,8,10,..` (or NOP NOP TS, or
    /// NOP NOP SACK-permitted); NOP WS; NOP NOP SACK blocks. Every part is a
    /// multiple of 4 bytes, so no padding is needed.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.emit_len();
        let out = buf.get_mut(..len).ok_or(WireError::BufferTooSmall)?;
        let mut w = Writer { buf: out, pos: 0 };
        if let Some(mss) = self.mss {
            let m = mss.to_be_bytes();
            w.put(&[OPT_MSS, 4, m[0], m[1]]);
        }
        match (self.sack_permitted, self.timestamp) {
            (sp, Some((val, ecr))) => {
                if sp {
                    w.put(&[OPT_SACK_PERM, 2, OPT_TS, 10]);
                } else {
                    w.put(&[OPT_NOP, OPT_NOP, OPT_TS, 10]);
                }
                w.put(&val.to_be_bytes());
                w.put(&ecr.to_be_bytes());
            }
            (true, None) => w.put(&[OPT_NOP, OPT_NOP, OPT_SACK_PERM, 2]),
            (false, None) => {}
        }
        if let Some(ws) = self.wscale {
            w.put(&[OPT_NOP, OPT_WS, 3, ws]);
        }
        let k = self.emit_sack_count();
        if k > 0 {
            w.put(&[OPT_NOP, OPT_NOP, OPT_SACK, (2 + 8 * k) as u8]);
            for &(l, r) in self.sack_blocks.iter().take(k) {
                w.put(&l.to_be_bytes());
                w.put(&r.to_be_bytes());
            }
        }
        Ok(len)
    }
}

/// Sequential writer over a buffer already checked to be long enough.
struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    #[inline(always)]
    fn put(&mut self, b: &[u8]) {
        let end = self.pos + b.len();
        if let Some(d) = self.buf.get_mut(self.pos..end) {
            d.copy_from_slice(b);
        }
        self.pos = end;
    }
}

/// A TCP header to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub options: TcpOptions,
}

impl TcpRepr {
    /// Header length including options.
    #[inline]
    pub fn header_len(&self) -> usize {
        HDR_LEN + self.options.emit_len()
    }

    /// Write header and options (checksum and urgent pointer 0); returns the header length.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let hl = self.header_len();
        let out = buf.get_mut(..hl).ok_or(WireError::BufferTooSmall)?;
        let (h, opts) = out
            .split_first_chunk_mut::<HDR_LEN>()
            .ok_or(WireError::BufferTooSmall)?;
        h[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        h[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        h[4..8].copy_from_slice(&self.seq.to_be_bytes());
        h[8..12].copy_from_slice(&self.ack.to_be_bytes());
        h[12] = ((hl / 4) as u8) << 4;
        h[13] = self.flags;
        h[14..16].copy_from_slice(&self.window.to_be_bytes());
        h[16..20].fill(0);
        self.options.emit(opts)?;
        Ok(hl)
    }
}

/// Whether `segment` (as received, the whole IP payload) has a valid checksum.
#[inline]
pub fn verify_checksum(src: u32, dst: u32, segment: &[u8]) -> bool {
    checksum::tcp(src, dst, segment) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::{ref_checksum, Rng};

    fn opts_from(o: &[u8]) -> Result<TcpOptions, WireError> {
        TcpOptions::parse(o)
    }

    fn random_options(rng: &mut Rng) -> TcpOptions {
        let mut o = TcpOptions::default();
        if rng.below(2) == 0 {
            o.mss = Some(rng.next_u16());
        }
        if rng.below(2) == 0 {
            o.wscale = Some(rng.below(15) as u8);
        }
        o.sack_permitted = rng.below(2) == 0;
        if rng.below(2) == 0 {
            o.timestamp = Some((rng.next_u32(), rng.next_u32()));
        }
        o.sack_count = rng.below(MAX_SACK_BLOCKS + 1) as u8;
        for b in o.sack_blocks.iter_mut().take(o.sack_count as usize) {
            *b = (rng.next_u32(), rng.next_u32());
        }
        o
    }

    /// What parsing the emitted options should give back.
    fn expected_after_emit(o: &TcpOptions) -> TcpOptions {
        let mut e = *o;
        let k = o.emit_sack_count();
        e.sack_count = k as u8;
        for (i, b) in e.sack_blocks.iter_mut().enumerate() {
            if i >= k {
                *b = (0, 0);
            }
        }
        e
    }

    #[test]
    fn repr_round_trip_random() {
        let mut rng = Rng::new(5);
        let mut buf = [0u8; 128];
        for _ in 0..50_000 {
            let r = TcpRepr {
                src_port: rng.next_u16(),
                dst_port: rng.next_u16(),
                seq: rng.next_u32(),
                ack: rng.next_u32(),
                flags: rng.next_u32() as u8,
                window: rng.next_u16(),
                options: random_options(&mut rng),
            };
            let hl = r.header_len();
            assert!(hl % 4 == 0 && (20..=60).contains(&hl));
            let plen = rng.below(40);
            assert_eq!(r.emit(&mut buf), Ok(hl));
            let seg = TcpSegment::parse(&buf[..hl + plen]).unwrap();
            assert_eq!(seg.header_len(), hl);
            assert_eq!(seg.payload().len(), plen);
            assert_eq!(seg.checksum(), 0);
            assert_eq!(seg.urgent(), 0);
            let mut want = r;
            want.options = expected_after_emit(&r.options);
            assert_eq!(seg.repr().unwrap(), want);
            assert_eq!(seg.timestamp(), r.options.timestamp);
        }
    }

    #[test]
    fn emit_known_layouts() {
        let mut buf = [0u8; 60];
        // SYN: MSS, SACK-permitted + TS combined, WS.
        let o = TcpOptions {
            mss: Some(1460),
            wscale: Some(7),
            sack_permitted: true,
            timestamp: Some((0x0102_0304, 0)),
            ..Default::default()
        };
        assert_eq!(o.emit_len(), 20);
        assert_eq!(o.emit(&mut buf), Ok(20));
        assert_eq!(
            &buf[..20],
            &[2, 4, 0x05, 0xb4, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 7]
        );
        // TS only: NOP NOP TS.
        let o = TcpOptions {
            timestamp: Some((5, 6)),
            ..Default::default()
        };
        assert_eq!(o.emit(&mut buf), Ok(12));
        assert_eq!(&buf[..12], &[1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6]);
        // SACK-permitted only.
        let o = TcpOptions {
            sack_permitted: true,
            ..Default::default()
        };
        assert_eq!(o.emit(&mut buf), Ok(4));
        assert_eq!(&buf[..4], &[1, 1, 4, 2]);
        // WS only.
        let o = TcpOptions {
            wscale: Some(14),
            ..Default::default()
        };
        assert_eq!(o.emit(&mut buf), Ok(4));
        assert_eq!(&buf[..4], &[1, 3, 3, 14]);
        // Nothing.
        assert_eq!(TcpOptions::default().emit_len(), 0);
        assert_eq!(TcpOptions::default().emit(&mut []), Ok(0));
        // TS + 2 SACK blocks.
        let o = TcpOptions {
            timestamp: Some((1, 2)),
            sack_blocks: [(10, 20), (30, 40), (0, 0), (0, 0)],
            sack_count: 2,
            ..Default::default()
        };
        assert_eq!(o.emit(&mut buf), Ok(32));
        assert_eq!(&buf[12..16], &[1, 1, 5, 18]);
        assert_eq!(&buf[16..24], &[0, 0, 0, 10, 0, 0, 0, 20]);
        assert_eq!(&buf[24..32], &[0, 0, 0, 30, 0, 0, 0, 40]);
    }

    #[test]
    fn sack_blocks_dropped_when_full() {
        let blocks = [(1, 2), (3, 4), (5, 6), (7, 8)];
        let base = TcpOptions {
            sack_blocks: blocks,
            sack_count: 4,
            ..Default::default()
        };
        assert_eq!(base.emit_sack_count(), 4);
        assert_eq!(base.emit_len(), 36);
        let ts = TcpOptions {
            timestamp: Some((1, 1)),
            ..base
        };
        assert_eq!(ts.emit_sack_count(), 3);
        assert_eq!(ts.emit_len(), 40);
        let all = TcpOptions {
            mss: Some(1),
            wscale: Some(1),
            sack_permitted: true,
            timestamp: Some((1, 1)),
            ..base
        };
        assert_eq!(all.emit_sack_count(), 2);
        assert_eq!(all.emit_len(), 40);
        // Hostile count is clamped.
        let big = TcpOptions {
            sack_count: 200,
            ..base
        };
        assert_eq!(big.emit_sack_count(), 4);
        let mut buf = [0u8; 40];
        let n = ts.emit(&mut buf).unwrap();
        let p = opts_from(&buf[..n]).unwrap();
        assert_eq!(p.sack_count, 3);
        assert_eq!(&p.sack_blocks[..3], &blocks[..3]);
        assert_eq!(p.sack_blocks[3], (0, 0));
    }

    #[test]
    fn sack_round_trip_1_to_4() {
        for n in 1..=4u8 {
            let mut o = TcpOptions {
                sack_count: n,
                ..Default::default()
            };
            for i in 0..n as usize {
                o.sack_blocks[i] = (1000 * i as u32 + 1, 1000 * i as u32 + 500);
            }
            let mut buf = [0u8; 40];
            let len = o.emit(&mut buf).unwrap();
            assert_eq!(len, 4 + 8 * n as usize);
            assert_eq!(opts_from(&buf[..len]).unwrap(), o);
        }
    }

    #[test]
    fn wscale_round_trip_and_clamp() {
        for s in 0..=14u8 {
            let o = TcpOptions {
                wscale: Some(s),
                ..Default::default()
            };
            let mut buf = [0u8; 4];
            o.emit(&mut buf).unwrap();
            assert_eq!(opts_from(&buf).unwrap().wscale, Some(s));
        }
        assert_eq!(opts_from(&[3, 3, 15, 0]).unwrap().wscale, Some(14));
        assert_eq!(opts_from(&[3, 3, 255, 0]).unwrap().wscale, Some(14));
    }

    #[test]
    fn option_edge_cases() {
        use WireError::BadOption;
        // Empty, all NOPs, EOL with garbage after it.
        assert_eq!(opts_from(&[]), Ok(TcpOptions::default()));
        assert_eq!(opts_from(&[1, 1, 1, 1]), Ok(TcpOptions::default()));
        assert_eq!(opts_from(&[0, 0xff, 0xff, 0x00]), Ok(TcpOptions::default()));
        // EOL early: MSS before it is kept, malformed bytes after it ignored.
        let o = opts_from(&[2, 4, 0x05, 0xb4, 0, 5, 0, 1]).unwrap();
        assert_eq!(o.mss, Some(1460));
        // Length 0 and 1.
        assert_eq!(opts_from(&[2, 0, 0, 0]), Err(BadOption));
        assert_eq!(opts_from(&[99, 1, 1, 1]), Err(BadOption));
        assert_eq!(opts_from(&[99, 0]), Err(BadOption));
        // Kind without length byte.
        assert_eq!(opts_from(&[1, 1, 1, 2]), Err(BadOption));
        assert_eq!(opts_from(&[99]), Err(BadOption));
        // Overruns.
        assert_eq!(opts_from(&[2, 4, 0x05]), Err(BadOption));
        assert_eq!(opts_from(&[8, 10, 0, 0, 0, 0, 0, 0, 0]), Err(BadOption));
        assert_eq!(opts_from(&[99, 40, 0, 0]), Err(BadOption));
        // Unknown kinds with valid length are skipped.
        let o = opts_from(&[99, 2, 30, 6, 1, 2, 3, 4, 3, 3, 5, 1]).unwrap();
        assert_eq!(o.wscale, Some(5));
        assert_eq!(opts_from(&[254, 4, 0xf9, 0x89]), Ok(TcpOptions::default()));
        // Wrong lengths for known kinds.
        assert_eq!(opts_from(&[2, 3, 0, 1]), Err(BadOption));
        assert_eq!(opts_from(&[2, 5, 0, 0, 0, 1, 1, 1]), Err(BadOption));
        assert_eq!(opts_from(&[3, 4, 1, 1]), Err(BadOption));
        assert_eq!(opts_from(&[3, 2, 1, 1]), Err(BadOption));
        assert_eq!(opts_from(&[4, 3, 0, 1]), Err(BadOption));
        assert_eq!(opts_from(&[8, 8, 0, 0, 0, 0, 0, 0]), Err(BadOption));
        assert_eq!(
            opts_from(&[8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(BadOption)
        );
        // SACK: 0 blocks, non-multiple of 8, 5 blocks.
        assert_eq!(opts_from(&[5, 2, 1, 1]), Err(BadOption));
        assert_eq!(opts_from(&[5, 6, 0, 0, 0, 0]), Err(BadOption));
        let mut five = [0u8; 42];
        five[0] = 5;
        five[1] = 42;
        assert_eq!(opts_from(&five), Err(BadOption));
        // SACK-permitted and TS parsed.
        let o = opts_from(&[4, 2, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]).unwrap();
        assert!(o.sack_permitted);
        assert_eq!(o.timestamp, Some((7, 9)));
        // A later SACK replaces an earlier one.
        let o = opts_from(&[
            5, 18, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 5, 10, 0, 0, 0, 9, 0, 0, 0, 10,
        ])
        .unwrap();
        assert_eq!(o.sack_count, 1);
        assert_eq!(o.sack_blocks, [(9, 10), (0, 0), (0, 0), (0, 0)]);
    }

    fn segment_with_options(opts: &[u8], payload: &[u8]) -> Vec<u8> {
        let hl = 20 + opts.len();
        assert!(hl % 4 == 0);
        let mut v = vec![0u8; hl];
        v[0..2].copy_from_slice(&1234u16.to_be_bytes());
        v[2..4].copy_from_slice(&80u16.to_be_bytes());
        v[12] = ((hl / 4) as u8) << 4 | 0x01; // NS bit set: must be ignored
        v[13] = ACK | PSH;
        v[20..].copy_from_slice(opts);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn timestamp_fast_and_slow_paths() {
        // Fast path.
        let s = segment_with_options(&[1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0], b"x");
        let seg = TcpSegment::parse(&s).unwrap();
        assert_eq!(seg.timestamp(), Some((256, 512)));
        assert_eq!(seg.flags(), ACK | PSH);
        // Other layout: fallback.
        let s = segment_with_options(&[2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 3, 0, 0, 0, 4], b"");
        assert_eq!(TcpSegment::parse(&s).unwrap().timestamp(), Some((3, 4)));
        // Absent.
        let s = segment_with_options(&[], b"abc");
        assert_eq!(TcpSegment::parse(&s).unwrap().timestamp(), None);
        let s = segment_with_options(&[1, 1, 4, 2], b"abc");
        assert_eq!(TcpSegment::parse(&s).unwrap().timestamp(), None);
        // Malformed.
        let s = segment_with_options(&[1, 1, 8, 10, 0, 0, 0, 3, 2, 0, 0, 0], b"");
        // Fast path matches regardless of what follows the timestamp.
        assert_eq!(
            TcpSegment::parse(&s).unwrap().timestamp(),
            Some((3, 0x0200_0000))
        );
        let s = segment_with_options(&[2, 0, 8, 10, 0, 0, 0, 3, 0, 0, 0, 4], b"");
        assert_eq!(TcpSegment::parse(&s).unwrap().timestamp(), None);
        let s = segment_with_options(&[1, 8, 10, 0, 0, 0, 3, 0, 0, 0, 4, 0], b"");
        assert_eq!(TcpSegment::parse(&s).unwrap().timestamp(), Some((3, 4)));
    }

    #[test]
    fn segment_accessors() {
        let r = TcpRepr {
            src_port: 40000,
            dst_port: 6379,
            seq: 0xdead_beef,
            ack: 0x0102_0304,
            flags: SYN | ACK | ECE | CWR,
            window: 0xabcd,
            options: TcpOptions {
                mss: Some(9000),
                ..Default::default()
            },
        };
        let mut buf = [0u8; 30];
        assert_eq!(r.emit(&mut buf), Ok(24));
        buf[24..].copy_from_slice(b"hello!");
        let s = TcpSegment::parse(&buf).unwrap();
        assert_eq!(s.src_port(), 40000);
        assert_eq!(s.dst_port(), 6379);
        assert_eq!(s.seq(), 0xdead_beef);
        assert_eq!(s.ack(), 0x0102_0304);
        assert_eq!(s.flags(), SYN | ACK | ECE | CWR);
        assert_eq!(s.window(), 0xabcd);
        assert_eq!(s.header_len(), 24);
        assert_eq!(s.options(), &[2, 4, 0x23, 0x28]);
        assert_eq!(s.payload(), b"hello!");
        assert_eq!(&buf[..4], &[0x9c, 0x40, 0x18, 0xeb]);
        assert_eq!(buf[12], 0x60);
    }

    #[test]
    fn parse_errors_and_truncations() {
        let s = segment_with_options(&[1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0], b"data");
        for n in 0..s.len() {
            match TcpSegment::parse(&s[..n]) {
                Ok(seg) => {
                    // Only header-complete prefixes parse; payload is the rest.
                    assert!(n >= 32);
                    assert_eq!(seg.payload(), &s[32..n]);
                    assert_eq!(seg.timestamp(), Some((256, 512)));
                }
                Err(e) => {
                    assert!(n < 32);
                    assert_eq!(e, WireError::Truncated);
                }
            }
        }
        let mut b = s.clone();
        b[12] = 0x40;
        assert_eq!(TcpSegment::parse(&b).unwrap_err(), WireError::BadHeaderLen);
        b[12] = 0x00;
        assert_eq!(TcpSegment::parse(&b).unwrap_err(), WireError::BadHeaderLen);
        b[12] = 0xf0; // 60 bytes > 36
        assert_eq!(TcpSegment::parse(&b).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn emit_too_small() {
        let r = TcpRepr {
            src_port: 1,
            dst_port: 2,
            seq: 3,
            ack: 4,
            flags: ACK,
            window: 5,
            options: TcpOptions {
                timestamp: Some((1, 2)),
                sack_count: 1,
                ..Default::default()
            },
        };
        let hl = r.header_len();
        assert_eq!(hl, 44);
        for n in 0..hl {
            let mut buf = vec![0u8; n];
            assert_eq!(r.emit(&mut buf), Err(WireError::BufferTooSmall));
            assert!(n >= 24 || r.options.emit(&mut buf).is_err());
        }
        let mut buf = vec![0u8; hl];
        assert_eq!(r.emit(&mut buf), Ok(hl));
    }

    #[test]
    fn checksum_verify() {
        let r = TcpRepr {
            src_port: 1234,
            dst_port: 80,
            seq: 1,
            ack: 0,
            flags: SYN,
            window: 65535,
            options: TcpOptions::default(),
        };
        let mut buf = [0u8; 23];
        r.emit(&mut buf).unwrap();
        buf[20..].copy_from_slice(b"abc");
        let (src, dst) = (0x0a00_0001, 0x0a00_0002);
        let c = checksum::tcp(src, dst, &buf);
        let mut ph = Vec::new();
        ph.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0, 23]);
        ph.extend_from_slice(&buf);
        assert_eq!(c, ref_checksum(&ph));
        assert!(!verify_checksum(src, dst, &buf));
        buf[16..18].copy_from_slice(&c.to_be_bytes());
        assert!(verify_checksum(src, dst, &buf));
        assert!(!verify_checksum(src, dst + 1, &buf));
        buf[22] ^= 0x80;
        assert!(!verify_checksum(src, dst, &buf));
    }

    #[test]
    fn random_never_panics() {
        let mut rng = Rng::new(6);
        let mut buf = [0u8; 80];
        let mut parsed = 0;
        for i in 0..300_000 {
            let n = rng.below(buf.len() + 1);
            rng.fill(&mut buf[..n]);
            if i % 2 == 0 && n >= 20 {
                // Plausible data offset and option bytes from a small alphabet.
                buf[12] = ((5 + rng.below(11)) as u8) << 4;
                for b in buf[20..n].iter_mut() {
                    *b = [0, 1, 2, 3, 4, 5, 8, 10, 12, 18, 99][rng.below(11)];
                }
            }
            if let Ok(s) = TcpSegment::parse(&buf[..n]) {
                parsed += 1;
                assert!(s.header_len() >= 20 && s.header_len() + s.payload().len() == n);
                let full = s.parse_options();
                let ts = s.timestamp();
                if let Ok(o) = full {
                    assert!(o.sack_count as usize <= MAX_SACK_BLOCKS);
                    if !s.options().starts_with(&[1, 1, 8, 10]) {
                        assert_eq!(ts, o.timestamp);
                    }
                    assert!(o.wscale.unwrap_or(0) <= MAX_WSCALE);
                }
                let _ = s.repr();
            }
            let _ = TcpOptions::parse(&buf[..n.min(40)]);
        }
        assert!(parsed > 10_000);
    }
}
