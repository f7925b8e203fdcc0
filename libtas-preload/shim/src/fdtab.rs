//! The fd table: one atomic word per descriptor number saying what that
//! number is to the shim — nothing (0: the kernel's, libc handles it), a
//! TAS socket (`T_SOCK` with its context and socket id), one of the shim's
//! own descriptors (`T_INTERNAL`), or an epoll set holding the shim's fds
//! (`T_EPOLL` with a bit per context fd registered in it); [`kind`] reads
//! an entry as a [`Kind`]. Also where the shim puts its own descriptors
//! ([`high_fd_base`]).
//!
//! Every interposed call looks its fd up here first; a lookup is one
//! atomic load.

use crate::ctx::Ctx;
use crate::global::try_global;
use libc::c_int;
use std::sync::atomic::{AtomicU64, Ordering};

/// fd table tags.
pub const T_SOCK: u64 = 1 << 63;
pub const T_INTERNAL: u64 = 1 << 62;
pub const T_EPOLL: u64 = 1 << 61;
const SID_BITS: u32 = 40;
const SID_MASK: u64 = (1 << SID_BITS) - 1;

/// The table, indexed by fd number; numbers beyond its end are never the
/// shim's.
pub struct FdTable(Box<[AtomicU64]>);

impl FdTable {
    /// A table covering the process's hard fd limit (at least 65536, at
    /// most 2^20 entries).
    pub fn new() -> FdTable {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `rl` is a live local, valid for the write.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
        let size = (rl.rlim_max as u64).clamp(65536, 1 << 20) as usize;
        // Zeroed memory from calloc: pages are only touched when used.
        let v: Vec<u64> = vec![0u64; size];
        let b = v.into_boxed_slice();
        // SAFETY: the pointer comes from Box::into_raw of a boxed [u64] of
        // this length, and AtomicU64 has the size, alignment and bit
        // validity of u64, so the allocation's layout is unchanged.
        let t: Box<[AtomicU64]> = unsafe { Box::from_raw(Box::into_raw(b) as *mut [AtomicU64]) };
        FdTable(t)
    }

    /// The entry of `fd` (0 for negative or out-of-table numbers).
    #[inline]
    pub fn get(&self, fd: c_int) -> u64 {
        if fd < 0 {
            return 0;
        }
        match self.0.get(fd as usize) {
            Some(e) => e.load(Ordering::Acquire),
            None => 0,
        }
    }

    /// Sets the entry of `fd`; false when `fd` has no entry.
    pub fn set(&self, fd: c_int, v: u64) -> bool {
        if fd < 0 {
            return false;
        }
        match self.0.get(fd as usize) {
            Some(e) => {
                e.store(v, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Whether `fd` has an entry.
    pub fn fits(&self, fd: c_int) -> bool {
        fd >= 0 && (fd as usize) < self.0.len()
    }
}

/// The entry of a TAS socket: context index and socket id.
pub fn encode(ctx: usize, sid: u64) -> u64 {
    T_SOCK | ((ctx as u64) << SID_BITS) | (sid & SID_MASK)
}

/// The (context index, socket id) of a TAS socket's entry.
pub fn decode(v: u64) -> Option<(usize, u64)> {
    if v & T_SOCK == 0 {
        return None;
    }
    Some((((v & !T_SOCK) >> SID_BITS) as usize, v & SID_MASK))
}

/// Where the shim puts its own descriptors: high, out of the program's way
/// (select() users stay below 1024), if the fd limit allows.
pub fn high_fd_base() -> c_int {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a live local, valid for the write.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    let soft = rl.rlim_cur.min(1 << 30) as c_int;
    let min = (soft / 2).max(1024);
    if min < soft {
        min
    } else {
        (soft * 3 / 4).max(3)
    }
}

/// What an fd number is to the shim.
pub enum Kind {
    /// Not ours: libc handles it.
    Kernel,
    /// A TAS socket: its context and socket id.
    Sock(&'static Ctx, u64),
    /// One of the shim's own descriptors.
    Internal,
}

/// What `fd` is; a socket inherited from the parent process is taken
/// over first (`fork::adopt`).
#[inline]
pub fn kind(fd: c_int) -> Kind {
    if let Some(g) = try_global() {
        if let Some(i) = crate::exec::pending(g.fd(fd)) {
            return match crate::exec::adopt(fd, i) {
                Some((c, sid)) => Kind::Sock(c, sid),
                None => Kind::Kernel,
            };
        }
    }
    match kind_noadopt(fd) {
        Kind::Sock(c, sid)
            if c.gen
                != crate::global::global()
                    .gen
                    .load(std::sync::atomic::Ordering::Acquire) =>
        {
            match crate::fork::adopt(fd, c, sid) {
                Some((n, sid)) => Kind::Sock(n, sid),
                None => Kind::Sock(c, sid),
            }
        }
        k => k,
    }
}

/// As [`kind`], but a socket inherited at fork is not taken over: for
/// calls that only read what the process inherited (`getsockname`,
/// `getpeername`). A child that asks for the addresses and then only
/// closes the connection (sshd's session child for root builds
/// `SSH_CONNECTION` so) must not take it from the parent that goes on
/// using it. A socket inherited across exec has no state here until it is
/// taken over, so it still is.
pub fn kind_peek(fd: c_int) -> Kind {
    if let Some(g) = try_global() {
        if crate::exec::pending(g.fd(fd)).is_some() {
            return kind(fd);
        }
    }
    kind_noadopt(fd)
}

/// A socket inherited from the parent (or across exec) that a wait
/// (`poll`, `select`) is about to include is taken over first: its
/// readiness is this process's to drive from now on.
pub fn adopt_if_inherited(fd: c_int, v: u64) {
    let Some(g) = try_global() else { return };
    let old = match decode(v) {
        Some((crate::exec::PENDING_CTX, _)) => true,
        Some((ci, _)) => g
            .ctx(ci)
            .is_some_and(|c| c.gen != g.gen.load(std::sync::atomic::Ordering::Acquire)),
        None => false,
    };
    if old {
        let _ = kind(fd);
    }
}

/// What `fd` is, leaving an inherited socket as it is (for `close`).
#[inline]
pub fn kind_noadopt(fd: c_int) -> Kind {
    let Some(g) = try_global() else {
        return Kind::Kernel;
    };
    let v = g.fd(fd);
    if v == 0 {
        return Kind::Kernel;
    }
    if let Some((ci, sid)) = decode(v) {
        return match g.ctx(ci) {
            Some(c) => Kind::Sock(c, sid),
            None => Kind::Kernel,
        };
    }
    if v & T_INTERNAL != 0 {
        return Kind::Internal;
    }
    Kind::Kernel
}
