//! ICMP errors about our TCP connections (RFC 9293 §3.9.2.4 and §3.10.7,
//! RFC 1122 §4.2.3.9, RFC 1191 path MTU discovery, RFC 5927 mitigations),
//! as Linux's `tcp_v4_err`:
//!
//! * The quoted IPv4 header and first 8 bytes of TCP name the connection
//!   (source = our side). An error for no connection of ours is ignored.
//! * The quoted sequence number must be in flight (SND.UNA <= SEG.SEQ <
//!   SND.NXT, RFC 5927 §4.1.1; the ISS for an open): otherwise the error is
//!   counted (`icmp_out_of_window`, Linux's `OutOfWindowIcmps`) and ignored,
//!   so a blind attacker must guess the sequence space as for an RST.
//! * Fragmentation needed (type 3 code 4) lowers the flow's MSS to the
//!   reported next-hop MTU less 40 (IPv4 + TCP headers), never below the
//!   floor of a 552-byte path MTU (Linux's `net.ipv4.route.min_pmtu`;
//!   RFC 1191 §3 forbids going below 68, RFC 5927 §7.2 recommends a
//!   floor) nor ever upwards, and what is in flight goes again at the
//!   new size (Linux's `tcp_simple_retransmit`: no congestion response).
//!   A report of 0 (a pre-RFC 1191 router) counts as the floor. The
//!   lowered MSS is remembered for the destination for 10 minutes (Linux's
//!   `mtu_expires`), so new connections to it start there (RFC 1191 §5).
//! * Other unreachables and time exceeded are hard errors only for an open
//!   (RFC 1122 §4.2.3.9 allows it; Linux does it): SYN_SENT fails the
//!   connect with the errno Linux maps the code to (`icmp_err_convert`:
//!   port unreachable `ECONNREFUSED`, host unreachable `EHOSTUNREACH`, ...),
//!   a SYN_RCVD connection is dropped silently for net/host unreachable and
//!   time exceeded (Linux's `tcp_req_err`). On an established connection
//!   they are soft errors: counted (`icmp_soft_errors`) and recorded, the
//!   connection goes on; if it then times out the app gets the recorded
//!   errno instead of ETIMEDOUT (Linux's `sk_err_soft`), unless SND.UNA
//!   moved since.

use tas_engine::flow::FlowKey;

use super::ConnectPhase;
use crate::stack::{FpCmd, Stack, StackIo};

/// ICMP types (RFC 792).
pub(in crate::stack) const ICMP_DEST_UNREACH: u8 = 3;
pub(in crate::stack) const ICMP_TIME_EXCEEDED: u8 = 11;
/// Destination unreachable code: fragmentation needed and DF set.
const FRAG_NEEDED: u8 = 4;
/// The smallest path MTU believed (Linux's `ip_rt_min_pmtu`, 512 + 20 + 20).
pub(in crate::stack) const MIN_PMTU: u16 = 552;
/// IPv4 + TCP headers without options: MSS = MTU - 40 (RFC 9293 §3.7.1).
const HDRS: u16 = 40;

/// Linux's `icmp_err_convert` for destination-unreachable codes 0..=15.
fn unreach_errno(code: u8) -> Option<i32> {
    Some(match code {
        0 | 6 | 9 | 11 => libc::ENETUNREACH,
        1 | 10 | 12 | 13 | 14 | 15 => libc::EHOSTUNREACH,
        2 => libc::ENOPROTOOPT,
        3 => libc::ECONNREFUSED,
        4 => libc::EMSGSIZE,
        5 => libc::EOPNOTSUPP,
        7 => libc::EHOSTDOWN,
        8 => libc::ENONET,
        _ => return None,
    })
}

/// An ICMP error as the stack reads it: type, code, the MTU field (type 3
/// code 4), and the quoted segment's 4-tuple (our side first) and sequence
/// number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::stack) struct IcmpError {
    pub(in crate::stack) typ: u8,
    pub(in crate::stack) code: u8,
    pub(in crate::stack) mtu: u16,
    pub(in crate::stack) key: FlowKey,
    pub(in crate::stack) seq: u32,
}

