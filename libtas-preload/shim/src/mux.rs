//! epoll / poll / select. The kernel does the real work (a TAS socket's fd
//! is a Unix socket whose readiness the shim drives). What the shim adds
//! when a wait involves TAS sockets:
//!
//! 1. a short spin polling the contexts (a reply that arrives within
//!    microseconds is seen without any thread wake-up);
//! 2. then a blocking wait that also contains the contexts' eventfds and
//!    control sockets, so the service wakes this very thread; news is
//!    taken, and the wait resumes if nothing of the caller's became ready.
//!    For epoll the shim's fds are registered in the caller's epoll set
//!    with a tag in `data` and filtered out of the results (a context's
//!    eventfd with `EPOLLEXCLUSIVE`, so that one event wakes one of the
//!    threads blocked on their own sets, not all: [`ensure_registered`],
//!    [`requeue_last`]); `select` is carried out with `poll` (the shim's
//!    fds are above `FD_SETSIZE`). A `poll` or `select` thread registers
//!    as a blocking call does ([`Reg::Solo`], `solo.rs`): only one thread
//!    per context (its drainer) has that context's fds in its wait, and
//!    takes the news for the others, which wake through their own TAS
//!    sockets' pairs.

use crate::fdtab::{T_EPOLL, T_SOCK};
use crate::global::{global, try_global};
use crate::solo::{Solo, WAKE};
use crate::sys::{self, errno, monotonic_ns, set_errno};
use crate::wait::{
    ctl_fds, handle_our_fd, spin_wait, take_news, Blocked, OurFd, EPOLL_TAG, EPOLL_TAG_MASK,
};
use libc::c_int;
use std::sync::atomic::Ordering;

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

/// The shared protocol. `now(ours)`: the caller's wait with a zero
/// timeout, plus `ours` (the contexts' control sockets) when not empty;
/// `block(ms, ours)`: the caller's wait plus our fds, `ms` < 0 = forever
/// (it must not sleep while a socket answered in user space is ready);
/// both return (the caller's result, which of ours fired). `recheck()`:
/// after a `block` that only our fds ended and whose news was taken, the
/// caller's result from what that `block` reported and what is ready in
/// user space now — no system call.
///
/// Every call first takes in the contexts' pending news (the notification
/// rings, and control messages through the zero-timeout check), so what
/// the fast path posted is seen at once even when another fd of the
/// caller is always ready (issue 14: iperf3 loops on `select` with its
/// writable data socket in the set) and with a zero timeout. A wait that
/// cannot spin (`SpinCtl::may_spin`) skips the zero-timeout check and
/// blocks at once: a server that always waits for its next request (redis
/// with 50 clients) then makes one system call per wait, not three.
fn wait(
    timeout_ms: i64,
    how: Reg,
    mut now: impl FnMut(&[OurFd]) -> (c_int, Vec<(usize, bool)>),
    block: impl FnMut(i64, &[OurFd]) -> (c_int, Vec<(usize, bool)>),
    recheck: impl FnMut() -> c_int,
) -> c_int {
    let _e = sys::Enter::new();
    take_news();
    if sys::restricted() {
        return restricted_wait(timeout_ms, now, block);
    }
    if timeout_ms != 0 && !global().spin.may_spin() {
        return wait_idle(monotonic_ns(), timeout_ms, how, &mut now, block, recheck);
    }
    let ctl = ctl_fds();
    let (r, fired) = now(&ctl);
    let mut r = capture(r);
    for &(c, is_ctl) in &fired {
        handle_our_fd(c, is_ctl);
    }
    if r == 0 && !fired.is_empty() {
        r = now_again(&mut now);
    }
    if r != 0 || timeout_ms == 0 {
        return release(r);
    }
    let start = monotonic_ns();
    let r = wait_idle(start, timeout_ms, how, &mut now, block, recheck);
    // The gap this wait saw, for the spin controller: until something was
    // ready, or at least the timeout (a spin that long would not have
    // bridged it; without these a thread whose waits time out kept the
    // start spin, 50 µs a wait).
    if r >= 0 {
        global()
            .spin
            .record(start, monotonic_ns(), crate::spin::daemon_goal);
    }
    r
}

/// How a thread that blocks in [`wait`] counts as blocked on the contexts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reg {
    /// Every context's eventfd and control socket in its wait
    /// (`wait::Blocked`): an epoll set, which holds them itself, with
    /// `EPOLLEXCLUSIVE`.
    Shared,
    /// Registered as a blocking call on one socket is (`solo.rs`): only the
    /// context's drainer has the context's fds in its wait; the others
    /// wake through their own sockets' pairs (`poll`, `select`: no
    /// thundering herd of threads that each wait on their own fds).
    Solo,
}

