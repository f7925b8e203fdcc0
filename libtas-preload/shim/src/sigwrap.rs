//! The program's signal handlers, wrapped so that the shim knows when one
//! ran on a thread: the interposed `sigaction` and `signal` install
//! [`trampoline`] in the program's place and keep the program's handler
//! and flags here; the trampoline counts the run on its thread
//! ([`ran`], and whether that handler had `SA_RESTART`) and calls the
//! program's handler as the kernel would have. Queries see the program's
//! own handler and flags, never the trampoline.
//!
//! Why: on Linux a handler that runs while a thread is in `poll`, `recv`
//! and the like ends the call with `EINTR` (signal(7)). Under the shim a
//! wait first spins in user space, where a handler runs without any
//! system call noticing; the count lets the spin, and the check before
//! each kernel wait, end the call as Linux would (`sys::SigScope`), at no
//! cost to a wait no signal interrupts. It also tells the restart rule
//! exactly whether the handler that ran had `SA_RESTART` (`sigrestart`).
//!
//! Owns only the table of wrapped handlers and the per-thread counts; it
//! must not change what a handler sees (its signal, `siginfo_t`, context,
//! mask and flags are the kernel's) or which signals are delivered.
//! Synchronous signals (`sigrestart::SYNCHRONOUS`: faults, `SIGPIPE`) are
//! not wrapped: they cannot come while a thread sleeps. Handlers set with
//! `sigset`, `sysv_signal` or a raw `rt_sigaction` are not wrapped either;
//! a wait they interrupt during the spin goes on as before (docs/preload.md).
//! A `vfork` child's changes, made on its parent's memory, pass straight to
//! libc and leave the table alone.

use crate::sys::real;
use libc::{c_int, c_void};
use std::cell::Cell;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicUsize, Ordering};

/// The kernel's flag for a libc-supplied return trampoline, which libc
/// reports in `sa_flags` (not exported by the `libc` crate).
const SA_RESTORER: c_int = 0x0400_0000;

/// Signal numbers the table covers (1..=64 on Linux).
const NSIG: usize = 65;

/// The program's handler and flags for one wrapped signal.
struct Entry {
    /// `sa_sigaction` as the program gave it.
    handler: AtomicUsize,
    /// `sa_flags` as the program gave them.
    flags: AtomicI32,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Entry = Entry {
    handler: AtomicUsize::new(libc::SIG_DFL),
    flags: AtomicI32::new(0),
};

static TABLE: [Entry; NSIG] = [EMPTY; NSIG];

thread_local! {
    /// Wrapped handlers run on this thread (wrapping count).
    static RAN: Cell<u32> = const { Cell::new(0) };
    /// Of those, handlers without `SA_RESTART`.
    static RAN_NO_RESTART: Cell<u32> = const { Cell::new(0) };
}

/// How many wrapped handlers have run on the calling thread, and how many
/// of them lacked `SA_RESTART` (both wrapping counts).
#[inline]
pub fn ran() -> (u32, u32) {
    (RAN.with(|r| r.get()), RAN_NO_RESTART.with(|r| r.get()))
}

/// Whether `sig`'s handler is wrapped when the program sets one.
fn wrappable(sig: c_int) -> bool {
    sig > 0
        && (sig as usize) < NSIG
        && sig != libc::SIGKILL
        && sig != libc::SIGSTOP
        && !crate::sigrestart::SYNCHRONOUS.contains(&sig)
}

/// `TAS_PRELOAD_DISABLE=1`: handlers are left as the program sets them.
fn disabled() -> bool {
    static D: AtomicU8 = AtomicU8::new(0);
    crate::sys::probed_once(&D, || {
        // SAFETY: the name is NUL-terminated; getenv does not allocate,
        // and the value is read at once (the shim does not change the
        // environment here).
        let v = unsafe { libc::getenv(c"TAS_PRELOAD_DISABLE".as_ptr()) };
        // SAFETY: a non-null result is a NUL-terminated string.
        !v.is_null() && unsafe { std::ffi::CStr::from_ptr(v) }.to_bytes() == b"1"
    })
}

type Handler1 = extern "C" fn(c_int);
type Handler3 = extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void);

