//! SYN cookies (RFC 4987 §3.6), the way Linux makes them with
//! `net.ipv4.tcp_syncookies=1`: used only while a listener's half-open table
//! is full, so a SYN flood never keeps a legitimate client out.
//!
//! The SYN-ACK's ISN is the cookie:
//!
//! ```text
//!  31                                     2 1 0
//! +----------------------------------------+---+
//! | SipHash-2-4(key; 4-tuple, IRS, period) |MSS|
//! +----------------------------------------+---+
//! ```
//!
//! `period` is the daemon's clock in 64 s steps; a cookie of the current or
//! the previous period is accepted (so it lives 64..128 s). The key is drawn
//! from the daemon's seed at start. `MSS` indexes [`MSS_TABLE`] (Linux's
//! four values). The hash covers the client's ISN too, so the final ACK
//! (SEG.SEQ - 1 = IRS, SEG.ACK - 1 = cookie) must match the SYN it answers.
//! A blind guess of a valid final ACK succeeds with probability 2·4/2^32
//! (2 periods × 4 MSS values), as with Linux's cookies.
//!
//! With timestamps (RFC 7323) the options a cookie cannot carry travel in
//! the low 6 bits of our SYN-ACK's TSval, which the client echoes in the
//! final ACK's TSecr (Linux's `cookie_init_timestamp`):
//!
//! ```text
//!   5     4     3..0
//! +-----+------+--------------------------------+
//! | ECN | SACK | peer's window shift, 0xF: none |
//! +-----+------+--------------------------------+
//! ```
//!
//! Without timestamps there is nowhere to keep them: the SYN-ACK offers no
//! window scaling, SACK or ECN.

use tas_engine::flow::FlowKey;
use tas_engine::seq;
use tas_engine::wire::tcp;

use crate::stack::{hash, SEC};

/// The MSS values a cookie can name (index in the cookie's low 2 bits).
pub(super) const MSS_TABLE: [u16; 4] = [536, 1300, 1440, 1460];
/// A cookie period (Linux: 64 s, `COUNTER_TRIES` 2).
pub(super) const PERIOD_NS: u64 = 64 * SEC;
/// How long after it sent its last cookie a listener checks final ACKs
/// against cookies: the lifetime of that cookie (Linux: the listener's
/// last SYN-queue overflow, within 2 minutes). An ACK without a connection
/// at any other time gets the usual RST without a hash computed.
pub(super) const VALID_NS: u64 = 2 * PERIOD_NS;

/// Bits of TSval that carry options.
const TS_BITS: u32 = 6;
const TS_MASK: u32 = (1 << TS_BITS) - 1;
const TS_WS_NONE: u32 = 0xF;
const TS_SACK: u32 = 0x10;
const TS_ECN: u32 = 0x20;
/// Oldest TSecr a cookie's final ACK may echo, in TS clock units (µs):
/// one cookie lifetime.
const TS_MAX_AGE: u32 = (VALID_NS / 1000) as u32;

/// The cookie period of time `now`.
pub(super) fn period(now: u64) -> u64 {
    now / PERIOD_NS
}

/// Index of the largest [`MSS_TABLE`] value not above `mss` (0 below 536:
/// every IPv4 host takes 536, RFC 9293 §3.7.1).
pub(super) fn mss_index(mss: u16) -> u32 {
    MSS_TABLE.iter().rposition(|&m| m <= mss).unwrap_or(0) as u32
}

fn mac(key: (u64, u64), t: &FlowKey, irs: u32, period: u64) -> u32 {
    let mut b = [0u8; 24];
    b[0..4].copy_from_slice(&t.local_ip.to_be_bytes());
    b[4..8].copy_from_slice(&t.remote_ip.to_be_bytes());
    b[8..10].copy_from_slice(&t.local_port.to_be_bytes());
    b[10..12].copy_from_slice(&t.remote_port.to_be_bytes());
    b[12..16].copy_from_slice(&irs.to_be_bytes());
    b[16..24].copy_from_slice(&period.to_be_bytes());
    hash::siphash24(key.0, key.1, &b) as u32
}

/// The cookie (our ISN) for a SYN from `t` with sequence number `irs`.
pub(super) fn make(key: (u64, u64), t: &FlowKey, irs: u32, now: u64, mss_idx: u32) -> u32 {
    (mac(key, t, irs, period(now)) & !3) | (mss_idx & 3)
}

/// The MSS index if `cookie` is one we made for `t` and `irs` in this or
/// the previous period.
pub(super) fn check(key: (u64, u64), t: &FlowKey, irs: u32, cookie: u32, now: u64) -> Option<u32> {
    let p = period(now);
    [p, p.wrapping_sub(1)]
        .into_iter()
        .any(|p| mac(key, t, irs, p) & !3 == cookie & !3)
        .then_some(cookie & 3)
}

