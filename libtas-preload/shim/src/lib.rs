//! # libtas_preload.so — POSIX sockets on TAS for unmodified programs
//!
//! `LD_PRELOAD=libtas_preload.so program` runs `program`'s IPv4 TCP over
//! `tasd` (reached through `TAS_SOCKET`), using the low-level API of the
//! `tas` crate — including IPv4 on dual-stack `AF_INET6` sockets (the
//! program sees IPv4-mapped addresses). Everything else — UDP, Unix
//! sockets, IPv6 addresses, files, DNS, and TCP to loopback or to
//! addresses the kernel owns — goes to libc untouched. When tasd cannot be reached, TCP uses the kernel too (with
//! one warning on stderr).
//!
//! ## What this crate owns
//!
//! * The exported C functions — the interposed socket, data, descriptor
//!   and multiplexing calls, the `_FORTIFY_SOURCE` `__*_chk` variants,
//!   `close_range` and `closefrom`, and `sigaction`/`signal` — each an item of an `interpose!`
//!   invocation below (the macro: `interpose.rs`), and their C-side
//!   conversions (`ffi.rs`). It is the only crate with C
//!   symbols: the `tas` rlib exports none.
//! * The libc functions behind them (`dlsym(RTLD_NEXT)`), errno, the
//!   re-entrancy guard and a fork-safe lock (`sys.rs`).
//! * The process-wide state (`global.rs`, `config.rs`): the fd table
//!   (`fdtab.rs`), the contexts and their sockets (`ctx.rs`, `sock.rs`),
//!   readiness on each socket's pair (`readiness.rs`) or, for sockets only
//!   one epoll set or a blocked thread watches, from user space
//!   (`vready.rs`), waiting (`wait.rs`, `mux.rs`; a blocking call's wait on one socket:
//!   `solo.rs`; whether one interrupted by a signal handler waits again,
//!   as Linux restarts it after `SA_RESTART`: `sigrestart.rs`; the
//!   program's signal handlers, wrapped so that a wait knows when one
//!   ran: `sigwrap.rs`), the reactor thread (`reactor.rs`), sockets that survive
//!   `fork` (`fork.rs`), `exec` (`exec.rs`) and `posix_spawn`
//!   (`spawn.rs`: the file actions are recorded) or are passed with
//!   `SCM_RIGHTS` (`pass.rs`), and threads under a
//!   seccomp filter (`prctl`, `sys::restricted`), on which the shim makes
//!   only the system calls such sandboxes allow.
//! * What each call does to a TAS socket, with Linux's results and errno
//!   (`ops/`, `opts.rs`): the port registry behind `bind`, the switch to a
//!   kernel socket for loopback and kernel-owned addresses, options kept
//!   per socket or on a kernel shadow socket.
//!
//! TCP itself — the protocol, the rings, the conversation with tasd — is
//! the `tas` crate's; the shim only calls its low-level API.
//!
//! ## What it must not do
//!
//! * Export any symbol other than the interposed calls (`nm -D` is tested).
//! * Change a call that involves no TAS socket: it reaches libc's own
//!   definition with the caller's arguments. The shim only keeps its fd
//!   table current, and keeps its own descriptors away from the program
//!   (`close` on one reports success and leaves it open; `dup2`/`dup3`
//!   onto one moves the shim's descriptor first). The one exception is a
//!   handler set with `sigaction` or `signal`, which the kernel reaches
//!   through the shim's trampoline; the handler itself sees the kernel's
//!   arguments, and queries see the program's own handler and flags
//!   (`sigwrap.rs`).
//! * Re-enter itself: while a thread runs shim code every exported function
//!   goes straight to libc (`sys::in_shim`), since `std` and the `tas`
//!   crate call `read`, `poll`, `close`, ... through the same symbols.
//! * Wait for readiness (spin or block in the kernel) while holding a
//!   context's lock: other threads share the context.
//! * Touch a context of an older fork generation other than to take an
//!   inherited socket over from it (`fork.rs`): the parent still drives
//!   it.
//!
//! ## Design
//!
//! * **fd numbers are real sockets.** Each TAS socket's number is one end of
//!   a Unix stream socket pair whose kernel readiness the shim drives
//!   (see `readiness.rs`). `epoll` (level, edge, one-shot, `EPOLLRDHUP`),
//!   `poll` and `select` over mixed sets are therefore done by the kernel,
//!   exactly; `dup`, `fork` and `exec` (`FD_CLOEXEC`) behave as for any fd.
//!   The exception, to save a `send` and a `recv` per request: the
//!   readability of a socket that only one epoll set watches is answered
//!   by `epoll_wait` from user space, and that of a socket nobody watches
//!   goes on its pair only while a thread blocks on it (`vready.rs`); the
//!   pair takes over for good as soon as anything else could look at it.
//! * **Contexts.** A thread attaches its own context (queue pair) on first
//!   use, up to `TAS_CONTEXTS` (default min(cores, 4)); more threads share
//!   them round-robin. A socket belongs to the context that created (or
//!   accepted) it and any thread may use it: each context is behind a lock.
//! * **Waiting.** Blocking calls and `epoll_wait`/`poll`/`select` over sets
//!   containing TAS sockets poll the contexts for a spin (`TAS_SPIN_US`
//!   fixed; by default self-tuned toward `TAS_PROFILE` or the daemon's
//!   goal and kept to a CPU budget, `tas::spin`; the goal and contention read from the contexts in `spin.rs`;
//!   a self-tuned spin of 0 still yields and looks again while sibling
//!   threads wait too and the yields hand the CPU over, `wait.rs`) and then block in the kernel with the contexts' eventfds and control
//!   sockets in the same wait (a blocking `accept`: the control sockets
//!   only, new connections come as control messages); the fast path kicks
//!   a context's eventfd only while a thread is blocked that way. Of the
//!   threads blocked in a call on one socket (`recv`, `send`, `connect`),
//!   only one per context (its drainer) has the context's fds in its wait;
//!   the others wait on their socket's pair and their own wake eventfd, so
//!   a notification wakes the drainer and the socket's own thread, not
//!   every blocked thread (`solo.rs`). The reactor thread looks every
//!   10 ms at contexts nobody is blocked on (and at once at their control
//!   sockets) and turns news into readiness.
//! * **fork and exec.** Locks are held across `fork()`; the child starts a
//!   new generation. Sockets survive: the forking process obtains a grant
//!   from tasd for its child, and the child, on first use of an inherited
//!   socket, attaches a context sharing the parent context's region and
//!   takes the socket over; `close` of a socket other processes may hold
//!   only lets go of this process's reference (`fork.rs`). Sockets without
//!   `FD_CLOEXEC` survive `exec` likewise, described to the new image in
//!   `TAS_INHERIT` (`exec.rs`), and so do those a program started with
//!   `posix_spawn` gets, under the numbers its file actions give them
//!   (`spawn.rs`; glibc's child runs no interposed function, so the
//!   parent does it). A socket sent with `SCM_RIGHTS` is
//!   registered with tasd by the sender and claimed by the receiver, which
//!   takes it over the same way (`pass.rs`; another user's is refused:
//!   `EACCES`). If tasd refuses, inherited sockets give
//!   clean errors (`ENOTCONN` for data calls, `EINVAL` for
//!   listen/accept/connect/bind).
//! * **Errors.** Failures become `-1` with the errno Linux would give; the
//!   TAS part of a call runs under `ffi::run`, which turns a panic into
//!   `EIO`.
//!
//! Environment: `TAS_SOCKET` (attach socket), `TAS_IP` (the service's
//! address, to answer `bind` to a foreign address with `EADDRNOTAVAIL`),
//! `TAS_SPIN_US`, `TAS_PROFILE`, `TAS_CONTEXTS`, `TAS_PRELOAD_DEBUG=1` (log decisions to
//! stderr), `TAS_PRELOAD_DISABLE=1` (pass everything to libc);
//! `TAS_PRELOAD_TEST_LAZY_DELAY_US` only for tests (`config.rs`).

