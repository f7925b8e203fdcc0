//! exec(): TAS sockets without `FD_CLOEXEC` survive into the new program
//! image.
//!
//! Before the interposed `execve` (and `execv`, `execvp`, `execvpe`,
//! `fexecve`, `execveat`) runs, the process asks tasd for a grant to its
//! own pid (which `exec` keeps: `SHARE`, `SHARE_PID`) and describes each
//! surviving socket in the environment variable [`ENV`]: its fd numbers,
//! the app id of the context whose region holds it, and its state
//! (`tas::Conn::to_words` for a connection, the listener id and address for
//! a listener). If `exec` fails, the grant is cancelled and nothing
//! changed. The new image's shim reads (and removes) the variable when it
//! loads ([`load`]), marks those fd numbers as inherited, and on first use
//! of one ([`adopt`], from `fdtab::kind`) attaches a context sharing the
//! region, puts a fresh socket pair under the same fd numbers (the old
//! image's end of the pair was close-on-exec) and takes the socket over
//! from tasd. `dup`'ed numbers (a connection on fds 0 and 1) stay one
//! socket.
//!
//! `posix_spawn` and `posix_spawnp` (whose child runs glibc's internal
//! `execve`) do the same from the parent (`spawn.rs`): [`prepare_for`]
//! with the fd numbers the file actions give the child, the grant named
//! after the call ([`spawned`]).
//!
//! Not covered: `execl`, `execlp`, `execle` (variadic: not interposed),
//! and programs started by `system` or `popen` (glibc calls its internal
//! `posix_spawn`): their inherited TAS sockets read as hung-up Unix
//! sockets.

use crate::ctx::{Ctx, Inner};
use crate::fdtab::{encode, T_INTERNAL};
use crate::global::{global, try_global};
use crate::sock::{Bsd, Sock, St};
use crate::sys::{self, log, r_close, r_fcntl, real};
use libc::{c_char, c_int};
use std::ffi::{CStr, CString};
use std::sync::atomic::Ordering;

/// The environment variable that carries inherited sockets into a new
/// program image.
pub const ENV: &str = "TAS_INHERIT";

/// The context index the fd table uses for an inherited socket not taken
/// over yet (its "socket id" is the index into [`Inherited::entries`]).
pub const PENDING_CTX: usize = crate::ctx::MAX_CTX;

/// One socket described in [`ENV`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub fds: Vec<c_int>,
    /// The app whose region holds the socket's rings.
    pub app: u32,
    pub what: What,
    /// An `AF_INET6` socket (`Sock::v6`).
    pub v6: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// `tas::Conn::to_words`.
    Conn(Vec<u32>),
    /// Listener id, local address and port.
    Listener(u32, u32, u16),
    Fresh,
}

/// What this image inherited across exec.
#[derive(Default)]
pub struct Inherited {
    pub token: u64,
    pub entries: Vec<Option<Entry>>,
    /// Region owner app id -> our context sharing it.
    pub aliases: std::collections::HashMap<u32, usize>,
}

fn join(v: impl Iterator<Item = String>) -> String {
    v.collect::<Vec<_>>().join(",")
}

/// `token;fds:app:kind:words;...` (kind upper case for an `AF_INET6`
/// socket).
pub fn encode_env(token: u64, entries: &[Entry]) -> String {
    let mut s = format!("{token:x}");
    for e in entries {
        let fds = join(e.fds.iter().map(|f| f.to_string()));
        let (k, w) = match &e.what {
            What::Conn(w) => ("c", join(w.iter().map(|x| x.to_string()))),
            What::Listener(l, ip, port) => ("l", format!("{l},{ip},{port}")),
            What::Fresh => ("f", String::new()),
        };
        let k = if e.v6 {
            k.to_uppercase()
        } else {
            k.to_string()
        };
        s += &format!(";{fds}:{}:{k}:{w}", e.app);
    }
    s
}

