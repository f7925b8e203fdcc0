//! Process-wide state: configuration, the fd table, the TAS contexts and
//! their sockets, readiness signalling, the reactor thread, fork handling.
//!
//! # Readiness through the kernel
//!
//! Every TAS socket's fd number is one end (`A`) of a Unix stream socket
//! pair; the shim keeps the other end (`B`). The shim drives `A`'s kernel
//! readiness so that `epoll`, `poll` and `select` on mixed fd sets work
//! natively, edge-triggered and one-shot included:
//!
//! * readable: one byte sent `B → A` (another on each new arrival while
//!   still readable, so `EPOLLET` sees a fresh edge as with Linux TCP);
//!   drained when nothing is left to read;
//! * not writable: `A`'s send buffer is set to the minimum and a block is
//!   sent `A → B` (Unix sockets are writable only while less than a quarter
//!   of the send buffer is queued at the peer); drained when ring space
//!   comes back — which gives `EPOLLOUT` edges like Linux's write-space
//!   wake-ups;
//! * `EPOLLRDHUP`: `shutdown(B, SHUT_WR)`; our `SHUT_WR`: `shutdown(B,
//!   SHUT_RD)`; both: `EPOLLHUP`, exactly the Linux TCP rule;
//! * reset / failed connect: a byte `A → B` and `close(B)`, which gives
//!   `EPOLLERR | EPOLLHUP | EPOLLIN | EPOLLOUT | EPOLLRDHUP`; `EPOLLERR`
//!   clears when the app consumes the error (`SO_ERROR`, `read`).
//!
//! Because `A` is a real socket, `fstat` says `S_IFSOCK` and fd numbers can
//! never collide with the program's other descriptors.

use crate::sys::{self, log, r_close, r_recv, r_send, real, Lock};
use libc::c_int;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use tas::{Changes, ConnId, ListenerId, Tas};

/// Most contexts (attachments to tasd) per process.
/// (Two bits per context mark an epoll set as holding its fds.)
pub const MAX_CTX: usize = 30;

/// fd table tags.
pub const T_SOCK: u64 = 1 << 63;
pub const T_INTERNAL: u64 = 1 << 62;
pub const T_EPOLL: u64 = 1 << 61;
const SID_BITS: u32 = 40;
const SID_MASK: u64 = (1 << SID_BITS) - 1;

pub struct Config {
    /// Spin this long before blocking in a wait.
    pub spin_ns: u64,
    pub max_ctx: usize,
    /// `TAS_IP`: the service's address when the daemon does not announce it.
    pub tas_ip: Option<u32>,
    pub debug: bool,
    pub disabled: bool,
}

pub struct Global {
    pub cfg: Config,
    fdtab: Box<[AtomicU64]>,
    ctxs: [AtomicUsize; MAX_CTX],
    nctx: AtomicUsize,
    rr: AtomicUsize,
    /// Serialises context creation and the reactor's start.
    pub create: Lock<CreateState>,
    /// Bumped in the child after fork: contexts of older generations belong
    /// to the parent and must not be touched.
    pub gen: AtomicU64,
    /// Bumped whenever a socket's kernel readiness changes (spin loops).
    pub ready_gen: AtomicU64,
    pub next_sid: AtomicU64,
    /// Wakes the reactor (new context).
    pub wake_fd: c_int,
    /// Bytes that make a minimal-buffer Unix socket unwritable.
    pub fill: usize,
    pub ports: Lock<Ports>,
    pub local_cache: Lock<HashMap<u32, bool>>,
    pub rmem_max: u32,
    pub wmem_max: u32,
    pub warned: AtomicBool,
}

#[derive(Default)]
pub struct CreateState {
    pub failed_gen: Option<u64>,
    pub reactor_gen: Option<u64>,
}

/// Ports bound by TAS sockets of this process.
#[derive(Default)]
pub struct Ports {
    pub map: HashMap<u16, Vec<PortUse>>,
}

#[derive(Clone, Copy, Debug)]
pub struct PortUse {
    pub sock: (usize, u64),
    pub ip: u32,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub listening: bool,
}

static GLOBAL: OnceLock<Global> = OnceLock::new();

