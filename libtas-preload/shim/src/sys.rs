//! The system layer: the real libc functions behind ours (`dlsym(RTLD_NEXT)`),
//! errno, the re-entrancy guard, and a fork-safe lock.

use libc::{
    c_char, c_int, c_uint, c_void, iovec, msghdr, off64_t, size_t, sockaddr, socklen_t, ssize_t,
};
use std::cell::{Cell, UnsafeCell};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

thread_local! {
    /// > 0 while this thread runs shim code: every interposed function then
    /// goes straight to libc (the `tas` crate and std call `recv`, `poll`,
    /// `close`, ... through the same symbols we export).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    static RESOLVING: Cell<bool> = const { Cell::new(false) };
    /// Set once this thread is under a seccomp filter ([`set_restricted`]).
    static RESTRICTED: Cell<bool> = const { Cell::new(false) };
}

/// Every thread of the process is under a seccomp filter (one installed
/// with `SECCOMP_FILTER_FLAG_TSYNC`).
static RESTRICTED_ALL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the calling thread runs under a seccomp filter the program
/// installed (`prctl(PR_SET_SECCOMP)`, `seccomp(2)`): the shim then makes
/// only system calls such sandboxes allow — `read`, `write`, `poll`,
/// `ppoll`, `futex`, `close`, `shutdown`, `getpid`, `clock_gettime` (sshd's
/// pre-authentication child allows little more) — and leaves control
/// messages and readiness bookkeeping that needs more to the reactor
/// thread, whose filter (set before it existed) is not inherited.
#[inline]
pub fn restricted() -> bool {
    RESTRICTED.with(|r| r.get()) || RESTRICTED_ALL.load(Ordering::Relaxed)
}

/// The calling thread (or, with `all`, every thread) is now under a
/// seccomp filter.
pub fn set_restricted(all: bool) {
    RESTRICTED.with(|r| r.set(true));
    if all {
        RESTRICTED_ALL.store(true, Ordering::Relaxed);
        tas::spin::forbid_yield();
    }
    tas::set_thread_ctl_io(false);
}