/// What the kernel runs for a wrapped signal: counts the run on this
/// thread, then runs the program's handler with the kernel's arguments.
/// Async-signal-safe: atomics and thread-local cells only (and, in a race
/// with a change to the default action, `sigaction` and `raise`).
extern "C" fn trampoline(sig: c_int, info: *mut libc::siginfo_t, uc: *mut c_void) {
    RAN.with(|r| r.set(r.get().wrapping_add(1)));
    let Some(e) = TABLE.get(sig as usize) else {
        return;
    };
    let h = e.handler.load(Ordering::Acquire);
    let flags = e.flags.load(Ordering::Acquire);
    if flags & libc::SA_RESTART == 0 {
        RAN_NO_RESTART.with(|r| r.set(r.get().wrapping_add(1)));
    }
    if flags & libc::SA_RESETHAND != 0 {
        // The kernel has reset the disposition, as the program asked.
        e.handler.store(libc::SIG_DFL, Ordering::Release);
    }
    match h {
        libc::SIG_IGN => {}
        libc::SIG_DFL => {
            // The program set the default between the kernel's choice of
            // this handler and now: take the default action (the signal is
            // blocked until this returns, unless SA_NODEFER).
            // SAFETY: an all-zero sigaction is SIG_DFL with no flags.
            let dfl: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: `dfl` is a live local; raise takes no pointers.
            unsafe {
                real::sigaction::get()(sig, &dfl, std::ptr::null_mut());
                libc::raise(sig);
            }
        }
        h if flags & libc::SA_SIGINFO != 0 => {
            // SAFETY: the program installed `h` as an SA_SIGINFO handler
            // (three arguments); the arguments are the kernel's.
            let f = unsafe { std::mem::transmute::<usize, Handler3>(h) };
            f(sig, info, uc)
        }
        h => {
            // SAFETY: the program installed `h` as a plain handler.
            let f = unsafe { std::mem::transmute::<usize, Handler1>(h) };
            f(sig)
        }
    }
}

/// The trampoline's address, as `sa_sigaction` holds it.
fn tramp_addr() -> usize {
    trampoline as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) as usize
}

/// The program's view of a disposition the kernel reports: the
/// trampoline replaced by the handler and flags it stands for.
fn program_view(sig: c_int, k: &mut libc::sigaction) {
    if k.sa_sigaction == tramp_addr() {
        let e = &TABLE[sig as usize];
        k.sa_sigaction = e.handler.load(Ordering::Acquire);
        k.sa_flags = e.flags.load(Ordering::Acquire) | (k.sa_flags & SA_RESTORER);
    }
}

/// Installs what the program asked for in `act`, wrapped when it is a
/// handler (`act` is the program's; the kernel gets the same mask and
/// flags, plus `SA_SIGINFO` so that the trampoline has every argument).
///
/// # Safety
///
/// `act` must be valid for reads of a `sigaction`.
unsafe fn install(sig: c_int, act: *const libc::sigaction) -> c_int {
    // SAFETY: the caller's contract.
    let a = unsafe { *act };
    let e = &TABLE[sig as usize];
    if a.sa_sigaction == libc::SIG_DFL || a.sa_sigaction == libc::SIG_IGN {
        // The kernel first, so that a signal meanwhile still finds the
        // old handler in the table.
        // SAFETY: `act` is the caller's, valid (contract).
        let r = unsafe { real::sigaction::get()(sig, act, std::ptr::null_mut()) };
        if r == 0 {
            e.handler.store(a.sa_sigaction, Ordering::Release);
            e.flags.store(a.sa_flags, Ordering::Release);
        }
        return r;
    }
    // The table first: from the moment the kernel has the trampoline, it
    // finds this handler.
    let (old_h, old_f) = (
        e.handler.swap(a.sa_sigaction, Ordering::AcqRel),
        e.flags.swap(a.sa_flags, Ordering::AcqRel),
    );
    let mut k = a;
    k.sa_sigaction = tramp_addr();
    k.sa_flags |= libc::SA_SIGINFO;
    // SAFETY: `k` is a live local.
    let r = unsafe { real::sigaction::get()(sig, &k, std::ptr::null_mut()) };
    if r != 0 {
        let errno = crate::sys::errno();
        e.handler.store(old_h, Ordering::Release);
        e.flags.store(old_f, Ordering::Release);
        crate::sys::set_errno(errno);
    }
    r
}

