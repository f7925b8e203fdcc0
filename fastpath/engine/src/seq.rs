//! TCP sequence-number arithmetic modulo 2^32 (RFC 793 §3.3, RFC 1982).
//!
//! Also used for timestamp comparison, which wraps the same way.

/// `a < b` in sequence space.
#[inline]
pub fn lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a <= b` in sequence space.
#[inline]
pub fn le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

/// `a > b` in sequence space.
#[inline]
pub fn gt(a: u32, b: u32) -> bool {
    lt(b, a)
}

/// `a >= b` in sequence space.
#[inline]
pub fn ge(a: u32, b: u32) -> bool {
    le(b, a)
}

/// Distance from `from` to `to` (meaningful when `from <= to`).
#[inline]
pub fn dist(from: u32, to: u32) -> u32 {
    to.wrapping_sub(from)
}

/// `lo <= x < hi` in sequence space (`lo <= hi` assumed).
#[inline]
pub fn in_range(x: u32, lo: u32, hi: u32) -> bool {
    x.wrapping_sub(lo) < hi.wrapping_sub(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_across_wrap() {
        assert!(lt(u32::MAX, 0));
        assert!(lt(u32::MAX - 10, 5));
        assert!(gt(5, u32::MAX - 10));
        assert!(le(7, 7) && ge(7, 7));
        assert!(!lt(7, 7));
        assert_eq!(dist(u32::MAX - 1, 3), 5);
        assert!(in_range(1, u32::MAX - 2, 4));
        assert!(!in_range(4, u32::MAX - 2, 4));
        assert!(in_range(u32::MAX - 2, u32::MAX - 2, 4));
    }
}
