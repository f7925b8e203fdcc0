//! A TAS socket's options: the record kept per socket ([`Opts`]) and
//! setsockopt / getsockopt on TAS sockets.
//!
//! Options that change what TAS does are modelled here (buffer sizes become
//! ring sizes, `SO_LINGER` shapes `close`, timeouts bound blocking calls,
//! `SO_REUSEPORT` shares a listening port, `SO_RCVLOWAT` gates
//! readability); the rest are stored so `getsockopt` returns what was set.
//! Anything not modelled — other `IPPROTO_IP`/`IPPROTO_TCP` options, an
//! `AF_INET6` socket's `IPPROTO_IPV6` options other than `IPV6_V6ONLY`, and
//! unknown numbers — is applied to a *shadow* kernel TCP socket of the
//! socket's family kept for that purpose, so values, validation and errno
//! are exactly Linux's.

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
    // Of the socket's family: an AF_INET6 socket's IPPROTO_IPV6 options
    // (and its IPPROTO_IP ones, which Linux takes too) are answered there.
    let fam = if s.v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: socket takes no pointers.
    let k = check(unsafe { real::socket::get()(fam, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
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

fn modelled(level: c_int, name: c_int, v6: bool) -> bool {
    match level {
        libc::IPPROTO_IPV6 => v6 && name == libc::IPV6_V6ONLY,
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

/// `setsockopt` on TAS socket `sid`: Some(()) when done; None when the
/// socket has just become a kernel socket (`IPV6_V6ONLY` on for an
/// `AF_INET6` socket, `ops::v6`) and the caller must call the real
/// setsockopt.
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
) -> Res<Option<()>> {
    let g = global();
    let mut inner = ctx.inner.lock();
    let s = inner.socks.get_mut(&sid).ok_or(libc::EBADF)?;
    if !modelled(level, name, s.v6) {
        let k = shadow(s)?;
        // SAFETY: the caller's val/len, unchanged, under setsockopt's own
        // contract (ours); k is the shim's shadow socket.
        return check(unsafe { real::setsockopt::get()(k, level, name, val, len) })
            .map(|_| Some(()));
    }
    if level == libc::IPPROTO_IPV6 {
        // IPV6_V6ONLY: Linux takes it only before the socket has a port
        // (do_ipv6_setsockopt: `inet_num` set is EINVAL).
        // SAFETY: val/len as the caller passed them (contract).
        let v = unsafe { read_int(val, len) }?;
        if s.st != St::Fresh || s.local.1 != 0 {
            return Err(libc::EINVAL);
        }
        if v == 0 {
            s.v6only = false;
            return Ok(Some(()));
        }
        // An IPv6-only socket is never TAS's: the kernel's from now on.
        crate::debug::say(
            "kernel IPV6_V6ONLY",
            &format!(
                "setsockopt(fd {}, IPV6_V6ONLY, 1): an IPv6-only socket uses the kernel stack",
                s.a
            ),
        );
        crate::ops::to_kernel(ctx.idx, &mut inner, sid)?;
        return Ok(None);
    }
    // SAFETY: val/len as the caller passed them (same contract).
    let r = unsafe { set_modelled(&mut s.opts, g, level, name, val, len) };
    let (st, rcvbuf, sndbuf) = (s.st, s.opts.rcvbuf, s.opts.sndbuf);
    if r.is_ok() && level == libc::SOL_SOCKET && name == libc::SO_RCVLOWAT {
        inner.sync(sid);
    }
    // On a listening socket the sizes apply to the connections it accepts
    // from now on (Linux: accepted sockets inherit the listener's buffer
    // sizes and their lock), as nginx's `listen ... rcvbuf=` sets them
    // after listen().
    if let (Ok(()), St::Listening(l), libc::SOL_SOCKET) = (r, st, level) {
        let (rx, tx) = match name {
            libc::SO_RCVBUF | libc::SO_RCVBUFFORCE => (rcvbuf.unwrap_or(0), 0),
            libc::SO_SNDBUF | libc::SO_SNDBUFFORCE => (0, sndbuf.unwrap_or(0)),
            _ => (0, 0),
        };
        if rx != 0 || tx != 0 {
            inner
                .tas
                .listen_update(l, rx, tx)
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        }
    }
    r.map(Some)
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
    // A forked child must not touch its parent's context: it would take
    // the parent's notifications and control answers.
    let orphan = ctx.gen != global().gen.load(std::sync::atomic::Ordering::Acquire);
    if !orphan {
        inner.tas.poll_events();
        inner.after();
    }
    // TCP_INFO of a live connection asks tasd for what only it knows (one
    // round trip on the attach socket); news that arrives meanwhile is
    // passed on like after any other call. Without an answer (tasd gone, a
    // child's inherited socket) the fields the app side knows are filled.
    let stats = if level == libc::IPPROTO_TCP && name == libc::TCP_INFO && !len.is_null() && !orphan
    {
        let st = inner.socks.get(&sid).ok_or(libc::EBADF)?.st;
        let live = match st {
            St::Connected(c) => inner.tas.conn(c).is_some_and(|x| x.error().is_none()),
            _ => false,
        };
        match st {
            St::Connected(c) if live => {
                let r = inner.tas.flow_stats(c).ok();
                inner.after();
                r
            }
            _ => None,
        }
    } else {
        None
    };
    let Inner { tas, socks, .. } = &mut *inner;
    let s = socks.get_mut(&sid).ok_or(libc::EBADF)?;
    if !modelled(level, name, s.v6) {
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
            libc::SO_DOMAIN if s.v6 => libc::AF_INET6,
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
    if level == libc::IPPROTO_IPV6 {
        // IPV6_V6ONLY (the only IPPROTO_IPV6 option modelled).
        // SAFETY: val/len as the caller passed them (contract).
        return unsafe { write_int(val, len, s.v6only as c_int) };
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
            let info = conn.map(|c| tcp_info(c, stats.as_ref()));
            // SAFETY: ti points to the live local `buf`, all zero, which is
            // a valid tcp_info (integers only); integer fields are assigned
            // in place, without references.
            unsafe {
                (*ti).tcpi_state = state;
                if let Some(i) = info {
                    i.write(ti);
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

/// What `TCP_INFO` reports for a connection, as Linux fills the fields that
/// tools read (`iperf3`, `ss`-like monitors): from the app side the MSS and
/// ring sizes, from tasd (`stats`, when it answered) the RTT, congestion
/// window, retransmissions, windows and negotiated options.
///
/// * `tcpi_snd_cwnd` is in segments of `tcpi_snd_mss`, like Linux. For a
///   rate-based controller (DCTCP-rate, TIMELY) it is rate × RTT / MSS, the
///   window that rate keeps in flight; for a flow nothing limits but the
///   peer, the peer's window.
/// * `tcpi_rttvar` is the mean deviation of the smoothed RTT between
///   control rounds (the fast path keeps no per-sample variance); it starts
///   at RTT/2 as Linux's does.
/// * `tcpi_total_retrans` counts retransmission episodes (fast retransmits
///   and timeouts), not segments; `tcpi_rcv_space` is the receive ring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpInfo {
    pub snd_mss: u32,
    pub rcv_mss: u32,
    pub advmss: u32,
    pub pmtu: u32,
    pub rcv_space: u32,
    pub unacked: u32,
    pub rtt: u32,
    pub rttvar: u32,
    pub rto: u32,
    pub snd_cwnd: u32,
    pub snd_ssthresh: u32,
    pub total_retrans: u32,
    pub options: u8,
    pub wscale: u8,
    pub pacing_rate: u64,
    pub max_pacing_rate: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub notsent_bytes: u32,
    pub snd_wnd: u32,
    pub rcv_wnd: u32,
    pub total_rto: u16,
}

/// Linux's `TCP_INFINITE_SSTHRESH`: no slow-start threshold set yet.
const INFINITE_SSTHRESH: u32 = 0x7fff_ffff;

/// [`TcpInfo`] of connection `c` with tasd's `stats` (None: unknown).
pub fn tcp_info(c: &tas::Conn, stats: Option<&tas::FlowStats>) -> TcpInfo {
    use tas::stats as f;
    use tas::FlowStats;
    let mss = c.info.mss.max(1);
    let segs = |bytes: u32| bytes.div_ceil(mss);
    let mut i = TcpInfo {
        snd_mss: mss,
        rcv_mss: mss,
        advmss: mss,
        pmtu: mss + 40,
        rcv_space: c.rx_len(),
        unacked: segs(c.tx_unacked()),
        ..Default::default()
    };
    let Some(s): Option<&FlowStats> = stats else {
        return i;
    };
    let opt_len = if s.flags & f::F_TS != 0 { 12 } else { 0 };
    i.advmss = mss + opt_len;
    i.pmtu = mss + opt_len + 40;
    i.rtt = s.rtt_us;
    i.rttvar = s.rttvar_us;
    i.rto = s.rto_us;
    i.total_retrans = s.retransmits;
    i.total_rto = s.timeouts.min(u16::MAX as u32) as u16;
    i.options = (s.flags & f::OPTIONS) as u8;
    if s.flags & f::F_WSCALE != 0 {
        i.wscale = (s.snd_wscale & 0xf) | (s.rcv_wscale & 0xf) << 4;
    }
    // Linux counts the acknowledged SYN too.
    i.bytes_acked = s.bytes_acked + 1;
    i.bytes_received = s.bytes_received;
    i.notsent_bytes = s.not_sent;
    i.snd_wnd = s.snd_wnd;
    i.rcv_wnd = s.rcv_wnd;
    i.max_pacing_rate = u64::MAX;
    if s.flags & f::F_OPEN != 0 {
        i.unacked = segs(s.in_flight);
        i.snd_cwnd = segs(s.cwnd_bytes).max(1);
        i.snd_ssthresh = if s.flags & f::F_SLOW_START != 0 {
            INFINITE_SSTHRESH
        } else {
            i.snd_cwnd
        };
        // Bytes per second: the rate limit, or a window per RTT.
        i.pacing_rate = if s.flags & f::F_RATE != 0 {
            s.rate_kbps.saturating_mul(125)
        } else if s.rtt_us > 0 {
            s.cwnd_bytes as u64 * 1_000_000 / s.rtt_us as u64
        } else {
            0
        };
    }
    i
}

impl TcpInfo {
    /// Writes the fields into a zeroed `tcp_info`.
    ///
    /// # Safety
    ///
    /// `ti` must point to a live, writable `libc::tcp_info`.
    unsafe fn write(&self, ti: *mut libc::tcp_info) {
        // SAFETY: ti is live and writable (contract); integer fields are
        // assigned in place, without references.
        unsafe {
            (*ti).tcpi_options = self.options;
            (*ti).tcpi_snd_rcv_wscale = self.wscale;
            (*ti).tcpi_rto = self.rto;
            (*ti).tcpi_snd_mss = self.snd_mss;
            (*ti).tcpi_rcv_mss = self.rcv_mss;
            (*ti).tcpi_unacked = self.unacked;
            (*ti).tcpi_pmtu = self.pmtu;
            (*ti).tcpi_rtt = self.rtt;
            (*ti).tcpi_rttvar = self.rttvar;
            (*ti).tcpi_snd_ssthresh = self.snd_ssthresh;
            (*ti).tcpi_snd_cwnd = self.snd_cwnd;
            (*ti).tcpi_advmss = self.advmss;
            (*ti).tcpi_reordering = 3;
            (*ti).tcpi_rcv_space = self.rcv_space;
            (*ti).tcpi_total_retrans = self.total_retrans;
            (*ti).tcpi_pacing_rate = self.pacing_rate;
            (*ti).tcpi_max_pacing_rate = self.max_pacing_rate;
            (*ti).tcpi_bytes_acked = self.bytes_acked;
            (*ti).tcpi_bytes_received = self.bytes_received;
            (*ti).tcpi_notsent_bytes = self.notsent_bytes;
            (*ti).tcpi_snd_wnd = self.snd_wnd;
            (*ti).tcpi_rcv_wnd = self.rcv_wnd;
            (*ti).tcpi_total_rto = self.total_rto;
        }
    }
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