// Every unsafe operation is in an `unsafe {}` block with a `// SAFETY:`
// comment, and every `unsafe fn` documents its contract (`# Safety`).
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]
// Casts between libc integer types are kept for other targets, where
// time_t, off_t and friends differ; `is_multiple_of` is newer than our MSRV.
#![allow(clippy::unnecessary_cast, clippy::manual_is_multiple_of)]

mod config;
mod ctx;
mod debug;
mod exec;
mod fdtab;
mod ffi;
mod fork;
mod global;
#[macro_use]
mod interpose;
mod mux;
mod ops;
mod opts;
mod pass;
mod rawsys;
mod reactor;
mod readiness;
mod sigrestart;
mod sigwrap;
mod sock;
mod solo;
mod spawn;
mod spin;
mod sys;
mod vready;
mod wait;

use fdtab::{kind, Kind};
use ffi::{buf, buf_mut, chk_fail, int, iov, iov_mut, run, sz, total, unit, unit_or_libc};
use libc::{
    c_int, c_long, c_uint, c_ulong, c_void, iovec, msghdr, off64_t, off_t, size_t, sockaddr,
    socklen_t, ssize_t,
};
use ops::Src;
use std::io::{IoSlice, IoSliceMut};
use sys::{in_shim, real, set_errno, Enter};

// ---------------------------------------------------------------------------
// Start-up.

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = init;

extern "C" fn init() {
    let _e = Enter::new();
    sys::real::resolve_all();
    let _ = sys::real::signal();
    fork::note_pid();
    fork::register_atfork();
    exec::load();
}

// ---------------------------------------------------------------------------
// exec.

extern "C" {
    static mut environ: *const *const libc::c_char;
}

fn environ_ptr() -> *const *const libc::c_char {
    // SAFETY: reads the pointer value of libc's `environ` (no reference is
    // made to the static).
    unsafe { std::ptr::addr_of!(environ).read() }
}

/// Runs `f` (an exec) with `envp` plus the description of the TAS sockets
/// that survive it; undoes the preparation when it returns (failed).
///
/// # Safety
///
/// `envp` is null or a NULL-terminated array of C strings; `f` is an exec
/// function called under its contract.
unsafe fn exec_with(
    envp: *const *const libc::c_char,
    f: impl FnOnce(*const *const libc::c_char) -> c_int,
) -> c_int {
    if in_shim() {
        return f(envp);
    }
    let Some(p) = exec::prepare() else {
        return f(envp);
    };
    // SAFETY: envp as the caller passed it (contract).
    let env = unsafe { exec::with_var(envp, &p.var) };
    let r = f(env.as_ptr());
    let e = sys::errno();
    exec::cancel(p);
    set_errno(e);
    r
}

// ---------------------------------------------------------------------------
// Sockets.

