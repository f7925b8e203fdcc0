//! Ethernet II frames (no VLAN tags).

use super::{be16, head_mut, mac_at, WireError};
use std::fmt;

pub const HDR_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// Zero-copy view of an Ethernet frame.
#[derive(Debug, Clone, Copy)]
pub struct EthFrame<'a> {
    pub(super) hdr: &'a [u8; HDR_LEN],
    pub(super) payload: &'a [u8],
}

impl<'a> EthFrame<'a> {
    /// Parse a frame; it must hold at least the 14-byte header.
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let (hdr, payload) = buf
            .split_first_chunk::<HDR_LEN>()
            .ok_or(WireError::Truncated)?;
        Ok(EthFrame { hdr, payload })
    }

    #[inline]
    pub fn dst(&self) -> [u8; 6] {
        mac_at(self.hdr, 0)
    }

    #[inline]
    pub fn src(&self) -> [u8; 6] {
        mac_at(self.hdr, 6)
    }

    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.hdr, 12)
    }

    /// Everything after the header (may include trailing padding).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

/// Write an Ethernet header into `buf`; returns 14.
#[inline]
pub fn emit(
    buf: &mut [u8],
    dst: [u8; 6],
    src: [u8; 6],
    ethertype: u16,
) -> Result<usize, WireError> {
    let h = head_mut::<HDR_LEN>(buf)?;
    h[0..6].copy_from_slice(&dst);
    h[6..12].copy_from_slice(&src);
    h[12..14].copy_from_slice(&ethertype.to_be_bytes());
    Ok(HDR_LEN)
}

struct MacDisplay([u8; 6]);

impl fmt::Display for MacDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Display a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: [u8; 6]) -> impl fmt::Display {
    MacDisplay(mac)
}

/// Parse `aa:bb:cc:dd:ee:ff` (or `-` separated; 1 or 2 hex digits per byte).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let sep = if s.contains('-') { '-' } else { ':' };
    let mut out = [0u8; 6];
    let mut parts = s.split(sep);
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::Rng;

    const A: [u8; 6] = [0x02, 0x00, 0x00, 0xaa, 0xbb, 0xcc];
    const B: [u8; 6] = [0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f];

    #[test]
    fn round_trip() {
        let mut buf = [0u8; 20];
        assert_eq!(emit(&mut buf, A, B, ETHERTYPE_ARP), Ok(14));
        buf[14..].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        let f = EthFrame::parse(&buf).unwrap();
        assert_eq!(f.dst(), A);
        assert_eq!(f.src(), B);
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        assert_eq!(f.payload(), &[1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn exact_header_and_truncations() {
        let mut buf = [0u8; 14];
        emit(&mut buf, BROADCAST, A, ETHERTYPE_IPV4).unwrap();
        let f = EthFrame::parse(&buf).unwrap();
        assert!(f.payload().is_empty());
        assert_eq!(f.dst(), BROADCAST);
        for n in 0..14 {
            assert_eq!(
                EthFrame::parse(&buf[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
    }

    #[test]
    fn emit_too_small() {
        for n in 0..14 {
            let mut buf = vec![0u8; n];
            assert_eq!(emit(&mut buf, A, B, 0x0800), Err(WireError::BufferTooSmall));
        }
    }

    #[test]
    fn mac_text() {
        assert_eq!(fmt_mac(B).to_string(), "0a:1b:2c:3d:4e:5f");
        assert_eq!(parse_mac("0a:1b:2c:3d:4e:5f"), Some(B));
        assert_eq!(parse_mac("0A-1B-2C-3D-4E-5F"), Some(B));
        assert_eq!(
            parse_mac("a:1b:2c:3d:4e:5f"),
            Some([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f])
        );
        assert_eq!(parse_mac(&fmt_mac(A).to_string()), Some(A));
        for bad in [
            "",
            "0a:1b:2c:3d:4e",
            "0a:1b:2c:3d:4e:5f:00",
            "0a:1b:2c:3d:4e:5g",
            "0a:1b:2c:3d:4e:",
            "0a:1b:2c:3d:4e:+f",
            "0a:1b:2c:3d:4e:100",
            "0a:1b-2c:3d:4e:5f",
            "::::::",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn random_never_panics() {
        let mut rng = Rng::new(1);
        let mut buf = [0u8; 40];
        for _ in 0..300_000 {
            let n = rng.below(buf.len() + 1);
            rng.fill(&mut buf[..n]);
            if let Ok(f) = EthFrame::parse(&buf[..n]) {
                assert_eq!(f.payload().len(), n - 14);
                let _ = (f.dst(), f.src(), f.ethertype());
            }
        }
    }
}
