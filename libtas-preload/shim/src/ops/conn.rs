//! bind / listen / accept / connect, and the addresses they give
//! (getsockname / getpeername; IPv4-mapped `sockaddr_in6`s for an
//! `AF_INET6` socket, whose own decisions are `v6`'s). Also the decision that sends a socket to
//! the kernel stack: an address on loopback or owned by the kernel, or an
//! address or port `TAS_EXCLUDE` names.

use super::pair::{create_pair, register, renew_pair, to_kernel};
use super::ports::{pick_port, port_conflict, register_port, set_port_listening};
use super::{deadline, orphan};
use crate::ctx::{Ctx, Inner};
use crate::global::global;
use crate::readiness::Sig;
use crate::sigrestart;
use crate::sock::{Bsd, Sock, St};
use crate::sys::{r_close, real, Res};
use crate::wait::wait_fd;
use libc::{c_int, sockaddr, socklen_t};
use std::sync::atomic::Ordering;

/// Reads a `sockaddr_in` (family, ip host order, port).
///
/// # Safety
///
/// Unless null, `addr` must be a `sockaddr` pointer as C passes one
/// (aligned for `sockaddr`), valid for reads of `len` bytes.
pub unsafe fn parse_in(addr: *const sockaddr, len: socklen_t) -> Res<(c_int, u32, u16)> {
    if addr.is_null() {
        return Err(libc::EFAULT);
    }
    if (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        return Err(libc::EINVAL);
    }
    // SAFETY: addr is non-null, aligned and readable for len bytes, which
    // cover the family (checked above; contract).
    let fam = unsafe { (*addr).sa_family } as c_int;
    if (len as usize) < std::mem::size_of::<libc::sockaddr_in>() {
        if fam == libc::AF_INET {
            return Err(libc::EINVAL);
        }
        return Ok((fam, 0, 0));
    }
    // SAFETY: addr is readable for len >= size_of::<sockaddr_in>() bytes
    // (checked above; contract); read unaligned, as sockaddr_in may be
    // more aligned than what C passed.
    let sin = unsafe { std::ptr::read_unaligned(addr as *const libc::sockaddr_in) };
    Ok((
        fam,
        u32::from_be(sin.sin_addr.s_addr),
        u16::from_be(sin.sin_port),
    ))
}

/// Copies socket address `value` out as Linux does: `*len` bytes of it at
/// most (truncating), then `*len` set to its full size.
///
/// # Safety
///
/// Unless `addr` is null: `len` null or valid for reads and writes, and
/// `addr` valid for writes of `*len` bytes. `T` is a `sockaddr_*` without
/// padding bytes.
pub(super) unsafe fn copy_out<T: Copy>(
    addr: *mut sockaddr,
    len: *mut socklen_t,
    value: &T,
) -> Res<()> {
    if addr.is_null() {
        return Ok(());
    }
    if len.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: len is non-null, so readable (contract).
    let l = unsafe { *len } as i32;
    if l < 0 {
        return Err(libc::EINVAL);
    }
    let size = std::mem::size_of::<T>();
    let n = (l as usize).min(size);
    // SAFETY: addr is writable for l >= n bytes and len is writable
    // (contract); `value` is the caller's value, not the program's memory,
    // and has no padding (contract), so all n bytes are initialised.
    unsafe {
        std::ptr::copy_nonoverlapping(value as *const T as *const u8, addr as *mut u8, n);
        *len = size as socklen_t;
    }
    Ok(())
}

/// Copies an IPv4 address out as Linux does (truncating, length = 16).
///
/// # Safety
///
/// As for [`copy_out`].
pub unsafe fn write_in(addr: *mut sockaddr, len: *mut socklen_t, ip: u32, port: u16) -> Res<()> {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: ip.to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: the caller's contract; sockaddr_in has no padding.
    unsafe { copy_out(addr, len, &sin) }
}

