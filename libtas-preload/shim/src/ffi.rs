//! The C side of the entry points: running the shim's part of a call
//! ([`run`]: marked as inside the shim, a panic becomes `EIO`), libc's
//! result convention (`-1` + errno) from a [`Res`] ([`int`], [`unit()`],
//! [`unit_or_libc`], [`sz`]), C buffers and iovecs as slices (with Linux's
//! `EFAULT`/`EINVAL` checks), and `_FORTIFY_SOURCE` failures.

use crate::sys::{self, set_errno, Enter, Res};
use libc::{c_int, c_void, iovec, size_t, ssize_t};
use std::io::{IoSlice, IoSliceMut};
use std::panic::{catch_unwind, AssertUnwindSafe};

pub fn run<T>(f: impl FnOnce() -> Res<T>) -> Result<T, c_int> {
    let _e = Enter::new();
    let r = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            crate::debug::reason(|| "the shim panicked (a bug: please report it)".into());
            Err(libc::EIO)
        }
    };
    if let Err(e) = r {
        // TAS_PRELOAD_DEBUG: why it failed (one line, rate-limited).
        crate::debug::failed(e);
    }
    r
}

pub fn int(f: impl FnOnce() -> Res<c_int>) -> c_int {
    match run(f) {
        Ok(v) => v,
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

pub fn unit(f: impl FnOnce() -> Res<()>) -> c_int {
    int(|| f().map(|_| 0))
}

/// For calls the shim may hand back to libc: `Some(result)` when TAS
/// handled it (0, or -1 with errno), `None` to fall through to libc.
pub fn unit_or_libc(f: impl FnOnce() -> Res<Option<()>>) -> Option<c_int> {
    match run(f) {
        Ok(Some(())) => Some(0),
        Ok(None) => None,
        Err(e) => {
            set_errno(e);
            Some(-1)
        }
    }
}

pub fn sz(f: impl FnOnce() -> Res<usize>) -> ssize_t {
    match run(f) {
        Ok(v) => v as ssize_t,
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

/// The caller's buffer `p`/`n` as a slice (`EFAULT` for null with `n > 0`).
///
/// # Safety
///
/// Unless null, `p` must be valid for reads and writes of `n` bytes for
/// `'a`, and nothing else may access that memory meanwhile.
pub unsafe fn buf_mut<'a>(p: *mut c_void, n: size_t) -> Res<&'a mut [u8]> {
    if n == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: p is non-null and, by the contract above, valid and
    // exclusively ours for n bytes for 'a.
    Ok(unsafe { std::slice::from_raw_parts_mut(p as *mut u8, n) })
}

/// The caller's buffer `p`/`n` as a slice (`EFAULT` for null with `n > 0`).
///
/// # Safety
///
/// Unless null, `p` must be valid for reads of `n` bytes for `'a`, and
/// nothing may write that memory meanwhile.
pub unsafe fn buf<'a>(p: *const c_void, n: size_t) -> Res<&'a [u8]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: p is non-null and, by the contract above, valid for reads of
    // n bytes and not written for 'a.
    Ok(unsafe { std::slice::from_raw_parts(p as *const u8, n) })
}

/// The caller's `iovec` array as slices, with Linux's checks (`EINVAL` for
/// more than `UIO_MAXIOV` entries or a total over `isize::MAX`, `EFAULT`
/// for null).
///
/// # Safety
///
/// Unless null, `iov` must be valid for reads of `cnt` entries, and each
/// entry's buffer must meet [`buf_mut`]'s contract for `'a`, no two of
/// them overlapping.
pub unsafe fn iov_mut<'a>(iov: *const iovec, cnt: usize) -> Res<Vec<IoSliceMut<'a>>> {
    // SAFETY: our contract is iov_each's, with buf_mut's for each buffer.
    unsafe {
        iov_each(iov, cnt, |e| {
            Ok(IoSliceMut::new(buf_mut(e.iov_base, e.iov_len)?))
        })
    }
}

/// The caller's `iovec` array as slices, with Linux's checks (`EINVAL` for
/// more than `UIO_MAXIOV` entries or a total over `isize::MAX`, `EFAULT`
/// for null).
///
/// # Safety
///
/// Unless null, `iov` must be valid for reads of `cnt` entries, and each
/// entry's buffer must meet [`buf`]'s contract for `'a`.
pub unsafe fn iov<'a>(iov: *const iovec, cnt: usize) -> Res<Vec<IoSlice<'a>>> {
    // SAFETY: our contract is iov_each's, with buf's for each buffer.
    unsafe { iov_each(iov, cnt, |e| Ok(IoSlice::new(buf(e.iov_base, e.iov_len)?))) }
}

/// Walks the caller's `iovec` array with Linux's checks, entry by entry
/// in Linux's order (`EINVAL` for more than `UIO_MAXIOV` entries or a
/// running total over `isize::MAX`, `EFAULT` for a null array), turning
/// each entry into a slice with `conv`.
///
/// # Safety
///
/// Unless null, `iov` must be valid for reads of `cnt` entries; `conv`'s
/// own requirements on each entry's buffer are the caller's.
unsafe fn iov_each<T>(
    iov: *const iovec,
    cnt: usize,
    mut conv: impl FnMut(iovec) -> Res<T>,
) -> Res<Vec<T>> {
    if cnt > libc::UIO_MAXIOV as usize {
        return Err(libc::EINVAL);
    }
    if cnt == 0 {
        return Ok(Vec::new());
    }
    if iov.is_null() {
        return Err(libc::EFAULT);
    }
    let mut v = Vec::with_capacity(cnt);
    let mut total: usize = 0;
    for i in 0..cnt {
        // SAFETY: iov is non-null and valid for cnt entries (contract);
        // i < cnt.
        let e = unsafe { *iov.add(i) };
        total = total
            .checked_add(e.iov_len)
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or(libc::EINVAL)?;
        v.push(conv(e)?);
    }
    Ok(v)
}

/// The total length of `v`.
pub fn total(v: &[IoSlice<'_>]) -> usize {
    v.iter().map(|b| b.len()).sum()
}

/// A `_FORTIFY_SOURCE` check failed: abort like glibc's `__chk_fail`.
pub fn chk_fail() -> ! {
    // Same outcome as glibc's __chk_fail.
    sys::log("*** buffer overflow detected ***: terminated");
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}
