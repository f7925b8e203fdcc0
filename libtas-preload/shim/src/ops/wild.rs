//! Wildcard listeners (issue 14, item 5): a TAS socket listening on
//! `0.0.0.0` also gets a kernel listener on the same port, so that clients
//! of loopback and of the kernel's other addresses reach the program too,
//! as on Linux, while TAS serves its own address. A dual-stack `AF_INET6`
//! socket listening on `::` (`ops::v6`) gets a dual-stack kernel `AF_INET6`
//! listener on `[::]` instead (Linux refuses `0.0.0.0` and `[::]`
//! dual-stack on one port to two sockets), which takes IPv6 clients and
//! the kernel's IPv4 addresses alike. The program sees one
//! listener: `accept` takes TAS's connections first, then the kernel's (a
//! kernel socket, handed over as it is), and the listener's fd is readable
//! while either has one.
//!
//! The kernel listener's readiness reaches the socket through the reactor:
//! every armed kernel listener is in its `poll`; when one is readable the
//! reactor disarms it and marks the socket (`Sock::kready`, part of
//! [`crate::readiness::want`]); `accept` re-arms it when the kernel
//! listener has nothing more (`EAGAIN`). A kernel listener that cannot be
//! opened (its port taken on the kernel side) leaves the socket TAS-only,
//! with a `TAS_PRELOAD_DEBUG` line.

use crate::ctx::Ctx;
use crate::fdtab::{high_fd_base, T_INTERNAL};
use crate::global::global;
use crate::sock::Sock;
use crate::sys::{self, r_close, real, Lock, Res};
use libc::{c_int, sockaddr, socklen_t};

#[derive(Clone, Copy)]
pub(crate) struct Entry {
    sid: u64,
    fd: c_int,
    armed: bool,
}

/// Every kernel listener of this process. After a fork the child has the
/// same (its copies of the kernel listeners): an entry counts in a process
/// once one of its live contexts holds the socket (the child has taken the
/// listener over), so parent and children each accept from it, as they
/// would share a kernel listener. Lock order: a context's lock, then this.
pub(crate) static KL: Lock<Vec<Entry>> = Lock::new(Vec::new());

/// The live context holding socket `sid` with kernel listener `fd`.
fn holder(sid: u64, fd: c_int) -> Option<&'static Ctx> {
    global().live_ctxs().find(|c| {
        !c.dead.load(std::sync::atomic::Ordering::Relaxed)
            && c.inner
                .lock()
                .socks
                .get(&sid)
                .is_some_and(|s| s.klisten == fd)
    })
}