/// Copies an address out in the socket's family: `sockaddr_in`, or for an
/// `AF_INET6` socket an IPv4-mapped `sockaddr_in6` (`ops::v6`).
///
/// # Safety
///
/// As for [`write_in`].
unsafe fn write_addr(
    v6: bool,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    ip: u32,
    port: u16,
) -> Res<()> {
    if v6 {
        // SAFETY: the same contract, passed on.
        unsafe { super::v6::write_in6(addr, len, ip, port) }
    } else {
        // SAFETY: the same contract, passed on.
        unsafe { write_in(addr, len, ip, port) }
    }
}

fn is_loopback(ip: u32) -> bool {
    ip >> 24 == 127
}

/// Whether the kernel owns `ip` here (then the kernel stack must serve it).
fn kernel_local(ip: u32) -> bool {
    if is_loopback(ip) {
        return true;
    }
    let g = global();
    if let Some(&v) = g.local_cache.lock().get(&ip) {
        return v;
    }
    // SAFETY: socket takes no pointers; bind reads the live local `sin`
    // (16 bytes, a whole sockaddr_in) and nothing else; the probe socket is
    // ours to close.
    let local = unsafe {
        let s = real::socket::get()(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            false
        } else {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: ip.to_be() },
                sin_zero: [0; 8],
            };
            let r = real::bind::get()(s, &sin as *const _ as *const sockaddr, 16);
            r_close(s);
            r == 0
        }
    };
    g.local_cache.lock().insert(ip, local);
    local
}

/// The errno of a request tasd (or the `tas` crate) refused, with the
/// reason for `TAS_PRELOAD_DEBUG`.
fn refused(what: &str, e: std::io::Error) -> c_int {
    let code = e.raw_os_error().unwrap_or(libc::ENETDOWN);
    refused_errno(what, code);
    code
}

/// Records (for `TAS_PRELOAD_DEBUG`) why tasd refused a request with `code`.
fn refused_errno(what: &str, code: c_int) {
    crate::debug::reason(|| {
        match code {
        libc::ENOBUFS | libc::ENOMEM => format!(
            "tasd refused the {what}: out of memory for this program's connections (rings of its shared region, --app-mem-mib, or flows)"
        ),
        _ => format!("tasd refused the {what}: {}", std::io::Error::from_raw_os_error(code)),
    }
    });
}

fn tas_ip(inner: &Inner) -> Option<u32> {
    inner.tas.local_ip().map(u32::from).or(global().cfg.tas_ip)
}

/// `bind`: Some(()) when bound on TAS; None when the address belongs to
/// the kernel stack and the socket became a kernel socket (the caller then
/// calls the real bind).
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
    if super::v6::is_v6(ctx, sid) {
        // SAFETY: addr/len as the caller passed them (contract).
        return unsafe { super::v6::bind(ctx, sid, addr, len) };
    }
    // Linux's order of checks: length, family, address, port, state.
    if addr.is_null() {
        return Err(libc::EFAULT);
    }
    if (len as usize) < std::mem::size_of::<libc::sockaddr_in>() {
        return Err(libc::EINVAL);
    }
    // SAFETY: addr/len as the caller passed them (contract).
    let (fam, ip, port) = unsafe { parse_in(addr, len) }?;
    if fam != libc::AF_INET && !(fam == libc::AF_UNSPEC && ip == 0) {
        return Err(libc::EAFNOSUPPORT);
    }
    bind_at(ctx, sid, ip, port)
}

