//! # tasd (slow path)
//!
//! Owns: connection control (handshakes, teardown, RST, timeouts), ARP,
//! ICMP echo, routing and the per-flow congestion-control loop ([`stack`],
//! sans-I/O), the congestion control algorithms ([`cc`]), the app registry
//! and attach socket ([`apps`]), the control socket for `tasctl`
//! ([`ctlsock`]), and the daemon that wires NIC, fast-path cores and the
//! slow-path thread together ([`daemon`]).
//!
//! Must not: touch payload bytes or per-packet common-case work (that is the
//! fast path's), or trust anything an app sends.

pub mod apps;
pub mod cc;
pub mod config;
pub mod ctlsock;
pub mod daemon;
pub mod scale;
pub mod stack;
