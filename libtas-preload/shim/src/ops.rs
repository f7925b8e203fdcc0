//! The socket calls on TAS sockets. Every function here returns
//! `Result<_, errno>`; the exported C functions (lib.rs) turn that into
//! `-1` + `errno`.

use crate::ctx::{my_ctx, Ctx, Inner};
use crate::fdtab::{decode, encode, high_fd_base, T_EPOLL, T_INTERNAL};
use crate::global::{global, try_global, PortUse, Ports};
use crate::opts;
use crate::opts::Opts;
use crate::readiness::Sig;
use crate::sock::{take_conn_error, Bsd, Sock, St};
use crate::sys::{self, check, r_close, r_fcntl, real, Res};
use crate::wait::wait_fd;
use libc::{c_int, c_void, sockaddr, socklen_t};
use std::io::{IoSlice, IoSliceMut};
use std::sync::atomic::Ordering;

const EPHEMERAL: (u16, u16) = (32768, 60999);

/// What an fd number is to the shim.
pub enum Kind {
    /// Not ours: libc handles it.
    Kernel,
    Sock(&'static Ctx, u64),
    /// One of the shim's own descriptors.
    Internal,
}

#[inline]
pub fn kind(fd: c_int) -> Kind {
    let Some(g) = try_global() else {
        return Kind::Kernel;
    };
    let v = g.fd(fd);
    if v == 0 {
        return Kind::Kernel;
    }
    if let Some((ci, sid)) = decode(v) {
        return match g.ctx(ci) {
            Some(c) => Kind::Sock(c, sid),
            None => Kind::Kernel,
        };
    }
    if v & T_INTERNAL != 0 {
        return Kind::Internal;
    }
    Kind::Kernel
}

fn orphan(ctx: &Ctx) -> bool {
    ctx.gen != global().gen.load(Ordering::Acquire)
}

fn sigpipe() {
    // SAFETY: raise() signals the calling thread, as Linux does for EPIPE.
    unsafe { libc::raise(libc::SIGPIPE) };
}

fn deadline(tv: Option<libc::timeval>) -> Option<u64> {
    let tv = tv?;
    let ns = tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
    (ns > 0).then(|| sys::monotonic_ns() + ns)
}

/// Reads a `sockaddr_in` (family, ip host order, port).
pub fn parse_in(addr: *const sockaddr, len: socklen_t) -> Res<(c_int, u32, u16)> {
    if addr.is_null() {
        return Err(libc::EFAULT);
    }
    if (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        return Err(libc::EINVAL);
    }
    // SAFETY: at least the family is readable (len checked).
    let fam = unsafe { (*addr).sa_family } as c_int;
    if (len as usize) < std::mem::size_of::<libc::sockaddr_in>() {
        if fam == libc::AF_INET {
            return Err(libc::EINVAL);
        }
        return Ok((fam, 0, 0));
    }
    // SAFETY: len covers a sockaddr_in; read unaligned to be safe.
    let sin = unsafe { std::ptr::read_unaligned(addr as *const libc::sockaddr_in) };
    Ok((
        fam,
        u32::from_be(sin.sin_addr.s_addr),
        u16::from_be(sin.sin_port),
    ))
}

/// Copies an IPv4 address out as Linux does (truncating, length = 16).
pub fn write_in(addr: *mut sockaddr, len: *mut socklen_t, ip: u32, port: u16) -> Res<()> {
    if addr.is_null() {
        return Ok(());
    }
    if len.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: the caller passed a valid length pointer.
    let l = unsafe { *len } as i32;
    if l < 0 {
        return Err(libc::EINVAL);
    }
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: ip.to_be() },
        sin_zero: [0; 8],
    };
    let n = (l as usize).min(std::mem::size_of::<libc::sockaddr_in>());
    // SAFETY: the caller's buffer holds `l` >= n bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(&sin as *const _ as *const u8, addr as *mut u8, n);
        *len = std::mem::size_of::<libc::sockaddr_in>() as socklen_t;
    }
    Ok(())
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
    // SAFETY: plain socket/bind/close on a probe socket.
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

fn tas_ip(inner: &Inner) -> Option<u32> {
    inner.tas.local_ip().map(u32::from).or(global().cfg.tas_ip)
}

// ---------------------------------------------------------------------------
// Creating sockets.

