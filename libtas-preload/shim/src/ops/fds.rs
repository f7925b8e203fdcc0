//! Descriptor bookkeeping for TAS sockets: more fd numbers for one socket
//! (dup, `F_DUPFD`), a number being replaced (dup2/dup3 onto it), the
//! `O_NONBLOCK` flag, epoll registrations (kept to restore them when a
//! socket moves to the kernel), and the queue-size ioctls.

use super::close::release;
use super::orphan;
use crate::ctx::Ctx;
use crate::fdtab::{encode, kind, Kind, T_EPOLL, T_INTERNAL};
use crate::global::global;
use crate::sock::St;
use crate::sys::{r_close, r_fcntl, Res};
use libc::c_int;

/// Records that `newfd` now also refers to socket `sid`.
pub fn add_fd(ctx: &'static Ctx, sid: u64, newfd: c_int) -> Res<c_int> {
    let g = global();
    if !g.fd_fits(newfd) {
        r_close(newfd);
        return Err(libc::EMFILE);
    }
    let mut inner = ctx.inner.lock();
    match inner.socks.get_mut(&sid) {
        Some(s) => {
            s.fds.push(newfd);
            g.set_fd(newfd, encode(ctx.idx, sid));
            if s.virt.is_some() {
                // Another number may be waited on through the pair.
                crate::vready::demote(s);
            }
            // (A lazy socket is not lazy with two numbers.)
            inner.sync(sid);
            Ok(newfd)
        }
        None => Ok(newfd),
    }
}

/// Before `newfd` is replaced by dup2/dup3: forget what it was. If it was
/// the last number of a TAS socket, that socket is closed (TAS side); the
/// number itself is closed by the dup. For a shim-internal number, the
/// shim's descriptor is moved elsewhere first.
pub fn before_replace(newfd: c_int) -> Res<()> {
    match kind(newfd) {
        Kind::Kernel => Ok(()),
        Kind::Internal => relocate_internal(newfd),
        Kind::Sock(ctx, sid) => {
            let g = global();
            let mut inner = ctx.inner.lock();
            let Some(s) = inner.socks.get_mut(&sid) else {
                g.set_fd(newfd, 0);
                return Ok(());
            };
            s.fds.retain(|&x| x != newfd);
            s.epoll_regs.retain(|r| r.1 != newfd);
            g.set_fd(newfd, 0);
            if let Some(&o) = s.fds.first() {
                s.a = o;
                return Ok(());
            }
            let s = inner.socks.remove(&sid).expect("present");
            if !orphan(ctx) {
                release(ctx, &mut inner, &s);
                inner.after();
            }
            if s.sig.b >= 0 {
                g.set_fd(s.sig.b, 0);
                r_close(s.sig.b);
            }
            if s.shadow >= 0 {
                g.set_fd(s.shadow, 0);
                r_close(s.shadow);
            }
            Ok(())
        }
    }
}

/// The app wants number `fd`, which is one of our B ends or shadow sockets:
/// move ours. The service connection's own fds cannot move (EBUSY).
fn relocate_internal(fd: c_int) -> Res<()> {
    let g = global();
    for c in (0..MAX_SCAN).filter_map(|i| g.ctx(i)) {
        let mut inner = c.inner.lock();
        for s in inner.socks.values_mut() {
            if s.sig.b == fd || s.shadow == fd {
                let n = r_fcntl(fd, libc::F_DUPFD_CLOEXEC, 0)?;
                if !g.fd_fits(n) {
                    r_close(n);
                    return Err(libc::EMFILE);
                }
                g.set_fd(n, T_INTERNAL);
                g.set_fd(fd, 0);
                if s.sig.b == fd {
                    s.sig.b = n;
                } else {
                    s.shadow = n;
                }
                r_close(fd);
                return Ok(());
            }
        }
    }
    Err(libc::EBUSY)
}

const MAX_SCAN: usize = crate::ctx::MAX_CTX;

pub fn set_nonblock(ctx: &'static Ctx, sid: u64, on: bool) {
    let mut inner = ctx.inner.lock();
    if let Some(s) = inner.socks.get_mut(&sid) {
        s.nonblock = on;
    }
}

/// Records (or forgets) an epoll registration of TAS socket number `fd`
/// that the kernel has just accepted.
///
/// # Safety
///
/// For `EPOLL_CTL_ADD` and `EPOLL_CTL_MOD`, `ev` must be null or valid for
/// reads of an `epoll_event` (it is when the kernel accepted the call).
pub unsafe fn epoll_track(epfd: c_int, op: c_int, fd: c_int, ev: *const libc::epoll_event) {
    let Kind::Sock(ctx, sid) = kind(fd) else {
        return;
    };
    let g = global();
    let cur = g.fd(epfd);
    if cur == 0 {
        g.set_fd(epfd, T_EPOLL);
    }
    let mut inner = ctx.inner.lock();
    let Some(s) = inner.socks.get_mut(&sid) else {
        return;
    };
    s.epoll_regs.retain(|r| !(r.0 == epfd && r.1 == fd));
    let interest = op == libc::EPOLL_CTL_ADD && !s.interest;
    if (op == libc::EPOLL_CTL_ADD || op == libc::EPOLL_CTL_MOD) && !ev.is_null() {
        // SAFETY: op is ADD or MOD and ev is non-null, so readable
        // (contract).
        s.epoll_regs.push((epfd, fd, unsafe { *ev }));
    }
    crate::vready::track(s, epfd, op);
    inner.sync(sid);
    if interest {
        drop(inner);
        crate::fork::note_interest(ctx, sid);
    }
}

/// FIONREAD / SIOCOUTQ.
pub fn ioctl_queue(ctx: &'static Ctx, sid: u64, outq: bool) -> Res<c_int> {
    let mut inner = ctx.inner.lock();
    inner.tas.poll_events();
    let s = inner.socks.get(&sid).ok_or(libc::EBADF)?;
    let r = match s.st {
        St::Listening(_) => Err(libc::EINVAL),
        St::Connected(c) => match inner.tas.conn(c) {
            Some(cn) if outq => Ok((cn.tx_len() - cn.tx_free()) as c_int),
            Some(cn) => Ok(cn.rx_available() as c_int),
            None => Ok(0),
        },
        _ => Ok(0),
    };
    inner.after();
    r
}
