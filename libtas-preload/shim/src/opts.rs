//! A TAS socket's options: the record kept per socket ([`Opts`]) and
//! setsockopt / getsockopt on TAS sockets.
//!
//! Options that change what TAS does are modelled here (buffer sizes become
//! ring sizes, `SO_LINGER` shapes `close`, timeouts bound blocking calls,
//! `SO_REUSEPORT` shares a listening port, `SO_RCVLOWAT` gates
//! readability); the rest are stored so `getsockopt` returns what was set.
//! Anything not modelled — other `IPPROTO_IP`/`IPPROTO_TCP` options and
//! unknown numbers — is applied to a *shadow* kernel TCP socket kept for
//! that purpose, so values, validation and errno are exactly Linux's.

use crate::ctx::{Ctx, Inner};
use crate::fdtab::{high_fd_base, T_INTERNAL};
use crate::global::{global, Global};
use crate::readiness::Sig;
use crate::sock::{take_conn_error, Sock, St};
use crate::sys::{self, check, real, Res};
use libc::{c_int, c_void, socklen_t};

/// A socket's options as set (what `getsockopt` reports).
#[derive(Debug, Clone, Default)]
pub struct Opts {
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub keepalive: bool,
    pub nodelay: bool,
    pub cork: bool,
    pub oobinline: bool,
    /// Values as `getsockopt` reports them (Linux doubles what is set).
    pub rcvbuf: Option<u32>,
    pub sndbuf: Option<u32>,
    pub linger: Option<libc::linger>,
    pub rcvtimeo: Option<libc::timeval>,
    pub sndtimeo: Option<libc::timeval>,
    pub rcvlowat: Option<i32>,
    pub keepidle: Option<i32>,
    pub keepintvl: Option<i32>,
    pub keepcnt: Option<i32>,
    pub defer_accept: Option<i32>,
    pub user_timeout: Option<u32>,
    pub quickack: Option<i32>,
    pub maxseg: Option<i32>,
}

const SOCK_MIN_RCVBUF: u32 = 2304;
const SOCK_MIN_SNDBUF: u32 = 4608;
/// Linux defaults (tcp_rmem[1], tcp_wmem[1]) reported before a ring exists.
const DEFAULT_RCVBUF: u32 = 131072;
const DEFAULT_SNDBUF: u32 = 16384;

/// Reads a `setsockopt` int argument (`EINVAL` if `len` is short, `EFAULT`
/// for null).
///
/// # Safety
///
/// Unless null, `val` must be valid for reads of `len` bytes.
unsafe fn read_int(val: *const c_void, len: socklen_t) -> Res<c_int> {
    if (len as usize) < std::mem::size_of::<c_int>() {
        return Err(libc::EINVAL);
    }
    if val.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: val is non-null and readable for len >= size_of::<c_int>()
    // bytes (checked above; contract); read unaligned, as C allows.
    Ok(unsafe { std::ptr::read_unaligned(val as *const c_int) })
}

/// Copies `v` out like Linux's getsockopt (truncating to the given length).
///
/// # Safety
///
/// Unless null, `len` must be valid for reads and writes, and `val` (unless
/// null) valid for writes of `*len` bytes.
unsafe fn write_bytes(val: *mut c_void, len: *mut socklen_t, v: &[u8]) -> Res<()> {
    if len.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: len is non-null, so readable (contract).
    let l = unsafe { *len } as i32;
    if l < 0 {
        return Err(libc::EINVAL);
    }
    let n = (l as usize).min(v.len());
    if n > 0 && val.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: val is writable for l >= n bytes and len is writable
    // (contract); `v` is our own slice, so the two cannot overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(v.as_ptr(), val as *mut u8, n);
        *len = n as socklen_t;
    }
    Ok(())
}

/// Copies an int out like Linux's getsockopt.
///
/// # Safety
///
/// As for [`write_bytes`].
unsafe fn write_int(val: *mut c_void, len: *mut socklen_t, v: c_int) -> Res<()> {
    // SAFETY: the same contract, passed on.
    unsafe { write_bytes(val, len, &v.to_ne_bytes()) }
}

/// The bytes of `v`, to copy a C struct out.
///
/// # Safety
///
/// `T` must have no padding: every byte of a `T` is part of a field, so
/// initialised.
unsafe fn as_bytes<T>(v: &T) -> &[u8] {
    // SAFETY: v refers to size_of::<T>() bytes that live as long as the
    // borrow and are all initialised (contract).
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
}

