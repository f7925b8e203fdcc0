//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Partial sums are `u32` values congruent (mod 0xffff) to the sum of the
//! big-endian 16-bit words; [`fold`] turns one into the checksum to write.

/// Fold a `u64` ones-complement accumulator to 16 bits (never turns non-zero into 0).
#[inline(always)]
fn fold64(s: u64) -> u16 {
    // End-around carry: add the halves, then the carry out. When the first
    // add wraps, its result is at most 2^n - 2, so adding the carry cannot
    // wrap again; and it never yields 0 from a non-zero input.
    let (lo, c) = (s as u32).overflowing_add((s >> 32) as u32);
    let s = lo + c as u32;
    let (lo, c) = (s as u16).overflowing_add((s >> 16) as u16);
    lo + c as u16
}

/// Add `data` as big-endian 16-bit words (an odd trailing byte is padded with
/// zero) to `initial`. The result is folded to at most 16 bits and can be
/// chained as another call's `initial` (chunks other than the last must have
/// even length).
#[inline]
pub fn sum(data: &[u8], initial: u32) -> u32 {
    // Words are read native-endian and the folded result byte-swapped at the
    // end: the ones-complement sum is byte-order independent (RFC 1071 §2B).
    let folded = fold64(sum_ne(data));
    let be = if cfg!(target_endian = "little") {
        folded.swap_bytes()
    } else {
        folded
    };
    fold64(be as u64 + initial as u64) as u32
}

/// The ones-complement sum of `data` read as *native-endian* 16-bit words
/// (an odd trailing byte padded with zero), unfolded but below 2^33: several
/// such values and a few `u32`s can be added in a `u64` and folded once
/// with [`fold_ne`]. A native-endian sum is the byte swap of the big-endian
/// one (RFC 1071 §2B), so a sum that must be all ones can be checked without
/// swapping.
#[inline]
pub fn sum_ne(data: &[u8]) -> u64 {
    let (words, tail) = data.as_chunks::<8>();
    let acc = sum_words(words);
    // Tail pieces start at even offsets, so each byte keeps its parity;
    // together they are under 2^18 and cannot wrap a u64 twice.
    // (A multiple of 8 bytes, as headers with the timestamp option and
    // most payloads are, tests the tail once.)
    let mut rest: u64 = 0;
    if !tail.is_empty() {
        let mut tail = tail;
        if let Some((w, r)) = tail.split_first_chunk::<4>() {
            rest += u32::from_ne_bytes(*w) as u64;
            tail = r;
        }
        if let Some((w, r)) = tail.split_first_chunk::<2>() {
            rest += u16::from_ne_bytes(*w) as u64;
            tail = r;
        }
        if let Some(&b) = tail.first() {
            rest += u16::from_ne_bytes([b, 0]) as u64;
        }
    }
    let (s, o) = acc.overflowing_add(rest);
    let s = s + o as u64;
    (s & 0xffff_ffff) + (s >> 32)
}

/// The ones-complement sum of native-endian 64-bit words with end-around
/// carry (so congruent mod 0xffff to the sum of their 16-bit words: 2^64 ≡ 1
/// since 2^16 ≡ 1). On x86-64 one carry chain (`adc`), four words per
/// iteration: a single instruction per 8 bytes.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[inline(always)]
fn sum_words(words: &[[u8; 8]]) -> u64 {
    if words.len() < 4 {
        // A fixed-size header (IPv4: 2 words): plain adds the compiler can
        // unroll and schedule with the rest.
        return sum_words_portable(words);
    }
    let mut acc: u64 = 0;
    let p = words.as_ptr();
    let blocks = words.len() / 4;
    let rest = words.len() % 4;
    // SAFETY: reads `words.len()` 8-byte words from `p` = `words.as_ptr()`
    // (`blocks * 4` in the first loop, `rest` in the second), all within
    // `words`; writes only the named registers and the flags. `test`
    // clears CF before each chain; `dec`/`lea` leave CF alone; the two
    // `adc 0` after each chain add its last carry (the second one covers
    // the case where the first wraps to 0, which then cannot carry again).
    unsafe {
        std::arch::asm!(
            "test {nb}, {nb}",
            "jz 3f",
            "2:",
            "adc {acc}, qword ptr [{p}]",
            "adc {acc}, qword ptr [{p} + 8]",
            "adc {acc}, qword ptr [{p} + 16]",
            "adc {acc}, qword ptr [{p} + 24]",
            "lea {p}, [{p} + 32]",
            "dec {nb}",
            "jnz 2b",
            "adc {acc}, 0",
            "adc {acc}, 0",
            "3:",
            "test {nr}, {nr}",
            "jz 5f",
            "4:",
            "adc {acc}, qword ptr [{p}]",
            "lea {p}, [{p} + 8]",
            "dec {nr}",
            "jnz 4b",
            "adc {acc}, 0",
            "adc {acc}, 0",
            "5:",
            acc = inout(reg) acc,
            p = inout(reg) p => _,
            nb = inout(reg) blocks => _,
            nr = inout(reg) rest => _,
            options(pure, readonly, nostack),
        );
    }
    acc
}