thread_local! {
    /// (generation, context index) this thread uses.
    static MY_CTX: std::cell::Cell<(u64, usize)> = const { std::cell::Cell::new((u64::MAX, 0)) };
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn read_proc_u32(path: &str) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The state, if anything created it yet (never initialises).
#[inline]
pub fn try_global() -> Option<&'static Global> {
    GLOBAL.get()
}

pub fn global() -> &'static Global {
    GLOBAL.get_or_init(|| {
        let _e = sys::Enter::new();
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: valid out-pointer.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
        let size = (rl.rlim_max as u64).clamp(65536, 1 << 20) as usize;
        // Zeroed memory from calloc: pages are only touched when used.
        let v: Vec<u64> = vec![0u64; size];
        let b = v.into_boxed_slice();
        // SAFETY: AtomicU64 has the same size and alignment as u64.
        let fdtab: Box<[AtomicU64]> =
            unsafe { Box::from_raw(Box::into_raw(b) as *mut [AtomicU64]) };
        let tas_ip = std::env::var("TAS_IP")
            .ok()
            .and_then(|s| {
                s.split('/')
                    .next()
                    .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok())
            })
            .map(u32::from);
        let ncpu = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cfg = Config {
            spin_ns: env_u64("TAS_SPIN_US").unwrap_or(50) * 1000,
            max_ctx: (env_u64("TAS_CONTEXTS").unwrap_or(ncpu.min(4) as u64) as usize)
                .clamp(1, MAX_CTX),
            tas_ip,
            debug: std::env::var_os("TAS_PRELOAD_DEBUG").is_some(),
            disabled: matches!(std::env::var("TAS_PRELOAD_DISABLE").as_deref(), Ok("1")),
        };
        // SAFETY: plain syscall.
        let wake_fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        let wake_fd = if wake_fd >= 0 {
            sys::move_high(wake_fd, high_fd_base())
        } else {
            wake_fd
        };
        let g = Global {
            cfg,
            fdtab,
            ctxs: std::array::from_fn(|_| AtomicUsize::new(0)),
            nctx: AtomicUsize::new(0),
            rr: AtomicUsize::new(0),
            create: Lock::new(CreateState::default()),
            gen: AtomicU64::new(0),
            ready_gen: AtomicU64::new(0),
            next_sid: AtomicU64::new(1),
            wake_fd,
            fill: calibrate_fill(),
            ports: Lock::new(Ports::default()),
            local_cache: Lock::new(HashMap::new()),
            rmem_max: read_proc_u32("/proc/sys/net/core/rmem_max").unwrap_or(212992),
            wmem_max: read_proc_u32("/proc/sys/net/core/wmem_max").unwrap_or(212992),
            warned: AtomicBool::new(false),
        };
        if wake_fd >= 0 {
            g.set_fd(wake_fd, T_INTERNAL);
        }
        g
    })
}

/// Where the shim puts its own descriptors: high, out of the program's way
/// (select() users stay below 1024), if the fd limit allows.
pub fn high_fd_base() -> c_int {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    let soft = rl.rlim_cur.min(1 << 30) as c_int;
    let min = (soft / 2).max(1024);
    if min < soft {
        min
    } else {
        (soft * 3 / 4).max(3)
    }
}

