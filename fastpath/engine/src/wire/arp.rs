//! ARP for Ethernet + IPv4 (RFC 826). Other hardware/protocol types are `Unsupported`.

use super::{be16, be32, head_mut, mac_at, WireError};

pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;
/// Length of an Ethernet/IPv4 ARP packet.
pub const LEN: usize = 28;

const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;

/// Zero-copy view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy)]
pub struct ArpPacket<'a> {
    p: &'a [u8; LEN],
}

impl<'a> ArpPacket<'a> {
    /// Parse an ARP packet (`buf` may be longer, e.g. Ethernet padding).
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let p = buf.first_chunk::<LEN>().ok_or(WireError::Truncated)?;
        if be16(p, 0) != HTYPE_ETHERNET || be16(p, 2) != PTYPE_IPV4 || p[4] != 6 || p[5] != 4 {
            return Err(WireError::Unsupported);
        }
        Ok(ArpPacket { p })
    }

    #[inline]
    pub fn op(&self) -> u16 {
        be16(self.p, 6)
    }

    #[inline]
    pub fn sender_mac(&self) -> [u8; 6] {
        mac_at(self.p, 8)
    }

    #[inline]
    pub fn sender_ip(&self) -> u32 {
        be32(self.p, 14)
    }

    #[inline]
    pub fn target_mac(&self) -> [u8; 6] {
        mac_at(self.p, 18)
    }

    #[inline]
    pub fn target_ip(&self) -> u32 {
        be32(self.p, 24)
    }

    /// The packet's fields as an [`ArpRepr`].
    #[inline]
    pub fn repr(&self) -> ArpRepr {
        ArpRepr {
            op: self.op(),
            sender_mac: self.sender_mac(),
            sender_ip: self.sender_ip(),
            target_mac: self.target_mac(),
            target_ip: self.target_ip(),
        }
    }
}

/// An Ethernet/IPv4 ARP packet to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: u32,
    pub target_mac: [u8; 6],
    pub target_ip: u32,
}

impl ArpRepr {
    /// Write the 28-byte packet into `buf`; returns 28.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let p = head_mut::<LEN>(buf)?;
        p[0..2].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        p[2..4].copy_from_slice(&PTYPE_IPV4.to_be_bytes());
        p[4] = 6;
        p[5] = 4;
        p[6..8].copy_from_slice(&self.op.to_be_bytes());
        p[8..14].copy_from_slice(&self.sender_mac);
        p[14..18].copy_from_slice(&self.sender_ip.to_be_bytes());
        p[18..24].copy_from_slice(&self.target_mac);
        p[24..28].copy_from_slice(&self.target_ip.to_be_bytes());
        Ok(LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::Rng;

    fn sample() -> ArpRepr {
        ArpRepr {
            op: OP_REQUEST,
            sender_mac: [0x02, 0, 0, 0, 0, 1],
            sender_ip: u32::from(std::net::Ipv4Addr::new(198, 18, 0, 1)),
            target_mac: [0; 6],
            target_ip: u32::from(std::net::Ipv4Addr::new(198, 18, 0, 2)),
        }
    }

    #[test]
    fn round_trip() {
        for op in [OP_REQUEST, OP_REPLY] {
            let r = ArpRepr { op, ..sample() };
            let mut buf = [0u8; 46]; // padded like a minimum Ethernet payload
            assert_eq!(r.emit(&mut buf), Ok(LEN));
            let p = ArpPacket::parse(&buf).unwrap();
            assert_eq!(p.repr(), r);
            assert_eq!(p.op(), op);
            assert_eq!(p.sender_ip(), 0xc612_0001);
            assert_eq!(p.target_ip(), 0xc612_0002);
            assert_eq!(p.sender_mac(), r.sender_mac);
            assert_eq!(p.target_mac(), r.target_mac);
        }
    }

    #[test]
    fn known_bytes() {
        let mut buf = [0u8; LEN];
        sample().emit(&mut buf).unwrap();
        assert_eq!(&buf[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&buf[14..18], &[198, 18, 0, 1]);
        assert_eq!(&buf[24..28], &[198, 18, 0, 2]);
    }

    #[test]
    fn truncations_and_unsupported() {
        let mut buf = [0u8; LEN];
        sample().emit(&mut buf).unwrap();
        for n in 0..LEN {
            assert_eq!(
                ArpPacket::parse(&buf[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        for (i, v) in [(1usize, 6u8), (2, 0x86), (4, 8), (5, 16)] {
            let mut b = buf;
            b[i] = v;
            assert_eq!(ArpPacket::parse(&b).unwrap_err(), WireError::Unsupported);
        }
    }

    #[test]
    fn emit_too_small() {
        for n in 0..LEN {
            let mut buf = vec![0u8; n];
            assert_eq!(sample().emit(&mut buf), Err(WireError::BufferTooSmall));
        }
    }

    #[test]
    fn random_never_panics() {
        let mut rng = Rng::new(2);
        let mut buf = [0u8; 40];
        for _ in 0..300_000 {
            let n = rng.below(buf.len() + 1);
            rng.fill(&mut buf[..n]);
            if rng.below(2) == 0 && n >= 6 {
                buf[..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
            }
            if let Ok(p) = ArpPacket::parse(&buf[..n]) {
                let _ = p.repr();
            }
        }
    }
}
