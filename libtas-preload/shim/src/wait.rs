//! Waiting: spin on the contexts, then block in the kernel with the
//! contexts' eventfds and control sockets in the same wait, so that the
//! thread that waits is the one the service wakes (no hop through another
//! thread). The fast path kicks a context's eventfd only while some thread
//! is blocked that way (`Ctx::blocked`); a busy program is never kicked and
//! picks up news at its next call. Of the threads blocked on one socket
//! each (`recv`, `send`, `connect`), one per context has its fds in the
//! wait and hands the news to the others through their sockets' pairs
//! (`solo.rs`), and so of the threads in `poll`/`select`; `epoll_wait`
//! waiters have them all (in their sets, with `EPOLLEXCLUSIVE`: `mux.rs`).
//!
//! Owns the spin ([`spin_wait`]; with a spin of 0, the yields before a
//! sleep while sibling threads wait too, counted by
//! `tas::spin::SpinCtl::enter_wait`), the blocked-thread bookkeeping
//! ([`Blocked`]), taking news when the shim's fds fire ([`handle_our_fd`]),
//! the wait of a blocking call on one socket ([`wait_fd`]; its
//! registration and kernel wait, which avoid a thundering herd of blocked
//! threads, are in `solo.rs`), and the tag
//! that marks the shim's fds in a program's epoll set. The multiplexing
//! calls built on this are in `mux.rs`.

use crate::ctx::Ctx;
use crate::global::global;
use crate::sys::{self, real};
use libc::c_int;
use std::sync::atomic::Ordering;

/// `epoll_event.data` of the shim's own fds inside a program's epoll set:
/// `EPOLL_TAG | ctx << 1 | is_control_socket`.
pub const EPOLL_TAG: u64 = 0x54A5_F00D_0000_0000;
pub const EPOLL_TAG_MASK: u64 = 0xFFFF_FFFF_0000_0000;

/// Polls every live context once without blocking (the notification ring
/// only). True when some socket's readiness changed since `*seen`.
pub fn poll_all_once(seen: &mut u64) -> bool {
    let g = global();
    for c in g.live_ctxs() {
        if let Some(mut inner) = c.inner.try_lock() {
            inner.process_fast();
        }
    }
    let now = g.ready_gen.load(Ordering::Acquire);
    if now != *seen {
        *seen = now;
        true
    } else {
        false
    }
}

/// Takes in every live context's pending notifications (the rings; no
/// system call unless something changed). Called first by every wait that
/// returns readiness, so that news is never left waiting behind another
/// ready fd or a zero timeout. A context another thread holds is skipped
/// (that thread is working with it; the next wait looks again), so threads
/// waiting at once do not queue on each other's contexts.
pub fn take_news() {
    for c in global().live_ctxs() {
        if c.dead.load(Ordering::Relaxed) {
            continue;
        }
        if let Some(mut inner) = c.inner.try_lock() {
            inner.process_fast();
        }
    }
}

/// The control sockets of the live contexts (control messages: accepted
/// connections, connect replies, resets), for a zero-timeout check to
/// include beside the caller's fds.
pub fn ctl_fds() -> Vec<OurFd> {
    global()
        .live_ctxs()
        .filter(|c| !c.dead.load(Ordering::Relaxed))
        .map(|c| OurFd {
            fd: c.ctl_fd,
            ctx: c.idx,
            ctl: true,
        })
        .collect()
}

/// Most yields of a wait whose spin is 0 (see [`spin_wait`]).
const HANDOVER_ROUNDS: u32 = 64;
/// A yield that took at least this long handed the CPU to other work (one
/// that switches to nobody returns in ~0.6 µs here, a switch alone costs
/// ~1.9 µs between processes).
const YIELD_HANDED_OVER_NS: u64 = 4_000;