/// Whether the kernel makes `AF_INET6` sockets (not with `ipv6.disable=1`):
/// if not, `socket(AF_INET6, ...)` stays the kernel's, which refuses it.
/// Probed once.
fn kernel_has_ipv6() -> bool {
    static V6: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
    sys::probed_once(&V6, || {
        // SAFETY: socket takes no pointers; the probe is closed at once.
        let k = unsafe {
            real::socket::get()(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
        };
        if k >= 0 {
            sys::r_close(k);
        }
        k >= 0 || sys::errno() != libc::EAFNOSUPPORT
    })
}

interpose! {
    /// An IPv4 or IPv6 TCP socket is a TAS socket when tasd can be reached
    /// (an IPv6 one serves IPv4 through TAS and goes to the kernel for
    /// anything else, `ops/v6.rs`); every other socket is libc's.
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
        let f = real::socket::get();
        if in_shim() {
            // SAFETY: socket takes no pointers.
            return unsafe { f(domain, ty, protocol) };
        }
        let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
        if (domain != libc::AF_INET && (domain != libc::AF_INET6 || !kernel_has_ipv6()))
            || base != libc::SOCK_STREAM
            || (protocol != 0 && protocol != libc::IPPROTO_TCP)
        {
            // SAFETY: socket takes no pointers.
            return unsafe { f(domain, ty, protocol) };
        }
        let r = run(|| {
            if global::global().cfg.disabled {
                return Ok(None);
            }
            ops::socket(ty, domain == libc::AF_INET6).transpose()
        });
        match r {
            Ok(Some(fd)) => fd,
            // SAFETY: socket takes no pointers.
            Ok(None) => unsafe { f(domain, ty, protocol) },
            Err(e) => {
                set_errno(e);
                -1
            }
        }
    }

    /// Loopback and kernel-owned addresses (and for an `AF_INET6` socket
    /// any real IPv6 address) make the socket a kernel socket.
    tas_or_libc fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int
        // SAFETY: addr/len as the caller passed them, under bind's contract.
        => |c, s| unit_or_libc(|| unsafe { ops::bind(c, s, addr, len) });

    /// An `AF_INET6` socket with `IPV6_V6ONLY` on becomes a kernel socket.
    tas_or_libc fn listen(fd: c_int, backlog: c_int) -> c_int
        => |c, s| unit_or_libc(|| ops::listen(c, s, backlog));

    tas fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int
        // SAFETY: addr/len as the caller passed them, under accept4's
        // contract.
        => |c, s| int(|| unsafe { ops::accept(c, s, addr, len, flags) });

    tas fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int
        // SAFETY: addr/len as the caller passed them, under accept's
        // contract (accept4's, without flags).
        => |c, s| int(|| unsafe { ops::accept(c, s, addr, len, 0) });

    /// Loopback and kernel-owned addresses (and for an `AF_INET6` socket
    /// any real IPv6 address) make the socket a kernel socket.
    tas_or_libc fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int
        // SAFETY: addr/len as the caller passed them, under connect's
        // contract.
        => |c, s| unit_or_libc(|| unsafe { ops::connect(c, s, addr, len) });

    tas fn shutdown(fd: c_int, how: c_int) -> c_int
        => |c, s| unit(|| ops::shutdown(c, s, how));

    /// Sockets survive: the child can use what it inherits (`fork.rs`).
    fn fork() -> libc::pid_t {
        if in_shim() {
            // SAFETY: fork takes no arguments.
            return unsafe { real::fork::get()() };
        }
        fork::fork()
    }

    /// The program's handlers are wrapped, so that a wait knows when one
    /// ran (`sigwrap.rs`).
    fn sigaction(
        sig: c_int,
        act: *const libc::sigaction,
        old: *mut libc::sigaction,
    ) -> c_int {
        // SAFETY: sigaction's contract is this function's.
        unsafe { sigwrap::sigaction(sig, act, old) }
    }

    fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
        // SAFETY: signal's contract is this function's.
        unsafe { sigwrap::signal(sig, handler) }
    }

    /// The contexts inherited sockets need are attached first: the attach
    /// socket may be out of reach afterwards (`fork::prepare_all`).
    fn chroot(path: *const libc::c_char) -> c_int {
        if !in_shim() {
            fork::prepare_all();
        }
        // SAFETY: the caller's argument under chroot's contract.
        unsafe { real::chroot::get()(path) }
    }

    /// As `chroot`.
    fn setuid(u: libc::uid_t) -> c_int {
        if !in_shim() {
            fork::prepare_all();
        }
        // SAFETY: no pointers.
        unsafe { real::setuid::get()(u) }
    }

    /// As `chroot`.
    fn setgid(g: libc::gid_t) -> c_int {
        if !in_shim() {
            fork::prepare_all();
        }
        // SAFETY: no pointers.
        unsafe { real::setgid::get()(g) }
    }

    /// As `chroot`.
    fn seteuid(u: libc::uid_t) -> c_int {
        if !in_shim() {
            fork::prepare_all();
        }
        // SAFETY: no pointers.
        unsafe { real::seteuid::get()(u) }
    }

    /// As `chroot`.
    fn setegid(g: libc::gid_t) -> c_int {
        if !in_shim() {
            fork::prepare_all();
        }
        // SAFETY: no pointers.
        unsafe { real::setegid::get()(g) }
    }

    /// As `chroot`.
    fn setreuid(r: libc::uid_t, e: libc::uid_t) -> c_int {
        if !in_shim() {
            fork::prepare_all();
        }
        // SAFETY: no pointers.
        unsafe { real::setreuid::get()(r, e) }
    }

    /// As `chroot`.
    fn setregid(r: libc::gid_t, e: libc::gid_t) -> c_int {
        if !in_shim() {
            fork::prepare_all();
        }
        // SAFETY: no pointers.
        unsafe { real::setregid::get()(r, e) }
    }

    /// As `chroot`.
    fn setresuid(r: libc::uid_t, e: libc::uid_t, s: libc::uid_t) -> c_int {
        if !in_shim() {
            fork::prepare_all();
        }
        // SAFETY: no pointers.
        unsafe { real::setresuid::get()(r, e, s) }
    }

    /// As `chroot`.
    fn setresgid(r: libc::gid_t, e: libc::gid_t, s: libc::gid_t) -> c_int {
        if !in_shim() {
            fork::prepare_all();
        }
        // SAFETY: no pointers.
        unsafe { real::setresgid::get()(r, e, s) }
    }

    /// `prctl(PR_SET_SECCOMP, ...)`: inherited sockets are taken over first
    /// (as for `chroot`), and from then on the calling thread makes only
    /// the system calls a sandbox allows (`sys::restricted`). Every other
    /// option goes to the kernel unchanged. Variadic in C; defined with
    /// four `unsigned long` arguments after the option, as `syscall` is
    /// (the same registers on x86_64 and aarch64 Linux), and made as the
    /// raw system call.
    fn prctl(option: c_int, a2: c_ulong, a3: c_ulong, a4: c_ulong, a5: c_ulong) -> c_int {
        let seccomp = option == libc::PR_SET_SECCOMP && !in_shim();
        if seccomp {
            fork::adopt_all();
        }
        // SAFETY: prctl's arguments as the caller passed them, under its
        // contract (this function's).
        let r = unsafe {
            rawsys::raw(
                libc::SYS_prctl,
                [option as c_long, a2 as c_long, a3 as c_long, a4 as c_long, a5 as c_long, 0],
            )
        };
        if seccomp && r == 0 {
            sys::set_restricted(false);
        }
        rawsys::libc_result(r) as c_int
    }

    /// Lowering `RLIMIT_NOFILE` below the inherited sockets' fd numbers
    /// (sshd's sandboxed child sets it to 1 before its seccomp filter)
    /// takes them over first: afterwards no readiness pair of their own
    /// could be made (`fork::before_nofile_limit`).
    fn setrlimit(resource: c_int, rlim: *const libc::rlimit) -> c_int {
        if !in_shim() && resource == libc::RLIMIT_NOFILE as c_int && !rlim.is_null() {
            // SAFETY: rlim is non-null and valid for reads (setrlimit's
            // contract).
            fork::before_nofile_limit(unsafe { (*rlim).rlim_cur });
        }
        // SAFETY: the caller's arguments under setrlimit's contract.
        unsafe { real::setrlimit::get()(resource, rlim) }
    }

    /// As `setrlimit`.
    fn setrlimit64(resource: c_int, rlim: *const libc::rlimit64) -> c_int {
        if !in_shim() && resource == libc::RLIMIT_NOFILE as c_int && !rlim.is_null() {
            // SAFETY: as in setrlimit.
            fork::before_nofile_limit(unsafe { (*rlim).rlim_cur });
        }
        // SAFETY: the caller's arguments under setrlimit64's contract.
        unsafe { real::setrlimit64::get()(resource, rlim) }
    }

    /// As `setrlimit`, for this process (`pid` 0 or its own).
    fn prlimit(pid: libc::pid_t, resource: c_int, new: *const libc::rlimit, old: *mut libc::rlimit) -> c_int {
        if !in_shim()
            && resource == libc::RLIMIT_NOFILE as c_int
            && !new.is_null()
            && (pid == 0 || pid == std::process::id() as libc::pid_t)
        {
            // SAFETY: new is non-null and valid for reads (prlimit's
            // contract).
            fork::before_nofile_limit(unsafe { (*new).rlim_cur });
        }
        // SAFETY: the caller's arguments under prlimit's contract.
        unsafe { real::prlimit::get()(pid, resource, new, old) }
    }

    /// As `prlimit`.
    fn prlimit64(pid: libc::pid_t, resource: c_int, new: *const libc::rlimit64, old: *mut libc::rlimit64) -> c_int {
        if !in_shim()
            && resource == libc::RLIMIT_NOFILE as c_int
            && !new.is_null()
            && (pid == 0 || pid == std::process::id() as libc::pid_t)
        {
            // SAFETY: as in prlimit.
            fork::before_nofile_limit(unsafe { (*new).rlim_cur });
        }
        // SAFETY: the caller's arguments under prlimit64's contract.
        unsafe { real::prlimit64::get()(pid, resource, new, old) }
    }

    /// TAS sockets without `FD_CLOEXEC` survive into the new image (exec.rs).
    fn execve(path: *const libc::c_char, argv: *const *const libc::c_char, envp: *const *const libc::c_char) -> c_int {
        // SAFETY: the caller's arguments under execve's contract.
        unsafe { exec_with(envp, |e| real::execve::get()(path, argv, e)) }
    }

    fn execv(path: *const libc::c_char, argv: *const *const libc::c_char) -> c_int {
        // SAFETY: as execve, with the process's environment.
        unsafe { exec_with(environ_ptr(), |e| real::execve::get()(path, argv, e)) }
    }

    fn execvpe(file: *const libc::c_char, argv: *const *const libc::c_char, envp: *const *const libc::c_char) -> c_int {
        // SAFETY: the caller's arguments under execvpe's contract.
        unsafe { exec_with(envp, |e| real::execvpe::get()(file, argv, e)) }
    }

    fn execvp(file: *const libc::c_char, argv: *const *const libc::c_char) -> c_int {
        // SAFETY: as execvpe, with the process's environment.
        unsafe { exec_with(environ_ptr(), |e| real::execvpe::get()(file, argv, e)) }
    }

    fn fexecve(fd: c_int, argv: *const *const libc::c_char, envp: *const *const libc::c_char) -> c_int {
        // SAFETY: the caller's arguments under fexecve's contract.
        unsafe { exec_with(envp, |e| real::fexecve::get()(fd, argv, e)) }
    }

    fn execveat(dirfd: c_int, path: *const libc::c_char, argv: *const *const libc::c_char, envp: *const *const libc::c_char, flags: c_int) -> c_int {
        // SAFETY: the caller's arguments under execveat's contract.
        unsafe { exec_with(envp, |e| real::execveat::get()(dirfd, path, argv, e, flags)) }
    }

    /// TAS sockets the spawned program inherits survive into it, as across
    /// exec; its file actions say under which numbers (spawn.rs).
    fn posix_spawn(pid: *mut libc::pid_t, path: *const libc::c_char, fa: *const libc::posix_spawn_file_actions_t, attr: *const libc::posix_spawnattr_t, argv: *const *mut libc::c_char, envp: *const *mut libc::c_char) -> c_int {
        // SAFETY: the caller's arguments under posix_spawn's contract.
        unsafe { spawn::spawn(pid, fa, envp, |p, e| real::posix_spawn::get()(p, path, fa, attr, argv, e)) }
    }

    fn posix_spawnp(pid: *mut libc::pid_t, file: *const libc::c_char, fa: *const libc::posix_spawn_file_actions_t, attr: *const libc::posix_spawnattr_t, argv: *const *mut libc::c_char, envp: *const *mut libc::c_char) -> c_int {
        // SAFETY: the caller's arguments under posix_spawnp's contract.
        unsafe { spawn::spawn(pid, fa, envp, |p, e| real::posix_spawnp::get()(p, file, fa, attr, argv, e)) }
    }

    /// The file actions of each object are recorded (spawn.rs).
    fn posix_spawn_file_actions_init(fa: *mut libc::posix_spawn_file_actions_t) -> c_int {
        // SAFETY: the caller's argument under the function's contract.
        let r = unsafe { real::posix_spawn_file_actions_init::get()(fa) };
        if r == 0 {
            spawn::fa_init(fa as usize);
        }
        r
    }

    fn posix_spawn_file_actions_destroy(fa: *mut libc::posix_spawn_file_actions_t) -> c_int {
        spawn::fa_destroy(fa as usize);
        // SAFETY: the caller's argument under the function's contract.
        unsafe { real::posix_spawn_file_actions_destroy::get()(fa) }
    }

    fn posix_spawn_file_actions_addclose(fa: *mut libc::posix_spawn_file_actions_t, fd: c_int) -> c_int {
        // SAFETY: the caller's arguments under the function's contract.
        let r = unsafe { real::posix_spawn_file_actions_addclose::get()(fa, fd) };
        if r == 0 {
            spawn::fa_add(fa as usize, spawn::Action::Close(fd));
        }
        r
    }

    fn posix_spawn_file_actions_adddup2(fa: *mut libc::posix_spawn_file_actions_t, fd: c_int, newfd: c_int) -> c_int {
        // SAFETY: the caller's arguments under the function's contract.
        let r = unsafe { real::posix_spawn_file_actions_adddup2::get()(fa, fd, newfd) };
        if r == 0 {
            spawn::fa_add(fa as usize, spawn::Action::Dup2(fd, newfd));
        }
        r
    }

    fn posix_spawn_file_actions_addopen(fa: *mut libc::posix_spawn_file_actions_t, fd: c_int, path: *const libc::c_char, oflag: c_int, mode: libc::mode_t) -> c_int {
        // SAFETY: the caller's arguments under the function's contract.
        let r = unsafe { real::posix_spawn_file_actions_addopen::get()(fa, fd, path, oflag, mode) };
        if r == 0 {
            spawn::fa_add(fa as usize, spawn::Action::Open(fd));
        }
        r
    }

    fn posix_spawn_file_actions_addclosefrom_np(fa: *mut libc::posix_spawn_file_actions_t, from: c_int) -> c_int {
        // SAFETY: the caller's arguments under the function's contract.
        let r = unsafe { real::posix_spawn_file_actions_addclosefrom_np::get()(fa, from) };
        if r == 0 {
            spawn::fa_add(fa as usize, spawn::Action::CloseFrom(from));
        }
        r
    }

    /// The shim's own descriptors are never closed (reported closed).
    fn close(fd: c_int) -> c_int {
        let f = real::close::get();
        let Some(g) = global::try_global() else {
            // SAFETY: close takes no pointers; fd is the caller's to close.
            return unsafe { f(fd) };
        };
        if in_shim() {
            if g.fd(fd) != 0 {
                g.set_fd(fd, 0);
            }
            // SAFETY: close takes no pointers; the shim closes its own fd.
            return unsafe { f(fd) };
        }
        exec::forget(fd);
        match fdtab::kind_noadopt(fd) {
            Kind::Sock(c, s) => unit(|| ops::close(c, s, fd)),
            // The shim's own descriptors stay open (a program closing "all"
            // descriptors must not cut us off); report success as Linux would.
            Kind::Internal => 0,
            Kind::Kernel => {
                let v = g.fd(fd);
                if v != 0 {
                    if v & fdtab::T_EPOLL != 0 {
                        vready::epfd_closed(fd);
                    }
                    g.set_fd(fd, 0);
                }
                // SAFETY: close takes no pointers; fd is the caller's to close.
                unsafe { f(fd) }
            }
        }
    }

    fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
        close_range_impl(first, last, flags)
    }

    fn closefrom(lowfd: c_int) {
        let _ = close_range_impl(lowfd.max(0) as c_uint, c_uint::MAX, 0);
    }
}

