//! # tas-engine
//!
//! The fast path's protocol engine: everything a polling core computes for
//! the common case of TCP, as plain functions over (state, frame bytes, `now`).
//!
//! Owns: wire formats ([`wire`]), sequence arithmetic ([`seq`]), per-flow
//! fast-path state ([`flow`]), the flow table ([`flowtable`]), the TX
//! scheduler ([`sched`]) and common-case receive/ACK/transmit ([`engine`]).
//!
//! Must not: make policy decisions (congestion control, connection setup and
//! teardown, timeouts: those are the slow path's), do I/O of any kind (NICs
//! are `tas-nic`'s, threads and sleeping `tas-runtime`'s), read clocks (the
//! caller passes `now`), or allocate on the per-packet path. Anything unusual is an
//! [`engine::Exception`] for the slow path. The only `unsafe` code is the
//! flow table's per-flow lock and slot access, its arrays' own (huge-page
//! aligned) allocation, the engine queues' unchecked
//! indexing (`fifo`) and the checksum's `adc` carry chain (x86-64 `asm!`,
//! `wire::checksum`), each block with its SAFETY argument.

#![deny(unsafe_code)]

pub mod engine;
mod fifo;
pub mod flow;
pub mod flowtable;
pub mod sched;
pub mod seq;
pub mod wire;
