//! Raw bindings to the system DPDK (Debian's `libdpdk-dev`, DPDK 22.11), for
//! the TAS fast path's DPDK NIC backend.
//!
//! Only what the backend uses is bound (see the allow-lists in `build.rs`):
//! the EAL (init, hot-plug of virtual devices), mbuf pools, the ethdev
//! control path, and — through a small C shim, because DPDK defines them
//! `static inline` in its headers — the data path (`rte_eth_rx_burst`,
//! `rte_eth_tx_burst`, mbuf allocation and freeing, `rte_pktmbuf_append`,
//! `rte_pktmbuf_read`) plus accessors for the mbuf fields we read (data
//! pointer, `data_len`, `pkt_len`, `nb_segs`) and for the thread-local
//! `rte_errno` and `rte_lcore_id()`. The shim's functions are named
//! `tas_<dpdk name>` and behave exactly like DPDK's. `struct rte_mbuf` and
//! `struct rte_mempool` are opaque here.
//!
//! Everything is behind the `system` feature, which needs `pkg-config` to
//! find `libdpdk` (and libclang for bindgen); without it this crate is empty
//! and builds anywhere.
//!
//! Most functions need an initialised EAL (`rte_eal_init`), which a process
//! can do only once.

#![no_std]
#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals)]
#![allow(clippy::all)]

#[cfg(feature = "system")]
mod bindings {
    #![allow(non_camel_case_types, non_snake_case, non_upper_case_globals)]
    #![allow(dead_code, unused_imports, improper_ctypes, clippy::all)]
    #![allow(rustdoc::all, unsafe_op_in_unsafe_fn)]
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

#[cfg(feature = "system")]
pub use bindings::*;

/// Data room of an mbuf as DPDK's `RTE_MBUF_DEFAULT_DATAROOM` (2048 bytes).
#[cfg(feature = "system")]
pub const RTE_MBUF_DEFAULT_DATAROOM: u16 = 2048;

/// `RTE_MBUF_DEFAULT_BUF_SIZE`: data room plus headroom, the usual
/// `data_room_size` argument of `rte_pktmbuf_pool_create`.
#[cfg(feature = "system")]
pub const RTE_MBUF_DEFAULT_BUF_SIZE: u16 = RTE_MBUF_DEFAULT_DATAROOM + RTE_PKTMBUF_HEADROOM as u16;
