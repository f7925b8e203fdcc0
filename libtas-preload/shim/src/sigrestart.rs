//! Whether a blocking socket call interrupted by a signal handler goes on
//! waiting, as Linux restarts it, or fails with `EINTR`.
//!
//! Linux (signal(7), "Interruption of system calls and library functions
//! by signal handlers") restarts a blocking `accept`, `connect`, `recv*`,
//! `send*`, `read` and `write` on a socket after a handler installed with
//! `SA_RESTART` returns, unless the socket has a timeout for that
//! direction (`SO_RCVTIMEO` for receiving and `accept`, `SO_SNDTIMEO` for
//! sending and `connect`): then the call fails with `EINTR` whatever the
//! flag. A call that has already moved data returns the count instead.
//! The callers (`ops/`) apply those two rules; this module answers the
//! rest: did the handler that interrupted the shim's wait have
//! `SA_RESTART`?
//!
//! The shim's wait is `poll`/`epoll_wait`, which the kernel never restarts,
//! and it does not learn which signal interrupted it. When the handlers
//! that ran were the program's, set through the shim's `sigaction` or
//! `signal` (`sigwrap.rs`), it knows whether each had `SA_RESTART`
//! (`sys::take_interruption`). Otherwise (a handler set before the shim
//! was loaded, or with a raw system call) it reads every disposition
//! instead ([`after_signal`]): the call restarts unless some
//! signal that could have interrupted this thread has a handler without
//! `SA_RESTART`. Not candidates:
//! * signals blocked in the calling thread (they were not delivered);
//! * the synchronous ones (`SIGPIPE`, `SIGSEGV`, `SIGBUS`, `SIGFPE`,
//!   `SIGILL`, `SIGTRAP`, `SIGSYS`): raised by the thread's own
//!   instructions or writes, not while it sleeps in a wait;
//! * glibc's internal signals (cancellation, `set*id` broadcast), which
//!   libc's `sigaction` refuses to show: `SIGSETXID`'s handler restarts,
//!   and a cancelled thread never comes back to the call.
//!
//! Where the scan is needed and handlers of both kinds are candidates, the
//! shim cannot tell which one ran and answers `EINTR` (a documented
//! difference from Linux, which knows: docs/preload.md). The scan costs 64
//! `rt_sigaction` calls and is made only after an `EINTR` no wrapped
//! handler explains; under a seccomp filter (`sys::restricted`), where
//! `rt_sigaction` may be fatal, it is not made and the call fails with
//! `EINTR`.

use crate::sys;
use libc::c_int;

/// Signals a sleeping thread cannot have received from a handler's
/// point of view: the kernel raises them for the thread's own faults or
/// writes (and so `sys::hold_signals` never blocks them).
pub const SYNCHRONOUS: [c_int; 7] = [
    libc::SIGPIPE,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGSYS,
];

/// A blocking call's wait (with `deadline` from `SO_RCVTIMEO`/`SO_SNDTIMEO`
/// for its direction, and no data moved by the call) failed with `e`:
/// whether the call waits again, as Linux restarts it (signal(7)): `EINTR`,
/// no timeout set, and [`after_signal`].
pub fn restarts(e: libc::c_int, deadline: Option<u64>) -> bool {
    if e != libc::EINTR {
        return false;
    }
    // The handlers the wait saw run (set through the shim's `sigaction`):
    // the answer is theirs, exactly.
    let seen = sys::take_interruption();
    deadline.is_none() && seen.unwrap_or_else(after_signal)
}

/// After a blocking call's wait failed with `EINTR` (no timeout set, no
/// data moved): true when the call should wait again, as Linux would
/// restart it (every candidate handler has `SA_RESTART`, or there is
/// none the program can see).
fn after_signal() -> bool {
    if sys::restricted() {
        return false;
    }
    // SAFETY: an all-zero sigset_t is a valid value for the out-parameter.
    let mut blocked: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: reads this thread's mask into a live local; `set` is null,
    // so nothing changes.
    if unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut blocked) } != 0 {
        return false;
    }
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP || SYNCHRONOUS.contains(&sig) {
            continue;
        }
        // SAFETY: `blocked` is an initialised sigset_t; `sig` is in range.
        if unsafe { libc::sigismember(&blocked, sig) } == 1 {
            continue;
        }
        // SAFETY: an all-zero sigaction is a valid out-parameter value.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: `act` is null (query only); `old` is a live local.
        if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
            // glibc's internal signals (and numbers it does not have).
            continue;
        }
        if old.sa_sigaction == libc::SIG_DFL || old.sa_sigaction == libc::SIG_IGN {
            continue;
        }
        if old.sa_flags & libc::SA_RESTART == 0 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    static RAN: AtomicU32 = AtomicU32::new(0);

    extern "C" fn on_signal(_: c_int) {
        RAN.fetch_add(1, Ordering::Relaxed);
    }

    fn install(sig: c_int, flags: c_int) -> libc::sigaction {
        // SAFETY: an all-zero sigaction is valid; filled in below.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_signal as extern "C" fn(c_int) as usize;
        sa.sa_flags = flags;
        // SAFETY: zeroed.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are live locals; the handler only touches
        // an atomic.
        assert_eq!(unsafe { libc::sigaction(sig, &sa, &mut old) }, 0);
        old
    }

    fn restore(sig: c_int, old: &libc::sigaction) {
        // SAFETY: `old` came from sigaction.
        unsafe { libc::sigaction(sig, old, std::ptr::null_mut()) };
    }

    /// One test (dispositions are per process; the test harness runs tests
    /// on threads of one process): each disposition mix and its answer.
    #[test]
    fn restart_unless_a_candidate_handler_lacks_sa_restart() {
        // Whatever the test harness installed (nothing in libtest's case
        // today): the baseline must restart, or the rest says nothing.
        assert!(after_signal(), "a process without handlers must restart");
        let a = install(libc::SIGUSR1, libc::SA_RESTART);
        assert!(after_signal(), "only SA_RESTART handlers");
        let b = install(libc::SIGUSR2, 0);
        assert!(!after_signal(), "SIGUSR2's handler lacks SA_RESTART");
        // SIGUSR2 blocked in this thread: not a candidate.
        // SAFETY: sets and masks are live locals.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            assert!(after_signal(), "a blocked signal is not a candidate");
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
        assert!(!after_signal());
        restore(libc::SIGUSR2, &b);
        // A synchronous signal's handler without SA_RESTART (conform.c's
        // SIGPIPE) does not count.
        let p = install(libc::SIGPIPE, 0);
        assert!(after_signal(), "SIGPIPE cannot interrupt a wait");
        restore(libc::SIGPIPE, &p);
        restore(libc::SIGUSR1, &a);
        assert!(after_signal());
        assert_eq!(RAN.load(Ordering::Relaxed), 0);
    }
}