/// The part of [`wait`] after the first check found nothing: spin, then
/// block until something is ready or `timeout_ms` (from `start`) is over.
fn wait_idle(
    start: u64,
    timeout_ms: i64,
    how: Reg,
    mut now: impl FnMut(&[OurFd]) -> (c_int, Vec<(usize, bool)>),
    mut block: impl FnMut(i64, &[OurFd]) -> (c_int, Vec<(usize, bool)>),
    mut recheck: impl FnMut() -> c_int,
) -> c_int {
    let limit = if timeout_ms < 0 {
        u64::MAX
    } else {
        timeout_ms as u64 * 1_000_000
    };
    let _in_wait = global().spin.enter_wait();
    // A handler of the program's that runs from here on ends the wait
    // (`sys::SigScope`): in the spin, before a round, between rounds.
    let _scope = sys::SigScope::new();
    if let Some(r) = spin_wait(limit, || now_again(&mut now)) {
        return release(r);
    }
    // Registered once for the whole wait (a round woken by news for
    // others must not hand the drainer's role on); None: the shared wait,
    // entered for each round (also the fallback when a thread cannot
    // register: `Solo::enter`).
    let solo = match how {
        Reg::Solo => {
            let g = global();
            let before = g.ready_gen.load(Ordering::Acquire);
            let solo = Solo::enter();
            if solo.is_some() && g.ready_gen.load(Ordering::Acquire) != before {
                let r = now_again(&mut now);
                if r != 0 {
                    return release(r);
                }
            }
            solo
        }
        Reg::Shared => None,
    };
    loop {
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
        let b = solo.is_none().then(Blocked::enter);
        if b.as_ref().is_some_and(|b| b.changed) {
            let r = now_again(&mut now);
            if r != 0 {
                return release(r);
            }
        }
        let ours = match (&solo, &b) {
            (Some(s), _) => s.fds(),
            (None, Some(b)) => b.fds(),
            (None, None) => Vec::new(),
        };
        let (r, fired) = {
            let _l = sys::Leave::new();
            let (r, fired) = block(left, &ours);
            (capture(r), fired)
        };
        drop(b);
        if r == 0 && !fired.is_empty() {
            // The call goes on: a signal from here on must end it.
            sys::hold_signals();
        }
        let pairs = global().pair_gen.load(Ordering::Acquire);
        for &(c, ctl) in &fired {
            match &solo {
                Some(s) if c == WAKE => s.clear_wake(),
                _ => handle_our_fd(c, ctl),
            }
        }
        if r != 0 {
            return release(r);
        }
        if fired.is_empty() {
            return 0;
        }
        // What the news made ready: in user space only, unless it changed
        // what a pair says (an error, a hang-up, write space: then the
        // kernel's view is needed for the whole answer, as Linux gives it).
        let r = if global().pair_gen.load(Ordering::Acquire) == pairs {
            capture(recheck())
        } else {
            now_again(&mut now)
        };
        if r != 0 {
            return release(r);
        }
    }
}

/// [`wait`] in a thread under a seccomp filter (sshd's pre-authentication
/// child: `RLIMIT_NOFILE` 1, so a `poll` of more fds than the caller's
/// fails with `EINVAL`, and no `recv` on the control sockets): the
/// caller's fds only. The thread does not count as blocked on the
/// contexts, so the reactor watches them and brings the sockets' readiness
/// up to date, which wakes this wait in the kernel.
fn restricted_wait(
    timeout_ms: i64,
    mut now: impl FnMut(&[OurFd]) -> (c_int, Vec<(usize, bool)>),
    mut block: impl FnMut(i64, &[OurFd]) -> (c_int, Vec<(usize, bool)>),
) -> c_int {
    let r = capture(now(&[]).0);
    if r != 0 || timeout_ms == 0 {
        return release(r);
    }
    let start = monotonic_ns();
    let limit = if timeout_ms < 0 {
        u64::MAX
    } else {
        timeout_ms as u64 * 1_000_000
    };
    let _in_wait = global().spin.enter_wait();
    // A handler that runs in the spin ends the wait (`sys::SigScope`).
    let _scope = sys::SigScope::new();
    if let Some(r) = spin_wait(limit, || capture(now(&[]).0)) {
        return release(r);
    }
    let left = if timeout_ms < 0 {
        -1
    } else {
        (timeout_ms - ((monotonic_ns() - start) / 1_000_000) as i64).max(0)
    };
    let r = {
        let _l = sys::Leave::new();
        capture(block(left, &[]).0)
    };
    take_news();
    release(r)
}

/// The zero-timeout check without the control sockets (news of ours that
/// shows up anyway, from an epoll set holding our fds, is taken).
fn now_again(now: &mut impl FnMut(&[OurFd]) -> (c_int, Vec<(usize, bool)>)) -> c_int {
    let (r, fired) = now(&[]);
    let r = capture(r);
    for &(c, ctl) in &fired {
        handle_our_fd(c, ctl);
    }
    r
}

fn epoll_has_tas(epfd: c_int) -> bool {
    match try_global() {
        Some(g) => g.fd(epfd) & T_EPOLL != 0 && g.fd(epfd) & T_SOCK == 0 && g.has_live_ctx(),
        None => false,
    }
}

