//! The process-wide state ([`Global`]), created on first use: the
//! configuration, the fd table, the context slots, the generation counters
//! (fork, readiness), the ports bound by TAS sockets (`ops::Ports`) and
//! the cache of kernel-owned addresses. [`try_global`] never creates it,
//! so calls made before the program's first TCP socket stay on libc's
//! path.

use crate::config::Config;
use crate::ctx::{Ctx, MAX_CTX};
use crate::fdtab::{high_fd_base, FdTable, T_INTERNAL};
use crate::ops::Ports;
use crate::readiness::calibrate_fill;
use crate::sys::{self, Lock};
use libc::c_int;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

pub struct Global {
    pub cfg: Config,
    fdtab: FdTable,
    /// Context slots: leaked `Ctx` boxes (0 = empty), filled in order.
    pub ctxs: [AtomicUsize; MAX_CTX],
    /// How many slots are filled.
    pub nctx: AtomicUsize,
    /// Round-robin counter for threads beyond the context limit.
    pub rr: AtomicUsize,
    /// Serialises context creation and the reactor's start.
    pub create: Lock<CreateState>,
    /// Bumped in the child after fork: contexts of older generations belong
    /// to the parent and must not be touched.
    pub gen: AtomicU64,
    /// Bumped whenever a socket's kernel readiness changes (spin loops).
    pub ready_gen: AtomicU64,
    /// Bumped whenever a socket's pair changed (what the kernel reports for
    /// it): a wait that took news looks at the kernel again only then
    /// (`mux::wait_idle`).
    pub pair_gen: AtomicU64,
    pub next_sid: AtomicU64,
    /// Wakes the reactor (new context).
    pub wake_fd: c_int,
    /// Bytes that make a minimal-buffer Unix socket unwritable.
    pub fill: usize,
    pub ports: Lock<Ports>,
    pub local_cache: Lock<HashMap<u32, bool>>,
    pub rmem_max: u32,
    pub wmem_max: u32,
    /// `net.ipv6.bindv6only` when the process started: a new `AF_INET6`
    /// socket's `IPV6_V6ONLY`.
    pub bindv6only: bool,
    pub warned: AtomicBool,
    /// What this process inherited at its last fork (`fork.rs`).
    pub inherit: Lock<crate::fork::Inherit>,
    /// Shared listeners this process told tasd it does not accept on
    /// (`fork.rs`): while any, `poll` and `select` look whether their sets
    /// hold one (waiting for connections is accepting).
    pub quiet: AtomicUsize,
    /// The waits' spin (fixed or self-tuned).
    pub spin: tas::spin::SpinCtl,
}

#[derive(Default)]
pub struct CreateState {
    /// The generation whose last attach failed (no live context), and when
    /// (monotonic ns): attaching is retried at most every
    /// [`crate::ctx::REATTACH_NS`].
    pub failed_gen: Option<u64>,
    pub failed_at: u64,
    pub reactor_gen: Option<u64>,
}

static GLOBAL: OnceLock<Global> = OnceLock::new();

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

/// The state, created on the first call.
pub fn global() -> &'static Global {
    GLOBAL.get_or_init(|| {
        let _e = sys::Enter::new();
        let fdtab = FdTable::new();
        let cfg = Config::from_env();
        // SAFETY: eventfd takes no pointers.
        let wake_fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        let wake_fd = if wake_fd >= 0 {
            sys::move_high(wake_fd, high_fd_base())
        } else {
            wake_fd
        };
        let spin = tas::spin::SpinCtl::new(cfg.spin_us, cfg.profile);
        let g = Global {
            spin,
            cfg,
            fdtab,
            ctxs: std::array::from_fn(|_| AtomicUsize::new(0)),
            nctx: AtomicUsize::new(0),
            rr: AtomicUsize::new(0),
            create: Lock::new(CreateState::default()),
            gen: AtomicU64::new(0),
            ready_gen: AtomicU64::new(0),
            pair_gen: AtomicU64::new(0),
            next_sid: AtomicU64::new(1),
            wake_fd,
            fill: calibrate_fill(),
            ports: Lock::new(Ports::default()),
            local_cache: Lock::new(HashMap::new()),
            rmem_max: read_proc_u32("/proc/sys/net/core/rmem_max").unwrap_or(212992),
            wmem_max: read_proc_u32("/proc/sys/net/core/wmem_max").unwrap_or(212992),
            bindv6only: read_proc_u32("/proc/sys/net/ipv6/bindv6only").unwrap_or(0) != 0,
            warned: AtomicBool::new(false),
            inherit: Lock::new(crate::fork::Inherit::default()),
            quiet: AtomicUsize::new(0),
        };
        if wake_fd >= 0 {
            g.set_fd(wake_fd, T_INTERNAL);
        }
        g
    })
}

impl Global {
    /// The fd table entry of `fd` (see [`crate::fdtab`]).
    #[inline]
    pub fn fd(&self, fd: c_int) -> u64 {
        self.fdtab.get(fd)
    }

    /// Sets the fd table entry of `fd`; false when `fd` is beyond the table.
    #[inline]
    pub fn set_fd(&self, fd: c_int, v: u64) -> bool {
        self.fdtab.set(fd, v)
    }

    /// Whether `fd` has an fd table entry.
    #[inline]
    pub fn fd_fits(&self, fd: c_int) -> bool {
        self.fdtab.fits(fd)
    }

    pub fn ctx(&self, idx: usize) -> Option<&'static Ctx> {
        let p = self.ctxs.get(idx)?.load(Ordering::Acquire);
        if p == 0 {
            None
        } else {
            // SAFETY: a non-zero slot only ever holds a Box::leak'ed Ctx
            // (ctx.rs), never freed, so the pointer is valid for 'static.
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
