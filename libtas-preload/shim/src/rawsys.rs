//! System calls without libc: the exported `syscall` (lib.rs) hands every
//! call it does not interpose to [`raw`], and the shim's own fallbacks use
//! it too, so neither can re-enter the exported `syscall` (which every
//! `libc::syscall` in this library — `std`'s futexes included — resolves
//! to once the library is preloaded).

use libc::c_long;

/// Performs system call `n` with six arguments; returns the kernel's raw
/// result (`-errno` on failure).
///
/// # Safety
///
/// The arguments must be valid for system call `n` (pointers readable or
/// writable as that call requires), exactly as for `syscall(2)`.
#[cfg(target_arch = "x86_64")]
#[inline]
pub unsafe fn raw(n: c_long, a: [c_long; 6]) -> c_long {
    let ret: c_long;
    // SAFETY: the Linux x86_64 system call convention: number in rax,
    // arguments in rdi, rsi, rdx, r10, r8, r9; rcx and r11 are clobbered.
    // The caller vouches for the arguments (see # Safety).
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") n => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// As on x86_64, for aarch64 (`svc 0`, number in x8).
///
/// # Safety
///
/// As for the x86_64 version.
#[cfg(target_arch = "aarch64")]
#[inline]
pub unsafe fn raw(n: c_long, a: [c_long; 6]) -> c_long {
    let ret: c_long;
    // SAFETY: the Linux aarch64 convention: number in x8, arguments in
    // x0..x5, result in x0. The caller vouches for the arguments.
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") n,
            inlateout("x0") a[0] => ret,
            in("x1") a[1],
            in("x2") a[2],
            in("x3") a[3],
            in("x4") a[4],
            in("x5") a[5],
            options(nostack),
        );
    }
    ret
}

/// `syscall(2)`'s result convention: a kernel error (-4095..-1) becomes -1
/// with errno set.
pub fn libc_result(r: c_long) -> c_long {
    if (-4095..0).contains(&r) {
        crate::sys::set_errno((-r) as libc::c_int);
        -1
    } else {
        r
    }
}