/// While this process has listeners it said it does not accept on
/// (`fork.rs`), a wait that includes one means it does.
fn note_interest(fd: c_int) {
    let Some(g) = try_global() else { return };
    if g.quiet.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        return;
    }
    if let crate::fdtab::Kind::Sock(c, s) = crate::fdtab::kind(fd) {
        crate::fork::note_interest(c, s);
    }
}

/// A `poll`/`select` is about to include TAS socket `fd`: a virtual socket
/// (answered in its epoll set) hands readability to its pair for good; a
/// lazy one stays lazy, looked at in user space (`poll_block`), except in
/// a thread under a seccomp filter, whose wait holds the caller's fds only
/// and must find readiness on the pairs (`restricted_wait`).
fn demote_for_wait(fd: c_int) {
    if sys::restricted() {
        crate::vready::demote_fd(fd);
    } else {
        crate::vready::demote_virtual_fd(fd);
    }
}

fn any_tas(fds: &[libc::pollfd]) -> bool {
    let Some(g) = try_global() else {
        return false;
    };
    let mut any = false;
    for p in fds {
        let v = g.fd(p.fd);
        if v & T_SOCK != 0 {
            crate::fdtab::adopt_if_inherited(p.fd, v);
            note_interest(p.fd);
            demote_for_wait(p.fd);
            any = true;
        }
    }
    any && g.has_live_ctx()
}

/// Registers the contexts' fds in the caller's epoll set (once per
/// context; the set of registered contexts is kept in the fd table).
fn ensure_registered(epfd: c_int, ours: &[OurFd]) {
    let g = global();
    let mut v = g.fd(epfd);
    if v & T_EPOLL == 0 || v & T_SOCK != 0 {
        return;
    }
    for o in ours {
        let bit = 1u64 << (o.ctx * 2 + o.ctl as usize);
        if v & bit != 0 {
            continue;
        }
        let r = add_ours(epfd, o.fd, o.ctx, o.ctl);
        if r == 0 || errno() == libc::EEXIST {
            v |= bit;
        }
    }
    g.set_fd(epfd, v);
}

/// This set's thread was woken by a context's eventfd and found nothing of
/// its own: its registration goes to the end of the eventfd's wait queue,
/// so the next news wakes a set that may have something (the kernel wakes
/// the first set with a waiter). Only while another thread is blocked on
/// the context too (the caller still counts itself): alone, it is the one
/// woken wherever it stands.
fn requeue_last(epfd: c_int, fired: &[(usize, bool)]) {
    let g = global();
    for &(c, _) in fired {
        let Some(ctx) = g.ctx(c) else { continue };
        if ctx.blocked.load(Ordering::Relaxed) < 2 {
            continue;
        }
        // SAFETY: EPOLL_CTL_DEL reads no event (null is allowed); the fd
        // removed is the shim's own.
        let del = unsafe {
            sys::real::epoll_ctl::get()(epfd, libc::EPOLL_CTL_DEL, ctx.ev_fd, std::ptr::null_mut())
        };
        if del == 0 {
            add_ours(epfd, ctx.ev_fd, c, false);
        }
    }
}