/// Spins up to the configured time (or `limit_ns`) calling `poll_now`
/// (a zero-timeout check) whenever readiness changed. Returns its first
/// non-zero result, or `-EINTR` once a handler of the program's ran since
/// the caller's `sys::SigScope` began.
///
/// When the spin is 0 (self-tuned: the waits' gaps are longer than a spin
/// would pay for) and other threads of the process are in waits too (a
/// thread per connection, `SpinCtl::others_wait`), a wait that may last still yields its CPU and
/// looks again, for as long as each yield hands the CPU to other work, up
/// to [`HANDOVER_ROUNDS`] times: that CPU time goes to threads that want
/// it anyway (the threads of the other connections, woken; the fast-path
/// core sharing the CPU), and what this thread waits for often comes
/// meanwhile, where blocking would cost a sleep and a wake-up. A yield
/// that comes straight back (nobody else wants the CPU) ends it after one
/// more look. Outside the CPU budget: it holds no CPU anyone waits for.
/// `rpc server` under the shim, 64 connections, thread per connection
/// (session 32): 39–48k requests/s without it, 67–113k with it, and the
/// threads' sleeps per request 1.1 → 0.002. A lone waiting thread
/// (sockperf's, redis's event loop) blocks at once as before: there the
/// yield would mostly go to an idle-polling core and back (a first
/// version that yielded in every wait had sockperf 5–10 % slower in two
/// of three rounds). Never past `limit_ns`.
pub fn spin_wait(limit_ns: u64, mut poll_now: impl FnMut() -> c_int) -> Option<c_int> {
    let g = global();
    let spin = g.spin.spin_ns().min(limit_ns);
    let handover = spin == 0 && limit_ns > 0 && g.spin.others_wait();
    if (spin == 0 && !handover) || !g.has_live_ctx() {
        return None;
    }
    // Within the CPU budget (spin.rs), or not at all.
    let _spinning = if handover {
        None
    } else {
        Some(g.spin.enter()?)
    };
    let mut seen = g.ready_gen.load(Ordering::Acquire);
    let start = sys::monotonic_ns();
    let mut rounds = 0u32;
    let mut came_back = false;
    loop {
        if poll_all_once(&mut seen) {
            let r = poll_now();
            if r != 0 {
                return Some(r);
            }
        }
        if sys::interrupted() {
            // A handler of the program's ran: the call ends as on Linux
            // (`sys::SigScope`).
            return Some(-libc::EINTR);
        }
        rounds += 1;
        if handover {
            if came_back || rounds > HANDOVER_ROUNDS {
                return None;
            }
            let t = sys::monotonic_ns();
            if t - start >= limit_ns {
                return None;
            }
            tas::spin::relax();
            came_back = sys::monotonic_ns() - t < YIELD_HANDED_OVER_NS;
            continue;
        }
        if rounds % 64 == 0 && sys::monotonic_ns() - start >= spin {
            return None;
        }
        tas::spin::relax();
    }
}

/// One of the shim's fds a blocked thread also waits on.
#[derive(Clone, Copy, Debug)]
pub struct OurFd {
    pub fd: c_int,
    pub ctx: usize,
    pub ctl: bool,
}

/// While alive, the calling thread is about to block (or is blocked) in the
/// kernel with [`Blocked::fds`] in its wait set.
pub struct Blocked {
    ctxs: Vec<&'static Ctx>,
    /// Readiness changed while entering (check before blocking).
    pub changed: bool,
}

impl Blocked {
    pub fn enter() -> Blocked {
        let g = global();
        let before = g.ready_gen.load(Ordering::Acquire);
        let ctxs: Vec<&'static Ctx> = g
            .live_ctxs()
            .filter(|c| !c.dead.load(Ordering::Relaxed))
            .collect();
        for c in &ctxs {
            let mut inner = c.inner.lock();
            if c.blocked.fetch_add(1, Ordering::SeqCst) == 0 {
                inner.tas.set_waiting(true);
            }
            // Anything posted before the flag was visible is ours to see.
            inner.process_fast();
        }
        let changed = g.ready_gen.load(Ordering::Acquire) != before;
        Blocked { ctxs, changed }
    }

    pub fn fds(&self) -> Vec<OurFd> {
        let mut v = Vec::with_capacity(self.ctxs.len() * 2);
        for c in &self.ctxs {
            v.push(OurFd {
                fd: c.ev_fd,
                ctx: c.idx,
                ctl: false,
            });
            v.push(OurFd {
                fd: c.ctl_fd,
                ctx: c.idx,
                ctl: true,
            });
        }
        v
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        let mut unwatched = false;
        for c in &self.ctxs {
            if c.blocked.fetch_sub(1, Ordering::SeqCst) == 1 {
                let inner = c.inner.lock();
                if c.blocked.load(Ordering::SeqCst) == 0 {
                    inner.tas.set_waiting(false);
                    unwatched = true;
                }
            }
        }
        // Nobody waits on these contexts any more: the reactor must watch
        // them again now, not when its long sleep ends.
        if unwatched {
            crate::reactor::wake_if_sleeping_long();
        }
    }
}

