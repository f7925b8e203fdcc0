//! Shared mode (the kernel owns tasd's address on the interface): what
//! keeps tasd and the kernel stack out of each other's way.
//!
//! * The XDP program takes only TCP to tasd's address for the active-open
//!   port range and for the ports flagged in its map ([`PortSteer`]), and
//!   the ICMP errors quoting such segments; the rest (ARP, other ICMP,
//!   other ports, UDP, IPv6) goes to the kernel. Neighbours and routes are
//!   the kernel's (`crate::netlink`, used by the daemon).
//! * Each port a TAS app listens on is held by a placeholder kernel socket
//!   bound to the address and port (not listening), so a kernel program
//!   cannot bind it meanwhile, and a listen on a port the kernel already
//!   uses fails with `EADDRINUSE`. When the last listener goes, the port
//!   stays steered (and held) until no connection or TIME_WAIT entry uses
//!   it, or the kernel would reset them.
//! * The active-open range is added to `net.ipv4.ip_local_reserved_ports`
//!   while tasd runs (taken out again at exit; after a SIGKILL, by the next
//!   tasd started in the network namespace, from a record in the run dir),
//!   so the kernel never picks those ports for its own connections.

use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
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

/// The active-open range added to `ip_local_reserved_ports`, taken out
/// again when dropped. While it is held, a record in the run dir
/// (`reserved-ports.net-<netns inode>.<pid>`: the value before, the range
/// added) lets the next tasd in this network namespace undo it if this one
/// dies without dropping it (SIGKILL): [`ReservedPorts::clean_stale`].
pub(super) struct ReservedPorts {
    previous: String,
    range: (u16, u16),
    record: PathBuf,
}

/// The ports of a `ip_local_reserved_ports` value ("a-b,c,..."), as a
/// bitmap; None if it does not parse.
fn port_set(v: &str) -> Option<Vec<bool>> {
    let mut set = vec![false; 65536];
    for part in v.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?),
            None => {
                let p = part.parse::<u16>().ok()?;
                (p, p)
            }
        };
        if lo > hi {
            return None;
        }
        for p in lo..=hi {
            set[usize::from(p)] = true;
        }
    }
    Some(set)
}

/// A bitmap of ports as the kernel prints it ("a-b,c").
fn port_list(set: &[bool]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut p = 0usize;
    while p < set.len() {
        if !set[p] {
            p += 1;
            continue;
        }
        let lo = p;
        while p + 1 < set.len() && set[p + 1] {
            p += 1;
        }
        out.push(if lo == p {
            lo.to_string()
        } else {
            format!("{lo}-{p}")
        });
        p += 1;
    }
    out.join(",")
}

/// `current` without the ports of `range` that were not already in
/// `previous` (so a reservation someone else made stays, also one made
/// meanwhile). None if a value does not parse.
fn without_range(current: &str, previous: &str, range: (u16, u16)) -> Option<String> {
    let mut cur = port_set(current)?;
    let prev = port_set(previous)?;
    for p in range.0..=range.1 {
        let p = usize::from(p);
        if !prev[p] {
            cur[p] = false;
        }
    }
    Some(port_list(&cur))
}

/// Writes a value to `ip_local_reserved_ports` (an empty value as a
/// newline: some kernels refuse an empty write).
fn write_reserved(v: &str) -> std::io::Result<()> {
    std::fs::write(RESERVED, if v.is_empty() { "\n" } else { v })
}

/// Takes `range` back out of the kernel's reserved ports.
fn unreserve(previous: &str, range: (u16, u16)) -> std::io::Result<()> {
    let current = std::fs::read_to_string(RESERVED)?;
    match without_range(&current, previous, range) {
        Some(v) => write_reserved(&v),
        None => write_reserved(previous),
    }
}

impl ReservedPorts {
    pub(super) fn reserve(run_dir: &Path, range: (u16, u16)) -> std::io::Result<ReservedPorts> {
        let previous = std::fs::read_to_string(RESERVED)?.trim().to_string();
        let record = run_dir.join(format!(
            "reserved-ports.net-{}.{}",
            crate::runfiles::own_netns(),
            std::process::id()
        ));
        // The record first: a crash between the two writes leaves a record
        // whose undo changes nothing.
        std::fs::write(&record, format!("{previous}\n{}-{}\n", range.0, range.1))?;
        let add = format!("{}-{}", range.0, range.1);
        let new = if previous.is_empty() {
            add
        } else {
            format!("{previous},{add}")
        };
        if let Err(e) = std::fs::write(RESERVED, &new) {
            let _ = std::fs::remove_file(&record);
            return Err(e);
        }
        tracing::info!(
            "reserved local ports {}-{} from the kernel",
            range.0,
            range.1
        );
        Ok(ReservedPorts {
            previous,
            range,
            record,
        })
    }

    /// Undoes the reservations of tasds of this network namespace that
    /// died without undoing them (their record is left and their pid is
    /// gone); a live tasd's record is never touched. Returns how many.
    pub(super) fn clean_stale(run_dir: &Path) -> usize {
        let prefix = format!("reserved-ports.net-{}.", crate::runfiles::own_netns());
        let Ok(dir) = std::fs::read_dir(run_dir) else {
            return 0;
        };
        let mut n = 0;
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(&prefix)
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if pid == std::process::id() as i32 || crate::runfiles::pid_alive(pid) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let mut lines = text.lines();
            let previous = lines.next().unwrap_or("").trim().to_string();
            let range = lines.next().and_then(|r| {
                let (a, b) = r.trim().split_once('-')?;
                Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?))
            });
            let Some(range) = range.filter(|r| r.0 <= r.1) else {
                tracing::warn!(
                    "{}: not a reservation record; left alone",
                    e.path().display()
                );
                continue;
            };
            match unreserve(&previous, range) {
                Ok(()) => {
                    tracing::info!(
                        "gave local ports {}-{} back to the kernel (reserved by tasd pid {pid}, which is gone)",
                        range.0,
                        range.1
                    );
                    let _ = std::fs::remove_file(e.path());
                    n += 1;
                }
                Err(err) => tracing::warn!("restoring {RESERVED} for dead tasd {pid}: {err}"),
            }
        }
        n
    }
}

impl Drop for ReservedPorts {
    fn drop(&mut self) {
        match unreserve(&self.previous, self.range) {
            Ok(()) => {
                let _ = std::fs::remove_file(&self.record);
            }
            Err(e) => tracing::warn!("restoring {RESERVED}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_round_trip() {
        assert_eq!(port_list(&port_set("").unwrap()), "");
        assert_eq!(
            port_list(&port_set("22, 8000-8002,61000-64999").unwrap()),
            "22,8000-8002,61000-64999"
        );
        assert!(port_set("9-3").is_none() && port_set("x").is_none());
        // Ours taken out; what was there before, or added since, stays.
        assert_eq!(
            without_range("22,61000-64999", "22", (61000, 64999)).unwrap(),
            "22"
        );
        assert_eq!(
            without_range("61000-64999", "", (61000, 64999)).unwrap(),
            ""
        );
        assert_eq!(
            without_range("22,60000-64999,7000", "22,60000-61000", (61000, 64999)).unwrap(),
            "22,7000,60000-61000"
        );
    }
}