/// Adds one of the shim's fds (context `ctx`'s eventfd, or its control
/// socket with `ctl`) to the caller's epoll set, tagged ([`EPOLL_TAG`]).
/// A context's eventfd wakes one blocked epoll set, not all of them
/// (`EPOLLEXCLUSIVE`: the kernel stops at the first set with a thread in
/// `epoll_wait`). That thread takes the context's news, which reaches the
/// other sets through their sockets' pairs or, for virtual sockets, their
/// sets' wake eventfds (`vready.rs`). The control socket (rare messages,
/// and a dead daemon's HUP that every set must see to drop it) wakes every
/// set. `epoll_ctl`'s result (errno set on failure).
fn add_ours(epfd: c_int, fd: c_int, ctx: usize, ctl: bool) -> c_int {
    let add = |events: u32| {
        let mut ev = libc::epoll_event {
            events,
            u64: EPOLL_TAG | (ctx as u64) << 1 | ctl as u64,
        };
        // SAFETY: `ev` is a live local epoll_event the kernel only reads;
        // `fd` is one of the shim's descriptors.
        unsafe { sys::real::epoll_ctl::get()(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) }
    };
    if ctl {
        return add(libc::EPOLLIN as u32);
    }
    let r = add((libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32);
    if r != 0 && errno() == libc::EINVAL {
        // A kernel before 4.5: every set wakes, as before.
        return add(libc::EPOLLIN as u32);
    }
    r
}

/// A context whose daemon hung up keeps its control socket readable
/// (HUP): take it out of this epoll set once its errors are delivered.
fn unregister_dead(epfd: c_int, fired: &[(usize, bool)]) {
    let g = global();
    for &(c, _) in fired {
        let Some(ctx) = g.ctx(c) else { continue };
        if !ctx.dead.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        for fd in [ctx.ev_fd, ctx.ctl_fd] {
            // SAFETY: EPOLL_CTL_DEL reads no event (null is allowed); the
            // fd removed is the shim's own.
            unsafe {
                sys::real::epoll_ctl::get()(epfd, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut())
            };
        }
    }
}

/// Removes our tagged events from `ev[..n]`; returns the caller's count and
/// the contexts that fired.
///
/// # Safety
///
/// When `n > 0`, `ev` must be valid for reads and writes of `n` events
/// (as after `epoll_wait` returned `n` into it).
unsafe fn filter_epoll(ev: *mut libc::epoll_event, n: c_int) -> (c_int, Vec<(usize, bool)>) {
    if n <= 0 {
        return (n, Vec::new());
    }
    // SAFETY: n > 0 and ev holds n events (contract above), not otherwise
    // borrowed while `s` lives.
    let s = unsafe { std::slice::from_raw_parts_mut(ev, n as usize) };
    let mut fired: Vec<(usize, bool)> = Vec::new();
    let mut k = 0;
    for i in 0..s.len() {
        let e = s[i];
        let data = e.u64;
        if data & EPOLL_TAG_MASK == EPOLL_TAG {
            note(
                &mut fired,
                ((data & 0xffff_ffff) >> 1) as usize,
                data & 1 != 0,
            );
        } else {
            s[k] = e;
            k += 1;
        }
    }
    (k as c_int, fired)
}

/// Records that context `c` fired (`ctl`: its control socket).
pub(crate) fn note(fired: &mut Vec<(usize, bool)>, c: usize, ctl: bool) {
    match fired.iter_mut().find(|f| f.0 == c) {
        Some(f) => f.1 |= ctl,
        None => fired.push((c, ctl)),
    }
}

/// `epoll_pwait` (and `epoll_wait`) on a set that may hold TAS sockets.
///
/// # Safety
///
/// As for libc's `epoll_pwait`: `ev` valid for writes of `max` events, `mask`
/// null or a valid signal set.
pub unsafe fn epoll_pwait(
    epfd: c_int,
    ev: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const libc::sigset_t,
) -> c_int {
    let f = sys::real::epoll_pwait::get();
    if sys::in_shim() || !epoll_has_tas(epfd) {
        // SAFETY: the caller's arguments, unchanged, under the same contract.
        return unsafe { f(epfd, ev, max, timeout, mask) };
    }
    // The set's virtual sockets (`vready.rs`): their readability is
    // added to what the kernel reports.
    let set = crate::vready::find(epfd);
    let user = |n: c_int| match &set {
        // SAFETY: ev holds max events (the caller's contract) and the
        // kernel wrote the first n.
        Some(s) if max > 0 => unsafe { crate::vready::collect(s, ev, n, max) },
        _ => n,
    };
    wait(
        timeout as i64,
        Reg::Shared,
        |ours| {
            // Our fds in the set report control messages in this check too.
            ensure_registered(epfd, ours);
            // SAFETY: the caller's arguments with a zero timeout.
            let r = unsafe { f(epfd, ev, max, 0, mask) };
            if r < 0 {
                return (r, Vec::new());
            }
            // SAFETY: the kernel has just written r events into ev.
            let (n, fired) = unsafe { filter_epoll(ev, r) };
            unregister_dead(epfd, &fired);
            (user(n), fired)
        },
        |t, ours| {
            ensure_registered(epfd, ours);
            // A thread that blocks counts as a waiter, so that a socket
            // queued by another thread meanwhile wakes it; one already
            // queued means no blocking at all.
            // A handler ran since the call began: `EINTR` (`sys::SigScope`).
            let held = match sys::before_sleep(t != 0) {
                Ok(h) => h,
                Err(e) => {
                    sys::set_errno(e);
                    return (-1, Vec::new());
                }
            };
            let t = match &set {
                Some(s) => {
                    s.waiting(true);
                    if s.has_ready() {
                        0
                    } else {
                        t
                    }
                }
                None => t,
            };
            // Held signals are delivered in this wait (`sys::SigScope`),
            // unless the caller gave its own mask.
            let m = match &held {
                Some(h) if mask.is_null() && t != 0 => h as *const libc::sigset_t,
                _ => mask,
            };
            // SAFETY: the caller's arguments with the remaining timeout;
            // `m` is the caller's mask or the live local `held`.
            let r = unsafe { f(epfd, ev, max, t as c_int, m) };
            if let Some(s) = &set {
                // (An atomic: errno stays the kernel's.)
                s.waiting(false);
            }
            if r < 0 {
                return (r, Vec::new());
            }
            // SAFETY: the kernel has just written r events into ev.
            let (n, mut fired) = unsafe { filter_epoll(ev, r) };
            unregister_dead(epfd, &fired);
            let n2 = user(n);
            if n2 == 0 && !fired.is_empty() {
                requeue_last(epfd, &fired);
            }
            if n2 == 0 && t == 0 && fired.is_empty() {
                // Queued sockets that were not ready after all: wait on
                // (the caller's wait loop goes round again).
                note(&mut fired, usize::MAX, false);
            }
            (n2, fired)
        },
        // The block's kernel events were only ours: the set's virtual
        // sockets the news made ready.
        || user(0),
    )
}

/// `epoll_wait`: `epoll_pwait` without a signal mask.
///
/// # Safety
///
/// As for libc's `epoll_wait`: `ev` valid for writes of `max` events.
pub unsafe fn epoll_wait(
    epfd: c_int,
    ev: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    // SAFETY: the caller's contract, with a null (allowed) mask.
    unsafe { epoll_pwait(epfd, ev, max, timeout, std::ptr::null()) }
}

/// A timeout as milliseconds rounded up: -1 for null (forever), -2 for an
/// invalid timespec.
///
/// # Safety
///
/// `ts` must be null or valid for reads of a timespec.
unsafe fn ts_ms(ts: *const libc::timespec) -> i64 {
    if ts.is_null() {
        return -1;
    }
    // SAFETY: ts is non-null, so valid for reads (contract above).
    let t = unsafe { *ts };
    if t.tv_sec < 0 || t.tv_nsec < 0 || t.tv_nsec >= 1_000_000_000 {
        return -2;
    }
    (t.tv_sec as i64)
        .saturating_mul(1000)
        .saturating_add((t.tv_nsec as i64 + 999_999) / 1_000_000)
}

/// `epoll_pwait2` (a timespec timeout) on a set that may hold TAS sockets.
///
/// # Safety
///
/// As for libc's `epoll_pwait2`: `ev` valid for writes of `max` events,
/// `ts` and `mask` null or valid.
pub unsafe fn epoll_pwait2(
    epfd: c_int,
    ev: *mut libc::epoll_event,
    max: c_int,
    ts: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    // SAFETY: ts is null or valid (contract).
    let ms = unsafe { ts_ms(ts) };
    if sys::in_shim() || !epoll_has_tas(epfd) || ms < -1 {
        // SAFETY: the caller's arguments, unchanged, under the same contract.
        return unsafe { sys::real::epoll_pwait2::get()(epfd, ev, max, ts, mask) };
    }
    // Millisecond granularity is what the shim's wait offers.
    // SAFETY: ev and mask as the caller passed them (same contract).
    unsafe { epoll_pwait(epfd, ev, max, ms.min(i32::MAX as i64) as c_int, mask) }
}

/// poll/ppoll with our fds appended; copies revents back.
///
/// # Safety
///
/// `fds` must be valid for reads and writes of `n` entries, not otherwise
/// borrowed during the call; `mask`, if given, null or a valid signal set.
pub(crate) unsafe fn poll_block(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    t: i64,
    ours: &[OurFd],
    mask: Option<*const libc::sigset_t>,
) -> (c_int, Vec<(usize, bool)>) {
    // SAFETY: fds holds n entries and is ours for the call (contract).
    let user = unsafe { std::slice::from_raw_parts_mut(fds, n as usize) };
    let mut all: Vec<libc::pollfd> = Vec::with_capacity(user.len() + ours.len());
    all.extend_from_slice(user);
    for o in ours {
        all.push(libc::pollfd {
            fd: o.fd,
            events: libc::POLLIN,
            revents: 0,
        });
    }
    // A lazy socket readable now (its pair does not say): no sleep.
    let t = if t != 0 && crate::vready::poll_lazy_any(user) {
        0
    } else {
        t
    };
    // A handler ran since the call began: `EINTR` (`sys::SigScope`).
    let held = match sys::before_sleep(t != 0) {
        Ok(h) => h,
        Err(e) => {
            sys::set_errno(e);
            return (-1, Vec::new());
        }
    };
    // Blocking: lazy sockets' readability on their pairs while asleep
    // (`vready::PollKWait`), ended before the news is taken.
    let kw = (t != 0 && !sys::restricted()).then(|| crate::vready::PollKWait::enter(user));
    // Held signals are delivered in this wait (`sys::SigScope`); a caller's
    // own mask (`ppoll`) already says what may come.
    let mask = mask.or(held.as_ref().map(|m| m as *const libc::sigset_t));
    // SAFETY: `all` is a live Vec of all.len() pollfds; `mask` is the
    // caller's (contract) or the live local `held`.
    let r = unsafe { sys::poll_masked(all.as_mut_ptr(), all.len() as libc::nfds_t, t, mask) };
    drop(kw);
    if r < 0 {
        return (r, Vec::new());
    }
    let mut fired = Vec::new();
    for (o, p) in ours.iter().zip(&all[user.len()..]) {
        if p.revents != 0 {
            note(&mut fired, o.ctx, o.ctl);
        }
    }
    if let Some(us) = global().cfg.test_lazy_delay_us {
        std::thread::sleep(std::time::Duration::from_micros(us));
    }
    // Lazy sockets' readability is not on their pairs (`vready.rs`).
    let count = crate::vready::poll_lazy(&mut all[..user.len()]);
    for (u, a) in user.iter_mut().zip(&all) {
        u.revents = a.revents;
    }
    (count, fired)
}

/// `poll` over fds that may include TAS sockets.
///
/// # Safety
///
/// As for libc's `poll`: `fds` valid for reads and writes of `n` entries.
pub unsafe fn poll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: c_int) -> c_int {
    let f = sys::real::poll::get();
    if sys::in_shim()
        || fds.is_null()
        || n == 0
        || n > 1 << 20
        // SAFETY: fds is non-null and holds n entries (contract).
        || !any_tas(unsafe { std::slice::from_raw_parts(fds, n as usize) })
    {
        // SAFETY: the caller's arguments, unchanged, under the same contract.
        return unsafe { f(fds, n, timeout) };
    }
    if n == 1 && timeout != 0 && !sys::restricted() {
        // SAFETY: fds is non-null and holds one entry (contract), ours for
        // the call.
        return poll_one(unsafe { &mut *fds }, timeout as i64);
    }
    wait(
        timeout as i64,
        Reg::Solo,
        // SAFETY: fds holds n entries (contract); no other borrow of it is
        // alive while the check runs.
        |ours| unsafe { poll_block(fds, n, 0, ours, None) },
        // SAFETY: fds holds n entries (contract); no other borrow of it is
        // alive while the wait runs.
        |t, ours| unsafe { poll_block(fds, n, t, ours, None) },
        // SAFETY: fds holds n entries (contract), with the last block's
        // results; no other borrow of it is alive meanwhile.
        || crate::vready::poll_lazy(unsafe { std::slice::from_raw_parts_mut(fds, n as usize) }),
    )
}

