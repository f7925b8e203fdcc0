//! Non-TCP frames: ARP dispatch, ICMP echo (so `ping` works), ICMP errors
//! quoting our TCP segments (handed to `conn/icmp_error.rs`); everything
//! else is counted and dropped.

use tas_engine::wire::{checksum, eth, ipv4};

use super::{IcmpError, Stack, StackIo};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
/// Type, code, checksum, identifier, sequence number.
const ICMP_HDR_LEN: usize = 8;
const TTL: u8 = 64;

impl Stack {
    /// A frame the fast path classified as not TCP.
    pub(super) fn on_not_tcp(&mut self, now: u64, frame: &[u8], io: &mut impl StackIo) {
        let Ok(e) = eth::EthFrame::parse(frame) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        match e.ethertype() {
            eth::ETHERTYPE_ARP => self.on_arp(now, e.payload(), io),
            eth::ETHERTYPE_IPV4 => {
                let Ok(ip) = ipv4::Ipv4Packet::parse(e.payload()) else {
                    self.stats.dropped_malformed += 1;
                    return;
                };
                if ip.protocol() == ipv4::PROTO_ICMP {
                    self.on_icmp(now, e.src(), &ip, io);
                } else {
                    self.stats.ip_other += 1;
                }
            }
            _ => self.stats.non_ip += 1,
        }
    }

    fn on_icmp(
        &mut self,
        now: u64,
        src_mac: [u8; 6],
        ip: &ipv4::Ipv4Packet<'_>,
        io: &mut impl StackIo,
    ) {
        let msg = ip.payload();
        let me = self.cfg.local_ip;
        // An error about one of our segments (RFC 1122 §3.2.2: passed to
        // the transport). It must be to our address, whole and intact.
        if me != 0 && ip.dst() == me && !ip.is_fragment() {
            if let Some(err) = IcmpError::parse(msg) {
                if checksum::fold(checksum::sum(msg, 0)) != 0 || err.key.local_ip != me {
                    self.stats.icmp_ignored += 1;
                } else {
                    self.on_icmp_error(now, err, io);
                }
                return;
            }
        }
        let is_echo = msg.len() >= ICMP_HDR_LEN && msg[0] == ICMP_ECHO_REQUEST && msg[1] == 0;
        // Shared mode: the kernel owns the address and answers pings.
        if me == 0
            || self.cfg.shared_ports.is_some()
            || ip.dst() != me
            || ip.is_fragment()
            || !is_echo
            || !self.unicast_ok(ip.src())
            || src_mac[0] & 1 != 0
            || checksum::fold(checksum::sum(msg, 0)) != 0
        {
            self.stats.icmp_ignored += 1;
            return;
        }
        let total = eth::HDR_LEN + ipv4::HDR_LEN + msg.len();
        let mut buf = vec![0u8; total.max(60)];
        let ident = self.next_ident();
        let ok = eth::emit(&mut buf, src_mac, self.cfg.local_mac, eth::ETHERTYPE_IPV4).is_ok()
            && ipv4::Ipv4Repr {
                src: me,
                dst: ip.src(),
                protocol: ipv4::PROTO_ICMP,
                ttl: TTL,
                ecn: 0,
                ident,
                dont_fragment: false,
                payload_len: msg.len() as u16,
            }
            .emit(&mut buf[eth::HDR_LEN..])
            .is_ok();
        if !ok {
            self.stats.icmp_ignored += 1;
            return;
        }
        let icmp = &mut buf[eth::HDR_LEN + ipv4::HDR_LEN..total];
        icmp.copy_from_slice(msg);
        icmp[0] = ICMP_ECHO_REPLY;
        icmp[1] = 0;
        icmp[2] = 0;
        icmp[3] = 0;
        let c = checksum::fold(checksum::sum(icmp, 0));
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        self.stats.icmp_echo_replies += 1;
        io.send_frame(&buf);
    }
}