thread_local! {
    /// The thread's own signal mask while a [`SigScope`] holds its signals.
    static SLEEP_MASK: std::cell::Cell<Option<libc::sigset_t>> = const { std::cell::Cell::new(None) };
    /// A [`SigScope`] is open on this thread.
    static SIG_SCOPE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// `sigwrap::ran` when the innermost [`SigScope`] began.
    static CALL_RAN: std::cell::Cell<Option<(u32, u32)>> = const { std::cell::Cell::new(None) };
    /// The last [`SigScope`] that saw a handler run: whether one of them
    /// lacked `SA_RESTART` ([`take_interruption`]).
    static LAST_INTERRUPTION: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// The blocking part of one wait of the program's (a blocking call, or
/// `poll`/`select`/`epoll_wait`), for its signals. On Linux a handler
/// that runs while the thread is in the call ends it with `EINTR`
/// (signal(7)); under the shim the call also runs in user space — the
/// spin, and taking news between kernel waits — where a handler would run
/// unnoticed and the call go on waiting. Two rules cover that:
///
/// * **The spin and the step into the first kernel wait.** The scope
///   notes how many of the program's handlers had run on the thread
///   (`sigwrap::ran`); the spin and every kernel wait of the shim look
///   first ([`interrupted`]) and end the call with `EINTR` when one ran
///   since. No system call; only handlers set through `sigaction` or
///   `signal` are seen (`sigwrap.rs`), and a handler that runs between
///   that look and the kernel's entry into the wait (a few instructions)
///   is still missed, as one just before the call is on Linux.
/// * **Between rounds.** Once a kernel wait returned without ending the
///   call ([`hold_signals`], before the news it brought is taken), the
///   thread's asynchronous signals stay blocked except inside the
///   following kernel waits, which sleep with the thread's own mask
///   ([`sleep_mask`], through `ppoll`/`epoll_pwait`): a signal that comes
///   while the shim takes news for other threads' sockets or hands the
///   drainer's role on is delivered in the next kernel wait, which fails
///   with `EINTR`. A wait that ends in its first round makes no extra
///   system call. Not under a seccomp filter ([`restricted`]), and not
///   nested (a wait in a handler that runs inside one sleeps with the
///   outer mask). Synchronous signals (faults, `SIGPIPE`) are never
///   blocked. Dropping the scope restores the mask; signals that came
///   meanwhile are then delivered.
///
/// docs/design.md, "Signals during a wait".
pub struct SigScope {
    open: bool,
    /// The enclosing scope's count (a wait in a handler that runs inside
    /// another wait), restored at the end.
    outer: Option<(u32, u32)>,
}

impl SigScope {
    pub fn new() -> SigScope {
        let open = !restricted() && !SIG_SCOPE.with(|s| s.replace(true));
        let outer = CALL_RAN.with(|c| c.replace(Some(crate::sigwrap::ran())));
        LAST_INTERRUPTION.with(|l| l.set(None));
        SigScope { open, outer }
    }
}

impl Drop for SigScope {
    fn drop(&mut self) {
        let start = CALL_RAN.with(|c| c.replace(self.outer));
        if let Some((r0, n0)) = start {
            let (r, n) = crate::sigwrap::ran();
            if r != r0 {
                LAST_INTERRUPTION.with(|l| l.set(Some(n != n0)));
            }
        }
        if !self.open {
            return;
        }
        SIG_SCOPE.with(|s| s.set(false));
        if let Some(old) = SLEEP_MASK.with(|m| m.take()) {
            // SAFETY: `old` is the mask pthread_sigmask returned in
            // `hold_signals`.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        }
    }
}

/// Whether a handler of the program's ran on this thread since the
/// innermost [`SigScope`] began: the wait must end with `EINTR` (checked
/// by the spin and before every kernel wait that would sleep).
#[inline]
pub fn interrupted() -> bool {
    CALL_RAN
        .with(|c| c.get())
        .is_some_and(|(r0, _)| crate::sigwrap::ran().0 != r0)
}

/// After a wait that ended with `EINTR`: whether the program's handlers
/// that ran during it (seen by `sigwrap`) all had `SA_RESTART` — Some
/// only when one ran. Taken: a second call says None.
pub fn take_interruption() -> Option<bool> {
    LAST_INTERRUPTION
        .with(|l| l.take())
        .map(|no_restart| !no_restart)
}

/// A kernel wait of the shim returned and the call goes on (see
/// [`SigScope`]): from now until the scope ends, asynchronous signals
/// come only inside the shim's kernel waits. Once per scope; nothing
/// outside one.
pub fn hold_signals() {
    if !SIG_SCOPE.with(|s| s.get()) || SLEEP_MASK.with(|m| m.get().is_some()) || restricted() {
        return;
    }
    // SAFETY: zeroed sigset_t values are valid; sigfillset, sigdelset and
    // pthread_sigmask only write the live locals they are given.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for s in crate::sigrestart::SYNCHRONOUS {
            libc::sigdelset(&mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) == 0 {
            SLEEP_MASK.with(|m| m.set(Some(old)));
        }
    }
}

/// The mask a kernel wait of the shim must sleep with: the thread's own
/// while [`hold_signals`] holds its signals, else None (sleep with the
/// mask as it is).
#[inline]
fn sleep_mask() -> Option<libc::sigset_t> {
    SLEEP_MASK.with(|m| m.get())
}

/// Before a kernel wait of the shim (`sleeps`: one that may sleep, not a
/// zero-timeout look): `EINTR` when a handler of the program's ran since
/// the call began ([`interrupted`]), else the mask to sleep with
/// ([`sleep_mask`]; None for a look).
#[inline]
pub fn before_sleep(sleeps: bool) -> Result<Option<libc::sigset_t>, c_int> {
    if !sleeps {
        return Ok(None);
    }
    if interrupted() {
        return Err(libc::EINTR);
    }
    Ok(sleep_mask())
}

/// `poll` of `n` fds for `ms` milliseconds (< 0: forever); with `mask`,
/// `ppoll`, so that `mask` is the thread's mask while it sleeps.
///
/// # Safety
///
/// `fds` is valid for reads and writes of `n` pollfds; `mask`, if given,
/// points to a valid signal set.
pub unsafe fn poll_masked(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    ms: i64,
    mask: Option<*const libc::sigset_t>,
) -> c_int {
    match mask {
        // SAFETY: the caller's contract.
        None => unsafe { real::poll::get()(fds, n, ms.clamp(-1, i32::MAX as i64) as c_int) },
        Some(m) => {
            let ts = libc::timespec {
                tv_sec: (ms.max(0) / 1000) as libc::time_t,
                tv_nsec: ((ms.max(0) % 1000) * 1_000_000) as libc::c_long,
            };
            let tp = if ms < 0 {
                std::ptr::null()
            } else {
                &ts as *const libc::timespec
            };
            // SAFETY: the caller's contract; `tp` is null or the live
            // local `ts`.
            unsafe { real::ppoll::get()(fds, n, tp, m) }
        }
    }
}

/// A yes/no fact about the process found out once: `probe` runs until
/// one call has stored its answer in `cell` (0: not yet, 1: yes, 2: no).
/// Threads that race may both probe; both store the same answer. No lock
/// and no allocation, so usable before the shim is set up.
pub fn probed_once(cell: &std::sync::atomic::AtomicU8, probe: impl FnOnce() -> bool) -> bool {
    match cell.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let yes = probe();
            cell.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
            yes
        }
    }
}

