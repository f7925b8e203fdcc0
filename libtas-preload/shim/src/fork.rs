//! fork(): the interposed `fork` and the `pthread_atfork` handlers.
//!
//! Every lock of the shim is taken before `fork()` and released after it
//! in the parent; in the child (where only the forking thread exists) they
//! are reset and a new generation starts: the parent's contexts are never
//! touched by the child.
//!
//! Sockets survive the fork (`share`): before forking, a process that has
//! TAS sockets asks tasd for a grant under a random token (`SHARE`) and,
//! after, names the child (`SHARE_PID`); from then on its sockets are
//! *shared* and its `close` only lets go of its reference. The child
//! remembers the token; on its first use of an inherited socket
//! ([`adopt`], called by `fdtab::kind`), it attaches a context that shares
//! the parent context's region and takes the socket over with the state
//! it inherited. A child that only closes an inherited socket never
//! attaches: its reference goes when it exits.

use crate::ctx::Ctx;
use crate::fdtab::encode;
use crate::global::{global, try_global};
use crate::sock::St;
use crate::sys::{self, log};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// What this process inherited at its last fork.
#[derive(Default)]
pub struct Inherit {
    /// The grant's token (0: nothing inherited).
    pub token: u64,
    /// The generation the token belongs to.
    pub gen: u64,
    /// Parent context index -> our context sharing its region.
    pub aliases: HashMap<usize, usize>,
    /// Sockets inherited across exec (`exec.rs`).
    pub exec: crate::exec::Inherited,
    /// Region owner app id -> our context sharing it, for sockets
    /// received by `SCM_RIGHTS` (`pass.rs`).
    pub passed: HashMap<u32, usize>,
}

/// This process's pid as of its start-up or its last `fork` (set by
/// `init` and `atfork_child`). A `vfork` child, which runs on its
/// parent's memory until it execs, reads its parent's pid here.
static PID: AtomicI32 = AtomicI32::new(0);

/// Records this process's pid (at start-up, and in a forked child).
pub fn note_pid() {
    // SAFETY: getpid takes no arguments.
    PID.store(unsafe { libc::getpid() }, Ordering::Relaxed);
}

/// Whether this runs in the child of a `vfork` (not interposed): on the
/// parent's memory, as another process, until it execs.
pub fn in_vfork_child() -> bool {
    let p = PID.load(Ordering::Relaxed);
    // SAFETY: getpid takes no arguments.
    p != 0 && p != unsafe { libc::getpid() }
}

/// A fresh grant token, odd (0 means "none"). The token is what lets the
/// child of a `fork` or the image after an `exec` take sockets over before
/// tasd knows its pid, so it must not be guessable: 63 bits from
/// `getrandom`, else from `/dev/urandom`; only where the kernel gives
/// neither (a seccomp filter that refuses both, no `/dev`) a mix of
/// clocks, ids and addresses, logged. (A failed `getrandom` used to leave
/// the token at 1.)
pub fn random_token() -> u64 {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    kernel_random().unwrap_or_else(|| {
        if !LOGGED.swap(true, Ordering::Relaxed) {
            log(
                "no kernel randomness for grant tokens (getrandom, /dev/urandom): weaker ones used",
            );
        }
        mixed_token()
    }) | 1
}

/// 8 random bytes from `getrandom`, else `/dev/urandom` (raw system
/// calls: the shim's own `open`/`read` are interposed).
fn kernel_random() -> Option<u64> {
    let mut b = [0u8; 8];
    if fill(&mut b, |p, n| {
        // SAFETY: getrandom writes at most `n` bytes at `p`, which `fill`
        // keeps inside `b`.
        unsafe {
            crate::rawsys::raw(
                libc::SYS_getrandom,
                [p as libc::c_long, n as libc::c_long, 0, 0, 0, 0],
            ) as i64
        }
    }) {
        return Some(u64::from_ne_bytes(b));
    }
    let path = c"/dev/urandom";
    let flags = (libc::O_RDONLY | libc::O_CLOEXEC) as libc::c_long;
    // SAFETY: openat with a NUL-terminated path that outlives the call.
    let fd = unsafe {
        crate::rawsys::raw(
            libc::SYS_openat,
            [
                libc::AT_FDCWD as libc::c_long,
                path.as_ptr() as libc::c_long,
                flags,
                0,
                0,
                0,
            ],
        )
    };
    if fd < 0 {
        return None;
    }
    let ok = fill(&mut b, |p, n| {
        // SAFETY: read writes at most `n` bytes at `p`, inside `b`.
        unsafe {
            crate::rawsys::raw(
                libc::SYS_read,
                [fd, p as libc::c_long, n as libc::c_long, 0, 0, 0],
            ) as i64
        }
    });
    // SAFETY: the fd was opened just above and is closed once.
    unsafe { crate::rawsys::raw(libc::SYS_close, [fd, 0, 0, 0, 0, 0]) };
    ok.then(|| u64::from_ne_bytes(b))
}