/// `poll` on one TAS socket, with a timeout: the wait of a blocking call
/// on it (`wait::wait_fd`), so that threads that each poll their own
/// connection wait as threads blocked in `recv` do — one thread per
/// context takes the news and wakes the others through their sockets'
/// pairs — instead of every poller waking for every event (each `poll` of
/// the shared wait holds the contexts' eventfds). A zero-timeout look
/// comes first and gives the result (revents as Linux reports them).
fn poll_one(p: &mut libc::pollfd, timeout_ms: i64) -> c_int {
    let _e = sys::Enter::new();
    let deadline = (timeout_ms >= 0).then(|| monotonic_ns() + timeout_ms as u64 * 1_000_000);
    loop {
        take_news();
        // SAFETY: `p` is one live pollfd, borrowed only here.
        let (r, fired) = unsafe { poll_block(p, 1, 0, &[], None) };
        let r = capture(r);
        for &(c, ctl) in &fired {
            handle_our_fd(c, ctl);
        }
        if r != 0 {
            return release(r);
        }
        if deadline.is_some_and(|d| monotonic_ns() >= d) {
            p.revents = 0;
            return 0;
        }
        // Ready (or woken): the look above gives the result.
        match crate::wait::wait_fd(p.fd, p.events, deadline) {
            Ok(()) => {}
            Err(libc::EAGAIN) => {
                p.revents = 0;
                return 0;
            }
            Err(e) => {
                set_errno(e);
                return -1;
            }
        }
    }
}