/// Whether the calling thread is inside the shim.
#[inline]
pub fn in_shim() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

/// Marks the calling thread as inside the shim until dropped.
pub struct Enter(());

impl Enter {
    #[inline]
    pub fn new() -> Enter {
        DEPTH.with(|d| d.set(d.get() + 1));
        Enter(())
    }
}

impl Drop for Enter {
    #[inline]
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Temporarily leaves shim mode (around a blocking call, so that a signal
/// handler of the app that uses sockets gets the full shim).
pub struct Leave(u32);

impl Leave {
    #[inline]
    pub fn new() -> Leave {
        Leave(DEPTH.with(|d| d.replace(0)))
    }
}

impl Drop for Leave {
    #[inline]
    fn drop(&mut self) {
        let v = self.0;
        DEPTH.with(|d| d.set(v));
    }
}

#[inline]
pub fn errno() -> c_int {
    // SAFETY: __errno_location always returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

#[inline]
pub fn set_errno(e: c_int) {
    // SAFETY: __errno_location always returns this thread's errno slot,
    // valid for writes while the thread lives.
    unsafe { *libc::__errno_location() = e };
}

fn resolve(name: &'static str) -> usize {
    // dlsym may allocate, and an allocator may read a file: if that lands
    // back here for a symbol not yet resolved, use the fallback.
    if RESOLVING.with(|r| r.replace(true)) {
        return 0;
    }
    // SAFETY: `name` is NUL-terminated (the macro appends "\0").
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr() as *const c_char) };
    RESOLVING.with(|r| r.set(false));
    p as usize
}

macro_rules! real_fns {
    ($($name:ident : fn($($t:ty),*) -> $r:ty = $fallback:expr;)*) => {
        $(
            #[allow(non_snake_case, dead_code)]
            pub mod $name {
                use super::*;
                pub type F = unsafe extern "C" fn($($t),*) -> $r;
                static P: AtomicUsize = AtomicUsize::new(0);
                /// Stands in when libc has no such function: fails with
                /// `ENOSYS`.
                ///
                /// # Safety
                ///
                /// Always safe to call: no argument is used.
                #[allow(unused_variables, clippy::unused_unit)]
                unsafe extern "C" fn stub($(_: $t),*) -> $r {
                    set_errno(libc::ENOSYS);
                    -1
                }
                #[inline]
                pub fn get() -> F {
                    let p = P.load(Ordering::Relaxed);
                    if p != 0 {
                        // SAFETY: P only ever holds the address of the libc
                        // function of this name, whose type is F.
                        return unsafe { std::mem::transmute::<usize, F>(p) };
                    }
                    slow()
                }
                #[cold]
                fn slow() -> F {
                    let p = resolve(concat!(stringify!($name), "\0"));
                    if p == 0 {
                        let f: Option<F> = $fallback;
                        return f.unwrap_or(stub);
                    }
                    P.store(p, Ordering::Relaxed);
                    // SAFETY: dlsym found the libc function of this name.
                    unsafe { std::mem::transmute::<usize, F>(p) }
                }
            }
        )*
        /// Resolves every real function now (from the library constructor).
        pub fn resolve_all() {
            $( let _ = $name::get(); )*
        }
    };
}

pub mod fallback {
    //! Raw system calls for the few functions an allocator may need while
    //! dlsym itself is running.
    use super::*;
    use libc::c_long;

    /// A raw system call with `syscall(2)`'s result convention.
    ///
    /// # Safety
    ///
    /// As for [`crate::rawsys::raw`].
    unsafe fn raw_call(n: c_long, a: [c_long; 6]) -> c_long {
        // SAFETY: the caller's arguments, passed through (see # Safety).
        crate::rawsys::libc_result(unsafe { crate::rawsys::raw(n, a) })
    }

    /// `read(2)` as a raw system call.
    ///
    /// # Safety
    ///
    /// `b` must be valid for writes of `n` bytes.
    pub unsafe extern "C" fn read(fd: c_int, b: *mut c_void, n: size_t) -> ssize_t {
        // SAFETY: the kernel writes at most `n` bytes at `b`, which the
        // caller guarantees are writable.
        unsafe {
            raw_call(
                libc::SYS_read,
                [fd as c_long, b as c_long, n as c_long, 0, 0, 0],
            ) as ssize_t
        }
    }

