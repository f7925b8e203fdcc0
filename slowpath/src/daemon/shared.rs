//! Shared mode (the kernel owns tasd's address on the interface): what
//! keeps tasd and the kernel stack out of each other's way.
//!
//! * The XDP program takes only TCP to tasd's address for the active-open
//!   port range and for the ports flagged in its map ([`PortSteer`]); the
//!   rest (ARP, ICMP, other ports, UDP, IPv6) goes to the kernel.
//! * Each port a TAS app listens on is held by a placeholder kernel socket
//!   bound to the address and port (not listening), so a kernel program
//!   cannot bind it meanwhile, and a listen on a port the kernel already
//!   uses fails with `EADDRINUSE`. When the last listener goes, the port
//!   stays steered (and held) until no connection or TIME_WAIT entry uses
//!   it, or the kernel would reset them.
//! * The active-open range is added to `net.ipv4.ip_local_reserved_ports`
//!   while tasd runs (restored at exit), so the kernel never picks those
//!   ports for its own connections.

use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};
use tas_nic::af_xdp::PortSteer;

const RESERVED: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// Listening ports steered to TAS and their placeholder sockets.
pub(super) struct SharedPorts {
    steer: PortSteer,
    ip: u32,
    held: HashMap<u16, OwnedFd>,
    /// Ports whose last listener is gone, kept until unused.
    draining: Vec<u16>,
    last_check: Instant,
}

impl SharedPorts {
    pub(super) fn new(steer: PortSteer, ip: u32) -> SharedPorts {
        SharedPorts {
            steer,
            ip,
            held: HashMap::new(),
            draining: Vec::new(),
            last_check: Instant::now(),
        }
    }

    /// A listener starts using `port`.
    pub(super) fn claim(&mut self, port: u16) -> Result<(), i32> {
        if self.held.contains_key(&port) {
            self.draining.retain(|&p| p != port);
            return Ok(());
        }
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| e as i32)?;
        let addr = SockaddrIn::from(std::net::SocketAddrV4::new(self.ip.into(), port));
        if let Err(e) = bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            tracing::info!("listen on port {port} refused: the kernel uses it ({e})");
            return Err(e as i32);
        }
        if let Err(e) = self.steer.set(port, true) {
            crate::warn_limited!("steering port {port} to TAS: {e}");
            return Err(libc::ENOBUFS);
        }
        self.held.insert(port, fd);
        Ok(())
    }

    /// The last listener on `port` is gone.
    pub(super) fn release(&mut self, port: u16) {
        if self.held.contains_key(&port) && !self.draining.contains(&port) {
            self.draining.push(port);
        }
    }

    /// Gives back to the kernel the released ports nothing uses any more
    /// (checked about once a second).
    pub(super) fn tick(&mut self, in_use: impl Fn(u16) -> bool) {
        if self.draining.is_empty() || self.last_check.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_check = Instant::now();
        let (steer, held) = (&self.steer, &mut self.held);
        self.draining.retain(|&p| {
            if in_use(p) {
                return true;
            }
            if let Err(e) = steer.set(p, false) {
                crate::warn_limited!("returning port {p} to the kernel: {e}");
                return true;
            }
            held.remove(&p);
            false
        });
    }
}

/// The active-open range added to `ip_local_reserved_ports`; the previous
/// value is written back when dropped.
pub(super) struct ReservedPorts {
    previous: String,
}

impl ReservedPorts {
    pub(super) fn reserve(range: (u16, u16)) -> std::io::Result<ReservedPorts> {
        let previous = std::fs::read_to_string(RESERVED)?.trim().to_string();
        let add = format!("{}-{}", range.0, range.1);
        let new = if previous.is_empty() {
            add
        } else {
            format!("{previous},{add}")
        };
        std::fs::write(RESERVED, &new)?;
        tracing::info!(
            "reserved local ports {}-{} from the kernel",
            range.0,
            range.1
        );
        Ok(ReservedPorts { previous })
    }
}

impl Drop for ReservedPorts {
    fn drop(&mut self) {
        // An empty write is refused by some kernels; "" then stays as set.
        let v = if self.previous.is_empty() {
            "\n".to_string()
        } else {
            self.previous.clone()
        };
        if let Err(e) = std::fs::write(RESERVED, v) {
            tracing::warn!("restoring {RESERVED}: {e}");
        }
    }
}

/// The kernel's complete IPv4 neighbours on `iface` (`/proc/net/arp` of
/// tasd's network namespace): (address, MAC), addresses in host order.
pub(super) fn kernel_neighbours(iface: &str) -> Vec<(u32, [u8; 6])> {
    let Ok(text) = std::fs::read_to_string("/proc/net/arp") else {
        return Vec::new();
    };
    parse_arp_table(&text, iface)
}

fn parse_arp_table(text: &str, iface: &str) -> Vec<(u32, [u8; 6])> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 || f[5] != iface {
                return None;
            }
            let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
            if flags & 0x2 == 0 {
                return None; // ATF_COM: not resolved
            }
            let ip: std::net::Ipv4Addr = f[0].parse().ok()?;
            let mut mac = [0u8; 6];
            let mut parts = f[3].split(':');
            for b in &mut mac {
                *b = u8::from_str_radix(parts.next()?, 16).ok()?;
            }
            Some((u32::from(ip), mac))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_table_lines() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 198.18.0.2       0x1         0x2         aa:bb:cc:dd:ee:01     *        veth-tas\n\
                 198.18.0.3       0x1         0x0         00:00:00:00:00:00     *        veth-tas\n\
                 10.0.0.1         0x1         0x2         aa:bb:cc:dd:ee:02     *        eth0\n";
        assert_eq!(
            parse_arp_table(t, "veth-tas"),
            vec![(0xc612_0002, [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01])]
        );
    }
}