/// Fills `b` with `get(ptr, len)` (bytes written, or `-errno` as a raw
/// system call returns it), retrying short reads and `EINTR`; false on any
/// other error or end of data.
fn fill(b: &mut [u8; 8], mut get: impl FnMut(*mut u8, usize) -> i64) -> bool {
    let mut got = 0;
    while got < b.len() {
        let r = get(b[got..].as_mut_ptr(), b.len() - got);
        if r > 0 {
            got += r as usize;
        } else if r != -(libc::EINTR as i64) {
            return false;
        }
    }
    true
}

/// A token from what differs between processes and moments when the kernel
/// gives no randomness: both clocks, the pid and tid, a stack and a code
/// address (ASLR), the time-stamp counter, mixed (splitmix64's finalizer).
fn mixed_token() -> u64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    // SAFETY: getpid and gettid take no arguments.
    let ids = unsafe { (libc::getpid() as u64) << 32 ^ libc::gettid() as u64 };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc reads the time-stamp counter; no memory is touched.
    let tsc = unsafe { std::arch::x86_64::_rdtsc() };
    #[cfg(not(target_arch = "x86_64"))]
    let tsc = 0u64;
    let mut x = sys::monotonic_ns()
        ^ wall.rotate_left(17)
        ^ ids.rotate_left(29)
        ^ (&local as *const u8 as u64).rotate_left(41)
        ^ (mixed_token as fn() -> u64 as usize as u64).rotate_left(7)
        ^ tsc;
    for _ in 0..2 {
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
    }
    x
}

