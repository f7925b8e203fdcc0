//! IPv4 packets (RFC 791).

use super::{be16, be32, checksum, head_mut, WireError};

pub const HDR_LEN: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

pub const ECN_NOT_ECT: u8 = 0;
pub const ECN_ECT1: u8 = 1;
pub const ECN_ECT0: u8 = 2;
pub const ECN_CE: u8 = 3;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// Zero-copy view of a validated IPv4 packet.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<'a> {
    pub(super) fixed: &'a [u8; HDR_LEN],
    pub(super) header: &'a [u8],
    pub(super) payload: &'a [u8],
}

impl<'a> Ipv4Packet<'a> {
    /// Parse and validate a packet: version 4 (`BadVersion`), IHL >= 5
    /// (`BadHeaderLen`), header within `buf` (`Truncated`), total length at
    /// least the header (`BadTotalLen`) and within `buf` (`Truncated`; `buf`
    /// may be longer, e.g. Ethernet padding), header checksum (`BadChecksum`).
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let fixed = buf.first_chunk::<HDR_LEN>().ok_or(WireError::Truncated)?;
        if fixed[0] >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let hlen = ((fixed[0] & 0x0f) as usize) * 4;
        if hlen < HDR_LEN {
            return Err(WireError::BadHeaderLen);
        }
        let total = be16(fixed, 2) as usize;
        let packet = buf.get(..total).ok_or(WireError::Truncated)?;
        if total < hlen {
            // Distinguish a header that does not fit at all from a bad length field.
            return Err(if buf.len() < hlen {
                WireError::Truncated
            } else {
                WireError::BadTotalLen
            });
        }
        let (header, payload) = packet.split_at_checked(hlen).ok_or(WireError::Truncated)?;
        if checksum::fold(checksum::sum(header, 0)) != 0 {
            return Err(WireError::BadChecksum);
        }
        Ok(Ipv4Packet {
            fixed,
            header,
            payload,
        })
    }

    #[inline]
    pub fn src(&self) -> u32 {
        be32(self.fixed, 12)
    }

    #[inline]
    pub fn dst(&self) -> u32 {
        be32(self.fixed, 16)
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.fixed[9]
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.fixed[8]
    }

    /// The two ECN bits of the TOS byte.
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.fixed[1] & 0x03
    }

    /// The six DSCP bits of the TOS byte.
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.fixed[1] >> 2
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.fixed, 4)
    }

    #[inline]
    pub fn dont_fragment(&self) -> bool {
        be16(self.fixed, 6) & FLAG_DF != 0
    }

    /// MF set or fragment offset non-zero.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be16(self.fixed, 6) & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    #[inline]
    pub fn header_len(&self) -> usize {
        self.header.len()
    }

    #[inline]
    pub fn total_len(&self) -> usize {
        self.header.len() + self.payload.len()
    }

    /// The whole header, options included.
    #[inline]
    pub fn header(&self) -> &'a [u8] {
        self.header
    }

    /// Bytes from the end of the header to the total length (padding excluded).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

/// An option-less IPv4 header to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: u32,
    pub dst: u32,
    pub protocol: u8,
    pub ttl: u8,
    pub ecn: u8,
    pub ident: u16,
    pub dont_fragment: bool,
    pub payload_len: u16,
}

