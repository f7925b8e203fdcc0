//! Readiness without system calls (issue 15, item 5): a TAS socket that
//! only one epoll set of this process watches is *virtual* — its
//! readability is not signalled on its readiness pair (no `send` per
//! arrival, no `recv` per drain); the epoll set's [`EpSet`] keeps a list of
//! its virtual sockets that may be readable, and `epoll_wait` answers them
//! from user space beside what the kernel reports for the set.
//!
//! Only readability moves here. Everything else a socket signals (write
//! space, `EPOLLRDHUP`, `EPOLLHUP`, errors) still goes through its pair, so
//! the kernel reports it in the same `epoll_wait`; events for the same
//! registration are merged into one (by `data`, which is all the program
//! can tell them apart by).
//!
//! A socket is virtual while all of these hold (else its pair carries
//! readability as before, see `readiness.rs`):
//! * exactly one epoll registration, without `EPOLLONESHOT` or
//!   `EPOLLEXCLUSIVE`, on its only fd number;
//! * no other process may hold it (`Sock::shared`: a fork, exec,
//!   `posix_spawn` or `SCM_RIGHTS` makes it shared);
//! * it was never waited on in any other way: `poll`, `select` or a
//!   blocking call on it makes it non-virtual for good
//!   ([`demote_virtual_fd`]), since those read the pair.
//!
//! A socket in no epoll set that nothing else watches either (the same
//! conditions, with no registration at all) is *lazy*: the shim's waits
//! look at it in user space ([`lazy_ready`]: the spin of a blocking call,
//! [`poll_lazy`] for `poll`/`select`, `Solo::block` after a wake-up), and
//! only while a thread sleeps in the kernel on it (a blocking call's
//! [`KWait`], a `poll`/`select`'s [`PollKWait`], counted in `Sock::kwait`)
//! does its readability go on the pair, so that news another thread takes
//! meanwhile wakes it; that ends when the kernel's wait returns, before the
//! thread takes its own news. A thread-per-connection
//! server's read that finds its data while spinning then costs no system
//! call on the pair.
//!
//! A thread that blocks in `epoll_wait` counts itself in
//! [`EpSet::waiters`]; whoever queues a socket on a set with waiters writes
//! the set's eventfd, which sits in the set tagged like the contexts' fds.
//!
//! Lock order: a context's lock, then a set's list. [`collect`] takes the
//! list, lets go of it, then takes context locks one at a time.

use crate::ctx::Inner;
use crate::fdtab::{high_fd_base, kind, Kind, T_INTERNAL};
use crate::global::global;
use crate::readiness::Want;
use crate::sock::Sock;
use crate::sys::{self, real, Lock};
use crate::wait::EPOLL_TAG;
use libc::c_int;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// `epoll_event.data` of a set's wake eventfd: the contexts' tag with a
/// context number no context has (`wait::handle_our_fd` ignores it).
pub const WAKE_DATA: u64 = EPOLL_TAG | 0xFFFF_FFFE;

/// Virtual sockets in this process (0: the checks in `poll`, `select` and
/// blocking calls cost nothing).
static VIRTUAL: AtomicUsize = AtomicUsize::new(0);
/// Registration ids (a list entry belongs to one registration).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// The sets by epoll fd number (dup'ed numbers share one set).
static SETS: Lock<Vec<(c_int, Arc<EpSet>)>> = Lock::new(Vec::new());

/// What one epoll set keeps for its virtual sockets.
pub struct EpSet {
    /// An eventfd registered in the set ([`WAKE_DATA`]).
    wake: c_int,
    /// Threads blocked in `epoll_wait` on the set.
    waiters: AtomicU32,
    /// The eventfd was written and not drained yet.
    kicked: AtomicBool,
    /// No fd number refers to the set any more.
    dead: AtomicBool,
    /// Sockets that may be readable: (context, socket, registration id).
    ready: Lock<Vec<(usize, u64, u64)>>,
}