// `linger` and `timeval` are copied out with `as_bytes`: neither may have
// padding.
const _: () = assert!(std::mem::size_of::<libc::linger>() == 2 * std::mem::size_of::<c_int>());
const _: () = assert!(
    std::mem::size_of::<libc::timeval>()
        == std::mem::size_of::<libc::time_t>() + std::mem::size_of::<libc::suseconds_t>()
);

fn shadow(s: &mut Sock) -> Res<c_int> {
    if s.shadow >= 0 {
        return Ok(s.shadow);
    }
    // SAFETY: socket takes no pointers.
    let k = check(unsafe {
        real::socket::get()(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
    })?;
    let k = sys::move_high(k, high_fd_base());
    let g = global();
    if !g.fd_fits(k) {
        sys::r_close(k);
        return Err(libc::ENOMEM);
    }
    g.set_fd(k, T_INTERNAL);
    s.shadow = k;
    Ok(k)
}

fn modelled(level: c_int, name: c_int) -> bool {
    match level {
        libc::SOL_SOCKET => matches!(
            name,
            libc::SO_REUSEADDR
                | libc::SO_REUSEPORT
                | libc::SO_KEEPALIVE
                | libc::SO_RCVBUF
                | libc::SO_SNDBUF
                | libc::SO_RCVBUFFORCE
                | libc::SO_SNDBUFFORCE
                | libc::SO_LINGER
                | libc::SO_ERROR
                | libc::SO_TYPE
                | libc::SO_DOMAIN
                | libc::SO_PROTOCOL
                | libc::SO_ACCEPTCONN
                | libc::SO_RCVTIMEO
                | libc::SO_SNDTIMEO
                | libc::SO_RCVLOWAT
                | libc::SO_SNDLOWAT
                | libc::SO_OOBINLINE
        ),
        libc::IPPROTO_TCP => matches!(
            name,
            libc::TCP_NODELAY
                | libc::TCP_CORK
                | libc::TCP_KEEPIDLE
                | libc::TCP_KEEPINTVL
                | libc::TCP_KEEPCNT
                | libc::TCP_MAXSEG
                | libc::TCP_DEFER_ACCEPT
                | libc::TCP_QUICKACK
                | libc::TCP_USER_TIMEOUT
                | libc::TCP_INFO
        ),
        _ => false,
    }
}

/// `setsockopt` on TAS socket `sid`.
///
/// # Safety
///
/// As for libc's `setsockopt`: `val` null or valid for reads of `len`
/// bytes.
pub unsafe fn setsockopt(
    ctx: &'static Ctx,
    sid: u64,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> Res<()> {
    let g = global();
    let mut inner = ctx.inner.lock();
    let s = inner.socks.get_mut(&sid).ok_or(libc::EBADF)?;
    if !modelled(level, name) {
        let k = shadow(s)?;
        // SAFETY: the caller's val/len, unchanged, under setsockopt's own
        // contract (ours); k is the shim's shadow socket.
        return check(unsafe { real::setsockopt::get()(k, level, name, val, len) }).map(|_| ());
    }
    // SAFETY: val/len as the caller passed them (same contract).
    let r = unsafe { set_modelled(&mut s.opts, g, level, name, val, len) };
    if r.is_ok() && level == libc::SOL_SOCKET && name == libc::SO_RCVLOWAT {
        inner.sync(sid);
    }
    r
}

/// Stores a modelled option in `o`, validated as Linux does.
///
/// # Safety
///
/// As for [`setsockopt`].
unsafe fn set_modelled(
    o: &mut Opts,
    g: &Global,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> Res<()> {
    if level == libc::SOL_SOCKET {
        match name {
            libc::SO_LINGER => {
                if (len as usize) < std::mem::size_of::<libc::linger>() {
                    return Err(libc::EINVAL);
                }
                if val.is_null() {
                    return Err(libc::EFAULT);
                }
                // SAFETY: val is non-null and readable for len >=
                // size_of::<linger>() bytes (checked; contract).
                let l = unsafe { std::ptr::read_unaligned(val as *const libc::linger) };
                o.linger = Some(l);
                return Ok(());
            }
            libc::SO_RCVTIMEO | libc::SO_SNDTIMEO => {
                if (len as usize) < std::mem::size_of::<libc::timeval>() {
                    return Err(libc::EINVAL);
                }
                if val.is_null() {
                    return Err(libc::EFAULT);
                }
                // SAFETY: val is non-null and readable for len >=
                // size_of::<timeval>() bytes (checked; contract).
                let mut tv = unsafe { std::ptr::read_unaligned(val as *const libc::timeval) };
                if tv.tv_usec < 0 || tv.tv_usec >= 1_000_000 {
                    return Err(libc::EDOM);
                }
                if tv.tv_sec < 0 {
                    tv = libc::timeval {
                        tv_sec: 0,
                        tv_usec: 0,
                    };
                }
                if name == libc::SO_RCVTIMEO {
                    o.rcvtimeo = Some(tv);
                } else {
                    o.sndtimeo = Some(tv);
                }
                return Ok(());
            }
            _ => {}
        }
        // SAFETY: val/len as the caller passed them (contract).
        let v = unsafe { read_int(val, len) }?;
        match name {
            libc::SO_REUSEADDR => o.reuseaddr = v != 0,
            libc::SO_REUSEPORT => o.reuseport = v != 0,
            libc::SO_KEEPALIVE => o.keepalive = v != 0,
            libc::SO_OOBINLINE => o.oobinline = v != 0,
            libc::SO_RCVBUF | libc::SO_RCVBUFFORCE => {
                let max = if name == libc::SO_RCVBUF {
                    g.rmem_max
                } else {
                    i32::MAX as u32
                };
                let v = (v as u32).min(max).min(i32::MAX as u32 / 2);
                o.rcvbuf = Some((v * 2).max(SOCK_MIN_RCVBUF));
            }
            libc::SO_SNDBUF | libc::SO_SNDBUFFORCE => {
                let max = if name == libc::SO_SNDBUF {
                    g.wmem_max
                } else {
                    i32::MAX as u32
                };
                let v = (v as u32).min(max).min(i32::MAX as u32 / 2);
                o.sndbuf = Some((v * 2).max(SOCK_MIN_SNDBUF));
            }
            libc::SO_RCVLOWAT => {
                let v = if v < 0 { i32::MAX } else { v };
                o.rcvlowat = Some(v.max(1));
            }
            _ => return Err(libc::ENOPROTOOPT),
        }
        return Ok(());
    }
    // IPPROTO_TCP
    if name == libc::TCP_INFO {
        return Err(libc::ENOPROTOOPT);
    }
    // SAFETY: val/len as the caller passed them (contract).
    let v = unsafe { read_int(val, len) }?;
    match name {
        libc::TCP_NODELAY => o.nodelay = v != 0,
        libc::TCP_CORK => o.cork = v != 0,
        libc::TCP_KEEPIDLE => {
            if !(1..=32767).contains(&v) {
                return Err(libc::EINVAL);
            }
            o.keepidle = Some(v);
        }
        libc::TCP_KEEPINTVL => {
            if !(1..=32767).contains(&v) {
                return Err(libc::EINVAL);
            }
            o.keepintvl = Some(v);
        }
        libc::TCP_KEEPCNT => {
            if !(1..=127).contains(&v) {
                return Err(libc::EINVAL);
            }
            o.keepcnt = Some(v);
        }
        libc::TCP_MAXSEG => {
            if v != 0 && !(88..=65535).contains(&v) {
                return Err(libc::EINVAL);
            }
            o.maxseg = Some(v);
        }
        libc::TCP_DEFER_ACCEPT => o.defer_accept = Some(v.max(0)),
        libc::TCP_QUICKACK => o.quickack = Some(v),
        libc::TCP_USER_TIMEOUT => {
            if v < 0 {
                return Err(libc::EINVAL);
            }
            o.user_timeout = Some(v as u32);
        }
        _ => return Err(libc::ENOPROTOOPT),
    }
    Ok(())
}

/// `getsockopt` on TAS socket `sid`.
///
/// # Safety
///
/// As for libc's `getsockopt`: `len` null or valid for reads and writes,
/// `val` null or valid for writes of `*len` bytes.
pub unsafe fn getsockopt(
    ctx: &'static Ctx,
    sid: u64,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> Res<()> {
    let mut inner = ctx.inner.lock();
    inner.tas.poll_events();
    inner.after();
    let Inner { tas, socks, .. } = &mut *inner;
    let s = socks.get_mut(&sid).ok_or(libc::EBADF)?;
    if !modelled(level, name) {
        let k = shadow(s)?;
        // SAFETY: the caller's val/len, unchanged, under getsockopt's own
        // contract (ours); k is the shim's shadow socket.
        return check(unsafe { real::getsockopt::get()(k, level, name, val, len) }).map(|_| ());
    }
    if len.is_null() {
        return Err(libc::EFAULT);
    }
    let conn = match s.st {
        St::Connected(c) => tas.conn(c),
        _ => None,
    };
    let o = &s.opts;
    if level == libc::SOL_SOCKET {
        let v: c_int = match name {
            libc::SO_LINGER => {
                let l = o.linger.unwrap_or(libc::linger {
                    l_onoff: 0,
                    l_linger: 0,
                });
                // SAFETY: linger has no padding (asserted above); val/len as
                // the caller passed them (contract).
                return unsafe { write_bytes(val, len, as_bytes(&l)) };
            }
            libc::SO_RCVTIMEO | libc::SO_SNDTIMEO => {
                let t = if name == libc::SO_RCVTIMEO {
                    o.rcvtimeo
                } else {
                    o.sndtimeo
                };
                let t = t.unwrap_or(libc::timeval {
                    tv_sec: 0,
                    tv_usec: 0,
                });
                // SAFETY: timeval has no padding (asserted above); val/len as
                // the caller passed them (contract).
                return unsafe { write_bytes(val, len, as_bytes(&t)) };
            }
            libc::SO_ERROR => {
                take_conn_error(s, tas);
                let e = std::mem::take(&mut s.so_error);
                if e != 0 {
                    Sig::clear_err(s.a);
                }
                e
            }
            libc::SO_TYPE => libc::SOCK_STREAM,
            libc::SO_DOMAIN => libc::AF_INET,
            libc::SO_PROTOCOL => libc::IPPROTO_TCP,
            libc::SO_ACCEPTCONN => matches!(s.st, St::Listening(_)) as c_int,
            libc::SO_REUSEADDR => o.reuseaddr as c_int,
            libc::SO_REUSEPORT => o.reuseport as c_int,
            libc::SO_KEEPALIVE => o.keepalive as c_int,
            libc::SO_OOBINLINE => o.oobinline as c_int,
            libc::SO_RCVBUF | libc::SO_RCVBUFFORCE => {
                o.rcvbuf
                    .or(conn.map(|c| c.rx_len()))
                    .unwrap_or(DEFAULT_RCVBUF) as c_int
            }
            libc::SO_SNDBUF | libc::SO_SNDBUFFORCE => {
                o.sndbuf
                    .or(conn.map(|c| c.tx_len()))
                    .unwrap_or(DEFAULT_SNDBUF) as c_int
            }
            libc::SO_RCVLOWAT => o.rcvlowat.unwrap_or(1),
            libc::SO_SNDLOWAT => 1,
            _ => return Err(libc::ENOPROTOOPT),
        };
        // SAFETY: val/len as the caller passed them (contract).
        return unsafe { write_int(val, len, v) };
    }
    let v: c_int = match name {
        libc::TCP_NODELAY => o.nodelay as c_int,
        libc::TCP_CORK => o.cork as c_int,
        libc::TCP_KEEPIDLE => o.keepidle.unwrap_or(7200),
        libc::TCP_KEEPINTVL => o.keepintvl.unwrap_or(75),
        libc::TCP_KEEPCNT => o.keepcnt.unwrap_or(9),
        libc::TCP_MAXSEG => match conn {
            Some(c) => c.info.mss as c_int,
            None => o.maxseg.filter(|&m| m != 0).unwrap_or(536),
        },
        libc::TCP_DEFER_ACCEPT => o.defer_accept.unwrap_or(0),
        libc::TCP_QUICKACK => o.quickack.map(|q| (q != 0) as c_int).unwrap_or(1),
        libc::TCP_USER_TIMEOUT => o.user_timeout.unwrap_or(0) as c_int,
        libc::TCP_INFO => {
            // Filled in place in zeroed memory and copied out as bytes, so
            // the padding byte after the u8 fields is an initialised zero
            // too (a moved tcp_info value would not guarantee that).
            let mut buf = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
            let ti = buf.as_mut_ptr();
            let state = match s.st {
                St::Connected(_) if conn.map(|c| c.error().is_some()).unwrap_or(true) => 7,
                St::Connected(_) => 1,
                St::Listening(_) => 10,
                St::Connecting(_) => 2,
                _ => 7,
            };
            // SAFETY: ti points to the live local `buf`, all zero, which is
            // a valid tcp_info (integers only); integer fields are assigned
            // in place, without references.
            unsafe {
                (*ti).tcpi_state = state;
                if let Some(c) = conn {
                    (*ti).tcpi_snd_mss = c.info.mss;
                    (*ti).tcpi_rcv_mss = c.info.mss;
                    (*ti).tcpi_unacked = c.tx_unacked();
                }
            }
            // SAFETY: every byte of `buf` is initialised (zeroed, then
            // fields written), and it lives for the borrow.
            let bytes = unsafe {
                std::slice::from_raw_parts(ti as *const u8, std::mem::size_of::<libc::tcp_info>())
            };
            // SAFETY: val/len as the caller passed them (contract).
            return unsafe { write_bytes(val, len, bytes) };
        }
        _ => return Err(libc::ENOPROTOOPT),
    };
    // SAFETY: val/len as the caller passed them (contract).
    unsafe { write_int(val, len, v) }
}

/// Re-applies modelled options to a kernel socket (when a socket leaves
/// TAS for the kernel stack).
pub fn apply_to_kernel(k: c_int, o: &Opts) {
    let set = |level: c_int, name: c_int, v: c_int| {
        let _ = sys::r_setsockopt_int(k, level, name, v);
    };
    if o.reuseaddr {
        set(libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    }
    if o.reuseport {
        set(libc::SOL_SOCKET, libc::SO_REUSEPORT, 1);
    }
    if o.keepalive {
        set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    }
    if o.oobinline {
        set(libc::SOL_SOCKET, libc::SO_OOBINLINE, 1);
    }
    if let Some(v) = o.rcvbuf {
        set(libc::SOL_SOCKET, libc::SO_RCVBUF, (v / 2) as c_int);
    }
    if let Some(v) = o.sndbuf {
        set(libc::SOL_SOCKET, libc::SO_SNDBUF, (v / 2) as c_int);
    }
    if let Some(v) = o.rcvlowat {
        set(libc::SOL_SOCKET, libc::SO_RCVLOWAT, v);
    }
    if o.nodelay {
        set(libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
    }
    if o.cork {
        set(libc::IPPROTO_TCP, libc::TCP_CORK, 1);
    }
    for (name, v) in [
        (libc::TCP_KEEPIDLE, o.keepidle),
        (libc::TCP_KEEPINTVL, o.keepintvl),
        (libc::TCP_KEEPCNT, o.keepcnt),
        (libc::TCP_MAXSEG, o.maxseg),
        (libc::TCP_DEFER_ACCEPT, o.defer_accept),
        (libc::TCP_QUICKACK, o.quickack),
        (libc::TCP_USER_TIMEOUT, o.user_timeout.map(|v| v as c_int)),
    ] {
        if let Some(v) = v {
            set(libc::IPPROTO_TCP, name, v);
        }
    }
    let setb = |name: c_int, b: &[u8]| {
        // SAFETY: pointer and length describe the live slice `b`, which the
        // kernel only reads.
        unsafe {
            real::setsockopt::get()(
                k,
                libc::SOL_SOCKET,
                name,
                b.as_ptr() as *const c_void,
                b.len() as socklen_t,
            )
        };
    };
    if let Some(l) = o.linger {
        // SAFETY: linger has no padding (asserted above).
        setb(libc::SO_LINGER, unsafe { as_bytes(&l) });
    }
    if let Some(t) = o.rcvtimeo {
        // SAFETY: timeval has no padding (asserted above).
        setb(libc::SO_RCVTIMEO, unsafe { as_bytes(&t) });
    }
    if let Some(t) = o.sndtimeo {
        // SAFETY: timeval has no padding (asserted above).
        setb(libc::SO_SNDTIMEO, unsafe { as_bytes(&t) });
    }
}