/// How many bytes sent from a minimal-buffer Unix stream socket make it
/// unwritable on this kernel.
fn calibrate_fill() -> usize {
    let mut sv = [-1; 2];
    // SAFETY: valid out-array of two ints.
    if unsafe {
        real::socketpair::get()(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    } != 0
    {
        return 2048;
    }
    let _ = sys::r_setsockopt_int(sv[0], libc::SOL_SOCKET, libc::SO_SNDBUF, 1);
    let mut fill = 1024;
    let buf = [0u8; 16384];
    let mut result = 2048;
    while fill <= 8192 {
        let mut tmp = vec![0u8; 65536];
        while r_recv(sv[1], &mut tmp).map(|n| n > 0).unwrap_or(false) {}
        if r_send(sv[0], &buf[..fill]) == Ok(fill) {
            let mut p = libc::pollfd {
                fd: sv[0],
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { real::poll::get()(&mut p, 1, 0) };
            if p.revents & libc::POLLOUT == 0 {
                result = fill;
                break;
            }
        }
        fill *= 2;
    }
    r_close(sv[0]);
    r_close(sv[1]);
    result
}

impl Global {
    #[inline]
    pub fn fd(&self, fd: c_int) -> u64 {
        if fd < 0 {
            return 0;
        }
        match self.fdtab.get(fd as usize) {
            Some(e) => e.load(Ordering::Acquire),
            None => 0,
        }
    }

    pub fn set_fd(&self, fd: c_int, v: u64) -> bool {
        if fd < 0 {
            return false;
        }
        match self.fdtab.get(fd as usize) {
            Some(e) => {
                e.store(v, Ordering::Release);
                true
            }
            None => false,
        }
    }

    pub fn fd_fits(&self, fd: c_int) -> bool {
        fd >= 0 && (fd as usize) < self.fdtab.len()
    }

    pub fn ctx(&self, idx: usize) -> Option<&'static Ctx> {
        let p = self.ctxs.get(idx)?.load(Ordering::Acquire);
        if p == 0 {
            None
        } else {
            // SAFETY: contexts are leaked boxes, never freed.
            Some(unsafe { &*(p as *const Ctx) })
        }
    }

    /// Contexts of the current generation.
    pub fn live_ctxs(&self) -> impl Iterator<Item = &'static Ctx> + '_ {
        let gen = self.gen.load(Ordering::Acquire);
        (0..self.nctx.load(Ordering::Acquire))
            .filter_map(move |i| self.ctx(i))
            .filter(move |c| c.gen == gen)
    }

    pub fn has_live_ctx(&self) -> bool {
        self.live_ctxs().next().is_some()
    }

    pub fn bump_ready(&self) {
        self.ready_gen.fetch_add(1, Ordering::Release);
    }
}

pub fn encode(ctx: usize, sid: u64) -> u64 {
    T_SOCK | ((ctx as u64) << SID_BITS) | (sid & SID_MASK)
}

pub fn decode(v: u64) -> Option<(usize, u64)> {
    if v & T_SOCK == 0 {
        return None;
    }
    Some((((v & !T_SOCK) >> SID_BITS) as usize, v & SID_MASK))
}

// ---------------------------------------------------------------------------

/// One attachment to tasd (an "app" for the daemon) with its sockets.
pub struct Ctx {
    pub idx: usize,
    pub gen: u64,
    pub ev_fd: c_int,
    pub ctl_fd: c_int,
    pub inner: Lock<Inner>,
    /// Set when the reactor should look again soon (command backlog).
    pub tick: AtomicBool,
    /// Threads blocked in the kernel with this context's fds in their wait
    /// set; the fast path kicks the eventfd only while this is non-zero.
    pub blocked: std::sync::atomic::AtomicU32,
    /// The daemon hung up: errors are delivered, nothing more will come.
    pub dead: AtomicBool,
}

pub struct Inner {
    pub tas: Tas,
    pub socks: HashMap<u64, Sock>,
    pub by_flow: HashMap<ConnId, u64>,
    pub by_listener: HashMap<ListenerId, u64>,
    pub connecting: HashMap<u32, u64>,
    /// Connect requests whose socket was closed before the answer came.
    pub zombies: Vec<u32>,
    pub spinners: u32,
    changes: Changes,
}

/// The TCP-level state of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum St {
    Fresh,
    Listening(ListenerId),
    Connecting(u32),
    Connected(ConnId),
    /// Connect failed (the error is in `so_error` until consumed).
    Failed,
}

/// The BSD socket layer's view (`sock->state` in Linux): decides what a
/// repeated `connect()` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bsd {
    Unconnected,
    Connecting,
    Connected,
}

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

impl std::fmt::Debug for Sig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sig(b={} rx={} wfull={} rd={} wr={})",
            self.b, self.rx_bytes, self.wfull, self.rd_shut, self.wr_shut
        )
    }
}

/// The readiness currently signalled on `A` (see the module docs).
pub struct Sig {
    pub b: c_int,
    rx_bytes: u32,
    key: u64,
    wfull: bool,
    rd_shut: bool,
    wr_shut: bool,
}

#[derive(Debug, Default)]
pub struct Want {
    pub r: bool,
    pub key: u64,
    pub w: bool,
    pub rdhup: bool,
    pub wrshut: bool,
    pub err: bool,
}