/// `close_range` (and `closefrom`): TAS sockets in the range are closed
/// through the shim and the shim's own descriptors are skipped.
fn close_range_impl(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    let f = real::close_range::get();
    let Some(g) = global::try_global() else {
        // SAFETY: close_range takes no pointers.
        return unsafe { f(first, last, flags) };
    };
    if in_shim() || flags & libc::CLOSE_RANGE_CLOEXEC as c_int != 0 || first > last {
        // SAFETY: close_range takes no pointers.
        return unsafe { f(first, last, flags) };
    }
    // Close TAS sockets through the shim and keep the shim's own fds.
    let mut start = first as u64;
    let end = last as u64;
    let mut fd = start;
    let scan_end = end.min(1 << 22);
    while fd <= scan_end {
        if !g.fd_fits(fd as c_int) {
            break;
        }
        exec::forget(fd as c_int);
        match fdtab::kind_noadopt(fd as c_int) {
            Kind::Sock(c, s) => {
                let _ = run(|| ops::close(c, s, fd as c_int));
            }
            Kind::Internal => {
                // SAFETY: close_range takes no pointers; the range stops
                // before the shim's descriptor.
                if fd > start && unsafe { f(start as c_uint, (fd - 1) as c_uint, flags) } < 0 {
                    return -1;
                }
                start = fd + 1;
            }
            Kind::Kernel => {
                let v = g.fd(fd as c_int);
                if v != 0 {
                    if v & fdtab::T_EPOLL != 0 {
                        vready::epfd_closed(fd as c_int);
                    }
                    g.set_fd(fd as c_int, 0);
                }
            }
        }
        fd += 1;
    }
    if start <= end {
        // SAFETY: close_range takes no pointers.
        return unsafe { f(start as c_uint, end as c_uint, flags) };
    }
    0
}

// ---------------------------------------------------------------------------
// Raw system calls.

