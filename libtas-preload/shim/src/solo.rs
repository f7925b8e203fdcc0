//! A blocking call's wait on one socket without a thundering herd
//! (issue 15): a notification wakes the thread blocked on the socket that
//! got it, plus at most one other thread per context (its *drainer*), never
//! every blocked thread of the process.
//!
//! The problem: the fast path kicks a context's eventfd when it posts news
//! while some thread is blocked (`Ctx::blocked`). When every thread blocked
//! in `recv`/`send`/`connect` had that eventfd in its `poll` set, each kick
//! woke all of them; in a thread-per-connection server with 64 connections,
//! 63 threads woke, found nothing and blocked again (several µs of context
//! switch each on a small VM).
//!
//! The design: of the threads in such a wait, one per context is its
//! drainer: it alone has the context's eventfd and control socket in its
//! wait set, and when they fire it takes the news (`wait::handle_our_fd`),
//! which brings the readiness pair of each socket that got news up to date
//! (`Inner::sync`). That wakes exactly the threads blocked on those
//! sockets: every thread polls the `A` end of its own socket, a per-socket
//! wake object that exists anyway. The other threads wait on their socket
//! and on their own wake eventfd ([`Waiter`], one per thread, made at the
//! thread's first wait and closed at its exit). When the drainer leaves
//! its wait (its socket became ready, a signal, a timeout), it hands the
//! role to another waiting thread of the context (under the context's
//! lock: sets the successor's `drains` bit and writes its wake eventfd);
//! with no other waiter, the context's `blocked` count drops to zero and
//! the reactor watches it again, as before. A thread alone in its wait is
//! its own drainer, so one connection costs one wake-up per event as
//! before; with many, an event costs the drainer's and the owner's
//! wake-ups, plus a hand-off's when the drainer's own socket got it.
//!
//! Why not the alternatives: a hop through the reactor thread would cost
//! two wake-ups per event always (also for one connection); a futex word
//! per flow in the shared region, woken by the fast path, would save the
//! drainer's wake-up but needs the fast path and the ABI to change and
//! cannot be combined with the kernel fds the wait must also cover;
//! `EPOLLEXCLUSIVE` needs an epoll set per thread and two `epoll_ctl`
//! calls per wait, and wakes an arbitrary waiter, which then hands on as a
//! drainer does. (Threads that wait in `epoll_wait` on sets of their own
//! have those sets already, and do use it: `mux.rs`.)
//!
//! No lost wake-up — the ordering argument:
//! * Every fd in the wait is level-triggered (eventfd counters, data on
//!   a Unix socket), so whatever is signalled before the `poll` starts
//!   makes it return at once; only *who polls what* needs care.
//! * Under the context's lock, a thread registering increments `blocked`
//!   (and announces `set_waiting(true)` to the fast path with a SeqCst
//!   fence, `announce_sleep`) and becomes the drainer if there is none;
//!   then it takes the ring's news (`process_fast`). A notification posted
//!   before the fast path saw the flag is thus taken here (and reflected
//!   on the pairs before the first `poll`); one posted after is kicked to
//!   the eventfd, which the drainer polls (Dekker pair with
//!   `peer_sleeps`).
//! * While any thread is registered on a context there is a drainer: the
//!   role is given to the first registrant and moves only under the lock,
//!   from a leaving drainer to a registered waiter. (Threads in
//!   `epoll_wait`, `wait::Blocked`, count in `blocked` too and poll every
//!   context's fds themselves; they take news the same way but are never
//!   drainers.) The successor may be deciding its
//!   poll set without the context's fds at that moment; its wake eventfd,
//!   written under the same lock, makes that `poll` return, and the next
//!   round includes the context's fds (the successor's `drains` bit is set
//!   before its eventfd is written, and read after the `poll` that saw
//!   the write returned: Release by the writer, Acquire by the reader). The
//!   eventfd's count survives the hand-off, so a kick in between is seen.
//! * A socket's news taken by any thread (the drainer, a thread in
//!   another call, the spin, the reactor) is written to its pair, which
//!   its waiter polls; a thread's every `poll` includes its socket, from
//!   the first one after registering on.
//!
//! A `poll` or `select` of several fds registers the same way, once for
//! the whole call (`mux.rs`, [`Solo::fds`]): the program's fds take the
//! place of the one socket, each TAS socket among them polled on its pair
//! (a lazy one's readability is put there while the thread sleeps:
//! `vready::PollKWait`, which syncs the pair when it starts). So threads
//! that each wait on their own connection and, say, a wake-up pipe wake
//! alone too.
//!
//! Fork needs nothing more: the child starts a new generation with new
//! contexts, and a thread's wake eventfd is made anew there (the one it
//! inherited is the parent thread's). Exec closes it (close-on-exec).
//!
//! A signal handler that blocks on a TAS socket while its thread is in
//! such a wait, and a thread that cannot get a wake eventfd (out of fds, or
//! none free above the shim's high fd range), use the shared wait
//! (`wait::Blocked`), which is correct but wakes with every kick.

