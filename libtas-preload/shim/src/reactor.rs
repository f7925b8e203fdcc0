//! The reactor: one thread per process (started with the first context of
//! each fork generation) for what nobody else does — news for contexts no
//! thread is blocked on (a program waiting somewhere the shim does not see,
//! or busy), the command backlog, and debugging dumps (`TAS_PRELOAD_DEBUG`,
//! `/tmp/tas-dump-PID`). It runs with every signal blocked and sleeps in
//! `poll` on the wake eventfd and the control sockets of the contexts
//! nobody is blocked on: 10 ms at a time while there are such contexts,
//! 1 ms while a context has a command backlog, 1 s when there is nothing
//! to watch; the kernel listeners of wildcard listeners (`ops::wild`) are
//! in that poll too. A thread that stops waiting on a context (the last one
//! blocked on it) wakes the reactor from that long sleep
//! ([`wake_if_sleeping_long`]), so the sleep never delays news.

use crate::ctx::Ctx;
use crate::global::global;
use crate::sys::{self, log, real};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set while the reactor may be in (or about to enter) its long sleep,
/// i.e. from before it looks at the contexts' `blocked` counts until it
/// wakes. Together with `Ctx::blocked` (both SeqCst) this is a Dekker
/// pair: either the reactor sees a context unblocked and watches it, or
/// the thread that unblocked it sees this flag and wakes the reactor.
static SLEEPING_LONG: AtomicBool = AtomicBool::new(false);

/// Wakes the reactor (its set of fds to watch changed).
pub fn wake() {
    let one = 1u64;
    // SAFETY: write reads the 8 bytes of the live local `one`; wake_fd is
    // the shim's eventfd.
    unsafe {
        real::write::get()(
            global().wake_fd,
            &one as *const u64 as *const libc::c_void,
            8,
        )
    };
}

/// Wakes the reactor if it may be sleeping without watching a context
/// that just became unwatched (called when a context's last blocked
/// thread leaves its wait; a system call only in that case).
pub fn wake_if_sleeping_long() {
    if SLEEPING_LONG.swap(false, Ordering::SeqCst) {
        wake();
    }
}

/// Starts the reactor thread of the current generation.
pub fn start_reactor() {
    let r = std::thread::Builder::new()
        .name("tas-reactor".into())
        .spawn(reactor);
    if let Err(e) = r {
        log(&format!("cannot start the reactor thread: {e}"));
    }
}

fn reactor() {
    let _e = sys::Enter::new();
    // SAFETY: `set` is a live local (all-zero is a valid sigset_t, and
    // sigfillset fills it); pthread_sigmask only reads it and changes this
    // thread's mask alone (the app's signal handlers then run on its own
    // threads).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let g = global();
    let gen = g.gen.load(Ordering::Acquire);
    let mut pfds: Vec<libc::pollfd> = Vec::new();
    let mut watched: Vec<&'static Ctx> = Vec::new();
    let mut kl: Vec<libc::c_int> = Vec::new();
    loop {
        if g.gen.load(Ordering::Acquire) != gen {
            return;
        }
        pfds.clear();
        watched.clear();
        pfds.push(libc::pollfd {
            fd: g.wake_fd,
            events: libc::POLLIN,
            revents: 0,
        });
        let mut timeout = 1000;
        SLEEPING_LONG.store(true, Ordering::SeqCst);
        for c in g.live_ctxs() {
            if c.dead.load(Ordering::Relaxed) {
                continue;
            }
            if c.tick.load(Ordering::Relaxed) {
                timeout = 1;
            }
            if c.blocked.load(Ordering::SeqCst) > 0 {
                continue;
            }
            // Nobody waits on this context: look at it every 10 ms (a
            // thread may be waiting where the shim cannot see it) and on
            // control messages.
            timeout = timeout.min(10);
            watched.push(c);
            pfds.push(libc::pollfd {
                fd: c.ctl_fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // Wildcard listeners' kernel sides (ops::wild), watched whatever
        // the timeout.
        let first_kl = pfds.len();
        kl.clear();
        crate::ops::kernel_listeners(&mut kl);
        for &fd in &kl {
            pfds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if timeout < 1000 {
            SLEEPING_LONG.store(false, Ordering::SeqCst);
        }
        // SAFETY: `pfds` is a live Vec of pfds.len() pollfds.
        let n =
            unsafe { real::poll::get()(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        SLEEPING_LONG.store(false, Ordering::SeqCst);
        if n < 0 && sys::errno() != libc::EINTR {
            // SAFETY: usleep takes no pointers.
            unsafe { libc::usleep(1000) };
        }
        for (i, &fd) in kl.iter().enumerate() {
            if pfds[first_kl + i].revents != 0 {
                crate::ops::kernel_listener_fired(fd);
            }
        }
        if pfds[0].revents != 0 {
            let mut v = 0u64;
            // SAFETY: read writes at most 8 bytes into the live local `v`;
            // wake_fd is the shim's eventfd.
            unsafe { real::read::get()(g.wake_fd, &mut v as *mut u64 as *mut libc::c_void, 8) };
        }
        if g.cfg.debug {
            let path = format!("/tmp/tas-dump-{}", std::process::id());
            if std::fs::remove_file(&path).is_ok() {
                for c in g.live_ctxs() {
                    let inner = c.inner.lock();
                    log(&inner.dump(c.idx));
                }
            }
        }
        for c in g.live_ctxs() {
            let is_watched = watched.iter().any(|w| std::ptr::eq(*w, c));
            if !is_watched && !c.tick.load(Ordering::Relaxed) {
                continue;
            }
            let Some(mut inner) = c.inner.try_lock() else {
                continue;
            };
            inner.process();
            c.tick.store(
                inner.tas.has_backlog() || !inner.zombies.is_empty(),
                Ordering::Relaxed,
            );
            if inner.tas.is_dead() {
                // The daemon is gone: errors are delivered; stop watching.
                c.dead.store(true, Ordering::Relaxed);
            }
        }
    }
}