/// A Unix stream pair: (A for the app, B for us).
fn create_pair(nonblock: bool, cloexec: bool) -> Res<(c_int, c_int)> {
    let mut sv = [-1; 2];
    // SAFETY: valid out-array.
    check(unsafe {
        real::socketpair::get()(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    })?;
    let (a, b) = (sv[0], sv[1]);
    if !cloexec {
        let _ = r_fcntl(a, libc::F_SETFD, 0);
    }
    if nonblock {
        let _ = r_fcntl(a, libc::F_SETFL, (libc::O_RDWR | libc::O_NONBLOCK) as usize);
    }
    let _ = r_fcntl(b, libc::F_SETFL, (libc::O_RDWR | libc::O_NONBLOCK) as usize);
    let _ = sys::r_setsockopt_int(a, libc::SOL_SOCKET, libc::SO_SNDBUF, 1);
    // Keep our end out of the app's way.
    let b = sys::move_high(b, high_fd_base());
    Ok((a, b))
}

fn register(ctx: &'static Ctx, inner: &mut Inner, s: Sock) -> Res<c_int> {
    let g = global();
    let (a, b, sid) = (s.a, s.sig.b, s.id);
    if !g.fd_fits(a) || !g.fd_fits(b) {
        r_close(a);
        r_close(b);
        return Err(libc::EMFILE);
    }
    inner.socks.insert(sid, s);
    g.set_fd(b, T_INTERNAL);
    g.set_fd(a, encode(ctx.idx, sid));
    Ok(a)
}

/// `socket(AF_INET, SOCK_STREAM, 0|IPPROTO_TCP)`: None when TAS is not
/// available (the caller uses the kernel).
pub fn socket(ty: c_int) -> Option<Res<c_int>> {
    let ctx = my_ctx()?;
    let nonblock = ty & libc::SOCK_NONBLOCK != 0;
    let cloexec = ty & libc::SOCK_CLOEXEC != 0;
    let (a, b) = match create_pair(nonblock, cloexec) {
        Ok(p) => p,
        Err(e) => return Some(Err(e)),
    };
    let sid = global().next_sid.fetch_add(1, Ordering::Relaxed);
    let mut inner = ctx.inner.lock();
    Some(register(ctx, &mut inner, Sock::new(sid, a, b, nonblock)))
}

// ---------------------------------------------------------------------------
// Leaving TAS: the socket becomes a kernel socket under the same numbers.

fn kernel_socket_for(s: &Sock) -> Res<c_int> {
    let k = if s.shadow >= 0 {
        s.shadow
    } else {
        // SAFETY: plain socket call.
        check(unsafe {
            real::socket::get()(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
        })?
    };
    opts::apply_to_kernel(k, &s.opts);
    let fl = libc::O_RDWR | if s.nonblock { libc::O_NONBLOCK } else { 0 };
    let _ = r_fcntl(k, libc::F_SETFL, fl as usize);
    Ok(k)
}

/// Puts `k` under every fd number of `s` (keeping each number's
/// close-on-exec flag) and restores epoll registrations.
fn replace_file(s: &Sock, k: c_int) -> Res<()> {
    for &fd in &s.fds {
        let cloexec = r_fcntl(fd, libc::F_GETFD, 0)
            .map(|f| f & libc::FD_CLOEXEC != 0)
            .unwrap_or(false);
        // SAFETY: dup3 onto a number we manage.
        check(unsafe { real::dup3::get()(k, fd, if cloexec { libc::O_CLOEXEC } else { 0 }) })?;
    }
    for (epfd, fd, ev) in &s.epoll_regs {
        let mut ev = *ev;
        // SAFETY: valid epoll_event.
        unsafe { real::epoll_ctl::get()(*epfd, libc::EPOLL_CTL_ADD, *fd, &mut ev) };
    }
    Ok(())
}

/// Turns TAS socket `sid` into a kernel TCP socket with the same fd
/// numbers, options and epoll registrations (for loopback and kernel-owned
/// addresses).
fn to_kernel(ctx: usize, inner: &mut Inner, sid: u64) -> Res<()> {
    let g = global();
    let s = inner.socks.get(&sid).ok_or(libc::EBADF)?;
    let k = kernel_socket_for(s)?;
    if let Err(e) = replace_file(s, k) {
        if k != s.shadow {
            r_close(k);
        }
        return Err(e);
    }
    let s = inner.socks.remove(&sid).expect("present");
    r_close(k);
    for &fd in &s.fds {
        g.set_fd(fd, 0);
    }
    if s.sig.b >= 0 {
        g.set_fd(s.sig.b, 0);
        r_close(s.sig.b);
    }
    if s.shadow >= 0 {
        g.set_fd(s.shadow, 0);
    }
    unregister_port(ctx, &s);
    if g.cfg.debug {
        sys::log(&format!("fd {} moved to the kernel stack", s.a));
    }
    Ok(())
}

/// After a failed connect the pair is spent (B closed): a new attempt gets
/// a new pair under the same numbers.
fn renew_pair(inner: &mut Inner, sid: u64) -> Res<()> {
    let g = global();
    let s = inner.socks.get_mut(&sid).ok_or(libc::EBADF)?;
    let (a, b) = create_pair(s.nonblock, true)?;
    if let Err(e) = replace_file(s, a) {
        r_close(a);
        r_close(b);
        return Err(e);
    }
    r_close(a);
    if s.sig.b >= 0 {
        g.set_fd(s.sig.b, 0);
        r_close(s.sig.b);
    }
    s.sig = Sig::new(b);
    g.set_fd(b, T_INTERNAL);
    s.st = St::Fresh;
    s.bsd = Bsd::Unconnected;
    s.so_error = 0;
    s.err_taken = false;
    s.shut_rd = false;
    s.shut_wr = false;
    s.disconnected = false;
    Ok(())
}

// ---------------------------------------------------------------------------
// Ports.

fn port_conflict(ports: &Ports, me: (usize, u64), ip: u32, port: u16, o: &Opts) -> bool {
    let Some(v) = ports.map.get(&port) else {
        return false;
    };
    v.iter().any(|u| {
        if u.sock == me {
            return false;
        }
        if u.ip != 0 && ip != 0 && u.ip != ip {
            return false;
        }
        let both_reuseaddr = o.reuseaddr && u.reuseaddr && !u.listening;
        let both_reuseport = o.reuseport && u.reuseport;
        !(both_reuseaddr || both_reuseport)
    })
}

fn register_port(ctx: usize, s: &Sock, ip: u32, port: u16) {
    let mut p = global().ports.lock();
    p.map.entry(port).or_default().push(PortUse {
        sock: (ctx, s.id),
        ip,
        reuseaddr: s.opts.reuseaddr,
        reuseport: s.opts.reuseport,
        listening: false,
    });
}

fn unregister_port(ctx: usize, s: &Sock) {
    if !s.port_registered {
        return;
    }
    let mut p = global().ports.lock();
    if let Some(v) = p.map.get_mut(&s.local.1) {
        v.retain(|u| u.sock != (ctx, s.id));
        if v.is_empty() {
            p.map.remove(&s.local.1);
        }
    }
}

fn set_port_listening(ctx: usize, s: &Sock, on: bool) {
    let mut p = global().ports.lock();
    if let Some(v) = p.map.get_mut(&s.local.1) {
        for u in v.iter_mut() {
            if u.sock == (ctx, s.id) {
                u.listening = on;
                u.reuseaddr = s.opts.reuseaddr;
                u.reuseport = s.opts.reuseport;
            }
        }
    }
}

fn pick_port(ctx: usize, s: &Sock, ip: u32) -> Res<u16> {
    let ports = global().ports.lock();
    let span = (EPHEMERAL.1 - EPHEMERAL.0) as u64 + 1;
    let mut x = sys::monotonic_ns() ^ (s.id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for _ in 0..span {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let p = EPHEMERAL.0 + ((x >> 33) % span) as u16;
        if !ports.map.contains_key(&p) && !port_conflict(&ports, (ctx, s.id), ip, p, &s.opts) {
            return Ok(p);
        }
    }
    Err(libc::EADDRINUSE)
}

// ---------------------------------------------------------------------------
// bind / listen / accept / connect.

pub fn bind(ctx: &'static Ctx, sid: u64, addr: *const sockaddr, len: socklen_t) -> Res<Option<()>> {
    // Linux's order of checks: length, family, address, port, state.
    if addr.is_null() {
        return Err(libc::EFAULT);
    }
    if (len as usize) < std::mem::size_of::<libc::sockaddr_in>() {
        return Err(libc::EINVAL);
    }
    let (fam, ip, port) = parse_in(addr, len)?;
    if fam != libc::AF_INET && !(fam == libc::AF_UNSPEC && ip == 0) {
        return Err(libc::EAFNOSUPPORT);
    }
    if orphan(ctx) {
        return Err(libc::EINVAL);
    }
    let mut inner = ctx.inner.lock();
    let tip = tas_ip(&inner);
    let kernel = ip != 0 && Some(ip) != tip && kernel_local(ip);
    if ip != 0 && !kernel && tip.is_some_and(|t| t != ip) {
        return Err(libc::EADDRNOTAVAIL);
    }
    // SAFETY: geteuid has no preconditions.
    if port != 0 && port < 1024 && unsafe { libc::geteuid() } != 0 {
        return Err(libc::EACCES);
    }
    let s = inner.socks.get(&sid).ok_or(libc::EBADF)?;
    if s.st != St::Fresh || s.local.1 != 0 {
        return Err(libc::EINVAL);
    }
    if kernel {
        // Loopback or a kernel-owned address: the kernel serves it.
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

pub fn listen(ctx: &'static Ctx, sid: u64, backlog: c_int) -> Res<()> {
    if orphan(ctx) {
        return Err(libc::EINVAL);
    }
    let mut inner = ctx.inner.lock();
    let s = inner.socks.get(&sid).ok_or(libc::EBADF)?;
    match s.st {
        St::Listening(_) => return Ok(()),
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
    let r = r.map_err(|e| e.raw_os_error().unwrap_or(libc::ENETDOWN));
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
    set_port_listening(ctx.idx, s, true);
    inner.sync(sid);
    inner.after();
    Ok(())
}

pub fn accept(
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
        let (nonblock, a) = (s.nonblock, s.a);
        if dl.is_none() {
            dl = Some(deadline(s.opts.rcvtimeo));
        }
        let lopts = s.opts.clone();
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
                write_in(addr, len, info.remote_ip, info.remote_port)?;
                return Ok(fd);
            }
            Ok(None) => {
                inner.sync(sid);
                inner.after();
            }
            Err(e) => {
                inner.after();
                return Err(e.raw_os_error().unwrap_or(libc::EIO));
            }
        }
        drop(inner);
        if nonblock {
            return Err(libc::EAGAIN);
        }
        wait_fd(a, libc::POLLIN, dl.flatten())?;
    }
}

/// Some(()) when done on TAS; None when the socket moved to the kernel and
/// the caller must call the real connect.
pub fn connect(
    ctx: &'static Ctx,
    sid: u64,
    addr: *const sockaddr,
    len: socklen_t,
) -> Res<Option<()>> {
    let (fam, ip, port) = parse_in(addr, len)?;
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
    if (len as usize) < std::mem::size_of::<libc::sockaddr_in>() {
        return Err(libc::EINVAL);
    }
    if fam != libc::AF_INET {
        return Err(libc::EAFNOSUPPORT);
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
    let tip = tas_ip(&inner);
    if ip == 0 || (Some(ip) != tip && kernel_local(ip)) {
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
        .map_err(|e| e.raw_os_error().unwrap_or(libc::ENETDOWN))?;
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
                return Err(if e != 0 { e } else { libc::ECONNABORTED });
            }
            St::Connecting(_) => {}
            _ => return Err(libc::ECONNABORTED),
        }
        let a = s.a;
        drop(inner);
        match wait_fd(a, libc::POLLOUT, dl) {
            Ok(()) => {}
            Err(libc::EAGAIN) => return Err(libc::EINPROGRESS),
            Err(e) => return Err(e),
        }
    }
}

// ---------------------------------------------------------------------------
// Data.

/// Consumes the pending error (and clears EPOLLERR on A).
fn take_error(s: &mut Sock) -> c_int {
    let e = std::mem::take(&mut s.so_error);
    if e != 0 {
        Sig::clear_err(s.a);
    }
    e
}

/// What a data call does after one look at the socket.
enum Step {
    Done(Res<usize>),
    /// Wait for readiness on `A` (this fd), then look again.
    Wait(c_int),
    /// Look again at once.
    Again,
}

/// `recv` family. With `MSG_TRUNC` the data is dropped (Linux TCP).
pub fn recv(ctx: &'static Ctx, sid: u64, bufs: &mut [IoSliceMut<'_>], flags: c_int) -> Res<usize> {
    if flags & libc::MSG_OOB != 0 {
        return Err(libc::EINVAL);
    }
    if flags & libc::MSG_ERRQUEUE != 0 {
        return Err(libc::EAGAIN);
    }
    if orphan(ctx) {
        return Err(libc::ENOTCONN);
    }
    let want: usize = bufs.iter().map(|b| b.len()).sum();
    let peek = flags & libc::MSG_PEEK != 0;
    let waitall = flags & libc::MSG_WAITALL != 0 && !peek;
    let mut got = 0usize;
    let mut dl = None;
    loop {
        let mut inner = ctx.inner.lock();
        inner.tas.poll_events();
        let step = {
            let Inner { tas, socks, .. } = &mut *inner;
            let s = socks.get_mut(&sid).ok_or(libc::EBADF)?;
            let nonblock = s.nonblock || flags & libc::MSG_DONTWAIT != 0;
            if dl.is_none() {
                dl = Some(deadline(s.opts.rcvtimeo));
            }
            take_conn_error(s, tas);
            match s.st {
                St::Fresh | St::Listening(_) => Step::Done(Err(libc::ENOTCONN)),
                St::Failed => {
                    // After connect() reported the failure Linux has
                    // disconnected the socket (ENOTCONN); after SO_ERROR
                    // only, its receive side is shut (EOF).
                    let e = take_error(s);
                    Step::Done(if e != 0 {
                        Err(e)
                    } else if s.disconnected {
                        Err(libc::ENOTCONN)
                    } else {
                        Ok(0)
                    })
                }
                St::Connecting(_) if nonblock => Step::Done(Err(libc::EAGAIN)),
                St::Connecting(_) => Step::Wait(s.a),
                St::Connected(c) => {
                    let (avail, fin) = match tas.conn(c) {
                        Some(cn) => (cn.rx_available() as usize, cn.rx_fin()),
                        None => (0, true),
                    };
                    if want == 0 {
                        Step::Done(Ok(0))
                    } else if avail > 0 {
                        let r = if peek {
                            tas.peek_vectored(c, bufs)
                        } else if flags & libc::MSG_TRUNC != 0 {
                            tas.discard(c, want - got)
                        } else {
                            let mut sub = advance_mut(bufs, got);
                            tas.recv_vectored(c, &mut sub)
                        };
                        match r {
                            Ok(n) => {
                                got += n;
                                if !waitall || got >= want || nonblock {
                                    Step::Done(Ok(got))
                                } else {
                                    Step::Again
                                }
                            }
                            Err(_) => Step::Done(Err(libc::EIO)),
                        }
                    } else if got > 0 && (fin || s.err_taken || s.shut_rd) {
                        Step::Done(Ok(got))
                    } else if fin {
                        // Linux reports EOF before a pending error after FIN.
                        Step::Done(Ok(0))
                    } else {
                        let e = take_error(s);
                        if e != 0 {
                            Step::Done(if got > 0 { Ok(got) } else { Err(e) })
                        } else if s.err_taken || s.shut_rd {
                            Step::Done(Ok(got))
                        } else if nonblock {
                            Step::Done(if got > 0 { Ok(got) } else { Err(libc::EAGAIN) })
                        } else {
                            Step::Wait(s.a)
                        }
                    }
                }
            }
        };
        inner.sync(sid);
        inner.after();
        drop(inner);
        match step {
            Step::Done(r) => return r,
            Step::Again => continue,
            Step::Wait(a) => match wait_fd(a, libc::POLLIN, dl.flatten()) {
                Ok(()) => {}
                Err(_) if got > 0 => return Ok(got),
                Err(e) => return Err(e),
            },
        }
    }
}

/// The part of `bufs` after the first `skip` bytes.
fn advance_mut<'a, 'b>(bufs: &'a mut [IoSliceMut<'b>], mut skip: usize) -> Vec<IoSliceMut<'a>> {
    let mut out = Vec::with_capacity(bufs.len());
    for b in bufs.iter_mut() {
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        out.push(IoSliceMut::new(&mut b[skip..]));
        skip = 0;
    }
    out
}