/// Our fds fired in a wait: take the news (drain the eventfd, read the
/// notification ring, and the control socket when it fired).
pub fn handle_our_fd(ctx: usize, ctl: bool) {
    let g = global();
    let Some(c) = g.ctx(ctx) else { return };
    if c.gen != g.gen.load(Ordering::Acquire) {
        return;
    }
    let mut v = 0u64;
    // SAFETY: read writes at most 8 bytes into the live local `v`; ev_fd is
    // the context's non-blocking eventfd.
    unsafe { real::read::get()(c.ev_fd, &mut v as *mut u64 as *mut libc::c_void, 8) };
    let mut inner = c.inner.lock();
    // Drained: the cores write the eventfd again for what they post from
    // now on (before the rings are read, see `tas_abi::note_drained`).
    inner.tas.note_drained();
    if ctl {
        inner.process();
    } else {
        inner.tas.poll_events();
        inner.after();
    }
    c.tick.store(
        inner.tas.has_backlog() || !inner.zombies.is_empty(),
        Ordering::Relaxed,
    );
    if inner.tas.is_dead() {
        c.dead.store(true, Ordering::Relaxed);
    }
}

/// Whether `fd` is a TAS listener.
fn is_listener(fd: c_int) -> bool {
    match crate::fdtab::kind(fd) {
        crate::fdtab::Kind::Sock(c, sid) => c
            .inner
            .lock()
            .socks
            .get(&sid)
            .is_some_and(|s| matches!(s.st, crate::sock::St::Listening(_))),
        _ => false,
    }
}

/// The blocking part of [`wait_fd`] for a listener (`accept`): new
/// connections come as control messages, so the thread waits on the
/// contexts' control sockets and `fd`, not on their eventfds, and does not
/// count as blocked on them. A thread-per-connection server's accepting
/// thread is then not woken by every notification meant for its
/// connections' threads (with one connection, each request woke both).
fn wait_listener(
    fd: c_int,
    events: i16,
    deadline: Option<u64>,
    check: impl Fn() -> c_int,
) -> Result<(), c_int> {
    loop {
        let ms = ms_left(deadline).ok_or(libc::EAGAIN)?;
        let (ready, fired) = block_on(fd, events, ms, &ctl_fds())?;
        if let Some(r) = after_block(ready, &fired, &check) {
            return r;
        }
    }
}

/// Milliseconds (rounded up) until `deadline` for `poll`: -1 for none,
/// None once it has passed.
fn ms_left(deadline: Option<u64>) -> Option<c_int> {
    match deadline {
        None => Some(-1),
        Some(d) => {
            let l = d.saturating_sub(sys::monotonic_ns());
            (l > 0).then(|| l.div_ceil(1_000_000).min(i32::MAX as u64) as c_int)
        }
    }
}

/// Blocks in the kernel until `fd` is ready for `events`, one of `ours`
/// fires or `ms` is over: whether `fd` is ready, and which contexts fired.
fn block_on(
    fd: c_int,
    events: i16,
    ms: c_int,
    ours: &[OurFd],
) -> Result<(bool, Vec<(usize, bool)>), c_int> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let (r, fired) = {
        let _l = sys::Leave::new();
        // SAFETY: `p` is one live local pollfd, borrowed only through this
        // pointer during the call; no signal mask.
        unsafe { crate::mux::poll_block(&mut p, 1, ms as i64, ours, None) }
    };
    if r < 0 {
        return Err(sys::errno());
    }
    Ok((p.revents != 0, fired))
}

/// After [`block_on`]: takes the news of the contexts that fired; the
/// wait's result, or None to wait again (a context fired and `fd` is still
/// not ready).
fn after_block(
    ready: bool,
    fired: &[(usize, bool)],
    check: impl Fn() -> c_int,
) -> Option<Result<(), c_int>> {
    if !ready && !fired.is_empty() {
        // The call likely goes on: a signal from here on must end it
        // (`sys::SigScope`).
        sys::hold_signals();
    }
    for &(c, ctl) in fired {
        handle_our_fd(c, ctl);
    }
    if ready {
        return Some(Ok(()));
    }
    if fired.is_empty() {
        return Some(Err(libc::EAGAIN));
    }
    verdict(check())
}

/// What a zero-timeout check's result means for a blocking wait: `None`
/// (0: not ready, wait on), the error (negative errno) or ready.
fn verdict(r: c_int) -> Option<Result<(), c_int>> {
    match r {
        0 => None,
        r if r < 0 => Some(Err(-r)),
        _ => Some(Ok(())),
    }
}