/// `bind` to IPv4 address `ip` (host order; 0 for the wildcard) and `port`
/// once the address was read (an `AF_INET6` socket's IPv4-mapped or `::`
/// address too): Some(()) when bound on TAS, None when the socket became a
/// kernel socket.
pub(super) fn bind_at(ctx: &'static Ctx, sid: u64, ip: u32, port: u16) -> Res<Option<()>> {
    if orphan(ctx) {
        return Err(libc::EINVAL);
    }
    let mut inner = ctx.inner.lock();
    let tip = tas_ip(&inner);
    let excluded = global().cfg.exclude.bind(ip, port);
    let kernel = excluded || (ip != 0 && Some(ip) != tip && kernel_local(ip));
    if ip != 0 && !kernel && tip.is_some_and(|t| t != ip) {
        return Err(libc::EADDRNOTAVAIL);
    }
    // SAFETY: geteuid takes no arguments and cannot fail.
    if port != 0 && port < 1024 && unsafe { libc::geteuid() } != 0 {
        return Err(libc::EACCES);
    }
    let s = inner.socks.get(&sid).ok_or(libc::EBADF)?;
    if s.st != St::Fresh || s.local.1 != 0 {
        return Err(libc::EINVAL);
    }
    if kernel {
        // Loopback, a kernel-owned address or TAS_EXCLUDE: the kernel
        // serves it.
        let why = if excluded {
            "excluded by TAS_EXCLUDE"
        } else {
            "an address the kernel owns (loopback or a kernel interface's)"
        };
        crate::debug::say(
            &format!("kernel bind {why}"),
            &format!(
                "bind(fd {}) to {}:{port}: {why}: the socket uses the kernel stack",
                s.a,
                std::net::Ipv4Addr::from(ip)
            ),
        );
        to_kernel(ctx.idx, &mut inner, sid)?;
        return Ok(None);
    }
    let port = if port == 0 {
        pick_port(ctx.idx, s, ip)?
    } else {
        if port_conflict(&global().ports.lock(), (ctx.idx, sid), ip, port, &s.opts) {
            return Err(libc::EADDRINUSE);
        }
        port
    };
    register_port(ctx.idx, s, ip, port);
    let s = inner.socks.get_mut(&sid).ok_or(libc::EBADF)?;
    s.local = (ip, port);
    s.port_registered = true;
    Ok(Some(()))
}

/// `listen`: Some(()) when listening on TAS; None when the socket became a
/// kernel socket (an `AF_INET6` socket with `IPV6_V6ONLY` on) and the
/// caller must call the real listen.
pub fn listen(ctx: &'static Ctx, sid: u64, backlog: c_int) -> Res<Option<()>> {
    if orphan(ctx) {
        return Err(libc::EINVAL);
    }
    if super::v6::listen_goes_to_kernel(ctx, sid)? {
        return Ok(None);
    }
    let mut inner = ctx.inner.lock();
    let s = inner.socks.get(&sid).ok_or(libc::EBADF)?;
    match s.st {
        St::Listening(_) => return Ok(Some(())),
        St::Fresh if s.bsd == Bsd::Unconnected => {}
        _ => return Err(libc::EINVAL),
    }
    let backlog = if backlog < 0 {
        4096
    } else {
        backlog.clamp(1, 4096)
    } as u32;
    if s.local.1 == 0 {
        let p = pick_port(ctx.idx, s, 0)?;
        register_port(ctx.idx, s, 0, p);
        let s = inner.socks.get_mut(&sid).ok_or(libc::EBADF)?;
        s.local = (0, p);
        s.port_registered = true;
    }
    let s = inner.socks.get(&sid).ok_or(libc::EBADF)?;
    if port_conflict(
        &global().ports.lock(),
        (ctx.idx, sid),
        s.local.0,
        s.local.1,
        &s.opts,
    ) {
        return Err(libc::EADDRINUSE);
    }
    let (port, rx, tx, reuse) = (
        s.local.1,
        s.opts.rcvbuf.unwrap_or(0),
        s.opts.sndbuf.unwrap_or(0),
        s.opts.reuseport,
    );
    let r = inner.tas.listen_with(port, backlog, rx, tx, reuse);
    let r = r.map_err(|e| refused("listen", e));
    let l = match r {
        Ok(l) => l,
        Err(e) => {
            inner.after();
            return Err(e);
        }
    };
    inner.by_listener.insert(l, sid);
    let s = inner.socks.get_mut(&sid).ok_or(libc::EBADF)?;
    s.st = St::Listening(l);
    s.backlog = backlog as c_int;
    if s.local.0 == 0 && s.klisten < 0 {
        // 0.0.0.0 (or `::`): the kernel's addresses (loopback, ...) are
        // served too.
        s.klisten = super::wild::open(s, port, backlog as c_int);
    }
    set_port_listening(ctx.idx, s, true);
    inner.sync(sid);
    inner.after();
    Ok(Some(()))
}