/// The inverse of [`encode_env`]; None for anything malformed.
pub fn decode_env(s: &str) -> Option<(u64, Vec<Entry>)> {
    let mut parts = s.split(';');
    let token = u64::from_str_radix(parts.next()?, 16).ok()?;
    let mut out = Vec::new();
    for p in parts {
        let mut f = p.split(':');
        let nums = |x: &str| -> Option<Vec<u32>> {
            if x.is_empty() {
                return Some(Vec::new());
            }
            x.split(',').map(|n| n.parse().ok()).collect()
        };
        let fds: Vec<c_int> = nums(f.next()?)?.into_iter().map(|x| x as c_int).collect();
        let app: u32 = f.next()?.parse().ok()?;
        let k = f.next()?;
        let v6 = matches!(k, "C" | "L" | "F");
        let k = k.to_lowercase();
        let w = nums(f.next()?)?;
        if f.next().is_some() || fds.is_empty() || fds.iter().any(|&x| x < 0) {
            return None;
        }
        let what = match (k.as_str(), w.len()) {
            ("c", n) if n == tas::Conn::WORDS => What::Conn(w),
            ("l", 3) => What::Listener(w[0], w[1], u16::try_from(w[2]).ok()?),
            ("f", 0) => What::Fresh,
            _ => return None,
        };
        out.push(Entry { fds, app, what, v6 });
    }
    Some((token, out))
}

fn cloexec(fd: c_int) -> bool {
    r_fcntl(fd, libc::F_GETFD, 0).is_ok_and(|f| f & libc::FD_CLOEXEC != 0)
}