/// Our SYN-ACK's TSval: the clock `now_ts` with its low 6 bits replaced by
/// the options, never ahead of the clock (so the TSvals of the connection
/// never go backwards).
pub(super) fn encode_ts(now_ts: u32, ws: Option<u8>, sack: bool, ecn: bool) -> u32 {
    let mut o = ws.map_or(TS_WS_NONE, |w| w.min(tcp::MAX_WSCALE) as u32);
    if sack {
        o |= TS_SACK;
    }
    if ecn {
        o |= TS_ECN;
    }
    let ts = (now_ts & !TS_MASK) | o;
    if seq::gt(ts, now_ts) {
        ts.wrapping_sub(1 << TS_BITS)
    } else {
        ts
    }
}

/// The options our TSval `tsecr` (echoed by the client) carries, or None
/// when it cannot be one of ours (from the future, or older than a cookie
/// lives).
pub(super) fn decode_ts(tsecr: u32, now_ts: u32) -> Option<(Option<u8>, bool, bool)> {
    if seq::gt(tsecr, now_ts) || now_ts.wrapping_sub(tsecr) > TS_MAX_AGE {
        return None;
    }
    // 0..=14 (MAX_WSCALE) or 0xF: every 4-bit value is a valid field.
    let ws = match tsecr & 0xF {
        TS_WS_NONE => None,
        w => Some(w as u8),
    };
    Some((ws, tsecr & TS_SACK != 0, tsecr & TS_ECN != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: (u64, u64) = (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
    const T: FlowKey = FlowKey {
        local_ip: 0xC612_0001,
        remote_ip: 0xC612_0002,
        local_port: 80,
        remote_port: 40000,
    };

    #[test]
    fn cookies_live_for_this_and_the_previous_period() {
        let t0 = 10 * PERIOD_NS + 5;
        for idx in 0..4 {
            let c = make(K, &T, 77, t0, idx);
            assert_eq!(c & 3, idx);
            assert_eq!(check(K, &T, 77, c, t0), Some(idx));
            assert_eq!(check(K, &T, 77, c, 11 * PERIOD_NS - 1), Some(idx));
            assert_eq!(check(K, &T, 77, c, 11 * PERIOD_NS), Some(idx));
            assert_eq!(check(K, &T, 77, c, 12 * PERIOD_NS - 1), Some(idx));
            assert_eq!(check(K, &T, 77, c, 12 * PERIOD_NS), None);
            // Not before it was made either.
            assert_eq!(check(K, &T, 77, c, 9 * PERIOD_NS), None);
        }
        // Near the clock's start the previous period wraps harmlessly.
        let c = make(K, &T, 1, 0, 2);
        assert_eq!(check(K, &T, 1, c, 0), Some(2));
    }

    #[test]
    fn cookies_bind_key_tuple_and_irs() {
        let c = make(K, &T, 77, 0, 3);
        assert_eq!(check((K.0 ^ 1, K.1), &T, 77, c, 0), None);
        assert_eq!(check(K, &T, 78, c, 0), None);
        let mut t = T;
        t.remote_port += 1;
        assert_eq!(check(K, &t, 77, c, 0), None);
        let mut t = T;
        t.remote_ip ^= 0x100;
        assert_eq!(check(K, &t, 77, c, 0), None);
        for bit in 2..32 {
            assert_eq!(check(K, &T, 77, c ^ (1 << bit), 0), None, "bit {bit}");
        }
        // Different SYNs get unrelated cookies.
        assert_ne!(make(K, &T, 78, 0, 3) & !3, c & !3);
    }

    #[test]
    fn mss_table_rounds_down() {
        assert_eq!(mss_index(64), 0);
        assert_eq!(mss_index(536), 0);
        assert_eq!(mss_index(1299), 0);
        assert_eq!(mss_index(1300), 1);
        assert_eq!(mss_index(1440), 2);
        assert_eq!(mss_index(1459), 2);
        assert_eq!(mss_index(1460), 3);
        assert_eq!(mss_index(u16::MAX), 3);
    }

    #[test]
    fn timestamp_carries_options_and_never_runs_ahead() {
        for now_ts in [0u32, 1, 63, 64, 1000, 0xFFFF_FFC0, u32::MAX] {
            for (ws, sack, ecn) in [
                (None, false, false),
                (Some(0), true, false),
                (Some(7), true, true),
                (Some(14), false, true),
            ] {
                let ts = encode_ts(now_ts, ws, sack, ecn);
                assert!(seq::le(ts, now_ts) && now_ts.wrapping_sub(ts) < 64);
                assert_eq!(decode_ts(ts, now_ts), Some((ws, sack, ecn)));
                let later = now_ts.wrapping_add(TS_MAX_AGE - 64);
                assert_eq!(decode_ts(ts, later), Some((ws, sack, ecn)));
            }
        }
        // A shift above 14 is clamped (RFC 7323 §2.3).
        assert_eq!(
            decode_ts(encode_ts(640, Some(20), false, false), 640),
            Some((Some(14), false, false))
        );
        // From the future, or older than a cookie lives: not ours.
        assert_eq!(decode_ts(1000 + 64, 1000), None);
        assert_eq!(decode_ts(0, TS_MAX_AGE + 64), None);
    }
}