    /// `write(2)` as a raw system call.
    ///
    /// # Safety
    ///
    /// `b` must be valid for reads of `n` bytes.
    pub unsafe extern "C" fn write(fd: c_int, b: *const c_void, n: size_t) -> ssize_t {
        // SAFETY: the kernel reads at most `n` bytes at `b`, which the
        // caller guarantees are readable.
        unsafe {
            raw_call(
                libc::SYS_write,
                [fd as c_long, b as c_long, n as c_long, 0, 0, 0],
            ) as ssize_t
        }
    }

    /// `close(2)` as a raw system call.
    ///
    /// # Safety
    ///
    /// None beyond `close`'s: `fd` must not be a descriptor that other
    /// code still relies on.
    pub unsafe extern "C" fn close(fd: c_int) -> c_int {
        // SAFETY: close takes no pointers; which descriptor is closed is
        // the caller's responsibility (see # Safety).
        unsafe { raw_call(libc::SYS_close, [fd as c_long, 0, 0, 0, 0, 0]) as c_int }
    }
}

pub mod real {
    use super::*;
    real_fns! {
        socket: fn(c_int, c_int, c_int) -> c_int = None;
        socketpair: fn(c_int, c_int, c_int, *mut c_int) -> c_int = None;
        bind: fn(c_int, *const sockaddr, socklen_t) -> c_int = None;
        listen: fn(c_int, c_int) -> c_int = None;
        accept: fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int = None;
        accept4: fn(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int = None;
        connect: fn(c_int, *const sockaddr, socklen_t) -> c_int = None;
        close: fn(c_int) -> c_int = Some(fallback::close);
        shutdown: fn(c_int, c_int) -> c_int = None;
        read: fn(c_int, *mut c_void, size_t) -> ssize_t = Some(fallback::read);
        write: fn(c_int, *const c_void, size_t) -> ssize_t = Some(fallback::write);
        readv: fn(c_int, *const iovec, c_int) -> ssize_t = None;
        writev: fn(c_int, *const iovec, c_int) -> ssize_t = None;
        recv: fn(c_int, *mut c_void, size_t, c_int) -> ssize_t = None;
        recvfrom: fn(c_int, *mut c_void, size_t, c_int, *mut sockaddr, *mut socklen_t) -> ssize_t = None;
        recvmsg: fn(c_int, *mut msghdr, c_int) -> ssize_t = None;
        send: fn(c_int, *const c_void, size_t, c_int) -> ssize_t = None;
        sendto: fn(c_int, *const c_void, size_t, c_int, *const sockaddr, socklen_t) -> ssize_t = None;
        sendmsg: fn(c_int, *const msghdr, c_int) -> ssize_t = None;
        sendmmsg: fn(c_int, *mut libc::mmsghdr, c_uint, c_int) -> c_int = None;
        recvmmsg: fn(c_int, *mut libc::mmsghdr, c_uint, c_int, *mut libc::timespec) -> c_int = None;
        sendfile: fn(c_int, c_int, *mut libc::off_t, size_t) -> ssize_t = None;
        sendfile64: fn(c_int, c_int, *mut off64_t, size_t) -> ssize_t = None;
        pread64: fn(c_int, *mut c_void, size_t, off64_t) -> ssize_t = None;
        setsockopt: fn(c_int, c_int, c_int, *const c_void, socklen_t) -> c_int = None;
        getsockopt: fn(c_int, c_int, c_int, *mut c_void, *mut socklen_t) -> c_int = None;
        getsockname: fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int = None;
        getpeername: fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int = None;
        dup: fn(c_int) -> c_int = None;
        dup2: fn(c_int, c_int) -> c_int = None;
        dup3: fn(c_int, c_int, c_int) -> c_int = None;
        epoll_create: fn(c_int) -> c_int = None;
        epoll_create1: fn(c_int) -> c_int = None;
        epoll_ctl: fn(c_int, c_int, c_int, *mut libc::epoll_event) -> c_int = None;
        epoll_wait: fn(c_int, *mut libc::epoll_event, c_int, c_int) -> c_int = None;
        epoll_pwait: fn(c_int, *mut libc::epoll_event, c_int, c_int, *const libc::sigset_t) -> c_int = None;
        epoll_pwait2: fn(c_int, *mut libc::epoll_event, c_int, *const libc::timespec, *const libc::sigset_t) -> c_int = None;
        poll: fn(*mut libc::pollfd, libc::nfds_t, c_int) -> c_int = None;
        ppoll: fn(*mut libc::pollfd, libc::nfds_t, *const libc::timespec, *const libc::sigset_t) -> c_int = None;
        select: fn(c_int, *mut libc::fd_set, *mut libc::fd_set, *mut libc::fd_set, *mut libc::timeval) -> c_int = None;
        pselect: fn(c_int, *mut libc::fd_set, *mut libc::fd_set, *mut libc::fd_set, *const libc::timespec, *const libc::sigset_t) -> c_int = None;
        close_range: fn(c_uint, c_uint, c_int) -> c_int = None;
        fork: fn() -> libc::pid_t = None;
        sigaction: fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int = None;
        chroot: fn(*const libc::c_char) -> c_int = None;
        setuid: fn(libc::uid_t) -> c_int = None;
        setgid: fn(libc::gid_t) -> c_int = None;
        seteuid: fn(libc::uid_t) -> c_int = None;
        setegid: fn(libc::gid_t) -> c_int = None;
        setreuid: fn(libc::uid_t, libc::uid_t) -> c_int = None;
        setregid: fn(libc::gid_t, libc::gid_t) -> c_int = None;
        setresuid: fn(libc::uid_t, libc::uid_t, libc::uid_t) -> c_int = None;
        setresgid: fn(libc::gid_t, libc::gid_t, libc::gid_t) -> c_int = None;
        setrlimit: fn(c_int, *const libc::rlimit) -> c_int = None;
        setrlimit64: fn(c_int, *const libc::rlimit64) -> c_int = None;
        prlimit: fn(libc::pid_t, c_int, *const libc::rlimit, *mut libc::rlimit) -> c_int = None;
        prlimit64: fn(libc::pid_t, c_int, *const libc::rlimit64, *mut libc::rlimit64) -> c_int = None;
        execve: fn(*const libc::c_char, *const *const libc::c_char, *const *const libc::c_char) -> c_int = None;
        execvpe: fn(*const libc::c_char, *const *const libc::c_char, *const *const libc::c_char) -> c_int = None;
        fexecve: fn(c_int, *const *const libc::c_char, *const *const libc::c_char) -> c_int = None;
        execveat: fn(c_int, *const libc::c_char, *const *const libc::c_char, *const *const libc::c_char, c_int) -> c_int = None;
        posix_spawn: fn(*mut libc::pid_t, *const libc::c_char, *const libc::posix_spawn_file_actions_t, *const libc::posix_spawnattr_t, *const *mut libc::c_char, *const *mut libc::c_char) -> c_int = None;
        posix_spawnp: fn(*mut libc::pid_t, *const libc::c_char, *const libc::posix_spawn_file_actions_t, *const libc::posix_spawnattr_t, *const *mut libc::c_char, *const *mut libc::c_char) -> c_int = None;
        posix_spawn_file_actions_init: fn(*mut libc::posix_spawn_file_actions_t) -> c_int = None;
        posix_spawn_file_actions_destroy: fn(*mut libc::posix_spawn_file_actions_t) -> c_int = None;
        posix_spawn_file_actions_addclose: fn(*mut libc::posix_spawn_file_actions_t, c_int) -> c_int = None;
        posix_spawn_file_actions_adddup2: fn(*mut libc::posix_spawn_file_actions_t, c_int, c_int) -> c_int = None;
        posix_spawn_file_actions_addopen: fn(*mut libc::posix_spawn_file_actions_t, c_int, *const libc::c_char, c_int, libc::mode_t) -> c_int = None;
        posix_spawn_file_actions_addclosefrom_np: fn(*mut libc::posix_spawn_file_actions_t, c_int) -> c_int = None;
    }

    pub type FcntlFn = unsafe extern "C" fn(c_int, c_int, ...) -> c_int;
    pub type IoctlFn = unsafe extern "C" fn(c_int, libc::c_ulong, ...) -> c_int;
    static FCNTL: AtomicUsize = AtomicUsize::new(0);
    static IOCTL: AtomicUsize = AtomicUsize::new(0);

    /// `fcntl(2)` as a raw system call.
    ///
    /// # Safety
    ///
    /// As for `fcntl`: when `cmd` takes a pointer, `a` must be one valid
    /// for what that command reads or writes.
    unsafe extern "C" fn fcntl_fallback(fd: c_int, cmd: c_int, a: usize) -> c_int {
        // SAFETY: the argument is passed through unchanged; the caller
        // vouches for it as `fcntl` requires.
        let r =
            unsafe { crate::rawsys::raw(libc::SYS_fcntl, [fd as _, cmd as _, a as _, 0, 0, 0]) };
        crate::rawsys::libc_result(r) as c_int
    }

    /// `ioctl(2)` as a raw system call.
    ///
    /// # Safety
    ///
    /// As for `ioctl`: when `req` takes a pointer, `a` must be one valid
    /// for what that request reads or writes.
    unsafe extern "C" fn ioctl_fallback(fd: c_int, req: libc::c_ulong, a: usize) -> c_int {
        // SAFETY: the argument is passed through unchanged; the caller
        // vouches for it as `ioctl` requires.
        let r =
            unsafe { crate::rawsys::raw(libc::SYS_ioctl, [fd as _, req as _, a as _, 0, 0, 0]) };
        crate::rawsys::libc_result(r) as c_int
    }

    /// The real `fcntl` (variadic: pass the third argument as `usize`).
    pub fn fcntl() -> FcntlFn {
        let mut p = FCNTL.load(Ordering::Relaxed);
        if p == 0 {
            p = resolve("fcntl64\0");
            if p == 0 {
                p = resolve("fcntl\0");
            }
            if p == 0 {
                // SAFETY: on x86_64 and aarch64 Linux a variadic call passes
                // its arguments exactly like this fixed-argument function.
                return unsafe {
                    std::mem::transmute::<usize, FcntlFn>(fcntl_fallback as *const () as usize)
                };
            }
            FCNTL.store(p, Ordering::Relaxed);
        }
        // SAFETY: p is libc's fcntl64/fcntl, whose C type is FcntlFn.
        unsafe { std::mem::transmute::<usize, FcntlFn>(p) }
    }

    pub type SignalFn = unsafe extern "C" fn(c_int, libc::sighandler_t) -> libc::sighandler_t;
    static SIGNAL: AtomicUsize = AtomicUsize::new(0);

    /// The real `signal` (None: libc has none, or dlsym is busy).
    pub fn signal() -> Option<SignalFn> {
        let mut p = SIGNAL.load(Ordering::Relaxed);
        if p == 0 {
            p = resolve("signal\0");
            if p == 0 {
                return None;
            }
            SIGNAL.store(p, Ordering::Relaxed);
        }
        // SAFETY: p is libc's signal (found by dlsym), whose C type is
        // SignalFn.
        Some(unsafe { std::mem::transmute::<usize, SignalFn>(p) })
    }

    /// The real `ioctl` (variadic: pass the third argument as `usize`).
    pub fn ioctl() -> IoctlFn {
        let mut p = IOCTL.load(Ordering::Relaxed);
        if p == 0 {
            p = resolve("ioctl\0");
            if p == 0 {
                // SAFETY: on x86_64 and aarch64 Linux a variadic call passes
                // its arguments exactly like this fixed-argument function.
                return unsafe {
                    std::mem::transmute::<usize, IoctlFn>(ioctl_fallback as *const () as usize)
                };
            }
            IOCTL.store(p, Ordering::Relaxed);
        }
        // SAFETY: p is libc's ioctl (found by dlsym), whose C type is IoctlFn.
        unsafe { std::mem::transmute::<usize, IoctlFn>(p) }
    }
}

// ---------------------------------------------------------------------------
// Small wrappers over the real functions, returning Result<_, errno>.

pub type Res<T> = Result<T, c_int>;

#[inline]
pub fn check(r: c_int) -> Res<c_int> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

#[inline]
pub fn check_sz(r: ssize_t) -> Res<usize> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as usize)
    }
}

