//! Contexts: one attachment to tasd each ([`Ctx`]), holding that
//! attachment's `Tas` and every socket created or accepted on it
//! ([`Inner`], behind the context's fork-safe lock). Owns which context a
//! thread uses ([`my_ctx`]: its own up to `TAS_CONTEXTS`, then shared
//! round-robin), attaching new ones, and turning what changed in a `Tas`
//! into socket state and readiness ([`Inner::after`], [`Inner::sync`]).

use crate::fdtab::{high_fd_base, T_INTERNAL};
use crate::global::{global, Global};
use crate::reactor::start_reactor;
use crate::readiness::want;
use crate::sock::{take_conn_error, Sock, St};
use crate::sys::{self, log, real, Lock};
use libc::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use tas::idmap::IdMap;
use tas::{Changes, ConnId, ListenerId, Tas};

/// Most contexts (attachments to tasd) per process, over its life (a
/// context whose daemon died keeps its slot: its sockets refer to it).
/// (Two bits per context mark an epoll set as holding its fds.)
pub const MAX_CTX: usize = 30;
/// While no daemon answers, attaching is tried again at most this often
/// (sockets created meanwhile use the kernel).
pub const REATTACH_NS: u64 = 1_000_000_000;

thread_local! {
    /// (generation, context index) this thread uses.
    static MY_CTX: std::cell::Cell<(u64, usize)> = const { std::cell::Cell::new((u64::MAX, 0)) };
}

/// One attachment to tasd (an "app" for the daemon) with its sockets.
pub struct Ctx {
    pub idx: usize,
    pub gen: u64,
    pub ev_fd: c_int,
    pub ctl_fd: c_int,
    pub inner: Lock<Inner>,
    /// Set when the reactor should look again soon (command backlog).
    pub tick: AtomicBool,
    /// Threads blocked in the kernel on this context: with its fds in
    /// their wait set, or registered in `Inner::waiters` (one of which has
    /// them, `solo.rs`); the fast path kicks the eventfd only while this is
    /// non-zero, and the reactor watches the context only while it is zero.
    pub blocked: std::sync::atomic::AtomicU32,
    /// The daemon hung up: errors are delivered, nothing more will come.
    pub dead: AtomicBool,
}

pub struct Inner {
    /// The context's slot number.
    pub idx: usize,
    pub tas: Tas,
    pub socks: IdMap<u64, Sock>,
    pub by_flow: IdMap<ConnId, u64>,
    pub by_listener: IdMap<ListenerId, u64>,
    pub connecting: IdMap<u32, u64>,
    /// Connect requests whose socket was closed before the answer came.
    pub zombies: Vec<u32>,
    pub spinners: u32,
    /// Threads in a blocking call's wait with this context in it
    /// (`solo.rs`).
    pub waiters: crate::solo::Waiters,
    changes: Changes,
}

impl Inner {
    pub fn new(tas: Tas, idx: usize) -> Inner {
        Inner {
            idx,
            tas,
            socks: IdMap::default(),
            by_flow: IdMap::default(),
            by_listener: IdMap::default(),
            connecting: IdMap::default(),
            zombies: Vec::new(),
            spinners: 0,
            waiters: Default::default(),
            changes: Changes::default(),
        }
    }

    /// Brings socket `sid`'s kernel readiness up to date.
    pub fn sync(&mut self, sid: u64) {
        let Inner {
            tas, socks, idx, ..
        } = self;
        if let Some(s) = socks.get_mut(&sid) {
            take_conn_error(s, tas);
            let mut w = want(s, tas);
            let noted = crate::vready::note(s, *idx, sid, &mut w);
            let paired = s.sig.apply(s.a, &w);
            if paired {
                global().pair_gen.fetch_add(1, Ordering::Release);
            }
            if paired || noted {
                global().bump_ready();
            }
        }
    }