impl Drop for EpSet {
    fn drop(&mut self) {
        if self.wake >= 0 {
            global().set_fd(self.wake, 0);
            sys::r_close(self.wake);
        }
    }
}

/// A virtual socket's registration.
pub struct VReg {
    set: Arc<EpSet>,
    id: u64,
    events: u32,
    data: u64,
    /// The readiness key last reported (edge-triggered: a new one is a new
    /// edge, as a new arrival is for Linux TCP).
    key: u64,
    /// In the set's list.
    queued: bool,
}

impl VReg {
    fn new(set: Arc<EpSet>, ev: &libc::epoll_event) -> VReg {
        VIRTUAL.fetch_add(1, Ordering::Relaxed);
        VReg {
            set,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            events: ev.events,
            data: ev.u64,
            key: u64::MAX,
            queued: false,
        }
    }
}

impl Drop for VReg {
    fn drop(&mut self) {
        VIRTUAL.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether user-space readiness is on (`TAS_USER_WAIT=0` turns it off).
fn enabled() -> bool {
    global().cfg.user_wait
}

/// The set of epoll fd `epfd`, made on first use.
fn set_for(epfd: c_int) -> Option<Arc<EpSet>> {
    let mut sets = SETS.lock();
    if let Some((_, s)) = sets.iter().find(|(n, _)| *n == epfd) {
        return Some(s.clone());
    }
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let fd = sys::move_high(fd, high_fd_base());
    global().set_fd(fd, T_INTERNAL);
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: WAKE_DATA,
    };
    // SAFETY: `ev` is a live local the kernel only reads; fd is ours.
    if unsafe { real::epoll_ctl::get()(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
        global().set_fd(fd, 0);
        sys::r_close(fd);
        return None;
    }
    let s = Arc::new(EpSet {
        wake: fd,
        waiters: AtomicU32::new(0),
        kicked: AtomicBool::new(false),
        dead: AtomicBool::new(false),
        ready: Lock::new(Vec::new()),
    });
    sets.push((epfd, s.clone()));
    Some(s)
}

/// The set of `epfd`, if it has one.
pub fn find(epfd: c_int) -> Option<Arc<EpSet>> {
    SETS.lock()
        .iter()
        .find(|(n, _)| *n == epfd)
        .map(|(_, s)| s.clone())
}

/// Epoll fd number `fd` is closed.
pub fn epfd_closed(fd: c_int) {
    let mut sets = SETS.lock();
    let Some(i) = sets.iter().position(|(n, _)| *n == fd) else {
        return;
    };
    let (_, s) = sets.swap_remove(i);
    if !sets.iter().any(|(_, o)| Arc::ptr_eq(o, &s)) {
        s.dead.store(true, Ordering::Release);
    }
}

/// Epoll fd `old` was duplicated as `new` (one epoll instance, one set).
pub fn epfd_dup(old: c_int, new: c_int) {
    let mut sets = SETS.lock();
    sets.retain(|(n, _)| *n != new);
    if let Some(s) = sets.iter().find(|(n, _)| *n == old).map(|(_, s)| s.clone()) {
        sets.push((new, s));
    }
}

/// In a forked child: the parent's sets are the parent's (every socket the
/// child inherited is shared, so none of them is virtual here).
///
/// # Safety
///
/// Only in the child right after `fork`, where no other thread exists.
pub unsafe fn after_fork_child() {
    // SAFETY: single-threaded child (contract): whoever held it is gone.
    unsafe { SETS.reset() };
    // The Arcs may be referenced from sockets the child never touches
    // again; their eventfds stay open (forgetting is cheaper than a close
    // of a file the parent's set still holds).
    std::mem::forget(std::mem::take(&mut *SETS.lock()));
}

/// Whether `s` is lazy (see the module docs): its readability goes on its
/// pair only while a thread is blocked in the kernel on it.
pub fn lazy(s: &Sock) -> bool {
    enabled()
        && s.virt.is_none()
        && !s.no_virt
        && !s.shared
        && s.fds.len() == 1
        && s.klisten < 0
        && s.epoll_regs.is_empty()
}

/// [`note`] for a lazy socket: clears `w.r` unless a thread is blocked on
/// the pair; true when readability changed since last time (the spinning
/// waiters look again).
fn note_lazy(s: &mut Sock, w: &mut Want) -> bool {
    let now = if w.r { Some(w.key) } else { None };
    let changed = now != s.lazy_seen;
    s.lazy_seen = now;
    if s.kwait == 0 {
        w.r = false;
    }
    changed
}

/// While alive, a thread is (about to be) blocked in the kernel on the
/// pair of socket `fd` in a blocking call: a lazy socket's readability is
/// put on its pair meanwhile.
pub struct KWait {
    at: Option<(&'static crate::ctx::Ctx, u64)>,
}

impl KWait {
    pub fn enter(fd: c_int) -> KWait {
        let Kind::Sock(ctx, sid) = kind(fd) else {
            return KWait { at: None };
        };
        let mut inner = ctx.inner.lock();
        let Some(s) = inner.socks.get_mut(&sid) else {
            return KWait { at: None };
        };
        s.kwait += 1;
        inner.sync(sid);
        KWait {
            at: Some((ctx, sid)),
        }
    }
}

impl Drop for KWait {
    fn drop(&mut self) {
        let Some((ctx, sid)) = self.at else { return };
        let mut inner = ctx.inner.lock();
        if let Some(s) = inner.socks.get_mut(&sid) {
            s.kwait = s.kwait.saturating_sub(1);
            if s.kwait == 0 {
                // Takes back what the pair carried for the wait.
                inner.sync(sid);
            }
        }
    }
}

/// For the spin of a blocking call on `fd`: whether a lazy socket is ready
/// for `events` (`POLLIN`/`POLLOUT`), looked at in user space; None when
/// `fd` is not lazy (its pair tells).
pub fn lazy_ready(fd: c_int, events: i16) -> Option<bool> {
    with_lazy(fd, |_, _, w| {
        (events & libc::POLLIN != 0 && (w.r || w.err || w.rdhup))
            || (events & libc::POLLOUT != 0 && (w.w || w.err))
    })
}

/// `f(context, socket id, what it should signal now)` for the socket of
/// `fd` under its context's lock, its connection's error taken first; None
/// when `fd` is not a lazy TAS socket.
fn with_lazy<R>(fd: c_int, f: impl FnOnce(&mut Inner, u64, &Want) -> R) -> Option<R> {
    let Kind::Sock(ctx, sid) = kind(fd) else {
        return None;
    };
    let mut inner = ctx.inner.lock();
    let w = {
        let Inner { tas, socks, .. } = &mut *inner;
        let s = socks.get_mut(&sid)?;
        if !lazy(s) {
            return None;
        }
        crate::sock::take_conn_error(s, tas);
        crate::readiness::want(s, tas)
    };
    Some(f(&mut inner, sid, &w))
}

/// The readability entry `p` of a `poll`/`select` asks for
/// (`POLLIN`/`POLLRDNORM`) if its fd is a TAS socket, else 0.
fn read_asked(p: &libc::pollfd) -> i16 {
    if global().fd(p.fd) & crate::fdtab::T_SOCK != 0 {
        p.events & (libc::POLLIN | libc::POLLRDNORM)
    } else {
        0
    }
}

/// What a lazy socket's readability looks like in user space ([`lazy_look`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LazyLook {
    NotReadable,
    /// Readable for data only: what its pair does not carry.
    Readable,
    /// An error or a hang-up (readable too), which its pair does carry.
    OnPair,
}

/// [`lazy_ready`] for readability, telling data apart from an error or a
/// hang-up; for the latter the pair is brought up to date first (an error
/// only just taken from the connection). None when `fd` is not lazy.
fn lazy_look(fd: c_int) -> Option<LazyLook> {
    with_lazy(fd, |inner, sid, w| {
        if w.err || w.rdhup {
            inner.sync(sid);
            LazyLook::OnPair
        } else if w.r {
            LazyLook::Readable
        } else {
            LazyLook::NotReadable
        }
    })
}

/// The user-space half of `poll`/`select` on lazy sockets: ORs
/// `POLLIN | POLLRDNORM` (as far as asked for) into the entries of `fds`
/// that are lazy TAS sockets readable now (their pairs do not carry it),
/// and returns how many entries have events. Entries of other fds are
/// left as the kernel reported them — except a lazy socket that has an
/// error or a hang-up the kernel's answer did not show yet: the news came
/// after it (another thread took it), so the kernel is asked again for
/// that entry, which then says all of it at once as on Linux
/// (`IN|OUT|ERR|HUP|RDHUP` for a refused connect, not `IN` alone).
pub fn poll_lazy(fds: &mut [libc::pollfd]) -> c_int {
    let mut count = 0;
    for p in fds.iter_mut() {
        let asked = read_asked(p);
        if asked != 0 && p.revents & asked != asked {
            match lazy_look(p.fd) {
                Some(LazyLook::Readable) => p.revents |= asked,
                Some(LazyLook::OnPair) => p.revents |= repoll(p),
                _ => {}
            }
        }
        if p.revents != 0 {
            count += 1;
        }
    }
    count
}

/// The kernel's answer for one `poll` entry now (zero timeout; 0 on error).
fn repoll(p: &libc::pollfd) -> i16 {
    sys::revents_now(p.fd, p.events).max(0) as i16
}

/// Whether any entry of `fds` asks for readability of a lazy TAS socket
/// that is readable now (a wait must not sleep).
pub fn poll_lazy_any(fds: &[libc::pollfd]) -> bool {
    fds.iter()
        .any(|p| read_asked(p) != 0 && lazy_ready(p.fd, libc::POLLIN) == Some(true))
}

/// While alive, the calling thread is (about to be) blocked in the kernel
/// in `poll`/`select` on the pairs of the TAS sockets in `fds` it asked
/// readability of: their readability goes on the pairs meanwhile
/// ([`KWait`] for each), so news another thread takes while this one
/// sleeps wakes it. Ended as soon as the kernel's wait returns, before
/// this thread takes the news it was woken for, which then costs no
/// system call on the pair.
pub struct PollKWait {
    _waits: Vec<KWait>,
}

impl PollKWait {
    pub fn enter(fds: &[libc::pollfd]) -> PollKWait {
        PollKWait {
            _waits: fds
                .iter()
                .filter(|p| read_asked(p) != 0)
                .map(|p| KWait::enter(p.fd))
                .collect(),
        }
    }
}

/// Called by `epoll_ctl` after the kernel accepted it and `s.epoll_regs`
/// was updated: makes `s` virtual, keeps it so, or stops.
pub fn track(s: &mut Sock, epfd: c_int, op: c_int) {
    let eligible = enabled()
        && !s.no_virt
        && !s.shared
        && s.fds.len() == 1
        && s.klisten < 0
        && s.epoll_regs.len() == 1
        && s.epoll_regs[0].0 == epfd
        && s.epoll_regs[0].2.events & (libc::EPOLLONESHOT | libc::EPOLLEXCLUSIVE) as u32 == 0;
    if !eligible {
        if s.virt.is_some() {
            if op == libc::EPOLL_CTL_DEL && s.epoll_regs.is_empty() {
                unvirt(s);
            } else {
                demote(s);
            }
        }
        return;
    }
    let ev = s.epoll_regs[0].2;
    if let Some(v) = s.virt.as_mut() {
        if find(epfd).is_some_and(|cur| Arc::ptr_eq(&v.set, &cur)) {
            // EPOLL_CTL_MOD: Linux looks at the socket's readiness again
            // (and reports it, edge-triggered or not).
            v.events = ev.events;
            v.data = ev.u64;
            v.key = u64::MAX;
            return;
        }
        unvirt(s);
    }
    let Some(set) = set_for(epfd) else { return };
    s.virt = Some(VReg::new(set, &ev));
}

/// Not virtual any more, for now (its registration went).
fn unvirt(s: &mut Sock) {
    s.virt = None;
}

/// Not virtual, ever again: its pair must carry readability from now on.
/// The caller brings the pair up to date (`Inner::sync`).
pub fn demote(s: &mut Sock) {
    unvirt(s);
    s.no_virt = true;
}

/// Something is about to wait on fd `fd` through its pair (`SIGIO`, a
/// `poll` or `select` in a thread under a seccomp filter): if it is a
/// virtual or lazy socket, its pair takes over readability now, for good.
pub fn demote_fd(fd: c_int) {
    demote_fd_if(fd, |s| !s.no_virt);
}

/// A blocking call, `poll` or `select` is about to wait on `fd`: a virtual
/// socket's pair takes readability over (a lazy one stays lazy: the call
/// looks at it in user space, and its [`KWait`] or [`PollKWait`] covers
/// the time it sleeps in the kernel).
pub fn demote_virtual_fd(fd: c_int) {
    demote_fd_if(fd, |s| s.virt.is_some());
}

fn demote_fd_if(fd: c_int, which: impl Fn(&Sock) -> bool) {
    let Kind::Sock(ctx, sid) = kind(fd) else {
        return;
    };
    let mut inner = ctx.inner.lock();
    if let Some(s) = inner.socks.get_mut(&sid) {
        if which(s) {
            demote(s);
            inner.sync(sid);
        }
    }
}

/// From `Inner::sync` with what socket `sid` of context `ctx` should
/// signal: keeps `w.r` off the pair of a virtual socket (queueing it on its
/// set when readable, and waking a blocked waiter) and of a lazy socket
/// nobody blocks on ([`note_lazy`]). True when waiters should look again.
pub fn note(s: &mut Sock, ctx: usize, sid: u64, w: &mut Want) -> bool {
    if s.virt.is_none() {
        return lazy(s) && note_lazy(s, w);
    }
    if s.shared || s.fds.len() != 1 {
        demote(s);
        return false;
    }
    let v = s.virt.as_mut().expect("checked");
    if v.set.dead.load(Ordering::Acquire) {
        unvirt(s);
        return false;
    }
    let readable = w.r;
    w.r = false;
    if !readable || v.queued {
        return false;
    }
    if v.events & libc::EPOLLET as u32 != 0 && w.key == v.key {
        return false;
    }
    v.queued = true;
    v.set.ready.lock().push((ctx, sid, v.id));
    if v.set.waiters.load(Ordering::SeqCst) > 0 && !v.set.kicked.swap(true, Ordering::SeqCst) {
        let one = 1u64;
        // SAFETY: write reads the 8 bytes of the live local `one`; wake
        // is the set's eventfd.
        unsafe { real::write::get()(v.set.wake, &one as *const u64 as *const libc::c_void, 8) };
    }
    true
}

impl EpSet {
    /// Whether some socket may be ready (a wait must not block).
    pub fn has_ready(&self) -> bool {
        !self.ready.lock().is_empty()
    }

    /// A thread is about to block on the set (`enter`) or is back.
    pub fn waiting(&self, enter: bool) {
        if enter {
            self.waiters.fetch_add(1, Ordering::SeqCst);
        } else {
            self.waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The events of the set's ready virtual sockets, merged into `ev[..n]`
/// (the kernel's, already filtered) and appended up to `max`. Returns the
/// new count.
///
/// # Safety
///
/// `ev` must be valid for reads and writes of `max` events, `n <= max`.
pub unsafe fn collect(set: &EpSet, ev: *mut libc::epoll_event, n: c_int, max: c_int) -> c_int {
    // Drained before the flag is cleared, and both before the list is
    // taken: a socket queued meanwhile without a write (the flag was still
    // set) is in the list taken below. (Clearing first would let a write
    // made in between be drained with the flag left set, and the next
    // queued socket would not wake a blocked waiter.)
    if set.kicked.load(Ordering::SeqCst) {
        let mut v = 0u64;
        // SAFETY: read writes at most 8 bytes into the live local `v`.
        unsafe { real::read::get()(set.wake, &mut v as *mut u64 as *mut libc::c_void, 8) };
        set.kicked.store(false, Ordering::SeqCst);
    }
    let list = std::mem::take(&mut *set.ready.lock());
    if list.is_empty() {
        return n;
    }
    // SAFETY: ev holds max events (contract), borrowed only here.
    let out = unsafe { std::slice::from_raw_parts_mut(ev, max.max(0) as usize) };
    let mut n = n.max(0) as usize;
    let kernel = n;
    // Not reported for want of room: first next time; reported and still
    // ready (level-triggered): last, so that a small `maxevents` goes
    // round every ready socket (as Linux requeues them at the tail).
    let mut keep = Vec::new();
    let mut again = Vec::new();
    let mut resync = Vec::new();
    let g = global();
    let gen = g.gen.load(Ordering::Acquire);
    let mut cur: Option<(usize, crate::sys::Guard<'static, Inner>)> = None;
    for (c, sid, id) in list {
        if cur.as_ref().map(|x| x.0) != Some(c) {
            cur = None;
            let Some(ctx) = g.ctx(c) else { continue };
            if ctx.gen != gen {
                continue;
            }
            cur = Some((c, ctx.inner.lock()));
        }
        let Some((_, inner)) = cur.as_mut() else {
            continue;
        };
        let Inner { tas, socks, .. } = &mut **inner;
        let Some(s) = socks.get_mut(&sid) else {
            continue;
        };
        let Some(v) = s.virt.as_mut() else { continue };
        if v.id != id {
            continue;
        }
        // Shared meanwhile (a fork): reported this time, then its pair
        // takes over.
        let last = s.shared || s.fds.len() != 1;
        crate::sock::take_conn_error(s, tas);
        let w = crate::readiness::want(s, tas);
        let v = s.virt.as_mut().expect("checked");
        let et = v.events & libc::EPOLLET as u32 != 0;
        if !w.r || (et && w.key == v.key) {
            v.queued = false;
            continue;
        }
        let mut mask = (libc::EPOLLIN | libc::EPOLLRDNORM) as u32;
        if w.w {
            mask |= (libc::EPOLLOUT | libc::EPOLLWRNORM) as u32;
        }
        if w.rdhup {
            mask |= libc::EPOLLRDHUP as u32;
        }
        mask &= v.events;
        if mask & (libc::EPOLLIN | libc::EPOLLRDNORM) as u32 == 0 {
            // Nothing the program asked for (a later MOD looks again).
            v.queued = false;
            continue;
        }
        if let Some(e) = out[..kernel].iter_mut().find(|e| e.u64 == v.data) {
            e.events |= mask;
        } else if n < out.len() {
            out[n] = libc::epoll_event {
                events: mask,
                u64: v.data,
            };
            n += 1;
        } else {
            keep.push((c, sid, id));
            continue;
        }
        v.key = w.key;
        if last {
            demote(s);
            resync.push((c, sid));
        } else if et {
            v.queued = false;
        } else {
            again.push((c, sid, id));
        }
    }
    drop(cur);
    for (c, sid) in resync {
        if let Some(ctx) = g.ctx(c) {
            ctx.inner.lock().sync(sid);
        }
    }
    if !keep.is_empty() || !again.is_empty() {
        let mut r = set.ready.lock();
        keep.append(&mut r);
        keep.append(&mut again);
        *r = keep;
    }
    n as c_int
}
