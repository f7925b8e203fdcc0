//! The socket calls on TAS sockets. Every function here returns
//! `Result<_, errno>`; the exported C functions (lib.rs) turn that into
//! `-1` + `errno`. Most take the socket's context and id (from the fd
//! table, `fdtab::kind`) and work under the context's lock.
//!
//! Submodules, one per family of calls:
//!
//! * `pair`: creating a socket (its Unix socket pair) and replacing the
//!   file under its fd numbers (a kernel socket when it leaves TAS, a new
//!   pair after a failed connect);
//! * `ports`: the ports bound by TAS sockets of this process;
//! * `conn`: bind, listen, accept, connect and the names they give;
//! * `v6`: what an `AF_INET6` socket does on TAS (dual-stack, IPv4-mapped
//!   addresses) and when it goes to the kernel;
//! * `data`: recv and send (and so read, write, sendfile, ...);
//! * `close`: shutdown, close and the TAS-level teardown;
//! * `fds`: dup, dup2/3, `O_NONBLOCK`, epoll registrations, queue ioctls.
//!
//! This module holds what they share.

mod close;
mod conn;
mod data;
mod fds;
mod pair;
mod ports;
mod v6;
pub(crate) mod wild;

pub use close::{close, shutdown};
pub use conn::{accept, bind, connect, getpeername, getsockname, listen};
pub use data::{recv, send, Src};
pub use fds::{add_fd, before_replace, epoll_track, ioctl_queue, set_nonblock};
pub(crate) use pair::{create_pair, to_kernel};
pub use pair::{own_pair, socket};
pub use ports::Ports;
pub use wild::{fired as kernel_listener_fired, watched as kernel_listeners};

use crate::ctx::Ctx;
use crate::global::global;
use crate::sys;
use std::sync::atomic::Ordering;

/// Whether `ctx` belongs to an older fork generation (the parent's: its
/// sockets must not be touched).
fn orphan(ctx: &Ctx) -> bool {
    let o = ctx.gen != global().gen.load(Ordering::Acquire);
    if o {
        crate::debug::reason(|| {
            "the socket was inherited from the parent process (fork): its connection is the parent's".into()
        });
    }
    o
}

/// When a call bounded by `SO_RCVTIMEO`/`SO_SNDTIMEO` gives up (monotonic
/// ns); None: never.
fn deadline(tv: Option<libc::timeval>) -> Option<u64> {
    let tv = tv?;
    let ns = tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
    (ns > 0).then(|| sys::monotonic_ns() + ns)
}