pub fn r_close(fd: c_int) {
    if fd >= 0 {
        // SAFETY: close takes no pointers; callers pass descriptors the
        // shim owns.
        unsafe { real::close::get()(fd) };
    }
}

/// What the kernel reports for `fd` and `events` now (a zero-timeout
/// `poll` of one pollfd: within any sandbox's `RLIMIT_NOFILE`): its
/// revents, 0 when nothing, or -errno.
pub fn revents_now(fd: c_int, events: i16) -> c_int {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: `p` is one live local pollfd (nfds = 1).
    match unsafe { real::poll::get()(&mut p, 1, 0) } {
        r if r < 0 => -errno(),
        0 => 0,
        _ => c_int::from(p.revents),
    }
}

/// Whether a `read` (`write` with `out`) on `fd` would not block now. A
/// write also needs the peer: none on error or hang-up (no SIGPIPE).
fn ready_now(fd: c_int, out: bool) -> bool {
    let r = revents_now(fd, if out { libc::POLLOUT } else { libc::POLLIN });
    let (r, bad) = (r as i16, libc::POLLERR | libc::POLLHUP | libc::POLLNVAL);
    if out {
        r > 0 && r & libc::POLLOUT != 0 && r & bad == 0
    } else {
        r > 0 && r & libc::POLLNVAL == 0
    }
}