/// `accept4` (and `accept`, with no flags).
///
/// # Safety
///
/// As for libc's `accept4`: unless `addr` is null, `len` null or valid for
/// reads and writes and `addr` valid for writes of `*len` bytes.
pub unsafe fn accept(
    ctx: &'static Ctx,
    sid: u64,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> Res<c_int> {
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return Err(libc::EINVAL);
    }
    if orphan(ctx) {
        return Err(libc::EINVAL);
    }
    let mut dl = None;
    loop {
        let mut inner = ctx.inner.lock();
        let s = inner.socks.get(&sid).ok_or(libc::EBADF)?;
        let St::Listening(l) = s.st else {
            return Err(libc::EINVAL);
        };
        if !s.interest {
            drop(inner);
            crate::fork::note_interest(ctx, sid);
            continue;
        }
        let (nonblock, a) = (s.nonblock, s.a);
        if dl.is_none() {
            dl = Some(deadline(s.opts.rcvtimeo));
        }
        let lopts = s.opts.clone();
        let v6 = s.v6;
        inner.tas.poll_events();
        match inner.tas.try_accept(l) {
            Ok(Some(c)) => {
                let info = inner
                    .tas
                    .conn(c)
                    .map(|x| x.info)
                    .ok_or(libc::ECONNABORTED)?;
                let (na, nb) = match create_pair(
                    flags & libc::SOCK_NONBLOCK != 0,
                    flags & libc::SOCK_CLOEXEC != 0,
                ) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = inner.tas.abort(c);
                        inner.after();
                        return Err(e);
                    }
                };
                let nsid = global().next_sid.fetch_add(1, Ordering::Relaxed);
                let mut ns = Sock::new(nsid, na, nb, flags & libc::SOCK_NONBLOCK != 0);
                ns.st = St::Connected(c);
                ns.bsd = Bsd::Connected;
                ns.local = (info.local_ip, info.local_port);
                ns.peer = (info.remote_ip, info.remote_port);
                ns.opts = lopts;
                ns.opts.reuseport = false;
                ns.v6 = v6;
                ns.v6only = false;
                let fd = match register(ctx, &mut inner, ns) {
                    Ok(fd) => fd,
                    Err(e) => {
                        let _ = inner.tas.abort(c);
                        inner.after();
                        return Err(e);
                    }
                };
                inner.by_flow.insert(c, nsid);
                inner.sync(nsid);
                inner.sync(sid);
                inner.after();
                drop(inner);
                // SAFETY: addr/len as the caller passed them (contract).
                unsafe { write_addr(v6, addr, len, info.remote_ip, info.remote_port) }?;
                return Ok(fd);
            }
            Ok(None) => {
                // A wildcard listener's kernel side (ops::wild).
                if let Some(s) = inner.socks.get_mut(&sid) {
                    // SAFETY: addr/len as the caller passed them (contract).
                    if let Some(r) = unsafe { super::wild::accept(s, addr, len, flags) } {
                        inner.sync(sid);
                        inner.after();
                        return r;
                    }
                }
                inner.sync(sid);
                inner.after();
            }
            Err(e) => {
                inner.after();
                // tasd is gone: the listener is no longer connected to it.
                return Err(e.raw_os_error().unwrap_or(
                    if e.kind() == std::io::ErrorKind::NotConnected {
                        libc::ENOTCONN
                    } else {
                        libc::EIO
                    },
                ));
            }
        }
        drop(inner);
        if nonblock {
            return Err(libc::EAGAIN);
        }
        match wait_fd(a, libc::POLLIN, dl.flatten()) {
            Ok(()) => {}
            Err(e) if sigrestart::restarts(e, dl.flatten()) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Some(()) when done on TAS; None when the socket moved to the kernel and
/// the caller must call the real connect.
///
/// # Safety
///
/// As for libc's `connect`: `addr` null or valid for reads of `len` bytes.
pub unsafe fn connect(
    ctx: &'static Ctx,
    sid: u64,
    addr: *const sockaddr,
    len: socklen_t,
) -> Res<Option<()>> {
    // SAFETY: addr/len as the caller passed them (contract).
    let (fam, ip, port) = unsafe { parse_in(addr, len) }?;
    if orphan(ctx) {
        return Err(libc::EINVAL);
    }
    let mut inner = ctx.inner.lock();
    if fam == libc::AF_UNSPEC {
        let s = inner.socks.get(&sid).ok_or(libc::EBADF)?;
        return if s.st == St::Fresh {
            Ok(Some(()))
        } else {
            Err(libc::EOPNOTSUPP)
        };
    }
    let v6 = inner.socks.get(&sid).ok_or(libc::EBADF)?.v6;
    if !v6 {
        if (len as usize) < std::mem::size_of::<libc::sockaddr_in>() {
            return Err(libc::EINVAL);
        }
        if fam != libc::AF_INET {
            return Err(libc::EAFNOSUPPORT);
        }
    }
    let s = inner.socks.get_mut(&sid).ok_or(libc::EBADF)?;
    let nonblock = s.nonblock;
    let dl = deadline(s.opts.sndtimeo);
    match (s.bsd, s.st) {
        (Bsd::Connected, _) => return Err(libc::EISCONN),
        (Bsd::Connecting, St::Connected(_)) => {
            s.bsd = Bsd::Connected;
            return Ok(Some(()));
        }
        (Bsd::Connecting, St::Failed) => {
            s.bsd = Bsd::Unconnected;
            let e = std::mem::take(&mut s.so_error);
            Sig::clear_err(s.a);
            s.disconnected = true;
            return Err(if e != 0 { e } else { libc::ECONNABORTED });
        }
        (Bsd::Connecting, St::Connecting(_)) => {
            if nonblock {
                return Err(libc::EALREADY);
            }
            drop(inner);
            return connect_wait(ctx, sid, dl).map(Some);
        }
        (_, St::Listening(_)) => return Err(libc::EISCONN),
        (_, St::Connected(_)) => return Err(libc::EISCONN),
        (_, St::Failed) => renew_pair(&mut inner, sid)?,
        _ => {}
    }
    // An AF_INET6 socket: Linux reads the address only now (after the
    // state checks); an IPv4-mapped one is an IPv4 connect, anything else
    // is the kernel's.
    let (ip, port) = if v6 {
        let v6only = inner.socks.get(&sid).ok_or(libc::EBADF)?.v6only;
        // SAFETY: addr/len as the caller passed them (contract).
        match unsafe { super::v6::connect_target(v6only, addr, len) }? {
            Some(t) => t,
            None => {
                crate::debug::say(
                    "kernel connect IPv6",
                    "connect of an AF_INET6 socket to an IPv6 address (or with IPV6_V6ONLY on): the socket uses the kernel stack",
                );
                to_kernel(ctx.idx, &mut inner, sid)?;
                return Ok(None);
            }
        }
    } else {
        (ip, port)
    };
    let tip = tas_ip(&inner);
    let excluded = global().cfg.exclude.connect(ip, port);
    if ip == 0 || excluded || (Some(ip) != tip && kernel_local(ip)) {
        let why = if excluded {
            "excluded by TAS_EXCLUDE"
        } else if ip == 0 {
            "the wildcard address (this host)"
        } else {
            "an address the kernel owns (loopback or a kernel interface's)"
        };
        crate::debug::say(
            &format!("kernel connect {why}"),
            &format!(
                "connect to {}:{port}: {why}: the socket uses the kernel stack",
                std::net::Ipv4Addr::from(ip)
            ),
        );
        to_kernel(ctx.idx, &mut inner, sid)?;
        return Ok(None);
    }
    let s = inner.socks.get(&sid).ok_or(libc::EBADF)?;
    let (lport, rx, tx) = (
        s.local.1,
        s.opts.rcvbuf.unwrap_or(0),
        s.opts.sndbuf.unwrap_or(0),
    );
    let req = inner
        .tas
        .connect_start_with(std::net::Ipv4Addr::from(ip), port, lport, rx, tx)
        .map_err(|e| refused("connect", e))?;
    inner.connecting.insert(req, sid);
    let s = inner.socks.get_mut(&sid).ok_or(libc::EBADF)?;
    s.st = St::Connecting(req);
    s.bsd = Bsd::Connecting;
    s.peer = (ip, port);
    inner.sync(sid);
    inner.after();
    drop(inner);
    if nonblock {
        return Err(libc::EINPROGRESS);
    }
    connect_wait(ctx, sid, dl).map(Some)
}

fn connect_wait(ctx: &'static Ctx, sid: u64, dl: Option<u64>) -> Res<()> {
    loop {
        let mut inner = ctx.inner.lock();
        let s = inner.socks.get_mut(&sid).ok_or(libc::EBADF)?;
        match s.st {
            St::Connected(_) => {
                s.bsd = Bsd::Connected;
                return Ok(());
            }
            St::Failed => {
                s.bsd = Bsd::Unconnected;
                let e = std::mem::take(&mut s.so_error);
                Sig::clear_err(s.a);
                s.disconnected = true;
                let e = if e != 0 { e } else { libc::ECONNABORTED };
                if matches!(e, libc::ENOMEM | libc::ENOBUFS) {
                    refused_errno("connection", e);
                }
                return Err(e);
            }
            St::Connecting(_) => {}
            _ => return Err(libc::ECONNABORTED),
        }
        let a = s.a;
        drop(inner);
        match wait_fd(a, libc::POLLOUT, dl) {
            Ok(()) => {}
            Err(libc::EAGAIN) => return Err(libc::EINPROGRESS),
            // (Linux's restarted connect keeps waiting for the handshake.)
            Err(e) if sigrestart::restarts(e, dl) => {}
            Err(e) => return Err(e),
        }
    }
}

// Names.

/// `getsockname`.
///
/// # Safety
///
/// As for libc's `getsockname`: `len` null or valid for reads and writes,
/// `addr` null or valid for writes of `*len` bytes.
pub unsafe fn getsockname(
    ctx: &'static Ctx,
    sid: u64,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> Res<()> {
    let inner = ctx.inner.lock();
    let s = inner.socks.get(&sid).ok_or(libc::EBADF)?;
    let (ip, port) = s.local;
    let v6 = s.v6;
    drop(inner);
    if len.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: addr/len as the caller passed them (contract).
    unsafe { write_addr(v6, addr, len, ip, port) }
}

/// `getpeername`.
///
/// # Safety
///
/// As for libc's `getpeername`: `len` null or valid for reads and writes,
/// `addr` null or valid for writes of `*len` bytes.
pub unsafe fn getpeername(
    ctx: &'static Ctx,
    sid: u64,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> Res<()> {
    let inner = ctx.inner.lock();
    let s = inner.socks.get(&sid).ok_or(libc::EBADF)?;
    let ok = match s.st {
        St::Connected(c) => match inner.tas.conn(c) {
            Some(cn) => cn.error().is_none() && !(cn.rx_fin() && cn.fin_acked()),
            None => false,
        },
        _ => false,
    };
    if !ok {
        return Err(libc::ENOTCONN);
    }
    let (ip, port) = s.peer;
    let v6 = s.v6;
    drop(inner);
    if len.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: addr/len as the caller passed them (contract).
    unsafe { write_addr(v6, addr, len, ip, port) }
}