/// The interposed `fork()`: the grant before, the child's pid after (see
/// the module documentation).
pub fn fork() -> libc::pid_t {
    let real = sys::real::fork::get();
    let Some(g) = try_global() else {
        // SAFETY: fork takes no arguments.
        return unsafe { real() };
    };
    let _e = sys::Enter::new();
    // Sockets inherited across exec and not taken over yet are taken over
    // now (the grant below covers what this process holds).
    let pending: Vec<libc::c_int> = g
        .inherit
        .lock()
        .exec
        .entries
        .iter()
        .flatten()
        .map(|e| e.fds[0])
        .collect();
    for fd in pending {
        let _ = crate::fdtab::kind(fd);
    }
    let has_socks =
        g.live_ctxs().any(|c| !c.inner.lock().socks.is_empty()) || g.inherit.lock().token != 0;
    // The context that speaks for the process (tasd covers every context
    // of the pid, and what grants to the pid hold); a process that only
    // inherited sockets and never used them (a daemon()'s child that
    // forks workers) attaches one for this.
    let speaker = match g.live_ctxs().find(|c| !c.dead.load(Ordering::Relaxed)) {
        Some(c) => Some(c),
        None if has_socks => crate::ctx::my_ctx(),
        None => None,
    };
    let mut token = 0;
    if let (Some(c), true) = (speaker, has_socks) {
        let t = random_token();
        let mut inner = c.inner.lock();
        match inner.tas.share_begin(t) {
            Ok(()) => token = t,
            Err(e) => {
                if g.cfg.debug {
                    log(&format!(
                        "fork: tasd refused to share the sockets ({e}); the child cannot use them"
                    ));
                }
            }
        }
    }
    // SAFETY: fork takes no arguments.
    let pid = unsafe { real() };
    if pid == 0 {
        let mut inh = g.inherit.lock();
        if token != 0 {
            inh.token = token;
            inh.gen = g.gen.load(Ordering::Acquire);
            inh.aliases.clear();
        } else {
            inh.token = 0;
            inh.aliases.clear();
        }
        inh.passed.clear();
        // Sockets inherited across exec and not taken over yet are
        // described by a grant to the parent's pid: this process cannot use
        // them.
        let exec = std::mem::take(&mut inh.exec);
        for e in exec.entries.into_iter().flatten() {
            for f in e.fds {
                g.set_fd(f, 0);
            }
        }
        return 0;
    }
    if token != 0 {
        let c = speaker.expect("token implies a speaker");
        let mut inner = c.inner.lock();
        let _ = inner.tas.share_pid(token, pid.max(0));
        drop(inner);
        if pid > 0 {
            for c in g.live_ctxs() {
                let mut inner = c.inner.lock();
                let mut quiet = Vec::new();
                let mut conns = Vec::new();
                for s in inner.socks.values_mut() {
                    s.shared = true;
                    if let St::Listening(l) = s.st {
                        if !s.interest {
                            quiet.push(l);
                        }
                    }
                    if let St::Connected(c) = s.st {
                        conns.push(c);
                    }
                }
                // The child may take connections over: the next use here
                // takes them back with where the child left them.
                for c in conns {
                    inner.tas.set_taken(c);
                }
                // Listeners this process never accepted on are not handed
                // connections while children accept (a master process).
                for l in quiet {
                    let _ = inner.tas.set_accepting(l, false);
                    g.quiet.fetch_add(1, Ordering::Relaxed);
                }
                inner.after();
            }
        }
    }
    pid
}

/// First use of socket `sid` of `old` (a context of an older generation:
/// inherited) in this process: take it over. Returns its context and id
/// in this process, or None (then it keeps giving errors as an orphan).
pub fn adopt(fd: libc::c_int, old: &'static Ctx, sid: u64) -> Option<(&'static Ctx, u64)> {
    let g = global();
    let _e = sys::Enter::new();
    let mut inh = g.inherit.lock();
    let gen = g.gen.load(Ordering::Acquire);
    if inh.token == 0 || inh.gen != gen {
        return None;
    }
    let token = inh.token;
    let new = match inh.aliases.get(&old.idx).and_then(|&i| g.ctx(i)) {
        Some(c) => c,
        None => {
            // The parent's attach socket (a program may clear the
            // environment of its children, as nginx does for workers).
            let (target, path) = {
                let oi = old.inner.lock();
                (oi.tas.app_id(), oi.tas.path().to_path_buf())
            };
            match crate::ctx::attach_alias(&path, target, token) {
                Ok(c) => {
                    inh.aliases.insert(old.idx, c.idx);
                    c
                }
                Err(e) => {
                    if g.cfg.debug {
                        log(&format!(
                            "fd {fd}: cannot take over the inherited socket: {e}"
                        ));
                    }
                    return None;
                }
            }
        }
    };
    drop(inh);
    let mut oi = old.inner.lock();
    let st = oi.socks.get(&sid)?.st;
    let mut ni = new.inner.lock();
    let r = match st {
        St::Connected(c) => {
            let state = oi.tas.export_conn(c)?;
            ni.tas.adopt_conn(state, token).map(|_| ())
        }
        St::Listening(l) => ni.tas.adopt_listener(l, token, true),
        St::Fresh | St::Failed => Ok(()),
        St::Connecting(_) => Err(std::io::Error::from_raw_os_error(libc::EINPROGRESS)),
    };
    if let Err(e) = r {
        if g.cfg.debug {
            log(&format!("fd {fd}: tasd refused the inherited socket: {e}"));
        }
        return None;
    }
    let mut s = oi.socks.remove(&sid)?;
    match st {
        St::Connected(c) => {
            oi.by_flow.remove(&c);
            ni.by_flow.insert(c, sid);
            // A readiness pair of its own, as for listeners: the inherited
            // one is one file with the parent's, whose state the parent's
            // shim keeps for itself (sshd's monitor carries on with the
            // connection after its pre-authentication child used it: a
            // byte the child left made the monitor's ppoll report data
            // that was not there).
            if let Err(e) = crate::ops::own_pair(&mut s) {
                if g.cfg.debug {
                    log(&format!(
                        "fd {fd}: no readiness pair of its own (errno {e})"
                    ));
                }
            }
        }
        St::Listening(l) => {
            oi.by_listener.remove(&l);
            ni.by_listener.insert(l, sid);
            s.interest = true;
            if let Err(e) = crate::ops::own_pair(&mut s) {
                if g.cfg.debug {
                    log(&format!(
                        "fd {fd}: no readiness pair of its own (errno {e})"
                    ));
                }
            }
        }
        _ => {}
    }
    s.shared = true;
    for &f in &s.fds {
        g.set_fd(f, encode(new.idx, sid));
    }
    ni.socks.insert(sid, s);
    ni.sync(sid);
    ni.after();
    Some((new, sid))
}