    /// Handles what changed in the `Tas` (after any call into it).
    pub fn after(&mut self) {
        let mut ch = std::mem::take(&mut self.changes);
        self.tas.take_changes(&mut ch);
        for c in &ch.conns {
            if let Some(&sid) = self.by_flow.get(c) {
                self.sync(sid);
            }
        }
        for l in &ch.listeners {
            if let Some(&sid) = self.by_listener.get(l) {
                if let Some(s) = self.socks.get_mut(&sid) {
                    s.lkey += 1;
                }
                self.sync(sid);
            }
        }
        if ch.replies {
            self.check_connects();
        }
        self.changes = ch;
    }

    fn check_connects(&mut self) {
        let reqs: Vec<(u32, u64)> = self.connecting.iter().map(|(r, s)| (*r, *s)).collect();
        for (req, sid) in reqs {
            match self.tas.connect_result(req) {
                Ok(None) => {}
                Ok(Some(c)) => {
                    self.connecting.remove(&req);
                    self.by_flow.insert(c, sid);
                    let info = self.tas.conn(c).map(|x| x.info);
                    if let Some(s) = self.socks.get_mut(&sid) {
                        s.st = St::Connected(c);
                        if let Some(i) = info {
                            s.local = (i.local_ip, i.local_port);
                            s.peer = (i.remote_ip, i.remote_port);
                        }
                    }
                    self.sync(sid);
                }
                Err(e) => {
                    self.connecting.remove(&req);
                    if let Some(s) = self.socks.get_mut(&sid) {
                        s.st = St::Failed;
                        s.so_error = e.raw_os_error().unwrap_or(
                            if e.kind() == std::io::ErrorKind::NotConnected {
                                // tasd went away while connecting.
                                libc::ECONNRESET
                            } else {
                                libc::ECONNREFUSED
                            },
                        );
                        s.err_taken = true;
                    }
                    self.sync(sid);
                }
            }
        }
        let zombies = std::mem::take(&mut self.zombies);
        for req in zombies {
            match self.tas.connect_result(req) {
                Ok(None) => self.zombies.push(req),
                Ok(Some(c)) => {
                    let _ = self.tas.abort(c);
                }
                Err(_) => {}
            }
        }
    }

    /// A description of every socket (debugging).
    pub fn dump(&self, idx: usize) -> String {
        let mut out = format!(
            "context {idx}: {} sockets, {} connecting, spinners {}, {}\n",
            self.socks.len(),
            self.connecting.len(),
            self.spinners,
            self.waiters.describe()
        );
        let mut ids: Vec<&u64> = self.socks.keys().collect();
        ids.sort();
        for id in ids {
            let s = &self.socks[id];
            let conn = match s.st {
                St::Connected(c) => self.tas.conn(c).map(|cn| {
                    format!(
                        "flow={c} rx_avail={} rx_fin={} tx_free={}/{} err={:?} fin_acked={} [{}]",
                        cn.rx_available(),
                        cn.rx_fin(),
                        cn.tx_free(),
                        cn.tx_len(),
                        cn.error(),
                        cn.fin_acked(),
                        self.tas.debug_conn(c)
                    )
                }),
                _ => None,
            };
            out += &format!(
                "  sock {} fds {:?} {:?} {:?} nb={} {:?} so_error={} taken={} shut={}/{} {}\n",
                s.id,
                s.fds,
                s.st,
                s.bsd,
                s.nonblock,
                s.sig,
                s.so_error,
                s.err_taken,
                s.shut_rd,
                s.shut_wr,
                conn.unwrap_or_default()
            );
        }
        out
    }

    /// Full poll (notifications and control messages) and bookkeeping.
    pub fn process(&mut self) {
        let _ = self.tas.poll();
        self.after();
    }

    /// Notification ring only (no system call unless something changed).
    pub fn process_fast(&mut self) -> usize {
        let n = self.tas.poll_events();
        if n > 0 {
            self.after();
        }
        n
    }
}

/// The context the calling thread uses (attaching on first use). None when
/// tasd cannot be reached (the caller then falls back to the kernel).
pub fn my_ctx() -> Option<&'static Ctx> {
    let g = global();
    let gen = g.gen.load(Ordering::Acquire);
    let (cgen, idx) = MY_CTX.with(|c| c.get());
    if cgen == gen {
        if let Some(c) = g.ctx(idx) {
            if c.gen == gen && !c.dead.load(Ordering::Relaxed) {
                return Some(c);
            }
        }
    }
    let c = pick_ctx(g, gen)?;
    MY_CTX.with(|x| x.set((gen, c.idx)));
    Some(c)
}

