//! The flows' RX and TX rings: positions modulo the ring length, and copies
//! in and out of app payload memory that wrap at the ring's end.

use tas_abi::PayloadMem;

#[inline]
pub(super) fn ring_add(pos: u32, n: u32, len: u32) -> u32 {
    // pos < len and n <= len, so no overflow for len < 2^31.
    let p = pos + n;
    if p >= len {
        p - len
    } else {
        p
    }
}

#[inline]
pub(super) fn ring_sub(pos: u32, n: u32, len: u32) -> u32 {
    if n > pos {
        pos + len - n
    } else {
        pos - n
    }
}

/// Copies `data` into a ring at `pos`, wrapping at `len`.
#[inline]
pub(super) fn ring_write<M: PayloadMem>(
    mem: &mut M,
    region: u16,
    base: u32,
    len: u32,
    pos: u32,
    data: &[u8],
) -> bool {
    let first = ((len - pos) as usize).min(data.len());
    let ok = mem.write(region, base.wrapping_add(pos), &data[..first]);
    if first == data.len() {
        return ok;
    }
    ok && mem.write(region, base, &data[first..])
}

/// Copies `out.len()` bytes from a ring at `pos`, wrapping at `len`.
#[inline]
pub(super) fn ring_read<M: PayloadMem>(
    mem: &M,
    region: u16,
    base: u32,
    len: u32,
    pos: u32,
    out: &mut [u8],
) -> bool {
    let first = ((len - pos) as usize).min(out.len());
    let (a, b) = out.split_at_mut(first);
    let ok = mem.read(region, base.wrapping_add(pos), a);
    if b.is_empty() {
        return ok;
    }
    ok && mem.read(region, base, b)
}