impl IcmpError {
    /// Parses an ICMP error message (`msg`: ICMP header onwards, checksum
    /// already verified) quoting a TCP segment. None if it is not such an
    /// error or is too short (RFC 792: the quote has the IP header and at
    /// least 8 bytes of its payload).
    pub(in crate::stack) fn parse(msg: &[u8]) -> Option<IcmpError> {
        let (typ, code) = (*msg.first()?, *msg.get(1)?);
        if typ != ICMP_DEST_UNREACH && typ != ICMP_TIME_EXCEEDED {
            return None;
        }
        let quote = msg.get(8..)?;
        let vihl = *quote.first()?;
        let ihl = usize::from(vihl & 0xf) * 4;
        if vihl >> 4 != 4 || ihl < 20 || *quote.get(9)? != 6 {
            return None;
        }
        // A quote of a fragment other than the first has no TCP header.
        let frag = u16::from_be_bytes([*quote.get(6)?, *quote.get(7)?]);
        if frag & 0x1fff != 0 {
            return None;
        }
        let be32 = |b: &[u8], at: usize| -> Option<u32> {
            Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
        };
        let src = be32(quote, 12)?;
        let dst = be32(quote, 16)?;
        let tcp = quote.get(ihl..ihl + 8)?;
        Some(IcmpError {
            typ,
            code,
            mtu: u16::from_be_bytes([msg[6], msg[7]]),
            key: FlowKey {
                local_ip: src,
                remote_ip: dst,
                local_port: u16::from_be_bytes([tcp[0], tcp[1]]),
                remote_port: u16::from_be_bytes([tcp[2], tcp[3]]),
            },
            seq: be32(tcp, 4)?,
        })
    }
}

/// How long a lowered path MSS is remembered (Linux's
/// `net.ipv4.route.mtu_expires`, 600 s; RFC 1191 §6.3 suggests 10 minutes).
const PMTU_EXPIRES_NS: u64 = 600_000_000_000;
/// Destinations remembered at most (entries beyond wait for expiry).
const PMTU_ENTRIES: usize = 4096;

impl Stack {
    fn remember_path_mss(&mut self, now: u64, dst: u32, mss: u16) {
        let until = now.saturating_add(PMTU_EXPIRES_NS);
        if self.path_mss.len() >= PMTU_ENTRIES && !self.path_mss.contains_key(&dst) {
            self.path_mss.retain(|_, (_, t)| *t > now);
            if self.path_mss.len() >= PMTU_ENTRIES {
                return;
            }
        }
        self.path_mss.insert(dst, (mss, until));
    }

    /// The MSS a new connection to `dst` may use at most: a remembered
    /// path MSS, else ours.
    pub(in crate::stack) fn path_mss(&self, now: u64, dst: u32) -> u16 {
        match self.path_mss.get(&dst) {
            Some(&(mss, until)) if until > now => mss.min(self.our_mss()),
            _ => self.our_mss(),
        }
    }

    /// Forgets expired path MSS entries (housekeeping).
    pub(in crate::stack) fn path_mss_sweep(&mut self, now: u64) {
        self.path_mss.retain(|_, (_, t)| *t > now);
    }

