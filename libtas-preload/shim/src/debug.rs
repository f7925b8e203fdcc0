//! `TAS_PRELOAD_DEBUG=1`: one line on stderr for each call on a TAS socket
//! that failed for a reason of the shim's (an inherited socket, tasd out
//! of memory or refusing, an option the shim does not support), and for
//! each socket the shim hands to the kernel stack, saying why.
//!
//! The interposed calls note which call is running ([`enter`], a
//! thread-local write); the code that decides a failure records why
//! ([`reason`], evaluated only when debugging); the conversion to `-1` +
//! errno (`ffi::run`) prints the line ([`failed`]). Ordinary results
//! (`EAGAIN`, `EINPROGRESS`, `EINTR`, ...) print nothing unless a reason
//! was recorded. Lines are rate-limited per kind (call and errno, or the
//! message's kind): the first 5, then one a second with the number left
//! out, so a program spinning on a failing call cannot flood its log.

use crate::global::try_global;
use crate::sys::{self, log};
use libc::c_int;
use std::cell::{Cell, RefCell};

thread_local! {
    /// (call, fd) of the interposed call running on this thread.
    static CALL: Cell<(&'static str, c_int)> = const { Cell::new(("", -1)) };
    /// Why the running call fails, if the code that decided said so.
    static REASON: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Whether `TAS_PRELOAD_DEBUG` is set (false before the shim's state
/// exists).
#[inline]
pub fn on() -> bool {
    try_global().is_some_and(|g| g.cfg.debug)
}

/// Notes the interposed call now running on this thread (cheap: one
/// thread-local write) and forgets an earlier call's reason.
#[inline]
pub fn enter(call: &'static str, fd: c_int) {
    let _ = CALL.try_with(|c| c.set((call, fd)));
    if on() {
        let _ = REASON.try_with(|r| r.borrow_mut().take());
    }
}

/// Records why the running call fails (`why` runs only when debugging).
pub fn reason(why: impl FnOnce() -> String) {
    if on() {
        let w = why();
        let _ = REASON.try_with(|r| *r.borrow_mut() = Some(w));
    }
}

/// Errors that need no explanation: Linux gives them in normal operation.
fn ordinary(e: c_int) -> bool {
    matches!(
        e,
        libc::EAGAIN
            | libc::EINPROGRESS
            | libc::EALREADY
            | libc::EINTR
            | libc::EISCONN
            | libc::ENOTCONN
            | libc::ECONNREFUSED
            | libc::ECONNRESET
            | libc::ECONNABORTED
            | libc::EPIPE
            | libc::ETIMEDOUT
            | libc::EBADF
            | libc::EFAULT
            | libc::EINVAL
            | libc::EADDRINUSE
            | libc::EADDRNOTAVAIL
            | libc::EAFNOSUPPORT
            | libc::EACCES
            | libc::ENETUNREACH
            | libc::EHOSTUNREACH
    )
}

/// The running call fails with `e`: prints why (see the module docs).
pub fn failed(e: c_int) {
    if !on() {
        return;
    }
    let why = REASON.try_with(|r| r.borrow_mut().take()).ok().flatten();
    if why.is_none() && ordinary(e) {
        return;
    }
    let (call, fd) = CALL.try_with(|c| c.get()).unwrap_or(("?", -1));
    let call = if call.is_empty() { "a call" } else { call };
    let key = format!("{call} {e}");
    let why = why.unwrap_or_else(|| "no further reason known".into());
    say(
        &key,
        &format!("{call}(fd {fd}) = -1 {}: {why}", errno_name(e)),
    );
}

/// A line of kind `key` (rate-limited, see the module docs); only when
/// debugging.
pub fn say(key: &str, line: &str) {
    if !on() {
        return;
    }
    if let Some(n) = allow(key) {
        if n > 0 {
            log(&format!("{line} ({n} more like this not shown)"));
        } else {
            log(line);
        }
    }
}

pub(crate) struct Kind {
    key: String,
    shown: u32,
    last_ns: u64,
    held: u64,
}

/// The rate limiter's kinds: a fork-safe lock, taken across `fork()` with
/// the shim's others (`fork.rs`).
pub(crate) static KINDS: sys::Lock<Vec<Kind>> = sys::Lock::new(Vec::new());

/// Some(lines held back since the last one) when a line of `key` may be
/// printed now.
fn allow(key: &str) -> Option<u64> {
    let now = sys::monotonic_ns();
    let mut kinds = KINDS.lock();
    let i = match kinds.iter().position(|k| k.key == key) {
        Some(i) => i,
        None => {
            if kinds.len() >= 256 {
                kinds.remove(0);
            }
            kinds.push(Kind {
                key: key.to_string(),
                shown: 0,
                last_ns: 0,
                held: 0,
            });
            kinds.len() - 1
        }
    };
    let k = &mut kinds[i];
    if k.shown < 5 || now.saturating_sub(k.last_ns) >= 1_000_000_000 {
        k.shown = k.shown.saturating_add(1);
        k.last_ns = now;
        Some(std::mem::take(&mut k.held))
    } else {
        k.held += 1;
        None
    }
}

/// The errno's symbolic name (`ENOBUFS`), or its number.
pub fn errno_name(e: c_int) -> String {
    let n = match e {
        libc::EPERM => "EPERM",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::EPIPE => "EPIPE",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOBUFS => "ENOBUFS",
        libc::EISCONN => "EISCONN",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        _ => return format!("errno {e}"),
    };
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_a_kind_are_rate_limited() {
        let key = "test kind";
        for _ in 0..5 {
            assert_eq!(allow(key), Some(0));
        }
        // Within the second: held back and counted.
        for _ in 0..3 {
            assert_eq!(allow(key), None);
        }
        // Another kind is not affected.
        assert_eq!(allow("another kind"), Some(0));
        std::thread::sleep(std::time::Duration::from_millis(1010));
        // A second later: one line, saying how many were left out.
        assert_eq!(allow(key), Some(3));
        assert_eq!(allow(key), None);
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::ENOBUFS), "ENOBUFS");
        assert_eq!(errno_name(libc::ENOPROTOOPT), "ENOPROTOOPT");
        assert_eq!(errno_name(9999), "errno 9999");
        assert!(ordinary(libc::EAGAIN) && !ordinary(libc::ENOMEM));
    }
}
