//! epoll / poll / select. The kernel does the real work (a TAS socket's fd
//! is a Unix socket whose readiness the shim drives); what the shim adds is
//! the spin phase: when the set contains TAS sockets, poll the contexts for
//! a short while before blocking, so a reply that arrives within
//! microseconds is seen without two thread wake-ups.

use crate::state::{self, spin_wait, T_EPOLL, T_SOCK};
use crate::sys::{self, errno, monotonic_ns, set_errno};
use libc::c_int;

/// The result convention inside: >= 0 a count, < 0 a negated errno.
fn capture(r: c_int) -> c_int {
    if r < 0 {
        -errno().max(1)
    } else {
        r
    }
}

fn release(r: c_int) -> c_int {
    if r < 0 {
        set_errno(-r);
        -1
    } else {
        r
    }
}

/// Shared protocol: a zero-timeout check, then spinning, then a blocking
/// call with what is left of the timeout. `call(ms)`: ms < 0 = forever.
fn wait(timeout_ms: i64, mut call: impl FnMut(i64) -> c_int) -> c_int {
    let _e = sys::Enter::new();
    let r = capture(call(0));
    if r != 0 || timeout_ms == 0 {
        return release(r);
    }
    let start = monotonic_ns();
    let limit = if timeout_ms < 0 {
        u64::MAX
    } else {
        timeout_ms as u64 * 1_000_000
    };
    if let Some(r) = spin_wait(limit, || capture(call(0))) {
        return release(r);
    }
    let left = if timeout_ms < 0 {
        -1
    } else {
        let used = ((monotonic_ns() - start) / 1_000_000) as i64;
        let left = timeout_ms - used;
        if left <= 0 {
            return 0;
        }
        left
    };
    let _l = sys::Leave::new();
    call(left)
}

fn wants_spin_epoll(epfd: c_int) -> bool {
    match state::try_global() {
        Some(g) => g.fd(epfd) == T_EPOLL && g.has_live_ctx(),
        None => false,
    }
}

fn any_tas(fds: &[libc::pollfd]) -> bool {
    let Some(g) = state::try_global() else {
        return false;
    };
    fds.iter().any(|p| g.fd(p.fd) & T_SOCK != 0) && g.has_live_ctx()
}

pub unsafe fn epoll_pwait(
    epfd: c_int,
    ev: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const libc::sigset_t,
) -> c_int {
    let f = sys::real::epoll_pwait::get();
    if sys::in_shim() || !wants_spin_epoll(epfd) {
        return f(epfd, ev, max, timeout, mask);
    }
    wait(timeout as i64, |t| f(epfd, ev, max, t as c_int, mask))
}

pub unsafe fn epoll_wait(
    epfd: c_int,
    ev: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    let f = sys::real::epoll_wait::get();
    if sys::in_shim() || !wants_spin_epoll(epfd) {
        return f(epfd, ev, max, timeout);
    }
    wait(timeout as i64, |t| f(epfd, ev, max, t as c_int))
}

fn ts_ms(ts: *const libc::timespec) -> i64 {
    if ts.is_null() {
        return -1;
    }
    // SAFETY: the caller passed a valid timespec.
    let t = unsafe { *ts };
    if t.tv_sec < 0 || t.tv_nsec < 0 {
        return -2;
    }
    (t.tv_sec as i64)
        .saturating_mul(1000)
        .saturating_add((t.tv_nsec as i64 + 999_999) / 1_000_000)
}

fn ms_ts(ms: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    }
}

pub unsafe fn epoll_pwait2(
    epfd: c_int,
    ev: *mut libc::epoll_event,
    max: c_int,
    ts: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    let f = sys::real::epoll_pwait2::get();
    let ms = ts_ms(ts);
    if sys::in_shim() || !wants_spin_epoll(epfd) || ms < -1 {
        return f(epfd, ev, max, ts, mask);
    }
    wait(ms, |t| {
        if t < 0 {
            f(epfd, ev, max, std::ptr::null(), mask)
        } else {
            let x = ms_ts(t);
            f(epfd, ev, max, &x, mask)
        }
    })
}

pub unsafe fn poll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: c_int) -> c_int {
    let f = sys::real::poll::get();
    if sys::in_shim()
        || fds.is_null()
        || n == 0
        || n > 1 << 20
        || !any_tas(std::slice::from_raw_parts(fds, n as usize))
    {
        return f(fds, n, timeout);
    }
    wait(timeout as i64, |t| f(fds, n, t as c_int))
}

