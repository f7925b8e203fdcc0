//! The Unix socket pair behind a TAS socket's fd numbers: creating one
//! (`socket()`, and each accepted connection), renewing it after a failed
//! connect, and putting a kernel TCP socket under the same numbers when a
//! socket leaves TAS (loopback and kernel-owned addresses).

use super::ports::unregister_port;
use crate::ctx::{my_ctx, Ctx, Inner};
use crate::fdtab::{encode, high_fd_base, T_INTERNAL};
use crate::global::global;
use crate::opts;
use crate::readiness::Sig;
use crate::sock::{Bsd, Sock, St};
use crate::sys::{self, check, r_close, r_fcntl, real, Res};
use libc::c_int;
use std::sync::atomic::Ordering;

/// A Unix stream pair: (A for the app, B for us).
pub(crate) fn create_pair(nonblock: bool, cloexec: bool) -> Res<(c_int, c_int)> {
    let mut sv = [-1; 2];
    // SAFETY: `sv` is a live [c_int; 2], what socketpair writes.
    check(unsafe {
        real::socketpair::get()(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    })?;
    let (a, b) = (sv[0], sv[1]);
    if !cloexec {
        let _ = r_fcntl(a, libc::F_SETFD, 0);
    }
    if nonblock {
        let _ = r_fcntl(a, libc::F_SETFL, (libc::O_RDWR | libc::O_NONBLOCK) as usize);
    }
    let _ = r_fcntl(b, libc::F_SETFL, (libc::O_RDWR | libc::O_NONBLOCK) as usize);
    let _ = sys::r_setsockopt_int(a, libc::SOL_SOCKET, libc::SO_SNDBUF, 1);
    // Keep our end out of the app's way.
    let b = sys::move_high(b, high_fd_base());
    Ok((a, b))
}

pub(super) fn register(ctx: &'static Ctx, inner: &mut Inner, s: Sock) -> Res<c_int> {
    let g = global();
    let (a, b, sid) = (s.a, s.sig.b, s.id);
    if !g.fd_fits(a) || !g.fd_fits(b) {
        r_close(a);
        r_close(b);
        return Err(libc::EMFILE);
    }
    inner.socks.insert(sid, s);
    g.set_fd(b, T_INTERNAL);
    g.set_fd(a, encode(ctx.idx, sid));
    Ok(a)
}

/// `socket(AF_INET or AF_INET6, SOCK_STREAM, 0|IPPROTO_TCP)` (`v6`: the
/// latter, `ops::v6`): None when TAS is not available (the caller uses the
/// kernel).
pub fn socket(ty: c_int, v6: bool) -> Option<Res<c_int>> {
    let ctx = my_ctx()?;
    let nonblock = ty & libc::SOCK_NONBLOCK != 0;
    let cloexec = ty & libc::SOCK_CLOEXEC != 0;
    let (a, b) = match create_pair(nonblock, cloexec) {
        Ok(p) => p,
        Err(e) => return Some(Err(e)),
    };
    let sid = global().next_sid.fetch_add(1, Ordering::Relaxed);
    let mut s = Sock::new(sid, a, b, nonblock);
    s.v6 = v6;
    s.v6only = v6 && global().bindv6only;
    let mut inner = ctx.inner.lock();
    Some(register(ctx, &mut inner, s))
}

/// The kernel socket that takes `s`'s place: its shadow if it has one (the
/// options set there), else a new one of its family; the modelled options
/// applied, and an `AF_INET6` socket bound on TAS bound again to the same
/// address and port (`ops::v6`: it leaves TAS when it connects to an IPv6
/// address).
fn kernel_socket_for(s: &Sock) -> Res<c_int> {
    let fam = if s.v6 { libc::AF_INET6 } else { libc::AF_INET };
    let k = if s.shadow >= 0 {
        s.shadow
    } else {
        // SAFETY: socket takes no pointers.
        check(unsafe { real::socket::get()(fam, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?
    };
    let fail = |e: c_int| {
        if k != s.shadow {
            r_close(k);
        }
        Err(e)
    };
    opts::apply_to_kernel(k, &s.opts);
    if s.v6 {
        let _ = sys::r_setsockopt_int(k, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, s.v6only as c_int);
        if s.port_registered && s.local.1 != 0 {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: s.local.1.to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: super::v6::mapped(s.local.0),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: `sin6` is a live local sockaddr_in6 of the length
            // given; k is the shim's own socket.
            let r = unsafe {
                real::bind::get()(
                    k,
                    &sin6 as *const libc::sockaddr_in6 as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return fail(sys::errno());
            }
        }
    }
    let fl = libc::O_RDWR | if s.nonblock { libc::O_NONBLOCK } else { 0 };
    let _ = r_fcntl(k, libc::F_SETFL, fl as usize);
    Ok(k)
}

/// Puts `k` under every fd number of `s` (keeping each number's
/// close-on-exec flag) and restores epoll registrations.
fn replace_file(s: &Sock, k: c_int) -> Res<()> {
    for &fd in &s.fds {
        let cloexec = r_fcntl(fd, libc::F_GETFD, 0)
            .map(|f| f & libc::FD_CLOEXEC != 0)
            .unwrap_or(false);
        // SAFETY: dup3 takes no pointers; fd is a number of this socket,
        // which the shim manages.
        check(unsafe { real::dup3::get()(k, fd, if cloexec { libc::O_CLOEXEC } else { 0 }) })?;
    }
    for (epfd, fd, ev) in &s.epoll_regs {
        let mut ev = *ev;
        // SAFETY: `ev` is a live local copy of the registration, which the
        // kernel only reads.
        unsafe { real::epoll_ctl::get()(*epfd, libc::EPOLL_CTL_ADD, *fd, &mut ev) };
    }
    Ok(())
}

/// A listener taken over from another process (after a fork) gets a
/// readiness pair of its own under the same fd numbers: the inherited pair
/// is one file shared by every process that holds the listener, so a byte
/// one process writes for a connection announced to it would wake the
/// others (with `EPOLLEXCLUSIVE`, instead of it), and a process that found
/// nothing to accept would drain the byte another one needs. Registrations
/// the parent made are its own and are not carried over; this process's
/// come after the takeover.
pub fn own_pair(s: &mut Sock) -> Res<()> {
    s.epoll_regs.clear();
    swap_pair(s)
}

/// Puts a new readiness pair under `s`'s fd numbers (its epoll
/// registrations carried over) and closes this process's copy of the old
/// `B` end; nothing signalled yet.
fn swap_pair(s: &mut Sock) -> Res<()> {
    let g = global();
    let (a, b) = create_pair(s.nonblock, true)?;
    if let Err(e) = replace_file(s, a) {
        r_close(a);
        r_close(b);
        return Err(e);
    }
    r_close(a);
    if s.sig.b >= 0 {
        g.set_fd(s.sig.b, 0);
        r_close(s.sig.b);
    }
    s.sig = Sig::new(b);
    g.set_fd(b, T_INTERNAL);
    Ok(())
}

/// Turns TAS socket `sid` into a kernel TCP socket with the same fd
/// numbers, options and epoll registrations (for loopback and kernel-owned
/// addresses).
pub(crate) fn to_kernel(ctx: usize, inner: &mut Inner, sid: u64) -> Res<()> {
    let g = global();
    let s = inner.socks.get(&sid).ok_or(libc::EBADF)?;
    let k = kernel_socket_for(s)?;
    if let Err(e) = replace_file(s, k) {
        if k != s.shadow {
            r_close(k);
        }
        return Err(e);
    }
    let s = inner.socks.remove(&sid).expect("present");
    r_close(k);
    for &fd in &s.fds {
        g.set_fd(fd, 0);
    }
    if s.sig.b >= 0 {
        g.set_fd(s.sig.b, 0);
        r_close(s.sig.b);
    }
    if s.shadow >= 0 {
        g.set_fd(s.shadow, 0);
    }
    unregister_port(ctx, &s);
    Ok(())
}

/// After a failed connect the pair is spent (B closed): a new attempt gets
/// a new pair under the same numbers.
pub(super) fn renew_pair(inner: &mut Inner, sid: u64) -> Res<()> {
    let s = inner.socks.get_mut(&sid).ok_or(libc::EBADF)?;
    swap_pair(s)?;
    s.st = St::Fresh;
    s.bsd = Bsd::Unconnected;
    s.so_error = 0;
    s.err_taken = false;
    s.shut_rd = false;
    s.shut_wr = false;
    s.disconnected = false;
    Ok(())
}