impl Sig {
    pub fn new(b: c_int) -> Sig {
        Sig {
            b,
            rx_bytes: 0,
            key: 0,
            wfull: false,
            rd_shut: false,
            wr_shut: false,
        }
    }

    fn drain_b(&mut self) {
        let mut buf = [0u8; 8192];
        while let Ok(n) = r_recv(self.b, &mut buf) {
            if n == 0 {
                break;
            }
        }
    }

    /// Makes `A`'s kernel readiness match `w`; true if anything changed.
    pub fn apply(&mut self, a: c_int, w: &Want) -> bool {
        if self.b < 0 {
            return false;
        }
        let g = global();
        if w.err {
            if !self.wr_shut {
                // A byte queued at B makes close(B) set ECONNRESET on A.
                let _ = r_send(a, &[0]);
            }
            g.set_fd(self.b, 0);
            r_close(self.b);
            self.b = -1;
            return true;
        }
        let mut changed = false;
        if w.wrshut && !self.wr_shut {
            if self.wfull {
                self.drain_b();
                self.wfull = false;
            }
            let _ = r_send(a, &[0]);
            // SAFETY: shutdown on our own socket.
            unsafe { real::shutdown::get()(self.b, libc::SHUT_RD) };
            self.wr_shut = true;
            changed = true;
        }
        if w.rdhup && !self.rd_shut {
            // SAFETY: shutdown on our own socket.
            unsafe { real::shutdown::get()(self.b, libc::SHUT_WR) };
            self.rd_shut = true;
            changed = true;
        }
        if !self.rd_shut {
            if w.r {
                if self.rx_bytes == 0 || (w.key != self.key && self.rx_bytes < 32) {
                    if r_send(self.b, &[1]).is_ok() {
                        self.rx_bytes += 1;
                    }
                    self.key = w.key;
                    changed = true;
                }
            } else if self.rx_bytes > 0 {
                let mut buf = [0u8; 64];
                while let Ok(n) = r_recv(a, &mut buf) {
                    if n < buf.len() {
                        break;
                    }
                }
                self.rx_bytes = 0;
                changed = true;
            }
        }
        if !self.wr_shut {
            if w.w && self.wfull {
                self.drain_b();
                self.wfull = false;
                changed = true;
            } else if !w.w && !self.wfull {
                let block = vec![0u8; g.fill];
                let _ = r_send(a, &block);
                self.wfull = true;
                changed = true;
            }
        }
        changed
    }

    /// Clears the pending error on `A` (after the app consumed it).
    pub fn clear_err(a: c_int) {
        let mut v: c_int = 0;
        let mut l = std::mem::size_of::<c_int>() as libc::socklen_t;
        // SAFETY: valid out-pointers.
        unsafe {
            real::getsockopt::get()(
                a,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut v as *mut c_int as *mut libc::c_void,
                &mut l,
            )
        };
    }
}

pub struct Sock {
    pub id: u64,
    /// Every fd number that refers to this socket (dup'ed ones too); `a` is
    /// one of them, used for the shim's own calls on `A`.
    pub fds: Vec<c_int>,
    pub a: c_int,
    pub sig: Sig,
    pub nonblock: bool,
    pub st: St,
    pub bsd: Bsd,
    /// Bound local address (host order); port 0 = not bound.
    pub local: (u32, u16),
    pub peer: (u32, u16),
    pub opts: Opts,
    /// Pending error (Linux `sk_err`), consumed by the next call that
    /// reports it.
    pub so_error: c_int,
    /// The connection's error was taken over into `so_error` already.
    pub err_taken: bool,
    pub shut_rd: bool,
    pub shut_wr: bool,
    pub backlog: i32,
    /// Bumped on new connections for a listener (edge-triggered wake-ups).
    pub lkey: u64,
    /// A kernel TCP socket that holds options we do not model.
    pub shadow: c_int,
    /// epoll registrations of this socket's fds: (epfd, fd, event).
    pub epoll_regs: Vec<(c_int, c_int, libc::epoll_event)>,
    pub port_registered: bool,
    /// connect() reported a failure (Linux then disconnects the socket).
    pub disconnected: bool,
}