/// `ppoll` over fds that may include TAS sockets.
///
/// # Safety
///
/// As for libc's `ppoll`: `fds` valid for reads and writes of `n` entries,
/// `ts` and `mask` null or valid.
pub unsafe fn ppoll(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    ts: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    let f = sys::real::ppoll::get();
    // SAFETY: ts is null or valid (contract).
    let ms = unsafe { ts_ms(ts) };
    if sys::in_shim()
        || fds.is_null()
        || n == 0
        || n > 1 << 20
        || ms < -1
        // SAFETY: fds is non-null and holds n entries (contract).
        || !any_tas(unsafe { std::slice::from_raw_parts(fds, n as usize) })
    {
        // SAFETY: the caller's arguments, unchanged, under the same contract.
        return unsafe { f(fds, n, ts, mask) };
    }
    wait(
        ms,
        Reg::Solo,
        // SAFETY: fds holds n entries, mask is null or valid (contract); no
        // other borrow of fds is alive while the check runs.
        |ours| unsafe { poll_block(fds, n, 0, ours, Some(mask)) },
        // SAFETY: fds holds n entries, mask is null or valid (contract); no
        // other borrow of fds is alive while the wait runs.
        |t, ours| unsafe { poll_block(fds, n, t, ours, Some(mask)) },
        // SAFETY: fds holds n entries (contract), with the last block's
        // results; no other borrow of it is alive meanwhile.
        || crate::vready::poll_lazy(unsafe { std::slice::from_raw_parts_mut(fds, n as usize) }),
    )
}

// select and pselect through poll.

const POLLIN_SET: i16 =
    libc::POLLIN | libc::POLLRDNORM | libc::POLLRDBAND | libc::POLLHUP | libc::POLLERR;
