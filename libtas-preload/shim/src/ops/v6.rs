//! `AF_INET6` TCP sockets on TAS (issue 14, item 5): a dual-stack socket
//! (`IPV6_V6ONLY` off, node's default) bound to `::` or to an IPv4-mapped
//! address serves IPv4 through TAS exactly as an `AF_INET` socket would;
//! the program sees IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) in
//! `sockaddr_in6`s. A listener on `::` also gets a kernel `AF_INET6`
//! listener on `[::]` (`ops::wild`), so IPv6 clients and the kernel's IPv4
//! addresses (loopback, ...) reach the same listener through the kernel.
//!
//! Everything else an `AF_INET6` socket can do — binding or connecting to
//! a real IPv6 address (`::1`, ...) or to `::ffff:0.0.0.0`, or
//! `IPV6_V6ONLY` on at `bind`/`listen`/`connect` (set, or the
//! `net.ipv6.bindv6only` default) — turns it into a kernel `AF_INET6`
//! socket under the same fd numbers (`pair::to_kernel`), where Linux
//! itself answers. The decisions are here; the calls are `conn`'s.

use super::conn::bind_at;
use super::orphan;
use super::pair::to_kernel;
use crate::ctx::Ctx;
use crate::sock::St;
use crate::sys::Res;
use libc::{c_int, sockaddr, socklen_t};

/// Linux's `SIN6_LEN_RFC2133`: the shortest `sockaddr_in6` it takes (no
/// `sin6_scope_id`).
pub const SIN6_MIN: usize = 24;

/// What the address of a `sockaddr_in6` is, for TAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addr6 {
    /// `::`.
    Any,
    /// `::ffff:a.b.c.d` (host order; 0 for `::ffff:0.0.0.0`).
    Mapped(u32),
    /// A real IPv6 address: the kernel's.
    Other,
}

/// Classifies an IPv6 address.
pub fn classify(a: &[u8; 16]) -> Addr6 {
    if a.iter().all(|&b| b == 0) {
        Addr6::Any
    } else if a[..10].iter().all(|&b| b == 0) && a[10] == 0xff && a[11] == 0xff {
        Addr6::Mapped(u32::from_be_bytes([a[12], a[13], a[14], a[15]]))
    } else {
        Addr6::Other
    }
}

/// The IPv6 form of IPv4 address `ip` (host order): `::ffff:ip`, or `::`
/// for 0 (a socket bound to `::`).
pub fn mapped(ip: u32) -> [u8; 16] {
    let mut a = [0u8; 16];
    if ip != 0 {
        a[10] = 0xff;
        a[11] = 0xff;
        a[12..].copy_from_slice(&ip.to_be_bytes());
    }
    a
}

/// Reads a `sockaddr_in6` as Linux's TCP does: `EINVAL` when shorter than
/// [`SIN6_MIN`], `EAFNOSUPPORT` for another family; (address, port).
///
/// # Safety
///
/// Unless null, `addr` must be valid for reads of `len` bytes.
pub unsafe fn parse_in6(addr: *const sockaddr, len: socklen_t) -> Res<(Addr6, u16)> {
    if addr.is_null() {
        return Err(libc::EFAULT);
    }
    if (len as usize) < SIN6_MIN {
        return Err(libc::EINVAL);
    }
    let mut b = [0u8; std::mem::size_of::<libc::sockaddr_in6>()];
    let n = (len as usize).min(b.len());
    // SAFETY: addr is readable for len >= n bytes (contract); `b` is a
    // local of at least n bytes, so the two cannot overlap.
    unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, b.as_mut_ptr(), n) };
    // sockaddr_in6: family (2, native order), port (2), flowinfo (4),
    // address (16), scope id (4).
    let fam = u16::from_ne_bytes([b[0], b[1]]) as c_int;
    if fam != libc::AF_INET6 {
        return Err(libc::EAFNOSUPPORT);
    }
    let port = u16::from_be_bytes([b[2], b[3]]);
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[8..24]);
    Ok((classify(&a), port))
}