interpose! {
    /// `syscall(2)`: the socket and descriptor calls the shim interposes,
    /// when made through `syscall(SYS_close, fd)` and the like (libuv, and
    /// so node.js, closes that way), go to the shim's function of that name;
    /// every other number goes to the kernel unchanged, without libc.
    ///
    /// `syscall` is variadic in C. It is defined here with seven `long`
    /// parameters: on x86_64 and aarch64 Linux a variadic call passes its
    /// integer and pointer arguments in the same registers as a fixed one
    /// (the six argument registers), and every system call argument is an
    /// integer or a pointer, so the callee sees exactly what the caller
    /// passed. Arguments the call does not take are whatever the caller's
    /// registers held, as with libc's own `syscall`.
    fn syscall(
        n: c_long,
        a1: c_long,
        a2: c_long,
        a3: c_long,
        a4: c_long,
        a5: c_long,
        a6: c_long,
    ) -> c_long {
        let fd = a1 as c_int;
        // SAFETY: (all arms) each interposed function is called with the
        // arguments of the system call of the same number, which the
        // caller passed under `syscall`'s contract (this function's).
        unsafe {
            match n {
                libc::SYS_close => close(fd) as c_long,
                libc::SYS_read => read(fd, a2 as _, a3 as _) as c_long,
                libc::SYS_write => write(fd, a2 as _, a3 as _) as c_long,
                libc::SYS_readv => readv(fd, a2 as _, a3 as _) as c_long,
                libc::SYS_writev => writev(fd, a2 as _, a3 as _) as c_long,
                libc::SYS_recvfrom => recvfrom(fd, a2 as _, a3 as _, a4 as _, a5 as _, a6 as _) as c_long,
                libc::SYS_sendto => sendto(fd, a2 as _, a3 as _, a4 as _, a5 as _, a6 as _) as c_long,
                libc::SYS_recvmsg => recvmsg(fd, a2 as _, a3 as _) as c_long,
                libc::SYS_sendmsg => sendmsg(fd, a2 as _, a3 as _) as c_long,
                libc::SYS_recvmmsg => recvmmsg(fd, a2 as _, a3 as _, a4 as _, a5 as _) as c_long,
                libc::SYS_sendmmsg => sendmmsg(fd, a2 as _, a3 as _, a4 as _) as c_long,
                libc::SYS_accept => accept(fd, a2 as _, a3 as _) as c_long,
                libc::SYS_accept4 => accept4(fd, a2 as _, a3 as _, a4 as _) as c_long,
                libc::SYS_connect => connect(fd, a2 as _, a3 as _) as c_long,
                libc::SYS_bind => bind(fd, a2 as _, a3 as _) as c_long,
                libc::SYS_listen => listen(fd, a2 as _) as c_long,
                libc::SYS_shutdown => shutdown(fd, a2 as _) as c_long,
                libc::SYS_socket => socket(a1 as _, a2 as _, a3 as _) as c_long,
                libc::SYS_getsockname => getsockname(fd, a2 as _, a3 as _) as c_long,
                libc::SYS_getpeername => getpeername(fd, a2 as _, a3 as _) as c_long,
                libc::SYS_getsockopt => getsockopt(fd, a2 as _, a3 as _, a4 as _, a5 as _) as c_long,
                libc::SYS_setsockopt => setsockopt(fd, a2 as _, a3 as _, a4 as _, a5 as _) as c_long,
                libc::SYS_fcntl => fcntl(fd, a2 as _, a3 as _) as c_long,
                libc::SYS_ioctl => ioctl(fd, a2 as _, a3 as _) as c_long,
                libc::SYS_dup => dup(fd) as c_long,
                #[cfg(target_arch = "x86_64")]
                libc::SYS_dup2 => dup2(fd, a2 as _) as c_long,
                libc::SYS_dup3 => dup3(fd, a2 as _, a3 as _) as c_long,
                libc::SYS_close_range => close_range(a1 as _, a2 as _, a3 as _) as c_long,
                libc::SYS_epoll_ctl => epoll_ctl(fd, a2 as _, a3 as _, a4 as _) as c_long,
                #[cfg(target_arch = "x86_64")]
                libc::SYS_epoll_wait => epoll_wait(fd, a2 as _, a3 as _, a4 as _) as c_long,
                libc::SYS_epoll_pwait => epoll_pwait(fd, a2 as _, a3 as _, a4 as _, a5 as _) as c_long,
                #[cfg(target_arch = "x86_64")]
                libc::SYS_poll => poll(a1 as _, a2 as _, a3 as _) as c_long,
                libc::SYS_ppoll => ppoll(a1 as _, a2 as _, a3 as _, a4 as _) as c_long,
                #[cfg(target_arch = "x86_64")]
                libc::SYS_sendfile => sendfile(a1 as _, a2 as _, a3 as _, a4 as _) as c_long,
                libc::SYS_prctl => prctl(a1 as _, a2 as _, a3 as _, a4 as _, a5 as _) as c_long,
                libc::SYS_seccomp => {
                    if !in_shim() {
                        fork::adopt_all();
                    }
                    let r = rawsys::raw(n, [a1, a2, a3, a4, a5, a6]);
                    // SECCOMP_SET_MODE_STRICT (0) or _FILTER (1) installed:
                    // 0, or a listener fd with _FLAG_NEW_LISTENER (8) (with
                    // _FLAG_TSYNC a positive result is the thread that
                    // refused).
                    let ok = r == 0 || (r > 0 && a2 & 8 != 0);
                    if ok && (a1 == 0 || a1 == 1) {
                        // SECCOMP_FILTER_FLAG_TSYNC (1): every thread.
                        sys::set_restricted(a1 == 1 && a2 & 1 != 0);
                    }
                    rawsys::libc_result(r)
                }
                _ => rawsys::libc_result(rawsys::raw(n, [a1, a2, a3, a4, a5, a6])),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Data.

interpose! {
    tas fn read(fd: c_int, b: *mut c_void, n: size_t) -> ssize_t
        // SAFETY: b/n as the caller passed them: writable (read's contract).
        => |c, s| sz(|| ops::recv(c, s, &mut [IoSliceMut::new(unsafe { buf_mut(b, n) }?)], 0));

    fn __read_chk(fd: c_int, b: *mut c_void, n: size_t, buflen: size_t) -> ssize_t {
        if n > buflen {
            chk_fail();
        }
        // SAFETY: read's contract is this function's (b holds buflen >= n
        // bytes).
        unsafe { read(fd, b, n) }
    }

    tas fn write(fd: c_int, b: *const c_void, n: size_t) -> ssize_t
        => |c, s| sz(|| {
            // SAFETY: b/n as the caller passed them: readable (write's
            // contract).
            let v = [IoSlice::new(unsafe { buf(b, n) }?)];
            ops::send(c, s, Src::Bufs(&v), n, 0)
        });

    tas fn readv(fd: c_int, v: *const iovec, cnt: c_int) -> ssize_t
        => |c, s| sz(|| {
            if cnt < 0 {
                return Err(libc::EINVAL);
            }
            // SAFETY: v/cnt as the caller passed them: an iovec array whose
            // buffers are writable (readv's contract).
            let mut b = unsafe { iov_mut(v, cnt as usize) }?;
            ops::recv(c, s, &mut b, 0)
        });

    tas fn writev(fd: c_int, v: *const iovec, cnt: c_int) -> ssize_t
        => |c, s| sz(|| {
            if cnt < 0 {
                return Err(libc::EINVAL);
            }
            // SAFETY: v/cnt as the caller passed them: an iovec array whose
            // buffers are readable (writev's contract).
            let b = unsafe { iov(v, cnt as usize) }?;
            let n = total(&b);
            ops::send(c, s, Src::Bufs(&b), n, 0)
        });

    tas fn recv(fd: c_int, b: *mut c_void, n: size_t, flags: c_int) -> ssize_t
        // SAFETY: b/n as the caller passed them: writable (recv's contract).
        => |c, s| sz(|| ops::recv(c, s, &mut [IoSliceMut::new(unsafe { buf_mut(b, n) }?)], flags));

    fn __recv_chk(fd: c_int, b: *mut c_void, n: size_t, buflen: size_t, flags: c_int) -> ssize_t {
        if n > buflen {
            chk_fail();
        }
        // SAFETY: recv's contract is this function's (b holds buflen >= n
        // bytes).
        unsafe { recv(fd, b, n, flags) }
    }

    tas fn recvfrom(
        fd: c_int,
        b: *mut c_void,
        n: size_t,
        flags: c_int,
        addr: *mut sockaddr,
        alen: *mut socklen_t,
    ) -> ssize_t
        => |c, s| sz(|| {
            // SAFETY: b/n as the caller passed them: writable (recvfrom's
            // contract).
            let r = ops::recv(c, s, &mut [IoSliceMut::new(unsafe { buf_mut(b, n) }?)], flags)?;
            // Linux TCP returns no source address.
            if !addr.is_null() && !alen.is_null() {
                // SAFETY: alen is non-null, so writable (recvfrom's contract).
                unsafe { *alen = 0 };
            }
            Ok(r)
        });

    fn __recvfrom_chk(
        fd: c_int,
        b: *mut c_void,
        n: size_t,
        buflen: size_t,
        flags: c_int,
        addr: *mut sockaddr,
        alen: *mut socklen_t,
    ) -> ssize_t {
        if n > buflen {
            chk_fail();
        }
        // SAFETY: recvfrom's contract is this function's (b holds buflen >=
        // n bytes).
        unsafe { recvfrom(fd, b, n, flags, addr, alen) }
    }

    /// On a kernel socket, TAS sockets passed with `SCM_RIGHTS` are taken
    /// over (`pass.rs`).
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
        if !sys::in_shim() {
            if let fdtab::Kind::Sock(c, s) = fdtab::kind(fd) {
                debug::enter("recvmsg", fd);
                return sz(|| {
                    if msg.is_null() {
                        return Err(libc::EFAULT);
                    }
                    // SAFETY: msg is non-null, so a msghdr valid for reads
                    // and writes whose iovecs are writable (recvmsg's
                    // contract), and nothing else refers to it during the
                    // call.
                    let m = unsafe { &mut *msg };
                    // SAFETY: the message's iovec array, as the caller
                    // described it.
                    let mut b = unsafe { iov_mut(m.msg_iov, m.msg_iovlen) }?;
                    let r = ops::recv(c, s, &mut b, flags)?;
                    m.msg_namelen = 0;
                    m.msg_controllen = 0;
                    m.msg_flags = 0;
                    Ok(r)
                });
            }
        }
        // SAFETY: libc's recvmsg with the caller's arguments (its contract).
        let r = unsafe { real::recvmsg::get()(fd, msg, flags) };
        if r >= 0 && !sys::in_shim() {
            // SAFETY: the message the kernel just filled (recvmsg's
            // contract: msg valid, its control buffer msg_controllen long).
            unsafe { pass::after_recv(msg, flags) };
        }
        r
    }

    tas fn send(fd: c_int, b: *const c_void, n: size_t, flags: c_int) -> ssize_t
        => |c, s| sz(|| {
            // SAFETY: b/n as the caller passed them: readable (send's
            // contract).
            let v = [IoSlice::new(unsafe { buf(b, n) }?)];
            ops::send(c, s, Src::Bufs(&v), n, flags)
        });

    /// A connected TCP socket ignores the address (Linux).
    tas fn sendto(
        fd: c_int,
        b: *const c_void,
        n: size_t,
        flags: c_int,
        addr: *const sockaddr,
        alen: socklen_t,
    ) -> ssize_t
        => |c, s| sz(|| {
            // SAFETY: b/n as the caller passed them: readable (sendto's
            // contract).
            let v = [IoSlice::new(unsafe { buf(b, n) }?)];
            ops::send(c, s, Src::Bufs(&v), n, flags)
        });

    /// On a kernel socket, TAS sockets among the `SCM_RIGHTS` fds are
    /// registered for their receiver first (`pass.rs`).
    fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
        if !sys::in_shim() {
            if let fdtab::Kind::Sock(c, s) = fdtab::kind(fd) {
                debug::enter("sendmsg", fd);
                return sz(|| {
                    if msg.is_null() {
                        return Err(libc::EFAULT);
                    }
                    // SAFETY: msg is non-null, so a readable msghdr
                    // (sendmsg's contract).
                    let m = unsafe { &*msg };
                    // SAFETY: the message's iovec array, as the caller
                    // described it.
                    let b = unsafe { iov(m.msg_iov, m.msg_iovlen) }?;
                    let n = total(&b);
                    ops::send(c, s, Src::Bufs(&b), n, flags)
                });
            }
            // SAFETY: msg is null or a readable msghdr whose control buffer
            // is msg_controllen long (sendmsg's contract).
            let sent = match unsafe { pass::before_send(msg) } {
                Ok(p) => p,
                Err(e) => {
                    set_errno(e);
                    return -1;
                }
            };
            if !sent.is_empty() {
                // SAFETY: libc's sendmsg with the caller's arguments.
                let r = unsafe { real::sendmsg::get()(fd, msg, flags) };
                let e = sys::errno();
                pass::after_send(sent, r >= 0);
                set_errno(e);
                return r;
            }
        }
        // SAFETY: libc's sendmsg with the caller's arguments (its contract).
        unsafe { real::sendmsg::get()(fd, msg, flags) }
    }

    /// One `sendmsg` per message (on a kernel socket too when a message
    /// passes fds with `SCM_RIGHTS`, so that TAS sockets among them are
    /// registered).
    fn sendmmsg(fd: c_int, v: *mut libc::mmsghdr, n: c_uint, flags: c_int) -> c_int {
        let tas_fd = !sys::in_shim() && matches!(fdtab::kind(fd), fdtab::Kind::Sock(..));
        let rights = !sys::in_shim()
            && !v.is_null()
            && (0..n.min(libc::UIO_MAXIOV as c_uint) as usize).any(|i| {
                // SAFETY: v is non-null and holds at least n entries
                // (sendmmsg's contract); i < n.
                let h = unsafe { &(*v.add(i)).msg_hdr };
                !h.msg_control.is_null() && h.msg_controllen > 0
            });
        if !tas_fd && !rights {
            // SAFETY: libc's sendmmsg with the caller's arguments.
            return unsafe { real::sendmmsg::get()(fd, v, n, flags) };
        }
        {
            if v.is_null() && n > 0 {
                set_errno(libc::EFAULT);
                return -1;
            }
            let n = n.min(libc::UIO_MAXIOV as c_uint);
            for i in 0..n as usize {
                // SAFETY: v is non-null and holds at least n entries, valid
                // for reads and writes (sendmmsg's contract); i < n.
                let m = unsafe { &mut *v.add(i) };
                // SAFETY: m.msg_hdr is the caller's message, meeting
                // sendmsg's contract by sendmmsg's.
                let r = unsafe { sendmsg(fd, &m.msg_hdr, flags) };
                if r < 0 {
                    return if i == 0 { -1 } else { i as c_int };
                }
                m.msg_len = r as c_uint;
            }
            n as c_int
        }
    }

    /// One `recvmsg` per message; `timeout` is not applied to TAS sockets.
    /// On a kernel socket, TAS sockets passed with `SCM_RIGHTS` are taken
    /// over (`pass.rs`).
    fn recvmmsg(
        fd: c_int,
        v: *mut libc::mmsghdr,
        n: c_uint,
        flags: c_int,
        timeout: *mut libc::timespec,
    ) -> c_int {
        if sys::in_shim() || !matches!(fdtab::kind(fd), fdtab::Kind::Sock(..)) {
            // SAFETY: libc's recvmmsg with the caller's arguments.
            let r = unsafe { real::recvmmsg::get()(fd, v, n, flags, timeout) };
            if r > 0 && !sys::in_shim() {
                for i in 0..r as usize {
                    // SAFETY: the kernel filled the first r entries of v
                    // (recvmmsg's contract: valid for reads and writes).
                    unsafe { pass::after_recv(&(*v.add(i)).msg_hdr, flags) };
                }
            }
            return r;
        }
        {
            if v.is_null() && n > 0 {
                set_errno(libc::EFAULT);
                return -1;
            }
            let n = n.min(libc::UIO_MAXIOV as c_uint);
            let mut fl = flags & !libc::MSG_WAITFORONE;
            for i in 0..n as usize {
                // SAFETY: v is non-null and holds at least n entries, valid
                // for reads and writes (recvmmsg's contract); i < n.
                let m = unsafe { &mut *v.add(i) };
                // SAFETY: m.msg_hdr is the caller's message, meeting
                // recvmsg's contract by recvmmsg's.
                let r = unsafe { recvmsg(fd, &mut m.msg_hdr, fl) };
                if r < 0 {
                    return if i == 0 { -1 } else { i as c_int };
                }
                m.msg_len = r as c_uint;
                if flags & libc::MSG_WAITFORONE != 0 {
                    fl |= libc::MSG_DONTWAIT;
                }
                if r == 0 {
                    return i as c_int + 1;
                }
            }
            n as c_int
        }
    }

    /// A TAS socket can be the destination, not the source.
    fn sendfile(out: c_int, inf: c_int, off: *mut off_t, count: size_t) -> ssize_t {
        // SAFETY: off is null or valid for reads and writes (sendfile's
        // contract); off_t is i64 on the supported targets.
        match unsafe { sendfile_impl(out, inf, off as *mut i64, count) } {
            Some(r) => r,
            // SAFETY: the caller's arguments, unchanged, to libc's sendfile.
            None => unsafe { real::sendfile::get()(out, inf, off, count) },
        }
    }

    /// A TAS socket can be the destination, not the source.
    fn sendfile64(out: c_int, inf: c_int, off: *mut off64_t, count: size_t) -> ssize_t {
        // SAFETY: off is null or valid for reads and writes (sendfile64's
        // contract).
        match unsafe { sendfile_impl(out, inf, off, count) } {
            Some(r) => r,
            // SAFETY: the caller's arguments, unchanged, to libc's
            // sendfile64.
            None => unsafe { real::sendfile64::get()(out, inf, off, count) },
        }
    }
}

/// `sendfile` to a TAS socket: Some(result), or None when libc handles it.
///
/// # Safety
///
/// `off` must be null or valid for reads and writes of an `i64`, not
/// otherwise accessed during the call.
unsafe fn sendfile_impl(out: c_int, inf: c_int, off: *mut i64, count: size_t) -> Option<ssize_t> {
    if in_shim() {
        return None;
    }
    if let Kind::Sock(..) = kind(inf) {
        set_errno(libc::EINVAL);
        return Some(-1);
    }
    let Kind::Sock(c, s) = kind(out) else {
        return None;
    };
    Some(sz(|| {
        let count = count.min(0x7fff_f000);
        let o = if off.is_null() {
            None
        } else {
            // SAFETY: off is non-null, so valid for reads (contract).
            if unsafe { *off } < 0 {
                return Err(libc::EINVAL);
            }
            // SAFETY: off is non-null, valid for reads and writes and not
            // otherwise accessed during the call (contract).
            Some(unsafe { &mut *off })
        };
        ops::send(c, s, Src::File(inf, o), count, 0)
    }))
}

// off_t and off64_t are the same 64-bit offset here (sendfile shares
// sendfile64's code).
const _: () = assert!(std::mem::size_of::<off_t>() == std::mem::size_of::<i64>());

// ---------------------------------------------------------------------------
// Options and names.

/// `TAS_PRELOAD_DEBUG`: an option the shim does not support says so.
fn opt_reason<T>(r: sys::Res<T>, what: &str, level: c_int, name: c_int) -> sys::Res<T> {
    if matches!(r, Err(libc::ENOPROTOOPT) | Err(libc::EOPNOTSUPP)) {
        debug::reason(|| {
            format!("option level {level} name {name} cannot be {what} on a TAS socket (unknown or unsupported)")
        });
    }
    r
}

interpose! {
    /// `IPV6_V6ONLY` on makes an `AF_INET6` socket a kernel socket.
    tas_or_libc fn setsockopt(
        fd: c_int,
        level: c_int,
        name: c_int,
        v: *const c_void,
        len: socklen_t,
    ) -> c_int
        // SAFETY: v/len as the caller passed them, under setsockopt's
        // contract.
        => |c, s| unit_or_libc(|| {
            // SAFETY: v/len as the caller passed them (the same contract).
            let r = unsafe { opts::setsockopt(c, s, level, name, v, len) };
            opt_reason(r, "set", level, name)
        });

    tas fn getsockopt(
        fd: c_int,
        level: c_int,
        name: c_int,
        v: *mut c_void,
        len: *mut socklen_t,
    ) -> c_int
        // SAFETY: v/len as the caller passed them, under getsockopt's
        // contract.
        => |c, s| unit(|| {
            // SAFETY: v/len as the caller passed them (the same contract).
            let r = unsafe { opts::getsockopt(c, s, level, name, v, len) };
            opt_reason(r, "read", level, name)
        });

    /// A socket inherited at fork answers from what was inherited, without
    /// being taken over (`fdtab::kind_peek`).
    fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
        if !in_shim() {
            if let Kind::Sock(c, s) = fdtab::kind_peek(fd) {
                debug::enter("getsockname", fd);
                // SAFETY: addr/len as the caller passed them, under
                // getsockname's contract.
                return unit(|| unsafe { ops::getsockname(c, s, addr, len) });
            }
        }
        // SAFETY: the caller's arguments, unchanged, to libc's function.
        unsafe { real::getsockname::get()(fd, addr, len) }
    }

    /// As `getsockname`.
    fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
        if !in_shim() {
            if let Kind::Sock(c, s) = fdtab::kind_peek(fd) {
                debug::enter("getpeername", fd);
                // SAFETY: addr/len as the caller passed them, under
                // getpeername's contract.
                return unit(|| unsafe { ops::getpeername(c, s, addr, len) });
            }
        }
        // SAFETY: the caller's arguments, unchanged, to libc's function.
        unsafe { real::getpeername::get()(fd, addr, len) }
    }
}