/// Waits until `fd` (an `A` end) is ready for `events` or the deadline
/// (monotonic ns; None = forever). Err(EAGAIN) on timeout, Err(EINTR) on a
/// signal.
pub fn wait_fd(fd: c_int, events: i16, deadline: Option<u64>) -> Result<(), c_int> {
    let _in_wait = global().spin.enter_wait();
    let start = sys::monotonic_ns();
    let r = wait_fd_from(fd, events, deadline);
    // The gap this wait saw, for the spin controller: until `fd` was
    // ready, or at least until the deadline (see `mux::wait`).
    if r.is_ok() || r == Err(libc::EAGAIN) {
        global()
            .spin
            .record(start, sys::monotonic_ns(), crate::spin::daemon_goal);
    }
    r
}

fn wait_fd_from(fd: c_int, events: i16, deadline: Option<u64>) -> Result<(), c_int> {
    // A socket in an epoll set has its readability answered there: from
    // now on its pair carries it (`vready.rs`).
    crate::vready::demote_virtual_fd(fd);
    let check = || sys::revents_now(fd, events);
    // The spin looks at a lazy socket itself (its pair is not kept up to
    // date while nobody blocks on it).
    let spin_check = || match crate::vready::lazy_ready(fd, events) {
        Some(r) => r as c_int,
        None => check(),
    };
    let left = |d: Option<u64>| {
        d.map(|d| d.saturating_sub(sys::monotonic_ns()))
            .unwrap_or(u64::MAX)
    };
    // A handler of the program's that runs from here on ends the wait
    // (`sys::SigScope`): in the spin, before a round, between rounds.
    let _scope = sys::SigScope::new();
    if let Some(v) = spin_wait(left(deadline), spin_check).and_then(verdict) {
        return v;
    }
    // Blocking on the pair from here: a lazy socket's readability goes on
    // it meanwhile (the solo wait holds this per round, see `Solo::block`).
    let mut kw = Some(crate::vready::KWait::enter(fd));
    if sys::restricted() {
        // Under a seccomp filter (see `mux::restricted_wait`): `fd` alone;
        // the reactor brings its readiness up to date.
        let ms = match deadline {
            None => -1,
            Some(_) => left(deadline).div_ceil(1_000_000).min(i32::MAX as u64) as c_int,
        };
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // A handler ran since the call began: `EINTR` (no mask under a
        // seccomp filter).
        sys::before_sleep(ms != 0)?;
        let (r, e) = {
            let _l = sys::Leave::new();
            // SAFETY: `p` is one live local pollfd (nfds = 1).
            let r = unsafe { real::poll::get()(&mut p, 1, ms) };
            (r, sys::errno())
        };
        take_news();
        return match r {
            r if r < 0 => Err(e),
            0 => Err(libc::EAGAIN),
            _ => Ok(()),
        };
    }
    if is_listener(fd) {
        return wait_listener(fd, events, deadline, check);
    }
    if let Some(solo) = crate::solo::Solo::enter() {
        return wait_solo(&solo, fd, events, deadline, check, &mut kw);
    }
    // A nested wait (a signal handler's) or no wake eventfd: the shared
    // wait, woken by every kick.
    loop {
        let b = Blocked::enter();
        if b.changed {
            if let Some(v) = verdict(check()) {
                return v;
            }
        }
        let ms = ms_left(deadline).ok_or(libc::EAGAIN)?;
        let blocked = block_on(fd, events, ms, &b.fds());
        drop(b);
        let (ready, fired) = blocked?;
        if let Some(r) = after_block(ready, &fired, check) {
            return r;
        }
    }
}

/// The blocking part of [`wait_fd`] for a connection (see `solo.rs`):
/// registered once for the whole wait, so a drainer that takes news for
/// other sockets keeps its role (a hand-off only when it leaves). No
/// zero-timeout check between rounds: `fd`'s readiness is on its pair
/// (level-triggered; `KWait` keeps a lazy socket's there), so news taken
/// while registering or by a round makes the next `poll` return at once —
/// a check would only add a system call to every round that finds `fd`
/// not ready (most of a drainer's rounds).
fn wait_solo(
    solo: &crate::solo::Solo,
    fd: c_int,
    events: i16,
    deadline: Option<u64>,
    check: impl Fn() -> c_int,
    kw: &mut Option<crate::vready::KWait>,
) -> Result<(), c_int> {
    use crate::solo::Round;
    loop {
        // A deadline already past still gets one look (timeout 0).
        let ms = ms_left(deadline);
        match solo.block(fd, events, ms.unwrap_or(0), kw)? {
            Round::Ready => return Ok(()),
            Round::Timeout => return Err(libc::EAGAIN),
            Round::Again if ms.is_none() || ms_left(deadline).is_none() => {
                return verdict(check()).unwrap_or(Err(libc::EAGAIN));
            }
            Round::Again => {}
        }
    }
}