const POLLOUT_SET: i16 = libc::POLLOUT | libc::POLLWRNORM | libc::POLLWRBAND | libc::POLLERR;
const POLLEX_SET: i16 = libc::POLLPRI;

/// Whether any of the sets (up to `n`) holds a TAS socket.
///
/// # Safety
///
/// Each of `sets` must be null or valid for reads of an `fd_set`.
unsafe fn sets_have_tas(n: c_int, sets: [*mut libc::fd_set; 3]) -> bool {
    let Some(g) = try_global() else {
        return false;
    };
    let n = n.clamp(0, libc::FD_SETSIZE as c_int);
    let mut any = false;
    for set in sets {
        if set.is_null() {
            continue;
        }
        for fd in 0..n {
            // SAFETY: set is non-null, so a readable fd_set (contract), and
            // 0 <= fd < FD_SETSIZE.
            if unsafe { libc::FD_ISSET(fd, set) } && g.fd(fd) & T_SOCK != 0 {
                crate::fdtab::adopt_if_inherited(fd, g.fd(fd));
                note_interest(fd);
                demote_for_wait(fd);
                any = true;
            }
        }
    }
    any && g.has_live_ctx()
}

/// A `select` carried out with `poll`: the pollfds for the caller's sets
/// and the sets to write the result into.
struct SelectPlan {
    pfds: Vec<libc::pollfd>,
    sets: [*mut libc::fd_set; 3],
}

impl SelectPlan {
    /// # Safety
    ///
    /// Each of `sets` must be null or valid for reads and writes of an
    /// `fd_set` for as long as the plan is used.
    unsafe fn new(n: c_int, sets: [*mut libc::fd_set; 3]) -> SelectPlan {
        let n = n.clamp(0, libc::FD_SETSIZE as c_int);
        let mut pfds = Vec::new();
        for fd in 0..n {
            let mut ev = 0i16;
            // SAFETY: a non-null set is a readable fd_set (contract), and
            // 0 <= fd < FD_SETSIZE.
            let has = |i: usize| !sets[i].is_null() && unsafe { libc::FD_ISSET(fd, sets[i]) };
            if has(0) {
                ev |= POLLIN_SET;
            }
            if has(1) {
                ev |= POLLOUT_SET;
            }
            if has(2) {
                ev |= POLLEX_SET;
            }
            if ev != 0 {
                pfds.push(libc::pollfd {
                    fd,
                    events: ev,
                    revents: 0,
                });
            }
        }
        SelectPlan { pfds, sets }
    }

    /// Writes results into the caller's sets (only when something is ready
    /// or on timeout); returns select's count, or -EBADF.
    ///
    /// # Safety
    ///
    /// The sets given to [`SelectPlan::new`] are still valid (its contract).
    unsafe fn finish(&self, poll_result: c_int, write_empty: bool) -> c_int {
        if poll_result < 0 {
            return poll_result;
        }
        if self.pfds.iter().any(|p| p.revents & libc::POLLNVAL != 0) {
            return -libc::EBADF;
        }
        if poll_result == 0 && !write_empty {
            return 0;
        }
        for s in self.sets {
            if !s.is_null() {
                // SAFETY: a non-null set is a writable fd_set (contract).
                unsafe { libc::FD_ZERO(s) };
            }
        }
        let mut count = 0;
        for p in &self.pfds {
            let r = p.revents;
            let sets = [(0usize, POLLIN_SET), (1, POLLOUT_SET), (2, POLLEX_SET)];
            for (i, m) in sets {
                if !self.sets[i].is_null() && p.events & m != 0 && r & m != 0 {
                    // SAFETY: a non-null set is a writable fd_set (contract);
                    // p.fd < FD_SETSIZE (pfds only holds such numbers).
                    unsafe { libc::FD_SET(p.fd, self.sets[i]) };
                    count += 1;
                }
            }
        }
        count
    }

    /// The wait (`t` = 0: the check): polls with the shim's fds added and,
    /// if anything of the caller's is ready, writes the sets.
    ///
    /// # Safety
    ///
    /// As for [`SelectPlan::finish`]; `mask`, if given, null or a valid
    /// signal set.
    unsafe fn block(
        &mut self,
        t: i64,
        ours: &[OurFd],
        mask: Option<*const libc::sigset_t>,
    ) -> (c_int, Vec<(usize, bool)>) {
        for p in self.pfds.iter_mut() {
            p.revents = 0;
        }
        let n = self.pfds.len() as libc::nfds_t;
        // SAFETY: pfds is a live Vec of n pollfds, borrowed only through this
        // pointer during the call; mask is null or valid (contract).
        let (r, fired) = unsafe { poll_block(self.pfds.as_mut_ptr(), n, t, ours, mask) };
        if r < 0 {
            return (r, fired);
        }
        // SAFETY: the plan's sets are still valid (contract).
        let c = unsafe { self.finish(r, false) };
        (release_neg(c), fired)
    }