// ---------------------------------------------------------------------------
// Descriptors.

interpose! {
    /// Variadic in C; the third argument is passed as an integer.
    fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
        // SAFETY: fcntl's contract is this function's.
        unsafe { fcntl_impl(fd, cmd, arg) }
    }

    /// Variadic in C; the third argument is passed as an integer.
    fn fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int {
        // SAFETY: fcntl's contract is this function's.
        unsafe { fcntl_impl(fd, cmd, arg) }
    }

    /// Variadic in C; the third argument is passed as an integer.
    fn ioctl(fd: c_int, req: c_ulong, arg: usize) -> c_int {
        let f = real::ioctl();
        if in_shim() {
            // SAFETY: the caller's arguments, unchanged, to libc's ioctl.
            return unsafe { f(fd, req, arg) };
        }
        let Kind::Sock(c, s) = kind(fd) else {
            // SAFETY: the caller's arguments, unchanged, to libc's ioctl.
            return unsafe { f(fd, req, arg) };
        };
        match req {
            SIOCINQ | SIOCOUTQ => int(|| {
                if arg == 0 {
                    return Err(libc::EFAULT);
                }
                let v = ops::ioctl_queue(c, s, req == SIOCOUTQ)?;
                // SAFETY: for this request arg is a pointer to an int
                // (ioctl's contract), non-null.
                unsafe { *(arg as *mut c_int) = v };
                Ok(0)
            }),
            SIOCATMARK => int(|| {
                if arg == 0 {
                    return Err(libc::EFAULT);
                }
                // SAFETY: for this request arg is a pointer to an int
                // (ioctl's contract), non-null.
                unsafe { *(arg as *mut c_int) = 0 };
                Ok(0)
            }),
            libc::FIONBIO => {
                // SAFETY: the caller's arguments, unchanged, to libc's ioctl.
                let r = unsafe { f(fd, req, arg) };
                if r == 0 && arg != 0 {
                    // SAFETY: for FIONBIO arg is a pointer to an int (ioctl's
                    // contract), non-null, and the kernel has just read it.
                    let on = unsafe { *(arg as *const c_int) } != 0;
                    let _ = run(|| {
                        ops::set_nonblock(c, s, on);
                        Ok(())
                    });
                }
                r
            }
            libc::FIOASYNC => {
                // SIGIO comes from the pair: it must carry readability.
                vready::demote_fd(fd);
                // SAFETY: the caller's arguments, unchanged, to libc's ioctl.
                unsafe { f(fd, req, arg) }
            }
            // SAFETY: the caller's arguments, unchanged, to libc's ioctl.
            _ => unsafe { f(fd, req, arg) },
        }
    }

    fn dup(fd: c_int) -> c_int {
        let f = real::dup::get();
        if in_shim() {
            // SAFETY: dup takes no pointers.
            return unsafe { f(fd) };
        }
        let Kind::Sock(c, s) = kind(fd) else {
            // SAFETY: dup takes no pointers.
            let r = unsafe { f(fd) };
            copy_epoll_mark(fd, r);
            return r;
        };
        // SAFETY: dup takes no pointers.
        let r = unsafe { f(fd) };
        if r < 0 {
            return r;
        }
        int(|| ops::add_fd(c, s, r))
    }

    fn dup2(old: c_int, new: c_int) -> c_int {
        dup_to(old, new, 0, false)
    }

    fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
        dup_to(old, new, flags, true)
    }
}