fn advance<'a>(bufs: &'a [IoSlice<'a>], mut skip: usize) -> Vec<IoSlice<'a>> {
    let mut out = Vec::with_capacity(bufs.len());
    for b in bufs {
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        out.push(IoSlice::new(&b[skip..]));
        skip = 0;
    }
    out
}

/// Where the bytes of a send come from.
pub enum Src<'a> {
    Bufs(&'a [IoSlice<'a>]),
    /// sendfile: (file fd, offset or None for the file position).
    File(c_int, Option<&'a mut i64>),
}

pub fn send(
    ctx: &'static Ctx,
    sid: u64,
    mut src: Src<'_>,
    count: usize,
    flags: c_int,
) -> Res<usize> {
    let nosig = flags & libc::MSG_NOSIGNAL != 0;
    if flags & libc::MSG_OOB != 0 {
        return Err(libc::EOPNOTSUPP);
    }
    if orphan(ctx) {
        return Err(libc::ENOTCONN);
    }
    let mut sent = 0usize;
    let mut dl = None;
    let mut pipe = false;
    let is_file = matches!(src, Src::File(..));
    loop {
        let mut inner = ctx.inner.lock();
        inner.tas.poll_events();
        let step = {
            let Inner { tas, socks, .. } = &mut *inner;
            let s = socks.get_mut(&sid).ok_or(libc::EBADF)?;
            let nonblock = s.nonblock || flags & libc::MSG_DONTWAIT != 0;
            if dl.is_none() {
                dl = Some(deadline(s.opts.sndtimeo));
            }
            take_conn_error(s, tas);
            match s.st {
                St::Fresh | St::Listening(_) => {
                    pipe = true;
                    Step::Done(Err(libc::EPIPE))
                }
                St::Failed => {
                    let e = take_error(s);
                    if e == 0 {
                        pipe = true;
                    }
                    Step::Done(Err(if e != 0 { e } else { libc::EPIPE }))
                }
                St::Connecting(_) if nonblock => Step::Done(Err(libc::EAGAIN)),
                St::Connecting(_) => Step::Wait(s.a),
                St::Connected(c) => {
                    let e = take_error(s);
                    if e != 0 {
                        Step::Done(if sent > 0 { Ok(sent) } else { Err(e) })
                    } else if s.err_taken || s.shut_wr {
                        if sent > 0 {
                            Step::Done(Ok(sent))
                        } else {
                            pipe = true;
                            Step::Done(Err(libc::EPIPE))
                        }
                    } else if count == 0 {
                        Step::Done(Ok(0))
                    } else {
                        let r = match &mut src {
                            Src::Bufs(b) => {
                                let sub = advance(b, sent);
                                tas.send_vectored(c, &sub)
                            }
                            Src::File(ffd, off) => {
                                let ffd = *ffd;
                                tas.send_fill(c, count - sent, |dst| {
                                    let r = match off {
                                        // SAFETY: reading into ring memory we were given.
                                        Some(o) => unsafe {
                                            let r = real::pread64::get()(
                                                ffd,
                                                dst.as_mut_ptr() as *mut c_void,
                                                dst.len(),
                                                **o,
                                            );
                                            if r > 0 {
                                                **o += r as i64;
                                            }
                                            r
                                        },
                                        // SAFETY: as above.
                                        None => unsafe {
                                            real::read::get()(
                                                ffd,
                                                dst.as_mut_ptr() as *mut c_void,
                                                dst.len(),
                                            )
                                        },
                                    };
                                    if r < 0 {
                                        Err(std::io::Error::from_raw_os_error(sys::errno()))
                                    } else {
                                        Ok(r as usize)
                                    }
                                })
                            }
                        };
                        match r {
                            // End of the file (sendfile).
                            Ok(0) if is_file => Step::Done(Ok(sent)),
                            Ok(n) => {
                                sent += n;
                                if sent >= count || nonblock {
                                    Step::Done(Ok(sent))
                                } else {
                                    Step::Again
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                if nonblock {
                                    Step::Done(if sent > 0 {
                                        Ok(sent)
                                    } else {
                                        Err(libc::EAGAIN)
                                    })
                                } else {
                                    Step::Wait(s.a)
                                }
                            }
                            Err(e) => {
                                let code = e.raw_os_error().unwrap_or(libc::EIO);
                                Step::Done(if sent > 0 { Ok(sent) } else { Err(code) })
                            }
                        }
                    }
                }
            }
        };
        inner.sync(sid);
        inner.after();
        drop(inner);
        match step {
            Step::Done(r) => {
                if pipe && !nosig {
                    sigpipe();
                }
                return r;
            }
            Step::Again => continue,
            Step::Wait(a) => match wait_fd(a, libc::POLLOUT, dl.flatten()) {
                Ok(()) => {}
                Err(_) if sent > 0 => return Ok(sent),
                Err(e) => return Err(e),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// shutdown / close.

pub fn shutdown(ctx: &'static Ctx, sid: u64, how: c_int) -> Res<()> {
    if !(0..=2).contains(&how) {
        return Err(libc::EINVAL);
    }
    if orphan(ctx) {
        return Err(libc::ENOTCONN);
    }
    let mut inner = ctx.inner.lock();
    let rd = how == libc::SHUT_RD || how == libc::SHUT_RDWR;
    let wr = how == libc::SHUT_WR || how == libc::SHUT_RDWR;
    let st = inner.socks.get(&sid).ok_or(libc::EBADF)?.st;
    let closed = match st {
        St::Connected(c) => match inner.tas.conn(c) {
            Some(cn) => cn.error().is_some() || (cn.rx_fin() && cn.fin_acked()),
            None => true,
        },
        _ => false,
    };
    let r = match st {
        // Reset, or both sides closed: Linux's socket is in CLOSE.
        St::Connected(_) if closed => Err(libc::ENOTCONN),
        St::Connected(c) => {
            let s = inner.socks.get_mut(&sid).ok_or(libc::EBADF)?;
            if rd {
                s.shut_rd = true;
            }
            let send_fin = wr && !s.shut_wr && !s.err_taken;
            if wr {
                s.shut_wr = true;
            }
            if s.bsd == Bsd::Connecting {
                s.bsd = Bsd::Connected;
            }
            if send_fin {
                let _ = inner.tas.shutdown_write(c);
            }
            Ok(())
        }
        St::Listening(l) => {
            if rd {
                let _ = inner.tas.unlisten(l);
                inner.by_listener.remove(&l);
                let s = inner.socks.get_mut(&sid).ok_or(libc::EBADF)?;
                s.st = St::Fresh;
                set_port_listening(ctx.idx, s, false);
            }
            Ok(())
        }
        St::Connecting(req) => {
            // Linux disconnects a connecting socket.
            inner.connecting.remove(&req);
            inner.zombies.push(req);
            ctx.tick.store(true, Ordering::Relaxed);
            let s = inner.socks.get_mut(&sid).ok_or(libc::EBADF)?;
            s.st = St::Fresh;
            s.bsd = Bsd::Unconnected;
            Ok(())
        }
        St::Fresh | St::Failed => Err(libc::ENOTCONN),
    };
    inner.sync(sid);
    inner.after();
    r
}

/// Closes fd number `fd` of socket `sid`; the socket itself goes when its
/// last number does.
pub fn close(ctx: &'static Ctx, sid: u64, fd: c_int) -> Res<()> {
    let g = global();
    let mut inner = ctx.inner.lock();
    let Some(s) = inner.socks.get_mut(&sid) else {
        g.set_fd(fd, 0);
        drop(inner);
        // SAFETY: closing the app's descriptor as it asked.
        return check(unsafe { real::close::get()(fd) }).map(|_| ());
    };
    s.fds.retain(|&x| x != fd);
    s.epoll_regs.retain(|r| r.1 != fd);
    g.set_fd(fd, 0);
    if let Some(&other) = s.fds.first() {
        s.a = other;
        drop(inner);
        // SAFETY: as above.
        return check(unsafe { real::close::get()(fd) }).map(|_| ());
    }
    let s = inner.socks.remove(&sid).expect("present");
    if !orphan(ctx) {
        release(ctx, &mut inner, &s);
        inner.after();
    }
    if s.sig.b >= 0 {
        g.set_fd(s.sig.b, 0);
        r_close(s.sig.b);
    }
    if s.shadow >= 0 {
        g.set_fd(s.shadow, 0);
        r_close(s.shadow);
    }
    let linger_wait = match (s.st, s.opts.linger) {
        (St::Connected(c), Some(l)) if l.l_onoff != 0 && l.l_linger > 0 && !s.nonblock => {
            Some((c, l.l_linger))
        }
        _ => None,
    };
    drop(inner);
    if let Some((c, secs)) = linger_wait {
        linger(ctx, c, secs);
    }
    // SAFETY: as above.
    check(unsafe { real::close::get()(fd) }).map(|_| ())
}

/// TAS-level teardown of a socket that no fd refers to any more.
fn release(ctx: &'static Ctx, inner: &mut Inner, s: &Sock) {
    unregister_port(ctx.idx, s);
    match s.st {
        St::Fresh | St::Failed => {}
        St::Listening(l) => {
            let _ = inner.tas.unlisten(l);
            inner.by_listener.remove(&l);
        }
        St::Connecting(req) => {
            inner.connecting.remove(&req);
            inner.zombies.push(req);
            ctx.tick.store(true, Ordering::Relaxed);
        }
        St::Connected(c) => {
            inner.by_flow.remove(&c);
            let (unread, err) = match inner.tas.conn(c) {
                Some(cn) => (cn.rx_available() > 0, cn.error().is_some()),
                None => (false, true),
            };
            let abort = matches!(s.opts.linger, Some(l) if l.l_onoff != 0 && l.l_linger == 0);
            // Linux resets instead of closing when unread data is dropped.
            if (abort || unread) && !err {
                let _ = inner.tas.abort(c);
            } else {
                let _ = inner.tas.close(c);
            }
        }
    }
}

/// SO_LINGER with a timeout: wait until our FIN is acknowledged.
fn linger(ctx: &'static Ctx, c: tas::ConnId, secs: c_int) {
    let end = sys::monotonic_ns() + secs as u64 * 1_000_000_000;
    while sys::monotonic_ns() < end {
        {
            let mut inner = ctx.inner.lock();
            inner.process();
            match inner.tas.conn(c) {
                Some(cn) if !cn.fin_acked() && cn.error().is_none() => {}
                _ => return,
            }
        }
        // SAFETY: plain sleep.
        unsafe { libc::usleep(1000) };
    }
}

// ---------------------------------------------------------------------------
// Names.

pub fn getsockname(
    ctx: &'static Ctx,
    sid: u64,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> Res<()> {
    let inner = ctx.inner.lock();
    let s = inner.socks.get(&sid).ok_or(libc::EBADF)?;
    let (ip, port) = s.local;
    drop(inner);
    if len.is_null() {
        return Err(libc::EFAULT);
    }
    write_in(addr, len, ip, port)
}

pub fn getpeername(
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
    drop(inner);
    if len.is_null() {
        return Err(libc::EFAULT);
    }
    write_in(addr, len, ip, port)
}

// ---------------------------------------------------------------------------
// Descriptors.

/// Records that `newfd` now also refers to socket `sid`.
pub fn add_fd(ctx: &'static Ctx, sid: u64, newfd: c_int) -> Res<c_int> {
    let g = global();
    if !g.fd_fits(newfd) {
        r_close(newfd);
        return Err(libc::EMFILE);
    }
    let mut inner = ctx.inner.lock();
    match inner.socks.get_mut(&sid) {
        Some(s) => {
            s.fds.push(newfd);
            g.set_fd(newfd, encode(ctx.idx, sid));
            Ok(newfd)
        }
        None => Ok(newfd),
    }
}

/// Before `newfd` is replaced by dup2/dup3: forget what it was. If it was
/// the last number of a TAS socket, that socket is closed (TAS side); the
/// number itself is closed by the dup. For a shim-internal number, the
/// shim's descriptor is moved elsewhere first.
pub fn before_replace(newfd: c_int) -> Res<()> {
    match kind(newfd) {
        Kind::Kernel => Ok(()),
        Kind::Internal => relocate_internal(newfd),
        Kind::Sock(ctx, sid) => {
            let g = global();
            let mut inner = ctx.inner.lock();
            let Some(s) = inner.socks.get_mut(&sid) else {
                g.set_fd(newfd, 0);
                return Ok(());
            };
            s.fds.retain(|&x| x != newfd);
            s.epoll_regs.retain(|r| r.1 != newfd);
            g.set_fd(newfd, 0);
            if let Some(&o) = s.fds.first() {
                s.a = o;
                return Ok(());
            }
            let s = inner.socks.remove(&sid).expect("present");
            if !orphan(ctx) {
                release(ctx, &mut inner, &s);
                inner.after();
            }
            if s.sig.b >= 0 {
                g.set_fd(s.sig.b, 0);
                r_close(s.sig.b);
            }
            if s.shadow >= 0 {
                g.set_fd(s.shadow, 0);
                r_close(s.shadow);
            }
            Ok(())
        }
    }
}

/// The app wants number `fd`, which is one of our B ends or shadow sockets:
/// move ours. The service connection's own fds cannot move (EBUSY).
fn relocate_internal(fd: c_int) -> Res<()> {
    let g = global();
    for c in (0..MAX_SCAN).filter_map(|i| g.ctx(i)) {
        let mut inner = c.inner.lock();
        for s in inner.socks.values_mut() {
            if s.sig.b == fd || s.shadow == fd {
                let n = r_fcntl(fd, libc::F_DUPFD_CLOEXEC, 0)?;
                if !g.fd_fits(n) {
                    r_close(n);
                    return Err(libc::EMFILE);
                }
                g.set_fd(n, T_INTERNAL);
                g.set_fd(fd, 0);
                if s.sig.b == fd {
                    s.sig.b = n;
                } else {
                    s.shadow = n;
                }
                r_close(fd);
                return Ok(());
            }
        }
    }
    Err(libc::EBUSY)
}

const MAX_SCAN: usize = crate::ctx::MAX_CTX;

pub fn set_nonblock(ctx: &'static Ctx, sid: u64, on: bool) {
    let mut inner = ctx.inner.lock();
    if let Some(s) = inner.socks.get_mut(&sid) {
        s.nonblock = on;
    }
}

pub fn epoll_track(epfd: c_int, op: c_int, fd: c_int, ev: *const libc::epoll_event) {
    let Kind::Sock(ctx, sid) = kind(fd) else {
        return;
    };
    let g = global();
    let cur = g.fd(epfd);
    if cur == 0 {
        g.set_fd(epfd, T_EPOLL);
    }
    let mut inner = ctx.inner.lock();
    let Some(s) = inner.socks.get_mut(&sid) else {
        return;
    };
    s.epoll_regs.retain(|r| !(r.0 == epfd && r.1 == fd));
    if (op == libc::EPOLL_CTL_ADD || op == libc::EPOLL_CTL_MOD) && !ev.is_null() {
        // SAFETY: the app passed a valid epoll_event.
        s.epoll_regs.push((epfd, fd, unsafe { *ev }));
    }
}

/// FIONREAD / SIOCOUTQ.
pub fn ioctl_queue(ctx: &'static Ctx, sid: u64, outq: bool) -> Res<c_int> {
    let mut inner = ctx.inner.lock();
    inner.tas.poll_events();
    let s = inner.socks.get(&sid).ok_or(libc::EBADF)?;
    let r = match s.st {
        St::Listening(_) => Err(libc::EINVAL),
        St::Connected(c) => match inner.tas.conn(c) {
            Some(cn) if outq => Ok((cn.tx_len() - cn.tx_free()) as c_int),
            Some(cn) => Ok(cn.rx_available() as c_int),
            None => Ok(0),
        },
        _ => Ok(0),
    };
    inner.after();
    r
}