/// Portable [`sum_words`]: 64-bit adds with the end-around carries counted
/// separately (the x86-64 one is tested against it).
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn sum_words(words: &[[u8; 8]]) -> u64 {
    sum_words_portable(words)
}

#[inline(always)]
fn sum_words_portable(words: &[[u8; 8]]) -> u64 {
    let mut acc: u64 = 0;
    let mut wraps: u64 = 0;
    for w in words {
        let (s, o) = acc.overflowing_add(u64::from_ne_bytes(*w));
        acc = s;
        wraps += o as u64;
    }
    let (s, o) = acc.overflowing_add(wraps);
    s + o as u64
}

/// Folds a native-endian partial sum (a `u64` congruent mod 0xffff to the
/// sum of native-endian 16-bit words) to 16 bits, never turning a non-zero
/// sum into 0. Byte-swap the result for the big-endian value.
#[inline(always)]
pub fn fold_ne(s: u64) -> u16 {
    fold64(s)
}

/// Whether a native-endian partial sum folds to all ones (`fold_ne(s) ==
/// 0xffff`: the data it covers, checksum field included, verifies). The
/// fold keeps the value mod 0xffff and turns only 0 into 0, so this is
/// `s ≡ 0 (mod 0xffff)` and `s ≠ 0`, which the compiler tests with one
/// multiplication by the inverse of 0xffff mod 2^64 and a compare instead
/// of folding (tested against the fold).
#[inline(always)]
pub fn verifies_ne(s: u64) -> bool {
    // 0xffff is odd, so it has an inverse mod 2^64; multiplying by it maps
    // the multiples of 0xffff (and only those) onto 0 ..= u64::MAX / 0xffff
    // (Granlund and Montgomery, "Division by invariant integers using
    // multiplication", §9). LLVM does not find this form for 0xffff itself.
    const INV: u64 = 0xfffe_fffe_fffe_ffff;
    const _: () = assert!(INV.wrapping_mul(0xffff) == 1);
    s != 0 && s.wrapping_mul(INV) <= u64::MAX / 0xffff
}