use crate::ctx::{Ctx, MAX_CTX};
use crate::fdtab::{high_fd_base, T_INTERNAL};
use crate::global::{global, try_global};
use crate::sys::{self, real};
use crate::vready::KWait;
use crate::wait::OurFd;
use libc::c_int;
use std::cell::Cell;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

/// The part of a thread's [`Waiter`] other threads touch (a hand-off,
/// under the context's lock, while the owner is registered there).
pub struct Shared {
    /// The wake eventfd (non-blocking, close-on-exec); -1: none.
    ev: AtomicI32,
    /// Bit `i`: this thread drains context `i` now.
    drains: AtomicU32,
}

/// A thread's wake object and state for [`Solo`] waits.
struct Waiter {
    shared: Shared,
    /// The fork generation `ev` belongs to (a child makes its own: the
    /// inherited one is shared with the parent's thread).
    gen: Cell<u64>,
    /// In a [`Solo`] wait now.
    busy: Cell<bool>,
    /// The contexts that wait is registered on (bit = index).
    reg: Cell<u32>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // The thread ends inside a wait: cancelled in its `poll` (a
        // cancellation point), or `pthread_exit` from a signal handler,
        // and the unwinding did not run `Solo`'s drop. Its registrations
        // go now, or a later hand-off would write through a dangling
        // pointer. (Not in a forked child: those contexts are the
        // parent's.)
        if self.busy.get()
            && try_global().is_some_and(|g| g.gen.load(Ordering::Acquire) == self.gen.get())
        {
            unregister(WRef(&self.shared as *const Shared), self.reg.get());
        }
        let fd = self.shared.ev.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            close_ev(fd);
        }
    }
}

thread_local! {
    static WAITER: Waiter = const {
        Waiter {
            shared: Shared {
                ev: AtomicI32::new(-1),
                drains: AtomicU32::new(0),
            },
            gen: Cell::new(u64::MAX),
            busy: Cell::new(false),
            reg: Cell::new(0),
        }
    };
}

/// Closes a wake eventfd (also in a forked child, where it is the
/// inherited copy of the parent thread's, still open and marked ours).
fn close_ev(fd: c_int) {
    if let Some(g) = try_global() {
        g.set_fd(fd, 0);
    }
    sys::r_close(fd);
}

/// A new wake eventfd above the program's fds, or None.
fn make_ev() -> Option<c_int> {
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let base = high_fd_base();
    let fd = sys::move_high(fd, base);
    // No fd number below the shim's range is taken from the program (a
    // thread-per-connection server near its fd limit).
    if fd < base || !global().set_fd(fd, T_INTERNAL) {
        sys::r_close(fd);
        return None;
    }
    Some(fd)
}