impl Sock {
    pub fn new(id: u64, a: c_int, b: c_int, nonblock: bool) -> Sock {
        Sock {
            id,
            fds: vec![a],
            a,
            sig: Sig::new(b),
            nonblock,
            st: St::Fresh,
            bsd: Bsd::Unconnected,
            local: (0, 0),
            peer: (0, 0),
            opts: Opts::default(),
            so_error: 0,
            err_taken: false,
            shut_rd: false,
            shut_wr: false,
            backlog: 0,
            lkey: 0,
            shadow: -1,
            epoll_regs: Vec::new(),
            port_registered: false,
            disconnected: false,
        }
    }
}

/// Moves a connection's error (reset, timeout) into the socket's pending
/// error, once.
pub fn take_conn_error(s: &mut Sock, tas: &Tas) {
    if s.err_taken {
        return;
    }
    if let St::Connected(c) = s.st {
        let e = match tas.conn(c) {
            Some(cn) => cn.error(),
            None => Some(libc::ECONNRESET),
        };
        if let Some(e) = e {
            s.err_taken = true;
            // Linux: a reset after the peer's FIN is reported as EPIPE.
            let fin = tas.conn(c).map(|x| x.rx_fin()).unwrap_or(false);
            s.so_error = if e == libc::ECONNRESET && fin {
                libc::EPIPE
            } else {
                e
            };
        }
    }
}

fn want(s: &Sock, tas: &Tas) -> Want {
    let mut w = Want {
        w: true,
        rdhup: s.shut_rd,
        wrshut: s.shut_wr,
        ..Default::default()
    };
    match s.st {
        St::Fresh => {}
        St::Listening(l) => {
            w.r = tas.listener_pending(l).unwrap_or(0) > 0;
            w.key = s.lkey;
            w.w = false;
        }
        St::Connecting(_) => w.w = false,
        St::Connected(c) => match tas.conn(c) {
            Some(cn) => {
                let err = cn.error().is_some();
                let avail = cn.rx_available();
                let lowat = s.opts.rcvlowat.unwrap_or(1).max(1) as u32;
                w.r = avail >= lowat || cn.rx_fin() || err || s.shut_rd;
                w.key = cn.rx_seq_end() as u64;
                w.rdhup |= cn.rx_fin() || err;
                w.wrshut |= err;
                let free = cn.tx_free() as u64;
                w.w = err || s.shut_wr || (free > 0 && free * 3 >= cn.tx_len() as u64);
                w.err = err;
            }
            None => w.err = true,
        },
        St::Failed => w.err = true,
    }
    w
}

impl Inner {
    pub fn new(tas: Tas) -> Inner {
        Inner {
            tas,
            socks: HashMap::new(),
            by_flow: HashMap::new(),
            by_listener: HashMap::new(),
            connecting: HashMap::new(),
            zombies: Vec::new(),
            spinners: 0,
            changes: Changes::default(),
        }
    }