impl Ipv4Repr {
    /// Write the 20-byte header (DSCP 0, checksum filled); returns 20.
    /// `BadTotalLen` if `payload_len` + 20 exceeds 65535.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let h = head_mut::<HDR_LEN>(buf)?;
        let total = self
            .payload_len
            .checked_add(HDR_LEN as u16)
            .ok_or(WireError::BadTotalLen)?;
        h[0] = 0x45;
        h[1] = self.ecn & 0x03;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[4..6].copy_from_slice(&self.ident.to_be_bytes());
        let flags = if self.dont_fragment { FLAG_DF } else { 0 };
        h[6..8].copy_from_slice(&flags.to_be_bytes());
        h[8] = self.ttl;
        h[9] = self.protocol;
        h[10] = 0;
        h[11] = 0;
        h[12..16].copy_from_slice(&self.src.to_be_bytes());
        h[16..20].copy_from_slice(&self.dst.to_be_bytes());
        let c = checksum::ipv4_header(h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        Ok(HDR_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::{ref_checksum, Rng};

    fn sample() -> Ipv4Repr {
        Ipv4Repr {
            src: 0xc612_0001,
            dst: 0xc612_0002,
            protocol: PROTO_TCP,
            ttl: 64,
            ecn: ECN_ECT0,
            ident: 0xbeef,
            dont_fragment: true,
            payload_len: 8,
        }
    }

    #[test]
    fn round_trip() {
        let mut rng = Rng::new(3);
        for i in 0..1000 {
            let r = Ipv4Repr {
                src: rng.next_u32(),
                dst: rng.next_u32(),
                protocol: rng.next_u32() as u8,
                ttl: rng.next_u32() as u8,
                ecn: (i % 4) as u8,
                ident: rng.next_u16(),
                dont_fragment: i % 2 == 0,
                payload_len: rng.below(60) as u16,
            };
            let pad = rng.below(10);
            let mut buf = vec![0u8; HDR_LEN + r.payload_len as usize + pad];
            assert_eq!(r.emit(&mut buf), Ok(HDR_LEN));
            assert_eq!(ref_checksum(&buf[..HDR_LEN]), 0);
            let p = Ipv4Packet::parse(&buf).unwrap();
            assert_eq!(p.src(), r.src);
            assert_eq!(p.dst(), r.dst);
            assert_eq!(p.protocol(), r.protocol);
            assert_eq!(p.ttl(), r.ttl);
            assert_eq!(p.ecn(), r.ecn);
            assert_eq!(p.dscp(), 0);
            assert_eq!(p.ident(), r.ident);
            assert_eq!(p.dont_fragment(), r.dont_fragment);
            assert!(!p.is_fragment());
            assert_eq!(p.header_len(), HDR_LEN);
            assert_eq!(p.header().len(), HDR_LEN);
            assert_eq!(p.total_len(), HDR_LEN + r.payload_len as usize);
            assert_eq!(p.payload().len(), r.payload_len as usize);
        }
    }

    #[test]
    fn known_bytes() {
        let mut buf = [0u8; 28];
        sample().emit(&mut buf).unwrap();
        assert_eq!(
            &buf[..10],
            &[0x45, 0x02, 0x00, 0x1c, 0xbe, 0xef, 0x40, 0x00, 64, 6]
        );
        assert_eq!(&buf[12..20], &[198, 18, 0, 1, 198, 18, 0, 2]);
        let mut z = buf;
        z[10] = 0;
        z[11] = 0;
        assert_eq!(
            u16::from_be_bytes([buf[10], buf[11]]),
            ref_checksum(&z[..20])
        );
    }

    #[test]
    fn options_and_padding() {
        // IHL 6 (4 bytes of options: NOP NOP NOP EOL), 3 bytes payload, 5 padding.
        let mut buf = [0u8; 32];
        buf[0] = 0x46;
        buf[1] = (5 << 2) | ECN_CE;
        buf[2..4].copy_from_slice(&27u16.to_be_bytes());
        buf[6..8].copy_from_slice(&0x2000u16.to_be_bytes()); // MF
        buf[8] = 1;
        buf[9] = PROTO_UDP;
        buf[20..24].copy_from_slice(&[1, 1, 1, 0]);
        buf[24..27].copy_from_slice(&[7, 8, 9]);
        buf[27..].fill(0xaa);
        let c = checksum::ipv4_header(&buf[..24]);
        buf[10..12].copy_from_slice(&c.to_be_bytes());
        let p = Ipv4Packet::parse(&buf).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.header(), &buf[..24]);
        assert_eq!(p.payload(), &[7, 8, 9]);
        assert_eq!(p.total_len(), 27);
        assert_eq!(p.dscp(), 5);
        assert_eq!(p.ecn(), ECN_CE);
        assert!(p.is_fragment());
        assert!(!p.dont_fragment());
        // Fragment offset alone also counts.
        let mut b = buf;
        b[6..8].copy_from_slice(&0x0001u16.to_be_bytes());
        b[10] = 0;
        b[11] = 0;
        let c = checksum::ipv4_header(&b[..24]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(Ipv4Packet::parse(&b).unwrap().is_fragment());
    }

    fn with_csum(mut b: [u8; 28]) -> [u8; 28] {
        b[10] = 0;
        b[11] = 0;
        let hl = ((b[0] & 0xf) as usize * 4).clamp(20, 28);
        let c = checksum::ipv4_header(&b[..hl]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn validation_errors() {
        let mut buf = [0u8; 28];
        sample().emit(&mut buf).unwrap();
        assert!(Ipv4Packet::parse(&buf).is_ok());

        let mut b = buf;
        b[0] = 0x65;
        assert_eq!(
            Ipv4Packet::parse(&with_csum(b)).unwrap_err(),
            WireError::BadVersion
        );
        let mut b = buf;
        b[0] = 0x44;
        assert_eq!(
            Ipv4Packet::parse(&with_csum(b)).unwrap_err(),
            WireError::BadHeaderLen
        );
        // IHL 15 = 60 bytes: header does not fit.
        let mut b = buf;
        b[0] = 0x4f;
        assert_eq!(
            Ipv4Packet::parse(&with_csum(b)).unwrap_err(),
            WireError::Truncated
        );
        // Total length smaller than header.
        let mut b = buf;
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::parse(&with_csum(b)).unwrap_err(),
            WireError::BadTotalLen
        );
        // IHL 6 with total length 20 < 24.
        let mut b = buf;
        b[0] = 0x46;
        b[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::parse(&with_csum(b)).unwrap_err(),
            WireError::BadTotalLen
        );
        // Total length beyond the buffer.
        let mut b = buf;
        b[2..4].copy_from_slice(&29u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::parse(&with_csum(b)).unwrap_err(),
            WireError::Truncated
        );
        // Corrupt checksum.
        let mut b = buf;
        b[8] ^= 1;
        assert_eq!(Ipv4Packet::parse(&b).unwrap_err(), WireError::BadChecksum);
    }

    #[test]
    fn every_truncation() {
        let mut buf = [0u8; 28];
        sample().emit(&mut buf).unwrap();
        for n in 0..buf.len() {
            assert_eq!(
                Ipv4Packet::parse(&buf[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
    }

    #[test]
    fn emit_errors() {
        for n in 0..HDR_LEN {
            let mut buf = vec![0u8; n];
            assert_eq!(sample().emit(&mut buf), Err(WireError::BufferTooSmall));
        }
        let mut buf = [0u8; 20];
        let r = Ipv4Repr {
            payload_len: 65515,
            ..sample()
        };
        assert_eq!(r.emit(&mut buf), Ok(20));
        assert_eq!(&buf[2..4], &[0xff, 0xff]);
        let r = Ipv4Repr {
            payload_len: 65516,
            ..sample()
        };
        assert_eq!(r.emit(&mut buf), Err(WireError::BadTotalLen));
    }

    #[test]
    fn random_never_panics() {
        let mut rng = Rng::new(4);
        let mut buf = [0u8; 80];
        let mut ok = 0;
        for i in 0..300_000 {
            let n = rng.below(buf.len() + 1);
            rng.fill(&mut buf[..n]);
            // Make many inputs pass the early checks so deeper paths run.
            if i % 2 == 0 && n >= 20 {
                buf[0] = 0x40 | (5 + rng.below(11) as u8);
                let total = rng.below(n + 8) as u16;
                buf[2..4].copy_from_slice(&total.to_be_bytes());
                if i % 4 == 0 {
                    let hl = ((buf[0] & 0xf) as usize * 4).min(n);
                    buf[10] = 0;
                    buf[11] = 0;
                    let c = checksum::ipv4_header(&buf[..hl]);
                    buf[10..12].copy_from_slice(&c.to_be_bytes());
                }
            }
            if let Ok(p) = Ipv4Packet::parse(&buf[..n]) {
                ok += 1;
                assert!(p.header_len() >= 20 && p.total_len() <= n);
                assert_eq!(p.header().len() + p.payload().len(), p.total_len());
                let _ = (p.src(), p.dst(), p.protocol(), p.ttl(), p.ecn(), p.dscp());
                let _ = (p.ident(), p.dont_fragment(), p.is_fragment());
            }
        }
        assert!(ok > 1000, "only {ok} valid packets");
    }
}
