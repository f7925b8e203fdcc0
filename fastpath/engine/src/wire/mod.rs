//! Wire formats: Ethernet, ARP, IPv4 and TCP.
//!
//! Parsing yields zero-copy views over `&[u8]` that are validated once, so
//! their accessors cannot fail. Emitting writes into a caller's `&mut [u8]`.
//! Nothing here allocates, and no input (truncated, malformed or hostile)
//! can make it panic or read out of bounds: bad input is a [`WireError`].
//!
//! Numbers are host order in the API (IPv4 addresses are `u32`, as in
//! `u32::from(Ipv4Addr)`) and big-endian on the wire.

pub mod arp;
pub mod checksum;
pub mod eth;
pub mod frame;
pub mod ipv4;
pub mod tcp;

/// Why a frame could not be parsed or emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated")]
    Truncated,
    #[error("bad IP version")]
    BadVersion,
    #[error("bad header length")]
    BadHeaderLen,
    #[error("bad total length")]
    BadTotalLen,
    #[error("bad checksum")]
    BadChecksum,
    #[error("malformed TCP option")]
    BadOption,
    #[error("unsupported")]
    Unsupported,
    #[error("buffer too small")]
    BufferTooSmall,
}

/// Big-endian `u16` at `off` of a fixed-size header (bounds known at compile time).
#[inline(always)]
fn be16<const N: usize>(h: &[u8; N], off: usize) -> u16 {
    u16::from_be_bytes([h[off], h[off + 1]])
}

/// Big-endian `u32` at `off` of a fixed-size header.
#[inline(always)]
fn be32<const N: usize>(h: &[u8; N], off: usize) -> u32 {
    u32::from_be_bytes([h[off], h[off + 1], h[off + 2], h[off + 3]])
}

/// Six bytes at `off` of a fixed-size header.
#[inline(always)]
fn mac_at<const N: usize>(h: &[u8; N], off: usize) -> [u8; 6] {
    [
        h[off],
        h[off + 1],
        h[off + 2],
        h[off + 3],
        h[off + 4],
        h[off + 5],
    ]
}

/// The first `N` bytes of `buf` as a fixed-size mutable array, or `BufferTooSmall`.
#[inline(always)]
fn head_mut<const N: usize>(buf: &mut [u8]) -> Result<&mut [u8; N], WireError> {
    buf.first_chunk_mut::<N>().ok_or(WireError::BufferTooSmall)
}

#[cfg(test)]
pub(crate) mod testutil {
    pub use tas_testkit::Rng;

    /// Slow reference Internet checksum: 16-bit big-endian words, end-around carry.
    pub fn ref_checksum(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        let mut i = 0;
        while i < data.len() {
            let hi = data[i] as u32;
            let lo = if i + 1 < data.len() {
                data[i + 1] as u32
            } else {
                0
            };
            s += (hi << 8) | lo;
            while s > 0xffff {
                s = (s & 0xffff) + (s >> 16);
            }
            i += 2;
        }
        !(s as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display() {
        assert_eq!(WireError::Truncated.to_string(), "truncated");
        assert_eq!(WireError::BadOption.to_string(), "malformed TCP option");
        assert_eq!(WireError::BufferTooSmall.to_string(), "buffer too small");
    }

    #[test]
    fn helpers() {
        let h = [1u8, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(be16(&h, 0), 0x0102);
        assert_eq!(be32(&h, 4), 0x0506_0708);
        let m = [0u8, 1, 2, 3, 4, 5, 6, 7];
        assert_eq!(mac_at(&m, 1), [1, 2, 3, 4, 5, 6]);
        let mut small = [0u8; 3];
        assert_eq!(head_mut::<4>(&mut small), Err(WireError::BufferTooSmall));
        assert!(head_mut::<3>(&mut small).is_ok());
    }
}