/// A pointer to a registered thread's [`Shared`], kept in its contexts'
/// [`Waiters`] only while it is registered.
#[derive(Clone, Copy, PartialEq, Eq)]
struct WRef(*const Shared);

// SAFETY: a WRef is only dereferenced under the lock of a context where
// it is registered; its thread removes it (under that lock) before its
// wait returns, so the thread-local it points to is alive. Only the
// atomic fields are touched through it.
unsafe impl Send for WRef {}

/// The threads in a [`Solo`] wait with a context in their wait (in
/// `ctx::Inner`, under the context's lock).
#[derive(Default)]
pub struct Waiters {
    /// The thread that polls the context's eventfd and control socket.
    drainer: Option<WRef>,
    /// The others (a hand-off takes the latest: its cache is warmest).
    idle: Vec<WRef>,
    /// Hand-offs so far (the debugging dump shows them).
    handoffs: u64,
}

impl Waiters {
    /// One line for the debugging dump.
    pub fn describe(&self) -> String {
        format!(
            "solo waiters: drainer {} idle {} hand-offs {}",
            self.drainer.is_some(),
            self.idle.len(),
            self.handoffs
        )
    }

    fn join(&mut self, me: WRef, bit: u32) {
        if self.drainer.is_none() {
            self.drainer = Some(me);
            // SAFETY: `me` is the calling thread's own, alive.
            unsafe { &*me.0 }.drains.fetch_or(bit, Ordering::Release);
        } else {
            self.idle.push(me);
        }
    }

    fn leave(&mut self, me: WRef, bit: u32) {
        if self.drainer == Some(me) {
            // SAFETY: `me` is the calling thread's own, alive.
            unsafe { &*me.0 }.drains.fetch_and(!bit, Ordering::Relaxed);
            self.drainer = self.idle.pop();
            if let Some(next) = self.drainer {
                self.handoffs += 1;
                // SAFETY: `next` is registered here (see WRef) and we hold
                // the context's lock, so its thread is in its wait.
                let s = unsafe { &*next.0 };
                s.drains.fetch_or(bit, Ordering::Release);
                let one = 1u64;
                // SAFETY: write reads the 8 bytes of the live local `one`;
                // the fd is the successor's wake eventfd, open while it is
                // registered.
                unsafe {
                    real::write::get()(
                        s.ev.load(Ordering::Relaxed),
                        &one as *const u64 as *const libc::c_void,
                        8,
                    )
                };
            }
        } else if let Some(i) = self.idle.iter().position(|w| *w == me) {
            self.idle.swap_remove(i);
        }
    }
}

/// While alive, the calling thread is registered, on every live context,
/// as waiting for one socket (see the module docs).
pub struct Solo {
    me: WRef,
    /// The contexts registered on (bit = index).
    reg: u32,
}

impl Solo {
    /// Registers the calling thread; None when it must use the shared
    /// wait (a nested wait from a signal handler, no wake eventfd).
    pub fn enter() -> Option<Solo> {
        let g = global();
        let gen = g.gen.load(Ordering::Acquire);
        let me = WAITER
            .try_with(|w| {
                if w.busy.get() {
                    return None;
                }
                if w.gen.get() != gen {
                    let old = w.shared.ev.swap(-1, Ordering::Relaxed);
                    if old >= 0 {
                        close_ev(old);
                    }
                    w.shared.drains.store(0, Ordering::Relaxed);
                    w.gen.set(gen);
                }
                if w.shared.ev.load(Ordering::Relaxed) < 0 {
                    w.shared.ev.store(make_ev()?, Ordering::Relaxed);
                }
                w.busy.set(true);
                Some(WRef(&w.shared as *const Shared))
            })
            .ok()
            .flatten()?;
        let mut reg = 0u32;
        for c in g.live_ctxs() {
            if c.dead.load(Ordering::Relaxed) || c.idx >= MAX_CTX {
                continue;
            }
            let bit = 1u32 << c.idx;
            let mut guard = c.inner.lock();
            let inner = &mut *guard;
            if c.blocked.fetch_add(1, Ordering::SeqCst) == 0 {
                inner.tas.set_waiting(true);
            }
            inner.waiters.join(me, bit);
            // Anything posted before the flag was visible is ours to see
            // (and on the pairs before the wait's first `poll`).
            reg |= bit;
            let _ = WAITER.try_with(|w| w.reg.set(reg));
            inner.process_fast();
        }
        Some(Solo { me, reg })
    }