    /// Brings socket `sid`'s kernel readiness up to date.
    pub fn sync(&mut self, sid: u64) {
        let Inner { tas, socks, .. } = self;
        if let Some(s) = socks.get_mut(&sid) {
            take_conn_error(s, tas);
            let w = want(s, tas);
            if s.sig.apply(s.a, &w) {
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
                        s.so_error = e.raw_os_error().unwrap_or(libc::ECONNREFUSED);
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
            "context {idx}: {} sockets, {} connecting, spinners {}\n",
            self.socks.len(),
            self.connecting.len(),
            self.spinners
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

// ---------------------------------------------------------------------------
// Contexts.

/// The context the calling thread uses (attaching on first use). None when
/// tasd cannot be reached (the caller then falls back to the kernel).
pub fn my_ctx() -> Option<&'static Ctx> {
    let g = global();
    let gen = g.gen.load(Ordering::Acquire);
    let (cgen, idx) = MY_CTX.with(|c| c.get());
    if cgen == gen {
        if let Some(c) = g.ctx(idx) {
            if c.gen == gen {
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
    if cs.failed_gen == Some(gen) {
        return None;
    }
    let live: Vec<&'static Ctx> = g.live_ctxs().collect();
    if live.len() < g.cfg.max_ctx && g.nctx.load(Ordering::Acquire) < MAX_CTX {
        match Tas::attach() {
            Ok(mut tas) => {
                tas.move_fds_above(high_fd_base());
                tas.set_auto_poll(false);
                tas.set_waiting(false);
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
                    inner: Lock::new(Inner::new(tas)),
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
                    // SAFETY: 8-byte write to our eventfd.
                    unsafe {
                        real::write::get()(g.wake_fd, &one as *const u64 as *const libc::c_void, 8)
                    };
                }
                return Some(ctx);
            }
            Err(e) => {
                if live.is_empty() {
                    cs.failed_gen = Some(gen);
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
    let i = g.rr.fetch_add(1, Ordering::Relaxed) % live.len();
    Some(live[i])
}

// ---------------------------------------------------------------------------
// Waiting: spin on the contexts, then block in the kernel with the
// contexts' eventfds and control sockets in the same wait, so that the
// thread that waits is the one the service wakes (no hop through another
// thread). The fast path kicks a context's eventfd only while some thread
// is blocked that way (`Ctx::blocked`); a busy program is never kicked and
// picks up news at its next call.

/// `epoll_event.data` of the shim's own fds inside a program's epoll set:
/// `EPOLL_TAG | ctx << 1 | is_control_socket`.
pub const EPOLL_TAG: u64 = 0x54A5_F00D_0000_0000;
pub const EPOLL_TAG_MASK: u64 = 0xFFFF_FFFF_0000_0000;

/// Polls every live context once without blocking (the notification ring
/// only). True when some socket's readiness changed since `*seen`.
pub fn poll_all_once(seen: &mut u64) -> bool {
    let g = global();
    for c in g.live_ctxs() {
        if let Some(mut inner) = c.inner.try_lock() {
            inner.process_fast();
        }
    }
    let now = g.ready_gen.load(Ordering::Acquire);
    if now != *seen {
        *seen = now;
        true
    } else {
        false
    }
}

/// Spins up to the configured time (or `limit_ns`) calling `poll_now`
/// (a zero-timeout check) whenever readiness changed. Returns its first
/// non-zero result.
pub fn spin_wait(limit_ns: u64, mut poll_now: impl FnMut() -> c_int) -> Option<c_int> {
    let g = global();
    let spin = g.cfg.spin_ns.min(limit_ns);
    if spin == 0 || !g.has_live_ctx() {
        return None;
    }
    let mut seen = g.ready_gen.load(Ordering::Acquire);
    let start = sys::monotonic_ns();
    let mut rounds = 0u32;
    loop {
        if poll_all_once(&mut seen) {
            let r = poll_now();
            if r != 0 {
                return Some(r);
            }
        }
        rounds += 1;
        if rounds % 64 == 0 && sys::monotonic_ns() - start >= spin {
            return None;
        }
        std::hint::spin_loop();
    }
}

/// One of the shim's fds a blocked thread also waits on.
#[derive(Clone, Copy, Debug)]
pub struct OurFd {
    pub fd: c_int,
    pub ctx: usize,
    pub ctl: bool,
}

/// While alive, the calling thread is about to block (or is blocked) in the
/// kernel with [`Blocked::fds`] in its wait set.
pub struct Blocked {
    ctxs: Vec<&'static Ctx>,
    /// Readiness changed while entering (check before blocking).
    pub changed: bool,
}

impl Blocked {
    pub fn enter() -> Blocked {
        let g = global();
        let before = g.ready_gen.load(Ordering::Acquire);
        let ctxs: Vec<&'static Ctx> = g
            .live_ctxs()
            .filter(|c| !c.dead.load(Ordering::Relaxed))
            .collect();
        for c in &ctxs {
            let mut inner = c.inner.lock();
            if c.blocked.fetch_add(1, Ordering::SeqCst) == 0 {
                inner.tas.set_waiting(true);
            }
            // Anything posted before the flag was visible is ours to see.
            inner.process_fast();
        }
        let changed = g.ready_gen.load(Ordering::Acquire) != before;
        Blocked { ctxs, changed }
    }

    pub fn fds(&self) -> Vec<OurFd> {
        let mut v = Vec::with_capacity(self.ctxs.len() * 2);
        for c in &self.ctxs {
            v.push(OurFd {
                fd: c.ev_fd,
                ctx: c.idx,
                ctl: false,
            });
            v.push(OurFd {
                fd: c.ctl_fd,
                ctx: c.idx,
                ctl: true,
            });
        }
        v
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        for c in &self.ctxs {
            if c.blocked.fetch_sub(1, Ordering::SeqCst) == 1 {
                let inner = c.inner.lock();
                if c.blocked.load(Ordering::SeqCst) == 0 {
                    inner.tas.set_waiting(false);
                }
            }
        }
    }
}

/// Our fds fired in a wait: take the news (drain the eventfd, read the
/// notification ring, and the control socket when it fired).
pub fn handle_our_fd(ctx: usize, ctl: bool) {
    let g = global();
    let Some(c) = g.ctx(ctx) else { return };
    if c.gen != g.gen.load(Ordering::Acquire) {
        return;
    }
    let mut v = 0u64;
    // SAFETY: 8-byte read from the context's non-blocking eventfd.
    unsafe { real::read::get()(c.ev_fd, &mut v as *mut u64 as *mut libc::c_void, 8) };
    let mut inner = c.inner.lock();
    if ctl {
        inner.process();
    } else {
        inner.tas.poll_events();
        inner.after();
    }
    c.tick.store(
        inner.tas.has_backlog() || !inner.zombies.is_empty(),
        Ordering::Relaxed,
    );
    if inner.tas.is_dead() {
        c.dead.store(true, Ordering::Relaxed);
    }
}

/// Waits until `fd` (an `A` end) is ready for `events` or the deadline
/// (monotonic ns; None = forever). Err(EAGAIN) on timeout, Err(EINTR) on a
/// signal.
pub fn wait_fd(fd: c_int, events: i16, deadline: Option<u64>) -> Result<(), c_int> {
    let check = || -> c_int {
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { real::poll::get()(&mut p, 1, 0) };
        if r < 0 {
            -sys::errno()
        } else {
            r
        }
    };
    let left = |d: Option<u64>| {
        d.map(|d| d.saturating_sub(sys::monotonic_ns()))
            .unwrap_or(u64::MAX)
    };
    if let Some(r) = spin_wait(left(deadline), check) {
        return if r < 0 { Err(-r) } else { Ok(()) };
    }
    loop {
        let b = Blocked::enter();
        if b.changed {
            let r = check();
            if r != 0 {
                return if r < 0 { Err(-r) } else { Ok(()) };
            }
        }
        let ms = match deadline {
            None => -1,
            Some(_) => {
                let l = left(deadline);
                if l == 0 {
                    return Err(libc::EAGAIN);
                }
                l.div_ceil(1_000_000).min(i32::MAX as u64) as c_int
            }
        };
        let ours = b.fds();
        let mut pfds = Vec::with_capacity(1 + ours.len());
        pfds.push(libc::pollfd {
            fd,
            events,
            revents: 0,
        });
        for o in &ours {
            pfds.push(libc::pollfd {
                fd: o.fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let r = {
            let _l = sys::Leave::new();
            // SAFETY: valid pollfd array.
            unsafe { real::poll::get()(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) }
        };
        let err = sys::errno();
        drop(b);
        if r < 0 {
            return Err(err);
        }
        let mut fired = false;
        for (i, o) in ours.iter().enumerate() {
            if o.ctl || pfds[1 + i].revents == 0 && pfds[2 + i].revents == 0 {
                continue;
            }
            handle_our_fd(o.ctx, pfds[2 + i].revents != 0);
            fired = true;
        }
        if pfds[0].revents != 0 {
            return Ok(());
        }
        if !fired {
            return Err(libc::EAGAIN);
        }
        let r = check();
        if r != 0 {
            return if r < 0 { Err(-r) } else { Ok(()) };
        }
    }
}

// ---------------------------------------------------------------------------
// The reactor: one thread per process for what nobody else does — news
// for contexts no thread is blocked on (a program waiting somewhere the
// shim does not see, or busy), the command backlog, and debugging dumps.

fn start_reactor() {
    let r = std::thread::Builder::new()
        .name("tas-reactor".into())
        .spawn(reactor);
    if let Err(e) = r {
        log(&format!("cannot start the reactor thread: {e}"));
    }
}

fn reactor() {
    let _e = sys::Enter::new();
    // SAFETY: blocking every signal in this thread only (signal handlers of
    // the app then run on its own threads).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let g = global();
    let gen = g.gen.load(Ordering::Acquire);
    let mut pfds: Vec<libc::pollfd> = Vec::new();
    let mut watched: Vec<&'static Ctx> = Vec::new();
    loop {
        if g.gen.load(Ordering::Acquire) != gen {
            return;
        }
        pfds.clear();
        watched.clear();
        pfds.push(libc::pollfd {
            fd: g.wake_fd,
            events: libc::POLLIN,
            revents: 0,
        });
        let mut timeout = 1000;
        for c in g.live_ctxs() {
            if c.dead.load(Ordering::Relaxed) {
                continue;
            }
            if c.tick.load(Ordering::Relaxed) {
                timeout = 1;
            }
            if c.blocked.load(Ordering::SeqCst) > 0 {
                continue;
            }
            // Nobody waits on this context: look at it every 10 ms (a
            // thread may be waiting where the shim cannot see it) and on
            // control messages.
            timeout = timeout.min(10);
            watched.push(c);
            pfds.push(libc::pollfd {
                fd: c.ctl_fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: valid pollfd array.
        let n =
            unsafe { real::poll::get()(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        if n < 0 && sys::errno() != libc::EINTR {
            // SAFETY: plain sleep.
            unsafe { libc::usleep(1000) };
        }
        if pfds[0].revents != 0 {
            let mut v = 0u64;
            // SAFETY: 8-byte read from our eventfd.
            unsafe { real::read::get()(g.wake_fd, &mut v as *mut u64 as *mut libc::c_void, 8) };
        }
        if g.cfg.debug {
            let path = format!("/tmp/tas-dump-{}", std::process::id());
            if std::fs::remove_file(&path).is_ok() {
                for c in g.live_ctxs() {
                    let inner = c.inner.lock();
                    log(&inner.dump(c.idx));
                }
            }
        }
        for c in g.live_ctxs() {
            let is_watched = watched.iter().any(|w| std::ptr::eq(*w, c));
            if !is_watched && !c.tick.load(Ordering::Relaxed) {
                continue;
            }
            let Some(mut inner) = c.inner.try_lock() else {
                continue;
            };
            inner.process();
            c.tick.store(
                inner.tas.has_backlog() || !inner.zombies.is_empty(),
                Ordering::Relaxed,
            );
            if inner.tas.is_dead() {
                // The daemon is gone: errors are delivered; stop watching.
                c.dead.store(true, Ordering::Relaxed);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// fork(): locks are taken before, released after; the child gets a new
// generation (the parent's contexts are left untouched).

extern "C" fn atfork_prepare() {
    let Some(g) = GLOBAL.get() else { return };
    g.create.raw_lock();
    g.ports.raw_lock();
    g.local_cache.raw_lock();
    for i in 0..g.nctx.load(Ordering::Acquire) {
        if let Some(c) = g.ctx(i) {
            c.inner.raw_lock();
        }
    }
}

extern "C" fn atfork_parent() {
    let Some(g) = GLOBAL.get() else { return };
    // SAFETY: taken in atfork_prepare by this thread.
    unsafe {
        for i in (0..g.nctx.load(Ordering::Acquire)).rev() {
            if let Some(c) = g.ctx(i) {
                c.inner.raw_unlock();
            }
        }
        g.local_cache.raw_unlock();
        g.ports.raw_unlock();
        g.create.raw_unlock();
    }
}

extern "C" fn atfork_child() {
    let Some(g) = GLOBAL.get() else { return };
    // SAFETY: in the child only the forking thread exists, and it took every
    // lock in atfork_prepare.
    unsafe {
        for i in 0..g.nctx.load(Ordering::Acquire) {
            if let Some(c) = g.ctx(i) {
                c.inner.reset();
            }
        }
        g.local_cache.reset();
        g.ports.reset();
        g.create.reset();
    }
    g.gen.fetch_add(1, Ordering::AcqRel);
}

pub fn register_atfork() {
    // SAFETY: registering plain extern "C" handlers.
    unsafe {
        libc::pthread_atfork(
            Some(atfork_prepare),
            Some(atfork_parent),
            Some(atfork_child),
        )
    };
}