/// Which locks `atfork_prepare` took (index: [`fork_slot`]); one it found
/// held by its own thread (a `fork` from a signal handler that interrupted
/// the shim) it leaves alone, and `atfork_parent` must not release it.
static FORK_TAKEN: [AtomicBool; 7 + crate::ctx::MAX_CTX] =
    [const { AtomicBool::new(false) }; 7 + crate::ctx::MAX_CTX];

/// Slots of [`FORK_TAKEN`]: 0-3 the global locks, 4-6 the statics,
/// 7.. the contexts.
fn fork_slot(i: usize) -> &'static AtomicBool {
    &FORK_TAKEN[i]
}

fn take_for_fork<T>(l: &crate::sys::Lock<T>, slot: usize) {
    fork_slot(slot).store(l.raw_lock_for_fork(), Ordering::Relaxed);
}

/// # Safety
///
/// Only in `atfork_parent`, for a lock `atfork_prepare` passed to
/// [`take_for_fork`] with the same slot, on the same thread.
unsafe fn release_after_fork<T>(l: &crate::sys::Lock<T>, slot: usize) {
    if fork_slot(slot).swap(false, Ordering::Relaxed) {
        // SAFETY: atfork_prepare took it without a guard on this thread
        // (the slot says so); it is released once.
        unsafe { l.raw_unlock() };
    }
}

extern "C" fn atfork_prepare() {
    if let Some(g) = try_global() {
        take_for_fork(&g.inherit, 0);
        take_for_fork(&g.create, 1);
        take_for_fork(&g.ports, 2);
        take_for_fork(&g.local_cache, 3);
        for i in 0..g.nctx.load(Ordering::Acquire) {
            if let Some(c) = g.ctx(i) {
                take_for_fork(&c.inner, 7 + i);
            }
        }
    }
    // Innermost locks last: nothing takes another shim lock while holding
    // them. They are statics, taken whether or not the process has a
    // global state yet. A lock another thread (the reactor) held at fork
    // would stay locked forever in the child, where that thread does not
    // exist: a prefork child's main thread (in `accept`) and its reactor
    // both waited on the wildcard listeners' list for good, about one run
    // in 20 (`fork::tests::statics_held_by_another_thread_are_free_in_the_child`).
    take_for_fork(&crate::ops::wild::KL, 4);
    take_for_fork(&crate::debug::KINDS, 5);
    take_for_fork(&crate::spawn::FA, 6);
}

extern "C" fn atfork_parent() {
    // SAFETY: (all) the same slots atfork_prepare used, on this thread.
    unsafe {
        release_after_fork(&crate::spawn::FA, 6);
        release_after_fork(&crate::debug::KINDS, 5);
        release_after_fork(&crate::ops::wild::KL, 4);
    }
    let Some(g) = try_global() else { return };
    // SAFETY: as above.
    unsafe {
        for i in (0..g.nctx.load(Ordering::Acquire)).rev() {
            if let Some(c) = g.ctx(i) {
                release_after_fork(&c.inner, 7 + i);
            }
        }
        release_after_fork(&g.local_cache, 3);
        release_after_fork(&g.ports, 2);
        release_after_fork(&g.create, 1);
        release_after_fork(&g.inherit, 0);
    }
}

