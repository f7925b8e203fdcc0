//! Passing TAS sockets to other processes with `SCM_RIGHTS`.
//!
//! A TAS socket's fd is one end (`A`) of a Unix socket pair, so the kernel
//! passes it like any file; what the receiver needs is the TAS side. The
//! interposed `sendmsg` (and `sendmmsg`) of a kernel socket finds the TAS
//! sockets among the message's `SCM_RIGHTS` fds ([`before_send`]) and
//! registers each with tasd before the real call (`tas::Tas::xfer`: the
//! fd itself goes along, the key a receiver must present, with the
//! socket's description); if the real call fails, the registrations are
//! cancelled ([`after_send`]). From then on the sender's copy is *shared*
//! (its close lets go of its reference only, as after a fork), a
//! connection is taken back before its next use, and a listener it never
//! accepted on gets no new connections while the receiver accepts.
//!
//! The interposed `recvmsg` (and `recvmmsg`) of a kernel socket looks at
//! the fds that arrived ([`after_recv`]): each that may be a TAS socket's
//! `A` end (a Unix stream socket with the minimal send buffer the shim
//! gives `A`) is presented to tasd (`tas::Tas::xfer_claim`); if a transfer
//! of that file is pending and the sender is the same user (or this
//! process is root), the socket is taken over under the received fd
//! number, as a forked child takes over an inherited one: a context
//! sharing the sender's region, a fresh readiness pair under the number
//! (its close-on-exec flag, `MSG_CMSG_CLOEXEC`, kept) and `ADOPT`. Another
//! user's socket is refused: the number becomes a socket whose first use
//! fails with `EACCES` (then `ENOTCONN`), with a `TAS_PRELOAD_DEBUG` line.
//! `MSG_PEEK` claims nothing (the fds of a peek are copies of the ones the
//! real receive installs).

use crate::ctx::Ctx;
use crate::exec::{take_over, Entry, What};
use crate::fdtab::{encode, Kind};
use crate::global::global;
use crate::sock::St;
use crate::sys::{self, r_fcntl, real};
use libc::{c_int, msghdr};
use std::sync::atomic::Ordering;