/// Copies `ip`:`port` out as an IPv4-mapped `sockaddr_in6`, as Linux does
/// (truncated to `*len`, which becomes 28).
///
/// # Safety
///
/// Unless `addr` is null: `len` null or valid for reads and writes, and
/// `addr` valid for writes of `*len` bytes.
pub unsafe fn write_in6(addr: *mut sockaddr, len: *mut socklen_t, ip: u32, port: u16) -> Res<()> {
    let sin6 = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: port.to_be(),
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: mapped(ip),
        },
        sin6_scope_id: 0,
    };
    // SAFETY: the caller's contract; sockaddr_in6 has no padding (2+2+4+16+4
    // bytes, asserted below).
    unsafe { super::conn::copy_out(addr, len, &sin6) }
}

const _: () = assert!(std::mem::size_of::<libc::sockaddr_in6>() == 28);

/// Whether socket `sid` is an `AF_INET6` socket.
pub fn is_v6(ctx: &'static Ctx, sid: u64) -> bool {
    ctx.inner.lock().socks.get(&sid).is_some_and(|s| s.v6)
}

/// `bind` on an `AF_INET6` socket: Some(()) when bound on TAS, None when it
/// became a kernel socket (the caller calls the real bind). Linux's order
/// of checks (`__inet6_bind`): length, family, privileged port, state,
/// address.
///
/// # Safety
///
/// As for libc's `bind`: `addr` null or valid for reads of `len` bytes.
pub unsafe fn bind(
    ctx: &'static Ctx,
    sid: u64,
    addr: *const sockaddr,
    len: socklen_t,
) -> Res<Option<()>> {
    // SAFETY: addr/len as the caller passed them (contract).
    let (a, port) = unsafe { parse_in6(addr, len) }?;
    // SAFETY: geteuid takes no arguments and cannot fail.
    if port != 0 && port < 1024 && unsafe { libc::geteuid() } != 0 {
        return Err(libc::EACCES);
    }
    if orphan(ctx) {
        return Err(libc::EINVAL);
    }
    let mut inner = ctx.inner.lock();
    let s = inner.socks.get(&sid).ok_or(libc::EBADF)?;
    if s.st != St::Fresh || s.local.1 != 0 {
        return Err(libc::EINVAL);
    }
    let ip = match a {
        Addr6::Any if !s.v6only => 0,
        Addr6::Mapped(ip) if !s.v6only && ip != 0 => ip,
        _ => {
            crate::debug::say(
                "kernel bind IPv6",
                &format!(
                    "bind(fd {}) of an AF_INET6 socket: {}: the socket uses the kernel stack",
                    s.a,
                    if s.v6only {
                        "IPV6_V6ONLY is on"
                    } else {
                        "an IPv6 address TAS does not serve"
                    }
                ),
            );
            to_kernel(ctx.idx, &mut inner, sid)?;
            return Ok(None);
        }
    };
    drop(inner);
    bind_at(ctx, sid, ip, port)
}

/// `listen` on an `AF_INET6` socket not bound yet with `IPV6_V6ONLY` on:
/// it becomes a kernel socket (true: the caller calls the real listen).
pub(super) fn listen_goes_to_kernel(ctx: &'static Ctx, sid: u64) -> Res<bool> {
    let mut inner = ctx.inner.lock();
    let s = inner.socks.get(&sid).ok_or(libc::EBADF)?;
    if !(s.v6 && s.v6only && s.st == St::Fresh && s.local.1 == 0) {
        return Ok(false);
    }
    crate::debug::say(
        "kernel listen IPv6",
        &format!(
            "listen(fd {}) of an AF_INET6 socket with IPV6_V6ONLY on: the socket uses the kernel stack",
            s.a
        ),
    );
    to_kernel(ctx.idx, &mut inner, sid)?;
    Ok(true)
}