extern "C" fn atfork_child() {
    for f in &FORK_TAKEN {
        f.store(false, Ordering::Relaxed);
    }
    // SAFETY: in the child only the forking thread exists, and it took these
    // locks in atfork_prepare (or, forking from a signal handler, held them
    // already in the code the handler interrupted, which does not go on in
    // the child).
    unsafe {
        crate::spawn::FA.reset();
        crate::debug::KINDS.reset();
        crate::ops::wild::KL.reset();
        crate::vready::after_fork_child();
    }
    note_pid();
    let Some(g) = try_global() else { return };
    // SAFETY: as above, for the global state's locks.
    unsafe {
        for i in 0..g.nctx.load(Ordering::Acquire) {
            if let Some(c) = g.ctx(i) {
                c.inner.reset();
            }
        }
        g.local_cache.reset();
        g.ports.reset();
        g.create.reset();
        g.inherit.reset();
    }
    // Only the forking thread lives on, and it was in no wait.
    g.spin.after_fork_child();
    g.gen.fetch_add(1, Ordering::AcqRel);
}

pub fn register_atfork() {
    // SAFETY: the handlers are extern "C" functions of this library, which
    // stays loaded for the life of the process (LD_PRELOAD).
    unsafe {
        libc::pthread_atfork(
            Some(atfork_prepare),
            Some(atfork_parent),
            Some(atfork_child),
        )
    };
}

/// A program waits for connections on TAS socket `fd` (accept, poll,
/// select, epoll): if it is a listener this process said at a fork it
/// does not accept on, it does now.
pub fn note_interest(ctx: &'static Ctx, sid: u64) {
    let g = global();
    let mut inner = ctx.inner.lock();
    let Some(s) = inner.socks.get_mut(&sid) else {
        return;
    };
    if s.interest {
        return;
    }
    s.interest = true;
    if let (true, St::Listening(l)) = (s.shared, s.st) {
        let _ = inner.tas.set_accepting(l, true);
        let _ = g
            .quiet
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| q.checked_sub(1));
    }
}

/// Before `chroot` or a change of credentials, after which the attach
/// socket may be out of reach (sshd's privilege-separated child chroots to
/// an empty directory and becomes another user): attaches the contexts
/// that inherited sockets (from the parent, or across exec) will be taken
/// over through, without taking them over — that still happens at their
/// first use, over the context's open control socket. Taking them over
/// here would take the connection from the process that uses it: sshd's
/// session child for root calls `setuid` and only closes the connection,
/// while the monitor goes on sending the session's data (its commands
/// refused while the child held the flow: the client saw a corrupted
/// stream).
pub fn prepare_all() {
    let Some(g) = try_global() else { return };
    let _e = sys::Enter::new();
    let gen = g.gen.load(Ordering::Acquire);
    let mut inh = g.inherit.lock();
    if inh.token != 0 && inh.gen == gen {
        let token = inh.token;
        for i in 0..g.nctx.load(Ordering::Acquire) {
            let Some(old) = g.ctx(i) else { continue };
            if old.gen == gen || inh.aliases.contains_key(&old.idx) {
                continue;
            }
            let (used, target, path) = {
                let oi = old.inner.lock();
                (
                    !oi.socks.is_empty(),
                    oi.tas.app_id(),
                    oi.tas.path().to_path_buf(),
                )
            };
            if !used {
                continue;
            }
            match crate::ctx::attach_alias(&path, target, token) {
                Ok(c) => {
                    inh.aliases.insert(old.idx, c.idx);
                }
                Err(e) => {
                    if g.cfg.debug {
                        log(&format!("cannot attach for the inherited sockets: {e}"));
                    }
                }
            }
        }
    }
    let token = inh.exec.token;
    let apps: Vec<u32> = inh.exec.entries.iter().flatten().map(|e| e.app).collect();
    for app in apps {
        if inh.exec.aliases.contains_key(&app) {
            continue;
        }
        match crate::ctx::attach_alias(&tas::socket_path(), app, token) {
            Ok(c) => {
                inh.exec.aliases.insert(app, c.idx);
            }
            Err(e) => {
                if g.cfg.debug {
                    log(&format!(
                        "cannot attach for the sockets inherited across exec: {e}"
                    ));
                }
            }
        }
    }
}