/// The interposed `sigaction`.
///
/// # Safety
///
/// libc's contract: `act` and `old` are null or valid for a `sigaction`.
pub unsafe fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    if !wrappable(sig) || disabled() || crate::fork::in_vfork_child() {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real::sigaction::get()(sig, act, old) };
    }
    // Read before `old` is written: the two may be the same struct, as
    // libc allows.
    // SAFETY: `act` is null or valid for reads (contract).
    let new = (!act.is_null()).then(|| unsafe { *act });
    if !old.is_null() {
        // SAFETY: `old` is valid for writes (contract); act null only reads.
        let r = unsafe { real::sigaction::get()(sig, std::ptr::null(), old) };
        if r != 0 {
            return r;
        }
        // SAFETY: just written by sigaction.
        program_view(sig, unsafe { &mut *old });
    }
    match new {
        None => 0,
        // SAFETY: a live local.
        Some(a) => unsafe { install(sig, &a) },
    }
}

/// The interposed `signal`: libc's (its flags: `SA_RESTART` unless
/// `siginterrupt` said otherwise), then wrapped like [`sigaction`].
///
/// # Safety
///
/// libc's contract for `signal`.
pub unsafe fn signal(sig: c_int, h: libc::sighandler_t) -> libc::sighandler_t {
    let Some(real_signal) = real::signal() else {
        // libc's `signal` cannot be found (dlsym busy on this thread):
        // its BSD semantics through `sigaction` — `SA_RESTART`, the signal
        // itself blocked while its handler runs.
        // SAFETY: an all-zero sigaction is valid; filled in below.
        let mut a: libc::sigaction = unsafe { std::mem::zeroed() };
        a.sa_sigaction = h;
        a.sa_flags = libc::SA_RESTART;
        // SAFETY: `a.sa_mask` is a live sigset_t.
        unsafe {
            libc::sigemptyset(&mut a.sa_mask);
            libc::sigaddset(&mut a.sa_mask, sig);
        }
        // SAFETY: an all-zero sigaction is a valid out-parameter value.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: both are live locals.
        return match unsafe { sigaction(sig, &a, &mut old) } {
            0 => old.sa_sigaction,
            _ => libc::SIG_ERR,
        };
    };
    if !wrappable(sig) || disabled() || crate::fork::in_vfork_child() {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real_signal(sig, h) };
    }
    // SAFETY: an all-zero sigaction is a valid out-parameter value.
    let mut prev: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: query only; `prev` is a live local.
    unsafe { real::sigaction::get()(sig, std::ptr::null(), &mut prev) };
    program_view(sig, &mut prev);
    // SAFETY: the caller's arguments, unchanged.
    let r = unsafe { real_signal(sig, h) };
    if r == libc::SIG_ERR || h == libc::SIG_DFL || h == libc::SIG_IGN {
        if r != libc::SIG_ERR {
            TABLE[sig as usize].handler.store(h, Ordering::Release);
        }
        return if r == libc::SIG_ERR {
            r
        } else {
            prev.sa_sigaction
        };
    }
    // What libc installed (its mask and flags), now wrapped.
    // SAFETY: an all-zero sigaction is a valid out-parameter value.
    let mut now: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: query only; `now` is a live local.
    if unsafe { real::sigaction::get()(sig, std::ptr::null(), &mut now) } == 0
        && now.sa_sigaction == h
    {
        now.sa_flags &= !SA_RESTORER;
        // SAFETY: `now` is a live local.
        unsafe { install(sig, &now) };
    }
    prev.sa_sigaction
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    // Not SIGUSR1/2: `sigrestart`'s test sets those, on another thread of
    // this process.
    const USR_A: c_int = libc::SIGWINCH;
    const USR_B: c_int = libc::SIGURG;

    static PLAIN: AtomicU32 = AtomicU32::new(0);
    static INFO: AtomicI32 = AtomicI32::new(0);

    extern "C" fn plain(_: c_int) {
        PLAIN.fetch_add(1, Ordering::Relaxed);
    }

    extern "C" fn with_info(_: c_int, info: *mut libc::siginfo_t, _: *mut c_void) {
        // SAFETY: the kernel's siginfo for this delivery.
        INFO.store(unsafe { (*info).si_signo }, Ordering::Relaxed);
    }

    /// One test (dispositions are per process): a handler set through the
    /// wrapper runs with its own arguments, is counted on the thread that
    /// ran it (with or without `SA_RESTART`), and queries show it, not
    /// the trampoline; the default and `SA_RESETHAND` behave as without
    /// the wrapper.
    #[test]
    fn wrapped_handlers_run_are_counted_and_show_as_the_programs() {
        // SAFETY: (the whole test) every sigaction is a live local; raise runs
        // the handlers on this thread; the handlers touch atomics only.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = plain as extern "C" fn(c_int) as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            assert_eq!(sigaction(USR_A, &sa, std::ptr::null_mut()), 0);
            let mut k: libc::sigaction = std::mem::zeroed();
            real::sigaction::get()(USR_A, std::ptr::null(), &mut k);
            assert_eq!(
                k.sa_sigaction,
                tramp_addr(),
                "the kernel runs the trampoline"
            );
            let mut q: libc::sigaction = std::mem::zeroed();
            assert_eq!(sigaction(USR_A, std::ptr::null(), &mut q), 0);
            assert_eq!(
                q.sa_sigaction, sa.sa_sigaction,
                "a query shows the program's handler"
            );
            assert_eq!(q.sa_flags & !SA_RESTORER, libc::SA_RESTART);
            let (r0, n0) = ran();
            libc::raise(USR_A);
            assert_eq!(PLAIN.load(Ordering::Relaxed), 1);
            assert_eq!(ran(), (r0.wrapping_add(1), n0), "counted, with SA_RESTART");
            // Another thread's runs are not this thread's.
            std::thread::spawn(|| {
                libc::raise(USR_A);
            })
            .join()
            .unwrap();
            assert_eq!(PLAIN.load(Ordering::Relaxed), 2);
            assert_eq!(ran(), (r0.wrapping_add(1), n0));

            let mut si: libc::sigaction = std::mem::zeroed();
            si.sa_sigaction =
                with_info as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) as usize;
            si.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND;
            assert_eq!(sigaction(USR_B, &si, std::ptr::null_mut()), 0);
            libc::raise(USR_B);
            assert_eq!(INFO.load(Ordering::Relaxed), USR_B, "siginfo passed on");
            assert_eq!(
                ran(),
                (r0.wrapping_add(2), n0.wrapping_add(1)),
                "no SA_RESTART"
            );
            let mut q: libc::sigaction = std::mem::zeroed();
            sigaction(USR_B, std::ptr::null(), &mut q);
            assert_eq!(q.sa_sigaction, libc::SIG_DFL, "SA_RESETHAND reset it");

            // signal(): libc's flags, wrapped; the old handler returned.
            let old = signal(USR_A, libc::SIG_IGN);
            assert_eq!(old, sa.sa_sigaction);
            let old = signal(USR_A, plain as extern "C" fn(c_int) as *const () as usize);
            assert_eq!(old, libc::SIG_IGN);
            real::sigaction::get()(USR_A, std::ptr::null(), &mut k);
            assert_eq!(k.sa_sigaction, tramp_addr());
            libc::raise(USR_A);
            assert_eq!(PLAIN.load(Ordering::Relaxed), 3);
            assert_eq!(
                signal(USR_A, libc::SIG_DFL),
                plain as extern "C" fn(c_int) as *const () as usize
            );
            // Synchronous signals are left alone.
            let mut p: libc::sigaction = std::mem::zeroed();
            p.sa_sigaction = plain as extern "C" fn(c_int) as *const () as usize;
            let mut oldp: libc::sigaction = std::mem::zeroed();
            sigaction(libc::SIGPIPE, &p, &mut oldp);
            real::sigaction::get()(libc::SIGPIPE, std::ptr::null(), &mut k);
            assert_eq!(k.sa_sigaction, p.sa_sigaction, "SIGPIPE not wrapped");
            sigaction(libc::SIGPIPE, &oldp, std::ptr::null_mut());
            // `act` and `old` the same struct: the new one is installed,
            // the old one returned.
            let mut both: libc::sigaction = std::mem::zeroed();
            both.sa_sigaction = plain as extern "C" fn(c_int) as *const () as usize;
            sigaction(USR_A, &both, std::ptr::null_mut());
            both.sa_sigaction = libc::SIG_IGN;
            assert_eq!(sigaction(USR_A, &both, &mut both), 0);
            assert_eq!(
                both.sa_sigaction,
                plain as extern "C" fn(c_int) as *const () as usize
            );
            sigaction(USR_A, std::ptr::null(), &mut q);
            assert_eq!(q.sa_sigaction, libc::SIG_IGN);
            signal(USR_A, libc::SIG_DFL);
        }
    }
}