/// `fcntl`: `F_DUPFD*` on a TAS socket adds a number to it, `F_SETFL`
/// tracks `O_NONBLOCK`.
///
/// # Safety
///
/// As for libc's `fcntl`: when `cmd` takes a pointer, `arg` must be one
/// valid for that command.
unsafe fn fcntl_impl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    let f = real::fcntl();
    if in_shim() {
        // SAFETY: the caller's arguments, unchanged, to libc's fcntl.
        return unsafe { f(fd, cmd, arg) };
    }
    let Kind::Sock(c, s) = kind(fd) else {
        // SAFETY: the caller's arguments, unchanged, to libc's fcntl.
        let r = unsafe { f(fd, cmd, arg) };
        if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
            copy_epoll_mark(fd, r);
        }
        return r;
    };
    match cmd {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            // SAFETY: the caller's arguments, unchanged, to libc's fcntl.
            let r = unsafe { f(fd, cmd, arg) };
            if r < 0 {
                return r;
            }
            int(|| ops::add_fd(c, s, r))
        }
        libc::F_SETFL => {
            // SAFETY: the caller's arguments, unchanged, to libc's fcntl.
            let r = unsafe { f(fd, cmd, arg) };
            if r == 0 {
                let _ = run(|| {
                    ops::set_nonblock(c, s, arg as c_int & libc::O_NONBLOCK != 0);
                    if arg as c_int & libc::O_ASYNC != 0 {
                        // SIGIO comes from the pair: it must carry
                        // readability (`vready.rs`).
                        vready::demote_fd(fd);
                    }
                    Ok(())
                });
            }
            r
        }
        // SAFETY: the caller's arguments, unchanged, to libc's fcntl.
        _ => unsafe { f(fd, cmd, arg) },
    }
}