/// The program is about to set its `RLIMIT_NOFILE` soft limit to `cur`:
/// if that leaves no room for an inherited socket's fd number plus a new
/// pair (`dup3` onto a number at or above the limit fails with `EBADF`,
/// `socketpair` with `EMFILE`), every inherited socket is taken over now.
/// sshd's sandboxed pre-authentication child sets it to 1 just before its
/// seccomp filter: taken over after that, the connection kept the pair it
/// shares with the monitor, whose shim left bytes in it, and the child
/// found it readable with nothing to read (`Resource temporarily
/// unavailable [preauth]`).
pub fn before_nofile_limit(cur: libc::rlim_t) {
    let Some(g) = try_global() else { return };
    let gen = g.gen.load(Ordering::Acquire);
    let mut top: Option<libc::c_int> = None;
    for i in 0..g.nctx.load(Ordering::Acquire) {
        if let Some(c) = g.ctx(i) {
            if c.gen != gen {
                for s in c.inner.lock().socks.values() {
                    top = top.max(s.fds.iter().copied().max());
                }
            }
        }
    }
    for e in g.inherit.lock().exec.entries.iter().flatten() {
        top = top.max(e.fds.iter().copied().max());
    }
    if let Some(top) = top {
        if cur < top as libc::rlim_t + 8 {
            adopt_all();
        }
    }
}