/// A prepared exec (or spawn): the variable to add, and the grant to
/// cancel if the exec fails.
pub struct Prepared {
    pub var: CString,
    token: u64,
    speaker: &'static Ctx,
    /// The sockets described (context, socket id).
    described: Vec<(&'static Ctx, u64)>,
}

/// Before exec: the grant and the description of the sockets that survive
/// (None when there are none, or tasd refused).
pub fn prepare() -> Option<Prepared> {
    prepare_for(
        &|fds| fds.iter().copied().filter(|&f| !cloexec(f)).collect(),
        false,
    )
}

/// The numbers a socket with fd numbers `fds` has in the new image: for
/// exec those without `FD_CLOEXEC`, for `posix_spawn` what its file
/// actions make of them (`spawn.rs`).
pub type FdMap<'a> = &'a dyn Fn(&[c_int]) -> Vec<c_int>;

/// [`prepare`] with the new image's fd numbers given by `map`. `spawn`:
/// the new image is another process (`posix_spawn`), whose pid is named
/// with [`spawned`] once known; otherwise this process (exec), whose pid
/// the grant names at once.
pub fn prepare_for(map: FdMap<'_>, spawn: bool) -> Option<Prepared> {
    let g = try_global()?;
    let _e = sys::Enter::new();
    let survives = |fds: &[c_int]| fds.iter().copied().find(|&f| !map(&[f]).is_empty());
    // Inherited sockets not taken over yet are taken over first, so that
    // their state is ours to describe — but not in a `vfork` child: the
    // take-over would attach a context for the child's pid in the
    // parent's memory, under a grant made for the parent. tasd refuses it
    // once the grant names the parent (and the parent lost the socket:
    // its entry was used up), but while the grant names nobody yet (a
    // `posix_spawn`ed `sh` whose own spawner has not sent `SHARE_PID`
    // yet, when `sh` vforks its first command) tasd let the child take
    // the connection, and the exec asked for a second grant. Such sockets
    // stay the parent's to take over; the new program gets them as bare
    // Unix sockets (as after `system`).
    let mut pending = Vec::new();
    if !crate::fork::in_vfork_child() {
        for i in 0..g.nctx.load(Ordering::Acquire) {
            if let Some(c) = g.ctx(i) {
                if c.gen != g.gen.load(Ordering::Acquire) {
                    pending.extend(
                        c.inner
                            .lock()
                            .socks
                            .values()
                            .filter_map(|s| survives(&s.fds)),
                    );
                }
            }
        }
        pending.extend(
            g.inherit
                .lock()
                .exec
                .entries
                .iter()
                .flatten()
                .filter_map(|e| survives(&e.fds)),
        );
    }
    for fd in pending {
        let _ = crate::fdtab::kind(fd);
    }
    let mut entries = Vec::new();
    let mut described = Vec::new();
    let mut speaker = None;
    for c in g.live_ctxs() {
        if c.dead.load(Ordering::Relaxed) {
            continue;
        }
        speaker.get_or_insert(c);
        let inner = c.inner.lock();
        let app = inner.tas.app_id();
        for s in inner.socks.values() {
            let fds = map(&s.fds);
            if fds.is_empty() {
                continue;
            }
            let what = match s.st {
                St::Connected(cid) => match inner.tas.export_conn(cid) {
                    Some(cn) => What::Conn(cn.to_words().to_vec()),
                    None => continue,
                },
                St::Listening(l) => What::Listener(l, s.local.0, s.local.1),
                St::Fresh => What::Fresh,
                St::Connecting(_) | St::Failed => continue,
            };
            entries.push(Entry {
                fds,
                app,
                what,
                v6: s.v6,
            });
            described.push((c, s.id));
        }
    }
    if entries.is_empty() {
        return None;
    }
    let speaker = speaker?;
    let token = crate::fork::random_token();
    {
        let mut inner = speaker.inner.lock();
        if let Err(e) = inner.tas.share_begin(token) {
            if g.cfg.debug {
                let who = if spawn { "posix_spawn" } else { "exec" };
                log(&format!(
                    "{who}: tasd refused to keep the sockets ({e}); the new program cannot use them"
                ));
            }
            return None;
        }
        if !spawn {
            // SAFETY: getpid takes no arguments.
            let _ = inner.tas.share_pid(token, unsafe { libc::getpid() });
        }
    }
    if !spawn {
        // Connections are also marked as possibly taken over: after
        // `vfork` this runs in the child on the parent's memory, and the
        // parent, which goes on when the exec succeeds, must take each
        // connection back before its next use (the new program may have
        // read and written meanwhile; tasd's `TAKEN` may not have been read
        // by then — it read its stale view and wrote over the new
        // program's answer in about 1 run in 30 of the conformance case
        // `vfork` under load). After a failed exec that costs one round
        // trip; after a successful plain exec nothing (the image is gone).
        for c in g.live_ctxs() {
            let mut inner = c.inner.lock();
            let Inner { socks, tas, .. } = &mut *inner;
            for s in socks.values_mut() {
                s.shared = true;
                if let St::Connected(cid) = s.st {
                    tas.set_taken(cid);
                }
            }
        }
    }
    let var = CString::new(format!("{ENV}={}", encode_env(token, &entries))).ok()?;
    Some(Prepared {
        var,
        token,
        speaker,
        described,
    })
}

/// The exec failed: the grant goes.
pub fn cancel(p: Prepared) {
    let _e = sys::Enter::new();
    let _ = p.speaker.inner.lock().tas.share_pid(p.token, 0);
}

/// After `posix_spawn` (prepared with `spawn`): the grant names child
/// `pid`, or goes if the spawn failed (`pid` 0). The sockets described are
/// shared from then on, as after a fork: this process's `close` lets go
/// of its reference only, a connection is taken back before its next use
/// here (the child may have taken it over), and a listener this process
/// never accepted on gets no new connections while the child accepts.
/// Sockets the child does not inherit stay this process's own (their
/// `close` closes them), although the grant lists them.
pub fn spawned(p: Prepared, pid: libc::pid_t) {
    if pid <= 0 {
        return cancel(p);
    }
    let g = global();
    let _e = sys::Enter::new();
    let _ = p.speaker.inner.lock().tas.share_pid(p.token, pid);
    for (c, sid) in p.described {
        let mut inner = c.inner.lock();
        let Some(s) = inner.socks.get_mut(&sid) else {
            continue;
        };
        s.shared = true;
        let (st, interest) = (s.st, s.interest);
        match st {
            St::Connected(cid) => inner.tas.set_taken(cid),
            St::Listening(l) if !interest => {
                let _ = inner.tas.set_accepting(l, false);
                g.quiet.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        inner.after();
    }
}

/// `envp` without any [`ENV`], plus `var`: a NULL-terminated array whose
/// pointers stay valid while `owned` and the caller's strings live.
///
/// # Safety
///
/// `envp` is null or a NULL-terminated array of C strings.
pub unsafe fn with_var(envp: *const *const c_char, var: &CString) -> Vec<*const c_char> {
    let mut v = Vec::new();
    let prefix = format!("{ENV}=");
    if !envp.is_null() {
        let mut i = 0;
        loop {
            // SAFETY: within the NULL-terminated array (contract).
            let p = unsafe { *envp.add(i) };
            if p.is_null() {
                break;
            }
            // SAFETY: a C string of the array (contract).
            if !unsafe { CStr::from_ptr(p) }
                .to_bytes()
                .starts_with(prefix.as_bytes())
            {
                v.push(p);
            }
            i += 1;
        }
    }
    v.push(var.as_ptr());
    v.push(std::ptr::null());
    v
}

/// At load: takes [`ENV`] out of the environment and marks the fd numbers
/// it names as inherited sockets.
pub fn load() {
    let name = CString::new(ENV).expect("no NUL");
    // SAFETY: getenv with a valid C string; the value is copied at once.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return;
    }
    // SAFETY: getenv returned a C string of the environment.
    let val = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    // SAFETY: unsetenv with a valid C string, at load (one thread).
    unsafe { libc::unsetenv(name.as_ptr()) };
    let Some((token, entries)) = decode_env(&val) else {
        sys::log(&format!(
            "{ENV} is malformed; inherited TAS sockets are unusable"
        ));
        return;
    };
    let g = global();
    if g.cfg.disabled {
        return;
    }
    let mut inh = g.inherit.lock();
    inh.exec.token = token;
    for (i, e) in entries.into_iter().enumerate() {
        for &fd in &e.fds {
            // SAFETY: a zeroed `stat` (integers only) is a valid value.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat writes into the live local `st`.
            let sock = unsafe { libc::fstat(fd, &mut st) } == 0
                && st.st_mode & libc::S_IFMT == libc::S_IFSOCK;
            if sock && g.fd_fits(fd) {
                g.set_fd(fd, encode(PENDING_CTX, i as u64));
            }
        }
        inh.exec.entries.push(Some(e));
    }
}

/// Whether `fd` is an inherited socket not taken over yet; if so, its
/// entry index.
pub fn pending(v: u64) -> Option<usize> {
    match crate::fdtab::decode(v) {
        Some((PENDING_CTX, i)) => Some(i as usize),
        _ => None,
    }
}

/// `close` of an inherited socket never used: the number is the kernel's
/// again (our reference goes when the process exits).
pub fn forget(fd: c_int) {
    let g = global();
    if let Some(i) = pending(g.fd(fd)) {
        g.set_fd(fd, 0);
        let mut inh = g.inherit.lock();
        if let Some(Some(e)) = inh.exec.entries.get_mut(i) {
            e.fds.retain(|&f| f != fd);
            if e.fds.is_empty() {
                inh.exec.entries[i] = None;
            }
        }
    }
}

/// First use of inherited socket `i` (through `fd`): take it over.
pub fn adopt(fd: c_int, i: usize) -> Option<(&'static Ctx, u64)> {
    let g = global();
    let _e = sys::Enter::new();
    let mut inh = g.inherit.lock();
    let token = inh.exec.token;
    let e = inh.exec.entries.get_mut(i)?.take()?;
    let fail = |e: &Entry, why: String| {
        for &f in &e.fds {
            g.set_fd(f, 0);
        }
        if g.cfg.debug {
            log(&format!(
                "fd {fd}: cannot take over the socket inherited across exec: {why}"
            ));
        }
        None
    };
    let ctx = match inh.exec.aliases.get(&e.app).and_then(|&i| g.ctx(i)) {
        Some(c) => c,
        None => match crate::ctx::attach_alias(&tas::socket_path(), e.app, token) {
            Ok(c) => {
                inh.exec.aliases.insert(e.app, c.idx);
                c
            }
            Err(why) => return fail(&e, why),
        },
    };
    drop(inh);
    match take_over(ctx, &e, token) {
        Ok(sid) => Some((ctx, sid)),
        Err(why) => fail(&e, why),
    }
}

/// Takes over socket `e` in context `ctx` (one sharing the region that
/// holds it): a fresh readiness pair under its fd numbers (keeping each
/// number's close-on-exec flag), tasd's `ADOPT` under `token` (0: by this
/// pid's grants), and the socket in the context's table. Returns its id.
/// Also for sockets received by `SCM_RIGHTS` (`pass.rs`).
pub(crate) fn take_over(ctx: &'static Ctx, e: &Entry, token: u64) -> Result<u64, String> {
    let g = global();
    let nonblock = r_fcntl(e.fds[0], libc::F_GETFL, 0).is_ok_and(|f| f & libc::O_NONBLOCK != 0);
    let (a, b) = crate::ops::create_pair(nonblock, true)
        .map_err(|err| format!("socketpair: errno {err}"))?;
    for &f in &e.fds {
        let ce = if cloexec(f) { libc::O_CLOEXEC } else { 0 };
        // SAFETY: dup3 takes no pointers; f is a number of this socket.
        if unsafe { real::dup3::get()(a, f, ce) } < 0 {
            r_close(a);
            r_close(b);
            return Err("dup3".into());
        }
    }
    r_close(a);
    let sid = g.next_sid.fetch_add(1, Ordering::Relaxed);
    let mut s = Sock::new(sid, e.fds[0], b, nonblock);
    s.fds = e.fds.clone();
    s.shared = true;
    s.v6 = e.v6;
    // On TAS past bind an AF_INET6 socket is dual-stack; a fresh one gets
    // the system's default.
    s.v6only = e.v6 && e.what == What::Fresh && g.bindv6only;
    let mut inner = ctx.inner.lock();
    let r = match &e.what {
        What::Conn(w) => match tas::Conn::from_words(w) {
            Some(cn) => {
                let info = cn.info;
                inner.tas.adopt_conn(cn, token).map(|c| {
                    s.st = St::Connected(c);
                    s.bsd = Bsd::Connected;
                    s.local = (info.local_ip, info.local_port);
                    s.peer = (info.remote_ip, info.remote_port);
                    inner.by_flow.insert(c, sid);
                })
            }
            None => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
        },
        What::Listener(l, ip, port) => inner.tas.adopt_listener(*l, token, true).map(|()| {
            s.st = St::Listening(*l);
            s.local = (*ip, *port);
            s.interest = true;
            inner.by_listener.insert(*l, sid);
        }),
        What::Fresh => {
            s.shared = false;
            Ok(())
        }
    };
    if let Err(err) = r {
        drop(inner);
        r_close(b);
        return Err(err.to_string());
    }
    g.set_fd(b, T_INTERNAL);
    for &f in &s.fds {
        g.set_fd(f, encode(ctx.idx, sid));
    }
    inner.socks.insert(sid, s);
    inner.sync(sid);
    inner.after();
    Ok(sid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_form_round_trips_and_rejects_garbage() {
        let e = vec![
            Entry {
                fds: vec![0, 1],
                app: 7,
                what: What::Conn((0..tas::Conn::WORDS as u32).collect()),
                v6: false,
            },
            Entry {
                fds: vec![5],
                app: 3,
                what: What::Listener(9, 0xc6120001, 8080),
                v6: true,
            },
            Entry {
                fds: vec![6],
                app: 3,
                what: What::Fresh,
                v6: false,
            },
            Entry {
                fds: vec![7],
                app: 3,
                what: What::Fresh,
                v6: true,
            },
        ];
        let s = encode_env(0x000d_eadb_eef1, &e);
        assert_eq!(decode_env(&s), Some((0x000d_eadb_eef1, e)));
        for bad in [
            "",
            "zz",
            "1;:1:f:",
            "1;3:1:c:1,2",
            "1;3:x:f:",
            "1;-1:1:f:",
            "1;3:1:l:1,2,70000",
            "1;3:1:X:",
        ] {
            assert_eq!(decode_env(bad), None, "{bad:?}");
        }
    }
}
