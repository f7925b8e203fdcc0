//! # tasd (slow path)
//!
//! Owns: connection control (handshakes, teardown, RST, timeouts), ARP,
//! ICMP echo, routing ([`stack`], sans-I/O), the app registry and attach
//! socket ([`apps`]), and the daemon that wires NIC, fast-path cores and the
//! slow-path thread together ([`daemon`]).
//!
//! Must not: touch payload bytes or per-packet common-case work (that is the
//! fast path's), or trust anything an app sends.

pub mod stack;
pub mod apps;
pub mod config;
pub mod daemon;