/// Takes over every inherited socket (from the parent, or across exec)
/// now: before a seccomp filter, after which the shim cannot make the
/// system calls that takes (sshd's pre-authentication child; `prctl`).
pub fn adopt_all() {
    let Some(g) = try_global() else { return };
    let _e = sys::Enter::new();
    let gen = g.gen.load(Ordering::Acquire);
    let mut fds = Vec::new();
    for i in 0..g.nctx.load(Ordering::Acquire) {
        if let Some(c) = g.ctx(i) {
            if c.gen != gen {
                fds.extend(c.inner.lock().socks.values().map(|s| s.a));
            }
        }
    }
    fds.extend(
        g.inherit
            .lock()
            .exec
            .entries
            .iter()
            .flatten()
            .map(|e| e.fds[0]),
    );
    for fd in fds {
        let _ = crate::fdtab::kind(fd);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    /// Tokens are odd, and neither the kernel's nor the fallback's repeat
    /// (a failed `getrandom` used to give the token 1 every time).
    #[test]
    fn grant_tokens_are_odd_and_do_not_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let t = super::random_token();
            assert_eq!(t & 1, 1);
            assert!(seen.insert(t), "token {t:#x} repeated");
        }
        assert!(super::kernel_random().is_some());
        let mut weak = std::collections::HashSet::new();
        for _ in 0..1000 {
            let t = super::mixed_token();
            assert!(t != 0 && t != 1);
            assert!(weak.insert(t), "fallback token {t:#x} repeated");
        }
    }

    /// `fill` retries short reads and EINTR, and gives up on an error or
    /// the end of the data.
    #[test]
    fn fill_retries_short_reads_and_eintr_only() {
        let mut b = [0u8; 8];
        let mut calls = 0;
        assert!(super::fill(&mut b, |p, n| {
            calls += 1;
            match calls {
                1 => -(libc::EINTR as i64),
                2 | 3 => {
                    // SAFETY: `fill` hands a pointer to `n` >= 3 writable bytes.
                    unsafe { p.write_bytes(7, 3) };
                    3
                }
                _ => {
                    // SAFETY: as above, `n` writable bytes.
                    unsafe { p.write_bytes(9, n) };
                    n as i64
                }
            }
        }));
        assert_eq!(b, [7, 7, 7, 7, 7, 7, 9, 9]);
        assert!(!super::fill(&mut b, |_, _| -(libc::ENOSYS as i64)));
        assert!(!super::fill(&mut b, |_, _| 0));
    }

    /// A shim lock that another thread holds when the process forks is
    /// free in the child (the atfork handlers, registered by the library's
    /// constructor, take it across the fork). Before the wildcard
    /// listeners' list and the debug rate limiter were among them, a
    /// child could inherit one locked by a thread it does not have.
    #[test]
    fn statics_held_by_another_thread_are_free_in_the_child() {
        for round in 0..2 {
            let (held_tx, held_rx) = mpsc::channel();
            let holder = std::thread::spawn(move || {
                let kl = crate::ops::wild::KL.lock();
                let kinds = crate::debug::KINDS.lock();
                let fa = crate::spawn::FA.lock();
                held_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(100));
                drop(fa);
                drop(kinds);
                drop(kl);
            });
            held_rx.recv().unwrap();
            // SAFETY: the child only tries two locks and _exits.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork");
            if pid == 0 {
                let ok = crate::ops::wild::KL.try_lock().is_some()
                    && crate::debug::KINDS.try_lock().is_some()
                    && crate::spawn::FA.try_lock().is_some();
                // SAFETY: _exit takes no pointers; nothing of the child's
                // state needs to be flushed.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            let mut st = 0;
            // SAFETY: `st` is a live local for waitpid's status.
            assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
            assert!(
                libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
                "round {round}: the child found a lock held by a thread it does not have"
            );
            holder.join().unwrap();
        }
    }

    static CHILD_OK: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

    extern "C" fn fork_in_handler(_: libc::c_int) {
        // SAFETY: fork in a signal handler (async-signal-safe in glibc,
        // which is what PostgreSQL 15's postmaster does); the child only
        // tries a lock and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = crate::ops::wild::KL.try_lock().is_some();
            // SAFETY: _exit takes no pointers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut st = 0;
        // SAFETY: `st` is a live local for waitpid's status.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        let ok = pid > 0 && libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0;
        CHILD_OK.store(i32::from(ok), std::sync::atomic::Ordering::SeqCst);
    }

    /// A `fork` from a signal handler that interrupted code holding a shim
    /// lock (PostgreSQL 15's postmaster starts its children from its
    /// SIGUSR1 and SIGCHLD handlers) does not wait for that lock in the
    /// atfork handler (its own thread holds it: it waited for ever), and
    /// the child finds it free. Run in a child process, so that a deadlock
    /// fails the test instead of hanging it.
    #[test]
    fn fork_from_a_signal_handler_while_the_thread_holds_a_lock() {
        // SAFETY: the child runs the scenario and _exits.
        let runner = unsafe { libc::fork() };
        assert!(runner >= 0);
        if runner == 0 {
            // SAFETY: installs a plain handler for SIGUSR2 in this
            // (single-threaded) child.
            unsafe {
                libc::signal(
                    libc::SIGUSR2,
                    fork_in_handler as extern "C" fn(libc::c_int) as libc::sighandler_t,
                );
            }
            let g = crate::ops::wild::KL.lock();
            // SAFETY: raise takes no pointers; the handler runs now, on this
            // thread, while it holds the lock.
            unsafe { libc::raise(libc::SIGUSR2) };
            drop(g);
            let ok = CHILD_OK.load(std::sync::atomic::Ordering::SeqCst) == 1;
            // SAFETY: _exit takes no pointers.
            unsafe { libc::_exit(if ok { 0 } else { 2 }) };
        }
        let start = std::time::Instant::now();
        let mut st = 0;
        loop {
            // SAFETY: `st` is a live local for waitpid's status.
            let r = unsafe { libc::waitpid(runner, &mut st, libc::WNOHANG) };
            if r == runner {
                break;
            }
            if start.elapsed() > Duration::from_secs(5) {
                // SAFETY: kill and waitpid take no pointers but `st`.
                unsafe {
                    libc::kill(runner, libc::SIGKILL);
                    libc::waitpid(runner, &mut st, 0);
                }
                panic!("the fork from the signal handler deadlocked in the atfork handler");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
            "status {st:#x}: the child of the handler's fork found the lock held"
        );
    }
}