    /// The wake eventfd to poll.
    fn ev(&self) -> c_int {
        // SAFETY: `me` is the calling thread's own, alive.
        unsafe { &*self.me.0 }.ev.load(Ordering::Relaxed)
    }

    /// The contexts this thread drains now.
    fn drains(&self) -> u32 {
        // SAFETY: `me` is the calling thread's own, alive.
        unsafe { &*self.me.0 }.drains.load(Ordering::Acquire)
    }
}

impl Drop for Solo {
    fn drop(&mut self) {
        unregister(self.me, self.reg);
        let _ = WAITER.try_with(|w| {
            w.busy.set(false);
            w.reg.set(0);
        });
    }
}

/// Takes `me`'s registrations off the contexts in `reg` (handing the
/// drainer's role on), and lets the reactor watch the contexts nobody is
/// blocked on any more.
fn unregister(me: WRef, reg: u32) {
    let g = global();
    let mut unwatched = false;
    let mut reg = reg;
    while reg != 0 {
        let idx = reg.trailing_zeros() as usize;
        reg &= reg - 1;
        let Some(c) = g.ctx(idx) else { continue };
        let mut inner = c.inner.lock();
        inner.waiters.leave(me, 1 << idx);
        if c.blocked.fetch_sub(1, Ordering::SeqCst) == 1 {
            inner.tas.set_waiting(false);
            unwatched = true;
        }
    }
    // Nobody waits on these contexts any more: the reactor must watch
    // them again now, not when its long sleep ends.
    if unwatched {
        crate::reactor::wake_if_sleeping_long();
    }
}

/// The contexts of `drains` (bit = index) that are alive, with their
/// index. One whose daemon hung up is left out: its control socket stays
/// readable, nothing more comes from it, and its errors are on the pairs.
fn live_drained(drains: u32) -> impl Iterator<Item = (usize, &'static Ctx)> {
    let g = global();
    let mut left = drains;
    std::iter::from_fn(move || {
        while left != 0 {
            let idx = left.trailing_zeros() as usize;
            left &= left - 1;
            match g.ctx(idx) {
                Some(c) if !c.dead.load(Ordering::Relaxed) => return Some((idx, c)),
                _ => {}
            }
        }
        None
    })
}

/// `OurFd::ctx` of the thread's wake eventfd among [`Solo::fds`].
pub const WAKE: usize = usize::MAX - 1;

impl Solo {
    /// The shim's fds for a registered thread's wait on several fds of the
    /// program (`poll`, `select`: `mux.rs`): its wake eventfd (`ctx` =
    /// [`WAKE`]) unless it drains every context it registered on, and the
    /// eventfd and control socket of each context it drains. Read anew
    /// for every round: a hand-off changes them.
    pub fn fds(&self) -> Vec<OurFd> {
        let drains = self.drains();
        let mut v = Vec::with_capacity(1 + 2 * drains.count_ones() as usize);
        if drains != self.reg {
            v.push(OurFd {
                fd: self.ev(),
                ctx: WAKE,
                ctl: false,
            });
        }
        for (idx, c) in live_drained(drains) {
            v.push(OurFd {
                fd: c.ev_fd,
                ctx: idx,
                ctl: false,
            });
            v.push(OurFd {
                fd: c.ctl_fd,
                ctx: idx,
                ctl: true,
            });
        }
        v
    }