/// Fold carries of a partial sum and return its ones complement: the value
/// to write into a checksum field (or 0 when verifying a correct packet).
#[inline]
pub fn fold(sum: u32) -> u16 {
    let mut s = (sum & 0xffff) + (sum >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// Partial sum of the IPv4 pseudo header (`len` is the upper-layer length).
#[inline]
pub fn pseudo_header(src: u32, dst: u32, protocol: u8, len: u16) -> u32 {
    (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + protocol as u32 + len as u32
}

/// Checksum of an IPv4 header as it stands (zero the checksum field first
/// when computing; a received header is valid iff this returns 0).
#[inline]
pub fn ipv4_header(hdr: &[u8]) -> u16 {
    fold(sum(hdr, 0))
}

/// TCP checksum over the pseudo header and `segment` (zero its checksum
/// field first when computing; a received segment is valid iff this returns 0).
#[inline]
pub fn tcp(src: u32, dst: u32, segment: &[u8]) -> u16 {
    let ph = pseudo_header(src, dst, super::ipv4::PROTO_TCP, segment.len() as u16);
    fold(sum(segment, ph))
}

/// Incremental update of a checksum when a 16-bit field changes from `old`
/// to `new` (RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`).
#[inline]
pub fn update16(old_csum: u16, old: u16, new: u16) -> u16 {
    fold(!old_csum as u32 + !old as u32 + new as u32)
}

/// Incremental update of a checksum when a 32-bit field changes.
#[inline]
pub fn update32(old_csum: u16, old: u32, new: u32) -> u16 {
    let s =
        !old_csum as u32 + (!(old >> 16) & 0xffff) + (!old & 0xffff) + (new >> 16) + (new & 0xffff);
    fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::{ref_checksum, Rng};

    /// `verifies_ne` is the fold's verdict for every kind of value: 0,
    /// multiples of 0xffff (u64::MAX is one), their neighbours, values that
    /// make either of the fold's adds carry, and random ones.
    #[test]
    fn verifies_ne_agrees_with_the_fold() {
        let mut vals = vec![
            0u64,
            1,
            0xfffe,
            0xffff,
            0x1_0000,
            0x1_fffe,
            u64::MAX,
            u64::MAX - 1,
        ];
        let mut rng = Rng::new(0xf01d);
        for _ in 0..200_000 {
            let r = (rng.next_u32() as u64) << 32 | rng.next_u32() as u64;
            let k = r % (u64::MAX / 0xffff + 1);
            vals.extend([
                r,
                k * 0xffff,
                (k * 0xffff).wrapping_add(1),
                (k * 0xffff).wrapping_sub(1),
            ]);
            vals.push(r >> (rng.next_u32() % 64));
        }
        for s in [0xffff_ffffu64, 0xffff_ffff_0000_0001, 0x8000_0000_8000_0000] {
            vals.push(s);
        }
        let mut hits = 0;
        for s in vals {
            assert_eq!(verifies_ne(s), fold_ne(s) == 0xffff, "{s:#x}");
            hits += verifies_ne(s) as u32;
        }
        assert!(hits > 100_000, "{hits}");
    }

    fn ref_sum_words(data: &[u8]) -> u64 {
        let mut s = 0u64;
        for (i, b) in data.iter().enumerate() {
            s += if i % 2 == 0 {
                (*b as u64) << 8
            } else {
                *b as u64
            };
        }
        s
    }

    #[test]
    fn sum_small_known() {
        assert_eq!(sum(&[], 0), 0);
        assert_eq!(sum(&[0x12, 0x34], 0), 0x1234);
        assert_eq!(sum(&[0x12], 0), 0x1200);
        assert_eq!(sum(&[0x12, 0x34, 0x56], 7), 0x1234 + 0x5600 + 7);
        assert_eq!(fold(0), 0xffff);
        assert_eq!(fold(0xffff), 0);
        assert_eq!(fold(0x1_fffe), 0);
        assert_eq!(fold(0xffff_ffff), 0);
    }

    #[test]
    fn sum_matches_reference_all_lengths_and_offsets() {
        let mut rng = Rng::new(0x5eed);
        let mut buf = [0u8; 300];
        for round in 0..40 {
            rng.fill(&mut buf);
            if round == 0 {
                buf.fill(0xff);
            }
            for start in 0..9 {
                for end in start..buf.len() {
                    let d = &buf[start..end];
                    let init = if round % 2 == 0 { 0 } else { rng.next_u32() };
                    let got = sum(d, init);
                    assert!(got <= 0xffff);
                    let want = (ref_sum_words(d) + init as u64) % 0xffff;
                    assert_eq!(got as u64 % 0xffff, want, "len {}", d.len());
                    // Reference word sum (end-around carry) plus init, complemented.
                    let s = !ref_checksum(d) as u64 + init as u64;
                    assert_eq!(fold(got), !fold64(s));
                }
            }
        }
    }

    #[test]
    fn word_sum_agrees_with_the_portable_one() {
        let mut rng = Rng::new(0xadc);
        let mut buf = [0u8; 8 * 41];
        for round in 0..2000 {
            rng.fill(&mut buf);
            if round % 3 == 0 {
                // All ones and near it: every add carries.
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = if i % 29 == 0 { 0xfe } else { 0xff };
                }
            }
            let (words, _) = buf.as_chunks::<8>();
            for n in 0..=words.len() {
                let a = sum_words(&words[..n]);
                let b = sum_words_portable(&words[..n]);
                assert_eq!(a % 0xffff, b % 0xffff, "{n} words");
                assert_eq!(fold64(a), fold64(b), "{n} words");
            }
        }
        let max = [[0xffu8; 8]; 9];
        for n in 0..=max.len() {
            assert_eq!(
                fold64(sum_words(&max[..n])),
                fold64(sum_words_portable(&max[..n]))
            );
        }
    }

    #[test]
    fn ipv4_header_known_answer() {
        // Classic example header: checksum 0xb861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header(&h), 0xb861);
        assert_eq!(ref_checksum(&h), 0xb861);
        h[10] = 0xb8;
        h[11] = 0x61;
        assert_eq!(ipv4_header(&h), 0);
    }

    #[test]
    fn tcp_known_answer_against_reference() {
        let mut rng = Rng::new(77);
        for len in [20usize, 21, 32, 33, 57, 100, 1460, 1461] {
            let mut seg = vec![0u8; len];
            rng.fill(&mut seg);
            seg[16] = 0;
            seg[17] = 0;
            let src = 0x0a00_0001u32;
            let dst = 0xc0a8_0102u32;
            // Reference: explicit pseudo header bytes followed by the segment.
            let mut ph = Vec::new();
            ph.extend_from_slice(&src.to_be_bytes());
            ph.extend_from_slice(&dst.to_be_bytes());
            ph.push(0);
            ph.push(6);
            ph.extend_from_slice(&(len as u16).to_be_bytes());
            ph.extend_from_slice(&seg);
            let want = ref_checksum(&ph);
            assert_eq!(tcp(src, dst, &seg), want);
            seg[16..18].copy_from_slice(&want.to_be_bytes());
            assert_eq!(tcp(src, dst, &seg), 0);
            seg[len - 1] ^= 0x01;
            assert_ne!(tcp(src, dst, &seg), 0);
        }
    }

    #[test]
    fn tcp_fixed_known_answer() {
        // SYN 10.0.0.1:1234 -> 10.0.0.2:80, seq 1, window 65535, no options.
        // Hand sum: pseudo 0a00+0001+0a00+0002+0006+0014 = 0x141d;
        // header 04d2+0050+0001+5002+ffff = 0x15524 -> 0x5525;
        // total 0x6942 -> checksum 0x96bd.
        let seg = [
            0x04, 0xd2, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02,
            0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(tcp(0x0a00_0001, 0x0a00_0002, &seg), 0x96bd);
    }

    #[test]
    fn incremental_update_matches_recompute() {
        let mut rng = Rng::new(0xdead_beef);
        let mut buf = [0u8; 40];
        for _ in 0..200_000 {
            rng.fill(&mut buf);
            let off16 = 2 * rng.below(20);
            buf[0] |= 1; // data never all zero
            let csum = fold(sum(&buf, 0));
            // 16-bit field
            let old = u16::from_be_bytes([buf[off16], buf[off16 + 1]]);
            let new = rng.next_u16();
            let mut b2 = buf;
            b2[off16..off16 + 2].copy_from_slice(&new.to_be_bytes());
            b2[0] |= 1;
            let new = u16::from_be_bytes([b2[off16], b2[off16 + 1]]);
            assert_eq!(update16(csum, old, new), fold(sum(&b2, 0)));
            // 32-bit field
            let off32 = 2 * rng.below(19);
            let old = u32::from_be_bytes(buf[off32..off32 + 4].try_into().unwrap());
            let mut b3 = buf;
            b3[off32..off32 + 4].copy_from_slice(&rng.next_u32().to_be_bytes());
            b3[0] |= 1;
            let new = u32::from_be_bytes(b3[off32..off32 + 4].try_into().unwrap());
            assert_eq!(update32(csum, old, new), fold(sum(&b3, 0)));
        }
    }

    #[test]
    fn pseudo_header_value() {
        assert_eq!(
            pseudo_header(0xc0a8_0001, 0xc0a8_00c7, 6, 20),
            0xc0a8 + 0x0001 + 0xc0a8 + 0x00c7 + 6 + 20
        );
        // Max inputs do not overflow.
        let _ = fold(pseudo_header(u32::MAX, u32::MAX, 255, u16::MAX));
    }
}