    /// An ICMP error quoting one of our segments (see the module doc).
    pub(in crate::stack) fn on_icmp_error(
        &mut self,
        now: u64,
        e: IcmpError,
        io: &mut impl StackIo,
    ) {
        let frag_needed = e.typ == ICMP_DEST_UNREACH && e.code == FRAG_NEEDED;
        let err = match e.typ {
            ICMP_DEST_UNREACH => unreach_errno(e.code),
            _ => Some(libc::EHOSTUNREACH),
        };
        let Some(err) = err else {
            self.stats.icmp_ignored += 1;
            return;
        };
        let table = self.table.clone();
        if let Some(mut g) = table.lookup(&e.key) {
            let id = g.id();
            if !self.conns.contains_key(&id) {
                self.stats.icmp_ignored += 1;
                return;
            }
            // RFC 5927 §4.1.1: SND.UNA <= SEG.SEQ < SND.NXT.
            let off = e.seq.wrapping_sub(g.snd_una());
            if off >= g.tx_sent {
                self.stats.icmp_out_of_window += 1;
                return;
            }
            if !frag_needed {
                self.stats.icmp_soft_errors += 1;
                if let Some(c) = self.conns.get_mut(&id) {
                    c.soft_err = err;
                }
                return;
            }
            let mss = e.mtu.max(MIN_PMTU).saturating_sub(HDRS);
            if mss >= g.mss {
                // Not smaller than what we use already (RFC 1191 §3: a
                // host must not raise its estimate on such a message).
                self.stats.icmp_soft_errors += 1;
                return;
            }
            g.mss = mss;
            drop(g);
            self.remember_path_mss(now, e.key.remote_ip, mss);
            self.stats.icmp_pmtu_updates += 1;
            io.fastpath(FpCmd::Retransmit(id));
            return;
        }
        if let Some(c) = self.connecting.get(&e.key) {
            if c.phase != ConnectPhase::SynSent || e.seq != c.iss {
                self.stats.icmp_out_of_window += 1;
                return;
            }
            if frag_needed {
                // Our SYN is far below any MTU that can be reported.
                self.stats.icmp_soft_errors += 1;
                return;
            }
            self.stats.icmp_conn_errors += 1;
            if err == libc::ECONNREFUSED {
                self.stats.connect_refused += 1;
            } else {
                self.stats.connect_unreachable += 1;
            }
            self.connect_fail(&e.key, err, io);
            return;
        }
        if let Some(h) = self.half_open.get(&e.key) {
            if e.seq != h.iss {
                self.stats.icmp_out_of_window += 1;
                return;
            }
            // Linux's tcp_req_err: only these end a SYN_RCVD (POSIX wants
            // no network error from accept()).
            let abort = e.typ == ICMP_TIME_EXCEEDED || (e.typ == ICMP_DEST_UNREACH && e.code <= 1);
            if abort {
                self.stats.icmp_conn_errors += 1;
                self.drop_half_open(&e.key);
            } else {
                self.stats.icmp_soft_errors += 1;
            }
            return;
        }
        self.stats.icmp_ignored += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping_is_linuxs() {
        assert_eq!(unreach_errno(3), Some(libc::ECONNREFUSED));
        assert_eq!(unreach_errno(1), Some(libc::EHOSTUNREACH));
        assert_eq!(unreach_errno(0), Some(libc::ENETUNREACH));
        assert_eq!(unreach_errno(13), Some(libc::EHOSTUNREACH));
        assert_eq!(unreach_errno(16), None);
    }

    #[test]
    fn parse_checks_the_quote() {
        let mut m = vec![3u8, 4, 0, 0, 0, 0, 0x05, 0x78];
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&0x0a00_0001u32.to_be_bytes());
        ip[16..20].copy_from_slice(&0x0a00_0002u32.to_be_bytes());
        m.extend_from_slice(&ip);
        m.extend_from_slice(&[0x1f, 0x90, 0x9c, 0x40, 0, 0, 0x10, 0x00]);
        let e = IcmpError::parse(&m).unwrap();
        assert_eq!((e.typ, e.code, e.mtu, e.seq), (3, 4, 1400, 0x1000));
        assert_eq!(
            (
                e.key.local_ip,
                e.key.remote_ip,
                e.key.local_port,
                e.key.remote_port
            ),
            (0x0a00_0001, 0x0a00_0002, 8080, 40000)
        );
        // Every truncation is refused, never a panic.
        for n in 0..m.len() {
            assert_eq!(IcmpError::parse(&m[..n]), None, "{n}");
        }
        // Not TCP, a later fragment, IP options longer than the quote.
        let mut u = m.clone();
        u[8 + 9] = 17;
        assert_eq!(IcmpError::parse(&u), None);
        let mut f = m.clone();
        f[8 + 7] = 1;
        assert_eq!(IcmpError::parse(&f), None);
        let mut o = m.clone();
        o[8] = 0x47;
        assert_eq!(IcmpError::parse(&o), None);
        // Echo request: not an error.
        let mut q = m.clone();
        q[0] = 8;
        assert_eq!(IcmpError::parse(&q), None);
    }
}