    /// The wake eventfd fired (a hand-off): reset it.
    pub fn clear_wake(&self) {
        let mut v = 0u64;
        // SAFETY: read writes at most 8 bytes into the live local `v`; the
        // fd is this thread's wake eventfd (non-blocking).
        unsafe { real::read::get()(self.ev(), &mut v as *mut u64 as *mut libc::c_void, 8) };
    }
}

/// Most fds in a [`Solo`] wait: the socket, the wake eventfd, and the
/// eventfd and control socket of each context drained.
const MAX_POLL: usize = 2 + 2 * MAX_CTX;

/// What ended one round of [`Solo::block`].
pub enum Round {
    /// The socket is ready (or `poll` said something about it).
    Ready,
    /// Something fired (news taken, or a hand-off): check and wait again.
    Again,
    /// The timeout passed.
    Timeout,
}

impl Solo {
    /// Blocks in the kernel (up to `ms`, -1 = forever) until `fd` is
    /// ready for `events`, the wake eventfd fires, or a drained context's
    /// fds fire (their news is taken before returning). No allocation.
    ///
    /// `kw` (the blocking call's [`KWait`] on `fd`, taken if not held) is
    /// ended as soon as the kernel's wait returns, so that the news this
    /// thread takes for a lazy socket (`vready.rs`) is not put on its
    /// pair only to be taken back: the socket is looked at in user space
    /// instead.
    pub fn block(
        &self,
        fd: c_int,
        events: i16,
        ms: c_int,
        kw: &mut Option<KWait>,
    ) -> Result<Round, c_int> {
        if kw.is_none() {
            *kw = Some(KWait::enter(fd));
        }
        let none = libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        };
        let mut p = [none; MAX_POLL];
        // (context, is the control socket) of p[2..].
        let mut who = [(0usize, false); MAX_POLL];
        p[0] = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let drains = self.drains();
        // A thread that drains every context it registered on is in no
        // `idle` list, so no hand-off can reach it: its wake eventfd stays
        // out of the wait (a negative fd is ignored by `poll`), one fd less
        // for a thread alone in its wait.
        p[1] = libc::pollfd {
            fd: if drains == self.reg { -1 } else { self.ev() },
            events: libc::POLLIN,
            revents: 0,
        };
        let mut n = 2;
        for (idx, c) in live_drained(drains) {
            for (fd, ctl) in [(c.ev_fd, false), (c.ctl_fd, true)] {
                p[n] = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                who[n] = (idx, ctl);
                n += 1;
            }
        }
        // A handler ran since the call began: `EINTR` (`sys::SigScope`).
        let held = match sys::before_sleep(ms != 0) {
            Ok(h) => h,
            Err(e) => {
                *kw = None;
                return Err(e);
            }
        };
        let (r, e) = {
            let _l = sys::Leave::new();
            // Held signals are delivered in this wait (`sys::SigScope`).
            // SAFETY: `p` is a live local array of at least n pollfds;
            // `held` is a live local mask.
            let r = unsafe {
                sys::poll_masked(
                    p.as_mut_ptr(),
                    n as libc::nfds_t,
                    ms as i64,
                    held.as_ref().map(|m| m as *const libc::sigset_t),
                )
            };
            (r, sys::errno())
        };
        *kw = None;
        if r < 0 {
            return Err(e);
        }
        if r == 0 {
            return Ok(Round::Timeout);
        }
        if p[0].revents == 0 {
            // Woken for news or a hand-off: the call likely goes on, and a
            // signal from here on must end it.
            sys::hold_signals();
        }
        if p[1].revents != 0 {
            self.clear_wake();
        }
        for i in 2..n {
            if p[i].revents != 0 {
                crate::wait::handle_our_fd(who[i].0, who[i].1);
            }
        }
        Ok(
            if p[0].revents != 0 || crate::vready::lazy_ready(fd, events) == Some(true) {
                Round::Ready
            } else {
                Round::Again
            },
        )
    }
}