/// Transfers registered for one `sendmsg`: (context, transfer id).
#[derive(Default)]
pub struct Sent(Vec<(&'static Ctx, u64)>);

impl Sent {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The `SCM_RIGHTS` fds of a message.
///
/// # Safety
///
/// `msg` points to a readable msghdr whose control buffer (if any) is
/// readable for `msg_controllen` bytes.
unsafe fn rights(msg: *const msghdr) -> Vec<c_int> {
    let mut out = Vec::new();
    // SAFETY: readable (contract).
    let m = unsafe { &*msg };
    if m.msg_control.is_null() || (m.msg_controllen as usize) < std::mem::size_of::<libc::cmsghdr>()
    {
        return out;
    }
    // SAFETY: CMSG_FIRSTHDR/NXTHDR stay within msg_control's
    // msg_controllen bytes (contract) and return null past the end.
    let mut h = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !h.is_null() {
        // SAFETY: a header inside the buffer (above).
        let c = unsafe { std::ptr::read_unaligned(h) };
        if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN/CMSG_DATA compute within the header.
            let hdr = unsafe { libc::CMSG_LEN(0) } as usize;
            let end = m.msg_control as usize + m.msg_controllen as usize;
            // SAFETY: as above.
            let data = unsafe { libc::CMSG_DATA(h) } as usize;
            let len = (c.cmsg_len as usize)
                .saturating_sub(hdr)
                .min(end.saturating_sub(data));
            for i in 0..len / std::mem::size_of::<c_int>() {
                // SAFETY: within the header's data, inside the buffer.
                out.push(unsafe { std::ptr::read_unaligned((data as *const c_int).add(i)) });
            }
        }
        // SAFETY: as above.
        h = unsafe { libc::CMSG_NXTHDR(msg, h) };
    }
    out
}

/// Before the real `sendmsg` of `msg` on a kernel socket: registers the
/// TAS sockets among its `SCM_RIGHTS` fds. Err(errno): the call fails
/// with it and nothing stays registered.
///
/// # Safety
///
/// As [`rights`].
pub unsafe fn before_send(msg: *const msghdr) -> Result<Sent, c_int> {
    // A thread under a seccomp filter makes no call a sandbox may forbid.
    if msg.is_null() || sys::restricted() {
        return Ok(Sent::default());
    }
    // SAFETY: the caller's contract.
    let fds = unsafe { rights(msg) };
    let mut sent = Sent::default();
    if fds.is_empty() {
        return Ok(sent);
    }
    let g = global();
    let mut done: Vec<(usize, u64)> = Vec::new();
    for fd in fds {
        // Sockets inherited across fork or exec are taken over first: their
        // state is this process's to describe.
        let Kind::Sock(ctx, sid) = crate::fdtab::kind(fd) else {
            continue;
        };
        if done.contains(&(ctx.idx, sid)) {
            continue;
        }
        let _e = sys::Enter::new();
        let r = if ctx.gen != g.gen.load(Ordering::Acquire) {
            Err((
                libc::EOPNOTSUPP,
                "it is the parent process's (inherited, not taken over)".to_string(),
            ))
        } else {
            register(ctx, sid, fd)
        };
        match r {
            Ok(id) => {
                done.push((ctx.idx, sid));
                sent.0.push((ctx, id));
            }
            Err((e, why)) => {
                crate::debug::say(
                    "scm-send",
                    &format!(
                        "sendmsg: TAS socket fd {fd} cannot be passed with SCM_RIGHTS: {why} ({})",
                        crate::debug::errno_name(e)
                    ),
                );
                after_send(sent, false);
                return Err(e);
            }
        }
    }
    Ok(sent)
}

/// The family of a passed socket as its `XFER` note: bit 0 an `AF_INET6`
/// socket (its names are IPv4-mapped `sockaddr_in6`), bit 1 `IPV6_V6ONLY`.
fn note_of(v6: bool, v6only: bool) -> u8 {
    u8::from(v6) | u8::from(v6only) << 1
}

/// The inverse of [`note_of`].
fn family_of(note: u8) -> (bool, bool) {
    (note & 1 != 0, note & 2 != 0)
}

/// Registers socket `sid` of `ctx` (through its fd `fd`) for transfer.
fn register(ctx: &'static Ctx, sid: u64, fd: c_int) -> Result<u64, (c_int, String)> {
    let g = global();
    let mut inner = ctx.inner.lock();
    let s = inner
        .socks
        .get(&sid)
        .ok_or((libc::EBADF, "gone".to_string()))?;
    let (st, local, port_registered, interest) = (s.st, s.local, s.port_registered, s.interest);
    let note = note_of(s.v6, s.v6only);
    let r = match st {
        St::Connected(c) => inner.tas.xfer(fd, Some(c), None, note),
        St::Listening(l) => inner.tas.xfer(fd, None, Some((l, local.0, local.1)), note),
        St::Fresh if local.1 == 0 && !port_registered => inner.tas.xfer(fd, None, None, note),
        St::Fresh => {
            return Err((
                libc::EOPNOTSUPP,
                "a bound socket that does not listen".into(),
            ))
        }
        St::Connecting(_) => return Err((libc::EOPNOTSUPP, "a connect is in progress".into())),
        St::Failed => return Err((libc::EOPNOTSUPP, "its connect failed".into())),
    };
    let id = r.map_err(|e| {
        let n = e.raw_os_error().unwrap_or(libc::EIO);
        (n, format!("tasd refused the transfer: {e}"))
    })?;
    let s = inner.socks.get_mut(&sid).expect("present");
    s.shared = true;
    match st {
        // The receiver may take it over: the next use here takes it back.
        St::Connected(c) => inner.tas.set_taken(c),
        // A listener this process never accepted on is not handed
        // connections while the receiver accepts (a socket-activation
        // manager, an old master).
        St::Listening(l) if !interest => {
            let _ = inner.tas.set_accepting(l, false);
            g.quiet.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
    inner.after();
    Ok(id)
}

/// After the real `sendmsg`: if it failed, the transfers are cancelled.
pub fn after_send(sent: Sent, ok: bool) {
    if ok {
        return;
    }
    let _e = sys::Enter::new();
    for (ctx, id) in sent.0 {
        ctx.inner.lock().tas.xfer_cancel(id);
    }
}

/// Whether received fd `fd` may be a TAS socket's `A` end: a Unix stream
/// socket with a minimal send buffer (the shim sets 1; the kernel's
/// minimum is about 4.5 KiB, its default 208 KiB).
fn candidate(fd: c_int) -> bool {
    let int = |name| {
        let mut v: c_int = 0;
        let mut l = std::mem::size_of::<c_int>() as libc::socklen_t;
        // SAFETY: `v`/`l` are live locals of the sizes given.
        let r = unsafe {
            real::getsockopt::get()(
                fd,
                libc::SOL_SOCKET,
                name,
                &mut v as *mut c_int as *mut libc::c_void,
                &mut l,
            )
        };
        (r == 0).then_some(v)
    };
    int(libc::SO_DOMAIN) == Some(libc::AF_UNIX)
        && int(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
        && int(libc::SO_SNDBUF).is_some_and(|b| b <= 16384)
}

fn file_key(fd: c_int) -> Option<(u64, u64)> {
    // SAFETY: zeroed is a valid stat; fstat writes into the live local.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

/// After a successful `recvmsg` of `msg` on a kernel socket: takes over
/// the TAS sockets among the fds that arrived (see the module docs).
///
/// # Safety
///
/// As [`rights`], for the message the kernel just filled.
pub unsafe fn after_recv(msg: *const msghdr, flags: c_int) {
    if msg.is_null() || flags & libc::MSG_PEEK != 0 || sys::restricted() {
        return;
    }
    // SAFETY: the caller's contract.
    let fds = unsafe { rights(msg) };
    if fds.is_empty() {
        return;
    }
    let g = global();
    if g.cfg.disabled {
        return;
    }
    let _e = sys::Enter::new();
    let saved = sys::errno();
    // Files adopted by this message: (key, fd, context, socket id).
    let mut seen: Vec<((u64, u64), c_int, &'static Ctx, u64)> = Vec::new();
    for fd in fds {
        if !g.fd_fits(fd) || g.fd(fd) != 0 || !candidate(fd) {
            continue;
        }
        let Some(key) = file_key(fd) else { continue };
        if let Some(&(_, _, ctx, sid)) = seen.iter().find(|x| x.0 == key) {
            // The same socket twice: one socket under both numbers.
            add_number(ctx, sid, fd);
            continue;
        }
        if let Some((ctx, sid)) = claim(fd) {
            seen.push((key, fd, ctx, sid));
        }
    }
    sys::set_errno(saved);
}

/// Puts socket `sid` of `ctx` under received fd number `fd` too (its
/// close-on-exec flag kept), as a `dup` would.
fn add_number(ctx: &'static Ctx, sid: u64, fd: c_int) {
    let g = global();
    let ce = r_fcntl(fd, libc::F_GETFD, 0).is_ok_and(|f| f & libc::FD_CLOEXEC != 0);
    let mut inner = ctx.inner.lock();
    let Some(s) = inner.socks.get_mut(&sid) else {
        return;
    };
    // SAFETY: dup3 takes no pointers; s.a is this socket's number, fd the
    // received one.
    if unsafe { real::dup3::get()(s.a, fd, if ce { libc::O_CLOEXEC } else { 0 }) } >= 0 {
        s.fds.push(fd);
        g.set_fd(fd, encode(ctx.idx, sid));
        if s.virt.is_some() {
            crate::vready::demote(s);
        }
        inner.sync(sid);
    }
}

/// The socket of this process that is flow `flow` (or listener `l`)
/// already, if any (a socket passed to a process that has it).
fn existing(flow: Option<u32>, l: Option<u32>) -> Option<(&'static Ctx, u64)> {
    let g = global();
    let gen = g.gen.load(Ordering::Acquire);
    g.live_ctxs()
        .filter(|c| c.gen == gen && !c.dead.load(Ordering::Relaxed))
        .find_map(|c| {
            let inner = c.inner.lock();
            let sid = match (flow, l) {
                (Some(f), _) => inner.by_flow.get(&f).copied(),
                (_, Some(l)) => inner.by_listener.get(&l).copied(),
                _ => None,
            }?;
            Some((c, sid))
        })
}

/// Claims received fd `fd` from tasd and takes the socket over; None when
/// it is not a passed TAS socket (or taking it over failed).
fn claim(fd: c_int) -> Option<(&'static Ctx, u64)> {
    let ctx = crate::ctx::my_ctx()?;
    let r = ctx.inner.lock().tas.xfer_claim(fd);
    let say = |why: String| {
        crate::debug::say(
            "scm-recv",
            &format!("recvmsg: fd {fd} received by SCM_RIGHTS: {why}"),
        );
    };
    let cl = match r {
        Ok(Some(cl)) => cl,
        Ok(None) => return None,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            say("another user's TAS socket: refused; its use fails with EACCES".into());
            return refuse(ctx, fd);
        }
        Err(e) => {
            say(format!("cannot ask tasd whether it is a TAS socket: {e}"));
            return None;
        }
    };
    let known = match &cl.what {
        tas::Passed::Conn(c) => existing(Some(c.info.flow), None),
        tas::Passed::Listener(l, _, _) => existing(None, Some(*l)),
        tas::Passed::Fresh => None,
    };
    if let Some((c, sid)) = known {
        add_number(c, sid, fd);
        return Some((c, sid));
    }
    let (what, region) = match cl.what {
        tas::Passed::Conn(c) => (What::Conn(c.to_words().to_vec()), Some(cl.region)),
        tas::Passed::Listener(l, ip, port) => (What::Listener(l, ip, port), Some(cl.region)),
        tas::Passed::Fresh => (What::Fresh, None),
    };
    let into = match region {
        Some(region) => match alias(region) {
            Ok(c) => c,
            Err(why) => {
                say(format!("cannot attach to the sender's region: {why}"));
                return None;
            }
        },
        None => ctx,
    };
    let (v6, v6only) = family_of(cl.note);
    let e = Entry {
        fds: vec![fd],
        app: cl.region,
        what,
        v6,
    };
    match take_over(into, &e, 0) {
        Ok(sid) => {
            if v6 {
                // A fresh AF_INET6 socket keeps what its sender set.
                if let Some(s) = into.inner.lock().socks.get_mut(&sid) {
                    s.v6only = v6only;
                }
            }
            crate::debug::say(
                "scm-taken",
                &format!("recvmsg: fd {fd}: TAS socket received by SCM_RIGHTS taken over"),
            );
            Some((into, sid))
        }
        Err(why) => {
            say(format!("cannot take the TAS socket over: {why}"));
            None
        }
    }
}

/// This process's context sharing `region` (attached on first need).
fn alias(region: u32) -> Result<&'static Ctx, String> {
    let g = global();
    let gen = g.gen.load(Ordering::Acquire);
    let mut inh = g.inherit.lock();
    if let Some(c) = inh
        .passed
        .get(&region)
        .and_then(|&i| g.ctx(i))
        .filter(|c| c.gen == gen && !c.dead.load(Ordering::Relaxed))
    {
        return Ok(c);
    }
    let path = crate::ctx::my_ctx()
        .map(|c| c.inner.lock().tas.path().to_path_buf())
        .unwrap_or_else(tas::socket_path);
    let c = crate::ctx::attach_alias(&path, region, 0)?;
    inh.passed.insert(region, c.idx);
    Ok(c)
}

/// Another user's socket: `fd` becomes a socket whose first use fails
/// with `EACCES`, then `ENOTCONN`.
fn refuse(ctx: &'static Ctx, fd: c_int) -> Option<(&'static Ctx, u64)> {
    let e = Entry {
        fds: vec![fd],
        app: 0,
        what: What::Fresh,
        v6: false,
    };
    let sid = take_over(ctx, &e, 0).ok()?;
    let mut inner = ctx.inner.lock();
    if let Some(s) = inner.socks.get_mut(&sid) {
        s.st = St::Failed;
        s.so_error = libc::EACCES;
        s.disconnected = true;
    }
    inner.sync(sid);
    inner.after();
    Some((ctx, sid))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fds of every `SCM_RIGHTS` header, other headers skipped, a
    /// header cut short by the buffer's length read no further.
    #[test]
    fn rights_are_read_from_every_scm_rights_header() {
        #[repr(C, align(8))]
        struct Buf([u8; 256]);
        let mut buf = Buf([0; 256]);
        // SAFETY: msghdr is plain data; all zeroes is a valid (empty) value.
        let mut m: msghdr = unsafe { std::mem::zeroed() };
        m.msg_control = buf.0.as_mut_ptr() as *mut libc::c_void;
        // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic.
        let (sp1, sp2, sp3) = unsafe {
            (
                libc::CMSG_SPACE(8) as usize,
                libc::CMSG_SPACE(4) as usize,
                libc::CMSG_SPACE(4) as usize,
            )
        };
        m.msg_controllen = (sp1 + sp2 + sp3) as _;
        // SAFETY: the headers are written inside `buf` (sizes above), as a
        // sender builds them.
        unsafe {
            let h = libc::CMSG_FIRSTHDR(&m);
            (*h).cmsg_level = libc::SOL_SOCKET;
            (*h).cmsg_type = libc::SCM_RIGHTS;
            (*h).cmsg_len = libc::CMSG_LEN(8) as _;
            std::ptr::copy_nonoverlapping([7i32, 9].as_ptr(), libc::CMSG_DATA(h) as *mut i32, 2);
            let h = libc::CMSG_NXTHDR(&m, h);
            (*h).cmsg_level = libc::SOL_SOCKET;
            (*h).cmsg_type = libc::SCM_CREDENTIALS;
            (*h).cmsg_len = libc::CMSG_LEN(4) as _;
            let h = libc::CMSG_NXTHDR(&m, h);
            (*h).cmsg_level = libc::SOL_SOCKET;
            (*h).cmsg_type = libc::SCM_RIGHTS;
            (*h).cmsg_len = libc::CMSG_LEN(4) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(h) as *mut i32, 11);
        }
        // SAFETY: `m` describes `buf`.
        assert_eq!(unsafe { rights(&m) }, vec![7, 9, 11]);
        // The buffer ends inside the last header's data: nothing of it.
        m.msg_controllen = (sp1 + sp2 + 2) as _;
        // SAFETY: as above, shorter.
        assert_eq!(unsafe { rights(&m) }, vec![7, 9]);
        m.msg_control = std::ptr::null_mut();
        // SAFETY: no control buffer.
        assert!(unsafe { rights(&m) }.is_empty());
    }
}
