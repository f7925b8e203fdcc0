//! # tasd (slow path)
//!
//! Owns: connection control (handshakes, teardown, RST, timeouts), ARP,
//! ICMP echo, routing and the per-flow congestion-control loop ([`stack`],
//! sans-I/O), the congestion control algorithms ([`cc`]), the app registry
//! and attach socket ([`apps`]), the control socket and protocol for
//! `tasctl` ([`ctlsock`]), the Prometheus metrics endpoint
//! ([`metrics`]), the command line and settings ([`config`]), the
//! rule that scales the fast-path cores ([`scale`]), the files tasd keeps
//! while it runs (per-interface lock, socket files: [`runfiles`]), the
//! kernel's neighbours and routes in shared mode ([`netlink`]),
//! rate-limited warnings ([`ratelimit`]), and the daemon that wires NIC
//! lanes, fast-path core threads and the slow-path thread together
//! ([`daemon`]).
//!
//! Must not: do the per-packet common-case work or read or write the data
//! in the apps' rings (that is the fast path's, which also owns the NIC
//! backends, the flow table and the app ABI); or trust anything
//! an app or a `tasctl` client sends (every message is checked and a bad
//! one answered with an error, never a panic).

pub mod apps;
pub mod cc;
pub mod config;
pub mod ctlsock;
pub mod daemon;
pub mod metrics;
pub mod netlink;
pub mod ratelimit;
pub mod runfiles;
pub mod scale;
pub mod stack;