/// Opens the kernel listener of wildcard listener `s` (port `port`);
/// returns its fd, or -1 when the kernel refuses (then the socket stays
/// TAS-only).
pub(super) fn open(s: &Sock, port: u16, backlog: c_int) -> c_int {
    let fail = |what: &str, k: c_int| {
        let e = sys::errno();
        if k >= 0 {
            r_close(k);
        }
        crate::debug::say(
            "wildcard kernel listener",
            &format!(
                "listen(fd {}) on {}:{port}: no kernel listener beside TAS's ({what}: {}): loopback and kernel addresses are not served",
                s.a,
                if s.v6 { "[::]" } else { "0.0.0.0" },
                crate::debug::errno_name(e)
            ),
        );
        -1
    };
    let fam = if s.v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: socket takes no pointers.
    let k = unsafe {
        real::socket::get()(
            fam,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if k < 0 {
        return fail("socket", k);
    }
    let k = sys::move_high(k, high_fd_base());
    let g = global();
    if !g.fd_fits(k) {
        return fail("descriptor table", k);
    }
    let _ = sys::r_setsockopt_int(k, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    if s.opts.reuseport {
        let _ = sys::r_setsockopt_int(k, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1);
    }
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    let sin6 = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: port.to_be(),
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
        sin6_scope_id: 0,
    };
    let r = if s.v6 {
        // Dual-stack whatever net.ipv6.bindv6only says (the socket it
        // serves has IPV6_V6ONLY off).
        if sys::r_setsockopt_int(k, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0).is_err() {
            return fail("IPV6_V6ONLY", k);
        }
        // SAFETY: `sin6` is a live local sockaddr_in6 of the length given.
        unsafe {
            real::bind::get()(
                k,
                &sin6 as *const libc::sockaddr_in6 as *const sockaddr,
                std::mem::size_of::<libc::sockaddr_in6>() as socklen_t,
            )
        }
    } else {
        // SAFETY: `sin` is a live local sockaddr_in of the length given.
        unsafe {
            real::bind::get()(
                k,
                &sin as *const libc::sockaddr_in as *const sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as socklen_t,
            )
        }
    };
    if r != 0 {
        return fail("bind", k);
    }
    // SAFETY: listen takes no pointers; k is the shim's own socket.
    if unsafe { real::listen::get()(k, backlog) } != 0 {
        return fail("listen", k);
    }
    g.set_fd(k, T_INTERNAL);
    KL.lock().push(Entry {
        sid: s.id,
        fd: k,
        armed: true,
    });
    crate::reactor::wake();
    k
}

/// The armed kernel listeners whose socket this process holds (for the
/// reactor's poll).
pub fn watched(out: &mut Vec<c_int>) {
    let armed: Vec<Entry> = KL.lock().iter().filter(|e| e.armed).copied().collect();
    out.extend(
        armed
            .iter()
            .filter(|e| holder(e.sid, e.fd).is_some())
            .map(|e| e.fd),
    );
}

/// Kernel listener `fd` is readable (the reactor saw it): disarms it and
/// marks its socket readable.
pub fn fired(fd: c_int) {
    let sid = {
        let mut kl = KL.lock();
        let Some(e) = kl.iter_mut().find(|e| e.fd == fd) else {
            return;
        };
        e.armed = false;
        e.sid
    };
    let Some(c) = holder(sid, fd) else { return };
    let mut inner = c.inner.lock();
    if let Some(s) = inner.socks.get_mut(&sid) {
        if s.klisten == fd {
            s.kready = true;
            s.lkey += 1;
            inner.sync(sid);
        }
    }
}

/// Accepts a connection from the kernel listener of `s` (the caller's
/// `addr`/`len`/`flags`, as the kernel fills them): Some(fd) or
/// Some(error), None when it has none (then it is re-armed). Tried
/// whenever TAS has no connection (one non-blocking system call), so a
/// process that took the listener over at a fork, whatever the mark said
/// then, finds the kernel's connections too.
///
/// # Safety
///
/// As for libc's `accept4`: unless `addr` is null, `len` null or valid for
/// reads and writes and `addr` valid for writes of `*len` bytes.
pub(super) unsafe fn accept(
    s: &mut Sock,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> Option<Res<c_int>> {
    if s.klisten < 0 {
        return None;
    }
    // SAFETY: addr/len as the caller passed them (contract); klisten is the
    // shim's own non-blocking listener.
    let fd = unsafe { real::accept4::get()(s.klisten, addr, len, flags) };
    if fd >= 0 {
        let g = global();
        if g.fd(fd) != 0 {
            g.set_fd(fd, 0);
        }
        return Some(Ok(fd));
    }
    let e = sys::errno();
    if e == libc::EAGAIN || e == libc::EWOULDBLOCK {
        s.kready = false;
        let mut rearmed = false;
        if let Some(en) = KL.lock().iter_mut().find(|en| en.fd == s.klisten) {
            rearmed = !en.armed;
            en.armed = true;
        }
        // The reactor polls it again (a system call only when it was not).
        if rearmed {
            crate::reactor::wake();
        }
        return None;
    }
    // Linux passes these on from accept (ECONNABORTED, EMFILE, ENOBUFS, ...).
    Some(Err(e))
}

/// Closes the kernel listener `fd` (its socket is gone).
pub(super) fn forget(fd: c_int) {
    KL.lock().retain(|e| e.fd != fd);
    global().set_fd(fd, 0);
    r_close(fd);
}