fn pick_ctx(g: &'static Global, gen: u64) -> Option<&'static Ctx> {
    let mut cs = g.create.lock();
    // Contexts whose daemon died serve no new socket; when tasd is back,
    // new sockets attach new contexts.
    let live: Vec<&'static Ctx> = g
        .live_ctxs()
        .filter(|c| !c.dead.load(Ordering::Relaxed))
        .collect();
    let retry_later = cs.failed_gen == Some(gen)
        && sys::monotonic_ns().saturating_sub(cs.failed_at) < REATTACH_NS;
    if live.is_empty() && retry_later {
        return None;
    }
    if live.len() < g.cfg.max_ctx && g.nctx.load(Ordering::Acquire) < MAX_CTX && !retry_later {
        match Tas::attach() {
            Ok(tas) => {
                cs.failed_gen = None;
                g.warned.store(false, Ordering::Relaxed);
                return Some(install_ctx(g, &mut cs, gen, tas));
            }
            Err(e) => {
                if live.is_empty() {
                    cs.failed_gen = Some(gen);
                    cs.failed_at = sys::monotonic_ns();
                    if !g.warned.swap(true, Ordering::Relaxed) {
                        log(&format!(
                            "cannot attach to tasd at {} ({e}); TCP sockets use the kernel",
                            tas::socket_path().display()
                        ));
                    }
                    return None;
                }
            }
        }
    }
    if live.is_empty() {
        // Every slot is taken by contexts whose daemon died.
        return None;
    }
    let i = g.rr.fetch_add(1, Ordering::Relaxed) % live.len();
    Some(live[i])
}

/// Attaches a context sharing the region of `target` (a context of the
/// parent process) under grant `token`, for inherited sockets.
pub fn attach_alias(
    path: &std::path::Path,
    target: u32,
    token: u64,
) -> Result<&'static Ctx, String> {
    let g = global();
    let gen = g.gen.load(Ordering::Acquire);
    let mut cs = g.create.lock();
    if g.nctx.load(Ordering::Acquire) >= MAX_CTX {
        return Err("no context slot left".into());
    }
    let tas = Tas::attach_alias(path, target, token).map_err(|e| e.to_string())?;
    Ok(install_ctx(g, &mut cs, gen, tas))
}

/// Makes attachment `tas` context slot `nctx` of generation `gen`.
fn install_ctx(
    g: &'static Global,
    cs: &mut crate::global::CreateState,
    gen: u64,
    mut tas: Tas,
) -> &'static Ctx {
    tas.move_fds_above(high_fd_base());
    g.spin.note_lanes(tas.lanes());
    tas.set_auto_poll(false);
    tas.set_waiting(false);
    // A dead context stays dead: this shim attaches a new one.
    tas.set_reattach(false);
    let idx = g.nctx.load(Ordering::Acquire);
    let (ev_fd, ctl_fd) = (tas.event_fd(), tas.control_fd());
    for fd in [ev_fd, ctl_fd] {
        g.set_fd(fd, T_INTERNAL);
    }
    let ctx = Box::leak(Box::new(Ctx {
        idx,
        gen,
        ev_fd,
        ctl_fd,
        inner: Lock::new(Inner::new(tas, idx)),
        tick: AtomicBool::new(false),
        blocked: std::sync::atomic::AtomicU32::new(0),
        dead: AtomicBool::new(false),
    }));
    g.ctxs[idx].store(ctx as *const Ctx as usize, Ordering::Release);
    g.nctx.store(idx + 1, Ordering::Release);
    if g.cfg.debug {
        log(&format!("attached context {idx}"));
    }
    if cs.reactor_gen != Some(gen) {
        cs.reactor_gen = Some(gen);
        start_reactor();
    } else {
        let one = 1u64;
        // SAFETY: write reads the 8 bytes of the live local
        // `one`; wake_fd is the shim's eventfd.
        unsafe { real::write::get()(g.wake_fd, &one as *const u64 as *const libc::c_void, 8) };
    }
    ctx
}