/// Sends `b` on the shim's own socket `fd` without blocking, with no
/// SIGPIPE. In a [`restricted`] thread (no `sendto`): `write` once `poll`
/// says there is room and the peer is there — every caller writes to an
/// empty or nearly empty pair, so a write that fits does not block.
pub fn r_send(fd: c_int, b: &[u8]) -> Res<usize> {
    if restricted() {
        if !ready_now(fd, true) {
            return Err(libc::EAGAIN);
        }
        // SAFETY: `b` is a live slice, valid for reads of b.len() bytes.
        return check_sz(unsafe { real::write::get()(fd, b.as_ptr() as *const c_void, b.len()) });
    }
    // SAFETY: `b` is a live slice: its pointer is valid for reads of
    // b.len() bytes for the duration of the call.
    check_sz(unsafe {
        real::send::get()(
            fd,
            b.as_ptr() as *const c_void,
            b.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    })
}

/// Receives into `b` from the shim's own socket `fd` without blocking. In
/// a [`restricted`] thread (no `recvfrom`): `read` once `poll` says there
/// is something (so it does not block).
pub fn r_recv(fd: c_int, b: &mut [u8]) -> Res<usize> {
    if restricted() {
        if !ready_now(fd, false) {
            return Err(libc::EAGAIN);
        }
        // SAFETY: `b` is a live, exclusively borrowed slice, valid for
        // writes of b.len() bytes.
        return check_sz(unsafe { real::read::get()(fd, b.as_mut_ptr() as *mut c_void, b.len()) });
    }
    // SAFETY: `b` is a live, exclusively borrowed slice: its pointer is
    // valid for writes of b.len() bytes for the duration of the call.
    check_sz(unsafe {
        real::recv::get()(
            fd,
            b.as_mut_ptr() as *mut c_void,
            b.len(),
            libc::MSG_DONTWAIT,
        )
    })
}

/// `fcntl` for commands whose argument is an integer (`F_GETFD`,
/// `F_SETFD`, `F_GETFL`, `F_SETFL`, `F_DUPFD*`): never one that takes a
/// pointer.
pub fn r_fcntl(fd: c_int, cmd: c_int, arg: usize) -> Res<c_int> {
    // SAFETY: the command's argument is an integer (see above), so no
    // memory is accessed through `arg`.
    check(unsafe { real::fcntl()(fd, cmd, arg) })
}

pub fn r_setsockopt_int(fd: c_int, level: c_int, name: c_int, v: c_int) -> Res<()> {
    // SAFETY: pointer to a live c_int and its size.
    check(unsafe {
        real::setsockopt::get()(
            fd,
            level,
            name,
            &v as *const c_int as *const c_void,
            std::mem::size_of::<c_int>() as socklen_t,
        )
    })
    .map(|_| ())
}

/// Moves `fd` to a number >= `min` (close-on-exec), if the limit allows.
pub fn move_high(fd: c_int, min: c_int) -> c_int {
    match r_fcntl(fd, libc::F_DUPFD_CLOEXEC, min as usize) {
        Ok(n) => {
            r_close(fd);
            n
        }
        Err(_) => fd,
    }
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live local, valid for the write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---------------------------------------------------------------------------
// A small futex lock that can be held across fork() (taken in the atfork
// prepare handler, released in the parent, reset in the child).

pub struct Lock<T> {
    st: AtomicU32,
    /// The thread id of the holder (0: none); lets the atfork handler see a
    /// lock its own thread holds (a `fork` from a signal handler that
    /// interrupted the shim).
    owner: AtomicU32,
    v: UnsafeCell<T>,
}

thread_local! {
    static TID: Cell<u32> = const { Cell::new(0) };
}

/// The calling thread's id (cached; `gettid` once per thread).
#[inline]
pub fn my_tid() -> u32 {
    TID.with(|t| {
        let v = t.get();
        if v != 0 {
            return v;
        }
        // SAFETY: gettid takes no arguments.
        let v = unsafe { libc::gettid() } as u32;
        t.set(v);
        v
    })
}

// SAFETY: access to `v` is serialised by `st` (a mutex).
unsafe impl<T: Send> Sync for Lock<T> {}
// SAFETY: a Lock owns its value; sending the Lock sends a T, which is
// Send.
unsafe impl<T: Send> Send for Lock<T> {}

pub struct Guard<'a, T> {
    l: &'a Lock<T>,
}

fn futex(word: &AtomicU32, op: c_int, val: u32) {
    // SAFETY: futex on a live, aligned u32 of ours.
    unsafe {
        crate::rawsys::raw(
            libc::SYS_futex,
            [
                word as *const AtomicU32 as libc::c_long,
                (op | libc::FUTEX_PRIVATE_FLAG) as libc::c_long,
                val as libc::c_long,
                0,
                0,
                0,
            ],
        )
    };
}

/// How often [`Lock::lock`] yields its CPU before it sleeps on the futex.
const LOCK_YIELDS: u32 = 4;

impl<T> Lock<T> {
    pub const fn new(v: T) -> Self {
        Lock {
            st: AtomicU32::new(0),
            owner: AtomicU32::new(0),
            v: UnsafeCell::new(v),
        }
    }

    #[inline]
    pub fn try_lock(&self) -> Option<Guard<'_, T>> {
        self.st
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| {
                self.owner.store(my_tid(), Ordering::Relaxed);
                Guard { l: self }
            })
    }

    #[inline]
    pub fn lock(&self) -> Guard<'_, T> {
        if self
            .st
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_slow();
        }
        self.owner.store(my_tid(), Ordering::Relaxed);
        Guard { l: self }
    }

    /// For the atfork prepare handler: takes the lock unless the calling
    /// thread holds it already — a `fork` from a signal handler that
    /// interrupted shim code holding it (PostgreSQL 15's postmaster starts
    /// its children from its signal handlers): waiting would deadlock the
    /// thread on itself. Returns whether it took it.
    pub fn raw_lock_for_fork(&self) -> bool {
        if self.st.load(Ordering::Relaxed) != 0 && self.owner.load(Ordering::Relaxed) == my_tid() {
            return false;
        }
        self.raw_lock();
        true
    }

    /// Takes the lock if it looks free (a read first, so that waiters do
    /// not bounce the line with failed read-modify-writes).
    #[inline]
    fn take_if_free(&self) -> bool {
        self.st.load(Ordering::Relaxed) == 0
            && self
                .st
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    #[cold]
    fn lock_slow(&self) {
        for _ in 0..100 {
            if self.take_if_free() {
                return;
            }
            std::hint::spin_loop();
        }
        // Then give the CPU away a few times before sleeping: on a machine
        // with more runnable threads than CPUs the holder is often one that
        // was preempted, and yielding lets it finish without the futex
        // sleep and wake-up (two system calls and a context switch each
        // side). A thread-per-connection server of 64 threads, whose
        // sockets all belong to the listener's context, served 38k req/s
        // with 2.4 voluntary context switches per request; with 4 yields
        // here 42–48k and 1.3 (Linux: 1.4; docs/perf-bench.md, session
        // 30). `relax` only pauses under a seccomp filter that may forbid
        // `sched_yield`.
        for _ in 0..LOCK_YIELDS {
            tas::spin::relax();
            if self.take_if_free() {
                return;
            }
        }
        while self.st.swap(2, Ordering::Acquire) != 0 {
            futex(&self.st, libc::FUTEX_WAIT, 2);
        }
    }

    /// Takes the lock without a guard (atfork prepare).
    pub fn raw_lock(&self) {
        std::mem::forget(self.lock());
    }

    /// Releases a lock taken with [`raw_lock`](Self::raw_lock).
    ///
    /// # Safety
    /// The caller must hold the lock without a live guard.
    pub unsafe fn raw_unlock(&self) {
        self.owner.store(0, Ordering::Relaxed);
        if self.st.swap(0, Ordering::Release) == 2 {
            futex(&self.st, libc::FUTEX_WAKE, 1);
        }
    }

    /// In a forked child: the lock is free (only the forking thread exists).
    ///
    /// # Safety
    /// Only in the child right after fork, before anything uses the lock.
    pub unsafe fn reset(&self) {
        self.owner.store(0, Ordering::Relaxed);
        self.st.store(0, Ordering::SeqCst);
    }
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves we hold the lock.
        unsafe { &*self.l.v.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves we hold the lock exclusively.
        unsafe { &mut *self.l.v.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: we hold the lock.
        unsafe { self.l.raw_unlock() };
    }
}

/// Writes a line to stderr (diagnostics; never through our own `write`).
pub fn log(msg: &str) {
    let line = format!("libtas_preload[{}]: {msg}\n", std::process::id());
    // SAFETY: pointer and length describe the bytes of `line`, alive for
    // the call.
    unsafe { real::write::get()(2, line.as_ptr() as *const c_void, line.len()) };
}
