//! Test addresses: only 198.18.0.0/15 (RFC 2544's benchmarking range) and
//! locally administered MACs (02:…), so nothing a test sends can reach a
//! real host.

use std::net::Ipv4Addr;

/// Host A (the TAS side in system tests).
pub const A_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Host B (the Linux side in system tests).
pub const B_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const A_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const B_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// [`A_IP`] and [`B_IP`] as host-order `u32`s.
pub const A_IP4: u32 = ip_u32(A_IP);
pub const B_IP4: u32 = ip_u32(B_IP);
/// A MAC that belongs to nobody on the test link.
pub const OTHER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];

/// `ip` as the host-order `u32` the engine and the slow path use.
pub const fn ip_u32(ip: Ipv4Addr) -> u32 {
    u32::from_be_bytes(ip.octets())
}