    /// After a block that only the shim's fds ended: its results with the
    /// lazy sockets' readability now, written into the sets if anything is
    /// ready (no system call).
    ///
    /// # Safety
    ///
    /// As for [`SelectPlan::finish`].
    unsafe fn recheck(&mut self) -> c_int {
        let r = crate::vready::poll_lazy(&mut self.pfds);
        // SAFETY: the plan's sets are still valid (contract).
        release_neg(unsafe { self.finish(r, false) })
    }
}

/// -errno → -1 with errno set (the closures' convention is libc's).
fn release_neg(c: c_int) -> c_int {
    if c < 0 {
        set_errno(-c);
        -1
    } else {
        c
    }
}

/// # Safety
///
/// Each of `sets` must be null or valid for reads and writes of an
/// `fd_set`; `mask`, if given, null or a valid signal set.
unsafe fn select_impl(
    n: c_int,
    sets: [*mut libc::fd_set; 3],
    ms: i64,
    mask: Option<*const libc::sigset_t>,
) -> c_int {
    // SAFETY: the sets are valid for the whole call (contract), which the
    // plan does not outlive.
    let mut plan = unsafe { SelectPlan::new(n, sets) };
    let plan_ptr: *mut SelectPlan = &mut plan;
    let r = wait(
        ms,
        Reg::Solo,
        // SAFETY: `plan` outlives the wait, and the two closures are never
        // called at the same time, so each has the only access to it; the
        // sets and mask are valid (contract).
        |ours| unsafe { (*plan_ptr).block(0, ours, mask) },
        // SAFETY: as for the closure above.
        |t, ours| unsafe { (*plan_ptr).block(t, ours, mask) },
        // SAFETY: as for the closures above.
        || unsafe { (*plan_ptr).recheck() },
    );
    if r == 0 {
        // Timed out: every set comes back empty.
        for s in sets {
            if !s.is_null() {
                // SAFETY: a non-null set is a writable fd_set (contract).
                unsafe { libc::FD_ZERO(s) };
            }
        }
    }
    r
}

/// `select` over sets that may include TAS sockets.
///
/// # Safety
///
/// As for libc's `select`: `r`, `w`, `e` and `tv` each null or valid for
/// reads and writes.
pub unsafe fn select(
    n: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    tv: *mut libc::timeval,
) -> c_int {
    let f = sys::real::select::get();
    // SAFETY: each set is null or readable (contract).
    if sys::in_shim() || n <= 0 || !unsafe { sets_have_tas(n, [r, w, e]) } {
        // SAFETY: the caller's arguments, unchanged, under the same contract.
        return unsafe { f(n, r, w, e, tv) };
    }
    if !tv.is_null() {
        // SAFETY: tv is non-null, so valid for reads (contract).
        let t = unsafe { *tv };
        if t.tv_sec < 0 || t.tv_usec < 0 || t.tv_usec >= 1_000_000 {
            // SAFETY: the caller's arguments, unchanged, under the same
            // contract.
            return unsafe { f(n, r, w, e, tv) };
        }
    }
    let ms = if tv.is_null() {
        -1
    } else {
        // SAFETY: tv is non-null, so valid for reads (contract).
        let t = unsafe { *tv };
        t.tv_sec as i64 * 1000 + (t.tv_usec as i64 + 999) / 1000
    };
    let start = monotonic_ns();
    // SAFETY: each set is null or valid for reads and writes (contract).
    let res = unsafe { select_impl(n, [r, w, e], ms, None) };
    if !tv.is_null() {
        // SAFETY: tv is non-null, so valid for reads and writes (contract),
        // and nothing else refers to it during the call.
        let t = unsafe { &mut *tv };
        // Linux reports the time left.
        let used_us = ((monotonic_ns() - start) / 1000) as i64;
        let total_us = t.tv_sec as i64 * 1_000_000 + t.tv_usec as i64;
        let left = (total_us - used_us).max(0);
        t.tv_sec = (left / 1_000_000) as libc::time_t;
        t.tv_usec = (left % 1_000_000) as libc::suseconds_t;
    }
    res
}

/// `pselect` over sets that may include TAS sockets.
///
/// # Safety
///
/// As for libc's `pselect`: the sets null or valid for reads and writes,
/// `ts` and `mask` null or valid for reads.
pub unsafe fn pselect(
    n: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    ts: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    let f = sys::real::pselect::get();
    // SAFETY: ts is null or valid (contract).
    let ms = unsafe { ts_ms(ts) };
    // SAFETY: each set is null or readable (contract).
    if sys::in_shim() || n <= 0 || ms < -1 || !unsafe { sets_have_tas(n, [r, w, e]) } {
        // SAFETY: the caller's arguments, unchanged, under the same contract.
        return unsafe { f(n, r, w, e, ts, mask) };
    }
    // SAFETY: the sets and mask as the caller passed them (same contract).
    unsafe { select_impl(n, [r, w, e], ms, Some(mask)) }
}
