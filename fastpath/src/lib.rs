//! # tas-fastpath
//!
//! The fast path of the TCP acceleration service: everything a dedicated
//! polling core runs for the common case of TCP, plus the binary contract
//! shared with apps.
//!
//! Owns: wire formats ([`wire`]), per-flow state ([`flow`]), the flow table
//! ([`flowtable`]), common-case receive/ACK/transmit ([`engine`]), the TX
//! scheduler ([`sched`]), the app↔service shared-memory ABI ([`abi`]) and the
//! NIC backends ([`nic`]).
//!
//! Must not: make policy decisions (congestion control, connection setup and
//! teardown, timeouts: those are the slow path's), read clocks, block, or
//! allocate on the per-packet path. The protocol logic in [`engine`] is
//! sans-I/O: plain functions over (state, frame bytes, `now`) that return the
//! frames to send and the notifications to deliver. Anything unusual is an
//! [`engine::Exception`] for the slow path.

pub mod abi;
pub mod engine;
pub mod flow;
pub mod flowtable;
pub mod nic;
pub mod poll;
pub mod sched;
pub mod seq;
pub mod wire;