pub unsafe fn ppoll(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    ts: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    let f = sys::real::ppoll::get();
    let ms = ts_ms(ts);
    if sys::in_shim()
        || fds.is_null()
        || n == 0
        || n > 1 << 20
        || ms < -1
        || !any_tas(std::slice::from_raw_parts(fds, n as usize))
    {
        return f(fds, n, ts, mask);
    }
    wait(ms, |t| {
        if t < 0 {
            f(fds, n, std::ptr::null(), mask)
        } else {
            let x = ms_ts(t);
            f(fds, n, &x, mask)
        }
    })
}

unsafe fn sets_have_tas(n: c_int, sets: [*mut libc::fd_set; 3]) -> bool {
    let Some(g) = state::try_global() else {
        return false;
    };
    if !g.has_live_ctx() {
        return false;
    }
    let n = n.clamp(0, libc::FD_SETSIZE as c_int);
    for set in sets {
        if set.is_null() {
            continue;
        }
        for fd in 0..n {
            if libc::FD_ISSET(fd, set) && g.fd(fd) & T_SOCK != 0 {
                return true;
            }
        }
    }
    false
}

unsafe fn copy_set(p: *mut libc::fd_set) -> Option<libc::fd_set> {
    if p.is_null() {
        None
    } else {
        Some(*p)
    }
}

unsafe fn restore(p: *mut libc::fd_set, v: &Option<libc::fd_set>) {
    if let Some(v) = v {
        *p = *v;
    }
}

pub unsafe fn select(
    n: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    tv: *mut libc::timeval,
) -> c_int {
    let f = sys::real::select::get();
    if sys::in_shim() || n <= 0 || !sets_have_tas(n, [r, w, e]) {
        return f(n, r, w, e, tv);
    }
    if !tv.is_null() && ((*tv).tv_sec < 0 || (*tv).tv_usec < 0) {
        return f(n, r, w, e, tv);
    }
    let ms = if tv.is_null() {
        -1
    } else {
        (*tv).tv_sec as i64 * 1000 + ((*tv).tv_usec as i64 + 999) / 1000
    };
    let (cr, cw, ce) = (copy_set(r), copy_set(w), copy_set(e));
    let start = monotonic_ns();
    let res = wait(ms, |t| {
        restore(r, &cr);
        restore(w, &cw);
        restore(e, &ce);
        if t < 0 {
            f(n, r, w, e, std::ptr::null_mut())
        } else {
            let mut x = libc::timeval {
                tv_sec: (t / 1000) as libc::time_t,
                tv_usec: ((t % 1000) * 1000) as libc::suseconds_t,
            };
            f(n, r, w, e, &mut x)
        }
    });
    if res == 0 {
        // Timed out: every set comes back empty.
        for p in [r, w, e] {
            if !p.is_null() {
                libc::FD_ZERO(p);
            }
        }
    }
    if !tv.is_null() {
        // Linux reports the time left.
        let used_us = ((monotonic_ns() - start) / 1000) as i64;
        let total_us = (*tv).tv_sec as i64 * 1_000_000 + (*tv).tv_usec as i64;
        let left = (total_us - used_us).max(0);
        (*tv).tv_sec = (left / 1_000_000) as libc::time_t;
        (*tv).tv_usec = (left % 1_000_000) as libc::suseconds_t;
    }
    res
}

pub unsafe fn pselect(
    n: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    ts: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    let f = sys::real::pselect::get();
    let ms = ts_ms(ts);
    if sys::in_shim() || n <= 0 || ms < -1 || !sets_have_tas(n, [r, w, e]) {
        return f(n, r, w, e, ts, mask);
    }
    let (cr, cw, ce) = (copy_set(r), copy_set(w), copy_set(e));
    let res = wait(ms, |t| {
        restore(r, &cr);
        restore(w, &cw);
        restore(e, &ce);
        if t < 0 {
            f(n, r, w, e, std::ptr::null(), mask)
        } else {
            let x = ms_ts(t);
            f(n, r, w, e, &x, mask)
        }
    });
    if res == 0 {
        for p in [r, w, e] {
            if !p.is_null() {
                libc::FD_ZERO(p);
            }
        }
    }
    res
}
