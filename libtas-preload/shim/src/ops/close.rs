//! shutdown and close. A socket goes (TAS side: close, abort or
//! unlisten, and its port) when its last fd number is closed; `SO_LINGER`
//! shapes how.

use super::orphan;
use super::ports::{set_port_listening, unregister_port};
use crate::ctx::{Ctx, Inner};
use crate::global::global;
use crate::sock::{Bsd, Sock, St};
use crate::sys::{self, check, r_close, real, Res};
use libc::c_int;
use std::sync::atomic::Ordering;

pub fn shutdown(ctx: &'static Ctx, sid: u64, how: c_int) -> Res<()> {
    if !(0..=2).contains(&how) {
        return Err(libc::EINVAL);
    }
    if orphan(ctx) {
        return Err(libc::ENOTCONN);
    }
    let mut inner = ctx.inner.lock();
    let rd = how == libc::SHUT_RD || how == libc::SHUT_RDWR;
    let wr = how == libc::SHUT_WR || how == libc::SHUT_RDWR;
    let st = inner.socks.get(&sid).ok_or(libc::EBADF)?.st;
    let closed = match st {
        St::Connected(c) => match inner.tas.conn(c) {
            Some(cn) => cn.error().is_some() || (cn.rx_fin() && cn.fin_acked()),
            None => true,
        },
        _ => false,
    };
    let r = match st {
        // Reset, or both sides closed: Linux's socket is in CLOSE.
        St::Connected(_) if closed => Err(libc::ENOTCONN),
        St::Connected(c) => {
            let s = inner.socks.get_mut(&sid).ok_or(libc::EBADF)?;
            if rd {
                s.shut_rd = true;
            }
            let send_fin = wr && !s.shut_wr && !s.err_taken;
            if wr {
                s.shut_wr = true;
            }
            if s.bsd == Bsd::Connecting {
                s.bsd = Bsd::Connected;
            }
            if send_fin {
                let _ = inner.tas.shutdown_write(c);
            }
            Ok(())
        }
        St::Listening(l) => {
            if rd {
                let _ = inner.tas.unlisten(l);
                inner.by_listener.remove(&l);
                let s = inner.socks.get_mut(&sid).ok_or(libc::EBADF)?;
                s.st = St::Fresh;
                if s.klisten >= 0 {
                    super::wild::forget(std::mem::replace(&mut s.klisten, -1));
                    s.kready = false;
                }
                set_port_listening(ctx.idx, s, false);
            }
            Ok(())
        }
        St::Connecting(req) => {
            // Linux disconnects a connecting socket.
            inner.connecting.remove(&req);
            inner.zombies.push(req);
            ctx.tick.store(true, Ordering::Relaxed);
            let s = inner.socks.get_mut(&sid).ok_or(libc::EBADF)?;
            s.st = St::Fresh;
            s.bsd = Bsd::Unconnected;
            Ok(())
        }
        St::Fresh | St::Failed => Err(libc::ENOTCONN),
    };
    inner.sync(sid);
    inner.after();
    r
}

/// Closes fd number `fd` of socket `sid`; the socket itself goes when its
/// last number does.
pub fn close(ctx: &'static Ctx, sid: u64, fd: c_int) -> Res<()> {
    let g = global();
    let mut inner = ctx.inner.lock();
    let Some(s) = inner.socks.get_mut(&sid) else {
        g.set_fd(fd, 0);
        drop(inner);
        // SAFETY: close takes no pointers; fd is the app's, closed as it
        // asked.
        return check(unsafe { real::close::get()(fd) }).map(|_| ());
    };
    s.fds.retain(|&x| x != fd);
    s.epoll_regs.retain(|r| r.1 != fd);
    g.set_fd(fd, 0);
    if let Some(&other) = s.fds.first() {
        s.a = other;
        drop(inner);
        // SAFETY: close takes no pointers; fd is the app's, closed as it
        // asked.
        return check(unsafe { real::close::get()(fd) }).map(|_| ());
    }
    let s = inner.socks.remove(&sid).expect("present");
    if !orphan(ctx) {
        // A socket other processes may hold: let go of our reference; the
        // last holder closes it the usual way (fork.rs).
        let mine = match s.st {
            St::Connected(c) if s.shared => inner.tas.drop_conn(c).unwrap_or(false),
            St::Listening(l) if s.shared => inner.tas.drop_listener(l).unwrap_or(false),
            _ => true,
        };
        if mine {
            release(ctx, &mut inner, &s);
        } else {
            unregister_port(ctx.idx, &s);
            if let St::Connected(c) = s.st {
                inner.by_flow.remove(&c);
            }
            if let St::Listening(l) = s.st {
                inner.by_listener.remove(&l);
            }
        }
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
    if s.klisten >= 0 {
        super::wild::forget(s.klisten);
    }
    let linger_wait = match (s.st, s.opts.linger) {
        (St::Connected(c), Some(l)) if l.l_onoff != 0 && l.l_linger > 0 && !s.nonblock => {
            Some((c, l.l_linger))
        }
        _ => None,
    };
    drop(inner);
    if let Some((c, secs)) = linger_wait {
        linger(ctx, c, secs);
    }
    // SAFETY: close takes no pointers; fd is the app's, closed as it asked.
    check(unsafe { real::close::get()(fd) }).map(|_| ())
}

/// TAS-level teardown of a socket that no fd refers to any more.
pub(super) fn release(ctx: &'static Ctx, inner: &mut Inner, s: &Sock) {
    unregister_port(ctx.idx, s);
    match s.st {
        St::Fresh | St::Failed => {}
        St::Listening(l) => {
            let _ = inner.tas.unlisten(l);
            inner.by_listener.remove(&l);
        }
        St::Connecting(req) => {
            inner.connecting.remove(&req);
            inner.zombies.push(req);
            ctx.tick.store(true, Ordering::Relaxed);
        }
        St::Connected(c) => {
            inner.by_flow.remove(&c);
            let (unread, err) = match inner.tas.conn(c) {
                Some(cn) => (cn.rx_available() > 0, cn.error().is_some()),
                None => (false, true),
            };
            let abort = matches!(s.opts.linger, Some(l) if l.l_onoff != 0 && l.l_linger == 0);
            // Linux resets instead of closing when unread data is dropped.
            if (abort || unread) && !err {
                let _ = inner.tas.abort(c);
            } else {
                let _ = inner.tas.close(c);
            }
        }
    }
}

/// SO_LINGER with a timeout: wait until our FIN is acknowledged.
fn linger(ctx: &'static Ctx, c: tas::ConnId, secs: c_int) {
    let end = sys::monotonic_ns() + secs as u64 * 1_000_000_000;
    while sys::monotonic_ns() < end {
        {
            let mut inner = ctx.inner.lock();
            inner.process();
            match inner.tas.conn(c) {
                Some(cn) if !cn.fin_acked() && cn.error().is_none() => {}
                _ => return,
            }
        }
        // SAFETY: usleep takes no pointers.
        unsafe { libc::usleep(1000) };
    }
}