const SIOCINQ: c_ulong = libc::FIONREAD;
const SIOCOUTQ: c_ulong = libc::TIOCOUTQ;
const SIOCATMARK: c_ulong = 0x8905;

/// `dup2` (`three` false) and `dup3`: the target number stops being what
/// it was (a TAS socket closes with its last number) and becomes what the
/// source is.
fn dup_to(old: c_int, new: c_int, flags: c_int, three: bool) -> c_int {
    let call = |o: c_int, n: c_int| {
        if three {
            // SAFETY: dup3 takes no pointers.
            unsafe { real::dup3::get()(o, n, flags) }
        } else {
            // SAFETY: dup2 takes no pointers.
            unsafe { real::dup2::get()(o, n) }
        }
    };
    if in_shim() {
        return call(old, new);
    }
    if three && (flags & !libc::O_CLOEXEC != 0 || old == new) {
        set_errno(libc::EINVAL);
        return -1;
    }
    let ko = kind(old);
    let kn = kind(new);
    if matches!(ko, Kind::Kernel) && matches!(kn, Kind::Kernel) {
        if let Some(g) = global::try_global() {
            if g.fd(new) != 0 && old != new {
                g.set_fd(new, 0);
            }
        }
        let r = call(old, new);
        if old != new {
            copy_epoll_mark(old, r);
        }
        return r;
    }
    if old == new {
        return call(old, new);
    }
    // The source must be valid before the target is given up.
    // SAFETY: F_GETFD takes no argument.
    if unsafe { real::fcntl()(old, libc::F_GETFD, 0) } < 0 {
        return -1;
    }
    if let Err(e) = run(|| ops::before_replace(new)) {
        set_errno(e);
        return -1;
    }
    let r = call(old, new);
    if r < 0 {
        return r;
    }
    match ko {
        Kind::Sock(c, s) => int(|| ops::add_fd(c, s, r)),
        _ => r,
    }
}

// ---------------------------------------------------------------------------
// Multiplexing.

/// A new descriptor number carries no old marks.
fn fresh_fd(fd: c_int) -> c_int {
    if fd >= 0 {
        if let Some(g) = global::try_global() {
            if g.fd(fd) != 0 {
                g.set_fd(fd, 0);
            }
        }
    }
    fd
}

/// An epoll set's mark (it holds the shim's fds) follows it to a new number.
fn copy_epoll_mark(old: c_int, new: c_int) {
    if let Some(g) = global::try_global() {
        let v = g.fd(old);
        if new >= 0 && v & fdtab::T_EPOLL != 0 && v & fdtab::T_SOCK == 0 {
            g.set_fd(new, v);
            vready::epfd_dup(old, new);
        }
    }
}

interpose! {
    fn epoll_create(size: c_int) -> c_int {
        // SAFETY: epoll_create takes no pointers.
        fresh_fd(unsafe { real::epoll_create::get()(size) })
    }

    fn epoll_create1(flags: c_int) -> c_int {
        // SAFETY: epoll_create1 takes no pointers.
        fresh_fd(unsafe { real::epoll_create1::get()(flags) })
    }

    /// The kernel registers; the shim remembers a TAS socket's
    /// registrations (to restore them if the socket moves to the kernel).
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut libc::epoll_event) -> c_int {
        // An inherited socket is taken over first, so that what gets
        // registered is the file this process keeps (a listener taken over
        // gets a readiness pair of its own under the same number).
        if !in_shim() {
            if let Some(g) = global::try_global() {
                fdtab::adopt_if_inherited(fd, g.fd(fd));
            }
        }
        // SAFETY: the caller's arguments, unchanged, to libc's epoll_ctl.
        let r = unsafe { real::epoll_ctl::get()(epfd, op, fd, ev) };
        if r == 0 && !in_shim() {
            if let Kind::Sock(..) = kind(fd) {
                let e = sys::errno();
                let _ = run(|| {
                    // SAFETY: the kernel accepted the call, so for ADD and
                    // MOD ev was a readable epoll_event (epoll_ctl's
                    // contract).
                    unsafe { ops::epoll_track(epfd, op, fd, ev) };
                    Ok(())
                });
                set_errno(e);
            }
        }
        r
    }

    fn epoll_wait(epfd: c_int, ev: *mut libc::epoll_event, max: c_int, timeout: c_int) -> c_int {
        // SAFETY: epoll_wait's contract is this function's.
        unsafe { mux::epoll_wait(epfd, ev, max, timeout) }
    }

    fn epoll_pwait(
        epfd: c_int,
        ev: *mut libc::epoll_event,
        max: c_int,
        timeout: c_int,
        mask: *const libc::sigset_t,
    ) -> c_int {
        // SAFETY: epoll_pwait's contract is this function's.
        unsafe { mux::epoll_pwait(epfd, ev, max, timeout, mask) }
    }

    fn epoll_pwait2(
        epfd: c_int,
        ev: *mut libc::epoll_event,
        max: c_int,
        ts: *const libc::timespec,
        mask: *const libc::sigset_t,
    ) -> c_int {
        // SAFETY: epoll_pwait2's contract is this function's.
        unsafe { mux::epoll_pwait2(epfd, ev, max, ts, mask) }
    }

    fn poll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: c_int) -> c_int {
        // SAFETY: poll's contract is this function's.
        unsafe { mux::poll(fds, n, timeout) }
    }

    fn __poll_chk(
        fds: *mut libc::pollfd,
        n: libc::nfds_t,
        timeout: c_int,
        fdslen: size_t,
    ) -> c_int {
        if fdslen / std::mem::size_of::<libc::pollfd>() < n as usize {
            chk_fail();
        }
        // SAFETY: poll's contract is this function's (fds holds fdslen
        // bytes, enough for n entries).
        unsafe { mux::poll(fds, n, timeout) }
    }

    fn ppoll(
        fds: *mut libc::pollfd,
        n: libc::nfds_t,
        ts: *const libc::timespec,
        mask: *const libc::sigset_t,
    ) -> c_int {
        // SAFETY: ppoll's contract is this function's.
        unsafe { mux::ppoll(fds, n, ts, mask) }
    }

    fn __ppoll_chk(
        fds: *mut libc::pollfd,
        n: libc::nfds_t,
        ts: *const libc::timespec,
        mask: *const libc::sigset_t,
        fdslen: size_t,
    ) -> c_int {
        if fdslen / std::mem::size_of::<libc::pollfd>() < n as usize {
            chk_fail();
        }
        // SAFETY: ppoll's contract is this function's (fds holds fdslen
        // bytes, enough for n entries).
        unsafe { mux::ppoll(fds, n, ts, mask) }
    }

    fn select(
        n: c_int,
        r: *mut libc::fd_set,
        w: *mut libc::fd_set,
        e: *mut libc::fd_set,
        tv: *mut libc::timeval,
    ) -> c_int {
        // SAFETY: select's contract is this function's.
        unsafe { mux::select(n, r, w, e, tv) }
    }

    fn pselect(
        n: c_int,
        r: *mut libc::fd_set,
        w: *mut libc::fd_set,
        e: *mut libc::fd_set,
        ts: *const libc::timespec,
        mask: *const libc::sigset_t,
    ) -> c_int {
        // SAFETY: pselect's contract is this function's.
        unsafe { mux::pselect(n, r, w, e, ts, mask) }
    }
}