/// The IPv4 destination of a `connect` on an `AF_INET6` socket that TAS
/// (or, for loopback and kernel addresses, `conn::connect`'s own
/// decision) handles as an IPv4 connect; None: the socket goes to the
/// kernel (a real IPv6 address, or `IPV6_V6ONLY` on).
///
/// # Safety
///
/// As for libc's `connect`: `addr` null or valid for reads of `len` bytes.
pub(super) unsafe fn connect_target(
    v6only: bool,
    addr: *const sockaddr,
    len: socklen_t,
) -> Res<Option<(u32, u16)>> {
    // SAFETY: addr/len as the caller passed them (contract).
    let (a, port) = unsafe { parse_in6(addr, len) }?;
    Ok(match a {
        Addr6::Mapped(ip) if !v6only => Some((ip, port)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_classified_and_mapped() {
        assert_eq!(classify(&[0; 16]), Addr6::Any);
        let m = mapped(0xc612_0001);
        assert_eq!(classify(&m), Addr6::Mapped(0xc612_0001));
        assert_eq!(&m[10..], &[0xff, 0xff, 198, 18, 0, 1]);
        assert_eq!(mapped(0), [0; 16]);
        let mut zero_mapped = [0u8; 16];
        zero_mapped[10] = 0xff;
        zero_mapped[11] = 0xff;
        assert_eq!(classify(&zero_mapped), Addr6::Mapped(0));
        let mut lo = [0u8; 16];
        lo[15] = 1;
        assert_eq!(classify(&lo), Addr6::Other);
        // ::198.18.0.1 (IPv4-compatible, deprecated) is not mapped.
        let mut compat = [0u8; 16];
        compat[12..].copy_from_slice(&[198, 18, 0, 1]);
        assert_eq!(classify(&compat), Addr6::Other);
    }

    #[test]
    fn sockaddr_in6_is_read_and_written_as_linux_does() {
        let sin6 = libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: 8080u16.to_be(),
            sin6_flowinfo: 7,
            sin6_addr: libc::in6_addr {
                s6_addr: mapped(0x7f00_0001),
            },
            sin6_scope_id: 0,
        };
        let p = &sin6 as *const _ as *const sockaddr;
        // SAFETY: p is the live local sin6, 28 bytes.
        unsafe {
            assert_eq!(parse_in6(p, 28), Ok((Addr6::Mapped(0x7f00_0001), 8080)));
            assert_eq!(parse_in6(p, 24), Ok((Addr6::Mapped(0x7f00_0001), 8080)));
            assert_eq!(parse_in6(p, 16), Err(libc::EINVAL));
            assert_eq!(parse_in6(std::ptr::null(), 28), Err(libc::EFAULT));
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: 0 },
            sin_zero: [0; 8],
        };
        let mut big = [0u8; 32];
        big[..16].copy_from_slice(
            // SAFETY: sin is a live local of 16 bytes without padding.
            unsafe { std::slice::from_raw_parts(&sin as *const _ as *const u8, 16) },
        );
        // SAFETY: big is a live local of 32 bytes.
        unsafe {
            assert_eq!(
                parse_in6(big.as_ptr() as *const sockaddr, 28),
                Err(libc::EAFNOSUPPORT)
            );
        }
        let mut out = [0xaau8; 32];
        let mut len: socklen_t = 10;
        // SAFETY: out is writable for 32 >= len bytes; len is a live local.
        unsafe {
            write_in6(out.as_mut_ptr() as *mut sockaddr, &mut len, 0xc612_0002, 80).unwrap();
        }
        assert_eq!(len, 28);
        assert_eq!(&out[..4], &[10, 0, 0, 80]);
        assert_eq!(&out[4..10], &[0; 6]);
        assert_eq!(out[10], 0xaa, "truncated at the length given");
        let mut len: socklen_t = 32;
        // SAFETY: as above.
        unsafe {
            write_in6(out.as_mut_ptr() as *mut sockaddr, &mut len, 0xc612_0002, 80).unwrap();
        }
        assert_eq!(len, 28);
        assert_eq!(&out[18..24], &[0xff, 0xff, 198, 18, 0, 2]);
    }
}
